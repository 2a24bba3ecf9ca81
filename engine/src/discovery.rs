//! Discovery (ploppy): the bounded table of heard-of peers, cascade ids, and dial choices.

use std::collections::BTreeMap;

use rand_core::RngCore;
use weft_protocol::{CascadeId, NodeId, PeerInfo, PEERS_PER_MESSAGE_MAX};

use crate::seen::CascadeSeen;
use crate::time::{Duration, Instant};

/// A peer this node has heard of.
#[derive(Debug, Clone)]
pub(crate) struct HeardOf {
    pub(crate) addr: String,
    pub(crate) last_seen: Instant,
    dial_failures: u8,
    next_dial_at: Instant,
}

/// The discovery sub-machine's state.
#[derive(Debug)]
pub(crate) struct Discovery {
    heard_of: BTreeMap<NodeId, HeardOf>,
    heard_of_max: usize,
    cascades: CascadeSeen,
    last_cascade: u64,
    incarnation: u64,
}

impl Discovery {
    pub(crate) fn new(heard_of_max: usize, cascade_seen_max: usize, incarnation: u64) -> Self {
        Discovery {
            heard_of: BTreeMap::new(),
            heard_of_max: heard_of_max.max(1),
            cascades: CascadeSeen::new(cascade_seen_max),
            last_cascade: 0,
            incarnation,
        }
    }

    /// A fresh id for a cascade this node starts: incarnation in the high 32 bits.
    pub(crate) fn new_cascade(&mut self, origin: NodeId) -> CascadeId {
        self.last_cascade = self.last_cascade.wrapping_add(1) & 0xffff_ffff;
        let id = CascadeId {
            origin,
            seq: (self.incarnation << 32) | self.last_cascade,
        };
        self.cascades.insert(id);
        id
    }

    /// Records a cascade id; true the first time.
    pub(crate) fn first_sight(&mut self, id: CascadeId) -> bool {
        self.cascades.insert(id)
    }

    /// Records that `node` can be reached at `addr`, evicting the least recently seen entry
    /// when the table is full.
    pub(crate) fn learn(&mut self, now: Instant, node: NodeId, addr: &str) {
        if let Some(entry) = self.heard_of.get_mut(&node) {
            entry.last_seen = now;
            if entry.addr != addr {
                entry.addr = addr.to_owned();
                entry.dial_failures = 0;
                entry.next_dial_at = now;
            }
            return;
        }
        if self.heard_of.len() >= self.heard_of_max {
            let oldest = self
                .heard_of
                .iter()
                .min_by_key(|(id, e)| (e.last_seen, **id))
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.heard_of.remove(&oldest);
            }
        }
        self.heard_of.insert(
            node,
            HeardOf {
                addr: addr.to_owned(),
                last_seen: now,
                dial_failures: 0,
                next_dial_at: now,
            },
        );
    }

    /// Forgets `node` (an ICANTSEE for a peer we are not linked to).
    pub(crate) fn forget(&mut self, node: &NodeId) {
        self.heard_of.remove(node);
    }

    /// Up to [`PEERS_PER_MESSAGE_MAX`] heard-of peers, most recently seen first.
    pub(crate) fn known_peers(&self, exclude: NodeId) -> Vec<PeerInfo> {
        let mut all: Vec<(&NodeId, &HeardOf)> = self
            .heard_of
            .iter()
            .filter(|(id, _)| **id != exclude)
            .collect();
        all.sort_by_key(|(id, e)| (core::cmp::Reverse(e.last_seen), **id));
        all.into_iter()
            .take(PEERS_PER_MESSAGE_MAX)
            .map(|(id, e)| PeerInfo {
                node: *id,
                addr: e.addr.clone(),
            })
            .collect()
    }

    /// Picks, at random, a heard-of peer that is due for a dial and passes `eligible`; marks it
    /// dialed so it is not picked again before `backoff`.
    pub(crate) fn pick_dial(
        &mut self,
        now: Instant,
        rng: &mut impl RngCore,
        backoff: Duration,
        eligible: impl Fn(&NodeId) -> bool,
    ) -> Option<(NodeId, String)> {
        let due: Vec<NodeId> = self
            .heard_of
            .iter()
            .filter(|(id, e)| e.next_dial_at <= now && eligible(id))
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            return None;
        }
        let node = due[(rng.next_u64() % due.len() as u64) as usize];
        let entry = self.heard_of.get_mut(&node)?;
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
        let Some(entry) = self.heard_of.get_mut(node) else {
            return;
        };
        entry.dial_failures = entry.dial_failures.saturating_add(1);
        if entry.dial_failures >= attempts_max {
            self.heard_of.remove(node);
            return;
        }
        let factor = 1u64 << entry.dial_failures.min(16);
        entry.next_dial_at = now + Duration(backoff.0.saturating_mul(factor));
    }

    /// A link to `node` came up: its failures are forgiven.
    pub(crate) fn linked(&mut self, node: &NodeId) {
        if let Some(entry) = self.heard_of.get_mut(node) {
            entry.dial_failures = 0;
        }
    }

    pub(crate) fn heard_of(&self) -> impl Iterator<Item = (&NodeId, &HeardOf)> {
        self.heard_of.iter()
    }

    pub(crate) fn heard_of_len(&self) -> usize {
        self.heard_of.len()
    }

    pub(crate) fn cascades_len(&self) -> usize {
        self.cascades.len()
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
    fn table_is_bounded_and_evicts_the_least_recently_seen() {
        let mut d = Discovery::new(3, 8, 1);
        for b in 0..3 {
            d.learn(Instant(u64::from(b)), node(b), "a");
        }
        d.learn(Instant(10), node(0), "a");
        d.learn(Instant(11), node(9), "b");
        assert_eq!(d.heard_of_len(), 3);
        assert!(d.heard_of().all(|(id, _)| *id != node(1)), "1 was oldest");
    }

    #[test]
    fn failed_dials_back_off_then_forget() {
        let mut d = Discovery::new(8, 8, 1);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        d.learn(Instant(0), node(1), "x");
        let backoff = Duration(10);
        assert_eq!(
            d.pick_dial(Instant(0), &mut rng, backoff, |_| true),
            Some((node(1), "x".into()))
        );
        assert_eq!(d.pick_dial(Instant(1), &mut rng, backoff, |_| true), None);
        d.dial_failed(Instant(1), &node(1), backoff, 2);
        assert_eq!(d.pick_dial(Instant(20), &mut rng, backoff, |_| true), None);
        assert!(d
            .pick_dial(Instant(21), &mut rng, backoff, |_| true)
            .is_some());
        d.dial_failed(Instant(21), &node(1), backoff, 2);
        assert_eq!(d.heard_of_len(), 0);
    }

    #[test]
    fn cascade_ids_carry_the_incarnation_and_are_seen_once() {
        let mut d = Discovery::new(8, 8, 7);
        let id = d.new_cascade(node(1));
        assert_eq!(id.seq >> 32, 7);
        assert!(!d.first_sight(id), "own cascades are pre-marked");
        assert!(d.first_sight(CascadeId {
            origin: node(2),
            seq: 1
        }));
        assert!(!d.first_sight(CascadeId {
            origin: node(2),
            seq: 1
        }));
    }
}
