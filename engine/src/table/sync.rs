//! Anti-entropy for the table (SPEC.md §19.7): a digest of bucket hashes, the buckets that
//! differ with the fingerprints of the writes held in them, then the writes of those buckets
//! the asker does not hold.

use std::collections::BTreeMap;
use std::ops::Bound;

use weft_protocol::{
    varint_len, BucketHash, TableDigest, TableEntries, TableWant, TableWrite, HEADER_BYTES,
    TABLE_BUCKET_BITS_MAX, TABLE_OPS_PER_MESSAGE_MAX, TABLE_WANT_HELD_MAX,
};

use super::Table;
use crate::sending::BULK_FRAME_BYTES_MAX;

/// A TABLE_ENTRIES message takes no write that would bring its writes past this many bytes,
/// so the frame fits a bulk frame (header and count included); a single longer write travels
/// alone.
const ENTRIES_BYTES_TARGET: usize = BULK_FRAME_BYTES_MAX - 16;

/// Whether a TABLE_ENTRIES holding `count` writes of `bytes` is closed before a write of
/// `len` bytes.
fn closes(count: usize, bytes: usize, len: usize) -> bool {
    count > 0 && (count == TABLE_OPS_PER_MESSAGE_MAX || bytes + len > ENTRIES_BYTES_TARGET)
}

/// A TABLE_WANT's reply, sent one TABLE_ENTRIES at a time as the peer has room: the want and
/// where the next message starts. Keys written or dropped between messages are met as they
/// are then; a write missed that way is caught by the next digest.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The want, its `held` fingerprints sorted.
    want: TableWant,
    /// The key the next message starts at, and how many of its writes to pass over.
    next: Option<(Vec<u8>, usize)>,
}

impl Reply {
    pub(crate) fn new(mut want: TableWant) -> Reply {
        want.held.sort_unstable();
        Reply {
            want,
            next: Some((Vec::new(), 0)),
        }
    }
}

/// A digest cuts the key space into the fewest buckets (up to 2^8) that hold at most this
/// many keys each on average.
const KEYS_PER_BUCKET: usize = 16;

impl Table {
    /// The digest this node sends: as many bits as its key count calls for.
    pub(crate) fn digest(&self) -> TableDigest {
        let mut bits = 0;
        while bits < TABLE_BUCKET_BITS_MAX && self.keys.len() >> bits > KEYS_PER_BUCKET {
            bits += 1;
        }
        self.digest_at(bits)
    }

    /// The hash of every non-empty bucket of `bits` bits, ascending.
    pub(crate) fn digest_at(&self, bits: u8) -> TableDigest {
        let mut hashers: BTreeMap<u16, blake3::Hasher> = BTreeMap::new();
        for (key, state) in &self.keys {
            let bucket = TableWrite::bucket_of(state.key_hash, bits);
            let h = hashers.entry(bucket).or_insert_with(|| {
                let mut h = blake3::Hasher::new();
                h.update(b"weft table bucket v1\0");
                h
            });
            state.digest_into(key, h);
        }
        let buckets = hashers
            .into_iter()
            .map(|(bucket, h)| {
                let mut hash = [0u8; 8];
                hash.copy_from_slice(&h.finalize().as_bytes()[..8]);
                BucketHash { bucket, hash }
            })
            .collect();
        TableDigest { bits, buckets }
    }

    /// Whether no key is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// What to ask of a peer's digest: the buckets whose hash differs from ours (or that we
    /// lack), with the fingerprints under `salt` of the writes we hold in them (at most
    /// [`TABLE_WANT_HELD_MAX`]: past it, the peer sends some writes we hold). `None` if no
    /// bucket differs.
    pub(crate) fn want(&self, theirs: &TableDigest, salt: u64) -> Option<TableWant> {
        let ours = self.digest_at(theirs.bits);
        let buckets: Vec<u16> = theirs
            .buckets
            .iter()
            .filter(|t| {
                ours.buckets
                    .binary_search_by_key(&t.bucket, |b| b.bucket)
                    .map_or(true, |i| ours.buckets[i].hash != t.hash)
            })
            .map(|t| t.bucket)
            .collect();
        if buckets.is_empty() {
            return None;
        }
        let held = self
            .writes_in(theirs.bits, &buckets)
            .take(TABLE_WANT_HELD_MAX)
            .map(|w| w.fingerprint(salt))
            .collect();
        Some(TableWant {
            bits: theirs.bits,
            buckets,
            salt,
            held,
        })
    }

    /// Every held write (base included) of the keys in `buckets` (of `bits` bits).
    fn writes_in<'a>(
        &'a self,
        bits: u8,
        buckets: &'a [u16],
    ) -> impl Iterator<Item = &'a TableWrite> + 'a {
        self.keys
            .values()
            .filter(move |k| {
                let bucket = TableWrite::bucket_of(k.key_hash, bits);
                buckets.binary_search(&bucket).is_ok()
            })
            .flat_map(|k| k.writes().map(|(w, _)| w))
    }

    /// The next message of `reply`: held writes of the wanted buckets that the asker does not
    /// list as held, in key order. `None` once the reply is done.
    pub(crate) fn next_entries(&self, reply: &mut Reply) -> Option<TableEntries> {
        let (start, skip) = reply.next.take()?;
        let want = &reply.want;
        let mut writes: Vec<TableWrite> = Vec::new();
        let mut bytes = 0;
        let from = (Bound::Included(start.as_slice()), Bound::Unbounded);
        for (key, state) in self.keys.range::<[u8], _>(from) {
            let bucket = TableWrite::bucket_of(state.key_hash, want.bits);
            if want.buckets.binary_search(&bucket).is_err() {
                continue;
            }
            let passed = if *key == start { skip } else { 0 };
            for (i, (w, _)) in state.writes().enumerate().skip(passed) {
                if want.held.binary_search(&w.fingerprint(want.salt)).is_ok() {
                    continue;
                }
                let len = w.encoded_len();
                if closes(writes.len(), bytes, len) {
                    reply.next = Some((key.clone(), i));
                    return Some(TableEntries { writes });
                }
                bytes += len;
                writes.push(w.clone());
            }
        }
        (!writes.is_empty()).then_some(TableEntries { writes })
    }

    /// Bytes on the wire of a full resend: every key's current write, as TABLE_ENTRIES
    /// frames (the baseline catch-up is measured against).
    pub(crate) fn full_resend_bytes(&self) -> u64 {
        let current = self.keys.values().filter_map(|k| k.current());
        chunks(current)
            .iter()
            .map(|c| {
                let body: usize = c.iter().map(|w| w.encoded_len()).sum();
                (HEADER_BYTES + varint_len(c.len() as u64) + body) as u64
            })
            .sum()
    }
}

/// Cuts writes into TABLE_ENTRIES-sized runs, as replies are cut ([`closes`]).
fn chunks<'a>(writes: impl Iterator<Item = &'a TableWrite>) -> Vec<Vec<&'a TableWrite>> {
    let mut out: Vec<Vec<&TableWrite>> = Vec::new();
    let mut bytes = 0;
    let mut current: Vec<&TableWrite> = Vec::new();
    for w in writes {
        let len = w.encoded_len();
        if closes(current.len(), bytes, len) {
            out.push(core::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.push(w);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {

    use super::super::test_table as table;
    use super::*;

    #[test]
    fn digests_name_exactly_the_differing_buckets() {
        let mut a = table(1);
        let mut b = table(2);
        for i in 0..50u32 {
            let key = format!("key{i}").into_bytes();
            let w = a
                .write(Some(1000), key, Some(vec![1]), None)
                .expect("valid")
                .expect("no lease");
            b.receive(w, None);
        }
        assert_eq!(a.digest(), b.digest());
        assert!(a.want(&b.digest(), 9).is_none());
        let w = b
            .write(Some(2000), b"key7".to_vec(), Some(vec![2]), None)
            .expect("valid")
            .expect("no lease");
        let want = a.want(&b.digest(), 9).expect("one bucket differs");
        let d = b.digest();
        assert_eq!(d.bits, 2, "50 keys: 4 buckets of about 12");
        let bucket = TableWrite::bucket_of(TableWrite::key_hash(b"key7"), 2);
        assert_eq!(want.buckets, vec![bucket]);
        assert!(want.held.len() >= 5, "a holds the bucket's other writes");
        let mut reply = Reply::new(want);
        let entries: Vec<TableEntries> =
            std::iter::from_fn(|| b.next_entries(&mut reply)).collect();
        let got: Vec<&TableWrite> = entries.iter().flat_map(|e| &e.writes).collect();
        assert_eq!(got, vec![&w], "only the write a lacks comes back");
        for e in entries {
            for w in e.writes {
                a.receive(w, None);
            }
        }
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.get(b"key7"), Some(&[2][..]));
        assert!(a.full_resend_bytes() > 50 * 40);
    }

    #[test]
    fn a_reply_comes_in_bulk_sized_messages_that_together_hold_every_wanted_write() {
        let mut limits = crate::table::tests::limits();
        limits.value_bytes_max = 40_000;
        limits.entries_max = 1000;
        limits.bytes_max = 1 << 30;
        let mut b = Table::new(crate::table::test_signer(2), 1, limits);
        let a = Table::new(crate::table::test_signer(1), 1, limits);
        for i in 0..60u32 {
            let key = format!("k{i:02}").into_bytes();
            let len = 1000 + (i as usize * 997) % 39_000;
            b.write(
                Some(1000 + u64::from(i)),
                key,
                Some(vec![i as u8; len]),
                None,
            )
            .unwrap();
        }
        let want = a.want(&b.digest_at(0), 3).expect("everything differs");
        let mut reply = Reply::new(want);
        let mut sent = 0;
        while let Some(e) = b.next_entries(&mut reply) {
            let bytes: usize = e.writes.iter().map(TableWrite::encoded_len).sum();
            assert!(
                bytes <= ENTRIES_BYTES_TARGET,
                "{bytes} bytes in one message"
            );
            assert!(!e.writes.is_empty());
            sent += e.writes.len();
        }
        assert_eq!(sent, b.writes_len(), "every write, once");
        assert!(b.next_entries(&mut reply).is_none(), "done stays done");
    }
}
