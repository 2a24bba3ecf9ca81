//! A message-level network of replication machines ([`Replica`]s), one folder each: virtual
//! time, per-message latency (in order per link, as a connection delivers), links that drop
//! and partitions that heal, crashes and restarts. Every message is decoded from its payload
//! on delivery, so runs exercise the wire format too. Each node's [`Folder`] answers its
//! storage requests (after a storage latency, in order) and is its scanner.
//!
//! A link is up while its edge is not held down, both ends run, both are loaded and no
//! partition splits them; going down drops what is in flight on it (`handle_link_down` at
//! the ends still running), coming up calls `handle_link_up` at both ends. Bulk messages
//! (HEREIS) are delivered like the others; after each one the sender hears
//! `handle_room`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use weft_engine::protocol::{Code, FolderId, Message, NodeId, ReplicaMessage};
use weft_engine::replicate::{
    LocalChange, Recipient, Replica, ReplicaConfig, ReplicaEvent, ReplicaOutput, StorageRequest,
};
use weft_engine::Instant;

use crate::folder::{Answer, Folder, StorageFaults};
use crate::rng::SimRng;

/// Nanoseconds per simulated millisecond.
pub const MS: u64 = 1_000_000;

/// Simulated Unix time at the start of a run, ms (mtimes are from it).
const EPOCH_MS: i64 = 1_700_000_000_000;

/// Application events kept for inspection, at most.
const EVENTS_KEPT_MAX: usize = 100_000;

/// A replication network's parameters.
#[derive(Debug, Clone)]
pub struct ReplicaNetConfig {
    /// Root seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Undirected links `(low, high)`.
    pub edges: Vec<(u32, u32)>,
    /// One-way latency bounds, µs (uniform).
    pub latency_us: (u64, u64),
    /// Storage step latency bounds, µs (uniform; steps stay in order).
    pub storage_latency_us: (u64, u64),
    /// The node that flips a byte in the data of every HEREIS it sends.
    pub corrupt_peer: Option<usize>,
    /// How long a link closed for a fault stays down before it is dialed again, ms.
    pub redial_ms: u64,
    /// The folder replicated.
    pub folder: FolderId,
    /// Changes each node's replication configuration from the defaults (tests use it to
    /// shrink windows and delays).
    pub tune: Option<fn(&mut ReplicaConfig)>,
}

impl ReplicaNetConfig {
    /// `nodes` nodes linked by `edges`, 1–20 ms latency, 20–200 µs storage steps.
    pub fn new(seed: u64, nodes: usize, edges: Vec<(u32, u32)>) -> ReplicaNetConfig {
        ReplicaNetConfig {
            seed,
            nodes,
            edges,
            latency_us: (1_000, 20_000),
            storage_latency_us: (20, 200),
            corrupt_peer: None,
            redial_ms: 1_000,
            folder: FolderId::from_name("sim"),
            tune: None,
        }
    }
}

#[derive(Debug)]
enum Ev {
    Deliver {
        from: usize,
        to: usize,
        epoch: u64,
        code: Code,
        payload: Bytes,
    },
    Storage {
        node: usize,
        incarnation: u64,
        token: u64,
        request: StorageRequest,
    },
    Wake(usize),
    Refresh,
    Restart(usize),
}

#[derive(Debug, Default, Clone, Copy)]
struct Link {
    /// Held down until this time, ns.
    down_until: u64,
    /// Bumped each time the link goes down: messages of an older epoch are dropped.
    epoch: u64,
    /// Whether both ends were told it is up.
    up: bool,
    /// When the last message each way (low → high, high → low) arrives, ns.
    last_at: [u64; 2],
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// Its id.
    pub id: NodeId,
    /// Its replication machine, while it runs.
    pub replica: Option<Replica>,
    /// Its folder (kept across crashes).
    pub folder: Folder,
    incarnation: u64,
    ready: bool,
    wake_at: Option<u64>,
    last_storage_at: u64,
    /// Crashes so far.
    pub crashes: u64,
}

/// What the network counted.
#[derive(Debug, Default, Clone)]
pub struct NetStats {
    /// Events processed.
    pub events: u64,
    /// Messages delivered.
    pub messages: u64,
    /// HEREIS data bytes sent.
    pub hereis_bytes: u64,
    /// LIST, IHAVE, IMOVED and IDELETED payload bytes sent.
    pub index_bytes: u64,
    /// Other replication payload bytes sent (IWANT, NOTFOUND, IREFUSE, HEREIS headers).
    pub other_bytes: u64,
    /// Links closed because a node refused its peer (`Err(ReplicaFault)`): (from, to, why).
    pub link_faults: Vec<(usize, usize, String)>,
    /// Network faults that struck (link drops, partitions, crashes).
    pub faults_struck: u64,
    /// Messages that failed to decode: (from, to, why).
    pub undecodable: Vec<(usize, usize, String)>,
}

/// The network.
pub struct ReplicaNet {
    config: ReplicaNetConfig,
    /// The nodes.
    pub nodes: Vec<SimNode>,
    index: BTreeMap<NodeId, usize>,
    links: BTreeMap<(usize, usize), Link>,
    adjacent: Vec<Vec<usize>>,
    partition: Option<(Vec<bool>, u64)>,
    queue: BTreeMap<(u64, u64), Ev>,
    seq: u64,
    now: u64,
    in_flight: u64,
    rng: SimRng,
    digest: blake3::Hasher,
    /// Counters.
    pub stats: NetStats,
    /// Application events, by node, in order (the first `EVENTS_KEPT_MAX`).
    pub events: Vec<(usize, ReplicaEvent)>,
    /// Conflict copies any node made, by path.
    pub conflict_copies: BTreeSet<String>,
    /// The index id each node last announced (from its IHAVE / IDELETED / IMOVED).
    pub index_ids: BTreeMap<usize, u64>,
}

/// Node `i`'s id under `seed`.
pub fn node_id(seed: u64, i: usize) -> NodeId {
    let mut h = blake3::Hasher::new();
    h.update(b"weft sim replica node\0");
    h.update(&seed.to_le_bytes());
    h.update(&(i as u64).to_le_bytes());
    NodeId(*h.finalize().as_bytes())
}

fn key(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl ReplicaNet {
    /// The network with every node started (empty folders).
    pub fn new(config: ReplicaNetConfig) -> ReplicaNet {
        let n = config.nodes;
        let nodes: Vec<SimNode> = (0..n)
            .map(|i| SimNode {
                id: node_id(config.seed, i),
                replica: None,
                folder: Folder::new(crate::rng::child_seed(config.seed, "folder", i as u64)),
                incarnation: 0,
                ready: false,
                wake_at: None,
                last_storage_at: 0,
                crashes: 0,
            })
            .collect();
        let index = nodes.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let mut adjacent = vec![Vec::new(); n];
        let mut links = BTreeMap::new();
        for &(a, b) in &config.edges {
            let (a, b) = (a as usize, b as usize);
            if a != b && a < n && b < n && !links.contains_key(&key(a, b)) {
                links.insert(key(a, b), Link::default());
                adjacent[a].push(b);
                adjacent[b].push(a);
            }
        }
        let rng = SimRng::child(config.seed, "replica net", 0);
        let mut net = ReplicaNet {
            config,
            nodes,
            index,
            links,
            adjacent,
            partition: None,
            queue: BTreeMap::new(),
            seq: 0,
            now: 0,
            in_flight: 0,
            rng,
            digest: blake3::Hasher::new(),
            stats: NetStats::default(),
            events: Vec::new(),
            conflict_copies: BTreeSet::new(),
            index_ids: BTreeMap::new(),
        };
        for i in 0..n {
            net.start(i);
        }
        net
    }

    /// The configuration.
    pub fn config(&self) -> &ReplicaNetConfig {
        &self.config
    }

    /// Simulated time, ns.
    pub fn now_ns(&self) -> u64 {
        self.now
    }

    /// Simulated Unix time, ms (what local writes stamp as mtime).
    pub fn now_unix_ms(&self) -> i64 {
        EPOCH_MS + (self.now / MS) as i64
    }

    /// The trace digest (hex) over every delivery so far.
    pub fn digest(&self) -> String {
        self.digest.finalize().to_hex().to_string()
    }

    /// Nodes in all.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether node `i` runs.
    pub fn is_live(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some()
    }

    /// Whether node `i` runs and its state is loaded.
    pub fn is_ready(&self, i: usize) -> bool {
        self.nodes[i].ready
    }

    /// Whether the link between `a` and `b` is up.
    pub fn is_linked(&self, a: usize, b: usize) -> bool {
        self.links.get(&key(a, b)).is_some_and(|l| l.up)
    }

    /// The node with id `id`.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Messages and storage steps in flight.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        if matches!(ev, Ev::Deliver { .. } | Ev::Storage { .. }) {
            self.in_flight += 1;
        }
        self.queue.insert((at, self.seq), ev);
    }

    fn replica_seed(&self, i: usize) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"weft sim replica seed\0");
        h.update(&self.config.seed.to_le_bytes());
        h.update(&(i as u64).to_le_bytes());
        h.update(&self.nodes[i].incarnation.to_le_bytes());
        *h.finalize().as_bytes()
    }

    /// Starts node `i` (if it is down): a new replica that loads its persisted state; once
    /// loaded, the folder is scanned whole and its links come up.
    pub fn start(&mut self, i: usize) {
        if self.nodes[i].replica.is_some() {
            return;
        }
        let mut config = ReplicaConfig::new(self.config.folder, self.nodes[i].id);
        if let Some(tune) = self.config.tune {
            tune(&mut config);
        }
        let replica = Replica::new(config, self.replica_seed(i));
        self.nodes[i].replica = Some(replica);
        self.nodes[i].ready = false;
        self.after(i);
        self.check_ready(i);
    }

    /// Crashes node `i`: its replica's memory is lost (its folder, temporary files and
    /// persisted state stay); its links go down.
    pub fn crash(&mut self, i: usize) {
        if self.nodes[i].replica.is_none() {
            return;
        }
        let node = &mut self.nodes[i];
        node.replica = None;
        node.ready = false;
        node.wake_at = None;
        node.incarnation += 1;
        node.crashes += 1;
        self.refresh_node(i);
    }

    /// Crashes node `i` and restarts it `ms` later.
    pub fn crash_for(&mut self, i: usize, ms: u64) {
        self.crash(i);
        self.push(self.now + ms * MS, Ev::Restart(i));
    }

    /// Holds the link between `a` and `b` down for `ms` (it comes back by itself).
    pub fn drop_link(&mut self, a: usize, b: usize, ms: u64) {
        let until = self.now + ms * MS;
        if let Some(l) = self.links.get_mut(&key(a, b)) {
            l.down_until = l.down_until.max(until);
            self.refresh(a, b);
            self.push(until, Ev::Refresh);
        }
    }

    /// Splits the network: links between a node with `side[i]` and one without are down for
    /// `ms`.
    pub fn partition(&mut self, side: Vec<bool>, ms: u64) {
        let until = self.now + ms * MS;
        self.partition = Some((side, until));
        self.refresh_all();
        self.push(until, Ev::Refresh);
    }

    /// Ends every fault: links and partitions up, storage faults off, crashed nodes
    /// restarted.
    pub fn heal(&mut self) {
        self.partition = None;
        for l in self.links.values_mut() {
            l.down_until = 0;
        }
        for i in 0..self.nodes.len() {
            self.nodes[i].folder.faults = StorageFaults::NONE;
            self.start(i);
        }
        self.refresh_all();
    }

    fn partitioned(&self, a: usize, b: usize) -> bool {
        match &self.partition {
            Some((side, until)) if *until > self.now => side[a] != side[b],
            _ => false,
        }
    }

    fn want_up(&self, a: usize, b: usize) -> bool {
        let Some(l) = self.links.get(&key(a, b)) else {
            return false;
        };
        l.down_until <= self.now
            && self.nodes[a].ready
            && self.nodes[b].ready
            && !self.partitioned(a, b)
    }

    fn refresh(&mut self, a: usize, b: usize) {
        let want = self.want_up(a, b);
        let Some(link) = self.links.get_mut(&key(a, b)) else {
            return;
        };
        if link.up == want {
            return;
        }
        link.up = want;
        let now = Instant(self.now);
        let (ida, idb) = (self.nodes[a].id, self.nodes[b].id);
        if !want {
            link.epoch += 1;
            for (x, peer) in [(a, idb), (b, ida)] {
                if let Some(r) = self.nodes[x].replica.as_mut() {
                    r.handle_link_down(now, peer);
                }
            }
        } else {
            for (x, peer) in [(a, idb), (b, ida)] {
                if let Some(r) = self.nodes[x].replica.as_mut() {
                    r.handle_link_up(now, peer);
                }
            }
        }
        self.after(a);
        self.after(b);
    }

    fn refresh_node(&mut self, i: usize) {
        for j in self.adjacent[i].clone() {
            self.refresh(i, j);
        }
    }

    fn refresh_all(&mut self) {
        let keys: Vec<(usize, usize)> = self.links.keys().copied().collect();
        for (a, b) in keys {
            self.refresh(a, b);
        }
    }

    /// A node that just became ready: its full scan, then its links.
    fn check_ready(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(r) = node.replica.as_mut() else {
            return;
        };
        if node.ready || !r.is_ready() {
            return;
        }
        node.ready = true;
        let scan = node.folder.full_scan(r.records());
        let now = Instant(self.now);
        for change in scan {
            r.handle_local(now, change);
        }
        self.after(i);
        self.refresh_node(i);
    }

    /// A local operation at node `i`: `op` changes its folder (given the time, Unix ms) and
    /// returns what the scanner reports, which goes to the replica if it is loaded (else the
    /// full scan at its start finds it).
    pub fn local(&mut self, i: usize, op: impl FnOnce(&mut Folder, i64) -> Vec<LocalChange>) {
        let now_ms = self.now_unix_ms();
        let changes = op(&mut self.nodes[i].folder, now_ms);
        if !self.nodes[i].ready {
            return;
        }
        let now = Instant(self.now);
        if let Some(r) = self.nodes[i].replica.as_mut() {
            for c in changes {
                r.handle_local(now, c);
            }
        }
        self.after(i);
    }

    /// Hands `change` to node `i`'s replica as if its scanner had found it (the folder is
    /// not touched).
    pub fn report(&mut self, i: usize, change: LocalChange) {
        let now = Instant(self.now);
        if let Some(r) = self.nodes[i].replica.as_mut() {
            r.handle_local(now, change);
        }
        self.after(i);
    }

    /// Sends `message` from `from` to `to` as if `from`'s replica had, if they are linked.
    pub fn inject(&mut self, from: usize, to: usize, message: ReplicaMessage<'_>) {
        let code = message.code();
        let payload = Bytes::from(Message::Replica(message).encode_payload());
        self.send(from, to, code, payload);
    }

    fn send(&mut self, from: usize, to: usize, code: Code, payload: Bytes) {
        let Some(link) = self.links.get(&key(from, to)).copied() else {
            return;
        };
        if !link.up {
            return;
        }
        let mut payload = payload;
        if code == Code::HEREIS {
            let data_len = match Message::decode(code, &payload) {
                Ok(Message::Replica(ReplicaMessage::HereIs(h))) => h.data.len(),
                _ => 0,
            };
            self.stats.hereis_bytes += data_len as u64;
            self.stats.other_bytes += (payload.len() - data_len) as u64;
            if self.config.corrupt_peer == Some(from) && data_len > 0 {
                let mut bytes = payload.to_vec();
                let at = bytes.len() - data_len + self.rng.below(data_len as u64) as usize;
                bytes[at] ^= 0x5a;
                payload = Bytes::from(bytes);
            }
        } else if matches!(
            code,
            Code::LIST | Code::IHAVE | Code::IMOVED | Code::IDELETED
        ) {
            self.stats.index_bytes += payload.len() as u64;
            let id = match Message::decode(code, &payload) {
                Ok(Message::Replica(ReplicaMessage::IHave(m))) => Some(m.index_id),
                Ok(Message::Replica(ReplicaMessage::IDeleted(m))) => Some(m.index_id),
                Ok(Message::Replica(ReplicaMessage::IMoved(m))) => Some(m.index_id),
                _ => None,
            };
            if let Some(id) = id {
                self.index_ids.insert(from, id);
            }
        } else {
            self.stats.other_bytes += payload.len() as u64;
        }
        let (lo, hi) = self.config.latency_us;
        let delay = self.rng.between(lo, hi) * 1_000;
        let dir = usize::from(from > to);
        let at = (self.now + delay).max(link.last_at[dir]);
        if let Some(l) = self.links.get_mut(&key(from, to)) {
            l.last_at[dir] = at;
        }
        let ev = Ev::Deliver {
            from,
            to,
            epoch: link.epoch,
            code,
            payload,
        };
        self.push(at, ev);
    }

    /// Drains node `i`'s outputs and schedules its next wake.
    fn after(&mut self, i: usize) {
        loop {
            let Some(out) = self.nodes[i].replica.as_mut().and_then(|r| r.poll_output()) else {
                break;
            };
            match out {
                ReplicaOutput::Send {
                    to, code, payload, ..
                } => match to {
                    Recipient::Peer(id) => {
                        if let Some(j) = self.index_of(&id) {
                            self.send(i, j, code, payload);
                        }
                    }
                    Recipient::Links => {
                        for j in self.adjacent[i].clone() {
                            self.send(i, j, code, payload.clone());
                        }
                    }
                },
                ReplicaOutput::Request { token, request } => {
                    let (lo, hi) = self.config.storage_latency_us;
                    let delay = self.rng.between(lo, hi) * 1_000;
                    let at = (self.now + delay).max(self.nodes[i].last_storage_at);
                    self.nodes[i].last_storage_at = at;
                    let incarnation = self.nodes[i].incarnation;
                    self.push(
                        at,
                        Ev::Storage {
                            node: i,
                            incarnation,
                            token,
                            request,
                        },
                    );
                }
                ReplicaOutput::Event(e) => {
                    if let ReplicaEvent::Conflict { copy, .. } = &e {
                        self.conflict_copies.insert(copy.clone());
                    }
                    if self.events.len() < EVENTS_KEPT_MAX {
                        self.events.push((i, e));
                    }
                }
            }
        }
        let next = self.nodes[i]
            .replica
            .as_ref()
            .and_then(|r| r.poll_timeout())
            .map(|t| t.0.max(self.now));
        if let Some(at) = next {
            let node = &mut self.nodes[i];
            if node.wake_at.is_none_or(|w| at < w || w < self.now) {
                node.wake_at = Some(at);
                self.push(at, Ev::Wake(i));
            }
        }
    }

    /// Runs events until simulated time `until_ns`.
    pub fn run_until(&mut self, until_ns: u64) {
        while let Some((&(at, seq), _)) = self.queue.first_key_value() {
            if at > until_ns {
                break;
            }
            let Some(ev) = self.queue.remove(&(at, seq)) else {
                break;
            };
            self.now = self.now.max(at);
            self.stats.events += 1;
            self.handle(at, ev);
        }
        self.now = self.now.max(until_ns);
    }

    fn handle(&mut self, at: u64, ev: Ev) {
        let now = Instant(self.now);
        match ev {
            Ev::Refresh => self.refresh_all(),
            Ev::Restart(i) => self.start(i),
            Ev::Wake(i) => {
                if self.nodes[i].wake_at != Some(at) {
                    return;
                }
                self.nodes[i].wake_at = None;
                if let Some(r) = self.nodes[i].replica.as_mut() {
                    r.handle_timeout(now);
                    self.after(i);
                }
            }
            Ev::Storage {
                node,
                incarnation,
                token,
                request,
            } => {
                self.in_flight -= 1;
                if self.nodes[node].incarnation != incarnation {
                    return;
                }
                match self.nodes[node].folder.answer(&request) {
                    Answer::Crash => {
                        self.crash(node);
                        // It restarts after a while, as a crashed process is restarted.
                        let restart = self.now + self.rng.between(100, 2_000) * MS;
                        self.push(restart, Ev::Restart(node));
                    }
                    Answer::Result(result) => {
                        if let Some(r) = self.nodes[node].replica.as_mut() {
                            r.handle_completed(now, token, result);
                        }
                        self.after(node);
                        self.check_ready(node);
                    }
                }
            }
            Ev::Deliver {
                from,
                to,
                epoch,
                code,
                payload,
            } => {
                self.in_flight -= 1;
                let Some(link) = self.links.get(&key(from, to)) else {
                    return;
                };
                if link.epoch != epoch || !link.up {
                    return;
                }
                self.stats.messages += 1;
                self.digest.update(&self.now.to_le_bytes());
                self.digest.update(&(to as u64).to_le_bytes());
                self.digest.update(&code.0.to_le_bytes());
                self.digest.update(&payload);
                let from_id = self.nodes[from].id;
                let to_id = self.nodes[to].id;
                let result = match Message::decode(code, &payload) {
                    Ok(Message::Replica(m)) => match self.nodes[to].replica.as_mut() {
                        Some(r) => r.handle_message(now, from_id, m, &payload),
                        None => return,
                    },
                    Ok(_) => Ok(()),
                    Err(e) => {
                        self.stats.undecodable.push((from, to, format!("{e:?}")));
                        Ok(())
                    }
                };
                self.after(to);
                if let Err(fault) = result {
                    self.stats
                        .link_faults
                        .push((to, from, format!("{fault:?}")));
                    let redial = self.config.redial_ms;
                    self.drop_link(from, to, redial);
                } else if code == Code::HEREIS {
                    if let Some(r) = self.nodes[from].replica.as_mut() {
                        r.handle_room(now, to_id);
                    }
                    self.after(from);
                }
            }
        }
    }
}
