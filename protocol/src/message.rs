//! Every message weft sends, and the codec between messages and frames.
//!
//! Payloads are postcard (varint integers, length-prefixed byte strings and sequences, fixed
//! arrays raw). Field order on the wire is the declaration order below. Decoding is strict:
//! trailing bytes after a message, or a field over its limit, make the payload malformed.

use serde::{Deserialize, Serialize};

use crate::chord::ChordMessage;
use crate::code::Code;
use crate::drop::DropMessage;
use crate::error::ProtocolError;
use crate::frame::{Frame, PAYLOAD_BYTES_MAX};
use crate::ids::{CascadeId, NetworkId, NodeId, PublicKey, Signature};
use crate::replica::ReplicaMessage;
use crate::run::RunMessage;
use crate::strict::{keep_at_most, postcard_reason, strict};
use crate::table::{buckets_ok, TableDigest, TableEntries, TableWant, TableWrite};
use crate::table::{TABLE_BUCKETS, TABLE_OPS_PER_MESSAGE_MAX, TABLE_WANT_HELD_MAX};

/// Longest address string a message may carry, in bytes.
pub const ADDR_BYTES_MAX: usize = 256;

/// Most peers one ICANSEE or IKNOWABOUT may list.
pub const PEERS_PER_MESSAGE_MAX: usize = 64;

/// Most origin entries one MESH_DIGEST may carry.
pub const DIGEST_ENTRIES_MAX: usize = 1024;

/// Most sequence ranges one MESH_DIGEST entry may carry.
pub const RANGES_PER_ENTRY_MAX: usize = 64;

/// Most ranges one MESH_WANT may carry.
pub const WANT_RANGES_MAX: usize = 1024;

// The lists of these messages, decoded keeping one element past their limit at most (the
// limit check then refuses them as before; `strict::keep_at_most`).
fn peers_kept<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PeerInfo>, D::Error> {
    keep_at_most(d, PEERS_PER_MESSAGE_MAX + 1)
}

fn ranges_kept<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SeqRange>, D::Error> {
    keep_at_most(d, RANGES_PER_ENTRY_MAX + 1)
}

fn digest_entries_kept<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<DigestEntry>, D::Error> {
    keep_at_most(d, DIGEST_ENTRIES_MAX + 1)
}

fn wants_kept<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<WantRange>, D::Error> {
    keep_at_most(d, WANT_RANGES_MAX + 1)
}

/// Capability bit in HELLO: the sender accepts lz4-compressed payloads.
pub const CAP_LZ4: u32 = 0x1;

/// Capability bit in HELLO: the sender's network sends broadcasts without origin signatures
/// (SPEC.md §7.4). Both ends of a connection must agree on it.
pub const CAP_BROADCASTS_UNSIGNED: u32 = 0x2;

/// Largest HELLO payload postcard can encode within the limits: three 32-byte arrays, a
/// 10-byte `u64` varint, `Some` + a 2-byte length + `ADDR_BYTES_MAX` address bytes, two 5-byte
/// `u32` varints and `Some` + one byte (SPEC.md §6.2).
pub const HELLO_PAYLOAD_BYTES_MAX: usize = 3 * 32 + 10 + (1 + 2 + ADDR_BYTES_MAX) + 5 + 5 + 2;

/// Largest frame a peer may send before its handshake is done: a HELLO of
/// [`HELLO_PAYLOAD_BYTES_MAX`] behind the 8-byte header; HELLO_ACK and BYE are smaller.
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = crate::frame::HEADER_BYTES + HELLO_PAYLOAD_BYTES_MAX;

/// First frame each side sends on a new connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The network the sender belongs to.
    pub network: NetworkId,
    /// The sender's ed25519 public key; its node id is the key's hash.
    pub public_key: PublicKey,
    /// Fresh random bytes the receiver must sign in its HELLO_ACK.
    pub nonce: [u8; 32],
    /// Grows each time the sender restarts, so peers tell a new run from an old one.
    pub incarnation: u64,
    /// Where the sender accepts connections, if anywhere.
    pub listen_addr: Option<String>,
    /// Capability bits ([`CAP_LZ4`], [`CAP_BROADCASTS_UNSIGNED`]).
    pub capabilities: u32,
    /// The protocol families the sender runs: bit `n` for the family whose codes have high
    /// byte `n` ([`crate::Family::bit`]). Session is always set.
    pub families: u32,
    /// `Some(n)`: this connection is a dedicated one carrying only the family with high byte
    /// `n` (and session frames); it is never a link. `None`: a link.
    pub dedicated: Option<u8>,
}

/// The handshake's second frame: proof of the key named in the sender's HELLO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAck {
    /// ed25519 signature over the transcript defined in SPEC.md §7.3.
    pub signature: Signature,
}

/// Liveness probe; the receiver answers PONG with the same nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the PONG.
    pub nonce: u64,
}

/// Answer to PING.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The PING's nonce.
    pub nonce: u64,
}

/// Why a connection is being closed, as sent in BYE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ByeReason {
    /// The node is shutting down.
    Shutdown,
    /// Another link to the same peer won the tie-break.
    DuplicateLink,
    /// The receiver belongs to another network.
    WrongNetwork,
    /// The connection limit is reached.
    TooManyConnections,
    /// The peer could not keep up with what it was sent.
    SlowPeer,
    /// The peer sent bytes that broke the protocol.
    ProtocolViolation,
    /// The handshake's proof did not verify.
    BadProof,
    /// The peer was silent past the liveness timeout.
    Timeout,
    /// The application asked to disconnect.
    Requested,
    /// The receiver has seen the sender's key with a higher incarnation: another node runs
    /// with the sender's key (SPEC.md §8.7).
    StaleIncarnation,
}

/// One peer as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's id.
    pub node: NodeId,
    /// Where it can be dialed.
    pub addr: String,
}

/// Cascade: the origin's direct peers (and the origin's own address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ICanSee {
    /// Names the cascade; nobody handles or relays one twice.
    pub cascade: CascadeId,
    /// Relays left; a receiver relays with one less while this is above zero.
    pub hops_left: u8,
    /// Where the origin accepts connections, if anywhere.
    pub origin_addr: Option<String>,
    /// Peers the origin holds live links to.
    #[serde(deserialize_with = "peers_kept")]
    pub peers: Vec<PeerInfo>,
}

/// Cascade: peers the origin has heard of but need not be linked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IKnowAbout {
    /// Names the cascade.
    pub cascade: CascadeId,
    /// Relays left.
    pub hops_left: u8,
    /// Heard-of peers.
    #[serde(deserialize_with = "peers_kept")]
    pub peers: Vec<PeerInfo>,
}

/// Cascade: the origin lost its link to `lost`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ICantSee {
    /// Names the cascade.
    pub cascade: CascadeId,
    /// Relays left.
    pub hops_left: u8,
    /// The peer the origin can no longer see.
    pub lost: NodeId,
}

/// Domain separation for a broadcast's origin signature (SPEC.md §6.9).
pub const BROADCAST_SIGNATURE_DOMAIN: &[u8] = b"weft broadcast v1\0";

/// A broadcast origin's proof (SPEC.md §6.9): its public key, whose BLAKE3 hash must be the
/// broadcast's `origin`, and its signature over [`Broadcast::signed_message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginProof {
    /// The origin's ed25519 public key.
    pub public_key: PublicKey,
    /// The origin's signature.
    pub signature: Signature,
}

/// A mesh flood broadcast. Relays forward the frame's bytes unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broadcast<'a> {
    /// The node that originated the broadcast.
    pub origin: NodeId,
    /// The originator's incarnation when it sent this.
    pub incarnation: u64,
    /// Per-origin, per-incarnation sequence number, from 1.
    pub seq: u64,
    /// Application bytes.
    #[serde(borrow, serialize_with = "bytes_at_once")]
    pub payload: &'a [u8],
    /// The origin's signature and key (a network with `broadcast_signatures` on), or `None`.
    pub proof: Option<OriginProof>,
}

impl<'a> Broadcast<'a> {
    /// Decodes a BROADCAST or MESH_REPAIR payload (`code` names which, for errors): the same
    /// value and the same errors as [`Message::decode`] with the derived decoding, limits
    /// included, but taken field by field. Serde walks the 32-byte origin one element at a
    /// time, and every relay decodes every broadcast it receives.
    #[inline]
    pub fn decode(code: Code, payload: &'a [u8]) -> Result<Broadcast<'a>, ProtocolError> {
        BroadcastFields::take(code, payload).map(BroadcastFields::broadcast)
    }

    /// Writes into `out` (cleared first) the bytes the origin signs: `DOMAIN ‖ network ‖
    /// origin ‖ incarnation (u64 BE) ‖ seq (u64 BE) ‖ payload` (SPEC.md §6.9).
    pub fn signed_message(&self, network: &NetworkId, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(BROADCAST_SIGNATURE_DOMAIN.len() + 32 * 2 + 16 + self.payload.len());
        out.extend_from_slice(BROADCAST_SIGNATURE_DOMAIN);
        out.extend_from_slice(&network.0);
        out.extend_from_slice(&self.origin.0);
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(self.payload);
    }
}

/// BROADCAST's encoder, field by field: the bytes postcard's derived encoding writes (checked
/// by a property below), written at once into a buffer sized beforehand. Postcard grows its
/// `Vec` from empty and writes the 32- and 64-byte arrays one byte at a time, and every
/// origin encodes every broadcast it sends.
impl Broadcast<'_> {
    /// The length of the postcard encoding: the origin, three varints (incarnation, seq, the
    /// payload's length), the payload, the option tag and the proof.
    fn encoded_len(&self) -> usize {
        let proof = if self.proof.is_some() { 32 + 64 } else { 0 };
        32 + varint_len(self.incarnation)
            + varint_len(self.seq)
            + varint_len(self.payload.len() as u64)
            + self.payload.len()
            + 1
            + proof
    }

    /// Appends the postcard encoding ([`encoded_len`](Self::encoded_len) bytes) to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.origin.0);
        put_varint(out, self.incarnation);
        put_varint(out, self.seq);
        put_varint(out, self.payload.len() as u64);
        out.extend_from_slice(self.payload);
        match &self.proof {
            None => out.push(0),
            Some(proof) => {
                out.push(1);
                out.extend_from_slice(&proof.public_key.0);
                out.extend_from_slice(&proof.signature.0);
            }
        }
    }
}

/// Bytes of `v` as a postcard (LEB128) varint: one per started group of 7 bits, at least one.
fn varint_len(v: u64) -> usize {
    1 + (63 - (v | 1).leading_zeros() as usize) / 7
}

/// Appends `v` as a postcard (LEB128) varint: 7 bits a byte, low first, the top bit set on
/// every byte but the last.
pub(crate) fn put_varint(out: &mut Vec<u8>, v: u64) {
    let mut v = v;
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Takes a postcard varint `u64` (at most 10 bytes, the last of them at most 1) from the
/// front of `bytes`, with postcard's errors: the same as its `take_from_bytes::<u64>` (and
/// `usize` on 64-bit targets), checked by the decoding properties below.
#[inline]
fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), postcard::Error> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i == 9 && byte > 1 {
                return Err(postcard::Error::DeserializeBadVarint);
            }
            return Ok((value, &bytes[i + 1..]));
        }
    }
    if bytes.len() >= 10 {
        Err(postcard::Error::DeserializeBadVarint)
    } else {
        Err(postcard::Error::DeserializeUnexpectedEnd)
    }
}

/// Takes a postcard byte string (a varint length, then the bytes) from the front of `bytes`.
#[inline]
fn take_byte_string(bytes: &[u8]) -> Result<(&[u8], &[u8]), postcard::Error> {
    let (len, rest) = take_varint(bytes)?;
    match usize::try_from(len) {
        Ok(len) if len <= rest.len() => Ok(rest.split_at(len)),
        _ => Err(postcard::Error::DeserializeUnexpectedEnd),
    }
}

/// A BROADCAST's fields as [`Broadcast::decode`] finds them, borrowed from the payload: small
/// enough to return by value in registers, where a `Broadcast` (168 bytes) is copied on its
/// way out of each call; the caller then builds its value in place
/// ([`broadcast`](Self::broadcast), inlined).
struct BroadcastFields<'a> {
    origin: &'a [u8; 32],
    incarnation: u64,
    seq: u64,
    body: &'a [u8],
    proof: Option<(&'a [u8; 32], &'a [u8; 64])>,
}

impl<'a> BroadcastFields<'a> {
    /// Takes the fields of a BROADCAST or MESH_REPAIR payload, with [`Broadcast::decode`]'s
    /// errors.
    fn take(code: Code, payload: &'a [u8]) -> Result<BroadcastFields<'a>, ProtocolError> {
        let malformed = |reason| ProtocolError::MalformedPayload { code, reason };
        let postcard_err = |e| malformed(postcard_reason(e));
        if payload.len() > PAYLOAD_BYTES_MAX {
            return Err(ProtocolError::DecompressedTooLarge {
                size: payload.len() as u64,
                max: PAYLOAD_BYTES_MAX as u64,
            });
        }
        // A fixed-size array is its bytes in order, with no length prefix.
        let (origin, rest) = payload
            .split_first_chunk::<32>()
            .ok_or(postcard::Error::DeserializeUnexpectedEnd)
            .map_err(postcard_err)?;
        let (incarnation, rest) = take_varint(rest).map_err(postcard_err)?;
        let (seq, rest) = take_varint(rest).map_err(postcard_err)?;
        let (body, rest) = take_byte_string(rest).map_err(postcard_err)?;
        let (proof, rest) = take_proof(rest).map_err(postcard_err)?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes after the message"));
        }
        if seq == 0 {
            return Err(malformed("broadcast sequence 0"));
        }
        Ok(BroadcastFields {
            origin,
            incarnation,
            seq,
            body,
            proof,
        })
    }

    /// The broadcast.
    #[inline(always)]
    fn broadcast(self) -> Broadcast<'a> {
        Broadcast {
            origin: NodeId(*self.origin),
            incarnation: self.incarnation,
            seq: self.seq,
            payload: self.body,
            proof: self.proof.map(|(key, signature)| OriginProof {
                public_key: PublicKey(*key),
                signature: Signature(*signature),
            }),
        }
    }
}

/// Takes an `Option<OriginProof>` (tag `00`, or `01` ‖ key ‖ signature), borrowed, with
/// postcard's errors.
#[allow(clippy::type_complexity)]
fn take_proof(bytes: &[u8]) -> Result<(Option<(&[u8; 32], &[u8; 64])>, &[u8]), postcard::Error> {
    let (tag, rest) = bytes
        .split_first()
        .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
    match tag {
        0 => Ok((None, rest)),
        1 => {
            let (key, rest) = rest
                .split_first_chunk::<32>()
                .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
            let (signature, rest) = rest
                .split_first_chunk::<64>()
                .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
            Ok((Some((key, signature)), rest))
        }
        _ => Err(postcard::Error::DeserializeBadOption),
    }
}

/// Writes a byte string as one length-prefixed run (the same bytes serde's default writes one
/// element at a time).
fn bytes_at_once<S: serde::Serializer>(bytes: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// An inclusive range of sequence numbers, `first <= last`, both at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeqRange {
    /// Lowest sequence number in the range.
    pub first: u64,
    /// Highest sequence number in the range.
    pub last: u64,
}

impl SeqRange {
    fn is_valid(self) -> bool {
        1 <= self.first && self.first <= self.last
    }
}

/// The broadcasts of one origin's incarnation that the sender of a digest holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// The originator.
    pub origin: NodeId,
    /// Its incarnation.
    pub incarnation: u64,
    /// Held sequence numbers, as ascending, disjoint ranges.
    #[serde(deserialize_with = "ranges_kept")]
    pub ranges: Vec<SeqRange>,
}

/// Repair: the broadcasts the sender holds in its recent window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshDigest {
    /// One entry per (origin, incarnation).
    #[serde(deserialize_with = "digest_entries_kept")]
    pub entries: Vec<DigestEntry>,
}

/// One range of broadcasts asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WantRange {
    /// The originator.
    pub origin: NodeId,
    /// Its incarnation.
    pub incarnation: u64,
    /// The sequence numbers.
    pub range: SeqRange,
}

/// Repair: the broadcasts the sender misses from the receiver's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshWant {
    /// What is missing.
    #[serde(deserialize_with = "wants_kept")]
    pub wants: Vec<WantRange>,
}

/// Any message, borrowing byte strings from the payload it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// HELLO.
    Hello(Hello),
    /// HELLO_ACK.
    HelloAck(HelloAck),
    /// PING.
    Ping(Ping),
    /// PONG.
    Pong(Pong),
    /// BYE.
    Bye(ByeReason),
    /// ICANSEE.
    ICanSee(ICanSee),
    /// IKNOWABOUT.
    IKnowAbout(IKnowAbout),
    /// ICANTSEE.
    ICantSee(ICantSee),
    /// BROADCAST.
    Broadcast(Broadcast<'a>),
    /// MESH_DIGEST.
    MeshDigest(MeshDigest),
    /// MESH_WANT.
    MeshWant(MeshWant),
    /// MESH_REPAIR: the same fields as BROADCAST.
    MeshRepair(Broadcast<'a>),
    /// TABLE_WRITE.
    TableWrite(TableWrite),
    /// TABLE_DIGEST.
    TableDigest(TableDigest),
    /// TABLE_WANT.
    TableWant(TableWant),
    /// TABLE_ENTRIES.
    TableEntries(TableEntries),
    /// A Chord message (family 0x03, SPEC.md §20).
    Chord(ChordMessage),
    /// A replication message (family 0x04, SPEC.md §22).
    Replica(ReplicaMessage<'a>),
    /// A drop message (family 0x05, SPEC.md §24).
    Drop(DropMessage),
    /// A remote-run message (family 0x06, SPEC.md §23).
    Run(RunMessage<'a>),
}

impl<'a> Message<'a> {
    /// The command code this message travels under.
    pub fn code(&self) -> Code {
        match self {
            Message::Hello(_) => Code::HELLO,
            Message::HelloAck(_) => Code::HELLO_ACK,
            Message::Ping(_) => Code::PING,
            Message::Pong(_) => Code::PONG,
            Message::Bye(_) => Code::BYE,
            Message::ICanSee(_) => Code::ICANSEE,
            Message::IKnowAbout(_) => Code::IKNOWABOUT,
            Message::ICantSee(_) => Code::ICANTSEE,
            Message::Broadcast(_) => Code::BROADCAST,
            Message::MeshDigest(_) => Code::MESH_DIGEST,
            Message::MeshWant(_) => Code::MESH_WANT,
            Message::MeshRepair(_) => Code::MESH_REPAIR,
            Message::TableWrite(_) => Code::TABLE_WRITE,
            Message::TableDigest(_) => Code::TABLE_DIGEST,
            Message::TableWant(_) => Code::TABLE_WANT,
            Message::TableEntries(_) => Code::TABLE_ENTRIES,
            Message::Chord(m) => m.code(),
            Message::Replica(m) => m.code(),
            Message::Drop(m) => m.code(),
            Message::Run(m) => m.code(),
        }
    }

    /// The postcard payload bytes (uncompressed).
    pub fn encode_payload(&self) -> Vec<u8> {
        // Serializing these types into a Vec cannot fail: no map keys, no unsized sequences.
        let encoded = match self {
            Message::Hello(m) => postcard::to_allocvec(m),
            Message::HelloAck(m) => postcard::to_allocvec(m),
            Message::Ping(m) => postcard::to_allocvec(m),
            Message::Pong(m) => postcard::to_allocvec(m),
            Message::Bye(m) => postcard::to_allocvec(m),
            Message::ICanSee(m) => postcard::to_allocvec(m),
            Message::IKnowAbout(m) => postcard::to_allocvec(m),
            Message::ICantSee(m) => postcard::to_allocvec(m),
            Message::Broadcast(m) | Message::MeshRepair(m) => {
                let mut out = Vec::with_capacity(m.encoded_len());
                m.encode_into(&mut out);
                return out;
            }
            Message::MeshDigest(m) => postcard::to_allocvec(m),
            Message::MeshWant(m) => postcard::to_allocvec(m),
            Message::TableWrite(m) => postcard::to_allocvec(m),
            Message::TableDigest(m) => postcard::to_allocvec(m),
            Message::TableWant(m) => postcard::to_allocvec(m),
            Message::TableEntries(m) => postcard::to_allocvec(m),
            Message::Chord(m) => m.encode_payload(),
            Message::Replica(m) => m.encode_payload(),
            Message::Drop(m) => m.encode_payload(),
            Message::Run(m) => m.encode_payload(),
        };
        encoded.unwrap_or_default()
    }

    /// The whole frame, compressed when `compress` is set and that makes it smaller.
    pub fn to_frame(&self, compress: bool) -> Frame {
        match self {
            // The payload written straight behind the header, in one buffer of exact size.
            Message::Broadcast(b) | Message::MeshRepair(b) if !compress => {
                Frame::build_exact(self.code(), b.encoded_len(), |out| b.encode_into(out))
            }
            _ => Frame::build(self.code(), &self.encode_payload(), compress),
        }
    }

    /// Decodes the (decompressed) payload of a frame with code `code`.
    #[inline]
    pub fn decode(code: Code, payload: &'a [u8]) -> Result<Message<'a>, ProtocolError> {
        // The message every relay decodes, inlined into the caller: built in place rather
        // than moved out of `decode_any`'s frame (the value is 216 bytes).
        if code == Code::BROADCAST {
            return BroadcastFields::take(code, payload).map(|f| Message::Broadcast(f.broadcast()));
        }
        Message::decode_any(code, payload)
    }

    /// [`decode`](Self::decode) of any code.
    fn decode_any(code: Code, payload: &'a [u8]) -> Result<Message<'a>, ProtocolError> {
        let msg = match code {
            Code::HELLO => Message::Hello(strict(code, payload)?),
            Code::HELLO_ACK => Message::HelloAck(strict(code, payload)?),
            Code::PING => Message::Ping(strict(code, payload)?),
            Code::PONG => Message::Pong(strict(code, payload)?),
            Code::BYE => Message::Bye(strict(code, payload)?),
            Code::ICANSEE => Message::ICanSee(strict(code, payload)?),
            Code::IKNOWABOUT => Message::IKnowAbout(strict(code, payload)?),
            Code::ICANTSEE => Message::ICantSee(strict(code, payload)?),
            Code::BROADCAST => return Broadcast::decode(code, payload).map(Message::Broadcast),
            Code::MESH_DIGEST => Message::MeshDigest(strict(code, payload)?),
            Code::MESH_WANT => Message::MeshWant(strict(code, payload)?),
            Code::MESH_REPAIR => return Broadcast::decode(code, payload).map(Message::MeshRepair),
            Code::TABLE_WRITE => Message::TableWrite(strict(code, payload)?),
            Code::TABLE_DIGEST => Message::TableDigest(strict(code, payload)?),
            Code::TABLE_WANT => Message::TableWant(strict(code, payload)?),
            Code::TABLE_ENTRIES => Message::TableEntries(strict(code, payload)?),
            c if c.is_known() && c.family() == Some(crate::Family::Chord) => {
                Message::Chord(ChordMessage::decode(code, payload)?)
            }
            c if c.is_known() && c.family() == Some(crate::Family::Replication) => {
                Message::Replica(ReplicaMessage::decode(code, payload)?)
            }
            c if c.is_known() && c.family() == Some(crate::Family::Drops) => {
                Message::Drop(DropMessage::decode(code, payload)?)
            }
            c if c.is_known() && c.family() == Some(crate::Family::Remote) => {
                Message::Run(RunMessage::decode(code, payload)?)
            }
            other => return Err(ProtocolError::UnknownCommand(other.0)),
        };
        msg.check_limits()?;
        Ok(msg)
    }

    fn check_limits(&self) -> Result<(), ProtocolError> {
        let malformed = |reason| ProtocolError::MalformedPayload {
            code: self.code(),
            reason,
        };
        let addr_ok = |a: &str| a.len() <= ADDR_BYTES_MAX;
        let peers_ok = |peers: &[PeerInfo]| {
            peers.len() <= PEERS_PER_MESSAGE_MAX && peers.iter().all(|p| addr_ok(&p.addr))
        };
        match self {
            Message::Hello(h) if !h.listen_addr.as_deref().is_none_or(addr_ok) => {
                Err(malformed("listen address longer than ADDR_BYTES_MAX"))
            }
            Message::ICanSee(m)
                if !m.origin_addr.as_deref().is_none_or(addr_ok) || !peers_ok(&m.peers) =>
            {
                Err(malformed("peer list or address over its limit"))
            }
            Message::IKnowAbout(m) if !peers_ok(&m.peers) => {
                Err(malformed("peer list or address over its limit"))
            }
            Message::Broadcast(b) | Message::MeshRepair(b) if b.seq == 0 => {
                Err(malformed("broadcast sequence 0"))
            }
            Message::MeshDigest(d)
                if d.entries.len() > DIGEST_ENTRIES_MAX
                    || d.entries.iter().any(|e| {
                        e.ranges.len() > RANGES_PER_ENTRY_MAX
                            || !e.ranges.iter().all(|r| r.is_valid())
                    }) =>
            {
                Err(malformed("digest over its limits or with an invalid range"))
            }
            Message::MeshWant(w)
                if w.wants.len() > WANT_RANGES_MAX
                    || !w.wants.iter().all(|r| r.range.is_valid()) =>
            {
                Err(malformed(
                    "want list over its limit or with an invalid range",
                ))
            }
            Message::TableWrite(w) if !w.is_valid() => {
                Err(malformed("table key, value or lease breaks its rules"))
            }
            Message::TableDigest(d)
                if d.buckets.len() > usize::from(TABLE_BUCKETS)
                    || !buckets_ok(d.bits, d.buckets.iter().map(|b| b.bucket)) =>
            {
                Err(malformed("digest buckets not ascending or out of range"))
            }
            Message::TableWant(w)
                if w.buckets.len() > usize::from(TABLE_BUCKETS)
                    || w.held.len() > TABLE_WANT_HELD_MAX
                    || !buckets_ok(w.bits, w.buckets.iter().copied()) =>
            {
                Err(malformed(
                    "wanted buckets not ascending or out of range, or too many held",
                ))
            }
            Message::TableEntries(e)
                if e.writes.len() > TABLE_OPS_PER_MESSAGE_MAX
                    || !e.writes.iter().all(TableWrite::is_valid) =>
            {
                Err(malformed(
                    "entries over their limit or with an invalid write",
                ))
            }
            Message::Chord(m) => match m.limit_error() {
                Some(reason) => Err(malformed(reason)),
                None => Ok(()),
            },
            Message::Replica(m) => match m.limit_error() {
                Some(reason) => Err(malformed(reason)),
                None => Ok(()),
            },
            Message::Drop(m) => match m.limit_error() {
                Some(reason) => Err(malformed(reason)),
                None => Ok(()),
            },
            Message::Run(m) => match m.limit_error() {
                Some(reason) => Err(malformed(reason)),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{quickcheck, TestResult};

    #[test]
    fn the_largest_hello_is_exactly_the_handshake_frame_bound() {
        let largest = Message::Hello(Hello {
            network: NetworkId([0xFF; 32]),
            public_key: PublicKey([0xFF; 32]),
            nonce: [0xFF; 32],
            incarnation: u64::MAX,
            listen_addr: Some("9".repeat(ADDR_BYTES_MAX)),
            capabilities: u32::MAX,
            families: u32::MAX,
            dedicated: Some(u8::MAX),
        });
        assert_eq!(largest.encode_payload().len(), HELLO_PAYLOAD_BYTES_MAX);
        assert_eq!(
            largest.to_frame(false).bytes().len(),
            HANDSHAKE_FRAME_BYTES_MAX
        );
        let ack = Message::HelloAck(HelloAck {
            signature: Signature([0xFF; 64]),
        });
        assert!(ack.to_frame(false).bytes().len() < HANDSHAKE_FRAME_BYTES_MAX);
        assert_eq!(HANDSHAKE_FRAME_BYTES_MAX, 385);
    }

    /// The derived decoding [`Broadcast::decode`] stands in for.
    fn derived(code: Code, payload: &[u8]) -> Result<Broadcast<'_>, ProtocolError> {
        let b: Broadcast<'_> = strict(code, payload)?;
        if b.seq == 0 {
            return Err(ProtocolError::MalformedPayload {
                code,
                reason: "broadcast sequence 0",
            });
        }
        Ok(b)
    }

    /// A broadcast from quickcheck's values (the origin and the proof's arrays from `fill`).
    fn arbitrary_broadcast<'a>(
        fill: &[u8],
        incarnation: u64,
        seq: u64,
        body: &'a [u8],
        signed: bool,
    ) -> Broadcast<'a> {
        let mut bytes = [0u8; 32 + 32 + 64];
        for (d, s) in bytes.iter_mut().zip(fill.iter().cycle()) {
            *d = *s;
        }
        let array = |at: usize| -> [u8; 32] { bytes[at..at + 32].try_into().unwrap() };
        Broadcast {
            origin: NodeId(array(0)),
            incarnation,
            seq,
            payload: body,
            proof: signed.then(|| OriginProof {
                public_key: PublicKey(array(32)),
                signature: Signature(bytes[64..].try_into().unwrap()),
            }),
        }
    }

    quickcheck! {
        /// Any BROADCAST or MESH_REPAIR, small and large integers: the field-by-field
        /// encoder writes postcard's derived bytes, its frame is the general `Frame::build`
        /// of them byte for byte, and the frame decodes back to the same broadcast.
        fn broadcast_encode_matches_serde(
            fill: Vec<u8>, incarnation: u64, seq: u64, body: Vec<u8>, signed: bool, shift: u8,
            repair: bool
        ) -> bool {
            // Values across every varint length, not only quickcheck's small ones.
            let (incarnation, seq) = (incarnation << (shift % 64), seq.rotate_left(shift.into()));
            let b = arbitrary_broadcast(&fill, incarnation, seq, &body, signed);
            let message = if repair { Message::MeshRepair(b.clone()) } else { Message::Broadcast(b.clone()) };
            let derived = postcard::to_allocvec(&b).unwrap();
            let payload = message.encode_payload();
            let frame = message.to_frame(false);
            let plain = Frame::build(message.code(), &derived, false);
            let decoded = Broadcast::decode(message.code(), &frame.bytes()[crate::frame::HEADER_BYTES..]);
            let round_trips = if seq == 0 { decoded.is_err() } else { decoded.as_ref() == Ok(&b) };
            payload == derived
                && b.encoded_len() == derived.len()
                && frame == plain
                && Frame::parse(frame.bytes().clone()) == Ok(plain)
                && round_trips
        }

        /// Any bytes, and bytes behind a run of continuation bytes (random bytes rarely reach
        /// the 10-byte bound): the same varint, byte string or error as postcard's.
        fn take_varint_matches_postcard(bytes: Vec<u8>, run: u8) -> bool {
            let mut input = vec![0x80 | run; usize::from(run % 12)];
            input.extend_from_slice(&bytes);
            take_varint(&input) == postcard::take_from_bytes::<u64>(&input)
                && take_byte_string(&input) == postcard::take_from_bytes::<&[u8]>(&input)
        }

        /// Any bytes: the same value or the same error as the derived decoding.
        fn broadcast_decode_matches_serde_on_any_bytes(bytes: Vec<u8>) -> bool {
            Broadcast::decode(Code::BROADCAST, &bytes) == derived(Code::BROADCAST, &bytes)
        }

        /// Valid encodings, then each cut short, grown or with one byte changed: the same
        /// value or the same error (random bytes rarely reach the later fields).
        fn broadcast_decode_matches_serde_near_valid_encodings(
            origin: Vec<u8>, incarnation: u64, seq: u64, body: Vec<u8>, at: usize, byte: u8
        ) -> TestResult {
            let mut id = [0u8; 32];
            for (d, s) in id.iter_mut().zip(&origin) {
                *d = *s;
            }
            let proof = (at % 2 == 1).then_some(OriginProof {
                public_key: PublicKey(id),
                signature: Signature([byte; 64]),
            });
            let b = Broadcast { origin: NodeId(id), incarnation, seq, payload: &body, proof };
            let valid = Message::Broadcast(b).encode_payload();
            let same = |p: &[u8]| {
                Broadcast::decode(Code::MESH_REPAIR, p) == derived(Code::MESH_REPAIR, p)
            };
            let at = at % valid.len();
            let mut changed = valid.clone();
            changed[at] = byte;
            let mut grown = valid.clone();
            grown.push(byte);
            let ok = same(&valid) && same(&valid[..at]) && same(&changed) && same(&grown);
            TestResult::from_bool(ok && (seq == 0 || Broadcast::decode(Code::BROADCAST, &valid).is_ok()))
        }
    }
}
