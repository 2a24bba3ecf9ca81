//! `weft`: the command-line program.

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use weft_drivers::cli;

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "weft: a sans-IO peer-to-peer engine",
    arg_required_else_help = true
)]
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
    /// Run a node that serves only as a bootstrap and a Chord ring member (the drops
    /// tracker's records live on the ring), until SIGINT/SIGTERM or `weft shutdown`.
    Tracker(cli::TrackerArgs),
    /// Start a network sharing a folder, and run its node (`--detach`: in the background).
    Create(cli::CreateArgs),
    /// Join a network through one of its nodes into an empty folder, and run the node.
    Join(cli::JoinArgs),
    /// Run again the node of a network this machine belongs to (after a stop, a crash, a
    /// reboot); half-fetched files are finished.
    Start(cli::StartArgs),
    /// Leave a network: stop its node, forget it, keep the shared folder's files (or delete
    /// them with --delete).
    Leave(cli::LeaveArgs),
    /// List every file of the network's shared folder and its state (transfers with their
    /// progress, rate and time left). Exits 3 if the folder is stopped.
    Status(cli::StatusArgs),
    /// Keep one version of a conflicted path and remove the others everywhere.
    Resolve(cli::ResolveArgs),
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
    /// Run a program on a peer (started with --allow-run) and stream its output back live;
    /// exits with its status (255: weft's own error).
    Run(cli::RunArgs),
    /// Serve the running node's web page (live status, hosts, folder, drops, table) on a
    /// loopback address until SIGINT/SIGTERM; prints the URL to open, with its token.
    Ui(cli::UiArgs),
    /// Drops: folders only their owners may change (create, publish, subscribe, owners,
    /// status, revert).
    Drop(cli::DropArgs),
    /// Test another implementation (or a weft node) against SPEC.md: one line per section.
    Conform(weft_drivers::conform::ConformArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell) to stdout.
    Completions(cli::CompletionsArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A command group given nothing to do (`weft`, `weft table`, `weft sim sweep`): its
        // help, which lists its subcommands, on stderr.
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) if e.use_stderr() => {
            eprintln!("{}", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
        Err(e) => {
            // Help or version, asked for: a reader that left early (`| head`) is no error,
            // and no panic.
            let _ = write!(std::io::stdout().lock(), "{e}");
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Cmd::Sim(args) => weft_sim::cli::run(args),
        Cmd::Node(args) => cli::node(args),
        Cmd::Tracker(args) => cli::tracker(args),
        Cmd::Create(args) => cli::create(args),
        Cmd::Join(args) => cli::join(args),
        Cmd::Start(args) => cli::start(args),
        Cmd::Leave(args) => cli::leave(args),
        Cmd::Status(args) => cli::status(args),
        Cmd::Resolve(args) => cli::resolve(args),
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
        Cmd::Run(args) => cli::run(args),
        Cmd::Drop(args) => cli::drop_command(args),
        Cmd::Ui(args) => cli::ui(args),
        Cmd::Conform(args) => weft_drivers::conform::conform(args),
        Cmd::Completions(args) => cli::completions(args, &mut Cli::command()),
    }
}

/// clap's message and its tips ("a similar subcommand exists: 'stats'") on one line, as
/// `weft: ...`: without its usage and its pointer to `--help`.
fn one_line(text: &str) -> String {
    let lines = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty());
    let mut joined = String::new();
    for line in lines {
        if !joined.is_empty() {
            joined.push_str(if joined.ends_with(':') { " " } else { "; " });
        }
        joined.push_str(line);
    }
    match joined.strip_prefix("error: ").unwrap_or(&joined) {
        "" => "weft: bad arguments".into(),
        message => format!("weft: {message}"),
    }
}
