//! The repair store (SPEC.md §11.7): the broadcasts a node delivered or originated, in a
//! bounded recent window, the digest that describes them, and what a peer's digest or want
//! names of them.

use std::collections::VecDeque;

use bytes::Bytes;
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
    /// The BROADCAST payload bytes (postcard, uncompressed), shared with the received frame.
    pub(crate) payload: Bytes,
    at: Instant,
}

/// Bounds of the window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreLimits {
    pub(crate) count_max: usize,
    pub(crate) bytes_max: usize,
    pub(crate) age_max: Duration,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct RepairStore {
    held: VecDeque<Held>,
    bytes: usize,
    limits: StoreLimits,
}

impl RepairStore {
    pub(crate) fn new(limits: StoreLimits) -> RepairStore {
        RepairStore {
            held: VecDeque::new(),
            bytes: 0,
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
        payload: Bytes,
    ) {
        if self.limits.count_max == 0 || payload.len() > self.limits.bytes_max {
            return;
        }
        self.bytes += payload.len();
        self.held.push_back(Held {
            origin,
            incarnation,
            seq,
            payload,
            at: now,
        });
        while self.held.len() > self.limits.count_max || self.bytes > self.limits.bytes_max {
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
            self.bytes -= old.payload.len();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }

    /// Bytes of payload held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
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
            m.hold(
                Instant(seq),
                node(1),
                1,
                seq,
                Bytes::from_static(b"0123456789"),
            );
        }
        assert_eq!((m.len(), m.bytes()), (3, 30));
        m.hold(Instant(6), node(1), 1, 6, Bytes::from(vec![0; 995]));
        assert!(m.bytes() <= 1000);
        m.expire(Instant(200));
        assert!(m.is_empty());
    }

    #[test]
    fn digest_and_wants_name_exactly_what_is_missing() {
        let mut a = store(100);
        for seq in [1, 2, 3, 5, 6, 9] {
            a.hold(Instant(0), node(1), 1, seq, Bytes::new());
        }
        a.hold(Instant(0), node(2), 4, 1, Bytes::new());
        let d = a.digest();
        assert_eq!(d.entries.len(), 2);
        let r: Vec<(u64, u64)> = d.entries[0]
            .ranges
            .iter()
            .map(|r| (r.first, r.last))
            .collect();
        assert_eq!(r, vec![(1, 3), (5, 6), (9, 9)]);

        let mut b = SeenWindows::new(64);
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
