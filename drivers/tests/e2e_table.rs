//! `weft table set/get/delete/release/list` against real `weft node` processes: writes reach
//! every node, a write to a key another node leases is refused with one line and exit 1, and
//! a node that joins later catches up through anti-entropy.

mod common;

use common::{ok, run, scratch, wait_until, NodeProc};
use weft_drivers::report::TableEntryReport;

fn list(node: &NodeProc) -> Vec<TableEntryReport> {
    serde_json::from_str(&ok(&node.table("list", &["--json"]))).expect("list JSON")
}

#[test]
fn table_commands_against_running_nodes() {
    let (dir, net) = scratch("table");
    let mut nodes: Vec<NodeProc> = Vec::new();
    for (i, driver) in ["mio", "tokio", "mio"].iter().enumerate() {
        let peers: Vec<&str> = nodes.last().map(|n| n.addr.as_str()).into_iter().collect();
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
    for i in 1..3 {
        wait_until("the line links", || nodes[i].links_to(&ids[i - 1]));
    }

    ok(&nodes[0].table("set", &["colour", "blue"]));
    wait_until("n2 sees colour", || {
        nodes[2].table_get("colour").as_deref() == Some("blue")
    });

    // n1 leases "leader"; n2's write is refused at once, with one line and exit 1.
    ok(&nodes[1].table("set", &["leader", "n1", "--lease-ms", "60000"]));
    wait_until("n2 sees the lease", || {
        list(&nodes[2])
            .iter()
            .any(|e| e.key == "leader" && e.lease_owner.as_deref() == Some(&ids[1]))
    });
    let refused = nodes[2].table("set", &["leader", "n2"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.starts_with("weft: refused: the key is leased by"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    assert_eq!(nodes[2].table("delete", &["leader"]).status.code(), Some(1));
    assert_eq!(nodes[0].table_get("leader").as_deref(), Some("n1"));
    // The owner releases it; then n2 may write.
    ok(&nodes[1].table("release", &["leader"]));
    wait_until("n2 sees the release", || {
        list(&nodes[2])
            .iter()
            .any(|e| e.key == "leader" && e.lease_owner.is_none())
    });
    ok(&nodes[2].table("set", &["leader", "n2"]));
    wait_until("n0 sees n2's write", || {
        nodes[0].table_get("leader").as_deref() == Some("n2")
    });

    // Deletes reach every node; a missing key is one line and exit 1.
    ok(&nodes[2].table("delete", &["colour"]));
    wait_until("n0 loses colour", || nodes[0].table_get("colour").is_none());
    let missing = nodes[0].table("get", &["colour"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim_end(),
        "weft: no such key"
    );

    // A node joining later catches up through anti-entropy, not the flood.
    for k in 0..20 {
        ok(&nodes[0].table("set", &[&format!("k{k}"), &format!("v{k}")]));
    }
    wait_until("n2 holds all", || list(&nodes[2]).len() == 21);
    let late = NodeProc::start(
        dir.path(),
        &net,
        "n3",
        "tokio",
        "127.0.0.1:0",
        &[&nodes[2].addr],
    );
    wait_until("n3 catches up", || list(&late).len() == 21);
    let text = ok(&late.table("list", &[]));
    assert!(text.contains("k7=v7\n"), "{text}");
    assert!(text.contains("leader=n2\n"), "{text}");

    // Bad arguments: one line, exit 2 (clap) or 1 (the node's limits).
    let bad = run(&["table", "set", "--name", &net, "k"]);
    assert_eq!(bad.status.code(), Some(2));
    let long_key = "x".repeat(300);
    let too_long = nodes[0].table("set", &[&long_key, "v"]);
    assert_eq!(too_long.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&too_long.stderr).contains("table key of 300 bytes"));
}

#[test]
fn a_restarted_node_reloads_its_table_from_its_state_folder() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, net) = scratch("table-restart");
    // Stored by one driver, loaded by the other: the store is the same.
    for (first, second) in [("mio", "tokio"), ("tokio", "mio")] {
        let name = format!("{first}-then-{second}");
        let mut node = NodeProc::start(dir.path(), &net, &name, first, "127.0.0.1:0", &[]);
        ok(&node.table("set", &["colour", first]));
        // A shutdown stores the changed table (SIGTERM: exit 143 after BYE).
        node.signal("TERM");
        assert_eq!(node.wait_exit().code(), Some(143), "{}", node.log_text());
        let store = node.state.join("store.redb");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store), 0o600);
        assert_eq!(mode(&node.state), 0o700);
        drop(node);
        let again = NodeProc::start(dir.path(), &net, &name, second, "127.0.0.1:0", &[]);
        wait_until("the table is loaded", || {
            again.table_get("colour").is_some()
        });
        assert_eq!(again.table_get("colour").as_deref(), Some(first));
    }
}

/// `table_list` with bounds (as the web page asks): the first keys only, each value cut to
/// so many bytes with its length given.
#[test]
fn a_bounded_table_list_holds_the_first_keys_and_cut_values() {
    use weft_drivers::control::{request, ControlReply, ControlRequest};
    let (dir, net) = scratch("table-bounded");
    let a = NodeProc::start(dir.path(), &net, "a", "mio", "127.0.0.1:0", &[]);
    for (k, v) in [("a", "1234567890"), ("b", "xy"), ("c", "z")] {
        ok(&a.table("set", &[k, v]));
    }
    let socket = weft_drivers::state::socket_path(&a.state);
    let bounded = ControlRequest::TableList {
        entries_max: Some(2),
        value_bytes_max: Some(4),
    };
    let Ok(ControlReply::Table(entries)) = request(&socket, &bounded) else {
        panic!("table_list answered");
    };
    let seen: Vec<(&str, Option<&str>, Option<u64>)> = entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_deref(), e.value_bytes))
        .collect();
    assert_eq!(
        seen,
        [("a", Some("1234"), Some(10)), ("b", Some("xy"), None)]
    );
    assert_eq!(list(&a).len(), 3, "unbounded: every key");
}
