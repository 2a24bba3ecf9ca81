//! Remote runs (SPEC.md §23): a node runs a program for a peer that asked and is allowed,
//! and streams its output and exit status back; the same machine asks peers to run
//! programs for the application.
//!
//! The engine never starts a process: as a runner it asks the host to (`ProcessRequest`:
//! spawn, read the next piece of output or the exit, signal the process group) and hears
//! back through `HostResult::Process`; as a requester it turns the application's
//! [`RunCommand`]s into messages and the peer's answers into [`RunEvent`]s.

mod protocol;
#[cfg(test)]
mod tests;

pub(crate) use protocol::RunProtocol;

use bytes::Bytes;
use weft_protocol::{
    ExitStatus, NodeId, OutputStream, RunFolder, RunRefusalReason, RunSignalKind, SyncPoint,
};

use crate::time::Duration;

/// How long a process has between SIGINT (a requester's interrupt) and SIGKILL.
pub const RUN_GRACE: Duration = Duration::from_millis(2_000);

/// Output bytes a runner sends for one run before the requester acknowledges them.
pub const RUN_WINDOW_BYTES: u64 = 1024 * 1024;

/// A requester acknowledges output once it holds this many bytes not yet acknowledged.
pub const RUN_ACK_BYTES: u64 = 256 * 1024;

/// Runs a runner carries out for one peer at once; more are refused (`Busy`).
pub const RUNS_PER_PEER_MAX: usize = 8;

/// Runs a runner carries out at once, for all peers; more are refused (`Busy`).
pub const RUNS_MAX: usize = 64;

/// Runs a requester has asked for and not yet seen end.
pub const RUNS_ASKED_MAX: usize = 64;

/// How long a requester waits for RUN_STARTED or RUN_REFUSED to a run without a folder; then
/// the run is `Lost` (the runner is asked to kill it, should it start after all). A runner
/// that never answers kept `weft run` waiting for as long as the link lasted.
pub const RUN_ANSWER_WAIT: Duration = Duration::from_secs(60);

/// The same for a run in a folder, whose runner first brings its copy up to date (for at
/// most 600 s, the drivers' `RUN_SYNC_TIMEOUT`).
pub const RUN_ANSWER_WAIT_IN_FOLDER: Duration = Duration::from_secs(660);

/// Who may ask this node to run programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// Runs anything at all (`weft node --allow-run`); off by default.
    pub allow: bool,
    /// The nodes whose requests it takes; no one else's.
    pub allow_from: Vec<NodeId>,
}

/// A step of a run the engine asks the host to carry out; answered with
/// `HostResult::Process(ProcessResult)` (or `Failed`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessRequest {
    /// Start the program in a process group of its own, standard input empty, standard output
    /// and error piped. Answered `Spawned` or `NotStarted`.
    Spawn {
        /// The program (with `shell`, a command line).
        program: String,
        /// Its arguments (with `shell`, joined to the command line with spaces).
        args: Vec<String>,
        /// Through `/bin/sh -c`.
        shell: bool,
        /// Inside the host's copy of this folder, else the host's run directory. The host
        /// adds the folder if it does not hold it, and starts the program only once its copy
        /// has caught up with `requester`'s up to the sync point (SPEC.md §23.5).
        folder: Option<RunFolder>,
        /// The node that asked for the run.
        requester: NodeId,
    },
    /// The next piece of output (at most `RUN_OUTPUT_BYTES_MAX` bytes), or, once both
    /// streams are closed, how the process ended. Answered `Output` or `Exited`, when there is
    /// something to say (it may take long). The engine asks again only after the answer. A
    /// run in a folder is answered `Exited` once a scan of the host's copy after the exit
    /// found every file settled (SPEC.md §23.5).
    Read,
    /// Send the signal to the process group. Answered `Signalled` at once.
    Signal(RunSignalKind),
}

/// What became of a [`ProcessRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessResult {
    /// The process runs.
    Spawned,
    /// It could not be started: the folder is unknown here, or the program could not be run.
    NotStarted {
        /// The folder asked for is not held here.
        unknown_folder: bool,
        /// One line.
        why: String,
    },
    /// A piece of output.
    Output {
        /// Which stream.
        stream: OutputStream,
        /// The bytes (1 to `RUN_OUTPUT_BYTES_MAX`).
        bytes: Bytes,
    },
    /// The process ended and its output is all read.
    Exited {
        /// How it ended.
        status: ExitStatus,
        /// A run in a folder: the host's copy once scanned after the exit (`None` without a
        /// folder, or when the copy could not be scanned).
        copy: Option<SyncPoint>,
    },
    /// The signal was sent.
    Signalled,
}

/// What the application asks of remote runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunCommand {
    /// Ask `peer` to run a program; `run` is the application's number for it, unique among
    /// its runs in progress.
    Start {
        /// The application's number.
        run: u64,
        /// Who runs it.
        peer: NodeId,
        /// The program (with `shell`, a command line).
        program: String,
        /// Its arguments.
        args: Vec<String>,
        /// Through `/bin/sh -c` on the peer.
        shell: bool,
        /// Inside the peer's copy of this folder, once caught up to this sync point.
        folder: Option<RunFolder>,
    },
    /// Ask the peer to signal run `run`'s process group.
    Signal {
        /// The run.
        run: u64,
        /// Which signal.
        signal: RunSignalKind,
    },
}

/// Why the engine refuses a [`RunCommand`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunRefusal {
    /// The node's links are not encrypted (the simulator's plaintext runs).
    #[error("links are not encrypted: no remote runs over plaintext")]
    Plaintext,
    /// No link to the peer.
    #[error("not linked to {0}")]
    NotLinked(NodeId),
    /// The peer does not take remote runs (its HELLO does not name the family).
    #[error("{0} does not take remote runs")]
    PeerRunsNone(NodeId),
    /// The request breaks a limit of SPEC.md §23.2 (no program, a NUL byte, too long).
    #[error("the program and its arguments break a limit (empty, a NUL byte, or too long)")]
    Invalid,
    /// A run with this number is in progress.
    #[error("run {0} is in progress already")]
    Duplicate(u64),
    /// [`RUNS_ASKED_MAX`] runs are in progress.
    #[error("too many runs in progress")]
    TooMany,
    /// No run with this number is in progress.
    #[error("no run {0} in progress")]
    UnknownRun(u64),
}

/// What a run the application asked for came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEvent {
    /// The application's number for it.
    pub run: u64,
    /// What happened.
    pub kind: RunEventKind,
}

/// See [`RunEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunEventKind {
    /// The peer refused it (nothing ran).
    Refused {
        /// Why.
        reason: RunRefusalReason,
        /// The peer's one line.
        text: String,
    },
    /// The process started.
    Started,
    /// A piece of its output, in order.
    Output {
        /// Which stream.
        stream: OutputStream,
        /// The bytes.
        bytes: Bytes,
    },
    /// It ended; its output is all delivered. The last event of a run.
    Exited {
        /// How it ended.
        status: ExitStatus,
        /// A run in a folder: the point the application's copy must catch up to before what
        /// the program wrote there is all back (`None` without a folder, or when the runner
        /// could not scan its copy).
        copy: Option<SyncPoint>,
    },
    /// The link to the peer went away first (the peer kills the process). The last event.
    Lost,
}

/// Counters of remote runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunMetrics {
    /// Runs this node started for peers.
    pub served: u64,
    /// RUN_REQUESTs this node refused.
    pub refused: u64,
    /// Output bytes this node sent for peers' runs.
    pub output_bytes_sent: u64,
    /// Runs this node asked peers for.
    pub asked: u64,
    /// Runs given up for want of RUN_STARTED or RUN_REFUSED within `RUN_ANSWER_WAIT`.
    pub asked_unanswered: u64,
    /// Output bytes this node received from peers' runs.
    pub output_bytes_received: u64,
}
