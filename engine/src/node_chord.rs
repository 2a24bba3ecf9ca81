//! The node's side of Chord: carrying [`ChordOutput::Send`] to peers and delivering chord
//! frames to the [`Chord`] machine.
//!
//! A chord message travels over the mesh link to its peer if there is one, else over a
//! chord-only connection: dialed with [`CAP_CHORD_ONLY`] in HELLO, kept out of `links`, so
//! floods, discovery cascades and mesh digests never travel it (SPEC.md §20.4).

use std::collections::BTreeMap;

use rand_chacha::rand_core::RngCore;

use weft_protocol::{ChordMessage, ChordPeer, Message, NodeId, CAP_CHORD_ONLY};

use crate::chord::{Chord, ChordOutput};
use crate::conn::Priority;
use crate::io::{CloseReason, ConnId, Event, Output};
use crate::time::Instant;

use super::Node;

/// Mesh peers a node probes through each repair period (SPEC.md §20.3).
pub(crate) const CHORD_PROBES_PER_PERIOD: usize = 4;

/// Chord-only connections and the messages waiting for one to open.
#[derive(Debug, Default)]
pub(crate) struct ChordConns {
    /// Established chord-only connections by peer.
    pub(crate) by_node: BTreeMap<NodeId, ConnId>,
    /// Dials under way, by connection, with the peer they are for.
    pub(crate) dialing: BTreeMap<ConnId, NodeId>,
    /// Messages waiting for a dial, by peer (at most `CHORD_PENDING_MAX` each).
    pub(crate) pending: BTreeMap<NodeId, Vec<ChordMessage>>,
}

/// Messages held for one peer while its chord-only connection opens; more are dropped (the
/// requests among them time out).
const CHORD_PENDING_MAX: usize = 64;

impl Node {
    /// The Chord machine for this node, if `Config::chord` is set and it has a listen address.
    pub(super) fn new_chord(config: &crate::Config, node: NodeId) -> Option<Chord> {
        let chord = config.chord.clone()?;
        let addr = config.listen_addr.clone()?;
        Some(Chord::new(
            ChordPeer { node, addr },
            chord,
            config.rng_seed ^ config.incarnation,
        ))
    }

    /// Whether `conn` is a chord-only connection (dialed as one, or announced as one): never
    /// a mesh link (SPEC.md §20.4).
    pub fn is_chord_conn(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.chord_only)
    }

    /// Whether a connection being established is chord-only, from either side's HELLO.
    pub(super) fn chord_only(&self, conn: ConnId, capabilities: u32) -> bool {
        self.chord_conns.dialing.contains_key(&conn) || capabilities & CAP_CHORD_ONLY != 0
    }

    /// The handshake of a chord-only connection finished.
    pub(super) fn chord_established(&mut self, now: Instant, conn: ConnId, node: NodeId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.chord_only = true;
        }
        if let Some(wanted) = self.chord_conns.dialing.remove(&conn) {
            if wanted != node {
                self.chord_conns.pending.remove(&wanted);
                return self.close(conn, CloseReason::Requested, None);
            }
        }
        if let Some(old) = self.chord_conns.by_node.insert(node, conn) {
            if old != conn {
                self.close(old, CloseReason::DuplicateLink, None);
            }
        }
        for msg in self.chord_conns.pending.remove(&node).unwrap_or_default() {
            self.send_message(conn, &Message::Chord(msg), Priority::Control);
        }
        self.pump_chord(now);
    }

    /// A connection closed: forget it as a chord route.
    pub(super) fn chord_closed(&mut self, conn: ConnId) {
        if let Some(node) = self.chord_conns.dialing.remove(&conn) {
            self.chord_conns.pending.remove(&node);
        }
        self.chord_conns.by_node.retain(|_, c| *c != conn);
    }

    /// A chord frame arrived on an established connection.
    pub(super) fn on_chord_message(&mut self, now: Instant, conn: ConnId, msg: ChordMessage) {
        let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer()) else {
            return;
        };
        let from = ChordPeer {
            node: peer.node,
            addr: peer.listen_addr.clone().unwrap_or_default(),
        };
        if let Some(chord) = self.chord.as_mut() {
            chord.handle_message(now, &from, msg);
        }
        self.pump_chord(now);
    }

    /// Hands Chord's outputs on: messages to their peers, results to the application.
    pub(super) fn pump_chord(&mut self, now: Instant) {
        while let Some(out) = self.chord.as_mut().and_then(|c| c.poll_output()) {
            match out {
                ChordOutput::Send { to, msg } => self.chord_send(now, to, msg),
                ChordOutput::Event(e) => self.outputs.push_back(Output::Event(Event::Chord(e))),
            }
        }
    }

    fn chord_send(&mut self, now: Instant, to: ChordPeer, msg: ChordMessage) {
        let route = self
            .links
            .get(&to.node)
            .or_else(|| self.chord_conns.by_node.get(&to.node))
            .copied();
        if let Some(conn) = route {
            self.send_message(conn, &Message::Chord(msg), Priority::Control);
            return;
        }
        if let Some(queue) = self.chord_conns.pending.get_mut(&to.node) {
            if queue.len() < CHORD_PENDING_MAX {
                queue.push(msg);
            }
            return;
        }
        if to.addr.is_empty() || to.node == self.identity.node_id() {
            return;
        }
        self.evict_chord_conn();
        let conn = self.dial(now, to.addr.clone());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.chord_only = true;
        }
        self.chord_conns.dialing.insert(conn, to.node);
        self.chord_conns.pending.insert(to.node, vec![msg]);
    }

    /// At `chord_conns_max`, closes the chord-only connection idle the longest.
    fn evict_chord_conn(&mut self) {
        let open = self.chord_conns.by_node.len() + self.chord_conns.dialing.len();
        if open < self.config.limits.chord_conns_max {
            return;
        }
        let idlest = self
            .chord_conns
            .by_node
            .values()
            .filter_map(|c| {
                self.conns
                    .get(c)
                    .map(|x| (x.last_sent_at.max(x.last_received_at), *c))
            })
            .min();
        if let Some((_, conn)) = idlest {
            self.chord_conns.by_node.retain(|_, c| *c != conn);
            self.close(conn, CloseReason::Requested, None);
        }
    }

    /// Messages a chord-only connection may carry once established.
    pub(super) fn allowed_on_chord_conn(msg: &Message<'_>) -> bool {
        matches!(
            msg,
            Message::Chord(_) | Message::Ping(_) | Message::Pong(_) | Message::Bye(_)
        )
    }

    /// Every repair period: ask up to [`CHORD_PROBES_PER_PERIOD`] mesh peers (consecutive in
    /// node-id order from a random one) who follows this node on the ring, so rings that
    /// formed apart (a partition, concurrent first joins) merge once the mesh joins them
    /// (SPEC.md §20.3).
    pub(super) fn chord_probe(&mut self, now: Instant) {
        if self.chord.is_none() || self.links.is_empty() {
            return;
        }
        let count = self.links.len();
        let first = (self.rng.next_u64() % count as u64) as usize;
        let picks: Vec<(NodeId, ConnId)> = self
            .links
            .iter()
            .cycle()
            .skip(first)
            .take(count.min(CHORD_PROBES_PER_PERIOD))
            .map(|(&node, &conn)| (node, conn))
            .collect();
        for (node, conn) in picks {
            let addr = self
                .conns
                .get(&conn)
                .and_then(|c| c.peer()?.listen_addr.clone());
            if let (Some(chord), Some(addr)) = (self.chord.as_mut(), addr) {
                chord.probe_via(now, ChordPeer { node, addr });
            }
        }
        self.pump_chord(now);
    }

    /// Joins the ring through a newly linked mesh peer if this node is still alone.
    pub(super) fn chord_maybe_join(&mut self, now: Instant, node: NodeId, addr: Option<&str>) {
        let (Some(chord), Some(addr)) = (self.chord.as_mut(), addr) else {
            return;
        };
        let via = ChordPeer {
            node,
            addr: addr.to_string(),
        };
        chord.join_if_alone(now, via);
        self.pump_chord(now);
    }
}
