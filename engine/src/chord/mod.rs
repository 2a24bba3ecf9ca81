//! Chord (Stoica et al. 2001, with Zave's 2017 corrections): a sans-IO sub-machine that keeps
//! a node's place on the 64-bit identifier ring and serves a replicated key-value store.
//!
//! It speaks to peers by [`ChordPeer`] (node id and address), never by connection: the owner
//! (the [`crate::Node`], or the simulator) carries [`ChordOutput::Send`] to the peer and feeds
//! what arrives to [`Chord::handle_message`]. Lookups are iterative: the origin asks each hop
//! itself, so every hop has its own timeout and a dead hop is routed around. SPEC.md §20.

mod lookup;
mod maintenance;
mod ops;
mod protocol;
mod ring;
mod rpc;
mod store;
#[cfg(test)]
mod tests;
mod timer;
mod types;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use weft_protocol::{
    ChordFound, ChordMessage, ChordPeer, ChordState, ChordStored, ChordValues, NodeId,
    CHORD_PEERS_MAX,
};

use lookup::Lookup;
use ops::Op;
pub(crate) use protocol::ChordProtocol;
pub use protocol::{ChordCommand, ChordRefusal};
pub use ring::{between, distance, finger_start, in_half_open};
use rpc::{Purpose, Rpc};
use store::Store;
use timer::{Deadline, Timer, TIMERS};
pub use types::{
    ChordConfig, ChordError, ChordEvent, ChordMetrics, ChordOutput, ChordRequest, ChordResult,
};

use crate::time::Instant;

/// Ring fingers: one per bit of the identifier.
const FINGERS: usize = 64;

/// Candidates a CHORD_FOUND offers when it does not finish a lookup.
const NEXT_HOPS: usize = 4;

/// One node's Chord state. See the module documentation.
#[derive(Debug)]
pub struct Chord {
    me: ChordPeer,
    id: u64,
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
}

impl Chord {
    /// A node alone on its own ring (it is its own successor) until [`Chord::join`].
    pub fn new(me: ChordPeer, config: ChordConfig, seed: u64) -> Chord {
        let id = me.ring_id();
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        s[8..16].copy_from_slice(&id.to_le_bytes());
        let store = Store::new(config.records_max, config.values_per_key_max);
        Chord {
            successors: vec![me.clone()],
            me,
            id,
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

    /// Replaces the configuration; timers pick up new periods when they next fire.
    pub fn set_config(&mut self, config: ChordConfig) {
        self.config = config;
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
            let records = self.store.take_all(now);
            self.hand_over(&succ, records);
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
                if let Some(Purpose::Lookup(lid)) = self.answered(from, f.request) {
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
            ChordMessage::State(s) => match self.answered(from, s.request) {
                Some(Purpose::Stabilize) => self.on_state(now, from, s),
                // Pushed unasked by our successor when its predecessor changed.
                None if s.request == 0 => self.on_state(now, from, s),
                Some(_) | None => {}
            },
            ChordMessage::Notify => self.on_notify(now, from),
            ChordMessage::Store(s) => {
                let stored = self.store.apply(now, s.position, &s.key, &s.op);
                let reply = ChordStored {
                    request: s.request,
                    stored,
                };
                self.send(from, ChordMessage::Stored(reply));
            }
            ChordMessage::Stored(s) => {
                if let Some(Purpose::Store { op, slot }) = self.answered(from, s.request) {
                    if s.stored {
                        self.slot_done(op, slot, from.clone(), Vec::new());
                    } else {
                        self.slot_failed(now, op, slot);
                    }
                }
            }
            ChordMessage::Fetch(f) => {
                let values = self.store.get(now, f.position, &f.key);
                let reply = ChordValues {
                    request: f.request,
                    values,
                };
                self.send(from, ChordMessage::Values(reply));
            }
            ChordMessage::Values(v) => {
                if let Some(Purpose::Fetch { op, slot }) = self.answered(from, v.request) {
                    self.slot_done(op, slot, from.clone(), v.values);
                }
            }
            ChordMessage::Handover(h) => {
                self.store.merge(now, &h.records);
            }
        }
    }
}
