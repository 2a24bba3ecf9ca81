//! The drops tracker's records on the Chord ring (SPEC.md §20.9): which nodes hold a drop
//! (one [`HolderRecord`] per holder, signed by the holder, so it verifies on its own wherever
//! it travels), and the public key of a node (so a node id found in a record can be checked).
//!
//! Both are ordinary Chord entries (§20.1) under keys of their own prefix; the ring's replicas
//! check them before they store them (`engine/src/chord/tracker.rs`).

use core::time::Duration;

use ed25519_dalek::{Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{NodeId, PublicKey, Signature, ADDR_BYTES_MAX};

/// Prefix of the Chord key "which nodes hold drop D": the prefix ‖ D (32 bytes).
pub const TRACKER_HOLDERS_PREFIX: &[u8] = b"weft tracker holders v1\0";

/// Prefix of the Chord key "the public key of node N": the prefix ‖ N (32 bytes).
pub const TRACKER_KEY_PREFIX: &[u8] = b"weft tracker key v1\0";

/// Domain separation for a holder record's signature.
pub const HOLDER_RECORD_DOMAIN: &[u8] = b"weft tracker holder v1\0";

/// How long a holder announces itself for, by default: its record's expiry is this far past
/// its wall clock.
pub const HOLDER_LIFETIME: Duration = Duration::from_secs(300);

/// How often a holder announces itself again (half of [`HOLDER_LIFETIME`], so one lost
/// announcement does not let its record expire).
pub const HOLDER_REANNOUNCE: Duration = Duration::from_secs(150);

/// The furthest a holder record's expiry may lie past the storing replica's wall clock; a
/// later one is refused. Also the longest a tombstone under a holders key is kept.
pub const HOLDER_LIFETIME_MAX: Duration = Duration::from_secs(600);

/// The length of a holder record's signed bytes besides its address.
const HOLDER_SIGNED_FIXED_BYTES: usize = HOLDER_RECORD_DOMAIN.len() + 32 + 32 + 4 + 8;

/// The Chord key under which the holders of `drop` announce themselves.
pub fn holders_key(drop: &[u8; 32]) -> Vec<u8> {
    [TRACKER_HOLDERS_PREFIX, drop.as_slice()].concat()
}

/// The Chord key under which `node` publishes its public key.
pub fn node_key_key(node: &NodeId) -> Vec<u8> {
    [TRACKER_KEY_PREFIX, node.0.as_slice()].concat()
}

/// What a Chord key is to the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackerKey {
    /// Not a tracker key: the ordinary rules of §20.1 apply.
    Other,
    /// The holders of this drop.
    Holders([u8; 32]),
    /// The public key of this node.
    NodeKey(NodeId),
    /// A tracker prefix followed by something other than 32 bytes: nothing is stored under it.
    Malformed,
}

impl TrackerKey {
    /// Classifies a Chord key by its prefix.
    pub fn of(key: &[u8]) -> TrackerKey {
        let tail = |prefix: &[u8]| -> Option<Option<[u8; 32]>> {
            let rest = key.strip_prefix(prefix)?;
            Some(<[u8; 32]>::try_from(rest).ok())
        };
        if let Some(rest) = tail(TRACKER_HOLDERS_PREFIX) {
            rest.map_or(TrackerKey::Malformed, TrackerKey::Holders)
        } else if let Some(rest) = tail(TRACKER_KEY_PREFIX) {
            rest.map_or(TrackerKey::Malformed, |n| TrackerKey::NodeKey(NodeId(n)))
        } else {
            TrackerKey::Other
        }
    }
}

/// "Node `holder`, reachable at `addr`, holds drop `drop` until `expires_unix_ms`": the value
/// of a holders key, signed by the holder's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// The drop's id (its owner's 32 bytes).
    pub drop: [u8; 32],
    /// The holder's node id: the BLAKE3 hash of the key that signed the record.
    pub holder: NodeId,
    /// Where the holder listens (at most [`ADDR_BYTES_MAX`] bytes).
    pub addr: String,
    /// When the record stops counting, Unix ms.
    pub expires_unix_ms: u64,
    /// The holder's signature over [`HolderRecord::signed_bytes`].
    pub signature: Signature,
}

impl HolderRecord {
    /// What the holder signs: [`HOLDER_RECORD_DOMAIN`] ‖ drop (32) ‖ holder (32) ‖ addr length
    /// (u32 BE) ‖ addr ‖ expires_unix_ms (u64 BE).
    pub fn signed_bytes(
        drop: &[u8; 32],
        holder: &NodeId,
        addr: &str,
        expires_unix_ms: u64,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(HOLDER_SIGNED_FIXED_BYTES + addr.len());
        out.extend_from_slice(HOLDER_RECORD_DOMAIN);
        out.extend_from_slice(drop);
        out.extend_from_slice(&holder.0);
        // An address longer than u32 cannot be valid (ADDR_BYTES_MAX), and saturating keeps
        // its signed bytes distinct from any valid record's.
        out.extend_from_slice(&u32::try_from(addr.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(addr.as_bytes());
        out.extend_from_slice(&expires_unix_ms.to_be_bytes());
        out
    }

    /// The record of the holder whose public key is `key`, signed by `sign` (the holder's
    /// signing function, e.g. `|m| identity.sign(m)`).
    pub fn sign(
        drop: [u8; 32],
        key: &PublicKey,
        addr: String,
        expires_unix_ms: u64,
        sign: impl FnOnce(&[u8]) -> Signature,
    ) -> HolderRecord {
        let holder = NodeId::from_public_key(key);
        let signature = sign(&Self::signed_bytes(&drop, &holder, &addr, expires_unix_ms));
        HolderRecord {
            drop,
            holder,
            addr,
            expires_unix_ms,
            signature,
        }
    }

    /// Whether `key` is the holder's (its hash is `holder`), the address within
    /// [`ADDR_BYTES_MAX`], and the signature `key`'s over the record. Expiry is not checked:
    /// that needs a wall clock.
    pub fn verify(&self, key: &PublicKey) -> bool {
        if NodeId::from_public_key(key) != self.holder || self.addr.len() > ADDR_BYTES_MAX {
            return false;
        }
        let Ok(key) = VerifyingKey::from_bytes(&key.0) else {
            return false;
        };
        let bytes = Self::signed_bytes(&self.drop, &self.holder, &self.addr, self.expires_unix_ms);
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature.0);
        key.verify(&bytes, &signature).is_ok()
    }

    /// The record's postcard encoding: drop (32 raw bytes) ‖ holder (32 raw bytes) ‖ addr
    /// (varint length ‖ UTF-8) ‖ expires_unix_ms (varint) ‖ signature (64 raw bytes).
    pub fn encode(&self) -> Vec<u8> {
        // Every field is a fixed array, a string or an integer: postcard cannot fail on them.
        postcard::to_allocvec(self).expect("a holder record always encodes")
    }

    /// The record `bytes` encode, if they are exactly one record whose address is within
    /// [`ADDR_BYTES_MAX`].
    pub fn decode(bytes: &[u8]) -> Option<HolderRecord> {
        match postcard::take_from_bytes::<HolderRecord>(bytes) {
            Ok((record, [])) if record.addr.len() <= ADDR_BYTES_MAX => Some(record),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signer(seed: u8) -> (SigningKey, PublicKey) {
        let k = SigningKey::from_bytes(&[seed; 32]);
        let public = PublicKey(k.verifying_key().to_bytes());
        (k, public)
    }

    fn record(k: &SigningKey, public: &PublicKey) -> HolderRecord {
        HolderRecord::sign([7; 32], public, "127.0.0.1:7000".into(), 1_000_000, |m| {
            Signature(k.sign(m).to_bytes())
        })
    }

    #[test]
    fn a_signed_record_verifies_only_under_its_holders_key_and_unchanged() {
        let (k, public) = signer(1);
        let (_, other) = signer(2);
        let r = record(&k, &public);
        assert!(r.verify(&public));
        assert!(!r.verify(&other), "another key is not the holder");
        let decoded = HolderRecord::decode(&r.encode()).expect("round trip");
        assert_eq!(decoded, r);
        for change in 0..4 {
            let mut bad = r.clone();
            match change {
                0 => bad.drop[0] ^= 1,
                1 => bad.addr.push('0'),
                2 => bad.expires_unix_ms += 1,
                _ => bad.signature.0[0] ^= 1,
            }
            assert!(!bad.verify(&public), "change {change}");
        }
    }

    #[test]
    fn signed_bytes_are_laid_out_as_the_spec_says() {
        let holder = NodeId([2; 32]);
        let b = HolderRecord::signed_bytes(&[1; 32], &holder, "ab", 0x0102);
        assert_eq!(b.len(), HOLDER_SIGNED_FIXED_BYTES + 2);
        assert_eq!(&b[..23], HOLDER_RECORD_DOMAIN);
        assert_eq!(&b[23..55], &[1; 32]);
        assert_eq!(&b[55..87], &[2; 32]);
        assert_eq!(&b[87..91], &[0, 0, 0, 2]);
        assert_eq!(&b[91..93], b"ab");
        assert_eq!(&b[93..], &[0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn decode_refuses_trailing_bytes_and_long_addresses() {
        let (k, public) = signer(1);
        let mut r = record(&k, &public);
        let mut bytes = r.encode();
        bytes.push(0);
        assert_eq!(HolderRecord::decode(&bytes), None);
        r.addr = "a".repeat(ADDR_BYTES_MAX + 1);
        assert_eq!(HolderRecord::decode(&r.encode()), None);
        assert_eq!(HolderRecord::decode(&[]), None);
    }

    #[test]
    fn keys_are_classified_by_prefix_and_length() {
        let node = NodeId([9; 32]);
        assert_eq!(
            TrackerKey::of(&holders_key(&[3; 32])),
            TrackerKey::Holders([3; 32])
        );
        assert_eq!(
            TrackerKey::of(&node_key_key(&node)),
            TrackerKey::NodeKey(node)
        );
        let mut long = holders_key(&[3; 32]);
        long.push(0);
        assert_eq!(TrackerKey::of(&long), TrackerKey::Malformed);
        assert_eq!(TrackerKey::of(TRACKER_KEY_PREFIX), TrackerKey::Malformed);
        assert_eq!(TrackerKey::of(b"weft tracker"), TrackerKey::Other);
        assert_eq!(TrackerKey::of(b"key-1"), TrackerKey::Other);
    }
}
