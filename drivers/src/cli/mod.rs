//! The `weft` subcommands this crate owns: `node` runs a node (in the background with
//! `--detach`), `tracker` a bootstrap and Chord ring member; `send`, `listen`, `network`,
//! `stats`, `id`, `connect`, `disconnect`, `shutdown`, `table`, `put`, `get`, `delete` and
//! `drop` talk to a running one over its control socket; `completions` prints a shell's
//! completion script. Each prints a one-line error
//! and exits non-zero when something is wrong (2 for bad arguments). `WEFT_NAME` names the
//! network when `--name` is not given.

mod admin;
mod chord;
mod completions;
pub mod config;
mod detach;
mod drops;
mod folders;
mod messages;
mod node;
mod node_args;
mod query;
mod run;
pub mod secret;
mod table;
pub mod ui;
mod when;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

pub use admin::{
    connect, disconnect, id, shutdown, ConnectArgs, DisconnectArgs, IdArgs, ShutdownArgs,
};
pub use chord::{delete, get, put, DeleteArgs, GetArgs, PutArgs};
pub use completions::{completions, CompletionsArgs};
pub use drops::{drop_command, DropArgs};
pub(crate) use folders::remove_reserved;
pub use folders::{
    create, join, leave, resolve, start, status, CreateArgs, JoinArgs, LeaveArgs, ResolveArgs,
    StartArgs, StatusArgs,
};
pub use messages::{listen, send, ListenArgs, SendArgs};
pub use node::{node, tracker, TrackerArgs};
pub(crate) use node_args::subnet;
pub use node_args::{Dialect, Driver, NodeArgs, NodeSettings};
pub use query::{network, stats, NetworkArgs, StatsArgs};
pub use run::{run, RunArgs};
pub use table::{table, TableArgs};
pub use ui::{ui, UiArgs, UiFlags};

use crate::state;

/// Which node a command is about.
#[derive(Debug, Clone, clap::Args)]
pub struct NetArgs {
    /// The network's name (letters, digits, `.`, `_`, `-`).
    #[arg(long, env = "WEFT_NAME", value_parser = network_name)]
    pub name: String,
    /// The node's state folder [default: $WEFT_HOME/NAME, else ~/.weft/NAME].
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
}

impl NetArgs {
    /// The state folder this command uses.
    pub fn state_path(&self) -> Result<PathBuf, String> {
        match &self.state {
            Some(dir) => Ok(dir.clone()),
            None => state::default_path(&self.name).map_err(|e| e.to_string()),
        }
    }

    /// Where the node's control socket is.
    pub fn socket_path(&self) -> Result<PathBuf, String> {
        Ok(state::socket_path(&self.state_path()?))
    }
}

/// Checks a network name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` (it also
/// names the default state folder).
pub fn network_name(name: &str) -> Result<String, String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || name.starts_with('.') || !name.chars().all(ok_char) {
        return Err("1 to 64 of A-Z a-z 0-9 . _ - and not starting with '.'".into());
    }
    Ok(name.to_owned())
}

/// A node id from its 64 hex digits (as `weft id` prints it).
pub fn node_id(text: &str) -> Result<weft_engine::NodeId, String> {
    let bad = || format!("not a node id (64 hex digits): {text:?}");
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(weft_engine::NodeId(id))
}

/// A drop id from its 64 hex digits (as `weft drop create` prints it).
pub fn drop_id(text: &str) -> Result<weft_engine::protocol::DropId, String> {
    let bad = || format!("not a drop id (64 hex digits): {text:?}");
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(weft_engine::protocol::DropId(id))
}

/// Resolves `HOST:PORT` to its first address.
pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("not a HOST:PORT address: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| "the host has no address".to_owned())
}

/// Resolves a peer's `HOST:PORT` to dial: [`socket_addr`], and not port 0 (which no dial
/// reaches).
pub fn peer_addr(text: &str) -> Result<SocketAddr, String> {
    let addr = socket_addr(text)?;
    if addr.port() == 0 {
        return Err(format!("{addr} cannot be dialed: port 0"));
    }
    Ok(addr)
}

/// Checks an address to announce: a `HOST:PORT` peers can dial, resolved like `--peer` (peers
/// dial `IP:PORT`), so not an unspecified IP and not port 0.
pub fn announce_addr(text: &str) -> Result<String, String> {
    let addr = socket_addr(text)?;
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(format!(
            "{addr} cannot be dialed: give the IP and port peers reach"
        ));
    }
    Ok(addr.to_string())
}

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (else `default`).
pub fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `text` as a terminal may show it: control characters (and anything not ASCII) escaped, so
/// text a peer chose (an address, an id) can neither run terminal escapes nor break a line.
pub(crate) fn printable(text: &str) -> String {
    text.chars().flat_map(char::escape_default).collect()
}

/// Prints `weft: <error>` (its first line) and returns exit code 1.
pub fn fail(error: impl std::fmt::Display) -> ExitCode {
    print_error(&error.to_string());
    ExitCode::from(1)
}

/// Prints `weft: <error>` (its first line) for bad arguments or config, and returns exit
/// code 2.
pub fn usage(error: impl std::fmt::Display) -> ExitCode {
    print_error(&error.to_string());
    ExitCode::from(2)
}

/// A path or other text a peer chose (a file name) as a terminal may show it: control
/// characters (C0, DEL, C1) and the bidirectional formatting ones (which can make a line
/// read as something else) escaped; any other character, accented and non-Latin letters
/// included, as it is.
pub(crate) fn terminal_text(text: &str) -> String {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn print_error(text: &str) {
    let _ = writeln!(std::io::stderr(), "weft: {}", error_line(text));
}

/// The first line of an error, as a terminal may show it: an error can carry text a peer
/// chose (a run's refusal, a node id), escaped like any peer's text ([`terminal_text`]).
pub(crate) fn error_line(text: &str) -> String {
    terminal_text(text.lines().next().unwrap_or("error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_escapes_controls_and_bidi_formatting_only() {
        assert_eq!(terminal_text("café/日本.txt"), "café/日本.txt");
        assert_eq!(terminal_text("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(terminal_text("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(terminal_text("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(terminal_text("line\nbreak\u{7f}"), "line\\nbreak\\u{7f}");
    }

    #[test]
    fn an_error_line_is_its_first_line_with_a_peers_escapes_shown() {
        assert_eq!(
            error_line("the peer refused: \u{1b}]0;pwned\u{7}\nsecond line"),
            r"the peer refused: \u{1b}]0;pwned\u{7}"
        );
        assert_eq!(error_line(""), "error");
    }

    #[test]
    fn network_names_are_safe_folder_names() {
        assert!(network_name("my-net_1.0").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "sp ace", &"x".repeat(65)] {
            assert!(network_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn drop_ids_are_64_hex_digits() {
        let hex = "0f".repeat(32);
        assert_eq!(drop_id(&hex).map(|d| d.to_string()), Ok(hex.clone()));
        let upper = "AB".repeat(32);
        assert_eq!(drop_id(&upper).map(|d| d.0[0]), Ok(0xab));
        for bad in [
            "",
            "0f",
            &"0f".repeat(33),
            &"zz".repeat(32),
            &"é".repeat(32),
        ] {
            assert!(drop_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_resolve_or_fail_plainly() {
        assert_eq!(
            socket_addr("127.0.0.1:9").unwrap(),
            "127.0.0.1:9".parse::<SocketAddr>().unwrap()
        );
        assert!(socket_addr("127.0.0.1").is_err());
        assert!(socket_addr("127.0.0.1:99999").is_err());
        // A peer to dial: not port 0, which no dial reaches.
        assert!(peer_addr("127.0.0.1:0").is_err());
        assert_eq!(peer_addr("127.0.0.1:9"), socket_addr("127.0.0.1:9"));
    }

    #[test]
    fn announced_addresses_need_a_host_and_a_port() {
        for good in ["10.0.0.1:1", "[::1]:7000"] {
            assert_eq!(announce_addr(good).as_deref(), Ok(good));
        }
        for bad in [
            "example.org",
            ":7000",
            "10.0.0.1:0",
            "0.0.0.0:7000",
            "[::]:7000",
            "host:65536",
            "a b:1",
            "host:x",
        ] {
            assert!(announce_addr(bad).is_err(), "{bad:?}");
        }
    }
}
