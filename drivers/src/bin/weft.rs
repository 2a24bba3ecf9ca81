//! `weft`: the command-line program.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weft", version, about = "weft: a sans-IO peer-to-peer engine")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a small in-process network of real nodes and report on it.
    Demo {
        /// Nodes in the network (2 to 64).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=64))]
        nodes: u16,
        /// Broadcasts each node sends.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
        rounds: u64,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let first = e.to_string();
            eprintln!("{}", first.lines().next().unwrap_or("bad arguments"));
            return ExitCode::from(2);
        }
        Err(e) => {
            print!("{e}");
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Cmd::Demo { nodes, rounds } => {
            let r = weft_sim::demo::run(usize::from(nodes), rounds);
            println!(
                "weft demo: {} nodes joined in a line, discovery on, {} rounds",
                r.nodes, rounds
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
    }
}
