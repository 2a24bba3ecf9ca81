//! The part of a driver that does not depend on its I/O library: the node, its clocks, the
//! application's requests and subscribers, and the shutdown sequence.
//!
//! The node's events are taken in [`events`], the application's requests in [`requests`],
//! what the host reports in [`reports`]; this module holds the node's life (start, host
//! requests, timers, the shutdown sequence).

use std::sync::mpsc::Sender;
use std::sync::Arc;

use weft_engine::chord::ChordResult;
use weft_engine::protocol::FolderId;
use weft_engine::replicate::{ReplicaConfig, ReplicateCommand};
use weft_engine::run::{ProcessRequest, ProcessResult, RunEventKind};
use weft_engine::{
    Command, Config, Duration, HostRequest, HostResult, Input, InputError, Instant, Node, Output,
    RequestId,
};

use crate::clock::{self, Clock, WALL_CLOCK_PERIOD};
use crate::dial_log::DialLog;
use crate::folder::cache::Cache;
use crate::folder::run::{cache_blob_name, FolderSpec, Folders};
use crate::handle::{DropAnswer, HandleError, Subscriber};
use crate::peer_log::PeerLog;
use crate::process::Processes;
use crate::state_writer::{self, StateWriter};
use crate::storage::Store;

/// A drops command's answer waiting for its change to be stored: the count of changes the
/// store must hold, the reply, the answer.
type DropWaiting = (
    u64,
    Sender<Result<DropAnswer, HandleError>>,
    Result<DropAnswer, HandleError>,
);

mod drops;
mod events;
mod first_contact;
mod p2pt;
mod reports;
mod requests;
mod sync;
mod throughput;

pub(crate) use drops::DROP_PUBLISH_SCAN_TIMEOUT;
pub use first_contact::FirstContact;

/// How long a shutdown may take to say BYE and flush before the loop ends anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why a driver's event loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `Handle::shutdown` was called; peers got BYE.
    Requested,
    /// The first SIGINT, SIGTERM or SIGHUP; peers got BYE.
    Signalled(StopSignal),
    /// A second signal during the shutdown: the loop ended at once.
    Interrupted(StopSignal),
}

/// A signal that stops a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, systemd, `docker stop`).
    Terminate,
    /// SIGHUP (the terminal or SSH session a foreground node ran in closed).
    Hangup,
}

impl StopSignal {
    /// The signals a node stops on: SIGINT, SIGTERM, and SIGHUP when the process did not
    /// start with it ignored (`nohup`, which a handler would undo; where that cannot be
    /// read, SIGHUP is left as it is). Without a handler SIGHUP ended the process at once:
    /// no BYE, no last state write.
    pub fn watched() -> Vec<StopSignal> {
        let mut watched = vec![StopSignal::Interrupt, StopSignal::Terminate];
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if ignored_in_status(&status, StopSignal::Hangup.number()) == Some(false) {
            watched.push(StopSignal::Hangup);
        }
        watched
    }

    /// The signal's number.
    pub fn number(self) -> u8 {
        match self {
            StopSignal::Interrupt => 2,
            StopSignal::Terminate => 15,
            StopSignal::Hangup => 1,
        }
    }

    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Hangup => "SIGHUP",
        }
    }
}

/// Whether signal `number` (1 to 64) is ignored by the process whose `/proc/PID/status` is
/// `status` (its `SigIgn:` mask, hex, bit `number - 1`); `None` if that cannot be read.
fn ignored_in_status(status: &str, number: u8) -> Option<bool> {
    let bit = number.checked_sub(1).filter(|b| *b < 64)?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .map(|mask| mask >> bit & 1 == 1)
}

impl Exit {
    /// The process exit code for it: 0 when asked, and after a signal 128 plus its number, as
    /// shells report a process the signal ended (130 after SIGINT, 143 after SIGTERM, 129
    /// after SIGHUP).
    pub fn code(self) -> u8 {
        match self {
            Exit::Requested => 0,
            Exit::Signalled(signal) | Exit::Interrupted(signal) => 128 + signal.number(),
        }
    }
}

/// Why a driver's event loop ended in an error (the node stops at once: no BYE, no flush).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Polling the sockets failed.
    #[error("polling failed: {0}")]
    Poll(#[from] std::io::Error),
    /// The engine emitted an output this driver does not carry out (the engine is newer
    /// than the driver): dropping it would break the engine's contract.
    #[error("the engine emitted an output this driver does not handle ({0}); the driver is older than its engine")]
    UnhandledOutput(String),
    /// The driver broke the engine's contract (a bug in the driver).
    #[error("driver bug: {0}")]
    DriverBug(String),
    /// A joining node did not link to the network through the peer it was given (see
    /// [`FirstContact`]).
    #[error("{0}")]
    NotJoined(String),
    /// A joining node was stopped by a signal before it linked to the network (the join's
    /// set-up is taken back, as when it cannot link; the exit code is the signal's).
    #[error("stopped by {} before it joined the network", .0.name())]
    StoppedBeforeJoin(StopSignal),
}

impl RunError {
    /// The error for `output`, named by its variant only (its fields may be large).
    pub(crate) fn unhandled(output: &Output) -> RunError {
        let text = format!("{output:?}");
        let name = text
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default();
        RunError::UnhandledOutput(format!("Output::{name}"))
    }
}

/// A shutdown under way.
#[derive(Debug, Clone, Copy)]
struct Stopping {
    exit: Exit,
    by: Instant,
}

/// The node and what surrounds it in every driver.
pub(crate) struct Host {
    pub(crate) node: Node,
    pub(crate) clock: Clock,
    driver: &'static str,
    subscribers: Vec<Subscriber>,
    listener_drops: u64,
    next_wall_clock: Instant,
    stopping: Option<Stopping>,
    /// Chord requests waiting for their event, by request id.
    chord_waiting: std::collections::BTreeMap<u64, Sender<Result<ChordResult, String>>>,
    /// Drops commands' answers waiting for their change to be stored.
    drops_waiting: Vec<DropWaiting>,
    last_chord_request: u64,
    /// Where the engine's state blobs go (`None`: the node keeps no state).
    store: Option<Arc<Store>>,
    /// The thread that writes the store off the loop (once the loop's handle is known).
    state_writer: Option<StateWriter>,
    /// The address the driver's listener is bound to.
    bound_addr: Option<String>,
    /// Table writes waiting for their commit, by their number (`writes_originated`).
    table_waiting: std::collections::BTreeMap<u64, Sender<Result<(), HandleError>>>,
    /// Answers to the engine's requests, fed back once its outputs are drained.
    answers: Vec<(RequestId, HostResult)>,
    /// Storage steps handed to the folders' workers and not yet answered.
    storage_in_flight: usize,
    /// Set when the run must end in an error; the loop returns it at its next turn.
    failure: Option<RunError>,
    /// What was logged of failing dials.
    dial_log: DialLog,
    /// The budgets of the log lines peers cause.
    peer_log: PeerLog,
    /// The shared folders: their storage workers and scanners.
    folders: Folders,
    /// The last storage error at each path of each folder, until the path is updated.
    folder_errors: std::collections::BTreeMap<(FolderId, String), String>,
    /// The processes of runs carried out for peers.
    processes: Processes,
    /// The loop's own handle, for the threads that answer run processes' reads.
    handle: Option<crate::Handle>,
    /// Runs asked of peers, waiting for their events, by run number.
    runs_waiting: std::collections::BTreeMap<u64, std::sync::mpsc::SyncSender<RunEventKind>>,
    last_run: u64,
    /// Runs in folders (`--sync`), asked or carried out: what waits, and their folders.
    syncs: sync::RunSyncs,
    /// The drops' folders and their directories.
    drop_folders: std::collections::BTreeMap<FolderId, drops::DropFolder>,
    /// Why the stored drop folders could not be read, if they could not: the blob is kept as
    /// it is and no drop folder is added in this run (the next one stored over it would have
    /// forgotten every other).
    drop_folders_unreadable: Option<String>,
    /// The drop folders were checked against the drops the engine restored.
    drop_folders_reconciled: bool,
    /// Drop publishes waiting for their folder's scan.
    publishes_waiting: Vec<drops::PublishWaiting>,
    /// The byte counters sampled once a second, for the web page's chart.
    throughput: throughput::Throughput,
    /// A joining node's first contact, until it links.
    first_contact: Option<first_contact::Watch>,
}

impl Host {
    /// A host for a node of `config` whose listener is bound to `bound_addr`, keeping its
    /// state blobs in `store` (if it has one).
    pub(crate) fn new(
        config: Config,
        driver: &'static str,
        store: Option<Store>,
        bound_addr: Option<String>,
    ) -> Host {
        // Runs without a folder run in the state folder's `run/` (SPEC.md §23.2).
        let run_dir = store
            .as_ref()
            .and_then(|s| s.state_folder())
            .map(|dir| dir.join("run"));
        Host {
            node: Node::new(config),
            clock: Clock::start(),
            driver,
            subscribers: Vec::new(),
            listener_drops: 0,
            next_wall_clock: Instant::ZERO,
            stopping: None,
            chord_waiting: std::collections::BTreeMap::new(),
            drops_waiting: Vec::new(),
            last_chord_request: 0,
            store: store.map(Arc::new),
            state_writer: None,
            bound_addr,
            table_waiting: std::collections::BTreeMap::new(),
            answers: Vec::new(),
            storage_in_flight: 0,
            failure: None,
            dial_log: DialLog::default(),
            peer_log: PeerLog::default(),
            folders: Folders::default(),
            folder_errors: std::collections::BTreeMap::new(),
            processes: Processes::new(run_dir),
            handle: None,
            runs_waiting: std::collections::BTreeMap::new(),
            last_run: 0,
            syncs: sync::RunSyncs::default(),
            drop_folders: std::collections::BTreeMap::new(),
            drop_folders_unreadable: None,
            drop_folders_reconciled: false,
            publishes_waiting: Vec::new(),
            throughput: throughput::Throughput::default(),
            first_contact: None,
        }
    }

    /// Starts the shared folders `specs` (their workers and scanners reach the loop through
    /// `handle`), each with its scan cache from the store; [`Host::start`] adds them to the
    /// node. The drops' folders the store maps start too (the engine adds them itself).
    pub(crate) fn start_folders(&mut self, specs: Vec<FolderSpec>, handle: &crate::Handle) {
        self.handle = Some(handle.clone());
        if let Some(store) = &self.store {
            let loop_handle = handle.clone();
            let wake: state_writer::Wake = Box::new(move || loop_handle.nudge());
            match StateWriter::start(Arc::clone(store), wake) {
                Ok(writer) => self.state_writer = Some(writer),
                // Carried out on the loop instead.
                Err(e) => tracing::warn!("no state writer thread: {e}"),
            }
        }
        let store = self.store.as_deref();
        let caches = |id: &FolderId| {
            let name = cache_blob_name(id);
            match store?.carry_out(HostRequest::LoadState { name }) {
                HostResult::Loaded(Some(bytes)) => Cache::decode(&bytes),
                _ => None,
            }
        };
        self.folders = Folders::start(specs, caches, handle);
        self.start_drop_folders(handle);
    }

    /// Gives the node the wall clock and dials the configured peers; with `first_contact`, the
    /// run ends in [`RunError::NotJoined`] unless the node links to the network in time. The
    /// caller drains.
    pub(crate) fn start(&mut self, peers: &[String], first_contact: Option<FirstContact>) {
        let now = self.clock.now();
        self.first_contact = first_contact.map(|contact| first_contact::Watch::new(now, contact));
        self.on_timer();
        let me = self.node.node_id();
        for folder in self.folders.ids() {
            if self.is_drop_folder(&folder) {
                continue;
            }
            let add = ReplicateCommand::AddFolder(ReplicaConfig::new(folder, me));
            self.feed(Input::Command(Command::Replicate(add)));
        }
        for addr in peers {
            let connect = Command::Connect { addr: addr.clone() };
            if let Err(e) = self.input(Input::Command(connect)) {
                tracing::warn!("not dialing {addr}: {e}");
            }
        }
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Feeds an input at the current time.
    pub(crate) fn input(&mut self, input: Input) -> Result<(), InputError> {
        let now = self.clock.now();
        self.node.handle_input(now, input)
    }

    /// Feeds an input the driver produced. The engine calling it a misuse is a driver bug,
    /// which ends the run; a refused command (the driver's `Shutdown`) is only logged.
    pub(crate) fn feed(&mut self, input: Input) {
        match self.input(input) {
            Ok(()) => {}
            Err(InputError::Misuse(e)) => self.fail(RunError::DriverBug(format!(
                "the engine refused a driver input: {e}"
            ))),
            Err(e) => tracing::warn!("the engine refused a driver input: {e}"),
        }
    }

    /// Ends the run in `error` at the loop's next turn (the first error wins).
    pub(crate) fn fail(&mut self, error: RunError) {
        if self.failure.is_none() {
            tracing::debug!("stopping: {error}");
            self.failure = Some(error);
        }
    }

    /// Whether the run is ending in an error.
    pub(crate) fn has_failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Carries out the engine's request (the file I/O is small: at once); the answer is fed
    /// back by [`Host::answer_requests`] once the outputs are drained.
    pub(crate) fn on_host_request(&mut self, id: RequestId, request: HostRequest) {
        // A storage step goes to the workers as it is (never formatted: a WriteTemp holds
        // up to a block of data).
        let request = match request {
            HostRequest::Storage { folder, request } => {
                let result = match self.folders.submit(id, folder, request) {
                    // A worker answers it.
                    Ok(()) => {
                        self.storage_in_flight += 1;
                        return;
                    }
                    Err(refused) => refused,
                };
                tracing::warn!("folder {folder}: a storage step was refused: {result:?}");
                self.answers.push((id, result));
                return;
            }
            HostRequest::Process { process, request } => {
                if let Some(request) = self.hold_spawn(id, process, request) {
                    self.spawn_now(id, process, request);
                }
                return;
            }
            other => other,
        };
        if let Some(writer) = &self.state_writer {
            match &request {
                // Answered once the writer has stored it (its answers are taken as the loop
                // drains); carried out here only if the writer has stopped.
                HostRequest::StoreState { name, bytes } => {
                    if writer.store(Some(id), name.clone(), bytes.clone()) {
                        return;
                    }
                }
                // A load is answered at once, after the stores handed over before it.
                _ => writer.flush(),
            }
        }
        let what = match &request {
            HostRequest::LoadState { name } => format!("loading state {name}"),
            HostRequest::StoreState { name, bytes } => {
                format!("storing state {name} ({} bytes)", bytes.len())
            }
            other => format!("{other:?}"),
        };
        let result = match (request, &self.store) {
            (request, Some(store)) => store.carry_out(request),
            (_, None) => HostResult::Failed("no state folder".into()),
        };
        match &result {
            // A node without a state folder (embedded, benchmarked) keeps no state, by choice.
            HostResult::Failed(why) if self.store.is_none() => {
                tracing::debug!("{what} failed: {why}")
            }
            HostResult::Failed(why) => tracing::warn!("{what} failed: {why}"),
            _ => tracing::debug!("{what}: done"),
        }
        self.answers.push((id, result));
    }

    /// Carries out a process step now (a spawn inside a folder once it has caught up).
    fn spawn_now(&mut self, id: RequestId, process: u64, request: ProcessRequest) {
        let folders = &self.folders;
        let root = |folder: &FolderId| {
            folders
                .list()
                .into_iter()
                .find(|(id, ..)| id == folder)
                .map(|(_, root, ..)| root.to_path_buf())
        };
        let handle = self.handle.as_ref();
        if let Some(result) = self.processes.carry_out(handle, id, process, request, root) {
            if !matches!(result, HostResult::Process(ProcessResult::Spawned)) {
                self.not_started(process);
            }
            self.answers.push((id, result));
        }
    }

    /// Feeds the answers to the engine's requests (and starts the held runs that are due);
    /// whether there were any (then the caller drains again).
    pub(crate) fn answer_requests(&mut self) -> bool {
        if let Some(writer) = &self.state_writer {
            self.answers.extend(writer.take_answers());
        }
        let fed = self.check_held() | self.check_drop_publishes();
        if self.answers.is_empty() {
            return fed;
        }
        for (id, result) in std::mem::take(&mut self.answers) {
            self.feed(Input::Completed { id, result });
        }
        self.answer_drops();
        self.reconcile_drop_folders();
        true
    }

    /// Runs due timers, and hands the node the wall clock when it is due.
    pub(crate) fn on_timer(&mut self) {
        let now = self.clock.now();
        self.node.handle_timeout(now);
        if let Some(watch) = self.first_contact.as_ref().filter(|w| now >= w.by) {
            let error = watch.timed_out();
            self.first_contact = None;
            self.fail(error);
        }
        if now >= self.next_wall_clock {
            self.next_wall_clock = now + WALL_CLOCK_PERIOD;
            if let Some(unix_ms) = clock::unix_ms() {
                self.feed(Input::WallClock { unix_ms });
            }
        }
        if now >= self.throughput.due() {
            let session = self.node.metrics().session;
            let (bytes_in, bytes_out) = (session.bytes_received, session.bytes_sent);
            self.throughput
                .on_timer(now, clock::unix_ms(), bytes_in, bytes_out);
        }
    }

    /// When the loop must call [`Host::on_timer`] (or end) at the latest.
    pub(crate) fn deadline(&self) -> Instant {
        let mut at = self.next_wall_clock.min(self.throughput.due());
        if let Some(t) = self.node.poll_timeout() {
            at = at.min(t);
        }
        if let Some(s) = &self.stopping {
            at = at.min(s.by);
        }
        if let Some(w) = &self.first_contact {
            at = at.min(w.by);
        }
        at
    }

    /// Starts the shutdown: BYE to every peer, then the loop ends once every connection is
    /// closed or the grace period is over.
    pub(crate) fn begin_stop(&mut self, exit: Exit) {
        if self.stopping.is_some() {
            return;
        }
        tracing::info!("shutting down");
        self.stopping = Some(Stopping {
            exit,
            by: self.clock.now() + SHUTDOWN_GRACE,
        });
        self.feed(Input::Command(Command::Shutdown));
    }

    /// Whether a shutdown is under way.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// How the loop ends now, if it does: in an error (see [`Host::fail`]), or a shutdown
    /// whose connections are all closed and whose storage steps have all been answered (and
    /// fed to the node, which persists what they changed), or whose grace period is over
    /// (then the scan caches storage steps wrote to are persisted first).
    pub(crate) fn exit_due(&mut self, conns_left: usize) -> Option<Result<Exit, RunError>> {
        if let Some(error) = self.failure.take() {
            return Some(Err(error));
        }
        let s = self.stopping?;
        // A step still with the workers would be carried out on disk after the node's last
        // state write, and its answer never fed: the disk ahead of the stored index.
        // Likewise a drops command waiting for its store to be answered (the writer stores
        // it at the end anyway; its reply would be lost).
        let busy = conns_left > 0
            || self.storage_in_flight > 0
            || !self.answers.is_empty()
            || !self.drops_waiting.is_empty();
        if busy && self.clock.now() < s.by {
            return None;
        }
        self.folders.close_workers();
        for (folder, blob) in self.folders.written_caches() {
            self.store_scan_cache(folder, blob);
        }
        // What the writer holds is stored before the run ends.
        self.state_writer = None;
        Some(self.ended(s.exit))
    }

    /// How the run ends with `exit`: in [`RunError::StoppedBeforeJoin`] if a signal stopped
    /// a joining node before it linked.
    pub(crate) fn ended(&self, exit: Exit) -> Result<Exit, RunError> {
        match exit {
            Exit::Signalled(signal) | Exit::Interrupted(signal) if self.first_contact.is_some() => {
                Err(RunError::StoppedBeforeJoin(signal))
            }
            _ => Ok(exit),
        }
    }

    /// A peer (`who`) linked: a joining node's first contact is made.
    pub(crate) fn linked_to(&mut self, who: &dyn std::fmt::Display) {
        if self.first_contact.take().is_some() {
            tracing::info!("joined the network: linked to {who}");
        }
    }

    /// Persists `folder`'s scan cache `blob` in the node's store (if it has one).
    pub(crate) fn store_scan_cache(&self, folder: FolderId, blob: Vec<u8>) {
        let Some(store) = &self.store else {
            return;
        };
        let name = cache_blob_name(&folder);
        let bytes = bytes::Bytes::from(blob);
        if let Some(writer) = &self.state_writer {
            if writer.store(None, name.clone(), bytes.clone()) {
                return;
            }
        }
        if let HostResult::Failed(why) = store.carry_out(HostRequest::StoreState { name, bytes }) {
            tracing::warn!("folder {folder}: scan cache not stored: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SIGHUP is watched unless the process started with it ignored (`nohup`): the mask's
    /// bit `number - 1`, from `/proc/self/status`.
    #[test]
    fn a_signal_ignored_at_the_start_is_read_from_the_status_mask() {
        let status = |mask: &str| {
            format!("Name:\tweft\nSigBlk:\t0000000000000000\nSigIgn:\t{mask}\nSigCgt:\t0\n")
        };
        // nohup: SIGHUP (1) ignored; a shell's background job also ignores SIGINT (2), SIGQUIT (3).
        assert_eq!(
            ignored_in_status(&status("0000000000000001"), 1),
            Some(true)
        );
        assert_eq!(
            ignored_in_status(&status("0000000000000007"), 2),
            Some(true)
        );
        assert_eq!(
            ignored_in_status(&status("0000000000000006"), 1),
            Some(false)
        );
        assert_eq!(
            ignored_in_status(&status("0000000000001000"), 1),
            Some(false)
        );
        assert_eq!(
            ignored_in_status(&status("0000000000004000"), 15),
            Some(true)
        );
        // Unreadable: SIGHUP is left alone (as if ignored).
        assert_eq!(ignored_in_status("Name:\tweft\n", 1), None);
        assert_eq!(ignored_in_status(&status("not hex"), 1), None);
        assert_eq!(ignored_in_status(&status("ffffffffffffffff"), 0), None);
        assert_eq!(ignored_in_status(&status("ffffffffffffffff"), 65), None);
    }
}
