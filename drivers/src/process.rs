//! The processes of the remote runs a node carries out for its peers (SPEC.md §23.5): the
//! host's side of `HostRequest::Process`, shared by both drivers.
//!
//! A process runs in a process group of its own, with standard input empty and standard
//! output and error piped. A thread per pipe reads pieces of at most `RUN_OUTPUT_BYTES_MAX`
//! into a small bounded queue (a full queue blocks the reader, and so, through the pipe, the
//! process); a thread waits for the exit, then kills the group (what the program left behind
//! would hold the pipes open); and a thread per process answers the engine's `Read`s, one at
//! a time, through the node's [`Handle`], as the storage workers answer theirs.
//!
//! A process group is signalled only while its leader is not reaped ([`Group`]): the waiter
//! sees the exit without reaping (`waitid(WNOWAIT)`), kills the group, marks it gone, and only
//! then reaps. A reaped leader's pid, and so its group id, may be reused by an unrelated
//! process, which a later signal (a peer's, a link's loss, the shutdown) would reach.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustix::event::{PollFd, PollFlags};
use rustix::process::{kill_process_group, Pid, Signal};
use weft_engine::protocol::{
    ExitStatus, FolderId, OutputStream, RunSignalKind, RUN_OUTPUT_BYTES_MAX,
};
use weft_engine::run::{ProcessRequest, ProcessResult};
use weft_engine::{HostResult, RequestId};

use crate::handle::Handle;

/// How long, after a process exited and its group was killed, its pipes are still read
/// before the exit is reported anyway (a process that left the group may hold them open).
pub const RUN_DRAIN: Duration = Duration::from_secs(1);

/// Output told after a process's exit, at most, before the exit is told anyway: what an
/// ended process leaves in its two pipes (up to 1 MiB each, as `F_SETPIPE_SZ` allows) and in
/// the pieces read ahead fits; a program that left the group and writes without pause is
/// cut off after it.
pub const RUN_DRAIN_BYTES: u64 = 4 * 1024 * 1024;

/// Names tried for a node without a state folder's private run directory.
const RUN_DIR_TRIES: u32 = 64;

/// Pieces of output read ahead of the engine's `Read`s, per process.
const PIECES_AHEAD: usize = 4;

/// How long a pipe's reader waits for data before it looks whether its process's exit was
/// reported (then it ends: a program that left the group and holds the pipe without writing
/// would keep it blocked in `read` for as long as it lives).
const PIPE_POLL: rustix::event::Timespec = rustix::event::Timespec {
    tv_sec: 0,
    tv_nsec: 200_000_000,
};

/// What a process's threads report, in the order they saw it.
enum Piece {
    Output(OutputStream, Bytes),
    /// A pipe reached its end.
    Closed,
    Exited(ExitStatus),
}

/// A run's process group, signalled only while its leader is not reaped (see the module
/// documentation).
#[derive(Clone)]
struct Group(std::sync::Arc<std::sync::Mutex<Option<Pid>>>);

impl Group {
    fn new(leader: Pid) -> Group {
        Group(std::sync::Arc::new(std::sync::Mutex::new(Some(leader))))
    }

    /// Sends `signal` to the group, if its leader is not reaped yet (the lock is held through
    /// the call, so the waiter cannot reap it meanwhile).
    fn signal(&self, signal: RunSignalKind) {
        // A panic while it was held cannot leave it inconsistent: it is one Option.
        let leader = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = *leader {
            signal_group(group, signal);
        }
    }

    /// Kills the group and marks it gone: its leader may be reaped after this.
    fn kill_and_forget(&self) {
        let mut leader = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(group) = leader.take() {
            signal_group(group, RunSignalKind::Kill);
        }
    }
}

/// One running process.
struct Running {
    group: Group,
    pid: Pid,
    /// The engine's `Read`s, to the thread that answers them.
    reads: Sender<RequestId>,
}

/// The processes of one node's runs.
#[derive(Default)]
pub(crate) struct Processes {
    running: BTreeMap<u64, Running>,
    /// Where a run without a folder runs (made when first needed).
    run_dir: Option<PathBuf>,
}

impl Processes {
    /// Runs without a folder run in `run_dir`.
    pub(crate) fn new(run_dir: Option<PathBuf>) -> Processes {
        Processes {
            running: BTreeMap::new(),
            run_dir,
        }
    }

    /// Carries out `request` for `process`: the answer if it is due now; a `Read` is answered
    /// later through `handle`. `folder_root` finds a shared folder's root.
    pub(crate) fn carry_out(
        &mut self,
        handle: Option<&Handle>,
        id: RequestId,
        process: u64,
        request: ProcessRequest,
        folder_root: impl Fn(&FolderId) -> Option<PathBuf>,
    ) -> Option<HostResult> {
        let result = match request {
            ProcessRequest::Spawn {
                program,
                args,
                shell,
                folder,
                ..
            } => {
                let Some(handle) = handle else {
                    return Some(HostResult::Failed("this host runs no processes".into()));
                };
                let dir = match folder.map(|f| f.id) {
                    Some(folder) => match folder_root(&folder) {
                        Some(root) => root,
                        None => {
                            return Some(HostResult::Process(ProcessResult::NotStarted {
                                unknown_folder: true,
                                why: format!("this node holds no folder {folder}"),
                            }))
                        }
                    },
                    None => match self.run_dir() {
                        Ok(dir) => dir,
                        Err(why) => return Some(not_started(why)),
                    },
                };
                match spawn(handle.clone(), process, &program, &args, shell, &dir) {
                    Ok(running) => {
                        tracing::info!(
                            "run {process}: started {program:?} (pid {})",
                            running.pid.as_raw_nonzero()
                        );
                        self.running.insert(process, running);
                        ProcessResult::Spawned
                    }
                    Err(why) => {
                        tracing::info!("run {process}: {why}");
                        return Some(not_started(why));
                    }
                }
            }
            ProcessRequest::Read => {
                let sent = self
                    .running
                    .get(&process)
                    .is_some_and(|r| r.reads.send(id).is_ok());
                if sent {
                    return None;
                }
                return Some(HostResult::Failed(format!("no process {process}")));
            }
            ProcessRequest::Signal(signal) => {
                if let Some(r) = self.running.get(&process) {
                    tracing::info!("run {process}: {signal:?}");
                    r.group.signal(signal);
                }
                ProcessResult::Signalled
            }
            other => {
                return Some(HostResult::Failed(format!(
                    "unknown process step {other:?}"
                )))
            }
        };
        Some(HostResult::Process(result))
    }

    /// `process` ended (its exit was reported): forgets it.
    pub(crate) fn ended(&mut self, process: u64) {
        self.running.remove(&process);
    }

    /// The directory runs without a folder run in: the state folder's `run/`; for a node
    /// without a state folder (embedded), a new private one in the temporary directory, made
    /// for this node (never one that was there: another local user could have made
    /// `/tmp/weft-run` and put what a program reads from its working directory in it).
    fn run_dir(&mut self) -> Result<PathBuf, String> {
        if let Some(dir) = &self.run_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot make the run directory {}: {e}", dir.display()))?;
            return Ok(dir.clone());
        }
        use std::os::unix::fs::DirBuilderExt;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let base = std::env::temp_dir();
        for n in 0..RUN_DIR_TRIES {
            let dir = base.join(format!("weft-run-{}-{stamp:08x}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    self.run_dir = Some(dir.clone());
                    return Ok(dir);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(format!(
                        "cannot make the run directory {}: {e}",
                        dir.display()
                    ))
                }
            }
        }
        Err(format!(
            "cannot make a run directory in {}: {RUN_DIR_TRIES} names taken",
            base.display()
        ))
    }
}

impl Drop for Processes {
    /// A node that stops leaves no run behind.
    fn drop(&mut self) {
        for r in self.running.values() {
            r.group.signal(RunSignalKind::Kill);
        }
    }
}

fn not_started(why: String) -> HostResult {
    HostResult::Process(ProcessResult::NotStarted {
        unknown_folder: false,
        why,
    })
}

fn signal_group(group: Pid, signal: RunSignalKind) {
    let signal = match signal {
        RunSignalKind::Interrupt => Signal::INT,
        RunSignalKind::Kill => Signal::KILL,
    };
    // The group may be gone already (ESRCH): nothing to do then.
    let _ = kill_process_group(group, signal);
}

/// Starts the process and its threads.
fn spawn(
    handle: Handle,
    process: u64,
    program: &str,
    args: &[String],
    shell: bool,
    dir: &Path,
) -> Result<Running, String> {
    let mut command = if shell {
        let line = std::iter::once(program)
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(line);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    };
    command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = command.spawn().map_err(|e| format!("{program}: {e}"))?;
    let pid = Pid::from_child(&child);
    let group = Group::new(pid);
    match start_threads(handle, process, child, group.clone()) {
        Ok(reads) => Ok(Running { group, pid, reads }),
        Err(e) => {
            group.signal(RunSignalKind::Kill);
            Err(format!("{program}: no thread to serve it: {e}"))
        }
    }
}

fn start_threads(
    handle: Handle,
    process: u64,
    mut child: Child,
    group: Group,
) -> std::io::Result<Sender<RequestId>> {
    let (pieces, pieces_out) = mpsc::sync_channel(PIECES_AHEAD);
    let (reads, reads_out) = mpsc::channel();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let waiter_pieces = pieces.clone();
    // Set once the exit is reported (or nobody takes answers): the pipes' readers end.
    let done = Arc::new(AtomicBool::new(false));
    // The waiter alone reaps the child. Should a later thread fail to start, the caller
    // kills the group and the waiter reaps it.
    thread("weft-run-wait", move || {
        // The exit seen, the leader left unreaped: its pid, the group's id, cannot be
        // reused until the group is killed and marked gone.
        let pid = Pid::from_child(&child);
        let flags = rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT;
        let seen = loop {
            match rustix::process::waitid(rustix::process::WaitId::Pid(pid), flags) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other,
            }
        };
        // Whatever it left behind in its group would keep the pipes open.
        group.kill_and_forget();
        let status = match (seen, child.wait()) {
            (Ok(_), Ok(status)) => exit_status(status),
            // Cannot wait: say it was killed (it is, with its group).
            _ => ExitStatus::Signal(9),
        };
        let _ = waiter_pieces.send(Piece::Exited(status));
    })?;
    match stdout {
        Some(pipe) => {
            let (pieces, done) = (pieces.clone(), Arc::clone(&done));
            thread("weft-run-out", move || {
                read_pipe(pipe, OutputStream::Stdout, &pieces, &done)
            })?;
        }
        None => {
            let _ = pieces.send(Piece::Closed);
        }
    }
    match stderr {
        Some(pipe) => {
            let done = Arc::clone(&done);
            thread("weft-run-err", move || {
                read_pipe(pipe, OutputStream::Stderr, &pieces, &done)
            })?;
        }
        None => {
            let _ = pieces.send(Piece::Closed);
        }
    }
    thread("weft-run-answer", move || {
        answer_reads(process, &reads_out, &pieces_out, &handle);
        done.store(true, Ordering::Relaxed);
    })?;
    Ok(reads)
}

fn thread(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
}

fn read_pipe(
    mut pipe: impl Read + AsFd,
    stream: OutputStream,
    pieces: &SyncSender<Piece>,
    done: &AtomicBool,
) {
    let mut buf = vec![0u8; RUN_OUTPUT_BYTES_MAX];
    while !done.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(&pipe, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&PIPE_POLL)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        // Ready (data, the end, or an error): the read does not block.
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let piece = Piece::Output(stream, Bytes::copy_from_slice(&buf[..n]));
                if pieces.send(piece).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = pieces.send(Piece::Closed);
}

/// The status as SPEC.md §23.2 carries it.
fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code as u8),
        (None, Some(signal)) => ExitStatus::Signal(signal as u8),
        // Neither: not a process that ran to an end (cannot happen on Unix for `wait`).
        (None, None) => ExitStatus::Signal(9),
    }
}

/// Answers each `Read` with the next piece, or once the process ended and both pipes are
/// closed (or `RUN_DRAIN` passed), with the exit; then ends.
fn answer_reads(
    process: u64,
    reads: &Receiver<RequestId>,
    pieces: &Receiver<Piece>,
    handle: &Handle,
) {
    let mut answers = Answers::default();
    while let Ok(id) = reads.recv() {
        let result = answers.next(pieces);
        let done = matches!(result, ProcessResult::Exited { .. });
        if handle.process_done(process, id, result).is_err() || done {
            return;
        }
    }
}

/// What the answers to one process's `Read`s have seen of its pieces.
struct Answers {
    open_pipes: u8,
    /// Its exit, and until when its pipes are still read.
    exited: Option<(ExitStatus, Instant)>,
    /// A piece taken while joining pieces that did not fit: the next answer's first.
    held: Option<Piece>,
    /// Output bytes told since the exit was seen.
    drained_bytes: u64,
}

impl Default for Answers {
    fn default() -> Answers {
        Answers {
            open_pipes: 2,
            exited: None,
            held: None,
            drained_bytes: 0,
        }
    }
}

impl Answers {
    /// The next answer: the next piece of output, or the exit.
    fn next(&mut self, pieces: &Receiver<Piece>) -> ProcessResult {
        loop {
            // A writer that left the group and never pauses would have a piece ready at
            // every take (the time bound below waits only for pieces not there yet), and
            // the exit would never be told: past `RUN_DRAIN_BYTES` after the exit it is.
            // What a process that ended left in its pipes is far less, and is all told
            // however slowly the run's link takes it.
            if let Some((status, _)) = self.exited {
                if self.drained_bytes >= RUN_DRAIN_BYTES {
                    return exited_with(status);
                }
            }
            let piece = match (self.held.take(), self.exited) {
                (Some(piece), _) => piece,
                (None, Some((status, _))) if self.open_pipes == 0 => return exited_with(status),
                (None, Some((status, by))) => {
                    match pieces.recv_timeout(by.saturating_duration_since(Instant::now())) {
                        Ok(piece) => piece,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                            return exited_with(status)
                        }
                    }
                }
                (None, None) => match pieces.recv() {
                    Ok(piece) => piece,
                    // Every thread is gone without an exit: cannot happen (the waiter always
                    // reports one), but never hang on it.
                    Err(_) => return exited_with(ExitStatus::Signal(9)),
                },
            };
            match piece {
                Piece::Output(stream, bytes) => {
                    let (bytes, next) = join_waiting(stream, bytes, pieces);
                    self.held = next;
                    if self.exited.is_some() {
                        self.drained_bytes += bytes.len() as u64;
                    }
                    return ProcessResult::Output { stream, bytes };
                }
                Piece::Closed => self.open_pipes = self.open_pipes.saturating_sub(1),
                Piece::Exited(status) => self.exited = Some((status, Instant::now() + RUN_DRAIN)),
            }
        }
    }
}

/// How a process ended, as its last read's answer; the host fills in a folder's copy
/// (SPEC.md §23.5).
fn exited_with(status: ExitStatus) -> ProcessResult {
    ProcessResult::Exited { status, copy: None }
}

/// `first` and the pieces of the same stream already waiting behind it, joined up to
/// `RUN_OUTPUT_BYTES_MAX` bytes (a fast writer's small writes travel as few messages, and
/// the engine asks for fewer reads); the first waiting piece that does not join, if any.
fn join_waiting(
    stream: OutputStream,
    first: Bytes,
    pieces: &Receiver<Piece>,
) -> (Bytes, Option<Piece>) {
    let mut joined: Option<Vec<u8>> = None;
    loop {
        let len = joined.as_ref().map_or(first.len(), Vec::len);
        let next = match pieces.try_recv() {
            Ok(Piece::Output(s, b)) if s == stream && len + b.len() <= RUN_OUTPUT_BYTES_MAX => b,
            Ok(other) => return (finish(first, joined), Some(other)),
            Err(_) => return (finish(first, joined), None),
        };
        joined
            .get_or_insert_with(|| first.to_vec())
            .extend_from_slice(&next);
    }
}

fn finish(first: Bytes, joined: Option<Vec<u8>>) -> Bytes {
    joined.map_or(first, Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that left the group and never pauses: its pieces come without end after the
    /// exit, and the exit is still told, `RUN_DRAIN_BYTES` after it.
    #[test]
    fn the_exit_is_told_within_the_drain_while_pieces_keep_coming() {
        let (tx, rx) = mpsc::sync_channel(PIECES_AHEAD);
        tx.send(Piece::Exited(ExitStatus::Code(3))).expect("send");
        let writer = std::thread::spawn(move || {
            // Whole pieces (none joins another), so one always waits behind the one taken.
            let full = Bytes::from(vec![b'y'; RUN_OUTPUT_BYTES_MAX]);
            while tx
                .send(Piece::Output(OutputStream::Stdout, full.clone()))
                .is_ok()
            {}
        });
        let mut answers = Answers::default();
        let started = Instant::now();
        let status = loop {
            assert!(
                started.elapsed() < RUN_DRAIN * 3,
                "no exit {:?} after it",
                started.elapsed()
            );
            if let ProcessResult::Exited { status, .. } = answers.next(&rx) {
                break status;
            }
            // The engine's next `Read` comes a little later (the writer fills up meanwhile).
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(status, ExitStatus::Code(3));
        assert!(answers.drained_bytes >= RUN_DRAIN_BYTES);
        assert!(answers.drained_bytes <= RUN_DRAIN_BYTES + RUN_OUTPUT_BYTES_MAX as u64);
        drop(rx);
        writer.join().expect("the writer ends with the receiver");
    }

    /// What an ended process left in its pipes is all told before its exit, however slowly
    /// the run's link takes it (an engine that asks for the next piece only as the peer
    /// acknowledges): the drain's time bound waits only for pieces not there yet.
    #[test]
    fn output_left_at_the_exit_is_all_told_on_a_slow_link() {
        let (tx, rx) = mpsc::sync_channel(PIECES_AHEAD);
        let writer = std::thread::spawn(move || {
            tx.send(Piece::Exited(ExitStatus::Code(0))).expect("send");
            for i in 0..6u8 {
                let piece = Bytes::from(vec![i; RUN_OUTPUT_BYTES_MAX]);
                tx.send(Piece::Output(OutputStream::Stdout, piece))
                    .expect("send");
            }
            tx.send(Piece::Closed).expect("send");
            tx.send(Piece::Closed).expect("send");
        });
        let mut answers = Answers::default();
        let mut told = Vec::new();
        let status = loop {
            match answers.next(&rx) {
                ProcessResult::Exited { status, .. } => break status,
                ProcessResult::Output { bytes, .. } => told.push(bytes[0]),
                other => panic!("{other:?}"),
            }
            // Each next `Read` a third of the drain later.
            std::thread::sleep(RUN_DRAIN / 3);
        };
        assert_eq!(status, ExitStatus::Code(0));
        assert_eq!(told, (0..6u8).collect::<Vec<_>>());
        writer.join().expect("the writer");
    }

    /// A node without a state folder runs in a new private directory of its own, not in one
    /// another user could have made first.
    #[test]
    fn a_node_without_a_state_folder_runs_in_a_new_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let mut processes = Processes::new(None);
        let dir = processes.run_dir().expect("a run directory");
        assert_ne!(dir, std::env::temp_dir().join("weft-run"));
        let mode = std::fs::metadata(&dir).expect("made").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(processes.run_dir().expect("the same"), dir, "made once");
        std::fs::remove_dir(&dir).expect("empty");
    }

    /// A group is killed once and then forgotten: no later signal (a peer's, a link's loss,
    /// the shutdown) can reach its id, which a reaped leader's pid frees for reuse.
    #[test]
    fn a_group_is_signalled_only_until_it_is_killed_and_forgotten() {
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep runs");
        let group = Group::new(Pid::from_child(&child));
        group.signal(RunSignalKind::Kill);
        let status = child.wait().expect("reaped");
        assert_eq!(
            status.signal(),
            Some(9),
            "signalled while its leader was unreaped"
        );
        let mut other = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep runs");
        let other_group = Group::new(Pid::from_child(&other));
        other_group.kill_and_forget();
        assert!(other.wait().expect("reaped").signal() == Some(9));
        assert!(
            other_group.0.lock().expect("the lock").is_none(),
            "forgotten"
        );
        other_group.signal(RunSignalKind::Kill);
    }
}
