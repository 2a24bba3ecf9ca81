//! Helpers for the end-to-end tests: `weft` processes on 127.0.0.1 that are killed when
//! dropped, commands with a time limit, and in-process peers that speak the protocol.
#![allow(dead_code)]

pub mod broken;
pub mod peer;
pub mod py2p;
pub mod relay;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weft_drivers::report::{DeliveryReport, HostReport, StatsReport};

/// Every wait in these tests ends by this time at the latest.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `weft` binary.
pub fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft"))
}

/// Runs `weft args`, killing it if it takes longer than `WAIT`.
pub fn run(args: &[&str]) -> Output {
    run_with_input(args, None)
}

/// Runs `weft args` with `input` (if any) on its standard input, killing it after `WAIT`.
pub fn run_with_input(args: &[&str], input: Option<Vec<u8>>) -> Output {
    run_within(args, input, WAIT)
}

/// Runs `weft args` with `input` (if any) on its standard input, killing it after `limit`.
pub fn run_within(args: &[&str], input: Option<Vec<u8>>, limit: Duration) -> Output {
    let mut cmd = weft();
    cmd.args(args);
    run_command_within(cmd, input, limit).unwrap_or_else(|e| panic!("weft {args:?}: {e}"))
}

/// Runs `cmd` with `input` (if any) on its standard input, its output captured; `Err` if it
/// cannot start or does not finish within `limit` (then it is killed).
pub fn run_command_within(
    mut cmd: Command,
    input: Option<Vec<u8>>,
    limit: Duration,
) -> Result<Output, String> {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    // The command may stop reading (a message over a limit): a broken pipe is expected.
    let writer = match (input, child.stdin.take()) {
        (Some(input), Some(mut stdin)) => Some(std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        })),
        _ => None,
    };
    // Read both pipes while the command runs: one that writes more than a pipe holds
    // (64 KiB) would otherwise block for ever.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("did not finish in {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Asserts a command succeeded; its standard output.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a failed command exited `code` and printed exactly one line on stderr, a `weft:`
/// line (or clap's own `error:`) containing `text`.
pub fn fails_with(out: &Output, code: i32, text: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(
        err.starts_with("weft: ") || err.starts_with("error: "),
        "{err:?}"
    );
    assert!(err.contains(text), "{err:?} should say {text:?}");
}

/// Polls `done` every 20 ms until it holds; panics after `WAIT` naming `what`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `weft node`.
pub struct NodeProc {
    child: Child,
    pub net: String,
    pub state: PathBuf,
    pub addr: String,
    pub log: PathBuf,
}

impl NodeProc {
    /// Starts `weft node` listening on `listen` (use `127.0.0.1:0` for a free port) and waits
    /// for the line that says where it listens.
    pub fn start(
        dir: &Path,
        net: &str,
        name: &str,
        driver: &str,
        listen: &str,
        peers: &[&str],
    ) -> NodeProc {
        NodeProc::start_with(dir, net, name, driver, listen, peers, &[])
    }

    /// [`NodeProc::start`] with extra `weft node` arguments.
    pub fn start_with(
        dir: &Path,
        net: &str,
        name: &str,
        driver: &str,
        listen: &str,
        peers: &[&str],
        extra: &[&str],
    ) -> NodeProc {
        let state = dir.join(name);
        let log = dir.join(format!("{name}.log"));
        let mut args = vec![
            "node", "--name", net, "--listen", listen, "--driver", driver,
        ];
        let state_text = state.display().to_string();
        args.extend(["--state", state_text.as_str()]);
        for p in peers {
            args.extend(["--peer", p]);
        }
        args.extend(extra);
        NodeProc::start_args(net, state, log, &args, &[("RUST_LOG", "info")])
    }

    /// Two nodes started with `extra` arguments, `a` on mio and `b` on tokio dialing it,
    /// linked.
    pub fn linked_pair(dir: &Path, net: &str, extra: &[&str]) -> (NodeProc, NodeProc) {
        let a = NodeProc::start_with(dir, net, "a", "mio", "127.0.0.1:0", &[], extra);
        let b = NodeProc::start_with(dir, net, "b", "tokio", "127.0.0.1:0", &[&a.addr], extra);
        let b_id = b.id();
        wait_until("a and b link", || a.links_to(&b_id));
        (a, b)
    }

    /// Starts `weft args` (a `weft node` of network `net` with state folder `state`), its
    /// stderr to `log`, with `envs` set, and waits for the line that says where it listens.
    pub fn start_args(
        net: &str,
        state: PathBuf,
        log: PathBuf,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> NodeProc {
        NodeProc::start_args_lines(net, state, log, args, envs, 0).0
    }

    /// [`NodeProc::start_args`], also waiting for the `more` lines the node prints after the
    /// one that says where it listens (the web page's `weft ui: URL`), and returning them.
    pub fn start_args_lines(
        net: &str,
        state: PathBuf,
        log: PathBuf,
        args: &[&str],
        envs: &[(&str, &str)],
        more: usize,
    ) -> (NodeProc, Vec<String>) {
        let mut cmd = weft();
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn weft node");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "{} did not start: {}",
                state.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        let lines = (0..more)
            .map(|_| {
                rx.recv_timeout(WAIT).unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("{} printed no more lines after {line:?}", state.display())
                })
            })
            .collect();
        let node = NodeProc {
            child,
            net: net.to_owned(),
            state,
            addr,
            log,
        };
        (node, lines)
    }

    fn net_args(&self) -> Vec<String> {
        vec![
            "--name".into(),
            self.net.clone(),
            "--state".into(),
            self.state.display().to_string(),
        ]
    }

    /// `weft <command> --name NET --state DIR <extra...>` against this node.
    pub fn command(&self, command: &str, extra: &[&str]) -> Output {
        let mut args = vec![command.to_owned()];
        args.extend(self.net_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs)
    }

    /// `weft table OP --name NET --state DIR <extra...>` against this node.
    pub fn table(&self, op: &str, extra: &[&str]) -> Output {
        let mut args = vec!["table".to_owned(), op.to_owned()];
        args.extend(self.net_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs)
    }

    /// The value `weft table get KEY` prints, if it succeeds.
    pub fn table_get(&self, key: &str) -> Option<String> {
        let out = self.table("get", &[key]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    pub fn stats(&self) -> StatsReport {
        let out = self.command("stats", &["--json"]);
        assert!(
            out.status.success(),
            "stats: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stats JSON")
    }

    pub fn hosts(&self) -> Vec<HostReport> {
        let out = self.command("network", &["--json"]);
        assert!(
            out.status.success(),
            "network: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("network JSON")
    }

    /// This node's id (64 hex digits).
    pub fn id(&self) -> String {
        self.stats().node
    }

    /// Whether this node holds a live link to `node`.
    pub fn links_to(&self, node: &str) -> bool {
        self.hosts().iter().any(|h| h.direct && h.node == node)
    }

    pub fn send(&self, message: &str) {
        let out = self.command("send", &[message]);
        assert!(
            out.status.success(),
            "send: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `weft listen --json` and waits until the node counts the subscriber.
    pub fn listen(&self) -> ListenProc {
        let before = self.stats().listeners;
        let mut args = vec!["listen".to_owned()];
        args.extend(self.net_args());
        args.push("--json".into());
        let mut child = weft()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn weft listen");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        wait_until("the listener subscribed", || {
            self.stats().listeners > before
        });
        ListenProc { child, lines }
    }

    /// Sends SIGINT (or another signal name) to the node.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the node to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait node") {
                return status;
            }
            assert!(Instant::now() < deadline, "the node did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the node's process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait node").is_none()
    }

    /// Kills the node at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `weft listen --json`, collecting its lines.
pub struct ListenProc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl ListenProc {
    pub fn deliveries(&self) -> Vec<DeliveryReport> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    pub fn wait_for(&self, count: usize) -> Vec<DeliveryReport> {
        wait_until(&format!("{count} deliveries"), || {
            self.lines.lock().unwrap().len() >= count
        });
        self.deliveries()
    }
}

impl Drop for ListenProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh temporary folder and a network name unique to the test.
pub fn scratch(test: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("weft-e2e")
        .tempdir()
        .expect("tempdir");
    (dir, format!("{test}-{}", std::process::id()))
}

/// The holders (node ids, hex) whose records a Chord get of the tracker key `key` (hex)
/// through `node` returns (SPEC.md §20.9).
pub fn tracker_holders(node: &NodeProc, key: &str) -> Vec<String> {
    let out = node.command("get", &["--hex", key]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            weft_engine::protocol::HolderRecord::decode(&weft_drivers::report::unhex(line.trim())?)
        })
        .map(|r| weft_drivers::report::hex_id(&r.holder))
        .collect()
}
