//! An in-memory shared folder for one simulated node: it answers every
//! [`StorageRequest`] a [`weft_engine::replicate::Replica`] makes, with storage faults drawn
//! from the seed (failed writes, a full disk, a crash between write and commit), and it is
//! the node's scanner: each local operation returns the [`LocalChange`]s a real scanner would
//! report, chunked with the engine's shared `chunk` / `tier_for`.
//!
//! Files, directories and symlinks live in a map by path; temporary files by [`TempId`]; the
//! persisted state blob beside them. A crash loses none of these (the node's replica is
//! rebuilt from the blob; its temporary files stay where they were).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use weft_engine::protocol::{Block, BlockHash, FileEntry, FileKind, Version};
use weft_engine::replicate::blocks::{chunk, tier_for, tier_of, Tier};
use weft_engine::replicate::paths::RESERVED_DIR;
use weft_engine::replicate::{Expect, LocalChange, StorageError, StorageRequest, StorageResult};
use weft_engine::replicate::{Record, TempId};

use crate::rng::SimRng;

/// The owner mode bits a symlink is reported with (links have no mode of their own).
pub const SYMLINK_MODE: u8 = 7;

/// What is at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsNode {
    /// A regular file.
    File {
        /// Its bytes.
        data: Bytes,
        /// Owner mode bits 0–7.
        mode: u8,
        /// Modification time, Unix ms.
        mtime_ms: i64,
        /// Its blocks as last chunked or committed.
        blocks: Vec<Block>,
    },
    /// A directory.
    Dir {
        /// Owner mode bits 0–7.
        mode: u8,
        /// Modification time, Unix ms.
        mtime_ms: i64,
    },
    /// A symbolic link (never followed).
    Symlink {
        /// Where it points.
        target: String,
        /// Modification time, Unix ms.
        mtime_ms: i64,
    },
}

impl FsNode {
    fn kind(&self) -> FileKind {
        match self {
            FsNode::File { .. } => FileKind::File,
            FsNode::Dir { .. } => FileKind::Directory,
            FsNode::Symlink { .. } => FileKind::Symlink,
        }
    }

    fn size(&self) -> u64 {
        match self {
            FsNode::File { data, .. } => data.len() as u64,
            _ => 0,
        }
    }

    fn mtime_ms(&self) -> i64 {
        match self {
            FsNode::File { mtime_ms, .. }
            | FsNode::Dir { mtime_ms, .. }
            | FsNode::Symlink { mtime_ms, .. } => *mtime_ms,
        }
    }
}

/// Storage faults in force: each drawn per request from the folder's own seeded stream.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StorageFaults {
    /// Probability that a write step (anything but reads and `LoadState`) fails with an I/O
    /// error.
    pub write_fail_probability: f64,
    /// Bytes the folder may hold (files and temporary files); a `WriteTemp` beyond it fails
    /// with `DiskFull`. Local operations (the user's own writes) are not held to it.
    pub disk_budget_bytes: Option<u64>,
    /// Probability that the node crashes on a `Commit`, before anything is renamed.
    pub crash_on_commit_probability: f64,
}

impl StorageFaults {
    /// No faults.
    pub const NONE: StorageFaults = StorageFaults {
        write_fail_probability: 0.0,
        disk_budget_bytes: None,
        crash_on_commit_probability: 0.0,
    };
}

/// How the folder answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The result, for `handle_completed`.
    Result(StorageResult),
    /// The node crashes now (between write and commit): nothing is answered.
    Crash,
}

/// One node's folder.
#[derive(Debug, Clone)]
pub struct Folder {
    entries: BTreeMap<String, FsNode>,
    temps: BTreeMap<TempId, Vec<u8>>,
    state: Option<Bytes>,
    tiers: BTreeMap<String, Tier>,
    /// Storage faults in force.
    pub faults: StorageFaults,
    rng: SimRng,
    /// Storage faults that struck (failed writes, full disk, crashes).
    pub faults_struck: u64,
    /// Hashes of every block this folder ever held (for "bytes needed").
    held_hashes: BTreeSet<BlockHash>,
    /// Bytes of blocks committed that the folder never held before, summed.
    pub bytes_needed: u64,
    /// Bytes written into temporary files, summed over every `WriteTemp`.
    pub temp_bytes_written: u64,
}

fn io(why: &str) -> StorageResult {
    StorageResult::Failed(StorageError::Io(why.into()))
}

/// The parent directory of `path`, or `None` at the root.
pub fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

fn is_reserved(path: &str) -> bool {
    path == RESERVED_DIR || path.starts_with(&format!("{RESERVED_DIR}/"))
}

/// Blocks as the protocol carries them.
fn to_blocks(data: &[u8], tier: Tier) -> Vec<Block> {
    chunk(data, tier)
        .into_iter()
        .map(|b| Block {
            offset: b.offset,
            len: b.len,
            hash: b.hash,
        })
        .collect()
}

impl Folder {
    /// An empty folder whose faults draw from `seed`.
    pub fn new(seed: u64) -> Folder {
        Folder {
            entries: BTreeMap::new(),
            temps: BTreeMap::new(),
            state: None,
            tiers: BTreeMap::new(),
            faults: StorageFaults::NONE,
            rng: SimRng::new(seed),
            faults_struck: 0,
            held_hashes: BTreeSet::new(),
            bytes_needed: 0,
            temp_bytes_written: 0,
        }
    }

    /// What is at `path`.
    pub fn get(&self, path: &str) -> Option<&FsNode> {
        self.entries.get(path)
    }

    /// Every path and what is there, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &FsNode)> {
        self.entries.iter()
    }

    /// Temporary files held, by id, with their lengths.
    pub fn temps(&self) -> impl Iterator<Item = (TempId, usize)> + '_ {
        self.temps.iter().map(|(t, d)| (*t, d.len()))
    }

    /// The persisted state blob.
    pub fn state(&self) -> Option<&Bytes> {
        self.state.as_ref()
    }

    /// Bytes held: files and temporary files.
    pub fn used_bytes(&self) -> u64 {
        self.entries.values().map(FsNode::size).sum::<u64>()
            + self.temps.values().map(|t| t.len() as u64).sum::<u64>()
    }

    /// The entry a scanner reports for `path` (version fields empty).
    pub fn entry(&self, path: &str) -> Option<FileEntry> {
        let node = self.entries.get(path)?;
        let (target, mode, blocks) = match node {
            FsNode::File { mode, blocks, .. } => (String::new(), *mode, blocks.clone()),
            FsNode::Dir { mode, .. } => (String::new(), *mode, Vec::new()),
            FsNode::Symlink { target, .. } => (target.clone(), SYMLINK_MODE, Vec::new()),
        };
        Some(FileEntry {
            path: path.to_string(),
            kind: node.kind(),
            target,
            mode,
            size: node.size(),
            mtime_ms: node.mtime_ms(),
            modified_by: 0,
            version: Version::default(),
            sequence: 0,
            blocks,
        })
    }

    /// BLAKE3 over the visible content: every path outside `.weft` with its kind, bytes,
    /// mode and symlink target (not mtimes, not temporary files), as hex.
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        for (path, node) in self.entries.iter().filter(|(p, _)| !is_reserved(p)) {
            h.update(&(path.len() as u64).to_le_bytes());
            h.update(path.as_bytes());
            match node {
                FsNode::File { data, mode, .. } => {
                    h.update(&[0, *mode]);
                    h.update(blake3::hash(data).as_bytes());
                }
                FsNode::Dir { mode, .. } => {
                    h.update(&[1, *mode]);
                }
                FsNode::Symlink { target, .. } => {
                    h.update(&[2]);
                    h.update(&(target.len() as u64).to_le_bytes());
                    h.update(target.as_bytes());
                }
            }
        }
        h.finalize().to_hex().to_string()
    }

    fn hold(&mut self, blocks: &[Block]) {
        self.held_hashes.extend(blocks.iter().map(|b| b.hash));
    }

    fn parent_is_dir(&self, path: &str) -> bool {
        match parent(path) {
            None => true,
            Some(p) => matches!(self.entries.get(p), Some(FsNode::Dir { .. })),
        }
    }

    fn has_children(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.entries
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(&prefix))
    }

    fn holds(&self, path: &str, expect: &Expect) -> bool {
        match (expect, self.entries.get(path)) {
            (Expect::Nothing, None) => true,
            (
                Expect::Present {
                    kind,
                    size,
                    mtime_ms,
                    mode,
                },
                Some(node),
            ) => {
                // A directory's or symlink's mtime and mode are not compared: `MakeDir` and
                // `MakeSymlink` carry no mtime (the host stamps its own), a directory's
                // changes with its children, and a symlink has no mode.
                let file_matches = match node {
                    FsNode::File {
                        mode: m,
                        mtime_ms: t,
                        ..
                    } => m == mode && t == mtime_ms,
                    _ => true,
                };
                node.kind() == *kind && node.size() == *size && file_matches
            }
            _ => false,
        }
    }

    fn write_fails(&mut self) -> bool {
        let fail = self.rng.chance(self.faults.write_fail_probability);
        self.faults_struck += u64::from(fail);
        fail
    }

    /// Carries out `request` (faults included).
    pub fn answer(&mut self, request: &StorageRequest) -> Answer {
        use StorageRequest as R;
        use StorageResult as S;
        let writes = !matches!(request, R::LoadState | R::ReadBlock { .. });
        if matches!(request, R::Commit { .. })
            && self.rng.chance(self.faults.crash_on_commit_probability)
        {
            self.faults_struck += 1;
            return Answer::Crash;
        }
        if writes && self.write_fails() {
            return Answer::Result(io("injected write failure"));
        }
        Answer::Result(match request {
            R::LoadState => S::Loaded(self.state.clone()),
            R::PersistState { bytes } => {
                self.state = Some(bytes.clone());
                S::Done
            }
            R::ReadBlock { path, offset, len } => match self.entries.get(path) {
                Some(FsNode::File { data, .. }) => {
                    let end = offset.saturating_add(u64::from(*len));
                    if end <= data.len() as u64 {
                        S::Block(data.slice(*offset as usize..end as usize))
                    } else {
                        S::NotFound
                    }
                }
                _ => S::NotFound,
            },
            R::WriteTemp { temp, offset, data } => {
                let have = self.temps.get(temp).map_or(0, Vec::len) as u64;
                let end = offset.saturating_add(data.len() as u64);
                let growth = end.saturating_sub(have);
                if let Some(budget) = self.faults.disk_budget_bytes {
                    if self.used_bytes() + growth > budget {
                        self.faults_struck += 1;
                        return Answer::Result(S::Failed(StorageError::DiskFull));
                    }
                }
                let t = self.temps.entry(*temp).or_default();
                if (t.len() as u64) < end {
                    t.resize(end as usize, 0);
                }
                t[*offset as usize..end as usize].copy_from_slice(data);
                self.temp_bytes_written += data.len() as u64;
                S::Done
            }
            R::Commit {
                temp,
                path,
                size,
                blocks,
                mode,
                mtime_ms,
                expect,
            } => self.commit(*temp, path, *size, blocks, *mode, *mtime_ms, expect),
            R::DiscardTemp { temp } => {
                self.temps.remove(temp);
                S::Done
            }
            R::Remove { path, expect } => {
                if !self.entries.contains_key(path) {
                    S::NotFound
                } else if !self.holds(path, expect) {
                    S::Changed
                } else if self.has_children(path) {
                    io("directory not empty")
                } else {
                    self.entries.remove(path);
                    self.tiers.remove(path);
                    S::Done
                }
            }
            R::Rename {
                from,
                to,
                expect,
                over,
            } => {
                if !self.entries.contains_key(from) {
                    S::NotFound
                } else if !self.holds(from, expect) || !self.holds(to, over) {
                    S::Changed
                } else if !self.parent_is_dir(to) {
                    io("no parent directory")
                } else if self.has_children(to) {
                    io("directory not empty")
                } else {
                    // What it replaces (a resolve's) goes, as a rename over it does.
                    self.entries.remove(to);
                    self.tiers.remove(to);
                    self.move_tree(from, to);
                    S::Done
                }
            }
            R::MakeDir { path, mode } => {
                let parent_ok = self.parent_is_dir(path);
                match self.entries.get_mut(path) {
                    Some(FsNode::Dir { mode: m, .. }) => {
                        *m = *mode;
                        S::Done
                    }
                    Some(_) => S::Changed,
                    None if !parent_ok => io("no parent directory"),
                    None => {
                        self.entries.insert(
                            path.clone(),
                            FsNode::Dir {
                                mode: *mode,
                                mtime_ms: 0,
                            },
                        );
                        S::Done
                    }
                }
            }
            R::MakeSymlink { path, target } => {
                if self.entries.contains_key(path) {
                    S::Changed
                } else if !self.parent_is_dir(path) {
                    io("no parent directory")
                } else {
                    self.entries.insert(
                        path.clone(),
                        FsNode::Symlink {
                            target: target.clone(),
                            mtime_ms: 0,
                        },
                    );
                    S::Done
                }
            }
            R::SetMode { path, mode, expect } => {
                if !self.holds(path, expect) {
                    S::Changed
                } else {
                    match self.entries.get_mut(path) {
                        Some(FsNode::File { mode: m, .. } | FsNode::Dir { mode: m, .. }) => {
                            *m = *mode;
                            S::Done
                        }
                        Some(FsNode::Symlink { .. }) => S::Done,
                        None => S::Changed,
                    }
                }
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        temp: TempId,
        path: &str,
        size: u64,
        blocks: &[Block],
        mode: u8,
        mtime_ms: i64,
        expect: &Expect,
    ) -> StorageResult {
        let mut data = self.temps.get(&temp).cloned().unwrap_or_default();
        data.truncate(size as usize);
        let corrupt: Vec<u64> = blocks
            .iter()
            .filter(|b| {
                let end = b.offset.saturating_add(u64::from(b.len));
                end > data.len() as u64
                    || *blake3::hash(&data[b.offset as usize..end as usize]).as_bytes() != b.hash
            })
            .map(|b| b.offset)
            .collect();
        let tiles = blocks.iter().map(|b| u64::from(b.len)).sum::<u64>() == size;
        if !corrupt.is_empty() || data.len() as u64 != size || !tiles {
            return StorageResult::Corrupt(corrupt);
        }
        if !self.holds(path, expect) {
            return StorageResult::Changed;
        }
        if !self.parent_is_dir(path) {
            return io("no parent directory");
        }
        if self.has_children(path) {
            return io("a directory with children is in the way");
        }
        self.temps.remove(&temp);
        for b in blocks {
            if !self.held_hashes.contains(&b.hash) {
                self.bytes_needed += u64::from(b.len);
            }
        }
        self.hold(blocks);
        let tier = tier_of(&data, data.len() as u64, blocks.first().map(|b| b.len));
        self.tiers.insert(path.to_string(), tier);
        self.entries.insert(
            path.to_string(),
            FsNode::File {
                data: Bytes::from(data),
                mode,
                mtime_ms,
                blocks: blocks.to_vec(),
            },
        );
        StorageResult::Done
    }

    fn move_tree(&mut self, from: &str, to: &str) {
        let prefix = format!("{from}/");
        let moved: Vec<String> = self
            .entries
            .keys()
            .filter(|p| *p == from || p.starts_with(&prefix))
            .cloned()
            .collect();
        for p in moved {
            let new = format!("{to}{}", &p[from.len()..]);
            if let Some(node) = self.entries.remove(&p) {
                self.entries.insert(new.clone(), node);
            }
            if let Some(t) = self.tiers.remove(&p) {
                self.tiers.insert(new, t);
            }
        }
    }

    // The scanner: local operations and what they report.

    /// Writes `data` at `path` (a new file or new content), mode `mode`, at `now_ms`; its
    /// parent must be a directory. What the scanner reports.
    pub fn write_file(
        &mut self,
        path: &str,
        data: Vec<u8>,
        mode: u8,
        now_ms: i64,
    ) -> Vec<LocalChange> {
        if !self.parent_is_dir(path) || matches!(self.entries.get(path), Some(FsNode::Dir { .. })) {
            return Vec::new();
        }
        let tier = tier_for(data.len() as u64, self.tiers.get(path).copied());
        let blocks = to_blocks(&data, tier);
        self.hold(&blocks);
        self.tiers.insert(path.to_string(), tier);
        self.entries.insert(
            path.to_string(),
            FsNode::File {
                data: Bytes::from(data),
                mode,
                mtime_ms: now_ms,
                blocks,
            },
        );
        self.report(path)
    }

    /// Changes one byte of the file at `path` behind the scanner's back (a peer that serves
    /// other bytes than it announced): nothing is reported. Whether there was such a file.
    pub fn corrupt(&mut self, path: &str) -> bool {
        let Some(FsNode::File { data, .. }) = self.entries.get_mut(path) else {
            return false;
        };
        if data.is_empty() {
            return false;
        }
        let mut bytes = data.to_vec();
        bytes[0] ^= 0xff;
        *data = Bytes::from(bytes);
        true
    }

    /// Removes the file or symlink (or empty directory) at `path`.
    pub fn remove(&mut self, path: &str) -> Vec<LocalChange> {
        if !self.entries.contains_key(path) || self.has_children(path) {
            return Vec::new();
        }
        self.entries.remove(path);
        self.tiers.remove(path);
        vec![
            LocalChange::Removed {
                path: path.to_string(),
            },
            LocalChange::ScanDone,
        ]
    }

    /// Renames the file or symlink at `from` to `to` (nothing there; its parent a directory).
    pub fn rename(&mut self, from: &str, to: &str) -> Vec<LocalChange> {
        if !self.entries.contains_key(from)
            || self.entries.contains_key(to)
            || !self.parent_is_dir(to)
            || self.has_children(from)
        {
            return Vec::new();
        }
        self.move_tree(from, to);
        let Some(entry) = self.entry(to) else {
            return Vec::new();
        };
        vec![
            LocalChange::Moved {
                from: from.to_string(),
                to: entry,
            },
            LocalChange::ScanDone,
        ]
    }

    /// Sets the mode of the file or directory at `path`.
    pub fn set_mode(&mut self, path: &str, mode: u8) -> Vec<LocalChange> {
        match self.entries.get_mut(path) {
            Some(FsNode::File { mode: m, .. } | FsNode::Dir { mode: m, .. }) => *m = mode,
            _ => return Vec::new(),
        }
        self.report(path)
    }

    /// Makes a directory at `path` (its parent a directory, nothing there).
    pub fn make_dir(&mut self, path: &str, mode: u8, now_ms: i64) -> Vec<LocalChange> {
        if self.entries.contains_key(path) || !self.parent_is_dir(path) {
            return Vec::new();
        }
        self.entries.insert(
            path.to_string(),
            FsNode::Dir {
                mode,
                mtime_ms: now_ms,
            },
        );
        self.report(path)
    }

    /// Makes a symlink at `path` pointing at `target`.
    pub fn make_symlink(&mut self, path: &str, target: &str, now_ms: i64) -> Vec<LocalChange> {
        if self.entries.contains_key(path) || !self.parent_is_dir(path) {
            return Vec::new();
        }
        self.entries.insert(
            path.to_string(),
            FsNode::Symlink {
                target: target.to_string(),
                mtime_ms: now_ms,
            },
        );
        self.report(path)
    }

    fn report(&self, path: &str) -> Vec<LocalChange> {
        self.entry(path)
            .map(LocalChange::Changed)
            .into_iter()
            .chain([LocalChange::ScanDone])
            .collect()
    }

    /// A full scan after a restart: every path outside `.weft` as it is, every present
    /// record of `records` that is gone as removed, then `ScanDone`.
    pub fn full_scan<'a>(&self, records: impl Iterator<Item = &'a Record>) -> Vec<LocalChange> {
        let mut out: Vec<LocalChange> = self
            .entries
            .keys()
            .filter(|p| !is_reserved(p))
            .filter_map(|p| self.entry(p))
            .map(LocalChange::Changed)
            .collect();
        for r in records {
            if !r.deleted && !self.entries.contains_key(&r.entry.path) {
                out.push(LocalChange::Removed {
                    path: r.entry.path.clone(),
                });
            }
        }
        out.push(LocalChange::ScanDone);
        out
    }

    /// Files whose bytes do not match their blocks' hashes: `(path, block offset)`.
    pub fn unverified_blocks(&self) -> Vec<(String, u64)> {
        let mut bad = Vec::new();
        for (path, node) in &self.entries {
            if let FsNode::File { data, blocks, .. } = node {
                for b in blocks {
                    let end = b.offset.saturating_add(u64::from(b.len));
                    let ok = end <= data.len() as u64
                        && *blake3::hash(&data[b.offset as usize..end as usize]).as_bytes()
                            == b.hash;
                    if !ok {
                        bad.push((path.clone(), b.offset));
                    }
                }
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8]) -> (Folder, Vec<Block>) {
        let mut f = Folder::new(1);
        f.write_file(path, data.to_vec(), 6, 1);
        let Some(FsNode::File { blocks, .. }) = f.get(path) else {
            panic!("no file")
        };
        let blocks = blocks.clone();
        (f, blocks)
    }

    #[test]
    fn commit_verifies_blocks_and_honours_expect() {
        let data = vec![7u8; 50_000];
        let (src, blocks) = file("a", &data);
        let mut f = Folder::new(2);
        let t = TempId(1);
        let write = StorageRequest::WriteTemp {
            temp: t,
            offset: 0,
            data: Bytes::from(data.clone()),
        };
        assert_eq!(f.answer(&write), Answer::Result(StorageResult::Done));
        let commit = |expect| StorageRequest::Commit {
            temp: t,
            path: "a".into(),
            size: data.len() as u64,
            blocks: blocks.clone(),
            mode: 6,
            mtime_ms: 1,
            expect,
        };
        f.write_file("a", b"local".to_vec(), 6, 5);
        assert_eq!(
            f.answer(&commit(Expect::Nothing)),
            Answer::Result(StorageResult::Changed)
        );
        f.remove("a");
        let mut bad = data.clone();
        bad[10] ^= 1;
        let rewrite = StorageRequest::WriteTemp {
            temp: t,
            offset: 0,
            data: Bytes::from(bad),
        };
        assert_eq!(f.answer(&rewrite), Answer::Result(StorageResult::Done));
        assert_eq!(
            f.answer(&commit(Expect::Nothing)),
            Answer::Result(StorageResult::Corrupt(vec![0]))
        );
        assert_eq!(f.answer(&write), Answer::Result(StorageResult::Done));
        assert_eq!(
            f.answer(&commit(Expect::Nothing)),
            Answer::Result(StorageResult::Done)
        );
        assert_eq!(f.digest(), src.digest());
        assert!(f.unverified_blocks().is_empty());
        assert_eq!(f.temps().count(), 0);
    }

    #[test]
    fn a_full_disk_refuses_temp_writes_and_the_state_survives() {
        let mut f = Folder::new(3);
        f.faults.disk_budget_bytes = Some(10);
        let write = StorageRequest::WriteTemp {
            temp: TempId(1),
            offset: 0,
            data: Bytes::from_static(&[0; 11]),
        };
        assert_eq!(
            f.answer(&write),
            Answer::Result(StorageResult::Failed(StorageError::DiskFull))
        );
        let persist = StorageRequest::PersistState {
            bytes: Bytes::from_static(b"blob"),
        };
        assert_eq!(f.answer(&persist), Answer::Result(StorageResult::Done));
        assert_eq!(
            f.answer(&StorageRequest::LoadState),
            Answer::Result(StorageResult::Loaded(Some(Bytes::from_static(b"blob"))))
        );
    }

    #[test]
    fn the_digest_sees_content_and_modes_but_not_temps_or_mtimes() {
        let (mut a, _) = file("x", b"hello");
        let (b, _) = file("x", b"hello");
        assert_eq!(a.digest(), b.digest());
        a.answer(&StorageRequest::WriteTemp {
            temp: TempId(9),
            offset: 0,
            data: Bytes::from_static(b"zz"),
        });
        assert_eq!(a.digest(), b.digest());
        a.set_mode("x", 4);
        assert_ne!(a.digest(), b.digest());
        let (c, _) = file("x", b"hellO");
        assert_ne!(c.digest(), b.digest());
    }
}
