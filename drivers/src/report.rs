//! What `weft network`, `weft stats` and `weft listen` show, as serializable snapshots. The
//! control socket carries them as JSON; `--json` prints them as they are.

use serde::{Deserialize, Serialize};
use weft_engine::replicate::Transfer;
use weft_engine::{ByProtocol, ConnStats, LinkEncryption, NodeId, NodeMetrics};

/// A node id in full, as 64 lowercase hex digits.
pub fn hex_id(node: &NodeId) -> String {
    node.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `text` spells in hex digits (either case), or `None` if it is not an even
/// number of them.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The name of how a node's links are protected: `noise` (every driver's), or `plaintext`
/// (the simulator's speed runs).
pub fn links_name(encryption: LinkEncryption) -> &'static str {
    match encryption {
        LinkEncryption::Noise => "noise",
        LinkEncryption::PlaintextSimulationOnly => "plaintext",
    }
}

/// How a node's links are protected, as its start line, `weft stats` and `weft id` say it:
/// `links: noise, network secret: yes`.
pub fn links_text(links: &str, network_secret: bool) -> String {
    let links = if links.is_empty() { "?" } else { links };
    let secret = if network_secret { "yes" } else { "no" };
    format!("links: {links}, network secret: {secret}")
}

/// One host the node links to or has heard of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    /// Its node id (64 hex digits; on a p2p.today network its py2p id, base58).
    pub node: String,
    /// Where it can be dialed, if known.
    pub addr: Option<String>,
    /// Whether this node holds a live link to it.
    pub direct: bool,
    /// Milliseconds since it was last heard from (direct) or of (heard-of).
    pub last_seen_ms_ago: u64,
    /// The same moment in Unix milliseconds.
    pub last_seen_unix_ms: Option<u64>,
}

/// Node-wide counters (from the engine's `NodeMetrics`: its session's, mesh's and table's).
/// Counters added since the first release default to 0 when read from an older node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounters {
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
    /// BROADCAST frames handed to the driver (originated and relayed), over every
    /// connection the node has had (the mesh's `frames_out` in `traffic`).
    pub broadcast_transmissions: u64,
    /// Relayed frames dropped because a peer's queue was full.
    pub relays_dropped: u64,
    /// Connections closed because of their bytes or behaviour, and dials that failed.
    pub connections_failed: u64,
    /// Dials that failed: not opened, or closed before their handshake finished.
    #[serde(default)]
    pub dials_failed: u64,
    /// Dials of configured, saved and lost addresses on the redial schedule.
    #[serde(default)]
    pub redials: u64,
    /// Times the list of known peers was stored, for the next start to dial.
    #[serde(default)]
    pub known_peers_stores: u64,
    /// Handshakes completed.
    pub handshakes_completed: u64,
    /// Discovery dials started.
    pub discovery_dials: u64,
    /// Dedicated connections dialed for a protocol (Chord's, for one).
    #[serde(default)]
    pub dedicated_dials: u64,
    /// Bulk frames refused because the peer had no room.
    #[serde(default)]
    pub bulk_refused: u64,
    /// Messages dropped because no connection led to their peer.
    #[serde(default)]
    pub unroutable: u64,
    /// Sync-table writes this node originated.
    #[serde(default)]
    pub table_writes_originated: u64,
    /// Sync-table writes received (flooded or from anti-entropy), new or not.
    #[serde(default)]
    pub table_writes_received: u64,
    /// Bytes of sync-table anti-entropy frames queued.
    #[serde(default)]
    pub table_catchup_bytes: u64,
    /// Refusals of what peers sent or asked (SPEC.md §8.4, §10.7, §10.8, §11.8, §11.9, §19.8).
    #[serde(default)]
    pub refused: RefusalCounters,
    /// Frames and bytes by protocol, over every connection the node has had.
    #[serde(default)]
    pub traffic: Vec<ProtocolReport>,
}

/// What the node refused of its peers: forgeries, floods and bounds reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalCounters {
    /// Broadcasts without their origin's valid proof (their relays were disconnected).
    pub broadcasts_forged: u64,
    /// New broadcasts dropped over their sender's rate.
    pub broadcasts_over_rate: u64,
    /// Peers disconnected for sending broadcasts far over their rate.
    pub peers_over_rate: u64,
    /// Discovery cascades dropped over their sender's rate.
    pub cascades_dropped: u64,
    /// Peers disconnected for sending cascades far over their rate.
    pub peers_cascade_limited: u64,
    /// Table writes whose writer's signature did not verify (their senders were disconnected).
    pub table_writes_bad_signature: u64,
    /// Table writes refused for a lease past `table_lease_max`.
    pub table_writes_lease_too_long: u64,
    /// Table writes refused for a stamp too far ahead of this node's clock.
    pub table_writes_too_new: u64,
    /// Inbound connections refused because their host held its share of the slots.
    pub inbound_refused_per_address: u64,
    /// Connections closed because bytes held before handshakes went over their bound.
    pub handshake_buffer_closes: u64,
    /// The most bytes ever held at once for connections still in their handshake.
    pub handshake_buffered_bytes_peak: u64,
    /// Connections closed because bytes of frames not yet whole went over their bound.
    #[serde(default)]
    pub frame_buffer_closes: u64,
    /// The most bytes ever held at once, all connections together, of frames not yet whole.
    #[serde(default)]
    pub frames_buffered_bytes_peak: u64,
    /// Discovery dials not made because of the per-address or per-minute bound.
    pub discovery_dials_refused: u64,
    /// Redials of saved or lost addresses held back or given up by the same bounds.
    #[serde(default)]
    pub redials_refused: u64,
    /// Inbound connections that had proven nothing, closed at the cap to make room.
    #[serde(default)]
    pub inbound_evicted_unproven: u64,
}

impl From<&NodeMetrics> for NodeCounters {
    fn from(m: &NodeMetrics) -> Self {
        let (session, mesh, table) = (&m.session, &m.mesh, &m.table);
        NodeCounters {
            frames_received: session.frames_received,
            frames_sent: session.frames_sent,
            bytes_received: session.bytes_received,
            bytes_sent: session.bytes_sent,
            broadcasts_originated: mesh.broadcasts_originated,
            broadcasts_received: mesh.broadcasts_received,
            broadcasts_delivered: mesh.broadcasts_delivered,
            broadcast_duplicates: mesh.broadcast_duplicates,
            broadcast_transmissions: session.traffic.mesh.frames_out,
            relays_dropped: session.relays_dropped,
            connections_failed: session.connections_failed,
            dials_failed: session.dials_failed,
            redials: session.redials,
            known_peers_stores: session.known_peers_stores,
            handshakes_completed: session.handshakes_completed,
            discovery_dials: session.discovery_dials,
            dedicated_dials: session.dedicated_dials,
            bulk_refused: session.bulk_refused,
            unroutable: session.unroutable,
            table_writes_originated: table.writes_originated,
            table_writes_received: table.writes_received,
            table_catchup_bytes: table.catchup_bytes,
            refused: RefusalCounters {
                broadcasts_forged: mesh.broadcasts_forged,
                broadcasts_over_rate: mesh.broadcasts_over_rate,
                peers_over_rate: mesh.peers_over_rate,
                cascades_dropped: m.discovery.cascades_dropped,
                peers_cascade_limited: m.discovery.peers_rate_limited,
                table_writes_bad_signature: table.writes_bad_signature,
                table_writes_lease_too_long: table.writes_lease_too_long,
                table_writes_too_new: table.writes_too_new,
                inbound_refused_per_address: session.inbound_refused_per_address,
                handshake_buffer_closes: session.handshake_buffer_closes,
                handshake_buffered_bytes_peak: session.handshake_buffered_bytes_peak,
                frame_buffer_closes: session.frame_buffer_closes,
                frames_buffered_bytes_peak: session.frames_buffered_bytes_peak,
                discovery_dials_refused: session.discovery_dials_refused,
                redials_refused: session.redials_refused,
                inbound_evicted_unproven: session.inbound_evicted_unproven,
            },
            traffic: ProtocolReport::all(&session.traffic),
        }
    }
}

/// One connection's counters and queue depths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnReport {
    /// The connection id (even: dialed, odd: accepted).
    pub conn: u64,
    /// The remote address.
    pub addr: String,
    /// The linked peer's node id, once the handshake is done.
    pub peer: Option<String>,
    /// Frames received.
    pub frames_in: u64,
    /// Frames handed to the driver.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes handed to the driver.
    pub bytes_out: u64,
    /// Relayed broadcasts dropped because this peer's queue was full.
    pub relays_dropped: u64,
    /// Bytes waiting in the engine's send queue.
    pub queued_bytes: u64,
    /// Bytes handed to the driver and not yet reported written.
    pub in_flight_bytes: u64,
    /// Bulk frames waiting in the engine's send queue.
    #[serde(default)]
    pub bulk_queued: u64,
    /// Bytes the driver holds and has not yet written to the socket.
    pub unwritten_bytes: u64,
    /// The protocol family a dedicated connection carries (`chord`); none for a link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated: Option<String>,
    /// Frames and bytes by protocol (session, discovery, mesh, repair, table, chord).
    pub by_protocol: Vec<ProtocolReport>,
}

/// One protocol's traffic on one connection, or over all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolReport {
    /// session, discovery, mesh, repair, table or chord.
    pub protocol: String,
    /// Frames received.
    pub frames_in: u64,
    /// Frames handed to the driver.
    pub frames_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes handed to the driver.
    pub bytes_out: u64,
}

impl ProtocolReport {
    /// Every protocol's row, in the engine's fixed order.
    pub fn all(traffic: &ByProtocol) -> Vec<ProtocolReport> {
        traffic
            .named()
            .into_iter()
            .map(|(name, t)| ProtocolReport {
                protocol: name.to_string(),
                frames_in: t.frames_in,
                frames_out: t.frames_out,
                bytes_in: t.bytes_in,
                bytes_out: t.bytes_out,
            })
            .collect()
    }
}

impl ConnReport {
    /// A row from the engine's counters and the driver's unwritten bytes.
    pub fn new(
        conn: u64,
        addr: String,
        peer: Option<&NodeId>,
        s: &ConnStats,
        unwritten: usize,
    ) -> ConnReport {
        ConnReport {
            conn,
            addr,
            peer: peer.map(hex_id),
            frames_in: s.frames_in,
            frames_out: s.frames_out,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            relays_dropped: s.relays_dropped,
            queued_bytes: s.queued_bytes as u64,
            in_flight_bytes: s.in_flight_bytes as u64,
            bulk_queued: s.bulk_queued as u64,
            unwritten_bytes: unwritten as u64,
            dedicated: None,
            by_protocol: ProtocolReport::all(&s.by_protocol),
        }
    }
}

/// Everything `weft stats` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// This node's id (64 hex digits).
    pub node: String,
    /// The network's name.
    pub network: String,
    /// This run's incarnation.
    pub incarnation: u64,
    /// The announced listening address.
    pub listen_addr: Option<String>,
    /// `mio` or `tokio`.
    pub driver: String,
    /// How links are protected: `noise` (see [`links_name`]).
    #[serde(default)]
    pub links: String,
    /// Whether the network is private: its handshakes mix in a key from a secret.
    #[serde(default)]
    pub network_secret: bool,
    /// Milliseconds since the driver started.
    pub uptime_ms: u64,
    /// Node-wide counters.
    pub counters: NodeCounters,
    /// Open connections, by id.
    pub connections: Vec<ConnReport>,
    /// Subscribers to broadcasts (`weft listen` sessions and in-process ones). A `weft listen`
    /// session stops counting as soon as it ends; an in-process receiver from
    /// `Handle::subscribe`, when the next broadcast finds it dropped.
    pub listeners: u64,
    /// Deliveries dropped because a subscriber did not keep up.
    pub listener_drops: u64,
}

/// The node's byte totals at one moment; the web page's throughput chart subtracts
/// neighbouring samples (one a second, the last ten minutes kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThroughputSample {
    /// Milliseconds since the driver started.
    pub uptime_ms: u64,
    /// The same moment in Unix milliseconds, if the calendar clock could be read.
    pub unix_ms: Option<u64>,
    /// Bytes received from any connection so far.
    pub bytes_in: u64,
    /// Bytes handed to the driver so far.
    pub bytes_out: u64,
}

/// One set table key, as `weft table get/list --json` print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntryReport {
    /// The key (non-UTF-8 bytes replaced).
    pub key: String,
    /// The value, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in hex, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_hex: Option<String>,
    /// The node whose write set it (64 hex digits).
    pub by: String,
    /// The lease's owner, if a lease is in force (64 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_owner: Option<String>,
    /// When that lease ends, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until_unix_ms: Option<u64>,
    /// The value's length in bytes, when `value` or `value_hex` holds only its first bytes
    /// (a list asked with `value_bytes_max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_bytes: Option<u64>,
}

/// What a table list holds at most: keys, and bytes of each value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableListBounds {
    /// Keys listed (the first, by key), all if `None`.
    pub entries_max: Option<usize>,
    /// Bytes of each value given, all if `None`.
    pub value_bytes_max: Option<usize>,
}

impl TableEntryReport {
    /// The report of `key` set to `value`, its value cut to `value_bytes_max` bytes if it is
    /// longer (a text value at a character boundary), its length then in `value_bytes`.
    pub(crate) fn with_value(key: &[u8], value: &[u8], value_bytes_max: Option<usize>) -> Self {
        let max = value_bytes_max.unwrap_or(usize::MAX);
        let cut = value.len() > max;
        let (value_text, hex) = match std::str::from_utf8(value) {
            Ok(text) => {
                let mut end = text.len().min(max);
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                (Some(text[..end].to_owned()), None)
            }
            Err(_) => {
                let shown = &value[..value.len().min(max)];
                (
                    None,
                    Some(shown.iter().map(|b| format!("{b:02x}")).collect()),
                )
            }
        };
        TableEntryReport {
            key: String::from_utf8_lossy(key).into_owned(),
            value: value_text,
            value_hex: hex,
            by: String::new(),
            lease_owner: None,
            lease_until_unix_ms: None,
            value_bytes: cut.then_some(value.len() as u64),
        }
    }

    /// The report of one key of `table`, if it is set.
    pub fn of(table: &weft_engine::Table, key: &[u8]) -> Option<TableEntryReport> {
        TableEntryReport::bounded(table, key, None)
    }

    /// [`TableEntryReport::of`], its value cut to `value_bytes_max` bytes.
    pub fn bounded(
        table: &weft_engine::Table,
        key: &[u8],
        value_bytes_max: Option<usize>,
    ) -> Option<TableEntryReport> {
        let value = table.get(key)?;
        let lease = table.lease(key);
        Some(TableEntryReport {
            by: table
                .current(key)
                .map(|w| hex_id(&w.node))
                .unwrap_or_default(),
            lease_owner: lease.map(|(owner, _)| hex_id(&owner)),
            lease_until_unix_ms: lease.map(|(_, until)| until),
            ..TableEntryReport::with_value(key, value, value_bytes_max)
        })
    }
}

/// One delivered broadcast, as `weft listen --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// The origin's node id (64 hex digits; on a p2p.today network its py2p id, base58).
    pub origin: String,
    /// The origin's incarnation when it sent it.
    pub incarnation: u64,
    /// The origin's sequence number (per incarnation).
    pub seq: u64,
    /// The payload, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload in hex, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
}

/// Everything `weft id` shows: who the node is, where, since when, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdReport {
    /// This node's id (64 hex digits; on a p2p.today network its py2p id, base58).
    pub node: String,
    /// The network's name.
    pub network: String,
    /// This run's incarnation.
    pub incarnation: u64,
    /// The node's process id.
    pub pid: u32,
    /// `mio` or `tokio`.
    pub driver: String,
    /// How links are protected: `noise` (see [`links_name`]).
    #[serde(default)]
    pub links: String,
    /// Whether the network is private: its handshakes mix in a key from a secret.
    #[serde(default)]
    pub network_secret: bool,
    /// The address the listener is bound to.
    pub listen_addr: Option<String>,
    /// The address other nodes are told to dial.
    pub announce_addr: Option<String>,
    /// Milliseconds since the driver started.
    pub uptime_ms: u64,
    /// Peers this node holds a live link to.
    pub peers_direct: u64,
    /// Peers it has only heard of.
    pub peers_heard_of: u64,
    /// Its place in the Chord ring, if it runs Chord.
    pub chord: Option<RingReport>,
    /// Set sync-table keys.
    pub table_keys: u64,
}

/// A Chord member's place in the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingReport {
    /// Its ring position (the first eight bytes of its id), 16 hex digits.
    pub position: String,
    /// Whether it has joined the ring.
    pub joined: bool,
    /// Its first successor's id, if it has one other than itself.
    pub successor: Option<String>,
    /// Its predecessor's id, if known.
    pub predecessor: Option<String>,
    /// The Chord records it holds.
    pub records: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_comes_back_as_bytes_or_not_at_all() {
        assert_eq!(unhex("00ff0a"), Some(vec![0, 255, 10]));
        assert_eq!(unhex("00FF"), Some(vec![0, 255]));
        assert_eq!(unhex(""), Some(vec![]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é0"), None);
    }

    #[test]
    fn a_value_past_its_bound_is_cut_and_its_length_given() {
        let whole = TableEntryReport::with_value(b"k", b"short", Some(8));
        assert_eq!(
            (whole.value.as_deref(), whole.value_bytes),
            (Some("short"), None)
        );
        // Text is cut at a character boundary ("é" is two bytes).
        let text = TableEntryReport::with_value(b"k", "abcé".as_bytes(), Some(4));
        assert_eq!(
            (text.value.as_deref(), text.value_bytes),
            (Some("abc"), Some(5))
        );
        let bytes = TableEntryReport::with_value(b"k", &[0xff, 0, 1, 2], Some(2));
        assert_eq!(
            (bytes.value_hex.as_deref(), bytes.value_bytes),
            (Some("ff00"), Some(4))
        );
        let unbounded = TableEntryReport::with_value(b"k", &[0xff; 3], None);
        assert_eq!(
            (unbounded.value_hex.as_deref(), unbounded.value_bytes),
            (Some("ffffff"), None)
        );
    }
}

/// A shared folder, as `weft status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderReport {
    /// The folder's id, hex.
    pub folder: String,
    /// Its root on this node.
    pub root: String,
    /// Why it stopped (its root or marker went missing), if it did.
    pub stopped: Option<String>,
    /// Whether its state is loaded.
    pub ready: bool,
    /// Every file, directory and symlink it holds or is fetching, by path (asked with a
    /// bound: the first so many, and every one not synced or a conflict copy).
    pub files: Vec<FileReport>,
    /// When asked with a bound: how many paths it holds or is fetching in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_total: Option<u64>,
}

/// One path of a shared folder, as `weft status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReport {
    /// The path, relative to the folder's root.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    /// Its size, bytes.
    pub size: u64,
    /// `synced`, `fetching`, `conflict` (it has conflict copies) or `error`.
    pub state: String,
    /// For `fetching`: bytes written so far.
    pub bytes_done: u64,
    /// For `error`: the last storage error at this path.
    pub error: Option<String>,
}

impl From<Transfer> for FileReport {
    /// A file being fetched for the first time (it has no record yet): its progress.
    fn from(t: Transfer) -> FileReport {
        FileReport {
            path: t.path,
            kind: "file".into(),
            size: t.bytes_total,
            state: "fetching".into(),
            bytes_done: t.bytes_done,
            error: None,
        }
    }
}

/// One drop a node holds (SPEC.md §24), for `weft drop status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropReport {
    /// The drop's id (64 hex digits).
    pub drop: String,
    /// `owner` (this node may publish it) or `subscriber` (its copy is read-only).
    pub role: String,
    /// The directory its folder is mapped to, if the node maps it.
    pub dir: Option<String>,
    /// The current version (the head with the highest counter), if any (64 hex digits).
    pub version: Option<String>,
    /// Its counter.
    pub counter: Option<u64>,
    /// The version the folder shows (its file list verified), if any.
    pub shown: Option<String>,
    /// How many heads are held: more than one is a conflict an owner's publish merges.
    pub heads: u64,
    /// The owners' node ids, the primary first.
    pub owners: Vec<String>,
    /// The files being fetched.
    pub transfers: Vec<FileReport>,
    /// Its tracker counters (SPEC.md §24.6); zero on a node off the Chord ring.
    #[serde(default)]
    pub tracker: TrackerReport,
}

/// One drop's tracker counters, for `weft drop status --json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerReport {
    /// Holder records of this node put on the ring.
    pub announces: u64,
    /// Lookups of the drop's holders.
    pub lookups: u64,
    /// Valid holder records the lookups returned (this node's own not counted).
    pub holders_found: u64,
    /// Holders dialed from them.
    pub holders_dialed: u64,
}
