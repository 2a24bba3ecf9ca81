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
//!   symlink) is at the path; `Present { kind, size, mtime_ms }` iff `lstat` gives that kind
//!   and, for a file, that size and that modification time in ms. A directory's or symlink's
//!   size and mtime are not compared: the scanner reports them as 0 and whatever the host
//!   stamped (`MakeDir` and `MakeSymlink` carry none; a directory's mtime moves with its
//!   children).
//! - **Mode.** The engine's mode is the owner's rwx bits; a file or directory gets exactly
//!   `(mode & 7) << 6` (group and other bits cleared, no setuid/setgid/sticky), set with
//!   `chmod` after creation so the umask does not apply.
//! - **Nothing is lost.** A file or symlink a `Remove` deletes is renamed into
//!   `.weft/trash/<now ms>-<n>-<path with / as %>`; a file a `Commit` replaces is hard-linked
//!   there first. [`Disk::prune_trash`] keeps the trash within [`TRASH_KEEP_MS`] and
//!   [`TRASH_BYTES_MAX`].
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

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;
use weft_engine::protocol::{Block, FileKind};
use weft_engine::replicate::blocks::{tier_of, tier_prefix_len, Tier};
use weft_engine::replicate::{Expect, StorageError, StorageRequest, StorageResult, TempId};

use super::cache::{Cache, CachedEntry, SharedCache};
use super::{MARKER_FILE, RESERVED_DIR, TEMP_DIR, TRASH_DIR};

/// How long a trash entry is kept: 7 days, in ms.
pub const TRASH_KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

/// The most bytes the trash holds: 1 GiB (the oldest entries go first).
pub const TRASH_BYTES_MAX: u64 = 1 << 30;

/// The answer for a step on a folder whose root or marker is missing.
pub const FOLDER_MISSING: &str = "folder root or marker missing";

/// The answer for a path with a symlink in a parent component.
pub const SYMLINK_IN_PATH: &str = "symlink in path";

/// The answer for a path whose parent directory is missing (or is not a directory).
pub const NO_PARENT: &str = "no parent directory";

/// The answer for a `Remove` of a directory that still holds something.
pub const DIR_NOT_EMPTY: &str = "directory not empty";

/// The longest file name Linux file systems take, bytes.
const NAME_MAX: usize = 255;

/// How long the trash keeps what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrashPolicy {
    /// Entries older than this (ms) are deleted by [`Disk::prune_trash`].
    pub keep_ms: i64,
    /// Then the oldest entries are deleted until the trash holds at most this many bytes.
    pub bytes_max: u64,
}

impl Default for TrashPolicy {
    /// [`TRASH_KEEP_MS`] and [`TRASH_BYTES_MAX`].
    fn default() -> TrashPolicy {
        TrashPolicy {
            keep_ms: TRASH_KEEP_MS,
            bytes_max: TRASH_BYTES_MAX,
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
}

/// A shared folder on disk: carries out the engine's storage steps on it.
#[derive(Debug)]
pub struct Disk {
    root: PathBuf,
    cache: SharedCache,
    trash: TrashPolicy,
    /// Keeps trash names unique within one millisecond.
    trash_seq: AtomicU64,
    /// Temporary files kept open between the steps that write them (a fetch writes each
    /// block in pieces), least recently used first: at most [`TEMPS_OPEN_MAX`]. A commit or
    /// a discard closes its own first.
    open_temps: Mutex<Vec<(TempId, Arc<File>)>>,
}

/// Temporary files a [`Disk`] keeps open at most.
pub const TEMPS_OPEN_MAX: usize = 32;

/// A step's answer when it ends early.
type Step<T> = Result<T, StorageResult>;

/// Why a path could not be resolved to its parent directory.
#[derive(Debug)]
enum Walk {
    /// A component is a symlink.
    Symlink,
    /// A component is missing or is not a directory.
    NoParent,
    /// The path is not one weft may touch.
    Invalid(&'static str),
    /// Any other failure.
    Os(Errno),
}

impl Walk {
    fn answer(self, step: &str, path: &str) -> StorageResult {
        match self {
            Walk::Symlink => io_fail(SYMLINK_IN_PATH),
            Walk::NoParent => io_fail(NO_PARENT),
            Walk::Invalid(why) => io_fail(format!("{step} {path:?}: {why}")),
            Walk::Os(e) => errno_fail(step, path, e),
        }
    }

    fn into_io(self, what: &str) -> io::Error {
        match self {
            Walk::Os(e) => io::Error::other(format!("{what}: {e}")),
            Walk::Symlink => io::Error::other(format!("{what}: {SYMLINK_IN_PATH}")),
            Walk::NoParent => io::Error::other(format!("{what}: {NO_PARENT}")),
            Walk::Invalid(why) => io::Error::other(format!("{what}: {why}")),
        }
    }
}

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
    /// Removes the temporary files whose ids are not in `keep` (left over from before a
    /// crash: the engine's state no longer names them); returns how many went.
    pub fn remove_stray_temps(&self, keep: &[TempId]) -> io::Result<usize> {
        let dir = self.root().join(RESERVED_DIR).join(TEMP_DIR);
        let keep: Vec<String> = keep.iter().map(|t| temp_file_name(*t)).collect();
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if keep.iter().any(|k| name.as_os_str() == k.as_str()) {
                continue;
            }
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The permission bits a file or directory gets for the engine's owner `mode` (bits 0–7).
pub fn mode_bits(mode: u8) -> u32 {
    u32::from(mode & 7) << 6
}

fn kind_of(st: &Stat) -> Option<FileKind> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Some(FileKind::File),
        FileType::Directory => Some(FileKind::Directory),
        FileType::Symlink => Some(FileKind::Symlink),
        _ => None,
    }
}

fn size_of(st: &Stat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

fn mtime_ns(st: &Stat) -> i128 {
    i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec)
}

fn ctime_ns(st: &Stat) -> i128 {
    i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec)
}

fn mtime_ms(st: &Stat) -> i64 {
    i64::try_from(mtime_ns(st).div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

// `st_ino` is a `c_ulong` on some targets and a `u64` on others.
#[allow(clippy::useless_conversion)]
fn inode(st: &Stat) -> u64 {
    u64::from(st.st_ino)
}

/// The owner's three mode bits of `st` (0–7).
fn owner_mode(st: &Stat) -> u8 {
    // Masked to three bits: the cast cannot truncate.
    ((st.st_mode >> 6) & 7) as u8
}

/// Whether `expect` holds for what `lstat` found (`None`: nothing): for a file its kind,
/// size, mtime and owner mode bits; for anything else its kind.
fn holds(st: Option<&Stat>, expect: &Expect) -> bool {
    match (expect, st) {
        (Expect::Nothing, None) => true,
        (
            Expect::Present {
                kind,
                size,
                mtime_ms: ms,
                mode,
            },
            Some(st),
        ) => match kind_of(st) {
            Some(FileKind::File) => {
                *kind == FileKind::File
                    && size_of(st) == *size
                    && mtime_ms(st) == *ms
                    && owner_mode(st) == *mode
            }
            Some(k) => k == *kind,
            None => false,
        },
        _ => false,
    }
}

/// A path's components, refused if empty, `.`, `..`, holding a NUL, or inside `.weft`.
fn components(path: &str) -> Result<Vec<&str>, Walk> {
    if path.is_empty() {
        return Err(Walk::Invalid("empty path"));
    }
    let comps: Vec<&str> = path.split('/').collect();
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == ".." || c.contains('\0'))
    {
        return Err(Walk::Invalid("invalid path component"));
    }
    if comps.first() == Some(&RESERVED_DIR) {
        return Err(Walk::Invalid("reserved path"));
    }
    Ok(comps)
}

/// Opens directory `name` inside `dir`, never following a symlink.
fn open_dir(dir: impl AsFd, name: &str) -> Result<OwnedFd, Walk> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(e) => match rfs::statat(dir.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                Err(Walk::Symlink)
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {
                Err(Walk::NoParent)
            }
            Err(Errno::NOENT) => Err(Walk::NoParent),
            _ => Err(Walk::Os(e)),
        },
    }
}

/// What `lstat` finds at `name` in `dir`; `None`: nothing.
fn lstat(dir: impl AsFd, name: &str, step: &str, path: &str) -> Step<Option<Stat>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(errno_fail(step, path, e)),
    }
}

/// Renames without replacing anything (`EEXIST` if `new` is taken). A file system without
/// `RENAME_NOREPLACE` (`EINVAL`) gets a check and a plain rename.
fn rename_noreplace(
    old_dir: impl AsFd,
    old: &str,
    new_dir: impl AsFd,
    new: &str,
) -> Result<(), Errno> {
    match rfs::renameat_with(
        old_dir.as_fd(),
        old,
        new_dir.as_fd(),
        new,
        RenameFlags::NOREPLACE,
    ) {
        Err(Errno::INVAL) => match rfs::statat(new_dir.as_fd(), new, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Err(Errno::EXIST),
            Err(Errno::NOENT) => rfs::renameat(old_dir, old, new_dir, new),
            Err(e) => Err(e),
        },
        other => other,
    }
}

/// Fsyncs a directory after a change in it; the change is made, so a failure is logged.
fn sync_dir(dir: impl AsFd, path: &str) {
    if let Err(e) = rfs::fsync(dir) {
        tracing::warn!(path, error = %e, "fsync of a folder directory failed");
    }
}

/// What the cache records for `st`; `None` for what is neither file, directory nor symlink.
fn entry_of(st: &Stat, target: String, tier: u8, blocks: Vec<Block>) -> Option<CachedEntry> {
    let kind = kind_of(st)?;
    Some(CachedEntry {
        kind,
        size: if kind == FileKind::File {
            size_of(st)
        } else {
            0
        },
        mtime_ns: mtime_ns(st),
        ctime_ns: ctime_ns(st),
        inode: inode(st),
        mode: owner_mode(st),
        target,
        tier,
        blocks,
    })
}

/// Refreshes the cache entry of `path` from `st`, keeping its target, tier and blocks. A file
/// the cache never held is left out (the scanner hashes it); a directory or symlink is added.
fn refresh(cache: &mut Cache, path: &str, st: Option<&Stat>, target: impl FnOnce() -> String) {
    let Some(st) = st else {
        cache.entries.remove(path);
        return;
    };
    let kind = kind_of(st);
    let old = cache.entries.remove(path).filter(|e| Some(e.kind) == kind);
    let new = match (old, kind) {
        (Some(old), _) => entry_of(st, old.target, old.tier, old.blocks),
        (None, Some(FileKind::Directory)) => entry_of(st, String::new(), 0, Vec::new()),
        (None, Some(FileKind::Symlink)) => entry_of(st, target(), 0, Vec::new()),
        (None, _) => None,
    };
    if let Some(e) = new {
        cache.entries.insert(path.to_string(), e);
    }
}

/// The keys of `path` and of every path under it.
fn keys_under(cache: &Cache, path: &str) -> Vec<String> {
    let prefix = format!("{path}/");
    let mut keys: Vec<String> = cache
        .entries
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect();
    if cache.entries.contains_key(path) {
        keys.push(path.to_string());
    }
    keys
}

/// Removes the cache entries of `path` and every path under it.
fn forget_tree(cache: &mut Cache, path: &str) {
    for k in keys_under(cache, path) {
        cache.entries.remove(&k);
    }
}

/// Moves the cache entries of `from` and every path under it to `to`.
fn move_tree(cache: &mut Cache, from: &str, to: &str) {
    forget_tree(cache, to);
    for k in keys_under(cache, from) {
        if let Some(e) = cache.entries.remove(&k) {
            cache.entries.insert(format!("{to}{}", &k[from.len()..]), e);
        }
    }
}

/// The tier the blocks of a verified file were cut at (`tier_of` on its first bytes); the
/// fresh tier if the file cannot be read.
fn infer_tier(file: &File, size: u64, blocks: &[Block]) -> u8 {
    let fresh = Tier::fresh(size).index();
    let Ok(len) = usize::try_from(tier_prefix_len(size)) else {
        return fresh;
    };
    let mut prefix = vec![0u8; len];
    if file.read_exact_at(&mut prefix, 0).is_err() {
        return fresh;
    }
    tier_of(&prefix, size, blocks.first().map(|b| b.len)).index()
}

impl Disk {
    /// The folder at `root`, sharing `cache` with its scanner, with the default trash policy.
    pub fn new(root: PathBuf, cache: SharedCache) -> Disk {
        Disk {
            root,
            cache,
            trash: TrashPolicy::default(),
            trash_seq: AtomicU64::new(0),
            open_temps: Mutex::new(Vec::new()),
        }
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

    /// Creates `root` (if absent), `root/.weft`, its `tmp` and `trash` folders and the marker
    /// file holding `folder_hex`. A marker already there must hold the same id.
    pub fn init(root: &Path, folder_hex: &str) -> io::Result<()> {
        if folder_hex.is_empty() || folder_hex.chars().any(char::is_whitespace) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a folder id is hex digits",
            ));
        }
        std::fs::create_dir_all(root)?;
        let weft = root.join(RESERVED_DIR);
        make_real_dir(&weft)?;
        make_real_dir(&weft.join(TEMP_DIR))?;
        make_real_dir(&weft.join(TRASH_DIR))?;
        let marker = weft.join(MARKER_FILE);
        match std::fs::symlink_metadata(&marker) {
            Ok(m) if m.is_file() => {
                let held = std::fs::read_to_string(&marker)?;
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
                std::fs::File::open(&weft)?.sync_all()
            }
            Err(e) => Err(e),
        }
    }

    /// Checks that the root is a directory and the marker `.weft/folder` is there.
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
        match std::fs::symlink_metadata(weft.join(MARKER_FILE)) {
            Ok(m) if m.is_file() => Ok(()),
            _ => Err(FolderMissing::Marker),
        }
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
            R::Rename { from, to, expect } => self.rename(from, to, expect),
            R::MakeDir { path, mode } => self.make_dir(path, *mode),
            R::MakeSymlink { path, target } => self.make_symlink(path, target),
            R::SetMode { path, mode, expect } => self.set_mode(path, *mode, expect),
        };
        done.unwrap_or_else(|answer| answer)
    }

    /// Deletes trash entries older than the policy's `keep_ms` (by the time their name
    /// starts with; a name that starts with none counts as oldest), then the oldest until the
    /// trash holds at most `bytes_max` bytes.
    pub fn prune_trash(&self, now_unix_ms: i64) -> io::Result<()> {
        self.check().map_err(io::Error::other)?;
        let trash = self
            .reserved(TRASH_DIR)
            .map_err(|w| w.into_io("open the trash"))?;
        let mut entries = Vec::new();
        let mut dir = rfs::Dir::read_from(&trash)?;
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = entry.file_name().to_owned();
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let st = match rfs::statat(&trash, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            let (ms, n) = trash_age(bytes);
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            entries.push((ms, n, name, size_of(&st), is_dir));
        }
        entries.sort();
        let mut total: u64 = entries.iter().map(|e| e.3).sum();
        for (ms, _, name, size, is_dir) in entries {
            let old = now_unix_ms.saturating_sub(ms) > self.trash.keep_ms;
            if !old && total <= self.trash.bytes_max {
                break;
            }
            let flags = if is_dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            match rfs::unlinkat(&trash, name.as_c_str(), flags) {
                Ok(()) | Err(Errno::NOENT) => total = total.saturating_sub(size),
                // A directory someone put there and filled: not ours to empty.
                Err(Errno::NOTEMPTY) => {}
                Err(e) => return Err(e.into()),
            }
        }
        rfs::fsync(&trash)?;
        Ok(())
    }

    // Paths.

    fn open_root(&self) -> Result<OwnedFd, Walk> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rfs::open(&self.root, flags, Mode::empty()).map_err(Walk::Os)
    }

    /// `.weft/<sub>`, opened without following a symlink.
    fn reserved(&self, sub: &str) -> Result<OwnedFd, Walk> {
        let root = self.open_root()?;
        let weft = open_dir(&root, RESERVED_DIR)?;
        open_dir(&weft, sub)
    }

    /// [`Disk::reserved`] for a step.
    fn reserved_for(&self, sub: &str, step: &str, path: &str) -> Step<OwnedFd> {
        self.reserved(sub).map_err(|w| match w {
            Walk::Os(e) => errno_fail(step, path, e),
            w => io_fail(format!("{step} {path:?}: .weft/{sub}: {w:?}")),
        })
    }

    /// The parent directory of `path`, opened component by component from the root without
    /// following a symlink, and the final component.
    fn parent<'p>(&self, path: &'p str) -> Result<(OwnedFd, &'p str), Walk> {
        let comps = components(path)?;
        let Some((last, parents)) = comps.split_last() else {
            return Err(Walk::Invalid("empty path"));
        };
        let mut dir = self.open_root()?;
        for c in parents {
            dir = open_dir(&dir, c)?;
        }
        Ok((dir, last))
    }

    /// [`Disk::parent`] for a step; `Ok(None)` if a parent is missing (nothing is at `path`).
    fn parent_if_any<'p>(&self, path: &'p str, step: &str) -> Step<Option<(OwnedFd, &'p str)>> {
        match self.parent(path) {
            Ok(p) => Ok(Some(p)),
            Err(Walk::NoParent) => Ok(None),
            Err(w) => Err(w.answer(step, path)),
        }
    }

    /// [`Disk::parent`] for a step that needs the parent.
    fn parent_for<'p>(&self, path: &'p str, step: &str) -> Step<(OwnedFd, &'p str)> {
        self.parent(path).map_err(|w| w.answer(step, path))
    }

    /// A fresh trash name for `path`: `<now>-<n>-<path with / as %>`, the path's head cut
    /// (and a hash of it added) if that is longer than a file name may be.
    fn trash_name(&self, path: &str, now_unix_ms: i64) -> String {
        let n = self.trash_seq.fetch_add(1, Ordering::Relaxed);
        let flat = path.replace('/', "%");
        let name = format!("{now_unix_ms}-{n}-{flat}");
        if name.len() <= NAME_MAX {
            return name;
        }
        let hash = blake3::hash(path.as_bytes()).to_hex();
        let head = format!(
            "{now_unix_ms}-{n}-{}-",
            hash.as_str().get(..16).unwrap_or("")
        );
        let room = NAME_MAX.saturating_sub(head.len());
        let mut start = flat.len().saturating_sub(room);
        while !flat.is_char_boundary(start) {
            start += 1;
        }
        format!("{head}{}", &flat[start..])
    }

    /// Puts what is at `name` in `dir` into the trash: renamed there (`link == false`) or
    /// hard-linked (`link == true`, for what a commit then replaces).
    fn to_trash(
        &self,
        dir: &OwnedFd,
        name: &str,
        trash: &OwnedFd,
        path: &str,
        now_unix_ms: i64,
        link: bool,
    ) -> Result<(), Errno> {
        let mut last = Errno::EXIST;
        // A name taken (another process's trash, a clock gone back) is retried with the next
        // counter; a few tries are plenty.
        for _ in 0..8 {
            let tname = self.trash_name(path, now_unix_ms);
            let r = if link {
                rfs::linkat(dir, name, trash, tname.as_str(), AtFlags::empty())
            } else {
                rename_noreplace(dir, name, trash, &tname)
            };
            match r {
                Err(Errno::EXIST) => last = Errno::EXIST,
                other => return other,
            }
        }
        Err(last)
    }

    // Steps.

    fn read_block(&self, path: &str, offset: u64, len: u32) -> Step<StorageResult> {
        const STEP: &str = "read block of";
        let Some((dir, name)) = self.parent_if_any(path, STEP)? else {
            return Ok(StorageResult::NotFound);
        };
        // NONBLOCK: a FIFO at the path must not hang the worker (it is no file: NotFound).
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rfs::openat(&dir, name, flags | OFlags::NOCTTY, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::LOOP | Errno::NXIO | Errno::NODEV) => {
                return Ok(StorageResult::NotFound)
            }
            Err(e) => return Err(errno_fail(STEP, path, e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| errno_fail(STEP, path, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Ok(StorageResult::NotFound);
        }
        match offset.checked_add(u64::from(len)) {
            Some(end) if end <= size_of(&st) => {}
            _ => return Ok(StorageResult::NotFound),
        }
        let file = File::from(fd);
        // `len` is at most the file's size (checked above).
        let mut buf = vec![0u8; len as usize];
        match file.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(StorageResult::Block(Bytes::from(buf))),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(StorageResult::NotFound),
            Err(e) => Err(ioerr_fail(STEP, path, &e)),
        }
    }

    /// The temporary file of `temp`, open for writing: kept from an earlier write, or opened
    /// (made if missing) and kept.
    fn open_temp(&self, temp: TempId, step: &str) -> Step<Arc<File>> {
        if let Some(file) = self.kept_temp(temp) {
            return Ok(file);
        }
        let tname = temp_file_name(temp);
        let tmp = self.reserved_for(TEMP_DIR, step, &tname)?;
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            | OFlags::NONBLOCK
            | OFlags::NOCTTY;
        let fd = rfs::openat(&tmp, tname.as_str(), flags, Mode::from_raw_mode(0o600))
            .map_err(|e| errno_fail(step, &tname, e))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| ioerr_fail(step, &tname, &e))?;
        if !meta.is_file() {
            return Err(io_fail(format!("{step} {tname:?}: not a file")));
        }
        let file = Arc::new(file);
        let mut open = self.open_temps.lock().unwrap_or_else(|e| e.into_inner());
        if !open.iter().any(|(t, _)| *t == temp) {
            if open.len() == TEMPS_OPEN_MAX {
                open.remove(0);
            }
            open.push((temp, Arc::clone(&file)));
        }
        Ok(file)
    }

    /// The temporary file of `temp` if it is kept open (now the most recently used).
    fn kept_temp(&self, temp: TempId) -> Option<Arc<File>> {
        // A panic while the lock was held cannot leave the list inconsistent (every change
        // is one push or remove).
        let mut open = self.open_temps.lock().unwrap_or_else(|e| e.into_inner());
        let i = open.iter().position(|(t, _)| *t == temp)?;
        let kept = open.remove(i);
        let file = Arc::clone(&kept.1);
        open.push(kept);
        Some(file)
    }

    /// Closes the temporary file of `temp` if it is kept open (before a commit or discard).
    fn close_temp(&self, temp: TempId) {
        let mut open = self.open_temps.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(t, _)| *t != temp);
    }

    fn write_temp(&self, temp: TempId, offset: u64, data: &[u8]) -> Step<StorageResult> {
        const STEP: &str = "write temporary file";
        let file = self.open_temp(temp, STEP)?;
        self.write_into(&file, temp, offset, data)
    }

    /// Writes `data` at `offset` of `temp`'s open temporary file `file`.
    fn write_into(
        &self,
        file: &File,
        temp: TempId,
        offset: u64,
        data: &[u8],
    ) -> Step<StorageResult> {
        const STEP: &str = "write temporary file";
        let fail = |e: &io::Error| ioerr_fail(STEP, &temp_file_name(temp), e);
        // Zeros beyond the end are a hole already (the commit's set_len makes it): the file
        // stays sparse.
        if data.iter().all(|b| *b == 0) && file.metadata().map_err(|e| fail(&e))?.len() <= offset {
            return Ok(StorageResult::Done);
        }
        file.write_all_at(data, offset).map_err(|e| fail(&e))?;
        Ok(StorageResult::Done)
    }

    fn discard_temp(&self, temp: TempId) -> Step<StorageResult> {
        const STEP: &str = "discard temporary file";
        self.close_temp(temp);
        let tname = temp_file_name(temp);
        let tmp = self.reserved_for(TEMP_DIR, STEP, &tname)?;
        match rfs::unlinkat(&tmp, tname.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(StorageResult::Done),
            Err(e) => Err(errno_fail(STEP, &tname, e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        temp: TempId,
        path: &str,
        size: u64,
        blocks: &[Block],
        mode: u8,
        mtime_ms: i64,
        expect: &Expect,
        now_unix_ms: i64,
    ) -> Step<StorageResult> {
        const STEP: &str = "commit";
        self.close_temp(temp);
        let tname = temp_file_name(temp);
        let tmp = self.reserved_for(TEMP_DIR, STEP, path)?;
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = match rfs::openat(&tmp, tname.as_str(), flags | OFlags::NOCTTY, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(StorageResult::NotFound),
            Err(e) => return Err(errno_fail(STEP, path, e)),
        };
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| ioerr_fail(STEP, path, &e))?;
        if !meta.is_file() {
            return Err(io_fail(format!(
                "{STEP} {path:?}: the temporary file is not a file"
            )));
        }
        file.set_len(size).map_err(|e| ioerr_fail(STEP, path, &e))?;

        // Verify: every block's hash, and that the blocks tile the file.
        let mut bad = Vec::new();
        let mut buf = Vec::new();
        for b in blocks {
            match b.offset.checked_add(u64::from(b.len)) {
                Some(end) if end <= size => {}
                _ => {
                    bad.push(b.offset);
                    continue;
                }
            }
            // `b.len` is at most `size`, the file's length (checked above).
            buf.resize(b.len as usize, 0);
            file.read_exact_at(&mut buf, b.offset)
                .map_err(|e| ioerr_fail(STEP, path, &e))?;
            if *blake3::hash(&buf).as_bytes() != b.hash {
                bad.push(b.offset);
            }
        }
        if !bad.is_empty() {
            return Ok(StorageResult::Corrupt(bad));
        }
        let mut at = 0u64;
        let tiles = blocks.iter().all(|b| {
            let ok = b.offset == at;
            at = at.saturating_add(u64::from(b.len));
            ok
        }) && at == size;
        if !tiles {
            // Every block is sound, so no refetch could help: a failure, retried with backoff
            // (the engine's entries always tile; the simulator answers an empty `Corrupt`).
            return Err(io_fail(format!(
                "{STEP} {path:?}: the blocks do not tile the file"
            )));
        }

        let (dir, name) = self.parent_for(path, STEP)?;
        let before = lstat(&dir, name, STEP, path)?;
        if !holds(before.as_ref(), expect) {
            return Ok(StorageResult::Changed);
        }
        rfs::fchmod(&file, Mode::from_raw_mode(mode_bits(mode)))
            .map_err(|e| errno_fail(STEP, path, e))?;
        let times = rfs::Timestamps {
            last_access: rfs::Timespec {
                tv_sec: 0,
                tv_nsec: rfs::UTIME_OMIT,
            },
            last_modification: rfs::Timespec {
                tv_sec: mtime_ms.div_euclid(1000),
                tv_nsec: mtime_ms.rem_euclid(1000) * 1_000_000,
            },
        };
        rfs::futimens(&file, &times).map_err(|e| errno_fail(STEP, path, e))?;
        rfs::fsync(&file).map_err(|e| errno_fail(STEP, path, e))?;
        let tier = infer_tier(&file, size, blocks);
        let keep = matches!(
            before.as_ref().and_then(kind_of),
            Some(FileKind::File | FileKind::Symlink)
        );
        let trash = if keep {
            Some(self.reserved_for(TRASH_DIR, STEP, path)?)
        } else {
            None
        };

        let mut cache = self.cache.lock();
        if let Some(trash) = &trash {
            self.to_trash(&dir, name, trash, path, now_unix_ms, true)
                .map_err(|e| errno_fail("keep the replaced version of", path, e))?;
        }
        let renamed = if before.is_none() {
            rename_noreplace(&tmp, &tname, &dir, name)
        } else {
            rfs::renameat(&tmp, tname.as_str(), &dir, name)
        };
        match renamed {
            Ok(()) => {}
            Err(Errno::EXIST) => return Ok(StorageResult::Changed),
            Err(e) => return Err(errno_fail(STEP, path, e)),
        }
        match lstat(&dir, name, STEP, path).ok().flatten() {
            Some(st) => match entry_of(&st, String::new(), tier, blocks.to_vec()) {
                Some(e) => {
                    cache.entries.insert(path.to_string(), e);
                }
                None => {
                    cache.entries.remove(path);
                }
            },
            None => {
                cache.entries.remove(path);
            }
        }
        drop(cache);
        // The directory the file now is in. Not `.weft/tmp`: a name a crash brings back there
        // is a stray temporary file, removed when the folder's state is next loaded.
        sync_dir(&dir, path);
        if let Some(trash) = &trash {
            sync_dir(trash, path);
        }
        Ok(StorageResult::Done)
    }

    fn remove(&self, path: &str, expect: &Expect, now_unix_ms: i64) -> Step<StorageResult> {
        const STEP: &str = "remove";
        let Some((dir, name)) = self.parent_if_any(path, STEP)? else {
            return Ok(StorageResult::NotFound);
        };
        let Some(st) = lstat(&dir, name, STEP, path)? else {
            return Ok(StorageResult::NotFound);
        };
        if !holds(Some(&st), expect) {
            return Ok(StorageResult::Changed);
        }
        if kind_of(&st) == Some(FileKind::Directory) {
            let mut cache = self.cache.lock();
            match rfs::unlinkat(&dir, name, AtFlags::REMOVEDIR) {
                Ok(()) => {}
                Err(Errno::NOENT) => return Ok(StorageResult::NotFound),
                Err(Errno::NOTEMPTY | Errno::EXIST) => return Err(io_fail(DIR_NOT_EMPTY)),
                Err(e) => return Err(errno_fail(STEP, path, e)),
            }
            forget_tree(&mut cache, path);
            drop(cache);
            sync_dir(&dir, path);
            return Ok(StorageResult::Done);
        }
        let trash = self.reserved_for(TRASH_DIR, STEP, path)?;
        let mut cache = self.cache.lock();
        match self.to_trash(&dir, name, &trash, path, now_unix_ms, false) {
            Ok(()) => {}
            Err(Errno::NOENT) => return Ok(StorageResult::NotFound),
            Err(e) => return Err(errno_fail(STEP, path, e)),
        }
        forget_tree(&mut cache, path);
        drop(cache);
        sync_dir(&dir, path);
        sync_dir(&trash, path);
        Ok(StorageResult::Done)
    }

    fn rename(&self, from: &str, to: &str, expect: &Expect) -> Step<StorageResult> {
        const STEP: &str = "rename";
        let Some((fdir, fname)) = self.parent_if_any(from, STEP)? else {
            return Ok(StorageResult::NotFound);
        };
        let Some(st) = lstat(&fdir, fname, STEP, from)? else {
            return Ok(StorageResult::NotFound);
        };
        if !holds(Some(&st), expect) {
            return Ok(StorageResult::Changed);
        }
        let (tdir, tname) = self.parent_for(to, STEP)?;
        if lstat(&tdir, tname, STEP, to)?.is_some() {
            return Ok(StorageResult::Changed);
        }
        let mut cache = self.cache.lock();
        match rename_noreplace(&fdir, fname, &tdir, tname) {
            Ok(()) => {}
            Err(Errno::EXIST | Errno::NOTEMPTY) => return Ok(StorageResult::Changed),
            Err(Errno::NOENT) => return Ok(StorageResult::NotFound),
            Err(e) => return Err(errno_fail(STEP, from, e)),
        }
        move_tree(&mut cache, from, to);
        let after = lstat(&tdir, tname, STEP, to).ok().flatten();
        refresh(&mut cache, to, after.as_ref(), || read_link(&tdir, tname));
        drop(cache);
        sync_dir(&tdir, to);
        sync_dir(&fdir, from);
        Ok(StorageResult::Done)
    }

    fn make_dir(&self, path: &str, mode: u8) -> Step<StorageResult> {
        const STEP: &str = "make directory";
        let (dir, name) = self.parent_for(path, STEP)?;
        let bits = Mode::from_raw_mode(mode_bits(mode));
        let mut cache = self.cache.lock();
        let created = match lstat(&dir, name, STEP, path)? {
            Some(st) if kind_of(&st) == Some(FileKind::Directory) => false,
            Some(_) => return Ok(StorageResult::Changed),
            None => match rfs::mkdirat(&dir, name, bits) {
                Ok(()) => true,
                Err(Errno::EXIST) => return Ok(StorageResult::Changed),
                Err(e) => return Err(errno_fail(STEP, path, e)),
            },
        };
        // chmodat follows a symlink at `name` (Linux has no fchmodat(AT_SYMLINK_NOFOLLOW)
        // before fchmodat2): the lstat above found a directory, and one swapped for a symlink
        // in between is a race with a local user we accept (opening it to fchmod would need
        // read permission on it).
        rfs::chmodat(&dir, name, bits, AtFlags::empty()).map_err(|e| errno_fail(STEP, path, e))?;
        let after = lstat(&dir, name, STEP, path).ok().flatten();
        refresh(&mut cache, path, after.as_ref(), String::new);
        drop(cache);
        if created {
            sync_dir(&dir, path);
        }
        Ok(StorageResult::Done)
    }

    fn make_symlink(&self, path: &str, target: &str) -> Step<StorageResult> {
        const STEP: &str = "make symlink";
        let (dir, name) = self.parent_for(path, STEP)?;
        if lstat(&dir, name, STEP, path)?.is_some() {
            return Ok(StorageResult::Changed);
        }
        let mut cache = self.cache.lock();
        match rfs::symlinkat(target, &dir, name) {
            Ok(()) => {}
            Err(Errno::EXIST) => return Ok(StorageResult::Changed),
            Err(e) => return Err(errno_fail(STEP, path, e)),
        }
        let after = lstat(&dir, name, STEP, path).ok().flatten();
        cache.entries.remove(path);
        refresh(&mut cache, path, after.as_ref(), || target.to_string());
        drop(cache);
        sync_dir(&dir, path);
        Ok(StorageResult::Done)
    }

    fn set_mode(&self, path: &str, mode: u8, expect: &Expect) -> Step<StorageResult> {
        const STEP: &str = "set mode of";
        let Some((dir, name)) = self.parent_if_any(path, STEP)? else {
            return Ok(StorageResult::Changed);
        };
        let Some(st) = lstat(&dir, name, STEP, path)? else {
            return Ok(StorageResult::Changed);
        };
        if !holds(Some(&st), expect) {
            return Ok(StorageResult::Changed);
        }
        match kind_of(&st) {
            Some(FileKind::Symlink) => return Ok(StorageResult::Done),
            Some(_) => {}
            None => return Ok(StorageResult::Changed),
        }
        let mut cache = self.cache.lock();
        // See `make_dir`: the lstat just above found no symlink.
        rfs::chmodat(
            &dir,
            name,
            Mode::from_raw_mode(mode_bits(mode)),
            AtFlags::empty(),
        )
        .map_err(|e| errno_fail(STEP, path, e))?;
        let after = lstat(&dir, name, STEP, path).ok().flatten();
        refresh(&mut cache, path, after.as_ref(), String::new);
        Ok(StorageResult::Done)
    }
}

/// A symlink's target, lossily as UTF-8 (empty if it cannot be read).
fn read_link(dir: &OwnedFd, name: &str) -> String {
    rfs::readlinkat(dir, name, Vec::new())
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The time and counter a trash name starts with (`<ms>-<n>-…`); `(i64::MIN, 0)` if none.
fn trash_age(name: &[u8]) -> (i64, u64) {
    let mut parts = name.splitn(3, |b| *b == b'-');
    let ms = parts
        .next()
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse::<i64>().ok());
    let n = parts
        .next()
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.parse::<u64>().ok());
    match (ms, n) {
        (Some(ms), Some(n)) => (ms, n),
        _ => (i64::MIN, 0),
    }
}

/// Creates directory `path` if absent; one already there must be a directory, not a symlink.
fn make_real_dir(path: &Path) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path)?.is_dir() {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "{} is not a directory",
                    path.display()
                )))
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
