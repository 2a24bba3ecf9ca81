//! The Noise cipher suites weft could fix for its links (issue 16), measured on this machine:
//! a whole XX handshake with static keys, and transport messages of 64 B, 1 KiB and 64 KiB
//! (the largest Noise message) sealed and opened, for ChaChaPoly and AES-GCM with BLAKE2s,
//! BLAKE2b and SHA-256, each with snow's default (RustCrypto) primitives and with ring's
//! (`ring/…`). Throughput is bytes of plaintext sealed then opened.
//!
//! Then weft's own layer, `weft_engine::noise::NoiseLink` (the suite chosen,
//! `Noise_XXpsk0_25519_AESGCM_SHA256`), beside the plaintext path it replaced (the frame decoder
//! alone, what a `PlainWire` does), each as a link uses it: the sender's frames are written to
//! one buffer (the socket's copy), read back in 64 KiB pieces (the driver's reads, each copied
//! as the driver copies), and decoded to frames on the other side; the Noise path seals each
//! frame on its own (`NoiseLink::seal`, as the session does) and opens the messages
//! (`push`, `poll_plaintext`) before the decoder.
//! - `weft_frames_128KiB`: one BROADCAST frame of 128 KiB (incompressible payload, no
//!   compression), bytes of frame per second.
//! - `weft_broadcasts_64B`: BROADCAST frames of a 64-byte payload as the mesh builds them
//!   (origin proof included: 204 or 205 bytes a frame), 1,024 frames per iteration; messages per
//!   second. `noise_coalesced` seals the 1,024 frames as one stream (split at Noise's largest
//!   message) instead: what sealing a whole flush at once would cost.
//! - `weft_handshake`: two `NoiseLink`s' whole handshake (3 messages, each side verifying the
//!   other's static-key binding), beside the HELLO/HELLO_ACK signatures (each side signs one
//!   transcript and verifies the other's) the session does on every link, encrypted or not.
//!
//! `cargo bench -p weft-benches --bench noise` (all), `-- weft_` (weft's layer only).
//!
//! The plaintext 128 KiB figure is allocator-bound: in some heap layouts glibc trims the heap
//! top every iteration and each iteration page-faults (several times slower). With
//! `MALLOC_MMAP_THRESHOLD_=16777216 MALLOC_TRIM_THRESHOLD_=67108864` in the environment it
//! does not.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use snow::resolvers::{BoxedCryptoResolver, DefaultResolver, FallbackResolver, RingResolver};
use snow::{Builder, HandshakeState, TransportState};
use weft_benches::pseudo_random;
use weft_engine::identity::{Identity, Role, Transcript};
use weft_engine::noise::{handshake_in_memory, NoiseKeys, NoiseLink, NoiseRole, Rekey};
use weft_engine::NetworkKey;
use weft_protocol::{Broadcast, FrameDecoder, Message, NetworkId, OriginProof};

/// The suites compared (the pattern is the same: XX, both sides' static keys sent).
const SUITES: &[&str] = &[
    "Noise_XX_25519_ChaChaPoly_BLAKE2s",
    "Noise_XX_25519_ChaChaPoly_BLAKE2b",
    "Noise_XX_25519_ChaChaPoly_SHA256",
    "Noise_XX_25519_AESGCM_BLAKE2s",
    "Noise_XX_25519_AESGCM_SHA256",
    "ring/Noise_XX_25519_ChaChaPoly_BLAKE2s",
    "ring/Noise_XX_25519_AESGCM_SHA256",
];

/// Largest Noise message, less the 16-byte tag: the largest plaintext of one message.
const PLAINTEXT_BYTES_MAX: usize = 65_535 - 16;

/// A builder of `suite`: `ring/` first takes ring's primitives (falling back to the default
/// ones for what ring lacks: BLAKE2, curve25519's key generation).
fn builder(suite: &str) -> Builder<'static> {
    match suite.strip_prefix("ring/") {
        Some(name) => {
            let params = name.parse().expect("a valid suite name");
            let ring: BoxedCryptoResolver = Box::new(RingResolver);
            let resolver = FallbackResolver::new(ring, Box::new(DefaultResolver));
            Builder::with_resolver(params, Box::new(resolver))
        }
        None => Builder::new(suite.parse().expect("a valid suite name")),
    }
}

fn pair(suite: &str) -> (HandshakeState, HandshakeState) {
    let keys = |b: Builder| b.generate_keypair().expect("keypair");
    let ki = keys(builder(suite));
    let kr = keys(builder(suite));
    let i = builder(suite)
        .local_private_key(&ki.private)
        .expect("key")
        .build_initiator()
        .expect("initiator");
    let r = builder(suite)
        .local_private_key(&kr.private)
        .expect("key")
        .build_responder()
        .expect("responder");
    (i, r)
}

fn handshake(suite: &str) -> (TransportState, TransportState) {
    let (mut i, mut r) = pair(suite);
    let (mut msg, mut buf) = ([0u8; 256], [0u8; 256]);
    let n = i.write_message(&[], &mut msg).expect("-> e");
    r.read_message(&msg[..n], &mut buf).expect("read e");
    let n = r.write_message(&[], &mut msg).expect("<- e, ee, s, es");
    i.read_message(&msg[..n], &mut buf).expect("read");
    let n = i.write_message(&[], &mut msg).expect("-> s, se");
    r.read_message(&msg[..n], &mut buf).expect("read");
    (
        i.into_transport_mode().expect("done"),
        r.into_transport_mode().expect("done"),
    )
}

fn handshakes(c: &mut Criterion) {
    let mut group = c.benchmark_group("noise_handshake_xx");
    for suite in SUITES {
        group.bench_function(*suite, |b| b.iter(|| black_box(handshake(suite))));
    }
    group.finish();
}

fn transport(c: &mut Criterion) {
    let mut group = c.benchmark_group("noise_transport");
    for len in [64usize, 1024, PLAINTEXT_BYTES_MAX] {
        group.throughput(Throughput::Bytes(len as u64));
        for suite in SUITES {
            let (mut i, mut r) = handshake(suite);
            let plain = vec![0x5au8; len];
            let (mut sealed, mut opened) = (vec![0u8; 65_535], vec![0u8; 65_535]);
            group.bench_with_input(BenchmarkId::new(*suite, len), &len, |b, _| {
                b.iter(|| {
                    let n = i.write_message(&plain, &mut sealed).expect("seal");
                    let m = r.read_message(&sealed[..n], &mut opened).expect("open");
                    black_box(m)
                })
            });
        }
    }
    group.finish();
}

/// The driver's read size: received bytes reach the wire layer in pieces of at most this.
const READ_BYTES: usize = 64 * 1024;
/// Broadcast frames per iteration of `weft_broadcasts_64B`.
const BROADCASTS: usize = 1024;

/// A BROADCAST frame as the mesh originates it: `payload`, sequence `seq`, signed by
/// `origin` (broadcast origin signatures are on by default), uncompressed.
fn broadcast_frame(origin: &Identity, seq: u64, payload: &[u8]) -> Bytes {
    let network = NetworkId::from_name("bench");
    let mut broadcast = Broadcast {
        origin: origin.node_id(),
        incarnation: 1,
        seq,
        payload,
        proof: None,
    };
    let mut signed = Vec::new();
    broadcast.signed_message(&network, &mut signed);
    broadcast.proof = Some(OriginProof {
        public_key: origin.public_key(),
        signature: origin.sign(&signed),
    });
    Message::Broadcast(broadcast).to_frame(false).into_bytes()
}

/// One node's Noise keys, from a fixed secret.
fn noise_keys(secret: u8) -> NoiseKeys {
    let network_key = NetworkKey::derive(b"bench network secret").expect("a valid secret");
    NoiseKeys::new(&[secret; 32], network_key, Rekey::default())
}

/// Two links with their handshake done in memory: (initiator, responder).
fn noise_pair(initiator: &NoiseKeys, responder: &NoiseKeys) -> (NoiseLink, NoiseLink) {
    let mut i = NoiseLink::new(initiator, NoiseRole::Initiator, [1; 32]);
    let mut r = NoiseLink::new(responder, NoiseRole::Responder, [2; 32]);
    handshake_in_memory(&mut i, &mut r);
    assert!(i.is_established() && r.is_established(), "handshake done");
    assert!(i.peer_identity().is_some() && r.peer_identity().is_some());
    (i, r)
}

/// What the sender writes: `pieces` one after the other into `socket` (the socket's copy;
/// its buffer is reused, as a socket's is).
fn write<'a>(socket: &'a mut Vec<u8>, pieces: &[Bytes]) -> &'a [u8] {
    socket.clear();
    for p in pieces {
        socket.extend_from_slice(p);
    }
    socket
}

/// The plaintext receiver: `wire` read in [`READ_BYTES`] pieces into the frame decoder;
/// returns the frames' bytes decoded.
fn open_plain(wire: &[u8]) -> usize {
    let mut decoder = FrameDecoder::new();
    let mut frame_bytes = 0;
    for read in wire.chunks(READ_BYTES) {
        decoder.push(Bytes::copy_from_slice(read));
        while let Some(frame) = decoder.next_frame().expect("a valid frame") {
            frame_bytes += frame.bytes().len();
        }
    }
    frame_bytes
}

/// The Noise receiver: `wire` read in [`READ_BYTES`] pieces, opened by `link`, its plaintext
/// into the frame decoder (what the engine's Noise wire does); returns the frames' bytes.
fn open_noise(link: &mut NoiseLink, wire: &[u8]) -> usize {
    let mut decoder = FrameDecoder::new();
    let mut frame_bytes = 0;
    for read in wire.chunks(READ_BYTES) {
        link.push(&Bytes::copy_from_slice(read));
        while let Some(plain) = link.poll_plaintext() {
            decoder.push(plain);
        }
        while let Some(frame) = decoder.next_frame().expect("a valid frame") {
            frame_bytes += frame.bytes().len();
        }
    }
    assert!(link.error().is_none(), "every message opened");
    frame_bytes
}

/// `frames` through the plaintext path and through two Noise links, each frame sealed on its
/// own (and, with `coalesced`, all of them sealed as one stream too).
fn weft_links(c: &mut Criterion, group: &str, frames: &[Bytes], coalesced: bool) {
    let total: usize = frames.iter().map(Bytes::len).sum();
    let mut group = c.benchmark_group(group);
    if frames.len() == 1 {
        group.throughput(Throughput::Bytes(total as u64));
    } else {
        group.throughput(Throughput::Elements(frames.len() as u64));
    }
    let mut socket = Vec::new();
    group.bench_function("plain", |b| {
        b.iter(|| {
            let wire = write(&mut socket, frames);
            assert_eq!(open_plain(wire), total);
        })
    });
    let (a_keys, b_keys) = (noise_keys(1), noise_keys(2));
    let (mut a, mut b) = noise_pair(&a_keys, &b_keys);
    let mut sealed = Vec::with_capacity(frames.len());
    group.bench_function("noise", |bench| {
        bench.iter(|| {
            sealed.clear();
            sealed.extend(frames.iter().map(|f| a.seal(f)));
            let wire = write(&mut socket, &sealed);
            assert_eq!(open_noise(&mut b, wire), total);
        })
    });
    if coalesced {
        let mut flush = BytesMut::with_capacity(total);
        group.bench_function("noise_coalesced", |bench| {
            bench.iter(|| {
                flush.clear();
                for f in frames {
                    flush.extend_from_slice(f);
                }
                let wire = a.seal(&flush);
                assert_eq!(open_noise(&mut b, &wire), total);
            })
        });
    }
    group.finish();
}

fn weft_frames(c: &mut Criterion) {
    let origin = Identity::from_secret(&[9; 32]);
    let big = broadcast_frame(&origin, 1, &pseudo_random(128 * 1024));
    weft_links(c, "weft_frames_128KiB", &[big], false);
    let payload = pseudo_random(64);
    let small: Vec<Bytes> = (1..=BROADCASTS as u64)
        .map(|seq| broadcast_frame(&origin, seq, &payload))
        .collect();
    weft_links(c, "weft_broadcasts_64B", &small, true);
}

/// Both sides' HELLO_ACK work: each signs its transcript and verifies the other's.
fn hello_acks(dialer: &Identity, acceptor: &Identity, network: NetworkId) -> bool {
    let (dialer_nonce, acceptor_nonce) = ([3u8; 32], [4u8; 32]);
    let by_dialer = Transcript {
        network,
        signer_role: Role::Dialer,
        verifier_key: acceptor.public_key(),
        verifier_nonce: acceptor_nonce,
        signer_nonce: dialer_nonce,
        signer_incarnation: 1,
    };
    let by_acceptor = Transcript {
        network,
        signer_role: Role::Acceptor,
        verifier_key: dialer.public_key(),
        verifier_nonce: dialer_nonce,
        signer_nonce: acceptor_nonce,
        signer_incarnation: 1,
    };
    let dialer_sig = dialer.sign_hello_ack(&by_dialer);
    let acceptor_sig = acceptor.sign_hello_ack(&by_acceptor);
    by_dialer.verify(dialer.public_key(), &dialer_sig)
        && by_acceptor.verify(acceptor.public_key(), &acceptor_sig)
}

fn weft_handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("weft_handshake");
    let (a_keys, b_keys) = (noise_keys(1), noise_keys(2));
    group.bench_function("noise_xxpsk0_two_links", |b| {
        b.iter(|| black_box(noise_pair(&a_keys, &b_keys)))
    });
    let (dialer, acceptor) = (
        Identity::from_secret(&[1; 32]),
        Identity::from_secret(&[2; 32]),
    );
    let network = NetworkId::from_name("bench");
    group.bench_function("hello_ack_sign_verify_both_sides", |b| {
        b.iter(|| assert!(hello_acks(&dialer, &acceptor, network)))
    });
    group.finish();
}

criterion_group!(benches, handshakes, transport, weft_frames, weft_handshake);
criterion_main!(benches);
