//! The replication-message fuzz logic, shared by `fuzz_targets/replica_message.rs` and the
//! corpus replay test in `protocol/tests/fuzz_corpus.rs`.
//!
//! Depends only on `weft-protocol`, so the test can include it with `#[path = ...] mod`
//! without pulling in libfuzzer.

use weft_protocol::{
    Code, Family, Frame, Message, ProtocolError, ReplicaMessage, BLOCK_BYTES_MAX,
    HEREIS_DATA_BYTES_MAX, INDEX_ENTRIES_MAX, PATH_BYTES_MAX, WANT_HASHES_MAX,
};

/// The replication family's codes, and one past them (`0x0408`, unassigned).
const CODES: std::ops::RangeInclusive<u16> = 0x0400..=0x0408;

/// Decodes `data` as the payload of every replication code (SPEC.md §22.2) and of the first
/// unassigned one. Panics only if a property below is broken:
///
/// - `0x0408` is `UnknownCommand`; the others decode or fail with `MalformedPayload` (or
///   `DecompressedTooLarge` past `PAYLOAD_BYTES_MAX`), never anything else;
/// - a decoded message has the code it was decoded under, keeps every limit of §22.2, and
///   re-encodes (as a payload, and as a frame plain and compressed) to bytes that decode to the
///   same message;
/// - HEREIS's data is the input's tail, after its header; every other message is strict: one
///   more byte makes it malformed.
pub fn run_replica_message(data: &[u8]) {
    for code in CODES.map(Code) {
        match Message::decode(code, data) {
            Ok(Message::Replica(msg)) => check(code, data, &msg),
            Ok(other) => panic!("{code:?} decoded as {other:?}"),
            Err(ProtocolError::UnknownCommand(c)) => {
                assert_eq!(c, code.0);
                assert!(!code.is_known(), "{code:?} is known but refused");
            }
            Err(ProtocolError::MalformedPayload { code: c, .. }) => assert_eq!(c, code),
            Err(ProtocolError::DecompressedTooLarge { .. }) => {}
            Err(e) => panic!("{code:?}: unexpected error {e:?}"),
        }
    }
}

fn check(code: Code, data: &[u8], msg: &ReplicaMessage<'_>) {
    assert!(code.is_known() && code.family() == Some(Family::Replication));
    assert_eq!(msg.code(), code);
    check_limits(msg);
    let message = Message::Replica(msg.clone());
    let payload = message.encode_payload();
    let again = Message::decode(code, &payload).expect("a re-encoded message decodes");
    assert_eq!(again, message, "payload round trip");
    for compress in [false, true] {
        let frame =
            Frame::parse(message.to_frame(compress).into_bytes()).expect("an encoded frame parses");
        let inflated = frame.payload().expect("an encoded payload inflates");
        let decoded = Message::decode(frame.code(), &inflated).expect("an encoded frame decodes");
        assert_eq!(decoded, message, "frame round trip (compress: {compress})");
    }
    let mut longer = data.to_vec();
    longer.push(0);
    let extended = Message::decode(code, &longer);
    match msg {
        ReplicaMessage::HereIs(h) => {
            assert!(data.ends_with(h.data), "HEREIS data is the payload's tail");
            assert!(
                payload.ends_with(h.data),
                "HEREIS re-encodes its data raw at the end"
            );
            let fits = h.data.len() < HEREIS_DATA_BYTES_MAX
                && u64::from(h.offset) + (h.data.len() as u64) < u64::from(BLOCK_BYTES_MAX);
            match extended {
                Ok(Message::Replica(ReplicaMessage::HereIs(e))) => {
                    assert!(fits);
                    assert_eq!(e.data.len(), h.data.len() + 1);
                    assert_eq!((e.folder, e.hash, e.offset), (h.folder, h.hash, h.offset));
                }
                Ok(other) => panic!("HEREIS decoded as {other:?}"),
                Err(_) => assert!(!fits, "one more data byte refused"),
            }
        }
        _ => assert!(
            matches!(
                extended,
                Err(ProtocolError::MalformedPayload { .. }
                    | ProtocolError::DecompressedTooLarge { .. })
            ),
            "{code:?}: a trailing byte is accepted"
        ),
    }
}

/// What `Message::decode` promises of a replication message it returns.
fn check_limits(msg: &ReplicaMessage<'_>) {
    let text = |s: &str| assert!(s.len() <= PATH_BYTES_MAX);
    match msg {
        ReplicaMessage::List(_) => {}
        ReplicaMessage::IHave(m) => {
            assert!(m.entries.len() <= INDEX_ENTRIES_MAX);
            for e in &m.entries {
                text(&e.path);
                text(&e.target);
                assert!(e.version.is_well_formed());
            }
        }
        ReplicaMessage::IMoved(m) => {
            assert!(m.entries.len() <= INDEX_ENTRIES_MAX);
            for e in &m.entries {
                text(&e.from);
                text(&e.to.path);
                assert!(e.from_version.is_well_formed() && e.to.version.is_well_formed());
            }
        }
        ReplicaMessage::IDeleted(m) => {
            assert!(m.entries.len() <= INDEX_ENTRIES_MAX);
            for e in &m.entries {
                text(&e.path);
                assert!(e.version.is_well_formed());
            }
        }
        ReplicaMessage::IWant(m) => assert!(m.hashes.len() <= WANT_HASHES_MAX),
        ReplicaMessage::NotFound(m) => assert!(m.hashes.len() <= WANT_HASHES_MAX),
        ReplicaMessage::HereIs(h) => {
            assert!(!h.data.is_empty() && h.data.len() <= HEREIS_DATA_BYTES_MAX);
            assert!(u64::from(h.offset) + h.data.len() as u64 <= u64::from(BLOCK_BYTES_MAX));
        }
        ReplicaMessage::IRefuse(r) => text(&r.path),
    }
}
