//! `weft sim` without the `weft` binary: the simulator's command line on its own, e.g.
//! `cargo run --release -p weft-sim --example sim_cli -- mesh --seed 3 --json`.
use clap::Parser;

/// `weft sim`'s arguments, as the `weft` binary embeds them.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    sim: weft_sim::cli::SimArgs,
}

fn main() -> std::process::ExitCode {
    weft_sim::cli::run(Cli::parse().sim)
}
