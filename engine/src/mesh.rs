//! Mesh flood broadcast and its repair.
//!
//! The three rules (SPEC.md §Mesh): the originator sends to all its mesh links; a receiver of a
//! new broadcast relays the received frame, unchanged, to all its mesh links except the one it
//! came on; nobody relays or delivers a broadcast twice.
//!
//! Repair (SPEC.md §Mesh repair): every node holds the broadcasts it delivered or originated in
//! a bounded recent window. When a link comes up, and periodically, a node sends a digest of
//! that window; the receiver asks for what it has not seen and floods what it gets back.

use std::collections::VecDeque;

use bytes::Bytes;
use weft_protocol::{DigestEntry, MeshDigest, NodeId, SeqRange, WantRange, DIGEST_ENTRIES_MAX};
use weft_protocol::{RANGES_PER_ENTRY_MAX, WANT_RANGES_MAX};

use crate::seen::{LruMap, SeenWindows};
use crate::time::{Duration, Instant};

/// A peer's incarnation compared with the one last recorded for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncarnationCheck {
    /// Never seen, or the same as before.
    Current,
    /// Higher than before: the peer restarted.
    Restarted,
}

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

/// Bounds of the repair window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreLimits {
    pub(crate) count_max: usize,
    pub(crate) bytes_max: usize,
    pub(crate) age_max: Duration,
}

/// The mesh sub-machine's state. `repr(C)`, line-aligned: every received broadcast updates
/// the two counters and reads the seen windows' header, together the first line, and nothing
/// else here.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct Mesh {
    /// BROADCAST frames received (first copies and duplicates).
    broadcasts_received: u64,
    /// Of those, the ones already seen (or this node's own).
    broadcast_duplicates: u64,
    seen: SeenWindows,
    store: VecDeque<Held>,
    store_bytes: usize,
    limits: StoreLimits,
    incarnations: LruMap<NodeId, u64>,
    last_seq: u64,
}

impl Mesh {
    pub(crate) fn new(seen_origins_max: usize, limits: StoreLimits) -> Mesh {
        Mesh {
            broadcasts_received: 0,
            broadcast_duplicates: 0,
            seen: SeenWindows::new(seen_origins_max),
            incarnations: LruMap::new(seen_origins_max),
            last_seq: 0,
            store: VecDeque::new(),
            store_bytes: 0,
            limits,
        }
    }

    /// The sequence number for the next broadcast this node originates (from 1).
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Counts and records a received broadcast; true if it is new and must be relayed and
    /// delivered. `own_current`: this node's own, of its current run, counted as a duplicate
    /// and not recorded.
    pub(crate) fn accept(
        &mut self,
        origin: NodeId,
        incarnation: u64,
        seq: u64,
        own_current: bool,
    ) -> bool {
        self.broadcasts_received += 1;
        let new = !own_current && self.seen.insert(origin, incarnation, seq);
        self.broadcast_duplicates += u64::from(!new);
        new
    }

    /// (BROADCAST frames received, of which duplicates).
    pub(crate) fn reception_counts(&self) -> (u64, u64) {
        (self.broadcasts_received, self.broadcast_duplicates)
    }

    /// Keeps a delivered or originated broadcast for repair, within the window's bounds.
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
        self.store_bytes += payload.len();
        self.store.push_back(Held {
            origin,
            incarnation,
            seq,
            payload,
            at: now,
        });
        while self.store.len() > self.limits.count_max || self.store_bytes > self.limits.bytes_max {
            self.pop_oldest();
        }
    }

    /// Drops held broadcasts older than the window's age.
    pub(crate) fn expire(&mut self, now: Instant) {
        while self
            .store
            .front()
            .is_some_and(|h| now.saturating_since(h.at) > self.limits.age_max)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(old) = self.store.pop_front() {
            self.store_bytes -= old.payload.len();
        }
    }

    /// Whether nothing is held.
    pub(crate) fn store_is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// Broadcasts held now.
    pub(crate) fn store_len(&self) -> usize {
        self.store.len()
    }

    /// Bytes of payload held now.
    pub(crate) fn store_bytes(&self) -> usize {
        self.store_bytes
    }

    /// A digest of the held broadcasts: per (origin, incarnation), ascending disjoint ranges,
    /// within the message limits (past them, the entries with the highest (origin, incarnation)
    /// and, within an entry, the highest ranges are kept).
    pub(crate) fn digest(&self) -> MeshDigest {
        let mut held: Vec<(NodeId, u64, u64)> = self
            .store
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

    /// What of a peer's digest this node has not seen (and did not originate in its current
    /// incarnation `me`), as ranges, considering at most `budget` sequence numbers.
    pub(crate) fn wants(
        &self,
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
                    if !self.seen.contains(e.origin, e.incarnation, seq) {
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

    /// Held broadcasts a peer asked for, oldest first. `wants` must be sorted; of overlapping
    /// ranges only the last starting at or before a held broadcast is looked at (a well-formed
    /// want list has no overlaps).
    pub(crate) fn wanted<'a>(
        &'a self,
        wants: &'a [WantRange],
    ) -> impl Iterator<Item = &'a Held> + 'a {
        self.store.iter().filter(move |h| {
            let key = (h.origin, h.incarnation, h.seq);
            let after = wants.partition_point(|w| (w.origin, w.incarnation, w.range.first) <= key);
            after > 0 && {
                let w = &wants[after - 1];
                w.origin == h.origin && w.incarnation == h.incarnation && h.seq <= w.range.last
            }
        })
    }

    /// Records a handshake's incarnation for `node`; says whether it restarted.
    pub(crate) fn check_incarnation(&mut self, node: NodeId, incarnation: u64) -> IncarnationCheck {
        let known = self.incarnations.get_or_insert_with(node, || incarnation);
        if incarnation > *known {
            *known = incarnation;
            IncarnationCheck::Restarted
        } else {
            IncarnationCheck::Current
        }
    }

    /// Whether `incarnation` is older than the one recorded for `node`.
    pub(crate) fn is_stale(&self, node: NodeId, incarnation: u64) -> bool {
        self.incarnations
            .get(&node)
            .is_some_and(|known| incarnation < *known)
    }

    /// Origin incarnations remembered now.
    pub(crate) fn origins_len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    fn mesh(count_max: usize) -> Mesh {
        Mesh::new(
            64,
            StoreLimits {
                count_max,
                bytes_max: 1000,
                age_max: Duration(100),
            },
        )
    }

    #[test]
    fn store_is_bounded_by_count_bytes_and_age() {
        let mut m = mesh(3);
        for seq in 1..=5 {
            m.hold(
                Instant(seq),
                node(1),
                1,
                seq,
                Bytes::from_static(b"0123456789"),
            );
        }
        assert_eq!((m.store_len(), m.store_bytes()), (3, 30));
        m.hold(Instant(6), node(1), 1, 6, Bytes::from(vec![0; 995]));
        assert!(m.store_bytes() <= 1000);
        m.expire(Instant(200));
        assert!(m.store_is_empty());
    }

    #[test]
    fn digest_and_wants_name_exactly_what_is_missing() {
        let mut a = mesh(100);
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

        let mut b = mesh(100);
        for seq in [2, 5, 6] {
            b.accept(node(1), 1, seq, false);
        }
        let wants = b.wants((node(2), 4), &d, 1000);
        let w: Vec<(u64, u64)> = wants
            .iter()
            .map(|w| (w.range.first, w.range.last))
            .collect();
        assert_eq!(
            w,
            vec![(1, 1), (3, 3), (9, 9)],
            "node 2's own broadcasts are not wanted"
        );
        let sent: Vec<u64> = a.wanted(&wants).map(|h| h.seq).collect();
        assert_eq!(sent, vec![1, 3, 9]);
        assert_eq!(
            b.wants((node(9), 1), &d, 2).len(),
            1,
            "budget bounds the work"
        );
        let all = b.wants((node(2), 5), &d, 1000);
        assert_eq!(
            all.len(),
            4,
            "an earlier incarnation's broadcasts are wanted"
        );
    }

    #[test]
    fn incarnations_are_tracked_per_node() {
        let mut m = mesh(1);
        assert_eq!(m.check_incarnation(node(1), 3), IncarnationCheck::Current);
        assert!(m.is_stale(node(1), 2));
        assert_eq!(m.check_incarnation(node(1), 4), IncarnationCheck::Restarted);
        assert_eq!(m.check_incarnation(node(1), 4), IncarnationCheck::Current);
    }
}
