//! Mesh flood broadcast: sequence numbers for what this node originates, and the seen windows
//! that make every node relay and deliver each broadcast at most once.
//!
//! The three rules (SPEC.md §Mesh): the originator sends to all its mesh links; a receiver of a
//! new broadcast relays the received frame, unchanged, to all its mesh links except the one it
//! came on; nobody relays or delivers a broadcast twice.

use weft_protocol::NodeId;

use crate::seen::SeenWindows;

/// A peer's incarnation compared with the one last recorded for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncarnationCheck {
    /// Never seen, or the same as before.
    Current,
    /// Higher than before: the peer restarted.
    Restarted,
    /// Lower than before: a message from a past run.
    Stale,
}

/// The mesh sub-machine's state.
#[derive(Debug)]
pub(crate) struct Mesh {
    seen: SeenWindows,
    last_seq: u64,
}

impl Mesh {
    pub(crate) fn new(seen_origins_max: usize) -> Mesh {
        Mesh {
            seen: SeenWindows::new(seen_origins_max),
            last_seq: 0,
        }
    }

    /// The sequence number for the next broadcast this node originates (from 1).
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// Records a received broadcast; true if it is new and must be relayed and delivered.
    pub(crate) fn accept(&mut self, origin: NodeId, incarnation: u64, seq: u64) -> bool {
        self.seen.insert(origin, incarnation, seq)
    }

    /// Whether `incarnation` is older than the one recorded for `node`.
    pub(crate) fn is_stale(&self, node: NodeId, incarnation: u64) -> bool {
        self.seen
            .high(&node)
            .is_some_and(|(known, _)| incarnation < known)
    }

    /// Compares a handshake's incarnation with what is known of the node, recording it.
    pub(crate) fn check_incarnation(&mut self, node: NodeId, incarnation: u64) -> IncarnationCheck {
        match self.seen.high(&node) {
            Some((known, _)) if incarnation < known => IncarnationCheck::Stale,
            Some((known, _)) if incarnation > known => {
                // Seq 0 is never sent, so this only opens the new incarnation's window.
                self.seen.insert(node, incarnation, 0);
                IncarnationCheck::Restarted
            }
            Some(_) => IncarnationCheck::Current,
            None => {
                self.seen.insert(node, incarnation, 0);
                IncarnationCheck::Current
            }
        }
    }

    /// Origins remembered now.
    pub(crate) fn origins_len(&self) -> usize {
        self.seen.len()
    }
}
