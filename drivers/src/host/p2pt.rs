//! The host's side of a node on a p2p.today network (SPEC.md §25.9–§25.12): its messages go
//! to `weft listen`, its table to `weft table`.

use crate::peer_log::PeerLine;
use bytes::Bytes;
use weft_engine::p2pt::{P2ptEntry, P2ptEvent, P2PT_LEASE_S};
use weft_engine::protocol::p2pt::rmpv::Value;
use weft_engine::{Command, Input, NodeId, TableCommand};

use super::events::offer;
use super::Host;
use crate::handle::{Delivery, HandleError, TableOp};
use crate::report::{TableEntryReport, TableListBounds};

/// A msgpack value as `weft listen` and `weft table` show it: a str or UTF-8 bin as its
/// text, other bin as raw bytes, anything else as its msgpack text form (`[1, "a"]`).
fn value_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Binary(b) => b.clone(),
        other => other.to_string().into_bytes(),
    }
}

/// The args of a message as one payload: a single str or bin as its bytes, several (or
/// other types) as their msgpack text form.
fn payload(args: &[u8]) -> Bytes {
    let mut rd = args;
    match weft_engine::protocol::p2pt::rmpv::decode::read_value(&mut rd) {
        Ok(Value::Array(items)) if items.len() == 1 => Bytes::from(value_bytes(&items[0])),
        Ok(v) => Bytes::from(v.to_string()),
        Err(_) => Bytes::copy_from_slice(args),
    }
}

fn entry_report(
    key: &[u8],
    e: &P2ptEntry,
    leasing: bool,
    now_ms: u64,
    value_bytes_max: Option<usize>,
) -> TableEntryReport {
    let bytes = value_bytes(&e.value);
    let owner = String::from_utf8_lossy(&e.owner).into_owned();
    let until_ms = e
        .timestamp
        .saturating_add(P2PT_LEASE_S)
        .saturating_mul(1000);
    let leased = leasing && until_ms > now_ms;
    TableEntryReport {
        by: owner.clone(),
        lease_owner: leased.then_some(owner),
        lease_until_unix_ms: leased.then_some(until_ms),
        ..TableEntryReport::with_value(key, &bytes, value_bytes_max)
    }
}

impl Host {
    pub(super) fn on_p2pt_event(&mut self, e: P2ptEvent) {
        match e {
            P2ptEvent::Message {
                sender,
                timestamp,
                args,
                broadcast,
                ..
            } => {
                tracing::debug!(
                    "p2p.today {} from {sender}: {} bytes",
                    if broadcast { "broadcast" } else { "whisper" },
                    args.len()
                );
                if self.subscribers.is_empty() {
                    return;
                }
                let delivery = Delivery {
                    origin: NodeId([0; 32]),
                    incarnation: timestamp,
                    seq: 0,
                    payload: payload(&args),
                    sender: Some(sender),
                };
                let drops = &mut self.listener_drops;
                self.subscribers.retain(|s| offer(s, &delivery, drops));
            }
            P2ptEvent::PeerUp { conn, id, addr } => {
                if self.peer_line(PeerLine::Link) {
                    tracing::info!("p2p.today peer up {id} at {addr} on {conn:?}");
                }
                self.linked_to(&id);
            }
            P2ptEvent::PeerDown { id, reason } => {
                if self.peer_line(PeerLine::Link) {
                    tracing::info!("p2p.today peer down {id}: {reason:?}")
                }
            }
            P2ptEvent::KeyChanged {
                key, value, owner, ..
            } => tracing::debug!(
                "p2p.today key {} {} by {owner}",
                String::from_utf8_lossy(&key),
                if value.is_some() { "set" } else { "deleted" }
            ),
            other => tracing::debug!("{other:?}"),
        }
    }

    /// A `weft table set/delete` on a p2p.today network: applied (and sent) at once, or
    /// refused; nothing is stored on disk (py2p's table lives in memory).
    pub(super) fn p2pt_table_write(
        &mut self,
        key: Vec<u8>,
        op: TableOp,
    ) -> Result<(), HandleError> {
        let command = match op {
            TableOp::Set { value, lease } => TableCommand::Set { key, value, lease },
            TableOp::Delete => TableCommand::Delete { key },
            TableOp::Release => TableCommand::Release { key },
        };
        self.input(Input::Command(Command::Table(command)))
            .map_err(HandleError::Refused)
    }

    /// The table's entries (or the one at `key`) on a p2p.today network.
    pub(super) fn p2pt_table_read(
        &self,
        key: Option<Vec<u8>>,
        bounds: TableListBounds,
    ) -> Vec<TableEntryReport> {
        let Some(node) = self.node.p2pt() else {
            return Vec::new();
        };
        let leasing = node.config().subnet == weft_engine::p2pt::Subnet::SyncLeased;
        let now_ms = self
            .node
            .wall_clock_ms(self.clock.now())
            .unwrap_or_default();
        match key {
            Some(k) => node
                .table_get(&k)
                .map(|e| entry_report(&k, e, leasing, now_ms, bounds.value_bytes_max))
                .into_iter()
                .collect(),
            None => node
                .table_entries()
                .take(bounds.entries_max.unwrap_or(usize::MAX))
                .map(|(k, e)| entry_report(k, e, leasing, now_ms, bounds.value_bytes_max))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_text_arg_is_the_payload_and_others_show_as_text() {
        let enc = |v: Value| {
            let mut out = Vec::new();
            weft_engine::protocol::p2pt::rmpv::encode::write_value(&mut out, &v).unwrap();
            out
        };
        assert_eq!(payload(&enc(Value::Array(vec!["hi".into()]))), &b"hi"[..]);
        assert_eq!(
            payload(&enc(Value::Array(vec!["a".into(), 1.into()]))),
            &b"[\"a\", 1]"[..]
        );
    }
}
