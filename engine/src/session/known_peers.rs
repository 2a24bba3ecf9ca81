//! The peers this node has linked with, as the host stores them (SPEC.md §8.11), so a node
//! that restarts without `--peer` finds its network again. One blob, named [`STATE_NAME`]: a
//! magic line (its format version), the postcard encoding of the (node, address, chosen)
//! entries in their order, and the BLAKE3 hash of both; a blob that fails its hash or does
//! not decode is ignored and counted.
//!
//! Peers this node chose come first (reached by dialing a configured address or one given by
//! `Command::Connect`) and are never pushed out by the others (peers that dialed in, or that
//! this node dialed at an address some peer gave it, as discovery does): anyone can open many
//! inbound links, or announce many addresses, under fresh ids (Sybils), and a list they filled
//! would be all a restarted node redials.

use bytes::Bytes;
use weft_protocol::NodeId;

use crate::state_blob;

/// The host's name for the blob.
pub(crate) const STATE_NAME: &str = "peers";

/// The blob's first bytes (format version 2: each entry says whether this node chose it).
const MAGIC: &[u8] = b"weft peers v2\n";

/// Format version 1's first bytes: (node, address) pairs, read as peers not chosen.
const MAGIC_V1: &[u8] = b"weft peers v1\n";

/// One saved peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct KnownPeer {
    /// Its node id.
    pub(crate) node: NodeId,
    /// Its listen address.
    pub(crate) addr: String,
    /// Whether this node chose it: reached by dialing a configured address or one given by
    /// `Command::Connect` (on its last link, or any before it).
    pub(crate) chosen: bool,
}

/// Peers linked with, at most `entries_max`, each node once: those this node chose first,
/// then the others, each group most recently linked first; `dirty` once it changed
/// since the host last stored it.
#[derive(Debug)]
pub(crate) struct KnownPeers {
    entries: Vec<KnownPeer>,
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

    /// `node`, listening at `addr`, linked (`chosen`: by dialing an address this node was
    /// given to dial): it goes first of its group. A node once chosen stays among the chosen.
    pub(crate) fn linked(&mut self, node: NodeId, addr: &str, chosen: bool) {
        let was_chosen = self.entries.iter().any(|e| e.node == node && e.chosen);
        let entry = KnownPeer {
            node,
            addr: addr.to_owned(),
            chosen: chosen || was_chosen,
        };
        let at = if entry.chosen {
            0
        } else {
            self.entries.iter().take_while(|e| e.chosen).count()
        };
        if self.entries.get(at) == Some(&entry) {
            return;
        }
        self.entries.retain(|e| e.node != node);
        let at = at.min(self.entries.len());
        self.entries.insert(at, entry);
        self.entries.truncate(self.entries_max);
        self.dirty = true;
    }

    /// Entries loaded from the host go after those of their group linked since the start.
    pub(crate) fn loaded(&mut self, loaded: Vec<KnownPeer>) {
        for peer in loaded {
            if self.entries.iter().any(|e| e.node == peer.node) {
                continue;
            }
            let at = if peer.chosen {
                self.entries.iter().take_while(|e| e.chosen).count()
            } else {
                self.entries.len()
            };
            self.entries.insert(at, peer);
        }
        self.entries.truncate(self.entries_max);
    }

    /// Forgets `node` (the application disconnected it).
    pub(crate) fn forget(&mut self, node: &NodeId) {
        let before = self.entries.len();
        self.entries.retain(|e| e.node != *node);
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

    /// Every entry, in order.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[KnownPeer] {
        &self.entries
    }
}

/// `entries` as a blob.
fn encode(entries: &[KnownPeer]) -> Bytes {
    state_blob::seal(MAGIC, entries)
}

/// The entries in a blob, or `None` if it is not a whole, intact blob of version 2 or 1.
pub(crate) fn decode(blob: &[u8]) -> Option<Vec<KnownPeer>> {
    if let Some(entries) = state_blob::open(blob, MAGIC) {
        return Some(entries);
    }
    let pairs: Vec<(NodeId, String)> = state_blob::open(blob, MAGIC_V1)?;
    Some(
        pairs
            .into_iter()
            .map(|(node, addr)| KnownPeer {
                node,
                addr,
                chosen: false,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_blob::HASH_BYTES;

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    fn entry(b: u8, addr: &str, chosen: bool) -> KnownPeer {
        KnownPeer {
            node: node(b),
            addr: addr.into(),
            chosen,
        }
    }

    #[test]
    fn most_recently_linked_first_bounded_and_stored_only_when_changed() {
        let mut k = KnownPeers::new(2);
        assert_eq!(k.take_changed(), None);
        k.linked(node(1), "a:1", true);
        k.linked(node(2), "b:1", true);
        k.linked(node(3), "c:1", true);
        assert_eq!(k.entries(), &[entry(3, "c:1", true), entry(2, "b:1", true)]);
        let blob = k.take_changed().expect("changed");
        assert_eq!(k.take_changed(), None, "stored: unchanged");
        k.linked(node(3), "c:1", true);
        assert_eq!(
            k.take_changed(),
            None,
            "the same first entry again: unchanged"
        );
        assert_eq!(decode(&blob).unwrap(), k.entries());
    }

    #[test]
    fn peers_not_chosen_never_push_out_chosen_ones() {
        let mut k = KnownPeers::new(3);
        k.linked(node(1), "a:1", true);
        k.linked(node(2), "b:1", true);
        // Many links under fresh ids: they share what the chosen ones leave.
        for sybil in 10..40 {
            k.linked(node(sybil), "x:1", false);
        }
        assert_eq!(
            k.entries(),
            &[
                entry(2, "b:1", true),
                entry(1, "a:1", true),
                entry(39, "x:1", false)
            ]
        );
        // A chosen peer that later links otherwise stays among the chosen; a newly chosen one goes
        // first and the inbound one is what is dropped.
        k.linked(node(1), "a:2", false);
        assert_eq!(k.entries()[0], entry(1, "a:2", true));
        k.linked(node(39), "x:1", true);
        k.linked(node(4), "d:1", true);
        assert_eq!(
            k.entries(),
            &[
                entry(4, "d:1", true),
                entry(39, "x:1", true),
                entry(1, "a:2", true)
            ]
        );
        // Loaded entries go after their group's.
        let mut k = KnownPeers::new(4);
        k.linked(node(5), "e:1", false);
        k.linked(node(6), "f:1", true);
        k.loaded(vec![
            entry(7, "g:1", false),
            entry(8, "h:1", true),
            entry(6, "old:1", true),
        ]);
        assert_eq!(
            k.entries(),
            &[
                entry(6, "f:1", true),
                entry(8, "h:1", true),
                entry(5, "e:1", false),
                entry(7, "g:1", false)
            ]
        );
    }

    #[test]
    fn a_version_1_blob_is_read_as_peers_not_chosen() {
        let pairs = vec![(node(1), String::from("a:1"))];
        let blob = state_blob::seal(MAGIC_V1, &pairs);
        assert_eq!(decode(&blob), Some(vec![entry(1, "a:1", false)]));
    }

    #[test]
    fn a_damaged_or_unknown_blob_is_refused() {
        let mut k = KnownPeers::new(4);
        k.linked(node(1), "a:1", true);
        let blob = k.take_changed().unwrap();
        for cut in [0, 1, MAGIC.len(), blob.len() - 1] {
            assert_eq!(decode(&blob[..cut]), None, "cut at {cut}");
        }
        let mut flipped = blob.to_vec();
        flipped[MAGIC.len() + 2] ^= 1;
        assert_eq!(decode(&flipped), None);
        let mut v3 = b"weft peers v3\n".to_vec();
        v3.extend_from_slice(&blob[MAGIC.len()..blob.len() - HASH_BYTES]);
        let hash = blake3::hash(&v3);
        v3.extend_from_slice(hash.as_bytes());
        assert_eq!(decode(&v3), None, "a newer version is not read");
    }
}
