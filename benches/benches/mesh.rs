//! Mesh flooding in the simulator at N = 10,000, degree 8: frame receptions per wall second.
//! Each reception is a delivery through the simulated link, a frame decode, a duplicate
//! check and a relay decision in a real `Node`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft_sim::faults::FaultConfig;
use weft_sim::rng::SimRng;
use weft_sim::topology::{edges, Topology};
use weft_sim::world::{World, WorldConfig, MS};

const NODES: u32 = 10_000;
const DEGREE: u32 = 8;

fn joined_world() -> World {
    let seed = 1;
    let edges = edges(
        &Topology::Regular { degree: DEGREE },
        NODES,
        &mut SimRng::child(seed, "topology", 0),
    );
    let mut w = World::new(WorldConfig {
        seed,
        nodes: NODES,
        edges,
        faults: FaultConfig::none(),
        discovery: false,
        chord: false,
        sabotage: false,
    });
    while !w.all_linked() {
        w.run_until(w.now + 100 * MS);
        assert!(w.now < 60_000 * MS, "join took too long");
    }
    w
}

fn mesh(c: &mut Criterion) {
    let mut w = joined_world();
    let e = w.edges().len() as u64;
    let per_broadcast = 2 * e - u64::from(NODES) + 1;
    let mut group = c.benchmark_group("mesh_flood_10k_nodes_degree_8");
    group.sample_size(10);
    group.throughput(Throughput::Elements(per_broadcast));
    let mut origin = 0u32;
    group.bench_function("receptions", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                origin = (origin + 7919) % NODES;
                let before = w.stats.broadcast_transmissions;
                w.schedule_broadcast(w.now, origin);
                let start = Instant::now();
                // The flood crosses the network in a few ms of simulated time.
                w.run_until(w.now + 30 * MS);
                spent += start.elapsed();
                assert_eq!(w.stats.broadcast_transmissions - before, per_broadcast);
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, mesh);
criterion_main!(benches);
