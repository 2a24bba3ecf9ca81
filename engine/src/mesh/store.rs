//! The repair store (SPEC.md §11.7): the broadcasts a node delivered or originated, in a
//! bounded recent window, the digest that describes them, and what a peer's digest or want
//! names of them.
//!
//! A held payload is a copy in memory the store allocated ([`Chunks`]), never a slice of the
//! buffer it arrived in, so the store's byte bound is a bound on the memory it keeps alive.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use weft_protocol::{
    DigestEntry, MeshDigest, NodeId, SeqRange, WantRange, DIGEST_ENTRIES_MAX, RANGES_PER_ENTRY_MAX,
    WANT_RANGES_MAX,
};

use crate::seen::SeenWindows;
use crate::time::{Duration, Instant};

/// One broadcast held for repair.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) origin: NodeId,
    pub(crate) incarnation: u64,
    pub(crate) seq: u64,
    /// The BROADCAST payload bytes (postcard, uncompressed), in one of the store's chunks.
    pub(crate) payload: Bytes,
    at: Instant,
    chunk: u64,
}

/// Bounds of the window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreLimits {
    pub(crate) count_max: usize,
    pub(crate) bytes_max: usize,
    pub(crate) age_max: Duration,
}

/// Small payloads are copied into shared chunks of this many bytes (at most the store's byte
/// bound); a payload of a quarter of a chunk or more gets an allocation of its exact size.
const CHUNK_BYTES: usize = 256 * 1024;

/// One allocation of the store and how many held payloads live in it.
#[derive(Debug)]
struct Chunk {
    id: u64,
    capacity: usize,
    held: usize,
}

/// The memory held payloads are copied into: chunks filled in order, each freed when its last
/// payload leaves (and it is no longer the one being filled). `allocated` is the sum of the
/// live chunks' capacities: the bytes the store keeps alive.
#[derive(Debug)]
struct Chunks {
    chunk_bytes: usize,
    /// The chunk being filled: its free tail (`capacity()`), with id `current_id`.
    current: BytesMut,
    current_id: u64,
    next_id: u64,
    live: VecDeque<Chunk>,
    allocated: usize,
}

impl Chunks {
    fn new(bytes_max: usize) -> Chunks {
        Chunks {
            chunk_bytes: CHUNK_BYTES.min(bytes_max).max(1),
            current: BytesMut::new(),
            current_id: 0,
            next_id: 1,
            live: VecDeque::new(),
            allocated: 0,
        }
    }

    /// A copy of `bytes` in the store's memory, and the id of the chunk it is in.
    fn copy(&mut self, bytes: &[u8]) -> (Bytes, u64) {
        let id = self.next_id;
        if bytes.len() >= self.chunk_bytes / 4 {
            self.next_id += 1;
            self.live.push_back(Chunk {
                id,
                capacity: bytes.len(),
                held: 1,
            });
            self.allocated += bytes.len();
            return (Bytes::copy_from_slice(bytes), id);
        }
        if self.current.capacity() < bytes.len() {
            self.next_id += 1;
            let old = std::mem::replace(&mut self.current_id, id);
            self.current = BytesMut::with_capacity(self.chunk_bytes);
            self.live.push_back(Chunk {
                id,
                capacity: self.chunk_bytes,
                held: 0,
            });
            self.allocated += self.chunk_bytes;
            self.free_if_empty(old);
        }
        self.current.extend_from_slice(bytes);
        let copy = self.current.split().freeze();
        let current = self.current_id;
        if let Some(c) = self.live.iter_mut().rev().find(|c| c.id == current) {
            c.held += 1;
        }
        (copy, current)
    }

    /// A payload in chunk `id` left the store.
    fn release(&mut self, id: u64) {
        if let Some(c) = self.live.iter_mut().find(|c| c.id == id) {
            c.held -= 1;
        }
        self.free_if_empty(id);
    }

    /// Forgets chunk `id` if nothing is held in it and it is not being filled.
    fn free_if_empty(&mut self, id: u64) {
        if id == self.current_id {
            return;
        }
        if let Some(at) = self.live.iter().position(|c| c.id == id && c.held == 0) {
            if let Some(c) = self.live.remove(at) {
                self.allocated -= c.capacity;
            }
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct RepairStore {
    held: VecDeque<Held>,
    chunks: Chunks,
    limits: StoreLimits,
}

impl RepairStore {
    pub(crate) fn new(limits: StoreLimits) -> RepairStore {
        RepairStore {
            held: VecDeque::new(),
            chunks: Chunks::new(limits.bytes_max),
            limits,
        }
    }

    /// Keeps a delivered or originated broadcast, within the window's bounds.
    pub(crate) fn hold(
        &mut self,
        now: Instant,
        origin: NodeId,
        incarnation: u64,
        seq: u64,
        payload: &[u8],
    ) {
        if self.limits.count_max == 0 || payload.len() > self.limits.bytes_max {
            return;
        }
        let (payload, chunk) = self.chunks.copy(payload);
        self.held.push_back(Held {
            origin,
            incarnation,
            seq,
            payload,
            at: now,
            chunk,
        });
        while !self.held.is_empty()
            && (self.held.len() > self.limits.count_max
                || self.chunks.allocated > self.limits.bytes_max)
        {
            self.pop_oldest();
        }
    }

    /// Drops held broadcasts older than the window's age.
    pub(crate) fn expire(&mut self, now: Instant) {
        while self
            .held
            .front()
            .is_some_and(|h| now.saturating_since(h.at) > self.limits.age_max)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(old) = self.held.pop_front() {
            self.chunks.release(old.chunk);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Bytes the store has allocated for what it holds (whole chunks, not just payloads).
    pub(crate) fn bytes(&self) -> usize {
        self.chunks.allocated
    }

    /// A digest of the held broadcasts: per (origin, incarnation), ascending disjoint ranges,
    /// within the message limits (past them, the entries with the highest (origin,
    /// incarnation) and, within an entry, the highest ranges are kept).
    pub(crate) fn digest(&self) -> MeshDigest {
        let mut held: Vec<(NodeId, u64, u64)> = self
            .held
            .iter()
            .map(|h| (h.origin, h.incarnation, h.seq))
            .collect();
        held.sort_unstable();
        let mut entries: Vec<DigestEntry> = Vec::new();
        for (origin, incarnation, seq) in held {
            let same = entries
                .last()
                .is_some_and(|e| e.origin == origin && e.incarnation == incarnation);
            if !same {
                entries.push(DigestEntry {
                    origin,
                    incarnation,
                    ranges: Vec::new(),
                });
            }
            // Just pushed if it was not there.
            let Some(entry) = entries.last_mut() else {
                continue;
            };
            match entry.ranges.last_mut() {
                Some(r) if r.last.saturating_add(1) >= seq => r.last = r.last.max(seq),
                _ => entry.ranges.push(SeqRange {
                    first: seq,
                    last: seq,
                }),
            }
        }
        for e in &mut entries {
            let excess = e.ranges.len().saturating_sub(RANGES_PER_ENTRY_MAX);
            e.ranges.drain(..excess);
        }
        let excess = entries.len().saturating_sub(DIGEST_ENTRIES_MAX);
        entries.drain(..excess);
        MeshDigest { entries }
    }

    /// Held broadcasts a peer asked for, oldest first. `wants` must be sorted; of overlapping
    /// ranges only the last starting at or before a held broadcast is looked at (a
    /// well-formed want list has no overlaps).
    pub(crate) fn wanted<'a>(
        &'a self,
        wants: &'a [WantRange],
    ) -> impl Iterator<Item = &'a Held> + 'a {
        self.held.iter().filter(move |h| {
            let key = (h.origin, h.incarnation, h.seq);
            let after = wants.partition_point(|w| (w.origin, w.incarnation, w.range.first) <= key);
            after > 0 && {
                let w = &wants[after - 1];
                w.origin == h.origin && w.incarnation == h.incarnation && h.seq <= w.range.last
            }
        })
    }
}

/// What of a peer's digest `seen` does not hold (and that is not this node's own, `me` =
/// (id, current incarnation)), as ranges, looking at most at `budget` sequence numbers.
pub(crate) fn wants(
    seen: &SeenWindows,
    me: (NodeId, u64),
    digest: &MeshDigest,
    budget: usize,
) -> Vec<WantRange> {
    let mut wants: Vec<WantRange> = Vec::new();
    let mut budget = budget;
    let mine = |e: &&DigestEntry| e.origin == me.0 && e.incarnation >= me.1;
    'entries: for e in digest.entries.iter().filter(|e| !mine(e)) {
        for r in &e.ranges {
            let mut seq = r.first;
            while seq <= r.last {
                if budget == 0 || wants.len() >= WANT_RANGES_MAX {
                    break 'entries;
                }
                budget -= 1;
                if !seen.contains(e.origin, e.incarnation, seq) {
                    match wants.last_mut() {
                        Some(w)
                            if w.origin == e.origin
                                && w.incarnation == e.incarnation
                                && w.range.last.checked_add(1) == Some(seq) =>
                        {
                            w.range.last = seq
                        }
                        _ => wants.push(WantRange {
                            origin: e.origin,
                            incarnation: e.incarnation,
                            range: SeqRange {
                                first: seq,
                                last: seq,
                            },
                        }),
                    }
                }
                if seq == u64::MAX {
                    break;
                }
                seq += 1;
            }
        }
    }
    wants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    fn store(count_max: usize) -> RepairStore {
        RepairStore::new(StoreLimits {
            count_max,
            bytes_max: 1000,
            age_max: Duration(100),
        })
    }

    #[test]
    fn store_is_bounded_by_count_bytes_and_age() {
        let mut m = store(3);
        for seq in 1..=5 {
            m.hold(Instant(seq), node(1), 1, seq, b"0123456789");
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.bytes(), 1000, "one chunk of the bound's size");
        m.hold(Instant(6), node(1), 1, 6, &[0; 995]);
        assert!(m.bytes() <= 1000);
        m.expire(Instant(200));
        assert!(m.is_empty());
    }

    #[test]
    fn held_payloads_are_copies_and_the_bound_counts_allocated_bytes() {
        let mut m = RepairStore::new(StoreLimits {
            count_max: 100_000,
            bytes_max: 2 * CHUNK_BYTES,
            age_max: Duration(100),
        });
        // 10,000 small broadcasts, slices of one 1 MB read buffer.
        let read = Bytes::from(vec![7; 10_000 * 100]);
        for seq in 1..=10_000u64 {
            let at = (seq as usize - 1) * 100;
            m.hold(Instant(0), node(1), 1, seq, &read[at..at + 100]);
        }
        assert!(read.is_unique(), "the read buffer is not pinned");
        assert!(m.bytes() <= 2 * CHUNK_BYTES, "{}", m.bytes());
        assert!(m.len() >= CHUNK_BYTES / 100, "{}", m.len());
        // Large payloads get their own exact allocations, freed as they leave.
        for seq in 10_001..=10_010u64 {
            m.hold(Instant(0), node(1), 1, seq, &[1; CHUNK_BYTES / 2]);
        }
        assert!(m.bytes() <= 2 * CHUNK_BYTES, "{}", m.bytes());
        m.expire(Instant(200));
        assert!(m.is_empty());
        assert!(
            m.bytes() <= CHUNK_BYTES,
            "only the chunk being filled is left"
        );
    }

    #[test]
    fn digest_and_wants_name_exactly_what_is_missing() {
        let mut a = store(100);
        for seq in [1, 2, 3, 5, 6, 9] {
            a.hold(Instant(0), node(1), 1, seq, &[]);
        }
        a.hold(Instant(0), node(2), 4, 1, &[]);
        let d = a.digest();
        assert_eq!(d.entries.len(), 2);
        let r: Vec<(u64, u64)> = d.entries[0]
            .ranges
            .iter()
            .map(|r| (r.first, r.last))
            .collect();
        assert_eq!(r, vec![(1, 3), (5, 6), (9, 9)]);

        let mut b = SeenWindows::new(64, crate::hasher::HashKey::default());
        for seq in [2, 5, 6] {
            b.insert(node(1), 1, seq);
        }
        let w = wants(&b, (node(2), 4), &d, 1000);
        let ranges: Vec<(u64, u64)> = w.iter().map(|w| (w.range.first, w.range.last)).collect();
        assert_eq!(
            ranges,
            vec![(1, 1), (3, 3), (9, 9)],
            "node 2's own broadcasts are not wanted"
        );
        let sent: Vec<u64> = a.wanted(&w).map(|h| h.seq).collect();
        assert_eq!(sent, vec![1, 3, 9]);
        assert_eq!(
            wants(&b, (node(9), 1), &d, 2).len(),
            1,
            "budget bounds the work"
        );
        let all = wants(&b, (node(2), 5), &d, 1000);
        assert_eq!(
            all.len(),
            4,
            "an earlier incarnation's broadcasts are wanted"
        );
    }
}
