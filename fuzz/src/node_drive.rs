//! The node fuzz logic, shared by `fuzz_targets/node.rs` and the corpus replay test in
//! `engine/tests/fuzz_corpus.rs`.
//!
//! Depends only on `weft-engine`, `weft-protocol`, `bytes` and `arbitrary`, so the engine's
//! tests can include it with `#[path = ...] mod` without pulling in libfuzzer.
//!
//! The input is read as a sequence of [`Op`]s that drive one [`Node`] as a driver and its
//! peers would, including wrong ones (unknown connection ids, answers to dials that were
//! never made): the node must refuse those with an `InputError`, never panic. Besides raw
//! bytes, peers can send well-formed frames built from arbitrary message fields, and complete
//! a real handshake (a signed HELLO_ACK over the nonce the node sent) so that the fuzzer gets
//! past the handshake into discovery, liveness, the mesh, the sync table and Chord (the
//! table and Chord ops and frames are in `node_app.rs`).
//!
//! Inputs come in five formats. The first (any input not starting with [`FORMAT_2`]) is a
//! plain sequence of [`Op`]s against a node that is no Chord member, as the committed corpus
//! was grown with, so that it keeps decoding to the same ops. The second is [`FORMAT_2`],
//! one byte of setup flags (bit 0: the node is a Chord ring member, with a listen address;
//! bit 1: it gets a wall clock before the first op, which table writes need), then
//! [`Step`]s: an [`Op`] or a table / Chord [`AppOp`]. The third is [`FORMAT_3`], the same
//! flags (and bit 2: the node replicates folder `photos` from the start; bit 3: also `docs`,
//! with tiny limits), then [`Step3`]s: an [`Op`], an [`AppOp`] or a folder replication
//! [`ReplicaOp`] (`node_replica.rs`); its peers' HELLOs name the replication family too, and
//! the node's storage steps go to an in-memory disk. The fourth is [`FORMAT_4`], the same
//! flags (and bit 4, [`FLAG_PLAINTEXT`]: links stay plain) against a node that takes remote
//! runs from every peer but the last (`config.run`), then [`Step4`]s: a [`Step3`]'s, a remote
//! run's [`RunOp`] or a drop's [`DropOp`] (`node_remote.rs`); its peers' HELLOs name every
//! family. Its links are Noise links unless bit 4 is set (runs go only over Noise): each
//! fake peer plays its side of the Noise handshake (peer `n % PEERS` on the connection
//! `Op::Accept { n, .. }` opens, peer `id / 2 % PEERS` on outbound connection `ConnId(id)`),
//! seals every byte it sends (but raw
//! bytes, which then fail to open) and opens what the node sends before it is decoded; the
//! host's process steps are answered by a script or held and answered later, and at the end
//! every held request, of processes and of the disk, is answered. The fifth is [`FORMAT_5`],
//! the fourth's setup, then [`Step5`]s: a [`Step4`]'s or a folder's `.weftignore` rules
//! ([`RulesOp`], `node_replica.rs`), set as a host sets them each time it reads the file.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use weft_engine::chord::ChordConfig;
use weft_engine::identity::{Identity, Role, Transcript};
use weft_engine::noise::{NoiseKeys, NoiseLink, NoiseRole, Rekey};
use weft_engine::protocol::{
    Broadcast, ByeReason, CascadeId, Code, DigestEntry, Family, Frame, FrameDecoder, Hello,
    HelloAck, ICanSee, ICantSee, IKnowAbout, MeshDigest, MeshWant, Message, NetworkId, NodeId,
    OriginProof, PeerInfo, Ping, Pong, SeqRange, Signature, TableWrite, WantRange, ADDR_BYTES_MAX,
    CAP_LZ4,
};
use weft_engine::{
    CloseReason, Command, Config, ConnId, Duration, Event, HostRequest, HostResult, Input,
    InputError, Instant, Limits, MeshCommand, MeshEvent, NetworkKey, Node, NodeMetrics, Output,
    Refusal, RequestId, RunConfig, SessionRefusal, TableEvent,
};

#[path = "node_app.rs"]
mod app;
#[path = "node_remote.rs"]
mod remote;
#[path = "node_replica.rs"]
mod replica;

use app::{AppOp, Heard};
use remote::{DropOp, Processes, RemoteHeard, RunOp};
use replica::{Disk, ReplicaHeard, ReplicaOp, RulesOp};

/// The network every well-behaved peer claims.
const NETWORK: &str = "fuzz";
/// The node's seed: `Config::from_seed(NETWORK, SEED)`.
const SEED: u64 = 1;
/// Peers with real keys, able to complete a handshake.
const PEERS: usize = 4;
/// Most ops one input may run.
const OPS_MAX: usize = 512;
/// The node's listen address when it is a Chord member: one of `AddrSel::Short`'s.
const LISTEN_ADDR: &str = "10.0.0.7:7000";
/// The wall clock a setup gives the node (Unix ms, in 2027), and what peers' timestamps are
/// relative to while the node has none.
const WALL_CLOCK_MS: u64 = 1_800_000_000_000;

/// The families every fuzzed peer's HELLO names: all those the protocol had before HELLO
/// named them (every peer then ran the mesh, the sync table and Chord), so that the corpus
/// keeps reaching the same paths.
const PEER_FAMILIES: u32 =
    Family::Session.bit() | Family::Mesh.bit() | Family::Table.bit() | Family::Chord.bit();

/// The HELLO capability bit that meant "this connection carries Chord only" before dedicated
/// connections (`Hello::dedicated`) replaced it; arbitrary HELLOs keep the meaning.
const OLD_CAP_CHORD_ONLY: u32 = 0x2;

/// The prefix of the second input format.
const FORMAT_2: &[u8; 2] = b"w2";

/// The prefix of the third input format (folder replication too).
const FORMAT_3: &[u8; 2] = b"w3";

/// The families a fuzzed peer's HELLO names in the third format: replication too.
const PEER_FAMILIES_3: u32 = PEER_FAMILIES | Family::Replication.bit();

/// The prefix of the fourth input format (drops and remote runs too, over Noise links).
const FORMAT_4: &[u8; 2] = b"w4";

/// The families a fuzzed peer's HELLO names in the fourth format: every one.
const PEER_FAMILIES_4: u32 = PEER_FAMILIES_3 | Family::Drops.bit() | Family::Remote.bit();

/// The prefix of the fifth input format (the fourth's, and `.weftignore` rules).
const FORMAT_5: &[u8; 2] = b"w5";

/// The fourth format's flag that keeps links plain (runs are then refused).
const FLAG_PLAINTEXT: u8 = 16;

/// One driver step of the second input format.
#[derive(Debug, Arbitrary)]
enum Step {
    Op(Op),
    App(AppOp),
}

/// One driver step of the third input format.
#[derive(Debug, Arbitrary)]
enum Step3 {
    Op(Op),
    App(AppOp),
    Replica(ReplicaOp),
}

/// One driver step of the fourth input format.
#[derive(Debug, Arbitrary)]
enum Step4 {
    Op(Op),
    App(AppOp),
    Replica(ReplicaOp),
    Run(RunOp),
    Drop(DropOp),
}

/// One driver step of the fifth input format.
#[derive(Debug, Arbitrary)]
enum Step5 {
    Op(Op),
    App(AppOp),
    Replica(ReplicaOp),
    Run(RunOp),
    Drop(DropOp),
    Rules(RulesOp),
}

/// One driver step (of every format).
#[derive(Debug, Arbitrary)]
enum Op {
    /// The driver accepted `ConnId::inbound(n % 16)`.
    Accept { n: u8, addr: AddrSel },
    /// An outbound dial (one of the ids seen in `Output::Connect`) opened.
    Connected { dial: u8 },
    /// An outbound dial failed.
    ConnectFailed { dial: u8 },
    /// Bytes arrived.
    Received { conn: ConnSel, data: Data },
    /// A peer with a real key sends HELLO and a HELLO_ACK signing the node's nonce.
    Handshake(HandshakeOp),
    /// The driver wrote everything handed out.
    Writable { conn: ConnSel },
    /// The connection ended.
    Closed { conn: ConnSel },
    /// Calendar time.
    WallClock { unix_ms: u64 },
    /// Application: dial.
    Connect { addr: AddrSel },
    /// Application: broadcast a payload.
    Broadcast { payload: Vec<u8> },
    /// Application: broadcast a large payload, `(chunks % 16 + 1) * 16 KiB` (up to the
    /// transmit window), cut from a fixed pattern at offset `fill`.
    BigBroadcast { chunks: u8, fill: u8 },
    /// Application: close the link to a peer.
    Disconnect { node: NodeSel },
    /// Application: shut down.
    Shutdown,
    /// Time passes; the driver calls `handle_timeout`.
    Advance { ms: u16 },
    /// The driver sleeps until `poll_timeout` and calls `handle_timeout`.
    AdvanceToTimeout,
    /// `handle_timeout` with a time earlier than one already given (must be harmless).
    LateTimeout { ms: u16 },
}

/// Picks a connection: mostly one the node has open, sometimes any id.
#[derive(Debug, Arbitrary)]
enum ConnSel {
    Open(u8),
    Raw(u8),
}

/// Picks a node id: a keyed peer, the node itself, or arbitrary.
#[derive(Debug, Arbitrary)]
enum NodeSel {
    Peer(u8),
    Me,
    Other(u8),
}

/// Picks an address: a handful of short ones, the empty one, one over `ADDR_BYTES_MAX`.
#[derive(Debug, Arbitrary)]
enum AddrSel {
    Short(u8),
    Empty,
    TooLong,
}

/// Picks a sequence number: small ones collide, large ones test the window arithmetic.
#[derive(Debug, Arbitrary)]
enum Seq {
    Small(u8),
    Any(u64),
}

/// What a `Received` carries.
#[derive(Debug, Arbitrary)]
enum Data {
    /// Any bytes.
    Raw(Vec<u8>),
    /// Well-formed frames, compressed where that helps if `compress`, delivered in two pieces
    /// cut at `split % len` (in one piece if that is 0).
    Frames {
        msgs: Vec<Msg>,
        compress: bool,
        split: u16,
    },
}

/// A message with arbitrary fields.
#[derive(Debug, Arbitrary)]
enum Msg {
    Hello {
        peer: NodeKey,
        wrong_network: bool,
        nonce: u8,
        incarnation: u8,
        listen: Option<AddrSel>,
        capabilities: u32,
    },
    HelloAck {
        signature: u8,
    },
    Ping(u64),
    Pong(u64),
    Bye(u8),
    ICanSee {
        cascade: CascadeSel,
        hops_left: u8,
        origin_addr: Option<AddrSel>,
        peers: Vec<(NodeSel, AddrSel)>,
    },
    IKnowAbout {
        cascade: CascadeSel,
        hops_left: u8,
        peers: Vec<(NodeSel, AddrSel)>,
    },
    ICantSee {
        cascade: CascadeSel,
        hops_left: u8,
        lost: NodeSel,
    },
    Broadcast {
        origin: NodeSel,
        incarnation: u8,
        seq: Seq,
        payload: Vec<u8>,
    },
    MeshDigest {
        entries: Vec<(NodeSel, u8, Vec<RangeSel>)>,
    },
    MeshWant {
        wants: Vec<(NodeSel, u8, RangeSel)>,
    },
    MeshRepair {
        origin: NodeSel,
        incarnation: u8,
        seq: Seq,
        payload: Vec<u8>,
    },
    /// A valid header (known or unknown code) around an arbitrary payload.
    Frame {
        code: u8,
        payload: Vec<u8>,
    },
}

/// Whose public key a HELLO carries.
#[derive(Debug, Arbitrary)]
enum NodeKey {
    Peer(u8),
    Me,
    Raw(u8),
}

/// A range of sequence numbers: `first ..= first + extra` (invalid if `first` is 0).
#[derive(Debug, Arbitrary)]
struct RangeSel {
    first: Seq,
    extra: u8,
}

impl RangeSel {
    fn to_range(&self) -> SeqRange {
        let first = self.first.value();
        SeqRange {
            first,
            last: first.saturating_add(u64::from(self.extra)),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct CascadeSel {
    origin: NodeSel,
    seq: Seq,
}

/// A keyed peer's handshake on a connection.
#[derive(Debug, Arbitrary)]
struct HandshakeOp {
    conn: ConnSel,
    peer: u8,
    nonce: u8,
    incarnation: u8,
    listen: Option<AddrSel>,
    lz4: bool,
    /// Flip a bit of the signature.
    bad_proof: bool,
    /// Send the HELLO_ACK only (the HELLO went in an earlier op) or the HELLO only.
    part: Part,
    split: u16,
}

#[derive(Debug, Arbitrary)]
enum Part {
    Both,
    HelloOnly,
    AckOnly,
}

/// Keys fixed for every run.
struct Keys {
    me: Identity,
    peers: Vec<Identity>,
    network: NetworkId,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        me: Identity::from_secret(&Config::from_seed(NETWORK, SEED).secret_key),
        peers: (0..PEERS)
            .map(|i| Identity::from_secret(&[i as u8 + 1; 32]))
            .collect(),
        network: NetworkId::from_name(NETWORK),
    })
}

/// The pattern big broadcasts are cut from: 256 KiB and a little, compressible but not
/// trivially.
fn big_payload() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        (0..256 * 1024 + 256)
            .map(|i: usize| (i / 64) as u8 ^ (i % 7) as u8)
            .collect()
    })
}

/// The configuration of the `node` target: `Config::from_seed`, default limits, and the
/// default Chord configuration for inputs that make the node a ring member. Links are plain
/// (but in the fourth format): the fuzzer writes weft frames itself, to reach the frame logic
/// (the Noise layer under it has a target of its own, `noise_link`).
pub fn default_config() -> Config {
    let mut config = Config::from_seed(NETWORK, SEED);
    config.chord = Some(ChordConfig::default());
    config.link_encryption = weft_engine::LinkEncryption::PlaintextSimulationOnly;
    config
}

/// The configuration of the `node_small_limits` target: the same node with bounds so small
/// that a few ops reach them (slow-peer disconnects, relay drops, repair-store eviction,
/// connection caps, discovery and sync-table bounds, Chord's store, request and connection
/// bounds).
pub fn small_limits_config() -> Config {
    let mut config = default_config();
    config.limits = Limits {
        send_queue_bytes_max: 8 * 1024,
        relay_queue_bytes_max: 2 * 1024,
        transmit_window_bytes: 1024,
        inbound_max: 3,
        outbound_max: 2,
        repair_store_max: 8,
        repair_store_bytes_max: 4 * 1024,
        heard_of_max: 4,
        cascade_seen_max: 8,
        seen_origins_max: 4,
        table_key_bytes_max: 16,
        table_value_bytes_max: 64,
        table_entries_max: 8,
        table_key_writes_max: 4,
        table_bytes_max: 2 * 1024,
        dedicated_conns_max: 2,
        ..Limits::default()
    };
    config.chord = Some(ChordConfig {
        successor_list_len: 2,
        lookup_attempts_max: 1,
        lookup_hops_max: 4,
        records_max: 8,
        values_per_key_max: 2,
        tracker_holders_max: 2,
        writer_values_max: 6,
        stored_bytes_max: 16 * 1024,
        ops_max: 4,
        failed_max: 4,
        ..ChordConfig::default()
    });
    config
}

/// What an input of the second format's flags set up: bit 0 keeps `config.chord` (and gives
/// the node a listen address, which Chord needs), else the node is no ring member; bit 1 hands
/// the node a wall clock before the first op.
fn set_up(flags: u8, mut config: Config) -> (Config, bool) {
    if flags & 1 == 0 {
        config.chord = None;
    } else if config.chord.is_some() {
        config.listen_addr.get_or_insert_with(|| LISTEN_ADDR.into());
    }
    (config, flags & 2 != 0)
}

/// Decodes `data` into ops and drives one node with them, checking after every step that
/// the node keeps its promises. Panics if it does not.
pub fn run_node(data: &[u8]) {
    run_node_with(data, default_config());
}

/// [`run_node`] under [`small_limits_config`].
pub fn run_node_small_limits(data: &[u8]) {
    run_node_with(data, small_limits_config());
}

/// [`run_node`], returning the node's counters at the end (how deep the input got).
pub fn run_node_metrics(data: &[u8]) -> NodeMetrics {
    run_node_with(data, default_config()).metrics
}

/// How far one input got: the node's counters and the bounded paths it reached.
#[derive(Debug, Clone, Default)]
pub struct NodeSummary {
    /// The node's counters at the end.
    pub metrics: NodeMetrics,
    /// `Output::Close` with `CloseReason::SlowPeer`.
    pub slow_peer_closes: u64,
    /// `Output::Close` with `CloseReason::TooManyConnections` (an accept over `inbound_max`).
    pub too_many_closes: u64,
    /// `Command::Connect` refused with `SessionRefusal::TooManyConnections` (`outbound_max`).
    pub too_many_refusals: u64,
    /// Repair-store evictions by its count or byte bound, a lower bound: the driver mirrors
    /// the broadcasts the node must hold (originated, delivered) that are younger than the
    /// repair window; whenever that mirror is over a bound the node must have evicted.
    pub store_evictions: u64,
    /// Most inbound connections open at once, not counting those the node is closing.
    pub inbound_peak: usize,
    /// Most outbound connections open (pending included) at once, not counting those the
    /// node is closing.
    pub outbound_peak: usize,
    /// `TableEvent::Changed` and `TableEvent::Refused`.
    pub table_events: u64,
    /// `Event::Chord`.
    pub chord_events: u64,
    /// `Event::Replicate`.
    pub replicate_events: u64,
    /// Storage steps the node asked of the host (`HostRequest::Storage`).
    pub storage_requests: u64,
    /// Replication frames the node sent.
    pub replica_frames_sent: u64,
    /// Drop frames (DROP_*) the node sent.
    pub drop_frames_sent: u64,
    /// `Event::Drops`.
    pub drops_events: u64,
    /// Run frames (RUN_*) the node sent.
    pub run_frames_sent: u64,
    /// `Event::Run`.
    pub run_events: u64,
    /// Process steps the node asked of the host (`HostRequest::Process`).
    pub process_requests: u64,
    /// Of those, spawns (`ProcessRequest::Spawn`): runs the node served for a peer.
    pub process_spawns: u64,
    /// Connections whose Noise handshake the fake peer completed.
    pub noise_links: u64,
    /// `.weftignore` rules the node took for a folder (`ReplicaCommand::SetIgnoreRules`).
    pub rules_set: u64,
}

/// Drives one node built from `config` (as the input's format sets it up) with the steps
/// decoded from `data`, checking after every step that the node keeps its promises (panics
/// if not); returns what the input reached.
pub fn run_node_with(data: &[u8], config: Config) -> NodeSummary {
    let format = if data.starts_with(FORMAT_5) {
        5
    } else if data.starts_with(FORMAT_4) {
        4
    } else if data.starts_with(FORMAT_3) {
        3
    } else if data.starts_with(FORMAT_2) {
        2
    } else {
        1
    };
    let (flags, data) = match format {
        1 => (0, data),
        _ => data[2..]
            .split_first()
            .map_or((0, &data[2..]), |(f, rest)| (*f, rest)),
    };
    let (mut config, wall_clock) = set_up(flags, config);
    if format >= 4 {
        config.run = RunConfig {
            allow: true,
            allow_from: remote::run_allow_list(),
        };
        if flags & FLAG_PLAINTEXT == 0 {
            config.link_encryption = weft_engine::LinkEncryption::Noise;
        }
    }
    let mut u = Unstructured::new(data);
    let mut driver = Driver::new(config);
    match format {
        3 => driver.peer_families = PEER_FAMILIES_3,
        4 | 5 => driver.peer_families = PEER_FAMILIES_4,
        _ => {}
    }
    if wall_clock {
        driver.input(Input::WallClock {
            unix_ms: WALL_CLOCK_MS,
        });
        driver.check();
    }
    if format >= 3 && flags & 4 != 0 {
        driver.add_folder(0, false);
    }
    if format >= 3 && flags & 8 != 0 {
        driver.add_folder(1, true);
    }
    for _ in 0..OPS_MAX {
        if u.is_empty() {
            break;
        }
        let step = match format {
            5 => Step5::arbitrary(&mut u),
            4 => Step4::arbitrary(&mut u).map(|s| match s {
                Step4::Op(op) => Step5::Op(op),
                Step4::App(op) => Step5::App(op),
                Step4::Replica(op) => Step5::Replica(op),
                Step4::Run(op) => Step5::Run(op),
                Step4::Drop(op) => Step5::Drop(op),
            }),
            3 => Step3::arbitrary(&mut u).map(|s| match s {
                Step3::Op(op) => Step5::Op(op),
                Step3::App(op) => Step5::App(op),
                Step3::Replica(op) => Step5::Replica(op),
            }),
            2 => Step::arbitrary(&mut u).map(|s| match s {
                Step::Op(op) => Step5::Op(op),
                Step::App(op) => Step5::App(op),
            }),
            _ => Op::arbitrary(&mut u).map(Step5::Op),
        };
        match step {
            Ok(Step5::Op(op)) => driver.step(op),
            Ok(Step5::App(op)) => driver.app_step(op),
            Ok(Step5::Replica(op)) => driver.replica_step(op),
            Ok(Step5::Run(op)) => driver.run_step(op),
            Ok(Step5::Drop(op)) => driver.drop_step(op),
            Ok(Step5::Rules(op)) => driver.rules_step(op),
            Err(_) => break,
        }
    }
    if format >= 4 {
        driver.answer_everything();
    }
    driver.summary.metrics = driver.node.metrics();
    driver.summary
}

/// The driver around the node, and what it has seen the node say.
struct Driver {
    node: Node,
    now: Instant,
    /// The latest time handed to the node.
    max_now: Instant,
    /// Every id from `Output::Connect`, in order.
    dials: Vec<ConnId>,
    /// Per connection: a decoder over what the node transmitted on it.
    sent: BTreeMap<ConnId, FrameDecoder>,
    /// Per connection: the nonce of the HELLO the node sent on it.
    hello_nonce: BTreeMap<ConnId, [u8; 32]>,
    /// Connections the node asked to close (no more bytes may go out on them).
    closing: BTreeSet<ConnId>,
    /// Broadcasts the node certainly holds for repair, unless it evicted them by a bound:
    /// when each was held, and its held (encoded) length.
    held: VecDeque<(Instant, usize)>,
    /// What the node sent that peers may echo.
    heard: Heard,
    /// Per application Chord request id: requests accepted less events that ended one.
    chord_open: BTreeMap<u64, u64>,
    /// The host's state blobs, as a driver keeps them in its state folder.
    state: StateBlobs,
    /// Answers to the node's requests, fed back once the outputs are drained.
    answers: Vec<(RequestId, HostResult)>,
    /// The HELLO `families` of fuzzed peers.
    peer_families: u32,
    /// The host's shared folders, in memory.
    disk: Disk,
    /// What the node sent about its folders that peers may echo.
    replica_heard: ReplicaHeard,
    /// The host's processes for remote runs.
    processes: Processes,
    /// What the node sent about drops that peers may echo.
    remote_heard: RemoteHeard,
    /// Whether the node's links are Noise links: then each fake peer plays its side of Noise.
    noise: bool,
    /// Per connection: the fake peer's Noise link (with Noise links only).
    links: BTreeMap<ConnId, NoiseLink>,
    /// Handshake messages fake peers wrote, delivered once the outputs are drained.
    wire_out: Vec<(ConnId, Bytes)>,
    summary: NodeSummary,
}

/// The state blobs a driver stores for the node (`HostRequest::LoadState`, `StoreState`), in
/// memory.
#[derive(Debug, Default)]
struct StateBlobs(BTreeMap<String, Bytes>);

impl StateBlobs {
    /// Carries out one request; panics on a name the engine promises never to use, and on a
    /// request this driver does not know.
    fn carry_out(&mut self, request: HostRequest) -> HostResult {
        let check = |name: &str| {
            let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
            assert!(
                (1..=64).contains(&name.len()) && name.bytes().all(ok),
                "the node asked for state blob {name:?}, not a short [a-z0-9-] name"
            );
        };
        match request {
            HostRequest::LoadState { name } => {
                check(&name);
                HostResult::Loaded(self.0.get(&name).cloned())
            }
            HostRequest::StoreState { name, bytes } => {
                check(&name);
                self.0.insert(name, bytes);
                HostResult::Stored
            }
            other => panic!("a host request this driver does not handle: {other:?}"),
        }
    }
}

impl Driver {
    fn new(config: Config) -> Driver {
        let noise = config.link_encryption == weft_engine::LinkEncryption::Noise;
        Driver {
            noise,
            links: BTreeMap::new(),
            wire_out: Vec::new(),
            processes: Processes::default(),
            remote_heard: RemoteHeard::default(),
            node: Node::new(config),
            now: Instant::ZERO,
            max_now: Instant::ZERO,
            dials: Vec::new(),
            sent: BTreeMap::new(),
            hello_nonce: BTreeMap::new(),
            closing: BTreeSet::new(),
            held: VecDeque::new(),
            heard: Heard::default(),
            chord_open: BTreeMap::new(),
            state: StateBlobs::default(),
            answers: Vec::new(),
            peer_families: PEER_FAMILIES,
            disk: Disk::default(),
            replica_heard: ReplicaHeard::default(),
            summary: NodeSummary::default(),
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Accept { n, addr } => {
                let conn = ConnId::inbound(u64::from(n % 16));
                let addr = addr.to_addr();
                if self.input(Input::Accepted { conn, addr }) {
                    // A fresh connection under a reused id.
                    self.sent.remove(&conn);
                    self.hello_nonce.remove(&conn);
                    self.closing.remove(&conn);
                    self.links.remove(&conn);
                    if self.noise {
                        // The peer that dialed writes Noise's first message.
                        let mut link = peer_link(usize::from(n), NoiseRole::Initiator);
                        self.wire_out
                            .extend(std::iter::from_fn(|| link.poll_transmit()).map(|m| (conn, m)));
                        self.links.insert(conn, link);
                    }
                }
                self.check();
            }
            Op::Connected { dial } => {
                let conn = self.dial(dial);
                self.input(Input::Connected { conn });
                self.check();
            }
            Op::ConnectFailed { dial } => {
                let conn = self.dial(dial);
                self.input(Input::ConnectFailed { conn });
                self.check();
            }
            Op::Received { conn, data } => {
                let conn = self.conn(&conn);
                let (bytes, split) = match data {
                    // Never sealed: on a Noise link, bytes that fail to open.
                    Data::Raw(bytes) => {
                        self.deliver(conn, Bytes::from(bytes));
                        self.check();
                        return;
                    }
                    Data::Frames {
                        msgs,
                        compress,
                        split,
                    } => {
                        let mut bytes = Vec::new();
                        for msg in &msgs {
                            bytes
                                .extend_from_slice(msg.frame(compress, self.peer_families).bytes());
                        }
                        (bytes, split)
                    }
                };
                self.receive(conn, bytes, split);
            }
            Op::Handshake(h) => self.handshake(h),
            Op::Writable { conn } => {
                let conn = self.conn(&conn);
                self.input(Input::Writable { conn });
                self.check();
            }
            Op::Closed { conn } => {
                let conn = self.conn(&conn);
                self.input(Input::Closed { conn });
                self.check();
            }
            Op::WallClock { unix_ms } => {
                self.input(Input::WallClock { unix_ms });
                self.check();
            }
            Op::Connect { addr } => {
                let addr = addr.to_addr();
                self.max_now = self.max_now.max(self.now);
                let result = self
                    .node
                    .handle_input(self.now, Input::Command(Command::Connect { addr }));
                if let Err(InputError::Refused(Refusal::Session(
                    SessionRefusal::TooManyConnections,
                ))) = result
                {
                    self.summary.too_many_refusals += 1;
                }
                self.check();
            }
            Op::Broadcast { payload } => {
                let payload = Bytes::from(payload);
                self.broadcast(payload);
            }
            Op::BigBroadcast { chunks, fill } => {
                let len = (usize::from(chunks) % 16 + 1) * 16 * 1024;
                let start = usize::from(fill);
                let payload = Bytes::from_static(&big_payload()[start..start + len]);
                self.broadcast(payload);
            }
            Op::Disconnect { node } => {
                let node = node.to_node_id();
                self.input(Input::Command(Command::Disconnect { node }));
                self.check();
            }
            Op::Shutdown => {
                self.input(Input::Command(Command::Shutdown));
                self.check();
            }
            Op::Advance { ms } => {
                self.now = self.now + Duration::from_millis(u64::from(ms));
                self.timeout(self.now);
            }
            Op::AdvanceToTimeout => {
                if let Some(at) = self.node.poll_timeout() {
                    self.now = self.now.max(at);
                }
                self.timeout(self.now);
            }
            Op::LateTimeout { ms } => {
                let late = self.now - Duration::from_millis(u64::from(ms));
                self.timeout(late);
            }
        }
    }

    /// The application broadcasts `payload`; if the node took it, it holds it for repair.
    fn broadcast(&mut self, payload: Bytes) {
        let before = self.node.metrics().mesh.broadcasts_originated;
        let len = payload.len();
        self.input(Input::Command(Command::Mesh(MeshCommand::Broadcast {
            payload,
        })));
        if self.node.metrics().mesh.broadcasts_originated > before {
            let held = encoded_broadcast_len(
                self.node.node_id(),
                self.node.config().incarnation,
                before + 1,
                len,
            );
            self.hold(held);
        }
        self.check();
    }

    /// Mirrors the node's repair store: the node held `len` bytes now. Drops what the node
    /// may have aged out first, so that the mirror never holds more than the node would have
    /// without evicting by a bound.
    fn hold(&mut self, len: usize) {
        let limits = &self.node.config().limits;
        let (count_max, bytes_max) = (limits.repair_store_max, limits.repair_store_bytes_max);
        let age_max = self.node.config().timers.repair_window;
        if count_max == 0 || len > bytes_max {
            return;
        }
        let now = self.max_now;
        while self
            .held
            .front()
            .is_some_and(|&(at, _)| now.saturating_since(at) >= age_max)
        {
            self.held.pop_front();
        }
        self.held.push_back((self.now, len));
        let mut bytes: usize = self.held.iter().map(|&(_, len)| len).sum();
        while self.held.len() > count_max || bytes > bytes_max {
            let (_, old) = self.held.pop_front().expect("over a bound, so not empty");
            bytes -= old;
            self.summary.store_evictions += 1;
        }
    }

    /// Hands `input` to the node at the current time. Whether it was accepted: an
    /// `InputError` is driver misuse, which random ops commit on purpose.
    fn input(&mut self, input: Input) -> bool {
        self.max_now = self.max_now.max(self.now);
        self.node.handle_input(self.now, input).is_ok()
    }

    fn timeout(&mut self, at: Instant) {
        self.max_now = self.max_now.max(at);
        self.node.handle_timeout(at);
        self.check();
    }

    /// Delivers `bytes` on `conn`, in two pieces if `split % len` is inside them (each
    /// sealed by the peer's Noise link, if the connection has one).
    fn receive(&mut self, conn: ConnId, bytes: Vec<u8>, split: u16) {
        let bytes = Bytes::from(bytes);
        let cut = match bytes.len() {
            0 => 0,
            len => usize::from(split) % len,
        };
        if cut > 0 {
            let piece = self.seal(conn, bytes.slice(..cut));
            self.deliver(conn, piece);
            self.check();
        }
        let piece = self.seal(conn, bytes.slice(cut..));
        self.deliver(conn, piece);
        self.check();
    }

    /// `plain` as the peer on `conn` writes it: sealed if it has a Noise link (nothing
    /// before that link's handshake is done), else as it is.
    fn seal(&mut self, conn: ConnId, plain: Bytes) -> Bytes {
        match self.links.get_mut(&conn) {
            Some(link) => link.seal(&plain),
            None => plain,
        }
    }

    /// Hands the node bytes that arrived on `conn`, as they are.
    fn deliver(&mut self, conn: ConnId, bytes: Bytes) {
        self.input(Input::Received { conn, bytes });
    }

    /// The end of a fourth-format input: every held host request is answered (by the
    /// default scripts), and none is held any more, so every later one is answered at once:
    /// the node must take every answer.
    fn answer_everything(&mut self) {
        let mut answers = self.processes.release_all();
        answers.extend(self.disk.release_all());
        self.answers.extend(answers);
        self.check();
    }

    fn handshake(&mut self, h: HandshakeOp) {
        let keys = keys();
        let conn = self.conn(&h.conn);
        // Over Noise the HELLO must name the key the link proved.
        let peer = match self.links.get(&conn).and_then(NoiseLink::peer_identity) {
            Some(key) => keys
                .peers
                .iter()
                .find(|p| p.public_key() == key)
                .unwrap_or(&keys.peers[usize::from(h.peer) % PEERS]),
            None => &keys.peers[usize::from(h.peer) % PEERS],
        };
        let hello = Hello {
            network: keys.network,
            public_key: peer.public_key(),
            nonce: [h.nonce; 32],
            incarnation: u64::from(h.incarnation % 4) + 1,
            listen_addr: h.listen.map(|a| a.to_addr()),
            capabilities: if h.lz4 { CAP_LZ4 } else { 0 },
            families: self.peer_families,
            dedicated: None,
        };
        // Without a HELLO from the node on this connection the proof cannot verify; send one
        // anyway over a zero nonce.
        let node_nonce = self.hello_nonce.get(&conn).copied().unwrap_or([0; 32]);
        let signer_role = if conn.is_inbound() {
            Role::Dialer
        } else {
            Role::Acceptor
        };
        let mut signature = peer.sign_hello_ack(&Transcript {
            network: keys.network,
            signer_role,
            verifier_key: keys.me.public_key(),
            verifier_nonce: node_nonce,
            signer_nonce: hello.nonce,
            signer_incarnation: hello.incarnation,
        });
        if h.bad_proof {
            signature.0[0] ^= 1;
        }
        let mut bytes = Vec::new();
        if !matches!(h.part, Part::AckOnly) {
            bytes.extend_from_slice(Message::Hello(hello).to_frame(false).bytes());
        }
        if !matches!(h.part, Part::HelloOnly) {
            let ack = Message::HelloAck(HelloAck { signature });
            bytes.extend_from_slice(ack.to_frame(false).bytes());
        }
        self.receive(conn, bytes, h.split);
    }

    /// An id from `Output::Connect`, the latest first; a never-allocated one if none.
    fn dial(&self, i: u8) -> ConnId {
        match self.dials.len() {
            0 => ConnId(2),
            len => self.dials[len - 1 - usize::from(i) % len],
        }
    }

    fn conn(&self, sel: &ConnSel) -> ConnId {
        match *sel {
            ConnSel::Open(i) => {
                let open: Vec<ConnId> = self.node.conn_ids().collect();
                match open.len() {
                    0 => ConnId::inbound(0),
                    len => open[usize::from(i) % len],
                }
            }
            ConnSel::Raw(i) => ConnId(u64::from(i % 40)),
        }
    }

    /// Drains the node's outputs and checks its promises.
    fn check(&mut self) {
        loop {
            while let Some(output) = self.node.poll_output() {
                self.observe(output);
            }
            if self.answers.is_empty() && self.wire_out.is_empty() {
                break;
            }
            for (conn, bytes) in std::mem::take(&mut self.wire_out) {
                self.deliver(conn, bytes);
            }
            for (id, result) in std::mem::take(&mut self.answers) {
                let answered = self.input(Input::Completed { id, result });
                assert!(
                    answered,
                    "the node refused the answer to its request {id:?}"
                );
            }
        }
        if let Err(e) = self.node.check_invariants() {
            panic!("invariant broken: {e}");
        }
        self.check_replicas();
        if let Some(at) = self.node.poll_timeout() {
            assert!(
                at >= self.max_now,
                "poll_timeout {at:?} is before the latest now {:?}",
                self.max_now
            );
        }
        let max = self.node.config().limits.send_queue_bytes_max;
        let (mut inbound, mut outbound) = (0, 0);
        for conn in self.node.conn_ids() {
            if self.closing.contains(&conn) {
                // Closing connections do not count against the caps.
            } else if conn.is_inbound() {
                inbound += 1;
            } else {
                outbound += 1;
            }
            let stats = self
                .node
                .conn_stats(conn)
                .expect("an open connection has stats");
            assert!(
                stats.queued_bytes <= max,
                "{conn:?} queues {} bytes, over {max}",
                stats.queued_bytes
            );
        }
        self.summary.inbound_peak = self.summary.inbound_peak.max(inbound);
        self.summary.outbound_peak = self.summary.outbound_peak.max(outbound);
        if let (Some(chord), Some(config)) = (self.node.chord(), &self.node.config().chord) {
            assert!(
                chord.records_len() <= config.records_max,
                "Chord holds {} records, over {}",
                chord.records_len(),
                config.records_max
            );
            assert!(
                chord.stored_bytes() <= config.stored_bytes_max,
                "Chord holds {} bytes, over {}",
                chord.stored_bytes(),
                config.stored_bytes_max
            );
        }
    }

    fn observe(&mut self, output: Output) {
        match output {
            Output::Connect { conn, .. } => {
                assert!(!conn.is_inbound(), "outbound id {conn:?} is odd");
                if let Some(last) = self.dials.last() {
                    assert!(conn > *last, "outbound id {conn:?} reused");
                }
                self.dials.push(conn);
            }
            Output::Transmit { conn, bytes } => {
                assert!(
                    !self.closing.contains(&conn),
                    "bytes for {conn:?} after its Close"
                );
                let bytes = match self.open(conn, bytes) {
                    Some(plain) => plain,
                    None => return,
                };
                let decoder = self.sent.entry(conn).or_default();
                decoder.push(bytes);
                loop {
                    let frame = match decoder.next_frame() {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(e) => panic!("the node sent a malformed stream on {conn:?}: {e}"),
                    };
                    let payload = frame
                        .payload()
                        .unwrap_or_else(|e| panic!("the node sent a bad payload on {conn:?}: {e}"));
                    let msg = Message::decode(frame.code(), &payload).unwrap_or_else(|e| {
                        panic!("the node sent an undecodable message on {conn:?}: {e}")
                    });
                    if let Message::Hello(hello) = &msg {
                        assert_eq!(hello.public_key, keys().me.public_key());
                        self.hello_nonce.insert(conn, hello.nonce);
                    }
                    self.heard.observe(&msg);
                    match msg.code().family() {
                        Some(Family::Replication) => {
                            self.summary.replica_frames_sent += 1;
                            self.replica_heard.observe(&msg);
                        }
                        Some(Family::Drops) => {
                            self.summary.drop_frames_sent += 1;
                            self.remote_heard.observe(&msg);
                        }
                        Some(Family::Remote) => self.summary.run_frames_sent += 1,
                        _ => {}
                    }
                }
            }
            Output::Close { conn, reason } => {
                match reason {
                    CloseReason::SlowPeer => self.summary.slow_peer_closes += 1,
                    CloseReason::TooManyConnections => self.summary.too_many_closes += 1,
                    _ => {}
                }
                self.closing.insert(conn);
            }
            Output::Event(Event::Mesh(MeshEvent::Broadcast {
                origin,
                incarnation,
                seq,
                payload,
            })) => {
                self.hold(encoded_broadcast_len(
                    origin,
                    incarnation,
                    seq,
                    payload.len(),
                ));
            }
            Output::Event(Event::Table(
                TableEvent::Changed { .. } | TableEvent::Refused { .. },
            )) => {
                self.summary.table_events += 1;
            }
            Output::Event(Event::Chord(e)) => {
                self.summary.chord_events += 1;
                // Every event ends a request the application made, once.
                let open = self.chord_open.get_mut(&e.request);
                assert!(
                    open.as_ref().is_some_and(|n| **n > 0),
                    "a Chord event for request {} that is not in progress: {e:?}",
                    e.request
                );
                if let Some(n) = open {
                    *n -= 1;
                }
            }
            Output::Event(Event::Replicate(e)) => {
                self.summary.replicate_events += 1;
                self.replica_heard.observe_event(&e);
            }
            Output::Request {
                id,
                request: HostRequest::Storage { folder, request },
            } => {
                self.summary.storage_requests += 1;
                if let Some(result) = self.disk.request(id, folder, request) {
                    self.answers.push((id, result));
                }
            }
            Output::Request {
                id,
                request: HostRequest::Process { process, request },
            } => {
                self.summary.process_requests += 1;
                if matches!(request, weft_engine::run::ProcessRequest::Spawn { .. }) {
                    self.summary.process_spawns += 1;
                }
                if let Some(result) = self.processes.request(id, process, request, self.noise) {
                    self.answers.push((id, result));
                }
            }
            Output::Request { id, request } => {
                self.answers.push((id, self.state.carry_out(request)))
            }
            Output::Event(Event::Drops(e)) => self.observe_drops(&e),
            Output::Event(Event::Run(e)) => self.observe_run(&e),
            Output::Event(_) => {}
            // A driver must carry out every output or stop: here, the run fails.
            other => panic!("an output this driver does not handle: {other:?}"),
        }
    }
}

/// A fake peer's Noise link: peer `n % PEERS`'s keys, in `role`.
fn peer_link(n: usize, role: NoiseRole) -> NoiseLink {
    let secret = [(n % PEERS) as u8 + 1; 32];
    let keys = NoiseKeys::new(&secret, NetworkKey::OPEN, Rekey::default());
    NoiseLink::new(&keys, role, secret)
}

impl Driver {
    /// What the node transmitted on `conn` as its peer reads it: opened by the peer's Noise
    /// link (which may answer with handshake messages), if links are Noise links; `None` if
    /// nothing is readable yet. Panics if the peer's link cannot open the node's bytes.
    fn open(&mut self, conn: ConnId, bytes: Bytes) -> Option<Bytes> {
        if !self.noise {
            return Some(bytes);
        }
        // The node dialed: the peer it reached answers Noise's first message.
        let link = self
            .links
            .entry(conn)
            .or_insert_with(|| peer_link((conn.0 / 2) as usize, NoiseRole::Responder));
        let established = link.is_established();
        link.push(&bytes);
        if let Some(e) = link.error() {
            panic!("the peer on {conn:?} cannot open what the node sent: {e:?}");
        }
        if !established && link.is_established() {
            self.summary.noise_links += 1;
        }
        while let Some(m) = link.poll_transmit() {
            self.wire_out.push((conn, m));
        }
        let mut plain = Vec::new();
        while let Some(p) = link.poll_plaintext() {
            plain.extend_from_slice(&p);
        }
        (!plain.is_empty()).then(|| Bytes::from(plain))
    }
}

/// The length of a BROADCAST payload (what the repair store holds) carrying `len` bytes.
fn encoded_broadcast_len(origin: NodeId, incarnation: u64, seq: u64, len: usize) -> usize {
    let payload = &big_payload()[..len.min(big_payload().len())];
    let zeros;
    let payload = if payload.len() == len {
        payload
    } else {
        zeros = vec![0; len];
        &zeros
    };
    Message::Broadcast(Broadcast {
        origin,
        incarnation,
        seq,
        payload,
        proof: None,
    })
    .encode_payload()
    .len()
}

impl AddrSel {
    fn to_addr(&self) -> String {
        match self {
            AddrSel::Short(n) => format!("10.0.0.{}:7000", n % 8),
            AddrSel::Empty => String::new(),
            AddrSel::TooLong => "a".repeat(ADDR_BYTES_MAX + 1),
        }
    }
}

impl NodeSel {
    /// The node's key pair, if the run knows it (not for `Other`).
    fn identity(&self) -> Option<&'static Identity> {
        let keys = keys();
        match self {
            NodeSel::Peer(i) => Some(&keys.peers[usize::from(*i) % PEERS]),
            NodeSel::Me => Some(&keys.me),
            NodeSel::Other(_) => None,
        }
    }

    /// `write` signed by this node as its writer, if the run knows its key (else unsigned:
    /// its node is not its key's hash, and it is malformed).
    fn sign_write(&self, mut write: TableWrite) -> TableWrite {
        if let Some(identity) = self.identity() {
            write.public_key = identity.public_key();
            write.signature = identity.sign(&write.signed_bytes(&keys().network));
        }
        write
    }

    fn to_node_id(&self) -> NodeId {
        let keys = keys();
        match self {
            NodeSel::Peer(i) => keys.peers[usize::from(*i) % PEERS].node_id(),
            NodeSel::Me => keys.me.node_id(),
            NodeSel::Other(b) => NodeId([*b; 32]),
        }
    }

    /// `b` with its origin's proof (SPEC.md §6.9) where the fuzzer holds the origin's key
    /// (a fake peer, or the node itself); an `Other` origin's broadcast goes without one.
    fn sign<'a>(&self, mut b: Broadcast<'a>) -> Broadcast<'a> {
        let keys = keys();
        let signer = match self {
            NodeSel::Peer(i) => &keys.peers[usize::from(*i) % PEERS],
            NodeSel::Me => &keys.me,
            NodeSel::Other(_) => return b,
        };
        let mut signed = Vec::new();
        b.signed_message(&keys.network, &mut signed);
        b.proof = Some(OriginProof {
            public_key: signer.public_key(),
            signature: signer.sign(&signed),
        });
        b
    }
}

impl Seq {
    fn value(&self) -> u64 {
        match self {
            Seq::Small(n) => u64::from(*n),
            Seq::Any(n) => *n,
        }
    }
}

impl CascadeSel {
    fn to_cascade(&self) -> CascadeId {
        CascadeId {
            origin: self.origin.to_node_id(),
            seq: self.seq.value(),
        }
    }
}

fn peer_list(peers: &[(NodeSel, AddrSel)]) -> Vec<PeerInfo> {
    peers
        .iter()
        .map(|(node, addr)| PeerInfo {
            node: node.to_node_id(),
            addr: addr.to_addr(),
        })
        .collect()
}

const BYE_REASONS: [ByeReason; 10] = [
    ByeReason::Shutdown,
    ByeReason::DuplicateLink,
    ByeReason::WrongNetwork,
    ByeReason::TooManyConnections,
    ByeReason::SlowPeer,
    ByeReason::ProtocolViolation,
    ByeReason::BadProof,
    ByeReason::Timeout,
    ByeReason::Requested,
    ByeReason::StaleIncarnation,
];

impl Msg {
    /// The frame, a HELLO naming `families`.
    fn frame(&self, compress: bool, families: u32) -> Frame {
        let keys = keys();
        let msg = match self {
            Msg::Hello {
                peer,
                wrong_network,
                nonce,
                incarnation,
                listen,
                capabilities,
            } => {
                let public_key = match peer {
                    NodeKey::Peer(i) => keys.peers[usize::from(*i) % PEERS].public_key(),
                    NodeKey::Me => keys.me.public_key(),
                    NodeKey::Raw(b) => weft_engine::protocol::PublicKey([*b; 32]),
                };
                let network = if *wrong_network {
                    NetworkId::from_name("not fuzz")
                } else {
                    keys.network
                };
                // Bit 1 of the capabilities was CAP_CHORD_ONLY when the corpus was grown: a
                // Chord-only connection is now one dedicated to the Chord family.
                let chord_only = capabilities & OLD_CAP_CHORD_ONLY != 0;
                Message::Hello(Hello {
                    network,
                    public_key,
                    nonce: [*nonce; 32],
                    incarnation: u64::from(*incarnation),
                    listen_addr: listen.as_ref().map(AddrSel::to_addr),
                    capabilities: capabilities & !OLD_CAP_CHORD_ONLY,
                    families,
                    dedicated: chord_only.then_some(Family::Chord.high_byte()),
                })
            }
            Msg::HelloAck { signature } => Message::HelloAck(HelloAck {
                signature: Signature([*signature; 64]),
            }),
            Msg::Ping(nonce) => Message::Ping(Ping { nonce: *nonce }),
            Msg::Pong(nonce) => Message::Pong(Pong { nonce: *nonce }),
            Msg::Bye(r) => Message::Bye(BYE_REASONS[usize::from(*r) % BYE_REASONS.len()]),
            Msg::ICanSee {
                cascade,
                hops_left,
                origin_addr,
                peers,
            } => Message::ICanSee(ICanSee {
                cascade: cascade.to_cascade(),
                hops_left: *hops_left,
                origin_addr: origin_addr.as_ref().map(AddrSel::to_addr),
                peers: peer_list(peers),
            }),
            Msg::IKnowAbout {
                cascade,
                hops_left,
                peers,
            } => Message::IKnowAbout(IKnowAbout {
                cascade: cascade.to_cascade(),
                hops_left: *hops_left,
                peers: peer_list(peers),
            }),
            Msg::ICantSee {
                cascade,
                hops_left,
                lost,
            } => Message::ICantSee(ICantSee {
                cascade: cascade.to_cascade(),
                hops_left: *hops_left,
                lost: lost.to_node_id(),
            }),
            Msg::Broadcast {
                origin,
                incarnation,
                seq,
                payload,
            } => {
                let b = Broadcast {
                    origin: origin.to_node_id(),
                    incarnation: u64::from(*incarnation),
                    seq: seq.value(),
                    payload,
                    proof: None,
                };
                return Message::Broadcast(origin.sign(b)).to_frame(compress);
            }
            Msg::MeshDigest { entries } => Message::MeshDigest(MeshDigest {
                entries: entries
                    .iter()
                    .map(|(origin, incarnation, ranges)| DigestEntry {
                        origin: origin.to_node_id(),
                        incarnation: u64::from(*incarnation),
                        ranges: ranges.iter().map(RangeSel::to_range).collect(),
                    })
                    .collect(),
            }),
            Msg::MeshWant { wants } => Message::MeshWant(MeshWant {
                wants: wants
                    .iter()
                    .map(|(origin, incarnation, range)| WantRange {
                        origin: origin.to_node_id(),
                        incarnation: u64::from(*incarnation),
                        range: range.to_range(),
                    })
                    .collect(),
            }),
            Msg::MeshRepair {
                origin,
                incarnation,
                seq,
                payload,
            } => {
                let b = Broadcast {
                    origin: origin.to_node_id(),
                    incarnation: u64::from(*incarnation),
                    seq: seq.value(),
                    payload,
                    proof: None,
                };
                return Message::MeshRepair(origin.sign(b)).to_frame(compress);
            }
            Msg::Frame { code, payload } => {
                let code = match Code::ALL.get(usize::from(*code)) {
                    Some(code) => *code,
                    None => Code(u16::from(*code)),
                };
                return Frame::build(code, payload, compress);
            }
        };
        msg.to_frame(compress)
    }
}
