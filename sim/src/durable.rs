//! The durability checker: what a node acknowledged as committed must outlive its crash.
//!
//! A table write counts as acknowledged when its node reports `TableEvent::Committed` for it
//! (the host answered the store holding it); a Chord put when its origin's request ends with
//! at least one replica's CHORD_STORED, which a replica sends only after its own commit. The
//! simulated disk loses every store not yet completed at a crash (see `world`), so a node
//! that acknowledged before its commit shows up here as a lost write (SPEC.md §16).

use std::collections::BTreeMap;

use weft_engine::chord::{ChordError, ChordRequest, ChordResult};
use weft_engine::protocol::{key_position, Hlc, NodeId, StoreOp, CHORD_REPLICAS};
use weft_engine::{Instant, Node};

/// A table write's id: its stamp, writer and writer's incarnation.
type WriteId = (Hlc, NodeId, u64);

/// Acknowledged writes and puts, and local writes waiting for their commit.
#[derive(Debug, Default)]
pub struct Durability {
    /// Local table writes not yet committed, by (node, incarnation, number).
    pending: BTreeMap<(u32, u64, u64), (Vec<u8>, WriteId)>,
    /// Table writes acknowledged as committed: key and id.
    acked: Vec<(Vec<u8>, WriteId)>,
    /// Chord puts acknowledged: key, value and writer node.
    puts: Vec<(Vec<u8>, Vec<u8>, NodeId)>,
    /// Chord puts under way (without a lifetime: those never expire), by (node, request).
    asked: BTreeMap<(u32, u64), (Vec<u8>, Vec<u8>)>,
    /// Count a write as acknowledged as soon as its node accepts it: the broken behaviour the
    /// checker must catch (tests only).
    #[cfg(test)]
    pub(crate) ack_on_accept: bool,
}

impl Durability {
    /// Node `node` (incarnation `incarnation`) accepted its `number`th local write: `id`, of
    /// `key`.
    pub fn wrote(&mut self, node: u32, incarnation: u64, number: u64, key: Vec<u8>, id: WriteId) {
        #[cfg(test)]
        if self.ack_on_accept {
            self.acked.push((key, id));
            return;
        }
        self.pending.insert((node, incarnation, number), (key, id));
    }

    /// Node `node` (incarnation `incarnation`) committed its local writes up to `through`.
    pub fn committed(&mut self, node: u32, incarnation: u64, through: u64) {
        let done: Vec<_> = self
            .pending
            .range((node, incarnation, 0)..=(node, incarnation, through))
            .map(|(k, _)| *k)
            .collect();
        for k in done {
            if let Some(w) = self.pending.remove(&k) {
                self.acked.push(w);
            }
        }
    }

    /// Node `node` (id `writer`) asked Chord for `op` as its request `request`. A delete, from
    /// the moment it is asked, may remove values: their puts are no longer checked.
    pub fn chord_asked(&mut self, node: u32, writer: NodeId, request: u64, op: &ChordRequest) {
        match op {
            ChordRequest::Put {
                key,
                value,
                lifetime_ms: None,
            } => {
                self.asked
                    .insert((node, request), (key.clone(), value.clone()));
            }
            ChordRequest::Delete { key, value } => self.puts.retain(|(k, v, w)| {
                !(k == key && *w == writer && value.as_ref().is_none_or(|d| d == v))
            }),
            _ => {}
        }
    }

    /// Node `node` (id `writer`)'s request `request` ended: a put some replica confirmed
    /// is acknowledged.
    pub fn chord_ended(
        &mut self,
        node: u32,
        writer: NodeId,
        request: u64,
        result: &Result<ChordResult, ChordError>,
    ) {
        let Some((key, value)) = self.asked.remove(&(node, request)) else {
            return;
        };
        if matches!(result, Ok(ChordResult::Put { nodes, .. }) if *nodes > 0) {
            self.puts.push((key, value, writer));
        }
    }

    /// Table writes acknowledged so far.
    pub fn acked_writes(&self) -> usize {
        self.acked.len()
    }

    /// Chord puts acknowledged so far.
    pub fn acked_puts(&self) -> usize {
        self.puts.len()
    }

    /// Acknowledged table writes that some live node holds neither again nor a later write
    /// of their key for (writes below a node's reclaim floor excepted): lost.
    pub fn lost_writes<'a>(&self, live: impl Iterator<Item = &'a Node> + Clone) -> Vec<String> {
        let mut lost = Vec::new();
        for (key, id) in &self.acked {
            for node in live.clone() {
                let t = node.table();
                if id.0.ms < t.floor_ms() {
                    continue;
                }
                let newest = t.writes(key).map(|(w, _)| w.id()).max();
                if newest.is_none_or(|n| n < *id) {
                    lost.push(format!(
                        "table write of {:?} at {:?} by {} acknowledged, not held by {}",
                        String::from_utf8_lossy(key),
                        id.0,
                        id.1,
                        node.node_id()
                    ));
                    break;
                }
            }
        }
        lost
    }

    /// Acknowledged Chord puts no live node holds under any of their key's positions (not
    /// deleted by their writer, not expired, as the puts of the checked runs never are).
    pub fn lost_puts<'a>(
        &self,
        now: Instant,
        live: impl Iterator<Item = &'a Node> + Clone,
    ) -> Vec<String> {
        let mut lost = Vec::new();
        for (key, value, writer) in &self.puts {
            let held = live.clone().filter_map(Node::chord).any(|c| {
                (0..CHORD_REPLICAS as u8).any(|r| {
                    c.entries(now, key_position(key, r), key).iter().any(|e| {
                        NodeId::from_public_key(&e.writer) == *writer
                            && e.op == StoreOp::Put(value.clone())
                    })
                })
            });
            if !held {
                lost.push(format!(
                    "chord put of {:?} by {writer} acknowledged, held by no live node",
                    String::from_utf8_lossy(key)
                ));
            }
        }
        lost
    }
}
