//! What `lstat` says of a path (never following a symlink), the cache entry it matches, and
//! the index entry it becomes.

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType};

use weft_engine::protocol::{Block, FileEntry, FileKind, Version};
use weft_engine::replicate::blocks::Tier;
use weft_sim::folder::SYMLINK_MODE;

use crate::folder::cache::CachedEntry;
use crate::folder::disk::{ctime_ns, inode, mtime_ns, owner_mode, size_of};

use super::SkipReason;

/// What `lstat` says of a path, as the cache compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    pub(super) kind: FileKind,
    /// 0 for directories and symlinks.
    pub(super) size: u64,
    pub(super) mtime_ns: i128,
    pub(super) ctime_ns: i128,
    pub(super) inode: u64,
    pub(super) mode: u8,
    /// The device (filesystem) it is on: a directory on another device than its parent's
    /// is a mount point.
    pub(super) dev: u64,
}

impl Stat {
    pub(super) fn mtime_ms(&self) -> i64 {
        ms_of(self.mtime_ns)
    }

    /// Whether `c` was recorded from this very `lstat`.
    pub(super) fn matches(&self, c: &CachedEntry) -> bool {
        c.kind == self.kind
            && c.size == self.size
            && c.mtime_ns == self.mtime_ns
            && c.ctime_ns == self.ctime_ns
            && c.inode == self.inode
            && c.mode == self.mode
    }

    pub(super) fn cached(&self, target: String, tier: Tier, blocks: Vec<Block>) -> CachedEntry {
        CachedEntry {
            kind: self.kind,
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            inode: self.inode,
            mode: self.mode,
            target,
            tier: tier.index(),
            blocks,
        }
    }

    pub(super) fn entry(&self, path: &str, target: String, blocks: Vec<Block>) -> FileEntry {
        FileEntry {
            path: path.to_string(),
            kind: self.kind,
            target,
            mode: if self.kind == FileKind::Symlink {
                SYMLINK_MODE
            } else {
                self.mode
            },
            size: self.size,
            mtime_ms: self.mtime_ms(),
            modified_by: 0,
            version: Version::default(),
            sequence: 0,
            blocks,
        }
    }
}

/// Nanoseconds to milliseconds, rounding down, saturating.
pub(super) fn ms_of(ns: i128) -> i64 {
    let ms = ns.div_euclid(1_000_000);
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

/// A path's `lstat`: something the scanner reports, or something it skips.
pub(super) enum Found {
    Entry(Stat),
    Special(SkipReason),
}

pub(super) fn classify(st: &rfs::Stat) -> Found {
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => FileKind::File,
        FileType::Directory => FileKind::Directory,
        FileType::Symlink => FileKind::Symlink,
        FileType::Fifo => return Found::Special(SkipReason::Fifo),
        FileType::Socket => return Found::Special(SkipReason::Socket),
        FileType::BlockDevice => return Found::Special(SkipReason::BlockDevice),
        FileType::CharacterDevice => return Found::Special(SkipReason::CharDevice),
        FileType::Unknown => {
            return Found::Special(SkipReason::Unreadable("unknown file type".into()))
        }
    };
    Found::Entry(Stat {
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
        dev: crate::folder::mounts::dev_of(st),
    })
}

/// The `lstat` of an absolute path (only its last component is not followed).
pub(super) fn lstat(path: &Path) -> io::Result<Found> {
    Ok(classify(&rfs::lstat(path)?))
}

/// The `lstat` of paths under a folder's root that never follows a symlink in any component
/// (the root itself may be one): a path's parent is opened from the root one directory at a
/// time, and a parent that is a symlink reads `NotADirectory`, one missing or not a directory
/// `NotFound`, so what was under them is [`gone`]. The last parent opened is kept for the
/// next path in it (the record step takes paths in order): a parent swapped since it was
/// opened is seen by the next scan.
pub(super) struct Under<'r> {
    root: &'r Path,
    parent: Option<(String, std::os::fd::OwnedFd)>,
}

impl<'r> Under<'r> {
    pub(super) fn new(root: &'r Path) -> Under<'r> {
        Under { root, parent: None }
    }

    /// The `lstat` of `path`, relative to the root. An answer that it is [`gone`] through a
    /// parent kept from before is looked up again from the root (the parent may have been
    /// renamed or replaced since: a removal reported is not taken back).
    pub(super) fn lstat(&mut self, path: &str) -> io::Result<Found> {
        let (dir, name) = match path.rfind('/') {
            Some(slash) => (&path[..slash], &path[slash + 1..]),
            None => ("", path),
        };
        if let Some((_, fd)) = self.parent.as_ref().filter(|(held, _)| held == dir) {
            let found = lstat_at(fd, name);
            if !gone(&found) {
                return found;
            }
        }
        self.parent = None;
        let fd = crate::folder::disk::open_dir_under(self.root, dir)?;
        let found = lstat_at(&fd, name);
        self.parent = Some((dir.to_string(), fd));
        found
    }
}

/// The `fstat` of an open file or directory.
pub(super) fn lstat_fd(fd: impl AsFd) -> io::Result<Found> {
    Ok(classify(&rfs::fstat(fd)?))
}

/// The `lstat` of `name` in directory `dir`.
pub(super) fn lstat_at(dir: impl AsFd, name: &str) -> io::Result<Found> {
    Ok(classify(&rfs::statat(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
    )?))
}

/// Whether an `lstat` says nothing the scanner reports is there: nothing at all, a parent
/// that is no longer a directory, or a special file.
pub(super) fn gone(found: &io::Result<Found>) -> bool {
    match found {
        Ok(Found::Special(_)) => true,
        Ok(Found::Entry(_)) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
        ),
    }
}

/// The entry the cache should hold for what is at `path` now (an absolute path, never
/// followed), given the blocks and tier its content was cut at (for a file; ignored for the
/// other kinds). `None` if nothing the scanner reports is there. The disk worker records
/// this for each path it writes, under the cache lock, so the scanner does not report the
/// write back.
pub fn observe(path: &Path, tier: Tier, blocks: Vec<Block>) -> io::Result<Option<CachedEntry>> {
    let Found::Entry(stat) = lstat(path)? else {
        return Ok(None);
    };
    Ok(Some(match stat.kind {
        FileKind::File => stat.cached(String::new(), tier, blocks),
        FileKind::Directory => stat.cached(String::new(), Tier::MIN, Vec::new()),
        FileKind::Symlink => {
            let target = std::fs::read_link(path)?
                .into_os_string()
                .into_string()
                .map_err(|_| io::Error::other("symlink target is not UTF-8"))?;
            stat.cached(target, Tier::MIN, Vec::new())
        }
    }))
}
