//! The persisted blob of a folder (postcard): the index, the local sequence, the index id,
//! each peer's (index id, sequence seen), and the applies in progress with which blocks of
//! their temps are written.

use serde::{Deserialize, Serialize};
use weft_protocol::{FileEntry, NodeId, Version};

use super::plan::Apply;

/// The blob's format version.
pub(crate) const STATE_FORMAT: u8 = 1;

/// One persisted record: its entry, whether it is a deletion, its rename annotation.
pub(crate) type PersistedRecord = (FileEntry, bool, Option<(String, Version)>);

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
    /// Records: entry, deleted, rename annotation.
    pub(crate) records: Vec<PersistedRecord>,
    /// Peers: id, their index id, the highest sequence seen under it.
    pub(crate) peers: Vec<(NodeId, u64, u64)>,
    /// Applies in progress, by path.
    pub(crate) applies: Vec<(String, Apply)>,
}

impl PersistedState {
    /// The blob.
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serializing into a Vec cannot fail: no maps with non-string keys, no unsized
        // sequences.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// The state in `bytes`, if it is one of this format.
    pub(crate) fn decode(bytes: &[u8]) -> Option<PersistedState> {
        let s: PersistedState = postcard::from_bytes(bytes).ok()?;
        (s.format == STATE_FORMAT).then_some(s)
    }
}
