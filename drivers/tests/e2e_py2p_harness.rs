//! The py2p harness alone (`common::py2p`, `tests/p2pt/py2p_peer.py`): real py2p 0.7.878 nodes
//! on 127.0.0.1, with and without compression. Two mesh nodes link and a broadcast is
//! delivered exactly once; three sync nodes (leases on) share a key and refuse a second
//! owner's write; a node started without compression sends raw frames on the wire.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::py2p::Py2pPeer;
use common::WAIT;
use serde_json::{json, Value};
use weft_engine::protocol::p2pt::{
    decode_frame, encode_frame, frame_len, receive_order, Addr, Decoded, Handshake, Method, Peers,
};

/// How long to watch for a duplicate after the first delivery.
const QUIET: Duration = Duration::from_millis(500);

/// `sha256("meshPlaintext0.7")` in py2p's base58 (the notes' p2p-today-wire.md).
const MESH_PROTOCOL_ID: &str = "EpAmyZWv9rZUKmjQgU3FTUD4GrJHvVEXizmghVBc8eGD";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn mesh_broadcast_once(compression: bool) {
    let mut a = Py2pPeer::start_with("mesh", compression);
    let mut b = Py2pPeer::start_with("mesh", compression);
    assert_eq!(a.protocol_id(), MESH_PROTOCOL_ID);
    assert_ne!(a.id(), b.id());
    b.connect("127.0.0.1", a.port()).expect("b dials a");
    assert!(a.wait_peers(1, WAIT), "a never listed b");
    assert!(b.wait_peers(1, WAIT), "b never listed a");
    assert_eq!(a.peers(), vec![b.id().to_owned()]);
    assert_eq!(b.peers(), vec![a.id().to_owned()]);
    assert_eq!(b.links(), (1, 0));
    assert_eq!(a.links(), (0, 1));

    a.send(&["hello", "p2p.today"]);
    let m = b.wait_message(WAIT).expect("b got the broadcast");
    assert_eq!(m.sender, a.id());
    assert_eq!(m.packets, vec![json!("hello"), json!("p2p.today")]);
    assert_eq!(m.flag, 0, "a broadcast");
    assert_eq!(m.id.len(), 64);
    let now = unix_now();
    assert!(m.time.abs_diff(now) < 60, "time {} vs now {now}", m.time);
    assert_eq!(b.messages_within(QUIET), vec![], "delivered once");
    assert_eq!(
        a.messages_within(Duration::ZERO),
        vec![],
        "not to its sender"
    );
    assert_eq!(a.exceptions(), Vec::<String>::new());
    assert_eq!(b.exceptions(), Vec::<String>::new());
}

#[test]
fn mesh_broadcast_is_delivered_once() {
    mesh_broadcast_once(true);
}

#[test]
fn mesh_broadcast_is_delivered_once_uncompressed() {
    mesh_broadcast_once(false);
}

fn sync_lease(compression: bool) {
    let mut a = Py2pPeer::start_with("sync1", compression);
    let mut b = Py2pPeer::start_with("sync1", compression);
    let mut c = Py2pPeer::start_with("sync1", compression);
    assert_ne!(a.protocol_id(), MESH_PROTOCOL_ID);
    assert_eq!(a.protocol_id(), b.protocol_id());
    b.connect("127.0.0.1", a.port()).expect("b dials a");
    assert!(b.wait_peers(1, WAIT), "b never listed a");
    // c dials a; a's peer list names b, and c dials b too.
    c.connect("127.0.0.1", a.port()).expect("c dials a");
    for p in [&mut a, &mut b, &mut c] {
        assert!(p.wait_peers(2, WAIT), "{} has not both others", p.port());
    }

    let v = json!("v");
    a.set("k", "v").expect("a takes the free key");
    assert!(b.wait_value("k", Some(&v), WAIT), "b never saw k");
    assert!(c.wait_value("k", Some(&v), WAIT), "c never saw k");
    let updates: Vec<Value> = b.sync_events();
    assert_eq!(updates.len(), 1, "{updates:?}");
    assert_eq!(updates[0]["ev"], "update");
    assert_eq!(updates[0]["key"], "k");
    assert_eq!(updates[0]["value"], v);
    assert_eq!(updates[0]["owner"], a.id());
    // py2p lets a write with the lease holder's timestamp (whole seconds) through when the
    // writer's id sorts lower: the lease holds from the next second on. py2p's clock is
    // `time(NULL)`, the kernel's coarse clock, a tick behind at a second's start: 100 ms more.
    let written = updates[0]["time"].as_u64().expect("a write time");
    let next = UNIX_EPOCH + Duration::from_secs(written + 1) + Duration::from_millis(100);
    while SystemTime::now() < next {
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = b.set("k", "w").expect_err("a holds the lease");
    assert!(err.starts_with("lease"), "{err}");
    let err = c.delete("k").expect_err("a holds the lease");
    assert!(err.starts_with("lease"), "{err}");
    assert_eq!(
        b.get("k"),
        Some(v.clone()),
        "the refused write changed nothing"
    );
    assert_eq!(a.get("k"), Some(v.clone()));
    assert_eq!(b.sync_events(), Vec::<Value>::new());

    a.delete("k").expect("the owner deletes");
    assert!(b.wait_value("k", None, WAIT), "b still has k");
    assert!(c.wait_value("k", None, WAIT), "c still has k");
    assert_eq!(
        c.sync_events().last().map(|e| e["ev"].clone()),
        Some(json!("delete"))
    );
    let err = b.delete("k").expect_err("nothing there");
    assert!(err.starts_with("absent"), "{err}");
    for p in [&mut a, &mut b, &mut c] {
        assert_eq!(p.exceptions(), Vec::<String>::new());
    }
}

#[test]
fn sync_key_reaches_all_and_lease_refuses_another_owner() {
    sync_lease(true);
}

#[test]
fn sync_key_reaches_all_and_lease_refuses_another_owner_uncompressed() {
    sync_lease(false);
}

/// Reads `n` frames from `s` within `WAIT`.
fn read_frames(s: &mut TcpStream, n: usize, methods: &[Method]) -> Vec<Decoded> {
    let deadline = Instant::now() + WAIT;
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.len() < n {
        assert!(Instant::now() < deadline, "got {} of {n} frames", out.len());
        match s.read(&mut chunk) {
            Ok(0) => panic!("py2p closed the link after {} frames", out.len()),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
        while let Some(len) = frame_len(&buf).expect("a frame length") {
            if buf.len() < len {
                break;
            }
            let frame: Vec<u8> = buf.drain(..len).collect();
            out.push(decode_frame(&frame, methods).expect("a py2p frame"));
        }
    }
    out
}

/// A raw link to a py2p node offering every method: its handshake and its peer list, and
/// the compression each came with.
fn handshake_and_peers(compression: bool) -> (Handshake, Decoded) {
    let peer = Py2pPeer::start_with("mesh", compression);
    let mut s = TcpStream::connect(("127.0.0.1", peer.port())).expect("dial py2p");
    let all: Vec<u64> = Method::PREFERENCE.iter().map(|m| m.code().into()).collect();
    let ours = Handshake {
        id: b"HarnessProbe".to_vec(),
        protocol_id: peer.protocol_id().as_bytes().to_vec(),
        addr: Addr {
            host: "127.0.0.1".into(),
            port: 1,
        },
        compression: all.clone(),
    };
    let now = unix_now();
    let frame = encode_frame(&ours.to_message(now).to_msgpack(), None).unwrap();
    s.write_all(&frame).unwrap();
    let frames = read_frames(&mut s, 2, &receive_order(&all));
    assert_eq!(frames[0].compression, None, "handshakes go raw");
    let theirs = Handshake::parse(&frames[0].message).expect("py2p's handshake");
    assert_eq!(theirs.id, peer.id().as_bytes());
    assert_eq!(theirs.addr.port, peer.port());
    let peers = Peers::parse(&frames[1].message).expect("py2p's peer list");
    assert_eq!(peers.0.len(), 1, "{peers:?}");
    assert_eq!(peers.0[0].1, b"HarnessProbe");
    (theirs, frames[1].clone())
}

#[test]
fn no_compression_is_raw_on_the_wire() {
    let (theirs, peers) = handshake_and_peers(true);
    assert_eq!(theirs.compression, vec![0x13, 0x11, 0x10, 0x12]);
    assert_eq!(peers.compression, Some(Method::Zlib));

    let (theirs, peers) = handshake_and_peers(false);
    assert_eq!(theirs.compression, Vec::<u64>::new());
    assert_eq!(peers.compression, None);
}
