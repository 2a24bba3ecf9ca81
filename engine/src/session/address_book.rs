//! The address book: where nodes can be dialed, as discovery, HELLOs and protocols learn it,
//! with each entry's dial backoff (SPEC.md §10.6, §10.7). Bounded; the least recently seen
//! entry goes first.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::RngCore;
use weft_protocol::{NodeId, PeerInfo};

use crate::time::{Duration, Instant};

/// One node's entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) addr: String,
    pub(crate) last_seen: Instant,
    dial_failures: u8,
    next_dial_at: Instant,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct AddressBook {
    entries: BTreeMap<NodeId, Entry>,
    /// Every entry by (last seen, node): the least recently seen is the first. Without it
    /// each node learned into a full book scanned every entry, and a peer sending hearsay at
    /// its allowed rate had the node scan millions of entries a second.
    by_seen: BTreeSet<(Instant, NodeId)>,
    entries_max: usize,
}

impl AddressBook {
    pub(crate) fn new(entries_max: usize) -> AddressBook {
        AddressBook {
            entries: BTreeMap::new(),
            by_seen: BTreeSet::new(),
            entries_max: entries_max.max(1),
        }
    }

    /// Records that `node` can be reached at `addr`, evicting the least recently seen entry
    /// when the book is full. An address with an unspecified IP (`0.0.0.0`) is never held
    /// (SPEC.md §8.12): no one can dial it.
    pub(crate) fn learn(&mut self, now: Instant, node: NodeId, addr: &str) {
        if super::address::is_unspecified(addr) {
            return;
        }
        if let Some(entry) = self.entries.get_mut(&node) {
            self.by_seen.remove(&(entry.last_seen, node));
            self.by_seen.insert((now, node));
            entry.last_seen = now;
            if entry.addr != addr {
                entry.addr = addr.to_owned();
                entry.dial_failures = 0;
                entry.next_dial_at = now;
            }
            return;
        }
        if self.entries.len() >= self.entries_max {
            if let Some((_, oldest)) = self.by_seen.pop_first() {
                self.entries.remove(&oldest);
            }
        }
        self.by_seen.insert((now, node));
        self.entries.insert(
            node,
            Entry {
                addr: addr.to_owned(),
                last_seen: now,
                dial_failures: 0,
                next_dial_at: now,
            },
        );
    }

    /// Forgets `node`.
    pub(crate) fn forget(&mut self, node: &NodeId) {
        if let Some(entry) = self.entries.remove(node) {
            self.by_seen.remove(&(entry.last_seen, *node));
        }
    }

    /// `node`'s address, if known.
    pub(crate) fn addr(&self, node: &NodeId) -> Option<&str> {
        self.entries.get(node).map(|e| e.addr.as_str())
    }

    /// Up to `max` entries, most recently seen first, without `exclude`.
    pub(crate) fn known_peers(&self, exclude: NodeId, max: usize) -> Vec<PeerInfo> {
        let mut all: Vec<(&NodeId, &Entry)> = self
            .entries
            .iter()
            .filter(|(id, _)| **id != exclude)
            .collect();
        all.sort_by_key(|(id, e)| (core::cmp::Reverse(e.last_seen), **id));
        all.into_iter()
            .take(max)
            .map(|(id, e)| PeerInfo {
                node: *id,
                addr: e.addr.clone(),
            })
            .collect()
    }

    /// Picks, at random, an entry that is due for a dial and passes `eligible`; marks it
    /// dialed so it is not picked again before `backoff`.
    pub(crate) fn pick_dial(
        &mut self,
        now: Instant,
        rng: &mut impl RngCore,
        backoff: Duration,
        mut eligible: impl FnMut(&NodeId, &str) -> bool,
    ) -> Option<(NodeId, String)> {
        let due: Vec<NodeId> = self
            .entries
            .iter()
            .filter(|(id, e)| e.next_dial_at <= now && eligible(id, &e.addr))
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            return None;
        }
        let node = due[(rng.next_u64() % due.len() as u64) as usize];
        let entry = self.entries.get_mut(&node)?;
        entry.next_dial_at = now + backoff;
        Some((node, entry.addr.clone()))
    }

    /// A dial of `node` failed: back off exponentially, forget it after `attempts_max` failures.
    pub(crate) fn dial_failed(
        &mut self,
        now: Instant,
        node: &NodeId,
        backoff: Duration,
        attempts_max: u8,
    ) {
        let Some(entry) = self.entries.get_mut(node) else {
            return;
        };
        entry.dial_failures = entry.dial_failures.saturating_add(1);
        if entry.dial_failures >= attempts_max {
            self.forget(node);
            return;
        }
        let factor = 1u64 << entry.dial_failures.min(16);
        entry.next_dial_at = now + Duration(backoff.0.saturating_mul(factor));
    }

    /// A link to `node` came up: its failures are forgiven.
    pub(crate) fn linked(&mut self, node: &NodeId) {
        if let Some(entry) = self.entries.get_mut(node) {
            entry.dial_failures = 0;
        }
    }

    /// Every entry, in node-id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Entry)> {
        self.entries.iter()
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn book_is_bounded_and_evicts_the_least_recently_seen() {
        let mut d = AddressBook::new(3);
        for b in 0..3 {
            d.learn(Instant(u64::from(b)), node(b), "a");
        }
        d.learn(Instant(10), node(0), "a");
        d.learn(Instant(11), node(9), "b");
        assert_eq!(d.len(), 3);
        assert!(d.iter().all(|(id, _)| *id != node(1)), "1 was oldest");
    }

    #[test]
    fn failed_dials_back_off_then_forget() {
        let mut d = AddressBook::new(8);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        d.learn(Instant(0), node(1), "x");
        let backoff = Duration(10);
        assert_eq!(
            d.pick_dial(Instant(0), &mut rng, backoff, |_, _| true),
            Some((node(1), "x".into()))
        );
        assert_eq!(
            d.pick_dial(Instant(1), &mut rng, backoff, |_, _| true),
            None
        );
        d.dial_failed(Instant(1), &node(1), backoff, 2);
        assert_eq!(
            d.pick_dial(Instant(20), &mut rng, backoff, |_, _| true),
            None
        );
        assert!(d
            .pick_dial(Instant(21), &mut rng, backoff, |_, _| true)
            .is_some());
        d.dial_failed(Instant(21), &node(1), backoff, 2);
        assert_eq!(d.len(), 0);
    }

    /// The book without its index: eviction scans for the least recently seen.
    #[derive(Default)]
    struct Plain {
        entries: BTreeMap<NodeId, (String, Instant)>,
    }

    impl Plain {
        fn learn(&mut self, max: usize, now: Instant, node: NodeId, addr: &str) {
            if let Some(e) = self.entries.get_mut(&node) {
                *e = (addr.to_owned(), now);
                return;
            }
            if self.entries.len() >= max {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(id, e)| (e.1, **id))
                    .map(|(id, _)| *id);
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
            self.entries.insert(node, (addr.to_owned(), now));
        }
    }

    quickcheck::quickcheck! {
        /// Learning, forgetting and failed dials keep the same entries as the plain book.
        fn the_index_keeps_what_the_plain_book_keeps(ops: Vec<(u8, u8, u8)>) -> bool {
            let max = 5;
            let mut book = AddressBook::new(max);
            let mut plain = Plain::default();
            for (i, (op, n, t)) in ops.into_iter().enumerate() {
                let (node, now) = (node(n % 12), Instant(u64::from(t % 8) + i as u64 / 3));
                match op % 4 {
                    0 | 1 => {
                        let addr = if op % 2 == 0 { "a" } else { "b" };
                        book.learn(now, node, addr);
                        plain.learn(max, now, node, addr);
                    }
                    2 => {
                        book.forget(&node);
                        plain.entries.remove(&node);
                    }
                    _ => {
                        book.dial_failed(now, &node, Duration(1), 1);
                        plain.entries.remove(&node);
                    }
                }
                let held: Vec<(NodeId, String, Instant)> =
                    book.iter().map(|(id, e)| (*id, e.addr.clone(), e.last_seen)).collect();
                let want: Vec<(NodeId, String, Instant)> =
                    plain.entries.iter().map(|(id, e)| (*id, e.0.clone(), e.1)).collect();
                if held != want || book.by_seen.len() != book.entries.len() {
                    return false;
                }
            }
            true
        }
    }
}
