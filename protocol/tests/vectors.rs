//! Generator and checker for `protocol/vectors.json`, the wire-format test vectors.
//!
//! `WEFT_WRITE_VECTORS=1 cargo test -p weft-protocol --test vectors` rewrites the file from the
//! definitions below. Without it the tests check that the committed file is byte-for-byte what
//! the code produces, then read it back as another implementation would: every `frame_hex`
//! decodes to its `fields`, re-encoding the `fields` gives `frame_hex` again, and every
//! `invalid` entry fails with the named error.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use common::{hex, raw_frame, string, unhex, varint};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weft_protocol::compress::compress_if_smaller;
use weft_protocol::{
    check_version, DropFile, DropFiles, DropGetFiles, DropGetVersion, DropHeads, DropId,
    DropManifest, DropMessage, DropNotFound, DropOwners, DropSubscribe, DropUnsubscribe,
    ManifestFields, RootHasher, VersionId, DROP_FILES_BATCH_MAX, DROP_FILES_MAX, DROP_HEADS_MAX,
    DROP_PARENTS_MAX, DROP_SECONDARY_OWNERS_MAX,
};
use weft_protocol::{
    Block, BlockHash, Counter, Deleted, FileEntry, FileKind, FolderId, HereIs, IDeleted, IHave,
    IMoved, IRefuse, IWant, List, Moved, NotFound, PathRefusal, ReplicaMessage, Version,
    BLOCK_BYTES_MAX, HEREIS_DATA_BYTES_MAX, INDEX_ENTRIES_MAX, PATH_BYTES_MAX, WANT_HASHES_MAX,
};
use weft_protocol::{
    Broadcast, ByeReason, CascadeId, Code, DigestEntry, Family, Frame, FrameDecoder, Hello,
    HelloAck, ICanSee, ICantSee, IKnowAbout, MeshDigest, MeshWant, Message, NetworkId, NodeId,
    OriginProof, PeerInfo, Ping, Pong, ProtocolError, PublicKey, SeqRange, Signature, WantRange,
    ADDR_BYTES_MAX, CAP_LZ4, DIGEST_ENTRIES_MAX, FRAME_BODY_BYTES_MAX, PAYLOAD_BYTES_MAX,
    PEERS_PER_MESSAGE_MAX, RANGES_PER_ENTRY_MAX, VERSION, WANT_RANGES_MAX,
};
use weft_protocol::{
    BucketHash, ChordFetch, ChordFind, ChordFound, ChordHandover, ChordMessage, ChordPeer,
    ChordRecord, ChordState, ChordStore, ChordStored, ChordValue, ChordValues, Hlc, StoreOp,
    StoreOutcome, TableDigest, TableEntries, TableWant, TableWrite, CHORD_KEY_BYTES_MAX,
    CHORD_PEERS_MAX, CHORD_VALUES_MAX, CHORD_VALUE_BYTES_MAX, TABLE_BUCKETS, TABLE_KEY_BYTES_MAX,
    TABLE_OPS_PER_MESSAGE_MAX, TABLE_WANT_HELD_MAX,
};
use weft_protocol::{
    ExitStatus, OutputStream, RunAck, RunExit, RunFolder, RunMessage, RunOutput, RunRefusalReason,
    RunRefused, RunRequest, RunSignal, RunSignalKind, RunStarted, SyncPoint, RUN_ARGS_MAX,
    RUN_OUTPUT_BYTES_MAX, RUN_REASON_BYTES_MAX,
};

const DESCRIPTION: &str = "Test vectors for the weft wire format (see SPEC.md). Each entry of \
`vectors` is one whole frame, `frame_hex`, length prefix included, with the uncompressed postcard \
payload it carries (`payload_hex`) and that payload's message (`fields`): fixed-size byte \
strings and byte payloads as lowercase hex, integers as JSON numbers (u64 values may exceed \
2^53), strings as JSON strings, an absent optional value as null, a BYE reason by name with \
its wire index, a list as a JSON array and a nested struct (cascade id, peer, digest entry, \
want, sequence range, table write, hlc, bucket hash, file entry, block, version counter, move, \
deletion) as a JSON object; a table write's key and value are hex, an absent value (a delete) \
null; a Chord store outcome, a file kind and a path refusal by name; mtime_ms is signed. \
MESH_REPAIR carries BROADCAST's fields; HEREIS's `data` is the raw tail of its payload. Compressed frames were made by lz4_flex's block compressor: another \
implementation must decode them to the same fields but may compress differently. Each entry of \
`invalid` is a byte string that, taken as exactly one frame (check the length prefix, then the \
header, then inflate if the compressed flag is set, then decode the payload as the message its \
code names), fails with the named error, a variant of weft_protocol::ProtocolError; pushed into \
a stream decoder which then reaches the end of its input, it fails the same way. The invalid \
entries marked compressed in their description are compressed to keep this file small: they \
inflate fine and fail in the decode.";

/// Every `ByeReason`, in wire order.
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

/// The name of every `ProtocolError` variant.
const ALL_ERRORS: [&str; 9] = [
    "FrameTooLarge",
    "FrameTooShort",
    "UnknownCommand",
    "UnsupportedVersion",
    "ReservedFlags",
    "Truncated",
    "MalformedPayload",
    "DecompressedTooLarge",
    "BadCompression",
];

fn error_name(e: &ProtocolError) -> &'static str {
    match e {
        ProtocolError::FrameTooLarge { .. } => "FrameTooLarge",
        ProtocolError::FrameTooShort { .. } => "FrameTooShort",
        ProtocolError::UnknownCommand(_) => "UnknownCommand",
        ProtocolError::UnsupportedVersion(_) => "UnsupportedVersion",
        ProtocolError::ReservedFlags(_) => "ReservedFlags",
        ProtocolError::Truncated { .. } => "Truncated",
        ProtocolError::MalformedPayload { .. } => "MalformedPayload",
        ProtocolError::DecompressedTooLarge { .. } => "DecompressedTooLarge",
        ProtocolError::BadCompression => "BadCompression",
        _ => panic!("a ProtocolError variant this test does not know: {e:?}"),
    }
}

// =============================================================================================
// The file's shape

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorFile {
    version: u8,
    description: String,
    vectors: Vec<Vector>,
    invalid: Vec<Invalid>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    name: String,
    code: u16,
    code_name: String,
    compressed: bool,
    fields: Value,
    payload_hex: String,
    frame_hex: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Invalid {
    name: String,
    error: String,
    description: String,
    frame_hex: String,
}

// =============================================================================================
// Messages as JSON and back

/// A broadcast's (or a repair's) fields, owning the payload (`Broadcast` borrows it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedBroadcast {
    origin: NodeId,
    incarnation: u64,
    seq: u64,
    payload: Vec<u8>,
    proof: Option<OriginProof>,
}

impl OwnedBroadcast {
    fn borrow(&self) -> Broadcast<'_> {
        Broadcast {
            origin: self.origin,
            incarnation: self.incarnation,
            seq: self.seq,
            payload: &self.payload,
            proof: self.proof,
        }
    }
}

/// A message owning everything.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
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
            Owned::Broadcast(b) => Message::Broadcast(b.borrow()),
            Owned::Repair(b) => Message::MeshRepair(b.borrow()),
            Owned::HereIs(h) => Message::Replica(ReplicaMessage::HereIs(h.borrow())),
            Owned::RunOutput(o) => Message::Run(RunMessage::Output(o.borrow())),
        }
    }
}

/// A JSON object whose keys are inserted in sorted order, so that the text is the same whether
/// or not serde_json's `preserve_order` feature is on.
fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut pairs = pairs.to_vec();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut map = Map::new();
    for (k, v) in pairs {
        assert!(map.insert(k.to_string(), v).is_none(), "duplicate key {k}");
    }
    Value::Object(map)
}

fn hexv(bytes: &[u8]) -> Value {
    Value::String(hex(bytes))
}

fn opt_str(s: &Option<String>) -> Value {
    s.as_ref().map_or(Value::Null, |s| Value::String(s.clone()))
}

fn cascade_json(c: &CascadeId) -> Value {
    obj([("origin", hexv(&c.origin.0)), ("seq", c.seq.into())])
}

fn peers_json(peers: &[PeerInfo]) -> Value {
    Value::Array(
        peers
            .iter()
            .map(|p| obj([("node", hexv(&p.node.0)), ("addr", p.addr.clone().into())]))
            .collect(),
    )
}

fn range_json(r: &SeqRange) -> Value {
    obj([("first", r.first.into()), ("last", r.last.into())])
}

fn broadcast_json(b: &Broadcast<'_>) -> Value {
    obj([
        ("origin", hexv(&b.origin.0)),
        ("incarnation", b.incarnation.into()),
        ("seq", b.seq.into()),
        ("payload", hexv(b.payload)),
        (
            "proof",
            match &b.proof {
                None => Value::Null,
                Some(p) => obj([
                    ("public_key", hexv(&p.public_key.0)),
                    ("signature", hexv(&p.signature.0)),
                ]),
            },
        ),
    ])
}

fn hlc_json(h: &Hlc) -> Value {
    obj([("ms", h.ms.into()), ("logical", h.logical.into())])
}

fn write_json(w: &TableWrite) -> Value {
    obj([
        ("hlc", hlc_json(&w.hlc)),
        ("node", hexv(&w.node.0)),
        ("incarnation", w.incarnation.into()),
        ("key", hexv(&w.key)),
        ("value", w.value.as_ref().map_or(Value::Null, |v| hexv(v))),
        (
            "lease_until_ms",
            w.lease_until_ms.map_or(Value::Null, Value::from),
        ),
        ("public_key", hexv(&w.public_key.0)),
        ("signature", hexv(&w.signature.0)),
    ])
}

fn get_write(f: &Value) -> TableWrite {
    let h = get(f, "hlc");
    TableWrite {
        hlc: Hlc {
            ms: get_u64(h, "ms"),
            logical: get_u64(h, "logical").try_into().expect("u32"),
        },
        node: NodeId(get_32(f, "node")),
        incarnation: get_u64(f, "incarnation"),
        key: get_bytes(f, "key"),
        value: match get(f, "value") {
            Value::Null => None,
            _ => Some(get_bytes(f, "value")),
        },
        lease_until_ms: get(f, "lease_until_ms").as_u64(),
        public_key: PublicKey(get_32(f, "public_key")),
        signature: Signature(
            get_bytes(f, "signature")
                .try_into()
                .expect("64 signature bytes"),
        ),
    }
}

/// The network the table-write vectors are signed for.
const VECTOR_NETWORK: &str = "weft vectors";

/// The key pair whose secret key is [`pat`]`(0xA0)`: the writer of the table-write vectors.
fn vector_writer() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&pat(0xA0))
}

/// `w` as the vector writer signs it: its node, public key and signature.
fn signed(mut w: TableWrite) -> TableWrite {
    use ed25519_dalek::Signer as _;
    let key = vector_writer();
    w.public_key = PublicKey(key.verifying_key().to_bytes());
    w.node = NodeId::from_public_key(&w.public_key);
    let message = w.signed_bytes(&NetworkId::from_name(VECTOR_NETWORK));
    w.signature = Signature(key.sign(&message).to_bytes());
    w
}

fn reason_index(r: ByeReason) -> usize {
    ALL_REASONS
        .iter()
        .position(|x| *x == r)
        .expect("listed reason")
}

/// The message's fields as JSON.
fn fields_of(msg: &Message<'_>) -> Value {
    match msg {
        Message::Hello(h) => obj([
            ("network", hexv(&h.network.0)),
            ("public_key", hexv(&h.public_key.0)),
            ("nonce", hexv(&h.nonce)),
            ("incarnation", h.incarnation.into()),
            ("listen_addr", opt_str(&h.listen_addr)),
            ("capabilities", h.capabilities.into()),
            ("families", h.families.into()),
            (
                "dedicated",
                h.dedicated.map_or(Value::Null, |d| u64::from(d).into()),
            ),
        ]),
        Message::HelloAck(a) => obj([("signature", hexv(&a.signature.0))]),
        Message::Ping(p) => obj([("nonce", p.nonce.into())]),
        Message::Pong(p) => obj([("nonce", p.nonce.into())]),
        Message::Bye(r) => obj([
            ("reason", format!("{r:?}").into()),
            ("reason_index", reason_index(*r).into()),
        ]),
        Message::ICanSee(m) => obj([
            ("cascade", cascade_json(&m.cascade)),
            ("hops_left", m.hops_left.into()),
            ("origin_addr", opt_str(&m.origin_addr)),
            ("peers", peers_json(&m.peers)),
        ]),
        Message::IKnowAbout(m) => obj([
            ("cascade", cascade_json(&m.cascade)),
            ("hops_left", m.hops_left.into()),
            ("peers", peers_json(&m.peers)),
        ]),
        Message::ICantSee(m) => obj([
            ("cascade", cascade_json(&m.cascade)),
            ("hops_left", m.hops_left.into()),
            ("lost", hexv(&m.lost.0)),
        ]),
        Message::Broadcast(b) | Message::MeshRepair(b) => broadcast_json(b),
        Message::MeshDigest(d) => obj([(
            "entries",
            Value::Array(
                d.entries
                    .iter()
                    .map(|e| {
                        obj([
                            ("origin", hexv(&e.origin.0)),
                            ("incarnation", e.incarnation.into()),
                            (
                                "ranges",
                                Value::Array(e.ranges.iter().map(range_json).collect()),
                            ),
                        ])
                    })
                    .collect(),
            ),
        )]),
        Message::MeshWant(w) => obj([(
            "wants",
            Value::Array(
                w.wants
                    .iter()
                    .map(|w| {
                        obj([
                            ("origin", hexv(&w.origin.0)),
                            ("incarnation", w.incarnation.into()),
                            ("range", range_json(&w.range)),
                        ])
                    })
                    .collect(),
            ),
        )]),
        Message::TableWrite(w) => write_json(w),
        Message::TableDigest(d) => obj([
            ("bits", d.bits.into()),
            (
                "buckets",
                Value::Array(
                    d.buckets
                        .iter()
                        .map(|b| obj([("bucket", b.bucket.into()), ("hash", hexv(&b.hash))]))
                        .collect(),
                ),
            ),
        ]),
        Message::TableWant(w) => obj([
            ("bits", w.bits.into()),
            (
                "buckets",
                Value::Array(w.buckets.iter().map(|b| (*b).into()).collect()),
            ),
            ("salt", w.salt.into()),
            (
                "held",
                Value::Array(w.held.iter().map(|h| hexv(h)).collect()),
            ),
        ]),
        Message::TableEntries(e) => obj([(
            "writes",
            Value::Array(e.writes.iter().map(write_json).collect()),
        )]),
        Message::Chord(m) => chord_fields(m),
        Message::Replica(m) => replica_fields(m),
        Message::Drop(m) => drop_fields(m),
        Message::Run(m) => run_fields(m),
        other => panic!("a message this test does not know: {other:?}"),
    }
}

fn get<'v>(fields: &'v Value, key: &str) -> &'v Value {
    fields
        .get(key)
        .unwrap_or_else(|| panic!("no {key:?} in {fields}"))
}

fn get_u64(fields: &Value, key: &str) -> u64 {
    get(fields, key)
        .as_u64()
        .unwrap_or_else(|| panic!("{key:?} is not a u64 in {fields}"))
}

fn get_bytes(fields: &Value, key: &str) -> Vec<u8> {
    unhex(
        get(fields, key)
            .as_str()
            .unwrap_or_else(|| panic!("{key:?} is not a hex string in {fields}")),
    )
}

fn get_32(fields: &Value, key: &str) -> [u8; 32] {
    get_bytes(fields, key)
        .try_into()
        .unwrap_or_else(|_| panic!("{key:?} is not 32 bytes in {fields}"))
}

fn get_opt_str(fields: &Value, key: &str) -> Option<String> {
    match get(fields, key) {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("{key:?} is neither null nor a string: {other}"),
    }
}

fn get_cascade(fields: &Value) -> CascadeId {
    let c = get(fields, "cascade");
    CascadeId {
        origin: NodeId(get_32(c, "origin")),
        seq: get_u64(c, "seq"),
    }
}

fn get_hops(fields: &Value) -> u8 {
    get_u64(fields, "hops_left")
        .try_into()
        .expect("hops_left fits a u8")
}

fn get_peers(fields: &Value) -> Vec<PeerInfo> {
    get(fields, "peers")
        .as_array()
        .expect("peers is an array")
        .iter()
        .map(|p| PeerInfo {
            node: NodeId(get_32(p, "node")),
            addr: get(p, "addr")
                .as_str()
                .expect("addr is a string")
                .to_string(),
        })
        .collect()
}

fn get_array<'v>(fields: &'v Value, key: &str) -> &'v [Value] {
    get(fields, key)
        .as_array()
        .unwrap_or_else(|| panic!("{key:?} is not an array in {fields}"))
}

fn get_range(range: &Value) -> SeqRange {
    SeqRange {
        first: get_u64(range, "first"),
        last: get_u64(range, "last"),
    }
}

fn get_broadcast(f: &Value) -> OwnedBroadcast {
    OwnedBroadcast {
        origin: NodeId(get_32(f, "origin")),
        incarnation: get_u64(f, "incarnation"),
        seq: get_u64(f, "seq"),
        payload: get_bytes(f, "payload"),
        proof: match get(f, "proof") {
            Value::Null => None,
            p => Some(OriginProof {
                public_key: PublicKey(get_32(p, "public_key")),
                signature: Signature(get_bytes(p, "signature").try_into().expect("64 bytes")),
            }),
        },
    }
}

/// The message a vector's `fields` describe, for the code named `code_name`.
fn from_fields(code_name: &str, f: &Value) -> Owned {
    Owned::Plain(match code_name {
        "HELLO" => Message::Hello(Hello {
            network: NetworkId(get_32(f, "network")),
            public_key: PublicKey(get_32(f, "public_key")),
            nonce: get_32(f, "nonce"),
            incarnation: get_u64(f, "incarnation"),
            listen_addr: get_opt_str(f, "listen_addr"),
            capabilities: get_u64(f, "capabilities").try_into().expect("u32"),
            families: get_u64(f, "families").try_into().expect("u32"),
            dedicated: get(f, "dedicated")
                .as_u64()
                .map(|d| d.try_into().expect("u8")),
        }),
        "HELLO_ACK" => Message::HelloAck(HelloAck {
            signature: Signature(get_bytes(f, "signature").try_into().expect("64 bytes")),
        }),
        "PING" => Message::Ping(Ping {
            nonce: get_u64(f, "nonce"),
        }),
        "PONG" => Message::Pong(Pong {
            nonce: get_u64(f, "nonce"),
        }),
        "BYE" => {
            let name = get(f, "reason").as_str().expect("reason is a string");
            let reason = *ALL_REASONS
                .iter()
                .find(|r| format!("{r:?}") == name)
                .unwrap_or_else(|| panic!("unknown reason {name}"));
            assert_eq!(get_u64(f, "reason_index"), reason_index(reason) as u64);
            Message::Bye(reason)
        }
        "ICANSEE" => Message::ICanSee(ICanSee {
            cascade: get_cascade(f),
            hops_left: get_hops(f),
            origin_addr: get_opt_str(f, "origin_addr"),
            peers: get_peers(f),
        }),
        "IKNOWABOUT" => Message::IKnowAbout(IKnowAbout {
            cascade: get_cascade(f),
            hops_left: get_hops(f),
            peers: get_peers(f),
        }),
        "ICANTSEE" => Message::ICantSee(ICantSee {
            cascade: get_cascade(f),
            hops_left: get_hops(f),
            lost: NodeId(get_32(f, "lost")),
        }),
        "BROADCAST" => return Owned::Broadcast(get_broadcast(f)),
        "MESH_REPAIR" => return Owned::Repair(get_broadcast(f)),
        "MESH_DIGEST" => Message::MeshDigest(MeshDigest {
            entries: get_array(f, "entries")
                .iter()
                .map(|e| DigestEntry {
                    origin: NodeId(get_32(e, "origin")),
                    incarnation: get_u64(e, "incarnation"),
                    ranges: get_array(e, "ranges").iter().map(get_range).collect(),
                })
                .collect(),
        }),
        "MESH_WANT" => Message::MeshWant(MeshWant {
            wants: get_array(f, "wants")
                .iter()
                .map(|w| WantRange {
                    origin: NodeId(get_32(w, "origin")),
                    incarnation: get_u64(w, "incarnation"),
                    range: get_range(get(w, "range")),
                })
                .collect(),
        }),
        "TABLE_WRITE" => Message::TableWrite(get_write(f)),
        "TABLE_DIGEST" => Message::TableDigest(TableDigest {
            bits: get_u64(f, "bits").try_into().expect("u8"),
            buckets: get_array(f, "buckets")
                .iter()
                .map(|b| BucketHash {
                    bucket: get_u64(b, "bucket").try_into().expect("u16"),
                    hash: get_bytes(b, "hash").try_into().expect("8 bytes"),
                })
                .collect(),
        }),
        "TABLE_WANT" => Message::TableWant(TableWant {
            bits: get_u64(f, "bits").try_into().expect("u8"),
            buckets: get_array(f, "buckets")
                .iter()
                .map(|b| b.as_u64().and_then(|b| b.try_into().ok()).expect("u16"))
                .collect(),
            salt: get_u64(f, "salt"),
            held: get_array(f, "held")
                .iter()
                .map(|h| {
                    let h = h.as_str().map(unhex).expect("hex");
                    h.try_into().expect("8 bytes")
                })
                .collect(),
        }),
        "TABLE_ENTRIES" => Message::TableEntries(TableEntries {
            writes: get_array(f, "writes").iter().map(get_write).collect(),
        }),
        chord if chord.starts_with("CHORD_") => Message::Chord(chord_from_fields(chord, f)),
        "LIST" | "IHAVE" | "IMOVED" | "IDELETED" | "IWANT" | "HEREIS" | "NOTFOUND" | "IREFUSE" => {
            return replica_from_fields(code_name, f)
        }
        drop if drop.starts_with("DROP_") => Message::Drop(drop_from_fields(drop, f)),
        run if run.starts_with("RUN_") => return run_from_fields(run, f),
        other => panic!("unknown code name {other}"),
    })
}

// =============================================================================================
// The vectors

/// `start, start+1, ...` (wrapping): recognisable in a hex dump.
fn pat<const N: usize>(start: u8) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = start.wrapping_add(i as u8);
    }
    out
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// (name, message, compressed) for every valid vector.
fn valid_cases() -> Vec<(String, Owned, bool)> {
    let plain = |name: &str, m: Message<'static>| (name.to_string(), Owned::Plain(m), false);
    let cascade = |seq| CascadeId {
        origin: NodeId(pat(0xA0)),
        seq,
    };
    let peer = |start: u8, addr: &str| PeerInfo {
        node: NodeId(pat(start)),
        addr: addr.to_string(),
    };
    let mut v = vec![
        plain(
            "hello",
            Message::Hello(Hello {
                network: NetworkId(pat(0x00)),
                public_key: PublicKey(pat(0x20)),
                nonce: pat(0x40),
                incarnation: 1,
                listen_addr: Some("192.0.2.1:7946".into()),
                capabilities: CAP_LZ4,
                families: Family::Session.bit()
                    | Family::Mesh.bit()
                    | Family::Table.bit()
                    | Family::Chord.bit(),
                dedicated: None,
            }),
        ),
        plain(
            "hello_without_listen_addr",
            Message::Hello(Hello {
                network: NetworkId(pat(0x00)),
                public_key: PublicKey(pat(0x20)),
                nonce: pat(0x40),
                incarnation: 0,
                listen_addr: None,
                capabilities: 0,
                families: Family::Session.bit() | Family::Chord.bit(),
                dedicated: Some(Family::Chord.high_byte()),
            }),
        ),
        plain(
            "hello_largest_integers_and_address",
            Message::Hello(Hello {
                network: NetworkId([0xFF; 32]),
                public_key: PublicKey(pat(0x60)),
                nonce: [0; 32],
                incarnation: u64::MAX,
                listen_addr: Some(format!("[2001:db8::1]:{}", "9".repeat(ADDR_BYTES_MAX - 14))),
                capabilities: u32::MAX,
                families: u32::MAX,
                dedicated: Some(u8::MAX),
            }),
        ),
        plain(
            "hello_ack",
            Message::HelloAck(HelloAck {
                signature: Signature(pat(0x80)),
            }),
        ),
        plain("ping", Message::Ping(Ping { nonce: 0 })),
        plain(
            "ping_large_nonce",
            Message::Ping(Ping {
                nonce: 0x0123_4567_89AB_CDEF,
            }),
        ),
        plain("pong", Message::Pong(Pong { nonce: 300 })),
        plain("pong_max_nonce", Message::Pong(Pong { nonce: u64::MAX })),
    ];
    for r in ALL_REASONS {
        v.push(plain(
            &format!("bye_{}", snake(&format!("{r:?}"))),
            Message::Bye(r),
        ));
    }
    v.extend([
        plain(
            "icansee_empty",
            Message::ICanSee(ICanSee {
                cascade: cascade(0),
                hops_left: 0,
                origin_addr: None,
                peers: vec![],
            }),
        ),
        plain(
            "icansee",
            Message::ICanSee(ICanSee {
                cascade: cascade((5 << 32) | 17),
                hops_left: 3,
                origin_addr: Some("198.51.100.7:7946".into()),
                peers: vec![
                    peer(0x10, "198.51.100.8:7946"),
                    peer(0x30, "peer.example:443"),
                    peer(0x50, "\u{fc}n\u{ef}code.example:1"),
                ],
            }),
        ),
        plain(
            "iknowabout_empty",
            Message::IKnowAbout(IKnowAbout {
                cascade: cascade(1),
                hops_left: 255,
                peers: vec![],
            }),
        ),
        plain(
            "iknowabout",
            Message::IKnowAbout(IKnowAbout {
                cascade: cascade(2),
                hops_left: 2,
                peers: vec![peer(0x70, "203.0.113.5:7946"), peer(0x90, "")],
            }),
        ),
        plain(
            "icantsee",
            Message::ICantSee(ICantSee {
                cascade: cascade(3),
                hops_left: 1,
                lost: NodeId(pat(0xC0)),
            }),
        ),
    ]);
    v.push((
        "broadcast".into(),
        Owned::Broadcast(OwnedBroadcast {
            origin: NodeId(pat(0xE0)),
            incarnation: 2,
            seq: 1,
            payload: b"hello, weft".to_vec(),
            proof: None,
        }),
        false,
    ));
    v.push((
        "broadcast_signed".into(),
        Owned::Broadcast(OwnedBroadcast {
            origin: NodeId(pat(0xE0)),
            incarnation: 2,
            seq: 1,
            payload: b"hello, weft".to_vec(),
            proof: Some(OriginProof {
                public_key: PublicKey(pat(0x40)),
                signature: Signature(pat(0x80)),
            }),
        }),
        false,
    ));
    v.push((
        "broadcast_empty_payload_max_seq".into(),
        Owned::Broadcast(OwnedBroadcast {
            origin: NodeId(pat(0xE0)),
            incarnation: 2,
            seq: u64::MAX,
            payload: vec![],
            proof: None,
        }),
        false,
    ));
    v.push((
        "broadcast_compressed".into(),
        Owned::Broadcast(OwnedBroadcast {
            origin: NodeId(pat(0xE0)),
            incarnation: 2,
            seq: 2,
            payload: b"0123456789abcdef".repeat(16),
            proof: None,
        }),
        true,
    ));
    v.push((
        "iknowabout_compressed".into(),
        Owned::Plain(Message::IKnowAbout(IKnowAbout {
            cascade: cascade(4),
            hops_left: 4,
            peers: (1..=8)
                .map(|i| PeerInfo {
                    node: NodeId([i; 32]),
                    addr: format!("10.0.0.{i}:7946"),
                })
                .collect(),
        })),
        true,
    ));

    // Mesh repair.
    let range = |first, last| SeqRange { first, last };
    let entry = |start: u8, incarnation, ranges: Vec<SeqRange>| DigestEntry {
        origin: NodeId(pat(start)),
        incarnation,
        ranges,
    };
    let want = |start: u8, incarnation, first, last| WantRange {
        origin: NodeId(pat(start)),
        incarnation,
        range: range(first, last),
    };
    v.extend([
        plain(
            "mesh_digest_empty",
            Message::MeshDigest(MeshDigest { entries: vec![] }),
        ),
        plain(
            "mesh_digest",
            Message::MeshDigest(MeshDigest {
                entries: vec![
                    entry(0xE0, 2, vec![range(1, 1), range(3, 7), range(10, 300)]),
                    entry(0x10, 0, vec![range(1, u64::MAX)]),
                    // An entry without ranges: pointless, but within the rules.
                    entry(0x30, u64::MAX, vec![]),
                ],
            }),
        ),
        plain(
            "mesh_digest_ranges_at_limit",
            Message::MeshDigest(MeshDigest {
                entries: vec![entry(
                    0xE0,
                    3,
                    (0..RANGES_PER_ENTRY_MAX as u64)
                        .map(|i| range(2 * i + 1, 2 * i + 1))
                        .collect(),
                )],
            }),
        ),
        plain(
            "mesh_want_empty",
            Message::MeshWant(MeshWant { wants: vec![] }),
        ),
        plain(
            "mesh_want",
            Message::MeshWant(MeshWant {
                wants: vec![
                    want(0xE0, 2, 2, 2),
                    want(0xE0, 2, 8, 9),
                    want(0x10, 0, 1, u64::MAX),
                ],
            }),
        ),
    ]);
    let write = |key: &[u8], value: Option<&[u8]>, lease: Option<u64>| {
        signed(TableWrite {
            hlc: Hlc {
                ms: 1_800_000_000_000,
                logical: 3,
            },
            node: NodeId::default(),
            incarnation: 2,
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            lease_until_ms: lease,
            public_key: PublicKey::default(),
            signature: Signature::default(),
        })
    };
    v.extend([
        plain(
            "table_write_set",
            Message::TableWrite(write(b"colour", Some(b"blue"), None)),
        ),
        plain(
            "table_write_set_with_lease",
            Message::TableWrite(write(b"leader", Some(b"n7"), Some(1_800_000_030_000))),
        ),
        plain(
            "table_write_delete",
            Message::TableWrite(write(b"colour", None, None)),
        ),
        plain(
            "table_write_empty_value_largest_integers",
            Message::TableWrite(signed(TableWrite {
                hlc: Hlc {
                    ms: u64::MAX - 1,
                    logical: u32::MAX,
                },
                node: NodeId::default(),
                incarnation: u64::MAX,
                key: vec![0],
                value: Some(vec![]),
                lease_until_ms: Some(u64::MAX),
                public_key: PublicKey::default(),
                signature: Signature::default(),
            })),
        ),
        plain(
            "table_digest",
            Message::TableDigest(TableDigest {
                bits: 8,
                buckets: vec![
                    BucketHash {
                        bucket: 0,
                        hash: pat(0x10),
                    },
                    BucketHash {
                        bucket: 200,
                        hash: pat(0x80),
                    },
                    BucketHash {
                        bucket: TABLE_BUCKETS - 1,
                        hash: [0xFF; 8],
                    },
                ],
            }),
        ),
        plain(
            "table_digest_empty",
            Message::TableDigest(TableDigest {
                bits: 0,
                buckets: vec![],
            }),
        ),
        plain(
            "table_want",
            Message::TableWant(TableWant {
                bits: 8,
                buckets: vec![0, 7, 255],
                salt: 0,
                held: vec![],
            }),
        ),
        plain(
            "table_want_two_buckets",
            Message::TableWant(TableWant {
                bits: 1,
                buckets: vec![0, 1],
                salt: 0x0123_4567_89ab_cdef,
                held: vec![
                    write(b"colour", Some(b"blue"), None).fingerprint(0x0123_4567_89ab_cdef),
                    [0xff; 8],
                ],
            }),
        ),
        plain(
            "table_entries",
            Message::TableEntries(TableEntries {
                writes: vec![
                    write(b"colour", Some(b"blue"), None),
                    write(b"gone", None, None),
                ],
            }),
        ),
    ]);
    v.push((
        "table_entries_compressed".into(),
        Owned::Plain(Message::TableEntries(TableEntries {
            writes: (0..8u8)
                .map(|i| write(&[b'k', i], Some(&b"0123456789abcdef".repeat(4)), None))
                .collect(),
        })),
        true,
    ));
    // The same fields as the BROADCAST vectors: a repair resends a broadcast's payload.
    v.push((
        "mesh_repair".into(),
        Owned::Repair(OwnedBroadcast {
            origin: NodeId(pat(0xE0)),
            incarnation: 2,
            seq: 1,
            payload: b"hello, weft".to_vec(),
            proof: None,
        }),
        false,
    ));
    v.push((
        "mesh_repair_signed".into(),
        Owned::Repair(OwnedBroadcast {
            origin: NodeId(pat(0xE0)),
            incarnation: 2,
            seq: 1,
            payload: b"hello, weft".to_vec(),
            proof: Some(OriginProof {
                public_key: PublicKey(pat(0x40)),
                signature: Signature(pat(0x80)),
            }),
        }),
        false,
    ));
    v.push((
        "mesh_repair_empty_payload_max_seq".into(),
        Owned::Repair(OwnedBroadcast {
            origin: NodeId(pat(0xE0)),
            incarnation: 2,
            seq: u64::MAX,
            payload: vec![],
            proof: None,
        }),
        false,
    ));
    v.push((
        "mesh_repair_compressed".into(),
        Owned::Repair(OwnedBroadcast {
            origin: NodeId(pat(0xE0)),
            incarnation: 2,
            seq: 2,
            payload: b"0123456789abcdef".repeat(16),
            proof: None,
        }),
        true,
    ));
    v.push((
        "mesh_digest_compressed".into(),
        Owned::Plain(Message::MeshDigest(MeshDigest {
            entries: (1..=8)
                .map(|i| DigestEntry {
                    origin: NodeId([i; 32]),
                    incarnation: 1,
                    ranges: vec![range(1, 100), range(102, 200)],
                })
                .collect(),
        })),
        true,
    ));
    v.push((
        "mesh_want_compressed".into(),
        Owned::Plain(Message::MeshWant(MeshWant {
            wants: (0..8)
                .map(|i| WantRange {
                    origin: NodeId([0x42; 32]),
                    incarnation: 5,
                    range: range(10 * i + 1, 10 * i + 5),
                })
                .collect(),
        })),
        true,
    ));
    v.extend(chord_cases());
    v.extend(replica_cases());
    v.extend(drop_cases());
    v.extend(run_cases());
    v
}

/// A varint-prefixed peer entry written by hand.
fn raw_peer(node: u8, addr: &[u8]) -> Vec<u8> {
    let mut out = vec![node; 32];
    out.extend_from_slice(&string(addr));
    out
}

/// A HELLO payload written by hand around the given listen address bytes.
fn raw_hello(addr: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&pat::<32>(0x00));
    p.extend_from_slice(&pat::<32>(0x20));
    p.extend_from_slice(&pat::<32>(0x40));
    p.extend_from_slice(&varint(1));
    p.push(1);
    p.extend_from_slice(&string(addr));
    p.extend_from_slice(&varint(1));
    p.extend_from_slice(&varint(0b1111));
    p.push(0);
    p
}

/// A hand-written `SeqRange`: two varints, valid or not.
fn raw_range(first: u64, last: u64) -> Vec<u8> {
    [varint(first), varint(last)].concat()
}

/// A hand-written MESH_DIGEST with one entry (origin `pat(0xE0)`, incarnation 2) per element
/// of `entries`, each listing its ranges.
fn raw_digest(entries: &[Vec<(u64, u64)>]) -> Vec<u8> {
    let mut p = varint(entries.len() as u64);
    for ranges in entries {
        p.extend_from_slice(&pat::<32>(0xE0));
        p.extend_from_slice(&varint(2));
        p.extend_from_slice(&varint(ranges.len() as u64));
        for &(first, last) in ranges {
            p.extend_from_slice(&raw_range(first, last));
        }
    }
    p
}

/// A hand-written MESH_WANT with one want (origin `pat(0xE0)`, incarnation 2) per range.
fn raw_want(ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut p = varint(ranges.len() as u64);
    for &(first, last) in ranges {
        p.extend_from_slice(&pat::<32>(0xE0));
        p.extend_from_slice(&varint(2));
        p.extend_from_slice(&raw_range(first, last));
    }
    p
}

/// A compressed frame around a payload written by hand.
fn raw_compressed(code: Code, payload: &[u8]) -> Vec<u8> {
    raw_frame(
        1,
        1,
        code.0,
        &compress_if_smaller(payload).expect("compressible"),
    )
}

/// (name, error, description, bytes) for every invalid vector, written byte by byte.
fn invalid_cases() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>)> {
    let ping = Code::PING.0;
    let mut over_max = (FRAME_BODY_BYTES_MAX as u32 + 1).to_be_bytes().to_vec();
    over_max.extend_from_slice(&[1, 0, 0, 3]);
    let mut too_many_peers = vec![0xA0; 32];
    too_many_peers.extend_from_slice(&varint(1)); // cascade seq
    too_many_peers.push(2); // hops_left
    too_many_peers.extend_from_slice(&varint(PEERS_PER_MESSAGE_MAX as u64 + 1));
    for i in 0..=PEERS_PER_MESSAGE_MAX {
        too_many_peers.extend_from_slice(&raw_peer(i as u8, b"p:1"));
    }
    let broadcast_seq0 = [&[0xE0; 32][..], &varint(2), &varint(0), &string(b"x"), &[0]].concat();
    let mut bad_option = raw_hello(b"");
    bad_option[32 * 3 + 1] = 2;
    let mut too_big = (PAYLOAD_BYTES_MAX as u32 + 1).to_be_bytes().to_vec();
    too_big.extend_from_slice(&[0x10, 0x00]);
    let mut bomb = (PAYLOAD_BYTES_MAX as u32).to_be_bytes().to_vec();
    bomb.extend_from_slice(&[0; 8]);
    let bad_block = [&100u32.to_be_bytes()[..], &[0xF0, 0xFF]].concat();
    // One literal 'a', then a 4-byte match at offset 1 (a valid block of "aaaaa" plus the
    // five final literals) announcing one byte too many.
    let short_block = [
        &11u32.to_be_bytes()[..],
        &[0x10, b'a', 0x01, 0x00, 0x50],
        b"bbbbb",
    ]
    .concat();
    let too_many_entries = raw_digest(&vec![vec![(1, 1)]; DIGEST_ENTRIES_MAX + 1]);
    let too_many_ranges = raw_digest(&[(0..RANGES_PER_ENTRY_MAX as u64 + 1)
        .map(|i| (2 * i + 1, 2 * i + 1))
        .collect()]);
    let too_many_wants = raw_want(
        &(1..=WANT_RANGES_MAX as u64 + 1)
            .map(|i| (i, i))
            .collect::<Vec<_>>(),
    );
    let repair_seq0 = [&[0xE0; 32][..], &varint(2), &varint(0), &string(b"x"), &[0]].concat();
    // The vector writer's key, and its node id: only the fault named is wrong.
    let writer_key = vector_writer().verifying_key().to_bytes();
    let writer = NodeId::from_public_key(&PublicKey(writer_key));
    let raw_write_by = |node: [u8; 32], key: &[u8], value: Option<&[u8]>, lease: Option<u64>| {
        let mut p = [
            varint(1_800_000_000_000),
            varint(0),
            node.to_vec(),
            varint(2),
        ]
        .concat();
        p.extend_from_slice(&string(key));
        match value {
            None => p.push(0),
            Some(v) => {
                p.push(1);
                p.extend_from_slice(&string(v));
            }
        }
        match lease {
            None => p.push(0),
            Some(l) => {
                p.push(1);
                p.extend_from_slice(&varint(l));
            }
        }
        p.extend_from_slice(&writer_key);
        p.extend_from_slice(&[0x5A; 64]);
        p
    };
    let raw_write = |key: &[u8], value: Option<&[u8]>, lease: Option<u64>| {
        raw_write_by(writer.0, key, value, lease)
    };
    let too_many_writes = {
        let mut p = varint(TABLE_OPS_PER_MESSAGE_MAX as u64 + 1);
        for _ in 0..=TABLE_OPS_PER_MESSAGE_MAX {
            p.extend_from_slice(&raw_write(b"k", Some(b"v"), None));
        }
        p
    };
    let too_many_held = {
        // bits 0, one bucket (0), salt 0, then TABLE_WANT_HELD_MAX + 1 fingerprints.
        let mut p = [&[0u8][..], &varint(1), &varint(0), &varint(0)].concat();
        p.extend_from_slice(&varint(TABLE_WANT_HELD_MAX as u64 + 1));
        p.resize(p.len() + 8 * (TABLE_WANT_HELD_MAX + 1), 0xab);
        p
    };

    vec![
        (
            "frame_too_large",
            "FrameTooLarge",
            "length prefix one above the largest allowed body (FRAME_BODY_BYTES_MAX + 1)",
            over_max,
        ),
        (
            "frame_too_large_4gib",
            "FrameTooLarge",
            "length prefix 0xffffffff alone: refuse after these four bytes",
            vec![0xFF; 4],
        ),
        (
            "frame_too_short",
            "FrameTooShort",
            "length prefix 3: shorter than version, flags and code",
            vec![0, 0, 0, 3, 1, 0, 0],
        ),
        (
            "unknown_command",
            "UnknownCommand",
            "code 0x0006 is not in the registry",
            raw_frame(1, 0, 0x0006, &[0]),
        ),
        (
            "unknown_command_no_family",
            "UnknownCommand",
            "code 0x0700 lies in no family",
            raw_frame(1, 0, 0x0700, &[0]),
        ),
        (
            "unknown_command_unassigned_mesh",
            "UnknownCommand",
            "code 0x01ff lies in the Mesh family but is not assigned",
            raw_frame(1, 0, 0x01FF, &[0]),
        ),
        (
            "unsupported_version",
            "UnsupportedVersion",
            "version byte 2",
            raw_frame(2, 0, ping, &[1]),
        ),
        (
            "reserved_flags",
            "ReservedFlags",
            "flags bit 1 set",
            raw_frame(1, 0x02, ping, &[1]),
        ),
        (
            "truncated_header",
            "Truncated",
            "six bytes of a PING frame's header",
            raw_frame(1, 0, ping, &[1])[..6].to_vec(),
        ),
        (
            "truncated_payload",
            "Truncated",
            "PING frame announcing a 2-byte payload, 1 byte present",
            raw_frame(1, 0, ping, &varint(300))[..9].to_vec(),
        ),
        (
            "truncated_compressed_payload",
            "Truncated",
            "compressed flag set, payload shorter than its 4-byte decompressed length",
            raw_frame(1, 1, Code::BROADCAST.0, &[0, 0]),
        ),
        (
            "malformed_payload_missing_field",
            "MalformedPayload",
            "PING with an empty payload",
            raw_frame(1, 0, ping, &[]),
        ),
        (
            "malformed_payload_trailing_bytes",
            "MalformedPayload",
            "PONG with a byte after its nonce",
            raw_frame(1, 0, Code::PONG.0, &[5, 0]),
        ),
        (
            "malformed_payload_bad_utf8",
            "MalformedPayload",
            "HELLO whose listen address is not UTF-8",
            raw_frame(1, 0, Code::HELLO.0, &raw_hello(&[b'a', 0xFF, b'b'])),
        ),
        (
            "malformed_payload_address_too_long",
            "MalformedPayload",
            "HELLO whose listen address is ADDR_BYTES_MAX + 1 bytes",
            raw_frame(1, 0, Code::HELLO.0, &raw_hello(&[b'x'; ADDR_BYTES_MAX + 1])),
        ),
        (
            "malformed_payload_bad_option_tag",
            "MalformedPayload",
            "HELLO whose listen address option tag is 2",
            raw_frame(1, 0, Code::HELLO.0, &bad_option),
        ),
        (
            "malformed_payload_unknown_bye_reason",
            "MalformedPayload",
            "BYE with reason index 10",
            raw_frame(1, 0, Code::BYE.0, &[10]),
        ),
        (
            "malformed_payload_too_many_peers",
            "MalformedPayload",
            "IKNOWABOUT listing PEERS_PER_MESSAGE_MAX + 1 peers",
            raw_frame(1, 0, Code::IKNOWABOUT.0, &too_many_peers),
        ),
        (
            "malformed_payload_broadcast_seq_zero",
            "MalformedPayload",
            "BROADCAST with sequence number 0",
            raw_frame(1, 0, Code::BROADCAST.0, &broadcast_seq0),
        ),
        (
            "malformed_payload_mesh_repair_seq_zero",
            "MalformedPayload",
            "MESH_REPAIR with sequence number 0",
            raw_frame(1, 0, Code::MESH_REPAIR.0, &repair_seq0),
        ),
        (
            "malformed_payload_too_many_digest_entries",
            "MalformedPayload",
            "MESH_DIGEST with DIGEST_ENTRIES_MAX + 1 entries (compressed; it inflates fine)",
            raw_compressed(Code::MESH_DIGEST, &too_many_entries),
        ),
        (
            "malformed_payload_too_many_ranges_in_entry",
            "MalformedPayload",
            "MESH_DIGEST whose one entry lists RANGES_PER_ENTRY_MAX + 1 ranges",
            raw_frame(1, 0, Code::MESH_DIGEST.0, &too_many_ranges),
        ),
        (
            "malformed_payload_digest_range_first_after_last",
            "MalformedPayload",
            "MESH_DIGEST whose entry's second range is 5..=4",
            raw_frame(
                1,
                0,
                Code::MESH_DIGEST.0,
                &raw_digest(&[vec![(1, 1), (5, 4)]]),
            ),
        ),
        (
            "malformed_payload_digest_range_first_zero",
            "MalformedPayload",
            "MESH_DIGEST with a range 0..=3",
            raw_frame(1, 0, Code::MESH_DIGEST.0, &raw_digest(&[vec![(0, 3)]])),
        ),
        (
            "malformed_payload_too_many_wants",
            "MalformedPayload",
            "MESH_WANT with WANT_RANGES_MAX + 1 ranges (compressed; it inflates fine)",
            raw_compressed(Code::MESH_WANT, &too_many_wants),
        ),
        (
            "malformed_payload_want_range_first_after_last",
            "MalformedPayload",
            "MESH_WANT whose second range is 9..=8",
            raw_frame(1, 0, Code::MESH_WANT.0, &raw_want(&[(1, 2), (9, 8)])),
        ),
        (
            "malformed_payload_want_range_first_zero",
            "MalformedPayload",
            "MESH_WANT with a range 0..=2",
            raw_frame(1, 0, Code::MESH_WANT.0, &raw_want(&[(0, 2)])),
        ),
        (
            "malformed_payload_table_write_empty_key",
            "MalformedPayload",
            "TABLE_WRITE with an empty key",
            raw_frame(1, 0, Code::TABLE_WRITE.0, &raw_write(b"", Some(b"v"), None)),
        ),
        (
            "malformed_payload_table_write_key_too_long",
            "MalformedPayload",
            "TABLE_WRITE whose key is TABLE_KEY_BYTES_MAX + 1 bytes",
            raw_frame(
                1,
                0,
                Code::TABLE_WRITE.0,
                &raw_write(&[b'k'; TABLE_KEY_BYTES_MAX + 1], Some(b"v"), None),
            ),
        ),
        (
            "malformed_payload_table_write_lease_not_after_write",
            "MalformedPayload",
            "TABLE_WRITE whose lease ends at its own hlc.ms",
            raw_frame(
                1,
                0,
                Code::TABLE_WRITE.0,
                &raw_write(b"k", Some(b"v"), Some(1_800_000_000_000)),
            ),
        ),
        (
            "malformed_payload_table_write_node_not_key_hash",
            "MalformedPayload",
            "TABLE_WRITE whose node is not BLAKE3 of its public key",
            raw_frame(
                1,
                0,
                Code::TABLE_WRITE.0,
                &raw_write_by([0xE0; 32], b"k", Some(b"v"), None),
            ),
        ),
        (
            "malformed_payload_table_delete_with_lease",
            "MalformedPayload",
            "TABLE_WRITE deleting (no value) yet taking a lease",
            raw_frame(
                1,
                0,
                Code::TABLE_WRITE.0,
                &raw_write(b"k", None, Some(1_800_000_009_000)),
            ),
        ),
        (
            "malformed_payload_table_digest_buckets_unordered",
            "MalformedPayload",
            "TABLE_DIGEST (8 bits) listing bucket 5 before bucket 4",
            raw_frame(
                1,
                0,
                Code::TABLE_DIGEST.0,
                &[&[8][..], &varint(2), &varint(5), &[1; 8], &varint(4), &[2; 8]].concat(),
            ),
        ),
        (
            "malformed_payload_table_digest_too_many_bits",
            "MalformedPayload",
            "TABLE_DIGEST of 9 bits (TABLE_BUCKET_BITS_MAX + 1)",
            raw_frame(1, 0, Code::TABLE_DIGEST.0, &[9, 0]),
        ),
        (
            "malformed_payload_table_want_bucket_out_of_range",
            "MalformedPayload",
            "TABLE_WANT of 2 bits naming bucket 4",
            raw_frame(1, 0, Code::TABLE_WANT.0, &[&[2][..], &varint(1), &varint(4), &[0, 0]].concat()),
        ),
        (
            "malformed_payload_table_want_too_many_held",
            "MalformedPayload",
            "TABLE_WANT listing TABLE_WANT_HELD_MAX + 1 fingerprints (compressed; it inflates fine)",
            raw_compressed(Code::TABLE_WANT, &too_many_held),
        ),
        (
            "malformed_payload_too_many_table_writes",
            "MalformedPayload",
            "TABLE_ENTRIES with TABLE_OPS_PER_MESSAGE_MAX + 1 writes (compressed; it inflates fine)",
            raw_compressed(Code::TABLE_ENTRIES, &too_many_writes),
        ),
        (
            "decompressed_too_large",
            "DecompressedTooLarge",
            "compressed payload announcing PAYLOAD_BYTES_MAX + 1 bytes",
            raw_frame(1, 1, Code::BROADCAST.0, &too_big),
        ),
        (
            "bad_compression",
            "BadCompression",
            "announces 100 bytes; the lz4 block ends inside its literal run",
            raw_frame(1, 1, Code::BROADCAST.0, &bad_block),
        ),
        (
            "bad_compression_size_mismatch",
            "BadCompression",
            "a valid lz4 block of 10 bytes announced as 11",
            raw_frame(1, 1, Code::BROADCAST.0, &short_block),
        ),
        (
            "bad_compression_bomb",
            "BadCompression",
            "announces PAYLOAD_BYTES_MAX bytes from an 8-byte block: more than lz4 can expand to",
            raw_frame(1, 1, Code::BROADCAST.0, &bomb),
        ),
    ]
}

fn build() -> VectorFile {
    let vectors = valid_cases()
        .into_iter()
        .map(|(name, owned, compressed)| {
            let msg = owned.as_message();
            let frame = msg.to_frame(compressed);
            assert_eq!(frame.flags().compressed(), compressed, "{name}");
            Vector {
                name,
                code: msg.code().0,
                code_name: msg.code().name().to_string(),
                compressed,
                fields: fields_of(&msg),
                payload_hex: hex(&msg.encode_payload()),
                frame_hex: hex(frame.bytes()),
            }
        })
        .collect();
    let invalid = invalid_cases()
        .into_iter()
        .chain(chord_invalid_cases())
        .chain(replica_invalid_cases())
        .chain(drop_invalid_cases())
        .chain(run_invalid_cases())
        .map(|(name, error, description, bytes)| Invalid {
            name: name.into(),
            error: error.into(),
            description: description.into(),
            frame_hex: hex(&bytes),
        })
        .collect();
    VectorFile {
        version: VERSION,
        description: DESCRIPTION.into(),
        vectors,
        invalid,
    }
}

fn render(file: &VectorFile) -> String {
    let mut text = serde_json::to_string_pretty(file).expect("serializable");
    text.push('\n');
    text
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors.json")
}

/// The committed file's text; with `WEFT_WRITE_VECTORS=1`, first rewritten from the code.
fn committed() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        if std::env::var("WEFT_WRITE_VECTORS").as_deref() == Ok("1") {
            std::fs::write(path(), render(&build())).expect("write vectors.json");
        }
        std::fs::read_to_string(path()).expect("read protocol/vectors.json")
    })
}

fn committed_file() -> VectorFile {
    serde_json::from_str(committed()).expect("vectors.json parses")
}

// =============================================================================================
// The checks

#[test]
fn committed_file_matches_the_code() {
    let expected = render(&build());
    let actual = committed();
    if actual != expected {
        let line = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .map_or(actual.lines().count().min(expected.lines().count()), |i| i);
        panic!(
            "protocol/vectors.json differs from what the code produces (first at line {}); \
             rerun with WEFT_WRITE_VECTORS=1 if the change is intended",
            line + 1
        );
    }
}

#[test]
fn every_vector_decodes_to_its_fields_and_back() {
    let file = committed_file();
    assert_eq!(file.version, VERSION);
    for v in &file.vectors {
        let bytes = Bytes::from(unhex(&v.frame_hex));
        let frame = Frame::parse(bytes.clone()).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(frame.code(), Code(v.code), "{}", v.name);
        assert_eq!(frame.code().name(), v.code_name, "{}", v.name);
        assert_eq!(frame.flags().compressed(), v.compressed, "{}", v.name);
        let payload = frame.payload().unwrap();
        assert_eq!(hex(&payload), v.payload_hex, "{}", v.name);
        if !v.compressed {
            assert_eq!(frame.wire_payload(), payload, "{}", v.name);
        }
        let msg = Message::decode(frame.code(), &payload).unwrap();
        assert_eq!(fields_of(&msg), v.fields, "{}", v.name);

        // And back: the fields alone give the same payload and frame.
        let owned = from_fields(&v.code_name, &v.fields);
        assert_eq!(owned.as_message(), msg, "{}", v.name);
        assert_eq!(hex(&msg.encode_payload()), v.payload_hex, "{}", v.name);
        assert_eq!(
            hex(owned.as_message().to_frame(v.compressed).bytes()),
            v.frame_hex
        );

        // A stream decoder fed one byte at a time yields the same frame.
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for i in 0..bytes.len() {
            dec.push(bytes.slice(i..i + 1));
            got.extend(dec.next_frame().unwrap());
        }
        assert_eq!(got, vec![frame], "{}", v.name);
        assert_eq!(dec.finish(), Ok(()));
    }
}

#[test]
fn all_vectors_as_one_stream() {
    let file = committed_file();
    let wire: Vec<u8> = file
        .vectors
        .iter()
        .flat_map(|v| unhex(&v.frame_hex))
        .collect();
    let mut dec = FrameDecoder::new();
    dec.push(Bytes::from(wire));
    let mut names = Vec::new();
    while let Some(frame) = dec.next_frame().unwrap() {
        names.push(hex(frame.bytes()));
    }
    dec.finish().unwrap();
    let expected: Vec<_> = file.vectors.iter().map(|v| v.frame_hex.clone()).collect();
    assert_eq!(names, expected);
}

/// Parse as one frame, inflate, decode.
fn parse_path(bytes: &[u8]) -> Result<(), ProtocolError> {
    let frame = Frame::parse(Bytes::copy_from_slice(bytes))?;
    let payload = frame.payload()?;
    Message::decode(frame.code(), &payload).map(drop)
}

/// Push into a stream decoder, take every frame, then end the stream.
fn stream_path(bytes: &[u8]) -> Result<(), ProtocolError> {
    let mut dec = FrameDecoder::new();
    dec.push(Bytes::copy_from_slice(bytes));
    while let Some(frame) = dec.next_frame()? {
        let payload = frame.payload()?;
        Message::decode(frame.code(), &payload)?;
    }
    dec.finish()
}

/// The command code in a frame's header, if it has one.
fn header_code(bytes: &[u8]) -> Option<Code> {
    Some(Code(u16::from_be_bytes([*bytes.get(6)?, *bytes.get(7)?])))
}

#[test]
fn every_invalid_frame_fails_with_the_named_error() {
    let file = committed_file();
    for inv in &file.invalid {
        let bytes = unhex(&inv.frame_hex);
        let err = parse_path(&bytes).expect_err(&inv.name);
        assert_eq!(error_name(&err), inv.error, "{}: {err:?}", inv.name);
        if let ProtocolError::MalformedPayload { code, .. } = err {
            assert_eq!(Some(code), header_code(&bytes), "{}", inv.name);
        }
        assert_eq!(stream_path(&bytes), Err(err), "{}", inv.name);
    }
}

#[test]
fn the_4gib_prefix_vector_is_refused_from_its_four_bytes() {
    let file = committed_file();
    let inv = file
        .invalid
        .iter()
        .find(|i| i.name == "frame_too_large_4gib")
        .expect("present");
    let mut dec = FrameDecoder::new();
    dec.push(Bytes::from(unhex(&inv.frame_hex)));
    assert!(matches!(
        dec.next_frame(),
        Err(ProtocolError::FrameTooLarge {
            len: 0xFFFF_FFFF,
            ..
        })
    ));
}

#[test]
fn the_vectors_cover_every_message_reason_and_error() {
    let file = committed_file();
    let mut codes: Vec<u16> = file.vectors.iter().map(|v| v.code).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes, Code::ALL.map(|c| c.0).to_vec());

    for r in ALL_REASONS {
        assert!(
            file.vectors
                .iter()
                .any(|v| v.code == Code::BYE.0 && v.fields["reason"] == format!("{r:?}")),
            "no vector for {r:?}"
        );
    }
    assert!(file.vectors.iter().any(|v| v.compressed));

    // Every code with checks beyond postcard's has a payload that fails them.
    for code in [
        Code::HELLO,
        Code::IKNOWABOUT,
        Code::BROADCAST,
        Code::MESH_DIGEST,
        Code::MESH_WANT,
        Code::MESH_REPAIR,
        Code::TABLE_WRITE,
        Code::TABLE_DIGEST,
        Code::TABLE_WANT,
        Code::TABLE_ENTRIES,
        Code::CHORD_FOUND,
        Code::CHORD_FETCH,
        Code::CHORD_STORE,
        Code::CHORD_VALUES,
        Code::CHORD_NOTIFY,
        Code::LIST,
        Code::IHAVE,
        Code::IMOVED,
        Code::IDELETED,
        Code::IWANT,
        Code::HEREIS,
        Code::NOTFOUND,
        Code::IREFUSE,
        Code::DROP_SUBSCRIBE,
        Code::DROP_HEADS,
        Code::DROP_VERSION,
        Code::DROP_GET_FILES,
        Code::DROP_FILES,
        Code::DROP_NOTFOUND,
        Code::RUN_REQUEST,
        Code::RUN_REFUSED,
        Code::RUN_OUTPUT,
        Code::RUN_SIGNAL,
        Code::RUN_EXIT,
    ] {
        assert!(
            file.invalid.iter().any(|i| i.error == "MalformedPayload"
                && header_code(&unhex(&i.frame_hex)) == Some(code)),
            "no MalformedPayload vector for {code:?}"
        );
    }
    for name in [
        "malformed_payload_too_many_digest_entries",
        "malformed_payload_too_many_ranges_in_entry",
        "malformed_payload_digest_range_first_after_last",
        "malformed_payload_digest_range_first_zero",
        "malformed_payload_too_many_wants",
        "malformed_payload_want_range_first_after_last",
        "malformed_payload_want_range_first_zero",
        "malformed_payload_mesh_repair_seq_zero",
    ] {
        assert!(file.invalid.iter().any(|i| i.name == name), "no {name}");
    }

    let mut errors: Vec<&str> = file.invalid.iter().map(|i| i.error.as_str()).collect();
    errors.sort();
    errors.dedup();
    let mut all = ALL_ERRORS.to_vec();
    all.sort();
    assert_eq!(errors, all);

    let mut names: Vec<&str> = file
        .vectors
        .iter()
        .map(|v| v.name.as_str())
        .chain(file.invalid.iter().map(|i| i.name.as_str()))
        .collect();
    let count = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), count, "vector names are unique");
}

#[test]
fn mesh_repair_vectors_carry_the_broadcast_payload() {
    // A node answers MESH_WANT by resending a held BROADCAST's payload under MESH_REPAIR.
    let file = committed_file();
    let mut pairs = 0;
    for r in file
        .vectors
        .iter()
        .filter(|v| v.code == Code::MESH_REPAIR.0)
    {
        let b = file
            .vectors
            .iter()
            .find(|b| b.code == Code::BROADCAST.0 && b.fields == r.fields)
            .unwrap_or_else(|| panic!("{}: no BROADCAST vector with its fields", r.name));
        assert_eq!(r.payload_hex, b.payload_hex, "{}", r.name);
        assert_eq!(r.compressed, b.compressed, "{}", r.name);
        let (rf, bf) = (unhex(&r.frame_hex), unhex(&b.frame_hex));
        assert_eq!(
            rf[..6],
            bf[..6],
            "{}: same length, version and flags",
            r.name
        );
        assert_eq!(rf[8..], bf[8..], "{}: same wire payload", r.name);
        pairs += 1;
    }
    assert!(pairs > 0);
}

#[test]
fn the_size_mismatch_block_is_otherwise_valid() {
    // The `bad_compression_size_mismatch` block, announced with its true size, inflates.
    let block = [
        &10u32.to_be_bytes()[..],
        &[0x10, b'a', 0x01, 0x00, 0x50],
        b"bbbbb",
    ]
    .concat();
    assert_eq!(
        weft_protocol::compress::decompress(&block).unwrap(),
        b"aaaaabbbbb"
    );
}

// =============================================================================================
// Chord (SPEC.md §20)

fn chord_peer_json(p: &ChordPeer) -> Value {
    obj([("node", hexv(&p.node.0)), ("addr", p.addr.clone().into())])
}

fn chord_peers_json(peers: &[ChordPeer]) -> Value {
    Value::Array(peers.iter().map(chord_peer_json).collect())
}

fn store_op_json(op: &StoreOp) -> Value {
    match op {
        StoreOp::Put(v) => obj([("put", hexv(v))]),
        StoreOp::Delete(v) => obj([("delete", v.as_deref().map_or(Value::Null, hexv))]),
    }
}

fn chord_value_json(v: &ChordValue) -> Value {
    obj([
        ("writer", hexv(&v.writer.0)),
        ("seq", v.seq.into()),
        ("op", store_op_json(&v.op)),
        (
            "lifetime_ms",
            v.lifetime_ms.map_or(Value::Null, Value::from),
        ),
        ("signature", hexv(&v.signature.0)),
    ])
}

fn chord_values_json(values: &[ChordValue]) -> Value {
    Value::Array(values.iter().map(chord_value_json).collect())
}

/// A chord message's fields as JSON: peers as {node, addr}, values as {value, lifetime_ms},
/// a store op as {"put": value} or {"delete": hex or null}.
fn chord_fields(m: &ChordMessage) -> Value {
    match m {
        ChordMessage::Find(f) => obj([("request", f.request.into()), ("target", f.target.into())]),
        ChordMessage::Found(f) => obj([
            ("request", f.request.into()),
            ("done", f.done.into()),
            ("peers", chord_peers_json(&f.peers)),
        ]),
        ChordMessage::GetState(r) => obj([("request", (*r).into())]),
        ChordMessage::State(s) => obj([
            ("request", s.request.into()),
            (
                "predecessor",
                s.predecessor.as_ref().map_or(Value::Null, chord_peer_json),
            ),
            ("successors", chord_peers_json(&s.successors)),
        ]),
        ChordMessage::Notify => obj([]),
        ChordMessage::Store(s) => obj([
            ("request", s.request.into()),
            ("position", s.position.into()),
            ("key", hexv(&s.key)),
            ("value", chord_value_json(&s.value)),
        ]),
        ChordMessage::Stored(s) => obj([
            ("request", s.request.into()),
            ("outcome", format!("{:?}", s.outcome).into()),
        ]),
        ChordMessage::Fetch(f) => obj([
            ("request", f.request.into()),
            ("position", f.position.into()),
            ("key", hexv(&f.key)),
        ]),
        ChordMessage::Values(v) => obj([
            ("request", v.request.into()),
            ("values", chord_values_json(&v.values)),
        ]),
        ChordMessage::Handover(h) => obj([
            ("request", h.request.into()),
            (
                "records",
                Value::Array(
                    h.records
                        .iter()
                        .map(|r| {
                            obj([
                                ("position", r.position.into()),
                                ("key", hexv(&r.key)),
                                ("values", chord_values_json(&r.values)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]),
    }
}

fn get_chord_peer(p: &Value) -> ChordPeer {
    ChordPeer {
        node: NodeId(get_32(p, "node")),
        addr: get(p, "addr")
            .as_str()
            .expect("addr is a string")
            .to_string(),
    }
}

fn get_store_op(op: &Value) -> StoreOp {
    match op.get("put") {
        Some(_) => StoreOp::Put(get_bytes(op, "put")),
        None => StoreOp::Delete(match get(op, "delete") {
            Value::Null => None,
            _ => Some(get_bytes(op, "delete")),
        }),
    }
}

fn get_chord_value(v: &Value) -> ChordValue {
    ChordValue {
        writer: PublicKey(get_bytes(v, "writer").try_into().expect("32 bytes")),
        seq: get_u64(v, "seq"),
        op: get_store_op(get(v, "op")),
        lifetime_ms: get(v, "lifetime_ms").as_u64(),
        signature: Signature(get_bytes(v, "signature").try_into().expect("64 bytes")),
    }
}

fn get_store_outcome(f: &Value) -> StoreOutcome {
    match get(f, "outcome").as_str().expect("an outcome name") {
        "Stored" => StoreOutcome::Stored,
        "Stale" => StoreOutcome::Stale,
        "Invalid" => StoreOutcome::Invalid,
        "KeyFull" => StoreOutcome::KeyFull,
        "WriterFull" => StoreOutcome::WriterFull,
        "StoreFull" => StoreOutcome::StoreFull,
        other => panic!("unknown outcome {other}"),
    }
}

fn get_bool(f: &Value, key: &str) -> bool {
    get(f, key).as_bool().expect("a bool")
}

/// The chord message a vector's `fields` describe.
fn chord_from_fields(code_name: &str, f: &Value) -> ChordMessage {
    let values = |f: &Value| get_array(f, "values").iter().map(get_chord_value).collect();
    match code_name {
        "CHORD_FIND" => ChordMessage::Find(ChordFind {
            request: get_u64(f, "request"),
            target: get_u64(f, "target"),
        }),
        "CHORD_FOUND" => ChordMessage::Found(ChordFound {
            request: get_u64(f, "request"),
            done: get_bool(f, "done"),
            peers: get_array(f, "peers").iter().map(get_chord_peer).collect(),
        }),
        "CHORD_GET_STATE" => ChordMessage::GetState(get_u64(f, "request")),
        "CHORD_STATE" => ChordMessage::State(ChordState {
            request: get_u64(f, "request"),
            predecessor: match get(f, "predecessor") {
                Value::Null => None,
                p => Some(get_chord_peer(p)),
            },
            successors: get_array(f, "successors")
                .iter()
                .map(get_chord_peer)
                .collect(),
        }),
        "CHORD_NOTIFY" => ChordMessage::Notify,
        "CHORD_STORE" => ChordMessage::Store(ChordStore {
            request: get_u64(f, "request"),
            position: get_u64(f, "position"),
            key: get_bytes(f, "key"),
            value: get_chord_value(get(f, "value")),
        }),
        "CHORD_STORED" => ChordMessage::Stored(ChordStored {
            request: get_u64(f, "request"),
            outcome: get_store_outcome(f),
        }),
        "CHORD_FETCH" => ChordMessage::Fetch(ChordFetch {
            request: get_u64(f, "request"),
            position: get_u64(f, "position"),
            key: get_bytes(f, "key"),
        }),
        "CHORD_VALUES" => ChordMessage::Values(ChordValues {
            request: get_u64(f, "request"),
            values: values(f),
        }),
        "CHORD_HANDOVER" => ChordMessage::Handover(ChordHandover {
            request: get_u64(f, "request"),
            records: get_array(f, "records")
                .iter()
                .map(|r| ChordRecord {
                    position: get_u64(r, "position"),
                    key: get_bytes(r, "key"),
                    values: values(r),
                })
                .collect(),
        }),
        other => panic!("unknown code name {other}"),
    }
}

/// (name, message, compressed) for every chord vector.
fn chord_cases() -> Vec<(String, Owned, bool)> {
    let plain =
        |name: &str, m: ChordMessage| (name.to_string(), Owned::Plain(Message::Chord(m)), false);
    let peer = |start: u8, addr: &str| ChordPeer {
        node: NodeId(pat(start)),
        addr: addr.to_string(),
    };
    // Signatures here are patterns: the wire format does not check them (§20.1).
    let entry = |seq: u64, op: StoreOp, lifetime_ms| ChordValue {
        writer: PublicKey(pat(0xA0)),
        seq,
        op,
        lifetime_ms,
        signature: Signature(pat(0x40)),
    };
    let value = |v: &[u8], lifetime_ms| entry(1, StoreOp::Put(v.to_vec()), lifetime_ms);
    vec![
        plain(
            "chord_find",
            ChordMessage::Find(ChordFind {
                request: 1,
                target: 0x0123_4567_89AB_CDEF,
            }),
        ),
        plain(
            "chord_found_done",
            ChordMessage::Found(ChordFound {
                request: 1,
                done: true,
                peers: vec![peer(0x10, "192.0.2.1:7946"), peer(0x30, "192.0.2.2:7946")],
            }),
        ),
        plain(
            "chord_found_next_hops",
            ChordMessage::Found(ChordFound {
                request: u64::MAX,
                done: false,
                peers: vec![peer(0x50, "198.51.100.9:1")],
            }),
        ),
        plain("chord_get_state", ChordMessage::GetState(300)),
        plain(
            "chord_state",
            ChordMessage::State(ChordState {
                request: 300,
                predecessor: Some(peer(0x70, "203.0.113.1:7946")),
                successors: vec![peer(0x10, "192.0.2.1:7946")],
            }),
        ),
        plain(
            "chord_state_pushed_without_predecessor",
            ChordMessage::State(ChordState {
                request: 0,
                predecessor: None,
                successors: vec![],
            }),
        ),
        plain("chord_notify", ChordMessage::Notify),
        plain(
            "chord_store_put",
            ChordMessage::Store(ChordStore {
                request: 7,
                position: 42,
                key: b"drop/1".to_vec(),
                value: value(b"node-a", Some(60_000)),
            }),
        ),
        plain(
            "chord_store_delete_one",
            ChordMessage::Store(ChordStore {
                request: 8,
                position: u64::MAX,
                key: b"drop/1".to_vec(),
                value: entry(
                    2,
                    StoreOp::Delete(Some(b"node-a".to_vec())),
                    Some(86_400_000),
                ),
            }),
        ),
        plain(
            "chord_store_delete_all",
            ChordMessage::Store(ChordStore {
                request: 9,
                position: 0,
                key: vec![],
                value: entry(u64::MAX, StoreOp::Delete(None), None),
            }),
        ),
        plain(
            "chord_stored",
            ChordMessage::Stored(ChordStored {
                request: 7,
                outcome: StoreOutcome::Stored,
            }),
        ),
        plain(
            "chord_stored_writer_full",
            ChordMessage::Stored(ChordStored {
                request: 8,
                outcome: StoreOutcome::WriterFull,
            }),
        ),
        plain(
            "chord_fetch",
            ChordMessage::Fetch(ChordFetch {
                request: 10,
                position: 42,
                key: b"drop/1".to_vec(),
            }),
        ),
        plain(
            "chord_values",
            ChordMessage::Values(ChordValues {
                request: 10,
                values: vec![value(b"node-a", Some(59_000)), value(b"node-b", None)],
            }),
        ),
        plain(
            "chord_handover",
            ChordMessage::Handover(ChordHandover {
                request: 11,
                records: vec![ChordRecord {
                    position: 42,
                    key: b"drop/1".to_vec(),
                    values: vec![value(b"node-a", None)],
                }],
            }),
        ),
        (
            "chord_handover_compressed".into(),
            Owned::Plain(Message::Chord(ChordMessage::Handover(ChordHandover {
                request: 12,
                records: (0..8)
                    .map(|i| ChordRecord {
                        position: i,
                        key: b"drop/0123456789".to_vec(),
                        values: vec![value(b"node-0123456789", None)],
                    })
                    .collect(),
            }))),
            true,
        ),
    ]
}

/// Invalid chord frames: every chord limit broken once, and a NOTIFY with a payload.
fn chord_invalid_cases() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>)> {
    let peer = |n: u8| [vec![n; 32], string(b"a:1")].concat();
    let peers = |count: usize| {
        let mut p = varint(count as u64);
        for i in 0..count {
            p.extend_from_slice(&peer(i as u8));
        }
        p
    };
    let found = [varint(1), vec![1], peers(CHORD_PEERS_MAX + 1)].concat();
    let long_key = vec![b'k'; CHORD_KEY_BYTES_MAX + 1];
    let fetch = [varint(1), varint(2), string(&long_key)].concat();
    let big_value = vec![0u8; CHORD_VALUE_BYTES_MAX + 1];
    // request, position, key, value = { writer, seq, op = Put (0) bytes, lifetime None (0),
    // signature }
    let store = [
        varint(1),
        varint(2),
        string(b"k"),
        vec![7; 32],
        varint(1),
        vec![0],
        string(&big_value),
        vec![0],
        vec![9; 64],
    ]
    .concat();
    let mut values = varint(1);
    values.extend_from_slice(&varint(CHORD_VALUES_MAX as u64 + 1));
    for i in 0..=CHORD_VALUES_MAX {
        // writer, seq, op = Delete (1) None (0), lifetime None, signature
        values.extend_from_slice(
            &[vec![i as u8; 32], varint(1), vec![1, 0, 0], vec![9; 64]].concat(),
        );
    }
    vec![
        (
            "malformed_payload_chord_found_too_many_peers",
            "MalformedPayload",
            "CHORD_FOUND listing CHORD_PEERS_MAX + 1 peers",
            raw_frame(1, 0, Code::CHORD_FOUND.0, &found),
        ),
        (
            "malformed_payload_chord_fetch_key_too_long",
            "MalformedPayload",
            "CHORD_FETCH with a key of CHORD_KEY_BYTES_MAX + 1 bytes",
            raw_frame(1, 0, Code::CHORD_FETCH.0, &fetch),
        ),
        (
            "malformed_payload_chord_store_value_too_long",
            "MalformedPayload",
            "CHORD_STORE putting a value of CHORD_VALUE_BYTES_MAX + 1 bytes",
            raw_compressed(Code::CHORD_STORE, &store),
        ),
        (
            "malformed_payload_chord_values_too_many",
            "MalformedPayload",
            "CHORD_VALUES carrying CHORD_VALUES_MAX + 1 values",
            raw_frame(1, 0, Code::CHORD_VALUES.0, &values),
        ),
        (
            "malformed_payload_chord_notify_with_payload",
            "MalformedPayload",
            "CHORD_NOTIFY has no fields: one byte is a trailing byte",
            raw_frame(1, 0, Code::CHORD_NOTIFY.0, &[0]),
        ),
        (
            "malformed_payload_chord_store_unknown_op",
            "MalformedPayload",
            "CHORD_STORE whose value's op has variant index 2",
            raw_frame(
                1,
                0,
                Code::CHORD_STORE.0,
                &[
                    varint(1),
                    varint(2),
                    string(b"k"),
                    vec![7; 32],
                    varint(1),
                    vec![2],
                ]
                .concat(),
            ),
        ),
        (
            "malformed_payload_chord_stored_unknown_outcome",
            "MalformedPayload",
            "CHORD_STORED whose outcome has variant index 6",
            raw_frame(1, 0, Code::CHORD_STORED.0, &[varint(1), vec![6]].concat()),
        ),
        (
            "malformed_payload_chord_found_bool_2",
            "MalformedPayload",
            "CHORD_FOUND whose done byte is 02: a bool is 00 or 01",
            raw_frame(
                1,
                0,
                Code::CHORD_FOUND.0,
                &[varint(1), vec![2], varint(0)].concat(),
            ),
        ),
        (
            "unknown_command_chord_0x030a",
            "UnknownCommand",
            "0x030A is in the chord family but names no message",
            raw_frame(1, 0, 0x030A, &[]),
        ),
    ]
}

#[test]
fn table_write_vectors_carry_their_writers_signature() {
    use ed25519_dalek::Verifier as _;
    let network = NetworkId::from_name(VECTOR_NETWORK);
    let mut checked = 0;
    for v in &committed_file().vectors {
        let bytes = Bytes::from(unhex(&v.frame_hex));
        let frame = Frame::parse(bytes).expect("parses");
        let writes = match Message::decode(frame.code(), &frame.payload().expect("inflates")) {
            Ok(Message::TableWrite(w)) => vec![w],
            Ok(Message::TableEntries(e)) => e.writes,
            _ => continue,
        };
        for w in writes {
            let key = ed25519_dalek::VerifyingKey::from_bytes(&w.public_key.0).expect("a point");
            let sig = ed25519_dalek::Signature::from_bytes(&w.signature.0);
            assert!(
                key.verify(&w.signed_bytes(&network), &sig).is_ok(),
                "{}",
                v.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "{checked} writes checked");
}

// =============================================================================================
// Replication (SPEC.md §22.2)

/// A HEREIS owning its data (`HereIs` borrows it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedHereIs {
    folder: FolderId,
    hash: BlockHash,
    offset: u32,
    data: Vec<u8>,
}

impl OwnedHereIs {
    fn borrow(&self) -> HereIs<'_> {
        HereIs {
            folder: self.folder,
            hash: self.hash,
            offset: self.offset,
            data: &self.data,
        }
    }
}

/// The folder of the replication vectors: `FolderId::from_name("photos")`.
const VECTOR_FOLDER: &str = "photos";

fn version_json(v: &Version) -> Value {
    Value::Array(
        v.counters
            .iter()
            .map(|c| obj([("node", c.node.into()), ("value", c.value.into())]))
            .collect(),
    )
}

fn entry_json(e: &FileEntry) -> Value {
    obj([
        ("path", e.path.clone().into()),
        ("kind", format!("{:?}", e.kind).into()),
        ("target", e.target.clone().into()),
        ("mode", e.mode.into()),
        ("size", e.size.into()),
        ("mtime_ms", e.mtime_ms.into()),
        ("modified_by", e.modified_by.into()),
        ("version", version_json(&e.version)),
        ("sequence", e.sequence.into()),
        (
            "blocks",
            Value::Array(
                e.blocks
                    .iter()
                    .map(|b| {
                        obj([
                            ("offset", b.offset.into()),
                            ("len", b.len.into()),
                            ("hash", hexv(&b.hash)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

fn hashes_json(hashes: &[BlockHash]) -> Value {
    Value::Array(hashes.iter().map(|h| hexv(h)).collect())
}

/// A replication message's fields as JSON: the folder as hex, a file kind and a refusal
/// reason by name, a version as an array of {node, value}, HEREIS's data as hex.
fn replica_fields(m: &ReplicaMessage<'_>) -> Value {
    let folder = hexv(&m.folder().0);
    match m {
        ReplicaMessage::List(l) => obj([
            ("folder", folder),
            ("index_id", l.index_id.into()),
            ("since", l.since.into()),
        ]),
        ReplicaMessage::IHave(h) => obj([
            ("folder", folder),
            ("index_id", h.index_id.into()),
            (
                "entries",
                Value::Array(h.entries.iter().map(entry_json).collect()),
            ),
        ]),
        ReplicaMessage::IMoved(mv) => obj([
            ("folder", folder),
            ("index_id", mv.index_id.into()),
            (
                "entries",
                Value::Array(
                    mv.entries
                        .iter()
                        .map(|e| {
                            obj([
                                ("from", e.from.clone().into()),
                                ("from_version", version_json(&e.from_version)),
                                ("to", entry_json(&e.to)),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]),
        ReplicaMessage::IDeleted(d) => obj([
            ("folder", folder),
            ("index_id", d.index_id.into()),
            (
                "entries",
                Value::Array(
                    d.entries
                        .iter()
                        .map(|e| {
                            obj([
                                ("path", e.path.clone().into()),
                                ("kind", format!("{:?}", e.kind).into()),
                                ("modified_by", e.modified_by.into()),
                                ("version", version_json(&e.version)),
                                ("sequence", e.sequence.into()),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]),
        ReplicaMessage::IWant(w) => obj([("folder", folder), ("hashes", hashes_json(&w.hashes))]),
        ReplicaMessage::HereIs(h) => obj([
            ("folder", folder),
            ("hash", hexv(&h.hash)),
            ("offset", h.offset.into()),
            ("data", hexv(h.data)),
        ]),
        ReplicaMessage::NotFound(n) => {
            obj([("folder", folder), ("hashes", hashes_json(&n.hashes))])
        }
        ReplicaMessage::IRefuse(r) => obj([
            ("folder", folder),
            ("path", r.path.clone().into()),
            ("reason", format!("{:?}", r.reason).into()),
        ]),
    }
}

fn get_str(f: &Value, key: &str) -> String {
    get(f, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key:?} is not a string in {f}"))
        .to_string()
}

fn get_folder(f: &Value) -> FolderId {
    FolderId(get_bytes(f, "folder").try_into().expect("16 folder bytes"))
}

fn get_version(f: &Value, key: &str) -> Version {
    Version {
        counters: get_array(f, key)
            .iter()
            .map(|c| Counter {
                node: get_u64(c, "node"),
                value: get_u64(c, "value"),
            })
            .collect(),
    }
}

fn get_kind(f: &Value) -> FileKind {
    match get_str(f, "kind").as_str() {
        "File" => FileKind::File,
        "Directory" => FileKind::Directory,
        "Symlink" => FileKind::Symlink,
        other => panic!("unknown file kind {other}"),
    }
}

fn get_entry(e: &Value) -> FileEntry {
    FileEntry {
        path: get_str(e, "path"),
        kind: get_kind(e),
        target: get_str(e, "target"),
        mode: get_u64(e, "mode").try_into().expect("mode fits a u8"),
        size: get_u64(e, "size"),
        mtime_ms: get(e, "mtime_ms").as_i64().expect("mtime_ms is an i64"),
        modified_by: get_u64(e, "modified_by"),
        version: get_version(e, "version"),
        sequence: get_u64(e, "sequence"),
        blocks: get_array(e, "blocks")
            .iter()
            .map(|b| Block {
                offset: get_u64(b, "offset"),
                len: get_u64(b, "len").try_into().expect("len fits a u32"),
                hash: get_32(b, "hash"),
            })
            .collect(),
    }
}

fn get_hashes(f: &Value) -> Vec<BlockHash> {
    get_array(f, "hashes")
        .iter()
        .map(|h| {
            unhex(h.as_str().expect("a hex hash"))
                .try_into()
                .expect("32 hash bytes")
        })
        .collect()
}

/// The replication message a vector's `fields` describe.
fn replica_from_fields(code_name: &str, f: &Value) -> Owned {
    let folder = get_folder(f);
    Owned::Plain(Message::Replica(match code_name {
        "LIST" => ReplicaMessage::List(List {
            folder,
            index_id: get_u64(f, "index_id"),
            since: get_u64(f, "since"),
        }),
        "IHAVE" => ReplicaMessage::IHave(IHave {
            folder,
            index_id: get_u64(f, "index_id"),
            entries: get_array(f, "entries").iter().map(get_entry).collect(),
        }),
        "IMOVED" => ReplicaMessage::IMoved(IMoved {
            folder,
            index_id: get_u64(f, "index_id"),
            entries: get_array(f, "entries")
                .iter()
                .map(|e| Moved {
                    from: get_str(e, "from"),
                    from_version: get_version(e, "from_version"),
                    to: get_entry(get(e, "to")),
                })
                .collect(),
        }),
        "IDELETED" => ReplicaMessage::IDeleted(IDeleted {
            folder,
            index_id: get_u64(f, "index_id"),
            entries: get_array(f, "entries")
                .iter()
                .map(|e| Deleted {
                    path: get_str(e, "path"),
                    kind: get_kind(e),
                    modified_by: get_u64(e, "modified_by"),
                    version: get_version(e, "version"),
                    sequence: get_u64(e, "sequence"),
                })
                .collect(),
        }),
        "IWANT" => ReplicaMessage::IWant(IWant {
            folder,
            hashes: get_hashes(f),
        }),
        "HEREIS" => {
            return Owned::HereIs(OwnedHereIs {
                folder,
                hash: get_32(f, "hash"),
                offset: get_u64(f, "offset").try_into().expect("offset fits a u32"),
                data: get_bytes(f, "data"),
            })
        }
        "NOTFOUND" => ReplicaMessage::NotFound(NotFound {
            folder,
            hashes: get_hashes(f),
        }),
        "IREFUSE" => {
            let name = get_str(f, "reason");
            ReplicaMessage::IRefuse(IRefuse {
                folder,
                path: get_str(f, "path"),
                reason: *PathRefusal::ALL
                    .iter()
                    .find(|r| format!("{r:?}") == name)
                    .unwrap_or_else(|| panic!("unknown refusal {name}")),
            })
        }
        other => panic!("unknown code name {other}"),
    }))
}

/// A version vector from (node, value) pairs.
fn version(pairs: &[(u64, u64)]) -> Version {
    Version {
        counters: pairs
            .iter()
            .map(|&(node, value)| Counter { node, value })
            .collect(),
    }
}

/// The file entry of the replication vectors: `a/notes.txt`, 3 blocks (40 000 bytes),
/// changed by two nodes.
fn vector_file() -> FileEntry {
    FileEntry {
        path: "a/notes.txt".into(),
        kind: FileKind::File,
        target: String::new(),
        mode: 6,
        size: 40_000,
        mtime_ms: 1_700_000_000_123,
        modified_by: 0x1A2B_3C4D_5E6F_7081,
        version: version(&[(0x1A2B_3C4D_5E6F_7081, 3), (0xF000_0000_0000_0001, 1)]),
        sequence: 17,
        blocks: vec![
            Block {
                offset: 0,
                len: 16_384,
                hash: pat(0x10),
            },
            Block {
                offset: 16_384,
                len: 20_000,
                hash: pat(0x30),
            },
            Block {
                offset: 36_384,
                len: 3_616,
                hash: pat(0x50),
            },
        ],
    }
}

/// (name, message, compressed) for every replication vector.
fn replica_cases() -> Vec<(String, Owned, bool)> {
    let folder = FolderId::from_name(VECTOR_FOLDER);
    let plain = |name: &str, m: ReplicaMessage<'static>| {
        (name.to_string(), Owned::Plain(Message::Replica(m)), false)
    };
    let directory = FileEntry {
        path: "a".into(),
        kind: FileKind::Directory,
        target: String::new(),
        mode: 7,
        size: 0,
        mtime_ms: -1_000,
        modified_by: 0x1A2B_3C4D_5E6F_7081,
        version: version(&[(0x1A2B_3C4D_5E6F_7081, 1)]),
        sequence: 18,
        blocks: vec![],
    };
    let symlink = FileEntry {
        path: "a/latest".into(),
        kind: FileKind::Symlink,
        target: "notes.txt".into(),
        mode: 7,
        size: 0,
        mtime_ms: 0,
        modified_by: 5,
        version: version(&[(5, 1)]),
        sequence: 19,
        blocks: vec![],
    };
    let empty_file = FileEntry {
        path: "ünïcode/empty".into(),
        kind: FileKind::File,
        target: String::new(),
        mode: 4,
        size: 0,
        mtime_ms: i64::MIN,
        modified_by: u64::MAX,
        version: version(&[(1, u64::MAX), (u64::MAX, 1)]),
        sequence: u64::MAX,
        blocks: vec![],
    };
    let mut moved_to = vector_file();
    moved_to.path = "b/notes.txt".into();
    moved_to.version = moved_to.version.bumped(0x1A2B_3C4D_5E6F_7081);
    moved_to.sequence = 20;
    let mut v = vec![
        plain(
            "list_everything",
            ReplicaMessage::List(List {
                folder,
                index_id: 0,
                since: 0,
            }),
        ),
        plain(
            "list_since",
            ReplicaMessage::List(List {
                folder,
                index_id: 0x0123_4567_89AB_CDEF,
                since: 300,
            }),
        ),
        plain(
            "ihave_empty",
            ReplicaMessage::IHave(IHave {
                folder,
                index_id: 0x0123_4567_89AB_CDEF,
                entries: vec![],
            }),
        ),
        plain(
            "ihave_file",
            ReplicaMessage::IHave(IHave {
                folder,
                index_id: 0x0123_4567_89AB_CDEF,
                entries: vec![vector_file()],
            }),
        ),
        plain(
            "ihave_file_directory_symlink",
            ReplicaMessage::IHave(IHave {
                folder,
                index_id: 0x0123_4567_89AB_CDEF,
                entries: vec![vector_file(), directory.clone(), symlink, empty_file],
            }),
        ),
        (
            "ihave_compressed".into(),
            Owned::Plain(Message::Replica(ReplicaMessage::IHave(IHave {
                folder,
                index_id: 1,
                entries: (0..16)
                    .map(|i| FileEntry {
                        path: format!("photos/2024/img_{i:04}.jpg"),
                        sequence: i,
                        ..directory.clone()
                    })
                    .collect(),
            }))),
            true,
        ),
        plain(
            "imoved",
            ReplicaMessage::IMoved(IMoved {
                folder,
                index_id: 0x0123_4567_89AB_CDEF,
                entries: vec![Moved {
                    from: "a/notes.txt".into(),
                    from_version: version(&[
                        (0x1A2B_3C4D_5E6F_7081, 4),
                        (0xF000_0000_0000_0001, 1),
                    ]),
                    to: moved_to,
                }],
            }),
        ),
        plain(
            "ideleted",
            ReplicaMessage::IDeleted(IDeleted {
                folder,
                index_id: 0x0123_4567_89AB_CDEF,
                entries: vec![
                    Deleted {
                        path: "a/old.txt".into(),
                        kind: FileKind::File,
                        modified_by: 5,
                        version: version(&[(5, 2), (0x1A2B_3C4D_5E6F_7081, 1)]),
                        sequence: 21,
                    },
                    Deleted {
                        path: "tmp".into(),
                        kind: FileKind::Directory,
                        modified_by: 5,
                        version: version(&[(5, 1)]),
                        sequence: 22,
                    },
                ],
            }),
        ),
        plain(
            "iwant",
            ReplicaMessage::IWant(IWant {
                folder,
                hashes: vec![pat(0x10), pat(0x30)],
            }),
        ),
        (
            "hereis".into(),
            Owned::HereIs(OwnedHereIs {
                folder,
                hash: pat(0x50),
                offset: 0,
                data: vec![0x00, 0xFF, 0x7F, 0x80, 0x0A, 0x00],
            }),
            false,
        ),
        (
            "hereis_second_piece".into(),
            Owned::HereIs(OwnedHereIs {
                folder,
                hash: pat(0x30),
                offset: HEREIS_DATA_BYTES_MAX as u32,
                data: b"rest of the block".to_vec(),
            }),
            false,
        ),
        (
            "hereis_compressed".into(),
            Owned::HereIs(OwnedHereIs {
                folder,
                hash: pat(0x10),
                offset: 16,
                data: b"weft ".repeat(100),
            }),
            true,
        ),
        plain(
            "notfound",
            ReplicaMessage::NotFound(NotFound {
                folder,
                hashes: vec![pat(0x30)],
            }),
        ),
    ];
    let refused_paths = [
        "/etc/passwd",
        "a/../b",
        "a\\b",
        "cafe\u{301}",
        "a/very/long/path",
        ".weft/state",
        "A/Notes.txt",
        "a/link",
        "a/link/file",
        "a/notes.txt",
    ];
    for (reason, path) in PathRefusal::ALL.iter().zip(refused_paths) {
        v.push(plain(
            &format!("irefuse_{}", snake(&format!("{reason:?}"))),
            ReplicaMessage::IRefuse(IRefuse {
                folder,
                path: path.into(),
                reason: *reason,
            }),
        ));
    }
    v
}

/// A hand-written version vector: count, then (node, value) varints.
fn raw_version(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut p = varint(pairs.len() as u64);
    for &(node, value) in pairs {
        p.extend_from_slice(&varint(node));
        p.extend_from_slice(&varint(value));
    }
    p
}

/// A hand-written file entry without blocks: path, kind index, target "", mode 7, size 0,
/// mtime 0 (zigzag 0), modified_by 1, the version, sequence 1, no blocks.
fn raw_entry(path: &[u8], kind: u64, version: &[(u64, u64)]) -> Vec<u8> {
    [
        string(path),
        varint(kind),
        string(b""),
        vec![7],
        varint(0),
        varint(0),
        varint(1),
        raw_version(version),
        varint(1),
        varint(0),
    ]
    .concat()
}

/// A hand-written deletion record: path, kind index, modified_by 1, the version, sequence 1.
fn raw_deleted(path: &[u8], kind: u64, version: &[(u64, u64)]) -> Vec<u8> {
    [
        string(path),
        varint(kind),
        varint(1),
        raw_version(version),
        varint(1),
    ]
    .concat()
}

/// Invalid replication frames: every limit and enum of §22.2 broken once.
fn replica_invalid_cases() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>)> {
    let folder = FolderId::from_name(VECTOR_FOLDER).0.to_vec();
    let index_id = varint(9);
    let plain = |code: Code, payload: &[u8]| raw_frame(1, 0, code.0, payload);
    let batch = |entries: &[Vec<u8>]| {
        let mut p = [folder.clone(), index_id.clone()].concat();
        p.extend_from_slice(&varint(entries.len() as u64));
        for e in entries {
            p.extend_from_slice(e);
        }
        p
    };
    let hashes = |n: usize| {
        let mut p = folder.clone();
        p.extend_from_slice(&varint(n as u64));
        for i in 0..n {
            p.extend_from_slice(&[i as u8; 32]);
        }
        p
    };
    let here_is = |offset: u32, data: &[u8]| {
        [
            folder.clone(),
            vec![0x50; 32],
            varint(offset.into()),
            data.to_vec(),
        ]
        .concat()
    };
    let list = [folder.clone(), varint(1), varint(2)].concat();
    let too_many_entries: Vec<Vec<u8>> = (0..=INDEX_ENTRIES_MAX)
        .map(|i| raw_entry(format!("d{i}").as_bytes(), 1, &[(1, 1)]))
        .collect();
    vec![
        (
            "malformed_payload_list_trailing_bytes",
            "MalformedPayload",
            "LIST (folder, index_id 1, since 2) followed by one more byte",
            plain(Code::LIST, &[list, vec![0]].concat()),
        ),
        (
            "malformed_payload_ihave_too_many_entries",
            "MalformedPayload",
            "IHAVE with INDEX_ENTRIES_MAX + 1 entries (directories d0 … d256)",
            plain(Code::IHAVE, &batch(&too_many_entries)),
        ),
        (
            "malformed_payload_ihave_version_descending",
            "MalformedPayload",
            "IHAVE whose entry's version lists node 5 before node 3",
            plain(
                Code::IHAVE,
                &batch(&[raw_entry(b"a", 1, &[(5, 1), (3, 1)])]),
            ),
        ),
        (
            "malformed_payload_ihave_version_repeated_node",
            "MalformedPayload",
            "IHAVE whose entry's version lists node 3 twice",
            plain(
                Code::IHAVE,
                &batch(&[raw_entry(b"a", 1, &[(3, 1), (3, 2)])]),
            ),
        ),
        (
            "malformed_payload_ihave_unknown_file_kind",
            "MalformedPayload",
            "IHAVE whose entry has file kind index 3 (its mode, 7, is valid)",
            plain(Code::IHAVE, &batch(&[raw_entry(b"a", 3, &[(1, 1)])])),
        ),
        (
            "malformed_payload_imoved_from_version_zero_counter",
            "MalformedPayload",
            "IMOVED whose from_version has a counter of 0",
            plain(
                Code::IMOVED,
                &batch(&[[
                    string(b"a"),
                    raw_version(&[(1, 0)]),
                    raw_entry(b"b", 0, &[(1, 1)]),
                ]
                .concat()]),
            ),
        ),
        (
            "malformed_payload_ideleted_version_zero_counter",
            "MalformedPayload",
            "IDELETED whose record's version has a counter of 0",
            plain(
                Code::IDELETED,
                &batch(&[raw_deleted(b"a", 0, &[(1, 1), (2, 0)])]),
            ),
        ),
        (
            "malformed_payload_ideleted_unknown_file_kind",
            "MalformedPayload",
            "IDELETED whose record has file kind index 3",
            plain(Code::IDELETED, &batch(&[raw_deleted(b"a", 3, &[(1, 1)])])),
        ),
        (
            "malformed_payload_iwant_too_many_hashes",
            "MalformedPayload",
            "IWANT listing WANT_HASHES_MAX + 1 hashes (compressed; it inflates fine)",
            raw_compressed(Code::IWANT, &hashes(WANT_HASHES_MAX + 1)),
        ),
        (
            "malformed_payload_notfound_too_many_hashes",
            "MalformedPayload",
            "NOTFOUND listing WANT_HASHES_MAX + 1 hashes (compressed; it inflates fine)",
            raw_compressed(Code::NOTFOUND, &hashes(WANT_HASHES_MAX + 1)),
        ),
        (
            "malformed_payload_hereis_cut_in_header",
            "MalformedPayload",
            "HEREIS whose payload ends inside the hash (40 of the header's 49+ bytes)",
            plain(Code::HEREIS, &here_is(0, b"")[..40]),
        ),
        (
            "malformed_payload_hereis_no_data",
            "MalformedPayload",
            "HEREIS with its header and no data byte",
            plain(Code::HEREIS, &here_is(0, b"")),
        ),
        (
            "malformed_payload_hereis_data_too_long",
            "MalformedPayload",
            "HEREIS carrying HEREIS_DATA_BYTES_MAX + 1 data bytes (compressed; it inflates fine)",
            raw_compressed(
                Code::HEREIS,
                &here_is(0, &vec![7; HEREIS_DATA_BYTES_MAX + 1]),
            ),
        ),
        (
            "malformed_payload_hereis_past_block_end",
            "MalformedPayload",
            "HEREIS at offset BLOCK_BYTES_MAX - 1 carrying 2 bytes: past the largest block",
            plain(Code::HEREIS, &here_is(BLOCK_BYTES_MAX - 1, b"ab")),
        ),
        (
            "malformed_payload_irefuse_unknown_reason",
            "MalformedPayload",
            "IREFUSE whose reason has variant index 10",
            plain(
                Code::IREFUSE,
                &[folder.clone(), string(b"a"), vec![10]].concat(),
            ),
        ),
        (
            "malformed_payload_irefuse_path_too_long",
            "MalformedPayload",
            "IREFUSE naming a path of PATH_BYTES_MAX + 1 bytes (compressed; it inflates fine)",
            raw_compressed(
                Code::IREFUSE,
                &[folder.clone(), string(&[b'a'; PATH_BYTES_MAX + 1]), vec![0]].concat(),
            ),
        ),
        (
            "unknown_command_replica_0x0408",
            "UnknownCommand",
            "0x0408 is in the replication family but names no message",
            raw_frame(1, 0, 0x0408, &[]),
        ),
    ]
}

#[test]
fn replica_vectors_cover_every_kind_and_refusal() {
    let file = committed_file();
    let fields = |code: Code| {
        file.vectors
            .iter()
            .filter(move |v| v.code == code.0)
            .map(|v| &v.fields)
    };
    for kind in ["File", "Directory", "Symlink"] {
        assert!(
            fields(Code::IHAVE).any(|f| get_array(f, "entries").iter().any(|e| e["kind"] == kind)),
            "no IHAVE entry of kind {kind}"
        );
    }
    assert!(fields(Code::IHAVE).any(|f| get_array(f, "entries")
        .iter()
        .any(|e| { get_array(e, "blocks").len() > 1 && get_array(e, "version").len() == 2 })));
    for r in PathRefusal::ALL {
        assert!(
            fields(Code::IREFUSE).any(|f| f["reason"] == format!("{r:?}")),
            "no IREFUSE vector for {r:?}"
        );
    }
    // Every replication vector is about the folder named "photos".
    let folder = FolderId::from_name(VECTOR_FOLDER);
    let mut expected = [0u8; 16];
    expected.copy_from_slice(&blake3::hash(b"weft folder v1\0photos").as_bytes()[..16]);
    assert_eq!(folder.0, expected);
    let replica = file
        .vectors
        .iter()
        .filter(|v| Code(v.code).family() == Some(Family::Replication));
    let mut n = 0;
    for v in replica {
        assert_eq!(get_bytes(&v.fields, "folder"), folder.0, "{}", v.name);
        n += 1;
    }
    assert!(n >= 8, "{n} replication vectors");
}

#[test]
fn hereis_vectors_carry_their_data_raw_after_the_header() {
    let file = committed_file();
    let mut checked = 0;
    for v in file.vectors.iter().filter(|v| v.code == Code::HEREIS.0) {
        let payload = unhex(&v.payload_hex);
        let data = get_bytes(&v.fields, "data");
        let offset = get_u64(&v.fields, "offset");
        // folder 16 + hash 32 + the offset's varint, then the data with no length.
        assert_eq!(
            payload.len(),
            48 + varint(offset).len() + data.len(),
            "{}",
            v.name
        );
        assert!(payload.ends_with(&data), "{}", v.name);
        assert_eq!(
            payload[..16],
            get_bytes(&v.fields, "folder")[..],
            "{}",
            v.name
        );
        checked += 1;
    }
    assert!(checked >= 2);
}

// =============================================================================================
// Remote runs (SPEC.md §23.2)

/// A RUN_OUTPUT owning its data (`RunOutput` borrows it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedRunOutput {
    run: u64,
    seq: u64,
    stream: OutputStream,
    data: Vec<u8>,
}

impl OwnedRunOutput {
    fn borrow(&self) -> RunOutput<'_> {
        RunOutput {
            run: self.run,
            seq: self.seq,
            stream: self.stream,
            data: &self.data,
        }
    }
}

fn exit_status_json(s: &ExitStatus) -> Value {
    match s {
        ExitStatus::Code(c) => obj([("code", (*c).into())]),
        ExitStatus::Signal(n) => obj([("signal", (*n).into())]),
    }
}

fn run_fields(m: &RunMessage<'_>) -> Value {
    match m {
        RunMessage::Request(r) => obj([
            ("run", r.run.into()),
            ("program", r.program.clone().into()),
            (
                "args",
                Value::Array(r.args.iter().map(|a| a.clone().into()).collect()),
            ),
            ("shell", r.shell.into()),
            (
                "folder",
                r.folder.map_or(Value::Null, |f| {
                    obj([
                        ("id", hexv(&f.id.0)),
                        ("index_id", f.index_id.into()),
                        ("sequence", f.sequence.into()),
                    ])
                }),
            ),
        ]),
        RunMessage::Refused(r) => obj([
            ("run", r.run.into()),
            ("reason", format!("{:?}", r.reason).into()),
            ("text", r.text.clone().into()),
        ]),
        RunMessage::Started(s) => obj([("run", s.run.into())]),
        RunMessage::Output(o) => obj([
            ("run", o.run.into()),
            ("seq", o.seq.into()),
            ("stream", format!("{:?}", o.stream).into()),
            ("data", hexv(o.data)),
        ]),
        RunMessage::Ack(a) => obj([("run", a.run.into()), ("bytes", a.bytes.into())]),
        RunMessage::Signal(s) => obj([
            ("run", s.run.into()),
            ("signal", format!("{:?}", s.signal).into()),
        ]),
        RunMessage::Exit(e) => obj([
            ("run", e.run.into()),
            ("status", exit_status_json(&e.status)),
            ("outputs", e.outputs.into()),
            (
                "copy",
                e.copy.map_or(Value::Null, |c| {
                    obj([
                        ("index_id", c.index_id.into()),
                        ("sequence", c.sequence.into()),
                    ])
                }),
            ),
        ]),
    }
}

fn by_name<T: Copy + core::fmt::Debug>(all: &[T], f: &Value, key: &str) -> T {
    let name = get(f, key).as_str().expect("a name");
    *all.iter()
        .find(|x| format!("{x:?}") == name)
        .unwrap_or_else(|| panic!("unknown {key} {name}"))
}

fn run_from_fields(code_name: &str, f: &Value) -> Owned {
    let run = get_u64(f, "run");
    let message = match code_name {
        "RUN_REQUEST" => RunMessage::Request(RunRequest {
            run,
            program: get_str(f, "program"),
            args: get_array(f, "args")
                .iter()
                .map(|a| a.as_str().expect("a string").to_owned())
                .collect(),
            shell: get_bool(f, "shell"),
            folder: match get(f, "folder") {
                Value::Null => None,
                folder => Some(RunFolder {
                    id: FolderId(get_bytes(folder, "id").try_into().expect("16 bytes")),
                    index_id: get_u64(folder, "index_id"),
                    sequence: get_u64(folder, "sequence"),
                }),
            },
        }),
        "RUN_REFUSED" => RunMessage::Refused(RunRefused {
            run,
            reason: by_name(&RunRefusalReason::ALL, f, "reason"),
            text: get_str(f, "text"),
        }),
        "RUN_STARTED" => RunMessage::Started(RunStarted { run }),
        "RUN_OUTPUT" => {
            return Owned::RunOutput(OwnedRunOutput {
                run,
                seq: get_u64(f, "seq"),
                stream: by_name(&[OutputStream::Stdout, OutputStream::Stderr], f, "stream"),
                data: get_bytes(f, "data"),
            })
        }
        "RUN_ACK" => RunMessage::Ack(RunAck {
            run,
            bytes: get_u64(f, "bytes"),
        }),
        "RUN_SIGNAL" => RunMessage::Signal(RunSignal {
            run,
            signal: by_name(
                &[RunSignalKind::Interrupt, RunSignalKind::Kill],
                f,
                "signal",
            ),
        }),
        "RUN_EXIT" => {
            let status = get(f, "status");
            let status = match (status.get("code"), status.get("signal")) {
                (Some(c), None) => ExitStatus::Code(c.as_u64().expect("u8") as u8),
                (None, Some(s)) => ExitStatus::Signal(s.as_u64().expect("u8") as u8),
                _ => panic!("bad exit status {status}"),
            };
            RunMessage::Exit(RunExit {
                run,
                status,
                outputs: get_u64(f, "outputs"),
                copy: match get(f, "copy") {
                    Value::Null => None,
                    copy => Some(SyncPoint {
                        index_id: get_u64(copy, "index_id"),
                        sequence: get_u64(copy, "sequence"),
                    }),
                },
            })
        }
        other => panic!("unknown code name {other}"),
    };
    Owned::Plain(Message::Run(message))
}

fn run_cases() -> Vec<(String, Owned, bool)> {
    let plain = |name: &str, m: RunMessage<'static>| {
        (name.to_string(), Owned::Plain(Message::Run(m)), false)
    };
    let mut v = vec![
        plain(
            "run_request",
            RunMessage::Request(RunRequest {
                run: 1,
                program: "cargo".into(),
                args: vec!["test".into(), "--release".into()],
                shell: false,
                folder: None,
            }),
        ),
        plain(
            "run_request_shell_in_folder",
            RunMessage::Request(RunRequest {
                run: u64::MAX,
                program: "make -j4 && ./check".into(),
                args: vec![],
                shell: true,
                folder: Some(RunFolder {
                    id: FolderId::from_name("run-abcdef"),
                    index_id: 0x0123_4567_89ab_cdef,
                    sequence: 1000,
                }),
            }),
        ),
        plain("run_started", RunMessage::Started(RunStarted { run: 1 })),
        (
            "run_output_stdout".into(),
            Owned::RunOutput(OwnedRunOutput {
                run: 1,
                seq: 0,
                stream: OutputStream::Stdout,
                data: b"hello\n".to_vec(),
            }),
            false,
        ),
        (
            "run_output_stderr_binary".into(),
            Owned::RunOutput(OwnedRunOutput {
                run: 1,
                seq: 300,
                stream: OutputStream::Stderr,
                data: vec![0x00, 0xFF, 0x0A],
            }),
            false,
        ),
        (
            "run_output_compressed".into(),
            Owned::RunOutput(OwnedRunOutput {
                run: 2,
                seq: 1,
                stream: OutputStream::Stdout,
                data: b"compiling weft\n".repeat(40),
            }),
            true,
        ),
        plain(
            "run_ack",
            RunMessage::Ack(RunAck {
                run: 1,
                bytes: 262_144,
            }),
        ),
        plain(
            "run_signal_interrupt",
            RunMessage::Signal(RunSignal {
                run: 1,
                signal: RunSignalKind::Interrupt,
            }),
        ),
        plain(
            "run_signal_kill",
            RunMessage::Signal(RunSignal {
                run: 1,
                signal: RunSignalKind::Kill,
            }),
        ),
        plain(
            "run_exit_code",
            RunMessage::Exit(RunExit {
                run: 1,
                status: ExitStatus::Code(3),
                outputs: 2,
                copy: None,
            }),
        ),
        plain(
            "run_exit_in_folder",
            RunMessage::Exit(RunExit {
                run: 1,
                status: ExitStatus::Code(0),
                outputs: 5,
                copy: Some(SyncPoint {
                    index_id: 0x0123_4567_89ab_cdef,
                    sequence: 300,
                }),
            }),
        ),
        plain(
            "run_exit_signal",
            RunMessage::Exit(RunExit {
                run: 1,
                status: ExitStatus::Signal(9),
                outputs: 0,
                copy: None,
            }),
        ),
    ];
    for reason in RunRefusalReason::ALL {
        v.push(plain(
            &format!("run_refused_{}", snake(&format!("{reason:?}"))),
            RunMessage::Refused(RunRefused {
                run: 1,
                reason,
                text: format!("refused: {reason:?}"),
            }),
        ));
    }
    v
}

/// Invalid remote-run frames: every limit and enum of §23.2 broken once.
fn run_invalid_cases() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>)> {
    let plain = |code: Code, payload: &[u8]| raw_frame(1, 0, code.0, payload);
    // run 1, program, args, shell false, no folder
    let request = |program: &[u8], args: &[&[u8]]| {
        let mut p = [varint(1), string(program), varint(args.len() as u64)].concat();
        for a in args {
            p.extend_from_slice(&string(a));
        }
        p.extend_from_slice(&[0, 0]);
        p
    };
    let output =
        |stream: u8, data: &[u8]| [varint(1), varint(0), vec![stream], data.to_vec()].concat();
    vec![
        (
            "malformed_payload_run_request_empty_program",
            "MalformedPayload",
            "RUN_REQUEST whose program is empty",
            plain(Code::RUN_REQUEST, &request(b"", &[])),
        ),
        (
            "malformed_payload_run_request_nul_in_argument",
            "MalformedPayload",
            "RUN_REQUEST with a NUL byte in an argument",
            plain(Code::RUN_REQUEST, &request(b"ls", &[b"a\0b"])),
        ),
        (
            "malformed_payload_run_request_too_many_args",
            "MalformedPayload",
            "RUN_REQUEST with RUN_ARGS_MAX + 1 empty arguments (compressed; it inflates fine)",
            raw_compressed(
                Code::RUN_REQUEST,
                &request(b"ls", &vec![&b""[..]; RUN_ARGS_MAX + 1]),
            ),
        ),
        (
            "malformed_payload_run_request_shell_bool_2",
            "MalformedPayload",
            "RUN_REQUEST whose shell flag is the byte 2",
            plain(
                Code::RUN_REQUEST,
                &[varint(1), string(b"ls"), varint(0), vec![2, 0]].concat(),
            ),
        ),
        (
            "malformed_payload_run_refused_unknown_reason",
            "MalformedPayload",
            "RUN_REFUSED whose reason has variant index 7",
            plain(Code::RUN_REFUSED, &[varint(1), vec![7], string(b"no")].concat()),
        ),
        (
            "malformed_payload_run_refused_text_too_long",
            "MalformedPayload",
            "RUN_REFUSED whose text is RUN_REASON_BYTES_MAX + 1 bytes (compressed; it inflates fine)",
            raw_compressed(
                Code::RUN_REFUSED,
                &[varint(1), vec![0], string(&[b'x'; RUN_REASON_BYTES_MAX + 1])].concat(),
            ),
        ),
        (
            "malformed_payload_run_output_no_data",
            "MalformedPayload",
            "RUN_OUTPUT with its header and no data byte",
            plain(Code::RUN_OUTPUT, &output(0, b"")),
        ),
        (
            "malformed_payload_run_output_unknown_stream",
            "MalformedPayload",
            "RUN_OUTPUT whose stream has variant index 2",
            plain(Code::RUN_OUTPUT, &output(2, b"x")),
        ),
        (
            "malformed_payload_run_output_too_long",
            "MalformedPayload",
            "RUN_OUTPUT carrying RUN_OUTPUT_BYTES_MAX + 1 bytes (compressed; it inflates fine)",
            raw_compressed(Code::RUN_OUTPUT, &output(0, &vec![7; RUN_OUTPUT_BYTES_MAX + 1])),
        ),
        (
            "malformed_payload_run_signal_unknown_signal",
            "MalformedPayload",
            "RUN_SIGNAL whose signal has variant index 2",
            plain(Code::RUN_SIGNAL, &[varint(1), vec![2]].concat()),
        ),
        (
            "malformed_payload_run_exit_unknown_status",
            "MalformedPayload",
            "RUN_EXIT whose status has variant index 2",
            plain(Code::RUN_EXIT, &[varint(1), vec![2, 0], varint(0), vec![0]].concat()),
        ),
        (
            "malformed_payload_run_exit_copy_tag_2",
            "MalformedPayload",
            "RUN_EXIT whose copy (an Option) has tag 2",
            plain(Code::RUN_EXIT, &[varint(1), vec![0, 0], varint(0), vec![2]].concat()),
        ),
        (
            "malformed_payload_run_ack_trailing_bytes",
            "MalformedPayload",
            "RUN_ACK with a byte after its fields",
            plain(Code::RUN_ACK, &[varint(1), varint(5), vec![0]].concat()),
        ),
        (
            "unknown_command_run_0x0607",
            "UnknownCommand",
            "0x0607 is in the remote-run family but names no message",
            raw_frame(1, 0, 0x0607, &[]),
        ),
    ]
}

#[test]
fn run_vectors_cover_every_refusal_and_status() {
    let file = committed_file();
    let fields = |code: Code| {
        file.vectors
            .iter()
            .filter(move |v| v.code == code.0)
            .map(|v| &v.fields)
    };
    for r in RunRefusalReason::ALL {
        assert!(
            fields(Code::RUN_REFUSED).any(|f| f["reason"] == format!("{r:?}")),
            "no RUN_REFUSED vector for {r:?}"
        );
    }
    assert!(fields(Code::RUN_EXIT).any(|f| f["status"].get("code").is_some()));
    assert!(fields(Code::RUN_EXIT).any(|f| f["status"].get("signal").is_some()));
    for v in file.vectors.iter().filter(|v| v.code == Code::RUN_OUTPUT.0) {
        let payload = unhex(&v.payload_hex);
        assert!(
            payload.ends_with(&get_bytes(&v.fields, "data")),
            "{}",
            v.name
        );
    }
}

// =============================================================================================
// Drops (SPEC.md §24.5)

/// The secret key of the drop vectors' primary owner: [`pat`]`(0xA0)` (the table writer's).
const DROP_PRIMARY_SECRET: u8 = 0xA0;

/// The secret key of the drop vectors' secondary owner: [`pat`]`(0xC0)`.
const DROP_SECONDARY_SECRET: u8 = 0xC0;

fn drop_key(start: u8) -> PublicKey {
    PublicKey(
        ed25519_dalek::SigningKey::from_bytes(&pat(start))
            .verifying_key()
            .to_bytes(),
    )
}

fn hex_list(items: impl Iterator<Item = [u8; 32]>) -> Value {
    Value::Array(items.map(|i| hexv(&i)).collect())
}

fn manifest_json(m: &DropManifest) -> Value {
    obj([
        ("drop", hexv(&m.drop.0)),
        ("nonce", hexv(&m.nonce)),
        ("counter", m.counter.into()),
        ("parents", hex_list(m.parents.iter().map(|p| p.0))),
        (
            "owners",
            obj([
                ("primary", hexv(&m.owners.primary.0)),
                (
                    "secondary",
                    hex_list(m.owners.secondary.iter().map(|k| k.0)),
                ),
            ]),
        ),
        ("root", hexv(&m.root)),
        ("files", m.files.into()),
        ("bytes", m.bytes.into()),
        ("signer", hexv(&m.signer.0)),
        ("signature", hexv(&m.signature.0)),
    ])
}

fn drop_file_json(f: &DropFile) -> Value {
    obj([
        ("path", f.path.clone().into()),
        ("kind", format!("{:?}", f.kind).into()),
        ("mode", f.mode.into()),
        ("size", f.size.into()),
        ("target", opt_str(&f.target)),
        (
            "blocks",
            Value::Array(
                f.blocks
                    .iter()
                    .map(|b| {
                        obj([
                            ("offset", b.offset.into()),
                            ("len", b.len.into()),
                            ("hash", hexv(&b.hash)),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

/// A drop message's fields as JSON: ids and keys as hex, DROP_VERSION as the manifest's
/// fields (owners nested), a file kind by name, an absent target as null.
fn drop_fields(m: &DropMessage) -> Value {
    let drop = hexv(&m.drop_id().0);
    match m {
        DropMessage::Subscribe(_) | DropMessage::Unsubscribe(_) => obj([("drop", drop)]),
        DropMessage::Heads(h) => obj([
            ("drop", drop),
            ("heads", hex_list(h.heads.iter().map(|v| v.0))),
        ]),
        DropMessage::GetVersion(g) => obj([("drop", drop), ("version", hexv(&g.version.0))]),
        DropMessage::Version(m) => manifest_json(m),
        DropMessage::GetFiles(g) => obj([
            ("drop", drop),
            ("version", hexv(&g.version.0)),
            ("from", g.from.into()),
        ]),
        DropMessage::Files(f) => obj([
            ("drop", drop),
            ("version", hexv(&f.version.0)),
            ("from", f.from.into()),
            (
                "files",
                Value::Array(f.files.iter().map(drop_file_json).collect()),
            ),
        ]),
        DropMessage::NotFound(n) => obj([("drop", drop), ("version", hexv(&n.version.0))]),
    }
}

fn get_u32(f: &Value, key: &str) -> u32 {
    get_u64(f, key).try_into().expect("a u32")
}

fn get_hex32_list(f: &Value, key: &str) -> Vec<[u8; 32]> {
    get_array(f, key)
        .iter()
        .map(|h| {
            unhex(h.as_str().expect("hex"))
                .try_into()
                .expect("32 bytes")
        })
        .collect()
}

fn get_drop_file(e: &Value) -> DropFile {
    DropFile {
        path: get_str(e, "path"),
        kind: get_kind(e),
        mode: get_u64(e, "mode").try_into().expect("mode fits a u8"),
        size: get_u64(e, "size"),
        target: get_opt_str(e, "target"),
        blocks: get_array(e, "blocks")
            .iter()
            .map(|b| Block {
                offset: get_u64(b, "offset"),
                len: get_u32(b, "len"),
                hash: get_32(b, "hash"),
            })
            .collect(),
    }
}

/// The drop message a vector's `fields` describe.
fn drop_from_fields(code_name: &str, f: &Value) -> DropMessage {
    let drop = DropId(get_32(f, "drop"));
    let version = || VersionId(get_32(f, "version"));
    match code_name {
        "DROP_SUBSCRIBE" => DropMessage::Subscribe(DropSubscribe { drop }),
        "DROP_UNSUBSCRIBE" => DropMessage::Unsubscribe(DropUnsubscribe { drop }),
        "DROP_HEADS" => DropMessage::Heads(DropHeads {
            drop,
            heads: get_hex32_list(f, "heads")
                .into_iter()
                .map(VersionId)
                .collect(),
        }),
        "DROP_GET_VERSION" => DropMessage::GetVersion(DropGetVersion {
            drop,
            version: version(),
        }),
        "DROP_VERSION" => {
            let owners = get(f, "owners");
            DropMessage::Version(Box::new(DropManifest {
                drop,
                nonce: get_bytes(f, "nonce").try_into().expect("16 bytes"),
                counter: get_u64(f, "counter"),
                parents: get_hex32_list(f, "parents")
                    .into_iter()
                    .map(VersionId)
                    .collect(),
                owners: DropOwners {
                    primary: PublicKey(get_32(owners, "primary")),
                    secondary: get_hex32_list(owners, "secondary")
                        .into_iter()
                        .map(PublicKey)
                        .collect(),
                },
                root: get_32(f, "root"),
                files: get_u32(f, "files"),
                bytes: get_u64(f, "bytes"),
                signer: PublicKey(get_32(f, "signer")),
                signature: Signature(get_bytes(f, "signature").try_into().expect("64 bytes")),
            }))
        }
        "DROP_GET_FILES" => DropMessage::GetFiles(DropGetFiles {
            drop,
            version: version(),
            from: get_u32(f, "from"),
        }),
        "DROP_FILES" => DropMessage::Files(DropFiles {
            drop,
            version: version(),
            from: get_u32(f, "from"),
            files: get_array(f, "files").iter().map(get_drop_file).collect(),
        }),
        "DROP_NOTFOUND" => DropMessage::NotFound(DropNotFound {
            drop,
            version: version(),
        }),
        other => panic!("unknown code name {other}"),
    }
}

/// The file list of the drop vectors' first version: a directory, a file of two blocks and a
/// symlink, in path order.
fn drop_vector_files() -> Vec<DropFile> {
    vec![
        DropFile {
            path: "docs".into(),
            kind: FileKind::Directory,
            mode: 7,
            size: 0,
            target: None,
            blocks: vec![],
        },
        DropFile {
            path: "docs/readme.txt".into(),
            kind: FileKind::File,
            mode: 6,
            size: 20_000,
            target: None,
            blocks: vec![
                Block {
                    offset: 0,
                    len: 16_384,
                    hash: pat(0x10),
                },
                Block {
                    offset: 16_384,
                    len: 3_616,
                    hash: pat(0x30),
                },
            ],
        },
        DropFile {
            path: "latest".into(),
            kind: FileKind::Symlink,
            mode: 7,
            size: 0,
            target: Some("docs/readme.txt".into()),
            blocks: vec![],
        },
    ]
}

/// The drop vectors' versions, each signed by its fixed key: `v1` (the first, by the
/// primary, holding [`drop_vector_files`]), `v2a` (by the primary) and `v2b` (by the
/// secondary) both after `v1`, and `v3` merging them (by the secondary).
struct DropVersions {
    v1: DropManifest,
    v2a: DropManifest,
    v2b: DropManifest,
    v3: DropManifest,
}

fn drop_versions() -> DropVersions {
    let primary = drop_key(DROP_PRIMARY_SECRET);
    let nonce: [u8; 16] = pat(0x70);
    let owners = DropOwners {
        primary,
        secondary: vec![drop_key(DROP_SECONDARY_SECRET)],
    };
    let mut hasher = RootHasher::new();
    hasher
        .push_batch(&drop_vector_files())
        .expect("the vector files are in order");
    let fields = |counter, parents: Vec<VersionId>, root, files, bytes| ManifestFields {
        drop: DropId::derive(&primary, &nonce),
        nonce,
        counter,
        parents,
        owners: owners.clone(),
        root,
        files,
        bytes,
    };
    let primary_key = pat(DROP_PRIMARY_SECRET);
    let secondary_key = pat(DROP_SECONDARY_SECRET);
    let v1 = DropManifest::sign(
        fields(1, vec![], hasher.root(), hasher.files(), hasher.bytes()),
        &primary_key,
    );
    let v2a = DropManifest::sign(
        fields(2, vec![v1.version_id()], pat(0x80), 4, 25_000),
        &primary_key,
    );
    let v2b = DropManifest::sign(
        fields(2, vec![v1.version_id()], pat(0x90), 3, 20_001),
        &secondary_key,
    );
    let mut merged = vec![v2a.version_id(), v2b.version_id()];
    merged.sort();
    let v3 = DropManifest::sign(fields(3, merged, pat(0xB0), 5, 25_001), &secondary_key);
    DropVersions { v1, v2a, v2b, v3 }
}

fn drop_cases() -> Vec<(String, Owned, bool)> {
    let plain =
        |name: &str, m: DropMessage| (name.to_string(), Owned::Plain(Message::Drop(m)), false);
    let DropVersions { v1, v2a, v2b, v3 } = drop_versions();
    let drop = v1.drop;
    let mut heads = vec![v2a.version_id(), v2b.version_id()];
    heads.sort();
    let many: Vec<DropFile> = (0..40)
        .map(|i| DropFile {
            path: format!("photos/2026/img_{i:04}.jpg"),
            kind: FileKind::File,
            mode: 4,
            size: 1000,
            target: None,
            blocks: vec![Block {
                offset: 0,
                len: 1000,
                hash: [i as u8; 32],
            }],
        })
        .collect();
    vec![
        plain(
            "drop_subscribe",
            DropMessage::Subscribe(DropSubscribe { drop }),
        ),
        plain(
            "drop_unsubscribe",
            DropMessage::Unsubscribe(DropUnsubscribe { drop }),
        ),
        plain(
            "drop_heads_none",
            DropMessage::Heads(DropHeads {
                drop,
                heads: vec![],
            }),
        ),
        plain(
            "drop_heads_two_branches",
            DropMessage::Heads(DropHeads { drop, heads }),
        ),
        plain(
            "drop_get_version",
            DropMessage::GetVersion(DropGetVersion {
                drop,
                version: v1.version_id(),
            }),
        ),
        plain(
            "drop_version_first",
            DropMessage::Version(Box::new(v1.clone())),
        ),
        plain(
            "drop_version_by_secondary",
            DropMessage::Version(Box::new(v2b)),
        ),
        plain("drop_version_merge", DropMessage::Version(Box::new(v3))),
        plain(
            "drop_get_files",
            DropMessage::GetFiles(DropGetFiles {
                drop,
                version: v1.version_id(),
                from: 0,
            }),
        ),
        plain(
            "drop_files",
            DropMessage::Files(DropFiles {
                drop,
                version: v1.version_id(),
                from: 0,
                files: drop_vector_files(),
            }),
        ),
        plain(
            "drop_files_past_the_end",
            DropMessage::Files(DropFiles {
                drop,
                version: v1.version_id(),
                from: 3,
                files: vec![],
            }),
        ),
        (
            "drop_files_compressed".into(),
            Owned::Plain(Message::Drop(DropMessage::Files(DropFiles {
                drop,
                version: v2a.version_id(),
                from: 256,
                files: many,
            }))),
            true,
        ),
        plain(
            "drop_notfound",
            DropMessage::NotFound(DropNotFound {
                drop,
                version: VersionId(pat(0xE0)),
            }),
        ),
    ]
}

/// A manifest written by hand: the given counter, parents, secondary owners and file count;
/// the vectors' drop, nonce and primary; zero root, 0 bytes; the primary as signer and a
/// signature of `signature_len` bytes (64 for a whole one).
fn raw_manifest(
    counter: u64,
    parents: &[[u8; 32]],
    secondary: &[[u8; 32]],
    files: u64,
    signature_len: usize,
) -> Vec<u8> {
    let v1 = drop_versions().v1;
    let mut p = [v1.drop.0.to_vec(), v1.nonce.to_vec(), varint(counter)].concat();
    p.extend_from_slice(&varint(parents.len() as u64));
    parents.iter().for_each(|x| p.extend_from_slice(x));
    p.extend_from_slice(&v1.owners.primary.0);
    p.extend_from_slice(&varint(secondary.len() as u64));
    secondary.iter().for_each(|x| p.extend_from_slice(x));
    p.extend_from_slice(&[0; 32]);
    p.extend_from_slice(&varint(files));
    p.extend_from_slice(&varint(0));
    p.extend_from_slice(&v1.owners.primary.0);
    p.extend_from_slice(&vec![0x5A; signature_len]);
    p
}

/// A file entry written by hand: path, kind index, mode 6, size 0, the target option bytes
/// (`[0]` for none), no blocks.
fn raw_drop_file(path: &[u8], kind: u64, target: &[u8]) -> Vec<u8> {
    [
        string(path),
        varint(kind),
        vec![6],
        varint(0),
        target.to_vec(),
        varint(0),
    ]
    .concat()
}

/// Invalid drop frames: every limit, order and enum of §24.5 broken once.
fn drop_invalid_cases() -> Vec<(&'static str, &'static str, &'static str, Vec<u8>)> {
    let plain = |code: Code, payload: &[u8]| raw_frame(1, 0, code.0, payload);
    let v1 = drop_versions().v1;
    let drop = v1.drop.0.to_vec();
    let version = v1.version_id().0.to_vec();
    let heads = |ids: &[u8]| {
        let mut p = [drop.clone(), varint(ids.len() as u64)].concat();
        ids.iter().for_each(|&i| p.extend_from_slice(&[i; 32]));
        p
    };
    let files = |from: u64, entries: &[Vec<u8>]| {
        let mut p = [
            drop.clone(),
            version.clone(),
            varint(from),
            varint(entries.len() as u64),
        ]
        .concat();
        entries.iter().for_each(|e| p.extend_from_slice(e));
        p
    };
    let dir = |path: &str| raw_drop_file(path.as_bytes(), 1, &[0]);
    let too_many_files: Vec<Vec<u8>> = (0..=DROP_FILES_BATCH_MAX)
        .map(|i| dir(&format!("d{i:04}")))
        .collect();
    let keys = |n: usize| -> Vec<[u8; 32]> { (0..n).map(|i| [i as u8 + 1; 32]).collect() };
    let primary = v1.owners.primary.0;
    vec![
        (
            "malformed_payload_drop_subscribe_short_id",
            "MalformedPayload",
            "DROP_SUBSCRIBE whose payload ends after 31 of the drop id's 32 bytes",
            plain(Code::DROP_SUBSCRIBE, &drop[..31]),
        ),
        (
            "malformed_payload_drop_heads_too_many",
            "MalformedPayload",
            "DROP_HEADS with DROP_HEADS_MAX + 1 heads",
            plain(Code::DROP_HEADS, &heads(&(0..=DROP_HEADS_MAX as u8).collect::<Vec<_>>())),
        ),
        (
            "malformed_payload_drop_heads_not_ascending",
            "MalformedPayload",
            "DROP_HEADS whose heads are 02…02 then 01…01",
            plain(Code::DROP_HEADS, &heads(&[2, 1])),
        ),
        (
            "malformed_payload_drop_version_parents_not_ascending",
            "MalformedPayload",
            "DROP_VERSION whose parents are 02…02 then 01…01",
            plain(Code::DROP_VERSION, &raw_manifest(2, &[[2; 32], [1; 32]], &[], 0, 64)),
        ),
        (
            "malformed_payload_drop_version_parent_twice",
            "MalformedPayload",
            "DROP_VERSION naming the parent 01…01 twice",
            plain(Code::DROP_VERSION, &raw_manifest(2, &[[1; 32], [1; 32]], &[], 0, 64)),
        ),
        (
            "malformed_payload_drop_version_too_many_parents",
            "MalformedPayload",
            "DROP_VERSION with DROP_PARENTS_MAX + 1 parents",
            plain(
                Code::DROP_VERSION,
                &raw_manifest(2, &keys(DROP_PARENTS_MAX + 1), &[], 0, 64),
            ),
        ),
        (
            "malformed_payload_drop_version_too_many_secondary_owners",
            "MalformedPayload",
            "DROP_VERSION with DROP_SECONDARY_OWNERS_MAX + 1 secondary owners",
            plain(
                Code::DROP_VERSION,
                &raw_manifest(1, &[], &keys(DROP_SECONDARY_OWNERS_MAX + 1), 0, 64),
            ),
        ),
        (
            "malformed_payload_drop_version_secondary_owners_not_ascending",
            "MalformedPayload",
            "DROP_VERSION whose secondary owners are 02…02 then 01…01",
            plain(Code::DROP_VERSION, &raw_manifest(1, &[], &[[2; 32], [1; 32]], 0, 64)),
        ),
        (
            "malformed_payload_drop_version_primary_among_secondary",
            "MalformedPayload",
            "DROP_VERSION listing its primary owner among the secondary owners",
            plain(Code::DROP_VERSION, &raw_manifest(1, &[], &[primary], 0, 64)),
        ),
        (
            "malformed_payload_drop_version_counter_zero",
            "MalformedPayload",
            "DROP_VERSION with counter 0",
            plain(Code::DROP_VERSION, &raw_manifest(0, &[], &[], 0, 64)),
        ),
        (
            "malformed_payload_drop_version_too_many_files",
            "MalformedPayload",
            "DROP_VERSION announcing DROP_FILES_MAX + 1 files",
            plain(
                Code::DROP_VERSION,
                &raw_manifest(1, &[], &[], u64::from(DROP_FILES_MAX) + 1, 64),
            ),
        ),
        (
            "malformed_payload_drop_version_short_signature",
            "MalformedPayload",
            "DROP_VERSION whose payload ends after 63 of the signature's 64 bytes",
            plain(Code::DROP_VERSION, &raw_manifest(1, &[], &[], 0, 63)),
        ),
        (
            "malformed_payload_drop_version_trailing_bytes",
            "MalformedPayload",
            "DROP_VERSION with a byte after the signature",
            plain(Code::DROP_VERSION, &raw_manifest(1, &[], &[], 0, 65)),
        ),
        (
            "malformed_payload_drop_get_files_trailing_bytes",
            "MalformedPayload",
            "DROP_GET_FILES (from 0) with a byte after its fields",
            plain(
                Code::DROP_GET_FILES,
                &[drop.clone(), version.clone(), varint(0), vec![0]].concat(),
            ),
        ),
        (
            "malformed_payload_drop_files_too_many",
            "MalformedPayload",
            "DROP_FILES with DROP_FILES_BATCH_MAX + 1 directories (compressed; it inflates fine)",
            raw_compressed(Code::DROP_FILES, &files(0, &too_many_files)),
        ),
        (
            "malformed_payload_drop_files_not_ascending",
            "MalformedPayload",
            "DROP_FILES listing the directory b before a",
            plain(Code::DROP_FILES, &files(0, &[dir("b"), dir("a")])),
        ),
        (
            "malformed_payload_drop_files_past_files_max",
            "MalformedPayload",
            "DROP_FILES from index DROP_FILES_MAX carrying one file",
            plain(
                Code::DROP_FILES,
                &files(u64::from(DROP_FILES_MAX), &[dir("a")]),
            ),
        ),
        (
            "malformed_payload_drop_files_unknown_kind",
            "MalformedPayload",
            "DROP_FILES whose file has kind index 3",
            plain(
                Code::DROP_FILES,
                &files(0, &[raw_drop_file(b"a", 3, &[0])]),
            ),
        ),
        (
            "malformed_payload_drop_files_bad_target_tag",
            "MalformedPayload",
            "DROP_FILES whose file's target option tag is 2",
            plain(
                Code::DROP_FILES,
                &files(0, &[raw_drop_file(b"a", 2, &[2])]),
            ),
        ),
        (
            "malformed_payload_drop_files_path_too_long",
            "MalformedPayload",
            "DROP_FILES whose file's path is PATH_BYTES_MAX + 1 bytes (compressed; it inflates fine)",
            raw_compressed(
                Code::DROP_FILES,
                &files(0, &[raw_drop_file(&[b'a'; PATH_BYTES_MAX + 1], 1, &[0])]),
            ),
        ),
        (
            "malformed_payload_drop_notfound_short_version",
            "MalformedPayload",
            "DROP_NOTFOUND whose payload ends inside the version id",
            plain(Code::DROP_NOTFOUND, &[drop.clone(), version[..20].to_vec()].concat()),
        ),
        (
            "unknown_command_drop_0x0508",
            "UnknownCommand",
            "0x0508 is in the drop family but names no message",
            raw_frame(1, 0, 0x0508, &[]),
        ),
    ]
}

#[test]
fn drop_version_vectors_are_really_signed_and_follow_each_other() {
    let file = committed_file();
    let manifests: Vec<(String, DropManifest)> = file
        .vectors
        .iter()
        .filter(|v| v.code == Code::DROP_VERSION.0)
        .map(|v| match drop_from_fields("DROP_VERSION", &v.fields) {
            DropMessage::Version(m) => (v.name.clone(), *m),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(manifests.len(), 3);
    let DropVersions { v1, v2a, v2b, v3 } = drop_versions();
    assert_eq!(manifests[0].1, v1);
    assert_eq!(manifests[1].1, v2b);
    assert_eq!(manifests[2].1, v3);
    for (name, m) in &manifests {
        assert_eq!(m.verify(), Ok(m.version_id()), "{name}");
    }
    assert_eq!(check_version(&v1, &[]), Ok(v1.version_id()));
    assert!(check_version(&v2a, &[&v1]).is_ok());
    assert!(check_version(&v2b, &[&v1]).is_ok());
    assert!(check_version(&v3, &[&v2b, &v2a]).is_ok());
    assert_eq!(v1.signer, drop_key(DROP_PRIMARY_SECRET));
    // The ids SPEC.md §24.1 and §24.2 quote.
    assert_eq!(
        v1.drop.to_string(),
        "763654276561aabd4dbc26984412eb03bb07277a8c73736365acfbf850ad080c"
    );
    assert_eq!(
        v1.version_id().to_string(),
        "f0cd47a82655bc034b785192ea4eef35218b311705379a9afd2a24fd1c4bd231"
    );
    assert_eq!(
        v1.drop.folder_id().to_string(),
        "976f502e095f6bdc6525f679971e3b28"
    );
    assert_eq!(v3.signer, drop_key(DROP_SECONDARY_SECRET));
    // The first version's file list is the drop_files vector's, and hashes to its root.
    let listed = file
        .vectors
        .iter()
        .find(|v| v.name == "drop_files")
        .expect("present");
    let files: Vec<DropFile> = get_array(&listed.fields, "files")
        .iter()
        .map(get_drop_file)
        .collect();
    let mut hasher = RootHasher::new();
    hasher.push_batch(&files).expect("in order");
    assert_eq!(hasher.finish(&v1), Ok(()));
    let mut root = b"weft drop root v1\0".to_vec();
    for f in &files {
        root.extend_from_slice(&unhex(&hex(&Message::Drop(DropMessage::Files(
            DropFiles {
                drop: v1.drop,
                version: v1.version_id(),
                from: 0,
                files: vec![f.clone()],
            },
        ))
        .encode_payload()[32 + 32 + 1 + 1..])));
    }
    assert_eq!(v1.root, *blake3::hash(&root).as_bytes());
    // The heads vector names the two branches.
    let heads = file
        .vectors
        .iter()
        .find(|v| v.name == "drop_heads_two_branches")
        .expect("present");
    let mut expected = vec![hex(&v2a.version_id().0), hex(&v2b.version_id().0)];
    expected.sort();
    assert_eq!(heads.fields["heads"], serde_json::json!(expected));
}
