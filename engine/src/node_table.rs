//! The node's side of the sync table (SPEC.md §19): local writes from commands flooded to
//! every link, received writes judged and relayed, and bucket-digest anti-entropy.

use bytes::Bytes;
use rand_chacha::rand_core::RngCore;
use weft_protocol::{Code, Frame, Message, TableDigest, TableWant, TableWrite};

use crate::conn::Priority;
use crate::io::{ConnId, InputError, Output};
use crate::table::Received;
use crate::time::{Duration, Instant};

use super::Node;

impl Node {
    /// Moves the table's events to the outputs.
    pub(super) fn drain_table_events(&mut self) {
        while let Some(e) = self.table.poll_event() {
            self.outputs.push_back(Output::Event(e));
        }
    }

    /// Floods a local write the table accepted (or reports the refusal it queued).
    pub(super) fn originate_table_write(
        &mut self,
        write: Result<Option<TableWrite>, InputError>,
    ) -> Result<(), InputError> {
        let write = write?;
        self.drain_table_events();
        if let Some(w) = write {
            self.metrics.table_writes_originated += 1;
            let payload = Message::TableWrite(w).encode_payload();
            let sent = self.send_payload_except(Code::TABLE_WRITE, &payload, None);
            self.metrics.table_write_transmissions += sent;
        }
        Ok(())
    }

    /// A write from `from` (a TABLE_WRITE, with its frame, or one of TABLE_ENTRIES): if new,
    /// relay it to every other link.
    pub(super) fn on_table_write(
        &mut self,
        from: ConnId,
        frame: Option<&Frame>,
        write: TableWrite,
    ) {
        self.metrics.table_writes_received += 1;
        let relay = frame.map(|f| (f.bytes().clone(), f.flags().compressed()));
        // A plain frame may be needed (no frame, or a compressed one for a peer without lz4):
        // encode the payload before the table takes the write.
        let payload = match relay {
            Some((_, false)) => Vec::new(),
            _ => Message::TableWrite(write.clone()).encode_payload(),
        };
        match self.table.receive(write) {
            Received::New => {}
            Received::Duplicate => {
                self.metrics.table_write_duplicates += 1;
                return;
            }
            Received::TooOld => {
                self.metrics.table_writes_too_old += 1;
                return;
            }
            Received::Dropped => {
                self.metrics.table_writes_dropped += 1;
                return;
            }
        }
        self.drain_table_events();
        let mut targets = core::mem::take(&mut self.scratch_conns);
        targets.extend(self.links.values().copied().filter(|c| *c != from));
        let mut plain: Option<Bytes> = None;
        for &conn in &targets {
            // The received frame's bytes unchanged where the peer can take them.
            let bytes = |compress| match &relay {
                Some((bytes, compressed)) if !compressed || compress => bytes.clone(),
                _ => {
                    let build = || Frame::build(Code::TABLE_WRITE, &payload, false).into_bytes();
                    plain.get_or_insert_with(build).clone()
                }
            };
            if self.send_built(conn, Priority::Relay, bytes) {
                self.metrics.table_write_transmissions += 1;
            }
        }
        targets.clear();
        self.scratch_conns = targets;
    }

    /// Sends a table anti-entropy message and counts its bytes as catch-up.
    pub(super) fn send_table_message(
        &mut self,
        conn: ConnId,
        msg: &Message<'_>,
        priority: Priority,
    ) -> bool {
        let frame = msg.to_frame(self.compress_to(conn)).into_bytes();
        let len = frame.len() as u64;
        let sent = self.send_frame(conn, frame, priority);
        if sent {
            self.metrics.table_catchup_bytes += len;
        }
        sent
    }

    /// Sends the table's bucket digest to `conn`, if the table holds anything.
    pub(super) fn send_table_digest(&mut self, conn: ConnId) {
        if self.table.is_empty() {
            return;
        }
        let digest = self.table.digest();
        if self.send_table_message(conn, &Message::TableDigest(digest), Priority::Control) {
            self.metrics.table_full_resend_bytes += self.table.full_resend_bytes();
        }
    }

    /// A peer's table digest: ask for the buckets that differ.
    pub(super) fn on_table_digest(&mut self, conn: ConnId, digest: &TableDigest) {
        let salt = self.rng.next_u64();
        if let Some(want) = self.table.want(digest, salt) {
            self.send_table_message(conn, &Message::TableWant(want), Priority::Control);
        }
    }

    /// A peer wants buckets: send their writes. Relay class: a reply over the peer's queue is
    /// cut short, and the next digest asks again.
    pub(super) fn on_table_want(&mut self, conn: ConnId, want: &TableWant) {
        for entries in self.table.entries(want) {
            let msg = Message::TableEntries(entries);
            if !self.send_table_message(conn, &msg, Priority::Relay) {
                break;
            }
        }
    }

    /// `Command::TableSet`: writes `key` and floods the write if the table accepts it.
    pub(super) fn on_table_set(
        &mut self,
        now: Instant,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<Duration>,
    ) -> Result<(), InputError> {
        let wall_ms = self.wall_clock_ms(now);
        let write = self.table.write(wall_ms, key, Some(value), lease);
        self.originate_table_write(write)
    }

    /// `Command::TableDelete`: deletes `key` and floods the write if the table accepts it.
    pub(super) fn on_table_delete(&mut self, now: Instant, key: Vec<u8>) -> Result<(), InputError> {
        let wall_ms = self.wall_clock_ms(now);
        let write = self.table.write(wall_ms, key, None, None);
        self.originate_table_write(write)
    }

    /// `Command::TableRelease`: ends this node's lease on `key` and floods the write.
    pub(super) fn on_table_release(
        &mut self,
        now: Instant,
        key: Vec<u8>,
    ) -> Result<(), InputError> {
        let wall_ms = self.wall_clock_ms(now);
        let write = self.table.release(wall_ms, key);
        self.originate_table_write(write)
    }
}
