//! The p2p.today dialect's session: a node that speaks py2p 0.7.878's protocol instead of
//! weft's own (SPEC.md §25.9–§25.12). A network runs in one dialect, chosen when the node
//! starts ([`crate::Config::p2pt`]); such a node has no Noise, no HELLO and none of weft's
//! protocols, and follows py2p's rules where they differ from weft's:
//!
//! - `link`: one connection (frames in, the peer's handshake, its compression codes);
//! - `waterfalls`: the (message id, timestamp) pairs seen in the last 60 s;
//! - `table`: py2p's `SyncSocket` table and its lease rules;
//! - `node`: the [`P2ptNode`]: handshake, `peers`, relays, the sync table, timers.
//!
//! It takes the same [`crate::Input`]s and gives the same [`crate::Output`]s as a weft node, so
//! the drivers carry it as they carry any node.

mod link;
mod node;
mod table;
mod waterfalls;

#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use node::{
    P2ptNode, P2PT_CATCH_UP_UNWRITTEN_MAX, P2PT_CONFIGURED_MAX, P2PT_HANDSHAKE_TIMEOUT,
    P2PT_INBOUND_PER_HOST_MAX, P2PT_LINKS_MAX, P2PT_LISTED_ATTEMPTS_MAX,
    P2PT_LISTED_DIALS_PER_MINUTE, P2PT_LISTED_RECORDS_MAX, P2PT_OUTGOING_MAX,
    P2PT_PARTIAL_FRAME_TIMEOUT, P2PT_REDIAL_MAX, P2PT_REDIAL_MIN, P2PT_SEND_QUEUE_BYTES_MAX,
};
pub use table::{P2ptEntry, P2PT_LEASE_S, P2PT_TABLE_BYTES_MAX, P2PT_TABLE_KEYS_MAX};
pub use waterfalls::{P2PT_WATERFALLS_MAX, P2PT_WATERFALL_WINDOW_S};

use crate::connection::{CloseReason, ConnId};

/// py2p's subnets weft joins (each a protocol id of its own, SPEC.md §25.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subnet {
    /// `MeshSocket`: broadcasts only.
    Mesh,
    /// `SyncSocket` with leases (`sync1`): a shared table whose keys are leased for an hour.
    SyncLeased,
    /// `SyncSocket` without leases (`sync0`): the newer write wins.
    Sync,
}

impl Subnet {
    /// py2p's subnet string (hashed into the protocol id).
    pub fn name(self) -> &'static str {
        use weft_protocol::p2pt::ids;
        match self {
            Subnet::Mesh => ids::SUBNET_MESH,
            Subnet::SyncLeased => ids::SUBNET_SYNC_LEASED,
            Subnet::Sync => ids::SUBNET_SYNC,
        }
    }

    /// The subnet named `name` (`mesh`, `sync1`, `sync0`).
    pub fn from_name(name: &str) -> Option<Subnet> {
        [Subnet::Mesh, Subnet::SyncLeased, Subnet::Sync]
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// Whether it carries the sync table.
    pub fn is_sync(self) -> bool {
        self != Subnet::Mesh
    }
}

/// How a node speaks the dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct P2ptConfig {
    /// The subnet (and so the protocol id) of the network.
    pub subnet: Subnet,
    /// Whether to advertise and use py2p's compressions (zlib, gzip, bz2, xz); off, every
    /// frame this node sends is raw and its peers send it raw frames too.
    pub compression: bool,
}

impl P2ptConfig {
    /// A configuration for `subnet`, compression on (py2p's default).
    pub fn new(subnet: Subnet) -> P2ptConfig {
        P2ptConfig {
            subnet,
            compression: true,
        }
    }
}

/// What a dialect node tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum P2ptEvent {
    /// A peer's handshake completed on `conn`.
    PeerUp {
        /// The connection.
        conn: ConnId,
        /// Its node id (base58 text).
        id: String,
        /// Where it says it listens, `host:port`.
        addr: String,
    },
    /// A peer's link went away.
    PeerDown {
        /// Its node id.
        id: String,
        /// Why.
        reason: CloseReason,
    },
    /// A message for the application: a new broadcast (`broadcast/broadcast`) or a whisper
    /// (`whisper/whisper`).
    Message {
        /// The originator's node id (base58 text).
        sender: String,
        /// A broadcast (else a whisper to this node).
        broadcast: bool,
        /// The message id (SHA-256 of its msgpack).
        id: [u8; 32],
        /// The originator's Unix time, seconds.
        timestamp: u64,
        /// The packets after the sub-flag, as one msgpack array.
        args: Bytes,
    },
    /// A key of the sync table changed (set by a peer or by this node).
    KeyChanged {
        /// The key.
        key: Vec<u8>,
        /// Its value as msgpack; `None`: deleted.
        value: Option<Bytes>,
        /// Whose write it is (base58 text).
        owner: String,
        /// The write's time, Unix seconds.
        timestamp: u64,
    },
}

/// Why a dialect node refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum P2ptRefusal {
    /// py2p's network has no such thing (chord, folders, runs, drops, leases of a chosen
    /// length...).
    #[error("a p2p.today network has no {0}")]
    Unsupported(&'static str),
    /// Messages carry Unix seconds, and no `Input::WallClock` has come yet.
    #[error("no wall clock yet")]
    NoWallClock,
    /// The message would make a frame over the dialect's body limit.
    #[error("message of {len} bytes exceeds the dialect's frame limit of {max}")]
    TooLarge {
        /// Its msgpack length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Another node's lease covers the key (py2p's one hour from its last write).
    #[error("key leased by {owner} until unix second {until_s}")]
    Leased {
        /// The lease holder's node id.
        owner: String,
        /// When the lease ends, Unix seconds.
        until_s: u64,
    },
    /// The key is not set (a delete).
    #[error("no such key")]
    NoSuchKey,
    /// The table is at [`P2PT_TABLE_KEYS_MAX`] or [`P2PT_TABLE_BYTES_MAX`].
    #[error("the table is full")]
    Full,
    /// More than [`P2PT_CONFIGURED_MAX`] addresses are configured.
    #[error("too many configured peers")]
    TooManyConfiguredPeers,
    /// The node has shut down.
    #[error("the node has shut down")]
    ShutDown,
}

/// A dialect node's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct P2ptMetrics {
    /// Links whose handshake completed, now.
    pub peers: u64,
    /// Frames received whole.
    pub frames_received: u64,
    /// Frames sent (relays included).
    pub frames_sent: u64,
    /// Bytes received and sent on the wire.
    pub bytes_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Broadcasts this node originated.
    pub broadcasts_originated: u64,
    /// Broadcast frames relayed (one per link).
    pub broadcasts_relayed: u64,
    /// Broadcasts dropped as already seen.
    pub broadcast_duplicates: u64,
    /// Broadcasts dropped as outside the 60 s window (older, or as far in the future).
    pub broadcasts_expired: u64,
    /// New broadcasts dropped because the seen set was full of entries still in the window.
    pub broadcasts_refused_full: u64,
    /// Broadcasts relayed and then dropped as meaningless or malformed (a `handshake` or
    /// `peers` under main flag broadcast, a malformed `store`): never held against the link.
    pub broadcasts_ignored: u64,
    /// Messages delivered to the application.
    pub delivered: u64,
    /// Connections closed for their bytes or behaviour.
    pub faults: u64,
    /// Table writes from peers not applied (lease, full, nothing to delete).
    pub table_writes_refused: u64,
    /// Keys held.
    pub table_keys: u64,
    /// (id, timestamp) pairs remembered as seen.
    pub waterfall_entries: u64,
}
