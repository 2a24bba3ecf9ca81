//! Folder replication's block function: content-defined chunking plus blake3 of every block
//! (`weft_engine::replicate::blocks::chunk`) over 64 MiB of pseudo-random bytes, beside raw
//! blake3 of the same bytes (the hashing alone), throughput in bytes.
//!
//! `cargo bench -p weft-benches --bench blocks -- --noplot`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use weft_engine::replicate::blocks::{chunk, tier_for};

const SIZE: usize = 64 * 1024 * 1024;

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

fn blocks(c: &mut Criterion) {
    let data = data();
    let tier = tier_for(SIZE as u64, None);
    let mut g = c.benchmark_group("blocks_64MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.bench_function(format!("chunk_tier{}", tier.index()), |b| {
        b.iter(|| chunk(black_box(&data), tier))
    });
    g.bench_function("blake3", |b| b.iter(|| blake3::hash(black_box(&data))));
    g.finish();
}

criterion_group!(benches, blocks);
criterion_main!(benches);
