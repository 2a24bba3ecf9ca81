//! The node: the protocol host. It feeds inputs to the session layer, hands the protocols
//! their frames, link notices, commands and timeouts, carries their outputs back to the
//! session, and keeps the one deadline.
//!
//! Methods, in the order a driver uses them: [`Node::new`]; `handle_input` and
//! `handle_timeout` (in); `poll_output` until `None`, then `poll_timeout` (out); the rest
//! only read. After every input the host runs [`Node::pump`] until neither the session nor
//! any protocol has anything left to say (str0m's single-mutation rule), then hands the
//! driver the frames queued meanwhile, each connection's together ([`Node::settle`]).

mod gate;
mod protocols;

use std::collections::BTreeMap;

use weft_protocol::{ByeReason, Family, Frame, NodeId};

use crate::chord::Chord;
use crate::config::Config;
use crate::connection::ConnId;
use crate::io::{
    Command, HostRequest, HostResult, Input, InputError, Misuse, Output, RequestId, SessionRefusal,
};
use crate::machine::{Context, LinkNotice, PeerFault, ProtocolOutput};
use crate::metrics::{ConnStats, NodeMetrics};
use crate::session::{HostInfo, Incoming, Notice, Peer, Session};
use crate::table::Table;
use crate::time::{earliest, Instant};
use gate::StartGate;
use protocols::{Protocols, COUNT, FAMILIES};

/// Who asked the host for something.
#[derive(Debug, Clone, Copy)]
enum Requester {
    /// The session (its known peers), with its token.
    Session(u64),
    /// The protocol at this index, with its token.
    Protocol(usize, u64),
}

/// One weft node: a pure state machine. See the crate documentation for the contract.
#[derive(Debug)]
pub struct Node {
    config: Config,
    session: Session,
    protocols: Protocols,
    /// Requests to the host not yet completed: who sent each, and its token.
    requests: BTreeMap<RequestId, Requester>,
    last_request: u64,
    now: Instant,
    started: bool,
    /// True while the node starts (its first timer run): every `LoadState` asked for then is a
    /// start-up load the gate waits for.
    starting: bool,
    gate: StartGate,
    /// `Some` when the node speaks the p2p.today dialect: every input goes to it, and the
    /// session and protocols above stay idle.
    dialect: Option<Box<crate::p2pt::P2ptNode>>,
}

impl Node {
    /// A node from its configuration. It does nothing until its first `handle_*` call.
    pub fn new(config: Config) -> Node {
        let seed = rng_seed(&config);
        let child = |name: &str| {
            let mut h = blake3::Hasher::new_derive_key("weft node rng streams v1");
            h.update(&seed);
            h.update(name.as_bytes());
            *h.finalize().as_bytes()
        };
        let me = crate::identity::Identity::from_secret(&config.secret_key).node_id();
        let protocols = Protocols::new(&config, me, child);
        let session = Session::new(&config, protocols.families(), child("session"));
        let dialect = crate::p2pt::P2ptNode::from_config(&config).map(Box::new);
        Node {
            config,
            session,
            protocols,
            requests: BTreeMap::new(),
            last_request: 0,
            now: Instant::ZERO,
            started: false,
            starting: false,
            gate: StartGate::default(),
            dialect,
        }
    }

    // ----- the contract -------------------------------------------------------------------

    /// Feeds one input at time `now`. Bytes from the network never make this fail: a fault
    /// in them closes their connection. An `Err` is the driver's misuse (an unknown
    /// connection id, ...) or a refused command (an oversized payload, ...): the input was
    /// ignored (the timers due at `now` have still run).
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), InputError> {
        if let Some(d) = &mut self.dialect {
            return d.handle_input(now, input);
        }
        self.advance(now);
        let now = self.now;
        let result = match input {
            Input::Accepted { conn, addr } => {
                self.session.accepted(now, conn, addr).map_err(Into::into)
            }
            Input::Connected { conn } => self.session.connected(conn).map_err(Into::into),
            Input::ConnectFailed { conn } => {
                self.session.connect_failed(now, conn).map_err(Into::into)
            }
            Input::Received { conn, bytes } => match self.session.received(now, conn, bytes) {
                Ok(first) => {
                    self.receive(now, conn, first);
                    Ok(())
                }
                Err(misuse) => Err(misuse.into()),
            },
            Input::Writable { conn } => self.session.writable(conn).map_err(Into::into),
            Input::Closed { conn } => {
                self.gate.forget(conn);
                self.session.closed(now, conn).map_err(Into::into)
            }
            Input::WallClock { unix_ms } => {
                self.session.set_wall_clock(unix_ms, now);
                Ok(())
            }
            Input::Completed { id, result } => self.completed(now, id, result),
            Input::Command(command) => self.command(now, command),
        };
        self.settle(now);
        result
    }

    /// Runs every timer due at `now`. Calling it early, or twice, does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = &mut self.dialect {
            return d.handle_timeout(now);
        }
        self.advance(now);
    }

    /// The next output, or `None` when the node has nothing more to say for now. Until the
    /// host has answered every start-up `LoadState`, only requests and events come out: the
    /// node restores its state before it dials or sends anything (SPEC.md §8.1).
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(d) = &mut self.dialect {
            return d.poll_output();
        }
        let session = &mut self.session;
        self.gate.poll(|| session.poll_output())
    }

    /// Whether the host has answered every start-up load (the node may dial and send).
    pub fn is_restored(&self) -> bool {
        if self.dialect.is_some() {
            return true;
        }
        self.started && self.gate.is_open()
    }

    /// When the node next wants [`handle_timeout`](Self::handle_timeout): the soonest of the
    /// session's and every protocol's deadlines, never earlier than the latest `now` given.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(d) = &self.dialect {
            return d.poll_timeout();
        }
        if self.session.is_shut_down() {
            return None;
        }
        self.soonest().map(|at| at.max(self.now))
    }

    // ----- inspection ---------------------------------------------------------------------

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.session.node_id()
    }

    /// The p2p.today node, when this node speaks that dialect ([`Config::p2pt`]).
    pub fn p2pt(&self) -> Option<&crate::p2pt::P2ptNode> {
        self.dialect.as_deref()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The sync table, as this node holds it now (SPEC.md §19).
    pub fn table(&self) -> &Table {
        self.protocols.table.table()
    }

    /// The Chord machine, when this node is a ring member.
    pub fn chord(&self) -> Option<&Chord> {
        self.protocols.chord.chord()
    }

    /// The replication machine of `folder`, if it was added
    /// ([`crate::ReplicateCommand::AddFolder`]).
    pub fn replica(&self, folder: &weft_protocol::FolderId) -> Option<&crate::replicate::Replica> {
        self.protocols.replicate.folder(folder)
    }

    /// The versions of a drop this node holds (SPEC.md §24).
    pub fn drop_chain(&self, drop: &weft_protocol::DropId) -> Option<&crate::drops::Chain> {
        self.protocols.drops.chain(drop)
    }

    /// How far this node's changes to its held drops are stored (a host answers a drops
    /// command once its change is).
    pub fn drops_durability(&self) -> &crate::drops::DropsDurability {
        self.protocols.drops.durability()
    }

    /// The version a held drop's folder shows (its file list verified, its gate set).
    pub fn drop_shown(&self, drop: &weft_protocol::DropId) -> Option<weft_protocol::VersionId> {
        self.protocols.drops.shown(drop)
    }

    /// The drops this node holds.
    pub fn drop_ids(&self) -> impl Iterator<Item = &weft_protocol::DropId> + '_ {
        self.protocols.drops.drop_ids()
    }

    /// A held drop's tracker counters: its announcements, lookups, and the holders they
    /// found and dialed (SPEC.md §24.6).
    pub fn drop_tracker(&self, drop: &weft_protocol::DropId) -> Option<crate::drops::DropTracker> {
        self.protocols.drops.tracker_of(drop)
    }

    /// Drops' counters.
    pub fn drops_metrics(&self) -> crate::drops::DropsMetrics {
        self.protocols.drops.metrics()
    }

    /// Every node-wide counter.
    pub fn metrics(&self) -> NodeMetrics {
        NodeMetrics {
            session: self.session.metrics().clone(),
            mesh: self.protocols.mesh.metrics().clone(),
            table: self.protocols.table.metrics().clone(),
            discovery: self.protocols.discovery.metrics().clone(),
            run: self.protocols.run.metrics().clone(),
        }
    }

    /// One connection's counters and queue state.
    pub fn conn_stats(&self, conn: ConnId) -> Option<ConnStats> {
        self.session.conn_stats(conn)
    }

    /// The address a connection was dialed at or accepted from.
    pub fn conn_addr(&self, conn: ConnId) -> Option<&str> {
        if let Some(d) = &self.dialect {
            return d.conn_addr(conn);
        }
        self.session.conn_addr(conn)
    }

    /// Open connections' ids, in order.
    pub fn conn_ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        let dialect = self
            .dialect
            .as_deref()
            .map(|d| d.conn_ids().collect::<Vec<_>>());
        let native = dialect.is_none().then(|| self.session.conn_ids());
        dialect
            .into_iter()
            .flatten()
            .chain(native.into_iter().flatten())
    }

    /// The family a connection is dedicated to, if it is a dedicated connection (never a
    /// link: SPEC.md §8.9).
    pub fn dedicated_family(&self, conn: ConnId) -> Option<weft_protocol::Family> {
        self.session.dedicated_family(conn)
    }

    /// Peers with an established link, in node-id order, with their connection.
    pub fn links(&self) -> impl Iterator<Item = (NodeId, ConnId)> + '_ {
        self.session.links()
    }

    /// The public key of a linked peer, as its handshake proved it.
    pub fn peer_public_key(&self, node: &NodeId) -> Option<weft_protocol::PublicKey> {
        self.session.link_peer(node).map(|p| p.public_key)
    }

    /// Direct and heard-of hosts, in node-id order.
    pub fn hosts(&self) -> Vec<HostInfo> {
        self.session.hosts()
    }

    /// Calendar time at `now` (Unix milliseconds), from the driver's last `WallClock` input.
    pub fn wall_clock_ms(&self, now: Instant) -> Option<u64> {
        if let Some(d) = &self.dialect {
            return d.wall_clock_ms(now);
        }
        self.session.wall_clock_ms(now)
    }

    /// Checks every bound the engine promises (queues, caches, tables) and the consistency of
    /// its link table. Used by tests, the fuzzer and the simulator's invariant checkers.
    pub fn check_invariants(&self) -> Result<(), String> {
        if let Some(d) = &self.dialect {
            return d.check_invariants();
        }
        self.session.check_invariants()?;
        for p in self.protocols.all() {
            p.check_invariants(&self.config)?;
        }
        if self.requests.len() > REQUESTS_OUTSTANDING_MAX {
            return Err(format!("{} requests outstanding", self.requests.len()));
        }
        Ok(())
    }

    // ----- the host -----------------------------------------------------------------------

    /// The soonest of the session's and the protocols' deadlines.
    fn soonest(&self) -> Option<Instant> {
        earliest(self.session.poll_timeout(), self.protocols.deadline())
    }

    /// Moves the clock to `now` (never backwards) and runs every due timer.
    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        self.session.set_now(now);
        if self.session.is_shut_down() {
            return;
        }
        // Most inputs come between deadlines.
        if self.started && self.soonest().is_none_or(|at| at > now) {
            return;
        }
        if self.session.poll_timeout().is_some_and(|at| at <= now) {
            self.session.handle_timeout(now);
        }
        // At the start every protocol arms its timers (and asks for its stored state).
        let start = !self.started;
        self.started = true;
        self.starting = start;
        for i in 0..COUNT {
            if start || self.protocols.deadline_of(i).is_some_and(|at| at <= now) {
                let cx = Context {
                    session: &self.session,
                };
                self.protocols.call(i, |p| p.handle_timeout(now, &cx));
            }
        }
        self.settle(now);
        self.starting = false;
    }

    /// Hands the protocols their frames from `conn`, `next` first, pumping between them, then
    /// tells each protocol that had frames that the input is done (the caller pumps after).
    fn receive(&mut self, now: Instant, conn: ConnId, mut next: Option<Incoming>) {
        let mut had_frames = 0u32;
        while let Some(Incoming { frame, peer, more }) = next {
            had_frames |= self.dispatch(now, conn, &peer, frame);
            if !more {
                break;
            }
            self.pump(now);
            next = self.session.next_frame(now, conn);
        }
        for i in (0..COUNT).filter(|i| had_frames & (1 << i) != 0) {
            let cx = Context {
                session: &self.session,
            };
            let result = self.protocols.call(i, |p| p.handle_input_end(now, &cx));
            self.close_for(conn, result);
        }
    }

    /// One frame to the protocol that owns its code; a fault closes the connection. Returns
    /// the protocol's bit (0 if none owns the code).
    fn dispatch(&mut self, now: Instant, conn: ConnId, peer: &Peer, frame: Frame) -> u32 {
        let cx = Context {
            session: &self.session,
        };
        let (bit, result) = match Protocols::owner(frame.code()) {
            Some(i) => (
                1 << i,
                self.protocols
                    .call(i, |p| p.handle_message(now, &cx, peer, frame)),
            ),
            None => (
                0,
                Err(PeerFault::Unexpected("a message no protocol here owns")),
            ),
        };
        self.close_for(conn, result);
        bit
    }

    /// Closes `conn` if a protocol found its peer at fault.
    fn close_for(&mut self, conn: ConnId, result: Result<(), PeerFault>) {
        if let Err(fault) = result {
            let bye = Some(ByeReason::ProtocolViolation);
            self.session.close(conn, fault.into(), bye);
        }
    }

    fn command(&mut self, now: Instant, command: Command) -> Result<(), InputError> {
        if self.session.is_shut_down() {
            return Err(SessionRefusal::ShutDown.into());
        }
        let cx = Context {
            session: &self.session,
        };
        match command {
            Command::Connect { addr } => self.session.connect(now, addr)?,
            Command::Disconnect { node } => self.session.disconnect(node)?,
            Command::Shutdown => {
                for i in 0..COUNT {
                    self.protocols.call(i, |p| p.handle_shutdown(now, &cx));
                }
                self.pump(now);
                self.session.shutdown();
                self.carry_session_requests();
            }
            command => self.protocols.command(now, &cx, command)?,
        }
        Ok(())
    }

    fn completed(
        &mut self,
        now: Instant,
        id: RequestId,
        result: HostResult,
    ) -> Result<(), InputError> {
        let requester = self
            .requests
            .remove(&id)
            .ok_or(Misuse::UnknownRequest(id))?;
        self.gate.answered(id);
        let (i, token) = match requester {
            Requester::Session(token) => {
                self.session.completed(now, token, result);
                return Ok(());
            }
            Requester::Protocol(i, token) => (i, token),
        };
        let cx = Context {
            session: &self.session,
        };
        self.protocols
            .call(i, |p| p.handle_completed(now, &cx, token, result));
        Ok(())
    }

    /// The single-mutation rule: carries the session's notices to the protocols and the
    /// protocols' outputs to the session until neither has anything left. Only protocols
    /// called since they were last drained are asked for outputs.
    fn pump(&mut self, now: Instant) {
        loop {
            self.carry_session_requests();
            while let Some(notice) = self.session.poll_notice() {
                self.notify(now, notice);
            }
            let pending = self.protocols.take_pending();
            if pending == 0 {
                return;
            }
            for i in (0..COUNT).filter(|i| pending & (1 << i) != 0) {
                while let Some(out) = self.protocols.get_mut(i).poll_output() {
                    self.carry(now, i, out);
                }
            }
        }
    }

    /// The end of an input: [`pump`](Self::pump), then the frames queued meanwhile handed to
    /// the driver (each connection's at once), and again while that raised notices.
    fn settle(&mut self, now: Instant) {
        loop {
            self.pump(now);
            if !self.session.flush_queued() {
                return;
            }
        }
    }

    /// Numbers a request to the host and hands it out.
    fn request(&mut self, requester: Requester, request: HostRequest) {
        self.last_request += 1;
        let id = RequestId(self.last_request);
        self.requests.insert(id, requester);
        // A load asked for while the node starts (the session's known peers, a protocol's
        // state) holds the network outputs until it is answered (SPEC.md §8.1).
        if self.starting && matches!(request, HostRequest::LoadState { .. }) {
            self.gate.register(id);
        }
        self.session.push_output(Output::Request { id, request });
    }

    /// The session's own requests to the host (its known peers), handed out.
    fn carry_session_requests(&mut self) {
        while let Some((token, request)) = self.session.poll_request() {
            self.request(Requester::Session(token), request);
        }
    }

    /// A session notice to the protocols it concerns.
    fn notify(&mut self, now: Instant, notice: Notice) {
        let cx = Context {
            session: &self.session,
        };
        match notice {
            Notice::LinkUp { node, replaced } => {
                // The link may have gone again before its notice was carried.
                let Some(peer) = self.session.link_peer(&node) else {
                    return;
                };
                for i in 0..COUNT {
                    let p = &self.protocols.all()[i];
                    if p.runs() && peer.runs(p.family()) {
                        let up = LinkNotice::Up { peer, replaced };
                        self.protocols.call(i, |p| p.handle_link(now, &cx, up));
                    }
                }
            }
            Notice::LinkDown { node, reason } => {
                for i in 0..COUNT {
                    let down = LinkNotice::Down {
                        node,
                        reason: &reason,
                    };
                    self.protocols.call(i, |p| p.handle_link(now, &cx, down));
                }
            }
            Notice::Room { node, family } => self.room(now, node, family),
        }
    }

    /// A bulk frame of `family` to `node` left: the connection's bulk slot is free. Every
    /// protocol may be waiting for it (families share a connection), so each is told, the
    /// others first, in turn from the one after `family` (so they take turns). Each one's
    /// frames are handed to the session before the next is told, so that one sees the room
    /// left: a bulk frame offered with none is refused and lost.
    fn room(&mut self, now: Instant, node: NodeId, family: Family) {
        let after = FAMILIES
            .iter()
            .position(|f| *f == family)
            .map_or(0, |i| i + 1);
        for k in 0..COUNT {
            let i = (after + k) % COUNT;
            let cx = Context {
                session: &self.session,
            };
            let room = LinkNotice::Room { node };
            self.protocols.call(i, |p| p.handle_link(now, &cx, room));
            while let Some(out) = self.protocols.get_mut(i).poll_output() {
                self.carry(now, i, out);
            }
        }
    }

    /// One protocol output, carried out.
    fn carry(&mut self, now: Instant, index: usize, out: ProtocolOutput<crate::io::Event>) {
        match out {
            ProtocolOutput::Send { to, message, class } => {
                let family = FAMILIES[index];
                self.session.send(now, family, to, &message, class);
            }
            ProtocolOutput::Event(e) => self.session.push_output(Output::Event(e)),
            ProtocolOutput::Request { token, request } => {
                self.request(Requester::Protocol(index, token), request);
            }
            ProtocolOutput::Learned { node, addr } => self.session.learn(now, node, &addr),
            ProtocolOutput::Forget { node } => self.session.forget(&node),
            ProtocolOutput::Command(command) => {
                let cx = Context {
                    session: &self.session,
                };
                // A refusal (a folder added again after a restart, say) changes nothing.
                let _ = self.protocols.command_from(now, &cx, index, command);
            }
            ProtocolOutput::ChordAnswer {
                to,
                request,
                result,
            } => {
                let cx = Context {
                    session: &self.session,
                };
                self.protocols.chord_answer(now, &cx, to, request, result);
            }
            ProtocolOutput::Dial { node, addr } => self.session.dial_named(now, node, addr),
        }
    }
}

/// Requests to the host a node may have outstanding; a protocol keeps its own well below.
const REQUESTS_OUTSTANDING_MAX: usize = 4096;

/// The node's RNG seed: BLAKE3 of the secret key, the incarnation and `Config::rng_seed`, so
/// nonces are unpredictable to anyone without the key, differ on every run (the incarnation
/// grows), and are still a pure function of the config (the simulator replays them). The
/// session and each protocol draw their own stream from it, by name.
fn rng_seed(config: &Config) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"weft node rng v1\0");
    h.update(&config.secret_key);
    h.update(&config.incarnation.to_le_bytes());
    h.update(&config.rng_seed.to_le_bytes());
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    /// A driver may run a node on any thread (tokio's multi-threaded runtime moves tasks).
    #[test]
    fn a_node_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<super::Node>();
    }
}
