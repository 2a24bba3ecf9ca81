//! The replication machine driven directly: two or three `Replica`s wired through a tiny
//! in-memory host (a map of path -> bytes answering every storage request) and a message
//! queue that encodes and decodes every message.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use weft_protocol::{
    Code, FileEntry, FileKind, FolderId, Message, NodeId, PathRefusal, ReplicaMessage, Version,
};

use super::blocks::{chunk, Tier};
use super::*;
use crate::time::{Duration, Instant};

mod basics;
mod conflicts;
mod faults;
mod gate;
mod ignore;
mod scheduling;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    kind: FileKind,
    data: Vec<u8>,
    target: String,
    mode: u8,
    mtime_ms: i64,
}

#[derive(Default)]
struct Host {
    items: BTreeMap<String, Item>,
    temps: BTreeMap<TempId, Vec<u8>>,
    state: Option<Bytes>,
    /// The next this many `WriteTemp` steps fail with a full disk.
    disk_full_writes: usize,
    /// The next this many `Commit` steps fail with an I/O error.
    failing_commits: usize,
}

fn holds(item: Option<&Item>, expect: Expect) -> bool {
    match (item, expect) {
        (None, Expect::Nothing) => true,
        (
            Some(i),
            Expect::Present {
                kind,
                size,
                mtime_ms,
                mode,
            },
        ) => {
            i.kind == kind
                && i.data.len() as u64 == size
                && i.mtime_ms == mtime_ms
                && (i.kind != FileKind::File || i.mode == mode)
        }
        _ => false,
    }
}

impl Host {
    /// Whether a parent of `path` is something other than a directory (a missing parent
    /// counts as one: tests make files without their directories).
    fn parent_is_no_directory(&self, path: &str) -> bool {
        path.match_indices('/').any(|(at, _)| {
            self.items
                .get(&path[..at])
                .is_some_and(|i| i.kind != FileKind::Directory)
        })
    }

    fn answer(&mut self, request: &StorageRequest) -> StorageResult {
        match request {
            StorageRequest::LoadState => StorageResult::Loaded(self.state.clone()),
            StorageRequest::PersistState { bytes } => {
                self.state = Some(bytes.clone());
                StorageResult::Done
            }
            StorageRequest::ReadBlock { path, offset, len } => match self.items.get(path) {
                Some(i) if (*offset + u64::from(*len)) as usize <= i.data.len() => {
                    let at = *offset as usize;
                    StorageResult::Block(Bytes::copy_from_slice(&i.data[at..at + *len as usize]))
                }
                _ => StorageResult::NotFound,
            },
            StorageRequest::Commit { .. } if self.failing_commits > 0 => {
                self.failing_commits -= 1;
                StorageResult::Failed(StorageError::Io("a failing disk".into()))
            }
            StorageRequest::WriteTemp { .. } if self.disk_full_writes > 0 => {
                self.disk_full_writes -= 1;
                StorageResult::Failed(StorageError::DiskFull)
            }
            StorageRequest::WriteTemp { temp, offset, data } => {
                let t = self.temps.entry(*temp).or_default();
                let end = *offset as usize + data.len();
                if t.len() < end {
                    t.resize(end, 0);
                }
                t[*offset as usize..end].copy_from_slice(data);
                StorageResult::Done
            }
            StorageRequest::Commit {
                temp,
                path,
                size,
                blocks,
                mode,
                mtime_ms,
                expect,
            } => {
                let Some(mut t) = self.temps.get(temp).cloned() else {
                    return StorageResult::NotFound;
                };
                t.resize(*size as usize, 0);
                let bad: Vec<u64> = blocks
                    .iter()
                    .filter(|b| {
                        let r = b.offset as usize..(b.offset + u64::from(b.len)) as usize;
                        *blake3::hash(&t[r]).as_bytes() != b.hash
                    })
                    .map(|b| b.offset)
                    .collect();
                if !bad.is_empty() {
                    return StorageResult::Corrupt(bad);
                }
                if !holds(self.items.get(path), *expect) {
                    return StorageResult::Changed;
                }
                if self.parent_is_no_directory(path) {
                    return StorageResult::Failed(StorageError::Io("no parent directory".into()));
                }
                self.temps.remove(temp);
                let item = Item {
                    kind: FileKind::File,
                    data: t,
                    target: String::new(),
                    mode: *mode,
                    mtime_ms: *mtime_ms,
                };
                self.items.insert(path.clone(), item);
                StorageResult::Done
            }
            StorageRequest::DiscardTemp { temp } => {
                self.temps.remove(temp);
                StorageResult::Done
            }
            StorageRequest::Remove { path, expect } => {
                if !self.items.contains_key(path) {
                    return StorageResult::NotFound;
                }
                if !holds(self.items.get(path), *expect) {
                    return StorageResult::Changed;
                }
                // As a disk does: a directory goes only empty.
                let inside = format!("{path}/");
                if self.items.keys().any(|p| p.starts_with(&inside)) {
                    return StorageResult::Failed(StorageError::Io("directory not empty".into()));
                }
                self.items.remove(path);
                StorageResult::Done
            }
            StorageRequest::Rename {
                from,
                to,
                expect,
                over,
            } => {
                if !self.items.contains_key(from) {
                    return StorageResult::NotFound;
                }
                if !holds(self.items.get(from), *expect) || !holds(self.items.get(to), *over) {
                    return StorageResult::Changed;
                }
                let inside = format!("{to}/");
                if self.items.keys().any(|p| p.starts_with(&inside)) {
                    return StorageResult::Failed(StorageError::Io("directory not empty".into()));
                }
                let i = self.items.remove(from).expect("checked above");
                self.items.insert(to.clone(), i);
                StorageResult::Done
            }
            StorageRequest::MakeDir { path, mode } => {
                let item = Item {
                    kind: FileKind::Directory,
                    data: Vec::new(),
                    target: String::new(),
                    mode: *mode,
                    mtime_ms: 0,
                };
                self.items.insert(path.clone(), item);
                StorageResult::Done
            }
            StorageRequest::MakeSymlink { path, target } => {
                if self.items.contains_key(path) {
                    return StorageResult::Changed;
                }
                let item = Item {
                    kind: FileKind::Symlink,
                    data: Vec::new(),
                    target: target.clone(),
                    mode: 7,
                    mtime_ms: 0,
                };
                self.items.insert(path.clone(), item);
                StorageResult::Done
            }
            StorageRequest::SetMode { path, mode, expect } => {
                if !holds(self.items.get(path), *expect) {
                    return StorageResult::Changed;
                }
                if let Some(i) = self.items.get_mut(path) {
                    i.mode = *mode;
                }
                StorageResult::Done
            }
        }
    }

    /// The scanner: writes a file and reports it.
    fn put(&mut self, path: &str, data: Vec<u8>, mtime_ms: i64) -> LocalChange {
        let blocks = chunk(&data, Tier::MIN)
            .into_iter()
            .map(|b| weft_protocol::Block {
                offset: b.offset,
                len: b.len,
                hash: b.hash,
            })
            .collect();
        self.put_blocks(path, data, mtime_ms, blocks)
    }

    /// The scanner, reporting a file as one block (a block larger than chunking makes).
    fn put_one_block(&mut self, path: &str, data: Vec<u8>, mtime_ms: i64) -> LocalChange {
        let block = weft_protocol::Block {
            offset: 0,
            len: u32::try_from(data.len()).expect("a test block"),
            hash: *blake3::hash(&data).as_bytes(),
        };
        self.put_blocks(path, data, mtime_ms, vec![block])
    }

    /// The scanner: writes a file of `blocks` and reports it.
    fn put_blocks(
        &mut self,
        path: &str,
        data: Vec<u8>,
        mtime_ms: i64,
        blocks: Vec<weft_protocol::Block>,
    ) -> LocalChange {
        let entry = FileEntry {
            path: path.into(),
            kind: FileKind::File,
            target: String::new(),
            mode: 6,
            size: data.len() as u64,
            mtime_ms,
            modified_by: 0,
            version: Version::default(),
            sequence: 0,
            blocks,
        };
        let item = Item {
            kind: FileKind::File,
            data,
            target: String::new(),
            mode: 6,
            mtime_ms,
        };
        self.items.insert(path.into(), item);
        LocalChange::Changed(entry)
    }

    /// The scanner: the file at `path` gets owner mode bits `mode` (content and mtime kept).
    fn chmod(&mut self, path: &str, mode: u8) -> LocalChange {
        let item = self.items.get(path).expect("a file to chmod");
        let (data, mtime_ms) = (item.data.clone(), item.mtime_ms);
        let LocalChange::Changed(mut entry) = self.put(path, data, mtime_ms) else {
            unreachable!("put reports a change")
        };
        entry.mode = mode;
        if let Some(i) = self.items.get_mut(path) {
            i.mode = mode;
        }
        LocalChange::Changed(entry)
    }

    /// The scanner: makes a directory or a symlink and reports it.
    fn put_item(&mut self, path: &str, kind: FileKind, target: &str, mode: u8) -> LocalChange {
        let entry = FileEntry {
            path: path.into(),
            kind,
            target: target.into(),
            mode,
            size: 0,
            mtime_ms: 0,
            modified_by: 0,
            version: Version::default(),
            sequence: 0,
            blocks: Vec::new(),
        };
        let item = Item {
            kind,
            data: Vec::new(),
            target: target.into(),
            mode,
            mtime_ms: 0,
        };
        self.items.insert(path.into(), item);
        LocalChange::Changed(entry)
    }

    fn data(&self, path: &str) -> Option<&[u8]> {
        self.items.get(path).map(|i| i.data.as_slice())
    }
}

/// Deterministic bytes (no repeats worth chunking on).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Node {
    id: NodeId,
    replica: Replica,
    host: Host,
    events: Vec<ReplicaEvent>,
    requests: Vec<StorageRequest>,
}

struct Net {
    nodes: Vec<Node>,
    links: BTreeSet<(usize, usize)>,
    wire: VecDeque<(usize, usize, Code, Bytes)>,
    now: Instant,
    corrupt: Option<usize>,
    /// HEREIS messages still delivered (then dropped), if limited.
    hereis_budget: Option<usize>,
    /// Offsets of HEREIS pieces to drop, the first at each (a sender's full bulk queue).
    drop_pieces_at: Vec<u32>,
    hereis_bytes: u64,
    faults: Vec<(usize, usize, ReplicaFault)>,
    /// (from, to, entries) of every index message delivered.
    index_sent: Vec<(usize, usize, usize)>,
    /// (from, to, hashes) of every IWANT delivered.
    wants: Vec<(usize, usize, Vec<[u8; 32]>)>,
    lists: Vec<(usize, usize, weft_protocol::List)>,
    /// (from, to, code, payload bytes) of every message delivered.
    sent: Vec<(usize, usize, Code, usize)>,
    /// (from, to, offset, data bytes) of every HEREIS delivered.
    pieces: Vec<(usize, usize, u32, usize)>,
    /// (node, path, mode): when that node's replica asks to commit that path, the file there
    /// first gets that mode and the scanner reports it, while the commit is outstanding.
    chmod_before_commit: Option<(usize, String, u8)>,
}

fn folder() -> FolderId {
    FolderId::from_name("test")
}

fn replica(id: NodeId, seed: u8) -> Replica {
    let mut config = ReplicaConfig::new(folder(), id);
    config.requests_outstanding_max = 8;
    config.bytes_in_flight_per_peer_max = 64 * 1024;
    Replica::new(config, [seed; 32])
}

impl Net {
    fn new(n: usize) -> Net {
        let nodes = (0..n)
            .map(|i| {
                let mut raw = [0u8; 32];
                raw[0] = 0x10 * (i as u8 + 1);
                raw[1] = 0xab;
                let id = NodeId(raw);
                Node {
                    id,
                    replica: replica(id, i as u8),
                    host: Host::default(),
                    events: Vec::new(),
                    requests: Vec::new(),
                }
            })
            .collect();
        let mut net = Net {
            nodes,
            links: BTreeSet::new(),
            wire: VecDeque::new(),
            now: Instant(1_000_000_000),
            corrupt: None,
            hereis_budget: None,
            drop_pieces_at: Vec::new(),
            hereis_bytes: 0,
            faults: Vec::new(),
            index_sent: Vec::new(),
            wants: Vec::new(),
            lists: Vec::new(),
            sent: Vec::new(),
            pieces: Vec::new(),
            chmod_before_commit: None,
        };
        net.settle();
        net
    }

    fn link(&mut self, a: usize, b: usize) {
        self.links.insert((a, b));
        self.links.insert((b, a));
        let (ida, idb) = (self.nodes[a].id, self.nodes[b].id);
        self.nodes[a].replica.handle_link_up(self.now, idb);
        self.nodes[b].replica.handle_link_up(self.now, ida);
    }

    fn unlink(&mut self, a: usize, b: usize) {
        self.links.remove(&(a, b));
        self.links.remove(&(b, a));
        let (ida, idb) = (self.nodes[a].id, self.nodes[b].id);
        self.nodes[a].replica.handle_link_down(self.now, idb);
        self.nodes[b].replica.handle_link_down(self.now, ida);
    }

    fn local(&mut self, i: usize, change: LocalChange) {
        self.nodes[i].replica.handle_local(self.now, change);
    }

    fn put(&mut self, i: usize, path: &str, data: Vec<u8>, mtime_ms: i64) {
        let c = self.nodes[i].host.put(path, data, mtime_ms);
        self.local(i, c);
    }

    /// Node `i`'s scanner: the file at `from` was renamed to `to`, content and mtime kept.
    fn mv(&mut self, i: usize, from: &str, to: &str) {
        let item = self.nodes[i]
            .host
            .items
            .remove(from)
            .expect("a file to move");
        let LocalChange::Changed(to) = self.nodes[i].host.put(to, item.data, item.mtime_ms) else {
            unreachable!("put reports a change")
        };
        let from = from.into();
        self.local(i, LocalChange::Moved { from, to });
    }

    /// One round: every output handled, every message delivered. Whether anything happened.
    fn round(&mut self) -> bool {
        let mut active = false;
        let now = self.now;
        for i in 0..self.nodes.len() {
            while let Some(o) = self.nodes[i].replica.poll_output() {
                active = true;
                match o {
                    ReplicaOutput::Request { token, request } => {
                        if let StorageRequest::Commit { path, .. } = &request {
                            let hook = self.chmod_before_commit.take();
                            match hook {
                                Some((n, p, mode)) if n == i && p == *path => {
                                    let change = self.nodes[i].host.chmod(path, mode);
                                    self.nodes[i].replica.handle_local(now, change);
                                }
                                other => self.chmod_before_commit = other,
                            }
                        }
                        let node = &mut self.nodes[i];
                        let result = node.host.answer(&request);
                        node.requests.push(request);
                        node.replica.handle_completed(now, token, result);
                    }
                    ReplicaOutput::Send {
                        to,
                        code,
                        mut payload,
                        ..
                    } => {
                        if Some(i) == self.corrupt && code == Code::HEREIS {
                            let mut v = payload.to_vec();
                            if let Some(last) = v.last_mut() {
                                *last ^= 0xff;
                            }
                            payload = Bytes::from(v);
                        }
                        let targets: Vec<usize> = match to {
                            Recipient::Peer(p) => self
                                .nodes
                                .iter()
                                .position(|n| n.id == p)
                                .into_iter()
                                .collect(),
                            Recipient::Links => self
                                .links
                                .iter()
                                .filter(|l| l.0 == i)
                                .map(|l| l.1)
                                .collect(),
                        };
                        for j in targets {
                            if self.links.contains(&(i, j)) {
                                self.wire.push_back((i, j, code, payload.clone()));
                            }
                        }
                    }
                    ReplicaOutput::Event(e) => self.nodes[i].events.push(e),
                }
            }
            assert_eq!(self.nodes[i].replica.check_invariants(), Ok(()), "node {i}");
        }
        while let Some((i, j, code, payload)) = self.wire.pop_front() {
            if !self.links.contains(&(i, j)) {
                continue;
            }
            active = true;
            if code == Code::HEREIS {
                if let Some(b) = self.hereis_budget.as_mut() {
                    if *b == 0 {
                        continue;
                    }
                    *b -= 1;
                }
            }
            let Ok(Message::Replica(m)) = Message::decode(code, &payload) else {
                panic!("a replication message that does not decode: {code:?}");
            };
            if let ReplicaMessage::HereIs(x) = &m {
                if let Some(at) = self.drop_pieces_at.iter().position(|o| *o == x.offset) {
                    self.drop_pieces_at.remove(at);
                    continue;
                }
            }
            self.sent.push((i, j, code, payload.len()));
            match &m {
                ReplicaMessage::IHave(x) => self.index_sent.push((i, j, x.entries.len())),
                ReplicaMessage::IDeleted(x) => self.index_sent.push((i, j, x.entries.len())),
                ReplicaMessage::IMoved(x) => self.index_sent.push((i, j, x.entries.len())),
                ReplicaMessage::IWant(x) => self.wants.push((i, j, x.hashes.clone())),
                ReplicaMessage::List(x) => self.lists.push((i, j, *x)),
                ReplicaMessage::HereIs(x) => {
                    self.hereis_bytes += x.data.len() as u64;
                    self.pieces.push((i, j, x.offset, x.data.len()));
                }
                _ => {}
            }
            let from = self.nodes[i].id;
            if let Err(f) = self.nodes[j].replica.handle_message(now, from, m, &payload) {
                self.faults.push((i, j, f));
                self.unlink(i, j);
            }
        }
        self.now = self.now + Duration::from_millis(1);
        for n in &mut self.nodes {
            // The ordered deadlines stand in for a walk over every request and apply.
            assert_eq!(n.replica.poll_timeout(), n.replica.poll_timeout_plain());
            if n.replica.poll_timeout().is_some_and(|t| t <= self.now) {
                n.replica.handle_timeout(self.now);
            }
            assert_eq!(n.replica.poll_timeout(), n.replica.poll_timeout_plain());
        }
        active
    }

    /// Runs until nothing is left to do, timers included.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            if self.round() {
                continue;
            }
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.replica.poll_timeout())
                .min();
            let Some(next) = next else {
                return;
            };
            self.now = self.now.max(next);
            for n in &mut self.nodes {
                if n.replica.poll_timeout().is_some_and(|t| t <= self.now) {
                    n.replica.handle_timeout(self.now);
                }
            }
        }
        panic!("the network did not settle");
    }

    fn restart(&mut self, i: usize, seed: u8) {
        let id = self.nodes[i].id;
        self.nodes[i].replica = replica(id, seed);
        self.nodes[i].requests.clear();
    }

    fn records(&self, i: usize) -> Vec<(String, bool, Version)> {
        self.nodes[i]
            .replica
            .records()
            .map(|r| (r.entry.path.clone(), r.deleted, r.entry.version.clone()))
            .collect()
    }

    fn count_requests(&self, i: usize, f: impl Fn(&StorageRequest) -> bool) -> usize {
        self.nodes[i].requests.iter().filter(|r| f(r)).count()
    }
}

fn pair() -> Net {
    let mut net = Net::new(2);
    net.link(0, 1);
    net.settle();
    net
}

/// Node `to` takes `m` from a peer outside the test network (the id of node 2, never
/// linked); then the network settles.
fn inject(net: &mut Net, to: usize, m: ReplicaMessage) {
    let (from, now) = (net.nodes[2].id, net.now);
    assert_eq!(
        net.nodes[to]
            .replica
            .handle_message(now, from, m, &Bytes::new()),
        Ok(())
    );
    net.settle();
}

/// A version of `(node, value)` counters, listed in node order.
fn version_of(counters: &[(u64, u64)]) -> Version {
    Version {
        counters: counters
            .iter()
            .map(|&(node, value)| weft_protocol::Counter { node, value })
            .collect(),
    }
}

/// Whether node 0's disk holds `data` at `path`.
fn node0_holds(net: &Net, path: &str, data: &[u8]) -> bool {
    net.nodes[0].host.data(path) == Some(data)
}

/// A file of `n` synthetic blocks of 16 KiB (never fetched: only announced).
fn synthetic(path: &str, n: usize, tag: u64) -> FileEntry {
    let blocks: Vec<weft_protocol::Block> = (0..n as u64)
        .map(|i| {
            // Distinct hashes, uniform in their first eight bytes as blake3's are (the
            // locator is keyed by them).
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&tag.to_le_bytes());
            key[8..].copy_from_slice(&i.to_le_bytes());
            let hash = *blake3::hash(&key).as_bytes();
            weft_protocol::Block {
                offset: i * 16_384,
                len: 16_384,
                hash,
            }
        })
        .collect();
    FileEntry {
        path: path.into(),
        kind: FileKind::File,
        target: String::new(),
        mode: 6,
        size: n as u64 * 16_384,
        mtime_ms: 100,
        modified_by: 0,
        version: Version::default(),
        sequence: 0,
        blocks,
    }
}
