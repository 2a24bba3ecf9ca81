//! The control socket: how `weft send`, `listen`, `network`, `stats`, `id`, `connect`,
//! `disconnect`, `shutdown` and the table and Chord commands reach a running node.
//!
//! A Unix stream socket at `<state>/control.sock` (reachable by the folder's owner only). A
//! client writes one request as a JSON line and reads JSON-line replies:
//!
//! ```text
//! {"op":"send","message":"hello"}   ->  {"reply":"sent"}
//! {"op":"network"}                  ->  {"reply":"hosts","data":[HostReport, ...]}
//! {"op":"stats"}                    ->  {"reply":"stats","data":StatsReport}
//! {"op":"listen"}                   ->  {"reply":"listening"}, then one
//!                                       {"reply":"broadcast","data":DeliveryReport} per delivery
//! {"op":"table_set","key":"k","value":"v","lease_ms":null}
//!                                   ->  {"reply":"written"}
//! {"op":"table_delete","key":"k"}   ->  {"reply":"written"}
//! {"op":"table_release","key":"k"}  ->  {"reply":"written"}
//! {"op":"table_get","key":"k"}      ->  {"reply":"table","data":[TableEntryReport]} (0 or 1)
//! {"op":"table_list"}               ->  {"reply":"table","data":[TableEntryReport, ...]}
//! {"op":"put","key":"k","value":"v"} ->  {"reply":"stored","data":5}  (replicas reached)
//! {"op":"get","key":"k"}            ->  {"reply":"values","data":["v", ...]}
//! {"op":"delete","key":"k"}         ->  {"reply":"deleted","data":5}  (optional "value")
//!                                       (put, get, delete with "hex":true: keys and values
//!                                       are hex digits, any bytes, and so are the values)
//! {"op":"id"}                       ->  {"reply":"id","data":IdReport}
//! {"op":"connect","addr":"IP:PORT"} ->  {"reply":"dialing"}
//! {"op":"disconnect","node":"9f3c"} ->  {"reply":"disconnected","data":"<the node's full id>"}
//!                                       (a unique prefix of a known node's hex id)
//! {"op":"shutdown"}                 ->  {"reply":"stopping","data":<the node's pid>}, then the
//!                                       node says BYE, flushes and exits
//! {"op":"run","peer":"9f3c","program":"make","args":["-j4"],"shell":false}
//!                                   ->  {"reply":"run_started"}, then {"reply":"run_output",
//!                                       "data":{"stream":"stdout","hex":"…"}} per piece, then
//!                                       {"reply":"run_exit","data":{"code":0}} (or "signal");
//!                                       or {"reply":"run_refused","data":"…"}, {"reply":"run_lost"}.
//!                                       The client may send {"signal":"interrupt"} or
//!                                       {"signal":"kill"} lines meanwhile; if it goes away, the
//!                                       run is killed (SPEC.md §23.6). With
//!                                       "sync":"/abs/dir", the directory is replicated to the
//!                                       peer first and the program runs in its copy
//! {"op":"drop_create","dir":"/abs/dir"}
//!                                   ->  {"reply":"drop_created","data":"<drop id, 64 hex>"}
//! {"op":"drop_subscribe","drop":"<64 hex>","dir":"/abs/dir"}
//!                                   ->  {"reply":"drop_subscribed"}
//! {"op":"drop_publish","dir":"/abs/dir"}
//!                                   ->  {"reply":"drop_published","data":DropPublishedReport}
//!                                       (once a scan of the folder has settled)
//! {"op":"drop_owners","drop":"<64 hex>","node":"<64 hex>","add":true}
//!                                   ->  {"reply":"drop_published","data":DropPublishedReport}
//! {"op":"drop_status"}              ->  {"reply":"drops","data":[DropReport, ...]}
//! {"op":"drop_revert","dir":"/abs/dir"}
//!                                   ->  {"reply":"drop_reverted","data":PATHS}
//! {"op":"throughput"}               ->  {"reply":"throughput","data":[ThroughputSample, ...]}
//!                                       (one a second, the last ten minutes, oldest first)
//! anything wrong                    ->  {"reply":"error","data":"one-line reason"}
//! ```
//! One request per connection; the node closes it after the reply (`listen`: when the node
//! stops or the client goes away). The node's limits ([`ControlLimits`]) keep slow clients
//! from locking others out or pinning memory: the request has a total deadline, a full
//! socket cuts off its slowest requester for a newcomer, a write without progress drops the
//! client, and a listener's backlog is bounded in bytes.

mod client;
mod server;

use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::handle::Backlog;
use crate::report::{
    DeliveryReport, DropReport, FolderReport, HostReport, IdReport, StatsReport, TableEntryReport,
    ThroughputSample,
};

pub use client::{
    listen, request, request_within, run, ControlError, Deliveries, RunClient, RunSignaller,
};
pub use server::ControlServer;

/// The longest request line the node reads: a `send` of the largest broadcast
/// (`Limits::broadcast_payload_max`, 16 MiB) fits even with every byte escaped as JSON
/// `\u00XX` (6 bytes).
pub const REQUEST_BYTES_MAX: u64 = 6 * 16 * 1024 * 1024 + 4096;

/// The longest request line of any operation but `send`: the largest of the others, a table
/// value of `TABLE_VALUE_BYTES_MAX` (1 MiB) or a run's command of `RUN_COMMAND_BYTES_MAX`
/// (256 KiB), fits even with every byte escaped as JSON `\u00XX`.
pub const SMALL_REQUEST_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// Requests longer than [`SMALL_REQUEST_BYTES_MAX`] (sends of large broadcasts) read at
/// once, over every client, at most; past it such a request is refused (the client may try
/// again). Each might take `REQUEST_BYTES_MAX` as it is read and about as much again parsed:
/// with a bound per client only, 64 clients each sending 90 MiB made the node hold some
/// 8 GiB.
pub const LARGE_REQUESTS_READ_MAX: usize = 2;

/// The control socket's limits, so that no client, however slow, can lock the others out or
/// make the node hold memory for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLimits {
    /// Clients served at once. When all slots are taken, the client that has been sending its
    /// request the longest is cut off to make room; if every client's request has been read,
    /// the newcomer is refused.
    pub clients_max: usize,
    /// `listen` sessions at once (of `clients_max`); more are refused.
    pub listeners_max: usize,
    /// How long a client may take to send its whole request line (a total, not per read).
    pub request_timeout: Duration,
    /// How long a write to a client may make no progress before the client is dropped.
    pub write_timeout: Duration,
    /// How far a `listen` client may fall behind before deliveries are dropped for it.
    pub listen_backlog: Backlog,
}

impl Default for ControlLimits {
    fn default() -> Self {
        ControlLimits {
            clients_max: 64,
            listeners_max: 16,
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            listen_backlog: Backlog {
                deliveries_max: 4096,
                bytes_max: 8 * 1024 * 1024,
            },
        }
    }
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Broadcast `message` (as UTF-8 bytes) to the mesh.
    Send {
        /// The text.
        message: String,
    },
    /// Stream every broadcast delivered from now on.
    Listen,
    /// List direct and heard-of hosts.
    Network,
    /// The node's counters.
    Stats,
    /// Set a table key (UTF-8), optionally leasing it for `lease_ms`.
    TableSet {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// The lease, ms.
        #[serde(default)]
        lease_ms: Option<u64>,
    },
    /// Delete a table key.
    TableDelete {
        /// The key.
        key: String,
    },
    /// End this node's lease on a table key.
    TableRelease {
        /// The key.
        key: String,
    },
    /// One table key.
    TableGet {
        /// The key.
        key: String,
    },
    /// Every set table key (with `entries_max`: the first so many, by key; with
    /// `value_bytes_max`: so many bytes of each value, and its length).
    TableList {
        /// The bound on keys, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entries_max: Option<usize>,
        /// The bound on each value's bytes, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value_bytes_max: Option<usize>,
    },
    /// Chord: add `value` to the key's values (UTF-8 text), for `lifetime_ms` if given.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// How long the value lives, ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lifetime_ms: Option<u64>,
        /// The key and value are hex digits (any bytes), not text.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        hex: bool,
    },
    /// Chord: every value of the key.
    Get {
        /// The key.
        key: String,
        /// The key is hex digits, and the values come back as hex digits.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        hex: bool,
    },
    /// Chord: remove one value of the key, or all of them.
    Delete {
        /// The key.
        key: String,
        /// The value, or every value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        /// The key and value are hex digits (any bytes), not text.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        hex: bool,
    },
    /// Who the node is and what it holds.
    Id,
    /// Dial `addr` (`IP:PORT`).
    Connect {
        /// The address.
        addr: String,
    },
    /// Close the link to the node whose hex id starts with `node`.
    Disconnect {
        /// A unique prefix of the node's id, in hex.
        node: String,
    },
    /// Stop the node: BYE to every peer, flush, exit.
    Shutdown,
    /// The shared folders and every file's state (with `files_max`: each folder's first
    /// `files_max` paths of each state, and the count of all).
    Status {
        /// The bound, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        files_max: Option<usize>,
    },
    /// Ask the linked peer whose hex id starts with `peer` to run a program (SPEC.md §23),
    /// and stream what becomes of it.
    Run {
        /// A unique prefix of the peer's id, in hex.
        peer: String,
        /// The program (with `shell`, a command line).
        program: String,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Through `/bin/sh -c` on the peer.
        #[serde(default)]
        shell: bool,
        /// `--sync DIR`: this directory (absolute, canonical) is replicated to the peer first
        /// and the program runs inside the peer's copy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sync: Option<String>,
    },
    /// Keep `keep` (the conflicted path or one of its conflict copies) as `path`'s content
    /// everywhere and remove the other versions.
    Resolve {
        /// The conflicted path.
        path: String,
        /// The version to keep.
        keep: String,
    },
    /// Create a drop whose folder is `dir` (absolute; made if absent).
    DropCreate {
        /// The directory.
        dir: String,
    },
    /// Subscribe to `drop` (64 hex digits), its folder at `dir` (absolute, empty or absent).
    DropSubscribe {
        /// The drop's id.
        drop: String,
        /// The directory.
        dir: String,
    },
    /// Publish the drop whose folder is `dir` (absolute) once a scan of it has settled.
    DropPublish {
        /// The directory.
        dir: String,
    },
    /// Publish `drop` with the linked peer `node` (64 hex digits) added to (`add`) or removed
    /// from its secondary owners.
    DropOwners {
        /// The drop's id.
        drop: String,
        /// The peer's node id.
        node: String,
        /// Add it (else remove it).
        add: bool,
    },
    /// Every drop the node holds.
    DropStatus,
    /// Put back what the version lists in the subscribed drop whose folder is `dir`
    /// (absolute), wherever a local edit was refused.
    DropRevert {
        /// The directory.
        dir: String,
    },
    /// The node's byte totals sampled once a second over the last ten minutes.
    Throughput,
}

/// What the node answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", content = "data", rename_all = "snake_case")]
pub enum ControlReply {
    /// The broadcast was accepted.
    Sent,
    /// Deliveries follow.
    Listening,
    /// The answer to `network`.
    Hosts(Vec<HostReport>),
    /// The answer to `stats`.
    Stats(Box<StatsReport>),
    /// One delivered broadcast (after `listening`).
    Broadcast(DeliveryReport),
    /// The table write was accepted and flooded.
    Written,
    /// The answer to `table_get` and `table_list`.
    Table(Vec<TableEntryReport>),
    /// The put was committed by `nodes` of the `of` distinct replica nodes there are
    /// (min(5, the ring's size)).
    Stored {
        /// Distinct nodes that stored it, each after its commit.
        nodes: u8,
        /// Distinct replica nodes there are.
        of: u8,
    },
    /// The key's values (UTF-8, invalid bytes replaced).
    Values(Vec<String>),
    /// The delete removed a value on `nodes` of the `of` distinct replica nodes there are,
    /// each after its commit.
    Deleted {
        /// Distinct nodes that removed a value.
        nodes: u8,
        /// Distinct replica nodes there are.
        of: u8,
    },
    /// A delete of a value this node did not put (or of a key with none of its values).
    NoSuchValue,
    /// The answer to `id`.
    Id(Box<IdReport>),
    /// The node is dialing the address of a `connect`.
    Dialing,
    /// The node closed its link to this node (full hex id).
    Disconnected(String),
    /// The node is stopping; its process id, to wait for.
    Stopping(u32),
    /// The answer to `status`.
    Folders(Vec<FolderReport>),
    /// The resolve was accepted: the other versions are being removed everywhere.
    Resolved,
    /// The remote process started.
    RunStarted,
    /// A piece of the remote process's output.
    RunOutput(RunOutputReport),
    /// The remote process ended; its output is all sent.
    RunExit(RunExitReport),
    /// The peer refused the run (nothing ran).
    RunRefused(String),
    /// The link to the peer went away before the run ended, or the peer never answered.
    RunLost,
    /// The drop was created: its id (64 hex digits).
    DropCreated(String),
    /// The drop is held as a subscriber.
    DropSubscribed,
    /// A version of a drop was published.
    DropPublished(DropPublishedReport),
    /// A revert started: how many paths it puts back.
    DropReverted(usize),
    /// The answer to `drop_status`.
    Drops(Vec<DropReport>),
    /// The answer to `throughput`, oldest first.
    Throughput(Vec<ThroughputSample>),
    /// The request failed.
    Error(String),
}

/// A piece of a remote run's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutputReport {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The bytes, in hex.
    pub hex: String,
}

/// How a remote run's process ended: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunExitReport {
    /// Its exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u8>,
    /// The signal that ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<u8>,
    /// A run with `--sync`: what the program wrote in the peer's copy did not all come back
    /// to the directory (the runner did not scan its copy, the link went, or the copy did
    /// not catch up within `RUN_SYNC_TIMEOUT`; the node's log says which).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_back: bool,
}

/// A version a `drop_publish` or `drop_owners` published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropPublishedReport {
    /// The drop's id (64 hex digits).
    pub drop: String,
    /// The new version's id (64 hex digits).
    pub version: String,
    /// Its counter.
    pub counter: u64,
}

/// A line a `run` client sends after its request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSignalLine {
    /// `interrupt` or `kill`.
    pub signal: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_broadcast_fits_in_a_request() {
        let payload_max = weft_engine::Limits::default().broadcast_payload_max;
        let worst = ControlRequest::Send {
            message: "\u{1}".repeat(payload_max),
        };
        let line = serde_json::to_vec(&worst).unwrap();
        // The line and its newline.
        assert!((line.len() as u64) < REQUEST_BYTES_MAX, "{}", line.len());
    }

    #[test]
    fn drop_lines_look_as_documented() {
        let owners = ControlRequest::DropOwners {
            drop: "d".into(),
            node: "n".into(),
            add: true,
        };
        assert_eq!(
            serde_json::to_string(&owners).unwrap(),
            r#"{"op":"drop_owners","drop":"d","node":"n","add":true}"#
        );
        let published = ControlReply::DropPublished(DropPublishedReport {
            drop: "d".into(),
            version: "v".into(),
            counter: 2,
        });
        assert_eq!(
            serde_json::to_string(&published).unwrap(),
            r#"{"reply":"drop_published","data":{"drop":"d","version":"v","counter":2}}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlReply::DropSubscribed).unwrap(),
            r#"{"reply":"drop_subscribed"}"#
        );
    }

    #[test]
    fn lines_look_as_documented() {
        let send = ControlRequest::Send {
            message: "hello".into(),
        };
        assert_eq!(
            serde_json::to_string(&send).unwrap(),
            r#"{"op":"send","message":"hello"}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlRequest::Listen).unwrap(),
            r#"{"op":"listen"}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlReply::Sent).unwrap(),
            r#"{"reply":"sent"}"#
        );
        assert_eq!(
            serde_json::to_string(&ControlReply::Error("no".into())).unwrap(),
            r#"{"reply":"error","data":"no"}"#
        );
    }
}
