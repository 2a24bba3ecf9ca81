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
                self.items.remove(path);
                StorageResult::Done
            }
            StorageRequest::Rename { from, to, expect } => {
                if !self.items.contains_key(from) {
                    return StorageResult::NotFound;
                }
                if !holds(self.items.get(from), *expect) || self.items.contains_key(to) {
                    return StorageResult::Changed;
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

#[test]
fn a_file_created_at_one_node_arrives_byte_identical() {
    let mut net = pair();
    let data = bytes(300_000, 1);
    net.put(0, "dir/a.bin", data.clone(), 100);
    net.put(0, "empty", Vec::new(), 100);
    net.settle();
    assert_eq!(net.nodes[1].host.data("dir/a.bin"), Some(data.as_slice()));
    assert_eq!(net.nodes[1].host.data("empty"), Some(&[][..]));
    assert_eq!(net.records(0), net.records(1));
    assert!(net.nodes.iter().all(|n| n.replica.is_idle()));
    assert_eq!(net.hereis_bytes, data.len() as u64);
    assert_eq!(net.nodes[1].replica.metrics().files_committed, 2);
}

#[test]
fn an_edit_resends_only_the_changed_blocks() {
    let mut net = pair();
    let mut data = bytes(400_000, 2);
    net.put(0, "f", data.clone(), 100);
    net.settle();
    let before: BTreeSet<[u8; 32]> = chunk(&data, Tier::MIN).iter().map(|b| b.hash).collect();
    for b in &mut data[200_000..200_100] {
        *b ^= 0x55;
    }
    let changed: u64 = chunk(&data, Tier::MIN)
        .iter()
        .filter(|b| !before.contains(&b.hash))
        .map(|b| u64::from(b.len))
        .sum();
    net.hereis_bytes = 0;
    net.put(0, "f", data.clone(), 200);
    net.settle();
    assert_eq!(net.nodes[1].host.data("f"), Some(data.as_slice()));
    assert!(changed > 0 && changed < 100_000, "{changed}");
    assert_eq!(net.hereis_bytes, changed);
    assert!(net.nodes[1].replica.metrics().blocks_copied_locally > 0);
}

#[test]
fn a_delete_propagates() {
    let mut net = pair();
    net.put(0, "gone", bytes(1000, 3), 100);
    net.settle();
    assert!(net.nodes[1].host.data("gone").is_some());
    net.nodes[0].host.items.remove("gone");
    net.local(
        0,
        LocalChange::Removed {
            path: "gone".into(),
        },
    );
    net.settle();
    assert_eq!(net.nodes[1].host.data("gone"), None);
    let r = net.nodes[1]
        .replica
        .record("gone")
        .expect("a deletion record");
    assert!(r.deleted);
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_rename_is_applied_as_a_rename() {
    let mut net = pair();
    let data = bytes(100_000, 4);
    net.put(0, "old", data.clone(), 100);
    net.settle();
    net.hereis_bytes = 0;
    net.mv(0, "old", "new");
    net.settle();
    assert_eq!(net.hereis_bytes, 0);
    assert_eq!(net.nodes[1].host.data("new"), Some(data.as_slice()));
    assert_eq!(net.nodes[1].host.data("old"), None);
    assert_eq!(
        net.count_requests(1, |r| matches!(r, StorageRequest::Rename { .. })),
        1
    );
    assert_eq!(net.nodes[1].replica.metrics().renames_applied, 1);
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_rename_with_a_mode_change_lands_with_the_new_mode() {
    let mut net = pair();
    let data = bytes(50_000, 5);
    net.put(0, "old", data.clone(), 100);
    net.settle();
    let mut item = net.nodes[0].host.items.remove("old").expect("there");
    item.mode = 4;
    net.nodes[0].host.items.insert("new".into(), item);
    let LocalChange::Changed(mut to) = net.nodes[0].host.put("new", data.clone(), 100) else {
        unreachable!()
    };
    net.nodes[0].host.items.get_mut("new").expect("put").mode = 4;
    to.mode = 4;
    net.local(
        0,
        LocalChange::Moved {
            from: "old".into(),
            to,
        },
    );
    net.settle();
    assert_eq!(net.nodes[1].replica.metrics().renames_applied, 1);
    assert_eq!(net.nodes[1].host.data("new"), Some(data.as_slice()));
    assert_eq!(net.nodes[1].host.items.get("new").map(|i| i.mode), Some(4));
    assert_eq!(net.records(0), net.records(1));
}

/// Seed 365 of the sweep: a rename applied from a peer left "nothing at the old path" in
/// the replica's memory of the disk after its deletion record was in; a local move onto the
/// old path later did not clear it, and the next peer version of that path was committed
/// expecting nothing there, answered `Changed` forever.
#[test]
fn a_peer_version_lands_at_a_path_a_rename_emptied_and_a_local_move_refilled() {
    let mut net = pair();
    let data = bytes(20_000, 40);
    net.put(0, "old", data.clone(), 100);
    net.put(1, "other", bytes(3_000, 41), 100);
    net.settle();
    // Node 0 renames old -> new; node 1 applies it as a rename.
    net.mv(0, "old", "new");
    net.settle();
    assert_eq!(net.nodes[1].replica.metrics().renames_applied, 1);
    // Node 1 moves `other` onto the old path; node 0 takes it the same way.
    let moved = bytes(3_000, 41);
    net.mv(1, "other", "old");
    net.settle();
    assert_eq!(net.nodes[0].host.data("old"), Some(moved.as_slice()));
    // Node 0 edits it: node 1 must replace what it holds there.
    let edited = bytes(4_000, 42);
    net.put(0, "old", edited.clone(), 300);
    net.settle();
    assert_eq!(net.nodes[1].host.data("old"), Some(edited.as_slice()));
    assert!(net.nodes.iter().all(|n| n.replica.is_idle()));
    assert_eq!(net.records(0), net.records(1));
}

/// Seed 362 of the sweep: a conflict copy was being fetched from the one peer that sent it
/// (the corrupt one, cut off), while an honest peer announced the same content at the copy
/// path under another version (the copy made from the merged record and from the loser
/// itself). That record was deferred and its sender never asked: the fetch stalled for good.
#[test]
fn a_peer_announcing_the_content_being_fetched_under_another_version_is_a_source() {
    let mut net = Net::new(3);
    net.link(0, 2);
    net.link(1, 2);
    net.settle();
    let data = bytes(30_000, 50);
    // Node 0 announces `x` to node 2 but holds none of its blocks.
    let LocalChange::Changed(mut entry) = Host::default().put("x", data.clone(), 100) else {
        unreachable!()
    };
    let by = short_id(&net.nodes[0].id);
    entry.version = Version::default().bumped(by);
    entry.modified_by = by;
    entry.sequence = 1;
    let have = ReplicaMessage::IHave(weft_protocol::IHave {
        folder: folder(),
        index_id: 7,
        entries: vec![entry],
    });
    let (from, now) = (net.nodes[0].id, net.now);
    assert_eq!(
        net.nodes[2]
            .replica
            .handle_message(now, from, have, &Bytes::new()),
        Ok(())
    );
    net.settle();
    assert_eq!(net.nodes[2].host.data("x"), None);
    // Node 1 writes the same bytes at `x`: a concurrent version of the same content.
    net.put(1, "x", data.clone(), 200);
    net.settle();
    assert_eq!(net.nodes[2].host.data("x"), Some(data.as_slice()));
    let r = net.nodes[2].replica.record("x").expect("a record");
    let n1 = short_id(&net.nodes[1].id);
    assert!(r.entry.version.get(by) == 1 && r.entry.version.get(n1) == 1);
    assert!(net.nodes.iter().all(|n| n.replica.is_idle()));
}

/// A deletion record from a peer outside the test network (`from`, the id of node 2, never
/// linked), made by `by` with `version`.
fn inject_deletion(net: &mut Net, to: usize, path: &str, by: u64, version: Version, seq: u64) {
    let m = ReplicaMessage::IDeleted(weft_protocol::IDeleted {
        folder: folder(),
        index_id: 7,
        entries: vec![weft_protocol::Deleted {
            path: path.into(),
            kind: FileKind::File,
            modified_by: by,
            version,
            sequence: seq,
        }],
    });
    inject(net, to, m);
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

/// Seed 362 of the sweep (after the restart fix changed its course): a file P, a deletion D1
/// concurrent with it and a deletion D2 made after seeing it. One node settled P against D1
/// (P stays, merged version) and then against D2 (P stays again), another D2 against D1 (two
/// deletions merge): both ended with the same merged version, one present and one deleted,
/// and each ignored the other's record as equal. An equal version of other content is now
/// settled as a conflict, the same way at both.
#[test]
fn equal_versions_of_different_content_are_settled_like_a_conflict() {
    let mut net = Net::new(3);
    net.link(0, 1);
    let data = bytes(2_000, 70);
    net.put(0, "p", data.clone(), 100);
    net.settle();
    net.unlink(0, 1);
    let n0 = short_id(&net.nodes[0].id);
    let (b, c) = (0x0b00_0000_0000_0000_u64, 0x0c00_0000_0000_0000_u64);
    let p = Version::default().bumped(n0);
    let d1 = Version::default().bumped(b);
    let d2 = p.bumped(c);
    // Node 0: P beats D1, then P (merged) beats D2.
    inject_deletion(&mut net, 0, "p", b, d1.clone(), 1);
    inject_deletion(&mut net, 0, "p", c, d2.clone(), 2);
    // Node 1: D2 replaces P, then D1 merges into it.
    inject_deletion(&mut net, 1, "p", c, d2, 2);
    inject_deletion(&mut net, 1, "p", b, d1, 1);
    let (r0, r1) = (
        net.nodes[0].replica.record("p").expect("a record").clone(),
        net.nodes[1].replica.record("p").expect("a record").clone(),
    );
    assert_eq!(r0.entry.version, r1.entry.version);
    assert!(!r0.deleted && r1.deleted);
    net.link(0, 1);
    net.settle();
    assert_eq!(net.records(0), net.records(1));
    assert_eq!(net.nodes[1].host.data("p"), Some(data.as_slice()));
    assert!(net.nodes[..2].iter().all(|n| n.replica.is_idle()));
}

#[test]
fn an_edit_edit_conflict_keeps_both_the_same_way_everywhere() {
    let mut net = pair();
    net.put(0, "doc.txt", bytes(50_000, 5), 100);
    net.settle();
    net.unlink(0, 1);
    let (a, b) = (bytes(50_000, 6), bytes(50_000, 7));
    net.put(0, "doc.txt", a.clone(), 200);
    net.put(1, "doc.txt", b.clone(), 300);
    net.settle();
    net.link(0, 1);
    net.settle();
    // Node 1's edit is later: it wins; node 0's is kept as its conflict copy.
    let by = short_id(&net.nodes[0].id);
    let copy = format!("doc.conflict-{:08x}-2.txt", by >> 32);
    for n in &net.nodes {
        assert_eq!(n.host.data("doc.txt"), Some(b.as_slice()));
        assert_eq!(
            n.host.data(&copy),
            Some(a.as_slice()),
            "{:?}",
            n.host.items.keys()
        );
    }
    assert_eq!(net.records(0), net.records(1));
    assert!(net.nodes.iter().all(|n| n
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::Conflict { .. }))));
}

#[test]
fn a_loser_holder_makes_its_own_copy_when_only_a_corrupt_node_settled_the_conflict() {
    // Nodes 1 and 2 hold node 0's version A; node 3's concurrent B wins. Node 2 settles the
    // conflict with node 3 (A to its copy, B installed), then nodes 0 and 3 leave and node 2
    // turns corrupt, so node 4 (which had B from node 3) never gets the copy; node 1 then
    // hears of B through node 4 alone. Node 1 must move A to the copy itself: a winner
    // installed under a merged version would be newer than A there, and A's only copy left
    // would be node 2's.
    let mut net = Net::new(5);
    let (a, b) = (bytes(50_000, 21), bytes(50_000, 22));
    net.put(0, "doc.txt", a.clone(), 200);
    net.link(0, 1);
    net.link(0, 2);
    net.settle();
    net.unlink(0, 1);
    net.unlink(0, 2);
    net.put(3, "doc.txt", b.clone(), 300);
    net.link(3, 4);
    net.settle();
    net.unlink(3, 4);
    net.link(3, 2);
    net.settle();
    net.unlink(3, 2);
    let copy = format!(
        "doc.conflict-{:08x}-1.txt",
        short_id(&net.nodes[0].id) >> 32
    );
    let holds =
        |net: &Net, i: usize, path: &str, data: &[u8]| net.nodes[i].host.data(path) == Some(data);
    assert!(holds(&net, 2, &copy, &a));
    assert!(holds(&net, 2, "doc.txt", &b));
    net.corrupt = Some(2);
    net.link(4, 2);
    net.settle();
    assert!(!holds(&net, 4, &copy, &a), "node 4 has no honest source");
    net.unlink(4, 2);
    net.link(4, 1);
    net.settle();
    assert!(holds(&net, 1, "doc.txt", &b));
    assert!(holds(&net, 1, &copy, &a), "node 1 lost A");
    assert!(net.nodes[1]
        .requests
        .iter()
        .any(|r| matches!(r, StorageRequest::Rename { to, .. } if *to == copy)));
    // Node 4 then fetches the copy from node 1.
    assert!(holds(&net, 4, &copy, &a));
}

/// Seed 108,002 of the sweep: node 1 learns, in one batch, of a new path with the content of
/// a file it holds (there, a conflict copy) and of that file's deletion, and the only other
/// holder of the content serves corrupt blocks. The file is removed only once the new path
/// has copied its blocks: removed first, it was the last good copy here, and the content
/// was lost.
#[test]
fn a_file_is_removed_only_after_a_fetch_copied_its_blocks_from_it() {
    let mut net = pair();
    let a = bytes(50_000, 31);
    net.put(0, "p", a.clone(), 100);
    net.settle();
    net.put(0, "q", a.clone(), 200);
    net.nodes[0].host.items.remove("p");
    net.local(0, LocalChange::Removed { path: "p".into() });
    net.corrupt = Some(0);
    net.nodes[1].requests.clear();
    net.settle();
    assert_eq!(net.nodes[1].host.data("q"), Some(a.as_slice()));
    assert_eq!(net.nodes[1].host.data("p"), None);
    let requests = &net.nodes[1].requests;
    let removed = requests
        .iter()
        .position(|r| matches!(r, StorageRequest::Remove { path, .. } if path == "p"))
        .expect("p removed");
    let read = requests
        .iter()
        .position(|r| matches!(r, StorageRequest::ReadBlock { path, .. } if path == "p"))
        .expect("p read");
    assert!(read < removed, "{requests:?}");
    assert!(net.nodes[1].replica.metrics().blocks_copied_locally > 0);
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

/// Node 0 hears, from a peer outside the test network ([`inject`]), of `path` holding
/// `data`, changed by `by` at `mtime_ms`, under `version`.
fn inject_file(net: &mut Net, path: &str, data: &[u8], by: u64, version: Version, mtime_ms: i64) {
    let LocalChange::Changed(mut entry) = Host::default().put(path, data.to_vec(), mtime_ms) else {
        unreachable!("put reports a change")
    };
    entry.version = version;
    entry.modified_by = by;
    entry.sequence = 1;
    let have = ReplicaMessage::IHave(weft_protocol::IHave {
        folder: folder(),
        index_id: 7,
        entries: vec![entry],
    });
    inject(net, 0, have);
}

/// Short ids of the conflict-copy cases' nodes outside the test network: the loser's
/// author, a deleting node, the copy's editor, the local version's author.
const COPY_CASE_NODES: [u64; 4] = [
    0x0b00_0000_0000_0000,
    0x0d00_0000_0000_0000,
    0x0e00_0000_0000_0000,
    0x0f00_0000_0000_0000,
];

/// Node 0 holds each content in a file of its own (`srv/...`): what it fetches of them is
/// copied locally, with no peer to serve it.
fn serve_locally(net: &mut Net, files: &[(&str, &[u8])]) {
    for (path, data) in files {
        net.put(0, path, data.to_vec(), 10);
    }
    net.settle();
}

/// Whether node 0's disk holds `data` at `path`.
fn node0_holds(net: &Net, path: &str, data: &[u8]) -> bool {
    net.nodes[0].host.data(path) == Some(data)
}

/// Node 0 holds the edit `data` of a conflict copy at `copy` under `version`, and is idle.
fn assert_edit_kept(net: &Net, copy: &str, data: &[u8], version: &Version, why: &str) {
    assert!(node0_holds(net, copy, data), "{why}");
    let kept = net.nodes[0]
        .replica
        .record(copy)
        .expect("the copy's record");
    assert_eq!(&kept.entry.version, version);
    assert!(net.nodes[0].replica.is_idle());
}

/// The conflict copy path of `p` for the edit `by` made at `counter`.
fn copy_of_p(by: u64, counter: u64) -> String {
    let loser = Record {
        entry: FileEntry {
            modified_by: by,
            version: version_of(&[(by, counter)]),
            ..synthetic("p", 1, 0)
        },
        deleted: false,
    };
    conflict::conflict_copy_path("p", &loser)
}

/// Seed 126,057 of the sweep: content Z by node B lost a conflict at `p`, and its copy was
/// then edited (E). Later Z came back at `p` under a merged version (an edit-beats-delete
/// merge elsewhere) and lost again, here, to the local version. Its copy path names the same
/// edit of B's, and Z's merged version happens to be newer than the edit's (its counters
/// count another path's changes): made as a copy again, it replaced E everywhere. A copy
/// path holding a record is taken, as when the peer's version wins.
#[test]
fn a_losing_version_never_replaces_an_edit_of_its_conflict_copy() {
    let mut net = Net::new(3);
    let (z, e, l) = (bytes(3_000, 81), bytes(3_000, 82), bytes(3_000, 83));
    serve_locally(&mut net, &[("srv/z", &z), ("srv/e", &e), ("srv/l", &l)]);
    let [b, d, x, q] = COPY_CASE_NODES;
    let copy = copy_of_p(b, 9);
    let edited = version_of(&[(b, 9), (x, 4)]);
    inject_file(&mut net, &copy, &e, x, edited.clone(), 300);
    inject_file(&mut net, "p", &l, q, version_of(&[(q, 3)]), 500);
    assert!(node0_holds(&net, &copy, &e));
    inject_file(
        &mut net,
        "p",
        &z,
        b,
        version_of(&[(b, 9), (d, 7), (x, 5)]),
        100,
    );
    assert!(node0_holds(&net, "p", &l), "the local version stays");
    assert_edit_kept(
        &net,
        &copy,
        &e,
        &edited,
        "the edit of the copy was replaced",
    );
}

/// The case the test above leaves: a node that never heard of the copy path (cut off from
/// the first conflict until after the merge) makes the copy itself when Z loses there. Its
/// copy must not win over the edit of the copy made elsewhere: a copy record carries the
/// version of the loser's edit alone (its author's counter), which every edit of the copy
/// descends from, not Z's merged version (whose counters count changes of `p`).
#[test]
fn a_copy_made_by_a_node_that_never_saw_it_yields_to_an_edit_of_it() {
    let mut net = Net::new(3);
    let (z, e, l) = (bytes(3_000, 84), bytes(3_000, 85), bytes(3_000, 86));
    serve_locally(&mut net, &[("srv/z", &z), ("srv/e", &e), ("srv/l", &l)]);
    let [b, d, x, q] = COPY_CASE_NODES;
    inject_file(&mut net, "p", &l, q, version_of(&[(q, 3)]), 500);
    // Z at `p` under a merged version, losing to the local version: node 0 makes its copy.
    inject_file(
        &mut net,
        "p",
        &z,
        b,
        version_of(&[(b, 9), (d, 7), (x, 5)]),
        100,
    );
    let copy = copy_of_p(b, 9);
    assert!(node0_holds(&net, "p", &l), "the local version stays");
    assert!(node0_holds(&net, &copy, &z), "the loser went to its copy");
    // The edit of the copy, made elsewhere after seeing the first copy of Z.
    let edited = version_of(&[(b, 9), (x, 4)]);
    inject_file(&mut net, &copy, &e, x, edited.clone(), 300);
    assert_edit_kept(&net, &copy, &e, &edited, "the edit of the copy was refused");
}

/// Seed 868 of 12 nodes on a line: two edits of `p` by one author in one millisecond, the
/// earlier (L) held here under a version merged with another node's, the later (R)
/// arriving. Ordered by whole vectors, L won here, took a merged version (L') and made R's
/// copy; but L' ranked below R at the nodes holding R, which kept R and made L's copy, and
/// neither side ever took the other's. The same author's later edit wins everywhere.
#[test]
fn an_authors_later_edit_wins_over_its_earlier_one_in_the_same_millisecond() {
    let mut net = Net::new(3);
    let (early, late) = (bytes(3_000, 87), bytes(3_000, 88));
    serve_locally(&mut net, &[("srv/early", &early), ("srv/late", &late)]);
    let (y, x, f) = (
        0x0a00_0000_0000_0000_u64,
        0x0c00_0000_0000_0000_u64,
        0x0f00_0000_0000_0000_u64,
    );
    inject_file(
        &mut net,
        "p",
        &early,
        f,
        version_of(&[(x, 47), (f, 34)]),
        100,
    );
    inject_file(
        &mut net,
        "p",
        &late,
        f,
        version_of(&[(y, 27), (f, 36)]),
        100,
    );
    assert!(
        node0_holds(&net, "p", &late),
        "the earlier edit kept the path"
    );
    let kept = net.nodes[0].replica.record("p").expect("p's record");
    assert_eq!(kept.entry.version.get(f), 36, "{:?}", kept.entry.version);
    assert!(
        node0_holds(&net, &copy_of_p(f, 34), &early),
        "the earlier edit went to its copy"
    );
    assert!(net.nodes[0].replica.is_idle());
}

#[test]
fn a_losing_file_stays_at_its_path_until_the_winner_is_fetched() {
    // Node 1's later edit wins over node 0's, but node 1 serves only corrupt blocks: node 0
    // cannot fetch the winner, so its own file must stay where its record says it is (no
    // rename to the copy first, which would leave the path empty under a record naming it).
    // Once an honest node holds the winner, node 0 fetches it and keeps its own as the copy.
    let mut net = Net::new(3);
    let (a, b) = (bytes(300_000, 31), bytes(300_000, 32));
    net.put(0, "doc.txt", a.clone(), 200);
    net.put(1, "doc.txt", b.clone(), 300);
    net.settle();
    let mine = net.nodes[0].replica.record("doc.txt").cloned();
    net.corrupt = Some(1);
    net.link(0, 1);
    net.settle();
    assert!(!net.links.contains(&(0, 1)), "the corrupt node is cut off");
    let copy = format!(
        "doc.conflict-{:08x}-1.txt",
        short_id(&net.nodes[0].id) >> 32
    );
    assert!(
        node0_holds(&net, "doc.txt", &a),
        "node 0's own file left its path"
    );
    assert!(net.nodes[0].host.data(&copy).is_none());
    assert_eq!(net.nodes[0].replica.record("doc.txt"), mine.as_ref());
    assert_eq!(
        net.count_requests(0, |r| matches!(r, StorageRequest::Rename { .. })),
        0
    );
    net.nodes[0].replica.check_invariants().unwrap();
    net.corrupt = None;
    net.link(1, 2);
    net.settle();
    net.unlink(1, 2);
    net.link(0, 2);
    net.settle();
    assert!(
        node0_holds(&net, "doc.txt", &b),
        "node 0 did not take the winner"
    );
    assert!(node0_holds(&net, &copy, &a), "node 0 lost its own version");
    assert_eq!(net.records(0), net.records(2));
}

#[test]
fn a_mode_change_while_a_commit_is_outstanding_is_never_overwritten() {
    // Node 1's edit B wins over node 0's file A, which the user makes read-only (a mode
    // change alone: size and mtime stay) just before node 0 commits B over it. The commit
    // must see the change and fail, so that A, with its new mode, becomes the conflict copy;
    // were only size and mtime compared, B would overwrite A and the copy announced as A
    // would hold B: no node could ever fetch it.
    let mut net = Net::new(2);
    let (a, b) = (bytes(300_000, 51), bytes(300_000, 52));
    net.put(0, "doc.txt", a.clone(), 100);
    net.link(0, 1);
    net.settle();
    net.unlink(0, 1);
    net.put(1, "doc.txt", b.clone(), 300);
    net.chmod_before_commit = Some((0, "doc.txt".into(), 4));
    net.link(0, 1);
    net.settle();
    assert!(net.chmod_before_commit.is_none(), "node 0 made no commit");
    let copies: Vec<String> = net.nodes[0]
        .host
        .items
        .keys()
        .filter(|p| p.contains(".conflict-"))
        .cloned()
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = &copies[0];
    for i in 0..2 {
        let host = &net.nodes[i].host;
        assert!(host.data("doc.txt") == Some(&b[..]), "node {i} lacks B");
        assert!(host.data(copy) == Some(&a[..]), "node {i} lost A");
        assert_eq!(host.items[copy].mode, 4, "node {i}");
        let record = net.nodes[i].replica.record(copy).expect("a copy record");
        assert_eq!(record.entry.mode, 4, "node {i}");
    }
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_node_holding_what_the_loser_grew_from_takes_the_winner() {
    // Node 2 writes A and node 0 edits it into B, all at the same mtime; node 1 writes C
    // without seeing either. By the order (same mtime: the larger node id wins) C beats B
    // but A beats C. Nodes 0 and 1 settle B against C: C at the path, B at its copy. Node 2,
    // still holding A, must take C: A is superseded by B. Were C installed under its own
    // version, node 2 would find it concurrent with A, keep A (which beats C), and nothing
    // would settle it with the others, who saw A long ago as older than B.
    let mut net = Net::new(3);
    let (a, b, c) = (bytes(40_000, 41), bytes(40_000, 42), bytes(40_000, 43));
    net.put(2, "doc.txt", a.clone(), 100);
    net.link(0, 2);
    net.settle();
    net.unlink(0, 2);
    net.put(0, "doc.txt", b.clone(), 100);
    net.put(1, "doc.txt", c.clone(), 100);
    net.link(0, 1);
    net.settle();
    let copy = format!(
        "doc.conflict-{:08x}-1.txt",
        short_id(&net.nodes[0].id) >> 32
    );
    let holds =
        |net: &Net, i: usize, path: &str, data: &[u8]| net.nodes[i].host.data(path) == Some(data);
    assert!(holds(&net, 0, "doc.txt", &c) && holds(&net, 0, &copy, &b));
    net.link(0, 2);
    net.settle();
    for i in 0..3 {
        assert!(holds(&net, i, "doc.txt", &c), "node {i} does not hold C");
        assert!(holds(&net, i, &copy, &b), "node {i} lost B");
    }
    assert_eq!(net.records(0), net.records(2));
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_change_after_a_lost_conflict_takes_a_counter_never_used_at_the_path() {
    // Node 0's edit (its counter 2) loses to node 1's and moves to the copy; the path keeps
    // node 1's own version, whose counter for node 0 is 1. Node 0's next edit there must
    // take 3: a second "2" would name other content with a version already used.
    let mut net = pair();
    net.put(0, "doc.txt", bytes(20_000, 30), 100);
    net.settle();
    net.unlink(0, 1);
    net.put(0, "doc.txt", bytes(20_000, 31), 200);
    net.put(1, "doc.txt", bytes(20_000, 32), 300);
    net.link(0, 1);
    net.settle();
    let me = short_id(&net.nodes[0].id);
    let version_at = |net: &Net, i: usize, path: &str| {
        net.records(i)
            .into_iter()
            .find(|(p, ..)| p == path)
            .map(|(_, _, v)| v)
            .expect("a record")
    };
    let copy = format!("doc.conflict-{:08x}-2.txt", me >> 32);
    assert_eq!(version_at(&net, 0, &copy).get(me), 2);
    assert_eq!(version_at(&net, 0, "doc.txt").get(me), 1);
    let edit = bytes(20_000, 33);
    net.put(0, "doc.txt", edit.clone(), 400);
    net.settle();
    assert_eq!(version_at(&net, 0, "doc.txt").get(me), 3);
    for n in &net.nodes {
        assert!(n.host.data("doc.txt") == Some(edit.as_slice()));
        assert!(n.host.data(&copy) == Some(bytes(20_000, 31).as_slice()));
    }
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn an_edit_beats_a_concurrent_delete_everywhere() {
    let mut net = pair();
    net.put(0, "f", bytes(30_000, 8), 100);
    net.settle();
    net.unlink(0, 1);
    let edit = bytes(30_000, 9);
    net.put(0, "f", edit.clone(), 50);
    net.nodes[1].host.items.remove("f");
    net.local(1, LocalChange::Removed { path: "f".into() });
    net.settle();
    net.link(0, 1);
    net.settle();
    for n in &net.nodes {
        assert_eq!(n.host.data("f"), Some(edit.as_slice()));
        assert_eq!(n.host.items.len(), 1, "no conflict copy");
    }
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn corrupt_blocks_are_refetched_and_the_peer_is_cut_off_after_three() {
    let mut net = Net::new(3);
    let data = bytes(600_000, 10);
    net.put(0, "f", data.clone(), 100);
    net.link(0, 2);
    net.settle();
    assert_eq!(net.nodes[2].host.data("f"), Some(data.as_slice()));
    net.corrupt = Some(0);
    net.link(1, 0);
    net.link(1, 2);
    net.settle();
    assert_eq!(net.nodes[1].host.data("f"), Some(data.as_slice()));
    let corrupt = net.nodes[1]
        .events
        .iter()
        .filter(
            |e| matches!(e, ReplicaEvent::CorruptBlock { peer, .. } if *peer == net.nodes[0].id),
        )
        .count();
    assert_eq!(corrupt, 3);
    assert_eq!(net.faults, vec![(0, 1, ReplicaFault::CorruptBlocks)]);
    assert!(!net.links.contains(&(0, 1)));
}

#[test]
fn a_restart_resumes_a_half_fetched_file_asking_only_for_missing_blocks() {
    let mut net = pair();
    let data = bytes(500_000, 11);
    net.put(0, "big", data.clone(), 100);
    net.hereis_budget = Some(10);
    for _ in 0..10_000 {
        net.round();
        if net.hereis_budget == Some(0) {
            break;
        }
    }
    net.round();
    net.unlink(0, 1);
    net.settle();
    assert_eq!(net.nodes[1].host.data("big"), None);
    let blocks = chunk(&data, Tier::MIN);
    let written: BTreeSet<[u8; 32]> = net.wants.iter().flat_map(|w| w.2.iter().copied()).collect();
    assert!(written.len() < blocks.len());
    // The temp holds the first blocks; the state names them written.
    net.restart(1, 42);
    net.hereis_budget = None;
    net.wants.clear();
    net.settle();
    net.link(0, 1);
    net.settle();
    assert_eq!(net.nodes[1].host.data("big"), Some(data.as_slice()));
    let asked: usize = net
        .wants
        .iter()
        .filter(|w| w.1 == 0)
        .map(|w| w.2.len())
        .sum();
    assert!(asked > 0);
    assert_eq!(
        asked + 10,
        blocks.len(),
        "10 blocks arrived before the restart"
    );
}

/// Seed 402 of the sweep: a node crashed twice, the second time before it had persisted
/// anything since the first restart. Both restarts restored the same persisted sequence and
/// jumped to the same numbers, so the changes of the second life were announced under
/// numbers a peer had already seen from the first, and that peer skipped them for good.
#[test]
fn two_restarts_without_a_persist_between_hand_out_no_sequence_number_twice() {
    let mut net = pair();
    net.put(0, "a", bytes(1_000, 60), 100);
    net.settle();
    // First restart: a change is made and announced well within the persist delay.
    net.restart(0, 60);
    net.link(0, 1);
    for _ in 0..20 {
        net.round();
    }
    for i in 0..5 {
        net.put(0, "b", bytes(1_000, 61 + i), 200 + i as i64);
        for _ in 0..10 {
            net.round();
        }
    }
    assert!(net.nodes[1].replica.record("b").is_some());
    // A crash before the state was persisted again, and a second restart (whose scan finds
    // `b`, which the restored index lacks).
    net.restart(0, 61);
    net.link(0, 1);
    for _ in 0..20 {
        net.round();
    }
    net.put(0, "b", bytes(1_000, 65), 204);
    net.put(0, "c", bytes(1_000, 62), 300);
    net.settle();
    let c = bytes(1_000, 62);
    assert!(
        net.nodes[1].host.data("c") == Some(c.as_slice()),
        "node 1 skipped a change it took for one seen"
    );
}

#[test]
fn an_edit_after_a_crash_that_lost_announced_edits_wins_everywhere() {
    let mut net = pair();
    net.put(0, "a", bytes(1_000, 70), 100);
    net.settle();
    // Two edits announced and taken by node 1 well within the persist delay, then a crash
    // before node 0 stored them: its restored index knows only the first version of `a`.
    for i in 0..2 {
        net.put(0, "a", bytes(1_000, 71 + i), 200 + i as i64);
        // 100 ms of rounds and timers: well under the persist delay (500 ms).
        for _ in 0..10 {
            net.now = net.now + Duration::from_millis(10);
            let now = net.now;
            for n in &mut net.nodes {
                if n.replica.poll_timeout().is_some_and(|t| t <= now) {
                    n.replica.handle_timeout(now);
                }
            }
            while net.round() {}
        }
    }
    assert_eq!(
        net.nodes[1].host.data("a"),
        Some(bytes(1_000, 72).as_slice())
    );
    net.restart(0, 70);
    net.link(0, 1);
    for _ in 0..20 {
        net.round();
    }
    // The user's next edit must not take a counter the lost edits gave: the version would
    // look older than node 1's, node 1 would ignore it, and node 0 would adopt node 1's.
    let latest = bytes(1_000, 79);
    net.put(0, "a", latest.clone(), 300);
    net.settle();
    for i in 0..2 {
        assert_eq!(
            net.nodes[i].host.data("a"),
            Some(latest.as_slice()),
            "node {i}"
        );
    }
    let high = net.nodes[0]
        .replica
        .record("a")
        .map(|r| r.entry.version.clone());
    assert!(
        high.is_some_and(|v| v
            .counters
            .iter()
            .any(|c| c.value > super::replica::COUNTER_RESTART_GAP)),
        "the restart jumped the node's counter"
    );
}

#[test]
fn list_since_after_a_reconnect_sends_only_newer_records() {
    let mut net = pair();
    for k in 0..5 {
        net.put(0, &format!("f{k}"), bytes(1000, 20 + k), 100);
    }
    net.settle();
    net.unlink(0, 1);
    net.put(0, "late", bytes(1000, 30), 100);
    net.settle();
    net.index_sent.clear();
    net.link(0, 1);
    net.settle();
    let sent: usize = net
        .index_sent
        .iter()
        .filter(|s| s.0 == 0 && s.1 == 1)
        .map(|s| s.2)
        .sum();
    assert_eq!(sent, 1);
    assert!(net.nodes[1].host.data("late").is_some());
}

#[test]
fn a_store_reset_makes_the_peer_ask_for_everything() {
    let mut net = pair();
    for k in 0..3 {
        net.put(0, &format!("f{k}"), bytes(1000, 40 + k), 100);
    }
    net.settle();
    let old_id = net.nodes[1].replica.index_id();
    net.unlink(0, 1);
    net.nodes[1].host = Host::default();
    net.restart(1, 99);
    net.settle();
    assert_ne!(net.nodes[1].replica.index_id(), old_id);
    net.index_sent.clear();
    net.lists.clear();
    net.link(0, 1);
    net.settle();
    let from_1 = net.lists.iter().find(|l| l.0 == 1).expect("a LIST").2;
    assert_eq!((from_1.index_id, from_1.since), (0, 0));
    let sent: usize = net
        .index_sent
        .iter()
        .filter(|s| s.0 == 0 && s.1 == 1)
        .map(|s| s.2)
        .sum();
    assert_eq!(sent, 3);
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_bad_path_from_a_peer_is_refused_and_the_rest_applies() {
    let mut net = pair();
    net.nodes[0].host.put("../evil", bytes(10, 1), 1);
    let LocalChange::Changed(bad) = net.nodes[0].host.put("../evil", bytes(10, 1), 1) else {
        unreachable!()
    };
    net.local(0, LocalChange::Changed(bad));
    net.put(0, "good", bytes(10, 2), 1);
    net.settle();
    assert!(net.nodes[1].host.data("good").is_some());
    assert!(net.nodes[1].host.data("../evil").is_none());
    assert!(net.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::RefusedByPeer { .. })));
    assert!(net.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::Refused { .. })));
}

#[test]
fn a_block_is_served_in_pieces_of_128_kib() {
    let mut net = pair();
    let data = bytes(300_000, 12);
    let c = net.nodes[0].host.put_one_block("one", data.clone(), 100);
    net.local(0, c);
    net.settle();
    assert_eq!(net.nodes[1].host.data("one"), Some(data.as_slice()));
    let pieces: Vec<(u32, usize)> = net
        .pieces
        .iter()
        .filter(|p| p.0 == 0 && p.1 == 1)
        .map(|p| (p.2, p.3))
        .collect();
    assert_eq!(
        pieces,
        vec![
            (0, 131_072),
            (131_072, 131_072),
            (262_144, 300_000 - 262_144)
        ]
    );
}

/// Two nodes in conflict over `doc.txt` as in the edit/edit case: node 1's later edit won,
/// node 0's content (returned) is kept at the conflict copy (returned).
fn conflicted_pair() -> (Net, Vec<u8>, String) {
    let mut net = pair();
    net.put(0, "doc.txt", bytes(50_000, 5), 100);
    net.settle();
    net.unlink(0, 1);
    let (a, b) = (bytes(50_000, 6), bytes(50_000, 7));
    net.put(0, "doc.txt", a.clone(), 200);
    net.put(1, "doc.txt", b, 300);
    net.settle();
    net.link(0, 1);
    net.settle();
    let by = short_id(&net.nodes[0].id);
    let copy = format!("doc.conflict-{:08x}-2.txt", by >> 32);
    assert!(net
        .nodes
        .iter()
        .all(|n| n.host.data(&copy) == Some(a.as_slice())));
    (net, a, copy)
}

#[test]
fn resolve_keeps_the_chosen_copy_everywhere_and_removes_the_others() {
    let (mut net, a, copy) = conflicted_pair();
    let now = net.now;
    let refused = net.nodes[0].replica.handle_command(
        now,
        ReplicaCommand::Resolve {
            path: "other.txt".into(),
            keep: "other.txt".into(),
        },
    );
    assert_eq!(
        refused,
        Err(ReplicaRefusal::NotConflicted("other.txt".into()))
    );
    let not_a_version = net.nodes[0].replica.handle_command(
        now,
        ReplicaCommand::Resolve {
            path: "doc.txt".into(),
            keep: "notes.txt".into(),
        },
    );
    assert_eq!(
        not_a_version,
        Err(ReplicaRefusal::NotAVersion("notes.txt".into()))
    );
    net.nodes[1]
        .replica
        .handle_command(
            now,
            ReplicaCommand::Resolve {
                path: "doc.txt".into(),
                keep: copy.clone(),
            },
        )
        .expect("doc.txt is conflicted");
    net.settle();
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(n.host.data("doc.txt"), Some(a.as_slice()), "node {i}");
        assert_eq!(n.host.data(&copy), None, "node {i}");
        assert_eq!(
            n.host.items.keys().collect::<Vec<_>>(),
            vec!["doc.txt"],
            "node {i}"
        );
        let kept = n.replica.record("doc.txt").expect("a record");
        assert!(!kept.deleted);
        assert!(n.replica.record(&copy).is_some_and(|r| r.deleted));
    }
    assert_eq!(net.records(0), net.records(1));
    // Resolved: no longer conflicted.
    let again = net.nodes[0].replica.handle_command(
        net.now,
        ReplicaCommand::Resolve {
            path: "doc.txt".into(),
            keep: "doc.txt".into(),
        },
    );
    assert_eq!(again, Err(ReplicaRefusal::NotConflicted("doc.txt".into())));
}

#[test]
fn a_case_only_clash_overwrites_neither_name() {
    let mut net = Net::new(2);
    let (a, b) = (bytes(20_000, 13), bytes(20_000, 14));
    net.put(0, "Readme.md", a.clone(), 100);
    net.put(1, "README.md", b.clone(), 200);
    net.settle();
    net.link(0, 1);
    net.settle();
    assert_eq!(net.nodes[0].host.data("Readme.md"), Some(a.as_slice()));
    assert_eq!(net.nodes[0].host.data("README.md"), None);
    assert_eq!(net.nodes[1].host.data("README.md"), Some(b.as_slice()));
    assert_eq!(net.nodes[1].host.data("Readme.md"), None);
    assert!(net.nodes[0].replica.record("README.md").is_none());
    assert!(net.nodes[1].replica.record("Readme.md").is_none());
    let clash = |i: usize, held: &str, incoming: &str| {
        net.nodes[i].events.contains(&ReplicaEvent::CaseClash {
            held: held.into(),
            incoming: incoming.into(),
        })
    };
    assert!(clash(0, "Readme.md", "README.md"));
    assert!(clash(1, "README.md", "Readme.md"));
    assert!(net.nodes[0].events.iter().any(|e| matches!(
        e,
        ReplicaEvent::RefusedByPeer { path, reason: PathRefusal::CaseClash, .. } if path == "Readme.md"
    )));
    assert_eq!(net.hereis_bytes, 0);
}

#[test]
fn directories_and_symlinks_are_made_and_an_escaping_symlink_is_refused() {
    let mut net = pair();
    for (path, kind, target, mode) in [
        ("d", FileKind::Directory, "", 5),
        ("d/link", FileKind::Symlink, "../f", 7),
        ("out", FileKind::Symlink, "../outside", 7),
    ] {
        let c = net.nodes[0].host.put_item(path, kind, target, mode);
        net.local(0, c);
    }
    net.settle();
    let host = &net.nodes[1].host;
    let d = host.items.get("d").expect("the directory");
    assert_eq!((d.kind, d.mode), (FileKind::Directory, 5));
    let l = host.items.get("d/link").expect("the symlink");
    assert_eq!((l.kind, l.target.as_str()), (FileKind::Symlink, "../f"));
    assert!(!host.items.contains_key("out"));
    assert!(net.nodes[1].replica.record("out").is_none());
    assert_eq!(
        net.count_requests(
            1,
            |r| matches!(r, StorageRequest::MakeDir { path, mode: 5 } if path == "d")
        ),
        1
    );
    assert_eq!(
        net.count_requests(1, |r| matches!(r, StorageRequest::MakeSymlink { path, target } if path == "d/link" && target == "../f")),
        1
    );
    assert_eq!(
        net.count_requests(
            1,
            |r| matches!(r, StorageRequest::MakeSymlink { path, .. } if path == "out")
        ),
        0
    );
    let id0 = net.nodes[0].id;
    assert!(net.nodes[1].events.contains(&ReplicaEvent::Refused {
        peer: id0,
        path: "out".into(),
        reason: PathRefusal::SymlinkEscapes,
    }));
    let id1 = net.nodes[1].id;
    assert!(net.nodes[0].events.contains(&ReplicaEvent::RefusedByPeer {
        peer: id1,
        path: "out".into(),
        reason: PathRefusal::SymlinkEscapes,
    }));
    assert_eq!(net.nodes[1].replica.metrics().paths_refused, 1);
}

#[test]
fn a_full_disk_is_reported_and_the_file_lands_after_the_retry() {
    let mut net = pair();
    net.nodes[1].host.disk_full_writes = 1;
    let data = bytes(200_000, 15);
    net.put(0, "f", data.clone(), 100);
    net.settle();
    assert_eq!(net.nodes[1].host.disk_full_writes, 0, "a write failed");
    assert_eq!(
        net.nodes[1]
            .events
            .iter()
            .filter(|e| matches!(
                e,
                ReplicaEvent::StorageFailed { path: Some(p), error: StorageError::DiskFull } if p == "f"
            ))
            .count(),
        1
    );
    assert_eq!(net.nodes[1].replica.metrics().storage_failures, 1);
    assert_eq!(net.nodes[1].host.data("f"), Some(data.as_slice()));
    assert!(net.nodes[1].host.temps.is_empty());
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn failed_commits_are_retried_with_backoff_until_the_file_lands() {
    let mut net = Net::new(3);
    net.link(0, 1);
    net.link(0, 2);
    net.settle();
    // Three commits at node 1 fail, and one at node 2: each retries after its backoff
    // (100, 200, 400 ms), while other files' blocks are in flight.
    net.nodes[1].host.failing_commits = 3;
    net.nodes[2].host.failing_commits = 1;
    let files: Vec<(String, Vec<u8>)> = (0..4u64)
        .map(|k| (format!("f{k}"), bytes(50_000 + 30_000 * k as usize, 70 + k)))
        .collect();
    for (path, data) in &files {
        net.put(0, path, data.clone(), 100);
    }
    net.settle();
    for n in [1, 2] {
        assert_eq!(
            net.nodes[n].host.failing_commits, 0,
            "node {n}'s commits failed"
        );
        for (path, data) in &files {
            assert_eq!(
                net.nodes[n].host.data(path),
                Some(data.as_slice()),
                "{path}"
            );
        }
        assert!(net.nodes[n].host.temps.is_empty());
    }
    assert_eq!(net.nodes[1].replica.metrics().storage_failures, 3);
    assert!(net.nodes[1].replica.retries.is_empty());
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

#[test]
fn index_batches_are_cut_by_bytes_and_by_entries_and_filled_to_the_cut() {
    use super::announce::{entry_bytes_max, BATCH_BYTES_MAX};
    use weft_protocol::{FILE_BLOCKS_MAX, INDEX_ENTRIES_MAX, PAYLOAD_BYTES_MAX};

    let (me, peer) = (NodeId([0x10; 32]), NodeId([0x20; 32]));
    let now = Instant(1_000);
    let mut r = replica(me, 1);
    let answer = |r: &mut Replica| {
        let mut sent = Vec::new();
        while let Some(o) = r.poll_output() {
            match o {
                ReplicaOutput::Request { token, request } => {
                    let result = match request {
                        StorageRequest::LoadState => StorageResult::Loaded(None),
                        _ => StorageResult::Done,
                    };
                    r.handle_completed(now, token, result);
                }
                ReplicaOutput::Send { code, payload, .. } => sent.push((code, payload)),
                ReplicaOutput::Event(_) => {}
            }
        }
        sent
    };
    answer(&mut r);
    assert!(r.is_ready());
    // Large files (one over the cut alone, one of the most blocks a file may have), then
    // small ones (cut by entries).
    let large = [
        5_000,
        9_000,
        12_000,
        30_000,
        3_000,
        FILE_BLOCKS_MAX,
        7_000,
        4_000,
        4_000,
    ];
    let mut paths = Vec::new();
    for (k, n) in large.into_iter().enumerate() {
        let path = format!("large{k}");
        r.handle_local(now, LocalChange::Changed(synthetic(&path, n, k as u64)));
        paths.push(path);
    }
    for k in 0..600u64 {
        let path = format!("small{k:03}");
        r.handle_local(now, LocalChange::Changed(synthetic(&path, 1, 1_000 + k)));
        paths.push(path);
    }
    r.handle_link_up(now, peer);
    let list = weft_protocol::List {
        folder: folder(),
        index_id: 0,
        since: 0,
    };
    r.handle_message(now, peer, ReplicaMessage::List(list), &Bytes::new())
        .expect("a LIST is welcome");
    let batches: Vec<(usize, Vec<FileEntry>)> = answer(&mut r)
        .into_iter()
        .filter(|(code, _)| *code == Code::IHAVE)
        .map(|(code, payload)| {
            let Ok(Message::Replica(ReplicaMessage::IHave(m))) = Message::decode(code, &payload)
            else {
                panic!("an IHAVE that does not decode");
            };
            (payload.len(), m.entries)
        })
        .collect();
    let announced: Vec<&str> = batches
        .iter()
        .flat_map(|b| b.1.iter().map(|e| e.path.as_str()))
        .collect();
    assert_eq!(announced, paths);
    let bound = |e: &FileEntry| {
        entry_bytes_max(
            &Record {
                entry: e.clone(),
                deleted: false,
            },
            None,
        )
    };
    for (k, (payload_bytes, entries)) in batches.iter().enumerate() {
        let total: usize = entries.iter().map(bound).sum();
        assert!(*payload_bytes <= PAYLOAD_BYTES_MAX, "batch {k}");
        assert!(
            *payload_bytes <= total,
            "batch {k}: the bound is an upper bound"
        );
        assert!(entries.len() <= INDEX_ENTRIES_MAX, "batch {k}");
        assert!(entries.len() == 1 || total <= BATCH_BYTES_MAX, "batch {k}");
        if let Some((_, next)) = batches.get(k + 1) {
            let full =
                entries.len() == INDEX_ENTRIES_MAX || total + bound(&next[0]) > BATCH_BYTES_MAX;
            assert!(full, "batch {k} could have taken the next entry");
        }
    }
    // Cut by bytes (the large files) and by entries (the small ones).
    assert!(batches.iter().any(|b| b.1.len() == INDEX_ENTRIES_MAX));
    assert!(batches
        .iter()
        .any(|b| b.1.len() > 1 && b.1.iter().map(bound).sum::<usize>() > BATCH_BYTES_MAX / 2));
    let alone: Vec<usize> = batches
        .iter()
        .filter(|b| b.1.len() == 1)
        .map(|b| b.1[0].blocks.len())
        .collect();
    assert!(
        alone.contains(&FILE_BLOCKS_MAX) && alone.contains(&30_000),
        "{alone:?}"
    );
}

#[test]
fn a_message_about_another_folder_is_ignored_not_a_fault() {
    let mut net = pair();
    let data = bytes(40_000, 16);
    let c = net.nodes[0].host.put("f", data, 100);
    let LocalChange::Changed(mut entry) = c else {
        unreachable!()
    };
    entry.version = Version::default().bumped(short_id(&net.nodes[0].id));
    entry.modified_by = short_id(&net.nodes[0].id);
    entry.sequence = 1;
    let other = FolderId::from_name("other");
    let from = net.nodes[0].id;
    let now = net.now;
    let have = ReplicaMessage::IHave(weft_protocol::IHave {
        folder: other,
        index_id: 7,
        entries: vec![entry],
    });
    let here_is = ReplicaMessage::HereIs(weft_protocol::HereIs {
        folder: other,
        hash: [9; 32],
        offset: 0,
        data: b"not asked",
    });
    let replica = &mut net.nodes[1].replica;
    assert_eq!(
        replica.handle_message(now, from, have, &Bytes::new()),
        Ok(())
    );
    assert_eq!(
        replica.handle_message(now, from, here_is, &Bytes::new()),
        Ok(())
    );
    assert_eq!(replica.poll_output(), None);
    assert!(replica.record("f").is_none());
    assert!(replica.is_idle());
    // The same HEREIS about this folder is a fault: the block was never asked for.
    let here_is = ReplicaMessage::HereIs(weft_protocol::HereIs {
        folder: folder(),
        hash: [9; 32],
        offset: 0,
        data: b"not asked",
    });
    assert!(replica
        .handle_message(now, from, here_is, &Bytes::new())
        .is_err());
}

/// What each node asked of its host, and every IWANT delivered (from, to, hashes).
type SchedulerTrace = (Vec<Vec<StorageRequest>>, Vec<(usize, usize, Vec<[u8; 32]>)>);

/// One scenario of the scheduler property: three nodes, files of many blocks (some sharing
/// content, so local copies happen) put at random nodes while blocks are in flight, a link
/// cut and restored, and optionally a node serving corrupt blocks. Returns everything the
/// nodes asked of their hosts and sent, in order.
fn scheduler_trace(seed: u64, plain: bool) -> SchedulerTrace {
    let mut x = seed | 1;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut net = Net::new(3);
    for n in &mut net.nodes {
        n.replica.fetch_plain = plain;
    }
    net.link(0, 1);
    net.link(1, 2);
    if next(2) == 0 {
        net.link(0, 2);
    }
    net.settle();
    if next(3) == 0 {
        net.corrupt = Some(next(3) as usize);
    }
    let shared = bytes(200_000, seed);
    for step in 0..6 {
        let node = next(3) as usize;
        let path = format!("f{}", next(4));
        let data = match next(3) {
            0 => shared.clone(),
            1 => {
                let mut d = shared.clone();
                d.extend(bytes(next(100_000) as usize, seed ^ step));
                d
            }
            _ => bytes(1 + next(400_000) as usize, seed.wrapping_add(step)),
        };
        net.put(node, &path, data, 100 + step as i64);
        for _ in 0..next(40) {
            net.round();
        }
        if step == 3 {
            net.unlink(0, 1);
            for _ in 0..next(10) {
                net.round();
            }
            net.link(0, 1);
        }
    }
    net.settle();
    let requests = net.nodes.iter().map(|n| n.requests.clone()).collect();
    (requests, net.wants)
}

quickcheck::quickcheck! {
    /// The queue kept between full scheduling passes asks for exactly the blocks, of the
    /// same peers, in the same order, as a full pass after every freed room would.
    fn the_fetch_queue_schedules_as_a_full_pass_would(seed: u64) -> bool {
        let fast = scheduler_trace(seed, false);
        let plain = scheduler_trace(seed, true);
        fast == plain
    }
}

/// Full scheduling passes node 0 makes while node 1 announces 100 small files one at a time
/// (one round, 1 ms, each) during a long fetch, with `full_round_interval` at `interval_ms`;
/// every file arrives.
fn full_rounds_during_a_burst(interval_ms: u64) -> u64 {
    let mut net = Net::new(2);
    net.nodes[0].replica.config.full_round_interval = Duration::from_millis(interval_ms);
    net.link(0, 1);
    net.settle();
    net.put(1, "big", bytes(12_000_000, 60), 100);
    for _ in 0..50 {
        if !net.nodes[0].replica.inflight.is_empty() {
            break;
        }
        net.round();
    }
    assert!(
        !net.nodes[0].replica.inflight.is_empty(),
        "the big file's blocks are asked"
    );
    let before = net.nodes[0].replica.metrics().full_rounds;
    for k in 0..100u64 {
        net.put(1, &format!("s{k}"), bytes(3_000, 100 + k), 100);
        net.round();
        assert!(
            net.nodes[0].replica.applies.contains_key("big"),
            "the big file is still being fetched at {k}"
        );
    }
    let rounds = net.nodes[0].replica.metrics().full_rounds - before;
    net.settle();
    assert_eq!(net.records(0), net.records(1));
    for k in 0..100u64 {
        let path = format!("s{k}");
        assert_eq!(net.nodes[0].host.data(&path), net.nodes[1].host.data(&path));
    }
    assert_eq!(net.nodes[0].host.data("big"), net.nodes[1].host.data("big"));
    rounds
}

#[test]
fn a_burst_of_records_during_a_fetch_makes_one_full_pass_per_interval() {
    // 100 ms of records: at most one full pass per 20 ms (and the first at once).
    let held = full_rounds_during_a_burst(20);
    assert!(held <= 100 / 20 + 1, "{held} full passes");
    // Without the interval, every round's records make their own (in this harness a
    // round's outputs are drained twice: 50 passes for the 100 rounds).
    let each = full_rounds_during_a_burst(0);
    assert!(each >= 50, "{each} full passes");
}

#[test]
fn a_touch_during_a_fetch_does_not_stall_the_commit() {
    let mut net = pair();
    let old = bytes(300_000, 30);
    net.put(1, "f", old.clone(), 100);
    net.settle();
    let new = bytes(300_000, 31);
    net.put(1, "f", new.clone(), 200);
    for _ in 0..3 {
        net.round();
    }
    assert!(
        net.nodes[0].replica.applies.contains_key("f"),
        "the fetch of the new version is under way"
    );
    // Only the mtime changes under the fetch: the same content as the record.
    net.put(0, "f", old, 150);
    net.settle();
    assert_eq!(net.nodes[0].host.data("f"), Some(new.as_slice()));
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_directory_made_at_two_nodes_with_two_modes_gets_one_mode_and_no_copy() {
    let mut net = Net::new(2);
    for (node, mode) in [(0, 5), (1, 7)] {
        let c = net.nodes[node]
            .host
            .put_item("d", FileKind::Directory, "", mode);
        net.local(node, c);
    }
    let data = bytes(5_000, 40);
    net.put(0, "d/f", data.clone(), 100);
    net.settle();
    net.link(0, 1);
    net.settle();
    assert_eq!(net.records(0), net.records(1));
    let paths: Vec<String> = net.records(0).into_iter().map(|r| r.0).collect();
    assert_eq!(
        paths,
        vec!["d".to_string(), "d/f".to_string()],
        "no conflict copy"
    );
    let modes: Vec<u8> = (0..2)
        .map(|i| {
            net.nodes[i]
                .host
                .items
                .get("d")
                .expect("the directory")
                .mode
        })
        .collect();
    assert_eq!(modes[0], modes[1], "one mode everywhere");
    assert_eq!(net.nodes[1].host.data("d/f"), Some(data.as_slice()));
}

#[test]
fn a_fetch_whose_only_source_lost_that_version_is_dropped_and_settled() {
    let mut net = pair();
    net.put(1, "f", bytes(50_000, 50), 100);
    net.settle();
    net.put(1, "f", bytes(50_000, 51), 200);
    net.hereis_budget = Some(0);
    for _ in 0..200 {
        net.round();
    }
    assert!(
        net.nodes[0].replica.applies.contains_key("f"),
        "node 0 fetches the second version, whose blocks never come"
    );
    // Node 1 loses its state (a crash before it was stored) and finds other content.
    net.unlink(0, 1);
    net.nodes[1].host.state = None;
    net.restart(1, 77);
    net.settle();
    net.put(1, "f", bytes(50_000, 52), 300);
    net.hereis_budget = None;
    net.link(0, 1);
    net.settle();
    assert!(
        !net.nodes[0].replica.applies.contains_key("f"),
        "the stalled fetch is gone"
    );
    assert_eq!(net.records(0), net.records(1));
    assert_eq!(net.nodes[0].host.data("f"), net.nodes[1].host.data("f"));
}

#[test]
fn a_copy_is_caught_up_once_it_holds_the_peers_records_up_to_the_sync_point() {
    let mut net = pair();
    let a = net.nodes[0].id;
    assert_eq!(net.nodes[0].replica.newest_sequence(), 0);
    // Sequence 0 waits for nothing.
    assert!(net.nodes[1].replica.caught_up(&a, 0, 0));
    let data = bytes(300_000, 3);
    net.put(0, "f", data.clone(), 100);
    net.put(0, "g", bytes(1000, 4), 100);
    let index_id = net.nodes[0].replica.index_id();
    let point = net.nodes[0].replica.newest_sequence();
    assert_eq!(point, 2);
    assert!(!net.nodes[1].replica.caught_up(&a, index_id, point));
    // Never caught up while the file is not in place, even once its record has arrived.
    let mut rounds = 0;
    while net.nodes[1].host.data("f") != Some(data.as_slice()) {
        assert!(rounds < 10_000, "the file arrives");
        assert!(!net.nodes[1].replica.caught_up(&a, index_id, point));
        // A round is 1 ms, so held-back scheduling passes come due.
        net.round();
        rounds += 1;
    }
    net.settle();
    assert!(rounds > 1);
    assert!(net.nodes[1].replica.caught_up(&a, index_id, point));
    // Another index id (the peer's state was reset), or a later point: not caught up.
    assert!(!net.nodes[1].replica.caught_up(&a, index_id ^ 1, point));
    assert!(!net.nodes[1].replica.caught_up(&a, index_id, point + 1));
    // A restart jumps the numbering of the next change, not the newest record's sequence,
    // so a sync point taken after it can still be reached.
    net.restart(0, 9);
    net.settle();
    assert_eq!(net.nodes[0].replica.newest_sequence(), point);
    assert!(net.nodes[1].replica.caught_up(&a, index_id, point));
}

/// A gate listing `paths` as node `i` holds them (a signed version's file list).
fn gate_of(net: &Net, i: usize, paths: &[&str], read_only: bool) -> Gate {
    let files = paths
        .iter()
        .map(|p| {
            let r = net.nodes[i].replica.record(p).expect("a listed path");
            (p.to_string(), r.entry.clone())
        })
        .collect();
    Gate {
        trusted: BTreeSet::new(),
        files,
        read_only,
    }
}

#[test]
fn a_gated_copy_takes_only_what_its_version_lists_until_the_gate_moves_on() {
    let mut net = Net::new(3);
    let a1 = bytes(40_000, 1);
    net.put(0, "a", a1.clone(), 100);
    net.put(0, "b", bytes(1000, 2), 100);
    net.settle();
    let gate = gate_of(&net, 0, &["a"], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    // A stranger's file the version does not list.
    net.put(2, "evil", bytes(500, 9), 100);
    net.link(0, 1);
    net.link(1, 2);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a1.as_slice()));
    assert_eq!(net.nodes[1].host.data("b"), None);
    assert_eq!(net.nodes[1].host.data("evil"), None);
    // The owner edits `a`: not taken until a version lists the edit.
    let a2 = bytes(40_000, 3);
    net.put(0, "a", a2.clone(), 200);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a1.as_slice()));
    assert!(net.nodes[1].replica.metrics().records_gated >= 3);
    // The next version lists the edit and `b`: the records left out before are asked again.
    let gate = gate_of(&net, 0, &["a", "b"], true);
    let now = net.now;
    net.nodes[1].replica.set_gate(now, gate);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a2.as_slice()));
    assert_eq!(net.nodes[1].host.data("b"), Some(bytes(1000, 2).as_slice()));
    assert_eq!(net.nodes[1].host.data("evil"), None);
    // A version without `b`: the owner's deletion passes.
    let gate = gate_of(&net, 0, &["a"], true);
    net.nodes[1].replica.set_gate(now, gate);
    net.nodes[0].host.items.remove("b");
    net.local(0, LocalChange::Removed { path: "b".into() });
    net.settle();
    assert_eq!(net.nodes[1].host.data("b"), None);
    net.nodes[1].replica.check_invariants().expect("invariants");
}

#[test]
fn a_read_only_copy_reports_a_local_edit_and_never_announces_it() {
    let mut net = Net::new(2);
    let a1 = bytes(20_000, 1);
    net.put(0, "a", a1.clone(), 100);
    net.put(0, "keep", bytes(100, 2), 100);
    net.settle();
    let gate = gate_of(&net, 0, &["a", "keep"], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    net.link(0, 1);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a1.as_slice()));
    // Node 0 takes anything (no gate): whatever node 1 announced would land there.
    net.put(1, "a", bytes(20_000, 7), 300);
    net.put(1, "new", bytes(100, 8), 300);
    net.nodes[1].host.items.remove("keep");
    net.local(
        1,
        LocalChange::Removed {
            path: "keep".into(),
        },
    );
    net.settle();
    for path in ["a", "new", "keep"] {
        let path = path.to_string();
        assert!(
            net.nodes[1]
                .events
                .contains(&ReplicaEvent::LocalEditRefused { path: path.clone() }),
            "{path} reported"
        );
    }
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 3);
    assert_eq!(net.nodes[0].host.data("a"), Some(a1.as_slice()));
    assert_eq!(net.nodes[0].host.data("new"), None);
    assert_eq!(
        net.nodes[0].host.data("keep"),
        Some(bytes(100, 2).as_slice())
    );
    // The refused file is not indexed.
    assert!(net.nodes[1].replica.record("new").is_none());
    net.nodes[1].replica.check_invariants().expect("invariants");
}

#[test]
fn a_read_only_copy_holds_what_its_version_lists_whatever_the_version_vectors_say() {
    let mut net = Net::new(3);
    let a1 = bytes(30_000, 1);
    net.put(0, "a", a1.clone(), 100);
    net.link(0, 1);
    net.settle();
    // Node 1 edits `a` after node 0's version of it (its vector covers node 0's) and adds
    // `extra`, out of node 0's sight.
    net.unlink(0, 1);
    let a2 = bytes(30_000, 2);
    net.put(1, "a", a2.clone(), 200);
    net.put(1, "extra", bytes(700, 3), 200);
    net.settle();
    // The subscriber takes node 1's version first.
    let gate = gate_of(&net, 1, &["a", "extra"], true);
    net.nodes[2].replica.set_gate(net.now, gate);
    net.link(1, 2);
    net.settle();
    assert_eq!(net.nodes[2].host.data("a"), Some(a2.as_slice()));
    assert_eq!(
        net.nodes[2].host.data("extra"),
        Some(bytes(700, 3).as_slice())
    );
    // Then a version listing node 0's `a`, older by the vectors, and no `extra`: nobody
    // deletes `extra`, and node 1 still announces its own `a`.
    let gate = gate_of(&net, 0, &["a"], true);
    let now = net.now;
    net.nodes[2].replica.set_gate(now, gate);
    net.link(0, 2);
    net.settle();
    assert_eq!(net.nodes[2].host.data("a"), Some(a1.as_slice()));
    assert_eq!(net.nodes[2].host.data("extra"), None);
    assert_eq!(net.nodes[2].replica.metrics().conflicts, 0);
    let copies = net.nodes[2]
        .host
        .items
        .keys()
        .filter(|p| p.contains("conflict"))
        .count();
    assert_eq!(copies, 0, "no conflict copy at a read-only copy");
    net.nodes[2].replica.check_invariants().expect("invariants");
}

#[test]
fn a_refused_edit_does_not_stall_the_fetch_of_the_listed_content() {
    let mut net = Net::new(2);
    let a1 = bytes(30_000, 1);
    net.put(0, "a", a1.clone(), 100);
    net.settle();
    let gate = gate_of(&net, 0, &["a"], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    // Before the fetch lands, something else appears at `a` on the subscriber's disk (a
    // file committed before a crash whose record was not persisted, say).
    net.put(1, "a", bytes(9_000, 5), 150);
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 1);
    net.link(0, 1);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a1.as_slice()));
    net.nodes[1].replica.check_invariants().expect("invariants");
}

/// A refused edit at a path the copy never held, then a peer's deletion record there (installed
/// in place: nothing present to remove), then a version listing new content at the path: the
/// fetch expects the refused file the host reported, and lands. Installing the deletion
/// forgot that report, so the fetch expected nothing there and the host answered `Changed`
/// at every retry (a 3,000-seed drops sweep, seed 2622, never converged).
#[test]
fn a_refused_edit_under_a_deletion_record_does_not_stall_a_later_fetch() {
    let mut net = Net::new(2);
    net.put(0, "a", bytes(30_000, 1), 100);
    net.settle();
    net.nodes[0].host.items.remove("a");
    net.local(0, LocalChange::Removed { path: "a".into() });
    net.settle();
    let gate = gate_of(&net, 0, &[], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    net.put(1, "a", bytes(9_000, 5), 150);
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 1);
    net.link(0, 1);
    net.settle();
    assert!(net.nodes[1].replica.record("a").is_some_and(|r| r.deleted));
    let a2 = bytes(30_000, 2);
    net.put(0, "a", a2.clone(), 200);
    net.settle();
    let gate = gate_of(&net, 0, &["a"], true);
    let now = net.now;
    net.nodes[1].replica.set_gate(now, gate);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a2.as_slice()));
    assert!(net.nodes[1].replica.is_idle());
    net.nodes[1].replica.check_invariants().expect("invariants");
}

#[test]
fn a_rescan_of_what_a_read_only_copy_already_indexes_is_no_refused_edit() {
    let mut net = Net::new(2);
    net.put(0, "a", bytes(20_000, 1), 100);
    net.settle();
    let gate = gate_of(&net, 0, &["a"], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    net.link(0, 1);
    net.settle();
    // The owner's next version lists another `a`, which node 1 has not fetched yet (the link
    // is down) when its scanner reports its own `a` again, unchanged but for the mtime.
    net.unlink(0, 1);
    net.put(0, "a", bytes(20_000, 2), 200);
    net.settle();
    let gate = gate_of(&net, 0, &["a"], true);
    let now = net.now;
    net.nodes[1].replica.set_gate(now, gate);
    net.put(1, "a", bytes(20_000, 1), 300);
    net.settle();
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 0);
    assert!(!net.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::LocalEditRefused { .. })));
    // A real edit is still refused.
    net.put(1, "a", bytes(20_000, 3), 400);
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 1);
    // And the listed `a` lands once the owner is back.
    net.link(0, 1);
    net.settle();
    assert_eq!(
        net.nodes[1].host.data("a"),
        Some(bytes(20_000, 2).as_slice())
    );
    net.nodes[1].replica.check_invariants().expect("invariants");
}

#[test]
fn revert_puts_back_what_a_read_only_copys_version_lists() {
    let mut net = Net::new(2);
    let a1 = bytes(20_000, 1);
    net.put(0, "a", a1.clone(), 100);
    net.put(0, "keep", bytes(100, 2), 100);
    net.settle();
    let gate = gate_of(&net, 0, &["a", "keep"], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    net.link(0, 1);
    net.settle();
    // Three refused edits: a changed file, a new one, a removed one.
    net.put(1, "a", bytes(20_000, 7), 300);
    net.put(1, "new", bytes(100, 8), 300);
    net.nodes[1].host.items.remove("keep");
    net.local(
        1,
        LocalChange::Removed {
            path: "keep".into(),
        },
    );
    net.settle();
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 3);
    let now = net.now;
    net.nodes[1]
        .replica
        .handle_command(now, ReplicaCommand::Revert)
        .expect("a read-only copy reverts");
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a1.as_slice()));
    assert_eq!(
        net.nodes[1].host.data("keep"),
        Some(bytes(100, 2).as_slice())
    );
    assert_eq!(net.nodes[1].host.data("new"), None);
    assert!(net.nodes[1].replica.record("new").is_none());
    // Nothing left to revert.
    assert_eq!(net.nodes[1].replica.revert(now), 0);
    net.nodes[1].replica.check_invariants().expect("invariants");
}
