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

/// A Chord replica answers CHORD_STORED only once the host has stored its records (SPEC.md
/// §20.8).
#[test]
fn a_replica_answers_chord_stored_only_after_its_commit() {
    use weft_engine::protocol::{
        key_position, ChordMessage, ChordStore, ChordValue, Code, Message, StoreOp,
    };
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
    let key = b"drop".to_vec();
    let op = StoreOp::Put(b"v".to_vec());
    let writer = fake.identity.public_key();
    let signature = fake
        .identity
        .sign(&ChordValue::signed_bytes(&key, &writer, 1, &op));
    let store = ChordMessage::Store(ChordStore {
        request: 9,
        position: key_position(&key, 0),
        key,
        value: ChordValue {
            writer,
            seq: 1,
            op,
            lifetime_ms: None,
            signature,
        },
    });
    fake.send(
        &mut node,
        T0,
        Message::Chord(store).to_frame(false).into_bytes(),
    );
    let stored = |out: &[Output]| {
        frames_to(out, fake.conn)
            .iter()
            .filter(|f| f.code() == Code::CHORD_STORED)
            .count()
    };
    let out = drain_raw(&mut node);
    assert_eq!(stored(&out), 0, "no answer before the commit");
    let id = out
        .iter()
        .find_map(|o| match o {
            Output::Request {
                id,
                request: HostRequest::StoreState { name, .. },
            } if name == "chord" => Some(*id),
            _ => None,
        })
        .expect("the records go to the host");
    node.handle_input(
        T0,
        Input::Completed {
            id,
            result: HostResult::Stored,
        },
    )
    .unwrap();
    assert_eq!(
        stored(&drain_raw(&mut node)),
        1,
        "answered after the commit"
    );
}
