//! Chord routing, in the engine's machine and in the simulator.
//!
//! - `chord_route_2e14/route_step`: one routing step of one `Chord` machine that knows a ring of
//!   2^14 nodes (its successors, predecessor and all 64 fingers correct): a CHORD_FIND for a
//!   random position handled and its CHORD_FOUND taken (`handle_message`, `poll_output`);
//!   steps per second. The ring is an oracle here: every message the machine sends while it
//!   joins and fixes its fingers is answered as the true ring would answer it, so only this
//!   one machine runs. Beside it, `sorted_ring_search`: the owner of the same positions found
//!   by a binary search of the 2^14 sorted ring positions, what a lookup in one sorted table
//!   costs.
//! - `chord_sim_4096/lookups`: lookups in the simulator's message-level Chord network
//!   (`weft_sim::chord_net`) of 4,096 nodes, joined and with every finger right: 1,000 lookups
//!   from random nodes to random positions started at once and run (with the ring's own
//!   maintenance) until all finished; lookups per wall second. Joining the network first takes
//!   about a minute.
//!
//! `cargo bench -p weft-benches --bench chord`

use std::time::{Duration, Instant as WallInstant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use weft_engine::chord::{finger_start, Chord, ChordConfig, ChordOutput, ChordRequest};
use weft_engine::protocol::{ChordFind, ChordFound, ChordMessage, ChordPeer, ChordState, NodeId};
use weft_engine::{Identity, Instant};
use weft_sim::chord_net::{ChordNet, ChordNetConfig};
use weft_sim::rng::SimRng;

const RING: usize = 1 << 14;
const FINGERS: usize = 64;

/// The true ring: peers sorted by position.
struct Ring {
    peers: Vec<ChordPeer>,
    ids: Vec<u64>,
    successors: usize,
}

impl Ring {
    fn new(n: usize, successors: usize) -> Ring {
        let mut peers: Vec<ChordPeer> = (0..n)
            .map(|i| {
                let mut h = blake3::Hasher::new();
                h.update(b"weft bench chord node\0");
                h.update(&(i as u64).to_le_bytes());
                ChordPeer {
                    node: NodeId(*h.finalize().as_bytes()),
                    addr: format!("10.{}.{}.{}:7000", i >> 16 & 255, i >> 8 & 255, i & 255),
                }
            })
            .collect();
        peers.sort_by_key(ChordPeer::ring_id);
        let ids = peers.iter().map(ChordPeer::ring_id).collect();
        Ring {
            peers,
            ids,
            successors,
        }
    }

    /// The index of the owner of `target`: the first peer at or after it, round the ring.
    fn owner(&self, target: u64) -> usize {
        self.ids.partition_point(|&id| id < target) % self.ids.len()
    }

    fn index(&self, peer: &ChordPeer) -> usize {
        self.owner(peer.ring_id())
    }

    /// `count` peers from index `from` on.
    fn from(&self, from: usize, count: usize) -> Vec<ChordPeer> {
        (0..count)
            .map(|k| self.peers[(from + k) % self.peers.len()].clone())
            .collect()
    }

    /// What `to` answers to `msg`, as the true ring would.
    fn answer(&self, to: &ChordPeer, msg: &ChordMessage) -> Option<ChordMessage> {
        match msg {
            ChordMessage::Find(f) => Some(ChordMessage::Found(ChordFound {
                request: f.request,
                done: true,
                peers: self.from(self.owner(f.target), self.successors),
            })),
            ChordMessage::GetState(request) => {
                let i = self.index(to);
                let n = self.peers.len();
                Some(ChordMessage::State(ChordState {
                    request: *request,
                    predecessor: Some(self.peers[(i + n - 1) % n].clone()),
                    successors: self.from(i + 1, self.successors),
                }))
            }
            _ => None,
        }
    }
}

/// A machine at ring index 0, joined, with every finger right.
fn joined_machine(ring: &Ring, config: ChordConfig) -> Chord {
    let me = ring.peers[0].clone();
    let mut chord = Chord::new(me.clone(), Identity::from_secret(&[1; 32]), config, 1);
    let mut now = Instant(1_000_000_000);
    chord.join(now, ring.peers[RING / 2].clone());
    let fingers_right = |c: &Chord| {
        (0..FINGERS).all(|i| {
            let want = &ring.peers[ring.owner(finger_start(me.ring_id(), i))];
            c.finger(i).is_some_and(|f| f.node == want.node) || want.node == me.node
        })
    };
    // The true predecessor says so, as its stabilize would.
    let predecessor = ring.peers[RING - 1].clone();
    for round in 0..100_000 {
        if round == 10 {
            chord.handle_message(now, &predecessor, ChordMessage::Notify);
        }
        while let Some(out) = chord.poll_output() {
            if let ChordOutput::Send { to, msg } = out {
                if let Some(answer) = ring.answer(&to, &msg) {
                    chord.handle_message(now, &to, answer);
                }
            }
        }
        if fingers_right(&chord) && chord.predecessor().is_some() {
            return chord;
        }
        now = chord.poll_timeout().expect("timers run");
        chord.handle_timeout(now);
    }
    let right = (0..FINGERS)
        .filter(|&i| {
            let want = &ring.peers[ring.owner(finger_start(me.ring_id(), i))];
            chord.finger(i).is_some_and(|f| f.node == want.node)
        })
        .count();
    panic!(
        "the machine's fingers did not converge: {right} right, predecessor {:?}",
        chord.predecessor().is_some()
    );
}

fn route(c: &mut Criterion) {
    let config = ChordConfig::default();
    let ring = Ring::new(RING, config.successor_list_len);
    let mut chord = joined_machine(&ring, config);
    let asker = ring.peers[RING / 3].clone();
    let now = chord.poll_timeout().expect("timers run");
    let mut rng = SimRng::child(1, "chord bench", 0);
    let targets: Vec<u64> = (0..4096).map(|_| rng.next_u64()).collect();
    let mut group = c.benchmark_group("chord_route_2e14");
    group.throughput(Throughput::Elements(1));
    let mut k = 0usize;
    group.bench_function("route_step", |b| {
        b.iter(|| {
            k = (k + 1) % targets.len();
            let find = ChordFind {
                request: k as u64,
                target: targets[k],
            };
            chord.handle_message(now, &asker, ChordMessage::Find(find));
            let out = chord.poll_output().expect("an answer");
            assert!(matches!(
                out,
                ChordOutput::Send {
                    msg: ChordMessage::Found(_),
                    ..
                }
            ));
            black_box(out)
        })
    });
    group.bench_function("sorted_ring_search", |b| {
        b.iter(|| {
            k = (k + 1) % targets.len();
            black_box(ring.owner(black_box(targets[k])))
        })
    });
    group.finish();
}

const SIM_NODES: usize = 4096;
const SIM_LOOKUPS: u64 = 1000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

/// A simulated network of `SIM_NODES`, joined as `weft sim chord` joins it, its ring correct
/// and its fingers right.
fn joined_net() -> ChordNet {
    // `cargo test --benches` runs each bench once (no `--bench`): a small network will do.
    let nodes = if std::env::args().any(|a| a == "--bench") {
        SIM_NODES
    } else {
        64
    };
    let mut chord = ChordConfig::default();
    chord.ops_max = chord.ops_max.max(4 * SIM_LOOKUPS as usize);
    let mut net = ChordNet::new(
        nodes,
        ChordNetConfig {
            seed: 1,
            chord,
            latency_ms: (5, 50),
            loss: 0.0,
        },
    );
    let mut rng = SimRng::child(1, "chord bench joins", 0);
    let spacing = (20 * S / nodes as u64).clamp(MS, 50 * MS);
    net.start(0, None);
    for i in 1..nodes {
        net.run_until(net.now_ns() + spacing);
        let via = rng.below(i as u64) as usize;
        net.start(i, Some(via));
    }
    let deadline = net.now_ns() + 600 * S;
    while (net.check_ring().is_err() || net.fingers_correct_fraction() < 1.0)
        && net.now_ns() < deadline
    {
        net.run_until(net.now_ns() + 5 * S);
    }
    assert!(net.check_ring().is_ok(), "the ring is correct");
    net.app_events.clear();
    net
}

fn sim_lookups(c: &mut Criterion) {
    // Joined on first use: a filtered run that skips the bench does not join it.
    let mut net: Option<ChordNet> = None;
    let mut rng = SimRng::child(1, "chord bench lookups", 0);
    let mut next = 1u64;
    let mut group = c.benchmark_group("chord_sim_4096");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SIM_LOOKUPS));
    group.bench_function("lookups", |b| {
        b.iter_custom(|iters| {
            let net = net.get_or_insert_with(joined_net);
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..SIM_LOOKUPS {
                    let at = rng.below(net.len() as u64) as usize;
                    let target = rng.next_u64();
                    net.request(at, next, ChordRequest::Lookup { target });
                    next += 1;
                }
                let start = WallInstant::now();
                let deadline = net.now_ns() + 60 * S;
                while (net.app_events.len() as u64) < SIM_LOOKUPS {
                    assert!(net.now_ns() < deadline, "lookups did not finish");
                    net.run_until(net.now_ns() + 10 * MS);
                }
                spent += start.elapsed();
                net.app_events.clear();
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, route, sim_lookups);
criterion_main!(benches);
