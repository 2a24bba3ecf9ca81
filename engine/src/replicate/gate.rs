//! A folder's gate: which peers' records it takes as any folder does, and what it takes from
//! the others (a drop's folder, SPEC.md §24: the signed version says what may land).
//!
//! A gated folder takes a record from a peer outside [`Gate::trusted`] only if the accepted
//! version lists exactly that content at that path (kind, symlink target, mode bits, size and
//! every block), or if it deletes a path the version does not list. Anything else is left
//! out, silently: the peer may simply hold another version. A read-only copy (a subscriber's)
//! reports its own changes that the version does not hold and never indexes them, so they
//! are never announced.

use std::collections::{BTreeMap, BTreeSet};

use weft_protocol::{FileEntry, NodeId};

use super::Record;

/// What a gated folder accepts. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    /// Peers whose records pass as in an ungated folder (a drop's other owners, at an owner).
    pub trusted: BTreeSet<NodeId>,
    /// The accepted version's files by path: `path`, `kind`, `target`, `mode`, `size` and
    /// `blocks` count; the other fields are ignored.
    pub files: BTreeMap<String, FileEntry>,
    /// Local changes the version does not hold are reported ([`super::ReplicaEvent::LocalEditRefused`])
    /// and never indexed (a subscriber's copy).
    pub read_only: bool,
}

impl Gate {
    /// Whether `r`, from `peer`, may be judged as in an ungated folder.
    pub(super) fn admits(&self, peer: &NodeId, r: &Record) -> bool {
        self.trusted.contains(peer) || self.holds(r)
    }

    /// Whether the version holds what `r` says is at its path: that content, or nothing.
    pub(super) fn holds(&self, r: &Record) -> bool {
        match self.files.get(&r.entry.path) {
            None => r.deleted,
            Some(f) => !r.deleted && same_content(f, &r.entry),
        }
    }

    /// Whether the version lists `path`.
    pub(super) fn lists(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }
}

/// The content a version signs: kind, symlink target, mode bits, size and blocks.
fn same_content(a: &FileEntry, b: &FileEntry) -> bool {
    a.kind == b.kind
        && a.target == b.target
        && a.mode == b.mode
        && a.size == b.size
        && a.blocks == b.blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::{Block, FileKind, Version};

    fn entry(path: &str, hash: u8) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind: FileKind::File,
            target: String::new(),
            mode: 6,
            size: 3,
            mtime_ms: 1,
            modified_by: 1,
            version: Version::default(),
            sequence: 1,
            blocks: vec![Block {
                offset: 0,
                len: 3,
                hash: [hash; 32],
            }],
        }
    }

    fn record(e: FileEntry, deleted: bool) -> Record {
        Record { entry: e, deleted }
    }

    #[test]
    fn only_the_listed_content_or_the_deletion_of_an_unlisted_path_passes() {
        let owner = NodeId([1; 32]);
        let stranger = NodeId([2; 32]);
        let gate = Gate {
            trusted: BTreeSet::from([owner]),
            files: BTreeMap::from([("a".to_string(), entry("a", 7))]),
            read_only: true,
        };
        let mut other_meta = entry("a", 7);
        other_meta.mtime_ms = 99;
        other_meta.sequence = 5;
        assert!(gate.admits(&stranger, &record(other_meta, false)));
        assert!(!gate.admits(&stranger, &record(entry("a", 8), false)));
        let mut mode = entry("a", 7);
        mode.mode = 7;
        assert!(!gate.admits(&stranger, &record(mode, false)));
        assert!(!gate.admits(&stranger, &record(entry("a", 7), true)));
        assert!(!gate.admits(&stranger, &record(entry("b", 7), false)));
        assert!(gate.admits(&stranger, &record(entry("b", 7), true)));
        assert!(gate.admits(&owner, &record(entry("a", 8), false)));
        assert!(gate.lists("a") && !gate.lists("b"));
    }
}
