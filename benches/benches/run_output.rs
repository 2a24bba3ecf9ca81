//! Remote runs' output streaming (issue 20, SPEC.md §23): a requester and a runner node over
//! a Noise link in memory (a scripted process on the runner, `weft_sim::process`, that
//! writes 256 pieces of 64 KiB, 16 MiB: pseudo-random bytes, which lz4 cannot shrink, or one
//! repeated byte, which it shrinks to almost nothing), measured from the
//! RUN_REQUEST to the requester's `Exited` event: every piece read from the host, framed,
//! sealed, opened, decoded, acknowledged (RUN_ACK every 256 KiB, a window of 1 MiB) and
//! handed to the application as an event. Throughput in output bytes, both engines on one
//! thread.
//!
//! Beside it, `noise_floor`: the same 16 MiB as RUN_OUTPUT frames sealed by one `NoiseLink`
//! and opened by another (the cipher and framing alone, the part of the path no engine can
//! skip).
//!
//! `cargo bench -p weft-benches --bench run_output -- --warm-up-time 1 --measurement-time 3`

use std::collections::VecDeque;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use weft_engine::noise::{handshake_in_memory, NoiseKeys, NoiseLink, NoiseRole, Rekey};
use weft_engine::protocol::{Message, OutputStream, RunMessage, RunOutput, RUN_OUTPUT_BYTES_MAX};
use weft_engine::run::{RunCommand, RunEvent, RunEventKind};
use weft_engine::{
    Command, ConnId, Event, HostRequest, HostResult, Input, Instant, NetworkKey, Node, Output,
};
use weft_sim::net::config;
use weft_sim::process::Processes;

const PIECES: usize = 256;
const TOTAL: usize = PIECES * RUN_OUTPUT_BYTES_MAX;

/// A requester (node 0) and a runner (node 1) that allows it, joined by an in-memory
/// pipe: every transmit delivered whole to the other node and answered `Writable`, every
/// process step answered by the scripted processes, state loads answered "none". (The
/// simulator's `Net` hashes every event's `Debug` text into its trace: most of a run's time
/// at 64 KiB per event, so the bench pumps the two nodes itself.)
struct Pair {
    nodes: [Node; 2],
    /// The outbound connection of node 0 and the inbound one of node 1: the one pipe.
    conns: [ConnId; 2],
    processes: Processes,
    queue: VecDeque<(usize, Input)>,
    now: Instant,
    /// Output bytes node 0 was handed, and whether its run ended.
    output_bytes: usize,
    exited: bool,
}

impl Pair {
    fn new() -> Pair {
        let mut requester = config(1);
        requester.discovery = false;
        let mut runner = config(2);
        runner.discovery = false;
        runner.run.allow = true;
        runner.run.allow_from = vec![Node::new(requester.clone()).node_id()];
        let addr = runner.listen_addr.clone().expect("an address");
        let mut pair = Pair {
            nodes: [Node::new(requester), Node::new(runner)],
            conns: [ConnId(0), ConnId::inbound(1)],
            processes: Processes::default(),
            queue: VecDeque::new(),
            now: Instant(1_000_000_000),
            output_bytes: 0,
            exited: false,
        };
        pair.input(0, Input::Command(Command::Connect { addr }));
        pair.pump();
        assert_eq!(pair.nodes[0].links().count(), 1, "linked");
        pair
    }

    fn input(&mut self, i: usize, input: Input) {
        self.nodes[i]
            .handle_input(self.now, input)
            .expect("a valid input");
    }

    fn pump(&mut self) {
        loop {
            for i in 0..2 {
                while let Some(out) = self.nodes[i].poll_output() {
                    self.route(i, out);
                }
            }
            let Some((i, input)) = self.queue.pop_front() else {
                return;
            };
            self.input(i, input);
        }
    }

    fn route(&mut self, i: usize, out: Output) {
        match out {
            Output::Connect { conn, .. } => {
                self.conns[0] = conn;
                self.queue.push_back((
                    1,
                    Input::Accepted {
                        conn: self.conns[1],
                        addr: "node1-peer".into(),
                    },
                ));
                self.queue.push_back((0, Input::Connected { conn }));
            }
            Output::Transmit { conn, bytes } => {
                let conn_there = self.conns[1 - i];
                self.queue.push_back((
                    1 - i,
                    Input::Received {
                        conn: conn_there,
                        bytes,
                    },
                ));
                self.queue.push_back((i, Input::Writable { conn }));
            }
            Output::Request {
                id,
                request: HostRequest::Process { process, request },
            } => {
                for (id, result) in self.processes.carry_out(id, process, request) {
                    self.queue.push_back((i, Input::Completed { id, result }));
                }
            }
            Output::Request { id, request } => {
                let result = match request {
                    HostRequest::LoadState { .. } => HostResult::Loaded(None),
                    _ => HostResult::Stored,
                };
                self.queue.push_back((i, Input::Completed { id, result }));
            }
            Output::Event(Event::Run(RunEvent { kind, .. })) => match kind {
                RunEventKind::Output { bytes, .. } => self.output_bytes += bytes.len(),
                RunEventKind::Exited { .. } => self.exited = true,
                RunEventKind::Started => {}
                other => panic!("unexpected run event {other:?}"),
            },
            _ => {}
        }
    }

    /// One whole run of 16 MiB of output; the output bytes the requester was handed.
    fn one_run(&mut self, run: u64, program: &str) -> usize {
        self.output_bytes = 0;
        self.exited = false;
        let start = RunCommand::Start {
            run,
            peer: self.nodes[1].node_id(),
            program: program.into(),
            args: vec![PIECES.to_string(), RUN_OUTPUT_BYTES_MAX.to_string()],
            shell: false,
            folder: None,
        };
        self.input(0, Input::Command(Command::Run(start)));
        self.pump();
        assert!(self.exited, "the run ended");
        self.output_bytes
    }
}

fn noise_pair() -> (NoiseLink, NoiseLink) {
    let key = |s: u8| NoiseKeys::new(&[s; 32], NetworkKey::OPEN, Rekey::default());
    let mut i = NoiseLink::new(&key(1), NoiseRole::Initiator, [1; 32]);
    let mut r = NoiseLink::new(&key(2), NoiseRole::Responder, [2; 32]);
    handshake_in_memory(&mut i, &mut r);
    (i, r)
}

fn run_output(c: &mut Criterion) {
    let mut g = c.benchmark_group("run_output_16MiB");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(10);
    let mut pair = Pair::new();
    let mut run = 0;
    // "noise": pseudo-random output, which lz4 cannot shrink; "out": one repeated byte,
    // which it shrinks to almost nothing (real output, text, lies between).
    for (name, program) in [("engines_random", "noise"), ("engines_repeated", "out")] {
        g.bench_function(name, |b| {
            b.iter(|| {
                run += 1;
                assert_eq!(pair.one_run(run, program), TOTAL);
            })
        });
    }
    let data = weft_benches::pseudo_random(RUN_OUTPUT_BYTES_MAX);
    let frames: Vec<Bytes> = (0..PIECES as u64)
        .map(|seq| {
            let output = RunOutput {
                run: 1,
                seq,
                stream: OutputStream::Stdout,
                data: &data,
            };
            Message::Run(RunMessage::Output(output))
                .to_frame(false)
                .into_bytes()
        })
        .collect();
    let (mut sender, mut receiver) = noise_pair();
    g.bench_function("noise_floor", |b| {
        b.iter(|| {
            let mut opened = 0;
            for f in &frames {
                let sealed = sender.seal(f);
                receiver.push(&sealed);
                while let Some(plain) = receiver.poll_plaintext() {
                    opened += plain.len();
                }
            }
            black_box(opened)
        })
    });
    g.finish();
}

criterion_group!(benches, run_output);
criterion_main!(benches);
