//! The mesh checker: which node delivered which broadcast, in which of its incarnations.
//!
//! Safety (checked on every delivery): no node delivers a broadcast twice in one incarnation,
//! and every payload is the one its originator sent. Liveness (checked after heal): every
//! broadcast that some live node still holds has reached every live node.

use std::collections::BTreeMap;

use bytes::Bytes;

/// A broken invariant: when, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Simulated time, ns.
    pub at: u64,
    /// What broke.
    pub what: String,
}

/// A broadcast's identity: (origin index, origin incarnation, sequence).
pub type BroadcastKey = (u32, u64, u64);

/// Bytes of every broadcast payload the simulator sends.
pub const PAYLOAD_LEN: usize = 64;

struct Sent {
    key: BroadcastKey,
    payload: Bytes,
    /// Which nodes delivered it in their current incarnation: a bitset over node indices.
    delivered: Vec<u64>,
}

/// Tracks deliveries for the mesh checks.
pub struct MeshTracker {
    nodes: u32,
    index: BTreeMap<BroadcastKey, u32>,
    sent: Vec<Sent>,
    /// Deliveries recorded.
    pub deliveries: u64,
    /// Time of the latest delivery, ns.
    pub last_delivery_at: u64,
}

/// The payload of broadcast number `index`: the index, then a pattern derived from it.
pub fn payload(index: u32) -> Bytes {
    let mut p = Vec::with_capacity(PAYLOAD_LEN);
    p.extend_from_slice(&index.to_le_bytes());
    let mut x = u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    while p.len() < PAYLOAD_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.push(x as u8);
    }
    Bytes::from(p)
}

impl MeshTracker {
    /// A tracker for `nodes` nodes.
    pub fn new(nodes: u32) -> MeshTracker {
        MeshTracker {
            nodes,
            index: BTreeMap::new(),
            sent: Vec::new(),
            deliveries: 0,
            last_delivery_at: 0,
        }
    }

    /// Records a broadcast about to be sent; returns its payload.
    pub fn originate(&mut self, _now: u64, key: BroadcastKey) -> Bytes {
        let index = self.sent.len() as u32;
        self.index.insert(key, index);
        let bytes = payload(index);
        self.sent.push(Sent {
            key,
            payload: bytes.clone(),
            delivered: vec![0; (self.nodes as usize).div_ceil(64)],
        });
        bytes
    }

    /// Broadcasts sent so far.
    pub fn sent_count(&self) -> usize {
        self.sent.len()
    }

    /// Records that `node` (in `incarnation`) delivered `key` with `bytes`.
    pub fn delivered(
        &mut self,
        now: u64,
        node: u32,
        _incarnation: u64,
        key: BroadcastKey,
        bytes: &Bytes,
    ) -> Result<(), Violation> {
        let fail = |what: String| Err(Violation { at: now, what });
        let Some(&index) = self.index.get(&key) else {
            return fail(format!("node {node} delivered {key:?}, which nobody sent"));
        };
        if *bytes != self.sent[index as usize].payload {
            return fail(format!("node {node} delivered {key:?} with corrupt bytes"));
        }
        let sent = &mut self.sent[index as usize];
        let (word, bit) = ((node / 64) as usize, 1u64 << (node % 64));
        if sent.delivered[word] & bit != 0 {
            return fail(format!("node {node} delivered {key:?} twice"));
        }
        sent.delivered[word] |= bit;
        self.deliveries += 1;
        self.last_delivery_at = now;
        Ok(())
    }

    /// `node` crashed: its deliveries belonged to the incarnation that ended.
    pub fn crashed(&mut self, node: u32) {
        let (word, bit) = ((node / 64) as usize, 1u64 << (node % 64));
        for s in &mut self.sent {
            s.delivered[word] &= !bit;
        }
    }

    /// Up to `max` (node, broadcast) pairs owed but not delivered (see [`Self::coverage`]).
    pub fn missing(
        &self,
        live: &[bool],
        incarnations: &[u64],
        max: usize,
    ) -> Vec<(u32, BroadcastKey)> {
        let mut out = Vec::new();
        for s in &self.sent {
            let (origin, origin_inc, _) = s.key;
            let has = |i: usize| s.delivered[i / 64] & (1u64 << (i % 64)) != 0;
            let held = (0..live.len()).any(|i| live[i] && has(i));
            let origin_live = live[origin as usize] && incarnations[origin as usize] == origin_inc;
            if !held && !origin_live {
                continue;
            }
            for i in (0..live.len()).filter(|&i| live[i] && i != origin as usize && !has(i)) {
                if out.len() == max {
                    return out;
                }
                out.push((i as u32, s.key));
            }
        }
        out
    }

    /// Liveness: for every broadcast still held by a live node (or whose originator is live in
    /// the incarnation that sent it), how many live nodes other than its originator have it,
    /// against how many should. Returns (have, want).
    pub fn coverage(&self, live: &[bool], incarnations: &[u64]) -> (u64, u64) {
        let (mut have, mut want) = (0u64, 0u64);
        let live_count = live.iter().filter(|l| **l).count() as u64;
        for s in &self.sent {
            let (origin, origin_inc, _) = s.key;
            let held_by_live = live
                .iter()
                .enumerate()
                .any(|(i, l)| *l && s.delivered[i / 64] & (1u64 << (i % 64)) != 0);
            let origin_live = live[origin as usize] && incarnations[origin as usize] == origin_inc;
            if !held_by_live && !origin_live {
                continue;
            }
            let origin_counts = u64::from(live[origin as usize]);
            want += live_count - origin_counts;
            have += live
                .iter()
                .enumerate()
                .filter(|(i, l)| {
                    **l && *i != origin as usize && s.delivered[i / 64] & (1u64 << (i % 64)) != 0
                })
                .count() as u64;
        }
        (have, want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_corruption_and_strangers_are_violations() {
        let mut t = MeshTracker::new(3);
        let p = t.originate(0, (0, 1, 1));
        assert!(t.delivered(1, 1, 1, (0, 1, 1), &p).is_ok());
        assert!(t
            .delivered(2, 1, 1, (0, 1, 1), &p)
            .unwrap_err()
            .what
            .contains("twice"));
        assert!(t
            .delivered(2, 2, 1, (0, 1, 1), &payload(9))
            .unwrap_err()
            .what
            .contains("corrupt"));
        assert!(t
            .delivered(2, 2, 1, (0, 1, 2), &p)
            .unwrap_err()
            .what
            .contains("nobody"));
        t.crashed(1);
        assert!(
            t.delivered(3, 1, 2, (0, 1, 1), &p).is_ok(),
            "a new incarnation counts afresh"
        );
    }

    #[test]
    fn coverage_counts_only_what_a_live_node_still_holds() {
        let mut t = MeshTracker::new(3);
        let p = t.originate(0, (0, 1, 1));
        t.delivered(1, 1, 1, (0, 1, 1), &p).unwrap();
        assert_eq!(t.coverage(&[true, true, true], &[1, 1, 1]), (1, 2));
        // Origin restarted and node 1 crashed: nobody live holds it; nothing is owed.
        t.crashed(1);
        assert_eq!(t.coverage(&[true, false, true], &[2, 1, 1]), (0, 0));
    }
}
