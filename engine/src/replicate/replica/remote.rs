//! Remote records: checked (path rules, the gate, case clashes), then compared by version
//! with the local record: ignored, deferred behind a busy path, adopted through an apply,
//! or settled as a conflict (SPEC.md §22.6).

use std::collections::BTreeSet;

use weft_protocol::{
    FileEntry, FileKind, IRefuse, NodeId, PathRefusal, ReplicaMessage, Version, VersionOrder,
};

use super::{tombstone, Replica, COUNTER_HIGH_MAX, COUNTER_VALUE_MAX, DEFERRED_PER_PATH_MAX};
use crate::replicate::conflict;
use crate::replicate::paths::{self};
use crate::replicate::plan::{Apply, Install, Step};
use crate::replicate::types::{Expect, Recipient, Record, ReplicaEvent};

/// Why an entry from a peer is refused, if it is (`me`: this node's short id; `own_max`: the
/// largest counter of its own a peer's version may carry).
fn entry_refusal(e: &FileEntry, deleted: bool, me: u64, own_max: u64) -> Option<PathRefusal> {
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
    (!fits || e.mode > 7 || !version_fits(&e.version, me, own_max)).then_some(PathRefusal::BadEntry)
}

/// Whether a peer's version may be taken: well formed, with a counter, none past
/// [`COUNTER_VALUE_MAX`], and this node's own (`me`) not past `own_max` (the larger of
/// [`COUNTER_HIGH_MAX`] and the highest this node has given: only a forged record carries
/// more, and this node's next change of the path would have to go past it).
fn version_fits(v: &Version, me: u64, own_max: u64) -> bool {
    !v.counters.is_empty()
        && v.is_well_formed()
        && v.counters.iter().all(|c| c.value <= COUNTER_VALUE_MAX)
        && v.get(me) <= own_max
}

impl Replica {
    /// A record from `peer`: checked, then applied.
    pub(super) fn on_remote(
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
        let (me, own_max) = (self.me, COUNTER_HIGH_MAX.max(self.counter_high));
        let refusal = entry_refusal(&r.entry, r.deleted, me, own_max)
            .or_else(|| self.through_symlink(&r.entry.path))
            .or_else(|| {
                moved_from.as_ref().and_then(|(from, v)| {
                    paths::check_path(from)
                        .err()
                        .or((!version_fits(v, me, own_max)).then_some(PathRefusal::BadEntry))
                })
            });
        // A case-only rename (`readme.md` to `README.md`) clashes with the very path it
        // retires: that is no clash when the rename's version of it is newer than the one
        // held (refused, the deletion that came with it then left neither name here).
        let retired = |held: &str| {
            moved_from.as_ref().is_some_and(|(from, v)| {
                from == held
                    && self
                        .index
                        .get(from)
                        .is_some_and(|l| v.compare(&l.entry.version) == VersionOrder::Newer)
            })
        };
        let clash = match refusal {
            None => self
                .index
                .case_clash_on_way(&r.entry.path)
                .filter(|held| !retired(held))
                .map(str::to_string),
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
        // A rename away from a path this node ignores, or from below a symlink here, is the
        // new record alone: nothing at an ignored path is written (nor moved), and nothing
        // through a symlink.
        if moved_from.as_ref().is_some_and(|(from, _)| {
            self.ignore.is_ignored(from, is_dir) || self.through_symlink(from).is_some()
        }) {
            moved_from = None;
        }
        let sources = BTreeSet::from([peer]);
        self.apply_record(sources, r, moved_from, true);
    }

    /// `ThroughSymlink` if a directory on `path`'s way is a symlink here: nothing is ever
    /// written through one.
    pub(super) fn through_symlink(&self, path: &str) -> Option<PathRefusal> {
        self.index
            .symlink_on_way(path)
            .map(|_| PathRefusal::ThroughSymlink)
    }

    pub(super) fn defer(&mut self, sources: BTreeSet<NodeId>, r: Record) {
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
    pub(super) fn apply_record(
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
    pub(super) fn try_move(
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
        // A directory is never renamed for a peer: it would move every path under it,
        // whatever their versions here (and ignored ones). No scanner reports one moved.
        let content_there = !lf.deleted
            && lf.entry.kind != FileKind::Directory
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
    pub(super) fn adopt(&mut self, sources: BTreeSet<NodeId>, r: Record, local: Option<Record>) {
        let received = r.clone();
        self.adopt_as(sources, r, local, received);
    }

    /// Takes `r` (newer than `local`, or a conflict's winner under its merged version) at
    /// its path, for the record `received` as it came in: the apply's origin, which a
    /// newer record from the same author overtakes.
    pub(super) fn adopt_as(
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

    /// Whether the conflict copy of `loser` at `copy` is made already or owed no more: a
    /// present record is there (the copy, maybe edited since: a copy path names the loser's
    /// author and counter, i.e. one edit's content), or a deletion of the copy made after
    /// seeing it (a user removed or resolved the copy elsewhere: its version descends from
    /// the copy's, [`conflict::copy_version`]).
    pub(super) fn copy_taken(&self, copy: &str, loser: &Record) -> bool {
        self.index.get(copy).is_some_and(|c| {
            !c.deleted
                || matches!(
                    c.entry.version.compare(&conflict::copy_version(loser)),
                    VersionOrder::Newer | VersionOrder::Equal
                )
        })
    }

    /// Concurrent versions `l` (local) and `r` (remote) of one path.
    pub(super) fn conflict(&mut self, sources: BTreeSet<NodeId>, l: Record, r: Record) {
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

    pub(super) fn note_conflict(&mut self, path: &str, copy: &str) {
        self.metrics.conflicts += 1;
        self.event(ReplicaEvent::Conflict {
            path: path.to_string(),
            copy: copy.to_string(),
        });
    }
}
