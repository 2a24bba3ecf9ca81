//! A small in-process network: a few real `Node`s joined by in-memory byte pipes, driven by
//! the contract (drain outputs after every input, sleep until the earliest timeout).
//!
//! Links are Noise-encrypted, as the engine's default is: the pipes carry ciphertext. What the
//! nodes send is counted by protocol from the engines' own counters ([`Net::traffic`]); frames
//! by command code ([`Net::sent`]) can only be read off the wire of nodes made with
//! [`plaintext_config`].

use std::collections::{BTreeMap, VecDeque};

use crate::disk::Disk;
use bytes::Bytes;
use weft_engine::protocol::{Code, FrameDecoder};
use weft_engine::{
    ByProtocol, CloseReason, Command, Config, ConnId, Duration, Event, Input, Instant,
    LinkEncryption, MeshCommand, MeshEvent, Node, NodeId, Output, Traffic,
};

/// One in-memory network of nodes.
pub struct Net {
    /// The nodes, by index.
    pub nodes: Vec<Node>,
    /// Virtual time.
    pub now: Instant,
    /// Each connection end and the end it leads to.
    pipes: BTreeMap<(usize, ConnId), (usize, ConnId)>,
    /// Listening address of each node.
    addrs: BTreeMap<String, usize>,
    next_inbound: u64,
    queue: VecDeque<(usize, Input)>,
    /// Every event, by node, in order.
    pub events: Vec<(usize, Event)>,
    /// Every close a node asked for.
    pub closes: Vec<(usize, ConnId, CloseReason)>,
    /// Frames transmitted by plaintext nodes, by command code (see [`Net::sent`]).
    pub sent_by_code: BTreeMap<u16, u64>,
    /// Transmits of Noise-encrypted nodes: ciphertext, whose frames cannot be counted.
    encrypted_transmits: u64,
    /// The traffic counters of nodes replaced by [`Net::restart`].
    retired: ByProtocol,
    /// Connections whose transmitted bytes are withheld (a peer that never reads).
    pub stalled: Vec<(usize, ConnId)>,
    /// Nodes that neither send nor receive (paused).
    pub paused: Vec<usize>,
    /// Nodes whose HEREIS frames get one data byte flipped on the wire: a peer serving other
    /// bytes than the hashes it announced (an honest node checks what it reads before it
    /// serves it, so only a lying one does). Plaintext nodes only.
    pub tamper_blocks_from: Vec<usize>,
    /// Whether to answer every Transmit with Writable (a driver whose writes always succeed).
    pub auto_writable: bool,
    /// Chunk size used to split deliveries (exercises the decoder).
    pub chunk: usize,
    decoders: BTreeMap<(usize, ConnId), FrameDecoder>,
    /// Each node's disk (kept across [`Net::restart`]).
    pub disks: Vec<Disk>,
    /// Each node's scripted processes (remote runs, `crate::process`).
    pub processes: Vec<crate::process::Processes>,
    /// BLAKE3 over every transmitted byte and event, in order: the run's digest.
    pub trace: blake3::Hasher,
}

/// A default config from `seed`, on network "test-net", listening at "node{seed}": Noise
/// links with the open network key.
pub fn config(seed: u64) -> Config {
    let mut c = Config::from_seed("test-net", seed);
    c.listen_addr = Some(format!("node{seed}"));
    c
}

/// [`config`] with plaintext links, for the tests that count frames by command code as the
/// wire carries them ([`Net::sent`]): only a plaintext wire shows them (a Noise wire carries
/// ciphertext, and the engines count by protocol only).
pub fn plaintext_config(seed: u64) -> Config {
    let mut c = config(seed);
    c.link_encryption = LinkEncryption::PlaintextSimulationOnly;
    c
}

/// `a` plus `b`, counter by counter.
fn add_traffic(a: Traffic, b: Traffic) -> Traffic {
    Traffic {
        frames_in: a.frames_in + b.frames_in,
        frames_out: a.frames_out + b.frames_out,
        bytes_in: a.bytes_in + b.bytes_in,
        bytes_out: a.bytes_out + b.bytes_out,
    }
}

/// `a` plus `b`, protocol by protocol.
fn add_by_protocol(a: ByProtocol, b: ByProtocol) -> ByProtocol {
    ByProtocol {
        mesh: add_traffic(a.mesh, b.mesh),
        session: add_traffic(a.session, b.session),
        discovery: add_traffic(a.discovery, b.discovery),
        repair: add_traffic(a.repair, b.repair),
        table: add_traffic(a.table, b.table),
        chord: add_traffic(a.chord, b.chord),
    }
}

impl Net {
    /// `n` nodes with default configs from seeds 1..=n, listening at "node{seed}".
    pub fn new(n: usize) -> Net {
        Net::with_configs((1..=n as u64).map(config).collect())
    }

    /// One node per config.
    pub fn with_configs(configs: Vec<Config>) -> Net {
        let mut net = Net {
            nodes: Vec::new(),
            now: Instant(1_000_000_000),
            pipes: BTreeMap::new(),
            addrs: BTreeMap::new(),
            next_inbound: 0,
            queue: VecDeque::new(),
            events: Vec::new(),
            closes: Vec::new(),
            sent_by_code: BTreeMap::new(),
            encrypted_transmits: 0,
            retired: ByProtocol::default(),
            stalled: Vec::new(),
            paused: Vec::new(),
            tamper_blocks_from: Vec::new(),
            auto_writable: true,
            chunk: usize::MAX,
            decoders: BTreeMap::new(),
            disks: Vec::new(),
            processes: Vec::new(),
            trace: blake3::Hasher::new(),
        };
        for c in configs {
            net.add(c);
        }
        net
    }

    /// Adds a node; returns its index.
    pub fn add(&mut self, config: Config) -> usize {
        let i = self.nodes.len();
        if let Some(a) = &config.listen_addr {
            self.addrs.insert(a.clone(), i);
        }
        self.nodes.push(Node::new(config));
        self.disks.push(Disk::default());
        self.processes.push(crate::process::Processes::default());
        i
    }

    /// Replaces node `i` by a fresh node (a restart: memory lost, same key, same disk;
    /// completions of the old node's requests are dropped with its other inputs).
    pub fn restart(&mut self, i: usize, config: Config) {
        let ends: Vec<(usize, ConnId)> = self
            .pipes
            .keys()
            .filter(|(n, _)| *n == i)
            .copied()
            .collect();
        for end in ends {
            if let Some(other) = self.pipes.remove(&end) {
                self.pipes.remove(&other);
                self.queue
                    .push_back((other.0, Input::Closed { conn: other.1 }));
            }
        }
        self.queue.retain(|(n, _)| *n != i);
        let old = std::mem::replace(&mut self.nodes[i], Node::new(config));
        self.retired = add_by_protocol(self.retired, old.metrics().session.traffic);
    }

    /// Node `i`'s id.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].node_id()
    }

    /// The other end of node `i`'s connection `conn`.
    pub fn peer_end(&self, i: usize, conn: ConnId) -> Option<(usize, ConnId)> {
        self.pipes.get(&(i, conn)).copied()
    }

    /// Feeds node `i` an input and pumps. Panics if the node refuses it: the caller misused
    /// the network (tests only).
    pub fn input(&mut self, i: usize, input: Input) {
        let now = self.now;
        self.nodes[i]
            .handle_input(now, input)
            .expect("harness input is valid");
        self.pump();
    }

    /// Hands node `i` an application command and pumps.
    pub fn command(&mut self, i: usize, command: Command) {
        self.input(i, Input::Command(command));
    }

    /// Node `from` dials node `to`.
    pub fn connect(&mut self, from: usize, to: usize) {
        let addr = self.nodes[to].config().listen_addr.clone().unwrap();
        self.command(from, Command::Connect { addr });
    }

    /// Node `from` broadcasts `payload`.
    pub fn broadcast(&mut self, from: usize, payload: &[u8]) {
        self.command(
            from,
            Command::Mesh(MeshCommand::Broadcast {
                payload: Bytes::copy_from_slice(payload),
            }),
        );
    }

    /// Drains every node's outputs and delivers everything queued, until quiet.
    pub fn pump(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                while let Some(out) = self.nodes[i].poll_output() {
                    progressed = true;
                    self.route(i, out);
                }
            }
            if let Some((i, input)) = self.queue.pop_front() {
                progressed = true;
                let now = self.now;
                // Inputs for connections a node already forgot are dropped, as a driver would.
                let _ = self.nodes[i].handle_input(now, input);
            }
            if !progressed {
                break;
            }
        }
        for n in &self.nodes {
            n.check_invariants().expect("node invariants");
        }
    }

    fn route(&mut self, i: usize, out: Output) {
        match out {
            Output::Transmit { conn, bytes } => {
                self.count_frames(i, conn, &bytes);
                if self.stalled.contains(&(i, conn)) {
                    return;
                }
                if self.paused.contains(&i) {
                    return;
                }
                if let Some(&(j, peer_conn)) = self.pipes.get(&(i, conn)) {
                    if self.paused.contains(&j) {
                        return;
                    }
                    let mut rest = if self.tamper_blocks_from.contains(&i) {
                        crate::tamper::blocks(bytes).0
                    } else {
                        bytes
                    };
                    while !rest.is_empty() {
                        let piece = rest.split_to(rest.len().min(self.chunk));
                        self.queue.push_back((
                            j,
                            Input::Received {
                                conn: peer_conn,
                                bytes: piece,
                            },
                        ));
                    }
                }
                if self.auto_writable {
                    self.queue.push_back((i, Input::Writable { conn }));
                }
            }
            Output::Connect { conn, addr } => match self.addrs.get(&addr) {
                Some(&j) if j != usize::MAX => {
                    self.next_inbound += 1;
                    let inbound = ConnId::inbound(self.next_inbound);
                    self.pipes.insert((i, conn), (j, inbound));
                    self.pipes.insert((j, inbound), (i, conn));
                    self.queue.push_back((
                        j,
                        Input::Accepted {
                            conn: inbound,
                            addr: format!("peer-of-{i}"),
                        },
                    ));
                    self.queue.push_back((i, Input::Connected { conn }));
                }
                _ => self.queue.push_back((i, Input::ConnectFailed { conn })),
            },
            Output::Close { conn, reason } => {
                self.closes.push((i, conn, reason));
                if let Some(other) = self.pipes.remove(&(i, conn)) {
                    self.pipes.remove(&other);
                    self.queue
                        .push_back((other.0, Input::Closed { conn: other.1 }));
                }
                self.queue.push_back((i, Input::Closed { conn }));
            }
            Output::Request {
                id,
                request: weft_engine::HostRequest::Process { process, request },
            } => {
                for (id, result) in self.processes[i].carry_out(id, process, request) {
                    self.queue.push_back((i, Input::Completed { id, result }));
                }
            }
            Output::Request { id, request } => {
                let result = self.disks[i].carry_out(request);
                self.queue.push_back((i, Input::Completed { id, result }));
            }
            Output::Event(e) => {
                self.trace.update(format!("{i} {e:?}\n").as_bytes());
                self.events.push((i, e));
            }
            other => panic!("node {i} emitted an output the harness does not carry out: {other:?}"),
        }
    }

    /// Hashes a transmit into the trace and, from a plaintext node, counts its frames by
    /// code. A Noise node's bytes are ciphertext: decoding them as frames would count nothing
    /// (or garbage), so they are only noted (see [`Net::sent`]).
    fn count_frames(&mut self, i: usize, conn: ConnId, bytes: &Bytes) {
        self.trace.update(&(i as u64).to_le_bytes());
        self.trace.update(bytes);
        if self.nodes[i].config().link_encryption != LinkEncryption::PlaintextSimulationOnly {
            self.encrypted_transmits += 1;
            return;
        }
        let dec = self.decoders.entry((i, conn)).or_default();
        dec.push(bytes.clone());
        while let Ok(Some(f)) = dec.next_frame() {
            *self.sent_by_code.entry(f.code().0).or_default() += 1;
        }
    }

    /// Frames of `code` transmitted so far, read off the wire. Panics once a Noise node has
    /// transmitted (tests only): its frames are ciphertext, and a count without them would
    /// be wrong (an assertion that nothing was sent would hold whatever was). Such tests give
    /// their nodes [`plaintext_config`], or count by protocol with [`Net::traffic`].
    pub fn sent(&self, code: Code) -> u64 {
        assert_eq!(
            self.encrypted_transmits, 0,
            "frames by code are read off the wire, and Noise nodes send ciphertext: \
             use net::plaintext_config or Net::traffic"
        );
        self.sent_by_code.get(&code.0).copied().unwrap_or(0)
    }

    /// Frames and bytes by protocol, sent and received, over every node (replaced ones
    /// included): the engines' own counters, whatever the links' encryption.
    pub fn traffic(&self) -> ByProtocol {
        self.nodes.iter().fold(self.retired, |sum, n| {
            add_by_protocol(sum, n.metrics().session.traffic)
        })
    }

    /// Advances virtual time by `d`, firing every timeout on the way.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.paused.contains(i))
                .filter_map(|(_, n)| n.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for i in 0..self.nodes.len() {
                        if self.paused.contains(&i) {
                            continue;
                        }
                        if self.nodes[i].poll_timeout().is_some_and(|t| t <= now) {
                            self.nodes[i].handle_timeout(now);
                        }
                    }
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// Broadcast payloads delivered to node `i`, in order.
    pub fn delivered(&self, i: usize) -> Vec<(NodeId, u64, Bytes)> {
        self.events
            .iter()
            .filter(|(n, _)| *n == i)
            .filter_map(|(_, e)| match e {
                Event::Mesh(MeshEvent::Broadcast {
                    origin,
                    seq,
                    payload,
                    ..
                }) => Some((*origin, *seq, payload.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether node `i` has an established link to node `j`.
    pub fn linked(&self, i: usize, j: usize) -> bool {
        let id = self.id(j);
        self.nodes[i].links().any(|(n, _)| n == id)
    }

    /// Connects the given edges and pumps until every handshake completes.
    pub fn join(&mut self, edges: &[(usize, usize)]) {
        for &(a, b) in edges {
            self.connect(a, b);
        }
        for &(a, b) in edges {
            assert!(
                self.linked(a, b) && self.linked(b, a),
                "edge {a}-{b} not linked"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two linked nodes of `config`, one broadcast sent.
    fn one_broadcast(config: fn(u64) -> Config) -> Net {
        let mut net = Net::with_configs(vec![config(1), config(2)]);
        net.join(&[(0, 1)]);
        net.broadcast(0, b"x");
        net
    }

    #[test]
    fn frames_are_counted_by_code_on_plaintext_links_and_by_protocol_on_noise() {
        let plain = one_broadcast(plaintext_config);
        assert_eq!(plain.sent(Code::BROADCAST), 1);
        assert_eq!(plain.traffic().mesh.frames_out, 1);
        let noise = one_broadcast(config);
        assert_eq!(noise.traffic().mesh.frames_out, 1);
        assert_eq!(noise.delivered(1).len(), 1);
        // Only read: nothing is left half-updated by the panic.
        let counted =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| noise.sent(Code::BROADCAST)));
        assert!(counted.is_err(), "a count off a Noise wire is refused");
    }
}
