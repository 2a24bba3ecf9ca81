//! Bounded memory of what has been seen: per-origin sequence windows for broadcasts, and a
//! FIFO set of cascade ids for discovery.

use std::collections::VecDeque;

use weft_protocol::{CascadeId, NodeId};

use crate::hasher::{hash_with, HashKey, KeyedMap};

/// Sequence numbers remembered individually below an origin's highest one.
pub const SEQ_WINDOW: u64 = 1024;
const WORDS: usize = (SEQ_WINDOW / 64) as usize;

/// One origin incarnation's seen-set, as SPEC.md §11.3 defines it: everything at or below
/// `high - SEQ_WINDOW` counts as seen, and the window above it is remembered exactly. A copy
/// held up past any cache lifetime is therefore still recognised.
///
/// Stored in one of two forms with the same answers. The narrow form, in the slot itself,
/// keeps a bit for each of the 64 numbers `high - 63 ..= high` and holds only while every
/// number from 1 in the rest of the window has been seen, which is the case for an origin
/// whose broadcasts arrive roughly in order. Anything else (a gap falling out of those 64
/// bits, or a seq of 0) widens the window to the full bitmap, kept beside the table.
#[derive(Debug, Clone, Default)]
struct WideWindow {
    bits: [u64; WORDS],
}

impl WideWindow {
    fn contains(&self, high: u64, seq: u64) -> bool {
        if seq > high {
            return false;
        }
        if high - seq >= SEQ_WINDOW {
            return true;
        }
        let (w, m) = Self::bit(seq);
        self.bits[w] & m != 0
    }

    fn bit(seq: u64) -> (usize, u64) {
        let slot = (seq % SEQ_WINDOW) as usize;
        (slot / 64, 1u64 << (slot % 64))
    }

    /// Records `seq` against the window topped by `high` (raised if `seq` is above it); true
    /// if it was new.
    fn insert(&mut self, high: &mut u64, seq: u64) -> bool {
        if seq > *high {
            if seq - *high >= SEQ_WINDOW {
                self.bits = [0; WORDS];
            } else {
                for s in *high + 1..seq {
                    let (w, m) = Self::bit(s);
                    self.bits[w] &= !m;
                }
            }
            *high = seq;
            let (w, m) = Self::bit(seq);
            self.bits[w] |= m;
            return true;
        }
        if *high - seq >= SEQ_WINDOW {
            return false;
        }
        let (w, m) = Self::bit(seq);
        let new = self.bits[w] & m == 0;
        self.bits[w] |= m;
        new
    }
}

/// The numbers the narrow form keeps a bit for, up to and including `high`.
const NARROW_SPAN: u64 = 64;

/// The narrow form: bit `d` of `recent` is `high - d`. Positions naming no real number (seq
/// 0, which the narrow form never holds as seen, and below it) are kept set, so a shift that
/// pushes out only set bits loses nothing.
fn narrow_contains(high: u64, recent: u64, seq: u64) -> bool {
    if seq > high {
        return false;
    }
    let d = high - seq;
    if d >= SEQ_WINDOW {
        return true;
    }
    if seq == 0 {
        return false;
    }
    d >= NARROW_SPAN || recent & (1 << d) != 0
}

/// Records `seq` in the narrow form; `None` if the narrow form cannot hold the result (the
/// caller widens the window first), else whether it was new.
fn narrow_insert(high: &mut u64, recent: &mut u64, seq: u64) -> Option<bool> {
    if seq > *high {
        let k = seq - *high;
        // The bits shifted out must all be set; a jump past the 64 bits leaves unseen
        // numbers inside the window.
        if k > NARROW_SPAN {
            return None;
        }
        let kept = if k == NARROW_SPAN { 0 } else { *recent << k };
        let out = if k == NARROW_SPAN {
            *recent
        } else {
            *recent >> (NARROW_SPAN - k)
        };
        let out_mask = if k == NARROW_SPAN {
            u64::MAX
        } else {
            (1 << k) - 1
        };
        if out != out_mask {
            return None;
        }
        *high = seq;
        *recent = kept | 1;
        return Some(true);
    }
    let d = *high - seq;
    if d >= SEQ_WINDOW {
        return Some(false);
    }
    if seq == 0 {
        return None;
    }
    if d >= NARROW_SPAN {
        return Some(false);
    }
    let new = *recent & (1 << d) == 0;
    *recent |= 1 << d;
    Some(new)
}

/// The full bitmap equal to a narrow window's answers.
fn widen(high: u64, recent: u64) -> WideWindow {
    let mut wide = WideWindow::default();
    let low = high.saturating_sub(SEQ_WINDOW - 1).max(1);
    for seq in low..=high {
        if narrow_contains(high, recent, seq) {
            let (w, m) = WideWindow::bit(seq);
            wide.bits[w] |= m;
        }
    }
    wide
}

/// A hash map bounded by dropping its least recently used eighth when full.
#[derive(Debug)]
pub(crate) struct LruMap<K, V> {
    map: KeyedMap<K, (V, u64)>,
    capacity: usize,
    clock: u64,
}

impl<K: core::hash::Hash + Eq + Copy, V> LruMap<K, V> {
    pub(crate) fn new(capacity: usize, key: HashKey) -> LruMap<K, V> {
        LruMap {
            map: KeyedMap::with_hasher(key),
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
    /// Node ids are BLAKE3 outputs, already uniform: eight of their bytes and the
    /// incarnation, each hashed (every reception looks its origin up). Not folded into one
    /// word first: the origin chooses its incarnation, and could cancel its id's bytes.
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        let (prefix, _) = self
            .origin
            .0
            .split_first_chunk::<8>()
            .unwrap_or((&[0; 8], &[]));
        state.write_u64(u64::from_le_bytes(*prefix));
        state.write_u64(self.incarnation);
    }
}

/// One (origin, incarnation)'s window in the table: exactly one cache line, so recording a
/// reception reads the table's control bytes and this line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct WindowSlot {
    key: OriginKey,
    high: u64,
    /// The narrow form's bits; unused once wide.
    recent: u64,
    /// When the window was last recorded to (a per-table clock), with `WIDE` set once the
    /// window's bitmap lives in `SeenWindows::wide`.
    used: u64,
}

/// The flag in `WindowSlot::used` of a widened window. The clock counts recordings and never
/// reaches it.
const WIDE: u64 = 1 << 63;

impl WindowSlot {
    fn is_wide(&self) -> bool {
        self.used & WIDE != 0
    }
}

/// What the mesh remembers of every (origin, incarnation)'s broadcasts: a table of one-line
/// slots, bounded by dropping its least recently used eighth when full, and the full bitmaps
/// of the few windows that need them. `repr(C)`: a reception reads the first 48 bytes.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct SeenWindows {
    table: hashbrown::HashTable<WindowSlot>,
    capacity: usize,
    clock: u64,
    wide: KeyedMap<OriginKey, WideWindow>,
    hash_key: HashKey,
}

impl SeenWindows {
    pub(crate) fn new(capacity: usize, hash_key: HashKey) -> SeenWindows {
        SeenWindows {
            table: hashbrown::HashTable::new(),
            wide: KeyedMap::with_hasher(hash_key),
            capacity: capacity.max(1),
            clock: 0,
            hash_key,
        }
    }

    /// Records (origin, incarnation, seq); true if it is new.
    pub(crate) fn insert(&mut self, origin: NodeId, incarnation: u64, seq: u64) -> bool {
        let key = OriginKey {
            origin,
            incarnation,
        };
        let hash = hash_with(&self.hash_key, &key);
        self.clock += 1;
        let clock = self.clock;
        // Only a full table pays for the second lookup.
        if self.table.len() >= self.capacity && self.table.find(hash, |s| s.key == key).is_none() {
            self.evict();
        }
        let fresh = WindowSlot {
            key,
            high: 0,
            recent: u64::MAX,
            used: 0,
        };
        let hash_key = &self.hash_key;
        let slot = self
            .table
            .entry(hash, |s| s.key == key, |s| hash_with(hash_key, &s.key))
            .or_insert(fresh)
            .into_mut();
        slot.used = clock | (slot.used & WIDE);
        if !slot.is_wide() {
            if let Some(new) = narrow_insert(&mut slot.high, &mut slot.recent, seq) {
                return new;
            }
            self.wide.insert(key, widen(slot.high, slot.recent));
            slot.used |= WIDE;
        }
        self.wide
            .entry(key)
            .or_default()
            .insert(&mut slot.high, seq)
    }

    /// Whether (origin, incarnation, seq) counts as seen, without recording anything.
    pub(crate) fn contains(&self, origin: NodeId, incarnation: u64, seq: u64) -> bool {
        let key = OriginKey {
            origin,
            incarnation,
        };
        let Some(slot) = self
            .table
            .find(hash_with(&self.hash_key, &key), |s| s.key == key)
        else {
            return false;
        };
        if slot.is_wide() {
            self.wide
                .get(&key)
                .is_some_and(|w| w.contains(slot.high, seq))
        } else {
            narrow_contains(slot.high, slot.recent, seq)
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Drops the least recently used eighth (at least one) of the windows.
    fn evict(&mut self) {
        let mut ages: Vec<u64> = self.table.iter().map(|s| s.used & !WIDE).collect();
        ages.sort_unstable();
        let Some(&cut) = ages.get((ages.len() / 8).min(ages.len().saturating_sub(1))) else {
            return;
        };
        let wide = &mut self.wide;
        self.table.retain(|s| {
            let keep = s.used & !WIDE > cut;
            if !keep && s.is_wide() {
                wide.remove(&s.key);
            }
            keep
        });
    }
}

/// A FIFO-bounded set of cascade ids.
#[derive(Debug)]
pub(crate) struct CascadeSeen {
    set: KeyedMap<CascadeId, ()>,
    order: VecDeque<CascadeId>,
    capacity: usize,
}

impl CascadeSeen {
    pub(crate) fn new(capacity: usize, key: HashKey) -> CascadeSeen {
        CascadeSeen {
            set: KeyedMap::with_hasher(key),
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

    /// Origins that pick their incarnation to cancel their id's bytes (what folding both
    /// into one word before hashing let them do: every window in one bucket, every lookup a
    /// scan of the table) hash apart.
    #[test]
    fn incarnations_chosen_against_the_origin_do_not_collide() {
        let key = crate::hasher::hash_key(&[9; 32]);
        let target = 0x5555_5555_5555_5555u64;
        let hashes: BTreeSet<u64> = (0..4096u32)
            .map(|i| {
                let origin = NodeId(*blake3::hash(&i.to_le_bytes()).as_bytes());
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&origin.0[..8]);
                let incarnation = (u64::from_le_bytes(prefix) ^ target).rotate_right(32);
                hash_with(
                    &key,
                    &OriginKey {
                        origin,
                        incarnation,
                    },
                ) & 0xfff
            })
            .collect();
        assert!(hashes.len() > 2000, "{} buckets of 4096", hashes.len());
        // Nor do windows that all share one incarnation, whatever it is (with foldhash keyed
        // in its accumulator alone, the one equal to its public multiplier seed hashed every
        // window to 0).
        for incarnation in [0, u64::MAX, 0xc0ac_29b7_c97c_50dd] {
            let hashes: BTreeSet<u64> = (0..4096u32)
                .map(|i| {
                    let origin = NodeId(*blake3::hash(&i.to_le_bytes()).as_bytes());
                    let key_of = OriginKey {
                        origin,
                        incarnation,
                    };
                    hash_with(&key, &key_of) & 0xfff
                })
                .collect();
            assert!(
                hashes.len() > 2000,
                "{incarnation:x}: {} buckets",
                hashes.len()
            );
        }
    }
    use quickcheck::quickcheck;
    use std::collections::BTreeSet;

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn window_recognises_duplicates_and_anything_below_it() {
        let mut s = SeenWindows::new(8, HashKey::default());
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
        let mut s = SeenWindows::new(16, HashKey::default());
        for b in 0..100u8 {
            assert!(
                s.insert(node(b), 1, 1),
                "a new origin's first message is new"
            );
            assert!(s.len() <= 16);
        }
        // Full, less the eighth evicted to make room.
        assert!(s.len() >= 16 - 16 / 8, "{}", s.len());
        assert!(s.insert(node(0), 1, 1), "the first origins were evicted");
        let mut c = CascadeSeen::new(4, HashKey::default());
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

    /// A step of the equivalence property: a seq relative to the highest one recorded.
    #[derive(Debug, Clone)]
    struct Step {
        back: bool,
        distance: u64,
        check_only: bool,
    }

    impl quickcheck::Arbitrary for Step {
        fn arbitrary(g: &mut quickcheck::Gen) -> Step {
            // Mostly near the top, sometimes around the narrow form's 64 bits and the
            // window's edge; rarely far, so most runs stay narrow for a while.
            let back = bool::arbitrary(g);
            let distance = match u8::arbitrary(g) % 32 {
                0..=19 => u64::from(u8::arbitrary(g) % 4),
                20..=25 => u64::from(u8::arbitrary(g) % 8) + 60,
                26..=28 if back => u64::from(u16::arbitrary(g) % 16) + SEQ_WINDOW - 8,
                29 => u64::from(u16::arbitrary(g)),
                30 => u64::arbitrary(g),
                _ => 1,
            };
            Step {
                back,
                distance,
                check_only: u8::arbitrary(g) % 4 == 0,
            }
        }
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_reception_reads_one_line_of_slot_and_the_first_48_bytes_of_the_header() {
        use core::mem::{align_of, offset_of, size_of};
        assert_eq!(
            (size_of::<WindowSlot>(), align_of::<WindowSlot>()),
            (64, 64)
        );
        assert!(offset_of!(SeenWindows, capacity) + 8 <= 48);
        assert!(offset_of!(SeenWindows, clock) + 8 <= 48);
        assert!(
            offset_of!(SeenWindows, table) + size_of::<hashbrown::HashTable<WindowSlot>>() <= 48
        );
    }

    #[test]
    fn in_order_origins_stay_narrow() {
        let mut s = SeenWindows::new(8, HashKey::default());
        for seq in 1..5000 {
            assert!(s.insert(node(1), 1, seq));
            assert!(!s.insert(node(1), 1, seq.saturating_sub(70).max(1)));
        }
        assert!(s.insert(node(2), 1, 2), "seq 1 may come later");
        assert!(s.insert(node(2), 1, 1));
        assert!(s.wide.is_empty(), "no window needed its full bitmap");
        assert!(s.insert(node(3), 1, 100), "a jump past the narrow bits");
        assert!(!s.insert(node(1), 1, 0), "far below origin 1's window");
        assert!(s.insert(node(2), 1, 0), "seq 0 is a number too");
        assert_eq!(
            s.wide.len(),
            2,
            "origins 2 and 3 widened; origin 1 is past 0's window"
        );
    }

    /// The two-form table answers every insert and query exactly as SPEC.md §11.3's single
    /// bitmap does (`WideWindow` alone, the rule as written).
    #[test]
    fn narrow_and_wide_forms_match_the_plain_bitmap() {
        fn prop(steps: Vec<Step>) -> bool {
            let mut s = SeenWindows::new(4, HashKey::default());
            let (mut high, mut plain) = (0u64, WideWindow::default());
            steps.into_iter().all(|step| {
                let seq = if step.back {
                    high.saturating_sub(step.distance)
                } else {
                    high.saturating_add(step.distance)
                };
                let expect_seen = plain.contains(high, seq);
                if s.contains(node(7), 3, seq) != expect_seen {
                    return false;
                }
                step.check_only || s.insert(node(7), 3, seq) == plain.insert(&mut high, seq)
            })
        }
        quickcheck::QuickCheck::new()
            .tests(2000)
            .rng(quickcheck::Gen::new(400))
            .quickcheck(prop as fn(Vec<Step>) -> bool);
    }

    quickcheck! {
        /// Within the window the bitmap answers exactly like an unbounded set.
        fn window_matches_a_set_within_its_span(seqs: Vec<u16>) -> bool {
            let mut s = SeenWindows::new(4, HashKey::default());
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
