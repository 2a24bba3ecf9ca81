//! The connection table every driver keeps, whatever its I/O library: the output pump (after
//! every input, drain `poll_output` into outboxes, dials, closes, requests to the host and
//! events), writing with the `Writable` handshake, reading into `Received`, and closing with
//! `Closed`.
//!
//! One rule keeps the table and the engine's view the same: a link is only dropped (and the
//! engine told `Closed` or `ConnectFailed`) once every output already emitted has been
//! drained. So every `Transmit` or `Close` the pump meets names a connection the engine
//! announced (with `Connect`) or was told of (`Accepted`) and has not yet been told is gone,
//! and one naming an unknown connection is a driver bug that ends the run.

use std::collections::BTreeMap;
use std::io;

use bytes::Bytes;
use weft_engine::{ConnId, Duration, Input, Instant, Output};

use crate::host::{Host, RunError};
use crate::outbox::{Flushed, Outbox, TryWrite};

/// How long a closing connection may take to flush before it is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// Closing connections kept lingering at most; past it the one due first is dropped at once
/// (a flood of connections accepted and closed held a socket each for `LINGER`, and used up
/// the process's file descriptors).
pub(crate) const LINGERING_MAX: usize = 256;
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
    /// The engine handed it bytes to send: a close lingers for them (else it is at once).
    transmitted: bool,
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

    /// Drains the node's outputs after an input, carries out its requests to the host and
    /// feeds back the answers, until it has nothing more to say. An output this driver does
    /// not handle, or one naming a connection it does not know, ends the run (see
    /// [`Host::fail`]): the rest is left undrained.
    pub(crate) fn drain(&mut self, host: &mut Host) {
        if host.has_failed() {
            return;
        }
        loop {
            while let Some(output) = host.node.poll_output() {
                if let Err(e) = self.carry_out(host, output) {
                    return host.fail(e);
                }
            }
            if host.has_failed() || !host.answer_requests() {
                return;
            }
        }
    }

    /// Carries out one output.
    fn carry_out(&mut self, host: &mut Host, output: Output) -> Result<(), RunError> {
        match output {
            // Not a race: the engine emits bytes only for a connection it announced or was
            // told of, and keeps it until told `Closed`; the driver drops a link only after
            // draining what was emitted before (see `forget`). So an unknown id here means
            // the table and the engine disagree: a driver bug.
            Output::Transmit { conn, bytes } => match self.links.get_mut(&conn) {
                Some(link) => {
                    link.outbox.push(&bytes);
                    link.transmitted = true;
                    self.dirty.push(conn);
                }
                None => {
                    return Err(RunError::DriverBug(format!(
                        "the engine transmits on {conn:?}, which the driver does not know"
                    )))
                }
            },
            Output::Connect { conn, addr } => {
                let link = Link {
                    socket: None,
                    open: false,
                    outbox: Outbox::default(),
                    closing_by: None,
                    draining: false,
                    transmitted: false,
                };
                if self.links.insert(conn, link).is_some() {
                    return Err(RunError::DriverBug(format!(
                        "the engine dials {conn:?}, which the driver still holds"
                    )));
                }
                self.dials.push((conn, addr));
            }
            // As for `Transmit`: the engine closes only a connection it still has.
            Output::Close { conn, reason } => {
                tracing::debug!("closing {conn:?}: {reason:?}");
                let Some(link) = self.links.get_mut(&conn) else {
                    return Err(RunError::DriverBug(format!(
                        "the engine closes {conn:?}, which the driver does not know"
                    )));
                };
                // Nothing to deliver (a refusal under Noise closes without a byte): no
                // linger, dropped at the next expiry.
                let linger = if link.transmitted {
                    LINGER
                } else {
                    Duration(0)
                };
                link.closing_by.get_or_insert(host.now() + linger);
                self.dirty.push(conn);
                self.bound_lingering(host.now());
            }
            Output::Request { id, request } => host.on_host_request(id, request),
            Output::Event(event) => host.on_event(event),
            other => return Err(RunError::unhandled(&other)),
        }
        Ok(())
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

    /// Drops `conn` and tells the engine it is closed. What the engine emitted before it
    /// hears of the close may still name `conn`: that is drained first, while the link is
    /// known (its bytes are dropped with it).
    fn forget(&mut self, host: &mut Host, conn: ConnId) {
        self.drain(host);
        if let Some(link) = self.links.remove(&conn) {
            // A dial that never connected (the engine closed it first) is answered as one
            // (SPEC.md §8.1): `Closed` counted a failed dial against the peer's address.
            host.feed(if link.open {
                Input::Closed { conn }
            } else {
                Input::ConnectFailed { conn }
            });
            self.drain(host);
        }
    }

    /// Drops a dial that did not open and tells the engine, draining first as
    /// [`Conns::forget`] does.
    fn dial_gone(&mut self, host: &mut Host, conn: ConnId, error: &io::Error) {
        self.drain(host);
        if self.links.remove(&conn).is_some() {
            tracing::debug!("dial {conn:?} failed: {error}");
            host.feed(Input::ConnectFailed { conn });
            self.drain(host);
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
                transmitted: false,
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
                self.drain(host);
            }
            Err(e) => self.dial_gone(host, conn, &e),
        }
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
            self.dial_gone(host, conn, error);
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

    /// Past [`LINGERING_MAX`] closing connections, one is made due now: the first due among
    /// those with nothing left to write (flushed, waiting for the peer's close), else the
    /// first due.
    fn bound_lingering(&mut self, now: Instant) {
        let closing: Vec<(bool, Instant, ConnId)> = self
            .links
            .iter()
            .filter_map(|(id, l)| {
                let flushed = l.draining || l.outbox.unwritten() == 0;
                l.closing_by
                    .filter(|by| *by > now)
                    .map(|by| (!flushed, by, *id))
            })
            .collect();
        if closing.len() > LINGERING_MAX {
            if let Some((_, _, first)) = closing.into_iter().min() {
                if let Some(link) = self.links.get_mut(&first) {
                    link.closing_by = Some(now);
                }
            }
        }
    }

    /// The earliest linger deadline.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.links.values().filter_map(|l| l.closing_by).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_engine::{Command, Config, TableCommand};

    /// A socket that is never used.
    struct NoSocket;

    impl TryWrite for NoSocket {
        fn try_write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    impl Socket for NoSocket {
        fn try_read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }

        fn shutdown_write(&self) {}
    }

    fn host(state: Option<&std::path::Path>) -> Host {
        let store = state.map(|s| crate::storage::Store::open_or_create(s).unwrap());
        Host::new(Config::from_seed("conns", 1), "test", store, None)
    }

    fn driver_bug(exit: Option<Result<crate::Exit, RunError>>) -> String {
        match exit {
            Some(Err(RunError::DriverBug(why))) => why,
            other => panic!("expected a driver bug, got {other:?}"),
        }
    }

    #[test]
    fn bytes_or_a_close_for_an_unknown_connection_end_the_run() {
        let mut conns = Conns::<NoSocket>::new();
        let mut host = host(None);
        let transmit = Output::Transmit {
            conn: ConnId(4),
            bytes: Bytes::from_static(b"x"),
        };
        let e = conns.carry_out(&mut host, transmit).unwrap_err();
        host.fail(e);
        assert!(driver_bug(host.exit_due(0)).contains("ConnId(4)"));
        let close = Output::Close {
            conn: ConnId(6),
            reason: weft_engine::CloseReason::Requested,
        };
        assert!(matches!(
            conns.carry_out(&mut host, close),
            Err(RunError::DriverBug(_))
        ));
    }

    #[test]
    fn an_input_the_engine_calls_a_misuse_ends_the_run() {
        let mut host = host(None);
        host.feed(Input::Writable { conn: ConnId(9) });
        assert!(host.has_failed());
        assert!(driver_bug(host.exit_due(0)).contains("unknown connection"));
        // Reported once; the run is over.
        assert!(host.exit_due(0).is_none());
    }

    #[test]
    fn an_unhandled_output_is_named_by_its_variant_in_one_line() {
        let output = Output::Connect {
            conn: ConnId(2),
            addr: "x\n".repeat(1000),
        };
        let text = RunError::unhandled(&output).to_string();
        assert!(text.contains("(Output::Connect)"), "{text}");
        assert!(!text.contains('\n') && text.len() < 200, "{text}");
    }

    #[test]
    fn the_engines_requests_are_answered_during_the_drain() {
        let folder = tempfile::tempdir().unwrap();
        let set = Command::Table(TableCommand::Set {
            key: b"colour".to_vec(),
            value: b"blue".to_vec(),
            lease: None,
        });
        // Without a state folder every request fails, and the node carries on.
        let mut conns = Conns::<NoSocket>::new();
        let mut host = host(None);
        host.on_timer();
        conns.drain(&mut host);
        host.input(Input::Command(set.clone())).unwrap();
        host.begin_stop(crate::Exit::Requested);
        conns.drain(&mut host);
        assert!(matches!(host.exit_due(0), Some(Ok(crate::Exit::Requested))));
        // With one, the table stored at shutdown is loaded by the next run.
        let mut host = self::host(Some(folder.path()));
        host.on_timer();
        conns.drain(&mut host);
        host.input(Input::Command(set)).unwrap();
        host.begin_stop(crate::Exit::Requested);
        conns.drain(&mut host);
        assert!(matches!(host.exit_due(0), Some(Ok(crate::Exit::Requested))));
        drop(host);
        let store = crate::storage::Store::open_existing(folder.path()).unwrap();
        assert!(store.unwrap().load("table").unwrap().is_some());
        let mut host = self::host(Some(folder.path()));
        host.on_timer();
        conns.drain(&mut host);
        assert!(host.exit_due(0).is_none());
        assert_eq!(host.node.table().get(b"colour"), Some(&b"blue"[..]));
    }

    /// A close with nothing to deliver does not linger, and no more than `LINGERING_MAX`
    /// closing connections linger at once: a flood of connections accepted and closed held
    /// a socket each for `LINGER`, and could use up the file descriptors.
    #[test]
    fn closing_connections_linger_only_with_bytes_and_boundedly() {
        let mut conns = Conns::<NoSocket>::new();
        let mut host = host(None);
        host.on_timer();
        conns.drain(&mut host);
        let close = |conn| Output::Close {
            conn,
            reason: weft_engine::CloseReason::Requested,
        };
        let quiet = ConnId::inbound(1);
        conns.accepted(&mut host, quiet, NoSocket, "10.0.0.1:1".into());
        conns.carry_out(&mut host, close(quiet)).unwrap();
        let now = host.now();
        assert!(
            conns.links[&quiet].closing_by.is_some_and(|by| by <= now),
            "nothing to deliver: dropped at the next expiry"
        );
        for n in 2..(LINGERING_MAX as u64 + 50) {
            let conn = ConnId::inbound(n);
            conns.accepted(
                &mut host,
                conn,
                NoSocket,
                format!("10.0.{}.{}:1", n / 250, n % 250),
            );
            let bytes = Bytes::from_static(b"bye");
            conns
                .carry_out(&mut host, Output::Transmit { conn, bytes })
                .unwrap();
            conns.carry_out(&mut host, close(conn)).unwrap();
        }
        let now = host.now();
        let lingering = conns
            .links
            .values()
            .filter(|l| l.closing_by.is_some_and(|by| by > now))
            .count();
        // Every one that had bytes to deliver lingers, up to the bound and no further.
        assert_eq!(lingering, LINGERING_MAX, "{lingering}");
    }
}
