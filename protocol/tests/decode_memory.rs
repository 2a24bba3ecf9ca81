//! Decoding a list past its limit takes memory in proportion to the limit, not to the list: a
//! peer's payload of millions of small elements (two bytes each on the wire, many more in
//! memory) is refused without holding them. A counting allocator records the peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use weft_protocol::{Code, Message, ProtocolError};

struct Peak;

static COUNTING: AtomicBool = AtomicBool::new(false);
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        let now = NOW.fetch_add(by, Ordering::Relaxed) + by;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

fn shrank(by: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        NOW.fetch_sub(by.min(NOW.load(Ordering::Relaxed)), Ordering::Relaxed);
    }
}

// SAFETY: forwards every call unchanged to the system allocator; only counts.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller upholds GlobalAlloc's contract; we pass it on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size);
        shrank(layout.size());
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Peak = Peak;

/// The peak bytes allocated while decoding `payload` as `code`, and the result.
fn peak_decoding(code: Code, payload: &[u8]) -> (usize, Result<(), ProtocolError>) {
    NOW.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let result = Message::decode(code, payload).map(|_| ());
    COUNTING.store(false, Ordering::Relaxed);
    (PEAK.load(Ordering::Relaxed), result)
}

/// `n` as a postcard varint.
fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

const ELEMENTS: u64 = 1_000_000;

#[test]
fn a_digest_of_a_million_ranges_is_refused_within_bounded_memory() {
    // One entry (origin, incarnation 1) of a million ranges {1, 1}: two bytes each.
    let mut payload = Vec::new();
    varint(1, &mut payload);
    payload.extend_from_slice(&[7; 32]);
    varint(1, &mut payload);
    varint(ELEMENTS, &mut payload);
    for _ in 0..ELEMENTS {
        payload.extend_from_slice(&[1, 1]);
    }
    let (peak, result) = peak_decoding(Code::MESH_DIGEST, &payload);
    assert!(
        matches!(result, Err(ProtocolError::MalformedPayload { .. })),
        "{result:?}"
    );
    assert!(peak < 64 * 1024, "{peak} bytes at the peak");
}

#[test]
fn an_index_batch_of_a_million_entries_is_refused_within_bounded_memory() {
    // IHAVE: folder, index id, a million entries of empty strings and zero numbers.
    let mut payload = vec![0; 16];
    varint(1, &mut payload);
    varint(ELEMENTS, &mut payload);
    for _ in 0..ELEMENTS {
        // path "", kind 0, target "", mode 0, size 0, mtime 0, modified_by 0, version [],
        // sequence 0, blocks [].
        payload.extend_from_slice(&[0; 10]);
    }
    let (peak, result) = peak_decoding(Code::IHAVE, &payload);
    assert!(
        matches!(result, Err(ProtocolError::MalformedPayload { .. })),
        "{result:?}"
    );
    assert!(peak < 256 * 1024, "{peak} bytes at the peak {result:?}");
}
