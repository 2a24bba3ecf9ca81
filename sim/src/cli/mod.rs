//! `weft sim`: the simulator's command line, embedded in the `weft` binary by drivers/.
//!
//! Exit codes: 0 when every invariant held, 1 on a violation, 2 on bad arguments.
//!
//! The arguments are in `args.rs`, the default run's report in `report.rs`; this module runs
//! a scenario or a sweep (with its progress line) and picks the exit code.

mod args;
mod report;
#[cfg(test)]
mod tests;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::links::LinkSetup;
use crate::scenario::chord;
use crate::scenario::drops;
use crate::scenario::mesh;
use crate::scenario::p2pt;
use crate::scenario::replicate;
use crate::scenario::table;
use crate::scenario::{RunHeader, Scenario};
use crate::sweep::{self, Shard};

pub use args::{
    ChordArgs, DropsArgs, LinkArgs, MeshArgs, P2ptArgs, ReplicateArgs, ReplicateSweepArgs, SimArgs,
    SimCommand, SweepArgs, SweepProtocol, TableArgs,
};
use report::default_table;

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

/// Writes `text` to standard output; a reader that left early (`| head`) is no error, and
/// no panic: the exit status still says whether the runs passed.
pub(crate) fn say(text: &str) {
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
}

/// Prints one run's report, as text or JSON; its exit status.
fn show(r: &impl Scenario, json: bool) -> ExitCode {
    if json {
        say(&format!("{}\n", r.to_json()));
    } else {
        say(&r.to_text());
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
    // At most 256 (the argument's range), so the conversion never falls back.
    let threads = a.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |t| usize::try_from(t).unwrap_or(1),
    );
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
        say(&format!("{value}\n"));
    } else {
        for h in &failed {
            say(&format!(
                "FAILED seed {}\n",
                h.failure(&h.seed.to_string()).unwrap_or_default()
            ));
        }
        say(&format!(
            "sweep {protocol}: {} seeds ({}..={}), {} failed, {sums_text}{events} events, \
             {wall_ms} ms wall; links: {links}\n",
            reports.len(),
            seeds.start(),
            seeds.end(),
            failed.len(),
        ));
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
