//! A scripted stand-in for the processes a runner's host starts (SPEC.md §23), so that remote
//! runs can be tested and measured without an operating system.
//!
//! The program names a script:
//! - `out N BYTES`: N pieces of BYTES bytes each to standard output (`o` repeated), then
//!   exit 0; `err` likewise to standard error; `noise N BYTES` likewise to standard output
//!   with pseudo-random bytes (which do not compress);
//! - `exit CODE`: exit with CODE;
//! - `lines N`: "1\n" to "N\n", one piece each, odd ones to stdout and even ones to stderr,
//!   then exit 0;
//! - `wait`: no output; ends with SIGINT (exit 130 as signal 2) or SIGKILL (signal 9);
//! - `stubborn`: like `wait`, but ignores SIGINT;
//! - `missing`: cannot be started;
//! - `unstartable`: the spawn is held and never answered (a folder that never catches up),
//!   until a `Kill` for the process answers it `NotStarted`, as the weft drivers do;
//! - `lying`: exits 0 naming a copy of a folder even when it ran in none (a host the requester
//!   must not believe).
//!
//! A process run in a folder ends naming the host's copy one record past the requester's sync
//! point, under an index id one higher (the simulator keeps no files for runs).
//!
//! A `Read` with nothing to say is held until something happens (a signal), as a real host
//! holds it until the process writes or ends.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use weft_engine::protocol::{ExitStatus, OutputStream, RunFolder, RunSignalKind, SyncPoint};
use weft_engine::run::{ProcessRequest, ProcessResult};
use weft_engine::{HostResult, NodeId, RequestId};

/// One scripted process.
#[derive(Debug)]
struct Fake {
    /// Pieces still to be read.
    output: VecDeque<(OutputStream, Bytes)>,
    /// How it ends once the output is read (`None`: it waits for a signal).
    exit: Option<ExitStatus>,
    ignores_interrupt: bool,
    /// A `Read` held until something happens.
    held: Option<RequestId>,
    /// The copy its exit names.
    copy: Option<SyncPoint>,
}

/// The processes of one simulated host.
#[derive(Debug, Default)]
pub struct Processes {
    running: BTreeMap<u64, Fake>,
    /// Spawns held (`unstartable`), by process.
    held_spawns: BTreeMap<u64, RequestId>,
    /// Signals sent, in order: (process, signal).
    pub signals: Vec<(u64, RunSignalKind)>,
    /// Processes spawned, in order: (process, program, args).
    pub spawned: Vec<(u64, String, Vec<String>)>,
    /// Each spawn's folder (with its sync point) and requester, in the same order.
    pub spawned_for: Vec<(Option<RunFolder>, NodeId)>,
}

impl Processes {
    /// Carries out `request` for `process`: the answers due now, with their request ids
    /// (a held `Read` may be answered by a later signal).
    pub fn carry_out(
        &mut self,
        id: RequestId,
        process: u64,
        request: ProcessRequest,
    ) -> Vec<(RequestId, HostResult)> {
        match request {
            ProcessRequest::Spawn {
                program,
                args,
                folder,
                requester,
                ..
            } => {
                if program == "unstartable" {
                    // A host that never answers the spawn (a folder that never catches up).
                    self.held_spawns.insert(process, id);
                    return Vec::new();
                }
                let result = match script(&program, &args) {
                    Some(mut fake) => {
                        if let Some(f) = folder {
                            fake.copy = Some(SyncPoint {
                                index_id: f.index_id.wrapping_add(1),
                                sequence: f.sequence.saturating_add(1),
                            });
                        }
                        self.spawned.push((process, program, args));
                        self.spawned_for.push((folder, requester));
                        self.running.insert(process, fake);
                        ProcessResult::Spawned
                    }
                    None => ProcessResult::NotStarted {
                        unknown_folder: false,
                        why: format!("{program}: not found"),
                    },
                };
                vec![(id, HostResult::Process(result))]
            }
            ProcessRequest::Read => {
                let Some(fake) = self.running.get_mut(&process) else {
                    return vec![(id, HostResult::Failed("no such process".into()))];
                };
                if let Some((stream, bytes)) = fake.output.pop_front() {
                    return vec![(id, output(stream, bytes))];
                }
                match fake.exit {
                    Some(status) => {
                        let copy = fake.copy;
                        self.running.remove(&process);
                        vec![(id, HostResult::Process(exited(status, copy)))]
                    }
                    None => {
                        fake.held = Some(id);
                        vec![]
                    }
                }
            }
            ProcessRequest::Signal(signal) => {
                self.signals.push((process, signal));
                let mut answers = Vec::new();
                if signal == RunSignalKind::Kill {
                    if let Some(spawn) = self.held_spawns.remove(&process) {
                        let refused = ProcessResult::NotStarted {
                            unknown_folder: false,
                            why: "killed before it started".into(),
                        };
                        answers.push((spawn, HostResult::Process(refused)));
                    }
                }
                answers.push((id, HostResult::Process(ProcessResult::Signalled)));
                let Some(fake) = self.running.get_mut(&process) else {
                    return answers;
                };
                let status = match signal {
                    RunSignalKind::Interrupt if fake.ignores_interrupt => return answers,
                    RunSignalKind::Interrupt => ExitStatus::Signal(2),
                    RunSignalKind::Kill => ExitStatus::Signal(9),
                };
                // Ended by the signal: what it had not written yet is lost.
                fake.output.clear();
                fake.exit = Some(status);
                if let Some(held) = fake.held.take() {
                    let copy = fake.copy;
                    self.running.remove(&process);
                    answers.push((held, HostResult::Process(exited(status, copy))));
                }
                answers
            }
            other => vec![(id, HostResult::Failed(format!("unknown step {other:?}")))],
        }
    }

    /// Processes still running.
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

fn output(stream: OutputStream, bytes: Bytes) -> HostResult {
    HostResult::Process(ProcessResult::Output { stream, bytes })
}

fn script(program: &str, args: &[String]) -> Option<Fake> {
    let num = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    let mut fake = Fake {
        output: VecDeque::new(),
        exit: Some(ExitStatus::Code(0)),
        ignores_interrupt: false,
        held: None,
        copy: None,
    };
    match program {
        "out" | "err" => {
            let stream = if program == "out" {
                OutputStream::Stdout
            } else {
                OutputStream::Stderr
            };
            let piece = Bytes::from(vec![b'o'; num(1) as usize]);
            for _ in 0..num(0) {
                fake.output.push_back((stream, piece.clone()));
            }
        }
        "noise" => {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let piece: Vec<u8> = (0..num(1))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let piece = Bytes::from(piece);
            for _ in 0..num(0) {
                fake.output.push_back((OutputStream::Stdout, piece.clone()));
            }
        }
        "exit" => fake.exit = Some(ExitStatus::Code(num(0) as u8)),
        "lines" => {
            for n in 1..=num(0) {
                let stream = if n % 2 == 1 {
                    OutputStream::Stdout
                } else {
                    OutputStream::Stderr
                };
                fake.output
                    .push_back((stream, Bytes::from(format!("{n}\n"))));
            }
        }
        "wait" => fake.exit = None,
        "lying" => {
            fake.copy = Some(SyncPoint {
                index_id: 1,
                sequence: 1,
            })
        }
        "stubborn" => {
            fake.exit = None;
            fake.ignores_interrupt = true;
        }
        _ => return None,
    }
    Some(fake)
}

/// A fake process's end.
fn exited(status: ExitStatus, copy: Option<SyncPoint>) -> ProcessResult {
    ProcessResult::Exited { status, copy }
}
