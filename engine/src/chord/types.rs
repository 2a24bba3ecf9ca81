//! Chord's public vocabulary: its configuration, the application's requests and their
//! results, the outputs it emits, and its counters.

use bytes::Bytes;
use weft_protocol::{ChordMessage, ChordPeer, NodeId, PublicKey, StoreOutcome};

use crate::time::Duration;

/// Chord's limits and timers. SPEC.md §20.5 lists them with these defaults.
#[derive(Debug, Clone)]
pub struct ChordConfig {
    /// Successors each node keeps (r).
    pub successor_list_len: usize,
    /// Mean period of stabilize (ask the successor for its predecessor and successor list,
    /// then notify it). Each period is drawn uniformly from half to one and a half of this.
    pub stabilize_interval: Duration,
    /// Mean period of fix-fingers (one finger lookup).
    pub fix_fingers_interval: Duration,
    /// Mean period of check-predecessor.
    pub check_predecessor_interval: Duration,
    /// A request unanswered this long is sent again, up to `rpc_sends_max` times in all;
    /// then its peer counts as failed.
    pub rpc_timeout: Duration,
    /// Sends of one request before its peer counts as failed (a lookup's CHORD_FIND is sent
    /// once: the lookup has other candidates).
    pub rpc_sends_max: u32,
    /// A put, get, delete or lookup not finished this long ends with an error event.
    pub op_timeout: Duration,
    /// Times one lookup may restart from the local table after running out of candidates.
    pub lookup_attempts_max: u32,
    /// Hops after which a lookup restarts (a routing loop while the ring heals).
    pub lookup_hops_max: u32,
    /// Records (key, position) a node holds.
    pub records_max: usize,
    /// Entries (values and tombstones, of every writer) one key may hold under one position;
    /// a new entry beyond it is refused (`KeyFull`). At most `CHORD_VALUES_MAX` (64): no
    /// CHORD_VALUES carries more.
    pub values_per_key_max: usize,
    /// Entries one key of the drops tracker's holders (SPEC.md §20.9) may hold under one
    /// position, one per holder; a new holder beyond it is refused (`KeyFull`), nothing is
    /// evicted. At most `CHORD_VALUES_MAX` (64): no CHORD_VALUES carries more.
    pub tracker_holders_max: usize,
    /// Entries one writer may hold at this node, over every key (`WriterFull` beyond).
    pub writer_values_max: usize,
    /// Bytes one writer's entries may take at this node (`WriterFull` beyond).
    pub writer_bytes_max: usize,
    /// Bytes every held entry may take in total (`StoreFull` beyond). Each entry counts its
    /// key, its value and 128 bytes.
    pub stored_bytes_max: usize,
    /// Longest a tombstone (a signed delete) is kept; after it, an older put replayed by a
    /// peer could come back.
    pub tombstone_lifetime: Duration,
    /// Operations (put, get, delete, lookup) in progress at once.
    pub ops_max: usize,
    /// Peers remembered as failed, each for `failed_for`.
    pub failed_max: usize,
    /// How long a peer that failed to answer is left out of routing.
    pub failed_for: Duration,
}

impl ChordConfig {
    /// This configuration with what would break the ring brought within bounds (SPEC.md
    /// §20.6): `successor_list_len` to 1..=`CHORD_PEERS_MAX` (a pushed CHORD_STATE of more
    /// successors was refused by every receiver, which closed the connection; none left a
    /// ring of one unable to take a successor), and each period and timeout to at least
    /// `CHORD_PERIOD_MIN` (zero re-armed its timer at once, and the host spun).
    pub fn within_bounds(mut self) -> ChordConfig {
        self.successor_list_len = self
            .successor_list_len
            .clamp(1, weft_protocol::CHORD_PEERS_MAX);
        for d in [
            &mut self.stabilize_interval,
            &mut self.fix_fingers_interval,
            &mut self.check_predecessor_interval,
            &mut self.rpc_timeout,
        ] {
            *d = (*d).max(CHORD_PERIOD_MIN);
        }
        self
    }
}

/// The shortest Chord period or request timeout a configuration may set.
pub const CHORD_PERIOD_MIN: Duration = Duration::from_millis(1);

impl Default for ChordConfig {
    fn default() -> Self {
        ChordConfig {
            successor_list_len: 8,
            stabilize_interval: Duration::from_millis(1000),
            fix_fingers_interval: Duration::from_millis(1000),
            check_predecessor_interval: Duration::from_millis(1000),
            rpc_timeout: Duration::from_millis(1000),
            rpc_sends_max: 2,
            op_timeout: Duration::from_secs(10),
            lookup_attempts_max: 3,
            lookup_hops_max: 64,
            records_max: 65_536,
            values_per_key_max: 16,
            tracker_holders_max: 64,
            writer_values_max: 4096,
            writer_bytes_max: 8 * 1024 * 1024,
            stored_bytes_max: 128 * 1024 * 1024,
            tombstone_lifetime: Duration::from_secs(24 * 3600),
            ops_max: 1024,
            failed_max: 1024,
            failed_for: Duration::from_secs(30),
        }
    }
}

/// What Chord wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChordOutput {
    /// Carry `msg` to `to`.
    Send {
        /// The peer.
        to: ChordPeer,
        /// The message.
        msg: ChordMessage,
    },
    /// A finished put, get, delete or lookup.
    Event(ChordEvent),
}

/// The end of one application request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChordEvent {
    /// The application's request id.
    pub request: u64,
    /// What came of it.
    pub result: Result<ChordResult, ChordError>,
}

/// A successful request's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChordResult {
    /// The value was stored under this many of the key's 5 positions, on this many
    /// distinct nodes, each after its commit (SPEC.md §20.8).
    Put {
        /// Positions whose replica acknowledged.
        replicas: u8,
        /// Distinct nodes that acknowledged.
        nodes: u8,
        /// Distinct replica nodes of the key: the owners of its 5 positions (several may
        /// fall on one node), at most the ring's size as this node knows it.
        of: u8,
    },
    /// The key's values (empty: none): the verified entries of every replica that answered,
    /// merged (a writer's newer entry or delete wins), without the tombstones.
    Get {
        /// Distinct values, each with its writer.
        values: Vec<ChordItem>,
    },
    /// The delete (a tombstone) was stored under this many positions, on this many
    /// distinct nodes; each owner is asked first what it holds (CHORD_FETCH), so the result
    /// says how many removed something.
    Delete {
        /// Positions whose replica acknowledged.
        replicas: u8,
        /// Distinct nodes that acknowledged.
        nodes: u8,
        /// Distinct replica nodes of the key: the owners of its 5 positions (several may
        /// fall on one node), at most the ring's size as this node knows it.
        of: u8,
        /// Distinct nodes that acknowledged and held, before, a value the delete removes (as
        /// their CHORD_VALUES said): 0 when there was nothing to delete.
        removed: u8,
    },
    /// The node that owns a ring position, and how many nodes the lookup contacted.
    Lookup {
        /// The owner.
        owner: NodeId,
        /// Nodes sent CHORD_FIND (the paper's path length).
        hops: u32,
    },
}

/// One value of a key, as a get returns it: signed by `writer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChordItem {
    /// The writer's ed25519 key (a node's [`crate::Identity::public_key`]).
    pub writer: PublicKey,
    /// The value.
    pub value: Bytes,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChordError {
    /// It did not finish within `op_timeout`, or no replica could be reached.
    #[error("chord request timed out")]
    Timeout,
    /// Too many requests are in progress.
    #[error("too many chord requests in progress")]
    Busy,
    /// The key is longer than `CHORD_KEY_BYTES_MAX` or the value longer than
    /// `CHORD_VALUE_BYTES_MAX`: no message may carry it (SPEC.md §20.2).
    #[error("chord {what} of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
}

/// What the application asks of Chord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChordRequest {
    /// Add `value` to the key's set, for `lifetime_ms` (or until deleted).
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// How long it lives, in ms.
        lifetime_ms: Option<u64>,
    },
    /// Every value of the key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Remove one value (`Some`) or all of the key's values.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// The value, or every value.
        value: Option<Vec<u8>>,
    },
    /// Which node owns a ring position.
    Lookup {
        /// The position.
        target: u64,
    },
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChordMetrics {
    /// Lookups finished (every purpose).
    pub lookups_done: u64,
    /// Lookups that gave up.
    pub lookups_failed: u64,
    /// Requests that got no answer in `rpc_timeout`.
    pub rpc_timeouts: u64,
    /// Values written back to a replica that missed them.
    pub read_repairs: u64,
    /// Records handed to another node.
    pub records_handed_over: u64,
    /// Handed-over records dropped here after their new holder confirmed them.
    pub records_handover_confirmed: u64,
    /// Entries refused because their signature or position was wrong (in CHORD_STORE,
    /// CHORD_HANDOVER or CHORD_VALUES).
    pub entries_invalid: u64,
    /// CHORD_HANDOVER entries whose position and signature were checked.
    pub handover_signatures_verified: u64,
    /// Entries refused because they break the drops tracker's rules for their key (SPEC.md
    /// §20.9): also counted in `entries_invalid`.
    pub entries_tracker_invalid: u64,
    /// Entries refused as older than one held.
    pub entries_stale: u64,
    /// Entries refused because their key was full.
    pub entries_key_full: u64,
    /// Entries refused because their writer held its limit here.
    pub entries_writer_full: u64,
    /// Entries refused because the store held its limit of records or bytes.
    pub entries_store_full: u64,
    /// Loads and stores of the records the host could not carry out, and stored snapshots
    /// that failed their hash (SPEC.md §20.8).
    pub state_failures: u64,
    /// CHORD_STORED answers not sent because [`HELD_ANSWERS_MAX`](super::HELD_ANSWERS_MAX)
    /// already waited for the next commit (the asker times out and asks again).
    pub answers_dropped: u64,
}

impl ChordMetrics {
    /// Counts a refusal (nothing for `Stored`).
    pub(super) fn count(&mut self, outcome: StoreOutcome) {
        match outcome {
            StoreOutcome::Stored => {}
            StoreOutcome::Stale => self.entries_stale += 1,
            StoreOutcome::Invalid => self.entries_invalid += 1,
            StoreOutcome::KeyFull => self.entries_key_full += 1,
            StoreOutcome::WriterFull => self.entries_writer_full += 1,
            StoreOutcome::StoreFull => self.entries_store_full += 1,
        }
    }
}
