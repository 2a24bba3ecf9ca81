//! Application requests: put, get, delete and lookup over the replica positions of a key,
//! their completion, and read repair.

use weft_protocol::{
    key_position, ChordFetch, ChordMessage, ChordPeer, ChordStore, ChordValue, NodeId, StoreOp,
    TrackerKey, CHORD_KEY_BYTES_MAX, CHORD_REPLICAS, CHORD_VALUE_BYTES_MAX,
};

use bytes::Bytes;

use super::lookup::LookupFor;
use super::store::same_slot;
use super::tracker;
use super::{
    Chord, ChordError, ChordEvent, ChordItem, ChordOutput, ChordRequest, ChordResult, Deadline,
    Purpose,
};
use crate::identity::Identity;
use crate::time::Instant;

/// One replica position of an application request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Slot {
    Pending {
        attempts: u32,
    },
    /// Answered by `owner`; for a get, the verified entries it had.
    Done {
        owner: ChordPeer,
        had: Vec<ChordValue>,
    },
    Failed,
}

/// An application request under way.
#[derive(Debug)]
pub(super) struct Op {
    pub(super) request: ChordRequest,
    pub(super) app_request: u64,
    pub(super) slots: Vec<Slot>,
    pub(super) hops: u32,
    pub(super) owner: Option<NodeId>,
    /// The signed entry a put or delete stores.
    pub(super) entry: Option<ChordValue>,
    /// A get's verified entries, merged.
    pub(super) values: Vec<ChordValue>,
    /// A delete's slots whose owner held a value the delete removes (as its CHORD_FETCH,
    /// sent before the CHORD_STORE, answered).
    pub(super) removes: Vec<bool>,
    /// Each slot's owner, once a lookup found it.
    pub(super) owners: Vec<Option<NodeId>>,
    pub(super) deadline: Instant,
}

impl Chord {
    /// Starts an application request, a put or delete signed with this machine's identity;
    /// its end comes as [`ChordOutput::Event`].
    pub fn request(&mut self, now: Instant, app_request: u64, request: ChordRequest) {
        let signer = self.identity.clone();
        self.request_signed_by(now, &signer, app_request, request);
    }

    /// Starts an application request whose put or delete `signer` signs (the node passes its
    /// `Context::identity`).
    pub fn request_signed_by(
        &mut self,
        now: Instant,
        signer: &Identity,
        app_request: u64,
        request: ChordRequest,
    ) {
        self.start(now);
        let refusal = if self.ops.len() >= self.config.ops_max {
            Some(ChordError::Busy)
        } else {
            over_limit(&request)
        };
        if let Some(error) = refusal {
            self.outputs.push_back(ChordOutput::Event(ChordEvent {
                request: app_request,
                result: Err(error),
            }));
            return;
        }
        let slots = match request {
            ChordRequest::Lookup { .. } => 1,
            _ => CHORD_REPLICAS,
        };
        let entry = self.sign(now, signer, &request);
        let op_id = self.new_request();
        let deadline = now + self.config.op_timeout;
        self.ops.insert(
            op_id,
            Op {
                request,
                app_request,
                slots: vec![Slot::Pending { attempts: 0 }; slots],
                hops: 0,
                owner: None,
                entry,
                values: Vec::new(),
                removes: vec![false; slots],
                owners: vec![None; slots],
                deadline,
            },
        );
        self.deadlines.insert((deadline, Deadline::Op(op_id)));
        for slot in 0..slots {
            self.start_slot(now, op_id, slot);
        }
        self.pump(now);
    }

    /// The signed entry a put or delete stores: sequence number one above the last, and at
    /// least the wall clock in ms when it is known. A delete lives `tombstone_lifetime`.
    fn sign(
        &mut self,
        now: Instant,
        signer: &Identity,
        request: &ChordRequest,
    ) -> Option<ChordValue> {
        let (key, op, lifetime_ms) = match request {
            ChordRequest::Put {
                key,
                value,
                lifetime_ms,
            } => (key, StoreOp::Put(value.clone()), *lifetime_ms),
            ChordRequest::Delete { key, value } => (
                key,
                StoreOp::Delete(value.clone()),
                Some(self.config.tombstone_lifetime.as_millis()),
            ),
            ChordRequest::Get { .. } | ChordRequest::Lookup { .. } => return None,
        };
        // Saturating: a wall clock given as u64::MAX (the host's input) pins it there.
        let seq = self
            .last_seq
            .saturating_add(1)
            .max(self.wall_clock_ms(now).unwrap_or(0));
        self.last_seq = seq;
        let writer = signer.public_key();
        let signature = signer.sign(&ChordValue::signed_bytes(key, &writer, seq, &op));
        Some(ChordValue {
            writer,
            seq,
            op,
            lifetime_ms,
            signature,
        })
    }

    /// The entries of a CHORD_VALUES for slot `slot` of `op_id` whose signature and key
    /// verify, and that the drops tracker's rules for the key admit at `now`; the others are
    /// dropped and counted.
    pub(super) fn verified_values(
        &mut self,
        now: Instant,
        op_id: u64,
        slot: usize,
        values: Vec<ChordValue>,
    ) -> Vec<ChordValue> {
        let Some(op) = self.ops.get(&op_id) else {
            return Vec::new();
        };
        let (ChordRequest::Get { key } | ChordRequest::Delete { key, .. }) = &op.request else {
            return Vec::new();
        };
        let position = Self::op_key_position(op, slot);
        let wall_ms = self.wall_clock_ms(now);
        let (good, bad): (Vec<ChordValue>, Vec<ChordValue>) = values.into_iter().partition(|e| {
            Self::entry_valid(position, key, e) && tracker::admit(key, e, wall_ms).is_some()
        });
        self.metrics.entries_invalid += bad.len() as u64;
        good
    }

    pub(super) fn op_key_position(op: &Op, slot: usize) -> u64 {
        match &op.request {
            ChordRequest::Put { key, .. }
            | ChordRequest::Get { key }
            | ChordRequest::Delete { key, .. } => key_position(key, slot as u8),
            ChordRequest::Lookup { target } => *target,
        }
    }

    pub(super) fn start_slot(&mut self, now: Instant, op_id: u64, slot: usize) {
        let Some(op) = self.ops.get(&op_id) else {
            return;
        };
        let target = Self::op_key_position(op, slot);
        self.start_lookup(now, target, LookupFor::Op { op: op_id, slot });
    }

    pub(super) fn slot_owner_found(
        &mut self,
        now: Instant,
        op_id: u64,
        slot: usize,
        owners: Vec<ChordPeer>,
        hops: u32,
    ) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        // Only `lookup_done` calls this, with a non-empty list (it fails empty ones).
        let owner = owners[0].clone();
        op.owners[slot] = Some(owner.node);
        let position = Self::op_key_position(op, slot);
        match (&op.request, &op.entry) {
            (ChordRequest::Lookup { .. }, _) => {
                op.hops = hops;
                op.owner = Some(owner.node);
                op.slots[slot] = Slot::Done {
                    owner,
                    had: Vec::new(),
                };
                self.maybe_finish(op_id);
            }
            // A delete first asks the owner what it holds, to count what it removes.
            (ChordRequest::Delete { key, .. }, Some(_)) => {
                let key = key.clone();
                self.call(now, &owner, Purpose::Fetch { op: op_id, slot }, |request| {
                    ChordMessage::Fetch(ChordFetch {
                        request,
                        position,
                        key,
                    })
                });
            }
            (ChordRequest::Put { key, .. }, Some(entry)) => {
                let msg = ChordStore {
                    request: 0,
                    position,
                    key: key.clone(),
                    value: entry.clone(),
                };
                self.call(now, &owner, Purpose::Store { op: op_id, slot }, |request| {
                    ChordMessage::Store(ChordStore { request, ..msg })
                });
            }
            // `request` signs every put and delete.
            (ChordRequest::Put { .. } | ChordRequest::Delete { .. }, None) => {}
            (ChordRequest::Get { key }, _) => {
                let key = key.clone();
                self.call(now, &owner, Purpose::Fetch { op: op_id, slot }, |request| {
                    ChordMessage::Fetch(ChordFetch {
                        request,
                        position,
                        key,
                    })
                });
            }
        }
    }

    /// A CHORD_VALUES for slot `slot` of `op_id` from `owner`: a get's slot is done; a
    /// delete notes whether the owner holds what it removes, then stores its tombstone there.
    pub(super) fn slot_values(
        &mut self,
        now: Instant,
        op_id: u64,
        slot: usize,
        owner: ChordPeer,
        values: Vec<ChordValue>,
    ) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let (ChordRequest::Delete { key, value }, Some(entry)) = (&op.request, &op.entry) else {
            self.slot_done(op_id, slot, owner, values);
            return;
        };
        op.removes[slot] = values.iter().any(|v| {
            v.writer == entry.writer
                && match (&v.op, value) {
                    (StoreOp::Put(held), Some(gone)) => held == gone,
                    (StoreOp::Put(_), None) => true,
                    (StoreOp::Delete(_), _) => false,
                }
        });
        let msg = ChordStore {
            request: 0,
            position: Self::op_key_position(op, slot),
            key: key.clone(),
            value: entry.clone(),
        };
        self.call(now, &owner, Purpose::Store { op: op_id, slot }, |request| {
            ChordMessage::Store(ChordStore { request, ..msg })
        });
    }

    pub(super) fn slot_done(
        &mut self,
        op_id: u64,
        slot: usize,
        owner: ChordPeer,
        values: Vec<ChordValue>,
    ) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let holders = match &op.request {
            ChordRequest::Get { key } | ChordRequest::Delete { key, .. } => {
                matches!(TrackerKey::of(key), TrackerKey::Holders(_))
            }
            ChordRequest::Put { .. } | ChordRequest::Lookup { .. } => false,
        };
        for v in &values {
            merge_entry(&mut op.values, v.clone(), holders);
        }
        op.slots[slot] = Slot::Done { owner, had: values };
        self.maybe_finish(op_id);
    }

    /// A slot's owner refused the entry (stale, full or invalid): no retry.
    pub(super) fn slot_refused(&mut self, op_id: u64, slot: usize) {
        if let Some(op) = self.ops.get_mut(&op_id) {
            op.slots[slot] = Slot::Failed;
            self.maybe_finish(op_id);
        }
    }

    /// A slot's owner failed or could not be found: look it up again while attempts remain.
    pub(super) fn slot_failed(&mut self, now: Instant, op_id: u64, slot: usize) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let retry = match &mut op.slots[slot] {
            Slot::Pending { attempts } if *attempts < self.config.lookup_attempts_max => {
                *attempts += 1;
                true
            }
            _ => false,
        };
        if retry {
            self.start_slot(now, op_id, slot);
        } else {
            op.slots[slot] = Slot::Failed;
            self.maybe_finish(op_id);
        }
    }

    pub(super) fn maybe_finish(&mut self, op_id: u64) {
        let all = self
            .ops
            .get(&op_id)
            .is_some_and(|op| op.slots.iter().all(|s| !matches!(s, Slot::Pending { .. })));
        if all {
            self.finish_op(op_id);
        }
    }

    /// Ends an operation with what it has (all slots settled, or its deadline passed).
    pub(super) fn finish_op(&mut self, op_id: u64) {
        let Some(op) = self.ops.remove(&op_id) else {
            return;
        };
        self.deadlines.remove(&(op.deadline, Deadline::Op(op_id)));
        self.cancel_op_work(op_id);
        let done = op
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Done { .. }))
            .count() as u8;
        let (nodes, of) = self.replica_nodes(&op.slots, &op.owners, None);
        let (removed, _) = self.replica_nodes(&op.slots, &op.owners, Some(&op.removes));
        let result = if done == 0 {
            Err(ChordError::Timeout)
        } else {
            Ok(match &op.request {
                ChordRequest::Put { .. } => ChordResult::Put {
                    replicas: done,
                    nodes,
                    of,
                },
                ChordRequest::Delete { .. } => ChordResult::Delete {
                    replicas: done,
                    nodes,
                    of,
                    removed,
                },
                ChordRequest::Lookup { .. } => ChordResult::Lookup {
                    // A done lookup slot always set its owner.
                    owner: op.owner.unwrap_or(self.me.node),
                    hops: op.hops,
                },
                ChordRequest::Get { key } => {
                    self.read_repair(key, &op.slots, &op.values);
                    ChordResult::Get {
                        values: op
                            .values
                            .iter()
                            .filter_map(|e| match &e.op {
                                StoreOp::Put(v) => Some(ChordItem {
                                    writer: e.writer,
                                    value: Bytes::from(v.clone()),
                                }),
                                StoreOp::Delete(_) => None,
                            })
                            .collect(),
                    }
                }
            })
        };
        self.outputs.push_back(ChordOutput::Event(ChordEvent {
            request: op.app_request,
            result,
        }));
    }

    /// Drops the lookups and requests still under way for request `op_id` (ended: done, or
    /// timed out): they went on, with their resends and dials, for up to minutes after it,
    /// so `ops_max` bounded nothing of the network work in flight. Answers that still come
    /// are ignored.
    fn cancel_op_work(&mut self, op_id: u64) {
        let lookups: Vec<u64> = self
            .lookups
            .iter()
            .filter(|(_, l)| matches!(l.purpose, LookupFor::Op { op, .. } if op == op_id))
            .map(|(lid, _)| *lid)
            .collect();
        for lid in &lookups {
            self.lookups.remove(lid);
        }
        let rpcs: Vec<(u64, Instant)> = self
            .rpcs
            .iter()
            .filter(|(_, r)| match r.purpose {
                Purpose::Store { op, .. } | Purpose::Fetch { op, .. } => op == op_id,
                Purpose::Lookup(lid) => lookups.contains(&lid),
                _ => false,
            })
            .map(|(request, r)| (*request, r.deadline))
            .collect();
        for (request, deadline) in rpcs {
            self.rpcs.remove(&request);
            self.deadlines.remove(&(deadline, Deadline::Rpc(request)));
        }
    }

    /// The distinct nodes that answered a request's slots (only the slots `only` marks, if
    /// given), and the distinct replica nodes of the key: the distinct owners its lookups
    /// found, plus one for each slot whose owner stayed unknown, at most the nodes of the ring
    /// as this node knows it (itself and its successors), and never fewer than answered.
    fn replica_nodes(
        &self,
        slots: &[Slot],
        owners: &[Option<NodeId>],
        only: Option<&[bool]>,
    ) -> (u8, u8) {
        let mut answered: Vec<NodeId> = slots
            .iter()
            .enumerate()
            .filter(|(i, _)| only.is_none_or(|o| o.get(*i).copied().unwrap_or(false)))
            .filter_map(|(_, s)| match s {
                Slot::Done { owner, .. } => Some(owner.node),
                _ => None,
            })
            .collect();
        answered.sort();
        answered.dedup();
        let mut ring: Vec<NodeId> = self.successors.iter().map(|p| p.node).collect();
        ring.push(self.me.node);
        ring.sort();
        ring.dedup();
        let mut found: Vec<NodeId> = owners.iter().flatten().copied().collect();
        found.sort();
        found.dedup();
        let unknown = owners.iter().filter(|o| o.is_none()).count();
        let known = (found.len() + unknown).min(ring.len()).max(answered.len());
        // Both are at most CHORD_REPLICAS (5): they fit a u8.
        (answered.len() as u8, known as u8)
    }

    /// Writes the entries a get found (tombstones included) back to every replica that
    /// answered without them.
    pub(super) fn read_repair(&mut self, key: &[u8], slots: &[Slot], values: &[ChordValue]) {
        for (slot, s) in slots.iter().enumerate() {
            let Slot::Done { owner, had } = s else {
                continue;
            };
            let same = |a: &ChordValue, b: &ChordValue| {
                a.writer == b.writer && a.seq == b.seq && a.op == b.op
            };
            for v in values.iter().filter(|v| !had.iter().any(|h| same(h, v))) {
                self.metrics.read_repairs += 1;
                // Unacknowledged: a lost write-back is repaired by the next get.
                let request = self.new_request();
                let msg = ChordStore {
                    request,
                    position: key_position(key, slot as u8),
                    key: key.to_vec(),
                    value: v.clone(),
                };
                self.send(owner, ChordMessage::Store(msg));
            }
        }
    }
}

/// Adds a verified entry to a get's merged set by the store's rules: a writer's higher
/// sequence number for the same value (under a holders key, `holders`: for any value) wins,
/// and its delete of every value removes its older entries.
fn merge_entry(set: &mut Vec<ChordValue>, e: ChordValue, holders: bool) {
    let same_slot = |a: &ChordValue, b: &ChordValue| same_slot(holders, a, b);
    let stale = set.iter().any(|h| {
        h.writer == e.writer
            && ((matches!(h.op, StoreOp::Delete(None)) && !same_slot(h, &e) && h.seq >= e.seq)
                || (same_slot(h, &e) && (h.seq > e.seq || (h.seq == e.seq && h.op != e.op))))
    });
    if stale {
        return;
    }
    if let Some(h) = set.iter_mut().find(|h| same_slot(h, &e) && h.seq == e.seq) {
        h.lifetime_ms = match (h.lifetime_ms, e.lifetime_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        return;
    }
    if matches!(e.op, StoreOp::Delete(None)) {
        set.retain(|h| !(h.writer == e.writer && h.seq < e.seq));
    } else {
        set.retain(|h| !same_slot(h, &e));
    }
    set.push(e);
}

/// Why no message could carry `request`: a key or value over its wire limit (SPEC.md §20.2).
fn over_limit(request: &ChordRequest) -> Option<ChordError> {
    let (key, value) = match request {
        ChordRequest::Put { key, value, .. } => (key, Some(value)),
        ChordRequest::Get { key } => (key, None),
        ChordRequest::Delete { key, value } => (key, value.as_ref()),
        ChordRequest::Lookup { .. } => return None,
    };
    let too_large = |what, len, max| (len > max).then_some(ChordError::TooLarge { what, len, max });
    too_large("key", key.len(), CHORD_KEY_BYTES_MAX)
        .or_else(|| too_large("value", value.map_or(0, Vec::len), CHORD_VALUE_BYTES_MAX))
}
