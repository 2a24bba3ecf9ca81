//! What goes into a node and what comes out: the driver's and the application's vocabulary.

use bytes::Bytes;
use weft_protocol::NodeId;

use crate::chord::{ChordCommand, ChordEvent, ChordRefusal};
pub use crate::connection::{CloseReason, ConnId, Direction};
use crate::mesh::{MeshCommand, MeshEvent, MeshRefusal};
use crate::replicate::{
    ReplicateCommand, ReplicateEvent, ReplicateRefusal, StorageRequest, StorageResult,
};
use crate::run::{ProcessRequest, ProcessResult, RunCommand, RunEvent, RunRefusal};
use crate::table::{TableCommand, TableEvent, TableRefusal};

/// A request to the host, named by the engine (as it names outbound connections) and answered
/// with [`Input::Completed`] carrying the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Work the engine asks the host to do for it: storage, which the engine never touches itself.
/// A host answers every request, once, with [`Input::Completed`]; one it cannot carry out is
/// answered with an error, never left unanswered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostRequest {
    /// Read the state blob called `name` (a short `[a-z0-9-]` name the engine chooses).
    /// Answered with [`HostResult::Loaded`] (`None` if no such blob was ever stored).
    LoadState {
        /// The blob's name.
        name: String,
    },
    /// Store `bytes` as the state blob called `name`, durably and atomically, so a crash
    /// leaves either the old blob or the new (the weft drivers: one committed transaction of
    /// the node's embedded store). Answered with [`HostResult::Stored`] once it is durable.
    StoreState {
        /// The blob's name.
        name: String,
        /// Its new contents.
        bytes: Bytes,
    },
    /// A storage step of folder replication in the shared folder `folder` (SPEC.md §22).
    /// Answered with [`HostResult::Storage`] (or `Failed`).
    Storage {
        /// The folder.
        folder: weft_protocol::FolderId,
        /// The step.
        request: StorageRequest,
    },
    /// A step of a remote run this node carries out for a peer (SPEC.md §23): `process` is
    /// the engine's number for the run's process. Answered with [`HostResult::Process`] (or
    /// `Failed`).
    Process {
        /// The engine's number for the process.
        process: u64,
        /// The step.
        request: ProcessRequest,
    },
}

impl HostRequest {
    /// Longest state blob name, bytes.
    pub const STATE_NAME_BYTES_MAX: usize = 64;

    /// Whether `name` may name a state blob: 1 to [`Self::STATE_NAME_BYTES_MAX`] of
    /// `[a-z0-9-]` (so never a path, `.` or `..`). A host refuses any other name.
    pub fn is_valid_state_name(name: &str) -> bool {
        let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
        (1..=Self::STATE_NAME_BYTES_MAX).contains(&name.len()) && name.bytes().all(ok)
    }
}

/// What became of a [`HostRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostResult {
    /// A `LoadState`'s blob, or `None` if it was never stored.
    Loaded(Option<Bytes>),
    /// A `StoreState` is durable.
    Stored,
    /// What became of a `Storage` step.
    Storage(StorageResult),
    /// What became of a `Process` step.
    Process(ProcessResult),
    /// The host could not carry the request out (one line, for logs).
    Failed(String),
}

/// An event or completion handed to [`crate::Node::handle_input`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input {
    /// The driver accepted a connection from `addr`; `conn` must be [`ConnId::inbound`].
    Accepted {
        /// The driver's id for it.
        conn: ConnId,
        /// The remote address, as the driver prints it.
        addr: String,
    },
    /// An outbound connection from [`Output::Connect`] is open.
    Connected {
        /// The id the engine gave it.
        conn: ConnId,
    },
    /// An outbound connection from [`Output::Connect`] could not be opened.
    ConnectFailed {
        /// The id the engine gave it.
        conn: ConnId,
    },
    /// Bytes arrived on a connection, in any chunking.
    Received {
        /// The connection.
        conn: ConnId,
        /// The bytes, in order.
        bytes: Bytes,
    },
    /// Everything handed out for `conn` so far has been written; more may be sent.
    Writable {
        /// The connection.
        conn: ConnId,
    },
    /// The connection ended (EOF, reset, or after an [`Output::Close`]).
    Closed {
        /// The connection.
        conn: ConnId,
    },
    /// The calendar time now, as Unix milliseconds from the driver's (or simulator's) clock.
    WallClock {
        /// Milliseconds since 1970-01-01T00:00:00Z.
        unix_ms: u64,
    },
    /// The host finished an [`Output::Request`].
    Completed {
        /// The request's id.
        id: RequestId,
        /// What came of it.
        result: HostResult,
    },
    /// A request from the application.
    Command(Command),
}

/// A request from the application: the session's own, or one for a protocol.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Command {
    /// Dial `addr`.
    Connect {
        /// The address, in the driver's syntax.
        addr: String,
    },
    /// Close the link to `node`.
    Disconnect {
        /// The peer.
        node: NodeId,
    },
    /// Say BYE to every peer and close every connection (each protocol first finishes what it
    /// must: a Chord member hands its records to its successor).
    Shutdown,
    /// For the mesh (SPEC.md §11).
    Mesh(MeshCommand),
    /// For the sync table (SPEC.md §19).
    Table(TableCommand),
    /// For Chord (SPEC.md §20).
    Chord(ChordCommand),
    /// For folder replication (SPEC.md §22).
    Replicate(ReplicateCommand),
    /// For remote runs (SPEC.md §23).
    Run(RunCommand),
    /// For drops (SPEC.md §24).
    Drops(crate::drops::DropsCommand),
}

/// An action or event for the driver, from [`crate::Node::poll_output`]. A driver that meets
/// an output it does not carry out must stop with an error, never drop it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Output {
    /// Write `bytes` to `conn`, in order after what came before.
    Transmit {
        /// The connection.
        conn: ConnId,
        /// The bytes; the same buffer may go to several connections.
        bytes: Bytes,
    },
    /// Open a connection to `addr`, then answer `Connected` or `ConnectFailed`.
    Connect {
        /// The id the engine gives it.
        conn: ConnId,
        /// Where to dial.
        addr: String,
    },
    /// Write what was handed out for `conn`, then close it and answer `Closed`.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// Do `request`, then answer [`Input::Completed`] with `id`.
    Request {
        /// The engine's id for it.
        id: RequestId,
        /// What to do.
        request: HostRequest,
    },
    /// Something the application may want to know.
    Event(Event),
}

/// Something the application may want to know: the session's own events, or a protocol's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A handshake completed: `node` is linked through `conn`.
    PeerUp {
        /// The peer.
        node: NodeId,
        /// Its connection.
        conn: ConnId,
        /// Its incarnation.
        incarnation: u64,
        /// Whether it restarted since we last saw it (a higher incarnation).
        restarted: bool,
    },
    /// The last link to `node` went away.
    PeerDown {
        /// The peer.
        node: NodeId,
        /// Why.
        reason: CloseReason,
    },
    /// A connection was closed because of its bytes or behaviour.
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
    /// A dial of a redialed address (configured, saved, or a link lost without a BYE; SPEC.md
    /// §8.10) failed: it could not be opened, or closed before its handshake finished.
    DialFailed {
        /// The address dialed.
        addr: String,
        /// Dials of it failed in a row, this one included.
        attempts: u32,
        /// When it is dialed again, in milliseconds; `None`: it is given up.
        retry_in_ms: Option<u64>,
        /// Why it failed.
        reason: CloseReason,
    },
    /// A redialed address linked again after failed dials.
    Redialed {
        /// The address.
        addr: String,
        /// The node it reached.
        node: NodeId,
        /// Dials of it that had failed before.
        failures: u32,
    },
    /// A peer at `addr` refused this node's handshake with BYE(`StaleIncarnation`): it has
    /// seen this node's key with a higher incarnation, so another node is running with this
    /// node's key (a copied state folder) (SPEC.md §8.7).
    RefusedAsStale {
        /// The peer's address, as the connection has it.
        addr: String,
    },
    /// From the mesh.
    Mesh(MeshEvent),
    /// From the sync table.
    Table(TableEvent),
    /// From Chord: a request ended.
    Chord(ChordEvent),
    /// From folder replication.
    Replicate(ReplicateEvent),
    /// From remote runs: what became of a run this node asked a peer for.
    Run(RunEvent),
    /// From drops.
    Drops(crate::drops::DropsEvent),
    /// From a node of a p2p.today network (SPEC.md §25.9).
    P2pt(crate::p2pt::P2ptEvent),
}

impl From<crate::drops::DropsEvent> for Event {
    fn from(e: crate::drops::DropsEvent) -> Event {
        Event::Drops(e)
    }
}

impl From<core::convert::Infallible> for Event {
    fn from(never: core::convert::Infallible) -> Event {
        match never {}
    }
}

impl From<MeshEvent> for Event {
    fn from(e: MeshEvent) -> Event {
        Event::Mesh(e)
    }
}

impl From<TableEvent> for Event {
    fn from(e: TableEvent) -> Event {
        Event::Table(e)
    }
}

impl From<ReplicateEvent> for Event {
    fn from(e: ReplicateEvent) -> Event {
        Event::Replicate(e)
    }
}

impl From<RunEvent> for Event {
    fn from(e: RunEvent) -> Event {
        Event::Run(e)
    }
}

impl From<ChordEvent> for Event {
    fn from(e: ChordEvent) -> Event {
        Event::Chord(e)
    }
}

/// Why [`crate::Node::handle_input`] did not take an input: the driver misused the node, or
/// the session or a protocol refused the application's command. Bytes from the network never
/// produce one of these: they close their connection instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The driver broke the contract: a bug in the driver.
    #[error(transparent)]
    Misuse(#[from] Misuse),
    /// The command was refused; the application may try something else.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// A driver's misuse of the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Misuse {
    /// No open connection has this id.
    #[error("unknown connection {0:?}")]
    UnknownConn(ConnId),
    /// An accepted connection's id must come from `ConnId::inbound` and be unused.
    #[error("connection id {0:?} is not a free inbound id")]
    BadInboundId(ConnId),
    /// `Connected`, `ConnectFailed` or bytes for a connection that is not past its dial.
    #[error("connection {0:?} is not a pending dial")]
    NotDialing(ConnId),
    /// `Completed` for no request the engine has outstanding.
    #[error("no outstanding request {0:?}")]
    UnknownRequest(RequestId),
}

/// A command refused by the session or by the protocol it was for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// By the session.
    #[error(transparent)]
    Session(#[from] SessionRefusal),
    /// By the mesh.
    #[error(transparent)]
    Mesh(#[from] MeshRefusal),
    /// By the sync table.
    #[error(transparent)]
    Table(#[from] TableRefusal),
    /// By Chord.
    #[error(transparent)]
    Chord(#[from] ChordRefusal),
    /// By folder replication.
    #[error(transparent)]
    Replicate(#[from] ReplicateRefusal),
    /// By remote runs.
    #[error(transparent)]
    Run(#[from] RunRefusal),
    /// By drops.
    #[error(transparent)]
    Drops(#[from] crate::drops::DropsRefusal),
    /// By a node of a p2p.today network.
    #[error(transparent)]
    P2pt(#[from] crate::p2pt::P2ptRefusal),
}

/// The session's refusals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionRefusal {
    /// The outbound connection limit is reached.
    #[error("outbound connection limit reached")]
    TooManyConnections,
    /// No link to that node.
    #[error("not linked to {0}")]
    NotLinked(NodeId),
    /// The node has shut down.
    #[error("the node has shut down")]
    ShutDown,
    /// `Limits::configured_peers_max` addresses are configured already.
    #[error("too many configured peers")]
    TooManyConfiguredPeers,
}

impl From<core::convert::Infallible> for Refusal {
    fn from(never: core::convert::Infallible) -> Refusal {
        match never {}
    }
}

impl From<SessionRefusal> for InputError {
    fn from(r: SessionRefusal) -> InputError {
        InputError::Refused(r.into())
    }
}

impl From<MeshRefusal> for InputError {
    fn from(r: MeshRefusal) -> InputError {
        InputError::Refused(r.into())
    }
}

impl From<TableRefusal> for InputError {
    fn from(r: TableRefusal) -> InputError {
        InputError::Refused(r.into())
    }
}

impl From<ReplicateRefusal> for InputError {
    fn from(r: ReplicateRefusal) -> InputError {
        InputError::Refused(r.into())
    }
}

impl From<RunRefusal> for InputError {
    fn from(r: RunRefusal) -> InputError {
        InputError::Refused(r.into())
    }
}

impl From<ChordRefusal> for InputError {
    fn from(r: ChordRefusal) -> InputError {
        InputError::Refused(r.into())
    }
}
