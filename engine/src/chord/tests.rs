//! Chord on a tiny zero-latency network of machines.

use std::collections::VecDeque;

use bytes::Bytes;
use weft_protocol::{
    holders_key, key_position, node_key_key, ChordPeer, ChordValue, HolderRecord, NodeId, StoreOp,
    StoreOutcome, CHORD_KEY_BYTES_MAX, CHORD_VALUE_BYTES_MAX, HOLDER_LIFETIME, HOLDER_LIFETIME_MAX,
    HOLDER_REANNOUNCE,
};

use super::*;
use crate::time::Duration;

fn peer(i: u8) -> ChordPeer {
    ChordPeer {
        node: NodeId(*blake3::hash(&[i]).as_bytes()),
        addr: format!("n{i}"),
    }
}

/// Node `i`'s key pair.
fn identity(i: u8) -> crate::identity::Identity {
    crate::identity::Identity::from_secret(&[i + 1; 32])
}

/// A get's values without their writers.
fn values(r: Result<ChordResult, ChordError>) -> Option<Vec<Bytes>> {
    match r {
        Ok(ChordResult::Get { values }) => Some(values.into_iter().map(|v| v.value).collect()),
        _ => None,
    }
}

/// Machines by index; `None` is crashed. Messages arrive instantly, in order.
struct Net {
    nodes: Vec<Option<Chord>>,
    peers: Vec<ChordPeer>,
    now: Instant,
    queue: VecDeque<(usize, usize, ChordMessage)>,
    events: Vec<(usize, ChordEvent)>,
}

impl Net {
    fn new(n: u8) -> Net {
        let peers: Vec<ChordPeer> = (0..n).map(peer).collect();
        Net {
            nodes: peers
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    Some(Chord::new(
                        p.clone(),
                        identity(i as u8),
                        ChordConfig::default(),
                        i as u64,
                    ))
                })
                .collect(),
            peers,
            now: Instant::ZERO,
            queue: VecDeque::new(),
            events: Vec::new(),
        }
    }

    fn node(&mut self, i: usize) -> &mut Chord {
        self.nodes[i].as_mut().expect("a live node")
    }

    fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].as_mut().and_then(|c| c.poll_output()) {
            match out {
                ChordOutput::Send { to, msg } => {
                    // A peer outside this network: the message is lost.
                    if let Some(j) = self.peers.iter().position(|p| p.node == to.node) {
                        self.queue.push_back((j, i, msg));
                    }
                }
                ChordOutput::Event(e) => self.events.push((i, e)),
            }
        }
    }

    /// Runs for `ms` simulated milliseconds.
    fn run(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        loop {
            for i in 0..self.nodes.len() {
                self.drain(i);
            }
            while let Some((to, from, msg)) = self.queue.pop_front() {
                let from = self.peers[from].clone();
                if let Some(c) = self.nodes[to].as_mut() {
                    c.handle_message(self.now, &from, msg);
                    self.drain(to);
                }
            }
            let next = self
                .nodes
                .iter()
                .flatten()
                .filter_map(|c| c.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    for i in 0..self.nodes.len() {
                        if let Some(c) = self.nodes[i].as_mut() {
                            c.handle_timeout(self.now);
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn ring_ok(&self) -> bool {
        let mut live: Vec<&Chord> = self.nodes.iter().flatten().collect();
        live.sort_by_key(|c| c.me().ring_id());
        let n = live.len();
        (0..n).all(|k| {
            let succ = &live[(k + 1) % n].me().node;
            let pred = &live[(k + n - 1) % n].me().node;
            live[k].successors()[0].node == *succ
                && live[k].predecessor().map(|p| p.node) == Some(*pred)
        })
    }

    fn request(&mut self, i: usize, id: u64, r: ChordRequest) -> Result<ChordResult, ChordError> {
        let now = self.now;
        self.node(i).request(now, id, r);
        for _ in 0..150 {
            if let Some(at) = self.events.iter().position(|(_, e)| e.request == id) {
                return self.events.remove(at).1.result;
            }
            self.run(100);
        }
        panic!("no answer to request {id}");
    }
}

fn put(key: &[u8], value: &[u8]) -> ChordRequest {
    ChordRequest::Put {
        key: key.to_vec(),
        value: value.to_vec(),
        lifetime_ms: None,
    }
}

fn get(key: &[u8]) -> ChordRequest {
    ChordRequest::Get { key: key.to_vec() }
}

fn joined(n: u8) -> Net {
    let mut net = Net::new(n);
    let now = net.now;
    net.node(0).start(now);
    for i in 1..n as usize {
        let via = net.peers[0].clone();
        net.node(i).join(now, via);
        net.run(500);
    }
    net.run(20_000);
    net
}

#[test]
fn a_lone_node_owns_the_whole_ring_and_stores_locally() {
    let mut net = Net::new(1);
    let now = net.now;
    net.node(0).start(now);
    assert_eq!(
        net.request(0, 1, put(b"k", b"v")),
        Ok(ChordResult::Put {
            replicas: 5,
            nodes: 1,
            of: 1
        }),
        "five positions, one node: reported as 1 of 1"
    );
    assert_eq!(
        values(net.request(0, 2, get(b"k"))),
        Some(vec![Bytes::from_static(b"v")])
    );
    let me = net.peers[0].node;
    assert_eq!(
        net.request(0, 3, ChordRequest::Lookup { target: 42 }),
        Ok(ChordResult::Lookup { owner: me, hops: 0 })
    );
    let delete = |value: &[u8]| ChordRequest::Delete {
        key: b"k".to_vec(),
        value: Some(value.to_vec()),
    };
    assert_eq!(
        net.request(0, 4, delete(b"never put")),
        Ok(ChordResult::Delete {
            replicas: 5,
            nodes: 1,
            of: 1,
            removed: 0
        }),
        "stored, but nothing was there to remove"
    );
    assert_eq!(
        net.request(0, 5, delete(b"v")),
        Ok(ChordResult::Delete {
            replicas: 5,
            nodes: 1,
            of: 1,
            removed: 1
        })
    );
    assert_eq!(
        net.request(0, 6, delete(b"v")),
        Ok(ChordResult::Delete {
            replicas: 5,
            nodes: 1,
            of: 1,
            removed: 0
        }),
        "deleted already"
    );
}

#[test]
fn joins_settle_into_the_true_ring_and_lookups_find_owners() {
    let mut net = joined(8);
    assert!(net.ring_ok());
    let mut sorted: Vec<ChordPeer> = net.peers.clone();
    sorted.sort_by_key(|p| p.ring_id());
    for (k, target) in [0u64, 1 << 40, u64::MAX / 3, u64::MAX]
        .into_iter()
        .enumerate()
    {
        let owner = sorted
            .iter()
            .find(|p| p.ring_id() >= target)
            .unwrap_or(&sorted[0])
            .node;
        match net.request(k % 8, k as u64 + 1, ChordRequest::Lookup { target }) {
            Ok(ChordResult::Lookup { owner: got, .. }) => assert_eq!(got, owner),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_key_survives_while_one_holder_lives_and_a_get_repairs_the_others() {
    let mut net = joined(8);
    assert!(matches!(
        net.request(1, 1, put(b"drop", b"a")),
        Ok(ChordResult::Put { replicas: 5, .. })
    ));
    assert!(matches!(
        net.request(2, 2, put(b"drop", b"b")),
        Ok(ChordResult::Put { replicas: 5, .. })
    ));
    // Crash every holder but the one holding replica 0.
    let holder_of = |net: &Net, r: u8| {
        (0..8).find(|&i| {
            net.nodes[i]
                .as_ref()
                .is_some_and(|c| c.holds(key_position(b"drop", r), b"drop"))
        })
    };
    let keep = holder_of(&net, 0).expect("a holder");
    for r in 1..5 {
        match holder_of(&net, r) {
            Some(h) if h != keep => net.nodes[h] = None,
            _ => {}
        }
    }
    net.run(20_000);
    assert!(net.ring_ok());
    let asker = (0..8)
        .find(|&i| net.nodes[i].is_some())
        .expect("a live node");
    match values(net.request(asker, 3, get(b"drop"))) {
        Some(mut values) => {
            values.sort();
            assert_eq!(
                values,
                vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
            );
        }
        other => panic!("{other:?}"),
    }
    net.run(1000);
    for r in 0..5 {
        assert!(holder_of(&net, r).is_some(), "replica {r} not repaired");
    }
    let repairs: u64 = net
        .nodes
        .iter()
        .flatten()
        .map(|c| c.metrics().read_repairs)
        .sum();
    assert!(repairs > 0);
}

#[test]
fn keys_move_to_a_joiner_and_to_the_successor_on_leave() {
    let mut net = Net::new(3);
    let now = net.now;
    net.node(0).start(now);
    for k in 0..40u8 {
        assert!(net.request(0, u64::from(k) + 1, put(&[k], b"v")).is_ok());
    }
    assert_eq!(net.node(0).records_len(), 200);
    for i in 1..3 {
        let (now, via) = (net.now, net.peers[0].clone());
        net.node(i).join(now, via);
        net.run(10_000);
    }
    assert!(net.ring_ok());
    let held: Vec<usize> = (0..3).map(|i| net.node(i).records_len()).collect();
    assert_eq!(held.iter().sum::<usize>(), 200);
    assert!(held.iter().all(|&h| h > 0), "{held:?}");
    let now = net.now;
    net.node(1).leave(now);
    net.drain(1);
    let queued = net.queue.len();
    net.nodes[1] = None;
    // The handover is already on its way; delivering it puts every record on the others.
    while let Some((to, from, msg)) = net.queue.pop_front() {
        let from = net.peers[from].clone();
        if let Some(c) = net.nodes[to].as_mut() {
            c.handle_message(now, &from, msg);
        }
    }
    assert!(queued > 0);
    assert_eq!(net.node(0).records_len() + net.node(2).records_len(), 200);
}

/// A request none of whose replicas' owners can be reached (every other node crashed, and
/// this one owns none of the key's positions) ends in an error event when its time is up:
/// never in silence, nor as an empty answer.
#[test]
fn a_request_with_no_reachable_peer_ends_in_an_error_event() {
    let mut net = joined(8);
    assert!(net.ring_ok());
    let me = net.node(0).me().ring_id();
    let pred = net.node(0).predecessor().expect("a joined ring").ring_id();
    for r in 0..CHORD_REPLICAS as u8 {
        let position = key_position(b"k", r);
        assert!(
            !ring::in_half_open(pred, position, me),
            "node 0 owns replica {r} of the key"
        );
    }
    for i in 1..8 {
        net.nodes[i] = None;
    }
    let now = net.now;
    net.node(0).request(now, 7, get(b"k"));
    net.run(ChordConfig::default().op_timeout.as_millis() + 1_000);
    assert_eq!(
        net.events,
        vec![(
            0,
            ChordEvent {
                request: 7,
                result: Err(ChordError::Timeout)
            }
        )]
    );
}

#[test]
fn a_dead_successor_is_replaced_from_the_successor_list() {
    let mut net = joined(6);
    let succ = net.node(0).successors()[0].node;
    let i = net
        .peers
        .iter()
        .position(|p| p.node == succ)
        .expect("known");
    net.nodes[i] = None;
    net.run(10_000);
    assert!(net.ring_ok());
    assert_ne!(net.node(0).successors()[0].node, succ);
}

#[test]
fn values_expire_after_their_lifetime() {
    let mut net = joined(3);
    let r = ChordRequest::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lifetime_ms: Some(2000),
    };
    assert!(net.request(0, 1, r).is_ok());
    assert_eq!(
        values(net.request(1, 2, get(b"k"))),
        Some(vec![Bytes::from_static(b"v")])
    );
    net.run(3000);
    assert_eq!(values(net.request(1, 3, get(b"k"))), Some(vec![]));
}

#[test]
fn a_request_while_joining_fails_cleanly() {
    // Joining through a member that never answers: the node routes nothing until it joins,
    // and a request meanwhile ends in an error event (this once indexed an empty list).
    let mut net = Net::new(2);
    net.nodes[1] = None;
    let (now, via) = (net.now, net.peers[1].clone());
    net.node(0).join(now, via);
    assert!(!net.node(0).is_joined());
    assert_eq!(
        net.request(0, 1, ChordRequest::Lookup { target: 7 }),
        Err(ChordError::Timeout)
    );
    assert_eq!(net.request(0, 2, get(b"k")), Err(ChordError::Timeout));
}

/// Arbitrary messages from arbitrary peers, answers to nothing, at arbitrary times: the
/// machine never panics, its successor list never empties, and every request still ends.
#[test]
fn arbitrary_messages_never_break_the_machine() {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::from_seed([7; 32]);
    let mut net = joined(4);
    let peers: Vec<ChordPeer> = (0..12).map(peer).collect();
    let pick = |rng: &mut rand_chacha::ChaCha8Rng| peers[(rng.next_u64() % 12) as usize].clone();
    let mut app = 100;
    for step in 0..20_000u64 {
        let r = rng.next_u64();
        let target = rng.next_u64();
        let from = pick(&mut rng);
        let list: Vec<ChordPeer> = (0..r % 6).map(|_| pick(&mut rng)).collect();
        let request = rng.next_u64() % 64;
        let writer = identity((r % 3) as u8);
        let key = vec![(r % 3) as u8];
        let op = if r % 2 == 0 {
            weft_protocol::StoreOp::Put(vec![(r % 7) as u8; (r % 5) as usize])
        } else {
            weft_protocol::StoreOp::Delete(None)
        };
        let seq = r % 11;
        let mut value = weft_protocol::ChordValue {
            writer: writer.public_key(),
            seq,
            signature: writer.sign(&weft_protocol::ChordValue::signed_bytes(
                &key,
                &writer.public_key(),
                seq,
                &op,
            )),
            op,
            lifetime_ms: (r % 3 == 0).then_some(r % 5000),
        };
        if r % 5 == 0 {
            value.seq += 1;
        }
        let position = if r % 4 == 0 {
            target
        } else {
            key_position(&key, (r % 5) as u8)
        };
        let msg = match r % 10 {
            0 => ChordMessage::Find(weft_protocol::ChordFind { request, target }),
            1 => ChordMessage::Found(weft_protocol::ChordFound {
                request,
                done: r % 4 == 0,
                peers: list,
            }),
            2 => ChordMessage::GetState(request),
            3 => ChordMessage::State(weft_protocol::ChordState {
                request: request % 2,
                predecessor: list.first().cloned(),
                successors: list,
            }),
            4 => ChordMessage::Notify,
            5 => ChordMessage::Store(weft_protocol::ChordStore {
                request,
                position,
                key,
                value,
            }),
            6 => ChordMessage::Stored(weft_protocol::ChordStored {
                request,
                outcome: if r % 2 == 0 {
                    weft_protocol::StoreOutcome::Stored
                } else {
                    weft_protocol::StoreOutcome::StoreFull
                },
            }),
            7 => ChordMessage::Fetch(weft_protocol::ChordFetch {
                request,
                position: target,
                key: vec![1],
            }),
            8 => ChordMessage::Values(weft_protocol::ChordValues {
                request,
                values: vec![value],
            }),
            _ => ChordMessage::Handover(weft_protocol::ChordHandover {
                request,
                records: vec![weft_protocol::ChordRecord {
                    position,
                    key,
                    values: vec![value],
                }],
            }),
        };
        let i = (step % 4) as usize;
        let now = net.now;
        net.node(i).handle_message(now, &from, msg);
        if step % 97 == 0 {
            app += 1;
            net.node(i).request(now, app, get(b"k"));
        }
        if step % 50 == 0 {
            net.run(100);
        }
        assert!(!net.node(i).successors().is_empty());
    }
    net.run(15_000);
    let ended: Vec<u64> = net.events.iter().map(|(_, e)| e.request).collect();
    for id in 101..=app {
        assert!(ended.contains(&id), "request {id} never ended");
    }
}

// ----- issue 14: signed records, bounded storage, confirmed handover ----------------------

/// An entry of `key` signed by `w`.
fn signed(w: &crate::identity::Identity, key: &[u8], seq: u64, op: StoreOp) -> ChordValue {
    let writer = w.public_key();
    ChordValue {
        signature: w.sign(&ChordValue::signed_bytes(key, &writer, seq, &op)),
        writer,
        seq,
        op,
        lifetime_ms: None,
    }
}

fn store_msg(position: u64, key: &[u8], value: ChordValue) -> ChordMessage {
    numbered_store(99, position, key, value)
}

/// A CHORD_STORE numbered `request`.
fn numbered_store(request: u64, position: u64, key: &[u8], value: ChordValue) -> ChordMessage {
    ChordMessage::Store(weft_protocol::ChordStore {
        request,
        position,
        key: key.to_vec(),
        value,
    })
}

/// A peer outside the ring that sends stores.
fn stranger() -> ChordPeer {
    ChordPeer {
        node: NodeId([0x42; 32]),
        addr: "192.0.2.42:7000".into(),
    }
}

/// The attack of issue 14 point 4: a non-owner's CHORD_STORE delete and then put, sent to every
/// holder, replaced the value. Now a delete signed by another key touches only that key's
/// entries, a put claiming the owner's key without its signature is refused, and the owner's
/// value stays on every holder.
#[test]
fn a_non_owner_cannot_delete_or_replace_a_value_on_any_holder() {
    let mut net = joined(4);
    assert!(matches!(
        net.request(0, 1, put(b"k", b"mine")),
        Ok(ChordResult::Put { replicas: 5, .. })
    ));
    let owner = net.node(0).writer();
    let attacker = identity(200);
    let from = peer(200);
    let now = net.now;
    let holders: Vec<(usize, u8)> = (0..4)
        .flat_map(|i| (0..CHORD_REPLICAS as u8).map(move |r| (i, r)))
        .filter(|&(i, r)| net.node(i).holds(key_position(b"k", r), b"k"))
        .collect();
    assert!(holders.len() >= 5);
    for i in 0..4 {
        for r in 0..CHORD_REPLICAS as u8 {
            let p = key_position(b"k", r);
            // A delete of every value, signed by the attacker; then a put naming the owner as
            // its writer with the attacker's signature; then the owner's delete replayed with
            // a forged higher seq.
            let del = signed(&attacker, b"k", u64::MAX, StoreOp::Delete(None));
            let mut forged = signed(&attacker, b"k", u64::MAX, StoreOp::Put(b"evil".to_vec()));
            forged.writer = owner;
            let mut forged_del = signed(&attacker, b"k", u64::MAX, StoreOp::Delete(None));
            forged_del.writer = owner;
            for m in [del, forged, forged_del] {
                net.node(i)
                    .handle_message(now, &from, store_msg(p, b"k", m));
            }
        }
    }
    net.run(100);
    for &(i, r) in &holders {
        {
            let now = net.now;
            let held = net.node(i).entries(now, key_position(b"k", r), b"k");
            {
                assert!(
                    held.iter()
                        .any(|e| e.writer == owner && e.op == StoreOp::Put(b"mine".to_vec())),
                    "node {i} replica {r}: {held:?}"
                );
                assert!(held
                    .iter()
                    .all(|e| e.writer == owner || e.writer == attacker.public_key()));
            }
        }
    }
    let invalid: u64 = (0..4).map(|i| net.node(i).metrics().entries_invalid).sum();
    assert!(invalid >= 10, "forged entries counted: {invalid}");
    match net.request(2, 2, get(b"k")) {
        Ok(ChordResult::Get { values }) => {
            assert_eq!(
                values,
                vec![ChordItem {
                    writer: owner,
                    value: Bytes::from_static(b"mine")
                }]
            );
        }
        other => panic!("{other:?}"),
    }
    // The owner itself can delete, and the delete sticks against a replay of the put.
    assert!(matches!(
        net.request(
            0,
            3,
            ChordRequest::Delete {
                key: b"k".to_vec(),
                value: None
            }
        ),
        Ok(ChordResult::Delete { replicas: 5, .. })
    ));
    assert_eq!(values(net.request(3, 4, get(b"k"))), Some(vec![]));
}

/// Issue 14 point 4: storage was bounded only by records (about 64 GiB). Now one writer's
/// entries and the node's bytes are bounded, the excess refused with a typed outcome and
/// counted.
#[test]
fn storage_is_bounded_per_writer_and_in_total() {
    let config = ChordConfig {
        writer_values_max: 10,
        writer_bytes_max: 1 << 30,
        stored_bytes_max: 64 * 1024,
        ..ChordConfig::default()
    };
    let mut c = Chord::new(peer(0), identity(0), config.clone(), 1);
    let now = Instant::ZERO;
    c.start(now);
    let from = peer(1);
    let big = vec![7u8; 4000];
    let mut stored = Vec::new();
    // One writer: at most 10 entries.
    let w = identity(1);
    for n in 0..30u64 {
        let key = n.to_be_bytes();
        let e = signed(&w, &key, 1, StoreOp::Put(big.clone()));
        c.handle_message(now, &from, store_msg(key_position(&key, 0), &key, e));
    }
    // Many writers: at most 64 KiB in all.
    for n in 0..100u8 {
        let w = identity(n.wrapping_add(10));
        let key = [n, 1];
        let e = signed(&w, &key, 1, StoreOp::Put(big.clone()));
        c.handle_message(now, &from, store_msg(key_position(&key, 0), &key, e));
    }
    while let Some(out) = c.poll_output() {
        if let ChordOutput::Send {
            msg: ChordMessage::Stored(s),
            ..
        } = out
        {
            stored.push(s.outcome);
        }
    }
    let count = |o| stored.iter().filter(|&&x| x == o).count() as u64;
    assert_eq!(count(StoreOutcome::WriterFull), 20);
    assert_eq!(c.metrics().entries_writer_full, 20);
    assert!(count(StoreOutcome::StoreFull) > 0);
    assert_eq!(
        c.metrics().entries_store_full,
        count(StoreOutcome::StoreFull)
    );
    assert!(
        c.stored_bytes() <= config.stored_bytes_max,
        "{}",
        c.stored_bytes()
    );
    assert!(c.stored_bytes() > config.stored_bytes_max - 5000);
}

/// The request numbers of the CHORD_HANDOVERs among `c`'s outputs, which it drains.
fn handovers_sent(c: &mut Chord) -> Vec<u64> {
    std::iter::from_fn(|| c.poll_output())
        .filter_map(|o| match o {
            ChordOutput::Send {
                msg: ChordMessage::Handover(h),
                ..
            } => Some(h.request),
            _ => None,
        })
        .collect()
}

/// A: the node of `net` (three) holding the most records; M: a peer whose id sits just
/// below A's (a notifier A takes as its predecessor).
fn richest_and_below_it(net: &mut Net) -> (usize, ChordPeer) {
    let a = (0..3)
        .max_by_key(|&i| net.node(i).records_len())
        .expect("3 nodes");
    let a_id = net.peers[a].ring_id();
    let mut m = peer(250);
    m.node.0[..8].copy_from_slice(&a_id.wrapping_sub(1).to_be_bytes());
    (a, m)
}

/// Issue 14 point 4: a CHORD_NOTIFY from an id ground to sit just below A made A hand over
/// its keys and delete its copies at once. Now A keeps every copy until the new holder
/// confirms the handover, and a handover never confirmed loses nothing.
#[test]
fn a_ground_notify_keeps_copies_until_the_new_holder_confirms() {
    let mut net = joined(3);
    for n in 0..20u8 {
        assert!(net.request(0, 100 + u64::from(n), put(&[n], b"v")).is_ok());
    }
    let (a, m) = richest_and_below_it(&mut net);
    let held = net.node(a).records_len();
    let now = net.now;
    net.node(a).handle_message(now, &m, ChordMessage::Notify);
    let mut handover = None;
    while let Some(out) = net.node(a).poll_output() {
        if let ChordOutput::Send {
            to,
            msg: ChordMessage::Handover(h),
        } = out
        {
            assert_eq!(to.node, m.node);
            handover = Some(h);
        }
    }
    let h = handover.expect("A hands its keys to the notifier");
    assert!(!h.records.is_empty());
    assert_eq!(
        net.node(a).records_len(),
        held,
        "no copy dropped before confirmation"
    );
    // Unconfirmed (M never answers): the copies stay.
    net.nodes.iter_mut().enumerate().for_each(|(i, c)| {
        if i != a {
            *c = None;
        }
    });
    let now = net.now + Duration::from_millis(5000);
    net.node(a).handle_timeout(now);
    assert_eq!(net.node(a).records_len(), held);
    // Confirmed: the copies outside A's range by its view go.
    let request = loop {
        match net.node(a).poll_output() {
            Some(ChordOutput::Send {
                msg: ChordMessage::Handover(h),
                ..
            }) => break h.request,
            Some(_) => {}
            None => {
                let later = net.now + Duration::from_millis(10_000);
                net.now = later;
                net.node(a).handle_timeout(later);
            }
        }
    };
    let now = net.now;
    let stored = ChordMessage::Stored(weft_protocol::ChordStored {
        request,
        outcome: StoreOutcome::Stored,
    });
    net.node(a).handle_message(now, &m, stored);
    assert!(net.node(a).records_len() < held);
    assert!(net.node(a).metrics().records_handover_confirmed > 0);
}

/// An answer of the wrong kind (a CHORD_FOUND carrying a CHORD_HANDOVER's number) leaves the
/// request pending: it times out and the records go again at a later check. Taken as an
/// answer, the handover never finished and no later handover went, for the node's life.
#[test]
fn an_answer_of_the_wrong_kind_does_not_end_a_request() {
    let mut net = joined(3);
    for n in 0..20u8 {
        assert!(net.request(0, 100 + u64::from(n), put(&[n], b"v")).is_ok());
    }
    let (a, m) = richest_and_below_it(&mut net);
    net.nodes.iter_mut().enumerate().for_each(|(i, c)| {
        if i != a {
            *c = None;
        }
    });
    let now = net.now;
    net.node(a).handle_message(now, &m, ChordMessage::Notify);
    let first = handovers_sent(net.node(a));
    assert!(!first.is_empty(), "A hands its keys to the notifier");
    for request in &first {
        let found = ChordMessage::Found(weft_protocol::ChordFound {
            request: *request,
            done: true,
            peers: vec![],
        });
        net.node(a).handle_message(now, &m, found);
    }
    let mut again = Vec::new();
    for _ in 0..60 {
        net.now = net.now + Duration::from_millis(1000);
        let now = net.now;
        net.node(a).handle_timeout(now);
        // M stays A's predecessor (it notifies again).
        net.node(a).handle_message(now, &m, ChordMessage::Notify);
        again.extend(
            handovers_sent(net.node(a))
                .into_iter()
                .filter(|r| !first.contains(r)),
        );
        if !again.is_empty() {
            break;
        }
    }
    assert!(!again.is_empty(), "no handover after the wrong answer");
}

/// A durable replica answers CHORD_STORED only once its records are committed; a snapshot
/// keeps expiries as Unix ms, so restored at a later wall clock an expired entry is dropped and
/// a live one keeps the time it has left (SPEC.md §20.8).
#[test]
fn a_durable_node_answers_after_the_commit_and_its_records_survive_a_restart() {
    let mut net = Net::new(1);
    let now = net.now;
    net.node(0).start(now);
    net.node(0).set_durable(true);
    net.node(0).request(now, 1, put(b"kept", b"v"));
    let short = ChordRequest::Put {
        key: b"short".to_vec(),
        value: b"s".to_vec(),
        lifetime_ms: Some(1_000),
    };
    net.node(0).request(now, 2, short);
    net.run(0);
    assert!(net.events.is_empty(), "no answer before the commit");
    assert!(net.node(0).needs_store());
    let wall_ms = 1_800_000_000_000;
    let (blob, commit) = net.node(0).begin_store(now, wall_ms);
    assert_eq!(commit.len(), 10, "five positions of two puts");
    assert!(!net.node(0).needs_store());
    net.node(0).committed(now, commit);
    net.run(0);
    assert_eq!(net.events.len(), 2, "both answered after the commit");
    assert!(net
        .events
        .iter()
        .all(|(_, e)| matches!(e.result, Ok(ChordResult::Put { replicas: 5, .. }))));

    // The node restarts: its Instant clock is back at zero, its wall clock 500 ms later.
    let fresh = |net: &Net| {
        let mut c = Chord::new(net.peers[0].clone(), identity(0), ChordConfig::default(), 9);
        c.start(Instant::ZERO);
        c
    };
    let mut again = fresh(&net);
    assert_eq!(again.restore(Instant::ZERO, wall_ms + 500, &blob), Some(10));
    let short_at = key_position(b"short", 0);
    let left = again.entries(Instant::ZERO, short_at, b"short");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].lifetime_ms, Some(500), "the time it had left");
    assert!(!again.needs_store(), "what was restored is stored already");
    let mut later = fresh(&net);
    assert_eq!(
        later.restore(Instant::ZERO, wall_ms + 1_000, &blob),
        Some(5),
        "the expired put is dropped at load"
    );
    assert!(later.holds(key_position(b"kept", 0), b"kept"));
    assert!(!later.holds(short_at, b"short"));
    let mut damaged = blob.to_vec();
    damaged[20] ^= 1;
    assert_eq!(fresh(&net).restore(Instant::ZERO, wall_ms, &damaged), None);
}

/// A lone durable node that was asked to put `kept` (its answer held for the commit), and
/// the time.
fn durable_with_kept() -> (Net, Instant) {
    let mut net = Net::new(1);
    let now = net.now;
    net.node(0).start(now);
    net.node(0).set_durable(true);
    net.node(0).request(now, 1, put(b"kept", b"v"));
    net.run(0);
    (net, now)
}

/// An entry a durable replica holds and has committed, sent to it again (a repair, a
/// resend, or a peer sending it over and over), is answered at once and costs no snapshot: a
/// snapshot holds every record (up to `stored_bytes_max`) for a message of ~130 bytes.
#[test]
fn a_committed_entry_sent_again_is_answered_at_once_without_a_snapshot() {
    let (mut net, now) = durable_with_kept();
    let wall_ms = 1_800_000_000_000;
    let (_, commit) = net.node(0).begin_store(now, wall_ms);
    net.node(0).committed(now, commit);
    net.run(0);
    let position = key_position(b"kept", 0);
    let value = net.node(0).entries(now, position, b"kept")[0].clone();
    let sender = stranger();
    for request in 0..100 {
        let store = numbered_store(request, position, b"kept", value.clone());
        net.node(0).handle_message(now, &sender, store);
        assert!(!net.node(0).needs_store(), "no snapshot for it");
        let answered = std::iter::from_fn(|| net.node(0).poll_output()).any(|o| {
            matches!(o, ChordOutput::Send { to, msg: ChordMessage::Stored(s) }
                if to == sender && s.request == request && s.outcome == StoreOutcome::Stored)
        });
        assert!(answered, "request {request} answered at once");
    }
    // While a snapshot is under way, even a held entry's answer waits for its commit.
    net.node(0).request(now, 2, put(b"new", b"v"));
    let (_, commit) = net.node(0).begin_store(now, wall_ms);
    let store = numbered_store(500, position, b"kept", value);
    net.node(0).handle_message(now, &sender, store);
    let early = std::iter::from_fn(|| net.node(0).poll_output())
        .any(|o| matches!(o, ChordOutput::Send { to, .. } if to == sender));
    assert!(!early, "held while the snapshot is not committed");
    net.node(0).committed(now, commit);
}

/// Answers let go without a snapshot (the host's node before it knows the calendar time)
/// leave no snapshot counted as under way, held or not: one counted and never committed had
/// every later answer of an entry already committed wait for a snapshot, on every node.
#[test]
fn answers_let_go_without_a_snapshot_leave_none_under_way() {
    let mut net = Net::new(1);
    let now = net.now;
    net.node(0).start(now);
    net.node(0).set_durable(true);
    // The first timer, before the wall clock: nothing is held yet.
    net.node(0).release_held(now);
    net.node(0).request(now, 1, put(b"kept", b"v"));
    net.run(0);
    net.node(0).release_held(now);
    net.run(0);
    assert!(net.events.iter().any(|(_, e)| e.request == 1), "let go");
    let (_, commit) = net.node(0).begin_store(now, 1_800_000_000_000);
    net.node(0).committed(now, commit);
    net.run(0);
    let position = key_position(b"kept", 0);
    let value = net.node(0).entries(now, position, b"kept")[0].clone();
    let sender = stranger();
    net.node(0)
        .handle_message(now, &sender, numbered_store(7, position, b"kept", value));
    let answered = std::iter::from_fn(|| net.node(0).poll_output()).any(|o| {
        matches!(o, ChordOutput::Send { to, msg: ChordMessage::Stored(s) }
            if to == sender && s.request == 7)
    });
    assert!(answered, "a committed entry sent again is answered at once");
}

/// A finger whose lookup fails passes the turn to the next: retried first each time, one
/// whose hops kept failing held every later finger back from being refreshed.
#[test]
fn a_failed_finger_lookup_moves_on_to_the_next_finger() {
    let mut net = joined(8);
    let now = net.now;
    let c = net.node(0);
    // A finger whose lookup goes to a peer (one this node resolves itself ends at once).
    let mut i = c.next_finger;
    for _ in 0..FINGERS {
        if c.finger_lookup {
            break;
        }
        i = c.next_finger;
        c.fix_fingers(now);
    }
    assert!(c.finger_lookup, "no finger asked of a peer");
    let lid = c
        .lookups
        .iter()
        .find(|(_, l)| matches!(l.purpose, super::lookup::LookupFor::Finger(f) if f == i))
        .map(|(lid, _)| *lid)
        .expect("the finger's lookup");
    c.lookup_failed(now, lid);
    assert!(!c.finger_lookup);
    assert_eq!(c.next_finger, (i + 1) % FINGERS);
}

/// A handover goes in messages of at most `HANDOVER_BYTES_MAX` bytes of records, at most
/// `HANDOVER_CHUNKS_PER_ROUND` at a time, the next round once they are confirmed: records
/// of large values (256 of 64 KiB went over a frame's payload bound) and a large store (all
/// of it queued at once went over the send queue's bound) no longer break the link.
#[test]
fn a_large_handover_goes_in_bounded_messages_a_few_at_a_time() {
    use super::maintenance::{HANDOVER_BYTES_MAX, HANDOVER_CHUNKS_PER_ROUND};
    let mut net = joined(3);
    let value = vec![7u8; 60 * 1024];
    for n in 0..100u64 {
        let key = n.to_be_bytes();
        // From each node in turn: a writer's share of a holder is bounded.
        let from = (n % 3) as usize;
        assert!(
            net.request(from, 1000 + n, put(&key, &value)).is_ok(),
            "put {n}"
        );
    }
    let (a, m) = richest_and_below_it(&mut net);
    let held = net.node(a).records_len();
    net.nodes.iter_mut().enumerate().for_each(|(i, c)| {
        if i != a {
            *c = None;
        }
    });
    let now = net.now;
    net.node(a).handle_message(now, &m, ChordMessage::Notify);
    let (mut rounds, mut records) = (0, 0);
    loop {
        let sent: Vec<weft_protocol::ChordHandover> =
            std::iter::from_fn(|| net.node(a).poll_output())
                .filter_map(|o| match o {
                    ChordOutput::Send {
                        msg: ChordMessage::Handover(h),
                        ..
                    } => Some(h),
                    _ => None,
                })
                .collect();
        if sent.is_empty() {
            break;
        }
        rounds += 1;
        assert!(
            sent.len() <= HANDOVER_CHUNKS_PER_ROUND,
            "{} at once",
            sent.len()
        );
        for h in sent {
            records += h.records.len();
            let payload =
                weft_protocol::Message::Chord(ChordMessage::Handover(h.clone())).encode_payload();
            assert!(
                payload.len() <= HANDOVER_BYTES_MAX + 64,
                "{} bytes",
                payload.len()
            );
            let stored = ChordMessage::Stored(weft_protocol::ChordStored {
                request: h.request,
                outcome: StoreOutcome::Stored,
            });
            net.node(a).handle_message(now, &m, stored);
        }
    }
    assert!(rounds > 1, "{rounds} rounds");
    assert_eq!(
        net.node(a).records_len(),
        held - records,
        "every record confirmed went"
    );
    assert!(records > 4 * 16, "{records} records handed over");
}

/// A durable replica holds at most `HELD_ANSWERS_MAX` answers for the next commit: a peer
/// resending entries while the snapshot waits would otherwise grow the list without end.
/// Past it answers are dropped (counted), and the machine says the next snapshot should not
/// wait.
#[test]
fn a_durable_node_holds_at_most_held_answers_max_answers() {
    let (mut net, now) = durable_with_kept();
    assert!(net.events.is_empty(), "held for the commit");
    let position = key_position(b"kept", 0);
    let value = net.node(0).entries(now, position, b"kept")[0].clone();
    let sender = stranger();
    for request in 0..HELD_ANSWERS_MAX as u64 {
        let store = numbered_store(request, position, b"kept", value.clone());
        net.node(0).handle_message(now, &sender, store);
    }
    assert!(net.node(0).answers_full());
    assert!(net.node(0).metrics().answers_dropped > 0);
    let wall_ms = 1_800_000_000_000;
    let (_, commit) = net.node(0).begin_store(now, wall_ms);
    assert_eq!(commit.len(), HELD_ANSWERS_MAX);
    assert!(!net.node(0).answers_full());
    net.node(0).committed(now, commit);
}

#[test]
fn a_key_or_value_over_its_wire_limit_is_refused_and_one_at_the_limit_is_stored() {
    // No CHORD_FETCH, CHORD_STORE or CHORD_HANDOVER may carry a key over
    // CHORD_KEY_BYTES_MAX or a value over CHORD_VALUE_BYTES_MAX (SPEC.md §20.2), so the
    // request ends at once in an error instead (the node fuzz target once sent them).
    let mut net = joined(3);
    let long_key = vec![7; CHORD_KEY_BYTES_MAX + 1];
    let key_error = Err(ChordError::TooLarge {
        what: "key",
        len: CHORD_KEY_BYTES_MAX + 1,
        max: CHORD_KEY_BYTES_MAX,
    });
    assert_eq!(net.request(0, 1, put(&long_key, b"v")), key_error);
    assert_eq!(net.request(1, 2, get(&long_key)), key_error);
    let delete = ChordRequest::Delete {
        key: long_key,
        value: None,
    };
    assert_eq!(net.request(2, 3, delete), key_error);
    let long_value = vec![1; CHORD_VALUE_BYTES_MAX + 1];
    assert_eq!(
        net.request(0, 4, put(b"k", &long_value)),
        Err(ChordError::TooLarge {
            what: "value",
            len: CHORD_VALUE_BYTES_MAX + 1,
            max: CHORD_VALUE_BYTES_MAX,
        })
    );
    let (key, value) = (vec![7; CHORD_KEY_BYTES_MAX], vec![1; CHORD_VALUE_BYTES_MAX]);
    assert!(net.request(0, 5, put(&key, &value)).is_ok());
    assert_eq!(
        values(net.request(1, 6, get(&key))),
        Some(vec![Bytes::from(value)])
    );
}

// ----- issue 21: the drops tracker's records -----------------------------------------------

/// The calendar time the tracker tests start at (Unix ms).
const WALL_MS: u64 = 1_800_000_000_000;

/// A holders-key entry for `drop`: `w`'s holder record expiring at `expires_unix_ms`, put by
/// `w` with sequence number `seq`.
fn holder_entry(
    w: &crate::identity::Identity,
    drop: [u8; 32],
    seq: u64,
    expires_unix_ms: u64,
) -> ChordValue {
    let record = HolderRecord::sign(
        drop,
        &w.public_key(),
        format!("10.0.0.1:{seq}"),
        expires_unix_ms,
        |m| w.sign(m),
    );
    signed(w, &holders_key(&drop), seq, StoreOp::Put(record.encode()))
}

/// A lone node whose wall clock reads [`WALL_MS`] at `Instant::ZERO`.
fn tracker_node(config: ChordConfig) -> Chord {
    let mut c = Chord::new(peer(0), identity(0), config, 1);
    c.start(Instant::ZERO);
    c.observe_wall_clock(Instant::ZERO, Some(WALL_MS));
    c
}

/// Offers `e` under `key`'s first position in a CHORD_STORE; the answer's outcome.
fn offer(c: &mut Chord, now: Instant, key: &[u8], e: ChordValue) -> StoreOutcome {
    c.handle_message(now, &peer(1), store_msg(key_position(key, 0), key, e));
    let mut outcome = None;
    while let Some(out) = c.poll_output() {
        if let ChordOutput::Send {
            msg: ChordMessage::Stored(s),
            ..
        } = out
        {
            outcome = Some(s.outcome);
        }
    }
    outcome.expect("a CHORD_STORE is answered")
}

/// The holder records held under `drop`'s first position, by holder.
fn held_holders(c: &Chord, now: Instant, drop: [u8; 32]) -> Vec<HolderRecord> {
    let key = holders_key(&drop);
    c.entries(now, key_position(&key, 0), &key)
        .iter()
        .filter_map(|e| HolderRecord::decode(e.value()?))
        .collect()
}

#[test]
fn forged_tracker_records_of_every_kind_are_refused_and_counted() {
    let mut c = tracker_node(ChordConfig::default());
    let now = Instant::ZERO;
    let a = identity(10);
    let b = identity(11);
    let drop = [4; 32];
    let key = holders_key(&drop);
    let lifetime_ms = HOLDER_LIFETIME.as_millis() as u64;
    let max_ms = HOLDER_LIFETIME_MAX.as_millis() as u64;
    let record = |w: &crate::identity::Identity, drop, expires| {
        HolderRecord::sign(drop, &w.public_key(), "10.0.0.1:1".into(), expires, |m| {
            w.sign(m)
        })
    };
    let mut bad_signature = record(&a, drop, WALL_MS + lifetime_ms);
    bad_signature.signature.0[5] ^= 1;
    let put = |w, v: Vec<u8>| signed(w, &key, 1, StoreOp::Put(v));
    let holder_cases = [
        put(&b, record(&a, drop, WALL_MS + lifetime_ms).encode()),
        put(&a, bad_signature.encode()),
        put(&a, record(&a, [5; 32], WALL_MS + lifetime_ms).encode()),
        put(&a, record(&a, drop, WALL_MS - 1).encode()),
        put(&a, record(&a, drop, WALL_MS + max_ms + 1).encode()),
        put(&a, b"not a record".to_vec()),
    ];
    for (i, e) in holder_cases.into_iter().enumerate() {
        assert_eq!(
            offer(&mut c, now, &key, e),
            StoreOutcome::Invalid,
            "case {i}"
        );
    }
    // Node-key records: another writer, another key, and a prefix with a short tail.
    let node_key = node_key_key(&a.node_id());
    let others = [
        signed(&b, &node_key, 1, StoreOp::Put(b.public_key().0.to_vec())),
        signed(&a, &node_key, 1, StoreOp::Put(b.public_key().0.to_vec())),
        signed(&b, &node_key, 1, StoreOp::Delete(None)),
    ];
    for (i, e) in others.into_iter().enumerate() {
        assert_eq!(
            offer(&mut c, now, &node_key, e),
            StoreOutcome::Invalid,
            "case {i}"
        );
    }
    let short = &node_key[..node_key.len() - 1];
    let e = signed(&a, short, 1, StoreOp::Put(a.public_key().0.to_vec()));
    assert_eq!(offer(&mut c, now, short, e), StoreOutcome::Invalid);
    // The same through a handover.
    let forged = put(&b, record(&a, drop, WALL_MS + lifetime_ms).encode());
    let handover = ChordMessage::Handover(weft_protocol::ChordHandover {
        request: 7,
        records: vec![weft_protocol::ChordRecord {
            position: key_position(&key, 0),
            key: key.clone(),
            values: vec![forged],
        }],
    });
    c.handle_message(now, &peer(1), handover);
    assert_eq!(c.records_len(), 0, "nothing forged is held");
    assert_eq!(c.metrics().entries_tracker_invalid, 11);
    assert_eq!(c.metrics().entries_invalid, 11);
    // The valid ones are stored.
    let own = signed(&a, &node_key, 1, StoreOp::Put(a.public_key().0.to_vec()));
    assert_eq!(offer(&mut c, now, &node_key, own), StoreOutcome::Stored);
    let e = holder_entry(&a, drop, 1, WALL_MS + lifetime_ms);
    assert_eq!(offer(&mut c, now, &key, e.clone()), StoreOutcome::Stored);
    // A node that never had a wall clock cannot check an expiry: it refuses holder records.
    let mut clockless = Chord::new(peer(0), identity(0), ChordConfig::default(), 1);
    assert_eq!(offer(&mut clockless, now, &key, e), StoreOutcome::Invalid);
}

#[test]
fn a_holders_reannouncement_replaces_its_own_record_which_expires_with_it() {
    let mut c = tracker_node(ChordConfig::default());
    let a = identity(10);
    let drop = [4; 32];
    let key = holders_key(&drop);
    let t0 = Instant::ZERO;
    let lifetime_ms = HOLDER_LIFETIME.as_millis() as u64;
    let first = holder_entry(&a, drop, 1, WALL_MS + lifetime_ms);
    assert_eq!(offer(&mut c, t0, &key, first.clone()), StoreOutcome::Stored);
    // Re-announced after HOLDER_REANNOUNCE with a new address and expiry.
    let t1 = t0 + Duration::from_millis(HOLDER_REANNOUNCE.as_millis() as u64);
    let again_ms = WALL_MS + HOLDER_REANNOUNCE.as_millis() as u64 + lifetime_ms;
    let second = holder_entry(&a, drop, 2, again_ms);
    assert_eq!(offer(&mut c, t1, &key, second), StoreOutcome::Stored);
    let held = held_holders(&c, t1, drop);
    assert_eq!(held.len(), 1, "one record per holder");
    assert_eq!(held[0].expires_unix_ms, again_ms);
    assert_eq!(offer(&mut c, t1, &key, first), StoreOutcome::Stale);
    // The entry lives as long as its record, whatever lifetime the put claimed.
    let just_before = t0 + Duration::from_millis(again_ms - WALL_MS - 1);
    assert_eq!(held_holders(&c, just_before, drop).len(), 1);
    let at_expiry = t0 + Duration::from_millis(again_ms - WALL_MS);
    assert!(held_holders(&c, at_expiry, drop).is_empty());
    // A holder's tombstone replaces its record and lives at most HOLDER_LIFETIME_MAX.
    let third = holder_entry(&a, drop, 3, WALL_MS + 200_000);
    assert_eq!(offer(&mut c, t1, &key, third), StoreOutcome::Stored);
    let gone = signed(&a, &key, 4, StoreOp::Delete(None));
    assert_eq!(offer(&mut c, t1, &key, gone), StoreOutcome::Stored);
    let p = key_position(&key, 0);
    let held = c.entries(t1, p, &key);
    assert!(held.len() == 1 && !held[0].is_put(), "{held:?}");
    let max_ms = HOLDER_LIFETIME_MAX.as_millis() as u64;
    assert_eq!(held[0].lifetime_ms, Some(max_ms));
}

/// A Sybil flood under a drop's holders key: many valid records from fresh keys, plus each
/// flooder's tombstones. The honest holders that were in stay, can re-announce while the key
/// is full, and are never evicted; the bound is `tracker_holders_max`, not
/// `values_per_key_max`; a new holder is refused only while the key is full of live records.
#[test]
fn a_flood_of_other_holders_never_removes_the_honest_ones() {
    let config = ChordConfig::default();
    let bound = config.tracker_holders_max;
    assert!(bound > config.values_per_key_max);
    let mut c = tracker_node(config);
    let drop = [4; 32];
    let key = holders_key(&drop);
    let t0 = Instant::ZERO;
    let lifetime_ms = HOLDER_LIFETIME.as_millis() as u64;
    let honest: Vec<_> = (0..3).map(|i| identity(20 + i)).collect();
    for h in &honest {
        let e = holder_entry(h, drop, 1, WALL_MS + lifetime_ms);
        assert_eq!(offer(&mut c, t0, &key, e), StoreOutcome::Stored);
    }
    // The flood: 2 × the bound fresh ids, each a valid record expiring in 100 s and then a
    // delete of every value of its own for 100 s (it replaces only its own record; a
    // tombstone takes a slot like a record).
    let mut outcomes = Vec::new();
    for i in 0..2 * bound as u32 {
        let mut secret = [0u8; 32];
        secret[..4].copy_from_slice(&i.to_be_bytes());
        secret[31] = 0xf1;
        let sybil = crate::identity::Identity::from_secret(&secret);
        let e = holder_entry(&sybil, drop, 1, WALL_MS + 100_000);
        outcomes.push(offer(&mut c, t0, &key, e));
        let mut d = signed(&sybil, &key, 2, StoreOp::Delete(None));
        d.lifetime_ms = Some(100_000);
        offer(&mut c, t0, &key, d);
    }
    let stored = outcomes
        .iter()
        .filter(|&&o| o == StoreOutcome::Stored)
        .count();
    assert_eq!(stored, bound - honest.len());
    assert_eq!(c.entries(t0, key_position(&key, 0), &key).len(), bound);
    let holders_of = |c: &Chord, now| -> Vec<NodeId> {
        held_holders(c, now, drop)
            .iter()
            .map(|r| r.holder)
            .collect()
    };
    for h in &honest {
        assert!(holders_of(&c, t0).contains(&h.node_id()));
    }
    // Full: an honest holder still re-announces; a new one is refused, nothing is evicted.
    let t1 = t0 + Duration::from_secs(50);
    for h in &honest {
        let e = holder_entry(h, drop, 2, WALL_MS + 50_000 + lifetime_ms);
        assert_eq!(offer(&mut c, t1, &key, e), StoreOutcome::Stored);
    }
    let late = identity(30);
    let e = holder_entry(&late, drop, 1, WALL_MS + 50_000 + lifetime_ms);
    assert_eq!(offer(&mut c, t1, &key, e), StoreOutcome::KeyFull);
    // Once the flood's records expire they count no more: the new holder gets in at once.
    let t2 = t0 + Duration::from_secs(100);
    let e = holder_entry(&late, drop, 2, WALL_MS + 100_000 + lifetime_ms);
    assert_eq!(offer(&mut c, t2, &key, e), StoreOutcome::Stored);
    let now_held = holders_of(&c, t2);
    assert_eq!(now_held.len(), honest.len() + 1);
    for h in honest.iter().chain([&late]) {
        assert!(now_held.contains(&h.node_id()));
    }
}

/// A get of a holders key through the ring returns each holder's newest record once.
#[test]
fn a_get_of_a_holders_key_returns_each_holders_newest_record() {
    let mut net = joined(4);
    let now = net.now;
    for i in 0..4 {
        net.node(i).observe_wall_clock(now, Some(WALL_MS));
    }
    let drop = [8; 32];
    let key = holders_key(&drop);
    let lifetime_ms = HOLDER_LIFETIME.as_millis() as u64;
    for (id, (i, expires)) in [(0, 1), (1, 1), (0, 2)].into_iter().enumerate() {
        let w = net.node(i).writer();
        let identity = identity(i as u8);
        assert_eq!(identity.public_key(), w);
        let record = HolderRecord::sign(
            drop,
            &w,
            format!("n{i}"),
            WALL_MS + lifetime_ms + expires,
            |m| identity.sign(m),
        );
        let r = ChordRequest::Put {
            key: key.clone(),
            value: record.encode(),
            lifetime_ms: None,
        };
        assert!(matches!(
            net.request(i, id as u64 + 1, r),
            Ok(ChordResult::Put { replicas: 5, .. })
        ));
    }
    let Ok(ChordResult::Get { values }) = net.request(3, 9, get(&key)) else {
        panic!("the get fails");
    };
    let mut got: Vec<(NodeId, u64)> = values
        .iter()
        .filter_map(|v| HolderRecord::decode(&v.value))
        .map(|r| (r.holder, r.expires_unix_ms - WALL_MS - lifetime_ms))
        .collect();
    got.sort();
    let mut want = vec![(identity(0).node_id(), 2), (identity(1).node_id(), 1)];
    want.sort();
    assert_eq!(got, want);
}

/// A key's bounds never pass what one CHORD_VALUES can carry, whatever the configuration.
#[test]
fn per_key_bounds_are_capped_at_what_a_message_carries() {
    let config = ChordConfig {
        values_per_key_max: 1000,
        tracker_holders_max: 1000,
        ..ChordConfig::default()
    };
    let limits = super::store_limits(&config);
    assert_eq!(limits.values_per_key_max, CHORD_VALUES_MAX);
    assert_eq!(limits.tracker_holders_max, CHORD_VALUES_MAX);
}

/// `failed_max` remembered suspicions: when full, the oldest goes, whatever its node id; a
/// peer suspected again takes no other's place; 0 counts as 1 (it looped forever).
#[test]
fn a_full_suspicion_list_forgets_the_oldest() {
    for failed_max in [0usize, 1, 3] {
        let config = ChordConfig {
            failed_max,
            ..ChordConfig::default()
        };
        let mut c = Chord::new(peer(0), identity(0), config, 1);
        let t0 = Instant::ZERO;
        c.start(t0);
        // Suspected in an order unlike their ids' order.
        let mut order: Vec<NodeId> = (1..=5).map(|i| peer(i).node).collect();
        order.sort();
        order.reverse();
        for (i, node) in order.iter().enumerate() {
            c.mark_failed(t0 + Duration::from_millis(i as u64), node, false);
        }
        let kept = failed_max.max(1);
        let newest = &order[order.len() - kept..];
        for node in &order {
            assert_eq!(c.is_failed(node), newest.contains(node), "max {failed_max}");
        }
        // Suspected again: the list stays as it was.
        let last = *order.last().expect("five nodes");
        c.mark_failed(t0 + Duration::from_millis(10), &last, false);
        for node in &order {
            assert_eq!(c.is_failed(node), newest.contains(node), "max {failed_max}");
        }
    }
}

/// A handover's entries are verified once each (a copy in the same message is passed over)
/// and none after the first forged one: an honest holder hands over only what it verified,
/// and a message of 16,384 entries cost as many ed25519 verifications however it was made.
#[test]
fn a_handover_verifies_each_entry_once_and_none_after_a_forged_one() {
    let mut c = Chord::new(peer(0), identity(0), ChordConfig::default(), 1);
    let now = Instant::ZERO;
    c.start(now);
    let w = identity(20);
    let key = b"handed".to_vec();
    let position = key_position(&key, 0);
    let first = signed(&w, &key, 1, StoreOp::Put(b"one".to_vec()));
    let mut forged = signed(&w, &key, 1, StoreOp::Put(b"two".to_vec()));
    forged.signature.0[0] ^= 1;
    let after = signed(&w, &key, 1, StoreOp::Put(b"three".to_vec()));
    let mut values = vec![first.clone(); 100];
    values.push(forged);
    values.push(after);
    let handover = ChordMessage::Handover(weft_protocol::ChordHandover {
        request: 3,
        records: vec![weft_protocol::ChordRecord {
            position,
            key: key.clone(),
            values,
        }],
    });
    c.handle_message(now, &peer(1), handover);
    let held = c.entries(now, position, &key);
    assert_eq!(
        held,
        vec![first],
        "the first entry, once; nothing after the forged one"
    );
    assert_eq!(
        c.metrics().entries_invalid,
        2,
        "the forged entry and the one after it"
    );
    assert_eq!(
        c.metrics().handover_signatures_verified,
        2,
        "the first entry (its 99 copies passed over) and the forged one"
    );
}

/// A configuration that would break the ring is brought within bounds: a successor list
/// longer than a CHORD_STATE may carry (every receiver refused the pushed state and closed
/// the connection), none at all, and periods of zero (their timers re-armed at once: the
/// host spun).
#[test]
fn a_configuration_out_of_bounds_is_brought_within_them() {
    let zero = Duration::from_millis(0);
    let wild = ChordConfig {
        successor_list_len: 100,
        stabilize_interval: zero,
        fix_fingers_interval: zero,
        check_predecessor_interval: zero,
        rpc_timeout: zero,
        ..ChordConfig::default()
    };
    let c = wild.clone().within_bounds();
    assert_eq!(c.successor_list_len, weft_protocol::CHORD_PEERS_MAX);
    assert_eq!(c.stabilize_interval, CHORD_PERIOD_MIN);
    assert_eq!(c.rpc_timeout, CHORD_PERIOD_MIN);
    let none = ChordConfig {
        successor_list_len: 0,
        ..ChordConfig::default()
    };
    assert_eq!(none.within_bounds().successor_list_len, 1);
    let mut chord = Chord::new(peer(1), identity(1), wild, 1);
    let now = Instant(1_000_000);
    chord.start(now);
    chord.handle_timeout(now);
    assert!(
        chord.poll_timeout().is_some_and(|t| t > now),
        "no timer due at once"
    );
}

/// A request that ends (here by its timeout, its peers gone) takes its lookups and requests
/// with it: they went on, with resends and dials, for minutes after, so `ops_max` bounded
/// nothing of the work in flight.
#[test]
fn an_ended_request_leaves_no_lookup_or_request_behind() {
    use super::lookup::LookupFor;
    let mut net = joined(8);
    for i in 1..8 {
        net.nodes[i] = None;
    }
    let now = net.now;
    net.node(0).request(now, 7, get(b"k"));
    let mut ended = false;
    for _ in 0..200 {
        net.run(100);
        if net.events.iter().any(|(_, e)| e.request == 7) {
            ended = true;
            break;
        }
    }
    assert!(ended, "the request ended");
    let c = net.node(0);
    assert!(
        !c.lookups
            .values()
            .any(|l| matches!(l.purpose, LookupFor::Op { .. })),
        "a lookup of the ended request"
    );
    assert!(
        !c.rpcs
            .values()
            .any(|r| matches!(r.purpose, Purpose::Store { .. } | Purpose::Fetch { .. })),
        "a request of the ended request"
    );
}

/// A leaving node hands its successor at most `LEAVE_HANDOVER_BYTES_MAX` of records, in
/// bounded loads, first to last: the whole store queued at once closed the successor as slow.
#[test]
fn a_leave_hands_over_at_most_its_bound() {
    use super::maintenance::{leave_chunks, record_bytes_max, LEAVE_HANDOVER_BYTES_MAX};
    let w = identity(1);
    let records: Vec<weft_protocol::ChordRecord> = (0..1200u32)
        .map(|n| {
            let key = n.to_be_bytes().to_vec();
            weft_protocol::ChordRecord {
                position: u64::from(n),
                key: key.clone(),
                values: vec![signed(&w, &key, 1, StoreOp::Put(vec![1; 60 * 1024]))],
            }
        })
        .collect();
    let total: usize = records.iter().map(record_bytes_max).sum();
    assert!(total > LEAVE_HANDOVER_BYTES_MAX);
    let chunks = leave_chunks(records.clone());
    let sent: Vec<&weft_protocol::ChordRecord> = chunks.iter().flatten().collect();
    let bytes: usize = sent.iter().map(|r| record_bytes_max(r)).sum();
    assert!(bytes <= LEAVE_HANDOVER_BYTES_MAX, "{bytes}");
    assert!(
        bytes > LEAVE_HANDOVER_BYTES_MAX - 2 * 1024 * 1024,
        "{bytes}"
    );
    assert!(sent.iter().zip(&records).all(|(a, b)| *a == b), "in order");
}

/// A predecessor that refuses every handover at once (full, or a node ground to sit just
/// below this one) gets the next round after a wait that doubles each time: it had the whole
/// store sent again at every check, once a second.
#[test]
fn handovers_refused_again_and_again_back_off() {
    let mut net = joined(3);
    for n in 0..20u8 {
        assert!(net.request(0, 100 + u64::from(n), put(&[n], b"v")).is_ok());
    }
    let (a, m) = richest_and_below_it(&mut net);
    net.nodes.iter_mut().enumerate().for_each(|(i, c)| {
        if i != a {
            *c = None;
        }
    });
    let mut rounds = 0;
    for _ in 0..60 {
        let now = net.now;
        net.node(a).handle_message(now, &m, ChordMessage::Notify);
        net.node(a).handle_timeout(now);
        let sent = handovers_sent(net.node(a));
        rounds += usize::from(!sent.is_empty());
        for request in sent {
            let full = ChordMessage::Stored(weft_protocol::ChordStored {
                request,
                outcome: StoreOutcome::StoreFull,
            });
            net.node(a).handle_message(now, &m, full);
        }
        net.now = net.now + Duration::from_millis(1000);
    }
    // 60 s of checks: rounds at 0, 2, 6, 14 and 30 s.
    assert_eq!(rounds, 5, "rounds in 60 s");
}

/// A round with a refusal among confirmations (one writer full at the predecessor) does not
/// back off: the next round goes at the next check. Backing off on it slowed the whole
/// handover to a round a minute for one record. A round that confirms nothing does.
#[test]
fn a_round_partly_confirmed_does_not_back_off() {
    let mut net = joined(3);
    let value = vec![7u8; 60 * 1024];
    for n in 0..100u64 {
        let from = (n % 3) as usize;
        let key = n.to_be_bytes();
        assert!(
            net.request(from, 1000 + n, put(&key, &value)).is_ok(),
            "put {n}"
        );
    }
    let (a, m) = richest_and_below_it(&mut net);
    net.nodes.iter_mut().enumerate().for_each(|(i, c)| {
        if i != a {
            *c = None;
        }
    });
    let now = net.now;
    net.node(a).handle_message(now, &m, ChordMessage::Notify);
    let sent = handovers_sent(net.node(a));
    assert!(sent.len() > 1, "a round of several messages");
    // The first refused, the others confirmed.
    for (k, request) in sent.into_iter().enumerate() {
        let outcome = if k == 0 {
            StoreOutcome::WriterFull
        } else {
            StoreOutcome::Stored
        };
        let answer = ChordMessage::Stored(weft_protocol::ChordStored { request, outcome });
        net.node(a).handle_message(now, &m, answer);
    }
    assert!(
        net.node(a).handover_wait.is_none(),
        "no wait after a partial round"
    );
    // A round that confirms nothing makes the next wait.
    std::iter::from_fn(|| net.node(a).poll_output()).for_each(drop);
    let later = now + Duration::from_millis(2000);
    net.node(a).handle_timeout(later);
    let sent = handovers_sent(net.node(a));
    assert!(!sent.is_empty(), "the next round at the next check");
    for request in sent {
        let outcome = StoreOutcome::WriterFull;
        let answer = ChordMessage::Stored(weft_protocol::ChordStored { request, outcome });
        net.node(a).handle_message(later, &m, answer);
    }
    assert!(
        net.node(a).handover_wait.is_some(),
        "a wait after a round refused whole"
    );
}
