//! The scanner: finds what changed in a shared folder since it last looked.
//!
//! A [`Scanner::scan`] runs in four steps:
//!
//! 1. **Safety.** The root must be a directory and hold the marker (`.weft/folder`), else the
//!    scan fails with [`ScanError`] and reports nothing: a folder that is gone or unmounted
//!    is never taken for "everything was deleted".
//! 2. **Walk.** `read_dir` and `lstat` (never following a symlink), names sorted, so parents
//!    come before their children. Each path is `lstat`ed under the cache lock and compared
//!    with its [`CachedEntry`]: the same kind, size, mtime, ctime, inode and mode means
//!    unchanged, and the path is not read. The reserved `.weft` folder is skipped whole;
//!    FIFOs, sockets, devices, names that are not UTF-8 or that no peer would take, and what
//!    cannot be read are skipped and listed in [`ScanOutcome::skipped`]. A directory that
//!    cannot be listed keeps everything the cache holds under it.
//! 3. **Hash.** New and changed files whose mtime is at least [`STABLE_MS`] old are read and
//!    cut with the engine's [`chunk`], spread over every core; a file written to more
//!    recently is left for the next scan ([`ScanOutcome::unstable`]). A new file with the
//!    inode, size and mtime of a file that is gone is that file renamed: it is reported as
//!    [`LocalChange::Moved`] with its cached blocks, and not read.
//! 4. **Record.** The root is checked again; then each change is recorded in the cache
//!    under the lock, for one path at a time, and only if the path's `lstat` is still what
//!    was walked and hashed (else the path is left for the next scan). Paths the cache holds
//!    that the walk did not see are reported removed, children before parents; each removal
//!    first checks that the path is still absent and the marker still present.
//!
//! The disk worker records what it writes in the same cache under the same lock, so the
//! engine's own writes are not reported back ([`observe`] gives it the entry to record).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use weft_engine::protocol::{Block, FileEntry, FileKind, PathRefusal, Version};
use weft_engine::replicate::blocks::{tier_for, StreamChunker, Tier};
use weft_engine::replicate::paths::check_path;
use weft_engine::replicate::LocalChange;
use weft_sim::folder::SYMLINK_MODE;

use super::cache::{CachedEntry, SharedCache};
use super::{MARKER_FILE, RESERVED_DIR};

/// A file modified less than this long (ms) before the scan is still being written: it is
/// not hashed or reported until a later scan.
pub const STABLE_MS: i64 = 1_000;

/// Why a scan did not run.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The folder's root is missing or not a directory (unmounted, deleted, moved).
    #[error("the folder root {0} is missing or not a directory")]
    RootMissing(PathBuf),
    /// The folder's marker file is missing: the folder is not (or no longer) this one.
    #[error("the folder marker {0} is missing")]
    MarkerMissing(PathBuf),
    /// The root could not be listed, or the scan could not go on.
    #[error("scanning the folder failed: {0}")]
    Io(String),
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
    /// It could not be read or listed (one line, for logs).
    Unreadable(String),
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
}

/// What `lstat` says of a path, as the cache compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    kind: FileKind,
    /// 0 for directories and symlinks.
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
    mode: u8,
}

impl Stat {
    fn mtime_ms(&self) -> i64 {
        ms_of(self.mtime_ns)
    }

    /// Whether `c` was recorded from this very `lstat`.
    fn matches(&self, c: &CachedEntry) -> bool {
        c.kind == self.kind
            && c.size == self.size
            && c.mtime_ns == self.mtime_ns
            && c.ctime_ns == self.ctime_ns
            && c.inode == self.inode
            && c.mode == self.mode
    }

    fn cached(&self, target: String, tier: Tier, blocks: Vec<Block>) -> CachedEntry {
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

    fn entry(&self, path: &str, target: String, blocks: Vec<Block>) -> FileEntry {
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
fn ms_of(ns: i128) -> i64 {
    let ms = ns.div_euclid(1_000_000);
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

fn ns_of(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// A path's `lstat`: something the scanner reports, or something it skips.
enum Found {
    Entry(Stat),
    Special(SkipReason),
}

fn classify(m: &Metadata) -> Found {
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
    })
}

fn lstat(path: &Path) -> io::Result<Found> {
    std::fs::symlink_metadata(path).map(|m| classify(&m))
}

/// Whether an `lstat` says nothing the scanner reports is there: nothing at all, a parent
/// that is no longer a directory, or a special file.
fn gone(found: &io::Result<Found>) -> bool {
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

/// What the walk decided to do about a path that differs from the cache.
enum Plan {
    /// A directory: reported if new or its mode changed.
    Dir,
    /// A symlink pointing at this: reported if new or retargeted.
    Symlink(String),
    /// A file to hash at this tier.
    Hash(Tier),
    /// The file the cache holds at `from`, renamed here.
    Move { from: String, cached: CachedEntry },
}

struct Item {
    path: String,
    stat: Stat,
    plan: Plan,
}

/// What hashing a file gave.
enum Hashed {
    Blocks(Vec<Block>),
    /// It changed while being read.
    Changed,
    /// It could not be read.
    Failed(String),
}

/// What the walk found.
#[derive(Default)]
struct Walk {
    items: Vec<Item>,
    /// Every path present (reported, unchanged, unstable or unreadable).
    seen: HashSet<String>,
    /// Paths that could not be listed or `lstat`ed: nothing at or under them is removed.
    protected: Vec<String>,
    /// Paths the cache holds as a directory that are now something else.
    no_longer_dirs: HashSet<String>,
    skipped: Vec<(String, SkipReason)>,
    files: u64,
}

impl Walk {
    fn is_protected(&self, path: &str) -> bool {
        self.protected.iter().any(|p| under_or_at(path, p))
    }
}

/// Whether `path` is `dir` or inside it.
fn under_or_at(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
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
        }
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
                        && !under_or_at(p, RESERVED_DIR)
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
            out.changes.push(LocalChange::ScanDone);
        }
        Ok(out)
    }

    /// Walks the tree under the root, comparing each path with the cache.
    fn walk(&self) -> Result<Walk, ScanError> {
        let mut walk = Walk::default();
        // Paths to visit, the next on top.
        let mut stack: Vec<String> = Vec::new();
        // The root must list: walking nothing would report everything removed.
        self.list_dir("", &mut stack, &mut walk.skipped)
            .map_err(|e| ScanError::Io(format!("listing {}: {e}", self.root.display())))?;
        while let Some(path) = stack.pop() {
            let abs = self.root.join(&path);
            let (stat, unchanged, cached_kind, cached_tier) = {
                let cache = self.cache.lock();
                match lstat(&abs) {
                    // Gone since its directory was listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        walk.skipped
                            .push((path.clone(), SkipReason::Unreadable(io_line(&e))));
                        walk.protected.push(path);
                        continue;
                    }
                    Ok(Found::Special(reason)) => {
                        walk.skipped.push((path, reason));
                        continue;
                    }
                    Ok(Found::Entry(stat)) => {
                        let c = cache.entries.get(&path);
                        (
                            stat,
                            c.is_some_and(|c| stat.matches(c)),
                            c.map(|c| c.kind),
                            c.filter(|c| c.kind == FileKind::File)
                                .and_then(|c| Tier::from_index(c.tier)),
                        )
                    }
                }
            };
            walk.seen.insert(path.clone());
            if stat.kind == FileKind::File {
                walk.files += 1;
            }
            if cached_kind == Some(FileKind::Directory) && stat.kind != FileKind::Directory {
                walk.no_longer_dirs.insert(path.clone());
            }
            if !unchanged {
                let plan = match stat.kind {
                    FileKind::Directory => Some(Plan::Dir),
                    FileKind::File => Some(Plan::Hash(tier_for(stat.size, cached_tier))),
                    FileKind::Symlink => match std::fs::read_link(&abs) {
                        Ok(t) => match t.into_os_string().into_string() {
                            Ok(t) => Some(Plan::Symlink(t)),
                            Err(_) => {
                                walk.seen.remove(&path);
                                walk.skipped.push((path.clone(), SkipReason::NotUtf8));
                                None
                            }
                        },
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            walk.seen.remove(&path);
                            None
                        }
                        Err(e) => {
                            walk.skipped
                                .push((path.clone(), SkipReason::Unreadable(io_line(&e))));
                            None
                        }
                    },
                };
                if let Some(plan) = plan {
                    walk.items.push(Item {
                        path: path.clone(),
                        stat,
                        plan,
                    });
                }
            }
            if stat.kind == FileKind::Directory {
                match self.list_dir(&path, &mut stack, &mut walk.skipped) {
                    Ok(()) => {}
                    // Gone since its lstat: what was under it is removed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        walk.skipped
                            .push((path.clone(), SkipReason::Unreadable(io_line(&e))));
                        walk.protected.push(path);
                    }
                }
            }
        }
        Ok(walk)
    }

    /// Pushes the children of directory `dir` (relative) onto `stack`, the first name on
    /// top; skips the reserved folder at the root and names no peer would take.
    fn list_dir(
        &self,
        dir: &str,
        stack: &mut Vec<String>,
        skipped: &mut Vec<(String, SkipReason)>,
    ) -> io::Result<()> {
        let mut children = Vec::new();
        for entry in std::fs::read_dir(self.root.join(dir))? {
            let name = entry?.file_name();
            let name = match name.into_string() {
                Ok(name) => name,
                Err(name) => {
                    skipped.push((join(dir, &name.to_string_lossy()), SkipReason::NotUtf8));
                    continue;
                }
            };
            if dir.is_empty() && name == RESERVED_DIR {
                continue;
            }
            let path = join(dir, &name);
            match check_path(&path) {
                // The engine brings a path to NFC itself.
                Ok(()) | Err(PathRefusal::NotNormalized) => children.push(path),
                Err(why) => skipped.push((path, SkipReason::BadName(why))),
            }
        }
        children.sort_unstable_by(|a, b| b.cmp(a));
        stack.extend(children);
        Ok(())
    }

    /// Turns a file to hash whose inode, size and mtime are those of a removed cached file
    /// into a move of that file (its blocks kept, nothing read).
    fn plan_moves(&self, walk: &mut Walk, removed: &mut BTreeMap<String, CachedEntry>) {
        let mut by_stat: HashMap<(u64, u64, i128), Vec<String>> = HashMap::new();
        for (path, c) in removed.iter().rev() {
            // A path under one that is no longer a directory is removed before it changes.
            let under_changed = walk
                .no_longer_dirs
                .iter()
                .any(|d| path.len() > d.len() && under_or_at(path, d));
            if c.kind == FileKind::File && !under_changed {
                by_stat
                    .entry((c.inode, c.size, c.mtime_ns))
                    .or_default()
                    .push(path.clone());
            }
        }
        if by_stat.is_empty() {
            return;
        }
        for item in &mut walk.items {
            if !matches!(item.plan, Plan::Hash(_)) {
                continue;
            }
            let key = (item.stat.inode, item.stat.size, item.stat.mtime_ns);
            let Some(from) = by_stat.get_mut(&key).and_then(Vec::pop) else {
                continue;
            };
            if let Some(cached) = removed.remove(&from) {
                item.plan = Plan::Move { from, cached };
            }
        }
    }

    /// Hashes every [`Plan::Hash`] item on the scanner's threads, biggest files first: for
    /// each item, what hashing gave and the bytes read.
    fn hash_all(&self, items: &[Item]) -> Result<Vec<Option<(Hashed, u64)>>, ScanError> {
        let mut jobs: Vec<usize> = (0..items.len())
            .filter(|&i| matches!(items[i].plan, Plan::Hash(_)))
            .collect();
        jobs.sort_by_key(|&i| std::cmp::Reverse(items[i].stat.size));
        let mut results: Vec<Option<(Hashed, u64)>> = (0..items.len()).map(|_| None).collect();
        if jobs.is_empty() {
            return Ok(results);
        }
        let next = AtomicUsize::new(0);
        let work = || {
            let mut done = Vec::new();
            while let Some(&i) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                let item = &items[i];
                if let Plan::Hash(tier) = item.plan {
                    let abs = self.root.join(&item.path);
                    done.push((i, hash_file(&abs, &item.stat, tier)));
                }
            }
            done
        };
        let threads = self.threads.min(jobs.len()).max(1);
        let finished: Vec<Vec<(usize, (Hashed, u64))>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
            handles
                .into_iter()
                .map(|h| h.join())
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|_| ScanError::Io("a hashing thread panicked".into()))?;
        for (i, r) in finished.into_iter().flatten() {
            results[i] = Some(r);
        }
        Ok(results)
    }

    /// Records the walk's findings in the cache, one path at a time, and reports them.
    fn record(
        &self,
        walk: &mut Walk,
        hashed: &mut [Option<(Hashed, u64)>],
        removed: &mut BTreeMap<String, CachedEntry>,
        out: &mut ScanOutcome,
    ) -> Result<(), Interrupted> {
        for (i, item) in std::mem::take(&mut walk.items).into_iter().enumerate() {
            if walk.no_longer_dirs.contains(&item.path) {
                let under: Vec<String> = removed
                    .range(format!("{}/", item.path)..)
                    .take_while(|(p, _)| under_or_at(p, &item.path))
                    .map(|(p, _)| p.clone())
                    .collect();
                for p in under.into_iter().rev() {
                    removed.remove(&p);
                    self.remove(&p, out)?;
                }
            }
            let hash = hashed.get_mut(i).and_then(Option::take).map(|(h, _)| h);
            self.record_item(item, hash, out);
        }
        let rest = std::mem::take(removed);
        for p in rest.into_keys().rev() {
            self.remove(&p, out)?;
        }
        Ok(())
    }

    /// Records one changed path, if it is still what was walked (and hashed).
    fn record_item(&self, item: Item, hash: Option<Hashed>, out: &mut ScanOutcome) {
        let Item { path, stat, plan } = item;
        let abs = self.root.join(&path);
        let mut cache = self.cache.lock();
        match lstat(&abs) {
            Ok(Found::Entry(now)) if now == stat => {}
            // Recorded by the disk worker since the walk: its own write.
            Ok(Found::Entry(now)) if cache.entries.get(&path).is_some_and(|c| now.matches(c)) => {
                return;
            }
            _ => {
                out.unstable += 1;
                return;
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
                    return;
                }
                Some(Hashed::Changed) | None => {
                    out.unstable += 1;
                    return;
                }
            },
            Plan::Move { from, cached: old } => {
                let from_gone = gone(&lstat(&self.root.join(&from)));
                if !from_gone || cache.entries.get(&from) != Some(&old) {
                    // Not the rename it looked like any more: hashed as new next time.
                    out.unstable += 1;
                    return;
                }
                cache.entries.remove(&from);
                let tier = Tier::from_index(old.tier).unwrap_or(Tier::MIN);
                let to = stat.entry(&path, String::new(), old.blocks.clone());
                cache
                    .entries
                    .insert(path, stat.cached(String::new(), tier, old.blocks));
                out.changes.push(LocalChange::Moved { from, to });
                return;
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
    }

    /// Reports `path` removed if it is still absent, the marker still present, and the cache
    /// still holds it (the disk worker drops what it removes itself).
    fn remove(&self, path: &str, out: &mut ScanOutcome) -> Result<(), Interrupted> {
        let mut cache = self.cache.lock();
        if !gone(&lstat(&self.root.join(path))) {
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

/// The most one read of a file being hashed asks for (the chunker cuts what each read gives
/// while it is still in the cache).
const READ_BYTES_MAX: usize = 1024 * 1024;

/// Reads the file at `path`, which must still be `expect`, and cuts it at `tier`; with the
/// bytes read.
fn hash_file(path: &Path, expect: &Stat, tier: Tier) -> (Hashed, u64) {
    let changed = || (Hashed::Changed, 0);
    let same = |m: io::Result<Metadata>| matches!(m.map(|m| classify(&m)), Ok(Found::Entry(s)) if s == *expect);
    // Never follow a symlink put in its place; never block on a FIFO put in its place.
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = OpenOptions::new()
        .read(true)
        // The flags are small positive constants: the cast keeps them.
        .custom_flags(flags.bits() as i32)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) => {
            if same(std::fs::symlink_metadata(path)) {
                return (Hashed::Failed(io_line(&e)), 0);
            }
            return changed();
        }
    };
    if !same(file.metadata()) {
        return changed();
    }
    // Read through the chunker's window (never the whole file at once), one byte more than
    // expected at most: a file that grows is caught below.
    let mut chunker = StreamChunker::new(tier, expect.size);
    let mut cut = Vec::new();
    let mut read = 0u64;
    let mut limited = (&mut file).take(expect.size.saturating_add(1));
    loop {
        let space = chunker.space();
        let room = space.len().min(READ_BYTES_MAX);
        match limited.read(&mut space[..room]) {
            Ok(0) => break,
            Ok(n) => {
                read += n as u64;
                chunker.filled(n, &mut cut);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Hashed::Failed(io_line(&e)), 0),
        }
    }
    if read != expect.size || !same(file.metadata()) {
        return changed();
    }
    chunker.finish(&mut cut);
    let blocks = cut
        .into_iter()
        .map(|b| Block {
            offset: b.offset,
            len: b.len,
            hash: b.hash,
        })
        .collect();
    (Hashed::Blocks(blocks), read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::cache::{Cache, SharedCache};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// A folder with its marker, inside a temporary directory.
    struct Folder {
        _tmp: tempfile::TempDir,
        root: PathBuf,
    }

    impl Folder {
        fn new() -> Folder {
            let tmp = tempfile::tempdir().expect("a temporary directory");
            let root = tmp.path().join("shared");
            fs::create_dir_all(root.join(RESERVED_DIR)).expect("mkdir .weft");
            fs::write(root.join(RESERVED_DIR).join(MARKER_FILE), "00ff\n").expect("marker");
            Folder { _tmp: tmp, root }
        }

        fn p(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        fn write(&self, rel: &str, data: &[u8]) {
            fs::write(self.p(rel), data).expect("write");
        }

        fn mkdir(&self, rel: &str) {
            fs::create_dir_all(self.p(rel)).expect("mkdir");
        }

        fn scanner(&self) -> Scanner {
            Scanner::new(self.root.clone(), SharedCache::default())
        }
    }

    fn now_ms() -> i64 {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970");
        i64::try_from(d.as_millis()).expect("ms fit")
    }

    /// A scan at a time well after every write of the test.
    fn later(s: &Scanner) -> ScanOutcome {
        s.scan(now_ms() + 60_000).expect("scan")
    }

    fn data(seed: u64, len: usize) -> Vec<u8> {
        // xorshift: incompressible enough for content-defined cuts.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn blocks_of(data: &[u8]) -> Vec<Block> {
        weft_engine::replicate::blocks::chunk(data, tier_for(data.len() as u64, None))
            .into_iter()
            .map(|b| Block {
                offset: b.offset,
                len: b.len,
                hash: b.hash,
            })
            .collect()
    }

    fn changed(changes: &[LocalChange]) -> BTreeMap<String, FileEntry> {
        changes
            .iter()
            .filter_map(|c| match c {
                LocalChange::Changed(e) => Some((e.path.clone(), e.clone())),
                _ => None,
            })
            .collect()
    }

    fn position(changes: &[LocalChange], path: &str) -> usize {
        changes
            .iter()
            .position(|c| match c {
                LocalChange::Changed(e) => e.path == path,
                LocalChange::Removed { path: p } => p == path,
                LocalChange::Moved { to, .. } => to.path == path,
                LocalChange::ScanDone => false,
            })
            .unwrap_or_else(|| panic!("{path} not in {changes:?}"))
    }

    fn only_done(o: &ScanOutcome) {
        assert_eq!(o.changes, vec![LocalChange::ScanDone], "{o:?}");
    }

    /// `a/`, `a/b/`, `a/b/big` (several blocks), `top.txt`, `empty`, `run.sh` (0o755),
    /// `link` -> `top.txt`.
    fn populate(f: &Folder) -> (Vec<u8>, Vec<u8>) {
        f.mkdir("a/b");
        let big = data(1, 300_000);
        let top = b"hello, folder\n".to_vec();
        f.write("a/b/big", &big);
        f.write("top.txt", &top);
        f.write("empty", b"");
        f.write("run.sh", b"#!/bin/sh\n");
        fs::set_permissions(f.p("run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink("top.txt", f.p("link")).expect("symlink");
        (big, top)
    }

    #[test]
    fn first_scan_reports_files_dirs_and_symlinks() {
        let f = Folder::new();
        let (big, top) = populate(&f);
        let s = f.scanner();
        let o = later(&s);
        assert_eq!(o.changes.last(), Some(&LocalChange::ScanDone));
        let c = changed(&o.changes);
        let paths: Vec<&str> = c.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            ["a", "a/b", "a/b/big", "empty", "link", "run.sh", "top.txt"]
        );
        assert_eq!(o.changes.len(), 8);
        assert!(position(&o.changes, "a") < position(&o.changes, "a/b"));
        assert!(position(&o.changes, "a/b") < position(&o.changes, "a/b/big"));

        let dir = &c["a"];
        assert_eq!(dir.kind, FileKind::Directory);
        assert_eq!((dir.size, dir.mode, dir.blocks.len()), (0, 7, 0));
        let e = &c["a/b/big"];
        assert_eq!((e.kind, e.size, e.mode), (FileKind::File, 300_000, 6));
        assert!(e.blocks.len() > 1);
        assert_eq!(e.blocks, blocks_of(&big));
        assert_eq!(c["top.txt"].blocks, blocks_of(&top));
        assert!(c["empty"].blocks.is_empty());
        assert_eq!(c["run.sh"].mode, 7);
        let l = &c["link"];
        assert_eq!((l.kind, l.target.as_str()), (FileKind::Symlink, "top.txt"));
        assert_eq!((l.size, l.mode, l.blocks.len()), (0, SYMLINK_MODE, 0));
        let mtime = fs::symlink_metadata(f.p("top.txt"))
            .expect("stat")
            .modified()
            .expect("mtime");
        let ms = mtime
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        assert_eq!(c["top.txt"].mtime_ms, i64::try_from(ms).expect("fits"));
        for e in c.values() {
            assert_eq!(
                (e.version.clone(), e.modified_by, e.sequence),
                (Version::default(), 0, 0)
            );
        }
        assert_eq!((o.files, o.hashed_files), (4, 4));
        assert_eq!(o.hashed_bytes, 300_000 + top.len() as u64 + 10);
        assert!(o.skipped.is_empty());
        assert_eq!(o.unstable, 0);
        // The cache holds every path, and nothing of `.weft`.
        let cache = s.cache().lock();
        assert_eq!(cache.entries.len(), 7);
        assert_eq!(cache.entries["a/b/big"].blocks, e.blocks);
    }

    #[test]
    fn an_unchanged_folder_hashes_nothing() {
        let f = Folder::new();
        populate(&f);
        let s = f.scanner();
        later(&s);
        let o = later(&s);
        only_done(&o);
        assert_eq!((o.hashed_files, o.hashed_bytes, o.files), (0, 0, 4));
    }

    #[test]
    fn an_edit_is_reported_and_only_it_is_hashed() {
        let f = Folder::new();
        populate(&f);
        let s = f.scanner();
        later(&s);
        f.write("top.txt", b"changed content");
        f.write("a/b/new", b"new file");
        let o = later(&s);
        assert_eq!(o.hashed_files, 2);
        let c = changed(&o.changes);
        assert_eq!(c.keys().collect::<Vec<_>>(), ["a/b/new", "top.txt"]);
        assert_eq!(c["top.txt"].blocks, blocks_of(b"changed content"));
        assert_eq!(c["top.txt"].size, 15);
        assert_eq!(o.changes.len(), 3);
        // A mode change alone is reported too (the file is re-read: its ctime changed).
        fs::set_permissions(f.p("top.txt"), fs::Permissions::from_mode(0o444)).expect("chmod");
        let o = later(&s);
        let c = changed(&o.changes);
        assert_eq!(c.keys().collect::<Vec<_>>(), ["top.txt"]);
        assert_eq!(c["top.txt"].mode, 4);
        // So is a directory's.
        fs::set_permissions(f.p("a"), fs::Permissions::from_mode(0o500)).expect("chmod");
        let o = later(&s);
        let c = changed(&o.changes);
        assert_eq!(c.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!((c["a"].mode, c["a"].kind), (5, FileKind::Directory));
        fs::set_permissions(f.p("a"), fs::Permissions::from_mode(0o755)).expect("chmod");
        // A retargeted symlink.
        fs::remove_file(f.p("link")).expect("rm");
        std::os::unix::fs::symlink("a/b/new", f.p("link")).expect("symlink");
        let o = later(&s);
        let c = changed(&o.changes);
        assert_eq!(c["link"].target, "a/b/new");
        assert_eq!(o.changes.len(), 3, "a's mode and the link: {:?}", o.changes);
    }

    #[test]
    fn deletes_are_removed_children_first() {
        let f = Folder::new();
        populate(&f);
        f.write("a/b/other", b"x");
        let s = f.scanner();
        later(&s);
        fs::remove_file(f.p("top.txt")).expect("rm");
        let o = later(&s);
        assert_eq!(
            o.changes,
            vec![
                LocalChange::Removed {
                    path: "top.txt".into()
                },
                LocalChange::ScanDone
            ]
        );
        fs::remove_dir_all(f.p("a")).expect("rm -r");
        let o = later(&s);
        let removed: Vec<&str> = o
            .changes
            .iter()
            .filter_map(|c| match c {
                LocalChange::Removed { path } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(removed, ["a/b/other", "a/b/big", "a/b", "a"]);
        assert_eq!(o.changes.len(), 5);
        assert!(!s.cache().lock().entries.contains_key("a/b/big"));
        only_done(&later(&s));
    }

    #[test]
    fn a_directory_replaced_by_a_file_removes_its_children_first() {
        let f = Folder::new();
        f.mkdir("d/e");
        f.write("d/e/f", b"one");
        let s = f.scanner();
        later(&s);
        fs::remove_dir_all(f.p("d")).expect("rm -r");
        f.write("d", b"now a file");
        let o = later(&s);
        let kinds: Vec<(&str, &str)> = o
            .changes
            .iter()
            .map(|c| match c {
                LocalChange::Changed(e) => ("changed", e.path.as_str()),
                LocalChange::Removed { path } => ("removed", path.as_str()),
                LocalChange::Moved { to, .. } => ("moved", to.path.as_str()),
                LocalChange::ScanDone => ("done", ""),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("removed", "d/e/f"),
                ("removed", "d/e"),
                ("changed", "d"),
                ("done", "")
            ]
        );
    }

    #[test]
    fn a_rename_is_a_move_and_is_not_rehashed() {
        let f = Folder::new();
        let (big, _) = populate(&f);
        let s = f.scanner();
        later(&s);
        fs::rename(f.p("a/b/big"), f.p("moved")).expect("mv");
        let o = later(&s);
        assert_eq!(o.hashed_files, 0);
        assert_eq!(o.changes.len(), 2, "{:?}", o.changes);
        let LocalChange::Moved { from, to } = &o.changes[0] else {
            panic!("not a move: {:?}", o.changes)
        };
        assert_eq!((from.as_str(), to.path.as_str()), ("a/b/big", "moved"));
        assert_eq!(to.blocks, blocks_of(&big));
        assert_eq!((to.size, to.kind, to.mode), (300_000, FileKind::File, 6));
        let cache = s.cache().lock();
        assert!(!cache.entries.contains_key("a/b/big"));
        assert_eq!(cache.entries["moved"].blocks, to.blocks);
        drop(cache);
        only_done(&later(&s));
        // Renamed over an existing file: a move too.
        fs::rename(f.p("moved"), f.p("top.txt")).expect("mv");
        let o = later(&s);
        assert_eq!(o.hashed_files, 0);
        assert!(
            matches!(&o.changes[..], [LocalChange::Moved { from, to }, LocalChange::ScanDone]
                if from == "moved" && to.path == "top.txt"),
            "{:?}",
            o.changes
        );
    }

    #[test]
    fn a_missing_marker_or_root_fails_and_removes_nothing() {
        let f = Folder::new();
        populate(&f);
        let s = f.scanner();
        later(&s);
        let before = s.cache().lock().clone();
        let marker = f.p(".weft/folder");
        fs::remove_file(&marker).expect("rm marker");
        fs::remove_file(f.p("top.txt")).expect("rm");
        assert!(matches!(later_err(&s), ScanError::MarkerMissing(p) if p == marker));
        assert_eq!(*s.cache().lock(), before, "nothing recorded");
        // The whole folder gone (an unmounted disk).
        fs::write(&marker, "00ff\n").expect("marker");
        let moved = f.root.with_file_name("elsewhere");
        fs::rename(&f.root, &moved).expect("mv root");
        assert!(matches!(later_err(&s), ScanError::RootMissing(p) if p == f.root));
        // A file where the root was.
        fs::write(&f.root, "not a dir").expect("write");
        assert!(matches!(later_err(&s), ScanError::RootMissing(_)));
        fs::remove_file(&f.root).expect("rm");
        fs::rename(&moved, &f.root).expect("mv back");
        assert_eq!(*s.cache().lock(), before);
        // Back, with its marker: the delete is reported now.
        let o = later(&s);
        assert_eq!(
            o.changes,
            vec![
                LocalChange::Removed {
                    path: "top.txt".into()
                },
                LocalChange::ScanDone
            ]
        );
    }

    /// The marker vanishing after the post-walk check (while changes are recorded): no
    /// removal is recorded or reported.
    #[test]
    fn a_removal_is_not_recorded_once_the_marker_is_gone() {
        let f = Folder::new();
        populate(&f);
        let s = f.scanner();
        later(&s);
        fs::remove_file(f.p("top.txt")).expect("rm");
        fs::remove_file(f.p(".weft/folder")).expect("rm marker");
        let mut out = ScanOutcome::default();
        assert!(s.remove("top.txt", &mut out).is_err());
        assert!(out.changes.is_empty());
        assert!(s.cache().lock().entries.contains_key("top.txt"));
    }

    fn later_err(s: &Scanner) -> ScanError {
        match s.scan(now_ms() + 60_000) {
            Ok(o) => panic!("scanned: {o:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn special_files_and_bad_names_are_skipped_and_listed() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let f = Folder::new();
        f.write("plain", b"x");
        f.write("was-a-file", b"y");
        let s = f.scanner();
        later(&s);
        let fifo = |rel: &str| {
            let ok = std::process::Command::new("mkfifo")
                .arg(f.p(rel))
                .status()
                .expect("mkfifo runs");
            assert!(ok.success());
        };
        fifo("pipe");
        fs::remove_file(f.p("was-a-file")).expect("rm");
        fifo("was-a-file");
        let _sock = std::os::unix::net::UnixListener::bind(f.p("sock")).expect("bind");
        fs::write(f.root.join(OsStr::from_bytes(b"bad\xffname")), b"z").expect("write");
        fs::write(f.p("back\\slash"), b"z").expect("write");
        let o = later(&s);
        let mut skipped = o.skipped.clone();
        skipped.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            skipped,
            vec![
                (
                    "back\\slash".to_string(),
                    SkipReason::BadName(PathRefusal::BadCharacter)
                ),
                ("bad\u{fffd}name".to_string(), SkipReason::NotUtf8),
                ("pipe".to_string(), SkipReason::Fifo),
                ("sock".to_string(), SkipReason::Socket),
                ("was-a-file".to_string(), SkipReason::Fifo),
            ]
        );
        // The file a FIFO replaced is gone; nothing else is reported.
        assert_eq!(
            o.changes,
            vec![
                LocalChange::Removed {
                    path: "was-a-file".into()
                },
                LocalChange::ScanDone
            ]
        );
    }

    #[test]
    fn a_file_being_written_waits_for_a_later_scan() {
        let f = Folder::new();
        let s = f.scanner();
        f.write("fresh", b"still writing");
        let o = s.scan(now_ms()).expect("scan");
        only_done(&o);
        assert_eq!((o.unstable, o.hashed_files, o.files), (1, 0, 1));
        assert!(s.cache().lock().entries.is_empty());
        // It settles STABLE_MS after its mtime.
        let mtime = fs::metadata(f.p("fresh"))
            .and_then(|m| m.modified())
            .expect("mtime")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64;
        assert_eq!(o.settles_at_ms, Some(mtime + STABLE_MS));
        let o = s.scan(now_ms() + STABLE_MS + 10).expect("scan");
        assert_eq!((o.unstable, o.settles_at_ms), (0, None));
        assert_eq!(changed(&o.changes).keys().collect::<Vec<_>>(), ["fresh"]);
        // A file whose mtime was set in the past is stable at once.
        f.write("old", b"copied with its mtime");
        fs::File::options()
            .write(true)
            .open(f.p("old"))
            .expect("open")
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .expect("set mtime");
        let o = s.scan(now_ms()).expect("scan");
        assert_eq!(changed(&o.changes).keys().collect::<Vec<_>>(), ["old"]);
    }

    #[test]
    fn a_restart_with_the_persisted_cache_hashes_nothing() {
        let f = Folder::new();
        populate(&f);
        let s = f.scanner();
        assert_eq!(later(&s).hashed_files, 4);
        let blob = s.cache().lock().encode();
        let cache = Cache::decode(&blob).expect("decodes");
        let s2 = Scanner::new(f.root.clone(), SharedCache::new(cache));
        let o = later(&s2);
        only_done(&o);
        assert_eq!((o.hashed_files, o.files), (0, 4));
    }

    #[test]
    fn what_the_disk_worker_records_is_not_reported() {
        let f = Folder::new();
        populate(&f);
        let s = f.scanner();
        later(&s);
        // The worker writes a file and a directory and records them under the lock.
        let content = data(7, 50_000);
        {
            let mut cache = s.cache().lock();
            f.write("from-peer", &content);
            f.mkdir("peer-dir");
            let tier = tier_for(content.len() as u64, None);
            for (path, blocks) in [("from-peer", blocks_of(&content)), ("peer-dir", vec![])] {
                let e = observe(&f.p(path), tier, blocks)
                    .expect("lstat")
                    .expect("present");
                cache.entries.insert(path.to_string(), e);
            }
        }
        let o = later(&s);
        only_done(&o);
        assert_eq!(o.hashed_files, 0);
    }

    #[test]
    fn several_threads_find_what_one_finds() {
        let build = |f: &Folder| {
            populate(f);
            for d in 0..4 {
                f.mkdir(&format!("d{d}"));
                for i in 0..12u64 {
                    let len = (i as usize * 37_000 + d * 5_000) % 200_000;
                    f.write(&format!("d{d}/f{i}"), &data(i * 10 + d as u64, len));
                }
            }
        };
        let (one, many) = (Folder::new(), Folder::new());
        build(&one);
        build(&many);
        let o1 = later(&one.scanner().with_threads(1));
        let o4 = later(&many.scanner().with_threads(4));
        assert_eq!((o1.hashed_files, o4.hashed_files), (52, 52));
        assert_eq!(o1.hashed_bytes, o4.hashed_bytes);
        // The same entries but for mtimes (each tree was written at its own time).
        let strip = |o: &ScanOutcome| {
            o.changes
                .iter()
                .map(|c| match c {
                    LocalChange::Changed(e) => {
                        let mut e = e.clone();
                        e.mtime_ms = 0;
                        LocalChange::Changed(e)
                    }
                    c => c.clone(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&o1), strip(&o4));
    }
}
