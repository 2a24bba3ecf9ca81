//! Issue 14's driver holes, attacked with real processes on 127.0.0.1: a `listen` client that
//! never reads, clients dripping their request into the control socket, and an accept loop
//! out of descriptors.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::peer::Peer;
use common::{scratch, wait_until, NodeProc};
use weft_engine::Limits;

/// A field of /proc/PID/status, in kB.
fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Incompressible bytes.
fn noise(len: usize) -> Bytes {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Subscribes on the control socket at `socket` and never reads a byte.
fn deaf_listener(socket: &Path) -> UnixStream {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.write_all(b"{\"op\":\"listen\"}\n").unwrap();
    stream
}

#[test]
fn a_listener_that_never_reads_pins_no_more_than_its_byte_bound() {
    const BROADCASTS: usize = 160;
    // Under 1 MiB with its frame: the frame decoder's buffer for it is not rounded up to 2 MiB.
    const PAYLOAD_BYTES: usize = 960 * 1024;
    const LISTEN_QUEUE_BYTES_MAX: u64 = 8 * 1024 * 1024;
    let (dir, net) = scratch("deaf-listener");
    let node = NodeProc::start(dir.path(), &net, "node", "mio", "127.0.0.1:0", &[]);
    let mut source = Peer::connect(&node.addr, &net, 11);
    let _deaf = deaf_listener(&node.state.join("control.sock"));
    wait_until("the node counts the listener", || {
        node.stats().listeners == 1
    });
    let baseline_kb = status_kb(node.pid(), "VmHWM:");
    let payload = noise(PAYLOAD_BYTES);
    for _ in 0..BROADCASTS {
        source.broadcast(payload.clone());
    }
    // Every broadcast, or (should a rate limit hold some back) as many as the node delivers
    // before it goes quiet for a second.
    let mut stats = node.stats();
    let mut quiet_since = Instant::now();
    wait_until("the node delivered the broadcasts", || {
        let now = node.stats();
        if now.counters.broadcasts_delivered != stats.counters.broadcasts_delivered {
            quiet_since = Instant::now();
        }
        stats = now;
        let delivered = stats.counters.broadcasts_delivered;
        delivered >= BROADCASTS as u64 || (delivered > 0 && quiet_since.elapsed().as_secs() >= 1)
    });
    let delivered = stats.counters.broadcasts_delivered;
    assert!(
        delivered * PAYLOAD_BYTES as u64 > 4 * LISTEN_QUEUE_BYTES_MAX,
        "only {delivered} delivered"
    );
    // 150 MiB went to a listener that took only what fits in its socket: what exceeds its
    // byte bound is dropped for it (and counted), not held.
    let held_max = (LISTEN_QUEUE_BYTES_MAX as usize / PAYLOAD_BYTES) as u64 + 8;
    assert!(
        stats.listener_drops >= delivered - held_max,
        "{} of {delivered} dropped",
        stats.listener_drops
    );
    // The node may hold its repair store, the listener's bound and slack; were the
    // listener's deliveries kept, it would grow by 150 MiB more.
    let limits = Limits::default();
    let bound_kb =
        (limits.repair_store_bytes_max as u64 + LISTEN_QUEUE_BYTES_MAX + 48 * 1024 * 1024) / 1024;
    let grown_kb = status_kb(node.pid(), "VmHWM:").saturating_sub(baseline_kb);
    eprintln!("the node grew by {grown_kb} kB (bound {bound_kb} kB)");
    assert!(
        grown_kb < bound_kb,
        "the node grew by {grown_kb} kB (bound {bound_kb} kB)"
    );
    assert!(status_kb(node.pid(), "VmRSS:") < baseline_kb + bound_kb);
}

#[test]
fn a_listener_that_never_reads_is_dropped_after_the_write_timeout() {
    let (dir, net) = scratch("deaf-timeout");
    let node = NodeProc::start_with(
        dir.path(),
        &net,
        "node",
        "tokio",
        "127.0.0.1:0",
        &[],
        &["--control-write-timeout-ms", "1000"],
    );
    let mut source = Peer::connect(&node.addr, &net, 12);
    let deaf = deaf_listener(&node.state.join("control.sock"));
    let honest = node.listen();
    wait_until("the node counts both listeners", || {
        node.stats().listeners == 2
    });
    // Enough to fill the deaf client's socket buffers, then the writes stall.
    let payload = noise(256 * 1024);
    let started = Instant::now();
    for _ in 0..16 {
        source.broadcast(payload.clone());
    }
    wait_until("the deaf listener is dropped and logged", || {
        node.log_text().contains("dropped a listener")
    });
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "dropped after {:?}",
        started.elapsed()
    );
    source.broadcast(Bytes::from_static(b"after"));
    wait_until("the node counts one listener", || {
        node.stats().listeners == 1
    });
    // The honest listener kept every delivery.
    let got = honest.wait_for(17);
    assert_eq!(got[16].payload.as_deref(), Some("after"));
    drop(deaf);
}

#[test]
fn a_listener_that_leaves_stops_counting_without_a_broadcast() {
    let (dir, net) = scratch("listener-leaves");
    let node = NodeProc::start(dir.path(), &net, "node", "mio", "127.0.0.1:0", &[]);
    let listener = deaf_listener(&node.state.join("control.sock"));
    wait_until("the node counts the listener", || {
        node.stats().listeners == 1
    });
    // Nothing is broadcast: the count falls when the session ends, not when a delivery
    // finds its subscription gone.
    drop(listener);
    wait_until("the node counts no listener", || {
        node.stats().listeners == 0
    });
}

/// Connects to `socket` and sends one byte every `every` until `stop`; reconnects when the
/// node cuts it off. Records how long each of its connections lived.
fn dripper(socket: &Path, every: Duration, stop: &AtomicBool, lives: &Mutex<Vec<Duration>>) {
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut stream) = UnixStream::connect(socket) else {
            std::thread::sleep(every);
            continue;
        };
        let born = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            if stream.write_all(b" ").is_err() {
                lives.lock().unwrap().push(born.elapsed());
                break;
            }
            std::thread::sleep(every);
        }
    }
}

#[test]
fn dripping_control_clients_lock_no_one_out() {
    const DRIPPERS: usize = 64;
    let (dir, net) = scratch("drip");
    let node = NodeProc::start(dir.path(), &net, "node", "mio", "127.0.0.1:0", &[]);
    let socket = node.state.join("control.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let lives = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..DRIPPERS)
        .map(|_| {
            let (socket, stop, lives) = (socket.clone(), Arc::clone(&stop), Arc::clone(&lives));
            std::thread::spawn(move || dripper(&socket, Duration::from_millis(250), &stop, &lives))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // An honest query is answered at once, twice.
    for _ in 0..2 {
        let asked = Instant::now();
        let out = node.command("stats", &["--json"]);
        assert!(
            out.status.success(),
            "stats: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "{:?}",
            asked.elapsed()
        );
    }
    // No dripper holds on past the request deadline (5 s, and slack for a loaded machine),
    // however it drips.
    std::thread::sleep(Duration::from_secs(7));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let lives = lives.lock().unwrap();
    assert!(lives.len() >= DRIPPERS, "{} connections cut", lives.len());
    let longest = lives.iter().max().unwrap();
    assert!(
        *longest < Duration::from_millis(5600),
        "one lived {longest:?}"
    );
}

/// Open descriptors of `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// CPU time of `pid` so far (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); the first after the name is field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn prlimit_nofile(pid: u32, soft: &str) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
        .status()
        .expect("run prlimit");
    assert!(status.success());
}

fn accept_errors_are_logged_once_per_interval(driver: &str) {
    let (dir, net) = scratch(&format!("emfile-{driver}"));
    let node = NodeProc::start(dir.path(), &net, "node", driver, "127.0.0.1:0", &[]);
    let pid = node.pid();
    let soft_before = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            "--nofile",
            "-o",
            "SOFT",
            "--noheadings",
        ])
        .output()
        .expect("run prlimit");
    let soft_before = String::from_utf8(soft_before.stdout).unwrap();
    let soft_before = soft_before.trim().to_owned();
    prlimit_nofile(pid, &(fds(pid) + 4).to_string());
    let cpu_before = cpu_ticks(pid);
    // More connections than descriptors left, and a control client: every accept fails.
    let mut flood = Vec::new();
    for _ in 0..60 {
        flood.push(TcpStream::connect(&node.addr).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let control = UnixStream::connect(node.state.join("control.sock")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let log = node.log_text();
    let lines = log.lines().filter(|l| l.contains("accept failed")).count();
    // Some failure is logged, and soon; not one line per attempt.
    assert!((1..=3).contains(&lines), "{lines} lines:\n{log}");
    // And the loops back off rather than spin (100 ticks a second is one core).
    let cpu = cpu_ticks(pid) - cpu_before;
    assert!(cpu < 100, "{cpu} ticks of CPU in 2.7 s");
    // Once descriptors are back, the node serves again.
    drop(flood);
    drop(control);
    prlimit_nofile(pid, &soft_before);
    wait_until("the node answers", || {
        node.command("stats", &["--json"]).status.success()
    });
    // The flood's sockets wait in the backlog until accepting resumes (up to a second later);
    // each then counts against 127.0.0.1's inbound share until its end of stream is read, so
    // a peer that dials in the same batch may be refused: it dials again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let peer = loop {
        match std::panic::catch_unwind(|| Peer::connect(&node.addr, &net, 13)) {
            Ok(peer) => break peer,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(_) => panic!("no handshake after the flood:\n{}", node.log_text()),
        }
    };
    let peer_id = peer.id();
    wait_until("the node links to a new peer", || node.links_to(&peer_id));
}

#[test]
fn accept_errors_are_logged_once_per_interval_mio() {
    accept_errors_are_logged_once_per_interval("mio");
}

#[test]
fn accept_errors_are_logged_once_per_interval_tokio() {
    accept_errors_are_logged_once_per_interval("tokio");
}

/// A peer relaying a broadcast in another node's name, without that node's proof, is cut off,
/// and `weft stats` says so: in its JSON and in a REFUSED section of its text.
#[test]
fn a_forged_broadcast_disconnects_its_relay_and_shows_in_stats() {
    use weft_engine::protocol::{Broadcast, Message, NodeId};
    let (dir, net) = scratch("forged");
    let node = NodeProc::start(dir.path(), &net, "node", "tokio", "127.0.0.1:0", &[]);
    // The forger runs its link's Noise layer itself, to write a frame its node would not.
    let mut forger = Peer::connect_with_own_noise(&node.addr, &net, 14);
    let forged = Message::Broadcast(Broadcast {
        origin: NodeId([0x55; 32]),
        incarnation: 1,
        seq: 1,
        payload: b"pay me",
        proof: None,
    })
    .to_frame(false)
    .into_bytes();
    forger.write_frames(&forged);
    wait_until("the node counts the forgery", || {
        node.stats().counters.refused.broadcasts_forged == 1
    });
    assert_eq!(node.stats().counters.broadcasts_delivered, 0);
    // The close writes the BYE, then waits (up to 2 s) for the forger's end of stream.
    wait_until("the forger is disconnected", || {
        node.stats().connections.is_empty()
    });
    let text = node.command("stats", &[]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("REFUSED"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("forged broadcasts") && l.trim_end().ends_with(" 1")),
        "{text}"
    );
}

/// `--unsigned-broadcasts` networks carry broadcasts without origin proofs, and a node of the
/// other mode is refused at the handshake, never linked.
#[test]
fn unsigned_broadcast_nodes_link_only_with_their_own_mode() {
    let (dir, net) = scratch("unsigned");
    let unsigned = ["--unsigned-broadcasts"];
    let (a, b) = NodeProc::linked_pair(dir.path(), &net, &unsigned);
    assert!(a.log_text().contains("broadcasts are unsigned"));
    b.send("trusted");
    wait_until("a delivers b's broadcast", || {
        a.stats().counters.broadcasts_delivered == 1
    });
    let signed = NodeProc::start(dir.path(), &net, "signed", "mio", "127.0.0.1:0", &[&a.addr]);
    wait_until("a refuses the signed node", || {
        signed.stats().counters.connections_failed >= 1
    });
    let signed_id = signed.id();
    assert!(!a.links_to(&signed_id));
    assert!(!signed.links_to(&a.id()));
}
