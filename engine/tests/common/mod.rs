//! Shared by the engine's integration tests: a node, and fake peers driven frame by frame.
#![allow(dead_code)]

use bytes::Bytes;
use weft_engine::identity::{Role, Transcript};
use weft_engine::protocol::OriginProof;
use weft_engine::protocol::{
    Broadcast, Code, Frame, FrameDecoder, Hello, HelloAck, Message, NetworkId, NodeId, PublicKey,
    TableWrite, CAP_BROADCASTS_UNSIGNED, CAP_LZ4,
};
use weft_engine::{
    CloseReason, Config, ConnId, HostRequest, HostResult, Identity, Input, Instant, Node, Output,
};

pub const T0: Instant = Instant(5_000_000_000);

/// HELLO `families` of a fake that runs session, mesh, table, Chord and replication.
pub const ALL_FAMILIES: u32 = 0b1_1111;

pub fn node_with(edit: impl FnOnce(&mut Config)) -> Node {
    let mut c = Config::from_seed("raw", 1);
    c.discovery = false;
    // The fake peers here write and read weft frames themselves, in the clear: these tests
    // are about what the node does with frames. The Noise layer under them has its own tests
    // (`engine/tests/noise.rs`); two real nodes linked to each other set it back.
    c.link_encryption = weft_engine::LinkEncryption::PlaintextSimulationOnly;
    edit(&mut c);
    Node::new(c)
}

/// Every output of `node`, its start-up loads answered as by a host that stores nothing (so
/// its start-up gate opens); the loads are not in the list.
pub fn drain(node: &mut Node) -> Vec<Output> {
    let mut all = Vec::new();
    loop {
        let mut loads = Vec::new();
        while let Some(out) = node.poll_output() {
            match out {
                Output::Request {
                    id,
                    request: HostRequest::LoadState { .. },
                } => loads.push(id),
                out => all.push(out),
            }
        }
        if loads.is_empty() {
            return all;
        }
        for id in loads {
            let result = HostResult::Loaded(None);
            // Instant::ZERO: a node's clock never goes back, so this is its own `now`.
            node.handle_input(Instant::ZERO, Input::Completed { id, result })
                .unwrap();
        }
    }
}

/// Every output of `node`, host requests included and left unanswered.
pub fn drain_raw(node: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

/// Frames a node transmitted on `conn`, decoded.
pub fn frames_to(outputs: &[Output], conn: ConnId) -> Vec<Frame> {
    let mut dec = FrameDecoder::new();
    for o in outputs {
        if let Output::Transmit { conn: c, bytes } = o {
            if *c == conn {
                dec.push(bytes.clone());
            }
        }
    }
    std::iter::from_fn(|| dec.next_frame().unwrap()).collect()
}

pub fn closed(outputs: &[Output], conn: ConnId) -> Option<CloseReason> {
    outputs.iter().find_map(|o| match o {
        Output::Close { conn: c, reason } if *c == conn => Some(reason.clone()),
        _ => None,
    })
}

/// A fake peer that speaks the handshake by hand.
pub struct Fake {
    pub identity: Identity,
    pub network: NetworkId,
    pub nonce: [u8; 32],
    pub conn: ConnId,
}

impl Fake {
    pub fn new(seed: u8, conn: ConnId) -> Fake {
        Fake {
            identity: Identity::from_secret(&[seed; 32]),
            network: NetworkId::from_name("raw"),
            nonce: [seed; 32],
            conn,
        }
    }

    pub fn hello(&self) -> Bytes {
        self.hello_with(ALL_FAMILIES, None)
    }

    /// A HELLO naming `families`, and `dedicated` for a dedicated connection.
    pub fn hello_with(&self, families: u32, dedicated: Option<u8>) -> Bytes {
        self.hello_full(CAP_LZ4, families, dedicated)
    }

    /// A HELLO with `capabilities`, naming `families`, and `dedicated` for a dedicated
    /// connection.
    pub fn hello_full(&self, capabilities: u32, families: u32, dedicated: Option<u8>) -> Bytes {
        Message::Hello(Hello {
            network: self.network,
            public_key: self.identity.public_key(),
            nonce: self.nonce,
            incarnation: 1,
            listen_addr: None,
            capabilities,
            families,
            dedicated,
        })
        .to_frame(false)
        .into_bytes()
    }

    /// The fake's HELLO_ACK to the node whose HELLO is `node_hello`.
    pub fn ack(&self, node_hello: &Hello) -> Bytes {
        self.ack_over(node_hello.public_key, node_hello.nonce)
    }

    /// A HELLO_ACK naming `node_key` and `node_nonce` as the verifier's (the fake dialed the
    /// node if its connection is inbound to the node).
    pub fn ack_over(&self, node_key: PublicKey, node_nonce: [u8; 32]) -> Bytes {
        let signer_role = if self.conn.is_inbound() {
            Role::Dialer
        } else {
            Role::Acceptor
        };
        let t = Transcript {
            network: self.network,
            signer_role,
            verifier_key: node_key,
            verifier_nonce: node_nonce,
            signer_nonce: self.nonce,
            signer_incarnation: 1,
        };
        Message::HelloAck(HelloAck {
            signature: self.identity.sign_hello_ack(&t),
        })
        .to_frame(false)
        .into_bytes()
    }

    /// Accepts the fake's connection and completes the handshake, announcing the node's own
    /// broadcast-signing mode; returns the node's outputs.
    pub fn join(&self, node: &mut Node, now: Instant) -> Vec<Output> {
        self.join_as(node, now, None)
    }

    /// As [`Fake::join`], on a dedicated connection of the family with high byte
    /// `dedicated` if given (SPEC.md §8.9), else as a link.
    pub fn join_as(&self, node: &mut Node, now: Instant, dedicated: Option<u8>) -> Vec<Output> {
        node.handle_input(now, accepted(self.conn)).unwrap();
        let mut out = drain(node);
        let node_hello = hello_sent(&out, self.conn);
        let capabilities = CAP_LZ4 | (node_hello.capabilities & CAP_BROADCASTS_UNSIGNED);
        self.send(
            node,
            now,
            self.hello_full(capabilities, ALL_FAMILIES, dedicated),
        );
        self.send(node, now, self.ack(&node_hello));
        out.extend(drain(node));
        out
    }

    pub fn send(&self, node: &mut Node, now: Instant, bytes: Bytes) {
        node.handle_input(
            now,
            Input::Received {
                conn: self.conn,
                bytes,
            },
        )
        .unwrap();
    }

    pub fn id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// `write` signed by this fake as its writer (its `node` should be the fake's id).
    pub fn sign_write(&self, mut write: TableWrite) -> TableWrite {
        write.public_key = self.identity.public_key();
        write.signature = self.identity.sign(&write.signed_bytes(&self.network));
        write
    }
}

pub fn accepted(conn: ConnId) -> Input {
    Input::Accepted {
        conn,
        addr: "fake".into(),
    }
}

/// A BROADCAST (incarnation 1) from, and signed by, the identity whose secret key is
/// `signer`'s 32 bytes: its origin is that identity's node id, not `signer` (SPEC.md §6.9).
pub fn broadcast_frame(signer: NodeId, seq: u64, payload: &[u8]) -> Bytes {
    signed_broadcast_frame(&Identity::from_secret(&signer.0), seq, payload)
}

/// A BROADCAST (incarnation 1) originated and signed by `origin`, in network "raw".
pub fn signed_broadcast_frame(origin: &Identity, seq: u64, payload: &[u8]) -> Bytes {
    let mut b = Broadcast {
        origin: origin.node_id(),
        incarnation: 1,
        seq,
        payload,
        proof: None,
    };
    let mut signed = Vec::new();
    b.signed_message(&NetworkId::from_name("raw"), &mut signed);
    b.proof = Some(OriginProof {
        public_key: origin.public_key(),
        signature: origin.sign(&signed),
    });
    Message::Broadcast(b).to_frame(false).into_bytes()
}

/// `len` incompressible bytes (xorshift from `seed`, which must not be 0).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The HELLO the node sent first on `conn` among `outputs`.
pub fn hello_sent(outputs: &[Output], conn: ConnId) -> Hello {
    match Message::decode(Code::HELLO, &frames_to(outputs, conn)[0].payload().unwrap()) {
        Ok(Message::Hello(h)) => h,
        other => panic!("expected HELLO, got {other:?}"),
    }
}

/// `node` is told to dial `addr` at `now`: the connection it opens for it.
pub fn dial(node: &mut Node, now: Instant, addr: &str) -> ConnId {
    node.handle_input(
        now,
        Input::Command(weft_engine::Command::Connect { addr: addr.into() }),
    )
    .unwrap();
    drain(node)
        .iter()
        .find_map(|o| match o {
            Output::Connect { conn, .. } => Some(*conn),
            _ => None,
        })
        .expect("a dial")
}
