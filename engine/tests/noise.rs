//! The Noise layer (SPEC.md §21): two `NoiseLink`s back to back, then real nodes whose links
//! are tampered with, replayed, cut, keyed with another secret, or claimed by a peer without
//! the identity key.

mod common;

use bytes::Bytes;
use common::{drain, T0};
use weft_engine::noise::{
    handshake_in_memory, NoiseError, NoiseKeys, NoiseLink, NoiseRole, Rekey,
    IDENTITY_PAYLOAD_BYTES, PLAINTEXT_BYTES_MAX,
};
use weft_engine::protocol::{Code, Frame, FrameDecoder, Hello, Message, NetworkId};
use weft_engine::{
    CloseReason, Command, Config, ConnId, Event, Identity, Input, NetworkKey, Node, Output,
};

fn secret(n: u8) -> [u8; 32] {
    [n; 32]
}

fn keys(n: u8, network: NetworkKey) -> NoiseKeys {
    NoiseKeys::new(&secret(n), network, Rekey::default())
}

fn pair(i: &NoiseKeys, r: &NoiseKeys) -> (NoiseLink, NoiseLink) {
    let mut a = NoiseLink::new(i, NoiseRole::Initiator, [1; 32]);
    let mut b = NoiseLink::new(r, NoiseRole::Responder, [2; 32]);
    handshake_in_memory(&mut a, &mut b);
    (a, b)
}

fn plaintext(link: &mut NoiseLink) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = link.poll_plaintext() {
        out.extend_from_slice(&p);
    }
    out
}

#[test]
fn a_handshake_proves_each_sides_identity_key() {
    let (a, b) = pair(&keys(1, NetworkKey::OPEN), &keys(2, NetworkKey::OPEN));
    assert!(a.is_established() && b.is_established());
    let id = |n| Identity::from_secret(&secret(n)).public_key();
    assert_eq!(a.peer_identity(), Some(id(2)));
    assert_eq!(b.peer_identity(), Some(id(1)));
}

#[test]
fn a_large_stream_is_split_into_messages_and_joined_in_any_chunking() {
    let (mut a, mut b) = pair(&keys(1, NetworkKey::OPEN), &keys(2, NetworkKey::OPEN));
    let data: Vec<u8> = (0..3 * PLAINTEXT_BYTES_MAX + 77).map(|i| i as u8).collect();
    let wire = a.seal(&data);
    // Four messages, each a length, the ciphertext and its tag.
    assert_eq!(wire.len(), data.len() + 4 * (2 + 16));
    assert!(
        wire.windows(64)
            .all(|w| !data.windows(64).take(1).any(|d| d == w)),
        "no plaintext on the wire"
    );
    for chunk in wire.chunks(1000) {
        b.push(chunk);
    }
    let got = plaintext(&mut b);
    assert_eq!(b.error(), None);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the stream comes back as it went");
}

#[test]
fn both_directions_rekey_at_the_bound_and_stay_in_step() {
    let rekey = Rekey {
        messages_max: 3,
        bytes_max: 1 << 30,
    };
    let ki = NoiseKeys::new(&secret(1), NetworkKey::OPEN, rekey);
    let kr = NoiseKeys::new(&secret(2), NetworkKey::OPEN, rekey);
    let (mut a, mut b) = pair(&ki, &kr);
    // The same plaintext sealed before and after a rekey gives other bytes with the same
    // nonce distance: ten messages cross three rekeys, and every one opens.
    for n in 0..10u8 {
        b.push(&a.seal(&[n; 40]));
        assert_eq!(plaintext(&mut b), vec![n; 40], "message {n}");
        a.push(&b.seal(&[n; 40]));
        assert_eq!(plaintext(&mut a), vec![n; 40], "reply {n}");
    }
    // A receiver that does not rekey at the same bound cannot read past it.
    let lax = NoiseKeys::new(&secret(2), NetworkKey::OPEN, Rekey::default());
    let (mut a, mut b) = pair(&ki, &lax);
    for n in 0..3u8 {
        b.push(&a.seal(&[n; 8]));
    }
    assert_eq!(plaintext(&mut b).len(), 24);
    b.push(&a.seal(&[9; 8]));
    assert_eq!(b.error(), Some(NoiseError::Decrypt));
}

#[test]
fn a_tampered_replayed_reordered_or_cut_message_fails_with_decrypt() {
    let ki = keys(1, NetworkKey::OPEN);
    let kr = keys(2, NetworkKey::OPEN);
    // Tampered: any one byte of the ciphertext or tag.
    for at in [2usize, 10, 41] {
        let (mut a, mut b) = pair(&ki, &kr);
        let mut m = a.seal(&[7; 24]).to_vec();
        m[at] ^= 1;
        b.push(&m);
        assert_eq!(b.error(), Some(NoiseError::Decrypt), "byte {at}");
        assert!(plaintext(&mut b).is_empty());
    }
    // Replayed.
    let (mut a, mut b) = pair(&ki, &kr);
    let m = a.seal(b"once");
    b.push(&m);
    assert_eq!(plaintext(&mut b), b"once");
    b.push(&m);
    assert_eq!(b.error(), Some(NoiseError::Decrypt));
    // Reordered.
    let (mut a, mut b) = pair(&ki, &kr);
    let (m1, m2) = (a.seal(b"first"), a.seal(b"second"));
    b.push(&m2);
    assert_eq!(b.error(), Some(NoiseError::Decrypt));
    b.push(&m1);
    assert!(plaintext(&mut b).is_empty(), "nothing read after a failure");
    // Cut: a message that lost its last byte, and the next message's bytes taken for it.
    let (mut a, mut b) = pair(&ki, &kr);
    let mut m = a.seal(&[7; 24]).to_vec();
    m.pop();
    m.extend_from_slice(&a.seal(b"next"));
    b.push(&m);
    assert_eq!(b.error(), Some(NoiseError::Decrypt));
    assert!(plaintext(&mut b).is_empty());
    // A length that cannot hold a byte and its tag (0 to 16).
    for prefix in [[0, 0], [0, 5], [0, 16]] {
        let (_, mut b) = pair(&ki, &kr);
        b.push(&prefix);
        assert_eq!(b.error(), Some(NoiseError::BadLength), "{prefix:?}");
    }
}

#[test]
fn another_network_key_fails_the_first_message_and_the_responder_writes_nothing() {
    let one = NetworkKey::derive(b"one").unwrap();
    let two = NetworkKey::derive(b"two").unwrap();
    for (ki, kr) in [(one, two), (one, NetworkKey::OPEN), (NetworkKey::OPEN, two)] {
        let mut a = NoiseLink::new(&keys(1, ki), NoiseRole::Initiator, [1; 32]);
        let mut b = NoiseLink::new(&keys(2, kr), NoiseRole::Responder, [2; 32]);
        let m1 = a.poll_transmit().unwrap();
        assert_eq!(m1.len(), 2 + 32 + 16, "e and the tag of an empty payload");
        b.push(&m1);
        assert_eq!(b.error(), Some(NoiseError::Handshake));
        assert_eq!(
            b.poll_transmit(),
            None,
            "nothing to learn from the responder"
        );
    }
}

#[test]
fn a_static_key_not_signed_by_the_identity_it_presents_is_refused() {
    let victim = keys(9, NetworkKey::OPEN).identity_payload();
    // The victim's key and signature, over the victim's static key, with the claimant's own.
    let forged = keys(3, NetworkKey::OPEN).with_identity_payload(victim);
    let mut bad = [0u8; IDENTITY_PAYLOAD_BYTES];
    bad[..32].copy_from_slice(&victim[..32]);
    let garbage = keys(3, NetworkKey::OPEN).with_identity_payload(bad);
    for claimant in [&forged, &garbage] {
        // As responder (message 2) and as initiator (message 3).
        let (a, b) = pair(&keys(1, NetworkKey::OPEN), claimant);
        assert_eq!(a.error(), Some(NoiseError::UnboundStaticKey));
        assert!(!b.is_established() || a.peer_identity().is_none());
        let (a, b) = pair(claimant, &keys(1, NetworkKey::OPEN));
        assert_eq!(b.error(), Some(NoiseError::UnboundStaticKey));
        assert_eq!(b.peer_identity(), None);
        let _ = a;
    }
}

#[test]
fn handshake_messages_over_the_bound_are_refused_before_buffering() {
    let mut b = NoiseLink::new(&keys(2, NetworkKey::OPEN), NoiseRole::Responder, [2; 32]);
    b.push(&[0x01, 0x01]);
    assert_eq!(b.error(), Some(NoiseError::BadLength));
}

#[test]
fn the_same_seeds_give_the_same_bytes() {
    let run = || {
        let mut a = NoiseLink::new(&keys(1, NetworkKey::OPEN), NoiseRole::Initiator, [5; 32]);
        let mut b = NoiseLink::new(&keys(2, NetworkKey::OPEN), NoiseRole::Responder, [6; 32]);
        let mut wire = Vec::new();
        loop {
            let mut moved = false;
            while let Some(m) = a.poll_transmit() {
                wire.extend_from_slice(&m);
                b.push(&m);
                moved = true;
            }
            while let Some(m) = b.poll_transmit() {
                wire.extend_from_slice(&m);
                a.push(&m);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        wire.extend_from_slice(&a.seal(b"hello"));
        wire
    };
    assert_eq!(run(), run());
    let mut other = NoiseLink::new(&keys(1, NetworkKey::OPEN), NoiseRole::Initiator, [7; 32]);
    assert_ne!(
        other.poll_transmit().unwrap()[..],
        run()[..50],
        "another seed"
    );
}

// ----- real nodes ---------------------------------------------------------------------------

fn node(seed: u64, network_key: NetworkKey) -> Node {
    node_with(seed, |c| c.network_key = network_key)
}

/// A node of network "noise", without discovery, its config edited by `edit`.
fn node_with(seed: u64, edit: impl FnOnce(&mut Config)) -> Node {
    let mut c = Config::from_seed("noise", seed);
    c.discovery = false;
    edit(&mut c);
    let mut n = Node::new(c);
    // A host that keeps nothing: the start-up gate opens.
    loop {
        let ids: Vec<_> = drain(&mut n)
            .into_iter()
            .filter_map(|o| match o {
                Output::Request { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return n;
        }
        for id in ids {
            let result = weft_engine::HostResult::Loaded(None);
            n.handle_input(T0, Input::Completed { id, result }).unwrap();
        }
    }
}

/// A real node `a` dialing a real node `b`, the bytes carried by hand.
struct Wire {
    a: Node,
    b: Node,
    a_conn: ConnId,
    b_conn: ConnId,
    /// Every transmit of `a` to `b`, in order.
    a_to_b: Vec<Bytes>,
    /// Outputs other than transmits, both nodes.
    other: Vec<Output>,
}

impl Wire {
    fn new(a: Node, b: Node) -> Wire {
        let mut w = Wire {
            a,
            b,
            a_conn: ConnId(2),
            b_conn: ConnId::inbound(1),
            a_to_b: Vec::new(),
            other: Vec::new(),
        };
        w.a.handle_input(T0, Input::Command(Command::Connect { addr: "b".into() }))
            .unwrap();
        w.b.handle_input(
            T0,
            Input::Accepted {
                conn: w.b_conn,
                addr: "a".into(),
            },
        )
        .unwrap();
        w.a.handle_input(T0, Input::Connected { conn: w.a_conn })
            .unwrap();
        w
    }

    /// Carries bytes both ways until both are quiet; `edit` may change (or drop) each
    /// transmit of `a` before `b` gets it.
    fn pump(&mut self, mut edit: impl FnMut(usize, Bytes) -> Option<Bytes>) {
        loop {
            let mut moved = false;
            for o in drain(&mut self.a) {
                match o {
                    Output::Transmit { bytes, .. } => {
                        moved = true;
                        self.a_to_b.push(bytes.clone());
                        if let Some(bytes) = edit(self.a_to_b.len() - 1, bytes) {
                            let conn = self.b_conn;
                            let _ = self.b.handle_input(T0, Input::Received { conn, bytes });
                        }
                    }
                    other => self.other.push(other),
                }
            }
            for o in drain(&mut self.b) {
                match o {
                    Output::Transmit { bytes, .. } => {
                        moved = true;
                        let conn = self.a_conn;
                        let _ = self.a.handle_input(T0, Input::Received { conn, bytes });
                    }
                    other => self.other.push(other),
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn linked(&self) -> bool {
        self.a.links().count() == 1 && self.b.links().count() == 1
    }

    fn closed_with(&self, reason: CloseReason) -> bool {
        self.other.iter().any(|o| {
            matches!(o, Output::Event(Event::ConnectionClosed { reason: r, .. }) if *r == reason)
        })
    }
}

#[test]
fn two_nodes_link_over_noise_and_nothing_they_send_is_plaintext() {
    let mut w = Wire::new(node(1, NetworkKey::OPEN), node(2, NetworkKey::OPEN));
    w.pump(|_, b| Some(b));
    assert!(w.linked());
    let wire: Vec<u8> = w.a_to_b.concat();
    let a_key = Identity::from_secret(&Config::from_seed("noise", 1).secret_key).public_key();
    let network = NetworkId::from_name("noise");
    for needle in [&a_key.0[..], &network.0[..]] {
        assert!(
            !wire.windows(needle.len()).any(|w| w == needle),
            "a HELLO field in the clear"
        );
    }
}

#[test]
fn a_tampered_or_replayed_message_on_a_link_closes_it_with_decrypt() {
    // Message 0 and 1 are Noise handshake messages 1 and 3; 2 is a's HELLO, 3 its HELLO_ACK.
    for case in ["tamper", "replay"] {
        let mut w = Wire::new(node(1, NetworkKey::OPEN), node(2, NetworkKey::OPEN));
        w.pump(|_, b| Some(b));
        assert!(w.linked());
        let sent = w.a_to_b.len();
        w.a.handle_input(
            T0,
            Input::Command(Command::Mesh(weft_engine::MeshCommand::Broadcast {
                payload: Bytes::from_static(b"a broadcast"),
            })),
        )
        .unwrap();
        let replay = w.a_to_b[sent - 1].clone();
        w.pump(|i, b| {
            if i != sent {
                return Some(b);
            }
            match case {
                "tamper" => {
                    let mut m = b.to_vec();
                    let last = m.len() - 1;
                    m[last] ^= 0x80;
                    Some(m.into())
                }
                _ => Some(replay.clone()),
            }
        });
        assert!(
            w.closed_with(CloseReason::Noise(NoiseError::Decrypt)),
            "{case}: {:?}",
            w.other
        );
        assert_eq!(w.b.links().count(), 0, "{case}");
    }
}

#[test]
fn a_node_with_another_network_key_never_links_and_gets_no_byte_back() {
    let one = NetworkKey::derive(b"one").unwrap();
    let two = NetworkKey::derive(b"two").unwrap();
    for (ka, kb) in [(one, two), (NetworkKey::OPEN, one), (one, NetworkKey::OPEN)] {
        let mut w = Wire::new(node(1, ka), node(2, kb));
        let mut b_wrote = 0;
        loop {
            let before = w.a_to_b.len();
            w.pump(|_, b| Some(b));
            let b_out = drain(&mut w.b);
            b_wrote += b_out
                .iter()
                .filter(|o| matches!(o, Output::Transmit { .. }))
                .count();
            w.other.extend(b_out);
            if w.a_to_b.len() == before {
                break;
            }
        }
        assert!(!w.linked());
        assert!(w.closed_with(CloseReason::Noise(NoiseError::Handshake)));
        assert_eq!(b_wrote, 0);
        assert_eq!(w.a_to_b.len(), 1, "only a's first handshake message");
    }
}

#[test]
fn a_hello_claiming_another_identity_than_the_handshake_bound_is_refused() {
    // A client completes Noise as itself, then sends a HELLO with another node's key.
    let mut n = node(2, NetworkKey::OPEN);
    let conn = ConnId::inbound(1);
    n.handle_input(
        T0,
        Input::Accepted {
            conn,
            addr: "m".into(),
        },
    )
    .unwrap();
    let m_secret = secret(7);
    let m_keys = NoiseKeys::new(&m_secret, NetworkKey::OPEN, Rekey::default());
    let mut m = NoiseLink::new(&m_keys, NoiseRole::Initiator, [3; 32]);
    let mut outputs = Vec::new();
    let feed = |n: &mut Node, m: &mut NoiseLink, outputs: &mut Vec<Output>| {
        let mut moved = false;
        while let Some(b) = m.poll_transmit() {
            n.handle_input(T0, Input::Received { conn, bytes: b })
                .unwrap();
            moved = true;
        }
        for o in drain(n) {
            match o {
                Output::Transmit { bytes, .. } => {
                    m.push(&bytes);
                    moved = true;
                }
                other => outputs.push(other),
            }
        }
        moved
    };
    while feed(&mut n, &mut m, &mut outputs) {}
    assert!(m.is_established());
    // The node's HELLO, decrypted by m.
    let mut dec = FrameDecoder::new();
    while let Some(p) = m.poll_plaintext() {
        dec.push(p);
    }
    let hello = dec.next_frame().unwrap().expect("the node's HELLO");
    let Ok(Message::Hello(theirs)) = Message::decode(Code::HELLO, &hello.payload().unwrap()) else {
        panic!("not a HELLO");
    };
    let victim = Identity::from_secret(&secret(9));
    let forged = Hello {
        network: NetworkId::from_name("noise"),
        public_key: victim.public_key(),
        nonce: [4; 32],
        incarnation: 1,
        listen_addr: None,
        capabilities: theirs.capabilities,
        families: theirs.families,
        dedicated: None,
    };
    let frame: Frame = Message::Hello(forged).to_frame(false);
    let sealed = m.seal(frame.bytes());
    n.handle_input(
        T0,
        Input::Received {
            conn,
            bytes: sealed,
        },
    )
    .unwrap();
    outputs.extend(drain(&mut n));
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Close {
            reason: CloseReason::Noise(NoiseError::IdentityMismatch),
            ..
        }
    )));
    assert_eq!(n.links().count(), 0);
}

/// Frames queued behind a full transmit window go out sealed together (one Noise message for
/// many frames), and arrive whole and in order, as frames sealed one by one do.
#[test]
fn frames_queued_behind_the_window_are_sealed_together_and_arrive_in_order() {
    let mut w = Wire::new(node(1, NetworkKey::OPEN), node(2, NetworkKey::OPEN));
    w.pump(|_, b| Some(b));
    assert!(w.linked());
    // Far more than the 256 KiB window: the pump never reports Writable, so the rest waits.
    let count: u32 = 4000;
    for i in 0..count {
        let mut payload = vec![0u8; 200];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        w.a.handle_input(
            T0,
            Input::Command(Command::Mesh(weft_engine::MeshCommand::Broadcast {
                payload: payload.into(),
            })),
        )
        .unwrap();
    }
    let before = w.a_to_b.len();
    w.pump(|_, b| Some(b));
    let one_by_one = w.a_to_b.len() - before;
    let mut rounds = 0;
    loop {
        let sent = w.a_to_b.len();
        let conn = w.a_conn;
        w.a.handle_input(T0, Input::Writable { conn }).unwrap();
        w.pump(|_, b| Some(b));
        rounds += 1;
        if w.a_to_b.len() == sent || rounds > 100 {
            break;
        }
    }
    let batched = w.a_to_b.len() - before - one_by_one;
    let got: Vec<u32> = w
        .other
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::Mesh(weft_engine::MeshEvent::Broadcast { payload, .. })) => {
                Some(u32::from_be_bytes(payload[..4].try_into().unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), count as usize, "every broadcast arrives");
    assert!(got.windows(2).all(|p| p[0] < p[1]), "in order");
    let after_window = count as usize - one_by_one;
    assert!(
        batched * 20 < after_window,
        "{after_window} frames after the window went in {batched} transmits"
    );
    assert!(w.linked());
}

/// The dialer's HELLO_ACK is sealed alone, never with the frames its new link queues behind
/// it (the digests, which can reach a whole 64 KiB Noise message): the acceptor holds the
/// bytes of an unfinished message against the shared bound on handshake bytes
/// (`handshake_buffered_bytes_max`, SPEC.md §8.4) until the HELLO_ACK in it is whole, so a
/// large one arriving in pieces closed an honest link (`HandshakeBufferFull`), and sooner
/// the more of the bound others' unfinished handshakes held.
#[test]
fn the_hello_ack_is_sealed_alone_so_an_acceptor_never_holds_a_links_first_frames() {
    let mut a = node(1, NetworkKey::OPEN);
    a.handle_input(
        T0,
        Input::WallClock {
            unix_ms: 1_800_000_000_000,
        },
    )
    .unwrap();
    // Enough keys that the table's digest at link up is some KiB.
    for k in 0..5000u32 {
        let set = weft_engine::TableCommand::Set {
            key: format!("key-{k}").into_bytes(),
            value: vec![7u8; 20],
            lease: None,
        };
        a.handle_input(T0, Input::Command(Command::Table(set)))
            .unwrap();
        drain(&mut a);
    }
    let b = node_with(2, |c| c.limits.handshake_buffered_bytes_max = 1024);
    let mut w = Wire::new(a, b);
    // As a driver reads: all a node wrote since the last read at once, the acceptor's
    // reads in pieces of 200 bytes.
    let transmits = |n: &mut Node, other: &mut Vec<Output>| {
        let mut bytes = Vec::new();
        for o in drain(n) {
            match o {
                Output::Transmit { bytes: b, .. } => bytes.extend_from_slice(&b),
                o => other.push(o),
            }
        }
        bytes
    };
    for _ in 0..20 {
        let to_b = transmits(&mut w.a, &mut w.other);
        for piece in to_b.chunks(200) {
            let bytes = Bytes::copy_from_slice(piece);
            let _ = w.b.handle_input(
                T0,
                Input::Received {
                    conn: w.b_conn,
                    bytes,
                },
            );
        }
        let to_a = Bytes::from(transmits(&mut w.b, &mut w.other));
        if !to_a.is_empty() {
            let _ = w.a.handle_input(
                T0,
                Input::Received {
                    conn: w.a_conn,
                    bytes: to_a,
                },
            );
        }
    }
    let full = |o: &Output| matches!(o, Output::Close { reason, .. } if *reason == CloseReason::HandshakeBufferFull);
    assert!(!w.other.iter().any(full));
    assert!(w.linked());
}
