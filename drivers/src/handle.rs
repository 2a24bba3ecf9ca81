//! The application's side of a running driver: a [`Handle`] queues requests for the node's
//! event loop and wakes it; the loop drains them from its [`Mailbox`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::Arc;

use bytes::Bytes;
use weft_engine::{InputError, NodeId};

use crate::report::{HostReport, StatsReport};

/// Requests waiting for the event loop; a full queue blocks the sender.
const REQUESTS_MAX: usize = 1024;

/// A broadcast as the node delivered it to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Who sent it.
    pub origin: NodeId,
    /// The origin's incarnation when it sent it.
    pub incarnation: u64,
    /// The origin's sequence number (per incarnation).
    pub seq: u64,
    /// The application bytes.
    pub payload: Bytes,
}

/// Why a request did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The node's event loop has ended.
    #[error("the node is not running")]
    Stopped,
    /// The node refused the request.
    #[error("{0}")]
    Refused(InputError),
}

/// What the event loop is asked to do.
pub(crate) enum Request {
    Broadcast {
        payload: Bytes,
        reply: Option<Sender<Result<(), InputError>>>,
    },
    Subscribe {
        sink: SyncSender<Delivery>,
    },
    Hosts {
        reply: Sender<Vec<HostReport>>,
    },
    Stats {
        reply: Sender<StatsReport>,
    },
    Shutdown,
}

/// How a sender wakes the event loop.
pub(crate) enum Wake {
    /// The mio loop's poll waker.
    #[cfg(feature = "mio")]
    Mio(mio::Waker),
    /// The waker of the task that runs the node, once it has polled.
    #[cfg(feature = "tokio")]
    Task(std::sync::Mutex<Option<std::task::Waker>>),
}

struct Shared {
    /// Set by the first request after the loop last looked: later senders need not wake it.
    pending: AtomicBool,
    wake: Wake,
}

/// A cloneable, thread-safe way to talk to a running node.
#[derive(Clone)]
pub struct Handle {
    requests: SyncSender<Request>,
    shared: Arc<Shared>,
}

/// The event loop's end of the request queue.
pub(crate) struct Mailbox {
    requests: Receiver<Request>,
    shared: Arc<Shared>,
}

/// A connected handle and mailbox.
pub(crate) fn channel(wake: Wake) -> (Handle, Mailbox) {
    let (tx, rx) = mpsc::sync_channel(REQUESTS_MAX);
    let shared = Arc::new(Shared {
        pending: AtomicBool::new(false),
        wake,
    });
    let handle = Handle {
        requests: tx,
        shared: Arc::clone(&shared),
    };
    (
        handle,
        Mailbox {
            requests: rx,
            shared,
        },
    )
}

impl Handle {
    fn send(&self, request: Request) -> Result<(), HandleError> {
        self.requests
            .send(request)
            .map_err(|_| HandleError::Stopped)?;
        if !self.shared.pending.swap(true, Ordering::SeqCst) {
            match &self.shared.wake {
                #[cfg(feature = "mio")]
                Wake::Mio(waker) => waker.wake().map_err(|_| HandleError::Stopped)?,
                #[cfg(feature = "tokio")]
                Wake::Task(slot) => {
                    let waker = slot.lock().ok().and_then(|w| w.clone());
                    if let Some(w) = waker {
                        w.wake();
                    }
                }
            }
        }
        Ok(())
    }

    /// Floods `payload` to the mesh and waits for the node to accept it.
    pub fn broadcast(&self, payload: Bytes) -> Result<(), HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Broadcast {
            payload,
            reply: Some(reply),
        })?;
        answer
            .recv()
            .map_err(|_| HandleError::Stopped)?
            .map_err(HandleError::Refused)
    }

    /// Floods `payload` without waiting for an answer (a refusal is only logged). Blocks while
    /// the node's request queue is full.
    pub fn broadcast_nowait(&self, payload: Bytes) -> Result<(), HandleError> {
        self.send(Request::Broadcast {
            payload,
            reply: None,
        })
    }

    /// Every broadcast delivered from now on. When `capacity` deliveries wait unread, later
    /// ones are dropped for this subscriber (and counted in `StatsReport::listener_drops`).
    pub fn subscribe(&self, capacity: usize) -> Result<Receiver<Delivery>, HandleError> {
        let (sink, deliveries) = mpsc::sync_channel(capacity);
        self.send(Request::Subscribe { sink })?;
        Ok(deliveries)
    }

    /// Direct and heard-of hosts.
    pub fn hosts(&self) -> Result<Vec<HostReport>, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Hosts { reply })?;
        answer.recv().map_err(|_| HandleError::Stopped)
    }

    /// The node's and its connections' counters.
    pub fn stats(&self) -> Result<StatsReport, HandleError> {
        let (reply, answer) = mpsc::channel();
        self.send(Request::Stats { reply })?;
        answer.recv().map_err(|_| HandleError::Stopped)
    }

    /// Says BYE to every peer, flushes and ends the event loop (`Exit::Requested`).
    pub fn shutdown(&self) -> Result<(), HandleError> {
        self.send(Request::Shutdown)
    }
}

impl Mailbox {
    /// Registers the waker of the task that drains this mailbox.
    #[cfg(feature = "tokio")]
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        #[allow(irrefutable_let_patterns)]
        if let Wake::Task(slot) = &self.shared.wake {
            if let Ok(mut w) = slot.lock() {
                if !w.as_ref().is_some_and(|old| old.will_wake(waker)) {
                    *w = Some(waker.clone());
                }
            }
        }
    }

    /// Up to `max` waiting requests; the loop must look again (without sleeping) if it got
    /// `max`.
    pub(crate) fn take(&self, max: usize) -> Vec<Request> {
        self.shared.pending.store(false, Ordering::SeqCst);
        let mut out = Vec::new();
        while out.len() < max {
            match self.requests.try_recv() {
                Ok(r) => out.push(r),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        out
    }
}
