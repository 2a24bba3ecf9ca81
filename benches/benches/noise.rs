//! The Noise cipher suites weft could fix for its links (issue 16), measured on this machine:
//! a whole XX handshake with static keys, and transport messages of 64 B, 1 KiB and 64 KiB
//! (the largest Noise message) sealed and opened, for ChaChaPoly and AES-GCM with BLAKE2s,
//! BLAKE2b and SHA-256, each with snow's default (RustCrypto) primitives and with ring's
//! (`ring/…`). Throughput is bytes of plaintext sealed then opened.
//!
//! `cargo bench -p weft-benches --bench noise`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use snow::resolvers::{BoxedCryptoResolver, DefaultResolver, FallbackResolver, RingResolver};
use snow::{Builder, HandshakeState, TransportState};

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

criterion_group!(benches, handshakes, transport);
criterion_main!(benches);
