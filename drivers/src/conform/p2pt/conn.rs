//! One scripted connection to a p2p.today peer: a TCP socket and a frame reader, read with
//! deadlines. Nothing the peer sends can make it panic: bytes that are no frame are recorded
//! ([`Conn::garbage`]) and end the reading.
//!
//! The kit reads every frame with every method it has (a sender may pick any the kit
//! advertised, and the kit reports which one it found) and keeps frames whose array is not
//! a `Message` (py2p's answer to `renegotiate/resend`) as their elements' bytes.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use weft_engine::protocol::p2pt::compress::decompress;
use weft_engine::protocol::p2pt::{
    decode_frame, frame_len, MainFlag, Message, Method, P2ptError, SubFlag, P2PT_BODY_BYTES_MAX,
    P2PT_ID_BYTES, P2PT_LENGTH_BYTES,
};

use super::wire::{self, split_array};

/// How long one socket read waits before the deadline is looked at again.
const READ_SLICE: Duration = Duration::from_millis(10);

/// How long a write may block on a peer that does not read before the connection counts as
/// closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Cuts whole frames (prefix included) from a byte stream by their length prefix.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `None` while it is not all there; a prefix over the body limit
    /// is an error at once.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, P2ptError> {
        let Some(total) = frame_len(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }

    /// Bytes held that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// One frame from the peer.
#[derive(Debug, Clone)]
pub struct Got {
    /// The method its body was compressed with, or `None` if raw.
    pub compression: Option<Method>,
    /// The msgpack bytes (after the id, which matched).
    pub msgpack: Vec<u8>,
    /// The array as a `Message`, if it is one (py2p's resends need not be).
    pub message: Option<Message>,
}

impl Got {
    /// The array's elements as bytes (`None` only if the msgpack is not one array, which
    /// [`open`] does not let through).
    pub fn elements(&self) -> Option<Vec<&[u8]>> {
        split_array(&self.msgpack)
    }

    /// Whether it is a `Message` with these flags.
    pub fn is(&self, main: MainFlag, sub: SubFlag) -> bool {
        self.message
            .as_ref()
            .is_some_and(|m| m.main_flag == main && m.sub_flag == sub)
    }

    /// Its main flag, the first element, if it is a small integer.
    pub fn main_flag(&self) -> Option<u8> {
        match self.elements()?.first()? {
            [b @ 0x00..=0x7f] => Some(*b),
            [0xcc, b] => Some(*b),
            _ => None,
        }
    }

    /// A short description for reasons: `whisper/peers (zlib)`.
    pub fn describe(&self) -> String {
        let how = match self.compression {
            Some(m) => format!("{m:?}").to_lowercase(),
            None => "raw".into(),
        };
        match &self.message {
            Some(m) => format!("{} ({how})", flags_text(m.main_flag, m.sub_flag)),
            None => format!(
                "an array of {} elements that is no py2p message ({how})",
                self.elements().map_or(0, |e| e.len())
            ),
        }
    }
}

/// `whisper/peers`, or the numbers of flags py2p does not name.
pub fn flags_text(main: MainFlag, sub: SubFlag) -> String {
    let main = main
        .name()
        .map_or_else(|| format!("0x{:02x}", main.0), str::to_owned);
    let sub = sub
        .name()
        .map_or_else(|| format!("0x{:02x}", sub.0), str::to_owned);
    format!("{main}/{sub}")
}

/// Opens one whole frame as a receiver that knows every method: the first that inflates the
/// body wins, else the body is raw (as py2p); the id must match; the array is a `Message` if
/// it is one, and must at least be one msgpack array.
pub fn open(wire: &[u8]) -> Result<Got, P2ptError> {
    match decode_frame(wire, &Method::PREFERENCE) {
        Ok(d) => Ok(Got {
            compression: d.compression,
            msgpack: d.msgpack,
            message: Some(d.message),
        }),
        // `decode_frame` checks the id before it reads the array: the id matched.
        Err(P2ptError::Malformed { .. }) | Err(P2ptError::Msgpack(_)) => {
            let raw = wire.get(P2PT_LENGTH_BYTES..).unwrap_or_default();
            let mut compression = None;
            let mut body = raw.to_vec();
            for m in Method::PREFERENCE {
                if let Ok(inflated) = decompress(m, raw, P2PT_BODY_BYTES_MAX) {
                    compression = Some(m.detected(raw));
                    body = inflated;
                    break;
                }
            }
            let msgpack = body.get(P2PT_ID_BYTES..).unwrap_or_default().to_vec();
            if split_array(&msgpack).is_none() {
                return Err(P2ptError::Msgpack("not one msgpack array"));
            }
            Ok(Got {
                compression,
                msgpack,
                message: None,
            })
        }
        Err(e) => Err(e),
    }
}

/// What [`Conn::next`] found.
#[derive(Debug)]
pub enum Next {
    /// A whole frame.
    Frame(Got),
    /// The peer's stream ended (end of stream, a reset, or bytes that are no frame).
    Closed,
    /// Nothing by the deadline.
    Timeout,
}

/// Somewhere to read bytes from with a short timeout: a socket, or a script in tests.
pub trait Source {
    /// Reads some bytes, waiting at most about `READ_SLICE`; `Ok(0)` is the end of the
    /// stream, `WouldBlock`/`TimedOut` nothing yet.
    fn read_slice(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl Source for TcpStream {
    fn read_slice(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.read(buf)
    }
}

/// Reads from `source` into `framer` until a whole frame is there, the stream ends or
/// `deadline` passes. `Err` carries why the bytes are no frame.
pub fn read_frame<S: Source>(
    source: &mut S,
    framer: &mut Framer,
    deadline: Instant,
) -> Result<Next, String> {
    let mut buf = [0u8; 64 * 1024];
    loop {
        // First, so that a peer sending without pause cannot hold the reader past it.
        if Instant::now() >= deadline {
            return Ok(Next::Timeout);
        }
        match framer.next_frame() {
            Ok(Some(wire)) => {
                return open(&wire)
                    .map(Next::Frame)
                    .map_err(|e| format!("its frame does not decode: {e}"));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("its frame does not decode: {e}")),
        }
        match source.read_slice(&mut buf) {
            Ok(0) => return Ok(Next::Closed),
            Ok(n) => framer.push(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Ok(Next::Closed),
        }
    }
}

/// One connection to the peer.
pub struct Conn {
    socket: TcpStream,
    framer: Framer,
    closed: bool,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The kit's address on it (what the kit's handshake advertises).
    pub local: SocketAddr,
    /// The peer's bytes that were no frame.
    pub garbage: Option<String>,
    /// The method the kit compresses with on this link, or `None` for raw.
    pub send_with: Option<Method>,
    /// Every frame received, in order.
    pub log: Vec<Got>,
    /// The last `whisper` or `broadcast` frame received: what py2p resends on
    /// `renegotiate/resend`.
    pub last_payload: Option<Got>,
}

impl Conn {
    /// Dials `addr`.
    pub fn dial(addr: SocketAddr, wait: Duration) -> Result<Conn, String> {
        let socket = TcpStream::connect_timeout(&addr, wait)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = socket.set_read_timeout(Some(READ_SLICE));
        let _ = socket.set_write_timeout(Some(WRITE_TIMEOUT));
        let _ = socket.set_nodelay(true);
        let local = socket
            .local_addr()
            .map_err(|e| format!("the connection to {addr} has no local address: {e}"))?;
        Ok(Conn {
            socket,
            framer: Framer::default(),
            closed: false,
            peer: addr,
            local,
            garbage: None,
            send_with: None,
            log: Vec::new(),
            last_payload: None,
        })
    }

    /// Whether the peer's stream has ended.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Writes bytes as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        if self.socket.write_all(bytes).is_err() {
            self.closed = true;
        }
    }

    /// Sends `m` with the link's method.
    pub fn send(&mut self, m: &Message) {
        let wire = wire::frame(m, self.send_with);
        self.write_raw(&wire);
    }

    /// Sends `m` raw, whatever the link's method.
    pub fn send_raw(&mut self, m: &Message) {
        let wire = wire::frame(m, None);
        self.write_raw(&wire);
    }

    /// The next frame by `deadline`.
    pub fn next(&mut self, deadline: Instant) -> Next {
        if self.closed {
            return Next::Closed;
        }
        match read_frame(&mut self.socket, &mut self.framer, deadline) {
            Ok(Next::Frame(got)) => {
                if matches!(got.main_flag(), Some(0x00) | Some(0x02)) {
                    self.last_payload = Some(got.clone());
                }
                self.log.push(got.clone());
                Next::Frame(got)
            }
            Ok(Next::Closed) => {
                self.closed = true;
                Next::Closed
            }
            Ok(Next::Timeout) => Next::Timeout,
            Err(e) => {
                self.garbage = Some(e);
                self.closed = true;
                Next::Closed
            }
        }
    }

    /// Reads until a frame for which `want` holds, skipping the others, within `wait`:
    /// `Err` says what came instead (`what` names what was awaited).
    pub fn expect(
        &mut self,
        wait: Duration,
        what: &str,
        want: impl Fn(&Got) -> bool,
    ) -> Result<Got, String> {
        let deadline = Instant::now() + wait;
        loop {
            match self.next(deadline) {
                Next::Frame(got) if want(&got) => return Ok(got),
                Next::Frame(_) => {}
                Next::Closed => return Err(self.closed_reason(what)),
                Next::Timeout => {
                    return Err(format!("{what} did not come within {}", span(wait)));
                }
            }
        }
    }

    /// Reads until the peer closes the stream, within `wait`: `Err` if it does not.
    pub fn expect_closed(&mut self, wait: Duration, after: &str) -> Result<(), String> {
        let deadline = Instant::now() + wait;
        loop {
            match self.next(deadline) {
                Next::Frame(_) => {}
                Next::Closed => return Ok(()),
                Next::Timeout => {
                    return Err(format!(
                        "the link is still open {} after {after}",
                        span(wait)
                    ));
                }
            }
        }
    }

    /// Why the stream ended while the kit waited for `what`.
    pub fn closed_reason(&self, what: &str) -> String {
        match &self.garbage {
            Some(g) => format!("{g} (while the kit waited for {what})"),
            None => format!("the peer closed the link while the kit waited for {what}"),
        }
    }

    /// Closes the kit's side.
    pub fn shutdown(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
        self.closed = true;
    }
}

/// `2 s`, `500 ms`.
pub fn span(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted stream: each entry is what one read returns (`None`: nothing this slice).
    struct Script(VecDeque<Option<Vec<u8>>>);

    impl Source for Script {
        fn read_slice(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.pop_front() {
                Some(Some(bytes)) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
                Some(None) => {
                    std::thread::sleep(Duration::from_millis(2));
                    Err(ErrorKind::WouldBlock.into())
                }
                None => Ok(0),
            }
        }
    }

    fn script(parts: Vec<Option<Vec<u8>>>) -> Script {
        Script(parts.into())
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn a_frame_in_pieces_and_two_in_one_read() {
        let a = wire::frame(&wire::broadcast(b"a", 1, "x", b"1"), Some(Method::Gzip));
        let b = wire::frame(&wire::resend(b"b"), None);
        let mut both = a[3..].to_vec();
        both.extend_from_slice(&b);
        let mut s = script(vec![Some(a[..3].to_vec()), None, Some(both)]);
        let mut framer = Framer::default();
        let Ok(Next::Frame(first)) = read_frame(&mut s, &mut framer, soon()) else {
            panic!("a frame");
        };
        assert_eq!(first.compression, Some(Method::Gzip));
        assert!(first.is(MainFlag::BROADCAST, SubFlag::BROADCAST));
        let Ok(Next::Frame(second)) = read_frame(&mut s, &mut framer, soon()) else {
            panic!("a frame");
        };
        assert!(second.is(MainFlag::RENEGOTIATE, SubFlag::RESEND));
        assert_eq!(second.compression, None);
        assert!(matches!(
            read_frame(&mut s, &mut framer, soon()),
            Ok(Next::Closed)
        ));
    }

    #[test]
    fn the_deadline_ends_a_wait_for_the_rest_of_a_frame() {
        let a = wire::frame(&wire::resend(b"a"), None);
        let mut parts = vec![Some(a[..6].to_vec())];
        parts.extend(std::iter::repeat_n(None, 10_000));
        let mut s = script(parts);
        let mut framer = Framer::default();
        let started = Instant::now();
        let got = read_frame(&mut s, &mut framer, started + Duration::from_millis(40));
        assert!(matches!(got, Ok(Next::Timeout)));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(40), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert_eq!(framer.pending(), 6);
        // A deadline that has passed ends the reading even with frames waiting: a peer that
        // never pauses cannot hold the kit.
        let whole = wire::frame(&wire::resend(b"b"), None);
        let mut flood = script(vec![Some(whole.repeat(3))]);
        let mut framer = Framer::default();
        assert!(matches!(
            read_frame(&mut flood, &mut framer, soon()),
            Ok(Next::Frame(_))
        ));
        assert!(matches!(
            read_frame(&mut flood, &mut framer, Instant::now()),
            Ok(Next::Timeout)
        ));
        assert_eq!(framer.pending(), 2 * whole.len());
    }

    #[test]
    fn bad_bytes_are_an_error_not_a_frame() {
        let mut bad = wire::frame(&wire::resend(b"a"), None);
        bad[P2PT_LENGTH_BYTES] ^= 1;
        let mut s = script(vec![Some(bad)]);
        let got = read_frame(&mut s, &mut Framer::default(), soon());
        assert!(
            matches!(got, Err(ref e) if e.contains("checksum")),
            "{got:?}"
        );
        let huge = ((P2PT_BODY_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
        let mut s = script(vec![Some(huge)]);
        assert!(read_frame(&mut s, &mut Framer::default(), soon()).is_err());
    }

    #[test]
    fn an_array_that_is_no_message_is_kept_as_elements() {
        // py2p's resend of `whisper/peers`: [7, bin id, ts, [..]]: the fourth is no sub-flag.
        let msgpack = [0x94, 0x07, 0xc4, 1, b'p', 0x05, 0x91, 0x90];
        let wire = wire::frame_bytes(&msgpack, Some(Method::Zlib));
        let got = open(&wire).expect("a frame");
        assert!(got.message.is_none());
        assert_eq!(got.compression, Some(Method::Zlib));
        assert_eq!(got.main_flag(), Some(0x07));
        assert_eq!(got.elements().map(|e| e.len()), Some(4));
        assert!(got.describe().contains("no py2p message"));
        // Not an array at all: refused.
        assert!(open(&wire::frame_bytes(&[0xc0], None)).is_err());
    }
}
