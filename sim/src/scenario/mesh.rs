//! The mesh scenario: a random regular network floods broadcasts; without faults every node
//! must deliver each exactly once at the exact flood cost, with faults nothing may be delivered
//! twice and, after the heal, everything still held must reach every live node.

use std::time::Instant;

use serde::Serialize;

use crate::faults::FaultConfig;
use crate::links::LinkSetup;
use crate::rng::SimRng;
use crate::scenario::{join, ms_or_never, settle, Cell, Row, RunHeader, Scenario, PROBE_MS};
use crate::topology::{self, Topology};
use crate::world::{World, WorldConfig, MS};

/// Which faults a run injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultMode {
    /// None: exact flood counts are checked.
    None,
    /// Every fault parameter derived from the seed.
    Swarm,
    /// The named faults (see [`crate::faults::FAULT_NAMES`]).
    List(String),
}

impl FaultMode {
    /// Parses `none`, `swarm` or a comma-separated list of fault names (spaces around a name
    /// are allowed). An empty list is refused, and so are `none` and `swarm` in a list: swarm
    /// draws every fault from the seed and cannot be combined with named ones.
    pub fn parse(s: &str) -> Result<FaultMode, String> {
        use crate::faults::{parse_fault_arg, FaultArg, FAULT_NAMES};
        match parse_fault_arg(s, &FAULT_NAMES)? {
            FaultArg::None => Ok(FaultMode::None),
            FaultArg::Swarm => Ok(FaultMode::Swarm),
            FaultArg::List(names) => {
                let list = names.join(",");
                FaultConfig::from_list(&list).map(|_| FaultMode::List(list))
            }
        }
    }

    /// The name or list `--faults` takes for this mode: one word a shell passes as it is
    /// (a list without spaces or empty names; `none` for a list that names nothing).
    pub fn as_arg(&self) -> String {
        match self {
            FaultMode::None => "none".into(),
            FaultMode::Swarm => "swarm".into(),
            FaultMode::List(l) => {
                let names: Vec<&str> = l
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .collect();
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(",")
                }
            }
        }
    }

    /// The faults a run of `seed` injects in this mode.
    pub fn config(&self, seed: u64) -> FaultConfig {
        match self {
            FaultMode::None => FaultConfig::none(),
            FaultMode::Swarm => FaultConfig::swarm(&mut SimRng::child(seed, "swarm", 0)),
            // Validated by FaultMode::parse; an unparsable list runs without faults.
            FaultMode::List(l) => FaultConfig::from_list(l).unwrap_or_else(|_| FaultConfig::none()),
        }
    }
}

/// The network shapes `--topology` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Random regular graph of `--degree`.
    Regular,
    /// Erdős–Rényi G(n, m) with mean degree `--degree`.
    Random,
    /// A cycle.
    Ring,
    /// A path.
    Line,
    /// Node 0 linked to all.
    Star,
}

impl Shape {
    /// Every shape, in `--topology`'s order.
    pub const ALL: [Shape; 5] = [
        Shape::Regular,
        Shape::Random,
        Shape::Ring,
        Shape::Line,
        Shape::Star,
    ];

    /// Parses a shape name.
    pub fn parse(s: &str) -> Result<Shape, String> {
        Ok(match s {
            "regular" => Shape::Regular,
            "random" => Shape::Random,
            "ring" => Shape::Ring,
            "line" => Shape::Line,
            "star" => Shape::Star,
            other => {
                return Err(format!(
                    "unknown topology '{other}' (known: regular, random, ring, line, star)"
                ))
            }
        })
    }

    /// Whether the shape is drawn with `--degree` (the others ignore it).
    pub fn uses_degree(self) -> bool {
        matches!(self, Shape::Regular | Shape::Random)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Regular => "regular",
            Shape::Random => "random",
            Shape::Ring => "ring",
            Shape::Line => "line",
            Shape::Star => "star",
        }
    }

    pub(crate) fn topology(self, degree: u32) -> Topology {
        match self {
            Shape::Regular => Topology::Regular { degree },
            Shape::Random => Topology::Random {
                mean_degree: degree,
            },
            Shape::Ring => Topology::Ring,
            Shape::Line => Topology::Line,
            Shape::Star => Topology::Star,
        }
    }
}

/// A mesh run's parameters.
#[derive(Debug, Clone)]
pub struct MeshParams {
    /// Nodes.
    pub nodes: u32,
    /// Links per node (random regular graph) or mean degree (random graph).
    pub degree: u32,
    /// The network's shape.
    pub shape: Shape,
    /// Root seed.
    pub seed: u64,
    /// Broadcasts.
    pub broadcasts: u32,
    /// Faults.
    pub faults: FaultMode,
    /// Length of the safety phase under faults, simulated ms.
    pub safety_ms: u64,
    /// Deadline for convergence after the heal (or after the broadcasts), simulated ms.
    pub liveness_ms: u64,
    /// Record one delivery twice, to prove the checker and the replay line work.
    pub sabotage: bool,
    /// Make every node a Chord ring member too: the mesh must be unaffected.
    pub chord: bool,
    /// How the links are protected (Noise, open, by default).
    pub links: LinkSetup,
}

impl MeshParams {
    /// Defaults for `nodes`, `degree`, `seed`, `broadcasts` and `faults`.
    pub fn new(nodes: u32, degree: u32, seed: u64, broadcasts: u32, faults: FaultMode) -> Self {
        MeshParams {
            nodes,
            degree,
            shape: Shape::Regular,
            seed,
            broadcasts,
            faults,
            safety_ms: 20_000,
            liveness_ms: 60_000,
            sabotage: false,
            chord: false,
            links: LinkSetup::OPEN,
        }
    }

    /// The command line that replays this run (`--degree` only for a shape that uses it).
    pub fn replay(&self) -> String {
        let mut s = format!("weft sim mesh --nodes {}", self.nodes);
        if self.shape.uses_degree() {
            s.push_str(&format!(" --degree {}", self.degree));
        }
        s.push_str(&format!(
            " --seed {} --broadcasts {} --faults {}",
            self.seed,
            self.broadcasts,
            self.faults.as_arg()
        ));
        if self.shape != Shape::Regular {
            s.push_str(&format!(" --topology {}", self.shape.name()));
        }
        if self.safety_ms != 20_000 {
            s.push_str(&format!(" --safety-ms {}", self.safety_ms));
        }
        if self.liveness_ms != 60_000 {
            s.push_str(&format!(" --liveness-ms {}", self.liveness_ms));
        }
        if self.sabotage {
            s.push_str(" --sabotage");
        }
        if self.chord {
            s.push_str(" --chord");
        }
        s.push_str(&self.links.replay_args());
        s
    }
}

/// What one mesh run measured: the shared header, then the mesh's own keys.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MeshReport {
    /// What every report shares.
    #[serde(flatten)]
    pub header: RunHeader,
    /// Intended links.
    pub edges: u64,
    /// Broadcasts sent.
    pub broadcasts: u64,
    /// Of the deliveries owed at the end, the fraction made.
    pub delivered_fraction: f64,
    /// BROADCAST frames transmitted.
    pub transmissions: u64,
    /// Duplicate BROADCAST receptions.
    pub duplicates: u64,
    /// Repair frames (MESH_DIGEST, MESH_WANT, MESH_REPAIR) transmitted.
    pub repair_messages: u64,
    /// Simulated ms from the last broadcast's send (no faults) or the heal (faults) until
    /// every node held everything owed; `None` if that never happened.
    pub converged_ms: Option<u64>,
    /// The faults in force, as derived from the seed or named.
    pub faults: String,
    /// Faults that struck.
    pub faults_struck: u64,
    /// Of them, crashes and partitions that cut something.
    pub crashes: u64,
    /// Partitions that cut something.
    pub partitions: u64,
    /// Broadcasts first obtained through MESH_REPAIR (live nodes at the end).
    pub repairs_received: u64,
    /// Connections closed because the Noise layer failed: the handshakes refused between
    /// the network and its wrong-secret nodes (0 without them).
    pub noise_closes: u64,
}

impl Scenario for MeshReport {
    fn header(&self) -> &RunHeader {
        &self.header
    }

    fn rows(&self) -> Vec<Row> {
        vec![
            ("edges", self.edges.to_string()),
            ("broadcasts", self.broadcasts.to_string()),
            (
                "delivered fraction",
                format!("{:.6}", self.delivered_fraction),
            ),
            ("transmissions", self.transmissions.to_string()),
            ("duplicates", self.duplicates.to_string()),
            ("repair messages", self.repair_messages.to_string()),
            ("converged", ms_or_never(self.converged_ms, " (simulated)")),
            ("noise closes", self.noise_closes.to_string()),
        ]
    }

    fn faults(&self) -> Option<(&str, u64)> {
        Some((&self.faults, self.faults_struck))
    }

    fn cells(&self) -> Vec<Cell> {
        let h = &self.header;
        vec![
            ("nodes", 6, h.nodes.to_string()),
            ("edges", 7, self.edges.to_string()),
            ("bcast", 6, self.broadcasts.to_string()),
            ("delivered", 10, format!("{:.4}", self.delivered_fraction)),
            ("tx", 9, self.transmissions.to_string()),
            ("dups", 9, self.duplicates.to_string()),
            ("repair", 8, self.repair_messages.to_string()),
            ("converged", 11, ms_or_never(self.converged_ms, "")),
            ("events", 9, h.events.to_string()),
            ("events/s", 11, h.events_per_sec.to_string()),
        ]
    }
}

/// Runs the mesh scenario.
pub fn run(p: &MeshParams) -> MeshReport {
    let wall = Instant::now();
    let faults = p.faults.config(p.seed);
    let with_faults = faults.any();
    let edges = topology::edges(
        &p.shape.topology(p.degree),
        p.nodes,
        &mut SimRng::child(p.seed, "topology", 0),
    );
    let mut w = World::new(WorldConfig {
        seed: p.seed,
        nodes: p.nodes,
        edges: edges.clone(),
        faults: faults.clone(),
        discovery: false,
        chord: p.chord,
        sabotage: p.sabotage,
        links: p.links.clone(),
    });

    // Join: every intended link up (or, under faults, as many as come up in time).
    join(&mut w, with_faults);
    let start = w.now;
    if with_faults {
        let safety_end = start + p.safety_ms * MS;
        w.start_faults(safety_end);
        for _ in 0..p.broadcasts {
            let at = start + w.app_rng().below(p.safety_ms * MS);
            let node = w.app_rng().below(u64::from(p.nodes)) as u32;
            w.schedule_broadcast(at, node);
        }
        w.run_until(safety_end);
        if w.violation().is_none() {
            w.heal();
        }
    } else {
        for _ in 0..p.broadcasts {
            let node = w.app_rng().below(u64::from(p.nodes)) as u32;
            w.schedule_broadcast(start, node);
        }
    }
    let from = w.now;
    let deadline = from + p.liveness_ms * MS;
    let mut converged_ms = None;
    while w.violation().is_none() && w.now < deadline {
        w.run_until(w.now + PROBE_MS * MS);
        let (have, want) = w.tracker.coverage(&w.live(), &w.incarnations());
        if have == want && w.tracker.sent_count() as u32 >= p.broadcasts.min(1) {
            converged_ms = Some((w.tracker.last_delivery_at.max(from) - from) / MS);
            break;
        }
    }
    // Let duplicates in flight land before counting.
    settle(&mut w);
    let (have, want) = w.tracker.coverage(&w.live(), &w.incarnations());
    if converged_ms.is_none() && w.violation().is_none() {
        let missing = w.tracker.missing(&w.live(), &w.incarnations(), 3);
        let missing: Vec<String> = missing
            .iter()
            .map(|(n, (o, i, s))| format!("node {n} lacks {o}/{i}/{s}"))
            .collect();
        w.fail(format!(
            "did not converge within {} ms: {have} of {want} deliveries owed were made ({})",
            p.liveness_ms,
            missing.join(", ")
        ));
    }
    let n = u64::from(p.nodes);
    let e = edges.len() as u64;
    let b = w.tracker.sent_count() as u64;
    if !with_faults && w.violation().is_none() {
        let expect_tx = b * (2 * e + 1 - n);
        let expect_dup = 2 * b * (e + 1 - n);
        let tx = w.broadcast_transmissions();
        if tx != expect_tx || w.stats.duplicates != expect_dup {
            w.fail(format!(
                "flood cost: {tx} transmissions and {} duplicates, expected {expect_tx} and {expect_dup}",
                w.stats.duplicates
            ));
        }
    }
    MeshReport {
        header: RunHeader::new("mesh", p.seed, p.nodes, p.links.describe(), p.replay())
            .finish_world(wall, &w),
        edges: e,
        broadcasts: b,
        delivered_fraction: if want == 0 {
            1.0
        } else {
            have as f64 / want as f64
        },
        transmissions: w.stats.broadcast_transmissions,
        duplicates: w.stats.duplicates,
        repair_messages: w.stats.repair_messages,
        converged_ms,
        faults: faults.to_string(),
        faults_struck: w.stats.faults,
        crashes: w.stats.crashes,
        partitions: w.stats.partitions,
        repairs_received: w.stats.repairs_received,
        noise_closes: w.stats.noise_closes,
    }
}

/// The mesh parameters a sweep derives from `seed`: a small network, swarm faults, Noise
/// links of an open network, a private one, or a private one with a wrong-secret node, by
/// seed ([`LinkSetup::for_sweep_seed`]).
pub fn sweep_params(seed: u64) -> MeshParams {
    let mut r = SimRng::child(seed, "sweep", 0);
    let nodes = r.between(5, 16) as u32;
    let degree = r.between(2, 4).min(u64::from(nodes) - 1) as u32;
    let broadcasts = r.between(5, 25) as u32;
    let mut p = MeshParams::new(nodes, degree, seed, broadcasts, FaultMode::Swarm);
    p.safety_ms = 15_000;
    p.links = LinkSetup::for_sweep_seed(seed, false);
    p
}
