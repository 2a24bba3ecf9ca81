//! `weft sim p2pt`: a network of p2p.today nodes (SPEC.md §25.9–§25.11) on a `sync1` subnet,
//! half of them compressing. A safety phase of random broadcasts and table writes under
//! faults (cut links, crashed nodes that come back with new ids), in which no node may
//! deliver a message twice or break its invariants; then the heal: once every node is up and
//! the network connected again, every node broadcasts and writes a key of its own, and every
//! node must deliver every other's broadcast exactly once and hold every key. (py2p's
//! dialect has no repair: what was sent across a cut during the faults is not owed.)

use std::time::Instant;

use serde::Serialize;
use weft_engine::p2pt::Subnet;
use weft_engine::protocol::p2pt::rmpv::Value;

use super::{Cell, Row, RunHeader, Scenario};
use crate::p2pt_net::P2ptNet;
use crate::rng::SimRng;
use crate::world::MS;

/// Parameters of a run.
#[derive(Debug, Clone)]
pub struct P2ptParams {
    /// Nodes.
    pub nodes: u32,
    /// Root seed.
    pub seed: u64,
    /// Cut links and crash nodes in the safety phase.
    pub faults: bool,
    /// Broadcasts in the safety phase.
    pub broadcasts: u32,
    /// Table writes in the safety phase.
    pub writes: u32,
    /// Length of the safety phase, simulated ms.
    pub safety_ms: u64,
    /// Deadline, after the safety phase, for the network to be whole again and the owed
    /// messages and keys to arrive, simulated ms.
    pub liveness_ms: u64,
}

impl P2ptParams {
    /// `nodes` nodes, `seed`, with or without faults, and the default phases.
    pub fn new(nodes: u32, seed: u64, faults: bool) -> P2ptParams {
        P2ptParams {
            nodes,
            seed,
            faults,
            broadcasts: 40,
            writes: 40,
            safety_ms: 20_000,
            liveness_ms: 120_000,
        }
    }

    /// The command that replays this run.
    pub fn replay(&self) -> String {
        format!(
            "weft sim p2pt --nodes {} --seed {} --faults {} --broadcasts {} --writes {} --safety-ms {} --liveness-ms {}",
            self.nodes,
            self.seed,
            if self.faults { "swarm" } else { "none" },
            self.broadcasts,
            self.writes,
            self.safety_ms,
            self.liveness_ms
        )
    }
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct P2ptReport {
    /// The shared part.
    #[serde(flatten)]
    pub header: RunHeader,
    /// Faults that struck (cuts and crashes).
    pub faults: u64,
    /// Broadcasts sent in the safety phase.
    pub broadcasts: u32,
    /// Deliveries owed after the heal (each node, each other node's broadcast).
    pub owed: u64,
    /// Of those, delivered (exactly once each).
    pub delivered: u64,
    /// Keys owed after the heal (each node, each node's key).
    pub keys_owed: u64,
    /// Of those, held.
    pub keys_held: u64,
    /// From the end of the safety phase until every node was up and the network connected,
    /// simulated ms (`None`: never).
    pub whole_ms: Option<u64>,
    /// Broadcast frames dropped as duplicates, summed over the nodes up at the end.
    pub duplicates: u64,
}

fn connected(net: &P2ptNet) -> bool {
    let n = net.len() as usize;
    let mut ids = Vec::with_capacity(n);
    for i in 0..net.len() {
        let Some(node) = net.node(i) else {
            return false;
        };
        ids.push(node.id());
    }
    let mut seen = vec![false; n];
    let mut stack = vec![0usize];
    seen[0] = true;
    while let Some(i) = stack.pop() {
        let Some(node) = net.node(i as u32) else {
            return false;
        };
        for (peer, ..) in node.peers() {
            if let Some(j) = ids.iter().position(|id| *id == peer) {
                if !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
    }
    seen.iter().all(|&s| s)
}

/// Runs one scenario.
pub fn run(p: &P2ptParams) -> P2ptReport {
    let started = Instant::now();
    let header = RunHeader::new(
        "p2pt",
        p.seed,
        p.nodes,
        "PLAINTEXT (p2p.today has no encryption)".into(),
        p.replay(),
    );
    let mut net = P2ptNet::new(p.nodes, Subnet::SyncLeased, p.seed);
    let mut app = SimRng::child(p.seed, "p2pt app", 0);
    let mut fault_rng = SimRng::child(p.seed, "p2pt faults", 0);
    let safety_end = p.safety_ms * MS;
    // A second for the first links, then the workload.
    for k in 0..p.broadcasts {
        let at = app.between(MS * 1000, safety_end);
        let node = app.below(u64::from(p.nodes)) as u32;
        net.schedule_broadcast(at, node, format!("s-{k}"));
    }
    for k in 0..p.writes {
        let at = app.between(MS * 1000, safety_end);
        let node = app.below(u64::from(p.nodes)) as u32;
        let key = format!("key-{}", app.below(8));
        net.schedule_set(at, node, key, format!("v-{k}"));
    }
    let mut t = 0;
    while t < safety_end {
        t += 500 * MS;
        net.run_until(t);
        if p.faults && t < safety_end {
            if fault_rng.chance(0.5) {
                net.cut_random_link();
            }
            if fault_rng.chance(0.15) {
                let node = fault_rng.below(u64::from(p.nodes)) as u32;
                let down = fault_rng.between(500 * MS, 3000 * MS);
                net.crash(node, down);
            }
        }
    }
    // The heal: no more faults; wait for every node and a connected network.
    let deadline = safety_end + p.liveness_ms * MS;
    let mut whole_at = None;
    while net.now < deadline {
        let next = net.now + 250 * MS;
        net.run_until(next);
        if connected(&net) {
            whole_at = Some(net.now);
            break;
        }
    }
    let mut report = P2ptReport {
        header,
        faults: net.faults,
        broadcasts: p.broadcasts,
        owed: 0,
        delivered: 0,
        keys_owed: 0,
        keys_held: 0,
        whole_ms: whole_at.map(|at| (at - safety_end) / MS),
        duplicates: 0,
    };
    match whole_at {
        None => net.fail("the network was not whole again by the deadline".into()),
        Some(at) => {
            // Every node broadcasts and writes a key of its own, a second after the heal
            // (after the catch-up bursts of the last links).
            for i in 0..p.nodes {
                let when = at + 1000 * MS + u64::from(i) * MS;
                net.schedule_broadcast(when, i, format!("l-{i}"));
                net.schedule_set(when, i, format!("live-{i}"), format!("{i}"));
            }
            net.run_until(at + 11_000 * MS);
            check_owed(&mut net, &mut report);
        }
    }
    report.duplicates = (0..p.nodes)
        .filter_map(|i| net.node(i))
        .map(|n| n.metrics().broadcast_duplicates)
        .sum();
    let events = net.events;
    let digest = net.digest();
    let violation = net.violation.clone();
    report.header = report.header.finish(started, events, digest, violation);
    report
}

/// Counts what the heal owed and what arrived; a shortfall is a violation.
fn check_owed(net: &mut P2ptNet, report: &mut P2ptReport) {
    let n = net.len();
    for i in 0..n {
        let epoch = net.epoch(i);
        for j in (0..n).filter(|&j| j != i) {
            report.owed += 1;
            let got = net
                .deliveries
                .by_text
                .get(&(i, epoch, format!("l-{j}")))
                .copied()
                .unwrap_or(0);
            if got == 1 {
                report.delivered += 1;
            } else if report.header.violation.is_none() {
                net.fail(format!("node {i} delivered l-{j} {got} times"));
            }
        }
        for j in 0..n {
            report.keys_owed += 1;
            let key = format!("live-{j}");
            let held = net
                .node(i)
                .and_then(|node| node.table_get(key.as_bytes()))
                .is_some_and(|e| e.value == Value::from(format!("{j}")));
            if held {
                report.keys_held += 1;
            } else {
                net.fail(format!("node {i} does not hold {key}"));
            }
        }
    }
}

/// The parameters `weft sim sweep p2pt` gives seed `seed`: 4 to 16 nodes (`4 + seed mod
/// 13`), swarm faults, the defaults otherwise.
pub fn sweep_params(seed: u64) -> P2ptParams {
    P2ptParams::new(4 + (seed % 13) as u32, seed, true)
}

impl Scenario for P2ptReport {
    fn header(&self) -> &RunHeader {
        &self.header
    }

    fn sweep_sums(reports: &[Self]) -> (Vec<(&'static str, serde_json::Value)>, String) {
        let owed: u64 = reports.iter().map(|r| r.owed).sum();
        let delivered: u64 = reports.iter().map(|r| r.delivered).sum();
        let keys_owed: u64 = reports.iter().map(|r| r.keys_owed).sum();
        let keys_held: u64 = reports.iter().map(|r| r.keys_held).sum();
        let duplicates: u64 = reports.iter().map(|r| r.duplicates).sum();
        let keys = vec![
            ("owed", owed.into()),
            ("delivered", delivered.into()),
            ("keys_owed", keys_owed.into()),
            ("keys_held", keys_held.into()),
            ("duplicates", duplicates.into()),
        ];
        let text = format!(
            "{delivered}/{owed} delivered after the heal, {keys_held}/{keys_owed} keys held, \
             {duplicates} duplicates dropped, "
        );
        (keys, text)
    }

    fn rows(&self) -> Vec<Row> {
        vec![
            ("faults", self.faults.to_string()),
            ("broadcasts", self.broadcasts.to_string()),
            (
                "delivered",
                format!("{}/{} (after the heal)", self.delivered, self.owed),
            ),
            ("keys", format!("{}/{}", self.keys_held, self.keys_owed)),
            (
                "whole after",
                self.whole_ms
                    .map_or("never".into(), |ms| format!("{ms} ms")),
            ),
            ("duplicates", self.duplicates.to_string()),
        ]
    }

    fn cells(&self) -> Vec<Cell> {
        vec![
            ("nodes", 7, self.header.nodes.to_string()),
            ("faults", 8, self.faults.to_string()),
            ("delivered", 12, format!("{}/{}", self.delivered, self.owed)),
            ("keys", 12, format!("{}/{}", self.keys_held, self.keys_owed)),
            (
                "whole",
                9,
                self.whole_ms.map_or("never".into(), |ms| format!("{ms}ms")),
            ),
            ("dups", 8, self.duplicates.to_string()),
            ("events", 10, self.header.events.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_faulty_run_heals_and_delivers_what_it_owes_and_replays_to_the_same_digest() {
        let p = P2ptParams::new(12, 3, true);
        let a = run(&p);
        assert!(a.header.ok, "{:?}\n{}", a.header.violation, a.header.replay);
        assert!(a.faults > 0);
        assert_eq!(a.delivered, a.owed);
        assert_eq!(a.keys_held, a.keys_owed);
        let b = run(&p);
        assert_eq!(a.header.digest, b.header.digest);
        let other = run(&P2ptParams::new(12, 4, true));
        assert_ne!(a.header.digest, other.header.digest);
    }

    /// `weft sim sweep p2pt`'s seeds 1..=WEFT_P2PT_SEEDS (default 6): every run heals and
    /// delivers what it owes, the sizes follow the seed, and the sums add up.
    #[test]
    fn a_seed_sweep_heals_and_delivers_everything() {
        let last = crate::sweep::env_or("WEFT_P2PT_SEEDS", 6);
        let reports: Vec<P2ptReport> = (1..=last).map(|s| run(&sweep_params(s))).collect();
        for r in &reports {
            assert!(r.header.ok, "{:?}\n{}", r.header.violation, r.header.replay);
            assert_eq!(r.header.nodes, 4 + (r.header.seed % 13) as u32);
            assert!(r.faults > 0, "{}", r.header.replay);
        }
        let (keys, text) = P2ptReport::sweep_sums(&reports);
        let owed: u64 = reports.iter().map(|r| r.owed).sum();
        assert!(owed > 0);
        assert!(keys.contains(&("owed", owed.into())));
        assert!(keys.contains(&("delivered", owed.into())));
        assert!(
            text.starts_with(&format!("{owed}/{owed} delivered")),
            "{text}"
        );
    }
}
