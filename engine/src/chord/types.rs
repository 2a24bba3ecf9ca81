//! Chord's public vocabulary: its configuration, the application's requests and their
//! results, the outputs it emits, and its counters.

use bytes::Bytes;
use weft_protocol::{ChordMessage, ChordPeer, NodeId};

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
    /// Values one key may hold; a put beyond it drops the oldest.
    pub values_per_key_max: usize,
    /// Operations (put, get, delete, lookup) in progress at once.
    pub ops_max: usize,
    /// Peers remembered as failed, each for `failed_for`.
    pub failed_max: usize,
    /// How long a peer that failed to answer is left out of routing.
    pub failed_for: Duration,
}

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
    /// The value was stored under this many of the key's 5 positions.
    Put {
        /// Replicas that acknowledged.
        replicas: u8,
    },
    /// The key's values (empty: none), union of every replica that answered.
    Get {
        /// Distinct values.
        values: Vec<Bytes>,
    },
    /// The values were removed under this many positions.
    Delete {
        /// Replicas that acknowledged.
        replicas: u8,
    },
    /// The node that owns a ring position, and how many nodes the lookup contacted.
    Lookup {
        /// The owner.
        owner: NodeId,
        /// Nodes sent CHORD_FIND (the paper's path length).
        hops: u32,
    },
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
}
