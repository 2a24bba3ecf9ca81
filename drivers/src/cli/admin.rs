//! `weft id`, `weft connect`, `weft disconnect` and `weft shutdown`: what a running node is,
//! and steering it.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{fail, init_logging, NetArgs};
use crate::control::{self, ControlError, ControlReply, ControlRequest};
use crate::report::{links_text, IdReport};

/// How long `weft shutdown` waits for the node to exit (its BYE and flush take at most the
/// drivers' 3 s grace; a Chord member first hands its records over).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// Arguments of `weft id`.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Print it as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `weft connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The address to dial (`IP:PORT`).
    #[arg(value_name = "HOST:PORT", value_parser = super::peer_addr)]
    addr: std::net::SocketAddr,
}

/// Arguments of `weft disconnect`.
#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The node: its id, or the start of it that `weft network` prints (unique among the
    /// nodes this one knows).
    #[arg(value_name = "NODE")]
    node: String,
}

/// Arguments of `weft shutdown`.
#[derive(Debug, clap::Args)]
pub struct ShutdownArgs {
    #[command(flatten)]
    net: NetArgs,
}

fn ask(net: &NetArgs, request: &ControlRequest) -> Result<ControlReply, String> {
    let path = net.socket_path()?;
    control::request(&path, request).map_err(|e| e.to_string())
}

fn print(text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Runs `weft id`: who the node is, where it listens, since when, its peers, its place in
/// the ring, and what it holds.
pub fn id(args: IdArgs) -> ExitCode {
    init_logging("warn");
    match ask(&args.net, &ControlRequest::Id) {
        Ok(ControlReply::Id(id)) if args.json => {
            print(&(serde_json::to_string(&id).unwrap_or_default() + "\n"))
        }
        Ok(ControlReply::Id(id)) => print(&id_text(&id)),
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

/// `weft id`'s one screen.
fn id_text(id: &IdReport) -> String {
    let mut text = String::new();
    let listen = id.listen_addr.as_deref().unwrap_or("-");
    let _ = writeln!(text, "node         {}", id.node);
    let _ = writeln!(text, "network      {}", id.network);
    let _ = writeln!(text, "listening    {listen}");
    let _ = writeln!(
        text,
        "announced    {}",
        id.announce_addr.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        text,
        "running      up {}, incarnation {}, {} driver, pid {}",
        super::when::span(id.uptime_ms),
        id.incarnation,
        id.driver,
        id.pid
    );
    let links = links_text(&id.links, id.network_secret);
    let _ = writeln!(
        text,
        "links        {}",
        links.strip_prefix("links: ").unwrap_or(&links)
    );
    let _ = writeln!(
        text,
        "peers        {} direct, {} heard of",
        id.peers_direct, id.peers_heard_of
    );
    match &id.chord {
        Some(ring) => {
            let short = |n: &Option<String>| {
                n.as_deref()
                    .map_or("-".to_owned(), |n| n.get(..16).unwrap_or(n).to_owned())
            };
            let _ = writeln!(
                text,
                "chord        position {}, {}, successor {}, predecessor {}",
                ring.position,
                if ring.joined {
                    "joined"
                } else {
                    "not joined yet"
                },
                short(&ring.successor),
                short(&ring.predecessor)
            );
            let _ = writeln!(text, "records      {} Chord records held", ring.records);
        }
        None => {
            let _ = writeln!(text, "chord        not a member (start with --chord)");
        }
    }
    let keys = if id.table_keys == 1 { "key" } else { "keys" };
    let _ = writeln!(text, "table        {} {keys}", id.table_keys);
    text
}

/// Runs `weft connect`: the node dials the address (and keeps its link).
pub fn connect(args: ConnectArgs) -> ExitCode {
    init_logging("warn");
    let addr = args.addr.to_string();
    match ask(&args.net, &ControlRequest::Connect { addr: addr.clone() }) {
        Ok(ControlReply::Dialing) => print(&format!("dialing {addr}\n")),
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

/// Runs `weft disconnect`: the node closes its link to a peer.
pub fn disconnect(args: DisconnectArgs) -> ExitCode {
    init_logging("warn");
    if args.node.is_empty() || !args.node.bytes().all(|b| b.is_ascii_hexdigit()) {
        return super::usage(format!(
            "{:?} is not the start of a node id (hex digits)",
            args.node
        ));
    }
    let request = ControlRequest::Disconnect {
        node: args.node.clone(),
    };
    match ask(&args.net, &request) {
        Ok(ControlReply::Disconnected(node)) => print(&format!("disconnected {node}\n")),
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

/// Runs `weft shutdown`: the node says BYE, flushes and exits; this waits until it has.
pub fn shutdown(args: ShutdownArgs) -> ExitCode {
    init_logging("warn");
    let socket = match args.net.socket_path() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let pid = match control::request(&socket, &ControlRequest::Shutdown) {
        Ok(ControlReply::Stopping(pid)) => pid,
        Ok(other) => return fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => return fail(e),
    };
    // The node removes its socket as its last act, after its store is closed; then its
    // process ends.
    let deadline = Instant::now() + SHUTDOWN_WAIT;
    loop {
        let answers = !matches!(
            control::request(&socket, &ControlRequest::Id),
            Err(ControlError::NotRunning(_))
        );
        if !answers && process_gone(pid) {
            return print(&format!("stopped (pid {pid})\n"));
        }
        if Instant::now() >= deadline {
            return fail(format!(
                "the node (pid {pid}) did not stop within {} s",
                SHUTDOWN_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` has ended: it is gone, or a zombie its parent has not reaped yet
/// (read from `/proc`; where there is none, the socket alone tells).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}
