//! `weft sim`: the simulator's command line, embedded in the `weft` binary by drivers/.
//!
//! Exit codes: 0 when every invariant held, 1 on a violation, 2 on bad arguments.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::links::LinkSetup;
use crate::scenario::chord::{self, ChordParams};
use crate::scenario::drops::{self, DropsParams};
use crate::scenario::mesh::{self, FaultMode, MeshParams};
use crate::scenario::p2pt::{self, P2ptParams};
use crate::scenario::replicate::{self, ReplicateFaults, ReplicateParams};
use crate::scenario::table::{self, TableParams};
use crate::scenario::{RunHeader, Scenario};
use crate::sweep::{self, Shard};

/// Arguments of `weft sim`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, after_help = legend())]
pub struct SimArgs {
    /// The scenario; without one, the default scenario of every protocol runs, as a table.
    #[command(subcommand)]
    pub command: Option<SimCommand>,
    /// Print the default scenarios' reports as one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Run the default mesh and table scenarios with plaintext links (faster; the
    /// simulator only: weft always encrypts). The wrong-secret rows are left out.
    #[arg(long)]
    pub plaintext_sim_only: bool,
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
    /// Folder replication: random file operations under network and storage faults, then
    /// every folder identical and nothing lost.
    Replicate(ReplicateArgs),
    /// Drops: two owners publish under faults while a forging node attacks, then every
    /// subscriber shows the last owner-signed version and nothing forged has landed.
    Drops(DropsArgs),
    /// The p2p.today dialect: py2p-speaking nodes broadcast and write a sync1 table under
    /// cut links and crashes, then every broadcast and key sent after the heal arrives once.
    P2pt(P2ptArgs),
    /// Many seeds of small networks under swarm faults.
    #[command(arg_required_else_help = true)]
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
    /// Links per node of a regular topology, mean links of a random one (must be below
    /// --nodes; ring, line and star ignore it).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub degree: u32,
    /// regular (random d-regular), random (Erdős–Rényi), ring, line or star.
    #[arg(long, default_value = "regular", value_parser = mesh::Shape::parse)]
    pub topology: mesh::Shape,
    /// Root seed: every choice of the run derives from it.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Broadcasts sent.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub broadcasts: u32,
    /// `none`, `swarm` (every fault parameter drawn from the seed; not combined with others),
    /// or a comma-separated list of latency, bandwidth, connect, resets, clogs, partitions,
    /// crashes, pauses, slow, chunks.
    #[arg(long, default_value = "none", value_parser = FaultMode::parse)]
    pub faults: FaultMode,
    /// Length of the safety phase under faults, simulated ms.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub safety_ms: u64,
    /// Deadline for convergence, simulated ms.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub liveness_ms: u64,
    /// Make every node a Chord ring member too (the mesh must be unaffected).
    #[arg(long)]
    pub chord: bool,
    /// How the links are protected.
    #[command(flatten)]
    pub links: LinkArgs,
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
    #[arg(long, default_value = "none", value_parser = FaultMode::parse)]
    pub faults: FaultMode,
    /// Split the network into two halves for the whole write phase.
    #[arg(long)]
    pub halves: bool,
    /// Length of the write phase, simulated ms.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub safety_ms: u64,
    /// Deadline for convergence after the heal, simulated ms.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub liveness_ms: u64,
    /// How the links are protected.
    #[command(flatten)]
    pub links: LinkArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `weft sim p2pt` arguments.
#[derive(Debug, clap::Args)]
pub struct P2ptArgs {
    /// Nodes.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=2_000))]
    pub nodes: u32,
    /// Root seed: every choice of the run derives from it.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `none` or `swarm` (cut links and crashed nodes in the safety phase).
    #[arg(long, default_value = "swarm", value_parser = ["none", "swarm"])]
    pub faults: String,
    /// Broadcasts in the safety phase.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub broadcasts: u32,
    /// Table writes in the safety phase.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub writes: u32,
    /// Length of the safety phase, simulated ms.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub safety_ms: u64,
    /// Deadline for the network to be whole again after the safety phase, simulated ms.
    #[arg(long, default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub liveness_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl P2ptArgs {
    fn params(&self) -> P2ptParams {
        P2ptParams {
            nodes: self.nodes,
            seed: self.seed,
            faults: self.faults == "swarm",
            broadcasts: self.broadcasts,
            writes: self.writes,
            safety_ms: self.safety_ms,
            liveness_ms: self.liveness_ms,
        }
    }
}

/// `weft sim drops` arguments.
#[derive(Debug, clap::Args)]
pub struct DropsArgs {
    /// Honest nodes: the primary owner, the secondary owner and subscribers (the forger is
    /// one more).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(3..=1_000))]
    pub nodes: u32,
    /// Root seed: every choice of the run derives from it.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Publishes by the owners during the safety phase.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub publishes: u32,
    /// `none`, `swarm`, or a comma-separated list of fault names (as for `weft sim mesh`).
    #[arg(long, default_value = "none", value_parser = FaultMode::parse)]
    pub faults: FaultMode,
    /// Leave the forging node out.
    #[arg(long)]
    pub no_forger: bool,
    /// Length of the safety phase, simulated ms.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub safety_ms: u64,
    /// Deadline for convergence after the heal, simulated ms.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub liveness_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl DropsArgs {
    fn params(&self) -> Result<DropsParams, String> {
        let mut p = DropsParams::new(self.nodes, self.seed, self.faults.clone());
        p.publishes = self.publishes;
        p.forger = !self.no_forger;
        p.safety_ms = self.safety_ms;
        p.liveness_ms = self.liveness_ms;
        Ok(p)
    }
}

/// How a mesh or table run's links are protected (Noise with an open network key by
/// default).
#[derive(Debug, clap::Args)]
pub struct LinkArgs {
    /// A private network: every node's Noise key is derived from this secret (letters,
    /// digits and -_.:/+=,@, as the replay line carries it).
    #[arg(long)]
    pub secret: Option<String>,
    /// Nodes added with another secret: they dial the network and are dialed, must never
    /// link with it, and nothing is owed to them.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub wrong_secret_nodes: u32,
    /// Plaintext links instead of Noise: faster, for the simulator only (weft always
    /// encrypts); the report says so.
    #[arg(long)]
    pub plaintext_sim_only: bool,
}

impl LinkArgs {
    fn setup(&self) -> Result<LinkSetup, String> {
        let setup = LinkSetup {
            plaintext: self.plaintext_sim_only,
            secret: self.secret.clone(),
            wrong_secret_nodes: self.wrong_secret_nodes,
        };
        setup.check()?;
        Ok(setup)
    }
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
    /// One malicious member (SPEC.md §20.7): a ground id below a holder, forged stores and
    /// deletes, forged, replayed or empty answers to gets.
    #[arg(long)]
    pub adversary: bool,
    /// The drops tracker phase (SPEC.md §20.7, §20.9): 4 holders announce a drop and
    /// re-announce; one node floods its holders key with N valid records of fresh keys and
    /// forged entries of every kind.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub tracker_flood: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `weft sim replicate` arguments.
#[derive(Debug, clap::Args)]
pub struct ReplicateArgs {
    /// Nodes.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub nodes: u32,
    /// Root seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Local operations (creates, edits, inserts, truncations, renames, deletes, mode
    /// changes, directories, symlinks) at random nodes.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub ops: u32,
    /// regular, random, ring, line or star.
    #[arg(long, default_value = "regular", value_parser = mesh::Shape::parse)]
    pub topology: mesh::Shape,
    /// Links per node of a regular topology, mean links of a random one (below --nodes).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub degree: u32,
    /// `none`, `swarm`, or a comma-separated list of latency, drops, partitions, crashes,
    /// writes, disk.
    #[arg(long, default_value = "none", value_parser = ReplicateFaults::parse)]
    pub faults: ReplicateFaults,
    /// The last node flips a byte in every HEREIS it sends (makes no operations, never
    /// crashes); refused where honest nodes reach each other only through it.
    #[arg(long)]
    pub corrupt_peer: bool,
    /// Length of the operation phase, simulated ms.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub safety_ms: u64,
    /// Deadline for convergence after the heal, simulated ms.
    #[arg(long, default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub liveness_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

impl ReplicateArgs {
    fn params(&self) -> Result<ReplicateParams, String> {
        let degree = if self.topology.uses_degree() {
            if self.degree >= self.nodes {
                return Err("--degree must be below --nodes".into());
            }
            self.degree
        } else {
            ReplicateParams::new(self.nodes, self.seed, self.ops).degree
        };
        let p = ReplicateParams {
            shape: self.topology,
            degree,
            faults: self.faults.clone(),
            corrupt_peer: self.corrupt_peer,
            safety_ms: self.safety_ms,
            liveness_ms: self.liveness_ms,
            ..ReplicateParams::new(self.nodes, self.seed, self.ops)
        };
        if replicate::corrupt_peer_cuts(&p) {
            return Err(format!(
                "--corrupt-peer: node {} is a cut vertex of this network (some honest nodes \
                 reach each other only through it); use --topology ring, line or star, or \
                 another --seed",
                p.nodes - 1
            ));
        }
        Ok(p)
    }
}

/// `weft sim sweep` protocols.
#[derive(Debug, clap::Subcommand)]
pub enum SweepProtocol {
    /// Sweep the mesh scenario.
    Mesh(SweepArgs),
    /// Sweep the table scenario.
    Table(SweepArgs),
    /// Sweep the chord scenario (16 to 40 nodes, swarm faults).
    Chord(SweepArgs),
    /// Sweep the replicate scenario (3 to 7 nodes, swarm faults, a corrupt peer on every
    /// other seed; with --large, 8 to 16 nodes).
    Replicate(ReplicateSweepArgs),
    /// Sweep the drops scenario (6 honest nodes and a forger, swarm faults).
    Drops(SweepArgs),
    /// Sweep the p2p.today dialect's scenario (4 to 16 nodes, swarm faults).
    P2pt(SweepArgs),
}

/// `weft sim sweep replicate` arguments.
#[derive(Debug, clap::Args)]
pub struct ReplicateSweepArgs {
    /// Larger networks: 8 to 16 nodes of every shape, 100 to 300 operations, a corrupt peer
    /// on every third seed where it is no cut vertex (about 1 s a seed).
    #[arg(long)]
    pub large: bool,
    /// The seeds, shards, threads and output, as for every sweep.
    #[command(flatten)]
    pub sweep: SweepArgs,
}

/// `weft sim sweep` arguments.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// K seeds: FIRST..=FIRST+K-1 (1..=K by default).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub seeds: u64,
    /// The first seed (a later sweep goes on where an earlier one ended).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=u64::MAX / 2))]
    pub first_seed: u64,
    /// Run only shard I of N (seeds whose position is I modulo N).
    #[arg(long)]
    pub shard: Option<String>,
    /// Threads (default: the machine's cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Plaintext links on every seed instead of Noise (open, private, or private with a
    /// wrong-secret node, by seed): faster, for the simulator only (mesh and table).
    #[arg(long)]
    pub plaintext_sim_only: bool,
    /// How often progress is reported on stderr, ms (0: at every seed, as tests use it).
    #[arg(long, hide = true, default_value_t = PROGRESS_EVERY.as_millis() as u64)]
    pub progress_ms: u64,
}

impl MeshArgs {
    fn params(&self) -> Result<MeshParams, String> {
        if self.topology.uses_degree() && self.degree >= self.nodes {
            return Err("--degree must be below --nodes".into());
        }
        let mut p = MeshParams::new(
            self.nodes,
            self.degree,
            self.seed,
            self.broadcasts,
            self.faults.clone(),
        );
        p.shape = self.topology;
        p.safety_ms = self.safety_ms;
        p.liveness_ms = self.liveness_ms;
        p.sabotage = self.sabotage;
        p.chord = self.chord;
        p.links = self.links.setup()?;
        Ok(p)
    }
}

impl TableArgs {
    fn params(&self) -> Result<TableParams, String> {
        if self.degree >= self.nodes {
            return Err("--degree must be below --nodes".into());
        }
        let faults = self.faults.clone();
        let mut p = TableParams::new(self.nodes, self.seed, self.writes, faults);
        p.degree = self.degree;
        p.halves = self.halves;
        p.safety_ms = self.safety_ms;
        p.liveness_ms = self.liveness_ms;
        p.links = self.links.setup()?;
        Ok(p)
    }
}

impl ChordArgs {
    fn params(&self) -> Result<ChordParams, String> {
        if !(0.0..=0.9).contains(&self.fail_fraction) {
            return Err("--fail-fraction must be between 0 and 0.9".into());
        }
        if !(0.0..=0.5).contains(&self.loss) {
            return Err("--loss must be between 0 and 0.5".into());
        }
        if self.churn.is_some_and(|r| !(r > 0.0 && r <= 10.0)) {
            return Err("--churn must be above 0 and at most 10 per second".into());
        }
        Ok(ChordParams {
            keys: self.keys,
            fail_fraction: self.fail_fraction,
            churn: self.churn,
            loss: self.loss,
            swarm: self.swarm,
            adversary: self.adversary,
            tracker_flood: self.tracker_flood,
            ..ChordParams::new(self.nodes, self.seed, self.lookups)
        })
    }
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
    use SweepProtocol as P;
    let done = match args.command {
        None => Ok(default_table(args.json, args.plaintext_sim_only)),
        Some(SimCommand::Mesh(a)) => a.params().map(|p| show(&mesh::run(&p), a.json)),
        Some(SimCommand::Table(a)) => a.params().map(|p| show(&table::run(&p), a.json)),
        Some(SimCommand::Chord(a)) => a.params().map(|p| show(&chord::run(&p), a.json)),
        Some(SimCommand::Replicate(a)) => a.params().map(|p| show(&replicate::run(&p), a.json)),
        Some(SimCommand::Drops(a)) => a.params().map(|p| show(&drops::run(&p), a.json)),
        Some(SimCommand::P2pt(a)) => Ok(show(&p2pt::run(&a.params()), a.json)),
        Some(SimCommand::Sweep { protocol }) => match protocol {
            P::Mesh(a) => {
                let plaintext = a.plaintext_sim_only;
                sweep(a, "mesh", |s| {
                    let mut p = mesh::sweep_params(s);
                    p.links = LinkSetup::for_sweep_seed(s, plaintext);
                    mesh::run(&p)
                })
            }
            P::Table(a) => {
                let plaintext = a.plaintext_sim_only;
                sweep(a, "table", |s| {
                    let mut p = table::sweep_params(s);
                    p.links = LinkSetup::for_sweep_seed(s, plaintext);
                    table::run(&p)
                })
            }
            P::Chord(a) if a.plaintext_sim_only => Err(
                "--plaintext-sim-only: chord sweeps run message-level Chord machines, which \
                 have no links"
                    .into(),
            ),
            P::Chord(a) => sweep(a, "chord", |s| chord::run(&chord::sweep_params(s))),
            P::Replicate(a) if a.sweep.plaintext_sim_only => Err(
                "--plaintext-sim-only: replicate sweeps run message-level machines, which have \
                 no links"
                    .into(),
            ),
            P::Replicate(ReplicateSweepArgs { large, sweep: a }) => {
                let params = if large {
                    replicate::sweep_params_large
                } else {
                    replicate::sweep_params
                };
                sweep(a, "replicate", move |s| replicate::run(&params(s)))
            }
            P::Drops(a) if a.plaintext_sim_only => Err(
                "--plaintext-sim-only: drops sweeps always run plaintext links (the forger \
                 writes its frames into them as they are)"
                    .into(),
            ),
            P::Drops(a) => sweep(a, "drops", |s| drops::run(&drops::sweep_params(s))),
            P::P2pt(a) if a.plaintext_sim_only => Err(
                "--plaintext-sim-only: p2pt sweeps always run plaintext links (p2p.today has \
                 no encryption)"
                    .into(),
            ),
            P::P2pt(a) => sweep(a, "p2pt", |s| p2pt::run(&p2pt::sweep_params(s))),
        },
    };
    done.unwrap_or_else(|message| {
        eprintln!("weft sim: {message}");
        ExitCode::from(2)
    })
}

/// Prints one run's report, as text or JSON; its exit status.
fn show(r: &impl Scenario, json: bool) -> ExitCode {
    if json {
        println!("{}", r.to_json());
    } else {
        print!("{}", r.to_text());
    }
    exit(r.header().ok)
}

/// `weft sim sweep PROTOCOL`: `run` over the seeds, then each failure with its replay line and
/// the totals, as text or JSON.
fn sweep<R: Scenario + Send>(
    a: SweepArgs,
    protocol: &str,
    run: impl Fn(u64) -> R + Sync,
) -> Result<ExitCode, String> {
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?;
    let links = match (protocol, a.plaintext_sim_only) {
        ("chord", _) => "none (message-level Chord machines)",
        ("replicate", _) => "none (message-level replication machines)",
        ("drops", _) => "PLAINTEXT (simulation only: the forger writes its frames as they are)",
        ("p2pt", _) => "PLAINTEXT (p2p.today has no encryption)",
        (_, true) => "PLAINTEXT (simulation only)",
        _ => "noise (seeds alternate open, private, private + 1 wrong-secret node)",
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let wall = Instant::now();
    let mut progress = ProgressLine::new(protocol);
    let mut report = |p: sweep::Progress| progress.show(p, wall.elapsed());
    let seeds = a.first_seed..=a.first_seed + (a.seeds - 1);
    let reports = sweep::run_with_progress(
        seeds.clone(),
        shard.unwrap_or(Shard::ALL),
        threads,
        run,
        |r| !r.header().ok,
        Some((Duration::from_millis(a.progress_ms), &mut report)),
    );
    progress.end();
    let wall_ms = wall.elapsed().as_millis() as u64;
    let failed: Vec<&RunHeader> = reports
        .iter()
        .map(Scenario::header)
        .filter(|h| !h.ok)
        .collect();
    let events: u64 = reports.iter().map(|r| r.header().events).sum();
    let (sums, sums_text) = R::sweep_sums(&reports);
    if a.json {
        let failure = |h: &&RunHeader| serde_json::json!({ "seed": h.seed, "violation": h.violation, "replay": h.replay });
        let failures: Vec<_> = failed.iter().map(failure).collect();
        let mut value = serde_json::json!({
            "protocol": protocol,
            "seeds": reports.len(),
            "first_seed": seeds.start(),
            "last_seed": seeds.end(),
            "failed": failed.len(),
            "failures": failures,
            "events": events,
            "wall_ms": wall_ms,
            "links": links,
            "ok": failed.is_empty(),
        });
        if let Some(map) = value.as_object_mut() {
            map.extend(sums.into_iter().map(|(k, v)| (k.to_string(), v)));
        }
        println!("{value}");
    } else {
        for h in &failed {
            println!(
                "FAILED seed {}",
                h.failure(&h.seed.to_string()).unwrap_or_default()
            );
        }
        println!(
            "sweep {protocol}: {} seeds ({}..={}), {} failed, {sums_text}{events} events, \
             {wall_ms} ms wall; links: {links}",
            reports.len(),
            seeds.start(),
            seeds.end(),
            failed.len(),
        );
    }
    Ok(exit(failed.is_empty()))
}

/// How often a sweep reports its progress on stderr (and so the shortest sweep that does),
/// unless `--progress-ms` says otherwise.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A sweep's progress on stderr: `weft sim sweep mesh: 120/200 seeds, 0 failed, 12 s`, a line
/// each report; on a terminal, one line rewritten in place and erased at the end.
struct ProgressLine<'a> {
    protocol: &'a str,
    terminal: bool,
    shown: bool,
}

impl<'a> ProgressLine<'a> {
    fn new(protocol: &'a str) -> Self {
        ProgressLine {
            protocol,
            terminal: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    fn show(&mut self, p: sweep::Progress, elapsed: Duration) {
        let line = progress_text(self.protocol, p, elapsed);
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            write!(err, "\r\x1b[K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        self.shown = true;
    }

    fn end(&self) {
        if self.terminal && self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// One progress report's text.
fn progress_text(protocol: &str, p: sweep::Progress, elapsed: Duration) -> String {
    format!(
        "weft sim sweep {protocol}: {}/{} seeds, {} failed, {} s",
        p.done,
        p.total,
        p.failed,
        elapsed.as_secs()
    )
}

/// What each column of the default table means, per protocol, in the order of the columns
/// (each scenario's `Scenario::cells`).
const COLUMNS: [(&str, &[(&str, &str)]); 5] = [
    (
        "mesh",
        &[
            ("nodes", "nodes in the network"),
            ("edges", "links drawn between them"),
            ("bcast", "broadcasts sent"),
            (
                "delivered",
                "fraction of the deliveries owed at the end that were made (1: all)",
            ),
            ("tx", "BROADCAST frames sent"),
            ("dups", "BROADCAST frames a node received again"),
            (
                "repair",
                "repair frames sent (MESH_DIGEST, MESH_WANT, MESH_REPAIR)",
            ),
            (
                "converged",
                "from the last broadcast (or the heal) until every node held all owed",
            ),
            ("events", "simulator events processed"),
            ("events/s", "events per second of wall-clock time"),
        ],
    ),
    (
        "table",
        &[
            ("nodes", "nodes in the network"),
            (
                "writes",
                "writes scheduled (sets, leased sets, deletes, releases)",
            ),
            ("keys", "keys set at the end"),
            (
                "identical",
                "whether every live node ended with the same table",
            ),
            (
                "lease!",
                "accepted writes another node's lease covered (must be 0)",
            ),
            ("refused", "writes refused under a lease"),
            (
                "catch-up",
                "anti-entropy bytes (TABLE_DIGEST, TABLE_WANT, TABLE_ENTRIES)",
            ),
            (
                "full-resend",
                "bytes that resending whole tables would have cost instead",
            ),
            (
                "converged",
                "from the heal until every live node held the same table",
            ),
            ("events", "simulator events processed"),
        ],
    ),
    (
        "chord",
        &[
            ("nodes", "nodes at the start"),
            ("lookups", "lookups measured"),
            ("mean hops", "nodes contacted per lookup, on average"),
            ("p50", "median hops"),
            ("p99", "99th-percentile hops"),
            (
                "failed",
                "fraction of lookups that failed or named a wrong owner",
            ),
            (
                "lost",
                "keys with a live holder that a get could not return",
            ),
            (
                "ring ok",
                "from the last join until every successor and predecessor was right",
            ),
            ("events", "simulator events processed"),
            ("events/s", "events per second of wall-clock time"),
        ],
    ),
    (
        "replicate",
        &[
            ("nodes", "nodes in the network"),
            ("ops", "local file operations carried out at random nodes"),
            (
                "identical",
                "whether every node ended with the same folder (digest)",
            ),
            (
                "lost",
                "versions written and never superseded that a node lacks (must be 0)",
            ),
            (
                "corrupt",
                "files anywhere with content no operation wrote (must be 0)",
            ),
            ("conflicts", "conflict copies made"),
            (
                "sent/need",
                "HEREIS bytes sent over the bytes of blocks receivers lacked",
            ),
            (
                "index",
                "index message bytes (LIST, IHAVE, IMOVED, IDELETED)",
            ),
            (
                "converged",
                "from the heal until every node was idle with nothing in flight",
            ),
            ("events", "simulator events processed"),
        ],
    ),
    (
        "p2p.today",
        &[
            (
                "nodes",
                "nodes in the network (a sync1 subnet, half of them compressing)",
            ),
            ("faults", "links cut and nodes crashed in the safety phase"),
            (
                "delivered",
                "broadcasts sent after the heal delivered exactly once, of those owed",
            ),
            ("keys", "keys written after the heal held, of those owed"),
            (
                "whole",
                "from the heal until every node was up and the network connected",
            ),
            (
                "dups",
                "broadcast frames dropped as already seen (60 s window)",
            ),
            ("events", "simulator events processed"),
        ],
    ),
];

/// The column legend `weft sim --help` ends with.
fn legend() -> String {
    let mut text = String::from(
        "Columns of the table `weft sim` prints (times are simulated ms; result: ok, or FAILED\n\
         with the violation and its replay line below the rows):",
    );
    for (protocol, columns) in COLUMNS {
        text.push_str(&format!("\n  {protocol}:"));
        for (title, meaning) in columns {
            text.push_str(&format!("\n    {title:<13}{meaning}"));
        }
    }
    text
}

/// The default table's scenarios, by protocol: each row's name and parameters.
type DefaultScenarios = (
    Vec<(&'static str, MeshParams)>,
    Vec<(&'static str, TableParams)>,
    Vec<(&'static str, ChordParams)>,
    Vec<(&'static str, ReplicateParams)>,
);

/// The secret of the default table's private networks.
const DEFAULT_SECRET: &str = "weft-sim";

/// The scenarios of the default table: with Noise links (an open network, but for the
/// wrong-secret rows: a private one and a node of another secret), or, if `plaintext`, with
/// plaintext links and without the wrong-secret rows.
fn default_scenarios(plaintext: bool) -> DefaultScenarios {
    let mut mesh = vec![
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
        ("mesh, wrong-secret node", {
            let mut p = MeshParams::new(24, 4, 3, 30, FaultMode::Swarm);
            p.links = LinkSetup::private(DEFAULT_SECRET, 1);
            p
        }),
    ];
    let mut table = vec![
        (
            "table, swarm faults",
            TableParams::new(16, 1, 200, FaultMode::Swarm),
        ),
        ("table, halves", {
            let mut p = TableParams::new(16, 2, 200, FaultMode::None);
            p.halves = true;
            p
        }),
        ("table, wrong-secret node", {
            let mut p = TableParams::new(16, 3, 200, FaultMode::Swarm);
            p.links = LinkSetup::private(DEFAULT_SECRET, 1);
            p
        }),
    ];
    if plaintext {
        mesh.retain(|(_, p)| p.links.wrong_secret_nodes == 0);
        table.retain(|(_, p)| p.links.wrong_secret_nodes == 0);
        mesh.iter_mut()
            .for_each(|(_, p)| p.links = LinkSetup::plaintext());
        table
            .iter_mut()
            .for_each(|(_, p)| p.links = LinkSetup::plaintext());
    }
    let chord = vec![
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
    let replicate = vec![
        ("replicate, 5 nodes", ReplicateParams::new(5, 1, 60)),
        ("replicate, line of 5", {
            let mut p = ReplicateParams::new(5, 2, 60);
            p.shape = mesh::Shape::Line;
            p
        }),
        ("replicate, corrupt peer", {
            let mut p = ReplicateParams::new(5, 3, 60);
            p.shape = mesh::Shape::Ring;
            p.corrupt_peer = true;
            p
        }),
    ];
    (mesh, table, chord, replicate)
}

/// The drops rows of the default table (plaintext links, simulation only: the forger writes
/// its frames into its links).
fn default_drops() -> Vec<(&'static str, DropsParams)> {
    vec![(
        "drops, swarm faults, forger",
        DropsParams::new(6, 1, FaultMode::Swarm),
    )]
}

/// The README's main job: the default scenario of every protocol, as a table under a line
/// saying how links are protected (or, with `json`, one JSON object: `runs`, each report with
/// its `scenario` name and `links`, and `ok`); with `plaintext`, the mesh and table rows run
/// plaintext links, simulation only.
fn default_table(json: bool, plaintext: bool) -> ExitCode {
    let (mesh, table, chord, replicate) = default_scenarios(plaintext);
    if !json {
        println!("{}", links_line(plaintext));
    }
    let mut runs = Vec::new();
    let mesh_ok = section("", &mesh, mesh::run, json.then_some(&mut runs));
    let table_ok = section("\n", &table, table::run, json.then_some(&mut runs));
    let chord_ok = section("\n", &chord, chord::run, json.then_some(&mut runs));
    let replicate_ok = section("\n", &replicate, replicate::run, json.then_some(&mut runs));
    let drops_ok = section(
        "\n",
        &default_drops(),
        drops::run,
        json.then_some(&mut runs),
    );
    let p2pt_ok = section(
        "\n",
        &[("p2p.today, swarm faults", P2ptParams::new(16, 1, true))],
        p2pt::run,
        json.then_some(&mut runs),
    );
    let ok = mesh_ok && table_ok && chord_ok && replicate_ok && drops_ok && p2pt_ok;
    if json {
        println!("{}", serde_json::json!({ "runs": runs, "ok": ok }));
    } else {
        println!("(times are simulated; each row replays with `weft sim mesh ...`, `weft sim table ...`, `weft sim chord ...`, `weft sim replicate ...`, `weft sim drops ...` or `weft sim p2pt ...`; the columns are explained in `weft sim --help`)");
    }
    exit(ok)
}

/// The default table's header line: how the mesh and table rows' links are protected.
fn links_line(plaintext: bool) -> String {
    if plaintext {
        "links: PLAINTEXT (--plaintext-sim-only: simulation only, weft itself always encrypts)"
            .into()
    } else {
        format!(
            "links: {} (open network; the wrong-secret rows: a private network and a node of \
             another secret, which must never link)",
            weft_engine::noise::NOISE_PROTOCOL
        )
    }
}

/// One protocol's part of the default table, after `gap`: a title line, a row per scenario as
/// it finishes, then each failure with its replay line; or, given `json`, each report added
/// to it with its `scenario` name, and nothing printed. True if every run held.
fn section<P, R: Scenario>(
    gap: &str,
    scenarios: &[(&str, P)],
    run: fn(&P) -> R,
    mut json: Option<&mut Vec<serde_json::Value>>,
) -> bool {
    let mut ok = true;
    let mut failures = Vec::new();
    for (k, (name, p)) in scenarios.iter().enumerate() {
        let r = run(p);
        ok &= r.header().ok;
        if let Some(runs) = json.as_deref_mut() {
            let mut value = serde_json::json!({ "scenario": name });
            if let (Some(map), Ok(serde_json::Value::Object(report))) =
                (value.as_object_mut(), serde_json::to_value(&r))
            {
                map.extend(report);
            }
            runs.push(value);
            continue;
        }
        let cells = r.cells();
        if k == 0 {
            let titles: String = cells.iter().map(|(t, w, _)| format!("{t:>w$}")).collect();
            println!("{gap}{:<26}{titles}  {:<6}", "scenario", "result");
        }
        let values: String = cells.iter().map(|(_, w, v)| format!("{v:>w$}")).collect();
        println!("{name:<26}{values}  {:<6}", r.header().result());
        failures.extend(r.header().failure(&format!("  {name}")));
    }
    failures.iter().for_each(|f| println!("{f}"));
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Cell;
    use clap::Parser;

    /// `weft` as far as `weft sim` goes.
    #[derive(Parser)]
    #[command(name = "weft")]
    struct Weft {
        #[command(subcommand)]
        command: Top,
    }

    #[derive(clap::Subcommand)]
    enum Top {
        Sim(SimArgs),
    }

    /// A printed command line, split as a shell splits unquoted words, parsed as `weft` does.
    fn parse(line: &str) -> Result<SimCommand, String> {
        let Weft {
            command: Top::Sim(args),
        } = Weft::try_parse_from(line.split_whitespace()).map_err(|e| e.to_string())?;
        args.command.ok_or_else(|| "no scenario".into())
    }

    /// The parameters a replay line runs with, shown with `Debug`.
    fn replayed(line: &str) -> Result<String, String> {
        Ok(match parse(line)? {
            SimCommand::Mesh(a) => format!("{:?}", a.params()?),
            SimCommand::Table(a) => format!("{:?}", a.params()?),
            SimCommand::Chord(a) => format!("{:?}", a.params()?),
            SimCommand::Replicate(a) => format!("{:?}", a.params()?),
            SimCommand::Drops(a) => format!("{:?}", a.params()?),
            SimCommand::P2pt(a) => format!("{:?}", a.params()),
            SimCommand::Sweep { .. } => return Err("a sweep is no replay".into()),
        })
    }

    #[test]
    fn every_replay_line_parses_back_to_the_same_run() {
        let mut runs: Vec<(String, String)> = Vec::new();
        let mut mesh_run = |p: MeshParams| runs.push((p.replay(), format!("{p:?}")));
        for seed in 1..=60 {
            mesh_run(mesh::sweep_params(seed));
        }
        let (mesh_rows, table_rows, chord_rows, replicate_rows) = default_scenarios(false);
        let (plain_mesh, plain_table, _, _) = default_scenarios(true);
        plain_mesh.into_iter().for_each(|(_, p)| mesh_run(p));
        mesh_rows.into_iter().for_each(|(_, p)| mesh_run(p));
        // A shape that ignores --degree, whatever it is; a list with spaces and empty names.
        let mut star = MeshParams::new(5, 8, 3, 4, FaultMode::List(" latency, ,crashes ".into()));
        star.shape = mesh::Shape::Star;
        star.sabotage = true;
        mesh_run(star.clone());
        mesh_run(MeshParams::new(6, 2, 1, 3, FaultMode::List(String::new())));
        let mut table_run = |p: TableParams| runs.push((p.replay(), format!("{p:?}")));
        (1..=60).for_each(|seed| table_run(table::sweep_params(seed)));
        table_rows.into_iter().for_each(|(_, p)| table_run(p));
        plain_table.into_iter().for_each(|(_, p)| table_run(p));
        let mut chord_run = |p: ChordParams| runs.push((p.replay(), format!("{p:?}")));
        (1..=60).for_each(|seed| chord_run(chord::sweep_params(seed)));
        chord_rows.into_iter().for_each(|(_, p)| chord_run(p));
        chord_run(ChordParams {
            churn: Some(0.1),
            loss: 0.05,
            ..ChordParams::new(50, 4, 100)
        });
        chord_run(ChordParams {
            tracker_flood: Some(128),
            adversary: true,
            ..ChordParams::new(16, 2, 20)
        });
        let mut replicate_run = |p: ReplicateParams| runs.push((p.replay(), format!("{p:?}")));
        (1..=60).for_each(|seed| replicate_run(replicate::sweep_params(seed)));
        (1..=60).for_each(|seed| replicate_run(replicate::sweep_params_large(seed)));
        replicate_rows
            .into_iter()
            .for_each(|(_, p)| replicate_run(p));
        let mut listed = ReplicateParams::new(4, 9, 7);
        listed.faults = ReplicateFaults::List("drops,writes".into());
        listed.shape = mesh::Shape::Star;
        listed.safety_ms = 5_000;
        replicate_run(listed);
        let p2pt_sweep = (1..=20).map(p2pt::sweep_params);
        for p in [P2ptParams::new(16, 1, true), P2ptParams::new(5, 9, false)]
            .into_iter()
            .chain(p2pt_sweep)
        {
            runs.push((p.replay(), format!("{p:?}")));
        }
        let drops_sweep = (1..=60).map(drops::sweep_params);
        for p in default_drops()
            .into_iter()
            .map(|(_, p)| p)
            .chain(drops_sweep)
        {
            runs.push((p.replay(), format!("{p:?}")));
        }
        let mut quiet = DropsParams::new(3, 4, FaultMode::None);
        quiet.forger = false;
        quiet.safety_ms = 9_000;
        runs.push((quiet.replay(), format!("{quiet:?}")));
        for (line, params) in &runs {
            let again = replayed(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            // Lists are printed trimmed: compare the runs, not the spelling.
            let params = params.replace(" latency, ,crashes ", "latency,crashes");
            let params = params.replace("List(\"\")", "None");
            assert_eq!(again, params, "{line}");
        }
        // The same run: the same trace.
        let line = star.replay();
        let Ok(SimCommand::Mesh(a)) = parse(&line) else {
            panic!("{line}")
        };
        let again = mesh::run(&a.params().unwrap());
        let first = mesh::run(&star);
        assert!(!first.header.ok, "sabotaged");
        assert_eq!(again.header.digest, first.header.digest);
        assert_eq!(again.header.replay, line);
    }

    #[test]
    fn faults_are_one_mode_or_a_list_of_names() {
        for empty in ["", " ", ",", " , "] {
            let e = FaultMode::parse(empty).unwrap_err();
            assert!(e.contains("no faults named"), "{empty:?}: {e}");
        }
        let e = FaultMode::parse("swarm,latency").unwrap_err();
        assert!(e.contains("cannot be combined"), "{e}");
        assert!(FaultMode::parse("none, crashes").is_err());
        assert!(FaultMode::parse("latency,bogus")
            .unwrap_err()
            .contains("unknown fault 'bogus'"));
        assert_eq!(FaultMode::parse(" swarm "), Ok(FaultMode::Swarm));
        assert_eq!(
            FaultMode::parse(" latency , crashes,"),
            Ok(FaultMode::List("latency,crashes".into()))
        );
    }

    #[test]
    fn ring_line_and_star_need_no_degree() {
        for shape in ["star", "ring", "line"] {
            let line = format!("weft sim mesh --nodes 4 --topology {shape}");
            let Ok(SimCommand::Mesh(a)) = parse(&line) else {
                panic!("{line}")
            };
            let p = a.params().unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(!p.replay().contains("--degree"), "{}", p.replay());
        }
        let Ok(SimCommand::Mesh(a)) = parse("weft sim mesh --nodes 4") else {
            panic!()
        };
        assert!(
            a.params().is_err(),
            "a regular graph of degree 8 on 4 nodes"
        );
    }

    #[test]
    fn the_default_table_as_json_names_each_run() {
        let scenarios = [("tiny mesh", MeshParams::new(4, 2, 1, 2, FaultMode::None))];
        let mut runs = Vec::new();
        assert!(section("", &scenarios, mesh::run, Some(&mut runs)));
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0]["scenario"], "tiny mesh");
        assert_eq!(runs[0]["protocol"], "mesh");
        assert_eq!(runs[0]["broadcasts"], 2);
        assert_eq!(runs[0]["ok"], true);
        let mut sabotaged = scenarios[0].1.clone();
        sabotaged.sabotage = true;
        let mut runs = Vec::new();
        assert!(!section(
            "",
            &[("bad", sabotaged)],
            mesh::run,
            Some(&mut runs)
        ));
        assert!(runs[0]["replay"].as_str().unwrap().ends_with("--sabotage"));
    }

    #[test]
    fn the_legend_names_every_column_in_order() {
        let mesh_cells = mesh::run(&MeshParams::new(4, 2, 1, 1, FaultMode::None)).cells();
        let table_cells = table::run(&TableParams::new(3, 1, 3, FaultMode::None)).cells();
        let chord_params = ChordParams {
            keys: 2,
            ..ChordParams::new(3, 1, 5)
        };
        let chord_cells = chord::run(&chord_params).cells();
        let titles = |cells: Vec<Cell>| cells.into_iter().map(|(t, _, _)| t).collect::<Vec<_>>();
        let replicate_cells = replicate::run(&ReplicateParams::new(2, 1, 2)).cells();
        let cells = [
            titles(mesh_cells),
            titles(table_cells),
            titles(chord_cells),
            titles(replicate_cells),
        ];
        for ((protocol, columns), cells) in COLUMNS.iter().zip(cells) {
            let legend: Vec<&str> = columns.iter().map(|(t, _)| *t).collect();
            assert_eq!(legend, cells, "{protocol}");
        }
        let help = legend();
        assert!(
            help.contains("\n    lease!       accepted writes"),
            "{help}"
        );
    }
}
