//! The persisted blob of a folder (postcard): the index, the local sequence, the index id,
//! each peer's (index id, sequence seen), the applies in progress with which blocks of
//! their temps are written, and the remote records deferred behind them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use weft_protocol::{FileEntry, NodeId, Version};

use super::plan::Apply;
use super::types::Record;

/// The blob's format version.
pub(crate) const STATE_FORMAT: u8 = 3;

/// The format before the ignore rules were kept: still read (as having none).
const STATE_FORMAT_V2: u8 = 2;

/// The format before `counter_high` and deferred records were kept: still read.
const STATE_FORMAT_V1: u8 = 1;

/// One persisted record: its entry, whether it is a deletion, its rename annotation.
pub(crate) type PersistedRecord = (FileEntry, bool, Option<(String, Version)>);

/// The records deferred at one path, each with its sources.
pub(crate) type DeferredAt = (String, Vec<(BTreeSet<NodeId>, Record)>);

/// Everything a restart needs.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PersistedState {
    /// [`STATE_FORMAT`].
    pub(crate) format: u8,
    /// This folder's index id.
    pub(crate) index_id: u64,
    /// The highest sequence given.
    pub(crate) sequence: u64,
    /// The next temp number.
    pub(crate) next_temp: u64,
    /// The highest counter of this node's own given in a version (it jumps at each load).
    pub(crate) counter_high: u64,
    /// Records: entry, deleted, rename annotation.
    pub(crate) records: Vec<PersistedRecord>,
    /// Peers: id, their index id, the highest sequence seen under it.
    pub(crate) peers: Vec<(NodeId, u64, u64)>,
    /// Applies in progress, by path.
    pub(crate) applies: Vec<(String, Apply)>,
    /// Remote records deferred behind a busy path, by path, with their sources. Their
    /// peers' sequences are already counted as seen: a restart that forgot them would never
    /// be sent them again.
    pub(crate) deferred: Vec<DeferredAt>,
    /// The lines of the ignore rules in force (`IgnoreRules::lines`): rules that change
    /// while the node is down are told apart from these at the next start, so that records
    /// dropped while their path was ignored are asked for again.
    pub(crate) ignore_lines: Vec<String>,
}

/// Format 1: the same without `counter_high` and `deferred`.
#[derive(Deserialize)]
struct PersistedStateV1 {
    format: u8,
    index_id: u64,
    sequence: u64,
    next_temp: u64,
    records: Vec<PersistedRecord>,
    peers: Vec<(NodeId, u64, u64)>,
    applies: Vec<(String, Apply)>,
}

impl PersistedState {
    /// The blob.
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serializing into a Vec cannot fail: no maps with non-string keys, no unsized
        // sequences.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The state in `bytes`, if it is of this format or format 1 (postcard writes the
    /// leading `u8` as one byte).
    pub(crate) fn decode(bytes: &[u8]) -> Option<PersistedState> {
        match *bytes.first()? {
            STATE_FORMAT => postcard::from_bytes(bytes).ok(),
            STATE_FORMAT_V2 => {
                // Format 3 with no ignore lines: an empty list, one zero byte, at the end.
                let mut v3 = bytes.to_vec();
                v3.push(0);
                let s: PersistedState = postcard::from_bytes(&v3).ok()?;
                Some(PersistedState {
                    format: STATE_FORMAT,
                    ..s
                })
            }
            STATE_FORMAT_V1 => {
                let s: PersistedStateV1 = postcard::from_bytes(bytes).ok()?;
                (s.format == STATE_FORMAT_V1).then_some(PersistedState {
                    format: STATE_FORMAT,
                    index_id: s.index_id,
                    sequence: s.sequence,
                    next_temp: s.next_temp,
                    counter_high: 0,
                    records: s.records,
                    peers: s.peers,
                    applies: s.applies,
                    deferred: Vec::new(),
                    ignore_lines: Vec::new(),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use weft_protocol::{FileKind, Version};

    use super::*;

    fn state(format: u8, deferred: Vec<DeferredAt>) -> PersistedState {
        let entry = FileEntry {
            path: "a.txt".into(),
            kind: FileKind::File,
            target: String::new(),
            mode: 6,
            size: 3,
            mtime_ms: 7,
            modified_by: 9,
            version: Version::default(),
            sequence: 4,
            blocks: Vec::new(),
        };
        PersistedState {
            format,
            index_id: 11,
            sequence: 4,
            next_temp: 2,
            counter_high: 0,
            records: vec![(entry.clone(), false, None)],
            peers: vec![(NodeId([1; 32]), 5, 6)],
            applies: Vec::new(),
            deferred,
            ignore_lines: vec!["*.log".into()],
        }
    }

    #[test]
    fn deferred_records_survive_the_blob_and_a_format_1_blob_still_loads() {
        let held = state(STATE_FORMAT, Vec::new()).records[0].0.clone();
        let deferred = vec![(
            "a.txt".to_string(),
            vec![(
                BTreeSet::from([NodeId([2; 32])]),
                Record {
                    entry: held,
                    deleted: true,
                },
            )],
        )];
        let back = PersistedState::decode(&state(STATE_FORMAT, deferred.clone()).encode())
            .expect("decodes");
        assert_eq!(back.deferred, deferred);
        assert_eq!(back.ignore_lines, ["*.log"]);
        // Format 2 is format 3 without the ignore lines (the last list).
        let mut v2 = state(STATE_FORMAT_V2, Vec::new());
        v2.ignore_lines.clear();
        let mut v2 = v2.encode();
        assert_eq!(v2.pop(), Some(0));
        let old = PersistedState::decode(&v2).expect("a format 2 blob loads");
        assert_eq!((old.format, old.index_id), (STATE_FORMAT, 11));
        assert!(old.ignore_lines.is_empty());
        // Format 1 is format 2 without `counter_high` (0: one zero byte after the three
        // one-byte varints before it) and the trailing list (empty: one zero byte).
        let mut v1 = state(STATE_FORMAT_V1, Vec::new());
        v1.ignore_lines.clear();
        let mut v1 = v1.encode();
        assert_eq!(v1.pop(), Some(0));
        assert_eq!(v1.pop(), Some(0));
        assert_eq!(v1.remove(4), 0);
        let old = PersistedState::decode(&v1).expect("a format 1 blob loads");
        assert_eq!(
            (old.format, old.index_id, old.records.len()),
            (STATE_FORMAT, 11, 1)
        );
        assert!(old.deferred.is_empty());
        assert_eq!(old.peers, vec![(NodeId([1; 32]), 5, 6)]);
        // Another format, or a damaged blob, is not read.
        let mut other = state(STATE_FORMAT, Vec::new()).encode();
        other[0] = 9;
        assert!(PersistedState::decode(&other).is_none());
        assert!(PersistedState::decode(&v1[..v1.len() - 3]).is_none());
    }

    /// A version merged past the wire's counter limit (kept, never announced) is persisted
    /// and read back whole: only the wire's decoding stops at the limit.
    #[test]
    fn a_version_past_the_wire_limit_survives_the_blob_whole() {
        let mut s = state(STATE_FORMAT, Vec::new());
        let counters = (1..=3 * weft_protocol::VERSION_COUNTERS_MAX as u64)
            .map(|node| weft_protocol::Counter { node, value: 1 })
            .collect();
        s.records[0].0.version = Version { counters };
        s.records[0].2 = Some(("b.txt".into(), s.records[0].0.version.clone()));
        let back = PersistedState::decode(&s.encode()).expect("decodes");
        assert_eq!(back.records, s.records);
    }
}
