//! Dialect nodes wired together in memory: handshake, `peers`, relays, the table.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use weft_protocol::p2pt::rmpv::Value;
use weft_protocol::p2pt::{decode_frame, encode_frame, MainFlag, Message, Method, SubFlag};

use super::*;
use crate::connection::{CloseReason, ConnId};
use crate::io::{Command, Event, Input, Output};
use crate::mesh::MeshCommand;
use crate::table::TableCommand;
use crate::time::{Duration, Instant};

const T0_MS: u64 = 1_800_000_000_000;

/// Nodes listening at `127.0.0.1:(7000 + index)`, connected by in-memory pipes.
struct Net {
    nodes: Vec<P2ptNode>,
    /// (node, conn) to (node, conn).
    pipes: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    next_inbound: Vec<u64>,
    events: Vec<(usize, P2ptEvent)>,
    /// Frames each node sent, raw.
    wire: Vec<(usize, ConnId, Bytes)>,
    now: Instant,
    queue: VecDeque<(usize, Input)>,
    /// `Output::Connect`s seen.
    connects: usize,
    /// Every `Output::Close`: (node, connection, reason).
    closes: Vec<(usize, ConnId, CloseReason)>,
}

fn addr(i: usize) -> String {
    format!("127.0.0.1:{}", 7000 + i)
}

impl Net {
    fn new(n: usize, subnet: Subnet, compression: &[bool]) -> Net {
        let nodes = (0..n)
            .map(|i| {
                let mut cfg = P2ptConfig::new(subnet);
                cfg.compression = compression.get(i).copied().unwrap_or(true);
                P2ptNode::new(cfg, Some(&addr(i)), &[i as u8; 32])
            })
            .collect();
        let mut net = Net {
            nodes,
            pipes: BTreeMap::new(),
            next_inbound: vec![0; n],
            events: Vec::new(),
            wire: Vec::new(),
            now: Instant::ZERO,
            queue: VecDeque::new(),
            connects: 0,
            closes: Vec::new(),
        };
        for i in 0..n {
            net.input(i, Input::WallClock { unix_ms: T0_MS });
        }
        net
    }

    fn input(&mut self, i: usize, input: Input) {
        self.queue.push_back((i, input));
        self.run();
    }

    fn command(&mut self, i: usize, c: Command) -> Result<(), crate::io::InputError> {
        let r = self.nodes[i].handle_input(self.now, Input::Command(c));
        self.run();
        r
    }

    fn run(&mut self) {
        for _ in 0..100_000 {
            if let Some((i, input)) = self.queue.pop_front() {
                // Inputs to a connection already gone are dropped, as a driver drops them.
                let _ = self.nodes[i].handle_input(self.now, input);
                self.nodes[i].check_invariants().unwrap();
            }
            let mut any = false;
            for i in 0..self.nodes.len() {
                while let Some(o) = self.nodes[i].poll_output() {
                    any = true;
                    self.output(i, o);
                }
            }
            if !any && self.queue.is_empty() {
                return;
            }
        }
        panic!("the network did not settle");
    }

    fn output(&mut self, i: usize, o: Output) {
        match o {
            Output::Connect { conn, addr: a } => {
                self.connects += 1;
                let Some(j) = (0..self.nodes.len()).find(|&j| addr(j) == a) else {
                    self.queue.push_back((i, Input::ConnectFailed { conn }));
                    return;
                };
                let inbound = ConnId::inbound(self.next_inbound[j]);
                self.next_inbound[j] += 1;
                self.pipes.insert((i, conn), (j, inbound));
                self.pipes.insert((j, inbound), (i, conn));
                self.queue.push_back((
                    j,
                    Input::Accepted {
                        conn: inbound,
                        addr: addr(i),
                    },
                ));
                self.queue.push_back((i, Input::Connected { conn }));
            }
            Output::Transmit { conn, bytes } => {
                self.wire.push((i, conn, bytes.clone()));
                if let Some(&(j, c)) = self.pipes.get(&(i, conn)) {
                    self.queue
                        .push_back((j, Input::Received { conn: c, bytes }));
                }
                self.queue.push_back((i, Input::Writable { conn }));
            }
            Output::Close { conn, reason } => {
                self.closes.push((i, conn, reason));
                if let Some((j, c)) = self.pipes.remove(&(i, conn)) {
                    self.pipes.remove(&(j, c));
                    self.queue.push_back((j, Input::Closed { conn: c }));
                }
                self.queue.push_back((i, Input::Closed { conn }));
            }
            Output::Event(Event::P2pt(e)) => self.events.push((i, e)),
            Output::Event(_) => {}
            other => panic!("unexpected output {other:?}"),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        for i in 0..self.nodes.len() {
            self.nodes[i].handle_timeout(self.now);
        }
        self.run();
    }

    fn connect(&mut self, from: usize, to: usize) {
        self.command(from, Command::Connect { addr: addr(to) })
            .unwrap();
    }

    /// Node `at`'s connection to node `peer`, which it is linked to.
    fn conn_to(&self, at: usize, peer: usize) -> ConnId {
        let (_, conn, _) = self.nodes[at]
            .peers()
            .into_iter()
            .find(|(id, ..)| *id == self.nodes[peer].id())
            .expect("linked");
        conn
    }

    fn messages(&self, at: usize) -> Vec<(String, Bytes)> {
        self.events
            .iter()
            .filter(|(i, _)| *i == at)
            .filter_map(|(_, e)| match e {
                P2ptEvent::Message { sender, args, .. } => Some((sender.clone(), args.clone())),
                _ => None,
            })
            .collect()
    }
}

fn args_of(text: &str) -> Bytes {
    let mut out = Vec::new();
    weft_protocol::p2pt::rmpv::encode::write_value(
        &mut out,
        &Value::Array(vec![Value::from(text)]),
    )
    .unwrap();
    Bytes::from(out)
}

fn broadcast(net: &mut Net, i: usize, text: &str) {
    net.command(
        i,
        Command::Mesh(MeshCommand::Broadcast {
            payload: Bytes::copy_from_slice(text.as_bytes()),
        }),
    )
    .unwrap();
}

#[test]
fn a_line_links_up_through_peers_and_delivers_each_broadcast_once() {
    let mut net = Net::new(4, Subnet::Mesh, &[]);
    net.connect(1, 0);
    net.connect(2, 1);
    net.connect(3, 2);
    // The `peers` lists make every node dial the others it hears of (up to 4 outgoing).
    for i in 0..4 {
        assert_eq!(
            net.nodes[i].peers().len(),
            3,
            "node {i}: {:?}",
            net.nodes[i].peers()
        );
    }
    broadcast(&mut net, 0, "hello");
    let from0 = net.nodes[0].id();
    for i in 1..4 {
        assert_eq!(
            net.messages(i),
            vec![(from0.clone(), args_of("hello"))],
            "node {i}"
        );
    }
    assert!(
        net.messages(0).is_empty(),
        "an echo of its own broadcast is a duplicate"
    );
    let dups: u64 = net
        .nodes
        .iter()
        .map(|n| n.metrics().broadcast_duplicates)
        .sum();
    assert!(dups > 0, "a full mesh of 4 relays duplicates, each dropped");
}

#[test]
fn relays_forward_the_bytes_received_to_all_but_the_originator() {
    let mut net = Net::new(3, Subnet::Mesh, &[false, false, false]);
    // 0 announces no port, so 2 never dials it from 1's `peers`: 1 must relay.
    net.nodes[0] = P2ptNode::new(
        P2ptConfig {
            subnet: Subnet::Mesh,
            compression: false,
        },
        None,
        &[0; 32],
    );
    net.input(0, Input::WallClock { unix_ms: T0_MS });
    net.connect(0, 1);
    net.connect(2, 1);
    assert!(net.nodes[1].peers().len() >= 2);
    net.wire.clear();
    broadcast(&mut net, 0, "x");
    let sent0: Vec<&Bytes> = net
        .wire
        .iter()
        .filter(|(i, ..)| *i == 0)
        .map(|(.., b)| b)
        .collect();
    assert!(!sent0.is_empty());
    let original = decode_frame(sent0[0], &[]).unwrap();
    for (i, _, bytes) in net.wire.iter().filter(|(i, ..)| *i == 1) {
        let d = decode_frame(bytes, &[]).unwrap();
        assert_eq!(
            d.msgpack, original.msgpack,
            "node {i} relays the bytes it received"
        );
    }
    // 1 never sends it back to 0, the originator.
    let back_to_0 = net
        .wire
        .iter()
        .filter(|(i, c, _)| *i == 1 && net.pipes.get(&(1, *c)).is_some_and(|(j, _)| *j == 0))
        .count();
    assert_eq!(back_to_0, 0);
    assert_eq!(net.messages(2).len(), 1);
}

#[test]
fn compression_follows_what_each_side_advertises() {
    // 0 compresses (py2p's list), 1 does not: both directions stay raw.
    let mut net = Net::new(2, Subnet::Mesh, &[true, false]);
    net.connect(0, 1);
    net.wire.clear();
    broadcast(&mut net, 0, &"a".repeat(2000));
    broadcast(&mut net, 1, &"b".repeat(2000));
    for (_, _, bytes) in &net.wire {
        assert_eq!(
            decode_frame(bytes, &Method::PREFERENCE)
                .unwrap()
                .compression,
            None
        );
    }
    // Both compress: zlib, py2p's first choice.
    let mut net = Net::new(2, Subnet::Mesh, &[true, true]);
    net.connect(0, 1);
    net.wire.clear();
    broadcast(&mut net, 0, &"a".repeat(2000));
    let (_, _, bytes) = &net.wire[0];
    assert_eq!(
        decode_frame(bytes, &Method::PREFERENCE)
            .unwrap()
            .compression,
        Some(Method::Zlib)
    );
    assert_eq!(net.messages(1).len(), 1);
}

#[test]
fn a_corrupt_checksum_closes_only_that_connection() {
    let mut net = Net::new(3, Subnet::Mesh, &[false, false, false]);
    net.connect(1, 0);
    net.connect(2, 0);
    let conn_at_0 = net.conn_to(0, 1);
    let m = Message::new(
        MainFlag::BROADCAST,
        b"x".to_vec(),
        T0_MS / 1000,
        SubFlag::BROADCAST,
        vec![],
    );
    let mut wire = encode_frame(&m.to_msgpack(), None).unwrap();
    wire[10] ^= 0xff;
    net.input(
        0,
        Input::Received {
            conn: conn_at_0,
            bytes: Bytes::from(wire),
        },
    );
    assert!(net.nodes[0]
        .peers()
        .iter()
        .all(|(id, ..)| *id != net.nodes[1].id()));
    assert_eq!(net.nodes[0].metrics().faults, 1);
    // The other link carries on.
    broadcast(&mut net, 2, "still");
    assert_eq!(net.messages(0).len(), 1);
}

#[test]
fn a_wrong_protocol_id_is_refused() {
    let mut net = Net::new(2, Subnet::Mesh, &[]);
    net.nodes[1] = P2ptNode::new(
        P2ptConfig::new(Subnet::SyncLeased),
        Some(&addr(1)),
        &[1; 32],
    );
    net.input(1, Input::WallClock { unix_ms: T0_MS });
    net.connect(0, 1);
    assert!(net.nodes[0].peers().is_empty());
    assert!(net.nodes[1].peers().is_empty());
    // Each end refused the other's handshake for its network, and no pipe is left.
    let refused: Vec<(usize, CloseReason)> =
        net.closes.iter().map(|(i, _, r)| (*i, r.clone())).collect();
    assert_eq!(
        refused,
        [
            (0, CloseReason::WrongNetwork),
            (1, CloseReason::WrongNetwork)
        ]
    );
    assert!(net.pipes.is_empty());
}

#[test]
fn the_table_syncs_catches_up_and_keeps_leases() {
    let mut net = Net::new(3, Subnet::SyncLeased, &[]);
    net.connect(1, 0);
    let set = |key: &str, value: &str| {
        Command::Table(TableCommand::Set {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease: None,
        })
    };
    net.command(0, set("k", "v0")).unwrap();
    assert_eq!(
        net.nodes[1].table_get(b"k").unwrap().value,
        Value::from("v0")
    );
    // 1 may not write 0's key within the hour.
    let r = net.command(1, set("k", "v1"));
    assert!(matches!(
        r,
        Err(crate::io::InputError::Refused(crate::io::Refusal::P2pt(
            P2ptRefusal::Leased { .. }
        )))
    ));
    // A node that joins later gets the key in the catch-up burst, with its owner.
    net.connect(2, 1);
    let e = net.nodes[2].table_get(b"k").unwrap();
    assert_eq!(e.value, Value::from("v0"));
    assert_eq!(e.owner, net.nodes[0].id().into_bytes());
    // After the hour another node may take it.
    net.advance(Duration::from_secs(P2PT_LEASE_S + 5));
    net.command(2, set("k", "v2")).unwrap();
    for i in 0..3 {
        assert_eq!(
            net.nodes[i].table_get(b"k").unwrap().value,
            Value::from("v2"),
            "node {i}"
        );
    }
    net.command(
        2,
        Command::Table(TableCommand::Delete { key: b"k".to_vec() }),
    )
    .unwrap();
    for i in 0..3 {
        assert!(net.nodes[i].table_get(b"k").is_none(), "node {i}");
    }
}

#[test]
fn a_table_larger_than_the_send_queue_catches_a_new_peer_up_as_it_writes() {
    let mut net = Net::new(2, Subnet::SyncLeased, &[]);
    // 20 keys of 1 MiB that do not compress: 20 MiB, more than the 16 MiB send queue.
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let keys = 20;
    for k in 0..keys {
        let value: Vec<u8> = (0..1024 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        net.command(
            0,
            Command::Table(TableCommand::Set {
                key: format!("k{k:02}").into_bytes(),
                value,
                lease: None,
            }),
        )
        .unwrap();
    }
    net.connect(1, 0);
    // Sent at once, the burst closed the link as slow at each connection.
    assert_eq!(net.nodes[0].peers().len(), 1);
    assert_eq!(net.nodes[1].table_entries().count(), keys);
    assert!(net.nodes[1]
        .table_entries()
        .eq(net.nodes[0].table_entries()));
}

/// One host keeps at most `P2PT_INBOUND_PER_HOST_MAX` inbound connections: more are closed
/// at once (one host held every one of `P2PT_LINKS_MAX`, shutting out every other peer);
/// another host is still let in.
#[test]
fn one_host_cannot_hold_every_connection() {
    let mut net = Net::new(1, Subnet::Mesh, &[]);
    for i in 0..P2PT_LINKS_MAX as u64 {
        net.input(
            0,
            Input::Accepted {
                conn: ConnId::inbound(100 + i),
                addr: format!("192.0.2.7:{}", 40_000 + i),
            },
        );
    }
    assert_eq!(net.nodes[0].conn_ids().count(), P2PT_INBOUND_PER_HOST_MAX);
    assert!(net
        .closes
        .iter()
        .all(|(_, _, r)| *r == CloseReason::TooManyConnections));
    net.input(
        0,
        Input::Accepted {
            conn: ConnId::inbound(999),
            addr: "192.0.2.8:40000".into(),
        },
    );
    assert_eq!(
        net.nodes[0].conn_ids().count(),
        P2PT_INBOUND_PER_HOST_MAX + 1
    );
}

#[test]
fn a_silent_handshake_times_out_and_a_configured_peer_is_redialed() {
    let mut net = Net::new(2, Subnet::Mesh, &[]);
    // A connection that never says anything.
    net.input(
        0,
        Input::Accepted {
            conn: ConnId::inbound(99),
            addr: "x".into(),
        },
    );
    net.advance(P2PT_HANDSHAKE_TIMEOUT);
    assert_eq!(net.nodes[0].conn_ids().count(), 0);
    // A configured address that is down is dialed again later.
    net.command(
        0,
        Command::Connect {
            addr: "127.0.0.1:1".into(),
        },
    )
    .unwrap();
    let before = net.connects;
    net.advance(P2PT_REDIAL_MIN + Duration::from_millis(1));
    assert_eq!(net.connects, before + 1);
}

#[test]
fn the_same_inputs_give_the_same_outputs() {
    let run = || {
        let mut net = Net::new(4, Subnet::SyncLeased, &[]);
        net.connect(1, 0);
        net.connect(2, 1);
        net.connect(3, 1);
        broadcast(&mut net, 3, "d");
        net.wire
            .iter()
            .map(|(i, c, b)| (*i, *c, b.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

/// A second handshake may change a linked peer's address and codes, never its id: one that
/// does closes the link (the old id's route was left pointing at it: broadcasts went twice
/// over it, and it outlived the close).
#[test]
fn a_second_handshake_with_another_id_closes_the_link() {
    let mut net = Net::new(3, Subnet::Mesh, &[false, false, false]);
    net.connect(1, 0);
    net.connect(2, 0);
    let conn_at_0 = net.conn_to(0, 1);
    let h = weft_protocol::p2pt::message::Handshake {
        id: b"someone-else".to_vec(),
        protocol_id: net.nodes[0].protocol_id().as_bytes().to_vec(),
        addr: weft_protocol::p2pt::message::Addr {
            host: "127.0.0.1".into(),
            port: 7001,
        },
        compression: Vec::new(),
    };
    let wire = encode_frame(&h.to_message(T0_MS / 1000).to_msgpack(), None).unwrap();
    net.input(
        0,
        Input::Received {
            conn: conn_at_0,
            bytes: Bytes::from(wire),
        },
    );
    let peers: Vec<String> = net.nodes[0].peers().into_iter().map(|p| p.0).collect();
    assert_eq!(peers, vec![net.nodes[2].id()]);
    // A broadcast reaches node 2 once.
    broadcast(&mut net, 0, "once");
    assert_eq!(net.messages(2).len(), 1);
}

/// A local write too large to broadcast is refused before it changes anything (it was
/// stored and reported here, and never reached a peer).
#[test]
fn a_table_write_too_large_to_broadcast_changes_nothing() {
    let mut net = Net::new(2, Subnet::SyncLeased, &[]);
    net.connect(1, 0);
    let big = vec![b'x'; weft_protocol::p2pt::P2PT_BODY_BYTES_MAX];
    let r = net.command(
        0,
        Command::Table(TableCommand::Set {
            key: b"k".to_vec(),
            value: big,
            lease: None,
        }),
    );
    assert!(
        matches!(
            r,
            Err(crate::io::InputError::Refused(crate::io::Refusal::P2pt(
                P2ptRefusal::TooLarge { .. }
            )))
        ),
        "{r:?}"
    );
    assert!(net.nodes[0].table_get(b"k").is_none());
    assert!(net.nodes[1].table_get(b"k").is_none());
}

/// A broadcast is the originator's, not the relaying link's: one that means nothing as a
/// broadcast (`handshake`, `peers`) or is malformed (a `store` of one arg) is relayed as py2p
/// relays it, then dropped and counted, and no link closes (a close here, repeated by every
/// relay, would cut the network along the flood).
#[test]
fn a_meaningless_or_malformed_broadcast_is_dropped_not_held_against_the_link() {
    let mut net = Net::new(3, Subnet::SyncLeased, &[false, false, false]);
    net.connect(1, 0);
    net.connect(2, 0);
    let conn_at_0 = net.conn_to(0, 1);
    let connects = net.connects;
    let now_s = T0_MS / 1000;
    let handshake_args = vec![
        Value::Binary(b"evil".to_vec()),
        Value::Binary(net.nodes[0].protocol_id().as_bytes().to_vec()),
        Value::Array(vec![Value::from("127.0.0.1"), Value::from(9)]),
        Value::Array(vec![]),
    ];
    let frames = [
        (SubFlag::HANDSHAKE, handshake_args),
        (
            SubFlag::PEERS,
            vec![Value::Array(vec![Value::Array(vec![
                Value::Array(vec![Value::from("127.0.0.1"), Value::from(9)]),
                Value::Binary(b"evil".to_vec()),
            ])])],
        ),
        (SubFlag::STORE, vec![Value::from(1)]),
    ];
    for (sub, args) in frames {
        let m = Message::new(MainFlag::BROADCAST, b"evil".to_vec(), now_s, sub, args);
        let wire = encode_frame(&m.to_msgpack(), None).unwrap();
        net.input(
            0,
            Input::Received {
                conn: conn_at_0,
                bytes: Bytes::from(wire),
            },
        );
    }
    for (at, others) in [(0, vec![1, 2]), (1, vec![0, 2]), (2, vec![0, 1])] {
        let mut linked: Vec<String> = net.nodes[at].peers().into_iter().map(|p| p.0).collect();
        let mut want: Vec<String> = others.iter().map(|&o| net.nodes[o].id()).collect();
        linked.sort();
        want.sort();
        assert_eq!(linked, want, "node {at} kept its links");
        assert_eq!(net.nodes[at].metrics().faults, 0, "node {at}");
        assert_eq!(net.nodes[at].metrics().broadcasts_ignored, 3, "node {at}");
    }
    assert_eq!(net.connects, connects, "no dial to the broadcast's peers");
    broadcast(&mut net, 1, "still");
    assert_eq!(net.messages(2).len(), 1);
}

/// Sends node `at`, on `conn`, a whisper frame `sub` with `args` from `sender` (raw).
fn whisper_to(
    net: &mut Net,
    at: usize,
    conn: ConnId,
    main: MainFlag,
    sub: SubFlag,
    args: Vec<Value>,
) {
    let m = Message::new(
        main,
        net.nodes[1].id().into_bytes(),
        T0_MS / 1000,
        sub,
        args,
    );
    let wire = encode_frame(&m.to_msgpack(), None).unwrap();
    net.input(
        at,
        Input::Received {
            conn,
            bytes: Bytes::from(wire),
        },
    );
}

/// A peer chooses what it reads, not what weft spends writing: one advertising xz (or bz2)
/// alone gets raw frames (py2p takes them on any link), and a `resend` is answered once per
/// message, however often it comes (each ask re-framed up to 4 MiB).
#[test]
fn a_peer_cannot_make_sending_costly() {
    let mut net = Net::new(2, Subnet::Mesh, &[true, true]);
    net.connect(1, 0);
    let conn_at_0 = net.conn_to(0, 1);
    let h = weft_protocol::p2pt::message::Handshake {
        id: net.nodes[1].id().into_bytes(),
        protocol_id: net.nodes[0].protocol_id().as_bytes().to_vec(),
        addr: weft_protocol::p2pt::message::Addr {
            host: "127.0.0.1".into(),
            port: 7001,
        },
        // Unknown codes by the thousand, then xz and bz2.
        compression: (0..60_000).map(|_| 0x77).chain([0x12, 0x10]).collect(),
    };
    let args = h.to_message(0).args;
    whisper_to(
        &mut net,
        0,
        conn_at_0,
        MainFlag::WHISPER,
        SubFlag::HANDSHAKE,
        args,
    );
    net.wire.clear();
    broadcast(&mut net, 0, &"a".repeat(2000));
    let to_1: Vec<Bytes> = net
        .wire
        .iter()
        .filter(|(i, c, _)| *i == 0 && *c == conn_at_0)
        .map(|(_, _, b)| b.clone())
        .collect();
    assert_eq!(to_1.len(), 1);
    assert_eq!(
        decode_frame(&to_1[0], &Method::PREFERENCE)
            .unwrap()
            .compression,
        None,
        "raw, not xz"
    );
    net.wire.clear();
    for _ in 0..10 {
        whisper_to(
            &mut net,
            0,
            conn_at_0,
            MainFlag::RENEGOTIATE,
            SubFlag::RESEND,
            vec![],
        );
    }
    let resent = net.wire.iter().filter(|(i, ..)| *i == 0).count();
    assert_eq!(resent, 1, "one answer for ten asks");
}

/// A relay to many links is framed once per method: every link reading zlib gets the same
/// bytes, built once.
#[test]
fn a_relay_is_framed_once_for_every_link() {
    let mut net = Net::new(4, Subnet::Mesh, &[true, true, true, true]);
    net.connect(1, 0);
    net.connect(2, 0);
    net.connect(3, 0);
    net.wire.clear();
    broadcast(&mut net, 1, &"r".repeat(5000));
    let relays: Vec<&Bytes> = net
        .wire
        .iter()
        .filter(|(i, ..)| *i == 0)
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(relays.len(), 2, "to 2 and 3, not back to 1");
    assert_eq!(relays[0].as_ptr(), relays[1].as_ptr(), "one buffer");
    for n in [2, 3] {
        assert_eq!(net.messages(n).len(), 1);
    }
}

/// A peer may name any address in `peers`, again and again: one that never answers is dialed
/// with backoff and a bounded number of times, and all named addresses together within a
/// budget a minute (each failed dial was made again at the next `peers`).
#[test]
fn addresses_a_peer_names_are_dialed_a_bounded_number_of_times() {
    let mut net = Net::new(2, Subnet::Mesh, &[false, false]);
    net.connect(1, 0);
    let conn_at_0 = net.conn_to(0, 1);
    let peers = |ports: std::ops::Range<u16>| {
        let list = ports
            .map(|port| {
                Value::Array(vec![
                    Value::Array(vec![Value::from("127.0.0.9"), Value::from(port)]),
                    Value::Binary(format!("nobody-{port}").into_bytes()),
                ])
            })
            .collect();
        vec![Value::Array(list)]
    };
    // One address, named every second for an hour.
    let connects = net.connects;
    for _ in 0..3600 {
        whisper_to(
            &mut net,
            0,
            conn_at_0,
            MainFlag::WHISPER,
            SubFlag::PEERS,
            peers(9..10),
        );
        net.advance(Duration::from_secs(1));
    }
    let dials = net.connects - connects;
    assert_eq!(dials, usize::from(P2PT_LISTED_ATTEMPTS_MAX), "{dials}");
    // Many addresses, named at once, over and over within a minute.
    let connects = net.connects;
    for _ in 0..100 {
        whisper_to(
            &mut net,
            0,
            conn_at_0,
            MainFlag::WHISPER,
            SubFlag::PEERS,
            peers(100..1100),
        );
        net.advance(Duration::from_millis(100));
    }
    let dials = net.connects - connects;
    assert_eq!(dials, P2PT_LISTED_DIALS_PER_MINUTE, "{dials}");
    // The link that named them stays.
    assert_eq!(net.nodes[0].peers().len(), 1);
}

/// A delta relayed while a new link's table catch-up has yet to reach its key goes after
/// that key's catch-up store (its value before the delta), as when the catch-up went in one
/// burst: sent alone first, it made the key at a new peer a map of the delta alone, and the
/// catch-up's store of the whole map was then skipped there (the key was truthy). Withheld
/// instead, a peer already holding the key, or nodes behind the new one, never got it.
#[test]
fn a_delta_follows_its_keys_catch_up_store_on_a_new_link() {
    let mut net = Net::new(2, Subnet::SyncLeased, &[false, false]);
    net.connect(1, 0);
    let conn_at_0 = net.conn_to(0, 1);
    // Node 0's table: keys of 400 KiB before `m`, so the catch-up of a new link pauses
    // (1 MiB unwritten) before it reaches `m`.
    for k in 0..6 {
        net.command(
            0,
            Command::Table(TableCommand::Set {
                key: format!("k{k}").into_bytes(),
                value: vec![b'v'; 400 * 1024],
                lease: None,
            }),
        )
        .unwrap();
    }
    let delta = |net: &mut Net, field: &str, at_s: u64| {
        let m = Message::new(
            MainFlag::BROADCAST,
            net.nodes[1].id().into_bytes(),
            at_s,
            SubFlag::DELTA,
            vec![
                Value::Binary(b"m".to_vec()),
                Value::Map(vec![(Value::from(field), Value::from(1))]),
            ],
        );
        let wire = encode_frame(&m.to_msgpack(), None).unwrap();
        Input::Received {
            conn: conn_at_0,
            bytes: Bytes::from(wire),
        }
    };
    let first = delta(&mut net, "x", T0_MS / 1000);
    net.input(0, first);
    // A new peer (raw) says hello; the second delta arrives before any `Writable`.
    let fresh = ConnId::inbound(100);
    let h = weft_protocol::p2pt::message::Handshake {
        id: b"fresh-peer".to_vec(),
        protocol_id: net.nodes[0].protocol_id().as_bytes().to_vec(),
        addr: weft_protocol::p2pt::message::Addr {
            host: "127.0.0.1".into(),
            port: 7099,
        },
        compression: Vec::new(),
    };
    let hello = encode_frame(&h.to_message(T0_MS / 1000).to_msgpack(), None).unwrap();
    let second = delta(&mut net, "a", T0_MS / 1000 + 1);
    net.queue.push_back((
        0,
        Input::Accepted {
            conn: fresh,
            addr: "127.0.0.1:7099".into(),
        },
    ));
    net.queue.push_back((
        0,
        Input::Received {
            conn: fresh,
            bytes: Bytes::from(hello),
        },
    ));
    let third = delta(&mut net, "b", T0_MS / 1000 + 2);
    net.queue.push_back((0, second));
    net.queue.push_back((0, third));
    net.run();
    let to_fresh: Vec<Message> = net
        .wire
        .iter()
        .filter(|(i, c, _)| *i == 0 && *c == fresh)
        .map(|(.., b)| decode_frame(b, &Method::PREFERENCE).unwrap().message)
        .collect();
    let is_m = |m: &Message| m.args.first() == Some(&Value::Binary(b"m".to_vec()));
    let m_frames: Vec<(SubFlag, Option<&Value>)> = to_fresh
        .iter()
        .filter(|m| is_m(m))
        .map(|m| (m.sub_flag, m.args.get(1)))
        .collect();
    let map = |fields: &[&str]| {
        Value::Map(
            fields
                .iter()
                .map(|f| (Value::from(*f), Value::from(1)))
                .collect(),
        )
    };
    let (before, a, b) = (map(&["x"]), map(&["a"]), map(&["b"]));
    assert_eq!(
        m_frames,
        [
            (SubFlag::STORE, Some(&before)),
            (SubFlag::DELTA, Some(&a)),
            (SubFlag::DELTA, Some(&b))
        ],
        "the key's value once, then the deltas; the catch-up skips the key at its turn"
    );
    // A second handshake on the link (new codes, say) starts no catch-up again.
    let stores_to_fresh = |net: &Net| {
        net.wire
            .iter()
            .filter(|(i, c, _)| *i == 0 && *c == fresh)
            .filter(|(.., b)| {
                decode_frame(b, &Method::PREFERENCE)
                    .unwrap()
                    .message
                    .sub_flag
                    == SubFlag::STORE
            })
            .count()
    };
    assert_eq!(stores_to_fresh(&net), 7);
    let again = encode_frame(&h.to_message(T0_MS / 1000).to_msgpack(), None).unwrap();
    net.input(
        0,
        Input::Received {
            conn: fresh,
            bytes: Bytes::from(again),
        },
    );
    assert_eq!(stores_to_fresh(&net), 7);
}
