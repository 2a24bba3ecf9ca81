//! The node's side of the mesh broadcast (SPEC.md §11): accepting, relaying and
//! delivering broadcasts, and repair by digest and want.

use bytes::Bytes;
use weft_protocol::{
    Broadcast, ByeReason, Code, Frame, MeshDigest, MeshWant, Message, HEADER_BYTES,
};

use crate::conn::Priority;
use crate::io::{CloseReason, ConnId, Event, Output};
use crate::time::Instant;

use super::Node;

impl Node {
    /// An uncompressed BROADCAST frame on an established mesh link, decoded in place from
    /// the frame's bytes: a duplicate, most receptions, needs no payload handle of its own.
    /// The same outcome as `on_frame`'s general path (decode, then `on_broadcast`).
    pub(super) fn on_broadcast_frame(&mut self, now: Instant, from: ConnId, frame: &Frame) {
        let wire = frame.bytes().get(HEADER_BYTES..).unwrap_or_default();
        let b = match Broadcast::decode(Code::BROADCAST, wire) {
            Ok(b) => b,
            Err(e) => {
                let bye = Some(ByeReason::ProtocolViolation);
                return self.close(from, CloseReason::Protocol(e), bye);
            }
        };
        if self.accept_broadcast(&b) {
            let payload = frame.wire_payload();
            self.relay_and_deliver(now, from, Some(frame), &payload, &b);
        }
    }

    /// A broadcast arrived (as BROADCAST, with its frame, or as MESH_REPAIR, without): if it
    /// is new, relay it to every other link, hold it for repair and deliver it. True if new.
    pub(super) fn on_broadcast(
        &mut self,
        now: Instant,
        from: ConnId,
        frame: Option<&Frame>,
        payload: &Bytes,
        b: &Broadcast<'_>,
    ) -> bool {
        if !self.accept_broadcast(b) {
            return false;
        }
        self.relay_and_deliver(now, from, frame, payload, b);
        true
    }

    /// Counts a received broadcast and records it as seen; true if it is new.
    fn accept_broadcast(&mut self, b: &Broadcast<'_>) -> bool {
        // Our own broadcasts of this run are held already; those of an earlier run (before a
        // restart) are carried like anyone's, but not delivered: this node sent them.
        let own_current = self.is_own(&b.origin) && b.incarnation >= self.config.incarnation;
        self.mesh
            .accept(b.origin, b.incarnation, b.seq, own_current)
    }

    /// A new broadcast: relays it to every link but `from`, holds it for repair and, unless
    /// this node sent it, delivers it.
    fn relay_and_deliver(
        &mut self,
        now: Instant,
        from: ConnId,
        frame: Option<&Frame>,
        payload: &Bytes,
        b: &Broadcast<'_>,
    ) {
        let own = self.is_own(&b.origin);
        // Relay the received bytes unchanged; a peer that cannot take lz4 (or a repaired
        // broadcast) gets a plain BROADCAST frame, built once.
        let mut plain: Option<Bytes> = None;
        let mut targets = core::mem::take(&mut self.scratch_conns);
        targets.extend(self.links.values().copied().filter(|c| *c != from));
        for &conn in &targets {
            let bytes = |compress| match frame {
                Some(f) if !f.flags().compressed() || compress => f.bytes().clone(),
                _ => {
                    let build = || Frame::build(Code::BROADCAST, payload, false).into_bytes();
                    plain.get_or_insert_with(build).clone()
                }
            };
            if self.send_built(conn, Priority::Relay, bytes) {
                self.metrics.broadcast_transmissions += 1;
            }
        }
        targets.clear();
        self.scratch_conns = targets;
        self.mesh
            .hold(now, b.origin, b.incarnation, b.seq, payload.clone());
        if own {
            return;
        }
        self.metrics.broadcasts_delivered += 1;
        self.outputs.push_back(Output::Event(Event::Broadcast {
            origin: b.origin,
            incarnation: b.incarnation,
            seq: b.seq,
            payload: payload.slice_ref(b.payload),
        }));
    }

    /// Sends a digest of the repair window to `conn`.
    pub(super) fn send_digest(&mut self, conn: ConnId) {
        let digest = self.mesh.digest();
        if digest.entries.is_empty() {
            return;
        }
        self.metrics.repair_messages += 1;
        self.send_message(conn, &Message::MeshDigest(digest), Priority::Control);
    }

    /// A peer's digest: ask for what we have not seen.
    pub(super) fn on_digest(&mut self, conn: ConnId, digest: &MeshDigest) {
        let budget = self.config.limits.repair_store_max;
        let me = (self.identity.node_id(), self.config.incarnation);
        let wants = self.mesh.wants(me, digest, budget);
        if wants.is_empty() {
            return;
        }
        self.metrics.repair_messages += 1;
        self.send_message(
            conn,
            &Message::MeshWant(MeshWant { wants }),
            Priority::Control,
        );
    }

    /// A peer asks for held broadcasts: send each as MESH_REPAIR.
    pub(super) fn on_want(&mut self, conn: ConnId, mut want: MeshWant) {
        want.wants.sort_unstable();
        let frames: Vec<Bytes> = self
            .mesh
            .wanted(&want.wants)
            .map(|h| {
                Frame::build(Code::MESH_REPAIR, &h.payload, self.compress_to(conn)).into_bytes()
            })
            .collect();
        // Relay class: a reply larger than the peer's queue allows is cut short rather than
        // disconnecting it; the next digest asks again for the rest.
        for frame in frames {
            if !self.send_frame(conn, frame, Priority::Relay) {
                break;
            }
            self.metrics.repair_messages += 1;
        }
    }
}
