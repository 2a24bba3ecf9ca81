//! The table as the host stores it (SPEC.md §19.11): every held write and the hybrid logical
//! clock's latest stamp, so a node that restarts alone still has its table and never stamps a
//! write below one it stamped or saw before. One blob, named [`STATE_NAME`]: a magic line, the
//! postcard encoding of the clock and the writes, and the BLAKE3 hash of both; a blob that
//! fails its hash or does not decode is ignored (the table starts empty and peers fill it).

use bytes::Bytes;
use weft_protocol::{Hlc, TableWrite};

use super::Table;
use crate::state_blob;

/// The host's name for the blob.
pub(crate) const STATE_NAME: &str = "table";

/// The blob's first bytes (format version 3: the clock, then the signed writes).
const MAGIC: &[u8] = b"weft table v3\n";

/// The first bytes of a version-2 blob (the signed writes alone), still read: its clock is
/// the latest stamp of its writes, which loading them observes.
const MAGIC_V2: &[u8] = b"weft table v2\n";

/// What a blob holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The clock's latest stamp when the blob was made.
    pub(crate) clock: Hlc,
    /// Every held write.
    pub(crate) writes: Vec<TableWrite>,
}

/// Every write `table` holds, as a blob.
pub(crate) fn encode(table: &Table) -> Bytes {
    let writes: Vec<&TableWrite> = table
        .keys()
        .flat_map(|k| table.writes(k).map(|(w, _)| w))
        .collect();
    state_blob::seal(MAGIC, &(table.clock.last(), &writes))
}

/// What a blob holds, or `None` if it is not a whole, intact version-3 (or 2) blob.
pub(crate) fn decode(blob: &[u8]) -> Option<Stored> {
    if let Some((clock, writes)) = state_blob::open::<(Hlc, Vec<TableWrite>)>(blob, MAGIC) {
        return Some(Stored { clock, writes });
    }
    state_blob::open(blob, MAGIC_V2).map(|writes| Stored {
        clock: Hlc::default(),
        writes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::test_table;

    #[test]
    fn a_blob_round_trips_and_a_damaged_one_is_refused() {
        let mut t = test_table(1);
        for (i, k) in [b"a", b"b", b"c"].iter().enumerate() {
            t.write(
                Some(1_000 + i as u64),
                k.to_vec(),
                Some(vec![i as u8]),
                None,
            )
            .unwrap();
        }
        t.write(Some(2_000), b"b".to_vec(), None, None).unwrap();
        let blob = encode(&t);
        let stored = decode(&blob).expect("intact");
        assert_eq!(stored.clock, t.clock.last(), "the clock is kept");
        let writes = stored.writes;
        assert_eq!(writes.len(), t.writes_len());
        let verifier = crate::table::test_signer(2);
        assert!(
            writes.iter().all(|w| verifier.verify(w)),
            "stored writes keep their signatures"
        );
        let mut back = test_table(2);
        for w in writes {
            back.receive(w, None);
        }
        let all = |t: &Table| {
            t.iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect::<Vec<_>>()
        };
        assert_eq!(all(&back), all(&t));
        assert_eq!(back.get(b"b"), None, "the delete came back too");
        for cut in [0, 1, MAGIC.len(), blob.len() - 1] {
            assert_eq!(decode(&blob[..cut]), None, "cut at {cut}");
        }
        let mut flipped = blob.to_vec();
        flipped[MAGIC.len() + 3] ^= 1;
        assert_eq!(decode(&flipped), None, "a flipped bit fails the hash");

        // A version-2 blob (the writes alone) is still read.
        let writes: Vec<&TableWrite> = t.keys().flat_map(|k| t.writes(k).map(|(w, _)| w)).collect();
        let mut v2 = MAGIC_V2.to_vec();
        v2.extend(postcard::to_allocvec(&writes).unwrap());
        let hash = blake3::hash(&v2);
        v2.extend_from_slice(hash.as_bytes());
        let old = decode(&v2).expect("a v2 blob");
        assert_eq!(old.writes.len(), t.writes_len());
    }
}
