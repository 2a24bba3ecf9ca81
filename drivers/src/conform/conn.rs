//! One scripted connection to the peer under test: a TCP socket, the Noise layer (SPEC.md §21)
//! and a frame decoder (§2), read with deadlines. Nothing the peer sends can make it panic: bad
//! bytes are recorded ([`Conn::garbage`]) and end the reading.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_core::{OsRng, RngCore};
use weft_engine::noise::{NoiseKeys, NoiseLink, NoiseRole};
use weft_engine::protocol::{ByeReason, Code, Frame, FrameDecoder, Message, Ping};

/// How long one socket read waits before the deadline is looked at again.
const READ_SLICE: Duration = Duration::from_millis(10);

/// How long a write may block on a peer that does not read before the kit gives up on the
/// connection (it counts as closed).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`Conn::next`] found.
#[derive(Debug)]
pub enum Got {
    /// A whole frame from the peer.
    Frame(Frame),
    /// The peer's stream ended (end of stream, a reset, or bytes that do not decode).
    Closed,
    /// Nothing by the deadline.
    Timeout,
}

/// One connection to the peer, as either end of the Noise handshake.
pub struct Conn {
    socket: TcpStream,
    link: NoiseLink,
    decoder: FrameDecoder,
    inbox: VecDeque<Frame>,
    /// The peer's stream ended.
    closed: bool,
    /// Raw bytes received in all.
    pub raw_received: usize,
    /// Plaintext bytes (after Noise) received in all.
    pub plain_received: usize,
    /// The peer's bytes that did not decode: Noise or frame errors.
    pub garbage: Option<String>,
    /// Whether PINGs from the peer are answered as they are read (once linked).
    pub answer_pings: bool,
    /// Every frame received, in order, whoever took it from the inbox.
    pub log: Vec<Frame>,
}

impl Conn {
    /// Starts Noise as `role` over `socket` (an initiator's first message goes at once); the
    /// handshake is finished by [`Conn::finish_noise`].
    pub fn start(socket: TcpStream, keys: &NoiseKeys, role: NoiseRole) -> Conn {
        let _ = socket.set_read_timeout(Some(READ_SLICE));
        let _ = socket.set_write_timeout(Some(WRITE_TIMEOUT));
        let _ = socket.set_nodelay(true);
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let mut conn = Conn {
            socket,
            link: NoiseLink::new(keys, role, seed),
            decoder: FrameDecoder::new(),
            inbox: VecDeque::new(),
            closed: false,
            raw_received: 0,
            plain_received: 0,
            garbage: None,
            answer_pings: false,
            log: Vec::new(),
        };
        conn.flush_noise();
        conn
    }

    /// Dials `addr` and starts Noise as the initiator.
    pub fn dial(addr: SocketAddr, keys: &NoiseKeys, wait: Duration) -> Result<Conn, String> {
        let socket = TcpStream::connect_timeout(&addr, wait)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        Ok(Conn::start(socket, keys, NoiseRole::Initiator))
    }

    /// Runs the Noise handshake to its end: `Err` with what went wrong.
    pub fn finish_noise(&mut self, wait: Duration) -> Result<(), String> {
        let deadline = Instant::now() + wait;
        while !self.link.is_established() {
            if let Some(e) = self.link.error() {
                return Err(format!("the Noise handshake failed: {e}"));
            }
            if self.closed {
                return Err("the peer closed the connection in the Noise handshake".into());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the Noise handshake did not finish within {}",
                    span(wait)
                ));
            }
            self.fill();
        }
        Ok(())
    }

    /// Whether the Noise handshake is done.
    pub fn noise_established(&self) -> bool {
        self.link.is_established()
    }

    /// The identity key the peer's Noise handshake bound, once it has.
    pub fn peer_identity(&self) -> Option<weft_engine::protocol::PublicKey> {
        self.link.peer_identity()
    }

    /// Whether the peer's stream has ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn flush_noise(&mut self) {
        while let Some(message) = self.link.poll_transmit() {
            if self.socket.write_all(&message).is_err() {
                self.closed = true;
            }
        }
    }

    /// One read of at most [`READ_SLICE`]: bytes go through Noise into the frame decoder.
    fn fill(&mut self) {
        if self.closed {
            std::thread::sleep(READ_SLICE);
            return;
        }
        let mut buf = [0u8; 64 * 1024];
        match self.socket.read(&mut buf) {
            Ok(0) => self.closed = true,
            Ok(n) => {
                self.raw_received += n;
                self.link.push(&buf[..n]);
                self.flush_noise();
                if let Some(e) = self.link.error() {
                    self.garbage = Some(format!("its Noise messages do not verify: {e}"));
                    self.closed = true;
                }
                while let Some(plain) = self.link.poll_plaintext() {
                    self.plain_received += plain.len();
                    self.decoder.push(plain);
                }
                self.decode();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => self.closed = true,
        }
    }

    fn decode(&mut self) {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.log.push(frame.clone());
                    if self.answer_pings && frame.code() == Code::PING {
                        let ping = with_msg(&frame, |m| match m {
                            Message::Ping(p) => Some(p.nonce),
                            _ => None,
                        });
                        if let Some(Some(nonce)) = ping {
                            let pong = Message::Pong(weft_engine::protocol::Pong { nonce });
                            self.send(&pong.to_frame(false).into_bytes());
                            continue;
                        }
                    }
                    self.inbox.push_back(frame);
                }
                Ok(None) => return,
                Err(e) => {
                    if self.garbage.is_none() {
                        self.garbage = Some(format!("its frames do not decode: {e}"));
                    }
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// Writes bytes as they are, under Noise (to tamper with the Noise layer itself).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        if self.socket.write_all(bytes).is_err() {
            self.closed = true;
        }
    }

    /// Seals `plain` (frames, or any bytes) into transport messages and writes them.
    pub fn send(&mut self, plain: &[u8]) {
        let sealed = self.link.seal(plain);
        self.write_raw(&sealed);
    }

    /// Seals `plain` in pieces of `piece` bytes, each its own transport message.
    pub fn send_split(&mut self, plain: &[u8], piece: usize) {
        for chunk in plain.chunks(piece.max(1)) {
            self.send(chunk);
        }
    }

    /// Sends `message` as one frame (compressed when `compress` and that makes it smaller).
    pub fn send_msg(&mut self, message: &Message, compress: bool) {
        self.send(&message.to_frame(compress).into_bytes());
    }

    /// A transport message sealed but not sent: the caller changes it first.
    pub fn seal(&mut self, plain: &[u8]) -> Bytes {
        self.link.seal(plain)
    }

    /// The next frame by `deadline`, or the end of the stream.
    pub fn next(&mut self, deadline: Instant) -> Got {
        loop {
            if let Some(frame) = self.inbox.pop_front() {
                return Got::Frame(frame);
            }
            if self.closed {
                return Got::Closed;
            }
            if Instant::now() >= deadline {
                return Got::Timeout;
            }
            self.fill();
        }
    }

    /// The next frame within `wait` whose code is `code`, other frames dropped.
    pub fn next_of(&mut self, code: Code, wait: Duration) -> Result<Frame, String> {
        let deadline = Instant::now() + wait;
        loop {
            match self.next(deadline) {
                Got::Frame(f) if f.code() == code => return Ok(f),
                Got::Frame(_) => {}
                Got::Closed => {
                    return Err(format!(
                        "the peer closed the connection before sending {}{}",
                        code.name(),
                        self.why_closed()
                    ))
                }
                Got::Timeout => {
                    return Err(format!("no {} within {}", code.name(), span(wait)));
                }
            }
        }
    }

    /// Every frame that arrives within `wait` (the connection may close meanwhile).
    pub fn collect(&mut self, wait: Duration) -> Vec<Frame> {
        let deadline = Instant::now() + wait;
        let mut frames = Vec::new();
        while let Got::Frame(f) = self.next(deadline) {
            frames.push(f);
        }
        frames
    }

    /// The frames that arrive until `quiet` passes with none, or `wait` in all.
    pub fn collect_until_quiet(&mut self, wait: Duration, quiet: Duration) -> Vec<Frame> {
        let end = Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let deadline = end.min(Instant::now() + quiet);
            match self.next(deadline) {
                Got::Frame(f) => frames.push(f),
                _ => return frames,
            }
        }
    }

    /// A note on why the stream ended, for failure reasons: `" (its Noise messages ...)"`.
    fn why_closed(&self) -> String {
        match &self.garbage {
            Some(g) => format!(" ({g})"),
            None => String::new(),
        }
    }

    /// Reads until the peer closes, within `wait`: the frames it sent meanwhile.
    pub fn until_closed(&mut self, wait: Duration) -> Result<Vec<Frame>, Vec<Frame>> {
        let deadline = Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            match self.next(deadline) {
                Got::Frame(f) => frames.push(f),
                Got::Closed => return Ok(frames),
                Got::Timeout => return Err(frames),
            }
        }
    }

    /// Checks that the peer sends BYE(`reason`), uncompressed, as its last frame and closes
    /// within `wait` (SPEC.md §8.5).
    pub fn expect_bye(&mut self, reason: ByeReason, wait: Duration) -> Result<(), String> {
        let frames = match self.until_closed(wait) {
            Ok(frames) => frames,
            Err(frames) => {
                let byes = byes(&frames);
                return Err(match byes.last() {
                    Some(r) => format!(
                        "BYE({r:?}) was sent but the connection was not closed within {}",
                        span(wait)
                    ),
                    None => format!(
                        "not answered by BYE({reason:?}) and a close within {}",
                        span(wait)
                    ),
                });
            }
        };
        let Some(last) = frames.last() else {
            return Err(format!(
                "closed without BYE({reason:?}){}",
                self.why_closed()
            ));
        };
        match bye_reason(last) {
            Some(r) if r == reason => {
                if last.flags().compressed() {
                    return Err(
                        "the BYE was compressed (§3: BYE is always sent uncompressed)".into(),
                    );
                }
                Ok(())
            }
            Some(r) => Err(format!("BYE({r:?}) instead of BYE({reason:?})")),
            None => Err(format!(
                "closed after {} without BYE({reason:?})",
                last.code().name()
            )),
        }
    }

    /// Checks that the peer closes within `wait` and sends no BYE (nor any frame but those
    /// `allowed` lets through) before it.
    pub fn expect_close_without_bye(&mut self, wait: Duration) -> Result<(), String> {
        match self.until_closed(wait) {
            Ok(frames) => match byes(&frames).last() {
                Some(r) => Err(format!("sent BYE({r:?}) where nothing is due")),
                None => Ok(()),
            },
            Err(_) => Err(format!(
                "the connection was not closed within {}",
                span(wait)
            )),
        }
    }

    /// Checks the link is still up: a PING with a fresh nonce is answered by a PONG carrying
    /// it within `wait` (SPEC.md §9), other frames skipped. A PONG after earlier frames also
    /// proves they were taken without a close.
    pub fn expect_alive(&mut self, wait: Duration) -> Result<(), String> {
        let nonce = OsRng.next_u64();
        self.send_msg(&Message::Ping(Ping { nonce }), false);
        let deadline = Instant::now() + wait;
        loop {
            match self.next(deadline) {
                Got::Frame(f) => {
                    let pong = with_msg(&f, |m| matches!(m, Message::Pong(p) if p.nonce == nonce));
                    if pong == Some(true) {
                        return Ok(());
                    }
                    if let Some(r) = bye_reason(&f) {
                        return Err(format!("the peer closed the link with BYE({r:?})"));
                    }
                }
                Got::Closed => {
                    return Err(format!("the peer closed the link{}", self.why_closed()))
                }
                Got::Timeout => {
                    return Err(format!(
                        "a PING was not answered by its PONG within {}",
                        span(wait)
                    ))
                }
            }
        }
    }

    /// The frames of `code` received so far.
    pub fn logged(&self, code: Code) -> Vec<Frame> {
        self.log
            .iter()
            .filter(|f| f.code() == code)
            .cloned()
            .collect()
    }

    /// Reads what arrives within `wait` into the log (and the inbox, left untouched).
    pub fn drain(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline && !self.closed {
            self.fill();
        }
    }

    /// Ends the connection from this side.
    pub fn shutdown(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
        self.closed = true;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// `f` of the message `frame` carries, if it inflates and decodes.
pub fn with_msg<R>(frame: &Frame, f: impl FnOnce(Message<'_>) -> R) -> Option<R> {
    let payload = frame.payload().ok()?;
    let message = Message::decode(frame.code(), &payload).ok()?;
    Some(f(message))
}

/// The reason of a BYE frame.
pub fn bye_reason(frame: &Frame) -> Option<ByeReason> {
    with_msg(frame, |m| match m {
        Message::Bye(r) => Some(r),
        _ => None,
    })
    .flatten()
}

/// The reasons of the BYEs among `frames`.
fn byes(frames: &[Frame]) -> Vec<ByeReason> {
    frames.iter().filter_map(bye_reason).collect()
}

/// A duration as a person says it: `2 s`, `500 ms`.
pub fn span(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
