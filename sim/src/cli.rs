//! `weft sim`: the simulator's command line, embedded in the `weft` binary by drivers/.

use std::process::ExitCode;

/// Arguments of `weft sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Nodes in the demo network.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=64))]
    pub nodes: u16,
    /// Broadcasts each node sends.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rounds: u64,
}

/// Runs `weft sim`; exit 0 when every invariant held, 1 on a violation.
pub fn run(args: SimArgs) -> ExitCode {
    let r = crate::demo::run(usize::from(args.nodes), args.rounds);
    println!(
        "weft sim: {} nodes joined in a line, discovery on, {} rounds",
        r.nodes, args.rounds
    );
    println!("{:<28}{:>12}", "links after discovery", r.links);
    println!("{:<28}{:>12}", "broadcasts", r.broadcasts);
    println!(
        "{:<28}{:>12}",
        "deliveries",
        format!("{}/{}", r.delivered, r.expected)
    );
    println!("{:<28}{:>12}", "BROADCAST transmissions", r.transmissions);
    println!("{:<28}{:>12}", "duplicate receptions", r.duplicates);
    println!("{:<28}{:>12}", "frames of all kinds", r.frames);
    println!("{:<28}{:>12}", "trace digest", r.digest);
    println!(
        "{:<28}{:>12}",
        "result",
        if r.ok() { "ok" } else { "FAILED" }
    );
    if r.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
