//! `weft drop` (SPEC.md §24) on the host's side: each drop's folder mapped to a directory.
//!
//! The engine's drops protocol adds a drop's folder to replication itself (gated, under
//! `DropId::folder_id`) when a drop is created or subscribed to, and again when it restores
//! its `drops` state blob. The host maps that folder id to a directory and runs its scanner
//! there like any shared folder, before the engine's first storage step for it: at once on
//! `create` and `subscribe` (the engine's storage steps wait in its outputs until the loop
//! drains them), and at start from the store blob [`DROP_FOLDERS_BLOB`], read before the
//! engine loads its drops. A publish waits for a scan of the folder that started after the
//! request and found every file settled, as `weft run --sync` does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant as WallInstant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weft_engine::drops::DropsCommand;
use weft_engine::protocol::{DropId, FolderId, PublicKey};
use weft_engine::replicate::ReplicaCommand;
use weft_engine::{Command, HostRequest, HostResult, Identity, Input, NodeId, ReplicateCommand};

use super::Host;
use crate::folder::cache::Cache;
use crate::folder::disk::Disk;
use crate::folder::run::{cache_blob_name, FolderSpec};
use crate::folder::{MARKER_FILE, RESERVED_DIR, TEMP_DIR, TRASH_DIR};
use crate::handle::{DropAnswer, DropOp, HandleError};
use crate::report::{hex_id, DropReport, FileReport, TrackerReport};

/// The store blob that maps each drop's folder to its directory (JSON, see [`Stored`]).
pub const DROP_FOLDERS_BLOB: &str = "drop-folders";

/// The store blob that records a drop folder being made (`weft drop create`, `subscribe`;
/// JSON, a [`MadeForDrop`]): stored before anything is made, removed once the folder is
/// mapped or what was made is taken back. One found at start is what a kill cut short: it
/// is taken back then (before, the directory was refused as "not empty" or "a weft folder
/// already" by every retry).
const DROP_PENDING_BLOB: &str = "drop-folder-pending";

/// The format of [`DROP_FOLDERS_BLOB`] this weft writes and reads.
const DROP_FOLDERS_FORMAT: u32 = 1;

/// How long a publish waits for a settled scan of the drop's folder; then it is refused.
pub const DROP_PUBLISH_SCAN_TIMEOUT: Duration = Duration::from_secs(100);

/// How this node came to hold a drop (an owner by creating it, else a subscriber until a
/// version names it an owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum DropRole {
    /// This node created it.
    Creator,
    /// This node subscribed to it.
    Subscriber,
}

/// A drop's folder as the host maps it.
#[derive(Debug, Clone)]
pub(super) struct DropFolder {
    drop: DropId,
    root: PathBuf,
    role: DropRole,
}

/// [`DROP_FOLDERS_BLOB`] as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    format: u32,
    drops: Vec<StoredDrop>,
}

/// One drop folder as stored.
#[derive(Debug, Serialize, Deserialize)]
struct StoredDrop {
    /// The drop's id, 64 hex digits.
    drop: String,
    /// Its folder's directory (canonical).
    dir: PathBuf,
    role: DropRole,
}

/// A publish waiting for a settled scan of its drop's folder.
pub(super) struct PublishWaiting {
    drop: DropId,
    since: WallInstant,
    /// A secondary owner to add (`true`) or remove.
    owner: Option<(PublicKey, bool)>,
    reply: Sender<Result<DropAnswer, HandleError>>,
}

/// What [`Host::new_drop_root`] made (or, stored as [`DROP_PENDING_BLOB`] before, is about
/// to make), taken back if the drop is not made after all.
#[derive(Debug, Default, Serialize, Deserialize)]
struct MadeForDrop {
    /// The drop's directory, as given.
    dir: PathBuf,
    /// The directories it made, deepest first.
    dirs: Vec<PathBuf>,
    /// The reserved folder, if it made it.
    reserved: Option<PathBuf>,
    /// The folder id the marker it writes names, once it is about to write it.
    marker: Option<String>,
}

impl MadeForDrop {
    /// Removes all it made, the marker included (only if it names the folder id it wrote,
    /// with the marker's half-written `.part`), each directory only if empty (nothing of
    /// the user's goes). Whether anything was removed.
    fn take_back(&self) -> bool {
        let mut removed = false;
        if let Some(id) = &self.marker {
            let reserved = self.dir.join(RESERVED_DIR);
            let marker = reserved.join(MARKER_FILE);
            if crate::folder::disk::marker_names(&marker, id).unwrap_or(false) {
                removed |= std::fs::remove_file(&marker).is_ok();
            }
            let part = reserved.join(format!("{MARKER_FILE}.part"));
            removed |= std::fs::remove_file(part).is_ok();
        }
        self.undo() || removed
    }

    /// Removes what was made, each only if still empty (nothing of the user's goes).
    /// Whether anything was removed.
    fn undo(&self) -> bool {
        let mut removed = false;
        if let Some(reserved) = &self.reserved {
            for dir in [
                reserved.join(TEMP_DIR),
                reserved.join(TRASH_DIR),
                reserved.clone(),
            ] {
                removed |= std::fs::remove_dir(dir).is_ok();
            }
        }
        for dir in &self.dirs {
            removed |= std::fs::remove_dir(dir).is_ok();
        }
        removed
    }
}

impl Host {
    /// Maps the drop folders the store lists (before the engine restores its drops, whose
    /// folders it adds itself), then takes back what a drop folder's making cut short by a
    /// kill left (not when the map could not be read: what is mapped is not known).
    pub(super) fn start_drop_folders(&mut self, handle: &crate::Handle) {
        self.map_stored_drop_folders(handle);
        if self.drop_folders_unreadable.is_none() {
            self.take_back_pending();
        }
    }

    /// Maps the drop folders the store lists.
    fn map_stored_drop_folders(&mut self, handle: &crate::Handle) {
        let Some(store) = &self.store else {
            return;
        };
        let name = DROP_FOLDERS_BLOB.to_owned();
        let unreadable = |host: &mut Self, why: String| {
            tracing::error!(
                "the stored drop folders could not be read ({why}): they are kept as they are, and no drop folder can be added in this run"
            );
            host.drop_folders_unreadable = Some(why);
        };
        let bytes = match store.carry_out(HostRequest::LoadState { name }) {
            HostResult::Loaded(Some(bytes)) => bytes,
            HostResult::Loaded(None) => return,
            other => return unreadable(self, format!("{other:?}")),
        };
        let stored: Stored = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => return unreadable(self, e.to_string()),
        };
        if stored.format != DROP_FOLDERS_FORMAT {
            return unreadable(self, format!("format {}", stored.format));
        }
        for s in stored.drops {
            let Ok(drop) = crate::cli::drop_id(&s.drop) else {
                tracing::warn!("drop folders: not a drop id: {:?}", s.drop);
                continue;
            };
            let id = drop.folder_id();
            let cache = self.scan_cache(&id);
            let spec = FolderSpec {
                id,
                root: s.dir.clone(),
            };
            self.folders.add(spec, cache, handle);
            tracing::info!("drop {drop}: folder at {}", s.dir.display());
            self.drop_folders.insert(
                id,
                DropFolder {
                    drop,
                    root: s.dir,
                    role: s.role,
                },
            );
        }
    }

    /// Once the engine has restored its drops: a drop folder the store maps to a drop the
    /// engine does not hold (a kill between the map's store, at once, and the engine's, a
    /// moment later) is subscribed to again if this node subscribed to it, else (a creation,
    /// whose secret nonce is lost) forgotten, its marker removed so the directory can be made
    /// a drop again. Before, the directory was refused as "a weft folder already" for good.
    pub(super) fn reconcile_drop_folders(&mut self) {
        if self.drop_folders_reconciled
            || self.drop_folders_unreadable.is_some()
            || !self.node.drops_durability().restored
        {
            return;
        }
        self.drop_folders_reconciled = true;
        let held: BTreeSet<DropId> = self.node.drop_ids().copied().collect();
        let stale: Vec<(FolderId, DropFolder)> = self
            .drop_folders
            .iter()
            .filter(|(_, d)| !held.contains(&d.drop))
            .map(|(id, d)| (*id, d.clone()))
            .collect();
        if stale.is_empty() {
            return;
        }
        for (id, d) in stale {
            if d.role == DropRole::Subscriber {
                let subscribe = DropsCommand::Subscribe { drop: d.drop };
                match self.input(Input::Command(Command::Drops(subscribe))) {
                    Ok(()) => {
                        tracing::warn!(
                            "drop {}: its folder at {} was mapped but the subscription not stored: subscribed again",
                            d.drop,
                            d.root.display()
                        );
                        continue;
                    }
                    Err(e) => tracing::warn!("drop {}: not subscribed again: {e}", d.drop),
                }
            }
            let _ = self.folders.remove(&id);
            self.drop_folders.remove(&id);
            // Its replica state and scan cache go too: a later subscription of the same drop
            // elsewhere would start from them.
            let state_name =
                weft_engine::replicate::ReplicaConfig::new(id, self.node.node_id()).state_name;
            if let Err(e) = self.forget_folder_state(&id, &state_name) {
                tracing::warn!("drop {}: {e}", d.drop);
            }
            let reserved = d.root.join(RESERVED_DIR);
            let marker = reserved.join(MARKER_FILE);
            // Only a real `.weft` whose marker names this drop's folder is touched.
            let ours = std::fs::symlink_metadata(&reserved).is_ok_and(|m| m.is_dir())
                && crate::small_file::read_text_nofollow(
                    &marker,
                    crate::small_file::LINE_FILE_BYTES_MAX,
                )
                .is_ok_and(|text| text.trim() == id.to_string());
            if ours {
                if let Err(e) = crate::cli::remove_reserved(&reserved) {
                    tracing::warn!("{}: {e}", reserved.display());
                }
            }
            tracing::warn!(
                "drop {}: its folder at {} was mapped but the drop not stored (a kill cut off its creation): forgotten; the directory may be made a drop again",
                d.drop,
                d.root.display()
            );
        }
        if let Err(e) = self.store_drop_folders() {
            tracing::warn!("drop folders: {e}");
        }
    }

    /// Whether `folder` is a drop's (the drops protocol adds it to the node, not the host).
    pub(super) fn is_drop_folder(&self, folder: &FolderId) -> bool {
        self.drop_folders.contains_key(folder)
    }

    /// The scan cache the store keeps for `folder`, if any.
    pub(super) fn scan_cache(&self, folder: &FolderId) -> Option<Cache> {
        let name = cache_blob_name(folder);
        // After the caches handed to the writer before (a folder dropped and mapped again).
        if let Some(writer) = &self.state_writer {
            writer.flush();
        }
        match self
            .store
            .as_ref()?
            .carry_out(HostRequest::LoadState { name })
        {
            HostResult::Loaded(Some(bytes)) => Cache::decode(&bytes),
            _ => None,
        }
    }

    /// Carries out a `weft drop` request; a publish answers once its scan has settled.
    pub(super) fn on_drop_request(
        &mut self,
        op: DropOp,
        reply: Sender<Result<DropAnswer, HandleError>>,
    ) {
        let before = self.node.drops_durability().changes;
        let answer = match op {
            DropOp::Create { dir } => self.drop_create(&dir),
            DropOp::Subscribe { drop, dir } => self.drop_subscribe(drop, &dir),
            DropOp::Publish { dir } => match self.drop_of_dir(&dir) {
                Ok(drop) => return self.publish_when_scanned(drop, None, reply),
                Err(why) => Err(why),
            },
            DropOp::Owners { drop, node, add } => match self.owner_key(drop, node, add) {
                Ok(key) => return self.publish_when_scanned(drop, Some((key, add)), reply),
                Err(why) => Err(why),
            },
            DropOp::Status => Ok(DropAnswer::Status(self.drop_reports())),
            DropOp::Revert { dir } => self.drop_revert(&dir),
        };
        self.answer_drop(reply, answer.map_err(HandleError::Drop), before);
    }

    /// Sends a drops command's answer: at once if it failed, if it changed nothing (the
    /// drops' count of changes is still `before`), or if the node keeps no store; else once
    /// the engine's store holding its change is done (answered before, a kill lost a created
    /// drop, a subscription, a published version or an owners change the user was told was
    /// made).
    fn answer_drop(
        &mut self,
        reply: Sender<Result<DropAnswer, HandleError>>,
        answer: Result<DropAnswer, HandleError>,
        before: u64,
    ) {
        let d = self.node.drops_durability();
        if answer.is_ok() && self.store.is_some() && d.changes > before {
            self.drops_waiting.push((d.changes, reply, answer));
            self.answer_drops();
            return;
        }
        let _ = reply.send(answer);
    }

    /// Sends the answers waiting for their change to be stored (or to fail to be).
    pub(super) fn answer_drops(&mut self) {
        if self.drops_waiting.is_empty() {
            return;
        }
        let d = self.node.drops_durability().clone();
        for (through, reply, answer) in std::mem::take(&mut self.drops_waiting) {
            if d.stored_through >= through {
                let _ = reply.send(answer);
            } else if d.failed_through >= through {
                let why = d.failure.clone().unwrap_or_default();
                let _ = reply.send(Err(HandleError::NotStored(why)));
            } else {
                self.drops_waiting.push((through, reply, answer));
            }
        }
    }

    /// `weft drop revert DIR`: the subscribed drop's refused local edits put back.
    fn drop_revert(&mut self, dir: &Path) -> Result<DropAnswer, String> {
        let drop = self.drop_of_dir(dir)?;
        if self.is_drop_owner(&drop) {
            return Err(format!(
                "{}: this node owns drop {drop}: its edits are published, not reverted",
                dir.display()
            ));
        }
        let folder = drop.folder_id();
        let refused = |host: &Self| {
            host.node
                .replica(&folder)
                .map_or(0, |r| r.refused_paths().count())
        };
        let before = refused(self);
        let command = ReplicateCommand::Folder {
            folder,
            command: ReplicaCommand::Revert,
        };
        self.input(Input::Command(Command::Replicate(command)))
            .map_err(|e| e.to_string())?;
        // What is still refused (held by an apply) was not taken: a later revert takes it.
        Ok(DropAnswer::Reverted(before.saturating_sub(refused(self))))
    }

    /// Refuses a change of the drop folders when the stored ones could not be read.
    fn drop_folders_readable(&self) -> Result<(), String> {
        match &self.drop_folders_unreadable {
            None => Ok(()),
            Some(why) => Err(format!(
                "the stored drop folders could not be read ({why}); they are kept as they are, and no drop folder can be added in this run"
            )),
        }
    }

    /// `weft drop create DIR`.
    fn drop_create(&mut self, dir: &Path) -> Result<DropAnswer, String> {
        self.drop_folders_readable()?;
        let (root, mut made) = self.new_drop_root(dir, false)?;
        if let Err(e) = self.room_for_a_folder() {
            made.undo();
            self.clear_pending();
            return Err(e);
        }
        let before: BTreeSet<DropId> = self.node.drop_ids().copied().collect();
        let created = self
            .input(Input::Command(Command::Drops(DropsCommand::Create)))
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let new = self.node.drop_ids().find(|d| !before.contains(d)).copied();
                new.ok_or_else(|| "the node created no drop".to_owned())
            });
        let drop = match created {
            Ok(drop) => drop,
            Err(e) => {
                made.undo();
                self.clear_pending();
                return Err(e);
            }
        };
        self.map_drop(drop, root, DropRole::Creator, &mut made)?;
        Ok(DropAnswer::Created(drop))
    }

    /// `weft drop subscribe DROP DIR`.
    fn drop_subscribe(&mut self, drop: DropId, dir: &Path) -> Result<DropAnswer, String> {
        self.drop_folders_readable()?;
        if self.node.drop_chain(&drop).is_some() {
            return Err(format!("drop {drop} is held already"));
        }
        let (root, mut made) = self.new_drop_root(dir, true)?;
        if let Err(e) = self.room_for_a_folder() {
            made.undo();
            self.clear_pending();
            return Err(e);
        }
        let subscribe = DropsCommand::Subscribe { drop };
        if let Err(e) = self.input(Input::Command(Command::Drops(subscribe))) {
            // Refused (the drops still loading, say): nothing of the directory is left, or
            // the same command would find it not empty.
            made.undo();
            self.clear_pending();
            return Err(e.to_string());
        }
        self.map_drop(drop, root, DropRole::Subscriber, &mut made)?;
        Ok(DropAnswer::Subscribed)
    }

    /// Refuses `root` (a real path) if it lies inside or around a folder of this node other
    /// than `except`.
    pub(super) fn refuse_overlap(
        &self,
        root: &Path,
        except: Option<&FolderId>,
    ) -> Result<(), String> {
        for (id, other, ..) in self.folders.list() {
            let other = &crate::folder::apart::real_path(other);
            if Some(&id) != except && (root.starts_with(other) || other.starts_with(root)) {
                return Err(format!(
                    "{}: overlaps folder {id} at {}",
                    root.display(),
                    other.display()
                ));
            }
        }
        Ok(())
    }

    /// `dir` (absolute) made and made canonical for a new drop folder, with its reserved
    /// folder (all but the marker, so that a directory weft cannot write to fails before
    /// the drop exists): a directory or absent, empty if `empty`, not a weft folder already,
    /// neither inside nor around a folder of this node. Each check comes before anything is
    /// made (a directory made inside a shared folder is replicated).
    fn new_drop_root(&self, dir: &Path, empty: bool) -> Result<(PathBuf, MadeForDrop), String> {
        let shown = dir.display();
        if !dir.is_absolute() {
            return Err(format!("{shown}: not an absolute path"));
        }
        if self.handle.is_none() {
            return Err("this node keeps no folders".into());
        }
        // Checked before anything is made (a path that does not exist yet is compared too).
        if let Some(state) = self.store.as_ref().and_then(|s| s.state_folder()) {
            crate::folder::apart::keep_apart(dir, &crate::state::own_folders(state))?;
        }
        let planned = crate::folder::apart::real_path(dir);
        self.refuse_overlap(&planned, None)?;
        if planned.join(RESERVED_DIR).join(MARKER_FILE).exists() {
            return Err(format!("{}: a weft folder already", planned.display()));
        }
        let mut made = MadeForDrop::default();
        let absent = match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if empty && entries.next().is_some() {
                    return Err(format!("{shown}: not empty"));
                }
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(format!("{shown}: not a directory"));
            }
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        // What is about to be made, stored first: a kill from here on leaves it to be taken
        // back at the next start.
        let planned = MadeForDrop {
            dir: dir.to_path_buf(),
            marker: None,
            dirs: if absent {
                dir.ancestors()
                    .take_while(|a| std::fs::symlink_metadata(a).is_err())
                    .map(Path::to_path_buf)
                    .collect()
            } else {
                Vec::new()
            },
            reserved: (!dir.join(RESERVED_DIR).exists()).then(|| dir.join(RESERVED_DIR)),
        };
        self.store_pending(&planned)?;
        made.dir = planned.dir;
        if absent {
            made.dirs = planned.dirs;
            if let Err(e) = std::fs::create_dir_all(dir) {
                made.undo();
                self.clear_pending();
                return Err(format!("{shown}: {e}"));
            }
        }
        let checked = std::fs::canonicalize(dir)
            .map_err(|e| format!("{shown}: {e}"))
            .and_then(|root| {
                if root.join(RESERVED_DIR).join(MARKER_FILE).exists() {
                    return Err(format!("{}: a weft folder already", root.display()));
                }
                self.refuse_overlap(&root, None)?;
                Ok(root)
            });
        let root = match checked {
            Ok(root) => root,
            Err(e) => {
                made.undo();
                self.clear_pending();
                return Err(e);
            }
        };
        let reserved = root.join(RESERVED_DIR);
        if !reserved.exists() {
            made.reserved = Some(reserved);
        }
        if let Err(e) = Disk::make_reserved(&root) {
            made.undo();
            self.clear_pending();
            return Err(format!("cannot share {}: {e}", root.display()));
        }
        Ok((root, made))
    }

    /// Stores `made` as [`DROP_PENDING_BLOB`] (a node without a store keeps nothing).
    fn store_pending(&self, made: &MadeForDrop) -> Result<(), String> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(made).map_err(|e| e.to_string())?;
        let request = HostRequest::StoreState {
            name: DROP_PENDING_BLOB.to_owned(),
            bytes: Bytes::from(bytes),
        };
        match store.carry_out(request) {
            HostResult::Stored => Ok(()),
            other => Err(format!("the drop's folder could not be begun: {other:?}")),
        }
    }

    /// Removes [`DROP_PENDING_BLOB`]: the folder is mapped, or what was made taken back.
    fn clear_pending(&self) {
        if let Some(store) = &self.store {
            if let Err(e) = store.remove(&[DROP_PENDING_BLOB]) {
                tracing::warn!("{DROP_PENDING_BLOB}: {e}");
            }
        }
    }

    /// Takes back what a `weft drop create` or `subscribe` cut short by a kill made (its
    /// [`DROP_PENDING_BLOB`]), unless its directory is a mapped drop's folder by now.
    fn take_back_pending(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        let name = DROP_PENDING_BLOB.to_owned();
        let made: MadeForDrop = match store.carry_out(HostRequest::LoadState { name }) {
            HostResult::Loaded(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(made) => made,
                Err(e) => {
                    tracing::warn!("{DROP_PENDING_BLOB}: {e}: removed");
                    self.clear_pending();
                    return;
                }
            },
            _ => return,
        };
        // A folder of this node at its directory by now (mapped before the kill, or made
        // since): nothing of it is touched.
        let dir = crate::folder::apart::real_path(&made.dir);
        let in_use = self
            .folders
            .list()
            .iter()
            .any(|(_, root, ..)| crate::folder::apart::real_path(root) == dir);
        if !in_use && made.take_back() {
            tracing::warn!(
                "a weft drop create or subscribe of {} was cut short (a kill): what it made is taken back",
                made.dir.display()
            );
        }
        self.clear_pending();
    }

    /// Maps `drop`'s folder (just added to the node) to `root`: marked, scanned, stored;
    /// `made`, what was made for it, is taken back if the marker cannot be written. One that
    /// fails to be stored stays for this run, its pending record kept: the next start takes
    /// it back (its map was not stored).
    fn map_drop(
        &mut self,
        drop: DropId,
        root: PathBuf,
        role: DropRole,
        made: &mut MadeForDrop,
    ) -> Result<(), String> {
        let id = drop.folder_id();
        let Some(handle) = self.handle.clone() else {
            return Err("this node keeps no folders".into());
        };
        made.marker = Some(id.to_string());
        // The engine adds the drop's folder itself, and refuses it (silently) past
        // `FOLDERS_MAX`: a drop with no folder replicated is no drop a user can use.
        let added = if self.node.replica(&id).is_some() {
            Ok(())
        } else {
            Err(format!(
                "drop {drop}: the node did not add its folder (it holds {} folders)",
                weft_engine::replicate::FOLDERS_MAX
            ))
        };
        let marked = added
            .and_then(|()| self.store_pending(made))
            .and_then(|()| {
                Disk::init(&root, &id.to_string()).map_err(|e| format!("{}: {e}", root.display()))
            });
        if let Err(e) = marked {
            made.take_back();
            self.clear_pending();
            return Err(e);
        }
        let cache = self.scan_cache(&id);
        let spec = FolderSpec {
            id,
            root: root.clone(),
        };
        self.folders.add(spec, cache, &handle);
        tracing::info!("drop {drop}: folder {id} at {}", root.display());
        self.drop_folders
            .insert(id, DropFolder { drop, root, role });
        self.store_drop_folders()?;
        self.clear_pending();
        Ok(())
    }

    /// Writes [`DROP_FOLDERS_BLOB`] (a node without a store keeps nothing, by choice).
    fn store_drop_folders(&self) -> Result<(), String> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let stored = Stored {
            format: DROP_FOLDERS_FORMAT,
            drops: self
                .drop_folders
                .values()
                .map(|d| StoredDrop {
                    drop: d.drop.to_string(),
                    dir: d.root.clone(),
                    role: d.role,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
        let request = HostRequest::StoreState {
            name: DROP_FOLDERS_BLOB.to_owned(),
            bytes: Bytes::from(bytes),
        };
        match store.carry_out(request) {
            HostResult::Stored => Ok(()),
            other => Err(format!("the drop's folder was not stored: {other:?}")),
        }
    }

    /// The drop whose folder is `dir`.
    fn drop_of_dir(&self, dir: &Path) -> Result<DropId, String> {
        let root = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        self.drop_folders
            .values()
            .find(|d| d.root == root)
            .map(|d| d.drop)
            .ok_or_else(|| format!("{}: not a drop folder of this node", root.display()))
    }

    fn my_key(&self) -> PublicKey {
        Identity::from_secret(&self.node.config().secret_key).public_key()
    }

    /// Whether this node may publish `drop`: one of its owners in force (`Chain::owners`, not
    /// the current version's: a version of a branch may still list an owner the primary
    /// removed), or its creator while it has none.
    fn is_drop_owner(&self, drop: &DropId) -> bool {
        match self.node.drop_chain(drop).and_then(|c| c.owners()) {
            Some(owners) => owners.contains(&self.my_key()),
            None => self
                .drop_folders
                .get(&drop.folder_id())
                .is_some_and(|d| d.role == DropRole::Creator),
        }
    }

    /// The public key of `node` for a change of `drop`'s secondary owners, checked: this
    /// node is the primary, `node` is linked, and the change changes something.
    fn owner_key(&self, drop: DropId, node: NodeId, add: bool) -> Result<PublicKey, String> {
        let Some(chain) = self.node.drop_chain(&drop) else {
            return Err(format!("no drop {drop} on this node"));
        };
        let me = self.my_key();
        let secondary = match chain.owners() {
            Some(owners) if owners.primary != me => {
                return Err(format!(
                    "only the primary owner may change the owners of drop {drop}"
                ))
            }
            Some(owners) => owners.secondary.clone(),
            None if self.is_drop_owner(&drop) => Vec::new(),
            None => return Err(format!("this node is not an owner of drop {drop}")),
        };
        if node == self.node.node_id() {
            return Err("this node is the drop's primary owner".into());
        }
        let Some(key) = self.node.peer_public_key(&node) else {
            return Err(format!(
                "{} is not a linked peer (its public key comes from its handshake: link to it first)",
                hex_id(&node)
            ));
        };
        match (add, secondary.contains(&key)) {
            (true, true) => Err(format!("{} is an owner already", hex_id(&node))),
            (false, false) => Err(format!("{} is not a secondary owner", hex_id(&node))),
            _ => Ok(key),
        }
    }

    /// Asks for a scan of `drop`'s folder and publishes once one that started now settled.
    fn publish_when_scanned(
        &mut self,
        drop: DropId,
        owner: Option<(PublicKey, bool)>,
        reply: Sender<Result<DropAnswer, HandleError>>,
    ) {
        if !self.is_drop_owner(&drop) {
            let why =
                format!("this node is not an owner of drop {drop}: subscribers cannot publish");
            let _ = reply.send(Err(HandleError::Drop(why)));
            return;
        }
        let since = WallInstant::now();
        self.folders.scan_now(&drop.folder_id());
        self.publishes_waiting.push(PublishWaiting {
            drop,
            since,
            owner,
            reply,
        });
    }

    /// Publishes the drops whose folders' scans have settled; refuses those that waited too
    /// long or whose folder stopped. Whether it fed the node anything.
    pub(super) fn check_drop_publishes(&mut self) -> bool {
        let mut fed = false;
        for w in std::mem::take(&mut self.publishes_waiting) {
            let before = self.node.drops_durability().changes;
            let folder = w.drop.folder_id();
            let answer = match self.folders.scanned_since(&folder, w.since) {
                Ok(false) if w.since.elapsed() < DROP_PUBLISH_SCAN_TIMEOUT => {
                    self.publishes_waiting.push(w);
                    continue;
                }
                Ok(false) => Err(HandleError::Drop(format!(
                    "folder {folder} was not scanned within {} s",
                    DROP_PUBLISH_SCAN_TIMEOUT.as_secs()
                ))),
                Err(why) => Err(HandleError::Drop(format!("folder {folder}: {why}"))),
                Ok(true) => {
                    fed = true;
                    self.publish_now(w.drop, w.owner)
                }
            };
            self.answer_drop(w.reply, answer, before);
        }
        fed
    }

    /// Publishes `drop` now, with `owner` added to or removed from its secondary owners.
    fn publish_now(
        &mut self,
        drop: DropId,
        owner: Option<(PublicKey, bool)>,
    ) -> Result<DropAnswer, HandleError> {
        // The owners in force, not the current version's (a branch's version may still
        // list an owner the primary removed: adding another would bring it back).
        let current = self
            .node
            .drop_chain(&drop)
            .and_then(|c| c.owners())
            .map(|o| o.secondary.clone())
            .unwrap_or_default();
        let secondary = owner.map(|(key, add)| {
            let mut list = current;
            list.retain(|k| *k != key);
            if add {
                list.push(key);
            }
            list
        });
        let publish = DropsCommand::Publish { drop, secondary };
        self.input(Input::Command(Command::Drops(publish)))
            .map_err(HandleError::Refused)?;
        let (version, m) = self
            .node
            .drop_chain(&drop)
            .and_then(|c| c.current())
            .ok_or_else(|| HandleError::Drop(format!("drop {drop} has no version")))?;
        tracing::info!(
            "drop {drop}: published version {version} (counter {})",
            m.counter
        );
        Ok(DropAnswer::Published {
            drop,
            version,
            counter: m.counter,
        })
    }

    /// Every held drop, for `weft drop status`.
    fn drop_reports(&self) -> Vec<DropReport> {
        self.node
            .drop_ids()
            .map(|drop| {
                let folder = drop.folder_id();
                let chain = self.node.drop_chain(drop);
                let current = chain.and_then(|c| c.current());
                let owners = current
                    .map(|(_, m)| {
                        core::iter::once(&m.owners.primary)
                            .chain(m.owners.secondary.iter())
                            .map(|k| hex_id(&NodeId::from_public_key(k)))
                            .collect()
                    })
                    .unwrap_or_default();
                let transfers = self
                    .node
                    .replica(&folder)
                    .map(|r| r.transfers())
                    .unwrap_or_default()
                    .into_iter()
                    .map(FileReport::from)
                    .collect();
                let role = if self.is_drop_owner(drop) {
                    "owner"
                } else {
                    "subscriber"
                };
                DropReport {
                    drop: drop.to_string(),
                    role: role.into(),
                    dir: self
                        .drop_folders
                        .get(&folder)
                        .map(|d| d.root.display().to_string()),
                    version: current.map(|(v, _)| v.to_string()),
                    counter: current.map(|(_, m)| m.counter),
                    shown: self.node.drop_shown(drop).map(|v| v.to_string()),
                    heads: chain.map_or(0, |c| c.heads().count() as u64),
                    owners,
                    transfers,
                    tracker: self
                        .node
                        .drop_tracker(drop)
                        .map(|t| TrackerReport {
                            announces: t.announces,
                            lookups: t.lookups,
                            holders_found: t.holders_found,
                            holders_dialed: t.holders_dialed,
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
    }
}
