//! Property tests (quickcheck) for the wire format:
//!
//! * every message variant survives message -> frame (compressed or not) -> parse -> payload ->
//!   decode unchanged, and compression really happens for some generated frames;
//! * every replication message over any of its limits (§22.2) is malformed;
//! * version vectors: `compare` is antisymmetric and is the counters' pointwise order, `merged`
//!   is the least version descending from both (commutative, associative, idempotent), `bumped`
//!   is newer by one counter, and both keep a version well formed within
//!   `VERSION_COUNTERS_MAX` counters;
//! * the mesh-repair generators reach their limits and only make valid ranges, and breaking any
//!   one range, or a repair's sequence number, makes the payload malformed;
//! * a stream of valid frames decodes identically through `FrameDecoder` however it is cut: in
//!   two pieces at every byte boundary, one byte at a time, or in random chunks;
//! * arbitrary bytes never make `FrameDecoder`, `Frame::parse` or `Message::decode` panic, and the
//!   two receive paths agree on what they make of them.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use quickcheck::{Arbitrary, Gen, QuickCheck};
use weft_protocol::compress::{compress_if_smaller, COMPRESS_PAYLOAD_BYTES_MIN};
use weft_protocol::{
    Block, BlockHash, Counter, Deleted, FileEntry, FileKind, FolderId, HereIs, IDeleted, IHave,
    IMoved, IRefuse, IWant, List, Moved, NotFound, PathRefusal, ReplicaMessage, Version,
    VersionOrder, BLOCK_BYTES_MAX, HEREIS_DATA_BYTES_MAX, INDEX_ENTRIES_MAX, PATH_BYTES_MAX,
    VERSION_COUNTERS_MAX, WANT_HASHES_MAX,
};
use weft_protocol::{
    Broadcast, ByeReason, CascadeId, Code, DigestEntry, Frame, FrameDecoder, Hello, HelloAck,
    ICanSee, ICantSee, IKnowAbout, MeshDigest, MeshWant, Message, NetworkId, NodeId, OriginProof,
    PeerInfo, Ping, Pong, ProtocolError, PublicKey, SeqRange, Signature, WantRange, ADDR_BYTES_MAX,
    DIGEST_ENTRIES_MAX, FRAME_BODY_BYTES_MAX, HEADER_BYTES, PAYLOAD_BYTES_MAX,
    PEERS_PER_MESSAGE_MAX, RANGES_PER_ENTRY_MAX, WANT_RANGES_MAX,
};
use weft_protocol::{
    BucketHash, ChordFetch, ChordFind, ChordFound, ChordHandover, ChordMessage, ChordPeer,
    ChordRecord, ChordState, ChordStore, ChordStored, ChordValue, ChordValues, Hlc, StoreOp,
    StoreOutcome, TableDigest, TableEntries, TableWant, TableWrite, CHORD_KEY_BYTES_MAX,
    CHORD_PEERS_MAX, CHORD_VALUES_MAX, CHORD_VALUE_BYTES_MAX, HANDOVER_RECORDS_MAX, TABLE_BUCKETS,
    TABLE_KEY_BYTES_MAX, TABLE_OPS_PER_MESSAGE_MAX,
};
use weft_protocol::{
    DropFile, DropFiles, DropGetFiles, DropGetVersion, DropHeads, DropId, DropManifest,
    DropMessage, DropNotFound, DropOwners, DropSubscribe, DropUnsubscribe, RootHasher, VersionId,
    DROP_FILES_BATCH_MAX, DROP_FILES_MAX, DROP_HEADS_MAX, DROP_PARENTS_MAX,
    DROP_SECONDARY_OWNERS_MAX,
};
use weft_protocol::{
    ExitStatus, OutputStream, RunAck, RunExit, RunFolder, RunMessage, RunOutput, RunRefusalReason,
    RunRefused, RunRequest, RunSignal, RunSignalKind, RunStarted, SyncPoint, RUN_OUTPUT_BYTES_MAX,
    RUN_REASON_BYTES_MAX,
};

/// Every `ByeReason`, in wire order (checked by `bye_reason_list_is_complete`).
const ALL_REASONS: [ByeReason; 10] = [
    ByeReason::Shutdown,
    ByeReason::DuplicateLink,
    ByeReason::WrongNetwork,
    ByeReason::TooManyConnections,
    ByeReason::SlowPeer,
    ByeReason::ProtocolViolation,
    ByeReason::BadProof,
    ByeReason::Timeout,
    ByeReason::Requested,
    ByeReason::StaleIncarnation,
];

// =============================================================================================
// Generators

/// A uniform-ish number in `0..n` (`n > 0`).
fn below(g: &mut Gen, n: usize) -> usize {
    (u64::arbitrary(g) % n as u64) as usize
}

/// True with probability about `1/n`.
fn one_in(g: &mut Gen, n: usize) -> bool {
    below(g, n) == 0
}

/// 32 bytes: random, one byte repeated, or a short cycle (the last two compress well).
fn bytes32(g: &mut Gen) -> [u8; 32] {
    let mut out = [0u8; 32];
    match below(g, 3) {
        0 => out.iter_mut().for_each(|b| *b = u8::arbitrary(g)),
        1 => out = [u8::arbitrary(g); 32],
        _ => {
            let cycle = [u8::arbitrary(g), u8::arbitrary(g), u8::arbitrary(g)];
            out.iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = cycle[i % 3]);
        }
    }
    out
}

fn bytes64(g: &mut Gen) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&bytes32(g));
    if one_in(g, 2) {
        out[32..].copy_from_slice(&bytes32(g));
    } else {
        out.copy_within(..32, 32);
    }
    out
}

/// A string cut to at most `max` bytes on a char boundary.
fn cut_to(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

/// An address within `ADDR_BYTES_MAX` bytes: realistic, random unicode, or right at the limit.
fn addr(g: &mut Gen) -> String {
    match below(g, 5) {
        0 => format!(
            "{}.{}.{}.{}:{}",
            u8::arbitrary(g),
            u8::arbitrary(g),
            u8::arbitrary(g),
            u8::arbitrary(g),
            u16::arbitrary(g)
        ),
        1 => cut_to(String::arbitrary(g), ADDR_BYTES_MAX),
        // Exactly at the limit, in one-byte chars.
        2 => "a".repeat(ADDR_BYTES_MAX),
        // At the limit in multi-byte chars (256 = 64 * 4 bytes).
        3 => "\u{1F600}".repeat(ADDR_BYTES_MAX / 4),
        _ => String::new(),
    }
}

fn opt_addr(g: &mut Gen) -> Option<String> {
    if one_in(g, 3) {
        None
    } else {
        Some(addr(g))
    }
}

fn node(g: &mut Gen) -> NodeId {
    NodeId(bytes32(g))
}

/// Up to `PEERS_PER_MESSAGE_MAX` peers (`big`; else up to 6), sometimes exactly the limit,
/// sometimes all alike.
fn peers(g: &mut Gen, big: bool) -> Vec<PeerInfo> {
    let max = if big { PEERS_PER_MESSAGE_MAX } else { 6 };
    let n = match below(g, 4) {
        0 => max,
        1 => 0,
        _ => below(g, max + 1),
    };
    let alike = one_in(g, 2);
    let first = PeerInfo {
        node: node(g),
        addr: addr(g),
    };
    (0..n)
        .map(|_| {
            if alike {
                first.clone()
            } else {
                PeerInfo {
                    node: node(g),
                    addr: addr(g),
                }
            }
        })
        .collect()
}

fn cascade(g: &mut Gen) -> CascadeId {
    CascadeId {
        origin: node(g),
        seq: u64::arbitrary(g),
    }
}

/// Application bytes for a broadcast. `big` allows repetitive payloads up to 256 KiB.
fn blob(g: &mut Gen, big: bool) -> Vec<u8> {
    let max_rep = if big { 256 * 1024 } else { 1200 };
    match below(g, 6) {
        0 => Vec::new(),
        1 => Vec::<u8>::arbitrary(g),
        // Right around the compression threshold.
        2 => {
            let len = COMPRESS_PAYLOAD_BYTES_MIN - 2 + below(g, 4);
            vec![u8::arbitrary(g); len]
        }
        // Random noise long enough to be worth trying to compress (it will not shrink).
        3 => (0..COMPRESS_PAYLOAD_BYTES_MIN + below(g, 512))
            .map(|_| u8::arbitrary(g))
            .collect(),
        // A short random pattern repeated: compresses.
        _ => {
            let pattern: Vec<u8> = (0..1 + below(g, 16)).map(|_| u8::arbitrary(g)).collect();
            let len = COMPRESS_PAYLOAD_BYTES_MIN + below(g, max_rep - COMPRESS_PAYLOAD_BYTES_MIN);
            pattern.iter().copied().cycle().take(len).collect()
        }
    }
}

fn gen_hello(g: &mut Gen) -> Hello {
    Hello {
        network: NetworkId(bytes32(g)),
        public_key: PublicKey(bytes32(g)),
        nonce: bytes32(g),
        incarnation: u64::arbitrary(g),
        listen_addr: opt_addr(g),
        capabilities: u32::arbitrary(g),
        families: u32::arbitrary(g),
        dedicated: Option::<u8>::arbitrary(g),
    }
}

fn gen_icansee(g: &mut Gen, big: bool) -> ICanSee {
    ICanSee {
        cascade: cascade(g),
        hops_left: u8::arbitrary(g),
        origin_addr: opt_addr(g),
        peers: peers(g, big),
    }
}

fn gen_iknowabout(g: &mut Gen, big: bool) -> IKnowAbout {
    IKnowAbout {
        cascade: cascade(g),
        hops_left: u8::arbitrary(g),
        peers: peers(g, big),
    }
}

fn gen_icantsee(g: &mut Gen) -> ICantSee {
    ICantSee {
        cascade: cascade(g),
        hops_left: u8::arbitrary(g),
        lost: node(g),
    }
}

/// A sequence number for a range end: small, huge, at either extreme, or anywhere.
fn seq_value(g: &mut Gen) -> u64 {
    match below(g, 5) {
        0 => 1,
        1 => u64::MAX,
        2 => 1 + below(g, 1000) as u64,
        3 => u64::MAX - below(g, 1000) as u64,
        _ => u64::arbitrary(g).max(1),
    }
}

/// A valid range (`1 <= first <= last`): a single number, a short run, or any two numbers.
fn seq_range(g: &mut Gen) -> SeqRange {
    match below(g, 3) {
        0 => {
            let s = seq_value(g);
            SeqRange { first: s, last: s }
        }
        1 => {
            let first = seq_value(g);
            let last = first.saturating_add(below(g, 64) as u64);
            SeqRange { first, last }
        }
        _ => {
            let (a, b) = (seq_value(g), seq_value(g));
            SeqRange {
                first: a.min(b),
                last: a.max(b),
            }
        }
    }
}

/// A count for a list limited to `max`: zero, exactly the limit, or anything in between.
fn count_up_to(g: &mut Gen, max: usize) -> usize {
    match below(g, 6) {
        0 => 0,
        1 => max,
        _ => below(g, max + 1),
    }
}

/// Up to `max` valid ranges: ascending and disjoint as a digest sends them, or (the codec does
/// not check the order) any valid ranges in any order.
fn seq_ranges(g: &mut Gen, max: usize) -> Vec<SeqRange> {
    let n = count_up_to(g, max);
    if one_in(g, 3) {
        return (0..n).map(|_| seq_range(g)).collect();
    }
    let mut next = if one_in(g, 4) {
        1
    } else {
        1 + below(g, 1 << 20) as u64
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // Each range and the gap after it take under 2000: leave room for those still to come.
        let room = u64::MAX - next - (n - i) as u64 * 2000;
        let first = next + if one_in(g, 8) { room / 2 } else { 0 };
        let last = first + below(g, 1000) as u64;
        out.push(SeqRange { first, last });
        next = last + 2 + below(g, 1000) as u64;
    }
    out
}

/// A digest within its limits. `big` allows up to `DIGEST_ENTRIES_MAX` entries of up to
/// `RANGES_PER_ENTRY_MAX` ranges; past 16 entries, only the (repeated) first entry may have
/// many ranges and the rest at most two, to keep the size reasonable. Without `big`, a few
/// entries of a few ranges.
fn gen_digest(g: &mut Gen, big: bool) -> MeshDigest {
    let (max_entries, max_ranges) = if big {
        (DIGEST_ENTRIES_MAX, RANGES_PER_ENTRY_MAX)
    } else {
        (4, 4)
    };
    let n = count_up_to(g, max_entries);
    // Many entries: mostly copies of one (compresses well), or small distinct ones.
    let alike = n > 16 || one_in(g, 3);
    let entry = |g: &mut Gen, ranges: usize| DigestEntry {
        origin: node(g),
        incarnation: if one_in(g, 2) {
            below(g, 8) as u64
        } else {
            u64::arbitrary(g)
        },
        ranges: seq_ranges(g, ranges),
    };
    let first = entry(g, max_ranges);
    let rest = if n > 16 { 2 } else { max_ranges };
    let entries = (0..n)
        .map(|i| {
            if i == 0 || (alike && !one_in(g, 16)) {
                first.clone()
            } else {
                entry(g, rest)
            }
        })
        .collect();
    MeshDigest { entries }
}

/// A want list within `WANT_RANGES_MAX` (`big`; else up to 6), often for a few origins.
fn gen_want(g: &mut Gen, big: bool) -> MeshWant {
    let max = if big { WANT_RANGES_MAX } else { 6 };
    let n = count_up_to(g, max);
    let origins: Vec<(NodeId, u64)> = (0..1 + below(g, 4))
        .map(|_| (node(g), u64::arbitrary(g)))
        .collect();
    let wants = (0..n)
        .map(|_| {
            let (origin, incarnation) = *g.choose(&origins).unwrap();
            WantRange {
                origin,
                incarnation,
                range: seq_range(g),
            }
        })
        .collect();
    MeshWant { wants }
}

/// Bytes of length `0..=max`, sometimes exactly `max`, sometimes compressible.
fn byte_string(g: &mut Gen, max: usize) -> Vec<u8> {
    let n = count_up_to(g, max);
    if one_in(g, 2) {
        vec![u8::arbitrary(g); n]
    } else {
        (0..n).map(|_| u8::arbitrary(g)).collect()
    }
}

/// A valid table write: key 1..=limit bytes (`big`; else up to 16), a value or a delete, a
/// lease only on a set and always after the write's own time, a node that is its public key's
/// hash (the signature is random: the codec does not check it).
fn gen_table_write(g: &mut Gen, big: bool) -> TableWrite {
    let key_max = if big { TABLE_KEY_BYTES_MAX } else { 16 };
    let mut key = byte_string(g, key_max);
    if key.is_empty() {
        key.push(u8::arbitrary(g));
    }
    let value = (!one_in(g, 4)).then(|| byte_string(g, if big { 4096 } else { 32 }));
    let ms = u64::arbitrary(g) % (u64::MAX - 1);
    let lease_until_ms = match value {
        Some(_) if one_in(g, 3) => Some(ms + 1 + u64::arbitrary(g) % (u64::MAX - ms - 1)),
        _ => None,
    };
    let public_key = PublicKey(node(g).0);
    let mut signature = [0u8; 64];
    signature.iter_mut().for_each(|b| *b = u8::arbitrary(g));
    TableWrite {
        hlc: Hlc {
            ms,
            logical: u32::arbitrary(g),
        },
        node: NodeId::from_public_key(&public_key),
        incarnation: u64::arbitrary(g),
        key,
        value,
        lease_until_ms,
        public_key,
        signature: Signature(signature),
    }
}

/// A bucket width and ascending distinct buckets, sometimes all of them.
fn gen_buckets(g: &mut Gen) -> (u8, Vec<u16>) {
    let bits = below(g, 9) as u8;
    let count = 1u16 << bits;
    assert!(count <= TABLE_BUCKETS);
    if one_in(g, 6) {
        return (bits, (0..count).collect());
    }
    (bits, (0..count).filter(|_| one_in(g, 3)).collect())
}

fn gen_table_digest(g: &mut Gen) -> TableDigest {
    let (bits, buckets) = gen_buckets(g);
    TableDigest {
        bits,
        buckets: buckets
            .into_iter()
            .map(|bucket| BucketHash {
                bucket,
                hash: bytes32(g)[..8].try_into().unwrap(),
            })
            .collect(),
    }
}

fn gen_table_entries(g: &mut Gen, big: bool) -> TableEntries {
    let max = if big { TABLE_OPS_PER_MESSAGE_MAX } else { 4 };
    let n = if big && one_in(g, 4) {
        max
    } else {
        below(g, 5.min(max) + 1)
    };
    TableEntries {
        writes: (0..n).map(|_| gen_table_write(g, false)).collect(),
    }
}

/// Every range of a digest is valid and every list within its limit.
fn assert_digest_valid(d: &MeshDigest) {
    assert!(d.entries.len() <= DIGEST_ENTRIES_MAX);
    for e in &d.entries {
        assert!(e.ranges.len() <= RANGES_PER_ENTRY_MAX);
        for r in &e.ranges {
            assert!(1 <= r.first && r.first <= r.last, "{r:?}");
        }
    }
}

/// Every range of a want list is valid and the list within its limit.
fn assert_want_valid(w: &MeshWant) {
    assert!(w.wants.len() <= WANT_RANGES_MAX);
    for r in &w.wants {
        assert!(1 <= r.range.first && r.range.first <= r.range.last, "{r:?}");
    }
}

/// A broadcast (or repair) owning its payload (`Broadcast` borrows it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedBroadcast {
    origin: NodeId,
    incarnation: u64,
    seq: u64,
    payload: Vec<u8>,
    proof: Option<OriginProof>,
}

impl OwnedBroadcast {
    fn gen(g: &mut Gen, big: bool) -> OwnedBroadcast {
        OwnedBroadcast {
            origin: node(g),
            incarnation: u64::arbitrary(g),
            seq: u64::arbitrary(g).max(1),
            payload: blob(g, big),
            proof: bool::arbitrary(g).then(|| OriginProof {
                public_key: PublicKey(node(g).0),
                signature: Signature([u8::arbitrary(g); 64]),
            }),
        }
    }

    fn borrow(&self) -> Broadcast<'_> {
        Broadcast {
            origin: self.origin,
            incarnation: self.incarnation,
            seq: self.seq,
            payload: &self.payload,
            proof: self.proof,
        }
    }

    fn as_message(&self) -> Message<'_> {
        Message::Broadcast(self.borrow())
    }

    fn as_repair(&self) -> Message<'_> {
        Message::MeshRepair(self.borrow())
    }
}

/// Any message, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    /// Every variant but BROADCAST, MESH_REPAIR and HEREIS borrows nothing.
    Plain(Message<'static>),
    Broadcast(OwnedBroadcast),
    Repair(OwnedBroadcast),
    HereIs(OwnedHereIs),
    RunOutput(OwnedRunOutput),
}

impl Owned {
    fn as_message(&self) -> Message<'_> {
        match self {
            Owned::Plain(m) => m.clone(),
            Owned::Broadcast(b) => b.as_message(),
            Owned::Repair(b) => b.as_repair(),
            Owned::HereIs(h) => h.as_message(),
            Owned::RunOutput(o) => o.as_message(),
        }
    }

    /// One of the forty-nine variants, chosen uniformly.
    fn gen(g: &mut Gen, big: bool) -> Owned {
        Owned::Plain(match below(g, 49) {
            0 => Message::Hello(gen_hello(g)),
            1 => Message::HelloAck(HelloAck {
                signature: Signature(bytes64(g)),
            }),
            2 => Message::Ping(Ping {
                nonce: u64::arbitrary(g),
            }),
            3 => Message::Pong(Pong {
                nonce: u64::arbitrary(g),
            }),
            4 => Message::Bye(*g.choose(&ALL_REASONS).unwrap()),
            5 => Message::ICanSee(gen_icansee(g, big)),
            6 => Message::IKnowAbout(gen_iknowabout(g, big)),
            7 => Message::ICantSee(gen_icantsee(g)),
            8 => return Owned::Broadcast(OwnedBroadcast::gen(g, big)),
            9 => Message::MeshDigest(gen_digest(g, big)),
            10 => Message::MeshWant(gen_want(g, big)),
            11 => Message::TableWrite(gen_table_write(g, big)),
            12 => Message::TableDigest(gen_table_digest(g)),
            13 => {
                let (bits, buckets) = gen_buckets(g);
                let held = (0..usize::arbitrary(g) % 40)
                    .map(|_| u64::arbitrary(g).to_le_bytes())
                    .collect();
                let salt = u64::arbitrary(g);
                Message::TableWant(TableWant {
                    bits,
                    buckets,
                    salt,
                    held,
                })
            }
            14 => Message::TableEntries(gen_table_entries(g, big)),
            15 => return Owned::Repair(OwnedBroadcast::gen(g, big)),
            chord @ 16..26 => Message::Chord(gen_chord(g, chord - 16, big)),
            replica @ 26..34 => return gen_replica(g, replica - 26, big),
            drop @ 34..42 => Message::Drop(gen_drop(g, drop - 34, big)),
            run => return gen_run(g, run - 42, big),
        })
    }
}

fn chord_peers(g: &mut Gen, big: bool) -> Vec<ChordPeer> {
    let n = if big && one_in(g, 8) {
        CHORD_PEERS_MAX
    } else {
        below(g, 5)
    };
    (0..n)
        .map(|_| ChordPeer {
            node: node(g),
            addr: addr(g),
        })
        .collect()
}

fn chord_bytes(g: &mut Gen, max: usize, big: bool) -> Vec<u8> {
    let n = if big && one_in(g, 8) {
        max
    } else {
        below(g, 24)
    };
    (0..n).map(|_| u8::arbitrary(g)).collect()
}

fn chord_value(g: &mut Gen, big: bool) -> ChordValue {
    let mut signature = [0u8; 64];
    signature.iter_mut().for_each(|b| *b = u8::arbitrary(g));
    ChordValue {
        writer: PublicKey(signature[..32].try_into().expect("32 of 64 bytes")),
        seq: u64::arbitrary(g),
        op: match below(g, 3) {
            0 => StoreOp::Put(chord_bytes(g, CHORD_VALUE_BYTES_MAX, big)),
            1 => StoreOp::Delete(Some(chord_bytes(g, CHORD_VALUE_BYTES_MAX, big))),
            _ => StoreOp::Delete(None),
        },
        lifetime_ms: Option::<u64>::arbitrary(g),
        signature: Signature(signature),
    }
}

fn chord_values(g: &mut Gen, big: bool) -> Vec<ChordValue> {
    let n = if big && one_in(g, 8) {
        CHORD_VALUES_MAX
    } else {
        below(g, 4)
    };
    // Values at their limit only while the count is small, to keep payloads bounded.
    (0..n).map(|_| chord_value(g, big && n < 4)).collect()
}

/// Chord message number `variant` (0..10, code order), within every limit.
fn gen_chord(g: &mut Gen, variant: usize, big: bool) -> ChordMessage {
    let request = u64::arbitrary(g);
    let position = u64::arbitrary(g);
    match variant {
        0 => ChordMessage::Find(ChordFind {
            request,
            target: position,
        }),
        1 => ChordMessage::Found(ChordFound {
            request,
            done: bool::arbitrary(g),
            peers: chord_peers(g, big),
        }),
        2 => ChordMessage::GetState(request),
        3 => ChordMessage::State(ChordState {
            request,
            predecessor: chord_peers(g, false).into_iter().next(),
            successors: chord_peers(g, big),
        }),
        4 => ChordMessage::Notify,
        5 => ChordMessage::Store(ChordStore {
            request,
            position,
            key: chord_bytes(g, CHORD_KEY_BYTES_MAX, big),
            value: chord_value(g, big),
        }),
        6 => ChordMessage::Stored(ChordStored {
            request,
            outcome: StoreOutcome::ALL[below(g, StoreOutcome::ALL.len())],
        }),
        7 => ChordMessage::Fetch(ChordFetch {
            request,
            position,
            key: chord_bytes(g, CHORD_KEY_BYTES_MAX, big),
        }),
        8 => ChordMessage::Values(ChordValues {
            request,
            values: chord_values(g, big),
        }),
        _ => ChordMessage::Handover(ChordHandover {
            request,
            records: (0..if big && one_in(g, 16) {
                HANDOVER_RECORDS_MAX
            } else {
                below(g, 4)
            })
                .map(|_| ChordRecord {
                    position: u64::arbitrary(g),
                    key: chord_bytes(g, 16, false),
                    values: chord_values(g, false),
                })
                .collect(),
        }),
    }
}

/// A HEREIS owning its data (`HereIs` borrows it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedHereIs {
    folder: FolderId,
    hash: BlockHash,
    offset: u32,
    data: Vec<u8>,
}

impl OwnedHereIs {
    fn as_message(&self) -> Message<'_> {
        Message::Replica(ReplicaMessage::HereIs(HereIs {
            folder: self.folder,
            hash: self.hash,
            offset: self.offset,
            data: &self.data,
        }))
    }
}

fn folder(g: &mut Gen) -> FolderId {
    FolderId(bytes32(g)[..16].try_into().expect("16 of 32 bytes"))
}

/// A node's short id: mostly from a small pool (so that versions share nodes), else anything.
fn short_id(g: &mut Gen) -> u64 {
    if one_in(g, 3) {
        u64::arbitrary(g)
    } else {
        1 + below(g, 6) as u64
    }
}

/// A well-formed version: nodes ascending and distinct, counters 1.., usually a few counters of
/// small values, sometimes huge values (`u64::MAX` included) or up to `VERSION_COUNTERS_MAX`
/// counters (`big`).
fn gen_version(g: &mut Gen, big: bool) -> Version {
    let (n, many) = if big && one_in(g, 16) {
        (count_up_to(g, VERSION_COUNTERS_MAX), true)
    } else {
        (below(g, 5), false)
    };
    // Many counters take mostly nodes from anywhere, so that they stay many once deduplicated.
    let mut nodes: Vec<u64> = (0..n)
        .map(|_| {
            if many && !one_in(g, 8) {
                u64::arbitrary(g)
            } else {
                short_id(g)
            }
        })
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    Version {
        counters: nodes
            .into_iter()
            .map(|node| Counter {
                node,
                value: match below(g, 8) {
                    0 => u64::arbitrary(g).max(1),
                    1 => u64::MAX,
                    _ => 1 + below(g, 3) as u64,
                },
            })
            .collect(),
    }
}

/// A path or target within `PATH_BYTES_MAX` bytes: short, random unicode, or at the limit.
/// The codec does not check what a path says (the receiver does, §22.3).
fn path(g: &mut Gen, big: bool) -> String {
    match below(g, 4) {
        0 if big => "p".repeat(PATH_BYTES_MAX),
        1 => cut_to(String::arbitrary(g), PATH_BYTES_MAX),
        _ => format!("dir{}/file{}.txt", below(g, 4), below(g, 100)),
    }
}

fn file_kind(g: &mut Gen) -> FileKind {
    *g.choose(&[FileKind::File, FileKind::Directory, FileKind::Symlink])
        .expect("three kinds")
}

/// A file entry within the codec's limits. The codec checks neither the mode, nor that the
/// blocks tile the size, nor the kind against the blocks: any values round-trip.
fn gen_entry(g: &mut Gen, big: bool) -> FileEntry {
    let blocks = if big && one_in(g, 16) {
        64
    } else {
        below(g, 4)
    };
    FileEntry {
        path: path(g, big),
        kind: file_kind(g),
        target: if one_in(g, 2) {
            String::new()
        } else {
            path(g, false)
        },
        mode: u8::arbitrary(g),
        size: u64::arbitrary(g),
        mtime_ms: i64::arbitrary(g),
        modified_by: short_id(g),
        version: gen_version(g, big),
        sequence: u64::arbitrary(g),
        blocks: (0..blocks)
            .map(|_| Block {
                offset: u64::arbitrary(g),
                len: u32::arbitrary(g),
                hash: bytes32(g),
            })
            .collect(),
    }
}

/// How many entries a batch gets: up to `INDEX_ENTRIES_MAX` (`big`, rarely), else a few.
fn batch_len(g: &mut Gen, big: bool) -> usize {
    if big && one_in(g, 16) {
        INDEX_ENTRIES_MAX
    } else {
        below(g, 4)
    }
}

fn hashes(g: &mut Gen, big: bool) -> Vec<BlockHash> {
    let n = if big && one_in(g, 8) {
        count_up_to(g, WANT_HASHES_MAX)
    } else {
        below(g, 5)
    };
    (0..n).map(|_| bytes32(g)).collect()
}

/// HEREIS: 1 to `HEREIS_DATA_BYTES_MAX` data bytes (`big`; else up to 64), at an offset that
/// keeps the piece inside `BLOCK_BYTES_MAX`.
fn gen_here_is(g: &mut Gen, big: bool) -> OwnedHereIs {
    let len = if big && one_in(g, 4) {
        1 + count_up_to(g, HEREIS_DATA_BYTES_MAX - 1)
    } else {
        1 + below(g, 64)
    };
    let room = BLOCK_BYTES_MAX as u64 - len as u64;
    let offset = match below(g, 3) {
        0 => 0,
        1 => room,
        _ => u64::arbitrary(g) % (room + 1),
    };
    OwnedHereIs {
        folder: folder(g),
        hash: bytes32(g),
        offset: offset.try_into().expect("below BLOCK_BYTES_MAX"),
        data: if one_in(g, 2) {
            vec![u8::arbitrary(g); len]
        } else {
            (0..len).map(|_| u8::arbitrary(g)).collect()
        },
    }
}

/// Replication message number `variant` (0..8, code order), within every limit; HEREIS is
/// the one that borrows.
fn gen_replica(g: &mut Gen, variant: usize, big: bool) -> Owned {
    let folder = folder(g);
    let index_id = u64::arbitrary(g);
    Owned::Plain(Message::Replica(match variant {
        0 => ReplicaMessage::List(List {
            folder,
            index_id,
            since: u64::arbitrary(g),
        }),
        1 => ReplicaMessage::IHave(IHave {
            folder,
            index_id,
            entries: (0..batch_len(g, big))
                .map(|_| gen_entry(g, false))
                .collect(),
        }),
        2 => ReplicaMessage::IMoved(IMoved {
            folder,
            index_id,
            entries: (0..batch_len(g, big))
                .map(|_| Moved {
                    from: path(g, false),
                    from_version: gen_version(g, false),
                    to: gen_entry(g, false),
                })
                .collect(),
        }),
        3 => ReplicaMessage::IDeleted(IDeleted {
            folder,
            index_id,
            entries: (0..batch_len(g, big))
                .map(|_| Deleted {
                    path: path(g, false),
                    kind: file_kind(g),
                    modified_by: short_id(g),
                    version: gen_version(g, false),
                    sequence: u64::arbitrary(g),
                })
                .collect(),
        }),
        4 => ReplicaMessage::IWant(IWant {
            folder,
            hashes: hashes(g, big),
        }),
        5 => return Owned::HereIs(gen_here_is(g, big)),
        6 => ReplicaMessage::NotFound(NotFound {
            folder,
            hashes: hashes(g, big),
        }),
        _ => ReplicaMessage::IRefuse(IRefuse {
            folder,
            path: path(g, big),
            reason: *g.choose(&PathRefusal::ALL).expect("ten reasons"),
        }),
    }))
}

/// A RUN_OUTPUT owning its data (`RunOutput` borrows it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedRunOutput {
    run: u64,
    seq: u64,
    stream: OutputStream,
    data: Vec<u8>,
}

impl OwnedRunOutput {
    fn as_message(&self) -> Message<'_> {
        Message::Run(RunMessage::Output(RunOutput {
            run: self.run,
            seq: self.seq,
            stream: self.stream,
            data: &self.data,
        }))
    }
}

/// Remote-run message number `variant` (0..7, code order), within every limit; RUN_OUTPUT
/// is the one that borrows.
fn gen_run(g: &mut Gen, variant: usize, big: bool) -> Owned {
    let run = u64::arbitrary(g);
    let text = |g: &mut Gen, max: usize| -> String {
        (0..below(g, max))
            .map(|_| char::from(b'a' + below(g, 26) as u8))
            .collect()
    };
    Owned::Plain(Message::Run(match variant {
        0 => RunMessage::Request(RunRequest {
            run,
            program: format!("p{}", text(g, 20)),
            args: (0..below(g, if big { 200 } else { 6 }))
                .map(|_| text(g, 30))
                .collect(),
            shell: bool::arbitrary(g),
            folder: bool::arbitrary(g).then(|| RunFolder {
                id: folder(g),
                index_id: u64::arbitrary(g),
                sequence: u64::arbitrary(g),
            }),
        }),
        1 => RunMessage::Refused(RunRefused {
            run,
            reason: *g.choose(&RunRefusalReason::ALL).expect("seven reasons"),
            text: text(g, RUN_REASON_BYTES_MAX),
        }),
        2 => RunMessage::Started(RunStarted { run }),
        3 => {
            let len = if big && one_in(g, 4) {
                1 + count_up_to(g, RUN_OUTPUT_BYTES_MAX - 1)
            } else {
                1 + below(g, 64)
            };
            return Owned::RunOutput(OwnedRunOutput {
                run,
                seq: u64::arbitrary(g),
                stream: if bool::arbitrary(g) {
                    OutputStream::Stdout
                } else {
                    OutputStream::Stderr
                },
                data: (0..len).map(|_| u8::arbitrary(g)).collect(),
            });
        }
        4 => RunMessage::Ack(RunAck {
            run,
            bytes: u64::arbitrary(g),
        }),
        5 => RunMessage::Signal(RunSignal {
            run,
            signal: if bool::arbitrary(g) {
                RunSignalKind::Interrupt
            } else {
                RunSignalKind::Kill
            },
        }),
        _ => RunMessage::Exit(RunExit {
            run,
            status: if bool::arbitrary(g) {
                ExitStatus::Code(u8::arbitrary(g))
            } else {
                ExitStatus::Signal(u8::arbitrary(g))
            },
            outputs: u64::arbitrary(g),
            copy: bool::arbitrary(g).then(|| SyncPoint {
                index_id: u64::arbitrary(g),
                sequence: u64::arbitrary(g),
            }),
        }),
    }))
}

/// `n` distinct 32-byte strings, ascending (`n` at most 256).
fn ascending32(g: &mut Gen, n: usize) -> Vec<[u8; 32]> {
    let mut out: Vec<[u8; 32]> = (0..n)
        .map(|i| {
            let mut b = bytes32(g);
            b[0] = i as u8;
            b
        })
        .collect();
    out.sort();
    out
}

/// A drop manifest keeping every rule the codec checks (not signed: the codec does not check
/// signatures).
fn gen_manifest(g: &mut Gen, big: bool) -> DropManifest {
    let parents = count_up_to(g, DROP_PARENTS_MAX);
    let secondary = if big {
        count_up_to(g, DROP_SECONDARY_OWNERS_MAX)
    } else {
        below(g, 3)
    };
    let mut primary = bytes32(g);
    primary[0] = 0xFF; // the secondary owners' first bytes are their indexes
    DropManifest {
        drop: DropId(bytes32(g)),
        nonce: bytes32(g)[..16].try_into().expect("16 of 32 bytes"),
        counter: 1 + u64::arbitrary(g) % u64::MAX,
        parents: ascending32(g, parents).into_iter().map(VersionId).collect(),
        owners: DropOwners {
            primary: PublicKey(primary),
            secondary: ascending32(g, secondary)
                .into_iter()
                .map(PublicKey)
                .collect(),
        },
        root: bytes32(g),
        files: u32::arbitrary(g) % (DROP_FILES_MAX + 1),
        bytes: u64::arbitrary(g),
        signer: PublicKey(bytes32(g)),
        signature: Signature(bytes64(g)),
    }
}

/// A drop file within the codec's limits (any mode, size and blocks: the codec does not check
/// that they fit together).
fn gen_drop_file(g: &mut Gen, path: String, big: bool) -> DropFile {
    let blocks = if big && one_in(g, 16) {
        64
    } else {
        below(g, 4)
    };
    DropFile {
        path,
        kind: file_kind(g),
        mode: u8::arbitrary(g),
        size: u64::arbitrary(g),
        target: one_in(g, 2).then(|| self::path(g, false)),
        blocks: (0..blocks)
            .map(|_| Block {
                offset: u64::arbitrary(g),
                len: u32::arbitrary(g),
                hash: bytes32(g),
            })
            .collect(),
    }
}

/// `n` distinct paths, ascending.
fn ascending_paths(g: &mut Gen, n: usize, big: bool) -> Vec<String> {
    let mut paths: Vec<String> = (0..n)
        .map(|i| format!("{i:04}/{}", cut_to(path(g, big), PATH_BYTES_MAX - 5)))
        .collect();
    paths.sort();
    paths
}

/// Drop message number `variant` (0..8, code order), within every limit.
fn gen_drop(g: &mut Gen, variant: usize, big: bool) -> DropMessage {
    let drop = DropId(bytes32(g));
    let version = VersionId(bytes32(g));
    match variant {
        0 => DropMessage::Subscribe(DropSubscribe { drop }),
        1 => DropMessage::Unsubscribe(DropUnsubscribe { drop }),
        2 => {
            let n = count_up_to(g, DROP_HEADS_MAX);
            DropMessage::Heads(DropHeads {
                drop,
                heads: ascending32(g, n).into_iter().map(VersionId).collect(),
            })
        }
        3 => DropMessage::GetVersion(DropGetVersion { drop, version }),
        4 => DropMessage::Version(Box::new(gen_manifest(g, big))),
        5 => DropMessage::GetFiles(DropGetFiles {
            drop,
            version,
            from: u32::arbitrary(g),
        }),
        6 => {
            let n = if big && one_in(g, 16) {
                DROP_FILES_BATCH_MAX
            } else {
                below(g, 4)
            };
            let files: Vec<DropFile> = ascending_paths(g, n, big)
                .into_iter()
                .map(|p| gen_drop_file(g, p, big))
                .collect();
            let room = DROP_FILES_MAX - n as u32;
            DropMessage::Files(DropFiles {
                drop,
                version,
                from: match below(g, 3) {
                    0 => 0,
                    1 => room,
                    _ => u32::arbitrary(g) % (room + 1),
                },
                files,
            })
        }
        _ => DropMessage::NotFound(DropNotFound { drop, version }),
    }
}

/// Newtypes so that quickcheck can generate each variant on its own.
macro_rules! arbitrary_newtype {
    ($name:ident($ty:ty), |$g:ident| $body:expr) => {
        #[derive(Debug, Clone)]
        struct $name($ty);
        impl Arbitrary for $name {
            fn arbitrary($g: &mut Gen) -> Self {
                $name($body)
            }
        }
    };
}

arbitrary_newtype!(ArbHello(Hello), |g| gen_hello(g));
arbitrary_newtype!(ArbHelloAck(HelloAck), |g| HelloAck {
    signature: Signature(bytes64(g))
});
arbitrary_newtype!(ArbPing(Ping), |g| Ping {
    nonce: u64::arbitrary(g)
});
arbitrary_newtype!(ArbPong(Pong), |g| Pong {
    nonce: u64::arbitrary(g)
});
arbitrary_newtype!(ArbBye(ByeReason), |g| *g.choose(&ALL_REASONS).unwrap());
arbitrary_newtype!(ArbICanSee(ICanSee), |g| gen_icansee(g, true));
arbitrary_newtype!(ArbIKnowAbout(IKnowAbout), |g| gen_iknowabout(g, true));
arbitrary_newtype!(ArbICantSee(ICantSee), |g| gen_icantsee(g));
arbitrary_newtype!(ArbBroadcast(OwnedBroadcast), |g| OwnedBroadcast::gen(
    g, true
));
arbitrary_newtype!(ArbMeshDigest(MeshDigest), |g| gen_digest(g, true));
arbitrary_newtype!(ArbMeshWant(MeshWant), |g| gen_want(g, true));
arbitrary_newtype!(ArbMessage(Owned), |g| Owned::gen(g, true));
arbitrary_newtype!(ArbTableWrite(TableWrite), |g| gen_table_write(g, true));
arbitrary_newtype!(ArbTableDigest(TableDigest), |g| gen_table_digest(g));
arbitrary_newtype!(ArbTableEntries(TableEntries), |g| gen_table_entries(
    g, true
));
arbitrary_newtype!(ArbChord(ChordMessage), |g| {
    let variant = below(g, 10);
    gen_chord(g, variant, true)
});
arbitrary_newtype!(ArbReplica(Owned), |g| {
    let variant = below(g, 8);
    gen_replica(g, variant, true)
});
arbitrary_newtype!(ArbVersion(Version), |g| gen_version(g, true));
arbitrary_newtype!(ArbDropFiles(Vec<DropFile>), |g| valid_drop_files(g));
arbitrary_newtype!(ArbDrop(DropMessage), |g| {
    let variant = below(g, 8);
    gen_drop(g, variant, true)
});
// A message small enough (at most a few KiB) to be cut at every byte boundary.
arbitrary_newtype!(SmallMessage(Owned), |g| Owned::gen(g, false));
// One to four small messages, each with its own choice of compression.
arbitrary_newtype!(SmallStream(Vec<(Owned, bool)>), |g| {
    let n = 1 + below(g, 4);
    (0..n)
        .map(|_| (Owned::gen(g, false), bool::arbitrary(g)))
        .collect()
});

// =============================================================================================
// Round trips

/// message -> frame -> parse -> payload -> decode, uncompressed and with compression allowed.
/// Returns whether the compressed attempt actually compressed.
fn round_trip(msg: &Message<'_>) -> bool {
    let encoded = msg.encode_payload();
    let mut compressed = false;
    for compress in [false, true] {
        let frame = msg.to_frame(compress);
        assert_eq!(frame.code(), msg.code());
        let expect_packed = compress && compress_if_smaller(&encoded).is_some();
        assert_eq!(
            frame.flags().compressed(),
            expect_packed,
            "compress={compress}"
        );
        assert_eq!(
            frame.bytes().len(),
            HEADER_BYTES + frame.wire_payload().len(),
            "length prefix covers the whole frame"
        );
        if expect_packed {
            assert!(
                frame.wire_payload().len() < encoded.len(),
                "compression shrinks"
            );
            compressed = true;
        } else {
            assert_eq!(frame.wire_payload(), encoded);
        }

        let parsed = Frame::parse(frame.bytes().clone()).expect("own frame parses");
        assert_eq!(parsed, frame);
        let payload = parsed.payload().expect("own payload inflates");
        assert_eq!(payload, encoded);
        let decoded = Message::decode(parsed.code(), &payload).expect("own payload decodes");
        assert_eq!(&decoded, msg);
    }
    compressed
}

/// Runs `prop` `tests` times and returns how many generated frames were compressed.
fn check<A: Arbitrary + std::fmt::Debug>(
    tests: u64,
    counter: &'static AtomicUsize,
    prop: fn(A),
) -> usize {
    QuickCheck::new()
        .tests(tests)
        .max_tests(tests * 10)
        .quickcheck(prop);
    counter.load(Ordering::Relaxed)
}

fn count_if(counter: &AtomicUsize, yes: bool) {
    if yes {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn hello_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbHello) {
        count_if(&PACKED, round_trip(&Message::Hello(m.0)));
    }
    assert!(
        check(300, &PACKED, prop) > 0,
        "no HELLO frame was compressed"
    );
}

#[test]
fn hello_ack_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbHelloAck) {
        count_if(&PACKED, round_trip(&Message::HelloAck(m.0)));
    }
    assert_eq!(
        check(300, &PACKED, prop),
        0,
        "a HELLO_ACK (64 bytes) is under COMPRESS_PAYLOAD_BYTES_MIN: never compressed"
    );
}

#[test]
fn ping_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbPing) {
        count_if(&PACKED, round_trip(&Message::Ping(m.0)));
    }
    // At most 10 bytes of payload: below the compression threshold, never compressed.
    assert_eq!(check(300, &PACKED, prop), 0);
}

#[test]
fn pong_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbPong) {
        count_if(&PACKED, round_trip(&Message::Pong(m.0)));
    }
    assert_eq!(check(300, &PACKED, prop), 0);
}

#[test]
fn bye_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbBye) {
        count_if(&PACKED, round_trip(&Message::Bye(m.0)));
    }
    assert_eq!(check(100, &PACKED, prop), 0);
}

#[test]
fn every_bye_reason_round_trips() {
    for (index, reason) in ALL_REASONS.into_iter().enumerate() {
        let msg = Message::Bye(reason);
        assert_eq!(msg.encode_payload(), [index as u8], "{reason:?}");
        assert!(!round_trip(&msg));
    }
}

#[test]
fn bye_reason_list_is_complete() {
    // Every one-byte varint (0..128) and a few longer ones: exactly ALL_REASONS decode.
    let mut decoded = Vec::new();
    for index in (0u32..128).chain([128, 300, 1 << 20, u32::MAX]) {
        let mut payload = Vec::new();
        let mut v = index;
        while v >= 0x80 {
            payload.push((v as u8) | 0x80);
            v >>= 7;
        }
        payload.push(v as u8);
        match Message::decode(Code::BYE, &payload) {
            Ok(Message::Bye(r)) => decoded.push((index, r)),
            Ok(other) => panic!("BYE decoded as {other:?}"),
            Err(e) => assert!(
                matches!(
                    e,
                    ProtocolError::MalformedPayload {
                        code: Code::BYE,
                        ..
                    }
                ),
                "{e:?}"
            ),
        }
    }
    let expected: Vec<_> = ALL_REASONS
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as u32, r))
        .collect();
    assert_eq!(decoded, expected);
}

#[test]
fn icansee_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbICanSee) {
        count_if(&PACKED, round_trip(&Message::ICanSee(m.0)));
    }
    assert!(
        check(300, &PACKED, prop) > 0,
        "no ICANSEE frame was compressed"
    );
}

#[test]
fn iknowabout_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbIKnowAbout) {
        count_if(&PACKED, round_trip(&Message::IKnowAbout(m.0)));
    }
    assert!(
        check(300, &PACKED, prop) > 0,
        "no IKNOWABOUT frame was compressed"
    );
}

#[test]
fn icantsee_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbICantSee) {
        count_if(&PACKED, round_trip(&Message::ICantSee(m.0)));
    }
    assert_eq!(
        check(300, &PACKED, prop),
        0,
        "an ICANTSEE (at most 76 bytes) is under COMPRESS_PAYLOAD_BYTES_MIN: never compressed"
    );
}

#[test]
fn broadcast_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbBroadcast) {
        assert!(m.0.seq >= 1);
        count_if(&PACKED, round_trip(&m.0.as_message()));
    }
    assert!(
        check(300, &PACKED, prop) > 0,
        "no BROADCAST frame was compressed"
    );
}

#[test]
fn mesh_digest_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbMeshDigest) {
        assert_digest_valid(&m.0);
        count_if(&PACKED, round_trip(&Message::MeshDigest(m.0)));
    }
    assert!(
        check(200, &PACKED, prop) > 0,
        "no MESH_DIGEST frame was compressed"
    );
}

#[test]
fn mesh_want_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbMeshWant) {
        assert_want_valid(&m.0);
        count_if(&PACKED, round_trip(&Message::MeshWant(m.0)));
    }
    assert!(
        check(300, &PACKED, prop) > 0,
        "no MESH_WANT frame was compressed"
    );
}

#[test]
fn mesh_repair_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbBroadcast) {
        assert!(m.0.seq >= 1);
        count_if(&PACKED, round_trip(&m.0.as_repair()));
    }
    assert!(
        check(300, &PACKED, prop) > 0,
        "no MESH_REPAIR frame was compressed"
    );
}

#[test]
fn mesh_repair_payload_is_the_broadcast_payload() {
    // A node answers MESH_WANT by sending a held BROADCAST's payload under MESH_REPAIR.
    fn prop(m: ArbBroadcast) {
        let payload = m.0.as_message().encode_payload();
        assert_eq!(m.0.as_repair().encode_payload(), payload);
        assert_eq!(
            Message::decode(Code::MESH_REPAIR, &payload),
            Ok(m.0.as_repair())
        );
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(ArbBroadcast));
}

#[test]
fn the_mesh_generators_reach_their_limits() {
    let mut g = Gen::new(100);
    let (mut full_digest, mut full_entry, mut empty_digest, mut empty_entry) =
        (false, false, false, false);
    let (mut point, mut from_one, mut to_max, mut unordered) = (false, false, false, false);
    for _ in 0..300 {
        let d = gen_digest(&mut g, true);
        assert_digest_valid(&d);
        full_digest |= d.entries.len() == DIGEST_ENTRIES_MAX;
        empty_digest |= d.entries.is_empty();
        for e in &d.entries {
            full_entry |= e.ranges.len() == RANGES_PER_ENTRY_MAX;
            empty_entry |= e.ranges.is_empty();
            unordered |= e.ranges.windows(2).any(|w| w[0].last >= w[1].first);
            for r in &e.ranges {
                point |= r.first == r.last;
                from_one |= r.first == 1;
                to_max |= r.last == u64::MAX;
            }
        }
    }
    assert!(full_digest && full_entry && empty_digest && empty_entry);
    assert!(point && from_one && to_max && unordered);

    let (mut full_want, mut empty_want, mut point, mut from_one, mut to_max) =
        (false, false, false, false, false);
    for _ in 0..300 {
        let w = gen_want(&mut g, true);
        assert_want_valid(&w);
        full_want |= w.wants.len() == WANT_RANGES_MAX;
        empty_want |= w.wants.is_empty();
        for r in &w.wants {
            point |= r.range.first == r.range.last;
            from_one |= r.range.first == 1;
            to_max |= r.range.last == u64::MAX;
        }
    }
    assert!(full_want && empty_want && point && from_one && to_max);
}

#[test]
fn largest_mesh_digest_and_want_round_trip() {
    // Every list at its limit, every number at its widest varint: well within PAYLOAD_BYTES_MAX.
    let wide = SeqRange {
        first: u64::MAX - 1,
        last: u64::MAX,
    };
    let digest = Message::MeshDigest(MeshDigest {
        entries: (0..DIGEST_ENTRIES_MAX)
            .map(|i| DigestEntry {
                origin: NodeId([i as u8; 32]),
                incarnation: u64::MAX - i as u64,
                ranges: vec![wide; RANGES_PER_ENTRY_MAX],
            })
            .collect(),
    });
    let len = digest.encode_payload().len();
    // Entry count varint 2, then per entry: origin 32, incarnation 10, range count 1, and
    // 20 per range.
    assert_eq!(
        len,
        2 + DIGEST_ENTRIES_MAX * (32 + 10 + 1 + RANGES_PER_ENTRY_MAX * 20)
    );
    assert!(len <= PAYLOAD_BYTES_MAX);
    assert!(round_trip(&digest));

    let want = Message::MeshWant(MeshWant {
        wants: (0..WANT_RANGES_MAX)
            .map(|i| WantRange {
                origin: NodeId([i as u8; 32]),
                incarnation: u64::MAX,
                range: wide,
            })
            .collect(),
    });
    assert_eq!(
        want.encode_payload().len(),
        2 + WANT_RANGES_MAX * (32 + 10 + 20)
    );
    assert!(round_trip(&want));
}

/// Makes one range invalid: `first` 0, or `first` above `last`.
fn break_range(g: &mut Gen, r: &mut SeqRange) {
    match below(g, 3) {
        0 => r.first = 0,
        1 => {
            r.first = 0;
            r.last = 0;
        }
        _ => {
            let s = seq_value(g).max(2);
            r.first = s;
            r.last = s - 1 - (below(g, 1000) as u64).min(s - 2);
        }
    }
}

#[test]
fn any_invalid_range_or_repair_seq_zero_is_malformed() {
    fn prop(d: ArbMeshDigest, w: ArbMeshWant, b: ArbBroadcast, at: usize) {
        let mut g = Gen::new(10);
        let mut d = d.0;
        let mut ranges: Vec<&mut SeqRange> =
            d.entries.iter_mut().flat_map(|e| &mut e.ranges).collect();
        if !ranges.is_empty() {
            let i = at % ranges.len();
            break_range(&mut g, ranges[i]);
            let payload = Message::MeshDigest(d).encode_payload();
            assert_eq!(
                Message::decode(Code::MESH_DIGEST, &payload),
                Err(ProtocolError::MalformedPayload {
                    code: Code::MESH_DIGEST,
                    reason: "digest over its limits or with an invalid range",
                })
            );
        }
        let mut w = w.0;
        if !w.wants.is_empty() {
            let i = at % w.wants.len();
            break_range(&mut g, &mut w.wants[i].range);
            let payload = Message::MeshWant(w).encode_payload();
            assert_eq!(
                Message::decode(Code::MESH_WANT, &payload),
                Err(ProtocolError::MalformedPayload {
                    code: Code::MESH_WANT,
                    reason: "want list over its limit or with an invalid range",
                })
            );
        }
        let mut b = b.0;
        b.seq = 0;
        for (code, msg) in [
            (Code::BROADCAST, b.as_message()),
            (Code::MESH_REPAIR, b.as_repair()),
        ] {
            assert_eq!(
                Message::decode(code, &msg.encode_payload()),
                Err(ProtocolError::MalformedPayload {
                    code,
                    reason: "broadcast sequence 0",
                })
            );
        }
    }
    QuickCheck::new()
        .tests(150)
        .quickcheck(prop as fn(ArbMeshDigest, ArbMeshWant, ArbBroadcast, usize));
}

#[test]
fn table_messages_round_trip() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop((w, d, e): (ArbTableWrite, ArbTableDigest, ArbTableEntries)) {
        let want = TableWant {
            bits: d.0.bits,
            buckets: d.0.buckets.iter().map(|b| b.bucket).collect(),
            salt: u64::from(w.0.hlc.logical),
            held: d.0.buckets.iter().map(|b| b.hash).collect(),
        };
        for msg in [
            Message::TableWrite(w.0),
            Message::TableDigest(d.0),
            Message::TableWant(want),
            Message::TableEntries(e.0),
        ] {
            count_if(&PACKED, round_trip(&msg));
        }
    }
    assert!(
        check(200, &PACKED, prop) > 0,
        "no table frame was compressed"
    );
}

#[test]
fn breaking_a_table_rule_makes_the_payload_malformed() {
    fn prop(w: ArbTableWrite, d: ArbTableDigest, how: u8) {
        let mut w = w.0;
        match how % 4 {
            0 => w.key.clear(),
            1 => w.key = vec![b'k'; TABLE_KEY_BYTES_MAX + 1],
            2 => {
                w.value = Some(vec![1]);
                w.lease_until_ms = Some(w.hlc.ms);
            }
            _ => {
                w.value = None;
                w.lease_until_ms = Some(w.hlc.ms.saturating_add(1));
            }
        }
        let code = Code::TABLE_WRITE;
        assert!(matches!(
            Message::decode(code, &Message::TableWrite(w.clone()).encode_payload()),
            Err(ProtocolError::MalformedPayload { code: c, .. }) if c == code
        ));
        let entries = Message::TableEntries(TableEntries { writes: vec![w] });
        assert!(matches!(
            Message::decode(Code::TABLE_ENTRIES, &entries.encode_payload()),
            Err(ProtocolError::MalformedPayload { .. })
        ));
        let mut d = d.0;
        if d.buckets.len() >= 2 {
            d.buckets.swap(0, 1);
        } else {
            d.buckets.push(BucketHash {
                bucket: 1 << d.bits,
                hash: [0; 8],
            });
        }
        assert!(matches!(
            Message::decode(
                Code::TABLE_DIGEST,
                &Message::TableDigest(d).encode_payload()
            ),
            Err(ProtocolError::MalformedPayload { .. })
        ));
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(ArbTableWrite, ArbTableDigest, u8));
}

#[test]
fn any_message_round_trips() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbMessage) {
        count_if(&PACKED, round_trip(&m.0.as_message()));
    }
    assert!(check(500, &PACKED, prop) > 0, "no frame was compressed");
}

#[test]
fn chord_messages_round_trip() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbChord) {
        count_if(&PACKED, round_trip(&Message::Chord(m.0)));
    }
    check(300, &PACKED, prop);
}

#[test]
fn a_chord_message_over_any_limit_is_malformed() {
    fn prop(m: ArbChord, pick: usize) {
        let over = |n: usize| vec![7u8; n + 1];
        let extra_peer = ChordPeer {
            node: NodeId([1; 32]),
            addr: "x".repeat(ADDR_BYTES_MAX + 1),
        };
        let broken = match m.0 {
            ChordMessage::Found(mut f) => {
                if pick.is_multiple_of(2) {
                    f.peers = vec![
                        f.peers.first().cloned().unwrap_or(extra_peer.clone());
                        CHORD_PEERS_MAX + 1
                    ];
                } else {
                    f.peers.push(extra_peer);
                }
                ChordMessage::Found(f)
            }
            ChordMessage::State(mut st) => {
                st.predecessor = Some(extra_peer);
                ChordMessage::State(st)
            }
            ChordMessage::Store(mut st) => {
                if pick.is_multiple_of(2) {
                    st.key = over(CHORD_KEY_BYTES_MAX);
                } else {
                    st.value.op = StoreOp::Put(over(CHORD_VALUE_BYTES_MAX));
                }
                ChordMessage::Store(st)
            }
            ChordMessage::Fetch(mut f) => {
                f.key = over(CHORD_KEY_BYTES_MAX);
                ChordMessage::Fetch(f)
            }
            ChordMessage::Values(mut v) => {
                v.values = vec![
                    ChordValue {
                        writer: PublicKey([0; 32]),
                        seq: 0,
                        op: StoreOp::Delete(None),
                        lifetime_ms: None,
                        signature: Signature([0; 64]),
                    };
                    CHORD_VALUES_MAX + 1
                ];
                ChordMessage::Values(v)
            }
            ChordMessage::Handover(mut h) => {
                h.records.push(ChordRecord {
                    position: 0,
                    key: over(CHORD_KEY_BYTES_MAX),
                    values: vec![],
                });
                ChordMessage::Handover(h)
            }
            // No limits beyond postcard's.
            _ => return,
        };
        let msg = Message::Chord(broken);
        let payload = msg.encode_payload();
        assert!(matches!(
            Message::decode(msg.code(), &payload),
            Err(ProtocolError::MalformedPayload { .. })
        ));
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(ArbChord, usize));
}

#[test]
fn replica_messages_round_trip() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbReplica) {
        count_if(&PACKED, round_trip(&m.0.as_message()));
    }
    assert!(check(400, &PACKED, prop) > 0, "no frame was compressed");
}

#[test]
fn the_replica_generator_reaches_its_limits() {
    let mut g = Gen::new(100);
    let (mut full_batch, mut full_want, mut full_piece, mut long_path) = (0, 0, 0, 0);
    for _ in 0..3000 {
        let m = ArbReplica::arbitrary(&mut g).0;
        match m.as_message() {
            Message::Replica(ReplicaMessage::IHave(h)) => {
                full_batch += usize::from(h.entries.len() == INDEX_ENTRIES_MAX);
            }
            Message::Replica(ReplicaMessage::IWant(w)) => {
                full_want += usize::from(w.hashes.len() == WANT_HASHES_MAX);
            }
            Message::Replica(ReplicaMessage::HereIs(h)) => {
                full_piece += usize::from(h.data.len() == HEREIS_DATA_BYTES_MAX);
                assert!(!h.data.is_empty());
                assert!(u64::from(h.offset) + h.data.len() as u64 <= u64::from(BLOCK_BYTES_MAX));
            }
            Message::Replica(ReplicaMessage::IRefuse(r)) => {
                long_path += usize::from(r.path.len() == PATH_BYTES_MAX);
            }
            _ => {}
        }
    }
    assert!(
        full_batch > 0 && full_want > 0 && full_piece > 0 && long_path > 0,
        "limits reached: {full_batch} full IHAVEs, {full_want} full IWANTs, \
         {full_piece} full HEREIS pieces, {long_path} IREFUSEs at PATH_BYTES_MAX"
    );
    let mut g = Gen::new(100);
    assert!(
        (0..3000).any(|_| gen_version(&mut g, true).counters.len() > VERSION_COUNTERS_MAX / 2),
        "no large version generated"
    );
}

#[test]
fn a_replica_message_over_any_limit_is_malformed() {
    fn prop(m: ArbReplica, pick: usize) {
        let bad_version = |pick: usize| match pick % 3 {
            // Descending nodes.
            0 => Version {
                counters: vec![Counter { node: 5, value: 1 }, Counter { node: 3, value: 1 }],
            },
            // A zero counter.
            1 => Version {
                counters: vec![Counter { node: 5, value: 0 }],
            },
            // One counter too many.
            _ => Version {
                counters: (1..=VERSION_COUNTERS_MAX as u64 + 1)
                    .map(|node| Counter { node, value: 1 })
                    .collect(),
            },
        };
        let long = "x".repeat(PATH_BYTES_MAX + 1);
        let entry = FileEntry {
            path: "a".into(),
            kind: FileKind::File,
            target: String::new(),
            mode: 6,
            size: 0,
            mtime_ms: 0,
            modified_by: 1,
            version: Version {
                counters: vec![Counter { node: 1, value: 1 }],
            },
            sequence: 1,
            blocks: vec![],
        };
        let broken = match m.0 {
            Owned::HereIs(mut h) => {
                match pick % 3 {
                    0 => h.data.clear(),
                    1 => h.data = vec![1; HEREIS_DATA_BYTES_MAX + 1],
                    _ => h.offset = BLOCK_BYTES_MAX - h.data.len() as u32 + 1,
                }
                let payload = h.as_message().encode_payload();
                assert!(matches!(
                    Message::decode(Code::HEREIS, &payload),
                    Err(ProtocolError::MalformedPayload { .. })
                ));
                return;
            }
            Owned::Plain(Message::Replica(r)) => r,
            other => panic!("not a replication message: {other:?}"),
        };
        let broken = match broken {
            ReplicaMessage::IHave(mut h) => {
                match pick % 4 {
                    0 => h.entries = vec![entry; INDEX_ENTRIES_MAX + 1],
                    1 => h.entries.push(FileEntry {
                        path: long,
                        ..entry
                    }),
                    2 => h.entries.push(FileEntry {
                        target: long,
                        ..entry
                    }),
                    _ => h.entries.push(FileEntry {
                        version: bad_version(pick / 4),
                        ..entry
                    }),
                }
                ReplicaMessage::IHave(h)
            }
            ReplicaMessage::IMoved(mut mv) => {
                let moved = Moved {
                    from: "b".into(),
                    from_version: entry.version.clone(),
                    to: entry.clone(),
                };
                match pick % 4 {
                    0 => mv.entries = vec![moved; INDEX_ENTRIES_MAX + 1],
                    1 => mv.entries.push(Moved {
                        from: long,
                        ..moved
                    }),
                    2 => mv.entries.push(Moved {
                        from_version: bad_version(pick / 4),
                        ..moved
                    }),
                    _ => mv.entries.push(Moved {
                        to: FileEntry {
                            version: bad_version(pick / 4),
                            ..entry
                        },
                        ..moved
                    }),
                }
                ReplicaMessage::IMoved(mv)
            }
            ReplicaMessage::IDeleted(mut d) => {
                let deleted = Deleted {
                    path: "a".into(),
                    kind: FileKind::Directory,
                    modified_by: 1,
                    version: entry.version.clone(),
                    sequence: 1,
                };
                match pick % 3 {
                    0 => d.entries = vec![deleted; INDEX_ENTRIES_MAX + 1],
                    1 => d.entries.push(Deleted {
                        path: long,
                        ..deleted
                    }),
                    _ => d.entries.push(Deleted {
                        version: bad_version(pick / 3),
                        ..deleted
                    }),
                }
                ReplicaMessage::IDeleted(d)
            }
            ReplicaMessage::IWant(mut w) => {
                w.hashes = vec![[0; 32]; WANT_HASHES_MAX + 1];
                ReplicaMessage::IWant(w)
            }
            ReplicaMessage::NotFound(mut n) => {
                n.hashes = vec![[0; 32]; WANT_HASHES_MAX + 1];
                ReplicaMessage::NotFound(n)
            }
            ReplicaMessage::IRefuse(mut r) => {
                r.path = long;
                ReplicaMessage::IRefuse(r)
            }
            // LIST has no limit beyond postcard's.
            _ => return,
        };
        let msg = Message::Replica(broken);
        let payload = msg.encode_payload();
        assert!(matches!(
            Message::decode(msg.code(), &payload),
            Err(ProtocolError::MalformedPayload { .. })
        ));
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(ArbReplica, usize));
}

// =============================================================================================
// Drops

#[test]
fn drop_messages_round_trip() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: ArbDrop) {
        count_if(&PACKED, round_trip(&Message::Drop(m.0)));
    }
    assert!(check(400, &PACKED, prop) > 0, "no frame was compressed");
}

#[test]
fn a_drop_message_over_any_limit_is_malformed() {
    fn prop(m: ArbDrop, pick: usize) {
        let file = DropFile {
            path: "m".into(),
            kind: FileKind::Directory,
            mode: 7,
            size: 0,
            target: None,
            blocks: vec![],
        };
        let broken = match m.0 {
            DropMessage::Heads(mut h) => {
                match pick % 2 {
                    0 => h.heads = vec![VersionId([1; 32]); DROP_HEADS_MAX + 1],
                    _ => h.heads = vec![VersionId([2; 32]), VersionId([1; 32])],
                }
                DropMessage::Heads(h)
            }
            DropMessage::Version(mut v) => {
                match pick % 6 {
                    0 => v.parents = vec![VersionId([1; 32]); DROP_PARENTS_MAX + 1],
                    1 => v.parents = vec![VersionId([1; 32]), VersionId([1; 32])],
                    2 => {
                        v.owners.secondary = vec![PublicKey([1; 32]); DROP_SECONDARY_OWNERS_MAX + 1]
                    }
                    3 => v.owners.secondary.push(v.owners.primary),
                    4 => v.counter = 0,
                    _ => v.files = DROP_FILES_MAX + 1 + pick as u32 % 1000,
                }
                DropMessage::Version(v)
            }
            DropMessage::Files(mut f) => {
                match pick % 5 {
                    0 => {
                        f.files = (0..=DROP_FILES_BATCH_MAX)
                            .map(|i| DropFile {
                                path: format!("{i:04}"),
                                ..file.clone()
                            })
                            .collect();
                        f.from = 0;
                    }
                    1 => {
                        // The same path first and last: never strictly ascending.
                        let last = DropFile {
                            path: "~".into(),
                            ..file.clone()
                        };
                        f.files.insert(0, last.clone());
                        f.files.push(last);
                    }
                    2 => f.files.push(DropFile {
                        path: "~".repeat(PATH_BYTES_MAX + 1),
                        ..file
                    }),
                    3 => f.files.push(DropFile {
                        path: "~".into(),
                        target: Some("t".repeat(PATH_BYTES_MAX + 1)),
                        ..file
                    }),
                    _ => {
                        f.files.push(DropFile {
                            path: "~".into(),
                            ..file
                        });
                        f.from = DROP_FILES_MAX + 1 - f.files.len() as u32;
                    }
                }
                DropMessage::Files(f)
            }
            // The other messages have no limit beyond postcard's.
            _ => return,
        };
        let msg = Message::Drop(broken);
        let payload = msg.encode_payload();
        assert!(
            matches!(
                Message::decode(msg.code(), &payload),
                Err(ProtocolError::MalformedPayload { .. })
            ),
            "{msg:?}"
        );
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(ArbDrop, usize));
}

/// Files that keep every rule of SPEC.md §24.3, in path order.
fn valid_drop_files(g: &mut Gen) -> Vec<DropFile> {
    let n = below(g, 40);
    ascending_paths(g, n, false)
        .into_iter()
        .map(|path| {
            let blocks: Vec<Block> = (0..below(g, 4) as u64)
                .map(|i| Block {
                    offset: i * 1000,
                    len: 1000,
                    hash: bytes32(g),
                })
                .collect();
            match below(g, 3) {
                0 => DropFile {
                    path,
                    kind: FileKind::File,
                    mode: (u8::arbitrary(g) % 8),
                    size: blocks.len() as u64 * 1000,
                    target: None,
                    blocks,
                },
                1 => DropFile {
                    path,
                    kind: FileKind::Directory,
                    mode: 7,
                    size: 0,
                    target: None,
                    blocks: vec![],
                },
                _ => DropFile {
                    path,
                    kind: FileKind::Symlink,
                    mode: 7,
                    size: 0,
                    target: Some(format!("t{}", below(g, 100))),
                    blocks: vec![],
                },
            }
        })
        .collect()
}

#[test]
fn the_root_hash_is_the_same_however_the_list_is_batched() {
    fn prop(files: ArbDropFiles, cuts: Vec<usize>) -> bool {
        let files = files.0;
        let mut whole = b"weft drop root v1\0".to_vec();
        for f in &files {
            let one = Message::Drop(DropMessage::Files(DropFiles {
                drop: DropId::default(),
                version: VersionId::default(),
                from: 0,
                files: vec![f.clone()],
            }))
            .encode_payload();
            // drop 32, version 32, from 1, count 1, then the file.
            assert_eq!(one.len() - 66, f.encoded_len());
            whole.extend_from_slice(&one[66..]);
        }
        let mut hasher = RootHasher::new();
        let mut at = 0;
        for cut in cuts.iter().chain([&usize::MAX]) {
            let end = at + (cut % (files.len() + 1)).min(files.len() - at);
            hasher
                .push_batch(&files[at..end])
                .expect("valid files in order");
            at = end;
        }
        hasher
            .push_batch(&files[at..])
            .expect("valid files in order");
        let sizes: u64 = files.iter().map(|f| f.size).sum();
        hasher.root() == *blake3::hash(&whole).as_bytes()
            && hasher.files() as usize == files.len()
            && hasher.bytes() == sizes
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(ArbDropFiles, Vec<usize>) -> bool);
}

#[test]
fn a_file_pushed_twice_or_out_of_order_is_refused() {
    let mut g = Gen::new(50);
    for _ in 0..100 {
        let files = valid_drop_files(&mut g);
        if files.len() < 2 {
            continue;
        }
        let mut hasher = RootHasher::new();
        let i = below(&mut g, files.len() - 1);
        hasher.push_batch(&files[..=i + 1]).expect("in order");
        assert!(hasher.push(&files[i + 1]).is_err(), "the same path again");
        assert!(hasher.push(&files[i]).is_err(), "an earlier path");
    }
}

// =============================================================================================
// Version vectors

/// The order seen from the other side.
fn flipped(o: VersionOrder) -> VersionOrder {
    match o {
        VersionOrder::Newer => VersionOrder::Older,
        VersionOrder::Older => VersionOrder::Newer,
        same => same,
    }
}

/// Every node either version names, ascending, once.
fn nodes_of(versions: &[&Version]) -> Vec<u64> {
    let mut nodes: Vec<u64> = versions
        .iter()
        .flat_map(|v| v.counters.iter().map(|c| c.node))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

#[test]
fn the_version_generator_makes_well_formed_overlapping_versions() {
    let mut g = Gen::new(100);
    let (mut concurrent, mut newer, mut equal) = (0, 0, 0);
    for _ in 0..2000 {
        let (a, b) = (gen_version(&mut g, true), gen_version(&mut g, true));
        assert!(a.is_well_formed() && b.is_well_formed(), "{a:?} {b:?}");
        match a.compare(&b) {
            VersionOrder::Concurrent => concurrent += 1,
            VersionOrder::Newer | VersionOrder::Older => newer += 1,
            VersionOrder::Equal => equal += 1,
        }
    }
    // Every order is reached, so the properties below are not vacuous.
    assert!(
        concurrent > 0 && newer > 0 && equal > 0,
        "{concurrent} {newer} {equal}"
    );
}

#[test]
fn compare_is_antisymmetric_and_equal_means_the_same_counters() {
    fn prop(a: ArbVersion, b: ArbVersion) {
        let (a, b) = (a.0, b.0);
        assert_eq!(a.compare(&b), flipped(b.compare(&a)), "{a:?} {b:?}");
        assert_eq!(a.compare(&a), VersionOrder::Equal);
        assert_eq!(a.compare(&b) == VersionOrder::Equal, a == b, "{a:?} {b:?}");
        // The order is the counters' pointwise order.
        let nodes = nodes_of(&[&a, &b]);
        let ge = nodes.iter().all(|&n| a.get(n) >= b.get(n));
        let le = nodes.iter().all(|&n| a.get(n) <= b.get(n));
        let expected = match (ge, le) {
            (true, true) => VersionOrder::Equal,
            (true, false) => VersionOrder::Newer,
            (false, true) => VersionOrder::Older,
            (false, false) => VersionOrder::Concurrent,
        };
        assert_eq!(a.compare(&b), expected, "{a:?} {b:?}");
    }
    QuickCheck::new()
        .tests(1000)
        .quickcheck(prop as fn(ArbVersion, ArbVersion));
}

#[test]
fn merged_descends_from_both_and_is_the_least_such() {
    fn prop(a: ArbVersion, b: ArbVersion) {
        let (a, b) = (a.0, b.0);
        let m = a.merged(&b);
        for side in [&a, &b] {
            assert!(
                matches!(m.compare(side), VersionOrder::Newer | VersionOrder::Equal),
                "{m:?} vs {side:?}"
            );
        }
        for n in nodes_of(&[&a, &b]) {
            assert_eq!(m.get(n), a.get(n).max(b.get(n)));
        }
        assert_eq!(nodes_of(&[&m]), nodes_of(&[&a, &b]));
        match a.compare(&b) {
            VersionOrder::Newer | VersionOrder::Equal => assert_eq!(m, a),
            VersionOrder::Older => assert_eq!(m, b),
            VersionOrder::Concurrent => {
                assert_eq!(m.compare(&a), VersionOrder::Newer);
                assert_eq!(m.compare(&b), VersionOrder::Newer);
            }
        }
    }
    QuickCheck::new()
        .tests(1000)
        .quickcheck(prop as fn(ArbVersion, ArbVersion));
}

#[test]
fn merge_is_commutative_associative_and_idempotent() {
    fn prop(a: ArbVersion, b: ArbVersion, c: ArbVersion) {
        let (a, b, c) = (a.0, b.0, c.0);
        assert_eq!(a.merged(&b), b.merged(&a));
        assert_eq!(a.merged(&b).merged(&c), a.merged(&b.merged(&c)));
        assert_eq!(a.merged(&a), a);
        assert_eq!(a.merged(&Version::default()), a);
    }
    QuickCheck::new()
        .tests(1000)
        .quickcheck(prop as fn(ArbVersion, ArbVersion, ArbVersion));
}

#[test]
fn bumped_is_newer_by_one_counter() {
    fn prop(a: ArbVersion, pick: usize, fresh: u64) {
        let a = a.0;
        // A node of the version, or (half the time) any node.
        let node = match a.counters.get(pick % (2 * a.counters.len()).max(1)) {
            Some(c) => c.node,
            None => fresh,
        };
        let b = a.bumped(node);
        if a.get(node) == u64::MAX {
            // A saturated counter cannot grow: the "new" version equals the old one.
            assert_eq!(b, a);
            return;
        }
        assert_eq!(b.compare(&a), VersionOrder::Newer, "{a:?} bumped at {node}");
        assert_eq!(a.compare(&b), VersionOrder::Older);
        assert_eq!(b.get(node), a.get(node) + 1);
        for n in nodes_of(&[&a]) {
            if n != node {
                assert_eq!(b.get(n), a.get(n));
            }
        }
        // A change made after adopting a concurrent version descends from both.
        let other = a.bumped(node.wrapping_add(1));
        let joined = b.merged(&other).bumped(node);
        assert_eq!(joined.compare(&b), VersionOrder::Newer);
        assert_eq!(joined.compare(&other), VersionOrder::Newer);
    }
    QuickCheck::new()
        .tests(1000)
        .quickcheck(prop as fn(ArbVersion, usize, u64));
}

#[test]
fn bumped_and_merged_keep_versions_well_formed_within_the_counter_limit() {
    fn prop(a: ArbVersion, b: ArbVersion, node: u64) {
        let (a, b) = (a.0, b.0);
        // Order and nonzero counters are always kept; only the count can pass the limit.
        for v in [a.bumped(node), a.merged(&b)] {
            assert_eq!(
                v.is_well_formed(),
                v.counters.len() <= VERSION_COUNTERS_MAX,
                "{v:?}"
            );
        }
    }
    QuickCheck::new()
        .tests(1000)
        .quickcheck(prop as fn(ArbVersion, ArbVersion, u64));
    // At the limit, a change by one more node makes a version no peer accepts (§22.2).
    let full = Version {
        counters: (1..=VERSION_COUNTERS_MAX as u64)
            .map(|node| Counter { node, value: 1 })
            .collect(),
    };
    assert!(full.is_well_formed());
    assert!(full.bumped(1).is_well_formed());
    assert!(!full
        .bumped(VERSION_COUNTERS_MAX as u64 + 1)
        .is_well_formed());
}

#[test]
fn the_mixed_generator_covers_every_code() {
    let mut g = Gen::new(100);
    let mut seen: Vec<Code> = (0..2000)
        .map(|_| Owned::gen(&mut g, false).as_message().code())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, Code::ALL.to_vec());
}

#[test]
fn largest_broadcast_round_trips() {
    // origin 32 + incarnation 1 + seq 1 + length varint 4 + data + proof tag 1: exactly
    // PAYLOAD_BYTES_MAX.
    let data: Vec<u8> = (0..PAYLOAD_BYTES_MAX - 39)
        .map(|i| (i % 251) as u8)
        .collect();
    let b = OwnedBroadcast {
        origin: NodeId([7; 32]),
        incarnation: 1,
        seq: 1,
        payload: data,
        proof: None,
    };
    let msg = b.as_message();
    assert_eq!(msg.encode_payload().len(), PAYLOAD_BYTES_MAX);
    assert!(round_trip(&msg), "a cycle of 251 bytes compresses");
    let frame = msg.to_frame(false);
    assert_eq!(frame.bytes().len(), 4 + FRAME_BODY_BYTES_MAX);
    let mut dec = FrameDecoder::new();
    for chunk in frame.bytes().chunks(1 << 20) {
        dec.push(Bytes::copy_from_slice(chunk));
    }
    assert_eq!(dec.next_frame().unwrap().as_ref(), Some(&frame));
    assert_eq!(dec.finish(), Ok(()));
}

// =============================================================================================
// FrameDecoder: any cutting of a valid stream gives the same frames

/// Frames for the stream and their concatenation.
fn wire_of(stream: &[(Owned, bool)]) -> (Vec<Frame>, Bytes) {
    let frames: Vec<Frame> = stream
        .iter()
        .map(|(m, compress)| m.as_message().to_frame(*compress))
        .collect();
    let mut wire = Vec::new();
    for f in &frames {
        wire.extend_from_slice(f.bytes());
    }
    (frames, Bytes::from(wire))
}

/// Pulls every frame the decoder can give right now.
fn drain(dec: &mut FrameDecoder, out: &mut Vec<Frame>) {
    while let Some(f) = dec.next_frame().expect("valid stream") {
        out.push(f);
    }
}

/// The frames came out whole, in order, and still decode to the messages sent.
fn assert_same(got: &[Frame], frames: &[Frame], stream: &[(Owned, bool)]) {
    assert_eq!(got, frames);
    for (f, (m, _)) in got.iter().zip(stream) {
        let payload = f.payload().unwrap();
        assert_eq!(Message::decode(f.code(), &payload).unwrap(), m.as_message());
    }
}

/// Decodes `wire` pushed in the given pieces, checking after each push that exactly the frames
/// that end within the bytes pushed so far have come out.
fn decode_in_pieces(wire: &Bytes, frames: &[Frame], cuts: &[usize]) -> Vec<Frame> {
    let ends: Vec<usize> = frames
        .iter()
        .scan(0, |end, f| {
            *end += f.bytes().len();
            Some(*end)
        })
        .collect();
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([&wire.len()]) {
        dec.push(wire.slice(start..cut));
        start = cut;
        drain(&mut dec, &mut got);
        let complete = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(got.len(), complete, "frames out after {cut} bytes");
        let consumed = if complete == 0 { 0 } else { ends[complete - 1] };
        assert_eq!(dec.buffered_len(), cut - consumed, "bytes held after {cut}");
    }
    assert_eq!(dec.finish(), Ok(()));
    assert_eq!(dec.buffered_len(), 0);
    got
}

fn split_everywhere(stream: &[(Owned, bool)]) {
    let (frames, wire) = wire_of(stream);
    for split in 0..=wire.len() {
        let got = decode_in_pieces(&wire, &frames, &[split]);
        assert_same(&got, &frames, stream);
    }
    // One byte at a time.
    let cuts: Vec<usize> = (1..wire.len()).collect();
    let got = decode_in_pieces(&wire, &frames, &cuts);
    assert_same(&got, &frames, stream);
}

#[test]
fn single_frame_decodes_the_same_however_it_is_split() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(m: SmallMessage, compress: bool) {
        let frame = m.0.as_message().to_frame(compress);
        count_if(&PACKED, frame.flags().compressed());
        split_everywhere(&[(m.0, compress)]);
    }
    QuickCheck::new()
        .tests(200)
        .quickcheck(prop as fn(SmallMessage, bool));
    assert!(
        PACKED.load(Ordering::Relaxed) > 0,
        "no compressed frame was split"
    );
}

#[test]
fn stream_decodes_the_same_however_it_is_split() {
    static PACKED: AtomicUsize = AtomicUsize::new(0);
    fn prop(s: SmallStream) {
        for (m, compress) in &s.0 {
            count_if(
                &PACKED,
                m.as_message().to_frame(*compress).flags().compressed(),
            );
        }
        split_everywhere(&s.0);
    }
    assert!(
        check(150, &PACKED, prop) > 0,
        "no compressed frame in any stream"
    );
}

#[test]
fn stream_decodes_the_same_in_random_chunks() {
    fn prop(s: SmallStream, sizes: Vec<u16>) {
        let (frames, wire) = wire_of(&s.0);
        let mut cuts = Vec::new();
        let mut at = 0;
        for size in sizes {
            at += 1 + size as usize % 700;
            if at >= wire.len() {
                break;
            }
            cuts.push(at);
        }
        let got = decode_in_pieces(&wire, &frames, &cuts);
        assert_same(&got, &frames, &s.0);
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(prop as fn(SmallStream, Vec<u16>));
}

// =============================================================================================
// Arbitrary bytes never panic

/// Everything `Frame::parse` and a payload decode make of `bytes`.
fn parse_path(bytes: &[u8]) -> Result<(), ProtocolError> {
    let frame = Frame::parse(Bytes::copy_from_slice(bytes))?;
    let payload = frame.payload()?;
    Message::decode(frame.code(), &payload).map(drop)
}

/// Everything a `FrameDecoder` makes of `bytes` pushed in pieces at `cuts`: the first error, or
/// the count of frames that decoded.
fn stream_path(bytes: &[u8], cuts: &[usize]) -> Result<usize, ProtocolError> {
    let mut dec = FrameDecoder::new();
    let mut frames = 0;
    let mut start = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort();
    for end in ends {
        dec.push(Bytes::copy_from_slice(&bytes[start..end]));
        start = end;
        while let Some(frame) = dec.next_frame()? {
            let payload = frame.payload()?;
            Message::decode(frame.code(), &payload)?;
            frames += 1;
        }
    }
    dec.finish()?;
    Ok(frames)
}

/// Decodes `payload` as every known and some unknown codes; whatever decodes re-encodes to a
/// payload that decodes to the same message.
fn decode_as_everything(payload: &[u8]) {
    for code in Code::ALL {
        if let Ok(msg) = Message::decode(code, payload) {
            assert_eq!(msg.code(), code);
            let again = msg.encode_payload();
            assert!(
                again.len() <= payload.len(),
                "canonical form is never longer"
            );
            assert_eq!(Message::decode(code, &again), Ok(msg));
        }
    }
    for code in [
        0x0000, 0x0006, 0x0104, 0x01FF, 0x0204, 0x0508, 0x0700, 0xFFFF,
    ] {
        assert_eq!(
            Message::decode(Code(code), payload),
            Err(ProtocolError::UnknownCommand(code))
        );
    }
}

/// The two receive paths agree on a single frame (or on the first error).
fn agree(bytes: &[u8], cuts: &[usize]) {
    let parsed = parse_path(bytes);
    let streamed = stream_path(bytes, cuts);
    match (&parsed, &streamed) {
        // Frame::parse refuses bytes past the frame's end; a stream reads them as the next frame.
        (
            Err(ProtocolError::MalformedPayload {
                reason: "bytes after the frame's end",
                ..
            }),
            _,
        ) => {}
        // No bytes: no frame to parse, but a stream that ended cleanly.
        (Err(ProtocolError::Truncated { have: 0, .. }), s) if bytes.is_empty() => {
            assert_eq!(s, &Ok(0))
        }
        (Ok(()), s) => assert_eq!(s, &Ok(1), "{bytes:02x?}"),
        (Err(e), s) => assert_eq!(s.as_ref().map_err(|e| e.clone()), Err(e.clone())),
    }
}

#[test]
fn random_bytes_never_panic() {
    fn prop(bytes: Vec<u8>, cuts: Vec<usize>) {
        agree(&bytes, &cuts);
        decode_as_everything(&bytes);
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(prop as fn(Vec<u8>, Vec<usize>));
}

/// Random payload bytes behind a valid header, so they reach decompression and postcard.
#[derive(Debug, Clone)]
struct GarbageFrame(Vec<u8>);

impl Arbitrary for GarbageFrame {
    fn arbitrary(g: &mut Gen) -> Self {
        let code = *g.choose(&Code::ALL).unwrap();
        let mut payload = Vec::<u8>::arbitrary(g);
        let compressed = bool::arbitrary(g);
        if compressed && one_in(g, 2) {
            // A plausible decompressed size in front of a random block.
            let size = below(g, 4096) as u32;
            let mut p = size.to_be_bytes().to_vec();
            p.append(&mut payload);
            payload = p;
        }
        let frame = Frame::build(code, &payload, false);
        let mut bytes = frame.into_bytes().to_vec();
        if compressed {
            bytes[5] = 1;
        }
        GarbageFrame(bytes)
    }
}

#[test]
fn random_payloads_behind_valid_headers_never_panic() {
    fn prop(f: GarbageFrame, cuts: Vec<usize>) {
        agree(&f.0, &cuts);
        decode_as_everything(&f.0[HEADER_BYTES..]);
    }
    QuickCheck::new()
        .tests(3000)
        .quickcheck(prop as fn(GarbageFrame, Vec<usize>));
}

#[test]
fn mutated_valid_frames_never_panic() {
    fn prop(m: SmallMessage, compress: bool, flips: Vec<(u16, u8)>, cut: Option<u16>) {
        let frame = m.0.as_message().to_frame(compress);
        let mut bytes = frame.bytes().to_vec();
        if !bytes.is_empty() {
            for (at, xor) in &flips {
                let i = *at as usize % bytes.len();
                bytes[i] ^= xor;
            }
        }
        if let Some(c) = cut {
            bytes.truncate(c as usize % (bytes.len() + 1));
        }
        agree(&bytes, &[bytes.len() / 2]);
        if bytes.len() > HEADER_BYTES {
            decode_as_everything(&bytes[HEADER_BYTES..]);
        }
        if compress && bytes.len() > HEADER_BYTES {
            // Also try the (possibly damaged) wire payload as a compressed payload.
            let _ = weft_protocol::compress::decompress(&bytes[HEADER_BYTES..]);
        }
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(prop as fn(SmallMessage, bool, Vec<(u16, u8)>, Option<u16>));
}

#[test]
fn payloads_over_the_cap_are_refused_without_decoding() {
    let big = vec![0u8; PAYLOAD_BYTES_MAX + 1];
    for code in Code::ALL {
        assert!(matches!(
            Message::decode(code, &big),
            Err(ProtocolError::DecompressedTooLarge { .. })
        ));
    }
}
