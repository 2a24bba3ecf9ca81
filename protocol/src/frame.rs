//! The frame: a length prefix, a version, flags, a command code, then the payload.
//!
//! ```text
//! offset  size  field
//! 0       4     body length N, u32 big-endian: the bytes after this field (N >= 4)
//! 4       1     protocol version (1)
//! 5       1     flags (bit 0: payload compressed; other bits reserved, must be 0)
//! 6       2     command code, u16 big-endian
//! 8       N-4   payload: postcard bytes of the message, or, when compressed,
//!               u32 big-endian decompressed length + one lz4 block
//! ```

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use crate::code::Code;
use crate::compress;
use crate::error::ProtocolError;

/// The only protocol version this implementation speaks.
pub const VERSION: u8 = 1;

/// Bytes before the payload: length (4), version (1), flags (1), code (2).
pub const HEADER_BYTES: usize = 8;

/// Bytes of the length prefix itself.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Largest payload (after decompression, and on the wire): 16 MiB of data plus 64 KiB for the
/// fields around it.
pub const PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024 + 64 * 1024;

/// Largest value the length prefix may hold: the rest of the header plus the largest payload.
pub const FRAME_BODY_BYTES_MAX: usize = HEADER_BYTES - LENGTH_PREFIX_BYTES + PAYLOAD_BYTES_MAX;

/// The flags byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameFlags(pub u8);

impl FrameFlags {
    /// Bit 0: the payload is lz4-compressed.
    pub const COMPRESSED: u8 = 0x01;
    /// Bits no version-1 frame may set.
    pub const RESERVED_MASK: u8 = !Self::COMPRESSED;

    /// Whether the payload is compressed.
    pub fn compressed(self) -> bool {
        self.0 & Self::COMPRESSED != 0
    }
}

/// What the fixed header says, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the whole frame, prefix included.
    pub frame_len: usize,
    /// Flags byte.
    pub flags: FrameFlags,
    /// Command code.
    pub code: Code,
}

/// Validates the length prefix alone: the frame's total length, or why it is refused.
/// Called as soon as four bytes are in, before any buffer is sized for the frame.
pub fn check_length(prefix: [u8; LENGTH_PREFIX_BYTES]) -> Result<usize, ProtocolError> {
    let body = u32::from_be_bytes(prefix);
    if body as u64 > FRAME_BODY_BYTES_MAX as u64 {
        return Err(ProtocolError::FrameTooLarge {
            len: body as u64,
            max: FRAME_BODY_BYTES_MAX as u64,
        });
    }
    let min = (HEADER_BYTES - LENGTH_PREFIX_BYTES) as u32;
    if body < min {
        return Err(ProtocolError::FrameTooShort { len: body, min });
    }
    Ok(LENGTH_PREFIX_BYTES + body as usize)
}

/// Validates a whole fixed header.
pub fn check_header(header: [u8; HEADER_BYTES]) -> Result<Header, ProtocolError> {
    let frame_len = check_length([header[0], header[1], header[2], header[3]])?;
    if header[4] != VERSION {
        return Err(ProtocolError::UnsupportedVersion(header[4]));
    }
    let flags = FrameFlags(header[5]);
    if flags.0 & FrameFlags::RESERVED_MASK != 0 {
        return Err(ProtocolError::ReservedFlags(flags.0));
    }
    let code = Code(u16::from_be_bytes([header[6], header[7]]));
    if !code.is_known() {
        return Err(ProtocolError::UnknownCommand(code.0));
    }
    Ok(Header {
        frame_len,
        flags,
        code,
    })
}

/// One whole, header-validated frame. Cloning shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
    code: Code,
    flags: FrameFlags,
}

impl Frame {
    /// Takes `bytes` as exactly one frame, checking the header and the length.
    pub fn parse(bytes: Bytes) -> Result<Frame, ProtocolError> {
        let Some(header) = bytes.first_chunk::<HEADER_BYTES>() else {
            if let Some(prefix) = bytes.first_chunk::<LENGTH_PREFIX_BYTES>() {
                check_length(*prefix)?;
            }
            return Err(ProtocolError::Truncated {
                needed: HEADER_BYTES,
                have: bytes.len(),
            });
        };
        let header = check_header(*header)?;
        if bytes.len() < header.frame_len {
            return Err(ProtocolError::Truncated {
                needed: header.frame_len,
                have: bytes.len(),
            });
        }
        if bytes.len() > header.frame_len {
            return Err(ProtocolError::MalformedPayload {
                code: header.code,
                reason: "bytes after the frame's end",
            });
        }
        Ok(Frame::from_checked(bytes, header))
    }

    /// Wraps bytes whose header was validated and whose length equals `header.frame_len`.
    pub(crate) fn from_checked(bytes: Bytes, header: Header) -> Frame {
        Frame {
            bytes,
            code: header.code,
            flags: header.flags,
        }
    }

    /// Builds a frame around an encoded payload, compressing it when `compress` is set and
    /// compression makes it smaller.
    pub fn build(code: Code, payload: &[u8], compress: bool) -> Frame {
        let packed = if compress {
            compress::compress_if_smaller(payload)
        } else {
            None
        };
        let (flags, body) = match &packed {
            Some(p) => (FrameFlags(FrameFlags::COMPRESSED), p.as_slice()),
            None => (FrameFlags(0), payload),
        };
        let mut buf = BytesMut::with_capacity(HEADER_BYTES + body.len());
        // Callers encode bounded messages; body.len() <= PAYLOAD_BYTES_MAX fits a u32.
        buf.put_u32((HEADER_BYTES - LENGTH_PREFIX_BYTES + body.len()) as u32);
        buf.put_u8(VERSION);
        buf.put_u8(flags.0);
        buf.put_u16(code.0);
        buf.put_slice(body);
        Frame {
            bytes: buf.freeze(),
            code,
            flags,
        }
    }

    /// Builds an uncompressed frame whose `payload_len`-byte payload `write` appends to the
    /// buffer it is given (after the header): one allocation of exactly the frame's size and
    /// no copy, where [`build`](Self::build) takes a payload encoded beforehand. `write` must
    /// append exactly `payload_len` bytes (checked, for each caller, by its property test
    /// against `build`).
    pub(crate) fn build_exact(
        code: Code,
        payload_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Frame {
        let mut buf = Vec::with_capacity(HEADER_BYTES + payload_len);
        // Callers encode bounded messages; payload_len <= PAYLOAD_BYTES_MAX fits a u32.
        let body = (HEADER_BYTES - LENGTH_PREFIX_BYTES + payload_len) as u32;
        buf.extend_from_slice(&body.to_be_bytes());
        buf.extend_from_slice(&[VERSION, 0]);
        buf.extend_from_slice(&code.0.to_be_bytes());
        write(&mut buf);
        debug_assert_eq!(
            buf.len(),
            HEADER_BYTES + payload_len,
            "payload_len was exact"
        );
        Frame {
            bytes: Bytes::from(buf),
            code,
            flags: FrameFlags(0),
        }
    }

    /// The command code in the header of the encoded frame `bytes`, or `None` if it is
    /// shorter than a header. Nothing else is checked: for frames this implementation built or
    /// already validated (a send queue's frames, counted by protocol as they leave).
    pub fn peek_code(bytes: &[u8]) -> Option<Code> {
        let header = bytes.first_chunk::<HEADER_BYTES>()?;
        Some(Code(u16::from_be_bytes([header[6], header[7]])))
    }

    /// The command code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The flags byte.
    pub fn flags(&self) -> FrameFlags {
        self.flags
    }

    /// The whole frame as it travels, prefix included: what a relay forwards unchanged.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Consumes the frame, returning its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The payload as it travels (still compressed if the flag says so).
    pub fn wire_payload(&self) -> Bytes {
        self.bytes.slice(HEADER_BYTES..)
    }

    /// The payload, decompressed if needed, borrowed from the frame when it is not
    /// compressed: for a reader that only decodes it (no reference count is touched, where
    /// [`payload`](Self::payload) shares the frame's buffer).
    pub fn payload_ref(&self) -> Result<Cow<'_, [u8]>, ProtocolError> {
        if self.flags.compressed() {
            compress::decompress(&self.bytes[HEADER_BYTES..]).map(Cow::Owned)
        } else {
            Ok(Cow::Borrowed(&self.bytes[HEADER_BYTES..]))
        }
    }

    /// The payload, decompressed if needed. Without compression this shares the frame's bytes.
    pub fn payload(&self) -> Result<Bytes, ProtocolError> {
        if self.flags.compressed() {
            compress::decompress(&self.bytes[HEADER_BYTES..]).map(Bytes::from)
        } else {
            Ok(self.wire_payload())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_code_reads_the_header_of_any_built_frame() {
        for code in Code::ALL {
            for compress in [false, true] {
                let frame = Frame::build(code, &[7u8; 300], compress);
                assert_eq!(Frame::peek_code(frame.bytes()), Some(code));
            }
        }
        assert_eq!(
            Frame::peek_code(&[0, 0, 0, 4, 1, 0, 1]),
            None,
            "short of a header"
        );
    }
}
