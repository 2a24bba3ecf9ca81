//! Mesh flooding in the simulator at N = 10,000, degree 8: frame receptions per wall second.
//! Each reception is a delivery through the simulated link, a frame decode, a duplicate
//! check and a relay decision in a real `Node` (`receptions`). Beside it, the same flood with
//! no engine at all (`floor`, see `mesh/floor.rs`): what this machine allows for the flood's
//! memory-access pattern, so the first figure can be read against it.
//!
//! `receptions` runs with broadcast origin signatures on (the default: every first reception
//! verifies an ed25519 signature) and off; `WEFT_BENCH_SIGNATURES=on` or `off` runs only one.
//! The bench id names the mode.

#[path = "mesh/floor.rs"]
mod floor;

use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use weft_sim::faults::FaultConfig;
use weft_sim::links::LinkSetup;
use weft_sim::rng::SimRng;
use weft_sim::topology::{edges, Topology};
use weft_sim::world::{World, WorldConfig, MS};

const NODES: u32 = 10_000;
const DEGREE: u32 = 8;

/// The signature modes to run: `WEFT_BENCH_SIGNATURES` = `on`, `off`, or unset for both.
pub fn signature_modes() -> Vec<bool> {
    match std::env::var("WEFT_BENCH_SIGNATURES").as_deref() {
        Ok("on") => vec![true],
        Ok("off") => vec![false],
        _ => vec![true, false],
    }
}

fn joined_world(signatures: bool) -> World {
    let seed = 1;
    let edges = edges(
        &Topology::Regular { degree: DEGREE },
        NODES,
        &mut SimRng::child(seed, "topology", 0),
    );
    let mut w = World::with_node_config(
        WorldConfig {
            seed,
            nodes: NODES,
            edges,
            faults: FaultConfig::none(),
            discovery: false,
            chord: false,
            sabotage: false,
            links: LinkSetup::OPEN,
        },
        |c| c.broadcast_signatures = signatures,
    );
    while !w.all_linked() {
        w.run_until(w.now + 100 * MS);
        assert!(w.now < 60_000 * MS, "join took too long");
    }
    w
}

/// Times one flood per iteration, each from a new origin; `flood` returns its receptions,
/// which must be `per_broadcast`, and the time the flood itself took (counting the
/// receptions is not timed).
fn floods(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    per_broadcast: u64,
    mut flood: impl FnMut(u32) -> (u64, Duration),
) {
    let mut origin = 0u32;
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                origin = (origin + 7919) % NODES;
                let (receptions, took) = flood(origin);
                spent += took;
                assert_eq!(receptions, per_broadcast);
            }
            spent
        })
    });
}

fn mesh(c: &mut Criterion) {
    let mut group = c.benchmark_group("mesh_flood_10k_nodes_degree_8");
    group.sample_size(10);
    let mut per_broadcast = 0;
    for signatures in signature_modes() {
        let mode = if signatures { "on" } else { "off" };
        eprintln!("mesh bench: broadcast origin signatures {mode}");
        let mut w = joined_world(signatures);
        let e = w.edges().len() as u64;
        per_broadcast = 2 * e - u64::from(NODES) + 1;
        group.throughput(Throughput::Elements(per_broadcast));
        let name = format!("receptions/signatures_{mode}");
        floods(&mut group, &name, per_broadcast, |origin| {
            // The engines' counters, summed over 10,000 nodes: outside the timed part.
            let before = w.broadcast_transmissions();
            let start = Instant::now();
            w.schedule_broadcast(w.now, origin);
            // The flood crosses the network in a few ms of simulated time.
            w.run_until(w.now + 30 * MS);
            let took = start.elapsed();
            (w.broadcast_transmissions() - before, took)
        });
    }
    let mut bare = floor::Flood::new();
    floods(&mut group, "floor", per_broadcast, |origin| {
        let start = Instant::now();
        let receptions = bare.broadcast(origin);
        (receptions, start.elapsed())
    });
    group.finish();
}

criterion_group!(benches, mesh);
criterion_main!(benches);
