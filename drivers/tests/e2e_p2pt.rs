//! Interop with real py2p 0.7.878 nodes (from PyPI, in the venv `.ci/py2p-venv.sh` makes) on
//! 127.0.0.1: weft nodes started with `--dialect p2p.today` relay broadcasts through mixed
//! chains both ways, each delivered once, over compressed and raw links; share a `sync1`
//! table under py2p's leases; and drop a peer that sends a corrupt checksum (SPEC.md §25.9–
//! §25.12).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::py2p::Py2pPeer;
use common::{scratch, wait_until, NodeProc, WAIT};
use serde_json::json;
use weft_engine::protocol::p2pt::{
    decode_frame, encode_frame, frame_len, ids, Addr, Handshake, MainFlag, Message, Method, SubFlag,
};

/// How long a test waits for a message that must NOT come (a duplicate).
const QUIET: Duration = Duration::from_millis(1500);

fn weft_p2pt(
    dir: &std::path::Path,
    net: &str,
    name: &str,
    driver: &str,
    extra: &[&str],
) -> NodeProc {
    let mut args = vec!["--dialect", "p2p.today"];
    args.extend(extra);
    NodeProc::start_with(dir, net, name, driver, "127.0.0.1:0", &[], &args)
}

fn port(n: &NodeProc) -> u16 {
    n.addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the node's address")
}

fn peer_ids(n: &NodeProc) -> Vec<String> {
    n.hosts().into_iter().map(|h| h.node).collect()
}

fn texts(m: &common::py2p::Py2pMessage) -> Vec<String> {
    m.packets
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A frame a [`Tap`] saw: its flags, and the method its body was compressed with (`None`: raw).
type TapFrame = (MainFlag, SubFlag, Option<Method>);

/// A TCP relay on 127.0.0.1 to `target` that copies bytes both ways unchanged and keeps what
/// each way carried, so a test sees the frames on the wire (a py2p node dials it instead of
/// the weft node). It serves every connection it accepts; its threads end with them.
struct Tap {
    port: u16,
    /// Per connection accepted: the bytes to the target, and those back to the client.
    wire: Arc<Mutex<Vec<[Vec<u8>; 2]>>>,
}

impl Tap {
    fn start(target: u16) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the tap");
        let port = listener.local_addr().expect("tap address").port();
        let wire = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::clone(&wire);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let conn = {
                    let mut conns = conns.lock().unwrap();
                    conns.push([Vec::new(), Vec::new()]);
                    conns.len() - 1
                };
                let (Ok(client_r), Ok(server_r)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                for (dir, mut src, mut dst) in [(0, client_r, server), (1, server_r, client)] {
                    let conns = Arc::clone(&conns);
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        while let Ok(n @ 1..) = src.read(&mut buf) {
                            // Kept before it is written: whatever the far end answers to it
                            // is read after it.
                            conns.lock().unwrap()[conn][dir].extend_from_slice(&buf[..n]);
                            if dst.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = dst.shutdown(Shutdown::Both);
                        let _ = src.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Tap { port, wire }
    }

    /// The whole frames each connection carried so far, to the target ([0]) and back ([1]),
    /// decoded as weft decodes them, trying every method py2p knows.
    fn frames(&self) -> Vec<[Vec<TapFrame>; 2]> {
        let conns = self.wire.lock().unwrap();
        conns
            .iter()
            .map(|dirs| {
                dirs.clone().map(|bytes| {
                    let mut out = Vec::new();
                    let mut at = 0;
                    while let Ok(Some(len)) = frame_len(&bytes[at..]) {
                        let Some(wire) = bytes.get(at..at + len) else {
                            break; // a frame still on its way
                        };
                        let d = decode_frame(wire, &Method::PREFERENCE)
                            .unwrap_or_else(|e| panic!("a frame the tap cannot decode: {e}"));
                        out.push((d.message.main_flag, d.message.sub_flag, d.compression));
                        at += len;
                    }
                    out
                })
            })
            .collect()
    }
}

/// py2p → weft → py2p and back, with the given compression at each node: the two py2p
/// nodes announce a port nothing listens on, so they cannot link to each other and every
/// message between them goes through the weft node. Each link's frames, seen through a
/// [`Tap`], are compressed where both its ends compress and raw otherwise.
fn chain_through_weft(
    driver: &str,
    weft_compresses: bool,
    p1_compresses: bool,
    p2_compresses: bool,
) {
    let (dir, net) = scratch("p2pt-chain");
    let extra: &[&str] = if weft_compresses {
        &[]
    } else {
        &["--p2pt-compression=false"]
    };
    let w = weft_p2pt(dir.path(), &net, "w", driver, extra);
    let mut p1 = Py2pPeer::start_opts("mesh", p1_compresses, Some(1));
    let mut p2 = Py2pPeer::start_opts("mesh", p2_compresses, Some(1));
    // Each py2p node dials w through a tap, which shows the frames of its link.
    let taps = [Tap::start(port(&w)), Tap::start(port(&w))];
    p1.connect("127.0.0.1", taps[0].port).expect("p1 dials w");
    p2.connect("127.0.0.1", taps[1].port).expect("p2 dials w");
    wait_until("w links p1 and p2", || peer_ids(&w).len() == 2);
    assert!(p1.wait_peers(1, WAIT) && p2.wait_peers(1, WAIT));
    let w_id = w.id();
    let links = w.stats().links;
    assert_eq!(
        links, "plaintext (p2p.today)",
        "weft stats says what protects the links"
    );
    let listen = w.listen();

    p1.send(&["from-p1"]);
    let m = p2
        .wait_message(WAIT)
        .expect("p2 gets p1's broadcast through w");
    assert_eq!(
        (m.sender.as_str(), texts(&m)),
        (p1.id(), vec!["from-p1".to_owned()])
    );
    p2.send(&["from-p2"]);
    let m = p1
        .wait_message(WAIT)
        .expect("p1 gets p2's broadcast through w");
    assert_eq!(
        (m.sender.as_str(), texts(&m)),
        (p2.id(), vec!["from-p2".to_owned()])
    );
    w.send("from-weft");
    for p in [&mut p1, &mut p2] {
        let m = p
            .wait_message(WAIT)
            .expect("a py2p node gets w's broadcast");
        assert_eq!(
            (m.sender.clone(), texts(&m)),
            (w_id.clone(), vec!["from-weft".to_owned()])
        );
    }
    let got = listen.wait_for(2);
    let from: Vec<(String, Option<String>)> = got
        .iter()
        .map(|d| (d.origin.clone(), d.payload.clone()))
        .collect();
    assert_eq!(
        from,
        vec![
            (p1.id().to_owned(), Some("from-p1".to_owned())),
            (p2.id().to_owned(), Some("from-p2".to_owned())),
        ]
    );
    // Each delivered once: nothing more comes anywhere.
    assert!(p1.messages_within(QUIET).is_empty(), "p1 got a duplicate");
    assert!(
        p2.messages_within(Duration::ZERO).is_empty(),
        "p2 got a duplicate"
    );
    assert_eq!(listen.deliveries().len(), 2, "w got a duplicate");
    // Two py2p nodes never linked: the chain held.
    assert!(!p1.peers().contains(&p2.id().to_owned()));
    // The links' compression as the wire shows it: each side's handshake raw, then, where
    // both w and the py2p node compress, every frame zlib (the first method of each side's
    // list that the other advertised), and raw where either does not.
    let handshake = (MainFlag::WHISPER, SubFlag::HANDSHAKE, None);
    for (tap, (name, p_compresses)) in taps
        .iter()
        .zip([("p1", p1_compresses), ("p2", p2_compresses)])
    {
        let method = (weft_compresses && p_compresses).then_some(Method::Zlib);
        let conns = tap.frames();
        assert_eq!(conns.len(), 1, "{name} dialed w once: {conns:?}");
        for (dir, frames) in ["to w", "from w"].iter().zip(&conns[0]) {
            assert_eq!(
                frames.first(),
                Some(&handshake),
                "{name}'s link {dir} opens with a raw handshake: {frames:?}"
            );
            assert!(
                frames.iter().any(|f| f.0 == MainFlag::BROADCAST),
                "{name}'s link {dir} carried a broadcast: {frames:?}"
            );
            for f in &frames[1..] {
                assert_eq!(f.2, method, "{name}'s link {dir}: {frames:?}");
            }
        }
    }
}

#[test]
fn broadcasts_cross_py2p_weft_py2p_once_each_compressed_mio() {
    chain_through_weft("mio", true, true, true);
}

#[test]
fn broadcasts_cross_py2p_weft_py2p_once_each_uncompressed_tokio() {
    // The weft node offers no compression; p2 none either; p1 offers py2p's list, so the
    // p1 link is raw because weft asked for raw.
    chain_through_weft("tokio", false, true, false);
}

#[test]
fn broadcasts_cross_weft_py2p_weft_once_each() {
    let (dir, net) = scratch("p2pt-chain2");
    // Both weft nodes announce a port nothing listens on: they cannot link to each other
    // through py2p's `peers` lists, so py2p relays between them.
    let w1 = weft_p2pt(
        dir.path(),
        &net,
        "w1",
        "mio",
        &["--announce", "127.0.0.1:1"],
    );
    let w2 = weft_p2pt(
        dir.path(),
        &net,
        "w2",
        "tokio",
        &["--announce", "127.0.0.1:1"],
    );
    let mut p = Py2pPeer::start("mesh");
    p.connect("127.0.0.1", port(&w1)).expect("p dials w1");
    p.connect("127.0.0.1", port(&w2)).expect("p dials w2");
    assert!(p.wait_peers(2, WAIT), "p links w1 and w2");
    wait_until("w1 and w2 link p", || {
        peer_ids(&w1) == vec![p.id().to_owned()] && peer_ids(&w2) == vec![p.id().to_owned()]
    });
    let (l1, l2) = (w1.listen(), w2.listen());
    let (id1, id2) = (w1.id(), w2.id());
    w1.send("from-w1");
    let d = l2.wait_for(1);
    assert_eq!(
        (d[0].origin.as_str(), d[0].payload.as_deref()),
        (id1.as_str(), Some("from-w1"))
    );
    w2.send("from-w2");
    let d = l1.wait_for(1);
    assert_eq!(
        (d[0].origin.as_str(), d[0].payload.as_deref()),
        (id2.as_str(), Some("from-w2"))
    );
    p.send(&["from-p"]);
    assert_eq!(l1.wait_for(2)[1].payload.as_deref(), Some("from-p"));
    assert_eq!(l2.wait_for(2)[1].payload.as_deref(), Some("from-p"));
    let at_p: Vec<Vec<String>> = (0..2)
        .map(|_| {
            texts(
                &p.wait_message(WAIT)
                    .expect("p gets the weft nodes' broadcasts"),
            )
        })
        .collect();
    assert_eq!(
        at_p,
        vec![vec!["from-w1".to_owned()], vec!["from-w2".to_owned()]]
    );
    std::thread::sleep(QUIET);
    assert_eq!(
        l1.deliveries().len(),
        2,
        "w1 got a duplicate or its own echo"
    );
    assert_eq!(
        l2.deliveries().len(),
        2,
        "w2 got a duplicate or its own echo"
    );
    assert!(
        p.messages_within(Duration::ZERO).is_empty(),
        "p got a duplicate"
    );
}

/// Waits until the Unix second changes: py2p's lease lets a write with the holder's own
/// timestamp through when the writer's id sorts lower, so a refusal is only certain a
/// second later.
fn next_second() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    };
    let start = now();
    while now() == start {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn a_sync1_table_is_shared_with_py2p_under_its_leases() {
    let (dir, net) = scratch("p2pt-sync");
    let w = weft_p2pt(dir.path(), &net, "w", "mio", &["--subnet", "sync1"]);
    let mut p = Py2pPeer::start("sync1");
    p.connect("127.0.0.1", port(&w)).expect("p dials w");
    wait_until("w links p", || peer_ids(&w).len() == 1);

    common::ok(&w.table("set", &["from-weft", "wv"]));
    assert!(
        p.wait_value("from-weft", Some(&json!("wv")), WAIT),
        "p gets weft's key"
    );
    p.set("from-py2p", "pv").expect("p sets its key");
    wait_until("w gets py2p's key", || {
        w.table_get("from-py2p").as_deref() == Some("pv")
    });

    next_second();
    // Each side's lease is refused to the other.
    let out = w.table("set", &["from-py2p", "stolen"]);
    common::fails_with(&out, 1, "leased by");
    assert!(
        p.set("from-weft", "stolen").is_err(),
        "py2p refuses weft's leased key"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(p.get("from-weft"), Some(json!("wv")));
    assert_eq!(w.table_get("from-py2p").as_deref(), Some("pv"));

    // A py2p node that joins later (raw links) catches both keys up from weft's burst.
    let mut late = Py2pPeer::start_with("sync1", false);
    late.connect("127.0.0.1", port(&w)).expect("late dials w");
    assert!(late.wait_value("from-weft", Some(&json!("wv")), WAIT));
    assert!(late.wait_value("from-py2p", Some(&json!("pv")), WAIT));

    // A weft node that joins later, through py2p only, catches both keys up from py2p's
    // burst (and from w's, once it dials w from p's `peers` list).
    let p_addr = format!("127.0.0.1:{}", p.port());
    let extra = ["--dialect", "p2p.today", "--subnet", "sync1"];
    let w2 = NodeProc::start_with(
        dir.path(),
        &net,
        "w2",
        "tokio",
        "127.0.0.1:0",
        &[&p_addr],
        &extra,
    );
    wait_until("w2 catches both keys up", || {
        w2.table_get("from-weft").as_deref() == Some("wv")
            && w2.table_get("from-py2p").as_deref() == Some("pv")
    });
    // The owner's delete reaches everyone. (py2p's table keeps no tombstones: a catch-up
    // burst still on its way when a delete lands brings the key back, so the delete waits
    // until `late` has linked to p too, through w's `peers` list.)
    assert!(late.wait_peers(3, WAIT), "late links p and w2 as well");
    wait_until("w2 links p, w and late", || peer_ids(&w2).len() == 3);
    std::thread::sleep(Duration::from_millis(300));
    common::ok(&w.table("delete", &["from-weft"]));
    assert!(
        p.wait_value("from-weft", None, WAIT),
        "p sees weft's delete"
    );
    assert!(
        late.wait_value("from-weft", None, WAIT),
        "late sees weft's delete: peers {:?}, exceptions {:?}, events {:?}, w's peers {:?}, log {}",
        late.peers(),
        late.exceptions(),
        late.sync_events(),
        peer_ids(&w),
        w.log_text()
    );
    p.delete("from-py2p").expect("p deletes its key");
    wait_until("w sees py2p's delete", || {
        w.table_get("from-py2p").is_none()
    });
}

#[test]
fn a_peer_with_a_corrupt_checksum_is_dropped_and_the_node_carries_on() {
    let (dir, net) = scratch("p2pt-corrupt");
    let w = weft_p2pt(dir.path(), &net, "w", "tokio", &[]);
    let mut p = Py2pPeer::start("mesh");
    p.connect("127.0.0.1", port(&w)).expect("p dials w");
    wait_until("w links p", || peer_ids(&w).len() == 1);

    // A py2p-dialect peer: a correct handshake, then a broadcast whose checksum is wrong.
    let mut s = TcpStream::connect(&w.addr).expect("dial w");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let me = ids::node_id("('127.0.0.1', 1)", "bad", b"peer").into_bytes();
    let hello = Handshake {
        id: me.clone(),
        protocol_id: ids::protocol_id(ids::SUBNET_MESH, ids::ENCRYPTION_PLAINTEXT).into_bytes(),
        addr: Addr {
            host: "127.0.0.1".into(),
            port: 1,
        },
        compression: vec![],
    };
    s.write_all(&encode_frame(&hello.to_message(now).to_msgpack(), None).unwrap())
        .unwrap();
    let bad_id = String::from_utf8(me.clone()).unwrap();
    wait_until("w links the bad peer", || peer_ids(&w).contains(&bad_id));
    let m = Message::new(
        MainFlag::BROADCAST,
        me,
        now,
        SubFlag::BROADCAST,
        vec!["evil".into()],
    );
    let mut wire = encode_frame(&m.to_msgpack(), None).unwrap();
    wire[4 + 3] ^= 0x01; // a byte of the checksum
    s.write_all(&wire).unwrap();
    // w closes the connection: the stream ends (after whatever w had sent).
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "w did not close the corrupt peer's connection"
        );
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => {}
        }
    }
    wait_until("w drops the bad peer only", || {
        peer_ids(&w) == vec![p.id().to_owned()]
    });
    // The message was never delivered or relayed, and w carries on with p.
    assert!(p.messages_within(Duration::from_millis(300)).is_empty());
    w.send("after");
    let m = p.wait_message(WAIT).expect("p still gets w's broadcasts");
    assert_eq!(texts(&m), vec!["after".to_owned()]);
    let log = w.log_text();
    assert!(
        log.contains("ChecksumMismatch"),
        "w's log names the fault: {log}"
    );
}
