//! The connection table every driver keeps, whatever its I/O library: the output pump (after
//! every input, drain `poll_output` into outboxes, dials, closes and events), writing with the
//! `Writable` handshake, reading into `Received`, and closing with `Closed`.

use std::collections::BTreeMap;
use std::io;

use bytes::Bytes;
use weft_engine::{ConnId, Duration, Input, Instant, Output};

use crate::host::{log_unknown, Host};
use crate::outbox::{Flushed, Outbox, TryWrite};

/// How long a closing connection may take to flush before it is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection before other connections get a turn.
pub(crate) const READS_PER_TURN: usize = 16;

/// A non-blocking stream socket.
pub(crate) trait Socket: TryWrite {
    /// Reads some bytes; `Ok(0)` at end of stream, `WouldBlock` when there are none.
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Half-closes the write side (after the last bytes).
    fn shutdown_write(&self);
}

/// One connection as the driver sees it.
struct Link<S> {
    socket: Option<S>,
    /// Whether the socket is connected (a dial completes later).
    open: bool,
    outbox: Outbox,
    /// Set when the engine asked to close: flush, then drop by this time at the latest.
    closing_by: Option<Instant>,
    /// The write side is shut; reading on only to let the peer close cleanly.
    draining: bool,
}

/// How a read turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadTurn {
    /// The socket has no more bytes now.
    Drained,
    /// The turn's budget ran out; more bytes may wait.
    Budget,
    /// The connection is gone.
    Gone,
}

/// Every connection of one node.
pub(crate) struct Conns<S> {
    links: BTreeMap<ConnId, Link<S>>,
    /// Connections with bytes to write or a close to carry out.
    dirty: Vec<ConnId>,
    /// Dials the engine asked for that the driver has not started yet.
    dials: Vec<(ConnId, String)>,
    read_buf: Vec<u8>,
}

impl<S: Socket> Conns<S> {
    pub(crate) fn new() -> Conns<S> {
        Conns {
            links: BTreeMap::new(),
            dirty: Vec::new(),
            dials: Vec::new(),
            read_buf: vec![0; READ_CHUNK],
        }
    }

    /// Open, dialing or closing connections.
    pub(crate) fn len(&self) -> usize {
        self.links.len()
    }

    /// The driver's unwritten bytes for `conn`.
    pub(crate) fn unwritten(&self, conn: ConnId) -> usize {
        self.links.get(&conn).map_or(0, |l| l.outbox.unwritten())
    }

    /// The socket of `conn`, if it has one.
    pub(crate) fn socket(&self, conn: ConnId) -> Option<&S> {
        self.links.get(&conn)?.socket.as_ref()
    }

    /// Connections with a socket, and whether each has bytes waiting to be written.
    pub(crate) fn sockets(&self) -> impl Iterator<Item = (ConnId, &S, bool)> + '_ {
        self.links.iter().filter_map(|(id, l)| {
            let waiting = l.open && !l.draining && l.outbox.unwritten() > 0;
            Some((*id, l.socket.as_ref()?, waiting))
        })
    }

    /// Whether `conn` is a dial that has not completed.
    pub(crate) fn is_dialing(&self, conn: ConnId) -> bool {
        self.links.get(&conn).is_some_and(|l| !l.open)
    }

    /// Dials to start now.
    pub(crate) fn take_dials(&mut self) -> Vec<(ConnId, String)> {
        std::mem::take(&mut self.dials)
    }

    /// Drains the node's outputs after an input.
    pub(crate) fn drain(&mut self, host: &mut Host) {
        while let Some(output) = host.node.poll_output() {
            match output {
                Output::Transmit { conn, bytes } => match self.links.get_mut(&conn) {
                    Some(link) => {
                        link.outbox.push(&bytes);
                        self.dirty.push(conn);
                    }
                    None => tracing::error!("transmit to unknown {conn:?}"),
                },
                Output::Connect { conn, addr } => {
                    self.links.insert(
                        conn,
                        Link {
                            socket: None,
                            open: false,
                            outbox: Outbox::default(),
                            closing_by: None,
                            draining: false,
                        },
                    );
                    self.dials.push((conn, addr));
                }
                Output::Close { conn, reason } => {
                    tracing::debug!("closing {conn:?}: {reason:?}");
                    if let Some(link) = self.links.get_mut(&conn) {
                        link.closing_by.get_or_insert(host.now() + LINGER);
                        self.dirty.push(conn);
                    }
                }
                Output::Event(event) => host.on_event(event),
                other => log_unknown(&other),
            }
        }
    }

    /// Marks `conn` as having room to write (its socket reported writable).
    pub(crate) fn mark_writable(&mut self, conn: ConnId) {
        self.dirty.push(conn);
    }

    /// Drains outputs and writes every connection with something to write, feeding back
    /// `Writable` and `Closed`, until nothing more happens.
    pub(crate) fn flush(&mut self, host: &mut Host) {
        loop {
            self.drain(host);
            if self.dirty.is_empty() {
                return;
            }
            let mut dirty = std::mem::take(&mut self.dirty);
            dirty.sort_unstable();
            dirty.dedup();
            for conn in dirty.drain(..) {
                self.write(host, conn);
            }
            if self.dirty.is_empty() {
                self.dirty = dirty;
            }
        }
    }

    fn write(&mut self, host: &mut Host, conn: ConnId) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        let closing = link.closing_by.is_some();
        let (true, Some(socket)) = (link.open, link.socket.as_mut()) else {
            // A dial the engine gave up on before it completed.
            if closing {
                self.forget(host, conn);
            }
            return;
        };
        if link.draining {
            return;
        }
        match link.outbox.write_to(socket) {
            Ok(Flushed::Partly) => {}
            Ok(_) if closing => {
                socket.shutdown_write();
                link.draining = true;
            }
            Ok(Flushed::AllOwed) => host.feed(Input::Writable { conn }),
            Ok(Flushed::All) => {}
            Err(e) => {
                tracing::debug!("write to {conn:?} failed: {e}");
                self.forget(host, conn);
            }
        }
    }

    /// Drops `conn` and tells the engine it is closed.
    fn forget(&mut self, host: &mut Host, conn: ConnId) {
        if self.links.remove(&conn).is_some() {
            host.feed(Input::Closed { conn });
        }
    }

    /// Reads what `conn` has, up to one turn's budget, into the engine.
    pub(crate) fn read(&mut self, host: &mut Host, conn: ConnId) -> ReadTurn {
        for _ in 0..READS_PER_TURN {
            let Some(link) = self.links.get_mut(&conn) else {
                return ReadTurn::Gone;
            };
            let (true, Some(socket)) = (link.open, link.socket.as_mut()) else {
                return ReadTurn::Drained;
            };
            match socket.try_read(&mut self.read_buf) {
                Ok(0) => {
                    self.forget(host, conn);
                    self.drain(host);
                    return ReadTurn::Gone;
                }
                Ok(n) if link.closing_by.is_none() => {
                    let bytes = Bytes::copy_from_slice(&self.read_buf[..n]);
                    host.feed(Input::Received { conn, bytes });
                    self.drain(host);
                }
                Ok(_) => {} // closing: the engine no longer wants its bytes
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadTurn::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!("read from {conn:?} failed: {e}");
                    self.forget(host, conn);
                    self.drain(host);
                    return ReadTurn::Gone;
                }
            }
        }
        ReadTurn::Budget
    }

    /// A connection the listener accepted.
    pub(crate) fn accepted(&mut self, host: &mut Host, conn: ConnId, socket: S, addr: String) {
        self.links.insert(
            conn,
            Link {
                socket: Some(socket),
                open: true,
                outbox: Outbox::default(),
                closing_by: None,
                draining: false,
            },
        );
        host.feed(Input::Accepted { conn, addr });
        self.drain(host);
    }

    /// A dial whose socket exists but is not connected yet.
    pub(crate) fn dial_started(&mut self, conn: ConnId, socket: S) {
        if let Some(link) = self.links.get_mut(&conn) {
            link.socket = Some(socket);
        }
    }

    /// A dial's outcome (drivers whose connect yields the socket); ignored if abandoned.
    pub(crate) fn dial_done(&mut self, host: &mut Host, conn: ConnId, result: io::Result<S>) {
        if !self.is_dialing(conn) {
            return;
        }
        match result {
            Ok(socket) => {
                if let Some(link) = self.links.get_mut(&conn) {
                    link.socket = Some(socket);
                    link.open = true;
                }
                host.feed(Input::Connected { conn });
            }
            Err(e) => {
                tracing::debug!("dial {conn:?} failed: {e}");
                self.links.remove(&conn);
                host.feed(Input::ConnectFailed { conn });
            }
        }
        self.drain(host);
    }

    /// A dial (started with [`Conns::dial_started`]) completed.
    pub(crate) fn dial_connected(&mut self, host: &mut Host, conn: ConnId) {
        if let Some(link) = self.links.get_mut(&conn) {
            if link.socket.is_some() && !link.open {
                link.open = true;
                host.feed(Input::Connected { conn });
                self.drain(host);
            }
        }
    }

    /// A dial (started with [`Conns::dial_started`]) failed.
    pub(crate) fn dial_failed(&mut self, host: &mut Host, conn: ConnId, error: &io::Error) {
        if self.is_dialing(conn) {
            tracing::debug!("dial {conn:?} failed: {error}");
            self.links.remove(&conn);
            host.feed(Input::ConnectFailed { conn });
            self.drain(host);
        }
    }

    /// Drops closing connections whose linger time is over.
    pub(crate) fn expire(&mut self, host: &mut Host) {
        let now = host.now();
        let due: Vec<ConnId> = self
            .links
            .iter()
            .filter(|(_, l)| l.closing_by.is_some_and(|by| by <= now))
            .map(|(id, _)| *id)
            .collect();
        for conn in due {
            self.forget(host, conn);
        }
        self.drain(host);
    }

    /// The earliest linger deadline.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.links.values().filter_map(|l| l.closing_by).min()
    }
}
