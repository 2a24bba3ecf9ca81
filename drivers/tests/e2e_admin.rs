//! A node you can leave running, over real processes on 127.0.0.1: a failed start changes
//! nothing, `--detach` and `weft shutdown`, `weft id`, `weft connect` and `weft disconnect`,
//! the config file, `WEFT_NAME`, and a lone node's table surviving a restart (after SIGTERM
//! and after SIGKILL) in its redb store.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{fails_with, ok, run, run_within, scratch, wait_until, weft, NodeProc, WAIT};
use weft_drivers::report::IdReport;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `weft table <args...> --name NET --state DIR` against `node`.
fn table(node: &NodeProc, args: &[&str]) -> Output {
    let state = node.state.display().to_string();
    let mut all = vec!["table"];
    all.extend(args);
    all.extend(["--name", &node.net, "--state", &state]);
    run(&all)
}

fn id_of(node: &NodeProc) -> IdReport {
    serde_json::from_str(&ok(&node.command("id", &["--json"]))).expect("id JSON")
}

/// Every file in `dir` with its bytes, to compare before and after.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_failed_start_changes_nothing() {
    let (dir, net) = scratch("failed-start");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _held = std::net::TcpListener::bind(&taken);
    // A new node: no folder, no key, no incarnation left behind.
    let fresh = dir.path().join("fresh");
    let fresh_text = fresh.to_str().unwrap();
    for detach in [false, true] {
        let mut args = vec![
            "node", "--name", &net, "--state", fresh_text, "--listen", &taken,
        ];
        if detach {
            args.push("--detach");
        }
        fails_with(&run(&args), 1, "cannot listen on");
        assert!(
            !fresh.exists(),
            "the failed start created {}",
            fresh.display()
        );
    }
    // A node that ran before: its key, incarnation and store are left as they were.
    let mut node = NodeProc::start(dir.path(), &net, "old", "mio", "127.0.0.1:0", &[]);
    node.signal("TERM");
    node.wait_exit();
    let before = snapshot(&node.state);
    assert!(before.iter().any(|(p, _)| p.ends_with("incarnation")));
    assert!(before.iter().any(|(p, _)| p.ends_with("store.redb")));
    let state = node.state.display().to_string();
    for driver in ["mio", "tokio"] {
        fails_with(
            &run(&[
                "node", "--name", &net, "--state", &state, "--listen", &taken, "--driver", driver,
            ]),
            1,
            "cannot listen on",
        );
        assert!(snapshot(&node.state) == before, "a failed start wrote");
    }
}

#[test]
fn the_state_files_of_an_older_weft_are_imported_into_the_store() {
    let (dir, net) = scratch("import");
    // A node of today's weft keeps its table...
    let mut node = NodeProc::start(dir.path(), &net, "new", "mio", "127.0.0.1:0", &[]);
    ok(&table(&node, &["set", "colour", "green"]));
    node.signal("TERM");
    node.wait_exit();
    let store = weft_drivers::storage::Store::open_existing(&node.state)
        .unwrap()
        .expect("a store");
    let blob = store.load("table").unwrap().expect("the table was stored");
    drop(store);
    // ...as an older weft kept it: a key, an incarnation and one file per blob in state/.
    let old = dir.path().join("old");
    std::fs::create_dir_all(old.join("state")).unwrap();
    std::fs::write(old.join("state/table"), &blob).unwrap();
    for file in ["key", "incarnation"] {
        std::fs::copy(node.state.join(file), old.join(file)).unwrap();
    }
    let key_mode = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(old.join("key"), key_mode).unwrap();
    let mut upgraded = NodeProc::start(dir.path(), &net, "old", "tokio", "127.0.0.1:0", &[]);
    let out = table(&upgraded, &["get", "colour"]);
    assert!(ok(&out).contains("green"), "{}", upgraded.log_text());
    assert!(upgraded.log_text().contains("imported 1 state blob(s)"));
    // Once: later writes are the store's, and the old file is left as it was.
    ok(&table(&upgraded, &["set", "colour", "red"]));
    upgraded.signal("TERM");
    upgraded.wait_exit();
    let again = NodeProc::start(dir.path(), &net, "old", "mio", "127.0.0.1:0", &[]);
    assert!(ok(&table(&again, &["get", "colour"])).contains("red"));
    assert!(!again.log_text().contains("imported"));
    assert_eq!(std::fs::read(old.join("state/table")).unwrap(), blob);
}

#[test]
fn a_state_path_that_is_a_file_is_not_a_folder() {
    let (dir, net) = scratch("state-file");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let path = file.to_str().unwrap();
    let out = run(&[
        "node",
        "--name",
        &net,
        "--state",
        path,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(stderr(&out), format!("weft: {path}: not a folder\n"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn a_damaged_store_stops_the_node_and_is_left_untouched() {
    let (dir, net) = scratch("damaged");
    let mut node = NodeProc::start(dir.path(), &net, "d", "mio", "127.0.0.1:0", &[]);
    node.kill();
    let store = node.state.join("store.redb");
    let mut bytes = std::fs::read(&store).unwrap();
    bytes[..16].copy_from_slice(b"not a redb file!");
    std::fs::write(&store, &bytes).unwrap();
    let state = node.state.display().to_string();
    let out = run(&[
        "node",
        "--name",
        &net,
        "--state",
        &state,
        "--listen",
        "127.0.0.1:0",
    ]);
    fails_with(&out, 1, &format!("{}: damaged store: ", store.display()));
    assert!(stderr(&out).trim_end().ends_with("; left untouched"));
    assert!(
        std::fs::read(&store).unwrap() == bytes,
        "the store was written"
    );
}

/// Runs `weft node ... --detach` and returns its line.
fn detach(net: &str, state: &Path, extra: &[&str]) -> String {
    let state = state.display().to_string();
    let mut args = vec![
        "node",
        "--name",
        net,
        "--state",
        &state,
        "--listen",
        "127.0.0.1:0",
        "--detach",
    ];
    args.extend(extra);
    let started = Instant::now();
    let out = run(&args);
    assert!(started.elapsed() < WAIT);
    ok(&out)
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A detached node, shut down when dropped.
struct Detached {
    net: String,
    state: PathBuf,
}

impl Drop for Detached {
    fn drop(&mut self) {
        let state = self.state.display().to_string();
        let _ = run(&["shutdown", "--name", &self.net, "--state", &state]);
    }
}

#[test]
fn detach_starts_in_the_background_and_shutdown_stops_it() {
    let (dir, net) = scratch("detach");
    let state = dir.path().join("bg");
    let guard = Detached {
        net: net.clone(),
        state: state.clone(),
    };
    let line = detach(&net, &state, &["--driver", "tokio"]);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with("weft node "), "{line}");
    assert!(
        line.contains(&format!(" of {net}: listening on 127.0.0.1:")),
        "{line}"
    );
    let state_text = state.display().to_string();
    let net_args = ["--name", net.as_str(), "--state", state_text.as_str()];
    let id: IdReport =
        serde_json::from_str(&ok(&run(&[&["id", "--json"][..], &net_args].concat())))
            .expect("id JSON");
    assert!(line.contains(&id.node), "{line}");
    assert!(line.contains(&format!("pid {}", id.pid)), "{line}");
    assert_eq!(id.driver, "tokio");
    assert!(state.join("node.log").is_file());
    // A second start on the same folder is refused.
    let again = run(&[
        "node",
        "--name",
        &net,
        "--state",
        &state_text,
        "--listen",
        "127.0.0.1:0",
        "--detach",
    ]);
    fails_with(&again, 1, "already running");
    // `weft shutdown` returns once the node has exited.
    let out = run(&[&["shutdown"][..], &net_args].concat());
    assert!(ok(&out).contains(&format!("stopped (pid {})", id.pid)));
    assert!(exited(id.pid), "pid {} still runs", id.pid);
    assert!(!state.join("control.sock").exists());
    let log = std::fs::read_to_string(state.join("node.log")).unwrap();
    assert!(log.contains("shutting down"), "{log}");
    fails_with(
        &run(&[&["id"][..], &net_args].concat()),
        1,
        "no node is running",
    );
    fails_with(
        &run(&[&["shutdown"][..], &net_args].concat()),
        1,
        "no node is running",
    );
    // It starts again in the background, on the same folder, with a new incarnation.
    detach(&net, &state, &[]);
    let id2: IdReport =
        serde_json::from_str(&ok(&run(&[&["id", "--json"][..], &net_args].concat()))).unwrap();
    assert_eq!((id2.node, id2.incarnation), (id.node, id.incarnation + 1));
    drop(guard);
    wait_until("the node stopped", || exited(id2.pid));
}

#[test]
fn id_shows_who_the_node_is_and_what_it_holds() {
    let (dir, net) = scratch("id");
    let a = NodeProc::start_with(
        dir.path(),
        &net,
        "a",
        "mio",
        "127.0.0.1:0",
        &[],
        &["--chord"],
    );
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[&a.addr]);
    let b_id = b.id();
    wait_until("a links to b", || a.links_to(&b_id));
    ok(&table(&a, &["set", "colour", "blue"]));
    ok(&table(&a, &["set", "shape", "round"]));
    let id = id_of(&a);
    assert_eq!(id.node, a.id());
    assert_eq!(id.network, net);
    assert_eq!(id.listen_addr.as_deref(), Some(a.addr.as_str()));
    assert_eq!(id.incarnation, 1);
    assert_eq!(id.peers_direct, 1);
    assert_eq!(id.table_keys, 2);
    let ring = id.chord.as_ref().expect("a runs Chord");
    assert_eq!(ring.position, id.node[..16]);
    assert!(id_of(&b).chord.is_none());
    let text = ok(&a.command("id", &[]));
    for expected in [
        format!("node         {}", id.node),
        format!("network      {net}"),
        format!("listening    {}", a.addr),
        "peers        1 direct".to_owned(),
        format!("chord        position {}", ring.position),
        "table        2 keys".to_owned(),
        "Chord records held".to_owned(),
    ] {
        assert!(text.contains(&expected), "{expected:?} in\n{text}");
    }
    assert!(text.lines().count() <= 24, "one screen:\n{text}");
}

#[test]
fn connect_links_two_nodes_and_disconnect_unlinks_them() {
    let (dir, net) = scratch("connect");
    let a = NodeProc::start(dir.path(), &net, "a", "mio", "127.0.0.1:0", &[]);
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[]);
    let (a_id, b_id) = (a.id(), b.id());
    assert!(!a.links_to(&b_id));
    let out = a.command("connect", &[&b.addr]);
    assert_eq!(ok(&out), format!("dialing {}\n", b.addr));
    wait_until("a links to b", || a.links_to(&b_id) && b.links_to(&a_id));
    // The start of the id, as `weft network` prints it.
    let out = a.command("disconnect", &[&b_id[..16]]);
    assert_eq!(ok(&out), format!("disconnected {b_id}\n"));
    wait_until("a and b unlink", || {
        !a.links_to(&b_id) && !b.links_to(&a_id)
    });
    let log = a.log_text();
    assert!(
        log.contains(&format!("peer down {}: Requested", &b_id[..16])),
        "{log}"
    );
    // It stays unlinked: neither a's discovery nor b's dials bring the link back.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(
            !a.links_to(&b_id) && !b.links_to(&a_id),
            "relinked after disconnect"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Until a dials b on purpose.
    ok(&a.command("connect", &[&b.addr]));
    wait_until("a links to b again", || {
        a.links_to(&b_id) && b.links_to(&a_id)
    });
    fails_with(&a.command("disconnect", &["ffff0000"]), 1, "no known node");
    fails_with(
        &a.command("disconnect", &["xyz"]),
        2,
        "not the start of a node id",
    );
    fails_with(&a.command("connect", &["nowhere"]), 2, "HOST:PORT");
}

fn write_config(state: &Path, text: &str) {
    std::fs::create_dir_all(state).unwrap();
    std::fs::write(state.join("config.toml"), text).unwrap();
}

#[test]
fn the_config_file_gives_defaults_that_flags_override() {
    let (dir, net) = scratch("config");
    let state = dir.path().join("c");
    let state_text = state.display().to_string();
    write_config(
        &state,
        "listen = \"127.0.0.1:0\"\ndriver = \"tokio\"\nchord = true\n",
    );
    let log = dir.path().join("c.log");
    let args = ["node", "--name", &net, "--state", &state_text];
    let node = NodeProc::start_args(&net, state.clone(), log.clone(), &args, &[]);
    let id = id_of(&node);
    assert_eq!(id.driver, "tokio");
    assert!(id.chord.is_some());
    drop(node);
    // Flags override the file.
    let args = [
        "node",
        "--name",
        &net,
        "--state",
        &state_text,
        "--driver",
        "mio",
        "--chord=false",
    ];
    let node = NodeProc::start_args(&net, state.clone(), log, &args, &[]);
    let id = id_of(&node);
    assert_eq!(id.driver, "mio");
    assert!(id.chord.is_none());
    drop(node);
    // Bad files: one line naming the file and the key, exit 2, nothing started.
    let config = state.join("config.toml");
    for (text, expected) in [
        ("lisen = \"127.0.0.1:0\"\n", "unknown key `lisen`"),
        (
            "listen = \"127.0.0.1:0\"\ndriver = \"epoll\"\n",
            "key `driver`",
        ),
        ("listen = 7\n", "key `listen`"),
        ("listen = [\n", "line 1"),
    ] {
        write_config(&state, text);
        let line = format!("{}: {expected}", config.display());
        fails_with(&run(&args), 2, &line);
        // So do the commands that read the file before they start a node.
        let dir = dir.path().join("shared").display().to_string();
        let net_args = ["--name", &net, "--state", &state_text, "--dir", &dir];
        let create = [&["create"], &net_args[..]].concat();
        fails_with(&run(&create), 2, &line);
        let join = [&["join", "--peer", "127.0.0.1:9"], &net_args[..]].concat();
        fails_with(&run(&join), 2, &line);
        fails_with(
            &run(&["start", "--name", &net, "--state", &state_text]),
            2,
            &line,
        );
    }
    // A key of the p2p.today dialect in a weft network's file, as its flag would be.
    write_config(&state, "listen = \"127.0.0.1:0\"\nsubnet = \"sync1\"\n");
    let line = format!("{}: `subnet` and `p2pt_compression` need", config.display());
    fails_with(&run(&args), 2, &line);
    // No listen address anywhere.
    write_config(&state, "chord = true\n");
    fails_with(
        &run(&["node", "--name", &net, "--state", &state_text]),
        2,
        "no listen address",
    );
}

#[test]
fn weft_name_chooses_the_network() {
    let (dir, net) = scratch("weft-name");
    let home = dir.path().join("home");
    let log = dir.path().join("n.log");
    let envs = [
        ("WEFT_NAME", net.as_str()),
        ("WEFT_HOME", home.to_str().unwrap()),
    ];
    let node = NodeProc::start_args(
        &net,
        home.join(&net),
        log,
        &["node", "--listen", "127.0.0.1:0"],
        &envs,
    );
    let mut id = weft();
    let out = id
        .args(["id", "--json"])
        .envs(envs)
        .output()
        .expect("weft id");
    let report: IdReport = serde_json::from_slice(&ok(&out).into_bytes()).unwrap();
    assert_eq!(report.network, net);
    assert_eq!(report.node, node.id());
    // --name still wins.
    let out = weft()
        .args(["id", "--name", "other-net"])
        .envs(envs)
        .output()
        .expect("weft id");
    fails_with(&out, 1, "no node is running");
}

/// Starts a lone node on `state` whose log shows its stores.
fn lone(dir: &Path, net: &str, name: &str, driver: &str) -> NodeProc {
    let state = dir.join(name);
    let state_text = state.display().to_string();
    let args = [
        "node",
        "--name",
        net,
        "--state",
        &state_text,
        "--listen",
        "127.0.0.1:0",
        "--driver",
        driver,
    ];
    let log = dir.join(format!("{name}-{}.log", std::process::id()));
    let envs = [("RUST_LOG", "info,weft_drivers=debug")];
    NodeProc::start_args(net, state, log, &args, &envs)
}

/// A state folder that holds a store but lost its key file (deleted by hand, or a `weft
/// leave` killed partway before its removal became one step) is refused with one line: a
/// new identity over it would take the old node's records, counters and peers.
#[test]
fn a_state_folder_with_a_store_and_no_key_is_refused() {
    let (dir, net) = scratch("keyless");
    let mut node = lone(dir.path(), &net, "n", "mio");
    let state = node.state.clone();
    let id = id_of(&node).node;
    node.signal("TERM");
    assert_eq!(node.wait_exit().code(), Some(143));
    drop(node);
    let key = state.join("key");
    let saved = std::fs::read(&key).expect("the key file");
    std::fs::remove_file(&key).expect("remove the key");
    let state_text = state.display().to_string();
    let out = run_within(
        &[
            "node",
            "--name",
            &net,
            "--state",
            &state_text,
            "--listen",
            "127.0.0.1:0",
        ],
        None,
        Duration::from_secs(20),
    );
    fails_with(&out, 1, "holds a store but no key file");
    assert!(!key.exists(), "no key was made");
    // With the key back, the node starts as itself.
    std::fs::write(&key, saved).expect("restore the key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("key mode");
    let again = lone(dir.path(), &net, "n", "mio");
    assert_eq!(id_of(&again).node, id);
    // An empty store file (a first start killed as it made the store, by a weft that made
    // the store before the key) holds no state: the start goes on.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).expect("a state folder");
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o700)).expect("mode");
    std::fs::write(fresh.join("store.redb"), b"").expect("an empty store file");
    let started = lone(dir.path(), &net, "fresh", "mio");
    assert_ne!(id_of(&started).node, id);
}

#[test]
fn a_lone_nodes_table_survives_a_restart_and_a_sigkill() {
    let (dir, net) = scratch("lone");
    for (driver, signal) in [("mio", "TERM"), ("tokio", "KILL")] {
        let name = format!("{driver}-{signal}");
        let mut node = lone(dir.path(), &net, &name, driver);
        assert_eq!(node.table_get("colour"), None);
        ok(&table(&node, &["set", "colour", driver]));
        if signal == "KILL" {
            // Once the node says the table is stored, a SIGKILL cannot lose it.
            wait_until("the table is stored", || {
                node.log_text()
                    .lines()
                    .any(|l| l.contains("storing state table") && l.ends_with(": done"))
            });
            node.kill();
        } else {
            node.signal(signal);
            assert_eq!(node.wait_exit().code(), Some(143));
        }
        drop(node);
        let again = lone(dir.path(), &net, &name, driver);
        wait_until("the table is loaded", || {
            again.table_get("colour").is_some()
        });
        assert!(again
            .table_get("colour")
            .is_some_and(|v| v.contains(driver)));
        assert_eq!(id_of(&again).incarnation, 2);
    }
}
