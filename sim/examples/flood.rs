//! Profiling entry point: a joined N-node regular network (N from the `N` variable, default
//! 10,000) floods `B` broadcasts (default 40) and prints receptions per wall second. Run under
//! `perf record` to see where a reception's time goes. Prints wall and on-CPU rates.
use weft_sim::faults::FaultConfig;
use weft_sim::links::LinkSetup;
use weft_sim::rng::SimRng;
use weft_sim::topology::{edges, Topology};
use weft_sim::world::{World, WorldConfig, MS};
fn main() {
    let n: u32 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let edges = edges(
        &Topology::Regular { degree: 8 },
        n,
        &mut SimRng::child(1, "topology", 0),
    );
    let mut w = World::new(WorldConfig {
        seed: 1,
        nodes: n,
        edges,
        faults: FaultConfig::none(),
        discovery: false,
        chord: false,
        sabotage: false,
        links: LinkSetup::OPEN,
    });
    while !w.all_linked() {
        w.run_until(w.now + 100 * MS);
    }
    eprintln!("joined at {} ms", w.now / MS);
    if std::env::var("WAIT").is_ok() {
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
    let b: u32 = std::env::var("B")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    // The engines' counters, summed over every node: outside the timed part.
    let before = w.broadcast_transmissions();
    let cpu = cpu_ns();
    let t = std::time::Instant::now();
    flood_phase(&mut w, b, n);
    let cpu_s = cpu_ns().saturating_sub(cpu) as f64 / 1e9;
    let elapsed = t.elapsed();
    let rx = w.broadcast_transmissions() - before;
    eprintln!(
        "{} receptions in {:?}: {:.0}/s wall, {:.0}/s on the CPU",
        rx,
        elapsed,
        rx as f64 / elapsed.as_secs_f64(),
        rx as f64 / cpu_s
    );
}

/// The measured phase, a function of its own so `valgrind --tool=callgrind
/// --collect-atstart=no --toggle-collect='*flood_phase*'` counts it alone.
#[inline(never)]
fn flood_phase(w: &mut World, b: u32, n: u32) {
    for k in 0..b {
        w.schedule_broadcast(w.now, (k * 7919) % n);
        w.run_until(w.now + 30 * MS);
    }
}

/// This thread's time on the CPU so far, ns (Linux; 0 elsewhere), so a loaded machine's
/// figure is not skewed by waiting for the core.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
