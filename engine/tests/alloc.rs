//! Relaying allocates nothing per broadcast after warm-up: a counting global allocator watches a
//! node relay 10,000 broadcasts from one peer to two others.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use common::{broadcast_frame, drain, node_with, Fake, T0};
use weft_engine::protocol::NodeId;
use weft_engine::{Event, Input, MeshEvent, Node, Output};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds GlobalAlloc's contract; we pass it on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A driver's read size.
const CHUNK: usize = 64 * 1024;

/// Feeds `stream` to `node` from `source` in CHUNK-sized reads, writing out everything the node
/// transmits at once (answering Writable) and consuming its events. Returns deliveries.
fn relay(node: &mut Node, source: &Fake, stream: &Bytes) -> u64 {
    let mut delivered = 0;
    let mut offset = 0;
    while offset < stream.len() {
        let end = (offset + CHUNK).min(stream.len());
        let bytes = stream.slice(offset..end);
        offset = end;
        node.handle_input(
            T0,
            Input::Received {
                conn: source.conn,
                bytes,
            },
        )
        .unwrap();
        while let Some(out) = node.poll_output() {
            match out {
                Output::Transmit { conn, bytes } => {
                    drop(bytes);
                    node.handle_input(T0, Input::Writable { conn }).unwrap();
                }
                Output::Event(Event::Mesh(MeshEvent::Broadcast { .. })) => delivered += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    delivered
}

fn stream(origin: NodeId, seqs: std::ops::Range<u64>) -> Bytes {
    let mut all = Vec::new();
    for seq in seqs {
        let payload = seq.to_le_bytes().repeat(8);
        all.extend_from_slice(&broadcast_frame(origin, seq, &payload));
    }
    let all = Bytes::from(all);
    // Share the buffer once up front, as a driver's read buffer already is.
    drop(all.slice(0..1));
    all
}

#[test]
fn relaying_10k_broadcasts_allocates_per_read_not_per_broadcast() {
    let mut node = node_with(|_| {});
    let source = Fake::new(9, weft_engine::ConnId::inbound(1));
    let sinks = [
        Fake::new(8, weft_engine::ConnId::inbound(2)),
        Fake::new(7, weft_engine::ConnId::inbound(3)),
    ];
    for f in std::iter::once(&source).chain(&sinks) {
        f.join(&mut node, T0);
    }
    drain(&mut node);
    let origin = NodeId([0x42; 32]);
    let warm = stream(origin, 1..2001);
    let measured = stream(origin, 2001..12001);

    assert_eq!(relay(&mut node, &source, &warm), 2000);
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let delivered = relay(&mut node, &source, &measured);
    COUNTING.store(false, Ordering::Relaxed);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);

    assert_eq!(delivered, 10_000);
    assert_eq!(node.metrics().session.traffic.mesh.frames_out, 24_000);
    println!("allocations while relaying 10,000 broadcasts: {allocations}");
    // Not one per broadcast: per 64 KiB read (about 33 reads of signed ~210-byte frames), a
    // few to assemble frames split across reads and about 25 for the read's batch of origin
    // proofs (the batch verifier's tables, SPEC.md §11.8), and two per 256 KiB chunk the
    // repair store copies held broadcasts into (§11.7).
    assert!(allocations < 1_500, "{allocations} allocations");
}
