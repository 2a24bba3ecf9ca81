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
    /// elements, nested at most [`P2PT_MSGPACK_DEPTH_MAX`] deep.
    pub fn from_msgpack(mut msgpack: &[u8]) -> Result<Self, P2ptError> {
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
