//! What a protocol hands the session to send: the message (encoded once, framed per peer),
//! who it goes to, and its class in each connection's send queue (SPEC.md §12). The session
//! carries these out; the protocol contract ([`crate::machine`]) hands them on.

use bytes::Bytes;
use weft_protocol::{Code, Frame, Message, NodeId};

/// Who a message goes to. Every recipient must run the sender's family; peers that do not
/// are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recipients {
    /// One peer, over its link or an open dedicated connection of the sender's family;
    /// dropped if there is neither.
    Peer(NodeId),
    /// One peer as above, and if there is neither, over a new dedicated connection of the
    /// sender's family dialed to the address book's address for it (SPEC.md §8.9).
    PeerOrDial(NodeId),
    /// Every link but `except`.
    Links {
        /// The link it came from, if it is a relay.
        except: Option<NodeId>,
    },
}

/// A message to send: encoded once, framed per peer (plain or lz4, SPEC.md §3).
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) code: Code,
    /// The uncompressed payload.
    pub(crate) payload: Bytes,
    /// A received frame to forward unchanged wherever the peer can take it.
    pub(crate) received: Option<Frame>,
}

impl Outgoing {
    /// `message`, encoded.
    pub(crate) fn message(message: &Message<'_>) -> Outgoing {
        Outgoing::encoded(message.code(), Bytes::from(message.encode_payload()))
    }

    /// An encoded payload under `code`.
    pub(crate) fn encoded(code: Code, payload: Bytes) -> Outgoing {
        Outgoing {
            code,
            payload,
            received: None,
        }
    }

    /// A received frame relayed as it is; `payload` is its uncompressed payload, framed
    /// plain for a peer that cannot take the frame's compression.
    pub(crate) fn relay(frame: Frame, payload: Bytes) -> Outgoing {
        Outgoing {
            code: frame.code(),
            payload,
            received: Some(frame),
        }
    }
}

/// Largest bulk frame, bytes (SPEC.md §12).
pub(crate) const BULK_FRAME_BYTES_MAX: usize = 256 * 1024;

/// A frame's class in its connection's send queue (SPEC.md §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Queued; over `send_queue_bytes_max` the peer is disconnected as slow.
    Control,
    /// Dropped and counted when the queue is over `relay_queue_bytes_max`.
    Relay,
    /// Large transfers, at most `BULK_FRAME_BYTES_MAX` a frame, sent behind control and relay
    /// frames and only while the peer has room (`LinkNotice::Room`); never makes a peer slow.
    Bulk,
}
