//! `weft conform --dialect p2p.today` (SPEC.md §25) against real py2p 0.7.878 nodes on
//! 127.0.0.1, a `MeshSocket` and a leased `SyncSocket`: every line must pass. And against a
//! small in-test p2p.today peer that breaks one rule on purpose (it relays broadcasts back to
//! their originator, or keeps a link whose frame failed its checksum): the kit must fail that
//! rule's line and exit non-zero.
//!
//! Also against weft's own p2p.today nodes (mio on mesh, tokio on sync1): every line passes.
//!
//! The py2p nodes run in the venv `.ci/py2p-venv.sh` makes (`common::py2p`, which sets it up
//! on first use; never skipped). Nothing here dials anything but 127.0.0.1, and py2p's
//! `bootstrap()` is never called.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::py2p::Py2pPeer;
use common::NodeProc;
use weft_drivers::conform::p2pt::conn::{open, Framer};
use weft_drivers::conform::p2pt::wire;
use weft_engine::protocol::p2pt::{ids, Addr, Handshake, MainFlag, Message, Peers, SubFlag};

/// How long one `weft conform` run may take before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A py2p node of `kind` (the shared harness, `common::py2p`), and where it listens.
fn py2p(kind: &str) -> (Py2pPeer, SocketAddr) {
    let node = Py2pPeer::start(kind);
    let addr = SocketAddr::from(([127, 0, 0, 1], node.port()));
    (node, addr)
}

/// A weft node of the p2p.today dialect on `subnet`, and where it listens.
fn weft_p2pt(dir: &std::path::Path, driver: &str, subnet: &str) -> (NodeProc, SocketAddr) {
    let extra = ["--dialect", "p2p.today", "--subnet", subnet];
    let node = NodeProc::start_with(dir, "conform", subnet, driver, "127.0.0.1:0", &[], &extra);
    let addr = node.addr.parse().expect("the node's address");
    (node, addr)
}

/// `weft conform --dialect p2p.today --peer ADDR ARGS…`, killed after [`RUN_LIMIT`]: its
/// status, its stdout.
fn conform(addr: SocketAddr, extra: &[&str]) -> (ExitStatus, String) {
    let peer = addr.to_string();
    let mut args = vec!["conform", "--dialect", "p2p.today", "--peer", &peer];
    args.extend(extra);
    let started = Instant::now();
    let out = common::run_within(&args, None, RUN_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "weft {} ({:.1} s):\n{stdout}{}",
        args.join(" "),
        started.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, stdout)
}

/// Asserts every section line passes (the sync table's may be skipped on a mesh node).
fn assert_all_pass(status: ExitStatus, out: &str, sections: &[&str]) {
    for section in sections {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("{section} ")))
            .unwrap_or_else(|| panic!("no line for {section} in:\n{out}"));
        assert!(line.starts_with("PASS "), "{section} did not pass: {line}");
    }
    assert!(
        out.lines()
            .all(|l| l.starts_with("PASS ") || l.starts_with("SKIP ")),
        "{out}"
    );
    assert!(status.success(), "exit {status:?}:\n{out}");
}

#[test]
fn a_py2p_mesh_node_passes_every_line() {
    let (_node, addr) = py2p("mesh");
    let (status, out) = conform(addr, &[]);
    assert_all_pass(status, &out, &["§25.2", "§25.5", "§25.9", "§25.10"]);
    assert!(
        out.contains("SKIP §25.11 Sync table"),
        "a mesh node has no sync table: {out}"
    );
    // py2p answers its own str request with its decode-failure path, noted.
    assert!(
        out.contains("renegotiate/compression [] and renegotiate/resend"),
        "{out}"
    );
}

#[test]
fn a_py2p_leased_sync_node_passes_every_line() {
    let (_node, addr) = py2p("sync1");
    let (status, out) = conform(addr, &["--subnet", "sync1", "--json"]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON report");
    assert_eq!(report["pass"], true, "{out}");
    assert_eq!(report["subnet"], "sync1");
    let sections = report["sections"].as_array().expect("sections");
    assert_eq!(sections.len(), 5, "{out}");
    for s in sections {
        assert_eq!(s["result"], "pass", "{s}");
    }
    assert_eq!(sections[4]["section"], "§25.11");
    assert_eq!(sections[4]["passed"], 3);
    assert!(status.success());
    // The kit assuming mesh against a sync node fails on the protocol id, with a hint.
    let (status, out) = conform(addr, &[]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("give --subnet sync1"), "{out}");
}

#[test]
fn weft_p2p_today_nodes_pass_every_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_mesh, addr) = weft_p2pt(dir.path(), "mio", "mesh");
    let (status, out) = conform(addr, &[]);
    assert_all_pass(status, &out, &["§25.2", "§25.5", "§25.9", "§25.10"]);
    let (_sync, addr) = weft_p2pt(dir.path(), "tokio", "sync1");
    let (status, out) = conform(addr, &["--subnet", "sync1"]);
    assert_all_pass(
        status,
        &out,
        &["§25.2", "§25.5", "§25.9", "§25.10", "§25.11"],
    );
}

/// The rule the in-test peer breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    /// It relays a broadcast to every link, its originator's too.
    EchoesBroadcasts,
    /// It keeps a link whose frame failed its checksum (and drops the frame).
    KeepsBadChecksums,
}

/// One link of the in-test peer: the kit's id, the address its handshake announced, the
/// codes it advertised, a writer, and the last whisper/broadcast sent on it.
struct PeerLink {
    id: Vec<u8>,
    addr: Option<Addr>,
    codes: Vec<u64>,
    writer: TcpStream,
    last: Option<Vec<u8>>,
}

/// A minimal p2p.today mesh peer over blocking threads, breaking one rule: it advertises no
/// compression (so every frame is raw both ways), answers handshakes, requests,
/// renegotiations and resends, and relays broadcasts by their bytes.
struct FakePeer {
    addr: SocketAddr,
}

struct Shared {
    id: Vec<u8>,
    addr: SocketAddr,
    broken: Broken,
    links: Mutex<Vec<Arc<Mutex<PeerLink>>>>,
    seen: Mutex<HashSet<Vec<u8>>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl FakePeer {
    fn start(broken: Broken) -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let protocol = ids::protocol_id(ids::SUBNET_MESH, ids::ENCRYPTION_PLAINTEXT);
        let shared = Arc::new(Shared {
            id: wire::fresh_id(addr, &protocol),
            addr,
            broken,
            links: Mutex::new(Vec::new()),
            seen: Mutex::new(HashSet::new()),
        });
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(&shared, stream));
            }
        });
        FakePeer { addr }
    }
}

fn send(link: &Mutex<PeerLink>, m: &Message) {
    let msgpack = m.to_msgpack();
    send_bytes(link, &msgpack);
}

fn send_bytes(link: &Mutex<PeerLink>, msgpack: &[u8]) {
    if let Ok(mut l) = link.lock() {
        let is_payload = matches!(msgpack.get(1), Some(0x00) | Some(0x02));
        if is_payload {
            l.last = Some(msgpack.to_vec());
        }
        let _ = l.writer.write_all(&wire::frame_bytes(msgpack, None));
    }
}

fn peers_message(shared: &Shared) -> Message {
    let list = shared
        .links
        .lock()
        .map(|links| {
            links
                .iter()
                .filter_map(|l| l.lock().ok())
                .filter_map(|l| l.addr.clone().map(|a| (a, l.id.clone())))
                .collect()
        })
        .unwrap_or_default();
    Peers(list).to_message(shared.id.clone(), now())
}

/// One connection: the handshake first, then frames until the kit closes or breaks a rule.
fn serve(shared: &Shared, stream: TcpStream) {
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let protocol = ids::protocol_id(ids::SUBNET_MESH, ids::ENCRYPTION_PLAINTEXT);
    let link = Arc::new(Mutex::new(PeerLink {
        id: Vec::new(),
        addr: None,
        codes: Vec::new(),
        writer,
        last: None,
    }));
    let ours = Handshake {
        id: shared.id.clone(),
        protocol_id: protocol.clone().into_bytes(),
        addr: Addr {
            host: shared.addr.ip().to_string(),
            port: shared.addr.port(),
        },
        compression: Vec::new(),
    };
    send(&link, &ours.to_message(now()));
    let mut reader = stream;
    let mut framer = Framer::default();
    let mut buf = [0u8; 65536];
    'read: loop {
        let n = match reader.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        loop {
            let wire_frame = match framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => break 'read,
            };
            let got = match open(&wire_frame) {
                Ok(g) => g,
                Err(_) if shared.broken == Broken::KeepsBadChecksums => continue,
                Err(_) => break 'read,
            };
            let Some(m) = got.message.clone() else {
                continue;
            };
            match (m.main_flag, m.sub_flag) {
                (MainFlag::WHISPER, SubFlag::HANDSHAKE) => {
                    let Ok(h) = Handshake::parse(&m) else {
                        break 'read;
                    };
                    if h.protocol_id != protocol.as_bytes() {
                        break 'read;
                    }
                    if let Ok(mut l) = link.lock() {
                        l.id = h.id;
                        l.addr = Some(h.addr);
                        l.codes = h.compression;
                    }
                    if let Ok(mut links) = shared.links.lock() {
                        links.push(Arc::clone(&link));
                    }
                    send(&link, &peers_message(shared));
                }
                (MainFlag::WHISPER, SubFlag::REQUEST) => {
                    // Only the bin star, as py2p (rmpv's `is_bin` takes a str too: the
                    // element's bytes tell).
                    let bin_star: &[u8] = &[0xc4, 1, b'*'];
                    let elements = got.elements().unwrap_or_default();
                    if elements.get(4) == Some(&bin_star) {
                        send(&link, &peers_message(shared));
                    }
                }
                (MainFlag::RENEGOTIATE, SubFlag::COMPRESSION) => {
                    let codes: Vec<u64> = m
                        .args
                        .first()
                        .and_then(|a| a.as_array())
                        .map(|a| a.iter().filter_map(|c| c.as_u64()).collect())
                        .unwrap_or_default();
                    let changed = link.lock().map(|l| l.codes != codes).unwrap_or(false);
                    if let Ok(mut l) = link.lock() {
                        l.codes = codes;
                    }
                    if changed {
                        // The intersection with its own list, which is empty.
                        let answer = Message::new(
                            MainFlag::RENEGOTIATE,
                            shared.id.clone(),
                            now(),
                            SubFlag::COMPRESSION,
                            vec![std::iter::empty::<u64>().collect()],
                        );
                        send(&link, &answer);
                    }
                }
                (MainFlag::RENEGOTIATE, SubFlag::RESEND) => {
                    let last = link.lock().ok().and_then(|l| l.last.clone());
                    if let Some(last) = last {
                        send_bytes(&link, &last);
                    }
                }
                (MainFlag::BROADCAST, _) => {
                    if m.timestamp + 60 < now() {
                        continue;
                    }
                    let fresh = shared
                        .seen
                        .lock()
                        .map(|mut s| s.insert(got.msgpack.clone()))
                        .unwrap_or(false);
                    if !fresh {
                        continue;
                    }
                    let links: Vec<_> = shared.links.lock().map(|l| l.clone()).unwrap_or_default();
                    for other in links {
                        let to_sender = other.lock().map(|l| l.id == m.sender).unwrap_or(true);
                        if !to_sender || shared.broken == Broken::EchoesBroadcasts {
                            send_bytes(&other, &got.msgpack);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if let Ok(mut links) = shared.links.lock() {
        links.retain(|l| !Arc::ptr_eq(l, &link));
    }
    let _ = reader.shutdown(Shutdown::Both);
}

/// The line of `section` in `out`.
fn line<'a>(out: &'a str, section: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(&format!("{section} ")))
        .unwrap_or_else(|| panic!("no line for {section} in:\n{out}"))
}

#[test]
fn a_peer_that_echoes_broadcasts_fails_the_mesh_line() {
    let peer = FakePeer::start(Broken::EchoesBroadcasts);
    let (status, out) = conform(peer.addr, &["--wait-ms", "500"]);
    let mesh = line(&out, "§25.10");
    assert!(
        mesh.starts_with("FAIL §25.10 Mesh:") && mesh.contains("back to link A"),
        "{out}"
    );
    assert_eq!(status.code(), Some(1), "{out}");
    // The rest of it is a good enough peer: the other lines pass.
    for section in ["§25.2", "§25.5", "§25.9"] {
        assert!(line(&out, section).starts_with("PASS "), "{out}");
    }
}

#[test]
fn a_peer_that_keeps_a_bad_checksum_fails_the_frame_line() {
    let peer = FakePeer::start(Broken::KeepsBadChecksums);
    let (status, out) = conform(peer.addr, &["--wait-ms", "500"]);
    let frame = line(&out, "§25.2");
    assert!(
        frame.starts_with("FAIL §25.2 Frame:") && frame.contains("still open"),
        "{out}"
    );
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(line(&out, "§25.10").starts_with("PASS "), "{out}");
}
