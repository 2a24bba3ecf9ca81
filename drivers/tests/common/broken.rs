//! Deliberately broken peers for the conformance kit: a real engine `Node` behind a wrapper
//! that runs the Noise layer and the HELLO key check itself (the node speaks plaintext
//! frames) and breaks exactly one rule, by changing, dropping or adding frames on their way
//! in or out. [`Broken::None`] breaks nothing: the wrapper alone must pass the kit.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;
use weft_engine::drops::DropsCommand;
use weft_engine::noise::{NoiseKeys, NoiseLink, NoiseRole};
use weft_engine::protocol::{
    Block, BlockHash, ByeReason, ChordMessage, Code, Counter, DropFile, DropMessage, Family,
    FileEntry, FileKind, FolderId, Frame, FrameDecoder, Hello, HereIs, ICanSee, IHave, IWant, List,
    Message, NetworkId, NotFound, Pong, ReplicaMessage, Version, CAP_LZ4,
};
use weft_engine::{
    Command, Config, ConnId, HostResult, Input, Instant, LinkEncryption, Node, Output,
};

/// The one rule a broken peer breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// None: the wrapper as a correct peer.
    None,
    /// None either: a correct peer that offers no lz4 and closes on a compressed frame (§3
    /// lets it: a sender may compress only to a peer that offered lz4).
    NoLz4,
    /// §7.3: its HELLO_ACK's signature has a bit flipped.
    BadHelloAck,
    /// §7.2/§3: its HELLO goes out with the compressed flag.
    CompressedHello,
    /// §7.4 rule 3: a HELLO of another network is taken as one of its own.
    AcceptsWrongNetwork,
    /// §7.5: a HELLO_ACK that does not verify gets BYE(ProtocolViolation), not BadProof.
    BadProofWrongReason,
    /// §7.4 rule 2: a second HELLO is ignored.
    IgnoresSecondHello,
    /// §7.4 rule 1: a stale incarnation gets BYE(ProtocolViolation), not StaleIncarnation.
    StaleWrongReason,
    /// §7.4 rule 5: a HELLO of the other broadcast-signing mode is taken as one of its own.
    AcceptsOtherSigningMode,
    /// §7.5 rule 1: a HELLO_ACK before any HELLO is ignored.
    IgnoresEarlyAck,
    /// §21.2: a HELLO naming another key than its Noise handshake bound is taken.
    NoIdentityCheck,
    /// §21.2: its HELLO names another key than its Noise handshake bound.
    HelloKeyMismatch,
    /// §6.13: frames other than the handshake's before establishment are ignored.
    IgnoresEarlyFrames,
    /// §8.9: Chord frames are ignored by a node that does not run Chord.
    IgnoresUnknownFamily,
    /// §9: its PONG carries another nonce than the PING's.
    PongWrongNonce,
    /// §2: a frame with a bad header closes the connection without BYE.
    NoByeOnBadFrame,
    /// §3: broadcasts are relayed compressed to a peer that did not offer lz4.
    CompressesToAll,
    /// §11.4: a broadcast is never relayed to a link without lz4.
    NoRelayToPlain,
    /// §10: relayed cascades keep their hops.
    CascadeHopsKept,
    /// §11: every broadcast is sent twice.
    DuplicateRelay,
    /// §11: broadcasts are never relayed.
    NoRelay,
    /// §11.7: MESH_WANT is never answered.
    NoRepair,
    /// §19: table writes are never relayed.
    NoTableRelay,
    /// §20: (a Chord member) its answers carry another request id than the request's.
    ChordWrongRequest,
    /// §22: an IWANT of a block it does not hold gets no NOTFOUND.
    NoNotFound,
    /// §23: a stranger's run is answered RUN_STARTED instead of RUN_REFUSED.
    RunsForStrangers,
    /// §24.5: DROP_GET_VERSION and DROP_GET_FILES of what it does not hold get no
    /// DROP_NOTFOUND.
    DropNoNotFound,
    /// §24.5: a DROP_* frame whose payload does not decode is ignored, the link kept.
    DropTakesMalformed,
    /// §24.2: a pushed DROP_VERSION that breaks a rule (it does not verify, or its signer is
    /// not an owner) is ignored, the link kept, instead of refused.
    DropForgedKept,
    /// §24.2: the DROP_VERSIONs it serves carry a signature with a bit flipped.
    DropBadSignature,
    /// §24.3: the DROP_FILES it serves do not hash to their version's root (a file added to
    /// an empty batch, a mode bit flipped in another).
    DropFilesAltered,
}

/// A broken peer listening on 127.0.0.1; stopped when dropped.
pub struct BrokenPeer {
    /// Where it listens.
    pub addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BrokenPeer {
    /// Starts a broken peer of network `net`.
    pub fn start(net: &str, broken: Broken, seed: u64) -> BrokenPeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let net = net.to_owned();
        let thread = std::thread::spawn(move || Host::new(&net, broken, seed, listener).run(&flag));
        BrokenPeer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BrokenPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One accepted connection.
struct Wire {
    socket: TcpStream,
    noise: NoiseLink,
    /// Frames from the kit.
    inbound: FrameDecoder,
    /// Frames from the node.
    outbound: FrameDecoder,
    /// The node's plaintext held until the Noise handshake is done.
    held: Vec<u8>,
    /// Sealed bytes not yet written.
    out: Vec<u8>,
    owed: bool,
    closing: bool,
    /// The kit's HELLO, once in.
    hello: Option<Hello>,
    /// Whether the kit's HELLO_ACK went to the node.
    acked: bool,
    /// The inbound stream failed: nothing more goes to the node.
    dead_in: bool,
    /// Blocks with a wrong hash this peer served the fake folder.
    mismatches: usize,
}

/// A folder the wrapper serves itself (its node has no storage): one file of one block. It
/// answers LIST with that file, IWANT with the block or NOTFOUND, asks for every block a
/// peer announces, and closes a peer at its third block with a wrong hash (SPEC.md §22).
struct FakeFolder {
    id: FolderId,
    data: Vec<u8>,
    hash: BlockHash,
    index_id: u64,
}

impl FakeFolder {
    fn new(net: &str) -> FakeFolder {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 251) as u8).collect();
        FakeFolder {
            id: FolderId::from_name(net),
            hash: *blake3::hash(&data).as_bytes(),
            data,
            index_id: 0x5eed,
        }
    }

    fn entry(&self) -> FileEntry {
        FileEntry {
            path: "fake.bin".into(),
            kind: FileKind::File,
            target: String::new(),
            mode: 6,
            size: self.data.len() as u64,
            mtime_ms: 1_700_000_000_000,
            modified_by: 7,
            version: Version {
                counters: vec![Counter { node: 7, value: 1 }],
            },
            sequence: 1,
            blocks: vec![Block {
                offset: 0,
                len: self.data.len() as u32,
                hash: self.hash,
            }],
        }
    }
}

struct Host {
    folder: FakeFolder,
    node: Node,
    broken: Broken,
    network: NetworkId,
    keys: NoiseKeys,
    listener: TcpListener,
    wires: BTreeMap<ConnId, Wire>,
    /// Frames the wrapper itself sends, after the node's outputs of the current input.
    pending_out: Vec<(ConnId, Vec<u8>)>,
    /// Connections to close once the frames above are out.
    closing_after: Vec<ConnId>,
    accepted: u64,
    origin: StdInstant,
    inputs: Vec<Input>,
    /// Whether the node holds its drop with a version yet (see [`Host::give_drop`]).
    drop_published: bool,
}

impl Host {
    fn new(net: &str, broken: Broken, seed: u64, listener: TcpListener) -> Host {
        let mut config = Config::from_seed(net, seed);
        let keys = NoiseKeys::new(
            &config.secret_key,
            config.network_key,
            config.limits.noise_rekey,
        );
        config.link_encryption = LinkEncryption::PlaintextSimulationOnly;
        if broken == Broken::ChordWrongRequest {
            config.chord = Some(weft_engine::chord::ChordConfig::default());
            config.listen_addr = listener.local_addr().ok().map(|a| a.to_string());
        }
        config.limits.inbound_per_address_max = 64;
        if broken == Broken::NoLz4 {
            config.compression = false;
        }
        Host {
            folder: FakeFolder::new(net),
            node: Node::new(config),
            broken,
            network: NetworkId::from_name(net),
            keys,
            listener,
            wires: BTreeMap::new(),
            pending_out: Vec::new(),
            closing_after: Vec::new(),
            accepted: 0,
            origin: StdInstant::now(),
            inputs: Vec::new(),
            drop_published: false,
        }
    }

    fn now(&self) -> Instant {
        Instant(self.origin.elapsed().as_nanos() as u64 + 1)
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut next_clock = StdInstant::now();
        while !stop.load(Ordering::Relaxed) {
            if StdInstant::now() >= next_clock {
                next_clock += Duration::from_millis(500);
                let unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                self.inputs.push(Input::WallClock { unix_ms });
            }
            while let Ok((socket, addr)) = self.listener.accept() {
                let _ = socket.set_nonblocking(true);
                let _ = socket.set_nodelay(true);
                self.accepted += 1;
                let conn = ConnId::inbound(self.accepted);
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&self.accepted.to_le_bytes());
                self.wires.insert(
                    conn,
                    Wire {
                        socket,
                        noise: NoiseLink::new(&self.keys, NoiseRole::Responder, seed),
                        inbound: FrameDecoder::new(),
                        outbound: FrameDecoder::new(),
                        held: Vec::new(),
                        out: Vec::new(),
                        owed: false,
                        closing: false,
                        hello: None,
                        acked: false,
                        dead_in: false,
                        mismatches: 0,
                    },
                );
                self.inputs.push(Input::Accepted {
                    conn,
                    addr: addr.to_string(),
                });
            }
            let conns: Vec<ConnId> = self.wires.keys().copied().collect();
            for conn in conns {
                self.read(conn, &mut buf);
            }
            if self.node.poll_timeout().is_some_and(|at| at <= self.now()) {
                let now = self.now();
                self.node.handle_timeout(now);
                self.drain();
            }
            while !self.inputs.is_empty() {
                let input = self.inputs.remove(0);
                if let Input::Closed { conn } = &input {
                    self.wires.remove(conn);
                }
                let now = self.now();
                let _ = self.node.handle_input(now, input);
                self.drain();
            }
            self.give_drop();
            for (conn, bytes) in std::mem::take(&mut self.pending_out) {
                self.inject(conn, &bytes);
            }
            for conn in std::mem::take(&mut self.closing_after) {
                if let Some(w) = self.wires.get_mut(&conn) {
                    w.closing = true;
                    w.dead_in = true;
                }
            }
            self.write();
            if self.inputs.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Gives the node a drop of its own with one version, for the kit's drops checks (SPEC.md
    /// §24): created once its stored drops have loaded (the load fails at once: it has no
    /// state folder), then published; the version lists no file (its folder has no storage).
    fn give_drop(&mut self) {
        if self.drop_published {
            return;
        }
        let now = self.now();
        let command = match self.node.drop_ids().next().copied() {
            None => DropsCommand::Create,
            Some(drop) => DropsCommand::Publish {
                drop,
                secondary: None,
            },
        };
        let publish = matches!(command, DropsCommand::Publish { .. });
        let done = self
            .node
            .handle_input(now, Input::Command(Command::Drops(command)))
            .is_ok();
        self.drop_published = publish && done;
        self.drain();
    }

    /// Reads a socket: Noise, then frames through the inbound filter to the node.
    fn read(&mut self, conn: ConnId, buf: &mut [u8]) {
        let Some(w) = self.wires.get_mut(&conn) else {
            return;
        };
        if w.closing {
            return;
        }
        let n = match w.socket.read(buf) {
            Ok(0) => return self.inputs.push(Input::Closed { conn }),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => return self.inputs.push(Input::Closed { conn }),
        };
        w.noise.push(&buf[..n]);
        while let Some(m) = w.noise.poll_transmit() {
            w.out.extend_from_slice(&m);
        }
        if w.noise.error().is_some() {
            // A Noise failure: close, sending nothing (§21.6).
            return self.kill(conn);
        }
        if w.noise.is_established() && !w.held.is_empty() {
            let held = std::mem::take(&mut w.held);
            let sealed = w.noise.seal(&held);
            w.out.extend_from_slice(&sealed);
        }
        while let Some(plain) = w.noise.poll_plaintext() {
            w.inbound.push(plain);
        }
        loop {
            let Some(w) = self.wires.get_mut(&conn) else {
                return;
            };
            if w.dead_in {
                return;
            }
            match w.inbound.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(bytes) = self.filter_in(conn, frame) {
                        self.inputs.push(Input::Received {
                            conn,
                            bytes: Bytes::from(bytes),
                        });
                    }
                }
                // A frame over the handshake bound is refused before its payload (§8.4).
                Ok(None)
                    if w.acked
                        || w.inbound.next_frame_len().is_none_or(|len| {
                            len <= weft_engine::protocol::HANDSHAKE_FRAME_BYTES_MAX as u64
                        }) =>
                {
                    return
                }
                Ok(None) | Err(_) => {
                    w.dead_in = true;
                    if self.broken == Broken::NoByeOnBadFrame {
                        return self.kill(conn);
                    }
                    // Hand the node a frame with reserved flags: it refuses it as it would
                    // have refused the real one (BYE(ProtocolViolation)).
                    let bad = Bytes::from_static(&[0, 0, 0, 4, 1, 0x02, 0, 3]);
                    return self.inputs.push(Input::Received { conn, bytes: bad });
                }
            }
        }
    }

    /// Sends `bytes` to `conn`'s peer as the wrapper's own frames.
    fn inject(&mut self, conn: ConnId, bytes: &[u8]) {
        if let Some(w) = self.wires.get_mut(&conn) {
            if w.noise.is_established() && !w.closing {
                let sealed = w.noise.seal(bytes);
                w.out.extend_from_slice(&sealed);
            }
        }
    }

    /// Handles a replication frame about the fake folder; false if it is not one (the node
    /// gets it).
    fn fake_folder(&mut self, conn: ConnId, frame: &Frame) -> bool {
        let Ok(payload) = frame.payload() else {
            return false;
        };
        let Ok(Message::Replica(m)) = Message::decode(frame.code(), &payload) else {
            return false;
        };
        if m.folder() != self.folder.id {
            return false;
        }
        let f = &self.folder;
        let mut replies = Vec::new();
        match m {
            ReplicaMessage::List(_) => replies.push(ReplicaMessage::IHave(IHave {
                folder: f.id,
                index_id: f.index_id,
                entries: vec![f.entry()],
            })),
            ReplicaMessage::IWant(w) => {
                let (held, unknown): (Vec<BlockHash>, Vec<BlockHash>) =
                    w.hashes.iter().partition(|h| **h == f.hash);
                for _ in held {
                    let bytes = frame_bytes(&Message::Replica(ReplicaMessage::HereIs(HereIs {
                        folder: f.id,
                        hash: f.hash,
                        offset: 0,
                        data: &f.data,
                    })));
                    self.pending_out.push((conn, bytes));
                }
                if !unknown.is_empty() && self.broken != Broken::NoNotFound {
                    replies.push(ReplicaMessage::NotFound(NotFound {
                        folder: f.id,
                        hashes: unknown,
                    }));
                }
            }
            ReplicaMessage::IHave(h) => {
                let hashes: Vec<BlockHash> = h
                    .entries
                    .iter()
                    .flat_map(|e| e.blocks.iter().map(|b| b.hash))
                    .collect();
                if !hashes.is_empty() {
                    replies.push(ReplicaMessage::IWant(IWant {
                        folder: f.id,
                        hashes,
                    }));
                }
            }
            ReplicaMessage::HereIs(h) if *blake3::hash(h.data).as_bytes() != h.hash => {
                if let Some(w) = self.wires.get_mut(&conn) {
                    w.mismatches += 1;
                    if w.mismatches >= 3 {
                        let bye = frame_bytes(&Message::Bye(ByeReason::ProtocolViolation));
                        self.pending_out.push((conn, bye));
                        self.closing_after.push(conn);
                    }
                }
            }
            _ => {}
        }
        for r in replies {
            let bytes = frame_bytes(&Message::Replica(r));
            self.pending_out.push((conn, bytes));
        }
        true
    }

    /// Closes `conn` at once, without a byte more.
    fn kill(&mut self, conn: ConnId) {
        if let Some(w) = self.wires.get_mut(&conn) {
            let _ = w.socket.shutdown(Shutdown::Both);
            w.closing = true;
            w.out.clear();
        }
        self.inputs.push(Input::Closed { conn });
    }

    /// A frame from the kit on its way to the node: its bytes, or `None` to drop it.
    fn filter_in(&mut self, conn: ConnId, frame: Frame) -> Option<Vec<u8>> {
        let broken = self.broken;
        let network = self.network;
        let w = self.wires.get_mut(&conn)?;
        let code = frame.code();
        let established = w.acked;
        if broken == Broken::NoLz4 && frame.flags().compressed() {
            // Refused as the node refuses a bad compressed frame: BYE(ProtocolViolation).
            return Some(undecodable_compressed_frame(code));
        }
        match code {
            Code::HELLO => {
                let hello = message(&frame).and_then(|m| match m {
                    Message::Hello(h) => Some(h),
                    _ => None,
                });
                if let Some(mut h) = hello {
                    if w.hello.is_some() && broken == Broken::IgnoresSecondHello {
                        return None;
                    }
                    if w.hello.is_none()
                        && broken != Broken::NoIdentityCheck
                        && w.noise.peer_identity() != Some(h.public_key)
                    {
                        // §21.2: close, sending nothing.
                        w.dead_in = true;
                        self.kill(conn);
                        return None;
                    }
                    w.hello.get_or_insert(h.clone());
                    if broken == Broken::AcceptsWrongNetwork && h.network != network {
                        h.network = network;
                        return Some(Message::Hello(h).to_frame(false).into_bytes().to_vec());
                    }
                    let unsigned = weft_engine::protocol::CAP_BROADCASTS_UNSIGNED;
                    if broken == Broken::AcceptsOtherSigningMode && h.capabilities & unsigned != 0 {
                        h.capabilities &= !unsigned;
                        return Some(Message::Hello(h).to_frame(false).into_bytes().to_vec());
                    }
                }
            }
            Code::HELLO_ACK if w.hello.is_none() && broken == Broken::IgnoresEarlyAck => {
                return None;
            }
            Code::HELLO_ACK => {
                w.acked = w.hello.is_some();
                let on_link = w.hello.as_ref().is_some_and(|h| {
                    h.dedicated.is_none() && h.families & Family::Replication.bit() != 0
                });
                if w.acked && on_link {
                    let list = ReplicaMessage::List(List {
                        folder: self.folder.id,
                        index_id: 0,
                        since: 0,
                    });
                    let bytes = frame_bytes(&Message::Replica(list));
                    // After the node has seen the HELLO_ACK: queued behind its own frames.
                    self.pending_out.push((conn, bytes));
                }
            }
            _ if established
                && code.family() == Some(Family::Replication)
                && self.fake_folder(conn, &frame) =>
            {
                return None;
            }
            Code::BYE => {}
            _ if !established && broken == Broken::IgnoresEarlyFrames => return None,
            _ if code.family() == Some(Family::Drops) && drop_ignored(broken, &frame) => {
                return None
            }
            _ => {}
        }
        if broken == Broken::IgnoresUnknownFamily
            && code.family() == Some(weft_engine::protocol::Family::Chord)
        {
            return None;
        }
        Some(frame.bytes().to_vec())
    }

    /// A frame from the node on its way to the kit: the frames to send instead.
    fn filter_out(&self, conn: ConnId, frame: Frame) -> Vec<Vec<u8>> {
        let bytes = frame.bytes().to_vec();
        let msg = message(&frame);
        let peer_lz4 = self
            .wires
            .get(&conn)
            .and_then(|w| w.hello.as_ref())
            .is_some_and(|h| h.capabilities & CAP_LZ4 != 0);
        match (self.broken, frame.code(), msg) {
            (Broken::BadHelloAck, Code::HELLO_ACK, Some(Message::HelloAck(mut a))) => {
                a.signature.0[10] ^= 1;
                vec![frame_bytes(&Message::HelloAck(a))]
            }
            (Broken::CompressedHello, Code::HELLO, _) => {
                let payload = frame.payload().map(|p| p.to_vec()).unwrap_or_default();
                vec![lz4_literal_frame(Code::HELLO, &payload)]
            }
            (Broken::HelloKeyMismatch, Code::HELLO, Some(Message::Hello(mut h))) => {
                h.public_key.0[0] ^= 1;
                vec![frame_bytes(&Message::Hello(h))]
            }
            (Broken::BadProofWrongReason, Code::BYE, Some(Message::Bye(ByeReason::BadProof))) => {
                vec![frame_bytes(&Message::Bye(ByeReason::ProtocolViolation))]
            }
            (
                Broken::StaleWrongReason,
                Code::BYE,
                Some(Message::Bye(ByeReason::StaleIncarnation)),
            ) => vec![frame_bytes(&Message::Bye(ByeReason::ProtocolViolation))],
            (Broken::PongWrongNonce, Code::PONG, Some(Message::Pong(p))) => {
                vec![frame_bytes(&Message::Pong(Pong {
                    nonce: p.nonce.wrapping_add(1),
                }))]
            }
            (Broken::CompressesToAll, Code::BROADCAST, _)
                if !peer_lz4 && !frame.flags().compressed() =>
            {
                let payload = frame.payload().map(|p| p.to_vec()).unwrap_or_default();
                vec![Frame::build(Code::BROADCAST, &payload, true)
                    .into_bytes()
                    .to_vec()]
            }
            (Broken::NoRelayToPlain, Code::BROADCAST, _) if !peer_lz4 => Vec::new(),
            (Broken::CascadeHopsKept, Code::ICANSEE, Some(Message::ICanSee(c))) => {
                vec![frame_bytes(&Message::ICanSee(ICanSee {
                    hops_left: c.hops_left.saturating_add(1),
                    ..c
                }))]
            }
            (Broken::DuplicateRelay, Code::BROADCAST, _) => vec![bytes.clone(), bytes],
            (Broken::NoRelay, Code::BROADCAST, _) => Vec::new(),
            (Broken::NoRepair, Code::MESH_REPAIR, _) => Vec::new(),
            (Broken::NoTableRelay, Code::TABLE_WRITE, _) => Vec::new(),
            (Broken::RunsForStrangers, Code::RUN_REFUSED, Some(Message::Run(m))) => {
                let started = weft_engine::protocol::RunStarted { run: m.run() };
                vec![frame_bytes(&Message::Run(
                    weft_engine::protocol::RunMessage::Started(started),
                ))]
            }
            (Broken::DropNoNotFound, Code::DROP_NOTFOUND, _) => Vec::new(),
            (Broken::DropBadSignature, _, Some(Message::Drop(DropMessage::Version(mut m)))) => {
                m.signature.0[5] ^= 1;
                vec![frame_bytes(&Message::Drop(DropMessage::Version(m)))]
            }
            (Broken::DropFilesAltered, _, Some(Message::Drop(DropMessage::Files(mut f)))) => {
                match f.files.first_mut() {
                    Some(first) => first.mode ^= 1,
                    None => f.files.push(DropFile {
                        path: "weft-broken".into(),
                        kind: FileKind::Directory,
                        mode: 7,
                        size: 0,
                        target: None,
                        blocks: Vec::new(),
                    }),
                }
                vec![frame_bytes(&Message::Drop(DropMessage::Files(f)))]
            }
            (Broken::ChordWrongRequest, _, Some(Message::Chord(mut c))) => {
                match &mut c {
                    ChordMessage::Found(x) => x.request ^= 1,
                    ChordMessage::State(x) => x.request ^= 1,
                    ChordMessage::Stored(x) => x.request ^= 1,
                    ChordMessage::Values(x) => x.request ^= 1,
                    _ => {}
                }
                vec![frame_bytes(&Message::Chord(c))]
            }
            _ => vec![bytes],
        }
    }

    /// Carries out the node's outputs.
    fn drain(&mut self) {
        while let Some(output) = self.node.poll_output() {
            match output {
                Output::Transmit { conn, bytes } => {
                    let Some(w) = self.wires.get_mut(&conn) else {
                        continue;
                    };
                    w.outbound.push(bytes);
                    let mut frames = Vec::new();
                    while let Ok(Some(f)) = w.outbound.next_frame() {
                        frames.push(f);
                    }
                    let mut plain = Vec::new();
                    for f in frames {
                        for b in self.filter_out(conn, f) {
                            plain.extend_from_slice(&b);
                        }
                    }
                    let Some(w) = self.wires.get_mut(&conn) else {
                        continue;
                    };
                    w.owed = true;
                    if w.noise.is_established() {
                        let sealed = w.noise.seal(&plain);
                        w.out.extend_from_slice(&sealed);
                    } else {
                        w.held.extend_from_slice(&plain);
                    }
                }
                Output::Close { conn, .. } => {
                    if let Some(w) = self.wires.get_mut(&conn) {
                        w.closing = true;
                    }
                }
                Output::Connect { conn, .. } => self.inputs.push(Input::ConnectFailed { conn }),
                Output::Request { id, .. } => self.inputs.push(Input::Completed {
                    id,
                    result: HostResult::Failed("no state folder".into()),
                }),
                Output::Event(_) => {}
                _ => {}
            }
        }
    }

    /// Writes what each connection owes; closes those done closing.
    fn write(&mut self) {
        for (&conn, w) in &mut self.wires {
            if !w.out.is_empty() {
                match w.socket.write(&w.out) {
                    Ok(n) => {
                        w.out.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => {
                        w.out.clear();
                        w.closing = true;
                    }
                }
            }
            if w.out.is_empty() && w.held.is_empty() {
                if w.closing {
                    let _ = w.socket.shutdown(Shutdown::Both);
                    self.inputs.push(Input::Closed { conn });
                } else if std::mem::take(&mut w.owed) {
                    self.inputs.push(Input::Writable { conn });
                }
            }
        }
        // A connection closed above is forgotten when its `Closed` is handed to the node.
    }
}

/// Whether the wrapper drops a DROP_* frame from the kit before the node sees it: a frame
/// that does not decode ([`Broken::DropTakesMalformed`]), a DROP_VERSION breaking a rule
/// ([`Broken::DropForgedKept`]).
fn drop_ignored(broken: Broken, frame: &Frame) -> bool {
    let Ok(payload) = frame.payload() else {
        return broken == Broken::DropTakesMalformed;
    };
    match (broken, Message::decode(frame.code(), &payload)) {
        (Broken::DropTakesMalformed, Err(_)) => true,
        (Broken::DropForgedKept, Ok(Message::Drop(DropMessage::Version(m)))) => {
            m.verify().is_err() || !m.owners.contains(&m.signer)
        }
        _ => false,
    }
}

/// The message a frame carries, owned where it matters (HELLO, HELLO_ACK, PONG, BYE,
/// ICANSEE, Chord, drops).
fn message(frame: &Frame) -> Option<Message<'static>> {
    let payload = frame.payload().ok()?;
    let m = Message::decode(frame.code(), &payload).ok()?;
    Some(match m {
        Message::Hello(h) => Message::Hello(h),
        Message::HelloAck(a) => Message::HelloAck(a),
        Message::Pong(p) => Message::Pong(p),
        Message::Bye(r) => Message::Bye(r),
        Message::ICanSee(c) => Message::ICanSee(c),
        Message::Chord(c) => Message::Chord(c),
        Message::Drop(d) => Message::Drop(d),
        Message::Run(weft_engine::protocol::RunMessage::Refused(r)) => {
            Message::Run(weft_engine::protocol::RunMessage::Refused(r))
        }
        _ => return None,
    })
}

fn frame_bytes(m: &Message) -> Vec<u8> {
    m.to_frame(false).into_bytes().to_vec()
}

/// A frame flagged compressed that no receiver can inflate: it declares 4 GiB from a block of
/// one byte (§3 rule 3).
fn undecodable_compressed_frame(code: Code) -> Vec<u8> {
    let body = [0xff, 0xff, 0xff, 0xff, 0x00];
    let mut frame = ((4 + body.len()) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&[1, 1]);
    frame.extend_from_slice(&code.0.to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// A frame flagged compressed whose payload is one lz4 block of literals only.
fn lz4_literal_frame(code: Code, payload: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    let n = payload.len();
    if n < 15 {
        block.push((n as u8) << 4);
    } else {
        block.push(0xf0);
        let mut rest = n - 15;
        while rest >= 255 {
            block.push(255);
            rest -= 255;
        }
        block.push(rest as u8);
    }
    block.extend_from_slice(payload);
    let mut body = (n as u32).to_be_bytes().to_vec();
    body.extend_from_slice(&block);
    let mut frame = ((4 + body.len()) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&[1, 1]);
    frame.extend_from_slice(&code.0.to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}
