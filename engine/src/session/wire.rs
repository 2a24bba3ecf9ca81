//! The seam below the session: what turns a connection's bytes into frames and frames into
//! bytes. weft's own framing (SPEC.md §2) runs inside Noise ([`NoiseWire`], SPEC.md §21), or
//! in the clear in the simulator's speed runs ([`PlainWire`]); a second wire dialect
//! (p2p.today's, translating its packets to and from weft frames) is another implementation
//! of [`Wire`], and nothing above this file changes for it.

use bytes::Bytes;
use weft_protocol::{Frame, FrameDecoder, ProtocolError, PublicKey};

use crate::connection::CloseReason;
use crate::noise::{NoiseError, NoiseKeys, NoiseLink, NoiseRole};

/// Why a connection's byte stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireError {
    /// The frames broke weft's wire format.
    Protocol(ProtocolError),
    /// The Noise layer failed.
    Noise(NoiseError),
}

impl From<WireError> for CloseReason {
    fn from(e: WireError) -> CloseReason {
        match e {
            WireError::Protocol(e) => CloseReason::Protocol(e),
            WireError::Noise(e) => CloseReason::Noise(e),
        }
    }
}

/// One connection's byte layer.
pub(crate) trait Wire: core::fmt::Debug {
    /// Takes bytes that arrived, in any chunking.
    fn push(&mut self, bytes: Bytes);
    /// The next whole frame, `Ok(None)` if more bytes are needed, or the error that ends the
    /// stream (the connection must then close).
    fn next_frame(&mut self) -> Result<Option<Frame>, WireError>;
    /// Bytes held that do not yet make a whole frame.
    fn buffered_len(&self) -> usize;
    /// Memory those bytes take (their buffers' capacity).
    fn buffered_memory(&self) -> usize;
    /// Frees what was received and not taken: the connection is closing.
    fn drop_received(&mut self);
    /// The whole length the next frame declares, once its length prefix is in.
    fn next_frame_len(&self) -> Option<u64>;
    /// Turns one encoded frame into the bytes to write; only once [`can_seal`](Self::can_seal).
    fn seal(&mut self, frame: Bytes) -> Bytes;
    /// Whether frames can be sealed (the transport's own handshake is done).
    fn can_seal(&self) -> bool;
    /// Bytes the layer itself must send (its handshake), ahead of any frame.
    fn poll_own(&mut self) -> Option<Bytes>;
    /// The identity key the transport proved for the peer: `None` for a transport that proves
    /// none (the plain wire), or before it has.
    fn peer_identity(&self) -> Option<PublicKey>;
    /// Ends the stream with `error` (a check above the layer failed).
    fn fail(&mut self, error: NoiseError);
}

/// The wire a connection uses: one variant per [`Wire`] implementation, so the hot path of
/// every frame calls it directly (a `dyn Wire` costs an indirect call per frame each way).
#[derive(Debug)]
pub(crate) enum AnyWire {
    /// weft's framing over plain bytes.
    Plain(PlainWire),
    /// weft's framing inside Noise.
    Noise(Box<NoiseWire>),
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
            AnyWire::Noise(w) => w.push(bytes),
        }
    }

    #[inline]
    fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        match self {
            AnyWire::Plain(w) => w.next_frame(),
            AnyWire::Noise(w) => w.next_frame(),
        }
    }

    #[inline]
    fn buffered_len(&self) -> usize {
        match self {
            AnyWire::Plain(w) => w.buffered_len(),
            AnyWire::Noise(w) => w.buffered_len(),
        }
    }

    fn buffered_memory(&self) -> usize {
        match self {
            AnyWire::Plain(w) => w.buffered_memory(),
            AnyWire::Noise(w) => w.buffered_memory(),
        }
    }

    fn drop_received(&mut self) {
        match self {
            AnyWire::Plain(w) => w.drop_received(),
            AnyWire::Noise(w) => w.drop_received(),
        }
    }

    #[inline]
    fn next_frame_len(&self) -> Option<u64> {
        match self {
            AnyWire::Plain(w) => w.next_frame_len(),
            AnyWire::Noise(w) => w.next_frame_len(),
        }
    }

    #[inline]
    fn seal(&mut self, frame: Bytes) -> Bytes {
        match self {
            AnyWire::Plain(w) => w.seal(frame),
            AnyWire::Noise(w) => w.seal(frame),
        }
    }

    #[inline]
    fn can_seal(&self) -> bool {
        match self {
            AnyWire::Plain(w) => w.can_seal(),
            AnyWire::Noise(w) => w.can_seal(),
        }
    }

    #[inline]
    fn poll_own(&mut self) -> Option<Bytes> {
        match self {
            AnyWire::Plain(w) => w.poll_own(),
            AnyWire::Noise(w) => w.poll_own(),
        }
    }

    #[inline]
    fn peer_identity(&self) -> Option<PublicKey> {
        match self {
            AnyWire::Plain(w) => w.peer_identity(),
            AnyWire::Noise(w) => w.peer_identity(),
        }
    }

    #[inline]
    fn fail(&mut self, error: NoiseError) {
        match self {
            AnyWire::Plain(w) => w.fail(error),
            AnyWire::Noise(w) => w.fail(error),
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
    fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        self.decoder.next_frame().map_err(WireError::Protocol)
    }

    #[inline]
    fn buffered_len(&self) -> usize {
        self.decoder.buffered_len()
    }

    fn buffered_memory(&self) -> usize {
        self.decoder.buffered_capacity()
    }

    fn drop_received(&mut self) {
        self.decoder = FrameDecoder::default();
    }

    #[inline]
    fn next_frame_len(&self) -> Option<u64> {
        self.decoder.next_frame_len()
    }

    #[inline]
    fn seal(&mut self, frame: Bytes) -> Bytes {
        frame
    }

    #[inline]
    fn can_seal(&self) -> bool {
        true
    }

    #[inline]
    fn poll_own(&mut self) -> Option<Bytes> {
        None
    }

    #[inline]
    fn peer_identity(&self) -> Option<PublicKey> {
        None
    }

    #[inline]
    fn fail(&mut self, _: NoiseError) {}
}

/// weft's framing inside Noise: the decrypted byte stream feeds the frame decoder.
#[derive(Debug)]
pub(crate) struct NoiseWire {
    link: NoiseLink,
    decoder: FrameDecoder,
}

impl NoiseWire {
    /// A Noise wire for `role`, its ephemeral key drawn from `seed`.
    pub(crate) fn new(keys: &NoiseKeys, role: NoiseRole, seed: [u8; 32]) -> NoiseWire {
        NoiseWire {
            link: NoiseLink::new(keys, role, seed),
            decoder: FrameDecoder::default(),
        }
    }
}

impl Wire for NoiseWire {
    fn push(&mut self, bytes: Bytes) {
        self.link.push(&bytes);
        while let Some(plain) = self.link.poll_plaintext() {
            self.decoder.push(plain);
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if let Some(e) = self.link.error() {
            return Err(WireError::Noise(e));
        }
        self.decoder.next_frame().map_err(WireError::Protocol)
    }

    fn buffered_len(&self) -> usize {
        self.link.buffered_len() + self.decoder.buffered_len()
    }

    fn buffered_memory(&self) -> usize {
        self.link.buffered_capacity() + self.decoder.buffered_capacity()
    }

    fn drop_received(&mut self) {
        self.link.drop_received();
        self.decoder = FrameDecoder::default();
    }

    fn next_frame_len(&self) -> Option<u64> {
        self.decoder.next_frame_len()
    }

    fn seal(&mut self, frame: Bytes) -> Bytes {
        self.link.seal(&frame)
    }

    fn can_seal(&self) -> bool {
        self.link.is_established()
    }

    fn poll_own(&mut self) -> Option<Bytes> {
        self.link.poll_transmit()
    }

    fn peer_identity(&self) -> Option<PublicKey> {
        self.link.peer_identity()
    }

    fn fail(&mut self, error: NoiseError) {
        self.link.fail(error);
    }
}
