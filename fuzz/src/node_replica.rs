//! The node driver's folder replication (family 0x04, SPEC.md §22): the application's
//! commands (`ReplicateCommand::AddFolder`, the scanner's `Local` changes, `Resolve`), peers'
//! LIST / IHAVE / IMOVED / IDELETED / IWANT / HEREIS / NOTFOUND / IREFUSE frames built from
//! arbitrary fields, and a tiny in-memory disk ([`Disk`]) that carries out the node's
//! storage steps, now and then with a fault (a failed step, a changed path, a corrupt
//! commit, wrong block bytes) or late (held, then answered in any order).
//!
//! File contents come from a small catalogue of fixed byte strings cut into blocks with the
//! engine's own chunker, so that peers can serve the blocks the node asks for (by hash) and
//! the node's commits verify; paths come mostly from a short list that collides, nests and
//! breaks the path rules on purpose. Peers may echo what the node sent (the hashes it wants,
//! its index id, its entries with their versions bumped) and the conflict copies it made.
//!
//! What the disk asserts of every step: its paths keep the path rules (`check_path`, a
//! symlink's target `check_symlink_target`), and a commit's blocks tile its size.

use std::collections::{BTreeMap, VecDeque};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use bytes::Bytes;
use weft_engine::protocol::{
    Block, BlockHash, Counter, Deleted, FileEntry, FileKind, FolderId, HereIs, IDeleted, IHave,
    IMoved, IRefuse, IWant, List, Message, Moved, NotFound, PathRefusal, ReplicaMessage, Version,
};
use weft_engine::replicate::blocks::{chunk, Tier};
use weft_engine::replicate::paths::{check_path, check_symlink_target, IgnoreRules};
use weft_engine::replicate::{
    short_id, Expect, LocalChange, ReplicaCommand, ReplicaConfig, ReplicaEvent, StorageError,
    StorageRequest, StorageResult, TempId,
};
use weft_engine::{
    Command, Duration, HostResult, Input, NodeId, ReplicateCommand, ReplicateEvent, RequestId,
};

use super::{keys, ConnSel, Driver, PEERS};

/// The folders an input may add (a third name is one the node never holds).
const FOLDERS: [&str; 3] = ["photos", "docs", "other"];

/// Paths that collide, nest, differ only in case, and break each path rule.
const PATHS: [&str; 14] = [
    "a.txt",
    "b.bin",
    "dir",
    "dir/c.txt",
    "dir/sub",
    "dir/sub/d",
    "A.txt",
    "link",
    "dir/link",
    "../x",
    ".weft/x",
    "/abs",
    "e\u{301}.txt",
    "a\\b",
];

/// Symlink targets: inside, escaping, absolute, empty.
const TARGETS: [&str; 6] = [
    "a.txt",
    "dir/c.txt",
    "../a.txt",
    "../../x",
    "/etc/passwd",
    "",
];

/// Sizes of the catalogue's contents: empty, one block, several blocks at tier 0.
const CONTENT_SIZES: [usize; 8] = [0, 1, 100, 3000, 5000, 20_000, 40_000, 70_000];

/// Largest file or temporary file the disk keeps; a step past it fails (a host may fail any
/// step), so that a peer's claimed sizes cannot make the fuzzer allocate much.
const DISK_FILE_BYTES_MAX: u64 = 1 << 20;

/// The latest this many of each thing heard are kept for peers to echo.
const HEARD_MAX: usize = 32;

/// One content of the catalogue: its bytes and their blocks.
struct Content {
    bytes: Vec<u8>,
    blocks: Vec<Block>,
}

fn contents() -> &'static [Content] {
    static CONTENTS: OnceLock<Vec<Content>> = OnceLock::new();
    CONTENTS.get_or_init(|| {
        CONTENT_SIZES
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                // xorshift64*: bytes FastCDC cuts at content-defined places.
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
                let bytes: Vec<u8> = (0..size)
                    .map(|_| {
                        x ^= x >> 12;
                        x ^= x << 25;
                        x ^= x >> 27;
                        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
                    })
                    .collect();
                let blocks = chunk(&bytes, Tier::fresh(size as u64))
                    .into_iter()
                    .map(|b| Block {
                        offset: b.offset,
                        len: b.len,
                        hash: b.hash,
                    })
                    .collect();
                Content { bytes, blocks }
            })
            .collect()
    })
}

/// The bytes of a catalogue block with this hash, if there is one.
fn block_bytes(hash: &BlockHash) -> Option<&'static [u8]> {
    contents().iter().find_map(|c| {
        c.blocks.iter().find(|b| b.hash == *hash).map(|b| {
            let start = b.offset as usize;
            &c.bytes[start..start + b.len as usize]
        })
    })
}

fn folder(n: u8) -> FolderId {
    FolderId::from_name(FOLDERS[usize::from(n) % FOLDERS.len()])
}

/// A short id of a version counter: a keyed peer's, the node's, or a small number.
fn counter_node(n: u8) -> u64 {
    let keys = keys();
    match usize::from(n) % (PEERS + 2) {
        i if i < PEERS => short_id(&keys.peers[i].node_id()),
        i if i == PEERS => short_id(&keys.me.node_id()),
        _ => u64::from(n),
    }
}

/// Lines of `.weftignore` rules: ones that match [`PATHS`] (files, directories, negations,
/// globs), one that would ignore the ignore file, and ones that do not parse.
const RULE_LINES: [&str; 12] = [
    "*.txt",
    "dir/",
    "a.txt",
    "!a.txt",
    "dir/sub",
    "*",
    "**/d",
    ".weftignore",
    "# a comment",
    "[",
    "\\",
    "e\u{301}.txt",
];

/// The fifth format's step: a folder's `.weftignore` rules set (by command, as the host does
/// when it reads the file), made of `lines` picked from [`RULE_LINES`] (none: no rules).
#[derive(Debug, Arbitrary)]
pub(super) struct RulesOp {
    folder: u8,
    lines: Vec<u8>,
}

/// A folder replication step.
#[derive(Debug, Arbitrary)]
pub(super) enum ReplicaOp {
    /// Application: replicate a folder (one of [`FOLDERS`]); `tight` gives it tiny limits.
    AddFolder { folder: u8, tight: bool },
    /// The host's scanner reports a change (only paths a scanner could report).
    Local { folder: u8, change: LocalSel },
    /// Application: resolve a conflict, keeping one version.
    Resolve {
        folder: u8,
        path: PathSel,
        keep: KeepSel,
    },
    /// Replication frames arrived, delivered in two pieces cut at `split % len`.
    Frames {
        conn: ConnSel,
        msgs: Vec<ReplicaMsg>,
        compress: bool,
        split: u16,
    },
    /// The next `count % 4 + 1` storage steps get `fault` (where the step may answer so).
    Faults { fault: Fault, count: u8 },
    /// The next `count % 8 + 1` storage steps are held, unanswered.
    Hold { count: u8 },
    /// Answers held steps: the `i`th oldest, or all of them.
    Release { i: u8, all: bool },
}

/// A path: mostly one of [`PATHS`], sometimes any string.
#[derive(Debug, Arbitrary)]
pub(super) enum PathSel {
    Small(u8),
    Any(String),
    /// A conflict copy the node made (or `a.txt`).
    Copy(u8),
}

/// What a `Resolve` keeps: the path itself, or a conflict copy the node made.
#[derive(Debug, Arbitrary)]
pub(super) enum KeepSel {
    Same,
    Copy(u8),
    Other(PathSel),
}

/// A scanner's report.
#[derive(Debug, Arbitrary)]
pub(super) enum LocalSel {
    Changed(FileSel),
    Removed(PathSel),
    Moved(PathSel, FileSel),
    ScanDone,
}

/// A version vector: normalized (ascending, no zero, one counter per node) unless `raw`.
#[derive(Debug, Arbitrary)]
pub(super) struct VersionSel {
    counters: Vec<(u8, u8)>,
    raw: bool,
}

impl VersionSel {
    fn version(&self) -> Version {
        let mut counters: Vec<Counter> = self
            .counters
            .iter()
            .take(8)
            .map(|&(node, value)| Counter {
                node: counter_node(node),
                value: u64::from(value),
            })
            .collect();
        if !self.raw {
            counters.retain(|c| c.value > 0);
            counters.sort_by_key(|c| (c.node, std::cmp::Reverse(c.value)));
            counters.dedup_by_key(|c| c.node);
        }
        Version { counters }
    }
}

/// A file, directory or symlink as a peer or the scanner describes it.
#[derive(Debug, Arbitrary)]
pub(super) struct FileSel {
    path: PathSel,
    /// `% 3`: file, directory, symlink.
    kind: u8,
    /// A file's content (one of the catalogue's), or a symlink's target.
    content: u8,
    mode: u8,
    mtime: i16,
    version: VersionSel,
    sequence: u8,
    by: u8,
    /// `% 8`: 5 claims one more byte, 6 drops the last block, 7 breaks the first hash.
    tamper: u8,
}

impl FileSel {
    fn entry(&self, heard: &ReplicaHeard) -> FileEntry {
        let kind =
            [FileKind::File, FileKind::Directory, FileKind::Symlink][usize::from(self.kind % 3)];
        let (size, mut blocks, target) = match kind {
            FileKind::File => {
                let c = &contents()[usize::from(self.content) % CONTENT_SIZES.len()];
                (c.bytes.len() as u64, c.blocks.clone(), String::new())
            }
            FileKind::Directory => (0, Vec::new(), String::new()),
            FileKind::Symlink => (
                0,
                Vec::new(),
                TARGETS[usize::from(self.content) % TARGETS.len()].to_string(),
            ),
        };
        let mut size = size;
        match self.tamper % 8 {
            5 => size += 1,
            6 => {
                blocks.pop();
            }
            7 => {
                if let Some(b) = blocks.first_mut() {
                    b.hash[0] ^= 1;
                }
            }
            _ => {}
        }
        FileEntry {
            path: self.path.path(heard),
            kind,
            target,
            mode: if self.mode < 200 {
                self.mode % 8
            } else {
                self.mode
            },
            size,
            mtime_ms: 1_700_000_000_000 + i64::from(self.mtime) * 1000,
            modified_by: counter_node(self.by),
            version: self.version.version(),
            sequence: u64::from(self.sequence),
            blocks,
        }
    }
}

impl PathSel {
    fn path(&self, heard: &ReplicaHeard) -> String {
        match self {
            PathSel::Small(n) => PATHS[usize::from(*n) % PATHS.len()].to_string(),
            PathSel::Any(s) => s.clone(),
            PathSel::Copy(i) => {
                pick(&heard.copies, *i).map_or_else(|| "a.txt".into(), |c| c.1.clone())
            }
        }
    }
}

/// An index id: small, or the node's own (as its IHAVEs named it).
#[derive(Debug, Arbitrary)]
pub(super) enum IndexSel {
    Small(u8),
    Heard(u8),
}

impl IndexSel {
    fn id(&self, heard: &ReplicaHeard) -> u64 {
        match self {
            IndexSel::Small(n) => u64::from(*n),
            IndexSel::Heard(i) => pick(&heard.index_ids, *i).copied().unwrap_or(0),
        }
    }
}

/// A block hash: one the node asked for, a catalogue block's, or an unknown one.
#[derive(Debug, Arbitrary)]
pub(super) enum HashSel {
    Heard(u8),
    Catalog(u8, u8),
    Raw(u8),
}

impl HashSel {
    fn hash(&self, heard: &ReplicaHeard) -> BlockHash {
        match self {
            HashSel::Heard(i) => pick(&heard.wants, *i).copied().unwrap_or([0; 32]),
            HashSel::Catalog(c, b) => {
                let blocks = &contents()[usize::from(*c) % CONTENT_SIZES.len()].blocks;
                match blocks.len() {
                    0 => [0; 32],
                    len => blocks[usize::from(*b) % len].hash,
                }
            }
            HashSel::Raw(b) => [*b; 32],
        }
    }
}

/// Which bytes of a block HEREIS messages carry.
#[derive(Debug, Arbitrary)]
pub(super) enum PieceSel {
    /// The whole block in one message.
    Whole,
    /// The whole block in `n % 4 + 2` messages, in order.
    Pieces(u8),
    /// From byte `at % len` to the end.
    From(u16),
    /// The block with one byte flipped.
    Corrupt(u16),
    /// Arbitrary bytes at an arbitrary offset.
    Raw { offset: u32, data: Vec<u8> },
}

/// A replication message with arbitrary fields.
#[derive(Debug, Arbitrary)]
pub(super) enum ReplicaMsg {
    List {
        folder: u8,
        index_id: IndexSel,
        since: u8,
    },
    IHave {
        folder: u8,
        index_id: IndexSel,
        entries: Vec<EntrySel>,
    },
    IMoved {
        folder: u8,
        index_id: IndexSel,
        entries: Vec<(PathSel, VersionSel, EntrySel)>,
    },
    IDeleted {
        folder: u8,
        index_id: IndexSel,
        entries: Vec<(PathSel, u8, VersionSel, u8)>,
    },
    IWant {
        folder: u8,
        hashes: Vec<HashSel>,
    },
    HereIs {
        folder: u8,
        hash: HashSel,
        piece: PieceSel,
    },
    NotFound {
        folder: u8,
        hashes: Vec<HashSel>,
    },
    IRefuse {
        folder: u8,
        path: PathSel,
        reason: u8,
    },
}

/// An index entry: a new one, or one the node announced with its version bumped by a peer
/// (a newer version, or a concurrent one if the node changed it meanwhile), with new content
/// if `content` is set.
#[derive(Debug, Arbitrary)]
pub(super) enum EntrySel {
    New(FileSel),
    Echo {
        i: u8,
        peer: u8,
        content: Option<u8>,
    },
}

impl EntrySel {
    fn entry(&self, heard: &ReplicaHeard) -> FileEntry {
        match self {
            EntrySel::New(f) => f.entry(heard),
            EntrySel::Echo { i, peer, content } => {
                let Some(mut e) = pick(&heard.entries, *i).cloned() else {
                    return FileEntry {
                        path: "a.txt".into(),
                        kind: FileKind::Directory,
                        target: String::new(),
                        mode: 7,
                        size: 0,
                        mtime_ms: 0,
                        modified_by: 0,
                        version: Version::default(),
                        sequence: 1,
                        blocks: Vec::new(),
                    };
                };
                let by = short_id(&keys().peers[usize::from(*peer) % PEERS].node_id());
                e.version = e.version.bumped(by);
                e.modified_by = by;
                if let (Some(c), FileKind::File) = (content, e.kind) {
                    let c = &contents()[usize::from(*c) % CONTENT_SIZES.len()];
                    e.size = c.bytes.len() as u64;
                    e.blocks = c.blocks.clone();
                }
                e
            }
        }
    }
}

impl ReplicaMsg {
    /// The messages this stands for (HEREIS pieces are several), folder `f` being
    /// `folder_of(f)`.
    fn messages(&self, heard: &ReplicaHeard, folder_of: &dyn Fn(u8) -> FolderId) -> Vec<Vec<u8>> {
        let one = |m: ReplicaMessage<'_>| vec![Message::Replica(m).encode_payload()];
        match self {
            ReplicaMsg::List {
                folder: f,
                index_id,
                since,
            } => one(ReplicaMessage::List(List {
                folder: folder_of(*f),
                index_id: index_id.id(heard),
                since: u64::from(*since),
            })),
            ReplicaMsg::IHave {
                folder: f,
                index_id,
                entries,
            } => one(ReplicaMessage::IHave(IHave {
                folder: folder_of(*f),
                index_id: index_id.id(heard),
                entries: entries.iter().take(16).map(|e| e.entry(heard)).collect(),
            })),
            ReplicaMsg::IMoved {
                folder: f,
                index_id,
                entries,
            } => one(ReplicaMessage::IMoved(IMoved {
                folder: folder_of(*f),
                index_id: index_id.id(heard),
                entries: entries
                    .iter()
                    .take(16)
                    .map(|(from, v, to)| Moved {
                        from: from.path(heard),
                        from_version: v.version(),
                        to: to.entry(heard),
                    })
                    .collect(),
            })),
            ReplicaMsg::IDeleted {
                folder: f,
                index_id,
                entries,
            } => one(ReplicaMessage::IDeleted(IDeleted {
                folder: folder_of(*f),
                index_id: index_id.id(heard),
                entries: entries
                    .iter()
                    .take(16)
                    .map(|(path, kind, v, seq)| Deleted {
                        path: path.path(heard),
                        kind: [FileKind::File, FileKind::Directory, FileKind::Symlink]
                            [usize::from(kind % 3)],
                        modified_by: counter_node(*kind),
                        version: v.version(),
                        sequence: u64::from(*seq),
                    })
                    .collect(),
            })),
            ReplicaMsg::IWant { folder: f, hashes } => one(ReplicaMessage::IWant(IWant {
                folder: folder_of(*f),
                hashes: hashes.iter().take(16).map(|h| h.hash(heard)).collect(),
            })),
            ReplicaMsg::NotFound { folder: f, hashes } => one(ReplicaMessage::NotFound(NotFound {
                folder: folder_of(*f),
                hashes: hashes.iter().take(16).map(|h| h.hash(heard)).collect(),
            })),
            ReplicaMsg::IRefuse {
                folder: f,
                path,
                reason,
            } => one(ReplicaMessage::IRefuse(IRefuse {
                folder: folder_of(*f),
                path: path.path(heard),
                reason: PathRefusal::ALL[usize::from(*reason) % PathRefusal::ALL.len()],
            })),
            ReplicaMsg::HereIs {
                folder: f,
                hash,
                piece,
            } => {
                let folder = folder_of(*f);
                let hash = hash.hash(heard);
                let block = block_bytes(&hash).unwrap_or(b"not a block");
                let here = |offset: usize, data: &[u8]| {
                    Message::Replica(ReplicaMessage::HereIs(HereIs {
                        folder,
                        hash,
                        offset: offset as u32,
                        data,
                    }))
                    .encode_payload()
                };
                match piece {
                    PieceSel::Whole => vec![here(0, block)],
                    PieceSel::Pieces(n) => {
                        let size = block.len().div_ceil(usize::from(n % 4) + 2).max(1);
                        block
                            .chunks(size)
                            .enumerate()
                            .map(|(i, piece)| here(i * size, piece))
                            .collect()
                    }
                    PieceSel::From(at) => {
                        let at = usize::from(*at) % block.len();
                        vec![here(at, &block[at..])]
                    }
                    PieceSel::Corrupt(at) => {
                        let mut bad = block.to_vec();
                        let at = usize::from(*at) % bad.len();
                        bad[at] ^= 0x80;
                        vec![here(0, &bad)]
                    }
                    PieceSel::Raw { offset, data } => {
                        vec![Message::Replica(ReplicaMessage::HereIs(HereIs {
                            folder,
                            hash,
                            offset: *offset,
                            data,
                        }))
                        .encode_payload()]
                    }
                }
            }
        }
    }

    fn code(&self) -> weft_engine::protocol::Code {
        use weft_engine::protocol::Code;
        match self {
            ReplicaMsg::List { .. } => Code::LIST,
            ReplicaMsg::IHave { .. } => Code::IHAVE,
            ReplicaMsg::IMoved { .. } => Code::IMOVED,
            ReplicaMsg::IDeleted { .. } => Code::IDELETED,
            ReplicaMsg::IWant { .. } => Code::IWANT,
            ReplicaMsg::HereIs { .. } => Code::HEREIS,
            ReplicaMsg::NotFound { .. } => Code::NOTFOUND,
            ReplicaMsg::IRefuse { .. } => Code::IREFUSE,
        }
    }
}

/// What a faulty disk answers instead of carrying a step out, where the step may answer so.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub(super) enum Fault {
    /// `StorageResult::Failed(Io)`: any step.
    Io,
    /// `StorageResult::Failed(DiskFull)`: any step.
    DiskFull,
    /// `HostResult::Failed`: any step.
    Host,
    /// `Changed`: steps with an `expect`, and `MakeSymlink`.
    Changed,
    /// `NotFound`: `ReadBlock`, `Remove`, `Rename`.
    NotFound,
    /// `Corrupt` naming every block: `Commit`.
    Corrupt,
    /// Other bytes than asked for: `ReadBlock` (the file changed under the node).
    WrongBytes,
}

/// What the node sent that a peer may echo, and the conflict copies it made.
#[derive(Debug, Default)]
pub(super) struct ReplicaHeard {
    wants: VecDeque<BlockHash>,
    index_ids: VecDeque<u64>,
    entries: VecDeque<FileEntry>,
    /// (path, copy) of `ReplicaEvent::Conflict`.
    copies: VecDeque<(String, String)>,
}

impl ReplicaHeard {
    /// Notes what `msg`, sent by the node, carries.
    pub(super) fn observe(&mut self, msg: &Message<'_>) {
        match msg {
            Message::Replica(ReplicaMessage::IWant(w)) => {
                w.hashes.iter().for_each(|h| push(&mut self.wants, *h))
            }
            Message::Replica(ReplicaMessage::IHave(h)) => {
                push(&mut self.index_ids, h.index_id);
                h.entries
                    .iter()
                    .for_each(|e| push(&mut self.entries, e.clone()));
            }
            Message::Replica(ReplicaMessage::IMoved(m)) => {
                push(&mut self.index_ids, m.index_id);
                m.entries
                    .iter()
                    .for_each(|e| push(&mut self.entries, e.to.clone()));
            }
            _ => {}
        }
    }

    pub(super) fn observe_event(&mut self, e: &ReplicateEvent) {
        if let ReplicaEvent::Conflict { path, copy } = &e.event {
            push(&mut self.copies, (path.clone(), copy.clone()));
        }
    }
}

fn push<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() == HEARD_MAX {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn pick<T>(queue: &VecDeque<T>, i: u8) -> Option<&T> {
    match queue.len() {
        0 => None,
        len => queue.get(len - 1 - usize::from(i) % len),
    }
}

/// What is at a path of the in-memory disk.
#[derive(Debug, Clone)]
enum Item {
    File(Vec<u8>),
    Dir,
    Symlink,
}

/// The in-memory disk under every folder: files, temporary files, faults to inject, and
/// steps held back.
#[derive(Debug, Default)]
pub(super) struct Disk {
    items: BTreeMap<(FolderId, String), Item>,
    temps: BTreeMap<(FolderId, TempId), Vec<u8>>,
    states: BTreeMap<FolderId, Bytes>,
    faults: VecDeque<Fault>,
    hold: u8,
    held: VecDeque<(RequestId, FolderId, StorageRequest)>,
    /// Folders added (their records are checked after every step).
    pub(super) folders: Vec<FolderId>,
}

impl Disk {
    /// A storage step of `folder`: its answer now, or `None` if it is held.
    pub(super) fn request(
        &mut self,
        id: RequestId,
        folder: FolderId,
        request: StorageRequest,
    ) -> Option<HostResult> {
        check_request(&request);
        if self.hold > 0 {
            self.hold -= 1;
            self.held.push_back((id, folder, request));
            return None;
        }
        Some(self.carry_out(folder, request))
    }

    /// Every held step, carried out; none is held from now on.
    pub(super) fn release_all(&mut self) -> Vec<(RequestId, HostResult)> {
        self.hold = 0;
        let held: Vec<_> = self.held.drain(..).collect();
        held.into_iter()
            .map(|(id, folder, request)| (id, self.carry_out(folder, request)))
            .collect()
    }

    fn carry_out(&mut self, folder: FolderId, request: StorageRequest) -> HostResult {
        if let Some(fault) = self.faults.pop_front() {
            if let Some(result) = fault_answer(fault, &request) {
                return result;
            }
        }
        HostResult::Storage(self.step(folder, request))
    }

    fn present(&self, folder: FolderId, path: &str, expect: &Expect) -> bool {
        match (self.items.get(&(folder, path.to_string())), expect) {
            (None, Expect::Nothing) => true,
            (Some(item), Expect::Present { kind, size, .. }) => match item {
                Item::File(bytes) => *kind == FileKind::File && bytes.len() as u64 == *size,
                Item::Dir => *kind == FileKind::Directory,
                Item::Symlink => *kind == FileKind::Symlink,
            },
            _ => false,
        }
    }

    fn step(&mut self, folder: FolderId, request: StorageRequest) -> StorageResult {
        let key = |path: &str| (folder, path.to_string());
        match request {
            StorageRequest::LoadState => StorageResult::Loaded(self.states.get(&folder).cloned()),
            StorageRequest::PersistState { bytes } => {
                self.states.insert(folder, bytes);
                StorageResult::Done
            }
            StorageRequest::ReadBlock { path, offset, len } => match self.items.get(&key(&path)) {
                Some(Item::File(bytes))
                    if offset.saturating_add(u64::from(len)) <= bytes.len() as u64 =>
                {
                    let start = offset as usize;
                    StorageResult::Block(Bytes::copy_from_slice(
                        &bytes[start..start + len as usize],
                    ))
                }
                _ => StorageResult::NotFound,
            },
            StorageRequest::WriteTemp { temp, offset, data } => {
                let end = offset.saturating_add(data.len() as u64);
                if end > DISK_FILE_BYTES_MAX {
                    return StorageResult::Failed(StorageError::DiskFull);
                }
                let file = self.temps.entry((folder, temp)).or_default();
                if file.len() < end as usize {
                    file.resize(end as usize, 0);
                }
                file[offset as usize..end as usize].copy_from_slice(&data);
                StorageResult::Done
            }
            StorageRequest::Commit {
                temp,
                path,
                size,
                blocks,
                expect,
                ..
            } => {
                if size > DISK_FILE_BYTES_MAX {
                    return StorageResult::Failed(StorageError::DiskFull);
                }
                let mut file = self.temps.get(&(folder, temp)).cloned().unwrap_or_default();
                file.resize(size as usize, 0);
                let corrupt: Vec<u64> = blocks
                    .iter()
                    .filter(|b| {
                        let start = b.offset as usize;
                        *blake3::hash(&file[start..start + b.len as usize]).as_bytes() != b.hash
                    })
                    .map(|b| b.offset)
                    .collect();
                if !corrupt.is_empty() {
                    return StorageResult::Corrupt(corrupt);
                }
                if !self.present(folder, &path, &expect) {
                    return StorageResult::Changed;
                }
                self.temps.remove(&(folder, temp));
                self.items.insert(key(&path), Item::File(file));
                StorageResult::Done
            }
            StorageRequest::DiscardTemp { temp } => {
                self.temps.remove(&(folder, temp));
                StorageResult::Done
            }
            StorageRequest::Remove { path, expect } => {
                if !self.items.contains_key(&key(&path)) {
                    return StorageResult::NotFound;
                }
                if !self.present(folder, &path, &expect) {
                    return StorageResult::Changed;
                }
                let prefix = format!("{path}/");
                if self
                    .items
                    .range(key(&prefix)..)
                    .next()
                    .is_some_and(|((f, p), _)| *f == folder && p.starts_with(&prefix))
                {
                    return StorageResult::Failed(StorageError::Io("directory not empty".into()));
                }
                self.items.remove(&key(&path));
                StorageResult::Done
            }
            StorageRequest::Rename {
                from,
                to,
                expect,
                over,
            } => {
                if !self.items.contains_key(&key(&from)) {
                    return StorageResult::NotFound;
                }
                if !self.present(folder, &from, &expect) || !self.present(folder, &to, &over) {
                    return StorageResult::Changed;
                }
                let inside = format!("{to}/");
                if self
                    .items
                    .range(key(&inside)..)
                    .next()
                    .is_some_and(|((f, p), _)| *f == folder && p.starts_with(&inside))
                {
                    return StorageResult::Failed(StorageError::Io("directory not empty".into()));
                }
                // What it replaces (a resolve's) goes, as a rename over it does.
                self.items.remove(&key(&to));
                // The item and everything under it.
                let prefix = format!("{from}/");
                let moved: Vec<String> = self
                    .items
                    .keys()
                    .filter(|(f, p)| *f == folder && (*p == from || p.starts_with(&prefix)))
                    .map(|(_, p)| p.clone())
                    .collect();
                for p in moved {
                    let item = self.items.remove(&key(&p)).expect("listed above");
                    let new = format!("{to}{}", &p[from.len()..]);
                    self.items.insert(key(&new), item);
                }
                StorageResult::Done
            }
            StorageRequest::MakeDir { path, .. } => {
                match self.items.get(&key(&path)) {
                    Some(Item::Dir) => {}
                    Some(_) => return StorageResult::Changed,
                    None => {
                        self.items.insert(key(&path), Item::Dir);
                    }
                }
                StorageResult::Done
            }
            StorageRequest::MakeSymlink { path, .. } => {
                if self.items.contains_key(&key(&path)) {
                    return StorageResult::Changed;
                }
                self.items.insert(key(&path), Item::Symlink);
                StorageResult::Done
            }
            StorageRequest::SetMode { path, expect, .. } => {
                if self.present(folder, &path, &expect) && self.items.contains_key(&key(&path)) {
                    StorageResult::Done
                } else {
                    StorageResult::Changed
                }
            }
        }
    }

    /// The scanner saw `change` on disk: the disk holds it (so the node can read its blocks).
    fn apply_local(&mut self, folder: FolderId, change: &LocalChange) {
        let mut put = |entry: &FileEntry| {
            let item = match entry.kind {
                FileKind::File => Item::File(
                    contents()
                        .iter()
                        .find(|c| c.bytes.len() as u64 == entry.size)
                        .map(|c| c.bytes.clone())
                        .unwrap_or_default(),
                ),
                FileKind::Directory => Item::Dir,
                FileKind::Symlink => Item::Symlink,
            };
            self.items.insert((folder, entry.path.clone()), item);
        };
        match change {
            LocalChange::Changed(entry) => put(entry),
            LocalChange::Moved { from, to } => {
                put(to);
                self.items.remove(&(folder, from.clone()));
            }
            LocalChange::Removed { path } => {
                self.items.remove(&(folder, path.clone()));
            }
            LocalChange::ScanDone => {}
        }
    }
}

/// The answer `fault` gives to `request`, if the step may answer so.
fn fault_answer(fault: Fault, request: &StorageRequest) -> Option<HostResult> {
    use StorageRequest as R;
    let storage = |r| Some(HostResult::Storage(r));
    match (fault, request) {
        (Fault::Io, _) => storage(StorageResult::Failed(StorageError::Io("fuzz".into()))),
        (Fault::DiskFull, _) => storage(StorageResult::Failed(StorageError::DiskFull)),
        (Fault::Host, _) => Some(HostResult::Failed("fuzz".into())),
        (
            Fault::Changed,
            R::Commit { .. }
            | R::Remove { .. }
            | R::Rename { .. }
            | R::MakeSymlink { .. }
            | R::SetMode { .. },
        ) => storage(StorageResult::Changed),
        (Fault::NotFound, R::ReadBlock { .. } | R::Remove { .. } | R::Rename { .. }) => {
            storage(StorageResult::NotFound)
        }
        (Fault::Corrupt, R::Commit { blocks, .. }) => storage(StorageResult::Corrupt(
            blocks.iter().map(|b| b.offset).collect(),
        )),
        (Fault::WrongBytes, R::ReadBlock { len, .. }) => {
            storage(StorageResult::Block(Bytes::from(vec![0x5a; *len as usize])))
        }
        _ => None,
    }
}

/// What the engine promises of a storage step: paths keep the rules of SPEC.md §22.3, a
/// symlink's target stays inside the folder, a commit's blocks tile its size.
fn check_request(request: &StorageRequest) {
    let path_ok = |p: &str| {
        if let Err(e) = check_path(p) {
            panic!("the node asked the host to touch {p:?}, which breaks a path rule: {e:?}");
        }
    };
    match request {
        StorageRequest::LoadState
        | StorageRequest::PersistState { .. }
        | StorageRequest::WriteTemp { .. }
        | StorageRequest::DiscardTemp { .. } => {}
        StorageRequest::ReadBlock { path, .. }
        | StorageRequest::Remove { path, .. }
        | StorageRequest::MakeDir { path, .. }
        | StorageRequest::SetMode { path, .. } => path_ok(path),
        StorageRequest::Rename { from, to, .. } => {
            path_ok(from);
            path_ok(to);
        }
        StorageRequest::MakeSymlink { path, target } => {
            path_ok(path);
            if let Err(e) = check_symlink_target(path, target) {
                panic!("the node made a symlink {path:?} -> {target:?}, which escapes: {e:?}");
            }
        }
        StorageRequest::Commit {
            path, size, blocks, ..
        } => {
            path_ok(path);
            let mut end = 0u64;
            for b in blocks {
                assert_eq!(b.offset, end, "commit of {path:?}: blocks do not tile");
                end += u64::from(b.len);
            }
            assert_eq!(
                end, *size,
                "commit of {path:?}: blocks do not cover its size"
            );
        }
    }
}

impl Driver {
    /// Runs one folder replication step (refusals allowed) and checks the node's promises.
    pub(super) fn replica_step(&mut self, op: ReplicaOp) {
        match op {
            ReplicaOp::AddFolder { folder: f, tight } => self.add_folder(f, tight),
            ReplicaOp::Local { folder: f, change } => self.local(folder(f), change),
            ReplicaOp::Resolve {
                folder: f,
                path,
                keep,
            } => {
                let path = path.path(&self.replica_heard);
                let keep = match keep {
                    KeepSel::Same => path.clone(),
                    KeepSel::Copy(i) => pick(&self.replica_heard.copies, i)
                        .map_or_else(|| path.clone(), |c| c.1.clone()),
                    KeepSel::Other(p) => p.path(&self.replica_heard),
                };
                let command = ReplicateCommand::Folder {
                    folder: folder(f),
                    command: ReplicaCommand::Resolve { path, keep },
                };
                self.input(Input::Command(Command::Replicate(command)));
                self.check();
            }
            ReplicaOp::Frames {
                conn,
                msgs,
                compress,
                split,
            } => self.replica_frames(&conn, &msgs, compress, split, &folder),
            ReplicaOp::Faults { fault, count } => {
                for _ in 0..count % 4 + 1 {
                    self.disk.faults.push_back(fault);
                }
            }
            ReplicaOp::Hold { count } => self.disk.hold = count % 8 + 1,
            ReplicaOp::Release { i, all } => {
                self.disk.hold = 0;
                let released: Vec<_> = if all {
                    self.disk.held.drain(..).collect()
                } else {
                    let len = self.disk.held.len();
                    if len == 0 {
                        return;
                    }
                    self.disk
                        .held
                        .remove(usize::from(i) % len)
                        .into_iter()
                        .collect()
                };
                for (id, folder, request) in released {
                    let result = self.disk.carry_out(folder, request);
                    self.answers.push((id, result));
                }
                self.check();
            }
        }
    }

    /// Peers' replication frames on a connection, folder `f` of each message being
    /// `folder_of(f)`, delivered in two pieces cut at `split % len`.
    pub(super) fn replica_frames(
        &mut self,
        conn: &ConnSel,
        msgs: &[ReplicaMsg],
        compress: bool,
        split: u16,
        folder_of: &dyn Fn(u8) -> FolderId,
    ) {
        let mut bytes = Vec::new();
        for msg in msgs {
            for payload in msg.messages(&self.replica_heard, folder_of) {
                let frame = weft_engine::protocol::Frame::build(msg.code(), &payload, compress);
                bytes.extend_from_slice(frame.bytes());
            }
        }
        let conn = self.conn(conn);
        self.receive(conn, bytes, split);
    }

    /// The scanner reports `change` in `folder` (nothing if a scanner could not report it).
    pub(super) fn local(&mut self, folder: FolderId, change: LocalSel) {
        let change = match change {
            LocalSel::Changed(file) => LocalChange::Changed(file.entry(&self.replica_heard)),
            LocalSel::Removed(path) => LocalChange::Removed {
                path: path.path(&self.replica_heard),
            },
            LocalSel::Moved(from, to) => LocalChange::Moved {
                from: from.path(&self.replica_heard),
                to: to.entry(&self.replica_heard),
            },
            LocalSel::ScanDone => LocalChange::ScanDone,
        };
        // A scanner reports only paths that keep the rules, with well-formed entries.
        if !scannable(&change) {
            return;
        }
        self.disk.apply_local(folder, &change);
        self.input(Input::Command(Command::Replicate(
            ReplicateCommand::Local { folder, change },
        )));
        self.check();
    }

    /// Adds folder `f` (tiny limits if `tight`).
    pub(super) fn add_folder(&mut self, f: u8, tight: bool) {
        let folder = folder(f);
        let mut config = ReplicaConfig::new(folder, NodeId::default());
        if tight {
            config.requests_outstanding_max = 2;
            config.bytes_in_flight_per_peer_max = 20_000;
            config.block_request_timeout = Duration::from_millis(500);
            config.mismatches_before_disconnect = 1;
            config.persist_delay = Duration::from_millis(0);
        }
        let command = Command::Replicate(ReplicateCommand::AddFolder(config));
        if self.input(Input::Command(command)) {
            self.disk.folders.push(folder);
        }
        self.check();
    }

    /// Sets a folder's ignore rules, as a host does each time it reads the folder's
    /// `.weftignore` (rules that do not parse are left out, as the host reports and skips them).
    pub(super) fn rules_step(&mut self, op: RulesOp) {
        let text: Vec<&str> = op
            .lines
            .iter()
            .take(8)
            .map(|&i| RULE_LINES[usize::from(i) % RULE_LINES.len()])
            .collect();
        let (rules, _errors) = IgnoreRules::parse(&text.join("\n"));
        let command = ReplicateCommand::Folder {
            folder: folder(op.folder),
            command: ReplicaCommand::SetIgnoreRules(rules),
        };
        if self.input(Input::Command(Command::Replicate(command))) {
            self.summary.rules_set += 1;
        }
        self.check();
    }

    /// The replication checks after every step: every record a folder holds keeps the path
    /// rules (a peer's bad path is refused, never recorded).
    pub(super) fn check_replicas(&self) {
        for folder in &self.disk.folders {
            let Some(replica) = self.node.replica(folder) else {
                continue;
            };
            for record in replica.records() {
                if let Err(e) = check_path(&record.entry.path) {
                    panic!("{folder:?} records {:?}: {e:?}", record.entry.path);
                }
            }
        }
    }
}

/// Whether a scanner could report `change`: paths that keep the rules, symlink targets that
/// stay inside, a file's blocks tiling its size, a mode of at most 7.
fn scannable(change: &LocalChange) -> bool {
    let entry_ok = |e: &FileEntry| {
        check_path(&e.path).is_ok()
            && e.mode <= 7
            && match e.kind {
                FileKind::Symlink => check_symlink_target(&e.path, &e.target).is_ok(),
                FileKind::Directory => true,
                FileKind::File => {
                    let mut end = 0;
                    e.blocks.iter().all(|b| {
                        let ok = b.offset == end;
                        end += u64::from(b.len);
                        ok
                    }) && end == e.size
                        && contents()
                            .iter()
                            .any(|c| c.blocks == e.blocks && c.bytes.len() as u64 == e.size)
                }
            }
    };
    match change {
        LocalChange::Changed(e) => entry_ok(e),
        LocalChange::Moved { from, to } => check_path(from).is_ok() && entry_ok(to),
        LocalChange::Removed { path } => check_path(path).is_ok(),
        LocalChange::ScanDone => true,
    }
}
