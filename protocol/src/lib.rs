//! weft's wire format: frames, the command-code registry, messages, the codec and its errors.
//!
//! This crate depends on nothing else of weft's. Every byte it reads or writes is described in
//! `SPEC.md` at the repository root; `vectors.json` beside this crate holds test vectors for
//! every message.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chord;
pub mod code;
pub mod compress;
pub mod decoder;
pub mod drop;
pub mod error;
pub mod frame;
pub mod ids;
pub mod message;
pub mod p2pt;
pub mod replica;
pub mod run;
mod strict;
pub mod table;
pub mod tracker;

pub use chord::*;
pub use code::{Code, Family};
pub use decoder::FrameDecoder;
pub use drop::*;
pub use error::ProtocolError;
pub use frame::{
    Frame, FrameFlags, FRAME_BODY_BYTES_MAX, HEADER_BYTES, PAYLOAD_BYTES_MAX, VERSION,
};
pub use ids::{CascadeId, NetworkId, NodeId, PublicKey, Signature};
pub use message::*;
pub use replica::*;
pub use run::*;
pub use table::*;
pub use tracker::*;
