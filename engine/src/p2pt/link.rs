//! One p2p.today connection: its bytes in, its peer once the handshake names it, and what
//! compression each side reads (SPEC.md §25.5, §25.9).

use weft_protocol::p2pt::{
    choose_compression, decode_frame, frame_len, receive_order, Addr, Decoded, Method, P2ptError,
};

use crate::connection::ConnId;
use crate::time::Instant;

/// The peer a handshake named.
#[derive(Debug, Clone)]
pub(super) struct PeerInfo {
    /// Its node id (base58 text as bytes).
    pub id: Vec<u8>,
    /// Where it says it listens.
    pub addr: Addr,
}

/// One connection.
#[derive(Debug)]
pub(super) struct Link {
    pub conn: ConnId,
    /// We dialed it.
    pub outbound: bool,
    /// The dialed address, or the remote address an accepted connection came from.
    pub addr: String,
    /// An outbound dial not yet open.
    pub dialing: bool,
    /// Set once the peer's handshake arrived.
    pub peer: Option<PeerInfo>,
    /// The compression codes the peer can read (its handshake, then its renegotiations).
    pub peer_codes: Vec<u64>,
    /// Bytes received and not yet a whole frame.
    buf: Vec<u8>,
    /// Since when `buf` has held part of a frame.
    pub partial_since: Option<Instant>,
    /// The msgpack of the last whisper or broadcast sent here, for `renegotiate/resend`.
    pub last_sent: Option<Vec<u8>>,
    /// When it opened (the handshake deadline runs from here).
    pub opened_at: Instant,
    /// Bytes handed to the driver since it last said `Writable`.
    pub unwritten: usize,
    /// An `Output::Close` was emitted: nothing more is read or sent.
    pub closing: bool,
}

impl Link {
    pub(super) fn new(conn: ConnId, outbound: bool, addr: String, now: Instant) -> Link {
        Link {
            conn,
            outbound,
            addr,
            dialing: outbound,
            peer: None,
            peer_codes: Vec::new(),
            buf: Vec::new(),
            partial_since: None,
            last_sent: None,
            opened_at: now,
            unwritten: 0,
            closing: false,
        }
    }

    /// The peer's id once its handshake came.
    pub(super) fn peer_id(&self) -> Option<&[u8]> {
        self.peer.as_ref().map(|p| p.id.as_slice())
    }

    /// The method frames to this peer are compressed with: the first of `ours` it can read.
    pub(super) fn send_method(&self, ours: &[Method]) -> Option<Method> {
        choose_compression(ours, &self.peer_codes)
    }

    /// Appends received bytes.
    pub(super) fn push(&mut self, bytes: &[u8], now: Instant) {
        self.buf.extend_from_slice(bytes);
        if !self.buf.is_empty() && self.partial_since.is_none() {
            self.partial_since = Some(now);
        }
    }

    /// The next whole frame, decoded: `Ok(None)` while none is complete. Methods tried: those
    /// the peer advertised, then the rest of `ours` (a raw body is always accepted).
    pub(super) fn next_frame(
        &mut self,
        ours: &[Method],
        now: Instant,
    ) -> Result<Option<Decoded>, P2ptError> {
        let Some(total) = frame_len(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        let frame = std::mem::replace(&mut self.buf, rest);
        self.partial_since = if self.buf.is_empty() { None } else { Some(now) };
        let mut methods = receive_order(&self.peer_codes);
        for m in ours {
            if !methods.contains(m) {
                methods.push(*m);
            }
        }
        decode_frame(&frame, &methods).map(Some)
    }
}
