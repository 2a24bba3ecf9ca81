//! Issue 14, the session's part: the handshake relay attack, the broadcast-signing mode in
//! HELLO, the bounds on connections before the handshake, and discovery's dialing bounds.

mod common;

use bytes::Bytes;
use common::{accepted, closed, drain, frames_to, node_with, Fake, ALL_FAMILIES, T0};
use weft_engine::protocol::{
    ByeReason, CascadeId, Code, Family, Frame, Hello, IKnowAbout, Message, NodeId, PeerInfo,
    ProtocolError, CAP_BROADCASTS_UNSIGNED, HANDSHAKE_FRAME_BYTES_MAX,
};
use weft_engine::{
    CloseReason, Command, Config, ConnId, Duration, Event, Input, Instant, Node, Output,
};

/// The HELLO a node sent on `conn`.
fn hello_sent(out: &[Output], conn: ConnId) -> (Bytes, Hello) {
    let frame = frames_to(out, conn)
        .into_iter()
        .find(|f| f.code() == Code::HELLO)
        .expect("a HELLO");
    let Ok(Message::Hello(h)) = Message::decode(Code::HELLO, &frame.payload().unwrap()) else {
        panic!("not a HELLO");
    };
    (frame.bytes().clone(), h)
}

/// The HELLO_ACK frame a node sent on `conn`.
fn ack_sent(out: &[Output], conn: ConnId) -> Option<Bytes> {
    frames_to(out, conn)
        .into_iter()
        .find(|f| f.code() == Code::HELLO_ACK)
        .map(|f| f.bytes().clone())
}

fn receive(node: &mut Node, conn: ConnId, bytes: Bytes) {
    node.handle_input(T0, Input::Received { conn, bytes })
        .unwrap();
}

fn peer_up_for(out: &[Output], who: NodeId) -> bool {
    out.iter()
        .any(|o| matches!(o, Output::Event(Event::PeerUp { node, .. }) if *node == who))
}

/// Issue 14 point 1, scripted as the attack run did it. M (its own key) reads A's HELLO nonce
/// `a`, sends B a HELLO with nonce `a`, gets B's HELLO (nonce `b`) and B's HELLO_ACK over `a`
/// and `b`, then sends A a HELLO with B's key, nonce `b` (and an address of its choosing) and
/// B's HELLO_ACK. `a_dials`: A dialed M (else M dialed A); B always accepts M.
fn relay_attack(a_dials: bool) -> (Vec<Output>, NodeId, Node) {
    // Plain links: this is the frame-level attack; `noise.rs` replays it against Noise.
    let plain = |seed| {
        move |c: &mut Config| {
            *c = Config::from_seed("raw", seed);
            c.link_encryption = weft_engine::LinkEncryption::PlaintextSimulationOnly;
        }
    };
    let mut a = node_with(plain(1));
    let mut b = node_with(plain(2));
    for n in [&mut a, &mut b] {
        drain(n);
    }
    let m = Fake::new(77, ConnId::inbound(1));
    // A's side: A's HELLO to M, nonce `a`.
    let a_conn = if a_dials {
        a.handle_input(T0, Input::Command(Command::Connect { addr: "m:1".into() }))
            .unwrap();
        a.handle_input(T0, Input::Connected { conn: ConnId(2) })
            .unwrap();
        ConnId(2)
    } else {
        a.handle_input(T0, accepted(ConnId::inbound(1))).unwrap();
        ConnId::inbound(1)
    };
    let (_, a_hello) = hello_sent(&drain(&mut a), a_conn);
    // B's side: M connects with its own key but A's nonce.
    b.handle_input(T0, accepted(m.conn)).unwrap();
    let mut m_to_b = m.hello();
    let Ok(Message::Hello(mut h)) = Message::decode(Code::HELLO, &m_to_b[8..]) else {
        panic!()
    };
    h.nonce = a_hello.nonce;
    m_to_b = Message::Hello(h).to_frame(false).into_bytes();
    receive(&mut b, m.conn, m_to_b);
    let b_out = drain(&mut b);
    let (_, b_hello) = hello_sent(&b_out, m.conn);
    let b_ack = ack_sent(&b_out, m.conn).expect("B answers M's HELLO with its proof");
    // Back to A: B's key and nonce, an address of M's choosing, then B's proof.
    let mut forged = b_hello.clone();
    forged.listen_addr = Some("m:1".into());
    receive(
        &mut a,
        a_conn,
        Message::Hello(forged).to_frame(false).into_bytes(),
    );
    receive(&mut a, a_conn, b_ack);
    let out = drain(&mut a);
    (out, b.node_id(), a)
}

#[test]
fn a_relayed_hello_ack_does_not_pass_as_its_signer() {
    for a_dials in [false, true] {
        let (out, b_id, a) = relay_attack(a_dials);
        let a_conn = if a_dials {
            ConnId(2)
        } else {
            ConnId::inbound(1)
        };
        assert!(
            !peer_up_for(&out, b_id),
            "A linked to B through M (A dialed: {a_dials})"
        );
        assert_eq!(
            closed(&out, a_conn),
            Some(CloseReason::BadProof),
            "A dialed: {a_dials}"
        );
        assert_eq!(a.links().count(), 0);
        assert!(a.hosts().iter().all(|h| h.node != b_id), "no address for B");
    }
}

/// A real HELLO frame of a fake with a long address, a valid frame of at most the HELLO bound.
fn long_hello(fake: &Fake) -> Bytes {
    Message::Hello(Hello {
        network: fake.network,
        public_key: fake.identity.public_key(),
        nonce: fake.nonce,
        incarnation: 1,
        listen_addr: Some("x".repeat(250)),
        capabilities: 0,
        families: ALL_FAMILIES,
        dedicated: None,
    })
    .to_frame(false)
    .into_bytes()
}

#[test]
fn a_frame_larger_than_a_hello_closes_an_unauthenticated_connection_at_once() {
    let mut node = node_with(|_| {});
    let conn = ConnId::inbound(1);
    node.handle_input(T0, accepted(conn)).unwrap();
    drain(&mut node);
    // The header of a 16 MiB BROADCAST and its first kilobyte: refused on the header.
    let payload = vec![0u8; 16 * 1024 * 1024];
    let big = Frame::build(Code::BROADCAST, &payload, false).into_bytes();
    receive(&mut node, conn, big.slice(..1024));
    let out = drain(&mut node);
    assert!(
        matches!(
            closed(&out, conn),
            Some(CloseReason::Protocol(ProtocolError::FrameTooLarge { .. }))
        ),
        "{:?}",
        closed(&out, conn)
    );
    // And a HELLO-coded frame that claims more than the largest HELLO.
    let conn = ConnId::inbound(2);
    node.handle_input(T0, accepted(conn)).unwrap();
    let mut header = Frame::build(Code::HELLO, &[0u8; 4096], false).into_bytes();
    receive(&mut node, conn, header.split_to(16));
    let out = drain(&mut node);
    assert!(matches!(
        closed(&out, conn),
        Some(CloseReason::Protocol(ProtocolError::FrameTooLarge { .. }))
    ));
    assert_eq!(node.metrics().session.handshake_buffered_bytes_peak, 0);
}

#[test]
fn an_honest_peer_gets_in_past_70_connections_from_one_address() {
    let mut node = node_with(|_| {});
    for n in 1..=70 {
        node.handle_input(
            T0,
            Input::Accepted {
                conn: ConnId::inbound(n),
                addr: format!("192.0.2.66:{}", 40_000 + n),
            },
        )
        .unwrap();
    }
    drain(&mut node);
    let honest = Fake::new(9, ConnId::inbound(100));
    node.handle_input(
        T0,
        Input::Accepted {
            conn: honest.conn,
            addr: "198.51.100.7:5000".into(),
        },
    )
    .unwrap();
    let (_, h) = hello_sent(&drain(&mut node), honest.conn);
    honest.send(&mut node, T0, honest.hello());
    honest.send(&mut node, T0, honest.ack(&h));
    let out = drain(&mut node);
    assert!(peer_up_for(&out, honest.id()), "the honest peer is linked");
    let share = node.config().limits.inbound_per_address_max as u64;
    assert_eq!(
        node.metrics().session.inbound_refused_per_address,
        70 - share
    );
}

#[test]
fn unauthenticated_dedicated_connections_count_against_the_inbound_cap() {
    let mut node = node_with(|c| c.limits.inbound_max = 8);
    let mesh = Family::Mesh.high_byte();
    let mut refused = 0;
    for n in 1..=600u64 {
        let conn = ConnId::inbound(n);
        node.handle_input(
            T0,
            Input::Accepted {
                conn,
                addr: format!("10.0.{}.{}:1", n / 256, n % 256),
            },
        )
        .unwrap();
        // A dedicated connection of a family the node runs, that never proves its key.
        let fake = Fake::new((n % 250) as u8 + 1, conn);
        fake.send(&mut node, T0, fake.hello_with(ALL_FAMILIES, Some(mesh)));
        let out = drain(&mut node);
        refused += out
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Close {
                        reason: CloseReason::TooManyConnections,
                        ..
                    }
                )
            })
            .count();
    }
    assert_eq!(refused, 600 - 8, "only inbound_max stay open");
    node.check_invariants().unwrap();
}

/// At `inbound_max`, the oldest connection that has proven nothing makes room for a new one:
/// idle sockets that never handshake (reopened each `handshake_timeout`) no longer keep
/// every honest peer out.
#[test]
fn idle_unproven_connections_make_room_for_a_peer_that_handshakes() {
    let mut node = node_with(|c| c.limits.inbound_max = 8);
    // A socket accepted from `addr` that sends nothing: the node's outputs.
    let idle = |node: &mut Node, n: u64, addr: String| {
        let conn = ConnId::inbound(n);
        node.handle_input(T0, Input::Accepted { conn, addr })
            .unwrap();
        drain(node)
    };
    for n in 1..=8u64 {
        idle(&mut node, n, format!("10.0.0.{n}:1"));
    }
    let honest = Fake::new(77, ConnId::inbound(100));
    let out = honest.join(&mut node, T0);
    assert_eq!(
        closed(&out, ConnId::inbound(1)),
        Some(CloseReason::TooManyConnections)
    );
    assert_eq!(closed(&out, honest.conn), None);
    assert!(
        out.iter().any(
            |o| matches!(o, Output::Event(Event::PeerUp { node: n, .. }) if *n == honest.id())
        ),
        "the peer that handshakes links"
    );
    assert_eq!(node.metrics().session.inbound_evicted_unproven, 1);
    // A linked peer is never made room from: eight more idle sockets take the seven slots
    // left, evicting only one another.
    for n in 101..=108u64 {
        let out = idle(&mut node, n, format!("10.0.1.{n}:1"));
        assert_eq!(closed(&out, honest.conn), None);
    }
    node.check_invariants().unwrap();
}

/// A fake's HELLO with `capabilities`.
fn hello_with_capabilities(fake: &Fake, capabilities: u32) -> Bytes {
    Message::Hello(Hello {
        network: fake.network,
        public_key: fake.identity.public_key(),
        nonce: fake.nonce,
        incarnation: 1,
        listen_addr: None,
        capabilities,
        families: ALL_FAMILIES,
        dedicated: None,
    })
    .to_frame(false)
    .into_bytes()
}

#[test]
fn nodes_of_the_other_broadcast_signing_mode_are_refused() {
    for signed in [true, false] {
        let mut node = node_with(|c| c.broadcast_signatures = signed);
        // The node announces its own mode.
        let fake = Fake::new(9, ConnId::inbound(1));
        node.handle_input(T0, accepted(fake.conn)).unwrap();
        let (_, h) = hello_sent(&drain(&mut node), fake.conn);
        assert_eq!(h.capabilities & CAP_BROADCASTS_UNSIGNED == 0, signed);
        // A peer of the other mode is refused, with a proof that would verify.
        let other = if signed { CAP_BROADCASTS_UNSIGNED } else { 0 };
        fake.send(&mut node, T0, hello_with_capabilities(&fake, other));
        fake.send(&mut node, T0, fake.ack(&h));
        let out = drain(&mut node);
        assert_eq!(
            closed(&out, fake.conn),
            Some(CloseReason::BroadcastModeMismatch)
        );
        let last = frames_to(&out, fake.conn).pop().unwrap();
        assert_eq!(
            Message::decode(last.code(), &last.payload().unwrap()).unwrap(),
            Message::Bye(ByeReason::WrongNetwork)
        );
        assert!(!peer_up_for(&out, fake.id()));
        // A peer of the same mode is linked.
        let same = Fake::new(10, ConnId::inbound(2));
        node.handle_input(T0, accepted(same.conn)).unwrap();
        let (_, h) = hello_sent(&drain(&mut node), same.conn);
        let mine = if signed { 0 } else { CAP_BROADCASTS_UNSIGNED };
        same.send(&mut node, T0, hello_with_capabilities(&same, mine));
        same.send(&mut node, T0, same.ack(&h));
        assert!(
            peer_up_for(&drain(&mut node), same.id()),
            "signed: {signed}"
        );
    }
}

#[test]
fn bytes_held_before_the_handshake_are_bounded_in_total() {
    let held_max = 1000;
    let mut node = node_with(|c| c.limits.handshake_buffered_bytes_max = held_max);
    let mut refused = Vec::new();
    for n in 1..=6u64 {
        let fake = Fake::new(n as u8, ConnId::inbound(n));
        node.handle_input(T0, accepted(fake.conn)).unwrap();
        // 300 bytes of a HELLO that is valid and within the frame bound, never finished.
        let hello = long_hello(&fake);
        assert!(hello.len() <= HANDSHAKE_FRAME_BYTES_MAX);
        fake.send(&mut node, T0, hello.slice(..300));
        if closed(&drain(&mut node), fake.conn) == Some(CloseReason::HandshakeBufferFull) {
            refused.push(n);
        }
    }
    assert_eq!(
        refused,
        vec![4, 5, 6],
        "three partial HELLOs fit, the rest do not"
    );
    let session = node.metrics().session;
    assert_eq!(session.handshake_buffered_bytes_peak, 900);
    assert_eq!(session.handshake_buffer_closes, 3);
    // An honest peer still gets in: its HELLO arrives whole and leaves nothing held.
    let honest = Fake::new(42, ConnId::inbound(42));
    let out = honest.join(&mut node, T0);
    assert!(peer_up_for(&out, honest.id()));
}

/// Connections that fill the bound with unfinished HELLOs lose themselves, not another
/// peer's handshake whose bytes come split: the one holding the most is closed.
#[test]
fn the_connection_holding_the_most_is_closed_over_the_handshake_bound() {
    let mut node = node_with(|c| c.limits.handshake_buffered_bytes_max = 1000);
    let mut hogs = Vec::new();
    for n in 1..=3u64 {
        let hog = Fake::new(n as u8, ConnId::inbound(n));
        node.handle_input(T0, accepted(hog.conn)).unwrap();
        hog.send(&mut node, T0, long_hello(&hog).slice(..300));
        hogs.push(hog);
    }
    drain(&mut node);
    // An honest peer's HELLO comes in two reads: 1050 bytes held after the first.
    let honest = Fake::new(42, ConnId::inbound(42));
    node.handle_input(T0, accepted(honest.conn)).unwrap();
    let hello = long_hello(&honest);
    honest.send(&mut node, T0, hello.slice(..150));
    let out = drain(&mut node);
    assert_eq!(
        closed(&out, honest.conn),
        None,
        "the honest handshake goes on"
    );
    let closed_hogs: Vec<ConnId> = hogs
        .iter()
        .filter(|h| closed(&out, h.conn) == Some(CloseReason::HandshakeBufferFull))
        .map(|h| h.conn)
        .collect();
    assert_eq!(closed_hogs, vec![ConnId::inbound(3)]);
    honest.send(&mut node, T0, hello.slice(150..));
    let out = drain(&mut node);
    assert_eq!(closed(&out, honest.conn), None);
}

/// An IKNOWABOUT from `from` naming `peers`.
fn iknowabout(from: &Fake, seq: u64, peers: Vec<PeerInfo>) -> Bytes {
    Message::IKnowAbout(IKnowAbout {
        cascade: CascadeId {
            origin: from.id(),
            seq,
        },
        hops_left: 0,
        peers,
    })
    .to_frame(false)
    .into_bytes()
}

/// Runs `node` for `secs` seconds, failing every dial at once; the addresses it dialed.
fn run_failing_dials(
    node: &mut Node,
    from: Instant,
    secs: u64,
    mut each_second: impl FnMut(&mut Node, Instant, u64),
) -> Vec<String> {
    let mut dialed = Vec::new();
    for s in 1..=secs {
        let now = from + Duration::from_secs(s);
        each_second(node, now, s);
        node.handle_timeout(now);
        while let Some(o) = node.poll_output() {
            if let Output::Connect { conn, addr } = o {
                dialed.push(addr);
                node.handle_input(now, Input::ConnectFailed { conn })
                    .unwrap();
            }
        }
    }
    dialed
}

#[test]
fn discovery_dials_one_named_address_a_bounded_number_of_times() {
    let mut node = node_with(|c| c.discovery = true);
    let liar = Fake::new(5, ConnId::inbound(1));
    liar.join(&mut node, T0);
    drain(&mut node);
    // 64 made-up nodes at one victim's address, announced afresh every 10 s for an hour.
    let victim = "203.0.113.9:7946";
    let named = |round: u64| {
        (0..64u8)
            .map(|i| PeerInfo {
                node: NodeId([i.wrapping_add(round as u8); 32]),
                addr: victim.into(),
            })
            .collect::<Vec<_>>()
    };
    let mut seq = 0;
    let dialed = run_failing_dials(&mut node, T0, 3600, |node, now, s| {
        if s % 10 == 1 {
            seq += 1;
            let frame = iknowabout(&liar, seq, named(seq));
            node.handle_input(
                now,
                Input::Received {
                    conn: liar.conn,
                    bytes: frame,
                },
            )
            .unwrap();
        }
    });
    let attempts = node.config().limits.dial_attempts_max;
    let at_victim = dialed.iter().filter(|a| *a == victim).count();
    assert!(at_victim >= 1, "the address is tried");
    // The default `dial_address_attempts_max`; backoff alone would allow 10 in the hour.
    assert_eq!(node.config().limits.dial_address_attempts_max, 8);
    assert!(
        at_victim <= 8,
        "{at_victim} dials of one address in an hour (attempts per node {attempts})"
    );
    assert!(node.metrics().session.discovery_dials_refused > 0);
}

#[test]
fn discovery_dials_of_heard_of_addresses_are_bounded_per_minute() {
    let mut node = node_with(|c| {
        c.discovery = true;
        c.limits.discovery_dials_per_minute = 10;
    });
    let liar = Fake::new(5, ConnId::inbound(1));
    liar.join(&mut node, T0);
    drain(&mut node);
    // 64 nodes at 64 addresses, and 64 more every 10 s.
    let mut seq = 0;
    let dialed = run_failing_dials(&mut node, T0, 120, |node, now, s| {
        if s % 10 == 1 {
            seq += 1;
            let peers = (0..64u64)
                .map(|i| PeerInfo {
                    node: NodeId([(seq * 64 + i) as u8 ^ 0x5a; 32]),
                    addr: format!("198.51.100.{}:{}", i, seq),
                })
                .collect();
            let frame = iknowabout(&liar, seq, peers);
            node.handle_input(
                now,
                Input::Received {
                    conn: liar.conn,
                    bytes: frame,
                },
            )
            .unwrap();
        }
    });
    let per_minute = 10;
    assert!(
        dialed.len() <= 2 * per_minute,
        "{} dials in two minutes",
        dialed.len()
    );
    assert!(dialed.len() >= per_minute, "the budget is used");
}

#[test]
fn chord_only_connections_to_a_node_without_chord_are_refused() {
    let mut node = node_with(|_| {});
    assert!(node.chord().is_none());
    let mut refused = 0;
    for n in 1..=100u64 {
        let fake = Fake::new(n as u8, ConnId::inbound(n));
        node.handle_input(
            T0,
            Input::Accepted {
                conn: fake.conn,
                addr: format!("10.1.0.{n}:1"),
            },
        )
        .unwrap();
        let chord = Some(Family::Chord.high_byte());
        fake.send(&mut node, T0, fake.hello_with(ALL_FAMILIES, chord));
        let out = drain(&mut node);
        if matches!(
            closed(&out, fake.conn),
            Some(CloseReason::UnexpectedMessage(_))
        ) {
            refused += 1;
        }
        assert!(ack_sent(&out, fake.conn).is_none(), "no proof for it");
    }
    assert_eq!(refused, 100);
}

/// SPEC.md §8.4 and §21.6: a connection refused at accept (over its host's share, or after
/// shutdown) gets its BYE only on plaintext links; over Noise no channel exists yet to carry
/// one, and it closes without a byte.
#[test]
fn a_refused_accept_gets_a_bye_only_on_plaintext_links() {
    for noise in [false, true] {
        let mut node = node_with(|c| {
            c.limits.inbound_per_address_max = 1;
            if noise {
                c.link_encryption = weft_engine::LinkEncryption::Noise;
            }
        });
        drain(&mut node);
        node.handle_input(T0, accepted(ConnId::inbound(1))).unwrap();
        drain(&mut node);
        let over_cap = ConnId::inbound(2);
        node.handle_input(T0, accepted(over_cap)).unwrap();
        let out = drain(&mut node);
        assert_eq!(
            closed(&out, over_cap),
            Some(CloseReason::TooManyConnections)
        );
        node.handle_input(T0, Input::Command(Command::Shutdown))
            .unwrap();
        drain(&mut node);
        let after_shutdown = ConnId::inbound(3);
        node.handle_input(T0, accepted(after_shutdown)).unwrap();
        let out_shutdown = drain(&mut node);
        assert_eq!(
            closed(&out_shutdown, after_shutdown),
            Some(CloseReason::Shutdown)
        );
        for (out, conn, reason) in [
            (&out, over_cap, ByeReason::TooManyConnections),
            (&out_shutdown, after_shutdown, ByeReason::Shutdown),
        ] {
            let sent: usize = out
                .iter()
                .filter_map(|o| match o {
                    Output::Transmit { conn: c, bytes } if *c == conn => Some(bytes.len()),
                    _ => None,
                })
                .sum();
            if noise {
                assert_eq!(sent, 0, "{conn:?}: no byte before the Noise channel exists");
            } else {
                let frames = frames_to(out, conn);
                assert_eq!(frames.len(), 1, "{conn:?}: one BYE");
                assert_eq!(
                    Message::decode(Code::BYE, &frames[0].payload().unwrap()).unwrap(),
                    Message::Bye(reason)
                );
            }
        }
        node.check_invariants().unwrap();
    }
}

/// Frames not yet whole are bounded in total, over established links too (SPEC.md §8.4):
/// each link holds at most one frame's worth, but every link the node allows, each sent a
/// frame short of its last byte, held gigabytes. Over the bound the link holding the most
/// is closed; the others go on, and a frame completed after is taken.
#[test]
fn bytes_of_frames_not_yet_whole_are_bounded_in_total() {
    let mut node = node_with(|c| c.limits.frames_buffered_bytes_max = 100_000);
    let fakes: Vec<Fake> = (1..=3u64)
        .map(|n| Fake::new(n as u8, ConnId::inbound(n)))
        .collect();
    for f in &fakes {
        f.join(&mut node, T0);
    }
    let frames: Vec<Bytes> = fakes
        .iter()
        .map(|f| common::signed_broadcast_frame(&f.identity, 1, &common::noise(60_000, 7)))
        .collect();
    let mut out = Vec::new();
    for (f, held) in fakes.iter().zip([40_000, 40_000, 30_000]) {
        f.send(&mut node, T0, frames_part(&frames, f, ..held));
        out.extend(drain(&mut node));
    }
    let reasons: Vec<Option<CloseReason>> = fakes.iter().map(|f| closed(&out, f.conn)).collect();
    assert_eq!(
        reasons,
        [None, Some(CloseReason::FrameBufferFull), None],
        "of the two holding the most, the later is closed"
    );
    let session = node.metrics().session;
    assert_eq!(session.frame_buffer_closes, 1);
    assert_eq!(session.frames_buffered_bytes_peak, 80_000);
    // The first link's frame, completed, is taken (it is relayed to the third).
    let first = &fakes[0];
    first.send(&mut node, T0, frames_part(&frames, first, 40_000..));
    let out = drain(&mut node);
    assert_eq!(closed(&out, first.conn), None);
    let relayed = frames_to(&out, fakes[2].conn);
    assert!(
        relayed.iter().any(|f| f.code() == Code::BROADCAST),
        "{relayed:?}"
    );
}

/// The bytes in `range` of the frame of `fake` among `frames` (one per fake, in order of
/// their seeds).
fn frames_part(frames: &[Bytes], fake: &Fake, range: impl core::ops::RangeBounds<usize>) -> Bytes {
    let at = usize::from(fake.nonce[0]) - 1;
    frames[at].slice(range)
}
