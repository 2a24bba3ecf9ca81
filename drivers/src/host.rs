//! The part of a driver that does not depend on its I/O library: the node, its clocks, the
//! application's requests and subscribers, and the shutdown sequence.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Sender, TrySendError};

use bytes::Bytes;

use weft_engine::chord::{ChordCommand, ChordResult};
use weft_engine::drops::{DropsEvent, DropsEventKind};

use weft_engine::{
    Command, Config, ConnId, Duration, Event, HostRequest, HostResult, Input, InputError, Instant,
    MeshCommand, MeshEvent, NetworkKey, Node, Output, RequestId, TableCommand, TableEvent,
    TableRefusal,
};

use crate::clock::{self, Clock, WALL_CLOCK_PERIOD};
use crate::dial_log::DialLog;
use crate::folder::cache::Cache;
use crate::folder::run::{cache_blob_name, FolderSpec, Folders};
use crate::handle::{Delivery, Request, Subscriber};
use crate::handle::{HandleError, TableOp};
use crate::process::Processes;
use crate::report::{
    hex_id, links_name, ConnReport, FileReport, FolderReport, HostReport, IdReport, NodeCounters,
    RingReport, StatsReport, TableEntryReport,
};
use crate::storage::Store;
use weft_engine::protocol::FileKind;
use weft_engine::protocol::FolderId;
use weft_engine::protocol::RunSignalKind;
use weft_engine::replicate::{
    conflict_origin, LocalChange, Record, ReplicaCommand, ReplicaConfig, ReplicaEvent,
    ReplicateCommand, ReplicateEvent, ReplicateRefusal, StorageError,
};
use weft_engine::run::{ProcessRequest, ProcessResult, RunCommand, RunEvent, RunEventKind};

mod drops;
mod p2pt;
mod sync;
mod throughput;

pub(crate) use drops::DROP_PUBLISH_SCAN_TIMEOUT;

/// How long a shutdown may take to say BYE and flush before the loop ends anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why a driver's event loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `Handle::shutdown` was called; peers got BYE.
    Requested,
    /// The first SIGINT/SIGTERM; peers got BYE.
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
}

impl StopSignal {
    /// The signal's number.
    pub fn number(self) -> u8 {
        match self {
            StopSignal::Interrupt => 2,
            StopSignal::Terminate => 15,
        }
    }
}

impl Exit {
    /// The process exit code for it: 0 when asked, and after a signal 128 plus its number, as
    /// shells report a process the signal ended (130 after SIGINT, 143 after SIGTERM).
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

/// Hands `delivery` to `subscriber` unless that would put it past its backlog (then counts a
/// drop in `drops`); false once the subscriber is gone.
fn offer(subscriber: &Subscriber, delivery: &Delivery, drops: &mut u64) -> bool {
    if !subscriber.is_held() {
        return false;
    }
    let cost = delivery.queued_bytes();
    if let Some((queued, bytes_max)) = &subscriber.bytes {
        // Counted before the send: the reader subtracts as soon as it takes the delivery. A
        // delivery larger than the bound still goes to a subscriber with nothing waiting.
        let before = queued.fetch_add(cost, Ordering::SeqCst);
        if before > 0 && before + cost > *bytes_max {
            queued.fetch_sub(cost, Ordering::SeqCst);
            *drops += 1;
            return true;
        }
    }
    let sent = subscriber.sink.try_send(delivery.clone());
    if sent.is_err() {
        if let Some((queued, _)) = &subscriber.bytes {
            queued.fetch_sub(cost, Ordering::SeqCst);
        }
    }
    match sent {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            *drops += 1;
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
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
    last_chord_request: u64,
    /// Where the engine's state blobs go (`None`: the node keeps no state).
    store: Option<Store>,
    /// The address the driver's listener is bound to.
    bound_addr: Option<String>,
    /// Table writes waiting for their commit, by their number (`writes_originated`).
    table_waiting: std::collections::BTreeMap<u64, Sender<Result<(), HandleError>>>,
    /// Answers to the engine's requests, fed back once its outputs are drained.
    answers: Vec<(RequestId, HostResult)>,
    /// Set when the run must end in an error; the loop returns it at its next turn.
    failure: Option<RunError>,
    /// What was logged of failing dials.
    dial_log: DialLog,
    /// The shared folders: their storage workers and scanners.
    folders: Folders,
    /// The last storage error at each path of each folder, until the path is updated.
    folder_errors: std::collections::BTreeMap<(FolderId, String), String>,
    /// The processes of runs carried out for peers.
    processes: Processes,
    /// The loop's own handle, for the threads that answer run processes' reads.
    handle: Option<crate::Handle>,
    /// Runs asked of peers, waiting for their events, by run number.
    runs_waiting: std::collections::BTreeMap<u64, Sender<RunEventKind>>,
    last_run: u64,
    /// Runs with `--sync` waiting for their folder's scan (this node asks).
    syncs_waiting: Vec<sync::SyncWaiting>,
    /// Spawns waiting for their folder to catch up (this node runs).
    spawns_held: Vec<sync::HeldSpawn>,
    /// The folders added for runs (`--sync`), not the network's shared folder.
    run_folders: std::collections::BTreeSet<FolderId>,
    /// The drops' folders and their directories.
    drop_folders: std::collections::BTreeMap<FolderId, drops::DropFolder>,
    /// Drop publishes waiting for their folder's scan.
    publishes_waiting: Vec<drops::PublishWaiting>,
    /// The byte counters sampled once a second, for the web page's chart.
    throughput: throughput::Throughput,
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
            last_chord_request: 0,
            store,
            bound_addr,
            table_waiting: std::collections::BTreeMap::new(),
            answers: Vec::new(),
            failure: None,
            dial_log: DialLog::default(),
            folders: Folders::default(),
            folder_errors: std::collections::BTreeMap::new(),
            processes: Processes::new(run_dir),
            handle: None,
            runs_waiting: std::collections::BTreeMap::new(),
            last_run: 0,
            syncs_waiting: Vec::new(),
            spawns_held: Vec::new(),
            run_folders: std::collections::BTreeSet::new(),
            drop_folders: std::collections::BTreeMap::new(),
            publishes_waiting: Vec::new(),
            throughput: throughput::Throughput::default(),
        }
    }

    /// Starts the shared folders `specs` (their workers and scanners reach the loop through
    /// `handle`), each with its scan cache from the store; [`Host::start`] adds them to the
    /// node. The drops' folders the store maps start too (the engine adds them itself).
    pub(crate) fn start_folders(&mut self, specs: Vec<FolderSpec>, handle: &crate::Handle) {
        self.handle = Some(handle.clone());
        let store = self.store.as_ref();
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

    /// Gives the node the wall clock and dials the configured peers. The caller drains.
    pub(crate) fn start(&mut self, peers: &[String]) {
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
                    Ok(()) => return,
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
            self.answers.push((id, result));
        }
    }

    /// Feeds the answers to the engine's requests (and starts the held runs that are due);
    /// whether there were any (then the caller drains again).
    pub(crate) fn answer_requests(&mut self) -> bool {
        let fed = self.check_held() | self.check_drop_publishes();
        if self.answers.is_empty() {
            return fed;
        }
        for (id, result) in std::mem::take(&mut self.answers) {
            self.feed(Input::Completed { id, result });
        }
        true
    }

    /// Runs due timers, and hands the node the wall clock when it is due.
    pub(crate) fn on_timer(&mut self) {
        let now = self.clock.now();
        self.node.handle_timeout(now);
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
        at
    }

    /// Reports an event: broadcasts go to the subscribers, the rest to the log.
    pub(crate) fn on_event(&mut self, event: Event) {
        match event {
            Event::Mesh(MeshEvent::Broadcast {
                origin,
                incarnation,
                seq,
                payload,
            }) => {
                tracing::debug!(
                    "broadcast {origin}/{incarnation}#{seq}: {} bytes",
                    payload.len()
                );
                if self.subscribers.is_empty() {
                    return;
                }
                // The payload may be a slice of a much larger read buffer: a copy of its own
                // keeps a waiting delivery from pinning that buffer, and makes the bytes
                // counted against a subscriber's bound the bytes held.
                let delivery = Delivery {
                    origin,
                    incarnation,
                    seq,
                    payload: Bytes::copy_from_slice(&payload),
                    sender: None,
                };
                let drops = &mut self.listener_drops;
                self.subscribers.retain(|s| offer(s, &delivery, drops));
            }
            Event::P2pt(e) => self.on_p2pt_event(e),
            Event::PeerUp {
                node,
                conn,
                incarnation,
                restarted,
            } => tracing::info!(
                "peer up {node} on {conn:?} (incarnation {incarnation}{})",
                if restarted { ", restarted" } else { "" }
            ),
            Event::PeerDown { node, reason } => tracing::info!("peer down {node}: {reason:?}"),
            Event::ConnectionClosed { conn, reason } => {
                tracing::info!("closed {conn:?}: {reason:?}")
            }
            Event::DialFailed {
                addr,
                attempts,
                retry_in_ms,
                reason,
            } => self.dial_log.failed(addr, attempts, retry_in_ms, reason),
            Event::Redialed {
                addr,
                node,
                failures,
            } => self.dial_log.linked(&addr, &node, failures),
            Event::RefusedAsStale { addr } => self.dial_log.refused_as_stale(addr),
            Event::Chord(e) => {
                if let Some(reply) = self.chord_waiting.remove(&e.request) {
                    let _ = reply.send(e.result.map_err(|e| e.to_string()));
                }
            }
            Event::Table(TableEvent::Committed { through }) => self.table_answer(through, Ok(())),
            Event::Table(TableEvent::NotCommitted { through, reason }) => {
                // A node without a state folder keeps nothing, by choice.
                if self.store.is_some() {
                    tracing::warn!("table writes not stored: {reason}");
                }
                self.table_answer(through, Err(HandleError::NotStored(reason)));
            }
            Event::Replicate(ReplicateEvent { folder, event }) => {
                self.on_folder_event(folder, event)
            }
            Event::Run(RunEvent { run, kind }) => {
                let last = matches!(
                    kind,
                    RunEventKind::Refused { .. } | RunEventKind::Exited(_) | RunEventKind::Lost
                );
                let sent = self
                    .runs_waiting
                    .get(&run)
                    .is_some_and(|w| w.send(kind).is_ok());
                if last || !sent {
                    self.runs_waiting.remove(&run);
                }
                // Its asker went away: the process has no one to write to.
                if !sent && !last {
                    let kill = RunCommand::Signal {
                        run,
                        signal: RunSignalKind::Kill,
                    };
                    let _ = self.input(Input::Command(Command::Run(kill)));
                }
            }
            Event::Drops(DropsEvent { drop, kind }) => match kind {
                DropsEventKind::Refused { peer, error }
                | DropsEventKind::FilesRefused { peer, error } => {
                    tracing::warn!("drop {drop}: refused what {peer} sent: {error}")
                }
                DropsEventKind::HistoryFull => tracing::warn!("drop {drop}: its history is full"),
                DropsEventKind::Current {
                    version,
                    counter,
                    branches,
                } => tracing::info!(
                    "drop {drop}: shows version {version} (counter {counter}, {branches} heads)"
                ),
                other => tracing::info!("drop {drop}: {other:?}"),
            },
            other => tracing::debug!("{other:?}"),
        }
    }

    fn on_folder_event(&mut self, folder: FolderId, event: ReplicaEvent) {
        match event {
            ReplicaEvent::Ready => {
                tracing::info!("folder {folder}: ready");
                let temps = self
                    .node
                    .replica(&folder)
                    .map(|r| r.temps_in_use())
                    .unwrap_or_default();
                let due = self.folders.on_ready(&folder, &temps);
                self.feed_local(folder, due);
            }
            ReplicaEvent::Updated { path, .. } => {
                tracing::info!("folder {folder}: updated {path}");
                self.folder_errors.remove(&(folder, path));
            }
            ReplicaEvent::StorageFailed { path, error } => {
                let error = match error {
                    StorageError::DiskFull => "the disk is full".to_string(),
                    StorageError::Io(why) => why,
                };
                tracing::warn!(
                    "folder {folder}: {}: {error}",
                    path.as_deref().unwrap_or("-")
                );
                if let Some(path) = path {
                    self.folder_errors.insert((folder, path), error);
                }
            }
            ReplicaEvent::Conflict { path, copy } => {
                tracing::warn!("folder {folder}: conflict at {path}: the other version is {copy}")
            }
            ReplicaEvent::LocalEditRefused { path } => tracing::warn!(
                "folder {folder}: local edit of {path} not published: this copy of the drop is read-only"
            ),
            other => tracing::debug!("folder {folder}: {other:?}"),
        }
    }

    /// Acts on one application request; `unwritten` tells the driver's unwritten bytes per
    /// connection, for the stats.
    pub(crate) fn on_request(&mut self, request: Request, unwritten: &dyn Fn(ConnId) -> usize) {
        match request {
            Request::Broadcast { payload, reply } => {
                let broadcast = Command::Mesh(MeshCommand::Broadcast { payload });
                let result = self.input(Input::Command(broadcast));
                match reply {
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    None => {
                        if let Err(e) = result {
                            tracing::warn!("broadcast refused: {e}");
                        }
                    }
                }
            }
            Request::Subscribe(subscriber) => self.subscribers.push(subscriber),
            Request::Hosts { reply } => {
                let _ = reply.send(self.hosts());
            }
            Request::Stats { reply } => {
                let _ = reply.send(self.stats(unwritten));
            }
            Request::Throughput { reply } => {
                let _ = reply.send(self.throughput.report());
            }
            Request::TableWrite { key, op, reply } if self.node.p2pt().is_some() => {
                let _ = reply.send(self.p2pt_table_write(key, op));
            }
            Request::TableWrite { key, op, reply } => match self.table_write(key, op) {
                // A node with a state folder answers once the write is stored; one without
                // keeps nothing, so it answers at once (the write is not durable).
                Ok(number) if self.store.is_some() => {
                    self.table_waiting.insert(number, reply);
                }
                Ok(_) => {
                    let _ = reply.send(Ok(()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Request::TableRead { key, reply } if self.node.p2pt().is_some() => {
                let _ = reply.send(self.p2pt_table_read(key));
            }
            Request::TableRead { key, reply } => {
                let table = self.node.table();
                let entries = match key {
                    Some(k) => TableEntryReport::of(table, &k).into_iter().collect(),
                    None => table
                        .iter()
                        .filter_map(|(k, _)| TableEntryReport::of(table, k))
                        .collect(),
                };
                let _ = reply.send(entries);
            }
            Request::Chord { op, reply } => {
                self.last_chord_request += 1;
                let request = self.last_chord_request;
                match self.input(Input::Command(Command::Chord(ChordCommand { request, op }))) {
                    Ok(()) => {
                        self.chord_waiting.insert(request, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
            Request::Id { reply } => {
                let _ = reply.send(self.id());
            }
            Request::Connect { addr, reply } => {
                let _ = reply.send(self.input(Input::Command(Command::Connect { addr })));
            }
            Request::Disconnect { node, reply } => {
                let _ = reply.send(self.input(Input::Command(Command::Disconnect { node })));
            }
            Request::Shutdown => self.begin_stop(Exit::Requested),
            Request::StorageDone { id, result } => self.answers.push((id, result)),
            Request::ProcessDone {
                process,
                id,
                result,
            } => {
                if matches!(result, ProcessResult::Exited(_)) {
                    self.processes.ended(process);
                }
                self.answers.push((id, HostResult::Process(result)));
            }
            Request::Run {
                peer,
                program,
                args,
                shell,
                sync,
                reply,
            } => match sync {
                Some(dir) => self.run_with_sync(dir, peer, program, args, shell, reply),
                None => self.start_run(peer, program, args, shell, None, reply),
            },
            Request::RunSignal { run, signal } => {
                let command = Command::Run(RunCommand::Signal { run, signal });
                // A run that ended meanwhile: nothing to signal.
                if let Err(e) = self.input(Input::Command(command)) {
                    tracing::debug!("run {run}: signal not sent: {e}");
                }
            }
            Request::FolderChanges {
                folder,
                changes,
                cache,
                settled,
            } => {
                if !cache.is_empty() {
                    if let Some(store) = &self.store {
                        let name = cache_blob_name(&folder);
                        let bytes = Bytes::from(cache);
                        if let HostResult::Failed(why) =
                            store.carry_out(HostRequest::StoreState { name, bytes })
                        {
                            tracing::warn!("folder {folder}: scan cache not stored: {why}");
                        }
                    }
                }
                let due = self.folders.on_changes(&folder, changes);
                self.feed_local(folder, due);
                if let Some(started) = settled {
                    self.folders.scan_settled(&folder, started);
                }
            }
            Request::FolderStopped { folder, why } => self.folders.stop(&folder, why),
            Request::FolderStatus { reply } => {
                let _ = reply.send(self.folder_reports());
            }
            Request::Resolve { path, keep, reply } => {
                // The network's shared folder, not one added for a run or a drop.
                let shared =
                    self.folders.list().into_iter().find(|(id, ..)| {
                        !self.run_folders.contains(id) && !self.is_drop_folder(id)
                    });
                let result = match shared {
                    Some((folder, ..)) => {
                        let command = ReplicaCommand::Resolve { path, keep };
                        let resolve = ReplicateCommand::Folder { folder, command };
                        self.input(Input::Command(Command::Replicate(resolve)))
                    }
                    None => Err(InputError::from(ReplicateRefusal::UnknownFolder(
                        FolderId::default(),
                    ))),
                };
                let _ = reply.send(result);
            }
            Request::Drop { op, reply } => self.on_drop_request(op, reply),
        }
    }

    /// Every shared folder and each of its paths' state.
    fn folder_reports(&self) -> Vec<FolderReport> {
        self.folders
            .list()
            .into_iter()
            .map(|(folder, root, stopped, ready)| {
                let replica = self.node.replica(&folder);
                let transfers: std::collections::BTreeMap<String, u64> = replica
                    .map(|r| r.transfers())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| (t.path, t.bytes_done))
                    .collect();
                let records: Vec<&Record> = replica
                    .map(|r| r.records().filter(|r| !r.deleted).collect())
                    .unwrap_or_default();
                let conflicted: std::collections::BTreeSet<String> = records
                    .iter()
                    .filter_map(|r| conflict_origin(&r.entry.path))
                    .collect();
                let mut files: Vec<FileReport> = records
                    .iter()
                    .map(|r| {
                        let path = r.entry.path.clone();
                        let error = self.folder_errors.get(&(folder, path.clone())).cloned();
                        let state = if error.is_some() {
                            "error"
                        } else if transfers.contains_key(&path) {
                            "fetching"
                        } else if conflicted.contains(&path) {
                            "conflict"
                        } else {
                            "synced"
                        };
                        FileReport {
                            bytes_done: transfers.get(&path).copied().unwrap_or(r.entry.size),
                            kind: kind_name(r.entry.kind).into(),
                            size: r.entry.size,
                            state: state.into(),
                            error,
                            path,
                        }
                    })
                    .collect();
                // Files being fetched for the first time have no record yet.
                for t in replica.map(|r| r.transfers()).unwrap_or_default() {
                    if !files.iter().any(|f| f.path == t.path) {
                        files.push(FileReport {
                            path: t.path,
                            kind: "file".into(),
                            size: t.bytes_total,
                            state: "fetching".into(),
                            bytes_done: t.bytes_done,
                            error: None,
                        });
                    }
                }
                files.sort_by(|a, b| a.path.cmp(&b.path));
                FolderReport {
                    folder: folder.to_string(),
                    root: root.display().to_string(),
                    stopped: stopped.map(str::to_owned),
                    ready,
                    files,
                }
            })
            .collect()
    }

    /// Hands the scanner's changes in `folder` to the engine.
    fn feed_local(&mut self, folder: FolderId, changes: Vec<LocalChange>) {
        for change in changes {
            let local = ReplicateCommand::Local { folder, change };
            if let Err(e) = self.input(Input::Command(Command::Replicate(local))) {
                tracing::warn!("folder {folder}: a local change was refused: {e}");
            }
        }
    }

    /// Answers the table writes numbered up to `through`.
    fn table_answer(&mut self, through: u64, result: Result<(), HandleError>) {
        let later = self.table_waiting.split_off(&(through + 1));
        for (_, reply) in std::mem::replace(&mut self.table_waiting, later) {
            let _ = reply.send(result.clone());
        }
    }

    /// A table write: its number (`writes_originated`), for its commit. A write the node
    /// accepts without sending was refused by a lease.
    fn table_write(&mut self, key: Vec<u8>, op: TableOp) -> Result<u64, HandleError> {
        let command = match op {
            TableOp::Set { value, lease } => TableCommand::Set {
                key: key.clone(),
                value,
                lease,
            },
            TableOp::Delete => TableCommand::Delete { key: key.clone() },
            TableOp::Release => TableCommand::Release { key: key.clone() },
        };
        let before = self.node.metrics().table.writes_originated;
        self.input(Input::Command(Command::Table(command)))
            .map_err(HandleError::Refused)?;
        let after = self.node.metrics().table.writes_originated;
        if after > before {
            return Ok(after);
        }
        match self.node.table().lease(&key) {
            Some((owner, until_ms)) => Err(HandleError::Leased { owner, until_ms }),
            None => Err(HandleError::Refused(TableRefusal::NotLeaseOwner.into())),
        }
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
    /// whose connections are all closed, or whose grace period is over.
    pub(crate) fn exit_due(&mut self, conns_left: usize) -> Option<Result<Exit, RunError>> {
        if let Some(error) = self.failure.take() {
            return Some(Err(error));
        }
        let s = self.stopping?;
        (conns_left == 0 || self.clock.now() >= s.by).then_some(Ok(s.exit))
    }

    fn hosts(&self) -> Vec<HostReport> {
        if let Some(p2pt) = self.node.p2pt() {
            return p2pt
                .peers()
                .into_iter()
                .map(|(id, _, addr)| HostReport {
                    node: id,
                    addr: Some(addr),
                    direct: true,
                    last_seen_ms_ago: 0,
                    last_seen_unix_ms: None,
                })
                .collect();
        }
        let now = self.clock.now();
        let wall = self.node.wall_clock_ms(now);
        self.node
            .hosts()
            .into_iter()
            .map(|h| {
                let ago = now.saturating_since(h.last_seen).as_millis();
                HostReport {
                    node: hex_id(&h.node),
                    addr: h.addr,
                    direct: h.direct,
                    last_seen_ms_ago: ago,
                    last_seen_unix_ms: wall.map(|w| w.saturating_sub(ago)),
                }
            })
            .collect()
    }

    fn id(&self) -> IdReport {
        let node = &self.node;
        let hosts = node.hosts();
        let direct = hosts.iter().filter(|h| h.direct).count() as u64;
        let me = node.node_id();
        let chord = node.chord().map(|chord| {
            let successor = chord
                .successors()
                .first()
                .filter(|p| p.node != me)
                .map(|p| hex_id(&p.node));
            RingReport {
                position: format!("{:016x}", chord.me().ring_id()),
                joined: chord.is_joined(),
                successor,
                predecessor: chord.predecessor().map(|p| hex_id(&p.node)),
                records: chord.records_len() as u64,
            }
        });
        let p2pt = node.p2pt();
        IdReport {
            node: p2pt.map_or_else(|| hex_id(&me), |p| p.id()),
            network: node.config().network.clone(),
            incarnation: node.config().incarnation,
            pid: std::process::id(),
            driver: self.driver.to_owned(),
            links: if p2pt.is_some() {
                "plaintext (p2p.today)".to_owned()
            } else {
                links_name(node.config().link_encryption).to_owned()
            },
            network_secret: node.config().network_key != NetworkKey::OPEN,
            listen_addr: self.bound_addr.clone(),
            announce_addr: node.config().listen_addr.clone(),
            uptime_ms: self.clock.now().as_nanos() / 1_000_000,
            peers_direct: p2pt.map_or(direct, |p| p.peers().len() as u64),
            peers_heard_of: hosts.len() as u64 - direct,
            chord,
            table_keys: p2pt.map_or(node.table().iter().count() as u64, |p| {
                p.metrics().table_keys
            }),
        }
    }

    fn stats(&self, unwritten: &dyn Fn(ConnId) -> usize) -> StatsReport {
        let node = &self.node;
        let peers: std::collections::BTreeMap<ConnId, _> =
            node.links().map(|(peer, conn)| (conn, peer)).collect();
        let connections = node
            .conn_ids()
            .filter_map(|conn| {
                let stats = node.conn_stats(conn)?;
                let addr = node.conn_addr(conn).unwrap_or_default().to_owned();
                let mut report =
                    ConnReport::new(conn.0, addr, peers.get(&conn), &stats, unwritten(conn));
                report.dedicated = node.dedicated_family(conn).map(|f| f.name().to_owned());
                Some(report)
            })
            .collect();
        let config = node.config();
        let mut counters = NodeCounters::from(&node.metrics());
        if let Some(p) = node.p2pt() {
            let m = p.metrics();
            counters.frames_received = m.frames_received;
            counters.frames_sent = m.frames_sent;
            counters.bytes_received = m.bytes_received;
            counters.bytes_sent = m.bytes_sent;
            counters.broadcasts_originated = m.broadcasts_originated;
            counters.broadcasts_delivered = m.delivered;
            counters.broadcast_duplicates = m.broadcast_duplicates;
            counters.broadcast_transmissions = m.broadcasts_relayed;
        }
        StatsReport {
            node: node
                .p2pt()
                .map_or_else(|| hex_id(&node.node_id()), |p| p.id()),
            network: config.network.clone(),
            incarnation: config.incarnation,
            listen_addr: config.listen_addr.clone(),
            driver: self.driver.to_owned(),
            links: links_name(config.link_encryption).to_owned(),
            network_secret: config.network_key != NetworkKey::OPEN,
            uptime_ms: self.clock.now().as_nanos() / 1_000_000,
            counters,
            connections,
            listeners: self.subscribers.iter().filter(|s| s.is_held()).count() as u64,
            listener_drops: self.listener_drops,
        }
    }
}

/// A kind's name in `weft status`.
fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File => "file",
        FileKind::Directory => "dir",
        FileKind::Symlink => "symlink",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;
    use std::sync::Arc;

    use super::*;
    use crate::handle::DELIVERY_OVERHEAD_BYTES;

    fn delivery(payload_bytes: usize) -> Delivery {
        Delivery {
            origin: weft_engine::NodeId([7; 32]),
            incarnation: 1,
            seq: 1,
            payload: Bytes::from(vec![0; payload_bytes]),
            sender: None,
        }
    }

    #[test]
    fn a_bounded_subscriber_is_offered_no_more_than_its_bytes() {
        let (sink, deliveries) = mpsc::sync_channel(100);
        let queued = Arc::new(AtomicUsize::new(0));
        let subscriber = Subscriber {
            sink,
            bytes: Some((Arc::clone(&queued), 1000)),
        };
        let mut drops = 0;
        // Alone, even one over the bound is queued; then nothing more until there is room.
        assert!(offer(&subscriber, &delivery(2000), &mut drops));
        assert!(offer(&subscriber, &delivery(1), &mut drops));
        assert_eq!(drops, 1);
        assert_eq!(
            queued.load(Ordering::SeqCst),
            2000 + DELIVERY_OVERHEAD_BYTES
        );
        queued.fetch_sub(deliveries.recv().unwrap().queued_bytes(), Ordering::SeqCst);
        for _ in 0..2 {
            assert!(offer(&subscriber, &delivery(400), &mut drops));
        }
        assert_eq!(
            drops, 2,
            "the second 400 bytes would pass 1000 with their overhead"
        );
        assert_eq!(queued.load(Ordering::SeqCst), 400 + DELIVERY_OVERHEAD_BYTES);
        drop(deliveries);
        assert!(!offer(&subscriber, &delivery(1), &mut drops), "gone");
        assert_eq!(queued.load(Ordering::SeqCst), 400 + DELIVERY_OVERHEAD_BYTES);
    }
}
