//! A folder's index: its records by path (present entries and deletion records), ordered by
//! the local sequence number each change got, with a block locator (hash -> a local file and
//! offset) and a case-key map. Compact: records live in a slab; the maps hold slot numbers,
//! and the locator is keyed by the first eight bytes of a hash, checked against the record on
//! every use.

use std::collections::BTreeMap;

use hashbrown::HashTable;
use weft_protocol::{Block, BlockHash, FileKind, Version};

use super::paths;
use super::types::Record;
use crate::hasher::{hash_with, prefix_hashes, HashKey};

/// A record's place in the slab.
type Slot = u32;

/// Local files the locator names per block hash, at most. A hash held by more files is found
/// through these; when the last of them goes, the records are searched for other holders.
pub(crate) const HOLDERS_MAX: usize = 4;

/// The index of one folder.
#[derive(Default)]
pub(crate) struct Index {
    /// The records; `None` is a free slot.
    slots: Vec<Option<Record>>,
    /// Free slots, reused first.
    free: Vec<Slot>,
    /// Slot by path (hashed with `hash_key`).
    by_path: HashTable<Slot>,
    /// Slot by [`paths::case_key`] of the path.
    by_case: HashTable<Slot>,
    /// Slot by local sequence number.
    by_seq: BTreeMap<u64, Slot>,
    /// (slot, block number) by the first eight bytes of the block's hash: up to
    /// [`HOLDERS_MAX`] present local files holding it, one entry each.
    locator: HashTable<(Slot, u32)>,
    /// Hashes held by more files than the locator names.
    saturated: std::collections::BTreeSet<BlockHash>,
    /// Records that are a local rename: their sequence -> (old path, the old path's deletion
    /// version), announced as IMOVED.
    moves: BTreeMap<u64, (String, Version)>,
    /// The highest sequence number given.
    sequence: u64,
    /// Keys the hash of paths (peers choose them).
    hash_key: HashKey,
}

impl core::fmt::Debug for Index {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Index")
            .field("records", &self.by_seq.len())
            .field("sequence", &self.sequence)
            .finish()
    }
}

fn hash_block(h: &BlockHash) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

impl Index {
    /// An empty index whose path maps are hashed with `hash_key`.
    pub(crate) fn new(hash_key: HashKey) -> Index {
        Index {
            hash_key,
            ..Index::default()
        }
    }

    /// The highest local sequence number given.
    pub(crate) fn sequence(&self) -> u64 {
        self.sequence
    }

    fn slot_of(&self, path: &str) -> Option<Slot> {
        self.slot_of_hashed(path, hash_with(&self.hash_key, path))
    }

    /// [`Index::slot_of`] of `path`, whose hash is `hash`.
    fn slot_of_hashed(&self, path: &str, hash: u64) -> Option<Slot> {
        let slots = &self.slots;
        self.by_path
            .find(hash, |&s| {
                slots[s as usize]
                    .as_ref()
                    .is_some_and(|r| r.entry.path == path)
            })
            .copied()
    }

    /// The record at `path`.
    pub(crate) fn get(&self, path: &str) -> Option<&Record> {
        self.slot_of(path)
            .and_then(|s| self.slots[s as usize].as_ref())
    }

    /// Puts `record` at its path with the next local sequence number (`moved_from`: it is a
    /// local rename of that path, whose deletion has that version). Returns the sequence.
    pub(crate) fn put(&mut self, mut record: Record, moved_from: Option<(String, Version)>) -> u64 {
        self.sequence += 1;
        record.entry.sequence = self.sequence;
        let seq = self.sequence;
        self.insert(record);
        if let Some(m) = moved_from {
            self.moves.insert(seq, m);
        }
        seq
    }

    /// The next change gets a sequence number above `sequence` (a restart: see
    /// `SEQUENCE_RESTART_GAP`).
    pub(crate) fn skip_to(&mut self, sequence: u64) {
        self.sequence = self.sequence.max(sequence);
    }

    /// Puts `record` keeping its sequence number (loading persisted state).
    pub(crate) fn restore(&mut self, record: Record, moved_from: Option<(String, Version)>) {
        let seq = record.entry.sequence;
        self.sequence = self.sequence.max(seq);
        self.insert(record);
        if let Some(m) = moved_from {
            self.moves.insert(seq, m);
        }
    }

    fn insert(&mut self, record: Record) {
        if let Some(slot) = self.slot_of(&record.entry.path) {
            self.unlink(slot);
            self.link(slot, record);
            return;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                // The slab holds at most u32::MAX records: far beyond any folder it serves.
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let key = &self.hash_key;
        let path_hash = hash_with(key, record.entry.path.as_str());
        let case_hash = hash_with(key, paths::case_key(&record.entry.path).as_str());
        self.link(slot, record);
        let (slots, key) = (&self.slots, &self.hash_key);
        let rehash_path = |&s: &Slot| {
            slots[s as usize]
                .as_ref()
                .map_or(0, |r| hash_with(key, r.entry.path.as_str()))
        };
        self.by_path.insert_unique(path_hash, slot, rehash_path);
        let rehash_case = |&s: &Slot| {
            slots[s as usize].as_ref().map_or(0, |r| {
                hash_with(key, paths::case_key(&r.entry.path).as_str())
            })
        };
        self.by_case.insert_unique(case_hash, slot, rehash_case);
    }

    /// Removes the sequence and locator entries of the record in `slot` (it stays in the
    /// path maps).
    fn unlink(&mut self, slot: Slot) {
        let Some(old) = self.slots[slot as usize].take() else {
            return;
        };
        self.by_seq.remove(&old.entry.sequence);
        self.moves.remove(&old.entry.sequence);
        // Each hash once, however many blocks of the record hold it.
        let mut orphaned = std::collections::BTreeSet::new();
        for b in &old.entry.blocks {
            let h = hash_block(&b.hash);
            // `old` is out of the slab: its entries are the ones naming `slot`.
            while let Ok(e) = self.locator.find_entry(h, |&(s, _)| s == slot) {
                e.remove();
            }
            if self.saturated.contains(&b.hash) && self.locate(&b.hash).is_none() {
                orphaned.insert(b.hash);
            }
        }
        if !orphaned.is_empty() {
            self.relocate(&orphaned);
        }
    }

    /// Names up to [`HOLDERS_MAX`] present records holding each of `hashes` (their named
    /// holders all went, and more files held them), in one pass over the records.
    fn relocate(&mut self, hashes: &std::collections::BTreeSet<BlockHash>) {
        let mut found: BTreeMap<BlockHash, Vec<(Slot, u32)>> = BTreeMap::new();
        for hash in hashes {
            self.saturated.remove(hash);
        }
        for (s, r) in self.slots.iter().enumerate() {
            let Some(r) = r.as_ref().filter(|r| !r.deleted) else {
                continue;
            };
            // Slots and block numbers fit u32 (see `insert` and FILE_BLOCKS_MAX).
            let slot = u32::try_from(s).unwrap_or(u32::MAX);
            for (n, b) in r.entry.blocks.iter().enumerate() {
                if !hashes.contains(&b.hash) {
                    continue;
                }
                let holders = found.entry(b.hash).or_default();
                if holders.last().is_some_and(|&(last, _)| last == slot) {
                    continue;
                }
                if holders.len() == HOLDERS_MAX {
                    self.saturated.insert(b.hash);
                    continue;
                }
                holders.push((slot, u32::try_from(n).unwrap_or(u32::MAX)));
            }
        }
        for (hash, holders) in found {
            for e in holders {
                self.insert_location(hash, e);
            }
        }
    }

    fn insert_location(&mut self, hash: BlockHash, entry: (Slot, u32)) {
        let slots = &self.slots;
        let block_of = |&(s, n): &(Slot, u32)| {
            slots[s as usize]
                .as_ref()
                .and_then(|r| r.entry.blocks.get(n as usize))
                .map(|x| x.hash)
        };
        self.locator.insert_unique(hash_block(&hash), entry, |e| {
            block_of(e).map_or(0, |x| hash_block(&x))
        });
    }

    fn link(&mut self, slot: Slot, record: Record) {
        self.by_seq.insert(record.entry.sequence, slot);
        let deleted = record.deleted;
        let blocks = record.entry.blocks.len();
        // The record goes in first: rehashing on growth reads every entry's hash from it.
        self.slots[slot as usize] = Some(record);
        if deleted {
            return;
        }
        for i in 0..blocks {
            let slots = &self.slots;
            let Some(hash) = slots[slot as usize]
                .as_ref()
                .and_then(|r| r.entry.blocks.get(i))
                .map(|b| b.hash)
            else {
                continue;
            };
            let block_of = |&(s, n): &(Slot, u32)| {
                slots[s as usize]
                    .as_ref()
                    .and_then(|r| r.entry.blocks.get(n as usize))
                    .map(|x| x.hash)
            };
            let h = hash_block(&hash);
            // At most FILE_BLOCKS_MAX blocks a file, far below u32::MAX.
            let n = u32::try_from(i).unwrap_or(u32::MAX);
            let mut holders = 0;
            let mut here = false;
            for e in self.locator.iter_hash(h) {
                if block_of(e) == Some(hash) {
                    holders += 1;
                    here |= e.0 == slot;
                }
            }
            if here {
                continue;
            }
            if holders >= HOLDERS_MAX {
                self.saturated.insert(hash);
                continue;
            }
            self.insert_location(hash, (slot, n));
        }
    }

    /// A present local file holding a block with `hash`: its path and the block.
    pub(crate) fn locate(&self, hash: &BlockHash) -> Option<(&str, Block)> {
        let slots = &self.slots;
        let &(s, n) = self.locator.find(hash_block(hash), |&(s, n)| {
            slots[s as usize]
                .as_ref()
                .and_then(|r| r.entry.blocks.get(n as usize))
                .is_some_and(|x| x.hash == *hash)
        })?;
        let r = self.slots[s as usize].as_ref()?;
        let b = r.entry.blocks.get(n as usize)?;
        (!r.deleted).then_some((r.entry.path.as_str(), *b))
    }

    /// A present local file holding a block with `hash` whose path `skip` does not reject:
    /// its path and the block (the named holders first; past them, for a hash more files
    /// hold than the locator names, the records are searched).
    pub(crate) fn locate_except(
        &self,
        hash: &BlockHash,
        skip: impl Fn(&str) -> bool,
    ) -> Option<(&str, Block)> {
        let holding = |r: &'_ Record| -> Option<Block> {
            if r.deleted || skip(&r.entry.path) {
                return None;
            }
            r.entry.blocks.iter().find(|b| b.hash == *hash).copied()
        };
        let slots = &self.slots;
        let named = self
            .locator
            .iter_hash(hash_block(hash))
            .find_map(|&(s, n)| {
                let r = slots[s as usize].as_ref()?;
                let b = r.entry.blocks.get(n as usize)?;
                (b.hash == *hash && !r.deleted && !skip(&r.entry.path))
                    .then_some((r.entry.path.as_str(), *b))
            });
        if named.is_some() || !self.saturated.contains(hash) {
            return named;
        }
        self.slots
            .iter()
            .flatten()
            .find_map(|r| holding(r).map(|b| (r.entry.path.as_str(), b)))
    }

    /// The first directory on `path`'s way (a proper prefix, shortest first) that is a
    /// present symlink here. Each prefix is hashed off one pass over the path.
    pub(crate) fn symlink_on_way<'p>(&self, path: &'p str) -> Option<&'p str> {
        let cuts: Vec<usize> = path.match_indices('/').map(|(i, _)| i).collect();
        prefix_hashes(&self.hash_key, path, cuts.clone())
            .zip(cuts)
            .find_map(|(hash, cut)| {
                let dir = &path[..cut];
                let s = self.slot_of_hashed(dir, hash)?;
                self.slots[s as usize]
                    .as_ref()
                    .filter(|r| !r.deleted && r.entry.kind == FileKind::Symlink)
                    .map(|_| dir)
            })
    }

    /// The path of a present record that differs only in case from `path` or from a directory
    /// on its way (shortest first; `Docs/x` while `docs` is held; a directory held here in
    /// exactly that case clashes with nothing: what is written under it goes into it, even
    /// where a case-sensitive disk also holds `docs` beside `Docs`). The case key is made once:
    /// NFC and lowercasing keep every `/` (a starter nothing composes with, which no character
    /// lowercases to) and work within components, so a directory's key is the path's key up
    /// to the same `/` (a property test in `paths.rs`); each prefix key is hashed off one
    /// pass over the key.
    pub(crate) fn case_clash_on_way(&self, path: &str) -> Option<&str> {
        let key = paths::case_key(path);
        let cuts = |s: &str| -> Vec<usize> {
            s.match_indices('/')
                .map(|(i, _)| i)
                .chain([s.len()])
                .collect()
        };
        let (path_cuts, key_cuts) = (cuts(path), cuts(&key));
        let key_hashes: Vec<u64> = prefix_hashes(&self.hash_key, &key, key_cuts.clone()).collect();
        let path_hashes: Vec<u64> =
            prefix_hashes(&self.hash_key, path, path_cuts.clone()).collect();
        let held_as_is = |p: usize, hash: u64| {
            p < path.len()
                && self
                    .slot_of_hashed(&path[..p], hash)
                    .and_then(|s| self.slots[s as usize].as_ref())
                    .is_some_and(|r| !r.deleted)
        };
        key_hashes
            .into_iter()
            .zip(key_cuts)
            .zip(path_cuts.into_iter().zip(path_hashes))
            .filter(|&(_, (p, path_hash))| !held_as_is(p, path_hash))
            .find_map(|((hash, k), (p, _))| self.case_clash_hashed(&path[..p], &key[..k], hash))
    }

    /// A present record whose path differs from `path` only in case (`key`: `path`'s case
    /// key, whose hash is `hash`).
    fn case_clash_hashed(&self, path: &str, key: &str, hash: u64) -> Option<&str> {
        let slots = &self.slots;
        let s = self.by_case.find(hash, |&s| {
            slots[s as usize].as_ref().is_some_and(|r| {
                !r.deleted && r.entry.path != path && paths::case_key(&r.entry.path) == key
            })
        })?;
        self.slots[*s as usize]
            .as_ref()
            .map(|r| r.entry.path.as_str())
    }

    /// The records with a sequence number above `since`, in sequence order, each with its
    /// rename annotation.
    pub(crate) fn since(
        &self,
        since: u64,
    ) -> impl Iterator<Item = (&Record, Option<&(String, Version)>)> + '_ {
        self.by_seq
            .range(since.saturating_add(1)..)
            .filter_map(move |(seq, &s)| {
                self.slots[s as usize]
                    .as_ref()
                    .map(|r| (r, self.moves.get(seq)))
            })
    }

    /// Every record, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Record> + '_ {
        self.slots.iter().flatten()
    }

    /// Checks the maps against the slab.
    pub(crate) fn check(&self) -> Result<(), String> {
        let live = self.slots.iter().flatten().count();
        if live != self.by_seq.len() || live != self.by_path.len() || live != self.by_case.len() {
            return Err(format!(
                "index: {live} records, {} by sequence, {} by path, {} by case",
                self.by_seq.len(),
                self.by_path.len(),
                self.by_case.len()
            ));
        }
        for (&seq, &s) in &self.by_seq {
            let r = self.slots[s as usize]
                .as_ref()
                .ok_or_else(|| format!("index: sequence {seq} names a free slot"))?;
            if r.entry.sequence != seq || seq > self.sequence {
                return Err(format!(
                    "index: {} has sequence {} under {seq}",
                    r.entry.path, r.entry.sequence
                ));
            }
            if self.slot_of(&r.entry.path) != Some(s) {
                return Err(format!("index: {} is not found by its path", r.entry.path));
            }
        }
        if let Some(seq) = self.moves.keys().find(|s| !self.by_seq.contains_key(s)) {
            return Err(format!(
                "index: a rename annotation for the gone sequence {seq}"
            ));
        }
        // The locator names each holder once, and at most HOLDERS_MAX a hash.
        let mut named: BTreeMap<BlockHash, Vec<Slot>> = BTreeMap::new();
        for &(s, n) in self.locator.iter() {
            let hash = self.slots[s as usize]
                .as_ref()
                .and_then(|r| r.entry.blocks.get(n as usize))
                .map(|b| b.hash)
                .ok_or_else(|| format!("index: the locator names block {n} of free slot {s}"))?;
            let holders = named.entry(hash).or_default();
            if holders.contains(&s) || holders.len() == HOLDERS_MAX {
                return Err(format!(
                    "index: the locator names {} holders of a block, slot {s} among them",
                    holders.len() + 1
                ));
            }
            holders.push(s);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use quickcheck::quickcheck;
    use weft_protocol::{FileEntry, FileKind};

    use super::*;

    fn record(path: &str, hashes: &[u8], deleted: bool) -> Record {
        let blocks: Vec<Block> = hashes
            .iter()
            .enumerate()
            .map(|(i, &h)| Block {
                offset: i as u64,
                len: 1,
                hash: [h; 32],
            })
            .collect();
        Record {
            entry: FileEntry {
                path: path.into(),
                kind: FileKind::File,
                target: String::new(),
                mode: 6,
                size: blocks.len() as u64,
                mtime_ms: 0,
                modified_by: 1,
                version: Version::default(),
                sequence: 0,
                blocks: if deleted { Vec::new() } else { blocks },
            },
            deleted,
        }
    }

    /// A block is located past a rejected holder, also among holders the locator does not
    /// name (serving tries another copy when the first one no longer reads back).
    #[test]
    fn locate_except_skips_rejected_holders_and_searches_past_the_named_ones() {
        let mut index = Index::default();
        let count = HOLDERS_MAX + 2;
        for i in 0..count {
            index.put(record(&format!("f{i}"), &[7, i as u8 + 10], false), None);
        }
        let hash = [7u8; 32];
        let mut seen = Vec::new();
        while let Some((path, b)) = index.locate_except(&hash, |p| seen.iter().any(|s| s == p)) {
            assert_eq!(b.hash, hash);
            seen.push(path.to_string());
        }
        seen.sort();
        let mut all: Vec<String> = (0..count).map(|i| format!("f{i}")).collect();
        all.sort();
        assert_eq!(seen, all);
        assert!(index.locate_except(&[9u8; 32], |_| false).is_none());
        index.put(record("f0", &[], true), None);
        assert!(index.locate_except(&hash, |p| p != "f0").is_none());
    }

    /// A record holding many copies of a block whose holders the locator no longer names
    /// (more files than HOLDERS_MAX held it) has them searched for once when it goes, not once
    /// a copy: each search scanned every record, and each named the same holders again.
    #[test]
    fn a_record_with_many_copies_of_a_block_searches_its_holders_once() {
        let mut index = Index::default();
        index.put(record("f0", &[7; 64], false), None);
        for i in 1..=HOLDERS_MAX {
            index.put(record(&format!("f{i}"), &[7], false), None);
        }
        for i in 1..HOLDERS_MAX {
            index.put(record(&format!("f{i}"), &[], true), None);
        }
        index.put(record("f0", &[], true), None);
        assert_eq!(index.check(), Ok(()));
        let last = format!("f{HOLDERS_MAX}");
        assert_eq!(index.locate(&[7; 32]).map(|(p, _)| p), Some(last.as_str()));
        assert_eq!(index.locator.len(), 1);
    }

    quickcheck! {
        /// The locator (at most HOLDERS_MAX holders a hash, searched again when they go)
        /// against the plain answer: a block is located exactly when a present record holds
        /// it, and where it says.
        fn the_locator_finds_every_held_block(ops: Vec<(u8, Vec<u8>, bool)>) -> bool {
            let mut index = Index::default();
            for (path, hashes, deleted) in &ops {
                let hashes: Vec<u8> = hashes.iter().map(|h| h % 6).take(8).collect();
                index.put(record(&format!("f{}", path % 12), &hashes, *deleted), None);
                for h in 0..6u8 {
                    let hash = [h; 32];
                    let held = index
                        .iter()
                        .any(|r| !r.deleted && r.entry.blocks.iter().any(|b| b.hash == hash));
                    let located = index.locate(&hash);
                    let right = located.is_none_or(|(p, b)| {
                        b.hash == hash
                            && index.get(p).is_some_and(|r| !r.deleted && r.entry.blocks.contains(&b))
                    });
                    if held != located.is_some() || !right {
                        return false;
                    }
                }
            }
            index.check().is_ok()
        }
    }
}
