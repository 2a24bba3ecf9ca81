//! Mesh flood broadcast and its repair (SPEC.md §11).
//!
//! The three rules: the originator sends to all its links; a receiver of a new broadcast
//! relays the received frame, unchanged, to all its links but the one it came on; nobody
//! relays or delivers a broadcast twice (the seen windows, `crate::seen`).
//!
//! Repair: every node holds the broadcasts it delivered or originated in a bounded recent
//! window (`store`). When a link comes up, and every repair period to one random link, a
//! node sends a digest of that window; the receiver asks for what it has not seen and floods
//! what it gets back.
//!
//! Admission (SPEC.md §11.8, §11.9): a broadcast not yet seen must be within its sender's
//! rate (`peer_rate`) and, in a network with origin signatures, carry its origin's valid
//! proof (`origin`); both are checked once, before it is recorded, relayed or delivered.

mod origin;
mod peer_rate;
mod store;

use std::collections::VecDeque;

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_protocol::{
    Broadcast, Code, Family, Frame, MeshDigest, MeshWant, Message, NetworkId, NodeId, HEADER_BYTES,
};

use crate::config::Config;
use crate::machine::{
    Class, Context, LinkNotice, Outgoing, PeerFault, Protocol, ProtocolOutput, Recipients,
};
use crate::seen::SeenWindows;
use crate::session::Peer;
use crate::time::Instant;
use crate::timer::Periodic;
use origin::OriginProofs;
use peer_rate::{Admission, PeerRates};
use store::{RepairStore, StoreLimits};

/// What the application asks of the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeshCommand {
    /// Flood `payload` to every node of the mesh.
    Broadcast {
        /// Application bytes, at most `Limits::broadcast_payload_max`.
        payload: Bytes,
    },
}

/// What the mesh tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeshEvent {
    /// A broadcast arrived for the first time.
    Broadcast {
        /// Its originator.
        origin: NodeId,
        /// The originator's incarnation when it sent it.
        incarnation: u64,
        /// The originator's sequence number (per incarnation).
        seq: u64,
        /// The application bytes (a slice of the received frame).
        payload: Bytes,
    },
}

/// Why the mesh refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshRefusal {
    /// The broadcast payload is over `Limits::broadcast_payload_max`.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The mesh's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshMetrics {
    /// Broadcasts this node originated.
    pub broadcasts_originated: u64,
    /// BROADCAST frames received (first copies and duplicates).
    pub broadcasts_received: u64,
    /// BROADCAST frames received that were already seen (or this node's own).
    pub broadcast_duplicates: u64,
    /// Broadcasts delivered to the application (first copies).
    pub broadcasts_delivered: u64,
    /// Repair messages sent: MESH_DIGEST, MESH_WANT and MESH_REPAIR.
    pub repair_messages: u64,
    /// Broadcasts first obtained through MESH_REPAIR.
    pub repairs_received: u64,
    /// New broadcasts dropped because their origin proof was missing, named another key or
    /// did not verify (signatures on); the peer that sent each was disconnected.
    pub broadcasts_forged: u64,
    /// New broadcasts dropped because their sender was over `broadcast_rate_per_peer`.
    pub broadcasts_over_rate: u64,
    /// Peers disconnected for sending over `broadcast_excess_per_peer` past their rate.
    pub peers_over_rate: u64,
    /// Bytes the repair store has allocated for the broadcasts it holds (a gauge).
    pub repair_store_bytes: u64,
}

/// What [`MeshProtocol::admit`] made of a received broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admitted {
    /// A duplicate, or over its sender's rate: dropped.
    No,
    /// New, and taken on trust (signatures off): recorded as seen.
    New,
    /// New, held with its proof for the input's batch: judged at the end of the input.
    Queued,
}

/// A new broadcast whose origin proof waits for the end of its input (SPEC.md §11.8).
#[derive(Debug)]
struct Pending {
    from: NodeId,
    code: Code,
    /// The received frame, when it is relayed as it came (an uncompressed BROADCAST or not).
    frame: Option<Frame>,
    /// The whole BROADCAST payload.
    payload: Bytes,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct MeshProtocol {
    me: NodeId,
    incarnation: u64,
    /// Whether broadcasts carry and need origin proofs (`Config::broadcast_signatures`).
    signatures: bool,
    proofs: OriginProofs,
    /// Broadcasts of the current input held until its end for their proofs, in order.
    pending: Vec<Pending>,
    rates: PeerRates,
    seen: SeenWindows,
    store: RepairStore,
    last_seq: u64,
    broadcast_payload_max: usize,
    /// Sequence numbers a received digest is examined for (`Limits::repair_store_max`).
    wants_budget: usize,
    repair: Periodic,
    rng: ChaCha8Rng,
    metrics: MeshMetrics,
    outputs: VecDeque<ProtocolOutput<MeshEvent>>,
}

impl MeshProtocol {
    pub(crate) fn new(config: &Config, me: NodeId, seed: [u8; 32]) -> MeshProtocol {
        let limits = &config.limits;
        MeshProtocol {
            me,
            incarnation: config.incarnation,
            signatures: config.broadcast_signatures,
            proofs: OriginProofs::new(NetworkId::from_name(&config.network), {
                let mut rng = ChaCha8Rng::from_seed(seed);
                rng.set_stream(1);
                rng
            }),
            pending: Vec::new(),
            rates: PeerRates::new(
                limits.broadcast_rate_per_peer,
                limits.broadcast_excess_per_peer,
                limits.inbound_max + limits.outbound_max + limits.dedicated_conns_max,
            ),
            seen: SeenWindows::new(limits.seen_origins_max, crate::hasher::hash_key(&seed)),
            store: RepairStore::new(StoreLimits {
                count_max: limits.repair_store_max,
                bytes_max: limits.repair_store_bytes_max,
                age_max: config.timers.repair_window,
            }),
            last_seq: 0,
            broadcast_payload_max: limits.broadcast_payload_max,
            wants_budget: limits.repair_store_max,
            repair: Periodic::new(config.timers.repair_interval),
            rng: ChaCha8Rng::from_seed(seed),
            metrics: MeshMetrics::default(),
            outputs: VecDeque::new(),
        }
    }

    pub(crate) fn metrics(&self) -> &MeshMetrics {
        &self.metrics
    }

    /// Counts a broadcast received from `from` and judges it (SPEC.md §11.8, §11.9): new and
    /// taken (recorded as seen), new with its proof queued for the input's batch, or dropped. This node's own broadcasts of its
    /// current run are held already; those of an earlier run (before a restart) are carried
    /// like anyone's, and not delivered: this node sent them. A new broadcast over `from`'s
    /// rate is dropped (not recorded, so another peer's copy is still taken); a repeat
    /// offender with broadcasts of its own origin, or a missing or invalid origin proof, is
    /// the sender's fault. A peer over the rate with others' broadcasts is only dropped: an
    /// honest relay passes on what several links feed it, which may be more than one link may
    /// bring, and one flooding originator would otherwise cut honest links all around it.
    fn admit(
        &mut self,
        now: Instant,
        from: NodeId,
        b: &Broadcast<'_>,
    ) -> Result<Admitted, PeerFault> {
        self.metrics.broadcasts_received += 1;
        if self.is_duplicate(b) {
            self.metrics.broadcast_duplicates += 1;
            return Ok(Admitted::No);
        }
        match self.rates.admit(from, now, b.origin == from) {
            Admission::Allowed => {}
            Admission::Dropped => {
                self.metrics.broadcasts_over_rate += 1;
                return Ok(Admitted::No);
            }
            Admission::Offender => {
                self.metrics.broadcasts_over_rate += 1;
                self.metrics.peers_over_rate += 1;
                return Err(PeerFault::RateLimited);
            }
        }
        if self.signatures {
            if !OriginProofs::names_its_origin(b) {
                self.metrics.broadcasts_forged += 1;
                return Err(PeerFault::BadSignature);
            }
            return Ok(Admitted::Queued);
        }
        self.seen.insert(b.origin, b.incarnation, b.seq);
        Ok(Admitted::New)
    }

    /// Whether `b` was seen already (or is this node's own, of its current run).
    fn is_duplicate(&self, b: &Broadcast<'_>) -> bool {
        let own_current = b.origin == self.me && b.incarnation >= self.incarnation;
        own_current || self.seen.contains(b.origin, b.incarnation, b.seq)
    }

    /// The end of an input: the queued proofs checked in one batch (each alone only if the
    /// batch fails), then each broadcast, in arrival order, taken unless forged or a copy of
    /// one taken just before. A forgery is the sender's fault.
    fn judge_pending(&mut self, now: Instant) -> Result<(), PeerFault> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending = core::mem::take(&mut self.pending);
        // One alone is checked alone (a batch of one costs more); more in one batch.
        let all_valid = pending.len() > 1 && {
            for p in &pending {
                // Decoded the same way when it was held.
                if let Ok(b) = Broadcast::decode(p.code, &p.payload) {
                    self.proofs.queue(&b);
                }
            }
            self.proofs.verify_batch()
        };
        let mut fault = Ok(());
        for p in pending.drain(..) {
            // Decoded the same way when it was queued.
            let Ok(b) = Broadcast::decode(p.code, &p.payload) else {
                continue;
            };
            if !all_valid && !self.proofs.verify(&b) {
                self.metrics.broadcasts_forged += 1;
                fault = Err(PeerFault::BadSignature);
                continue;
            }
            if self.is_duplicate(&b) {
                self.metrics.broadcast_duplicates += 1;
                continue;
            }
            let (origin, incarnation, seq) = (b.origin, b.incarnation, b.seq);
            self.seen.insert(origin, incarnation, seq);
            if p.code == Code::MESH_REPAIR {
                self.metrics.repairs_received += 1;
            }
            let body = p.payload.slice_ref(b.payload);
            let payload = p.payload.clone();
            self.relay_and_deliver(
                now,
                p.from,
                p.frame,
                payload,
                origin,
                incarnation,
                seq,
                body,
            );
        }
        self.pending = pending;
        fault
    }

    /// Holds an encoded broadcast for repair and updates the store's gauge.
    fn hold(&mut self, now: Instant, origin: NodeId, incarnation: u64, seq: u64, payload: &[u8]) {
        self.store.hold(now, origin, incarnation, seq, payload);
        self.metrics.repair_store_bytes = self.store.bytes() as u64;
    }

    /// A new broadcast from `from`: relays it to every other link (the received frame when
    /// there is one), holds it for repair and, unless this node sent it, delivers it.
    /// `payload` is the whole BROADCAST payload, `body` the application bytes within it.
    #[allow(clippy::too_many_arguments)]
    fn relay_and_deliver(
        &mut self,
        now: Instant,
        from: NodeId,
        frame: Option<Frame>,
        payload: Bytes,
        origin: NodeId,
        incarnation: u64,
        seq: u64,
        body: Bytes,
    ) {
        let message = match frame {
            Some(f) => Outgoing::relay(f, payload.clone()),
            None => Outgoing::encoded(Code::BROADCAST, payload.clone()),
        };
        self.outputs.push_back(ProtocolOutput::Send {
            to: Recipients::Links { except: Some(from) },
            message,
            class: Class::Relay,
        });
        self.hold(now, origin, incarnation, seq, &payload);
        if origin == self.me {
            return;
        }
        self.metrics.broadcasts_delivered += 1;
        self.outputs
            .push_back(ProtocolOutput::Event(MeshEvent::Broadcast {
                origin,
                incarnation,
                seq,
                payload: body,
            }));
    }

    /// A BROADCAST or MESH_REPAIR: accepted, relayed and delivered if new. An uncompressed
    /// BROADCAST is decoded in place from its frame: a duplicate, most receptions, takes no
    /// payload handle of its own.
    fn on_broadcast(&mut self, now: Instant, from: NodeId, frame: Frame) -> Result<(), PeerFault> {
        let code = frame.code();
        if code == Code::BROADCAST && !frame.flags().compressed() {
            let wire = frame.bytes().get(HEADER_BYTES..).unwrap_or_default();
            let b = Broadcast::decode(code, wire)?;
            match self.admit(now, from, &b)? {
                Admitted::No => {}
                Admitted::New => {
                    let (origin, incarnation, seq) = (b.origin, b.incarnation, b.seq);
                    let payload = frame.wire_payload();
                    let body = payload.slice_ref(b.payload);
                    self.relay_and_deliver(
                        now,
                        from,
                        Some(frame),
                        payload,
                        origin,
                        incarnation,
                        seq,
                        body,
                    );
                }
                Admitted::Queued => self.pending.push(Pending {
                    from,
                    code,
                    payload: frame.wire_payload(),
                    frame: Some(frame),
                }),
            }
            return Ok(());
        }
        let payload = frame.payload()?;
        let b = Broadcast::decode(code, &payload)?;
        match self.admit(now, from, &b)? {
            Admitted::No => return Ok(()),
            Admitted::New => {}
            Admitted::Queued => {
                let frame = (code == Code::BROADCAST).then_some(frame);
                self.pending.push(Pending {
                    from,
                    code,
                    frame,
                    payload: payload.clone(),
                });
                return Ok(());
            }
        }
        let (origin, incarnation, seq) = (b.origin, b.incarnation, b.seq);
        let body = payload.slice_ref(b.payload);
        let relayed = if code == Code::BROADCAST {
            Some(frame)
        } else {
            self.metrics.repairs_received += 1;
            None
        };
        self.relay_and_deliver(now, from, relayed, payload, origin, incarnation, seq, body);
        Ok(())
    }

    fn send(&mut self, to: NodeId, msg: &Message<'_>) {
        self.metrics.repair_messages += 1;
        self.outputs.push_back(ProtocolOutput::Send {
            to: Recipients::Peer(to),
            message: Outgoing::message(msg),
            class: Class::Control,
        });
    }

    /// Sends a digest of the repair window to `to`.
    fn send_digest(&mut self, to: NodeId) {
        let digest = self.store.digest();
        if !digest.entries.is_empty() {
            self.send(to, &Message::MeshDigest(digest));
        }
    }

    /// A peer's digest: ask for what we have not seen.
    fn on_digest(&mut self, from: NodeId, digest: &MeshDigest) {
        let me = (self.me, self.incarnation);
        let wants = store::wants(&self.seen, me, digest, self.wants_budget);
        if !wants.is_empty() {
            self.send(from, &Message::MeshWant(MeshWant { wants }));
        }
    }

    /// A peer asks for held broadcasts: each as MESH_REPAIR, relay class (a reply larger than
    /// the peer's queue allows is cut short; the next digest asks again for the rest).
    fn on_want(&mut self, from: NodeId, mut want: MeshWant) {
        want.wants.sort_unstable();
        let replies: Vec<Bytes> = self
            .store
            .wanted(&want.wants)
            .map(|h| h.payload.clone())
            .collect();
        for payload in replies {
            self.metrics.repair_messages += 1;
            self.outputs.push_back(ProtocolOutput::Send {
                to: Recipients::Peer(from),
                message: Outgoing::encoded(Code::MESH_REPAIR, payload),
                class: Class::Relay,
            });
        }
    }
}

impl Protocol for MeshProtocol {
    type Event = MeshEvent;
    type Command = MeshCommand;
    type Refusal = MeshRefusal;

    const FAMILY: Family = Family::Mesh;

    fn owns(code: Code) -> bool {
        code.family() == Some(Family::Mesh)
    }

    fn handle_link(&mut self, _now: Instant, _cx: &Context<'_>, notice: LinkNotice<'_>) {
        match notice {
            LinkNotice::Up { peer, .. } => self.send_digest(peer.node),
            LinkNotice::Down { node, .. } => self.rates.forget(node),
            LinkNotice::Room { .. } => {}
        }
    }

    fn handle_message(
        &mut self,
        now: Instant,
        _cx: &Context<'_>,
        from: &Peer,
        frame: Frame,
    ) -> Result<(), PeerFault> {
        match frame.code() {
            Code::BROADCAST | Code::MESH_REPAIR => self.on_broadcast(now, from.node, frame),
            code => {
                let payload = frame.payload()?;
                match Message::decode(code, &payload)? {
                    Message::MeshDigest(d) => self.on_digest(from.node, &d),
                    Message::MeshWant(w) => self.on_want(from.node, w),
                    _ => return Err(PeerFault::Unexpected("not a mesh message")),
                }
                Ok(())
            }
        }
    }

    fn handle_input_end(&mut self, now: Instant, _cx: &Context<'_>) -> Result<(), PeerFault> {
        self.judge_pending(now)
    }

    fn handle_command(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        command: MeshCommand,
    ) -> Result<(), MeshRefusal> {
        let MeshCommand::Broadcast { payload } = command;
        let max = self.broadcast_payload_max;
        if payload.len() > max {
            return Err(MeshRefusal::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        self.last_seq += 1;
        let (origin, incarnation, seq) = (self.me, self.incarnation, self.last_seq);
        let mut broadcast = Broadcast {
            origin,
            incarnation,
            seq,
            payload: &payload,
            proof: None,
        };
        if self.signatures {
            broadcast.proof = Some(self.proofs.sign(cx.identity(), &broadcast));
        }
        let encoded = Bytes::from(Message::Broadcast(broadcast).encode_payload());
        self.hold(now, origin, incarnation, seq, &encoded);
        self.metrics.broadcasts_originated += 1;
        self.outputs.push_back(ProtocolOutput::Send {
            to: Recipients::Links { except: None },
            message: Outgoing::encoded(Code::BROADCAST, encoded),
            class: Class::Control,
        });
        Ok(())
    }

    /// The repair timer: drop expired broadcasts, then send a digest to one random link.
    fn handle_timeout(&mut self, now: Instant, cx: &Context<'_>) {
        if !self.repair.fire(now) {
            return;
        }
        self.store.expire(now);
        self.metrics.repair_store_bytes = self.store.bytes() as u64;
        let count = cx.link_count();
        if self.store.is_empty() || count == 0 {
            return;
        }
        let pick = (self.rng.next_u64() % count as u64) as usize;
        if let Some(peer) = cx.links().nth(pick) {
            self.send_digest(peer.node);
        }
    }

    fn poll_output(&mut self) -> Option<ProtocolOutput<MeshEvent>> {
        self.outputs.pop_front()
    }

    fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.repair.deadline()
    }

    fn check_invariants(&self, config: &Config) -> Result<(), String> {
        let limits = &config.limits;
        if self.seen.len() > limits.seen_origins_max.max(1)
            || self.store.len() > limits.repair_store_max
            || self.store.bytes() > limits.repair_store_bytes_max
            || self.rates.len()
                > (limits.inbound_max + limits.outbound_max + limits.dedicated_conns_max).max(1)
        {
            return Err("a mesh table is over its bound".into());
        }
        if !self.pending.is_empty() {
            return Err("broadcasts left unjudged after their input".into());
        }
        Ok(())
    }
}
