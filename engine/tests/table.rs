//! The sync table of one real node against hand-driven fake peers: writes flooded and relayed
//! once, anti-entropy answered frame by frame, limits, and bad table frames closing the
//! connection.

mod common;

use bytes::Bytes;
use common::{accepted, closed, drain, frames_to, node_with, Fake, T0};
use weft_engine::protocol::{
    Code, Hlc, Message, NodeId, ProtocolError, TableEntries, TableWant, TableWrite,
};
use weft_engine::{CloseReason, Command, ConnId, Duration, Event, Input, InputError, Output};

const WALL_MS: u64 = 1_800_000_000_000;

fn write(node: NodeId, ms: u64, key: &str, value: Option<&str>, lease: Option<u64>) -> TableWrite {
    TableWrite {
        hlc: Hlc { ms, logical: 0 },
        node,
        incarnation: 1,
        key: key.as_bytes().to_vec(),
        value: value.map(|v| v.as_bytes().to_vec()),
        lease_until_ms: lease,
    }
}

fn frame(msg: Message<'_>) -> Bytes {
    msg.to_frame(false).into_bytes()
}

fn decoded(outputs: &[Output], conn: ConnId, code: Code) -> Vec<Message<'static>> {
    frames_to(outputs, conn)
        .into_iter()
        .filter(|f| f.code() == code)
        .map(|f| {
            // Leaked so the decoded messages may outlive this call (a test, a few bytes).
            let payload = f.payload().expect("inflates").to_vec();
            let payload: &'static [u8] = Box::leak(payload.into_boxed_slice());
            Message::decode(code, payload).expect("decodes")
        })
        .collect()
}

/// A node with a wall clock and two fake peers linked to it.
fn linked() -> (weft_engine::Node, Fake, Fake) {
    let mut node = node_with(|_| {});
    node.handle_input(T0, Input::WallClock { unix_ms: WALL_MS })
        .unwrap();
    let (a, b) = (
        Fake::new(7, ConnId::inbound(1)),
        Fake::new(8, ConnId::inbound(2)),
    );
    a.join(&mut node, T0);
    b.join(&mut node, T0);
    drain(&mut node);
    (node, a, b)
}

#[test]
fn a_received_write_is_applied_relayed_once_and_reported() {
    let (mut node, a, b) = linked();
    let w = write(a.id(), WALL_MS + 5, "colour", Some("blue"), None);
    let bytes = frame(Message::TableWrite(w.clone()));
    a.send(&mut node, T0, bytes.clone());
    let out = drain(&mut node);
    assert_eq!(node.table().get(b"colour"), Some(&b"blue"[..]));
    assert!(out.iter().any(|o| matches!(o,
        Output::Event(Event::TableChanged { key, old: None, new: Some(v), by })
            if key == b"colour" && v == b"blue" && *by == a.id())));
    // Relayed to b, byte for byte; not back to a.
    let to_b: Vec<_> = frames_to(&out, b.conn);
    assert_eq!(to_b.len(), 1);
    assert_eq!(to_b[0].bytes(), &bytes);
    assert!(frames_to(&out, a.conn).is_empty());
    // The same write again (from b): held already, neither relayed nor reported.
    b.send(&mut node, T0, bytes);
    let out = drain(&mut node);
    assert!(out
        .iter()
        .all(|o| !matches!(o, Output::Event(_) | Output::Transmit { .. })));
    assert_eq!(node.metrics().table_write_duplicates, 1);
}

#[test]
fn a_local_write_is_flooded_and_a_leased_key_refuses_it() {
    let (mut node, a, b) = linked();
    node.handle_input(
        T0,
        Input::Command(Command::TableSet {
            key: b"k".to_vec(),
            value: b"mine".to_vec(),
            lease: None,
        }),
    )
    .unwrap();
    let out = drain(&mut node);
    for fake in [&a, &b] {
        let got = decoded(&out, fake.conn, Code::TABLE_WRITE);
        assert!(matches!(&got[..], [Message::TableWrite(w)]
            if w.node == node.node_id() && w.hlc.ms == WALL_MS && w.value.as_deref() == Some(&b"mine"[..])));
    }
    // a leases "k" for a minute (stamped after the node's write).
    let lease = write(
        a.id(),
        WALL_MS + 10,
        "k",
        Some("a's"),
        Some(WALL_MS + 60_000),
    );
    a.send(&mut node, T0, frame(Message::TableWrite(lease)));
    drain(&mut node);
    assert_eq!(node.table().lease(b"k"), Some((a.id(), WALL_MS + 60_000)));
    let sent = node.metrics().table_writes_originated;
    node.handle_input(
        T0 + Duration::from_millis(1),
        Input::Command(Command::TableDelete { key: b"k".to_vec() }),
    )
    .unwrap();
    let out = drain(&mut node);
    assert!(out.iter().any(|o| matches!(o,
        Output::Event(Event::TableRefused { owner, until_ms, .. })
            if *owner == a.id() && *until_ms == WALL_MS + 60_000)));
    assert!(frames_to(&out, a.conn).is_empty() && frames_to(&out, b.conn).is_empty());
    assert_eq!(node.metrics().table_writes_originated, sent);
    assert_eq!(node.table().get(b"k"), Some(&b"a's"[..]));
    assert_eq!(
        node.handle_input(
            T0,
            Input::Command(Command::TableRelease { key: b"k".to_vec() })
        ),
        Err(InputError::NotLeaseOwner)
    );
}

#[test]
fn anti_entropy_answers_digests_and_wants() {
    let (mut node, a, _b) = linked();
    let mut sent = Vec::new();
    for i in 0..40 {
        let w = write(a.id(), WALL_MS + i, &format!("key{i}"), Some("v"), None);
        a.send(&mut node, T0, frame(Message::TableWrite(w.clone())));
        sent.push(w);
    }
    let in_buckets = |w: &TableWrite, buckets: &[u16]| {
        buckets.contains(&TableWrite::bucket_of(TableWrite::key_hash(&w.key), 2))
    };
    drain(&mut node);
    // A peer with an empty table sends no digest of its own; it gets the node's on link-up.
    let c = Fake::new(9, ConnId::inbound(3));
    let out = c.join(&mut node, T0);
    let digests = decoded(&out, c.conn, Code::TABLE_DIGEST);
    let [Message::TableDigest(d)] = &digests[..] else {
        panic!("{digests:?}")
    };
    assert_eq!(d.bits, 2, "40 keys: 4 buckets");
    // It wants two buckets, holding one write of them already, and gets exactly the other
    // writes of the keys in them.
    let held = sent
        .iter()
        .find(|w| in_buckets(w, &[0, 3]))
        .expect("40 keys fill every bucket")
        .clone();
    let want = TableWant {
        bits: 2,
        buckets: vec![0, 3],
        salt: 77,
        held: vec![held.fingerprint(77), [0xee; 8]],
    };
    c.send(&mut node, T0, frame(Message::TableWant(want)));
    let out = drain(&mut node);
    let entries = decoded(&out, c.conn, Code::TABLE_ENTRIES);
    let keys: Vec<Vec<u8>> = entries
        .iter()
        .flat_map(|m| match m {
            Message::TableEntries(e) => e.writes.iter().map(|w| w.key.clone()).collect(),
            _ => Vec::new(),
        })
        .collect();
    let expect: Vec<Vec<u8>> = sent
        .iter()
        .filter(|w| in_buckets(w, &[0, 3]) && **w != held)
        .map(|w| w.key.clone())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    let mut expect_sorted = expect.clone();
    expect_sorted.sort();
    assert_eq!(sorted, expect_sorted);
    // A digest that differs in one bucket gets a want for that bucket only.
    let mut theirs = d.clone();
    theirs.buckets[1].hash = [0; 8];
    c.send(&mut node, T0, frame(Message::TableDigest(theirs.clone())));
    let out = drain(&mut node);
    let wants = decoded(&out, c.conn, Code::TABLE_WANT);
    let bucket = theirs.buckets[1].bucket;
    let [Message::TableWant(w)] = &wants[..] else {
        panic!("{wants:?}")
    };
    assert_eq!((w.bits, &w.buckets), (2, &vec![bucket]));
    // It lists the fingerprints of the writes it holds in that bucket.
    let mut listed = w.held.clone();
    listed.sort_unstable();
    let mut expect: Vec<[u8; 8]> = sent
        .iter()
        .filter(|x| in_buckets(x, &[bucket]))
        .map(|x| x.fingerprint(w.salt))
        .collect();
    expect.sort_unstable();
    assert_eq!(listed, expect);
    // TABLE_ENTRIES in: new writes are applied and flooded onward.
    let fresh = write(c.id(), WALL_MS + 100, "fresh", Some("x"), None);
    c.send(
        &mut node,
        T0,
        frame(Message::TableEntries(TableEntries {
            writes: vec![fresh],
        })),
    );
    let out = drain(&mut node);
    assert_eq!(node.table().get(b"fresh"), Some(&b"x"[..]));
    assert_eq!(decoded(&out, a.conn, Code::TABLE_WRITE).len(), 1);
    assert!(node.metrics().table_catchup_bytes > 0);
    assert!(node.metrics().table_full_resend_bytes > 0);
}

#[test]
fn a_bad_table_frame_closes_the_connection_and_one_before_the_handshake_too() {
    let (mut node, a, _b) = linked();
    let mut bad = write(a.id(), WALL_MS, "k", None, Some(WALL_MS + 1));
    bad.value = None;
    // Encoded by hand: the codec would refuse to decode it, so the node must too.
    let payload = Message::TableWrite(bad).encode_payload();
    let bytes =
        weft_engine::protocol::Frame::build(Code::TABLE_WRITE, &payload, false).into_bytes();
    a.send(&mut node, T0, bytes);
    let out = drain(&mut node);
    assert!(matches!(
        closed(&out, a.conn),
        Some(CloseReason::Protocol(
            ProtocolError::MalformedPayload { .. }
        ))
    ));
    // Before the handshake.
    let early = Fake::new(10, ConnId::inbound(9));
    node.handle_input(T0, accepted(early.conn)).unwrap();
    drain(&mut node);
    early.send(
        &mut node,
        T0,
        frame(Message::TableWant(TableWant {
            bits: 0,
            buckets: vec![0],
            salt: 0,
            held: vec![],
        })),
    );
    let out = drain(&mut node);
    assert!(matches!(
        closed(&out, early.conn),
        Some(CloseReason::UnexpectedMessage(_))
    ));
}
