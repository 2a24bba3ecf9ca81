//! The sync table's messages (family 0x02, SPEC.md §19): a flooded write, and the
//! anti-entropy exchange (bucket digests, wanted buckets, the entries of those buckets).

use serde::{Deserialize, Serialize};

use crate::ids::{NetworkId, NodeId, PublicKey, Signature};

/// Longest key a table write may carry, in bytes (nodes may set a lower limit of their own).
pub const TABLE_KEY_BYTES_MAX: usize = 1024;

/// Longest value a table write may carry, in bytes.
pub const TABLE_VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Most hash buckets a digest may cut the key space into: `2^bits`, `bits` at most 8.
pub const TABLE_BUCKETS: u16 = 256;

/// Most bits of a key's hash that name its bucket.
pub const TABLE_BUCKET_BITS_MAX: u8 = 8;

/// Most writes one TABLE_ENTRIES may carry.
pub const TABLE_OPS_PER_MESSAGE_MAX: usize = 1024;

/// Most write fingerprints one TABLE_WANT may list (512 KiB of them).
pub const TABLE_WANT_HELD_MAX: usize = 65_536;

/// Domain separation for a table write's signature (SPEC.md §19.9).
pub const TABLE_WRITE_DOMAIN: &[u8] = b"weft table write v1\0";

/// A hybrid logical clock reading: wall-clock milliseconds and a counter that orders events
/// within one millisecond. Ordered by `ms`, then `logical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Unix milliseconds, as the writer's clock (merged with every clock it heard) read them.
    pub ms: u64,
    /// Counter within `ms`.
    pub logical: u32,
}

/// One write to the table: a set (`value` present) or a delete (`value` absent, a tombstone).
/// Its id, `(hlc, node, incarnation)`, is unique and orders every write of a key. It carries
/// its writer's public key (`node` must be its hash) and signature over the other fields
/// ([`TableWrite::signed_bytes`]), so every receiver can check who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableWrite {
    /// When it was written.
    pub hlc: Hlc,
    /// Who wrote it.
    pub node: NodeId,
    /// The writer's incarnation (keeps ids unique across the writer's restarts).
    pub incarnation: u64,
    /// The key, 1 to [`TABLE_KEY_BYTES_MAX`] bytes.
    pub key: Vec<u8>,
    /// The new value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The lease the writer takes: it alone may write the key until this Unix ms (exclusive).
    /// Must be above `hlc.ms`; a delete carries none.
    pub lease_until_ms: Option<u64>,
    /// The writer's public key: `node` is its BLAKE3 hash.
    pub public_key: PublicKey,
    /// The writer's ed25519 signature over [`TableWrite::signed_bytes`].
    pub signature: Signature,
}

impl TableWrite {
    /// The write's id: the order in which a key's writes are judged.
    pub fn id(&self) -> (Hlc, NodeId, u64) {
        (self.hlc, self.node, self.incarnation)
    }

    /// A key's 16-bit hash: the first two bytes of BLAKE3(key), big-endian. Its top `bits`
    /// bits name the key's bucket in a digest of `bits` bits.
    pub fn key_hash(key: &[u8]) -> u16 {
        let h = blake3::hash(key);
        u16::from_be_bytes([h.as_bytes()[0], h.as_bytes()[1]])
    }

    /// The bucket of a key hash in a digest of `bits` bits (0 to [`TABLE_BUCKET_BITS_MAX`]).
    pub fn bucket_of(key_hash: u16, bits: u8) -> u16 {
        match bits {
            0 => 0,
            b => key_hash >> (16 - u32::from(b.min(TABLE_BUCKET_BITS_MAX))),
        }
    }

    /// The write's fingerprint under `salt` (SPEC.md §19.7): the first 8 bytes of
    /// BLAKE3("weft table write fp v1\0" ‖ salt ‖ hlc.ms ‖ hlc.logical ‖ node ‖
    /// incarnation), integers little-endian. A TABLE_WANT lists the fingerprints of the writes
    /// its sender holds; a fresh salt per TABLE_WANT keeps a collision from recurring.
    pub fn fingerprint(&self, salt: u64) -> [u8; 8] {
        let mut h = blake3::Hasher::new();
        h.update(b"weft table write fp v1\0");
        h.update(&salt.to_le_bytes());
        h.update(&self.hlc.ms.to_le_bytes());
        h.update(&self.hlc.logical.to_le_bytes());
        h.update(&self.node.0);
        h.update(&self.incarnation.to_le_bytes());
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&h.finalize().as_bytes()[..8]);
        fp
    }

    /// What the writer signs (SPEC.md §19.9): [`TABLE_WRITE_DOMAIN`] ‖ network ‖ hlc.ms ‖
    /// hlc.logical ‖ node ‖ incarnation ‖ key length ‖ key ‖ value (0, or 1 ‖ length ‖
    /// bytes) ‖ lease (0, or 1 ‖ lease_until_ms); integers little-endian, lengths u64.
    pub fn signed_bytes(&self, network: &NetworkId) -> Vec<u8> {
        let value_len = self.value.as_ref().map_or(0, |v| 8 + v.len());
        let mut out = Vec::with_capacity(
            TABLE_WRITE_DOMAIN.len() + 32 + 12 + 32 + 8 + 8 + self.key.len() + 1 + value_len + 9,
        );
        out.extend_from_slice(TABLE_WRITE_DOMAIN);
        out.extend_from_slice(&network.0);
        out.extend_from_slice(&self.hlc.ms.to_le_bytes());
        out.extend_from_slice(&self.hlc.logical.to_le_bytes());
        out.extend_from_slice(&self.node.0);
        out.extend_from_slice(&self.incarnation.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.key);
        match &self.value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        match self.lease_until_ms {
            None => out.push(0),
            Some(until) => {
                out.push(1);
                out.extend_from_slice(&until.to_le_bytes());
            }
        }
        out
    }

    /// The length of the write's postcard encoding, without encoding it.
    pub fn encoded_len(&self) -> usize {
        let bytes = |len: usize| varint_len(len as u64) + len;
        varint_len(self.hlc.ms)
            + varint_len(u64::from(self.hlc.logical))
            + 32
            + varint_len(self.incarnation)
            + bytes(self.key.len())
            + 1
            + self.value.as_ref().map_or(0, |v| bytes(v.len()))
            + 1
            + self.lease_until_ms.map_or(0, varint_len)
            + 32
            + 64
    }

    /// Whether the fields keep the rules beyond postcard's (the signature is the engine's to
    /// check).
    pub fn is_valid(&self) -> bool {
        self.node == NodeId::from_public_key(&self.public_key)
            && !self.key.is_empty()
            && self.key.len() <= TABLE_KEY_BYTES_MAX
            && self
                .value
                .as_ref()
                .is_none_or(|v| v.len() <= TABLE_VALUE_BYTES_MAX)
            && match self.lease_until_ms {
                None => true,
                Some(until) => self.value.is_some() && until > self.hlc.ms,
            }
    }
}

/// The hash of one non-empty bucket of the sender's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BucketHash {
    /// The bucket, below [`TABLE_BUCKETS`].
    pub bucket: u16,
    /// The first 8 bytes of the bucket's hash (SPEC.md §19.6).
    pub hash: [u8; 8],
}

/// Anti-entropy: the hash of every non-empty bucket, ascending by bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDigest {
    /// Bits of the key hash naming a bucket: the key space is cut into `2^bits` buckets.
    pub bits: u8,
    /// The buckets, ascending, each once, each below `2^bits`.
    pub buckets: Vec<BucketHash>,
}

/// Anti-entropy: the buckets whose entries the sender asks for, ascending, and the writes of
/// those buckets it already holds (so only the others come back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableWant {
    /// The digest's bits the buckets refer to.
    pub bits: u8,
    /// The buckets, ascending, each once, each below `2^bits`.
    pub buckets: Vec<u16>,
    /// The salt of the fingerprints in `held`.
    pub salt: u64,
    /// Fingerprints ([`TableWrite::fingerprint`]) of writes the sender holds in those buckets,
    /// at most [`TABLE_WANT_HELD_MAX`], in any order; it may list fewer than it holds.
    pub held: Vec<[u8; 8]>,
}

/// Anti-entropy: held writes, sent in answer to TABLE_WANT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntries {
    /// At most [`TABLE_OPS_PER_MESSAGE_MAX`] writes.
    pub writes: Vec<TableWrite>,
}

/// Bytes of a postcard varint.
pub fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7)
}

/// Whether `bits` is at most [`TABLE_BUCKET_BITS_MAX`] and the bucket numbers are ascending,
/// unique and below `2^bits`.
pub(crate) fn buckets_ok(bits: u8, buckets: impl Iterator<Item = u16>) -> bool {
    if bits > TABLE_BUCKET_BITS_MAX {
        return false;
    }
    let count = 1u16 << bits;
    let mut last: Option<u16> = None;
    for b in buckets {
        if b >= count || last.is_some_and(|l| l >= b) {
            return false;
        }
        last = Some(b);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_order_rule() {
        assert!(buckets_ok(8, [0, 1, 255].into_iter()));
        assert!(buckets_ok(0, [0].into_iter()));
        assert!(buckets_ok(3, [].into_iter()));
        assert!(!buckets_ok(8, [3, 3].into_iter()));
        assert!(!buckets_ok(8, [4, 3].into_iter()));
        assert!(!buckets_ok(8, [256].into_iter()));
        assert!(!buckets_ok(2, [4].into_iter()));
        assert!(!buckets_ok(9, [].into_iter()));
    }

    #[test]
    fn encoded_len_is_the_postcard_length() {
        for (value, lease, ms) in [
            (None, None, 0),
            (Some(vec![7; 200]), Some(u64::MAX), 1_800_000_000_000),
            (Some(vec![]), Some(128), 127),
        ] {
            let w = TableWrite {
                hlc: Hlc { ms, logical: 300 },
                node: NodeId([1; 32]),
                incarnation: 1 << 40,
                key: vec![b'k'; 130],
                value,
                lease_until_ms: lease,
                public_key: PublicKey([2; 32]),
                signature: Signature([3; 64]),
            };
            let encoded = postcard::to_allocvec(&w).expect("encodes");
            assert_eq!(w.encoded_len(), encoded.len());
        }
        assert_eq!((varint_len(0), varint_len(127), varint_len(128)), (1, 1, 2));
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn buckets_spread_keys() {
        let mut seen = [false; TABLE_BUCKETS as usize];
        for i in 0..4096u32 {
            let h = TableWrite::key_hash(&i.to_le_bytes());
            seen[TableWrite::bucket_of(h, 8) as usize] = true;
            assert_eq!(TableWrite::bucket_of(h, 1), h >> 15);
            assert_eq!(TableWrite::bucket_of(h, 0), 0);
        }
        assert!(seen.iter().all(|s| *s));
    }
}
