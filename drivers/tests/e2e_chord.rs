//! `weft put`, `get` and `delete` against three `weft node --chord` processes in a line: a
//! value put through one end is read through the other, then deleted.

mod common;

use common::{scratch, wait_until, NodeProc};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn put_get_delete_across_the_ring() {
    let (dir, net) = scratch("e2e_chord");
    let mut nodes: Vec<NodeProc> = Vec::new();
    for (i, driver) in ["mio", "tokio", "mio"].iter().enumerate() {
        let peers: Vec<&str> = nodes.last().map(|n| n.addr.as_str()).into_iter().collect();
        nodes.push(NodeProc::start_with(
            dir.path(),
            &net,
            &format!("n{i}"),
            driver,
            "127.0.0.1:0",
            &peers,
            &["--chord"],
        ));
    }
    let ids: Vec<String> = nodes.iter().map(NodeProc::id).collect();
    for i in 1..nodes.len() {
        wait_until(&format!("n{} and n{i} link", i - 1), || {
            nodes[i - 1].links_to(&ids[i]) && nodes[i].links_to(&ids[i - 1])
        });
    }
    // The ring settles within a few stabilize periods; until then a put may reach fewer
    // replicas, so put until all five answer.
    wait_until("a put reaches all 5 replicas", || {
        let out = nodes[0].command("put", &["drop/42", "held-by-n0"]);
        out.status.success() && stdout(&out).trim() == "stored on 5 of 5 replicas"
    });
    let out = nodes[2].command("put", &["drop/42", "held-by-n2", "--lifetime-ms", "60000"]);
    assert!(out.status.success(), "{out:?}");

    let out = nodes[2].command("get", &["drop/42"]);
    assert!(out.status.success(), "{out:?}");
    let mut values: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    values.sort();
    assert_eq!(values, ["held-by-n0", "held-by-n2"]);

    // A node deletes only its own values (they are signed by their writer): n1's delete
    // leaves n0's value, n0's removes it.
    let out = nodes[1].command("delete", &["drop/42", "held-by-n0"]);
    assert!(out.status.success(), "{out:?}");
    let out = nodes[0].command("get", &["drop/42"]);
    let mut values: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    values.sort();
    assert_eq!(values, ["held-by-n0", "held-by-n2"]);
    let out = nodes[0].command("delete", &["drop/42", "held-by-n0"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "deleted on 5 of 5 replicas");
    let out = nodes[0].command("get", &["drop/42"]);
    assert_eq!(stdout(&out).trim(), "held-by-n2");

    let out = nodes[1].command("get", &["no such key"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
}

#[test]
fn chord_commands_need_a_chord_node() {
    let (dir, net) = scratch("e2e_chord_off");
    let node = NodeProc::start(dir.path(), &net, "n0", "mio", "127.0.0.1:0", &[]);
    let out = node.command("get", &["k"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim(), "weft: chord is not enabled on this node");
    let out = node.command("put", &["k"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing VALUE is a usage error"
    );
}
