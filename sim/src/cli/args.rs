//! `weft sim`'s arguments: one set per scenario and for the sweeps, each turned into the
//! scenario's parameters.

use crate::links::LinkSetup;
use crate::scenario::chord::ChordParams;
use crate::scenario::drops::DropsParams;
use crate::scenario::mesh::{self, FaultMode, MeshParams};
use crate::scenario::p2pt::P2ptParams;
use crate::scenario::replicate::{self, ReplicateFaults, ReplicateParams};
use crate::scenario::table::TableParams;

use super::report::legend;
use super::PROGRESS_EVERY;

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
    pub(super) fn params(&self) -> P2ptParams {
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
    pub(super) fn params(&self) -> Result<DropsParams, String> {
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
    pub(super) fn setup(&self) -> Result<LinkSetup, String> {
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
    pub(super) fn params(&self) -> Result<ReplicateParams, String> {
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
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: Option<u64>,
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
    pub(super) fn params(&self) -> Result<MeshParams, String> {
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
    pub(super) fn params(&self) -> Result<TableParams, String> {
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

/// `--churn` × `--lookups` at most: the joins a churn run expects, each a node slot made up
/// front (past it, tens of gigabytes).
const CHURN_JOINS_MAX: f64 = 100_000.0;

impl ChordArgs {
    pub(super) fn params(&self) -> Result<ChordParams, String> {
        if !(0.0..=0.9).contains(&self.fail_fraction) {
            return Err("--fail-fraction must be between 0 and 0.9".into());
        }
        if !(0.0..=0.5).contains(&self.loss) {
            return Err("--loss must be between 0 and 0.5".into());
        }
        if self.churn.is_some_and(|r| !(0.01..=10.0).contains(&r)) {
            return Err("--churn must be between 0.01 and 10 per second".into());
        }
        // Each expected join takes a node slot up front (about 2 × churn × lookups).
        if self
            .churn
            .is_some_and(|r| r * f64::from(self.lookups) > CHURN_JOINS_MAX)
        {
            return Err(format!(
                "--churn times --lookups must be at most {CHURN_JOINS_MAX} (the joins expected)"
            ));
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
