//! A message-level network of Chord machines: virtual time, per-message latency and loss,
//! crashes, joins and graceful leaves. Every message is encoded to its frame and decoded again
//! on delivery, so runs exercise the wire format too. The checkers compare each node's
//! successor, predecessor, successor list and fingers with the true ring of live nodes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use weft_engine::chord::{
    finger_start, in_half_open, Chord, ChordConfig, ChordEvent, ChordOutput, ChordRequest,
};
use weft_engine::protocol::{ChordMessage, ChordPeer, ChordValue, Message, NodeId, StoreOp};
use weft_engine::{Identity, Instant};

use crate::rng::SimRng;

/// A Chord network's parameters.
#[derive(Debug, Clone)]
pub struct ChordNetConfig {
    /// Root seed.
    pub seed: u64,
    /// Each node's Chord configuration.
    pub chord: ChordConfig,
    /// One-way latency bounds, ms (uniform).
    pub latency_ms: (u64, u64),
    /// Probability that a message is lost.
    pub loss: f64,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Deliver {
        to: usize,
        from: usize,
        frame: Vec<u8>,
    },
    Wake(usize),
}

/// The network. Node `i` has a fixed identity; a crashed node can rejoin later with its
/// memory lost.
pub struct ChordNet {
    config: ChordNetConfig,
    peers: Vec<ChordPeer>,
    index: BTreeMap<NodeId, usize>,
    nodes: Vec<Option<Chord>>,
    wake_at: Vec<Option<u64>>,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    now: u64,
    rng: SimRng,
    /// Events processed (deliveries and wakes).
    pub events: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Application events, by node, in order.
    pub app_events: Vec<(usize, ChordEvent)>,
    digest: blake3::Hasher,
    /// The malicious member, if any: its answers to CHORD_FETCH are rewritten (forged,
    /// replayed or empty), and it sees every CHORD_STORE put delivered anywhere.
    malicious: Option<usize>,
    /// Signed puts (position, key, entry) seen in CHORD_STORE deliveries, for the malicious
    /// member to replay (at most `CAPTURED_MAX`).
    pub captured: Vec<(u64, Vec<u8>, ChordValue)>,
}

/// Puts the malicious member remembers.
const CAPTURED_MAX: usize = 4096;

/// The calendar time (Unix ms) at simulated time zero: every node's wall clock reads this plus
/// the simulated time (the drops tracker's records expire by it).
pub const WALL_BASE_MS: u64 = 1_800_000_000_000;

/// Node `i`'s key pair from `seed`.
pub fn identity(seed: u64, i: usize) -> Identity {
    let mut h = blake3::Hasher::new();
    h.update(b"weft sim chord key\0");
    h.update(&seed.to_le_bytes());
    h.update(&(i as u64).to_le_bytes());
    Identity::from_secret(h.finalize().as_bytes())
}

/// `n` nodes' identities from `seed`.
fn peer(seed: u64, i: usize) -> ChordPeer {
    let mut h = blake3::Hasher::new();
    h.update(b"weft sim chord node\0");
    h.update(&seed.to_le_bytes());
    h.update(&(i as u64).to_le_bytes());
    ChordPeer {
        node: NodeId(*h.finalize().as_bytes()),
        addr: format!("10.{}.{}.{}:7000", i >> 16 & 255, i >> 8 & 255, i & 255),
    }
}

impl ChordNet {
    /// A network of `n` nodes, none running yet.
    pub fn new(n: usize, config: ChordNetConfig) -> ChordNet {
        let peers: Vec<ChordPeer> = (0..n).map(|i| peer(config.seed, i)).collect();
        let index = peers.iter().enumerate().map(|(i, p)| (p.node, i)).collect();
        let rng = SimRng::child(config.seed, "chord net", 0);
        ChordNet {
            config,
            peers,
            index,
            nodes: (0..n).map(|_| None).collect(),
            wake_at: vec![None; n],
            heap: BinaryHeap::new(),
            seq: 0,
            now: 0,
            rng,
            events: 0,
            messages: 0,
            app_events: Vec::new(),
            digest: blake3::Hasher::new(),
            malicious: None,
            captured: Vec::new(),
        }
    }

    /// Makes node `i` the malicious member, at ring position `ring_id` (an id ground to sit
    /// where it wants: e.g. just below a victim). Call before it starts.
    pub fn set_malicious(&mut self, i: usize, ring_id: u64) {
        self.index.remove(&self.peers[i].node);
        self.peers[i].node.0[..8].copy_from_slice(&ring_id.to_be_bytes());
        self.index.insert(self.peers[i].node, i);
        self.malicious = Some(i);
    }

    /// The malicious member, if any.
    pub fn malicious(&self) -> Option<usize> {
        self.malicious
    }

    /// Node `i`'s signing key.
    pub fn identity(&self, i: usize) -> Identity {
        identity(self.config.seed, i)
    }

    /// Sends `msg` from node `from` to node `to` as if `from`'s machine had (the malicious
    /// member's own messages).
    pub fn inject(&mut self, from: usize, to: usize, msg: ChordMessage) {
        let (lo, hi) = self.config.latency_ms;
        let delay = self.rng.between(lo * 1_000_000, hi * 1_000_000 + 1);
        let frame = Message::Chord(msg).to_frame(false).into_bytes().to_vec();
        self.push(self.now + delay, Ev::Deliver { to, from, frame });
    }

    /// The malicious member's rewrite of an answer to CHORD_FETCH: empty, its values with
    /// their bytes changed under the writer's signature, or every captured put of the key
    /// (replayed, perhaps deleted since) plus a forged delete in the writer's name.
    fn tamper(&mut self, msg: ChordMessage) -> ChordMessage {
        let ChordMessage::Values(mut v) = msg else {
            return msg;
        };
        match self.rng.below(3) {
            0 => v.values.clear(),
            1 => {
                for e in v.values.iter_mut() {
                    if let StoreOp::Put(bytes) = &mut e.op {
                        bytes.push(b'!');
                    }
                    e.seq = e.seq.wrapping_add(1);
                }
            }
            _ => {
                let replay: Vec<ChordValue> = v
                    .values
                    .iter()
                    .flat_map(|e| {
                        self.captured
                            .iter()
                            .filter(|(_, _, c)| c.writer == e.writer)
                            .map(|(_, _, c)| c.clone())
                            .take(2)
                    })
                    .collect();
                let forged: Vec<ChordValue> = v
                    .values
                    .iter()
                    .map(|e| ChordValue {
                        op: StoreOp::Delete(None),
                        seq: u64::MAX,
                        ..e.clone()
                    })
                    .collect();
                v.values = replay.into_iter().chain(forged).take(16).collect();
            }
        }
        ChordMessage::Values(v)
    }

    /// Simulated time, ns.
    pub fn now_ns(&self) -> u64 {
        self.now
    }

    /// Every node's calendar time now, Unix ms.
    pub fn wall_ms(&self) -> u64 {
        WALL_BASE_MS + self.now / 1_000_000
    }

    /// Node `i`'s identity.
    pub fn peer(&self, i: usize) -> &ChordPeer {
        &self.peers[i]
    }

    /// Node `i`'s machine, if it runs.
    pub fn node(&self, i: usize) -> Option<&Chord> {
        self.nodes[i].as_ref()
    }

    /// Indices of running nodes.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    /// Nodes in total (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the network has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index of a node id.
    pub fn index_of(&self, node: &NodeId) -> Option<usize> {
        self.index.get(node).copied()
    }

    /// The trace digest (hex) over every delivery so far.
    pub fn digest(&self) -> String {
        self.digest.finalize().to_hex().to_string()
    }

    /// Starts node `i` (fresh memory); it joins through `via` (or starts a ring alone).
    pub fn start(&mut self, i: usize, via: Option<usize>) {
        let seed = crate::rng::child_seed(self.config.seed, "chord node", i as u64 ^ self.now);
        let mut c = Chord::new(
            self.peers[i].clone(),
            self.identity(i),
            self.config.chord.clone(),
            seed,
        );
        let now = Instant(self.now);
        c.observe_wall_clock(now, Some(self.wall_ms()));
        match via {
            Some(v) => c.join(now, self.peers[v].clone()),
            None => c.start(now),
        }
        self.nodes[i] = Some(c);
        self.after(i);
    }

    /// Running node `i` joins again through `via` (keeping its records): what its operator
    /// does once the member it first joined through went down before answering (SPEC.md
    /// §20.3: a join retries through that member only).
    pub fn rejoin(&mut self, i: usize, via: usize) {
        let now = Instant(self.now);
        let peer = self.peers[via].clone();
        if let Some(c) = self.nodes[i].as_mut() {
            c.join(now, peer);
        }
        self.after(i);
    }

    /// Replaces every node's Chord configuration (running and future ones).
    pub fn set_chord_config(&mut self, chord: ChordConfig) {
        for c in self.nodes.iter_mut().flatten() {
            c.set_config(chord.clone());
        }
        self.config.chord = chord;
    }

    /// Sets the probability that a message is lost.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// Crashes node `i`: it stops and loses its memory.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.wake_at[i] = None;
    }

    /// Node `i` leaves gracefully (hands its records to its successor), then stops.
    pub fn leave(&mut self, i: usize) {
        if let Some(c) = self.nodes[i].as_mut() {
            c.leave(Instant(self.now));
        }
        self.after(i);
        self.crash(i);
    }

    /// Starts a request at node `i`.
    pub fn request(&mut self, i: usize, app_request: u64, req: ChordRequest) {
        if let Some(c) = self.nodes[i].as_mut() {
            c.request(Instant(self.now), app_request, req);
            self.after(i);
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    /// Drains node `i`'s outputs and schedules its next wake.
    fn after(&mut self, i: usize) {
        loop {
            let Some(out) = self.nodes[i].as_mut().and_then(|c| c.poll_output()) else {
                break;
            };
            match out {
                ChordOutput::Send { to, msg } => {
                    let Some(&j) = self.index.get(&to.node) else {
                        continue;
                    };
                    let msg = if self.malicious == Some(i) {
                        self.tamper(msg)
                    } else {
                        msg
                    };
                    if self.rng.chance(self.config.loss) {
                        continue;
                    }
                    let (lo, hi) = self.config.latency_ms;
                    let delay = self.rng.between(lo * 1_000_000, hi * 1_000_000 + 1);
                    let frame = Message::Chord(msg).to_frame(false).into_bytes().to_vec();
                    self.push(
                        self.now + delay,
                        Ev::Deliver {
                            to: j,
                            from: i,
                            frame,
                        },
                    );
                }
                ChordOutput::Event(e) => self.app_events.push((i, e)),
            }
        }
        let next = self.nodes[i]
            .as_ref()
            .and_then(|c| c.poll_timeout())
            .map(|t| t.0.max(self.now));
        if let Some(at) = next {
            if self.wake_at[i].is_none_or(|w| at < w || w < self.now) {
                self.wake_at[i] = Some(at);
                self.push(at, Ev::Wake(i));
            }
        }
    }

    /// Runs events until simulated time `until_ns`.
    pub fn run_until(&mut self, until_ns: u64) {
        while let Some(Reverse((at, _, _))) = self.heap.peek() {
            if *at > until_ns {
                break;
            }
            let Some(Reverse((at, _, ev))) = self.heap.pop() else {
                break;
            };
            self.now = self.now.max(at);
            let now = Instant(self.now);
            self.events += 1;
            match ev {
                Ev::Wake(i) => {
                    if self.wake_at[i] != Some(at) {
                        continue;
                    }
                    self.wake_at[i] = None;
                    if let Some(c) = self.nodes[i].as_mut() {
                        c.handle_timeout(now);
                        self.after(i);
                    }
                }
                Ev::Deliver { to, from, frame } => {
                    if self.nodes[to].is_none() {
                        continue;
                    }
                    self.messages += 1;
                    self.digest.update(&self.now.to_le_bytes());
                    self.digest.update(&(to as u64).to_le_bytes());
                    self.digest.update(&frame);
                    let msg = decode(&frame);
                    if let (Some(ChordMessage::Store(st)), Some(_)) = (&msg, self.malicious) {
                        if st.value.is_put() && self.captured.len() < CAPTURED_MAX {
                            self.captured
                                .push((st.position, st.key.clone(), st.value.clone()));
                        }
                    }
                    let Some(c) = self.nodes[to].as_mut() else {
                        continue;
                    };
                    if let Some(msg) = msg {
                        c.handle_message(now, &self.peers[from], msg);
                        self.after(to);
                    }
                }
            }
        }
        self.now = self.now.max(until_ns);
    }

    /// The live nodes sorted by ring id.
    pub fn true_ring(&self) -> Vec<usize> {
        let mut live = self.live();
        live.sort_by_key(|&i| self.peers[i].ring_id());
        live
    }

    /// The live node owning ring position `target` (its successor).
    pub fn true_owner(&self, ring: &[usize], target: u64) -> Option<usize> {
        if ring.is_empty() {
            return None;
        }
        let pos = ring.partition_point(|&i| self.peers[i].ring_id() < target);
        Some(ring[pos % ring.len()])
    }

    /// Checks every live node's successor list and predecessor against the true ring.
    pub fn check_ring(&self) -> Result<(), String> {
        let ring = self.true_ring();
        let n = ring.len();
        let r = self.config.chord.successor_list_len;
        for (k, &i) in ring.iter().enumerate() {
            let c = self.nodes[i].as_ref().ok_or("dead node in ring")?;
            let want: Vec<NodeId> = (1..=r.min(n.saturating_sub(1)).max(1))
                .map(|d| self.peers[ring[(k + d) % n]].node)
                .collect();
            let got: Vec<NodeId> = c.successors().iter().map(|p| p.node).collect();
            if got != want {
                let name = |id: &NodeId| match self.index.get(id) {
                    Some(&j) if self.nodes[j].is_some() => format!("{j}"),
                    Some(&j) => format!("{j}(down)"),
                    None => "?".into(),
                };
                let missing: Vec<String> = want
                    .iter()
                    .filter(|w| !got.contains(w))
                    .filter_map(|w| {
                        let j = *self.index.get(w)?;
                        let c = self.nodes[j].as_ref()?;
                        Some(format!(
                            "{j}: joined {} successors [{}] predecessor {}",
                            c.is_joined(),
                            c.successors()
                                .iter()
                                .map(|p| name(&p.node))
                                .collect::<Vec<_>>()
                                .join(" "),
                            c.predecessor().map_or("none".into(), |p| name(&p.node))
                        ))
                    })
                    .collect();
                let got: Vec<String> = got.iter().map(name).collect();
                let want: Vec<String> = want.iter().map(name).collect();
                return Err(format!(
                    "node {i}: successor list [{}], true ring [{}]; missing {}",
                    got.join(" "),
                    want.join(" "),
                    missing.join("; ")
                ));
            }
            let pred = self.peers[ring[(k + n - 1) % n]].node;
            if c.predecessor().map(|p| p.node) != Some(pred) {
                return Err(format!("node {i}: wrong predecessor"));
            }
        }
        Ok(())
    }

    /// Fraction of live nodes' fingers that point at the true owner of their start.
    pub fn fingers_correct_fraction(&self) -> f64 {
        let ring = self.true_ring();
        let (mut right, mut all) = (0u64, 0u64);
        for &i in &ring {
            let Some(c) = self.nodes[i].as_ref() else {
                continue;
            };
            let id = self.peers[i].ring_id();
            for f in 0..64 {
                all += 1;
                let owner = self.true_owner(&ring, finger_start(id, f));
                right +=
                    u64::from(c.finger(f).map(|p| p.node) == owner.map(|o| self.peers[o].node));
            }
        }
        if all == 0 {
            1.0
        } else {
            right as f64 / all as f64
        }
    }

    /// Which live nodes own the key's positions, and hold it.
    pub fn holders(&self, ring: &[usize], key: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        for i in ring {
            if let Some(c) = &self.nodes[*i] {
                if (0..weft_engine::protocol::CHORD_REPLICAS as u8)
                    .any(|r| c.holds(weft_engine::protocol::key_position(key, r), key))
                {
                    out.push(*i);
                }
            }
        }
        out
    }

    /// Whether `target` lies in node `i`'s range according to the true ring.
    pub fn owns(&self, ring: &[usize], i: usize, target: u64) -> bool {
        let k = ring.iter().position(|&x| x == i);
        match k {
            Some(k) => {
                let pred = ring[(k + ring.len() - 1) % ring.len()];
                in_half_open(self.peers[pred].ring_id(), target, self.peers[i].ring_id())
            }
            None => false,
        }
    }
}

fn decode(frame: &[u8]) -> Option<weft_engine::protocol::ChordMessage> {
    let mut d = weft_engine::protocol::FrameDecoder::new();
    d.push(bytes::Bytes::copy_from_slice(frame));
    let f = d.next_frame().ok()??;
    let payload = f.payload().ok()?;
    match Message::decode(f.code(), &payload).ok()? {
        Message::Chord(m) => Some(m),
        _ => None,
    }
}
