//! One connection: its decoder, transport, handshake state, send queue and counters.

use std::collections::VecDeque;

use bytes::Bytes;
use weft_protocol::{Code, FrameDecoder, NodeId};

use crate::handshake::Handshake;
use crate::io::{ConnId, Direction};
use crate::metrics::ConnStats;
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
/// only the slot is touched, never the ring buffer's memory.
#[derive(Debug, Default)]
struct SendQueue {
    /// The oldest frame; empty only when `rest` is empty too.
    first: Option<Bytes>,
    /// The frames after it, in order.
    rest: VecDeque<Bytes>,
}

impl SendQueue {
    fn push_back(&mut self, frame: Bytes) {
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.rest.push_back(frame);
        }
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        let first = self.first.take()?;
        if !self.rest.is_empty() {
            self.first = self.rest.pop_front();
        }
        Some(first)
    }

    fn clear(&mut self) {
        self.first = None;
        self.rest.clear();
    }
}

/// One connection.
///
/// `repr(C)` keeps the fields in this order, in 64-byte lines: the send queue (line 0, read by
/// a send); the decoder and receive time (line 1, read by a receive); the state, send time,
/// flags and frame counters (line 2, both); the queue counters and the mesh's traffic (line 3,
/// both); then what neither reads. In a simulation of many nodes each line is a cache miss.
/// Aligned to a line, so these are the machine's lines wherever a connection is stored.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Conn {
    send_queue: SendQueue,
    pub(crate) decoder: FrameDecoder,
    pub(crate) last_received_at: Instant,
    pub(crate) id: ConnId,
    pub(crate) state: ConnState,
    pub(crate) last_sent_at: Instant,
    /// Frames to the peer may be lz4-compressed: both ends offered it. Set when established;
    /// a closing connection takes no more frames, so it is never read before that.
    pub(crate) send_compressed: bool,
    /// A chord-only connection (SPEC.md §20.4): never a mesh link.
    pub(crate) chord_only: bool,
    pub(crate) direction: Direction,
    pub(crate) transport: Transport,
    pub(crate) stats: ConnStats,
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
            stats: ConnStats::default(),
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

    /// Offers a frame to the send queue under the overflow rule.
    pub(crate) fn enqueue(
        &mut self,
        frame: Bytes,
        priority: Priority,
        relay_max: usize,
        hard_max: usize,
    ) -> Enqueued {
        let after = self.stats.queued_bytes + frame.len();
        // An empty queue always takes one relay, so a broadcast larger than the relay bound
        // still travels.
        if priority == Priority::Relay && after > relay_max && self.stats.queued_bytes > 0 {
            self.stats.relays_dropped += 1;
            return Enqueued::DroppedRelay;
        }
        if after > hard_max {
            return Enqueued::Overflow;
        }
        self.stats.queued_bytes = after;
        self.send_queue.push_back(frame);
        Enqueued::Queued
    }

    /// Takes the next frame to hand to the driver while the transmit window allows it.
    pub(crate) fn next_transmit(&mut self, window: usize) -> Option<Bytes> {
        if self.stats.in_flight_bytes >= window {
            return None;
        }
        let frame = self.send_queue.pop_front()?;
        self.stats.queued_bytes -= frame.len();
        if let Some(code) = frame.get(6..8) {
            let t = self
                .stats
                .by_protocol
                .of(Code(u16::from_be_bytes([code[0], code[1]])));
            t.frames_out += 1;
            t.bytes_out += frame.len() as u64;
        }
        let wire = self.transport.seal(frame);
        self.stats.in_flight_bytes += wire.len();
        self.stats.frames_out += 1;
        self.stats.bytes_out += wire.len() as u64;
        Some(wire)
    }

    /// Drops everything still queued (the connection is closing).
    pub(crate) fn clear_queue(&mut self) {
        self.send_queue.clear();
        self.stats.queued_bytes = 0;
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
        assert_eq!(line(offset_of!(Conn, send_queue)), 0);
        assert_eq!(
            line(offset_of!(Conn, send_queue) + size_of::<SendQueue>() - 1),
            0
        );
        assert_eq!(line(offset_of!(Conn, decoder)), 1);
        assert_eq!(line(offset_of!(Conn, id) + 7), 1);
        assert_eq!(line(offset_of!(Conn, state)), 2);
        assert_eq!(
            line(offset_of!(Conn, stats) + offset_of!(ConnStats, bytes_out) + 7),
            2
        );
        let mesh = offset_of!(Conn, stats)
            + offset_of!(ConnStats, by_protocol)
            + offset_of!(crate::metrics::ByProtocol, mesh);
        assert_eq!(
            line(offset_of!(Conn, stats) + offset_of!(ConnStats, queued_bytes)),
            3
        );
        assert_eq!(line(mesh + size_of::<crate::metrics::Traffic>() - 1), 3);
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
