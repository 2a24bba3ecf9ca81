//! The drop message fuzz logic, shared by `fuzz_targets/drop_message.rs` and the corpus replay
//! test in `protocol/tests/fuzz_corpus.rs`.
//!
//! Depends only on `weft-protocol`, so the test can include it with `#[path = ...] mod`
//! without pulling in libfuzzer.

use weft_protocol::{
    Code, DropMessage, Family, Frame, Message, ProtocolError, RootHasher, DROP_FILES_BATCH_MAX,
    DROP_FILES_MAX, DROP_HEADS_MAX, FILE_BLOCKS_MAX, PATH_BYTES_MAX,
};

/// The drop family's codes, and one past them (`0x0508`, unassigned).
pub const DROP_CODES: std::ops::RangeInclusive<u16> = 0x0500..=0x0508;

/// Decodes `data` as the payload of every drop code (SPEC.md §24.5) and of the first
/// unassigned one. Panics only if a property below is broken:
///
/// - `0x0508` is `UnknownCommand`; the others decode or fail with `MalformedPayload` naming
///   the code (or `DecompressedTooLarge` past `PAYLOAD_BYTES_MAX`), never anything else;
/// - a decoded message has the code it was decoded under, keeps every limit of §24.5, and
///   re-encodes (as a payload, and as a frame plain and compressed) to bytes that decode to the
///   same message, deterministically; one trailing byte makes it malformed;
/// - a decoded manifest's verification and a decoded file list's root hashing return (an
///   error or a value), never panic.
pub fn run_drop_message(data: &[u8]) {
    for code in DROP_CODES.map(Code) {
        match Message::decode(code, data) {
            Ok(Message::Drop(msg)) => check(code, data, &msg),
            Ok(other) => panic!("{code:?} decoded as {other:?}"),
            Err(ProtocolError::UnknownCommand(c)) => {
                assert_eq!(c, code.0);
                assert!(!code.is_known(), "{code:?} is known but refused");
            }
            Err(ProtocolError::MalformedPayload { code: c, .. }) => {
                assert_eq!(c, code);
                assert!(code.is_known(), "{code:?} is unknown but malformed");
            }
            Err(ProtocolError::DecompressedTooLarge { .. }) => {}
            Err(e) => panic!("{code:?}: unexpected error {e:?}"),
        }
    }
}

fn check(code: Code, data: &[u8], msg: &DropMessage) {
    assert!(code.is_known() && code.family() == Some(Family::Drops));
    assert_eq!(msg.code(), code);
    check_limits(msg);
    let message = Message::Drop(msg.clone());
    let payload = message.encode_payload();
    let again = Message::decode(code, &payload).expect("a re-encoded message decodes");
    assert_eq!(again, message, "payload round trip");
    assert_eq!(again.encode_payload(), payload, "encoding is deterministic");
    assert!(
        payload.len() <= data.len(),
        "canonical form is never longer"
    );
    for compress in [false, true] {
        let frame =
            Frame::parse(message.to_frame(compress).into_bytes()).expect("an encoded frame parses");
        let inflated = frame.payload().expect("an encoded payload inflates");
        let decoded = Message::decode(frame.code(), &inflated).expect("an encoded frame decodes");
        assert_eq!(decoded, message, "frame round trip (compress: {compress})");
    }
    let mut longer = data.to_vec();
    longer.push(0);
    assert!(
        matches!(
            Message::decode(code, &longer),
            Err(ProtocolError::MalformedPayload { .. } | ProtocolError::DecompressedTooLarge { .. })
        ),
        "{code:?}: a trailing byte is accepted"
    );
    match msg {
        DropMessage::Version(m) => {
            if let Ok(id) = m.verify() {
                assert_eq!(id, m.version_id());
            }
            let _ = weft_protocol::check_version(m, &[]);
        }
        DropMessage::Files(f) => {
            let mut hasher = RootHasher::new();
            let pushed = f
                .files
                .iter()
                .take_while(|file| hasher.push(file).is_ok())
                .count();
            assert_eq!(hasher.files() as usize, pushed);
            for file in &f.files {
                let encoded = postcard_len(file);
                assert_eq!(file.encoded_len(), encoded, "encoded_len of {file:?}");
            }
        }
        _ => {}
    }
}

/// The length of a file's encoding, measured through a DROP_FILES of that one file: drop 32,
/// version 32, `from` 0 (1 byte), count 1 (1 byte), then the file.
fn postcard_len(file: &weft_protocol::DropFile) -> usize {
    let one = Message::Drop(DropMessage::Files(weft_protocol::DropFiles {
        drop: weft_protocol::DropId::default(),
        version: weft_protocol::VersionId::default(),
        from: 0,
        files: vec![file.clone()],
    }));
    one.encode_payload().len() - 66
}

/// What `Message::decode` promises of a drop message it returns, checked apart from the
/// codec.
fn check_limits(msg: &DropMessage) {
    match msg {
        DropMessage::Heads(h) => {
            assert!(h.heads.len() <= DROP_HEADS_MAX);
            assert!(h.heads.windows(2).all(|w| w[0] < w[1]));
        }
        DropMessage::Version(m) => assert_eq!(m.check_form(), Ok(())),
        DropMessage::Files(f) => {
            assert!(f.files.len() <= DROP_FILES_BATCH_MAX);
            assert!(u64::from(f.from) + f.files.len() as u64 <= u64::from(DROP_FILES_MAX));
            assert!(f.files.windows(2).all(|w| w[0].path < w[1].path));
            for file in &f.files {
                assert!(file.path.len() <= PATH_BYTES_MAX);
                assert!(file
                    .target
                    .as_ref()
                    .is_none_or(|t| t.len() <= PATH_BYTES_MAX));
                assert!(file.blocks.len() <= FILE_BLOCKS_MAX);
            }
        }
        DropMessage::Subscribe(_)
        | DropMessage::Unsubscribe(_)
        | DropMessage::GetVersion(_)
        | DropMessage::GetFiles(_)
        | DropMessage::NotFound(_) => {}
    }
}
