//! One node's copy of one folder: the replication sub-machine (SPEC.md §22).
//!
//! The index ([`super::index`]) holds a record per path. Remote records are compared by
//! version: older or equal ones are ignored, newer ones adopted through an [`Apply`] (storage
//! steps, then the record installed and announced again), concurrent ones settled by the
//! conflict rule ([`super::conflict`]). Fetching is in [`super::fetch`], announcing in
//! [`super::announce`], the persisted blob in [`super::state`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_protocol::{
    Code, FileEntry, FileKind, IRefuse, List, Message, NodeId, NotFound, PathRefusal,
    ReplicaMessage, Version, VersionOrder,
};

use super::conflict;
use super::fetch::InFlight;
use super::index::Index;
use super::paths::{self, IgnoreRules};
use super::plan::{Apply, BlockSlot, BlockState, Fetch, Install, Step};
use super::state::{PersistedState, STATE_FORMAT};
use super::types::{
    Expect, LocalChange, Recipient, Record, ReplicaCommand, ReplicaConfig, ReplicaEvent,
    ReplicaFault, ReplicaMetrics, ReplicaOutput, ReplicaRefusal, StorageRequest, StorageResult,
    TempId, Transfer,
};
use crate::hasher::FixedMap;
use crate::time::{Duration, Instant};

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

/// Blocks remembered as NOTFOUND at some peer, at most.
pub(super) const NOT_FOUND_MAX: usize = 65_536;

/// Longest backoff of a failed storage step, ms.
const BACKOFF_MAX_MS: u64 = 30_000;

/// What a storage request was for.
#[derive(Debug)]
pub(super) enum Purpose {
    Load,
    Persist,
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
    pub(super) bytes_in_flight: u64,
    pub(super) mismatches: u32,
    /// Blocks it was asked for that timed out (late pieces are ignored), at most
    /// [`super::fetch::EXPIRED_MAX`].
    pub(super) expired: VecDeque<[u8; 32]>,
    /// `ReadBlock` steps serving it, outstanding.
    pub(super) serving: usize,
}

/// One node's copy of one folder. See the module documentation.
pub struct Replica {
    pub(super) config: ReplicaConfig,
    pub(super) rng: ChaCha8Rng,
    pub(super) me: u64,
    /// The highest counter of `me` in any record installed here: a change of any path takes
    /// one above it, so no counter of `me` is used twice at a path (a version of `me` that
    /// lost a conflict keeps its counter in its copy, not at the path).
    pub(super) counter_high: u64,
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
    pub(super) inflight: FixedMap<[u8; 32], InFlight>,
    /// The deadline of every block in `inflight`, in order: one entry per request, added and
    /// removed with it, so the earliest is at hand without a walk over them all.
    pub(super) deadlines: BTreeSet<(Instant, [u8; 32])>,
    /// `(retry_at, path)` of every apply given a retry time, in order; an entry whose apply
    /// no longer has that time is stale, skipped and dropped when it comes due.
    pub(super) retries: BTreeSet<(Instant, String)>,
    /// Peers not to ask for a block until then (it failed them).
    pub(super) excluded: BTreeMap<[u8; 32], Vec<(NodeId, Instant)>>,
    /// What the host last reported at a path, where it differs from the path's record (the
    /// record took a peer's metadata for identical content, or the scanner reported a change
    /// of mtime alone): what a storage step at the path expects to find. Not persisted: the
    /// scanner reports every path again after a restart.
    pub(super) disk: BTreeMap<String, Expect>,
    /// Paths where a read-only copy refused a local edit and holds other content than its
    /// version lists, until an apply replaces it or the edit is undone ([`Self::revert`]).
    /// Not persisted: the scanner reports every path again after a restart.
    refused: BTreeSet<String>,
    /// Peers that answered NOTFOUND for a block: not asked for it again until they announce
    /// a change (at most [`NOT_FOUND_MAX`] blocks; past it, forgotten and asked again).
    pub(super) not_found: BTreeMap<[u8; 32], BTreeSet<NodeId>>,
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
    pub(super) fetch_queue: super::fetch::FetchQueue,
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

/// Why an entry from a peer is refused, if it is.
fn entry_refusal(e: &FileEntry, deleted: bool) -> Option<PathRefusal> {
    if let Err(r) = paths::check_path(&e.path) {
        return Some(r);
    }
    // A deletion record of a symlink carries no target.
    if e.kind == FileKind::Symlink && !deleted {
        if let Err(r) = paths::check_symlink_target(&e.path, &e.target) {
            return Some(r);
        }
    }
    let mut at = 0u64;
    let tiles = e.blocks.iter().all(|b| {
        let ok = b.offset == at && b.len > 0 && b.len <= weft_protocol::BLOCK_BYTES_MAX;
        at = at.saturating_add(u64::from(b.len));
        ok
    }) && at == e.size;
    let fits = match e.kind {
        FileKind::File => tiles,
        FileKind::Directory | FileKind::Symlink => e.blocks.is_empty(),
    };
    (!fits || e.mode > 7 || e.version.counters.is_empty() || !e.version.is_well_formed())
        .then_some(PathRefusal::BadEntry)
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
            now: Instant::ZERO,
            ready: false,
            index_id: 0,
            index: Index::default(),
            peers: BTreeMap::new(),
            applies: BTreeMap::new(),
            locks: BTreeMap::new(),
            temps: BTreeMap::new(),
            next_temp: 1,
            deferred: BTreeMap::new(),
            inflight: FixedMap::default(),
            deadlines: BTreeSet::new(),
            retries: BTreeSet::new(),
            excluded: BTreeMap::new(),
            not_found: BTreeMap::new(),
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
            durable: false,
            load_retry_at: None,
            gave_way: (Instant(0), BTreeSet::new()),
            fetch_dirty: false,
            fetch_room: false,
            fetch_queue: super::fetch::FetchQueue::default(),
            #[cfg(test)]
            fetch_plain: false,
            fetch_wake: None,
            last_full_round: None,
            full_round_at: None,
            metrics: ReplicaMetrics::default(),
            ignore: IgnoreRules::default(),
        };
        r.request(Purpose::Load, StorageRequest::LoadState);
        r
    }

    /// The configuration.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// Sets the `.weftignore` rules (the host reads the file): ignored paths are neither
    /// announced nor written from now on.
    pub fn set_ignore_rules(&mut self, rules: IgnoreRules) {
        self.ignore = rules;
    }

    /// Replaces the folder's gate (a drop accepted a new version, SPEC.md §24): every linked
    /// peer is asked for its whole index again, since records the old gate left out may pass
    /// now.
    pub fn set_gate(&mut self, now: Instant, gate: super::Gate) {
        self.now = now;
        self.config.gate = Some(gate);
        // Records deferred under the old gate are judged again when they come again (every
        // index is asked for whole below), not applied as they are.
        self.deferred.clear();
        let linked: Vec<NodeId> = self
            .peers
            .iter_mut()
            .filter(|(_, p)| p.linked)
            .map(|(id, p)| {
                p.seen = 0;
                *id
            })
            .collect();
        self.mark_dirty();
        if self.ready {
            for peer in linked {
                self.send_list(peer);
            }
            // Deepest first, so a directory's contents go before it.
            let mut present: Vec<String> = self
                .index
                .since(0)
                .filter(|(r, _)| !r.deleted)
                .map(|(r, _)| r.entry.path.clone())
                .collect();
            present.sort_unstable();
            for path in present.iter().rev() {
                self.remove_unlisted(path);
            }
        }
    }

    /// Whether a read-only gate refuses the local change at `path` to `record` (`None`: a
    /// removal): the change is reported, and what is on disk is what later steps expect
    /// (those already planned included).
    fn refuse_local_edit(&mut self, path: &str, record: Option<&Record>) -> bool {
        let Some(gate) = self.config.gate.as_ref().filter(|g| g.read_only) else {
            return false;
        };
        let holds = match record {
            Some(r) => gate.holds(r),
            None => !gate.lists(path),
        };
        // What the index already holds is no edit (a rescan of a copy whose gate moved on
        // before its fetches landed): only the metadata a version does not cover changed.
        let unchanged = match (record, self.index.get(path)) {
            (Some(r), Some(l)) => !l.deleted && conflict::same_content(l, r),
            (None, l) => l.is_none_or(|l| l.deleted),
            (Some(_), None) => false,
        };
        if holds || unchanged {
            self.refused.remove(path);
            return false;
        }
        self.refused.insert(path.to_string());
        // Steps planned at the path (a fetch of the listed content, say) expect what is
        // there now, else their storage checks would fail forever.
        let was = self.expect_for(self.index.get(path));
        let now = expect_of(record);
        self.disk.insert(path.to_string(), now);
        self.re_expect(path, was, now);
        self.metrics.local_edits_refused += 1;
        self.event(ReplicaEvent::LocalEditRefused {
            path: path.to_string(),
        });
        true
    }

    /// A link to `peer` (which holds this folder) is up: the folder asks for its index.
    pub fn handle_link_up(&mut self, now: Instant, peer: NodeId) {
        self.now = now;
        let p = self.peers.entry(peer).or_default();
        p.linked = true;
        // The cursor is kept: `handle_link_down` cleared it, so it is from a LIST that came
        // on this link before it was reported (a folder told of its links once loaded).
        if self.ready {
            self.send_list(peer);
        }
        self.fetch_dirty = true;
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

    /// The link to `peer` went away: what was asked of it is asked of others.
    pub fn handle_link_down(&mut self, now: Instant, peer: NodeId) {
        self.now = now;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.linked = false;
            p.cursor = None;
        }
        self.release_peer(peer);
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

    /// What a storage step at `r`'s path expects to find there: [`Self::expect_at`] its path.
    pub(super) fn expect_for(&self, r: Option<&Record>) -> Expect {
        match r {
            Some(r) => self.expect_at(&r.entry.path, Some(r)),
            None => expect_of(None),
        }
    }

    /// What a storage step at `path` expects to find there: what the host last reported,
    /// else what `r` (its record, if any) says. The report counts whatever the record: a
    /// read-only copy's refused edit stays on disk where its record says nothing is (or where
    /// it has none), and a fetch of the listed content that expected nothing there would fail
    /// at every retry.
    fn expect_at(&self, path: &str, r: Option<&Record>) -> Expect {
        self.disk.get(path).copied().unwrap_or_else(|| expect_of(r))
    }

    /// The host reported `now` at `path` where the steps planned for it expect `was` (only
    /// the mtime changed, the content did not): the steps expect what is there now, else
    /// their storage checks would fail forever.
    fn re_expect(&mut self, path: &str, was: Expect, now: Expect) {
        if was == now {
            return;
        }
        for (at, a) in self.applies.iter_mut() {
            for step in a.steps.iter_mut() {
                let expect = match step {
                    Step::Rename { from, expect, .. } if from == path => expect,
                    Step::Remove { expect }
                    | Step::SetMode { expect, .. }
                    | Step::Fetch { expect }
                        if at == path =>
                    {
                        expect
                    }
                    _ => continue,
                };
                if *expect == was {
                    *expect = now;
                }
            }
        }
    }

    /// Whether a rename step left nothing at `path` while its record says otherwise (the
    /// apply that renamed was overtaken before installing its records).
    fn emptied(&self, path: &str) -> bool {
        self.disk.get(path) == Some(&Expect::Nothing)
            && self.index.get(path).is_some_and(|r| !r.deleted)
    }

    /// Installs `record` for content already at its path, remembering what is on disk there
    /// if the record says otherwise.
    fn install_in_place(&mut self, install: Install) {
        let path = install.entry.path.clone();
        let on_disk = self.expect_at(&path, self.index.get(&path));
        self.install(install);
        let record = expect_of(self.index.get(&path));
        if on_disk != record && on_disk != Expect::Nothing {
            self.disk.insert(path, on_disk);
        } else {
            self.disk.remove(&path);
        }
    }

    /// `peer` announced files: it may hold blocks it answered NOTFOUND for before.
    fn peer_changed(&mut self, peer: NodeId) {
        self.not_found.retain(|_, peers| {
            peers.remove(&peer);
            !peers.is_empty()
        });
        self.fetch_dirty = true;
    }

    /// Whether the apply at `path` can do nothing until a peer announces something: it
    /// fetches, and no block it lacks has a linked source that did not answer NOTFOUND
    /// (nor served corrupt blocks enough to be disconnected).
    fn is_stalled(&self, a: &Apply) -> bool {
        let Some(f) = a.fetch.as_ref() else {
            return false;
        };
        if !a.is_fetching() || a.outstanding || a.retry_at.is_some() || !f.created {
            return false;
        }
        // Every block verified: it waits for its writes, then commits.
        if f.blocks
            .iter()
            .all(|slot| slot.state == BlockState::Verified)
        {
            return false;
        }
        f.entry
            .blocks
            .iter()
            .zip(&f.blocks)
            .all(|(b, slot)| match slot.state {
                BlockState::Verified => true,
                BlockState::Busy => false,
                BlockState::Missing => {
                    // A source that was disconnected for serving corrupt blocks counts as
                    // none: it is still asked, but nothing is expected of it.
                    (self.index.locate(&b.hash).is_none() || self.local_misses.contains(&b.hash))
                        && a.sources.iter().all(|s| {
                            !self.peers.get(s).is_some_and(|p| {
                                p.linked && p.mismatches < self.config.mismatches_before_disconnect
                            }) || self.not_found.get(&b.hash).is_some_and(|n| n.contains(s))
                        })
                }
            })
    }

    /// Whether `path` is held (as its path or a lock) by a stalled apply: records deferred
    /// for it wait for a source to come back, like the apply.
    fn held_by_stalled(&self, path: &str) -> bool {
        let owner = self.locks.get(path).map_or(path, String::as_str);
        self.applies.get(owner).is_some_and(|a| self.is_stalled(a))
    }

    fn seen(&mut self, peer: NodeId, seq: u64) {
        let p = self.peers.entry(peer).or_default();
        if seq > p.seen {
            p.seen = seq;
            self.mark_dirty();
        }
    }

    /// A record from `peer`: checked, then applied.
    fn on_remote(
        &mut self,
        peer: NodeId,
        mut r: Record,
        mut moved_from: Option<(String, Version)>,
    ) {
        if let Some(gate) = &self.config.gate {
            if !gate.admits(&peer, &r) {
                self.metrics.records_gated += 1;
                return;
            }
            // At a read-only copy, the version the gate lists wins over a local record it
            // does not list, whatever the version vectors say (two owners' concurrent edits,
            // settled by the one who published): its version takes in the local one's, so it
            // is newer here, or equal and preferred (`Replica::gate_prefers`), never a
            // conflict. An owner's copy settles it as a conflict: its own unpublished edit is
            // never overwritten.
            let local = self.index.get(&r.entry.path);
            if gate.read_only
                && !gate.trusted.contains(&peer)
                && local.is_some_and(|l| {
                    !gate.holds(l)
                        && r.entry.version.compare(&l.entry.version) != VersionOrder::Newer
                })
            {
                if let Some(l) = local {
                    r.entry.version = r.entry.version.merged(&l.entry.version);
                }
            }
            // A move away from a path the version still lists is the new record alone.
            if !gate.trusted.contains(&peer)
                && moved_from
                    .as_ref()
                    .is_some_and(|(from, _)| gate.lists(from))
            {
                moved_from = None;
            }
        }
        let refusal = entry_refusal(&r.entry, r.deleted)
            .or_else(|| self.through_symlink(&r.entry.path))
            .or_else(|| {
                moved_from.as_ref().and_then(|(from, v)| {
                    paths::check_path(from)
                        .err()
                        .or((v.counters.is_empty() || !v.is_well_formed())
                            .then_some(PathRefusal::BadEntry))
                })
            });
        let clash = match refusal {
            None => self.index.case_clash(&r.entry.path).map(str::to_string),
            Some(_) => None,
        };
        let refusal = refusal.or_else(|| {
            clash.map(|held| {
                self.event(ReplicaEvent::CaseClash {
                    held,
                    incoming: r.entry.path.clone(),
                });
                PathRefusal::CaseClash
            })
        });
        if let Some(reason) = refusal {
            self.metrics.paths_refused += 1;
            let mut path = r.entry.path.clone();
            let mut cut = path.len().min(weft_protocol::PATH_BYTES_MAX);
            while !path.is_char_boundary(cut) {
                cut -= 1;
            }
            path.truncate(cut);
            let m = ReplicaMessage::IRefuse(IRefuse {
                folder: self.config.folder,
                path: path.clone(),
                reason,
            });
            self.send(Recipient::Peer(peer), m, false);
            self.event(ReplicaEvent::Refused { peer, path, reason });
            return;
        }
        let is_dir = r.entry.kind == FileKind::Directory;
        if self.ignore.is_ignored(&r.entry.path, is_dir) {
            return;
        }
        let sources = BTreeSet::from([peer]);
        self.apply_record(sources, r, moved_from, true);
    }

    /// `ThroughSymlink` if a directory on `path`'s way is a symlink here: nothing is ever
    /// written through one.
    fn through_symlink(&self, path: &str) -> Option<PathRefusal> {
        path.match_indices('/').find_map(|(i, _)| {
            self.index
                .get(&path[..i])
                .filter(|r| !r.deleted && r.entry.kind == FileKind::Symlink)
                .map(|_| PathRefusal::ThroughSymlink)
        })
    }

    /// Whether an apply holds `path`.
    pub(super) fn is_busy(&self, path: &str) -> bool {
        self.applies.contains_key(path) || self.locks.contains_key(path)
    }

    fn defer(&mut self, sources: BTreeSet<NodeId>, r: Record) {
        let list = self.deferred.entry(r.entry.path.clone()).or_default();
        for (s, held) in list.iter_mut() {
            match r.entry.version.compare(&held.entry.version) {
                VersionOrder::Equal if conflict::same_content(&r, held) => {
                    s.extend(sources);
                    return;
                }
                VersionOrder::Older => return,
                _ => {}
            }
        }
        list.retain(|(_, held)| {
            held.entry.version.compare(&r.entry.version) != VersionOrder::Older
        });
        if list.len() >= DEFERRED_PER_PATH_MAX {
            list.remove(0);
        }
        list.push((sources, r));
        // Kept across a restart: the peer's sequence for it counts as seen.
        self.mark_dirty();
    }

    /// Applies a remote record (from `sources`) held here: deferred, or the origin of an
    /// apply dropped. Its sources announced it earlier and may have moved on since.
    pub(super) fn apply_remote(
        &mut self,
        sources: BTreeSet<NodeId>,
        r: Record,
        moved_from: Option<(String, Version)>,
    ) {
        self.apply_record(sources, r, moved_from, false);
    }

    /// Applies a remote record from `sources`; `announced`: they announce it now (only then
    /// does it say what they hold, for a source that moved on).
    fn apply_record(
        &mut self,
        sources: BTreeSet<NodeId>,
        r: Record,
        moved_from: Option<(String, Version)>,
        announced: bool,
    ) {
        // A read-only copy takes only what its version holds, also when a record comes
        // again (deferred, or an overtaken apply's origin) after the gate moved on.
        if self
            .config
            .gate
            .as_ref()
            .is_some_and(|g| g.read_only && !g.holds(&r))
        {
            self.metrics.records_gated += 1;
            return;
        }
        let path = r.entry.path.clone();
        if self.is_busy(&path) {
            // Who can serve `r`'s content: its sources, and those of a fetch of the same
            // content here, which its record carries when deferred.
            let mut holders = sources.clone();
            if let Some(a) = self.applies.get_mut(&path) {
                // The same version of the same content (an equal version of other content is
                // another record: it is settled once the apply is done).
                let same = |o: &Record| {
                    o.entry.path == path
                        && o.entry.version == r.entry.version
                        && conflict::same_content(o, &r)
                };
                let known =
                    a.installs.iter().any(|i| same(&i.record())) || a.origin.iter().any(same);
                if known {
                    a.sources.extend(sources);
                    self.fetch_dirty = true;
                    return;
                }
                // A peer announcing the very content being fetched holds its blocks, whatever
                // the version (a conflict copy made from a merged record and from its loser,
                // say): it is a source too, and its record is deferred like any other.
                let same_content = !r.deleted
                    && r.entry.kind == FileKind::File
                    && a.fetch.as_ref().is_some_and(|f| {
                        f.entry.size == r.entry.size && f.entry.blocks == r.entry.blocks
                    });
                if same_content {
                    a.sources.extend(sources.iter().copied());
                    // The fetch's sources hold `r`'s blocks too: if `r` supersedes the fetch
                    // (a newer version of the same content: a conflict copy made here from a
                    // merged record only the corrupt peer served, over the copy's record
                    // being fetched from honest peers, seed 87414), it must not lose them.
                    holders.extend(a.sources.iter().copied());
                    self.fetch_dirty = true;
                }
                // A source that now announces another version of the path, neither the one
                // fetched nor a newer one (it lost that version in a crash, say), no longer
                // serves it. A fetch left with no source is dropped, its version with it.
                let fetched = a.target_version(&path).cloned();
                let moved_on = announced
                    && !same_content
                    && a.is_fetching()
                    && fetched.as_ref().is_some_and(|t| {
                        *t != r.entry.version && r.entry.version.compare(t) != VersionOrder::Newer
                    });
                if moved_on && sources.iter().any(|s| a.sources.remove(s)) && a.sources.is_empty() {
                    self.defer(sources, r);
                    self.abandon(&path);
                    return;
                }
            }
            // A fetch still gathering blocks is overtaken by a newer version: its source
            // may have moved on and no longer serve the blocks it wants.
            let overtaken = self.applies.get(&path).is_some_and(|a| {
                let newer = |v: &Version| r.entry.version.compare(v) == VersionOrder::Newer;
                // Newer than what it installs, or than every peer record it carries out at
                // the path (a merged target keeps the local loser's counters, which a later
                // change by the winner's author does not have).
                let mut origins = a.origin.iter().filter(|o| o.entry.path == path).peekable();
                let all_origins =
                    origins.peek().is_some() && origins.all(|o| newer(&o.entry.version));
                a.is_fetching()
                    && !a.outstanding
                    && (a.target_version(&path).is_some_and(newer) || all_origins)
            });
            let newer = r.entry.version.clone();
            self.defer(holders, r);
            if overtaken {
                self.supersede(&path, &newer);
            }
            if let Some((from, v)) = moved_from {
                let t = tombstone(&from, FileKind::File, 0, v);
                self.apply_remote(sources, t, None);
            }
            return;
        }
        if let Some((from, from_version)) = moved_from {
            if self.try_move(&sources, &r, &from, &from_version) {
                return;
            }
            let kind = self.index.get(&from).map_or(r.entry.kind, |l| l.entry.kind);
            let by = r.entry.modified_by;
            self.apply_remote(sources.clone(), r, None);
            self.apply_remote(sources, tombstone(&from, kind, by, from_version), None);
            return;
        }
        let local = self.index.get(&path).cloned();
        match local {
            None => self.adopt(sources, r, None),
            Some(l) => match r.entry.version.compare(&l.entry.version) {
                VersionOrder::Older => {}
                VersionOrder::Equal if conflict::same_content(&r, &l) => {}
                VersionOrder::Newer => self.adopt(sources, r, Some(l)),
                VersionOrder::Equal | VersionOrder::Concurrent if self.gate_prefers(&r, &l) => {
                    self.adopt(sources, r, Some(l))
                }
                // An equal version of other content: two nodes settled different pairs into
                // the same merged version (a present record that beat a deletion, against
                // two deletions merged). Neither descends from the other: settle it as a
                // conflict, the same way at both.
                VersionOrder::Equal | VersionOrder::Concurrent => self.conflict(sources, l, r),
            },
        }
    }

    /// A rename instead of a fetch, if `from` holds `to`'s content.
    fn try_move(
        &mut self,
        sources: &BTreeSet<NodeId>,
        r: &Record,
        from: &str,
        from_version: &Version,
    ) -> bool {
        let to = r.entry.path.as_str();
        if from == to || self.is_busy(from) {
            return false;
        }
        let Some(lf) = self.index.get(from) else {
            return false;
        };
        let content_there = !lf.deleted
            && lf.entry.kind == r.entry.kind
            && lf.entry.blocks == r.entry.blocks
            && lf.entry.target == r.entry.target
            && from_version.compare(&lf.entry.version) == VersionOrder::Newer;
        let to_free = match self.index.get(to) {
            None => true,
            Some(lt) => {
                lt.deleted && r.entry.version.compare(&lt.entry.version) == VersionOrder::Newer
            }
        };
        if !content_there || !to_free {
            return false;
        }
        let expect = self.expect_for(Some(lf));
        let kind = lf.entry.kind;
        let mut steps = vec![Step::Rename {
            from: from.to_string(),
            to: to.to_string(),
            expect,
            install: None,
        }];
        if lf.entry.mode != r.entry.mode && kind != FileKind::Symlink {
            // Moved with a mode change: the renamed file keeps what it had.
            steps.push(Step::SetMode {
                mode: r.entry.mode,
                expect,
            });
        }
        let gone = tombstone(from, kind, r.entry.modified_by, from_version.clone());
        let installs = vec![
            Install {
                entry: r.entry.clone(),
                deleted: false,
                moved_from: Some((from.to_string(), from_version.clone())),
                remote: true,
            },
            Install {
                entry: gone.entry.clone(),
                deleted: true,
                moved_from: None,
                remote: false,
            },
        ];
        let mut a = Apply::new(steps, installs, vec![r.clone(), gone]);
        a.sources = sources.clone();
        a.locks.push(from.to_string());
        self.start(to.to_string(), a);
        true
    }

    /// Takes `r` (newer than `local`) at its path.
    fn adopt(&mut self, sources: BTreeSet<NodeId>, r: Record, local: Option<Record>) {
        let received = r.clone();
        self.adopt_as(sources, r, local, received);
    }

    /// Takes `r` (newer than `local`, or a conflict's winner under its merged version) at
    /// its path, for the record `received` as it came in: the apply's origin, which a
    /// newer record from the same author overtakes.
    fn adopt_as(
        &mut self,
        sources: BTreeSet<NodeId>,
        r: Record,
        local: Option<Record>,
        received: Record,
    ) {
        let path = r.entry.path.clone();
        // A present record whose content a rename step moved away holds nothing.
        let emptied = self.emptied(&path);
        let local = local.filter(|l| l.deleted || !emptied);
        let present = local.as_ref().filter(|l| !l.deleted);
        let expect = self.expect_at(&path, local.as_ref());
        let same = local
            .as_ref()
            .is_some_and(|l| conflict::same_content(l, &r));
        if same || (r.deleted && present.is_none()) {
            let remote = !r.deleted;
            self.install_in_place(Install {
                entry: r.entry,
                deleted: r.deleted,
                moved_from: None,
                remote,
            });
            return;
        }
        let mut steps = Vec::new();
        if r.deleted {
            steps.push(Step::Remove { expect });
        } else {
            let lkind = present.map(|l| l.entry.kind);
            match r.entry.kind {
                FileKind::Directory => match lkind {
                    Some(FileKind::Directory) => steps.push(Step::SetMode {
                        mode: r.entry.mode,
                        expect,
                    }),
                    Some(_) => {
                        steps.push(Step::Remove { expect });
                        steps.push(Step::MakeDir { mode: r.entry.mode });
                    }
                    None => steps.push(Step::MakeDir { mode: r.entry.mode }),
                },
                FileKind::Symlink => {
                    if lkind.is_some() {
                        steps.push(Step::Remove { expect });
                    }
                    steps.push(Step::MakeSymlink {
                        target: r.entry.target.clone(),
                    });
                }
                FileKind::File => match present {
                    Some(l)
                        if l.entry.kind == FileKind::File
                            && l.entry.blocks == r.entry.blocks
                            && l.entry.size == r.entry.size =>
                    {
                        steps.push(Step::SetMode {
                            mode: r.entry.mode,
                            expect,
                        })
                    }
                    Some(l) if l.entry.kind != FileKind::File => {
                        steps.push(Step::Remove { expect });
                        steps.push(Step::Fetch {
                            expect: Expect::Nothing,
                        });
                    }
                    _ => steps.push(Step::Fetch { expect }),
                },
            }
        }
        let installs = vec![Install {
            entry: r.entry.clone(),
            deleted: r.deleted,
            moved_from: None,
            remote: !r.deleted,
        }];
        let mut a = Apply::new(steps, installs, vec![received]);
        a.sources = sources;
        self.start(path, a);
    }

    /// Paths where this read-only copy refused a local edit and holds other content than its
    /// version lists (what [`Self::revert`] would put back), in order.
    pub fn refused_paths(&self) -> impl Iterator<Item = &str> + '_ {
        self.refused.iter().map(String::as_str)
    }

    /// At a read-only copy (a drop's subscriber), puts back what the version lists wherever
    /// a local edit was refused, as Syncthing's "revert local changes" does: a listed file is
    /// fetched again from the linked peers over what is there, and what the version does not
    /// list is removed. A path an apply holds is left to it. Returns how many paths it took.
    pub fn revert(&mut self, now: Instant) -> usize {
        self.now = now;
        let Some(gate) = self.config.gate.clone().filter(|g| g.read_only) else {
            return 0;
        };
        let linked: BTreeSet<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.linked)
            .map(|(id, _)| *id)
            .collect();
        let mut taken = 0;
        for path in std::mem::take(&mut self.refused) {
            if self.is_busy(&path) {
                continue;
            }
            let listed = self
                .index
                .get(&path)
                .filter(|l| !l.deleted && gate.holds(l))
                .cloned();
            let expect = self.disk.get(&path).copied().unwrap_or(Expect::Nothing);
            match listed {
                Some(l) => {
                    taken += 1;
                    self.adopt(linked.clone(), l, None);
                }
                None if !gate.lists(&path) && expect != Expect::Nothing => {
                    taken += 1;
                    let a = Apply::new(vec![Step::Remove { expect }], Vec::new(), Vec::new());
                    self.start(path, a);
                }
                // Listed but not yet in place here: the apply that fetches it replaces it.
                None => {}
            }
        }
        taken
    }

    /// Whether a read-only gate takes `r` over `l` whatever their versions: the accepted
    /// version holds `r` and not `l` (a drop's subscriber holds what its owners signed,
    /// never a conflict copy).
    fn gate_prefers(&self, r: &Record, l: &Record) -> bool {
        self.config
            .gate
            .as_ref()
            .is_some_and(|g| g.read_only && g.holds(r) && !g.holds(l))
    }

    /// At a read-only gated copy (a drop's subscriber), a present record at `path` that the
    /// accepted version does not list is removed, under its own version (every such copy
    /// prefers the deletion, [`Self::gate_prefers`]): the copy holds what the version lists
    /// and nothing else. A directory that still holds present records is left for later.
    fn remove_unlisted(&mut self, path: &str) {
        let Some(gate) = self.config.gate.as_ref().filter(|g| g.read_only) else {
            return;
        };
        if gate.lists(path) || self.is_busy(path) {
            return;
        }
        let Some(l) = self.index.get(path).filter(|l| !l.deleted).cloned() else {
            return;
        };
        if l.entry.kind == FileKind::Directory {
            let inside = format!("{path}/");
            let occupied = self
                .index
                .since(0)
                .any(|(r, _)| !r.deleted && r.entry.path.starts_with(&inside));
            if occupied {
                return;
            }
        }
        let t = tombstone(
            path,
            l.entry.kind,
            l.entry.modified_by,
            l.entry.version.clone(),
        );
        self.adopt(BTreeSet::new(), t, Some(l));
    }

    /// Whether the conflict copy of `loser` at `copy` is made already or owed no more: a
    /// present record is there (the copy, maybe edited since: a copy path names the loser's
    /// author and counter, i.e. one edit's content), or a deletion of the copy made after
    /// seeing it (a user removed or resolved the copy elsewhere: its version descends from
    /// the copy's, [`conflict::copy_version`]).
    fn copy_taken(&self, copy: &str, loser: &Record) -> bool {
        self.index.get(copy).is_some_and(|c| {
            !c.deleted
                || matches!(
                    c.entry.version.compare(&conflict::copy_version(loser)),
                    VersionOrder::Newer | VersionOrder::Equal
                )
        })
    }

    /// Concurrent versions `l` (local) and `r` (remote) of one path.
    fn conflict(&mut self, sources: BTreeSet<NodeId>, l: Record, r: Record) {
        let path = l.entry.path.clone();
        let merged = l.entry.version.merged(&r.entry.version);
        if conflict::same_content(&l, &r) {
            let mut keep = if conflict::order(&r, &l).is_gt() {
                r.clone()
            } else {
                l
            };
            keep.entry.version = merged;
            if !keep.deleted && self.emptied(&path) {
                // The content left the path (an overtaken conflict's rename): put it back.
                self.adopt_as(sources, keep, None, r);
                return;
            }
            self.install_in_place(Install {
                entry: keep.entry,
                deleted: keep.deleted,
                moved_from: None,
                remote: false,
            });
            return;
        }
        let directories = |x: &Record| !x.deleted && x.entry.kind == FileKind::Directory;
        if directories(&l) && directories(&r) {
            // Two directories that differ in mode alone: no copy (a directory holds nothing
            // but its children, each a record of its own; renaming it would carry them off
            // unrecorded). The winner's mode, under the merged version.
            let remote_wins = conflict::order(&r, &l).is_gt();
            let mut w = if remote_wins { r.clone() } else { l.clone() };
            w.entry.version = merged;
            if remote_wins || self.emptied(&path) {
                self.adopt_as(sources, w, Some(l), r);
            } else {
                self.install(Install {
                    entry: w.entry,
                    deleted: false,
                    moved_from: None,
                    remote: false,
                });
            }
            return;
        }
        if conflict::order(&r, &l).is_lt() {
            // The local version wins. A deleted loser: the local record takes the merged
            // version. A present loser is fetched into its conflict copy, and the local
            // record takes only the versions the loser descends from
            // (`conflict::winner_version`): a full merge would supersede the loser at the
            // nodes holding it, which could drop its content before any copy of it exists.
            // A node holding the loser makes the copy and the same record itself, when the
            // local version reaches it (the remote-wins case below).
            if r.deleted {
                let mut keep = l;
                keep.entry.version = merged;
                if self.emptied(&path) {
                    // The content left the path (an overtaken conflict's rename): put it
                    // back.
                    self.adopt_as(sources, keep, None, r);
                    return;
                }
                self.install(Install {
                    entry: keep.entry,
                    deleted: keep.deleted,
                    moved_from: None,
                    remote: false,
                });
            } else {
                let copy = conflict::conflict_copy_path(&path, &r);
                let version = conflict::winner_version(&l.entry.version, &r);
                if version != l.entry.version && !self.emptied(&path) {
                    let mut keep = l;
                    keep.entry.version = version;
                    self.install(Install {
                        entry: keep.entry,
                        deleted: false,
                        moved_from: None,
                        remote: false,
                    });
                }
                // A copy path holding a record already (the copy made before, maybe edited
                // since) or a deletion of R's copy: no copy. The copy takes the version of R's
                // edit alone (`copy_version`), never R's version: that may be a merge whose
                // counters, counting changes of P, happen to be newer than an edit of the copy
                // made elsewhere, and the copy would replace that edit.
                if !self.copy_taken(&copy, &r) {
                    self.note_conflict(&path, &copy);
                    let mut c = r;
                    c.entry.version = conflict::copy_version(&c);
                    c.entry.path = copy;
                    self.apply_remote(sources, c, None);
                }
            }
            return;
        }
        // The peer's version wins. Over a deletion it takes the merged version; over present
        // content only the versions L descends from, as the local version does when it wins:
        // a full merge would be `Newer` than L at the other nodes holding L, which would drop
        // L there before any of them had copied it (and this node's copy may never be
        // served). Each holder of L settles the conflict itself and makes the same copy.
        let mut w = r.clone();
        w.entry.version = if l.deleted {
            merged
        } else {
            conflict::winner_version(&r.entry.version, &l)
        };
        let copy = conflict::conflict_copy_path(&path, &l);
        if l.deleted || self.is_busy(&copy) || self.copy_taken(&copy, &l) {
            self.adopt_as(sources, w, Some(l), r);
            return;
        }
        // The remote version wins: the local content moves to its conflict copy first.
        self.note_conflict(&path, &copy);
        let mut c = l.clone();
        c.entry.version = conflict::copy_version(&l);
        c.entry.path = copy.clone();
        let mut steps = vec![Step::Rename {
            from: path.clone(),
            to: copy.clone(),
            expect: self.expect_for(Some(&l)),
            install: Some(Box::new(Install {
                entry: c.entry,
                deleted: false,
                moved_from: None,
                remote: false,
            })),
        }];
        match w.entry.kind {
            FileKind::File => steps.push(Step::Fetch {
                expect: Expect::Nothing,
            }),
            FileKind::Directory => steps.push(Step::MakeDir { mode: w.entry.mode }),
            FileKind::Symlink => steps.push(Step::MakeSymlink {
                target: w.entry.target.clone(),
            }),
        }
        let installs = vec![Install {
            entry: w.entry.clone(),
            deleted: false,
            moved_from: None,
            remote: true,
        }];
        let mut a = Apply::new(steps, installs, vec![r]);
        a.sources = sources;
        a.locks.push(copy);
        self.start(path, a);
    }

    fn note_conflict(&mut self, path: &str, copy: &str) {
        self.metrics.conflicts += 1;
        self.event(ReplicaEvent::Conflict {
            path: path.to_string(),
            copy: copy.to_string(),
        });
    }

    /// Starts `a` at `path` (which is not busy).
    fn start(&mut self, path: String, mut a: Apply) {
        if a.steps.iter().any(|s| matches!(s, Step::Fetch { .. })) && a.fetch.is_none() {
            if let Some(i) = a.installs.iter().find(|i| i.entry.path == path) {
                let temp = TempId(self.next_temp);
                self.next_temp += 1;
                a.fetch = Some(Fetch {
                    entry: i.entry.clone(),
                    temp,
                    blocks: vec![
                        BlockSlot {
                            state: BlockState::Missing,
                            writes: 0,
                        };
                        i.entry.blocks.len()
                    ],
                    created: !i.entry.blocks.is_empty(),
                });
            }
        }
        if let Some(f) = &a.fetch {
            self.temps.insert(f.temp, path.clone());
        }
        for l in &a.locks {
            self.locks.insert(l.clone(), path.clone());
        }
        self.applies.insert(path.clone(), a);
        self.mark_dirty();
        self.fetch_dirty = true;
        self.advance(&path);
    }

    /// Puts a record into the index and announces it.
    pub(super) fn install(&mut self, i: Install) {
        let remote = i.remote && !i.deleted;
        let path = i.entry.path.clone();
        let version = i.entry.version.clone();
        let record = i.record();
        self.counter_high = self.counter_high.max(version.get(self.me));
        // What the host reported at the path no longer differs from the record: forget it
        // (a rename step's "nothing at the old path" once its deletion record is in, say),
        // or a later record there would be planned against a stale report.
        if self.disk.get(&path) == Some(&expect_of(Some(&record))) {
            self.disk.remove(&path);
        }
        self.refused.remove(&path);
        self.index.put(record, i.moved_from);
        // A block it holds may now be copied locally rather than fetched.
        self.local_misses.clear();
        self.fetch_dirty = true;
        self.mark_dirty();
        if remote {
            self.event(ReplicaEvent::Updated { path, version });
        }
    }

    /// Carries the apply at `path` on as far as it can go now.
    pub(super) fn advance(&mut self, path: &str) {
        let now = self.now;
        let Some(a) = self.applies.get_mut(path) else {
            return;
        };
        if a.outstanding {
            return;
        }
        if a.stale {
            self.cancel(path);
            return;
        }
        if a.retry_at.is_some_and(|t| t > now) {
            return;
        }
        a.retry_at = None;
        if a.clearing_waits_for_fetch() {
            // The temp fills before anything leaves the path.
            self.fill_temp(path);
            return;
        }
        let request = match a.steps.front().cloned() {
            None => {
                self.finish(path);
                return;
            }
            Some(Step::Fetch { expect }) => {
                if !self.fill_temp(path) || self.waits_to_feed(path) {
                    return;
                }
                let Some(f) = self.applies.get(path).and_then(|a| a.fetch.as_ref()) else {
                    return;
                };
                StorageRequest::Commit {
                    temp: f.temp,
                    path: path.to_string(),
                    size: f.entry.size,
                    blocks: f.entry.blocks.clone(),
                    mode: f.entry.mode,
                    mtime_ms: f.entry.mtime_ms,
                    expect,
                }
            }
            Some(Step::Remove { .. }) if self.waits_to_feed(path) => return,
            Some(Step::Remove { expect }) => StorageRequest::Remove {
                path: path.to_string(),
                expect,
            },
            Some(Step::Rename {
                from, to, expect, ..
            }) => StorageRequest::Rename { from, to, expect },
            Some(Step::MakeDir { mode }) => StorageRequest::MakeDir {
                path: path.to_string(),
                mode,
            },
            Some(Step::MakeSymlink { target }) => StorageRequest::MakeSymlink {
                path: path.to_string(),
                target,
            },
            Some(Step::SetMode { mode, expect }) => StorageRequest::SetMode {
                path: path.to_string(),
                mode,
                expect,
            },
        };
        if let Some(a) = self.applies.get_mut(path) {
            a.outstanding = true;
        }
        self.request(Purpose::Step(path.to_string()), request);
    }

    /// Whether the apply at `path`, about to remove or replace the file there, must wait:
    /// the file still has blocks to give another file being fetched
    /// ([`Replica::feeds_a_fetch`]). It stays until they are copied (or found unreadable),
    /// and the apply looks again after `full_round_interval` (the next scheduling round).
    fn waits_to_feed(&mut self, path: &str) -> bool {
        if !self.feeds_a_fetch(path) {
            return false;
        }
        self.fetch_dirty = true;
        let at = self.now + self.config.full_round_interval;
        if let Some(a) = self.applies.get_mut(path) {
            a.retry_at = Some(at);
            self.retries.insert((at, path.to_string()));
        }
        true
    }

    /// Carries the fetch of the apply at `path` on: creates its temp, or asks for a
    /// scheduling pass while blocks are missing. Whether the temp is complete.
    fn fill_temp(&mut self, path: &str) -> bool {
        let Some(a) = self.applies.get_mut(path) else {
            return false;
        };
        let Some(f) = a.fetch.as_mut() else {
            // A fetch step always has its fetch (made in `start` or loaded).
            a.steps.retain(|s| !matches!(s, Step::Fetch { .. }));
            self.advance(path);
            return false;
        };
        if !f.created {
            if f.blocks.iter().all(|b| b.writes == 0) {
                let temp = f.temp;
                let req = StorageRequest::WriteTemp {
                    temp,
                    offset: 0,
                    data: Bytes::new(),
                };
                if let Some(b) = f.blocks.first_mut() {
                    b.writes += 1;
                }
                f.created = true;
                self.request(
                    Purpose::Write {
                        temp,
                        block: u32::MAX,
                    },
                    req,
                );
            }
            return false;
        }
        if !f.is_complete() {
            self.fetch_dirty = true;
            return false;
        }
        true
    }

    /// The apply at `path` is done: its records go in, its paths are free.
    fn finish(&mut self, path: &str) {
        let Some(a) = self.applies.remove(path) else {
            return;
        };
        for i in a.installs {
            self.install(i);
        }
        self.release(path, a.fetch.map(|f| f.temp), &a.locks);
    }

    fn release(&mut self, path: &str, temp: Option<TempId>, locks: &[String]) {
        if let Some(t) = temp {
            self.temps.remove(&t);
        }
        for l in locks {
            self.locks.remove(l);
        }
        self.mark_dirty();
        self.redo_deferred(path);
        self.remove_unlisted(path);
        for l in locks {
            self.redo_deferred(l);
            self.remove_unlisted(l);
        }
    }

    fn redo_deferred(&mut self, path: &str) {
        if self.is_busy(path) {
            return;
        }
        if let Some(list) = self.deferred.remove(path) {
            self.mark_dirty();
            for (sources, r) in list {
                self.apply_remote(sources, r, None);
            }
        }
    }

    /// Drops the apply at `path` (a local change overtook it) and applies its origin again.
    fn cancel(&mut self, path: &str) {
        let Some(a) = self.applies.remove(path) else {
            return;
        };
        let temp = a.fetch.as_ref().map(|f| f.temp);
        if let Some(t) = temp {
            self.request(Purpose::Discard, StorageRequest::DiscardTemp { temp: t });
        }
        for l in &a.locks {
            self.locks.remove(l);
        }
        if let Some(t) = temp {
            self.temps.remove(&t);
        }
        self.mark_dirty();
        for r in a.origin {
            self.apply_remote(a.sources.clone(), r, None);
        }
        self.redo_deferred(path);
        for l in &a.locks {
            self.redo_deferred(l);
        }
    }

    /// Drops the fetch at `path`, which no source serves any more: its origin records at
    /// `path` are dropped, the others applied again, and the deferred records of its paths
    /// applied.
    fn abandon(&mut self, path: &str) {
        self.drop_fetch(path, |r| r.entry.path == path);
    }

    /// Drops the fetch at `path` for `newer` (deferred for it): its origin records that
    /// `newer` descends from are dropped, the others applied again, and the deferred records
    /// of its paths applied.
    fn supersede(&mut self, path: &str, newer: &Version) {
        self.drop_fetch(path, |r| {
            r.entry.path == path && newer.compare(&r.entry.version) == VersionOrder::Newer
        });
    }

    /// Drops the apply at `path`: its temp is discarded, its origin records that `dropped`
    /// names are forgotten, the others applied again, then the deferred records of its
    /// paths.
    fn drop_fetch(&mut self, path: &str, dropped: impl Fn(&Record) -> bool) {
        let Some(a) = self.remove_fetch(path) else {
            return;
        };
        for r in a.origin {
            if !dropped(&r) {
                self.apply_remote(a.sources.clone(), r, None);
            }
        }
        self.redo_deferred(path);
        for l in &a.locks {
            self.redo_deferred(l);
        }
    }

    /// Takes the apply at `path` out: its temp is discarded and its paths are free. Not while
    /// one of its steps is with the host: that step's answer is matched by path, so a new
    /// apply there would take it for its own (a commit of the old content counted as the new
    /// one's). Such an apply runs on; what is deferred behind it is applied after it.
    fn remove_fetch(&mut self, path: &str) -> Option<Apply> {
        if self.applies.get(path)?.outstanding {
            return None;
        }
        let a = self.applies.remove(path)?;
        if let Some(t) = a.fetch.as_ref().map(|f| f.temp) {
            self.request(Purpose::Discard, StorageRequest::DiscardTemp { temp: t });
            self.temps.remove(&t);
        }
        for l in &a.locks {
            self.locks.remove(l);
        }
        self.mark_dirty();
        self.fetch_dirty = true;
        Some(a)
    }

    /// A stalled fetch gives way to the records deferred behind it that a linked source can
    /// serve (its own source lost the version, or serves it corrupt): they are applied
    /// first, then its origin records again, which wait behind them in turn.
    fn give_way(&mut self) {
        let stuck: Vec<String> = self
            .deferred
            .iter()
            .filter(|(p, list)| {
                self.held_by_stalled(p) && list.iter().any(|(s, r)| self.can_serve(s, r))
            })
            .map(|(p, _)| self.locks.get(p).cloned().unwrap_or_else(|| p.clone()))
            .collect();
        if self.gave_way.0 != self.now {
            self.gave_way = (self.now, BTreeSet::new());
        }
        for owner in stuck {
            // An earlier owner in this pass may have freed or retaken it.
            if !self.applies.get(&owner).is_some_and(|a| self.is_stalled(a)) {
                continue;
            }
            if !self.gave_way.1.insert(owner.clone()) {
                continue;
            }
            let Some(a) = self.remove_fetch(&owner) else {
                continue;
            };
            // The paths it locked first: the records deferred at its own path could take
            // them again (a conflict's apply locks the same copy path), and what was
            // deferred there would wait behind that apply, which gives way again, forever.
            for l in &a.locks {
                self.redo_deferred(l);
            }
            self.redo_deferred(&owner);
            for r in a.origin {
                self.apply_remote(a.sources.clone(), r, None);
            }
        }
    }

    /// Whether one of `sources` can serve `r`: linked, not disconnected for corrupt blocks,
    /// and no NOTFOUND from it for a block of `r` (a record without content needs none).
    fn can_serve(&self, sources: &BTreeSet<NodeId>, r: &Record) -> bool {
        let has_content = !r.deleted && r.entry.kind == FileKind::File;
        !has_content
            || sources.iter().any(|s| {
                self.peers.get(s).is_some_and(|p| {
                    p.linked && p.mismatches < self.config.mismatches_before_disconnect
                }) && r
                    .entry
                    .blocks
                    .iter()
                    .all(|b| !self.not_found.get(&b.hash).is_some_and(|n| n.contains(s)))
            })
    }

    /// A local change at `path` overtakes any apply holding it.
    fn overtake(&mut self, path: &str) {
        let owner = if self.applies.contains_key(path) {
            Some(path.to_string())
        } else {
            self.locks.get(path).cloned()
        };
        if let Some(owner) = owner {
            if let Some(a) = self.applies.get_mut(&owner) {
                a.stale = true;
            }
            self.advance(&owner);
        }
    }

    /// The host's scanner found a change.
    pub fn handle_local(&mut self, now: Instant, change: LocalChange) {
        self.now = now;
        if !self.ready {
            if self.early_local.len() < EARLY_LOCAL_MAX {
                self.early_local.push(change);
            }
            return;
        }
        match change {
            LocalChange::Changed(mut e) => {
                e.path = paths::normalize(&e.path).into_owned();
                if self
                    .ignore
                    .is_ignored(&e.path, e.kind == FileKind::Directory)
                {
                    return;
                }
                let candidate = Record {
                    entry: e,
                    deleted: false,
                };
                if self.refuse_local_edit(&candidate.entry.path.clone(), Some(&candidate)) {
                    return;
                }
                let local = self.index.get(&candidate.entry.path);
                if local.is_some_and(|l| conflict::same_content(l, &candidate)) {
                    // Only the metadata a version does not cover changed (mtime): what a
                    // step at the path must expect now.
                    let reported = expect_of(Some(&candidate));
                    let was = self.expect_for(local);
                    let path = candidate.entry.path;
                    if local.is_some_and(|l| expect_of(Some(l)) == reported) {
                        self.disk.remove(&path);
                    } else {
                        self.disk.insert(path.clone(), reported);
                    }
                    self.re_expect(&path, was, reported);
                    return;
                }
                self.disk.remove(&candidate.entry.path);
                let version = local.map_or_else(Version::default, |l| l.entry.version.clone());
                let mut e = candidate.entry;
                e.version = version.bumped_past(self.me, self.counter_high);
                e.modified_by = self.me;
                let path = e.path.clone();
                self.install(Install {
                    entry: e,
                    deleted: false,
                    moved_from: None,
                    remote: false,
                });
                self.overtake(&path);
            }
            LocalChange::Removed { path } => {
                let path = paths::normalize(&path).into_owned();
                if self.refuse_local_edit(&path, None) {
                    return;
                }
                self.disk.remove(&path);
                let Some(l) = self.index.get(&path).filter(|l| !l.deleted) else {
                    return;
                };
                let t = tombstone(
                    &path,
                    l.entry.kind,
                    self.me,
                    l.entry.version.bumped_past(self.me, self.counter_high),
                );
                self.install(Install {
                    entry: t.entry,
                    deleted: true,
                    moved_from: None,
                    remote: false,
                });
                self.overtake(&path);
            }
            LocalChange::Moved { from, mut to } => {
                let from = paths::normalize(&from).into_owned();
                to.path = paths::normalize(&to.path).into_owned();
                let read_only = self.config.gate.as_ref().is_some_and(|g| g.read_only);
                let lf = self.index.get(&from).filter(|l| !l.deleted).cloned();
                let Some(lf) = lf.filter(|_| !read_only) else {
                    // A read-only copy judges both ends on their own.
                    if read_only {
                        self.handle_local(now, LocalChange::Changed(to));
                        return self.handle_local(now, LocalChange::Removed { path: from });
                    }
                    return self.handle_local(now, LocalChange::Changed(to));
                };
                if self
                    .ignore
                    .is_ignored(&to.path, to.kind == FileKind::Directory)
                {
                    self.handle_local(now, LocalChange::Changed(to));
                    return self.handle_local(now, LocalChange::Removed { path: from });
                }
                let from_version = lf.entry.version.bumped_past(self.me, self.counter_high);
                let to_version = self
                    .index
                    .get(&to.path)
                    .map_or_else(Version::default, |l| l.entry.version.clone())
                    .bumped_past(self.me, self.counter_high);
                to.version = to_version;
                to.modified_by = self.me;
                let to_path = to.path.clone();
                // The scanner reported both paths: what it found is what the records say.
                self.disk.remove(&to_path);
                self.disk.remove(&from);
                self.install(Install {
                    entry: to,
                    deleted: false,
                    moved_from: Some((from.clone(), from_version.clone())),
                    remote: false,
                });
                let t = tombstone(&from, lf.entry.kind, self.me, from_version);
                self.install(Install {
                    entry: t.entry,
                    deleted: true,
                    moved_from: None,
                    remote: false,
                });
                self.overtake(&to_path);
                self.overtake(&from);
            }
            LocalChange::ScanDone => {}
        }
        self.fetch_dirty = true;
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
            Purpose::Persist => {
                self.persist_outstanding = false;
                if result == StorageResult::Done {
                    self.durable = true;
                } else {
                    self.persist_dirty = true;
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

    fn on_loaded(&mut self, result: StorageResult) {
        let state = match result {
            StorageResult::Loaded(Some(b)) => PersistedState::decode(&b),
            StorageResult::Loaded(None) => None,
            _ => {
                self.load_retry_at = Some(self.now + Duration::from_secs(1));
                return;
            }
        };
        match state {
            Some(s) => {
                self.index_id = s.index_id;
                self.next_temp = s.next_temp.max(1);
                for (entry, deleted, moved) in s.records {
                    self.counter_high = self.counter_high.max(entry.version.get(self.me));
                    self.index.restore(Record { entry, deleted }, moved);
                }
                for (id, index_id, seen) in s.peers {
                    let p = self.peers.entry(id).or_default();
                    p.index_id = index_id;
                    p.seen = seen;
                }
                for (path, mut a) in s.applies {
                    if let Some(f) = a.fetch.as_mut() {
                        f.settle();
                        self.next_temp = self.next_temp.max(f.temp.0 + 1);
                        self.temps.insert(f.temp, path.clone());
                    }
                    for l in &a.locks {
                        self.locks.insert(l.clone(), path.clone());
                    }
                    if let Some(t) = a.retry_at {
                        self.retries.insert((t, path.clone()));
                    }
                    self.applies.insert(path, a);
                }
                self.deferred = s.deferred.into_iter().collect();
                self.counter_high = self
                    .counter_high
                    .max(s.counter_high)
                    .saturating_add(COUNTER_RESTART_GAP);
                // Changes made after the last persist may have been announced with sequence
                // numbers the restored index would give again; peers that saw them would
                // skip the new changes. New changes start far above anything given before.
                let restored = s.sequence.max(self.index.sequence());
                self.index
                    .skip_to(restored.saturating_add(SEQUENCE_RESTART_GAP));
                self.mark_dirty();
            }
            None => {
                self.index_id = self.rng.next_u64().max(1);
                self.mark_dirty();
            }
        }
        self.ready = true;
        self.event(ReplicaEvent::Ready);
        let linked: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.linked)
            .map(|(id, _)| *id)
            .collect();
        for peer in linked {
            self.send_list(peer);
        }
        for change in core::mem::take(&mut self.early_local) {
            self.handle_local(self.now, change);
        }
        let paths: Vec<String> = self.applies.keys().cloned().collect();
        for p in paths {
            self.advance(&p);
        }
        // Deferred records whose path is free (its apply was not persisted, or has ended).
        let deferred: Vec<String> = self.deferred.keys().cloned().collect();
        for p in deferred {
            self.redo_deferred(&p);
        }
        // Nothing is announced until the state is persisted with the numbering jumped: a
        // crash before that would restore the same numbering and jump to the same numbers
        // again, and peers that saw this life's changes would skip the next life's.
        self.persist_at = None;
        if !self.persist_outstanding {
            self.persist();
        }
        self.fetch_dirty = true;
    }

    pub(super) fn backoff(&mut self, path: &str) {
        let now = self.now;
        if let Some(a) = self.applies.get_mut(path) {
            a.backoff_ms = (a.backoff_ms * 2).clamp(100, BACKOFF_MAX_MS);
            let at = now + Duration::from_millis(a.backoff_ms);
            a.retry_at = Some(at);
            self.retries.insert((at, path.to_string()));
        }
    }

    fn on_step_done(&mut self, path: &str, result: StorageResult) {
        let Some(a) = self.applies.get_mut(path) else {
            return;
        };
        a.outstanding = false;
        // Its blocks may be wanted again (or for the first time, if a fetch comes next).
        self.fetch_dirty = true;
        let Some(step) = a.steps.front().cloned() else {
            return self.advance(path);
        };
        let ok = matches!(result, StorageResult::Done)
            || (matches!(step, Step::Remove { .. }) && result == StorageResult::NotFound);
        if ok {
            // What the step left on disk, whatever the records say until the apply installs
            // its own (an apply cancelled before then, and re-planned, must expect that: a
            // move's target has no record yet, a committed file's path may hold a deletion
            // record): a rename leaves nothing at `from` and what was there at `to`, a removal
            // nothing, a commit the fetched file, a mode change what was there with its new
            // mode; the other steps leave what the records say.
            match &step {
                Step::Rename {
                    from, to, expect, ..
                } => {
                    let moved = self.disk.insert(from.clone(), Expect::Nothing);
                    self.disk.insert(to.clone(), moved.unwrap_or(*expect));
                }
                Step::Remove { .. } => {
                    self.disk.insert(path.to_string(), Expect::Nothing);
                }
                Step::Fetch { .. } => {
                    let committed = a
                        .fetch
                        .as_ref()
                        .map_or(Expect::Nothing, |f| Expect::Present {
                            kind: FileKind::File,
                            size: f.entry.size,
                            mtime_ms: f.entry.mtime_ms,
                            mode: f.entry.mode,
                        });
                    self.disk.insert(path.to_string(), committed);
                }
                Step::SetMode { mode, expect } => {
                    let now = match *expect {
                        Expect::Present {
                            kind,
                            size,
                            mtime_ms,
                            ..
                        } => Expect::Present {
                            kind,
                            size,
                            mtime_ms,
                            mode: *mode,
                        },
                        Expect::Nothing => Expect::Nothing,
                    };
                    self.disk.insert(path.to_string(), now);
                }
                _ => {
                    self.disk.remove(path);
                }
            }
            let Some(a) = self.applies.get_mut(path) else {
                return;
            };
            a.steps.pop_front();
            a.backoff_ms = 0;
            match step {
                Step::Rename { install, .. } => {
                    if let Some(i) = install {
                        self.install(*i);
                    } else {
                        self.metrics.renames_applied += 1;
                    }
                }
                Step::Fetch { .. } => {
                    self.metrics.files_committed += 1;
                    if let Some(f) = a.fetch.take() {
                        self.temps.remove(&f.temp);
                    }
                }
                _ => {}
            }
            return self.advance(path);
        }
        match (&step, result) {
            (
                Step::Rename {
                    install: None,
                    from,
                    ..
                },
                StorageResult::NotFound | StorageResult::Changed,
            ) => {
                // A move whose old path no longer holds the content: fetch instead, and
                // apply the old path's deletion on its own.
                let from = from.clone();
                let expect = self.expect_for(self.index.get(path));
                let Some(mut a) = self.applies.remove(path) else {
                    return;
                };
                let gone: Vec<Record> = a.origin.iter().filter(|r| r.deleted).cloned().collect();
                a.steps = VecDeque::from([Step::Fetch { expect }]);
                a.installs.retain(|i| !i.deleted);
                for i in &mut a.installs {
                    i.moved_from = None;
                }
                a.origin.retain(|r| !r.deleted);
                a.locks.clear();
                self.locks.remove(&from);
                let sources = a.sources.clone();
                self.start(path.to_string(), a);
                for g in gone {
                    self.apply_remote(sources.clone(), g, None);
                }
                self.redo_deferred(&from);
            }
            (Step::Rename { .. }, StorageResult::NotFound) => {
                // The losing local content is gone already: nothing to keep.
                a.steps.pop_front();
                self.advance(path);
            }
            (Step::Fetch { .. }, StorageResult::Corrupt(offsets)) => {
                if let Some(f) = a.fetch.as_mut() {
                    for (b, slot) in f.entry.blocks.iter().zip(f.blocks.iter_mut()) {
                        if offsets.contains(&b.offset) {
                            slot.state = BlockState::Missing;
                        }
                    }
                }
                self.fetch_dirty = true;
                self.advance(path);
            }
            (Step::Fetch { .. }, StorageResult::NotFound) => {
                if let Some(f) = a.fetch.as_mut() {
                    for slot in &mut f.blocks {
                        slot.state = BlockState::Missing;
                    }
                    f.created = !f.entry.blocks.is_empty();
                }
                self.fetch_dirty = true;
                self.advance(path);
            }
            _ => {
                // Changed (the scanner will report what is there) or Failed: later.
                self.backoff(path);
            }
        }
    }

    /// An application command.
    pub fn handle_command(
        &mut self,
        now: Instant,
        command: ReplicaCommand,
    ) -> Result<(), ReplicaRefusal> {
        self.now = now;
        let (path, keep) = match command {
            ReplicaCommand::SetGate(gate) => {
                self.set_gate(now, gate);
                return Ok(());
            }
            ReplicaCommand::Revert => {
                self.revert(now);
                return Ok(());
            }
            ReplicaCommand::Resolve { path, keep } => (path, keep),
        };
        if !self.ready {
            return Err(ReplicaRefusal::Loading);
        }
        let copies: Vec<Record> = self
            .index
            .iter()
            .filter(|r| !r.deleted && conflict::is_conflict_copy_of(&path, &r.entry.path))
            .cloned()
            .collect();
        if copies.is_empty() {
            return Err(ReplicaRefusal::NotConflicted(path));
        }
        if keep != path && !copies.iter().any(|c| c.entry.path == keep) {
            return Err(ReplicaRefusal::NotAVersion(keep));
        }
        let current = self.index.get(&path).cloned();
        if keep != path {
            let Some(k) = copies.iter().find(|c| c.entry.path == keep).cloned() else {
                return Err(ReplicaRefusal::NotAVersion(keep));
            };
            if self.is_busy(&path) || self.is_busy(&keep) {
                return Err(ReplicaRefusal::NotConflicted(path));
            }
            // The kept copy's content moves to the path, with a version that descends from
            // both.
            let base = current
                .as_ref()
                .map_or_else(Version::default, |c| c.entry.version.clone());
            let mut e = k.entry.clone();
            e.path = path.clone();
            e.version = base
                .merged(&k.entry.version)
                .bumped_past(self.me, self.counter_high);
            e.modified_by = self.me;
            let mut steps = Vec::new();
            if current.as_ref().is_some_and(|c| !c.deleted) {
                steps.push(Step::Remove {
                    expect: self.expect_for(current.as_ref()),
                });
            }
            steps.push(Step::Rename {
                from: keep.clone(),
                to: path.clone(),
                expect: self.expect_for(Some(&k)),
                install: None,
            });
            let gone = tombstone(
                &keep,
                k.entry.kind,
                self.me,
                k.entry.version.bumped_past(self.me, self.counter_high),
            );
            let installs = vec![
                Install {
                    entry: e,
                    deleted: false,
                    moved_from: None,
                    remote: false,
                },
                Install {
                    entry: gone.entry,
                    deleted: true,
                    moved_from: None,
                    remote: false,
                },
            ];
            let mut a = Apply::new(steps, installs, Vec::new());
            a.locks.push(keep.clone());
            self.start(path.clone(), a);
        }
        for c in copies.into_iter().filter(|c| c.entry.path != keep) {
            if self.is_busy(&c.entry.path) {
                continue;
            }
            let gone = tombstone(
                &c.entry.path,
                c.entry.kind,
                self.me,
                c.entry.version.bumped_past(self.me, self.counter_high),
            );
            let steps = vec![Step::Remove {
                expect: self.expect_for(Some(&c)),
            }];
            let installs = vec![Install {
                entry: gone.entry,
                deleted: true,
                moved_from: None,
                remote: false,
            }];
            self.start(
                c.entry.path.clone(),
                Apply::new(steps, installs, Vec::new()),
            );
        }
        Ok(())
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

    /// The node is shutting down: a change not yet persisted is persisted now rather than
    /// after `persist_delay` (a node stopped just after an apply would otherwise find the
    /// applied file at its next start as a local change of its own, a conflict).
    pub fn persist_now(&mut self, now: Instant) {
        self.now = now;
        if self.ready && self.persist_dirty && !self.persist_outstanding {
            self.persist_at = None;
            self.persist();
        }
    }

    fn persist(&mut self) {
        self.persist_dirty = false;
        let state = PersistedState {
            format: STATE_FORMAT,
            index_id: self.index_id,
            sequence: self.index.sequence(),
            next_temp: self.next_temp,
            counter_high: self.counter_high,
            records: self
                .index
                .since(0)
                .map(|(r, m)| (r.entry.clone(), r.deleted, m.cloned()))
                .collect(),
            peers: self
                .peers
                .iter()
                .filter(|(_, p)| p.index_id != 0)
                .map(|(id, p)| (*id, p.index_id, p.seen))
                .collect(),
            applies: self
                .applies
                .iter()
                .map(|(p, a)| (p.clone(), a.clone()))
                .collect(),
            deferred: self
                .deferred
                .iter()
                .map(|(p, list)| (p.clone(), list.clone()))
                .collect(),
        };
        self.persist_outstanding = true;
        let bytes = Bytes::from(state.encode());
        self.request(Purpose::Persist, StorageRequest::PersistState { bytes });
    }

    /// The state changed: persist it after `persist_delay`.
    pub(super) fn mark_dirty(&mut self) {
        if !self.ready {
            return;
        }
        self.persist_dirty = true;
        if self.persist_at.is_none() && !self.persist_outstanding {
            self.persist_at = Some(self.now + self.config.persist_delay);
        }
    }

    /// The next thing to do, or `None`.
    pub fn poll_output(&mut self) -> Option<ReplicaOutput> {
        if self.out.is_empty() && self.ready {
            self.pump();
        }
        self.out.pop_front()
    }

    /// Announces and schedules fetches.
    fn pump(&mut self) {
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
            .filter(|(_, p)| p.linked)
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
                    bulk: false,
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

    /// Whether the state is loaded.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The sequence number of the newest record in the index (0 if it is empty): a peer
    /// that has seen this far of this node's index (under [`Replica::index_id`]) has been
    /// told of every record (a remote run's sync point, SPEC.md §23.2).
    pub fn newest_sequence(&self) -> u64 {
        self.index
            .iter()
            .map(|r| r.entry.sequence)
            .max()
            .unwrap_or(0)
    }

    /// Whether this copy has caught up with `peer`'s up to its sync point: the state is
    /// loaded, every record of `peer`'s index `index_id` up to `sequence` has arrived
    /// (`sequence` 0: none is waited for), and no apply, deferred record, block request or
    /// storage step is outstanding (an apply stalled for want of a source does not hold it).
    pub fn caught_up(&self, peer: &NodeId, index_id: u64, sequence: u64) -> bool {
        let seen = sequence == 0
            || self
                .peers
                .get(peer)
                .is_some_and(|p| p.index_id == index_id && p.seen >= sequence);
        self.ready
            && seen
            && self.applies.values().all(|a| self.is_stalled(a))
            && self.deferred.keys().all(|p| self.held_by_stalled(p))
            && self.inflight.is_empty()
            && self.pending.values().all(|p| matches!(p, Purpose::Persist))
    }

    /// Whether nothing is left to do: every version known from a peer that is newer than
    /// the local one is in place, and no storage step or block request is outstanding.
    pub fn is_idle(&self) -> bool {
        let announced = self
            .peers
            .values()
            .all(|p| !p.linked || p.cursor.is_none_or(|c| c >= self.index.sequence()));
        self.ready
            && self.applies.values().all(|a| self.is_stalled(a))
            && self.deferred.keys().all(|p| self.held_by_stalled(p))
            && self.inflight.is_empty()
            && self.pending.values().all(|p| matches!(p, Purpose::Persist))
            && self.out.is_empty()
            && announced
    }

    /// What keeps the folder busy, in one line (for a simulator's report when it does not
    /// settle): each apply's path, front step and retry time, deferred records, blocks in
    /// flight, outstanding storage steps, peers not yet told of every record.
    pub fn busy(&self) -> String {
        let mut out = Vec::new();
        for (path, a) in &self.applies {
            let step = a.steps.front().map_or("-".to_string(), |s| match s {
                Step::Remove { .. } => "Remove".into(),
                Step::Rename { from, to, .. } => format!("Rename {from} -> {to}"),
                Step::MakeDir { .. } => "MakeDir".into(),
                Step::MakeSymlink { target } => format!("MakeSymlink -> {target}"),
                Step::SetMode { .. } => "SetMode".into(),
                Step::Fetch { .. } => "Fetch".into(),
            });
            let blocks = a.fetch.as_ref().map_or(String::new(), |f| {
                let count = |st| f.blocks.iter().filter(|b| b.state == st).count();
                format!(
                    ", blocks missing {} busy {} verified {}",
                    count(BlockState::Missing),
                    count(BlockState::Busy),
                    count(BlockState::Verified)
                )
            });
            let sources: Vec<String> = a
                .sources
                .iter()
                .map(|s| {
                    let linked = self.peers.get(s).is_some_and(|p| p.linked);
                    format!("{s}{}", if linked { "" } else { " (unlinked)" })
                })
                .collect();
            if self.is_stalled(a) {
                continue;
            }
            out.push(format!(
                "apply {path}: {step} (outstanding {}, retry {:?}, stale {}, sources {sources:?}{blocks})",
                a.outstanding, a.retry_at, a.stale
            ));
        }
        for (path, d) in &self.deferred {
            if self.held_by_stalled(path) {
                continue;
            }
            out.push(format!("deferred {path}: {}", d.len()));
        }
        if !self.inflight.is_empty() {
            out.push(format!("{} blocks in flight", self.inflight.len()));
        }
        for p in self.pending.values() {
            if !matches!(p, Purpose::Persist) {
                out.push(format!("pending {p:?}"));
            }
        }
        for (node, p) in &self.peers {
            if p.linked && p.cursor.is_some_and(|c| c < self.index.sequence()) {
                out.push(format!(
                    "peer {node} at {:?} of {}",
                    p.cursor,
                    self.index.sequence()
                ));
            }
        }
        out.join("; ")
    }

    /// The index, by path (deletion records included).
    pub fn records(&self) -> impl Iterator<Item = &Record> + '_ {
        let mut all: Vec<&Record> = self.index.iter().collect();
        all.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
        all.into_iter()
    }

    /// The temporary files the folder's applies use (any other in the host's temporary
    /// folder is left over from before a crash, and may go).
    pub fn temps_in_use(&self) -> Vec<TempId> {
        self.temps.keys().copied().collect()
    }

    /// The files being fetched, by path: bytes written so far of each one's size.
    pub fn transfers(&self) -> Vec<Transfer> {
        self.applies
            .iter()
            .filter_map(|(path, a)| {
                let f = a.fetch.as_ref()?;
                let done = f
                    .entry
                    .blocks
                    .iter()
                    .zip(&f.blocks)
                    .filter(|(_, slot)| slot.is_written())
                    .map(|(b, _)| u64::from(b.len))
                    .sum();
                Some(Transfer {
                    path: path.clone(),
                    bytes_done: done,
                    bytes_total: f.entry.size,
                })
            })
            .collect()
    }

    /// The record at `path`, if any.
    pub fn record(&self, path: &str) -> Option<&Record> {
        self.index.get(path)
    }

    /// This folder's index id (drawn when its state was first created).
    pub fn index_id(&self) -> u64 {
        self.index_id
    }

    /// The counters.
    pub fn metrics(&self) -> ReplicaMetrics {
        self.metrics
    }

    /// Checks every bound it promises.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.not_found.len() > NOT_FOUND_MAX {
            return Err(format!(
                "{} blocks remembered as not found",
                self.not_found.len()
            ));
        }
        let outstanding = self.outstanding();
        if outstanding > self.config.requests_outstanding_max {
            return Err(format!(
                "{outstanding} storage requests outstanding, over {}",
                self.config.requests_outstanding_max
            ));
        }
        for (id, p) in &self.peers {
            let sum: u64 = self
                .inflight
                .values()
                .filter(|f| f.peer == *id)
                .map(|f| u64::from(f.len))
                .sum();
            if sum != p.bytes_in_flight {
                return Err(format!(
                    "peer {id}: {} bytes in flight counted, {sum} asked",
                    p.bytes_in_flight
                ));
            }
            let single = self.inflight.values().filter(|f| f.peer == *id).count() <= 1;
            if p.bytes_in_flight > self.config.bytes_in_flight_per_peer_max && !single {
                return Err(format!(
                    "peer {id}: {} bytes in flight, over the bound",
                    p.bytes_in_flight
                ));
            }
            if p.expired.len() > super::fetch::EXPIRED_MAX {
                return Err(format!(
                    "peer {id}: {} expired blocks kept",
                    p.expired.len()
                ));
            }
        }
        if let Some(f) = self
            .inflight
            .values()
            .find(|f| !self.peers.get(&f.peer).is_some_and(|p| p.linked))
        {
            return Err(format!(
                "a block is asked of {}, which is not linked",
                f.peer
            ));
        }
        self.index.check()?;
        for (temp, path) in &self.temps {
            if self
                .applies
                .get(path)
                .and_then(|a| a.fetch.as_ref())
                .map(|f| f.temp)
                != Some(*temp)
            {
                return Err(format!(
                    "temp {temp:?} names {path}, which is not fetching it"
                ));
            }
        }
        for (l, owner) in &self.locks {
            if !self.applies.get(owner).is_some_and(|a| a.locks.contains(l)) {
                return Err(format!("{l} is locked by {owner}, which does not hold it"));
            }
        }
        if self
            .deferred
            .values()
            .any(|d| d.len() > DEFERRED_PER_PATH_MAX)
        {
            return Err("more remote records deferred for a path than the bound".into());
        }
        Ok(())
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
            bulk,
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
