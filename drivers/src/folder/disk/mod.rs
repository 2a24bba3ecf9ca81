//! The engine's storage steps carried out on a shared folder on a real disk (SPEC.md §22.8).
//!
//! [`Disk::carry_out`] answers every [`StorageRequest`] but the state blob's (the node's store
//! keeps that) with the answers of the simulator's in-memory folder (`sim/src/folder.rs`):
//!
//! - **The folder first.** Every step starts with [`Disk::check`]: a folder whose root or
//!   marker (`.weft/folder`) is gone — an unmounted disk, a deleted folder — is refused and
//!   nothing is touched, so it is never taken for "everything was deleted".
//! - **No symlink is followed.** A path's parent is opened one component at a time from the
//!   root with `openat(O_DIRECTORY | O_NOFOLLOW)`; the step then acts on the final component
//!   relative to that directory (`statat` without following, `renameat`, `unlinkat`,
//!   `mkdirat`, `symlinkat`, files opened `O_NOFOLLOW`). A symlink in a parent is
//!   `Failed(Io("symlink in path"))`, a missing parent `Failed(Io("no parent directory"))`
//!   (where a missing path is an answer of its own — `ReadBlock`, `Remove`, `Rename`'s `from`
//!   — a missing parent is that answer). Paths with an empty, `.` or `..` component, or inside
//!   `.weft`, are refused.
//! - **`Expect`** holds as in the simulator: `Nothing` iff nothing at all (not even a dangling
//!   symlink) is at the path; `Present { kind, size, mtime_ms, mode }` iff `lstat` gives that
//!   kind and, for a file, that size, that modification time in ms and those owner mode bits.
//!   A directory's or symlink's size, mtime and mode are not compared: the scanner reports
//!   them as 0 and whatever the host stamped (`MakeDir` and `MakeSymlink` carry none; a
//!   directory's mtime moves with its children).
//! - **Mode.** The engine's mode is the owner's rwx bits, set with `chmod` after creation
//!   so the umask does not take them away; the group's and others' bits are the disk's own:
//!   kept from what the path held, else the owner's bits less the process's umask
//!   ([`disk_mode`]).
//! - **Nothing is lost.** A file or symlink a `Remove` deletes is renamed into
//!   `.weft/trash/<now ms>-<n>-<path with / as %>`; a file a `Commit` replaces is hard-linked
//!   there first. [`Disk::prune_trash`] (run by the folder's scanner thread, at most every
//!   `TRASH_PRUNE_PERIOD`) keeps the trash within [`TRASH_KEEP_MS`] and [`TRASH_BYTES_MAX`].
//! - **The cache.** Each step that changes the folder records what it left in the
//!   [`SharedCache`] while holding its lock across the final rename / unlink / mkdir / chmod,
//!   the `lstat` after it and the update, so the scanner (which compares under the same lock)
//!   never reports the engine's own write as a local change.
//! - **Errors.** `ENOSPC` and `EDQUOT` are `Failed(DiskFull)`; any other failure is
//!   `Failed(Io(one line naming the step and the path))`. No input panics.
//!
//! Temporary files are `.weft/tmp/<16 hex digits of the temp id>` ([`temp_file_name`], SPEC.md §22.8).
//!
//! A [`Disk`] is `Send + Sync`: several worker threads may carry out steps at once (the engine
//! never has two steps outstanding on one path).
//!
//! The steps are in `steps.rs`, the walk that never follows a symlink in `walk.rs`, what
//! `lstat` says and the cache kept in step with it in `stat.rs`, temporary files in
//! `temps.rs`, the trash in `trash.rs`; this module holds the folder's checks, its set-up and
//! the dispatch of every request.

mod deletable;
mod mode;
mod stat;
mod steps;
mod temps;
mod trash;
mod walk;

pub use mode::{disk_mode, process_umask, UMASK_UNKNOWN};
pub(crate) use stat::{ctime_ns, inode, mtime_ns, owner_mode, size_of};
pub(crate) use walk::{open_dir_in, open_dir_under, rename_noreplace};

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use rustix::io::Errno;
use weft_engine::replicate::paths::IgnoreRules;
use weft_engine::replicate::{StorageError, StorageRequest, StorageResult, TempId};

use super::cache::SharedCache;
use super::{MARKER_FILE, RESERVED_DIR, TEMP_DIR, TRASH_DIR};
use walk::make_real_dir;

/// How long a trash entry is kept: 7 days, in ms.
pub const TRASH_KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

/// The most bytes the trash holds: 1 GiB (the oldest entries go first).
pub const TRASH_BYTES_MAX: u64 = 1 << 30;

/// The most entries the trash holds (the oldest go first): small files hardly count toward
/// [`TRASH_BYTES_MAX`], and a peer rewriting tiny files adds one each time.
pub const TRASH_ENTRIES_MAX: usize = 65_536;

/// The answer for a step on a folder whose root or marker is missing.
pub const FOLDER_MISSING: &str = "folder root or marker missing";

/// The answer for a path with a symlink in a parent component.
pub const SYMLINK_IN_PATH: &str = "symlink in path";

/// The answer for a path whose parent directory is missing (or is not a directory).
pub const NO_PARENT: &str = "no parent directory";

/// The answer for a path under a mount point whose disk is not mounted (SPEC.md §22.10).
pub const NOT_MOUNTED: &str = "under a mount point that is not mounted";

/// The answer for a step that would write under a disk mounted inside the folder: files are
/// neither renamed nor linked across disks, and `.weft/tmp` and `.weft/trash` are on the
/// folder's own.
pub const OTHER_DISK: &str = "on another disk mounted inside the folder: weft does not write there";

/// The answer for a `Remove` of a directory that still holds something.
pub const DIR_NOT_EMPTY: &str = "directory not empty";

pub use deletable::DELETABLE_ENTRIES_MAX;

/// The longest file name Linux file systems take, bytes.
const NAME_MAX: usize = 255;

/// How long the trash keeps what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrashPolicy {
    /// Entries older than this (ms) are deleted by [`Disk::prune_trash`].
    pub keep_ms: i64,
    /// Then the oldest entries are deleted until the trash holds at most this many bytes.
    pub bytes_max: u64,
    /// And at most this many entries.
    pub entries_max: usize,
}

impl Default for TrashPolicy {
    /// [`TRASH_KEEP_MS`], [`TRASH_BYTES_MAX`] and [`TRASH_ENTRIES_MAX`].
    fn default() -> TrashPolicy {
        TrashPolicy {
            keep_ms: TRASH_KEEP_MS,
            bytes_max: TRASH_BYTES_MAX,
            entries_max: TRASH_ENTRIES_MAX,
        }
    }
}

/// Why a shared folder cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FolderMissing {
    /// The folder's root is gone or is not a directory.
    #[error("the folder's root is missing or not a directory")]
    Root,
    /// The marker `.weft/folder` is gone (or `.weft` is not a directory).
    #[error("the folder's marker .weft/folder is missing")]
    Marker,
    /// The marker names another folder (or cannot be read): the directory is not this
    /// folder (a config that points at another network's folder, another disk mounted there).
    #[error("the folder's marker .weft/folder names another folder")]
    Foreign,
}

/// What `lstat` says of a marker file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MarkerSeen {
    device: u64,
    inode: u64,
    size: u64,
    mtime_ns: (i64, i64),
}

/// Whether the marker file at `marker` names folder `id` (its one line, trimmed); a marker
/// that is not one line of text (not UTF-8, too long) names none. `Err`: it could not be read
/// (out of descriptors, an I/O error), which says nothing of what it names.
pub fn marker_names(marker: &Path, id: &str) -> io::Result<bool> {
    match crate::small_file::read_text_nofollow(marker, crate::small_file::LINE_FILE_BYTES_MAX) {
        Ok(held) => Ok(held.trim() == id),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(false),
        Err(e) => Err(e),
    }
}

/// A shared folder on disk: carries out the engine's storage steps on it.
#[derive(Debug)]
pub struct Disk {
    root: PathBuf,
    cache: SharedCache,
    trash: TrashPolicy,
    /// Keeps trash names unique within one millisecond.
    trash_seq: AtomicU64,
    /// Temporary files kept open between the steps that write them, and those that ended.
    temps: Mutex<Temps>,
    /// The umask a path new here is given its group's and others' bits under.
    umask: u32,
    /// The folder's `.weftignore` rules, as its scanner last read them: what a removal of
    /// a directory may clear (`(?d)` rules).
    rules: Mutex<IgnoreRules>,
    /// The folder's id, which its marker must name (if set, [`Disk::for_folder`]).
    folder_id: Option<String>,
    /// The marker last read and found to name [`Self::folder_id`], as `lstat` saw it: a
    /// step reads it again only when another file (or other content) is there.
    marker_read: Mutex<Option<MarkerSeen>>,
    /// Called with the root, a point in a step (`"checked"`: after its first look at the
    /// path, before the cache lock; `"locked"`: under the lock, just before it acts; `"kept"`:
    /// the file a commit or a rename replaces just linked into the trash; `"linked"`: just
    /// before a commit's rename; `"renamed"`: just after it) and the path: a test changes the
    /// folder there.
    #[cfg(test)]
    pub(crate) hook: Option<fn(&Path, &str, &str)>,
}

/// Temporary files a [`Disk`] keeps open at most.
pub const TEMPS_OPEN_MAX: usize = 32;

/// Temporary files a [`Disk`] remembers as ended (discarded, or committed into place), so a
/// write to one that a worker carries out late does not make it again.
pub const TEMPS_ENDED_MAX: usize = 1024;

/// The temporary files of a [`Disk`] that are open or ended.
#[derive(Debug, Default)]
struct Temps {
    /// Kept open between the steps that write them (a fetch writes each block in pieces),
    /// least recently used first: at most [`TEMPS_OPEN_MAX`]. A commit or a discard closes
    /// its own first.
    open: Vec<(TempId, Arc<File>)>,
    /// The last [`TEMPS_ENDED_MAX`] discarded or committed, oldest first. The engine never
    /// reuses a `TempId` while it runs, and the workers take steps in parallel: a write
    /// taken before a discard may be carried out after it, and must not make the file again
    /// (nothing would remove it before the next start).
    ended: VecDeque<TempId>,
}

/// A step's answer when it ends early.
type Step<T> = Result<T, StorageResult>;

fn io_fail(why: impl Into<String>) -> StorageResult {
    StorageResult::Failed(StorageError::Io(why.into()))
}

/// `ENOSPC` and `EDQUOT` are a full disk; anything else one line naming the step and path.
fn errno_fail(step: &str, path: &str, e: Errno) -> StorageResult {
    if e == Errno::NOSPC || e == Errno::DQUOT {
        StorageResult::Failed(StorageError::DiskFull)
    } else {
        io_fail(format!("{step} {path:?}: {e}"))
    }
}

/// [`errno_fail`] for a `std::io::Error`.
fn ioerr_fail(step: &str, path: &str, e: &io::Error) -> StorageResult {
    match e.raw_os_error() {
        Some(code) => errno_fail(step, path, Errno::from_raw_os_error(code)),
        None => io_fail(format!("{step} {path:?}: {e}")),
    }
}

/// The name of temporary file `temp` inside `.weft/tmp`.
pub fn temp_file_name(temp: TempId) -> String {
    format!("{:016x}", temp.0)
}

impl Disk {
    /// Runs the test hook, if any, at `point` of a step on `path`.
    #[cfg(test)]
    fn at(&self, point: &str, path: &str) {
        if let Some(hook) = self.hook {
            hook(&self.root, point, path);
        }
    }

    #[cfg(not(test))]
    fn at(&self, _point: &str, _path: &str) {}

    /// The folder at `root`, sharing `cache` with its scanner, with the default trash policy.
    pub fn new(root: PathBuf, cache: SharedCache) -> Disk {
        Disk {
            root,
            cache,
            trash: TrashPolicy::default(),
            trash_seq: AtomicU64::new(0),
            temps: Mutex::new(Temps::default()),
            umask: process_umask(),
            rules: Mutex::new(IgnoreRules::default()),
            folder_id: None,
            marker_read: Mutex::new(None),
            #[cfg(test)]
            hook: None,
        }
    }

    /// The same folder, whose marker must name folder `id` (as [`Disk::init`] wrote it).
    pub fn for_folder(mut self, id: String) -> Disk {
        self.folder_id = Some(id);
        self
    }

    /// The same folder giving paths new here their group's and others' bits under `umask`
    /// instead of the process's.
    pub fn with_umask(mut self, umask: u32) -> Disk {
        self.umask = umask & 0o777;
        self
    }

    /// The same folder with another trash policy.
    pub fn with_trash_policy(mut self, trash: TrashPolicy) -> Disk {
        self.trash = trash;
        self
    }

    /// The folder's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cache shared with the scanner.
    pub fn cache(&self) -> &SharedCache {
        &self.cache
    }

    /// Creates `root` (if absent), `root/.weft`, its `tmp` and `trash` folders: what
    /// [`Disk::init`] makes but the marker. An error names the directory it could not make.
    pub fn make_reserved(root: &Path) -> io::Result<()> {
        let named = |path: &Path| {
            let path = path.to_owned();
            move |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
        };
        std::fs::create_dir_all(root).map_err(named(root))?;
        let weft = root.join(RESERVED_DIR);
        make_real_dir(&weft).map_err(named(&weft))?;
        let tmp = weft.join(TEMP_DIR);
        make_real_dir(&tmp).map_err(named(&tmp))?;
        let trash = weft.join(TRASH_DIR);
        make_real_dir(&trash).map_err(named(&trash))
    }

    /// Creates `root` (if absent), `root/.weft`, its `tmp` and `trash` folders and the marker
    /// file holding `folder_hex`. A marker already there must hold the same id.
    pub fn init(root: &Path, folder_hex: &str) -> io::Result<()> {
        if folder_hex.is_empty() || folder_hex.chars().any(char::is_whitespace) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a folder id is hex digits",
            ));
        }
        Disk::make_reserved(root)?;
        let weft = root.join(RESERVED_DIR);
        let marker = weft.join(MARKER_FILE);
        match std::fs::symlink_metadata(&marker) {
            Ok(m) if m.is_file() => {
                let held = crate::small_file::read_text_nofollow(
                    &marker,
                    crate::small_file::LINE_FILE_BYTES_MAX,
                )?;
                if held.trim() == folder_hex {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} is the folder {} already", root.display(), held.trim()),
                    ))
                }
            }
            Ok(_) => Err(io::Error::other(format!(
                "{} is not a file",
                marker.display()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let part = weft.join(format!("{MARKER_FILE}.part"));
                let mut f = std::fs::File::create(&part)?;
                io::Write::write_all(&mut f, format!("{folder_hex}\n").as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&part, &marker)?;
                // A marker a killed `weft leave --delete` set aside names a network this
                // folder no longer is: it goes with the new marker.
                match std::fs::remove_file(weft.join(super::LEAVING_MARKER_FILE)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                std::fs::File::open(&weft)?.sync_all()
            }
            Err(e) => Err(e),
        }
    }

    /// Checks that the root is a directory and the marker `.weft/folder` is there (naming
    /// this folder, if its id is known).
    pub fn check(&self) -> Result<(), FolderMissing> {
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            _ => return Err(FolderMissing::Root),
        }
        let weft = self.root.join(RESERVED_DIR);
        match std::fs::symlink_metadata(&weft) {
            Ok(m) if m.is_dir() => {}
            _ => return Err(FolderMissing::Marker),
        }
        let marker = weft.join(MARKER_FILE);
        let seen = match std::fs::symlink_metadata(&marker) {
            Ok(m) if m.is_file() => MarkerSeen {
                device: m.dev(),
                inode: m.ino(),
                size: m.size(),
                mtime_ns: (m.mtime(), m.mtime_nsec()),
            },
            _ => return Err(FolderMissing::Marker),
        };
        let Some(id) = &self.folder_id else {
            return Ok(());
        };
        let mut read = self
            .marker_read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *read != Some(seen) {
            // Unread (out of descriptors, say) counts as missing for this step, which is
            // retried; only what was read and names another folder is foreign.
            match marker_names(&marker, id) {
                Ok(true) => *read = Some(seen),
                Ok(false) => return Err(FolderMissing::Foreign),
                Err(_) => return Err(FolderMissing::Marker),
            }
        }
        Ok(())
    }

    /// Carries out one storage step at `now_unix_ms` (which names trash entries). Every
    /// request but `LoadState` and `PersistState` (the node's store answers those: here
    /// `Failed(Io("not a disk step"))`).
    pub fn carry_out(&self, request: &StorageRequest, now_unix_ms: i64) -> StorageResult {
        use StorageRequest as R;
        if matches!(request, R::LoadState | R::PersistState { .. }) {
            return io_fail("not a disk step");
        }
        if let R::WriteTemp { temp, offset, data } = request {
            if let Some(file) = self.kept_temp(*temp) {
                // Into a temporary file already open, without looking at the folder again:
                // nothing outside `.weft/tmp` changes, and the commit that would put the
                // file in place checks the folder first.
                return self
                    .write_into(&file, *temp, *offset, data)
                    .unwrap_or_else(|answer| answer);
            }
        }
        if self.check().is_err() {
            return io_fail(FOLDER_MISSING);
        }
        // Every step but a read or a temporary file's may change the cache (marked after it,
        // so the mark is never cleared before what it marks is in the cache).
        let writes = !matches!(
            request,
            R::ReadBlock { .. } | R::WriteTemp { .. } | R::DiscardTemp { .. }
        );
        let done = match request {
            R::LoadState | R::PersistState { .. } => Ok(io_fail("not a disk step")),
            R::ReadBlock { path, offset, len } => self.read_block(path, *offset, *len),
            R::WriteTemp { temp, offset, data } => self.write_temp(*temp, *offset, data),
            R::Commit {
                temp,
                path,
                size,
                blocks,
                mode,
                mtime_ms,
                expect,
            } => self.commit(
                *temp,
                path,
                *size,
                blocks,
                *mode,
                *mtime_ms,
                expect,
                now_unix_ms,
            ),
            R::DiscardTemp { temp } => self.discard_temp(*temp),
            R::Remove { path, expect } => self.remove(path, expect, now_unix_ms),
            R::Rename {
                from,
                to,
                expect,
                over,
            } => self.rename(from, to, expect, over, now_unix_ms),
            R::MakeDir { path, mode } => self.make_dir(path, *mode),
            R::MakeSymlink { path, target } => self.make_symlink(path, target),
            R::SetMode { path, mode, expect } => self.set_mode(path, *mode, expect),
        };
        if writes {
            self.cache.mark_written();
        }
        done.unwrap_or_else(|answer| answer)
    }
}

#[cfg(test)]
mod tests;
