//! The seam below the session: what turns a connection's bytes into frames and frames into
//! bytes. Today that is weft's own framing (SPEC.md §2) over a pass-through transport; an
//! encrypted transport (Noise) and a second wire dialect (p2p.today's, translating its packets
//! to and from weft frames) are other implementations of [`Wire`], and nothing above this file
//! changes for them.

use bytes::Bytes;
use weft_protocol::{Frame, FrameDecoder, ProtocolError};

/// One connection's byte layer.
pub(crate) trait Wire: core::fmt::Debug + Send {
    /// Takes bytes that arrived, in any chunking.
    fn push(&mut self, bytes: Bytes);
    /// The next whole frame, `Ok(None)` if more bytes are needed, or the error that ends the
    /// stream (the connection must then close).
    fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError>;
    /// Bytes held that do not yet make a whole frame.
    fn buffered_len(&self) -> usize;
    /// Turns one encoded frame into the bytes to write.
    fn seal(&mut self, frame: Bytes) -> Bytes;
}

/// weft's framing over plain bytes: the wire carries exactly the frames.
#[derive(Debug, Default)]
pub(crate) struct PlainWire {
    decoder: FrameDecoder,
}

impl Wire for PlainWire {
    fn push(&mut self, bytes: Bytes) {
        self.decoder.push(bytes);
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        self.decoder.next_frame()
    }

    fn buffered_len(&self) -> usize {
        self.decoder.buffered_len()
    }

    fn seal(&mut self, frame: Bytes) -> Bytes {
        frame
    }
}
