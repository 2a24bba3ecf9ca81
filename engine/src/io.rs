//! What goes into a node and what comes out.

use bytes::Bytes;
use weft_protocol::{ByeReason, NodeId, ProtocolError};

/// A connection handle. The engine allocates outbound ids (even numbers, in
/// [`Output::Connect`]); the driver picks inbound ids with [`ConnId::inbound`] (odd numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// The `n`th inbound id of a driver's choosing.
    pub const fn inbound(n: u64) -> ConnId {
        ConnId((n << 1) | 1)
    }

    /// Whether the driver allocated this id for an accepted connection.
    pub const fn is_inbound(self) -> bool {
        self.0 & 1 == 1
    }
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We dialed.
    Outbound,
    /// The peer dialed and we accepted.
    Inbound,
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
    /// A request from the application.
    Command(Command),
}

/// A request from the application.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Command {
    /// Dial `addr`.
    Connect {
        /// The address, in the driver's syntax.
        addr: String,
    },
    /// Flood `payload` to every node of the mesh.
    Broadcast {
        /// Application bytes, at most `Limits::broadcast_payload_max`.
        payload: Bytes,
    },
    /// Close the link to `node`.
    Disconnect {
        /// The peer.
        node: NodeId,
    },
    /// Say BYE to every peer and close every connection (a Chord member first hands its
    /// records to its successor).
    Shutdown,
    /// Set a sync-table key, optionally taking a lease on it (SPEC.md §19).
    TableSet {
        /// The key, 1 to `Limits::table_key_bytes_max` bytes.
        key: Vec<u8>,
        /// The value, at most `Limits::table_value_bytes_max` bytes.
        value: Vec<u8>,
        /// Own the key for this long (at most `Timers::table_lease_max`); `None` takes no
        /// lease and, from the owner, ends one.
        lease: Option<crate::time::Duration>,
    },
    /// Delete a sync-table key (a tombstone; ends the writer's own lease).
    TableDelete {
        /// The key.
        key: Vec<u8>,
    },
    /// End this node's lease on a sync-table key early, keeping its value.
    TableRelease {
        /// The key.
        key: Vec<u8>,
    },
    /// A Chord put, get, delete or lookup; its end comes as [`Event::Chord`] with `request`.
    Chord {
        /// The application's id for it, echoed in the event.
        request: u64,
        /// What to do.
        op: crate::chord::ChordRequest,
    },
}

/// An action or event for the driver, from [`crate::Node::poll_output`].
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
    /// Something the application may want to know.
    Event(Event),
}

/// Why the engine closed (or lost) a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer's bytes broke the wire format.
    Protocol(ProtocolError),
    /// The peer sent a message that is not allowed in the connection's state.
    UnexpectedMessage(&'static str),
    /// The peer belongs to another network.
    WrongNetwork,
    /// The peer's HELLO_ACK did not verify.
    BadProof,
    /// We dialed ourselves.
    SelfConnection,
    /// Another link to the same peer won the tie-break.
    DuplicateLink,
    /// The peer announced an incarnation older than one already seen.
    StaleIncarnation,
    /// The connection limit is reached.
    TooManyConnections,
    /// The peer's send queue went over `Limits::send_queue_bytes_max`.
    SlowPeer,
    /// The handshake did not finish within `Timers::handshake_timeout`.
    HandshakeTimeout,
    /// The peer was silent past `Timers::peer_timeout`.
    Timeout,
    /// The peer said BYE.
    PeerSaidBye(ByeReason),
    /// The application asked for it.
    Requested,
    /// The node is shutting down.
    Shutdown,
    /// The driver reported the connection closed.
    Lost,
    /// The driver could not open it.
    ConnectFailed,
}

/// Something the application may want to know.
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
    /// A mesh broadcast arrived for the first time.
    Broadcast {
        /// Its originator.
        origin: NodeId,
        /// The originator's incarnation when it sent it.
        incarnation: u64,
        /// The originator's sequence number (per incarnation).
        seq: u64,
        /// The application bytes (a slice of the received frame).
        payload: Bytes,
    },
    /// A sync-table key's visible value changed (set, deleted, or a late write re-decided it).
    TableChanged {
        /// The key.
        key: Vec<u8>,
        /// The value before (`None`: unset).
        old: Option<Vec<u8>>,
        /// The value now (`None`: deleted).
        new: Option<Vec<u8>>,
        /// The node whose write decides the value now.
        by: NodeId,
    },
    /// One of this node's table writes was refused: another node's lease covers it. Either
    /// at once (nothing was sent) or later, when the lease's write arrived.
    TableRefused {
        /// The key.
        key: Vec<u8>,
        /// The lease's owner.
        owner: NodeId,
        /// When its lease ends, Unix ms.
        until_ms: u64,
    },
    /// A Chord request ended.
    Chord(crate::chord::ChordEvent),
}

/// A driver or application misuse of [`crate::Node::handle_input`]. Bytes from the network never
/// produce one of these: they close their connection instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// No open connection has this id.
    #[error("unknown connection {0:?}")]
    UnknownConn(ConnId),
    /// An accepted connection's id must come from `ConnId::inbound` and be unused.
    #[error("connection id {0:?} is not a free inbound id")]
    BadInboundId(ConnId),
    /// `Connected` or `ConnectFailed` for a connection that is not a pending dial.
    #[error("connection {0:?} is not a pending dial")]
    NotDialing(ConnId),
    /// The outbound connection limit is reached.
    #[error("outbound connection limit reached")]
    TooManyConnections,
    /// The broadcast payload is over `Limits::broadcast_payload_max`.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No link to that node.
    #[error("not linked to {0}")]
    NotLinked(NodeId),
    /// The node has shut down.
    #[error("the node has shut down")]
    ShutDown,
    /// A table write needs calendar time, and no `Input::WallClock` has come yet.
    #[error("no wall clock yet: table writes need Input::WallClock")]
    NoWallClock,
    /// A table key is empty or over `Limits::table_key_bytes_max`.
    #[error("table key of {len} bytes: keys must be 1 to {max} bytes")]
    TableKeyLength {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A table value is over `Limits::table_value_bytes_max`.
    #[error("table value of {len} bytes exceeds the maximum of {max}")]
    TableValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The table holds `Limits::table_entries_max` keys (tombstones included).
    #[error("the table is full: {max} keys")]
    TableFull {
        /// The limit.
        max: usize,
    },
    /// The table's writes would take more than `Limits::table_bytes_max` bytes.
    #[error("the table is full: {max} bytes")]
    TableTooLarge {
        /// The limit.
        max: usize,
    },
    /// A lease of zero, over `Timers::table_lease_max`, or on a delete.
    #[error("lease of {ms} ms refused: a set may take a lease of 1 to {max_ms} ms")]
    TableLease {
        /// The lease asked for, ms.
        ms: u64,
        /// The limit, ms.
        max_ms: u64,
    },
    /// A release of a lease this node does not hold.
    #[error("this node holds no lease on that key")]
    NotLeaseOwner,
    /// A Chord command to a node that is no ring member (no `Config::chord` or listen address).
    #[error("chord is not enabled on this node")]
    ChordDisabled,
}
