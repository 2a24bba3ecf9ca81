//! A table write's signature (SPEC.md §19.9): its writer signs it, and every receiver verifies
//! it before holding it, so no node can write in another's name.

use weft_protocol::{NetworkId, NodeId, TableWrite};

use crate::identity::{verify_signature, Identity};

/// This node's key pair and network: signs its writes and verifies everyone's.
#[derive(Debug, Clone)]
pub(crate) struct Signer {
    identity: Identity,
    network: NetworkId,
}

impl Signer {
    pub(crate) fn new(identity: Identity, network: NetworkId) -> Signer {
        Signer { identity, network }
    }

    /// This node's id: the writer of every write it signs.
    pub(crate) fn node(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Fills in `write`'s public key and signature (its `node` must be this node's).
    pub(crate) fn sign(&self, write: &mut TableWrite) {
        write.public_key = self.identity.public_key();
        write.signature = self.identity.sign(&write.signed_bytes(&self.network));
    }

    /// Whether `write` keeps the wire rules, names the writer of its public key, and carries
    /// that writer's signature for this network.
    pub(crate) fn verify(&self, write: &TableWrite) -> bool {
        write.is_valid()
            && verify_signature(
                &write.public_key,
                &write.signed_bytes(&self.network),
                &write.signature,
            )
    }
}

#[cfg(test)]
mod tests {
    use weft_protocol::{Hlc, PublicKey, Signature};

    use super::*;

    fn signer(seed: u8, network: &str) -> Signer {
        Signer::new(
            Identity::from_secret(&[seed; 32]),
            NetworkId::from_name(network),
        )
    }

    #[test]
    fn a_signed_write_verifies_and_any_change_breaks_it() {
        let a = signer(1, "t");
        let mut w = TableWrite {
            hlc: Hlc { ms: 10, logical: 1 },
            node: a.node(),
            incarnation: 1,
            key: b"k".to_vec(),
            value: Some(b"v".to_vec()),
            lease_until_ms: Some(20),
            public_key: PublicKey::default(),
            signature: Signature::default(),
        };
        assert!(!a.verify(&w), "unsigned");
        a.sign(&mut w);
        assert!(a.verify(&w));
        assert!(
            signer(2, "t").verify(&w),
            "anyone on the network verifies it"
        );
        assert!(!signer(1, "other").verify(&w), "another network's write");
        let changed: [fn(&mut TableWrite); 7] = [
            |w| w.hlc.ms += 1,
            |w| w.hlc.logical += 1,
            |w| w.incarnation += 1,
            |w| w.key.push(0),
            |w| w.value = None,
            |w| w.lease_until_ms = None,
            |w| w.signature.0[0] ^= 1,
        ];
        for change in changed {
            let mut x = w.clone();
            change(&mut x);
            assert!(!a.verify(&x), "{x:?}");
        }
        // Another key pair's signature over a write naming a: the key does not hash to a.
        let b = signer(2, "t");
        let mut x = w.clone();
        b.sign(&mut x);
        assert!(!a.verify(&x), "b's key in a's name");
        x.node = b.node();
        assert!(!a.verify(&x), "b's signature was over a's name");
        b.sign(&mut x);
        assert!(a.verify(&x), "b's own write");
    }
}
