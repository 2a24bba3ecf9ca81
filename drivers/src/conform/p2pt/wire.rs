//! What the kit writes and how it looks inside what it reads, over `weft_protocol::p2pt`:
//! messages as py2p builds them (flags, the sender's id as bin, Unix seconds), the kit's node
//! ids, and a msgpack splitter that cuts a frame's array into its elements' bytes without
//! decoding them (py2p's answer to `renegotiate/resend` is an array whose fourth element need
//! not be a sub-flag, which `Message` refuses; the kit compares such arrays element by
//! element).
//!
//! The drivers do not depend on `rmpv` themselves: a message's args are built with `into()`
//! into the type `Message::new` names, and nil (a delete) is what rmpv's `Index` answers for
//! an element that is not there.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use rand_core::{OsRng, RngCore};
use weft_engine::protocol::p2pt::{
    encode_frame, ids, Addr, Handshake, MainFlag, Message, Method, SubFlag,
};

/// The kit's clock as py2p's `getUTC()`: whole Unix seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh node id as py2p makes one (`BaseSocket.__init__`): the base58 integer of
/// SHA-384 over Python's text of the `(host, port)` tuple, the protocol id and a random
/// salt (py2p's is `str(uuid4())`), as the bin py2p sends.
pub fn fresh_id(local: SocketAddr, protocol_id: &str) -> Vec<u8> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let salt: String = salt.iter().map(|b| format!("{b:02x}")).collect();
    let repr = format!("('{}', {})", local.ip(), local.port());
    ids::node_id(&repr, protocol_id, salt.as_bytes()).into_bytes()
}

/// `n` random bytes, to tell one run's payloads and keys from another's.
pub fn nonce() -> Vec<u8> {
    let mut n = vec![0u8; 12];
    OsRng.fill_bytes(&mut n);
    n
}

/// The wire bytes of `m`, compressed with `method` or raw.
pub fn frame(m: &Message, method: Option<Method>) -> Vec<u8> {
    frame_bytes(&m.to_msgpack(), method)
}

/// The wire bytes of a frame around `msgpack`. The kit's messages are far under the body
/// limit, the only reason `encode_frame` refuses; such a body would be sent empty and the
/// check would fail on the peer's answer.
pub fn frame_bytes(msgpack: &[u8], method: Option<Method>) -> Vec<u8> {
    encode_frame(msgpack, method).unwrap_or_default()
}

/// `whisper/handshake [id, protocol id, [host, port], [codes]]` from `id`.
pub fn handshake(id: &[u8], protocol_id: &[u8], addr: SocketAddr, codes: &[u64]) -> Message {
    Handshake {
        id: id.to_vec(),
        protocol_id: protocol_id.to_vec(),
        addr: Addr {
            host: addr.ip().to_string(),
            port: addr.port(),
        },
        compression: codes.to_vec(),
    }
    .to_message(now())
}

/// `broadcast/broadcast [tag, text, nonce]` from `sender` at `timestamp`. The first arg is a
/// small integer so that py2p's answer to `renegotiate/resend` after relaying it (an array
/// whose fourth element is that first arg) still decodes as a `Message`.
pub fn broadcast(sender: &[u8], timestamp: u64, text: &str, nonce: &[u8]) -> Message {
    Message::new(
        MainFlag::BROADCAST,
        sender.to_vec(),
        timestamp,
        SubFlag::BROADCAST,
        vec![2u8.into(), text.into(), nonce.to_vec().into()],
    )
}

/// `whisper/request ["*"]`: the star as bin (what py2p's handler compares with) or, as py2p's
/// own `request_peers` sends it, as str.
pub fn request_peers(sender: &[u8], star_as_bin: bool) -> Message {
    let star = if star_as_bin {
        b"*".to_vec().into()
    } else {
        "*".into()
    };
    Message::new(
        MainFlag::WHISPER,
        sender.to_vec(),
        now(),
        SubFlag::REQUEST,
        vec![star],
    )
}

/// `renegotiate/compression [[codes]]`.
pub fn renegotiate_compression(sender: &[u8], codes: &[u64]) -> Message {
    Message::new(
        MainFlag::RENEGOTIATE,
        sender.to_vec(),
        now(),
        SubFlag::COMPRESSION,
        vec![codes.iter().copied().collect()],
    )
}

/// `renegotiate/resend` (no args).
pub fn resend(sender: &[u8]) -> Message {
    Message::new(
        MainFlag::RENEGOTIATE,
        sender.to_vec(),
        now(),
        SubFlag::RESEND,
        Vec::new(),
    )
}

/// `broadcast/store [key, value]` from `sender` at `timestamp`; `None` deletes (nil).
pub fn store(sender: &[u8], timestamp: u64, key: &[u8], value: Option<&str>) -> Message {
    let mut m = Message::new(
        MainFlag::BROADCAST,
        sender.to_vec(),
        timestamp,
        SubFlag::STORE,
        vec![key.to_vec().into()],
    );
    let value = match value {
        Some(v) => v.into(),
        // rmpv's `Index` answers nil for an element an array (or any other value) lacks.
        None => m.args[0][usize::MAX].clone(),
    };
    m.args.push(value);
    m
}

/// Why a msgpack value could not be cut out.
const SHORT: &str = "the msgpack ends inside a value";

/// The end of the one msgpack value that starts at `at`, without decoding it: iterative (no
/// recursion, so no nesting limit is needed), and every count is checked against the bytes
/// left, so a hostile count costs nothing.
pub fn skip_value(b: &[u8], at: usize) -> Result<usize, &'static str> {
    let mut pos = at;
    // Values still to skip.
    let mut pending: u64 = 1;
    let be = |pos: usize, n: usize| -> Result<u64, &'static str> {
        let bytes = b.get(pos..pos + n).ok_or(SHORT)?;
        Ok(bytes.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    };
    while pending > 0 {
        pending -= 1;
        let marker = *b.get(pos).ok_or(SHORT)?;
        pos += 1;
        // (bytes of payload to skip, values nested inside)
        let (skip, nested): (u64, u64) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
            0x90..=0x9f => (0, u64::from(marker & 0x0f)),
            0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
            0xc1 => return Err("the msgpack marker 0xc1 is never used"),
            0xc4 | 0xd9 => (1 + be(pos, 1)?, 0),
            0xc5 | 0xda => (2 + be(pos, 2)?, 0),
            0xc6 | 0xdb => (4 + be(pos, 4)?, 0),
            0xc7 => (2 + be(pos, 1)?, 0),
            0xc8 => (3 + be(pos, 2)?, 0),
            0xc9 => (5 + be(pos, 4)?, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (2, be(pos, 2)?),
            0xdd => (4, be(pos, 4)?),
            0xde => (2, 2 * be(pos, 2)?),
            0xdf => (4, 2 * be(pos, 4)?),
        };
        let left = (b.len() - pos) as u64;
        if skip > left {
            return Err(SHORT);
        }
        pos += skip as usize;
        pending += nested;
        // Every value takes at least one byte.
        if pending > (b.len() - pos) as u64 {
            return Err(SHORT);
        }
    }
    Ok(pos)
}

/// The elements of the msgpack array that is all of `b`, each as its bytes; `None` if `b` is
/// not exactly one array.
pub fn split_array(b: &[u8]) -> Option<Vec<&[u8]>> {
    let marker = *b.first()?;
    let (count, mut pos) = match marker {
        0x90..=0x9f => (usize::from(marker & 0x0f), 1),
        0xdc => (usize::from(u16::from_be_bytes([*b.get(1)?, *b.get(2)?])), 3),
        0xdd => {
            let n = u32::from_be_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, *b.get(4)?]);
            (usize::try_from(n).ok()?, 5)
        }
        _ => return None,
    };
    if count > b.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let end = skip_value(b, pos).ok()?;
        out.push(&b[pos..end]);
        pos = end;
    }
    (pos == b.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_engine::protocol::p2pt::{decode_frame, Store};

    #[test]
    fn messages_are_py2ps() {
        let id = b"kit".to_vec();
        let b = broadcast(&id, 1_700_000_000, "hi", b"n");
        // [0, bin "kit", u32 ts, 0, 2, "hi", bin "n"]
        assert_eq!(
            b.to_msgpack(),
            [
                &[0x97, 0x00, 0xc4, 3][..],
                b"kit",
                &[0xce, 0x65, 0x53, 0xf1, 0x00, 0x00, 0x02, 0xa2],
                b"hi",
                &[0xc4, 1, b'n'],
            ]
            .concat()
        );
        // The star as bin (c4 01 2a) or str (a1 2a); rmpv's `is_bin` would take either.
        assert!(request_peers(&id, true)
            .to_msgpack()
            .ends_with(&[0x08, 0xc4, 1, b'*']));
        assert!(request_peers(&id, false)
            .to_msgpack()
            .ends_with(&[0x08, 0xa1, b'*']));
        let r = renegotiate_compression(&id, &[0x13, 0x11]);
        assert_eq!(r.args[0].as_array().map(Vec::len), Some(2));
        let del = store(&id, 5, b"k", None);
        assert!(del.args[1].is_nil());
        let set = Store::parse(&store(&id, 5, b"k", Some("v"))).expect("a store");
        assert_eq!(set.key, b"k");
        assert_eq!(set.value.as_str(), Some("v"));
        let wire = frame(&set_message(), Some(Method::Zlib));
        let d = decode_frame(&wire, &Method::PREFERENCE).expect("decodes");
        assert_eq!(d.compression, Some(Method::Zlib));
    }

    fn set_message() -> Message {
        store(b"kit", 5, b"k", Some("v"))
    }

    #[test]
    fn fresh_ids_look_like_py2ps() {
        let addr: SocketAddr = "127.0.0.1:4444".parse().expect("addr");
        let a = fresh_id(addr, "EpAm");
        let b = fresh_id(addr, "EpAm");
        assert_ne!(a, b);
        // base58 of a 384-bit integer: 64 to 66 characters.
        assert!((60..=66).contains(&a.len()), "{}", a.len());
        assert!(a.iter().all(u8::is_ascii_alphanumeric));
    }

    #[test]
    fn arrays_split_into_their_elements() {
        // [2, bin "id", u32 ts, 7, [[1, "x"]], -3, 1.5, u64::MAX, bin of 300, str of 40]
        let mut bytes = vec![
            0x9a, 0x02, 0xc4, 2, b'i', b'd', 0xce, 0x65, 0x53, 0xf1, 0x00, 0x07,
        ];
        bytes.extend([0x91, 0x92, 0x01, 0xa1, b'x', 0xfd]);
        bytes.extend([0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        bytes.extend([0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        bytes.extend([0xc5, 0x01, 0x2c]);
        bytes.extend([7u8; 300]);
        bytes.extend([0xd9, 40]);
        bytes.extend([b's'; 40]);
        let parts = split_array(&bytes).expect("an array");
        assert_eq!(parts.len(), 10);
        assert_eq!(parts[0], [0x02]);
        assert_eq!(parts[1], [0xc4, 2, b'i', b'd']);
        assert_eq!(parts[3], [0x07]);
        assert_eq!(parts[4], [0x91, 0x92, 0x01, 0xa1, b'x']);
        assert_eq!(parts[5], [0xfd]);
        assert_eq!(parts[8].len(), 3 + 300);
        assert_eq!(parts[9].len(), 2 + 40);
        assert_eq!(parts.concat(), bytes[1..]);
        // The kit's own messages split as they encode.
        let b = broadcast(b"kit", 9, "hi", b"n").to_msgpack();
        assert_eq!(split_array(&b).map(|p| p.len()), Some(7));
        // Not exactly one array: trailing bytes, a cut, another kind, a hostile count.
        let mut more = bytes.clone();
        more.push(0xc0);
        assert!(split_array(&more).is_none());
        assert!(split_array(&bytes[..bytes.len() - 1]).is_none());
        assert!(split_array(&[0xc0]).is_none());
        assert!(split_array(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x00]).is_none());
        assert!(split_array(&[0x91, 0xdd, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(split_array(&[0x91, 0xc1]).is_none());
        assert_eq!(split_array(&[0x90]), Some(vec![]));
        // Maps, ext and every width.
        let odd = [
            0x95, 0x81, 0xa1, b'k', 0xc0, 0xd4, 1, 2, 0xcd, 1, 2, 0xd9, 1, b'z', 0xc7, 1, 5, 9,
        ];
        let parts = split_array(&odd).expect("an array");
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[4], [0xc7, 1, 5, 9]);
    }
}
