//! Chord messages (family 0x03, SPEC.md §20): ring maintenance, iterative lookups and the
//! replicated key-value store.
//!
//! Every request carries a `request` number chosen by its sender; the answer echoes it. The
//! sender of a message is the peer at the other end of the connection it arrived on, so no
//! message names its own sender.

use serde::{Deserialize, Serialize};

use crate::code::Code;
use crate::error::ProtocolError;
use crate::ids::NodeId;
use crate::message::strict;

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

/// One value of a key, with the time it has left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordValue {
    /// The value's bytes (at most [`CHORD_VALUE_BYTES_MAX`]).
    pub value: Vec<u8>,
    /// Milliseconds it has left to live; `None` lives until deleted.
    pub lifetime_ms: Option<u64>,
}

/// What a CHORD_STORE does to the key's set of values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreOp {
    /// Adds the value to the set (or refreshes its lifetime if it is there).
    Put(ChordValue),
    /// Removes one value (`Some`) or every value (`None`).
    Delete(Option<Vec<u8>>),
}

/// CHORD_STORE: changes the values of `key` held under ring position `position`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordStore {
    /// Echoed in CHORD_STORED.
    pub request: u64,
    /// The replica's ring position.
    pub position: u64,
    /// The key (at most [`CHORD_KEY_BYTES_MAX`]).
    pub key: Vec<u8>,
    /// What to do.
    pub op: StoreOp,
}

/// CHORD_STORED: the answer to CHORD_STORE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordStored {
    /// The CHORD_STORE's request number.
    pub request: u64,
    /// False if the receiver's store is full.
    pub stored: bool,
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
    /// The live values held (empty: none).
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

/// CHORD_HANDOVER: records the receiver now owns (a joiner's share, or a leaver's store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChordHandover {
    /// At most [`HANDOVER_RECORDS_MAX`].
    pub records: Vec<ChordRecord>,
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
        let value_ok = |v: &ChordValue| v.value.len() <= CHORD_VALUE_BYTES_MAX;
        let values_ok = |v: &[ChordValue]| v.len() <= CHORD_VALUES_MAX && v.iter().all(value_ok);
        let key_ok = |k: &[u8]| k.len() <= CHORD_KEY_BYTES_MAX;
        let ok = match self {
            ChordMessage::Found(m) => peers_ok(&m.peers),
            ChordMessage::State(m) => peers_ok(&m.successors) && peers_ok(m.predecessor.as_slice()),
            ChordMessage::Store(m) => {
                key_ok(&m.key)
                    && match &m.op {
                        StoreOp::Put(v) => value_ok(v),
                        StoreOp::Delete(v) => {
                            v.as_ref().is_none_or(|v| v.len() <= CHORD_VALUE_BYTES_MAX)
                        }
                    }
            }
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
