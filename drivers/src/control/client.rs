//! The commands' side of the control socket.

use std::io::{self, BufRead, BufReader, Lines, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ControlReply, ControlRequest};
use crate::report::DeliveryReport;

/// How long a command waits for the node's answer.
/// (Longer than a Chord request's own timeout, so `get` hears the node's answer.)
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// The longest reply line a command reads (1 GiB: a table list of the largest table the
/// engine holds is some hundreds of MiB of JSON); a longer one is not the node's.
pub const REPLY_BYTES_MAX: u64 = 1 << 30;

/// Why a command could not get its answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing answers at the socket.
    #[error("no node is running there (nothing answers at {0})")]
    NotRunning(PathBuf),
    /// The conversation broke off.
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    /// The node answered something this command does not understand.
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
    /// The node refused the request.
    #[error("{0}")]
    Refused(String),
    /// The node did not answer in time.
    #[error("the node did not answer within {} s", .0.as_secs())]
    NoAnswer(Duration),
}

fn connect(path: &Path, request: &ControlRequest) -> Result<UnixStream, ControlError> {
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning(path.to_path_buf())
        }
        _ => ControlError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    })?;
    let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
    line.push(b'\n');
    match stream.write_all(&line) {
        Ok(()) => {}
        // The node answered before it had read the whole line (a request it refuses, a
        // large one while others are read) and closed: its answer is there to read.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(ControlError::Io(e)),
    }
    Ok(stream)
}

fn parse(line: &str) -> Result<ControlReply, ControlError> {
    match serde_json::from_str(line) {
        Ok(ControlReply::Error(e)) => Err(ControlError::Refused(e)),
        Ok(reply) => Ok(reply),
        Err(e) => Err(ControlError::Protocol(e.to_string())),
    }
}

/// Sends one request to the node at `path` and returns its answer.
pub fn request(path: &Path, request: &ControlRequest) -> Result<ControlReply, ControlError> {
    request_within(path, request, REPLY_TIMEOUT)
}

/// Sends one request to the node at `path` and returns its answer, waiting for it at most
/// `timeout` (for requests the node answers late on purpose, as a publish).
pub fn request_within(
    path: &Path,
    request: &ControlRequest,
    timeout: Duration,
) -> Result<ControlReply, ControlError> {
    let stream = connect(path, request)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = String::new();
    let read = BufReader::new(io::Read::take(stream, REPLY_BYTES_MAX)).read_line(&mut line);
    match read {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(ControlError::NoAnswer(timeout))
        }
        Err(e) => return Err(e.into()),
    }
    if line.len() as u64 >= REPLY_BYTES_MAX && !line.ends_with('\n') {
        return Err(ControlError::Protocol(format!(
            "a reply line over {REPLY_BYTES_MAX} bytes"
        )));
    }
    if line.is_empty() {
        return Err(ControlError::Protocol(
            "the node closed the connection".into(),
        ));
    }
    parse(&line)
}

/// The deliveries of a `listen` session, as they arrive; ends when the node stops.
pub struct Deliveries {
    lines: Lines<BufReader<UnixStream>>,
}

impl Iterator for Deliveries {
    type Item = Result<DeliveryReport, ControlError>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = match self.lines.next()? {
            Ok(line) => line,
            Err(e) => return Some(Err(e.into())),
        };
        Some(match parse(&line) {
            Ok(ControlReply::Broadcast(d)) => Ok(d),
            Ok(other) => Err(ControlError::Protocol(format!("{other:?}"))),
            Err(e) => Err(e),
        })
    }
}

/// Starts a `listen` session with the node at `path`.
pub fn listen(path: &Path) -> Result<Deliveries, ControlError> {
    let stream = connect(path, &ControlRequest::Listen)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.is_empty() {
        return Err(ControlError::Protocol(
            "the node closed the connection".into(),
        ));
    }
    match parse(&line)? {
        ControlReply::Listening => {}
        other => return Err(ControlError::Protocol(format!("{other:?}"))),
    }
    reader.get_ref().set_read_timeout(None)?;
    Ok(Deliveries {
        lines: reader.lines(),
    })
}

/// A `run` session with the node: its replies as they come, and signal lines to it.
pub struct RunClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    line: Vec<u8>,
}

impl RunClient {
    /// The node's next reply, or `None` once it closed the connection.
    pub fn next_reply(&mut self) -> Result<Option<ControlReply>, ControlError> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            return Ok(None);
        }
        let line = String::from_utf8_lossy(&self.line);
        match serde_json::from_str(&line) {
            Ok(reply) => Ok(Some(reply)),
            Err(e) => Err(ControlError::Protocol(e.to_string())),
        }
    }

    /// A handle to send `interrupt` or `kill` lines from another thread.
    pub fn signaller(&self) -> io::Result<RunSignaller> {
        Ok(RunSignaller {
            stream: self.writer.try_clone()?,
        })
    }
}

/// Sends signal lines for a `run` session.
pub struct RunSignaller {
    stream: UnixStream,
}

impl RunSignaller {
    /// Asks the node to send `signal` (`interrupt` or `kill`) to the remote process.
    pub fn send(&mut self, signal: &str) -> io::Result<()> {
        let line = super::RunSignalLine {
            signal: signal.into(),
        };
        let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.stream.write_all(&bytes)
    }
}

/// Starts a `run` session with the node at `path`.
pub fn run(path: &Path, request: &ControlRequest) -> Result<RunClient, ControlError> {
    let stream = connect(path, request)?;
    let writer = stream.try_clone()?;
    Ok(RunClient {
        reader: BufReader::new(stream),
        writer,
        line: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A node that answers a request before reading all of it (a refusal) and closes: the
    /// command reads the answer, where the write's broken pipe was all it said.
    #[test]
    fn an_answer_given_before_the_request_was_read_is_read() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let node = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut some = [0u8; 1024];
            let _ = stream.read(&mut some);
            let refusal = ControlReply::Error("busy: try again".into());
            let mut line = serde_json::to_vec(&refusal).expect("encodes");
            line.push(b'\n');
            stream.write_all(&line).expect("the answer");
        });
        let big = ControlRequest::Send {
            message: "x".repeat(8 << 20),
        };
        let answer = request(&path, &big);
        node.join().expect("the node");
        assert!(
            matches!(&answer, Err(ControlError::Refused(why)) if why.contains("try again")),
            "{answer:?}"
        );
    }

    /// A socket that takes the request and never answers: the command says the node did
    /// not answer in time (it said "Resource temporarily unavailable").
    #[test]
    fn a_node_that_never_answers_is_said_not_to_answer_in_time() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let node = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut all = Vec::new();
            let _ = stream.read_to_end(&mut all);
        });
        let answer = request_within(&path, &ControlRequest::Network, Duration::from_millis(200));
        assert!(
            matches!(&answer, Err(ControlError::NoAnswer(_))),
            "{answer:?}"
        );
        drop(answer);
        node.join().expect("the node");
    }
}
