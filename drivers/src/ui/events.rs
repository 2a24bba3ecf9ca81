//! Live updates: one poller gathers a snapshot every [`POLL_PERIOD`] while at least one page
//! listens, and every page's server-sent event stream (`GET /api/events`, event `state`)
//! gets each new one. At most [`STREAMS_MAX`] streams at once.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::watch;

use super::api::Gatherer;

/// How often the node is asked while a page listens.
pub const POLL_PERIOD: Duration = Duration::from_millis(500);

/// The most event streams served at once (more are answered 503).
pub const STREAMS_MAX: usize = 16;

/// The latest snapshot as JSON, shared by every stream.
pub(super) type Snapshot = Arc<str>;

/// The live feed: the latest snapshot and the streams' count.
#[derive(Debug)]
pub(super) struct Feed {
    latest: watch::Receiver<Snapshot>,
    streams: Arc<AtomicUsize>,
}

impl Feed {
    /// Starts the poller on the current runtime, asking through `gatherer`; it ends when
    /// `stop` says so (and then every stream ends).
    pub(super) fn start(gatherer: Arc<Mutex<Gatherer>>, mut stop: watch::Receiver<bool>) -> Feed {
        let (tx, latest) = watch::channel(Snapshot::from("{}"));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                // Only the feed's own receiver: nobody listens, the node is not asked.
                if tx.receiver_count() <= 1 {
                    continue;
                }
                let g = Arc::clone(&gatherer);
                let json = tokio::task::spawn_blocking(move || snapshot_json(&g)).await;
                if let Ok(json) = json {
                    tx.send_replace(json);
                }
            }
        });
        Feed {
            latest,
            streams: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A new event stream, or `None` if [`STREAMS_MAX`] are open.
    pub(super) fn stream(
        &self,
        gatherer: Arc<Mutex<Gatherer>>,
    ) -> Option<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
        let open = self.streams.fetch_add(1, Ordering::SeqCst);
        let slot = StreamSlot(Arc::clone(&self.streams));
        if open >= STREAMS_MAX {
            return None;
        }
        let rx = self.latest.clone();
        // The first event is a fresh snapshot, so a page shows the node at once.
        let first = Some(gatherer);
        let stream =
            futures_util::stream::unfold((rx, first, slot), |(mut rx, first, slot)| async move {
                let json = match first {
                    Some(g) => tokio::task::spawn_blocking(move || snapshot_json(&g))
                        .await
                        .ok()?,
                    None => {
                        rx.changed().await.ok()?;
                        rx.borrow_and_update().clone()
                    }
                };
                let event = Event::default().event("state").data(&*json);
                Some((Ok(event), (rx, None, slot)))
            });
        Some(Sse::new(stream).keep_alive(KeepAlive::default()))
    }
}

/// Frees a stream's place when the stream ends.
#[derive(Debug)]
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A snapshot of the node as JSON (blocking: it asks the control socket).
pub(super) fn snapshot_json(gatherer: &Mutex<Gatherer>) -> Snapshot {
    // A thread that panicked while gathering leaves nothing half-changed that matters: the
    // worst is one rate computed against an older sample.
    let mut g = gatherer.lock().unwrap_or_else(|e| e.into_inner());
    let state = g.gather();
    let json = serde_json::to_string(&state)
        .unwrap_or_else(|e| format!("{{\"error\":\"{}\"}}", e.to_string().replace('"', "'")));
    Snapshot::from(json)
}
