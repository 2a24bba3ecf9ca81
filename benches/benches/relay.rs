//! The engine alone relaying: one `Node` with 8 peers, fed fresh BROADCASTs (never a
//! duplicate) of a 64-byte payload, each relayed to the other 7 peers and delivered to the
//! application; inbound messages processed per second, on the bench's one thread.
//!
//! The peers are fakes driven by hand (their HELLO, HELLO_ACK and, with encryption on, their
//! side of Noise, `weft_engine::noise::NoiseLink`). Each read is one peer's next frames, up to
//! 64 KiB (a driver's read), the peers taking turns; with Noise each frame is sealed on its own,
//! as an origin that sends one broadcast per input seals it (the node's own relays go out
//! sealed together, one message per peer and read). The broadcasts come from 1,024 origins in turn, so the origin
//! proofs of one read (the node checks them in one batch per read) are all of distinct keys.
//! Building, signing and sealing the input is not timed; the node's outputs are taken as a
//! driver takes them: after each read every output is drained, then each connection that was
//! handed bytes hears `Writable` once (its socket took them all; the bytes are dropped).
//!
//! Ids: `relay_8_peers/{plaintext,noise}/signatures_{off,on}`, and beside them the limit of the
//! signed ones, `ed25519_batch_verify`: the same proofs in the same batches (one per read)
//! through `ed25519_zebra`'s batch verifier alone, as the mesh calls it (`mesh/origin.rs`).
//! Issue 19's targets: `signatures_off` at least 2,000,000 per second on one core;
//! `signatures_on` at least 80 % of `ed25519_batch_verify`.
//!
//! Before the signed benches, unless `WEFT_BENCH_PAIRED=off`, the signed relay and the
//! verification alone run alternated on the same broadcasts, and the two rates and their
//! ratio are printed (and written as JSON to `WEFT_BENCH_PAIRED_OUT`): criterion's figures
//! of two benches come from different moments, and on this VM the load of the other
//! hyperthread moves even on-CPU time by half.
//!
//! Times are the bench thread's time on a CPU (`CLOCK_THREAD_CPUTIME_ID`; wall time where that
//! fails): what one core does, even on a machine other work shares. Every timed stretch is
//! thousands of messages or one whole batch (milliseconds), so reading the clock costs nothing
//! measurable.
//!
//! `taskset -c 1 cargo bench -p weft-benches --bench relay`

use std::time::{Duration, Instant as WallInstant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_zebra::{batch, Signature as ZebraSignature, VerificationKeyBytes};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use weft_benches::pseudo_random;
use weft_engine::identity::{Role, Transcript};
use weft_engine::noise::{NoiseKeys, NoiseLink, NoiseRole, Rekey};
use weft_engine::protocol::{
    Broadcast, Code, FrameDecoder, Hello, HelloAck, Message, NetworkId, OriginProof,
    CAP_BROADCASTS_UNSIGNED, CAP_LZ4,
};
use weft_engine::rate::RateLimit;
use weft_engine::{
    Config, ConnId, Event, HostRequest, HostResult, Identity, Input, Instant, LinkEncryption,
    MeshEvent, NetworkKey, Node, Output,
};

const NETWORK: &str = "bench";
const PEERS: u8 = 8;
const ORIGINS: usize = 1024;
/// A driver's read size.
const READ_BYTES: usize = 64 * 1024;
/// Frames fed per timed stretch (the input for it is built first, untimed).
const STRETCH_FRAMES: usize = 16 * 1024;
/// HELLO `families`: session, mesh, table, Chord and replication.
const ALL_FAMILIES: u32 = 0b1_1111;
const T0: Instant = Instant(5_000_000_000);

/// The broadcasts a run feeds, built once: `frames[i]` from origin `i % ORIGINS`.
struct Pool {
    frames: Vec<Bytes>,
}

impl Pool {
    fn new(len: usize, signatures: bool) -> Pool {
        let network = NetworkId::from_name(NETWORK);
        let origins: Vec<Identity> = (0..ORIGINS)
            .map(|i| {
                let mut secret = [0u8; 32];
                secret[..8].copy_from_slice(&(i as u64 + 1000).to_le_bytes());
                Identity::from_secret(&secret)
            })
            .collect();
        let payload = pseudo_random(64);
        let mut signed = Vec::new();
        let frames = (0..len)
            .map(|i| {
                let origin = &origins[i % ORIGINS];
                let mut b = Broadcast {
                    origin: origin.node_id(),
                    incarnation: 1,
                    seq: (i / ORIGINS) as u64 + 1,
                    payload: &payload,
                    proof: None,
                };
                if signatures {
                    b.signed_message(&network, &mut signed);
                    b.proof = Some(OriginProof {
                        public_key: origin.public_key(),
                        signature: origin.sign(&signed),
                    });
                }
                Message::Broadcast(b).to_frame(false).into_bytes()
            })
            .collect();
        Pool { frames }
    }
}

/// A fake peer: it dialed the node, so its connection is inbound to the node.
struct Peer {
    conn: ConnId,
    identity: Identity,
    nonce: [u8; 32],
    link: Option<NoiseLink>,
    decoder: FrameDecoder,
}

impl Peer {
    fn new(n: u8, encryption: LinkEncryption) -> Peer {
        let secret = [n; 32];
        let link = match encryption {
            LinkEncryption::Noise => {
                let keys = NoiseKeys::new(&secret, NetworkKey::OPEN, Rekey::default());
                Some(NoiseLink::new(&keys, NoiseRole::Initiator, [n; 32]))
            }
            _ => None,
        };
        Peer {
            conn: ConnId::inbound(u64::from(n)),
            identity: Identity::from_secret(&secret),
            nonce: [n; 32],
            link,
            decoder: FrameDecoder::new(),
        }
    }

    /// `plain` as the peer puts it on the wire.
    fn wire(&mut self, plain: &[u8]) -> Bytes {
        match &mut self.link {
            Some(link) => link.seal(plain),
            None => Bytes::copy_from_slice(plain),
        }
    }

    /// Bytes the node sent this peer during the handshake; what the peer answers.
    fn receive(&mut self, bytes: &Bytes) -> Vec<Bytes> {
        let mut replies = Vec::new();
        match &mut self.link {
            Some(link) => {
                link.push(bytes);
                replies.extend(std::iter::from_fn(|| link.poll_transmit()));
                while let Some(plain) = link.poll_plaintext() {
                    self.decoder.push(plain);
                }
            }
            None => self.decoder.push(bytes.clone()),
        }
        while let Some(frame) = self.decoder.next_frame().expect("a valid frame") {
            if frame.code() != Code::HELLO {
                continue;
            }
            let payload = frame.payload().expect("a payload");
            let Ok(Message::Hello(hello)) = Message::decode(Code::HELLO, &payload) else {
                panic!("a bad HELLO");
            };
            let network = NetworkId::from_name(NETWORK);
            let mine = Message::Hello(Hello {
                network,
                public_key: self.identity.public_key(),
                nonce: self.nonce,
                incarnation: 1,
                listen_addr: None,
                capabilities: CAP_LZ4 | (hello.capabilities & CAP_BROADCASTS_UNSIGNED),
                families: ALL_FAMILIES,
                dedicated: None,
            });
            let transcript = Transcript {
                network,
                signer_role: Role::Dialer,
                verifier_key: hello.public_key,
                verifier_nonce: hello.nonce,
                signer_nonce: self.nonce,
                signer_incarnation: 1,
            };
            let ack = Message::HelloAck(HelloAck {
                signature: self.identity.sign_hello_ack(&transcript),
            });
            for m in [mine, ack] {
                let frame = m.to_frame(false).into_bytes();
                replies.push(self.wire(&frame));
            }
        }
        replies
    }
}

/// The relaying node and its peers, linked.
struct Relay {
    node: Node,
    peers: Vec<Peer>,
    next_peer: usize,
}

impl Relay {
    fn new(encryption: LinkEncryption, signatures: bool) -> Relay {
        let mut config = Config::from_seed(NETWORK, 1);
        config.discovery = false;
        config.link_encryption = encryption;
        config.broadcast_signatures = signatures;
        let unlimited = RateLimit {
            per_second: u32::MAX,
            burst: u32::MAX,
        };
        config.limits.broadcast_rate_per_peer = unlimited;
        config.limits.broadcast_excess_per_peer = unlimited;
        let mut relay = Relay {
            node: Node::new(config),
            peers: (1..=PEERS).map(|n| Peer::new(n, encryption)).collect(),
            next_peer: 0,
        };
        relay.handshake();
        for i in 0..relay.peers.len() {
            let conn = relay.peers[i].conn;
            let addr = format!("10.0.0.{i}:7000");
            relay
                .node
                .handle_input(T0, Input::Accepted { conn, addr })
                .expect("accepted");
            relay.handshake();
            let first: Vec<Bytes> = match &mut relay.peers[i].link {
                Some(link) => std::iter::from_fn(|| link.poll_transmit()).collect(),
                None => Vec::new(),
            };
            for bytes in first {
                relay
                    .node
                    .handle_input(T0, Input::Received { conn, bytes })
                    .expect("received");
                relay.handshake();
            }
        }
        relay
    }

    /// Carries bytes between the node and its peers until neither has more to say.
    fn handshake(&mut self) {
        loop {
            let mut moved = false;
            while let Some(out) = self.node.poll_output() {
                moved = true;
                match out {
                    Output::Transmit { conn, bytes } => {
                        let peer = self.peers.iter_mut().find(|p| p.conn == conn);
                        let replies = peer.expect("a peer's connection").receive(&bytes);
                        self.node
                            .handle_input(T0, Input::Writable { conn })
                            .expect("writable");
                        for bytes in replies {
                            self.node
                                .handle_input(T0, Input::Received { conn, bytes })
                                .expect("received");
                        }
                    }
                    Output::Request {
                        id,
                        request: HostRequest::LoadState { .. },
                    } => {
                        let result = HostResult::Loaded(None);
                        self.node
                            .handle_input(T0, Input::Completed { id, result })
                            .expect("completed");
                    }
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// `frames` as the peers' reads: each peer in turn sends its next frames, at most
    /// `READ_BYTES` of wire bytes a read.
    fn reads(&mut self, frames: &[Bytes]) -> Vec<(ConnId, Bytes)> {
        let mut reads = Vec::new();
        let mut frames = frames.iter().peekable();
        while frames.peek().is_some() {
            let turn = self.next_peer;
            self.next_peer = (turn + 1) % self.peers.len();
            let peer = &mut self.peers[turn];
            let mut read = Vec::with_capacity(READ_BYTES);
            while let Some(frame) = frames.peek() {
                let wire = peer.wire(frame);
                read.extend_from_slice(&wire);
                frames.next();
                if read.len() + wire.len() > READ_BYTES {
                    break;
                }
            }
            reads.push((peer.conn, Bytes::from(read)));
        }
        reads
    }

    /// Feeds `reads` to the node as a driver would: after each read, every output taken; then
    /// each connection that was handed bytes is told `Writable` once (its socket took them
    /// all), and so on until the node hands out nothing more. The time it took and the
    /// deliveries.
    fn feed(&mut self, reads: Vec<(ConnId, Bytes)>) -> (Duration, u64) {
        let mut delivered = 0;
        let mut written = Vec::with_capacity(self.peers.len());
        let start = Stopwatch::start();
        for (conn, bytes) in reads {
            self.node
                .handle_input(T0, Input::Received { conn, bytes })
                .expect("received");
            loop {
                while let Some(out) = self.node.poll_output() {
                    match out {
                        Output::Transmit { conn, .. } if !written.contains(&conn) => {
                            written.push(conn)
                        }
                        Output::Event(Event::Mesh(MeshEvent::Broadcast { .. })) => delivered += 1,
                        _ => {}
                    }
                }
                if written.is_empty() {
                    break;
                }
                for conn in written.drain(..) {
                    self.node
                        .handle_input(T0, Input::Writable { conn })
                        .expect("writable");
                }
            }
        }
        (start.elapsed(), delivered)
    }
}

/// The bench thread's time on a CPU, else wall time.
struct Stopwatch {
    wall: WallInstant,
    cpu_ns: Option<u64>,
}

impl Stopwatch {
    fn cpu_ns() -> Option<u64> {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid, writable timespec; the call only writes it.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
        ok.then(|| t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64)
    }

    fn start() -> Stopwatch {
        Stopwatch {
            wall: WallInstant::now(),
            cpu_ns: Stopwatch::cpu_ns(),
        }
    }

    fn elapsed(&self) -> Duration {
        match (self.cpu_ns, Stopwatch::cpu_ns()) {
            (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
            _ => self.wall.elapsed(),
        }
    }
}

/// Times `iters` fresh broadcasts through a relay; a new relay (untimed) whenever the pool is
/// used up, so nothing is ever seen twice.
fn run(relay: &mut Relay, cursor: &mut usize, pool: &Pool, mode: Mode, iters: u64) -> Duration {
    let mut spent = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        if *cursor == pool.frames.len() {
            *relay = Relay::new(mode.encryption, mode.signatures);
            *cursor = 0;
        }
        let n = left.min(STRETCH_FRAMES).min(pool.frames.len() - *cursor);
        let before = relay.node.metrics().session.traffic.mesh.frames_out;
        let reads = relay.reads(&pool.frames[*cursor..*cursor + n]);
        let (took, delivered) = relay.feed(reads);
        let relayed = relay.node.metrics().session.traffic.mesh.frames_out - before;
        assert_eq!(delivered, n as u64, "every broadcast delivered");
        assert_eq!(
            relayed,
            7 * n as u64,
            "every broadcast relayed to the 7 others"
        );
        spent += took;
        *cursor += n;
        left -= n;
    }
    spent
}

#[derive(Clone, Copy)]
struct Mode {
    encryption: LinkEncryption,
    signatures: bool,
}

/// The pool's proofs as the mesh batches them: one batch per read of plaintext frames.
struct Batches {
    batches: Vec<Vec<(VerificationKeyBytes, ZebraSignature, Vec<u8>)>>,
}

impl Batches {
    fn new(frames: &[Bytes]) -> Batches {
        let network = NetworkId::from_name(NETWORK);
        let mut batches = Vec::new();
        let mut batch = Vec::new();
        let mut bytes = 0;
        for frame in frames {
            if bytes + frame.len() > READ_BYTES {
                batches.push(std::mem::take(&mut batch));
                bytes = 0;
            }
            bytes += frame.len();
            let b = Broadcast::decode(Code::BROADCAST, &frame[8..]).expect("a broadcast");
            let proof = b.proof.expect("signed");
            let mut signed = Vec::new();
            b.signed_message(&network, &mut signed);
            batch.push((
                VerificationKeyBytes::from(proof.public_key.0),
                ZebraSignature::from_bytes(&proof.signature.0),
                signed,
            ));
        }
        batches.push(batch);
        Batches { batches }
    }

    /// Verifies every batch; the time it took.
    fn verify(&self, rng: &mut ChaCha8Rng) -> Duration {
        let start = Stopwatch::start();
        for batch in &self.batches {
            let mut verifier = batch::Verifier::new();
            for (key, sig, msg) in batch {
                verifier.queue((*key, *sig, &msg[..]));
            }
            assert!(verifier.verify(&mut *rng).is_ok(), "valid proofs");
        }
        start.elapsed()
    }
}

/// Rounds of the paired measurement, each of `STRETCH_FRAMES` / 2 broadcasts.
const PAIRED_ROUNDS: usize = 4;

/// The signed relay and verification alone, alternated on the same broadcasts in stretches
/// of a few hundred milliseconds: a ratio that holds on a machine whose load changes between
/// criterion's benches (on a VM, a busy sibling hyperthread slows even the on-CPU time).
/// Printed, and written as JSON to `WEFT_BENCH_PAIRED_OUT` if set.
fn paired(pool: &Pool) {
    let mut out = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (links, encryption) in [
        ("plaintext", LinkEncryption::PlaintextSimulationOnly),
        ("noise", LinkEncryption::Noise),
    ] {
        let mut relay = Relay::new(encryption, true);
        let (mut relay_time, mut verify_time, mut n) = (Duration::ZERO, Duration::ZERO, 0);
        for round in 0..PAIRED_ROUNDS {
            let len = STRETCH_FRAMES / 2;
            let frames = &pool.frames[round * len..(round + 1) * len];
            let batches = Batches::new(frames);
            let reads = relay.reads(frames);
            let (took, delivered) = relay.feed(reads);
            assert_eq!(delivered, len as u64, "every broadcast delivered");
            relay_time += took;
            verify_time += batches.verify(&mut rng);
            n += len;
        }
        let relay_rate = n as f64 / relay_time.as_secs_f64();
        let verify_rate = n as f64 / verify_time.as_secs_f64();
        eprintln!(
            "relay bench, paired: {links} links, signatures on: {relay_rate:.0}/s; ed25519 batch \
             verification alone of the same proofs: {verify_rate:.0}/s; {:.0} %",
            100.0 * relay_rate / verify_rate
        );
        out.push(format!(
            "\"{links}\": {{\"relay_per_s\": {relay_rate:.0}, \"verify_per_s\": {verify_rate:.0}, \"messages\": {n}}}"
        ));
    }
    if let Ok(path) = std::env::var("WEFT_BENCH_PAIRED_OUT") {
        std::fs::write(&path, format!("{{{}}}\n", out.join(", "))).expect("paired output written");
    }
}

fn relay(c: &mut Criterion) {
    let mut group = c.benchmark_group("relay_8_peers");
    group.throughput(Throughput::Elements(1));
    for signatures in [false, true] {
        // Built on first use: a filtered run that skips this mode does not sign its pool.
        let pool = std::cell::OnceCell::new();
        let pool = || {
            pool.get_or_init(|| Pool::new(if signatures { 1 << 16 } else { 1 << 18 }, signatures))
        };
        let sig = if signatures { "on" } else { "off" };
        for (links, encryption) in [
            ("plaintext", LinkEncryption::PlaintextSimulationOnly),
            ("noise", LinkEncryption::Noise),
        ] {
            let mode = Mode {
                encryption,
                signatures,
            };
            let mut relay = Relay::new(encryption, signatures);
            let mut cursor = 0;
            group.bench_function(format!("{links}/signatures_{sig}"), |b| {
                b.iter_custom(|iters| run(&mut relay, &mut cursor, pool(), mode, iters))
            });
        }
        if signatures {
            // `cargo test --benches` runs each bench once (no `--bench`): no pairing then.
            let timing = std::env::args().any(|a| a == "--bench");
            if timing && std::env::var("WEFT_BENCH_PAIRED").as_deref() != Ok("off") {
                paired(pool());
            }
            let batches = std::cell::OnceCell::new();
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let (mut at, mut in_batch) = (0usize, 0usize);
            group.bench_function("ed25519_batch_verify", |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        // Whole batches, as the node verifies them; `in_batch` carries the
                        // part of a batch counted towards the iterations before.
                        let batches = batches.get_or_init(|| Batches::new(&pool().frames));
                        let batch = &batches.batches[at];
                        let start = Stopwatch::start();
                        let mut verifier = batch::Verifier::new();
                        for (key, sig, msg) in batch {
                            verifier.queue((*key, *sig, &msg[..]));
                        }
                        assert!(verifier.verify(&mut rng).is_ok(), "valid proofs");
                        let took = start.elapsed();
                        let counted = (batch.len() - in_batch).min(left);
                        // Only the share of the batch's time that these iterations take.
                        spent += took.mul_f64(counted as f64 / batch.len() as f64);
                        left -= counted;
                        in_batch += counted;
                        if in_batch == batch.len() {
                            in_batch = 0;
                            at = (at + 1) % batches.batches.len();
                        }
                    }
                    spent
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
