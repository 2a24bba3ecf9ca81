//! Faults between real processes: a restart, a peer sending garbage, a peer that never reads.

mod common;

use bytes::Bytes;
use common::peer::Peer;
use common::{scratch, wait_until, NodeProc};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use weft_engine::{Event, Limits, MeshEvent};

#[test]
fn a_killed_node_restarts_with_a_new_incarnation_and_rejoins() {
    let (dir, net) = scratch("restart");
    let a = NodeProc::start(dir.path(), &net, "a", "mio", "127.0.0.1:0", &[]);
    let c = NodeProc::start(dir.path(), &net, "c", "tokio", "127.0.0.1:0", &[]);
    let mut b = NodeProc::start(
        dir.path(),
        &net,
        "b",
        "tokio",
        "127.0.0.1:0",
        &[&a.addr, &c.addr],
    );
    let (a_id, b_id, c_id) = (a.id(), b.id(), c.id());
    wait_until("b links to a and c", || {
        a.links_to(&b_id) && c.links_to(&b_id)
    });
    let (at_a, at_c) = (a.listen(), c.listen());
    b.send("before");
    let before = at_a.wait_for(1);
    assert_eq!((before[0].incarnation, before[0].seq), (1, 1));
    at_c.wait_for(1);

    let b_addr = b.addr.clone();
    b.kill();
    wait_until("a and c see b gone", || {
        !a.links_to(&b_id) && !c.links_to(&b_id)
    });
    let b = NodeProc::start(dir.path(), &net, "b", "mio", &b_addr, &[&a.addr, &c.addr]);
    let stats = b.stats();
    assert_eq!(stats.node, b_id, "the key is kept in the state folder");
    assert_eq!(stats.incarnation, 2);
    wait_until("b links to a and c again", || {
        a.links_to(&b_id) && c.links_to(&b_id) && b.links_to(&a_id) && b.links_to(&c_id)
    });
    // The same sequence number again: only the new incarnation makes it a new broadcast.
    b.send("after");
    for listener in [&at_a, &at_c] {
        let got = listener.wait_for(2);
        assert_eq!(got[1].payload.as_deref(), Some("after"));
        assert_eq!(
            (got[1].origin.as_str(), got[1].incarnation, got[1].seq),
            (b_id.as_str(), 2, 1)
        );
    }
    assert!(
        a.log_text().contains("restarted"),
        "a logs the restart: {}",
        a.log_text()
    );
}

#[test]
fn a_peer_sending_garbage_is_dropped_and_the_others_carry_on() {
    let (dir, net) = scratch("garbage");
    let a = NodeProc::start(dir.path(), &net, "a", "mio", "127.0.0.1:0", &[]);
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[&a.addr]);
    let b_id = b.id();
    wait_until("a and b link", || a.links_to(&b_id));
    let at_b = b.listen();
    // Garbage two ways: a length no first Noise message has, and a first message of the
    // right length (an ephemeral key and a tag) that does not decrypt, as a node of another
    // network or not speaking weft at all would send.
    let mut wrong_message = vec![0x00, 48];
    wrong_message.extend_from_slice(&[0xab; 48]);
    let garbage: [(&[u8], &str); 2] = [
        (&[0xff; 256], "Noise(BadLength)"),
        (&wrong_message, "Noise(Handshake)"),
    ];
    for target in [&a, &b] {
        for (failures, (bytes, reason)) in (1..).zip(garbage) {
            let mut stream = TcpStream::connect(&target.addr).unwrap();
            stream.set_read_timeout(Some(common::WAIT)).unwrap();
            stream.write_all(bytes).unwrap();
            // The node, the handshake's responder, answers nothing and closes.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            assert!(rest.is_empty(), "{} bytes before the close", rest.len());
            wait_until("the fault is counted", || {
                target.stats().counters.connections_failed >= failures
            });
            wait_until(&format!("the close is logged as {reason}"), || {
                target.log_text().contains(reason)
            });
        }
    }
    a.send("still here");
    let got = at_b.wait_for(1);
    assert_eq!(got[0].payload.as_deref(), Some("still here"));
    assert!(a.links_to(&b_id));
}

/// Resident memory of a process, from /proc (kB).
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_peer_that_never_reads_stays_within_bounds_and_stops_no_one() {
    const BROADCASTS: usize = 1000;
    const PAYLOAD_BYTES: usize = 100 * 1024;
    let (dir, net) = scratch("stalled");
    let relay = NodeProc::start(dir.path(), &net, "relay", "mio", "127.0.0.1:0", &[]);
    let far = NodeProc::start(
        dir.path(),
        &net,
        "far",
        "tokio",
        "127.0.0.1:0",
        &[&relay.addr],
    );
    let far_id = far.id();
    wait_until("relay and far link", || relay.links_to(&far_id));
    let baseline_kb = peak_rss_kb(relay.pid());
    let stalled = Peer::connect(&relay.addr, &net, 7);
    let stalled_id = stalled.id();
    let mut source = Peer::connect(&relay.addr, &net, 8);
    // 100 MiB of incompressible broadcasts: more than every bound of the relay together.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: Vec<u8> = (0..PAYLOAD_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let noise = Bytes::from(noise);
    for _ in 0..BROADCASTS {
        source.broadcast(noise.clone());
    }
    // Far gets every broadcast the relay did not drop for it (a relay drops when a peer's
    // queue is full: far may lag behind a flood from memory, too).
    let mut stats = relay.stats();
    wait_until("far delivers what the relay sent it", || {
        stats = relay.stats();
        let to_far = stats
            .connections
            .iter()
            .find(|c| c.peer.as_deref() == Some(far_id.as_str()));
        let dropped = to_far.map_or(u64::MAX, |c| c.relays_dropped);
        far.stats().counters.broadcasts_delivered + dropped >= BROADCASTS as u64
    });
    let to_stalled = stats
        .connections
        .iter()
        .find(|c| c.peer.as_deref() == Some(stalled_id.as_str()))
        .expect("the stalled peer is still connected");
    assert!(
        to_stalled.relays_dropped > BROADCASTS as u64 / 2,
        "{to_stalled:?}"
    );
    let limits = Limits::default();
    let frame_max = (PAYLOAD_BYTES + 1024) as u64;
    assert!(to_stalled.relays_dropped > 0, "{to_stalled:?}");
    assert!(
        to_stalled.queued_bytes <= limits.relay_queue_bytes_max as u64,
        "{to_stalled:?}"
    );
    assert!(
        to_stalled.in_flight_bytes <= limits.transmit_window_bytes as u64 + frame_max,
        "{to_stalled:?}"
    );
    assert!(
        to_stalled.unwritten_bytes <= to_stalled.in_flight_bytes,
        "{to_stalled:?}"
    );
    // The relay may hold its repair store, one relay queue and one window per peer, and
    // slack; were the stalled peer's bytes kept, it would grow by 100 MiB more.
    let bound_kb = (limits.repair_store_bytes_max + 48 * 1024 * 1024) as u64 / 1024;
    let grown_kb = peak_rss_kb(relay.pid()).saturating_sub(baseline_kb);
    assert!(
        grown_kb < bound_kb,
        "relay grew by {grown_kb} kB (bound {bound_kb} kB)"
    );
    // The others carry on: broadcasts still cross the relay both ways.
    let at_far = far.listen();
    source.broadcast(Bytes::from_static(b"flood over"));
    assert_eq!(at_far.wait_for(1)[0].payload.as_deref(), Some("flood over"));
    far.send("after the flood");
    wait_until("the source hears far", || {
        source.pump_in().iter().any(|e| {
            matches!(
                e,
                Event::Mesh(MeshEvent::Broadcast { payload, .. })
                    if payload.as_ref() == b"after the flood"
            )
        })
    });
    drop(stalled);
}

#[test]
fn garbage_on_the_control_socket_is_refused_in_one_line() {
    let (dir, net) = scratch("control");
    let a = NodeProc::start(dir.path(), &net, "a", "tokio", "127.0.0.1:0", &[]);
    let mut socket = std::os::unix::net::UnixStream::connect(a.state.join("control.sock")).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.write_all(b"{\"op\":\"explode\"}\n").unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("{\"reply\":\"error\""), "{answer}");
    assert_eq!(answer.lines().count(), 1);
    assert!(a.stats().uptime_ms > 0, "the node carries on");
}
