//! The node's store, written off the event loop: one thread carries out the engine's
//! `StoreState` requests and stores the folders' scan caches, in the order they were handed
//! to it. Its answers wait in a list the loop takes them from ([`StateWriter::take_answers`]),
//! and a wake that never blocks tells the loop they are there: the thread never waits for
//! the loop, so the loop may wait for the thread ([`StateWriter::flush`]).
//!
//! A durable store costs two fsyncs (redb's two-phase commit) and the blob's bytes: some
//! 20–45 ms for the 9 MB state of a folder of 100,000 files, on this machine. On the loop it
//! held every connection and timer for that long, twice a second while a folder changed.
//! Loads stay on the loop, answered at once as before (a part of the node that restores its
//! state answers nothing until then, and reads are quick), after [`StateWriter::flush`], so
//! a load after a store of the same name reads what was stored.

use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use weft_engine::{HostRequest, HostResult, RequestId};

use crate::storage::Store;

/// Tells the loop answers are waiting; must never block.
pub(crate) type Wake = Box<dyn Fn() + Send>;

/// Answers waiting for the loop.
type Answers = Arc<Mutex<Vec<(RequestId, HostResult)>>>;

/// What the thread is given.
enum Job {
    /// The engine's request, answered.
    Engine { id: RequestId, request: HostRequest },
    /// A scan cache (or another blob of the host's own), stored without an answer.
    Blob { name: String, bytes: bytes::Bytes },
    /// Everything before is carried out: said on this channel.
    Flush(Sender<()>),
}

/// See the module documentation. Dropping it waits for what was handed to it.
pub(crate) struct StateWriter {
    queue: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    answers: Answers,
}

impl StateWriter {
    /// A writer of `store`, calling `wake` when answers wait.
    pub(crate) fn start(store: Arc<Store>, wake: Wake) -> std::io::Result<StateWriter> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let answers: Answers = Arc::default();
        let answered = Arc::clone(&answers);
        let thread = std::thread::Builder::new()
            .name("weft-state".into())
            .spawn(move || {
                for job in jobs {
                    match job {
                        Job::Engine { id, request } => {
                            let what = describe(&request);
                            let result = store.carry_out(request);
                            match &result {
                                HostResult::Failed(why) => tracing::warn!("{what} failed: {why}"),
                                _ => tracing::debug!("{what}: done"),
                            }
                            lock(&answered).push((id, result));
                            wake();
                        }
                        Job::Blob { name, bytes } => {
                            if let Err(why) = store.store(&name, &bytes) {
                                tracing::warn!("{name} not stored: {why}");
                            }
                        }
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(StateWriter {
            queue: Some(queue),
            thread: Some(thread),
            answers,
        })
    }

    /// The answers to the engine's requests carried out since the last call.
    pub(crate) fn take_answers(&self) -> Vec<(RequestId, HostResult)> {
        std::mem::take(&mut *lock(&self.answers))
    }

    /// Waits until everything handed over before is carried out (at once when nothing is).
    pub(crate) fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self
            .queue
            .as_ref()
            .is_some_and(|q| q.send(Job::Flush(done)).is_ok())
        {
            // An error: the thread ended (it panicked), and nothing is left to wait for.
            let _ = wait.recv();
        }
    }

    /// Hands the engine's `StoreState` (or `LoadState`) to the thread; given back if it has
    /// stopped.
    pub(crate) fn engine(
        &self,
        id: RequestId,
        request: HostRequest,
    ) -> Result<(), Box<HostRequest>> {
        let Some(queue) = &self.queue else {
            return Err(Box::new(request));
        };
        queue
            .send(Job::Engine { id, request })
            .map_err(|mpsc::SendError(job)| match job {
                Job::Engine { request, .. } => Box::new(request),
                // What was sent comes back: an engine request.
                Job::Blob { name, .. } => Box::new(HostRequest::LoadState { name }),
                Job::Flush(_) => Box::new(HostRequest::LoadState {
                    name: String::new(),
                }),
            })
    }

    /// Stores blob `name` (a scan cache) after everything handed over before; false if the
    /// thread has stopped.
    pub(crate) fn blob(&self, name: String, bytes: bytes::Bytes) -> bool {
        self.queue
            .as_ref()
            .is_some_and(|q| q.send(Job::Blob { name, bytes }).is_ok())
    }
}

impl Drop for StateWriter {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has carried out what it holds.
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the state writer thread panicked");
            }
        }
    }
}

/// The answers' lock (a panic while it was held cannot leave the list inconsistent: every
/// change is one push or take).
fn lock(answers: &Answers) -> std::sync::MutexGuard<'_, Vec<(RequestId, HostResult)>> {
    answers.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request in a few words, for the log (never its bytes).
fn describe(request: &HostRequest) -> String {
    match request {
        HostRequest::LoadState { name } => format!("loading state {name}"),
        HostRequest::StoreState { name, bytes } => {
            format!("storing state {name} ({} bytes)", bytes.len())
        }
        _ => "a request".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests are carried out in the order handed over, off the caller's thread: a load
    /// after a store of the same name reads what was stored, and dropping the writer waits
    /// for the blobs it holds.
    #[test]
    fn requests_are_carried_out_in_order_and_dropping_flushes() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(Store::open_or_create(dir.path()).expect("a store"));
        let (tx, rx) = mpsc::channel();
        let wake: Wake = Box::new(move || {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        let writer = StateWriter::start(Arc::clone(&store), wake).expect("the thread");
        let store_req = |v: &'static [u8]| HostRequest::StoreState {
            name: "table".into(),
            bytes: bytes::Bytes::from_static(v),
        };
        let load = || HostRequest::LoadState {
            name: "table".into(),
        };
        writer
            .engine(RequestId(1), store_req(b"one"))
            .expect("sent");
        writer
            .engine(RequestId(2), store_req(b"two"))
            .expect("sent");
        writer.engine(RequestId(3), load()).expect("sent");
        let woken: Vec<_> = (0..3).map(|_| rx.recv().expect("a wake")).collect();
        assert!(woken.iter().all(|w| w.as_deref() == Some("weft-state")));
        let got = writer.take_answers();
        assert_eq!(
            got,
            vec![
                (RequestId(1), HostResult::Stored),
                (RequestId(2), HostResult::Stored),
                (
                    RequestId(3),
                    HostResult::Loaded(Some(bytes::Bytes::from_static(b"two")))
                ),
            ]
        );
        assert!(writer.take_answers().is_empty());
        let big = bytes::Bytes::from(vec![7u8; 1 << 20]);
        assert!(writer.blob("scan-00".into(), big.clone()));
        writer.flush();
        assert_eq!(store.load("scan-00"), Ok(Some(big.clone())));
        let bigger = bytes::Bytes::from(vec![8u8; 2 << 20]);
        assert!(writer.blob("scan-00".into(), bigger.clone()));
        drop(writer);
        assert_eq!(store.load("scan-00"), Ok(Some(bigger)));
    }
}
