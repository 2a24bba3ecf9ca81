//! The node's events as the host takes them: broadcasts offered to each subscriber within
//! its backlog, folder and drop events to their tables, the rest to the log.

use std::sync::atomic::Ordering;
use std::sync::mpsc::TrySendError;

use bytes::Bytes;
use weft_engine::drops::{DropsEvent, DropsEventKind};
use weft_engine::protocol::FolderId;
use weft_engine::protocol::RunSignalKind;
use weft_engine::replicate::{ReplicaEvent, ReplicateEvent, StorageError};
use weft_engine::run::{RunCommand, RunEvent, RunEventKind};
use weft_engine::{Command, Event, Input, MeshEvent, TableEvent};

use super::sync::RUN_EVENTS_QUEUED_MAX;
use super::Host;
use crate::handle::HandleError;
use crate::handle::{Delivery, Subscriber};
use crate::peer_log::PeerLine;

/// The most storage errors kept for `weft status` (one per path, until the path is updated),
/// over every folder: each path a peer names can fail (a symlink in its way, a full disk).
pub const FOLDER_ERRORS_MAX: usize = 65_536;

/// Hands `delivery` to `subscriber` unless that would put it past its backlog (then counts a
/// drop in `drops`); false once the subscriber is gone.
pub(super) fn offer(subscriber: &Subscriber, delivery: &Delivery, drops: &mut u64) -> bool {
    if !subscriber.is_held() {
        return false;
    }
    let cost = delivery.queued_bytes();
    if let Some((queued, bytes_max)) = &subscriber.bytes {
        // Counted before the send: the reader subtracts as soon as it takes the delivery. A
        // delivery larger than the bound still goes to a subscriber with nothing waiting.
        let before = queued.fetch_add(cost, Ordering::SeqCst);
        if before > 0 && before + cost > *bytes_max {
            queued.fetch_sub(cost, Ordering::SeqCst);
            *drops += 1;
            return true;
        }
    }
    let sent = subscriber.sink.try_send(delivery.clone());
    if sent.is_err() {
        if let Some((queued, _)) = &subscriber.bytes {
            queued.fetch_sub(cost, Ordering::SeqCst);
        }
    }
    match sent {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            *drops += 1;
            true
        }
        Err(TrySendError::Disconnected(_)) => false,
    }
}

impl Host {
    /// Whether a line of `kind`, caused by a peer, is within its budget now.
    pub(super) fn peer_line(&mut self, kind: PeerLine) -> bool {
        let now = self.clock.now();
        self.peer_log.allow(kind, now)
    }

    /// Reports an event: broadcasts go to the subscribers, the rest to the log.
    pub(crate) fn on_event(&mut self, event: Event) {
        match event {
            Event::Mesh(MeshEvent::Broadcast {
                origin,
                incarnation,
                seq,
                payload,
            }) => {
                tracing::debug!(
                    "broadcast {origin}/{incarnation}#{seq}: {} bytes",
                    payload.len()
                );
                if self.subscribers.is_empty() {
                    return;
                }
                // The payload may be a slice of a much larger read buffer: a copy of its own
                // keeps a waiting delivery from pinning that buffer, and makes the bytes
                // counted against a subscriber's bound the bytes held.
                let delivery = Delivery {
                    origin,
                    incarnation,
                    seq,
                    payload: Bytes::copy_from_slice(&payload),
                    sender: None,
                };
                let drops = &mut self.listener_drops;
                self.subscribers.retain(|s| offer(s, &delivery, drops));
            }
            Event::P2pt(e) => self.on_p2pt_event(e),
            Event::PeerUp {
                node,
                conn,
                incarnation,
                restarted,
            } => {
                if self.peer_line(PeerLine::Link) {
                    tracing::info!(
                        "peer up {node} on {conn:?} (incarnation {incarnation}{})",
                        if restarted { ", restarted" } else { "" }
                    );
                }
                self.linked_to(&node);
            }
            Event::PeerDown { node, reason } => {
                if self.peer_line(PeerLine::Link) {
                    tracing::info!("peer down {node}: {reason:?}")
                }
            }
            Event::ConnectionClosed { conn, reason } => {
                if self.peer_line(PeerLine::Closed) {
                    tracing::info!("closed {conn:?}: {reason:?}")
                }
            }
            Event::DialFailed {
                addr,
                attempts,
                retry_in_ms,
                reason,
            } => {
                let given_up = retry_in_ms.is_none();
                let ended = self
                    .first_contact
                    .as_mut()
                    .and_then(|w| w.dial_failed(&addr, reason.clone(), given_up));
                match ended {
                    Some(error) => {
                        self.first_contact = None;
                        self.fail(error);
                    }
                    None => self.dial_log.failed(addr, attempts, retry_in_ms, reason),
                }
            }
            Event::Redialed {
                addr,
                node,
                failures,
            } => self.dial_log.linked(&addr, &node, failures),
            Event::RefusedAsStale { addr } => self.dial_log.refused_as_stale(addr),
            Event::Chord(e) => {
                if let Some(reply) = self.chord_waiting.remove(&e.request) {
                    let _ = reply.send(e.result.map_err(|e| e.to_string()));
                }
            }
            Event::Table(TableEvent::Committed { through }) => self.table_answer(through, Ok(())),
            Event::Table(TableEvent::NotCommitted { through, reason }) => {
                // A node without a state folder keeps nothing, by choice.
                if self.store.is_some() {
                    tracing::warn!("table writes not stored: {reason}");
                }
                self.table_answer(through, Err(HandleError::NotStored(reason)));
            }
            Event::Replicate(ReplicateEvent { folder, event }) => {
                self.on_folder_event(folder, event)
            }
            Event::Run(RunEvent { run, kind }) => {
                let last = matches!(
                    kind,
                    RunEventKind::Refused { .. } | RunEventKind::Exited { .. } | RunEventKind::Lost
                );
                // A run in a folder: its exit waits for what the program wrote to be back.
                let kind = if last {
                    match self.hold_run_end(run, kind) {
                        Some(kind) => kind,
                        None => return,
                    }
                } else {
                    kind
                };
                let waited = self.runs_waiting.contains_key(&run);
                let sent = match self.runs_waiting.get(&run).map(|w| w.try_send(kind)) {
                    Some(Ok(())) => true,
                    Some(Err(TrySendError::Full(_))) => {
                        let what = if last {
                            "its end is not told"
                        } else {
                            "killed"
                        };
                        tracing::warn!(
                            "run {run}: its output was not read fast enough \
                             ({RUN_EVENTS_QUEUED_MAX} pieces waiting): {what}"
                        );
                        false
                    }
                    _ => false,
                };
                if last || !sent {
                    self.runs_waiting.remove(&run);
                }
                // Its asker went away, or reads too slowly: the process has no one to write to.
                // Killed once, when the asker is let go; what still comes is dropped.
                if waited && !sent && !last {
                    let kill = RunCommand::Signal {
                        run,
                        signal: RunSignalKind::Kill,
                    };
                    let _ = self.input(Input::Command(Command::Run(kill)));
                }
            }
            Event::Drops(DropsEvent { drop, kind }) => match kind {
                DropsEventKind::Refused { peer, error }
                | DropsEventKind::FilesRefused { peer, error } => {
                    if self.peer_line(PeerLine::Refused) {
                        tracing::warn!("drop {drop}: refused what {peer} sent: {error}")
                    }
                }
                DropsEventKind::HistoryFull => tracing::warn!("drop {drop}: its history is full"),
                DropsEventKind::Current {
                    version,
                    counter,
                    branches,
                } => tracing::info!(
                    "drop {drop}: shows version {version} (counter {counter}, {branches} heads)"
                ),
                other => tracing::info!("drop {drop}: {other:?}"),
            },
            other => tracing::debug!("{other:?}"),
        }
    }

    pub(super) fn on_folder_event(&mut self, folder: FolderId, event: ReplicaEvent) {
        match event {
            ReplicaEvent::Ready => {
                tracing::info!("folder {folder}: ready");
                let replica = self.node.replica(&folder);
                let temps = replica.map(|r| r.temps_in_use()).unwrap_or_default();
                let index = |path: &str| replica.and_then(|r| r.record(path)).cloned();
                // Not a path an apply holds: its steps may have emptied it (a conflict's
                // rename, a move) before it installs its records, and it ends the job.
                let records = replica
                    .into_iter()
                    .flat_map(|r| r.records().filter(|rec| !r.is_held(&rec.entry.path)));
                let due = self.folders.on_ready(&folder, &temps, index, records);
                self.feed_local(folder, due);
            }
            ReplicaEvent::Updated { path, .. } => {
                tracing::info!("folder {folder}: updated {path}");
                self.folder_errors.remove(&(folder, path));
            }
            ReplicaEvent::StorageFailed { path, error } => {
                let error = match error {
                    StorageError::DiskFull => "the disk is full".to_string(),
                    StorageError::Io(why) => why,
                };
                tracing::warn!(
                    "folder {folder}: {}: {error}",
                    path.as_deref().unwrap_or("-")
                );
                if let Some(path) = path {
                    let key = (folder, path);
                    // Past the bound, a path not listed already is only logged.
                    if self.folder_errors.len() < FOLDER_ERRORS_MAX
                        || self.folder_errors.contains_key(&key)
                    {
                        self.folder_errors.insert(key, error);
                    }
                }
            }
            ReplicaEvent::Conflict { path, copy } => {
                tracing::warn!("folder {folder}: conflict at {path}: the other version is {copy}")
            }
            ReplicaEvent::LocalEditRefused { path } => tracing::warn!(
                "folder {folder}: local edit of {path} not published: this copy of the drop is read-only"
            ),
            other => tracing::debug!("folder {folder}: {other:?}"),
        }
    }
}

/// Adds `subscriber`, first dropping those whose readers are gone: on a network where
/// nothing is broadcast no delivery finds them gone, and each holds its channel's slots
/// (a client that subscribes and leaves, again and again, would grow the node for good).
pub(super) fn add_subscriber(subscribers: &mut Vec<Subscriber>, subscriber: Subscriber) {
    subscribers.retain(Subscriber::is_held);
    subscribers.push(subscriber);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;
    use std::sync::Arc;

    use super::*;
    use crate::handle::DELIVERY_OVERHEAD_BYTES;

    fn delivery(payload_bytes: usize) -> Delivery {
        Delivery {
            origin: weft_engine::NodeId([7; 32]),
            incarnation: 1,
            seq: 1,
            payload: Bytes::from(vec![0; payload_bytes]),
            sender: None,
        }
    }

    #[test]
    fn a_bounded_subscriber_is_offered_no_more_than_its_bytes() {
        let (sink, deliveries) = mpsc::sync_channel(100);
        let queued = Arc::new(AtomicUsize::new(0));
        let subscriber = Subscriber {
            sink,
            bytes: Some((Arc::clone(&queued), 1000)),
        };
        let mut drops = 0;
        // Alone, even one over the bound is queued; then nothing more until there is room.
        assert!(offer(&subscriber, &delivery(2000), &mut drops));
        assert!(offer(&subscriber, &delivery(1), &mut drops));
        assert_eq!(drops, 1);
        assert_eq!(
            queued.load(Ordering::SeqCst),
            2000 + DELIVERY_OVERHEAD_BYTES
        );
        queued.fetch_sub(deliveries.recv().unwrap().queued_bytes(), Ordering::SeqCst);
        for _ in 0..2 {
            assert!(offer(&subscriber, &delivery(400), &mut drops));
        }
        assert_eq!(
            drops, 2,
            "the second 400 bytes would pass 1000 with their overhead"
        );
        assert_eq!(queued.load(Ordering::SeqCst), 400 + DELIVERY_OVERHEAD_BYTES);
        drop(deliveries);
        assert!(!offer(&subscriber, &delivery(1), &mut drops), "gone");
        assert_eq!(queued.load(Ordering::SeqCst), 400 + DELIVERY_OVERHEAD_BYTES);
    }

    #[test]
    fn subscribers_that_left_are_dropped_when_another_comes() {
        let mut subscribers = Vec::new();
        let mut kept = Vec::new();
        for i in 0..100 {
            let (sink, deliveries) = mpsc::sync_channel(4096);
            let queued = Arc::new(AtomicUsize::new(0));
            let bytes = Some((Arc::clone(&queued), 1000));
            add_subscriber(&mut subscribers, Subscriber { sink, bytes });
            // Every tenth stays; the others leave at once (their client went away).
            if i % 10 == 0 {
                kept.push((deliveries, queued));
            }
        }
        assert!(subscribers.len() <= kept.len() + 1, "{}", subscribers.len());
    }
}
