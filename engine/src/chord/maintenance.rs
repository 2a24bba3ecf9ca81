//! Ring maintenance: joining and probing, stabilize, notify, fix fingers, check predecessor,
//! the successor list, suspicion of failed peers, and record handover.

use weft_protocol::{
    ChordHandover, ChordMessage, ChordPeer, ChordRecord, ChordState, NodeId, StoreOutcome,
    HANDOVER_RECORDS_MAX,
};

use super::lookup::{Lookup, LookupFor};
use super::{between, distance, finger_start, in_half_open, Chord, Purpose};
use crate::time::{Duration, Instant};

impl Chord {
    /// Joins the ring through `via`, any member: looks up the owner of `id + 1` there (not
    /// `id`: a ring that still knows this node would name the node itself).
    pub fn join(&mut self, now: Instant, via: ChordPeer) {
        self.start(now);
        if via.node == self.me.node {
            return;
        }
        self.joined = false;
        self.predecessor = None;
        self.join_via = Some(via.clone());
        self.start_join(now, via);
        self.pump(now);
    }

    /// Joins through `via` if this node is a ring of one, while still answering for the whole
    /// ring (two lone nodes joining through each other at once then form one ring). For a node
    /// that starts alone and meets members later (the [`crate::Node`] on a new mesh link).
    pub fn join_if_alone(&mut self, now: Instant, via: ChordPeer) {
        self.start(now);
        if self.successors[0].node == self.me.node
            && self.joined
            && !self.join_lookup
            && via.node != self.me.node
        {
            self.start_join(now, via);
        }
        self.pump(now);
    }

    /// Asks `via` (a member reached another way, e.g. a mesh peer) who follows this node, and
    /// adopts the answer if it is closer than the current successor. Two rings that formed
    /// apart (a partition, concurrent first joins) merge this way. A node alone uses it to
    /// join.
    pub fn probe_via(&mut self, now: Instant, via: ChordPeer) {
        self.start(now);
        if !self.joined || via.node == self.me.node {
            return;
        }
        let lid = self.new_request();
        self.lookups.insert(
            lid,
            Lookup {
                target: self.id.wrapping_add(1),
                purpose: LookupFor::Probe,
                hops: 0,
                attempt_hops: 0,
                attempts: self.config.lookup_attempts_max,
                asking: None,
                candidates: vec![via],
            },
        );
        self.lookup_step(now, lid);
        self.pump(now);
    }

    pub(super) fn start_join(&mut self, now: Instant, via: ChordPeer) {
        self.join_lookup = true;
        let lookup = Lookup {
            target: self.id.wrapping_add(1),
            purpose: LookupFor::Join,
            hops: 0,
            attempt_hops: 0,
            attempts: 0,
            asking: None,
            candidates: vec![via],
        };
        let lid = self.new_request();
        self.lookups.insert(lid, lookup);
        self.lookup_step(now, lid);
    }

    pub(super) fn is_failed(&self, node: &NodeId) -> bool {
        self.failed.contains_key(node)
    }

    /// `peer` did not answer: route around it for a while. Only stabilize's own request
    /// removes a successor, and only check-predecessor's the predecessor (`drop_neighbour`):
    /// a lookup's timeout is weaker evidence than the ring's own probes.
    pub(super) fn mark_failed(&mut self, now: Instant, peer: &NodeId, drop_neighbour: bool) {
        if *peer == self.me.node {
            return;
        }
        self.failed.retain(|_, until| *until > now);
        if !self.failed.contains_key(peer) {
            // Full (0 counts as 1): the oldest suspicion goes. Each lasts `failed_for`, so
            // it is the one that ends first (on a tie, the lowest node id).
            while self.failed.len() >= self.config.failed_max.max(1) {
                let Some(oldest) = self
                    .failed
                    .iter()
                    .min_by_key(|&(node, until)| (*until, *node))
                    .map(|(node, _)| *node)
                else {
                    break;
                };
                self.failed.remove(&oldest);
            }
        }
        self.failed.insert(*peer, now + self.config.failed_for);
        for f in self.fingers.iter_mut() {
            if f.as_ref().is_some_and(|f| f.node == *peer) {
                *f = None;
            }
        }
        if !drop_neighbour {
            return;
        }
        if self.predecessor.as_ref().is_some_and(|p| p.node == *peer) {
            self.predecessor = None;
        }
        self.successors.retain(|s| s.node != *peer);
        if self.successors.is_empty() {
            // The nearest known node clockwise (unsuspected first): stabilize walks back from
            // it to the true successor. Never the predecessor side: that would close a
            // smaller ring.
            let fallback = self
                .fingers
                .iter()
                .flatten()
                .filter(|p| p.node != self.me.node)
                .min_by_key(|p| (self.is_failed(&p.node), distance(self.id, p.ring_id())))
                .cloned();
            self.successors = vec![fallback.unwrap_or_else(|| self.me.clone())];
        }
    }

    /// `[list]` without this node (and what follows it) and repeats, cut to r; `[me]` if
    /// nothing is left. Peers this node counts as failed stay: the list is fresh from the
    /// successor, and a peer wrongly suspected (a lost message) must come back.
    pub(super) fn clean_successors(&self, list: Vec<ChordPeer>) -> Vec<ChordPeer> {
        let mut out: Vec<ChordPeer> = Vec::with_capacity(self.config.successor_list_len);
        for p in list {
            if p.node == self.me.node || out.len() == self.config.successor_list_len {
                break;
            }
            if !out.iter().any(|o| o.node == p.node) {
                out.push(p);
            }
        }
        if out.is_empty() {
            out.push(self.me.clone());
        }
        out
    }

    pub(super) fn stabilize(&mut self, now: Instant) {
        if !self.joined {
            if let (false, Some(via)) = (self.join_lookup, self.join_via.clone()) {
                self.start_join(now, via);
            }
            return;
        }
        if self.rpcs.values().any(|r| r.purpose == Purpose::Stabilize) {
            return;
        }
        let alone = self.successors[0].node == self.me.node;
        if let Some(p) = self
            .predecessor
            .clone()
            .filter(|p| alone && p.node != self.me.node)
        {
            // A ring of one that a node names as its successor: take that node as successor
            // and walk round to the true one (each stabilize adopts the successor's
            // predecessor while it lies between). Rejoining through the old list is no way
            // out when every route to the position after ours leads back here.
            self.successors = vec![p];
        } else if alone && !self.join_lookup && !self.backup.is_empty() {
            // Every successor failed (or was suspected): join again through the peers the
            // list last held, one per period in turn, rather than stay a ring of one.
            self.backup.rotate_left(1);
            let via = self.backup[self.backup.len() - 1].clone();
            self.start_join(now, via);
            return;
        }
        let succ = self.successors[0].clone();
        self.call(now, &succ, Purpose::Stabilize, ChordMessage::GetState);
    }

    pub(super) fn on_state(&mut self, now: Instant, from: &ChordPeer, state: ChordState) {
        if from.node != self.successors[0].node {
            return;
        }
        let mut list = Vec::with_capacity(state.successors.len() + 2);
        let mut adopted = false;
        if let Some(p) = state.predecessor {
            let succ_id = from.ring_id();
            let adopt = if from.node == self.me.node {
                p.node != self.me.node
            } else {
                between(self.id, p.ring_id(), succ_id)
            };
            // The successor heard from `p` lately, whatever this node suspects.
            if adopt {
                list.push(p);
                adopted = true;
            }
        }
        if from.node != self.me.node {
            list.push(from.clone());
        }
        list.extend(state.successors);
        self.successors = self.clean_successors(list);
        if self.successors[0].node != self.me.node {
            self.backup.clone_from(&self.successors);
        }
        let succ = self.successors[0].clone();
        self.send(&succ, ChordMessage::Notify);
        if adopted && succ.node != self.me.node {
            // A closer successor: ask it at once rather than a period later, so a successor
            // that is many nodes off walks back at the speed of round trips.
            self.stabilize(now);
        }
    }

    pub(super) fn on_notify(&mut self, now: Instant, from: &ChordPeer) {
        if from.node == self.me.node {
            if self.predecessor.is_none() && self.successors[0].node == self.me.node {
                self.predecessor = Some(self.me.clone());
            }
            return;
        }
        let take = match &self.predecessor {
            None => true,
            Some(p) if p.node == self.me.node => true,
            Some(p) => between(p.ring_id(), from.ring_id(), self.id),
        };
        if !take {
            return;
        }
        let old = self.predecessor.replace(from.clone());
        if let Some(old) = old.filter(|o| o.node != self.me.node && !self.is_failed(&o.node)) {
            // Tell the old predecessor at once that a node joined between us (rectify).
            let state = ChordState {
                request: 0,
                predecessor: Some(from.clone()),
                successors: self.successors.clone(),
            };
            self.send(&old, ChordMessage::State(state));
        }
        if self.successors[0].node == self.me.node {
            self.successors = vec![from.clone()];
        }
        // Keys move to a new owner on join: whatever is not in (new predecessor, me] is its.
        self.hand_over_outside(now);
    }

    /// Sends the predecessor copies of every record whose position this node does not cover
    /// by its own view (not in (predecessor, self]), unless a handover is still unanswered.
    /// The copies stay here until the predecessor confirms them (SPEC.md §20.3).
    pub(super) fn hand_over_outside(&mut self, now: Instant) {
        let Some(pred) = self.predecessor.clone().filter(|p| p.node != self.me.node) else {
            return;
        };
        if !self.handovers.is_empty() {
            return;
        }
        if self
            .handover_wait
            .is_some_and(|(until, _, node)| node == pred.node && now < until)
        {
            return;
        }
        self.handover_refused = false;
        self.handover_confirmed = false;
        self.handover_to = Some(pred.node);
        let records = self.store.outside(now, pred.ring_id(), self.id);
        let mut chunks = handover_chunks(records);
        // A round sends at most this many; the rest go once these are confirmed.
        chunks.truncate(HANDOVER_CHUNKS_PER_ROUND);
        for chunk in chunks {
            self.metrics.records_handed_over += chunk.len() as u64;
            let keys = chunk.iter().map(|r| (r.position, r.key.clone())).collect();
            let request = self.call(now, &pred, Purpose::Handover, |request| {
                ChordMessage::Handover(ChordHandover {
                    request,
                    records: chunk,
                })
            });
            self.handovers.insert(request, keys);
        }
    }

    /// The answer to a handover: on `Stored`, drops the records it carried that this node
    /// still does not cover by its own view; otherwise keeps them for a later handover.
    /// The round ends once every message is answered or timed out
    /// ([`end_handover_round`](Self::end_handover_round)).
    pub(super) fn handover_answered(&mut self, now: Instant, request: u64, outcome: StoreOutcome) {
        let Some(keys) = self.handovers.remove(&request) else {
            return;
        };
        let Some(pred) = self.predecessor.as_ref().map(ChordPeer::ring_id) else {
            return;
        };
        if outcome == StoreOutcome::Stored {
            self.handover_confirmed = true;
            for (position, key) in keys {
                if !in_half_open(pred, position, self.id) {
                    self.store.remove(position, &key);
                    self.metrics.records_handover_confirmed += 1;
                }
            }
        } else {
            self.handover_refused = true;
        }
        if self.handovers.is_empty() {
            self.end_handover_round(now);
        }
    }

    /// Every message of the handover round has been answered or has timed out. A round
    /// whose every message was confirmed is followed at once by the next (the records still
    /// outside, confirmed ones gone); one with a refusal or a timeout among confirmations, at
    /// the next check. A round that confirmed nothing makes the next round to the node it
    /// went to wait [`HANDOVER_BACKOFF_MIN`], then twice as long after each such round, up to
    /// [`HANDOVER_BACKOFF_MAX`]: a predecessor that refuses everything at once (one that is
    /// full, or a node ground to sit below this one) had the whole store sent again at every
    /// check, once a second.
    pub(super) fn end_handover_round(&mut self, now: Instant) {
        let refused = std::mem::take(&mut self.handover_refused);
        let confirmed = std::mem::take(&mut self.handover_confirmed);
        let Some(to) = self.handover_to.take() else {
            return;
        };
        if confirmed || !refused {
            self.handover_wait = None;
        }
        if !refused {
            return self.hand_over_outside(now);
        }
        if confirmed {
            return;
        }
        let backoff = match self.handover_wait {
            Some((_, last, node)) if node == to => (last + last).min(HANDOVER_BACKOFF_MAX),
            _ => HANDOVER_BACKOFF_MIN,
        };
        self.handover_wait = Some((now + backoff, backoff, to));
    }

    /// Sends every record to `to` (a graceful leave: no confirmation is awaited).
    pub(super) fn hand_over_all(&mut self, now: Instant, to: &ChordPeer) {
        let chunks = leave_chunks(self.store.take_all(now));
        self.metrics.records_handed_over += chunks.iter().map(Vec::len).sum::<usize>() as u64;
        for chunk in chunks {
            let request = self.new_request();
            self.send(
                to,
                ChordMessage::Handover(ChordHandover {
                    request,
                    records: chunk,
                }),
            );
        }
    }

    pub(super) fn fix_fingers(&mut self, now: Instant) {
        if !self.joined || self.finger_lookup {
            return;
        }
        self.finger_lookup = true;
        let i = self.next_finger;
        self.start_lookup(now, finger_start(self.id, i), LookupFor::Finger(i));
    }

    pub(super) fn check_predecessor(&mut self, now: Instant) {
        self.store.expire(now);
        self.failed.retain(|_, until| *until > now);
        self.hand_over_outside(now);
        let Some(p) = self.predecessor.clone() else {
            return;
        };
        if p.node == self.me.node
            || self
                .rpcs
                .values()
                .any(|r| r.purpose == Purpose::CheckPredecessor)
        {
            return;
        }
        self.call(now, &p, Purpose::CheckPredecessor, ChordMessage::GetState);
    }
}

/// Encoded bytes of one CHORD_HANDOVER's records, at most, by [`record_bytes_max`]: a message
/// ends before a record that would take it past this (a record alone always goes: at most
/// `CHORD_KEY_BYTES_MAX` + `CHORD_VALUES_MAX` values of `CHORD_VALUE_BYTES_MAX`, about
/// 4.2 MB, well within `PAYLOAD_BYTES_MAX`).
pub(super) const HANDOVER_BYTES_MAX: usize = 1024 * 1024;

/// CHORD_HANDOVER messages one handover round sends, at most; the next round follows once
/// each is confirmed. So a round queues at most about 4 MiB (plus one record) for the
/// predecessor, not the whole store (up to `stored_bytes_max`, 128 MiB, past the send
/// queue's bound: the predecessor was closed as slow at every round).
pub(super) const HANDOVER_CHUNKS_PER_ROUND: usize = 4;

/// The wait before the next handover round to a predecessor after one it refused or left
/// unanswered; it doubles after each such round, up to [`HANDOVER_BACKOFF_MAX`].
pub(super) const HANDOVER_BACKOFF_MIN: Duration = Duration::from_secs(2);

/// The longest wait between handover rounds to a predecessor that keeps refusing.
pub(super) const HANDOVER_BACKOFF_MAX: Duration = Duration::from_secs(64);

/// Records a leaving node hands its successor, bytes at most (by [`record_bytes_max`]): half
/// the default send queue bound, so they arrive.
pub(super) const LEAVE_HANDOVER_BYTES_MAX: usize = 32 * 1024 * 1024;

/// What a leaving node hands its successor: `records` in CHORD_HANDOVER loads, at most
/// [`LEAVE_HANDOVER_BYTES_MAX`] of them. The whole store (up to `stored_bytes_max`) queued at
/// once went over the send queue's bound and closed the successor as slow, so none of it
/// arrived; what is left over has its other replicas.
pub(super) fn leave_chunks(records: Vec<ChordRecord>) -> Vec<Vec<ChordRecord>> {
    let mut bytes = 0;
    handover_chunks(records)
        .into_iter()
        .take_while(|c| {
            bytes += c.iter().map(record_bytes_max).sum::<usize>();
            bytes <= LEAVE_HANDOVER_BYTES_MAX
        })
        .collect()
}

/// The bytes `r` takes in a CHORD_HANDOVER, at most (postcard: varints at their longest).
pub(super) fn record_bytes_max(r: &ChordRecord) -> usize {
    // Position and key length; per value the writer, seq, op tag and length, lifetime and
    // signature.
    let value_fixed = 32 + 10 + 1 + 5 + 11 + 64;
    10 + 5
        + r.key.len()
        + 5
        + r.values
            .iter()
            .map(|v| value_fixed + v.value().map_or(0, <[u8]>::len))
            .sum::<usize>()
}

/// `records` cut into CHORD_HANDOVER loads: at most `HANDOVER_RECORDS_MAX` records and
/// `HANDOVER_BYTES_MAX` bytes each (a longer record alone), in order.
pub(super) fn handover_chunks(records: Vec<ChordRecord>) -> Vec<Vec<ChordRecord>> {
    let mut chunks: Vec<Vec<ChordRecord>> = Vec::new();
    let mut bytes = 0;
    for r in records {
        let len = record_bytes_max(&r);
        let full = chunks.last().is_none_or(|c| {
            c.len() == HANDOVER_RECORDS_MAX || (!c.is_empty() && bytes + len > HANDOVER_BYTES_MAX)
        });
        if full {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        if let Some(c) = chunks.last_mut() {
            c.push(r);
        }
    }
    chunks
}
