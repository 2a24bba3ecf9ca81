//! The trace digest: BLAKE3 over every delivery and application event, in order.

use weft_engine::{Event, MeshEvent};

/// Buffered BLAKE3 over the run's deliveries and events.
pub struct Trace {
    hasher: blake3::Hasher,
    buffer: Vec<u8>,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            hasher: blake3::Hasher::new(),
            buffer: Vec::with_capacity(1 << 16),
        }
    }
}

impl Trace {
    fn record(&mut self, tag: u8, now: u64, node: u32, body: &[u8]) {
        let mut head = [0u8; 17];
        head[0] = tag;
        head[1..9].copy_from_slice(&now.to_le_bytes());
        head[9..13].copy_from_slice(&node.to_le_bytes());
        head[13..].copy_from_slice(&(body.len() as u32).to_le_bytes());
        self.buffer.extend_from_slice(&head);
        self.buffer.extend_from_slice(body);
        if self.buffer.len() >= 1 << 16 {
            self.hasher.update(&self.buffer);
            self.buffer.clear();
        }
    }

    /// Bytes delivered to `node`.
    pub fn delivery(&mut self, now: u64, node: u32, bytes: &[u8]) {
        self.record(b'D', now, node, bytes);
    }

    /// An application event at `node`.
    pub fn event(&mut self, now: u64, node: u32, event: &Event) {
        match event {
            Event::Mesh(MeshEvent::Broadcast {
                origin,
                incarnation,
                seq,
                ..
            }) => {
                let mut body = [0u8; 48];
                body[..32].copy_from_slice(&origin.0);
                body[32..40].copy_from_slice(&incarnation.to_le_bytes());
                body[40..].copy_from_slice(&seq.to_le_bytes());
                self.record(b'B', now, node, &body);
            }
            Event::PeerUp { node: peer, .. } => self.record(b'U', now, node, &peer.0),
            Event::PeerDown { node: peer, .. } => self.record(b'd', now, node, &peer.0),
            _ => self.record(b'E', now, node, &[]),
        }
    }

    /// The digest so far, as hex.
    pub fn digest(&self) -> String {
        let mut h = self.hasher.clone();
        h.update(&self.buffer);
        h.finalize().to_hex().to_string()
    }
}
