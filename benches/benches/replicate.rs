//! Folder replication's receive path for block data (issue 17, SPEC.md §22): 64 MiB of
//! pseudo-random bytes in 1 MiB blocks, sent as HEREIS payloads of at most
//! `HEREIS_DATA_BYTES_MAX` (255 KiB) data each, throughput in bytes.
//!
//! - `pipeline`: what the receiving replica does per payload: decode it
//!   (`Message::decode(Code::HEREIS, ..)`), feed the piece to its block's `blake3::Hasher`,
//!   hand the write out zero-copy (`payload.slice_ref(data)`, kept in a Vec as the storage
//!   request would keep it), and at the block's last piece check the hash.
//! - `pipeline_128KiB_pieces`: the same with 128 KiB pieces, to show what the piece size
//!   costs blake3.
//! - `blake3_whole`: one `blake3::hash` of the 64 MiB (the hashing alone, at its best).
//! - `blake3_blocks`: one `blake3::hash` per 1 MiB block (the same hashes the pipeline
//!   checks, without the pieces).
//!
//! Target: the pipeline at 3 GB/s or more on one core.
//!
//! Each runs twice: `replicate_64MiB` in wall time, and `replicate_64MiB_on_cpu` in the
//! time the bench thread spent on a CPU (Linux's `/proc/thread-self/schedstat`; skipped
//! where that is missing). On a machine shared with other work the wall figures fall with
//! the load; the on-CPU ones are what one core does.
//!
//! `cargo bench -p weft-benches --bench replicate -- --warm-up-time 1 --measurement-time 3`

use bytes::Bytes;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use weft_protocol::{
    BlockHash, Code, FolderId, HereIs, Message, ReplicaMessage, HEREIS_DATA_BYTES_MAX,
};

const SIZE: usize = 64 * 1024 * 1024;
const BLOCK_BYTES: usize = 1024 * 1024;
/// The pieces of the `pipeline_128KiB_pieces` variant: a power of two, so every piece is
/// whole blake3 subtrees (255 KiB pieces split some into 1..4 KiB ones, hashed with less
/// SIMD width).
const PIECE_BYTES_POWER_OF_TWO: usize = 128 * 1024;

fn data() -> Vec<u8> {
    // xorshift: the same bytes every run.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..SIZE / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// The sender's side, done once: every block's hash and its HEREIS payloads, in order.
fn payloads(data: &[u8], folder: FolderId, piece_bytes: usize) -> (Vec<BlockHash>, Vec<Bytes>) {
    let mut hashes = Vec::new();
    let mut payloads = Vec::new();
    for block in data.chunks(BLOCK_BYTES) {
        let hash = *blake3::hash(block).as_bytes();
        hashes.push(hash);
        for (index, piece) in block.chunks(piece_bytes).enumerate() {
            let offset = u32::try_from(index * piece_bytes).expect("offset < 1 MiB");
            let here_is = HereIs {
                folder,
                hash,
                offset,
                data: piece,
            };
            let payload = Message::Replica(ReplicaMessage::HereIs(here_is)).encode_payload();
            payloads.push(Bytes::from(payload));
        }
    }
    (hashes, payloads)
}

/// The receiver's side: decode, hash per block, hand out each write; the writes handed out.
fn receive(payloads: &[Bytes], hashes: &[BlockHash]) -> Vec<Bytes> {
    let mut writes = Vec::with_capacity(payloads.len());
    let mut hasher = blake3::Hasher::new();
    let mut block_done = 0u64;
    let mut blocks = hashes.iter();
    for payload in payloads {
        let Ok(Message::Replica(ReplicaMessage::HereIs(here_is))) =
            Message::decode(Code::HEREIS, payload)
        else {
            panic!("a HEREIS payload does not decode");
        };
        if here_is.offset == 0 {
            hasher.reset();
            block_done = 0;
        }
        hasher.update(here_is.data);
        block_done += here_is.data.len() as u64;
        writes.push(payload.slice_ref(here_is.data));
        if block_done == BLOCK_BYTES as u64 {
            let expected = blocks.next().expect("one hash per block");
            assert_eq!(
                hasher.finalize().as_bytes(),
                expected,
                "block hash mismatch"
            );
            assert_eq!(expected, &here_is.hash);
        }
    }
    assert!(blocks.next().is_none(), "every block verified");
    writes
}

/// Criterion's measurement in the bench thread's time on a CPU, nanoseconds (shown as
/// durations, like wall time).
struct OnCpu;

const SCHEDSTAT: &str = "/proc/thread-self/schedstat";

impl OnCpu {
    /// The thread's time on a CPU so far, nanoseconds, if the kernel tells.
    fn now_ns() -> Option<u64> {
        let stat = std::fs::read_to_string(SCHEDSTAT).ok()?;
        stat.split_whitespace().next()?.parse().ok()
    }
}

impl Measurement for OnCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        OnCpu::now_ns().unwrap_or(0)
    }

    fn end(&self, start: u64) -> u64 {
        OnCpu::now_ns().unwrap_or(0).saturating_sub(start)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        WallTime.formatter()
    }
}

fn replicate<M: Measurement>(c: &mut Criterion<M>, group: &str) {
    let data = data();
    let folder = FolderId::from_name("bench");
    let (_, payloads_128k) = payloads(&data, folder, PIECE_BYTES_POWER_OF_TWO);
    let (hashes, payloads) = payloads(&data, folder, HEREIS_DATA_BYTES_MAX);
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("pipeline", |b| {
        b.iter(|| receive(black_box(&payloads), &hashes))
    });
    g.bench_function("pipeline_128KiB_pieces", |b| {
        b.iter(|| receive(black_box(&payloads_128k), &hashes))
    });
    g.bench_function("blake3_whole", |b| {
        b.iter(|| blake3::hash(black_box(&data)))
    });
    g.bench_function("blake3_blocks", |b| {
        b.iter(|| {
            black_box(&data)
                .chunks(BLOCK_BYTES)
                .map(|block| *blake3::hash(block).as_bytes())
                .collect::<Vec<BlockHash>>()
        })
    });
    g.finish();
}

fn wall(c: &mut Criterion) {
    replicate(c, "replicate_64MiB");
}

fn on_cpu(c: &mut Criterion<OnCpu>) {
    if OnCpu::now_ns().is_none() {
        eprintln!("replicate_64MiB_on_cpu: skipped, no {SCHEDSTAT}");
        return;
    }
    replicate(c, "replicate_64MiB_on_cpu");
}

criterion_group!(benches, wall);
criterion_group! {
    name = benches_on_cpu;
    config = Criterion::default().with_measurement(OnCpu);
    targets = on_cpu
}
criterion_main!(benches, benches_on_cpu);
