//! Folder replication's vocabulary: what goes into a [`super::Replica`] and what comes out.

use bytes::Bytes;
use weft_protocol::{BlockHash, Code, FileEntry, FileKind, FolderId, NodeId, PathRefusal, Version};

use crate::time::Duration;

/// One node's copy of one folder: its limits and names.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The folder.
    pub folder: FolderId,
    /// This node's id (its short id, the first eight bytes big-endian, names its changes).
    pub me: NodeId,
    /// Storage requests outstanding at once, at most.
    pub requests_outstanding_max: usize,
    /// Block bytes asked of one peer and not yet received, at most.
    pub bytes_in_flight_per_peer_max: u64,
    /// A block asked of a peer that has not arrived after this long is asked of another.
    pub block_request_timeout: Duration,
    /// While blocks are in flight, a full scheduling pass (every missing block of every file
    /// being fetched, sorted) runs at most once in this long; changes meanwhile wait for it.
    pub full_round_interval: Duration,
    /// Blocks that fail their hash from one peer before it is disconnected.
    pub mismatches_before_disconnect: u32,
    /// Peers whose index position is kept (and persisted), at most: past it, at a link down,
    /// the unlinked ones linked longest ago are forgotten (they are then sent the whole index
    /// again if they come back).
    pub peers_kept_max: usize,
    /// How long after a change the state is persisted (changes within it are persisted
    /// together).
    pub persist_delay: Duration,
    /// How fast the stores an apply waits for may follow each other (SPEC.md §22.8): the
    /// next not before 1 ms per this many bytes of the last one's blob after it was asked
    /// for (at most `persist_delay`). Each encodes the whole state on the loop: a folder of
    /// 100,000 files (9 MB) receiving a steady stream stored it back to back.
    pub write_ahead_bytes_per_ms: usize,
    /// The state blob's name (`[a-z0-9-]`, see [`crate::HostRequest::is_valid_state_name`]).
    pub state_name: String,
    /// Replicate with these peers alone (a remote run's folder: with its requester, SPEC.md
    /// §23.3); messages about the folder from any other peer are ignored and it is not told
    /// of their links. `None`: with every linked peer that holds the folder.
    pub only_with: Option<Vec<NodeId>>,
    /// What the folder takes from which peers (a drop's folder, SPEC.md §24); `None`: every
    /// record is judged as SPEC.md §22 says. Changed with [`super::Replica::set_gate`].
    pub gate: Option<super::Gate>,
}

impl ReplicaConfig {
    /// The defaults of SPEC.md §22 for `folder` on node `me`.
    pub fn new(folder: FolderId, me: NodeId) -> ReplicaConfig {
        ReplicaConfig {
            folder,
            me,
            requests_outstanding_max: 64,
            bytes_in_flight_per_peer_max: 16 * 1024 * 1024,
            block_request_timeout: Duration::from_secs(10),
            full_round_interval: Duration::from_millis(20),
            mismatches_before_disconnect: 3,
            peers_kept_max: 1024,
            persist_delay: Duration::from_millis(500),
            write_ahead_bytes_per_ms: 64 * 1024,
            state_name: format!("replica-{folder}"),
            only_with: None,
            gate: None,
        }
    }
}

/// The short id of `node`: its first eight bytes, big-endian. Names its counter in version
/// vectors and its conflict copies.
pub fn short_id(node: &NodeId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&node.0[..8]);
    u64::from_be_bytes(b)
}

/// A temporary file the host keeps for a file being fetched, named by the engine. Its name on
/// disk is the host's business (the drivers: `.weft/tmp/<16 hex digits>`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TempId(pub u64);

/// What the engine believes is at a path; a host refuses a step whose path holds anything
/// else with [`StorageResult::Changed`] (a local change the scanner has not reported yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Expect {
    /// Nothing.
    Nothing,
    /// This, as the scanner last reported it.
    Present {
        /// File, directory or symlink.
        kind: FileKind,
        /// Size, bytes.
        size: u64,
        /// Modification time, Unix ms.
        mtime_ms: i64,
        /// Owner mode bits 0–7 (a host compares them for a file only, like the mtime): a
        /// mode change alone, which leaves size and mtime as they were, is a change too.
        mode: u8,
    },
}

/// A storage step for the host. The engine never touches a file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageRequest {
    /// Read the state blob. Answered with [`StorageResult::Loaded`].
    LoadState,
    /// Store the state blob durably and atomically. Answered with [`StorageResult::Done`].
    PersistState {
        /// The blob.
        bytes: Bytes,
    },
    /// Read `len` bytes at `offset` of the file at `path`. Answered with
    /// [`StorageResult::Block`] (the engine checks the hash), or `NotFound` if the file is
    /// shorter or gone.
    ReadBlock {
        /// The file.
        path: String,
        /// Where the block starts.
        offset: u64,
        /// Its length.
        len: u32,
    },
    /// Write `data` at `offset` of temporary file `temp` (created if new). Answered with
    /// `Done`.
    WriteTemp {
        /// The temporary file.
        temp: TempId,
        /// Where.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// Verify temporary file `temp` against `blocks` (and cut it to `size`), fsync it, give
    /// it `mode` and `mtime_ms`, and rename it to `path`, where `expect` must hold. Answered
    /// with `Done`, `Changed`, or `Corrupt` naming the blocks that failed (refetched).
    Commit {
        /// The temporary file.
        temp: TempId,
        /// Where it goes.
        path: String,
        /// Its size.
        size: u64,
        /// Its blocks, to verify.
        blocks: Vec<weft_protocol::Block>,
        /// Owner mode bits 0–7.
        mode: u8,
        /// Its modification time.
        mtime_ms: i64,
        /// What must be at `path` now.
        expect: Expect,
    },
    /// Remove temporary file `temp` (no longer wanted). Answered with `Done`.
    DiscardTemp {
        /// The temporary file.
        temp: TempId,
    },
    /// Remove what is at `path` (a directory only if empty; the drivers move files to the
    /// trash). Answered with `Done`, `Changed`, or `NotFound` (already gone: fine).
    Remove {
        /// The path.
        path: String,
        /// What must be there now.
        expect: Expect,
    },
    /// Rename `from` to `to`, replacing what `over` says is at `to` (the weft drivers keep a
    /// replaced file in the trash). Answered with `Done`, `Changed` or `NotFound`.
    Rename {
        /// The old path.
        from: String,
        /// The new path.
        to: String,
        /// What must be at `from` now.
        expect: Expect,
        /// What must be at `to` now: `Nothing` for a plain move.
        over: Expect,
    },
    /// Make a directory (its parents exist). Answered with `Done` (also if it exists).
    MakeDir {
        /// The path.
        path: String,
        /// Owner mode bits 0–7.
        mode: u8,
    },
    /// Make a symlink pointing at `target`, never following anything. Answered with `Done`
    /// or `Changed` (something is at `path`).
    MakeSymlink {
        /// The path.
        path: String,
        /// Its target.
        target: String,
    },
    /// Set the owner mode bits of what is at `path`. Answered with `Done` or `Changed`.
    SetMode {
        /// The path.
        path: String,
        /// Owner mode bits 0–7.
        mode: u8,
        /// What must be there now.
        expect: Expect,
    },
}

/// Why a storage step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The disk is full.
    DiskFull,
    /// Any other failure (one line, for logs).
    Io(String),
}

/// What became of a [`StorageRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageResult {
    /// `LoadState`: the blob, or `None` if none was ever stored.
    Loaded(Option<Bytes>),
    /// `ReadBlock`: the bytes.
    Block(Bytes),
    /// Done.
    Done,
    /// The path does not hold what `expect` said: the scanner will report what it does.
    Changed,
    /// `ReadBlock`, `Remove`, `Rename`: nothing there.
    NotFound,
    /// `Commit`: these blocks (by offset) do not match their hash; nothing was renamed.
    Corrupt(Vec<u64>),
    /// The step failed; nothing changed.
    Failed(StorageError),
}

/// What the host's scanner found changed in the folder (paths relative, `/`-separated, NFC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalChange {
    /// A file, directory or symlink is new or changed. `version`, `modified_by` and
    /// `sequence` in `entry` are ignored: the engine assigns them.
    Changed(FileEntry),
    /// What was at `path` is gone.
    Removed {
        /// The path.
        path: String,
    },
    /// What was at `from` is now at `to.path`, unchanged (the scanner's rename detection).
    Moved {
        /// The old path.
        from: String,
        /// The file at its new path (version fields ignored).
        to: FileEntry,
    },
    /// The scan that reported the changes before it is complete: paths not reported since
    /// the last `ScanDone` are unchanged.
    ScanDone,
}

/// An application command for one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaCommand {
    /// Keep `keep` (a path that is conflicted, or one of its conflict copies) as the path's
    /// content everywhere, and remove the other versions (its conflict copies) everywhere.
    Resolve {
        /// The conflicted path.
        path: String,
        /// The path whose content wins: `path` itself or one of its conflict copies.
        keep: String,
    },
    /// Replace the folder's gate (drops, SPEC.md §24): see [`super::Replica::set_gate`].
    SetGate(super::Gate),
    /// At a read-only copy, put back what the version lists wherever a local edit was
    /// refused: see [`super::Replica::revert`].
    Revert,
    /// Use these `.weftignore` rules from now on (the host reads the file): see
    /// [`super::Replica::set_ignore_rules`]. Taken while the state still loads.
    SetIgnoreRules(super::paths::IgnoreRules),
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaRefusal {
    /// `path` has no conflict copies.
    #[error("{0} is not in conflict")]
    NotConflicted(String),
    /// `keep` is neither the path nor one of its conflict copies.
    #[error("{0} is not a version of the conflicted path")]
    NotAVersion(String),
    /// The state is still loading.
    #[error("the folder is still loading")]
    Loading,
}

/// Something the application may want to know about a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaEvent {
    /// The state is loaded: the folder is ready.
    Ready,
    /// A remote version of `path` is in place.
    Updated {
        /// The path.
        path: String,
        /// Its version.
        version: Version,
    },
    /// Concurrent versions of `path`: the loser's content is kept at `copy`.
    Conflict {
        /// The path.
        path: String,
        /// Where the losing content is kept.
        copy: String,
    },
    /// A peer's path differs only in case from one held here; neither is overwritten.
    CaseClash {
        /// The path held here.
        held: String,
        /// The peer's path.
        incoming: String,
    },
    /// A path from a peer was refused (and the peer told).
    Refused {
        /// The peer.
        peer: NodeId,
        /// The path.
        path: String,
        /// Why.
        reason: PathRefusal,
    },
    /// A peer told this node it refused one of its paths.
    RefusedByPeer {
        /// The peer.
        peer: NodeId,
        /// The path.
        path: String,
        /// Why.
        reason: PathRefusal,
    },
    /// A block from `peer` failed its hash and was discarded.
    CorruptBlock {
        /// The peer.
        peer: NodeId,
        /// The block's hash.
        hash: BlockHash,
    },
    /// A storage step failed (it is retried later).
    StorageFailed {
        /// The path, if the step had one.
        path: Option<String>,
        /// Why.
        error: StorageError,
    },
    /// A local change that the folder's gate does not hold, in a read-only copy: it is not
    /// indexed and never announced (SPEC.md §24).
    LocalEditRefused {
        /// The path.
        path: String,
    },
}

/// Who a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    /// One peer.
    Peer(NodeId),
    /// Every linked peer that holds the folder.
    Links,
}

/// How a message travels to its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// At once, in order with the folder's other control messages.
    Control,
    /// Bulk data (HEREIS): behind everything else, only while the peer has room; dropped
    /// when too much of it waits (the requester asks again).
    Bulk,
    /// An index batch (IHAVE, IDELETED, IMOVED) to one peer: behind control messages, as the
    /// peer reads, never dropped. The owner holds the folder's next batches to that peer
    /// ([`super::Replica::hold_index`]) while one waits, so an index of any size never fills
    /// the connection's send queue. An owner that sends everything at once need do nothing.
    Index,
}

/// What a [`super::Replica`] asks of its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaOutput {
    /// Send the message encoded as `payload` under `code` (a replication code).
    Send {
        /// Who gets it.
        to: Recipient,
        /// Its code.
        code: Code,
        /// Its payload, uncompressed.
        payload: Bytes,
        /// How it travels.
        lane: Lane,
    },
    /// Carry out a storage step, then answer [`super::Replica::handle_completed`] with
    /// `token`.
    Request {
        /// The engine's name for it.
        token: u64,
        /// The step.
        request: StorageRequest,
    },
    /// For the application.
    Event(ReplicaEvent),
}

/// Why a peer's message is refused: its connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaFault {
    /// The peer served [`ReplicaConfig::mismatches_before_disconnect`] blocks that failed
    /// their hash.
    CorruptBlocks,
    /// A HEREIS for a block that was not asked of it, or a piece past the block's end.
    Unexpected(&'static str),
}

/// A folder's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaMetrics {
    /// HEREIS data bytes received (pieces of blocks, verified or not).
    pub block_bytes_received: u64,
    /// HEREIS data bytes sent.
    pub block_bytes_sent: u64,
    /// Bytes of index messages (LIST, IHAVE, IMOVED, IDELETED) sent.
    pub index_bytes_sent: u64,
    /// Bytes of other messages (IWANT, NOTFOUND, IREFUSE) sent.
    pub other_bytes_sent: u64,
    /// Blocks that failed their hash.
    pub blocks_corrupt: u64,
    /// Blocks copied from elsewhere in the local folder instead of fetched.
    pub blocks_copied_locally: u64,
    /// Files committed into place from a remote version.
    pub files_committed: u64,
    /// Conflicts resolved (a conflict copy made).
    pub conflicts: u64,
    /// Paths refused from peers.
    pub paths_refused: u64,
    /// Renames carried out instead of fetches.
    pub renames_applied: u64,
    /// Storage steps that failed.
    pub storage_failures: u64,
    /// Records from peers that the folder's gate left out.
    pub records_gated: u64,
    /// Local changes a read-only copy refused to index.
    pub local_edits_refused: u64,
    /// Full scheduling passes made (every missing block of every file being fetched looked
    /// at; at most one per `full_round_interval` while blocks are in flight).
    pub full_rounds: u64,
    /// IWANTs passed over because the asker's blocks already waiting for room were at half
    /// of `BULK_QUEUE_BYTES_MAX` (it asks again elsewhere when they time out).
    pub wants_behind: u64,
    /// Deletions of a directory not carried out because records present here lie under it:
    /// the directory stayed, under a newer version (SPEC.md §22.5).
    pub directories_kept: u64,
}

/// One path of the index as the engine holds it: a present file, directory or symlink, or a
/// deletion record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The entry (for a deletion: path, kind, version, modified_by, sequence; the rest empty).
    pub entry: FileEntry,
    /// Whether this is a deletion record.
    pub deleted: bool,
}

/// A file being fetched ([`crate::replicate::Replica::transfers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Its path.
    pub path: String,
    /// Bytes of its blocks written to its temporary file so far.
    pub bytes_done: u64,
    /// Its size.
    pub bytes_total: u64,
}
