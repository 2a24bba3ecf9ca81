//! Folder replication's receive path for block data (issue 17, SPEC.md §22): 64 MiB of
//! pseudo-random bytes in 1 MiB blocks, sent as HEREIS payloads of at most
//! `HEREIS_DATA_BYTES_MAX` (255 KiB) data each, throughput in bytes.
//!
//! - `pipeline`: what the receiving replica does per payload: decode it
//!   (`Message::decode(Code::HEREIS, ..)`), feed the piece to its block's `blake3::Hasher`,
//!   hand the write out zero-copy (`payload.slice_ref(data)`, kept in a Vec as the storage
//!   request would keep it), and at the block's last piece check the hash.
//! - `blake3_whole`: one `blake3::hash` of the 64 MiB (the hashing alone, at its best).
//! - `blake3_blocks`: one `blake3::hash` per 1 MiB block (the same hashes the pipeline
//!   checks, without the pieces).
//!
//! Target: the pipeline at 3 GB/s or more on one core.
//!
//! `cargo bench -p weft-benches --bench replicate -- --warm-up-time 1 --measurement-time 3`

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use weft_protocol::{
    BlockHash, Code, FolderId, HereIs, Message, ReplicaMessage, HEREIS_DATA_BYTES_MAX,
};

const SIZE: usize = 64 * 1024 * 1024;
const BLOCK_BYTES: usize = 1024 * 1024;

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
fn payloads(data: &[u8], folder: FolderId) -> (Vec<BlockHash>, Vec<Bytes>) {
    let mut hashes = Vec::new();
    let mut payloads = Vec::new();
    for block in data.chunks(BLOCK_BYTES) {
        let hash = *blake3::hash(block).as_bytes();
        hashes.push(hash);
        for (index, piece) in block.chunks(HEREIS_DATA_BYTES_MAX).enumerate() {
            let offset = u32::try_from(index * HEREIS_DATA_BYTES_MAX).expect("offset < 1 MiB");
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

fn replicate(c: &mut Criterion) {
    let data = data();
    let (hashes, payloads) = payloads(&data, FolderId::from_name("bench"));
    let mut g = c.benchmark_group("replicate_64MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function("pipeline", |b| {
        b.iter(|| receive(black_box(&payloads), &hashes))
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

criterion_group!(benches, replicate);
criterion_main!(benches);
