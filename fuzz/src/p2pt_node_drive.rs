//! The p2p.today session fuzz logic, shared by `fuzz_targets/p2pt_node.rs` and the corpus
//! replay test in `engine/tests/fuzz_corpus.rs`: one `P2ptNode` (sync1, compression on) with
//! two accepted connections whose peers have handshaken, then an arbitrary sequence of raw
//! bytes, well-framed messages of any flags and args, handshakes, commands, closes and time.
//!
//! Depends only on `weft-engine` (and its re-exported protocol), so the test can include it
//! with `#[path = ...] mod`.

use weft_engine::io::{Command, ConnId, Event, Input, Output};
use weft_engine::p2pt::{P2ptConfig, P2ptEvent, P2ptNode, Subnet};
use weft_engine::protocol::p2pt::rmpv::Value;
use weft_engine::protocol::p2pt::{
    encode_frame, ids, Addr, Handshake, MainFlag, Message, Method, SubFlag,
};
use weft_engine::{Duration, Instant, MeshCommand, TableCommand};

/// What one run reached (the replay test checks the corpus gets somewhere).
#[derive(Debug, Default, Clone, Copy)]
pub struct P2ptSummary {
    /// Messages delivered to the application.
    pub delivered: u64,
    /// Table changes reported.
    pub key_changes: u64,
    /// Connections closed for a fault.
    pub faults: u64,
}

const T0_MS: u64 = 1_800_000_000_000;

struct Drive {
    node: P2ptNode,
    now: Instant,
    conns: [ConnId; 2],
    next_inbound: u64,
    summary: P2ptSummary,
}

fn peer_id(i: u8) -> Vec<u8> {
    ids::node_id(
        &format!("('127.0.0.1', {})", 9000 + u16::from(i)),
        "p",
        b"s",
    )
    .into_bytes()
}

impl Drive {
    fn input(&mut self, input: Input) {
        // Bytes never make handle_input fail; a refused command or a closed connection may.
        let _ = self.node.handle_input(self.now, input);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(o) = self.node.poll_output() {
            match o {
                Output::Event(Event::P2pt(P2ptEvent::Message { .. })) => {
                    self.summary.delivered += 1
                }
                Output::Event(Event::P2pt(P2ptEvent::KeyChanged { .. })) => {
                    self.summary.key_changes += 1
                }
                Output::Event(Event::ConnectionClosed { .. }) => self.summary.faults += 1,
                Output::Close { conn, .. } => {
                    let _ = self.node.handle_input(self.now, Input::Closed { conn });
                }
                Output::Connect { conn, .. } => {
                    let _ = self
                        .node
                        .handle_input(self.now, Input::ConnectFailed { conn });
                }
                _ => {}
            }
        }
        self.node
            .check_invariants()
            .unwrap_or_else(|e| panic!("invariant broken: {e}"));
        assert!(self.node.poll_timeout().is_none_or(|t| t >= self.now));
    }

    fn accept(&mut self, slot: usize) {
        let conn = ConnId::inbound(self.next_inbound);
        self.next_inbound += 1;
        self.conns[slot] = conn;
        self.input(Input::Accepted {
            conn,
            addr: format!("127.0.0.1:{}", 9000 + slot),
        });
    }

    fn send(&mut self, slot: usize, m: &Message, method: Option<Method>) {
        if let Ok(wire) = encode_frame(&m.to_msgpack(), method) {
            let conn = self.conns[slot];
            self.input(Input::Received {
                conn,
                bytes: wire.into(),
            });
        }
    }

    fn handshake(&mut self, slot: usize, right_protocol: bool, codes: Vec<u64>) {
        let protocol = if right_protocol {
            self.node.protocol_id().as_bytes().to_vec()
        } else {
            b"other".to_vec()
        };
        let h = Handshake {
            id: peer_id(slot as u8),
            protocol_id: protocol,
            addr: Addr {
                host: "127.0.0.1".into(),
                port: 9000 + slot as u16,
            },
            compression: codes,
        };
        self.send(slot, &h.to_message(1_800_000_000), None);
    }
}

/// A small byte reader that yields zeros past the end.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn method(b: u8) -> Option<Method> {
    match b % 5 {
        0 => Some(Method::Zlib),
        1 => Some(Method::Gzip),
        2 => Some(Method::Bz2),
        3 => Some(Method::Xz),
        _ => None,
    }
}

/// Runs one input; panics only if an invariant breaks or the node panics.
pub fn run_p2pt_node(data: &[u8]) -> P2ptSummary {
    let mut d = Drive {
        node: P2ptNode::new(
            P2ptConfig::new(Subnet::SyncLeased),
            Some("127.0.0.1:8999"),
            b"fuzz",
        ),
        now: Instant::ZERO,
        conns: [ConnId(1), ConnId(3)],
        next_inbound: 0,
        summary: P2ptSummary::default(),
    };
    d.input(Input::WallClock { unix_ms: T0_MS });
    d.accept(0);
    d.accept(1);
    d.handshake(0, true, vec![0x13, 0x11, 0x10, 0x12]);
    d.handshake(1, true, vec![]);
    let mut r = Bytes(data);
    let mut ops = 0;
    while !r.is_empty() && ops < 256 {
        ops += 1;
        let op = r.u8();
        let slot = usize::from(r.u8() & 1);
        match op % 7 {
            0 => {
                let n = usize::from(r.u8());
                let bytes = r.take(n);
                let conn = d.conns[slot];
                d.input(Input::Received {
                    conn,
                    bytes: bytes.into(),
                });
            }
            1 => {
                let main = MainFlag(r.u8() % 4);
                let sub = SubFlag(r.u8() % 0x14);
                // Near the node's clock, or at either end of the range.
                let ts = match r.u8() {
                    0 => 0,
                    255 => u64::MAX,
                    b => 1_800_000_000 + u64::from(b) - 128,
                };
                let sender = match r.u8() % 3 {
                    0 => peer_id(slot as u8),
                    1 => peer_id(1 - slot as u8),
                    _ => d.node.id().into_bytes(),
                };
                let nargs = usize::from(r.u8() % 5);
                let mut args = Vec::new();
                for _ in 0..nargs {
                    let kind = r.u8();
                    let n = usize::from(r.u8() % 16);
                    let b = r.take(n);
                    args.push(match kind % 6 {
                        0 => Value::Binary(b),
                        1 => Value::from(String::from_utf8_lossy(&b).into_owned()),
                        2 => Value::Nil,
                        3 if n == 15 => Value::from(u64::MAX),
                        3 => Value::from(u64::from(kind)),
                        4 => Value::Array(b.into_iter().map(Value::from).collect()),
                        _ => Value::Map(vec![(Value::from("k"), Value::Binary(b))]),
                    });
                }
                let m = Message::new(main, sender, ts, sub, args);
                let how = method(r.u8());
                d.send(slot, &m, how);
            }
            2 => {
                d.now = d.now + Duration::from_secs(u64::from(r.u8()));
                d.node.handle_timeout(d.now);
                d.drain();
            }
            3 => {
                let key = vec![b'k', r.u8() % 4];
                let c = match r.u8() % 3 {
                    0 => Command::Mesh(MeshCommand::Broadcast {
                        payload: r.take(8).into(),
                    }),
                    1 => Command::Table(TableCommand::Set {
                        key,
                        value: r.take(8),
                        lease: None,
                    }),
                    _ => Command::Table(TableCommand::Delete { key }),
                };
                d.input(Input::Command(c));
            }
            4 => {
                let conn = d.conns[slot];
                d.input(Input::Closed { conn });
                d.accept(slot);
            }
            5 => {
                let right = r.u8() & 1 == 0;
                let mask = r.u8();
                let codes = [0x13u64, 0x11, 0x10, 0x12, 0x20]
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, c)| c)
                    .collect();
                d.handshake(slot, right, codes);
            }
            _ => {
                let conn = d.conns[slot];
                d.input(Input::Writable { conn });
            }
        }
    }
    d.summary
}
