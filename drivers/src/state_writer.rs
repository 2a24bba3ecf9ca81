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

/// Blobs nobody waits for (scan caches) handed over and not yet stored, by name: one per
/// name, the newest. A folder that keeps changing on a disk slower than its scanner queued
/// one whole cache (9 MB at 100,000 files) per scan, without bound.
type Pending = Arc<Mutex<std::collections::BTreeMap<String, Bytes>>>;

/// What the thread is given.
enum Job {
    /// Store blob `name`; answer the engine's request `id`.
    Store {
        id: RequestId,
        name: String,
        bytes: Bytes,
    },
    /// Store the pending blob `name` (a scan cache), if it is still pending.
    Blob(String),
    /// Wait until told (tests: the thread held busy).
    #[cfg(test)]
    Hold(mpsc::Receiver<()>),
    /// Everything before is carried out: said on this channel.
    Flush(Sender<()>),
}

/// See the module documentation. Dropping it waits for what was handed to it.
pub(crate) struct StateWriter {
    queue: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    answers: Answers,
    pending: Pending,
}

impl StateWriter {
    /// A writer of `store`, calling `wake` when answers wait.
    pub(crate) fn start(store: Arc<Store>, wake: Wake) -> std::io::Result<StateWriter> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let answers: Answers = Arc::default();
        let answered = Arc::clone(&answers);
        let pending: Pending = Arc::default();
        let blobs = Arc::clone(&pending);
        let thread = std::thread::Builder::new()
            .name("weft-state".into())
            .spawn(move || {
                let carry_out = |name: &str, bytes: &Bytes| {
                    let what = format!("storing state {name} ({} bytes)", bytes.len());
                    // A panic in the store (redb's own) fails this store, not the thread:
                    // every later request would go unanswered, and the engine's table and
                    // folders wait for their answers.
                    let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        store.store(name, bytes)
                    }))
                    .unwrap_or_else(|_| Err("the store panicked".to_string()));
                    match stored {
                        Ok(()) => {
                            tracing::debug!("{what}: done");
                            HostResult::Stored
                        }
                        Err(why) => {
                            tracing::warn!("{what} failed: {why}");
                            HostResult::Failed(why)
                        }
                    }
                };
                for job in jobs {
                    match job {
                        Job::Store { id, name, bytes } => {
                            let result = carry_out(&name, &bytes);
                            lock(&answered).push((id, result));
                            wake();
                        }
                        Job::Blob(name) => {
                            let bytes = lock(&blobs).remove(&name);
                            if let Some(bytes) = bytes {
                                carry_out(&name, &bytes);
                            }
                        }
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                        #[cfg(test)]
                        Job::Hold(until) => {
                            let _ = until.recv();
                        }
                    }
                }
            })?;
        Ok(StateWriter {
            queue: Some(queue),
            thread: Some(thread),
            answers,
            pending,
        })
    }

    /// Stores blob `name` after everything handed over before, answering the engine's
    /// request `id` if it is one; false if the thread has stopped (nothing was handed over).
    /// A blob nobody waits for (`id` `None`: a scan cache) replaces one of the same name
    /// still waiting, where it waits: at most one per name is ever held.
    pub(crate) fn store(&self, id: Option<RequestId>, name: String, bytes: Bytes) -> bool {
        let Some(queue) = self.queue.as_ref() else {
            return false;
        };
        let Some(id) = id else {
            let mut pending = lock(&self.pending);
            if pending.insert(name.clone(), bytes).is_some() {
                return true;
            }
            if queue.send(Job::Blob(name.clone())).is_ok() {
                return true;
            }
            pending.remove(&name);
            return false;
        };
        queue.send(Job::Store { id, name, bytes }).is_ok()
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

/// A lock of the answers or the pending blobs (a panic while it was held cannot leave them
/// inconsistent: every change is one push, insert, remove or take).
fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Scan caches handed over while the thread is busy wait one per name, the newest: the
    /// older ones are never stored, and what is stored last is the newest.
    #[test]
    fn blobs_nobody_waits_for_are_held_one_per_name() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(Store::open_or_create(dir.path()).expect("a store"));
        let writer = StateWriter::start(Arc::clone(&store), Box::new(|| {})).expect("the thread");
        let (release, held) = mpsc::channel();
        assert!(writer
            .queue
            .as_ref()
            .is_some_and(|q| q.send(Job::Hold(held)).is_ok()));
        for n in 0..100u8 {
            assert!(writer.store(None, "scan-00".into(), Bytes::from(vec![n; 1 << 16])));
            assert!(writer.store(None, "scan-01".into(), Bytes::from(vec![n; 10])));
        }
        assert_eq!(lock(&writer.pending).len(), 2, "one per name");
        release.send(()).expect("the thread waits");
        writer.flush();
        assert!(lock(&writer.pending).is_empty());
        assert_eq!(
            store.load("scan-00"),
            Ok(Some(Bytes::from(vec![99u8; 1 << 16])))
        );
        assert_eq!(store.load("scan-01"), Ok(Some(Bytes::from(vec![99u8; 10]))));
    }
}
