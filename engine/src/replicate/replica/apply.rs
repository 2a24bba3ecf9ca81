//! Applies: the storage steps that carry a record out at a path, started, advanced step by
//! step as the host answers, then installed, or dropped and their origin applied again.

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;
use weft_protocol::{FileKind, NodeId, Version, VersionOrder};

use super::{expect_of, Purpose, Replica, BACKOFF_MAX_MS};
use crate::replicate::conflict;
use crate::replicate::plan::{Apply, BlockSlot, BlockState, Fetch, Install, Persisted, Step};
use crate::replicate::types::{
    Expect, Record, ReplicaEvent, StorageRequest, StorageResult, TempId,
};
use crate::time::Duration;

impl Replica {
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
    pub(super) fn expect_at(&self, path: &str, r: Option<&Record>) -> Expect {
        self.disk.get(path).copied().unwrap_or_else(|| expect_of(r))
    }

    /// The host reported `now` at `path` where the steps planned for it expect `was` (only
    /// the mtime changed, the content did not): the steps expect what is there now, else
    /// their storage checks would fail forever.
    pub(super) fn re_expect(&mut self, path: &str, was: Expect, now: Expect) {
        if was == now {
            return;
        }
        for (at, a) in self.applies.iter_mut() {
            // A move from `path` that sets the moved file's mode after: that step expects
            // what was at `path` too.
            let moves_from_path = a
                .steps
                .iter()
                .any(|s| matches!(s, Step::Rename { from, .. } if from == path));
            for step in a.steps.iter_mut() {
                let expect = match step {
                    Step::SetMode { expect, .. } if moves_from_path => expect,
                    Step::Rename { from, expect, .. } | Step::Replace { from, expect, .. }
                        if from == path =>
                    {
                        expect
                    }
                    Step::Replace { over, .. } if at == path => over,
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
    pub(super) fn emptied(&self, path: &str) -> bool {
        self.disk.get(path) == Some(&Expect::Nothing)
            && self.index.get(path).is_some_and(|r| !r.deleted)
    }

    /// Installs `record` for content already at its path, remembering what is on disk there
    /// if the record says otherwise.
    pub(super) fn install_in_place(&mut self, install: Install) {
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

    /// Whether the apply at `path` can do nothing until a peer announces something: it
    /// fetches, and no block it lacks has a linked source that did not answer NOTFOUND
    /// (nor served corrupt blocks enough to be disconnected).
    pub(super) fn is_stalled(&self, a: &Apply) -> bool {
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
                    // No local copy at this length (one is read only at the length wanted).
                    let local = self
                        .index
                        .locate(&b.hash)
                        .is_some_and(|(_, held)| held.len == b.len);
                    (!local || self.local_misses.contains(&b.hash))
                        && a.sources.iter().all(|s| {
                            !self.peers.get(s).is_some_and(|p| {
                                p.linked && p.mismatches < self.config.mismatches_before_disconnect
                            }) || self
                                .not_found
                                .get(&(b.hash, b.len))
                                .is_some_and(|n| n.contains(s))
                        })
                }
            })
    }

    /// Whether `path` is held (as its path or a lock) by a stalled apply: records deferred
    /// for it wait for a source to come back, like the apply.
    pub(super) fn held_by_stalled(&self, path: &str) -> bool {
        let owner = self.locks.get(path).map_or(path, String::as_str);
        self.applies.get(owner).is_some_and(|a| self.is_stalled(a))
    }

    /// Whether an apply holds `path`.
    pub(super) fn is_busy(&self, path: &str) -> bool {
        self.applies.contains_key(path) || self.locks.contains_key(path)
    }

    /// Starts `a` at `path` (which is not busy).
    pub(super) fn start(&mut self, path: String, mut a: Apply) {
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
        // A peer's record never carries a counter of this node's past both COUNTER_HIGH_MAX
        // and `counter_high` (it is refused), so every install may raise it.
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
        if a.landed {
            self.land(path);
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
            Some(Step::Remove { .. } | Step::Replace { .. }) if self.waits_to_feed(path) => return,
            Some(Step::Remove { expect }) => StorageRequest::Remove {
                path: path.to_string(),
                expect,
            },
            Some(Step::Rename {
                from, to, expect, ..
            }) => StorageRequest::Rename {
                from,
                to,
                expect,
                over: Expect::Nothing,
            },
            Some(Step::Replace { from, expect, over }) => StorageRequest::Rename {
                from,
                to: path.to_string(),
                expect,
                over,
            },
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
        if self.waits_for_persist(path) {
            return;
        }
        if let Some(a) = self.applies.get_mut(path) {
            a.outstanding = true;
        }
        self.request(Purpose::Step(path.to_string()), request);
    }

    /// Whether the apply at `path`, about to remove or replace the file there, must wait:
    /// the file still has blocks to give another file being fetched
    /// ([`Replica::feeds_a_fetch`]). It stays until they are copied (or found unreadable),
    /// and the apply looks again after `full_round_interval` (the next scheduling round).
    pub(super) fn waits_to_feed(&mut self, path: &str) -> bool {
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
    pub(super) fn fill_temp(&mut self, path: &str) -> bool {
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
    pub(super) fn finish(&mut self, path: &str) {
        let Some(a) = self.applies.remove(path) else {
            return;
        };
        for i in a.installs {
            self.install(i);
        }
        self.release(path, a.fetch.map(|f| f.temp), &a.locks);
    }

    /// The scanner found at `path` what the apply there installs (`found`, `None` for
    /// nothing): its steps were done, before a crash whose restored state still names the
    /// apply (its steps wait for that, [`Replica::waits_for_persist`]). That is no local
    /// edit: the apply's records go in at once (so the report, handled on as usual, finds
    /// them, and a later edit descends from them), and the apply ends, at once or, with a
    /// step at the host, at its answer, whatever it is. An apply that also installs at other
    /// paths (a move's source) lands only if `others_done` (the scanner reported them as the
    /// apply leaves them). Whether it landed.
    pub(super) fn lands(&mut self, path: &str, found: Option<&Record>, others_done: bool) -> bool {
        let Some(a) = self.applies.get_mut(path).filter(|a| !a.landed) else {
            return false;
        };
        if !others_done && a.installs.iter().any(|i| i.entry.path != path) {
            return false;
        }
        let Some(target) = a.installs.iter().find(|i| i.entry.path == path) else {
            return false;
        };
        let done = match found {
            Some(r) => !target.deleted && conflict::same_content(&target.record(), r),
            None => target.deleted,
        };
        if !done {
            return false;
        }
        a.landed = true;
        let installs = core::mem::take(&mut a.installs);
        for i in installs {
            self.install(i);
        }
        self.advance(path);
        true
    }

    /// Ends the landed apply at `path` (its records are in; its temp, if the resumed fetch
    /// made it again, is discarded). A local change since overtook nothing: it was judged
    /// against the apply's records.
    fn land(&mut self, path: &str) {
        let Some(a) = self.applies.remove(path) else {
            return;
        };
        let temp = a.fetch.as_ref().map(|f| f.temp);
        if let Some(t) = temp {
            self.request(Purpose::Discard, StorageRequest::DiscardTemp { temp: t });
        }
        self.release(path, temp, &a.locks);
    }

    pub(super) fn release(&mut self, path: &str, temp: Option<TempId>, locks: &[String]) {
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

    pub(super) fn redo_deferred(&mut self, path: &str) {
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
    pub(super) fn cancel(&mut self, path: &str) {
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
    pub(super) fn abandon(&mut self, path: &str) {
        self.drop_fetch(path, |r| r.entry.path == path);
    }

    /// Drops the fetch at `path` for `newer` (deferred for it): its origin records that
    /// `newer` descends from are dropped, the others applied again, and the deferred records
    /// of its paths applied.
    pub(super) fn supersede(&mut self, path: &str, newer: &Version) {
        self.drop_fetch(path, |r| {
            r.entry.path == path && newer.compare(&r.entry.version) == VersionOrder::Newer
        });
    }

    /// Drops the apply at `path`: its temp is discarded, its origin records that `dropped`
    /// names are forgotten, the others applied again, then the deferred records of its
    /// paths.
    pub(super) fn drop_fetch(&mut self, path: &str, dropped: impl Fn(&Record) -> bool) {
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
    pub(super) fn remove_fetch(&mut self, path: &str) -> Option<Apply> {
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
    pub(super) fn give_way(&mut self) {
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
    pub(super) fn can_serve(&self, sources: &BTreeSet<NodeId>, r: &Record) -> bool {
        let has_content = !r.deleted && r.entry.kind == FileKind::File;
        !has_content
            || sources.iter().any(|s| {
                self.peers.get(s).is_some_and(|p| {
                    p.linked && p.mismatches < self.config.mismatches_before_disconnect
                }) && r.entry.blocks.iter().all(|b| {
                    !self
                        .not_found
                        .get(&(b.hash, b.len))
                        .is_some_and(|n| n.contains(s))
                })
            })
    }

    /// A local change at `path` overtakes any apply holding it.
    pub(super) fn overtake(&mut self, path: &str) {
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

    pub(super) fn backoff(&mut self, path: &str) {
        let now = self.now;
        if let Some(a) = self.applies.get_mut(path) {
            a.backoff_ms = (a.backoff_ms * 2).clamp(100, BACKOFF_MAX_MS);
            let at = now + Duration::from_millis(a.backoff_ms);
            a.retry_at = Some(at);
            self.retries.insert((at, path.to_string()));
        }
    }

    pub(super) fn on_step_done(&mut self, path: &str, result: StorageResult) {
        let Some(a) = self.applies.get_mut(path) else {
            return;
        };
        a.outstanding = false;
        // Its blocks may be wanted again (or for the first time, if a fetch comes next).
        self.fetch_dirty = true;
        if a.landed {
            return self.advance(path);
        }
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
                Step::Replace { from, expect, .. } => {
                    let moved = self.disk.insert(from.clone(), Expect::Nothing);
                    self.disk.insert(path.to_string(), moved.unwrap_or(*expect));
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
        let changed = result == StorageResult::Changed;
        match (&step, result) {
            (Step::Replace { .. }, StorageResult::NotFound | StorageResult::Changed) => {
                // A resolve whose kept copy or path changed (or went) since it was asked
                // for: nothing moved, the path and the copies stay as they are (still in
                // conflict).
                self.cancel(path);
            }
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
                // The stored state holds the move, which a restart's scan would not find.
                a.persisted = Persisted::No;
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
            (Step::Remove { .. }, StorageResult::Failed(_))
                if self.deletes(path) && self.settled_present_under(path) =>
            {
                self.keep_directory(path)
            }
            (Step::Remove { .. }, StorageResult::Failed(_))
                if self.replaces_directory(path) && self.settled_present_under(path) =>
            {
                self.keep_directory_against(path)
            }
            _ if changed && self.planned_against_other(path, &step) => {
                // Planned against what the index no longer says is there: a local change
                // overtook it while the step was with the host (then at once: a stop before
                // the retry persisted it unmarked), or before a restart it was resumed after.
                // Waiting for the scanner would be for good (it reported that change, and
                // reports nothing more): planned again against the index.
                if let Some(a) = self.applies.get_mut(path) {
                    a.stale = true;
                }
                self.advance(path);
            }
            _ => {
                // Changed (the scanner will report what is there) or Failed: later.
                self.backoff(path);
            }
        }
    }

    /// Whether the apply at `path` was overtaken by a local change, or its `step` expects
    /// other than what the index (and the host's last report) now says is at its path.
    fn planned_against_other(&self, path: &str, step: &Step) -> bool {
        if self.applies.get(path).is_some_and(|a| a.stale) {
            return true;
        }
        match step {
            Step::Remove { expect } | Step::SetMode { expect, .. } | Step::Fetch { expect } => {
                *expect != self.expect_at(path, self.index.get(path))
            }
            Step::Rename { from, expect, .. } => {
                *expect != self.expect_at(from, self.index.get(from))
            }
            Step::Replace { .. } | Step::MakeDir { .. } | Step::MakeSymlink { .. } => false,
        }
    }

    /// Whether the apply at `path` installs a deletion there (not a file or symlink that
    /// takes a directory's place: that is a conflict of its own, §22.6).
    fn deletes(&self, path: &str) -> bool {
        self.applies.get(path).is_some_and(|a| {
            a.installs.iter().any(|i| i.deleted && i.entry.path == path)
                && !a
                    .installs
                    .iter()
                    .any(|i| !i.deleted && i.entry.path == path)
        })
    }

    /// Whether the apply at `path` puts a file or symlink where the index holds a present
    /// directory: a newer version of the path, from a node that deleted the directory and
    /// made a file there, which the directory outranks as it outranks a deletion when records
    /// present here lie under it.
    fn replaces_directory(&self, path: &str) -> bool {
        self.present_directory(path).is_some()
            && self.applies.get(path).is_some_and(|a| {
                a.installs.iter().any(|i| {
                    !i.deleted && i.entry.path == path && i.entry.kind != FileKind::Directory
                })
            })
    }

    /// The index's record at `path`, if a present directory.
    fn present_directory(&self, path: &str) -> Option<Record> {
        self.index
            .get(path)
            .filter(|l| !l.deleted && l.entry.kind == FileKind::Directory)
            .cloned()
    }

    /// Whether a record present here, with no apply under way at its path (one whose own
    /// deletion is only slower does not count), lies under `path` (a directory). Scans the
    /// index: it is asked only when a directory's removal failed.
    fn settled_present_under(&self, path: &str) -> bool {
        let inside = format!("{path}/");
        self.index.iter().any(|r| {
            !r.deleted && r.entry.path.starts_with(&inside) && !self.is_busy(&r.entry.path)
        })
    }

    /// The apply at `path` puts a peer's newer file or symlink where a directory is that
    /// cannot go ([`Self::replaces_directory`]). The directory stays, under its version bumped
    /// by this node, and the two are settled as a conflict (§22.6): the directory wins, and the
    /// peer's file goes to its conflict copy, here fetched and at the peer moved there (kept
    /// against it as against a deletion, the file, newer content, was left in no copy).
    fn keep_directory_against(&mut self, path: &str) {
        let Some(r) = self.applies.get(path).and_then(|a| {
            a.origin
                .iter()
                .find(|r| r.entry.path == path && !r.deleted)
                .cloned()
        }) else {
            return self.keep_directory(path);
        };
        let Some(local) = self.present_directory(path) else {
            return self.backoff(path);
        };
        let Some(a) = self.applies.remove(path) else {
            return;
        };
        // The file that was to take its place was fetched: its temp goes.
        if let Some(t) = a.fetch.as_ref().map(|f| f.temp) {
            self.request(Purpose::Discard, StorageRequest::DiscardTemp { temp: t });
            self.temps.remove(&t);
        }
        for l in &a.locks {
            self.locks.remove(l);
        }
        self.metrics.directories_kept += 1;
        self.mark_dirty();
        // Bumped here, the directory is concurrent with the file (it does not descend from
        // it, so the peer holding the file settles the conflict and keeps a copy of it).
        let mut l = local;
        // Past this node's counter in the file too (one a node that lost its state gave it):
        // else the directory would be older than the file, not concurrent.
        let high = self.counter_high.max(r.entry.version.get(self.me));
        l.entry.version = l.entry.version.bumped_past(self.me, high);
        l.entry.modified_by = self.me;
        self.install(Install {
            entry: l.entry.clone(),
            deleted: false,
            moved_from: None,
            remote: false,
        });
        self.conflict(a.sources.clone(), l, r);
        for other in a.origin.iter().filter(|o| o.entry.path != path) {
            self.apply_remote(a.sources.clone(), other.clone(), None);
        }
        self.redo_deferred(path);
        for l in &a.locks {
            self.redo_deferred(l);
        }
    }

    /// The apply at `path` deletes a directory that cannot go: records present under it here
    /// (made since the deletion, or not deleted by it) outrank it, as a present record
    /// outranks a deletion. The directory stays, under a version past the deletion's and its
    /// own, so the peer that deleted it makes it again and takes what is in it. (Its removal
    /// was retried for good, and the peer's copy of what is in it never found a parent.)
    fn keep_directory(&mut self, path: &str) {
        let Some(local) = self.present_directory(path) else {
            return self.backoff(path);
        };
        let Some(a) = self.applies.remove(path) else {
            return;
        };
        let mut version = local.entry.version.clone();
        for r in a.origin.iter().filter(|r| r.entry.path == path) {
            version = version.merged(&r.entry.version);
        }
        let mut e = local.entry;
        e.version = version.bumped_past(self.me, self.counter_high);
        e.modified_by = self.me;
        self.metrics.directories_kept += 1;
        self.install(Install {
            entry: e,
            deleted: false,
            moved_from: None,
            remote: false,
        });
        for l in &a.locks {
            self.locks.remove(l);
        }
        self.mark_dirty();
        self.redo_deferred(path);
        for l in &a.locks {
            self.redo_deferred(l);
        }
    }
}
