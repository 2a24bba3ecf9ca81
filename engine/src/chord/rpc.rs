//! Requests to peers: request ids, sending (to a peer or to this node itself), the pending
//! request table, answers, and timeouts with their resends.

use weft_protocol::{ChordMessage, ChordPeer};

use super::{Chord, ChordOutput, Deadline};
use crate::time::Instant;

/// What the answer to a pending request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Lookup(u64),
    Stabilize,
    CheckPredecessor,
    Store {
        op: u64,
        slot: usize,
    },
    Fetch {
        op: u64,
        slot: usize,
    },
    /// A CHORD_HANDOVER; its records are in `Chord::handovers` under the request number.
    Handover,
}

/// The kinds of message that answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Found,
    State,
    Stored,
    Values,
}

impl Purpose {
    /// Whether a message of kind `answer` answers a request made for this.
    fn answered_by(&self, answer: Answer) -> bool {
        let expected = match self {
            Purpose::Lookup(_) => Answer::Found,
            Purpose::Stabilize | Purpose::CheckPredecessor => Answer::State,
            Purpose::Store { .. } | Purpose::Handover => Answer::Stored,
            Purpose::Fetch { .. } => Answer::Values,
        };
        expected == answer
    }
}

/// A request sent to a peer and not yet answered.
#[derive(Debug)]
pub(super) struct Rpc {
    pub(super) to: ChordPeer,
    pub(super) purpose: Purpose,
    pub(super) deadline: Instant,
    /// The request, kept to send again.
    pub(super) msg: ChordMessage,
    /// Times it was sent.
    pub(super) sends: u32,
}

impl Chord {
    pub(super) fn new_request(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    /// Messages this node sent itself, handled in order.
    pub(super) fn pump(&mut self, now: Instant) {
        while let Some(msg) = self.loopback.pop_front() {
            let me = self.me.clone();
            self.on_message(now, &me, msg);
        }
    }

    pub(super) fn send(&mut self, to: &ChordPeer, msg: ChordMessage) {
        if to.node == self.me.node {
            self.loopback.push_back(msg);
        } else {
            self.outputs.push_back(ChordOutput::Send {
                to: to.clone(),
                msg,
            });
        }
    }

    pub(super) fn call(
        &mut self,
        now: Instant,
        to: &ChordPeer,
        purpose: Purpose,
        msg: impl FnOnce(u64) -> ChordMessage,
    ) -> u64 {
        let request = self.new_request();
        let deadline = now + self.config.rpc_timeout;
        let msg = msg(request);
        self.rpcs.insert(
            request,
            Rpc {
                to: to.clone(),
                purpose,
                deadline,
                msg: msg.clone(),
                sends: 1,
            },
        );
        self.deadlines.insert((deadline, Deadline::Rpc(request)));
        self.send(to, msg);
        request
    }

    /// The pending request `request` if `from` is the peer it went to and `answer` is the
    /// kind of message that answers it. An answer of another kind (a CHORD_FOUND with the
    /// number of a CHORD_HANDOVER) leaves the request pending, to time out: taken, it would
    /// never finish, and what waited on it (the handover round, the finger or join lookup)
    /// would wait for good.
    pub(super) fn answered(
        &mut self,
        from: &ChordPeer,
        request: u64,
        answer: Answer,
    ) -> Option<Purpose> {
        let rpc = self.rpcs.get(&request)?;
        if rpc.to.node != from.node || !rpc.purpose.answered_by(answer) {
            return None;
        }
        let rpc = self.rpcs.remove(&request)?;
        self.deadlines
            .remove(&(rpc.deadline, Deadline::Rpc(request)));
        Some(rpc.purpose)
    }

    pub(super) fn on_rpc_timeout(&mut self, now: Instant, request: u64) {
        let Some(rpc) = self.rpcs.get_mut(&request) else {
            return;
        };
        // A lookup hop has other candidates to try: it moves on after one send.
        let sends_max = match rpc.purpose {
            Purpose::Lookup(_) => 1,
            _ => self.config.rpc_sends_max,
        };
        if rpc.sends < sends_max {
            // A lost message is no failure: send the same request again.
            rpc.sends += 1;
            rpc.deadline = now + self.config.rpc_timeout;
            self.deadlines
                .insert((rpc.deadline, Deadline::Rpc(request)));
            let (to, msg) = (rpc.to.clone(), rpc.msg.clone());
            self.send(&to, msg);
            return;
        }
        let Some(rpc) = self.rpcs.remove(&request) else {
            return;
        };
        self.metrics.rpc_timeouts += 1;
        let neighbour = matches!(rpc.purpose, Purpose::Stabilize | Purpose::CheckPredecessor);
        self.mark_failed(now, &rpc.to.node, neighbour);
        match rpc.purpose {
            Purpose::Lookup(lid) => self.lookup_step(now, lid),
            Purpose::Stabilize => self.stabilize(now),
            Purpose::CheckPredecessor => {}
            // Unconfirmed: the records stay here and go again at a later check.
            Purpose::Handover => {
                self.handovers.remove(&request);
                self.handover_refused = true;
                if self.handovers.is_empty() {
                    self.end_handover_round(now);
                }
            }
            Purpose::Store { op, slot } | Purpose::Fetch { op, slot } => {
                self.slot_failed(now, op, slot)
            }
        }
    }
}
