//! The kit's own identities and its side of the handshake (SPEC.md §7): HELLO, the HELLO_ACK
//! transcript, and the checks on the peer's HELLO and HELLO_ACK.

use rand_core::{OsRng, RngCore};
use weft_engine::identity::{Role, Transcript};
use weft_engine::noise::{NoiseKeys, Rekey};
use weft_engine::protocol::{
    Family, Hello, HelloAck, Message, NetworkId, NodeId, PublicKey, CAP_LZ4,
};
use weft_engine::{Identity, NetworkKey};

use super::conn::{with_msg, Conn};

/// Families the kit announces on an ordinary link: session, mesh, table, replication, remote
/// runs (Chord only when the peer runs it, see [`LinkOpts`]).
pub const FAMILIES_LINK: u32 = Family::Session.bit()
    | Family::Mesh.bit()
    | Family::Table.bit()
    | Family::Replication.bit()
    | Family::Remote.bit();

/// One identity the kit plays: a fresh ed25519 key per connection unless a check reuses it.
#[derive(Clone)]
pub struct Me {
    secret: [u8; 32],
    /// The key pair.
    pub identity: Identity,
    /// The nonce of this identity's HELLO.
    pub nonce: [u8; 32],
    /// The incarnation it announces.
    pub incarnation: u64,
}

impl Me {
    /// A fresh random identity at incarnation 1.
    pub fn fresh() -> Me {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        Me {
            secret,
            identity: Identity::from_secret(&secret),
            nonce,
            incarnation: 1,
        }
    }

    /// The same key with a new nonce and `incarnation`.
    pub fn again(&self, incarnation: u64) -> Me {
        let mut me = self.clone();
        OsRng.fill_bytes(&mut me.nonce);
        me.incarnation = incarnation;
        me
    }

    /// This identity's Noise keys for `network_key`.
    pub fn keys(&self, network_key: NetworkKey) -> NoiseKeys {
        NoiseKeys::new(&self.secret, network_key, Rekey::default())
    }

    /// The node id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.identity.public_key()
    }

    /// This identity's HELLO.
    pub fn hello(&self, network: NetworkId, opts: &LinkOpts) -> Hello {
        Hello {
            network,
            public_key: self.public_key(),
            nonce: self.nonce,
            incarnation: self.incarnation,
            listen_addr: None,
            capabilities: opts.capabilities,
            families: opts.families,
            dedicated: opts.dedicated,
        }
    }

    /// This identity's HELLO_ACK answering `peer` on a connection where it plays `role`.
    pub fn ack(&self, network: NetworkId, role: Role, peer: &Hello) -> HelloAck {
        let t = Transcript {
            network,
            signer_role: role,
            verifier_key: peer.public_key,
            verifier_nonce: peer.nonce,
            signer_nonce: self.nonce,
            signer_incarnation: self.incarnation,
        };
        HelloAck {
            signature: self.identity.sign_hello_ack(&t),
        }
    }

    /// Whether the peer's `ack` proves `peer`'s key to this identity, the peer playing the
    /// role opposite to `role` (SPEC.md §7.5).
    pub fn verifies(&self, network: NetworkId, role: Role, peer: &Hello, ack: &HelloAck) -> bool {
        let t = Transcript {
            network,
            signer_role: role.peer(),
            verifier_key: self.public_key(),
            verifier_nonce: self.nonce,
            signer_nonce: peer.nonce,
            signer_incarnation: peer.incarnation,
        };
        t.verify(peer.public_key, &ack.signature)
    }
}

/// What the kit's HELLO says.
#[derive(Debug, Clone, Copy)]
pub struct LinkOpts {
    /// Capability bits.
    pub capabilities: u32,
    /// Families announced.
    pub families: u32,
    /// A dedicated connection of this family, or a link.
    pub dedicated: Option<u8>,
}

impl LinkOpts {
    /// A link offering lz4, announcing [`FAMILIES_LINK`] and the signing mode `unsigned`.
    pub fn link(unsigned: bool) -> LinkOpts {
        LinkOpts {
            capabilities: CAP_LZ4 | unsigned_bit(unsigned),
            families: FAMILIES_LINK,
            dedicated: None,
        }
    }
}

/// The HELLO capability bit of the unsigned-broadcast mode.
pub fn unsigned_bit(unsigned: bool) -> u32 {
    if unsigned {
        weft_engine::protocol::CAP_BROADCASTS_UNSIGNED
    } else {
        0
    }
}

/// Reads the peer's first frame, which must be an uncompressed HELLO (SPEC.md §7.2, §3).
pub fn read_hello(conn: &mut Conn, wait: std::time::Duration) -> Result<Hello, String> {
    let deadline = std::time::Instant::now() + wait;
    match conn.next(deadline) {
        super::conn::Got::Frame(f) => {
            if f.flags().compressed() {
                return Err("its HELLO was compressed (§3: HELLO never is)".into());
            }
            match with_msg(&f, |m| match m {
                Message::Hello(h) => Some(h),
                _ => None,
            }) {
                Some(Some(h)) => Ok(h),
                Some(None) => Err(format!(
                    "its first frame was {}, not HELLO",
                    f.code().name()
                )),
                None => Err(format!(
                    "its first frame ({}) does not decode",
                    f.code().name()
                )),
            }
        }
        super::conn::Got::Closed => Err("it closed the connection before its HELLO".into()),
        super::conn::Got::Timeout => Err(format!("no HELLO within {}", super::conn::span(wait))),
    }
}

/// Reads the peer's HELLO_ACK, which must come next, uncompressed.
pub fn read_ack(conn: &mut Conn, wait: std::time::Duration) -> Result<HelloAck, String> {
    let deadline = std::time::Instant::now() + wait;
    match conn.next(deadline) {
        super::conn::Got::Frame(f) => {
            if f.flags().compressed() {
                return Err("its HELLO_ACK was compressed (§3: HELLO_ACK never is)".into());
            }
            match with_msg(&f, |m| match m {
                Message::HelloAck(a) => Some(a),
                _ => None,
            }) {
                Some(Some(a)) => Ok(a),
                _ => Err(match super::conn::bye_reason(&f) {
                    Some(r) => format!("it answered our HELLO with BYE({r:?})"),
                    None => format!("it sent {} where its HELLO_ACK was due", f.code().name()),
                }),
            }
        }
        super::conn::Got::Closed => Err("it closed the connection before its HELLO_ACK".into()),
        super::conn::Got::Timeout => {
            Err(format!("no HELLO_ACK within {}", super::conn::span(wait)))
        }
    }
}
