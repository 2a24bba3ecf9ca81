//! The session layer, kept apart from the protocols as quinn-proto keeps its Endpoint apart
//! from its Connections: connections and their handshake, liveness, send queues and flushing,
//! the one link per peer, dedicated connections, the address book and its dials, and the
//! incarnations seen. Protocols never see a connection: they send to a [`NodeId`] through
//! [`Session::send`], and hear of links through [`Notice`]s.
//!
//! Below it sits the [`wire::Wire`] seam (framing and transport); above it, the host
//! (`crate::node`) hands it the protocols' sends and hands them its notices and frames.

mod address;
mod address_book;
mod conn;
mod dedicated;
mod dial_guard;
mod handshake;
mod incarnations;
mod known_peers;
mod links;
mod redial;
mod send_queue;
mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_protocol::{
    ByeReason, Code, Family, Frame, Hello, Message, NetworkId, NodeId, PeerInfo, Pong,
    CAP_BROADCASTS_UNSIGNED, CAP_LZ4,
};

use crate::config::{Config, Limits, Timers};
use crate::identity::{Identity, Role};
use crate::io::{
    CloseReason, ConnId, Direction, Event, HostRequest, HostResult, Misuse, Output, SessionRefusal,
};
use crate::link_key::LinkEncryption;
use crate::machine::{Class, Outgoing, Recipients};
use crate::metrics::{ConnStats, SessionMetrics};
use crate::noise::{NoiseError, NoiseKeys, NoiseRole};
use crate::time::Instant;
use crate::timer::{TimerName, TimerTable};

pub(crate) use address::is_unspecified;
use address_book::AddressBook;
pub(crate) use conn::Peer;
use conn::{Conn, ConnState};
use dedicated::Dedicated;
use dial_guard::DialGuard;
use handshake::{offers_lz4, Handshake, Proven};
use incarnations::{IncarnationCheck, Incarnations};
use known_peers::KnownPeers;
use links::Links;
use redial::{Backoff, Redials};
use send_queue::Enqueued;
#[cfg(test)]
use send_queue::BULK_FRAME_BYTES_MAX;
use wire::{AnyWire, NoiseWire};

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
            incarnations: Incarnations::new(config.limits.seen_origins_max),
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

    // ----- reading ------------------------------------------------------------------------

    /// This node's key pair.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.identity.node_id()
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
        if self.dedicated.by_peer.len() > limits.dedicated_conns_max {
            return Err(format!(
                "{} dedicated connections",
                self.dedicated.by_peer.len()
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

    // ----- what the host drains -----------------------------------------------------------

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

    // ----- time ---------------------------------------------------------------------------

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

    // ----- redials and known peers (SPEC.md §8.10, §8.11) ---------------------------------

    /// Dials every redialed address that is due and not linked, while outbound slots last.
    fn on_redial_timer(&mut self, now: Instant) {
        for addr in self.redials.due(now) {
            if let Some(node) = self.redials.node_of(&addr) {
                if self.links.contains_key(&node) {
                    self.redials.linked(None, node);
                    continue;
                }
            }
            if self.count(Direction::Outbound) >= self.limits.outbound_max {
                let at = now + self.redials.first_wait();
                self.redials.postpone(&addr, Some(at));
                continue;
            }
            let conn = self.dial(now, addr.clone());
            self.redials.dialing(&addr, conn);
            self.metrics.redials += 1;
        }
        self.arm_redial();
    }

    /// Arms the redial timer for the next due address, if any.
    fn arm_redial(&mut self) {
        match self.redials.next_dial_at() {
            Some(at) if !self.shut_down => self.timers.set(SessionTimer::Redial, at),
            _ => self.timers.cancel(SessionTimer::Redial),
        }
    }

    /// Hands the known peers to the host if they changed, once their load is answered and no
    /// store is under way.
    fn store_known(&mut self) {
        if self.known_load != KnownLoad::Done || self.known_storing {
            return;
        }
        if let Some(bytes) = self.known.take_changed() {
            self.known_storing = true;
            let name = known_peers::STATE_NAME.into();
            self.requests
                .push_back((STORE_KNOWN, HostRequest::StoreState { name, bytes }));
        }
    }

    /// The host answered the session's request `token`.
    pub(crate) fn completed(&mut self, now: Instant, token: u64, result: HostResult) {
        match (token, result) {
            (LOAD_KNOWN, result) => {
                self.known_load = KnownLoad::Done;
                match result {
                    HostResult::Loaded(Some(blob)) => match known_peers::decode(&blob) {
                        Some(entries) => self.load_known(now, entries),
                        None => self.metrics.known_peers_refused += 1,
                    },
                    HostResult::Loaded(None) => {}
                    _ => {
                        self.known_load = KnownLoad::Failed;
                        self.metrics.known_peers_state_failures += 1;
                    }
                }
            }
            (_, HostResult::Stored) => {
                self.known_storing = false;
                self.metrics.known_peers_stores += 1;
            }
            _ => {
                self.known_storing = false;
                self.known.store_failed();
                self.metrics.known_peers_state_failures += 1;
            }
        }
    }

    /// Saved peers, loaded: each not linked and not this node is dialed, a bounded number of
    /// times, starting now.
    fn load_known(&mut self, now: Instant, entries: Vec<(NodeId, String)>) {
        let me = self.identity.node_id();
        let attempts = self.limits.redial_attempts_max;
        for (node, addr) in &entries {
            if *node != me && !self.links.contains_key(node) && !address::is_unspecified(addr) {
                self.redials.add_bounded(addr, *node, now, attempts);
            }
        }
        self.known
            .loaded(entries.into_iter().filter(|(n, _)| *n != me).collect());
        self.arm_redial();
    }

    /// A dial (`conn`, outbound, not yet established) ended for `reason` before its
    /// handshake finished: counted, and, if it was a redial, backed off and reported.
    fn dial_ended(&mut self, now: Instant, conn: ConnId, reason: &CloseReason) {
        if matches!(reason, CloseReason::Shutdown | CloseReason::Requested) {
            return;
        }
        if *reason == CloseReason::SelfConnection {
            // A configured address of this very node: never dialed again.
            self.redials.drop_conn(conn);
            return;
        }
        self.metrics.dials_failed += 1;
        if !reason.is_fault() {
            self.metrics.connections_failed += 1;
        }
        if let Some(failed) = self.redials.failed(conn, now) {
            self.outputs.push_back(Output::Event(Event::DialFailed {
                addr: failed.addr,
                attempts: failed.failures,
                retry_in_ms: failed.retry_in.map(|d| d.as_millis()),
                reason: reason.clone(),
            }));
            self.arm_redial();
        }
    }

    /// The link to `node` (listening at `listen_addr`) went away for `reason`: a configured
    /// address of it is redialed soon; a link lost without a BYE is redialed a bounded number
    /// of times.
    fn redial_after_link_down(
        &mut self,
        now: Instant,
        node: NodeId,
        listen_addr: Option<String>,
        reason: &CloseReason,
    ) {
        if self.shut_down || self.redials.link_down(&node, now) {
            return self.arm_redial();
        }
        let lost = matches!(reason, CloseReason::Lost | CloseReason::Timeout);
        if let (true, Some(addr)) = (lost, listen_addr) {
            let at = now + self.redials.first_wait();
            let attempts = self.limits.redial_attempts_max;
            self.redials.add_bounded(&addr, node, at, attempts);
            self.arm_redial();
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

    /// Dials one due address-book entry if outbound links are below target (SPEC.md §10.7).
    fn on_dial_timer(&mut self, now: Instant) {
        let limits = &self.limits;
        if self.count(Direction::Outbound) >= limits.outbound_target.min(limits.outbound_max) {
            return;
        }
        let links = &self.links;
        let dialing: Vec<NodeId> = self.dial_targets.values().copied().collect();
        let me = self.identity.node_id();
        let backoff = self.timer_periods.dial_backoff;
        let (guard, attempts_max) = (&self.dial_guard, limits.dial_address_attempts_max);
        let disconnected = &self.disconnected;
        let mut refused = false;
        let picked = self.book.pick_dial(now, &mut self.rng, backoff, |n, addr| {
            let wanted = *n != me
                && !links.contains_key(n)
                && !dialing.contains(n)
                && !disconnected.contains(n);
            let allowed = guard.allows(addr, now, attempts_max);
            refused |= wanted && !allowed;
            wanted && allowed
        });
        if refused {
            self.metrics.discovery_dials_refused += 1;
        }
        let Some((node, addr)) = picked else {
            return;
        };
        if !self
            .dial_guard
            .budget_allows(now, self.limits.discovery_dials_per_minute)
        {
            self.metrics.discovery_dials_refused += 1;
            return;
        }
        self.dial_guard.dialed(&addr, now, backoff);
        let conn = self.dial(now, addr);
        self.dial_targets.insert(conn, node);
        self.metrics.discovery_dials += 1;
    }

    // ----- connections --------------------------------------------------------------------

    /// Connections of `direction` that count against the caps: not closing, not dedicated,
    /// except that an inbound dedicated connection counts until its peer is proven.
    fn count(&self, direction: Direction) -> usize {
        self.conns
            .values()
            .filter(|c| c.direction == direction && !c.is_closing())
            .filter(|c| {
                c.dedicated.is_none() || (direction == Direction::Inbound && c.is_unauthenticated())
            })
            .count()
    }

    /// Inbound connections, not closing, from the host of `addr`.
    fn count_from(&self, addr: &str) -> usize {
        let host = address::host_of(addr);
        self.conns
            .values()
            .filter(|c| c.direction == Direction::Inbound && !c.is_closing())
            .filter(|c| address::host_of(&c.addr) == host)
            .count()
    }

    /// `Command::Connect`: `addr` is configured (redialed for as long as the node runs,
    /// SPEC.md §8.10) and dialed now, unless a dial of it is under way or its node is linked.
    pub(crate) fn connect(&mut self, now: Instant, addr: String) -> Result<(), SessionRefusal> {
        if self.shut_down {
            return Err(SessionRefusal::ShutDown);
        }
        if self.count(Direction::Outbound) >= self.limits.outbound_max {
            return Err(SessionRefusal::TooManyConnections);
        }
        self.redials
            .configure(&addr)
            .map_err(|_| SessionRefusal::TooManyConfiguredPeers)?;
        let linked = self
            .redials
            .node_of(&addr)
            .is_some_and(|n| self.links.contains_key(&n));
        if !linked && !self.redials.is_dialing(&addr) {
            let conn = self.dial(now, addr.clone());
            self.redials.dialing(&addr, conn);
        }
        self.arm_redial();
        Ok(())
    }

    /// A protocol's dial of `node` at `addr`, an address someone else named (a drop's holder
    /// found through the tracker, SPEC.md §24.6): dialed once, never configured for redials,
    /// and only if `node` is not this node, not linked, not being dialed, not kept away
    /// (`Command::Disconnect`), below `outbound_max`, and the address passes the per-address
    /// guard and the global budget of discovery's dials (§10.7), which it counts against.
    pub(crate) fn dial_named(&mut self, now: Instant, node: NodeId, addr: String) {
        let wanted = node != self.identity.node_id()
            && !self.links.contains_key(&node)
            && !self.dial_targets.values().any(|n| *n == node)
            && !self.disconnected.contains(&node)
            && !address::is_unspecified(&addr);
        if self.shut_down || !wanted {
            return;
        }
        let allowed = self.count(Direction::Outbound) < self.limits.outbound_max
            && self
                .dial_guard
                .allows(&addr, now, self.limits.dial_address_attempts_max)
            && self
                .dial_guard
                .budget_allows(now, self.limits.discovery_dials_per_minute);
        if !allowed {
            self.metrics.named_dials_refused += 1;
            return;
        }
        self.dial_guard
            .dialed(&addr, now, self.timer_periods.dial_backoff);
        let conn = self.dial(now, addr);
        self.dial_targets.insert(conn, node);
        self.metrics.named_dials += 1;
    }

    /// `Command::Disconnect`: closes the link to `node`, and forgets its redialed addresses
    /// and its place among the known peers, so it is not dialed again.
    pub(crate) fn disconnect(&mut self, node: NodeId) -> Result<(), SessionRefusal> {
        if self.shut_down {
            return Err(SessionRefusal::ShutDown);
        }
        let forgotten = self.redials.remove_node(&node);
        self.known.forget(&node);
        if !self.disconnected.contains(&node) {
            self.disconnected.push_back(node);
            if self.disconnected.len() > self.limits.disconnected_nodes_max {
                self.disconnected.pop_front();
            }
        }
        self.arm_redial();
        let Some(&conn) = self.links.get(&node) else {
            return match forgotten {
                true => Ok(()),
                false => Err(SessionRefusal::NotLinked(node)),
            };
        };
        self.close(conn, CloseReason::Requested, Some(ByeReason::Requested));
        Ok(())
    }

    /// `Command::Shutdown`: BYE to every peer, every connection closed, timers stopped; a
    /// changed list of known peers goes to the host.
    pub(crate) fn shutdown(&mut self) {
        self.known_storing = false;
        self.store_known();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, CloseReason::Shutdown, Some(ByeReason::Shutdown));
        }
        self.shut_down = true;
        self.timers.clear();
    }

    fn dial(&mut self, now: Instant, addr: String) -> ConnId {
        self.last_outbound += 1;
        let conn = ConnId(self.last_outbound << 1);
        self.conns.insert(
            conn,
            Conn::new(conn, addr.clone(), Direction::Outbound, now),
        );
        self.outputs.push_back(Output::Connect { conn, addr });
        conn
    }

    pub(crate) fn accepted(
        &mut self,
        now: Instant,
        conn: ConnId,
        addr: String,
    ) -> Result<(), Misuse> {
        if !conn.is_inbound() || self.conns.contains_key(&conn) {
            return Err(Misuse::BadInboundId(conn));
        }
        let full = self.count(Direction::Inbound) >= self.limits.inbound_max;
        let share_full = self.count_from(&addr) >= self.limits.inbound_per_address_max;
        self.conns
            .insert(conn, Conn::new(conn, addr, Direction::Inbound, now));
        // A refusal's BYE goes only on plaintext links: over Noise no channel exists yet to
        // carry it, and the connection closes without a byte (SPEC.md §8.4, §21.6).
        let plaintext = self.noise.is_none();
        let bye = |reason| plaintext.then_some(reason);
        if self.shut_down {
            self.close(conn, CloseReason::Shutdown, bye(ByeReason::Shutdown));
        } else if full || share_full {
            if share_full && !full {
                self.metrics.inbound_refused_per_address += 1;
            }
            self.close(
                conn,
                CloseReason::TooManyConnections,
                bye(ByeReason::TooManyConnections),
            );
        } else {
            self.start_handshake(conn);
        }
        Ok(())
    }

    pub(crate) fn connected(&mut self, conn: ConnId) -> Result<(), Misuse> {
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Dialing) => {
                self.start_handshake(conn);
                Ok(())
            }
            // The dial timed out (a timer run at the top of this very call may have closed
            // it): the driver's Close is on its way.
            Some(ConnState::Closing) => Ok(()),
            _ => Err(Misuse::NotDialing(conn)),
        }
    }

    pub(crate) fn connect_failed(&mut self, now: Instant, conn: ConnId) -> Result<(), Misuse> {
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Dialing) => {
                self.conns.remove(&conn);
                self.dial_failed(now, conn);
                self.dedicated.closed(conn);
                self.dial_ended(now, conn, &CloseReason::ConnectFailed);
                Ok(())
            }
            // A Close we asked for may cross the driver's failure report.
            Some(ConnState::Closing) => {
                self.conns.remove(&conn);
                self.dial_targets.remove(&conn);
                self.dedicated.closed(conn);
                Ok(())
            }
            _ => Err(Misuse::NotDialing(conn)),
        }
    }

    fn dial_failed(&mut self, now: Instant, conn: ConnId) {
        if let Some(node) = self.dial_targets.remove(&conn) {
            self.book.dial_failed(
                now,
                &node,
                self.timer_periods.dial_backoff,
                self.limits.dial_attempts_max,
            );
        }
    }

    pub(crate) fn writable(&mut self, conn: ConnId) -> Result<(), Misuse> {
        // Frames handed out for `conn` that the driver has not taken yet (the timers run at
        // the top of this very call made them) are not written: they stay in flight, or the
        // count would fall short of what the driver holds (SPEC.md §8.1, §12).
        let unpolled: usize = self
            .outputs
            .iter()
            .map(|o| match o {
                Output::Transmit { conn: c, bytes } if *c == conn => bytes.len(),
                _ => 0,
            })
            .sum();
        let c = self.conns.get_mut(&conn).ok_or(Misuse::UnknownConn(conn))?;
        c.queue_mut().written(unpolled);
        self.flush(conn);
        Ok(())
    }

    pub(crate) fn closed(&mut self, now: Instant, conn: ConnId) -> Result<(), Misuse> {
        if !self.conns.contains_key(&conn) {
            return Err(Misuse::UnknownConn(conn));
        }
        self.close(conn, CloseReason::Lost, None);
        self.conns.remove(&conn);
        self.dedicated.closed(conn);
        self.dial_failed(now, conn);
        Ok(())
    }

    fn start_handshake(&mut self, conn: ConnId) {
        let mut nonce = [0u8; 32];
        self.rng.fill_bytes(&mut nonce);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let role = match c.direction {
            Direction::Outbound => Role::Dialer,
            Direction::Inbound => Role::Acceptor,
        };
        let mut capabilities = if self.compression { CAP_LZ4 } else { 0 };
        if !self.broadcasts_signed {
            capabilities |= CAP_BROADCASTS_UNSIGNED;
        }
        let hello = Hello {
            network: self.network,
            public_key: self.identity.public_key(),
            nonce,
            incarnation: self.incarnation,
            listen_addr: self.listen_addr.clone(),
            capabilities,
            families: self.families,
            dedicated: c.dedicated.map(Family::high_byte),
        };
        if let Some(keys) = &self.noise {
            let noise_role = match role {
                Role::Dialer => NoiseRole::Initiator,
                Role::Acceptor => NoiseRole::Responder,
            };
            let mut seed = [0u8; 32];
            self.noise_rng.fill_bytes(&mut seed);
            c.set_wire(AnyWire::Noise(Box::new(NoiseWire::new(
                keys, noise_role, seed,
            ))));
        }
        c.state = ConnState::Handshaking(Box::new(Handshake::new(nonce, role)));
        self.send_session(conn, &Message::Hello(hello));
    }

    /// Closes `conn`: sends BYE first if given, asks the driver to close, and tells the
    /// application and the protocols what was lost. The connection stays known (as closing)
    /// until `Closed`.
    pub(crate) fn close(&mut self, conn: ConnId, reason: CloseReason, bye: Option<ByeReason>) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.is_closing() {
            return;
        }
        let was_dialing = matches!(c.state, ConnState::Dialing);
        let dial_unfinished = c.direction == Direction::Outbound && c.is_unauthenticated();
        let peer = c.peer().map(|p| (p.node, p.listen_addr.clone()));
        if c.flush_due {
            // What the window takes of the frames queued during this input still goes out,
            // as it would have had each been handed out when queued.
            let window = self.limits.transmit_window_bytes;
            let (metrics, outputs, notices) =
                (&mut self.metrics, &mut self.outputs, &mut self.notices);
            flush_conn(c, now, window, metrics, outputs, notices);
        }
        c.queue_mut().clear();
        if let (Some(bye), false) = (bye, was_dialing) {
            // BYE goes out ahead of the close whatever the window: the driver writes what it
            // was handed before closing.
            let frame = Message::Bye(bye).to_frame(false).into_bytes();
            c.queue_mut()
                .enqueue(&frame, Class::Control, usize::MAX, usize::MAX);
            if let Some(sent) = c.next_transmit(now, usize::MAX, &mut self.metrics.traffic) {
                self.metrics.frames_sent += u64::from(sent.frames);
                self.metrics.bytes_sent += sent.bytes.len() as u64;
                self.outputs.push_back(Output::Transmit {
                    conn,
                    bytes: sent.bytes,
                });
            }
        }
        c.state = ConnState::Closing;
        if reason != CloseReason::Lost {
            self.outputs.push_back(Output::Close {
                conn,
                reason: reason.clone(),
            });
        }
        if reason.is_fault() {
            self.metrics.connections_failed += 1;
            self.outputs
                .push_back(Output::Event(Event::ConnectionClosed {
                    conn,
                    reason: reason.clone(),
                }));
        }
        if dial_unfinished {
            self.dial_ended(now, conn, &reason);
        }
        let Some((node, listen_addr)) = peer else {
            return;
        };
        if self.links.get(&node) != Some(&conn) {
            return;
        }
        self.links.remove(&node);
        self.outputs.push_back(Output::Event(Event::PeerDown {
            node,
            reason: reason.clone(),
        }));
        self.redial_after_link_down(now, node, listen_addr, &reason);
        self.notices.push_back(Notice::LinkDown { node, reason });
    }

    // ----- receiving ----------------------------------------------------------------------

    /// Takes bytes that arrived on `conn`: the first frame among them for a protocol, if any;
    /// [`next_frame`](Self::next_frame) gives the rest.
    pub(crate) fn received(
        &mut self,
        now: Instant,
        conn: ConnId,
        bytes: Bytes,
    ) -> Result<Option<Incoming>, Misuse> {
        let incoming = self.received_frames(now, conn, bytes)?;
        if incoming.is_none() {
            self.check_handshake_buffer(conn);
        }
        Ok(incoming)
    }

    /// Bounds the bytes held for connections still in their handshake (SPEC.md §8.4): if the
    /// total is over `Limits::handshake_buffered_bytes_max`, `conn` (whose bytes just came)
    /// is closed.
    fn check_handshake_buffer(&mut self, conn: ConnId) {
        if !self.conns.get(&conn).is_some_and(Conn::is_unauthenticated) {
            return;
        }
        let held: usize = self
            .conns
            .values()
            .filter(|c| c.is_unauthenticated())
            .map(Conn::buffered_len)
            .sum();
        if held > self.limits.handshake_buffered_bytes_max {
            self.metrics.handshake_buffer_closes += 1;
            let bye = Some(ByeReason::TooManyConnections);
            return self.close(conn, CloseReason::HandshakeBufferFull, bye);
        }
        let peak = &mut self.metrics.handshake_buffered_bytes_peak;
        *peak = (*peak).max(held as u64);
    }

    /// [`received`](Self::received) before the handshake buffer's bound is checked.
    fn received_frames(
        &mut self,
        now: Instant,
        conn: ConnId,
        bytes: Bytes,
    ) -> Result<Option<Incoming>, Misuse> {
        let c = self.conns.get_mut(&conn).ok_or(Misuse::UnknownConn(conn))?;
        match c.state {
            ConnState::Closing => return Ok(None),
            ConnState::Dialing => return Err(Misuse::NotDialing(conn)),
            _ => {}
        }
        self.metrics.bytes_received += bytes.len() as u64;
        c.push_bytes(bytes);
        if c.is_unauthenticated() {
            // The transport's handshake may have answered, or finished and freed the HELLO.
            let window = self.limits.transmit_window_bytes;
            let (metrics, outputs, notices) =
                (&mut self.metrics, &mut self.outputs, &mut self.notices);
            flush_conn(c, self.now, window, metrics, outputs, notices);
        }
        // The usual case, one whole frame for a protocol, takes one lookup of the connection.
        let frame = match c.next_frame(now, &mut self.metrics.traffic) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(e) => {
                let bye = Some(ByeReason::ProtocolViolation);
                self.close(conn, e.into(), bye);
                return Ok(None);
            }
        };
        self.metrics.frames_received += 1;
        match admit(c, self.families, frame) {
            Admit::Protocol(incoming) => Ok(Some(incoming)),
            Admit::Session(frame, established) => {
                self.on_session_frame(now, conn, established, &frame);
                Ok(self.next_frame(now, conn))
            }
            Admit::Refused(what) => {
                let bye = Some(ByeReason::ProtocolViolation);
                self.close(conn, CloseReason::UnexpectedMessage(what), bye);
                Ok(None)
            }
        }
    }

    /// The next frame received on `conn` for a protocol, from an established peer. Session
    /// frames (the handshake, PING, PONG, BYE) are handled here on the way; a frame not
    /// allowed on the connection closes it.
    pub(crate) fn next_frame(&mut self, now: Instant, conn: ConnId) -> Option<Incoming> {
        loop {
            let c = self.conns.get_mut(&conn)?;
            if c.is_closing() {
                return None;
            }
            let frame = match c.next_frame(now, &mut self.metrics.traffic) {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(e) => {
                    let bye = Some(ByeReason::ProtocolViolation);
                    self.close(conn, e.into(), bye);
                    return None;
                }
            };
            self.metrics.frames_received += 1;
            match admit(c, self.families, frame) {
                Admit::Protocol(incoming) => return Some(incoming),
                Admit::Session(frame, established) => {
                    self.on_session_frame(now, conn, established, &frame);
                }
                Admit::Refused(what) => {
                    let bye = Some(ByeReason::ProtocolViolation);
                    self.close(conn, CloseReason::UnexpectedMessage(what), bye);
                    return None;
                }
            }
        }
    }

    fn on_session_frame(&mut self, now: Instant, conn: ConnId, established: bool, frame: &Frame) {
        let payload = match frame.payload() {
            Ok(p) => p,
            Err(e) => {
                let bye = Some(ByeReason::ProtocolViolation);
                return self.close(conn, CloseReason::Protocol(e), bye);
            }
        };
        let msg = match Message::decode(frame.code(), &payload) {
            Ok(m) => m,
            Err(e) => {
                let bye = Some(ByeReason::ProtocolViolation);
                return self.close(conn, CloseReason::Protocol(e), bye);
            }
        };
        match (msg, established) {
            (Message::Bye(reason), established) => {
                if reason == ByeReason::StaleIncarnation && !established {
                    let addr = self.conns.get(&conn).map(|c| c.addr.clone());
                    if let Some(addr) = addr {
                        self.outputs
                            .push_back(Output::Event(Event::RefusedAsStale { addr }));
                    }
                }
                self.close(conn, CloseReason::PeerSaidBye(reason), None)
            }
            (Message::Hello(hello), false) => self.on_hello(conn, hello),
            (Message::HelloAck(ack), false) => self.on_hello_ack(now, conn, &ack),
            (Message::Ping(p), true) => {
                self.send_session(conn, &Message::Pong(Pong { nonce: p.nonce }))
            }
            (Message::Pong(_), true) => {}
            (_, established) => {
                let what = if established {
                    "handshake message after the handshake"
                } else {
                    "message before the handshake finished"
                };
                let bye = Some(ByeReason::ProtocolViolation);
                self.close(conn, CloseReason::UnexpectedMessage(what), bye);
            }
        }
    }

    // ----- handshake ----------------------------------------------------------------------

    fn on_hello(&mut self, conn: ConnId, hello: Hello) {
        let node = NodeId::from_public_key(&hello.public_key);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.transport_identity()
            .is_some_and(|key| key != hello.public_key)
        {
            // The HELLO claims an identity the Noise handshake did not bind (SPEC.md §21.3).
            c.fail_wire(NoiseError::IdentityMismatch);
            return self.close(conn, CloseReason::Noise(NoiseError::IdentityMismatch), None);
        }
        let inbound = c.direction == Direction::Inbound;
        if inbound && self.disconnected.contains(&node) {
            // Kept away by `Command::Disconnect` until this node dials it on purpose.
            let bye = Some(ByeReason::Requested);
            return self.close(conn, CloseReason::Requested, bye);
        }
        if hello.network == self.network && self.incarnations.is_stale(node, hello.incarnation) {
            let bye = Some(ByeReason::StaleIncarnation);
            return self.close(conn, CloseReason::StaleIncarnation, bye);
        }
        let dedicated = hello
            .dedicated
            .map(|d| Family::from_high_byte(d).filter(|f| *f != Family::Session && self.runs(*f)));
        if let Some(None) = dedicated {
            let what = "a dedicated connection for a family this node does not run";
            let bye = Some(ByeReason::ProtocolViolation);
            return self.close(conn, CloseReason::UnexpectedMessage(what), bye);
        }
        let (identity, network, incarnation) = (&self.identity, self.network, self.incarnation);
        let broadcasts_signed = self.broadcasts_signed;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some(Some(f)) = dedicated {
            c.dedicated.get_or_insert(f);
        }
        let ConnState::Handshaking(handshake) = &mut c.state else {
            return;
        };
        match handshake.on_hello(hello, identity, network, incarnation, broadcasts_signed) {
            Ok(ack) => self.send_session(conn, &Message::HelloAck(ack)),
            Err(reason) => {
                let bye = bye_for(&reason);
                self.close(conn, reason, bye);
            }
        }
    }

    fn on_hello_ack(&mut self, now: Instant, conn: ConnId, ack: &weft_protocol::HelloAck) {
        let (identity, network) = (&self.identity, self.network);
        let Some(ConnState::Handshaking(handshake)) =
            self.conns.get_mut(&conn).map(|c| &mut c.state)
        else {
            return;
        };
        let our_nonce = handshake.our_nonce;
        match handshake.on_hello_ack(ack, identity, network) {
            Ok(proven) => self.establish(now, conn, proven, our_nonce),
            Err(reason) => {
                let bye = bye_for(&reason);
                self.close(conn, reason, bye);
            }
        }
    }

    fn runs(&self, family: Family) -> bool {
        self.families & family.bit() != 0
    }

    fn establish(&mut self, now: Instant, conn: ConnId, proven: Proven, our_nonce: [u8; 32]) {
        let compression = self.compression;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Proven { node, hello } = proven;
        let dialer_nonce = match c.direction {
            Direction::Outbound => our_nonce,
            Direction::Inbound => hello.nonce,
        };
        let listen_addr = hello
            .listen_addr
            .as_deref()
            .and_then(|a| address::dialable(a, &c.addr));
        let peer = Peer {
            node,
            incarnation: hello.incarnation,
            listen_addr: listen_addr.clone(),
            families: hello.families | Family::Session.bit(),
            dialer_nonce,
            public_key: hello.public_key,
        };
        c.state = ConnState::Established(Arc::new(peer));
        c.send_compressed = compression && offers_lz4(&hello);
        let dedicated = c.dedicated;
        if self.dial_targets.remove(&conn) == Some(node) {
            self.dial_guard.answered(&c.addr);
        }
        self.metrics.handshakes_completed += 1;
        if c.direction == Direction::Outbound {
            // Only a deliberate dial (`Command::Connect`) reaches a disconnected node.
            self.disconnected.retain(|n| *n != node);
        }
        if let Some(family) = dedicated {
            return self.dedicated_established(conn, node, family);
        }
        if let Some((addr, failures)) = self.redials.linked(Some(conn), node) {
            if failures > 0 {
                self.outputs.push_back(Output::Event(Event::Redialed {
                    addr,
                    node,
                    failures,
                }));
            }
        }
        self.arm_redial();
        if let Some(addr) = &listen_addr {
            self.known.linked(node, addr);
        }
        let restarted =
            self.incarnations.check(node, hello.incarnation) == IncarnationCheck::Restarted;
        if let Some(&old) = self.links.get(&node) {
            if self.keeps(old, conn) {
                return self.close(
                    conn,
                    CloseReason::DuplicateLink,
                    Some(ByeReason::DuplicateLink),
                );
            }
            self.links.insert(node, conn);
            self.close(
                old,
                CloseReason::DuplicateLink,
                Some(ByeReason::DuplicateLink),
            );
            if !restarted {
                // The same run of the peer on a new link: no new PeerUp, but the link it
                // replaces may have died with messages in flight, so catch up over the new one.
                self.notices.push_back(Notice::LinkUp {
                    node,
                    replaced: true,
                });
                return;
            }
        }
        self.links.insert(node, conn);
        self.outputs.push_back(Output::Event(Event::PeerUp {
            node,
            conn,
            incarnation: hello.incarnation,
            restarted,
        }));
        if let Some(addr) = &listen_addr {
            self.book.learn(now, node, addr);
        }
        self.book.linked(&node);
        self.notices.push_back(Notice::LinkUp {
            node,
            replaced: false,
        });
    }

    /// The tie-break between two links to one peer (or two dedicated connections of one
    /// family to it, §8.9): true if `old` stays. Both ends reach the same verdict (SPEC.md
    /// §8.6): the higher incarnation wins; then the link dialed by the higher node id; then,
    /// for two links dialed by the same side, the higher dialer nonce.
    fn keeps(&self, old: ConnId, new: ConnId) -> bool {
        let key = |conn: ConnId| {
            let c = self.conns.get(&conn)?;
            let p = c.peer()?;
            let dialer = match c.direction {
                Direction::Outbound => self.identity.node_id(),
                Direction::Inbound => p.node,
            };
            Some((p.incarnation, dialer, p.dialer_nonce))
        };
        key(old) >= key(new)
    }

    /// A dedicated connection's handshake finished: record it and send what waited for it.
    /// Two of one family to one peer (the two ends dialed each other at once) go through the
    /// links' tie-break, so both ends keep the same one (SPEC.md §8.9); replacing the old one
    /// at each end instead closed both, again at every retry of two peers in step.
    fn dedicated_established(&mut self, conn: ConnId, node: NodeId, family: Family) {
        if let Some(wanted) = self.dedicated.dialing.remove(&conn) {
            if wanted != (node, family) {
                self.dedicated.pending.remove(&wanted);
                return self.close(conn, CloseReason::Requested, None);
            }
        } else if self.dedicated.len() >= self.limits.dedicated_conns_max {
            self.evict_dedicated(Some(conn));
        }
        let kept = match self.dedicated.by_peer.get(&(node, family)).copied() {
            Some(old) if old != conn && self.keeps(old, conn) => {
                self.close(conn, CloseReason::DuplicateLink, None);
                old
            }
            old => {
                self.dedicated.by_peer.insert((node, family), conn);
                if let Some(old) = old.filter(|old| *old != conn) {
                    self.close(old, CloseReason::DuplicateLink, None);
                }
                conn
            }
        };
        let waiting = self
            .dedicated
            .pending
            .remove(&(node, family))
            .unwrap_or_default();
        for (message, class) in waiting {
            self.send_on(kept, &message, class);
        }
    }

    /// At `dedicated_conns_max`, closes the dedicated connection idle the longest (not `keep`).
    fn evict_dedicated(&mut self, keep: Option<ConnId>) {
        if self.dedicated.len() < self.limits.dedicated_conns_max {
            return;
        }
        let idlest = self
            .dedicated
            .by_peer
            .values()
            .filter(|c| Some(**c) != keep)
            .filter_map(|c| {
                self.conns
                    .get(c)
                    .map(|x| (x.last_sent_at.max(x.last_received_at), *c))
            })
            .min();
        if let Some((_, conn)) = idlest {
            self.dedicated.by_peer.retain(|_, c| *c != conn);
            self.close(conn, CloseReason::Requested, None);
        }
    }

    // ----- sending ------------------------------------------------------------------------

    /// Learns an address for `node` (from a protocol, a cascade or a HELLO).
    pub(crate) fn learn(&mut self, now: Instant, node: NodeId, addr: &str) {
        if node != self.identity.node_id() {
            self.book.learn(now, node, addr);
        }
    }

    /// Forgets `node`'s address, unless it is linked (a link outweighs hearsay).
    pub(crate) fn forget(&mut self, node: &NodeId) {
        if !self.links.contains_key(node) {
            self.book.forget(node);
        }
    }

    /// The connection that carries `family`'s messages to `node`: its link if the peer runs
    /// the family, else an open dedicated connection.
    fn route(&self, node: &NodeId, family: Family) -> Option<ConnId> {
        let linked = self.links.get(node).filter(|c| {
            self.conns
                .get(c)
                .and_then(Conn::peer)
                .is_some_and(|p| p.runs(family))
        });
        linked
            .or_else(|| self.dedicated.by_peer.get(&(*node, family)))
            .copied()
    }

    /// Sends a protocol's message to its recipients.
    pub(crate) fn send(
        &mut self,
        now: Instant,
        family: Family,
        to: Recipients,
        message: &Outgoing,
        class: Class,
    ) {
        match to {
            Recipients::Links { except } => self.send_to_links(family, except, message, class),
            Recipients::Peer(node) | Recipients::PeerOrDial(node) => {
                if let Some(conn) = self.route(&node, family) {
                    return self.send_on(conn, message, class);
                }
                let dial = matches!(to, Recipients::PeerOrDial(_));
                if !dial || self.shut_down {
                    self.metrics.unroutable += 1;
                    return;
                }
                self.dial_dedicated(now, node, family, message, class);
            }
        }
    }

    /// Every link whose peer runs `family`, but `except`: framing the message at most twice.
    fn send_to_links(
        &mut self,
        family: Family,
        except: Option<NodeId>,
        message: &Outgoing,
        class: Class,
    ) {
        let except = except.and_then(|node| self.links.get(&node).copied());
        let mut targets = core::mem::take(&mut self.scratch);
        targets.extend(self.links.values().filter(|c| Some(**c) != except));
        let mut frames = Frames::default();
        for &conn in &targets {
            let frames = &mut frames;
            self.send_built(conn, Some(family), class, move |compress| {
                let frames = frames;
                frames.get(message, compress)
            });
        }
        targets.clear();
        self.scratch = targets;
    }

    /// Opens a dedicated connection of `family` to `node` for `message`, or holds it for one
    /// already opening.
    fn dial_dedicated(
        &mut self,
        now: Instant,
        node: NodeId,
        family: Family,
        message: &Outgoing,
        class: Class,
    ) {
        if self.dedicated.hold((node, family), message, class) {
            return;
        }
        let addr = match self.book.addr(&node) {
            Some(addr) if node != self.identity.node_id() => addr.to_owned(),
            _ => {
                self.metrics.unroutable += 1;
                return;
            }
        };
        self.evict_dedicated(None);
        let conn = self.dial(now, addr);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.dedicated = Some(family);
        }
        self.metrics.dedicated_dials += 1;
        self.dedicated.dialing.insert(conn, (node, family));
        self.dedicated
            .pending
            .insert((node, family), vec![(message.clone(), class)]);
    }

    fn send_on(&mut self, conn: ConnId, message: &Outgoing, class: Class) {
        let mut frames = Frames::default();
        self.send_built(conn, None, class, |compress| {
            let frames = &mut frames;
            frames.get(message, compress)
        });
    }

    /// A session message to `conn`.
    fn send_session(&mut self, conn: ConnId, msg: &Message<'_>) {
        let compress = self.conns.get(&conn).is_some_and(|c| c.send_compressed);
        let frame = msg.to_frame(compress).into_bytes();
        self.send_built(conn, None, Class::Control, |_| &frame);
    }

    /// Queues the frame `build` makes (told whether the peer takes compressed frames) under
    /// the overflow rule and hands the driver what the window allows; with `family`, only if
    /// the peer runs it.
    fn send_built<'f>(
        &mut self,
        conn: ConnId,
        family: Option<Family>,
        class: Class,
        build: impl FnOnce(bool) -> &'f Bytes,
    ) {
        let limits = &self.limits;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.is_closing() {
            return;
        }
        if let Some(family) = family {
            if !c.peer().is_some_and(|p| p.runs(family)) {
                return;
            }
        }
        let frame = build(c.send_compressed);
        let (relay_max, hard_max) = (limits.relay_queue_bytes_max, limits.send_queue_bytes_max);
        match c.queue_mut().enqueue(frame, class, relay_max, hard_max) {
            // Handed out at the end of the input (`flush_queued`): every frame queued for the
            // connection meanwhile in one transmit, under Noise in one seal.
            Enqueued::Queued if !c.flush_due => {
                c.flush_due = true;
                self.unflushed.push(conn);
            }
            Enqueued::Queued => {}
            Enqueued::DroppedRelay => {
                c.count_relay_dropped();
                self.metrics.relays_dropped += 1;
            }
            Enqueued::NoRoom => self.metrics.bulk_refused += 1,
            Enqueued::Overflow => {
                self.close(conn, CloseReason::SlowPeer, Some(ByeReason::SlowPeer));
            }
        }
    }

    /// Hands the driver what the transmit window allows of the frames queued since the last
    /// call, each connection's together (one `Transmit`, under Noise one seal, per connection
    /// and window): the node calls it once its input has been handled, then carries the
    /// notices it raised (a bulk frame left). Whether it raised any.
    pub(crate) fn flush_queued(&mut self) -> bool {
        let mut conns = core::mem::take(&mut self.unflushed);
        let window = self.limits.transmit_window_bytes;
        for conn in conns.drain(..) {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            c.flush_due = false;
            if c.is_closing() {
                continue;
            }
            let (metrics, outputs, notices) =
                (&mut self.metrics, &mut self.outputs, &mut self.notices);
            flush_conn(c, self.now, window, metrics, outputs, notices);
        }
        self.unflushed = conns;
        !self.notices.is_empty()
    }

    /// Hands the driver what `conn`'s transmit window allows of its send queue.
    fn flush(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            let window = self.limits.transmit_window_bytes;
            flush_conn(
                c,
                self.now,
                window,
                &mut self.metrics,
                &mut self.outputs,
                &mut self.notices,
            );
        }
    }
}

/// Hands the driver what `c`'s transmit window allows of its send queue; a protocol whose
/// bulk frame leaves hears that the peer has room again.
fn flush_conn(
    c: &mut Conn,
    now: Instant,
    window: usize,
    metrics: &mut SessionMetrics,
    outputs: &mut VecDeque<Output>,
    notices: &mut VecDeque<Notice>,
) {
    while let Some(sent) = c.next_transmit(now, window, &mut metrics.traffic) {
        metrics.frames_sent += u64::from(sent.frames);
        if let (Some(code), Some(peer)) = (sent.bulk, c.peer()) {
            if let Some(family) = code.family() {
                notices.push_back(Notice::Room {
                    node: peer.node,
                    family,
                });
            }
        }
        metrics.bytes_sent += sent.bytes.len() as u64;
        outputs.push_back(Output::Transmit {
            conn: c.id,
            bytes: sent.bytes,
        });
    }
}

/// A frame received for a protocol, with its peer, and whether more bytes are buffered.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) frame: Frame,
    pub(crate) peer: Arc<Peer>,
    pub(crate) more: bool,
}

/// Where a received frame goes.
enum Admit {
    /// To a protocol.
    Protocol(Incoming),
    /// To the session itself (and whether the connection is established).
    Session(Frame, bool),
    /// Nowhere: it is not allowed on this connection.
    Refused(&'static str),
}

/// Sorts a frame received on `c` (SPEC.md §6.13, §8.9); `families` are the ones this node
/// runs.
fn admit(c: &Conn, families: u32, frame: Frame) -> Admit {
    let code = frame.code();
    let peer = c.peer_shared();
    if is_session_code(code) {
        return Admit::Session(frame, peer.is_some());
    }
    let Some(peer) = peer else {
        return Admit::Refused("message before the handshake finished");
    };
    let family = code.family();
    if c.dedicated.is_some() && family != c.dedicated {
        return Admit::Refused("a message of another family on a dedicated connection");
    }
    if family.is_none_or(|f| families & f.bit() == 0) {
        return Admit::Refused("a message of a family this node does not run");
    }
    Admit::Protocol(Incoming {
        frame,
        peer: Arc::clone(peer),
        more: c.has_buffered(),
    })
}

/// Whether the session itself handles `code` (the handshake, liveness and goodbye).
fn is_session_code(code: Code) -> bool {
    matches!(
        code,
        Code::HELLO | Code::HELLO_ACK | Code::PING | Code::PONG | Code::BYE
    )
}

/// The BYE that goes with a handshake failure.
fn bye_for(reason: &CloseReason) -> Option<ByeReason> {
    match reason {
        CloseReason::WrongNetwork | CloseReason::BroadcastModeMismatch => {
            Some(ByeReason::WrongNetwork)
        }
        CloseReason::BadProof => Some(ByeReason::BadProof),
        CloseReason::UnexpectedMessage(_) => Some(ByeReason::ProtocolViolation),
        _ => None,
    }
}

/// One message's frames, built lazily: plain and compressed, each at most once.
#[derive(Default)]
struct Frames {
    plain: Option<Bytes>,
    packed: Option<Bytes>,
}

impl Frames {
    /// The frame for a peer that does (`compress`) or does not take lz4.
    fn get(&mut self, message: &Outgoing, compress: bool) -> &Bytes {
        let slot = if compress {
            &mut self.packed
        } else {
            &mut self.plain
        };
        slot.get_or_insert_with(|| Frames::build(message, compress))
    }

    /// A received frame forwarded unchanged where the peer can take it; else framed anew.
    fn build(message: &Outgoing, compress: bool) -> Bytes {
        match &message.received {
            Some(f) if !f.flags().compressed() || compress => f.bytes().clone(),
            _ => Frame::build(message.code, &message.payload, compress).into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests;
