//! Chord (Stoica et al. 2001, with Zave's 2017 corrections): a sans-IO sub-machine that keeps
//! a node's place on the 64-bit identifier ring and serves a replicated key-value store.
//!
//! It speaks to peers by [`ChordPeer`] (node id and address), never by connection: the owner
//! (the [`crate::Node`], or the simulator) carries [`ChordOutput::Send`] to the peer and feeds
//! what arrives to [`Chord::handle_message`]. Lookups are iterative: the origin asks each hop
//! itself, so every hop has its own timeout and a dead hop is routed around. SPEC.md §20.

mod ring;
mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_protocol::{
    key_position, ChordFetch, ChordFind, ChordFound, ChordHandover, ChordMessage, ChordPeer,
    ChordState, ChordStore, ChordStored, ChordValue, ChordValues, NodeId, StoreOp, CHORD_REPLICAS,
    MAX_CHORD_PEERS, MAX_HANDOVER_RECORDS,
};

pub use ring::{between, distance, finger_start, in_half_open};
use store::Store;

use crate::time::{Duration, Instant};

/// Ring fingers: one per bit of the identifier.
const FINGERS: usize = 64;

/// Candidates a CHORD_FOUND offers when it does not finish a lookup.
const NEXT_HOPS: usize = 4;

/// Chord's limits and timers. SPEC.md §20.5 lists them with these defaults.
#[derive(Debug, Clone)]
pub struct ChordConfig {
    /// Successors each node keeps (r).
    pub successor_list_len: usize,
    /// Mean period of stabilize (ask the successor for its predecessor and successor list,
    /// then notify it). Each period is drawn uniformly from half to one and a half of this.
    pub stabilize_interval: Duration,
    /// Mean period of fix-fingers (one finger lookup).
    pub fix_fingers_interval: Duration,
    /// Mean period of check-predecessor.
    pub check_predecessor_interval: Duration,
    /// A request unanswered this long is sent again, up to `rpc_sends_max` times in all;
    /// then its peer counts as failed.
    pub rpc_timeout: Duration,
    /// Sends of one request before its peer counts as failed (a lookup's CHORD_FIND is sent
    /// once: the lookup has other candidates).
    pub rpc_sends_max: u32,
    /// A put, get, delete or lookup not finished this long ends with an error event.
    pub op_timeout: Duration,
    /// Times one lookup may restart from the local table after running out of candidates.
    pub lookup_attempts_max: u32,
    /// Hops after which a lookup restarts (a routing loop while the ring heals).
    pub lookup_hops_max: u32,
    /// Records (key, position) a node holds.
    pub records_max: usize,
    /// Values one key may hold; a put beyond it drops the oldest.
    pub values_per_key_max: usize,
    /// Operations (put, get, delete, lookup) in progress at once.
    pub ops_max: usize,
    /// Peers remembered as failed, each for `failed_for`.
    pub failed_max: usize,
    /// How long a peer that failed to answer is left out of routing.
    pub failed_for: Duration,
}

impl Default for ChordConfig {
    fn default() -> Self {
        ChordConfig {
            successor_list_len: 8,
            stabilize_interval: Duration::from_millis(1000),
            fix_fingers_interval: Duration::from_millis(1000),
            check_predecessor_interval: Duration::from_millis(1000),
            rpc_timeout: Duration::from_millis(1000),
            rpc_sends_max: 2,
            op_timeout: Duration::from_secs(10),
            lookup_attempts_max: 3,
            lookup_hops_max: 64,
            records_max: 65_536,
            values_per_key_max: 16,
            ops_max: 1024,
            failed_max: 1024,
            failed_for: Duration::from_secs(30),
        }
    }
}

/// What Chord wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChordOutput {
    /// Carry `msg` to `to`.
    Send {
        /// The peer.
        to: ChordPeer,
        /// The message.
        msg: ChordMessage,
    },
    /// A finished put, get, delete or lookup.
    Event(ChordEvent),
}

/// The end of one application request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChordEvent {
    /// The application's request id.
    pub request: u64,
    /// What came of it.
    pub result: Result<ChordResult, ChordError>,
}

/// A successful request's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChordResult {
    /// The value was stored under this many of the key's 5 positions.
    Put {
        /// Replicas that acknowledged.
        replicas: u8,
    },
    /// The key's values (empty: none), union of every replica that answered.
    Get {
        /// Distinct values.
        values: Vec<Bytes>,
    },
    /// The values were removed under this many positions.
    Delete {
        /// Replicas that acknowledged.
        replicas: u8,
    },
    /// The node that owns a ring position, and how many nodes the lookup contacted.
    Lookup {
        /// The owner.
        owner: NodeId,
        /// Nodes sent CHORD_FIND (the paper's path length).
        hops: u32,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChordError {
    /// It did not finish within `op_timeout`, or no replica could be reached.
    #[error("chord request timed out")]
    Timeout,
    /// Too many requests are in progress.
    #[error("too many chord requests in progress")]
    Busy,
}

/// What the application asks of Chord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChordRequest {
    /// Add `value` to the key's set, for `lifetime_ms` (or until deleted).
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// How long it lives, in ms.
        lifetime_ms: Option<u64>,
    },
    /// Every value of the key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Remove one value (`Some`) or all of the key's values.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The value, or every value.
        value: Option<Vec<u8>>,
    },
    /// Which node owns a ring position.
    Lookup {
        /// The position.
        target: u64,
    },
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChordMetrics {
    /// Lookups finished (every purpose).
    pub lookups_done: u64,
    /// Lookups that gave up.
    pub lookups_failed: u64,
    /// Requests that got no answer in `rpc_timeout`.
    pub rpc_timeouts: u64,
    /// Values written back to a replica that missed them.
    pub read_repairs: u64,
    /// Records handed to another node.
    pub records_handed_over: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Stabilize = 0,
    FixFingers = 1,
    CheckPredecessor = 2,
}

const TIMERS: [Timer; 3] = [Timer::Stabilize, Timer::FixFingers, Timer::CheckPredecessor];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Rpc(u64),
    Op(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Lookup(u64),
    Stabilize,
    CheckPredecessor,
    Store { op: u64, slot: usize },
    Fetch { op: u64, slot: usize },
}

#[derive(Debug)]
struct Rpc {
    to: ChordPeer,
    purpose: Purpose,
    deadline: Instant,
    /// The request, kept to send again.
    msg: ChordMessage,
    /// Times it was sent.
    sends: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LookupFor {
    Join,
    /// This node's own successor as another member sees it (ring merging).
    Probe,
    Finger(usize),
    Op {
        op: u64,
        slot: usize,
    },
}

#[derive(Debug)]
struct Lookup {
    target: u64,
    purpose: LookupFor,
    hops: u32,
    /// Hops since the lookup last (re)started.
    attempt_hops: u32,
    attempts: u32,
    /// The node asked last; answers must come from it.
    asking: Option<NodeId>,
    candidates: Vec<ChordPeer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Pending {
        attempts: u32,
    },
    /// Answered by `owner`; `had_values` for a get.
    Done {
        owner: ChordPeer,
        had_values: bool,
    },
    Failed,
}

#[derive(Debug)]
struct Op {
    request: ChordRequest,
    app_request: u64,
    slots: Vec<Slot>,
    hops: u32,
    owner: Option<NodeId>,
    values: Vec<ChordValue>,
    deadline: Instant,
}

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
        match (timer, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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

    /// Joins the ring through `via`, any member: looks up the owner of `id + 1` there (not
    /// `id`: a ring that still knows this node would name the node itself).
    pub fn join(&mut self, now: Instant, via: ChordPeer) {
        self.start(now);
        if via.node == self.me.node {
            return;
        }
        self.joined = false;
        self.predecessor = None;
        self.join_via = Some(via.clone());
        self.start_join(now, via);
        self.pump(now);
    }

    /// Joins through `via` if this node is a ring of one, while still answering for the whole
    /// ring (two lone nodes joining through each other at once then form one ring). For a node
    /// that starts alone and meets members later (the [`crate::Node`] on a new mesh link).
    pub fn join_if_alone(&mut self, now: Instant, via: ChordPeer) {
        self.start(now);
        if self.successors[0].node == self.me.node
            && self.joined
            && !self.join_lookup
            && via.node != self.me.node
        {
            self.start_join(now, via);
        }
        self.pump(now);
    }

    /// Asks `via` (a member reached another way, e.g. a mesh peer) who follows this node, and
    /// adopts the answer if it is closer than the current successor. Two rings that formed
    /// apart (a partition, concurrent first joins) merge this way. A node alone uses it to
    /// join.
    pub fn probe_via(&mut self, now: Instant, via: ChordPeer) {
        self.start(now);
        if !self.joined || via.node == self.me.node {
            return;
        }
        let lid = self.new_request();
        self.lookups.insert(
            lid,
            Lookup {
                target: self.id.wrapping_add(1),
                purpose: LookupFor::Probe,
                hops: 0,
                attempt_hops: 0,
                attempts: self.config.lookup_attempts_max,
                asking: None,
                candidates: vec![via],
            },
        );
        self.lookup_step(now, lid);
        self.pump(now);
    }

    fn start_join(&mut self, now: Instant, via: ChordPeer) {
        self.join_lookup = true;
        let lookup = Lookup {
            target: self.id.wrapping_add(1),
            purpose: LookupFor::Join,
            hops: 0,
            attempt_hops: 0,
            attempts: 0,
            asking: None,
            candidates: vec![via],
        };
        let lid = self.new_request();
        self.lookups.insert(lid, lookup);
        self.lookup_step(now, lid);
    }

    /// Starts an application request; its end comes as [`ChordOutput::Event`].
    pub fn request(&mut self, now: Instant, app_request: u64, request: ChordRequest) {
        self.start(now);
        if self.ops.len() >= self.config.ops_max {
            self.outputs.push_back(ChordOutput::Event(ChordEvent {
                request: app_request,
                result: Err(ChordError::Busy),
            }));
            return;
        }
        let slots = match request {
            ChordRequest::Lookup { .. } => 1,
            _ => CHORD_REPLICAS,
        };
        let op_id = self.new_request();
        let deadline = now + self.config.op_timeout;
        self.ops.insert(
            op_id,
            Op {
                request,
                app_request,
                slots: vec![Slot::Pending { attempts: 0 }; slots],
                hops: 0,
                owner: None,
                values: Vec::new(),
                deadline,
            },
        );
        self.deadlines.insert((deadline, Deadline::Op(op_id)));
        for slot in 0..slots {
            self.start_slot(now, op_id, slot);
        }
        self.pump(now);
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

    // ----- plumbing -----------------------------------------------------------------------

    fn interval(&self, t: Timer) -> Duration {
        match t {
            Timer::Stabilize => self.config.stabilize_interval,
            Timer::FixFingers => self.config.fix_fingers_interval,
            Timer::CheckPredecessor => self.config.check_predecessor_interval,
        }
    }

    /// Uniform in [d/2, 3d/2).
    fn jitter(&mut self, d: Duration) -> Duration {
        let half = d.as_nanos() / 2;
        let spread = d.as_nanos().max(1);
        Duration(half + self.rng.next_u64() % spread)
    }

    fn new_request(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Messages this node sent itself, handled in order.
    fn pump(&mut self, now: Instant) {
        while let Some(msg) = self.loopback.pop_front() {
            let me = self.me.clone();
            self.on_message(now, &me, msg);
        }
    }

    fn send(&mut self, to: &ChordPeer, msg: ChordMessage) {
        if to.node == self.me.node {
            self.loopback.push_back(msg);
        } else {
            self.outputs.push_back(ChordOutput::Send {
                to: to.clone(),
                msg,
            });
        }
    }

    fn call(
        &mut self,
        now: Instant,
        to: &ChordPeer,
        purpose: Purpose,
        msg: impl FnOnce(u64) -> ChordMessage,
    ) {
        let request = self.new_request();
        let deadline = now + self.config.rpc_timeout;
        let msg = msg(request);
        self.rpcs.insert(
            request,
            Rpc {
                to: to.clone(),
                purpose,
                deadline,
                msg: msg.clone(),
                sends: 1,
            },
        );
        self.deadlines.insert((deadline, Deadline::Rpc(request)));
        self.send(to, msg);
    }

    /// The pending request `request` if `from` is the peer it went to.
    fn answered(&mut self, from: &ChordPeer, request: u64) -> Option<Purpose> {
        if self.rpcs.get(&request)?.to.node != from.node {
            return None;
        }
        let rpc = self.rpcs.remove(&request)?;
        self.deadlines
            .remove(&(rpc.deadline, Deadline::Rpc(request)));
        Some(rpc.purpose)
    }

    fn is_failed(&self, node: &NodeId) -> bool {
        self.failed.contains_key(node)
    }

    /// `peer` did not answer: route around it for a while. Only stabilize's own request
    /// removes a successor, and only check-predecessor's the predecessor (`drop_neighbour`):
    /// a lookup's timeout is weaker evidence than the ring's own probes.
    fn mark_failed(&mut self, now: Instant, peer: &NodeId, drop_neighbour: bool) {
        if *peer == self.me.node {
            return;
        }
        self.failed.retain(|_, until| *until > now);
        while self.failed.len() >= self.config.failed_max {
            self.failed.pop_first();
        }
        self.failed.insert(*peer, now + self.config.failed_for);
        for f in self.fingers.iter_mut() {
            if f.as_ref().is_some_and(|f| f.node == *peer) {
                *f = None;
            }
        }
        if !drop_neighbour {
            return;
        }
        if self.predecessor.as_ref().is_some_and(|p| p.node == *peer) {
            self.predecessor = None;
        }
        self.successors.retain(|s| s.node != *peer);
        if self.successors.is_empty() {
            // The nearest known node clockwise (unsuspected first): stabilize walks back from
            // it to the true successor. Never the predecessor side: that would close a
            // smaller ring.
            let fallback = self
                .fingers
                .iter()
                .flatten()
                .filter(|p| p.node != self.me.node)
                .min_by_key(|p| (self.is_failed(&p.node), distance(self.id, p.ring_id())))
                .cloned();
            self.successors = vec![fallback.unwrap_or_else(|| self.me.clone())];
        }
    }

    /// Up to `n` known peers in (me, target): fingers closest to `target` first (the paper's
    /// closest preceding finger), then the other successors and the predecessor as fallbacks;
    /// in each group peers suspected of failure come last.
    fn closest_preceding(&self, target: u64, n: usize) -> Vec<ChordPeer> {
        let mut fingers: Vec<&ChordPeer> = Vec::new();
        let mut others: Vec<&ChordPeer> = Vec::new();
        let usable = |p: &ChordPeer, seen: &[&ChordPeer], more: &[&ChordPeer]| {
            p.node != self.me.node
                && between(self.id, p.ring_id(), target)
                && !seen.iter().chain(more).any(|s| s.node == p.node)
        };
        for p in self.fingers.iter().flatten() {
            if usable(p, &fingers, &[]) {
                fingers.push(p);
            }
        }
        for p in self.successors.iter().chain(self.predecessor.iter()) {
            if usable(p, &fingers, &others) {
                others.push(p);
            }
        }
        // Suspected peers last: a lost message is no proof of death.
        let key = |p: &&ChordPeer| (self.is_failed(&p.node), distance(p.ring_id(), target));
        fingers.sort_by_key(key);
        others.sort_by_key(key);
        fingers.into_iter().chain(others).take(n).cloned().collect()
    }

    /// This node's answer to "who follows `target`": `Ok(successors)` when its successor owns
    /// it, else `Err(closer nodes)`.
    fn route(&self, target: u64) -> Result<Vec<ChordPeer>, Vec<ChordPeer>> {
        if !self.joined {
            // Not on the ring yet: it knows nothing worth routing by.
            return Err(Vec::new());
        }
        let succ = &self.successors[0];
        if in_half_open(self.id, target, succ.ring_id()) {
            return Ok(self.successors.clone());
        }
        let next = self.closest_preceding(target, NEXT_HOPS);
        if next.is_empty() {
            Ok(self.successors.clone())
        } else {
            Err(next)
        }
    }

    // ----- lookups ------------------------------------------------------------------------

    /// Asks the next candidate, restarting from the local table when there is none.
    fn lookup_step(&mut self, now: Instant, lid: u64) {
        let Some(l) = self.lookups.get_mut(&lid) else {
            return;
        };
        let failed = &self.failed;
        l.candidates.retain(|c| c.node != self.me.node);
        l.candidates.sort_by_key(|c| failed.contains_key(&c.node));
        if l.candidates.is_empty() || l.attempt_hops >= self.config.lookup_hops_max {
            if l.attempts >= self.config.lookup_attempts_max || l.purpose == LookupFor::Join {
                return self.lookup_failed(now, lid);
            }
            l.attempts += 1;
            l.attempt_hops = 0;
            let target = l.target;
            match self.route(target) {
                Ok(owners) => return self.lookup_done(now, lid, owners),
                Err(next) => {
                    if let Some(l) = self.lookups.get_mut(&lid) {
                        l.candidates = next;
                    }
                }
            }
        }
        let Some(l) = self.lookups.get_mut(&lid) else {
            return;
        };
        if l.candidates.is_empty() {
            // Restarted with nobody to ask (this node is between rings, joining again).
            return self.lookup_failed(now, lid);
        }
        let next = l.candidates.remove(0);
        l.hops += 1;
        l.attempt_hops += 1;
        l.asking = Some(next.node);
        let target = l.target;
        self.call(now, &next, Purpose::Lookup(lid), |request| {
            ChordMessage::Find(ChordFind { request, target })
        });
    }

    fn start_lookup(&mut self, now: Instant, target: u64, purpose: LookupFor) {
        let lid = self.new_request();
        let (candidates, owners) = match self.route(target) {
            Ok(owners) => (Vec::new(), Some(owners)),
            Err(next) => (next, None),
        };
        self.lookups.insert(
            lid,
            Lookup {
                target,
                purpose,
                hops: 0,
                attempt_hops: 0,
                attempts: 0,
                asking: None,
                candidates,
            },
        );
        match owners {
            Some(owners) => self.lookup_done(now, lid, owners),
            None => self.lookup_step(now, lid),
        }
    }

    fn on_found(&mut self, now: Instant, lid: u64, found: ChordFound) {
        let Some(l) = self.lookups.get_mut(&lid) else {
            return;
        };
        l.asking = None;
        // A finished answer names the owner even if this node suspects it (a lost message is
        // no proof of death): a dead owner shows when it is asked.
        if found.done && !found.peers.is_empty() {
            return self.lookup_done(now, lid, found.peers);
        }
        if !found.done {
            l.candidates = found.peers;
        }
        self.lookup_step(now, lid);
    }

    fn lookup_failed(&mut self, now: Instant, lid: u64) {
        let Some(l) = self.lookups.remove(&lid) else {
            return;
        };
        self.metrics.lookups_failed += 1;
        match l.purpose {
            // The next stabilize round tries again through the same member.
            LookupFor::Join => self.join_lookup = false,
            LookupFor::Probe => {}
            LookupFor::Finger(_) => self.finger_lookup = false,
            LookupFor::Op { op, slot } => self.slot_failed(now, op, slot),
        }
    }

    fn lookup_done(&mut self, now: Instant, lid: u64, owners: Vec<ChordPeer>) {
        let Some(l) = self.lookups.remove(&lid) else {
            return;
        };
        self.metrics.lookups_done += 1;
        match l.purpose {
            LookupFor::Probe => {
                // The owner of the position after ours, as another member sees it: tell it we
                // may be its predecessor (it takes us if we are closer, and pushes the news to
                // its old predecessor), and take it as successor if it is closer than ours.
                // Two rings that formed apart zip together this way.
                let o = owners[0].clone();
                if o.node != self.me.node {
                    self.send(&o, ChordMessage::Notify);
                }
                if o.node != self.me.node
                    && between(self.id, o.ring_id(), self.successors[0].ring_id())
                {
                    let mut list = owners;
                    list.extend(self.successors.iter().cloned());
                    self.successors = self.clean_successors(list);
                    self.stabilize(now);
                }
            }
            LookupFor::Join => {
                self.successors = self.clean_successors(owners);
                self.joined = true;
                self.join_lookup = false;
                self.stabilize(now);
            }
            LookupFor::Finger(i) => {
                self.finger_lookup = false;
                let owner = owners[0].clone();
                let oid = owner.ring_id();
                let mut j = i;
                while j < FINGERS && in_half_open(self.id, finger_start(self.id, j), oid) {
                    self.fingers[j] = Some(owner.clone());
                    j += 1;
                }
                if j == i {
                    // The answer is stale (the owner precedes the finger's start): keep the
                    // old finger and move on.
                    j += 1;
                }
                self.next_finger = j % FINGERS;
            }
            LookupFor::Op { op, slot } => self.slot_owner_found(now, op, slot, owners, l.hops),
        }
    }

    // ----- ring maintenance ---------------------------------------------------------------

    /// `[list]` without this node (and what follows it) and repeats, cut to r; `[me]` if
    /// nothing is left. Peers this node counts as failed stay: the list is fresh from the
    /// successor, and a peer wrongly suspected (a lost message) must come back.
    fn clean_successors(&self, list: Vec<ChordPeer>) -> Vec<ChordPeer> {
        let mut out: Vec<ChordPeer> = Vec::with_capacity(self.config.successor_list_len);
        for p in list {
            if p.node == self.me.node || out.len() == self.config.successor_list_len {
                break;
            }
            if !out.iter().any(|o| o.node == p.node) {
                out.push(p);
            }
        }
        if out.is_empty() {
            out.push(self.me.clone());
        }
        out
    }

    fn stabilize(&mut self, now: Instant) {
        if !self.joined {
            if let (false, Some(via)) = (self.join_lookup, self.join_via.clone()) {
                self.start_join(now, via);
            }
            return;
        }
        if self.rpcs.values().any(|r| r.purpose == Purpose::Stabilize) {
            return;
        }
        if self.successors[0].node == self.me.node && !self.join_lookup && !self.backup.is_empty() {
            // Every successor failed (or was suspected): join again through the peers the
            // list last held, one per period in turn, rather than stay a ring of one.
            self.backup.rotate_left(1);
            let via = self.backup[self.backup.len() - 1].clone();
            self.start_join(now, via);
            return;
        }
        let succ = self.successors[0].clone();
        self.call(now, &succ, Purpose::Stabilize, ChordMessage::GetState);
    }

    fn on_state(&mut self, now: Instant, from: &ChordPeer, state: ChordState) {
        if from.node != self.successors[0].node {
            return;
        }
        let mut list = Vec::with_capacity(state.successors.len() + 2);
        let mut adopted = false;
        if let Some(p) = state.predecessor {
            let succ_id = from.ring_id();
            let adopt = if from.node == self.me.node {
                p.node != self.me.node
            } else {
                between(self.id, p.ring_id(), succ_id)
            };
            // The successor heard from `p` lately, whatever this node suspects.
            if adopt {
                list.push(p);
                adopted = true;
            }
        }
        if from.node != self.me.node {
            list.push(from.clone());
        }
        list.extend(state.successors);
        self.successors = self.clean_successors(list);
        if self.successors[0].node != self.me.node {
            self.backup.clone_from(&self.successors);
        }
        let succ = self.successors[0].clone();
        self.send(&succ, ChordMessage::Notify);
        if adopted && succ.node != self.me.node {
            // A closer successor: ask it at once rather than a period later, so a successor
            // that is many nodes off walks back at the speed of round trips.
            self.stabilize(now);
        }
    }

    fn on_notify(&mut self, now: Instant, from: &ChordPeer) {
        if from.node == self.me.node {
            if self.predecessor.is_none() && self.successors[0].node == self.me.node {
                self.predecessor = Some(self.me.clone());
            }
            return;
        }
        let take = match &self.predecessor {
            None => true,
            Some(p) if p.node == self.me.node => true,
            Some(p) => between(p.ring_id(), from.ring_id(), self.id),
        };
        if !take {
            return;
        }
        let old = self.predecessor.replace(from.clone());
        if let Some(old) = old.filter(|o| o.node != self.me.node && !self.is_failed(&o.node)) {
            // Tell the old predecessor at once that a node joined between us (rectify).
            let state = ChordState {
                request: 0,
                predecessor: Some(from.clone()),
                successors: self.successors.clone(),
            };
            self.send(&old, ChordMessage::State(state));
        }
        if self.successors[0].node == self.me.node {
            self.successors = vec![from.clone()];
        }
        // Keys move to a new owner on join: whatever is not in (new predecessor, me] is its.
        let records = self.store.take_outside(now, from.ring_id(), self.id);
        self.hand_over(from, records);
    }

    fn hand_over(&mut self, to: &ChordPeer, records: Vec<weft_protocol::ChordRecord>) {
        self.metrics.records_handed_over += records.len() as u64;
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let chunk: Vec<_> = records.by_ref().take(MAX_HANDOVER_RECORDS).collect();
            self.send(to, ChordMessage::Handover(ChordHandover { records: chunk }));
        }
    }

    fn fix_fingers(&mut self, now: Instant) {
        if !self.joined || self.finger_lookup {
            return;
        }
        self.finger_lookup = true;
        let i = self.next_finger;
        self.start_lookup(now, finger_start(self.id, i), LookupFor::Finger(i));
    }

    fn check_predecessor(&mut self, now: Instant) {
        self.store.expire(now);
        self.failed.retain(|_, until| *until > now);
        let Some(p) = self.predecessor.clone() else {
            return;
        };
        if p.node == self.me.node
            || self
                .rpcs
                .values()
                .any(|r| r.purpose == Purpose::CheckPredecessor)
        {
            return;
        }
        self.call(now, &p, Purpose::CheckPredecessor, ChordMessage::GetState);
    }

    fn on_rpc_timeout(&mut self, now: Instant, request: u64) {
        let Some(rpc) = self.rpcs.get_mut(&request) else {
            return;
        };
        // A lookup hop has other candidates to try: it moves on after one send.
        let sends_max = match rpc.purpose {
            Purpose::Lookup(_) => 1,
            _ => self.config.rpc_sends_max,
        };
        if rpc.sends < sends_max {
            // A lost message is no failure: send the same request again.
            rpc.sends += 1;
            rpc.deadline = now + self.config.rpc_timeout;
            self.deadlines
                .insert((rpc.deadline, Deadline::Rpc(request)));
            let (to, msg) = (rpc.to.clone(), rpc.msg.clone());
            self.send(&to, msg);
            return;
        }
        let Some(rpc) = self.rpcs.remove(&request) else {
            return;
        };
        self.metrics.rpc_timeouts += 1;
        let neighbour = matches!(rpc.purpose, Purpose::Stabilize | Purpose::CheckPredecessor);
        self.mark_failed(now, &rpc.to.node, neighbour);
        match rpc.purpose {
            Purpose::Lookup(lid) => self.lookup_step(now, lid),
            Purpose::Stabilize => self.stabilize(now),
            Purpose::CheckPredecessor => {}
            Purpose::Store { op, slot } | Purpose::Fetch { op, slot } => {
                self.slot_failed(now, op, slot)
            }
        }
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
                peers.truncate(MAX_CHORD_PEERS);
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
                successors.truncate(MAX_CHORD_PEERS);
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

    // ----- application requests -----------------------------------------------------------

    fn op_key_position(op: &Op, slot: usize) -> u64 {
        match &op.request {
            ChordRequest::Put { key, .. }
            | ChordRequest::Get { key }
            | ChordRequest::Delete { key, .. } => key_position(key, slot as u8),
            ChordRequest::Lookup { target } => *target,
        }
    }

    fn start_slot(&mut self, now: Instant, op_id: u64, slot: usize) {
        let Some(op) = self.ops.get(&op_id) else {
            return;
        };
        let target = Self::op_key_position(op, slot);
        self.start_lookup(now, target, LookupFor::Op { op: op_id, slot });
    }

    fn slot_owner_found(
        &mut self,
        now: Instant,
        op_id: u64,
        slot: usize,
        owners: Vec<ChordPeer>,
        hops: u32,
    ) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let owner = owners[0].clone();
        let position = Self::op_key_position(op, slot);
        match &op.request {
            ChordRequest::Lookup { .. } => {
                op.hops = hops;
                op.owner = Some(owner.node);
                op.slots[slot] = Slot::Done {
                    owner,
                    had_values: false,
                };
                self.maybe_finish(op_id);
            }
            ChordRequest::Put {
                key,
                value,
                lifetime_ms,
            } => {
                let msg = ChordStore {
                    request: 0,
                    position,
                    key: key.clone(),
                    op: StoreOp::Put(ChordValue {
                        value: value.clone(),
                        lifetime_ms: *lifetime_ms,
                    }),
                };
                self.call(now, &owner, Purpose::Store { op: op_id, slot }, |request| {
                    ChordMessage::Store(ChordStore { request, ..msg })
                });
            }
            ChordRequest::Delete { key, value } => {
                let msg = ChordStore {
                    request: 0,
                    position,
                    key: key.clone(),
                    op: StoreOp::Delete(value.clone()),
                };
                self.call(now, &owner, Purpose::Store { op: op_id, slot }, |request| {
                    ChordMessage::Store(ChordStore { request, ..msg })
                });
            }
            ChordRequest::Get { key } => {
                let key = key.clone();
                self.call(now, &owner, Purpose::Fetch { op: op_id, slot }, |request| {
                    ChordMessage::Fetch(ChordFetch {
                        request,
                        position,
                        key,
                    })
                });
            }
        }
    }

    fn slot_done(&mut self, op_id: u64, slot: usize, owner: ChordPeer, values: Vec<ChordValue>) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let had_values = !values.is_empty();
        for v in values {
            match op.values.iter_mut().find(|h| h.value == v.value) {
                Some(h) => {
                    h.lifetime_ms = match (h.lifetime_ms, v.lifetime_ms) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    }
                }
                None => op.values.push(v),
            }
        }
        op.slots[slot] = Slot::Done { owner, had_values };
        self.maybe_finish(op_id);
    }

    /// A slot's owner failed or could not be found: look it up again while attempts remain.
    fn slot_failed(&mut self, now: Instant, op_id: u64, slot: usize) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let retry = match &mut op.slots[slot] {
            Slot::Pending { attempts } if *attempts < self.config.lookup_attempts_max => {
                *attempts += 1;
                true
            }
            _ => false,
        };
        if retry {
            self.start_slot(now, op_id, slot);
        } else {
            op.slots[slot] = Slot::Failed;
            self.maybe_finish(op_id);
        }
    }

    fn maybe_finish(&mut self, op_id: u64) {
        let all = self
            .ops
            .get(&op_id)
            .is_some_and(|op| op.slots.iter().all(|s| !matches!(s, Slot::Pending { .. })));
        if all {
            self.finish_op(op_id);
        }
    }

    /// Ends an operation with what it has (all slots settled, or its deadline passed).
    fn finish_op(&mut self, op_id: u64) {
        let Some(op) = self.ops.remove(&op_id) else {
            return;
        };
        self.deadlines.remove(&(op.deadline, Deadline::Op(op_id)));
        let done = op
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Done { .. }))
            .count() as u8;
        let result = if done == 0 {
            Err(ChordError::Timeout)
        } else {
            Ok(match &op.request {
                ChordRequest::Put { .. } => ChordResult::Put { replicas: done },
                ChordRequest::Delete { .. } => ChordResult::Delete { replicas: done },
                ChordRequest::Lookup { .. } => ChordResult::Lookup {
                    // A done lookup slot always set its owner.
                    owner: op.owner.unwrap_or(self.me.node),
                    hops: op.hops,
                },
                ChordRequest::Get { key } => {
                    self.read_repair(key, &op.slots, &op.values);
                    ChordResult::Get {
                        values: op
                            .values
                            .iter()
                            .map(|v| Bytes::from(v.value.clone()))
                            .collect(),
                    }
                }
            })
        };
        self.outputs.push_back(ChordOutput::Event(ChordEvent {
            request: op.app_request,
            result,
        }));
    }

    /// Writes the values a get found back to every replica that answered without them.
    fn read_repair(&mut self, key: &[u8], slots: &[Slot], values: &[ChordValue]) {
        if values.is_empty() {
            return;
        }
        for (slot, s) in slots.iter().enumerate() {
            let Slot::Done {
                owner,
                had_values: false,
            } = s
            else {
                continue;
            };
            for v in values {
                self.metrics.read_repairs += 1;
                // Unacknowledged: a lost write-back is repaired by the next get.
                let request = self.new_request();
                let msg = ChordStore {
                    request,
                    position: key_position(key, slot as u8),
                    key: key.to_vec(),
                    op: StoreOp::Put(v.clone()),
                };
                self.send(owner, ChordMessage::Store(msg));
            }
        }
    }
}
