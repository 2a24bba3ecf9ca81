//! [`P2ptNode`]: a node of a p2p.today network (SPEC.md §25.9–§25.12).
//!
//! Its methods are kept by concept: [`commands`] (the application's), [`connections`]
//! (dials, closes, timers), [`send`], [`receive`]; this module holds the state, what is read
//! of it, and the contract (`handle_input`, `handle_timeout`, `poll_output`, `poll_timeout`).

mod commands;
mod connections;
mod receive;
mod send;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use weft_protocol::p2pt::rmpv::Value;
use weft_protocol::p2pt::{base58, ids, Addr, Method, P2ptError};

use crate::connection::{CloseReason, ConnId};
use crate::io::{Input, InputError, Misuse, Output};
use crate::p2pt::link::Link;
use crate::p2pt::table::SyncTable;
use crate::p2pt::waterfalls::Waterfalls;
use crate::p2pt::{P2ptConfig, P2ptEntry, P2ptMetrics};
use crate::session::dial_guard::DialGuard;
use crate::time::{Duration, Instant};
use connections::dial_addr;

/// Connections (dialing, handshaking or linked) a node keeps at most; one more accepted is
/// closed at once.
pub const P2PT_LINKS_MAX: usize = 64;

/// Inbound connections from one host (its port ignored) a node keeps at most; one more is
/// closed at once: one host could otherwise hold every one of [`P2PT_LINKS_MAX`] (the
/// dialect has no proof of identity, and a handshake costs nothing), shutting out every
/// other peer.
pub const P2PT_INBOUND_PER_HOST_MAX: usize = 8;

/// Outbound links at most for which a `peers` list is still dialed: py2p's `max_outgoing`.
pub const P2PT_OUTGOING_MAX: usize = 4;

/// A connection whose peer has not sent its handshake by then is closed.
pub const P2PT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection that holds part of a frame this long is closed (py2p's `kill_old_nodes`).
pub const P2PT_PARTIAL_FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes handed to the driver for one connection and not yet written; past it the peer is
/// too slow and its connection is closed.
pub const P2PT_SEND_QUEUE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// A link's table catch-up goes on while fewer bytes than this are unwritten to it, and
/// resumes at each `Writable` (a store is at most `P2PT_BODY_BYTES_MAX`, so the catch-up
/// alone never passes [`P2PT_SEND_QUEUE_BYTES_MAX`]).
pub const P2PT_CATCH_UP_UNWRITTEN_MAX: usize = 1024 * 1024;

/// Addresses named in `peers` lists whose dials are remembered, at most (the least recently
/// dialed is forgotten first).
pub const P2PT_LISTED_RECORDS_MAX: usize = 256;

/// Dials of one address named in `peers` lists not answered by a handshake, at most, while
/// its record is held (each waits `P2PT_REDIAL_MIN · 2^unanswered` after the one before).
pub const P2PT_LISTED_ATTEMPTS_MAX: u8 = 8;

/// Dials of addresses named in `peers` lists, all together, in any 60 seconds at most.
pub const P2PT_LISTED_DIALS_PER_MINUTE: usize = 20;

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
    /// Dials of addresses peers named (their backoff and the budget): a peer may name any
    /// address, so each failed dial would otherwise be made again at its next `peers`.
    listed: DialGuard,
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
            listed: DialGuard::new(P2PT_LISTED_RECORDS_MAX),
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

    /// The sync table's entries, by key (borrowed: a table may hold 64 MiB).
    pub fn table_entries(&self) -> impl Iterator<Item = (&[u8], &P2ptEntry)> + '_ {
        self.table.iter().map(|(k, e)| (k.as_slice(), e))
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
                let host = crate::session::address::host_of(&addr);
                let from_host = self
                    .links
                    .values()
                    .filter(|l| !l.outbound && !l.closing)
                    .filter(|l| crate::session::address::host_of(&l.addr) == host)
                    .count();
                let host_full = from_host >= P2PT_INBOUND_PER_HOST_MAX;
                self.links
                    .insert(conn, Link::new(conn, false, addr, self.now));
                if self.shut_down {
                    self.close(conn, CloseReason::Shutdown);
                } else if self.links.len() > P2PT_LINKS_MAX || host_full {
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
                self.continue_catch_up(conn);
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

impl From<P2ptError> for CloseReason {
    fn from(e: P2ptError) -> CloseReason {
        CloseReason::P2pt(e)
    }
}
