//! One connection: where it is in its life, its byte layer, its send queue and its counters.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use weft_protocol::{
    Code, Family, Frame, NodeId, ProtocolError, PublicKey, HANDSHAKE_FRAME_BYTES_MAX,
};

use crate::connection::{ConnId, Direction};
use crate::metrics::{ByProtocol, ConnStats};
use crate::time::Instant;

use super::handshake::Handshake;
use super::send_queue::{self, SendQueue, Transmit};
use super::wire::{AnyWire, Wire, WireError};
use crate::noise::{NoiseError, PLAINTEXT_BYTES_MAX};

/// Where a connection is in its life.
#[derive(Debug)]
pub(crate) enum ConnState {
    /// Dialed; waiting for the driver's `Connected`.
    Dialing,
    /// Accepted by the driver; the handshake has not started.
    Accepted,
    /// Open; HELLO and HELLO_ACK in progress.
    Handshaking(Box<Handshake>),
    /// Proven: the peer's identity is known. Shared: each frame received is handed on with
    /// its peer.
    Established(Arc<Peer>),
    /// The engine asked the driver to close it; waiting for `Closed`.
    Closing,
}

/// An established peer, as the handshake proved it and its HELLO described it.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Its id.
    pub(crate) node: NodeId,
    /// Its run.
    pub(crate) incarnation: u64,
    /// Where it accepts connections, if anywhere.
    pub(crate) listen_addr: Option<String>,
    /// The families it runs (HELLO `families`).
    pub(crate) families: u32,
    /// The dialer's HELLO nonce: the last tie-break between two links dialed by the same side.
    pub(crate) dialer_nonce: [u8; 32],
    /// Its public key, as its HELLO gave it and its HELLO_ACK proved it.
    pub(crate) public_key: PublicKey,
}

impl Peer {
    /// Whether it runs `family`.
    pub(crate) fn runs(&self, family: Family) -> bool {
        self.families & family.bit() != 0
    }
}

/// One connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    pub(crate) addr: String,
    pub(crate) direction: Direction,
    pub(crate) state: ConnState,
    /// `Some`: a dedicated connection carrying this family only, never a link (SPEC.md §8.9).
    pub(crate) dedicated: Option<Family>,
    /// Frames to the peer may be lz4-compressed: both ends offered it.
    pub(crate) send_compressed: bool,
    /// Frames were queued since the session last flushed (it lists the connection in
    /// `Session::unflushed`).
    pub(crate) flush_due: bool,
    wire: AnyWire,
    queue: SendQueue,
    pub(crate) opened_at: Instant,
    pub(crate) last_sent_at: Instant,
    pub(crate) last_received_at: Instant,
    bytes_in: u64,
    bytes_out: u64,
    traffic: ByProtocol,
    relays_dropped: u64,
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
            dedicated: None,
            send_compressed: false,
            flush_due: false,
            wire: AnyWire::default(),
            queue: SendQueue::default(),
            opened_at: now,
            last_sent_at: now,
            last_received_at: now,
            bytes_in: 0,
            bytes_out: 0,
            traffic: ByProtocol::default(),
            relays_dropped: 0,
        }
    }

    /// The peer, once established.
    pub(crate) fn peer(&self) -> Option<&Peer> {
        self.peer_shared().map(|p| &**p)
    }

    /// The peer, shared, once established.
    pub(crate) fn peer_shared(&self) -> Option<&Arc<Peer>> {
        match &self.state {
            ConnState::Established(p) => Some(p),
            _ => None,
        }
    }

    /// Whether it is closing.
    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.state, ConnState::Closing)
    }

    /// Its counters and queue state.
    pub(crate) fn stats(&self) -> ConnStats {
        let named = self.traffic.named();
        ConnStats {
            frames_in: named.iter().map(|(_, t)| t.frames_in).sum(),
            bytes_in: self.bytes_in,
            frames_out: named.iter().map(|(_, t)| t.frames_out).sum(),
            bytes_out: self.bytes_out,
            queued_bytes: self.queue.queued_bytes(),
            in_flight_bytes: self.queue.in_flight_bytes(),
            bulk_queued: self.queue.bulk_queued(),
            by_protocol: self.traffic,
            relays_dropped: self.relays_dropped,
        }
    }

    /// The send queue.
    pub(crate) fn queue(&self) -> &SendQueue {
        &self.queue
    }

    /// The send queue, to offer it a frame.
    pub(crate) fn queue_mut(&mut self) -> &mut SendQueue {
        &mut self.queue
    }

    /// Counts a relay dropped for this connection.
    pub(crate) fn count_relay_dropped(&mut self) {
        self.relays_dropped += 1;
    }

    /// Puts `wire` under the connection, before any byte has passed.
    pub(crate) fn set_wire(&mut self, wire: AnyWire) {
        self.wire = wire;
    }

    /// The identity key the transport proved for the peer, if it proves one.
    pub(crate) fn transport_identity(&self) -> Option<PublicKey> {
        self.wire.peer_identity()
    }

    /// Ends the byte stream with `error`: nothing more is read.
    pub(crate) fn fail_wire(&mut self, error: NoiseError) {
        self.wire.fail(error);
    }

    /// Takes bytes that arrived at `now`: they count as the peer heard from, whole frame or
    /// not (a large frame on a slow link may take longer than `peer_timeout`, and nothing
    /// can pass it on its connection).
    pub(crate) fn push_bytes(&mut self, now: Instant, bytes: Bytes) {
        self.bytes_in += bytes.len() as u64;
        if !bytes.is_empty() {
            self.last_received_at = now;
        }
        self.wire.push(bytes);
    }

    /// Whether the peer has not proven its key yet (nor been closed).
    pub(crate) fn is_unauthenticated(&self) -> bool {
        matches!(
            self.state,
            ConnState::Dialing | ConnState::Accepted | ConnState::Handshaking(_)
        )
    }

    /// The next whole frame received, counted. Before the handshake is done, a frame whose
    /// header declares more than [`HANDSHAKE_FRAME_BYTES_MAX`] is refused on its length
    /// prefix, before its payload is buffered (SPEC.md §8.4).
    pub(crate) fn next_frame(
        &mut self,
        now: Instant,
        traffic: &mut ByProtocol,
    ) -> Result<Option<Frame>, WireError> {
        if self.is_unauthenticated() {
            let max = HANDSHAKE_FRAME_BYTES_MAX as u64;
            if let Some(len) = self.wire.next_frame_len().filter(|len| *len > max) {
                // Body lengths, as the frame layer reports them (SPEC.md §2.2).
                return Err(WireError::Protocol(ProtocolError::FrameTooLarge {
                    len: len - 4,
                    max: max - 4,
                }));
            }
        }
        let frame = self.wire.next_frame()?;
        if let Some(f) = &frame {
            self.traffic.count_in(f.code(), f.bytes().len());
            traffic.count_in(f.code(), f.bytes().len());
            self.last_received_at = now;
        }
        Ok(frame)
    }

    /// Bytes held that do not make a whole frame.
    pub(crate) fn buffered_len(&self) -> usize {
        self.wire.buffered_len()
    }

    /// Memory the bytes that do not make a whole frame take.
    pub(crate) fn buffered_memory(&self) -> usize {
        self.wire.buffered_memory()
    }

    /// Frees the bytes received and not taken: the connection is closing.
    pub(crate) fn drop_received(&mut self) {
        self.wire.drop_received();
    }

    /// Whether bytes that do not make a whole frame are held.
    pub(crate) fn has_buffered(&self) -> bool {
        self.wire.buffered_len() > 0
    }

    /// The transport's own bytes (its handshake), else the next frame the transmit window
    /// allows (small control and relay frames come as runs of frames: see `send_queue`),
    /// sealed for the wire and counted. Under Noise, the control and relay frames queued
    /// behind a control or relay frame go in the same seal, up to one Noise message of
    /// plaintext and within the window: one AEAD call, one length and one tag for many small
    /// frames (SPEC.md §21.4).
    pub(crate) fn next_transmit(
        &mut self,
        now: Instant,
        window: usize,
        traffic: &mut ByProtocol,
    ) -> Option<Sent> {
        if let Some(bytes) = self.wire.poll_own() {
            // In flight like any other bytes handed to the driver, until `Writable`.
            self.queue.handed_out(bytes.len());
            self.bytes_out += bytes.len() as u64;
            self.last_sent_at = now;
            return Some(Sent {
                bytes,
                frames: 0,
                bulk: None,
            });
        }
        if !self.wire.can_seal() {
            return None;
        }
        let Transmit { frame, bulk } = self.queue.next_transmit(window)?;
        let (code, frames) = self.count_out(&frame, traffic);
        // A handshake frame goes in a Noise message of its own: the dialer's HELLO_ACK was
        // sealed with the frames its new link queued behind it (digests, up to a 64 KiB
        // message), which the acceptor, not yet established, held against the shared bound
        // on handshake bytes (SPEC.md §8.4) until the whole message came.
        let handshake = matches!(code, Code::HELLO | Code::HELLO_ACK);
        let coalesces = matches!(self.wire, AnyWire::Noise(_)) && !bulk && !handshake;
        let (plain, frames) = if coalesces && frame.len() < PLAINTEXT_BYTES_MAX {
            let (plain, more) = self.coalesce(frame, window, traffic);
            (plain, frames + more)
        } else {
            (frame, frames)
        };
        let wire = self.wire.seal(plain);
        self.queue.handed_out(wire.len());
        self.bytes_out += wire.len() as u64;
        self.last_sent_at = now;
        Some(Sent {
            bytes: wire,
            frames,
            bulk: bulk.then_some(code),
        })
    }

    /// `first` and the control and relay frames queued behind it that fit one Noise message
    /// and the window, as one plaintext; and how many frames were added to `first`'s.
    fn coalesce(&mut self, first: Bytes, window: usize, traffic: &mut ByProtocol) -> (Bytes, u32) {
        let room = |batch: usize, in_flight: usize| {
            PLAINTEXT_BYTES_MAX
                .saturating_sub(batch)
                .min(window.saturating_sub(in_flight + batch))
        };
        let Some(next) = self
            .queue
            .next_lane_frame_within(room(first.len(), self.queue.in_flight()))
        else {
            return (first, 0);
        };
        let mut batch = BytesMut::with_capacity(PLAINTEXT_BYTES_MAX.min(window));
        batch.extend_from_slice(&first);
        let mut frame = next;
        let mut frames = 0;
        loop {
            frames += self.count_out(&frame, traffic).1;
            batch.extend_from_slice(&frame);
            match self
                .queue
                .next_lane_frame_within(room(batch.len(), self.queue.in_flight()))
            {
                Some(next) => frame = next,
                None => return (batch.freeze(), frames),
            }
        }
    }

    /// Counts a frame, or a run of frames, handed out: the (first) frame's code, and how many
    /// frames.
    fn count_out(&mut self, bytes: &Bytes, traffic: &mut ByProtocol) -> (Code, u32) {
        let (mut first, mut frames) = (Code(0), 0);
        for (code, len) in send_queue::frames(bytes) {
            if frames == 0 {
                first = code;
            }
            frames += 1;
            self.traffic.count_out(code, len);
            traffic.count_out(code, len);
        }
        (first, frames)
    }
}

/// What [`Conn::next_transmit`] hands out.
#[derive(Debug)]
pub(crate) struct Sent {
    /// The bytes to write.
    pub(crate) bytes: Bytes,
    /// The frames they carry (0 for the transport's own handshake bytes).
    pub(crate) frames: u32,
    /// The code of the bulk frame they carry, if they carry one (a bulk frame goes alone).
    pub(crate) bulk: Option<Code>,
}
