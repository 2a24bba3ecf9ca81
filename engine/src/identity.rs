//! A node's ed25519 identity and the handshake transcript it signs.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use weft_protocol::{NetworkId, NodeId, PublicKey, Signature};

/// Domain separation for HELLO_ACK signatures (SPEC.md §Handshake).
pub const HELLO_ACK_DOMAIN: &[u8] = b"weft hello-ack v2\0";

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

    /// Signs the HELLO_ACK transcript proving this key to the verifier it names.
    pub fn sign_hello_ack(&self, t: &Transcript) -> Signature {
        Signature(self.signing_key.sign(&t.bytes(self.public_key)).to_bytes())
    }
}

/// A side of one connection: the signer of a HELLO_ACK names its own, so a proof made on a
/// connection one side dialed cannot be replayed on one it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that dialed the connection.
    Dialer,
    /// The side that accepted it.
    Acceptor,
}

impl Role {
    /// The transcript byte: `0x01` dialer, `0x02` acceptor.
    pub fn byte(self) -> u8 {
        match self {
            Role::Dialer => 0x01,
            Role::Acceptor => 0x02,
        }
    }

    /// The other side of the connection.
    pub fn peer(self) -> Role {
        match self {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        }
    }
}

/// What a HELLO_ACK signs, seen from the signer (SPEC.md §7.3): the network, the signer's role
/// on the connection, the verifier's key and nonce, the signer's own nonce and incarnation
/// (the signer's key is added by [`Transcript::bytes`]).
#[derive(Debug, Clone, Copy)]
pub struct Transcript {
    /// The network both sides claim.
    pub network: NetworkId,
    /// The signer's side of the connection.
    pub signer_role: Role,
    /// The verifier's public key, from the HELLO the signer received.
    pub verifier_key: PublicKey,
    /// The nonce from the verifier's HELLO.
    pub verifier_nonce: [u8; 32],
    /// The nonce from the signer's HELLO.
    pub signer_nonce: [u8; 32],
    /// The incarnation from the signer's HELLO.
    pub signer_incarnation: u64,
}

/// Bytes of a transcript: domain 18, network 32, role 1, two keys and two nonces 32 each,
/// incarnation 8.
pub const TRANSCRIPT_BYTES: usize = 18 + 32 + 1 + 4 * 32 + 8;

impl Transcript {
    /// `DOMAIN ‖ network ‖ signer role ‖ signer public key ‖ verifier public key ‖ verifier
    /// nonce ‖ signer nonce ‖ incarnation (u64 BE)`: [`TRANSCRIPT_BYTES`] bytes.
    pub fn bytes(&self, signer: PublicKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(TRANSCRIPT_BYTES);
        out.extend_from_slice(HELLO_ACK_DOMAIN);
        out.extend_from_slice(&self.network.0);
        out.push(self.signer_role.byte());
        out.extend_from_slice(&signer.0);
        out.extend_from_slice(&self.verifier_key.0);
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
            signer_role: Role::Acceptor,
            verifier_key: Identity::from_secret(&[5; 32]).public_key(),
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
        let mut other = t;
        other.verifier_key = b.public_key();
        assert!(!other.verify(a.public_key(), &sig), "another verifier");
        let mut other = t;
        other.signer_role = Role::Dialer;
        assert!(!other.verify(a.public_key(), &sig), "the other direction");
        assert!(!t.verify(PublicKey([0xff; 32]), &sig), "not a curve point");
        assert_ne!(a.node_id(), b.node_id());
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// SPEC.md §7.3's worked example: RFC 8032 test 1's key signs as the acceptor, for the
    /// verifier whose secret is 32 × `0x33`, on network `example`.
    #[test]
    fn the_transcript_is_specs_worked_example() {
        let mut secret = [0u8; 32];
        let rfc = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        for (i, b) in secret.iter_mut().enumerate() {
            *b = u8::from_str_radix(&rfc[2 * i..2 * i + 2], 16).unwrap();
        }
        let signer = Identity::from_secret(&secret);
        let verifier = Identity::from_secret(&[0x33; 32]);
        let t = Transcript {
            network: NetworkId::from_name("example"),
            signer_role: Role::Acceptor,
            verifier_key: verifier.public_key(),
            verifier_nonce: [0x11; 32],
            signer_nonce: [0x22; 32],
            signer_incarnation: 7,
        };
        let bytes = t.bytes(signer.public_key());
        assert_eq!(bytes.len(), TRANSCRIPT_BYTES);
        let sig = signer.sign_hello_ack(&t);
        assert_eq!(hex(&bytes), SPEC_TRANSCRIPT);
        assert_eq!(hex(&verifier.public_key().0), SPEC_VERIFIER_KEY);
        assert_eq!(hex(&sig.0), SPEC_SIGNATURE);
    }

    const SPEC_VERIFIER_KEY: &str =
        "17cb79fb2b4120f2b1ec65e4198d6e08b28e813feb01e4a400839b85e18080ce";
    const SPEC_TRANSCRIPT: &str = concat!(
        "776566742068656c6c6f2d61636b20763200",
        "89b1d1aee47e8061fee57de8e58208dca919058d8dfbbe96d31304a8ff61cee2",
        "02",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "17cb79fb2b4120f2b1ec65e4198d6e08b28e813feb01e4a400839b85e18080ce",
        "1111111111111111111111111111111111111111111111111111111111111111",
        "2222222222222222222222222222222222222222222222222222222222222222",
        "0000000000000007",
    );
    const SPEC_SIGNATURE: &str = concat!(
        "92a910eda29245d73954b8dfbd45cc0e2ccffd035b6f29dc50d142273356e71a",
        "af02c68f25dd71ace2ccc2301493f98723983ee323f3d79d0e74684a5f435d0d",
    );
}
