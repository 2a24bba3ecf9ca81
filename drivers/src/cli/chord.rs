//! `weft put`, `weft get` and `weft delete`: the Chord store of a running node.

use std::io::Write;
use std::process::ExitCode;

use super::{fail, init_logging, NetArgs};
use crate::control::{self, ControlReply, ControlRequest};

/// Arguments of `weft put`.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The key.
    key: String,
    /// The value, added to the key's set of values.
    value: String,
    /// How long the value lives, in milliseconds, at least 1 (default: until deleted).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    lifetime_ms: Option<u64>,
    /// KEY and VALUE are hex digits (any bytes, e.g. the drops tracker's records), not text.
    #[arg(long)]
    hex: bool,
}

/// Arguments of `weft get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The key.
    key: String,
    /// KEY is hex digits (any bytes), and each value is printed as hex digits.
    #[arg(long)]
    hex: bool,
}

/// Arguments of `weft delete`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The key.
    key: String,
    /// The value to remove (default: every value of the key). Only this node's own values:
    /// every value is signed by the node that put it, and only it can delete it.
    value: Option<String>,
    /// KEY and VALUE are hex digits (any bytes), not text.
    #[arg(long)]
    hex: bool,
}

/// A refused key: empty (as `weft table set ""` refuses it). Exit code 2.
/// Exit code 2 with its line for arguments the node would refuse anyway: an empty key, or
/// with `--hex` a key or value that is not hex digits (bad arguments, not a failure).
fn refuse_bad(key: &str, value: Option<&str>, hex: bool) -> Option<ExitCode> {
    if key.is_empty() {
        return Some(super::usage("the key must not be empty"));
    }
    let not_hex = |text: &str| crate::report::unhex(text).is_none();
    if hex && not_hex(key) {
        return Some(super::usage(format!(
            "--hex: the key {key:?} is not hex digits"
        )));
    }
    if hex && value.is_some_and(not_hex) {
        return Some(super::usage("--hex: the value is not hex digits"));
    }
    None
}

fn ask(net: &NetArgs, request: &ControlRequest) -> Result<ControlReply, String> {
    let path = net.socket_path()?;
    control::request(&path, request).map_err(|e| e.to_string())
}

/// Runs `weft put`: prints on how many of the distinct replica nodes (at most 5, at most the
/// ring's size) the value was committed.
pub fn put(args: PutArgs) -> ExitCode {
    init_logging("warn");
    if let Some(code) = refuse_bad(&args.key, Some(&args.value), args.hex) {
        return code;
    }
    let request = ControlRequest::Put {
        key: args.key,
        value: args.value,
        lifetime_ms: args.lifetime_ms,
        hex: args.hex,
    };
    match ask(&args.net, &request) {
        Ok(ControlReply::Stored { nodes, of }) => {
            let _ = writeln!(std::io::stdout(), "stored on {nodes} of {of} replicas");
            ExitCode::SUCCESS
        }
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

/// Runs `weft get`: prints each value on its own line; a key with none exits 1 with
/// `weft: no such key` (as `weft table get` does).
pub fn get(args: GetArgs) -> ExitCode {
    init_logging("warn");
    if let Some(code) = refuse_bad(&args.key, None, args.hex) {
        return code;
    }
    let request = ControlRequest::Get {
        key: args.key,
        hex: args.hex,
    };
    match ask(&args.net, &request) {
        Ok(ControlReply::Values(values)) if values.is_empty() => fail("no such key"),
        Ok(ControlReply::Values(values)) => {
            let mut out = std::io::stdout().lock();
            for v in values {
                let line = super::printable(&v);
                let _ = writeln!(out, "{line}");
            }
            ExitCode::SUCCESS
        }
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

/// Runs `weft delete`: prints on how many of the distinct replica nodes the delete removed a
/// value (after their commit); a value no replica held (or a key with none of this node's
/// values) exits 1.
pub fn delete(args: DeleteArgs) -> ExitCode {
    init_logging("warn");
    if let Some(code) = refuse_bad(&args.key, args.value.as_deref(), args.hex) {
        return code;
    }
    let value_named = args.value.is_some();
    let request = ControlRequest::Delete {
        key: args.key,
        value: args.value,
        hex: args.hex,
    };
    match ask(&args.net, &request) {
        Ok(ControlReply::Deleted { nodes, of }) => {
            let _ = writeln!(std::io::stdout(), "deleted on {nodes} of {of} replicas");
            ExitCode::SUCCESS
        }
        Ok(ControlReply::NoSuchValue) => fail(match value_named {
            true => "no such value",
            false => "no such key",
        }),
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}
