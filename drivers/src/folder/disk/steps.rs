//! The storage steps that change the folder or read it for a peer: a block read back, a
//! temp committed (verified, fsynced, renamed into place), a path removed (to the trash),
//! renamed, a directory or symlink made, a mode set.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::MutexGuard;

use bytes::Bytes;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use weft_engine::protocol::{Block, FileKind};
use weft_engine::replicate::{Expect, StorageResult, TempId};

use crate::folder::cache::Cache;
use crate::folder::{TEMP_DIR, TRASH_DIR};

use super::stat::{
    entry_of, forget_tree, holds, infer_tier, inode, keys_under, kind_of, move_tree,
    mtime_ms as stat_mtime_ms, refresh, refresh_unless_written, same_content, size_of,
};
use super::walk::{lstat, read_link, rename_noreplace, sync_dir};
use super::{
    disk_mode, errno_fail, io_fail, ioerr_fail, temp_file_name, Disk, Step, DIR_NOT_EMPTY,
};

impl Disk {
    // Steps.
    pub(super) fn read_block(&self, path: &str, offset: u64, len: u32) -> Step<StorageResult> {
        const STEP: &str = "read block of";
        let Some((dir, name)) = self.parent_if_any(path, STEP, false)? else {
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn commit(
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
        // The group's and others' bits of the file it replaces are kept (a file only).
        let held = before
            .as_ref()
            .filter(|st| kind_of(st) == Some(FileKind::File))
            .map(|st| st.st_mode);
        let bits = disk_mode(mode, held, false, self.umask);
        rfs::fchmod(&file, Mode::from_raw_mode(bits)).map_err(|e| errno_fail(STEP, path, e))?;
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
        // Looked at again just before the file goes, under the lock the scanner compares
        // under: a local save during the fsync above (seconds for a large file) is not
        // replaced (it went to the trash, unreported); the window left is a few syscalls.
        let checked = lstat(&dir, name, STEP, path)?;
        if !holds(checked.as_ref(), expect) {
            return Ok(StorageResult::Changed);
        }
        let kept = match &trash {
            Some(trash) => Some(
                self.to_trash(&dir, name, trash, path, now_unix_ms, true)
                    .map_err(|e| errno_fail("keep the replaced version of", path, e))?,
            ),
            None => None,
        };
        self.at("kept", path);
        if let (Some(trash), Some(kept)) = (&trash, &kept) {
            // A save since that look (an editor's new file renamed over the path): what went
            // to the trash is the file checked, and the path holds another. Nothing is
            // replaced, and the save is found and kept.
            let there = lstat(&dir, name, STEP, path).ok().flatten();
            if !there
                .as_ref()
                .zip(checked.as_ref())
                .is_some_and(|(t, c)| same_content(t, c))
            {
                let _ = rfs::unlinkat(trash, kept.as_str(), AtFlags::empty());
                return Ok(StorageResult::Changed);
            }
        }
        self.at("linked", path);
        let renamed = if before.is_none() {
            rename_noreplace(&tmp, &tname, &dir, name)
        } else {
            rfs::renameat(&tmp, tname.as_str(), &dir, name)
        };
        if renamed.is_err() {
            // Nothing was replaced: the link kept in the trash goes (each retry of a commit
            // that fails, a directory made read-only say, added one, and those pushed older
            // versions out of the bounded trash).
            if let (Some(trash), Some(kept)) = (&trash, &kept) {
                let _ = rfs::unlinkat(trash, kept.as_str(), AtFlags::empty());
            }
        }
        match renamed {
            Ok(()) => self.end_temp(temp),
            Err(Errno::EXIST) => return Ok(StorageResult::Changed),
            Err(e) => return Err(errno_fail(STEP, path, e)),
        }
        self.at("renamed", path);
        // Recorded as written only if what is there is the file committed (its inode), with
        // the time it was given: a save renamed over it in the few calls since is for the
        // scanner to read and report, and so is a file whose disk keeps coarser times (FAT's
        // 2 s) or none so far from the epoch (the engine expects the time it asked for, and
        // only a report tells it what the disk holds).
        match lstat(&dir, name, STEP, path).ok().flatten() {
            Some(st) if inode(&st) == meta.ino() && stat_mtime_ms(&st) == mtime_ms => {
                match entry_of(&st, String::new(), tier, blocks.to_vec()) {
                    Some(e) => {
                        cache.entries.insert(path.to_string(), e);
                    }
                    None => {
                        cache.entries.remove(path);
                    }
                }
            }
            _ => {
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

    pub(super) fn remove(
        &self,
        path: &str,
        expect: &Expect,
        now_unix_ms: i64,
    ) -> Step<StorageResult> {
        const STEP: &str = "remove";
        let Some((dir, name)) = self.parent_if_any(path, STEP, true)? else {
            return Ok(StorageResult::NotFound);
        };
        let Some(st) = lstat(&dir, name, STEP, path)? else {
            return Ok(StorageResult::NotFound);
        };
        if !holds(Some(&st), expect) {
            return Ok(StorageResult::Changed);
        }
        self.at("checked", path);
        if kind_of(&st) == Some(FileKind::Directory) {
            let cache = self.cache.lock();
            let (removed, mut cache) = self.remove_dir_clearing(&dir, name, path, cache);
            match removed {
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
        // Looked at again just before it goes, under the lock the scanner compares under (as
        // a commit does): a local save since the look above is not removed.
        let Some(now) = lstat(&dir, name, STEP, path)? else {
            return Ok(StorageResult::NotFound);
        };
        if !holds(Some(&now), expect) {
            return Ok(StorageResult::Changed);
        }
        self.at("locked", path);
        let trashed = match self.to_trash(&dir, name, &trash, path, now_unix_ms, false) {
            Ok(trashed) => trashed,
            Err(Errno::NOENT) => return Ok(StorageResult::NotFound),
            Err(e) => return Err(errno_fail(STEP, path, e)),
        };
        // A save in the few calls since: what went to the trash is not what was checked. It
        // goes back (unless its name was taken meanwhile, then it stays in the trash) and the
        // step is `Changed`, so the save is found and kept.
        let went = lstat(&trash, &trashed, STEP, path).ok().flatten();
        if !went.as_ref().is_some_and(|w| same_content(w, &now)) {
            if let Err(e) = rename_noreplace(&trash, &trashed, &dir, name) {
                tracing::warn!(path, error = %e, "a save raced a removal: kept in the trash as {trashed}");
            }
            return Ok(StorageResult::Changed);
        }
        forget_tree(&mut cache, path);
        drop(cache);
        sync_dir(&dir, path);
        sync_dir(&trash, path);
        Ok(StorageResult::Done)
    }

    /// Removes the directory `name` in `dir` (`path`), `cache` locked: if only what `(?d)`
    /// rules let go keeps it, that goes first (off the lock, which the scanner and the other
    /// steps wait on), then the directory. Never when the scanner knows something under it:
    /// a file shared before a rule made it deletable (the rules replicate) is no file that was
    /// never shared. Hands the lock back, with what the last removal answered.
    fn remove_dir_clearing<'a>(
        &'a self,
        dir: &OwnedFd,
        name: &str,
        path: &str,
        mut cache: MutexGuard<'a, Cache>,
    ) -> (Result<(), Errno>, MutexGuard<'a, Cache>) {
        let mut removed = rfs::unlinkat(dir, name, AtFlags::REMOVEDIR);
        if matches!(removed, Err(Errno::NOTEMPTY | Errno::EXIST))
            && keys_under(&cache, path).iter().all(|k| k == path)
        {
            drop(cache);
            let cleared = self.clear_deletable(dir, name, path);
            cache = self.cache.lock();
            // What the scanner recorded under it meanwhile stays its business: the
            // directory stays, and the next scan reports what became of it.
            if cleared && keys_under(&cache, path).iter().all(|k| k == path) {
                removed = rfs::unlinkat(dir, name, AtFlags::REMOVEDIR);
            }
        }
        (removed, cache)
    }

    pub(super) fn rename(
        &self,
        from: &str,
        to: &str,
        expect: &Expect,
        over: &Expect,
        now_unix_ms: i64,
    ) -> Step<StorageResult> {
        const STEP: &str = "rename";
        let Some((fdir, fname)) = self.parent_if_any(from, STEP, true)? else {
            return Ok(StorageResult::NotFound);
        };
        let Some(st) = lstat(&fdir, fname, STEP, from)? else {
            return Ok(StorageResult::NotFound);
        };
        if !holds(Some(&st), expect) {
            return Ok(StorageResult::Changed);
        }
        let (tdir, tname) = self.parent_for(to, STEP)?;
        if !holds(lstat(&tdir, tname, STEP, to)?.as_ref(), over) {
            return Ok(StorageResult::Changed);
        }
        // A file or symlink it replaces (a resolve's) is kept in the trash, as a commit keeps
        // what it replaces; a directory it replaces must be empty, and goes.
        let replaces = match over {
            Expect::Present { kind, .. } => Some(*kind),
            Expect::Nothing => None,
        };
        let trash = match replaces {
            Some(FileKind::File | FileKind::Symlink) => {
                Some(self.reserved_for(TRASH_DIR, STEP, to)?)
            }
            _ => None,
        };
        self.at("checked", from);
        let mut cache = self.cache.lock();
        // Looked at again under the lock: a local save since is not moved as if unchanged.
        let Some(st) = lstat(&fdir, fname, STEP, from)? else {
            return Ok(StorageResult::NotFound);
        };
        if !holds(Some(&st), expect) {
            return Ok(StorageResult::Changed);
        }
        let held = lstat(&tdir, tname, STEP, to)?;
        if !holds(held.as_ref(), over) {
            return Ok(StorageResult::Changed);
        }
        self.at("locked", from);
        let kept = match (&trash, held.as_ref()) {
            (Some(trash), Some(_)) => Some(
                self.to_trash(&tdir, tname, trash, to, now_unix_ms, true)
                    .map_err(|e| errno_fail("keep the replaced version of", to, e))?,
            ),
            _ => None,
        };
        self.at("kept", to);
        if let Some(kept) = &kept {
            // A save since the look under the lock (an editor's new file renamed over the
            // path): what went to the trash is the file checked, and the path holds another.
            // Nothing is replaced, and the save is found and kept.
            let there = lstat(&tdir, tname, STEP, to).ok().flatten();
            if !there
                .as_ref()
                .zip(held.as_ref())
                .is_some_and(|(t, c)| same_content(t, c))
            {
                if let Some(trash) = &trash {
                    let _ = rfs::unlinkat(trash, kept.as_str(), AtFlags::empty());
                }
                return Ok(StorageResult::Changed);
            }
        }
        if replaces == Some(FileKind::Directory) {
            let (removed, locked) = self.remove_dir_clearing(&tdir, tname, to, cache);
            cache = locked;
            match removed {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::NOTEMPTY | Errno::EXIST) => return Err(io_fail(DIR_NOT_EMPTY)),
                Err(e) => return Err(errno_fail(STEP, to, e)),
            }
            forget_tree(&mut cache, to);
        }
        let renamed = match (replaces, &kept) {
            // Over the file checked above, linked into the trash: replaced in one call.
            (Some(FileKind::File | FileKind::Symlink), Some(_)) => {
                rfs::renameat(&fdir, fname, &tdir, tname)
            }
            _ => rename_noreplace(&fdir, fname, &tdir, tname),
        };
        if renamed.is_err() {
            if let (Some(trash), Some(kept)) = (&trash, &kept) {
                let _ = rfs::unlinkat(trash, kept.as_str(), AtFlags::empty());
            }
        }
        match renamed {
            Ok(()) => {}
            Err(Errno::EXIST | Errno::NOTEMPTY) => return Ok(StorageResult::Changed),
            Err(Errno::NOENT) => return Ok(StorageResult::NotFound),
            Err(e) => return Err(errno_fail(STEP, from, e)),
        }
        if kept.is_some() {
            cache.entries.remove(to);
        }
        move_tree(&mut cache, from, to);
        let after = lstat(&tdir, tname, STEP, to).ok().flatten();
        refresh_unless_written(&mut cache, to, &st, after.as_ref(), || {
            read_link(&tdir, tname)
        });
        drop(cache);
        sync_dir(&tdir, to);
        sync_dir(&fdir, from);
        if let Some(trash) = &trash {
            sync_dir(trash, to);
        }
        Ok(StorageResult::Done)
    }

    pub(super) fn make_dir(&self, path: &str, mode: u8) -> Step<StorageResult> {
        const STEP: &str = "make directory";
        let (dir, name) = self.parent_for(path, STEP)?;
        let mut cache = self.cache.lock();
        let (created, held) = match lstat(&dir, name, STEP, path)? {
            Some(st) if kind_of(&st) == Some(FileKind::Directory) => (false, Some(st.st_mode)),
            Some(_) => return Ok(StorageResult::Changed),
            None => {
                let bits = disk_mode(mode, None, true, self.umask);
                match rfs::mkdirat(&dir, name, Mode::from_raw_mode(bits)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => return Ok(StorageResult::Changed),
                    Err(e) => return Err(errno_fail(STEP, path, e)),
                }
                // The set-group-ID bit a directory inherits from its parent is kept.
                let inherited = lstat(&dir, name, STEP, path)?.map(|st| st.st_mode & 0o2000);
                (true, Some(bits | inherited.unwrap_or(0)))
            }
        };
        let bits = Mode::from_raw_mode(disk_mode(mode, held, true, self.umask));
        match chmod_nofollow(&dir, name, bits) {
            Ok(()) => {}
            // Swapped for a symlink (or removed) since the lstat above: not ours to change.
            Err(Errno::LOOP | Errno::NOENT) => return Ok(StorageResult::Changed),
            Err(e) => return Err(errno_fail(STEP, path, e)),
        }
        let after = lstat(&dir, name, STEP, path).ok().flatten();
        refresh(&mut cache, path, after.as_ref(), String::new);
        drop(cache);
        if created {
            sync_dir(&dir, path);
        }
        Ok(StorageResult::Done)
    }

    pub(super) fn make_symlink(&self, path: &str, target: &str) -> Step<StorageResult> {
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

    pub(super) fn set_mode(&self, path: &str, mode: u8, expect: &Expect) -> Step<StorageResult> {
        const STEP: &str = "set mode of";
        let Some((dir, name)) = self.parent_if_any(path, STEP, true)? else {
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
        self.at("checked", path);
        let mut cache = self.cache.lock();
        // Looked at again under the lock: a local save since keeps its own mode.
        let Some(st) = lstat(&dir, name, STEP, path)? else {
            return Ok(StorageResult::Changed);
        };
        if !holds(Some(&st), expect) {
            return Ok(StorageResult::Changed);
        }
        self.at("locked", path);
        let is_dir = kind_of(&st) == Some(FileKind::Directory);
        let bits = disk_mode(mode, Some(st.st_mode), is_dir, self.umask);
        match chmod_nofollow(&dir, name, Mode::from_raw_mode(bits)) {
            Ok(()) => {}
            Err(Errno::LOOP | Errno::NOENT) => return Ok(StorageResult::Changed),
            Err(e) => return Err(errno_fail(STEP, path, e)),
        }
        let after = lstat(&dir, name, STEP, path).ok().flatten();
        refresh_unless_written(&mut cache, path, &st, after.as_ref(), String::new);
        Ok(StorageResult::Done)
    }
}

/// `chmod` of `name` in `dir` that never follows a symlink (Linux has no
/// `fchmodat(AT_SYMLINK_NOFOLLOW)` before `fchmodat2`, and opening the file to `fchmod` it
/// would need read permission): the inode is pinned by an `O_PATH | O_NOFOLLOW` descriptor,
/// checked not to be a symlink (`ELOOP` if it is), and changed through its `/proc/self/fd`
/// link, which names that inode whatever happens to `name` meanwhile. Without `/proc` the
/// path is changed after the same check (a swap in between is then a race with a local user).
pub(super) fn chmod_nofollow(
    dir: impl std::os::fd::AsFd,
    name: &str,
    mode: Mode,
) -> rustix::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(&dir, name, flags, Mode::empty())?;
    let kind = FileType::from_raw_mode(rfs::fstat(&fd)?.st_mode);
    if kind == FileType::Symlink {
        return Err(Errno::LOOP);
    }
    // A directory's set-group-ID and sticky bits are kept; a file swapped in for it since the
    // caller looked gets none of them.
    let mode = match kind {
        FileType::Directory => mode,
        _ => Mode::from_raw_mode(mode.as_raw_mode() & 0o777),
    };
    match rfs::chmod(format!("/proc/self/fd/{}", fd.as_raw_fd()), mode) {
        Err(Errno::NOENT) if std::fs::metadata("/proc/self/fd").is_err() => {
            rfs::chmodat(&dir, name, mode, AtFlags::empty())
        }
        other => other,
    }
}
