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

use bytes::Bytes;
use weft_engine::{HostResult, RequestId};

use crate::storage::Store;

/// Tells the loop answers are waiting; must never block.
pub(crate) type Wake = Box<dyn Fn() + Send>;

/// Answers waiting for the loop.
type Answers = Arc<Mutex<Vec<(RequestId, HostResult)>>>;

/// What the thread is given.
enum Job {
    /// Store blob `name`; answer the engine's request `id`, if it is one (a scan cache is
    /// not).
    Store {
        id: Option<RequestId>,
        name: String,
        bytes: Bytes,
    },
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
                        Job::Store { id, name, bytes } => {
                            let what = format!("storing state {name} ({} bytes)", bytes.len());
                            let result = match store.store(&name, &bytes) {
                                Ok(()) => {
                                    tracing::debug!("{what}: done");
                                    HostResult::Stored
                                }
                                Err(why) => {
                                    tracing::warn!("{what} failed: {why}");
                                    HostResult::Failed(why)
                                }
                            };
                            if let Some(id) = id {
                                lock(&answered).push((id, result));
                                wake();
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

    /// Stores blob `name` after everything handed over before, answering the engine's
    /// request `id` if it is one; false if the thread has stopped (nothing was handed over).
    pub(crate) fn store(&self, id: Option<RequestId>, name: String, bytes: Bytes) -> bool {
        self.queue
            .as_ref()
            .is_some_and(|q| q.send(Job::Store { id, name, bytes }).is_ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores are carried out in the order handed over, off the caller's thread, and the
    /// engine's are answered; after a flush a load reads what was stored last; dropping the
    /// writer waits for the blobs it holds.
    #[test]
    fn stores_are_carried_out_in_order_and_flush_and_drop_wait_for_them() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(Store::open_or_create(dir.path()).expect("a store"));
        let (tx, rx) = mpsc::channel();
        let wake: Wake = Box::new(move || {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        let writer = StateWriter::start(Arc::clone(&store), wake).expect("the thread");
        let table = |v: &'static [u8]| ("table".to_string(), Bytes::from_static(v));
        let (name, bytes) = table(b"one");
        assert!(writer.store(Some(RequestId(1)), name, bytes));
        let (name, bytes) = table(b"two");
        assert!(writer.store(Some(RequestId(2)), name, bytes));
        let woken: Vec<_> = (0..2).map(|_| rx.recv().expect("a wake")).collect();
        assert!(woken.iter().all(|w| w.as_deref() == Some("weft-state")));
        assert_eq!(
            writer.take_answers(),
            vec![
                (RequestId(1), HostResult::Stored),
                (RequestId(2), HostResult::Stored)
            ]
        );
        assert!(writer.take_answers().is_empty());
        let big = Bytes::from(vec![7u8; 1 << 20]);
        assert!(writer.store(None, "scan-00".into(), big.clone()));
        writer.flush();
        assert_eq!(store.load("table"), Ok(Some(Bytes::from_static(b"two"))));
        assert_eq!(store.load("scan-00"), Ok(Some(big)));
        assert!(writer.take_answers().is_empty(), "a blob is not answered");
        let bigger = Bytes::from(vec![8u8; 2 << 20]);
        assert!(writer.store(None, "scan-00".into(), bigger.clone()));
        drop(writer);
        assert_eq!(store.load("scan-00"), Ok(Some(bigger)));
    }
}
