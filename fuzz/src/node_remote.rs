//! The node driver's remote runs (family 0x06, SPEC.md §23) and drops (family 0x05, SPEC.md
//! §24), for the fourth input format: the application's `RunCommand`s and `DropsCommand`s,
//! peers' RUN_* and DROP_* frames built from arbitrary fields (drop versions signed by the
//! peers' real keys, or forged; echoes of the drops, versions and file-list requests the node
//! sent), peers' replication frames about a drop's folder, and the host's processes: every `HostRequest::Process` answered with a valid
//! `ProcessResult`, at once by a default script or held back and answered later, in any
//! order, with a chosen one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use arbitrary::Arbitrary;
use bytes::Bytes;
use weft_engine::drops::{DropsCommand, DropsEvent, DropsEventKind};
use weft_engine::protocol::{
    DropFile, DropFiles, DropGetFiles, DropGetVersion, DropHeads, DropId, DropManifest,
    DropMessage, DropNotFound, DropOwners, DropSubscribe, DropUnsubscribe, ExitStatus, FileKind,
    FolderId, ManifestFields, Message, OutputStream, PublicKey, RootHasher, RunAck, RunExit,
    RunFolder, RunMessage, RunOutput, RunRefusalReason, RunRefused, RunRequest, RunSignal,
    RunSignalKind, RunStarted, VersionId, RUN_OUTPUT_BYTES_MAX,
};
use weft_engine::run::{ProcessRequest, ProcessResult, RunEventKind};
use weft_engine::{Command, HostResult, Input, NodeId, RequestId, RunCommand, RunEvent};

use super::replica::{LocalSel, ReplicaMsg};
use super::{keys, ConnSel, Driver, PEERS};

/// Most items of each kind the driver remembers for echoes.
const REMEMBERED_MAX: usize = 16;

/// Reads the default script answers with output before it answers `Exited`.
const SCRIPTED_READS: u32 = 2;

/// A remote-run step.
#[derive(Debug, Arbitrary)]
pub(super) enum RunOp {
    /// Application: ask a peer to run a program.
    Start {
        run: u8,
        peer: u8,
        program: u8,
        args: Vec<u8>,
        shell: bool,
        folder: Option<u8>,
    },
    /// Application: signal a run.
    Signal { run: u8, kill: bool },
    /// Peers' RUN_* frames on a connection, delivered in two pieces cut at `split % len`.
    Frames {
        conn: ConnSel,
        msgs: Vec<RunMsg>,
        compress: bool,
        split: u16,
    },
    /// The host holds back its answers to the next `count % 8 + 1` process steps.
    Hold { count: u8 },
    /// The host answers a held process step (the `i`-th from the newest) with `answer`.
    Answer { i: u8, answer: ProcessAnswer },
}

/// A RUN_* message with arbitrary fields; run numbers are small, so they collide with the
/// application's.
#[derive(Debug, Arbitrary)]
pub(super) enum RunMsg {
    Request {
        run: u8,
        program: u8,
        args: Vec<u8>,
        shell: bool,
        folder: Option<u8>,
    },
    Refused {
        run: u8,
        reason: u8,
        text: u8,
    },
    Started {
        run: u8,
    },
    Output {
        run: u8,
        /// `None`: the number the node expects next.
        seq: Option<u8>,
        stderr: bool,
        len: u16,
    },
    Ack {
        run: u8,
        bytes: u32,
    },
    Signal {
        run: u8,
        kill: bool,
    },
    Exit {
        run: u8,
        signal: bool,
        code: u8,
        /// `None`: the outputs the node received.
        outputs: Option<u8>,
    },
}

/// How the host answers a held process step: the choice is among the answers valid for the
/// step (or `Failed`).
#[derive(Debug, Arbitrary)]
pub(super) enum ProcessAnswer {
    /// `Spawned`, an output chunk, `Signalled`.
    Ok { stderr: bool, len: u16 },
    /// `NotStarted`, `Exited`, `Signalled`.
    End { flag: bool, code: u8 },
    /// `HostResult::Failed`.
    Failed,
}

/// A drops step.
#[derive(Debug, Arbitrary)]
pub(super) enum DropOp {
    /// Application: create a drop.
    Create,
    /// Application: subscribe to a drop.
    Subscribe { drop: DropSel },
    /// Application: publish a drop's folder, with new secondary owners (peers' keys) if any.
    Publish {
        drop: DropSel,
        secondary: Option<Vec<u8>>,
    },
    /// The scanner reports a change in a drop's folder.
    Local { drop: DropSel, change: LocalSel },
    /// Peers' DROP_* frames on a connection.
    Frames {
        conn: ConnSel,
        msgs: Vec<DropMsg>,
        compress: bool,
        split: u16,
    },
    /// Peers' replication frames about a drop's folder (every message's folder is it).
    Replica {
        drop: DropSel,
        conn: ConnSel,
        msgs: Vec<ReplicaMsg>,
        compress: bool,
        split: u16,
    },
}

/// Picks a drop: one a peer owns (its first drop, or its second), one the node created, or
/// one nobody holds.
#[derive(Debug, Arbitrary)]
pub(super) enum DropSel {
    Peer(u8),
    Mine(u8),
    Other(u8),
}

/// Picks a version: one the run has seen (built, accepted, sent by the node), or any id.
#[derive(Debug, Arbitrary)]
pub(super) enum VersionSel {
    Seen(u8),
    Raw(u8),
}

/// A DROP_* message with arbitrary fields.
#[derive(Debug, Arbitrary)]
pub(super) enum DropMsg {
    Subscribe(DropSel),
    Unsubscribe(DropSel),
    Heads {
        drop: DropSel,
        heads: Vec<VersionSel>,
    },
    GetVersion {
        drop: DropSel,
        version: VersionSel,
    },
    Version(ManifestSel),
    GetFiles {
        drop: DropSel,
        version: VersionSel,
        from: u8,
    },
    /// The file list of a version the node asked for (`None`: the latest request), from
    /// its start or cut.
    FilesEcho {
        asked: Option<u8>,
        skip: u8,
    },
    Files {
        drop: DropSel,
        version: VersionSel,
        from: u8,
        files: Vec<u8>,
    },
    NotFound {
        drop: DropSel,
        version: VersionSel,
    },
}

/// A drop version: signed by a peer's real key (an owner or not), or forged.
#[derive(Debug, Arbitrary)]
pub(super) struct ManifestSel {
    drop: DropSel,
    /// Which peer signs; the drop's primary owner if it is a peer's drop and `None`.
    signer: Option<u8>,
    /// `None`: one past its parents' counters (1 for a root).
    counter: Option<u8>,
    parents: Vec<VersionSel>,
    /// `None`: the primary is the drop's owner.
    primary: Option<u8>,
    secondary: Vec<u8>,
    /// Files from the catalogue, by index.
    files: Vec<u8>,
    /// Flip a bit of the signature.
    forge: bool,
}

/// What the driver heard about drops and runs, for echoes and checks.
#[derive(Debug, Default)]
pub(super) struct RemoteHeard {
    /// Drops the node created.
    created: VecDeque<DropId>,
    /// Versions seen, with their drop and counter.
    versions: VecDeque<(VersionId, DropId, u64)>,
    /// File lists of versions the driver built.
    lists: BTreeMap<VersionId, Vec<DropFile>>,
    /// DROP_GET_FILES the node sent.
    asked_files: VecDeque<(DropId, VersionId, u32)>,
    /// Nonces of drops seen in versions.
    nonces: BTreeMap<DropId, [u8; 16]>,
}

/// The host's processes: steps held back, and what the engine asked of each process.
#[derive(Debug, Default)]
pub(super) struct Processes {
    /// Process numbers the node asked to spawn.
    spawned: BTreeSet<u64>,
    /// Reads answered per process (the default script ends a process after a few).
    reads: BTreeMap<u64, u32>,
    /// Processes with a `Read` not answered yet (the engine asks again only after the
    /// answer).
    reading: BTreeSet<u64>,
    /// Steps not answered yet.
    held: VecDeque<(RequestId, u64, ProcessRequest)>,
    /// Process steps still to hold back.
    hold: u8,
    /// Runs the application started that have not ended.
    runs_open: BTreeSet<u64>,
    /// Output events per open run (what RUN_EXIT must count).
    outputs: BTreeMap<u64, u64>,
}

/// The node id of every peer allowed to ask for runs (`config.run.allow_from`): all but the
/// last, so that a run refused for the allow list is reached too.
pub(super) fn run_allow_list() -> Vec<NodeId> {
    keys().peers[..PEERS - 1]
        .iter()
        .map(|p| p.node_id())
        .collect()
}

/// The peers' drops: peer `p`'s `n`-th drop has nonce `[n; 16]`.
fn peer_drop(p: usize, n: u8) -> DropId {
    DropId::derive(&keys().peers[p % PEERS].public_key(), &[n; 16])
}

/// Files a version may list: directories, symlinks, empty files, a path the rules refuse.
fn catalogue(i: u8) -> DropFile {
    let (path, kind, target) = match i % 8 {
        0 => ("a", FileKind::Directory, None),
        1 => ("a/b.txt", FileKind::File, None),
        2 => ("a/link", FileKind::Symlink, Some("b.txt")),
        3 => ("c.txt", FileKind::File, None),
        4 => ("C.TXT", FileKind::File, None),
        5 => ("d", FileKind::Symlink, Some("../outside")),
        6 => ("../up", FileKind::File, None),
        _ => ("e/f/g", FileKind::Directory, None),
    };
    DropFile {
        path: path.into(),
        kind,
        mode: i / 8 % 8,
        size: 0,
        target: target.map(Into::into),
        blocks: Vec::new(),
    }
}

/// The catalogue's files at `picks`, sorted and without repeats (what a version lists).
fn file_list(picks: &[u8]) -> Vec<DropFile> {
    let mut files: Vec<DropFile> = picks.iter().map(|&i| catalogue(i)).collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    files
}

fn remember<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() == REMEMBERED_MAX {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn pick<T: Copy>(queue: &VecDeque<T>, i: u8) -> Option<T> {
    match queue.len() {
        0 => None,
        len => queue.get(len - 1 - usize::from(i) % len).copied(),
    }
}

/// A program and its arguments: some valid, some empty, with a NUL, or over the limits.
fn program(n: u8, args: &[u8]) -> (String, Vec<String>) {
    let program = match n % 8 {
        0 => String::new(),
        1 => "a\0b".into(),
        2 => "x".repeat(300 * 1024),
        3 => "sh".into(),
        _ => "echo".into(),
    };
    let args = args
        .iter()
        .take(8)
        .map(|&a| "y".repeat(usize::from(a % 16)))
        .collect();
    (program, args)
}

fn run_folder(f: u8) -> RunFolder {
    RunFolder {
        id: FolderId::from_name(if f.is_multiple_of(2) {
            "photos"
        } else {
            "nowhere"
        }),
        index_id: u64::from(f / 2 % 2),
        sequence: u64::from(f / 4),
    }
}

/// Output bytes of length `len % RUN_OUTPUT_BYTES_MAX + 1`.
fn output_bytes(len: u16) -> Bytes {
    Bytes::from(vec![b'o'; usize::from(len) % RUN_OUTPUT_BYTES_MAX + 1])
}

fn signal_kind(kill: bool) -> RunSignalKind {
    if kill {
        RunSignalKind::Kill
    } else {
        RunSignalKind::Interrupt
    }
}

fn exit_status(signal: bool, code: u8) -> ExitStatus {
    if signal {
        ExitStatus::Signal(code)
    } else {
        ExitStatus::Code(code)
    }
}

impl ProcessAnswer {
    /// The answer to `request`: one valid for its kind.
    fn result(&self, request: &ProcessRequest) -> HostResult {
        let result = match (self, request) {
            (ProcessAnswer::Failed, _) => return HostResult::Failed("the host failed".into()),
            (ProcessAnswer::Ok { .. }, ProcessRequest::Spawn { .. }) => ProcessResult::Spawned,
            (ProcessAnswer::End { flag, code }, ProcessRequest::Spawn { .. }) => {
                ProcessResult::NotStarted {
                    unknown_folder: *flag,
                    why: "x".repeat(usize::from(*code) * 8),
                }
            }
            (ProcessAnswer::Ok { stderr, len }, ProcessRequest::Read) => ProcessResult::Output {
                stream: if *stderr {
                    OutputStream::Stderr
                } else {
                    OutputStream::Stdout
                },
                bytes: output_bytes(*len),
            },
            (ProcessAnswer::End { flag, code }, ProcessRequest::Read) => ProcessResult::Exited {
                status: exit_status(*flag, *code),
                copy: None,
            },
            _ => ProcessResult::Signalled,
        };
        HostResult::Process(result)
    }
}

impl Processes {
    /// A process step the node asked for: its answer now (the default script), or `None` if
    /// it is held. Panics if the step names a process the node never spawned, or spawns one
    /// twice, or spawns any over plaintext links (`encrypted` false).
    pub(super) fn request(
        &mut self,
        id: RequestId,
        process: u64,
        request: ProcessRequest,
        encrypted: bool,
    ) -> Option<HostResult> {
        if let ProcessRequest::Spawn { requester, .. } = &request {
            assert!(
                encrypted,
                "the node spawned process {process} over plaintext links"
            );
            assert!(
                run_allow_list().contains(requester),
                "the node spawned process {process} for {requester:?}, not on its allow list"
            );
            assert!(
                self.spawned.insert(process),
                "the node spawned process {process} twice"
            );
        } else {
            assert!(
                self.spawned.contains(&process),
                "a step for process {process}, which the node never spawned: {request:?}"
            );
        }
        if matches!(request, ProcessRequest::Read) {
            assert!(
                self.reading.insert(process),
                "a second Read of process {process} before the first was answered"
            );
        }
        if self.hold > 0 {
            self.hold -= 1;
            self.held.push_back((id, process, request));
            return None;
        }
        Some(self.scripted(process, &request))
    }

    /// `answer`'s result for `request` of `process`, which is answered now.
    fn answer(
        &mut self,
        process: u64,
        request: &ProcessRequest,
        answer: &ProcessAnswer,
    ) -> HostResult {
        if matches!(request, ProcessRequest::Read) {
            self.reading.remove(&process);
        }
        answer.result(request)
    }

    /// The default script: spawned, two pieces of output, exit 0; signals sent.
    fn scripted(&mut self, process: u64, request: &ProcessRequest) -> HostResult {
        let answer = match request {
            ProcessRequest::Read => {
                let reads = self.reads.entry(process).or_default();
                *reads += 1;
                if *reads > SCRIPTED_READS {
                    ProcessAnswer::End {
                        flag: false,
                        code: 0,
                    }
                } else {
                    ProcessAnswer::Ok {
                        stderr: reads.is_multiple_of(2),
                        len: 100,
                    }
                }
            }
            _ => ProcessAnswer::Ok {
                stderr: false,
                len: 0,
            },
        };
        self.answer(process, request, &answer)
    }

    /// Every held step, answered by the default script (no request is left unanswered
    /// forever), and no more held.
    pub(super) fn release_all(&mut self) -> Vec<(RequestId, HostResult)> {
        self.hold = 0;
        let held: Vec<_> = self.held.drain(..).collect();
        held.into_iter()
            .map(|(id, process, request)| (id, self.scripted(process, &request)))
            .collect()
    }

    /// Checks a run event against the runs the application started.
    fn observe(&mut self, e: &RunEvent) {
        assert!(
            self.runs_open.contains(&e.run),
            "a run event for run {}, which is not in progress: {e:?}",
            e.run
        );
        match &e.kind {
            RunEventKind::Output { .. } => *self.outputs.entry(e.run).or_default() += 1,
            RunEventKind::Started => {}
            _ => {
                self.runs_open.remove(&e.run);
                self.outputs.remove(&e.run);
            }
        }
    }
}

impl RemoteHeard {
    fn drop_id(&self, sel: &DropSel) -> DropId {
        match sel {
            DropSel::Peer(n) => peer_drop(usize::from(*n), n / 4 % 2),
            DropSel::Mine(i) => pick(&self.created, *i).unwrap_or_else(|| peer_drop(0, 0)),
            DropSel::Other(b) => DropId([*b; 32]),
        }
    }

    fn version(&self, sel: &VersionSel) -> VersionId {
        match sel {
            VersionSel::Seen(i) => pick(&self.versions, *i).map_or(VersionId([0; 32]), |v| v.0),
            VersionSel::Raw(b) => VersionId([*b; 32]),
        }
    }

    fn see_version(&mut self, m: &DropManifest) {
        let id = m.version_id();
        if !self.versions.iter().any(|v| v.0 == id) {
            remember(&mut self.versions, (id, m.drop, m.counter));
        }
        self.nonces.entry(m.drop).or_insert(m.nonce);
    }

    /// What the node sent about drops.
    pub(super) fn observe(&mut self, msg: &Message<'_>) {
        match msg {
            Message::Drop(DropMessage::Version(m)) => self.see_version(m),
            Message::Drop(DropMessage::GetFiles(g)) => {
                remember(&mut self.asked_files, (g.drop, g.version, g.from))
            }
            _ => {}
        }
    }

    fn observe_event(&mut self, e: &DropsEvent) {
        match &e.kind {
            DropsEventKind::Created => remember(&mut self.created, e.drop),
            DropsEventKind::Accepted {
                version, counter, ..
            } if !self.versions.iter().any(|v| v.0 == *version) => {
                remember(&mut self.versions, (*version, e.drop, *counter));
            }
            _ => {}
        }
    }

    /// A version built from `sel`, signed by a peer's key.
    fn manifest(&mut self, sel: &ManifestSel) -> DropManifest {
        let drop = self.drop_id(&sel.drop);
        let peers = &keys().peers;
        let owner = (0..PEERS).find(|&p| (0..2).any(|n| peer_drop(p, n) == drop));
        let primary = match (sel.primary, owner) {
            (Some(p), _) => peers[usize::from(p) % PEERS].public_key(),
            (None, Some(p)) => peers[p].public_key(),
            (None, None) => keys().me.public_key(),
        };
        let signer = match (sel.signer, owner) {
            (Some(p), _) => usize::from(p) % PEERS,
            (None, Some(p)) => p,
            (None, None) => 0,
        };
        let nonce = match owner {
            Some(p) => (0..2u8)
                .find(|&n| peer_drop(p, n) == drop)
                .map_or([0; 16], |n| [n; 16]),
            None => self.nonces.get(&drop).copied().unwrap_or([0; 16]),
        };
        let parents: Vec<VersionId> = {
            let mut p: Vec<VersionId> = sel.parents.iter().map(|v| self.version(v)).collect();
            p.sort();
            p.dedup();
            p
        };
        let counter = match sel.counter {
            Some(c) => u64::from(c),
            None => {
                let top = parents
                    .iter()
                    .filter_map(|p| self.versions.iter().find(|v| v.0 == *p).map(|v| v.2))
                    .max()
                    .unwrap_or(0);
                top + 1
            }
        };
        let files = file_list(&sel.files);
        let mut hasher = RootHasher::new();
        let _ = hasher.push_batch(&files);
        let fields = ManifestFields {
            drop,
            nonce,
            counter,
            parents,
            owners: DropOwners {
                primary,
                secondary: sel
                    .secondary
                    .iter()
                    .take(4)
                    .map(|&p| peers[usize::from(p) % PEERS].public_key())
                    .collect(),
            },
            root: hasher.root(),
            files: hasher.files(),
            bytes: hasher.bytes(),
        };
        let secret = [signer as u8 + 1; 32];
        let mut manifest = DropManifest::sign(fields, &secret);
        if sel.forge {
            manifest.signature.0[0] ^= 1;
        }
        self.lists.insert(manifest.version_id(), files);
        self.see_version(&manifest);
        manifest
    }

    fn message(&mut self, msg: &DropMsg) -> Option<DropMessage> {
        Some(match msg {
            DropMsg::Subscribe(d) => DropMessage::Subscribe(DropSubscribe {
                drop: self.drop_id(d),
            }),
            DropMsg::Unsubscribe(d) => DropMessage::Unsubscribe(DropUnsubscribe {
                drop: self.drop_id(d),
            }),
            DropMsg::Heads { drop, heads } => DropMessage::Heads(DropHeads {
                drop: self.drop_id(drop),
                heads: heads.iter().take(20).map(|v| self.version(v)).collect(),
            }),
            DropMsg::GetVersion { drop, version } => DropMessage::GetVersion(DropGetVersion {
                drop: self.drop_id(drop),
                version: self.version(version),
            }),
            DropMsg::Version(sel) => DropMessage::Version(Box::new(self.manifest(sel))),
            DropMsg::GetFiles {
                drop,
                version,
                from,
            } => DropMessage::GetFiles(DropGetFiles {
                drop: self.drop_id(drop),
                version: self.version(version),
                from: u32::from(*from % 8),
            }),
            DropMsg::FilesEcho { asked, skip } => {
                let (drop, version, from) = pick(&self.asked_files, asked.unwrap_or(0))?;
                let list = self.lists.get(&version).cloned().unwrap_or_default();
                let start = (from as usize).min(list.len());
                let end = list.len().saturating_sub(usize::from(*skip % 4)).max(start);
                DropMessage::Files(DropFiles {
                    drop,
                    version,
                    from,
                    files: list[start..end].to_vec(),
                })
            }
            DropMsg::Files {
                drop,
                version,
                from,
                files,
            } => DropMessage::Files(DropFiles {
                drop: self.drop_id(drop),
                version: self.version(version),
                from: u32::from(*from % 8),
                files: file_list(files),
            }),
            DropMsg::NotFound { drop, version } => DropMessage::NotFound(DropNotFound {
                drop: self.drop_id(drop),
                version: self.version(version),
            }),
        })
    }
}

impl Driver {
    /// Runs one remote-run step (refusals allowed) and checks the node's promises.
    pub(super) fn run_step(&mut self, op: RunOp) {
        match op {
            RunOp::Start {
                run,
                peer,
                program: p,
                args,
                shell,
                folder,
            } => {
                let run = u64::from(run % 8);
                let peer = keys().peers[usize::from(peer) % PEERS].node_id();
                let (program, args) = program(p, &args);
                let command = RunCommand::Start {
                    run,
                    peer,
                    program,
                    args,
                    shell,
                    folder: folder.map(run_folder),
                };
                if self.input(Input::Command(Command::Run(command))) {
                    self.processes.runs_open.insert(run);
                }
                self.check();
            }
            RunOp::Signal { run, kill } => {
                let command = RunCommand::Signal {
                    run: u64::from(run % 8),
                    signal: signal_kind(kill),
                };
                self.input(Input::Command(Command::Run(command)));
                self.check();
            }
            RunOp::Frames {
                conn,
                msgs,
                compress,
                split,
            } => {
                let mut bytes = Vec::new();
                // Outputs per run as the node will have taken them, these frames' included.
                let mut taken = self.processes.outputs.clone();
                for msg in &msgs {
                    let data;
                    let m = match msg {
                        RunMsg::Request {
                            run,
                            program: p,
                            args,
                            shell,
                            folder,
                        } => {
                            let (program, args) = program(*p, args);
                            RunMessage::Request(RunRequest {
                                run: u64::from(run % 8),
                                program,
                                args,
                                shell: *shell,
                                folder: folder.map(run_folder),
                            })
                        }
                        RunMsg::Refused { run, reason, text } => RunMessage::Refused(RunRefused {
                            run: u64::from(run % 8),
                            reason: RunRefusalReason::ALL
                                [usize::from(*reason) % RunRefusalReason::ALL.len()],
                            text: "r".repeat(usize::from(*text) * 8),
                        }),
                        RunMsg::Started { run } => RunMessage::Started(RunStarted {
                            run: u64::from(run % 8),
                        }),
                        RunMsg::Output {
                            run,
                            seq,
                            stderr,
                            len,
                        } => {
                            let run = u64::from(run % 8);
                            data = output_bytes(*len);
                            let next = taken.entry(run).or_default();
                            let seq = seq.map_or(*next, u64::from);
                            if seq == *next {
                                *next += 1;
                            }
                            RunMessage::Output(RunOutput {
                                run,
                                seq,
                                stream: if *stderr {
                                    OutputStream::Stderr
                                } else {
                                    OutputStream::Stdout
                                },
                                data: &data,
                            })
                        }
                        RunMsg::Ack { run, bytes } => RunMessage::Ack(RunAck {
                            run: u64::from(run % 8),
                            bytes: u64::from(*bytes),
                        }),
                        RunMsg::Signal { run, kill } => RunMessage::Signal(RunSignal {
                            run: u64::from(run % 8),
                            signal: signal_kind(*kill),
                        }),
                        RunMsg::Exit {
                            run,
                            signal,
                            code,
                            outputs,
                        } => {
                            let run = u64::from(run % 8);
                            let received = taken.get(&run).copied().unwrap_or(0);
                            RunMessage::Exit(RunExit {
                                run,
                                status: exit_status(*signal, *code),
                                outputs: outputs.map_or(received, u64::from),
                                copy: None,
                            })
                        }
                    };
                    bytes.extend_from_slice(Message::Run(m).to_frame(compress).bytes());
                }
                let conn = self.conn(&conn);
                self.receive(conn, bytes, split);
            }
            RunOp::Hold { count } => self.processes.hold = count % 8 + 1,
            RunOp::Answer { i, answer } => {
                let len = self.processes.held.len();
                if len == 0 {
                    return;
                }
                let at = len - 1 - usize::from(i) % len;
                if let Some((id, process, request)) = self.processes.held.remove(at) {
                    let result = self.processes.answer(process, &request, &answer);
                    self.answers.push((id, result));
                }
                self.check();
            }
        }
    }

    /// Runs one drops step (refusals allowed) and checks the node's promises.
    pub(super) fn drop_step(&mut self, op: DropOp) {
        match op {
            DropOp::Create => {
                self.input(Input::Command(Command::Drops(DropsCommand::Create)));
                self.check();
            }
            DropOp::Subscribe { drop } => {
                let drop = self.remote_heard.drop_id(&drop);
                self.input(Input::Command(Command::Drops(DropsCommand::Subscribe {
                    drop,
                })));
                self.check();
            }
            DropOp::Publish { drop, secondary } => {
                let drop = self.remote_heard.drop_id(&drop);
                let secondary: Option<Vec<PublicKey>> = secondary.map(|s| {
                    s.iter()
                        .take(20)
                        .map(|&p| match usize::from(p) % (PEERS + 1) {
                            PEERS => keys().me.public_key(),
                            p => keys().peers[p].public_key(),
                        })
                        .collect()
                });
                let command = DropsCommand::Publish { drop, secondary };
                self.input(Input::Command(Command::Drops(command)));
                self.check();
            }
            DropOp::Local { drop, change } => {
                let folder = self.remote_heard.drop_id(&drop).folder_id();
                self.local(folder, change);
            }
            DropOp::Frames {
                conn,
                msgs,
                compress,
                split,
            } => {
                let mut bytes = Vec::new();
                for msg in &msgs {
                    if let Some(m) = self.remote_heard.message(msg) {
                        bytes.extend_from_slice(Message::Drop(m).to_frame(compress).bytes());
                    }
                }
                let conn = self.conn(&conn);
                self.receive(conn, bytes, split);
            }
            DropOp::Replica {
                drop,
                conn,
                msgs,
                compress,
                split,
            } => {
                let folder = self.remote_heard.drop_id(&drop).folder_id();
                self.replica_frames(&conn, &msgs, compress, split, &|_| folder);
            }
        }
    }

    /// A drops event: remembered for echoes; a drop's folder joins the checked folders.
    pub(super) fn observe_drops(&mut self, e: &DropsEvent) {
        self.summary.drops_events += 1;
        self.remote_heard.observe_event(e);
        let folder = e.drop.folder_id();
        if !self.disk.folders.contains(&folder) {
            self.disk.folders.push(folder);
        }
    }

    /// A run event: it must name a run the application started and has not seen end.
    pub(super) fn observe_run(&mut self, e: &RunEvent) {
        self.summary.run_events += 1;
        self.processes.observe(e);
    }
}
