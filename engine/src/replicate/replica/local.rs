//! What the host and the application ask of the folder: the scanner's local changes (a new
//! version of this node's), and the commands (resolving a conflict here; the gate's own in
//! [`super::gated`]).

use weft_protocol::{FileKind, Version};

use super::{expect_of, tombstone, Replica, EARLY_LOCAL_MAX};
use crate::replicate::conflict;
use crate::replicate::paths;
use crate::replicate::plan::{Apply, Install, Step};
use crate::replicate::types::{LocalChange, Record, ReplicaCommand, ReplicaRefusal};
use crate::time::Instant;

impl Replica {
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
                // A landed apply's records are in: handled on as any report.
                self.lands(&candidate.entry.path.clone(), Some(&candidate), false);
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
                self.lands(&path, None, false);
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
                let moved = Record {
                    entry: to.clone(),
                    deleted: false,
                };
                if self.lands(&to.path.clone(), Some(&moved), true) {
                    // A move applied before a crash: both ends judged on their own now find
                    // its records.
                    self.handle_local(now, LocalChange::Changed(to));
                    return self.handle_local(now, LocalChange::Removed { path: from });
                }
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
            ReplicaCommand::SetIgnoreRules(rules) => {
                self.set_ignore_rules(rules);
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
            // One rename over what is at the path: if the kept copy changed (or went) since
            // the scan, nothing has moved yet (a removal first left the path empty).
            let steps = vec![Step::Replace {
                from: keep.clone(),
                expect: self.expect_for(Some(&k)),
                over: self.expect_at(&path, current.as_ref()),
            }];
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
}
