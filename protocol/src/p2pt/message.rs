//! The msgpack array inside a frame, and typed views of the packets py2p sends.
//!
//! py2p's `InternalMessage.packets` is `(msg_type, sender, time) + payload`, packed by
//! u-msgpack-python: ints in their smallest form (non-negative ones unsigned), floats as f64,
//! `bytes` as bin, `str` as str, tuples and lists as arrays, dicts as maps in insertion order.
//! rmpv writes every one of those the same way, so a message py2p packed re-encodes byte for
//! byte ([`Message::to_msgpack`]).

use rmpv::Value;

use super::error::P2ptError;
use super::flags::{MainFlag, SubFlag};

/// Deepest msgpack nesting a body may have: 32 levels (py2p's packets nest at most 4).
pub const P2PT_MSGPACK_DEPTH_MAX: usize = 32;

/// The most msgpack values (every nil, number, string, array and map counts one, and so does
/// each element inside) one message may hold. A value is one byte on the wire at least and
/// 40 in memory (`rmpv::Value`); counted before any is built, so a body of millions of nils
/// (4 MiB inflated from a zlib frame of a few KB, on a link that needs no key) is refused
/// without taking memory in proportion. py2p's own messages hold a few dozen.
pub const P2PT_VALUES_MAX: usize = 65_536;

/// How many values the first msgpack value of `body` holds, itself included, reading only
/// markers and lengths; refused past [`P2PT_VALUES_MAX`] or if `body` is cut short.
fn value_count(mut body: &[u8]) -> Result<usize, P2ptError> {
    use rmp::Marker as M;
    let short = || P2ptError::Msgpack("not a msgpack value");
    let take = |n: usize, body: &mut &[u8]| -> Result<u64, P2ptError> {
        let (head, rest) = body.split_at_checked(n).ok_or_else(short)?;
        *body = rest;
        Ok(head.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
    };
    let mut pending: u64 = 1;
    let mut seen = 0usize;
    while pending > 0 {
        pending -= 1;
        seen += 1;
        if seen > P2PT_VALUES_MAX {
            return Err(P2ptError::Msgpack("more values than P2PT_VALUES_MAX"));
        }
        let marker = M::from_u8(take(1, &mut body)? as u8);
        // Bytes to skip, or elements that follow.
        let (skip, elements) = match marker {
            M::Null | M::True | M::False | M::FixPos(_) | M::FixNeg(_) => (0, 0),
            M::U8 | M::I8 => (1, 0),
            M::U16 | M::I16 => (2, 0),
            M::U32 | M::I32 | M::F32 => (4, 0),
            M::U64 | M::I64 | M::F64 => (8, 0),
            M::FixStr(n) => (u64::from(n), 0),
            M::Str8 | M::Bin8 => (take(1, &mut body)?, 0),
            M::Str16 | M::Bin16 => (take(2, &mut body)?, 0),
            M::Str32 | M::Bin32 => (take(4, &mut body)?, 0),
            M::FixExt1 => (2, 0),
            M::FixExt2 => (3, 0),
            M::FixExt4 => (5, 0),
            M::FixExt8 => (9, 0),
            M::FixExt16 => (17, 0),
            M::Ext8 => (take(1, &mut body)? + 1, 0),
            M::Ext16 => (take(2, &mut body)? + 1, 0),
            M::Ext32 => (take(4, &mut body)? + 1, 0),
            M::FixArray(n) => (0, u64::from(n)),
            M::Array16 => (0, take(2, &mut body)?),
            M::Array32 => (0, take(4, &mut body)?),
            M::FixMap(n) => (0, 2 * u64::from(n)),
            M::Map16 => (0, 2 * take(2, &mut body)?),
            M::Map32 => (0, 2 * take(4, &mut body)?),
            M::Reserved => return Err(short()),
        };
        let skip = usize::try_from(skip).map_err(|_| short())?;
        body = body.get(skip..).ok_or_else(short)?;
        pending = pending.saturating_add(elements);
    }
    Ok(seen)
}

/// `[main flag, sender, timestamp, sub-flag, args...]`: every message py2p sends has a
/// sub-flag (its `send(main_flag, sub_flag, *args)`), so weft requires one.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// How the message travels.
    pub main_flag: MainFlag,
    /// The originator's node id (its base58 text as msgpack bin).
    pub sender: Vec<u8>,
    /// The originator's Unix time, in seconds.
    pub timestamp: u64,
    /// What the message carries.
    pub sub_flag: SubFlag,
    /// The packets after the sub-flag, as msgpack values.
    pub args: Vec<Value>,
}

fn malformed(field: &'static str, reason: &'static str) -> P2ptError {
    P2ptError::Malformed { field, reason }
}

fn flag(v: &Value, field: &'static str) -> Result<u8, P2ptError> {
    v.as_u64()
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(|| malformed(field, "not an integer from 0 to 255"))
}

fn bin(v: Value, field: &'static str) -> Result<Vec<u8>, P2ptError> {
    match v {
        Value::Binary(b) => Ok(b),
        _ => Err(malformed(field, "not msgpack bin")),
    }
}

fn uint(v: &Value, field: &'static str) -> Result<u64, P2ptError> {
    v.as_u64()
        .ok_or_else(|| malformed(field, "not a non-negative integer"))
}

impl Message {
    /// A message from its fields.
    pub fn new(
        main_flag: MainFlag,
        sender: Vec<u8>,
        timestamp: u64,
        sub_flag: SubFlag,
        args: Vec<Value>,
    ) -> Self {
        Self {
            main_flag,
            sender,
            timestamp,
            sub_flag,
            args,
        }
    }

    /// Decodes the msgpack bytes of a frame (after the id): exactly one array of at least four
    /// elements, nested at most [`P2PT_MSGPACK_DEPTH_MAX`] deep, of at most
    /// [`P2PT_VALUES_MAX`] values.
    pub fn from_msgpack(mut msgpack: &[u8]) -> Result<Self, P2ptError> {
        value_count(msgpack)?;
        let value = rmpv::decode::read_value_with_max_depth(&mut msgpack, P2PT_MSGPACK_DEPTH_MAX)
            .map_err(|e| match e {
            rmpv::decode::Error::DepthLimitExceeded => {
                P2ptError::Msgpack("nested deeper than P2PT_MSGPACK_DEPTH_MAX")
            }
            _ => P2ptError::Msgpack("not a msgpack value"),
        })?;
        if !msgpack.is_empty() {
            return Err(P2ptError::Msgpack("bytes after the array"));
        }
        let Value::Array(items) = value else {
            return Err(malformed("message", "not an array"));
        };
        if items.len() < 4 {
            return Err(malformed("message", "fewer than 4 elements"));
        }
        let mut items = items.into_iter();
        // Four elements are there, checked above.
        let mut next = || items.next().expect("four elements, checked above");
        let main_flag = MainFlag(flag(&next(), "main flag")?);
        let sender = bin(next(), "sender")?;
        let timestamp = uint(&next(), "timestamp")?;
        let sub_flag = SubFlag(flag(&next(), "sub-flag")?);
        Ok(Self {
            main_flag,
            sender,
            timestamp,
            sub_flag,
            args: items.collect(),
        })
    }

    /// The msgpack bytes py2p packs for this message.
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut items = Vec::with_capacity(4 + self.args.len());
        items.push(Value::from(self.main_flag.0));
        items.push(Value::Binary(self.sender.clone()));
        items.push(Value::from(self.timestamp));
        items.push(Value::from(self.sub_flag.0));
        items.extend(self.args.iter().cloned());
        let mut out = Vec::new();
        // Writing into a Vec<u8> cannot fail, and rmpv has no other write error.
        rmpv::encode::write_value(&mut out, &Value::Array(items))
            .expect("writing into a Vec cannot fail");
        out
    }
}

/// An address as py2p sends it: `[str host, int port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// Host name or IP text.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Addr {
    fn parse(v: &Value, field: &'static str) -> Result<Self, P2ptError> {
        let Value::Array(hp) = v else {
            return Err(malformed(field, "not an array"));
        };
        let [host, port] = hp.as_slice() else {
            return Err(malformed(field, "not [host, port]"));
        };
        let host = host
            .as_str()
            .ok_or_else(|| malformed(field, "host is not a UTF-8 str"))?;
        let port = port
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| malformed(field, "port is not an integer from 0 to 65535"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    fn to_value(&self) -> Value {
        Value::Array(vec![
            Value::from(self.host.as_str()),
            Value::from(self.port),
        ])
    }
}

/// `whisper/handshake [node id, protocol id, [host, port], [compression codes]]`, as
/// `MeshSocket._send_handshake` sends it (py2p requires exactly these four args).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The sender's node id (bin).
    pub id: Vec<u8>,
    /// The protocol id (bin; a str is a different protocol id to py2p).
    pub protocol_id: Vec<u8>,
    /// Where the sender listens.
    pub addr: Addr,
    /// The compression codes the sender can read, in its preference order (unknown codes kept).
    pub compression: Vec<u64>,
}

impl Handshake {
    /// The handshake in `m`, which must be `whisper/handshake` with four args.
    pub fn parse(m: &Message) -> Result<Self, P2ptError> {
        if m.main_flag != MainFlag::WHISPER || m.sub_flag != SubFlag::HANDSHAKE {
            return Err(malformed("handshake", "not whisper/handshake"));
        }
        let [id, protocol_id, addr, compression] = m.args.as_slice() else {
            return Err(malformed("handshake", "not exactly four args"));
        };
        let Value::Array(codes) = compression else {
            return Err(malformed("handshake compression", "not an array"));
        };
        Ok(Self {
            id: bin(id.clone(), "handshake id")?,
            protocol_id: bin(protocol_id.clone(), "handshake protocol id")?,
            addr: Addr::parse(addr, "handshake addr")?,
            compression: codes
                .iter()
                .map(|c| uint(c, "handshake compression code"))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The message py2p would send: the sender id is the handshake's id.
    pub fn to_message(&self, timestamp: u64) -> Message {
        Message::new(
            MainFlag::WHISPER,
            self.id.clone(),
            timestamp,
            SubFlag::HANDSHAKE,
            vec![
                Value::Binary(self.id.clone()),
                Value::Binary(self.protocol_id.clone()),
                self.addr.to_value(),
                Value::Array(self.compression.iter().map(|&c| Value::from(c)).collect()),
            ],
        )
    }
}

/// `whisper/peers [[[host, port], node id], ...]`, as `MeshSocket._send_peers` sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers(pub Vec<(Addr, Vec<u8>)>);

impl Peers {
    /// The peer list in `m`, which must be `whisper/peers` with one arg.
    pub fn parse(m: &Message) -> Result<Self, P2ptError> {
        if m.main_flag != MainFlag::WHISPER || m.sub_flag != SubFlag::PEERS {
            return Err(malformed("peers", "not whisper/peers"));
        }
        let [Value::Array(list)] = m.args.as_slice() else {
            return Err(malformed("peers", "not one array arg"));
        };
        list.iter()
            .map(|entry| match entry {
                Value::Array(pair) => match pair.as_slice() {
                    [addr, id] => Ok((
                        Addr::parse(addr, "peers addr")?,
                        bin(id.clone(), "peers id")?,
                    )),
                    _ => Err(malformed("peers entry", "not [addr, id]")),
                },
                _ => Err(malformed("peers entry", "not an array")),
            })
            .collect::<Result<_, _>>()
            .map(Peers)
    }

    /// The message py2p would send from `sender`.
    pub fn to_message(&self, sender: Vec<u8>, timestamp: u64) -> Message {
        let list = self
            .0
            .iter()
            .map(|(addr, id)| Value::Array(vec![addr.to_value(), Value::Binary(id.clone())]))
            .collect();
        Message::new(
            MainFlag::WHISPER,
            sender,
            timestamp,
            SubFlag::PEERS,
            vec![Value::Array(list)],
        )
    }
}

/// Sync's `store`: `broadcast/store [key, value]` (a write; a nil value deletes) or, after
/// `peers`, `whisper/store [key, value, owner, timestamp]` (a key handed to a new peer).
#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    /// The key (bin: `SyncSocket` sanitises keys to bytes).
    pub key: Vec<u8>,
    /// The value (nil deletes).
    pub value: Value,
    /// The write's owner and time, when handed over (`whisper/store` with four args).
    pub meta: Option<(Vec<u8>, u64)>,
}

impl Store {
    /// The store in `m`, which must have sub-flag `store` and two or four args.
    pub fn parse(m: &Message) -> Result<Self, P2ptError> {
        if m.sub_flag != SubFlag::STORE {
            return Err(malformed("store", "not a store"));
        }
        match m.args.as_slice() {
            [key, value] => Ok(Self {
                key: bin(key.clone(), "store key")?,
                value: value.clone(),
                meta: None,
            }),
            [key, value, owner, time] => Ok(Self {
                key: bin(key.clone(), "store key")?,
                value: value.clone(),
                meta: Some((
                    bin(owner.clone(), "store owner")?,
                    uint(time, "store timestamp")?,
                )),
            }),
            _ => Err(malformed("store", "not two or four args")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of msgpack value, nested, from `seed`; with how many values it holds.
    fn value(seed: &mut u64, depth: u32) -> (Value, usize) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let pick = *seed % if depth == 0 { 9 } else { 12 };
        let n = (*seed >> 8) as usize % 20;
        match pick {
            0 => (Value::Nil, 1),
            1 => (Value::Boolean(true), 1),
            2 => (Value::from(*seed % 200), 1),
            3 => (Value::from(*seed), 1),
            4 => (Value::from(-((*seed % 1_000_000) as i64)), 1),
            5 => (Value::F64(1.5), 1),
            6 => (Value::from("x".repeat(n * 20)), 1),
            7 => (Value::Binary(vec![7; n * 30]), 1),
            8 => (Value::Ext(3, vec![1; [1, 2, 4, 8, 16, 3][n % 6]]), 1),
            9 | 10 => {
                let items: Vec<(Value, usize)> = (0..n).map(|_| value(seed, depth - 1)).collect();
                let count = 1 + items.iter().map(|(_, c)| c).sum::<usize>();
                (
                    Value::Array(items.into_iter().map(|(v, _)| v).collect()),
                    count,
                )
            }
            _ => {
                let mut count = 1;
                let pairs = (0..n)
                    .map(|_| {
                        let (k, a) = value(seed, depth - 1);
                        let (v, b) = value(seed, depth - 1);
                        count += a + b;
                        (k, v)
                    })
                    .collect();
                (Value::Map(pairs), count)
            }
        }
    }

    /// The count taken before decoding agrees with the values rmpv builds: every encoding
    /// passes under the limit, one value over it is refused, and a body cut short is refused.
    #[test]
    fn the_value_count_agrees_with_the_decoded_values() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..500 {
            let (v, count) = value(&mut seed, 3);
            let mut bytes = Vec::new();
            rmpv::encode::write_value(&mut bytes, &v).unwrap();
            assert_eq!(value_count(&bytes).ok(), Some(count), "{v:?}");
            assert!(value_count(&bytes[..bytes.len() - 1]).is_err(), "{v:?}");
        }
        // A million nils in an array: refused, and the limit is exact.
        let nils = |n: u32| {
            let mut b = vec![0xdd];
            b.extend_from_slice(&n.to_be_bytes());
            b.extend(std::iter::repeat_n(0xc0, n as usize));
            b
        };
        let max = P2PT_VALUES_MAX as u32;
        assert_eq!(value_count(&nils(max - 1)).ok(), Some(P2PT_VALUES_MAX));
        assert!(value_count(&nils(max)).is_err());
        assert!(value_count(&nils(1_000_000)).is_err());
        assert!(matches!(
            Message::from_msgpack(&nils(1_000_000)),
            Err(P2ptError::Msgpack(_))
        ));
    }

    #[test]
    fn a_short_or_mistyped_array_is_malformed() {
        let enc = |v: Value| {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &v).unwrap();
            out
        };
        let three = enc(Value::Array(vec![
            2.into(),
            Value::Binary(vec![1]),
            5.into(),
        ]));
        assert!(matches!(
            Message::from_msgpack(&three),
            Err(P2ptError::Malformed {
                field: "message",
                ..
            })
        ));
        let str_sender = enc(Value::Array(vec![
            2.into(),
            "id".into(),
            5.into(),
            7.into(),
        ]));
        assert!(matches!(
            Message::from_msgpack(&str_sender),
            Err(P2ptError::Malformed {
                field: "sender",
                ..
            })
        ));
        let big_flag = enc(Value::Array(vec![
            256.into(),
            Value::Binary(vec![]),
            5.into(),
            7.into(),
        ]));
        assert!(matches!(
            Message::from_msgpack(&big_flag),
            Err(P2ptError::Malformed {
                field: "main flag",
                ..
            })
        ));
        let negative_time = enc(Value::Array(vec![
            0.into(),
            Value::Binary(vec![]),
            (-1).into(),
            7.into(),
        ]));
        assert!(matches!(
            Message::from_msgpack(&negative_time),
            Err(P2ptError::Malformed {
                field: "timestamp",
                ..
            })
        ));
    }

    #[test]
    fn nesting_past_the_limit_is_refused() {
        let mut deep = vec![0x94, 0x00, 0xc4, 0x00, 0x00, 0x00];
        deep.extend(std::iter::repeat_n(0x91, P2PT_MSGPACK_DEPTH_MAX));
        deep.push(0xc0);
        // The outer array has four elements; its fourth nests far too deep (and is no flag).
        deep[0] = 0x95;
        assert_eq!(
            Message::from_msgpack(&deep),
            Err(P2ptError::Msgpack(
                "nested deeper than P2PT_MSGPACK_DEPTH_MAX"
            ))
        );
    }

    #[test]
    fn handshake_round_trips() {
        let h = Handshake {
            id: b"abc".to_vec(),
            protocol_id: b"EpAm".to_vec(),
            addr: Addr {
                host: "127.0.0.1".into(),
                port: 4444,
            },
            compression: vec![0x13, 0x11],
        };
        let m = h.to_message(9);
        assert_eq!(
            Handshake::parse(&Message::from_msgpack(&m.to_msgpack()).unwrap()),
            Ok(h)
        );
        assert!(Peers::parse(&m).is_err());
    }
}
