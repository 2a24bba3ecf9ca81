//! The p2p.today dialect: py2p 0.7.878's wire format (SPEC.md §25).
//!
//! A frame is a `u32` big-endian length, then — compressed or not with the link's method — a
//! 32-byte SHA-256 of the msgpack array that follows, which is both checksum and message id,
//! then that array: `[main flag, sender id, timestamp, sub-flag, args...]`.
//!
//! - [`frame`]: the length prefix, the id, opportunistic decompression and the limits.
//! - [`message`]: the msgpack array as fields, and typed views of the packets py2p sends.
//! - [`flags`]: main flags, sub-flags and compression codes.
//! - [`compress`]: zlib, gzip, bz2 and xz, every decompressor stopping at the body limit.
//! - [`base58`]: py2p's integer base58 (Bitcoin alphabet).
//! - [`ids`]: protocol ids and node ids as py2p derives them.
//!
//! Nothing here keeps state: the session that speaks the dialect is `weft_engine::p2pt`.

pub mod base58;
pub mod compress;
pub mod error;
pub mod flags;
pub mod frame;
pub mod ids;
pub mod message;

pub use compress::Method;
pub use error::P2ptError;
pub use flags::{MainFlag, SubFlag};
pub use frame::{
    choose_compression, decode_frame, encode_frame, frame_len, message_id, receive_order, Decoded,
    P2PT_BODY_BYTES_MAX, P2PT_ID_BYTES, P2PT_LENGTH_BYTES,
};
pub use message::{
    Addr, Handshake, Message, Peers, Store, P2PT_MSGPACK_DEPTH_MAX, P2PT_VALUES_MAX,
};
/// The msgpack value type the dialect's messages are made of.
pub use rmpv;
