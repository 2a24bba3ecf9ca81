//! A node and its host's store: the start-up gate (SPEC.md §8.1: no dial, no frame until the
//! host answered every start-up load, then what was held, in order), and a Chord replica's
//! CHORD_STORED only after its commit (§20.8). The table's side is in `table.rs`.

mod common;

use common::{accepted, drain_raw, frames_to, node_with, T0};
use weft_engine::{Command, ConnId, HostRequest, HostResult, Input, Output};

#[test]
fn nothing_goes_out_until_every_startup_load_is_answered() {
    let mut node = node_with(|c| {
        c.listen_addr = Some("127.0.0.1:7000".into());
        c.chord = Some(Default::default());
    });
    let connect = Input::Command(Command::Connect {
        addr: "127.0.0.1:7001".into(),
    });
    node.handle_input(T0, connect).unwrap();
    let inbound = ConnId::inbound(1);
    node.handle_input(T0, accepted(inbound)).unwrap();
    let out = drain_raw(&mut node);
    let loads: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Request {
                id,
                request: HostRequest::LoadState { name },
            } => Some((*id, name.clone())),
            _ => None,
        })
        .collect();
    let mut names: Vec<&str> = loads.iter().map(|(_, n)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["chord", "drops", "peers", "table"],
        "the session's known peers, the table's, Chord's and the drops' loads"
    );
    assert!(
        out.iter().all(|o| matches!(o, Output::Request { .. })),
        "no dial, no HELLO before the loads are answered: {out:?}"
    );
    assert!(!node.is_restored());

    let (last, rest) = loads.split_last().unwrap();
    for (id, _) in rest {
        let result = HostResult::Loaded(None);
        node.handle_input(T0, Input::Completed { id: *id, result })
            .unwrap();
        assert!(drain_raw(&mut node).is_empty(), "a load still out");
    }
    let result = HostResult::Failed("no state folder".into());
    node.handle_input(T0, Input::Completed { id: last.0, result })
        .unwrap();
    assert!(node.is_restored());
    let out = drain_raw(&mut node);
    assert!(
        matches!(out.first(), Some(Output::Connect { .. })),
        "the held dial first: {out:?}"
    );
    assert_eq!(
        frames_to(&out, inbound).len(),
        1,
        "the inbound HELLO, held till now"
    );
}

/// Connections the session closes while the gate is closed (each accept past `inbound_max`
/// evicts the oldest unproven one) are closed at once, after their HELLO and BYE: held, each
/// further accept left one more connection open and its outputs held, without bound.
#[test]
fn connections_closed_before_the_loads_are_answered_close_at_once() {
    let mut node = node_with(|c| {
        c.listen_addr = Some("127.0.0.1:7000".into());
        c.chord = Some(Default::default());
        c.limits.inbound_max = 4;
    });
    let mut loads = Vec::new();
    let mut closes = 0;
    let mut spoken_to = std::collections::BTreeSet::new();
    for i in 0..1000u64 {
        let conn = ConnId::inbound(i + 1);
        let addr = format!("10.{}.{}.1:9000", i / 256, i % 256);
        node.handle_input(T0, Input::Accepted { conn, addr })
            .unwrap();
        for out in drain_raw(&mut node) {
            match out {
                Output::Request {
                    id,
                    request: HostRequest::LoadState { .. },
                } => loads.push(id),
                Output::Close { conn, .. } => {
                    assert!(spoken_to.remove(&conn), "its HELLO and BYE first");
                    closes += 1;
                    node.handle_input(T0, Input::Closed { conn }).unwrap();
                }
                // Only to a connection closed right after.
                Output::Transmit { conn, .. } => {
                    spoken_to.insert(conn);
                }
                Output::Request { .. } | Output::Event(_) => {}
                other => panic!("a network output before the loads are answered: {other:?}"),
            }
        }
    }
    assert!(!node.is_restored());
    assert!(spoken_to.is_empty(), "frames only to connections closed");
    assert_eq!(closes, 1000 - 4);

    for id in loads {
        let result = HostResult::Loaded(None);
        node.handle_input(T0, Input::Completed { id, result })
            .unwrap();
    }
    assert!(node.is_restored());
    let out = drain_raw(&mut node);
    let hellos: Vec<ConnId> = (997..=1000)
        .map(ConnId::inbound)
        .filter(|c| !frames_to(&out, *c).is_empty())
        .collect();
    assert_eq!(hellos.len(), 4, "the four kept get their HELLOs: {out:?}");

    assert!(
        out.iter().all(|o| match o {
            Output::Transmit { conn, .. } => hellos.contains(conn),
            _ => true,
        }),
        "nothing held for the closed ones"
    );
}

/// A peer that connects and leaves, again and again, before the start-up loads are answered
/// leaves nothing held (its HELLO was held for good, one more each time), and nothing goes
/// to it once they are.
#[test]
fn connections_the_driver_closed_before_the_loads_are_answered_leave_nothing_held() {
    let mut node = node_with(|c| {
        c.listen_addr = Some("127.0.0.1:7000".into());
        c.chord = Some(Default::default());
    });
    let mut loads = Vec::new();
    for i in 0..1000u64 {
        let conn = ConnId::inbound(i + 1);
        node.handle_input(T0, accepted(conn)).unwrap();
        let mut outs = drain_raw(&mut node);
        node.handle_input(T0, Input::Closed { conn }).unwrap();
        outs.extend(drain_raw(&mut node));
        for out in outs {
            match out {
                Output::Request {
                    id,
                    request: HostRequest::LoadState { .. },
                } => loads.push(id),
                Output::Request { .. } | Output::Event(_) => {}
                other => panic!("a network output before the loads are answered: {other:?}"),
            }
        }
    }
    for id in loads {
        let result = HostResult::Loaded(None);
        node.handle_input(T0, Input::Completed { id, result })
            .unwrap();
    }
    assert!(node.is_restored());
    let network = drain_raw(&mut node)
        .iter()
        .filter(|o| matches!(o, Output::Transmit { .. } | Output::Close { .. }))
        .count();
    assert_eq!(network, 0, "nothing for connections the driver said closed");
}

/// A node with Chord, a wall clock and one linked fake peer.
fn chord_node() -> (weft_engine::Node, common::Fake) {
    let mut node = node_with(|c| {
        c.listen_addr = Some("127.0.0.1:7000".into());
        c.chord = Some(Default::default());
    });
    node.handle_input(
        T0,
        Input::WallClock {
            unix_ms: 1_800_000_000_000,
        },
    )
    .unwrap();
    let fake = common::Fake::new(7, ConnId::inbound(1));
    fake.join(&mut node, T0);
    common::drain(&mut node);
    (node, fake)
}

/// The fake peer's CHORD_STORE of `key` (request `request`), signed by it.
fn chord_store(fake: &common::Fake, request: u64, key: &[u8]) -> bytes::Bytes {
    use weft_engine::protocol::{
        key_position, ChordMessage, ChordStore, ChordValue, Message, StoreOp,
    };
    let op = StoreOp::Put(b"v".to_vec());
    let writer = fake.identity.public_key();
    let signature = fake
        .identity
        .sign(&ChordValue::signed_bytes(key, &writer, 1, &op));
    let store = ChordMessage::Store(ChordStore {
        request,
        position: key_position(key, 0),
        key: key.to_vec(),
        value: ChordValue {
            writer,
            seq: 1,
            op,
            lifetime_ms: None,
            signature,
        },
    });
    Message::Chord(store).to_frame(false).into_bytes()
}

/// The CHORD_STORED frames in `out` to `fake`.
fn chord_stored(out: &[Output], fake: &common::Fake) -> usize {
    use weft_engine::protocol::Code;
    frames_to(out, fake.conn)
        .iter()
        .filter(|f| f.code() == Code::CHORD_STORED)
        .count()
}

/// The request id of the snapshot of Chord's records in `out`, if one went to the host.
fn chord_snapshot(out: &[Output]) -> Option<weft_engine::RequestId> {
    out.iter().find_map(|o| match o {
        Output::Request {
            id,
            request: HostRequest::StoreState { name, .. },
        } if name == "chord" => Some(*id),
        _ => None,
    })
}

/// A Chord replica answers CHORD_STORED only once the host has stored its records (SPEC.md
/// §20.8).
#[test]
fn a_replica_answers_chord_stored_only_after_its_commit() {
    let (mut node, fake) = chord_node();
    fake.send(&mut node, T0, chord_store(&fake, 9, b"drop"));
    let out = drain_raw(&mut node);
    assert_eq!(chord_stored(&out, &fake), 0, "no answer before the commit");
    let id = chord_snapshot(&out).expect("the records go to the host");
    let result = HostResult::Stored;
    node.handle_input(T0, Input::Completed { id, result })
        .unwrap();
    assert_eq!(
        chord_stored(&drain_raw(&mut node), &fake),
        1,
        "answered after the commit"
    );
}

/// Snapshots of every record go to the host at most every `SNAPSHOT_GAP_MIN` (200 ms), so a
/// peer's stream of small stores does not have the host write the whole store for each
/// (SPEC.md §20.8): a store within the gap waits for it, its answer with it, and the node's
/// deadline is the gap's end.
#[test]
fn chord_snapshots_keep_their_gap() {
    let (mut node, fake) = chord_node();
    fake.send(&mut node, T0, chord_store(&fake, 1, b"first"));
    let id = chord_snapshot(&drain_raw(&mut node)).expect("the first goes at once");
    let result = HostResult::Stored;
    node.handle_input(T0, Input::Completed { id, result })
        .unwrap();
    assert_eq!(chord_stored(&drain_raw(&mut node), &fake), 1);
    let later = T0 + weft_engine::Duration::from_millis(50);
    fake.send(&mut node, later, chord_store(&fake, 2, b"second"));
    let out = drain_raw(&mut node);
    assert_eq!(
        chord_snapshot(&out),
        None,
        "within the gap: no snapshot yet"
    );
    assert_eq!(chord_stored(&out, &fake), 0);
    let gap_end = T0 + weft_engine::Duration::from_millis(200);
    assert!(node.poll_timeout().is_some_and(|at| at <= gap_end));
    let mut at = later;
    let id = loop {
        let next = node.poll_timeout().expect("a deadline");
        assert!(next > at && next <= gap_end, "{next:?}");
        at = next;
        node.handle_timeout(at);
        if let Some(id) = chord_snapshot(&drain_raw(&mut node)) {
            break id;
        }
    };
    assert_eq!(at, gap_end, "at the gap's end");
    node.handle_input(
        at,
        Input::Completed {
            id,
            result: HostResult::Stored,
        },
    )
    .unwrap();
    assert_eq!(chord_stored(&drain_raw(&mut node), &fake), 1);
}
