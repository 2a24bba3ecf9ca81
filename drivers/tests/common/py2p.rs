//! Real py2p 0.7.878 nodes (the p2p.today reference implementation, from PyPI) for interop
//! tests: each [`Py2pPeer`] is one `tests/p2pt/py2p_peer.py` process on 127.0.0.1, driven by
//! JSON lines, killed when dropped. The venv comes from `.ci/py2p-venv.sh`, run once per test
//! process ([`py2p_python`]), so a fresh machine sets itself up; a venv that cannot be made
//! fails the test, never skips it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::WAIT;

/// Longest `.ci/py2p-venv.sh` may take (a fresh venv installs from PyPI: seconds here).
const VENV_LIMIT: Duration = Duration::from_secs(600);
/// How often the `wait_*` helpers ask again.
const POLL: Duration = Duration::from_millis(20);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("drivers/ has a parent")
        .to_path_buf()
}

/// The peer script.
pub fn py2p_peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/p2pt/py2p_peer.py")
}

/// The python of the py2p venv (`$WEFT_PY2P_VENV`, default `target/py2p-venv`): the first
/// call in a test process runs `.ci/py2p-venv.sh`, which makes the venv unless it is complete.
/// Panics, saying why, if that fails.
pub fn py2p_python() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(make_venv) {
        Ok(python) => python.clone(),
        Err(e) => panic!("py2p venv: {e}"),
    }
}

fn make_venv() -> Result<PathBuf, String> {
    let script = repo().join(".ci/py2p-venv.sh");
    let mut bash = Command::new("bash");
    bash.arg(&script);
    let done = super::run_command_within(bash, None, VENV_LIMIT)
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let status = done.status;
    let out = String::from_utf8_lossy(&done.stdout).into_owned();
    let err = String::from_utf8_lossy(&done.stderr).into_owned();
    if !status.success() {
        return Err(format!("{} failed ({status}):\n{err}", script.display()));
    }
    let python = PathBuf::from(out.lines().last().unwrap_or("").trim());
    if !python.is_file() {
        return Err(format!(
            "{} printed no python path (last line {python:?}):\n{out}\n{err}",
            script.display()
        ));
    }
    Ok(python)
}

/// One message a py2p node delivered to its application (`sock.recv()`).
#[derive(Debug, Clone, PartialEq)]
pub struct Py2pMessage {
    /// The originator's node id.
    pub sender: String,
    /// The application's arguments (py2p's `Message.packets` after the sub-flag), rendered:
    /// str and UTF-8 bin as strings, other bin as `{"hex": ..}`.
    pub packets: Vec<Value>,
    /// The originator's Unix time, seconds.
    pub time: u64,
    /// The sub-flag: 0x00 broadcast, 0x02 whisper.
    pub flag: u8,
    /// The message id (SHA-256 of its msgpack), hex.
    pub id: String,
}

impl Py2pMessage {
    fn from_event(ev: &Value) -> Py2pMessage {
        Py2pMessage {
            sender: ev["sender"].as_str().unwrap_or_default().to_owned(),
            packets: ev["packets"].as_array().cloned().unwrap_or_default(),
            time: ev["time"].as_u64().unwrap_or_default(),
            flag: ev["flag"].as_u64().unwrap_or_default() as u8,
            id: ev["id"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// The packets that are strings.
    pub fn texts(&self) -> Vec<&str> {
        self.packets.iter().filter_map(Value::as_str).collect()
    }
}

/// A py2p node: `mesh` (`MeshSocket`), `sync1` (`SyncSocket`, leases on) or `sync0` (leases
/// off), listening on 127.0.0.1.
pub struct Py2pPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    /// Deliveries read while waiting for something else.
    messages: VecDeque<Py2pMessage>,
    /// Sync `update`/`delete` events, in order.
    sync_events: Vec<Value>,
    kind: String,
    port: u16,
    id: String,
    protocol_id: String,
    log: tempfile::NamedTempFile,
}

impl Py2pPeer {
    /// A node of `kind` that offers py2p's compressions (zlib, gzip, bz2, xz).
    pub fn start(kind: &str) -> Py2pPeer {
        Py2pPeer::start_with(kind, true)
    }

    /// A node of `kind`; without `compression` it advertises no method and sends every frame
    /// raw.
    pub fn start_with(kind: &str, compression: bool) -> Py2pPeer {
        Py2pPeer::start_opts(kind, compression, None)
    }

    /// A node of `kind` that announces `127.0.0.1:announce_port` (when given) instead of the
    /// port it listens on: with a port nothing listens on, nodes that hear of it through a
    /// `peers` list cannot dial it, so only the links the test makes exist (a chain).
    pub fn start_opts(kind: &str, compression: bool, announce_port: Option<u16>) -> Py2pPeer {
        let python = py2p_python();
        let log = tempfile::Builder::new()
            .prefix(&format!("py2p-{kind}-"))
            .suffix(".log")
            .tempfile()
            .expect("py2p log file");
        let mut cmd = Command::new(&python);
        cmd.arg(py2p_peer_script()).args(["--kind", kind]);
        if !compression {
            cmd.arg("--no-compression");
        }
        if let Some(port) = announce_port {
            cmd.args(["--announce-port", &port.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("py2p log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", python.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let ev = serde_json::from_str(&line)
                    .unwrap_or_else(|_| json!({"ev": "garbage", "line": line}));
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut peer = Py2pPeer {
            child,
            stdin,
            events,
            messages: VecDeque::new(),
            sync_events: Vec::new(),
            kind: kind.to_owned(),
            port: 0,
            id: String::new(),
            protocol_id: String::new(),
            log,
        };
        let ready = peer.reply("start");
        if ready["ev"] != "ready" {
            peer.fail(&format!("did not start: {ready}"));
        }
        peer.port = ready["port"].as_u64().unwrap_or_default() as u16;
        peer.id = ready["id"].as_str().unwrap_or_default().to_owned();
        peer.protocol_id = ready["protocol_id"].as_str().unwrap_or_default().to_owned();
        peer
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The port it listens on (127.0.0.1), which its handshake advertises.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its node id (base58 text).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its protocol id (base58 text).
    pub fn protocol_id(&self) -> &str {
        &self.protocol_id
    }

    /// What python wrote on stderr so far (py2p's own prints, tracebacks).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "py2p {} peer {}: {what}\n--- its stderr:\n{}",
            self.kind,
            self.port,
            self.log_text()
        )
    }

    /// Files an async event; true if `ev` was one.
    fn file(&mut self, ev: &Value) -> bool {
        match ev["ev"].as_str() {
            Some("msg") => self.messages.push_back(Py2pMessage::from_event(ev)),
            Some("update" | "delete") => self.sync_events.push(ev.clone()),
            _ => return false,
        }
        true
    }

    /// The next event that is not an async one (a command's reply), within `WAIT`.
    fn reply(&mut self, what: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ev) => {
                    if !self.file(&ev) {
                        return ev;
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.fail(&format!("no reply to {what}")),
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("exited before replying to {what}"))
                }
            }
        }
    }

    /// Sends one command, returns its reply.
    fn command(&mut self, cmd: Value) -> Value {
        let line = format!("{cmd}\n");
        let sent = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        if let Err(e) = sent {
            self.fail(&format!("cannot send {cmd}: {e}"));
        }
        self.reply(&cmd.to_string())
    }

    fn ok_or_error(reply: Value) -> Result<(), String> {
        match reply["ev"].as_str() {
            Some("ok") => Ok(()),
            _ => Err(reply["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| reply.to_string())),
        }
    }

    /// Dials `host:port` (py2p's `connect`: TCP connect and its handshake; the link is up
    /// once both handshakes are read, see [`Py2pPeer::wait_peers`]).
    pub fn connect(&mut self, host: &str, port: u16) -> Result<(), String> {
        let reply = self.command(json!({"op": "connect", "host": host, "port": port}));
        Py2pPeer::ok_or_error(reply)
    }

    /// Broadcasts `args` as strings (`sock.send(*args)`).
    pub fn send(&mut self, args: &[&str]) {
        let reply = self.command(json!({"op": "send", "args": args}));
        if let Err(e) = Py2pPeer::ok_or_error(reply) {
            self.fail(&format!("send {args:?}: {e}"));
        }
    }

    /// `sock[key] = value` (sync kinds); `Err` says `lease: ...` when py2p refuses it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let reply = self.command(json!({"op": "set", "key": key, "value": value}));
        Py2pPeer::ok_or_error(reply)
    }

    /// `del sock[key]` (sync kinds); `Err` says `lease: ...` or `absent: ...`.
    pub fn delete(&mut self, key: &str) -> Result<(), String> {
        let reply = self.command(json!({"op": "delete", "key": key}));
        Py2pPeer::ok_or_error(reply)
    }

    /// `sock.get(key)` (sync kinds), rendered; `None` when there is no value.
    pub fn get(&mut self, key: &str) -> Option<Value> {
        let reply = self.command(json!({"op": "get", "key": key}));
        if reply["ev"] != "value" {
            self.fail(&format!("get {key:?}: {reply}"));
        }
        Some(reply["value"].clone()).filter(|v| !v.is_null())
    }

    fn peers_reply(&mut self) -> Value {
        let reply = self.command(json!({"op": "peers"}));
        if reply["ev"] != "peers" {
            self.fail(&format!("peers: {reply}"));
        }
        reply
    }

    /// The ids in its routing table (handshaken links).
    pub fn peers(&mut self) -> Vec<String> {
        let reply = self.peers_reply();
        reply["ids"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Its routing table's links it dialed and links it accepted.
    pub fn links(&mut self) -> (usize, usize) {
        let reply = self.peers_reply();
        let n = |k: &str| reply[k].as_u64().unwrap_or_default() as usize;
        (n("outgoing"), n("incoming"))
    }

    /// Whether its routing table holds at least `n` ids within `timeout`.
    pub fn wait_peers(&mut self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.peers().len() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// py2p's `request_peers()`: `whisper/request "*"` to every peer (the "*" as msgpack str,
    /// which py2p itself does not answer: see the notes).
    pub fn request_peers(&mut self) {
        let reply = self.command(json!({"op": "request_peers"}));
        if let Err(e) = Py2pPeer::ok_or_error(reply) {
            self.fail(&format!("request_peers: {e}"));
        }
    }

    /// The tracebacks py2p's daemon caught (each dropped the link it came from).
    pub fn exceptions(&mut self) -> Vec<String> {
        let reply = self.command(json!({"op": "status"}));
        reply["exceptions"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Reads whatever events arrived, without waiting.
    fn pump(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            if !self.file(&ev) {
                let what = format!("an unexpected event {ev}");
                self.fail(&what);
            }
        }
    }

    /// The next delivery not returned before, waiting up to `timeout`.
    pub fn wait_message(&mut self, timeout: Duration) -> Option<Py2pMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump();
            if let Some(m) = self.messages.pop_front() {
                return Some(m);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.events.recv_timeout(left) {
                Ok(ev) => {
                    if !self.file(&ev) {
                        let what = format!("an unexpected event {ev}");
                        self.fail(&what);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => self.fail("exited"),
            }
        }
    }

    /// Every delivery not returned before that is there now or arrives within `window`.
    pub fn messages_within(&mut self, window: Duration) -> Vec<Py2pMessage> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(m) = self.wait_message(deadline.saturating_duration_since(Instant::now())) {
            out.push(m);
        }
        out
    }

    /// Sync `update` (`{"ev":"update","key","value","owner","time"}`) and `delete`
    /// (`{"ev":"delete","key"}`) events py2p emitted so far, local writes included; drained.
    pub fn sync_events(&mut self) -> Vec<Value> {
        self.pump();
        std::mem::take(&mut self.sync_events)
    }

    /// Whether `get(key)` equals `want` (`None`: no value) within `timeout`.
    pub fn wait_value(&mut self, key: &str, want: Option<&Value>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.get(key).as_ref() == want {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Py2pPeer {
    fn drop(&mut self) {
        // Ask it to close its socket, then make sure it is gone.
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"{\"op\":\"quit\"}\n");
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
