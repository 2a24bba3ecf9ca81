//! The application's side of a running driver: a [`Handle`] queues requests for the node's
//! event loop and wakes it; the loop drains them from its `Mailbox`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use weft_engine::chord::{ChordRequest, ChordResult};
use weft_engine::protocol::FolderId;
use weft_engine::protocol::RunSignalKind;
use weft_engine::replicate::paths::IgnoreRules;
use weft_engine::replicate::LocalChange;
use weft_engine::run::{ProcessResult, RunEventKind};
use weft_engine::{Duration, HostResult, InputError, NodeId, RequestId};

use crate::report::{
    hex_id, DeliveryReport, DropReport, FolderReport, HostReport, IdReport, StatsReport,
    TableEntryReport, ThroughputSample,
};

/// Requests waiting for the event loop; a full queue blocks the sender.
const REQUESTS_MAX: usize = 1024;

/// A broadcast as the node delivered it to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Who sent it.
    pub origin: NodeId,
    /// The origin's incarnation when it sent it.
    pub incarnation: u64,
    /// The origin's sequence number (per incarnation).
    pub seq: u64,
    /// The application bytes.
    pub payload: Bytes,
    /// On a p2p.today network: the originator's py2p node id (base58 text); `origin` is then
    /// zero, `incarnation` the message's Unix second and `seq` 0.
    pub sender: Option<String>,
}

/// What a waiting delivery counts for against [`Backlog::bytes_max`] on top of its payload.
pub const DELIVERY_OVERHEAD_BYTES: usize = 128;

/// How far a [`Subscription`] may fall behind: a delivery that would take it past either
/// bound is dropped for it (and counted in `StatsReport::listener_drops`). One larger than
/// `bytes_max` is still queued when nothing else waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Deliveries waiting unread.
    pub deliveries_max: usize,
    /// Their payload bytes, plus [`DELIVERY_OVERHEAD_BYTES`] each.
    pub bytes_max: usize,
}

/// The deliveries of a subscription bounded in bytes ([`Handle::subscribe_bounded`]).
#[derive(Debug)]
pub struct Subscription {
    deliveries: Receiver<Delivery>,
    /// Bytes waiting, as counted against the bound; shared with the node's side.
    queued_bytes: Arc<AtomicUsize>,
}

impl Subscription {
    /// The next delivery, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Result<Delivery, RecvTimeoutError> {
        let delivery = self.deliveries.recv_timeout(timeout)?;
        self.queued_bytes
            .fetch_sub(delivery.queued_bytes(), Ordering::SeqCst);
        Ok(delivery)
    }
}

impl Delivery {
    /// What this delivery counts for while it waits for a bounded subscriber.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.payload.len() + DELIVERY_OVERHEAD_BYTES
    }
}

/// The JSON form of a delivery: its payload as text when it is UTF-8, else in hex.
impl From<&Delivery> for DeliveryReport {
    fn from(d: &Delivery) -> Self {
        let text = std::str::from_utf8(&d.payload).ok().map(str::to_owned);
        let hex = match text {
            Some(_) => None,
            None => Some(d.payload.iter().map(|b| format!("{b:02x}")).collect()),
        };
        DeliveryReport {
            origin: d.sender.clone().unwrap_or_else(|| hex_id(&d.origin)),
            incarnation: d.incarnation,
            seq: d.seq,
            payload: text,
            payload_hex: hex,
        }
    }
}

/// A subscriber as the node's side holds it.
pub(crate) struct Subscriber {
    pub(crate) sink: SyncSender<Delivery>,
    /// For a bounded subscription: its bytes waiting, and their bound.
    pub(crate) bytes: Option<(Arc<AtomicUsize>, usize)>,
}

impl Subscriber {
    /// Whether its reader may still take deliveries. A bounded [`Subscription`] shares the
    /// byte count, so its end shows at once; a plain receiver shows its end only when a send
    /// finds it gone.
    pub(crate) fn is_held(&self) -> bool {
        self.bytes
            .as_ref()
            .is_none_or(|(queued, _)| Arc::strong_count(queued) > 1)
    }
}

/// A run asked of a peer through a [`Handle`].
#[derive(Debug)]
pub struct RunSession {
    /// The node's number for it.
    pub run: u64,
    /// What becomes of it, in order; the last is `Refused`, `Exited` or `Lost`. Output waits
    /// here until it is taken (the requester acknowledges output as it arrives, SPEC.md §23.4).
    /// A run with `sync` is `Exited` once the directory has caught up with the peer's copy
    /// (the copy named: what the program wrote is back), or could not (no copy named: the
    /// node's log says why); the directory is no longer replicated after its last run.
    pub events: Receiver<RunEventKind>,
}

/// Why a request did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The node's event loop has ended.
    #[error("the node is not running")]
    Stopped,
    /// The node refused the request.
    #[error("{0}")]
    Refused(InputError),
    /// The node took the write and flooded it, but could not store it: a restart before a
    /// later store succeeds loses it here (SPEC.md §19.11).
    #[error("written but not stored: {0}")]
    NotStored(String),
    /// `--sync` could not replicate the directory (one line).
    #[error("{0}")]
    Sync(String),
    /// The run was given up while it waited for its folder's scan; it was never asked for.
    #[error("the run was cancelled before it was asked of the peer")]
    Cancelled,
    /// A drop request failed (one line).
    #[error("{0}")]
    Drop(String),
    /// The node shares no folder (of its network: a resolve's).
    #[error("this node shares no folder")]
    NoFolder,
    /// Another node's lease covers the key.
    #[error("refused: the key is leased by {owner} until Unix ms {until_ms}")]
    Leased {
        /// The lease's owner.
        owner: NodeId,
        /// When the lease ends.
        until_ms: u64,
    },
}

/// A sync-table write through a [`Handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOp {
    /// Set the key, optionally leasing it.
    Set {
        /// The value.
        value: Vec<u8>,
        /// The lease's length.
        lease: Option<Duration>,
    },
    /// Delete the key.
    Delete,
    /// End this node's lease on the key.
    Release,
}

/// What a [`Handle::drop_request`] asks of the node's drops (SPEC.md §24).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropOp {
    /// Create a drop owned by this node whose folder is `dir` (absolute; made if absent).
    Create {
        /// The drop folder's directory.
        dir: std::path::PathBuf,
    },
    /// Hold `drop` as a subscriber, its folder at `dir` (absolute; empty or absent).
    Subscribe {
        /// The drop.
        drop: weft_engine::protocol::DropId,
        /// The drop folder's directory.
        dir: std::path::PathBuf,
    },
    /// Publish the drop whose folder is `dir` (absolute), once a scan of it has settled.
    Publish {
        /// The drop folder's directory.
        dir: std::path::PathBuf,
    },
    /// Publish `drop` with the linked peer `node` added to (`add`) or removed from its
    /// secondary owners, once a scan of its folder has settled.
    Owners {
        /// The drop.
        drop: weft_engine::protocol::DropId,
        /// The peer.
        node: NodeId,
        /// Add it (else remove it).
        add: bool,
    },
    /// Every held drop.
    Status,
    /// Put back what the version lists in the subscribed drop whose folder is `dir`
    /// (absolute), wherever a local edit was refused.
    Revert {
        /// The drop folder's directory.
        dir: std::path::PathBuf,
    },
}

/// The node's answer to a [`DropOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropAnswer {
    /// The drop was created.
    Created(weft_engine::protocol::DropId),
    /// The drop is held as a subscriber; its versions come from its holders.
    Subscribed,
    /// A version was published.
    Published {
        /// The drop.
        drop: weft_engine::protocol::DropId,
        /// The new version.
        version: weft_engine::protocol::VersionId,
        /// Its counter.
        counter: u64,
    },
    /// Every held drop.
    Status(Vec<DropReport>),
    /// A revert started: how many paths it puts back.
    Reverted(usize),
}

/// What the event loop is asked to do.
pub(crate) enum Request {
    Broadcast {
        payload: Bytes,
        reply: Option<Sender<Result<(), InputError>>>,
    },
    Subscribe(Subscriber),
    Hosts {
        reply: Sender<Vec<HostReport>>,
    },
    Stats {
        reply: Sender<StatsReport>,
    },
    Throughput {
        reply: Sender<Vec<ThroughputSample>>,
    },
    TableWrite {
        key: Vec<u8>,
        op: TableOp,
        reply: Sender<Result<(), HandleError>>,
    },
    /// One key (`Some`) or every key (`None`), within `bounds`.
    TableRead {
        key: Option<Vec<u8>>,
        bounds: crate::report::TableListBounds,
        reply: Sender<Vec<TableEntryReport>>,
    },
    Chord {
        op: ChordRequest,
        reply: Sender<Result<ChordResult, String>>,
    },
    Id {
        reply: Sender<IdReport>,
    },
    Connect {
        addr: String,
        reply: Sender<Result<(), InputError>>,
    },
    Disconnect {
        node: NodeId,
        reply: Sender<Result<(), InputError>>,
    },
    Shutdown,
    /// Ask `peer` to run a program; the run's number, and its events, go to `reply`.
    Run {
        peer: NodeId,
        program: String,
        args: Vec<String>,
        shell: bool,
        /// `--sync DIR`: the directory (canonical) to replicate to the peer first.
        sync: Option<std::path::PathBuf>,
        /// Set when the asker gave up: a run still waiting for its folder's scan is dropped.
        cancelled: Arc<AtomicBool>,
        reply: Sender<Result<RunSession, HandleError>>,
    },
    /// A run's asker gave up ([`Handle::cancel_run`]): wakes the loop to drop what waits.
    RunCancelled,
    /// Ask the peer to signal a run's process group.
    RunSignal {
        run: u64,
        signal: RunSignalKind,
    },
    /// A run's process thread answered the engine's request `id` for `process`.
    ProcessDone {
        process: u64,
        id: RequestId,
        result: ProcessResult,
    },
    /// Answers wait elsewhere for the loop (the state writer's): it takes them when it
    /// drains.
    Nudge,
    /// A storage worker finished the engine's request `id`.
    StorageDone {
        id: RequestId,
        result: HostResult,
    },
    /// A folder's scanner found `changes`; `cache` (if not empty) is its scan cache to keep
    /// in the store.
    FolderChanges {
        folder: FolderId,
        /// The scanner's number (`Folders::is_current`).
        scanner: u64,
        changes: Vec<LocalChange>,
        cache: Vec<u8>,
        /// When the scan started, if it found every file settled.
        settled: Option<std::time::Instant>,
        /// The folder's `.weftignore` rules, if they were read anew before the scan.
        rules: Option<IgnoreRules>,
    },
    /// A folder's root or marker is missing: the folder stops.
    FolderStopped {
        folder: FolderId,
        scanner: u64,
        why: String,
    },
    FolderStatus {
        files_max: Option<usize>,
        reply: Sender<Vec<FolderReport>>,
    },
    Resolve {
        path: String,
        keep: String,
        reply: Sender<Result<(), HandleError>>,
    },
    Drop {
        op: DropOp,
        reply: Sender<Result<DropAnswer, HandleError>>,
    },
}

/// How a sender wakes the event loop.
pub(crate) enum Wake {
    /// The mio loop's poll waker.
    #[cfg(feature = "mio")]
    Mio(mio::Waker),
    /// The waker of the task that runs the node, registered by its mailbox.
    #[cfg(feature = "tokio")]
    Task,
}

/// Requests waiting for the loop. The loop takes them all at once, so a sender only wakes the
/// loop when it finds the queue empty.
struct Queue {
    requests: Vec<Request>,
    /// False once the loop has ended: requests are refused.
    open: bool,
    /// The task waker, for [`Wake::Task`].
    task: Option<std::task::Waker>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when the loop takes the queue (senders wait for room on it).
    room: Condvar,
    wake: Wake,
}

impl Shared {
    /// The queue, even if a thread panicked while holding it (the queue stays consistent:
    /// every change is a single push or swap).
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cloneable, thread-safe way to talk to a running node.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// The event loop's end of the request queue; dropping it refuses further requests.
pub(crate) struct Mailbox {
    shared: Arc<Shared>,
}

/// A connected handle and mailbox.
pub(crate) fn channel(wake: Wake) -> (Handle, Mailbox) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            requests: Vec::new(),
            open: true,
            task: None,
        }),
        room: Condvar::new(),
        wake,
    });
    let handle = Handle {
        shared: Arc::clone(&shared),
    };
    (handle, Mailbox { shared })
}

impl Handle {
    fn send(&self, request: Request) -> Result<(), HandleError> {
        self.enqueue(request, true)
    }

    /// Queues `request` and wakes the loop; with the queue full, waits for room if `block`,
    /// else drops the request (the loop has requests to take, so it turns anyway).
    fn enqueue(&self, request: Request, block: bool) -> Result<(), HandleError> {
        let mut queue = self.shared.lock();
        while queue.open && queue.requests.len() >= REQUESTS_MAX {
            if !block {
                return Ok(());
            }
            queue = self
                .shared
                .room
                .wait(queue)
                .unwrap_or_else(|e| e.into_inner());
        }
        if !queue.open {
            return Err(HandleError::Stopped);
        }
        let was_empty = queue.requests.is_empty();
        queue.requests.push(request);
        #[cfg(feature = "tokio")]
        let task = queue.task.clone().filter(|_| was_empty);
        drop(queue);
        if !was_empty {
            return Ok(());
        }
        match &self.shared.wake {
            #[cfg(feature = "mio")]
            Wake::Mio(waker) => waker.wake().map_err(|_| HandleError::Stopped),
            #[cfg(feature = "tokio")]
            Wake::Task => {
                if let Some(task) = task {
                    task.wake();
                }
                Ok(())
            }
        }
    }

    /// Wakes the loop for answers waiting elsewhere, never blocking: with the queue full the
    /// loop has requests to take, and takes the answers when it does.
    pub(crate) fn nudge(&self) {
        // Stopped: nothing takes the answers any more.
        let _ = self.enqueue(Request::Nudge, false);
    }

    /// A run process's answer to the engine's request `id`.
    pub(crate) fn process_done(
        &self,
        process: u64,
        id: RequestId,
        result: ProcessResult,
    ) -> Result<(), HandleError> {
        self.send(Request::ProcessDone {
            process,
            id,
            result,
        })
    }

    /// Asks `peer` (linked) to run `program` with `args` (through `/bin/sh -c` with `shell`)
    /// and returns the run: its number and its events, which end with `Refused`, `Exited`
    /// or `Lost`. With `sync` (a canonical directory), the directory is replicated to the
    /// peer first and the program runs inside the peer's copy (SPEC.md §23.5).
    pub fn run(
        &self,
        peer: NodeId,
        program: String,
        args: Vec<String>,
        shell: bool,
        sync: Option<std::path::PathBuf>,
    ) -> Result<RunSession, HandleError> {
        let never = Arc::new(AtomicBool::new(false));
        self.run_cancellable(peer, program, args, shell, sync, never)
    }

    /// [`Handle::run`], given up once `cancelled` is set and [`Handle::cancel_run`] called:
    /// a run still waiting for its folder's scan is then never asked of the peer, and the
    /// answer is [`HandleError::Cancelled`]. (A run already asked for is not stopped by it:
    /// signal it.)
    pub fn run_cancellable(
        &self,
        peer: NodeId,
        program: String,
        args: Vec<String>,
        shell: bool,
        sync: Option<std::path::PathBuf>,
        cancelled: Arc<AtomicBool>,
    ) -> Result<RunSession, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Run {
            peer,
            program,
            args,
            shell,
            sync,
            cancelled,
            reply,
        })?;
        answer.recv().map_err(|_| HandleError::Stopped)?
    }

    /// Gives up the run asked with `cancelled` (see [`Handle::run_cancellable`]).
    pub fn cancel_run(&self, cancelled: &AtomicBool) -> Result<(), HandleError> {
        cancelled.store(true, Ordering::SeqCst);
        self.send(Request::RunCancelled)
    }

    /// Asks the peer running run `run` to signal its process group.
    pub fn run_signal(&self, run: u64, signal: RunSignalKind) -> Result<(), HandleError> {
        self.send(Request::RunSignal { run, signal })
    }

    /// A storage worker's answer to the engine's request `id`.
    pub(crate) fn storage_done(
        &self,
        id: RequestId,
        result: HostResult,
    ) -> Result<(), HandleError> {
        self.send(Request::StorageDone { id, result })
    }

    /// A folder scanner's findings (and its cache to persist, if not empty, and the folder's
    /// ignore rules, if they were read anew).
    pub(crate) fn folder_changes(
        &self,
        folder: FolderId,
        scanner: u64,
        changes: Vec<LocalChange>,
        cache: Vec<u8>,
        settled: Option<std::time::Instant>,
        rules: Option<IgnoreRules>,
    ) -> Result<(), HandleError> {
        self.send(Request::FolderChanges {
            folder,
            scanner,
            changes,
            cache,
            settled,
            rules,
        })
    }

    /// A folder can no longer be used (its root or marker is missing).
    pub(crate) fn folder_stopped(
        &self,
        folder: FolderId,
        scanner: u64,
        why: String,
    ) -> Result<(), HandleError> {
        self.send(Request::FolderStopped {
            folder,
            scanner,
            why,
        })
    }

    /// The shared folders and every file's state (with `files_max`, as
    /// [`crate::control::ControlRequest::Status`] says).
    pub fn folder_status(
        &self,
        files_max: Option<usize>,
    ) -> Result<Vec<FolderReport>, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::FolderStatus { files_max, reply })?;
        answer.recv().map_err(|_| HandleError::Stopped)
    }

    /// Keeps `keep` as the conflicted `path`'s content everywhere (in the node's shared
    /// folder), removing the other versions.
    pub fn resolve(&self, path: String, keep: String) -> Result<(), HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Resolve { path, keep, reply })?;
        answer.recv().map_err(|_| HandleError::Stopped)?
    }

    /// Carries out a drop request and waits for its answer (a publish: until a scan of the
    /// drop's folder has settled and the version is signed).
    pub fn drop_request(&self, op: DropOp) -> Result<DropAnswer, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Drop { op, reply })?;
        answer.recv().map_err(|_| HandleError::Stopped)?
    }

    /// Floods `payload` to the mesh and waits for the node to accept it.
    pub fn broadcast(&self, payload: Bytes) -> Result<(), HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Broadcast {
            payload,
            reply: Some(reply),
        })?;
        answer
            .recv()
            .map_err(|_| HandleError::Stopped)?
            .map_err(HandleError::Refused)
    }

    /// Floods `payload` without waiting for an answer (a refusal is only logged). Blocks while
    /// the node's request queue is full.
    pub fn broadcast_nowait(&self, payload: Bytes) -> Result<(), HandleError> {
        self.send(Request::Broadcast {
            payload,
            reply: None,
        })
    }

    /// Every broadcast delivered from now on. When `capacity` deliveries wait unread, later
    /// ones are dropped for this subscriber (and counted in `StatsReport::listener_drops`).
    /// Bounded by count only: for a reader in the application's own hands; one that may
    /// stall (a client on a socket) takes [`Handle::subscribe_bounded`].
    pub fn subscribe(&self, capacity: usize) -> Result<Receiver<Delivery>, HandleError> {
        let (sink, deliveries) = mpsc::sync_channel(capacity);
        self.send(Request::Subscribe(Subscriber { sink, bytes: None }))?;
        Ok(deliveries)
    }

    /// Every broadcast delivered from now on, at most `backlog` behind (in deliveries and in
    /// bytes); later ones are dropped for this subscriber and counted.
    pub fn subscribe_bounded(&self, backlog: Backlog) -> Result<Subscription, HandleError> {
        let (sink, deliveries) = mpsc::sync_channel(backlog.deliveries_max);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let bytes = Some((Arc::clone(&queued_bytes), backlog.bytes_max));
        self.send(Request::Subscribe(Subscriber { sink, bytes }))?;
        Ok(Subscription {
            deliveries,
            queued_bytes,
        })
    }

    /// Direct and heard-of hosts.
    pub fn hosts(&self) -> Result<Vec<HostReport>, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Hosts { reply })?;
        answer.recv().map_err(|_| HandleError::Stopped)
    }

    /// The node's and its connections' counters.
    pub fn stats(&self) -> Result<StatsReport, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Stats { reply })?;
        answer.recv().map_err(|_| HandleError::Stopped)
    }

    /// The node's byte totals sampled once a second over the last ten minutes, oldest first.
    pub fn throughput(&self) -> Result<Vec<ThroughputSample>, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Throughput { reply })?;
        answer.recv().map_err(|_| HandleError::Stopped)
    }

    /// A sync-table write; waits for the node to store it (or refuse it, e.g. under another
    /// node's lease). A node with no state folder keeps nothing: it answers as soon as it
    /// accepted the write, which is then not durable.
    pub fn table_write(&self, key: Vec<u8>, op: TableOp) -> Result<(), HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::TableWrite { key, op, reply })?;
        answer.recv().map_err(|_| HandleError::Stopped)?
    }

    /// The set table keys, all (`None`) or one.
    pub fn table_read(&self, key: Option<Vec<u8>>) -> Result<Vec<TableEntryReport>, HandleError> {
        self.table_read_within(key, crate::report::TableListBounds::default())
    }

    /// [`Handle::table_read`] within `bounds`: at most so many keys (the first, by key), and
    /// so many bytes of each value.
    pub fn table_read_within(
        &self,
        key: Option<Vec<u8>>,
        bounds: crate::report::TableListBounds,
    ) -> Result<Vec<TableEntryReport>, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::TableRead { key, bounds, reply })?;
        answer.recv().map_err(|_| HandleError::Stopped)
    }

    /// Runs a Chord put, get, delete or lookup and waits for its end (at most the node's
    /// `op_timeout`). The error is one line.
    pub fn chord(&self, op: ChordRequest) -> Result<ChordResult, String> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Chord { op, reply })
            .map_err(|e| e.to_string())?;
        answer
            .recv()
            .map_err(|_| HandleError::Stopped.to_string())?
    }

    /// Who the node is and what it holds, for `weft id`.
    pub fn id(&self) -> Result<IdReport, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Id { reply })?;
        answer.recv().map_err(|_| HandleError::Stopped)
    }

    /// Dials `addr` (`IP:PORT`) and waits for the node to accept the request (not for the
    /// link: it comes, or the dial fails, later).
    pub fn connect(&self, addr: String) -> Result<(), HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Connect { addr, reply })?;
        answer
            .recv()
            .map_err(|_| HandleError::Stopped)?
            .map_err(HandleError::Refused)
    }

    /// Closes the link to `node` (BYE first); refused if there is none.
    pub fn disconnect(&self, node: NodeId) -> Result<(), HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Disconnect { node, reply })?;
        answer
            .recv()
            .map_err(|_| HandleError::Stopped)?
            .map_err(HandleError::Refused)
    }

    /// Says BYE to every peer, flushes and ends the event loop (`Exit::Requested`).
    pub fn shutdown(&self) -> Result<(), HandleError> {
        self.send(Request::Shutdown)
    }
}

impl Mailbox {
    /// Registers the waker of the task that drains this mailbox.
    #[cfg(feature = "tokio")]
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        let mut queue = self.shared.lock();
        if !queue.task.as_ref().is_some_and(|old| old.will_wake(waker)) {
            queue.task = Some(waker.clone());
        }
    }

    /// Moves every waiting request into `into` (which should be empty).
    pub(crate) fn take(&self, into: &mut Vec<Request>) {
        let mut queue = self.shared.lock();
        let was_full = queue.requests.len() >= REQUESTS_MAX;
        std::mem::swap(&mut queue.requests, into);
        drop(queue);
        if was_full {
            self.shared.room.notify_all();
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.open = false;
        // Dropping waiting requests drops their reply senders: their callers see `Stopped`.
        let waiting = std::mem::take(&mut queue.requests);
        queue.task = None;
        drop(queue);
        self.shared.room.notify_all();
        drop(waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_carry_text_or_hex() {
        let d = |p: &'static [u8]| Delivery {
            origin: NodeId([0xab; 32]),
            incarnation: 2,
            seq: 7,
            payload: Bytes::from_static(p),
            sender: None,
        };
        let text = DeliveryReport::from(&d(b"hi"));
        assert_eq!(text.payload.as_deref(), Some("hi"));
        assert_eq!(text.payload_hex, None);
        assert_eq!(text.origin.len(), 64);
        let bin = DeliveryReport::from(&d(&[0xff, 0x00]));
        assert_eq!(bin.payload, None);
        assert_eq!(bin.payload_hex.as_deref(), Some("ff00"));
        let json = serde_json::to_string(&bin).unwrap();
        assert_eq!(serde_json::from_str::<DeliveryReport>(&json).unwrap(), bin);
    }
}
