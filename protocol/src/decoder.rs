//! The incremental frame decoder: bytes in arbitrary pieces in, whole frames out.
//!
//! Frames that lie wholly inside one input chunk are returned as slices of that chunk (no copy).
//! Only a frame split across chunks is assembled in the decoder's own buffer, which grows with
//! the bytes that actually arrive (never with what a length prefix announces), and only after
//! the header has been validated: a hostile length prefix never causes an allocation.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::ProtocolError;
use crate::frame::{check_header, check_length, Frame, Header, HEADER_BYTES, LENGTH_PREFIX_BYTES};

/// Incremental decoder for one connection's byte stream.
///
/// Feed it with [`push`](Self::push), then call [`next_frame`](Self::next_frame) until it returns
/// `Ok(None)`. After an error the stream is out of sync and the connection must be closed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Input not yet looked at.
    input: Bytes,
    /// A frame begun in an earlier chunk, being assembled, or the mark of a failed stream.
    /// Boxed and dropped when done: a frame that arrives whole in one chunk (the usual case)
    /// never touches it, and the decoder is 40 bytes.
    partial: Option<Box<Partial>>,
}

/// A frame being assembled across chunks.
#[derive(Debug, Default)]
struct Partial {
    bytes: BytesMut,
    /// The validated header of `bytes`, once it has all eight bytes.
    header: Option<Header>,
    /// Set after an error: the stream cannot be resynchronised (and nothing is held).
    failed: bool,
}

impl FrameDecoder {
    /// A decoder with nothing buffered.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends received bytes. Unconsumed input from an earlier push is kept in order.
    pub fn push(&mut self, bytes: Bytes) {
        if self.input.is_empty() {
            self.input = bytes;
        } else {
            let mut joined = BytesMut::with_capacity(self.input.len() + bytes.len());
            joined.extend_from_slice(&self.input);
            joined.extend_from_slice(&bytes);
            self.input = joined.freeze();
        }
    }

    /// Bytes held that do not yet form a whole frame.
    pub fn buffered_len(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.bytes.len()) + self.input.len()
    }

    /// Memory those bytes take: a frame being assembled counts its buffer's capacity, which
    /// grows at most to the frame's length (and to twice the bytes held before that).
    pub fn buffered_capacity(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.bytes.capacity()) + self.input.len()
    }

    /// The whole length (prefix included) the next frame's length prefix declares, once its
    /// four bytes are in, whether or not the frame has arrived: lets a caller refuse a frame
    /// by its size before its payload is buffered.
    pub fn next_frame_len(&self) -> Option<u64> {
        if let Some(header) = self.partial.as_ref().and_then(|p| p.header) {
            return Some(header.frame_len as u64);
        }
        let held = self.partial.as_ref().map_or(&[][..], |p| &p.bytes[..]);
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
        let mut have = 0;
        for (slot, byte) in prefix.iter_mut().zip(held.iter().chain(self.input.iter())) {
            *slot = *byte;
            have += 1;
        }
        (have == LENGTH_PREFIX_BYTES)
            .then(|| u64::from(u32::from_be_bytes(prefix)) + LENGTH_PREFIX_BYTES as u64)
    }

    /// Whether the stream ended cleanly: no partial frame held. At end of stream a caller may
    /// turn a `false` here into [`ProtocolError::Truncated`] with [`finish`](Self::finish).
    pub fn finish(&self) -> Result<(), ProtocolError> {
        let have = self.buffered_len();
        if have == 0 {
            return Ok(());
        }
        let needed = self
            .partial
            .as_ref()
            .and_then(|p| p.header)
            .map_or(HEADER_BYTES, |h| h.frame_len);
        Err(ProtocolError::Truncated { needed, have })
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed, or the error that ends the
    /// stream.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        if self.partial.as_ref().is_some_and(|p| p.failed) {
            return Err(ProtocolError::Truncated { needed: 0, have: 0 });
        }
        let result = self.next_frame_inner();
        if result.is_err() {
            self.partial = Some(Box::new(Partial {
                failed: true,
                ..Partial::default()
            }));
            self.input = Bytes::new();
        }
        result
    }

    fn next_frame_inner(&mut self) -> Result<Option<Frame>, ProtocolError> {
        if self.partial.is_none() {
            // Fast path: a whole frame at the front of the input is sliced out of it.
            if let Some(header) = self.input.first_chunk::<HEADER_BYTES>() {
                let header = check_header(*header)?;
                if self.input.len() == header.frame_len {
                    // The usual read of one frame: the input itself, nothing split.
                    let bytes = core::mem::take(&mut self.input);
                    return Ok(Some(Frame::from_checked(bytes, header)));
                }
                if self.input.len() > header.frame_len {
                    let bytes = self.input.split_to(header.frame_len);
                    return Ok(Some(Frame::from_checked(bytes, header)));
                }
            } else if let Some(prefix) = self.input.first_chunk::<LENGTH_PREFIX_BYTES>() {
                check_length(*prefix)?;
            }
            if self.input.is_empty() {
                return Ok(None);
            }
        }
        self.assemble()
    }

    /// Moves input into `partial` until it holds a whole frame or the input runs out.
    fn assemble(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let partial = self.partial.get_or_insert_with(Box::default);
        if partial.header.is_none() {
            let take = (HEADER_BYTES - partial.bytes.len()).min(self.input.len());
            partial.bytes.extend_from_slice(&self.input[..take]);
            self.input.advance(take);
            if let Some(prefix) = partial.bytes.first_chunk::<LENGTH_PREFIX_BYTES>() {
                check_length(*prefix)?;
            }
            let Some(header) = partial.bytes.first_chunk::<HEADER_BYTES>() else {
                return Ok(None);
            };
            partial.header = Some(check_header(*header)?);
        }
        // Set just above when it was None.
        let Some(header) = partial.header else {
            return Ok(None);
        };
        let take = (header.frame_len - partial.bytes.len()).min(self.input.len());
        let (held, room) = (partial.bytes.len(), partial.bytes.capacity());
        if room - held < take {
            // Doubling, but never past the frame's length (`reserve` may go past it).
            let grown = (held + take).max(room * 2).min(header.frame_len);
            let mut bytes = BytesMut::with_capacity(grown);
            bytes.extend_from_slice(&partial.bytes);
            partial.bytes = bytes;
        }
        partial.bytes.extend_from_slice(&self.input[..take]);
        self.input.advance(take);
        if partial.bytes.len() < header.frame_len {
            return Ok(None);
        }
        let bytes = core::mem::take(&mut partial.bytes).freeze();
        self.partial = None;
        Ok(Some(Frame::from_checked(bytes, header)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use crate::frame::FRAME_BODY_BYTES_MAX;

    fn frame(code: Code, payload: &[u8]) -> Bytes {
        Frame::build(code, payload, false).into_bytes()
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_decoder_is_forty_bytes() {
        assert_eq!(core::mem::size_of::<FrameDecoder>(), 40);
    }

    #[test]
    fn the_next_frames_length_is_known_from_its_prefix_in_any_chunking() {
        let wire = frame(Code::BROADCAST, &[7; 100]);
        let mut dec = FrameDecoder::new();
        assert_eq!(dec.next_frame_len(), None);
        for (i, b) in wire.iter().enumerate() {
            dec.push(Bytes::copy_from_slice(&[*b]));
            let expect = (i >= LENGTH_PREFIX_BYTES - 1).then_some(wire.len() as u64);
            assert_eq!(dec.next_frame_len(), expect, "after {} bytes", i + 1);
            if i < wire.len() - 1 {
                assert!(dec.next_frame().unwrap().is_none());
            }
        }
        assert!(dec.next_frame().unwrap().is_some());
        assert_eq!(dec.next_frame_len(), None);
    }

    #[test]
    fn whole_frames_in_one_chunk_are_slices_of_it() {
        let mut stream = frame(Code::PING, &[1]).to_vec();
        stream.extend_from_slice(&frame(Code::PONG, &[2]));
        let input = Bytes::from(stream);
        let base = input.as_ptr();
        let mut dec = FrameDecoder::new();
        dec.push(input);
        let a = dec.next_frame().unwrap().unwrap();
        let b = dec.next_frame().unwrap().unwrap();
        assert_eq!(a.bytes().as_ptr(), base);
        assert_eq!(b.bytes().as_ptr(), base.wrapping_add(a.bytes().len()));
        assert_eq!((a.code(), b.code()), (Code::PING, Code::PONG));
        assert!(dec.next_frame().unwrap().is_none());
        dec.finish().unwrap();
    }

    #[test]
    fn a_frame_assembled_from_pieces_holds_at_most_its_length_and_twice_its_bytes() {
        let wire = frame(Code::BROADCAST, &[9; 100_000]);
        let mut dec = FrameDecoder::new();
        let mut got = None;
        for piece in wire.chunks(7_000) {
            dec.push(Bytes::copy_from_slice(piece));
            got = dec.next_frame().unwrap();
            if got.is_none() {
                let (held, capacity) = (dec.buffered_len(), dec.buffered_capacity());
                assert!(
                    capacity <= wire.len(),
                    "{capacity} for a {} byte frame",
                    wire.len()
                );
                assert!(capacity <= 2 * held, "{capacity} for {held} bytes");
            }
        }
        assert_eq!(got.map(|f| f.bytes().clone()), Some(wire));
    }

    #[test]
    fn one_byte_at_a_time() {
        let wire = frame(Code::BROADCAST, b"hello world");
        let mut dec = FrameDecoder::new();
        for (i, b) in wire.iter().enumerate() {
            dec.push(Bytes::copy_from_slice(&[*b]));
            let got = dec.next_frame().unwrap();
            assert_eq!(got.is_some(), i == wire.len() - 1);
            if let Some(f) = got {
                assert_eq!(f.bytes(), &wire);
            }
        }
    }

    #[test]
    fn oversized_length_prefix_is_refused_from_four_bytes() {
        let mut dec = FrameDecoder::new();
        dec.push(Bytes::from(
            ((FRAME_BODY_BYTES_MAX + 1) as u32).to_be_bytes().to_vec(),
        ));
        assert!(matches!(
            dec.next_frame(),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        assert_eq!(dec.buffered_len(), 0, "nothing kept after an error");
    }

    #[test]
    fn unknown_code_and_bad_version_are_refused_from_the_header() {
        let mut bad = frame(Code::PING, &[]).to_vec();
        bad[6..8].copy_from_slice(&0x0777u16.to_be_bytes());
        let mut dec = FrameDecoder::new();
        dec.push(Bytes::from(bad[..8].to_vec()));
        assert_eq!(dec.next_frame(), Err(ProtocolError::UnknownCommand(0x0777)));

        let mut bad = frame(Code::PING, &[]).to_vec();
        bad[4] = 9;
        let mut dec = FrameDecoder::new();
        dec.push(Bytes::from(bad));
        assert_eq!(dec.next_frame(), Err(ProtocolError::UnsupportedVersion(9)));
    }

    #[test]
    fn too_short_body_and_reserved_flags_are_refused() {
        let mut dec = FrameDecoder::new();
        dec.push(Bytes::from_static(&[0, 0, 0, 3]));
        assert!(matches!(
            dec.next_frame(),
            Err(ProtocolError::FrameTooShort { len: 3, .. })
        ));
        let mut bad = frame(Code::PING, &[]).to_vec();
        bad[5] = 0x80;
        let mut dec = FrameDecoder::new();
        dec.push(Bytes::from(bad));
        assert_eq!(dec.next_frame(), Err(ProtocolError::ReservedFlags(0x80)));
    }

    #[test]
    fn truncated_stream_is_reported_at_finish() {
        let wire = frame(Code::PING, &[1, 2, 3]);
        let mut dec = FrameDecoder::new();
        dec.push(wire.slice(..wire.len() - 1));
        assert!(dec.next_frame().unwrap().is_none());
        assert!(matches!(
            dec.finish(),
            Err(ProtocolError::Truncated {
                needed: 11,
                have: 10
            })
        ));
    }
}
