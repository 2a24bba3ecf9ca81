//! Broadcast origin proofs (SPEC.md §6.9, §11.8): the origin signs, every receiver verifies
//! once, on first reception, under ZIP-215's rules (`ed25519-zebra`), whose batch and single
//! verification agree on every signature: the broadcasts of one input are checked in one
//! batch, and only a failed batch is checked one by one.

use ed25519_zebra::batch;
use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes};
use rand_chacha::ChaCha8Rng;
use weft_protocol::{Broadcast, NetworkId, NodeId, OriginProof};

use crate::identity::Identity;

/// The scratch buffer is dropped after a message longer than this, so one large broadcast does
/// not keep its copy alive.
const SCRATCH_BYTES_KEPT_MAX: usize = 64 * 1024;

/// Signs and verifies origin proofs for one network, reusing one buffer for the signed bytes,
/// and holds the batch of proofs queued since the last [`verify_batch`](Self::verify_batch).
pub(crate) struct OriginProofs {
    network: NetworkId,
    scratch: Vec<u8>,
    batch: batch::Verifier,
    queued: usize,
    /// The batch's random coefficients: a stream of the node's secret-seeded RNG, so a peer
    /// cannot predict them, and a replay draws the same ones.
    rng: ChaCha8Rng,
}

impl core::fmt::Debug for OriginProofs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OriginProofs")
            .field("network", &self.network)
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl OriginProofs {
    pub(crate) fn new(network: NetworkId, rng: ChaCha8Rng) -> OriginProofs {
        OriginProofs {
            network,
            scratch: Vec::new(),
            batch: batch::Verifier::new(),
            queued: 0,
            rng,
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

    /// Whether `b` carries a proof that can be valid: one, with a key whose hash is `origin`
    /// (the cheap half of the check; the signature is checked by `verify` or in a batch).
    pub(crate) fn names_its_origin(b: &Broadcast<'_>) -> bool {
        b.proof
            .is_some_and(|p| NodeId::from_public_key(&p.public_key) == b.origin)
    }

    /// Whether `b` carries a valid proof: a key whose hash is `origin` and its signature
    /// (ZIP-215).
    pub(crate) fn verify(&mut self, b: &Broadcast<'_>) -> bool {
        let Some(proof) = b.proof.filter(|_| Self::names_its_origin(b)) else {
            return false;
        };
        b.signed_message(&self.network, &mut self.scratch);
        let valid = VerificationKey::try_from(proof.public_key.0).is_ok_and(|key| {
            key.verify(&Signature::from_bytes(&proof.signature.0), &self.scratch)
                .is_ok()
        });
        self.trim();
        valid
    }

    /// Queues `b`'s proof for the next batch; `b` must name its origin
    /// ([`names_its_origin`](Self::names_its_origin)), else it is not queued.
    pub(crate) fn queue(&mut self, b: &Broadcast<'_>) {
        let Some(proof) = b.proof.filter(|_| Self::names_its_origin(b)) else {
            return;
        };
        b.signed_message(&self.network, &mut self.scratch);
        self.batch.queue((
            VerificationKeyBytes::from(proof.public_key.0),
            Signature::from_bytes(&proof.signature.0),
            &self.scratch[..],
        ));
        self.queued += 1;
        self.trim();
    }

    /// Whether every proof queued since the last call is valid (true for none); empties the
    /// batch. False means at least one is not: check each with `verify`.
    pub(crate) fn verify_batch(&mut self) -> bool {
        if self.queued == 0 {
            return true;
        }
        self.queued = 0;
        let batch = core::mem::replace(&mut self.batch, batch::Verifier::new());
        batch.verify(&mut self.rng).is_ok()
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

    use rand_core::SeedableRng;

    fn proofs_for(network: &str) -> OriginProofs {
        OriginProofs::new(NetworkId::from_name(network), ChaCha8Rng::seed_from_u64(1))
    }

    #[test]
    fn a_proof_verifies_only_for_its_origin_fields_and_network() {
        let a = Identity::from_secret(&[1; 32]);
        let b = Identity::from_secret(&[2; 32]);
        let mut proofs = proofs_for("n");
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
        let mut elsewhere = proofs_for("m");
        assert!(!elsewhere.verify(&signed), "another network");
    }

    #[test]
    fn a_large_message_does_not_keep_its_scratch_copy() {
        let a = Identity::from_secret(&[1; 32]);
        let mut proofs = proofs_for("n");
        let big = vec![0; 1 << 20];
        let mut signed = broadcast(a.node_id(), &big);
        signed.proof = Some(proofs.sign(&a, &signed));
        assert!(proofs.verify(&signed));
        assert_eq!(proofs.scratch.capacity(), 0);
    }

    quickcheck::quickcheck! {
        /// The batch's verdict is exactly "every proof alone is valid", whichever are forged
        /// (a flipped signature bit, a payload changed after signing, another origin's key).
        fn a_batch_agrees_with_single_verification(forged: Vec<(bool, u8)>) -> bool {
            let keys = [Identity::from_secret(&[1; 32]), Identity::from_secret(&[2; 32])];
            let mut batch = proofs_for("n");
            let mut single = proofs_for("n");
            let payloads: Vec<[u8; 1]> = (0..forged.len()).map(|i| [i as u8]).collect();
            let mut alone = true;
            for (i, (forge, how)) in forged.iter().take(24).enumerate() {
                let key = &keys[i % 2];
                let mut b = broadcast(key.node_id(), &payloads[i]);
                b.seq = i as u64 + 1;
                b.proof = Some(batch.sign(key, &b));
                if *forge {
                    match how % 3 {
                        0 => {
                            if let Some(p) = b.proof.as_mut() {
                                p.signature.0[usize::from(*how) % 64] ^= 1 << (how % 8);
                            }
                        }
                        1 => b.payload = b"changed",
                        _ => b.seq += 1_000,
                    }
                }
                alone &= single.verify(&b);
                batch.queue(&b);
            }
            batch.verify_batch() == alone && batch.verify_batch()
        }
    }
}
