//! The drops tracker's admission rules (SPEC.md §20.9): what a replica checks before it keeps
//! an entry under a tracker key, and the rule the store then keeps it by.

use weft_protocol::{ChordValue, HolderRecord, NodeId, StoreOp, TrackerKey, HOLDER_LIFETIME_MAX};

/// How the store keeps an admitted entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyRule {
    /// The rules of §20.1: one slot per writer and value, at most `values_per_key_max`.
    Plain,
    /// A holders key: one slot per writer, at most `tracker_holders_max`, expired entries
    /// dropped before counting, tombstones kept at most [`HOLDER_LIFETIME_MAX`].
    Holders {
        /// For a put, the ms its holder record has left: the entry lives no longer.
        record_left_ms: Option<u64>,
    },
}

impl KeyRule {
    /// Whether this is a holders key's rule.
    pub(super) fn is_holders(self) -> bool {
        matches!(self, KeyRule::Holders { .. })
    }
}

/// The rule `e`, whose Chord signature is verified, is kept by under `key`, or `None` if the
/// tracker refuses it. `wall_ms` is the calendar time now (Unix ms), if known: a holder record
/// is refused without one, since its expiry cannot be checked.
///
/// - A holders key (prefix ‖ drop): a put must be a [`HolderRecord`] for that drop whose
///   holder is the writer's node id and whose signature is the writer's, expiring after
///   `wall_ms` and at most [`HOLDER_LIFETIME_MAX`] after it. A tombstone is accepted (it
///   touches only its writer's entries).
/// - A node-key key (prefix ‖ N): the writer's node id must be N, and a put's value the
///   writer's 32-byte key.
/// - A tracker prefix followed by anything but 32 bytes is refused.
pub(super) fn admit(key: &[u8], e: &ChordValue, wall_ms: Option<u64>) -> Option<KeyRule> {
    match TrackerKey::of(key) {
        TrackerKey::Other => Some(KeyRule::Plain),
        TrackerKey::Malformed => None,
        TrackerKey::NodeKey(node) => {
            let value_ok = match &e.op {
                StoreOp::Put(v) => v[..] == e.writer.0[..],
                StoreOp::Delete(_) => true,
            };
            (NodeId::from_public_key(&e.writer) == node && value_ok).then_some(KeyRule::Plain)
        }
        TrackerKey::Holders(drop) => match &e.op {
            StoreOp::Delete(_) => Some(KeyRule::Holders {
                record_left_ms: None,
            }),
            StoreOp::Put(v) => {
                let wall_ms = wall_ms?;
                let record = HolderRecord::decode(v)?;
                let left_ms = record
                    .expires_unix_ms
                    .checked_sub(wall_ms)
                    .filter(|&ms| ms > 0 && ms <= HOLDER_LIFETIME_MAX.as_millis() as u64)?;
                (record.drop == drop && record.verify(&e.writer)).then_some(KeyRule::Holders {
                    record_left_ms: Some(left_ms),
                })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use weft_protocol::{holders_key, node_key_key, Signature, HOLDER_LIFETIME};

    const WALL_MS: u64 = 1_800_000_000_000;

    fn put(w: &Identity, key: &[u8], value: Vec<u8>) -> ChordValue {
        let op = StoreOp::Put(value);
        let writer = w.public_key();
        let signature = w.sign(&ChordValue::signed_bytes(key, &writer, 1, &op));
        ChordValue {
            writer,
            seq: 1,
            op,
            lifetime_ms: None,
            signature,
        }
    }

    fn record(signer: &Identity, drop: [u8; 32], expires_unix_ms: u64) -> HolderRecord {
        HolderRecord::sign(
            drop,
            &signer.public_key(),
            "127.0.0.1:1".into(),
            expires_unix_ms,
            |m| signer.sign(m),
        )
    }

    #[test]
    fn a_valid_holder_record_is_kept_for_the_time_it_has_left() {
        let a = Identity::from_secret(&[1; 32]);
        let key = holders_key(&[5; 32]);
        let lifetime_ms = HOLDER_LIFETIME.as_millis() as u64;
        let r = record(&a, [5; 32], WALL_MS + lifetime_ms);
        let e = put(&a, &key, r.encode());
        assert_eq!(
            admit(&key, &e, Some(WALL_MS)),
            Some(KeyRule::Holders {
                record_left_ms: Some(lifetime_ms)
            })
        );
        assert_eq!(
            admit(&key, &e, None),
            None,
            "no wall clock, no expiry check"
        );
    }

    #[test]
    fn every_kind_of_invalid_holder_record_is_refused() {
        let a = Identity::from_secret(&[1; 32]);
        let b = Identity::from_secret(&[2; 32]);
        let drop = [5; 32];
        let key = holders_key(&drop);
        let max_ms = HOLDER_LIFETIME_MAX.as_millis() as u64;
        let mut bad_signature = record(&a, drop, WALL_MS + 1000);
        bad_signature.signature = Signature([3; 64]);
        let cases: Vec<(&str, ChordValue)> = vec![
            // b writes a's record: holder ≠ writer.
            (
                "holder is not the writer",
                put(&b, &key, record(&a, drop, WALL_MS + 1000).encode()),
            ),
            ("bad signature", put(&a, &key, bad_signature.encode())),
            (
                "another drop",
                put(&a, &key, record(&a, [6; 32], WALL_MS + 1000).encode()),
            ),
            ("expired", put(&a, &key, record(&a, drop, WALL_MS).encode())),
            (
                "too far",
                put(&a, &key, record(&a, drop, WALL_MS + max_ms + 1).encode()),
            ),
            ("not a record", put(&a, &key, b"hello".to_vec())),
        ];
        for (what, e) in cases {
            assert_eq!(admit(&key, &e, Some(WALL_MS)), None, "{what}");
        }
        let edge = put(&a, &key, record(&a, drop, WALL_MS + max_ms).encode());
        assert!(
            admit(&key, &edge, Some(WALL_MS)).is_some(),
            "the furthest allowed"
        );
    }

    #[test]
    fn a_node_key_record_must_be_its_writers_key_hashing_to_the_node() {
        let a = Identity::from_secret(&[1; 32]);
        let b = Identity::from_secret(&[2; 32]);
        let key = node_key_key(&a.node_id());
        let own = put(&a, &key, a.public_key().0.to_vec());
        assert_eq!(admit(&key, &own, None), Some(KeyRule::Plain));
        for (what, e) in [
            ("another writer", put(&b, &key, b.public_key().0.to_vec())),
            ("another key", put(&a, &key, b.public_key().0.to_vec())),
            ("not a key", put(&a, &key, vec![0; 31])),
        ] {
            assert_eq!(admit(&key, &e, None), None, "{what}");
        }
        let mut malformed = key.clone();
        malformed.pop();
        assert_eq!(admit(&malformed, &put(&a, &malformed, vec![]), None), None);
        assert_eq!(
            admit(b"k", &put(&b, b"k", vec![]), None),
            Some(KeyRule::Plain)
        );
    }
}
