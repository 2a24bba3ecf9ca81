//! One real node against hand-driven fake peers: the handshake, bad input, limits, timers and
//! back-pressure, frame by frame.

mod common;

use bytes::Bytes;
use common::{
    accepted, broadcast_frame, closed, dial, drain, frames_to, hello_sent, node_with, noise, Fake,
    ALL_FAMILIES, T0,
};
use weft_engine::identity::{Role, Transcript};
use weft_engine::protocol::{
    ByeReason, ChordMessage, Code, Family, Message, NetworkId, NodeId, ProtocolError, PublicKey,
};
use weft_engine::{
    CloseReason, Command, ConnId, Duration, Event, Identity, Input, InputError, MeshCommand,
    MeshEvent, MeshRefusal, Misuse, Node, Output, Refusal, SessionRefusal,
};

#[test]
fn handshake_proves_the_key_and_reports_the_peer() {
    let mut node = node_with(|_| {});
    let fake = Fake::new(9, ConnId::inbound(1));
    let out = fake.join(&mut node, T0);
    let frames = frames_to(&out, fake.conn);
    assert_eq!(frames[0].code(), Code::HELLO);
    assert_eq!(frames[1].code(), Code::HELLO_ACK);
    // The node's proof verifies against the fake's nonce.
    let Ok(Message::Hello(h)) = Message::decode(Code::HELLO, &frames[0].payload().unwrap()) else {
        panic!()
    };
    let Ok(Message::HelloAck(ack)) =
        Message::decode(Code::HELLO_ACK, &frames[1].payload().unwrap())
    else {
        panic!()
    };
    let t = Transcript {
        network: fake.network,
        signer_role: Role::Acceptor,
        verifier_key: fake.identity.public_key(),
        verifier_nonce: fake.nonce,
        signer_nonce: h.nonce,
        signer_incarnation: h.incarnation,
    };
    assert!(t.verify(h.public_key, &ack.signature));
    assert!(out.iter().any(|o| matches!(o,
        Output::Event(Event::PeerUp { node: n, restarted: false, .. }) if *n == fake.id())));
    assert_eq!(
        node.links().collect::<Vec<_>>(),
        vec![(fake.id(), fake.conn)]
    );
    let by = node.conn_stats(fake.conn).unwrap().by_protocol;
    assert_eq!((by.session.frames_in, by.session.frames_out), (2, 2));
    let handshake_bytes = fake.hello().len() + fake.ack(&h).len();
    assert_eq!(by.session.bytes_in, handshake_bytes as u64);
    assert_eq!(
        by.mesh.frames_in + by.discovery.frames_out + by.repair.frames_out,
        0
    );
}

#[test]
fn a_forged_proof_is_refused() {
    let mut node = node_with(|_| {});
    let fake = Fake::new(9, ConnId::inbound(1));
    node.handle_input(T0, accepted(fake.conn)).unwrap();
    drain(&mut node);
    fake.send(&mut node, T0, fake.hello());
    // Signs the wrong nonce: a replayed or forged proof.
    let node_key = Identity::from_secret(&node.config().secret_key).public_key();
    fake.send(&mut node, T0, fake.ack_over(node_key, [0; 32]));
    let out = drain(&mut node);
    assert_eq!(closed(&out, fake.conn), Some(CloseReason::BadProof));
    let bye = frames_to(&out, fake.conn);
    assert_eq!(bye.last().unwrap().code(), Code::BYE);
    assert_eq!(node.links().count(), 0);
}

#[test]
fn another_network_is_refused() {
    let mut node = node_with(|_| {});
    let mut fake = Fake::new(9, ConnId::inbound(1));
    fake.network = NetworkId::from_name("elsewhere");
    node.handle_input(T0, accepted(fake.conn)).unwrap();
    fake.send(&mut node, T0, fake.hello());
    let out = drain(&mut node);
    assert_eq!(closed(&out, fake.conn), Some(CloseReason::WrongNetwork));
    let Some(last) = frames_to(&out, fake.conn).pop() else {
        panic!()
    };
    assert_eq!(
        Message::decode(last.code(), &last.payload().unwrap()).unwrap(),
        Message::Bye(ByeReason::WrongNetwork)
    );
}

#[test]
fn messages_out_of_order_close_the_connection() {
    for bytes in [
        broadcast_frame(NodeId([1; 32]), 1, b"early"),
        Fake::new(3, ConnId::inbound(1)).ack_over(PublicKey([0; 32]), [0; 32]),
    ] {
        let mut node = node_with(|_| {});
        let conn = ConnId::inbound(1);
        node.handle_input(T0, accepted(conn)).unwrap();
        node.handle_input(T0, Input::Received { conn, bytes })
            .unwrap();
        let out = drain(&mut node);
        assert!(matches!(
            closed(&out, conn),
            Some(CloseReason::UnexpectedMessage(_))
        ));
    }
    // A second HELLO after the handshake.
    let mut node = node_with(|_| {});
    let fake = Fake::new(9, ConnId::inbound(1));
    fake.join(&mut node, T0);
    fake.send(&mut node, T0, fake.hello());
    let out = drain(&mut node);
    assert!(matches!(
        closed(&out, fake.conn),
        Some(CloseReason::UnexpectedMessage(_))
    ));
}

#[test]
fn garbage_closes_only_its_connection_and_the_node_carries_on() {
    let mut node = node_with(|_| {});
    let good = Fake::new(9, ConnId::inbound(1));
    let bad = Fake::new(8, ConnId::inbound(2));
    let other = Fake::new(7, ConnId::inbound(3));
    good.join(&mut node, T0);
    other.join(&mut node, T0);
    bad.join(&mut node, T0);
    type Expect = fn(&CloseReason) -> bool;
    let cases: Vec<(Bytes, Expect)> = vec![
        (
            Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 1]),
            |r| {
                matches!(
                    r,
                    CloseReason::Protocol(ProtocolError::FrameTooLarge { .. })
                )
            },
        ),
        (Bytes::from_static(&[0, 0, 0, 4, 1, 0, 0x77, 0x77]), |r| {
            *r == CloseReason::Protocol(ProtocolError::UnknownCommand(0x7777))
        }),
        (
            Bytes::from_static(&[0, 0, 0, 5, 1, 0, 0x01, 0x00, 0xff]),
            |r| {
                matches!(
                    r,
                    CloseReason::Protocol(ProtocolError::MalformedPayload { .. })
                )
            },
        ),
    ];
    for (garbage, expect) in cases {
        let mut node = node_with(|_| {});
        good.join(&mut node, T0);
        bad.join(&mut node, T0);
        bad.send(&mut node, T0, garbage);
        let out = drain(&mut node);
        let reason = closed(&out, bad.conn).expect("bad connection closed");
        assert!(expect(&reason), "{reason:?}");
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Event(Event::ConnectionClosed { .. }))));
        assert!(out.iter().any(|o| matches!(o,
            Output::Event(Event::PeerDown { node: n, .. }) if *n == bad.id())));
        // The good peer still gets service.
        good.send(
            &mut node,
            T0,
            broadcast_frame(NodeId([5; 32]), 1, b"still here"),
        );
        let out = drain(&mut node);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Event(Event::Mesh(MeshEvent::Broadcast { .. })))));
        node.check_invariants().unwrap();
    }
}

#[test]
fn relays_go_to_all_peers_but_the_sender_and_duplicates_are_dropped() {
    let mut node = node_with(|_| {});
    let a = Fake::new(9, ConnId::inbound(1));
    let b = Fake::new(8, ConnId::inbound(2));
    let c = Fake::new(7, ConnId::inbound(3));
    for f in [&a, &b, &c] {
        f.join(&mut node, T0);
    }
    let frame = broadcast_frame(NodeId([5; 32]), 1, b"flood");
    a.send(&mut node, T0, frame.clone());
    let out = drain(&mut node);
    let relayed: Vec<(ConnId, Bytes)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Transmit { conn, bytes } => Some((*conn, bytes.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(relayed.len(), 2);
    assert!(relayed
        .iter()
        .all(|(conn, bytes)| *conn != a.conn && *bytes == frame));
    assert_eq!(
        relayed[0].1.as_ptr(),
        relayed[1].1.as_ptr(),
        "one buffer shared"
    );
    let mesh = |conn| node.conn_stats(conn).unwrap().by_protocol.mesh;
    assert_eq!((mesh(a.conn).frames_in, mesh(b.conn).frames_out), (1, 1));
    assert_eq!(mesh(b.conn).bytes_out, frame.len() as u64);
    // The same broadcast again, from anyone: nothing.
    b.send(&mut node, T0, frame);
    assert!(drain(&mut node).is_empty());
    assert_eq!(node.metrics().mesh.broadcast_duplicates, 1);
    assert_eq!(node.metrics().mesh.broadcasts_received, 2);
}

#[test]
fn received_counters_keep_a_closed_connections_share() {
    let mut node = node_with(|_| {});
    let a = Fake::new(9, ConnId::inbound(1));
    let b = Fake::new(8, ConnId::inbound(2));
    for f in [&a, &b] {
        f.join(&mut node, T0);
    }
    let frame = broadcast_frame(NodeId([5; 32]), 1, b"flood");
    a.send(&mut node, T0, frame.clone());
    drain(&mut node);
    let live = |node: &Node| {
        [a.conn, b.conn]
            .iter()
            .filter_map(|c| node.conn_stats(*c))
            .map(|s| (s.frames_in, s.bytes_in))
            .fold((0, 0), |x, y| (x.0 + y.0, x.1 + y.1))
    };
    let before = node.metrics();
    assert_eq!(
        (
            before.session.frames_received,
            before.session.bytes_received
        ),
        live(&node)
    );
    assert!(before.session.bytes_received >= frame.len() as u64);
    node.handle_input(T0, Input::Closed { conn: a.conn })
        .unwrap();
    drain(&mut node);
    assert!(node.conn_stats(a.conn).is_none());
    let after = node.metrics();
    assert_eq!(
        (after.session.frames_received, after.session.bytes_received),
        (
            before.session.frames_received,
            before.session.bytes_received
        ),
        "a closed connection's frames and bytes still count"
    );
}

#[test]
fn connection_caps_hold() {
    let mut node = node_with(|c| {
        c.limits.inbound_max = 2;
        c.limits.outbound_max = 1;
    });
    for n in 1..=3 {
        node.handle_input(T0, accepted(ConnId::inbound(n))).unwrap();
    }
    let out = drain(&mut node);
    // None has proven anything: the oldest makes room for the newest (SPEC.md §8.4).
    assert_eq!(
        closed(&out, ConnId::inbound(1)),
        Some(CloseReason::TooManyConnections)
    );
    let bye = frames_to(&out, ConnId::inbound(1));
    assert_eq!(
        Message::decode(Code::BYE, &bye[bye.len() - 1].payload().unwrap()).unwrap(),
        Message::Bye(ByeReason::TooManyConnections),
        "the closed peer is told why"
    );
    assert_eq!(closed(&out, ConnId::inbound(2)), None);
    assert_eq!(closed(&out, ConnId::inbound(3)), None);
    node.handle_input(T0, Input::Command(Command::Connect { addr: "x".into() }))
        .unwrap();
    assert_eq!(
        node.handle_input(T0, Input::Command(Command::Connect { addr: "y".into() })),
        Err(InputError::Refused(Refusal::Session(
            SessionRefusal::TooManyConnections
        )))
    );
}

#[test]
fn driver_misuse_is_an_error_not_a_panic() {
    let mut node = node_with(|_| {});
    let ghost = ConnId::inbound(7);
    assert_eq!(
        node.handle_input(T0, Input::Writable { conn: ghost }),
        Err(InputError::Misuse(Misuse::UnknownConn(ghost)))
    );
    assert_eq!(
        node.handle_input(
            T0,
            Input::Received {
                conn: ghost,
                bytes: Bytes::new()
            }
        ),
        Err(InputError::Misuse(Misuse::UnknownConn(ghost)))
    );
    assert_eq!(
        node.handle_input(T0, accepted(ConnId(2))),
        Err(InputError::Misuse(Misuse::BadInboundId(ConnId(2))))
    );
    assert_eq!(
        node.handle_input(T0, Input::Connected { conn: ConnId(2) }),
        Err(InputError::Misuse(Misuse::NotDialing(ConnId(2))))
    );
    let big = Bytes::from(vec![0u8; node.config().limits.broadcast_payload_max + 1]);
    assert!(matches!(
        node.handle_input(
            T0,
            Input::Command(Command::Mesh(MeshCommand::Broadcast { payload: big }))
        ),
        Err(InputError::Refused(Refusal::Mesh(
            MeshRefusal::PayloadTooLarge { .. }
        )))
    ));
}

#[test]
fn timeouts_early_or_twice_do_nothing_and_never_lie_in_the_past() {
    let mut node = node_with(|_| {});
    let fake = Fake::new(9, ConnId::inbound(1));
    fake.join(&mut node, T0);
    let deadline = node.poll_timeout().unwrap();
    assert!(deadline > T0);
    node.handle_timeout(deadline - Duration(1));
    assert!(drain(&mut node).is_empty(), "early");
    assert_eq!(node.poll_timeout(), Some(deadline));
    node.handle_timeout(deadline);
    drain(&mut node);
    let next = node.poll_timeout().unwrap();
    assert!(next > deadline);
    node.handle_timeout(deadline);
    assert!(drain(&mut node).is_empty(), "twice");
    // An input far in the future runs the due timers first: no deadline is left behind.
    let late = deadline + Duration::from_secs(3);
    node.handle_input(
        late,
        Input::WallClock {
            unix_ms: 1_700_000_000_000,
        },
    )
    .unwrap();
    assert!(node.poll_timeout().unwrap() > late);
    assert_eq!(
        node.wall_clock_ms(late + Duration::from_millis(250)),
        Some(1_700_000_000_250)
    );
}

#[test]
fn a_silent_peer_is_pinged_then_dropped() {
    let mut node = node_with(|_| {});
    let fake = Fake::new(9, ConnId::inbound(1));
    let timers = node.config().timers.clone();
    fake.join(&mut node, T0);
    let mut now = T0;
    let mut outputs = Vec::new();
    while now < T0 + timers.peer_timeout + timers.tick {
        now = node.poll_timeout().unwrap();
        node.handle_timeout(now);
        outputs.extend(drain(&mut node));
        // The driver writes everything at once.
        node.handle_input(now, Input::Writable { conn: fake.conn })
            .ok();
    }
    let codes: Vec<Code> = frames_to(&outputs, fake.conn)
        .iter()
        .map(|f| f.code())
        .collect();
    assert!(codes.contains(&Code::PING), "{codes:?}");
    assert_eq!(codes.last(), Some(&Code::BYE));
    assert_eq!(closed(&outputs, fake.conn), Some(CloseReason::Timeout));
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Event(Event::PeerDown {
            reason: CloseReason::Timeout,
            ..
        })
    )));
}

#[test]
fn an_unfinished_handshake_times_out() {
    let mut node = node_with(|_| {});
    node.handle_input(T0, accepted(ConnId::inbound(1))).unwrap();
    let end = T0 + node.config().timers.handshake_timeout + Duration::from_secs(1);
    let mut out = Vec::new();
    while let Some(t) = node.poll_timeout().filter(|t| *t <= end) {
        node.handle_timeout(t);
        out.extend(drain(&mut node));
    }
    assert_eq!(
        closed(&out, ConnId::inbound(1)),
        Some(CloseReason::HandshakeTimeout)
    );
}

#[test]
fn a_peer_that_never_reads_costs_bounded_memory() {
    let relay_max = 64 * 1024;
    let hard_max = 256 * 1024;
    let mut node = node_with(|c| {
        c.limits.relay_queue_bytes_max = relay_max;
        c.limits.send_queue_bytes_max = hard_max;
        c.limits.transmit_window_bytes = 16 * 1024;
    });
    let source = Fake::new(9, ConnId::inbound(1));
    let sink = Fake::new(8, ConnId::inbound(2));
    let reader = Fake::new(7, ConnId::inbound(3));
    for f in [&source, &sink, &reader] {
        f.join(&mut node, T0);
    }
    let payload = vec![0x5a; 1000];
    let mut to_reader = 0;
    for seq in 1..=2000 {
        source.send(
            &mut node,
            T0,
            broadcast_frame(NodeId([4; 32]), seq, &payload),
        );
        for o in drain(&mut node) {
            if let Output::Transmit { conn, .. } = o {
                if conn == reader.conn {
                    to_reader += 1;
                    node.handle_input(T0, Input::Writable { conn }).unwrap();
                }
            }
        }
        let stats = node.conn_stats(sink.conn).unwrap();
        assert!(stats.queued_bytes <= relay_max);
        assert!(stats.in_flight_bytes <= 16 * 1024 + 1100);
    }
    assert_eq!(to_reader, 2000, "the reading peer got every relay");
    let dropped = node.conn_stats(sink.conn).unwrap().relays_dropped;
    assert!(
        dropped > 1900,
        "relays to the stalled peer dropped and counted: {dropped}"
    );
    assert_eq!(node.metrics().session.relays_dropped, dropped);
    // Broadcasts the node originates are never dropped: past the hard bound the peer goes.
    let mut reason = None;
    for round in 0..400 {
        // Incompressible, so the queue fills at the full size.
        let payload = Bytes::from(noise(1000, round + 1));
        node.handle_input(
            T0,
            Input::Command(Command::Mesh(MeshCommand::Broadcast { payload })),
        )
        .unwrap();
        for o in drain(&mut node) {
            match o {
                Output::Close { conn, reason: r } if conn == sink.conn => reason = Some(r),
                Output::Transmit { conn, .. } if conn == reader.conn => {
                    node.handle_input(T0, Input::Writable { conn }).unwrap();
                }
                _ => {}
            }
        }
        assert!(node.conn_stats(sink.conn).unwrap().queued_bytes <= hard_max);
    }
    assert_eq!(reason, Some(CloseReason::SlowPeer));
    assert!(
        node.links().any(|(n, _)| n == reader.id()),
        "the reader stays"
    );
}

#[test]
fn heard_of_peers_are_bounded_and_dialed_at_a_bounded_rate() {
    use weft_engine::protocol::{CascadeId, IKnowAbout, PeerInfo};
    let mut node = node_with(|c| {
        c.discovery = true;
        c.limits.heard_of_max = 16;
    });
    let fake = Fake::new(9, ConnId::inbound(1));
    fake.join(&mut node, T0);
    for batch in 0..3u8 {
        let peers = (0..50u8)
            .map(|i| PeerInfo {
                node: NodeId([batch * 64 + i + 1; 32]),
                addr: format!("10.0.{batch}.{i}:1"),
            })
            .collect();
        let msg = Message::IKnowAbout(IKnowAbout {
            cascade: CascadeId {
                origin: fake.id(),
                seq: u64::from(batch),
            },
            hops_left: 0,
            peers,
        });
        fake.send(&mut node, T0, msg.to_frame(true).into_bytes());
    }
    drain(&mut node);
    assert!(node.hosts().len() <= 16 + 1, "{} hosts", node.hosts().len());
    let timers = node.config().timers.clone();
    let end = T0 + Duration::from_secs(10);
    let mut dials = 0;
    let mut now = T0;
    while let Some(t) = node.poll_timeout().filter(|t| *t <= end) {
        now = t;
        node.handle_timeout(now);
        for o in drain(&mut node) {
            match o {
                Output::Connect { conn, .. } => {
                    dials += 1;
                    node.handle_input(now, Input::ConnectFailed { conn })
                        .unwrap();
                }
                Output::Transmit { conn, .. } => {
                    node.handle_input(now, Input::Writable { conn }).unwrap();
                }
                _ => {}
            }
        }
        // Keep the fake peer alive.
        fake.send(
            &mut node,
            now,
            Message::Pong(weft_engine::protocol::Pong { nonce: 0 })
                .to_frame(false)
                .into_bytes(),
        );
    }
    let max = 10_000 / timers.dial_interval.as_millis();
    assert!(dials >= 5 && dials <= max, "{dials} dials in 10 s");
    assert_eq!(node.metrics().session.discovery_dials, dials);
    let _ = now;
}

#[test]
fn a_relay_larger_than_the_relay_bound_still_travels_on_an_idle_link() {
    let mut node = node_with(|c| c.limits.relay_queue_bytes_max = 64 * 1024);
    let a = Fake::new(9, ConnId::inbound(1));
    let b = Fake::new(8, ConnId::inbound(2));
    a.join(&mut node, T0);
    b.join(&mut node, T0);
    let big = noise(200_000, 7);
    a.send(&mut node, T0, broadcast_frame(NodeId([3; 32]), 1, &big));
    let out = drain(&mut node);
    assert_eq!(frames_to(&out, b.conn).len(), 1, "relayed whole");
    assert_eq!(node.metrics().session.relays_dropped, 0);
}

#[test]
fn after_shutdown_there_is_no_deadline_and_commands_are_refused() {
    let mut node = node_with(|_| {});
    let fake = Fake::new(9, ConnId::inbound(1));
    fake.join(&mut node, T0);
    node.handle_input(T0, Input::Command(Command::Shutdown))
        .unwrap();
    let out = drain(&mut node);
    assert_eq!(frames_to(&out, fake.conn).last().unwrap().code(), Code::BYE);
    assert_eq!(closed(&out, fake.conn), Some(CloseReason::Shutdown));
    assert_eq!(
        node.poll_timeout(),
        None,
        "a driver following the contract must not spin"
    );
    assert_eq!(
        node.handle_input(T0, Input::Command(Command::Connect { addr: "x".into() })),
        Err(InputError::Refused(Refusal::Session(
            SessionRefusal::ShutDown
        )))
    );
}

#[test]
fn connected_for_a_dial_the_node_already_gave_up_on_is_not_an_error() {
    let mut node = node_with(|_| {});
    let conn = dial(&mut node, T0, "slow");
    // The driver reports success only after the handshake timeout: the timers run first in
    // this very call and close the dial; the late Connected is then ignored, not refused.
    let late = T0 + node.config().timers.handshake_timeout + Duration::from_secs(2);
    assert_eq!(node.handle_input(late, Input::Connected { conn }), Ok(()));
    let out = drain(&mut node);
    assert_eq!(closed(&out, conn), Some(CloseReason::HandshakeTimeout));
}

#[test]
fn a_link_that_replaces_a_dead_one_to_the_same_peer_repairs_over_the_new_one() {
    let mut node = node_with(|_| {});
    let first = Fake::new(9, ConnId::inbound(1));
    first.join(&mut node, T0);
    node.handle_input(
        T0,
        Input::Command(Command::Mesh(MeshCommand::Broadcast {
            payload: Bytes::from_static(b"held for repair"),
        })),
    )
    .unwrap();
    drain(&mut node);
    // The same peer (same key, same run) reconnects: its new link wins the tie-break
    // (higher dialer nonce) and replaces the old one, which may have died with data in flight.
    let mut again = Fake::new(9, ConnId::inbound(2));
    again.nonce = [0xff; 32];
    let out = again.join(&mut node, T0);
    assert_eq!(closed(&out, first.conn), Some(CloseReason::DuplicateLink));
    let codes: Vec<Code> = frames_to(&out, again.conn)
        .iter()
        .map(|f| f.code())
        .collect();
    assert!(codes.contains(&Code::MESH_DIGEST), "{codes:?}");
    assert!(
        !out.iter()
            .any(|o| matches!(o, Output::Event(Event::PeerUp { .. }))),
        "same run of the peer: no second PeerUp"
    );
}

#[test]
fn a_node_announces_its_families_and_refuses_frames_of_any_other() {
    let mut node = node_with(|_| {});
    let fake = Fake::new(9, ConnId::inbound(1));
    let out = fake.join(&mut node, T0);
    let h = hello_sent(&out, fake.conn);
    let run = Family::Session.bit()
        | Family::Mesh.bit()
        | Family::Table.bit()
        | Family::Replication.bit()
        | Family::Drops.bit()
        | Family::Remote.bit();
    assert_eq!(h.families, run, "no Chord without Config::chord");
    assert_eq!(h.dedicated, None);
    let find = Message::Chord(ChordMessage::GetState(1)).to_frame(false);
    fake.send(&mut node, T0, find.into_bytes());
    assert_eq!(
        closed(&drain(&mut node), fake.conn),
        Some(CloseReason::UnexpectedMessage(
            "a message of a family this node does not run"
        ))
    );
}

#[test]
fn a_dedicated_connection_for_a_family_the_node_does_not_run_is_refused() {
    let mut node = node_with(|_| {});
    let fake = Fake::new(9, ConnId::inbound(1));
    node.handle_input(T0, accepted(fake.conn)).unwrap();
    drain(&mut node);
    let chord = Some(Family::Chord.high_byte());
    fake.send(&mut node, T0, fake.hello_with(0b1001, chord));
    assert!(matches!(
        closed(&drain(&mut node), fake.conn),
        Some(CloseReason::UnexpectedMessage(_))
    ));
}

#[test]
fn a_node_that_shut_down_wants_no_more_timeouts() {
    let mut node = node_with(|_| {});
    node.handle_timeout(T0);
    assert!(node.poll_timeout().is_some());
    node.handle_input(T0, Input::Command(Command::Shutdown))
        .unwrap();
    assert_eq!(node.poll_timeout(), None);
}

/// A large frame on a slow link takes longer than `peer_timeout` to arrive: its bytes keep
/// the link alive (a sender cannot slip a PING in front of a frame under way).
#[test]
fn a_frame_arriving_slower_than_the_peer_timeout_keeps_its_link() {
    let mut node = node_with(|_| {});
    let slow = Fake::new(9, ConnId::inbound(1));
    let timers = node.config().timers.clone();
    slow.join(&mut node, T0);
    drain(&mut node);
    let frame = broadcast_frame(NodeId([5; 32]), 1, &vec![7u8; 200_000]);
    let pieces = 10;
    let step = Duration::from_millis(timers.peer_timeout.as_millis() / 3);
    let mut now = T0;
    let mut out = Vec::new();
    for i in 0..pieces {
        let part = frame.slice(frame.len() * i / pieces..frame.len() * (i + 1) / pieces);
        let until = now + step;
        while let Some(t) = node.poll_timeout().filter(|t| *t <= until) {
            node.handle_timeout(t);
            out.extend(drain(&mut node));
            node.handle_input(t, Input::Writable { conn: slow.conn })
                .ok();
        }
        now = until;
        slow.send(&mut node, now, part);
        out.extend(drain(&mut node));
    }
    assert!(now > T0 + Duration::from_millis(timers.peer_timeout.as_millis() * 2));
    assert_eq!(closed(&out, slow.conn), None);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Event(Event::Mesh(MeshEvent::Broadcast { .. })))));
}

/// Only the dialer says a connection is dedicated (SPEC.md §6.2): an acceptor that answers a
/// plain dial with `dedicated` set does not turn it into a dedicated connection (which left
/// the address counted as being dialed, never dialed again).
#[test]
fn an_acceptors_dedicated_field_does_not_turn_a_dial_into_a_dedicated_connection() {
    let mut node = node_with(|_| {});
    let conn = dial(&mut node, T0, "peer");
    node.handle_input(T0, Input::Connected { conn }).unwrap();
    let node_hello = hello_sent(&drain(&mut node), conn);
    let acceptor = Fake::new(9, conn);
    let mesh = Family::Mesh.high_byte();
    acceptor.send(&mut node, T0, acceptor.hello_with(ALL_FAMILIES, Some(mesh)));
    acceptor.send(&mut node, T0, acceptor.ack(&node_hello));
    let out = drain(&mut node);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Event(Event::PeerUp { .. }))),
        "a link"
    );
    assert_eq!(node.links().count(), 1);
    assert_eq!(node.dedicated_family(conn), None);
}

/// A new link's first frame can come in the same read as the HELLO_ACK that establishes it,
/// before the protocols hear of the link: a drops message there is still a linked peer's,
/// taken and answered (it was ignored as a stranger's on a dedicated connection would be).
#[test]
fn a_drop_subscribe_in_the_read_that_links_is_answered() {
    use weft_engine::protocol::{DropMessage, DropSubscribe};
    let mut node = node_with(|_| {});
    node.handle_timeout(T0);
    drain(&mut node);
    let create = Command::Drops(weft_engine::drops::DropsCommand::Create);
    node.handle_input(T0, Input::Command(create)).unwrap();
    drain(&mut node);
    let drop = *node.drop_ids().next().expect("the drop created");
    let fake = Fake::new(9, ConnId::inbound(1));
    node.handle_input(T0, accepted(fake.conn)).unwrap();
    let node_hello = hello_sent(&drain(&mut node), fake.conn);
    let with_drops = ALL_FAMILIES | Family::Drops.bit();
    fake.send(&mut node, T0, fake.hello_with(with_drops, None));
    drain(&mut node);
    let subscribe = Message::Drop(DropMessage::Subscribe(DropSubscribe { drop }));
    let mut read = fake.ack(&node_hello).to_vec();
    read.extend_from_slice(&subscribe.to_frame(false).into_bytes());
    fake.send(&mut node, T0, Bytes::from(read));
    let out = drain(&mut node);
    assert_eq!(closed(&out, fake.conn), None);
    assert!(
        frames_to(&out, fake.conn)
            .iter()
            .any(|f| f.code() == Code::DROP_HEADS),
        "the subscriber is told the heads"
    );
}

/// Runs travel over links alone (SPEC.md §23.3): a RUN_REQUEST on a dedicated connection of
/// the runs family, even from a peer the runner takes requests from, starts nothing and is
/// not answered (a lost link kills a run; such a peer has no link, so its run was never
/// killed). The same request over a link is answered.
#[test]
fn a_run_asked_on_a_dedicated_connection_starts_nothing() {
    use weft_engine::protocol::{RunMessage, RunRequest};
    let dedicated = Fake::new(9, ConnId::inbound(1));
    let linked = Fake::new(10, ConnId::inbound(2));
    let allowed = vec![dedicated.id(), linked.id()];
    let mut node = node_with(|c| {
        c.run.allow = true;
        c.run.allow_from = allowed;
    });
    node.handle_timeout(T0);
    drain(&mut node);
    let request = Message::Run(RunMessage::Request(RunRequest {
        run: 1,
        program: "true".into(),
        args: Vec::new(),
        shell: false,
        folder: None,
    }))
    .to_frame(false)
    .into_bytes();
    let spawns = |out: &[Output]| {
        out.iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Request {
                        request: weft_engine::HostRequest::Process { .. },
                        ..
                    }
                )
            })
            .count()
    };
    let with_runs = ALL_FAMILIES | Family::Remote.bit();
    node.handle_input(T0, accepted(dedicated.conn)).unwrap();
    let node_hello = hello_sent(&drain(&mut node), dedicated.conn);
    let family = Some(Family::Remote.high_byte());
    dedicated.send(&mut node, T0, dedicated.hello_with(with_runs, family));
    dedicated.send(&mut node, T0, dedicated.ack(&node_hello));
    drain(&mut node);
    dedicated.send(&mut node, T0, request.clone());
    let out = drain(&mut node);
    assert_eq!(closed(&out, dedicated.conn), None);
    assert_eq!(spawns(&out), 0, "nothing started");
    assert!(
        frames_to(&out, dedicated.conn).is_empty(),
        "nothing answered"
    );

    node.handle_input(T0, accepted(linked.conn)).unwrap();
    let node_hello = hello_sent(&drain(&mut node), linked.conn);
    linked.send(&mut node, T0, linked.hello_with(with_runs, None));
    linked.send(&mut node, T0, linked.ack(&node_hello));
    drain(&mut node);
    linked.send(&mut node, T0, request);
    // Answered over a link: refused here, as these links are plaintext (a run asks for an
    // encrypted link), where the dedicated connection's got no answer at all.
    let out = drain(&mut node);
    assert!(frames_to(&out, linked.conn)
        .iter()
        .any(|f| f.code() == Code::RUN_REFUSED));
}
