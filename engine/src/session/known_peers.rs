//! The peers this node has linked with, as the host stores them (SPEC.md §8.11), so a node
//! that restarts without `--peer` finds its network again. One blob, named [`STATE_NAME`]: a
//! magic line (its format version), the postcard encoding of the (node, address) pairs, most
//! recently linked first, and the BLAKE3 hash of both; a blob that fails its hash or does not
//! decode is ignored and counted.

use bytes::Bytes;
use weft_protocol::NodeId;

use crate::state_blob;

/// The host's name for the blob.
pub(crate) const STATE_NAME: &str = "peers";

/// The blob's first bytes (format version 1).
const MAGIC: &[u8] = b"weft peers v1\n";

/// Peers linked with, most recently linked first, at most `entries_max`, each node once;
/// `dirty` once it changed since the host last stored it.
#[derive(Debug)]
pub(crate) struct KnownPeers {
    entries: Vec<(NodeId, String)>,
    entries_max: usize,
    dirty: bool,
}

impl KnownPeers {
    pub(crate) fn new(entries_max: usize) -> KnownPeers {
        KnownPeers {
            entries: Vec::new(),
            entries_max,
            dirty: false,
        }
    }

    /// `node`, listening at `addr`, linked: it goes first.
    pub(crate) fn linked(&mut self, node: NodeId, addr: &str) {
        if self
            .entries
            .first()
            .is_some_and(|(n, a)| *n == node && a == addr)
        {
            return;
        }
        self.entries.retain(|(n, _)| *n != node);
        self.entries.insert(0, (node, addr.to_owned()));
        self.entries.truncate(self.entries_max);
        self.dirty = true;
    }

    /// Entries loaded from the host go after those linked since the start.
    pub(crate) fn loaded(&mut self, loaded: Vec<(NodeId, String)>) {
        for (node, addr) in loaded {
            if self.entries.len() >= self.entries_max {
                break;
            }
            if self.entries.iter().all(|(n, _)| *n != node) {
                self.entries.push((node, addr));
            }
        }
    }

    /// Forgets `node` (the application disconnected it).
    pub(crate) fn forget(&mut self, node: &NodeId) {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| n != node);
        self.dirty |= self.entries.len() != before;
    }

    /// The blob to store, if the list changed since the last one; it counts as stored.
    pub(crate) fn take_changed(&mut self) -> Option<Bytes> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(encode(&self.entries))
    }

    /// A store failed: the list is stored again later.
    pub(crate) fn store_failed(&mut self) {
        self.dirty = true;
    }

    /// Every entry, most recently linked first.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[(NodeId, String)] {
        &self.entries
    }
}

/// `entries` as a blob.
fn encode(entries: &[(NodeId, String)]) -> Bytes {
    state_blob::seal(MAGIC, entries)
}

/// The entries in a blob, or `None` if it is not a whole, intact version-1 blob.
pub(crate) fn decode(blob: &[u8]) -> Option<Vec<(NodeId, String)>> {
    state_blob::open(blob, MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_blob::HASH_BYTES;

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn most_recently_linked_first_bounded_and_stored_only_when_changed() {
        let mut k = KnownPeers::new(2);
        assert_eq!(k.take_changed(), None);
        k.linked(node(1), "a:1");
        k.linked(node(2), "b:1");
        k.linked(node(3), "c:1");
        assert_eq!(
            k.entries(),
            &[(node(3), "c:1".into()), (node(2), "b:1".into())]
        );
        let blob = k.take_changed().expect("changed");
        assert_eq!(k.take_changed(), None, "stored: unchanged");
        k.linked(node(3), "c:1");
        assert_eq!(
            k.take_changed(),
            None,
            "the same first entry again: unchanged"
        );
        assert_eq!(decode(&blob).unwrap(), k.entries());
    }

    #[test]
    fn a_damaged_or_unknown_blob_is_refused() {
        let mut k = KnownPeers::new(4);
        k.linked(node(1), "a:1");
        let blob = k.take_changed().unwrap();
        for cut in [0, 1, MAGIC.len(), blob.len() - 1] {
            assert_eq!(decode(&blob[..cut]), None, "cut at {cut}");
        }
        let mut flipped = blob.to_vec();
        flipped[MAGIC.len() + 2] ^= 1;
        assert_eq!(decode(&flipped), None);
        let mut v2 = b"weft peers v2\n".to_vec();
        v2.extend_from_slice(&blob[MAGIC.len()..blob.len() - HASH_BYTES]);
        let hash = blake3::hash(&v2);
        v2.extend_from_slice(hash.as_bytes());
        assert_eq!(decode(&v2), None, "a newer version is not read");
    }
}
