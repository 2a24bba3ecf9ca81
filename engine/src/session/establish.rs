//! The handshake's end (SPEC.md §8): HELLO and HELLO_ACK checked, a proven peer's link
//! established (one per peer, the older or the newer kept), dedicated connections.

use std::sync::Arc;

use weft_protocol::{ByeReason, Family, Hello, Message, NodeId};

use super::address;
use super::conn::{ConnState, Peer};
use super::connections::bye_for;
use super::handshake::{offers_lz4, Proven};
use super::incarnations::IncarnationCheck;
use super::{Notice, Session};
use crate::connection::{CloseReason, ConnId, Direction};
use crate::io::{Event, Output};
use crate::noise::NoiseError;
use crate::time::Instant;

impl Session {
    pub(super) fn on_hello(&mut self, conn: ConnId, hello: Hello) {
        let node = NodeId::from_public_key(&hello.public_key);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.transport_identity()
            .is_some_and(|key| key != hello.public_key)
        {
            // The HELLO claims an identity the Noise handshake did not bind (SPEC.md §21.3).
            c.fail_wire(NoiseError::IdentityMismatch);
            return self.close(conn, CloseReason::Noise(NoiseError::IdentityMismatch), None);
        }
        let inbound = c.direction == Direction::Inbound;
        let dedicated_dial = !inbound && c.dedicated.is_some();
        if self.disconnected.contains(&node)
            && !dedicated_dial
            && (inbound || !self.redials.dials_on_purpose(conn))
        {
            // Kept away by `Command::Disconnect` until this node dials it on purpose: an
            // inbound connection, or a dial of an address some peer named that reached it
            // (that address is given up: a close asked for ends no redial's dial).
            if !inbound {
                self.redials.drop_conn(conn);
                self.dial_failed(self.now, conn);
                self.arm_redial();
            }
            let bye = Some(ByeReason::Requested);
            return self.close(conn, CloseReason::Requested, bye);
        }
        if hello.network == self.network && self.incarnations.is_stale(node, hello.incarnation) {
            let bye = Some(ByeReason::StaleIncarnation);
            return self.close(conn, CloseReason::StaleIncarnation, bye);
        }
        // Only the dialer says a connection is dedicated (SPEC.md §6.2): an acceptor's
        // `dedicated` is ignored, so a plain dial stays a link whatever the answer.
        let dedicated = hello
            .dedicated
            .filter(|_| inbound)
            .map(|d| Family::from_high_byte(d).filter(|f| *f != Family::Session && self.runs(*f)));
        if let Some(None) = dedicated {
            let what = "a dedicated connection for a family this node does not run";
            let bye = Some(ByeReason::ProtocolViolation);
            return self.close(conn, CloseReason::UnexpectedMessage(what), bye);
        }
        let (identity, network, incarnation) = (&self.identity, self.network, self.incarnation);
        let broadcasts_signed = self.broadcasts_signed;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if let Some(Some(f)) = dedicated {
            c.dedicated.get_or_insert(f);
        }
        let ConnState::Handshaking(handshake) = &mut c.state else {
            return;
        };
        match handshake.on_hello(hello, identity, network, incarnation, broadcasts_signed) {
            Ok(ack) => self.send_session(conn, &Message::HelloAck(ack)),
            Err(reason) => {
                let bye = bye_for(&reason);
                self.close(conn, reason, bye);
            }
        }
    }

    pub(super) fn on_hello_ack(
        &mut self,
        now: Instant,
        conn: ConnId,
        ack: &weft_protocol::HelloAck,
    ) {
        let (identity, network) = (&self.identity, self.network);
        let Some(ConnState::Handshaking(handshake)) =
            self.conns.get_mut(&conn).map(|c| &mut c.state)
        else {
            return;
        };
        let our_nonce = handshake.our_nonce;
        match handshake.on_hello_ack(ack, identity, network) {
            Ok(proven) => self.establish(now, conn, proven, our_nonce),
            Err(reason) => {
                let bye = bye_for(&reason);
                self.close(conn, reason, bye);
            }
        }
    }

    pub(super) fn runs(&self, family: Family) -> bool {
        self.families & family.bit() != 0
    }

    pub(super) fn establish(
        &mut self,
        now: Instant,
        conn: ConnId,
        proven: Proven,
        our_nonce: [u8; 32],
    ) {
        let compression = self.compression;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Proven { node, hello } = proven;
        let dialer_nonce = match c.direction {
            Direction::Outbound => our_nonce,
            Direction::Inbound => hello.nonce,
        };
        let listen_addr = hello
            .listen_addr
            .as_deref()
            .and_then(|a| address::dialable(a, &c.addr));
        let peer = Peer {
            node,
            incarnation: hello.incarnation,
            listen_addr: listen_addr.clone(),
            families: hello.families | Family::Session.bit(),
            dialer_nonce,
            public_key: hello.public_key,
        };
        c.state = ConnState::Established(Arc::new(peer));
        c.send_compressed = compression && offers_lz4(&hello);
        let dedicated = c.dedicated;
        let redial_answered =
            c.direction == Direction::Outbound && self.redials.node_of(&c.addr) == Some(node);
        if self.dial_targets.remove(&conn) == Some(node) || redial_answered {
            // A discovery dial, or a redial of a saved or lost address, reached its node.
            self.dial_guard.answered(&c.addr);
        }
        self.metrics.handshakes_completed += 1;
        self.dial_guard.connected(&node, &c.addr);
        if let Some(family) = dedicated {
            return self.dedicated_established(conn, node, family);
        }
        // Whether this node chose to dial the peer: a configured address or one given by
        // `Command::Connect`. Not a discovery or a named dial (an address a peer gave), nor a
        // redial of a saved or lost address (its known-peers group stays as it was).
        let mut chosen = false;
        if let Some(redialed) = self.redials.linked(Some(conn), node) {
            chosen = redialed.configured;
            if redialed.configured {
                // A dial of an address dialed on purpose (`Command::Connect`, or configured)
                // ends the node's keep-away mark; no other connection does (SPEC.md §8.10):
                // a saved or lost address is one some peer named, maybe the marked node's.
                self.disconnected.retain(|n| *n != node);
            }
            if redialed.failures > 0 {
                self.outputs.push_back(Output::Event(Event::Redialed {
                    addr: redialed.addr,
                    node,
                    failures: redialed.failures,
                }));
            }
        }
        self.arm_redial();
        if let Some(addr) = &listen_addr {
            self.known.linked(node, addr, chosen);
            // Learned on a link that replaces one too: a peer whose address changed says so.
            self.book.learn(now, node, addr);
        }
        let restarted =
            self.incarnations.check(node, hello.incarnation) == IncarnationCheck::Restarted;
        if let Some(&old) = self.links.get(&node) {
            if self.keeps(old, conn) {
                return self.close(
                    conn,
                    CloseReason::DuplicateLink,
                    Some(ByeReason::DuplicateLink),
                );
            }
            self.links.insert(node, conn);
            self.close(
                old,
                CloseReason::DuplicateLink,
                Some(ByeReason::DuplicateLink),
            );
            if !restarted {
                // The same run of the peer on a new link: no new PeerUp, but the link it
                // replaces may have died with messages in flight, so catch up over the new one.
                self.notices.push_back(Notice::LinkUp {
                    node,
                    replaced: true,
                });
                return;
            }
        }
        self.links.insert(node, conn);
        self.outputs.push_back(Output::Event(Event::PeerUp {
            node,
            conn,
            incarnation: hello.incarnation,
            restarted,
        }));
        self.book.linked(&node);
        self.notices.push_back(Notice::LinkUp {
            node,
            replaced: false,
        });
    }

    /// The tie-break between two links to one peer (or two dedicated connections of one
    /// family to it, §8.9): true if `old` stays. Both ends reach the same verdict (SPEC.md
    /// §8.6): the higher incarnation wins; then the link dialed by the higher node id; then,
    /// for two links dialed by the same side, the higher dialer nonce.
    pub(super) fn keeps(&self, old: ConnId, new: ConnId) -> bool {
        let key = |conn: ConnId| {
            let c = self.conns.get(&conn)?;
            let p = c.peer()?;
            let dialer = match c.direction {
                Direction::Outbound => self.identity.node_id(),
                Direction::Inbound => p.node,
            };
            Some((p.incarnation, dialer, p.dialer_nonce))
        };
        key(old) >= key(new)
    }

    /// A dedicated connection's handshake finished: record it and send what waited for it.
    /// Two of one family to one peer (the two ends dialed each other at once) go through the
    /// links' tie-break, so both ends keep the same one (SPEC.md §8.9); replacing the old one
    /// at each end instead closed both, again at every retry of two peers in step.
    pub(super) fn dedicated_established(&mut self, conn: ConnId, node: NodeId, family: Family) {
        if let Some(wanted) = self.dedicated.dialing.remove(&conn) {
            if wanted != (node, family) {
                self.dedicated.pending.remove(&wanted);
                return self.close(conn, CloseReason::Requested, None);
            }
        } else if self.dedicated.len() >= self.limits.dedicated_conns_max {
            self.evict_dedicated(Some(conn));
        }
        let kept = match self.dedicated.by_peer.get(&(node, family)).copied() {
            Some(old) if old != conn && self.keeps(old, conn) => {
                self.close(conn, CloseReason::DuplicateLink, None);
                old
            }
            old => {
                self.dedicated.by_peer.insert((node, family), conn);
                if let Some(old) = old.filter(|old| *old != conn) {
                    self.close(old, CloseReason::DuplicateLink, None);
                }
                conn
            }
        };
        let waiting = self
            .dedicated
            .pending
            .remove(&(node, family))
            .unwrap_or_default();
        for (message, class) in waiting {
            self.send_on(kept, &message, class);
        }
    }

    /// At `dedicated_conns_max`, closes the dedicated connection idle the longest (not `keep`),
    /// open or still opening (a dial's waiting messages go with it).
    pub(super) fn evict_dedicated(&mut self, keep: Option<ConnId>) {
        if self.dedicated.len() < self.limits.dedicated_conns_max {
            return;
        }
        let open = self.dedicated.by_peer.values().copied();
        let opening = self.dedicated.dialing.keys().copied();
        let idlest = open
            .chain(opening)
            .filter(|c| Some(*c) != keep)
            .filter_map(|c| {
                self.conns
                    .get(&c)
                    .map(|x| (x.last_sent_at.max(x.last_received_at), c))
            })
            .min();
        if let Some((_, conn)) = idlest {
            self.dedicated.closed(conn);
            self.close(conn, CloseReason::Requested, None);
        }
    }
}
