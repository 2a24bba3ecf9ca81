//! A simulated network of p2p.today nodes (`weft_engine::p2pt::P2ptNode`, SPEC.md §25.9):
//! virtual time, ordered byte pipes with random latency, the seed deriving every choice, and
//! faults (cut links, crashed and restarted nodes). The dialect has no repair, so what is
//! owed is checked after the heal: every broadcast sent then reaches every node exactly once,
//! and every key written then is held by every node.

use std::collections::BTreeMap;

use bytes::Bytes;
use weft_engine::io::{Command, ConnId, Event, Input, Output};
use weft_engine::p2pt::{P2ptConfig, P2ptEvent, P2ptNode, Subnet};
use weft_engine::protocol::p2pt::rmpv::Value;
use weft_engine::{Instant, MeshCommand, TableCommand};

use crate::queue::EventQueue;
use crate::rng::SimRng;
use crate::world::MS;

/// The simulated wall clock at time 0, Unix ms.
const T0_UNIX_MS: u64 = 1_800_000_000_000;
/// How often each node is handed the wall clock.
const WALL_CLOCK_PERIOD: u64 = 1000 * MS;

/// The address node `i` listens at.
pub fn p2pt_addr(i: u32) -> String {
    format!("10.{}.{}.{}:7000", i >> 16, (i >> 8) & 0xff, i & 0xff)
}

fn node_of(addr: &str) -> Option<u32> {
    let ip = addr.strip_suffix(":7000")?;
    let mut parts = ip.split('.').map(|p| p.parse::<u32>().ok());
    let (Some(Some(10)), Some(Some(a)), Some(Some(b)), Some(Some(c))) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some((a << 16) | (b << 8) | c)
}

#[derive(Debug)]
enum Ev {
    /// Bytes arrive at `node` on `conn`.
    Bytes {
        node: u32,
        conn: ConnId,
        bytes: Bytes,
    },
    /// A dial's outcome reaches the dialer; the acceptor hears of it at the same moment.
    Dialed { node: u32, conn: ConnId, to: u32 },
    /// The far end closed (or a fault cut the pipe).
    Closed { node: u32, conn: ConnId },
    /// What `node` sent on `conn` so far has arrived: it may send more.
    Written { node: u32, conn: ConnId },
    /// The wall clock, every [`WALL_CLOCK_PERIOD`].
    Tick { node: u32, epoch: u32 },
    /// The node's own deadline.
    Timer { node: u32, epoch: u32 },
    /// A node comes back after a crash.
    Restart { node: u32 },
    /// The application's command.
    App { node: u32, command: Command },
}

/// One end of a pipe: where its bytes go, and when the last ones sent there arrive (so bytes
/// arrive in order).
#[derive(Debug, Clone, Copy)]
struct End {
    peer: u32,
    peer_conn: ConnId,
    arrive_after: u64,
}

/// One node: its machine (none while crashed) and its pipes.
struct SimNode {
    machine: Option<P2ptNode>,
    /// Bumped at each crash: ticks of an older epoch are stale.
    epoch: u32,
    ends: BTreeMap<ConnId, End>,
    next_inbound: u64,
    /// The configured peer it dials at start.
    seed_peer: Option<u32>,
    /// The deadline a `Timer` is queued for.
    timer_at: Option<u64>,
}

/// What every node delivered and holds, for the checkers.
#[derive(Debug, Default, Clone)]
pub struct Deliveries {
    /// (node, epoch, message id) → times delivered.
    pub counts: BTreeMap<(u32, u32, [u8; 32]), u32>,
    /// (node, epoch, the text of a one-str message) → times delivered.
    pub by_text: BTreeMap<(u32, u32, String), u32>,
}

/// The network.
pub struct P2ptNet {
    /// Virtual time, ns.
    pub now: u64,
    nodes: Vec<SimNode>,
    queue: EventQueue<Ev>,
    rng: SimRng,
    subnet: Subnet,
    /// What came out.
    pub deliveries: Deliveries,
    /// Events processed.
    pub events: u64,
    /// Connections cut by faults, nodes crashed.
    pub faults: u64,
    /// Broken invariants.
    pub violation: Option<String>,
    trace: blake3::Hasher,
    latency_ns: (u64, u64),
}

impl P2ptNet {
    /// `n` nodes of `subnet`, node `i > 0` configured to dial a random earlier node; half of
    /// them (by the seed) with compression off. Latency per frame: 1 to 20 ms.
    pub fn new(n: u32, subnet: Subnet, seed: u64) -> P2ptNet {
        let mut rng = SimRng::child(seed, "p2pt net", 0);
        let mut net = P2ptNet {
            now: 0,
            nodes: Vec::new(),
            queue: EventQueue::default(),
            rng: SimRng::child(seed, "p2pt links", 0),
            subnet,
            deliveries: Deliveries::default(),
            events: 0,
            faults: 0,
            violation: None,
            trace: blake3::Hasher::new(),
            latency_ns: (MS, 20 * MS),
        };
        for i in 0..n {
            let seed_peer = (i > 0).then(|| rng.below(u64::from(i)) as u32);
            net.nodes.push(SimNode {
                machine: None,
                epoch: 0,
                ends: BTreeMap::new(),
                next_inbound: 0,
                seed_peer,
                timer_at: None,
            });
            let compression = rng.chance(0.5);
            net.start(i, compression);
        }
        net
    }

    fn start(&mut self, i: u32, compression: bool) {
        let node = &mut self.nodes[i as usize];
        let config = P2ptConfig {
            subnet: self.subnet,
            compression,
        };
        let salt = [i.to_le_bytes(), node.epoch.to_le_bytes()].concat();
        node.machine = Some(P2ptNode::new(config, Some(&p2pt_addr(i)), &salt));
        let epoch = node.epoch;
        let peer = node.seed_peer;
        self.feed(
            i,
            Input::WallClock {
                unix_ms: T0_UNIX_MS + self.now / MS,
            },
        );
        if let Some(p) = peer {
            self.feed(i, Input::Command(Command::Connect { addr: p2pt_addr(p) }));
        }
        self.queue
            .push(self.now + WALL_CLOCK_PERIOD, Ev::Tick { node: i, epoch });
    }

    /// Node `i`'s machine, if it is up.
    pub fn node(&self, i: u32) -> Option<&P2ptNode> {
        self.nodes[i as usize].machine.as_ref()
    }

    /// Node `i`'s epoch (crashes so far).
    pub fn epoch(&self, i: u32) -> u32 {
        self.nodes[i as usize].epoch
    }

    /// Nodes.
    pub fn len(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// Whether the network has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Schedules an application command at `at`.
    pub fn schedule(&mut self, at: u64, node: u32, command: Command) {
        self.queue.push(at, Ev::App { node, command });
    }

    /// A broadcast of `text` from `node` at `at`.
    pub fn schedule_broadcast(&mut self, at: u64, node: u32, text: String) {
        let payload = Bytes::from(text.into_bytes());
        self.schedule(at, node, Command::Mesh(MeshCommand::Broadcast { payload }));
    }

    /// A write of `key` = `value` at `node` at `at`.
    pub fn schedule_set(&mut self, at: u64, node: u32, key: String, value: String) {
        let command = Command::Table(TableCommand::Set {
            key: key.into_bytes(),
            value: value.into_bytes(),
            lease: None,
        });
        self.schedule(at, node, command);
    }

    /// Cuts one random open pipe (both ends see it close).
    pub fn cut_random_link(&mut self) {
        let mut all = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for (&c, e) in &n.ends {
                if (i as u32) < e.peer {
                    all.push((i as u32, c));
                }
            }
        }
        if all.is_empty() {
            return;
        }
        let (i, c) = all[self.rng.below(all.len() as u64) as usize];
        self.faults += 1;
        self.cut(i, c);
    }

    fn cut(&mut self, i: u32, conn: ConnId) {
        let Some(end) = self.nodes[i as usize].ends.remove(&conn) else {
            return;
        };
        self.nodes[end.peer as usize].ends.remove(&end.peer_conn);
        let at = self.now + self.latency();
        self.queue.push(at, Ev::Closed { node: i, conn });
        self.queue.push(
            at,
            Ev::Closed {
                node: end.peer,
                conn: end.peer_conn,
            },
        );
    }

    /// Crashes node `i` (its pipes close at the far ends) and restarts it after `down` ns
    /// with a new id, as a restarted py2p node has.
    pub fn crash(&mut self, i: u32, down: u64) {
        if self.nodes[i as usize].machine.is_none() {
            return;
        }
        self.faults += 1;
        let node = &mut self.nodes[i as usize];
        node.machine = None;
        node.epoch += 1;
        let ends: Vec<End> = std::mem::take(&mut node.ends).into_values().collect();
        for e in ends {
            self.nodes[e.peer as usize].ends.remove(&e.peer_conn);
            let at = self.now + self.latency();
            self.queue.push(
                at,
                Ev::Closed {
                    node: e.peer,
                    conn: e.peer_conn,
                },
            );
        }
        self.queue.push(self.now + down, Ev::Restart { node: i });
    }

    fn latency(&mut self) -> u64 {
        self.rng.between(self.latency_ns.0, self.latency_ns.1)
    }

    /// Runs every event up to `until`.
    pub fn run_until(&mut self, until: u64) {
        while let Some(at) = self.peek_time() {
            if at > until {
                break;
            }
            let Some((at, ev)) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.events += 1;
            self.dispatch(ev);
        }
        self.now = self.now.max(until);
    }

    fn peek_time(&self) -> Option<u64> {
        self.queue.next_time()
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Bytes { node, conn, bytes } => {
                if self.nodes[node as usize].ends.contains_key(&conn) {
                    self.feed(node, Input::Received { conn, bytes });
                }
            }
            Ev::Written { node, conn } => {
                if self.nodes[node as usize].ends.contains_key(&conn) {
                    self.feed(node, Input::Writable { conn });
                }
            }
            Ev::Dialed { node, conn, to } => {
                let dialing = self.nodes[node as usize]
                    .machine
                    .as_ref()
                    .is_some_and(|m| m.conn_ids().any(|c| c == conn));
                if !dialing {
                    // The dialer crashed or gave the dial up meanwhile.
                    return;
                }
                if self.nodes[to as usize].machine.is_none() {
                    self.feed(node, Input::ConnectFailed { conn });
                    return;
                }
                let inbound = {
                    let n = &mut self.nodes[to as usize];
                    let c = ConnId::inbound(n.next_inbound);
                    n.next_inbound += 1;
                    c
                };
                self.nodes[node as usize].ends.insert(
                    conn,
                    End {
                        peer: to,
                        peer_conn: inbound,
                        arrive_after: self.now,
                    },
                );
                self.nodes[to as usize].ends.insert(
                    inbound,
                    End {
                        peer: node,
                        peer_conn: conn,
                        arrive_after: self.now,
                    },
                );
                self.feed(
                    to,
                    Input::Accepted {
                        conn: inbound,
                        addr: p2pt_addr(node),
                    },
                );
                self.feed(node, Input::Connected { conn });
            }
            Ev::Closed { node, conn } => {
                let known = self.nodes[node as usize]
                    .machine
                    .as_ref()
                    .is_some_and(|m| m.conn_ids().any(|c| c == conn));
                if known {
                    self.nodes[node as usize].ends.remove(&conn);
                    self.feed(node, Input::Closed { conn });
                }
            }
            Ev::Tick { node, epoch } => {
                if self.nodes[node as usize].epoch != epoch {
                    return;
                }
                let unix_ms = T0_UNIX_MS + self.now / MS;
                self.feed(node, Input::WallClock { unix_ms });
                self.queue
                    .push(self.now + WALL_CLOCK_PERIOD, Ev::Tick { node, epoch });
            }
            Ev::Timer { node, epoch } => {
                let n = &mut self.nodes[node as usize];
                if n.epoch != epoch || n.timer_at != Some(self.now) {
                    return;
                }
                n.timer_at = None;
                if let Some(m) = n.machine.as_mut() {
                    m.handle_timeout(Instant(self.now));
                }
                self.drain(node);
            }
            Ev::Restart { node } => {
                let compression = self.rng.chance(0.5);
                self.start(node, compression);
            }
            Ev::App { node, command } => {
                // A refused command (a leased key, a crashed node) is the application's
                // business; the checkers look at what the nodes hold.
                self.feed(node, Input::Command(command));
            }
        }
    }

    /// Feeds `input` to node `i` (if it is up) and carries out what comes out.
    fn feed(&mut self, i: u32, input: Input) {
        let now = Instant(self.now);
        let Some(m) = self.nodes[i as usize].machine.as_mut() else {
            return;
        };
        let _ = m.handle_input(now, input);
        m.handle_timeout(now);
        self.drain(i);
    }

    fn drain(&mut self, i: u32) {
        loop {
            let Some(m) = self.nodes[i as usize].machine.as_mut() else {
                return;
            };
            let Some(out) = m.poll_output() else {
                break;
            };
            self.output(i, out);
        }
        let epoch = self.nodes[i as usize].epoch;
        let Some(m) = self.nodes[i as usize].machine.as_ref() else {
            return;
        };
        let broken = m.check_invariants().err();
        let due = m.poll_timeout().filter(|t| t.0 > self.now);
        if let Some(e) = broken {
            self.fail(format!("node {i}: {e}"));
        }
        // The node's own deadline: one timer queued for it.
        if let Some(t) = due {
            let n = &mut self.nodes[i as usize];
            if n.timer_at.is_none_or(|at| at > t.0 || at <= self.now) {
                n.timer_at = Some(t.0);
                self.queue.push(t.0, Ev::Timer { node: i, epoch });
            }
        }
    }

    fn record(&mut self, tag: u8, i: u32, body: &[u8]) {
        self.trace.update(&[tag]);
        self.trace.update(&self.now.to_le_bytes());
        self.trace.update(&i.to_le_bytes());
        self.trace.update(&(body.len() as u32).to_le_bytes());
        self.trace.update(body);
    }

    fn output(&mut self, i: u32, out: Output) {
        match out {
            Output::Transmit { conn, bytes } => {
                self.record(b'T', i, &bytes);
                let latency = self.latency();
                let Some(end) = self.nodes[i as usize].ends.get_mut(&conn) else {
                    return;
                };
                let at = (self.now + latency).max(end.arrive_after);
                end.arrive_after = at;
                let (peer, peer_conn) = (end.peer, end.peer_conn);
                self.queue.push(
                    at,
                    Ev::Bytes {
                        node: peer,
                        conn: peer_conn,
                        bytes,
                    },
                );
                self.queue.push(at, Ev::Written { node: i, conn });
            }
            Output::Connect { conn, addr } => {
                self.record(b'C', i, addr.as_bytes());
                let at = self.now + self.latency();
                match node_of(&addr).filter(|&n| n < self.len()) {
                    Some(to) => self.queue.push(at, Ev::Dialed { node: i, conn, to }),
                    None => self.queue.push(at, Ev::Closed { node: i, conn }),
                }
            }
            Output::Close { conn, .. } => {
                self.record(b'X', i, &conn.0.to_le_bytes());
                if self.nodes[i as usize].ends.contains_key(&conn) {
                    self.cut(i, conn);
                } else {
                    // No pipe (a dial not answered yet): the engine hears its close at once.
                    let at = self.now;
                    self.queue.push(at, Ev::Closed { node: i, conn });
                }
            }
            Output::Event(Event::P2pt(P2ptEvent::Message { id, args, .. })) => {
                self.record(b'M', i, &id);
                let epoch = self.nodes[i as usize].epoch;
                let n = self.deliveries.counts.entry((i, epoch, id)).or_default();
                *n += 1;
                if *n > 1 {
                    self.fail(format!("node {i} delivered a message twice"));
                }
                // A message of one str arg is counted by that text.
                let mut rd = &args[..];
                let text = match weft_engine::protocol::p2pt::rmpv::decode::read_value(&mut rd) {
                    Ok(Value::Array(v)) if v.len() == 1 => v[0].as_str().map(str::to_owned),
                    _ => None,
                }
                .unwrap_or_default();
                *self.deliveries.by_text.entry((i, epoch, text)).or_default() += 1;
            }
            Output::Event(Event::P2pt(P2ptEvent::KeyChanged { key, .. })) => {
                self.record(b'K', i, &key);
            }
            Output::Event(_) => {}
            Output::Request { .. } => self.fail(format!("node {i} asked the host for storage")),
            other => self.fail(format!(
                "node {i}: an output the net does not carry: {other:?}"
            )),
        }
    }

    /// Records a broken invariant (the first one is kept).
    pub fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(format!("at {} ms: {what}", self.now / MS));
        }
    }

    /// The run's digest so far (hex).
    pub fn digest(&self) -> String {
        self.trace.clone().finalize().to_hex().to_string()
    }
}
