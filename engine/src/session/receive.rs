//! Receiving: bytes from the driver decoded into frames, each admitted to a protocol or the
//! session itself (SPEC.md §6.13, §8.9), PING and BYE answered.

use std::sync::Arc;

use bytes::Bytes;
use weft_protocol::{ByeReason, Code, Frame, Message, Pong};

use super::conn::{Conn, ConnState, Peer};
use super::send::flush_conn;
use super::Session;
use crate::connection::{CloseReason, ConnId};
use crate::io::{Event, Misuse, Output};
use crate::time::Instant;

impl Session {
    /// Takes bytes that arrived on `conn`: the first frame among them for a protocol, if any;
    /// [`next_frame`](Self::next_frame) gives the rest.
    pub(crate) fn received(
        &mut self,
        now: Instant,
        conn: ConnId,
        bytes: Bytes,
    ) -> Result<Option<Incoming>, Misuse> {
        let incoming = self.received_frames(now, conn, bytes)?;
        if incoming.is_none() {
            self.check_handshake_buffer(conn);
            self.check_frame_buffer(conn);
        }
        Ok(incoming)
    }

    /// Bounds the bytes held, all connections together, of frames not yet whole (SPEC.md
    /// §8.4), once `conn`'s input is taken and it still holds some: while the total is over
    /// `Limits::frames_buffered_bytes_max`, the connection holding the most is closed (`conn`
    /// among those holding as much). Each connection holds at most one frame's worth, but
    /// every connection the node allows, each sent a frame short of its last byte, held
    /// gigabytes.
    pub(super) fn check_frame_buffer(&mut self, conn: ConnId) {
        if !self.conns.get(&conn).is_some_and(Conn::has_buffered) {
            return;
        }
        loop {
            // A closing connection holds nothing (`close` freed it).
            let open = self.conns.iter().filter(|(_, c)| !c.is_closing());
            let held: usize = open.clone().map(|(_, c)| c.buffered_memory()).sum();
            if held <= self.limits.frames_buffered_bytes_max {
                let peak = &mut self.metrics.frames_buffered_bytes_peak;
                *peak = (*peak).max(held as u64);
                return;
            }
            let most = open
                .max_by_key(|(id, c)| (c.buffered_memory(), **id == conn, **id))
                .map(|(id, _)| *id);
            let Some(victim) = most else {
                return;
            };
            self.metrics.frame_buffer_closes += 1;
            let bye = Some(ByeReason::TooManyConnections);
            self.close(victim, CloseReason::FrameBufferFull, bye);
            if victim == conn {
                return;
            }
        }
    }

    /// Bounds the bytes held for connections still in their handshake (SPEC.md §8.4): while
    /// the total is over `Limits::handshake_buffered_bytes_max`, the connection holding the
    /// most is closed (`conn`, whose bytes just came, among those holding as much): a host
    /// that fills the bound with unfinished messages loses its own connections, not the
    /// others' handshakes.
    pub(super) fn check_handshake_buffer(&mut self, conn: ConnId) {
        if !self.conns.get(&conn).is_some_and(Conn::is_unauthenticated) {
            return;
        }
        loop {
            let unauthenticated = self.conns.iter().filter(|(_, c)| c.is_unauthenticated());
            let held: usize = unauthenticated.clone().map(|(_, c)| c.buffered_len()).sum();
            if held <= self.limits.handshake_buffered_bytes_max {
                let peak = &mut self.metrics.handshake_buffered_bytes_peak;
                *peak = (*peak).max(held as u64);
                return;
            }
            let most = unauthenticated
                .max_by_key(|(id, c)| (c.buffered_len(), **id == conn, **id))
                .map(|(id, _)| *id);
            let Some(victim) = most else {
                return;
            };
            self.metrics.handshake_buffer_closes += 1;
            let bye = Some(ByeReason::TooManyConnections);
            self.close(victim, CloseReason::HandshakeBufferFull, bye);
            if victim == conn {
                return;
            }
        }
    }

    /// [`received`](Self::received) before the handshake buffer's bound is checked.
    pub(super) fn received_frames(
        &mut self,
        now: Instant,
        conn: ConnId,
        bytes: Bytes,
    ) -> Result<Option<Incoming>, Misuse> {
        let c = self.conns.get_mut(&conn).ok_or(Misuse::UnknownConn(conn))?;
        match c.state {
            ConnState::Closing => return Ok(None),
            ConnState::Dialing => return Err(Misuse::NotDialing(conn)),
            _ => {}
        }
        self.metrics.bytes_received += bytes.len() as u64;
        c.push_bytes(now, bytes);
        if c.is_unauthenticated() {
            // The transport's handshake may have answered, or finished and freed the HELLO.
            let window = self.limits.transmit_window_bytes;
            let (metrics, outputs, notices) =
                (&mut self.metrics, &mut self.outputs, &mut self.notices);
            flush_conn(c, self.now, window, metrics, outputs, notices);
        }
        // The usual case, one whole frame for a protocol, takes one lookup of the connection.
        let frame = match c.next_frame(now, &mut self.metrics.traffic) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(None),
            Err(e) => {
                let bye = Some(ByeReason::ProtocolViolation);
                self.close(conn, e.into(), bye);
                return Ok(None);
            }
        };
        self.metrics.frames_received += 1;
        match admit(c, self.families, frame) {
            Admit::Protocol(incoming) => Ok(Some(incoming)),
            Admit::Session(frame, established) => {
                self.on_session_frame(now, conn, established, &frame);
                Ok(self.next_frame(now, conn))
            }
            Admit::Refused(what) => {
                let bye = Some(ByeReason::ProtocolViolation);
                self.close(conn, CloseReason::UnexpectedMessage(what), bye);
                Ok(None)
            }
        }
    }

    /// The next frame received on `conn` for a protocol, from an established peer. Session
    /// frames (the handshake, PING, PONG, BYE) are handled here on the way; a frame not
    /// allowed on the connection closes it.
    pub(crate) fn next_frame(&mut self, now: Instant, conn: ConnId) -> Option<Incoming> {
        loop {
            let c = self.conns.get_mut(&conn)?;
            if c.is_closing() {
                return None;
            }
            let frame = match c.next_frame(now, &mut self.metrics.traffic) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    self.check_frame_buffer(conn);
                    return None;
                }
                Err(e) => {
                    let bye = Some(ByeReason::ProtocolViolation);
                    self.close(conn, e.into(), bye);
                    return None;
                }
            };
            self.metrics.frames_received += 1;
            match admit(c, self.families, frame) {
                Admit::Protocol(incoming) => return Some(incoming),
                Admit::Session(frame, established) => {
                    self.on_session_frame(now, conn, established, &frame);
                }
                Admit::Refused(what) => {
                    let bye = Some(ByeReason::ProtocolViolation);
                    self.close(conn, CloseReason::UnexpectedMessage(what), bye);
                    return None;
                }
            }
        }
    }

    pub(super) fn on_session_frame(
        &mut self,
        now: Instant,
        conn: ConnId,
        established: bool,
        frame: &Frame,
    ) {
        let payload = match frame.payload() {
            Ok(p) => p,
            Err(e) => {
                let bye = Some(ByeReason::ProtocolViolation);
                return self.close(conn, CloseReason::Protocol(e), bye);
            }
        };
        let msg = match Message::decode(frame.code(), &payload) {
            Ok(m) => m,
            Err(e) => {
                let bye = Some(ByeReason::ProtocolViolation);
                return self.close(conn, CloseReason::Protocol(e), bye);
            }
        };
        match (msg, established) {
            (Message::Bye(reason), established) => {
                if reason == ByeReason::StaleIncarnation && !established {
                    let addr = self.conns.get(&conn).map(|c| c.addr.clone());
                    if let Some(addr) = addr {
                        self.outputs
                            .push_back(Output::Event(Event::RefusedAsStale { addr }));
                    }
                }
                self.close(conn, CloseReason::PeerSaidBye(reason), None)
            }
            (Message::Hello(hello), false) => self.on_hello(conn, hello),
            (Message::HelloAck(ack), false) => self.on_hello_ack(now, conn, &ack),
            (Message::Ping(p), true) => {
                self.send_session(conn, &Message::Pong(Pong { nonce: p.nonce }))
            }
            (Message::Pong(_), true) => {}
            (_, established) => {
                let what = if established {
                    "handshake message after the handshake"
                } else {
                    "message before the handshake finished"
                };
                let bye = Some(ByeReason::ProtocolViolation);
                self.close(conn, CloseReason::UnexpectedMessage(what), bye);
            }
        }
    }
}

/// A frame received for a protocol, with its peer, and whether more bytes are buffered.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) frame: Frame,
    pub(crate) peer: Arc<Peer>,
    pub(crate) more: bool,
}

/// Where a received frame goes.
pub(super) enum Admit {
    /// To a protocol.
    Protocol(Incoming),
    /// To the session itself (and whether the connection is established).
    Session(Frame, bool),
    /// Nowhere: it is not allowed on this connection.
    Refused(&'static str),
}

/// Sorts a frame received on `c` (SPEC.md §6.13, §8.9); `families` are the ones this node
/// runs.
pub(super) fn admit(c: &Conn, families: u32, frame: Frame) -> Admit {
    let code = frame.code();
    let peer = c.peer_shared();
    if is_session_code(code) {
        return Admit::Session(frame, peer.is_some());
    }
    let Some(peer) = peer else {
        return Admit::Refused("message before the handshake finished");
    };
    let family = code.family();
    if c.dedicated.is_some() && family != c.dedicated {
        return Admit::Refused("a message of another family on a dedicated connection");
    }
    if family.is_none_or(|f| families & f.bit() == 0) {
        return Admit::Refused("a message of a family this node does not run");
    }
    Admit::Protocol(Incoming {
        frame,
        peer: Arc::clone(peer),
        more: c.has_buffered(),
    })
}

/// Whether the session itself handles `code` (the handshake, liveness and goodbye).
pub(super) fn is_session_code(code: Code) -> bool {
    matches!(
        code,
        Code::HELLO | Code::HELLO_ACK | Code::PING | Code::PONG | Code::BYE
    )
}
