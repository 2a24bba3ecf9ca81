//! Bounded memory of what has been seen: per-origin sequence windows for broadcasts, and a
//! FIFO set of cascade ids for discovery.

use std::collections::VecDeque;

use weft_protocol::{CascadeId, NodeId};

use crate::hasher::FixedMap;

/// Sequence numbers remembered individually below an origin's highest one.
pub const SEQ_WINDOW: u64 = 1024;
const WORDS: usize = (SEQ_WINDOW / 64) as usize;

/// One origin incarnation's seen-set: everything at or below `high - SEQ_WINDOW` counts as
/// seen, and a bitmap records the window above it. A copy held up past any cache lifetime is
/// therefore still recognised: it is either in the bitmap or below the window.
#[derive(Debug, Clone, Default)]
struct OriginWindow {
    high: u64,
    bits: [u64; WORDS],
}

impl OriginWindow {
    fn contains(&self, seq: u64) -> bool {
        if seq > self.high {
            return false;
        }
        if self.high - seq >= SEQ_WINDOW {
            return true;
        }
        let (w, m) = Self::bit(seq);
        self.bits[w] & m != 0
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

/// A hash map bounded by dropping its least recently used eighth when full.
#[derive(Debug)]
pub(crate) struct LruMap<K, V> {
    map: FixedMap<K, (V, u64)>,
    capacity: usize,
    clock: u64,
}

impl<K: core::hash::Hash + Eq + Copy, V> LruMap<K, V> {
    pub(crate) fn new(capacity: usize) -> LruMap<K, V> {
        LruMap {
            map: FixedMap::default(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// The value for `key`, made with `make` if absent (evicting first if full); marks it used.
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        self.clock += 1;
        // Only a full map pays for the second lookup.
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            self.evict();
        }
        let entry = self.map.entry(key).or_insert_with(|| (make(), 0));
        entry.1 = self.clock;
        &mut entry.0
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops the least recently used eighth (at least one) of the entries.
    fn evict(&mut self) {
        let mut ages: Vec<u64> = self.map.values().map(|(_, used)| *used).collect();
        ages.sort_unstable();
        let cut = ages[(ages.len() / 8).min(ages.len() - 1)];
        self.map.retain(|_, (_, used)| *used > cut);
    }
}

/// An (origin, incarnation), as the seen windows are keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OriginKey {
    origin: NodeId,
    incarnation: u64,
}

impl core::hash::Hash for OriginKey {
    /// Node ids are BLAKE3 outputs, already uniform: eight of their bytes with the
    /// incarnation spread the keys as well as all 32 would, in one hashing step (every
    /// reception looks its origin up).
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        let (prefix, _) = self
            .origin
            .0
            .split_first_chunk::<8>()
            .unwrap_or((&[0; 8], &[]));
        state.write_u64(u64::from_le_bytes(*prefix) ^ self.incarnation.rotate_left(32));
    }
}

/// What the mesh remembers of every (origin, incarnation)'s broadcasts.
#[derive(Debug)]
pub(crate) struct SeenWindows {
    windows: LruMap<OriginKey, OriginWindow>,
}

impl SeenWindows {
    pub(crate) fn new(capacity: usize) -> SeenWindows {
        SeenWindows {
            windows: LruMap::new(capacity),
        }
    }

    /// Records (origin, incarnation, seq); true if it is new.
    pub(crate) fn insert(&mut self, origin: NodeId, incarnation: u64, seq: u64) -> bool {
        let key = OriginKey {
            origin,
            incarnation,
        };
        self.windows
            .get_or_insert_with(key, OriginWindow::default)
            .insert(seq)
    }

    /// Whether (origin, incarnation, seq) counts as seen, without recording anything.
    pub(crate) fn contains(&self, origin: NodeId, incarnation: u64, seq: u64) -> bool {
        let key = OriginKey {
            origin,
            incarnation,
        };
        self.windows.get(&key).is_some_and(|w| w.contains(seq))
    }

    pub(crate) fn len(&self) -> usize {
        self.windows.len()
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
        assert!(s.contains(node(1), 1, 5000) && s.contains(node(1), 1, 3));
        assert!(!s.contains(node(1), 1, 4999) && !s.contains(node(1), 1, 5001));
        assert!(
            s.insert(node(1), 2, 1),
            "each incarnation has its own window"
        );
        assert!(s.insert(node(1), 0, 1), "an older incarnation too");
        assert!(!s.insert(node(1), 1, 5000));
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
                let before = s.contains(node(9), 1, seq);
                let fresh = s.insert(node(9), 1, seq);
                let expect = if seq + SEQ_WINDOW <= high { false } else { !set.contains(&seq) };
                if before == expect {
                    return false;
                }
                set.insert(seq);
                high = high.max(seq);
                fresh == expect
            })
        }
    }
}
