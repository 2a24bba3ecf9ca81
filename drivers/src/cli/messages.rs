//! `weft send` and `weft listen`: broadcasts in and out of a running node.

use std::io::{Read, Write};
use std::process::ExitCode;

use super::{fail, init_logging, NetArgs};
use crate::control::{self, ControlReply, ControlRequest};
use crate::report::DeliveryReport;

/// Arguments of `weft send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The text to broadcast, or `-` to read it from standard input (up to the broadcast
    /// limit, 16 MiB; a command-line argument can hold only about 128 KiB).
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

/// Runs `weft send`: broadcasts the message (`-`: standard input) through the running node and
/// prints `sent N bytes`.
pub fn send(args: SendArgs) -> ExitCode {
    init_logging("warn");
    let payload_max = weft_engine::Limits::default().broadcast_payload_max;
    let message = if args.message == "-" {
        read_message(std::io::stdin().lock(), payload_max)
    } else {
        checked(args.message, payload_max)
    };
    let message = match message {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let bytes = message.len();
    let request = ControlRequest::Send { message };
    let outcome = args
        .net
        .socket_path()
        .and_then(|path| control::request(&path, &request).map_err(|e| e.to_string()));
    match outcome {
        Ok(ControlReply::Sent) if bytes == 1 => print_line("sent 1 byte"),
        Ok(ControlReply::Sent) => print_line(&format!("sent {bytes} bytes")),
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

/// Reads a message of at most `payload_max` bytes of UTF-8 text from `input`.
fn read_message(input: impl Read, payload_max: usize) -> Result<String, String> {
    let mut bytes = Vec::new();
    input
        .take(payload_max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading standard input: {e}"))?;
    if bytes.len() > payload_max {
        return Err(too_large(payload_max));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "the message is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })?;
    checked(text, payload_max)
}

/// `message` if it fits in one broadcast.
fn checked(message: String, payload_max: usize) -> Result<String, String> {
    if message.len() > payload_max {
        return Err(too_large(payload_max));
    }
    Ok(message)
}

fn too_large(payload_max: usize) -> String {
    format!("the message is over the largest broadcast, {payload_max} bytes")
}

fn print_line(line: &str) -> ExitCode {
    match writeln!(std::io::stdout().lock(), "{line}") {
        Ok(()) => ExitCode::SUCCESS,
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
        (Some(text), _) => super::printable(text),
        (None, Some(hex)) => format!("0x{hex}"),
        (None, None) => String::new(),
    };
    // A p2p.today sender names itself: escaped like the message.
    let origin = super::printable(origin);
    format!("{origin}/{} #{}: {body}", d.incarnation, d.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_from_input_is_bounded_text() {
        assert_eq!(read_message(&b"hi\n"[..], 3).unwrap(), "hi\n");
        let over = read_message(&b"1234"[..], 3).unwrap_err();
        assert!(over.contains("largest broadcast, 3 bytes"), "{over}");
        let binary = read_message(&b"ok\xff"[..], 8).unwrap_err();
        assert!(
            binary.contains("not UTF-8") && binary.contains("offset 2"),
            "{binary}"
        );
        assert!(checked("1234".into(), 3).is_err());
    }

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
        // A p2p.today sender names itself: its escapes are shown, not run.
        let named = DeliveryReport {
            origin: "\u{1b}]0;pwned\u{7}".into(),
            ..bin
        };
        assert_eq!(plain(&named), r"\u{1b}]0;pwned\u{7}/1 #4: 0xff00");
    }
}
