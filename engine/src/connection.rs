//! A driver's connection as the engine names it: its id, who opened it, and why it closed.
//! The session, the p2p.today dialect and the drivers all speak of connections in these
//! terms; [`crate::io`] hands them on with the rest of the node's inputs and outputs.

use weft_protocol::{ByeReason, ProtocolError};

/// A connection handle. The engine allocates outbound ids (even numbers, in
/// [`crate::io::Output::Connect`]); the driver picks inbound ids with [`ConnId::inbound`] (odd numbers).
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
    /// The application, or a protocol, asked for it.
    Requested,
    /// The node is shutting down.
    Shutdown,
    /// The driver reported the connection closed.
    Lost,
    /// The driver could not open it.
    ConnectFailed,
    /// The peer's HELLO announced the other broadcast-signing mode (SPEC.md §7.4).
    BroadcastModeMismatch,
    /// Bytes held for connections still in their handshake went over
    /// `Limits::handshake_buffered_bytes_max` (SPEC.md §8.4).
    HandshakeBufferFull,
    /// Bytes held, all connections together, of frames not yet whole went over
    /// `Limits::frames_buffered_bytes_max` (SPEC.md §8.4).
    FrameBufferFull,
    /// The peer sent a signed message (a table write, or a broadcast with its origin's proof)
    /// that did not verify (SPEC.md §11.8, §19.8).
    BadSignature,
    /// The peer kept sending past a per-peer rate limit (discovery cascades, new broadcasts;
    /// SPEC.md §10.8, §11.9).
    RateLimited,
    /// The encrypted transport failed (SPEC.md §21): a handshake that does not verify (another
    /// network secret), an unbound identity, or a tampered, replayed or reordered message.
    Noise(crate::noise::NoiseError),
    /// The peer served replication blocks that failed their hash
    /// (`ReplicaConfig::mismatches_before_disconnect` of them; SPEC.md §22).
    CorruptBlocks,
    /// A p2p.today peer's bytes broke the dialect's wire format (SPEC.md §25.7).
    P2pt(weft_protocol::p2pt::P2ptError),
}

impl CloseReason {
    /// Whether the peer is at fault (counted, and reported as an event).
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            CloseReason::Protocol(_)
                | CloseReason::UnexpectedMessage(_)
                | CloseReason::WrongNetwork
                | CloseReason::BadProof
                | CloseReason::BroadcastModeMismatch
                | CloseReason::StaleIncarnation
                | CloseReason::SlowPeer
                | CloseReason::HandshakeTimeout
                | CloseReason::Timeout
                | CloseReason::BadSignature
                | CloseReason::RateLimited
                | CloseReason::Noise(_)
                | CloseReason::CorruptBlocks
                | CloseReason::P2pt(_)
        )
    }
}
