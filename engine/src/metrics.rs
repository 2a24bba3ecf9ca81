//! Counters the node keeps for drivers, `weft stats` and tests. Each counter has one home: the
//! session's in [`SessionMetrics`], each protocol's in its own struct; [`NodeMetrics`] is them
//! together, as [`crate::Node::metrics`] hands them out. All only grow.

use weft_protocol::{Code, Family};

pub use crate::discovery::DiscoveryMetrics;
pub use crate::mesh::MeshMetrics;
pub use crate::table::TableMetrics;

/// Every node-wide counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    /// Connections, frames and bytes.
    pub session: SessionMetrics,
    /// Flood broadcast and its repair.
    pub mesh: MeshMetrics,
    /// The sync table.
    pub table: TableMetrics,
    /// Discovery cascades.
    pub discovery: DiscoveryMetrics,
    /// Remote runs.
    pub run: crate::run::RunMetrics,
}

/// The session layer's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionMetrics {
    /// Frames decoded from any connection.
    pub frames_received: u64,
    /// Bytes received from any connection.
    pub bytes_received: u64,
    /// Frames handed to the driver.
    pub frames_sent: u64,
    /// Bytes handed to the driver.
    pub bytes_sent: u64,
    /// Frames and bytes by protocol, over every connection this node has had.
    pub traffic: ByProtocol,
    /// Relayed frames dropped because a peer's queue was over `relay_queue_bytes_max`.
    pub relays_dropped: u64,
    /// Bulk frames refused because the peer had no room (a protocol sent without asking).
    pub bulk_refused: u64,
    /// Messages to a peer with no route (no link, no dedicated connection) that were dropped.
    pub unroutable: u64,
    /// Connections closed because of their bytes or behaviour, and dials that failed.
    pub connections_failed: u64,
    /// Dials that failed: not opened, or closed before their handshake finished (SPEC.md
    /// §8.10).
    pub dials_failed: u64,
    /// Dials of configured, saved and lost addresses made on the redial schedule (§8.10).
    pub redials: u64,
    /// Due redials of saved or lost addresses the dial guard held back or gave up: the
    /// address's record or the dial budget (§8.10, §10.7).
    pub redials_refused: u64,
    /// Stored known-peers blobs ignored: damaged, or of an unknown version (§8.11).
    pub known_peers_refused: u64,
    /// Stores of the known-peers blob the host completed (§8.11).
    pub known_peers_stores: u64,
    /// Loads and stores of the known-peers blob the host could not carry out.
    pub known_peers_state_failures: u64,
    /// Handshakes completed.
    pub handshakes_completed: u64,
    /// Dials of address-book entries to keep `outbound_target` links (SPEC.md §10.7).
    pub discovery_dials: u64,
    /// Dedicated connections dialed for a protocol (SPEC.md §8.9).
    pub dedicated_dials: u64,
    /// The most bytes ever held at once for connections still in their handshake (SPEC.md
    /// §8.4): never above `Limits::handshake_buffered_bytes_max`.
    pub handshake_buffered_bytes_peak: u64,
    /// Connections closed because the handshake buffer bound was reached.
    pub handshake_buffer_closes: u64,
    /// The most bytes ever held at once, all connections together, of frames not yet whole
    /// (SPEC.md §8.4), as checked after an input that left some: never above
    /// `Limits::frames_buffered_bytes_max`.
    pub frames_buffered_bytes_peak: u64,
    /// Connections closed because the bound on bytes of frames not yet whole was reached.
    pub frame_buffer_closes: u64,
    /// Inbound connections refused because their address held its share of the slots.
    pub inbound_refused_per_address: u64,
    /// Inbound connections closed, at `inbound_max`, to make room for a new one: the oldest
    /// whose peer had proven nothing yet (SPEC.md §8.4).
    pub inbound_evicted_unproven: u64,
    /// Discovery dials not made: the address was over its attempts or backing off, or the
    /// global budget was spent (SPEC.md §10.7).
    pub discovery_dials_refused: u64,
    /// Dials of an address a protocol named (a drop's holder found through the tracker,
    /// SPEC.md §24.6).
    pub named_dials: u64,
    /// Such dials not made: the address was over its attempts or backing off, the global
    /// budget of §10.7 was spent, or `outbound_max` connections were open.
    pub named_dials_refused: u64,
}

/// Frames and bytes of one protocol on one connection, or over all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames received.
    pub frames_in: u64,
    /// Frames handed to the driver.
    pub frames_out: u64,
    /// Bytes received (whole frames).
    pub bytes_in: u64,
    /// Bytes handed to the driver (whole frames).
    pub bytes_out: u64,
}

/// Traffic by protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByProtocol {
    /// BROADCAST.
    pub mesh: Traffic,
    /// HELLO, HELLO_ACK, PING, PONG, BYE.
    pub session: Traffic,
    /// ICANSEE, IKNOWABOUT, ICANTSEE.
    pub discovery: Traffic,
    /// MESH_DIGEST, MESH_WANT, MESH_REPAIR.
    pub repair: Traffic,
    /// TABLE_WRITE, TABLE_DIGEST, TABLE_WANT, TABLE_ENTRIES.
    pub table: Traffic,
    /// The Chord family (0x03).
    pub chord: Traffic,
}

impl ByProtocol {
    /// The counters of the protocol that owns `code`.
    pub(crate) fn of(&mut self, code: Code) -> &mut Traffic {
        match code {
            Code::BROADCAST => &mut self.mesh,
            Code::ICANSEE | Code::IKNOWABOUT | Code::ICANTSEE => &mut self.discovery,
            c => match Family::from_high_byte((c.0 >> 8) as u8) {
                Some(Family::Mesh) => &mut self.repair,
                Some(Family::Table) => &mut self.table,
                Some(Family::Chord) => &mut self.chord,
                _ => &mut self.session,
            },
        }
    }

    /// Counts a frame of `len` bytes received.
    pub(crate) fn count_in(&mut self, code: Code, len: usize) {
        let t = self.of(code);
        t.frames_in += 1;
        t.bytes_in += len as u64;
    }

    /// Counts a frame of `len` bytes handed to the driver.
    pub(crate) fn count_out(&mut self, code: Code, len: usize) {
        let t = self.of(code);
        t.frames_out += 1;
        t.bytes_out += len as u64;
    }

    /// Each protocol's name and counters, in a fixed order.
    pub fn named(&self) -> [(&'static str, Traffic); 6] {
        [
            ("session", self.session),
            ("discovery", self.discovery),
            ("mesh", self.mesh),
            ("repair", self.repair),
            ("table", self.table),
            ("chord", self.chord),
        ]
    }
}

/// Counters and queue state for one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Frames received.
    pub frames_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Frames handed to the driver.
    pub frames_out: u64,
    /// Bytes handed to the driver.
    pub bytes_out: u64,
    /// Bytes waiting in the engine's send queue now (bulk frames not included).
    pub queued_bytes: usize,
    /// Bytes handed to the driver and not yet reported written.
    pub in_flight_bytes: usize,
    /// Bulk frames waiting in the engine's send queue now.
    pub bulk_queued: usize,
    /// Frames and bytes by protocol.
    pub by_protocol: ByProtocol,
    /// Relays dropped for this connection.
    pub relays_dropped: u64,
}
