//! Receiving: frames decoded from each connection, checked, and handled by kind: the
//! handshake, renegotiation, `peers`, requests, stores and deltas, broadcasts passed on
//! through the waterfalls.

use std::ops::Bound;

use bytes::Bytes;
use weft_protocol::p2pt::rmpv::Value;
use weft_protocol::p2pt::{
    Decoded, Handshake, MainFlag, Message, P2ptError, Peers, Store, SubFlag,
};

use super::connections::dial_addr;
use super::send::msgpack_args;
use super::{
    id_key, text, P2ptNode, P2PT_LINKS_MAX, P2PT_LISTED_ATTEMPTS_MAX, P2PT_LISTED_DIALS_PER_MINUTE,
    P2PT_OUTGOING_MAX, P2PT_REDIAL_MIN,
};
use crate::connection::{CloseReason, ConnId};
use crate::p2pt::link::PeerInfo;
use crate::p2pt::table::SyncTable;
use crate::p2pt::waterfalls::{Seen, Waterfalls};
use crate::p2pt::P2ptEvent;

impl P2ptNode {
    // ----- receiving ----------------------------------------------------------------------
    pub(super) fn read_frames(&mut self, conn: ConnId) {
        loop {
            let Some(link) = self.links.get_mut(&conn) else {
                return;
            };
            if link.closing {
                return;
            }
            match link.next_frame(&self.ours, self.now) {
                Ok(Some(frame)) => {
                    self.metrics.frames_received += 1;
                    self.on_frame(conn, frame);
                }
                Ok(None) => return,
                Err(e) => {
                    self.close(conn, CloseReason::P2pt(e));
                    return;
                }
            }
        }
    }

    pub(super) fn on_frame(&mut self, conn: ConnId, frame: Decoded) {
        let Decoded {
            id,
            msgpack,
            message: m,
            ..
        } = frame;
        if m.main_flag == MainFlag::RENEGOTIATE {
            self.on_renegotiate(conn, &m);
            return;
        }
        if m.main_flag == MainFlag::BROADCAST {
            let clock_s = self.now_s();
            let now_s = clock_s.unwrap_or(m.timestamp);
            if Waterfalls::is_expired(m.timestamp, now_s) {
                self.metrics.broadcasts_expired += 1;
                return;
            }
            match self.waterfalls.insert(id, m.timestamp, clock_s) {
                Seen::Fresh => {}
                Seen::Again => {
                    self.metrics.broadcast_duplicates += 1;
                    return;
                }
                Seen::Full => {
                    self.metrics.broadcasts_refused_full += 1;
                    return;
                }
            }
            // py2p relays to every linked peer but the originator, the sender's link
            // included, and forwards the bytes it received.
            let to: Vec<ConnId> = self
                .routing
                .iter()
                .filter(|(peer, _)| peer.as_slice() != m.sender.as_slice())
                .map(|(_, c)| *c)
                .collect();
            // A delta to a link whose table catch-up has yet to reach its key goes after the
            // key's catch-up store (its value before the delta, which this node applies
            // next), as it did when the catch-up went in one burst. Sent alone first, it made
            // the key at a peer without it a map of the delta alone, and the catch-up's store
            // was then skipped there as truthy.
            if m.sub_flag == SubFlag::DELTA {
                if let Some(Value::Binary(key)) = m.args.first() {
                    for &conn in &to {
                        self.catch_up_key_first(conn, key);
                    }
                }
            }
            self.metrics.broadcasts_relayed += to.len() as u64;
            self.transmit_to(&to, &Bytes::copy_from_slice(&msgpack), true, true);
        }
        let sub = m.sub_flag;
        // A broadcast was written by its originator, not by this link's peer, which may only
        // have relayed it: what is wrong with it is dropped and counted, never held against
        // the link (one such frame, flooded, would otherwise cut every link it crossed).
        let relayed = m.main_flag == MainFlag::BROADCAST;
        if relayed && (sub == SubFlag::HANDSHAKE || sub == SubFlag::PEERS) {
            // A link's own session messages, meaningless as a broadcast.
            self.metrics.broadcasts_ignored += 1;
        } else if sub == SubFlag::HANDSHAKE {
            self.on_handshake(conn, &m);
        } else if sub == SubFlag::PEERS {
            self.on_peers(conn, &m);
        } else if sub == SubFlag::REQUEST {
            self.on_request(conn, &m);
        } else if sub == SubFlag::STORE && self.config.subnet.is_sync() {
            self.on_store(conn, &m, relayed);
        } else if sub == SubFlag::DELTA && self.config.subnet.is_sync() {
            self.on_delta(&m);
        } else if sub == SubFlag::BROADCAST || sub == SubFlag::WHISPER {
            self.metrics.delivered += 1;
            let args = msgpack_args(&m.args);
            self.event(P2ptEvent::Message {
                sender: text(&m.sender),
                broadcast: m.main_flag == MainFlag::BROADCAST,
                id,
                timestamp: m.timestamp,
                args,
            });
        }
        // Anything else (response, notify, chord's store/retrieve on a mesh...) py2p's
        // MeshSocket ignores too.
    }

    pub(super) fn on_renegotiate(&mut self, conn: ConnId, m: &Message) {
        if m.sub_flag == SubFlag::COMPRESSION {
            let Some(Value::Array(codes)) = m.args.first() else {
                self.close(
                    conn,
                    CloseReason::UnexpectedMessage("renegotiate/compression without a list"),
                );
                return;
            };
            let codes: Vec<u64> = codes.iter().filter_map(Value::as_u64).collect();
            let Some(link) = self.links.get_mut(&conn) else {
                return;
            };
            if link.set_peer_codes(&codes) {
                // py2p answers with its own methods the peer named, in its own order.
                let common: Vec<Value> = self
                    .ours
                    .iter()
                    .filter(|m| link.peer_reads(**m))
                    .map(|m| Value::from(u64::from(m.code())))
                    .collect();
                self.send(
                    conn,
                    MainFlag::RENEGOTIATE,
                    SubFlag::COMPRESSION,
                    vec![Value::Array(common)],
                );
            }
        } else if m.sub_flag == SubFlag::RESEND {
            // Once per message sent: a peer asking again and again would have the node
            // frame and compress up to 4 MiB for each 45-byte ask.
            if let Some(last) = self.links.get_mut(&conn).and_then(|l| l.take_resend()) {
                self.transmit_to(&[conn], &last, true, false);
            }
        }
    }

    pub(super) fn on_handshake(&mut self, conn: ConnId, m: &Message) {
        let Some(h) = self.parsed(conn, Handshake::parse(m)) else {
            return;
        };
        if h.protocol_id != self.protocol_id.as_bytes() {
            self.close(conn, CloseReason::WrongNetwork);
            return;
        }
        if h.id == self.me {
            self.close(conn, CloseReason::SelfConnection);
            return;
        }
        // A second handshake may change the address and codes, not who the peer is.
        if self
            .links
            .get(&conn)
            .and_then(|l| l.peer_id())
            .is_some_and(|id| id != h.id.as_slice())
        {
            self.close(
                conn,
                CloseReason::UnexpectedMessage("a second handshake with another id"),
            );
            return;
        }
        if let Some(&other) = self.routing.get(&h.id) {
            if other != conn {
                // py2p: the link opened by the node with the higher id survives.
                let this_outbound = self.links.get(&conn).is_some_and(|l| l.outbound);
                let me_higher = id_key(&self.me) > id_key(&h.id);
                if me_higher ^ this_outbound {
                    self.close(conn, CloseReason::DuplicateLink);
                    return;
                }
                self.close(other, CloseReason::DuplicateLink);
            }
        }
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        let first = link.peer.is_none();
        link.set_peer_codes(&h.compression);
        link.peer = Some(PeerInfo {
            id: h.id.clone(),
            addr: h.addr.clone(),
        });
        let addr = link.addr.clone();
        if link.outbound {
            // A dial of a listed address that reached a node: it is forgiven.
            self.listed.answered(&addr);
        }
        self.routing.insert(h.id.clone(), conn);
        if let Some(c) = self.configured.get_mut(&addr) {
            if c.conn == Some(conn) {
                c.failures = 0;
            }
        }
        if first {
            self.event(P2ptEvent::PeerUp {
                conn,
                id: text(&h.id),
                addr: dial_addr(&h.addr),
            });
        }
        self.send_peers(conn);
        if self.config.subnet.is_sync() && first {
            // Once per link: a second handshake (new codes, say) starts nothing again.
            if let Some(link) = self.links.get_mut(&conn) {
                link.catch_up = Some(Bound::Unbounded);
            }
            self.continue_catch_up(conn);
        }
    }

    /// A typed view's value, or `None` after closing `conn` for the fault.
    pub(super) fn parsed<T>(&mut self, conn: ConnId, view: Result<T, P2ptError>) -> Option<T> {
        match view {
            Ok(v) => Some(v),
            Err(e) => {
                self.close(conn, CloseReason::P2pt(e));
                None
            }
        }
    }

    pub(super) fn on_peers(&mut self, conn: ConnId, m: &Message) {
        let Some(peers) = self.parsed(conn, Peers::parse(m)) else {
            return;
        };
        for (addr, id) in peers.0 {
            let outgoing = self
                .links
                .values()
                .filter(|l| l.outbound && !l.closing)
                .count();
            if outgoing >= P2PT_OUTGOING_MAX || self.links.len() >= P2PT_LINKS_MAX {
                return;
            }
            let target = dial_addr(&addr);
            let known = id == self.me
                || self.routing.contains_key(&id)
                || addr == self.announce
                || addr.port == 0
                || self.links.values().any(|l| !l.closing && l.addr == target);
            if !known
                && self
                    .listed
                    .allows(&target, self.now, P2PT_LISTED_ATTEMPTS_MAX)
                && self
                    .listed
                    .budget_allows(self.now, P2PT_LISTED_DIALS_PER_MINUTE)
            {
                self.listed.dialed(&target, self.now, P2PT_REDIAL_MIN);
                self.dial(target);
            }
        }
    }

    pub(super) fn on_request(&mut self, conn: ConnId, m: &Message) {
        let star = match m.args.first() {
            Some(Value::String(s)) => s.as_bytes() == b"*",
            Some(Value::Binary(b)) => b == b"*",
            _ => false,
        };
        if star {
            self.send_peers(conn);
            return;
        }
        // `request [request id, node id]`: answered with where that node is, if linked.
        let (Some(req), Some(Value::Binary(wanted))) = (m.args.first(), m.args.get(1)) else {
            return;
        };
        let Some(addr) = self
            .routing
            .get(wanted)
            .and_then(|c| self.links.get(c))
            .and_then(|l| l.peer.as_ref())
            .map(|p| p.addr.clone())
        else {
            return;
        };
        let answer = vec![
            req.clone(),
            Value::Array(vec![
                Value::Array(vec![
                    Value::from(addr.host.as_str()),
                    Value::from(addr.port),
                ]),
                Value::Binary(wanted.clone()),
            ]),
        ];
        self.send(conn, MainFlag::BROADCAST, SubFlag::RESPONSE, answer);
    }

    /// A store; `relayed`: it came as a broadcast, and a malformed one is dropped and counted
    /// rather than closing the link.
    pub(super) fn on_store(&mut self, conn: ConnId, m: &Message, relayed: bool) {
        let s = match Store::parse(m) {
            Ok(s) => s,
            Err(_) if relayed => {
                self.metrics.broadcasts_ignored += 1;
                return;
            }
            Err(e) => {
                self.close(conn, CloseReason::P2pt(e));
                return;
            }
        };
        let now_s = self.now_s().unwrap_or(0);
        let leasing = self.leasing();
        let (owner, ts, catch_up) = match &s.meta {
            Some((owner, ts)) => (owner.clone(), *ts, true),
            None => (m.sender.clone(), m.timestamp, false),
        };
        let delete = s.value.is_nil();
        let apply = if catch_up {
            SyncTable::catch_up
        } else {
            SyncTable::store
        };
        let result = apply(
            &mut self.table,
            s.key.clone(),
            s.value.clone(),
            owner.clone(),
            ts,
            leasing,
            now_s,
        );
        match result {
            Ok(()) => self.changed(&s.key, (!delete).then_some(&s.value), owner, ts),
            Err(_) => self.metrics.table_writes_refused += 1,
        }
    }

    pub(super) fn on_delta(&mut self, m: &Message) {
        let (Some(Value::Binary(key)), Some(Value::Map(delta))) = (m.args.first(), m.args.get(1))
        else {
            self.metrics.table_writes_refused += 1;
            return;
        };
        let now_s = self.now_s().unwrap_or(0);
        let leasing = self.leasing();
        match self.table.delta(
            key.clone(),
            delta.clone(),
            m.sender.clone(),
            m.timestamp,
            leasing,
            now_s,
        ) {
            Ok(()) => {
                let value = self.table.get(key).map(|e| e.value.clone());
                self.changed(key, value.as_ref(), m.sender.clone(), m.timestamp);
            }
            Err(_) => self.metrics.table_writes_refused += 1,
        }
    }
}
