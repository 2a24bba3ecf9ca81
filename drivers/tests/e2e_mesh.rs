//! Five `weft node` processes in a line and in a ring deliver every broadcast exactly once,
//! with each driver and with both mixed.

mod common;

use std::collections::BTreeMap;

use common::{scratch, wait_until, NodeProc};

/// Broadcasts each node sends.
const ROUNDS: usize = 3;

fn exactly_once(test: &str, drivers: [&str; 5], ring: bool) {
    let (dir, net) = scratch(test);
    let mut nodes: Vec<NodeProc> = Vec::new();
    for (i, driver) in drivers.iter().enumerate() {
        let mut peers: Vec<String> = Vec::new();
        if i > 0 {
            peers.push(nodes[i - 1].addr.clone());
        }
        if ring && i == drivers.len() - 1 {
            peers.push(nodes[0].addr.clone());
        }
        let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
        nodes.push(NodeProc::start(
            dir.path(),
            &net,
            &format!("n{i}"),
            driver,
            "127.0.0.1:0",
            &peers,
        ));
    }
    let ids: Vec<String> = nodes.iter().map(NodeProc::id).collect();
    let n = nodes.len();
    let mut edges: Vec<(usize, usize)> = (1..n).map(|i| (i - 1, i)).collect();
    if ring {
        edges.push((n - 1, 0));
    }
    for &(a, b) in &edges {
        wait_until(&format!("n{a} and n{b} link"), || {
            nodes[a].links_to(&ids[b]) && nodes[b].links_to(&ids[a])
        });
    }
    let listeners: Vec<_> = nodes.iter().map(NodeProc::listen).collect();
    for (i, node) in nodes.iter().enumerate() {
        for k in 1..=ROUNDS {
            node.send(&format!("from n{i} #{k}"));
        }
    }
    let expected = (n - 1) * ROUNDS;
    for listener in &listeners {
        listener.wait_for(expected);
    }
    // Late duplicates would arrive within a few milliseconds on loopback.
    std::thread::sleep(std::time::Duration::from_millis(300));
    for (i, listener) in listeners.iter().enumerate() {
        let got = listener.deliveries();
        let mut seen: BTreeMap<(String, u64, u64), usize> = BTreeMap::new();
        for d in &got {
            *seen
                .entry((d.origin.clone(), d.incarnation, d.seq))
                .or_default() += 1;
        }
        assert_eq!(got.len(), expected, "n{i} got {got:?}");
        assert!(
            seen.values().all(|&c| c == 1),
            "n{i} got duplicates: {seen:?}"
        );
        let mut texts: Vec<String> = got.iter().filter_map(|d| d.payload.clone()).collect();
        texts.sort();
        let mut want: Vec<String> = (0..n)
            .filter(|&j| j != i)
            .flat_map(|j| (1..=ROUNDS).map(move |k| format!("from n{j} #{k}")))
            .collect();
        want.sort();
        assert_eq!(texts, want, "n{i}");
        assert!(
            got.iter().all(|d| d.origin != ids[i]),
            "n{i} got its own broadcast"
        );
    }
}

#[test]
fn line_of_five_mio_nodes_delivers_exactly_once() {
    exactly_once("line-mio", ["mio"; 5], false);
}

#[test]
fn line_of_five_tokio_nodes_delivers_exactly_once() {
    exactly_once("line-tokio", ["tokio"; 5], false);
}

#[test]
fn line_of_mixed_nodes_delivers_exactly_once() {
    exactly_once("line-mixed", ["mio", "tokio", "mio", "tokio", "mio"], false);
}

#[test]
fn ring_of_five_mio_nodes_delivers_exactly_once() {
    exactly_once("ring-mio", ["mio"; 5], true);
}

#[test]
fn ring_of_five_tokio_nodes_delivers_exactly_once() {
    exactly_once("ring-tokio", ["tokio"; 5], true);
}

#[test]
fn ring_of_mixed_nodes_delivers_exactly_once() {
    exactly_once(
        "ring-mixed",
        ["tokio", "mio", "tokio", "mio", "tokio"],
        true,
    );
}
