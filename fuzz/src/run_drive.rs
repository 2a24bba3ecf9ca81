//! The remote-run message fuzz logic, shared by `fuzz_targets/run_message.rs` and the corpus
//! replay test in `protocol/tests/fuzz_corpus.rs`.
//!
//! Depends only on `weft-protocol`, so the test can include it with `#[path = ...] mod`
//! without pulling in libfuzzer.

use weft_protocol::{
    Code, Family, Frame, Message, ProtocolError, RunMessage, RUN_ARGS_MAX, RUN_COMMAND_BYTES_MAX,
    RUN_OUTPUT_BYTES_MAX, RUN_REASON_BYTES_MAX,
};

/// The remote-run family's codes, and one past them (`0x0607`, unassigned).
pub const RUN_CODES: std::ops::RangeInclusive<u16> = 0x0600..=0x0607;

/// Decodes `data` as the payload of every remote-run code (SPEC.md §23.2) and of the first
/// unassigned one. Panics only if a property below is broken:
///
/// - `0x0607` is `UnknownCommand`; the others decode or fail with `MalformedPayload` naming
///   the code (or `DecompressedTooLarge` past `PAYLOAD_BYTES_MAX`), never anything else;
/// - a decoded message has the code it was decoded under, keeps every limit of §23.2, and
///   re-encodes (as a payload, and as a frame plain and compressed) to bytes that decode to the
///   same message;
/// - RUN_OUTPUT's bytes are the input's tail, after its header; every other message is
///   strict: one more byte makes it malformed.
pub fn run_run_message(data: &[u8]) {
    for code in RUN_CODES.map(Code) {
        match Message::decode(code, data) {
            Ok(Message::Run(msg)) => check(code, data, &msg),
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

fn check(code: Code, data: &[u8], msg: &RunMessage<'_>) {
    assert!(code.is_known() && code.family() == Some(Family::Remote));
    assert_eq!(msg.code(), code);
    check_limits(msg);
    let message = Message::Run(msg.clone());
    let payload = message.encode_payload();
    let again = Message::decode(code, &payload).expect("a re-encoded message decodes");
    assert_eq!(again, message, "payload round trip");
    assert_eq!(again.encode_payload(), payload, "encoding is deterministic");
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
        RunMessage::Output(o) => {
            assert!(
                data.ends_with(o.data),
                "RUN_OUTPUT's bytes are the payload's tail"
            );
            assert!(
                payload.ends_with(o.data),
                "RUN_OUTPUT re-encodes its bytes raw"
            );
            let fits = o.data.len() < RUN_OUTPUT_BYTES_MAX;
            match extended {
                Ok(Message::Run(RunMessage::Output(e))) => {
                    assert!(fits);
                    assert_eq!(e.data.len(), o.data.len() + 1);
                    assert_eq!((e.run, e.seq, e.stream), (o.run, o.seq, o.stream));
                }
                Ok(other) => panic!("RUN_OUTPUT decoded as {other:?}"),
                Err(_) => assert!(!fits, "one more output byte refused"),
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

/// What `Message::decode` promises of a remote-run message it returns, checked apart from
/// the codec.
fn check_limits(msg: &RunMessage<'_>) {
    match msg {
        RunMessage::Request(r) => {
            assert!(!r.program.is_empty());
            assert!(r.args.len() <= RUN_ARGS_MAX);
            let bytes = r.program.len() + r.args.iter().map(String::len).sum::<usize>();
            assert!(bytes <= RUN_COMMAND_BYTES_MAX);
            assert!(!r.program.contains('\0') && r.args.iter().all(|a| !a.contains('\0')));
        }
        RunMessage::Refused(r) => assert!(r.text.len() <= RUN_REASON_BYTES_MAX),
        RunMessage::Output(o) => {
            assert!(!o.data.is_empty() && o.data.len() <= RUN_OUTPUT_BYTES_MAX)
        }
        RunMessage::Started(_)
        | RunMessage::Ack(_)
        | RunMessage::Signal(_)
        | RunMessage::Exit(_) => {}
    }
}
