//! `weft send` and `weft listen`: broadcasts in and out of a running node.

use std::io::Write;
use std::process::ExitCode;

use super::{fail, init_logging, NetArgs};
use crate::control::{self, ControlReply, ControlRequest};
use crate::report::DeliveryReport;

/// Arguments of `weft send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The text to broadcast.
    message: String,
}

/// Arguments of `weft listen`.
#[derive(Debug, clap::Args)]
pub struct ListenArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Print each broadcast as a JSON line.
    #[arg(long)]
    json: bool,
}

/// Runs `weft send`: broadcasts the message through the running node.
pub fn send(args: SendArgs) -> ExitCode {
    init_logging("warn");
    let request = ControlRequest::Send {
        message: args.message,
    };
    let outcome = args
        .net
        .socket_path()
        .and_then(|path| control::request(&path, &request).map_err(|e| e.to_string()));
    match outcome {
        Ok(ControlReply::Sent) => ExitCode::SUCCESS,
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

/// Runs `weft listen`: prints one line per broadcast until the node stops (exit 1) or stdout
/// closes (exit 0).
pub fn listen(args: ListenArgs) -> ExitCode {
    init_logging("warn");
    let deliveries = match args
        .net
        .socket_path()
        .and_then(|path| control::listen(&path).map_err(|e| e.to_string()))
    {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let mut out = std::io::stdout().lock();
    for delivery in deliveries {
        let line = match delivery {
            Ok(d) if args.json => serde_json::to_string(&d).unwrap_or_default(),
            Ok(d) => plain(&d),
            Err(e) => return fail(e),
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
    fail("the node stopped")
}

/// `ORIGIN/INCARNATION #SEQ: TEXT` with the first 16 hex digits of the origin; control characters in the
/// text are escaped so that a broadcast stays on one line.
fn plain(d: &DeliveryReport) -> String {
    let origin = d.origin.get(..16).unwrap_or(&d.origin);
    let body = match (&d.payload, &d.payload_hex) {
        (Some(text), _) => text.chars().flat_map(char::escape_default).collect(),
        (None, Some(hex)) => format!("0x{hex}"),
        (None, None) => String::new(),
    };
    format!("{origin}/{} #{}: {body}", d.incarnation, d.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_is_one_line() {
        let d = DeliveryReport {
            origin: "ab".repeat(32),
            incarnation: 1,
            seq: 4,
            payload: Some("hi\nthere\u{1b}[31m".into()),
            payload_hex: None,
        };
        let line = plain(&d);
        assert_eq!(line, r"abababababababab/1 #4: hi\nthere\u{1b}[31m");
        let bin = DeliveryReport {
            payload: None,
            payload_hex: Some("ff00".into()),
            ..d
        };
        assert_eq!(plain(&bin), "abababababababab/1 #4: 0xff00");
    }
}
