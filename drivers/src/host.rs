//! The part of a driver that does not depend on its I/O library: the node, its clocks, the
//! application's requests and subscribers, and the shutdown sequence.

use std::sync::mpsc::{Sender, SyncSender, TrySendError};

use weft_engine::chord::ChordResult;

use weft_engine::{
    Command, Config, ConnId, Duration, Event, Input, InputError, Instant, Node, Output,
};

use crate::clock::{self, Clock, WALL_CLOCK_PERIOD};
use crate::handle::{Delivery, Request};
use crate::handle::{HandleError, TableOp};
use crate::report::{hex_id, ConnReport, HostReport, NodeCounters, StatsReport, TableEntryReport};

/// How long a shutdown may take to say BYE and flush before the loop ends anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why a driver's event loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `Handle::shutdown` was called; peers got BYE.
    Requested,
    /// The first SIGINT/SIGTERM; peers got BYE.
    Signalled,
    /// A second signal during the shutdown: the loop ended at once.
    Interrupted,
}

impl Exit {
    /// The process exit code for it: 0 when asked, 130 after a signal.
    pub fn code(self) -> u8 {
        match self {
            Exit::Requested => 0,
            Exit::Signalled | Exit::Interrupted => 130,
        }
    }
}

/// A shutdown under way.
#[derive(Debug, Clone, Copy)]
struct Stopping {
    exit: Exit,
    by: Instant,
}

/// The node and what surrounds it in every driver.
pub(crate) struct Host {
    pub(crate) node: Node,
    pub(crate) clock: Clock,
    driver: &'static str,
    subscribers: Vec<SyncSender<Delivery>>,
    listener_drops: u64,
    next_wall_clock: Instant,
    stopping: Option<Stopping>,
    /// Chord requests waiting for their event, by request id.
    chord_waiting: std::collections::BTreeMap<u64, Sender<Result<ChordResult, String>>>,
    last_chord_request: u64,
}

impl Host {
    pub(crate) fn new(config: Config, driver: &'static str) -> Host {
        Host {
            node: Node::new(config),
            clock: Clock::start(),
            driver,
            subscribers: Vec::new(),
            listener_drops: 0,
            next_wall_clock: Instant::ZERO,
            stopping: None,
            chord_waiting: std::collections::BTreeMap::new(),
            last_chord_request: 0,
        }
    }

    /// Gives the node the wall clock and dials the configured peers. The caller drains.
    pub(crate) fn start(&mut self, peers: &[String]) {
        self.on_timer();
        for addr in peers {
            let connect = Command::Connect { addr: addr.clone() };
            if let Err(e) = self.input(Input::Command(connect)) {
                tracing::warn!("not dialing {addr}: {e}");
            }
        }
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Feeds an input at the current time.
    pub(crate) fn input(&mut self, input: Input) -> Result<(), InputError> {
        let now = self.clock.now();
        self.node.handle_input(now, input)
    }

    /// Feeds an input the driver produced; a refusal is a driver bug, logged, never fatal.
    pub(crate) fn feed(&mut self, input: Input) {
        if let Err(e) = self.input(input) {
            tracing::error!("engine refused a driver input: {e}");
        }
    }

    /// Runs due timers, and hands the node the wall clock when it is due.
    pub(crate) fn on_timer(&mut self) {
        let now = self.clock.now();
        self.node.handle_timeout(now);
        if now >= self.next_wall_clock {
            self.next_wall_clock = now + WALL_CLOCK_PERIOD;
            if let Some(unix_ms) = clock::unix_ms() {
                self.feed(Input::WallClock { unix_ms });
            }
        }
    }

    /// When the loop must call [`Host::on_timer`] (or end) at the latest.
    pub(crate) fn deadline(&self) -> Instant {
        let mut at = self.next_wall_clock;
        if let Some(t) = self.node.poll_timeout() {
            at = at.min(t);
        }
        if let Some(s) = &self.stopping {
            at = at.min(s.by);
        }
        at
    }

    /// Reports an event: broadcasts go to the subscribers, the rest to the log.
    pub(crate) fn on_event(&mut self, event: Event) {
        match event {
            Event::Broadcast {
                origin,
                incarnation,
                seq,
                payload,
            } => {
                tracing::debug!(
                    "broadcast {origin}/{incarnation}#{seq}: {} bytes",
                    payload.len()
                );
                let delivery = Delivery {
                    origin,
                    incarnation,
                    seq,
                    payload,
                };
                let drops = &mut self.listener_drops;
                self.subscribers
                    .retain(|s| match s.try_send(delivery.clone()) {
                        Ok(()) => true,
                        Err(TrySendError::Full(_)) => {
                            *drops += 1;
                            true
                        }
                        Err(TrySendError::Disconnected(_)) => false,
                    });
            }
            Event::PeerUp {
                node,
                conn,
                incarnation,
                restarted,
            } => tracing::info!(
                "peer up {node} on {conn:?} (incarnation {incarnation}{})",
                if restarted { ", restarted" } else { "" }
            ),
            Event::PeerDown { node, reason } => tracing::info!("peer down {node}: {reason:?}"),
            Event::ConnectionClosed { conn, reason } => {
                tracing::info!("closed {conn:?}: {reason:?}")
            }
            Event::Chord(e) => {
                if let Some(reply) = self.chord_waiting.remove(&e.request) {
                    let _ = reply.send(e.result.map_err(|e| e.to_string()));
                }
            }
            other => tracing::debug!("{other:?}"),
        }
    }

    /// Acts on one application request; `unwritten` tells the driver's unwritten bytes per
    /// connection, for the stats.
    pub(crate) fn on_request(&mut self, request: Request, unwritten: &dyn Fn(ConnId) -> usize) {
        match request {
            Request::Broadcast { payload, reply } => {
                let result = self.input(Input::Command(Command::Broadcast { payload }));
                match reply {
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    None => {
                        if let Err(e) = result {
                            tracing::warn!("broadcast refused: {e}");
                        }
                    }
                }
            }
            Request::Subscribe { sink } => self.subscribers.push(sink),
            Request::Hosts { reply } => {
                let _ = reply.send(self.hosts());
            }
            Request::Stats { reply } => {
                let _ = reply.send(self.stats(unwritten));
            }
            Request::TableWrite { key, op, reply } => {
                let _ = reply.send(self.table_write(key, op));
            }
            Request::TableRead { key, reply } => {
                let table = self.node.table();
                let entries = match key {
                    Some(k) => TableEntryReport::of(table, &k).into_iter().collect(),
                    None => table
                        .iter()
                        .filter_map(|(k, _)| TableEntryReport::of(table, k))
                        .collect(),
                };
                let _ = reply.send(entries);
            }
            Request::Chord { op, reply } => {
                self.last_chord_request += 1;
                let request = self.last_chord_request;
                match self.input(Input::Command(Command::Chord { request, op })) {
                    Ok(()) => {
                        self.chord_waiting.insert(request, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Request::Shutdown => self.begin_stop(Exit::Requested),
        }
    }

    /// A table write; a write the node accepts without sending was refused by a lease.
    fn table_write(&mut self, key: Vec<u8>, op: TableOp) -> Result<(), HandleError> {
        let command = match op {
            TableOp::Set { value, lease } => Command::TableSet {
                key: key.clone(),
                value,
                lease,
            },
            TableOp::Delete => Command::TableDelete { key: key.clone() },
            TableOp::Release => Command::TableRelease { key: key.clone() },
        };
        let before = self.node.metrics().table_writes_originated;
        self.input(Input::Command(command))
            .map_err(HandleError::Refused)?;
        if self.node.metrics().table_writes_originated > before {
            return Ok(());
        }
        match self.node.table().lease(&key) {
            Some((owner, until_ms)) => Err(HandleError::Leased { owner, until_ms }),
            None => Err(HandleError::Refused(InputError::NotLeaseOwner)),
        }
    }

    /// Starts the shutdown: BYE to every peer, then the loop ends once every connection is
    /// closed or the grace period is over.
    pub(crate) fn begin_stop(&mut self, exit: Exit) {
        if self.stopping.is_some() {
            return;
        }
        tracing::info!("shutting down");
        self.stopping = Some(Stopping {
            exit,
            by: self.clock.now() + SHUTDOWN_GRACE,
        });
        self.feed(Input::Command(Command::Shutdown));
    }

    /// Whether a shutdown is under way.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// How the loop ends now, if it does: a shutdown whose connections are all closed, or
    /// whose grace period is over.
    pub(crate) fn exit_due(&self, conns_left: usize) -> Option<Exit> {
        let s = self.stopping?;
        (conns_left == 0 || self.clock.now() >= s.by).then_some(s.exit)
    }

    fn hosts(&self) -> Vec<HostReport> {
        let now = self.clock.now();
        let wall = self.node.wall_clock_ms(now);
        self.node
            .hosts()
            .into_iter()
            .map(|h| {
                let ago = now.saturating_since(h.last_seen).as_millis();
                HostReport {
                    node: hex_id(&h.node),
                    addr: h.addr,
                    direct: h.direct,
                    last_seen_ms_ago: ago,
                    last_seen_unix_ms: wall.map(|w| w.saturating_sub(ago)),
                }
            })
            .collect()
    }

    fn stats(&self, unwritten: &dyn Fn(ConnId) -> usize) -> StatsReport {
        let node = &self.node;
        let peers: std::collections::BTreeMap<ConnId, _> =
            node.links().map(|(peer, conn)| (conn, peer)).collect();
        let connections = node
            .conn_ids()
            .filter_map(|conn| {
                let stats = node.conn_stats(conn)?;
                let addr = node.conn_addr(conn).unwrap_or_default().to_owned();
                Some(ConnReport::new(
                    conn.0,
                    addr,
                    peers.get(&conn),
                    &stats,
                    unwritten(conn),
                ))
            })
            .collect();
        let config = node.config();
        StatsReport {
            node: hex_id(&node.node_id()),
            network: config.network.clone(),
            incarnation: config.incarnation,
            listen_addr: config.listen_addr.clone(),
            driver: self.driver.to_owned(),
            uptime_ms: self.clock.now().as_nanos() / 1_000_000,
            counters: NodeCounters::from(&node.metrics()),
            connections,
            listeners: self.subscribers.len() as u64,
            listener_drops: self.listener_drops,
        }
    }
}

/// Logs an output this driver does not know (the engine's enums are non-exhaustive).
pub(crate) fn log_unknown(output: &Output) {
    tracing::warn!("ignoring an output this driver does not know: {output:?}");
}
