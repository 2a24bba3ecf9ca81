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
    /// How long the value lives, in milliseconds (default: until deleted).
    #[arg(long, value_name = "MS")]
    lifetime_ms: Option<u64>,
}

/// Arguments of `weft get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The key.
    key: String,
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
}

fn ask(net: &NetArgs, request: &ControlRequest) -> Result<ControlReply, String> {
    let path = net.socket_path()?;
    control::request(&path, request).map_err(|e| e.to_string())
}

/// Runs `weft put`: prints how many of the key's 5 replicas stored the value.
pub fn put(args: PutArgs) -> ExitCode {
    init_logging("warn");
    let request = ControlRequest::Put {
        key: args.key,
        value: args.value,
        lifetime_ms: args.lifetime_ms,
    };
    match ask(&args.net, &request) {
        Ok(ControlReply::Stored(n)) => {
            let _ = writeln!(std::io::stdout(), "stored on {n} of 5 replicas");
            ExitCode::SUCCESS
        }
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

/// Runs `weft get`: prints each value on its own line (nothing if the key has none).
pub fn get(args: GetArgs) -> ExitCode {
    init_logging("warn");
    match ask(&args.net, &ControlRequest::Get { key: args.key }) {
        Ok(ControlReply::Values(values)) => {
            let mut out = std::io::stdout().lock();
            for v in values {
                let line: String = v.chars().flat_map(char::escape_default).collect();
                let _ = writeln!(out, "{line}");
            }
            ExitCode::SUCCESS
        }
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

/// Runs `weft delete`: prints how many replicas removed the value(s).
pub fn delete(args: DeleteArgs) -> ExitCode {
    init_logging("warn");
    let request = ControlRequest::Delete {
        key: args.key,
        value: args.value,
    };
    match ask(&args.net, &request) {
        Ok(ControlReply::Deleted(n)) => {
            let _ = writeln!(std::io::stdout(), "deleted on {n} of 5 replicas");
            ExitCode::SUCCESS
        }
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}
