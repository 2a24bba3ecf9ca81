//! Connections: dials (configured addresses redialed on a backoff), closes, the routing
//! table kept in step, and the timers (handshake and partial-frame timeouts, redials).

use weft_protocol::p2pt::Addr;

use super::{
    text, P2ptNode, P2PT_HANDSHAKE_TIMEOUT, P2PT_PARTIAL_FRAME_TIMEOUT, P2PT_REDIAL_MAX,
    P2PT_REDIAL_MIN,
};
use crate::connection::{CloseReason, ConnId};
use crate::io::{Event, Output};
use crate::p2pt::link::Link;
use crate::p2pt::P2ptEvent;
use crate::time::Duration;

/// `host:port` as a driver dials it (brackets around an IPv6 host).
pub(super) fn dial_addr(a: &Addr) -> String {
    if a.host.contains(':') {
        format!("[{}]:{}", a.host, a.port)
    } else {
        format!("{}:{}", a.host, a.port)
    }
}

impl P2ptNode {
    // ----- connections --------------------------------------------------------------------
    pub(super) fn dial(&mut self, addr: String) -> ConnId {
        let conn = ConnId(self.next_outbound << 1);
        self.next_outbound += 1;
        self.links
            .insert(conn, Link::new(conn, true, addr.clone(), self.now));
        self.outputs.push_back(Output::Connect { conn, addr });
        conn
    }

    /// Whether a linked peer announced `addr` (`host:port`) as where it listens.
    pub(super) fn linked_at(&self, addr: &str) -> bool {
        self.routing.values().any(|c| {
            self.links
                .get(c)
                .and_then(|l| l.peer.as_ref())
                .is_some_and(|p| dial_addr(&p.addr) == addr)
        })
    }

    pub(super) fn dial_configured(&mut self, addr: &str) {
        let conn = self.dial(addr.to_owned());
        if let Some(c) = self.configured.get_mut(addr) {
            c.conn = Some(conn);
            c.redial_at = None;
        }
    }

    pub(super) fn event(&mut self, e: P2ptEvent) {
        self.outputs.push_back(Output::Event(Event::P2pt(e)));
    }

    /// Emits a close: nothing more is read from or sent to `conn`.
    pub(super) fn close(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if link.closing {
            return;
        }
        link.closing = true;
        if reason.is_fault() {
            self.metrics.faults += 1;
            self.outputs
                .push_back(Output::Event(Event::ConnectionClosed {
                    conn,
                    reason: reason.clone(),
                }));
        }
        self.unroute(conn, reason.clone());
        self.outputs.push_back(Output::Close { conn, reason });
    }

    /// Takes `conn` out of the routing table if it is the link kept for its peer.
    pub(super) fn unroute(&mut self, conn: ConnId, reason: CloseReason) {
        let Some(id) = self
            .links
            .get(&conn)
            .and_then(|l| l.peer_id())
            .map(<[u8]>::to_vec)
        else {
            return;
        };
        if self.routing.get(&id) == Some(&conn) {
            self.routing.remove(&id);
            self.event(P2ptEvent::PeerDown {
                id: text(&id),
                reason,
            });
        }
    }

    /// The connection is gone (closed by the driver, or its dial failed).
    pub(super) fn gone(&mut self, conn: ConnId, reason: CloseReason) {
        self.unroute(conn, reason);
        let Some(link) = self.links.remove(&conn) else {
            return;
        };
        if self.shut_down {
            return;
        }
        let now = self.now;
        if let Some(c) = self.configured.get_mut(&link.addr) {
            if c.conn == Some(conn) {
                c.conn = None;
                if link.peer.is_none() {
                    c.failures = c.failures.saturating_add(1);
                }
                let shift = c.failures.saturating_sub(1).min(5);
                let wait = Duration::from_millis(
                    (P2PT_REDIAL_MIN.as_millis() << shift).min(P2PT_REDIAL_MAX.as_millis()),
                );
                c.redial_at = Some(now + wait);
            }
        }
    }

    pub(super) fn run_timers(&mut self) {
        if self.shut_down {
            return;
        }
        let now = self.now;
        let mut late = Vec::new();
        for l in self.links.values().filter(|l| !l.closing && !l.dialing) {
            if l.peer.is_none() && now >= l.opened_at + P2PT_HANDSHAKE_TIMEOUT {
                late.push((l.conn, CloseReason::HandshakeTimeout));
            } else if l
                .partial_since
                .is_some_and(|t| now >= t + P2PT_PARTIAL_FRAME_TIMEOUT)
            {
                late.push((l.conn, CloseReason::Timeout));
            }
        }
        for (conn, reason) in late {
            self.close(conn, reason);
        }
        let due: Vec<String> = self
            .configured
            .iter()
            .filter(|(_, c)| c.conn.is_none() && c.redial_at.is_some_and(|t| now >= t))
            .map(|(a, _)| a.clone())
            .collect();
        for addr in due {
            if self.linked_at(&addr) {
                // Linked through the peer's own dial (the two-link rule kept that one): look
                // again later rather than dial into the same rule.
                if let Some(c) = self.configured.get_mut(&addr) {
                    c.redial_at = Some(now + P2PT_REDIAL_MAX);
                }
            } else {
                self.dial_configured(&addr);
            }
        }
    }
}
