//! The start-up gate: a node restores its state before it says anything (SPEC.md §8.1).
//!
//! Every `LoadState` a part of the node asks for while it starts is registered here (and any
//! part may register one of its own with [`StartGate::register`]). Until the host has answered
//! every one, the node hands the driver no dial and no frame. They wait, in order, and go out
//! once the last load is answered; requests to the host and events go out at once. An
//! accepted connection therefore waits for its HELLO. A `Close` goes out at once too, after
//! the frames held for its connection (its HELLO, a BYE saying why: nothing of the state
//! the gate waits for): held, the connections the session closes meanwhile (an unproven one
//! evicted at each accept past `inbound_max`) would stay open, and their outputs held,
//! without bound.

use std::collections::{BTreeSet, VecDeque};

use crate::connection::ConnId;
use crate::io::{Output, RequestId};

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct StartGate {
    /// Start-up loads not yet answered.
    outstanding: BTreeSet<RequestId>,
    /// Network outputs held while the gate is closed, in the order they were made.
    held: VecDeque<Output>,
    /// A closed connection's held frames and its `Close`, going out now.
    released: VecDeque<Output>,
}

impl StartGate {
    /// A start-up load the gate waits for.
    pub(crate) fn register(&mut self, id: RequestId) {
        self.outstanding.insert(id);
    }

    /// The host answered request `id` (a start-up load or any other).
    pub(crate) fn answered(&mut self, id: RequestId) {
        self.outstanding.remove(&id);
    }

    /// Whether every start-up load is answered.
    pub(crate) fn is_open(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// The next output for the driver, drawn from `next` (the session's queue): while the gate
    /// is closed, network outputs are held and only requests and events pass; once it is
    /// open, what was held goes first.
    pub(crate) fn poll(&mut self, mut next: impl FnMut() -> Option<Output>) -> Option<Output> {
        if let Some(out) = self.released.pop_front() {
            return Some(out);
        }
        if self.is_open() {
            return self.held.pop_front().or_else(next);
        }
        loop {
            match next()? {
                out @ (Output::Request { .. } | Output::Event(_)) => return Some(out),
                out @ Output::Close { conn, .. } => {
                    let dial_held = self
                        .held
                        .iter()
                        .any(|h| matches!(h, Output::Connect { conn: c, .. } if *c == conn));
                    if dial_held {
                        // The driver has not heard of the connection: its dial and close go
                        // out together, in order.
                        self.held.push_back(out);
                        continue;
                    }
                    let (mine, rest): (VecDeque<Output>, VecDeque<Output>) = self
                        .held
                        .drain(..)
                        .partition(|held| held_for(held) == Some(conn));
                    self.held = rest;
                    self.released = mine;
                    self.released.push_back(out);
                    return self.released.pop_front();
                }
                out => self.held.push_back(out),
            }
        }
    }

    /// The driver says `conn` closed: what is held for it goes (the peer is gone; held, a
    /// peer connecting and leaving again and again before the loads were answered grew the
    /// held outputs without bound).
    pub(crate) fn forget(&mut self, conn: ConnId) {
        self.held.retain(|held| held_for(held) != Some(conn));
    }

    /// Outputs held.
    #[cfg(test)]
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }
}

/// The connection a held output is for.
fn held_for(out: &Output) -> Option<ConnId> {
    match out {
        Output::Connect { conn, .. }
        | Output::Transmit { conn, .. }
        | Output::Close { conn, .. } => Some(*conn),
        Output::Request { .. } | Output::Event(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::ConnId;
    use bytes::Bytes;

    #[test]
    fn network_outputs_wait_for_every_startup_load_and_keep_their_order() {
        let mut gate = StartGate::default();
        gate.register(RequestId(1));
        gate.register(RequestId(2));
        let mut queue: VecDeque<Output> = VecDeque::from([
            Output::Connect {
                conn: ConnId(2),
                addr: "a".into(),
            },
            Output::Request {
                id: RequestId(3),
                request: crate::HostRequest::LoadState { name: "x".into() },
            },
            Output::Transmit {
                conn: ConnId(2),
                bytes: Bytes::from_static(b"hello"),
            },
        ]);
        let out = gate.poll(|| queue.pop_front());
        assert!(matches!(out, Some(Output::Request { .. })), "{out:?}");
        assert!(gate.poll(|| queue.pop_front()).is_none(), "held");
        assert_eq!(gate.held_len(), 2);
        gate.answered(RequestId(1));
        assert!(gate.poll(|| queue.pop_front()).is_none(), "one load left");
        gate.answered(RequestId(2));
        assert!(matches!(
            gate.poll(|| queue.pop_front()),
            Some(Output::Connect { .. })
        ));
        assert!(matches!(
            gate.poll(|| queue.pop_front()),
            Some(Output::Transmit { .. })
        ));
        assert!(gate.poll(|| queue.pop_front()).is_none());
    }

    #[test]
    fn a_close_goes_out_at_once_after_its_frames_unless_its_dial_is_held() {
        let mut gate = StartGate::default();
        gate.register(RequestId(1));
        let transmit = |c| Output::Transmit {
            conn: ConnId(c),
            bytes: Bytes::from_static(b"hello"),
        };
        let close = |c| Output::Close {
            conn: ConnId(c),
            reason: crate::CloseReason::TooManyConnections,
        };
        let mut queue: VecDeque<Output> = VecDeque::from([
            transmit(1),
            Output::Connect {
                conn: ConnId(2),
                addr: "a".into(),
            },
            transmit(3),
            close(1),
            close(2),
        ]);
        // Connection 1's HELLO and close go out; 2's dial and close wait together.
        let first: Vec<Output> = std::iter::from_fn(|| gate.poll(|| queue.pop_front())).collect();
        assert!(
            matches!(
                first[..],
                [
                    Output::Transmit {
                        conn: ConnId(1),
                        ..
                    },
                    Output::Close {
                        conn: ConnId(1),
                        ..
                    }
                ]
            ),
            "{first:?}"
        );
        assert_eq!(gate.held_len(), 3);
        gate.answered(RequestId(1));
        let rest: Vec<Option<ConnId>> = std::iter::from_fn(|| gate.poll(|| queue.pop_front()))
            .map(|o| held_for(&o))
            .collect();
        assert_eq!(rest, [Some(ConnId(2)), Some(ConnId(3)), Some(ConnId(2))]);
    }
}
