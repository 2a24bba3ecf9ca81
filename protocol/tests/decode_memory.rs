//! Decoding a list past its limit takes memory in proportion to the limit, not to the list: a
//! peer's payload of millions of small elements (two bytes each on the wire, many more in
//! memory) is refused without holding them. A counting allocator records the peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use weft_protocol::{Code, Message, ProtocolError};

struct Peak;

thread_local! {
    /// Whether this thread's allocations are counted (another test's are not).
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    if COUNTING.with(|c| c.get()) {
        let now = NOW.fetch_add(by, Ordering::Relaxed) + by;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

fn shrank(by: usize) {
    if COUNTING.with(|c| c.get()) {
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

/// One count at a time: the sums are global, and the tests run on several threads.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The peak bytes allocated while decoding `payload` as `code`, and the result.
fn peak_decoding(code: Code, payload: &[u8]) -> (usize, Result<(), ProtocolError>) {
    peak_of(|| Message::decode(code, payload).map(|_| ()))
}

/// The peak bytes allocated while `decode` runs, and its result.
fn peak_of<T>(decode: impl FnOnce() -> T) -> (usize, T) {
    // A test that failed while holding the lock leaves it poisoned; the counts are still good.
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    NOW.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let result = decode();
    COUNTING.with(|c| c.set(false));
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

/// A version of a million counters {node 0, value 1}: two bytes each.
fn huge_version(out: &mut Vec<u8>) {
    varint(ELEMENTS, out);
    for _ in 0..ELEMENTS {
        out.extend_from_slice(&[0, 1]);
    }
}

/// A file entry of empty strings and zero numbers with [`huge_version`].
fn entry_with_huge_version(out: &mut Vec<u8>) {
    // path "", kind 0, target "", mode 0, size 0, mtime 0, modified_by 0.
    out.extend_from_slice(&[0; 7]);
    huge_version(out);
    // sequence 0, blocks [].
    out.extend_from_slice(&[0; 2]);
}

#[test]
fn a_version_of_a_million_counters_is_refused_within_bounded_memory() {
    let folder_and_index = |out: &mut Vec<u8>| {
        out.extend_from_slice(&[0; 16]);
        varint(1, out);
        varint(1, out);
    };
    // IHAVE: one entry with the version.
    let mut ihave = Vec::new();
    folder_and_index(&mut ihave);
    entry_with_huge_version(&mut ihave);
    // IMOVED: from "", from_version the version, to an entry with it too.
    let mut imoved = Vec::new();
    folder_and_index(&mut imoved);
    imoved.push(0);
    huge_version(&mut imoved);
    entry_with_huge_version(&mut imoved);
    // IDELETED: path "", kind 0, modified_by 0, the version, sequence 0.
    let mut ideleted = Vec::new();
    folder_and_index(&mut ideleted);
    ideleted.extend_from_slice(&[0; 3]);
    huge_version(&mut ideleted);
    ideleted.push(0);
    for (code, payload) in [
        (Code::IHAVE, ihave),
        (Code::IMOVED, imoved),
        (Code::IDELETED, ideleted),
    ] {
        let (peak, result) = peak_decoding(code, &payload);
        assert!(
            matches!(result, Err(ProtocolError::MalformedPayload { .. })),
            "{code:?}: {result:?}"
        );
        assert!(peak < 64 * 1024, "{code:?}: {peak} bytes at the peak");
    }
}

#[test]
fn a_handover_a_file_batch_and_a_run_of_a_million_elements_are_refused_within_bounded_memory() {
    // CHORD_HANDOVER: request 1, a million records {position 0, key [], values []}.
    let mut handover = Vec::new();
    varint(1, &mut handover);
    varint(ELEMENTS, &mut handover);
    for _ in 0..ELEMENTS {
        handover.extend_from_slice(&[0; 3]);
    }
    // DROP_FILES: drop, version, from 0, a million files {"", kind 0, mode 0, size 0, no
    // target, no blocks}.
    let mut files = vec![0; 64];
    varint(0, &mut files);
    varint(ELEMENTS, &mut files);
    for _ in 0..ELEMENTS {
        files.extend_from_slice(&[0; 6]);
    }
    // RUN_REQUEST: run 1, program "x", a million empty arguments, no shell, no folder.
    let mut run = Vec::new();
    varint(1, &mut run);
    run.extend_from_slice(&[1, b'x']);
    varint(ELEMENTS, &mut run);
    run.extend(std::iter::repeat_n(0, ELEMENTS as usize));
    run.extend_from_slice(&[0, 0]);
    // The run's bound: RUN_ARGS_MAX + 1 strings of 24 bytes, about 96 KiB.
    for (code, payload, peak_max) in [
        (Code::CHORD_HANDOVER, handover, 64 * 1024),
        (Code::DROP_FILES, files, 64 * 1024),
        (Code::RUN_REQUEST, run, 256 * 1024),
    ] {
        let (peak, result) = peak_decoding(code, &payload);
        assert!(
            matches!(result, Err(ProtocolError::MalformedPayload { .. })),
            "{code:?}: {result:?}"
        );
        assert!(peak < peak_max, "{code:?}: {peak} bytes at the peak");
    }
}

#[test]
fn a_p2pt_body_of_a_million_nils_is_refused_within_bounded_memory() {
    // The msgpack array py2p's frames carry, of a million nils: one byte each on the wire,
    // 32 in memory as rmpv values.
    let mut body = vec![0xdd];
    body.extend_from_slice(&(ELEMENTS as u32).to_be_bytes());
    body.extend(std::iter::repeat_n(0xc0, ELEMENTS as usize));
    let (peak, result) = peak_of(|| weft_protocol::p2pt::Message::from_msgpack(&body));
    assert!(result.is_err(), "{result:?}");
    assert!(peak < 64 * 1024, "{peak} bytes at the peak");
}
