//! The handshake layer: HELLO both ways, then HELLO_ACK both ways, each signing the other's
//! nonce, both keys and its own side of the connection (SPEC.md §7). Kept apart from the protocols above it so that an encrypted
//! transport (Noise) can later replace it without touching them.

use weft_protocol::{Hello, HelloAck, NetworkId, NodeId, CAP_BROADCASTS_UNSIGNED, CAP_LZ4};

use crate::connection::CloseReason;
use crate::identity::{Identity, Role, Transcript};

/// One connection's handshake in progress.
#[derive(Debug)]
pub(crate) struct Handshake {
    /// The nonce in the HELLO we sent.
    pub(crate) our_nonce: [u8; 32],
    /// Our side of the connection.
    role: Role,
    /// The peer's HELLO, once received.
    pub(crate) peer_hello: Option<Hello>,
}

/// What the handshake proved about the peer.
#[derive(Debug)]
pub(crate) struct Proven {
    pub(crate) node: NodeId,
    pub(crate) hello: Hello,
}

impl Handshake {
    pub(crate) fn new(our_nonce: [u8; 32], role: Role) -> Handshake {
        Handshake {
            our_nonce,
            role,
            peer_hello: None,
        }
    }

    /// Takes the peer's HELLO; returns the HELLO_ACK to send.
    pub(crate) fn on_hello(
        &mut self,
        hello: Hello,
        identity: &Identity,
        network: NetworkId,
        incarnation: u64,
        broadcasts_signed: bool,
    ) -> Result<HelloAck, CloseReason> {
        if self.peer_hello.is_some() {
            return Err(CloseReason::UnexpectedMessage("second HELLO"));
        }
        if hello.network != network {
            return Err(CloseReason::WrongNetwork);
        }
        if NodeId::from_public_key(&hello.public_key) == identity.node_id() {
            return Err(CloseReason::SelfConnection);
        }
        if signs_broadcasts(&hello) != broadcasts_signed {
            return Err(CloseReason::BroadcastModeMismatch);
        }
        let transcript = Transcript {
            network,
            signer_role: self.role,
            verifier_key: hello.public_key,
            verifier_nonce: hello.nonce,
            signer_nonce: self.our_nonce,
            signer_incarnation: incarnation,
        };
        self.peer_hello = Some(hello);
        Ok(HelloAck {
            signature: identity.sign_hello_ack(&transcript),
        })
    }

    /// Takes the peer's HELLO_ACK; on success the peer is proven.
    pub(crate) fn on_hello_ack(
        &mut self,
        ack: &HelloAck,
        identity: &Identity,
        network: NetworkId,
    ) -> Result<Proven, CloseReason> {
        let Some(hello) = self.peer_hello.take() else {
            return Err(CloseReason::UnexpectedMessage("HELLO_ACK before HELLO"));
        };
        let transcript = Transcript {
            network,
            signer_role: self.role.peer(),
            verifier_key: identity.public_key(),
            verifier_nonce: self.our_nonce,
            signer_nonce: hello.nonce,
            signer_incarnation: hello.incarnation,
        };
        if !transcript.verify(hello.public_key, &ack.signature) {
            return Err(CloseReason::BadProof);
        }
        Ok(Proven {
            node: NodeId::from_public_key(&hello.public_key),
            hello,
        })
    }
}

/// Whether a HELLO offers lz4.
pub(crate) fn offers_lz4(hello: &Hello) -> bool {
    hello.capabilities & CAP_LZ4 != 0
}

/// Whether a HELLO says its network signs broadcasts (`CAP_BROADCASTS_UNSIGNED` clear).
pub(crate) fn signs_broadcasts(hello: &Hello) -> bool {
    hello.capabilities & CAP_BROADCASTS_UNSIGNED == 0
}
