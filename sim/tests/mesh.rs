//! Mesh broadcast through the in-process harness: exactly-once delivery and exact flood counts.

use weft_engine::{Config, Event};
use weft_sim::net::{self as harness, Net};

fn no_discovery(n: usize) -> Net {
    Net::with_configs(
        (1..=n as u64)
            .map(|s| {
                let mut c = harness::config(s);
                c.discovery = false;
                c
            })
            .collect(),
    )
}

/// Every node but the originator delivers each broadcast exactly once, and one broadcast costs
/// exactly 2E - N + 1 BROADCAST frames on a connected graph.
fn check_flood(n: usize, edges: &[(usize, usize)]) {
    let mut net = no_discovery(n);
    net.join(edges);
    let rounds = 3u64;
    for origin in 0..n {
        for r in 0..rounds {
            net.broadcast(origin, format!("from {origin} round {r}").as_bytes());
        }
    }
    for i in 0..n {
        let got = net.delivered(i);
        assert_eq!(got.len(), (n - 1) * rounds as usize, "node {i}");
        let mut keys: Vec<_> = got.iter().map(|(o, s, _)| (*o, *s)).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), got.len(), "node {i} delivered a duplicate");
        assert!(
            got.iter().all(|(o, _, _)| *o != net.id(i)),
            "own broadcast delivered"
        );
    }
    let e = edges.len() as u64;
    let per_broadcast = 2 * e - n as u64 + 1;
    let total = per_broadcast * rounds * n as u64;
    // The engines' counters: the links are Noise, their bytes ciphertext.
    assert_eq!(net.traffic().mesh.frames_out, total, "transmissions");
    let dups: u64 = net
        .nodes
        .iter()
        .map(|n| n.metrics().mesh.broadcast_duplicates)
        .sum();
    assert_eq!(
        dups,
        2 * (e + 1 - n as u64) * rounds * n as u64,
        "duplicates"
    );
}

#[test]
fn two_nodes() {
    check_flood(2, &[(0, 1)]);
}

#[test]
fn five_in_a_line() {
    check_flood(5, &[(0, 1), (1, 2), (2, 3), (3, 4)]);
}

#[test]
fn five_in_a_ring() {
    check_flood(5, &[(0, 1), (1, 2), (2, 3), (3, 4), (4, 0)]);
}

#[test]
fn five_fully_connected() {
    let mut edges = Vec::new();
    for a in 0..5 {
        for b in a + 1..5 {
            edges.push((a, b));
        }
    }
    check_flood(5, &edges);
}

#[test]
fn delivery_survives_one_byte_chunks() {
    let mut net = no_discovery(3);
    net.chunk = 1;
    net.join(&[(0, 1), (1, 2)]);
    net.broadcast(0, b"tiny pieces");
    assert_eq!(net.delivered(2)[0].2.as_ref(), b"tiny pieces");
}

#[test]
fn large_repetitive_broadcast_travels_compressed_and_arrives_intact() {
    let mut net = no_discovery(3);
    net.join(&[(0, 1), (1, 2)]);
    let payload = vec![b'w'; 100_000];
    net.broadcast(0, &payload);
    assert_eq!(net.delivered(2)[0].2.as_ref(), payload.as_slice());
    let sent = net.nodes[0].metrics().session.bytes_sent;
    assert!(sent < 10_000, "compressed on the wire: {sent} bytes");
}

#[test]
fn relay_to_a_peer_without_compression_gets_a_plain_copy() {
    let mut configs: Vec<Config> = (1..=3).map(harness::config).collect();
    configs[2].compression = false;
    for c in &mut configs {
        c.discovery = false;
    }
    let mut net = Net::with_configs(configs);
    net.join(&[(0, 1), (1, 2)]);
    let payload = vec![7u8; 50_000];
    net.broadcast(0, &payload);
    assert_eq!(net.delivered(2)[0].2.as_ref(), payload.as_slice());
    let into_2: u64 = net.nodes[2].metrics().session.bytes_received;
    assert!(into_2 > 50_000, "node 2 received the plain frame: {into_2}");
}

#[test]
fn a_restarted_origin_is_delivered_again_from_seq_one() {
    let mut net = no_discovery(2);
    net.join(&[(0, 1)]);
    net.broadcast(0, b"first life");
    let mut c = harness::config(1);
    c.discovery = false;
    c.incarnation = 2;
    net.restart(0, c);
    net.pump();
    net.join(&[(0, 1)]);
    let up = net.events.iter().rev().find_map(|(i, e)| match e {
        Event::PeerUp {
            restarted,
            incarnation,
            ..
        } if *i == 1 => Some((*restarted, *incarnation)),
        _ => None,
    });
    assert_eq!(up, Some((true, 2)));
    net.broadcast(0, b"second life");
    let got = net.delivered(1);
    assert_eq!(got.len(), 2);
    assert_eq!((got[1].1, got[1].2.as_ref()), (1, &b"second life"[..]));
}

#[test]
fn same_seeds_give_the_same_trace() {
    let run = || {
        let mut net = Net::new(4);
        net.join(&[(0, 1), (1, 2), (2, 3)]);
        for i in 0..4 {
            net.broadcast(i, b"x");
        }
        net.run_for(weft_engine::Duration::from_secs(30));
        net.trace.finalize()
    };
    assert_eq!(run(), run());
}
