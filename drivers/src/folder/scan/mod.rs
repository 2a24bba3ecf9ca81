//! The scanner: finds what changed in a shared folder since it last looked.
//!
//! A [`Scanner::scan`] runs in four steps:
//!
//! 1. **Safety.** The root must be a directory and hold the marker (`.weft/folder`), else the
//!    scan fails with [`ScanError`] and reports nothing: a folder that is gone or unmounted
//!    is never taken for "everything was deleted".
//! 2. **Walk.** Each directory is opened from the root one component at a time without
//!    following a symlink (`O_DIRECTORY | O_NOFOLLOW`), listed, and its children `lstat`ed
//!    and read as links through it: a parent swapped for a symlink during the walk is not
//!    followed out of the folder. Names sorted, so parents
//!    come before their children. Each path is `lstat`ed under the cache lock and compared
//!    with its [`CachedEntry`]: the same kind, size, mtime, ctime, inode and mode means
//!    unchanged, and the path is not read. A name not in NFC is renamed to its NFC form
//!    (peers name paths in NFC), unless taken. The reserved `.weft` folder is skipped whole;
//!    FIFOs, sockets, devices, names that are not UTF-8 or that no peer would take, and what
//!    cannot be read are skipped and listed in [`ScanOutcome::skipped`]. A directory that
//!    cannot be listed keeps everything the cache holds under it.
//! 3. **Hash.** New and changed files whose mtime is at least [`STABLE_MS`] old are read and
//!    cut with the engine's [`chunk`](weft_engine::replicate::blocks::chunk), spread over
//!    every core; a file written to more recently is left for the next scan
//!    ([`ScanOutcome::unstable`]). A file with the inode, size and mtime of a file that is
//!    gone (and not that inode in the cache at its own path: a hard link) is that file
//!    renamed: it is reported as [`LocalChange::Moved`] with its cached blocks, and not
//!    read; unless its mtime is a whole second (`tar`, `cp -p`, a reproducible build's fixed
//!    time), when it is read whole to confirm it: if its blocks are not the cached ones it is
//!    a new file, and the old path is removed (if it cannot be read, both wait).
//! 4. **Record.** The root is checked again; then each change is recorded in the cache
//!    under the lock, for one path at a time, and only if the path's `lstat` is still what
//!    was walked and hashed (else the path is left for the next scan). Paths the cache holds
//!    that the walk did not see are reported removed, children before parents; each removal
//!    first checks that the path is still absent and the marker still present.
//!
//! The disk worker records what it writes in the same cache under the same lock, so the
//! engine's own writes are not reported back ([`observe`] gives the entry a path's `lstat`
//! makes; the disk worker builds the same from the directory it holds open).
//!
//! Step 2 is in `walk.rs` (with `stat.rs` for what `lstat` says), step 3 in `hash.rs`; this
//! module holds the scan itself, its safety checks and its record step.

mod hash;
mod stat;
mod walk;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weft_engine::protocol::PathRefusal;
use weft_engine::replicate::blocks::Tier;
use weft_engine::replicate::paths::IgnoreRules;
use weft_engine::replicate::LocalChange;

use super::cache::{CachedEntry, SharedCache};
use super::{MARKER_FILE, RESERVED_DIR};
use hash::Hashed;
pub use stat::observe;
use stat::{gone, ms_of, Found, Under};
use walk::{under_or_at, Item, Plan, Walk};

/// A file modified less than this long (ms) before the scan is still being written: it is
/// not hashed or reported until a later scan.
pub const STABLE_MS: i64 = 1_000;

/// How long (ms) a file whose mtime is a whole second must have been unchanged to be hashed,
/// if longer than [`STABLE_MS`]: the coarsest mtime of a disk Linux mounts (FAT's, 2 s).
pub const COARSE_MTIME_MS: i64 = 2_000;

/// Why a scan did not run.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The folder's root is missing or not a directory (unmounted, deleted, moved).
    #[error("the folder root {0} is missing or not a directory")]
    RootMissing(PathBuf),
    /// The folder's marker file is missing: the folder is not (or no longer) this one.
    #[error("the folder marker {0} is missing")]
    MarkerMissing(PathBuf),
    /// The folder's marker names another folder (or cannot be read): the directory is not
    /// this folder.
    #[error("the folder marker {0} names another folder")]
    MarkerForeign(PathBuf),
    /// The root could not be listed, or the scan could not go on.
    #[error("scanning the folder failed: {0}")]
    Io(String),
    /// The scan was told to stop ([`Scanner::stop_with`]): it recorded and reported nothing.
    #[error("the scan was stopped")]
    Stopped,
}

/// Why a path found on disk was not reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A block device.
    BlockDevice,
    /// A character device.
    CharDevice,
    /// Its name (or a symlink's target) is not UTF-8.
    NotUtf8,
    /// Its path is one no peer would take (a `\` or control character, too long, …).
    BadName(PathRefusal),
    /// Its name is not in Unicode NFC (as peers name paths) and could not be renamed to its
    /// NFC form: another path has that name.
    NfcNameTaken,
    /// It could not be read or listed (one line, for logs).
    Unreadable(String),
    /// A directory that was a mount point and is one no longer (the disk is not mounted):
    /// nothing under it is walked or removed until it is mounted again.
    Unmounted,
    /// A file too large ever to be shared: more than `FILE_BLOCKS_MAX` blocks of its tier's
    /// longest (4 TiB at the largest tier). Not read (a sparse file of that size would take
    /// the scanner hours), and an earlier record of the path, if any, is not removed.
    TooLarge,
}

/// What one scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// The changes, parents before children (removals children first), ending with
    /// [`LocalChange::ScanDone`] when the scan was complete. (It is not when the marker
    /// vanished while changes were being recorded: what was recorded is here, and the next
    /// scan fails with the error.)
    pub changes: Vec<LocalChange>,
    /// Paths found but not reported, and why (the path is lossy if not UTF-8).
    pub skipped: Vec<(String, SkipReason)>,
    /// Files seen changing but still being written (or changed while hashed): reported by a
    /// later scan.
    pub unstable: usize,
    /// Bytes read and hashed.
    pub hashed_bytes: u64,
    /// Files read and hashed.
    pub hashed_files: u64,
    /// Regular files seen, changed or not.
    pub files: u64,
    /// The earliest time (Unix ms) at which a file left as still being written will have
    /// been stable for [`STABLE_MS`] if it is not written again: when the next scan can
    /// report it. `None` if no file was left for that reason.
    pub settles_at_ms: Option<i64>,
}

/// The scanner of one shared folder on disk.
#[derive(Debug, Clone)]
pub struct Scanner {
    root: PathBuf,
    cache: SharedCache,
    stable_ms: i64,
    threads: usize,
    /// The folder's `.weftignore` rules: an ignored path is not walked, and what the cache
    /// holds at or under it is neither reported nor removed.
    ignore: IgnoreRules,
    /// The folder's id, which its marker must name (if set, [`Scanner::for_folder`]).
    folder_id: Option<String>,
    /// Called with the root and each path the walk has just `lstat`ed: a test changes the
    /// folder there, between the walk's steps.
    #[cfg(test)]
    after_lstat: Option<fn(&Path, &str)>,
    /// Set when the scan is to stop (the node is stopping): checked between paths and
    /// between files hashed, so a shutdown does not wait for a whole scan.
    stop: Arc<std::sync::atomic::AtomicBool>,
}

fn io_line(e: &io::Error) -> String {
    e.to_string()
}

/// The scan was cut short while recording: the marker vanished.
struct Interrupted;

impl Scanner {
    /// A scanner of the folder at `root` (absolute), sharing `cache` with the disk worker,
    /// hashing on every core, waiting [`STABLE_MS`] for files being written.
    pub fn new(root: PathBuf, cache: SharedCache) -> Scanner {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Scanner {
            root,
            cache,
            stable_ms: STABLE_MS,
            threads,
            ignore: IgnoreRules::default(),
            folder_id: None,
            #[cfg(test)]
            after_lstat: None,
            stop: Arc::default(),
        }
    }

    /// A scan from now on ends with [`ScanError::Stopped`] soon after `stop` is set.
    pub fn stop_with(&mut self, stop: Arc<std::sync::atomic::AtomicBool>) {
        self.stop = stop;
    }

    /// Whether the scan is to stop.
    fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Uses `rules` (the folder's `.weftignore`) from the next scan on.
    pub fn set_ignore_rules(&mut self, rules: IgnoreRules) {
        self.ignore = rules;
    }

    /// The same scanner, whose folder's marker must name folder `id`.
    pub fn for_folder(mut self, id: String) -> Scanner {
        self.folder_id = Some(id);
        self
    }

    /// The same scanner hashing on `threads` threads (at least one).
    pub fn with_threads(mut self, threads: usize) -> Scanner {
        self.threads = threads.max(1);
        self
    }

    /// The same scanner waiting `stable_ms` for files being written.
    pub fn with_stable_ms(mut self, stable_ms: i64) -> Scanner {
        self.stable_ms = stable_ms.max(0);
        self
    }

    /// The folder's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cache the scanner shares.
    pub fn cache(&self) -> &SharedCache {
        &self.cache
    }

    fn marker(&self) -> PathBuf {
        self.root.join(RESERVED_DIR).join(MARKER_FILE)
    }

    /// Fails unless the root is a directory holding the marker.
    fn check_root(&self) -> Result<(), ScanError> {
        // The root itself may be a symlink to the folder (followed); nothing under it is.
        if !std::fs::metadata(&self.root).is_ok_and(|m| m.is_dir()) {
            return Err(ScanError::RootMissing(self.root.clone()));
        }
        if !self.marker_present() {
            return Err(ScanError::MarkerMissing(self.marker()));
        }
        if let Some(id) = &self.folder_id {
            match crate::folder::disk::marker_names(&self.marker(), id) {
                Ok(true) => {}
                Ok(false) => return Err(ScanError::MarkerForeign(self.marker())),
                // Out of descriptors, an I/O error: the scan is tried again later.
                Err(e) => return Err(ScanError::Io(format!("{}: {e}", self.marker().display()))),
            }
        }
        Ok(())
    }

    fn marker_present(&self) -> bool {
        std::fs::symlink_metadata(self.marker()).is_ok_and(|m| m.is_file())
    }

    /// A full scan at `now_unix_ms`: walks the tree, compares each path with the cache,
    /// hashes new and changed files on every core, records what it reports in the cache and
    /// returns it (see the module doc). Fails, reporting and recording nothing, if the root
    /// or the marker is missing before or after the walk.
    pub fn scan(&self, now_unix_ms: i64) -> Result<ScanOutcome, ScanError> {
        self.check_root()?;
        let mut walk = self.walk()?;
        let mut out = ScanOutcome {
            skipped: std::mem::take(&mut walk.skipped),
            files: walk.files,
            ..ScanOutcome::default()
        };

        // What the cache holds that the walk did not see.
        let mut removed: BTreeMap<String, CachedEntry> = {
            let cache = self.cache.lock();
            cache
                .entries
                .iter()
                .filter(|(p, _)| {
                    !walk.seen.contains(*p)
                        && !walk.is_protected(p)
                        && !weft_engine::replicate::paths::is_reserved(p)
                })
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect()
        };
        self.plan_moves(&mut walk, &mut removed);

        // Files still being written wait for the next scan.
        let stable_ms = self.stable_ms;
        let before = walk.items.len();
        let mut settles_at_ms: Option<i64> = None;
        walk.items.retain(|item| {
            let mtime = item.stat.mtime_ms();
            // A whole-second mtime may be a coarse disk's (FAT rounds down to 2 s): a write
            // within its granularity after the scan would leave it as it is, unseen.
            let whole_second = item.stat.mtime_ns.rem_euclid(1_000_000_000) == 0;
            let stable_ms = if whole_second && stable_ms > 0 {
                stable_ms.max(COARSE_MTIME_MS)
            } else {
                stable_ms
            };
            // A mtime far in the future is a clock or an archive's, not a write under way.
            let writing = mtime > now_unix_ms.saturating_sub(stable_ms)
                && mtime < now_unix_ms.saturating_add(stable_ms);
            let wait = matches!(item.plan, Plan::Hash(_)) && writing;
            if wait {
                let at = mtime.saturating_add(stable_ms);
                settles_at_ms = Some(settles_at_ms.map_or(at, |t| t.min(at)));
            }
            !wait
        });
        out.settles_at_ms = settles_at_ms;
        out.unstable += before - walk.items.len();

        let mut hashed = self.hash_all(&walk.items)?;
        for h in hashed.iter().flatten() {
            if let (Hashed::Blocks(_), size) = h {
                out.hashed_files += 1;
                out.hashed_bytes += size;
            }
        }

        // Nothing is recorded yet: a root that vanished during the walk fails the scan here.
        self.check_root()?;
        if self
            .record(&mut walk, &mut hashed, &mut removed, &mut out)
            .is_ok()
        {
            self.record_mount_points(&walk);
            out.changes.push(LocalChange::ScanDone);
        }
        Ok(out)
    }

    /// Keeps the mount points the walk found, and those the cache holds under what it did
    /// not walk; marks the cache to be persisted if they changed.
    fn record_mount_points(&self, walk: &Walk) {
        let mut cache = self.cache.lock();
        let mut mount_points = walk.mount_points.clone();
        mount_points.extend(
            cache
                .mount_points
                .iter()
                .filter(|m| walk.is_protected(m))
                .cloned(),
        );
        if mount_points != cache.mount_points {
            cache.mount_points = mount_points;
            self.cache.mark_written();
        }
    }

    /// Records the walk's findings in the cache, one path at a time, and reports them.
    fn record(
        &self,
        walk: &mut Walk,
        hashed: &mut [Option<(Hashed, u64)>],
        removed: &mut BTreeMap<String, CachedEntry>,
        out: &mut ScanOutcome,
    ) -> Result<(), Interrupted> {
        let mut under = Under::new(&self.root);
        for (i, item) in std::mem::take(&mut walk.items).into_iter().enumerate() {
            if walk.no_longer_dirs.contains(&item.path) {
                let children: Vec<String> = removed
                    .range(format!("{}/", item.path)..)
                    .take_while(|(p, _)| under_or_at(p, &item.path))
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in children.into_iter().rev() {
                    removed.remove(&p);
                    self.remove(&mut under, &p, out)?;
                }
            }
            let hash = hashed.get_mut(i).and_then(Option::take).map(|(h, _)| h);
            if let Some(not_moved) = self.record_item(&mut under, item, hash, out) {
                self.remove(&mut under, &not_moved, out)?;
            }
        }
        let rest = std::mem::take(removed);
        for p in rest.into_keys().rev() {
            self.remove(&mut under, &p, out)?;
        }
        Ok(())
    }

    /// Records one changed path, if it is still what was walked (and hashed). Returns the
    /// path a planned rename was from when the file's content shows it was no rename (that
    /// path is gone all the same: its removal is reported next).
    fn record_item(
        &self,
        under: &mut Under,
        item: Item,
        hash: Option<Hashed>,
        out: &mut ScanOutcome,
    ) -> Option<String> {
        let Item { path, stat, plan } = item;
        let mut cache = self.cache.lock();
        match under.lstat(&path) {
            Ok(Found::Entry(now)) if now == stat => {}
            // Recorded by the disk worker since the walk: its own write.
            Ok(Found::Entry(now)) if cache.entries.get(&path).is_some_and(|c| now.matches(c)) => {
                return None;
            }
            _ => {
                out.unstable += 1;
                return None;
            }
        }
        let cached = cache.entries.get(&path);
        let (report, entry) = match plan {
            Plan::Dir => {
                let report = cached.is_none_or(|c| c.kind != stat.kind || c.mode != stat.mode);
                (report, stat.cached(String::new(), Tier::MIN, Vec::new()))
            }
            Plan::Symlink(target) => {
                let report = cached.is_none_or(|c| c.kind != stat.kind || c.target != target);
                (report, stat.cached(target, Tier::MIN, Vec::new()))
            }
            Plan::Hash(tier) => match hash {
                Some(Hashed::Blocks(blocks)) => {
                    let report = cached.is_none_or(|c| {
                        c.kind != stat.kind
                            || c.blocks != blocks
                            || c.mode != stat.mode
                            || c.size != stat.size
                            || ms_of(c.mtime_ns) != stat.mtime_ms()
                    });
                    (report, stat.cached(String::new(), tier, blocks))
                }
                Some(Hashed::Failed(why)) => {
                    out.skipped.push((path, SkipReason::Unreadable(why)));
                    return None;
                }
                Some(Hashed::Changed) | None => {
                    out.unstable += 1;
                    return None;
                }
            },
            Plan::Move {
                from,
                cached: old,
                confirm,
            } => {
                let from_gone = gone(&under.lstat(&from));
                if !from_gone || cache.entries.get(&from) != Some(&old) {
                    // Not the rename it looked like any more: looked at again next time.
                    out.unstable += 1;
                    return None;
                }
                match (confirm, hash) {
                    (false, _) => {}
                    (true, Some(Hashed::Blocks(blocks))) if blocks == old.blocks => {}
                    // Another file took the removed one's inode: a new file, and the old path
                    // gone all the same.
                    (true, Some(Hashed::Blocks(blocks))) => {
                        let tier = Tier::from_index(old.tier).unwrap_or(Tier::MIN);
                        let entry = stat.entry(&path, String::new(), blocks.clone());
                        out.changes.push(LocalChange::Changed(entry));
                        cache
                            .entries
                            .insert(path, stat.cached(String::new(), tier, blocks));
                        return Some(from);
                    }
                    // Unreadable: nothing is known of it, and the old path stays until it is.
                    (true, Some(Hashed::Failed(why))) => {
                        out.skipped.push((path, SkipReason::Unreadable(why)));
                        return None;
                    }
                    (true, _) => {
                        out.unstable += 1;
                        return None;
                    }
                }
                cache.entries.remove(&from);
                let tier = Tier::from_index(old.tier).unwrap_or(Tier::MIN);
                let to = stat.entry(&path, String::new(), old.blocks.clone());
                cache
                    .entries
                    .insert(path, stat.cached(String::new(), tier, old.blocks));
                out.changes.push(LocalChange::Moved { from, to });
                return None;
            }
        };
        if report {
            out.changes.push(LocalChange::Changed(stat.entry(
                &path,
                entry.target.clone(),
                entry.blocks.clone(),
            )));
        }
        cache.entries.insert(path, entry);
        None
    }

    /// Reports `path` removed if it is still absent, the marker still present, and the cache
    /// still holds it (the disk worker drops what it removes itself).
    fn remove(
        &self,
        under: &mut Under,
        path: &str,
        out: &mut ScanOutcome,
    ) -> Result<(), Interrupted> {
        let mut cache = self.cache.lock();
        if !gone(&under.lstat(path)) {
            // Something is there again, or it cannot be told: the next scan sees.
            return Ok(());
        }
        if !self.marker_present() {
            return Err(Interrupted);
        }
        if cache.entries.remove(path).is_some() {
            out.changes.push(LocalChange::Removed {
                path: path.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
