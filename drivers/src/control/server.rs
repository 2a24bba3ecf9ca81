//! The node's side of the control socket: an accept thread, and a thread per client that
//! turns its request into a [`Handle`] call.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{ControlReply, ControlRequest, REQUEST_BYTES_MAX};
use weft_engine::chord::{ChordRequest, ChordResult};

use crate::handle::{Handle, HandleError, TableOp};
use crate::report::DeliveryReport;

/// Clients served at once; more are refused.
const CLIENTS_MAX: usize = 64;
/// Deliveries a `listen` client may fall behind by before it misses some.
const LISTEN_BACKLOG: usize = 4096;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle `listen` session checks whether its client left.
const LISTEN_CHECK: Duration = Duration::from_millis(500);

/// A served control socket; dropping it stops serving and removes the socket file.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl ControlServer {
    /// Binds the socket at `path` and serves it on background threads. Fails with
    /// `AddrInUse` if a node already answers there; a stale file from a dead node is replaced.
    pub fn serve(path: &Path, handle: Handle) -> io::Result<ControlServer> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("a node is already running ({} answers)", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("weft-control".into())
            .spawn(move || accept_loop(&listener, &handle, &stopped))?;
        Ok(ControlServer {
            path: path.to_path_buf(),
            stop,
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept thread so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: &UnixListener, handle: &Handle, stop: &AtomicBool) {
    let clients = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut stream) = stream else {
            continue;
        };
        if clients.fetch_add(1, Ordering::SeqCst) >= CLIENTS_MAX {
            clients.fetch_sub(1, Ordering::SeqCst);
            let _ = write_reply(&mut stream, &ControlReply::Error("too many clients".into()));
            continue;
        }
        let handle = handle.clone();
        let count = Arc::clone(&clients);
        let spawned = std::thread::Builder::new()
            .name("weft-control-client".into())
            .spawn(move || {
                if let Err(e) = serve_client(stream, &handle) {
                    tracing::debug!("control client: {e}");
                }
                count.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            clients.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn write_reply(stream: &mut UnixStream, reply: &ControlReply) -> io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

fn read_request(stream: &UnixStream) -> Result<ControlRequest, String> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream.take(REQUEST_BYTES_MAX + 1));
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("reading the request: {e}"))?;
    if line.len() as u64 > REQUEST_BYTES_MAX {
        return Err(format!("request over {REQUEST_BYTES_MAX} bytes"));
    }
    serde_json::from_slice(&line).map_err(|e| format!("bad request: {e}"))
}

fn refused(e: HandleError) -> ControlReply {
    ControlReply::Error(match e {
        HandleError::Stopped => "the node is shutting down".into(),
        HandleError::Refused(e) => e.to_string(),
        leased @ HandleError::Leased { .. } => leased.to_string(),
    })
}

fn serve_client(mut stream: UnixStream, handle: &Handle) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let request = match read_request(&stream) {
        Ok(r) => r,
        Err(e) => return write_reply(&mut stream, &ControlReply::Error(e)),
    };
    let reply = match request {
        ControlRequest::Send { message } => match handle.broadcast(Bytes::from(message)) {
            Ok(()) => ControlReply::Sent,
            Err(e) => refused(e),
        },
        ControlRequest::Network => handle.hosts().map_or_else(refused, ControlReply::Hosts),
        ControlRequest::Stats => handle
            .stats()
            .map_or_else(refused, |s| ControlReply::Stats(Box::new(s))),
        ControlRequest::Listen => return stream_deliveries(stream, handle),
        ControlRequest::TableSet {
            key,
            value,
            lease_ms,
        } => {
            let op = TableOp::Set {
                value: value.into_bytes(),
                lease: lease_ms.map(weft_engine::Duration::from_millis),
            };
            written(handle.table_write(key.into_bytes(), op))
        }
        ControlRequest::TableDelete { key } => {
            written(handle.table_write(key.into_bytes(), TableOp::Delete))
        }
        ControlRequest::TableRelease { key } => {
            written(handle.table_write(key.into_bytes(), TableOp::Release))
        }
        ControlRequest::TableGet { key } => handle
            .table_read(Some(key.into_bytes()))
            .map_or_else(refused, ControlReply::Table),
        ControlRequest::TableList => handle
            .table_read(None)
            .map_or_else(refused, ControlReply::Table),
        ControlRequest::Put {
            key,
            value,
            lifetime_ms,
        } => chord_reply(handle.chord(ChordRequest::Put {
            key: key.into_bytes(),
            value: value.into_bytes(),
            lifetime_ms,
        })),
        ControlRequest::Get { key } => chord_reply(handle.chord(ChordRequest::Get {
            key: key.into_bytes(),
        })),
        ControlRequest::Delete { key, value } => chord_reply(handle.chord(ChordRequest::Delete {
            key: key.into_bytes(),
            value: value.map(String::into_bytes),
        })),
    };
    write_reply(&mut stream, &reply)
}

fn written(result: Result<(), HandleError>) -> ControlReply {
    result.map_or_else(refused, |()| ControlReply::Written)
}

fn chord_reply(result: Result<ChordResult, String>) -> ControlReply {
    match result {
        Ok(ChordResult::Put { replicas }) => ControlReply::Stored(replicas),
        Ok(ChordResult::Delete { replicas }) => ControlReply::Deleted(replicas),
        Ok(ChordResult::Get { values }) => ControlReply::Values(
            values
                .iter()
                .map(|v| String::from_utf8_lossy(&v.value).into_owned())
                .collect(),
        ),
        Ok(other) => ControlReply::Error(format!("unexpected chord result {other:?}")),
        Err(e) => ControlReply::Error(e),
    }
}

/// A `listen` session: deliveries until the node stops or the client leaves.
fn stream_deliveries(mut stream: UnixStream, handle: &Handle) -> io::Result<()> {
    let deliveries = match handle.subscribe(LISTEN_BACKLOG) {
        Ok(d) => d,
        Err(e) => return write_reply(&mut stream, &refused(e)),
    };
    write_reply(&mut stream, &ControlReply::Listening)?;
    stream.set_read_timeout(Some(Duration::from_millis(1)))?;
    loop {
        match deliveries.recv_timeout(LISTEN_CHECK) {
            Ok(d) => {
                let reply = ControlReply::Broadcast(DeliveryReport::from(&d));
                write_reply(&mut stream, &reply)?;
            }
            Err(RecvTimeoutError::Timeout) => {
                // The client sends nothing after its request: end of stream means it left.
                match stream.read(&mut [0u8; 64]) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}
