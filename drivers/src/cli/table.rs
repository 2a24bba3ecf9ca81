//! `weft table set/get/delete/release/list`: the running node's sync table.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use super::{fail, init_logging, when, NetArgs};
use crate::control::{self, ControlReply, ControlRequest};
use crate::report::TableEntryReport;

/// Arguments of `weft table`.
#[derive(Debug, clap::Args)]
#[command(arg_required_else_help = true)]
pub struct TableArgs {
    #[command(subcommand)]
    command: TableCommand,
}

/// `weft table` subcommands.
#[derive(Debug, clap::Subcommand)]
enum TableCommand {
    /// Set a key; with --lease-ms, no other node may change it for that long.
    Set {
        #[command(flatten)]
        net: NetArgs,
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[arg(long, value_name = "MS", help = lease_help(), value_parser = clap::value_parser!(u64).range(1..=lease_max_ms()))]
        lease_ms: Option<u64>,
    },
    /// Print a key's value (exit 1 if it is not set).
    Get {
        #[command(flatten)]
        net: NetArgs,
        /// The key.
        key: String,
        /// Print the entry as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a key.
    Delete {
        #[command(flatten)]
        net: NetArgs,
        /// The key.
        key: String,
    },
    /// End this node's lease on a key, keeping its value.
    Release {
        #[command(flatten)]
        net: NetArgs,
        /// The key.
        key: String,
    },
    /// Print every set key: `KEY=VALUE`, with its lease if one is in force.
    List {
        #[command(flatten)]
        net: NetArgs,
        /// Print the entries as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The longest lease a node grants (`Timers::table_lease_max`), ms.
fn lease_max_ms() -> u64 {
    weft_engine::Timers::default().table_lease_max.as_millis()
}

fn lease_help() -> String {
    format!(
        "Own the key for this many milliseconds (at most {}, {})",
        lease_max_ms(),
        when::span(lease_max_ms())
    )
}

fn ask(net: &NetArgs, request: &ControlRequest) -> Result<ControlReply, String> {
    let path = net.socket_path()?;
    control::request(&path, request).map_err(|e| e.to_string())
}

fn print(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Runs `weft table ...`.
pub fn table(args: TableArgs) -> ExitCode {
    init_logging("warn");
    let (net, request, json) = match args.command {
        TableCommand::Set {
            net,
            key,
            value,
            lease_ms,
        } => (
            net,
            ControlRequest::TableSet {
                key,
                value,
                lease_ms,
            },
            false,
        ),
        TableCommand::Delete { net, key } => (net, ControlRequest::TableDelete { key }, false),
        TableCommand::Release { net, key } => (net, ControlRequest::TableRelease { key }, false),
        TableCommand::Get { net, key, json } => (net, ControlRequest::TableGet { key }, json),
        TableCommand::List { net, json } => (
            net,
            ControlRequest::TableList {
                entries_max: None,
                value_bytes_max: None,
            },
            json,
        ),
    };
    let key = match &request {
        ControlRequest::TableSet { key, .. }
        | ControlRequest::TableDelete { key }
        | ControlRequest::TableRelease { key }
        | ControlRequest::TableGet { key } => Some(key),
        _ => None,
    };
    if key.is_some_and(String::is_empty) {
        return super::usage("the key must not be empty");
    }
    let get = matches!(request, ControlRequest::TableGet { .. });
    match ask(&net, &request) {
        Ok(ControlReply::Written) => ExitCode::SUCCESS,
        Ok(ControlReply::Table(entries)) if get && entries.is_empty() => fail("no such key"),
        Ok(ControlReply::Table(entries)) if json => {
            let value = if get {
                serde_json::to_string(&entries[0])
            } else {
                serde_json::to_string(&entries)
            };
            print(&(value.unwrap_or_default() + "\n"))
        }
        Ok(ControlReply::Table(entries)) if get => print(&(value_text(&entries[0]) + "\n")),
        Ok(ControlReply::Table(entries)) => print(&list_text(&entries, when::now_unix_ms())),
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(lease_end_relative(e, when::now_unix_ms())),
    }
}

/// A refusal under another node's lease ("... until Unix ms T") with how far off T is;
/// any other error as it is.
fn lease_end_relative(error: String, now_unix_ms: u64) -> String {
    let until = error
        .rsplit_once("until Unix ms ")
        .and_then(|(_, t)| t.parse::<u64>().ok());
    match until {
        Some(until) => format!("{error} ({})", when::relative(until, now_unix_ms)),
        None => error,
    }
}

/// The value as text (escaped to stay on one line), or `0x` and its hex.
fn value_text(e: &TableEntryReport) -> String {
    match (&e.value, &e.value_hex) {
        (Some(text), _) => super::printable(text),
        (None, Some(hex)) => format!("0x{hex}"),
        (None, None) => String::new(),
    }
}

/// One line per entry, a lease's end relative to `now_unix_ms`.
fn list_text(entries: &[TableEntryReport], now_unix_ms: u64) -> String {
    let mut text = String::new();
    for e in entries {
        let key = super::printable(&e.key);
        let _ = write!(text, "{key}={}", value_text(e));
        if let (Some(owner), Some(until)) = (&e.lease_owner, e.lease_until_unix_ms) {
            let ends = if until >= now_unix_ms {
                "ends"
            } else {
                "ended"
            };
            let _ = write!(
                text,
                "  (leased by {}, {ends} {})",
                super::printable(owner.get(..16).unwrap_or(owner)),
                when::relative(until, now_unix_ms)
            );
        }
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_refusal_says_when_the_lease_ends() {
        let refusal = "refused: the key is leased by ab until Unix ms 1180000".to_owned();
        assert_eq!(
            lease_end_relative(refusal.clone(), 1_000_000),
            format!("{refusal} (in 3 min)")
        );
        assert_eq!(lease_end_relative("no such key".into(), 5), "no such key");
    }

    #[test]
    fn list_lines_are_one_line_each() {
        let e = TableEntryReport {
            key: "a\nb".into(),
            value: Some("x=y".into()),
            value_hex: None,
            by: "ab".repeat(32),
            lease_owner: Some("cd".repeat(32)),
            lease_until_unix_ms: Some(1_014_000),
            value_bytes: None,
        };
        assert_eq!(
            list_text(&[e], 1_000_000),
            "a\\nb=x=y  (leased by cdcdcdcdcdcdcdcd, ends in 14 s)\n"
        );
    }
}
