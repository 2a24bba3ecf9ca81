//! Broadcast origin proofs (SPEC.md §6.9, §11.8): the origin signs, every receiver verifies
//! once, on first reception.

use weft_protocol::{Broadcast, NetworkId, NodeId, OriginProof};

use crate::identity::{verify_signature, Identity};

/// The scratch buffer is dropped after a message longer than this, so one large broadcast does
/// not keep its copy alive.
const SCRATCH_BYTES_KEPT_MAX: usize = 64 * 1024;

/// Signs and verifies origin proofs for one network, reusing one buffer for the signed bytes
/// (verifying allocates nothing after warm-up).
#[derive(Debug)]
pub(crate) struct OriginProofs {
    network: NetworkId,
    scratch: Vec<u8>,
}

impl OriginProofs {
    pub(crate) fn new(network: NetworkId) -> OriginProofs {
        OriginProofs {
            network,
            scratch: Vec::new(),
        }
    }

    /// `identity`'s proof for `b` (whose `origin` is `identity`'s node id).
    pub(crate) fn sign(&mut self, identity: &Identity, b: &Broadcast<'_>) -> OriginProof {
        b.signed_message(&self.network, &mut self.scratch);
        let signature = identity.sign(&self.scratch);
        self.trim();
        OriginProof {
            public_key: identity.public_key(),
            signature,
        }
    }

    /// Whether `b` carries a valid proof: a key whose hash is `origin` and its signature.
    pub(crate) fn verify(&mut self, b: &Broadcast<'_>) -> bool {
        let Some(proof) = b.proof else {
            return false;
        };
        if NodeId::from_public_key(&proof.public_key) != b.origin {
            return false;
        }
        b.signed_message(&self.network, &mut self.scratch);
        let valid = verify_signature(&proof.public_key, &self.scratch, &proof.signature);
        self.trim();
        valid
    }

    fn trim(&mut self) {
        if self.scratch.capacity() > SCRATCH_BYTES_KEPT_MAX {
            self.scratch = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broadcast(origin: NodeId, payload: &[u8]) -> Broadcast<'_> {
        Broadcast {
            origin,
            incarnation: 3,
            seq: 7,
            payload,
            proof: None,
        }
    }

    #[test]
    fn a_proof_verifies_only_for_its_origin_fields_and_network() {
        let a = Identity::from_secret(&[1; 32]);
        let b = Identity::from_secret(&[2; 32]);
        let mut proofs = OriginProofs::new(NetworkId::from_name("n"));
        let mut signed = broadcast(a.node_id(), b"x");
        signed.proof = Some(proofs.sign(&a, &signed));
        assert!(proofs.verify(&signed));
        assert!(!proofs.verify(&broadcast(a.node_id(), b"x")), "no proof");

        let mut other = signed.clone();
        other.seq = 8;
        assert!(!proofs.verify(&other), "another seq");
        let mut other = signed.clone();
        other.payload = b"y";
        assert!(!proofs.verify(&other), "another payload");
        let mut other = signed.clone();
        other.origin = b.node_id();
        assert!(!proofs.verify(&other), "another origin with a's key");
        // b's own valid signature over a broadcast naming a as its origin.
        let mut forged = broadcast(a.node_id(), b"x");
        let mut by_b = broadcast(a.node_id(), b"x");
        by_b.origin = a.node_id();
        forged.proof = Some(proofs.sign(&b, &by_b));
        assert!(!proofs.verify(&forged), "key does not hash to the origin");
        let mut elsewhere = OriginProofs::new(NetworkId::from_name("m"));
        assert!(!elsewhere.verify(&signed), "another network");
    }

    #[test]
    fn a_large_message_does_not_keep_its_scratch_copy() {
        let a = Identity::from_secret(&[1; 32]);
        let mut proofs = OriginProofs::new(NetworkId::from_name("n"));
        let big = vec![0; 1 << 20];
        let mut signed = broadcast(a.node_id(), &big);
        signed.proof = Some(proofs.sign(&a, &signed));
        assert!(proofs.verify(&signed));
        assert_eq!(proofs.scratch.capacity(), 0);
    }
}
