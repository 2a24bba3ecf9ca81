//! Random local operations on the nodes' folders (creates, edits, inserts, truncations,
//! renames, deletes, mode changes, directories, symlinks), and the record of every version
//! they wrote: which are still owed (never superseded) and which contents are authentic.

use std::collections::{BTreeMap, BTreeSet};

use weft_engine::protocol::BlockHash;

use crate::folder::FsNode;
use crate::replica_net::ReplicaNet;
use crate::rng::SimRng;

/// A file content an operation wrote at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Where it is owed (its base path: conflict copies of it count).
    pub path: String,
    /// blake3 of the whole content.
    pub hash: BlockHash,
    /// Whether no later operation that saw it replaced or deleted it.
    pub owed: bool,
}

/// Every version written by an operation.
#[derive(Debug, Default, Clone)]
pub struct Versions {
    /// In order of writing.
    pub written: Vec<Written>,
    /// blake3 of every content any operation wrote (what may land anywhere).
    pub authentic: BTreeSet<BlockHash>,
}

/// `path` without its conflict-copy suffixes: `a/b.conflict-1a2b3c4d-3.txt` → `a/b.txt`.
pub fn base_path(path: &str) -> String {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (Some(d), n.to_string()),
        None => (None, path.to_string()),
    };
    let mut name = name;
    while let Some(i) = name.find(".conflict-") {
        let rest = &name[i + ".conflict-".len()..];
        let hex = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
        let after_hex = &rest[hex..];
        let Some(counter) = after_hex.strip_prefix('-') else {
            break;
        };
        let digits = counter.bytes().take_while(u8::is_ascii_digit).count();
        if hex != 8 || digits == 0 {
            break;
        }
        name = format!("{}{}", &name[..i], &counter[digits..]);
    }
    match dir {
        Some(d) => format!("{d}/{name}"),
        None => name,
    }
}

impl Versions {
    /// Records content `data` written at `path` by an operation at a node that held
    /// `previous` there. The content it held already (a truncation of an empty file) is no
    /// new version (SPEC.md §22.4: a new `mtime_ms` alone makes none), so it changes nothing
    /// of what is owed: a deletion elsewhere still supersedes it.
    pub fn write(&mut self, path: &str, previous: Option<BlockHash>, data: &[u8]) {
        let hash = *blake3::hash(data).as_bytes();
        if previous == Some(hash) {
            return;
        }
        if let Some(h) = previous {
            self.supersede(path, h);
        }
        self.authentic.insert(hash);
        self.written.push(Written {
            path: base_path(path),
            hash,
            owed: true,
        });
    }

    /// A node that held content `hash` at `path` deleted or replaced it.
    pub fn supersede(&mut self, path: &str, hash: BlockHash) {
        let base = base_path(path);
        for w in &mut self.written {
            if w.owed && w.hash == hash && w.path == base {
                w.owed = false;
            }
        }
    }

    /// A node that held content `hash` at `from` renamed it to `to`.
    pub fn rename(&mut self, from: &str, to: &str, hash: BlockHash) {
        let (base, new) = (base_path(from), base_path(to));
        for w in &mut self.written {
            if w.owed && w.hash == hash && w.path == base {
                w.path = new.clone();
            }
        }
    }

    /// Versions owed that node `i` of `net` lacks (not at their path nor at a conflict copy
    /// of it): `(path, hash)`.
    pub fn missing_at(&self, net: &ReplicaNet, i: usize) -> Vec<(String, BlockHash)> {
        let mut held: BTreeMap<String, BTreeSet<BlockHash>> = BTreeMap::new();
        for (path, node) in net.nodes[i].folder.iter() {
            if let FsNode::File { data, .. } = node {
                held.entry(base_path(path))
                    .or_default()
                    .insert(*blake3::hash(data).as_bytes());
            }
        }
        self.written
            .iter()
            .filter(|w| w.owed && !held.get(&w.path).is_some_and(|s| s.contains(&w.hash)))
            .map(|w| (w.path.clone(), w.hash))
            .collect()
    }

    /// Files at node `i` whose content no operation wrote: `(path)`.
    pub fn inauthentic_at(&self, net: &ReplicaNet, i: usize) -> Vec<String> {
        net.nodes[i]
            .folder
            .iter()
            .filter_map(|(path, node)| match node {
                FsNode::File { data, .. }
                    if !self.authentic.contains(blake3::hash(data).as_bytes()) =>
                {
                    Some(path.clone())
                }
                _ => None,
            })
            .collect()
    }
}

/// `len` seeded random bytes.
pub fn random_bytes(rng: &mut SimRng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A file size: mostly small, some medium, a few of several MiB (if `large`).
fn file_size(rng: &mut SimRng, large: bool) -> usize {
    let roll = rng.below(100);
    (if roll < 70 {
        rng.below(4 * 1024)
    } else if roll < 92 {
        rng.between(4 * 1024, 64 * 1024)
    } else if roll < 98 || !large {
        rng.between(64 * 1024, 512 * 1024)
    } else {
        rng.between(2 << 20, 6 << 20)
    }) as usize
}

/// The operations of a run.
#[derive(Debug)]
pub struct Ops {
    rng: SimRng,
    /// Versions written.
    pub versions: Versions,
    /// Operations carried out (those that changed something).
    pub done: u64,
    /// Whether creates may be several MiB.
    pub large: bool,
}

fn content_hash(node: Option<&FsNode>) -> Option<BlockHash> {
    match node {
        Some(FsNode::File { data, .. }) => Some(*blake3::hash(data).as_bytes()),
        _ => None,
    }
}

impl Ops {
    /// Operations drawn from `seed`.
    pub fn new(seed: u64, large: bool) -> Ops {
        Ops {
            rng: SimRng::child(seed, "replicate ops", 0),
            versions: Versions::default(),
            done: 0,
            large,
        }
    }

    /// A random node among `candidates`.
    pub fn pick(&mut self, candidates: &[usize]) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.below(candidates.len() as u64) as usize])
    }

    /// One random operation at node `i`.
    pub fn random(&mut self, net: &mut ReplicaNet, i: usize) {
        let folder = &net.nodes[i].folder;
        let files: Vec<String> = folder
            .iter()
            .filter(|(_, n)| matches!(n, FsNode::File { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        let dirs: Vec<String> = folder
            .iter()
            .filter(|(_, n)| matches!(n, FsNode::Dir { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        let links: Vec<String> = folder
            .iter()
            .filter(|(_, n)| matches!(n, FsNode::Symlink { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        let roll = self.rng.below(100);
        let file =
            (!files.is_empty()).then(|| files[self.rng.below(files.len() as u64) as usize].clone());
        let dir = if dirs.is_empty() || self.rng.chance(0.5) {
            None
        } else {
            Some(dirs[self.rng.below(dirs.len() as u64) as usize].clone())
        };
        let name = |rng: &mut SimRng, prefix: &str| {
            let ext = if rng.chance(0.5) { ".txt" } else { "" };
            let n = format!("{prefix}{}{ext}", rng.below(40));
            match &dir {
                Some(d) => format!("{d}/{n}"),
                None => n,
            }
        };
        let roll = if file.is_none() && roll < 88 { 0 } else { roll };
        match (roll, file) {
            (0..=29, _) => {
                let path = name(&mut self.rng, "f");
                let size = file_size(&mut self.rng, self.large);
                let data = random_bytes(&mut self.rng, size);
                self.write(net, i, &path, data);
            }
            (30..=44, Some(f)) => {
                let Some(mut data) = file_data(net, i, &f) else {
                    return;
                };
                let at = self.rng.below(data.len() as u64 + 1) as usize;
                let len = (self.rng.between(1, 4096) as usize).min(data.len() - at);
                let patch = random_bytes(&mut self.rng, len);
                data[at..at + len].copy_from_slice(&patch);
                if len == 0 {
                    data.push(1);
                }
                self.write(net, i, &f, data);
            }
            (45..=54, Some(f)) => {
                let Some(mut data) = file_data(net, i, &f) else {
                    return;
                };
                let at = if self.rng.chance(0.5) {
                    0
                } else {
                    self.rng.below(data.len() as u64 + 1) as usize
                };
                let len = self.rng.between(1, 2048) as usize;
                let patch = random_bytes(&mut self.rng, len);
                data.splice(at..at, patch);
                self.write(net, i, &f, data);
            }
            (55..=59, Some(f)) => {
                let Some(mut data) = file_data(net, i, &f) else {
                    return;
                };
                let len = self.rng.below(data.len() as u64) as usize;
                data.truncate(len);
                self.write(net, i, &f, data);
            }
            (60..=69, Some(f)) => {
                let to = name(&mut self.rng, "r");
                self.rename(net, i, &f, &to);
            }
            (70..=79, Some(f)) => self.delete(net, i, &f),
            (80..=84, Some(f)) => {
                let mode = [4, 5, 6, 7][self.rng.below(4) as usize];
                net.local(i, |folder, _| folder.set_mode(&f, mode));
                self.done += 1;
            }
            (85..=87, Some(_)) => {
                if let Some(l) = links.first().filter(|_| self.rng.chance(0.3)) {
                    self.delete(net, i, &l.clone());
                    return;
                }
                let path = name(&mut self.rng, "d");
                let mode = [5, 7][self.rng.below(2) as usize];
                net.local(i, |folder, now| folder.make_dir(&path, mode, now));
                self.done += 1;
            }
            _ => {
                let path = name(&mut self.rng, "l");
                let target = format!("f{}.txt", self.rng.below(40));
                net.local(i, |folder, now| folder.make_symlink(&path, &target, now));
                self.done += 1;
            }
        }
    }

    /// Writes `data` at `path` on node `i` (a create or new content), recording the version.
    pub fn write(&mut self, net: &mut ReplicaNet, i: usize, path: &str, data: Vec<u8>) {
        let node = net.nodes[i].folder.get(path);
        if matches!(node, Some(FsNode::Dir { .. } | FsNode::Symlink { .. })) {
            return;
        }
        let previous = content_hash(node);
        let mode = match node {
            Some(FsNode::File { mode, .. }) => *mode,
            _ => 6,
        };
        let before = net.nodes[i].folder.get(path).cloned();
        let recorded = data.clone();
        net.local(i, |folder, now| folder.write_file(path, data, mode, now));
        if net.nodes[i].folder.get(path).cloned() != before {
            self.versions.write(path, previous, &recorded);
            self.done += 1;
        }
    }

    /// Deletes what is at `path` on node `i`.
    pub fn delete(&mut self, net: &mut ReplicaNet, i: usize, path: &str) {
        let previous = content_hash(net.nodes[i].folder.get(path));
        net.local(i, |folder, _| folder.remove(path));
        if net.nodes[i].folder.get(path).is_none() {
            if let Some(h) = previous {
                self.versions.supersede(path, h);
            }
            self.done += 1;
        }
    }

    /// Renames `from` to `to` on node `i`.
    pub fn rename(&mut self, net: &mut ReplicaNet, i: usize, from: &str, to: &str) {
        let previous = content_hash(net.nodes[i].folder.get(from));
        net.local(i, |folder, _| folder.rename(from, to));
        if net.nodes[i].folder.get(from).is_none() {
            if let Some(h) = previous {
                self.versions.rename(from, to, h);
            }
            self.done += 1;
        }
    }
}

/// The bytes of the file at `path` on node `i`.
pub fn file_data(net: &ReplicaNet, i: usize, path: &str) -> Option<Vec<u8>> {
    match net.nodes[i].folder.get(path) {
        Some(FsNode::File { data, .. }) => Some(data.to_vec()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_copies_share_their_base_path() {
        assert_eq!(base_path("a/b.conflict-1a2b3c4d-3.txt"), "a/b.txt");
        assert_eq!(base_path("b.conflict-1a2b3c4d-3"), "b");
        assert_eq!(
            base_path("b.conflict-1a2b3c4d-3.conflict-00000000-12.txt"),
            "b.txt"
        );
        assert_eq!(base_path("b.conflict-xyz.txt"), "b.conflict-xyz.txt");
    }

    /// Seed 95110: an empty file deleted at one node and truncated (to empty) at another
    /// that had not heard of the deletion. The truncation made no version, so nothing is
    /// owed; a real edit there would be.
    #[test]
    fn the_same_content_written_again_is_no_new_version() {
        let empty = *blake3::hash(b"").as_bytes();
        let mut v = Versions::default();
        v.write("f7", None, b"");
        v.supersede("f7", empty);
        v.write("f7", Some(empty), b"");
        assert!(v.written.iter().all(|w| !w.owed), "{:?}", v.written);
        v.write("f7", Some(empty), b"x");
        let owed: Vec<_> = v.written.iter().filter(|w| w.owed).collect();
        assert_eq!(owed.len(), 1, "{owed:?}");
        assert_eq!(owed[0].hash, *blake3::hash(b"x").as_bytes());
    }
}
