//! The sync-table scenario: random writers set, delete, lease and release a small key space
//! under faults and skewed clocks (every node's wall clock has its own offset of up to ±10 s
//! and its own drift); after the heal every live node must hold an identical table, and no
//! lease may have been broken.
//!
//! A lease violation, from the simulator's global view: a write some live node holds as
//! accepted although, judged over every write any live node holds (sorted by id, each
//! accepted unless an accepted earlier write by another node leased the key past its
//! timestamp: the rule of SPEC.md §19.4, re-implemented here), another node's lease covers it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;
use weft_engine::protocol::{NodeId, TableWrite};
use weft_engine::{Command, Duration, TableCommand};

use crate::links::LinkSetup;
use crate::rng::SimRng;
use crate::scenario::mesh::FaultMode;
use crate::scenario::{join, ms_or_never, settle, Cell, Row, RunHeader, Scenario, PROBE_MS};
use crate::topology::{self, Topology};
use crate::world::{World, WorldConfig, MS};

/// A table run's parameters.
#[derive(Debug, Clone)]
pub struct TableParams {
    /// Nodes.
    pub nodes: u32,
    /// Links per node (random regular graph).
    pub degree: u32,
    /// Root seed.
    pub seed: u64,
    /// Writes scheduled (sets, deletes, leases, releases).
    pub writes: u32,
    /// Faults.
    pub faults: FaultMode,
    /// Split the network into two halves for the whole write phase.
    pub halves: bool,
    /// Length of the write phase (under faults, if any), simulated ms.
    pub safety_ms: u64,
    /// Deadline for convergence after the heal, simulated ms.
    pub liveness_ms: u64,
    /// How the links are protected (Noise, open, by default).
    pub links: LinkSetup,
}

impl TableParams {
    /// Defaults for `nodes`, `seed`, `writes` and `faults`.
    pub fn new(nodes: u32, seed: u64, writes: u32, faults: FaultMode) -> Self {
        TableParams {
            nodes,
            degree: 3.min(nodes.saturating_sub(1)).max(1),
            seed,
            writes,
            faults,
            halves: false,
            safety_ms: 20_000,
            liveness_ms: 60_000,
            links: LinkSetup::OPEN,
        }
    }

    /// The command line that replays this run.
    pub fn replay(&self) -> String {
        let mut s = format!(
            "weft sim table --nodes {} --degree {} --seed {} --writes {} --faults {}",
            self.nodes,
            self.degree,
            self.seed,
            self.writes,
            self.faults.as_arg()
        );
        if self.halves {
            s.push_str(" --halves");
        }
        if self.safety_ms != 20_000 {
            s.push_str(&format!(" --safety-ms {}", self.safety_ms));
        }
        if self.liveness_ms != 60_000 {
            s.push_str(&format!(" --liveness-ms {}", self.liveness_ms));
        }
        s.push_str(&self.links.replay_args());
        s
    }

    /// Keys the writers draw from: few enough that writes collide.
    fn key_space(&self) -> u64 {
        u64::from(self.writes / 6).clamp(3, 64)
    }
}

/// What one table run measured: the shared header, then the table's own keys.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableReport {
    /// What every report shares.
    #[serde(flatten)]
    pub header: RunHeader,
    /// Intended links.
    pub edges: u64,
    /// The faults in force.
    pub faults: String,
    /// Faults that struck.
    pub faults_struck: u64,
    /// Of them, crashes.
    pub crashes: u64,
    /// Simulated ms from the heal until every live node held the same table (the run then
    /// goes on until they also hold the same writes, which the lease check judges).
    pub converged_ms: Option<u64>,
    /// Writes scheduled.
    pub writes: u32,
    /// Keys set at the end (on node 0).
    pub keys: u64,
    /// Whether every live node ended with an identical table.
    pub identical: bool,
    /// Whether the live nodes' tables were already identical at the heal (a partition that
    /// mattered leaves them different).
    pub identical_at_heal: bool,
    /// Accepted writes that another node's lease covers, judged globally (see the module).
    pub lease_violations: u64,
    /// Writes acknowledged as committed (`TableEvent::Committed`) over all nodes.
    pub committed: u64,
    /// Committed writes some live node holds neither again nor a later write of their key
    /// for after the heal: lost (a node acknowledged before its commit).
    pub lost_writes: u64,
    /// `TableRefused` events (writes refused by a lease) over all nodes.
    pub refusals: u64,
    /// Anti-entropy bytes (TABLE_DIGEST, TABLE_WANT, TABLE_ENTRIES frames) over all nodes.
    pub catchup_bytes: u64,
    /// What full resends of the table would have cost at the same moments.
    pub full_resend_bytes: u64,
    /// Connections closed because the Noise layer failed: the handshakes refused between
    /// the network and its wrong-secret nodes (0 without them).
    pub noise_closes: u64,
}

impl Scenario for TableReport {
    fn header(&self) -> &RunHeader {
        &self.header
    }

    fn rows(&self) -> Vec<Row> {
        vec![
            ("edges", self.edges.to_string()),
            ("writes", self.writes.to_string()),
            ("keys set", self.keys.to_string()),
            ("identical", self.identical.to_string()),
            ("lease violations", self.lease_violations.to_string()),
            ("committed writes", self.committed.to_string()),
            ("lost writes", self.lost_writes.to_string()),
            ("refusals", self.refusals.to_string()),
            ("catch-up bytes", self.catchup_bytes.to_string()),
            ("full resend bytes", self.full_resend_bytes.to_string()),
            ("converged", ms_or_never(self.converged_ms, " (simulated)")),
            ("noise closes", self.noise_closes.to_string()),
        ]
    }

    fn faults(&self) -> Option<(&str, u64)> {
        Some((&self.faults, self.faults_struck))
    }

    fn cells(&self) -> Vec<Cell> {
        vec![
            ("nodes", 6, self.header.nodes.to_string()),
            ("writes", 7, self.writes.to_string()),
            ("keys", 7, self.keys.to_string()),
            ("identical", 10, self.identical.to_string()),
            ("lease!", 7, self.lease_violations.to_string()),
            ("refused", 9, self.refusals.to_string()),
            ("catch-up", 10, self.catchup_bytes.to_string()),
            ("full-resend", 13, self.full_resend_bytes.to_string()),
            ("converged", 11, ms_or_never(self.converged_ms, "")),
            ("events", 9, self.header.events.to_string()),
        ]
    }

    fn sweep_sums(reports: &[Self]) -> (Vec<(&'static str, serde_json::Value)>, String) {
        let catchup: u64 = reports.iter().map(|r| r.catchup_bytes).sum();
        let full: u64 = reports.iter().map(|r| r.full_resend_bytes).sum();
        let lease_violations: u64 = reports.iter().map(|r| r.lease_violations).sum();
        let lost_writes: u64 = reports.iter().map(|r| r.lost_writes).sum();
        let keys = vec![
            ("identical", reports.iter().all(|r| r.identical).into()),
            ("lease_violations", lease_violations.into()),
            ("lost_writes", lost_writes.into()),
            ("catchup_bytes", catchup.into()),
            ("full_resend_bytes", full.into()),
        ];
        let text = format!("catch-up {catchup} bytes vs full resend {full} bytes, ");
        (keys, text)
    }
}

/// A write's id as plain data: (hlc ms, hlc logical, node, incarnation).
type Id = (u64, u32, NodeId, u64);

fn id_of(w: &TableWrite) -> Id {
    (w.hlc.ms, w.hlc.logical, w.node, w.incarnation)
}

/// One node's table as comparable data: every held key, its current write's id, its lease.
type Snapshot = Vec<(Vec<u8>, Option<Id>, Option<(NodeId, u64)>)>;

fn snapshot(w: &World, i: u32) -> Option<Snapshot> {
    let t = w.node(i)?.table();
    Some(
        t.keys()
            .map(|k| (k.to_vec(), t.current(k).map(id_of), t.lease(k)))
            .collect(),
    )
}

/// Whether every live node holds the same table.
fn identical(w: &World, nodes: u32) -> bool {
    let mut live = (0..nodes).filter_map(|i| snapshot(w, i));
    let Some(first) = live.next() else {
        return true;
    };
    live.all(|s| s == first)
}

/// One node's held writes: per key, every write's id and verdict (whether accepted).
type Held = Vec<(Vec<u8>, Vec<(Id, bool)>)>;

fn held(w: &World, i: u32) -> Option<Held> {
    let t = w.node(i)?.table();
    Some(
        t.keys()
            .map(|k| {
                let writes = t
                    .writes(k)
                    .map(|(wr, refused_by)| (id_of(wr), refused_by.is_none()))
                    .collect();
                (k.to_vec(), writes)
            })
            .collect(),
    )
}

/// Whether every live node holds the same writes with the same verdicts: the table is the
/// same and so is everything that could re-decide it.
fn settled(w: &World, nodes: u32) -> bool {
    let mut live = (0..nodes).filter_map(|i| held(w, i));
    let Some(first) = live.next() else {
        return true;
    };
    live.all(|s| s == first)
}

/// Counts accepted writes, on any live node, that the global judgement refuses.
fn lease_violations(w: &World, nodes: u32) -> u64 {
    // Every write any live node holds, per key, by id.
    let mut all: BTreeMap<Vec<u8>, BTreeMap<Id, TableWrite>> = BTreeMap::new();
    for i in 0..nodes {
        let Some(n) = w.node(i) else { continue };
        let t = n.table();
        for k in t.keys() {
            for (wr, _) in t.writes(k) {
                all.entry(k.to_vec())
                    .or_default()
                    .insert(id_of(wr), wr.clone());
            }
        }
    }
    // The global verdicts.
    let mut refused: BTreeSet<(Vec<u8>, Id)> = BTreeSet::new();
    for (key, writes) in &all {
        let mut lease: Option<(NodeId, u64)> = None;
        for (id, wr) in writes {
            if lease.is_some_and(|(owner, until)| owner != wr.node && wr.hlc.ms < until) {
                refused.insert((key.clone(), *id));
            } else {
                lease = wr.lease_until_ms.map(|u| (wr.node, u));
            }
        }
    }
    let mut violations = 0;
    for i in 0..nodes {
        let Some(n) = w.node(i) else { continue };
        let t = n.table();
        for k in t.keys() {
            for (wr, refused_by) in t.writes(k) {
                if refused_by.is_none() && refused.contains(&(k.to_vec(), id_of(wr))) {
                    violations += 1;
                }
            }
        }
    }
    violations
}

/// Runs the table scenario.
pub fn run(p: &TableParams) -> TableReport {
    let wall = Instant::now();
    let faults = p.faults.config(p.seed);
    let with_faults = faults.any();
    let degree = p.degree.min(p.nodes.saturating_sub(1)).max(1);
    let edges = topology::edges(
        &Topology::Regular { degree },
        p.nodes,
        &mut SimRng::child(p.seed, "topology", 0),
    );
    let mut w = World::new(WorldConfig {
        seed: p.seed,
        nodes: p.nodes,
        edges: edges.clone(),
        faults: faults.clone(),
        discovery: false,
        chord: false,
        sabotage: false,
        links: p.links.clone(),
    });

    join(&mut w, with_faults);
    let start = w.now;
    let heal_at = start + p.safety_ms * MS;
    if with_faults {
        w.start_faults(heal_at);
    }
    if p.halves {
        let side_a = (0..p.nodes).map(|i| i < p.nodes / 2).collect();
        w.split(side_a, heal_at);
    }
    let keys = p.key_space();
    for k in 0..p.writes {
        let rng = w.app_rng();
        let at = start + rng.below(p.safety_ms * MS);
        let node = rng.below(u64::from(p.nodes)) as u32;
        let key = format!("k{}", rng.below(keys)).into_bytes();
        let value = format!("n{node}w{k}").into_bytes();
        let command = match rng.below(10) {
            0..=5 => TableCommand::Set {
                key,
                value,
                lease: None,
            },
            6 | 7 => TableCommand::Set {
                key,
                value,
                lease: Some(Duration::from_millis(rng.between(1_000, 8_000))),
            },
            8 => TableCommand::Delete { key },
            _ => TableCommand::Release { key },
        };
        w.schedule_command(at, node, Command::Table(command));
    }
    w.run_until(heal_at);
    let identical_at_heal = identical(&w, p.nodes);
    if w.violation().is_none() {
        w.heal();
    }
    let from = w.now;
    let deadline = from + p.liveness_ms * MS;
    let mut converged_ms = None;
    while w.violation().is_none() && w.now < deadline {
        w.run_until(w.now + PROBE_MS * MS);
        if converged_ms.is_none() && identical(&w, p.nodes) {
            converged_ms = Some((w.now - from) / MS);
        }
        if converged_ms.is_some() && settled(&w, p.nodes) {
            break;
        }
    }
    settle(&mut w);
    let same = identical(&w, p.nodes);
    let violations = lease_violations(&w, p.nodes);
    if w.violation().is_none() && !same {
        w.fail(format!("tables differ {} ms after the heal", p.liveness_ms));
    }
    if w.violation().is_none() && !settled(&w, p.nodes) {
        w.fail(format!(
            "held writes differ {} ms after the heal",
            p.liveness_ms
        ));
    }
    if w.violation().is_none() && violations > 0 {
        w.fail(format!(
            "{violations} accepted writes break another node's lease"
        ));
    }
    let lost = w.durability_violations();
    if let (None, Some(first)) = (w.violation(), lost.first()) {
        let what = format!("{} committed writes lost, first: {first}", lost.len());
        w.fail(what);
    }
    TableReport {
        header: RunHeader::new("table", p.seed, p.nodes, p.links.describe(), p.replay())
            .finish_world(wall, &w),
        edges: edges.len() as u64,
        faults: faults.to_string(),
        faults_struck: w.stats.faults,
        crashes: w.stats.crashes,
        converged_ms,
        writes: p.writes,
        keys: w.node(0).map_or(0, |n| n.table().iter().count() as u64),
        identical: same,
        identical_at_heal,
        lease_violations: violations,
        committed: w.durable.acked_writes() as u64,
        lost_writes: lost.len() as u64,
        refusals: w.stats.table_refusals,
        catchup_bytes: w.stats.table_catchup_bytes,
        full_resend_bytes: w.stats.table_full_resend_bytes,
        noise_closes: w.stats.noise_closes,
    }
}

/// The table parameters a sweep derives from `seed`: a small network, swarm faults, Noise
/// links of an open network, a private one, or a private one with a wrong-secret node, by
/// seed ([`LinkSetup::for_sweep_seed`]).
pub fn sweep_params(seed: u64) -> TableParams {
    let mut r = SimRng::child(seed, "table-sweep", 0);
    let nodes = r.between(4, 12) as u32;
    let writes = r.between(10, 60) as u32;
    let mut p = TableParams::new(nodes, seed, writes, FaultMode::Swarm);
    p.degree = r.between(2, 4).min(u64::from(nodes) - 1) as u32;
    p.safety_ms = 15_000;
    p.links = LinkSetup::for_sweep_seed(seed, false);
    p
}
