//! The tokio driver: one task per node. The task polls its listener, sockets, dials, mailbox
//! and signals itself, and sleeps (`Sleep` reset to the node's next deadline) in between.

use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::Sleep;
use weft_engine::{ConnId, Instant};

use crate::accept::AcceptErrors;
use crate::conns::{Conns, ReadTurn, Socket};
use crate::handle::{self, Handle, Mailbox, Request, Wake};
use crate::host::{Exit, FirstContact, Host, RunError, StopSignal};
use crate::outbox::TryWrite;
use crate::setup::Setup;

/// Passes per poll before the task yields to the runtime.
const PASSES_PER_POLL: usize = 64;

type Dial = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

impl TryWrite for TcpStream {
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
}

impl Socket for TcpStream {
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(self).shutdown(Shutdown::Write);
    }
}

/// A node and its task state, ready to [`run`](TokioDriver::run).
pub struct TokioDriver {
    /// Declared (so dropped) before the host: once the run is over, the workers and scanners
    /// the host joins find the mailbox closed and stop, rather than wait for room in it.
    mailbox: Mailbox,
    host: Host,
    conns: Conns<TcpStream>,
    listener: Option<TcpListener>,
    dials: Vec<(ConnId, Dial)>,
    sleep: Pin<Box<Sleep>>,
    signals: Vec<(StopSignal, Signal)>,
    peers: Vec<String>,
    /// A joining node's first contact (taken at start).
    first_contact: Option<FirstContact>,
    next_inbound: u64,
    /// Failed accepts: the pause before the next, and their log lines.
    accept_errors: AcceptErrors,
    /// Reused buffer for a batch of requests.
    batch: Vec<Request>,
    /// A read in the last pass ran out of its turn's budget, bytes left: the task yields,
    /// so the runtime's reactor marks what else became ready (as the mio driver polls again
    /// at once), rather than read that socket again 64 times first.
    read_budget_spent: bool,
}

impl TokioDriver {
    /// Sets up the node's task state for `setup`. Call it inside a Tokio runtime (the
    /// listener and signals register with its reactor).
    pub fn new(setup: Setup) -> io::Result<(TokioDriver, Handle)> {
        let bound_addr = setup.listener.local_addr()?.to_string();
        let listener = TcpListener::from_std(setup.listener)?;
        let (handle, mailbox) = handle::channel(Wake::Task);
        let mut host = Host::new(setup.config, "tokio", setup.store, Some(bound_addr));
        host.start_folders(setup.folders, &handle);
        let signals = if setup.signals {
            let mut signals = Vec::new();
            for s in StopSignal::watched() {
                let kind = match s {
                    StopSignal::Interrupt => SignalKind::interrupt(),
                    StopSignal::Terminate => SignalKind::terminate(),
                    StopSignal::Hangup => SignalKind::hangup(),
                };
                signals.push((s, signal(kind)?));
            }
            signals
        } else {
            Vec::new()
        };
        let driver = TokioDriver {
            host,
            conns: Conns::new(),
            listener: Some(listener),
            dials: Vec::new(),
            mailbox,
            sleep: Box::pin(tokio::time::sleep(std::time::Duration::ZERO)),
            signals,
            peers: setup.peers,
            first_contact: setup.first_contact,
            next_inbound: 0,
            accept_errors: AcceptErrors::new("tokio driver"),
            batch: Vec::new(),
            read_budget_spent: false,
        };
        Ok((driver, handle))
    }

    /// Runs the node until a shutdown completes. Errors if the engine emits an output this
    /// driver does not handle, or on a driver bug; then the node stops at once.
    pub async fn run(mut self) -> Result<Exit, RunError> {
        let peers = std::mem::take(&mut self.peers);
        self.host.start(&peers, self.first_contact.take());
        self.settle();
        std::future::poll_fn(|cx| self.poll_passes(cx)).await
    }

    fn poll_passes(&mut self, cx: &mut Context<'_>) -> Poll<Result<Exit, RunError>> {
        for _ in 0..PASSES_PER_POLL {
            if let Some(exit) = self.host.exit_due(self.conns.len()) {
                return Poll::Ready(exit);
            }
            match self.pass(cx) {
                Some(Ok(())) if std::mem::take(&mut self.read_budget_spent) => break,
                Some(Ok(())) => {}
                Some(Err(exit)) => return Poll::Ready(self.host.ended(exit)),
                // The run failed during the pass: the next turn returns the error.
                None if self.host.has_failed() => {}
                None => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One look at every source. `None` when nothing was ready and every source has the
    /// task's waker; `Some(Err)` to end at once.
    fn pass(&mut self, cx: &mut Context<'_>) -> Option<Result<(), Exit>> {
        let mut progress = false;
        for i in 0..self.signals.len() {
            let signal = self.signals[i].0;
            while let Poll::Ready(Some(())) = self.signals[i].1.poll_recv(cx) {
                if self.host.is_stopping() {
                    return Some(Err(Exit::Interrupted(signal)));
                }
                self.begin_stop(Exit::Signalled(signal));
                progress = true;
            }
        }
        progress |= self.take_requests(cx);
        progress |= self.accept(cx);
        progress |= self.poll_dials(cx);
        progress |= self.read(cx);
        if self.host.now() >= self.deadline() {
            self.host.on_timer();
            self.conns.expire(&mut self.host);
            progress = true;
        }
        self.settle();
        progress |= self.poll_writable(cx);
        if progress {
            return Some(Ok(()));
        }
        let mut at = self.deadline();
        if let Some(paused) = self.accept_errors.paused_until(self.host.now()) {
            at = at.min(paused);
        }
        let at = tokio::time::Instant::from_std(self.host.clock.to_std(at));
        if self.sleep.deadline() != at {
            self.sleep.as_mut().reset(at);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Some(Ok(())),
            Poll::Pending => None,
        }
    }

    fn deadline(&self) -> Instant {
        let at = self.host.deadline();
        self.conns.next_expiry().map_or(at, |e| at.min(e))
    }

    fn begin_stop(&mut self, exit: Exit) {
        self.listener = None;
        self.host.begin_stop(exit);
    }

    fn take_requests(&mut self, cx: &mut Context<'_>) -> bool {
        self.mailbox.register(cx.waker());
        let mut batch = std::mem::take(&mut self.batch);
        self.mailbox.take(&mut batch);
        let progress = !batch.is_empty();
        for request in batch.drain(..) {
            let conns = &self.conns;
            self.host.on_request(request, &|conn| conns.unwritten(conn));
            self.conns.drain(&mut self.host);
        }
        self.batch = batch;
        if self.host.is_stopping() {
            self.listener = None;
        }
        progress
    }

    fn accept(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        if self.accept_errors.paused_until(self.host.now()).is_some() {
            return false;
        }
        while let Some(listener) = self.listener.as_ref() {
            match listener.poll_accept(cx) {
                Poll::Ready(Ok((socket, addr))) => {
                    self.accept_errors.succeeded();
                    self.next_inbound += 1;
                    let conn = ConnId::inbound(self.next_inbound);
                    let _ = socket.set_nodelay(true);
                    self.conns
                        .accepted(&mut self.host, conn, socket, addr.to_string());
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    // Out of descriptors or similar: pause (the task sleeps until the pause
                    // ends at the latest), then try again.
                    self.accept_errors.failed(self.host.now(), &e);
                    return progress;
                }
                Poll::Pending => break,
            }
        }
        progress
    }

    fn poll_dials(&mut self, cx: &mut Context<'_>) -> bool {
        let mut done = Vec::new();
        let conns = &self.conns;
        self.dials.retain_mut(|(conn, dial)| {
            if !conns.is_dialing(*conn) {
                return false; // abandoned by the engine
            }
            match dial.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    done.push((*conn, result));
                    false
                }
                Poll::Pending => true,
            }
        });
        let progress = !done.is_empty();
        for (conn, result) in done {
            if let Ok(socket) = &result {
                let _ = socket.set_nodelay(true);
            }
            self.conns.dial_done(&mut self.host, conn, result);
        }
        progress
    }

    fn read(&mut self, cx: &mut Context<'_>) -> bool {
        let ready: Vec<ConnId> = self
            .conns
            .sockets()
            .filter(|(_, socket, _)| socket.poll_read_ready(cx).is_ready())
            .map(|(conn, _, _)| conn)
            .collect();
        for &conn in &ready {
            // Budget or not, a ready socket is polled again next pass, which re-arms it.
            if self.conns.read(&mut self.host, conn) == ReadTurn::Budget {
                self.read_budget_spent = true;
            }
        }
        !ready.is_empty()
    }

    fn poll_writable(&mut self, cx: &mut Context<'_>) -> bool {
        let ready: Vec<ConnId> = self
            .conns
            .sockets()
            .filter(|(_, socket, waiting)| *waiting && socket.poll_write_ready(cx).is_ready())
            .map(|(conn, _, _)| conn)
            .collect();
        for &conn in &ready {
            self.conns.mark_writable(conn);
        }
        !ready.is_empty()
    }

    /// Writes what can be written and starts the dials the engine asked for.
    fn settle(&mut self) {
        self.conns.flush(&mut self.host);
        for (conn, addr) in self.conns.take_dials() {
            match addr.parse::<SocketAddr>() {
                Ok(addr) => self.dials.push((conn, Box::pin(TcpStream::connect(addr)))),
                Err(_) => {
                    let e = io::Error::new(io::ErrorKind::InvalidInput, "not an IP:PORT address");
                    self.conns.dial_done(&mut self.host, conn, Err(e));
                }
            }
        }
        self.conns.flush(&mut self.host);
    }
}
