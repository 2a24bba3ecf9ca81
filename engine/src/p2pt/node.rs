//! [`P2ptNode`]: a node of a p2p.today network (SPEC.md §25.9–§25.12).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use weft_protocol::p2pt::rmpv::Value;
use weft_protocol::p2pt::{
    base58, encode_frame, ids, message_id, Addr, Decoded, Handshake, MainFlag, Message, Method,
    P2ptError, Peers, Store, SubFlag, P2PT_BODY_BYTES_MAX, P2PT_ID_BYTES,
};

use super::link::{Link, PeerInfo};
use super::table::{NotApplied, SyncTable};
use super::waterfalls::Waterfalls;
use super::{P2ptConfig, P2ptEntry, P2ptEvent, P2ptMetrics, P2ptRefusal};
use crate::connection::{CloseReason, ConnId};
use crate::io::{Command, Event, Input, InputError, Misuse, Output, Refusal};
use crate::mesh::MeshCommand;
use crate::table::TableCommand;
use crate::time::{Duration, Instant};

/// Connections (dialing, handshaking or linked) a node keeps at most; one more accepted is
/// closed at once.
pub const P2PT_LINKS_MAX: usize = 64;
/// Outbound links at most for which a `peers` list is still dialed: py2p's `max_outgoing`.
pub const P2PT_OUTGOING_MAX: usize = 4;
/// A connection whose peer has not sent its handshake by then is closed.
pub const P2PT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that holds part of a frame this long is closed (py2p's `kill_old_nodes`).
pub const P2PT_PARTIAL_FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes handed to the driver for one connection and not yet written; past it the peer is
/// too slow and its connection is closed.
pub const P2PT_SEND_QUEUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Addresses given with `Command::Connect`, redialed while not linked, at most.
pub const P2PT_CONFIGURED_MAX: usize = 64;
/// The first redial of a configured address waits this long; each failure doubles it.
pub const P2PT_REDIAL_MIN: Duration = Duration::from_secs(2);
/// The longest wait between redials.
pub const P2PT_REDIAL_MAX: Duration = Duration::from_secs(60);

/// A configured address.
#[derive(Debug, Default)]
struct Configured {
    /// Its connection now, if any.
    conn: Option<ConnId>,
    /// Dials that failed in a row.
    failures: u32,
    /// When to dial it again (unlinked, no dial in flight).
    redial_at: Option<Instant>,
}

/// A node of a p2p.today network.
#[derive(Debug)]
pub struct P2ptNode {
    config: P2ptConfig,
    /// This node's id (base58 text as bytes).
    me: Vec<u8>,
    protocol_id: String,
    announce: Addr,
    /// The methods this node advertises and prefers, in py2p's order (empty: compression
    /// off).
    ours: Vec<Method>,
    links: BTreeMap<ConnId, Link>,
    /// Linked peers by id (the link the conflict rule kept).
    routing: BTreeMap<Vec<u8>, ConnId>,
    configured: BTreeMap<String, Configured>,
    waterfalls: Waterfalls,
    table: SyncTable,
    outputs: VecDeque<Output>,
    next_outbound: u64,
    now: Instant,
    /// The last wall clock: (when it came, Unix ms then).
    wall: Option<(Instant, u64)>,
    shut_down: bool,
    metrics: P2ptMetrics,
}

/// `host:port` as a driver dials it (brackets around an IPv6 host).
fn dial_addr(a: &Addr) -> String {
    if a.host.contains(':') {
        format!("[{}]:{}", a.host, a.port)
    } else {
        format!("{}:{}", a.host, a.port)
    }
}

/// py2p compares node ids as base58 integers; an id that is no base58 compares by its bytes.
fn id_key(id: &[u8]) -> (usize, Vec<u8>) {
    match std::str::from_utf8(id)
        .ok()
        .and_then(|s| base58::decode_int(s).ok())
    {
        Some(be) => {
            let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
            (be.len() - start, be[start..].to_vec())
        }
        None => (usize::MAX, id.to_vec()),
    }
}

fn text(id: &[u8]) -> String {
    String::from_utf8_lossy(id).into_owned()
}

/// A value the application gave as bytes: a msgpack str when they are UTF-8 (what py2p's
/// users send), else bin.
fn app_value(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::from(s),
        Err(_) => Value::Binary(bytes.to_vec()),
    }
}

fn msgpack(v: &Value) -> Bytes {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = weft_protocol::p2pt::rmpv::encode::write_value(&mut out, v);
    Bytes::from(out)
}

impl P2ptNode {
    /// A node of `config.subnet`, announcing `listen` (`host:port`; `None` announces
    /// `["", 0]`, which py2p peers never dial), its id derived from `salt` as py2p derives
    /// its own (SHA-384 of its address, the protocol id and a salt).
    pub fn new(config: P2ptConfig, listen: Option<&str>, salt: &[u8]) -> P2ptNode {
        let protocol_id = ids::protocol_id(config.subnet.name(), ids::ENCRYPTION_PLAINTEXT);
        let announce = listen
            .and_then(|l| {
                let (host, port) = l.rsplit_once(':')?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                Some(Addr {
                    host: host.to_owned(),
                    port: port.parse().ok()?,
                })
            })
            .unwrap_or(Addr {
                host: String::new(),
                port: 0,
            });
        // py2p hashes `str(out_addr)`, a Python tuple's repr.
        let repr = format!("('{}', {})", announce.host, announce.port);
        let me = ids::node_id(&repr, &protocol_id, salt).into_bytes();
        let ours = if config.compression {
            Method::PREFERENCE.to_vec()
        } else {
            Vec::new()
        };
        P2ptNode {
            config,
            me,
            protocol_id,
            announce,
            ours,
            links: BTreeMap::new(),
            routing: BTreeMap::new(),
            configured: BTreeMap::new(),
            waterfalls: Waterfalls::default(),
            table: SyncTable::default(),
            outputs: VecDeque::new(),
            next_outbound: 0,
            now: Instant::ZERO,
            wall: None,
            shut_down: false,
            metrics: P2ptMetrics::default(),
        }
    }

    /// The dialect node a weft [`crate::Config`] asks for, if its `p2pt` is set. py2p salts
    /// its id with fresh randomness each run; weft with the node's key and incarnation, so a
    /// restarted node has a new id, as a py2p node has.
    pub fn from_config(config: &crate::Config) -> Option<P2ptNode> {
        let p2pt = config.p2pt.clone()?;
        let mut h = blake3::Hasher::new_derive_key("weft p2pt node id salt v1");
        h.update(&config.secret_key);
        h.update(&config.incarnation.to_be_bytes());
        let salt = h.finalize();
        Some(P2ptNode::new(
            p2pt,
            config.listen_addr.as_deref(),
            salt.as_bytes(),
        ))
    }

    // ----- inspection ---------------------------------------------------------------------

    /// This node's id (base58 text).
    pub fn id(&self) -> String {
        text(&self.me)
    }

    /// The network's protocol id (base58 text).
    pub fn protocol_id(&self) -> &str {
        &self.protocol_id
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &P2ptConfig {
        &self.config
    }

    /// Linked peers: (id, connection, the address it announced).
    pub fn peers(&self) -> Vec<(String, ConnId, String)> {
        self.routing
            .iter()
            .filter_map(|(id, conn)| {
                let link = self.links.get(conn)?;
                let addr = link.peer.as_ref().map(|p| dial_addr(&p.addr))?;
                Some((text(id), *conn, addr))
            })
            .collect()
    }

    /// The sync table's entries, by key.
    pub fn table_entries(&self) -> Vec<(Vec<u8>, P2ptEntry)> {
        self.table
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// The entry at `key`.
    pub fn table_get(&self, key: &[u8]) -> Option<&P2ptEntry> {
        self.table.get(key)
    }

    /// Its counters.
    pub fn metrics(&self) -> P2ptMetrics {
        let mut m = self.metrics.clone();
        m.peers = self.routing.len() as u64;
        m.table_keys = self.table.len() as u64;
        m.waterfall_entries = self.waterfalls.len() as u64;
        m
    }

    /// The connections it has.
    pub fn conn_ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.links.keys().copied()
    }

    /// The address a connection was dialed at or accepted from.
    pub fn conn_addr(&self, conn: ConnId) -> Option<&str> {
        self.links.get(&conn).map(|l| l.addr.as_str())
    }

    /// The calendar time at `now`, Unix milliseconds, once a wall clock came.
    pub fn wall_clock_ms(&self, now: Instant) -> Option<u64> {
        self.wall
            .map(|(at, ms)| ms + now.saturating_since(at).as_millis())
    }

    fn now_s(&self) -> Option<u64> {
        self.wall_clock_ms(self.now).map(|ms| ms / 1000)
    }

    // ----- the contract -------------------------------------------------------------------

    /// Feeds one input at `now` (see [`crate::Node::handle_input`]).
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), InputError> {
        self.now = self.now.max(now);
        self.run_timers();
        match input {
            Input::Accepted { conn, addr } => {
                if !conn.is_inbound() || self.links.contains_key(&conn) {
                    return Err(Misuse::BadInboundId(conn).into());
                }
                self.links
                    .insert(conn, Link::new(conn, false, addr, self.now));
                if self.shut_down {
                    self.close(conn, CloseReason::Shutdown);
                } else if self.links.len() > P2PT_LINKS_MAX {
                    self.close(conn, CloseReason::TooManyConnections);
                } else {
                    self.send_handshake(conn);
                }
            }
            Input::Connected { conn } => {
                let link = self
                    .links
                    .get_mut(&conn)
                    .filter(|l| l.dialing)
                    .ok_or(Misuse::NotDialing(conn))?;
                link.dialing = false;
                link.opened_at = self.now;
                self.send_handshake(conn);
            }
            Input::ConnectFailed { conn } => {
                if !self.links.get(&conn).is_some_and(|l| l.dialing) {
                    return Err(Misuse::NotDialing(conn).into());
                }
                self.gone(conn, CloseReason::ConnectFailed);
            }
            Input::Received { conn, bytes } => {
                let link = self
                    .links
                    .get_mut(&conn)
                    .filter(|l| !l.dialing)
                    .ok_or(Misuse::UnknownConn(conn))?;
                if link.closing {
                    return Ok(());
                }
                self.metrics.bytes_received += bytes.len() as u64;
                link.push(&bytes, self.now);
                self.read_frames(conn);
            }
            Input::Writable { conn } => {
                let link = self.links.get_mut(&conn).ok_or(Misuse::UnknownConn(conn))?;
                link.unwritten = 0;
            }
            Input::Closed { conn } => {
                if !self.links.contains_key(&conn) {
                    return Err(Misuse::UnknownConn(conn).into());
                }
                self.gone(conn, CloseReason::Lost);
            }
            Input::WallClock { unix_ms } => self.wall = Some((self.now, unix_ms)),
            Input::Completed { id, .. } => return Err(Misuse::UnknownRequest(id).into()),
            Input::Command(command) => return self.command(command),
        }
        Ok(())
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.run_timers();
    }

    /// The next output, or `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the node next wants [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.shut_down {
            return None;
        }
        let links = self.links.values().filter(|l| !l.closing && !l.dialing);
        let handshakes = links
            .clone()
            .filter(|l| l.peer.is_none())
            .map(|l| l.opened_at + P2PT_HANDSHAKE_TIMEOUT);
        let partials =
            links.filter_map(|l| l.partial_since.map(|t| t + P2PT_PARTIAL_FRAME_TIMEOUT));
        let redials = self.configured.values().filter_map(|c| c.redial_at);
        handshakes
            .chain(partials)
            .chain(redials)
            .min()
            .map(|t| t.max(self.now))
    }

    // ----- commands -----------------------------------------------------------------------

    fn command(&mut self, command: Command) -> Result<(), InputError> {
        let refuse = |r: P2ptRefusal| Err(InputError::Refused(Refusal::P2pt(r)));
        if self.shut_down {
            return refuse(P2ptRefusal::ShutDown);
        }
        match command {
            Command::Connect { addr } => {
                if !self.configured.contains_key(&addr) {
                    if self.configured.len() >= P2PT_CONFIGURED_MAX {
                        return refuse(P2ptRefusal::TooManyConfiguredPeers);
                    }
                    self.configured.insert(addr.clone(), Configured::default());
                }
                if self.configured.get(&addr).is_some_and(|c| c.conn.is_none()) {
                    self.dial_configured(&addr);
                }
                Ok(())
            }
            Command::Shutdown => {
                self.shut_down = true;
                self.configured.clear();
                let conns: Vec<ConnId> = self.links.keys().copied().collect();
                for conn in conns {
                    self.close(conn, CloseReason::Shutdown);
                }
                Ok(())
            }
            Command::Mesh(MeshCommand::Broadcast { payload }) => self
                .broadcast(SubFlag::BROADCAST, vec![app_value(&payload)])
                .map_err(|r| InputError::Refused(Refusal::P2pt(r))),
            Command::Table(TableCommand::Set { key, value, .. })
                if self.config.subnet.is_sync() =>
            {
                self.set(key, app_value(&value))
                    .map_err(|r| InputError::Refused(Refusal::P2pt(r)))
            }
            Command::Table(TableCommand::Delete { key }) if self.config.subnet.is_sync() => {
                if self.table.get(&key).is_none() {
                    return refuse(P2ptRefusal::NoSuchKey);
                }
                self.set(key, Value::Nil)
                    .map_err(|r| InputError::Refused(Refusal::P2pt(r)))
            }
            Command::Table(_) if self.config.subnet.is_sync() => refuse(P2ptRefusal::Unsupported(
                "lease release (a lease ends an hour after the last write)",
            )),
            Command::Table(_) => refuse(P2ptRefusal::Unsupported("table on the mesh subnet")),
            Command::Disconnect { .. } => refuse(P2ptRefusal::Unsupported("weft node ids")),
            Command::Chord(_) => refuse(P2ptRefusal::Unsupported("chord")),
            Command::Replicate(_) => refuse(P2ptRefusal::Unsupported("folders")),
            Command::Run(_) => refuse(P2ptRefusal::Unsupported("remote runs")),
            Command::Drops(_) => refuse(P2ptRefusal::Unsupported("drops")),
        }
    }

    /// Sends `broadcast/<sub> args` to every linked peer (one message: the same bytes, so the
    /// same id, on every link).
    fn broadcast(&mut self, sub: SubFlag, args: Vec<Value>) -> Result<(), P2ptRefusal> {
        let now_s = self.now_s().ok_or(P2ptRefusal::NoWallClock)?;
        let m = Message::new(MainFlag::BROADCAST, self.me.clone(), now_s, sub, args);
        let bytes = m.to_msgpack();
        if P2PT_ID_BYTES + bytes.len() > P2PT_BODY_BYTES_MAX {
            return Err(P2ptRefusal::TooLarge {
                len: bytes.len(),
                max: P2PT_BODY_BYTES_MAX - P2PT_ID_BYTES,
            });
        }
        let id = message_id(&bytes);
        self.waterfalls.insert(id, now_s, now_s);
        if sub == SubFlag::BROADCAST {
            self.metrics.broadcasts_originated += 1;
        }
        let conns: Vec<ConnId> = self.routing.values().copied().collect();
        for conn in conns {
            self.transmit(conn, &bytes, true, true);
        }
        Ok(())
    }

    /// `SyncSocket.__setitem__`: stores at once if the lease rules allow, then broadcasts
    /// `store [key, value]`.
    fn set(&mut self, key: Vec<u8>, value: Value) -> Result<(), P2ptRefusal> {
        let now_s = self.now_s().ok_or(P2ptRefusal::NoWallClock)?;
        let leasing = self.leasing();
        let delete = value.is_nil();
        match self.table.store(
            key.clone(),
            value.clone(),
            self.me.clone(),
            now_s,
            leasing,
            now_s,
        ) {
            Ok(()) => {}
            Err(NotApplied::Leased(owner, at)) => {
                return Err(P2ptRefusal::Leased {
                    owner: text(&owner),
                    until_s: at.saturating_add(super::P2PT_LEASE_S),
                })
            }
            Err(NotApplied::Nothing) => return Err(P2ptRefusal::NoSuchKey),
            Err(NotApplied::Full) => return Err(P2ptRefusal::Full),
        }
        self.changed(
            &key,
            if delete { None } else { Some(&value) },
            self.me.clone(),
            now_s,
        );
        self.broadcast(SubFlag::STORE, vec![Value::Binary(key), value])
    }

    fn leasing(&self) -> bool {
        self.config.subnet == super::Subnet::SyncLeased
    }

    fn changed(&mut self, key: &[u8], value: Option<&Value>, owner: Vec<u8>, timestamp: u64) {
        self.event(P2ptEvent::KeyChanged {
            key: key.to_vec(),
            value: value.map(msgpack),
            owner: text(&owner),
            timestamp,
        });
    }

    // ----- connections --------------------------------------------------------------------

    fn dial(&mut self, addr: String) -> ConnId {
        let conn = ConnId(self.next_outbound << 1);
        self.next_outbound += 1;
        self.links
            .insert(conn, Link::new(conn, true, addr.clone(), self.now));
        self.outputs.push_back(Output::Connect { conn, addr });
        conn
    }

    /// Whether a linked peer announced `addr` (`host:port`) as where it listens.
    fn linked_at(&self, addr: &str) -> bool {
        self.routing.values().any(|c| {
            self.links
                .get(c)
                .and_then(|l| l.peer.as_ref())
                .is_some_and(|p| dial_addr(&p.addr) == addr)
        })
    }

    fn dial_configured(&mut self, addr: &str) {
        let conn = self.dial(addr.to_owned());
        if let Some(c) = self.configured.get_mut(addr) {
            c.conn = Some(conn);
            c.redial_at = None;
        }
    }

    fn event(&mut self, e: P2ptEvent) {
        self.outputs.push_back(Output::Event(Event::P2pt(e)));
    }

    /// Emits a close: nothing more is read from or sent to `conn`.
    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if link.closing {
            return;
        }
        link.closing = true;
        if reason.is_fault() {
            self.metrics.faults += 1;
            self.outputs
                .push_back(Output::Event(Event::ConnectionClosed {
                    conn,
                    reason: reason.clone(),
                }));
        }
        self.unroute(conn, reason.clone());
        self.outputs.push_back(Output::Close { conn, reason });
    }

    /// Takes `conn` out of the routing table if it is the link kept for its peer.
    fn unroute(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(id) = self
            .links
            .get(&conn)
            .and_then(|l| l.peer_id())
            .map(<[u8]>::to_vec)
        else {
            return;
        };
        if self.routing.get(&id) == Some(&conn) {
            self.routing.remove(&id);
            self.event(P2ptEvent::PeerDown {
                id: text(&id),
                reason,
            });
        }
    }

    /// The connection is gone (closed by the driver, or its dial failed).
    fn gone(&mut self, conn: ConnId, reason: CloseReason) {
        self.unroute(conn, reason);
        let Some(link) = self.links.remove(&conn) else {
            return;
        };
        if self.shut_down {
            return;
        }
        let now = self.now;
        if let Some(c) = self.configured.get_mut(&link.addr) {
            if c.conn == Some(conn) {
                c.conn = None;
                if link.peer.is_none() {
                    c.failures = c.failures.saturating_add(1);
                }
                let shift = c.failures.saturating_sub(1).min(5);
                let wait = Duration::from_millis(
                    (P2PT_REDIAL_MIN.as_millis() << shift).min(P2PT_REDIAL_MAX.as_millis()),
                );
                c.redial_at = Some(now + wait);
            }
        }
    }

    fn run_timers(&mut self) {
        if self.shut_down {
            return;
        }
        let now = self.now;
        let mut late = Vec::new();
        for l in self.links.values().filter(|l| !l.closing && !l.dialing) {
            if l.peer.is_none() && now >= l.opened_at + P2PT_HANDSHAKE_TIMEOUT {
                late.push((l.conn, CloseReason::HandshakeTimeout));
            } else if l
                .partial_since
                .is_some_and(|t| now >= t + P2PT_PARTIAL_FRAME_TIMEOUT)
            {
                late.push((l.conn, CloseReason::Timeout));
            }
        }
        for (conn, reason) in late {
            self.close(conn, reason);
        }
        let due: Vec<String> = self
            .configured
            .iter()
            .filter(|(_, c)| c.conn.is_none() && c.redial_at.is_some_and(|t| now >= t))
            .map(|(a, _)| a.clone())
            .collect();
        for addr in due {
            if self.linked_at(&addr) {
                // Linked through the peer's own dial (the two-link rule kept that one): look
                // again later rather than dial into the same rule.
                if let Some(c) = self.configured.get_mut(&addr) {
                    c.redial_at = Some(now + P2PT_REDIAL_MAX);
                }
            } else {
                self.dial_configured(&addr);
            }
        }
    }

    // ----- sending ------------------------------------------------------------------------

    /// Frames `bytes` (a message's msgpack) for `conn`, compressed with its method unless
    /// `compress` is false (handshakes), and hands it to the driver.
    fn transmit(&mut self, conn: ConnId, bytes: &[u8], compress: bool, remember: bool) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if link.closing || link.dialing {
            return;
        }
        let method = if compress {
            link.send_method(&self.ours)
        } else {
            None
        };
        if remember {
            link.last_sent = Some(bytes.to_vec());
        }
        let Ok(wire) = encode_frame(bytes, method) else {
            // Only an oversized body fails, and senders check the size first; a relayed
            // message came in a frame under the same limit (compression can only grow it by
            // a few bytes, and then the frame is not sent).
            return;
        };
        link.unwritten += wire.len();
        let slow = link.unwritten > P2PT_SEND_QUEUE_BYTES_MAX;
        self.metrics.frames_sent += 1;
        self.metrics.bytes_sent += wire.len() as u64;
        self.outputs.push_back(Output::Transmit {
            conn,
            bytes: Bytes::from(wire),
        });
        if slow {
            self.close(conn, CloseReason::SlowPeer);
        }
    }

    fn send(&mut self, conn: ConnId, main: MainFlag, sub: SubFlag, args: Vec<Value>) {
        let now_s = self.now_s().unwrap_or(0);
        let m = Message::new(main, self.me.clone(), now_s, sub, args);
        let bytes = m.to_msgpack();
        let remember = main == MainFlag::WHISPER || main == MainFlag::BROADCAST;
        let compress = sub != SubFlag::HANDSHAKE;
        self.transmit(conn, &bytes, compress, remember);
    }

    fn send_handshake(&mut self, conn: ConnId) {
        let codes = self.ours.iter().map(|m| u64::from(m.code())).collect();
        let h = Handshake {
            id: self.me.clone(),
            protocol_id: self.protocol_id.clone().into_bytes(),
            addr: self.announce.clone(),
            compression: codes,
        };
        let args = h.to_message(0).args;
        self.send(conn, MainFlag::WHISPER, SubFlag::HANDSHAKE, args);
    }

    fn send_peers(&mut self, conn: ConnId) {
        let list = Peers(
            self.routing
                .iter()
                .filter_map(|(id, c)| {
                    let p = self.links.get(c)?.peer.as_ref()?;
                    Some((p.addr.clone(), id.clone()))
                })
                .collect(),
        );
        let args = list.to_message(Vec::new(), 0).args;
        self.send(conn, MainFlag::WHISPER, SubFlag::PEERS, args);
    }

    // ----- receiving ----------------------------------------------------------------------

    fn read_frames(&mut self, conn: ConnId) {
        loop {
            let Some(link) = self.links.get_mut(&conn) else {
                return;
            };
            if link.closing {
                return;
            }
            match link.next_frame(&self.ours, self.now) {
                Ok(Some(frame)) => {
                    self.metrics.frames_received += 1;
                    self.on_frame(conn, frame);
                }
                Ok(None) => return,
                Err(e) => {
                    self.close(conn, CloseReason::P2pt(e));
                    return;
                }
            }
        }
    }

    fn on_frame(&mut self, conn: ConnId, frame: Decoded) {
        let Decoded {
            id,
            msgpack,
            message: m,
            ..
        } = frame;
        if m.main_flag == MainFlag::RENEGOTIATE {
            self.on_renegotiate(conn, &m);
            return;
        }
        if m.main_flag == MainFlag::BROADCAST {
            let now_s = self.now_s().unwrap_or(m.timestamp);
            if super::waterfalls::Waterfalls::is_expired(m.timestamp, now_s) {
                self.metrics.broadcasts_expired += 1;
                return;
            }
            if !self.waterfalls.insert(id, m.timestamp, now_s) {
                self.metrics.broadcast_duplicates += 1;
                return;
            }
            // py2p relays to every linked peer but the originator, the sender's link
            // included, and forwards the bytes it received.
            let to: Vec<ConnId> = self
                .routing
                .iter()
                .filter(|(peer, _)| peer.as_slice() != m.sender.as_slice())
                .map(|(_, c)| *c)
                .collect();
            for c in to {
                self.metrics.broadcasts_relayed += 1;
                self.transmit(c, &msgpack, true, true);
            }
        }
        let sub = m.sub_flag;
        if sub == SubFlag::HANDSHAKE {
            self.on_handshake(conn, &m);
        } else if sub == SubFlag::PEERS {
            self.on_peers(conn, &m);
        } else if sub == SubFlag::REQUEST {
            self.on_request(conn, &m);
        } else if sub == SubFlag::STORE && self.config.subnet.is_sync() {
            self.on_store(conn, &m);
        } else if sub == SubFlag::DELTA && self.config.subnet.is_sync() {
            self.on_delta(&m);
        } else if sub == SubFlag::BROADCAST || sub == SubFlag::WHISPER {
            self.metrics.delivered += 1;
            let args = msgpack_args(&m.args);
            self.event(P2ptEvent::Message {
                sender: text(&m.sender),
                broadcast: m.main_flag == MainFlag::BROADCAST,
                id,
                timestamp: m.timestamp,
                args,
            });
        }
        // Anything else (response, notify, chord's store/retrieve on a mesh...) py2p's
        // MeshSocket ignores too.
    }

    fn on_renegotiate(&mut self, conn: ConnId, m: &Message) {
        if m.sub_flag == SubFlag::COMPRESSION {
            let Some(Value::Array(codes)) = m.args.first() else {
                self.close(
                    conn,
                    CloseReason::UnexpectedMessage("renegotiate/compression without a list"),
                );
                return;
            };
            let codes: Vec<u64> = codes.iter().filter_map(Value::as_u64).collect();
            let Some(link) = self.links.get_mut(&conn) else {
                return;
            };
            let changed = link.peer_codes != codes;
            link.peer_codes = codes.clone();
            if changed {
                // py2p answers with its own methods the peer named, in its own order.
                let common: Vec<Value> = self
                    .ours
                    .iter()
                    .map(|m| u64::from(m.code()))
                    .filter(|c| codes.contains(c))
                    .map(Value::from)
                    .collect();
                self.send(
                    conn,
                    MainFlag::RENEGOTIATE,
                    SubFlag::COMPRESSION,
                    vec![Value::Array(common)],
                );
            }
        } else if m.sub_flag == SubFlag::RESEND {
            if let Some(last) = self.links.get(&conn).and_then(|l| l.last_sent.clone()) {
                self.transmit(conn, &last, true, true);
            }
        }
    }

    fn on_handshake(&mut self, conn: ConnId, m: &Message) {
        let Some(h) = self.parsed(conn, Handshake::parse(m)) else {
            return;
        };
        if h.protocol_id != self.protocol_id.as_bytes() {
            self.close(conn, CloseReason::WrongNetwork);
            return;
        }
        if h.id == self.me {
            self.close(conn, CloseReason::SelfConnection);
            return;
        }
        if let Some(&other) = self.routing.get(&h.id) {
            if other != conn {
                // py2p: the link opened by the node with the higher id survives.
                let this_outbound = self.links.get(&conn).is_some_and(|l| l.outbound);
                let me_higher = id_key(&self.me) > id_key(&h.id);
                if me_higher ^ this_outbound {
                    self.close(conn, CloseReason::DuplicateLink);
                    return;
                }
                self.close(other, CloseReason::DuplicateLink);
            }
        }
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        let first = link.peer.is_none();
        link.peer_codes = h.compression.clone();
        link.peer = Some(PeerInfo {
            id: h.id.clone(),
            addr: h.addr.clone(),
        });
        let addr = link.addr.clone();
        self.routing.insert(h.id.clone(), conn);
        if let Some(c) = self.configured.get_mut(&addr) {
            if c.conn == Some(conn) {
                c.failures = 0;
            }
        }
        if first {
            self.event(P2ptEvent::PeerUp {
                conn,
                id: text(&h.id),
                addr: dial_addr(&h.addr),
            });
        }
        self.send_peers(conn);
        if self.config.subnet.is_sync() {
            let burst: Vec<Vec<Value>> = self
                .table
                .iter()
                .map(|(k, e)| {
                    vec![
                        Value::Binary(k.clone()),
                        e.value.clone(),
                        Value::Binary(e.owner.clone()),
                        Value::from(e.timestamp),
                    ]
                })
                .collect();
            for args in burst {
                self.send(conn, MainFlag::WHISPER, SubFlag::STORE, args);
            }
        }
    }

    /// A typed view's value, or `None` after closing `conn` for the fault.
    fn parsed<T>(&mut self, conn: ConnId, view: Result<T, P2ptError>) -> Option<T> {
        match view {
            Ok(v) => Some(v),
            Err(e) => {
                self.close(conn, CloseReason::P2pt(e));
                None
            }
        }
    }

    fn on_peers(&mut self, conn: ConnId, m: &Message) {
        let Some(peers) = self.parsed(conn, Peers::parse(m)) else {
            return;
        };
        for (addr, id) in peers.0 {
            let outgoing = self
                .links
                .values()
                .filter(|l| l.outbound && !l.closing)
                .count();
            if outgoing >= P2PT_OUTGOING_MAX || self.links.len() >= P2PT_LINKS_MAX {
                return;
            }
            let target = dial_addr(&addr);
            let known = id == self.me
                || self.routing.contains_key(&id)
                || addr == self.announce
                || addr.port == 0
                || self.links.values().any(|l| !l.closing && l.addr == target);
            if !known {
                self.dial(target);
            }
        }
    }

    fn on_request(&mut self, conn: ConnId, m: &Message) {
        let star = match m.args.first() {
            Some(Value::String(s)) => s.as_bytes() == b"*",
            Some(Value::Binary(b)) => b == b"*",
            _ => false,
        };
        if star {
            self.send_peers(conn);
            return;
        }
        // `request [request id, node id]`: answered with where that node is, if linked.
        let (Some(req), Some(Value::Binary(wanted))) = (m.args.first(), m.args.get(1)) else {
            return;
        };
        let Some(addr) = self
            .routing
            .get(wanted)
            .and_then(|c| self.links.get(c))
            .and_then(|l| l.peer.as_ref())
            .map(|p| p.addr.clone())
        else {
            return;
        };
        let answer = vec![
            req.clone(),
            Value::Array(vec![
                Value::Array(vec![
                    Value::from(addr.host.as_str()),
                    Value::from(addr.port),
                ]),
                Value::Binary(wanted.clone()),
            ]),
        ];
        self.send(conn, MainFlag::BROADCAST, SubFlag::RESPONSE, answer);
    }

    fn on_store(&mut self, conn: ConnId, m: &Message) {
        let Some(s) = self.parsed(conn, Store::parse(m)) else {
            return;
        };
        let now_s = self.now_s().unwrap_or(0);
        let leasing = self.leasing();
        let (owner, ts, catch_up) = match &s.meta {
            Some((owner, ts)) => (owner.clone(), *ts, true),
            None => (m.sender.clone(), m.timestamp, false),
        };
        let delete = s.value.is_nil();
        let apply = if catch_up {
            SyncTable::catch_up
        } else {
            SyncTable::store
        };
        let result = apply(
            &mut self.table,
            s.key.clone(),
            s.value.clone(),
            owner.clone(),
            ts,
            leasing,
            now_s,
        );
        match result {
            Ok(()) => self.changed(&s.key, (!delete).then_some(&s.value), owner, ts),
            Err(_) => self.metrics.table_writes_refused += 1,
        }
    }

    fn on_delta(&mut self, m: &Message) {
        let (Some(Value::Binary(key)), Some(Value::Map(delta))) = (m.args.first(), m.args.get(1))
        else {
            self.metrics.table_writes_refused += 1;
            return;
        };
        let now_s = self.now_s().unwrap_or(0);
        let leasing = self.leasing();
        match self.table.delta(
            key.clone(),
            delta.clone(),
            m.sender.clone(),
            m.timestamp,
            leasing,
            now_s,
        ) {
            Ok(()) => {
                let value = self.table.get(key).map(|e| e.value.clone());
                self.changed(key, value.as_ref(), m.sender.clone(), m.timestamp);
            }
            Err(_) => self.metrics.table_writes_refused += 1,
        }
    }

    /// Checks the node's own invariants (tests and the fuzzer).
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, conn) in &self.routing {
            let link = self
                .links
                .get(conn)
                .ok_or_else(|| format!("routing names a missing link {conn:?}"))?;
            if link.closing {
                return Err(format!("routing names a closing link {conn:?}"));
            }
            if link.peer_id() != Some(id.as_slice()) {
                return Err(format!("routing's {conn:?} has another peer"));
            }
        }
        Ok(())
    }
}

fn msgpack_args(args: &[Value]) -> Bytes {
    msgpack(&Value::Array(args.to_vec()))
}

impl From<P2ptError> for CloseReason {
    fn from(e: P2ptError) -> CloseReason {
        CloseReason::P2pt(e)
    }
}
