//! `weft run --sync DIR` (SPEC.md §23.5, §23.6): a replicated folder of its own per synced
//! directory, added while the node runs on both nodes, and the run held until the runner's
//! copy has caught up with the requester's.
//!
//! Requester: the directory becomes the folder
//! `FolderId::from_name("run:<node hex>:<peer hex>:<path>")`, replicated with that peer alone
//! (its marker written, its state and scan cache kept in the store like any folder's); the
//! run is asked for once a scan that started after the request found every file settled, with
//! the sync point (index id, newest record's sequence). Runner: a RUN_REQUEST's folder it does
//! not hold is added under `<state folder>/runs/<folder hex>/`, replicated with the requester
//! alone (no other peer can put files into it); the spawn waits until the copy
//! has caught up (`Replica::caught_up`), at most [`RUN_SYNC_TIMEOUT`].
//!
//! When the process ends, the runner holds its exit until a scan after it found every file
//! settled, and sends it with its copy's sync point; the requester holds the exit from its
//! asker until its own copy has caught up with that point (what the program wrote is back),
//! then ends the folder: nothing more flows into the directory once its runs are over. The
//! runner ends its copy's folder [`RUN_FOLDER_LINGER`] after its last run there (sooner if the
//! requester is not linked, or if the room is needed for another run's folder).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use weft_engine::protocol::{ExitStatus, FolderId, NodeId, RunFolder, RunSignalKind, SyncPoint};
use weft_engine::replicate::{ReplicaConfig, ReplicateCommand, FOLDERS_MAX};
use weft_engine::run::{ProcessRequest, ProcessResult, RunCommand, RunEventKind};
use weft_engine::{Command, HostResult, Input, RequestId};

use super::Host;
use crate::folder::disk::Disk;
use crate::folder::run::FolderSpec;
use crate::handle::{HandleError, RunSession};

/// How long a run with a folder waits for the folder to catch up: on the runner, for its copy
/// to catch up with the requester's; on the requester, for a scan that finds every file
/// settled. Then the run is refused.
pub const RUN_SYNC_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a runner keeps a run's folder once no run of it is in progress: as long as its
/// requester may wait to fetch what the runs wrote. Sooner if the requester is not linked, or
/// when the room is needed for another run's folder.
pub const RUN_FOLDER_LINGER: Duration = RUN_SYNC_TIMEOUT;

/// Whether a runner's copy at `root` is gone: no such directory, or one with nothing in it
/// but weft's own reserved folder (`rm -rf copy/*` leaves that).
fn copy_is_gone(root: &Path) -> Result<bool, String> {
    let why = |e: std::io::Error| format!("{}: {e}", root.display());
    match std::fs::read_dir(root) {
        Ok(entries) => {
            for entry in entries {
                if entry.map_err(why)?.file_name() != crate::folder::RESERVED_DIR {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(why(e)),
    }
}

/// The folder of the directory `dir` (canonical) of node `me` synced to `peer`.
pub fn run_folder_id(me: &NodeId, peer: &NodeId, dir: &Path) -> FolderId {
    let hex = |n: &NodeId| -> String { n.0.iter().map(|b| format!("{b:02x}")).collect() };
    FolderId::from_name(&format!("run:{}:{}:{}", hex(me), hex(peer), dir.display()))
}

/// What a requester's run with a folder asks for, once its folder is scanned.
pub(super) struct WaitingRun {
    pub(super) peer: NodeId,
    pub(super) program: String,
    pub(super) args: Vec<String>,
    pub(super) shell: bool,
    /// Set when the asker gave up: the run is dropped, never asked for.
    pub(super) cancelled: Arc<AtomicBool>,
}

/// A requester's run waiting for its folder's scan.
pub(super) struct SyncWaiting {
    folder: FolderId,
    since: WallInstant,
    run: WaitingRun,
    reply: Sender<Result<RunSession, HandleError>>,
}

/// A run's events waiting for its asker, at most: each output piece is at most
/// `RUN_OUTPUT_BYTES_MAX` (64 KiB), so at most 64 MiB. The requester acknowledges output as it
/// arrives (SPEC.md §23.4): an asker reading more slowly than the run writes, past this, has
/// its run killed, as one that went away does.
pub(crate) const RUN_EVENTS_QUEUED_MAX: usize = 1024;

/// A runner's spawn waiting for its folder to catch up.
pub(super) struct HeldSpawn {
    id: RequestId,
    process: u64,
    request: ProcessRequest,
    requester: NodeId,
    folder: RunFolder,
    since: WallInstant,
}

/// A runner's exit of a process that ran in a folder, held until a scan of the folder after
/// the exit found every file settled.
struct HeldExit {
    id: RequestId,
    process: u64,
    status: ExitStatus,
    folder: FolderId,
    since: WallInstant,
}

/// A requester's exit of a run in a folder, held from its asker until this node's copy has
/// caught up with the runner's (`copy`).
struct WaitingExit {
    run: u64,
    status: ExitStatus,
    copy: SyncPoint,
    folder: FolderId,
    peer: NodeId,
    since: WallInstant,
    /// Decided (the copy named if it caught up), and waiting for room in its asker's queue.
    told: Option<Option<SyncPoint>>,
}

/// A folder added for runs: who it is replicated with, which side this node is, and since
/// when no run of it has been in progress.
struct RunFolderUse {
    peer: NodeId,
    /// This node asks for the runs (`weft run --sync`); else it carries them out.
    asks: bool,
    idle_since: Option<WallInstant>,
}

/// Runs in folders, both sides: what waits, and which folders are in use.
#[derive(Default)]
pub(super) struct RunSyncs {
    /// Runs with `--sync` waiting for their folder's scan (this node asks).
    waiting: Vec<SyncWaiting>,
    /// Spawns waiting for their folder to catch up (this node runs).
    spawns_held: Vec<HeldSpawn>,
    /// The folders added for runs, not the network's shared folder nor a drop's.
    folders: BTreeMap<FolderId, RunFolderUse>,
    /// The folder of each run asked for and not yet ended (this node asks).
    of_run: BTreeMap<u64, FolderId>,
    /// The folder of each process started and not yet exited (this node runs).
    of_process: BTreeMap<u64, FolderId>,
    exits_held: Vec<HeldExit>,
    exits_waiting: Vec<WaitingExit>,
}

impl RunSyncs {
    /// Whether `folder` was added for runs.
    pub(super) fn is_run_folder(&self, folder: &FolderId) -> bool {
        self.folders.contains_key(folder)
    }

    /// Whether a run of `folder` is in progress, on either side (its exit still held
    /// included).
    fn in_use(&self, folder: &FolderId) -> bool {
        self.waiting.iter().any(|w| w.folder == *folder)
            || self.spawns_held.iter().any(|h| h.folder.id == *folder)
            || self.of_run.values().any(|f| f == folder)
            || self.of_process.values().any(|f| f == folder)
            || self.exits_held.iter().any(|e| e.folder == *folder)
            || self.exits_waiting.iter().any(|e| e.folder == *folder)
    }

    /// Whether anything waits for time or the folders (the loop checks each turn).
    fn is_idle(&self) -> bool {
        self.waiting.is_empty()
            && self.spawns_held.is_empty()
            && self.exits_held.is_empty()
            && self.exits_waiting.is_empty()
            && self.folders.is_empty()
    }
}

impl Host {
    /// Adds `id` (rooted at `root`, made and marked if needed), replicated with `peer` alone,
    /// to the node while it runs, unless it holds it already; `asks`: this node asks for the
    /// runs in it.
    fn add_folder_now(
        &mut self,
        id: FolderId,
        root: PathBuf,
        peer: NodeId,
        asks: bool,
    ) -> Result<(), String> {
        if self.folders.holds(&id) {
            return Ok(());
        }
        // One the engine replicates already, though not here (a drop's whose map could not
        // be read): refused before anything is touched, its saved state above all (the add
        // would be refused `FolderExists` only after that state was forgotten).
        if self.node.replica(&id).is_some() {
            return Err(format!("folder {id} is replicated here already"));
        }
        let Some(handle) = self.handle.clone() else {
            return Err("this node keeps no folders".into());
        };
        let me = self.node.node_id();
        let mut config = ReplicaConfig::new(id, me);
        // A runner's copy that is gone (its root removed, or emptied) starts empty: its kept
        // state and scan cache would take every file they name for deleted there, and the
        // deletions would reach the requester's directory. (A copy that only lost its marker
        // keeps them: its files are still there.)
        if !asks && copy_is_gone(&root)? {
            self.forget_folder_state(&id, &config.state_name)?;
        }
        Disk::init(&root, &id.to_string()).map_err(|e| format!("{}: {e}", root.display()))?;
        config.only_with = Some(vec![peer]);
        let add = ReplicateCommand::AddFolder(config);
        self.input(Input::Command(Command::Replicate(add)))
            .map_err(|e| format!("folder {id}: {e}"))?;
        let cache = self.scan_cache(&id);
        tracing::info!("folder {id}: added at {} for a run", root.display());
        self.folders.add(FolderSpec { id, root }, cache, &handle);
        let used = RunFolderUse {
            peer,
            asks,
            idle_since: None,
        };
        self.syncs.folders.insert(id, used);
        Ok(())
    }

    /// Forgets what the store keeps of folder `id`: its replica state (`state_name`) and its
    /// scan cache, after every blob handed to the state writer before.
    pub(super) fn forget_folder_state(
        &mut self,
        id: &FolderId,
        state_name: &str,
    ) -> Result<(), String> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if let Some(writer) = &self.state_writer {
            writer.flush();
        }
        let cache = crate::folder::run::cache_blob_name(id);
        if store.remove(&[state_name, &cache])? {
            tracing::info!("folder {id}: its copy is gone: starts empty");
        }
        Ok(())
    }

    /// Ends a folder added for runs (no run of it is in progress): the node stops
    /// replicating it, its state and scan cache kept for the next run.
    fn end_run_folder(&mut self, folder: FolderId) {
        self.syncs.folders.remove(&folder);
        let remove = ReplicateCommand::RemoveFolder(folder);
        if let Err(e) = self.input(Input::Command(Command::Replicate(remove))) {
            tracing::warn!("folder {folder}: not removed from the node: {e}");
        }
        if let Some(blob) = self.folders.remove(&folder) {
            self.store_scan_cache(folder, blob);
        }
        self.folder_errors.retain(|(f, _), _| *f != folder);
        tracing::info!("folder {folder}: ended, no run of it is in progress");
    }

    /// Ends the run folders whose runs are over: at once where this node asked for them, or
    /// where the folder stopped (its root or marker went: the next run adds it again); where
    /// it ran them, once the requester is not linked or after [`RUN_FOLDER_LINGER`].
    fn end_idle_run_folders(&mut self) {
        let now = WallInstant::now();
        let mut ended = Vec::new();
        let ids: Vec<FolderId> = self.syncs.folders.keys().copied().collect();
        for id in ids {
            let busy = self.syncs.in_use(&id);
            let linked = |peer: NodeId| self.node.links().any(|(node, _)| node == peer);
            let stopped = self.folders.scanned_since(&id, now).is_err();
            let Some(used) = self.syncs.folders.get_mut(&id) else {
                continue;
            };
            if busy {
                used.idle_since = None;
                continue;
            }
            let idle_since = *used.idle_since.get_or_insert(now);
            if used.asks
                || stopped
                || !linked(used.peer)
                || now.duration_since(idle_since) >= RUN_FOLDER_LINGER
            {
                ended.push(id);
            }
        }
        for id in ended {
            self.end_run_folder(id);
        }
    }

    /// Makes room for one more folder when the node holds [`FOLDERS_MAX`]: ends an idle run
    /// folder this node runs in, one whose requester is not linked first, else the one idle
    /// longest (its requester may still be fetching what the last run wrote).
    fn make_room_for_a_run_folder(&mut self) {
        if self.folders.ids().len() < FOLDERS_MAX {
            return;
        }
        let now = WallInstant::now();
        let oldest = self
            .syncs
            .folders
            .iter()
            .filter(|(id, used)| !used.asks && !self.syncs.in_use(id))
            .min_by_key(|(_, used)| {
                let linked = self.node.links().any(|(node, _)| node == used.peer);
                (linked, used.idle_since.unwrap_or(now))
            })
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            tracing::info!("folder {id}: ended early, to make room for another run's folder");
            self.end_run_folder(id);
        }
    }

    /// Room for one more folder (`weft run --sync`, a drop's): an idle run folder ends to
    /// make it if need be; `Err` if the node holds [`FOLDERS_MAX`] folders in use (the
    /// engine would refuse the folder, a drop's silently).
    pub(super) fn room_for_a_folder(&mut self) -> Result<(), String> {
        self.make_room_for_a_run_folder();
        if self.folders.ids().len() >= FOLDERS_MAX {
            return Err(format!(
                "this node holds {FOLDERS_MAX} folders already, none of them an idle run's"
            ));
        }
        Ok(())
    }

    /// Whether `id` is a folder added for runs this node carries out (its copy under
    /// `runs/`, not a directory of this node's own it asked runs in) and replicated with
    /// `peer` alone.
    fn is_run_folder_of(&self, id: &FolderId, peer: &NodeId) -> bool {
        self.syncs.folders.get(id).is_some_and(|used| !used.asks)
            && self.node.replica(id).is_some_and(|r| {
                r.config().only_with.as_deref() == Some(std::slice::from_ref(peer))
            })
    }

    /// `weft run --sync DIR`: adds the directory's folder (if new), asks for a scan, and asks
    /// for the run once the scan is in the index.
    pub(super) fn run_with_sync(
        &mut self,
        dir: PathBuf,
        run: WaitingRun,
        reply: Sender<Result<RunSession, HandleError>>,
    ) {
        let since = WallInstant::now();
        let folder = run_folder_id(&self.node.node_id(), &run.peer, &dir);
        let state = self.store.as_ref().and_then(|s| s.state_folder());
        let checked = state
            .map_or(Ok(()), |state| {
                crate::folder::apart::keep_apart(&dir, &crate::state::own_folders(state))
            })
            .and_then(|()| {
                // Files others put in a folder around or inside it would reach the runner's
                // copy and run; the run's output would spread to them.
                self.refuse_overlap(&crate::folder::apart::real_path(&dir), Some(&folder))
            })
            .and_then(|()| match self.syncs.folders.get(&folder) {
                // Held for a peer's runs here (its id learned from an earlier request of
                // ours): not this directory.
                Some(used) if !used.asks => Err(format!(
                    "folder {folder} is held here for {}'s runs",
                    used.peer
                )),
                _ => Ok(()),
            });
        // Room last, once nothing refuses the run: an idle run folder ends to make it (none
        // needed for a folder held already, the same directory run again).
        let apart = checked.and_then(|()| {
            if self.folders.holds(&folder) {
                Ok(())
            } else {
                self.room_for_a_folder()
            }
        });
        if let Err(why) = apart.and_then(|()| self.add_folder_now(folder, dir, run.peer, true)) {
            let _ = reply.send(Err(HandleError::Sync(why)));
            return;
        }
        self.folders.scan_now(&folder);
        self.syncs.waiting.push(SyncWaiting {
            folder,
            since,
            run,
            reply,
        });
    }

    /// The runner's side of a spawn: one with a folder is held until the folder has caught
    /// up (the folder added first if this node does not hold it); `None` if it was held.
    pub(super) fn hold_spawn(
        &mut self,
        id: RequestId,
        process: u64,
        request: ProcessRequest,
    ) -> Option<ProcessRequest> {
        if matches!(request, ProcessRequest::Signal(RunSignalKind::Kill)) {
            // A kill before the program started (the requester interrupted, went away, or
            // gave up waiting): the held spawn is answered, and the program never starts.
            if let Some(at) = self
                .syncs
                .spawns_held
                .iter()
                .position(|h| h.process == process)
            {
                let h = self.syncs.spawns_held.remove(at);
                tracing::info!("run {process}: killed before it started");
                let refused = ProcessResult::NotStarted {
                    unknown_folder: false,
                    why: "killed before it started".into(),
                };
                self.answers.push((h.id, HostResult::Process(refused)));
            }
            return Some(request);
        }
        let ProcessRequest::Spawn {
            folder: Some(folder),
            requester,
            ..
        } = &request
        else {
            return Some(request);
        };
        let (folder, requester) = (*folder, *requester);
        if self.folders.holds(&folder.id) && !self.is_run_folder_of(&folder.id, &requester) {
            // The network's shared folder, say, or another requester's run folder: others
            // may put files there, so it is no place to run this requester's program.
            let refused = ProcessResult::NotStarted {
                unknown_folder: true,
                why: format!("folder {} is not a run folder of this requester", folder.id),
            };
            self.answers.push((id, HostResult::Process(refused)));
            return None;
        }
        if !self.folders.holds(&folder.id) {
            let root = self
                .store
                .as_ref()
                .and_then(|s| s.state_folder())
                .map(|dir| dir.join("runs").join(folder.id.to_string()));
            self.make_room_for_a_run_folder();
            let added = match root {
                Some(root) => self.add_folder_now(folder.id, root, requester, false),
                None => Err("this node keeps no state folder".into()),
            };
            if let Err(why) = added {
                let refused = ProcessResult::NotStarted {
                    unknown_folder: true,
                    why: format!("cannot add folder {}: {why}", folder.id),
                };
                self.answers.push((id, HostResult::Process(refused)));
                return None;
            }
        }
        self.syncs.spawns_held.push(HeldSpawn {
            id,
            process,
            request,
            requester,
            folder,
            since: WallInstant::now(),
        });
        None
    }

    /// Starts the held runs whose folders are ready, and refuses those that waited too long
    /// or whose folder stopped; answers the held exits whose folders are scanned or caught
    /// up; ends the run folders no run uses any more. Whether it fed the node anything.
    pub(super) fn check_held(&mut self) -> bool {
        if self.syncs.is_idle() {
            return false;
        }
        let fed = self.check_syncs_waiting() | self.check_spawns_held() | self.check_exits_held();
        self.check_exits_waiting();
        self.end_idle_run_folders();
        fed
    }

    /// The requester's runs waiting for their folder's scan.
    fn check_syncs_waiting(&mut self) -> bool {
        let mut fed = false;
        for w in std::mem::take(&mut self.syncs.waiting) {
            if w.run.cancelled.load(Ordering::SeqCst) {
                tracing::info!(
                    "run with folder {}: cancelled before it was asked",
                    w.folder
                );
                let _ = w.reply.send(Err(HandleError::Cancelled));
                continue;
            }
            let outcome = match self.folders.scanned_since(&w.folder, w.since) {
                Ok(true) => Some(Ok(())),
                Ok(false) if w.since.elapsed() >= RUN_SYNC_TIMEOUT => Some(Err(format!(
                    "folder {} was not scanned within {} s",
                    w.folder,
                    RUN_SYNC_TIMEOUT.as_secs()
                ))),
                Ok(false) => None,
                Err(why) => Some(Err(format!("folder {}: {why}", w.folder))),
            };
            match outcome {
                None => self.syncs.waiting.push(w),
                Some(Err(why)) => {
                    let _ = w.reply.send(Err(HandleError::Sync(why)));
                }
                Some(Ok(())) => {
                    let point = self.node.replica(&w.folder).map(|r| RunFolder {
                        id: w.folder,
                        index_id: r.index_id(),
                        sequence: r.newest_sequence(),
                    });
                    let Some(point) = point else {
                        let why = format!("folder {} is not in the node", w.folder);
                        let _ = w.reply.send(Err(HandleError::Sync(why)));
                        continue;
                    };
                    tracing::info!(
                        "run with folder {}: the peer must catch up to sequence {}",
                        w.folder,
                        point.sequence
                    );
                    let r = w.run;
                    let started =
                        self.start_run(r.peer, r.program, r.args, r.shell, Some(point), w.reply);
                    if let Some(run) = started {
                        self.syncs.of_run.insert(run, w.folder);
                    }
                    fed = true;
                }
            }
        }
        fed
    }

    /// The runner's spawns waiting for their folder to catch up.
    fn check_spawns_held(&mut self) -> bool {
        let mut fed = false;
        for h in std::mem::take(&mut self.syncs.spawns_held) {
            let f = h.folder;
            let linked = self.node.links().any(|(node, _)| node == h.requester);
            let caught_up = self
                .node
                .replica(&f.id)
                .is_some_and(|r| r.caught_up(&h.requester, f.index_id, f.sequence));
            let stopped = self.folders.scanned_since(&f.id, h.since).err();
            // A requester gone is refused first: its program is not started for no one.
            let refusal = if !linked {
                Some("the requester went away".to_string())
            } else if caught_up {
                None
            } else if let Some(why) = stopped {
                Some(format!("folder {}: {why}", f.id))
            } else if h.since.elapsed() >= RUN_SYNC_TIMEOUT {
                Some(format!(
                    "folder {} did not catch up with the requester within {} s",
                    f.id,
                    RUN_SYNC_TIMEOUT.as_secs()
                ))
            } else {
                self.syncs.spawns_held.push(h);
                continue;
            };
            fed = true;
            match refusal {
                Some(why) => {
                    tracing::info!("run {}: {why}", h.process);
                    let refused = ProcessResult::NotStarted {
                        unknown_folder: false,
                        why,
                    };
                    self.answers.push((h.id, HostResult::Process(refused)));
                }
                None => {
                    tracing::info!(
                        "run {}: folder {} caught up to sequence {}",
                        h.process,
                        f.id,
                        f.sequence
                    );
                    self.syncs.of_process.insert(h.process, f.id);
                    self.spawn_now(h.id, h.process, h.request);
                }
            }
        }
        fed
    }

    /// The runner: process `process` ended with `status`. One that ran in a folder is held
    /// (`None` returned) until a scan after its exit found every file settled; else its
    /// answer is returned.
    pub(super) fn hold_exit(
        &mut self,
        id: RequestId,
        process: u64,
        status: ExitStatus,
    ) -> Option<ProcessResult> {
        let Some(folder) = self.syncs.of_process.remove(&process) else {
            return Some(ProcessResult::Exited { status, copy: None });
        };
        self.folders.scan_now(&folder);
        self.syncs.exits_held.push(HeldExit {
            id,
            process,
            status,
            folder,
            since: WallInstant::now(),
        });
        None
    }

    /// The runner: a process of a folder that could not be started holds it no more.
    pub(super) fn not_started(&mut self, process: u64) {
        self.syncs.of_process.remove(&process);
    }

    /// The runner's exits held for their folder's scan: each is answered with the copy's
    /// sync point once scanned, or without one if the folder stopped or the scan took longer
    /// than [`RUN_SYNC_TIMEOUT`].
    fn check_exits_held(&mut self) -> bool {
        let mut fed = false;
        for e in std::mem::take(&mut self.syncs.exits_held) {
            let copy = match self.folders.scanned_since(&e.folder, e.since) {
                Ok(true) => self.node.replica(&e.folder).map(|r| SyncPoint {
                    index_id: r.index_id(),
                    sequence: r.newest_sequence(),
                }),
                Ok(false) if e.since.elapsed() < RUN_SYNC_TIMEOUT => {
                    self.syncs.exits_held.push(e);
                    continue;
                }
                Ok(false) => {
                    tracing::warn!(
                        "run {}: folder {} was not scanned within {} s of the exit",
                        e.process,
                        e.folder,
                        RUN_SYNC_TIMEOUT.as_secs()
                    );
                    None
                }
                Err(why) => {
                    tracing::warn!("run {}: folder {}: {why}", e.process, e.folder);
                    None
                }
            };
            let exited = ProcessResult::Exited {
                status: e.status,
                copy,
            };
            self.answers.push((e.id, HostResult::Process(exited)));
            fed = true;
        }
        fed
    }

    /// The requester: run `run` ended with `kind` (its last event). The exit of a run in a
    /// folder whose runner named its copy is held (`None` returned) until this node's copy
    /// has caught up with it; else the event is returned to be handed on now.
    pub(super) fn hold_run_end(&mut self, run: u64, kind: RunEventKind) -> Option<RunEventKind> {
        let Some(folder) = self.syncs.of_run.remove(&run) else {
            return Some(kind);
        };
        let (
            RunEventKind::Exited {
                status,
                copy: Some(copy),
            },
            Some(peer),
        ) = (&kind, self.syncs.folders.get(&folder).map(|u| u.peer))
        else {
            if matches!(kind, RunEventKind::Exited { copy: None, .. }) {
                tracing::warn!(
                    "run {run}: the runner did not scan its copy of folder {folder} after the \
                     exit: what the program wrote may not all be back"
                );
            }
            return Some(kind);
        };
        tracing::info!(
            "run {run}: exited; folder {folder} must catch up to the runner's sequence {}",
            copy.sequence
        );
        self.syncs.exits_waiting.push(WaitingExit {
            run,
            status: *status,
            copy: *copy,
            folder,
            peer,
            since: WallInstant::now(),
            told: None,
        });
        None
    }

    /// The requester's exits held for their folder to catch up: each goes to its asker once
    /// caught up (with the copy named), or without the copy if the runner went away, the
    /// folder stopped, or [`RUN_SYNC_TIMEOUT`] passed.
    fn check_exits_waiting(&mut self) {
        for mut e in std::mem::take(&mut self.syncs.exits_waiting) {
            if let Some(copy) = e.told {
                self.tell_exit(e, copy);
                continue;
            }
            let caught_up = self
                .node
                .replica(&e.folder)
                .is_some_and(|r| r.holds_all_of(&e.peer, e.copy.index_id, e.copy.sequence));
            let linked = self.node.links().any(|(node, _)| node == e.peer);
            let failed = if caught_up {
                None
            } else if let Err(why) = self.folders.scanned_since(&e.folder, e.since) {
                Some(why)
            } else if !linked {
                Some("the link to the runner went".to_string())
            } else if e.since.elapsed() >= RUN_SYNC_TIMEOUT {
                Some(format!(
                    "it did not catch up with the runner's copy within {} s",
                    RUN_SYNC_TIMEOUT.as_secs()
                ))
            } else {
                self.syncs.exits_waiting.push(e);
                continue;
            };
            let copy = match failed {
                None => {
                    tracing::info!(
                        "run {}: folder {} caught up to the runner's sequence {}",
                        e.run,
                        e.folder,
                        e.copy.sequence
                    );
                    Some(e.copy)
                }
                Some(why) => {
                    tracing::warn!(
                        "run {}: folder {}: what the program wrote is not all back: {why}",
                        e.run,
                        e.folder
                    );
                    None
                }
            };
            e.told = Some(copy);
            self.tell_exit(e, copy);
        }
    }

    /// Hands the exit `e` (with `copy`) to its asker; kept for a later turn while the
    /// asker's queue is full (its folder stays in use meanwhile).
    fn tell_exit(&mut self, e: WaitingExit, copy: Option<SyncPoint>) {
        let exited = RunEventKind::Exited {
            status: e.status,
            copy,
        };
        let sent = self.runs_waiting.get(&e.run).map(|w| w.try_send(exited));
        if let Some(Err(std::sync::mpsc::TrySendError::Full(_))) = sent {
            self.syncs.exits_waiting.push(e);
            return;
        }
        self.runs_waiting.remove(&e.run);
    }

    /// Asks the node to start a run (`folder`: inside the peer's copy of it); its number if
    /// the node took it.
    pub(super) fn start_run(
        &mut self,
        peer: NodeId,
        program: String,
        args: Vec<String>,
        shell: bool,
        folder: Option<RunFolder>,
        reply: Sender<Result<RunSession, HandleError>>,
    ) -> Option<u64> {
        self.last_run += 1;
        let run = self.last_run;
        let start = RunCommand::Start {
            run,
            peer,
            program,
            args,
            shell,
            folder,
        };
        let (events, taken) = std::sync::mpsc::sync_channel(RUN_EVENTS_QUEUED_MAX);
        // Registered first: the command's own outputs may carry its first events.
        self.runs_waiting.insert(run, events);
        let result = self.input(Input::Command(Command::Run(start)));
        let (answer, started) = match result {
            Ok(()) => (Ok(RunSession { run, events: taken }), Some(run)),
            Err(e) => {
                self.runs_waiting.remove(&run);
                (Err(HandleError::Refused(e)), None)
            }
        };
        let _ = reply.send(answer);
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_gone_when_missing_or_holding_only_the_reserved_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("copy");
        assert_eq!(copy_is_gone(&root), Ok(true), "missing");
        std::fs::create_dir(&root).expect("mkdir");
        assert_eq!(copy_is_gone(&root), Ok(true), "empty");
        std::fs::create_dir(root.join(crate::folder::RESERVED_DIR)).expect("mkdir");
        assert_eq!(copy_is_gone(&root), Ok(true), "only .weft (rm -rf copy/*)");
        std::fs::write(root.join(".hidden"), "x").expect("write");
        assert_eq!(copy_is_gone(&root), Ok(false), "a file left");
    }
}
