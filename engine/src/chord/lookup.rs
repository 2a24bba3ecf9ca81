//! Iterative lookups: routing by fingers and successors, the hop-by-hop walk the origin
//! drives itself, restarts, and what each purpose does with the owner found.

use weft_protocol::{ChordFind, ChordFound, ChordMessage, ChordPeer, NodeId};

use super::{between, distance, finger_start, in_half_open, Chord, Purpose, FINGERS, NEXT_HOPS};
use crate::time::Instant;

/// What a lookup's result is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LookupFor {
    Join,
    /// This node's own successor as another member sees it (ring merging).
    Probe,
    Finger(usize),
    Op {
        op: u64,
        slot: usize,
    },
}

/// An iterative lookup under way.
#[derive(Debug)]
pub(super) struct Lookup {
    pub(super) target: u64,
    pub(super) purpose: LookupFor,
    pub(super) hops: u32,
    /// Hops since the lookup last (re)started.
    pub(super) attempt_hops: u32,
    pub(super) attempts: u32,
    /// The node asked last; answers must come from it.
    pub(super) asking: Option<NodeId>,
    pub(super) candidates: Vec<ChordPeer>,
}

impl Chord {
    /// Up to `n` known peers in (me, target): fingers closest to `target` first (the paper's
    /// closest preceding finger), then the other successors and the predecessor as fallbacks;
    /// in each group peers suspected of failure come last.
    pub(super) fn closest_preceding(&self, target: u64, n: usize) -> Vec<ChordPeer> {
        let mut fingers: Vec<&ChordPeer> = Vec::new();
        let mut others: Vec<&ChordPeer> = Vec::new();
        let usable = |p: &ChordPeer, seen: &[&ChordPeer], more: &[&ChordPeer]| {
            p.node != self.me.node
                && between(self.id, p.ring_id(), target)
                && !seen.iter().chain(more).any(|s| s.node == p.node)
        };
        for p in self.fingers.iter().flatten() {
            if usable(p, &fingers, &[]) {
                fingers.push(p);
            }
        }
        for p in self.successors.iter().chain(self.predecessor.iter()) {
            if usable(p, &fingers, &others) {
                others.push(p);
            }
        }
        // Suspected peers last: a lost message is no proof of death.
        let key = |p: &&ChordPeer| (self.is_failed(&p.node), distance(p.ring_id(), target));
        fingers.sort_by_key(key);
        others.sort_by_key(key);
        fingers.into_iter().chain(others).take(n).cloned().collect()
    }

    /// This node's answer to "who follows `target`": `Ok(successors)` when its successor owns
    /// it, else `Err(closer nodes)`.
    pub(super) fn route(&self, target: u64) -> Result<Vec<ChordPeer>, Vec<ChordPeer>> {
        if !self.joined {
            // Not on the ring yet: it knows nothing worth routing by.
            return Err(Vec::new());
        }
        let succ = &self.successors[0];
        if in_half_open(self.id, target, succ.ring_id()) {
            return Ok(self.successors.clone());
        }
        let next = self.closest_preceding(target, NEXT_HOPS);
        if next.is_empty() {
            Ok(self.successors.clone())
        } else {
            Err(next)
        }
    }

    /// Asks the next candidate, restarting from the local table when there is none.
    pub(super) fn lookup_step(&mut self, now: Instant, lid: u64) {
        let Some(l) = self.lookups.get_mut(&lid) else {
            return;
        };
        let failed = &self.failed;
        l.candidates.retain(|c| c.node != self.me.node);
        l.candidates.sort_by_key(|c| failed.contains_key(&c.node));
        if l.candidates.is_empty() || l.attempt_hops >= self.config.lookup_hops_max {
            if l.attempts >= self.config.lookup_attempts_max || l.purpose == LookupFor::Join {
                return self.lookup_failed(now, lid);
            }
            l.attempts += 1;
            l.attempt_hops = 0;
            let target = l.target;
            match self.route(target) {
                Ok(owners) => return self.lookup_done(now, lid, owners),
                Err(next) => {
                    if let Some(l) = self.lookups.get_mut(&lid) {
                        l.candidates = next;
                    }
                }
            }
        }
        let Some(l) = self.lookups.get_mut(&lid) else {
            return;
        };
        if l.candidates.is_empty() {
            // Restarted with nobody to ask (this node is between rings, joining again).
            return self.lookup_failed(now, lid);
        }
        let next = l.candidates.remove(0);
        l.hops += 1;
        l.attempt_hops += 1;
        l.asking = Some(next.node);
        let target = l.target;
        self.call(now, &next, Purpose::Lookup(lid), |request| {
            ChordMessage::Find(ChordFind { request, target })
        });
    }

    pub(super) fn start_lookup(&mut self, now: Instant, target: u64, purpose: LookupFor) {
        let lid = self.new_request();
        let (candidates, owners) = match self.route(target) {
            Ok(owners) => (Vec::new(), Some(owners)),
            Err(next) => (next, None),
        };
        self.lookups.insert(
            lid,
            Lookup {
                target,
                purpose,
                hops: 0,
                attempt_hops: 0,
                attempts: 0,
                asking: None,
                candidates,
            },
        );
        match owners {
            Some(owners) => self.lookup_done(now, lid, owners),
            None => self.lookup_step(now, lid),
        }
    }

    pub(super) fn on_found(&mut self, now: Instant, lid: u64, found: ChordFound) {
        let Some(l) = self.lookups.get_mut(&lid) else {
            return;
        };
        l.asking = None;
        // A finished answer names the owner even if this node suspects it (a lost message is
        // no proof of death): a dead owner shows when it is asked.
        if found.done && !found.peers.is_empty() {
            return self.lookup_done(now, lid, found.peers);
        }
        if !found.done {
            l.candidates = found.peers;
        }
        self.lookup_step(now, lid);
    }

    pub(super) fn lookup_failed(&mut self, now: Instant, lid: u64) {
        let Some(l) = self.lookups.remove(&lid) else {
            return;
        };
        self.metrics.lookups_failed += 1;
        match l.purpose {
            // The next stabilize round tries again through the same member.
            LookupFor::Join => self.join_lookup = false,
            LookupFor::Probe => {}
            // The next finger's turn: a lookup that keeps failing (a hop answering with
            // unreachable candidates) held every later finger back.
            LookupFor::Finger(i) => {
                self.finger_lookup = false;
                self.next_finger = (i + 1) % FINGERS;
            }
            LookupFor::Op { op, slot } => self.slot_failed(now, op, slot),
        }
    }

    /// A lookup found its owners (`owners[0]` first). Callers pass a peer's non-empty
    /// CHORD_FOUND list or this node's own successor list (never empty); an empty list would
    /// fail the lookup rather than index it, so every `owners[0]` below is safe.
    pub(super) fn lookup_done(&mut self, now: Instant, lid: u64, owners: Vec<ChordPeer>) {
        if owners.is_empty() {
            return self.lookup_failed(now, lid);
        }
        let Some(l) = self.lookups.remove(&lid) else {
            return;
        };
        self.metrics.lookups_done += 1;
        match l.purpose {
            LookupFor::Probe => {
                // The owner of the position after ours, as another member sees it: tell it we
                // may be its predecessor (it takes us if we are closer, and pushes the news to
                // its old predecessor), and take it as successor if it is closer than ours.
                // Two rings that formed apart zip together this way.
                let o = owners[0].clone();
                if o.node != self.me.node {
                    self.send(&o, ChordMessage::Notify);
                }
                if o.node != self.me.node
                    && between(self.id, o.ring_id(), self.successors[0].ring_id())
                {
                    let mut list = owners;
                    list.extend(self.successors.iter().cloned());
                    self.successors = self.clean_successors(list);
                    self.stabilize(now);
                }
            }
            LookupFor::Join => {
                self.successors = self.clean_successors(owners);
                self.joined = true;
                self.join_lookup = false;
                self.stabilize(now);
            }
            LookupFor::Finger(i) => {
                self.finger_lookup = false;
                let owner = owners[0].clone();
                let oid = owner.ring_id();
                let mut j = i;
                while j < FINGERS && in_half_open(self.id, finger_start(self.id, j), oid) {
                    self.fingers[j] = Some(owner.clone());
                    j += 1;
                }
                if j == i {
                    // The answer is stale (the owner precedes the finger's start): keep the
                    // old finger and move on.
                    j += 1;
                }
                self.next_finger = j % FINGERS;
            }
            LookupFor::Op { op, slot } => self.slot_owner_found(now, op, slot, owners, l.hops),
        }
    }
}
