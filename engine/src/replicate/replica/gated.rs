//! A gated copy (a drop's folder, SPEC.md §24): a read-only copy holds what its accepted
//! version lists and nothing else, refuses local edits, and can put them back.

use std::collections::BTreeSet;

use weft_protocol::{FileKind, NodeId};

use super::{expect_of, tombstone, Replica};
use crate::replicate::conflict;
use crate::replicate::plan::{Apply, Step};
use crate::replicate::types::{Expect, Record, ReplicaEvent};
use crate::time::Instant;

impl Replica {
    /// Replaces the folder's gate (a drop accepted a new version, SPEC.md §24): every linked
    /// peer is asked for its whole index again, since records the old gate left out may pass
    /// now.
    pub fn set_gate(&mut self, now: Instant, gate: crate::replicate::Gate) {
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
    pub(super) fn refuse_local_edit(&mut self, path: &str, record: Option<&Record>) -> bool {
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

    /// Paths where this read-only copy refused a local edit and holds other content than its
    /// version lists (what [`Self::revert`] would put back), in order.
    pub fn refused_paths(&self) -> impl Iterator<Item = &str> + '_ {
        self.refused.iter().map(String::as_str)
    }

    /// At a read-only copy (a drop's subscriber), puts back what the version lists wherever
    /// a local edit was refused, as Syncthing's "revert local changes" does: a listed file is
    /// fetched again from the linked peers over what is there, and what the version does not
    /// list is removed. A path an apply holds is left to it, and stays refused (a later revert
    /// takes it). Returns how many paths it took.
    pub fn revert(&mut self, now: Instant) -> usize {
        self.now = now;
        let Some(gate) = self.config.gate.clone().filter(|g| g.read_only) else {
            return 0;
        };
        let linked = self.linked_peers();
        let mut taken = 0;
        let mut left = BTreeSet::new();
        for path in std::mem::take(&mut self.refused) {
            if self.is_busy(&path) {
                left.insert(path);
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
        self.refused.extend(left);
        taken
    }

    /// Whether a read-only gate takes `r` over `l` whatever their versions: the accepted
    /// version holds `r` and not `l` (a drop's subscriber holds what its owners signed,
    /// never a conflict copy).
    pub(super) fn gate_prefers(&self, r: &Record, l: &Record) -> bool {
        self.config
            .gate
            .as_ref()
            .is_some_and(|g| g.read_only && g.holds(r) && !g.holds(l))
    }

    /// At a read-only gated copy (a drop's subscriber), a present record at `path` that the
    /// accepted version does not list is removed, under its own version (every such copy
    /// prefers the deletion, [`Self::gate_prefers`]): the copy holds what the version lists
    /// and nothing else. A directory that still holds present records is left for later.
    pub(super) fn remove_unlisted(&mut self, path: &str) {
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
}
