//! The `weft` command line against real processes: clear one-line errors, and a clean
//! shutdown on SIGINT/SIGTERM/SIGHUP (exit 130, 143 and 129).

mod common;

use common::{fails_with, run, scratch, wait_until, NodeProc};

#[test]
fn commands_to_a_stopped_node_fail_clearly() {
    let (dir, net) = scratch("stopped");
    let never = dir.path().join("never-started");
    let never = never.to_str().unwrap();
    for command in ["send", "listen", "network", "stats"] {
        let mut args = vec![command, "--name", &net, "--state", never];
        if command == "send" {
            args.push("hello");
        }
        fails_with(&run(&args), 1, "no node is running");
    }
    // A node that crashed leaves its socket file behind: still a clear error.
    let mut node = NodeProc::start(dir.path(), &net, "crashed", "mio", "127.0.0.1:0", &[]);
    node.kill();
    assert!(node.state.join("control.sock").exists());
    fails_with(&node.command("send", &["hello"]), 1, "no node is running");
}

#[test]
fn wrong_arguments_fail_in_one_line() {
    let (dir, _net) = scratch("args");
    let state = dir.path().join("s");
    let state = state.to_str().unwrap();
    fails_with(&run(&["send", "hello"]), 2, "--name");
    fails_with(
        &run(&["node", "--name", "x", "--listen", "nowhere"]),
        2,
        "--listen",
    );
    fails_with(
        &run(&["node", "--name", "a/b", "--listen", "127.0.0.1:0"]),
        2,
        "--name",
    );
    fails_with(
        &run(&[
            "node",
            "--name",
            "x",
            "--listen",
            "127.0.0.1:0",
            "--driver",
            "uv",
        ]),
        2,
        "--driver",
    );
    // A port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    fails_with(
        &run(&["node", "--name", "x", "--state", state, "--listen", &addr]),
        1,
        "cannot listen",
    );
    // A second node on the same state folder.
    let first = NodeProc::start(dir.path(), "x", "s", "tokio", "127.0.0.1:0", &[]);
    fails_with(
        &run(&[
            "node",
            "--name",
            "x",
            "--state",
            state,
            "--listen",
            "127.0.0.1:0",
        ]),
        1,
        "already running",
    );
    drop(first);
}

fn shuts_down_cleanly(signal: &str, code: i32, driver: &str, other: &str) {
    let (dir, net) = scratch(&format!("{signal}-{driver}"));
    let a = NodeProc::start(dir.path(), &net, "a", other, "127.0.0.1:0", &[]);
    let mut b = NodeProc::start(dir.path(), &net, "b", driver, "127.0.0.1:0", &[&a.addr]);
    let b_id = b.id();
    wait_until("a links to b", || a.links_to(&b_id));
    b.signal(signal);
    assert_eq!(b.wait_exit().code(), Some(code));
    assert!(
        !b.state.join("control.sock").exists(),
        "the socket file is removed"
    );
    wait_until("a hears b's BYE", || {
        a.log_text().contains("PeerSaidBye(Shutdown)")
    });
    assert!(!a.links_to(&b_id));
}

#[test]
fn sigint_stops_a_mio_node_with_bye_and_exit_130() {
    shuts_down_cleanly("INT", 130, "mio", "tokio");
}

#[test]
fn sigterm_stops_a_tokio_node_with_bye_and_exit_143() {
    shuts_down_cleanly("TERM", 143, "tokio", "mio");
}

#[test]
fn sigterm_stops_a_mio_node_with_exit_143() {
    shuts_down_cleanly("TERM", 143, "mio", "tokio");
}

/// Closing the terminal a foreground node runs in (SIGHUP) stops it as SIGTERM does: BYE to
/// its peers, its state written, exit 129 (it ended it at once, without either). A node
/// started with SIGHUP ignored (`nohup`; here, when these tests run so, the node inherits
/// it) keeps running.
fn hangs_up(driver: &str, other: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & 1 == 1);
    if !ignored {
        return shuts_down_cleanly("HUP", 129, driver, other);
    }
    let (dir, net) = scratch(&format!("nohup-{driver}"));
    let mut node = NodeProc::start(dir.path(), &net, "a", driver, "127.0.0.1:0", &[]);
    node.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(node.is_running(), "under nohup SIGHUP is ignored");
    node.signal("TERM");
    assert_eq!(node.wait_exit().code(), Some(143));
}

#[test]
fn sighup_stops_a_tokio_node_with_bye_and_exit_129() {
    hangs_up("tokio", "mio");
}

#[test]
fn sighup_stops_a_mio_node_with_bye_and_exit_129() {
    hangs_up("mio", "tokio");
}

#[test]
fn stats_and_network_print_tables() {
    let (dir, net) = scratch("tables");
    let a = NodeProc::start(dir.path(), &net, "a", "mio", "127.0.0.1:0", &[]);
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[&a.addr]);
    let b_id = b.id();
    wait_until("a links to b", || a.links_to(&b_id));
    let network = String::from_utf8(a.command("network", &[]).stdout).unwrap();
    assert!(network.starts_with("NODE"), "{network}");
    assert!(
        network.contains(&b_id[..16]) && network.contains("direct"),
        "{network}"
    );
    assert!(network.contains(&b.addr), "{network}");
    let stats = String::from_utf8(a.command("stats", &[]).stdout).unwrap();
    for row in [
        "broadcasts delivered",
        "relays dropped",
        "QUEUED",
        "IN FLIGHT",
        &b_id[..16],
    ] {
        assert!(stats.contains(row), "{row:?} missing from {stats}");
    }
}
