//! Application requests: put, get, delete and lookup over the replica positions of a key,
//! their completion, and read repair.

use weft_protocol::{
    key_position, ChordFetch, ChordMessage, ChordPeer, ChordStore, ChordValue, NodeId, StoreOp,
    CHORD_REPLICAS,
};

use bytes::Bytes;

use super::lookup::LookupFor;
use super::{
    Chord, ChordError, ChordEvent, ChordOutput, ChordRequest, ChordResult, Deadline, Purpose,
};
use crate::time::Instant;

/// One replica position of an application request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Slot {
    Pending {
        attempts: u32,
    },
    /// Answered by `owner`; `had_values` for a get.
    Done {
        owner: ChordPeer,
        had_values: bool,
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
    pub(super) values: Vec<ChordValue>,
    pub(super) deadline: Instant,
}

impl Chord {
    /// Starts an application request; its end comes as [`ChordOutput::Event`].
    pub fn request(&mut self, now: Instant, app_request: u64, request: ChordRequest) {
        self.start(now);
        if self.ops.len() >= self.config.ops_max {
            self.outputs.push_back(ChordOutput::Event(ChordEvent {
                request: app_request,
                result: Err(ChordError::Busy),
            }));
            return;
        }
        let slots = match request {
            ChordRequest::Lookup { .. } => 1,
            _ => CHORD_REPLICAS,
        };
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
                values: Vec::new(),
                deadline,
            },
        );
        self.deadlines.insert((deadline, Deadline::Op(op_id)));
        for slot in 0..slots {
            self.start_slot(now, op_id, slot);
        }
        self.pump(now);
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
        let position = Self::op_key_position(op, slot);
        match &op.request {
            ChordRequest::Lookup { .. } => {
                op.hops = hops;
                op.owner = Some(owner.node);
                op.slots[slot] = Slot::Done {
                    owner,
                    had_values: false,
                };
                self.maybe_finish(op_id);
            }
            ChordRequest::Put {
                key,
                value,
                lifetime_ms,
            } => {
                let msg = ChordStore {
                    request: 0,
                    position,
                    key: key.clone(),
                    op: StoreOp::Put(ChordValue {
                        value: value.clone(),
                        lifetime_ms: *lifetime_ms,
                    }),
                };
                self.call(now, &owner, Purpose::Store { op: op_id, slot }, |request| {
                    ChordMessage::Store(ChordStore { request, ..msg })
                });
            }
            ChordRequest::Delete { key, value } => {
                let msg = ChordStore {
                    request: 0,
                    position,
                    key: key.clone(),
                    op: StoreOp::Delete(value.clone()),
                };
                self.call(now, &owner, Purpose::Store { op: op_id, slot }, |request| {
                    ChordMessage::Store(ChordStore { request, ..msg })
                });
            }
            ChordRequest::Get { key } => {
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
        let had_values = !values.is_empty();
        for v in values {
            match op.values.iter_mut().find(|h| h.value == v.value) {
                Some(h) => {
                    h.lifetime_ms = match (h.lifetime_ms, v.lifetime_ms) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        _ => None,
                    }
                }
                None => op.values.push(v),
            }
        }
        op.slots[slot] = Slot::Done { owner, had_values };
        self.maybe_finish(op_id);
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
        let done = op
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Done { .. }))
            .count() as u8;
        let result = if done == 0 {
            Err(ChordError::Timeout)
        } else {
            Ok(match &op.request {
                ChordRequest::Put { .. } => ChordResult::Put { replicas: done },
                ChordRequest::Delete { .. } => ChordResult::Delete { replicas: done },
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
                            .map(|v| Bytes::from(v.value.clone()))
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

    /// Writes the values a get found back to every replica that answered without them.
    pub(super) fn read_repair(&mut self, key: &[u8], slots: &[Slot], values: &[ChordValue]) {
        if values.is_empty() {
            return;
        }
        for (slot, s) in slots.iter().enumerate() {
            let Slot::Done {
                owner,
                had_values: false,
            } = s
            else {
                continue;
            };
            for v in values {
                self.metrics.read_repairs += 1;
                // Unacknowledged: a lost write-back is repaired by the next get.
                let request = self.new_request();
                let msg = ChordStore {
                    request,
                    position: key_position(key, slot as u8),
                    key: key.to_vec(),
                    op: StoreOp::Put(v.clone()),
                };
                self.send(owner, ChordMessage::Store(msg));
            }
        }
    }
}
