//! Identifiers and fixed-size byte strings carried on the wire.

use core::fmt;
use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A node's identity: the BLAKE3-256 hash of its ed25519 public key (SPEC.md §Identity).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The id belonging to a public key.
    pub fn from_public_key(key: &PublicKey) -> NodeId {
        NodeId(*blake3::hash(&key.0).as_bytes())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl fmt::Display for NodeId {
    /// The first eight bytes in hex: enough to tell nodes apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// An ed25519 public key (32 bytes, compressed Edwards point).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex8(&self.0))
    }
}

/// Which network a node belongs to: BLAKE3-256 of `"weft network v1\0"` followed by the
/// network's name. Nodes of different networks refuse each other in the handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct NetworkId(pub [u8; 32]);

impl NetworkId {
    /// The id of the network with this name.
    pub fn from_name(name: &str) -> NetworkId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"weft network v1\0");
        hasher.update(name.as_bytes());
        NetworkId(*hasher.finalize().as_bytes())
    }
}

impl fmt::Debug for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkId({})", hex8(&self.0))
    }
}

/// An ed25519 signature (64 bytes), written on the wire as 64 raw bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Default for Signature {
    fn default() -> Self {
        Signature([0; 64])
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex8(&self.0))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(64)?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SignatureVisitor;
        impl<'de> Visitor<'de> for SignatureVisitor {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut out = [0u8; 64];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(out))
            }
        }
        deserializer.deserialize_tuple(64, SignatureVisitor)
    }
}

/// Names one discovery cascade so that no node handles or relays it twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CascadeId {
    /// The node that started the cascade.
    pub origin: NodeId,
    /// The origin's cascade counter in the low 32 bits (from 1, per incarnation) and the low
    /// 32 bits of its incarnation in the high 32 bits (SPEC.md §Discovery).
    pub seq: u64,
}

fn hex8(bytes: &[u8]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}
