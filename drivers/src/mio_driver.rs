//! The mio driver: one hand-run poll loop per node. Its poll timeout is the node's next
//! deadline (`Node::poll_timeout`, the wall-clock period, linger and shutdown deadlines).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use weft_engine::ConnId;

use crate::accept::AcceptErrors;
use crate::conns::{Conns, ReadTurn, Socket};
use crate::handle::{self, Handle, Mailbox, Request, Wake};
use crate::host::{Exit, FirstContact, Host, RunError, StopSignal};
use crate::outbox::TryWrite;
use crate::setup::Setup;

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);

impl TryWrite for TcpStream {
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write(buf)
    }
}

impl Socket for TcpStream {
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read(buf)
    }

    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

fn token(conn: ConnId) -> Token {
    Token(conn.0 as usize)
}

/// A node and its poll loop, ready to [`run`](MioDriver::run).
pub struct MioDriver {
    poll: Poll,
    /// Declared (so dropped) before the host: once the run is over, the workers and scanners
    /// the host joins find the mailbox closed and stop, rather than wait for room in it.
    mailbox: Mailbox,
    host: Host,
    conns: Conns<TcpStream>,
    listener: Option<TcpListener>,
    signals: Option<Signals>,
    peers: Vec<String>,
    /// A joining node's first contact (taken at start).
    first_contact: Option<FirstContact>,
    next_inbound: u64,
    /// Connections whose last read turn ran out of budget.
    readable: Vec<ConnId>,
    /// Whether the listener may have more connections waiting.
    acceptable: bool,
    /// Failed accepts: the pause before the next, and their log lines.
    accept_errors: AcceptErrors,
    /// The waker fired: the mailbox has requests.
    requests_waiting: bool,
    /// Reused buffer for a batch of requests.
    batch: Vec<Request>,
}

impl MioDriver {
    /// Sets up the poll loop for `setup`; the handle reaches it once it runs.
    pub fn new(setup: Setup) -> io::Result<(MioDriver, Handle)> {
        let poll = Poll::new()?;
        let bound_addr = setup.listener.local_addr()?.to_string();
        let mut listener = TcpListener::from_std(setup.listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (handle, mailbox) = handle::channel(Wake::Mio(waker));
        let mut host = Host::new(setup.config, "mio", setup.store, Some(bound_addr));
        host.start_folders(setup.folders, &handle);
        let signals = if setup.signals {
            let numbers = StopSignal::watched().into_iter().map(|s| match s {
                StopSignal::Interrupt => SIGINT,
                StopSignal::Terminate => SIGTERM,
                StopSignal::Hangup => SIGHUP,
            });
            let mut signals = Signals::new(numbers)?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let driver = MioDriver {
            poll,
            host,
            conns: Conns::new(),
            listener: Some(listener),
            mailbox,
            signals,
            peers: setup.peers,
            first_contact: setup.first_contact,
            next_inbound: 0,
            readable: Vec::new(),
            acceptable: true,
            accept_errors: AcceptErrors::new("mio driver"),
            requests_waiting: false,
            batch: Vec::new(),
        };
        Ok((driver, handle))
    }

    /// Runs the node until a shutdown completes. Errors if polling itself fails, if the
    /// engine emits an output this driver does not handle, or on a driver bug; then the node
    /// stops at once.
    pub fn run(mut self) -> Result<Exit, RunError> {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<(Token, bool, bool)> = Vec::new();
        let peers = std::mem::take(&mut self.peers);
        self.host.start(&peers, self.first_contact.take());
        self.settle();
        loop {
            if let Some(exit) = self.host.exit_due(self.conns.len()) {
                return exit;
            }
            let busy = !self.readable.is_empty();
            let timeout = if busy {
                std::time::Duration::ZERO
            } else {
                self.host.clock.until(self.wake_at())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(RunError::Poll(e));
            }
            ready.clear();
            ready.extend(events.iter().map(|e| {
                let readable = e.is_readable() || e.is_read_closed() || e.is_error();
                (e.token(), readable, e.is_writable())
            }));
            for &(token, readable, writable) in &ready {
                match token {
                    LISTENER => self.acceptable = true,
                    WAKER => self.requests_waiting = true,
                    SIGNALS => {
                        if let Some(signal) = self.on_signals() {
                            return self.host.ended(Exit::Interrupted(signal));
                        }
                    }
                    Token(t) => self.on_conn_event(ConnId(t as u64), readable, writable),
                }
            }
            self.accept();
            self.take_requests();
            for conn in std::mem::take(&mut self.readable) {
                if self.conns.read(&mut self.host, conn) == ReadTurn::Budget {
                    self.readable.push(conn);
                }
            }
            if self.host.now() >= self.deadline() {
                self.host.on_timer();
                self.conns.expire(&mut self.host);
            }
            self.settle();
        }
    }

    fn deadline(&self) -> weft_engine::Instant {
        let at = self.host.deadline();
        self.conns.next_expiry().map_or(at, |e| at.min(e))
    }

    /// When the poll must return at the latest: the deadline, or the end of an accept pause.
    fn wake_at(&self) -> weft_engine::Instant {
        let at = self.deadline();
        let paused = self.accept_errors.paused_until(self.host.now());
        paused.map_or(at, |p| at.min(p))
    }

    /// Returns the last signal if the loop must end at once (a second signal).
    fn on_signals(&mut self) -> Option<StopSignal> {
        let signals = self.signals.as_mut()?;
        let pending: Vec<StopSignal> = signals
            .pending()
            .map(|n| match n {
                SIGTERM => StopSignal::Terminate,
                SIGHUP => StopSignal::Hangup,
                _ => StopSignal::Interrupt,
            })
            .collect();
        let (&last, first) = (pending.last()?, pending[0]);
        if self.host.is_stopping() || pending.len() > 1 {
            return Some(last);
        }
        self.begin_stop(Exit::Signalled(first));
        None
    }

    fn begin_stop(&mut self, exit: Exit) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.host.begin_stop(exit);
    }

    fn on_conn_event(&mut self, conn: ConnId, readable: bool, writable: bool) {
        if self.conns.is_dialing(conn) {
            self.check_dial(conn);
        } else if writable {
            self.conns.mark_writable(conn);
        }
        if readable && !self.readable.contains(&conn) {
            self.readable.push(conn);
        }
    }

    /// mio's recipe for a non-blocking connect: an error, or a peer address once connected.
    fn check_dial(&mut self, conn: ConnId) {
        let Some(socket) = self.conns.socket(conn) else {
            return;
        };
        let outcome = match socket.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match socket.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(()) => self.conns.dial_connected(&mut self.host, conn),
            Err(e) => self.conns.dial_failed(&mut self.host, conn, &e),
        }
    }

    fn accept(&mut self) {
        if self.accept_errors.paused_until(self.host.now()).is_some() {
            return;
        }
        while self.acceptable {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((mut socket, addr)) => {
                    self.next_inbound += 1;
                    let conn = ConnId::inbound(self.next_inbound);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut socket, token(conn), interest)
                    {
                        // Out of epoll watches or memory: paused and logged as a failed
                        // accept (a warning per connection, at once, filled the log).
                        self.accept_errors.failed(self.host.now(), &e);
                        return;
                    }
                    self.accept_errors.succeeded();
                    let _ = socket.set_nodelay(true);
                    self.conns
                        .accepted(&mut self.host, conn, socket, addr.to_string());
                    self.readable.push(conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.acceptable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors or similar: pause, then try again (`acceptable`
                    // stays set: the waiting connections raise no new readiness event).
                    self.accept_errors.failed(self.host.now(), &e);
                    return;
                }
            }
        }
    }

    fn take_requests(&mut self) {
        if !std::mem::take(&mut self.requests_waiting) {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        self.mailbox.take(&mut batch);
        for request in batch.drain(..) {
            let conns = &self.conns;
            self.host.on_request(request, &|conn| conns.unwritten(conn));
            self.conns.drain(&mut self.host);
        }
        self.batch = batch;
        if self.host.is_stopping() && self.listener.is_some() {
            self.begin_stop(Exit::Requested);
        }
    }

    /// Writes what can be written and starts the dials the engine asked for, until neither
    /// produces anything new.
    fn settle(&mut self) {
        loop {
            self.conns.flush(&mut self.host);
            let dials = self.conns.take_dials();
            if dials.is_empty() {
                return;
            }
            for (conn, addr) in dials {
                self.dial(conn, &addr);
            }
        }
    }

    fn dial(&mut self, conn: ConnId, addr: &str) {
        // Closed by the engine in the same drain that asked for it (the start gate releases
        // a held dial with its close): no connection is opened for it, as under tokio.
        if !self.conns.is_dialing(conn) {
            return;
        }
        let started = addr
            .parse::<SocketAddr>()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not an IP:PORT address"))
            .and_then(TcpStream::connect)
            .and_then(|mut socket| {
                let interest = Interest::READABLE | Interest::WRITABLE;
                self.poll
                    .registry()
                    .register(&mut socket, token(conn), interest)?;
                Ok(socket)
            });
        match started {
            Ok(socket) => {
                let _ = socket.set_nodelay(true);
                self.conns.dial_started(conn, socket);
            }
            Err(e) => self.conns.dial_failed(&mut self.host, conn, &e),
        }
    }
}
