//! A node's shared folders while it runs: a small pool of worker threads carries out the
//! engine's storage steps off the event loop, and one scanner thread per folder finds local
//! changes (woken by the `notify` watcher, with a full rescan every [`RESCAN_PERIOD`] as a
//! fallback). Both talk to the loop through the node's [`Handle`], so neither ever blocks it.
//!
//! A folder whose root or marker goes missing is stopped with an error: its steps are
//! refused, and the scanner reports nothing (never "everything was deleted").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use weft_engine::protocol::FolderId;
use weft_engine::replicate::paths::{IgnoreRules, IGNORE_FILE};
use weft_engine::replicate::{
    LocalChange, Record, StorageError, StorageRequest, StorageResult, TempId,
};
use weft_engine::{HostResult, RequestId};

use super::cache::{Cache, SharedCache};
use super::disk::Disk;
use super::ignore_file::IgnoreFile;
use super::scan::{ScanError, Scanner, STABLE_MS};
use crate::clock;
use crate::handle::Handle;

/// Worker threads carrying out storage steps, for all of a node's folders.
pub const WORKERS: usize = 4;

/// A full rescan runs at least this often, whatever the watcher says.
pub const RESCAN_PERIOD: Duration = Duration::from_secs(60);

/// After storage steps wrote to a folder, its scan cache is persisted at most this often
/// (after a scan that found local changes, at once; and when the node stops).
pub const CACHE_PERSIST_WAIT: Duration = Duration::from_secs(5);

/// The wait before a failed scan is tried again (a missing root or marker stops the folder
/// instead); doubled by each failure in a row, up to [`RESCAN_PERIOD`].
pub const SCAN_RETRY_FIRST: Duration = Duration::from_secs(1);

/// A folder's trash is pruned after its first scan and then at most this often.
pub const TRASH_PRUNE_PERIOD: Duration = Duration::from_secs(60);

/// Paths newly skipped that one scan logs as warnings; the rest go at debug level, counted
/// in one more warning.
pub const SKIPPED_WARNED_MAX: usize = 100;

/// How long the scanner waits after a watcher event for more before it scans (a burst of
/// writes is scanned once).
pub const SETTLE_WAIT: Duration = Duration::from_millis(50);

/// A folder a node shares: its id and its root on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderSpec {
    /// The folder's id, the same on every node sharing it.
    pub id: FolderId,
    /// Its root directory.
    pub root: PathBuf,
}

/// The name of a folder's scan cache blob in the node's store.
pub fn cache_blob_name(id: &FolderId) -> String {
    format!("scan-{id}")
}

/// How many local changes a folder keeps while its state has not loaded, beyond one for
/// each path its scan cache holds (SPEC.md §22.10): past them it stops.
pub(crate) const EARLY_CHANGES_MAX: usize = 65_536;

/// One storage step for a worker.
struct Job {
    id: RequestId,
    disk: Arc<Disk>,
    request: StorageRequest,
}

/// One running folder, as the loop sees it.
struct Running {
    root: PathBuf,
    disk: Arc<Disk>,
    /// Ignore rules and local changes found before the engine loaded the folder's state, fed
    /// once it has.
    early: Due,
    ready: bool,
    /// Why the folder stopped, if it did.
    stopped: Option<String>,
    scanner: Option<ScannerThread>,
    /// The number its scanner reports under.
    scanner_number: u64,
    /// When the last scan that found every file settled started.
    settled_scan: Option<std::time::Instant>,
    /// Whether its scan cache was loaded from the store (else it starts empty).
    cache_loaded: bool,
}

/// What is due to the engine for a folder: its ignore rules if they were read anew (fed
/// first), then the scanner's changes.
#[derive(Debug, Default)]
pub(crate) struct Due {
    pub(crate) rules: Option<IgnoreRules>,
    pub(crate) changes: Vec<LocalChange>,
}

/// The loop's side of a node's folders.
#[derive(Default)]
pub(crate) struct Folders {
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    /// Set at shutdown, before the queue closes: a worker then carries out no step still
    /// queued (the queue hands them out before it says it is closed), so none lands on disk
    /// after the node's last state write.
    closed: Arc<AtomicBool>,
    running: BTreeMap<FolderId, Running>,
    /// Scanners of removed folders, told to stop: each ends after the scan it may be in
    /// (joined at shutdown, never waited for on the loop).
    stopping: Vec<ScannerThread>,
    /// The number the next scanner reports under: what a removed folder's scanner still
    /// reports is told from what the folder's next one does.
    next_scanner: u64,
}

impl Folders {
    /// Starts `specs`: the worker pool (if there is a folder) and a scanner per folder,
    /// each with the scan cache `caches` holds for it (else an empty one: every file is
    /// hashed once).
    pub(crate) fn start(
        specs: Vec<FolderSpec>,
        mut caches: impl FnMut(&FolderId) -> Option<Cache>,
        handle: &Handle,
    ) -> Folders {
        let mut folders = Folders::default();
        for spec in specs {
            let cache = caches(&spec.id);
            folders.add(spec, cache, handle);
        }
        folders
    }

    /// Whether `folder` is one of them.
    pub(crate) fn holds(&self, folder: &FolderId) -> bool {
        self.running.contains_key(folder)
    }

    /// Starts one more folder while the node runs (a remote run's folder, SPEC.md §23.5):
    /// its scanner, and the worker pool if it is the first. The caller adds it to the node.
    pub(crate) fn add(&mut self, spec: FolderSpec, cache: Option<Cache>, handle: &Handle) {
        if self.running.contains_key(&spec.id) {
            return;
        }
        if self.jobs.is_none() {
            let (jobs, queue) = mpsc::channel::<Job>();
            let queue = Arc::new(Mutex::new(queue));
            for n in 0..WORKERS {
                let queue = Arc::clone(&queue);
                let handle = handle.clone();
                let closed = Arc::clone(&self.closed);
                let spawned = std::thread::Builder::new()
                    .name(format!("weft-disk-{n}"))
                    .spawn(move || work(&queue, &handle, &closed));
                match spawned {
                    Ok(t) => self.workers.push(t),
                    Err(e) => tracing::warn!("cannot start a storage worker: {e}"),
                }
            }
            self.jobs = Some(jobs);
        }
        let cache_loaded = cache.is_some();
        let cache = SharedCache::new(cache.unwrap_or_default());
        let disk =
            Arc::new(Disk::new(spec.root.clone(), cache.clone()).for_folder(spec.id.to_string()));
        self.next_scanner += 1;
        let number = self.next_scanner;
        let scanner = ScannerThread::spawn(&spec, number, cache, Arc::clone(&disk), handle.clone());
        self.running.insert(
            spec.id,
            Running {
                root: spec.root.clone(),
                disk,
                early: Due::default(),
                ready: false,
                stopped: None,
                scanner,
                scanner_number: number,
                settled_scan: None,
                cache_loaded,
            },
        );
    }

    /// Stops `folder` (a remote run's, once its run has ended): its scanner is told to stop,
    /// its steps still queued are carried out, and later ones are refused. Returns its scan
    /// cache as a blob to persist if storage steps wrote to it since it was last persisted.
    pub(crate) fn remove(&mut self, folder: &FolderId) -> Option<Vec<u8>> {
        let mut r = self.running.remove(folder)?;
        if let Some(s) = r.scanner.take() {
            s.tell_stop();
            self.stopping.push(s);
        }
        self.stopping.retain(|s| !s.has_ended());
        let cache = r.disk.cache();
        cache.is_written().then(|| cache.take_blob())
    }

    /// Whether `scanner` is `folder`'s scanner now (not that of an earlier time it was added).
    pub(crate) fn is_current(&self, folder: &FolderId, scanner: u64) -> bool {
        self.running
            .get(folder)
            .is_some_and(|r| r.scanner_number == scanner)
    }

    /// Asks `folder`'s scanner for a scan now.
    pub(crate) fn scan_now(&self, folder: &FolderId) {
        if let Some(s) = self.running.get(folder).and_then(|r| r.scanner.as_ref()) {
            let _ = s.wake.try_send(());
        }
    }

    /// A scan of `folder` that started at `started` found every file settled (none still
    /// being written).
    pub(crate) fn scan_settled(&mut self, folder: &FolderId, started: std::time::Instant) {
        if let Some(r) = self.running.get_mut(folder) {
            r.settled_scan = Some(started);
        }
    }

    /// Whether `folder`'s state is loaded and a scan that started at or after `since` found
    /// every file settled (so the engine's index holds every change made before `since`);
    /// `Err` if the folder stopped.
    pub(crate) fn scanned_since(
        &self,
        folder: &FolderId,
        since: std::time::Instant,
    ) -> Result<bool, String> {
        match self.running.get(folder) {
            None => Err(format!("no folder {folder}")),
            Some(r) => match &r.stopped {
                Some(why) => Err(why.clone()),
                None => Ok(r.ready && r.settled_scan.is_some_and(|at| at >= since)),
            },
        }
    }

    /// The folders' ids.
    pub(crate) fn ids(&self) -> Vec<FolderId> {
        self.running.keys().copied().collect()
    }

    /// Hands a storage step to the workers; `Err` with the answer if it cannot be.
    pub(crate) fn submit(
        &mut self,
        id: RequestId,
        folder: FolderId,
        request: StorageRequest,
    ) -> Result<(), HostResult> {
        let refuse = |why: &str| {
            Err(HostResult::Storage(StorageResult::Failed(
                StorageError::Io(why.to_string()),
            )))
        };
        let Some(running) = self.running.get(&folder) else {
            return refuse("no such folder on this node");
        };
        if let Some(why) = &running.stopped {
            return refuse(why);
        }
        let Some(jobs) = &self.jobs else {
            return refuse("no storage workers");
        };
        let job = Job {
            id,
            disk: Arc::clone(&running.disk),
            request,
        };
        jobs.send(job)
            .or_else(|_| refuse("the storage workers stopped"))
    }

    /// The engine loaded `folder`'s state, whose applies use the temporary files `temps`:
    /// any other temporary file is left over from before a crash and goes; a cached path the
    /// index does not hold as cached is hashed and reported again (`Cache::forget_unlike`,
    /// with `index` the replica's records), and, if the cache was loaded from the store, a
    /// path of `records` it lacks is looked at (`Cache::expect_present`: a deletion the index
    /// lost is then found); the rules and changes found before are due.
    pub(crate) fn on_ready<'a>(
        &mut self,
        folder: &FolderId,
        temps: &[TempId],
        index: impl Fn(&str) -> Option<Record>,
        records: impl Iterator<Item = &'a Record>,
    ) -> Due {
        match self.running.get_mut(folder) {
            // A folder stopped while it waited: nothing is fed to the engine.
            Some(r) if r.stopped.is_some() => Due::default(),
            Some(r) => {
                r.ready = true;
                let mut cache = r.disk.cache().lock();
                let (mut forgotten, times) = cache.forget_unlike(index);
                // Not with a cache rebuilt (none stored, or unreadable): it knows no mount
                // point, and a disk not mounted under the folder would be taken for deletes.
                if r.cache_loaded {
                    forgotten += cache.expect_present(records);
                }
                drop(cache);
                if forgotten > 0 {
                    tracing::info!(
                        "folder {folder}: {forgotten} cached paths unlike the index: looked at again"
                    );
                    r.disk.cache().mark_written();
                    if let Some(s) = &r.scanner {
                        let _ = s.wake.try_send(());
                    }
                }
                match r.disk.remove_stray_temps(temps) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("folder {folder}: removed {n} stray temporary files"),
                    Err(e) => tracing::warn!("folder {folder}: stray temporary files: {e}"),
                }
                // Files whose time alone differs from their records', reported first (what
                // the scanner found before comes after, and is newer).
                let mut due = std::mem::take(&mut r.early);
                if !times.is_empty() {
                    due.changes.splice(0..0, times);
                }
                due
            }
            None => Due::default(),
        }
    }

    /// Local changes the scanner found, with the ignore rules it read anew (if it did):
    /// those due now (the rest wait for the folder's state).
    pub(crate) fn on_changes(
        &mut self,
        folder: &FolderId,
        changes: Vec<LocalChange>,
        rules: Option<IgnoreRules>,
    ) -> Due {
        match self.running.get_mut(folder) {
            Some(r) if r.stopped.is_some() => Due::default(),
            Some(r) if r.ready => Due { rules, changes },
            Some(r) => {
                // A scan that found nothing new adds nothing: while the state does not load
                // (retried each second for as long as it fails) the list grows only with
                // what changes on disk, not by a `ScanDone` per scan. A store that never
                // answers would still let it grow without end: past one report of every
                // path the scanner knows (a first scan of a large folder) and
                // `EARLY_CHANGES_MAX` more, the folder stops (its changes are then found
                // again by the scan after a restart).
                let paths = r.disk.cache().lock().entries.len();
                if r.early.changes.len() + changes.len() > paths + EARLY_CHANGES_MAX {
                    let why = format!(
                        "its state did not load while more than {EARLY_CHANGES_MAX} local \
                         changes beyond one of each file waited for it (the node's store \
                         fails?); start the node again"
                    );
                    tracing::error!("folder {folder} stopped: {why}");
                    r.stopped = Some(why);
                    r.early = Due::default();
                    if let Some(s) = r.scanner.take() {
                        s.tell_stop();
                        self.stopping.push(s);
                    }
                    return Due::default();
                }
                for c in changes {
                    let repeated = matches!(c, LocalChange::ScanDone)
                        && matches!(r.early.changes.last(), Some(LocalChange::ScanDone));
                    if !repeated {
                        r.early.changes.push(c);
                    }
                }
                if rules.is_some() {
                    r.early.rules = rules;
                }
                Due::default()
            }
            None => Due::default(),
        }
    }

    /// The folder's root or marker went missing: it stops (until the node is started again).
    pub(crate) fn stop(&mut self, folder: &FolderId, why: String) {
        if let Some(r) = self.running.get_mut(folder) {
            if r.stopped.is_none() {
                tracing::error!("folder {folder} stopped: {why}");
                r.stopped = Some(why);
                r.early = Due::default();
            }
        }
    }

    /// Each folder: its id, its root, why it stopped (if it did), whether it is ready.
    pub(crate) fn list(&self) -> Vec<(FolderId, &Path, Option<&str>, bool)> {
        self.running
            .iter()
            .map(|(id, r)| (*id, r.root.as_path(), r.stopped.as_deref(), r.ready))
            .collect()
    }

    /// The scan caches storage steps wrote to since they were last persisted, as blobs to
    /// persist (the node is stopping).
    pub(crate) fn written_caches(&self) -> Vec<(FolderId, Vec<u8>)> {
        self.running
            .iter()
            .filter(|(_, r)| r.disk.cache().is_written())
            .map(|(id, r)| (*id, r.disk.cache().take_blob()))
            .collect()
    }

    /// Tells the workers to carry out no more steps (those in progress finish): before the
    /// node's last state write at an exit, so none lands on disk after it.
    pub(crate) fn close_workers(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Ends the scanners and the workers (steps in progress finish first).
    pub(crate) fn shut_down(&mut self) {
        self.close_workers();
        for r in self.running.values_mut() {
            if let Some(s) = r.scanner.take() {
                s.stop();
            }
        }
        for s in self.stopping.drain(..) {
            s.stop();
        }
        self.jobs = None;
        for t in self.workers.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Folders {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// A storage worker: takes steps until the queue closes (or the folders are `closed`).
fn work(queue: &Mutex<Receiver<Job>>, handle: &Handle, closed: &AtomicBool) {
    loop {
        // The lock is only held to take one job; a panic elsewhere cannot leave the
        // receiver inconsistent.
        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = job else {
            return;
        };
        if closed.load(Ordering::Relaxed) {
            return;
        }
        let now_ms = clock::unix_ms().map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
        // A panic in a step fails that step, not the worker: its answer still comes (the
        // node waits for every step's at a shutdown, and the worker takes the next).
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            job.disk.carry_out(&job.request, now_ms)
        }))
        .unwrap_or_else(|_| {
            StorageResult::Failed(StorageError::Io("the storage step panicked".into()))
        });
        tracing::trace!(
            "storage {} → {}",
            step_name(&job.request),
            result_name(&result)
        );
        if handle
            .storage_done(job.id, HostResult::Storage(result))
            .is_err()
        {
            return;
        }
    }
}

/// A folder's scanner thread and its watcher.
struct ScannerThread {
    stop: Arc<AtomicBool>,
    /// Wakes the scanner: one wake waits at most (more say nothing more).
    wake: SyncSender<()>,
    thread: Option<JoinHandle<()>>,
    /// Kept alive for as long as the scanner runs.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl ScannerThread {
    fn spawn(
        spec: &FolderSpec,
        number: u64,
        cache: SharedCache,
        disk: Arc<Disk>,
        handle: Handle,
    ) -> Option<ScannerThread> {
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let watcher = watch(spec, wake.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let mut scanner =
            Scanner::new(spec.root.clone(), cache.clone()).for_folder(spec.id.to_string());
        scanner.stop_with(Arc::clone(&stop));
        let folder = spec.id;
        let stopping = Arc::clone(&stop);
        let spawned = std::thread::Builder::new()
            .name(format!("weft-scan-{folder}"))
            .spawn(move || {
                let mut upkeep = Upkeep::new(cache, disk);
                scan_loop(
                    (folder, number),
                    &mut scanner,
                    &mut upkeep,
                    &handle,
                    &woken,
                    &stopping,
                );
            });
        match spawned {
            Ok(thread) => Some(ScannerThread {
                stop,
                wake,
                thread: Some(thread),
                _watcher: watcher,
            }),
            Err(e) => {
                tracing::warn!("folder {folder}: cannot start its scanner: {e}");
                None
            }
        }
    }

    /// Tells the scanner to stop after the scan it may be in, without waiting for it.
    fn tell_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.try_send(());
    }

    /// Whether its thread has ended.
    fn has_ended(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn stop(mut self) {
        self.tell_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches the folder recursively; every event that may be a local change wakes the
/// scanner ([`wakes_the_scanner`]). `None` (logged) if the watcher cannot start: the periodic
/// rescan still finds every change.
fn watch(spec: &FolderSpec, wake: SyncSender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let reserved = spec.root.join(super::RESERVED_DIR);
    let own = [
        reserved.join(super::TEMP_DIR),
        reserved.join(super::TRASH_DIR),
    ];
    let dropped = own.clone();
    let mut watcher = match notify::recommended_watcher(move |event| {
        if wakes_the_scanner(&event, &dropped) {
            let _ = wake.try_send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(
                "folder {}: no watcher ({e}); rescanning every {RESCAN_PERIOD:?}",
                spec.id
            );
            return None;
        }
    };
    if let Err(e) = watcher.watch(&spec.root, notify::RecursiveMode::Recursive) {
        tracing::warn!(
            "folder {}: cannot watch {} ({e}); rescanning every {RESCAN_PERIOD:?}",
            spec.id,
            spec.root.display()
        );
        return None;
    }
    // Nor are weft's own folders watched (every write of a fetch would be an event the
    // kernel queues and the watcher reads, only to drop it): if they are made again, they
    // are watched again, and `wakes_the_scanner` drops what comes from them.
    for dir in &own {
        let _ = watcher.unwatch(dir);
    }
    Some(watcher)
}

/// Whether a watcher event may be a local change the scanner has to look for. Not: a file
/// opened, read or closed without writing (serving a block to a peer opens its file), and
/// anything that only touches `own`, the folders weft writes its temporary files and trash
/// to (the scanner never reports them). An error (a lost event) always wakes it.
fn wakes_the_scanner(event: &notify::Result<notify::Event>, own: &[PathBuf]) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    let Ok(event) = event else {
        return true;
    };
    if let EventKind::Access(access) = event.kind {
        if access != AccessKind::Close(AccessMode::Write) {
            return false;
        }
    }
    event.paths.is_empty()
        || event
            .paths
            .iter()
            .any(|p| !own.iter().any(|dir| p.starts_with(dir)))
}

/// What the scanner thread keeps up besides scanning: the scan cache persisted, the trash
/// pruned.
struct Upkeep {
    cache: SharedCache,
    disk: Arc<Disk>,
    last_persist: Option<std::time::Instant>,
    last_prune: Option<std::time::Instant>,
}

impl Upkeep {
    fn new(cache: SharedCache, disk: Arc<Disk>) -> Upkeep {
        Upkeep {
            cache,
            disk,
            last_persist: None,
            last_prune: None,
        }
    }

    /// The cache as a blob to persist now (empty: not now): after a scan that found
    /// changes, or once storage steps wrote and [`CACHE_PERSIST_WAIT`] has passed since the
    /// last time.
    fn blob(&mut self, scan_changed: bool) -> Vec<u8> {
        let waited = self
            .last_persist
            .is_none_or(|at| at.elapsed() >= CACHE_PERSIST_WAIT);
        if !(scan_changed || (self.cache.is_written() && waited)) {
            return Vec::new();
        }
        self.last_persist = Some(std::time::Instant::now());
        self.cache.take_blob()
    }

    /// How long the next scan may wait at most: until a cache written since is due.
    fn wait_at_most(&self, wait: Duration) -> Duration {
        if self.cache.is_written() {
            wait.min(CACHE_PERSIST_WAIT)
        } else {
            wait
        }
    }

    /// Prunes the trash if [`TRASH_PRUNE_PERIOD`] has passed since the last time (at once
    /// the first time).
    fn prune(&mut self, folder: FolderId, now_ms: i64) {
        if self
            .last_prune
            .is_some_and(|at| at.elapsed() < TRASH_PRUNE_PERIOD)
        {
            return;
        }
        self.last_prune = Some(std::time::Instant::now());
        if let Err(e) = self.disk.prune_trash(now_ms) {
            tracing::warn!("folder {folder}: pruning the trash: {e}");
        }
    }
}

/// Scans at once, then whenever the watcher wakes it (after [`SETTLE_WAIT`]), when a file
/// that was still being written may have settled, when the cache is due to be persisted,
/// and every [`RESCAN_PERIOD`]. Before each scan it looks at the folder's `.weftignore`:
/// rules read anew go to the scanner at once and to the engine with the scan's changes.
/// After each it prunes the trash when that is due.
fn scan_loop(
    (folder, number): (FolderId, u64),
    scanner: &mut Scanner,
    upkeep: &mut Upkeep,
    handle: &Handle,
    woken: &Receiver<()>,
    stop: &AtomicBool,
) {
    let mut wait = Duration::ZERO;
    let mut first = true;
    let mut ignore_file = IgnoreFile::default();
    // Skipped paths already reported: each is a warning once, while it stays skipped.
    let mut skipped_reported: std::collections::BTreeSet<String> = Default::default();
    // Rules read but not yet handed to the loop (a scan failed meanwhile).
    let mut rules_unsent: Option<IgnoreRules> = None;
    // The wait after the next failed scan, doubled by each failure in a row.
    let mut retry = SCAN_RETRY_FIRST;
    loop {
        match woken.recv_timeout(wait) {
            Ok(()) => {
                // Let a burst of events settle, then take them all.
                std::thread::sleep(SETTLE_WAIT);
                while woken.try_recv().is_ok() {}
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now_ns = clock::unix_ms().map_or(i128::MAX, |ms| i128::from(ms) * 1_000_000);
        if let Some(refreshed) = ignore_file.refresh(scanner.root(), now_ns) {
            for problem in &refreshed.problems {
                tracing::warn!("folder {folder}: {IGNORE_FILE}: {problem}");
            }
            tracing::info!(
                "folder {folder}: {IGNORE_FILE}: {} rules in force",
                refreshed.rules.lines().len()
            );
            scanner.set_ignore_rules(refreshed.rules.clone());
            upkeep.disk.set_ignore_rules(refreshed.rules.clone());
            rules_unsent = Some(refreshed.rules);
        }
        let now_ms = clock::unix_ms().map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX));
        let started = std::time::Instant::now();
        match scanner.scan(now_ms) {
            Ok(outcome) => {
                let level_info = first || outcome.changes.len() > 1;
                first = false;
                let line = format!(
                    "folder {folder}: scanned {} files in {} ms ({} hashed, {} bytes; {} changes; {} still being written)",
                    outcome.files,
                    started.elapsed().as_millis(),
                    outcome.hashed_files,
                    outcome.hashed_bytes,
                    outcome.changes.len().saturating_sub(1),
                    outcome.unstable
                );
                if level_info {
                    tracing::info!("{line}");
                } else {
                    tracing::debug!("{line}");
                }
                let skipped_now: std::collections::BTreeSet<&String> =
                    outcome.skipped.iter().map(|(s, _)| s).collect();
                skipped_reported.retain(|p| skipped_now.contains(p));
                let mut warned = 0usize;
                for (path, why) in &outcome.skipped {
                    if !skipped_reported.insert(path.clone()) {
                        tracing::debug!("folder {folder}: skipped {path}: {why:?}");
                    } else if warned < SKIPPED_WARNED_MAX {
                        warned += 1;
                        tracing::warn!("folder {folder}: not shared, skipped: {path}: {why:?}");
                    } else {
                        warned += 1;
                        tracing::debug!("folder {folder}: not shared, skipped: {path}: {why:?}");
                    }
                }
                if warned > SKIPPED_WARNED_MAX {
                    tracing::warn!(
                        "folder {folder}: {} more paths newly skipped (each logged at debug level)",
                        warned - SKIPPED_WARNED_MAX
                    );
                }
                let blob = upkeep.blob(outcome.changes.len() > 1);
                let settled = (outcome.unstable == 0).then_some(started);
                if handle
                    .folder_changes(
                        folder,
                        number,
                        outcome.changes,
                        blob,
                        settled,
                        rules_unsent.take(),
                    )
                    .is_err()
                {
                    return;
                }
                wait = upkeep.wait_at_most(next_scan_wait(
                    outcome.unstable,
                    outcome.settles_at_ms,
                    now_ms,
                ));
                upkeep.prune(folder, now_ms);
                retry = SCAN_RETRY_FIRST;
            }
            // A scan that failed on its way (descriptors run out, an I/O error, a hashing
            // thread that panicked) recorded and reported nothing: it is tried again later,
            // and the folder runs on (each storage step checks the root and marker itself).
            Err(ScanError::Io(why)) => {
                tracing::warn!(
                    "folder {folder}: the scan failed, tried again in {} s: {why}",
                    retry.as_secs()
                );
                wait = retry;
                retry = (retry * 2).min(RESCAN_PERIOD);
            }
            // Told to stop (the node is stopping, the folder removed): nothing recorded.
            Err(ScanError::Stopped) => return,
            // A missing root or marker: the folder stops, and nothing turns into deletes.
            Err(e) => {
                let _ = handle.folder_stopped(folder, number, e.to_string());
                return;
            }
        }
    }
}

/// How long the scanner waits for its next scan when nothing wakes it: until the first file
/// still being written may have settled (`settles_at_ms`, and 1 ms more: the scan after it
/// must see it [`STABLE_MS`] old), at most [`STABLE_MS`] if other files changed while they
/// were hashed, else [`RESCAN_PERIOD`].
fn next_scan_wait(unstable: usize, settles_at_ms: Option<i64>, now_ms: i64) -> Duration {
    let stable = Duration::from_millis(u64::try_from(STABLE_MS).unwrap_or(1_000));
    if unstable == 0 {
        return RESCAN_PERIOD;
    }
    match settles_at_ms {
        Some(at) => {
            let ms = u64::try_from(at.saturating_add(1).saturating_sub(now_ms)).unwrap_or(0);
            Duration::from_millis(ms).min(stable)
        }
        None => stable,
    }
}

/// A step's name and path, for the log.
fn step_name(request: &StorageRequest) -> String {
    use StorageRequest as R;
    match request {
        R::LoadState => "LoadState".into(),
        R::PersistState { .. } => "PersistState".into(),
        R::ReadBlock { path, offset, len } => format!("ReadBlock {path} @{offset}+{len}"),
        R::WriteTemp { temp, offset, data } => {
            format!("WriteTemp {temp:?} @{offset}+{}", data.len())
        }
        R::Commit { path, .. } => format!("Commit {path}"),
        R::DiscardTemp { temp } => format!("DiscardTemp {temp:?}"),
        R::Remove { path, .. } => format!("Remove {path}"),
        R::Rename { from, to, .. } => format!("Rename {from} -> {to}"),
        R::MakeDir { path, .. } => format!("MakeDir {path}"),
        R::MakeSymlink { path, .. } => format!("MakeSymlink {path}"),
        R::SetMode { path, .. } => format!("SetMode {path}"),
    }
}

/// An answer's name, for the log.
fn result_name(result: &StorageResult) -> String {
    match result {
        StorageResult::Block(b) => format!("Block ({} bytes)", b.len()),
        StorageResult::Loaded(b) => format!("Loaded ({:?} bytes)", b.as_ref().map(|b| b.len())),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind};

    /// The number of the first scanner report of `folder` in `mailbox`, waited for.
    #[cfg(feature = "tokio")]
    fn first_report(mailbox: &crate::handle::Mailbox, folder: FolderId) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut taken = Vec::new();
            mailbox.take(&mut taken);
            for request in taken {
                if let crate::handle::Request::FolderChanges {
                    folder: f, scanner, ..
                } = request
                {
                    if f == folder {
                        return scanner;
                    }
                }
            }
            assert!(std::time::Instant::now() < deadline, "no scan report");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A folder removed and added again (a remote run's, run after run) has a scanner of
    /// another number: what the removed one still reports is told from the new one's.
    #[cfg(feature = "tokio")]
    #[test]
    fn a_folder_added_again_reports_under_a_new_scanner_number() {
        let (handle, mailbox) = crate::handle::channel(crate::handle::Wake::Task);
        let dir = tempfile::tempdir().expect("temp dir");
        let id = FolderId::from_name("run:test");
        Disk::init(dir.path(), &id.to_string()).expect("init");
        let spec = FolderSpec {
            id,
            root: dir.path().to_path_buf(),
        };
        let mut folders = Folders::default();
        folders.add(spec.clone(), None, &handle);
        let first = first_report(&mailbox, id);
        assert!(folders.is_current(&id, first));
        assert!(
            folders.remove(&id).is_none(),
            "nothing written to its cache"
        );
        assert!(!folders.is_current(&id, first));
        folders.add(spec, None, &handle);
        let second = first_report(&mailbox, id);
        assert_ne!(first, second);
        assert!(folders.is_current(&id, second));
        assert!(!folders.is_current(&id, first));
        folders.shut_down();
    }

    /// One folder at `root` whose state has not loaded, no scanner running.
    fn loading_folder(root: &Path) -> (FolderId, Folders) {
        let id = FolderId::from_name("early");
        let mut folders = Folders::default();
        folders.running.insert(
            id,
            Running {
                root: root.to_path_buf(),
                disk: Arc::new(Disk::new(root.to_path_buf(), SharedCache::default())),
                early: Due::default(),
                ready: false,
                stopped: None,
                scanner: None,
                scanner_number: 1,
                settled_scan: None,
                cache_loaded: false,
            },
        );
        (id, folders)
    }

    /// Scans before the folder's state loads keep what they found for the engine, but a scan
    /// that found nothing new adds nothing (a load that keeps failing grew the list by one
    /// `ScanDone` a scan, without end).
    #[test]
    fn changes_kept_before_the_state_loads_grow_only_with_what_changed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (id, mut folders) = loading_folder(dir.path());
        let removed = |p: &str| LocalChange::Removed { path: p.into() };
        for _ in 0..1_000 {
            let due = folders.on_changes(&id, vec![LocalChange::ScanDone], None);
            assert!(due.changes.is_empty());
        }
        folders.on_changes(&id, vec![removed("a"), LocalChange::ScanDone], None);
        folders.on_changes(&id, vec![LocalChange::ScanDone], None);
        let early = &folders.running[&id].early.changes;
        assert_eq!(
            early,
            &vec![LocalChange::ScanDone, removed("a"), LocalChange::ScanDone]
        );
    }

    /// A store that never answers the state load stops the folder once the changes waiting
    /// for it pass their limit: they are not kept without end.
    #[test]
    fn changes_waiting_for_a_state_that_never_loads_stop_the_folder_at_their_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (id, mut folders) = loading_folder(dir.path());
        // The scanner knows 500 paths: a report of each is kept beyond the limit.
        let known: usize = 500;
        {
            let cache = folders.running[&id].disk.cache();
            let mut cache = cache.lock();
            for k in 0..known {
                let entry = crate::folder::cache::CachedEntry {
                    kind: weft_engine::protocol::FileKind::Directory,
                    size: 0,
                    mtime_ns: 0,
                    ctime_ns: 0,
                    inode: k as u64,
                    mode: 7,
                    target: String::new(),
                    tier: 0,
                    blocks: Vec::new(),
                };
                cache.entries.insert(format!("known{k}"), entry);
            }
        }
        let removed = |k: usize| LocalChange::Removed {
            path: format!("f{k}"),
        };
        let batch = 500;
        let mut sent = 0;
        while sent + batch <= EARLY_CHANGES_MAX + known {
            let changes = (sent..sent + batch).map(removed).collect();
            assert!(folders.on_changes(&id, changes, None).changes.is_empty());
            sent += batch;
        }
        assert_eq!(folders.running[&id].early.changes.len(), sent);
        assert!(folders.running[&id].stopped.is_none());
        let changes = (sent..sent + batch).map(removed).collect();
        folders.on_changes(&id, changes, None);
        let r = &folders.running[&id];
        assert!(r.early.changes.is_empty(), "what waited is let go");
        let why = r.stopped.as_deref().expect("stopped");
        assert!(why.contains("did not load"), "{why}");
        assert!(folders.list()[0].2.is_some());
        // The state loading after all feeds nothing to the engine.
        let due = folders.on_ready(&id, &[], |_: &str| None, std::iter::empty::<&Record>());
        assert!(due.changes.is_empty() && due.rules.is_none());
    }

    fn event(kind: EventKind, path: &str) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind).add_path(PathBuf::from(path)))
    }

    #[test]
    fn the_next_scan_comes_when_the_first_file_being_written_settles() {
        let stable = Duration::from_millis(STABLE_MS as u64);
        // Nothing being written: the periodic rescan.
        assert_eq!(next_scan_wait(0, None, 5_000), RESCAN_PERIOD);
        // Written at 4_950, seen at 5_000: stable at 5_950, scanned at 5_951.
        assert_eq!(
            next_scan_wait(1, Some(4_950 + STABLE_MS), 5_000),
            Duration::from_millis(951)
        );
        // Already settled (the scan itself took long): at once.
        assert_eq!(next_scan_wait(1, Some(4_000), 5_000), Duration::ZERO);
        // Changed while hashed (no settle time known): a whole stability wait, never more.
        assert_eq!(next_scan_wait(1, None, 5_000), stable);
        assert_eq!(next_scan_wait(1, Some(9_000 + STABLE_MS), 5_000), stable);
    }

    #[test]
    fn reads_and_weft_own_files_do_not_wake_the_scanner() {
        let own = [
            PathBuf::from("/f/.weft/tmp"),
            PathBuf::from("/f/.weft/trash"),
        ];
        let wakes = |kind, path| wakes_the_scanner(&event(kind, path), &own);
        // A block served to a peer: its file opened, read, closed.
        assert!(!wakes(
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            "/f/a"
        ));
        assert!(!wakes(EventKind::Access(AccessKind::Read), "/f/a"));
        assert!(!wakes(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            "/f/a"
        ));
        // A fetch writing its temporary file, a replaced file going to the trash.
        assert!(!wakes(
            EventKind::Modify(ModifyKind::Any),
            "/f/.weft/tmp/00000001"
        ));
        assert!(!wakes(
            EventKind::Create(CreateKind::File),
            "/f/.weft/trash/a"
        ));
        // Local changes do: a write, a write closed, a new file, the marker removed.
        assert!(wakes(EventKind::Modify(ModifyKind::Any), "/f/a"));
        assert!(wakes(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "/f/a"
        ));
        assert!(wakes(EventKind::Create(CreateKind::File), "/f/d/b"));
        assert!(wakes(
            EventKind::Remove(notify::event::RemoveKind::File),
            "/f/.weft/folder"
        ));
        // A rename out of the temporary folder into place names both paths.
        let rename = notify::Event::new(EventKind::Modify(ModifyKind::Any))
            .add_path(PathBuf::from("/f/.weft/tmp/00000001"))
            .add_path(PathBuf::from("/f/a"));
        assert!(wakes_the_scanner(&Ok(rename), &own));
        // A lost event (the kernel's queue overflowed), or one with no path.
        assert!(wakes_the_scanner(
            &Err(notify::Error::generic("overflow")),
            &own
        ));
        assert!(wakes_the_scanner(
            &Ok(notify::Event::new(EventKind::Other)),
            &own
        ));
    }
}
