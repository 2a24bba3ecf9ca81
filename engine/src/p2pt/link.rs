//! One p2p.today connection: its bytes in, its peer once the handshake names it, and what
//! compression each side reads (SPEC.md §25.5, §25.9).

use std::ops::Bound;

use bytes::Bytes;
use weft_protocol::p2pt::{
    decode_frame, frame_len, receive_order, Addr, Decoded, Method, P2ptError,
};

use crate::connection::ConnId;
use crate::time::Instant;

/// The methods weft compresses with, when the peer reads them (SPEC.md §25.5). bz2 and xz
/// are read, never written: py2p takes a raw frame on any link, and an xz encoder at py2p's
/// preset takes about 94 MiB and tens of milliseconds a frame, which a peer advertising xz
/// alone would have weft spend on every frame to it.
pub const P2PT_SEND_METHODS: [Method; 2] = [Method::Zlib, Method::Gzip];

/// A link's receive buffer, emptied, is kept at most this large (SPEC.md §25.8): one
/// `P2PT_BODY_BYTES_MAX` frame grew it to 8 MiB, kept while the link lived.
pub const P2PT_BUF_KEPT_BYTES_MAX: usize = 64 * 1024;

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
    /// The methods the peer can read, in its order (its handshake, then its
    /// renegotiations; codes weft does not know, and repeats, left out: at most four).
    peer_methods: Vec<Method>,
    /// Bytes received; those before `start` are frames already taken.
    buf: Vec<u8>,
    /// Where the next frame begins in `buf`.
    start: usize,
    /// Since when `buf` has held part of a frame.
    pub partial_since: Option<Instant>,
    /// The msgpack of the last whisper or broadcast sent here, for `renegotiate/resend`
    /// (taken by the first resend: one answer per message).
    last_sent: Option<Bytes>,
    /// When it opened (the handshake deadline runs from here).
    pub opened_at: Instant,
    /// Bytes handed to the driver since it last said `Writable`.
    pub unwritten: usize,
    /// The table's catch-up still to send here: the keys after this bound (`None`: none, or
    /// all sent). Paced by `Writable` (SPEC.md §25.11).
    pub catch_up: Option<Bound<Vec<u8>>>,
    /// Keys the catch-up sent ahead of its turn (before a delta of theirs), skipped when
    /// their turn comes: at most the table's keys.
    pub caught_up_early: std::collections::BTreeSet<Vec<u8>>,
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
            peer_methods: Vec::new(),
            buf: Vec::new(),
            start: 0,
            partial_since: None,
            last_sent: None,
            opened_at: now,
            unwritten: 0,
            catch_up: None,
            caught_up_early: std::collections::BTreeSet::new(),
            closing: false,
        }
    }

    /// The peer's id once its handshake came.
    pub(super) fn peer_id(&self) -> Option<&[u8]> {
        self.peer.as_ref().map(|p| p.id.as_slice())
    }

    /// Records the codes the peer can read; whether the methods it reads changed.
    pub(super) fn set_peer_codes(&mut self, codes: &[u64]) -> bool {
        let methods = receive_order(codes);
        let changed = methods != self.peer_methods;
        self.peer_methods = methods;
        changed
    }

    /// Whether the peer can read `method`.
    pub(super) fn peer_reads(&self, method: Method) -> bool {
        self.peer_methods.contains(&method)
    }

    /// The method frames to this peer are compressed with: the first of `ours` that weft
    /// writes ([`P2PT_SEND_METHODS`]) and the peer reads.
    pub(super) fn send_method(&self, ours: &[Method]) -> Option<Method> {
        // `choose_compression` over the methods weft writes, without building its lists on
        // every frame.
        ours.iter()
            .copied()
            .find(|m| P2PT_SEND_METHODS.contains(m) && self.peer_methods.contains(m))
    }

    /// Whether the table catch-up has yet to send `key` here.
    pub(super) fn catch_up_pending(&self, key: &[u8]) -> bool {
        match &self.catch_up {
            None => false,
            Some(Bound::Unbounded) => true,
            Some(Bound::Excluded(sent)) => key > sent.as_slice(),
            Some(Bound::Included(next)) => key >= next.as_slice(),
        }
    }

    /// Keeps `msgpack`, just sent, for a `renegotiate/resend`.
    pub(super) fn remember_sent(&mut self, msgpack: Bytes) {
        self.last_sent = Some(msgpack);
    }

    /// The message to send again on a `renegotiate/resend`, once.
    pub(super) fn take_resend(&mut self) -> Option<Bytes> {
        self.last_sent.take()
    }

    /// Appends received bytes.
    pub(super) fn push(&mut self, bytes: &[u8], now: Instant) {
        if self.start > 0 {
            // What was taken goes before more comes, so the buffer holds one frame's worth.
            self.buf.drain(..self.start);
            self.start = 0;
        }
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
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let Some(total) = frame_len(pending)? else {
            return Ok(None);
        };
        let Some(frame) = pending.get(..total) else {
            return Ok(None);
        };
        let mut methods = self.peer_methods.clone();
        for m in ours {
            if !methods.contains(m) {
                methods.push(*m);
            }
        }
        let decoded = decode_frame(frame, &methods);
        // Taken by offset: splitting the rest off copied it once per frame (a read of tiny
        // frames cost its size squared).
        self.start += total;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
            // A large frame's buffer is not kept while the link idles: every link after one
            // such frame held 512 MiB doing nothing.
            if self.buf.capacity() > P2PT_BUF_KEPT_BYTES_MAX {
                self.buf = Vec::new();
            }
        }
        self.partial_since = if self.buf.is_empty() { None } else { Some(now) };
        decoded.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::p2pt::{encode_frame, MainFlag, Message, SubFlag};

    #[test]
    fn a_peer_reads_at_most_the_four_methods_weft_knows() {
        let mut link = Link::new(ConnId::inbound(1), false, "a".into(), Instant::ZERO);
        let codes: Vec<u64> = (0..60_000u64).map(|i| i % 300).collect();
        assert!(link.set_peer_codes(&codes));
        assert_eq!(link.peer_methods.len(), 4);
        assert!(!link.set_peer_codes(&codes), "the same methods: unchanged");
        assert_eq!(link.send_method(&Method::PREFERENCE), Some(Method::Zlib));
        assert!(link.set_peer_codes(&[0x12, 0x10]));
        assert_eq!(link.send_method(&Method::PREFERENCE), None, "xz, bz2: raw");
    }

    #[test]
    fn a_large_frames_buffer_is_not_kept_once_it_is_taken() {
        let big = "x".repeat(1 << 20);
        let m = Message::new(
            MainFlag::WHISPER,
            b"s".to_vec(),
            1,
            SubFlag::WHISPER,
            vec![big.as_str().into()],
        );
        let wire = encode_frame(&m.to_msgpack(), None).unwrap();
        let mut link = Link::new(ConnId::inbound(1), false, "a".into(), Instant::ZERO);
        for piece in wire.chunks(1000) {
            link.push(piece, Instant::ZERO);
        }
        assert!(link.buf.capacity() >= wire.len());
        assert!(matches!(link.next_frame(&[], Instant::ZERO), Ok(Some(_))));
        assert!(
            link.buf.capacity() <= P2PT_BUF_KEPT_BYTES_MAX,
            "{}",
            link.buf.capacity()
        );
    }

    quickcheck::quickcheck! {
        /// Frames taken by offset, pushed in any chunks, come out whole and in order, as
        /// they went in.
        fn frames_come_out_as_they_went_in(texts: Vec<String>, cuts: Vec<u16>) -> bool {
            let mut wire = Vec::new();
            let mut sent = Vec::new();
            for t in &texts {
                let m = Message::new(MainFlag::WHISPER, b"s".to_vec(), 1, SubFlag::WHISPER, vec![t.as_str().into()]);
                let body = m.to_msgpack();
                wire.extend(encode_frame(&body, None).unwrap());
                sent.push(body);
            }
            let mut link = Link::new(ConnId::inbound(1), false, "a".into(), Instant::ZERO);
            let mut got = Vec::new();
            let mut at = 0;
            let mut cuts = cuts.into_iter();
            while at < wire.len() {
                let n = (cuts.next().unwrap_or(u16::MAX) as usize % 97 + 1).min(wire.len() - at);
                link.push(&wire[at..at + n], Instant::ZERO);
                at += n;
                while let Ok(Some(d)) = link.next_frame(&[], Instant::ZERO) {
                    got.push(d.msgpack);
                }
            }
            got == sent && link.partial_since.is_none()
        }
    }
}
