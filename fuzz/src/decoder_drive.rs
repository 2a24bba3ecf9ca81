//! The frame-decoder fuzz logic, shared by `fuzz_targets/frame_decoder.rs` and the corpus
//! replay tests in `protocol/tests/fuzz_corpus.rs` and `engine/tests/fuzz_corpus.rs`.
//!
//! Depends only on `weft-protocol` and `bytes`, so the tests can include it with
//! `#[path = ...] mod` without pulling in libfuzzer.

use bytes::Bytes;
use weft_protocol::{Frame, FrameDecoder, Message, ProtocolError};

/// Most piece sizes the input may name before its stream starts.
const SIZES_MAX: usize = 8;

/// Splits `data` into pieces, pushes them into a [`FrameDecoder`] and pulls frames until it
/// needs more bytes or fails; decodes every frame's payload and message. Also
/// [`Frame::parse`]s the whole input. Panics only if a property below is broken.
///
/// Input layout: byte 0 names how many piece-size bytes follow (`data[0] % 9`); each of those
/// is a piece size (0 is read as 1, sizes are used in turn, cycling); the rest is the stream.
/// With no size byte the whole stream is one piece.
pub fn run_frame_decoder(data: &[u8]) {
    // Frame::parse on the whole input: never panics; on success, a consistent frame.
    if let Ok(frame) = Frame::parse(Bytes::copy_from_slice(data)) {
        assert_eq!(frame.bytes().as_ref(), data);
        check_frame(&frame);
    }

    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count) % (SIZES_MAX + 1);
    let (sizes, stream) = rest.split_at(count.min(rest.len()));
    let stream = Bytes::copy_from_slice(stream);

    let mut decoder = FrameDecoder::new();
    let mut pushed = 0;
    let mut consumed = 0;
    let mut failed = false;
    let mut piece = 0;
    while pushed < stream.len() {
        let size = match sizes.get(piece % sizes.len().max(1)) {
            Some(&s) => usize::from(s).max(1),
            None => stream.len(),
        };
        piece += 1;
        let end = (pushed + size).min(stream.len());
        decoder.push(stream.slice(pushed..end));
        pushed = end;
        if !failed {
            failed = !pull(&mut decoder, &stream, &mut consumed);
        }
    }
    // The decoder never returns a frame the stream did not contain, in order.
    assert!(consumed <= pushed);
    if !failed {
        assert_eq!(
            decoder.buffered_len(),
            pushed - consumed,
            "the decoder holds exactly the bytes it has not returned"
        );
        match decoder.finish() {
            Ok(()) => assert_eq!(consumed, pushed),
            Err(ProtocolError::Truncated { needed, have }) => {
                assert_eq!(have, pushed - consumed);
                assert!(needed > have, "truncated: needs {needed}, has {have}");
            }
            Err(e) => panic!("finish returned {e:?}"),
        }
    }
}

/// Pulls frames until `Ok(None)` (returns true) or an error (returns false). Every frame must
/// be the next slice of `stream`.
fn pull(decoder: &mut FrameDecoder, stream: &Bytes, consumed: &mut usize) -> bool {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => {
                let len = frame.bytes().len();
                assert_eq!(
                    frame.bytes().as_ref(),
                    &stream[*consumed..*consumed + len],
                    "a frame that is not the next bytes of the stream"
                );
                *consumed += len;
                check_frame(&frame);
            }
            Ok(None) => return true,
            Err(_) => {
                assert_eq!(decoder.buffered_len(), 0, "nothing kept after an error");
                assert!(decoder.next_frame().is_err(), "an error is final");
                return false;
            }
        }
    }
}

/// A frame re-parses as itself; its payload and message decode without panicking; a decoded
/// message re-encodes (plain and compressed) to a frame that decodes to the same message.
fn check_frame(frame: &Frame) {
    let reparsed = Frame::parse(frame.bytes().clone()).expect("a decoded frame re-parses");
    assert_eq!(&reparsed, frame);
    let Ok(payload) = frame.payload() else {
        return;
    };
    let Ok(msg) = Message::decode(frame.code(), &payload) else {
        return;
    };
    assert_eq!(msg.code(), frame.code());
    for compress in [false, true] {
        let again = msg.to_frame(compress);
        let again = Frame::parse(again.into_bytes()).expect("an encoded frame parses");
        let again_payload = again.payload().expect("an encoded payload decompresses");
        let decoded =
            Message::decode(again.code(), &again_payload).expect("an encoded message decodes");
        assert_eq!(decoded, msg, "message round trip (compress: {compress})");
    }
}
