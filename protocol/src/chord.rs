//! Chord messages (family 0x03, SPEC.md §20): ring maintenance, iterative lookups and the
//! replicated key-value store.
//!
//! Every request carries a `request` number chosen by its sender; the answer echoes it. The
//! sender of a message is the peer at the other end of the connection it arrived on, so no
//! message names its own sender.

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::error::ProtocolError;
use crate::ids::{NodeId, PublicKey, Signature};
use crate::strict::strict;

/// Most peers one CHORD_FOUND or CHORD_STATE may list.
pub const CHORD_PEERS_MAX: usize = 32;

/// Longest key a chord record may have, in bytes.
pub const CHORD_KEY_BYTES_MAX: usize = 1024;

/// Longest value a chord record may hold, in bytes.
pub const CHORD_VALUE_BYTES_MAX: usize = 64 * 1024;

/// Most values one key may hold, and one CHORD_VALUES may carry.
pub const CHORD_VALUES_MAX: usize = 64;

/// Most records one CHORD_HANDOVER may carry.
pub const HANDOVER_RECORDS_MAX: usize = 256;

/// A ring member: its node id and where it accepts connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChordPeer {
    /// Its node id; its ring position is the first eight bytes, big-endian.
    pub node: NodeId,
    /// Where it can be dialed.
    pub addr: String,
}

impl ChordPeer {
    /// The peer's position on the 64-bit identifier ring.
    pub fn ring_id(&self) -> u64 {
        ring_id(&self.node)
    }
}

/// A node id's position on the 64-bit identifier ring: its first eight bytes, big-endian.
pub fn ring_id(node: &NodeId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&node.0[..8]);
    u64::from_be_bytes(b)
}

/// Ring positions a key is stored under, one per hash function (SPEC.md §20.1).
pub const CHORD_REPLICAS: usize = 5;

/// The ring position of replica `replica` of `key`: the first eight bytes (big-endian) of
/// BLAKE3(`"weft chord key v1"` || replica as one byte || key).
pub fn key_position(key: &[u8], replica: u8) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"weft chord key v1");
    h.update(&[replica]);
    h.update(key);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_be_bytes(b)
}

/// CHORD_FIND: asks which node follows `target` on the ring, or who is closer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordFind {
    /// Echoed in the answer.
    pub request: u64,
    /// The ring position looked up.
    pub target: u64,
}

/// CHORD_FOUND: the answer to CHORD_FIND.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordFound {
    /// The CHORD_FIND's request number.
    pub request: u64,
    /// True: `peers` is the owner of the target (the sender's successor) followed by the
    /// sender's further successors. False: `peers` are nodes closer to the target, best first.
    pub done: bool,
    /// At most [`CHORD_PEERS_MAX`].
    pub peers: Vec<ChordPeer>,
}

/// CHORD_STATE: the answer to CHORD_GET_STATE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordState {
    /// The CHORD_GET_STATE's request number.
    pub request: u64,
    /// The sender's predecessor, if it has one.
    pub predecessor: Option<ChordPeer>,
    /// The sender's successor list, nearest first (at most [`CHORD_PEERS_MAX`]).
    pub successors: Vec<ChordPeer>,
}

/// Domain separation for a chord record's signature (SPEC.md §20.1).
pub const CHORD_RECORD_DOMAIN: &[u8] = b"weft chord record v1\0";

/// What a signed entry says about its writer's values of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreOp {
    /// The writer's value (at most [`CHORD_VALUE_BYTES_MAX`] bytes) is in the key's set.
    Put(Vec<u8>),
    /// The writer's value (`Some`), or every value of the writer (`None`), is deleted: a
    /// tombstone, kept by holders so an older put cannot come back.
    Delete(Option<Vec<u8>>),
}

/// One signed entry of a key: a writer's value, or a writer's delete (a tombstone), with the
/// time it has left. Only `lifetime_ms` is outside the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordValue {
    /// The writer's ed25519 key.
    pub writer: PublicKey,
    /// The writer's sequence number: an entry replaces the writer's entry for the same value
    /// only with a higher one.
    pub seq: u64,
    /// A value or a delete.
    pub op: StoreOp,
    /// Milliseconds it has left to live; `None` lives until deleted. Not signed.
    pub lifetime_ms: Option<u64>,
    /// The writer's signature over [`ChordValue::signed_bytes`].
    pub signature: Signature,
}

impl ChordValue {
    /// What the writer signs for an entry of `key`: [`CHORD_RECORD_DOMAIN`] ‖ writer (32) ‖
    /// key length (u32 BE) ‖ key ‖ op tag (0 put, 1 delete one, 2 delete all) ‖ for tags 0
    /// and 1 the value length (u32 BE) ‖ value ‖ seq (u64 BE).
    pub fn signed_bytes(key: &[u8], writer: &PublicKey, seq: u64, op: &StoreOp) -> Vec<u8> {
        let value = match op {
            StoreOp::Put(v) | StoreOp::Delete(Some(v)) => v.as_slice(),
            StoreOp::Delete(None) => &[],
        };
        let mut out = Vec::with_capacity(
            CHORD_RECORD_DOMAIN.len() + 32 + 4 + key.len() + 5 + value.len() + 8,
        );
        out.extend_from_slice(CHORD_RECORD_DOMAIN);
        out.extend_from_slice(&writer.0);
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        match op {
            StoreOp::Put(_) => out.push(0),
            StoreOp::Delete(Some(_)) => out.push(1),
            StoreOp::Delete(None) => out.push(2),
        }
        if !matches!(op, StoreOp::Delete(None)) {
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        }
        out.extend_from_slice(&seq.to_be_bytes());
        out
    }

    /// The value bytes a put or a delete of one value names.
    pub fn value(&self) -> Option<&[u8]> {
        match &self.op {
            StoreOp::Put(v) | StoreOp::Delete(Some(v)) => Some(v),
            StoreOp::Delete(None) => None,
        }
    }

    /// Whether this entry is a put (not a tombstone).
    pub fn is_put(&self) -> bool {
        matches!(self.op, StoreOp::Put(_))
    }
}

/// CHORD_STORE: offers one signed entry of `key` to the record held under ring position
/// `position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordStore {
    /// Echoed in CHORD_STORED.
    pub request: u64,
    /// The replica's ring position.
    pub position: u64,
    /// The key (at most [`CHORD_KEY_BYTES_MAX`]).
    pub key: Vec<u8>,
    /// The entry.
    pub value: ChordValue,
}

/// What came of a CHORD_STORE or a CHORD_HANDOVER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreOutcome {
    /// Stored (or already held).
    Stored,
    /// The holder has an entry of the same writer and value with a higher sequence number
    /// (or the writer's delete of every value at a higher one): the entry is out of date.
    Stale,
    /// The signature does not verify, or `position` is none of the key's positions.
    Invalid,
    /// The key holds `values_per_key_max` entries already.
    KeyFull,
    /// The writer holds its limit of entries or bytes at this node already.
    WriterFull,
    /// The node holds its limit of records or bytes already.
    StoreFull,
}

impl StoreOutcome {
    /// Every outcome, in wire order (variant index).
    pub const ALL: [StoreOutcome; 6] = [
        StoreOutcome::Stored,
        StoreOutcome::Stale,
        StoreOutcome::Invalid,
        StoreOutcome::KeyFull,
        StoreOutcome::WriterFull,
        StoreOutcome::StoreFull,
    ];
}

/// CHORD_STORED: the answer to CHORD_STORE and CHORD_HANDOVER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordStored {
    /// The request number answered.
    pub request: u64,
    /// What came of it; for a handover, `Stored` when no entry was refused for space.
    pub outcome: StoreOutcome,
}

/// CHORD_FETCH: asks for the values of `key` held under `position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordFetch {
    /// Echoed in CHORD_VALUES.
    pub request: u64,
    /// The replica's ring position.
    pub position: u64,
    /// The key.
    pub key: Vec<u8>,
}

/// CHORD_VALUES: the answer to CHORD_FETCH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordValues {
    /// The CHORD_FETCH's request number.
    pub request: u64,
    /// The live entries held, tombstones included (empty: none).
    pub values: Vec<ChordValue>,
}

/// One key's values under one ring position, as handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordRecord {
    /// The replica's ring position.
    pub position: u64,
    /// The key.
    pub key: Vec<u8>,
    /// Its values (at most [`CHORD_VALUES_MAX`]).
    pub values: Vec<ChordValue>,
}

/// CHORD_HANDOVER: records the receiver now owns (a joiner's share, or a leaver's store),
/// answered by CHORD_STORED.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordHandover {
    /// Echoed in CHORD_STORED; the sender keeps its copies until then.
    pub request: u64,
    /// At most [`HANDOVER_RECORDS_MAX`].
    #[serde(deserialize_with = "handover_records_kept")]
    pub records: Vec<ChordRecord>,
}

/// CHORD_HANDOVER's records, decoded keeping one past [`HANDOVER_RECORDS_MAX`] at most (the
/// limit check then refuses them as before; `strict::keep_at_most`).
fn handover_records_kept<'de, D>(d: D) -> Result<Vec<ChordRecord>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    crate::strict::keep_at_most(d, HANDOVER_RECORDS_MAX + 1)
}

/// Every chord message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChordMessage {
    /// CHORD_FIND.
    Find(ChordFind),
    /// CHORD_FOUND.
    Found(ChordFound),
    /// CHORD_GET_STATE, with its request number.
    GetState(u64),
    /// CHORD_STATE.
    State(ChordState),
    /// CHORD_NOTIFY: the sender believes it is the receiver's predecessor. No fields.
    Notify,
    /// CHORD_STORE.
    Store(ChordStore),
    /// CHORD_STORED.
    Stored(ChordStored),
    /// CHORD_FETCH.
    Fetch(ChordFetch),
    /// CHORD_VALUES.
    Values(ChordValues),
    /// CHORD_HANDOVER.
    Handover(ChordHandover),
}

impl ChordMessage {
    /// The command code this message travels under.
    pub fn code(&self) -> Code {
        match self {
            ChordMessage::Find(_) => Code::CHORD_FIND,
            ChordMessage::Found(_) => Code::CHORD_FOUND,
            ChordMessage::GetState(_) => Code::CHORD_GET_STATE,
            ChordMessage::State(_) => Code::CHORD_STATE,
            ChordMessage::Notify => Code::CHORD_NOTIFY,
            ChordMessage::Store(_) => Code::CHORD_STORE,
            ChordMessage::Stored(_) => Code::CHORD_STORED,
            ChordMessage::Fetch(_) => Code::CHORD_FETCH,
            ChordMessage::Values(_) => Code::CHORD_VALUES,
            ChordMessage::Handover(_) => Code::CHORD_HANDOVER,
        }
    }

    /// The postcard payload (uncompressed).
    pub(crate) fn encode_payload(&self) -> Result<Vec<u8>, postcard::Error> {
        match self {
            ChordMessage::Find(m) => postcard::to_allocvec(m),
            ChordMessage::Found(m) => postcard::to_allocvec(m),
            ChordMessage::GetState(r) => postcard::to_allocvec(r),
            ChordMessage::State(m) => postcard::to_allocvec(m),
            ChordMessage::Notify => Ok(Vec::new()),
            ChordMessage::Store(m) => postcard::to_allocvec(m),
            ChordMessage::Stored(m) => postcard::to_allocvec(m),
            ChordMessage::Fetch(m) => postcard::to_allocvec(m),
            ChordMessage::Values(m) => postcard::to_allocvec(m),
            ChordMessage::Handover(m) => postcard::to_allocvec(m),
        }
    }

    /// Decodes the payload of a frame with a chord code.
    pub(crate) fn decode(code: Code, payload: &[u8]) -> Result<ChordMessage, ProtocolError> {
        Ok(match code {
            Code::CHORD_FIND => ChordMessage::Find(strict(code, payload)?),
            Code::CHORD_FOUND => ChordMessage::Found(strict(code, payload)?),
            Code::CHORD_GET_STATE => ChordMessage::GetState(strict(code, payload)?),
            Code::CHORD_STATE => ChordMessage::State(strict(code, payload)?),
            Code::CHORD_NOTIFY => {
                strict::<()>(code, payload)?;
                ChordMessage::Notify
            }
            Code::CHORD_STORE => ChordMessage::Store(strict(code, payload)?),
            Code::CHORD_STORED => ChordMessage::Stored(strict(code, payload)?),
            Code::CHORD_FETCH => ChordMessage::Fetch(strict(code, payload)?),
            Code::CHORD_VALUES => ChordMessage::Values(strict(code, payload)?),
            Code::CHORD_HANDOVER => ChordMessage::Handover(strict(code, payload)?),
            other => return Err(ProtocolError::UnknownCommand(other.0)),
        })
    }

    /// Why the message breaks a limit of SPEC.md §20.2, if it does.
    pub(crate) fn limit_error(&self) -> Option<&'static str> {
        let peers_ok = |p: &[ChordPeer]| {
            p.len() <= CHORD_PEERS_MAX && p.iter().all(|p| p.addr.len() <= crate::ADDR_BYTES_MAX)
        };
        let value_ok = |v: &ChordValue| v.value().is_none_or(|v| v.len() <= CHORD_VALUE_BYTES_MAX);
        let values_ok = |v: &[ChordValue]| v.len() <= CHORD_VALUES_MAX && v.iter().all(value_ok);
        let key_ok = |k: &[u8]| k.len() <= CHORD_KEY_BYTES_MAX;
        let ok = match self {
            ChordMessage::Found(m) => peers_ok(&m.peers),
            ChordMessage::State(m) => peers_ok(&m.successors) && peers_ok(m.predecessor.as_slice()),
            ChordMessage::Store(m) => key_ok(&m.key) && value_ok(&m.value),
            ChordMessage::Fetch(m) => key_ok(&m.key),
            ChordMessage::Values(m) => values_ok(&m.values),
            ChordMessage::Handover(m) => {
                m.records.len() <= HANDOVER_RECORDS_MAX
                    && m.records
                        .iter()
                        .all(|r| key_ok(&r.key) && values_ok(&r.values))
            }
            ChordMessage::Find(_)
            | ChordMessage::GetState(_)
            | ChordMessage::Notify
            | ChordMessage::Stored(_) => true,
        };
        (!ok).then_some("chord message over a limit of SPEC.md §20.2")
    }
}

#[cfg(test)]
mod tests {
    use super::StoreOutcome;

    #[test]
    fn every_store_outcome_is_listed_at_its_wire_index() {
        for (i, outcome) in StoreOutcome::ALL.iter().enumerate() {
            let encoded = postcard::to_allocvec(outcome).expect("a unit variant encodes");
            assert_eq!(encoded, [i as u8], "{outcome:?}");
        }
    }
}
