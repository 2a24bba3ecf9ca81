//! Remote runs (family 0x06, SPEC.md §23): a node asks a peer to run a program, and the
//! peer streams its output and exit status back.
//!
//! The requester names each run with its own `run` number. The runner answers RUN_REQUEST
//! with RUN_REFUSED (and why) or RUN_STARTED, then RUN_OUTPUT pieces, numbered from 0 in
//! the order the process wrote them, and RUN_EXIT last. The requester acknowledges output
//! with RUN_ACK (a window of unacknowledged bytes bounds what the runner sends) and may send
//! RUN_SIGNAL (interrupt, kill) until it hears RUN_EXIT.

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::error::ProtocolError;
use crate::frame::PAYLOAD_BYTES_MAX;
use crate::replica::FolderId;
use crate::strict::{postcard_reason, strict};

/// Most arguments a RUN_REQUEST carries after its program.
pub const RUN_ARGS_MAX: usize = 4096;

/// Most bytes of the program and its arguments together.
pub const RUN_COMMAND_BYTES_MAX: usize = 256 * 1024;

/// Most output bytes one RUN_OUTPUT carries.
pub const RUN_OUTPUT_BYTES_MAX: usize = 64 * 1024;

/// Longest reason text in RUN_REFUSED, bytes.
pub const RUN_REASON_BYTES_MAX: usize = 1024;

/// RUN_REQUEST's arguments, decoded keeping one past [`RUN_ARGS_MAX`] at most (the limit
/// check then refuses them as before; `strict::keep_at_most`).
fn args_kept<'de, D>(d: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    crate::strict::keep_at_most(d, RUN_ARGS_MAX + 1)
}

/// Asks the receiver to run a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The requester's number for this run (unique among its runs in progress).
    pub run: u64,
    /// The program: a name looked up in the runner's `PATH`, or a path; with `shell`, a
    /// command line for `/bin/sh -c`, its arguments joined to it with spaces.
    pub program: String,
    /// Its arguments, at most [`RUN_ARGS_MAX`].
    #[serde(deserialize_with = "args_kept")]
    pub args: Vec<String>,
    /// Run it through `/bin/sh -c` (else no shell is involved).
    pub shell: bool,
    /// Run it inside the runner's copy of this replicated folder, once that copy has caught
    /// up with the requester's index (else in the runner's own run directory).
    pub folder: Option<RunFolder>,
}

/// The folder a run runs in, and how far the runner's copy must have caught up with the
/// requester's copy first (SPEC.md §23.2): the requester's index id and the sequence number
/// of its newest record (§22.4). Sequence 0 waits for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFolder {
    /// The replicated folder.
    pub id: FolderId,
    /// The requester's index id for it.
    pub index_id: u64,
    /// The sequence number of the requester's newest record in it.
    pub sequence: u64,
}

impl RunRequest {
    /// Whether the request keeps the rules beyond postcard's: a program, no NUL byte (no
    /// process can be given one), within the limits.
    pub fn is_valid(&self) -> bool {
        let bytes = self.program.len() + self.args.iter().map(String::len).sum::<usize>();
        !self.program.is_empty()
            && self.args.len() <= RUN_ARGS_MAX
            && bytes <= RUN_COMMAND_BYTES_MAX
            && !self.program.contains('\0')
            && !self.args.iter().any(|a| a.contains('\0'))
    }
}

/// Why a runner refused a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunRefusalReason {
    /// The runner does not run programs for anyone (started without `--allow-run`).
    NotAllowed,
    /// The requester's node id is not on the runner's allow list.
    NotOnAllowList,
    /// The link is not encrypted.
    Plaintext,
    /// The runner already runs its most runs for this peer, or in all.
    Busy,
    /// The runner has no such folder.
    UnknownFolder,
    /// The program could not be started (not found, not executable, ...).
    SpawnFailed,
    /// The requester already has a run with this number in progress here.
    Duplicate,
}

impl RunRefusalReason {
    /// Every reason, in wire order (variant index).
    pub const ALL: [RunRefusalReason; 7] = [
        RunRefusalReason::NotAllowed,
        RunRefusalReason::NotOnAllowList,
        RunRefusalReason::Plaintext,
        RunRefusalReason::Busy,
        RunRefusalReason::UnknownFolder,
        RunRefusalReason::SpawnFailed,
        RunRefusalReason::Duplicate,
    ];
}

/// The runner will not run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRefused {
    /// The run.
    pub run: u64,
    /// Why.
    pub reason: RunRefusalReason,
    /// One line for a person, at most [`RUN_REASON_BYTES_MAX`] bytes.
    pub text: String,
}

/// The process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStarted {
    /// The run.
    pub run: u64,
}

/// Which output stream a piece of output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of the process's output: a postcard header, then the raw bytes to the payload's
/// end (1 to [`RUN_OUTPUT_BYTES_MAX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutput<'a> {
    /// The run.
    pub run: u64,
    /// This piece's number: 0 for the run's first, then one more each.
    pub seq: u64,
    /// Where the process wrote it.
    pub stream: OutputStream,
    /// The bytes.
    pub data: &'a [u8],
}

/// RUN_OUTPUT's header fields, before the raw bytes.
#[derive(Serialize, Deserialize)]
struct RunOutputHeader {
    run: u64,
    seq: u64,
    stream: OutputStream,
}

/// The requester has received `bytes` of the run's output in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAck {
    /// The run.
    pub run: u64,
    /// Output bytes received so far (never less than an earlier RUN_ACK's).
    pub bytes: u64,
}

/// A signal the requester asks the runner to send to the run's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunSignalKind {
    /// SIGINT now, and SIGKILL if the process has not ended after the grace period.
    Interrupt,
    /// SIGKILL now.
    Kill,
}

/// Signal the run's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSignal {
    /// The run.
    pub run: u64,
    /// Which.
    pub signal: RunSignalKind,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(u8),
    /// A signal of this number ended it.
    Signal(u8),
}

impl ExitStatus {
    /// The exit code a shell reports for it: the code, or 128 plus the signal's number.
    pub fn shell_code(self) -> u8 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128u8.saturating_add(s),
        }
    }
}

/// The process ended; the last message of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunExit {
    /// The run.
    pub run: u64,
    /// How it ended.
    pub status: ExitStatus,
    /// How many RUN_OUTPUT pieces came before (the next `seq`).
    pub outputs: u64,
    /// A run in a folder: the runner's copy once a scan after the exit found every file
    /// settled, as the point the requester's copy must catch up to before the run's writes are
    /// all back (SPEC.md §23.3). `None` without a folder, or when the runner could not scan it.
    pub copy: Option<SyncPoint>,
}

/// How far one node's copy of a replicated folder has come: its index id and the sequence
/// number of its newest record (SPEC.md §22.4). Another node's copy has caught up to it once
/// it has every record of that index up to that sequence and nothing of it left to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPoint {
    /// The index id of the copy.
    pub index_id: u64,
    /// The sequence number of its newest record.
    pub sequence: u64,
}

/// A remote-run message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunMessage<'a> {
    /// RUN_REQUEST.
    Request(RunRequest),
    /// RUN_REFUSED.
    Refused(RunRefused),
    /// RUN_STARTED.
    Started(RunStarted),
    /// RUN_OUTPUT.
    Output(RunOutput<'a>),
    /// RUN_ACK.
    Ack(RunAck),
    /// RUN_SIGNAL.
    Signal(RunSignal),
    /// RUN_EXIT.
    Exit(RunExit),
}

impl<'a> RunMessage<'a> {
    /// The run the message is about.
    pub fn run(&self) -> u64 {
        match self {
            RunMessage::Request(m) => m.run,
            RunMessage::Refused(m) => m.run,
            RunMessage::Started(m) => m.run,
            RunMessage::Output(m) => m.run,
            RunMessage::Ack(m) => m.run,
            RunMessage::Signal(m) => m.run,
            RunMessage::Exit(m) => m.run,
        }
    }

    /// The command code it travels under.
    pub fn code(&self) -> Code {
        match self {
            RunMessage::Request(_) => Code::RUN_REQUEST,
            RunMessage::Refused(_) => Code::RUN_REFUSED,
            RunMessage::Started(_) => Code::RUN_STARTED,
            RunMessage::Output(_) => Code::RUN_OUTPUT,
            RunMessage::Ack(_) => Code::RUN_ACK,
            RunMessage::Signal(_) => Code::RUN_SIGNAL,
            RunMessage::Exit(_) => Code::RUN_EXIT,
        }
    }

    /// The payload (uncompressed).
    pub(crate) fn encode_payload(&self) -> Result<Vec<u8>, postcard::Error> {
        match self {
            RunMessage::Request(m) => postcard::to_allocvec(m),
            RunMessage::Refused(m) => postcard::to_allocvec(m),
            RunMessage::Started(m) => postcard::to_allocvec(m),
            RunMessage::Output(m) => {
                let header = RunOutputHeader {
                    run: m.run,
                    seq: m.seq,
                    stream: m.stream,
                };
                let mut out = postcard::to_allocvec(&header)?;
                out.extend_from_slice(m.data);
                Ok(out)
            }
            RunMessage::Ack(m) => postcard::to_allocvec(m),
            RunMessage::Signal(m) => postcard::to_allocvec(m),
            RunMessage::Exit(m) => postcard::to_allocvec(m),
        }
    }

    /// Decodes the payload of a frame with a remote-run code.
    pub(crate) fn decode(code: Code, payload: &'a [u8]) -> Result<RunMessage<'a>, ProtocolError> {
        Ok(match code {
            Code::RUN_REQUEST => RunMessage::Request(strict(code, payload)?),
            Code::RUN_REFUSED => RunMessage::Refused(strict(code, payload)?),
            Code::RUN_STARTED => RunMessage::Started(strict(code, payload)?),
            Code::RUN_OUTPUT => RunMessage::Output(decode_output(payload)?),
            Code::RUN_ACK => RunMessage::Ack(strict(code, payload)?),
            Code::RUN_SIGNAL => RunMessage::Signal(strict(code, payload)?),
            Code::RUN_EXIT => RunMessage::Exit(strict(code, payload)?),
            other => return Err(ProtocolError::UnknownCommand(other.0)),
        })
    }

    /// Why the message breaks a limit of SPEC.md §23.2, if it does.
    pub(crate) fn limit_error(&self) -> Option<&'static str> {
        match self {
            RunMessage::Request(m) if !m.is_valid() => {
                Some("run request without a program, with a NUL byte, or over its limits")
            }
            RunMessage::Refused(m) if m.text.len() > RUN_REASON_BYTES_MAX => {
                Some("refusal text longer than RUN_REASON_BYTES_MAX")
            }
            RunMessage::Output(m) if m.data.is_empty() => Some("run output without bytes"),
            RunMessage::Output(m) if m.data.len() > RUN_OUTPUT_BYTES_MAX => {
                Some("run output longer than RUN_OUTPUT_BYTES_MAX")
            }
            _ => None,
        }
    }
}

fn decode_output(payload: &[u8]) -> Result<RunOutput<'_>, ProtocolError> {
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(ProtocolError::DecompressedTooLarge {
            size: payload.len() as u64,
            max: PAYLOAD_BYTES_MAX as u64,
        });
    }
    match postcard::take_from_bytes::<RunOutputHeader>(payload) {
        Ok((h, data)) => Ok(RunOutput {
            run: h.run,
            seq: h.seq,
            stream: h.stream,
            data,
        }),
        Err(e) => Err(ProtocolError::MalformedPayload {
            code: Code::RUN_OUTPUT,
            reason: postcard_reason(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn round_trip(m: RunMessage<'_>) {
        let code = m.code();
        let payload = Message::Run(m.clone()).encode_payload();
        assert_eq!(Message::decode(code, &payload).unwrap(), Message::Run(m));
    }

    #[test]
    fn every_run_refusal_reason_is_listed_at_its_wire_index() {
        for (i, r) in RunRefusalReason::ALL.iter().enumerate() {
            let encoded = postcard::to_allocvec(r).expect("a unit variant encodes");
            assert_eq!(encoded, [i as u8], "{r:?}");
        }
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(RunMessage::Request(RunRequest {
            run: 7,
            program: "make".into(),
            args: vec!["-j".into(), "4".into()],
            shell: false,
            folder: Some(RunFolder {
                id: FolderId([3; 16]),
                index_id: 9,
                sequence: 300,
            }),
        }));
        round_trip(RunMessage::Refused(RunRefused {
            run: 1,
            reason: RunRefusalReason::NotOnAllowList,
            text: "no".into(),
        }));
        round_trip(RunMessage::Started(RunStarted { run: 2 }));
        round_trip(RunMessage::Output(RunOutput {
            run: 3,
            seq: 300,
            stream: OutputStream::Stderr,
            data: b"warning\n",
        }));
        round_trip(RunMessage::Ack(RunAck {
            run: 3,
            bytes: 1 << 40,
        }));
        round_trip(RunMessage::Signal(RunSignal {
            run: 4,
            signal: RunSignalKind::Kill,
        }));
        round_trip(RunMessage::Exit(RunExit {
            run: 5,
            status: ExitStatus::Signal(9),
            outputs: 12,
            copy: None,
        }));
        round_trip(RunMessage::Exit(RunExit {
            run: 6,
            status: ExitStatus::Code(0),
            outputs: 0,
            copy: Some(SyncPoint {
                index_id: u64::MAX,
                sequence: 70_000,
            }),
        }));
    }

    #[test]
    fn limits_are_checked_on_decode() {
        let bad = |m: RunMessage<'_>| {
            let payload = Message::Run(m.clone()).encode_payload();
            assert!(
                matches!(
                    Message::decode(m.code(), &payload),
                    Err(ProtocolError::MalformedPayload { .. })
                ),
                "{m:?}"
            );
        };
        let request = |program: &str, args: Vec<String>| {
            RunMessage::Request(RunRequest {
                run: 1,
                program: program.into(),
                args,
                shell: false,
                folder: None,
            })
        };
        bad(request("", vec![]));
        bad(request("a\0b", vec![]));
        bad(request("ls", vec!["x\0".into()]));
        bad(request("ls", vec![String::new(); RUN_ARGS_MAX + 1]));
        bad(request("ls", vec!["x".repeat(RUN_COMMAND_BYTES_MAX)]));
        bad(RunMessage::Output(RunOutput {
            run: 1,
            seq: 0,
            stream: OutputStream::Stdout,
            data: b"",
        }));
        bad(RunMessage::Output(RunOutput {
            run: 1,
            seq: 0,
            stream: OutputStream::Stdout,
            data: &[0; RUN_OUTPUT_BYTES_MAX + 1],
        }));
        bad(RunMessage::Refused(RunRefused {
            run: 1,
            reason: RunRefusalReason::Busy,
            text: "x".repeat(RUN_REASON_BYTES_MAX + 1),
        }));
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
        assert_eq!(ExitStatus::Code(3).shell_code(), 3);
    }
}
