//! One connection: its decoder, transport, handshake state, send queue and counters.

use std::collections::VecDeque;

use bytes::Bytes;
use weft_protocol::{Code, FrameDecoder, NodeId};

use crate::handshake::Handshake;
use crate::io::{ConnId, Direction};
use crate::metrics::{ByProtocol, ConnStats, Traffic};
use crate::time::Instant;
use crate::transport::Transport;

/// Where a connection is in its life.
#[derive(Debug)]
pub(crate) enum ConnState {
    /// Dialed; waiting for the driver's `Connected`.
    Dialing,
    /// Accepted by the driver; the handshake has not started.
    Accepted,
    /// Open; HELLO and HELLO_ACK in progress.
    Handshaking(Box<Handshake>),
    /// Proven: the peer's identity is known. Boxed: a frame's way through reads only whether
    /// the connection is established, never who the peer is.
    Established(Box<Peer>),
    /// The engine asked the driver to close it; waiting for `Closed`.
    Closing,
}

/// What the handshake established about the peer.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub(crate) node: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) listen_addr: Option<String>,
    /// The dialer's HELLO nonce: the last tie-break between two links dialed by the same side.
    pub(crate) dialer_nonce: [u8; 32],
}

/// The class of a queued frame, for the overflow rule (SPEC.md §Back-pressure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priority {
    /// A relayed broadcast: dropped and counted when the queue is over the relay bound.
    Relay,
    /// Everything else: queued; over the hard bound the peer is disconnected.
    Control,
}

/// What happened to a frame offered to a send queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Queued,
    DroppedRelay,
    Overflow,
}

/// A connection's queue of frames not yet handed to the driver. The oldest frame sits in a
/// slot of its own: most frames are queued into an empty queue and taken out at once, and then
/// only the slot is touched, never the ring buffer. The ring buffer is boxed (made at the
/// first backlog and kept), so the queue takes 40 bytes of the connection's send line.
#[derive(Debug, Default)]
struct SendQueue {
    /// The oldest frame; empty only when `rest` is empty too.
    first: Option<Bytes>,
    /// The frames after it, in order.
    #[allow(
        clippy::box_collection,
        reason = "8 bytes of the send line instead of the deque's 32; made once, at the first backlog"
    )]
    rest: Option<Box<VecDeque<Bytes>>>,
}

impl SendQueue {
    fn push_back(&mut self, frame: Bytes) {
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.rest.get_or_insert_with(Box::default).push_back(frame);
        }
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        let first = self.first.take()?;
        if let Some(rest) = self.rest.as_mut() {
            self.first = rest.pop_front();
        }
        Some(first)
    }

    fn clear(&mut self) {
        self.first = None;
        if let Some(rest) = self.rest.as_mut() {
            rest.clear();
        }
    }
}

/// Frames and bytes one way: the mesh's counters, kept on the lines a frame touches anyway.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    frames: u64,
    bytes: u64,
}

/// One connection.
///
/// `repr(C)` keeps the fields in this order, in 64-byte lines: what a send updates (line 0:
/// the queue and its byte counts); what a receive updates (line 1: the decoder, bytes in and
/// the mesh's frames in); what both read or update (line 2: the state, flags, times, bytes
/// out and the mesh's frames out); then what neither touches. A send and a receive each touch
/// two lines; in a simulation of many nodes each is a cache miss. Aligned to a line, so these
/// are the machine's lines wherever a connection is stored. The public `ConnStats` is put
/// together from these on request (`Conn::stats`).
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Conn {
    send_queue: SendQueue,
    /// Bytes waiting in `send_queue`.
    queued_bytes: usize,
    /// Bytes handed to the driver and not yet reported written.
    in_flight_bytes: usize,
    pub(crate) id: ConnId,
    pub(crate) decoder: FrameDecoder,
    bytes_in: u64,
    /// BROADCAST frames received.
    mesh_in: Tally,
    pub(crate) state: ConnState,
    /// Frames to the peer may be lz4-compressed: both ends offered it. Set when established;
    /// a closing connection takes no more frames, so it is never read before that.
    pub(crate) send_compressed: bool,
    /// A chord-only connection (SPEC.md §20.4): never a mesh link.
    pub(crate) chord_only: bool,
    pub(crate) direction: Direction,
    pub(crate) last_sent_at: Instant,
    pub(crate) last_received_at: Instant,
    bytes_out: u64,
    /// BROADCAST frames handed to the driver.
    mesh_out: Tally,
    /// Every other protocol's frames (the `mesh` entry stays zero: see `mesh_in`/`mesh_out`).
    traffic: ByProtocol,
    relays_dropped: u64,
    pub(crate) transport: Transport,
    pub(crate) addr: String,
    pub(crate) opened_at: Instant,
}

impl Conn {
    pub(crate) fn new(id: ConnId, addr: String, direction: Direction, now: Instant) -> Conn {
        Conn {
            id,
            addr,
            direction,
            state: match direction {
                Direction::Outbound => ConnState::Dialing,
                Direction::Inbound => ConnState::Accepted,
            },
            decoder: FrameDecoder::new(),
            transport: Transport::default(),
            opened_at: now,
            last_received_at: now,
            last_sent_at: now,
            send_queue: SendQueue::default(),
            queued_bytes: 0,
            in_flight_bytes: 0,
            bytes_in: 0,
            mesh_in: Tally::default(),
            bytes_out: 0,
            mesh_out: Tally::default(),
            traffic: ByProtocol::default(),
            relays_dropped: 0,
            send_compressed: false,
            chord_only: false,
        }
    }

    /// The peer, once established.
    pub(crate) fn peer(&self) -> Option<&Peer> {
        match &self.state {
            ConnState::Established(p) => Some(p),
            _ => None,
        }
    }

    /// The counters and queue state, as the public `ConnStats`.
    pub(crate) fn stats(&self) -> ConnStats {
        let mut by_protocol = self.traffic;
        by_protocol.mesh = Traffic {
            frames_in: self.mesh_in.frames,
            frames_out: self.mesh_out.frames,
            bytes_in: self.mesh_in.bytes,
            bytes_out: self.mesh_out.bytes,
        };
        let named = by_protocol.named();
        ConnStats {
            frames_in: named.iter().map(|(_, t)| t.frames_in).sum(),
            bytes_in: self.bytes_in,
            frames_out: named.iter().map(|(_, t)| t.frames_out).sum(),
            bytes_out: self.bytes_out,
            queued_bytes: self.queued_bytes,
            in_flight_bytes: self.in_flight_bytes,
            by_protocol,
            relays_dropped: self.relays_dropped,
        }
    }

    /// Bytes waiting in the send queue.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The driver reported everything handed to it written.
    pub(crate) fn written(&mut self) {
        self.in_flight_bytes = 0;
    }

    /// Counts bytes received, before framing.
    pub(crate) fn count_bytes_in(&mut self, len: usize) {
        self.bytes_in += len as u64;
    }

    /// Counts a whole frame received.
    pub(crate) fn count_frame_in(&mut self, code: Code, len: usize) {
        if code == Code::BROADCAST {
            self.mesh_in.frames += 1;
            self.mesh_in.bytes += len as u64;
        } else {
            let t = self.traffic.of(code);
            t.frames_in += 1;
            t.bytes_in += len as u64;
        }
    }

    /// Offers a frame to the send queue under the overflow rule.
    pub(crate) fn enqueue(
        &mut self,
        frame: Bytes,
        priority: Priority,
        relay_max: usize,
        hard_max: usize,
    ) -> Enqueued {
        let after = self.queued_bytes + frame.len();
        // An empty queue always takes one relay, so a broadcast larger than the relay bound
        // still travels.
        if priority == Priority::Relay && after > relay_max && self.queued_bytes > 0 {
            self.relays_dropped += 1;
            return Enqueued::DroppedRelay;
        }
        if after > hard_max {
            return Enqueued::Overflow;
        }
        self.queued_bytes = after;
        self.send_queue.push_back(frame);
        Enqueued::Queued
    }

    /// Takes the next frame to hand to the driver while the transmit window allows it.
    pub(crate) fn next_transmit(&mut self, window: usize) -> Option<Bytes> {
        if self.in_flight_bytes >= window {
            return None;
        }
        let frame = self.send_queue.pop_front()?;
        self.queued_bytes -= frame.len();
        // Every queued frame has a whole header; were one short, it would count as session.
        let code = frame
            .get(6..8)
            .map_or(Code(0), |c| Code(u16::from_be_bytes([c[0], c[1]])));
        if code == Code::BROADCAST {
            self.mesh_out.frames += 1;
            self.mesh_out.bytes += frame.len() as u64;
        } else {
            let t = self.traffic.of(code);
            t.frames_out += 1;
            t.bytes_out += frame.len() as u64;
        }
        let wire = self.transport.seal(frame);
        self.in_flight_bytes += wire.len();
        self.bytes_out += wire.len() as u64;
        Some(wire)
    }

    /// Drops everything still queued (the connection is closing).
    pub(crate) fn clear_queue(&mut self) {
        self.send_queue.clear();
        self.queued_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    /// The lines `Conn`'s comment promises (64-bit targets, where they were measured).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn hot_fields_sit_in_the_lines_the_layout_names() {
        use core::mem::offset_of;
        let line = |offset: usize| offset / 64;
        let last = |offset: usize, size: usize| line(offset + size - 1);
        assert_eq!(line(offset_of!(Conn, send_queue)), 0);
        assert_eq!(last(offset_of!(Conn, in_flight_bytes), 8), 0);
        assert_eq!(line(offset_of!(Conn, decoder)), 1);
        assert_eq!(last(offset_of!(Conn, mesh_in), 16), 1);
        assert_eq!(line(offset_of!(Conn, state)), 2);
        assert_eq!(last(offset_of!(Conn, mesh_out), 16), 2);
        assert_eq!(last(offset_of!(Conn, last_received_at), 8), 2);
    }

    #[test]
    fn stats_add_up_every_protocol_and_the_mesh() {
        let mut c = Conn::new(
            ConnId::inbound(1),
            "a".into(),
            Direction::Inbound,
            Instant(0),
        );
        c.count_bytes_in(100);
        c.count_frame_in(Code::BROADCAST, 40);
        c.count_frame_in(Code::PING, 9);
        let broadcast = weft_protocol::Frame::build(Code::BROADCAST, &[1, 2], false).into_bytes();
        let ping = weft_protocol::Frame::build(Code::PING, &[], false).into_bytes();
        for f in [broadcast.clone(), ping.clone(), broadcast.clone()] {
            assert_eq!(
                c.enqueue(f, Priority::Control, 1 << 20, 1 << 20),
                Enqueued::Queued
            );
        }
        assert_eq!(c.stats().queued_bytes, 2 * broadcast.len() + ping.len());
        while c.next_transmit(usize::MAX).is_some() {}
        let s = c.stats();
        assert_eq!((s.frames_in, s.bytes_in, s.frames_out), (2, 100, 3));
        assert_eq!(s.bytes_out, (2 * broadcast.len() + ping.len()) as u64);
        assert_eq!((s.queued_bytes, s.in_flight_bytes as u64), (0, s.bytes_out));
        let mesh = s.by_protocol.mesh;
        assert_eq!((mesh.frames_in, mesh.bytes_in), (1, 40));
        assert_eq!(
            (mesh.frames_out, mesh.bytes_out),
            (2, 2 * broadcast.len() as u64)
        );
        let session = s.by_protocol.session;
        assert_eq!((session.frames_in, session.frames_out), (1, 1));
        c.written();
        assert_eq!(c.stats().in_flight_bytes, 0);
    }

    quickcheck! {
        /// Any pushes, pops and clears: the same frames in the same order as a plain deque.
        fn send_queue_is_a_fifo(ops: Vec<Option<u8>>) -> bool {
            let mut q = SendQueue::default();
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Some(0) => {
                        q.clear();
                        model.clear();
                    }
                    Some(b) => {
                        q.push_back(Bytes::from(vec![b]));
                        model.push_back(Bytes::from(vec![b]));
                    }
                    None => {
                        if q.pop_front() != model.pop_front() {
                            return false;
                        }
                    }
                }
            }
            while let Some(b) = model.pop_front() {
                if q.pop_front() != Some(b) {
                    return false;
                }
            }
            q.pop_front().is_none()
        }
    }
}
