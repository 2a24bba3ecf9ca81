//! Folder replication's index (issue 17 deliverable 9, SPEC.md §22): a `Replica` loaded
//! with no state is fed the scanner's report of 100,000 files of 10 distinct blocks each
//! (`dir123/file45678.dat`), its storage requests answered minimally.
//!
//! - memory: the heap the replica holds after building it, less what it held before,
//!   counted by a `#[global_allocator]` that wraps the system allocator (bytes allocated
//!   less bytes freed); printed once as `index of 100000 files x 10 blocks: N MiB (target
//!   96 MiB)`.
//! - `replicate_index/build_100000_files`: the time to build it (a fresh replica each
//!   iteration).
//!
//! `cargo bench -p weft-benches --bench replicate_index -- --warm-up-time 1 --measurement-time 3`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use weft_engine::replicate::{
    LocalChange, Replica, ReplicaConfig, ReplicaOutput, StorageRequest, StorageResult,
};
use weft_engine::{Instant, NodeId};
use weft_protocol::{Block, FileEntry, FileKind, FolderId, Version};

/// The system allocator, counting the bytes it hands out and takes back.
struct Counting;

static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);
static FREED_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call goes to `System` unchanged; the counters are only arithmetic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on as it is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as it is.
        unsafe { System.dealloc(ptr, layout) };
        FREED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on as it is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            FREED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
            ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes held on the heap now.
fn heap_bytes() -> u64 {
    ALLOCATED_BYTES.load(Ordering::Relaxed) - FREED_BYTES.load(Ordering::Relaxed)
}

const FILES: u64 = 100_000;
const BLOCKS_PER_FILE: u64 = 10;
const BLOCK_BYTES: u32 = 128 * 1024;
const TARGET_MIB: u64 = 96;

/// Answers every output minimally: no state stored, every step done.
fn drain(replica: &mut Replica) {
    while let Some(o) = replica.poll_output() {
        if let ReplicaOutput::Request { token, request } = o {
            let result = match request {
                StorageRequest::LoadState => StorageResult::Loaded(None),
                _ => StorageResult::Done,
            };
            replica.handle_completed(Instant::ZERO, token, result);
        }
    }
}

/// A replica loaded with no state.
fn loaded() -> Replica {
    let config = ReplicaConfig::new(FolderId::from_name("bench"), NodeId([7; 32]));
    let mut replica = Replica::new(config, [1; 32]);
    drain(&mut replica);
    replica
}

/// File `n` as the scanner reports it: 10 blocks with distinct hashes.
fn entry(n: u64) -> FileEntry {
    let blocks: Vec<Block> = (0..BLOCKS_PER_FILE)
        .map(|b| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&n.to_le_bytes());
            key[8..].copy_from_slice(&b.to_le_bytes());
            Block {
                offset: b * u64::from(BLOCK_BYTES),
                len: BLOCK_BYTES,
                hash: *blake3::hash(&key).as_bytes(),
            }
        })
        .collect();
    FileEntry {
        path: format!("dir{}/file{n:05}.dat", n / 1000),
        kind: FileKind::File,
        target: String::new(),
        mode: 6,
        size: BLOCKS_PER_FILE * u64::from(BLOCK_BYTES),
        mtime_ms: 1_700_000_000_000 + n as i64,
        modified_by: 0,
        version: Version::default(),
        sequence: 0,
        blocks,
    }
}

/// Feeds every file to `replica`.
fn build(replica: &mut Replica) {
    for n in 0..FILES {
        replica.handle_local(Instant::ZERO, LocalChange::Changed(entry(n)));
        drain(replica);
    }
    replica.handle_local(Instant::ZERO, LocalChange::ScanDone);
    drain(replica);
}

fn bench(c: &mut Criterion) {
    let mut replica = loaded();
    let before = heap_bytes();
    build(&mut replica);
    let after = heap_bytes();
    assert_eq!(replica.records().count() as u64, FILES);
    let held = after.saturating_sub(before);
    println!(
        "index of {FILES} files x {BLOCKS_PER_FILE} blocks: {:.1} MiB (target {TARGET_MIB} MiB), {} bytes a file",
        held as f64 / (1024.0 * 1024.0),
        held / FILES
    );
    drop(replica);

    let mut group = c.benchmark_group("replicate_index");
    group.sample_size(10);
    group.bench_function("build_100000_files", |b| {
        b.iter(|| {
            let mut replica = loaded();
            build(&mut replica);
            black_box(replica)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
