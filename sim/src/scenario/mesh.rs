//! The mesh scenario: a random regular network floods broadcasts; without faults every node
//! must deliver each exactly once at the exact flood cost, with faults nothing may be delivered
//! twice and, after the heal, everything still held must reach every live node.

use crate::faults::FaultConfig;
use crate::rng::SimRng;
use crate::scenario::Report;
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
    /// Parses `none`, `swarm` or a comma-separated list of fault names.
    pub fn parse(s: &str) -> Result<FaultMode, String> {
        match s {
            "none" => Ok(FaultMode::None),
            "swarm" => Ok(FaultMode::Swarm),
            list => FaultConfig::from_list(list).map(|_| FaultMode::List(list.to_string())),
        }
    }

    fn as_arg(&self) -> &str {
        match self {
            FaultMode::None => "none",
            FaultMode::Swarm => "swarm",
            FaultMode::List(l) => l,
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

    fn name(self) -> &'static str {
        match self {
            Shape::Regular => "regular",
            Shape::Random => "random",
            Shape::Ring => "ring",
            Shape::Line => "line",
            Shape::Star => "star",
        }
    }

    fn topology(self, degree: u32) -> Topology {
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
        }
    }

    /// The command line that replays this run.
    pub fn replay(&self) -> String {
        let mut s = format!(
            "weft sim mesh --nodes {} --degree {} --seed {} --broadcasts {} --faults {}",
            self.nodes,
            self.degree,
            self.seed,
            self.broadcasts,
            self.faults.as_arg()
        );
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
        s
    }
}

/// How often convergence is probed, simulated ms.
const PROBE_MS: u64 = 100;
/// Longest the initial join may take, simulated ms.
const JOIN_MS: u64 = 30_000;

/// Runs the mesh scenario.
pub fn run(p: &MeshParams) -> Report {
    let wall = std::time::Instant::now();
    let faults = match &p.faults {
        FaultMode::None => FaultConfig::none(),
        FaultMode::Swarm => FaultConfig::swarm(&mut SimRng::child(p.seed, "swarm", 0)),
        // Validated by FaultMode::parse; an unparsable list runs without faults.
        FaultMode::List(l) => FaultConfig::from_list(l).unwrap_or_else(|_| FaultConfig::none()),
    };
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
    });

    // Join: every intended link up (or, under faults, as many as come up in time).
    let join_deadline = JOIN_MS * MS;
    while !w.all_linked() && w.now < join_deadline && w.violation().is_none() {
        w.run_until(w.now + PROBE_MS * MS);
    }
    if !with_faults && !w.all_linked() {
        w.fail("not every link came up in the join phase".into());
    }
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
    if w.violation().is_none() {
        let settle = w.now + 2_000 * MS;
        w.run_until(settle);
    }
    w.finish_stats();
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
    let wall_ms = wall.elapsed().as_millis() as u64;
    let violation = w
        .violation()
        .map(|v| format!("at {} ms: {}", v.at / MS, v.what));
    Report {
        protocol: "mesh",
        seed: p.seed,
        nodes: p.nodes,
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
        events: w.stats.events,
        wall_ms,
        events_per_sec: w.stats.events * 1000 / wall_ms.max(1),
        digest: w.trace.digest(),
        replay: p.replay(),
        ok: violation.is_none(),
        faults: faults.to_string(),
        faults_struck: w.stats.faults,
        violation,
    }
}
