//! Typed errors for everything that can be wrong with bytes from a peer.

use crate::code::Code;

/// Why a frame or a payload was rejected. Every variant is a fault in the input, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The length prefix announces a frame body larger than [`crate::FRAME_BODY_BYTES_MAX`].
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced body length.
        len: u64,
        /// The limit in force.
        max: u64,
    },
    /// The length prefix announces a body shorter than the fixed header.
    #[error("frame body of {len} bytes is shorter than the {min}-byte header")]
    FrameTooShort {
        /// The announced body length.
        len: u32,
        /// The minimum body length.
        min: u32,
    },
    /// The command code is not in the registry.
    #[error("unknown command code {0:#06x}")]
    UnknownCommand(u16),
    /// The frame's protocol version is not one this implementation speaks.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// Reserved flag bits were set.
    #[error("reserved frame flags set: {0:#04x}")]
    ReservedFlags(u8),
    /// The input ended inside a frame.
    #[error("truncated: {needed} bytes needed, {have} available")]
    Truncated {
        /// Bytes the frame needs in all.
        needed: usize,
        /// Bytes that were there.
        have: usize,
    },
    /// The payload does not decode as the message its code names.
    #[error("malformed payload for {code:?}: {reason}")]
    MalformedPayload {
        /// The frame's command code.
        code: Code,
        /// What postcard or a field check said.
        reason: &'static str,
    },
    /// A compressed payload announces, or inflates to, more than [`crate::PAYLOAD_BYTES_MAX`].
    #[error("decompressed size {size} exceeds the maximum of {max}")]
    DecompressedTooLarge {
        /// The announced decompressed size.
        size: u64,
        /// The limit in force.
        max: u64,
    },
    /// A compressed payload is not a valid lz4 block of its announced size.
    #[error("corrupt compressed payload")]
    BadCompression,
}
