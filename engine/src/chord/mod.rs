//! Chord (Stoica et al. 2001, with Zave's 2017 corrections): a sans-IO sub-machine that keeps
//! a node's place on the 64-bit identifier ring and serves a replicated key-value store.
//!
//! It speaks to peers by [`ChordPeer`] (node id and address), never by connection: the owner
//! (the [`crate::Node`], or the simulator) carries [`ChordOutput::Send`] to the peer and feeds
//! what arrives to [`Chord::handle_message`]. Lookups are iterative: the origin asks each hop
//! itself, so every hop has its own timeout and a dead hop is routed around. SPEC.md §20.

mod durable;
mod lookup;
mod maintenance;
mod ops;
mod persist;
mod protocol;
mod ring;
mod rpc;
mod store;
#[cfg(test)]
mod tests;
mod timer;
mod tracker;
mod types;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use weft_protocol::{
    key_position, ChordFound, ChordMessage, ChordPeer, ChordState, ChordStored, ChordValue,
    ChordValues, NodeId, StoreOutcome, CHORD_PEERS_MAX, CHORD_REPLICAS, CHORD_VALUES_MAX,
};

pub use durable::{Commit, HELD_ANSWERS_MAX};
use lookup::Lookup;
use ops::Op;
pub(crate) use protocol::ChordProtocol;
pub use protocol::{ChordCommand, ChordRefusal};
pub use ring::{between, distance, finger_start, in_half_open};
use rpc::{Answer, Purpose, Rpc};
use store::{Store, StoreLimits};
use timer::{Deadline, Timer, TIMERS};
pub use types::{
    ChordConfig, ChordError, ChordEvent, ChordItem, ChordMetrics, ChordOutput, ChordRequest,
    ChordResult, CHORD_PERIOD_MIN,
};

use crate::identity::{verify_signature, Identity};
use crate::time::{Duration, Instant};

/// Ring fingers: one per bit of the identifier.
const FINGERS: usize = 64;

/// Candidates a CHORD_FOUND offers when it does not finish a lookup.
const NEXT_HOPS: usize = 4;

/// One node's Chord state. See the module documentation.
#[derive(Debug)]
pub struct Chord {
    me: ChordPeer,
    id: u64,
    /// Signs this node's puts and deletes.
    identity: Identity,
    /// The sequence number of this node's last signed entry.
    last_seq: u64,
    /// Calendar time (Unix ms) at an instant, from the owner's last report of it.
    wall_clock: Option<(u64, Instant)>,
    /// Records handed over and not yet confirmed, by the handover's request number.
    handovers: BTreeMap<u64, Vec<(u64, Vec<u8>)>>,
    /// A message of the handover round in flight was refused or went unanswered: the next
    /// round waits for the next check, not the round's last confirmation.
    handover_refused: bool,
    /// After a round refused or unanswered: no round to that predecessor before this time,
    /// and the wait it was given (it doubles).
    handover_wait: Option<(Instant, Duration, NodeId)>,
    /// The node the handover round in flight went to, and whether any of its messages was
    /// confirmed.
    handover_to: Option<NodeId>,
    handover_confirmed: bool,
    config: ChordConfig,
    rng: ChaCha8Rng,
    /// Nearest first; `[me]` when alone. Never empty: every assignment goes through
    /// `clean_successors` or puts one peer in, and `mark_failed` refills it; so indexing
    /// `successors[0]` cannot fail.
    successors: Vec<ChordPeer>,
    predecessor: Option<ChordPeer>,
    fingers: Vec<Option<ChordPeer>>,
    next_finger: usize,
    finger_lookup: bool,
    joined: bool,
    /// The member a join goes through, retried every stabilize period until it succeeds.
    join_via: Option<ChordPeer>,
    join_lookup: bool,
    /// The last successor list that named another node: where to join again if every
    /// successor fails.
    backup: Vec<ChordPeer>,
    failed: BTreeMap<NodeId, Instant>,
    store: Store,
    next_request: u64,
    rpcs: BTreeMap<u64, Rpc>,
    lookups: BTreeMap<u64, Lookup>,
    ops: BTreeMap<u64, Op>,
    deadlines: BTreeSet<(Instant, Deadline)>,
    timers: [Option<Instant>; 3],
    outputs: VecDeque<ChordOutput>,
    loopback: VecDeque<ChordMessage>,
    metrics: ChordMetrics,
    /// Whether an accepted store is answered only once committed ([`Chord::set_durable`]).
    durable: bool,
    /// CHORD_STORED answers waiting for the next snapshot.
    held_answers: Vec<(ChordPeer, ChordMessage)>,
    /// Snapshots taken and not yet committed (their records may not be in the host's store).
    snapshots_in_flight: usize,
}

impl Chord {
    /// A node alone on its own ring (it is its own successor) until [`Chord::join`]; it
    /// signs its puts and deletes with `identity`.
    pub fn new(me: ChordPeer, identity: Identity, config: ChordConfig, seed: u64) -> Chord {
        let config = config.within_bounds();
        let id = me.ring_id();
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8..16].copy_from_slice(&id.to_le_bytes());
        let store = Store::new(store_limits(&config));
        Chord {
            successors: vec![me.clone()],
            me,
            id,
            identity,
            last_seq: 0,
            wall_clock: None,
            handovers: BTreeMap::new(),
            handover_refused: false,
            handover_wait: None,
            handover_to: None,
            handover_confirmed: false,
            rng: ChaCha8Rng::from_seed(s),
            config,
            predecessor: None,
            fingers: vec![None; FINGERS],
            next_finger: 0,
            finger_lookup: false,
            joined: true,
            join_via: None,
            join_lookup: false,
            backup: Vec::new(),
            failed: BTreeMap::new(),
            store,
            next_request: 0,
            rpcs: BTreeMap::new(),
            lookups: BTreeMap::new(),
            ops: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            timers: [None; 3],
            outputs: VecDeque::new(),
            loopback: VecDeque::new(),
            metrics: ChordMetrics::default(),
            durable: false,
            held_answers: Vec::new(),
            snapshots_in_flight: 0,
        }
    }

    // ----- inspection ---------------------------------------------------------------------

    /// This node as a peer.
    pub fn me(&self) -> &ChordPeer {
        &self.me
    }

    /// The successor list, nearest first.
    pub fn successors(&self) -> &[ChordPeer] {
        &self.successors
    }

    /// The predecessor, if known.
    pub fn predecessor(&self) -> Option<&ChordPeer> {
        self.predecessor.as_ref()
    }

    /// Finger `i` (the first node at or after `id + 2^i`), if known.
    pub fn finger(&self, i: usize) -> Option<&ChordPeer> {
        self.fingers.get(i).and_then(|f| f.as_ref())
    }

    /// Whether a join lookup has finished (or none was needed).
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// Records held.
    pub fn records_len(&self) -> usize {
        self.store.len()
    }

    /// Whether `key` is held under `position`.
    pub fn holds(&self, position: u64, key: &[u8]) -> bool {
        self.store.holds(position, key)
    }

    /// Bytes the held entries are counted for (bounded by `stored_bytes_max`).
    pub fn stored_bytes(&self) -> usize {
        self.store.bytes()
    }

    /// The live entries (tombstones included) held for `key` under `position`.
    pub fn entries(&self, now: Instant, position: u64, key: &[u8]) -> Vec<ChordValue> {
        self.store.get(now, position, key)
    }

    /// The key this node signs with.
    pub fn writer(&self) -> weft_protocol::PublicKey {
        self.identity.public_key()
    }

    /// Counters.
    pub fn metrics(&self) -> &ChordMetrics {
        &self.metrics
    }

    // ----- the contract -------------------------------------------------------------------

    /// The next output.
    pub fn poll_output(&mut self) -> Option<ChordOutput> {
        self.outputs.pop_front()
    }

    /// When Chord next wants [`Chord::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.iter().flatten().min().copied();
        let deadline = self.deadlines.first().map(|(at, _)| *at);
        crate::time::earliest(timer, deadline)
    }

    /// Replaces the configuration; timers pick up new periods when they next fire. The store's
    /// bounds are fixed at [`Chord::new`].
    pub fn set_config(&mut self, config: ChordConfig) {
        self.config = config;
    }

    /// Calendar time (Unix ms) at `now`, when the owner knows it (`None` keeps what it said
    /// last): a signed entry's sequence number is at least the calendar time, so a writer that
    /// restarted with its memory lost still writes newer entries than before; and the drops
    /// tracker's holder records are checked against it (SPEC.md §20.9).
    pub fn observe_wall_clock(&mut self, now: Instant, wall_clock_ms: Option<u64>) {
        if let Some(ms) = wall_clock_ms {
            self.wall_clock = Some((ms, now));
        }
    }

    /// Calendar time (Unix ms) at `now`, if the owner ever said it.
    pub(super) fn wall_clock_ms(&self, now: Instant) -> Option<u64> {
        self.wall_clock
            .map(|(ms, at)| ms.saturating_add(now.saturating_since(at).as_millis()))
    }

    /// Whether `entry` is signed by its writer for `key` and `position` is one of the key's.
    pub(super) fn entry_valid(position: u64, key: &[u8], entry: &ChordValue) -> bool {
        (0..CHORD_REPLICAS as u8).any(|r| key_position(key, r) == position)
            && verify_signature(
                &entry.writer,
                &ChordValue::signed_bytes(key, &entry.writer, entry.seq, &entry.op),
                &entry.signature,
            )
    }

    /// Verifies and stores one entry, counting a refusal: its signature and position, then
    /// the drops tracker's rules for its key (SPEC.md §20.9).
    fn store_entry(
        &mut self,
        now: Instant,
        position: u64,
        key: &[u8],
        e: &ChordValue,
    ) -> StoreOutcome {
        if !Self::entry_valid(position, key, e) {
            self.metrics.count(StoreOutcome::Invalid);
            return StoreOutcome::Invalid;
        }
        self.store_verified(now, position, key, e)
    }

    /// [`Chord::store_entry`] of an entry whose signature and position are verified.
    fn store_verified(
        &mut self,
        now: Instant,
        position: u64,
        key: &[u8],
        e: &ChordValue,
    ) -> StoreOutcome {
        let outcome = if let Some(rule) = tracker::admit(key, e, self.wall_clock_ms(now)) {
            self.store.apply(now, position, key, rule, e)
        } else {
            self.metrics.entries_tracker_invalid += 1;
            StoreOutcome::Invalid
        };
        self.metrics.count(outcome);
        outcome
    }

    /// Starts the periodic timers (idempotent).
    pub fn start(&mut self, now: Instant) {
        for t in TIMERS {
            if self.timers[t as usize].is_none() {
                let at = now + self.jitter(self.interval(t));
                self.timers[t as usize] = Some(at);
            }
        }
    }

    /// Leaves gracefully: hands every record to the successor. The owner then drops this
    /// machine (or keeps it alone on its own ring).
    pub fn leave(&mut self, now: Instant) {
        let succ = self.successors[0].clone();
        if succ.node != self.me.node {
            self.hand_over_all(now, &succ);
        }
    }

    /// A message from `from`.
    pub fn handle_message(&mut self, now: Instant, from: &ChordPeer, msg: ChordMessage) {
        self.start(now);
        self.on_message(now, from, msg);
        self.pump(now);
    }

    /// Runs what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, d)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            match d {
                Deadline::Rpc(r) => self.on_rpc_timeout(now, r),
                Deadline::Op(o) => self.finish_op(o),
            }
        }
        for t in TIMERS {
            if self.timers[t as usize].is_some_and(|at| at <= now) {
                self.timers[t as usize] = Some(now + self.jitter(self.interval(t)));
                match t {
                    Timer::Stabilize => self.stabilize(now),
                    Timer::FixFingers => self.fix_fingers(now),
                    Timer::CheckPredecessor => self.check_predecessor(now),
                }
            }
        }
        self.pump(now);
    }

    // ----- messages -----------------------------------------------------------------------

    fn on_message(&mut self, now: Instant, from: &ChordPeer, msg: ChordMessage) {
        if from.node != self.me.node {
            self.failed.remove(&from.node);
        }
        match msg {
            ChordMessage::Find(f) => {
                let (done, mut peers) = match self.route(f.target) {
                    Ok(p) => (true, p),
                    Err(p) => (false, p),
                };
                peers.truncate(CHORD_PEERS_MAX);
                let found = ChordFound {
                    request: f.request,
                    done,
                    peers,
                };
                self.send(from, ChordMessage::Found(found));
            }
            ChordMessage::Found(f) => {
                if let Some(Purpose::Lookup(lid)) = self.answered(from, f.request, Answer::Found) {
                    self.on_found(now, lid, f);
                }
            }
            ChordMessage::GetState(request) => {
                let mut successors = self.successors.clone();
                successors.truncate(CHORD_PEERS_MAX);
                let state = ChordState {
                    request,
                    predecessor: self.predecessor.clone(),
                    successors,
                };
                self.send(from, ChordMessage::State(state));
            }
            ChordMessage::State(s) => match self.answered(from, s.request, Answer::State) {
                Some(Purpose::Stabilize) => self.on_state(now, from, s),
                // Pushed unasked by our successor when its predecessor changed.
                None if s.request == 0 => self.on_state(now, from, s),
                Some(_) | None => {}
            },
            ChordMessage::Notify => self.on_notify(now, from),
            ChordMessage::Store(s) => {
                let outcome = self.store_entry(now, s.position, &s.key, &s.value);
                let reply = ChordStored {
                    request: s.request,
                    outcome,
                };
                self.answer_stored(from, reply);
            }
            ChordMessage::Stored(s) => match self.answered(from, s.request, Answer::Stored) {
                Some(Purpose::Store { op, slot }) => {
                    if s.outcome == StoreOutcome::Stored {
                        self.slot_done(op, slot, from.clone(), Vec::new());
                    } else {
                        self.slot_refused(op, slot);
                    }
                }
                Some(Purpose::Handover) => self.handover_answered(now, s.request, s.outcome),
                _ => {}
            },
            ChordMessage::Fetch(f) => {
                let values = self.store.get(now, f.position, &f.key);
                let reply = ChordValues {
                    request: f.request,
                    values,
                };
                self.send(from, ChordMessage::Values(reply));
            }
            ChordMessage::Values(v) => {
                if let Some(Purpose::Fetch { op, slot }) =
                    self.answered(from, v.request, Answer::Values)
                {
                    let values = self.verified_values(now, op, slot, v.values);
                    self.slot_values(now, op, slot, from.clone(), values);
                }
            }
            ChordMessage::Handover(h) => {
                // Every entry is judged alone; the answer says whether any was refused for
                // space (then the sender keeps its copies).
                // Each signature is verified once a message (a copy of an entry is passed
                // over), and none after the first that fails (an honest holder hands over
                // only entries it verified): a message of 16,384 entries cost as many
                // ed25519 verifications, some 0.8 s, however it was made.
                let mut outcome = StoreOutcome::Stored;
                let mut seen = std::collections::BTreeSet::new();
                let mut forged = false;
                for r in &h.records {
                    for e in &r.values {
                        if !seen.insert((r.position, e.signature.0)) {
                            continue;
                        }
                        if !forged {
                            self.metrics.handover_signatures_verified += 1;
                            forged = !Self::entry_valid(r.position, &r.key, e);
                        }
                        if forged {
                            self.metrics.count(StoreOutcome::Invalid);
                            continue;
                        }
                        let o = self.store_verified(now, r.position, &r.key, e);
                        if matches!(
                            o,
                            StoreOutcome::KeyFull
                                | StoreOutcome::WriterFull
                                | StoreOutcome::StoreFull
                        ) {
                            outcome = o;
                        }
                    }
                }
                let reply = ChordStored {
                    request: h.request,
                    outcome,
                };
                self.answer_stored(from, reply);
            }
        }
    }
}

/// The store's bounds from the configuration.
fn store_limits(config: &ChordConfig) -> StoreLimits {
    StoreLimits {
        records_max: config.records_max,
        // No CHORD_VALUES or handed-over record carries more (SPEC.md §20.2).
        values_per_key_max: config.values_per_key_max.min(CHORD_VALUES_MAX),
        tracker_holders_max: config.tracker_holders_max.min(CHORD_VALUES_MAX),
        writer_values_max: config.writer_values_max,
        writer_bytes_max: config.writer_bytes_max,
        bytes_max: config.stored_bytes_max,
        tombstone_lifetime: config.tombstone_lifetime,
    }
}
