//! `weft table set/get/delete/release/list`: the running node's sync table.

use std::fmt::Write as _;
use std::io::Write;
use std::process::ExitCode;

use super::{fail, init_logging, NetArgs};
use crate::control::{self, ControlReply, ControlRequest};
use crate::report::TableEntryReport;

/// Arguments of `weft table`.
#[derive(Debug, clap::Args)]
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
        /// Own the key for this many milliseconds.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
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
        TableCommand::List { net, json } => (net, ControlRequest::TableList, json),
    };
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
        Ok(ControlReply::Table(entries)) => print(&list_text(&entries)),
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

/// The value as text (escaped to stay on one line), or `0x` and its hex.
fn value_text(e: &TableEntryReport) -> String {
    match (&e.value, &e.value_hex) {
        (Some(text), _) => text.chars().flat_map(char::escape_default).collect(),
        (None, Some(hex)) => format!("0x{hex}"),
        (None, None) => String::new(),
    }
}

fn list_text(entries: &[TableEntryReport]) -> String {
    let mut text = String::new();
    for e in entries {
        let key: String = e.key.chars().flat_map(char::escape_default).collect();
        let _ = write!(text, "{key}={}", value_text(e));
        if let (Some(owner), Some(until)) = (&e.lease_owner, e.lease_until_unix_ms) {
            let _ = write!(
                text,
                "  (leased by {} until {until})",
                owner.get(..16).unwrap_or(owner)
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
    fn list_lines_are_one_line_each() {
        let e = TableEntryReport {
            key: "a\nb".into(),
            value: Some("x=y".into()),
            value_hex: None,
            by: "ab".repeat(32),
            lease_owner: Some("cd".repeat(32)),
            lease_until_unix_ms: Some(5),
        };
        assert_eq!(
            list_text(&[e]),
            "a\\nb=x=y  (leased by cdcdcdcdcdcdcdcd until 5)\n"
        );
    }
}
