//! What `lstat` says of a path (never following a symlink), the cache entry it matches, and
//! the index entry it becomes.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use weft_engine::protocol::{Block, FileEntry, FileKind, Version};
use weft_engine::replicate::blocks::Tier;
use weft_sim::folder::SYMLINK_MODE;

use crate::folder::cache::CachedEntry;

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

pub(super) fn ns_of(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// A path's `lstat`: something the scanner reports, or something it skips.
pub(super) enum Found {
    Entry(Stat),
    Special(SkipReason),
}

pub(super) fn classify(m: &Metadata) -> Found {
    let ft = m.file_type();
    let kind = if ft.is_file() {
        FileKind::File
    } else if ft.is_dir() {
        FileKind::Directory
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_fifo() {
        return Found::Special(SkipReason::Fifo);
    } else if ft.is_socket() {
        return Found::Special(SkipReason::Socket);
    } else if ft.is_block_device() {
        return Found::Special(SkipReason::BlockDevice);
    } else if ft.is_char_device() {
        return Found::Special(SkipReason::CharDevice);
    } else {
        return Found::Special(SkipReason::Unreadable("unknown file type".into()));
    };
    Found::Entry(Stat {
        kind,
        size: if kind == FileKind::File { m.size() } else { 0 },
        mtime_ns: ns_of(m.mtime(), m.mtime_nsec()),
        ctime_ns: ns_of(m.ctime(), m.ctime_nsec()),
        inode: m.ino(),
        // The owner's bits; masked to 0-7, so the cast keeps them all.
        mode: ((m.mode() >> 6) & 7) as u8,
        dev: m.dev(),
    })
}

pub(super) fn lstat(path: &Path) -> io::Result<Found> {
    std::fs::symlink_metadata(path).map(|m| classify(&m))
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
