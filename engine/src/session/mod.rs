//! The session layer, kept apart from the protocols as quinn-proto keeps its Endpoint apart
//! from its Connections: connections and their handshake, liveness, send queues and flushing,
//! the one link per peer, dedicated connections, the address book and its dials, and the
//! incarnations seen. Protocols never see a connection: they send to a [`NodeId`] through
//! [`Session::send`], and hear of links through [`Notice`]s.
//!
//! Below it sits the [`wire::Wire`] seam (framing and transport); above it, the host
//! (`crate::node`) hands it the protocols' sends and hands them its notices and frames.
//!
//! [`Session`]'s methods are kept by concept: [`connections`] (dial, accept, close, caps),
//! [`receive`] (frames admitted), [`establish`] (the handshake's end, one link per peer),
//! [`send`] (routing, framing, flushing), [`dials`] (redials, the address book's dials, the
//! known peers' store). This module holds the state, what is read of it, what the host
//! drains, and the timers with the liveness tick.

pub(crate) mod address;
mod address_book;
mod conn;
mod connections;
mod dedicated;
pub(crate) mod dial_guard;
mod dials;
mod establish;
mod handshake;
mod incarnations;
mod known_peers;
mod links;
mod receive;
mod redial;
mod send;
mod send_queue;
mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_protocol::{ByeReason, Family, Message, NetworkId, NodeId, PeerInfo};

use crate::config::{Config, Limits, Timers};
use crate::connection::{CloseReason, ConnId, Direction};
use crate::identity::Identity;
use crate::io::{HostRequest, Output};
use crate::link_key::LinkEncryption;
use crate::metrics::{ConnStats, SessionMetrics};
use crate::noise::NoiseKeys;
use crate::time::Instant;
use crate::timer::{TimerName, TimerTable};

pub(crate) use address::is_unspecified;
use address_book::AddressBook;
pub(crate) use conn::Peer;
use conn::{Conn, ConnState};
use dedicated::Dedicated;
use dial_guard::DialGuard;
use incarnations::Incarnations;
use known_peers::KnownPeers;
use links::Links;
pub(crate) use receive::Incoming;
use redial::{Backoff, Redials};
#[cfg(test)]
use send_queue::BULK_FRAME_BYTES_MAX;

/// A host as `weft network` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Its id.
    pub node: NodeId,
    /// Where it can be dialed, if known.
    pub addr: Option<String>,
    /// Whether this node holds a live link to it.
    pub direct: bool,
    /// When it was last heard from or of.
    pub last_seen: Instant,
}

/// What the session tells the host, for the protocols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A link to `node` is established; `replaced`: it replaced a link to the same run.
    LinkUp { node: NodeId, replaced: bool },
    /// The link to `node` went away.
    LinkDown { node: NodeId, reason: CloseReason },
    /// `node` has room for the next bulk frame of `family`.
    Room { node: NodeId, family: Family },
}

/// The session's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionTimer {
    /// Liveness: PINGs, handshake and peer timeouts.
    Tick,
    /// The next dial of an address-book entry.
    Dial,
    /// The next redial of a configured, saved or lost address (SPEC.md §8.10).
    Redial,
    /// Hands a changed list of known peers to the host (SPEC.md §8.11).
    SavePeers,
}

impl TimerName for SessionTimer {
    const ALL: &'static [SessionTimer] = &[
        SessionTimer::Tick,
        SessionTimer::Dial,
        SessionTimer::Redial,
        SessionTimer::SavePeers,
    ];
    fn index(self) -> usize {
        self as usize
    }
}

/// Where the stored list of known peers is (SPEC.md §8.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KnownLoad {
    /// Not asked for yet (before the first input).
    NotAsked,
    /// Asked for; nothing is stored until it is answered.
    Loading,
    /// Answered: loaded, absent, or refused as damaged (stores may replace it).
    Done,
    /// The host could not load it: never stored over, since it may still be there (and a
    /// node without a state folder keeps none).
    Failed,
}

/// The session's token for its load of the known peers.
const LOAD_KNOWN: u64 = 0;
/// The session's token for a store of the known peers.
const STORE_KNOWN: u64 = 1;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Session {
    identity: Identity,
    network: NetworkId,
    incarnation: u64,
    listen_addr: Option<String>,
    compression: bool,
    /// Broadcasts carry origin signatures (`Config::broadcast_signatures`), announced in HELLO.
    broadcasts_signed: bool,
    /// Dial address-book entries to keep `outbound_target` links.
    dials_book: bool,
    /// The families this node runs (HELLO `families`).
    families: u32,
    limits: Limits,
    timer_periods: Timers,
    rng: ChaCha8Rng,
    /// The node's Noise keys; `None` in the simulator's plaintext speed runs.
    noise: Option<Arc<NoiseKeys>>,
    /// Noise ephemeral keys' seeds (stream 2 of the node's seed).
    noise_rng: ChaCha8Rng,
    now: Instant,
    wall_clock: Option<(u64, Instant)>,
    conns: BTreeMap<ConnId, Conn>,
    links: Links,
    dedicated: Dedicated,
    book: AddressBook,
    incarnations: Incarnations,
    /// Address-book dials under way, by connection.
    dial_targets: BTreeMap<ConnId, NodeId>,
    /// Bounds on those dials, per address and overall.
    dial_guard: DialGuard,
    /// Addresses dialed on the session's own schedule (SPEC.md §8.10).
    redials: Redials,
    /// Nodes `Command::Disconnect` closed, oldest first: kept away (SPEC.md §8.10).
    disconnected: VecDeque<NodeId>,
    /// Peers linked with, stored by the host for the next start (SPEC.md §8.11).
    known: KnownPeers,
    /// Where the stored known peers are.
    known_load: KnownLoad,
    /// A store of the known peers is under way.
    known_storing: bool,
    /// Requests to the host, by the session's token, for the node to number and hand out.
    requests: VecDeque<(u64, HostRequest)>,
    timers: TimerTable<SessionTimer, 4>,
    last_outbound: u64,
    outputs: VecDeque<Output>,
    notices: VecDeque<Notice>,
    metrics: SessionMetrics,
    /// Reused list of send targets, so a relay allocates nothing.
    scratch: Vec<ConnId>,
    /// Connections given frames since the last [`flush_queued`](Self::flush_queued), in the
    /// order of their first frame (each once: `Conn::flush_due`).
    unflushed: Vec<ConnId>,
    started: bool,
    shut_down: bool,
}

impl Session {
    /// A session for `config`, announcing `families` in its HELLOs, with its RNG seeded from
    /// `seed`.
    pub(crate) fn new(config: &Config, families: u32, seed: [u8; 32]) -> Session {
        let identity = Identity::from_secret(&config.secret_key);
        // Redial jitter draws from its own stream of the same seed, so the nonces and dial
        // choices of the main stream are the same with or without redials.
        let mut redial_rng = ChaCha8Rng::from_seed(seed);
        redial_rng.set_stream(1);
        // Noise ephemeral keys draw from a third stream, for the same reason.
        let mut noise_rng = ChaCha8Rng::from_seed(seed);
        noise_rng.set_stream(2);
        let noise = match config.link_encryption {
            LinkEncryption::Noise => Some(Arc::new(NoiseKeys::new(
                &config.secret_key,
                config.network_key,
                config.limits.noise_rekey,
            ))),
            LinkEncryption::PlaintextSimulationOnly => None,
        };
        let backoff = Backoff {
            first: config.timers.redial_backoff_first,
            max: config.timers.redial_backoff_max,
        };
        let limits = &config.limits;
        Session {
            network: NetworkId::from_name(&config.network),
            identity,
            incarnation: config.incarnation,
            listen_addr: config.listen_addr.clone(),
            compression: config.compression,
            broadcasts_signed: config.broadcast_signatures,
            dials_book: config.discovery,
            families: families | Family::Session.bit(),
            limits: config.limits.clone(),
            timer_periods: config.timers.clone(),
            rng: ChaCha8Rng::from_seed(seed),
            noise,
            noise_rng,
            now: Instant::ZERO,
            wall_clock: None,
            conns: BTreeMap::new(),
            links: Links::default(),
            dedicated: Dedicated::default(),
            book: AddressBook::new(config.limits.heard_of_max),
            incarnations: Incarnations::new(
                config.limits.seen_origins_max,
                crate::hasher::hash_key(&seed),
            ),
            dial_targets: BTreeMap::new(),
            dial_guard: DialGuard::new(config.limits.heard_of_max),
            redials: Redials::new(
                limits.configured_peers_max,
                limits.known_peers_saved_max,
                backoff,
                redial_rng,
            ),
            known: KnownPeers::new(limits.known_peers_saved_max),
            known_load: KnownLoad::NotAsked,
            known_storing: false,
            disconnected: VecDeque::new(),
            requests: VecDeque::new(),
            timers: TimerTable::default(),
            last_outbound: 0,
            outputs: VecDeque::new(),
            notices: VecDeque::new(),
            metrics: SessionMetrics::default(),
            scratch: Vec::new(),
            unflushed: Vec::new(),
            started: false,
            shut_down: false,
        }
    }

    /// This node's key pair.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// This run's incarnation (`Config::incarnation`).
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub(crate) fn listen_addr(&self) -> Option<&str> {
        self.listen_addr.as_deref()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    pub(crate) fn metrics(&self) -> &SessionMetrics {
        &self.metrics
    }

    /// Established links' peers, in node-id order.
    pub(crate) fn link_peers(&self) -> impl Iterator<Item = &Peer> + '_ {
        self.links
            .values()
            .filter_map(|c| self.conns.get(c).and_then(Conn::peer))
    }

    pub(crate) fn link_count(&self) -> usize {
        self.links.len()
    }

    /// The linked peer `node`.
    pub(crate) fn link_peer(&self, node: &NodeId) -> Option<&Peer> {
        let conn = self.links.get(node)?;
        self.conns.get(conn).and_then(Conn::peer)
    }

    /// Peers with an established link, in node-id order, with their connection.
    pub(crate) fn links(&self) -> impl Iterator<Item = (NodeId, ConnId)> + '_ {
        self.links.iter().map(|(n, c)| (*n, *c))
    }

    pub(crate) fn known_peers(&self, exclude: NodeId, max: usize) -> Vec<PeerInfo> {
        self.book.known_peers(exclude, max)
    }

    pub(crate) fn wall_clock_ms(&self, now: Instant) -> Option<u64> {
        self.wall_clock
            .map(|(ms, at)| ms.saturating_add(now.saturating_since(at).as_millis()))
    }

    /// Whether `node`'s route for `family` takes a bulk frame now.
    pub(crate) fn has_room(&self, node: &NodeId, family: Family) -> bool {
        self.route(node, family)
            .and_then(|c| self.conns.get(&c))
            .is_some_and(|c| c.queue().has_bulk_room())
    }

    pub(crate) fn conn_stats(&self, conn: ConnId) -> Option<ConnStats> {
        self.conns.get(&conn).map(Conn::stats)
    }

    pub(crate) fn conn_addr(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).map(|c| c.addr.as_str())
    }

    pub(crate) fn conn_ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.keys().copied()
    }

    /// The family `conn` is dedicated to, if it is a dedicated connection.
    pub(crate) fn dedicated_family(&self, conn: ConnId) -> Option<Family> {
        self.conns.get(&conn).and_then(|c| c.dedicated)
    }

    /// Direct and heard-of hosts, in node-id order.
    pub(crate) fn hosts(&self) -> Vec<HostInfo> {
        let mut hosts: BTreeMap<NodeId, HostInfo> = BTreeMap::new();
        for (node, e) in self.book.iter() {
            hosts.insert(
                *node,
                HostInfo {
                    node: *node,
                    addr: Some(e.addr.clone()),
                    direct: false,
                    last_seen: e.last_seen,
                },
            );
        }
        for (node, conn) in &self.links {
            let Some(c) = self.conns.get(conn) else {
                continue;
            };
            let host = hosts.entry(*node).or_insert_with(|| HostInfo {
                node: *node,
                addr: None,
                direct: true,
                last_seen: c.last_received_at,
            });
            host.direct = true;
            host.last_seen = c.last_received_at;
            if let Some(addr) = c.peer().and_then(|p| p.listen_addr.clone()) {
                host.addr = Some(addr);
            }
        }
        hosts.into_values().collect()
    }

    /// The session's bounds and the consistency of its link table.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let limits = &self.limits;
        for c in self.conns.values() {
            if c.queue().queued_bytes() > limits.send_queue_bytes_max {
                return Err(format!(
                    "{:?}: queue {} bytes",
                    c.id,
                    c.queue().queued_bytes()
                ));
            }
        }
        for (node, conn) in &self.links {
            match self.conns.get(conn).and_then(|c| c.peer()) {
                Some(p) if p.node == *node => {}
                _ => return Err(format!("link to {node} points at {conn:?}")),
            }
        }
        let inbound = self.count(Direction::Inbound);
        let outbound = self.count(Direction::Outbound);
        if inbound > limits.inbound_max || outbound > limits.outbound_max {
            return Err(format!(
                "{inbound} inbound, {outbound} outbound connections"
            ));
        }
        if self.dedicated.len() > limits.dedicated_conns_max {
            return Err(format!(
                "{} dedicated connections open or opening",
                self.dedicated.len()
            ));
        }
        if self.book.len() > limits.heard_of_max.max(1) {
            return Err("the address book is over its bound".into());
        }
        if self.redials.len() > limits.configured_peers_max + limits.known_peers_saved_max {
            return Err(format!("{} redialed addresses", self.redials.len()));
        }
        Ok(())
    }

    /// The next output for the driver.
    pub(crate) fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Queues an output for the driver (a protocol's event, a host request).
    pub(crate) fn push_output(&mut self, output: Output) {
        self.outputs.push_back(output);
    }

    /// The next request for the host, with the session's token for it.
    pub(crate) fn poll_request(&mut self) -> Option<(u64, HostRequest)> {
        self.requests.pop_front()
    }

    /// The next notice for the protocols.
    pub(crate) fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|(at, _)| at)
    }

    /// Moves the clock to `now`, arming the timers on the first call.
    pub(crate) fn set_now(&mut self, now: Instant) {
        if !self.started {
            self.started = true;
            self.timers
                .set(SessionTimer::Tick, now + self.timer_periods.tick);
            if self.dials_book {
                self.timers
                    .set(SessionTimer::Dial, now + self.timer_periods.dial_interval);
            }
            self.timers.set(
                SessionTimer::SavePeers,
                now + self.timer_periods.peers_save_interval,
            );
            self.known_load = KnownLoad::Loading;
            let name = known_peers::STATE_NAME.into();
            self.requests
                .push_back((LOAD_KNOWN, HostRequest::LoadState { name }));
        }
        self.now = self.now.max(now);
    }

    pub(crate) fn set_wall_clock(&mut self, unix_ms: u64, now: Instant) {
        self.wall_clock = Some((unix_ms, now));
    }

    /// Runs the timers due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.shut_down {
            return;
        }
        while let Some(timer) = self.timers.take_expired(now) {
            match timer {
                SessionTimer::Tick => {
                    self.on_tick(now);
                    self.timers
                        .set(SessionTimer::Tick, now + self.timer_periods.tick);
                }
                SessionTimer::Dial => {
                    self.on_dial_timer(now);
                    self.timers
                        .set(SessionTimer::Dial, now + self.timer_periods.dial_interval);
                }
                SessionTimer::Redial => self.on_redial_timer(now),
                SessionTimer::SavePeers => {
                    self.store_known();
                    let at = now + self.timer_periods.peers_save_interval;
                    self.timers.set(SessionTimer::SavePeers, at);
                }
            }
        }
    }

    /// Liveness: handshake timeouts, peer timeouts, PINGs.
    fn on_tick(&mut self, now: Instant) {
        let timers = self.timer_periods.clone();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get(&id) else {
                continue;
            };
            match &c.state {
                ConnState::Dialing | ConnState::Accepted | ConnState::Handshaking(_) => {
                    if now.saturating_since(c.opened_at) >= timers.handshake_timeout {
                        self.close(id, CloseReason::HandshakeTimeout, None);
                    }
                }
                ConnState::Established(_) => {
                    if now.saturating_since(c.last_received_at) >= timers.peer_timeout {
                        self.close(id, CloseReason::Timeout, Some(ByeReason::Timeout));
                    } else if now.saturating_since(c.last_sent_at) >= timers.ping_interval {
                        let nonce = self.rng.next_u64();
                        let ping = Message::Ping(weft_protocol::Ping { nonce });
                        self.send_session(id, &ping);
                    }
                }
                ConnState::Closing => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
