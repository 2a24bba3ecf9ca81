//! `weft sim`: the simulator's command line, embedded in the `weft` binary by drivers/.
//!
//! Exit codes: 0 when every invariant held, 1 on a violation, 2 on bad arguments.

use std::process::ExitCode;

use crate::scenario::chord::{self, ChordParams};
use crate::scenario::mesh::{self, FaultMode, MeshParams};
use crate::scenario::table::{self, TableParams};
use crate::sweep::{self, Shard};

/// Arguments of `weft sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// The scenario; without one, the default scenario of every protocol runs, as a table.
    #[command(subcommand)]
    pub command: Option<SimCommand>,
}

/// `weft sim` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Mesh flood broadcast on a random regular network, with or without faults.
    Mesh(MeshArgs),
    /// The sync table: random writers and leases under faults and skewed clocks.
    Table(TableArgs),
    /// Chord DHT: joins, ring correctness, lookup hops, failures or churn.
    Chord(ChordArgs),
    /// Many seeds of small networks under swarm faults.
    Sweep {
        /// The protocol to sweep.
        #[command(subcommand)]
        protocol: SweepProtocol,
    },
}

/// `weft sim mesh` arguments.
#[derive(Debug, clap::Args)]
pub struct MeshArgs {
    /// Nodes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub nodes: u32,
    /// Links per node (a random regular graph; must be below --nodes).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub degree: u32,
    /// regular (random d-regular), random (Erdős–Rényi), ring, line or star.
    #[arg(long, default_value = "regular")]
    pub topology: String,
    /// Root seed: every choice of the run derives from it.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Broadcasts sent.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub broadcasts: u32,
    /// `none`, `swarm` (every fault parameter from the seed), or a comma-separated list of
    /// latency, bandwidth, connect, resets, clogs, partitions, crashes, pauses, slow, chunks.
    #[arg(long, default_value = "none")]
    pub faults: String,
    /// Length of the safety phase under faults, simulated ms.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub safety_ms: u64,
    /// Deadline for convergence, simulated ms.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub liveness_ms: u64,
    /// Make every node a Chord ring member too (the mesh must be unaffected).
    #[arg(long)]
    pub chord: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Record one delivery twice: shows what a violation and its replay line look like.
    #[arg(long, hide = true)]
    pub sabotage: bool,
}

/// `weft sim table` arguments.
#[derive(Debug, clap::Args)]
pub struct TableArgs {
    /// Nodes.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub nodes: u32,
    /// Links per node (a random regular graph; must be below --nodes).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub degree: u32,
    /// Root seed: every choice of the run derives from it.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Writes scheduled (sets, leased sets, deletes, releases) at random nodes and times.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub writes: u32,
    /// `none`, `swarm`, or a comma-separated list of fault names (as for `weft sim mesh`).
    #[arg(long, default_value = "none")]
    pub faults: String,
    /// Split the network into two halves for the whole write phase.
    #[arg(long)]
    pub halves: bool,
    /// Length of the write phase, simulated ms.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub safety_ms: u64,
    /// Deadline for convergence after the heal, simulated ms.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub liveness_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `weft sim chord` arguments.
#[derive(Debug, clap::Args)]
pub struct ChordArgs {
    /// Nodes (before churn).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub nodes: u32,
    /// Root seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Lookups measured (with --churn: one per simulated second).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub lookups: u32,
    /// Keys put and read back.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub keys: u32,
    /// Fraction of nodes crashing at once once the keys are stored (0 to 0.9).
    #[arg(long, default_value_t = 0.0)]
    pub fail_fraction: f64,
    /// Joins and crashes per simulated second each (Poisson), stabilization every 30 s.
    #[arg(long)]
    pub churn: Option<f64>,
    /// Probability each message is lost.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Swarm faults (loss, crashes, leaves, joins from the seed) for a minute after the puts.
    #[arg(long)]
    pub swarm: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `weft sim sweep` protocols.
#[derive(Debug, clap::Subcommand)]
pub enum SweepProtocol {
    /// Sweep the mesh scenario.
    Mesh(SweepArgs),
    /// Sweep the table scenario.
    Table(SweepArgs),
}

/// `weft sim sweep` arguments.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Seeds 1..=K.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub seeds: u64,
    /// Run only shard I of N (seeds whose position is I modulo N).
    #[arg(long)]
    pub shard: Option<String>,
    /// Threads (default: the machine's cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn bad_args(message: &str) -> ExitCode {
    eprintln!("weft sim: {message}");
    ExitCode::from(2)
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs `weft sim`.
pub fn run(args: SimArgs) -> ExitCode {
    match args.command {
        None => default_table(),
        Some(SimCommand::Mesh(a)) => {
            if a.degree >= a.nodes {
                return bad_args("--degree must be below --nodes");
            }
            let shape = match mesh::Shape::parse(&a.topology) {
                Ok(s) => s,
                Err(e) => return bad_args(&e),
            };
            let faults = match FaultMode::parse(&a.faults) {
                Ok(f) => f,
                Err(e) => return bad_args(&e),
            };
            let mut p = MeshParams::new(a.nodes, a.degree, a.seed, a.broadcasts, faults);
            p.shape = shape;
            p.safety_ms = a.safety_ms;
            p.liveness_ms = a.liveness_ms;
            p.sabotage = a.sabotage;
            p.chord = a.chord;
            let r = mesh::run(&p);
            if a.json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                print!("{}", r.to_text());
            }
            exit(r.ok)
        }
        Some(SimCommand::Table(a)) => {
            if a.degree >= a.nodes {
                return bad_args("--degree must be below --nodes");
            }
            let faults = match FaultMode::parse(&a.faults) {
                Ok(f) => f,
                Err(e) => return bad_args(&e),
            };
            let mut p = TableParams::new(a.nodes, a.seed, a.writes, faults);
            p.degree = a.degree;
            p.halves = a.halves;
            p.safety_ms = a.safety_ms;
            p.liveness_ms = a.liveness_ms;
            let r = table::run(&p);
            if a.json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                print!("{}", r.to_text());
            }
            exit(r.ok)
        }
        Some(SimCommand::Chord(a)) => {
            if !(0.0..=0.9).contains(&a.fail_fraction) {
                return bad_args("--fail-fraction must be between 0 and 0.9");
            }
            if !(0.0..=0.5).contains(&a.loss) {
                return bad_args("--loss must be between 0 and 0.5");
            }
            if a.churn.is_some_and(|r| !(r > 0.0 && r <= 10.0)) {
                return bad_args("--churn must be above 0 and at most 10 per second");
            }
            let p = ChordParams {
                keys: a.keys,
                fail_fraction: a.fail_fraction,
                churn: a.churn,
                loss: a.loss,
                swarm: a.swarm,
                ..ChordParams::new(a.nodes, a.seed, a.lookups)
            };
            let r = chord::run(&p);
            if a.json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                print!("{}", r.to_text());
            }
            exit(r.ok)
        }
        Some(SimCommand::Sweep {
            protocol: SweepProtocol::Table(a),
        }) => sweep_table(a),
        Some(SimCommand::Sweep {
            protocol: SweepProtocol::Mesh(a),
        }) => sweep_mesh(a),
    }
}

/// A sweep's shard and worker threads, from its arguments.
fn sweep_plan(a: &SweepArgs) -> Result<(Shard, usize), String> {
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok((shard.unwrap_or(Shard::ALL), threads))
}

/// One failed seed of a sweep: its violation and replay line.
struct Failure<'a> {
    seed: u64,
    violation: Option<&'a str>,
    replay: &'a str,
}

impl Failure<'_> {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "seed": self.seed, "violation": self.violation, "replay": self.replay })
    }

    fn print(&self) {
        println!(
            "FAILED seed {}: {}\n  replay: {}",
            self.seed,
            self.violation.unwrap_or("?"),
            self.replay
        );
    }
}

/// `weft sim sweep mesh`.
fn sweep_mesh(a: SweepArgs) -> ExitCode {
    let (shard, threads) = match sweep_plan(&a) {
        Ok(plan) => plan,
        Err(e) => return bad_args(&e),
    };
    let wall = std::time::Instant::now();
    let reports = sweep::mesh(a.seeds, shard, threads);
    let failed: Vec<Failure> = reports
        .iter()
        .filter(|r| !r.ok)
        .map(|r| Failure {
            seed: r.seed,
            violation: r.violation.as_deref(),
            replay: &r.replay,
        })
        .collect();
    let wall_ms = wall.elapsed().as_millis() as u64;
    let events: u64 = reports.iter().map(|r| r.events).sum();
    if a.json {
        let value = serde_json::json!({
            "protocol": "mesh",
            "seeds": reports.len(),
            "failed": failed.len(),
            "failures": failed.iter().map(Failure::json).collect::<Vec<_>>(),
            "events": events,
            "wall_ms": wall_ms,
            "ok": failed.is_empty(),
        });
        println!("{value}");
    } else {
        failed.iter().for_each(Failure::print);
        println!(
            "sweep mesh: {} seeds, {} failed, {events} events, {wall_ms} ms wall",
            reports.len(),
            failed.len(),
        );
    }
    exit(failed.is_empty())
}

/// `weft sim sweep table`.
fn sweep_table(a: SweepArgs) -> ExitCode {
    let (shard, threads) = match sweep_plan(&a) {
        Ok(plan) => plan,
        Err(e) => return bad_args(&e),
    };
    let wall = std::time::Instant::now();
    let reports = sweep::table(a.seeds, shard, threads);
    let failed: Vec<Failure> = reports
        .iter()
        .filter(|r| !r.ok)
        .map(|r| Failure {
            seed: r.seed,
            violation: r.violation.as_deref(),
            replay: &r.replay,
        })
        .collect();
    let wall_ms = wall.elapsed().as_millis() as u64;
    let catchup: u64 = reports.iter().map(|r| r.catchup_bytes).sum();
    let full: u64 = reports.iter().map(|r| r.full_resend_bytes).sum();
    let events: u64 = reports.iter().map(|r| r.events).sum();
    if a.json {
        let value = serde_json::json!({
            "protocol": "table",
            "seeds": reports.len(),
            "failed": failed.len(),
            "failures": failed.iter().map(Failure::json).collect::<Vec<_>>(),
            "identical": reports.iter().all(|r| r.identical),
            "lease_violations": reports.iter().map(|r| r.lease_violations).sum::<u64>(),
            "catchup_bytes": catchup,
            "full_resend_bytes": full,
            "events": events,
            "wall_ms": wall_ms,
            "ok": failed.is_empty(),
        });
        println!("{value}");
    } else {
        failed.iter().for_each(Failure::print);
        println!(
            "sweep table: {} seeds, {} failed, catch-up {catchup} bytes vs full resend {full} \
             bytes, {events} events, {wall_ms} ms wall",
            reports.len(),
            failed.len(),
        );
    }
    exit(failed.is_empty())
}

/// The README's main job: the default scenario of every protocol, as a table.
fn default_table() -> ExitCode {
    let scenarios = [
        (
            "mesh, no faults",
            MeshParams::new(1000, 8, 1, 20, FaultMode::None),
        ),
        (
            "mesh, swarm faults",
            MeshParams::new(24, 4, 1, 30, FaultMode::Swarm),
        ),
        (
            "mesh, partitions+crashes",
            MeshParams::new(
                32,
                4,
                2,
                30,
                FaultMode::List("latency,partitions,crashes".into()),
            ),
        ),
    ];
    println!(
        "{:<26}{:>6}{:>7}{:>6}{:>10}{:>9}{:>9}{:>8}{:>11}{:>9}{:>11}  {:<6}",
        "scenario",
        "nodes",
        "edges",
        "bcast",
        "delivered",
        "tx",
        "dups",
        "repair",
        "converged",
        "events",
        "events/s",
        "result"
    );
    let mut all_ok = true;
    let mut replays = Vec::new();
    for (name, p) in scenarios {
        let r = mesh::run(&p);
        all_ok &= r.ok;
        println!(
            "{:<26}{:>6}{:>7}{:>6}{:>10.4}{:>9}{:>9}{:>8}{:>11}{:>9}{:>11}  {:<6}",
            name,
            r.nodes,
            r.edges,
            r.broadcasts,
            r.delivered_fraction,
            r.transmissions,
            r.duplicates,
            r.repair_messages,
            r.converged_ms
                .map_or("never".into(), |ms| format!("{ms} ms")),
            r.events,
            r.events_per_sec,
            if r.ok { "ok" } else { "FAILED" }
        );
        if let Some(v) = &r.violation {
            replays.push(format!("  {name}: {v}\n  replay: {}", r.replay));
        }
    }
    let table_scenarios = [
        (
            "table, swarm faults",
            TableParams::new(16, 1, 200, FaultMode::Swarm),
        ),
        ("table, halves", {
            let mut p = TableParams::new(16, 2, 200, FaultMode::None);
            p.halves = true;
            p
        }),
    ];
    println!(
        "\n{:<26}{:>6}{:>7}{:>7}{:>10}{:>7}{:>9}{:>10}{:>13}{:>11}{:>9}  {:<6}",
        "scenario",
        "nodes",
        "writes",
        "keys",
        "identical",
        "lease!",
        "refused",
        "catch-up",
        "full-resend",
        "converged",
        "events",
        "result"
    );
    for (name, p) in table_scenarios {
        let r = table::run(&p);
        all_ok &= r.ok;
        println!(
            "{:<26}{:>6}{:>7}{:>7}{:>10}{:>7}{:>9}{:>10}{:>13}{:>11}{:>9}  {:<6}",
            name,
            r.nodes,
            r.writes,
            r.keys,
            r.identical,
            r.lease_violations,
            r.refusals,
            r.catchup_bytes,
            r.full_resend_bytes,
            r.converged_ms
                .map_or("never".into(), |ms| format!("{ms} ms")),
            r.events,
            if r.ok { "ok" } else { "FAILED" }
        );
        if let Some(v) = &r.violation {
            replays.push(format!("  {name}: {v}\n  replay: {}", r.replay));
        }
    }
    for line in replays {
        println!("{line}");
    }
    all_ok &= chord_table();
    println!("(times are simulated; each row replays with `weft sim mesh ...`, `weft sim table ...` or `weft sim chord ...`; see --help)");
    exit(all_ok)
}

/// The Chord rows of the default table; true if every run was ok.
fn chord_table() -> bool {
    let scenarios = [
        ("chord, joins", ChordParams::new(256, 1, 1000)),
        (
            "chord, 20% fail at once",
            ChordParams {
                fail_fraction: 0.2,
                ..ChordParams::new(128, 1, 500)
            },
        ),
        (
            "chord, swarm faults",
            ChordParams {
                swarm: true,
                ..ChordParams::new(32, 1, 300)
            },
        ),
    ];
    println!(
        "\n{:<26}{:>6}{:>9}{:>10}{:>6}{:>6}{:>9}{:>6}{:>12}{:>9}{:>11}  {:<6}",
        "scenario",
        "nodes",
        "lookups",
        "mean hops",
        "p50",
        "p99",
        "failed",
        "lost",
        "ring ok",
        "events",
        "events/s",
        "result"
    );
    let mut all_ok = true;
    for (name, p) in scenarios {
        let r = chord::run(&p);
        all_ok &= r.ok;
        println!(
            "{:<26}{:>6}{:>9}{:>10.3}{:>6}{:>6}{:>9.4}{:>6}{:>12}{:>9}{:>11}  {:<6}",
            name,
            r.nodes,
            r.lookups,
            r.mean_hops,
            r.p50_hops,
            r.p99_hops,
            r.failed_lookup_fraction,
            r.keys_lost,
            r.ring_correct_ms
                .map_or("never".into(), |ms| format!("{ms} ms")),
            r.events,
            r.events_per_sec,
            if r.ok { "ok" } else { "FAILED" }
        );
        if let Some(v) = &r.violation {
            println!("  {name}: {v}\n  replay: {}", r.replay);
        }
    }
    all_ok
}
