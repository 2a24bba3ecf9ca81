//! The records a node holds as the host stores them (SPEC.md §20.8): one blob, named
//! [`STATE_NAME`]: a magic line, the postcard encoding of every held entry with its expiry as
//! Unix ms (an `Instant` starts again from zero at every restart), and the BLAKE3 hash of both.
//! A blob that fails its hash or does not decode is ignored (the records come back from the
//! ring's repairs, if at all); entries whose expiry has passed are dropped at load.

use bytes::Bytes;
use weft_protocol::ChordValue;

/// The host's name for the blob.
pub(crate) const STATE_NAME: &str = "chord";

/// The blob's first bytes (format version 1).
const MAGIC: &[u8] = b"weft chord v1\n";

/// Bytes of the hash at the end.
const HASH_BYTES: usize = 32;

/// One held entry as stored: the record's ring position and key, the signed entry (its
/// `lifetime_ms` unset: the expiry says it), and when it expires, Unix ms (`None`: it lives
/// until deleted).
pub(crate) type StoredEntry = (u64, Vec<u8>, ChordValue, Option<u64>);

/// `entries` as a blob.
pub(crate) fn encode(entries: &[StoredEntry]) -> Bytes {
    let mut blob = MAGIC.to_vec();
    // Serializing entries into a Vec cannot fail: no maps, every sequence sized.
    blob.extend(postcard::to_allocvec(entries).unwrap_or_default());
    let hash = blake3::hash(&blob);
    blob.extend_from_slice(hash.as_bytes());
    Bytes::from(blob)
}

/// The entries in a blob, or `None` if it is not a whole, intact version-1 blob.
pub(crate) fn decode(blob: &[u8]) -> Option<Vec<StoredEntry>> {
    let (body, hash) = blob.split_at_checked(blob.len().checked_sub(HASH_BYTES)?)?;
    if blake3::hash(body).as_bytes() != hash {
        return None;
    }
    let encoded = body.strip_prefix(MAGIC)?;
    match postcard::take_from_bytes::<Vec<StoredEntry>>(encoded) {
        Ok((entries, [])) => Some(entries),
        _ => None,
    }
}
