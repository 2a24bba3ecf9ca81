//! Paths walked from the folder's root one component at a time, never through a symlink:
//! each directory opened `O_DIRECTORY | O_NOFOLLOW` relative to the last, the final component
//! acted on relative to its parent; renames that never replace, and directories fsynced.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};
use rustix::io::Errno;
use weft_engine::replicate::StorageResult;

use crate::folder::{mounts, RESERVED_DIR};

use super::{errno_fail, io_fail, Disk, Step, NOT_MOUNTED, NO_PARENT, OTHER_DISK, SYMLINK_IN_PATH};

/// Why a path could not be resolved to its parent directory.
#[derive(Debug)]
pub(super) enum Walk {
    /// A component is a symlink.
    Symlink,
    /// A component is missing or is not a directory.
    NoParent,
    /// A component is a mount point the scanner knows whose disk is not mounted: what is
    /// written there would be hidden once it is, and then taken for deleted.
    NotMounted,
    /// The parent is on another disk than the folder's root (a disk mounted inside the
    /// folder): a step that writes is not carried out there.
    OtherDisk,
    /// The path is not one weft may touch.
    Invalid(&'static str),
    /// Any other failure.
    Os(Errno),
}

impl Walk {
    pub(super) fn answer(self, step: &str, path: &str) -> StorageResult {
        match self {
            Walk::Symlink => io_fail(SYMLINK_IN_PATH),
            Walk::NoParent => io_fail(NO_PARENT),
            Walk::NotMounted => io_fail(format!("{step} {path:?}: {NOT_MOUNTED}")),
            Walk::OtherDisk => io_fail(format!("{step} {path:?}: {OTHER_DISK}")),
            Walk::Invalid(why) => io_fail(format!("{step} {path:?}: {why}")),
            Walk::Os(e) => errno_fail(step, path, e),
        }
    }

    /// As an `io::Error` about `what`: a missing directory is `NotFound`, a symlink or
    /// something else where a directory was expected is `NotADirectory`.
    pub(super) fn into_io(self, what: &str) -> io::Error {
        match self {
            Walk::Os(e) => io::Error::other(format!("{what}: {e}")),
            Walk::Symlink => io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{what}: {SYMLINK_IN_PATH}"),
            ),
            Walk::NoParent => {
                io::Error::new(io::ErrorKind::NotFound, format!("{what}: {NO_PARENT}"))
            }
            Walk::NotMounted => io::Error::other(format!("{what}: {NOT_MOUNTED}")),
            Walk::OtherDisk => io::Error::other(format!("{what}: {OTHER_DISK}")),
            Walk::Invalid(why) => io::Error::other(format!("{what}: {why}")),
        }
    }
}

/// A path's components, refused if empty, `.`, `..`, holding a NUL, or inside `.weft`.
pub(super) fn components(path: &str) -> Result<Vec<&str>, Walk> {
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
    if comps.contains(&RESERVED_DIR) {
        return Err(Walk::Invalid("reserved path"));
    }
    Ok(comps)
}

/// Opens directory `name` inside `dir`, never following a symlink.
pub(super) fn open_dir(dir: impl AsFd, name: &str) -> Result<OwnedFd, Walk> {
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

/// Directory `name` inside `dir`, never following a symlink (errors as [`Walk::into_io`]'s).
pub(crate) fn open_dir_in(dir: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    open_dir(dir, name).map_err(|w| w.into_io(name))
}

/// Directory `dir` (relative to `root`; empty: the root itself), opened component by
/// component without following a symlink (the root itself may be one). The scanner acts on
/// names in it through this, as the steps do.
pub(crate) fn open_dir_under(root: &Path, dir: &str) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut fd = rfs::open(root, flags, Mode::empty())?;
    if !dir.is_empty() {
        for name in dir.split('/') {
            fd = open_dir(&fd, name).map_err(|w| w.into_io(dir))?;
        }
    }
    Ok(fd)
}

/// What `lstat` finds at `name` in `dir`; `None`: nothing.
pub(super) fn lstat(dir: impl AsFd, name: &str, step: &str, path: &str) -> Step<Option<Stat>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(errno_fail(step, path, e)),
    }
}

/// Renames without replacing anything (`EEXIST` if `new` is taken). A file system without
/// `RENAME_NOREPLACE` (`EINVAL`) gets a check and a plain rename.
pub(crate) fn rename_noreplace(
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
pub(super) fn sync_dir(dir: impl AsFd, path: &str) {
    if let Err(e) = rfs::fsync(dir) {
        tracing::warn!(path, error = %e, "fsync of a folder directory failed");
    }
}

/// A symlink's target, lossily as UTF-8 (empty if it cannot be read).
pub(super) fn read_link(dir: &OwnedFd, name: &str) -> String {
    rfs::readlinkat(dir, name, Vec::new())
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Creates directory `path` if absent; one already there must be a directory, not a symlink.
pub(super) fn make_real_dir(path: &Path) -> io::Result<()> {
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

impl Disk {
    // Paths.
    pub(super) fn open_root(&self) -> Result<OwnedFd, Walk> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rfs::open(&self.root, flags, Mode::empty()).map_err(Walk::Os)
    }

    /// `.weft/<sub>`, opened without following a symlink.
    pub(super) fn reserved(&self, sub: &str) -> Result<OwnedFd, Walk> {
        let root = self.open_root()?;
        let weft = open_dir(&root, RESERVED_DIR)?;
        open_dir(&weft, sub)
    }

    /// [`Disk::reserved`] for a step.
    pub(super) fn reserved_for(&self, sub: &str, step: &str, path: &str) -> Step<OwnedFd> {
        self.reserved(sub).map_err(|w| match w {
            Walk::Os(e) => errno_fail(step, path, e),
            w => io_fail(format!("{step} {path:?}: .weft/{sub}: {w:?}")),
        })
    }

    /// The parent directory of `path`, opened component by component from the root without
    /// following a symlink, and the final component. A parent the scanner knows as a mount
    /// point must still be one (on another device than its own parent). For a step that
    /// writes (`write`), the parent must be on the root's disk: `.weft/tmp` and `.weft/trash`
    /// are there, and a file is neither renamed nor linked across disks.
    pub(super) fn parent<'p>(
        &self,
        path: &'p str,
        write: bool,
    ) -> Result<(OwnedFd, &'p str), Walk> {
        let comps = components(path)?;
        let Some((last, parents)) = comps.split_last() else {
            return Err(Walk::Invalid("empty path"));
        };
        let mount_points: Vec<usize> = {
            let cache = self.cache.lock();
            if cache.mount_points.is_empty() {
                Vec::new()
            } else {
                (1..=parents.len())
                    .filter(|&n| cache.mount_points.contains(&parents[..n].join("/")))
                    .collect()
            }
        };
        let dev = |fd: &OwnedFd| {
            rfs::fstat(fd)
                .map(|st| mounts::dev_of(&st))
                .map_err(Walk::Os)
        };
        let mount = |fd: &OwnedFd| mounts::mount_of(fd).map_err(Walk::Os);
        let mut dir = self.open_root()?;
        let root_mount = if write { Some(mount(&dir)?) } else { None };
        for (i, c) in parents.iter().enumerate() {
            let child = open_dir(&dir, c)?;
            if mount_points.contains(&(i + 1))
                && !mounts::is_mount_root(&child, dev(&dir)?, dev(&child)?)
            {
                return Err(Walk::NotMounted);
            }
            dir = child;
        }
        if let Some(root_mount) = root_mount {
            if !parents.is_empty() && mount(&dir)? != root_mount {
                return Err(Walk::OtherDisk);
            }
        }
        Ok((dir, last))
    }

    /// [`Disk::parent`] for a step (one that writes if `write`); `Ok(None)` if a parent is
    /// missing (nothing is at `path`).
    pub(super) fn parent_if_any<'p>(
        &self,
        path: &'p str,
        step: &str,
        write: bool,
    ) -> Step<Option<(OwnedFd, &'p str)>> {
        match self.parent(path, write) {
            Ok(p) => Ok(Some(p)),
            Err(Walk::NoParent) => Ok(None),
            Err(w) => Err(w.answer(step, path)),
        }
    }

    /// [`Disk::parent`] for a step that writes and needs the parent.
    pub(super) fn parent_for<'p>(&self, path: &'p str, step: &str) -> Step<(OwnedFd, &'p str)> {
        self.parent(path, true).map_err(|w| w.answer(step, path))
    }
}
