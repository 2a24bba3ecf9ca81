//! `weft put`, `get` and `delete` against three `weft node --chord` processes in a line: a
//! value put through one end is read through the other, then deleted.

mod common;

use common::{scratch, wait_until, NodeProc};

/// `weft table OP --name NET --state DIR EXTRA...` against `node`.
/// `n` if `line` is "`verb` on n of n replicas" with 1 ≤ n ≤ 3 (three nodes).
fn all_of(line: &str, verb: &str) -> Option<u8> {
    let rest = line.trim().strip_prefix(verb)?.strip_prefix(" on ")?;
    let (n, rest) = rest.split_once(" of ")?;
    let m = rest.strip_suffix(" replicas")?;
    let n: u8 = n.parse().ok()?;
    (m.parse::<u8>().ok()? == n && (1..=3).contains(&n)).then_some(n)
}

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
    // replicas, so put until every replica node answers. The key's five positions fall on 2
    // or 3 of the three nodes (rarely 1): "N of N", N the distinct nodes, never 5.
    wait_until("a put reaches every replica node", || {
        let out = nodes[0].command("put", &["drop/42", "held-by-n0"]);
        out.status.success() && all_of(&stdout(&out), "stored").is_some()
    });
    let out = nodes[2].command("put", &["drop/42", "held-by-n2", "--lifetime-ms", "60000"]);
    assert!(out.status.success(), "{out:?}");

    let out = nodes[2].command("get", &["drop/42"]);
    assert!(out.status.success(), "{out:?}");
    let mut values: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    values.sort();
    assert_eq!(values, ["held-by-n0", "held-by-n2"]);

    // A node deletes only its own values (they are signed by their writer): n1's delete of
    // n0's value finds nothing of its own to delete, says so and exits 1; n0's removes it.
    let out = nodes[1].command("delete", &["drop/42", "held-by-n0"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "weft: no such value"
    );
    let out = nodes[0].command("get", &["drop/42"]);
    let mut values: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    values.sort();
    assert_eq!(values, ["held-by-n0", "held-by-n2"]);
    let out = nodes[0].command("delete", &["drop/42", "held-by-n0"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        all_of(&stdout(&out), "deleted").is_some(),
        "{}",
        stdout(&out)
    );
    let out = nodes[0].command("get", &["drop/42"]);
    assert_eq!(stdout(&out).trim(), "held-by-n2");
    let out = nodes[0].command("delete", &["drop/42", "held-by-n0"]);
    assert_eq!(out.status.code(), Some(1), "deleted already: {out:?}");

    let out = nodes[1].command("get", &["no such key"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stdout(&out), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "weft: no such key"
    );
    for command in ["put", "delete"] {
        let out = nodes[1].command(command, &["", "v"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command} of an empty key: {out:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim(),
            "weft: the key must not be empty"
        );
    }
}

/// A lone Chord node reports its one replica node as such, and its records and its table
/// survive a SIGKILL: each was acknowledged only once stored.
#[test]
fn a_lone_node_reports_one_replica_and_keeps_its_records_across_a_kill() {
    let (dir, net) = scratch("e2e_chord_lone");
    let mut node = NodeProc::start_with(
        dir.path(),
        &net,
        "n0",
        "mio",
        "127.0.0.1:0",
        &[],
        &["--chord"],
    );
    let out = node.command("put", &["drop/1", "kept"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "stored on 1 of 1 replicas");
    let out = node.command("put", &["drop/2", "short", "--lifetime-ms", "600000"]);
    assert!(out.status.success(), "{out:?}");
    let out = node.table("set", &["colour", "blue"]);
    assert!(out.status.success(), "{out:?}");
    let out = node.command("delete", &["drop/1", "never-put"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = node.command("get", &["drop/3"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // No shutdown: what was acknowledged is on the disk already.
    node.kill();
    drop(node);
    let again = NodeProc::start_with(
        dir.path(),
        &net,
        "n0",
        "tokio",
        "127.0.0.1:0",
        &[],
        &["--chord"],
    );
    let out = again.command("get", &["drop/1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "kept");
    let out = again.command("get", &["drop/2"]);
    assert_eq!(stdout(&out).trim(), "short", "its lifetime is not over");
    let out = again.table("get", &["colour"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "blue");
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
