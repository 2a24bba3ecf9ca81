//! Records that survive a restart (SPEC.md §20.8): a durable machine holds back every
//! CHORD_STORED that says `Stored` until the records it answers for are in the host's store;
//! its owner asks for a snapshot ([`Chord::begin_store`]), has the host store it, and then
//! releases the answers it held ([`Chord::committed`]). Answers held while a store is under
//! way go with the next one (group commit).

use bytes::Bytes;
use weft_protocol::{ChordMessage, ChordPeer, ChordStored, StoreOutcome};

use super::persist;
use super::Chord;
use crate::time::Instant;

/// The CHORD_STORED answers a snapshot holds, released when it is committed.
#[derive(Debug, Default)]
#[must_use = "release the answers with Chord::committed once the host has stored the snapshot"]
pub struct Commit {
    answers: Vec<(ChordPeer, ChordMessage)>,
}

impl Commit {
    /// Answers held.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether it holds no answer.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

/// CHORD_STORED answers a durable machine holds for the next commit, at most; past it an
/// answer is dropped (`ChordMetrics::answers_dropped`) and its asker asks again.
pub const HELD_ANSWERS_MAX: usize = 4096;

impl Chord {
    /// Whether as many answers wait for a commit as may ([`HELD_ANSWERS_MAX`]): the next
    /// snapshot should not wait for its gap.
    pub fn answers_full(&self) -> bool {
        self.held_answers.len() >= HELD_ANSWERS_MAX
    }

    /// Makes this machine durable: from now on an accepted store is answered only once
    /// committed (see the module documentation). A machine is not durable unless told.
    pub fn set_durable(&mut self, durable: bool) {
        self.durable = durable;
    }

    /// Whether the records changed, or answers wait, since the last snapshot.
    pub fn needs_store(&self) -> bool {
        self.store.is_changed() || !self.held_answers.is_empty()
    }

    /// A snapshot of every held record for the host (expiries as Unix ms by `wall_ms`, the
    /// calendar time at `now`), and the answers it commits.
    pub fn begin_store(&mut self, now: Instant, wall_ms: u64) -> (Bytes, Commit) {
        self.store.take_changed();
        self.snapshots_in_flight += 1;
        let blob = persist::encode(&self.store.stored_entries(now, wall_ms));
        let answers = std::mem::take(&mut self.held_answers);
        (blob, Commit { answers })
    }

    /// The answers held go out without a snapshot: for an owner that cannot store one (no
    /// calendar time yet, or no store allowed). No snapshot is under way for them: one
    /// counted as under way and never committed (an owner that found no answer held did
    /// not commit) held every later answer for a snapshot, for good.
    pub fn release_held(&mut self, now: Instant) {
        for (to, msg) in std::mem::take(&mut self.held_answers) {
            self.send(&to, msg);
        }
        self.pump(now);
    }

    /// The host finished storing a snapshot: its answers go out.
    pub fn committed(&mut self, now: Instant, commit: Commit) {
        self.snapshots_in_flight = self.snapshots_in_flight.saturating_sub(1);
        for (to, msg) in commit.answers {
            self.send(&to, msg);
        }
        self.pump(now);
    }

    /// Takes back a stored snapshot at `now`, when the calendar time is `wall_ms`: every
    /// entry is verified and applied as a received one would be, with the time it has left;
    /// expired ones are dropped. Returns the entries taken back, or `None` if the blob is
    /// damaged (it is then ignored).
    pub fn restore(&mut self, now: Instant, wall_ms: u64, blob: &[u8]) -> Option<usize> {
        let entries = persist::decode(blob)?;
        self.observe_wall_clock(now, Some(wall_ms));
        let was_changed = self.store.is_changed();
        let mut taken = 0;
        for (position, key, mut entry, expires_unix_ms) in entries {
            entry.lifetime_ms = match expires_unix_ms {
                Some(at) if at <= wall_ms => continue,
                Some(at) => Some(at - wall_ms),
                None => None,
            };
            if self.store_entry(now, position, &key, &entry) == StoreOutcome::Stored {
                taken += 1;
            }
        }
        if !was_changed {
            // What was taken back is what is stored already.
            self.store.take_changed();
        }
        Some(taken)
    }

    /// Counts a load or store the host could not carry out, or a stored snapshot that failed
    /// its hash.
    pub(crate) fn count_state_failure(&mut self) {
        self.metrics.state_failures += 1;
    }

    /// Answers a CHORD_STORE or CHORD_HANDOVER: at once, unless the machine is durable, the
    /// answer is `Stored`, and what it answers for may not be committed yet (records changed
    /// since the last snapshot, or a snapshot not yet committed): then it waits for the next
    /// commit. An entry already held and committed, sent again, is answered at once: it
    /// costs no snapshot (a full one, up to `stored_bytes_max`, for a message of ~130 bytes).
    pub(super) fn answer_stored(&mut self, to: &ChordPeer, answer: ChordStored) {
        let msg = ChordMessage::Stored(answer);
        let uncommitted = self.store.is_changed() || self.snapshots_in_flight > 0;
        if self.durable && answer.outcome == StoreOutcome::Stored && uncommitted {
            // Bounded: a peer resending entries while snapshots wait for their gap would
            // otherwise grow the list for as long as it likes.
            if self.held_answers.len() >= HELD_ANSWERS_MAX {
                self.metrics.answers_dropped += 1;
            } else {
                self.held_answers.push((to.clone(), msg));
            }
        } else {
            self.send(to, msg);
        }
    }
}
