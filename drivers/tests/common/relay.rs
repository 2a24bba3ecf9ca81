//! A TCP relay between two nodes that records every byte it forwards, and on demand flips a
//! byte, replays a message or stops forwarding: the wire as an attacker on the path sees it.
//!
//! The relay listens on 127.0.0.1; for each connection it accepts (the client, node A) it dials
//! the target (node B) and copies bytes both ways on two threads. It forwards whole Noise
//! messages (a u16 big-endian length and that many bytes, SPEC.md §21), so that a fault lands
//! where it is aimed and a replay is a whole message at a message boundary.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// A direction through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the client (the node that dialed the relay) to the target.
    ToTarget,
    /// From the target back to the client.
    ToClient,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::ToTarget => 0,
            Dir::ToClient => 1,
        }
    }
}

/// What the relay saw of one relayed connection.
#[derive(Debug, Clone)]
pub struct Capture {
    /// When the relay's dial to the target connected.
    pub opened: Instant,
    /// The relay's own address on its connection to the target (what the target sees as the
    /// remote address).
    pub target_side: String,
    /// Bytes forwarded, by direction ([`Dir::ToTarget`], [`Dir::ToClient`]): faults applied,
    /// replays included.
    bytes: [Vec<u8>; 2],
    /// Each forwarded message's start in `bytes` and its length, prefix included.
    messages: [Vec<(usize, usize)>; 2],
    /// Bytes read and dropped past a cut, by direction.
    dropped: [usize; 2],
    /// When each direction's source ended (closed, reset or shut by the relay): the client
    /// for [`Dir::ToTarget`], the target for [`Dir::ToClient`].
    ended: [Option<Instant>; 2],
    /// When the last fault (a flip or a replay) was about to be written.
    pub faulted: Option<Instant>,
}

impl Capture {
    /// The bytes forwarded in `dir`.
    pub fn bytes(&self, dir: Dir) -> &[u8] {
        &self.bytes[dir.index()]
    }

    /// The messages forwarded in `dir`, length prefixes included.
    pub fn messages(&self, dir: Dir) -> Vec<&[u8]> {
        let bytes = &self.bytes[dir.index()];
        self.messages[dir.index()]
            .iter()
            .map(|&(at, len)| &bytes[at..(at + len).min(bytes.len())])
            .collect()
    }

    /// Bytes `dir` read and dropped past its cut.
    pub fn dropped(&self, dir: Dir) -> usize {
        self.dropped[dir.index()]
    }

    /// When `dir`'s source ended, if it has.
    pub fn ended(&self, dir: Dir) -> Option<Instant> {
        self.ended[dir.index()]
    }

    /// Whether the target closed the connection, before the client did (the relay ends a
    /// connection only after one of them has).
    pub fn closed_by_target(&self) -> bool {
        match (self.ended(Dir::ToClient), self.ended(Dir::ToTarget)) {
            (Some(target), Some(client)) => target <= client,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// One relayed connection: its capture, where each direction writes, its armed faults.
struct Conn {
    capture: Capture,
    /// The socket each direction's bytes are written to.
    dest: [TcpStream; 2],
    /// Stream offsets (in forwarded bytes) whose byte is flipped when it passes, by direction.
    flips: [Vec<usize>; 2],
}

struct Shared {
    target: String,
    /// After how many bytes each direction stops forwarding (holding both sockets open).
    cut_after: [Option<usize>; 2],
    conns: Mutex<Vec<Conn>>,
}

/// A running relay. Its threads end when the connections they serve end.
pub struct Relay {
    /// Where the relay listens (`127.0.0.1:PORT`).
    pub addr: String,
    shared: Arc<Shared>,
}

impl Relay {
    /// A relay to `target` that forwards everything.
    pub fn start(target: &str) -> Relay {
        Relay::start_with(target, [None, None])
    }

    /// A relay to `target` whose direction `dir` forwards only its first `bytes` bytes of each
    /// connection, then reads and drops the rest, holding the sockets open: a connection
    /// ends only when the target closes it.
    pub fn cutting(target: &str, dir: Dir, bytes: usize) -> Relay {
        let mut cut_after = [None, None];
        cut_after[dir.index()] = Some(bytes);
        Relay::start_with(target, cut_after)
    }

    fn start_with(target: &str, cut_after: [Option<usize>; 2]) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("relay address").to_string();
        let shared = Arc::new(Shared {
            target: target.to_owned(),
            cut_after,
            conns: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                accept(&accepting, client);
            }
        });
        Relay { addr, shared }
    }

    fn conns(&self) -> MutexGuard<'_, Vec<Conn>> {
        self.shared.conns.lock().unwrap()
    }

    /// What the relay saw so far, one capture per relayed connection, oldest first.
    pub fn captures(&self) -> Vec<Capture> {
        self.conns().iter().map(|c| c.capture.clone()).collect()
    }

    /// Connection `conn`'s capture.
    pub fn capture(&self, conn: usize) -> Capture {
        self.conns()[conn].capture.clone()
    }

    /// Flips the byte at stream offset `offset` of direction `dir` of connection `conn` when
    /// it passes (an offset already forwarded is never reached).
    pub fn flip_at(&self, conn: usize, dir: Dir, offset: usize) {
        self.conns()[conn].flips[dir.index()].push(offset);
    }

    /// Arms a flip of byte `body_byte` (after the length prefix) of the next message `dir`
    /// forwards on connection `conn`; the stream offset flipped.
    pub fn flip_next_message(&self, conn: usize, dir: Dir, body_byte: usize) -> usize {
        let mut conns = self.conns();
        let c = &mut conns[conn];
        // Whole messages are forwarded under this lock: the next one starts here.
        let offset = c.capture.bytes[dir.index()].len() + 2 + body_byte;
        c.flips[dir.index()].push(offset);
        offset
    }

    /// Sends message `k` (counted from 0) of direction `dir` of connection `conn` again, now,
    /// between two whole messages; its length, prefix included.
    pub fn replay(&self, conn: usize, dir: Dir, k: usize) -> usize {
        let mut conns = self.conns();
        let c = &mut conns[conn];
        let d = dir.index();
        let (at, len) = c.capture.messages[d][k];
        let message = c.capture.bytes[d][at..at + len].to_vec();
        c.capture.faulted = Some(Instant::now());
        c.dest[d]
            .write_all(&message)
            .expect("replay a message to its destination");
        let start = c.capture.bytes[d].len();
        c.capture.bytes[d].extend_from_slice(&message);
        c.capture.messages[d].push((start, len));
        len
    }
}

/// Dials the target for `client` and starts copying both ways.
fn accept(shared: &Arc<Shared>, client: TcpStream) {
    let Ok(target) = TcpStream::connect(&shared.target) else {
        return;
    };
    let opened = Instant::now();
    let _ = client.set_nodelay(true);
    let _ = target.set_nodelay(true);
    let target_side = target.local_addr().expect("relay's address").to_string();
    let clones = (
        client.try_clone(),
        target.try_clone(),
        client.try_clone(),
        target.try_clone(),
    );
    let (Ok(client_w), Ok(target_w), Ok(client_r), Ok(target_r)) = clones else {
        return;
    };
    let index = {
        let mut conns = shared.conns.lock().unwrap();
        conns.push(Conn {
            capture: Capture {
                opened,
                target_side,
                bytes: [Vec::new(), Vec::new()],
                messages: [Vec::new(), Vec::new()],
                dropped: [0, 0],
                ended: [None, None],
                faulted: None,
            },
            dest: [target_w, client_w],
            flips: [Vec::new(), Vec::new()],
        });
        conns.len() - 1
    };
    for (dir, src, dst) in [
        (Dir::ToTarget, client_r, target),
        (Dir::ToClient, target_r, client),
    ] {
        let shared = Arc::clone(shared);
        std::thread::spawn(move || pump(&shared, index, dir, src, dst));
    }
}

/// Copies `src` to `dst` message by message until `src` ends, then ends the connection on
/// both sides (unless this direction is cut: a cut holds the target's socket open).
fn pump(shared: &Shared, conn: usize, dir: Dir, mut src: TcpStream, mut dst: TcpStream) {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while pending.len() >= 2 {
            let len = 2 + usize::from(u16::from_be_bytes([pending[0], pending[1]]));
            if pending.len() < len {
                break;
            }
            let message: Vec<u8> = pending.drain(..len).collect();
            forward(shared, conn, dir, message, &mut dst);
        }
    }
    let mut conns = shared.conns.lock().unwrap();
    conns[conn].capture.ended[dir.index()] = Some(Instant::now());
    drop(conns);
    if shared.cut_after[dir.index()].is_none() {
        let _ = dst.shutdown(Shutdown::Both);
        let _ = src.shutdown(Shutdown::Both);
    }
}

/// Forwards one message in `dir` of connection `conn`: flips what is armed, stops at the
/// cut, records what went.
fn forward(shared: &Shared, conn: usize, dir: Dir, mut message: Vec<u8>, dst: &mut TcpStream) {
    let d = dir.index();
    let mut conns = shared.conns.lock().unwrap();
    let c = &mut conns[conn];
    let start = c.capture.bytes[d].len();
    let end = start + message.len();
    let mut flipped = false;
    c.flips[d].retain(|&offset| {
        let hit = (start..end).contains(&offset);
        if hit {
            message[offset - start] ^= 0x01;
            flipped = true;
        }
        !hit
    });
    let keep = match shared.cut_after[d] {
        Some(cut) => cut.saturating_sub(start).min(message.len()),
        None => message.len(),
    };
    c.capture.dropped[d] += message.len() - keep;
    if keep == 0 {
        return;
    }
    if flipped {
        c.capture.faulted = Some(Instant::now());
    }
    // Under the lock, so that a replay never lands inside a message. A destination that has
    // gone is not an error: the source is still read to its end.
    let _ = dst.write_all(&message[..keep]);
    c.capture.bytes[d].extend_from_slice(&message[..keep]);
    c.capture.messages[d].push((start, keep));
}
