//! The p2p.today frame fuzz logic, shared by `fuzz_targets/p2pt_frame.rs` and the corpus
//! replay test in `protocol/tests/fuzz_corpus.rs`.
//!
//! Depends only on `weft-protocol`, so the test can include it with `#[path = ...] mod`.

use weft_protocol::p2pt::base58::{decode_int, encode_int};
use weft_protocol::p2pt::compress::{decompress, Inflate};
use weft_protocol::p2pt::{decode_frame, encode_frame, receive_order, Message, Method};

/// Output limit of the direct decompressor calls: small, so that bombs are cheap to find.
const DIRECT_OUTPUT_MAX: usize = 64 * 1024;

/// Input layout: byte 0 is a bit set of the link's advertised methods (bit 0 zlib, 1 gzip,
/// 2 bz2, 3 xz; bit 4 reverses their order); the rest is one whole frame.
///
/// Decodes the frame; where it decodes, checks that the message's msgpack decodes to the same
/// message, that re-framing the received msgpack raw and with the method it came in decodes
/// to the same id and bytes, and that a raw frame whose msgpack is written as weft writes it
/// re-encodes to the input. Also runs every decompressor on the frame's bytes directly with a
/// small limit (output never past it), and base58-decodes them as text. Panics only if a
/// property is broken.
pub fn run_p2pt_frame(data: &[u8]) {
    let Some((&mask, wire)) = data.split_first() else {
        return;
    };
    let mut advertised: Vec<u64> = [(0, 0x13), (1, 0x11), (2, 0x10), (3, 0x12)]
        .iter()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|&(_, code)| code)
        .collect();
    if mask & 0x10 != 0 {
        advertised.reverse();
    }
    let methods = receive_order(&advertised);
    if let Ok(d) = decode_frame(wire, &methods) {
        let again =
            Message::from_msgpack(&d.message.to_msgpack()).expect("a decoded message re-decodes");
        assert_eq!(
            again.to_msgpack(),
            d.message.to_msgpack(),
            "msgpack round trip"
        );
        for method in [None, d.compression] {
            let framed =
                encode_frame(&d.msgpack, method).expect("a decoded body fits when re-framed");
            let back = decode_frame(&framed, &methods).expect("a re-framed body decodes");
            assert_eq!(
                (back.id, &back.msgpack),
                (d.id, &d.msgpack),
                "re-framed {method:?}"
            );
        }
        if d.compression.is_none() && d.message.to_msgpack() == d.msgpack {
            assert_eq!(
                encode_frame(&d.msgpack, None).as_deref(),
                Ok(wire),
                "raw frame round trip"
            );
        }
    }
    for m in Method::PREFERENCE {
        match decompress(m, wire, DIRECT_OUTPUT_MAX) {
            Ok(out) => assert!(
                out.len() <= DIRECT_OUTPUT_MAX,
                "{m:?} output past its limit"
            ),
            Err(Inflate::Corrupt | Inflate::TooLarge) => {}
        }
    }
    if let Ok(text) = std::str::from_utf8(wire) {
        if let Ok(be) = decode_int(text) {
            assert_eq!(decode_int(&encode_int(&be)), Ok(be), "base58 round trip");
        }
    }
}
