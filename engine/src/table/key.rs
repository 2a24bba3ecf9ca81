//! One key's writes and the rule that judges them (SPEC.md §19.3, §19.4).
//!
//! A key's writes are judged in id order `(hlc, node, incarnation)`: a write is refused when
//! an accepted earlier write by another node holds a lease that covers the write's timestamp
//! (`hlc.ms < lease_until_ms`); otherwise it is accepted, becomes the key's current write, and
//! its own lease (or none) replaces the key's lease. The verdicts depend only on the set of
//! writes, never on the order they arrived in, so the key keeps every write above its fold
//! point and judges them all again when an older one arrives late.

use weft_protocol::{Hlc, NodeId, TableWrite};

/// A write's id: the order in which a key's writes are judged.
pub(crate) type WriteId = (Hlc, NodeId, u64);

/// A lease: its owner and the Unix ms it ends at (exclusive).
pub type Lease = (NodeId, u64);

/// One held write and its verdict: `None` if accepted, else the lease that refused it.
#[derive(Debug, Clone)]
pub(crate) struct Judged {
    pub(crate) write: TableWrite,
    pub(crate) refused_by: Option<Lease>,
}

/// What became of a write offered to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// New: held and judged.
    New,
    /// Held already.
    Duplicate,
    /// At or below the fold point: it can no longer be judged, so it is dropped.
    Late,
}

/// One key's state.
#[derive(Debug, Clone)]
pub(crate) struct KeyState {
    /// The key's 16-bit hash; its top bits name its anti-entropy bucket.
    pub(crate) key_hash: u16,
    /// The last accepted write among those folded away, if any.
    base: Option<TableWrite>,
    /// The id of the newest folded write: writes at or below it are late.
    folded_to: Option<WriteId>,
    /// Writes above the fold point, ascending by id, with their verdicts.
    log: Vec<Judged>,
    /// Encoded bytes of the held writes (base included).
    bytes: usize,
}

impl KeyState {
    pub(crate) fn new(key_hash: u16) -> KeyState {
        KeyState {
            key_hash,
            base: None,
            folded_to: None,
            log: Vec::new(),
            bytes: 0,
        }
    }

    /// What `offer` would make of a write with id `id`: `Late` or `Duplicate`, or `None` if
    /// it would be held.
    pub(crate) fn classify(&self, id: WriteId) -> Option<Offer> {
        if self.folded_to.is_some_and(|f| id <= f) {
            return Some(Offer::Late);
        }
        self.log
            .binary_search_by(|j| j.write.id().cmp(&id))
            .is_ok()
            .then_some(Offer::Duplicate)
    }

    /// Holds `write` if it is new and not late, and judges the key's writes again.
    pub(crate) fn offer(&mut self, write: TableWrite) -> Offer {
        let id = write.id();
        if let Some(offer) = self.classify(id) {
            return offer;
        }
        match self.log.binary_search_by(|j| j.write.id().cmp(&id)) {
            Ok(_) => Offer::Duplicate,
            Err(at) => {
                self.bytes += write.encoded_len();
                self.log.insert(
                    at,
                    Judged {
                        write,
                        refused_by: None,
                    },
                );
                self.judge(at);
                Offer::New
            }
        }
    }

    /// The lease in force after the writes before log index `upto`.
    fn lease_before(&self, upto: usize) -> Option<Lease> {
        let last_accepted = self.log[..upto]
            .iter()
            .rev()
            .find(|j| j.refused_by.is_none())
            .map(|j| &j.write)
            .or(self.base.as_ref());
        last_accepted.and_then(|w| w.lease_until_ms.map(|until| (w.node, until)))
    }

    /// Judges the writes from log index `from` on (those before keep their verdicts: a write's
    /// verdict depends only on the writes before it).
    fn judge(&mut self, from: usize) {
        let mut lease = self.lease_before(from);
        for j in &mut self.log[from..] {
            j.refused_by =
                lease.filter(|&(owner, until)| owner != j.write.node && j.write.hlc.ms < until);
            if j.refused_by.is_none() {
                lease = j.write.lease_until_ms.map(|until| (j.write.node, until));
            }
        }
    }

    /// The key's current write: the last accepted one.
    pub(crate) fn current(&self) -> Option<&TableWrite> {
        self.log
            .iter()
            .rev()
            .find(|j| j.refused_by.is_none())
            .map(|j| &j.write)
            .or(self.base.as_ref())
    }

    /// The visible value: the current write's, `None` if there is none or it is a delete.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        self.current().and_then(|w| w.value.as_deref())
    }

    /// The lease in force after every held write.
    pub(crate) fn lease(&self) -> Option<Lease> {
        self.lease_before(self.log.len())
    }

    /// Held writes, oldest first: the folded base (accepted), then the log with verdicts.
    pub(crate) fn writes(&self) -> impl Iterator<Item = (&TableWrite, Option<Lease>)> + '_ {
        self.base
            .iter()
            .map(|w| (w, None))
            .chain(self.log.iter().map(|j| (&j.write, j.refused_by)))
    }

    /// Verdicts of this node's writes (`me`), by id, to spot the ones a late write refused.
    pub(crate) fn own_verdicts(&self, me: NodeId) -> Vec<(WriteId, Option<Lease>)> {
        self.log
            .iter()
            .filter(|j| j.write.node == me)
            .map(|j| (j.write.id(), j.refused_by))
            .collect()
    }

    /// Folds the oldest writes away while more than `keep` are held or they are older than
    /// `floor_ms`. Returns how many were folded.
    pub(crate) fn fold(&mut self, keep: usize, floor_ms: u64) -> usize {
        let old = self.log.partition_point(|j| j.write.hlc.ms < floor_ms);
        let n = old.max(self.log.len().saturating_sub(keep));
        for j in self.log.drain(..n) {
            self.folded_to = Some(j.write.id());
            let dropped = if j.refused_by.is_none() {
                self.base.replace(j.write)
            } else {
                Some(j.write)
            };
            self.bytes -= dropped.map_or(0, |w| w.encoded_len());
        }
        n
    }

    /// Whether the key may be forgotten: everything folded, and what is left is a delete (or
    /// nothing) older than `floor_ms`.
    pub(crate) fn reclaimable(&self, floor_ms: u64) -> bool {
        self.log.is_empty()
            && self
                .base
                .as_ref()
                .is_none_or(|b| b.value.is_none() && b.hlc.ms < floor_ms)
    }

    /// Encoded bytes of the writes held (base included).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Writes held (base included).
    pub(crate) fn held(&self) -> usize {
        self.log.len() + usize::from(self.base.is_some())
    }

    /// The ids that name this key's state in a digest: the fold point, then every held write.
    pub(crate) fn digest_into(&self, key: &[u8], h: &mut blake3::Hasher) {
        h.update(&(key.len() as u64).to_le_bytes());
        h.update(key);
        let mut id = |w: &TableWrite| {
            h.update(&w.hlc.ms.to_le_bytes());
            h.update(&w.hlc.logical.to_le_bytes());
            h.update(&w.node.0);
            h.update(&w.incarnation.to_le_bytes());
        };
        if let Some(b) = &self.base {
            id(b);
        }
        for j in &self.log {
            id(&j.write);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn w(
        ms: u64,
        node: u8,
        value: Option<&str>,
        lease_until: Option<u64>,
    ) -> TableWrite {
        TableWrite {
            hlc: Hlc { ms, logical: 0 },
            node: NodeId([node; 32]),
            incarnation: 1,
            key: b"k".to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
            lease_until_ms: lease_until,
            public_key: Default::default(),
            signature: Default::default(),
        }
    }

    /// SPEC.md §19.5's vector: the bucket hash of one folded key (`k`, writes at ms 1000 to
    /// 1034 by node [01; 32], incarnation 1, folded to 32: the base is the write at 1002).
    #[test]
    fn a_folded_key_hashes_its_base_then_its_writes() {
        let mut k = KeyState::new(0);
        for i in 0..35 {
            assert_eq!(k.offer(w(1000 + i, 1, Some("v"), None)), Offer::New);
        }
        assert_eq!(k.fold(32, 0), 3, "three folded");
        assert_eq!(k.held(), 33, "the base and 32 writes");
        let mut h = blake3::Hasher::new();
        h.update(b"weft table bucket v1\0");
        k.digest_into(b"k", &mut h);
        let hash = h.finalize();
        // The same bytes from the SPEC's words alone.
        let mut plain = Vec::new();
        plain.extend_from_slice(b"weft table bucket v1\0");
        plain.extend_from_slice(&1u64.to_le_bytes());
        plain.extend_from_slice(b"k");
        for ms in 1002..1035u64 {
            plain.extend_from_slice(&ms.to_le_bytes());
            plain.extend_from_slice(&0u32.to_le_bytes());
            plain.extend_from_slice(&[1u8; 32]);
            plain.extend_from_slice(&1u64.to_le_bytes());
        }
        assert_eq!(hash, blake3::hash(&plain));
        let hex: String = hash.as_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "0bfd4eea68dd6354");
    }

    fn value(k: &KeyState) -> Option<&str> {
        k.value().map(|v| std::str::from_utf8(v).expect("utf8"))
    }

    #[test]
    fn last_writer_wins_whatever_the_order() {
        let writes = [
            w(10, 1, Some("a"), None),
            w(20, 2, Some("b"), None),
            w(20, 3, None, None),
        ];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let mut k = KeyState::new(0);
            for i in order {
                assert_eq!(k.offer(writes[i].clone()), Offer::New);
            }
            assert_eq!(k.offer(writes[0].clone()), Offer::Duplicate);
            assert_eq!(value(&k), None, "the delete at (20, node 3) wins");
        }
    }

    #[test]
    fn a_lease_refuses_others_until_it_ends_and_a_late_lease_refuses_retroactively() {
        let mut k = KeyState::new(0);
        k.offer(w(15, 2, Some("b"), None));
        assert_eq!(value(&k), Some("b"));
        // Node 1's lease from 10 to 20 arrives late: node 2's write at 15 is refused.
        k.offer(w(10, 1, Some("a"), Some(20)));
        assert_eq!(value(&k), Some("a"));
        assert_eq!(k.lease(), Some((NodeId([1; 32]), 20)));
        // The owner writes freely; at 20 the lease has ended and others may write.
        k.offer(w(12, 1, Some("a2"), Some(20)));
        assert_eq!(value(&k), Some("a2"));
        k.offer(w(20, 3, Some("c"), None));
        assert_eq!((value(&k), k.lease()), (Some("c"), None));
        // A release (the owner's write without a lease) ends the lease early.
        let mut k = KeyState::new(0);
        k.offer(w(10, 1, Some("a"), Some(100)));
        k.offer(w(30, 2, Some("b"), None));
        assert_eq!(value(&k), Some("a"));
        k.offer(w(20, 1, Some("a"), None));
        assert_eq!(value(&k), Some("b"), "the release lets node 2's write in");
    }

    #[test]
    fn folding_keeps_the_verdicts_and_refuses_late_writes() {
        let mut k = KeyState::new(0);
        k.offer(w(10, 1, Some("a"), Some(100)));
        for ms in 11..20 {
            k.offer(w(ms, 2, Some("b"), None));
        }
        assert_eq!(k.fold(3, 0), 7);
        assert_eq!(value(&k), Some("a"));
        assert_eq!(k.lease(), Some((NodeId([1; 32]), 100)));
        assert_eq!(k.offer(w(12, 3, Some("x"), None)), Offer::Late);
        assert_eq!(k.held(), 4);
        assert_eq!(
            k.bytes(),
            k.writes().map(|(w, _)| w.encoded_len()).sum::<usize>()
        );
        k.offer(w(200, 2, None, None));
        assert_eq!(k.fold(0, 300), 4);
        assert!(!k.reclaimable(200));
        assert!(k.reclaimable(201));
    }
}
