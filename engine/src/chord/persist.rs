//! The records a node holds as the host stores them (SPEC.md §20.8): one blob, named
//! [`STATE_NAME`]: a magic line, the postcard encoding of every held entry with its expiry as
//! Unix ms (an `Instant` starts again from zero at every restart), and the BLAKE3 hash of both.
//! A blob that fails its hash or does not decode is ignored (the records come back from the
//! ring's repairs, if at all); entries whose expiry has passed are dropped at load.

use bytes::Bytes;
use weft_protocol::ChordValue;

use crate::state_blob;

/// The host's name for the blob.
pub(crate) const STATE_NAME: &str = "chord";

/// The blob's first bytes (format version 1).
const MAGIC: &[u8] = b"weft chord v1\n";

/// One held entry as stored: the record's ring position and key, the signed entry (its
/// `lifetime_ms` unset: the expiry says it), and when it expires, Unix ms (`None`: it lives
/// until deleted).
pub(crate) type StoredEntry = (u64, Vec<u8>, ChordValue, Option<u64>);

/// `entries` as a blob.
pub(crate) fn encode(entries: &[StoredEntry]) -> Bytes {
    state_blob::seal(MAGIC, entries)
}

/// The entries in a blob, or `None` if it is not a whole, intact version-1 blob.
pub(crate) fn decode(blob: &[u8]) -> Option<Vec<StoredEntry>> {
    state_blob::open(blob, MAGIC)
}
