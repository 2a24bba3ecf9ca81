//! The sync table's messages (family 0x02, SPEC.md §19): a flooded write, and the
//! anti-entropy exchange (bucket digests, wanted buckets, the entries of those buckets).

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;

/// Longest key a table write may carry, in bytes (nodes may set a lower limit of their own).
pub const MAX_TABLE_KEY_LEN: usize = 1024;

/// Longest value a table write may carry, in bytes.
pub const MAX_TABLE_VALUE_LEN: usize = 1024 * 1024;

/// Hash buckets the key space is cut into for anti-entropy digests.
pub const TABLE_BUCKETS: u16 = 256;

/// Most writes one TABLE_ENTRIES may carry.
pub const MAX_TABLE_OPS_PER_MESSAGE: usize = 1024;

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
/// Its id, `(hlc, node, incarnation)`, is unique and orders every write of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableWrite {
    /// When it was written.
    pub hlc: Hlc,
    /// Who wrote it.
    pub node: NodeId,
    /// The writer's incarnation (keeps ids unique across the writer's restarts).
    pub incarnation: u64,
    /// The key, 1 to [`MAX_TABLE_KEY_LEN`] bytes.
    pub key: Vec<u8>,
    /// The new value, or `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The lease the writer takes: it alone may write the key until this Unix ms (exclusive).
    /// Must be above `hlc.ms`; a delete carries none.
    pub lease_until_ms: Option<u64>,
}

impl TableWrite {
    /// The write's id: the order in which a key's writes are judged.
    pub fn id(&self) -> (Hlc, NodeId, u64) {
        (self.hlc, self.node, self.incarnation)
    }

    /// The anti-entropy bucket of a key: the first two bytes of BLAKE3(key), modulo
    /// [`TABLE_BUCKETS`].
    pub fn bucket_of(key: &[u8]) -> u16 {
        let h = blake3::hash(key);
        u16::from_be_bytes([h.as_bytes()[0], h.as_bytes()[1]]) % TABLE_BUCKETS
    }

    /// Whether the fields keep the rules beyond postcard's.
    pub(crate) fn is_valid(&self) -> bool {
        !self.key.is_empty()
            && self.key.len() <= MAX_TABLE_KEY_LEN
            && self
                .value
                .as_ref()
                .is_none_or(|v| v.len() <= MAX_TABLE_VALUE_LEN)
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
    /// The buckets, ascending, each once.
    pub buckets: Vec<BucketHash>,
}

/// Anti-entropy: the buckets whose entries the sender asks for, ascending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableWant {
    /// The buckets, ascending, each once, each below [`TABLE_BUCKETS`].
    pub buckets: Vec<u16>,
}

/// Anti-entropy: held writes, sent in answer to TABLE_WANT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntries {
    /// At most [`MAX_TABLE_OPS_PER_MESSAGE`] writes.
    pub writes: Vec<TableWrite>,
}

/// Whether bucket numbers are ascending, unique and in range.
pub(crate) fn buckets_ok(buckets: impl Iterator<Item = u16>) -> bool {
    let mut last: Option<u16> = None;
    for b in buckets {
        if b >= TABLE_BUCKETS || last.is_some_and(|l| l >= b) {
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
        assert!(buckets_ok([0, 1, 255].into_iter()));
        assert!(buckets_ok([].into_iter()));
        assert!(!buckets_ok([3, 3].into_iter()));
        assert!(!buckets_ok([4, 3].into_iter()));
        assert!(!buckets_ok([256].into_iter()));
    }

    #[test]
    fn buckets_spread_keys() {
        let mut seen = [false; TABLE_BUCKETS as usize];
        for i in 0..4096u32 {
            seen[TableWrite::bucket_of(&i.to_le_bytes()) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
