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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use weft_engine::protocol::{FolderId, NodeId, RunFolder};
use weft_engine::replicate::{ReplicaConfig, ReplicateCommand};
use weft_engine::run::{ProcessRequest, ProcessResult, RunCommand};
use weft_engine::{Command, HostResult, Input, RequestId};

use super::Host;
use crate::folder::disk::Disk;
use crate::folder::run::FolderSpec;
use crate::handle::{HandleError, RunSession};

/// How long a run with a folder waits for the folder to catch up: on the runner, for its copy
/// to catch up with the requester's; on the requester, for a scan that finds every file
/// settled. Then the run is refused.
pub const RUN_SYNC_TIMEOUT: Duration = Duration::from_secs(600);

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

impl Host {
    /// Adds `id` (rooted at `root`, made and marked if needed), replicated with `peer` alone,
    /// to the node while it runs, unless it holds it already.
    fn add_folder_now(&mut self, id: FolderId, root: PathBuf, peer: NodeId) -> Result<(), String> {
        if self.folders.holds(&id) {
            return Ok(());
        }
        let Some(handle) = self.handle.clone() else {
            return Err("this node keeps no folders".into());
        };
        Disk::init(&root, &id.to_string()).map_err(|e| format!("{}: {e}", root.display()))?;
        let me = self.node.node_id();
        let mut config = ReplicaConfig::new(id, me);
        config.only_with = Some(vec![peer]);
        let add = ReplicateCommand::AddFolder(config);
        self.input(Input::Command(Command::Replicate(add)))
            .map_err(|e| format!("folder {id}: {e}"))?;
        let cache = self.scan_cache(&id);
        tracing::info!("folder {id}: added at {} for a run", root.display());
        self.folders.add(FolderSpec { id, root }, cache, &handle);
        self.run_folders.insert(id);
        Ok(())
    }

    /// Whether `id` is a folder added for runs and replicated with `peer` alone.
    fn is_run_folder_of(&self, id: &FolderId, peer: &NodeId) -> bool {
        self.run_folders.contains(id)
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
        if let Err(why) = self.add_folder_now(folder, dir, run.peer) {
            let _ = reply.send(Err(HandleError::Sync(why)));
            return;
        }
        self.folders.scan_now(&folder);
        self.syncs_waiting.push(SyncWaiting {
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
            let added = match root {
                Some(root) => self.add_folder_now(folder.id, root, requester),
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
        self.spawns_held.push(HeldSpawn {
            id,
            process,
            request,
            requester,
            folder,
            since: WallInstant::now(),
        });
        None
    }

    /// Starts the held runs whose folders are ready; refuses those that waited too long or
    /// whose folder stopped. Whether it fed the node anything.
    pub(super) fn check_held(&mut self) -> bool {
        if self.syncs_waiting.is_empty() && self.spawns_held.is_empty() {
            return false;
        }
        let mut fed = false;
        for w in std::mem::take(&mut self.syncs_waiting) {
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
                None => self.syncs_waiting.push(w),
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
                    self.start_run(r.peer, r.program, r.args, r.shell, Some(point), w.reply);
                    fed = true;
                }
            }
        }
        for h in std::mem::take(&mut self.spawns_held) {
            let f = h.folder;
            let linked = self.node.links().any(|(node, _)| node == h.requester);
            let caught_up = self
                .node
                .replica(&f.id)
                .is_some_and(|r| r.caught_up(&h.requester, f.index_id, f.sequence));
            let stopped = self.folders.scanned_since(&f.id, h.since).err();
            let refusal = if caught_up {
                None
            } else if let Some(why) = stopped {
                Some(format!("folder {}: {why}", f.id))
            } else if !linked {
                Some("the requester went away".to_string())
            } else if h.since.elapsed() >= RUN_SYNC_TIMEOUT {
                Some(format!(
                    "folder {} did not catch up with the requester within {} s",
                    f.id,
                    RUN_SYNC_TIMEOUT.as_secs()
                ))
            } else {
                self.spawns_held.push(h);
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
                    self.spawn_now(h.id, h.process, h.request);
                }
            }
        }
        fed
    }

    /// Asks the node to start a run (`folder`: inside the peer's copy of it).
    pub(super) fn start_run(
        &mut self,
        peer: NodeId,
        program: String,
        args: Vec<String>,
        shell: bool,
        folder: Option<RunFolder>,
        reply: Sender<Result<RunSession, HandleError>>,
    ) {
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
        let answer = match result {
            Ok(()) => Ok(RunSession { run, events: taken }),
            Err(e) => {
                self.runs_waiting.remove(&run);
                Err(HandleError::Refused(e))
            }
        };
        let _ = reply.send(answer);
    }
}
