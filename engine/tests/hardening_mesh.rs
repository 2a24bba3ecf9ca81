//! Issue 14, the mesh's part: origin-signed broadcasts (point 8), the per-peer broadcast rate
//! limit (point 8) and a repair store that never pins a read buffer (point 6), driven through
//! fake peers (the raw-peer harness).

mod common;

use bytes::Bytes;
use common::{closed, drain, frames_to, node_with, signed_broadcast_frame, Fake, T0};
use weft_engine::protocol::{Broadcast, Code, Message, NetworkId, NodeId, OriginProof, Signature};
use weft_engine::rate::RateLimit;
use weft_engine::{
    CloseReason, Command, ConnId, Duration, Event, Identity, Input, MeshCommand, MeshEvent, Node,
    Output,
};

fn delivered(out: &[Output]) -> Vec<(NodeId, u64)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(Event::Mesh(MeshEvent::Broadcast { origin, seq, .. })) => {
                Some((*origin, *seq))
            }
            _ => None,
        })
        .collect()
}

/// A broadcast naming `origin`, with `proof` (code BROADCAST or MESH_REPAIR).
fn frame_with(code: Code, origin: NodeId, seq: u64, proof: Option<OriginProof>) -> Bytes {
    let b = Broadcast {
        origin,
        incarnation: 1,
        seq,
        payload: b"pay me",
        proof,
    };
    let msg = if code == Code::BROADCAST {
        Message::Broadcast(b)
    } else {
        Message::MeshRepair(b)
    };
    msg.to_frame(false).into_bytes()
}

/// `signer`'s valid-looking proof over a broadcast that names `origin` (not its own id).
fn proof_by(signer: &Identity, origin: NodeId, seq: u64) -> OriginProof {
    let b = Broadcast {
        origin,
        incarnation: 1,
        seq,
        payload: b"pay me",
        proof: None,
    };
    let mut signed = Vec::new();
    b.signed_message(&NetworkId::from_name("raw"), &mut signed);
    OriginProof {
        public_key: signer.public_key(),
        signature: signer.sign(&signed),
    }
}

#[test]
fn a_broadcast_with_a_forged_origin_is_dropped_counted_and_its_relay_disconnected() {
    let victim = Identity::from_secret(&[0x42; 32]);
    let forger = Fake::new(9, ConnId::inbound(1));
    let forgeries = [
        // The forger's own key and signature, naming the victim as origin.
        Some(proof_by(&forger.identity, victim.node_id(), 1)),
        // The victim's key with a signature it did not make.
        Some(OriginProof {
            public_key: victim.public_key(),
            signature: proof_by(&forger.identity, victim.node_id(), 1).signature,
        }),
        Some(OriginProof {
            public_key: victim.public_key(),
            signature: Signature([7; 64]),
        }),
        // No proof at all.
        None,
    ];
    for code in [Code::BROADCAST, Code::MESH_REPAIR] {
        for proof in forgeries {
            let mut node = node_with(|_| {});
            let forger = Fake::new(9, ConnId::inbound(1));
            let honest = Fake::new(8, ConnId::inbound(2));
            let watcher = Fake::new(7, ConnId::inbound(3));
            for f in [&forger, &honest, &watcher] {
                f.join(&mut node, T0);
            }
            drain(&mut node);
            forger.send(&mut node, T0, frame_with(code, victim.node_id(), 1, proof));
            let out = drain(&mut node);
            assert_eq!(delivered(&out), [], "{code:?} {proof:?}: not delivered");
            assert!(
                frames_to(&out, watcher.conn).is_empty(),
                "{code:?}: not relayed"
            );
            assert_eq!(closed(&out, forger.conn), Some(CloseReason::BadSignature));
            let mesh = node.metrics().mesh;
            assert_eq!(mesh.broadcasts_forged, 1);
            assert_eq!(mesh.broadcasts_delivered, 0);
            // The real broadcast with the same (origin, incarnation, seq) still gets through:
            // the forgery was not recorded as seen.
            honest.send(&mut node, T0, signed_broadcast_frame(&victim, 1, b"pay me"));
            let out = drain(&mut node);
            assert_eq!(delivered(&out), [(victim.node_id(), 1)]);
            assert_eq!(frames_to(&out, watcher.conn).len(), 1, "relayed");
            assert_eq!(closed(&out, honest.conn), None);
            node.check_invariants().unwrap();
        }
    }
}

#[test]
fn an_originated_broadcast_carries_a_proof_of_its_origin_only_when_signatures_are_on() {
    for signatures in [true, false] {
        let mut node = node_with(|c| c.broadcast_signatures = signatures);
        let peer = Fake::new(9, ConnId::inbound(1));
        peer.join(&mut node, T0);
        drain(&mut node);
        node.handle_input(
            T0,
            Input::Command(Command::Mesh(MeshCommand::Broadcast {
                payload: Bytes::from_static(b"mine"),
            })),
        )
        .unwrap();
        let frames = frames_to(&drain(&mut node), peer.conn);
        assert_eq!(frames.len(), 1);
        let payload = frames[0].payload().unwrap();
        let Ok(Message::Broadcast(b)) = Message::decode(Code::BROADCAST, &payload) else {
            panic!("not a broadcast");
        };
        assert_eq!(b.origin, node.node_id());
        match b.proof {
            Some(p) => {
                assert!(signatures);
                assert_eq!(NodeId::from_public_key(&p.public_key), node.node_id());
                let mut signed = Vec::new();
                b.signed_message(&NetworkId::from_name("raw"), &mut signed);
                assert!(weft_engine::identity::verify_signature(
                    &p.public_key,
                    &signed,
                    &p.signature
                ));
            }
            None => {
                assert!(!signatures);
                assert_eq!(payload.last(), Some(&0), "the proof tag 00 ends it");
            }
        }
    }
}

#[test]
fn with_signatures_off_a_broadcast_is_taken_on_trust() {
    let mut node = node_with(|c| c.broadcast_signatures = false);
    let peer = Fake::new(9, ConnId::inbound(1));
    peer.join(&mut node, T0);
    drain(&mut node);
    let anyone = NodeId([0x55; 32]);
    peer.send(&mut node, T0, frame_with(Code::BROADCAST, anyone, 1, None));
    let out = drain(&mut node);
    assert_eq!(delivered(&out), [(anyone, 1)]);
    assert_eq!(closed(&out, peer.conn), None);
    assert_eq!(node.metrics().mesh.broadcasts_forged, 0);
}

fn rate_limited_node() -> Node {
    node_with(|c| {
        c.limits.broadcast_rate_per_peer = RateLimit {
            per_second: 100,
            burst: 100,
        };
        c.limits.broadcast_excess_per_peer = RateLimit {
            per_second: 10,
            burst: 50,
        };
    })
}

#[test]
fn a_peer_over_its_broadcast_rate_is_dropped_counted_then_disconnected() {
    let mut node = rate_limited_node();
    let flooder = Fake::new(9, ConnId::inbound(1));
    let sink = Fake::new(8, ConnId::inbound(2));
    for f in [&flooder, &sink] {
        f.join(&mut node, T0);
    }
    drain(&mut node);
    // 1,000 new broadcasts in one read, all at once.
    let mut flood = Vec::new();
    for seq in 1..=1000 {
        flood.extend_from_slice(&signed_broadcast_frame(&flooder.identity, seq, b"spam"));
    }
    flooder.send(&mut node, T0, Bytes::from(flood));
    let out = drain(&mut node);
    assert_eq!(delivered(&out).len(), 100, "the burst");
    assert_eq!(
        frames_to(&out, sink.conn).len(),
        100,
        "relayed: only the burst"
    );
    let mesh = node.metrics().mesh;
    assert_eq!(
        mesh.broadcasts_over_rate, 51,
        "50 dropped, then the 51st closes"
    );
    assert_eq!(mesh.peers_over_rate, 1);
    assert_eq!(closed(&out, flooder.conn), Some(CloseReason::RateLimited));
    // Another peer still gets its broadcasts through.
    sink.send(
        &mut node,
        T0,
        signed_broadcast_frame(&sink.identity, 1, b"fine"),
    );
    assert_eq!(delivered(&drain(&mut node)).len(), 1);
}

/// A peer over the rate with broadcasts of another origin (an honest relay fed by several
/// links passes on more than one link may bring) is cut to the rate the same way and never
/// disconnected for it: one flooding originator would otherwise cut honest links around it.
#[test]
fn a_relay_over_the_broadcast_rate_is_dropped_not_disconnected() {
    let mut node = rate_limited_node();
    let relay = Fake::new(9, ConnId::inbound(1));
    let sink = Fake::new(8, ConnId::inbound(2));
    for f in [&relay, &sink] {
        f.join(&mut node, T0);
    }
    drain(&mut node);
    let originator = Fake::new(7, ConnId::inbound(3));
    let mut flood = Vec::new();
    for seq in 1..=1000 {
        flood.extend_from_slice(&signed_broadcast_frame(&originator.identity, seq, b"spam"));
    }
    relay.send(&mut node, T0, Bytes::from(flood));
    let out = drain(&mut node);
    assert_eq!(delivered(&out).len(), 100, "the burst");
    assert_eq!(frames_to(&out, sink.conn).len(), 100, "relayed: the burst");
    let mesh = node.metrics().mesh;
    assert_eq!(mesh.broadcasts_over_rate, 900);
    assert_eq!(mesh.peers_over_rate, 0);
    assert_eq!(closed(&out, relay.conn), None);
    // Its own broadcast right after, the rate still spent: dropped, not an offence.
    relay.send(
        &mut node,
        T0,
        signed_broadcast_frame(&relay.identity, 1, b"mine"),
    );
    assert_eq!(closed(&drain(&mut node), relay.conn), None);
    // Dropped, not recorded: the same broadcasts are taken later (here: past the rate's
    // refill), from this peer or another.
    sink.send(
        &mut node,
        T0 + Duration::from_secs(1),
        signed_broadcast_frame(&originator.identity, 500, b"spam"),
    );
    assert_eq!(delivered(&drain(&mut node)).len(), 1);
}

#[test]
fn a_peer_within_its_broadcast_rate_is_never_dropped() {
    let mut node = rate_limited_node();
    let peer = Fake::new(9, ConnId::inbound(1));
    peer.join(&mut node, T0);
    drain(&mut node);
    // 100 a second (the rate) for ten seconds, 10 every 100 ms.
    let mut seq = 0;
    let mut got = 0;
    for tick in 0..100u64 {
        let now = T0 + Duration::from_millis(100 * tick);
        for _ in 0..10 {
            seq += 1;
            peer.send(
                &mut node,
                now,
                signed_broadcast_frame(&peer.identity, seq, b"ok"),
            );
        }
        got += delivered(&drain(&mut node)).len();
    }
    assert_eq!(got, 1000);
    assert_eq!(node.metrics().mesh.broadcasts_over_rate, 0);
}

#[test]
fn small_broadcasts_in_large_reads_pin_no_read_buffer_and_the_store_stays_in_its_bytes() {
    let store_max = 128 * 1024;
    let mut node = node_with(|c| c.limits.repair_store_bytes_max = store_max);
    let peer = Fake::new(9, ConnId::inbound(1));
    let origin = Identity::from_secret(&[0x42; 32]);
    peer.join(&mut node, T0);
    drain(&mut node);
    // 4,000 broadcasts of 100 bytes, 40 to a read; each read lies at the start of its own
    // 256 KiB read buffer, as a driver's reads do.
    let read_buffer_bytes = 256 * 1024;
    let mut buffers = Vec::new();
    let mut seq = 0;
    for _ in 0..100 {
        let mut frames = Vec::new();
        for _ in 0..40 {
            seq += 1;
            frames.extend_from_slice(&signed_broadcast_frame(&origin, seq, &[seq as u8; 100]));
        }
        let len = frames.len();
        frames.resize(read_buffer_bytes, 0);
        let buffer = Bytes::from(frames);
        peer.send(&mut node, T0, buffer.slice(..len));
        let out = drain(&mut node);
        assert_eq!(delivered(&out).len(), 40);
        drop(out);
        buffers.push(buffer);
        let held = node.metrics().mesh.repair_store_bytes;
        assert!(held <= store_max as u64, "{held} bytes held");
    }
    let pinned = buffers.iter().filter(|b| !b.is_unique()).count();
    assert_eq!(pinned, 0, "read buffers kept alive by the node");
    let mesh = node.metrics().mesh;
    assert!(mesh.repair_store_bytes > 0 && mesh.repair_store_bytes <= store_max as u64);
    node.check_invariants().unwrap();
}

/// The broadcasts of one read are verified in one batch: a forgery among them fails the batch,
/// is found alone, dropped, counted and its sender disconnected, while the genuine ones on
/// either side of it are taken, in order.
#[test]
fn a_forgery_in_a_batch_is_found_and_the_genuine_broadcasts_around_it_are_taken() {
    let victim = Identity::from_secret(&[0x42; 32]);
    let mut node = node_with(|_| {});
    let relay = Fake::new(9, ConnId::inbound(1));
    let watcher = Fake::new(8, ConnId::inbound(2));
    relay.join(&mut node, T0);
    watcher.join(&mut node, T0);
    drain(&mut node);
    let forged = frame_with(
        Code::BROADCAST,
        victim.node_id(),
        3,
        Some(OriginProof {
            public_key: victim.public_key(),
            signature: proof_by(&relay.identity, victim.node_id(), 3).signature,
        }),
    );
    let read: Vec<u8> = [
        signed_broadcast_frame(&victim, 1, b"one"),
        signed_broadcast_frame(&victim, 2, b"two"),
        forged,
        signed_broadcast_frame(&victim, 4, b"four"),
    ]
    .concat();
    relay.send(&mut node, T0, Bytes::from(read));
    let out = drain(&mut node);
    let v = victim.node_id();
    assert_eq!(delivered(&out), [(v, 1), (v, 2), (v, 4)]);
    assert_eq!(
        frames_to(&out, watcher.conn).len(),
        3,
        "the genuine three relayed"
    );
    assert_eq!(closed(&out, relay.conn), Some(CloseReason::BadSignature));
    assert_eq!(node.metrics().mesh.broadcasts_forged, 1);
    node.check_invariants().unwrap();
    // A batch of genuine broadcasts from one read, with a copy of one of them: each
    // delivered once, and the link kept.
    let honest = Fake::new(7, ConnId::inbound(3));
    honest.join(&mut node, T0);
    drain(&mut node);
    let read: Vec<u8> = [5, 6, 5, 7]
        .iter()
        .map(|&seq| signed_broadcast_frame(&victim, seq, b"more"))
        .collect::<Vec<_>>()
        .concat();
    honest.send(&mut node, T0, Bytes::from(read));
    let out = drain(&mut node);
    assert_eq!(delivered(&out), [(v, 5), (v, 6), (v, 7)]);
    assert_eq!(closed(&out, honest.conn), None);
    assert_eq!(node.metrics().mesh.broadcasts_forged, 1);
    node.check_invariants().unwrap();
}
