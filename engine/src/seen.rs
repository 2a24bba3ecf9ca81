//! Bounded memory of what has been seen: per-origin sequence windows for broadcasts, and a
//! FIFO set of cascade ids for discovery.

use std::collections::VecDeque;

use weft_protocol::{CascadeId, NodeId};

use crate::hasher::FixedMap;

/// Sequence numbers remembered individually below an origin's highest one.
pub const SEQ_WINDOW: u64 = 1024;
const WORDS: usize = (SEQ_WINDOW / 64) as usize;

/// One origin's seen-set: everything at or below `high - SEQ_WINDOW` counts as seen, and a
/// bitmap records the window above it. A copy held up past any cache lifetime is therefore
/// still recognised: it is either in the bitmap or below the window.
#[derive(Debug, Clone)]
struct OriginWindow {
    incarnation: u64,
    high: u64,
    bits: [u64; WORDS],
    last_used: u64,
}

impl OriginWindow {
    fn new(incarnation: u64, last_used: u64) -> OriginWindow {
        OriginWindow {
            incarnation,
            high: 0,
            bits: [0; WORDS],
            last_used,
        }
    }

    fn bit(seq: u64) -> (usize, u64) {
        let slot = (seq % SEQ_WINDOW) as usize;
        (slot / 64, 1u64 << (slot % 64))
    }

    /// Records `seq`; true if it was new.
    fn insert(&mut self, seq: u64) -> bool {
        if seq > self.high {
            if seq - self.high >= SEQ_WINDOW {
                self.bits = [0; WORDS];
            } else {
                for s in self.high + 1..seq {
                    let (w, m) = Self::bit(s);
                    self.bits[w] &= !m;
                }
            }
            self.high = seq;
            let (w, m) = Self::bit(seq);
            self.bits[w] |= m;
            return true;
        }
        if self.high - seq >= SEQ_WINDOW {
            return false;
        }
        let (w, m) = Self::bit(seq);
        let new = self.bits[w] & m == 0;
        self.bits[w] |= m;
        new
    }
}

/// What the mesh remembers of every origin's broadcasts.
#[derive(Debug)]
pub(crate) struct SeenWindows {
    origins: FixedMap<NodeId, OriginWindow>,
    capacity: usize,
    clock: u64,
}

impl SeenWindows {
    pub(crate) fn new(capacity: usize) -> SeenWindows {
        SeenWindows {
            origins: FixedMap::default(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Records (origin, incarnation, seq); true if it is new. A lower incarnation than the one
    /// recorded is old; a higher one starts a fresh window.
    pub(crate) fn insert(&mut self, origin: NodeId, incarnation: u64, seq: u64) -> bool {
        self.clock += 1;
        let clock = self.clock;
        if !self.origins.contains_key(&origin) && self.origins.len() >= self.capacity {
            self.evict();
        }
        let window = self
            .origins
            .entry(origin)
            .or_insert_with(|| OriginWindow::new(incarnation, clock));
        window.last_used = clock;
        if incarnation < window.incarnation {
            return false;
        }
        if incarnation > window.incarnation {
            *window = OriginWindow::new(incarnation, clock);
        }
        window.insert(seq)
    }

    /// Highest sequence seen from `origin` in its current incarnation.
    pub(crate) fn high(&self, origin: &NodeId) -> Option<(u64, u64)> {
        self.origins.get(origin).map(|w| (w.incarnation, w.high))
    }

    pub(crate) fn len(&self) -> usize {
        self.origins.len()
    }

    /// Drops the least recently used eighth (at least one) of the origins.
    fn evict(&mut self) {
        let mut ages: Vec<u64> = self.origins.values().map(|w| w.last_used).collect();
        ages.sort_unstable();
        let cut = ages[(ages.len() / 8).min(ages.len() - 1)];
        self.origins.retain(|_, w| w.last_used > cut);
    }
}

/// A FIFO-bounded set of cascade ids.
#[derive(Debug)]
pub(crate) struct CascadeSeen {
    set: FixedMap<CascadeId, ()>,
    order: VecDeque<CascadeId>,
    capacity: usize,
}

impl CascadeSeen {
    pub(crate) fn new(capacity: usize) -> CascadeSeen {
        CascadeSeen {
            set: FixedMap::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `id`; true if it was new.
    pub(crate) fn insert(&mut self, id: CascadeId) -> bool {
        if self.set.contains_key(&id) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(id, ());
        self.order.push_back(id);
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;
    use std::collections::BTreeSet;

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn window_recognises_duplicates_and_anything_below_it() {
        let mut s = SeenWindows::new(8);
        assert!(s.insert(node(1), 1, 5));
        assert!(!s.insert(node(1), 1, 5));
        assert!(s.insert(node(1), 1, 3));
        assert!(s.insert(node(1), 1, 5000));
        assert!(
            !s.insert(node(1), 1, 4),
            "far below the window counts as seen"
        );
        assert!(s.insert(node(1), 1, 5000 - SEQ_WINDOW + 1));
        assert!(!s.insert(node(1), 0, 9999), "older incarnation");
        assert!(s.insert(node(1), 2, 1), "newer incarnation starts afresh");
        assert_eq!(s.high(&node(1)), Some((2, 1)));
    }

    #[test]
    fn origins_are_bounded() {
        let mut s = SeenWindows::new(16);
        for b in 0..100u8 {
            s.insert(node(b), 1, 1);
            assert!(s.len() <= 16);
        }
        let mut c = CascadeSeen::new(4);
        for seq in 0..10 {
            assert!(c.insert(CascadeId {
                origin: node(0),
                seq
            }));
            assert!(c.len() <= 4);
        }
        assert!(!c.insert(CascadeId {
            origin: node(0),
            seq: 9
        }));
        assert!(
            c.insert(CascadeId {
                origin: node(0),
                seq: 0
            }),
            "evicted"
        );
    }

    quickcheck! {
        /// Within the window the bitmap answers exactly like an unbounded set.
        fn window_matches_a_set_within_its_span(seqs: Vec<u16>) -> bool {
            let mut s = SeenWindows::new(4);
            let mut set = BTreeSet::new();
            let mut high = 0u64;
            seqs.into_iter().map(|x| u64::from(x % 3000) + 1).all(|seq| {
                let fresh = s.insert(node(9), 1, seq);
                let expect = if seq + SEQ_WINDOW <= high { false } else { !set.contains(&seq) };
                set.insert(seq);
                high = high.max(seq);
                fresh == expect
            })
        }
    }
}
