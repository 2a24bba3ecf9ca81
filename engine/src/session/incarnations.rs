//! The latest incarnation seen of each peer (SPEC.md §8.7): a higher one means the peer
//! restarted; a lower one is a stale run, refused.

use weft_protocol::NodeId;

use crate::hasher::HashKey;
use crate::seen::LruMap;

/// A peer's incarnation compared with the one last recorded for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncarnationCheck {
    /// Never seen, or the same as before.
    Current,
    /// Higher than before: the peer restarted.
    Restarted,
}

/// See the module documentation. Bounded; the least recently used entries go first.
#[derive(Debug)]
pub(crate) struct Incarnations {
    known: LruMap<NodeId, u64>,
}

impl Incarnations {
    pub(crate) fn new(entries_max: usize, key: HashKey) -> Incarnations {
        Incarnations {
            known: LruMap::new(entries_max, key),
        }
    }

    /// Records a handshake's incarnation for `node`; says whether it restarted.
    pub(crate) fn check(&mut self, node: NodeId, incarnation: u64) -> IncarnationCheck {
        let known = self.known.get_or_insert_with(node, || incarnation);
        if incarnation > *known {
            *known = incarnation;
            IncarnationCheck::Restarted
        } else {
            IncarnationCheck::Current
        }
    }

    /// Whether `incarnation` is older than the one recorded for `node`.
    pub(crate) fn is_stale(&self, node: NodeId, incarnation: u64) -> bool {
        self.known
            .get(&node)
            .is_some_and(|known| incarnation < *known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnations_are_tracked_per_node() {
        let mut m = Incarnations::new(1, HashKey::default());
        let node = NodeId([1; 32]);
        assert_eq!(m.check(node, 3), IncarnationCheck::Current);
        assert!(m.is_stale(node, 2));
        assert_eq!(m.check(node, 4), IncarnationCheck::Restarted);
        assert_eq!(m.check(node, 4), IncarnationCheck::Current);
    }
}
