//! Sending: a protocol's message routed to its peer's link (or a dedicated connection,
//! dialed on demand), framed once per kind of peer, queued and flushed within the transmit
//! window.

use std::collections::VecDeque;

use bytes::Bytes;
use weft_protocol::{ByeReason, Family, Frame, Message, NodeId};

use super::conn::Conn;
use super::send_queue::Enqueued;
use super::{Notice, Session};
use crate::connection::{CloseReason, ConnId};
use crate::io::Output;
use crate::metrics::SessionMetrics;
use crate::sending::{Class, Outgoing, Recipients};
use crate::time::Instant;

impl Session {
    /// Learns an address for `node` from a protocol (a cascade, a Chord contact): hearsay,
    /// which never replaces the address a linked node's own HELLO named (a link outweighs
    /// hearsay: any peer could have named any address for it, redirecting its redials and
    /// every node the address travels on to).
    pub(crate) fn learn(&mut self, now: Instant, node: NodeId, addr: &str) {
        let named = self
            .link_peer(&node)
            .is_some_and(|p| p.listen_addr.is_some());
        if node != self.identity.node_id() && !named {
            self.book.learn(now, node, addr);
        }
    }

    /// Forgets `node`'s address, unless it is linked (a link outweighs hearsay).
    pub(crate) fn forget(&mut self, node: &NodeId) {
        if !self.links.contains_key(node) {
            self.book.forget(node);
        }
    }

    /// The connection that carries `family`'s messages to `node`: its link if the peer runs
    /// the family, else an open dedicated connection.
    pub(super) fn route(&self, node: &NodeId, family: Family) -> Option<ConnId> {
        let linked = self.links.get(node).filter(|c| {
            self.conns
                .get(c)
                .and_then(Conn::peer)
                .is_some_and(|p| p.runs(family))
        });
        linked
            .or_else(|| self.dedicated.by_peer.get(&(*node, family)))
            .copied()
    }

    /// Sends a protocol's message to its recipients.
    pub(crate) fn send(
        &mut self,
        now: Instant,
        family: Family,
        to: Recipients,
        message: &Outgoing,
        class: Class,
    ) {
        match to {
            Recipients::Links { except } => self.send_to_links(family, except, message, class),
            Recipients::Peer(node) | Recipients::PeerOrDial(node) => {
                if let Some(conn) = self.route(&node, family) {
                    return self.send_on(conn, message, class);
                }
                let dial = matches!(to, Recipients::PeerOrDial(_));
                if !dial || self.shut_down {
                    self.metrics.unroutable += 1;
                    return;
                }
                self.dial_dedicated(now, node, family, message, class);
            }
        }
    }

    /// Every link whose peer runs `family`, but `except`: framing the message at most twice.
    pub(super) fn send_to_links(
        &mut self,
        family: Family,
        except: Option<NodeId>,
        message: &Outgoing,
        class: Class,
    ) {
        let except = except.and_then(|node| self.links.get(&node).copied());
        let mut targets = core::mem::take(&mut self.scratch);
        targets.extend(self.links.values().filter(|c| Some(**c) != except));
        let mut frames = Frames::default();
        for &conn in &targets {
            let frames = &mut frames;
            self.send_built(conn, Some(family), class, move |compress| {
                let frames = frames;
                frames.get(message, compress)
            });
        }
        targets.clear();
        self.scratch = targets;
    }

    /// Opens a dedicated connection of `family` to `node` for `message`, or holds it for one
    /// already opening.
    pub(super) fn dial_dedicated(
        &mut self,
        now: Instant,
        node: NodeId,
        family: Family,
        message: &Outgoing,
        class: Class,
    ) {
        if self.dedicated.hold((node, family), message, class) {
            return;
        }
        let addr = match self.book.addr(&node) {
            Some(addr) if node != self.identity.node_id() => addr.to_owned(),
            _ => {
                self.metrics.unroutable += 1;
                return;
            }
        };
        self.evict_dedicated(None);
        let conn = self.dial(now, addr);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.dedicated = Some(family);
        }
        self.metrics.dedicated_dials += 1;
        self.dedicated.dialing.insert(conn, (node, family));
        self.dedicated
            .pending
            .insert((node, family), vec![(message.clone(), class)]);
    }

    pub(super) fn send_on(&mut self, conn: ConnId, message: &Outgoing, class: Class) {
        let mut frames = Frames::default();
        self.send_built(conn, None, class, |compress| {
            let frames = &mut frames;
            frames.get(message, compress)
        });
    }

    /// A session message to `conn`.
    pub(super) fn send_session(&mut self, conn: ConnId, msg: &Message<'_>) {
        let compress = self.conns.get(&conn).is_some_and(|c| c.send_compressed);
        let frame = msg.to_frame(compress).into_bytes();
        self.send_built(conn, None, Class::Control, |_| &frame);
    }

    /// Queues the frame `build` makes (told whether the peer takes compressed frames) under
    /// the overflow rule and hands the driver what the window allows; with `family`, only if
    /// the peer runs it.
    pub(super) fn send_built<'f>(
        &mut self,
        conn: ConnId,
        family: Option<Family>,
        class: Class,
        build: impl FnOnce(bool) -> &'f Bytes,
    ) {
        let limits = &self.limits;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.is_closing() {
            return;
        }
        if let Some(family) = family {
            if !c.peer().is_some_and(|p| p.runs(family)) {
                return;
            }
        }
        let (relay_max, hard_max) = (limits.relay_queue_bytes_max, limits.send_queue_bytes_max);
        // Dropped whatever it holds: not built (copied, perhaps compressed) first. A peer
        // that stops reading and asks for repairs would otherwise have every held broadcast
        // built for each small MESH_WANT, and dropped.
        if class == Class::Relay && c.queue().drops_every_relay(relay_max) {
            c.count_relay_dropped();
            self.metrics.relays_dropped += 1;
            return;
        }
        let frame = build(c.send_compressed);
        match c.queue_mut().enqueue(frame, class, relay_max, hard_max) {
            // Handed out at the end of the input (`flush_queued`): every frame queued for the
            // connection meanwhile in one transmit, under Noise in one seal.
            Enqueued::Queued if !c.flush_due => {
                c.flush_due = true;
                self.unflushed.push(conn);
            }
            Enqueued::Queued => {}
            Enqueued::DroppedRelay => {
                c.count_relay_dropped();
                self.metrics.relays_dropped += 1;
            }
            Enqueued::NoRoom => self.metrics.bulk_refused += 1,
            Enqueued::Overflow => {
                self.close(conn, CloseReason::SlowPeer, Some(ByeReason::SlowPeer));
            }
        }
    }

    /// Hands the driver what the transmit window allows of the frames queued since the last
    /// call, each connection's together (one `Transmit`, under Noise one seal, per connection
    /// and window): the node calls it once its input has been handled, then carries the
    /// notices it raised (a bulk frame left). Whether it raised any.
    pub(crate) fn flush_queued(&mut self) -> bool {
        let mut conns = core::mem::take(&mut self.unflushed);
        let window = self.limits.transmit_window_bytes;
        for conn in conns.drain(..) {
            let Some(c) = self.conns.get_mut(&conn) else {
                continue;
            };
            c.flush_due = false;
            if c.is_closing() {
                continue;
            }
            let (metrics, outputs, notices) =
                (&mut self.metrics, &mut self.outputs, &mut self.notices);
            flush_conn(c, self.now, window, metrics, outputs, notices);
        }
        self.unflushed = conns;
        !self.notices.is_empty()
    }

    /// Hands the driver what `conn`'s transmit window allows of its send queue.
    pub(super) fn flush(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            let window = self.limits.transmit_window_bytes;
            flush_conn(
                c,
                self.now,
                window,
                &mut self.metrics,
                &mut self.outputs,
                &mut self.notices,
            );
        }
    }
}

/// Hands the driver what `c`'s transmit window allows of its send queue; a protocol whose
/// bulk frame leaves hears that the peer has room again.
pub(super) fn flush_conn(
    c: &mut Conn,
    now: Instant,
    window: usize,
    metrics: &mut SessionMetrics,
    outputs: &mut VecDeque<Output>,
    notices: &mut VecDeque<Notice>,
) {
    while let Some(sent) = c.next_transmit(now, window, &mut metrics.traffic) {
        metrics.frames_sent += u64::from(sent.frames);
        if let (Some(code), Some(peer)) = (sent.bulk, c.peer()) {
            if let Some(family) = code.family() {
                notices.push_back(Notice::Room {
                    node: peer.node,
                    family,
                });
            }
        }
        metrics.bytes_sent += sent.bytes.len() as u64;
        outputs.push_back(Output::Transmit {
            conn: c.id,
            bytes: sent.bytes,
        });
    }
}

/// One message's frames, built lazily: plain and compressed, each at most once.
#[derive(Default)]
pub(super) struct Frames {
    plain: Option<Bytes>,
    packed: Option<Bytes>,
}

impl Frames {
    /// The frame for a peer that does (`compress`) or does not take lz4.
    fn get(&mut self, message: &Outgoing, compress: bool) -> &Bytes {
        let slot = if compress {
            &mut self.packed
        } else {
            &mut self.plain
        };
        slot.get_or_insert_with(|| Frames::build(message, compress))
    }

    /// A received frame forwarded unchanged where the peer can take it; else framed anew.
    fn build(message: &Outgoing, compress: bool) -> Bytes {
        match &message.received {
            Some(f) if !f.flags().compressed() || compress => f.bytes().clone(),
            _ => Frame::build(message.code, &message.payload, compress).into_bytes(),
        }
    }
}
