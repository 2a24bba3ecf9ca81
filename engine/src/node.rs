//! The node: routes inputs to connections, the handshake, discovery and the mesh, and queues
//! their outputs.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use weft_protocol::{
    Broadcast, ByeReason, Code, Frame, Hello, ICanSee, ICantSee, IKnowAbout, Message, NetworkId,
    NodeId, PeerInfo, Ping, Pong, CAP_CHORD_ONLY, CAP_LZ4,
};

use crate::chord::Chord;
use crate::config::Config;
use crate::conn::{Conn, ConnState, Enqueued, Peer, Priority};
use crate::discovery::Discovery;
use crate::handshake::{offers_lz4, Handshake, Proven};
use crate::identity::Identity;
use crate::io::{CloseReason, Command, ConnId, Direction, Event, Input, InputError, Output};
use crate::links::Links;
use crate::mesh::{IncarnationCheck, Mesh, StoreLimits};
use crate::metrics::{ConnStats, NodeMetrics};
use crate::table::{Table, TableLimits};
use crate::time::Instant;
use crate::timer::{Timer, TimerTable};

#[path = "node_chord.rs"]
mod node_chord;
#[path = "node_mesh.rs"]
mod node_mesh;
#[path = "node_table.rs"]
mod node_table;
use node_chord::ChordConns;

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

/// One weft node: a pure state machine. See the crate documentation for the contract.
///
/// `repr(C)` keeps the fields in this order, in 64-byte lines: the timers, clock and Chord
/// handle (line 0, read by every input); the connections, outputs and the first bytes of the
/// node's id (line 1); the counters a relay updates (line 2); then what a relay reads, the
/// seen windows and the node's id, each aligned to a line of its own (see `Mesh` and
/// `Identity`); then the rest. Sub-machines a reception never touches are boxed. In a
/// simulation of many nodes every line a frame touches is a cache miss.
#[derive(Debug)]
#[repr(C)]
pub struct Node {
    timers: TimerTable,
    now: Instant,
    /// The Chord machine, when this node is a ring member.
    chord: Option<Box<Chord>>,
    conns: BTreeMap<ConnId, Conn>,
    outputs: VecDeque<Output>,
    started: bool,
    shut_down: bool,
    /// The node id's first four bytes: a received broadcast is told apart from this node's
    /// own without reading the identity's line (`Node::is_own`).
    id_prefix: [u8; 4],
    /// The counters, except the ones a reception would touch: frames and bytes received
    /// here count closed connections only (live ones count in their `ConnStats`), and the
    /// broadcasts received are counted by the mesh, on its hot line. `metrics()` adds them.
    metrics: NodeMetrics,
    /// The one established link per peer; iteration in node-id order keeps runs deterministic.
    links: Links,
    /// Reused list of send targets, so a relay allocates nothing.
    scratch_conns: Vec<ConnId>,
    mesh: Mesh,
    identity: Identity,
    config: Config,
    network: NetworkId,
    rng: Box<ChaCha8Rng>,
    /// Heard-of peers a discovery dial is under way to, by connection.
    dial_targets: BTreeMap<ConnId, NodeId>,
    last_outbound: u64,
    table: Box<Table>,
    discovery: Box<Discovery>,
    chord_conns: ChordConns,
    wall_clock: Option<(u64, Instant)>,
}

impl Node {
    /// A node from its configuration. It does nothing until its first `handle_*` call.
    pub fn new(config: Config) -> Node {
        let identity = Identity::from_secret(&config.secret_key);
        let network = NetworkId::from_name(&config.network);
        let rng = ChaCha8Rng::from_seed(rng_seed(&config));
        let mesh = Mesh::new(
            config.limits.seen_origins_max,
            StoreLimits {
                count_max: config.limits.repair_store_max,
                bytes_max: config.limits.repair_store_bytes_max,
                age_max: config.timers.repair_window,
            },
        );
        let table = Table::new(
            identity.node_id(),
            config.incarnation,
            TableLimits {
                key_bytes_max: config.limits.table_key_bytes_max,
                value_bytes_max: config.limits.table_value_bytes_max,
                entries_max: config.limits.table_entries_max,
                key_writes_max: config.limits.table_key_writes_max,
                bytes_max: config.limits.table_bytes_max,
                lease_max: config.timers.table_lease_max,
                reclaim_horizon: config.timers.table_reclaim_horizon,
            },
        );
        let discovery = Discovery::new(
            config.limits.heard_of_max,
            config.limits.cascade_seen_max,
            config.incarnation,
        );
        let chord = Node::new_chord(&config, identity.node_id()).map(Box::new);
        let [a, b, c, d, ..] = identity.node_id().0;
        let id_prefix = [a, b, c, d];
        Node {
            chord,
            chord_conns: ChordConns::default(),
            config,
            identity,
            network,
            rng: Box::new(rng),
            conns: BTreeMap::new(),
            links: Links::default(),
            dial_targets: BTreeMap::new(),
            scratch_conns: Vec::new(),
            last_outbound: 0,
            outputs: VecDeque::new(),
            timers: TimerTable::default(),
            mesh,
            table: Box::new(table),
            discovery: Box::new(discovery),
            metrics: NodeMetrics::default(),
            wall_clock: None,
            now: Instant::ZERO,
            started: false,
            shut_down: false,
            id_prefix,
        }
    }

    // ----- the contract -------------------------------------------------------------------

    /// Feeds one input at time `now`. Bytes from the network never make this fail: a fault
    /// in them closes their connection. An `Err` means the driver or application misused the
    /// node (an unknown connection id, an oversized payload, ...): the input was ignored (the
    /// timers due at `now` have still run).
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), InputError> {
        self.advance(now);
        let now = self.now;
        let result = match input {
            Input::Accepted { conn, addr } => self.on_accepted(now, conn, addr),
            Input::Connected { conn } => self.on_connected(now, conn),
            Input::ConnectFailed { conn } => self.on_connect_failed(now, conn),
            Input::Received { conn, bytes } => self.on_received(now, conn, bytes),
            Input::Writable { conn } => {
                let c = self
                    .conns
                    .get_mut(&conn)
                    .ok_or(InputError::UnknownConn(conn))?;
                c.written();
                self.flush(conn);
                Ok(())
            }
            Input::Closed { conn } => self.on_closed(now, conn),
            Input::WallClock { unix_ms } => {
                self.wall_clock = Some((unix_ms, now));
                Ok(())
            }
            Input::Command(command) => self.on_command(now, command),
        };
        self.pump_chord(now);
        result
    }

    /// Runs every timer due at `now`. Calling it early, or twice, does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// The next output, or `None` when the node has nothing more to say for now.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the node next wants [`handle_timeout`](Self::handle_timeout); never earlier than
    /// the latest `now` it was given.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let node = self.timers.next().map(|(at, _)| at);
        let chord = self.chord.as_ref().and_then(|c| c.poll_timeout());
        let next = match (node, chord) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.map(|at| at.max(self.now))
    }

    /// The Chord machine, when this node is a ring member.
    pub fn chord(&self) -> Option<&Chord> {
        self.chord.as_deref()
    }

    // ----- inspection ---------------------------------------------------------------------

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The sync table, as this node holds it now (SPEC.md §19).
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Node-wide counters.
    pub fn metrics(&self) -> NodeMetrics {
        let mut m = self.metrics.clone();
        for s in self.conns.values().map(Conn::stats) {
            m.frames_received += s.frames_in;
            m.bytes_received += s.bytes_in;
        }
        (m.broadcasts_received, m.broadcast_duplicates) = self.mesh.reception_counts();
        m
    }

    /// One connection's counters and queue state.
    pub fn conn_stats(&self, conn: ConnId) -> Option<ConnStats> {
        self.conns.get(&conn).map(Conn::stats)
    }

    /// The address a connection was dialed at or accepted from.
    pub fn conn_addr(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn).map(|c| c.addr.as_str())
    }

    /// Open connections' ids, in order.
    pub fn conn_ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.keys().copied()
    }

    /// Peers with an established link, in node-id order, with their connection.
    pub fn links(&self) -> impl Iterator<Item = (NodeId, ConnId)> + '_ {
        self.links.iter().map(|(n, c)| (*n, *c))
    }

    /// Direct and heard-of hosts, in node-id order.
    pub fn hosts(&self) -> Vec<HostInfo> {
        let mut hosts: BTreeMap<NodeId, HostInfo> = BTreeMap::new();
        for (node, e) in self.discovery.heard_of() {
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

    /// Calendar time at `now` (Unix milliseconds), from the driver's last `WallClock` input.
    pub fn wall_clock_ms(&self, now: Instant) -> Option<u64> {
        self.wall_clock
            .map(|(ms, at)| ms.saturating_add(now.saturating_since(at).as_millis()))
    }

    /// Checks every bound the engine promises (queues, caches, tables) and the consistency of
    /// its link table. Used by tests, the fuzzer and the simulator's invariant checkers.
    pub fn check_invariants(&self) -> Result<(), String> {
        let limits = &self.config.limits;
        for c in self.conns.values() {
            if c.queued_bytes() > limits.send_queue_bytes_max {
                return Err(format!("{:?}: queue {} bytes", c.id, c.queued_bytes()));
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
        if self.discovery.heard_of_len() > limits.heard_of_max
            || self.discovery.cascades_len() > limits.cascade_seen_max
            || self.mesh.origins_len() > limits.seen_origins_max
            || self.mesh.store_len() > limits.repair_store_max
            || self.mesh.store_bytes() > limits.repair_store_bytes_max
            || self.table.entries_len() > limits.table_entries_max.saturating_mul(2)
            || self.table.bytes() > limits.table_bytes_max.saturating_mul(2)
        {
            return Err("a table is over its bound".into());
        }
        Ok(())
    }

    // ----- time ---------------------------------------------------------------------------

    /// Moves the clock to `now` (never backwards) and runs every due timer.
    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        if !self.started {
            self.started = true;
            self.timers.set(Timer::Tick, now + self.config.timers.tick);
            if self.config.discovery {
                self.timers
                    .set(Timer::Dial, now + self.config.timers.dial_interval);
            }
            self.timers
                .set(Timer::Repair, now + self.config.timers.repair_interval);
        }
        if self.shut_down {
            return;
        }
        while let Some(timer) = self.timers.take_expired(now) {
            match timer {
                Timer::Tick => {
                    self.on_tick(now);
                    self.timers.set(Timer::Tick, now + self.config.timers.tick);
                }
                Timer::Dial => {
                    self.on_dial_timer(now);
                    self.timers
                        .set(Timer::Dial, now + self.config.timers.dial_interval);
                }
                Timer::Repair => {
                    self.on_repair_timer(now);
                    self.timers
                        .set(Timer::Repair, now + self.config.timers.repair_interval);
                }
            }
        }
        if let Some(chord) = self.chord.as_mut() {
            chord.start(now);
            if chord.poll_timeout().is_some_and(|at| at <= now) {
                chord.handle_timeout(now);
            }
            self.pump_chord(now);
        }
    }

    /// Liveness: handshake timeouts, peer timeouts, PINGs.
    fn on_tick(&mut self, now: Instant) {
        let timers = self.config.timers.clone();
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
                        self.send_message(id, &Message::Ping(Ping { nonce }), Priority::Control);
                    }
                }
                ConnState::Closing => {}
            }
        }
    }

    /// Mesh and table repair: drop expired broadcasts, raise the table's reclaim floor, then
    /// send digests to one random link.
    fn on_repair_timer(&mut self, now: Instant) {
        self.chord_probe(now);
        self.mesh.expire(now);
        if let Some(wall_ms) = self.wall_clock_ms(now) {
            self.table.expire(wall_ms);
        }
        let (mesh, table) = (!self.mesh.store_is_empty(), !self.table.is_empty());
        if !(mesh || table) || self.links.is_empty() {
            return;
        }
        let pick = (self.rng.next_u64() % self.links.len() as u64) as usize;
        if let Some(&conn) = self.links.values().nth(pick) {
            if mesh {
                self.send_digest(conn);
            }
            self.send_table_digest(conn);
        }
    }

    /// Discovery: dial one due heard-of peer if outbound links are below target.
    fn on_dial_timer(&mut self, now: Instant) {
        let limits = &self.config.limits;
        let outbound = self.count(Direction::Outbound);
        if outbound >= limits.outbound_target.min(limits.outbound_max) {
            return;
        }
        let links = &self.links;
        let dialing: Vec<NodeId> = self.dial_targets.values().copied().collect();
        let me = self.identity.node_id();
        let picked =
            self.discovery
                .pick_dial(now, &mut *self.rng, self.config.timers.dial_backoff, |n| {
                    *n != me && !links.contains_key(n) && !dialing.contains(n)
                });
        if let Some((node, addr)) = picked {
            let conn = self.dial(now, addr);
            self.dial_targets.insert(conn, node);
            self.metrics.discovery_dials += 1;
        }
    }

    // ----- connections --------------------------------------------------------------------

    fn count(&self, direction: Direction) -> usize {
        self.conns
            .values()
            .filter(|c| {
                c.direction == direction && !c.chord_only && !matches!(c.state, ConnState::Closing)
            })
            .count()
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

    fn on_accepted(&mut self, now: Instant, conn: ConnId, addr: String) -> Result<(), InputError> {
        if !conn.is_inbound() || self.conns.contains_key(&conn) {
            return Err(InputError::BadInboundId(conn));
        }
        let full = self.count(Direction::Inbound) >= self.config.limits.inbound_max;
        self.conns
            .insert(conn, Conn::new(conn, addr, Direction::Inbound, now));
        if self.shut_down {
            self.close(conn, CloseReason::Shutdown, Some(ByeReason::Shutdown));
        } else if full {
            self.close(
                conn,
                CloseReason::TooManyConnections,
                Some(ByeReason::TooManyConnections),
            );
        } else {
            self.start_handshake(conn);
        }
        Ok(())
    }

    fn on_connected(&mut self, _now: Instant, conn: ConnId) -> Result<(), InputError> {
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Dialing) => {
                self.start_handshake(conn);
                Ok(())
            }
            // The dial timed out (a timer run at the top of this very call may have closed
            // it): the driver's Close is on its way.
            Some(ConnState::Closing) => Ok(()),
            _ => Err(InputError::NotDialing(conn)),
        }
    }

    fn on_connect_failed(&mut self, now: Instant, conn: ConnId) -> Result<(), InputError> {
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Dialing) => {
                self.remove_conn(conn);
                self.dial_failed(now, conn);
                self.chord_closed(conn);
                Ok(())
            }
            // A Close we asked for may cross the driver's failure report.
            Some(ConnState::Closing) => {
                self.remove_conn(conn);
                self.dial_targets.remove(&conn);
                self.chord_closed(conn);
                Ok(())
            }
            _ => Err(InputError::NotDialing(conn)),
        }
    }

    /// Forgets a connection, keeping what it received in the node's counters.
    fn remove_conn(&mut self, conn: ConnId) {
        if let Some(s) = self.conns.remove(&conn).as_ref().map(Conn::stats) {
            self.metrics.frames_received += s.frames_in;
            self.metrics.bytes_received += s.bytes_in;
        }
    }

    fn dial_failed(&mut self, now: Instant, conn: ConnId) {
        if let Some(node) = self.dial_targets.remove(&conn) {
            let t = &self.config.timers;
            self.discovery.dial_failed(
                now,
                &node,
                t.dial_backoff,
                self.config.limits.dial_attempts_max,
            );
        }
    }

    fn on_closed(&mut self, now: Instant, conn: ConnId) -> Result<(), InputError> {
        if !self.conns.contains_key(&conn) {
            return Err(InputError::UnknownConn(conn));
        }
        self.close(conn, CloseReason::Lost, None);
        self.remove_conn(conn);
        self.chord_closed(conn);
        self.dial_failed(now, conn);
        Ok(())
    }

    fn start_handshake(&mut self, conn: ConnId) {
        let mut nonce = [0u8; 32];
        self.rng.fill_bytes(&mut nonce);
        let hello = Hello {
            network: self.network,
            public_key: self.identity.public_key(),
            nonce,
            incarnation: self.config.incarnation,
            listen_addr: self.config.listen_addr.clone(),
            capabilities: if self.config.compression { CAP_LZ4 } else { 0 }
                | if self.chord_conns.dialing.contains_key(&conn) {
                    CAP_CHORD_ONLY
                } else {
                    0
                },
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.state = ConnState::Handshaking(Box::new(Handshake::new(nonce)));
        }
        self.send_message(conn, &Message::Hello(hello), Priority::Control);
    }

    /// Closes `conn`: sends BYE first if given, asks the driver to close, and tells the
    /// application what it lost. The connection stays known (as closing) until `Closed`.
    fn close(&mut self, conn: ConnId, reason: CloseReason, bye: Option<ByeReason>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(c.state, ConnState::Closing) {
            return;
        }
        let was_dialing = matches!(c.state, ConnState::Dialing);
        let peer = c.peer().map(|p| p.node);
        if let (Some(bye), false) = (bye, was_dialing) {
            // BYE goes out ahead of the close whatever the window: the driver writes what it
            // was handed before closing.
            let frame = Message::Bye(bye).to_frame(false).into_bytes();
            c.clear_queue();
            c.enqueue(frame, Priority::Control, usize::MAX, usize::MAX);
            if let Some(wire) = c.next_transmit(usize::MAX) {
                c.last_sent_at = self.now;
                self.metrics.frames_sent += 1;
                self.metrics.bytes_sent += wire.len() as u64;
                self.outputs
                    .push_back(Output::Transmit { conn, bytes: wire });
            }
        }
        c.clear_queue();
        c.state = ConnState::Closing;
        if reason != CloseReason::Lost {
            self.outputs.push_back(Output::Close {
                conn,
                reason: reason.clone(),
            });
        }
        if is_fault(&reason) {
            self.metrics.connections_failed += 1;
            self.outputs
                .push_back(Output::Event(Event::ConnectionClosed {
                    conn,
                    reason: reason.clone(),
                }));
        }
        let Some(node) = peer else {
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
        let quiet = matches!(reason, CloseReason::Shutdown | CloseReason::DuplicateLink);
        if self.config.discovery && !quiet {
            let cascade = self.discovery.new_cascade(self.identity.node_id());
            let msg = Message::ICantSee(ICantSee {
                cascade,
                hops_left: self.config.limits.cascade_hops,
                lost: node,
            });
            self.send_to_links(&msg, None, Priority::Control);
        }
    }

    // ----- sending ------------------------------------------------------------------------

    fn compress_to(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.send_compressed)
    }

    fn send_message(&mut self, conn: ConnId, msg: &Message<'_>, priority: Priority) {
        let frame = msg.to_frame(self.compress_to(conn)).into_bytes();
        self.send_frame(conn, frame, priority);
    }

    /// Sends an encoded payload under `code` to every established link, framing it at most
    /// twice (compressed and not). Returns how many links it was queued for.
    fn send_payload_to_links(&mut self, code: Code, payload: &[u8], priority: Priority) -> u64 {
        let mut frames = FramePair::default();
        let mut targets = core::mem::take(&mut self.scratch_conns);
        targets.extend(self.links.values().copied());
        let mut sent = 0;
        for &conn in &targets {
            let build = |compress| {
                frames.get(compress, || {
                    Frame::build(code, payload, compress).into_bytes()
                })
            };
            sent += u64::from(self.send_built(conn, priority, build));
        }
        targets.clear();
        self.scratch_conns = targets;
        sent
    }

    /// Sends `msg` to every established link but `except`, encoding it at most twice
    /// (compressed and not). Returns how many links it was queued for.
    fn send_to_links(
        &mut self,
        msg: &Message<'_>,
        except: Option<ConnId>,
        priority: Priority,
    ) -> u64 {
        let mut frames = FramePair::default();
        let mut targets = core::mem::take(&mut self.scratch_conns);
        targets.extend(self.links.values().copied().filter(|c| Some(*c) != except));
        let mut sent = 0;
        for &conn in &targets {
            let build = |compress| frames.get(compress, || msg.to_frame(compress).into_bytes());
            sent += u64::from(self.send_built(conn, priority, build));
        }
        targets.clear();
        self.scratch_conns = targets;
        sent
    }

    /// Queues a frame under the overflow rule and hands the driver what the window allows.
    /// Returns false if it was dropped or the peer was disconnected as too slow.
    fn send_frame(&mut self, conn: ConnId, frame: Bytes, priority: Priority) -> bool {
        self.send_built(conn, priority, |_| frame)
    }

    /// [`send_frame`](Self::send_frame) of the frame `build` makes, told whether the peer
    /// takes compressed frames: one connection lookup for the whole send.
    fn send_built(
        &mut self,
        conn: ConnId,
        priority: Priority,
        build: impl FnOnce(bool) -> Bytes,
    ) -> bool {
        let limits = &self.config.limits;
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        if matches!(c.state, ConnState::Closing) {
            return false;
        }
        let compress = c.send_compressed;
        match c.enqueue(
            build(compress),
            priority,
            limits.relay_queue_bytes_max,
            limits.send_queue_bytes_max,
        ) {
            Enqueued::Queued => {
                let window = limits.transmit_window_bytes;
                flush_conn(
                    conn,
                    c,
                    self.now,
                    window,
                    &mut self.metrics,
                    &mut self.outputs,
                );
                true
            }
            Enqueued::DroppedRelay => {
                self.metrics.relays_dropped += 1;
                false
            }
            Enqueued::Overflow => {
                self.close(conn, CloseReason::SlowPeer, Some(ByeReason::SlowPeer));
                false
            }
        }
    }

    fn flush(&mut self, conn: ConnId) {
        let window = self.config.limits.transmit_window_bytes;
        if let Some(c) = self.conns.get_mut(&conn) {
            flush_conn(
                conn,
                c,
                self.now,
                window,
                &mut self.metrics,
                &mut self.outputs,
            );
        }
    }

    // ----- receiving ----------------------------------------------------------------------

    fn on_received(&mut self, now: Instant, conn: ConnId, bytes: Bytes) -> Result<(), InputError> {
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(InputError::UnknownConn(conn))?;
        match c.state {
            ConnState::Closing => return Ok(()),
            ConnState::Dialing => return Err(InputError::NotDialing(conn)),
            _ => {}
        }
        c.count_bytes_in(bytes.len());
        let plain = c.transport.open(bytes);
        c.decoder.push(plain);
        let mut c = c;
        loop {
            if matches!(c.state, ConnState::Closing) {
                return Ok(());
            }
            match c.decoder.next_frame() {
                Ok(Some(frame)) => {
                    c.count_frame_in(frame.code(), frame.bytes().len());
                    c.last_received_at = now;
                    let from = Sender {
                        conn,
                        established: c.peer().is_some(),
                        chord_only: c.chord_only,
                    };
                    // Most deliveries carry one whole frame: then there is nothing to look
                    // the connection up again for.
                    let last = c.decoder.buffered_len() == 0;
                    self.on_frame(now, from, frame);
                    if last {
                        return Ok(());
                    }
                    c = match self.conns.get_mut(&conn) {
                        Some(c) => c,
                        None => return Ok(()),
                    };
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.close(
                        conn,
                        CloseReason::Protocol(e),
                        Some(ByeReason::ProtocolViolation),
                    );
                    return Ok(());
                }
            }
        }
    }

    fn on_frame(&mut self, now: Instant, from: Sender, frame: Frame) {
        let conn = from.conn;
        if frame.code() == Code::BROADCAST
            && from.established
            && !from.chord_only
            && !frame.flags().compressed()
        {
            return self.on_broadcast_frame(now, conn, &frame);
        }
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
        let established = from.established;
        if established && from.chord_only && !Node::allowed_on_chord_conn(&msg) {
            let what = "mesh or discovery message on a chord-only connection";
            let bye = Some(ByeReason::ProtocolViolation);
            return self.close(conn, CloseReason::UnexpectedMessage(what), bye);
        }
        match (msg, established) {
            (Message::Bye(reason), _) => self.close(conn, CloseReason::PeerSaidBye(reason), None),
            (Message::Hello(hello), false) => self.on_hello(conn, hello),
            (Message::HelloAck(ack), false) => self.on_hello_ack(now, conn, &ack),
            (Message::Ping(Ping { nonce }), true) => {
                self.send_message(conn, &Message::Pong(Pong { nonce }), Priority::Control)
            }
            (Message::Pong(_), true) => {}
            (Message::ICanSee(m), true) => self.on_icansee(now, conn, m),
            (Message::IKnowAbout(m), true) => self.on_iknowabout(now, conn, m),
            (Message::ICantSee(m), true) => self.on_icantsee(conn, m),
            (Message::Broadcast(b), true) => {
                self.on_broadcast(now, conn, Some(&frame), &payload, &b);
            }
            (Message::MeshRepair(b), true) => {
                if self.on_broadcast(now, conn, None, &payload, &b) {
                    self.metrics.repairs_received += 1;
                }
            }
            (Message::MeshDigest(d), true) => self.on_digest(conn, &d),
            (Message::MeshWant(w), true) => self.on_want(conn, w),
            (Message::TableWrite(w), true) => self.on_table_write(conn, Some(&frame), w),
            (Message::TableDigest(d), true) => self.on_table_digest(conn, &d),
            (Message::TableWant(w), true) => self.on_table_want(conn, &w),
            (Message::TableEntries(e), true) => {
                for w in e.writes {
                    self.on_table_write(conn, None, w);
                }
            }
            (Message::Chord(m), true) => self.on_chord_message(now, conn, m),
            (_, _) => {
                let what = if established {
                    "handshake message after the handshake"
                } else {
                    "message before the handshake finished"
                };
                self.close(
                    conn,
                    CloseReason::UnexpectedMessage(what),
                    Some(ByeReason::ProtocolViolation),
                );
            }
        }
    }

    // ----- handshake ----------------------------------------------------------------------

    fn handshake_mut(&mut self, conn: ConnId) -> Option<&mut Handshake> {
        match &mut self.conns.get_mut(&conn)?.state {
            ConnState::Handshaking(h) => Some(h),
            _ => None,
        }
    }

    fn on_hello(&mut self, conn: ConnId, hello: Hello) {
        let node = NodeId::from_public_key(&hello.public_key);
        if hello.network == self.network && self.mesh.is_stale(node, hello.incarnation) {
            return self.close(conn, CloseReason::StaleIncarnation, None);
        }
        let (identity, network, incarnation) =
            (&self.identity, self.network, self.config.incarnation);
        let Some(ConnState::Handshaking(handshake)) =
            self.conns.get_mut(&conn).map(|c| &mut c.state)
        else {
            return;
        };
        match handshake.on_hello(hello, identity, network, incarnation) {
            Ok(ack) => self.send_message(conn, &Message::HelloAck(ack), Priority::Control),
            Err(reason) => {
                let bye = bye_for(&reason);
                self.close(conn, reason, bye);
            }
        }
    }

    fn on_hello_ack(&mut self, now: Instant, conn: ConnId, ack: &weft_protocol::HelloAck) {
        let network = self.network;
        let Some(handshake) = self.handshake_mut(conn) else {
            return;
        };
        let our_nonce = handshake.our_nonce;
        match handshake.on_hello_ack(ack, network) {
            Ok(proven) => self.establish(now, conn, proven, our_nonce),
            Err(reason) => {
                let bye = bye_for(&reason);
                self.close(conn, reason, bye);
            }
        }
    }

    fn establish(&mut self, now: Instant, conn: ConnId, proven: Proven, our_nonce: [u8; 32]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Proven { node, hello } = proven;
        let dialer_nonce = match c.direction {
            Direction::Outbound => our_nonce,
            Direction::Inbound => hello.nonce,
        };
        let peer = Peer {
            node,
            incarnation: hello.incarnation,
            listen_addr: hello.listen_addr.clone(),
            dialer_nonce,
        };
        c.state = ConnState::Established(Box::new(peer));
        c.send_compressed = self.config.compression && offers_lz4(&hello);
        self.dial_targets.remove(&conn);
        self.metrics.handshakes_completed += 1;
        if self.chord_only(conn, hello.capabilities) {
            return self.chord_established(now, conn, node);
        }
        let restarted =
            self.mesh.check_incarnation(node, hello.incarnation) == IncarnationCheck::Restarted;
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
                // replaces may have died with broadcasts in flight, so repair over the new one.
                self.send_digest(conn);
                self.send_table_digest(conn);
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
        if let Some(addr) = &hello.listen_addr {
            self.discovery.learn(now, node, addr);
        }
        self.discovery.linked(&node);
        if self.config.discovery {
            self.announce(conn);
        }
        self.send_digest(conn);
        self.send_table_digest(conn);
        self.chord_maybe_join(now, node, hello.listen_addr.as_deref());
    }

    /// The tie-break between two links to one peer: true if `old` stays. Both ends reach the
    /// same verdict (SPEC.md §Links): the higher incarnation wins; then the link dialed by
    /// the higher node id; then, for two links dialed by the same side, the higher dialer
    /// nonce.
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

    /// Discovery on a new link: tell the new peer what we have heard of, and cascade to every
    /// peer what we can now see.
    fn announce(&mut self, conn: ConnId) {
        let me = self.identity.node_id();
        let peer = self.conns.get(&conn).and_then(|c| c.peer()).map(|p| p.node);
        let known = self.discovery.known_peers(peer.unwrap_or(me));
        if !known.is_empty() {
            let cascade = self.discovery.new_cascade(me);
            let msg = Message::IKnowAbout(IKnowAbout {
                cascade,
                hops_left: 0,
                peers: known,
            });
            self.send_message(conn, &msg, Priority::Control);
        }
        let mut peers = Vec::new();
        for (node, c) in &self.links {
            let addr = self
                .conns
                .get(c)
                .and_then(|c| c.peer()?.listen_addr.clone());
            if let Some(addr) = addr {
                peers.push(PeerInfo { node: *node, addr });
            }
            if peers.len() == weft_protocol::PEERS_PER_MESSAGE_MAX {
                break;
            }
        }
        let msg = Message::ICanSee(ICanSee {
            cascade: self.discovery.new_cascade(me),
            hops_left: self.config.limits.cascade_hops,
            origin_addr: self.config.listen_addr.clone(),
            peers,
        });
        self.send_to_links(&msg, None, Priority::Control);
    }

    // ----- discovery ----------------------------------------------------------------------

    fn learn_all(&mut self, now: Instant, peers: &[PeerInfo]) {
        let me = self.identity.node_id();
        for p in peers {
            if p.node != me {
                self.discovery.learn(now, p.node, &p.addr);
            }
        }
    }

    fn on_icansee(&mut self, now: Instant, conn: ConnId, mut m: ICanSee) {
        if !self.config.discovery || !self.discovery.first_sight(m.cascade) {
            return;
        }
        if let Some(addr) = &m.origin_addr {
            if m.cascade.origin != self.identity.node_id() {
                self.discovery.learn(now, m.cascade.origin, addr);
            }
        }
        self.learn_all(now, &m.peers);
        if m.hops_left > 0 {
            m.hops_left = (m.hops_left - 1).min(self.config.limits.cascade_hops);
            self.send_to_links(&Message::ICanSee(m), Some(conn), Priority::Relay);
        }
    }

    fn on_iknowabout(&mut self, now: Instant, conn: ConnId, mut m: IKnowAbout) {
        if !self.config.discovery || !self.discovery.first_sight(m.cascade) {
            return;
        }
        self.learn_all(now, &m.peers);
        if m.hops_left > 0 {
            m.hops_left = (m.hops_left - 1).min(self.config.limits.cascade_hops);
            self.send_to_links(&Message::IKnowAbout(m), Some(conn), Priority::Relay);
        }
    }

    fn on_icantsee(&mut self, conn: ConnId, mut m: ICantSee) {
        if !self.config.discovery || !self.discovery.first_sight(m.cascade) {
            return;
        }
        // A peer we hold a live link to stays, whatever others say about it.
        if !self.links.contains_key(&m.lost) {
            self.discovery.forget(&m.lost);
        }
        if m.hops_left > 0 {
            m.hops_left = (m.hops_left - 1).min(self.config.limits.cascade_hops);
            self.send_to_links(&Message::ICantSee(m), Some(conn), Priority::Relay);
        }
    }

    /// Sends an encoded payload under `code` to every established link but `except`, framing
    /// it at most twice. Returns how many links it was queued for.
    fn send_payload_except(&mut self, code: Code, payload: &[u8], except: Option<ConnId>) -> u64 {
        let mut frames = FramePair::default();
        let mut targets = core::mem::take(&mut self.scratch_conns);
        targets.extend(self.links.values().copied().filter(|c| Some(*c) != except));
        let mut sent = 0;
        for &conn in &targets {
            let build = |compress| {
                frames.get(compress, || {
                    Frame::build(code, payload, compress).into_bytes()
                })
            };
            sent += u64::from(self.send_built(conn, Priority::Control, build));
        }
        targets.clear();
        self.scratch_conns = targets;
        sent
    }

    fn on_command(&mut self, now: Instant, command: Command) -> Result<(), InputError> {
        if self.shut_down {
            return Err(InputError::ShutDown);
        }
        match command {
            Command::Connect { addr } => {
                if self.count(Direction::Outbound) >= self.config.limits.outbound_max {
                    return Err(InputError::TooManyConnections);
                }
                self.dial(now, addr);
            }
            Command::Broadcast { payload } => {
                let max = self.config.limits.broadcast_payload_max;
                if payload.len() > max {
                    return Err(InputError::PayloadTooLarge {
                        len: payload.len(),
                        max,
                    });
                }
                let (origin, incarnation) = (self.identity.node_id(), self.config.incarnation);
                let seq = self.mesh.next_seq();
                let msg = Message::Broadcast(Broadcast {
                    origin,
                    incarnation,
                    seq,
                    payload: &payload,
                });
                let encoded = Bytes::from(msg.encode_payload());
                self.mesh
                    .hold(now, origin, incarnation, seq, encoded.clone());
                self.metrics.broadcasts_originated += 1;
                let sent = self.send_payload_to_links(Code::BROADCAST, &encoded, Priority::Control);
                self.metrics.broadcast_transmissions += sent;
            }
            Command::TableSet { key, value, lease } => self.on_table_set(now, key, value, lease)?,
            Command::TableDelete { key } => self.on_table_delete(now, key)?,
            Command::TableRelease { key } => self.on_table_release(now, key)?,
            Command::Disconnect { node } => {
                let conn = *self.links.get(&node).ok_or(InputError::NotLinked(node))?;
                self.close(conn, CloseReason::Requested, Some(ByeReason::Requested));
            }
            Command::Chord { request, op } => {
                let chord = self.chord.as_mut().ok_or(InputError::ChordDisabled)?;
                chord.request(now, request, op);
            }
            Command::Shutdown => {
                if let Some(chord) = self.chord.as_mut() {
                    chord.leave(now);
                }
                self.pump_chord(now);
                self.chord = None;
                let ids: Vec<ConnId> = self.conns.keys().copied().collect();
                for id in ids {
                    self.close(id, CloseReason::Shutdown, Some(ByeReason::Shutdown));
                }
                self.shut_down = true;
                self.timers = TimerTable::default();
            }
        }
        Ok(())
    }
}

impl Node {
    /// Whether `origin` is this node's id; a differing first four bytes, the usual case,
    /// answers from the node's hot line.
    fn is_own(&self, origin: &NodeId) -> bool {
        origin.0[..4] == self.id_prefix && *origin == self.identity.node_id()
    }
}

/// The node's RNG seed: BLAKE3 of the secret key, the incarnation and `Config::rng_seed`, so
/// nonces are unpredictable to anyone without the key, differ on every run (the incarnation
/// grows), and are still a pure function of the config (the simulator replays them).
fn rng_seed(config: &Config) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"weft node rng v1\0");
    h.update(&config.secret_key);
    h.update(&config.incarnation.to_le_bytes());
    h.update(&config.rng_seed.to_le_bytes());
    *h.finalize().as_bytes()
}

/// Hands the driver what `c`'s transmit window allows of its send queue.
fn flush_conn(
    conn: ConnId,
    c: &mut Conn,
    now: Instant,
    window: usize,
    metrics: &mut NodeMetrics,
    outputs: &mut VecDeque<Output>,
) {
    while let Some(wire) = c.next_transmit(window) {
        c.last_sent_at = now;
        metrics.frames_sent += 1;
        metrics.bytes_sent += wire.len() as u64;
        outputs.push_back(Output::Transmit { conn, bytes: wire });
    }
}

/// The connection a frame came on, as the receive loop found it.
#[derive(Debug, Clone, Copy)]
struct Sender {
    conn: ConnId,
    /// The handshake is done.
    established: bool,
    /// A chord-only connection (SPEC.md §20.4).
    chord_only: bool,
}

/// Lazily built frames of one message, with and without compression.
#[derive(Default)]
struct FramePair {
    plain: Option<Bytes>,
    packed: Option<Bytes>,
}

impl FramePair {
    fn get(&mut self, compressed: bool, build: impl FnOnce() -> Bytes) -> Bytes {
        let slot = if compressed {
            &mut self.packed
        } else {
            &mut self.plain
        };
        slot.get_or_insert_with(build).clone()
    }
}

/// Whether a close reason is the peer's fault (counted and reported as an event).
fn is_fault(reason: &CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::Protocol(_)
            | CloseReason::UnexpectedMessage(_)
            | CloseReason::WrongNetwork
            | CloseReason::BadProof
            | CloseReason::StaleIncarnation
            | CloseReason::SlowPeer
            | CloseReason::HandshakeTimeout
            | CloseReason::Timeout
    )
}

/// The BYE that goes with a handshake failure.
fn bye_for(reason: &CloseReason) -> Option<ByeReason> {
    match reason {
        CloseReason::WrongNetwork => Some(ByeReason::WrongNetwork),
        CloseReason::BadProof => Some(ByeReason::BadProof),
        CloseReason::UnexpectedMessage(_) => Some(ByeReason::ProtocolViolation),
        _ => None,
    }
}

#[cfg(test)]
mod layout {
    use super::*;

    /// The lines `Node`'s comment promises (64-bit targets, where they were measured).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn hot_fields_sit_in_the_lines_the_layout_names() {
        use core::mem::offset_of;
        let line = |offset: usize| offset / 64;
        let last = |offset: usize, size: usize| line(offset + size - 1);
        assert_eq!(last(offset_of!(Node, chord), 8), 0);
        assert_eq!(line(offset_of!(Node, conns)), 1);
        assert_eq!(last(offset_of!(Node, id_prefix), 4), 1);
        let metrics = offset_of!(Node, metrics);
        assert_eq!(line(metrics), 2);
        assert_eq!(
            last(
                metrics + offset_of!(NodeMetrics, broadcast_transmissions),
                8
            ),
            2
        );
        assert_eq!(
            offset_of!(Node, mesh) % 64,
            0,
            "the seen windows start a line"
        );
        assert_eq!(
            offset_of!(Node, identity) % 64,
            0,
            "the node id starts a line"
        );
    }
}
