//! Remote runs as a protocol the node hosts (family `0x06`, SPEC.md §23): the runner's side
//! (authorization, the host's process steps, output paced by the requester's
//! acknowledgements, the grace period, kills when a link goes) and the requester's side
//! (commands to messages, messages to events, acknowledgements).

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use weft_protocol::{
    Code, ExitStatus, Family, Frame, Message, NodeId, RunAck, RunExit, RunMessage, RunOutput,
    RunRefusalReason, RunRefused, RunRequest, RunSignal, RunSignalKind, RunStarted,
    RUN_REASON_BYTES_MAX,
};

use super::{
    ProcessRequest, ProcessResult, RunCommand, RunConfig, RunEvent, RunEventKind, RunMetrics,
    RunRefusal, RUNS_ASKED_MAX, RUNS_MAX, RUNS_PER_PEER_MAX, RUN_ACK_BYTES, RUN_ANSWER_WAIT,
    RUN_ANSWER_WAIT_IN_FOLDER, RUN_GRACE, RUN_WINDOW_BYTES,
};
use crate::config::Config;
use crate::io::{HostRequest, HostResult};
use crate::link_key::LinkEncryption;
use crate::machine::{
    Class, Context, LinkNotice, Outgoing, PeerFault, Protocol, ProtocolOutput, Recipients,
};
use crate::session::Peer;
use crate::time::Instant;

/// What a host request's token names besides the process: its kind, in the low two bits.
const SPAWN: u64 = 0;
const READ: u64 = 1;
const SIGNAL: u64 = 2;

/// A run this node carries out for a peer.
#[derive(Debug)]
struct Serving {
    peer: NodeId,
    run: u64,
    /// The host answered `Spawned`.
    started: bool,
    /// The peer is still linked (else the process is killed and its output dropped).
    linked: bool,
    /// Kill the process as soon as it has started (the link went, or the peer asked, first).
    kill_on_start: bool,
    /// A `Read` is with the host.
    reading: bool,
    /// The next RUN_OUTPUT's number.
    seq: u64,
    /// Output bytes sent, and acknowledged by the peer.
    sent_bytes: u64,
    acked_bytes: u64,
    /// When SIGKILL follows an interrupt.
    kill_at: Option<Instant>,
    /// The host was asked to interrupt the started process (once: a peer's repeats, any
    /// number in one read, would each be a host request and a system call).
    interrupted: bool,
    /// The host was asked to kill the started process (once, likewise).
    killed: bool,
}

/// A run this node asked a peer for.
#[derive(Debug)]
struct Asked {
    peer: NodeId,
    /// It runs in a folder (only then may RUN_EXIT name a copy).
    in_folder: bool,
    started: bool,
    /// Until RUN_STARTED or RUN_REFUSED: when the run is given up.
    answer_by: Option<Instant>,
    /// The next RUN_OUTPUT's expected number.
    next_seq: u64,
    /// Output bytes received, and acknowledged.
    received: u64,
    acked: u64,
    /// A `Kill` was sent: another would change nothing (a host that hears its asker went
    /// away from two sides asks twice).
    killed: bool,
}

/// A run given up for want of an answer (see `RunProtocol::given_up`).
#[derive(Debug)]
struct GivenUp {
    peer: NodeId,
    /// Output bytes that came since, and acknowledged: a runner that started it after all
    /// sends output until the kill takes, and waits for acknowledgements past its window
    /// before it reads the exit (else its run would hold a slot until the link went).
    received: u64,
    acked: u64,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct RunProtocol {
    config: RunConfig,
    /// Whether links are encrypted: runs go only over Noise links.
    encrypted: bool,
    /// Runs carried out here, by the process number the engine gave them.
    serving: BTreeMap<u64, Serving>,
    /// The process of each (peer, run).
    by_run: BTreeMap<(NodeId, u64), u64>,
    next_process: u64,
    /// Runs asked of peers, by the application's number.
    asked: BTreeMap<u64, Asked>,
    /// Runs given up for want of an answer, and the peer asked: what it still sends about
    /// them is dropped quietly (at most [`RUNS_ASKED_MAX`], the oldest forgotten first).
    given_up: BTreeMap<u64, GivenUp>,
    outputs: VecDeque<ProtocolOutput<RunEvent>>,
    metrics: RunMetrics,
}

impl RunProtocol {
    pub(crate) fn new(config: &Config) -> RunProtocol {
        RunProtocol {
            config: config.run.clone(),
            encrypted: config.link_encryption == LinkEncryption::Noise,
            serving: BTreeMap::new(),
            by_run: BTreeMap::new(),
            next_process: 0,
            asked: BTreeMap::new(),
            given_up: BTreeMap::new(),
            outputs: VecDeque::new(),
            metrics: RunMetrics::default(),
        }
    }

    pub(crate) fn metrics(&self) -> &RunMetrics {
        &self.metrics
    }

    fn send(&mut self, to: NodeId, message: RunMessage<'_>) {
        self.outputs.push_back(ProtocolOutput::Send {
            to: Recipients::Peer(to),
            message: Outgoing::message(&Message::Run(message)),
            class: Class::Control,
        });
    }

    fn event(&mut self, run: u64, kind: RunEventKind) {
        self.outputs
            .push_back(ProtocolOutput::Event(RunEvent { run, kind }));
    }

    fn request(&mut self, process: u64, kind: u64, request: ProcessRequest) {
        self.outputs.push_back(ProtocolOutput::Request {
            token: process << 2 | kind,
            request: HostRequest::Process { process, request },
        });
    }

    fn refuse(&mut self, to: NodeId, run: u64, reason: RunRefusalReason, text: String) {
        self.metrics.refused += 1;
        let text = cut(text, RUN_REASON_BYTES_MAX);
        self.send(to, RunMessage::Refused(RunRefused { run, reason, text }));
    }

    /// The runner's checks, in order (SPEC.md §23.3); the first that fails is the refusal.
    fn check_request(
        &self,
        from: NodeId,
        r: &RunRequest,
    ) -> Result<(), (RunRefusalReason, String)> {
        if !self.encrypted {
            return Err((
                RunRefusalReason::Plaintext,
                "runs go only over encrypted links".into(),
            ));
        }
        if !self.config.allow {
            return Err((
                RunRefusalReason::NotAllowed,
                "this node runs nothing for peers (it was started without --allow-run)".into(),
            ));
        }
        if !self.config.allow_from.contains(&from) {
            return Err((
                RunRefusalReason::NotOnAllowList,
                format!(
                    "node {} is not on this node's run allow list",
                    full_hex(&from)
                ),
            ));
        }
        if self.by_run.contains_key(&(from, r.run)) {
            return Err((
                RunRefusalReason::Duplicate,
                format!("run {} of this node is in progress already", r.run),
            ));
        }
        let of_peer = self.serving.values().filter(|s| s.peer == from).count();
        if of_peer >= RUNS_PER_PEER_MAX || self.serving.len() >= RUNS_MAX {
            return Err((
                RunRefusalReason::Busy,
                format!(
                    "too many runs in progress (at most {RUNS_PER_PEER_MAX} per peer, {RUNS_MAX} in all)"
                ),
            ));
        }
        Ok(())
    }

    fn on_request(&mut self, from: NodeId, r: RunRequest) {
        if let Err((reason, text)) = self.check_request(from, &r) {
            self.refuse(from, r.run, reason, text);
            return;
        }
        self.next_process += 1;
        let process = self.next_process;
        self.serving.insert(
            process,
            Serving {
                peer: from,
                run: r.run,
                started: false,
                linked: true,
                kill_on_start: false,
                reading: false,
                seq: 0,
                sent_bytes: 0,
                acked_bytes: 0,
                kill_at: None,
                interrupted: false,
                killed: false,
            },
        );
        self.by_run.insert((from, r.run), process);
        let spawn = ProcessRequest::Spawn {
            program: r.program,
            args: r.args,
            shell: r.shell,
            folder: r.folder,
            requester: from,
        };
        self.request(process, SPAWN, spawn);
    }

    /// Asks the host for the next piece of output if none is asked for and the window (or a
    /// lost link, which drops the output) allows.
    fn maybe_read(&mut self, process: u64) {
        let Some(s) = self.serving.get_mut(&process) else {
            return;
        };
        let window_open = s.sent_bytes - s.acked_bytes < RUN_WINDOW_BYTES;
        if s.started && !s.reading && (window_open || !s.linked) {
            s.reading = true;
            self.request(process, READ, ProcessRequest::Read);
        }
    }

    fn kill(&mut self, process: u64) {
        let Some(s) = self.serving.get_mut(&process) else {
            return;
        };
        s.kill_at = None;
        if s.started {
            if s.killed {
                return;
            }
            s.killed = true;
            self.request(process, SIGNAL, ProcessRequest::Signal(RunSignalKind::Kill));
        } else if !s.kill_on_start {
            // The host may hold the spawn (its folder catching up): told now, it answers the
            // spawn `NotStarted` rather than start the program only to kill it. A host that
            // started it anyway answers `Spawned`, and the kill follows then.
            s.kill_on_start = true;
            self.request(process, SIGNAL, ProcessRequest::Signal(RunSignalKind::Kill));
        }
    }

    fn remove(&mut self, process: u64) -> Option<Serving> {
        let s = self.serving.remove(&process)?;
        self.by_run.remove(&(s.peer, s.run));
        Some(s)
    }

    fn on_signal(&mut self, now: Instant, from: NodeId, m: RunSignal) {
        // A run that ended already (its RUN_EXIT crossed the signal): nothing to do.
        let Some(&process) = self.by_run.get(&(from, m.run)) else {
            return;
        };
        match m.signal {
            RunSignalKind::Kill => self.kill(process),
            RunSignalKind::Interrupt => {
                let Some(s) = self.serving.get_mut(&process) else {
                    return;
                };
                if s.kill_at.is_none() {
                    s.kill_at = Some(now + RUN_GRACE);
                }
                if s.started && !s.interrupted && !s.killed {
                    s.interrupted = true;
                    let interrupt = ProcessRequest::Signal(RunSignalKind::Interrupt);
                    self.request(process, SIGNAL, interrupt);
                }
            }
        }
    }

    fn on_ack(&mut self, from: NodeId, m: RunAck) -> Result<(), PeerFault> {
        let Some(&process) = self.by_run.get(&(from, m.run)) else {
            return Ok(());
        };
        if let Some(s) = self.serving.get_mut(&process) {
            if m.bytes > s.sent_bytes {
                return Err(PeerFault::Unexpected("RUN_ACK past the output sent"));
            }
            s.acked_bytes = s.acked_bytes.max(m.bytes);
        }
        self.maybe_read(process);
        Ok(())
    }

    fn on_completed(&mut self, process: u64, kind: u64, result: HostResult) {
        let Some(s) = self.serving.get_mut(&process) else {
            // A signal's answer after the run ended.
            return;
        };
        match (kind, result) {
            (SPAWN, HostResult::Process(ProcessResult::Spawned)) => {
                s.started = true;
                self.metrics.served += 1;
                let (peer, run, linked, kill) = (s.peer, s.run, s.linked, s.kill_on_start);
                if linked {
                    self.send(peer, RunMessage::Started(RunStarted { run }));
                }
                if kill || !linked {
                    self.kill(process);
                }
                self.maybe_read(process);
            }
            (SPAWN, other) => {
                let (reason, why) = match other {
                    HostResult::Process(ProcessResult::NotStarted {
                        unknown_folder: true,
                        why,
                    }) => (RunRefusalReason::UnknownFolder, why),
                    HostResult::Process(ProcessResult::NotStarted { why, .. })
                    | HostResult::Failed(why) => (RunRefusalReason::SpawnFailed, why),
                    other => (
                        RunRefusalReason::SpawnFailed,
                        format!("the host answered {other:?}"),
                    ),
                };
                if let Some(s) = self.remove(process) {
                    if s.linked {
                        self.refuse(s.peer, s.run, reason, why);
                    }
                }
            }
            (READ, HostResult::Process(ProcessResult::Output { stream, bytes })) => {
                s.reading = false;
                if s.linked && !bytes.is_empty() {
                    let (peer, run, seq) = (s.peer, s.run, s.seq);
                    s.seq += 1;
                    s.sent_bytes += bytes.len() as u64;
                    self.metrics.output_bytes_sent += bytes.len() as u64;
                    let output = RunOutput {
                        run,
                        seq,
                        stream,
                        data: &bytes,
                    };
                    self.send(peer, RunMessage::Output(output));
                }
                self.maybe_read(process);
            }
            (READ, result) => {
                let (status, copy) = match result {
                    HostResult::Process(ProcessResult::Exited { status, copy }) => (status, copy),
                    // The host lost the process: make sure it is gone, and say it was killed.
                    _ => {
                        self.request(process, SIGNAL, ProcessRequest::Signal(RunSignalKind::Kill));
                        (ExitStatus::Signal(9), None)
                    }
                };
                if let Some(s) = self.remove(process) {
                    if s.linked {
                        let exit = RunExit {
                            run: s.run,
                            status,
                            outputs: s.seq,
                            copy,
                        };
                        self.send(s.peer, RunMessage::Exit(exit));
                    }
                }
            }
            // Signals are answered at once and need nothing more.
            _ => {}
        }
    }

    /// A message about a run this node asked for: it must come from the peer asked.
    fn asked_of(&mut self, from: NodeId, run: u64) -> Result<&mut Asked, PeerFault> {
        match self.asked.get_mut(&run) {
            Some(a) if a.peer == from => Ok(a),
            _ => Err(PeerFault::Unexpected(
                "a run message for no run asked of that peer",
            )),
        }
    }

    fn on_answer(&mut self, from: NodeId, message: RunMessage<'_>) -> Result<(), PeerFault> {
        let run = message.run();
        let late = !self.asked.contains_key(&run)
            && self.given_up.get(&run).is_some_and(|g| g.peer == from);
        if late {
            // Late: the run was given up and its kill asked for; its output is acknowledged
            // (and dropped), its end ends the record.
            match message {
                RunMessage::Refused(_) | RunMessage::Exit(_) => {
                    self.given_up.remove(&run);
                }
                RunMessage::Output(o) => {
                    let ack = self.given_up.get_mut(&run).and_then(|g| {
                        g.received += o.data.len() as u64;
                        (g.received - g.acked >= RUN_ACK_BYTES).then(|| {
                            g.acked = g.received;
                            g.received
                        })
                    });
                    if let Some(bytes) = ack {
                        self.send(from, RunMessage::Ack(RunAck { run, bytes }));
                    }
                }
                _ => {}
            }
            return Ok(());
        }
        let asked = self.asked_of(from, run)?;
        match message {
            RunMessage::Refused(r) if !asked.started => {
                asked.answer_by = None;
                self.asked.remove(&run);
                let kind = RunEventKind::Refused {
                    reason: r.reason,
                    text: r.text,
                };
                self.event(run, kind);
            }
            RunMessage::Started(_) if !asked.started => {
                asked.started = true;
                asked.answer_by = None;
                self.event(run, RunEventKind::Started);
            }
            RunMessage::Output(o) if asked.started && o.seq == asked.next_seq => {
                asked.next_seq += 1;
                asked.received += o.data.len() as u64;
                let ack = (asked.received - asked.acked >= RUN_ACK_BYTES).then(|| {
                    asked.acked = asked.received;
                    asked.received
                });
                self.metrics.output_bytes_received += o.data.len() as u64;
                if let Some(bytes) = ack {
                    self.send(from, RunMessage::Ack(RunAck { run, bytes }));
                }
                let kind = RunEventKind::Output {
                    stream: o.stream,
                    // A copy of its own: the event must not pin the read buffer.
                    bytes: Bytes::copy_from_slice(o.data),
                };
                self.event(run, kind);
            }
            RunMessage::Exit(e)
                if asked.started
                    && e.outputs == asked.next_seq
                    && (asked.in_folder || e.copy.is_none()) =>
            {
                self.asked.remove(&run);
                let kind = RunEventKind::Exited {
                    status: e.status,
                    copy: e.copy,
                };
                self.event(run, kind);
            }
            _ => return Err(PeerFault::Unexpected("a run message out of order")),
        }
        Ok(())
    }

    fn start(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        command: RunCommand,
    ) -> Result<(), RunRefusal> {
        match command {
            RunCommand::Start {
                run,
                peer,
                program,
                args,
                shell,
                folder,
            } => {
                if !self.encrypted {
                    return Err(RunRefusal::Plaintext);
                }
                let Some(linked) = cx.links().find(|p| p.node == peer) else {
                    return Err(RunRefusal::NotLinked(peer));
                };
                if !linked.runs(Family::Remote) {
                    return Err(RunRefusal::PeerRunsNone(peer));
                }
                if self.asked.contains_key(&run) {
                    return Err(RunRefusal::Duplicate(run));
                }
                if self.asked.len() >= RUNS_ASKED_MAX {
                    return Err(RunRefusal::TooMany);
                }
                let request = RunRequest {
                    run,
                    program,
                    args,
                    shell,
                    folder,
                };
                if !request.is_valid() {
                    return Err(RunRefusal::Invalid);
                }
                let wait = if request.folder.is_some() {
                    RUN_ANSWER_WAIT_IN_FOLDER
                } else {
                    RUN_ANSWER_WAIT
                };
                self.given_up.remove(&run);
                self.asked.insert(
                    run,
                    Asked {
                        peer,
                        in_folder: request.folder.is_some(),
                        started: false,
                        answer_by: Some(now + wait),
                        next_seq: 0,
                        received: 0,
                        acked: 0,
                        killed: false,
                    },
                );
                self.metrics.asked += 1;
                self.send(peer, RunMessage::Request(request));
            }
            RunCommand::Signal { run, signal } => {
                let Some(asked) = self.asked.get_mut(&run) else {
                    return Err(RunRefusal::UnknownRun(run));
                };
                if asked.killed {
                    return Ok(());
                }
                asked.killed = signal == RunSignalKind::Kill;
                let peer = asked.peer;
                self.send(peer, RunMessage::Signal(RunSignal { run, signal }));
            }
        }
        Ok(())
    }
}

/// All 64 hex digits of a node id (what `--allow-run-from` takes).
fn full_hex(node: &NodeId) -> String {
    node.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub(super) fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl Protocol for RunProtocol {
    type Event = RunEvent;
    type Command = RunCommand;
    type Refusal = RunRefusal;

    const FAMILY: Family = Family::Remote;

    fn owns(code: Code) -> bool {
        code.is_known() && code.family() == Some(Family::Remote)
    }

    fn handle_link(&mut self, _now: Instant, _cx: &Context<'_>, notice: LinkNotice<'_>) {
        let node = match notice {
            LinkNotice::Down { node, .. } => node,
            // A new link that replaced one to the same run of the peer: what was queued on
            // the old one is gone (output, acknowledgements, an exit), and a run has no
            // catch-up, so it ends as if the link had gone.
            LinkNotice::Up {
                peer,
                replaced: true,
            } => peer.node,
            LinkNotice::Up { .. } | LinkNotice::Room { .. } => return,
        };
        // SPEC.md §23.4: a lost link kills the peer's runs here, and ends its runs there.
        let processes: Vec<u64> = self
            .serving
            .iter()
            .filter(|(_, s)| s.peer == node)
            .map(|(p, _)| *p)
            .collect();
        for process in processes {
            if let Some(s) = self.serving.get_mut(&process) {
                s.linked = false;
            }
            self.kill(process);
            self.maybe_read(process);
        }
        let lost: Vec<u64> = self
            .asked
            .iter()
            .filter(|(_, a)| a.peer == node)
            .map(|(r, _)| *r)
            .collect();
        for run in lost {
            self.asked.remove(&run);
            self.event(run, RunEventKind::Lost);
        }
        self.given_up.retain(|_, g| g.peer != node);
    }

    fn handle_message(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        from: &Peer,
        frame: Frame,
    ) -> Result<(), PeerFault> {
        // Runs travel over links alone (SPEC.md §23.3): a lost link kills its runs, and a
        // peer on a dedicated connection has no link to lose, so a run it started would
        // never be killed. Its messages are ignored.
        if !cx.is_linked(&from.node) {
            return Ok(());
        }
        let payload = frame.payload()?;
        let Message::Run(message) = Message::decode(frame.code(), &payload)? else {
            return Err(PeerFault::Unexpected("not a remote-run message"));
        };
        match message {
            RunMessage::Request(r) => self.on_request(from.node, r),
            RunMessage::Signal(s) => self.on_signal(now, from.node, s),
            RunMessage::Ack(a) => self.on_ack(from.node, a)?,
            answer => self.on_answer(from.node, answer)?,
        }
        Ok(())
    }

    fn handle_command(
        &mut self,
        now: Instant,
        cx: &Context<'_>,
        command: RunCommand,
    ) -> Result<(), RunRefusal> {
        self.start(now, cx, command)
    }

    fn handle_timeout(&mut self, now: Instant, _cx: &Context<'_>) {
        let unanswered: Vec<u64> = self
            .asked
            .iter()
            .filter(|(_, a)| a.answer_by.is_some_and(|at| at <= now))
            .map(|(r, _)| *r)
            .collect();
        for run in unanswered {
            let Some(asked) = self.asked.remove(&run) else {
                continue;
            };
            self.metrics.asked_unanswered += 1;
            // Should it start after all, it ends at once.
            let signal = RunSignalKind::Kill;
            self.send(asked.peer, RunMessage::Signal(RunSignal { run, signal }));
            if self.given_up.len() >= RUNS_ASKED_MAX {
                self.given_up.pop_first();
            }
            let given_up = GivenUp {
                peer: asked.peer,
                received: 0,
                acked: 0,
            };
            self.given_up.insert(run, given_up);
            self.event(run, RunEventKind::Lost);
        }
        let due: Vec<u64> = self
            .serving
            .iter()
            .filter(|(_, s)| s.kill_at.is_some_and(|at| at <= now))
            .map(|(p, _)| *p)
            .collect();
        for process in due {
            self.kill(process);
        }
    }

    fn handle_completed(
        &mut self,
        _now: Instant,
        _cx: &Context<'_>,
        token: u64,
        result: HostResult,
    ) {
        self.on_completed(token >> 2, token & 3, result);
    }

    fn handle_shutdown(&mut self, _now: Instant, _cx: &Context<'_>) {
        let all: Vec<u64> = self.serving.keys().copied().collect();
        for process in all {
            self.kill(process);
        }
    }

    fn poll_output(&mut self) -> Option<ProtocolOutput<RunEvent>> {
        self.outputs.pop_front()
    }

    fn has_output(&self) -> bool {
        !self.outputs.is_empty()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let kills = self.serving.values().filter_map(|s| s.kill_at);
        let answers = self.asked.values().filter_map(|a| a.answer_by);
        kills.chain(answers).min()
    }

    fn check_invariants(&self, _config: &Config) -> Result<(), String> {
        if self.serving.len() > RUNS_MAX || self.asked.len() > RUNS_ASKED_MAX {
            return Err("more runs than RUNS_MAX or RUNS_ASKED_MAX".into());
        }
        if self.by_run.len() != self.serving.len() {
            return Err("the run index and the runs differ".into());
        }
        for s in self.serving.values() {
            if s.sent_bytes - s.acked_bytes
                > RUN_WINDOW_BYTES + weft_protocol::RUN_OUTPUT_BYTES_MAX as u64
            {
                return Err(format!("run {} is past its window", s.run));
            }
        }
        Ok(())
    }
}
