//! The Noise-layer fuzz logic, shared by `fuzz_targets/noise_link.rs` and the corpus replay
//! test in `engine/tests/fuzz_corpus.rs`.
//!
//! Three modes, by `data[0] % 3`:
//! - 0: a fresh responder takes the rest as its peer's bytes, in pieces of `data[1]` bytes;
//! - 1: an initiator that sent message 1 takes the rest as the peer's answer;
//! - 2: an established pair: the rest is split into plaintext chunks (each led by a length
//!   byte), the sender seals them, one byte of the wire (at an offset from `data[1..3]`) is
//!   flipped by `data[3]` (0: none), and the receiver takes the wire in pieces.
//!
//! Properties: nothing panics; a link that failed hands out no more plaintext and writes no
//! more handshake messages; in mode 2 the plaintext received is always a prefix of what was
//! sent, and all of it when nothing was flipped.

use weft_engine::noise::{handshake_in_memory, NoiseKeys, NoiseLink, NoiseRole, Rekey};
use weft_engine::NetworkKey;

fn keys(n: u8) -> NoiseKeys {
    // A small rekey bound, so the fuzzer crosses rekeys.
    let rekey = Rekey {
        messages_max: 3,
        bytes_max: 4096,
    };
    NoiseKeys::new(&[n; 32], NetworkKey::OPEN, rekey)
}

fn push_in_pieces(link: &mut NoiseLink, bytes: &[u8], piece: usize) -> Vec<u8> {
    let mut plain = Vec::new();
    for chunk in bytes.chunks(piece.max(1)) {
        let failed_before = link.error().is_some();
        link.push(chunk);
        while let Some(p) = link.poll_plaintext() {
            assert!(!failed_before, "plaintext after a failure");
            plain.extend_from_slice(&p);
        }
        if link.error().is_some() {
            assert!(link.poll_transmit().is_none(), "a message after a failure");
        }
    }
    plain
}

/// Runs one input; panics only if a property above is broken.
pub fn run_noise_link(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(rest.first().copied().unwrap_or(1));
    match mode % 3 {
        0 => {
            let mut r = NoiseLink::new(&keys(2), NoiseRole::Responder, [2; 32]);
            let _ = push_in_pieces(&mut r, rest, piece);
        }
        1 => {
            let mut i = NoiseLink::new(&keys(1), NoiseRole::Initiator, [1; 32]);
            let _ = i.poll_transmit();
            let _ = push_in_pieces(&mut i, rest, piece);
        }
        _ => run_established(rest),
    }
}

fn run_established(data: &[u8]) {
    let (head, mut body) = data.split_at(data.len().min(4));
    let byte = |i: usize| head.get(i).copied().unwrap_or(0);
    let piece = usize::from(byte(0)).max(1);
    let flip_at = usize::from(u16::from_le_bytes([byte(1), byte(2)]));
    let flip = byte(3);
    let mut a = NoiseLink::new(&keys(1), NoiseRole::Initiator, [1; 32]);
    let mut b = NoiseLink::new(&keys(2), NoiseRole::Responder, [2; 32]);
    handshake_in_memory(&mut a, &mut b);
    assert!(a.is_established() && b.is_established());
    let mut sent = Vec::new();
    let mut wire = Vec::new();
    while let Some((&len, rest)) = body.split_first() {
        // A length byte of 255 stands for a chunk past one message (65,519 bytes).
        let len = if len == 255 { 70_000 } else { usize::from(len) };
        let take = len.min(rest.len());
        let chunk: Vec<u8> = if len == 70_000 {
            rest.iter().copied().cycle().take(len).collect()
        } else {
            rest[..take].to_vec()
        };
        wire.extend_from_slice(&a.seal(&chunk));
        sent.extend_from_slice(&chunk);
        body = &rest[take..];
    }
    if flip != 0 && !wire.is_empty() {
        let at = flip_at % wire.len();
        wire[at] ^= flip;
    }
    let got = push_in_pieces(&mut b, &wire, piece);
    assert!(sent.starts_with(&got), "received bytes that were not sent");
    if flip == 0 {
        assert_eq!(got.len(), sent.len(), "an untouched stream arrives whole");
        assert!(b.error().is_none());
    }
}
