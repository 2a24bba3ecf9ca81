//! The simulated world: real nodes, virtual time, in-memory byte streams and injected faults.
//!
//! One event queue ordered by (time, insertion sequence) drives everything; the clock jumps to
//! the next event, and each node's `poll_timeout()` is an event. Every random choice comes from
//! a child of the root seed, so one seed gives one byte-identical run.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;
use weft_engine::chord::{ChordError, ChordResult};
use weft_engine::protocol::{key_position, NodeId, CHORD_REPLICAS};
#[cfg(test)]
use weft_engine::HostResult;
use weft_engine::{
    CloseReason, Command, Config, ConnId, Event, HostRequest, Input, Instant, MeshCommand,
    MeshEvent, Node, Output, RequestId, TableCommand, TableEvent,
};

use crate::disk::Disk;
use crate::durable::Durability;
use crate::faults::{FaultConfig, Occurrence};
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
    /// Faults that struck.
    pub faults: u64,
    /// Crashes.
    pub crashes: u64,
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

    /// Starts the fault processes until `until` (ns); at `until` everything heals.
    pub fn start_faults(&mut self, until: u64) {
        self.safety_end = until;
        let f = self.config.faults.clone();
        let processes = [
            (FaultKind::Reset, f.resets),
            (FaultKind::Clog, f.clogs),
            (FaultKind::Partition, f.partitions),
            (FaultKind::Crash, f.crashes),
            (FaultKind::Pause, f.pauses),
            (FaultKind::SlowReader, f.slow_readers),
        ];
        for (kind, occurrence) in processes {
            if let Some(o) = occurrence {
                let at = self.now + self.fault_rng.exp(o.mean_interval_ms) * MS;
                self.push(at, Ev::Fault(kind));
            }
        }
    }

    /// Splits the network now until `until` (ns): nothing passes between the nodes with
    /// `side_a[i]` set and the others, either way, and no dial across succeeds.
    pub fn split(&mut self, side_a: Vec<bool>, until: u64) {
        self.partition = Some(Partition {
            side_a,
            symmetric: true,
            until,
        });
        self.push(until, Ev::Recover(Recovery::Partition));
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

    /// Ends every fault now: partitions and clogs lift, slow readers recover, paused nodes
    /// resume and crashed nodes restart. Fault processes stop.
    pub fn heal(&mut self) {
        self.phase = Phase::Liveness;
        self.partition = None;
        self.config.faults.connect_fail_probability = 0.0;
        for link in &mut self.links {
            for d in &mut link.dirs {
                d.clogged_until = 0;
            }
        }
        self.release_held_frames();
        self.slow_until_max = 0;
        for i in 0..self.nodes.len() as u32 {
            self.cold[i as usize].slow_until = 0;
            if self.nodes[i as usize].node.is_none() {
                self.restart(i);
            }
            if self.nodes[i as usize].paused {
                self.resume(i);
            }
        }
    }

    /// Frames a partition or a clog holds arrive with the heal, not at the fault's planned
    /// end: each queued delivery on a direction without a bandwidth backlog arrives at most
    /// one latency from now, each direction still in order.
    fn release_held_frames(&mut self) {
        let now = self.now;
        let mut last: BTreeMap<(u32, u8), u64> = BTreeMap::new();
        for (at, ev) in self.queue.take_all() {
            let at = match &ev {
                Ev::Deliver { link, side, .. }
                    if at > now
                        && self.links[*link as usize].dirs[*side as usize].busy_until <= now =>
                {
                    let earliest = now + self.latency();
                    let previous = last.get(&(*link, *side)).copied().unwrap_or(now);
                    let released = at.min(earliest.max(previous));
                    last.insert((*link, *side), released);
                    released
                }
                _ => at,
            };
            self.queue.push(at, ev);
        }
        for ((link, side), at) in last {
            self.links[link as usize].dirs[side as usize].last_arrival = at;
        }
    }

    // ----- the queue ------------------------------------------------------------------

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

    // ----- nodes ----------------------------------------------------------------------

    fn start_node(&mut self, i: u32) {
        let unix_ms = self.wall_clock_ms(i);
        self.input(i, Input::WallClock { unix_ms });
    }

    /// Node `i`'s calendar clock: a shared epoch, its own offset, its own drift.
    fn wall_clock_ms(&self, i: u32) -> u64 {
        let sn = &self.cold[i as usize];
        let elapsed_ms = (self.now / MS) as i64;
        let drift_ms = elapsed_ms * sn.drift_ppm / 1_000_000;
        (1_800_000_000_000i64 + sn.wall_offset_ms + elapsed_ms + drift_ms) as u64
    }

    /// Feeds node `i` an input at `now`, then drains it.
    fn input(&mut self, i: u32, input: Input) {
        let now = Instant(self.now);
        let Some(n) = self.nodes[i as usize].node.as_mut() else {
            return;
        };
        let closed = matches!(input, Input::Closed { .. });
        if let Err(e) = n.handle_input(now, input) {
            if !closed {
                self.stats.driver_errors += 1;
                self.fail(format!("node {i} refused a driver input: {e}"));
            }
        }
        self.drain(i);
    }

    /// Carries out node `i`'s outputs, then schedules its next timer.
    ///
    /// Every output is first moved to the outbox (counting each transmitted frame into its
    /// direction's `in_flight_bytes`, as the engine counted it when it emitted the frame), then
    /// the outbox is worked off in order. An output may hand node `i` an input (`Writable`,
    /// `Closed`), whose nested drain appends the new outputs behind the ones still waiting and
    /// works them all off: the order of the engine's own output queue.
    fn drain(&mut self, i: u32) {
        let SimNode { node, conns, .. } = &mut self.nodes[i as usize];
        if let Some(n) = node.as_mut() {
            while let Some(out) = n.poll_output() {
                let link = match &out {
                    Output::Transmit { conn, bytes } => {
                        conn_link(conns, *conn).map(|(link, side)| {
                            self.links[link as usize].dirs[side as usize].in_flight_bytes +=
                                bytes.len();
                            (link, side)
                        })
                    }
                    _ => None,
                };
                self.outbox.push_back(Pending { out, link });
            }
        }
        while let Some(p) = self.outbox.pop_front() {
            self.route(i, p);
        }
        let sn = &mut self.nodes[i as usize];
        let next = sn.node.as_ref().and_then(|n| n.poll_timeout());
        if let Some(t) = next {
            if sn.timer_at != Some(t.0) {
                sn.timer_at = Some(t.0);
                self.push(t.0, Ev::Timer { node: i, at: t.0 });
            }
        }
    }

    fn route(&mut self, i: u32, p: Pending) {
        match p.out {
            Output::Transmit { conn, bytes } => {
                if let Some((link, side)) = p.link {
                    self.transmit(i, conn, link, side, bytes);
                }
            }
            Output::Connect { conn, addr } => self.connect(i, conn, &addr),
            Output::Close { conn, .. } => self.close(i, conn),
            Output::Request { id, request } => self.request(i, id, request),
            Output::Event(e) => self.event(i, e),
            other => self.fail(format!(
                "node {i} emitted an output the simulator does not carry out: {other:?}"
            )),
        }
    }

    /// The application on node `i` issues `command`; its table writes and Chord puts are
    /// recorded for the durability checker.
    fn command(&mut self, i: u32, command: Command) {
        let now = Instant(self.now);
        let incarnation = self.nodes[i as usize].incarnation;
        let id = self.cold[i as usize].id;
        let Some(n) = self.nodes[i as usize].node.as_mut() else {
            return;
        };
        let key = match &command {
            Command::Table(
                TableCommand::Set { key, .. }
                | TableCommand::Delete { key }
                | TableCommand::Release { key },
            ) => Some(key.clone()),
            Command::Chord(c) => {
                self.durable.chord_asked(i, id, c.request, &c.op);
                None
            }
            _ => None,
        };
        let before = n.metrics().table.writes_originated;
        if n.handle_input(now, Input::Command(command)).is_err() {
            self.stats.command_errors += 1;
        }
        let after = n.metrics().table.writes_originated;
        if let Some(key) = key.filter(|_| after > before) {
            if let Some(w) = n.table().current(&key) {
                self.durable.wrote(i, incarnation, after, key, w.id());
            }
        }
        self.drain(i);
    }

    /// Node `i` asked its host for `request`: its disk answers after [`DISK_LATENCY`] (a
    /// store after a seeded delay more), and after every request handed to it before.
    fn request(&mut self, i: u32, id: RequestId, request: HostRequest) {
        let mut latency = DISK_LATENCY;
        if matches!(request, HostRequest::StoreState { .. }) {
            latency += self.disk_rng.below(STORE_DELAY_MAX + 1);
        }
        let cold = &mut self.cold[i as usize];
        let at = (self.now + latency).max(cold.disk_busy_until);
        cold.disk_busy_until = at;
        let job = DiskJob {
            incarnation: self.nodes[i as usize].incarnation,
            id,
            request,
        };
        self.push(
            at,
            Ev::Disk {
                node: i,
                job: Box::new(job),
            },
        );
    }

    /// What the network's live nodes lost of what was acknowledged to them as committed (see
    /// [`Durability`]; nothing reaches a wrong-secret node).
    pub fn durability_violations(&self) -> Vec<String> {
        let live = self.members().iter().filter_map(|n| n.node.as_deref());
        let mut lost = self.durable.lost_writes(live.clone());
        lost.extend(self.durable.lost_puts(Instant(self.now), live));
        lost
    }

    /// Node `i`'s disk carries out `job`, if the incarnation that asked is still up (a crash
    /// loses the requests it had in flight: a store the disk had not finished leaves the
    /// old blob), and hands it the result.
    fn disk(&mut self, i: u32, job: DiskJob) {
        let sn = &self.nodes[i as usize];
        if sn.node.is_none() || sn.incarnation != job.incarnation {
            return;
        }
        let result = self.cold[i as usize].disk.carry_out(job.request);
        #[cfg(test)]
        if let Some(slot) = self.synthetic.get_mut(&(i, job.id)) {
            *slot = Some(result);
            return;
        }
        self.input(i, Input::Completed { id: job.id, result });
    }

    fn event(&mut self, i: u32, e: Event) {
        let incarnation = self.nodes[i as usize].incarnation;
        self.trace.event(self.now, i, &e);
        match &e {
            Event::PeerUp { conn, node, .. } => {
                self.cold[i as usize].dialing.remove(conn);
                // Nodes of different network keys never link (SPEC.md §21).
                if let Some(&j) = self.ids.get(node) {
                    if self.is_wrong_secret_node(i) != self.is_wrong_secret_node(j) {
                        self.fail(format!(
                            "node {i} linked with node {j}, whose network secret differs"
                        ));
                    }
                }
            }
            Event::ConnectionClosed {
                reason: CloseReason::Noise(_),
                ..
            } => self.stats.noise_closes += 1,
            Event::Table(TableEvent::Changed { .. }) => self.stats.table_changes += 1,
            Event::Table(TableEvent::Committed { through }) => {
                self.durable.committed(i, incarnation, *through);
            }
            Event::Chord(c) => {
                let id = self.cold[i as usize].id;
                self.durable.chord_ended(i, id, c.request, &c.result);
                self.chord_results
                    .entry((i, c.request))
                    .or_insert_with(|| c.result.clone());
            }
            Event::Table(TableEvent::Refused { .. }) => self.stats.table_refusals += 1,
            Event::Drops(d) => self.drop_events.push((i, d.clone())),
            Event::Mesh(MeshEvent::Broadcast {
                origin,
                incarnation: origin_incarnation,
                seq,
                payload,
            }) => {
                let Some(&o) = self.ids.get(origin) else {
                    return self.fail(format!("node {i} delivered a broadcast from a stranger"));
                };
                let key = (o, *origin_incarnation, *seq);
                let times = if self.config.sabotage && !self.sabotaged {
                    self.sabotaged = true;
                    2
                } else {
                    1
                };
                for _ in 0..times {
                    if let Err(v) = self
                        .tracker
                        .delivered(self.now, i, incarnation, key, payload)
                    {
                        self.violation.get_or_insert(v);
                    }
                }
            }
            _ => {}
        }
    }

    fn broadcast(&mut self, node: u32) {
        // The chosen node may be down: the next live one of the network (in index order)
        // sends instead.
        let n = self.config.nodes;
        let Some(origin) = (0..n)
            .map(|k| (node + k) % n)
            .find(|&k| self.nodes[k as usize].node.is_some() && !self.nodes[k as usize].paused)
        else {
            return;
        };
        let cold = &mut self.cold[origin as usize];
        cold.sent += 1;
        let key = (origin, self.nodes[origin as usize].incarnation, cold.sent);
        let payload = self.tracker.originate(self.now, key);
        let command = Command::Mesh(MeshCommand::Broadcast { payload });
        self.input(origin, Input::Command(command));
    }

    fn maintain(&mut self, i: u32) {
        if self.nodes[i as usize].paused || self.nodes[i as usize].node.is_none() {
            return;
        }
        if let Some(n) = self.nodes[i as usize].node.as_ref() {
            if let Err(e) = n.check_invariants() {
                return self.fail(format!("node {i}: {e}"));
            }
        }
        let unix_ms = self.wall_clock_ms(i);
        self.input(i, Input::WallClock { unix_ms });
        // The lower-indexed end of an intended link (re)dials it when it is down; a
        // wrong-secret node dials its intended links too (both ends try, and must fail).
        let outsider = self.is_wrong_secret_node(i);
        let targets: Vec<u32> = self.cold[i as usize]
            .neighbours
            .iter()
            .copied()
            .filter(|&j| (j > i || outsider) && !self.linked(i, j))
            .filter(|j| {
                let sn = &self.nodes[i as usize];
                // A dedicated connection to `j` (Chord's) is no dial of the intended link.
                let dedicated = |c: &ConnId| {
                    sn.node
                        .as_ref()
                        .is_some_and(|n| n.dedicated_family(*c).is_some())
                };
                !self.cold[i as usize]
                    .dialing
                    .iter()
                    .any(|(c, t)| t == j && !dedicated(c))
            })
            .collect();
        for j in targets {
            self.input(i, Input::Command(Command::Connect { addr: addr(j) }));
        }
    }

    fn crash(&mut self, i: u32, down_ms: u64) {
        let sn = &mut self.nodes[i as usize];
        let Some(old) = sn.node.take() else { return };
        self.stats.crashes += 1;
        let m = old.metrics();
        self.stats.duplicates += m.mesh.broadcast_duplicates;
        self.stats.frame_receptions += m.mesh.broadcasts_received;
        self.stats.table_catchup_bytes += m.table.catchup_bytes;
        self.stats.table_full_resend_bytes += m.table.full_resend_bytes;
        self.crashed.add(&old);
        sn.timer_at = None;
        if sn.paused {
            sn.paused = false;
            self.paused_nodes -= 1;
        }
        // In connection order, as the latency draws below have always been made.
        let mut conns = std::mem::take(&mut sn.conns);
        conns.sort_unstable_by_key(|c| c.conn);
        let cold = &mut self.cold[i as usize];
        cold.deferred.clear();
        cold.dialing.clear();
        for ConnLink { link, side, .. } in conns {
            self.links[link as usize].close_end(side);
            let lat = self.latency();
            self.push(
                self.now + lat,
                Ev::RemoteClosed {
                    link,
                    side: 1 - side,
                },
            );
        }
        self.tracker.crashed(i);
        self.push(
            self.now + down_ms * MS,
            Ev::Recover(Recovery::Restart { node: i }),
        );
    }

    fn restart(&mut self, i: u32) {
        let sn = &mut self.nodes[i as usize];
        if sn.node.is_some() {
            return;
        }
        // What survives a crash: the key (in the config) and the incarnation, raised.
        sn.incarnation += 1;
        let cold = &mut self.cold[i as usize];
        cold.config.incarnation = sn.incarnation;
        sn.node = Some(Box::new(Node::new((*cold.config).clone())));
        cold.sent = 0;
        self.start_node(i);
        self.maintain(i);
    }

    fn resume(&mut self, i: u32) {
        let sn = &mut self.nodes[i as usize];
        if !sn.paused {
            return;
        }
        sn.paused = false;
        self.paused_nodes -= 1;
        let deferred = std::mem::take(&mut self.cold[i as usize].deferred);
        for ev in deferred {
            self.dispatch(ev);
        }
        if let Some(n) = self.nodes[i as usize].node.as_mut() {
            n.handle_timeout(Instant(self.now));
        }
        self.drain(i);
        let sending: Vec<(u32, u8)> = self.nodes[i as usize]
            .conns
            .iter()
            .map(|c| (c.link, c.side))
            .collect();
        for (link, side) in sending {
            self.writable_if_drained(link, side);
        }
    }

    // ----- links ----------------------------------------------------------------------

    fn latency(&mut self) -> u64 {
        let l = self.config.faults.latency;
        (l.min_us + self.link_rng.exp(l.mean_extra_us)) * 1_000
    }

    fn blocked(&self, from: u32, to: u32) -> Option<u64> {
        let p = self.partition.as_ref()?;
        let (a, b) = (p.side_a[from as usize], p.side_a[to as usize]);
        (a && !b || p.symmetric && !a && b).then_some(p.until)
    }

    fn connect(&mut self, i: u32, conn: ConnId, address: &str) {
        let target = address
            .strip_prefix('n')
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&t| (t as usize) < self.nodes.len());
        self.cold[i as usize]
            .dialing
            .insert(conn, target.unwrap_or(u32::MAX));
        let lat = 2 * self.latency();
        let incarnations = (
            self.nodes[i as usize].incarnation,
            target.map_or(0, |t| self.nodes[t as usize].incarnation),
        );
        self.push(
            self.now + lat,
            Ev::Dialed {
                node: i,
                conn,
                target: target.unwrap_or(u32::MAX),
                incarnations,
            },
        );
    }

    fn dialed(&mut self, i: u32, conn: ConnId, target: u32, incarnations: (u64, u64)) {
        let sn = &self.nodes[i as usize];
        // The dialer may have crashed, or given up on the dial (closed it), meanwhile.
        if sn.node.is_none()
            || sn.incarnation != incarnations.0
            || !self.cold[i as usize].dialing.contains_key(&conn)
        {
            return;
        }
        let reachable = (target as usize) < self.nodes.len()
            && self.nodes[target as usize].node.is_some()
            && self.nodes[target as usize].incarnation == incarnations.1
            && self.blocked(i, target).is_none()
            && self.blocked(target, i).is_none();
        let p = self.config.faults.connect_fail_probability;
        if !reachable || (p > 0.0 && self.fault_rng.chance(p)) {
            self.cold[i as usize].dialing.remove(&conn);
            return self.input(i, Input::ConnectFailed { conn });
        }
        let t = &mut self.cold[target as usize];
        t.next_inbound += 1;
        let inbound = ConnId::inbound(t.next_inbound);
        let link = self.links.len() as u32;
        let ends = [
            End {
                node: i,
                conn,
                incarnation: incarnations.0,
                open: true,
            },
            End {
                node: target,
                conn: inbound,
                incarnation: incarnations.1,
                open: true,
            },
        ];
        self.links.push(Link::new(ends));
        self.nodes[i as usize].insert_conn(conn, link, 0);
        self.nodes[target as usize].insert_conn(inbound, link, 1);
        // The target's driver accepts (when it resumes, if paused); the dialer learns at once.
        self.dispatch(Ev::Accept {
            node: target,
            conn: inbound,
            from: i,
        });
        self.input(i, Input::Connected { conn });
    }

    /// Node `i` writes `bytes` on `conn`, its end `side` of `link_id`. The connection was
    /// open when the frame was taken from the node; if it has closed since (an earlier output
    /// closed it), the frame is dropped.
    fn transmit(&mut self, i: u32, conn: ConnId, link_id: u32, side: u8, bytes: Bytes) {
        if !self.links[link_id as usize].is_open(side) {
            return;
        }
        let bytes = if self.tamper_blocks_from == Some(i) {
            let (bytes, changed) = crate::tamper::blocks(bytes);
            self.stats.blocks_tampered += changed;
            bytes
        } else {
            bytes
        };
        let len = bytes.len();
        self.stats.bytes += len as u64;
        let lat = self.latency();
        let to = self.links[link_id as usize].dirs[side as usize].to_node;
        let slow = self.slow_until_max > self.now && self.cold[to as usize].slow_until > self.now;
        let blocked = self.blocked(i, to);
        let rate = match (self.config.faults.bandwidth, slow) {
            (_, true) => Some(self.config.faults.slow_reader_bytes_per_sec.max(1)),
            (Some(b), false) => Some(b.bytes_per_sec.max(1)),
            (None, false) => None,
        };
        let buffer_cap = self
            .config
            .faults
            .bandwidth
            .map_or(usize::MAX, |b| b.buffer_bytes);
        let now = self.now;
        let d = &mut self.links[link_id as usize].dirs[side as usize];
        let mut depart = now;
        if let Some(rate) = rate {
            let start = now.max(d.busy_until);
            d.busy_until = start + (len as u64).saturating_mul(1_000_000_000) / rate;
            depart = d.busy_until;
        }
        let mut arrival = depart + lat;
        if let Some(until) = blocked {
            arrival = arrival.max(until + lat);
        }
        if d.clogged_until > now {
            arrival = arrival.max(d.clogged_until + lat);
        }
        arrival = arrival.max(d.last_arrival);
        d.last_arrival = arrival;
        d.buffered_bytes += len;
        debug_assert_eq!(
            d.in_flight_bytes,
            self.nodes[i as usize]
                .node
                .as_ref()
                .and_then(|n| n.conn_stats(conn))
                .map_or(0, |s| s.in_flight_bytes),
            "the mirrored in-flight count of node {i}'s {conn:?}"
        );
        let mut writable = false;
        if d.in_flight_bytes >= self.window_half {
            if d.buffered_bytes <= buffer_cap {
                writable = true;
                d.in_flight_bytes = 0;
            } else {
                d.writable_pending = true;
            }
        }
        if self.config.faults.random_chunks && len > 1 {
            let mut rest = bytes;
            while !rest.is_empty() {
                let take = (self.link_rng.between(1, 2 * len as u64) as usize).min(rest.len());
                let piece = rest.split_to(take);
                self.push(
                    arrival,
                    Ev::Deliver {
                        link: link_id,
                        side,
                        bytes: piece,
                    },
                );
            }
        } else {
            self.push(
                arrival,
                Ev::Deliver {
                    link: link_id,
                    side,
                    bytes,
                },
            );
        }
        if writable {
            self.input(i, Input::Writable { conn });
        }
    }

    /// With `writable_on_drain`: when everything sent on `links[link_id]`'s direction `side`
    /// has arrived, the sender's socket has drained, and a real driver says so (bulk data
    /// waits for it). Not while the sender has handed out bytes the world has not carried yet
    /// (the mirrored count must stay the engine's), nor while it is paused (a paused node
    /// processes nothing: [`World::resume`] asks again).
    fn writable_if_drained(&mut self, link_id: u32, side: u8) {
        let link = &mut self.links[link_id as usize];
        let d = &link.dirs[side as usize];
        if !self.writable_on_drain
            || d.buffered_bytes != 0
            || d.in_flight_bytes == 0
            || d.writable_pending
        {
            return;
        }
        let sender = link.end(side);
        let mirrored = d.in_flight_bytes;
        let sn = &self.nodes[sender.node as usize];
        let same = sn
            .node
            .as_ref()
            .and_then(|n| n.conn_stats(sender.conn))
            .is_some_and(|s| s.in_flight_bytes == mirrored);
        if sender.open && sn.incarnation == sender.incarnation && !sn.paused && same {
            link.dirs[side as usize].in_flight_bytes = 0;
            self.input(sender.node, Input::Writable { conn: sender.conn });
        }
    }

    fn deliver(&mut self, link_id: u32, side: u8, bytes: Bytes) {
        let link = &mut self.links[link_id as usize];
        let d = &mut link.dirs[side as usize];
        d.buffered_bytes = d.buffered_bytes.saturating_sub(bytes.len());
        let buffer_cap = self
            .config
            .faults
            .bandwidth
            .map_or(usize::MAX, |b| b.buffer_bytes);
        let receiver = End {
            node: d.to_node,
            conn: d.to_conn,
            incarnation: d.to_incarnation,
            open: d.to_open,
        };
        if d.writable_pending && d.buffered_bytes <= buffer_cap {
            d.writable_pending = false;
            let sender = link.end(side);
            if sender.open && self.nodes[sender.node as usize].incarnation == sender.incarnation {
                link.dirs[side as usize].in_flight_bytes = 0;
                self.input(sender.node, Input::Writable { conn: sender.conn });
            }
        }
        self.writable_if_drained(link_id, side);
        let rn = &self.nodes[receiver.node as usize];
        if !receiver.open || rn.node.is_none() || rn.incarnation != receiver.incarnation {
            return;
        }
        self.trace.delivery(self.now, receiver.node, &bytes);
        self.input(
            receiver.node,
            Input::Received {
                conn: receiver.conn,
                bytes,
            },
        );
    }

    /// Node `i` asked to close `conn`: its end closes now (after the bytes handed out, which
    /// are already scheduled); the other end learns after them.
    fn close(&mut self, i: u32, conn: ConnId) {
        self.cold[i as usize].dialing.remove(&conn);
        let Some((link, side)) = self.nodes[i as usize].remove_conn(conn) else {
            // A dial that never connected.
            return self.input(i, Input::Closed { conn });
        };
        let l = &mut self.links[link as usize];
        l.close_end(side);
        let after = l.dirs[side as usize].last_arrival;
        let lat = self.latency();
        self.push(
            (self.now + lat).max(after),
            Ev::RemoteClosed {
                link,
                side: 1 - side,
            },
        );
        self.input(i, Input::Closed { conn });
    }

    fn remote_closed(&mut self, link: u32, side: u8) {
        let end = self.links[link as usize].end(side);
        if !end.open {
            return;
        }
        self.links[link as usize].close_end(side);
        let sn = &mut self.nodes[end.node as usize];
        if sn.node.is_none() || sn.incarnation != end.incarnation {
            return;
        }
        sn.remove_conn(end.conn);
        self.cold[end.node as usize].dialing.remove(&end.conn);
        self.input(end.node, Input::Closed { conn: end.conn });
    }

    /// Resets a link: both ends see `Closed`, nothing in flight arrives.
    fn reset(&mut self, link: u32) {
        for side in 0..2u8 {
            self.remote_closed(link, side);
        }
    }

    // ----- faults ---------------------------------------------------------------------

    fn occurrence(&self, kind: FaultKind) -> Option<Occurrence> {
        let f = &self.config.faults;
        match kind {
            FaultKind::Reset => f.resets,
            FaultKind::Clog => f.clogs,
            FaultKind::Partition => f.partitions,
            FaultKind::Crash => f.crashes,
            FaultKind::Pause => f.pauses,
            FaultKind::SlowReader => f.slow_readers,
        }
    }

    fn fault(&mut self, kind: FaultKind) {
        if self.phase != Phase::Safety || self.now >= self.safety_end {
            return;
        }
        let Some(o) = self.occurrence(kind) else {
            return;
        };
        let next = self.now + self.fault_rng.exp(o.mean_interval_ms).max(1) * MS;
        self.push(next, Ev::Fault(kind));
        self.stats.faults += 1;
        let duration_ms = self
            .fault_rng
            .between(o.duration_min_ms, 2 * o.duration_min_ms);
        // Crashes and pauses strike the network's nodes (at least half of them stay up);
        // partitions and slow readers any node.
        let n = self.nodes.len() as u64;
        let members = u64::from(self.config.nodes);
        let live: Vec<u32> = (0..members as u32)
            .filter(|&i| self.nodes[i as usize].node.is_some() && !self.nodes[i as usize].paused)
            .collect();
        match kind {
            FaultKind::Reset => {
                let open: Vec<u32> = (0..self.links.len() as u32)
                    .filter(|&l| self.links[l as usize].dirs.iter().all(|d| d.to_open))
                    .collect();
                if !open.is_empty() {
                    let l = open[self.fault_rng.below(open.len() as u64) as usize];
                    self.reset(l);
                }
            }
            FaultKind::Clog => {
                if !self.links.is_empty() {
                    let l = self.fault_rng.below(self.links.len() as u64) as usize;
                    let side = self.fault_rng.below(2) as usize;
                    self.links[l].dirs[side].clogged_until = self.now + duration_ms * MS;
                }
            }
            FaultKind::Partition => {
                if self.partition.is_some() {
                    return;
                }
                let until = self.now + duration_ms * MS;
                let style = self.fault_rng.below(3);
                let side_a: Vec<bool> = if style == 2 {
                    // One-way: one node's traffic out is lost; traffic to it flows.
                    let x = self.fault_rng.below(n);
                    (0..n).map(|i| i == x).collect()
                } else {
                    (0..n).map(|_| self.fault_rng.chance(0.5)).collect()
                };
                self.partition = Some(Partition {
                    side_a,
                    symmetric: style == 0,
                    until,
                });
                self.push(until, Ev::Recover(Recovery::Partition));
            }
            FaultKind::Crash => {
                // Keep at least half the nodes up.
                if live.len() as u64 * 2 > members {
                    let i = live[self.fault_rng.below(live.len() as u64) as usize];
                    self.crash(i, duration_ms);
                }
            }
            FaultKind::Pause => {
                if live.len() as u64 * 2 > members {
                    let i = live[self.fault_rng.below(live.len() as u64) as usize];
                    self.nodes[i as usize].paused = true;
                    self.paused_nodes += 1;
                    self.push(
                        self.now + duration_ms * MS,
                        Ev::Recover(Recovery::Resume { node: i }),
                    );
                }
            }
            FaultKind::SlowReader => {
                let i = self.fault_rng.below(n) as usize;
                self.cold[i].slow_until = self.now + duration_ms * MS;
                self.slow_until_max = self.slow_until_max.max(self.cold[i].slow_until);
            }
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
        Ev::Command { node, .. } | Ev::Disk { node, .. } => Some(*node),
        Ev::Dialed { node, .. } | Ev::Accept { node, .. } => Some(*node),
        Ev::Fault(_) | Ev::Recover(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultConfig;

    /// Two linked nodes, no faults.
    fn world() -> World {
        World::new(WorldConfig {
            seed: 7,
            nodes: 2,
            edges: vec![(0, 1)],
            faults: FaultConfig::none(),
            discovery: false,
            chord: false,
            sabotage: false,
            links: LinkSetup::OPEN,
        })
    }

    impl World {
        /// Node `i` asks its host for `request`, as if `poll_output` had handed it out: it
        /// goes through `route`, as every output of a drain does. Its completion is kept for
        /// [`World::synthetic_result`] instead of handed to a node that never asked.
        fn inject_request(&mut self, i: u32, id: u64, request: HostRequest) {
            self.synthetic.insert((i, RequestId(id)), None);
            let out = Output::Request {
                id: RequestId(id),
                request,
            };
            self.route(i, Pending { out, link: None });
        }

        /// What came of an injected request, once the disk has answered.
        fn synthetic_result(&self, i: u32, id: u64) -> Option<&HostResult> {
            self.synthetic.get(&(i, RequestId(id)))?.as_ref()
        }
    }

    fn load(name: &str) -> HostRequest {
        HostRequest::LoadState { name: name.into() }
    }

    fn store(name: &str, bytes: &'static [u8]) -> HostRequest {
        HostRequest::StoreState {
            name: name.into(),
            bytes: Bytes::from_static(bytes),
        }
    }

    #[test]
    fn the_disk_answers_requests_and_survives_a_crash() {
        let mut w = world();
        w.run_until(500 * MS);
        assert!(w.violation().is_none(), "{:?}", w.violation());

        w.inject_request(0, 1, load("never-stored"));
        assert_eq!(w.synthetic_result(0, 1), None, "answered asynchronously");
        w.run_until(w.now + DISK_LATENCY - 1);
        assert_eq!(
            w.synthetic_result(0, 1),
            None,
            "not before the disk latency"
        );
        w.run_until(w.now + 1);
        assert_eq!(w.synthetic_result(0, 1), Some(&HostResult::Loaded(None)));

        w.inject_request(0, 2, store("mesh-state-1", b"blob"));
        w.inject_request(0, 3, load("mesh-state-1"));
        w.run_until(w.now + DISK_LATENCY + STORE_DELAY_MAX);
        assert_eq!(w.synthetic_result(0, 2), Some(&HostResult::Stored));
        let blob = HostResult::Loaded(Some(Bytes::from_static(b"blob")));
        assert_eq!(w.synthetic_result(0, 3), Some(&blob), "a store then a load");
        w.inject_request(1, 4, load("mesh-state-1"));
        w.run_until(w.now + DISK_LATENCY);
        assert_eq!(
            w.synthetic_result(1, 4),
            Some(&HostResult::Loaded(None)),
            "each node has its own disk"
        );

        // A crash: a request in flight is lost with the incarnation that asked (the node is
        // back before the disk would have answered: the new incarnation must not hear of it),
        // the disk stays.
        let before = w.incarnations()[0];
        w.inject_request(0, 5, store("mesh-state-1", b"lost"));
        w.crash(0, 0);
        w.run_until(w.now + 10 * MS);
        assert!(w.node(0).is_some(), "restarted");
        assert_eq!(w.incarnations()[0], before + 1, "a new incarnation");
        assert_eq!(
            w.synthetic_result(0, 5),
            None,
            "the crashed incarnation's completion"
        );
        w.inject_request(0, 13, load("mesh-state-1"));
        w.crash(0, 100);
        w.run_until(w.now + 200 * MS);
        assert_eq!(
            w.synthetic_result(0, 13),
            None,
            "a completion for a node that is down"
        );
        assert!(w.node(0).is_some(), "restarted again");
        w.inject_request(0, 6, load("mesh-state-1"));
        w.run_until(w.now + DISK_LATENCY);
        assert_eq!(w.synthetic_result(0, 6), Some(&blob), "the blob survived");

        for (id, name) in [
            (7, ""),
            (8, "Mesh"),
            (9, "a/b"),
            (10, "état"),
            (11, &"x".repeat(65)[..]),
        ] {
            w.inject_request(0, id, load(name));
            w.inject_request(0, id + 100, store(name, b"x"));
        }
        w.inject_request(0, 12, load(&"x".repeat(64)));
        w.run_until(w.now + DISK_LATENCY + STORE_DELAY_MAX);
        for id in (7..=11).chain(107..=111) {
            assert!(
                matches!(w.synthetic_result(0, id), Some(HostResult::Failed(_))),
                "request {id}: {:?}",
                w.synthetic_result(0, id)
            );
        }
        assert_eq!(w.synthetic_result(0, 12), Some(&HostResult::Loaded(None)));
        assert_eq!(w.cold[0].disk.len(), 1, "a refused name stores nothing");
        assert!(w.violation().is_none(), "{:?}", w.violation());
    }

    /// A line of three nodes, no faults, with `links`; `edit` applied to each node's config.
    fn line_of_three(links: LinkSetup, edit: impl FnMut(&mut Config)) -> World {
        let config = WorldConfig {
            seed: 7,
            nodes: 3,
            edges: vec![(0, 1), (1, 2)],
            faults: FaultConfig::none(),
            discovery: false,
            chord: false,
            sabotage: false,
            links,
        };
        World::with_node_config(config, edit)
    }

    #[test]
    fn a_wrong_secret_node_is_refused_and_a_link_across_keys_is_a_violation() {
        // As set up: the network links, the wrong-secret node (3) never does, and the
        // handshakes between them are refused (both ways: each end dials).
        let mut w = line_of_three(LinkSetup::private("s", 1), |_| {});
        w.run_until(5_000 * MS);
        assert!(w.violation().is_none(), "{:?}", w.violation());
        assert!(w.all_linked());
        assert_eq!(w.node(3).map(|n| n.links().count()), Some(0));
        assert!(w.stats.noise_closes >= 4, "{}", w.stats.noise_closes);
        assert_eq!(
            w.live(),
            [true; 3],
            "the wrong-secret node is not of the network"
        );
        w.check_keys();
        assert!(w.violation().is_none(), "{:?}", w.violation());

        // The wrong-secret node given the network's key behind the world's back: it links,
        // and the world's check stops the run.
        let key = weft_engine::NetworkKey::derive(b"s").unwrap();
        let mut w = line_of_three(LinkSetup::private("s", 1), |c| c.network_key = key);
        w.run_until(5_000 * MS);
        let what = w.violation().map(|v| v.what.clone()).unwrap_or_default();
        assert!(what.contains("whose network secret differs"), "{what}");

        // Wrong-secret nodes never tried: the check saw nothing, and says so.
        let mut w = line_of_three(LinkSetup::private("s", 1), |_| {});
        w.check_keys();
        let what = w.violation().map(|v| v.what.clone()).unwrap_or_default();
        assert!(what.contains("never tried"), "{what}");

        // One node of an open network with another key, unknown to the world: its links
        // fail in the Noise layer, which between nodes of one key is a violation.
        let mut k = 0;
        let mut w = line_of_three(LinkSetup::OPEN, |c| {
            k += 1;
            if k == 3 {
                c.network_key = key;
            }
        });
        w.run_until(5_000 * MS);
        assert!(!w.all_linked());
        w.check_keys();
        let what = w.violation().map(|v| v.what.clone()).unwrap_or_default();
        assert!(what.contains("failed in the Noise layer"), "{what}");
    }

    /// A lone node with a table: `ack_on_accept` makes the checker count writes as
    /// acknowledged when accepted (the broken behaviour), not when committed.
    fn lone(ack_on_accept: bool) -> World {
        let mut w = World::new(WorldConfig {
            seed: 3,
            nodes: 1,
            edges: Vec::new(),
            faults: FaultConfig::none(),
            discovery: false,
            chord: false,
            sabotage: false,
            links: LinkSetup::OPEN,
        });
        w.durable.ack_on_accept = ack_on_accept;
        w.run_until(500 * MS);
        w
    }

    fn set(key: &str) -> Command {
        Command::Table(TableCommand::Set {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease: None,
        })
    }

    /// A crash before the store completes loses the write, and the node never acknowledged
    /// it: no violation. Counting it acknowledged at once (acknowledging before the commit) is
    /// caught as a lost write.
    #[test]
    fn a_write_acknowledged_before_its_commit_and_lost_in_a_crash_is_a_violation() {
        for broken in [false, true] {
            let mut w = lone(broken);
            w.command(0, set("k"));
            // Before the store can have completed.
            w.crash(0, 10);
            w.run_until(w.now + 1_000 * MS);
            assert!(w.node(0).is_some(), "restarted");
            assert_eq!(
                w.node(0).unwrap().table().get(b"k"),
                None,
                "the store was lost"
            );
            let lost = w.durability_violations();
            assert_eq!(lost.len(), usize::from(broken), "{lost:?}");
            assert_eq!(w.durable.acked_writes(), usize::from(broken));
        }
    }

    /// A write acknowledged after its commit survives the crash that follows.
    #[test]
    fn a_write_acknowledged_after_its_commit_survives_a_crash() {
        let mut w = lone(false);
        w.command(0, set("k"));
        w.run_until(w.now + DISK_LATENCY + STORE_DELAY_MAX);
        assert_eq!(w.durable.acked_writes(), 1, "committed");
        w.crash(0, 10);
        w.run_until(w.now + 1_000 * MS);
        assert_eq!(w.node(0).unwrap().table().get(b"k"), Some(&b"v"[..]));
        assert!(w.durability_violations().is_empty());
    }
}
