//! A node's ed25519 identity and the handshake transcript it signs.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use weft_protocol::{NetworkId, NodeId, PublicKey, Signature};

/// Domain separation for HELLO_ACK signatures (SPEC.md §Handshake).
pub const HELLO_ACK_DOMAIN: &[u8] = b"weft hello-ack v1\0";

/// A key pair and the node id derived from it.
#[derive(Clone)]
pub struct Identity {
    node_id: NodeId,
    signing_key: SigningKey,
    public_key: PublicKey,
}

impl core::fmt::Debug for Identity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Identity({})", self.node_id)
    }
}

impl Identity {
    /// The identity whose ed25519 secret key is `secret_key`.
    pub fn from_secret(secret_key: &[u8; 32]) -> Identity {
        let signing_key = SigningKey::from_bytes(secret_key);
        let public_key = PublicKey(signing_key.verifying_key().to_bytes());
        let node_id = NodeId::from_public_key(&public_key);
        Identity {
            signing_key,
            public_key,
            node_id,
        }
    }

    /// The node id: BLAKE3 of the public key.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// Signs `message` (the caller puts its own domain-separation prefix first).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing_key.sign(message).to_bytes())
    }

    /// Signs the HELLO_ACK transcript proving this key to the peer that sent `peer_nonce`.
    pub fn sign_hello_ack(&self, t: &Transcript) -> Signature {
        Signature(self.signing_key.sign(&t.bytes(self.public_key)).to_bytes())
    }
}

/// What a HELLO_ACK signs, seen from the signer: the network, the peer's (verifier's) nonce,
/// the signer's own nonce and incarnation.
#[derive(Debug, Clone, Copy)]
pub struct Transcript {
    /// The network both sides claim.
    pub network: NetworkId,
    /// The nonce from the verifier's HELLO.
    pub verifier_nonce: [u8; 32],
    /// The nonce from the signer's HELLO.
    pub signer_nonce: [u8; 32],
    /// The incarnation from the signer's HELLO.
    pub signer_incarnation: u64,
}

impl Transcript {
    /// `DOMAIN ‖ network ‖ signer public key ‖ verifier nonce ‖ signer nonce ‖ incarnation (u64 BE)`.
    pub fn bytes(&self, signer: PublicKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_ACK_DOMAIN.len() + 32 * 4 + 8);
        out.extend_from_slice(HELLO_ACK_DOMAIN);
        out.extend_from_slice(&self.network.0);
        out.extend_from_slice(&signer.0);
        out.extend_from_slice(&self.verifier_nonce);
        out.extend_from_slice(&self.signer_nonce);
        out.extend_from_slice(&self.signer_incarnation.to_be_bytes());
        out
    }

    /// Whether `signature` by `signer` over this transcript verifies.
    pub fn verify(&self, signer: PublicKey, signature: &Signature) -> bool {
        verify_signature(&signer, &self.bytes(signer), signature)
    }
}

/// Whether `signature` by `public_key` over `message` verifies (false for a key that is not a
/// curve point).
pub fn verify_signature(public_key: &PublicKey, message: &[u8], signature: &Signature) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&public_key.0) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify(message, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript {
            network: NetworkId::from_name("t"),
            verifier_nonce: [1; 32],
            signer_nonce: [2; 32],
            signer_incarnation: 3,
        }
    }

    #[test]
    fn a_signature_verifies_only_for_its_key_and_transcript() {
        let a = Identity::from_secret(&[7; 32]);
        let b = Identity::from_secret(&[8; 32]);
        let t = transcript();
        let sig = a.sign_hello_ack(&t);
        assert!(t.verify(a.public_key(), &sig));
        assert!(!t.verify(b.public_key(), &sig), "another key");
        let mut other = t;
        other.verifier_nonce = [9; 32];
        assert!(!other.verify(a.public_key(), &sig), "another nonce");
        assert!(!t.verify(PublicKey([0xff; 32]), &sig), "not a curve point");
        assert_ne!(a.node_id(), b.node_id());
    }
}
