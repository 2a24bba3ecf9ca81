//! The sync table of one real node against hand-driven fake peers: writes flooded and relayed
//! once, anti-entropy answered frame by frame, limits, and bad table frames closing the
//! connection.

mod common;

use bytes::Bytes;
use common::{accepted, closed, drain, drain_raw, frames_to, node_with, Fake, T0};
use weft_engine::protocol::{
    Code, Hlc, Message, ProtocolError, TableEntries, TableWant, TableWrite,
};
use weft_engine::{
    CloseReason, Command, ConnId, Duration, Event, HostRequest, HostResult, Input, InputError,
    Misuse, Output, Refusal, RequestId, TableCommand, TableEvent, TableRefusal,
};

const WALL_MS: u64 = 1_800_000_000_000;

/// A write by `by`, signed by it.
fn write(by: &Fake, ms: u64, key: &str, value: Option<&str>, lease: Option<u64>) -> TableWrite {
    by.sign_write(TableWrite {
        hlc: Hlc { ms, logical: 0 },
        node: by.id(),
        incarnation: 1,
        key: key.as_bytes().to_vec(),
        value: value.map(|v| v.as_bytes().to_vec()),
        lease_until_ms: lease,
        public_key: Default::default(),
        signature: Default::default(),
    })
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
    let w = write(&a, WALL_MS + 5, "colour", Some("blue"), None);
    let bytes = frame(Message::TableWrite(w.clone()));
    a.send(&mut node, T0, bytes.clone());
    let out = drain(&mut node);
    assert_eq!(node.table().get(b"colour"), Some(&b"blue"[..]));
    assert!(out.iter().any(|o| matches!(o,
        Output::Event(Event::Table(TableEvent::Changed { key, old: None, new: Some(v), by }))
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
    assert_eq!(node.metrics().table.write_duplicates, 1);
}

#[test]
fn a_local_write_is_flooded_and_a_leased_key_refuses_it() {
    let (mut node, a, b) = linked();
    node.handle_input(
        T0,
        Input::Command(Command::Table(TableCommand::Set {
            key: b"k".to_vec(),
            value: b"mine".to_vec(),
            lease: None,
        })),
    )
    .unwrap();
    let out = drain(&mut node);
    for fake in [&a, &b] {
        let got = decoded(&out, fake.conn, Code::TABLE_WRITE);
        assert!(matches!(&got[..], [Message::TableWrite(w)]
            if w.node == node.node_id() && w.hlc.ms == WALL_MS && w.value.as_deref() == Some(&b"mine"[..])));
    }
    // a leases "k" for a minute (stamped after the node's write).
    let lease = write(&a, WALL_MS + 10, "k", Some("a's"), Some(WALL_MS + 60_000));
    a.send(&mut node, T0, frame(Message::TableWrite(lease)));
    drain(&mut node);
    assert_eq!(node.table().lease(b"k"), Some((a.id(), WALL_MS + 60_000)));
    let sent = node.metrics().table.writes_originated;
    node.handle_input(
        T0 + Duration::from_millis(1),
        Input::Command(Command::Table(TableCommand::Delete { key: b"k".to_vec() })),
    )
    .unwrap();
    let out = drain(&mut node);
    assert!(out.iter().any(|o| matches!(o,
        Output::Event(Event::Table(TableEvent::Refused { owner, until_ms, .. }))
            if *owner == a.id() && *until_ms == WALL_MS + 60_000)));
    assert!(frames_to(&out, a.conn).is_empty() && frames_to(&out, b.conn).is_empty());
    assert_eq!(node.metrics().table.writes_originated, sent);
    assert_eq!(node.table().get(b"k"), Some(&b"a's"[..]));
    assert_eq!(
        node.handle_input(
            T0,
            Input::Command(Command::Table(TableCommand::Release { key: b"k".to_vec() }))
        ),
        Err(InputError::Refused(Refusal::Table(
            TableRefusal::NotLeaseOwner
        )))
    );
}

#[test]
fn anti_entropy_answers_digests_and_wants() {
    let (mut node, a, _b) = linked();
    let mut sent = Vec::new();
    for i in 0..40 {
        let w = write(&a, WALL_MS + i, &format!("key{i}"), Some("v"), None);
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
    let fresh = write(&c, WALL_MS + 100, "fresh", Some("x"), None);
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
    assert!(node.metrics().table.catchup_bytes > 0);
    assert!(node.metrics().table.full_resend_bytes > 0);
}

#[test]
fn a_bad_table_frame_closes_the_connection_and_one_before_the_handshake_too() {
    let (mut node, a, _b) = linked();
    let mut bad = write(&a, WALL_MS, "k", None, Some(WALL_MS + 1));
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

/// The `through` of every `Committed` event in `outputs`.
fn committed(outputs: &[Output]) -> Vec<u64> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(Event::Table(TableEvent::Committed { through })) => Some(*through),
            _ => None,
        })
        .collect()
}

/// The table's request among `outputs`, if exactly one (the session's requests for its known
/// peers, SPEC.md §8.11, and the drops' load, SPEC.md §24.6, are left unanswered).
fn request(outputs: &[Output]) -> Option<(RequestId, HostRequest)> {
    let peers = |r: &HostRequest| match r {
        HostRequest::LoadState { name } | HostRequest::StoreState { name, .. } => {
            name == "peers" || name == "drops"
        }
        _ => false,
    };
    let mut found = outputs.iter().filter_map(|o| match o {
        Output::Request { id, request } if !peers(request) => Some((*id, request.clone())),
        _ => None,
    });
    let first = found.next();
    assert!(found.next().is_none(), "one request at a time");
    first
}

/// Shutdown's last store goes beside the one under way; each answer commits only the writes
/// its own store held (the first answer committed the second store's writes too).
#[test]
fn a_store_made_at_shutdown_commits_its_writes_only_when_it_is_answered() {
    let mut node = node_with(|_| {});
    node.handle_input(T0, Input::WallClock { unix_ms: WALL_MS })
        .unwrap();
    let (load, _) = request(&drain_raw(&mut node)).expect("a load at start");
    node.handle_input(
        T0,
        Input::Completed {
            id: load,
            result: HostResult::Loaded(None),
        },
    )
    .unwrap();
    let set = |key: &str| {
        Input::Command(Command::Table(TableCommand::Set {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease: None,
        }))
    };
    node.handle_input(T0, set("a")).unwrap();
    let (first, _) = request(&drain_raw(&mut node)).expect("a is stored at once");
    node.handle_input(T0, set("b")).unwrap();
    assert_eq!(
        request(&drain_raw(&mut node)),
        None,
        "b waits for a's store"
    );
    node.handle_input(T0, Input::Command(Command::Shutdown))
        .unwrap();
    let (last, _) = request(&drain_raw(&mut node)).expect("shutdown stores b beside a's store");
    let done = |node: &mut weft_engine::Node, id| {
        node.handle_input(
            T0,
            Input::Completed {
                id,
                result: HostResult::Stored,
            },
        )
        .unwrap();
        committed(&drain_raw(node))
    };
    assert_eq!(done(&mut node, first), vec![1], "a's store holds a alone");
    assert_eq!(
        done(&mut node, last),
        vec![2],
        "b is committed by its own store"
    );
}

#[test]
fn the_table_is_stored_with_the_host_and_taken_back_after_a_restart() {
    let mut node = node_with(|_| {});
    let out = drain(&mut node);
    assert!(out.is_empty(), "nothing before the first input");
    node.handle_input(T0, Input::WallClock { unix_ms: WALL_MS })
        .unwrap();
    let (load, asked) = request(&drain_raw(&mut node)).expect("a load at start");
    assert_eq!(
        asked,
        HostRequest::LoadState {
            name: "table".into()
        }
    );
    node.handle_input(
        T0,
        Input::Completed {
            id: load,
            result: HostResult::Loaded(None),
        },
    )
    .unwrap();
    assert_eq!(
        node.handle_input(
            T0,
            Input::Completed {
                id: load,
                result: HostResult::Loaded(None)
            }
        ),
        Err(InputError::Misuse(Misuse::UnknownRequest(load))),
        "each request is answered once"
    );
    let set = |key: &str| {
        Input::Command(Command::Table(TableCommand::Set {
            key: key.as_bytes().to_vec(),
            value: b"kept".to_vec(),
            lease: None,
        }))
    };
    node.handle_input(T0, set("a")).unwrap();
    let (first, stored) = request(&drain_raw(&mut node)).expect("a local write is stored at once");
    let HostRequest::StoreState { name, .. } = stored else {
        panic!("expected a store, got {stored:?}");
    };
    assert_eq!(name, "table");
    node.handle_input(T0, set("b")).unwrap();
    node.handle_input(T0, set("c")).unwrap();
    assert_eq!(
        request(&drain_raw(&mut node)),
        None,
        "one store at a time: b and c wait for the next"
    );
    node.handle_input(
        T0,
        Input::Completed {
            id: first,
            result: HostResult::Stored,
        },
    )
    .unwrap();
    let out = drain_raw(&mut node);
    assert!(committed(&out).contains(&1), "a is committed: {out:?}");
    let (second, stored) = request(&out).expect("b and c go in the next store, together");
    let HostRequest::StoreState { bytes, .. } = stored else {
        panic!("expected a store, got {stored:?}");
    };
    node.handle_input(
        T0,
        Input::Completed {
            id: second,
            result: HostResult::Stored,
        },
    )
    .unwrap();
    let out = drain_raw(&mut node);
    assert_eq!(committed(&out), vec![3], "b and c, committed together");
    assert_eq!(request(&out), None, "nothing left to store");
    let persist = node.config().timers.table_persist_interval;
    node.handle_timeout(T0 + persist);
    assert_eq!(
        request(&drain_raw(&mut node)),
        None,
        "unchanged: nothing to store"
    );
    assert_eq!(node.metrics().table.stores, 2);
    // A failed store is reported for the writes it held.
    node.handle_input(T0 + persist, set("d")).unwrap();
    let (third_store, _) = request(&drain_raw(&mut node)).expect("stored at once");
    node.handle_input(
        T0 + persist,
        Input::Completed {
            id: third_store,
            result: HostResult::Failed("disk full".into()),
        },
    )
    .unwrap();
    let failed: Vec<_> = drain_raw(&mut node)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(Event::Table(TableEvent::NotCommitted { through, reason })) => {
                Some((through, reason))
            }
            _ => None,
        })
        .collect();
    assert_eq!(failed, vec![(4, "disk full".to_string())]);

    // The next run of the same node, alone: its table comes back from the host.
    let mut again = node_with(|c| c.incarnation = 2);
    again
        .handle_input(T0, Input::WallClock { unix_ms: WALL_MS })
        .unwrap();
    let (load, _) = request(&drain_raw(&mut again)).expect("a load at start");
    let damaged = {
        let mut b = bytes.to_vec();
        b[20] ^= 1;
        Bytes::from(b)
    };
    again
        .handle_input(
            T0,
            Input::Completed {
                id: load,
                result: HostResult::Loaded(Some(damaged)),
            },
        )
        .unwrap();
    assert_eq!(again.table().entries_len(), 0, "a damaged blob is ignored");
    assert_eq!(again.metrics().table.state_failures, 1);
    // ... and never overwritten: a local write is not committed, and nothing is stored.
    again.handle_input(T0, set("x")).unwrap();
    let out = drain_raw(&mut again);
    assert_eq!(request(&out), None, "no store over the damaged blob");
    assert!(
        out.iter().any(|o| matches!(
            o,
            Output::Event(Event::Table(TableEvent::NotCommitted { through: 1, .. }))
        )),
        "{out:?}"
    );

    let mut third = node_with(|c| c.incarnation = 3);
    third
        .handle_input(T0, Input::WallClock { unix_ms: WALL_MS })
        .unwrap();
    let (load, _) = request(&drain_raw(&mut third)).expect("a load at start");
    third
        .handle_input(
            T0,
            Input::Completed {
                id: load,
                result: HostResult::Loaded(Some(bytes)),
            },
        )
        .unwrap();
    assert_eq!(third.table().get(b"a"), Some(&b"kept"[..]));
    assert_eq!(third.table().get(b"b"), Some(&b"kept"[..]));
    assert_eq!(third.metrics().table.writes_loaded, 3);
    let changed = drain(&mut third)
        .into_iter()
        .filter(|o| matches!(o, Output::Event(Event::Table(TableEvent::Changed { .. }))))
        .count();
    assert_eq!(changed, 3, "the application hears its keys come back");
}

/// A node of incarnation `incarnation` whose wall clock reads `wall_ms` and whose stored
/// table load is answered with `stored` (`None`: nothing stored).
fn started(incarnation: u64, wall_ms: u64, stored: Option<Bytes>) -> weft_engine::Node {
    let mut node = node_with(|c| c.incarnation = incarnation);
    node.handle_input(T0, Input::WallClock { unix_ms: wall_ms })
        .unwrap();
    let (load, _) = request(&drain_raw(&mut node)).expect("a load at start");
    let result = HostResult::Loaded(stored);
    node.handle_input(T0, Input::Completed { id: load, result })
        .unwrap();
    node
}

/// The table's clock resumes from its stored stamp: a node restarted with its wall clock set
/// back stamps its next write after every write it made before (SPEC.md §19.2).
#[test]
fn the_clock_resumes_from_the_stored_stamp_after_a_restart() {
    let set = |key: &str| {
        Input::Command(Command::Table(TableCommand::Set {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease: None,
        }))
    };
    let mut node = started(1, WALL_MS, None);
    for _ in 0..3 {
        node.handle_input(T0, set("k")).unwrap();
    }
    let before = node.table().current(b"k").expect("set").hlc;
    assert_eq!(before.ms, WALL_MS);
    assert_eq!(before.logical, 2, "three writes in the same ms");
    let mut blob = None;
    for _ in 0..2 {
        let (id, stored) = request(&drain_raw(&mut node)).expect("a store");
        if let HostRequest::StoreState { bytes, .. } = stored {
            blob = Some(bytes);
        }
        let result = HostResult::Stored;
        node.handle_input(T0, Input::Completed { id, result })
            .unwrap();
    }
    let blob = blob.expect("stored");

    // Restarted with the wall clock 10 s back (within the skew the table allows).
    let mut again = started(2, WALL_MS - 10_000, Some(blob));
    again.handle_input(T0, set("other")).unwrap();
    let after = again.table().current(b"other").expect("set").hlc;
    assert!(
        after > before,
        "stamped {after:?}, after the stored {before:?}, not from the wall clock alone"
    );
}

/// A node restarted with its wall clock set back further than the skew the table allows
/// keeps its committed writes: stored writes are not checked for skew again (each passed
/// when it first came), or the next store would have written the table without them.
#[test]
fn committed_writes_survive_a_restart_with_the_clock_set_back() {
    let mut node = started(1, WALL_MS, None);
    let set = Input::Command(Command::Table(TableCommand::Set {
        key: b"k".to_vec(),
        value: b"committed".to_vec(),
        lease: None,
    }));
    node.handle_input(T0, set).unwrap();
    let (id, stored) = request(&drain_raw(&mut node)).expect("a store");
    let HostRequest::StoreState { bytes, .. } = stored else {
        panic!("a store")
    };
    node.handle_input(
        T0,
        Input::Completed {
            id,
            result: HostResult::Stored,
        },
    )
    .unwrap();

    // An hour back: far past the skew.
    let again = started(2, WALL_MS - 3_600_000, Some(bytes));
    assert_eq!(again.table().get(b"k"), Some(&b"committed"[..]));
    assert_eq!(again.metrics().table.writes_too_new, 0);
}
