//! Sending: frames built once (compressed with the peer's chosen method), queued within
//! [`super::P2PT_SEND_QUEUE_BYTES_MAX`], the handshake and the `peers` list.

use std::ops::Bound;

use bytes::Bytes;
use weft_protocol::p2pt::rmpv::Value;
use weft_protocol::p2pt::{encode_frame, Handshake, MainFlag, Message, Method, Peers, SubFlag};

use super::{msgpack, P2ptNode, P2PT_CATCH_UP_UNWRITTEN_MAX, P2PT_SEND_QUEUE_BYTES_MAX};
use crate::connection::{CloseReason, ConnId};
use crate::io::Output;
use crate::p2pt::P2ptEntry;

/// A catch-up store's arguments: `[key, value, owner, timestamp]` (SPEC.md §25.11).
fn catch_up_args(key: &[u8], e: &P2ptEntry) -> Vec<Value> {
    vec![
        Value::Binary(key.to_vec()),
        e.value.clone(),
        Value::Binary(e.owner.clone()),
        Value::from(e.timestamp),
    ]
}

pub(super) fn msgpack_args(args: &[Value]) -> Bytes {
    msgpack(&Value::Array(args.to_vec()))
}

impl P2ptNode {
    // ----- sending ------------------------------------------------------------------------
    /// Frames `bytes` (a message's msgpack) for `conn`, compressed with its method unless
    /// `compress` is false (handshakes), and hands it to the driver.
    pub(super) fn transmit(&mut self, conn: ConnId, bytes: &[u8], compress: bool, remember: bool) {
        let bytes = Bytes::copy_from_slice(bytes);
        self.transmit_to(&[conn], &bytes, compress, remember);
    }

    /// Frames `bytes` for each of `conns` as [`Self::transmit`] does, each method's frame
    /// built once (a relay to sixty links compresses once, not sixty times).
    pub(super) fn transmit_to(
        &mut self,
        conns: &[ConnId],
        bytes: &Bytes,
        compress: bool,
        remember: bool,
    ) {
        let mut built: Vec<(Option<Method>, Option<Bytes>)> = Vec::new();
        for &conn in conns {
            let Some(link) = self.links.get_mut(&conn) else {
                continue;
            };
            if link.closing || link.dialing {
                continue;
            }
            let method = if compress {
                link.send_method(&self.ours)
            } else {
                None
            };
            if remember {
                link.remember_sent(bytes.clone());
            }
            let wire = match built.iter().find(|(m, _)| *m == method) {
                Some((_, wire)) => wire.clone(),
                None => {
                    // Only an oversized body fails, and senders check the size first; a
                    // relayed message came in a frame under the same limit (compression can
                    // only grow it by a few bytes, and then the frame is not sent).
                    let wire = encode_frame(bytes, method).ok().map(Bytes::from);
                    built.push((method, wire.clone()));
                    wire
                }
            };
            let Some(wire) = wire else {
                continue;
            };
            link.unwritten += wire.len();
            let slow = link.unwritten > P2PT_SEND_QUEUE_BYTES_MAX;
            self.metrics.frames_sent += 1;
            self.metrics.bytes_sent += wire.len() as u64;
            self.outputs
                .push_back(Output::Transmit { conn, bytes: wire });
            if slow {
                self.close(conn, CloseReason::SlowPeer);
            }
        }
    }

    pub(super) fn send(&mut self, conn: ConnId, main: MainFlag, sub: SubFlag, args: Vec<Value>) {
        let now_s = self.now_s().unwrap_or(0);
        let m = Message::new(main, self.me.clone(), now_s, sub, args);
        let bytes = m.to_msgpack();
        let remember = main == MainFlag::WHISPER || main == MainFlag::BROADCAST;
        let compress = sub != SubFlag::HANDSHAKE;
        self.transmit(conn, &bytes, compress, remember);
    }

    /// Sends `conn` the next keys of its catch-up (a `whisper/store` each, the key's value
    /// now) while fewer than [`P2PT_CATCH_UP_UNWRITTEN_MAX`] bytes are unwritten; the rest
    /// follow each `Writable`. At once, a table larger than the send queue's bound closed
    /// every new link as slow.
    pub(super) fn continue_catch_up(&mut self, conn: ConnId) {
        loop {
            let Some(link) = self.links.get_mut(&conn) else {
                return;
            };
            if link.closing || link.unwritten >= P2PT_CATCH_UP_UNWRITTEN_MAX {
                return;
            }
            let Some(from) = link.catch_up.take() else {
                return;
            };
            let Some((key, e)) = self.table.first_after(&from) else {
                link.caught_up_early.clear();
                return;
            };
            link.catch_up = Some(Bound::Excluded(key.clone()));
            if link.caught_up_early.remove(key) {
                // Sent ahead of its turn already.
                continue;
            }
            let args = catch_up_args(key, e);
            self.send(conn, MainFlag::WHISPER, SubFlag::STORE, args);
        }
    }

    /// Sends `conn` the catch-up store of `key` now, if its catch-up has yet to reach it,
    /// has not sent it ahead already, and the table holds it (the catch-up skips it when it
    /// gets there).
    pub(super) fn catch_up_key_first(&mut self, conn: ConnId, key: &[u8]) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if link.closing || !link.catch_up_pending(key) || link.caught_up_early.contains(key) {
            return;
        }
        let Some(e) = self.table.get(key) else {
            return;
        };
        link.caught_up_early.insert(key.to_vec());
        let args = catch_up_args(key, e);
        self.send(conn, MainFlag::WHISPER, SubFlag::STORE, args);
    }

    pub(super) fn send_handshake(&mut self, conn: ConnId) {
        let codes = self.ours.iter().map(|m| u64::from(m.code())).collect();
        let h = Handshake {
            id: self.me.clone(),
            protocol_id: self.protocol_id.clone().into_bytes(),
            addr: self.announce.clone(),
            compression: codes,
        };
        let args = h.to_message(0).args;
        self.send(conn, MainFlag::WHISPER, SubFlag::HANDSHAKE, args);
    }

    pub(super) fn send_peers(&mut self, conn: ConnId) {
        let list = Peers(
            self.routing
                .iter()
                .filter_map(|(id, c)| {
                    let p = self.links.get(c)?.peer.as_ref()?;
                    Some((p.addr.clone(), id.clone()))
                })
                .collect(),
        );
        let args = list.to_message(Vec::new(), 0).args;
        self.send(conn, MainFlag::WHISPER, SubFlag::PEERS, args);
    }
}
