//! Dialing that does not give up, against real `weft node` processes on 127.0.0.1 (SPEC.md
//! §8.10, §8.11): a `--peer` that is not up yet is redialed until it is, and a node killed
//! and restarted without `--peer` finds its network again from the peers it saved.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{run, scratch, wait_until, NodeProc};

/// A port nothing listens on now (bound, then released).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

#[test]
fn two_nodes_started_in_the_wrong_order_link_within_five_seconds() {
    let (dir, net) = scratch("wrong-order");
    let port = free_port();
    let later = format!("127.0.0.1:{port}");
    let o1 = NodeProc::start(dir.path(), &net, "o1", "mio", "127.0.0.1:0", &[&later]);
    std::thread::sleep(Duration::from_secs(2));
    let o2 = NodeProc::start(dir.path(), &net, "o2", "tokio", &later, &[]);
    let up = Instant::now();
    let o2_id = o2.id();
    wait_until("o1 links to o2", || o1.links_to(&o2_id));
    let took = up.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "linked {took:?} after o2 listened"
    );
    let counters = o1.stats().counters;
    assert!(counters.dials_failed >= 1, "{counters:?}");
    assert!(counters.connections_failed >= counters.dials_failed);
    assert!(counters.redials >= 1);
    let text = run(&[
        "stats",
        "--name",
        &net,
        "--state",
        o1.state.to_str().unwrap(),
    ]);
    let shown = String::from_utf8_lossy(&text.stdout).into_owned();
    let failed_line = shown
        .lines()
        .find(|l| l.contains("dials failed"))
        .unwrap_or_else(|| panic!("no failed dials line: {shown}"));
    assert!(!failed_line.trim_end().ends_with(" 0"), "{failed_line}");
    let log = o1.log_text();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&format!("cannot reach {later}")))
        .count();
    assert_eq!(warnings, 1, "one WARN for one reason: {log}");
    assert!(
        log.lines()
            .any(|l| l.contains("INFO") && l.contains(&format!("reached {later}"))),
        "{log}"
    );
}

#[test]
fn a_killed_node_restarted_without_peers_rejoins_and_catches_up() {
    let (dir, net) = scratch("rejoin");
    let n0 = NodeProc::start(dir.path(), &net, "n0", "mio", "127.0.0.1:0", &[]);
    let n1 = NodeProc::start(dir.path(), &net, "n1", "tokio", "127.0.0.1:0", &[&n0.addr]);
    let mut n2 = NodeProc::start(dir.path(), &net, "n2", "mio", "127.0.0.1:0", &[&n1.addr]);
    let ids: Vec<String> = [&n0, &n1, &n2].iter().map(|n| n.id()).collect();
    wait_until("the line links", || {
        n1.links_to(&ids[0]) && n2.links_to(&ids[1])
    });
    // n2 stores the peers it linked with (at most every 5 s).
    wait_until("n2 saved its peers", || {
        n2.stats().counters.known_peers_stores >= 1
    });
    n2.kill();
    let state = n2.state.clone();
    drop(n2);
    let out = n0.table("set", &["colour", "set while n2 was down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("n1 has the key", || n1.table_get("colour").is_some());

    let name = state.file_name().unwrap().to_str().unwrap().to_owned();
    let again = NodeProc::start(dir.path(), &net, &name, "mio", "127.0.0.1:0", &[]);
    assert_eq!(
        again.id(),
        ids[2],
        "the same node, from the same state folder"
    );
    wait_until("the restarted node links again", || again.links_to(&ids[1]));
    wait_until("it catches up on the table", || {
        again.table_get("colour").as_deref() == Some("set while n2 was down")
    });
}

#[test]
fn a_node_whose_key_runs_elsewhere_says_so() {
    let (dir, net) = scratch("copied-key");
    let n0 = NodeProc::start(dir.path(), &net, "n0", "mio", "127.0.0.1:0", &[]);
    let n1 = NodeProc::start(dir.path(), &net, "n1", "tokio", "127.0.0.1:0", &[&n0.addr]);
    let id = n1.id();
    wait_until("n0 links n1", || n0.links_to(&id));
    // A copy of n1's state folder, taken while it runs: the same key, and the next start
    // raises the copied incarnation past n1's.
    let copy = dir.path().join("n1-copy");
    std::fs::create_dir(&copy).unwrap();
    for file in ["key", "incarnation"] {
        std::fs::copy(n1.state.join(file), copy.join(file)).unwrap();
    }
    let twin = NodeProc::start(
        dir.path(),
        &net,
        "n1-copy",
        "mio",
        "127.0.0.1:0",
        &[&n0.addr],
    );
    assert_eq!(twin.id(), id);
    let said = format!(
        "peer {} refused this node: another node is running with this node's key",
        n0.addr
    );
    wait_until("n1 says its key runs elsewhere", || {
        n1.log_text()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains(&said))
    });
}

/// The address `node`'s peer `of` is known at, as `weft network` shows it.
fn addr_of(node: &NodeProc, of: &str) -> Option<String> {
    node.hosts()
        .into_iter()
        .find(|h| h.node == of)
        .and_then(|h| h.addr)
}

#[test]
fn a_node_on_every_interface_is_never_announced_as_unspecified() {
    let (dir, net) = scratch("announce");
    let all = NodeProc::start(dir.path(), &net, "all", "mio", "0.0.0.0:0", &[]);
    let port = all.addr.rsplit(':').next().unwrap().to_owned();
    let local = format!("127.0.0.1:{port}");
    let n1 = NodeProc::start(dir.path(), &net, "n1", "tokio", "127.0.0.1:0", &[&local]);
    let all_id = all.id();
    wait_until("n1 links the node on every interface", || {
        n1.links_to(&all_id)
    });
    assert_eq!(addr_of(&n1, &all_id).as_deref(), Some(local.as_str()));

    // With --announce, peers are told that address instead.
    let told = "127.0.0.1:9";
    let announced = NodeProc::start_with(
        dir.path(),
        &net,
        "announced",
        "mio",
        "127.0.0.1:0",
        &[&n1.addr],
        &["--announce", told],
    );
    let announced_id = announced.id();
    wait_until("n1 links the announced node", || n1.links_to(&announced_id));
    assert_eq!(addr_of(&n1, &announced_id).as_deref(), Some(told));
    for h in n1.hosts() {
        let addr = h.addr.unwrap_or_default();
        assert!(!addr.starts_with("0.0.0.0"), "{addr}");
    }

    let refused = run(&[
        "node",
        "--name",
        &net,
        "--listen",
        "127.0.0.1:0",
        "--announce",
        "0.0.0.0:7000",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--announce"), "{stderr}");
}
