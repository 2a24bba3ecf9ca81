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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use weft_engine::protocol::{Block, FileKind};

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

/// Every path's [`CachedEntry`], by path relative to the folder root (`/`-separated).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// The entries.
    pub entries: BTreeMap<String, CachedEntry>,
}

impl Cache {
    /// The cache as a state blob.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing maps, strings and integers into a Vec cannot fail.
        postcard::to_allocvec(self).expect("postcard encodes a cache into a Vec")
    }

    /// A cache from a state blob; `None` if the blob is not one (it is then rebuilt by
    /// hashing every file once).
    pub fn decode(bytes: &[u8]) -> Option<Cache> {
        postcard::from_bytes(bytes).ok()
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
