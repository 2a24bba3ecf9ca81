//! Typed errors of the p2p.today dialect: every fault in a peer's bytes, never a panic.

use super::compress::Method;

/// Why a p2p.today frame, or a field of one, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum P2ptError {
    /// The length prefix announces a body over [`super::P2PT_BODY_BYTES_MAX`].
    #[error("p2pt frame body of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced body length.
        len: u64,
        /// The limit in force.
        max: u64,
    },
    /// The input ended inside the length prefix or the body.
    #[error("p2pt frame truncated: {needed} bytes needed, {have} available")]
    Truncated {
        /// Bytes the frame needs in all, prefix included.
        needed: usize,
        /// Bytes that were there.
        have: usize,
    },
    /// Bytes follow the body the length prefix announced (decoding exactly one frame).
    #[error("p2pt frame of {len} bytes followed by {extra} more")]
    TrailingBytes {
        /// The frame's length, prefix included.
        len: usize,
        /// Bytes after it.
        extra: usize,
    },
    /// The (decompressed) body is shorter than the 32-byte id.
    #[error("p2pt body of {len} bytes is shorter than the 32-byte id")]
    BodyTooShort {
        /// The body's length.
        len: usize,
    },
    /// A compressed body inflates past [`super::P2PT_BODY_BYTES_MAX`]: a compression bomb.
    #[error("p2pt body compressed with {method:?} inflates past {max} bytes")]
    DecompressedTooLarge {
        /// The method that was inflating it.
        method: Method,
        /// The limit in force.
        max: u64,
    },
    /// The id is not the SHA-256 of the msgpack bytes.
    #[error("p2pt checksum mismatch")]
    ChecksumMismatch,
    /// The bytes after the id are not exactly one msgpack value (or nest too deep).
    #[error("p2pt msgpack: {0}")]
    Msgpack(&'static str),
    /// The msgpack value is not the array py2p builds, or a packet's field is of the wrong kind.
    #[error("p2pt malformed {field}: {reason}")]
    Malformed {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A base58 string is not an integer in py2p's alphabet, or is too long.
    #[error("p2pt base58: {0}")]
    Base58(&'static str),
    /// Encoding: the body would exceed [`super::P2PT_BODY_BYTES_MAX`].
    #[error("p2pt body of {len} bytes exceeds the maximum of {max}")]
    BodyTooLarge {
        /// The body's length.
        len: u64,
        /// The limit in force.
        max: u64,
    },
}
