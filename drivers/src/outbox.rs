//! One connection's bytes on their way to the socket, and the engine's back-pressure contract:
//! once everything handed out by `Output::Transmit` has been written, the driver owes the engine
//! `Input::Writable`.

use std::io;

/// Above this many bytes of idle capacity an empty outbox gives memory back.
const IDLE_CAPACITY_MAX: usize = 1024 * 1024;

/// Something the outbox can write to without blocking.
pub trait TryWrite {
    /// Writes some of `buf`; `ErrorKind::WouldBlock` when the socket is full.
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;
}

/// How far a [`Outbox::write_to`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything is written, and the engine is owed `Writable`.
    AllOwed,
    /// Everything is written; nothing was handed out since the last `Writable`.
    All,
    /// The socket is full; wait for it to become writable.
    Partly,
}

/// Bytes handed out by the engine and not yet written, in order. Small frames are copied into
/// one buffer so that one `write` carries many of them.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    written: usize,
    owed: bool,
}

impl Outbox {
    /// Appends the bytes of one `Output::Transmit`.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.owed = true;
    }

    /// Bytes not yet written.
    pub fn unwritten(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Writes as much as the socket takes.
    pub fn write_to(&mut self, socket: &mut impl TryWrite) -> io::Result<Flushed> {
        while self.written < self.buf.len() {
            match socket.try_write(&self.buf[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Partly),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.written = 0;
        if self.buf.capacity() > IDLE_CAPACITY_MAX {
            self.buf.shrink_to(IDLE_CAPACITY_MAX / 16);
        }
        Ok(if std::mem::take(&mut self.owed) {
            Flushed::AllOwed
        } else {
            Flushed::All
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `room` bytes, then blocks.
    struct Socket {
        room: usize,
        got: Vec<u8>,
    }

    impl TryWrite for Socket {
        fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room).min(3);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }

    #[test]
    fn writes_in_order_and_owes_writable_only_when_all_is_written() {
        let mut out = Outbox::default();
        let mut socket = Socket {
            room: 5,
            got: Vec::new(),
        };
        out.push(b"abcd");
        out.push(b"efgh");
        assert_eq!(out.write_to(&mut socket).unwrap(), Flushed::Partly);
        assert_eq!(out.unwritten(), 3);
        out.push(b"ij");
        socket.room = 100;
        assert_eq!(out.write_to(&mut socket).unwrap(), Flushed::AllOwed);
        assert_eq!(socket.got, b"abcdefghij");
        assert_eq!(out.write_to(&mut socket).unwrap(), Flushed::All);
        assert_eq!(out.unwritten(), 0);
    }

    #[test]
    fn a_socket_that_takes_nothing_is_an_error() {
        struct Zero;
        impl TryWrite for Zero {
            fn try_write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
        }
        let mut out = Outbox::default();
        out.push(b"x");
        assert!(out.write_to(&mut Zero).is_err());
    }
}
