//! `weft drop create/subscribe/publish/owners/status`: drops (SPEC.md §24), folders only their
//! owners may change, through the running node's control socket. The node maps each drop's
//! folder to a directory and keeps that mapping in its store (see `host/drops.rs`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::{fail, init_logging, usage, NetArgs};
use crate::control::{self, ControlReply, ControlRequest};
use crate::report::{DropReport, TrackerReport};

/// Arguments of `weft drop`.
#[derive(Debug, clap::Args)]
#[command(arg_required_else_help = true)]
pub struct DropArgs {
    #[command(subcommand)]
    command: DropCommand,
}

/// `weft drop` subcommands.
#[derive(Debug, clap::Subcommand)]
enum DropCommand {
    /// Create a drop owned by this node whose folder is DIR (its files are the first
    /// version once published); prints the drop's id.
    Create {
        #[command(flatten)]
        net: NetArgs,
        /// The drop's folder: everything in it if it exists, a new empty one if not.
        dir: PathBuf,
    },
    /// Publish the drop whose folder is DIR as it is now (after a scan has settled); prints
    /// the new version and its counter.
    Publish {
        #[command(flatten)]
        net: NetArgs,
        /// The drop's folder.
        dir: PathBuf,
    },
    /// Hold a drop as a subscriber: its files land in DIR (empty or absent), read-only.
    Subscribe {
        #[command(flatten)]
        net: NetArgs,
        /// The drop's id, as `weft drop create` printed it.
        #[arg(value_name = "DROP_ID", value_parser = super::drop_id)]
        drop: weft_engine::protocol::DropId,
        /// Where its files go: an empty or absent folder.
        dir: PathBuf,
    },
    /// Add or remove a secondary owner (a linked peer) and publish a version saying so
    /// (the primary owner only).
    Owners {
        #[command(flatten)]
        net: NetArgs,
        /// `add` or `remove`.
        #[arg(value_enum)]
        action: OwnersAction,
        /// The drop's id.
        #[arg(value_name = "DROP_ID", value_parser = super::drop_id)]
        drop: weft_engine::protocol::DropId,
        /// The peer's node id (64 hex digits, as `weft id` prints it).
        #[arg(value_name = "NODE_ID", value_parser = super::node_id)]
        node: weft_engine::NodeId,
    },
    /// In a subscribed drop's folder DIR, put back what the current version lists wherever a
    /// local edit was refused (a subscriber's copy is read-only); prints how many paths.
    Revert {
        #[command(flatten)]
        net: NetArgs,
        /// The drop's folder.
        dir: PathBuf,
    },
    /// Each held drop: role, current version and counter, heads, folder, transfers.
    Status {
        #[command(flatten)]
        net: NetArgs,
        /// Print the drops as one JSON document.
        #[arg(long)]
        json: bool,
    },
}

/// What `weft drop owners` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OwnersAction {
    /// Make the peer a secondary owner.
    Add,
    /// Make the peer an owner no more.
    Remove,
}

/// How long a publish may wait for the node: its scan wait, and some more.
const PUBLISH_WAIT: Duration =
    Duration::from_secs(crate::host::DROP_PUBLISH_SCAN_TIMEOUT.as_secs() + 15);

/// How often `weft drop status` polls the node for its live bars.
const POLL_PERIOD: Duration = Duration::from_millis(500);

/// Runs `weft drop`.
pub fn drop_command(args: DropArgs) -> ExitCode {
    init_logging("warn");
    match args.command {
        DropCommand::Create { net, dir } => {
            let dir = match absolute(&dir) {
                Ok(d) => d,
                Err(e) => return usage(e),
            };
            match ask(&net, &ControlRequest::DropCreate { dir }) {
                Ok(ControlReply::DropCreated(drop)) => print(&format!("{drop}\n")),
                other => failed(other),
            }
        }
        DropCommand::Revert { net, dir } => {
            let dir = match absolute(&dir) {
                Ok(d) => d,
                Err(e) => return usage(e),
            };
            match ask(&net, &ControlRequest::DropRevert { dir }) {
                Ok(ControlReply::DropReverted(paths)) => {
                    print(&format!("reverting {paths} paths\n"))
                }
                other => failed(other),
            }
        }
        DropCommand::Publish { net, dir } => {
            let dir = match absolute(&dir) {
                Ok(d) => d,
                Err(e) => return usage(e),
            };
            published(ask_within(
                &net,
                &ControlRequest::DropPublish { dir },
                PUBLISH_WAIT,
            ))
        }
        DropCommand::Subscribe { net, drop, dir } => {
            let dir = match absolute(&dir).and_then(|d| empty_or_absent(&d).map(|()| d)) {
                Ok(d) => d,
                Err(e) => return usage(e),
            };
            let request = ControlRequest::DropSubscribe {
                drop: drop.to_string(),
                dir,
            };
            match ask(&net, &request) {
                Ok(ControlReply::DropSubscribed) => print(&format!(
                    "subscribed to drop {drop}: its files land in the folder as linked holders send them\n"
                )),
                other => failed(other),
            }
        }
        DropCommand::Owners {
            net,
            action,
            drop,
            node,
        } => {
            let request = ControlRequest::DropOwners {
                drop: drop.to_string(),
                node: crate::report::hex_id(&node),
                add: action == OwnersAction::Add,
            };
            published(ask_within(&net, &request, PUBLISH_WAIT))
        }
        DropCommand::Status { net, json } => status(&net, json),
    }
}

/// `dir` made absolute against the working directory, as UTF-8 text for the node.
fn absolute(dir: &Path) -> Result<String, String> {
    let path = std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: the path is not UTF-8", path.display()))
}

/// A subscriber's folder must be empty or absent.
fn empty_or_absent(dir: &str) -> Result<(), String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(format!(
                "{dir}: not empty; a subscribed drop needs an empty or absent folder"
            )),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(format!("{dir}: not a directory"))
        }
        Err(e) => Err(format!("{dir}: {e}")),
    }
}

fn ask(net: &NetArgs, request: &ControlRequest) -> Result<ControlReply, String> {
    let path = net.socket_path()?;
    control::request(&path, request).map_err(|e| e.to_string())
}

fn ask_within(
    net: &NetArgs,
    request: &ControlRequest,
    timeout: Duration,
) -> Result<ControlReply, String> {
    let path = net.socket_path()?;
    control::request_within(&path, request, timeout).map_err(|e| e.to_string())
}

/// The exit of a request that did not get the answer it wanted.
fn failed(answer: Result<ControlReply, String>) -> ExitCode {
    match answer {
        Ok(ControlReply::Error(e)) | Err(e) => fail(e),
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
    }
}

/// Prints a published version: `version <64 hex> counter <n>`.
fn published(answer: Result<ControlReply, String>) -> ExitCode {
    match answer {
        Ok(ControlReply::DropPublished(p)) => {
            print(&format!("version {} counter {}\n", p.version, p.counter))
        }
        other => failed(other),
    }
}

fn print(text: &str) -> ExitCode {
    match io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn drops(net: &NetArgs) -> Result<Vec<DropReport>, String> {
    match ask(net, &ControlRequest::DropStatus)? {
        ControlReply::Drops(d) => Ok(d),
        ControlReply::Error(e) => Err(e),
        other => Err(format!("unexpected answer from the node: {other:?}")),
    }
}

/// The paths being fetched in any drop (`<drop id start>/<path>`) and their bytes so far.
fn fetching(drops: &[DropReport]) -> BTreeMap<String, (u64, u64)> {
    drops
        .iter()
        .flat_map(|d| {
            d.transfers
                .iter()
                .map(move |t| (format!("{}/{}", short(&d.drop), t.path), t))
        })
        .map(|(name, t)| (name, (t.bytes_done, t.size)))
        .collect()
}

/// The first 16 hex digits of an id.
fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

/// `weft drop status`: text (live bars on a terminal while files are fetched) or JSON.
fn status(net: &NetArgs, json: bool) -> ExitCode {
    use std::io::IsTerminal as _;
    let first = match drops(net) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    if json {
        let line = serde_json::to_string(&first).unwrap_or_default();
        return print(&(line + "\n"));
    }
    let transfers = fetching(&first);
    let live = !transfers.is_empty() && io::stdout().is_terminal();
    let code = print(&status_text(&first, !live));
    if live {
        super::folders::live_bars(transfers, POLL_PERIOD, || drops(net).map(|d| fetching(&d)));
    }
    code
}

/// `weft drop status`'s text: per drop, its id, role and folder, then its version, heads and
/// (with `transfers`) a line per file being fetched.
fn status_text(drops: &[DropReport], transfers: bool) -> String {
    use indicatif::HumanBytes;
    let mut out = String::new();
    for d in drops {
        let dir = super::terminal_text(d.dir.as_deref().unwrap_or("(no folder)"));
        let _ = writeln!(out, "drop {} ({}) at {dir}", d.drop, d.role);
        match (&d.version, d.counter) {
            (Some(v), Some(counter)) => {
                let heads = match d.heads {
                    0 | 1 => "1 head".to_owned(),
                    n => format!("{n} heads: a conflict, the next publish by an owner merges them"),
                };
                let shown = if d.shown.as_ref() == Some(v) {
                    ""
                } else {
                    " (its files are not in the folder yet)"
                };
                let _ = writeln!(out, "  version {v} counter {counter}, {heads}{shown}");
            }
            _ => out.push_str("  no version yet\n"),
        }
        if d.owners.len() > 1 {
            let _ = writeln!(out, "  secondary owners: {}", d.owners[1..].join(", "));
        }
        let t = &d.tracker;
        if *t != TrackerReport::default() {
            let _ = writeln!(
                out,
                "  tracker: {} announcements, {} lookups, {} holders found, {} dialed",
                t.announces, t.lookups, t.holders_found, t.holders_dialed
            );
        }
        if transfers {
            for t in &d.transfers {
                let _ = writeln!(
                    out,
                    "  fetching  {}/{}  {}",
                    HumanBytes(t.bytes_done),
                    HumanBytes(t.size),
                    super::terminal_text(&t.path)
                );
            }
        }
    }
    if drops.is_empty() {
        out.push_str("no drops on this node\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::FileReport;

    fn report(heads: u64, shown: bool) -> DropReport {
        let version = "ab".repeat(32);
        DropReport {
            drop: "cd".repeat(32),
            role: "subscriber".into(),
            dir: Some("/srv/mirror".into()),
            version: Some(version.clone()),
            counter: Some(7),
            shown: shown.then_some(version),
            heads,
            owners: vec!["01".repeat(32), "02".repeat(32)],
            tracker: TrackerReport {
                announces: 0,
                lookups: 2,
                holders_found: 1,
                holders_dialed: 1,
            },
            transfers: vec![FileReport {
                path: "big.iso".into(),
                kind: "file".into(),
                size: 2048,
                state: "fetching".into(),
                bytes_done: 1024,
                error: None,
            }],
        }
    }

    #[test]
    fn status_shows_version_conflicts_owners_and_transfers() {
        let text = status_text(&[report(1, true)], true);
        assert!(text.starts_with(&format!(
            "drop {} (subscriber) at /srv/mirror\n",
            "cd".repeat(32)
        )));
        assert!(text.contains("counter 7, 1 head\n"), "{text}");
        assert!(text.contains(&format!("secondary owners: {}", "02".repeat(32))));
        assert!(
            text.contains("tracker: 0 announcements, 2 lookups, 1 holders found, 1 dialed\n"),
            "{text}"
        );
        assert!(
            text.contains("fetching  1.00 KiB/2.00 KiB  big.iso"),
            "{text}"
        );
        let text = status_text(&[report(2, false)], false);
        assert!(text.contains("2 heads: a conflict"), "{text}");
        assert!(text.contains("not in the folder yet"), "{text}");
        assert!(
            !text.contains("fetching"),
            "the live bars show them: {text}"
        );
        assert_eq!(status_text(&[], true), "no drops on this node\n");
    }

    #[test]
    fn transfers_are_named_by_drop_and_path() {
        let all = fetching(&[report(1, true)]);
        let name = format!("{}/big.iso", "cd".repeat(8));
        assert_eq!(all.get(&name), Some(&(1024, 2048)));
    }
}
