//! `weft`: the command-line program.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_drivers::cli;

#[derive(Parser)]
#[command(name = "weft", version, about = "weft: a sans-IO peer-to-peer engine")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the deterministic simulator and report on it.
    Sim(weft_sim::cli::SimArgs),
    /// Run a node until SIGINT/SIGTERM or `weft shutdown` (`--detach`: in the background).
    Node(cli::NodeArgs),
    /// Stop the running node (BYE to its peers, flush) and wait until it has exited.
    Shutdown(cli::ShutdownArgs),
    /// Show who the running node is: id, addresses, uptime, peers, ring position, counts.
    Id(cli::IdArgs),
    /// Have the running node dial an address.
    Connect(cli::ConnectArgs),
    /// Have the running node close its link to a peer.
    Disconnect(cli::DisconnectArgs),
    /// Broadcast a message through the running node.
    Send(cli::SendArgs),
    /// Print each broadcast the running node delivers, one line each.
    Listen(cli::ListenArgs),
    /// List the hosts the running node links to or has heard of.
    Network(cli::NetworkArgs),
    /// Print the running node's counters and queue depths.
    Stats(cli::StatsArgs),
    /// Read and write the running node's sync table.
    Table(cli::TableArgs),
    /// Store a value under a key in the Chord ring (the node runs with --chord).
    Put(cli::PutArgs),
    /// Print a key's values from the Chord ring, one per line.
    Get(cli::GetArgs),
    /// Remove a key's value (or all its values) from the Chord ring.
    Delete(cli::DeleteArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprintln!("{}", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
        Err(e) => {
            print!("{e}");
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Cmd::Sim(args) => weft_sim::cli::run(args),
        Cmd::Node(args) => cli::node(args),
        Cmd::Shutdown(args) => cli::shutdown(args),
        Cmd::Id(args) => cli::id(args),
        Cmd::Connect(args) => cli::connect(args),
        Cmd::Disconnect(args) => cli::disconnect(args),
        Cmd::Send(args) => cli::send(args),
        Cmd::Listen(args) => cli::listen(args),
        Cmd::Network(args) => cli::network(args),
        Cmd::Stats(args) => cli::stats(args),
        Cmd::Table(args) => cli::table(args),
        Cmd::Put(args) => cli::put(args),
        Cmd::Get(args) => cli::get(args),
        Cmd::Delete(args) => cli::delete(args),
    }
}

/// clap's message up to its usage hint, on one line.
fn one_line(text: &str) -> String {
    let lines = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"));
    let joined = lines.collect::<Vec<_>>().join(" ");
    if joined.is_empty() {
        "bad arguments".into()
    } else {
        joined
    }
}
