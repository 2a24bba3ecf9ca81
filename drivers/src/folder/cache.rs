//! What the scanner last saw of each path of a shared folder, shared with the disk worker.
//!
//! A path whose `lstat` still gives the same kind, size, mtime, ctime and inode is unchanged
//! and is not read again. The disk worker records what it writes (a commit, a rename, a
//! remove, a new directory or symlink) here under the same lock the scanner holds while it
//! compares a path, so the engine's own writes are never reported back as local changes.
//!
//! The cache is persisted in the node's store (a state blob, postcard-encoded) so that a
//! restart does not rehash unchanged files: after a scan that found local changes, at most
//! every `CACHE_PERSIST_WAIT` after storage steps wrote to the folder, and when the node
//! stops.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use weft_engine::protocol::{Block, FileEntry, FileKind};
use weft_engine::replicate::{LocalChange, Record};

/// What the scanner saw of one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedEntry {
    /// File, directory or symlink.
    pub kind: FileKind,
    /// Size, bytes (0 for directories and symlinks).
    pub size: u64,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i128,
    /// Inode change time, ns since the Unix epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub inode: u64,
    /// Owner mode bits 0–7.
    pub mode: u8,
    /// A symlink's target.
    pub target: String,
    /// The chunking tier the file was cut at (`Tier::index`).
    pub tier: u8,
    /// Its blocks as last hashed.
    pub blocks: Vec<Block>,
}

impl CachedEntry {
    /// Whether this entry only says the index expects something at its path
    /// ([`Cache::expect_present`]): no file was ever seen there (no inode, no time).
    pub fn is_expected_only(&self) -> bool {
        self.inode == 0 && self.mtime_ns == i128::MIN
    }
}

/// Every path's [`CachedEntry`], by path relative to the folder root (`/`-separated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// The entries.
    pub entries: BTreeMap<String, CachedEntry>,
    /// The directories that were mount points (on another device than their parent) when
    /// last walked, kept while such a directory is there but no longer a mount point: what
    /// the cache holds under it is then neither walked nor removed (SPEC.md §22.10).
    pub mount_points: BTreeSet<String>,
}

impl Cache {
    /// The cache as a state blob.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing maps, strings and integers into a Vec cannot fail.
        postcard::to_allocvec(self).expect("postcard encodes a cache into a Vec")
    }

    /// Forgets every entry that does not describe what `index` (the engine's record of the
    /// path: `None` if it has none) holds, so that the next scan hashes that path again and
    /// reports it; returns how many it forgot. The cache is persisted apart from the engine's
    /// state, so a crash can leave it ahead of the index (a local edit cached, then lost with
    /// the index's last `persist_delay`; a peer's update written, then lost the same way):
    /// such a path would never be reported again, and never synced.
    ///
    /// A file whose modification time alone differs from its record's (touched, saved again
    /// unchanged, or holding a peer's identical content under the peer's time) is kept, and
    /// returned as the change to report, built from the entry (its blocks are the record's:
    /// nothing is read): the engine keeps what is on disk there in memory only, and after a
    /// restart steps at the path expected the record's time and were refused for good.
    pub fn forget_unlike(
        &mut self,
        index: impl Fn(&str) -> Option<Record>,
    ) -> (usize, Vec<LocalChange>) {
        let before = self.entries.len();
        let mut times = Vec::new();
        self.entries.retain(|path, entry| {
            let Some(r) = index(path).filter(|r| agrees(entry, r)) else {
                return false;
            };
            let ms = i64::try_from(entry.mtime_ns.div_euclid(1_000_000)).unwrap_or(i64::MAX);
            if entry.kind == FileKind::File && ms != r.entry.mtime_ms {
                times.push(LocalChange::Changed(FileEntry {
                    mtime_ms: ms,
                    ..r.entry.clone()
                }));
            }
            true
        });
        (before - self.entries.len(), times)
    }

    /// Gives every present record of `records` that the cache holds no entry for an entry no
    /// file on disk matches (no inode, no time), so that the next scan looks at its path:
    /// gone, it is reported removed; there, hashed and reported. The cache is persisted
    /// before the engine's index, so a crash can leave the cache without a path the index
    /// still holds (a local deletion scanned, its record lost with the index's last
    /// `persist_delay`): removals are found only from cache entries, and the deletion was
    /// never announced. Returns how many it gave.
    pub fn expect_present<'a>(&mut self, records: impl Iterator<Item = &'a Record>) -> usize {
        let mut given = 0;
        for r in records.filter(|r| !r.deleted) {
            let e = &r.entry;
            if self.entries.contains_key(&e.path) {
                continue;
            }
            self.entries.insert(
                e.path.clone(),
                CachedEntry {
                    kind: e.kind,
                    size: e.size,
                    mtime_ns: i128::MIN,
                    ctime_ns: i128::MIN,
                    inode: 0,
                    mode: e.mode,
                    target: e.target.clone(),
                    tier: 0,
                    blocks: Vec::new(),
                },
            );
            given += 1;
        }
        given
    }

    /// A cache from a state blob; `None` if the blob is not one (it is then rebuilt by
    /// hashing every file once). A blob from before mount points were kept (the same without
    /// the last field) is read as holding none: rebuilding it would forget the files deleted
    /// while the node was down, which the scanner reports removed only from its cache.
    pub fn decode(bytes: &[u8]) -> Option<Cache> {
        postcard::from_bytes(bytes).ok().or_else(|| {
            // No mount points: an empty set, one zero byte, at the end.
            let mut with_mount_points = bytes.to_vec();
            with_mount_points.push(0);
            postcard::from_bytes(&with_mount_points).ok()
        })
    }
}

/// Whether `entry` describes what `record` holds: present, of the same kind and owner mode,
/// and a file of the same blocks, or a symlink to the same target.
fn agrees(entry: &CachedEntry, record: &Record) -> bool {
    let e = &record.entry;
    !record.deleted
        && entry.kind == e.kind
        && entry.mode == e.mode
        && match entry.kind {
            FileKind::File => entry.size == e.size && entry.blocks == e.blocks,
            FileKind::Symlink => entry.target == e.target,
            FileKind::Directory => true,
        }
}

/// A [`Cache`] shared by a folder's scanner and its disk worker.
#[derive(Debug, Clone, Default)]
pub struct SharedCache {
    cache: Arc<Mutex<Cache>>,
    /// Set when a storage step wrote to the folder (and so to the cache) since the cache
    /// was last taken to be persisted.
    written: Arc<AtomicBool>,
}

impl SharedCache {
    /// A shared cache holding `cache`.
    pub fn new(cache: Cache) -> SharedCache {
        SharedCache {
            cache: Arc::new(Mutex::new(cache)),
            written: Arc::default(),
        }
    }

    /// The cache, locked (even if a thread panicked while holding it: every change is one
    /// map insert or remove, so it stays consistent).
    pub fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A storage step wrote to the folder: what it recorded is to be persisted.
    pub fn mark_written(&self) {
        self.written.store(true, Ordering::Release);
    }

    /// Whether a storage step wrote since the cache was last taken to be persisted.
    pub fn is_written(&self) -> bool {
        self.written.load(Ordering::Acquire)
    }

    /// The cache as a state blob, to be persisted; clears [`SharedCache::is_written`].
    pub fn take_blob(&self) -> Vec<u8> {
        let cache = self.lock();
        // Cleared under the lock: a step that writes after this sets it again.
        self.written.store(false, Ordering::Release);
        cache.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_engine::protocol::{FileEntry, Version};

    fn cached(kind: FileKind, size: u64, hash: u8, target: &str) -> CachedEntry {
        CachedEntry {
            kind,
            size,
            mtime_ns: 1,
            ctime_ns: 1,
            inode: 1,
            mode: 6,
            target: target.into(),
            tier: 0,
            blocks: blocks(size, hash),
        }
    }

    fn blocks(size: u64, hash: u8) -> Vec<Block> {
        if size == 0 {
            return Vec::new();
        }
        let len = u32::try_from(size).expect("small");
        vec![Block {
            offset: 0,
            len,
            hash: [hash; 32],
        }]
    }

    fn record(path: &str, kind: FileKind, size: u64, hash: u8, target: &str) -> Record {
        Record {
            entry: FileEntry {
                path: path.into(),
                kind,
                target: target.into(),
                mode: 6,
                size,
                mtime_ms: 0,
                modified_by: 1,
                version: Version::default(),
                sequence: 1,
                blocks: blocks(size, hash),
            },
            deleted: false,
        }
    }

    /// What a crash can leave: the cache ahead of (or behind) the engine's index. Every path
    /// whose cached state is not the index's record is forgotten, so the next scan hashes it
    /// and reports it (a local edit the index lost is then announced after all).
    #[test]
    fn entries_unlike_the_index_are_forgotten() {
        let mut cache = Cache::default();
        let entries = [
            ("same.txt", cached(FileKind::File, 10, 1, "")),
            ("edited.txt", cached(FileKind::File, 10, 2, "")),
            ("resized.txt", cached(FileKind::File, 12, 1, "")),
            ("new.txt", cached(FileKind::File, 10, 1, "")),
            ("gone.txt", cached(FileKind::File, 10, 1, "")),
            ("dir", cached(FileKind::Directory, 0, 0, "")),
            ("link", cached(FileKind::Symlink, 0, 0, "elsewhere")),
            ("was-a-dir", cached(FileKind::File, 10, 1, "")),
            ("touched.txt", cached(FileKind::File, 10, 1, "")),
        ];
        for (path, entry) in entries {
            cache.entries.insert(path.into(), entry);
        }
        let index = |path: &str| match path {
            "same.txt" | "edited.txt" => Some(record(path, FileKind::File, 10, 1, "")),
            "touched.txt" => {
                let mut r = record(path, FileKind::File, 10, 1, "");
                r.entry.mtime_ms = 7;
                Some(r)
            }
            "resized.txt" => Some(record(path, FileKind::File, 10, 1, "")),
            "gone.txt" => {
                let mut r = record(path, FileKind::File, 10, 1, "");
                r.deleted = true;
                Some(r)
            }
            "dir" | "was-a-dir" => Some(record(path, FileKind::Directory, 0, 0, "")),
            "link" => Some(record(path, FileKind::Symlink, 0, 0, "target")),
            _ => None,
        };
        let (forgotten, times) = cache.forget_unlike(index);
        assert_eq!(forgotten, 6);
        let kept: Vec<&str> = cache.entries.keys().map(String::as_str).collect();
        assert_eq!(kept, ["dir", "same.txt", "touched.txt"]);
        // Its time alone differs: reported from the entry (nothing read), at its own time.
        match &times[..] {
            [LocalChange::Changed(e)] => {
                assert_eq!((e.path.as_str(), e.mtime_ms), ("touched.txt", 0));
                assert_eq!(e.blocks, blocks(10, 1));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A blob of the format before mount points were kept still loads (its entries kept, so
    /// files deleted while the node was down are still reported removed), and the blob of a
    /// cache with mount points keeps them.
    #[test]
    fn a_blob_without_mount_points_still_loads() {
        let mut cache = Cache::default();
        cache
            .entries
            .insert("a.txt".into(), cached(FileKind::File, 3, 7, ""));
        let mut old = cache.encode();
        assert_eq!(old.pop(), Some(0), "the empty set of mount points, last");
        assert_eq!(Cache::decode(&old), Some(cache.clone()));
        cache.mount_points.insert("disk".into());
        assert_eq!(Cache::decode(&cache.encode()), Some(cache));
        assert_eq!(Cache::decode(b"not a cache"), None);
    }
}
