//! The seam below the session: what turns a connection's bytes into frames and frames into
//! bytes. Today that is weft's own framing (SPEC.md §2) over a pass-through transport; an
//! encrypted transport (Noise) and a second wire dialect (p2p.today's, translating its packets
//! to and from weft frames) are other implementations of [`Wire`], and nothing above this file
//! changes for them.

use bytes::Bytes;
use weft_protocol::{Frame, FrameDecoder, ProtocolError};

/// One connection's byte layer.
pub(crate) trait Wire: core::fmt::Debug {
    /// Takes bytes that arrived, in any chunking.
    fn push(&mut self, bytes: Bytes);
    /// The next whole frame, `Ok(None)` if more bytes are needed, or the error that ends the
    /// stream (the connection must then close).
    fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError>;
    /// Bytes held that do not yet make a whole frame.
    fn buffered_len(&self) -> usize;
    /// The whole length the next frame declares, once its length prefix is in.
    fn next_frame_len(&self) -> Option<u64>;
    /// Turns one encoded frame into the bytes to write.
    fn seal(&mut self, frame: Bytes) -> Bytes;
}

/// The wire a connection uses: one variant per [`Wire`] implementation, so the hot path of
/// every frame calls it directly (a `dyn Wire` costs an indirect call per frame each way).
#[derive(Debug)]
pub(crate) enum AnyWire {
    /// weft's framing over plain bytes.
    Plain(PlainWire),
}

impl Default for AnyWire {
    fn default() -> Self {
        AnyWire::Plain(PlainWire::default())
    }
}

impl Wire for AnyWire {
    #[inline]
    fn push(&mut self, bytes: Bytes) {
        match self {
            AnyWire::Plain(w) => w.push(bytes),
        }
    }

    #[inline]
    fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        match self {
            AnyWire::Plain(w) => w.next_frame(),
        }
    }

    #[inline]
    fn buffered_len(&self) -> usize {
        match self {
            AnyWire::Plain(w) => w.buffered_len(),
        }
    }

    #[inline]
    fn next_frame_len(&self) -> Option<u64> {
        match self {
            AnyWire::Plain(w) => w.next_frame_len(),
        }
    }

    #[inline]
    fn seal(&mut self, frame: Bytes) -> Bytes {
        match self {
            AnyWire::Plain(w) => w.seal(frame),
        }
    }
}

/// weft's framing over plain bytes: the wire carries exactly the frames.
#[derive(Debug, Default)]
pub(crate) struct PlainWire {
    decoder: FrameDecoder,
}

impl Wire for PlainWire {
    #[inline]
    fn push(&mut self, bytes: Bytes) {
        self.decoder.push(bytes);
    }

    #[inline]
    fn next_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        self.decoder.next_frame()
    }

    #[inline]
    fn buffered_len(&self) -> usize {
        self.decoder.buffered_len()
    }

    #[inline]
    fn next_frame_len(&self) -> Option<u64> {
        self.decoder.next_frame_len()
    }

    #[inline]
    fn seal(&mut self, frame: Bytes) -> Bytes {
        frame
    }
}
