//! What `lstat` says of a path, whether it holds what a step `Expect`s, and the scanner's
//! cache kept in step with what a step left (entries refreshed, trees moved or forgotten).

use std::fs::File;
use std::os::unix::fs::FileExt;

use rustix::fs::{FileType, Stat};
use weft_engine::protocol::{Block, FileKind};
use weft_engine::replicate::blocks::{tier_of, tier_prefix_len, Tier};
use weft_engine::replicate::Expect;

use crate::folder::cache::{Cache, CachedEntry};

pub(super) fn kind_of(st: &Stat) -> Option<FileKind> {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Some(FileKind::File),
        FileType::Directory => Some(FileKind::Directory),
        FileType::Symlink => Some(FileKind::Symlink),
        _ => None,
    }
}

pub(crate) fn size_of(st: &Stat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

pub(crate) fn mtime_ns(st: &Stat) -> i128 {
    i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec)
}

pub(crate) fn ctime_ns(st: &Stat) -> i128 {
    i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec)
}

pub(super) fn mtime_ms(st: &Stat) -> i64 {
    i64::try_from(mtime_ns(st).div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

// `st_ino` is a `c_ulong` on some targets and a `u64` on others.
#[allow(clippy::useless_conversion)]
pub(crate) fn inode(st: &Stat) -> u64 {
    u64::from(st.st_ino)
}

/// The owner's three mode bits of `st` (0–7).
pub(crate) fn owner_mode(st: &Stat) -> u8 {
    // Masked to three bits: the cast cannot truncate.
    ((st.st_mode >> 6) & 7) as u8
}

/// Whether `expect` holds for what `lstat` found (`None`: nothing): for a file its kind,
/// size, mtime and owner mode bits; for anything else its kind.
pub(super) fn holds(st: Option<&Stat>, expect: &Expect) -> bool {
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

/// What the cache records for `st`; `None` for what is neither file, directory nor symlink.
pub(super) fn entry_of(
    st: &Stat,
    target: String,
    tier: u8,
    blocks: Vec<Block>,
) -> Option<CachedEntry> {
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
pub(super) fn refresh(
    cache: &mut Cache,
    path: &str,
    st: Option<&Stat>,
    target: impl FnOnce() -> String,
) {
    let Some(st) = st else {
        cache.entries.remove(path);
        return;
    };
    let kind = kind_of(st);
    // An entry that only says the index expects something there (`Cache::expect_present`)
    // describes no file: it is not carried over (its empty blocks would be taken for the
    // file's), and the scanner hashes the file.
    let old = cache
        .entries
        .remove(path)
        .filter(|e| Some(e.kind) == kind && !e.is_expected_only());
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

/// Whether `a` and `b` are one file with the same content as far as `lstat` tells: kind,
/// inode, size and mtime (a step's own rename or mode change alters only the ctime and mode).
pub(super) fn same_content(a: &Stat, b: &Stat) -> bool {
    kind_of(a) == kind_of(b)
        && inode(a) == inode(b)
        && size_of(a) == size_of(b)
        && mtime_ns(a) == mtime_ns(b)
}

/// [`refresh`] after a step that changed no content of `path` (a rename, a mode set), unless
/// what is there now (`after`) is not the file checked before the step (`before`): then a
/// local save came in between, and the entry is dropped so the scanner reads and reports it.
pub(super) fn refresh_unless_written(
    cache: &mut Cache,
    path: &str,
    before: &Stat,
    after: Option<&Stat>,
    target: impl FnOnce() -> String,
) {
    match after {
        Some(a) if !same_content(before, a) => {
            cache.entries.remove(path);
        }
        _ => refresh(cache, path, after, target),
    }
}

/// The keys of `path` and of every path under it.
pub(super) fn keys_under(cache: &Cache, path: &str) -> Vec<String> {
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
pub(super) fn forget_tree(cache: &mut Cache, path: &str) {
    for k in keys_under(cache, path) {
        cache.entries.remove(&k);
    }
}

/// Moves the cache entries of `from` and every path under it to `to`.
pub(super) fn move_tree(cache: &mut Cache, from: &str, to: &str) {
    forget_tree(cache, to);
    for k in keys_under(cache, from) {
        if let Some(e) = cache.entries.remove(&k) {
            cache.entries.insert(format!("{to}{}", &k[from.len()..]), e);
        }
    }
}

/// The tier the blocks of a verified file were cut at (`tier_of` on its first bytes); the
/// fresh tier if the file cannot be read.
pub(super) fn infer_tier(file: &File, size: u64, blocks: &[Block]) -> u8 {
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
