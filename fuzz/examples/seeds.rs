//! Writes the hand-made seeds of `corpus/frame_decoder/`, `corpus/replica_message/`,
//! `corpus/{session,mesh,table,chord}_message/` and `corpus/node/`.
//!
//! Run from `fuzz/`. Frame-decoder seeds are valid streams of every message, plain and
//! compressed, in several chunkings, and a few broken ones; replica-message seeds are the
//! payloads of valid replication messages, a few of each code. Node seeds are
//! found by a seeded random search for op sequences that reach what a fuzzer otherwise takes
//! a while to find: completed handshakes (inbound and outbound), delivered and relayed
//! broadcasts, discovery. Files are named by content, so reruns add nothing twice. The search
//! is deterministic and takes about a quarter of an hour in release mode
//! (`cargo run --release --example seeds`; add `-- --frames-only` to skip it, or
//! `-- --replica-only` to run only the search for third-format node inputs, which reach
//! folder replication: a minute; `-- --remote-only` to write only the scripted fourth-format
//! ones, which reach drops and remote runs: a second).

use std::path::Path;

use weft_engine::identity::Identity;
use weft_engine::protocol::{
    Block, Counter, Deleted, FileEntry, FileKind, FolderId, HereIs, IDeleted, IHave, IMoved,
    IRefuse, IWant, List, Moved, NotFound, PathRefusal, ReplicaMessage, Version,
};
use weft_engine::protocol::{
    Broadcast, ByeReason, CascadeId, DigestEntry, Family, Hello, HelloAck, ICanSee, ICantSee,
    IKnowAbout, MeshDigest, MeshWant, Message, NetworkId, NodeId, OriginProof, PeerInfo, Ping,
    Pong, PublicKey, SeqRange, Signature, WantRange, CAP_LZ4,
};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    if std::env::args().any(|a| a == "--remote-only") {
        remote_script_seeds(&root.join("node"));
        return;
    }
    frame_seeds(&root.join("frame_decoder"));
    replica_seeds(&root.join("replica_message"));
    family_seeds(&root);
    if std::env::args().any(|a| a == "--frames-only") {
        return;
    }
    remote_script_seeds(&root.join("node"));
    replica_node_seeds(&root.join("node"));
    replica_script_seeds(&root.join("node"));
    if std::env::args().any(|a| a == "--replica-only") {
        return;
    }
    node_seeds(&root.join("node"));
}

fn save(dir: &Path, data: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let name = content_name(data);
    std::fs::write(dir.join(name), data).unwrap();
}

/// A content name without another dependency: FNV-1a, twice, as 32 hex digits.
fn content_name(data: &[u8]) -> String {
    let fnv = |seed: u64| {
        data.iter().fold(seed, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "seed-{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x1234_5678_9abc_def0)
    )
}

fn messages() -> Vec<Message<'static>> {
    let peer = Identity::from_secret(&[1; 32]);
    let node = peer.node_id();
    let cascade = CascadeId {
        origin: node,
        seq: 7,
    };
    let peers: Vec<PeerInfo> = (0..20u8)
        .map(|i| PeerInfo {
            node: NodeId([i; 32]),
            addr: format!("10.0.0.{i}:7000"),
        })
        .collect();
    vec![
        Message::Hello(Hello {
            network: NetworkId::from_name("fuzz"),
            public_key: peer.public_key(),
            nonce: [3; 32],
            incarnation: 2,
            listen_addr: Some("10.0.0.1:7000".into()),
            capabilities: CAP_LZ4,
            families: Family::Session.bit()
                | Family::Mesh.bit()
                | Family::Table.bit()
                | Family::Chord.bit(),
            dedicated: None,
        }),
        Message::HelloAck(HelloAck {
            signature: Signature([9; 64]),
        }),
        Message::Ping(Ping { nonce: 1 }),
        Message::Pong(Pong { nonce: u64::MAX }),
        Message::Bye(ByeReason::Shutdown),
        Message::ICanSee(ICanSee {
            cascade,
            hops_left: 2,
            origin_addr: Some("10.0.0.1:7000".into()),
            peers: peers.clone(),
        }),
        Message::IKnowAbout(IKnowAbout {
            cascade,
            hops_left: 0,
            peers,
        }),
        Message::ICantSee(ICantSee {
            cascade,
            hops_left: 1,
            lost: NodeId([5; 32]),
        }),
        Message::Broadcast(Broadcast {
            origin: node,
            incarnation: 2,
            seq: 1,
            payload: b"hello, mesh",
            proof: None,
        }),
        Message::Broadcast(Broadcast {
            origin: node,
            incarnation: 2,
            seq: 2,
            payload: &[0x42; 600],
            proof: Some(OriginProof {
                public_key: PublicKey([3; 32]),
                signature: Signature([4; 64]),
            }),
        }),
        Message::MeshDigest(MeshDigest {
            entries: vec![DigestEntry {
                origin: node,
                incarnation: 2,
                ranges: vec![
                    SeqRange { first: 1, last: 4 },
                    SeqRange { first: 9, last: 9 },
                ],
            }],
        }),
        Message::MeshWant(MeshWant {
            wants: vec![WantRange {
                origin: node,
                incarnation: 2,
                range: SeqRange { first: 2, last: 3 },
            }],
        }),
        Message::MeshRepair(Broadcast {
            origin: node,
            incarnation: 2,
            seq: 3,
            payload: b"repaired",
            proof: None,
        }),
        // Last, so that the indices above stay: a connection dedicated to Chord (what CAP_CHORD_ONLY was).
        Message::Hello(Hello {
            network: NetworkId::from_name("fuzz"),
            public_key: peer.public_key(),
            nonce: [4; 32],
            incarnation: 2,
            listen_addr: None,
            capabilities: 0,
            families: Family::Session.bit() | Family::Chord.bit(),
            dedicated: Some(Family::Chord.high_byte()),
        }),
    ]
}

/// The seeds of `corpus/{session,mesh,table,chord}_message/`: the payload of every test vector
/// of `protocol/vectors.json` (every code has at least one), by its code's family, and of every
/// message of [`messages`].
fn family_seeds(root: &Path) {
    let dir = |code: u16| {
        let family = match code >> 8 {
            0x00 => "session",
            0x01 => "mesh",
            0x02 => "table",
            0x03 => "chord",
            _ => return None,
        };
        Some(root.join(format!("{family}_message")))
    };
    for m in messages() {
        if let Some(d) = dir(m.code().0) {
            save(&d, &m.encode_payload());
        }
    }
    // Not a JSON parser: each vector has a `"code": N,` line before its `"payload_hex"` one.
    let vectors = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/vectors.json"),
    )
    .unwrap();
    let mut code = None;
    for line in vectors.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("\"code\": ") {
            code = n.trim_end_matches(',').parse::<u16>().ok();
        } else if let Some(hex) = line.strip_prefix("\"payload_hex\": \"") {
            let hex = hex.trim_end_matches(',').trim_end_matches('"');
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            if let Some(d) = code.take().and_then(dir) {
                save(&d, &bytes);
            }
        }
    }
}

/// A few valid messages of every replication code (SPEC.md §22.2).
fn replica_messages() -> Vec<Message<'static>> {
    let folder = FolderId::from_name("photos");
    let version = |pairs: &[(u64, u64)]| Version {
        counters: pairs
            .iter()
            .map(|&(node, value)| Counter { node, value })
            .collect(),
    };
    let file = FileEntry {
        path: "a/notes.txt".into(),
        kind: FileKind::File,
        target: String::new(),
        mode: 6,
        size: 40_000,
        mtime_ms: 1_700_000_000_123,
        modified_by: 0x1a2b_3c4d_5e6f_7081,
        version: version(&[(0x1a2b_3c4d_5e6f_7081, 3), (0xf000_0000_0000_0001, 1)]),
        sequence: 17,
        blocks: vec![
            Block {
                offset: 0,
                len: 16_384,
                hash: [0x10; 32],
            },
            Block {
                offset: 16_384,
                len: 23_616,
                hash: [0x30; 32],
            },
        ],
    };
    let dir = FileEntry {
        path: "a".into(),
        kind: FileKind::Directory,
        size: 0,
        blocks: vec![],
        version: version(&[(5, 1)]),
        ..file.clone()
    };
    let link = FileEntry {
        path: "a/latest".into(),
        kind: FileKind::Symlink,
        target: "notes.txt".into(),
        ..dir.clone()
    };
    let deleted = |path: &str, kind| Deleted {
        path: path.into(),
        kind,
        modified_by: 5,
        version: version(&[(5, 2), (9, 1)]),
        sequence: 30,
    };
    let r = Message::Replica;
    let mut out = vec![
        r(ReplicaMessage::List(List {
            folder,
            index_id: 0,
            since: 0,
        })),
        r(ReplicaMessage::List(List {
            folder,
            index_id: 0x0123_4567_89ab_cdef,
            since: 300,
        })),
        r(ReplicaMessage::IHave(IHave {
            folder,
            index_id: 7,
            entries: vec![file.clone()],
        })),
        r(ReplicaMessage::IHave(IHave {
            folder,
            index_id: 7,
            entries: vec![file.clone(), dir.clone(), link],
        })),
        r(ReplicaMessage::IHave(IHave {
            folder,
            index_id: 7,
            entries: vec![],
        })),
        r(ReplicaMessage::IMoved(IMoved {
            folder,
            index_id: 7,
            entries: vec![Moved {
                from: "a/notes.txt".into(),
                from_version: version(&[(0x1a2b_3c4d_5e6f_7081, 4)]),
                to: FileEntry {
                    path: "b/notes.txt".into(),
                    ..file.clone()
                },
            }],
        })),
        r(ReplicaMessage::IMoved(IMoved {
            folder,
            index_id: 7,
            entries: vec![Moved {
                from: "old".into(),
                from_version: version(&[(5, 2)]),
                to: FileEntry {
                    path: "new".into(),
                    ..dir
                },
            }],
        })),
        r(ReplicaMessage::IDeleted(IDeleted {
            folder,
            index_id: 7,
            entries: vec![deleted("a/old.txt", FileKind::File)],
        })),
        r(ReplicaMessage::IDeleted(IDeleted {
            folder,
            index_id: 7,
            entries: vec![
                deleted("tmp", FileKind::Directory),
                deleted("tmp/link", FileKind::Symlink),
            ],
        })),
        r(ReplicaMessage::IWant(IWant {
            folder,
            hashes: vec![[0x10; 32]],
        })),
        r(ReplicaMessage::IWant(IWant {
            folder,
            hashes: vec![[0x10; 32], [0x30; 32], [0x50; 32]],
        })),
        r(ReplicaMessage::HereIs(HereIs {
            folder,
            hash: [0x50; 32],
            offset: 0,
            data: &[0x00, 0xff, 0x7f, 0x80],
        })),
        r(ReplicaMessage::HereIs(HereIs {
            folder,
            hash: [0x30; 32],
            offset: 261_120,
            data: b"the rest of a block, after its first piece",
        })),
        r(ReplicaMessage::NotFound(NotFound {
            folder,
            hashes: vec![[0x30; 32]],
        })),
        r(ReplicaMessage::NotFound(NotFound {
            folder,
            hashes: vec![[0x30; 32], [0x10; 32]],
        })),
    ];
    for (i, reason) in PathRefusal::ALL.iter().enumerate() {
        out.push(r(ReplicaMessage::IRefuse(IRefuse {
            folder,
            path: format!("refused/{i}"),
            reason: *reason,
        })));
    }
    out
}

/// The payload of every replication message: what `run_replica_message` decodes.
fn replica_seeds(dir: &Path) {
    for m in replica_messages() {
        save(dir, &m.encode_payload());
    }
}

fn frame_seeds(dir: &Path) {
    let msgs = messages();
    // Replication frames go in seeds of their own, so the older stream seeds stay as they are.
    let replica = replica_messages();
    for m in &replica {
        save(dir, m.to_frame(true).bytes());
        save(dir, &[&[1u8, 7][..], m.to_frame(false).bytes()].concat());
    }
    let replica_stream: Vec<u8> = replica
        .iter()
        .flat_map(|m| m.to_frame(false).into_bytes().to_vec())
        .collect();
    save(dir, &[&[1u8, 13][..], &replica_stream].concat());
    let stream = |compress: bool| -> Vec<u8> {
        msgs.iter()
            .flat_map(|m| m.to_frame(compress).into_bytes().to_vec())
            .collect()
    };
    let with_sizes = |sizes: &[u8], stream: &[u8]| -> Vec<u8> {
        let mut out = vec![sizes.len() as u8];
        out.extend_from_slice(sizes);
        out.extend_from_slice(stream);
        out
    };
    let plain = stream(false);
    let packed = stream(true);
    save(dir, &with_sizes(&[], &plain));
    save(dir, &with_sizes(&[1], &plain));
    save(dir, &with_sizes(&[3, 5, 8, 13], &packed));
    save(dir, &with_sizes(&[7, 200], &packed));
    for m in &msgs {
        // A whole frame as the whole input: Frame::parse succeeds on it.
        save(dir, m.to_frame(true).bytes());
        save(dir, &with_sizes(&[2], m.to_frame(false).bytes()));
    }
    // Truncated, bad version, unknown code, oversized length, corrupt lz4.
    save(dir, &with_sizes(&[4], &plain[..plain.len() - 3]));
    let mut bad = msgs[2].to_frame(false).into_bytes().to_vec();
    bad[4] = 2;
    save(dir, &with_sizes(&[], &bad));
    bad[4] = 1;
    bad[6..8].copy_from_slice(&0x0777u16.to_be_bytes());
    save(dir, &with_sizes(&[], &bad));
    save(
        dir,
        &with_sizes(&[1], &[0x7f, 0xff, 0xff, 0xff, 1, 0, 0, 3]),
    );
    let mut corrupt = msgs[9].to_frame(true).into_bytes().to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    corrupt[12] ^= 0x10;
    save(dir, &with_sizes(&[], &corrupt));
}

/// xorshift64*: a reproducible byte source without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn node_seeds(dir: &Path) {
    type Goal = (&'static str, fn(&weft_engine::NodeMetrics) -> bool);
    let goals: [Goal; 5] = [
        ("one handshake", |m| m.session.handshakes_completed >= 1),
        ("two handshakes", |m| m.session.handshakes_completed >= 2),
        ("broadcast delivered", |m| m.mesh.broadcasts_delivered >= 1),
        ("broadcast relayed", |m| {
            m.mesh.broadcasts_delivered >= 1 && m.session.traffic.mesh.frames_out >= 1
        }),
        ("discovery dial", |m| m.session.discovery_dials >= 1),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (name, goal) in goals {
        let mut found = 0;
        for attempt in 0..2_000_000u64 {
            let len = 16 + (rng.next() % 240) as usize;
            let data = rng.bytes(len);
            let metrics = weft_fuzz::run_node_metrics(&data);
            if goal(&metrics) {
                save(dir, &data);
                found += 1;
                if found == 3 {
                    println!("{name}: found after {attempt} tries");
                    break;
                }
            }
        }
        if found < 3 {
            println!("{name}: {found} found");
        }
    }
    // A few plain random ones of assorted lengths.
    for len in [1, 8, 64, 512, 2048] {
        save(dir, &rng.bytes(len));
    }
}

/// Node inputs of the third format (`w3`, folder replication): random steps after the prefix
/// and a flags byte that adds folder `photos`, kept when they reach a goal.
fn replica_node_seeds(dir: &Path) {
    type Goal = (&'static str, fn(&weft_fuzz::NodeSummary) -> bool);
    // (A storage step takes more than random steps: `replica_script_seeds` writes those.)
    let goals: [Goal; 2] = [
        ("a replication frame sent", |s| s.replica_frames_sent >= 1),
        ("two replication frames sent", |s| {
            s.replica_frames_sent >= 2
        }),
    ];
    let mut rng = Rng(0x5eed_0ff0_1de7);
    for (name, goal) in goals {
        let mut found = 0;
        for attempt in 0..200_000u64 {
            let len = 16 + (rng.next() % 400) as usize;
            let mut data = b"w3".to_vec();
            data.push((rng.next() as u8 % 16) | 4);
            data.extend(rng.bytes(len));
            let summary = weft_fuzz::run_node_with(&data, weft_fuzz::default_config());
            if goal(&summary) {
                save(dir, &data);
                found += 1;
                if found == 3 {
                    println!("{name}: found after {attempt} tries");
                    break;
                }
            }
        }
        if found < 3 {
            println!("{name}: {found} found");
        }
    }
}

/// Writes bytes that `arbitrary` 1.x decodes to chosen values: integers little-endian, a bool
/// as one byte, an `Option` as a bool then the value, a `Vec` as a `true` byte before each
/// element and a `false` one after the last, an enum's variant `k` of `n` as a `u32` tag in
/// the `k`th of `n` equal ranges. (No strings: their lengths come from the input's end.)
#[derive(Default)]
struct Script(Vec<u8>);

impl Script {
    fn variant(&mut self, k: u32, n: u32) -> &mut Self {
        let tag = ((2 * u64::from(k) + 1) << 32) / (2 * u64::from(n));
        self.0.extend_from_slice(&(tag as u32).to_le_bytes());
        self
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    // The node target's steps (`src/node_drive.rs`, `src/node_replica.rs`,
    // `src/node_remote.rs`): the variant counts below are those enums' (Step3 3, Step4 5,
    // Op 16, ReplicaOp 7, ReplicaMsg 8, RunOp 5, RunMsg 7, DropOp 6, DropMsg 9, ...).
    /// How many kinds of step the input's format has (Step3's or Step4's).
    fn steps(&self) -> u32 {
        if self.0.starts_with(b"w4") {
            5
        } else {
            3
        }
    }
    fn op(&mut self, k: u32) -> &mut Self {
        let n = self.steps();
        self.variant(0, n).variant(k, 16)
    }
    fn replica(&mut self, k: u32) -> &mut Self {
        let n = self.steps();
        self.variant(2, n).variant(k, 7)
    }
    fn run(&mut self, k: u32) -> &mut Self {
        self.variant(3, 5).variant(k, 5)
    }
    fn drops(&mut self, k: u32) -> &mut Self {
        self.variant(4, 5).variant(k, 6)
    }
    /// `RunOp::Frames` on the `conn`th open connection, the messages written by `msgs`.
    fn run_frames(&mut self, conn: u8, msgs: &[&dyn Fn(&mut Script)]) -> &mut Self {
        self.run(2).variant(0, 2).u8(conn);
        for m in msgs {
            self.bool(true);
            m(self);
        }
        self.bool(false).bool(false).u16(0)
    }
    /// `DropOp::Frames` on the `conn`th open connection, the messages written by `msgs`.
    fn drop_frames(&mut self, conn: u8, msgs: &[&dyn Fn(&mut Script)]) -> &mut Self {
        self.drops(4).variant(0, 2).u8(conn);
        for m in msgs {
            self.bool(true);
            m(self);
        }
        self.bool(false).bool(false).u16(0)
    }
    /// `Op::Accept` of inbound connection `n`.
    fn accept(&mut self, n: u8) -> &mut Self {
        self.op(0).u8(n).variant(0, 3).u8(1)
    }
    /// `Op::Handshake` of keyed peer `peer` on the `conn`th open connection.
    fn handshake(&mut self, conn: u8, peer: u8) -> &mut Self {
        self.op(4).variant(0, 2).u8(conn); // ConnSel::Open
        self.u8(peer).u8(1).u8(0); // peer, nonce, incarnation
        self.bool(false).bool(false).bool(false); // no listen address, no lz4, good proof
        self.variant(0, 3).u16(0) // Part::Both, one piece
    }
    fn advance(&mut self, ms: u16) -> &mut Self {
        self.op(13).u16(ms)
    }
    /// `ReplicaOp::Frames` on the `conn`th open connection, the messages written by `msgs`.
    fn frames(&mut self, conn: u8, msgs: &[&dyn Fn(&mut Script)]) -> &mut Self {
        self.replica(3).variant(0, 2).u8(conn);
        for m in msgs {
            self.bool(true);
            m(self);
        }
        self.bool(false).bool(false).u16(0)
    }
    /// A `FileSel`: path `PATHS[path]`, kind (0 file, 1 directory, 2 symlink), catalogue
    /// content, version `{peer 0: value}`.
    fn file(&mut self, path: u8, kind: u8, content: u8, value: u8) -> &mut Self {
        self.variant(0, 3).u8(path); // PathSel::Small
        self.u8(kind).u8(content).u8(6).u16(0); // kind, content, mode, mtime
        self.bool(true).u8(0).u8(value).bool(false).bool(false); // version, not raw
        self.u8(1).u8(0).u8(0) // sequence, by, tamper
    }
}

/// Node inputs of the third format written step by step (see [`Script`]): a peer links and
/// announces a directory and files (the node makes the directory and fetches the files'
/// blocks, which the peer serves whole or in pieces, and commits them); the scanner reports
/// a file and the peer asks for its block (the node reads it and serves it); a faulty disk;
/// steps held and released late.
fn replica_script_seeds(dir: &Path) {
    let link = |s: &mut Script| {
        s.accept(0).handshake(0, 0);
    };
    let ihave = |entries: &'static [(u8, u8, u8)]| {
        move |s: &mut Script| {
            s.variant(1, 8).u8(0).variant(0, 2).u8(1); // IHAVE, photos, index id 1
            for &(path, kind, content) in entries {
                s.bool(true).variant(0, 2).file(path, kind, content, 1); // EntrySel::New
            }
            s.bool(false);
        }
    };
    // HEREIS of the `i`th latest hash the node asked for, as `piece`s.
    let hereis = |i: u8, pieces: Option<u8>| {
        move |s: &mut Script| {
            s.variant(5, 8).u8(0).variant(0, 3).u8(i); // HEREIS, photos, HashSel::Heard
            match pieces {
                None => s.variant(0, 5),
                Some(n) => s.variant(1, 5).u8(n),
            };
        }
    };
    let mut scripts = Vec::new();

    // A directory, a one-block file and a three-block file from a peer, served.
    let mut s = Script(b"w3\x04".to_vec());
    link(&mut s);
    s.frames(0, &[&ihave(&[(2, 1, 0), (0, 0, 3), (3, 0, 6)])]);
    s.advance(10);
    s.frames(
        0,
        &[
            &hereis(0, None),
            &hereis(1, Some(2)),
            &hereis(2, None),
            &hereis(3, None),
        ],
    );
    s.advance(600).advance(600);
    scripts.push(s.0.clone());

    // The same under a faulty disk (every step of the first four fails once).
    let mut s = Script(b"w3\x04".to_vec());
    link(&mut s);
    s.replica(4).variant(0, 7).u8(3); // Faults: Io, 4 steps
    s.frames(0, &[&ihave(&[(2, 1, 0), (0, 0, 3)])]);
    s.frames(0, &[&hereis(0, None)]);
    s.advance(2000).advance(2000);
    scripts.push(s.0.clone());

    // Steps held, then released one by one.
    let mut s = Script(b"w3\x04".to_vec());
    link(&mut s);
    s.replica(5).u8(7); // Hold 8
    s.frames(0, &[&ihave(&[(2, 1, 0), (0, 0, 3), (5, 1, 0)])]);
    s.frames(0, &[&hereis(0, None)]);
    for i in 0..6 {
        s.replica(6).u8(i).bool(false); // Release the ith
    }
    s.advance(700);
    scripts.push(s.0.clone());

    // The scanner reports a file; the peer asks for its block; the node reads and serves it.
    let mut s = Script(b"w3\x04".to_vec());
    s.replica(1).u8(0).variant(0, 4).file(1, 0, 4, 1); // Local: Changed b.bin, 5000 bytes
    link(&mut s);
    s.frames(
        0,
        &[&|s: &mut Script| {
            s.variant(4, 8)
                .u8(0)
                .bool(true)
                .variant(1, 3)
                .u8(4)
                .u8(0)
                .bool(false); // IWANT
        }],
    );
    s.advance(10);
    scripts.push(s.0.clone());

    for data in scripts {
        let summary = weft_fuzz::run_node_with(&data, weft_fuzz::default_config());
        println!(
            "script seed: {} handshakes, {} replication frames sent, {} storage steps",
            summary.metrics.session.handshakes_completed,
            summary.replica_frames_sent,
            summary.storage_requests
        );
        save(dir, &data);
    }
}

/// Node inputs of the fourth format written step by step (see [`Script`]), over Noise links: a
/// peer asks the node to run `echo` (the host spawns it, it prints twice and exits), the
/// application asks the peer for a run that starts, prints and exits, and interrupts
/// another; the same with the host's answers held and given out of order; the node creates
/// and publishes a drop a peer subscribed to and serves the peer a block of its folder; the
/// node subscribes to a peer's drop, takes its first version and its file list; the first
/// again over plaintext links.
fn remote_script_seeds(dir: &Path) {
    let link = |s: &mut Script| {
        s.advance(10).accept(0).handshake(0, 0);
    };
    // RUN_REQUEST of run `run`: `echo`, no arguments, no shell, no folder.
    let request = |run: u8| {
        move |s: &mut Script| {
            s.variant(0, 7)
                .u8(run)
                .u8(4)
                .bool(false)
                .bool(false)
                .bool(false);
        }
    };
    // RunCommand::Start of run `run` toward peer 0: `echo`.
    let start = |s: &mut Script, run: u8| {
        s.run(0)
            .u8(run)
            .u8(0)
            .u8(4)
            .bool(false)
            .bool(false)
            .bool(false);
    };
    let started = |run: u8| {
        move |s: &mut Script| {
            s.variant(2, 7).u8(run);
        }
    };
    // RUN_OUTPUT with the number the node expects.
    let output = |run: u8| {
        move |s: &mut Script| {
            s.variant(3, 7).u8(run).bool(false).bool(false).u16(40);
        }
    };
    // RUN_EXIT 0 counting the outputs the node took.
    let exit = |run: u8| {
        move |s: &mut Script| {
            s.variant(6, 7).u8(run).bool(false).u8(0).bool(false);
        }
    };
    let mut scripts = Vec::new();

    // A peer's run served; the application's run answered.
    let mut s = Script(b"w4\x02".to_vec());
    link(&mut s);
    s.run_frames(0, &[&request(1)]);
    start(&mut s, 2);
    s.run_frames(0, &[&started(2), &output(2), &output(2), &exit(2)]);
    start(&mut s, 3);
    s.run(1).u8(3).bool(false); // Signal: interrupt
    s.advance(3000);
    scripts.push(s.0.clone());

    // The host holds its answers and gives them out of order; the peer interrupts its run.
    let mut s = Script(b"w4\x02".to_vec());
    link(&mut s);
    s.run(3).u8(7); // Hold 8
    s.run_frames(0, &[&request(1), &request(2)]);
    s.run(4).u8(1).variant(0, 3).bool(false).u16(10); // answer the older spawn: Spawned
    s.run(4).u8(0).variant(1, 3).bool(true).u8(3); // the newer: NotStarted
    s.run(4).u8(0).variant(0, 3).bool(true).u16(500); // the read: output
    s.run_frames(
        0,
        &[&|s: &mut Script| {
            s.variant(5, 7).u8(1).bool(false); // RUN_SIGNAL interrupt
        }],
    );
    s.advance(2500);
    for i in 0..4 {
        s.run(4).u8(i).variant(1, 3).bool(false).u8(0);
    }
    s.advance(10);
    scripts.push(s.0.clone());

    // A drop created here, a peer subscribed, a file published, a merge with new owners.
    let mut s = Script(b"w4\x02".to_vec());
    link(&mut s);
    s.drops(0); // Create
    s.advance(10);
    s.drop_frames(
        0,
        &[&|s: &mut Script| {
            s.variant(0, 9).variant(1, 3).u8(0); // DROP_SUBSCRIBE to the node's drop
        }],
    );
    s.drops(3)
        .variant(1, 3)
        .u8(0)
        .variant(0, 4)
        .file(1, 0, 4, 1); // Local: a file
    s.advance(10);
    s.drops(2).variant(1, 3).u8(0).bool(false); // Publish
    s.drops(2)
        .variant(1, 3)
        .u8(0)
        .bool(true)
        .bool(true)
        .u8(1)
        .bool(false); // new owners

    // The peer asks for the file's block in the drop's folder: the node reads and serves it.
    s.drops(5).variant(1, 3).u8(0).variant(0, 2).u8(0);
    s.bool(true).variant(4, 8).u8(0); // IWANT
    s.bool(true).variant(1, 3).u8(4).u8(0).bool(false); // the hash of the file's content
    s.bool(false).bool(false).u16(0);
    s.advance(6000);
    scripts.push(s.0.clone());

    // A subscription to a peer's drop: its first version, its file list, a forged version.
    let mut s = Script(b"w4\x02".to_vec());
    link(&mut s);
    s.drops(1).variant(0, 3).u8(0); // Subscribe to peer 0's drop
    let version = |forge: bool| {
        move |s: &mut Script| {
            s.variant(4, 9).variant(0, 3).u8(0); // DROP_VERSION of peer 0's drop
            s.bool(false)
                .bool(false)
                .bool(false)
                .bool(false)
                .bool(false);
            for f in [0, 1, 2] {
                s.bool(true).u8(f);
            }
            s.bool(false).bool(forge);
        }
    };
    s.drop_frames(0, &[&version(false)]);
    s.drop_frames(
        0,
        &[&|s: &mut Script| {
            s.variant(6, 9).bool(false).u8(0); // DROP_FILES echoing the node's request
        }],
    );
    s.advance(6000);
    s.drop_frames(0, &[&version(true)]);
    scripts.push(s.0.clone());

    // The first over plaintext links: every run refused.
    let mut plain = scripts[0].clone();
    plain[2] |= 16;
    scripts.push(plain);

    for data in scripts {
        let summary = weft_fuzz::run_node_with(&data, weft_fuzz::default_config());
        println!(
            "remote seed: {} handshakes, {} Noise links, {} run events, {} process steps ({} \
             spawns), {} run frames sent, {} drops events, {} drop frames sent",
            summary.metrics.session.handshakes_completed,
            summary.noise_links,
            summary.run_events,
            summary.process_requests,
            summary.process_spawns,
            summary.run_frames_sent,
            summary.drops_events,
            summary.drop_frames_sent,
        );
        save(dir, &data);
    }
}
