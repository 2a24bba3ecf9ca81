//! Connections: dialed, accepted, connected, closed (with the BYE a failure sends), and the
//! caps they count against.

use rand_chacha::rand_core::RngCore;
use weft_protocol::{ByeReason, Family, Hello, Message, NodeId, CAP_BROADCASTS_UNSIGNED, CAP_LZ4};

use super::address;
use super::conn::{Conn, ConnState};
use super::handshake::Handshake;
use super::send::flush_conn;
use super::wire::{AnyWire, NoiseWire};
use super::{Notice, Session};
use crate::connection::{CloseReason, ConnId, Direction};
use crate::identity::Role;
use crate::io::{Event, Misuse, Output, SessionRefusal};
use crate::noise::NoiseRole;
use crate::sending::Class;
use crate::time::Instant;

impl Session {
    /// Connections of `direction` that count against the caps: not closing, not dedicated,
    /// except that an inbound dedicated connection counts until its peer is proven.
    pub(super) fn count(&self, direction: Direction) -> usize {
        self.conns
            .values()
            .filter(|c| c.direction == direction && !c.is_closing())
            .filter(|c| {
                c.dedicated.is_none() || (direction == Direction::Inbound && c.is_unauthenticated())
            })
            .count()
    }

    /// The inbound connection counted against `inbound_max` whose peer has proven nothing
    /// yet, opened first (the lowest id among those opened at once).
    fn oldest_unproven_inbound(&self) -> Option<ConnId> {
        self.conns
            .values()
            .filter(|c| c.direction == Direction::Inbound && c.is_unauthenticated())
            .min_by_key(|c| (c.opened_at, c.id))
            .map(|c| c.id)
    }

    /// Inbound connections, not closing, from the host of `addr`.
    pub(super) fn count_from(&self, addr: &str) -> usize {
        let host = address::host_of(addr);
        self.conns
            .values()
            .filter(|c| c.direction == Direction::Inbound && !c.is_closing())
            .filter(|c| address::host_of(&c.addr) == host)
            .count()
    }

    /// `Command::Connect`: `addr` is configured (redialed for as long as the node runs,
    /// SPEC.md §8.10) and dialed now, unless a dial of it is under way or its node is linked.
    pub(crate) fn connect(&mut self, now: Instant, addr: String) -> Result<(), SessionRefusal> {
        if self.shut_down {
            return Err(SessionRefusal::ShutDown);
        }
        if self.count(Direction::Outbound) >= self.limits.outbound_max {
            return Err(SessionRefusal::TooManyConnections);
        }
        self.redials
            .configure(&addr)
            .map_err(|_| SessionRefusal::TooManyConfiguredPeers)?;
        let linked = self
            .redials
            .node_of(&addr)
            .is_some_and(|n| self.links.contains_key(&n));
        if !linked && !self.redials.is_dialing(&addr) {
            let conn = self.dial(now, addr.clone());
            self.redials.dialing(&addr, conn);
        }
        self.arm_redial();
        Ok(())
    }

    /// A protocol's dial of `node` at `addr`, an address someone else named (a drop's holder
    /// found through the tracker, SPEC.md §24.6): dialed once, never configured for redials,
    /// and only if `node` is not this node, not linked, not being dialed, not kept away
    /// (`Command::Disconnect`), below `outbound_max`, and the address passes the per-address
    /// guard and the global budget of discovery's dials (§10.7), which it counts against.
    pub(crate) fn dial_named(&mut self, now: Instant, node: NodeId, addr: String) {
        let wanted = node != self.identity.node_id()
            && !self.links.contains_key(&node)
            && !self.dial_targets.values().any(|n| *n == node)
            && !self.disconnected.contains(&node)
            && !address::is_unspecified(&addr);
        if self.shut_down || !wanted {
            return;
        }
        let allowed = self.count(Direction::Outbound) < self.limits.outbound_max
            && self
                .dial_guard
                .allows(&addr, now, self.limits.dial_address_attempts_max)
            && self
                .dial_guard
                .budget_allows(now, self.limits.discovery_dials_per_minute);
        if !allowed {
            self.metrics.named_dials_refused += 1;
            return;
        }
        self.dial_guard
            .dialed(&addr, now, self.timer_periods.dial_backoff);
        let conn = self.dial(now, addr);
        self.dial_targets.insert(conn, node);
        self.metrics.named_dials += 1;
    }

    /// `Command::Disconnect`: closes the link to `node`, and forgets its redialed addresses
    /// and its place among the known peers, so it is not dialed again.
    pub(crate) fn disconnect(&mut self, node: NodeId) -> Result<(), SessionRefusal> {
        if self.shut_down {
            return Err(SessionRefusal::ShutDown);
        }
        let link = self.links.get(&node).copied();
        // Refused before anything changes (an `Err` leaves the node as it was).
        if link.is_none() && !self.redials.has_node(&node) {
            return Err(SessionRefusal::NotLinked(node));
        }
        self.redials.remove_node(&node);
        self.known.forget(&node);
        if !self.disconnected.contains(&node) {
            self.disconnected.push_back(node);
            if self.disconnected.len() > self.limits.disconnected_nodes_max {
                self.disconnected.pop_front();
            }
        }
        self.arm_redial();
        if let Some(conn) = link {
            self.close(conn, CloseReason::Requested, Some(ByeReason::Requested));
        }
        Ok(())
    }

    /// `Command::Shutdown`: BYE to every peer, every connection closed, timers stopped; a
    /// changed list of known peers goes to the host.
    pub(crate) fn shutdown(&mut self) {
        self.known_storing = false;
        self.store_known();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, CloseReason::Shutdown, Some(ByeReason::Shutdown));
        }
        self.shut_down = true;
        self.timers.clear();
    }

    pub(super) fn dial(&mut self, now: Instant, addr: String) -> ConnId {
        self.last_outbound += 1;
        let conn = ConnId(self.last_outbound << 1);
        self.conns.insert(
            conn,
            Conn::new(conn, addr.clone(), Direction::Outbound, now),
        );
        self.outputs.push_back(Output::Connect { conn, addr });
        conn
    }

    pub(crate) fn accepted(
        &mut self,
        now: Instant,
        conn: ConnId,
        addr: String,
    ) -> Result<(), Misuse> {
        if !conn.is_inbound() || self.conns.contains_key(&conn) {
            return Err(Misuse::BadInboundId(conn));
        }
        let mut full = self.count(Direction::Inbound) >= self.limits.inbound_max;
        let share_full = self.count_from(&addr) >= self.limits.inbound_per_address_max;
        if full && !share_full && !self.shut_down {
            // The oldest connection that has proven nothing makes room: refusing the newcomer
            // let anyone hold every slot with idle sockets, reopened each handshake timeout.
            if let Some(oldest) = self.oldest_unproven_inbound() {
                self.metrics.inbound_evicted_unproven += 1;
                let plaintext = self.noise.is_none();
                let bye = plaintext.then_some(ByeReason::TooManyConnections);
                self.close(oldest, CloseReason::TooManyConnections, bye);
                full = false;
            }
        }
        self.conns
            .insert(conn, Conn::new(conn, addr, Direction::Inbound, now));
        // A refusal's BYE goes only on plaintext links: over Noise no channel exists yet to
        // carry it, and the connection closes without a byte (SPEC.md §8.4, §21.6).
        let plaintext = self.noise.is_none();
        let bye = |reason| plaintext.then_some(reason);
        if self.shut_down {
            self.close(conn, CloseReason::Shutdown, bye(ByeReason::Shutdown));
        } else if full || share_full {
            if share_full && !full {
                self.metrics.inbound_refused_per_address += 1;
            }
            self.close(
                conn,
                CloseReason::TooManyConnections,
                bye(ByeReason::TooManyConnections),
            );
        } else {
            self.start_handshake(conn);
        }
        Ok(())
    }

    pub(crate) fn connected(&mut self, conn: ConnId) -> Result<(), Misuse> {
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Dialing) => {
                self.start_handshake(conn);
                Ok(())
            }
            // The dial timed out (a timer run at the top of this very call may have closed
            // it): the driver's Close is on its way.
            Some(ConnState::Closing) => Ok(()),
            _ => Err(Misuse::NotDialing(conn)),
        }
    }

    pub(crate) fn connect_failed(&mut self, now: Instant, conn: ConnId) -> Result<(), Misuse> {
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Dialing) => {
                self.conns.remove(&conn);
                self.dial_failed(now, conn);
                self.dedicated.closed(conn);
                self.dial_ended(now, conn, &CloseReason::ConnectFailed);
                Ok(())
            }
            // A Close we asked for may cross the driver's failure report.
            Some(ConnState::Closing) => {
                self.conns.remove(&conn);
                self.dial_targets.remove(&conn);
                self.dedicated.closed(conn);
                Ok(())
            }
            _ => Err(Misuse::NotDialing(conn)),
        }
    }

    pub(super) fn dial_failed(&mut self, now: Instant, conn: ConnId) {
        if let Some(node) = self.dial_targets.remove(&conn) {
            self.book.dial_failed(
                now,
                &node,
                self.timer_periods.dial_backoff,
                self.limits.dial_attempts_max,
            );
        }
    }

    pub(crate) fn writable(&mut self, conn: ConnId) -> Result<(), Misuse> {
        // Frames handed out for `conn` that the driver has not taken yet (the timers run at
        // the top of this very call made them) are not written: they stay in flight, or the
        // count would fall short of what the driver holds (SPEC.md §8.1, §12).
        let unpolled: usize = self
            .outputs
            .iter()
            .map(|o| match o {
                Output::Transmit { conn: c, bytes } if *c == conn => bytes.len(),
                _ => 0,
            })
            .sum();
        let c = self.conns.get_mut(&conn).ok_or(Misuse::UnknownConn(conn))?;
        c.queue_mut().written(unpolled);
        self.flush(conn);
        Ok(())
    }

    pub(crate) fn closed(&mut self, now: Instant, conn: ConnId) -> Result<(), Misuse> {
        if !self.conns.contains_key(&conn) {
            return Err(Misuse::UnknownConn(conn));
        }
        self.close(conn, CloseReason::Lost, None);
        self.conns.remove(&conn);
        self.dedicated.closed(conn);
        self.dial_failed(now, conn);
        Ok(())
    }

    pub(super) fn start_handshake(&mut self, conn: ConnId) {
        let mut nonce = [0u8; 32];
        self.rng.fill_bytes(&mut nonce);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let role = match c.direction {
            Direction::Outbound => Role::Dialer,
            Direction::Inbound => Role::Acceptor,
        };
        let mut capabilities = if self.compression { CAP_LZ4 } else { 0 };
        if !self.broadcasts_signed {
            capabilities |= CAP_BROADCASTS_UNSIGNED;
        }
        let hello = Hello {
            network: self.network,
            public_key: self.identity.public_key(),
            nonce,
            incarnation: self.incarnation,
            listen_addr: self.listen_addr.clone(),
            capabilities,
            families: self.families,
            dedicated: c.dedicated.map(Family::high_byte),
        };
        if let Some(keys) = &self.noise {
            let noise_role = match role {
                Role::Dialer => NoiseRole::Initiator,
                Role::Acceptor => NoiseRole::Responder,
            };
            let mut seed = [0u8; 32];
            self.noise_rng.fill_bytes(&mut seed);
            c.set_wire(AnyWire::Noise(Box::new(NoiseWire::new(
                keys, noise_role, seed,
            ))));
        }
        c.state = ConnState::Handshaking(Box::new(Handshake::new(nonce, role)));
        self.send_session(conn, &Message::Hello(hello));
    }

    /// Closes `conn`: sends BYE first if given, asks the driver to close, and tells the
    /// application and the protocols what was lost. The connection stays known (as closing)
    /// until `Closed`.
    pub(crate) fn close(&mut self, conn: ConnId, reason: CloseReason, bye: Option<ByeReason>) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.is_closing() {
            return;
        }
        let was_dialing = matches!(c.state, ConnState::Dialing);
        let dial_unfinished = c.direction == Direction::Outbound && c.is_unauthenticated();
        let peer = c.peer().map(|p| (p.node, p.listen_addr.clone()));
        let opened_at = c.opened_at;
        if c.flush_due {
            // What the window takes of the frames queued during this input still goes out,
            // as it would have had each been handed out when queued.
            let window = self.limits.transmit_window_bytes;
            let (metrics, outputs, notices) =
                (&mut self.metrics, &mut self.outputs, &mut self.notices);
            flush_conn(c, now, window, metrics, outputs, notices);
        }
        c.queue_mut().clear();
        if let (Some(bye), false) = (bye, was_dialing) {
            // BYE goes out ahead of the close whatever the window: the driver writes what it
            // was handed before closing.
            let frame = Message::Bye(bye).to_frame(false).into_bytes();
            c.queue_mut()
                .enqueue(&frame, Class::Control, usize::MAX, usize::MAX);
            if let Some(sent) = c.next_transmit(now, usize::MAX, &mut self.metrics.traffic) {
                self.metrics.frames_sent += u64::from(sent.frames);
                self.metrics.bytes_sent += sent.bytes.len() as u64;
                self.outputs.push_back(Output::Transmit {
                    conn,
                    bytes: sent.bytes,
                });
            }
        }
        c.state = ConnState::Closing;
        // Nothing more is read from it: what it held goes now, not when the driver closes it.
        c.drop_received();
        if reason != CloseReason::Lost {
            self.outputs.push_back(Output::Close {
                conn,
                reason: reason.clone(),
            });
        }
        if reason.is_fault() {
            self.metrics.connections_failed += 1;
            self.outputs
                .push_back(Output::Event(Event::ConnectionClosed {
                    conn,
                    reason: reason.clone(),
                }));
        }
        if dial_unfinished {
            self.dial_ended(now, conn, &reason);
        }
        let Some((node, listen_addr)) = peer else {
            return;
        };
        if self.links.get(&node) != Some(&conn) {
            return;
        }
        self.links.remove(&node);
        self.outputs.push_back(Output::Event(Event::PeerDown {
            node,
            reason: reason.clone(),
        }));
        self.redial_after_link_down(now, node, listen_addr, &reason, opened_at);
        self.notices.push_back(Notice::LinkDown { node, reason });
    }
}

/// The BYE that goes with a handshake failure.
pub(super) fn bye_for(reason: &CloseReason) -> Option<ByeReason> {
    match reason {
        CloseReason::WrongNetwork | CloseReason::BroadcastModeMismatch => {
            Some(ByeReason::WrongNetwork)
        }
        CloseReason::BadProof => Some(ByeReason::BadProof),
        CloseReason::UnexpectedMessage(_) => Some(ByeReason::ProtocolViolation),
        _ => None,
    }
}
