//! The transport layer between a connection's bytes and its frame decoder.
//!
//! Pass-through today. Encryption (Noise) will live here: the handshake and protocols above
//! see only plaintext frames, so replacing this layer touches nothing else.

use bytes::Bytes;

/// One connection's transport state.
#[derive(Debug, Default)]
pub(crate) enum Transport {
    /// Bytes pass unchanged.
    #[default]
    Plain,
}

impl Transport {
    /// Turns bytes from the wire into plaintext for the frame decoder.
    pub(crate) fn open(&mut self, wire: Bytes) -> Bytes {
        match self {
            Transport::Plain => wire,
        }
    }

    /// Turns a plaintext frame into bytes for the wire.
    pub(crate) fn seal(&mut self, frame: Bytes) -> Bytes {
        match self {
            Transport::Plain => frame,
        }
    }
}
