//! The simulated world: real nodes, virtual time, in-memory byte streams and injected faults.
//!
//! One event queue ordered by (time, insertion sequence) drives everything; the clock jumps to
//! the next event, and each node's `poll_timeout()` is an event. Every random choice comes from
//! a child of the root seed, so one seed gives one byte-identical run.
//!
//! [`World`]'s methods are kept by concept: `nodes.rs` (each node's driver, its disk, crashes
//! and restarts), `streams.rs` (the byte streams between nodes), `strikes.rs` (faults and the
//! heal). This module holds the state, the event queue's loop and what scenarios read.

mod nodes;
mod streams;
mod strikes;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;
use weft_engine::chord::{ChordError, ChordResult};
use weft_engine::protocol::{key_position, NodeId, CHORD_REPLICAS};
#[cfg(test)]
use weft_engine::HostResult;
use weft_engine::{Command, Config, ConnId, HostRequest, Input, Instant, Node, Output, RequestId};

use crate::disk::Disk;
use crate::durable::Durability;
use crate::faults::FaultConfig;
use crate::links::LinkSetup;
use crate::prefetch::prefetch;
use crate::queue::EventQueue;
use crate::rng::{child_seed, SimRng};
use crate::trace::Trace;
use crate::tracker::{MeshTracker, Violation};

/// Nanoseconds per millisecond.
pub const MS: u64 = 1_000_000;

/// How often each node's driver checks its intended links, invariants and wall clock.
const MAINTAIN_INTERVAL: u64 = 1_000 * MS;

/// How long the simulated disk takes to carry out a host request (`Output::Request`): a load
/// takes this long; a store this long plus a seeded delay of up to [`STORE_DELAY_MAX`].
pub const DISK_LATENCY: u64 = MS;

/// The longest extra delay of a store: a crash before it completes loses it (the blob stored
/// before stays), as a real disk loses what was not yet flushed.
pub const STORE_DELAY_MAX: u64 = 50 * MS;

/// The phase a run is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Faults strike (if any are configured).
    Safety,
    /// Faults healed; everything must converge.
    Liveness,
}

/// What may happen at a point in time.
#[derive(Debug)]
enum Ev {
    /// Bytes arrive at `links[link]`'s end `1 - side`, sent from end `side`.
    Deliver { link: u32, side: u8, bytes: Bytes },
    /// A node's `poll_timeout()` deadline (stale if the node has since moved it).
    Timer { node: u32, at: u64 },
    /// `node`'s driver accepts a connection (held while the node is paused).
    Accept { node: u32, conn: ConnId, from: u32 },
    /// A dial from `node` (its `conn`) to `target` completes or fails.
    Dialed {
        node: u32,
        conn: ConnId,
        target: u32,
        incarnations: (u64, u64),
    },
    /// The remote end of a link learns it was closed or reset.
    RemoteClosed { link: u32, side: u8 },
    /// `node`'s driver reports its connection `conn` closed: a reset that struck while the
    /// node was paused, held until it resumes (its link end closed at once, so nothing in
    /// flight arrives).
    ConnClosed {
        node: u32,
        conn: ConnId,
        incarnation: u64,
    },
    /// The application on `node` broadcasts.
    Broadcast { node: u32 },
    /// The application on `node` issues a command (dropped if the node is down then). Boxed:
    /// a command is large and rare, and every queued event is as large as the largest.
    Command { node: u32, command: Box<Command> },
    /// The driver's periodic housekeeping on `node`.
    Maintain { node: u32 },
    /// The simulated disk finishes a host request of `node` (boxed, as a command is).
    Disk { node: u32, job: Box<DiskJob> },
    /// A fault process strikes.
    Fault(FaultKind),
    /// A fault's effect ends.
    Recover(Recovery),
}

/// A host request on its way through a node's disk.
#[derive(Debug)]
struct DiskJob {
    /// The incarnation that asked: a crash drops its requests still in flight.
    incarnation: u64,
    id: RequestId,
    request: HostRequest,
}

/// The fault processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A random open link resets.
    Reset,
    /// A random link direction is held.
    Clog,
    /// The network splits in two.
    Partition,
    /// A random live node crashes.
    Crash,
    /// A random live node pauses.
    Pause,
    /// A random node reads slowly.
    SlowReader,
}

#[derive(Debug, Clone, Copy)]
enum Recovery {
    Partition,
    Restart { node: u32 },
    Resume { node: u32 },
}

/// One direction of a link, with the end it delivers to: everything a transmit or a delivery
/// on it reads, in one cache line.
#[derive(Debug, Clone)]
#[repr(align(64))]
struct Direction {
    /// The receiving end (see [`End`]).
    to_node: u32,
    to_conn: ConnId,
    to_incarnation: u64,
    to_open: bool,
    /// Whether the sending end is open (a copy of the other direction's `to_open`).
    from_open: bool,
    last_arrival: u64,
    busy_until: u64,
    buffered_bytes: usize,
    clogged_until: u64,
    writable_pending: bool,
    /// Bytes the sender's engine handed out on this direction since it was last told
    /// `Writable`: the engine's `ConnStats::in_flight_bytes`, mirrored (it grows by each
    /// transmitted frame's length and restarts at 0 with each `Writable` or connection).
    in_flight_bytes: usize,
}

/// One end of a link.
#[derive(Debug, Clone, Copy)]
struct End {
    node: u32,
    conn: ConnId,
    incarnation: u64,
    open: bool,
}

/// A simulated TCP connection: a direction each way (`dirs[k]` carries bytes from end `k` to
/// end `1 - k`, and holds end `1 - k`).
#[derive(Debug)]
struct Link {
    dirs: [Direction; 2],
}

impl Link {
    /// A link between `ends`, both open, nothing sent yet.
    fn new(ends: [End; 2]) -> Link {
        let direction = |from: End, to: End| Direction {
            to_node: to.node,
            to_conn: to.conn,
            to_incarnation: to.incarnation,
            to_open: to.open,
            from_open: from.open,
            last_arrival: 0,
            busy_until: 0,
            buffered_bytes: 0,
            clogged_until: 0,
            writable_pending: false,
            in_flight_bytes: 0,
        };
        Link {
            dirs: [direction(ends[0], ends[1]), direction(ends[1], ends[0])],
        }
    }

    /// End `side`.
    fn end(&self, side: u8) -> End {
        let d = &self.dirs[1 - side as usize];
        End {
            node: d.to_node,
            conn: d.to_conn,
            incarnation: d.to_incarnation,
            open: d.to_open,
        }
    }

    /// Whether end `side` is open.
    fn is_open(&self, side: u8) -> bool {
        self.dirs[side as usize].from_open
    }

    /// Closes end `side`.
    fn close_end(&mut self, side: u8) {
        self.dirs[side as usize].from_open = false;
        self.dirs[1 - side as usize].to_open = false;
    }
}

/// An output of a node, taken from it but not yet carried out.
struct Pending {
    out: Output,
    /// For a transmit on a connection with a link: the link and the sending end's side.
    link: Option<(u32, u8)>,
}

/// A partition in force.
#[derive(Debug, Clone)]
struct Partition {
    /// Which side each node is on.
    side_a: Vec<bool>,
    /// Whether traffic from side B to side A is blocked too.
    symmetric: bool,
    until: u64,
}

/// The part of one simulated machine that every reception touches: one cache line.
#[repr(align(64))]
struct SimNode {
    /// Boxed, so this part stays one cache line.
    node: Option<Box<Node>>,
    incarnation: u64,
    timer_at: Option<u64>,
    /// Connections with a link. Few (a node's links), so searched linearly; unordered.
    conns: Vec<ConnLink>,
    paused: bool,
}

/// A connection of a node and the end of a link it is.
#[derive(Debug, Clone, Copy)]
struct ConnLink {
    conn: ConnId,
    link: u32,
    side: u8,
}

impl SimNode {
    /// The link and side of connection `conn`, if it has a link.
    fn conn(&self, conn: ConnId) -> Option<(u32, u8)> {
        conn_link(&self.conns, conn)
    }

    /// Records that `conn` is end `side` of `link`.
    fn insert_conn(&mut self, conn: ConnId, link: u32, side: u8) {
        let entry = ConnLink { conn, link, side };
        match self.conns.iter_mut().find(|c| c.conn == conn) {
            Some(c) => *c = entry,
            None => self.conns.push(entry),
        }
    }

    /// Forgets connection `conn`'s link, returning it.
    fn remove_conn(&mut self, conn: ConnId) -> Option<(u32, u8)> {
        let k = self.conns.iter().position(|c| c.conn == conn)?;
        let c = self.conns.swap_remove(k);
        Some((c.link, c.side))
    }
}

/// The link and side of connection `conn` among `conns`.
fn conn_link(conns: &[ConnLink], conn: ConnId) -> Option<(u32, u8)> {
    conns
        .iter()
        .find(|c| c.conn == conn)
        .map(|c| (c.link, c.side))
}

/// The rest of a simulated machine: touched by dials, faults and housekeeping.
struct SimNodeCold {
    id: NodeId,
    config: Box<Config>,
    /// Events held while the node is paused, in order.
    deferred: VecDeque<Ev>,
    slow_until: u64,
    next_inbound: u64,
    dialing: BTreeMap<ConnId, u32>,
    wall_offset_ms: i64,
    drift_ppm: i64,
    /// Broadcasts originated in the current incarnation (mirrors the engine's sequence).
    sent: u64,
    neighbours: Vec<u32>,
    /// The node's disk. Unlike the engine's memory, it survives a crash and a restart.
    disk: Disk,
    /// When the disk finishes the last request handed to it: it carries requests out in
    /// order.
    disk_busy_until: u64,
}

/// Counters the world keeps for reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorldStats {
    /// Events processed.
    pub events: u64,
    /// BROADCAST frames the nodes handed out (node counters, crashed incarnations included;
    /// set by [`World::finish_stats`], read [`World::broadcast_transmissions`] before).
    pub broadcast_transmissions: u64,
    /// BROADCAST frames received (decoded by a node).
    pub frame_receptions: u64,
    /// Repair frames the nodes handed out (MESH_DIGEST, MESH_WANT, MESH_REPAIR; node counters,
    /// crashed incarnations included; set by [`World::finish_stats`], read
    /// [`World::repair_messages`] before).
    pub repair_messages: u64,
    /// Bytes transmitted, as on the wire (under Noise: handshakes and ciphertext).
    pub bytes: u64,
    /// Duplicate BROADCAST receptions, from node counters (crashed incarnations included).
    pub duplicates: u64,
    /// Faults that struck: drawn and applied (a partition already in force, a crash the
    /// half-up rule kept off, a reset or clog with no open link: none of these count).
    pub faults: u64,
    /// Crashes.
    pub crashes: u64,
    /// Partitions that cut something (each side holds a node).
    pub partitions: u64,
    /// Pauses.
    pub pauses: u64,
    /// Broadcasts first obtained through MESH_REPAIR, over the live nodes at the end.
    pub repairs_received: u64,
    /// Driver-contract errors (the engine refused an input): always a bug.
    pub driver_errors: u64,
    /// Scheduled application commands the engine refused (e.g. a release without a lease).
    pub command_errors: u64,
    /// `TableChanged` events, over all nodes.
    pub table_changes: u64,
    /// `TableRefused` events, over all nodes.
    pub table_refusals: u64,
    /// Connections closed because the Noise layer failed (`CloseReason::Noise`), over all
    /// nodes: with wrong-secret nodes, the handshakes the network refused them.
    pub noise_closes: u64,
    /// Table anti-entropy bytes queued (node counters, crashed incarnations included).
    pub table_catchup_bytes: u64,
    /// What full resends would have cost instead (node counters, likewise).
    pub table_full_resend_bytes: u64,
    /// HEREIS frames changed on the wire ([`World::tamper_blocks_from`]).
    pub blocks_tampered: u64,
}

/// Everything a world is built from.
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// The root seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: u32,
    /// Intended links (low, high).
    pub edges: Vec<(u32, u32)>,
    /// Faults.
    pub faults: FaultConfig,
    /// Whether nodes run discovery.
    pub discovery: bool,
    /// Whether nodes are Chord ring members too (SPEC.md §20): chord-only connections must
    /// leave the mesh exactly as it is.
    pub chord: bool,
    /// Deliberately record one delivery twice (tests the checker and the replay line).
    pub sabotage: bool,
    /// How the links are protected. Wrong-secret nodes come after the `nodes` of the network
    /// (indices `nodes..`), each with intended links to two of them (or one, in a network of
    /// one) that both ends keep dialing; nothing of the network is owed to them.
    pub links: LinkSetup,
}

/// The simulated world.
pub struct World {
    /// Virtual time, ns.
    pub now: u64,
    /// The phase.
    pub phase: Phase,
    /// Counters.
    pub stats: WorldStats,
    /// The mesh checker.
    pub tracker: MeshTracker,
    /// The run's digest.
    pub trace: Trace,
    config: WorldConfig,
    nodes: Vec<SimNode>,
    /// `nodes[i]`'s rarely touched part is `cold[i]`.
    cold: Vec<SimNodeCold>,
    /// Nodes paused now: while none is, no event needs its node looked up before dispatch.
    paused_nodes: u32,
    /// The latest `slow_until` of any node (0 after a heal): while it is past, no transmit
    /// needs its receiver's.
    slow_until_max: u64,
    /// Looked up, never iterated: a hash map is fine for determinism here.
    ids: HashMap<NodeId, u32, BuildHasherDefault<IdHasher>>,
    links: Vec<Link>,
    queue: EventQueue<Ev>,
    /// Outputs taken from the node being drained, not yet carried out (see `drain`).
    outbox: VecDeque<Pending>,
    link_rng: SimRng,
    fault_rng: SimRng,
    app_rng: SimRng,
    /// Draws how long each store takes.
    disk_rng: SimRng,
    /// What nodes acknowledged as committed, checked against what they hold after a crash.
    pub durable: Durability,
    partition: Option<Partition>,
    safety_end: u64,
    window_half: usize,
    violation: Option<Violation>,
    sabotaged: bool,
    /// Give a sender `Writable` whenever everything it sent on a link has arrived, not only
    /// at half a window (bulk data, the drops scenario, needs it; the other scenarios' traces
    /// stay as they were).
    pub writable_on_drain: bool,
    /// A node whose blocks are changed on the wire (a lying peer, [`crate::tamper::blocks`]):
    /// plaintext links only.
    pub tamper_blocks_from: Option<u32>,
    /// Every drops event, by node, in order.
    pub drop_events: Vec<(u32, weft_engine::drops::DropsEvent)>,
    /// The result of every `Event::Chord`, by (node, request id); the first one kept.
    chord_results: BTreeMap<(u32, u64), Result<ChordResult, ChordError>>,
    /// Crashed incarnations' share of the flood counters (see [`World::broadcast_transmissions`]).
    crashed: FloodCounters,
    /// Requests fed in by the unit tests (`inject_request`) and what came of them: their
    /// completions are recorded here instead of handed to a node that never asked.
    #[cfg(test)]
    synthetic: BTreeMap<(u32, RequestId), Option<HostResult>>,
}

/// Frames of the mesh handed out, summed over node counters.
#[derive(Debug, Clone, Copy, Default)]
struct FloodCounters {
    /// BROADCAST frames.
    broadcasts: u64,
    /// MESH_DIGEST, MESH_WANT and MESH_REPAIR frames.
    repairs: u64,
}

impl FloodCounters {
    /// Adds `node`'s counters.
    fn add(&mut self, node: &Node) {
        let traffic = node.metrics().session.traffic;
        self.broadcasts += traffic.mesh.frames_out;
        self.repairs += traffic.repair.frames_out;
    }
}

impl World {
    /// Builds the world at time 0: every node created, every intended link about to be dialed.
    pub fn new(config: WorldConfig) -> World {
        World::with_node_config(config, |_| {})
    }

    /// [`World::new`], with `edit` applied to each node's configuration before the node is
    /// made (the benches use it to switch broadcast signatures).
    pub fn with_node_config(config: WorldConfig, mut edit: impl FnMut(&mut Config)) -> World {
        let seed = config.seed;
        let wrong = config.links.wrong_secret_nodes;
        let n = config.nodes + wrong;
        let mut neighbours = vec![Vec::new(); n as usize];
        for &(a, b) in &config.edges {
            neighbours[a as usize].push(b);
            neighbours[b as usize].push(a);
        }
        // Each wrong-secret node's intended links: two nodes of the network, drawn from the
        // seed (a stream of their own: a run without them draws the same as before).
        let mut outsider_rng = SimRng::child(seed, "wrong-secret", 0);
        for x in config.nodes..n {
            let mut picked = Vec::new();
            while picked.len() < 2.min(config.nodes as usize) {
                let j = outsider_rng.below(u64::from(config.nodes)) as u32;
                if !picked.contains(&j) {
                    picked.push(j);
                }
            }
            for j in picked {
                neighbours[x as usize].push(j);
                neighbours[j as usize].push(x);
            }
        }
        // Every key derived once (see `links`); a secret that cannot be used stops the run at
        // its start, with the open key meanwhile.
        let (keys, key_error) = match config.links.keys() {
            Ok(k) => (k, None),
            Err(e) => {
                let open = weft_engine::NetworkKey::OPEN;
                let keys = crate::links::Keys {
                    network: open,
                    wrong: open,
                };
                (
                    keys,
                    Some(format!("the network secret cannot be used: {e}")),
                )
            }
        };
        let mut clock_rng = SimRng::child(seed, "clock", 0);
        let mut nodes = Vec::with_capacity(n as usize);
        let mut cold = Vec::with_capacity(n as usize);
        let mut ids = HashMap::with_capacity_and_hasher(n as usize, Default::default());
        for (i, neighbours) in neighbours.into_iter().enumerate() {
            let mut c = Config::from_seed("sim", child_seed(seed, "node", i as u64));
            c.listen_addr = Some(addr(i as u32));
            c.discovery = config.discovery;
            c.link_encryption = config.links.encryption();
            c.network_key = if (i as u32) < config.nodes {
                keys.network
            } else {
                keys.wrong
            };
            if config.chord {
                c.chord = Some(weft_engine::chord::ChordConfig::default());
            }
            // A hub (a star's centre) dials or accepts more links than the defaults allow.
            c.limits.outbound_max = c.limits.outbound_max.max(neighbours.len());
            c.limits.inbound_max = c.limits.inbound_max.max(neighbours.len());
            edit(&mut c);
            let node = Box::new(Node::new(c.clone()));
            let id = node.node_id();
            ids.insert(id, i as u32);
            nodes.push(SimNode {
                node: Some(node),
                incarnation: c.incarnation,
                timer_at: None,
                conns: Vec::new(),
                paused: false,
            });
            cold.push(SimNodeCold {
                id,
                config: Box::new(c),
                deferred: VecDeque::new(),
                slow_until: 0,
                next_inbound: 0,
                dialing: BTreeMap::new(),
                wall_offset_ms: clock_rng.between(0, 20_000) as i64 - 10_000,
                drift_ppm: clock_rng.between(0, 200) as i64 - 100,
                sent: 0,
                neighbours,
                disk: Disk::default(),
                disk_busy_until: 0,
            });
        }
        let window_half = Config::from_seed("sim", 0).limits.transmit_window_bytes / 2;
        let mut world = World {
            now: 0,
            phase: Phase::Safety,
            stats: WorldStats::default(),
            tracker: MeshTracker::new(n),
            trace: Trace::default(),
            link_rng: SimRng::child(seed, "links", 0),
            fault_rng: SimRng::child(seed, "faults-run", 0),
            app_rng: SimRng::child(seed, "app", 0),
            disk_rng: SimRng::child(seed, "disk", 0),
            durable: Durability::default(),
            config,
            nodes,
            cold,
            paused_nodes: 0,
            slow_until_max: 0,
            ids,
            links: Vec::new(),
            queue: EventQueue::default(),
            outbox: VecDeque::new(),
            partition: None,
            safety_end: 0,
            window_half,
            violation: None,
            sabotaged: false,
            chord_results: BTreeMap::new(),
            drop_events: Vec::new(),
            writable_on_drain: false,
            tamper_blocks_from: None,
            crashed: FloodCounters::default(),
            #[cfg(test)]
            synthetic: BTreeMap::new(),
        };
        if let Some(e) = key_error {
            world.fail(e);
        }
        for i in 0..n {
            world.start_node(i);
            let stagger = world.app_rng.below(MAINTAIN_INTERVAL);
            world.push(stagger, Ev::Maintain { node: i });
        }
        world
    }

    /// Whether node `i` is a wrong-secret node (one of those after the network's nodes).
    pub fn is_wrong_secret_node(&self, i: u32) -> bool {
        i >= self.config.nodes
    }

    /// Node `i`'s id.
    pub fn node_id(&self, i: u32) -> NodeId {
        self.cold[i as usize].id
    }

    /// Node `i`'s engine, if it is up.
    pub fn node(&self, i: u32) -> Option<&Node> {
        self.nodes[i as usize].node.as_deref()
    }

    /// Intended links.
    pub fn edges(&self) -> &[(u32, u32)] {
        &self.config.edges
    }

    /// Whether every intended link is established at both ends.
    pub fn all_linked(&self) -> bool {
        self.config
            .edges
            .iter()
            .all(|&(a, b)| self.linked(a, b) && self.linked(b, a))
    }

    fn linked(&self, a: u32, b: u32) -> bool {
        let id = self.cold[b as usize].id;
        self.nodes[a as usize]
            .node
            .as_ref()
            .is_some_and(|n| n.links().any(|(p, _)| p == id))
    }

    /// The first violation, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Node `node`'s folder `folder` on its disk (made empty if never named): the scenarios
    /// write into it as a user would, then hand the scanner's reports to the node.
    pub fn folder_mut(
        &mut self,
        node: u32,
        folder: weft_engine::protocol::FolderId,
    ) -> &mut crate::folder::Folder {
        self.cold[node as usize].disk.folder(folder)
    }

    /// Node `node`'s folder `folder`, if its disk holds it.
    pub fn folder(
        &self,
        node: u32,
        folder: &weft_engine::protocol::FolderId,
    ) -> Option<&crate::folder::Folder> {
        self.cold[node as usize].disk.get_folder(folder)
    }

    /// Node `node`'s configuration.
    pub fn config_of(&self, node: u32) -> &Config {
        &self.cold[node as usize].config
    }

    /// Hands `to` `bytes` as if `from` had sent them on their newest open link, after
    /// everything `from` sent on it before (a forging peer: plaintext links only, or the
    /// bytes are noise to the receiver). Whether there was such a link.
    pub fn inject(&mut self, from: u32, to: u32, bytes: Bytes) -> bool {
        let found = self.links.iter().enumerate().rev().find_map(|(id, l)| {
            (0..2u8).find_map(|side| {
                let d = &l.dirs[side as usize];
                let sender = l.end(side);
                (d.to_node == to && sender.node == from && d.to_open && d.from_open)
                    .then_some((id as u32, side))
            })
        });
        let Some((link, side)) = found else {
            return false;
        };
        let d = &mut self.links[link as usize].dirs[side as usize];
        let at = self.now.max(d.last_arrival);
        d.last_arrival = at;
        self.push(at, Ev::Deliver { link, side, bytes });
        true
    }

    /// Schedules an application command on `node` at `at`.
    pub fn schedule_command(&mut self, at: u64, node: u32, command: Command) {
        self.push(
            at,
            Ev::Command {
                node,
                command: Box::new(command),
            },
        );
    }

    /// Schedules a broadcast by `node` at `at`.
    pub fn schedule_broadcast(&mut self, at: u64, node: u32) {
        self.push(at, Ev::Broadcast { node });
    }

    /// Runs events until time `until` (inclusive) or a violation.
    pub fn run_until(&mut self, until: u64) {
        while self.violation.is_none() {
            match self.queue.next_time() {
                Some(at) if at <= until => {}
                _ => break,
            }
            // Peeked just above.
            let Some((at, ev)) = self.queue.pop() else {
                break;
            };
            self.now = at;
            if self.phase == Phase::Safety && self.safety_end > 0 && self.now >= self.safety_end {
                self.heal();
            }
            self.stats.events += 1;
            self.prefetch_ahead();
            self.dispatch(ev);
        }
        if self.violation.is_none() {
            self.now = self.now.max(until);
        }
    }

    /// Asks for the simulator's own memory the next deliveries will touch, a stage per event
    /// ahead, the second stage reading only what the first asked for one event earlier: the
    /// fourth event's link direction, the third's receiving node. The engine's memory is its
    /// own business: nothing of a `Node` is asked for.
    fn prefetch_ahead(&self) {
        let deliver = |n| match self.queue.peek_at_front_time(n) {
            Some(Ev::Deliver { link, side, .. }) => self
                .links
                .get(*link as usize)
                .map(|l| &l.dirs[usize::from(*side & 1)]),
            _ => None,
        };
        if let Some(d) = deliver(3) {
            prefetch(d);
        }
        if let Some(d) = deliver(2) {
            if let Some(n) = self.nodes.get(d.to_node as usize) {
                prefetch(n);
            }
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.queue.push(at, ev);
    }

    fn dispatch(&mut self, ev: Ev) {
        // A paused node processes nothing: its events wait, in order, for it to resume.
        if self.paused_nodes > 0 {
            if let Some(node) = ev_node(&ev, &self.links) {
                if self.nodes[node as usize].paused
                    && !matches!(ev, Ev::Timer { .. } | Ev::Maintain { .. })
                {
                    self.cold[node as usize].deferred.push_back(ev);
                    return;
                }
            }
        }
        match ev {
            Ev::Deliver { link, side, bytes } => self.deliver(link, side, bytes),
            Ev::Timer { node, at } => {
                let sn = &mut self.nodes[node as usize];
                if sn.timer_at != Some(at) || sn.paused {
                    return;
                }
                sn.timer_at = None;
                if let Some(n) = sn.node.as_mut() {
                    n.handle_timeout(Instant(self.now));
                }
                self.drain(node);
            }
            Ev::Dialed {
                node,
                conn,
                target,
                incarnations,
            } => self.dialed(node, conn, target, incarnations),
            Ev::RemoteClosed { link, side } => self.remote_closed(link, side),
            Ev::ConnClosed {
                node,
                conn,
                incarnation,
            } => {
                if self.nodes[node as usize].incarnation == incarnation {
                    self.input(node, Input::Closed { conn });
                }
            }
            Ev::Accept { node, conn, from } => {
                let live = self.nodes[node as usize].conn(conn).is_some();
                if live {
                    self.input(
                        node,
                        Input::Accepted {
                            conn,
                            addr: addr(from),
                        },
                    );
                }
            }
            Ev::Broadcast { node } => self.broadcast(node),
            Ev::Command { node, command } => self.command(node, *command),
            Ev::Maintain { node } => {
                self.maintain(node);
                self.push(self.now + MAINTAIN_INTERVAL, Ev::Maintain { node });
            }
            Ev::Disk { node, job } => self.disk(node, *job),
            Ev::Fault(kind) => self.fault(kind),
            Ev::Recover(r) => match r {
                Recovery::Partition => {
                    if self.partition.as_ref().is_some_and(|p| p.until <= self.now) {
                        self.partition = None;
                    }
                }
                Recovery::Restart { node } => self.restart(node),
                Recovery::Resume { node } => self.resume(node),
            },
        }
    }

    /// Records a violation (the first one stops the run).
    pub fn fail(&mut self, what: String) {
        self.violation
            .get_or_insert(Violation { at: self.now, what });
    }

    /// The network's live nodes (up and not crashed), by index: wrong-secret nodes are not
    /// of the network, and nothing is owed to them.
    pub fn live(&self) -> Vec<bool> {
        self.members().iter().map(|s| s.node.is_some()).collect()
    }

    /// Each of the network's nodes' current incarnation.
    pub fn incarnations(&self) -> Vec<u64> {
        self.members().iter().map(|s| s.incarnation).collect()
    }

    /// The network's nodes: all but the wrong-secret ones.
    fn members(&self) -> &[SimNode] {
        &self.nodes[..self.config.nodes as usize]
    }

    /// Sums node counters into the stats (call once, at the end).
    pub fn finish_stats(&mut self) {
        let flood = self.flood_counters();
        self.stats.broadcast_transmissions = flood.broadcasts;
        self.stats.repair_messages = flood.repairs;
        for sn in &self.nodes {
            if let Some(n) = &sn.node {
                let m = n.metrics();
                self.stats.duplicates += m.mesh.broadcast_duplicates;
                self.stats.repairs_received += m.mesh.repairs_received;
                self.stats.frame_receptions += m.mesh.broadcasts_received;
                self.stats.table_catchup_bytes += m.table.catchup_bytes;
                self.stats.table_full_resend_bytes += m.table.full_resend_bytes;
            }
        }
    }

    /// The end-of-run checks of the network keys (the check that nodes of different keys
    /// never link runs at every `PeerUp`): with wrong-secret nodes, some handshake between
    /// keys was refused (else they were never tried, and that check saw nothing); without
    /// them, no connection failed in the Noise layer (one key, no byte corrupted: a failure
    /// is a bug).
    pub fn check_keys(&mut self) {
        let (wrong, closes) = (
            self.config.links.wrong_secret_nodes,
            self.stats.noise_closes,
        );
        if self.config.links.plaintext {
            return;
        }
        if wrong > 0 && closes == 0 {
            self.fail(format!(
                "no handshake of the {wrong} wrong-secret nodes was refused: they were never tried"
            ));
        }
        if wrong == 0 && closes > 0 {
            self.fail(format!(
                "{closes} connections failed in the Noise layer between nodes of one network key"
            ));
        }
    }

    /// BROADCAST frames handed out so far, over every node and every incarnation (crashed
    /// ones included): the engines' own counters, never the bytes on a link.
    pub fn broadcast_transmissions(&self) -> u64 {
        self.flood_counters().broadcasts
    }

    /// Repair frames (MESH_DIGEST, MESH_WANT, MESH_REPAIR) handed out so far, likewise.
    pub fn repair_messages(&self) -> u64 {
        self.flood_counters().repairs
    }

    /// The crashed incarnations' share plus every live node's counters now.
    fn flood_counters(&self) -> FloodCounters {
        let mut sum = self.crashed;
        for n in self.nodes.iter().filter_map(|sn| sn.node.as_deref()) {
            sum.add(n);
        }
        sum
    }

    /// The result of Chord request `request` issued on node `i` (a scheduled
    /// `Command::Chord`), once its `Event::Chord` has come out; kept across crashes.
    pub fn chord_result(&self, i: u32, request: u64) -> Option<&Result<ChordResult, ChordError>> {
        self.chord_results.get(&(i, request))
    }

    /// The network's live nodes whose Chord store holds `key` under any of its
    /// `CHORD_REPLICAS` positions (the simulator's global view: a crashed node's memory is
    /// gone), by index.
    pub fn chord_holders(&self, key: &[u8]) -> Vec<u32> {
        (0..self.config.nodes)
            .filter(|&i| {
                self.node(i).and_then(|n| n.chord()).is_some_and(|c| {
                    (0..CHORD_REPLICAS as u8).any(|r| c.holds(key_position(key, r), key))
                })
            })
            .collect()
    }

    /// Events still queued.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// Draws from the application's stream (scenario choices).
    pub fn app_rng(&mut self) -> &mut SimRng {
        &mut self.app_rng
    }
}

/// Hashes a node id (itself a BLAKE3 digest, so uniform) to its first eight bytes: a lookup
/// by id costs a load instead of SipHash over 32 bytes.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // The length prefix arrives through `write_usize`; the id's bytes through here.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 ^= n as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The address of node `i`.
pub fn addr(i: u32) -> String {
    format!("n{i}")
}

/// The node an event is for, if it is for one node (so a paused node can hold it).
fn ev_node(ev: &Ev, links: &[Link]) -> Option<u32> {
    match ev {
        Ev::Deliver { link, side, .. } => Some(links[*link as usize].dirs[*side as usize].to_node),
        Ev::RemoteClosed { link, side } => links.get(*link as usize).map(|l| l.end(*side).node),
        Ev::Timer { node, .. } | Ev::Maintain { node } | Ev::Broadcast { node } => Some(*node),
        Ev::ConnClosed { node, .. } => Some(*node),
        Ev::Command { node, .. } | Ev::Disk { node, .. } => Some(*node),
        Ev::Dialed { node, .. } | Ev::Accept { node, .. } => Some(*node),
        Ev::Fault(_) | Ev::Recover(_) => None,
    }
}

#[cfg(test)]
mod tests;
