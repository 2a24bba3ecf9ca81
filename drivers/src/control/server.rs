//! The node's side of the control socket: an accept thread, and a thread per client that
//! turns its request into a [`Handle`] call.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    ControlLimits, ControlReply, ControlRequest, DropPublishedReport, RunExitReport,
    RunOutputReport, RunSignalLine, LARGE_REQUESTS_READ_MAX, REQUEST_BYTES_MAX,
    SMALL_REQUEST_BYTES_MAX,
};
use weft_engine::chord::{ChordRequest, ChordResult};
use weft_engine::protocol::{ExitStatus, OutputStream, RunSignalKind};
use weft_engine::run::RunEventKind;

use crate::accept::AcceptErrors;
use crate::clock::Clock;
use crate::handle::{DropAnswer, DropOp, Handle, HandleError, TableOp};
use crate::report::{DeliveryReport, HostReport};

/// How often an idle `listen` session checks whether its client left.
const LISTEN_CHECK: Duration = Duration::from_millis(500);

/// A served control socket; dropping it stops serving and removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl ControlServer {
    /// Binds the socket at `path` and serves it on background threads within `limits`. Fails
    /// with `AddrInUse` if a node already answers there; a stale file from a dead node is
    /// replaced.
    pub fn serve(path: &Path, handle: Handle, limits: ControlLimits) -> io::Result<ControlServer> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a node is already running ({} answers)", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("weft-control".into())
            .spawn(move || accept_loop(&listener, &handle, &stopped, limits))?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept thread so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The clients being served, shared by the accept thread and the client threads.
#[derive(Default)]
struct Clients {
    state: Mutex<ClientsState>,
}

#[derive(Default)]
struct ClientsState {
    /// Client threads running (a client cut off counts until its thread ends).
    served: usize,
    /// Of those, `listen` sessions.
    listening: usize,
    next_id: u64,
    /// Clients still sending their request, oldest first, with a handle to cut them off.
    requesting: VecDeque<(u64, UnixStream)>,
    /// Requests longer than `SMALL_REQUEST_BYTES_MAX` being read or parsed now.
    large_reading: usize,
}

impl Clients {
    /// The state, even if a client thread panicked while holding it (every change is a
    /// counter step or one push or removal, so it stays consistent).
    fn lock(&self) -> MutexGuard<'_, ClientsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits `stream` and returns its id, or `None` if every slot is taken by a client
    /// whose request has been read. When all are taken, the client that has been sending
    /// its request the longest is cut off to make room: an honest client sends its request
    /// at once, so only slow (or dripping) ones are ever cut off.
    /// Clients cut off still count until their thread ends (at once: their socket is shut),
    /// and never more than `clients_max` of them: at most twice `clients_max` threads run.
    fn admit(&self, stream: &UnixStream, limits: &ControlLimits) -> Option<u64> {
        let mut state = self.lock();
        if state.served >= 2 * limits.clients_max {
            return None;
        }
        if state.served >= limits.clients_max {
            let (_, oldest) = state.requesting.pop_front()?;
            let _ = oldest.shutdown(Shutdown::Both);
            tracing::debug!("control socket full: cut off the client slowest to send its request");
        }
        state.served += 1;
        state.next_id += 1;
        let id = state.next_id;
        match stream.try_clone() {
            Ok(clone) => state.requesting.push_back((id, clone)),
            // Out of descriptors: served without the means to cut it off (its own deadline
            // still ends it).
            Err(e) => tracing::debug!("control client {id} cannot be cut off: {e}"),
        }
        Some(id)
    }

    /// Client `id`'s request has been read (or it failed): it can no longer be cut off.
    fn requested(&self, id: u64) {
        self.lock().requesting.retain(|(i, _)| *i != id);
    }

    /// Client `id` is gone.
    fn left(&self, id: u64) {
        let mut state = self.lock();
        state.requesting.retain(|(i, _)| *i != id);
        state.served = state.served.saturating_sub(1);
    }

    /// Takes a slot for reading a request longer than `SMALL_REQUEST_BYTES_MAX`, if one of
    /// the `LARGE_REQUESTS_READ_MAX` is free; it is given back when the guard goes.
    fn take_large(&self) -> Option<LargeSlot<'_>> {
        let mut state = self.lock();
        if state.large_reading >= LARGE_REQUESTS_READ_MAX {
            return None;
        }
        state.large_reading += 1;
        Some(LargeSlot(self))
    }

    /// Takes a `listen` slot if one is free.
    fn start_listening(&self, limits: &ControlLimits) -> bool {
        let mut state = self.lock();
        let free = state.listening < limits.listeners_max;
        state.listening += usize::from(free);
        free
    }

    fn stop_listening(&self) {
        let mut state = self.lock();
        state.listening = state.listening.saturating_sub(1);
    }
}

/// A slot for reading a large request ([`Clients::take_large`]), given back when dropped.
struct LargeSlot<'a>(&'a Clients);

impl Drop for LargeSlot<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.large_reading = state.large_reading.saturating_sub(1);
    }
}

fn accept_loop(listener: &UnixListener, handle: &Handle, stop: &AtomicBool, limits: ControlLimits) {
    let clients = Arc::new(Clients::default());
    let clock = Clock::start();
    let mut errors = AcceptErrors::new("control socket");
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut stream = match accepted {
            Ok((stream, _)) => {
                errors.succeeded();
                stream
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of descriptors or similar: pause rather than spin.
                let until = errors.failed(clock.now(), &e);
                std::thread::sleep(clock.until(until));
                continue;
            }
        };
        let Some(id) = clients.admit(&stream, &limits) else {
            // A short line into an empty socket: never blocks, and never waits if it would.
            let _ = stream.set_nonblocking(true);
            let _ = write_reply(&mut stream, &ControlReply::Error("too many clients".into()));
            continue;
        };
        let handle = handle.clone();
        let served = Arc::clone(&clients);
        let spawned = std::thread::Builder::new()
            .name("weft-control-client".into())
            .spawn(move || {
                if let Err(e) = serve_client(stream, &handle, &limits, &served, id) {
                    tracing::debug!("control client: {e}");
                }
                served.left(id);
            });
        if spawned.is_err() {
            clients.left(id);
        }
    }
}

fn write_reply(stream: &mut UnixStream, reply: &ControlReply) -> io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// Reads one request line, all of it within `timeout` (however the client spreads it out).
/// A line that grows past `SMALL_REQUEST_BYTES_MAX` needs one of `clients`' large slots,
/// held until it is parsed.
fn read_request(
    mut stream: &UnixStream,
    timeout: Duration,
    clients: &Clients,
) -> Result<ControlRequest, String> {
    let deadline = Instant::now() + timeout;
    let timed_out = || format!("no whole request within {} ms", timeout.as_millis());
    let mut line = Vec::new();
    let mut large = None;
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("reading the request: {e}"))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                let got = &chunk[..n];
                match got.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        line.extend_from_slice(&got[..=end]);
                        break;
                    }
                    None => line.extend_from_slice(got),
                }
                if line.len() as u64 > REQUEST_BYTES_MAX {
                    break;
                }
                if large.is_none() && line.len() as u64 > SMALL_REQUEST_BYTES_MAX {
                    large = Some(take_large(clients)?);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out())
            }
            Err(e) => return Err(format!("reading the request: {e}")),
        }
    }
    if line.len() as u64 > REQUEST_BYTES_MAX {
        return Err(format!("request over {REQUEST_BYTES_MAX} bytes"));
    }
    if large.is_none() && line.len() as u64 > SMALL_REQUEST_BYTES_MAX {
        large = Some(take_large(clients)?);
    }
    let request = parse_request(&line);
    drop(large);
    request
}

/// One of `clients`' large slots, or why there is none.
fn take_large(clients: &Clients) -> Result<LargeSlot<'_>, String> {
    clients.take_large().ok_or_else(|| {
        format!(
            "{LARGE_REQUESTS_READ_MAX} requests over {SMALL_REQUEST_BYTES_MAX} bytes are being read; try again"
        )
    })
}

/// A request line's operation, every other field skipped unread.
#[derive(serde::Deserialize)]
struct OpOnly<'a> {
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
}

/// A `send` request's text, every other field skipped unread.
#[derive(serde::Deserialize)]
struct SendOnly {
    message: String,
}

/// Parses a request line. Only a `send` may be longer than [`SMALL_REQUEST_BYTES_MAX`], and
/// it is read as its text alone: the tagged request enum holds every field of a line (unknown
/// ones too) in memory before it knows the operation, some 16 bytes for each two of the
/// line's, so a line of 96 MiB padded with an unknown array would take gigabytes.
fn parse_request(line: &[u8]) -> Result<ControlRequest, String> {
    let bad = |e: serde_json::Error| format!("bad request: {e}");
    let op = serde_json::from_slice::<OpOnly>(line).map_err(bad)?.op;
    if op == "send" {
        let send: SendOnly = serde_json::from_slice(line).map_err(bad)?;
        return Ok(ControlRequest::Send {
            message: send.message,
        });
    }
    if line.len() as u64 > SMALL_REQUEST_BYTES_MAX {
        return Err(format!(
            "request over {SMALL_REQUEST_BYTES_MAX} bytes (only a send may be longer)"
        ));
    }
    // The tagged enum holds each of the line's values in memory (some 32 bytes each, however
    // short on the line) before it knows the operation: their number is bounded first.
    if json_values(line) > REQUEST_VALUES_MAX {
        return Err(format!(
            "request of over {REQUEST_VALUES_MAX} JSON values (only a send may hold more)"
        ));
    }
    serde_json::from_slice(line).map_err(bad)
}

/// The most JSON values a request other than `send` may hold (a run's 4096 arguments fit).
pub const REQUEST_VALUES_MAX: usize = 8192;

/// An upper bound on how many JSON values `line` holds: one, and one more for each `[`, `{`
/// and `,` outside strings.
fn json_values(line: &[u8]) -> usize {
    let (mut values, mut in_string, mut escaped) = (1usize, false, false);
    for &b in line {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' | b',' => values += 1,
                _ => {}
            }
        }
    }
    values
}

fn refused(e: HandleError) -> ControlReply {
    ControlReply::Error(match e {
        HandleError::Stopped => "the node is shutting down".into(),
        HandleError::Refused(e) => e.to_string(),
        e @ (HandleError::Leased { .. }
        | HandleError::NotStored(_)
        | HandleError::Sync(_)
        | HandleError::Cancelled
        | HandleError::Drop(_)
        | HandleError::NoFolder) => e.to_string(),
    })
}

fn serve_client(
    mut stream: UnixStream,
    handle: &Handle,
    limits: &ControlLimits,
    clients: &Clients,
    id: u64,
) -> io::Result<()> {
    stream.set_write_timeout(Some(limits.write_timeout))?;
    let request = read_request(&stream, limits.request_timeout, clients);
    clients.requested(id);
    let request = match request {
        Ok(r) => r,
        Err(e) => return write_reply(&mut stream, &ControlReply::Error(e)),
    };
    let reply = match request {
        ControlRequest::Send { message } => match handle.broadcast(Bytes::from(message)) {
            Ok(()) => ControlReply::Sent,
            Err(e) => refused(e),
        },
        ControlRequest::Network => handle.hosts().map_or_else(refused, ControlReply::Hosts),
        ControlRequest::Stats => handle
            .stats()
            .map_or_else(refused, |s| ControlReply::Stats(Box::new(s))),
        ControlRequest::Listen if clients.start_listening(limits) => {
            let streamed = stream_deliveries(stream, handle, limits);
            clients.stop_listening();
            return streamed;
        }
        ControlRequest::Listen => ControlReply::Error("too many listeners".into()),
        ControlRequest::TableSet {
            key,
            value,
            lease_ms,
        } => {
            let op = TableOp::Set {
                value: value.into_bytes(),
                lease: lease_ms.map(weft_engine::Duration::from_millis),
            };
            written(handle.table_write(key.into_bytes(), op))
        }
        ControlRequest::TableDelete { key } => {
            written(handle.table_write(key.into_bytes(), TableOp::Delete))
        }
        ControlRequest::TableRelease { key } => {
            written(handle.table_write(key.into_bytes(), TableOp::Release))
        }
        ControlRequest::TableGet { key } => handle
            .table_read(Some(key.into_bytes()))
            .map_or_else(refused, ControlReply::Table),
        ControlRequest::TableList {
            entries_max,
            value_bytes_max,
        } => {
            let bounds = crate::report::TableListBounds {
                entries_max,
                value_bytes_max,
            };
            handle
                .table_read_within(None, bounds)
                .map_or_else(refused, ControlReply::Table)
        }
        ControlRequest::Put {
            key,
            value,
            lifetime_ms,
            hex,
        } => match (chord_bytes(key, hex), chord_bytes(value, hex)) {
            (Some(key), Some(value)) => chord_reply(
                handle.chord(ChordRequest::Put {
                    key,
                    value,
                    lifetime_ms,
                }),
                hex,
            ),
            _ => not_hex(),
        },
        ControlRequest::Get { key, hex } => match chord_bytes(key, hex) {
            Some(key) => chord_reply(handle.chord(ChordRequest::Get { key }), hex),
            None => not_hex(),
        },
        ControlRequest::Delete { key, value, hex } => {
            // `Some(None)`: every value; `None`: a value that is not hex.
            let value = match value {
                Some(v) => chord_bytes(v, hex).map(Some),
                None => Some(None),
            };
            match (chord_bytes(key, hex), value) {
                (Some(key), Some(value)) => {
                    chord_reply(handle.chord(ChordRequest::Delete { key, value }), hex)
                }
                _ => not_hex(),
            }
        }
        ControlRequest::Id => handle
            .id()
            .map_or_else(refused, |id| ControlReply::Id(Box::new(id))),
        ControlRequest::Connect { addr } => match handle.connect(addr) {
            Ok(()) => ControlReply::Dialing,
            Err(e) => refused(e),
        },
        ControlRequest::Disconnect { node } => disconnect(handle, &node),
        ControlRequest::Shutdown => match handle.shutdown() {
            Ok(()) => ControlReply::Stopping(std::process::id()),
            Err(e) => refused(e),
        },
        ControlRequest::Status { files_max } => handle
            .folder_status(files_max)
            .map_or_else(refused, ControlReply::Folders),
        ControlRequest::Run {
            peer,
            program,
            args,
            shell,
            sync,
        } => return serve_run(stream, handle, &peer, program, args, shell, sync),
        ControlRequest::Resolve { path, keep } => match handle.resolve(path, keep) {
            Ok(()) => ControlReply::Resolved,
            Err(e) => refused(e),
        },
        ControlRequest::DropCreate { dir } => drop_reply(handle, || {
            Ok(DropOp::Create {
                dir: absolute_dir(&dir)?,
            })
        }),
        ControlRequest::DropSubscribe { drop, dir } => drop_reply(handle, || {
            Ok(DropOp::Subscribe {
                drop: crate::cli::drop_id(&drop)?,
                dir: absolute_dir(&dir)?,
            })
        }),
        ControlRequest::DropPublish { dir } => drop_reply(handle, || {
            Ok(DropOp::Publish {
                dir: absolute_dir(&dir)?,
            })
        }),
        ControlRequest::DropOwners { drop, node, add } => drop_reply(handle, || {
            Ok(DropOp::Owners {
                drop: crate::cli::drop_id(&drop)?,
                node: crate::cli::node_id(&node)?,
                add,
            })
        }),
        ControlRequest::DropStatus => drop_reply(handle, || Ok(DropOp::Status)),
        ControlRequest::DropRevert { dir } => drop_reply(handle, || {
            Ok(DropOp::Revert {
                dir: absolute_dir(&dir)?,
            })
        }),
        ControlRequest::Throughput => handle
            .throughput()
            .map_or_else(refused, ControlReply::Throughput),
    };
    write_reply(&mut stream, &reply)
}

/// The one known node (with `direct`, linked node) whose hex id starts with `prefix`, and its
/// full id.
fn known_node(
    handle: &Handle,
    prefix: &str,
    direct: bool,
) -> Result<(weft_engine::NodeId, String), ControlReply> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ControlReply::Error(format!(
            "not a node id or its start: {prefix:?}"
        )));
    }
    let hosts = handle.hosts().map_err(refused)?;
    let full = match_prefix(&hosts, &prefix, direct).map_err(ControlReply::Error)?;
    match parse_node_id(&full) {
        Some(node) => Ok((node, full)),
        None => Err(ControlReply::Error(format!("not a node id: {full}"))),
    }
}

/// The one node of `hosts` whose id starts with `prefix` (lowercase hex), which must be linked
/// if `direct`. The prefix must be unique among every node known, linked or not: a prefix of
/// a linked node that an unlinked known node also has is ambiguous, so a member that made
/// itself an id with the prefix of a node gone offline is never picked for it (a run, and a
/// `--sync` folder, would go to it).
fn match_prefix(hosts: &[HostReport], prefix: &str, direct: bool) -> Result<String, String> {
    let matching: Vec<&HostReport> = hosts
        .iter()
        .filter(|h| h.node.starts_with(prefix))
        .collect();
    match matching[..] {
        [one] if one.direct || !direct => Ok(one.node.clone()),
        [one] => Err(format!("node {} is not linked", one.node)),
        [] if direct => Err(format!("no linked node's id starts with {prefix}")),
        [] => Err(format!("no known node's id starts with {prefix}")),
        _ => Err(format!(
            "{} known nodes' ids start with {prefix}: give more of it",
            matching.len()
        )),
    }
}

/// Closes the link to the one known node whose hex id starts with `prefix`.
fn disconnect(handle: &Handle, prefix: &str) -> ControlReply {
    let (node, full) = match known_node(handle, prefix, false) {
        Ok(found) => found,
        Err(reply) => return reply,
    };
    match handle.disconnect(node) {
        Ok(()) => ControlReply::Disconnected(full),
        Err(e) => refused(e),
    }
}

/// A drop request's directory: an absolute path.
fn absolute_dir(dir: &str) -> Result<std::path::PathBuf, String> {
    let path = std::path::PathBuf::from(dir);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("{dir}: not an absolute path"))
    }
}

/// The reply to the drop request `op` builds (an error reply if its fields are bad).
fn drop_reply(handle: &Handle, op: impl FnOnce() -> Result<DropOp, String>) -> ControlReply {
    let op = match op() {
        Ok(op) => op,
        Err(why) => return ControlReply::Error(why),
    };
    match handle.drop_request(op) {
        Ok(DropAnswer::Created(drop)) => ControlReply::DropCreated(drop.to_string()),
        Ok(DropAnswer::Subscribed) => ControlReply::DropSubscribed,
        Ok(DropAnswer::Published {
            drop,
            version,
            counter,
        }) => ControlReply::DropPublished(DropPublishedReport {
            drop: drop.to_string(),
            version: version.to_string(),
            counter,
        }),
        Ok(DropAnswer::Status(drops)) => ControlReply::Drops(drops),
        Ok(DropAnswer::Reverted(paths)) => ControlReply::DropReverted(paths),
        Err(e) => refused(e),
    }
}

/// The directory `dir` of `--sync`, canonical; it must be a directory.
fn sync_dir(dir: &str) -> Result<std::path::PathBuf, String> {
    let path = std::fs::canonicalize(dir).map_err(|e| format!("--sync {dir}: {e}"))?;
    if !path.is_dir() {
        return Err(format!("--sync {dir}: not a directory"));
    }
    Ok(path)
}

/// A `run` session: the run's events until it ends; signal lines from the client meanwhile.
/// A client that goes away (or stops reading for the write timeout) has its run killed.
fn serve_run(
    mut stream: UnixStream,
    handle: &Handle,
    peer: &str,
    program: String,
    args: Vec<String>,
    shell: bool,
    sync: Option<String>,
) -> io::Result<()> {
    let node = match known_node(handle, peer, true) {
        Ok((node, _)) => node,
        Err(reply) => return write_reply(&mut stream, &reply),
    };
    let sync = match sync.map(|dir| sync_dir(&dir)).transpose() {
        Ok(sync) => sync,
        Err(why) => return write_reply(&mut stream, &ControlReply::Error(why)),
    };
    let in_folder = sync.is_some();
    // The client's lines are read from the start: a Ctrl-C or a close while the run still
    // waits for its folder's scan gives it up, so the program never starts.
    let watch = RunWatch::default();
    let reader = stream.try_clone()?;
    reader.set_read_timeout(None)?;
    // However this returns (a write the client stopped reading failed, say), the signal
    // reader, blocked reading a connection the client may keep open, is woken.
    let _wake_reader = ShutdownOnDrop(stream.try_clone()?);
    let signals = handle.clone();
    let reader_watch = watch.clone();
    std::thread::Builder::new()
        .name("weft-control-run".into())
        .spawn(move || read_run_signals(reader, &signals, &reader_watch))?;
    let cancelled = Arc::clone(&watch.cancelled);
    let session = match handle.run_cancellable(node, program, args, shell, sync, cancelled) {
        Ok(session) => session,
        Err(e) => {
            watch.ended.store(true, Ordering::SeqCst);
            return write_reply(&mut stream, &refused(e));
        }
    };
    let run = session.run;
    let ended = Arc::clone(&watch.ended);
    if watch.started(run) && !ended.swap(true, Ordering::SeqCst) {
        // Given up as the run was being asked for: it goes at once.
        let _ = handle.run_signal(run, RunSignalKind::Kill);
    }
    let kill = || {
        if !ended.swap(true, Ordering::SeqCst) {
            let _ = handle.run_signal(run, RunSignalKind::Kill);
        }
    };
    for kind in session.events.iter() {
        let (reply, last) = match kind {
            RunEventKind::Started => (ControlReply::RunStarted, false),
            RunEventKind::Output { stream, bytes } => (
                ControlReply::RunOutput(RunOutputReport {
                    stream: match stream {
                        OutputStream::Stdout => "stdout".into(),
                        OutputStream::Stderr => "stderr".into(),
                    },
                    hex: hex(&bytes),
                }),
                false,
            ),
            RunEventKind::Exited { status, copy } => {
                let (code, signal) = match status {
                    ExitStatus::Code(c) => (Some(c), None),
                    ExitStatus::Signal(s) => (None, Some(s)),
                };
                let report = RunExitReport {
                    code,
                    signal,
                    not_back: in_folder && copy.is_none(),
                };
                (ControlReply::RunExit(report), true)
            }
            RunEventKind::Refused { text, .. } => (ControlReply::RunRefused(text), true),
            RunEventKind::Lost => (ControlReply::RunLost, true),
            other => (
                ControlReply::Error(format!("unexpected run event {other:?}")),
                true,
            ),
        };
        if last {
            ended.store(true, Ordering::SeqCst);
        }
        if let Err(e) = write_reply(&mut stream, &reply) {
            kill();
            return Err(e);
        }
        if last {
            return Ok(());
        }
    }
    // The node stopped before the run ended, or killed it: its output was not read fast
    // enough (`RUN_EVENTS_QUEUED_MAX`).
    ended.store(true, Ordering::SeqCst);
    let why =
        "the run ended without its exit: the node stopped, or its output was not read fast enough";
    write_reply(&mut stream, &ControlReply::Error(why.into()))
}

/// A connection shut down (both ways) when this is dropped.
struct ShutdownOnDrop(UnixStream);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// What a `run` client's connection and its signal reader share.
#[derive(Clone, Default)]
struct RunWatch {
    /// The run's number, once the node asked for it.
    run: Arc<Mutex<Option<u64>>>,
    /// The client gave up before the run was asked for (a signal line, or a close).
    cancelled: Arc<AtomicBool>,
    /// The run ended, or was killed: nothing more to signal.
    ended: Arc<AtomicBool>,
}

impl RunWatch {
    /// Records that `run` was asked for; whether the client had already given up.
    fn started(&self, run: u64) -> bool {
        let mut slot = self.run.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(run);
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// The longest signal line a `run` client may send, bytes (`{"signal":"interrupt"}` is 22).
pub const RUN_SIGNAL_LINE_BYTES_MAX: u64 = 256;

/// The next line of `reader`, without its newline: `None` when the client closed, failed, or
/// sent a line longer than [`RUN_SIGNAL_LINE_BYTES_MAX`] (taken as gone, so a client that
/// never ends a line cannot grow the node's memory).
fn signal_line(reader: &mut impl io::BufRead) -> Option<String> {
    use std::io::BufRead as _;
    let mut line = Vec::new();
    let read = io::Read::take(&mut *reader, RUN_SIGNAL_LINE_BYTES_MAX + 1)
        .read_until(b'\n', &mut line)
        .ok()?;
    if read == 0 || (line.last() != Some(&b'\n') && read as u64 > RUN_SIGNAL_LINE_BYTES_MAX) {
        return None;
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// Reads the `run` client's signal lines until it closes: each is sent to the run, or, before
/// the run was asked for, gives it up; a close before the run ended kills it (and so does a
/// line over [`RUN_SIGNAL_LINE_BYTES_MAX`]).
fn read_run_signals(stream: UnixStream, handle: &Handle, watch: &RunWatch) {
    let mut reader = io::BufReader::new(stream);
    loop {
        let signal = match signal_line(&mut reader) {
            Some(line) => match serde_json::from_str::<RunSignalLine>(&line) {
                Ok(l) if l.signal == "interrupt" => Some(RunSignalKind::Interrupt),
                Ok(l) if l.signal == "kill" => Some(RunSignalKind::Kill),
                // A line this node does not know: ignored (the client may be newer).
                _ => continue,
            },
            // Gone (or the run ended and the node closed the socket).
            _ => None,
        };
        // Held while deciding, so that the run cannot be recorded in between.
        let run = watch.run.lock().unwrap_or_else(|e| e.into_inner());
        match (*run, signal) {
            (None, _) => {
                if !watch.cancelled.swap(true, Ordering::SeqCst)
                    && !watch.ended.load(Ordering::SeqCst)
                {
                    let _ = handle.cancel_run(&watch.cancelled);
                }
            }
            (Some(run), Some(signal)) => {
                if !watch.ended.load(Ordering::SeqCst) {
                    let _ = handle.run_signal(run, signal);
                }
            }
            (Some(run), None) => {
                if !watch.ended.swap(true, Ordering::SeqCst) {
                    let _ = handle.run_signal(run, RunSignalKind::Kill);
                }
            }
        }
        if signal.is_none() {
            return;
        }
    }
}

/// Lowercase hex, by table: a run's output goes through here byte by byte (`write!` per
/// byte cost about 30 ns a byte, most of a requester node's time).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
    // Only ASCII digits were pushed: always UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// A node id from its 64 hex digits.
fn parse_node_id(hex: &str) -> Option<weft_engine::NodeId> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(weft_engine::NodeId(id))
}

fn written(result: Result<(), HandleError>) -> ControlReply {
    result.map_or_else(refused, |()| ControlReply::Written)
}

/// A Chord key or value's bytes: its UTF-8 text, or with `hex` the bytes its hex digits spell.
fn chord_bytes(text: String, hex: bool) -> Option<Vec<u8>> {
    if hex {
        crate::report::unhex(&text)
    } else {
        Some(text.into_bytes())
    }
}

fn not_hex() -> ControlReply {
    ControlReply::Error("with hex, keys and values are an even number of hex digits".into())
}

/// The answer to a put, get or delete; with `hex`, a get's values in hex digits.
fn chord_reply(result: Result<ChordResult, String>, hex: bool) -> ControlReply {
    match result {
        Ok(ChordResult::Put { nodes, of, .. }) => ControlReply::Stored { nodes, of },
        // Nothing removed anywhere: the value (or any value of this node) was not there.
        Ok(ChordResult::Delete { removed: 0, .. }) => ControlReply::NoSuchValue,
        Ok(ChordResult::Delete { removed, of, .. }) => ControlReply::Deleted { nodes: removed, of },
        Ok(ChordResult::Get { values }) => ControlReply::Values(
            values
                .iter()
                .map(|v| match hex {
                    true => self::hex(&v.value),
                    false => String::from_utf8_lossy(&v.value).into_owned(),
                })
                .collect(),
        ),
        Ok(other) => ControlReply::Error(format!("unexpected chord result {other:?}")),
        Err(e) => ControlReply::Error(e),
    }
}

/// A `listen` session: deliveries until the node stops or the client leaves. A client that
/// takes no bytes for the write timeout is dropped (and logged); while it is slow, deliveries
/// past its backlog are dropped for it.
fn stream_deliveries(
    mut stream: UnixStream,
    handle: &Handle,
    limits: &ControlLimits,
) -> io::Result<()> {
    let deliveries = match handle.subscribe_bounded(limits.listen_backlog) {
        Ok(d) => d,
        Err(e) => return write_reply(&mut stream, &refused(e)),
    };
    write_reply(&mut stream, &ControlReply::Listening)?;
    stream.set_read_timeout(Some(Duration::from_millis(1)))?;
    loop {
        match deliveries.recv_timeout(LISTEN_CHECK) {
            Ok(d) => {
                let reply = ControlReply::Broadcast(DeliveryReport::from(&d));
                drop(d);
                if let Err(e) = write_reply(&mut stream, &reply) {
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        tracing::warn!(
                            "dropped a listener: it took no bytes for {} ms",
                            limits.write_timeout.as_millis()
                        );
                    }
                    return Err(e);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                // The client sends nothing after its request: end of stream means it left.
                match stream.read(&mut [0u8; 64]) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request over the small bound takes one of the large slots while it is read; with
    /// every slot taken it is refused at once, and once one is free it is read.
    #[test]
    fn large_requests_read_at_once_are_bounded() {
        let clients = Clients::default();
        let slots: Vec<LargeSlot<'_>> = (0..LARGE_REQUESTS_READ_MAX)
            .map(|_| clients.take_large().expect("a free slot"))
            .collect();
        let message = "x".repeat(SMALL_REQUEST_BYTES_MAX as usize + 10);
        let send = |line: Vec<u8>| {
            let (client, server) = UnixStream::pair().expect("a socket pair");
            let writer = std::thread::spawn(move || {
                let mut client = client;
                let _ = client.write_all(&line);
            });
            let read = read_request(&server, Duration::from_secs(5), &clients);
            drop(server);
            writer.join().expect("the writer");
            read
        };
        let mut line = serde_json::to_vec(&ControlRequest::Send {
            message: message.clone(),
        })
        .expect("encodes");
        line.push(b'\n');
        let refused = send(line.clone());
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("try again")),
            "{:?}",
            refused.map(|_| ())
        );
        drop(slots);
        assert_eq!(send(line), Ok(ControlRequest::Send { message }));
        assert_eq!(clients.lock().large_reading, 0, "the slot is given back");
    }

    /// Every request parses as the tagged enum would parse it; a `send` is read as its text
    /// alone, whatever else its line holds; only a `send` may pass the small bound.
    #[test]
    fn requests_parse_and_only_a_send_is_large() {
        for request in [
            ControlRequest::Send {
                message: "hi \"there\"\n".into(),
            },
            ControlRequest::Stats,
            ControlRequest::TableSet {
                key: "k".into(),
                value: "v".into(),
                lease_ms: Some(5),
            },
        ] {
            let line = serde_json::to_vec(&request).expect("encodes");
            assert_eq!(parse_request(&line), Ok(request));
        }
        let padded = format!(
            r#"{{"pad":[{}0],"op":"send","message":"m"}}"#,
            "0,".repeat(1000)
        );
        assert_eq!(
            parse_request(padded.as_bytes()),
            Ok(ControlRequest::Send {
                message: "m".into()
            })
        );
        let big = format!(
            r#"{{"op":"stats","pad":"{}"}}"#,
            "x".repeat(SMALL_REQUEST_BYTES_MAX as usize)
        );
        assert!(parse_request(big.as_bytes()).is_err_and(|e| e.contains("only a send")));
        let big_send = format!(
            r#"{{"op":"send","message":"{}"}}"#,
            "x".repeat(SMALL_REQUEST_BYTES_MAX as usize)
        );
        assert!(
            matches!(parse_request(big_send.as_bytes()), Ok(ControlRequest::Send { message }) if message.len() == SMALL_REQUEST_BYTES_MAX as usize)
        );
        assert!(parse_request(b"{\"op\":\"nonsense\"}").is_err());
        assert!(parse_request(b"not json").is_err());
        // Many small values (each held some 32 bytes before the operation is known): refused
        // past the bound, counted outside strings only.
        let many = |n: usize| format!(r#"{{"op":"stats","pad":[{}0]}}"#, "[],".repeat(n));
        assert!(parse_request(many(REQUEST_VALUES_MAX).as_bytes())
            .is_err_and(|e| e.contains("JSON values")));
        assert_eq!(
            parse_request(many(100).as_bytes()),
            Ok(ControlRequest::Stats)
        );
        let in_a_string = format!(
            r#"{{"op":"stats","pad":"{}\"[,"}}"#,
            "[,{".repeat(REQUEST_VALUES_MAX)
        );
        assert_eq!(
            parse_request(in_a_string.as_bytes()),
            Ok(ControlRequest::Stats)
        );
    }

    /// A prefix names one node among every node known: a linked impostor whose id shares
    /// the prefix of a known node that is offline is not picked; a prefix of a known node
    /// that is not linked is refused for what needs a link.
    #[test]
    fn a_prefix_must_name_one_node_among_all_known() {
        let host = |node: &str, direct: bool| HostReport {
            node: node.into(),
            addr: None,
            direct,
            last_seen_ms_ago: 0,
            last_seen_unix_ms: None,
        };
        let hosts = [
            host("9f3c00", true),
            host("9f3c11", false),
            host("ab0000", true),
            host("cd0000", false),
        ];
        assert!(match_prefix(&hosts, "9f3c", true)
            .is_err_and(|e| e == "2 known nodes' ids start with 9f3c: give more of it"));
        assert_eq!(match_prefix(&hosts, "9f3c0", true), Ok("9f3c00".into()));
        assert_eq!(match_prefix(&hosts, "ab", true), Ok("ab0000".into()));
        assert!(match_prefix(&hosts, "cd", true).is_err_and(|e| e.contains("not linked")));
        assert_eq!(match_prefix(&hosts, "cd", false), Ok("cd0000".into()));
        assert!(match_prefix(&hosts, "ee", true)
            .is_err_and(|e| e == "no linked node's id starts with ee"));
    }

    #[test]
    fn a_signal_line_is_read_whole_and_one_too_long_ends_the_client() {
        let mut r = io::Cursor::new(b"{\"signal\":\"interrupt\"}\nlast".to_vec());
        assert_eq!(
            signal_line(&mut r).as_deref(),
            Some("{\"signal\":\"interrupt\"}")
        );
        assert_eq!(
            signal_line(&mut r).as_deref(),
            Some("last"),
            "no newline at the end"
        );
        assert_eq!(signal_line(&mut r), None, "closed");
        let max = RUN_SIGNAL_LINE_BYTES_MAX as usize;
        let mut at_max = vec![b'a'; max];
        at_max.push(b'\n');
        assert_eq!(
            signal_line(&mut io::Cursor::new(at_max)).map(|l| l.len()),
            Some(max)
        );
        // A client streaming bytes without a newline: given up after the bound, not held.
        let mut endless = io::Read::take(io::repeat(b'a'), 1 << 30);
        let mut endless = io::BufReader::new(&mut endless);
        assert_eq!(signal_line(&mut endless), None);
    }
}
