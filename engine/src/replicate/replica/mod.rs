//! One node's copy of one folder: the replication sub-machine (SPEC.md §22).
//!
//! The index ([`super::index`]) holds a record per path. Remote records are compared by
//! version ([`remote`]): older or equal ones are ignored, newer ones adopted through an
//! [`Apply`] (storage steps, then the record installed and announced again: [`apply`]),
//! concurrent ones settled by the conflict rule ([`super::conflict`]). Local changes and
//! commands are in [`local`], a drop's gated copy in [`gated`], fetching and serving blocks
//! in [`fetch`], loading and persisting the state in [`persist`] (the blob in
//! [`super::state`]), what the folder reports of itself in [`inspect`]. This module holds
//! the state, the inputs from links, the timers and the output queue.

mod apply;
mod fetch;
mod gated;
mod inspect;
mod local;
mod persist;
#[cfg(test)]
pub(crate) use fetch::{BLOCK_WAITERS_MAX, FETCHING_FILES_MAX, SERVING_BYTES_PER_PEER_MAX};
mod remote;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use weft_protocol::{
    Code, FileEntry, FileKind, List, Message, NodeId, NotFound, ReplicaMessage, Version,
};

use super::index::Index;
use super::paths::IgnoreRules;
use super::plan::Apply;
use super::types::{
    Expect, Lane, LocalChange, Recipient, Record, ReplicaConfig, ReplicaEvent, ReplicaFault,
    ReplicaMetrics, ReplicaOutput, StorageRequest, StorageResult, TempId,
};
use crate::hasher::KeyedMap;
use crate::time::Instant;
use fetch::InFlight;

/// Remote records held back per busy path, at most (older ones are dropped first).
pub(super) const DEFERRED_PER_PATH_MAX: usize = 8;

/// Local changes held until the state is loaded, at most (the scanner reports again after
/// a `ScanDone` it never saw acknowledged; beyond this they are dropped).
pub(super) const EARLY_LOCAL_MAX: usize = 65_536;

/// How far a restored index's sequence numbers jump at a restart: more than a persist
/// window could ever hand out (2^32 changes), with room for 2^32 restarts.
pub(super) const SEQUENCE_RESTART_GAP: u64 = 1 << 32;

/// How far this node's own version counter jumps at a restart, past the highest persisted
/// or restored: changes announced before a crash but not persisted gave counters the
/// restored state does not know, and giving them again would make a new version look older
/// than (or equal to) one peers already hold.
pub(super) const COUNTER_RESTART_GAP: u64 = 1 << 32;

/// The highest counter of this node's own that a peer's record may carry, unless this node
/// has given a higher one itself (`counter_high`): no node's own history reaches it (2^30
/// restarts' jumps). A peer's record naming one above both (forged) is refused (`BadEntry`):
/// this node's next change of the path would have to go past it, and raising the counter
/// its changes take would push every later change of it, at any path, towards
/// [`COUNTER_VALUE_MAX`], past which its peers refuse them. A forger can push it to this
/// bound at most, 2^62 short of that.
pub(super) const COUNTER_HIGH_MAX: u64 = 1 << 62;

/// The highest counter, of any node, a peer's record may carry: one above it is refused
/// (`BadEntry`). A forged `u64::MAX` would otherwise leave this node no newer counter to
/// give the path: every later change of it would be equal to the forged version.
pub(super) const COUNTER_VALUE_MAX: u64 = 1 << 63;

/// `high` raised to a counter of this node's own in a record restored from the state, unless
/// the counter is past [`COUNTER_VALUE_MAX`] (a forged one taken before such records were
/// refused).
pub(super) fn raised_high(high: u64, counter: u64) -> u64 {
    if counter <= COUNTER_VALUE_MAX {
        high.max(counter)
    } else {
        high
    }
}

/// Blocks remembered as NOTFOUND at some peer, at most.
pub(super) const NOT_FOUND_MAX: usize = 65_536;

/// Longest backoff of a failed storage step, ms.
const BACKOFF_MAX_MS: u64 = 30_000;

/// What a storage request was for.
#[derive(Debug)]
pub(super) enum Purpose {
    Load,
    /// The persist numbered so.
    Persist(u64),
    /// The front step of the apply at this path.
    Step(String),
    /// A piece of block `block` of `temp` (`u32::MAX`: creating an empty temp).
    Write {
        temp: TempId,
        block: u32,
    },
    /// A local block, read from the file at `from`, copied into these temps' blocks.
    ReadLocal {
        hash: [u8; 32],
        len: u32,
        waiters: Vec<(TempId, u32)>,
        from: String,
    },
    /// A block asked for by `peer`, read from the last of the files `tried`.
    Serve {
        peer: NodeId,
        hash: [u8; 32],
        len: u32,
        tried: Vec<String>,
    },
    Discard,
}

/// What the folder knows of one peer.
#[derive(Debug, Default)]
pub(super) struct Peer {
    pub(super) linked: bool,
    /// Its index id as last seen, and the highest sequence seen under it.
    pub(super) index_id: u64,
    pub(super) seen: u64,
    /// It sent LIST: the last sequence sent to it.
    pub(super) cursor: Option<u64>,
    /// The owner holds its next index batches: one still waits to go out
    /// ([`Replica::hold_index`]).
    pub(super) index_held: bool,
    pub(super) bytes_in_flight: u64,
    pub(super) mismatches: u32,
    /// Blocks it was asked for that timed out (late pieces are ignored), at most
    /// [`fetch::EXPIRED_MAX`].
    pub(super) expired: VecDeque<[u8; 32]>,
    /// `ReadBlock` steps serving it, outstanding, and the bytes they read.
    pub(super) serving: usize,
    pub(super) serving_bytes: u64,
    /// When its link last came up (`Instant::ZERO` for a peer loaded from the state, never
    /// linked since): the peers linked longest ago go first past `peers_kept_max`.
    pub(super) last_linked: Instant,
}

/// A block as a request names it: its hash and the length asked.
pub(super) type SizedBlock = ([u8; 32], u32);

/// One node's copy of one folder. See the module documentation.
pub struct Replica {
    pub(super) config: ReplicaConfig,
    pub(super) rng: ChaCha8Rng,
    pub(super) me: u64,
    /// The highest counter of `me` in any record installed here: a change of any path takes
    /// one above it, so no counter of `me` is used twice at a path (a version of `me` that
    /// lost a conflict keeps its counter in its copy, not at the path).
    pub(super) counter_high: u64,
    /// The node's incarnation (0 if not told): a state found missing or unreadable starts
    /// its counters at `incarnation × COUNTER_RESTART_GAP`.
    incarnation: u64,
    pub(super) now: Instant,
    pub(super) ready: bool,
    pub(super) index_id: u64,
    pub(super) index: Index,
    pub(super) peers: BTreeMap<NodeId, Peer>,
    pub(super) applies: BTreeMap<String, Apply>,
    /// Paths held by an apply at another path -> that path.
    pub(super) locks: BTreeMap<String, String>,
    pub(super) temps: BTreeMap<TempId, String>,
    pub(super) next_temp: u64,
    pub(super) deferred: BTreeMap<String, Vec<(BTreeSet<NodeId>, Record)>>,
    pub(super) inflight: KeyedMap<[u8; 32], InFlight>,
    /// The deadline of every block in `inflight`, in order: one entry per request, added and
    /// removed with it, so the earliest is at hand without a walk over them all.
    pub(super) deadlines: BTreeSet<(Instant, [u8; 32])>,
    /// `(retry_at, path)` of every apply given a retry time, in order; an entry whose apply
    /// no longer has that time is stale, skipped and dropped when it comes due.
    pub(super) retries: BTreeSet<(Instant, String)>,
    /// Peers not to ask for a block (by hash and the length asked) until then (it failed
    /// them).
    pub(super) excluded: BTreeMap<SizedBlock, Vec<(NodeId, Instant)>>,
    /// What the host last reported at a path, where it differs from the path's record (the
    /// record took a peer's metadata for identical content, or the scanner reported a change
    /// of mtime alone): what a storage step at the path expects to find. Not persisted: after
    /// a restart the host reports again every path whose disk differs from its record (the
    /// weft drivers forget a cached entry unlike its record, the file's time included, and
    /// the scanner hashes it again).
    pub(super) disk: BTreeMap<String, Expect>,
    /// Paths where a read-only copy refused a local edit and holds other content than its
    /// version lists, until an apply replaces it or the edit is undone ([`Self::revert`]).
    /// Not persisted: the scanner reports every path again after a restart.
    refused: BTreeSet<String>,
    /// Peers that answered NOTFOUND for a block: not asked for it again until they announce
    /// a change (at most [`NOT_FOUND_MAX`] blocks; past it, forgotten and asked again).
    pub(super) not_found: BTreeMap<SizedBlock, BTreeSet<NodeId>>,
    /// The same by peer: what each answered NOTFOUND for (an announcement forgets a peer's
    /// without walking every block's set: an empty IHAVE walked up to `NOT_FOUND_MAX`).
    pub(super) not_found_by_peer: BTreeMap<NodeId, BTreeSet<SizedBlock>>,
    /// Blocks whose local copy did not read back (cleared when the index changes).
    pub(super) local_misses: BTreeSet<[u8; 32]>,
    pub(super) pending: BTreeMap<u64, Purpose>,
    pub(super) next_token: u64,
    /// Requests waiting for room under `requests_outstanding_max` (their tokens are in
    /// `pending`): bounded by the blocks in flight and the applies.
    pub(super) queued: VecDeque<(u64, StorageRequest)>,
    pub(super) out: VecDeque<ReplicaOutput>,
    pub(super) early_local: Vec<LocalChange>,
    pub(super) persist_at: Option<Instant>,
    pub(super) persist_dirty: bool,
    pub(super) persist_outstanding: bool,
    /// Persists asked for so far (the number of the last).
    pub(super) persists_asked: u64,
    /// An apply waits for a persist before its next step: one is asked for at once (not
    /// before [`Replica::write_ahead_at`]).
    pub(super) persist_wanted: bool,
    /// When the last persist was asked for, and its blob's length.
    pub(super) last_persist: Option<(Instant, usize)>,
    /// The node is shutting down: every change is persisted once its input is handled.
    pub(super) stopping: bool,
    /// A persist failed and nothing has changed since (during a shutdown: not retried).
    pub(super) persist_failed: bool,
    /// A persist since the state was loaded is done: the numbering it restored and jumped
    /// (or the index id it drew) survives a crash, so records may be announced.
    pub(super) durable: bool,
    pub(super) load_retry_at: Option<Instant>,
    /// The owners of stalled applies that gave way at this instant: each gives way at most
    /// once an instant, so draining the outputs ends even if the records it gave way to
    /// take its paths back (it may give way again at a later input).
    gave_way: (Instant, BTreeSet<String>),
    /// Something may have added a wanted block or a source: a full scheduling pass is due.
    pub(super) fetch_dirty: bool,
    /// Only room was freed since the last pass: the queued candidates are placed.
    pub(super) fetch_room: bool,
    pub(super) fetch_queue: fetch::FetchQueue,
    /// Files considered per linked source in a scheduling pass: [`fetch::FETCHING_FILES_MAX`]
    /// (tests lower it, so that their few files reach it).
    pub(super) fetching_files_max: usize,
    /// Every room event makes a full pass (the plain scheduler the queue is tested against).
    #[cfg(test)]
    pub(super) fetch_plain: bool,
    pub(super) fetch_wake: Option<Instant>,
    /// When the last full scheduling pass ran (the next may run `full_round_interval`
    /// after it).
    pub(super) last_full_round: Option<Instant>,
    /// A full pass waits for this time (set while one is due and held back).
    pub(super) full_round_at: Option<Instant>,
    pub(super) metrics: ReplicaMetrics,
    pub(super) ignore: IgnoreRules,
    /// Whether the host gave rules since the start (else `ignore` holds the persisted ones,
    /// once loaded).
    pub(super) ignore_given: bool,
}

impl core::fmt::Debug for Replica {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Replica")
            .field("folder", &self.config.folder)
            .field("ready", &self.ready)
            .field("index", &self.index)
            .field("applies", &self.applies.len())
            .finish()
    }
}

/// What a record says is at its path.
pub(super) fn expect_of(r: Option<&Record>) -> Expect {
    match r {
        Some(r) if !r.deleted => Expect::Present {
            kind: r.entry.kind,
            size: r.entry.size,
            mtime_ms: r.entry.mtime_ms,
            mode: r.entry.mode,
        },
        _ => Expect::Nothing,
    }
}

/// The deletion record of `path` (`kind`) made by `by` with `version`.
pub(super) fn tombstone(path: &str, kind: FileKind, by: u64, version: Version) -> Record {
    Record {
        entry: FileEntry {
            path: path.to_string(),
            kind,
            target: String::new(),
            mode: 0,
            size: 0,
            mtime_ms: 0,
            modified_by: by,
            version,
            sequence: 0,
            blocks: Vec::new(),
        },
        deleted: true,
    }
}

impl Replica {
    /// A folder that first loads its state ([`super::StorageRequest::LoadState`]); `seed`
    /// drives every choice it makes (its index id, tie-breaks among peers).
    pub fn new(config: ReplicaConfig, seed: [u8; 32]) -> Replica {
        let me = super::types::short_id(&config.me);
        let mut r = Replica {
            config,
            rng: ChaCha8Rng::from_seed(seed),
            me,
            counter_high: 0,
            incarnation: 0,
            now: Instant::ZERO,
            ready: false,
            index_id: 0,
            index: Index::new(crate::hasher::hash_key(&seed)),
            peers: BTreeMap::new(),
            applies: BTreeMap::new(),
            locks: BTreeMap::new(),
            temps: BTreeMap::new(),
            next_temp: 1,
            deferred: BTreeMap::new(),
            inflight: KeyedMap::with_hasher(crate::hasher::hash_key(&seed)),
            deadlines: BTreeSet::new(),
            retries: BTreeSet::new(),
            excluded: BTreeMap::new(),
            not_found: BTreeMap::new(),
            not_found_by_peer: BTreeMap::new(),
            disk: BTreeMap::new(),
            refused: BTreeSet::new(),
            local_misses: BTreeSet::new(),
            pending: BTreeMap::new(),
            next_token: 1,
            queued: VecDeque::new(),
            out: VecDeque::new(),
            early_local: Vec::new(),
            persist_at: None,
            persist_dirty: false,
            persist_outstanding: false,
            persists_asked: 0,
            persist_wanted: false,
            last_persist: None,
            stopping: false,
            persist_failed: false,
            durable: false,
            load_retry_at: None,
            gave_way: (Instant(0), BTreeSet::new()),
            fetch_dirty: false,
            fetch_room: false,
            fetch_queue: fetch::FetchQueue::default(),
            #[cfg(test)]
            fetch_plain: false,
            fetching_files_max: fetch::FETCHING_FILES_MAX,
            fetch_wake: None,
            last_full_round: None,
            full_round_at: None,
            metrics: ReplicaMetrics::default(),
            ignore: IgnoreRules::default(),
            ignore_given: false,
        };
        r.request(Purpose::Load, StorageRequest::LoadState);
        r
    }

    /// The node's incarnation, raised at every start: a state found missing (a store reset)
    /// or unreadable starts this node's counters past every counter its earlier runs can
    /// have given (each run's jump is `COUNTER_RESTART_GAP`), so a new change never looks
    /// older than one its peers hold.
    pub fn set_incarnation(&mut self, incarnation: u64) {
        self.incarnation = incarnation;
    }

    /// The configuration.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// Sets the `.weftignore` rules (the host reads the file): ignored paths are neither
    /// announced nor written from now on. If the old rules ignored anything, every peer's
    /// whole index is asked for again (now from the linked ones, at the next link from the
    /// others): a record dropped while its path was ignored may be taken now. The rules are
    /// kept with the folder's state, so the old rules are those in force before a restart
    /// until the host gives any.
    pub fn set_ignore_rules(&mut self, rules: IgnoreRules) {
        self.ignore_given = true;
        if rules == self.ignore {
            return;
        }
        let ignored_before = !self.ignore.is_empty();
        self.ignore = rules;
        // Kept with the state: rules that change while the node is down count as a change.
        self.mark_dirty();
        if !ignored_before {
            return;
        }
        for p in self.peers.values_mut() {
            p.seen = 0;
        }
        self.mark_dirty();
        if self.ready {
            for peer in self.linked_peers() {
                self.send_list(peer);
            }
        }
    }

    /// A link to `peer` (which holds this folder) is up: the folder asks for its index.
    pub fn handle_link_up(&mut self, now: Instant, peer: NodeId) {
        self.now = now;
        let p = self.peers.entry(peer).or_default();
        p.linked = true;
        p.last_linked = now;
        // The cursor is kept: `handle_link_down` cleared it, so it is from a LIST that came
        // on this link before it was reported (a folder told of its links once loaded).
        if self.ready {
            self.send_list(peer);
        }
        self.fetch_dirty = true;
    }

    /// The peers linked now, in order.
    fn linked_peers(&self) -> BTreeSet<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.linked)
            .map(|(id, _)| *id)
            .collect()
    }

    fn send_list(&mut self, peer: NodeId) {
        let (index_id, since) = self
            .peers
            .get(&peer)
            .map_or((0, 0), |p| (p.index_id, p.seen));
        let m = ReplicaMessage::List(List {
            folder: self.config.folder,
            index_id,
            since,
        });
        self.send(Recipient::Peer(peer), m, false);
    }

    /// The link to `peer` went away: what was asked of it is asked of others. What is kept of
    /// it is only what a later link needs (where its index was left, blocks still being read
    /// for it, its mismatches): a peer that leaves nothing of that is forgotten, so fresh ids
    /// linking and leaving do not grow the folder's state.
    pub fn handle_link_down(&mut self, now: Instant, peer: NodeId) {
        self.now = now;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.linked = false;
            p.cursor = None;
            p.index_held = false;
            // Late pieces cannot come over a new connection.
            p.expired.clear();
        }
        self.release_peer(peer);
        self.drop_queued_reads_for(peer);
        if self.peers.get(&peer).is_some_and(|p| {
            p.index_id == 0 && p.serving == 0 && p.bytes_in_flight == 0 && p.mismatches == 0
        }) {
            self.peers.remove(&peer);
        }
        self.forget_peers_past_the_cap();
    }

    /// Block reads serving `peer` that still wait in the queue (not handed to the host) are
    /// dropped: their blocks could not be sent (a peer that asked for 1024 blocks and left,
    /// again and again under fresh keys, had every one read for nothing).
    fn drop_queued_reads_for(&mut self, peer: NodeId) {
        let pending = &self.pending;
        let mut dropped = Vec::new();
        self.queued.retain(|(token, _)| {
            let serves =
                matches!(pending.get(token), Some(Purpose::Serve { peer: p, .. }) if *p == peer);
            if serves {
                dropped.push(*token);
            }
            !serves
        });
        for token in dropped {
            if let Some(Purpose::Serve { len, .. }) = self.pending.remove(&token) {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.serving = p.serving.saturating_sub(1);
                    p.serving_bytes = p.serving_bytes.saturating_sub(u64::from(len));
                }
            }
        }
    }

    /// Past `peers_kept_max`, the unlinked peers with nothing under way, linked longest ago
    /// (ties by id), are forgotten until the count is back under it.
    fn forget_peers_past_the_cap(&mut self) {
        let over = self.peers.len().saturating_sub(self.config.peers_kept_max);
        if over == 0 {
            return;
        }
        let mut idle: Vec<(Instant, NodeId)> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.linked && p.serving == 0 && p.bytes_in_flight == 0)
            .map(|(id, p)| (p.last_linked, *id))
            .collect();
        idle.sort_unstable();
        for (_, id) in idle.into_iter().take(over) {
            self.peers.remove(&id);
        }
        self.mark_dirty();
    }

    /// Whether the owner holds this folder's next index batches to `peer` (`held`: one sent
    /// as [`Lane::Index`] still waits to go out) or lets them go again. Cleared when the
    /// link goes down.
    pub fn hold_index(&mut self, peer: NodeId, held: bool) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.index_held = held && p.linked;
        }
    }

    /// `peer` has room for more bulk data.
    pub fn handle_room(&mut self, now: Instant, peer: NodeId) {
        self.now = now;
        let _ = peer;
        self.fetch_room = true;
    }

    /// A message about this folder from `from`. `payload` is the frame's payload `message`
    /// was decoded from (HEREIS data is sliced from it without a copy). An `Err` closes the
    /// peer's connection. A message about another folder is ignored, not a fault: the node
    /// adapter routes each message to its folder's replica, so one that arrives here anyway
    /// is a host's routing slip, not the peer's doing.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        message: ReplicaMessage<'_>,
        payload: &Bytes,
    ) -> Result<(), ReplicaFault> {
        self.now = now;
        if message.folder() != self.config.folder {
            return Ok(());
        }
        match message {
            ReplicaMessage::HereIs(m) => return self.on_here_is(from, m, payload),
            ReplicaMessage::IWant(m) => self.on_want(from, m.hashes),
            ReplicaMessage::NotFound(m) => self.on_not_found(from, &m.hashes),
            ReplicaMessage::IRefuse(m) => self.event(ReplicaEvent::RefusedByPeer {
                peer: from,
                path: m.path,
                reason: m.reason,
            }),
            // A LIST before the state is loaded is kept: the index id is not known yet, so
            // everything is sent once it is.
            ReplicaMessage::List(m) => {
                let since = if self.ready && m.index_id == self.index_id {
                    m.since
                } else {
                    0
                };
                self.peers.entry(from).or_default().cursor = Some(since);
            }
            // Records before the state is loaded are dropped: once loaded, the folder asks
            // every link for its index again (LIST).
            _ if !self.ready => {}
            ReplicaMessage::IHave(m) => {
                self.peer_changed(from);
                self.peer_index(from, m.index_id);
                for e in m.entries {
                    let seq = e.sequence;
                    self.on_remote(
                        from,
                        Record {
                            entry: e,
                            deleted: false,
                        },
                        None,
                    );
                    self.seen(from, seq);
                }
            }
            ReplicaMessage::IDeleted(m) => {
                self.peer_index(from, m.index_id);
                for d in m.entries {
                    let seq = d.sequence;
                    let mut t = tombstone(&d.path, d.kind, d.modified_by, d.version);
                    t.entry.sequence = seq;
                    self.on_remote(from, t, None);
                    self.seen(from, seq);
                }
            }
            ReplicaMessage::IMoved(m) => {
                self.peer_changed(from);
                self.peer_index(from, m.index_id);
                for mv in m.entries {
                    let seq = mv.to.sequence;
                    let to = Record {
                        entry: mv.to,
                        deleted: false,
                    };
                    self.on_remote(from, to, Some((mv.from, mv.from_version)));
                    self.seen(from, seq);
                }
            }
        }
        Ok(())
    }

    fn peer_index(&mut self, peer: NodeId, index_id: u64) {
        let p = self.peers.entry(peer).or_default();
        if p.index_id != index_id {
            p.index_id = index_id;
            p.seen = 0;
            self.mark_dirty();
        }
    }

    /// `peer` announced files: it may hold blocks it answered NOTFOUND for before.
    fn peer_changed(&mut self, peer: NodeId) {
        for block in self.not_found_by_peer.remove(&peer).unwrap_or_default() {
            if let Some(peers) = self.not_found.get_mut(&block) {
                peers.remove(&peer);
                if peers.is_empty() {
                    self.not_found.remove(&block);
                }
            }
        }
        self.fetch_dirty = true;
    }

    fn seen(&mut self, peer: NodeId, seq: u64) {
        let p = self.peers.entry(peer).or_default();
        if seq > p.seen {
            p.seen = seq;
            self.mark_dirty();
        }
    }

    /// The host finished the storage step sent with `token`.
    pub fn handle_completed(&mut self, now: Instant, token: u64, result: StorageResult) {
        self.now = now;
        let Some(purpose) = self.pending.remove(&token) else {
            return;
        };
        self.queued.retain(|(t, _)| *t != token);
        self.drain_queue();
        if let StorageResult::Failed(e) = &result {
            self.metrics.storage_failures += 1;
            let path = match &purpose {
                Purpose::Step(p) => Some(p.clone()),
                Purpose::Write { temp, .. } => self.temps.get(temp).cloned(),
                _ => None,
            };
            self.event(ReplicaEvent::StorageFailed {
                path,
                error: e.clone(),
            });
        }
        match purpose {
            Purpose::Load => self.on_loaded(result),
            Purpose::Persist(number) => {
                self.persist_outstanding = false;
                if result == StorageResult::Done {
                    self.durable = true;
                    self.on_persisted(number);
                } else {
                    self.persist_dirty = true;
                    // During a shutdown a failed persist is not tried again at once (a disk
                    // that fails every write would have the whole state encoded without
                    // end), only with the next change.
                    self.persist_failed = true;
                }
                if self.persist_dirty && self.persist_at.is_none() {
                    self.persist_at = Some(now + self.config.persist_delay);
                }
            }
            Purpose::Step(path) => self.on_step_done(&path, result),
            Purpose::Write { temp, block } => self.on_written(temp, block, result),
            Purpose::ReadLocal {
                hash, len, waiters, ..
            } => self.on_read_local(hash, len, waiters, result),
            Purpose::Serve {
                peer,
                hash,
                len,
                tried,
            } => self.on_served(peer, hash, len, tried, result),
            Purpose::Discard => {}
        }
    }

    /// Runs what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.load_retry_at.is_some_and(|t| t <= now) {
            self.load_retry_at = None;
            self.request(Purpose::Load, StorageRequest::LoadState);
        }
        if self.persist_at.is_some_and(|t| t <= now) && !self.persist_outstanding {
            self.persist_at = None;
            self.persist();
        }
        self.expire_requests();
        if self.full_round_at.is_some_and(|t| t <= now) {
            // The held-back full pass is due: the next drain makes it.
            self.full_round_at = None;
        }
        if self.fetch_wake.is_some_and(|t| t <= now) {
            self.fetch_wake = None;
            self.fetch_dirty = true;
        }
        // The applies whose retry time has come (every such apply has its entry), in path
        // order; an apply that keeps its time (it could not go on) keeps its entry.
        let mut due: Vec<(Instant, String)> = Vec::new();
        while let Some(first) = self.retries.first() {
            if first.0 > now {
                break;
            }
            let Some((t, p)) = self.retries.pop_first() else {
                break;
            };
            if self.applies.get(&p).and_then(|a| a.retry_at) == Some(t) {
                due.push((t, p));
            }
        }
        due.sort_by(|a, b| a.1.cmp(&b.1));
        for (_, p) in &due {
            self.advance(p);
        }
        for (t, p) in due {
            if self.applies.get(&p).and_then(|a| a.retry_at) == Some(t) {
                self.retries.insert((t, p));
            }
        }
    }

    /// The next thing to do, or `None`.
    pub fn poll_output(&mut self) -> Option<ReplicaOutput> {
        if self.out.is_empty() && self.ready {
            self.pump();
        }
        self.out.pop_front()
    }

    /// Announces and schedules fetches; during a shutdown, persists what changed.
    fn pump(&mut self) {
        if self.ready && !self.persist_outstanding {
            let stop_persist = self.stopping && self.persist_dirty && !self.persist_failed;
            let write_ahead = self.persist_wanted.then(|| self.write_ahead_at());
            if stop_persist || write_ahead.is_some_and(|at| at <= self.now) {
                self.persist_at = None;
                self.persist();
            } else if let Some(at) = write_ahead {
                self.persist_at = Some(self.persist_at.map_or(at, |t| t.min(at)));
            }
        }
        let room = core::mem::take(&mut self.fetch_room);
        if !self.deferred.is_empty() {
            self.give_way();
        }
        let due = self.full_round_due();
        // The plain scheduler makes a full pass where the queue is placed (it does not move
        // the time of the next full pass: that follows what asked for one).
        #[cfg(test)]
        let plain_round = room && due && self.fetch_plain;
        #[cfg(not(test))]
        let plain_round = false;
        if self.fetch_dirty && due {
            self.fetch_dirty = false;
            self.full_round_at = None;
            self.last_full_round = Some(self.now);
            self.metrics.full_rounds += 1;
            self.schedule();
        } else if plain_round {
            self.schedule();
        } else if room {
            self.place();
        }
        self.announce();
    }

    /// Whether a full scheduling pass may run now: always when none is asked for or none
    /// ran in the last `full_round_interval`. Otherwise it is held back until then, and
    /// `full_round_at` says when: a burst of index records or storage answers makes one
    /// pass, not one each, and meanwhile the queue is placed as room frees.
    fn full_round_due(&mut self) -> bool {
        let next = self
            .last_full_round
            .map(|t| t + self.config.full_round_interval)
            .filter(|at| *at > self.now);
        match next.filter(|_| self.fetch_dirty) {
            Some(at) => {
                self.full_round_at = Some(at);
                false
            }
            None => true,
        }
    }

    fn announce(&mut self) {
        if !self.durable {
            return;
        }
        let listeners: Vec<(NodeId, u64)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.linked && !p.index_held)
            .filter_map(|(id, p)| p.cursor.map(|c| (*id, c)))
            .collect();
        for (peer, mut cursor) in listeners {
            for _ in 0..ANNOUNCE_BATCHES_PER_PUMP {
                let Some((code, payload, last)) = super::announce::next_batch(
                    &self.index,
                    self.config.folder,
                    self.index_id,
                    cursor,
                ) else {
                    // Nothing after it: the peer has every record (the numbers above the
                    // last record, skipped at a restart, name none).
                    cursor = cursor.max(self.index.sequence());
                    break;
                };
                cursor = last;
                self.metrics.index_bytes_sent += payload.len() as u64;
                self.out.push_back(ReplicaOutput::Send {
                    to: Recipient::Peer(peer),
                    code,
                    payload: Bytes::from(payload),
                    lane: Lane::Index,
                });
            }
            if let Some(p) = self.peers.get_mut(&peer) {
                p.cursor = Some(cursor);
            }
        }
    }

    /// When it next wants `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self
            .retries
            .iter()
            .find(|(r, p)| self.applies.get(p).and_then(|a| a.retry_at) == Some(*r))
            .map(|(r, _)| *r);
        let deadline = self.deadlines.first().map(|(d, _)| *d);
        [self.own_deadline(), deadline, retry]
            .into_iter()
            .flatten()
            .min()
    }

    /// The earliest of the folder's own deadlines: persist, fetch wake, load retry, a
    /// held-back full round.
    fn own_deadline(&self) -> Option<Instant> {
        [
            self.persist_at,
            self.fetch_wake,
            self.load_retry_at,
            self.full_round_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// [`Self::poll_timeout`] by a walk over every block in flight and every apply (what
    /// `deadlines` and `retries` stand in for).
    #[cfg(test)]
    pub(super) fn poll_timeout_plain(&self) -> Option<Instant> {
        let requests = self.inflight.values().map(|f| f.deadline);
        let retries = self.applies.values().filter_map(|a| a.retry_at);
        self.own_deadline()
            .into_iter()
            .chain(requests)
            .chain(retries)
            .min()
    }

    /// Storage requests handed out and not answered.
    pub(super) fn outstanding(&self) -> usize {
        self.pending.len() - self.queued.len()
    }

    /// Asks the host for `request` (queued while `requests_outstanding_max` are out).
    pub(super) fn request(&mut self, purpose: Purpose, request: StorageRequest) {
        let token = self.next_token;
        self.next_token += 1;
        self.pending.insert(token, purpose);
        if self.outstanding() - 1 < self.config.requests_outstanding_max && self.queued.is_empty() {
            self.out
                .push_back(ReplicaOutput::Request { token, request });
        } else {
            self.queued.push_back((token, request));
        }
    }

    fn drain_queue(&mut self) {
        while self.outstanding() < self.config.requests_outstanding_max {
            let Some((token, request)) = self.queued.pop_front() else {
                break;
            };
            self.out
                .push_back(ReplicaOutput::Request { token, request });
        }
    }

    /// Sends `m` (counted by kind).
    pub(super) fn send(&mut self, to: Recipient, m: ReplicaMessage<'_>, bulk: bool) {
        let code = m.code();
        let payload = Message::Replica(m).encode_payload();
        let n = payload.len() as u64;
        match code {
            Code::LIST | Code::IHAVE | Code::IMOVED | Code::IDELETED => {
                self.metrics.index_bytes_sent += n
            }
            Code::HEREIS => {}
            _ => self.metrics.other_bytes_sent += n,
        }
        self.out.push_back(ReplicaOutput::Send {
            to,
            code,
            payload: Bytes::from(payload),
            lane: if bulk { Lane::Bulk } else { Lane::Control },
        });
    }

    /// Tells the application.
    pub(super) fn event(&mut self, e: ReplicaEvent) {
        self.out.push_back(ReplicaOutput::Event(e));
    }

    /// Answers `hashes` with NOTFOUND.
    pub(super) fn not_found(&mut self, peer: NodeId, hashes: Vec<[u8; 32]>) {
        for chunk in hashes.chunks(weft_protocol::WANT_HASHES_MAX) {
            let m = ReplicaMessage::NotFound(NotFound {
                folder: self.config.folder,
                hashes: chunk.to_vec(),
            });
            self.send(Recipient::Peer(peer), m, false);
        }
    }
}

/// Index batches sent to one peer per `poll_output` round, at most (the rest follow on the
/// next rounds), so the output queue stays bounded.
pub(super) const ANNOUNCE_BATCHES_PER_PUMP: usize = 8;
