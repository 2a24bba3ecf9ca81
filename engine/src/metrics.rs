//! Counters the node keeps for drivers, `weft stats` and tests.

/// Node-wide counters. All only grow. `repr(C)`: the eight of a broadcast's way through come
/// first and share one cache line. (A node counts the first four elsewhere while it works,
/// where a reception touches memory anyway, and adds them up in `Node::metrics`.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[repr(C)]
pub struct NodeMetrics {
    /// Frames decoded from any connection.
    pub frames_received: u64,
    /// Bytes received from any connection.
    pub bytes_received: u64,
    /// BROADCAST frames received (first copies and duplicates).
    pub broadcasts_received: u64,
    /// BROADCAST frames received that were already seen.
    pub broadcast_duplicates: u64,
    /// Frames handed to the driver.
    pub frames_sent: u64,
    /// Bytes handed to the driver.
    pub bytes_sent: u64,
    /// Broadcasts delivered to the application (first copies).
    pub broadcasts_delivered: u64,
    /// BROADCAST frames queued to peers (originated and relayed).
    pub broadcast_transmissions: u64,
    /// Broadcasts this node originated.
    pub broadcasts_originated: u64,
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
    /// Table writes this node originated (sent).
    pub table_writes_originated: u64,
    /// Table writes received (TABLE_WRITE and inside TABLE_ENTRIES), new or not.
    pub table_writes_received: u64,
    /// Table writes received that were held already.
    pub table_write_duplicates: u64,
    /// Table writes refused as older than the reclaim floor or a key's fold point.
    pub table_writes_too_old: u64,
    /// Table writes for new keys dropped past twice `table_entries_max`.
    pub table_writes_dropped: u64,
    /// TABLE_WRITE frames queued to peers (originated and relayed).
    pub table_write_transmissions: u64,
    /// Bytes of anti-entropy frames queued: TABLE_DIGEST, TABLE_WANT and TABLE_ENTRIES.
    pub table_catchup_bytes: u64,
    /// What a full resend would have cost instead: at every TABLE_DIGEST sent, the bytes of
    /// every key's current write as TABLE_ENTRIES frames.
    pub table_full_resend_bytes: u64,
}

/// Frames and bytes of one protocol on one connection.
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

/// Traffic on one connection by protocol.
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
    pub(crate) fn of(&mut self, code: weft_protocol::Code) -> &mut Traffic {
        use weft_protocol::Code;
        match code {
            Code::ICANSEE | Code::IKNOWABOUT | Code::ICANTSEE => &mut self.discovery,
            Code::BROADCAST => &mut self.mesh,
            Code::MESH_DIGEST | Code::MESH_WANT | Code::MESH_REPAIR => &mut self.repair,
            c if c.family() == Some(weft_protocol::Family::Table) => &mut self.table,
            c if c.family() == Some(weft_protocol::Family::Chord) => &mut self.chord,
            _ => &mut self.session,
        }
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

/// Counters and queue state for one connection, as `Node::conn_stats` puts them together
/// (a connection keeps them where its frames touch memory anyway; see `Conn`).
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
    /// Bytes waiting in the engine's send queue now.
    pub queued_bytes: usize,
    /// Bytes handed to the driver and not yet reported written.
    pub in_flight_bytes: usize,
    /// Frames and bytes by protocol.
    pub by_protocol: ByProtocol,
    /// Relays dropped for this connection.
    pub relays_dropped: u64,
}
