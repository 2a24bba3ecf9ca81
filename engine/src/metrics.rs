//! Counters the node keeps for drivers, `weft stats` and tests.

/// Node-wide counters. All only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    /// Frames decoded from any connection.
    pub frames_received: u64,
    /// Frames handed to the driver.
    pub frames_sent: u64,
    /// Bytes received from any connection.
    pub bytes_received: u64,
    /// Bytes handed to the driver.
    pub bytes_sent: u64,
    /// Broadcasts this node originated.
    pub broadcasts_originated: u64,
    /// BROADCAST frames received (first copies and duplicates).
    pub broadcasts_received: u64,
    /// Broadcasts delivered to the application (first copies).
    pub broadcasts_delivered: u64,
    /// BROADCAST frames received that were already seen.
    pub broadcast_duplicates: u64,
    /// BROADCAST frames queued to peers (originated and relayed).
    pub broadcast_transmissions: u64,
    /// Relayed frames dropped because a peer's queue was over `relay_queue_bytes_max`.
    pub relays_dropped: u64,
    /// Connections closed because of their bytes or behaviour.
    pub connections_failed: u64,
    /// Handshakes completed.
    pub handshakes_completed: u64,
    /// Discovery dials started.
    pub discovery_dials: u64,
    /// Repair frames queued to peers: MESH_DIGEST, MESH_WANT and MESH_REPAIR.
    pub repair_messages: u64,
    /// Broadcasts first obtained through MESH_REPAIR.
    pub repairs_received: u64,
}

/// Counters and queue state for one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Frames received.
    pub frames_in: u64,
    /// Frames handed to the driver.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes handed to the driver.
    pub bytes_out: u64,
    /// Relays dropped for this connection.
    pub relays_dropped: u64,
    /// Bytes waiting in the engine's send queue now.
    pub queued_bytes: usize,
    /// Bytes handed to the driver and not yet reported written.
    pub in_flight_bytes: usize,
}
