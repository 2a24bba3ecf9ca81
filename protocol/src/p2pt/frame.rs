//! The p2p.today frame (SPEC.md §25.2): `u32` big-endian length `N`, then `N` bytes that are
//! `C(id || M)`, where `M` is the msgpack array, `id = sha256(M)` and `C` the link's
//! compression or none.

use sha2::{Digest, Sha256};

use super::compress::{compress, decompress, Inflate, Method};
use super::error::P2ptError;
use super::message::Message;

/// Bytes of the length prefix.
pub const P2PT_LENGTH_BYTES: usize = 4;
/// Bytes of the id (SHA-256 of the msgpack bytes).
pub const P2PT_ID_BYTES: usize = 32;
/// Largest body, on the wire (the length prefix's value) and after decompression (id and
/// msgpack): 4 MiB. py2p has no limit; weft keeps its own.
pub const P2PT_BODY_BYTES_MAX: usize = 4 * 1024 * 1024;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The message id: SHA-256 of [`Decoded::msgpack`], checked.
    pub id: [u8; P2PT_ID_BYTES],
    /// The msgpack bytes as received: what a relay forwards (the id is their hash).
    pub msgpack: Vec<u8>,
    /// The method that inflated the body, or `None` if it was carried raw.
    pub compression: Option<Method>,
    /// The array's fields.
    pub message: Message,
}

/// Length of the whole frame (prefix included) that starts `buf`, once its 4-byte prefix is
/// there: `Ok(None)` while fewer than 4 bytes are. Refuses a prefix over the limit at once.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, P2ptError> {
    let Some(prefix) = buf.first_chunk::<P2PT_LENGTH_BYTES>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > P2PT_BODY_BYTES_MAX {
        return Err(P2ptError::FrameTooLarge {
            len: len as u64,
            max: P2PT_BODY_BYTES_MAX as u64,
        });
    }
    Ok(Some(P2PT_LENGTH_BYTES + len))
}

/// The methods a receiver tries, in order: the codes the peer advertised (its handshake or its
/// last `renegotiate/compression`), in the peer's order, less those weft lacks. py2p's
/// `feed_string` does the same (`intersect(link compression, own methods)`).
pub fn receive_order(advertised: &[u64]) -> Vec<Method> {
    let mut out: Vec<Method> = Vec::with_capacity(Method::PREFERENCE.len());
    for m in advertised.iter().filter_map(|&c| Method::from_code(c)) {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// The method a sender uses: the first of ITS OWN list (`ours`, py2p's is
/// [`Method::PREFERENCE`]) that the peer advertised; `None` sends raw.
pub fn choose_compression(ours: &[Method], advertised: &[u64]) -> Option<Method> {
    ours.iter()
        .copied()
        .find(|m| advertised.contains(&u64::from(m.code())))
}

/// Decodes exactly one frame. `methods` are tried in order ([`receive_order`]); the first that
/// inflates the body wins (reported as the format it had: a zlib try reads gzip too); if none
/// does, the body is read raw (py2p accepts an uncompressed frame on a compressed link). A
/// body inflating past [`P2PT_BODY_BYTES_MAX`] is refused.
pub fn decode_frame(wire: &[u8], methods: &[Method]) -> Result<Decoded, P2ptError> {
    let Some(total) = frame_len(wire)? else {
        return Err(P2ptError::Truncated {
            needed: P2PT_LENGTH_BYTES,
            have: wire.len(),
        });
    };
    if wire.len() < total {
        return Err(P2ptError::Truncated {
            needed: total,
            have: wire.len(),
        });
    }
    if wire.len() > total {
        return Err(P2ptError::TrailingBytes {
            len: total,
            extra: wire.len() - total,
        });
    }
    let raw = &wire[P2PT_LENGTH_BYTES..];
    let mut inflated = None;
    for &m in methods {
        match decompress(m, raw, P2PT_BODY_BYTES_MAX) {
            Ok(body) => {
                inflated = Some((m.detected(raw), body));
                break;
            }
            // Not this method's stream: the next is tried, then the raw bytes.
            Err(Inflate::Corrupt) => {}
            Err(Inflate::TooLarge) => {
                return Err(P2ptError::DecompressedTooLarge {
                    method: m,
                    max: P2PT_BODY_BYTES_MAX as u64,
                })
            }
        }
    }
    let (compression, body) = match &inflated {
        Some((m, body)) => (Some(*m), body.as_slice()),
        None => (None, raw),
    };
    let Some((id, msgpack)) = body.split_first_chunk::<P2PT_ID_BYTES>() else {
        return Err(P2ptError::BodyTooShort { len: body.len() });
    };
    let digest: [u8; P2PT_ID_BYTES] = Sha256::digest(msgpack).into();
    if &digest != id {
        return Err(P2ptError::ChecksumMismatch);
    }
    let message = Message::from_msgpack(msgpack)?;
    Ok(Decoded {
        id: digest,
        msgpack: msgpack.to_vec(),
        compression,
        message,
    })
}

/// A message's id: the SHA-256 of its msgpack bytes (also the frame's checksum).
pub fn message_id(msgpack: &[u8]) -> [u8; P2PT_ID_BYTES] {
    Sha256::digest(msgpack).into()
}

/// Frames the msgpack bytes `msgpack` (a relay passes those it received, a sender
/// [`Message::to_msgpack`]), compressed with `method` or raw.
pub fn encode_frame(msgpack: &[u8], method: Option<Method>) -> Result<Vec<u8>, P2ptError> {
    let too_large = |len: usize| P2ptError::BodyTooLarge {
        len: len as u64,
        max: P2PT_BODY_BYTES_MAX as u64,
    };
    let body_len = P2PT_ID_BYTES + msgpack.len();
    if body_len > P2PT_BODY_BYTES_MAX {
        return Err(too_large(body_len));
    }
    let mut body = Vec::with_capacity(body_len);
    body.extend_from_slice(&Sha256::digest(msgpack));
    body.extend_from_slice(msgpack);
    if let Some(m) = method {
        body = compress(m, &body);
        if body.len() > P2PT_BODY_BYTES_MAX {
            return Err(too_large(body.len()));
        }
    }
    let mut wire = Vec::with_capacity(P2PT_LENGTH_BYTES + body.len());
    // body.len() <= P2PT_BODY_BYTES_MAX < u32::MAX, checked above.
    wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
    wire.extend_from_slice(&body);
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_and_send_orders_follow_py2p() {
        assert_eq!(
            receive_order(&[0x12, 0x20, 0x10, 0x12, 0x99]),
            vec![Method::Xz, Method::Bz2]
        );
        assert_eq!(
            choose_compression(&Method::PREFERENCE, &[0x12, 0x10, 0x11]),
            Some(Method::Gzip)
        );
        assert_eq!(choose_compression(&Method::PREFERENCE, &[0x20]), None);
    }

    #[test]
    fn frame_len_needs_four_bytes_and_refuses_a_big_prefix() {
        assert_eq!(frame_len(&[0, 0, 1]), Ok(None));
        assert_eq!(frame_len(&[0, 0, 1, 0, 9]), Ok(Some(260)));
        let big = ((P2PT_BODY_BYTES_MAX + 1) as u32).to_be_bytes();
        assert!(matches!(
            frame_len(&big),
            Err(P2ptError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn a_raw_frame_on_a_compressed_link_is_accepted() {
        let m = Message::new(
            super::super::MainFlag::WHISPER,
            b"me".to_vec(),
            5,
            super::super::SubFlag::WHISPER,
            vec![],
        );
        let wire = encode_frame(&m.to_msgpack(), None).unwrap();
        let d = decode_frame(&wire, &Method::PREFERENCE).unwrap();
        assert_eq!(d.compression, None);
        assert_eq!(d.message, m);
    }

    #[test]
    fn an_oversized_body_is_not_encoded() {
        let big = vec![0u8; P2PT_BODY_BYTES_MAX];
        assert!(matches!(
            encode_frame(&big, None),
            Err(P2ptError::BodyTooLarge { .. })
        ));
    }
}
