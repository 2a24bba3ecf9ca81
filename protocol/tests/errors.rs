//! One test per `ProtocolError` variant. Every test writes the offending bytes out by hand (no
//! encoder involved) and asserts the exact variant, with its fields, that the codec returns.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use common::{raw_frame, string, varint};
use weft_protocol::compress::{compress_if_smaller, decompress};
use weft_protocol::frame::check_length;
use weft_protocol::{
    ByeReason, Code, Frame, FrameDecoder, Message, ProtocolError, ADDR_BYTES_MAX,
    DIGEST_ENTRIES_MAX, FRAME_BODY_BYTES_MAX, HEADER_BYTES, PAYLOAD_BYTES_MAX,
    PEERS_PER_MESSAGE_MAX, RANGES_PER_ENTRY_MAX, WANT_RANGES_MAX,
};

/// Tracks, per thread, the largest single allocation, so that tests can show that hostile sizes
/// are refused before anything is allocated for them.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f`, returning its result and the largest single allocation made meanwhile on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(|l| l.get()))
}

/// A well-formed version-1 uncompressed frame around `payload`.
fn plain(code: Code, payload: &[u8]) -> Vec<u8> {
    raw_frame(1, 0, code.0, payload)
}

/// A well-formed version-1 frame with the compressed flag around `payload` (taken as is).
fn compressed(code: Code, payload: &[u8]) -> Vec<u8> {
    raw_frame(1, 1, code.0, payload)
}

/// Runs bytes through the whole receive path: parse the frame, inflate, decode the message.
fn decode_frame(bytes: &[u8]) -> Result<(), ProtocolError> {
    let frame = Frame::parse(Bytes::copy_from_slice(bytes))?;
    let payload = frame.payload()?;
    Message::decode(frame.code(), &payload).map(drop)
}

/// The same bytes pushed into a `FrameDecoder` in one piece; end of input means `finish()`.
fn decode_stream(bytes: &[u8]) -> Result<(), ProtocolError> {
    let mut dec = FrameDecoder::new();
    dec.push(Bytes::copy_from_slice(bytes));
    match dec.next_frame()? {
        Some(frame) => {
            assert_eq!(dec.next_frame(), Ok(None), "one frame only");
            let payload = frame.payload()?;
            Message::decode(frame.code(), &payload).map(drop)
        }
        None => {
            dec.finish()?;
            panic!("input was not empty, yet the decoder holds nothing")
        }
    }
}

/// Both receive paths give exactly `expected`.
#[track_caller]
fn assert_both(bytes: &[u8], expected: ProtocolError) {
    assert_eq!(
        decode_frame(bytes),
        Err(expected.clone()),
        "Frame::parse path"
    );
    assert_eq!(decode_stream(bytes), Err(expected), "FrameDecoder path");
}

fn malformed(code: Code, reason: &'static str) -> ProtocolError {
    ProtocolError::MalformedPayload { code, reason }
}

const ID_A: [u8; 32] = [0xAA; 32];

/// Postcard bytes of a cascade id: 32 raw origin bytes then the varint counter.
fn cascade(seq: u64) -> Vec<u8> {
    let mut out = ID_A.to_vec();
    out.extend_from_slice(&varint(seq));
    out
}

/// Postcard bytes of a HELLO with the given listen address bytes (None: no address).
fn hello_payload(listen_addr: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&[0x01; 32]); // network
    out.extend_from_slice(&[0x02; 32]); // public key
    out.extend_from_slice(&[0x03; 32]); // nonce
    out.extend_from_slice(&varint(7)); // incarnation
    match listen_addr {
        None => out.push(0),
        Some(a) => {
            out.push(1);
            out.extend_from_slice(&string(a));
        }
    }
    out.extend_from_slice(&varint(1)); // capabilities
    out.extend_from_slice(&varint(0b1111)); // families
    out.push(0); // dedicated: none
    out
}

/// Postcard bytes of one `PeerInfo`.
fn peer(addr: &[u8]) -> Vec<u8> {
    let mut out = [0xBB; 32].to_vec();
    out.extend_from_slice(&string(addr));
    out
}

/// Postcard bytes of a `SeqRange`: two varints, written as given (valid or not).
fn range(first: u64, last: u64) -> Vec<u8> {
    [varint(first), varint(last)].concat()
}

/// Postcard bytes of one `DigestEntry` for origin `ID_A`, incarnation 4, with these ranges.
fn digest_entry(ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut out = ID_A.to_vec();
    out.extend_from_slice(&varint(4));
    out.extend_from_slice(&varint(ranges.len() as u64));
    for &(first, last) in ranges {
        out.extend_from_slice(&range(first, last));
    }
    out
}

/// Postcard bytes of a MESH_DIGEST: the entry count, then the entries as written.
fn digest(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = varint(entries.len() as u64);
    for e in entries {
        out.extend_from_slice(e);
    }
    out
}

/// Postcard bytes of a MESH_WANT: the count, then per want origin `ID_A`, incarnation 4 and
/// the range as written.
fn want(ranges: &[(u64, u64)]) -> Vec<u8> {
    let mut out = varint(ranges.len() as u64);
    for &(first, last) in ranges {
        out.extend_from_slice(&ID_A);
        out.extend_from_slice(&varint(4));
        out.extend_from_slice(&range(first, last));
    }
    out
}

/// Postcard bytes of a BROADCAST or MESH_REPAIR (the same fields) with sequence `seq`.
fn broadcast(seq: u64) -> Vec<u8> {
    let mut b = ID_A.to_vec();
    b.extend_from_slice(&varint(3)); // incarnation
    b.extend_from_slice(&varint(seq));
    b.extend_from_slice(&string(b"data"));
    b.push(0); // no origin proof
    b
}

const DIGEST_INVALID: &str = "digest over its limits or with an invalid range";
const WANT_INVALID: &str = "want list over its limit or with an invalid range";

// ---------------------------------------------------------------------------------------------
// FrameTooLarge

#[test]
fn frame_too_large() {
    let len = FRAME_BODY_BYTES_MAX as u32 + 1;
    let expected = ProtocolError::FrameTooLarge {
        len: len as u64,
        max: FRAME_BODY_BYTES_MAX as u64,
    };
    // The prefix alone is enough to refuse.
    let prefix = len.to_be_bytes();
    assert_both(&prefix, expected.clone());
    // So is a whole header carrying it.
    let mut header = prefix.to_vec();
    header.extend_from_slice(&[1, 0, 0, 3]);
    assert_both(&header, expected.clone());
    assert_eq!(check_length(prefix), Err(expected));

    // The largest allowed body is not refused: it is merely incomplete.
    let max = (FRAME_BODY_BYTES_MAX as u32).to_be_bytes();
    assert_eq!(check_length(max), Ok(4 + FRAME_BODY_BYTES_MAX));
    let mut header = max.to_vec();
    header.extend_from_slice(&[1, 0, 0x01, 0x00]);
    assert_both(
        &header,
        ProtocolError::Truncated {
            needed: 4 + FRAME_BODY_BYTES_MAX,
            have: HEADER_BYTES,
        },
    );
}

#[test]
fn four_gib_length_prefix_is_refused_after_four_bytes() {
    let prefix = u32::MAX.to_be_bytes();
    let expected = ProtocolError::FrameTooLarge {
        len: u32::MAX as u64,
        max: FRAME_BODY_BYTES_MAX as u64,
    };

    // Byte by byte: nothing to say for three bytes, refused on the fourth, and nothing sized
    // after the announced length is ever allocated.
    let mut dec = FrameDecoder::new();
    let ((), largest) = largest_allocation(|| {
        for (i, b) in prefix.iter().enumerate() {
            dec.push(Bytes::copy_from_slice(&[*b]));
            let got = dec.next_frame();
            if i < 3 {
                assert_eq!(got, Ok(None), "after {} bytes", i + 1);
                assert_eq!(dec.buffered_len(), i + 1);
            } else {
                assert_eq!(got, Err(expected.clone()));
            }
        }
    });
    assert!(largest < 1024, "allocated {largest} bytes");
    assert_eq!(dec.buffered_len(), 0, "nothing kept after the refusal");
    assert!(dec.next_frame().is_err(), "the stream stays failed");

    // All four at once.
    let mut dec = FrameDecoder::new();
    dec.push(Bytes::copy_from_slice(&prefix));
    assert_eq!(dec.next_frame(), Err(expected.clone()));
    assert_eq!(dec.buffered_len(), 0);

    // Four bytes behind a good frame in the same chunk: the good frame comes out first.
    let mut stream = plain(Code::PING, &varint(5));
    stream.extend_from_slice(&prefix);
    let mut dec = FrameDecoder::new();
    dec.push(Bytes::from(stream));
    let first = dec.next_frame().unwrap().expect("the PING frame");
    assert_eq!(first.code(), Code::PING);
    assert_eq!(dec.next_frame(), Err(expected));
}

// ---------------------------------------------------------------------------------------------
// FrameTooShort

#[test]
fn frame_too_short() {
    for len in 0u32..4 {
        assert_both(
            &len.to_be_bytes(),
            ProtocolError::FrameTooShort { len, min: 4 },
        );
        // Refused even with more bytes behind it.
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1, 0, 0, 3, 9, 9]);
        assert_eq!(
            Frame::parse(Bytes::from(bytes)),
            Err(ProtocolError::FrameTooShort { len, min: 4 })
        );
    }
    // A body of exactly the header's four bytes is a frame (with an empty payload).
    let frame = Frame::parse(Bytes::from(plain(Code::PING, &[]))).unwrap();
    assert!(frame.wire_payload().is_empty());
}

// ---------------------------------------------------------------------------------------------
// UnknownCommand

#[test]
fn unknown_command() {
    // 0x01FF, 0x0204, 0x0508: unassigned in a known family; 0x0700: none.
    for code in [
        0x0000u16, 0x0006, 0x0013, 0x01FF, 0x0204, 0x0508, 0x0700, 0xFFFF,
    ] {
        assert_both(
            &raw_frame(1, 0, code, &[0]),
            ProtocolError::UnknownCommand(code),
        );
        assert_eq!(
            Message::decode(Code(code), &[0]),
            Err(ProtocolError::UnknownCommand(code))
        );
    }
}

// ---------------------------------------------------------------------------------------------
// UnsupportedVersion

#[test]
fn unsupported_version() {
    for version in [0u8, 2, 0x7F, 0xFF] {
        assert_both(
            &raw_frame(version, 0, Code::PING.0, &varint(1)),
            ProtocolError::UnsupportedVersion(version),
        );
    }
    // The header alone is enough: eight bytes, no payload yet.
    let header = &raw_frame(2, 0, Code::BROADCAST.0, &[0; 40])[..HEADER_BYTES];
    let mut dec = FrameDecoder::new();
    dec.push(Bytes::copy_from_slice(header));
    assert_eq!(dec.next_frame(), Err(ProtocolError::UnsupportedVersion(2)));
}

// ---------------------------------------------------------------------------------------------
// ReservedFlags

#[test]
fn reserved_flags() {
    for flags in [0x02u8, 0x04, 0x80, 0x81, 0xFE, 0xFF] {
        assert_both(
            &raw_frame(1, flags, Code::PING.0, &varint(1)),
            ProtocolError::ReservedFlags(flags),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Truncated

#[test]
fn truncated_frame() {
    let whole = plain(Code::PING, &varint(300)); // 8 + 2 bytes
    assert_eq!(whole.len(), 10);
    // Inside the header (but past a valid length prefix, or before it).
    for have in 1..HEADER_BYTES {
        assert_both(
            &whole[..have],
            ProtocolError::Truncated {
                needed: HEADER_BYTES,
                have,
            },
        );
    }
    // Inside the payload.
    assert_both(
        &whole[..9],
        ProtocolError::Truncated {
            needed: 10,
            have: 9,
        },
    );
    // Nothing at all: Frame::parse has no header, the stream simply ended cleanly.
    assert_eq!(
        Frame::parse(Bytes::new()),
        Err(ProtocolError::Truncated {
            needed: HEADER_BYTES,
            have: 0
        })
    );
    assert_eq!(FrameDecoder::new().finish(), Ok(()));
}

#[test]
fn truncated_compressed_payload() {
    // A compressed payload must at least hold its 4-byte decompressed length.
    for have in 0..4 {
        assert_both(
            &compressed(Code::BROADCAST, &[0u8; 3][..have]),
            ProtocolError::Truncated { needed: 4, have },
        );
    }
}

// ---------------------------------------------------------------------------------------------
// MalformedPayload

#[test]
fn malformed_truncated_field() {
    // PING with no nonce at all.
    assert_both(
        &plain(Code::PING, &[]),
        malformed(Code::PING, "payload ends inside a field"),
    );
    // PING whose varint says "more bytes follow" and stops.
    assert_both(
        &plain(Code::PING, &[0x80]),
        malformed(Code::PING, "payload ends inside a field"),
    );
    // HELLO_ACK with 63 of the signature's 64 bytes.
    assert_both(
        &plain(Code::HELLO_ACK, &[0x55; 63]),
        malformed(Code::HELLO_ACK, "payload ends inside a field"),
    );
    // HELLO cut in the middle of its listen address.
    let full = hello_payload(Some(b"10.0.0.1:4000"));
    assert_both(
        &plain(Code::HELLO, &full[..full.len() - 4]),
        malformed(Code::HELLO, "payload ends inside a field"),
    );
    // BROADCAST whose byte string announces more than is there.
    let mut b = ID_A.to_vec();
    b.extend_from_slice(&varint(1));
    b.extend_from_slice(&varint(1));
    b.extend_from_slice(&varint(10));
    b.extend_from_slice(b"short");
    assert_both(
        &plain(Code::BROADCAST, &b),
        malformed(Code::BROADCAST, "payload ends inside a field"),
    );
    // A frame that parses fine but whose payload is cut is still that frame's code.
    assert!(Frame::parse(Bytes::from(plain(Code::BROADCAST, &b))).is_ok());
}

#[test]
fn malformed_bad_utf8_in_an_address() {
    assert_both(
        &plain(Code::HELLO, &hello_payload(Some(&[b'a', 0xFF, 0xFE, b'b']))),
        malformed(Code::HELLO, "string is not UTF-8"),
    );
    // In a peer's address inside ICANSEE.
    let mut m = cascade(1);
    m.push(3); // hops_left
    m.push(0); // origin_addr: None
    m.extend_from_slice(&varint(1));
    m.extend_from_slice(&peer(&[0xC3, 0x28])); // invalid 2-byte sequence
    assert_both(
        &plain(Code::ICANSEE, &m),
        malformed(Code::ICANSEE, "string is not UTF-8"),
    );
}

#[test]
fn malformed_trailing_bytes() {
    let mut p = varint(5);
    p.push(0);
    assert_both(
        &plain(Code::PONG, &p),
        malformed(Code::PONG, "trailing bytes after the message"),
    );
    let mut p = hello_payload(None);
    p.extend_from_slice(b"extra");
    assert_both(
        &plain(Code::HELLO, &p),
        malformed(Code::HELLO, "trailing bytes after the message"),
    );
    // BYE with a second reason behind the first.
    assert_both(
        &plain(Code::BYE, &[0, 0]),
        malformed(Code::BYE, "trailing bytes after the message"),
    );
    // Bytes after the frame's announced end are refused by Frame::parse (a FrameDecoder would
    // take them as the start of the next frame instead).
    let mut f = plain(Code::PING, &varint(5));
    f.push(0);
    assert_eq!(
        Frame::parse(Bytes::from(f)),
        Err(malformed(Code::PING, "bytes after the frame's end"))
    );
}

#[test]
fn malformed_unknown_enum_variant() {
    // ByeReason has variants 0..=9.
    assert_eq!(
        Message::decode(Code::BYE, &[9]),
        Ok(Message::Bye(ByeReason::StaleIncarnation))
    );
    for index in [10u64, 127, 128, 1 << 20] {
        let bytes = plain(Code::BYE, &varint(index));
        let err = decode_frame(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                ProtocolError::MalformedPayload {
                    code: Code::BYE,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(decode_stream(&bytes), Err(err));
    }
}

#[test]
fn malformed_bad_option_tag() {
    let mut p = hello_payload(None);
    p[32 * 3 + 1] = 2; // the listen_addr tag: neither 0 (None) nor 1 (Some)
    assert_both(
        &plain(Code::HELLO, &p),
        malformed(Code::HELLO, "bad option tag"),
    );
}

#[test]
fn malformed_over_limit_peer_list() {
    let list = |n: usize, addr: &[u8]| {
        let mut m = cascade(9);
        m.push(2); // hops_left
        m.push(0); // origin_addr: None
        m.extend_from_slice(&varint(n as u64));
        for _ in 0..n {
            m.extend_from_slice(&peer(addr));
        }
        m
    };
    // At the limit: fine.
    assert!(decode_frame(&plain(Code::ICANSEE, &list(PEERS_PER_MESSAGE_MAX, b"a:1"))).is_ok());
    // One over.
    assert_both(
        &plain(Code::ICANSEE, &list(PEERS_PER_MESSAGE_MAX + 1, b"a:1")),
        malformed(Code::ICANSEE, "peer list or address over its limit"),
    );
    // IKNOWABOUT has no origin_addr field.
    let mut m = cascade(9);
    m.push(2);
    m.extend_from_slice(&varint(PEERS_PER_MESSAGE_MAX as u64 + 1));
    for _ in 0..=PEERS_PER_MESSAGE_MAX {
        m.extend_from_slice(&peer(b"b:2"));
    }
    assert_both(
        &plain(Code::IKNOWABOUT, &m),
        malformed(Code::IKNOWABOUT, "peer list or address over its limit"),
    );
}

#[test]
fn malformed_over_limit_address() {
    let long = vec![b'x'; ADDR_BYTES_MAX + 1];
    let ok = vec![b'x'; ADDR_BYTES_MAX];
    assert!(decode_frame(&plain(Code::HELLO, &hello_payload(Some(&ok)))).is_ok());
    assert_both(
        &plain(Code::HELLO, &hello_payload(Some(&long))),
        malformed(Code::HELLO, "listen address longer than ADDR_BYTES_MAX"),
    );
    // A peer address over the limit in IKNOWABOUT.
    let mut m = cascade(1);
    m.push(0);
    m.extend_from_slice(&varint(1));
    m.extend_from_slice(&peer(&long));
    assert_both(
        &plain(Code::IKNOWABOUT, &m),
        malformed(Code::IKNOWABOUT, "peer list or address over its limit"),
    );
    // ICANSEE's own origin address over the limit.
    let mut m = cascade(1);
    m.push(0);
    m.push(1);
    m.extend_from_slice(&string(&long));
    m.extend_from_slice(&varint(0));
    assert_both(
        &plain(Code::ICANSEE, &m),
        malformed(Code::ICANSEE, "peer list or address over its limit"),
    );
}

#[test]
fn malformed_broadcast_seq_zero() {
    assert!(decode_frame(&plain(Code::BROADCAST, &broadcast(1))).is_ok());
    assert_both(
        &plain(Code::BROADCAST, &broadcast(0)),
        malformed(Code::BROADCAST, "broadcast sequence 0"),
    );
}

#[test]
fn malformed_mesh_repair_seq_zero() {
    assert!(decode_frame(&plain(Code::MESH_REPAIR, &broadcast(1))).is_ok());
    assert_both(
        &plain(Code::MESH_REPAIR, &broadcast(0)),
        malformed(Code::MESH_REPAIR, "broadcast sequence 0"),
    );
}

#[test]
fn malformed_over_limit_digest_entries() {
    let entries = |n: usize| vec![digest_entry(&[(1, 1)]); n];
    // At the limit: fine.
    let ok = digest(&entries(DIGEST_ENTRIES_MAX));
    assert!(decode_frame(&plain(Code::MESH_DIGEST, &ok)).is_ok());
    // One over.
    assert_both(
        &plain(Code::MESH_DIGEST, &digest(&entries(DIGEST_ENTRIES_MAX + 1))),
        malformed(Code::MESH_DIGEST, DIGEST_INVALID),
    );
    // Also when every entry is empty.
    assert_both(
        &plain(
            Code::MESH_DIGEST,
            &digest(&vec![digest_entry(&[]); DIGEST_ENTRIES_MAX + 1]),
        ),
        malformed(Code::MESH_DIGEST, DIGEST_INVALID),
    );
}

#[test]
fn malformed_over_limit_ranges_per_entry() {
    let ranges = |n: u64| (0..n).map(|i| (2 * i + 1, 2 * i + 1)).collect::<Vec<_>>();
    let at_limit = digest_entry(&ranges(RANGES_PER_ENTRY_MAX as u64));
    let over = digest_entry(&ranges(RANGES_PER_ENTRY_MAX as u64 + 1));
    let ok = digest(std::slice::from_ref(&at_limit));
    assert!(decode_frame(&plain(Code::MESH_DIGEST, &ok)).is_ok());
    // Alone, or behind an entry at the limit.
    assert_both(
        &plain(Code::MESH_DIGEST, &digest(std::slice::from_ref(&over))),
        malformed(Code::MESH_DIGEST, DIGEST_INVALID),
    );
    assert_both(
        &plain(Code::MESH_DIGEST, &digest(&[at_limit, over])),
        malformed(Code::MESH_DIGEST, DIGEST_INVALID),
    );
}

#[test]
fn malformed_digest_range_first_after_last() {
    // The edges that are fine: a single number, and the whole space.
    let ok = digest(&[digest_entry(&[(1, 1), (5, 5), (7, u64::MAX)])]);
    assert!(decode_frame(&plain(Code::MESH_DIGEST, &ok)).is_ok());
    for bad in [(5, 4), (2, 1), (u64::MAX, u64::MAX - 1), (u64::MAX, 1)] {
        // As the only range, and as the last range of a second entry.
        assert_both(
            &plain(Code::MESH_DIGEST, &digest(&[digest_entry(&[bad])])),
            malformed(Code::MESH_DIGEST, DIGEST_INVALID),
        );
        assert_both(
            &plain(
                Code::MESH_DIGEST,
                &digest(&[digest_entry(&[(1, 3)]), digest_entry(&[(1, 2), bad])]),
            ),
            malformed(Code::MESH_DIGEST, DIGEST_INVALID),
        );
    }
}

#[test]
fn malformed_digest_range_first_zero() {
    for bad in [(0, 0), (0, 1), (0, u64::MAX)] {
        assert_both(
            &plain(Code::MESH_DIGEST, &digest(&[digest_entry(&[bad])])),
            malformed(Code::MESH_DIGEST, DIGEST_INVALID),
        );
        assert_both(
            &plain(
                Code::MESH_DIGEST,
                &digest(&[digest_entry(&[bad, (1, 2)]), digest_entry(&[(3, 4)])]),
            ),
            malformed(Code::MESH_DIGEST, DIGEST_INVALID),
        );
    }
}

#[test]
fn malformed_over_limit_want_list() {
    let ranges = |n: u64| (1..=n).map(|i| (i, i)).collect::<Vec<_>>();
    // At the limit: fine.
    let ok = want(&ranges(WANT_RANGES_MAX as u64));
    assert!(decode_frame(&plain(Code::MESH_WANT, &ok)).is_ok());
    assert_both(
        &plain(Code::MESH_WANT, &want(&ranges(WANT_RANGES_MAX as u64 + 1))),
        malformed(Code::MESH_WANT, WANT_INVALID),
    );
}

#[test]
fn malformed_want_invalid_range() {
    let ok = want(&[(1, 1), (2, u64::MAX)]);
    assert!(decode_frame(&plain(Code::MESH_WANT, &ok)).is_ok());
    for bad in [(5, 4), (u64::MAX, 1), (0, 0), (0, 7)] {
        assert_both(
            &plain(Code::MESH_WANT, &want(&[bad])),
            malformed(Code::MESH_WANT, WANT_INVALID),
        );
        assert_both(
            &plain(Code::MESH_WANT, &want(&[(1, 2), (3, 3), bad])),
            malformed(Code::MESH_WANT, WANT_INVALID),
        );
    }
}

#[test]
fn malformed_mesh_messages_truncated_or_trailing() {
    let ok = plain(Code::MESH_WANT, &want(&[(1, 2)]));
    let whole = want(&[(1, 2)]);
    assert!(decode_frame(&ok).is_ok());
    // Cut inside the range.
    assert_both(
        &plain(Code::MESH_WANT, &whole[..whole.len() - 1]),
        malformed(Code::MESH_WANT, "payload ends inside a field"),
    );
    // A digest announcing more entries than are there.
    let mut short = digest(&[digest_entry(&[(1, 2)])]);
    short[0] = 2;
    assert_both(
        &plain(Code::MESH_DIGEST, &short),
        malformed(Code::MESH_DIGEST, "payload ends inside a field"),
    );
    // A range count that says more follow, then nothing.
    let mut short = digest(&[digest_entry(&[(1, 2)])]);
    short.truncate(short.len() - 2);
    assert_both(
        &plain(Code::MESH_DIGEST, &short),
        malformed(Code::MESH_DIGEST, "payload ends inside a field"),
    );
    // Trailing bytes after each.
    for (code, mut p) in [
        (Code::MESH_DIGEST, digest(&[digest_entry(&[(1, 2)])])),
        (Code::MESH_WANT, whole.clone()),
        (Code::MESH_REPAIR, broadcast(1)),
    ] {
        p.push(0);
        assert_both(
            &plain(code, &p),
            malformed(code, "trailing bytes after the message"),
        );
    }
    // A repair whose payload announces more bytes than are there.
    let mut b = broadcast(1);
    b.truncate(b.len() - 2);
    assert_both(
        &plain(Code::MESH_REPAIR, &b),
        malformed(Code::MESH_REPAIR, "payload ends inside a field"),
    );
    // An origin proof tag other than 0 or 1, and a proof cut short.
    let mut b = broadcast(1);
    *b.last_mut().unwrap() = 2;
    assert_both(
        &plain(Code::BROADCAST, &b),
        malformed(Code::BROADCAST, "bad option tag"),
    );
    *b.last_mut().unwrap() = 1;
    b.extend_from_slice(&[7; 95]);
    assert_both(
        &plain(Code::BROADCAST, &b),
        malformed(Code::BROADCAST, "payload ends inside a field"),
    );
    b.push(7);
    assert!(decode_frame(&plain(Code::BROADCAST, &b)).is_ok());
}

#[test]
fn huge_announced_counts_fail_without_huge_allocations() {
    // A few bytes announcing 2^62 digest entries, want ranges, or ranges in one entry.
    let mut entry_count = varint(1);
    entry_count.extend_from_slice(&ID_A);
    entry_count.extend_from_slice(&varint(4));
    entry_count.extend_from_slice(&varint(1 << 62));
    for (code, p) in [
        (Code::MESH_DIGEST, varint(1 << 62)),
        (Code::MESH_WANT, varint(1 << 62)),
        (Code::MESH_DIGEST, entry_count),
    ] {
        let bytes = plain(code, &p);
        let (got, largest) = largest_allocation(|| decode_frame(&bytes));
        assert_eq!(got, Err(malformed(code, "payload ends inside a field")));
        assert!(largest < 1024, "{code:?}: allocated {largest} bytes");
        assert_eq!(
            decode_stream(&bytes),
            Err(malformed(code, "payload ends inside a field"))
        );
    }
}

#[test]
fn malformed_bad_varint() {
    // Eleven continuation bytes: longer than any u64 varint.
    assert_both(
        &plain(Code::PING, &[0xFF; 11]),
        malformed(Code::PING, "bad varint"),
    );
}

// ---------------------------------------------------------------------------------------------
// DecompressedTooLarge

#[test]
fn decompressed_too_large() {
    for size in [PAYLOAD_BYTES_MAX as u32 + 1, u32::MAX] {
        let mut p = size.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x1F, 0x00, 0x01, 0x00]); // a few block bytes, never looked at
        let expected = ProtocolError::DecompressedTooLarge {
            size: size as u64,
            max: PAYLOAD_BYTES_MAX as u64,
        };
        assert_both(&compressed(Code::BROADCAST, &p), expected.clone());
        let (got, largest) = largest_allocation(|| decompress(&p));
        assert_eq!(got, Err(expected));
        assert!(largest < 1024, "allocated {largest} bytes");
    }
    // An uncompressed payload over the cap handed straight to the message decoder.
    let big = vec![0u8; PAYLOAD_BYTES_MAX + 1];
    assert_eq!(
        Message::decode(Code::BROADCAST, &big),
        Err(ProtocolError::DecompressedTooLarge {
            size: big.len() as u64,
            max: PAYLOAD_BYTES_MAX as u64,
        })
    );
}

// ---------------------------------------------------------------------------------------------
// BadCompression

#[test]
fn bad_compression() {
    // Announces 100 bytes; the block is a token promising 15+ literals then nothing.
    let mut p = 100u32.to_be_bytes().to_vec();
    p.extend_from_slice(&[0xF0, 0xFF]);
    assert_both(
        &compressed(Code::BROADCAST, &p),
        ProtocolError::BadCompression,
    );

    // A valid block, but it inflates to fewer bytes than announced.
    let payload = [0x42u8; 300];
    let packed = compress_if_smaller(&payload).expect("compressible");
    assert_eq!(&packed[..4], &300u32.to_be_bytes());
    let mut lying = packed.clone();
    lying[..4].copy_from_slice(&301u32.to_be_bytes());
    assert_both(
        &compressed(Code::BROADCAST, &lying),
        ProtocolError::BadCompression,
    );
    // ... or to more bytes than announced.
    let mut lying = packed.clone();
    lying[..4].copy_from_slice(&199u32.to_be_bytes());
    assert_both(
        &compressed(Code::BROADCAST, &lying),
        ProtocolError::BadCompression,
    );

    // A bomb: the maximum size announced with an 8-byte block, refused before allocating.
    let mut bomb = (PAYLOAD_BYTES_MAX as u32).to_be_bytes().to_vec();
    bomb.extend_from_slice(&[0u8; 8]);
    assert_both(
        &compressed(Code::BROADCAST, &bomb),
        ProtocolError::BadCompression,
    );
    let (got, largest) = largest_allocation(|| decompress(&bomb));
    assert_eq!(got, Err(ProtocolError::BadCompression));
    assert!(largest < 1024, "allocated {largest} bytes for the bomb");

    // The untouched packing inflates fine (so the failures above come from the edits).
    assert_eq!(decompress(&packed).unwrap(), payload);
    // An lz4 match whose offset points before the start of the output.
    let mut p = 20u32.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x1F, b'a', 0x10, 0x00, 0x00]);
    assert_both(&compressed(Code::PING, &p), ProtocolError::BadCompression);
}
