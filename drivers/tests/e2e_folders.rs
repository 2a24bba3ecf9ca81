//! Shared folders end to end: `weft create`, `weft join` and `weft start` as real processes on
//! 127.0.0.1, replicating real folders (SPEC.md §22), bounded in time.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{fails_with, ok, run, scratch, NodeProc};

/// How long a folder may take to converge.
const CONVERGE: Duration = Duration::from_secs(60);

/// Deterministic bytes that do not repeat (so no block is shared by accident).
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut counter = 0u64;
    while out.len() < n {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&counter.to_le_bytes());
        out.extend_from_slice(h.finalize().as_bytes());
        counter += 1;
    }
    out.truncate(n);
    out
}

/// Every file, directory and symlink under `root` but the reserved `.weft`: path → what it
/// holds (a file's blake3 and mode, `dir`, or a link's target).
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if rel == ".weft" {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            use std::os::unix::fs::PermissionsExt;
            let mode = (meta.permissions().mode() >> 6) & 7;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap_or_default();
                out.insert(rel, format!("-> {}", target.display()));
            } else if meta.is_dir() {
                out.insert(rel, format!("dir {mode}"));
                walk(root, &path, out);
            } else {
                let data = fs::read(&path).unwrap_or_default();
                out.insert(rel, format!("{} {mode}", blake3::hash(&data).to_hex()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Waits until every folder in `dirs` holds what `dirs[0]` holds, and that is `expect` (if
/// given).
fn converge(dirs: &[&Path], what: &str, nodes: &[&NodeProc]) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let first = tree(dirs[0]);
        if dirs[1..].iter().all(|d| tree(d) == first) {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(|n| n.log_text()).collect();
            let trees: Vec<_> = dirs.iter().map(|d| tree(d)).collect();
            panic!(
                "{what}: the folders did not converge in {CONVERGE:?}:\n{trees:#?}\nlogs:\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `weft create|join ...` as a node process (it prints the node's line, like `weft
/// node`).
fn folder_node(command: &[&str], net: &str, state: PathBuf, log: PathBuf) -> NodeProc {
    NodeProc::start_args(net, state, log, command, &[("RUST_LOG", "info")])
}

fn create(dir: &Path, net: &str, name: &str, shared: &Path, driver: &str) -> NodeProc {
    let state = dir.join(name);
    let (s, d) = (state.display().to_string(), shared.display().to_string());
    let args = [
        "create",
        "--name",
        net,
        "--state",
        &s,
        "--dir",
        &d,
        "--listen",
        "127.0.0.1:0",
        "--driver",
        driver,
    ];
    folder_node(&args, net, state.clone(), dir.join(format!("{name}.log")))
}

fn join(dir: &Path, net: &str, name: &str, shared: &Path, peer: &str, driver: &str) -> NodeProc {
    let state = dir.join(name);
    let (s, d) = (state.display().to_string(), shared.display().to_string());
    let args = [
        "join",
        "--name",
        net,
        "--state",
        &s,
        "--dir",
        &d,
        "--peer",
        peer,
        "--listen",
        "127.0.0.1:0",
        "--driver",
        driver,
    ];
    folder_node(&args, net, state.clone(), dir.join(format!("{name}.log")))
}

/// Puts `data` at `path` with an mtime in the past (so the scanner takes it as settled).
fn put(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("parent");
    }
    fs::write(path, data).expect("write");
}

fn three_nodes_replicate(drivers: [&str; 3], tag: &str) {
    let (dir, net) = scratch(tag);
    let dir = dir.path();
    let (da, db, dc) = (dir.join("A"), dir.join("B"), dir.join("C"));
    // A shares what it has: a nested tree, a 20 MiB file, a symlink.
    put(&da.join("readme.txt"), b"hello\n");
    put(&da.join("src/lib/one.rs"), &bytes(3_000, 1));
    put(&da.join("src/lib/two.rs"), &bytes(70_000, 2));
    put(&da.join("big.bin"), &bytes(20 << 20, 3));
    std::os::unix::fs::symlink("readme.txt", da.join("link")).expect("symlink");
    let a = create(dir, &net, "a", &da, drivers[0]);
    let b = join(dir, &net, "b", &db, &a.addr, drivers[1]);
    let c = join(dir, &net, "c", &dc, &b.addr, drivers[2]);
    let nodes = [&a, &b, &c];
    converge(&[&da, &db, &dc], "the first sync", &nodes);
    assert_eq!(tree(&db).len(), 7, "{:#?}", tree(&db));
    // The config files create and join wrote are owner-only (one may hold the secret).
    for node in nodes {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(node.state.join("config.toml"))
            .expect("config.toml")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", node.state.display());
    }

    // Changes at B and C: an edit, a new file, a rename, a delete.
    put(&db.join("readme.txt"), b"hello, edited at B\n");
    put(&dc.join("src/new.txt"), &bytes(5_000, 4));
    fs::rename(db.join("src/lib/two.rs"), db.join("src/two-renamed.rs")).expect("rename");
    fs::remove_file(dc.join("src/lib/one.rs")).expect("remove");
    converge(&[&da, &db, &dc], "the changes", &nodes);
    let t = tree(&da);
    assert!(
        t.contains_key("src/new.txt") && t.contains_key("src/two-renamed.rs"),
        "{t:#?}"
    );
    assert!(
        !t.contains_key("src/lib/one.rs") && !t.contains_key("src/lib/two.rs"),
        "{t:#?}"
    );
    assert_eq!(
        fs::read(da.join("readme.txt")).expect("read"),
        b"hello, edited at B\n"
    );
    // No temporary file is left behind.
    for d in [&da, &db, &dc] {
        let temps = fs::read_dir(d.join(".weft/tmp"))
            .map(|r| r.count())
            .unwrap_or(0);
        assert_eq!(temps, 0, "temporary files left in {}", d.display());
    }
}

#[test]
fn three_mio_nodes_replicate_a_folder() {
    three_nodes_replicate(["mio", "mio", "mio"], "folders-mio");
}

#[test]
fn three_tokio_nodes_replicate_a_folder() {
    three_nodes_replicate(["tokio", "tokio", "tokio"], "folders-tokio");
}

#[test]
fn mixed_drivers_replicate_a_folder() {
    three_nodes_replicate(["mio", "tokio", "mio"], "folders-mixed");
}

#[test]
fn join_into_a_folder_with_files_fails_at_once() {
    let (dir, net) = scratch("folders-join-nonempty");
    let dir = dir.path();
    let shared = dir.join("has-files");
    put(&shared.join("mine.txt"), b"keep me");
    let state = dir.join("s").display().to_string();
    let d = shared.display().to_string();
    let out = run(&[
        "join",
        "--name",
        &net,
        "--state",
        &state,
        "--dir",
        &d,
        "--peer",
        "127.0.0.1:9",
    ]);
    fails_with(&out, 1, "not empty");
    assert_eq!(fs::read(shared.join("mine.txt")).expect("kept"), b"keep me");
    assert!(
        !shared.join(".weft").exists(),
        "nothing written into the folder"
    );
}

#[test]
fn join_through_a_node_of_another_network_fails_and_leaves_nothing_behind() {
    let (dir, net) = scratch("folders-join-wrong-network");
    let dir = dir.path();
    let da = dir.join("a-files");
    put(&da.join("f.txt"), b"from a");
    let a = create(dir, &net, "a", &da, "mio");
    let (db, state) = (dir.join("b-files"), dir.join("b"));
    let (d, s) = (db.display().to_string(), state.display().to_string());
    for detach in [false, true] {
        let mut args = vec![
            "join",
            "--name",
            "not-the-network",
            "--state",
            &s,
            "--dir",
            &d,
            "--peer",
            &a.addr,
            "--listen",
            "127.0.0.1:0",
        ];
        if detach {
            args.push("--detach");
        }
        let out = run(&args);
        // In the foreground the node logs to stderr first; its error is the last line.
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert_eq!(out.status.code(), Some(1), "detach {detach}: {err}");
        assert!(
            last.starts_with("weft: cannot join through") && last.contains("another network"),
            "detach {detach}: {err}"
        );
        assert!(
            !state.exists(),
            "detach {detach}: the state folder is taken back"
        );
        assert!(
            !db.exists(),
            "detach {detach}: the folder join made is taken back"
        );
    }
    // The same join with the network's name works: nothing was left in its way.
    let b = join(dir, &net, "b", &db, &a.addr, "tokio");
    converge(&[&da, &db], "the join", &[&a, &b]);
}

/// A join stopped by SIGINT or SIGTERM while it waits for its first link takes back what it
/// set up, as a join that cannot link does (it was left half set up: the same join then said
/// the machine belonged to the network already), and exits with the signal's code.
#[test]
fn a_join_stopped_before_it_links_leaves_nothing_behind() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let (dir, net) = scratch("folders-join-stopped");
    let dir = dir.path();
    // A port nothing listens on: the join keeps redialing it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let (db, state) = (dir.join("b-files"), dir.join("b"));
    let (d, s) = (db.display().to_string(), state.display().to_string());
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let mut child = common::weft()
            .args([
                "join",
                "--name",
                &net,
                "--state",
                &s,
                "--dir",
                &d,
                "--peer",
                &closed,
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start weft join");
        // Its node is up once it prints its line.
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the node's line");
        assert!(line.contains("listening on"), "{line}");
        assert!(state.exists() && db.join(".weft").exists(), "set up");
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let out = child.wait_with_output().expect("weft join ends");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "SIG{signal}: {err}");
        assert!(
            err.lines()
                .last()
                .unwrap_or_default()
                .contains("before it joined the network"),
            "SIG{signal}: {err}"
        );
        assert!(
            !state.exists(),
            "SIG{signal}: the state folder is taken back"
        );
        assert!(
            !db.exists(),
            "SIG{signal}: the folder the join made is taken back"
        );
    }
}

#[test]
fn a_create_whose_node_cannot_start_leaves_nothing_behind() {
    let (dir, net) = scratch("folders-create-fails");
    let dir = dir.path();
    let shared = dir.join("mine");
    put(&shared.join("keep.txt"), b"keep me");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let busy = taken.local_addr().expect("its address").to_string();
    let state = dir.join("s");
    let (s, d) = (state.display().to_string(), shared.display().to_string());
    for detach in [false, true] {
        let mut args = vec![
            "create", "--name", &net, "--state", &s, "--dir", &d, "--listen", &busy,
        ];
        if detach {
            args.push("--detach");
        }
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "detach {detach}: {err}");
        assert!(err.contains("cannot listen"), "detach {detach}: {err}");
        assert!(
            !state.exists(),
            "detach {detach}: the state folder is taken back"
        );
        assert!(
            !shared.join(".weft").exists(),
            "detach {detach}: .weft is taken back"
        );
        assert_eq!(fs::read(shared.join("keep.txt")).expect("kept"), b"keep me");
    }
    drop(taken);
    // The same folder shares once the port is free.
    let a = create(dir, &net, "a", &shared, "mio");
    assert!(shared.join(".weft/folder").exists(), "{}", a.log_text());
}

/// Waits until `node`'s `weft status` lists `path` (its folder's first scan found it).
fn wait_for_status_path(node: &NodeProc, what: &str, path: &str) {
    wait_for(what, &[node], || {
        String::from_utf8_lossy(&node.command("status", &[]).stdout).contains(path)
    });
}

/// Runs `weft leave` (with `--delete` if `delete`) for `node`'s network, asserts it exits 0,
/// and returns what it printed.
fn leave_ok(net: &str, node: &NodeProc, delete: bool) -> String {
    let state = node.state.display().to_string();
    let mut args = vec!["leave", "--name", net, "--state", &state];
    if delete {
        args.push("--delete");
    }
    let out = run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `done` holds; panics after [`CONVERGE`] with the nodes' logs.
fn wait_for(what: &str, nodes: &[&NodeProc], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONVERGE;
    while !done() {
        if Instant::now() > deadline {
            let logs: Vec<String> = nodes.iter().map(|n| n.log_text()).collect();
            panic!(
                "{what}: not within {CONVERGE:?}; logs:\n{}",
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `dir`'s tree, less what is at or under `left_out`.
fn tree_without(dir: &Path, left_out: &str) -> BTreeMap<String, String> {
    let mut t = tree(dir);
    t.retain(|p, _| p != left_out && !p.starts_with(&format!("{left_out}/")));
    t
}

#[test]
fn weftignore_keeps_ignored_paths_at_home_until_the_rule_goes() {
    let (dir, net) = scratch("folders-ignore");
    let dir = dir.path();
    let (da, db) = (dir.join("A"), dir.join("B"));
    put(&da.join(".weftignore"), b"*.log\nbuild/\n");
    put(&da.join("keep.txt"), b"keep");
    put(&da.join("debug.log"), b"a log at A");
    put(&da.join("build/out.bin"), &bytes(5_000, 9));
    let a = create(dir, &net, "a", &da, "mio");
    let b = join(dir, &net, "b", &db, &a.addr, "tokio");
    let nodes = [&a, &b];
    wait_for("the first sync", &nodes, || {
        let t = tree(&db);
        t.contains_key("keep.txt") && t.contains_key(".weftignore")
    });
    // B reads the rules it received: its own ignored files stay at B.
    put(&db.join("local.log"), b"a log at B");
    put(&db.join("later.txt"), b"later");
    wait_for("a file B made", &nodes, || {
        tree(&da).contains_key("later.txt")
    });
    let (ta, tb) = (tree(&da), tree(&db));
    assert!(!ta.contains_key("local.log"), "{ta:#?}");
    assert!(
        !tb.contains_key("debug.log") && !tb.contains_key("build"),
        "{tb:#?}"
    );
    // The rule for logs goes at A: A's log goes to B, and B's to A; build/ stays at A.
    put(&da.join(".weftignore"), b"build/\n");
    wait_for("the logs after the rule's end", &nodes, || {
        tree_without(&da, "build") == tree(&db)
    });
    let t = tree(&db);
    assert!(
        t.contains_key("debug.log") && t.contains_key("local.log"),
        "{t:#?}"
    );
}

/// A directory a peer deleted that holds only files a `(?d)` rule ignores goes, those files
/// with it; one that holds a file ignored without `(?d)` stays (its removal failing).
#[test]
fn a_deleted_directory_takes_its_deletable_ignored_files_with_it() {
    let (dir, net) = scratch("folders-deletable");
    let dir = dir.path();
    let (da, db) = (dir.join("A"), dir.join("B"));
    put(&da.join(".weftignore"), b"(?d)*.pyc\n*.log\n");
    put(&da.join("pkg/m.py"), b"print(1)");
    put(&da.join("other/o.py"), b"print(2)");
    let a = create(dir, &net, "a", &da, "mio");
    let b = join(dir, &net, "b", &db, &a.addr, "tokio");
    let nodes = [&a, &b];
    wait_for("the first sync", &nodes, || {
        let t = tree(&db);
        t.contains_key("pkg/m.py") && t.contains_key("other/o.py") && t.contains_key(".weftignore")
    });
    // B reads the rules it received before it makes what they ignore.
    wait_for("B's rules", &nodes, || {
        b.log_text().contains(".weftignore: 2 rules in force")
    });
    // B makes what its rules ignore: a deletable one in pkg, a kept one in other.
    put(&db.join("pkg/m.pyc"), b"compiled at B");
    put(&db.join("other/run.log"), b"a log at B");
    fs::remove_dir_all(da.join("pkg")).unwrap();
    fs::remove_dir_all(da.join("other")).unwrap();
    wait_for("pkg gone at B", &nodes, || !db.join("pkg").exists());
    let t = tree(&db);
    assert!(!t.keys().any(|k| k.starts_with("pkg")), "{t:#?}");
    assert!(
        t.contains_key("other/run.log"),
        "a file ignored without (?d) stays: {t:#?}"
    );
    assert!(!t.contains_key("other/o.py"), "{t:#?}");
}

/// The web page asks for each folder's first paths only (and every path not synced): the
/// report says how many there are in all; `weft status` gets every path.
#[test]
fn a_bounded_status_gives_the_first_paths_and_the_count() {
    use weft_drivers::control::{request, ControlReply, ControlRequest};
    let (dir, net) = scratch("folders-bounded");
    let dir = dir.path();
    let da = dir.join("A");
    for n in 1..=6 {
        put(
            &da.join(format!("f{n}.txt")),
            format!("file {n}").as_bytes(),
        );
    }
    let a = create(dir, &net, "a", &da, "mio");
    wait_for_status_path(&a, "the first scan", "f6.txt");
    let socket = weft_drivers::state::socket_path(&a.state);
    let status = |files_max| match request(&socket, &ControlRequest::Status { files_max }) {
        Ok(ControlReply::Folders(f)) => f,
        other => panic!("{other:?}"),
    };
    let bounded = status(Some(2));
    let paths: Vec<&str> = bounded[0].files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["f1.txt", "f2.txt"]);
    assert_eq!(bounded[0].files_total, Some(6));
    let whole = status(None);
    assert_eq!(whole[0].files.len(), 6);
    assert_eq!(whole[0].files_total, None);
}

/// Runs `weft start` for the node whose state is `state`.
fn start(dir: &Path, net: &str, name: &str) -> NodeProc {
    let state = dir.join(name);
    let s = state.display().to_string();
    let args = ["start", "--name", net, "--state", &s];
    folder_node(
        &args,
        net,
        state.clone(),
        dir.join(format!("{name}-again.log")),
    )
}

/// `weft join` without `--listen` listens on an ephemeral port of the interface it reaches
/// its peer through, saves it, and `weft start` (after a SIGKILL) listens there again.
#[test]
fn a_join_without_listen_saves_its_port_and_start_reuses_it() {
    let (dir, net) = scratch("folders-port");
    let dir = dir.path();
    let (da, db) = (dir.join("A"), dir.join("B"));
    put(&da.join("a.txt"), b"from a");
    let a = create(dir, &net, "a", &da, "mio");
    let state = dir.join("b");
    let (s, d) = (state.display().to_string(), db.display().to_string());
    let args = [
        "join", "--name", &net, "--state", &s, "--dir", &d, "--peer", &a.addr,
    ];
    let mut b = folder_node(&args, &net, state.clone(), dir.join("b.log"));
    let (host, port) = b.addr.rsplit_once(':').expect("host:port");
    assert_eq!(host, "127.0.0.1", "the interface toward the peer");
    assert_ne!(port, "0");
    converge(&[&da, &db], "after the join", &[&a, &b]);
    let first = b.addr.clone();
    b.kill();
    drop(b);
    let b = start(dir, &net, "b");
    assert_eq!(b.addr, first, "the saved port, again");
    put(&db.join("b.txt"), b"from b");
    converge(&[&da, &db], "after weft start", &[&a, &b]);
}

/// Bytes in the temporary files of the folder at `root`.
fn temp_bytes(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(root.join(".weft/tmp"))
        .map(|r| {
            r.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_node_killed_mid_transfer_finishes_after_weft_start() {
    let (dir, net) = scratch("folders-kill");
    let dir = dir.path();
    let (da, db) = (dir.join("A"), dir.join("B"));
    put(&da.join("huge.bin"), &bytes(96 << 20, 7));
    put(&da.join("small.txt"), b"small");
    let a = create(dir, &net, "a", &da, "mio");
    let mut b = join(dir, &net, "b", &db, &a.addr, "tokio");
    // Kill B once part of the big file is written, and before it is all there.
    let deadline = Instant::now() + CONVERGE;
    while temp_bytes(&db) < (8 << 20) {
        assert!(
            Instant::now() < deadline,
            "B never started fetching: {}",
            b.log_text()
        );
        assert!(
            !db.join("huge.bin").exists(),
            "the transfer ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    b.kill();
    assert!(!db.join("huge.bin").exists(), "killed mid-transfer");
    let b = start(dir, &net, "b");
    converge(&[&da, &db], "after weft start", &[&a, &b]);
    assert_eq!(temp_bytes(&db), 0, "no stray temporary file");
    let left = fs::read_dir(db.join(".weft/tmp"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "no temporary file left");
}

/// How many files the first scan in `log` hashed (`scanned N files in M ms (H hashed, …`).
fn first_scan_hashed(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(": scanned "))?;
    let after = line.split(" ms (").nth(1)?;
    after.split(' ').next()?.parse().ok()
}

/// Waits until `node`'s log shows its first scan; how many files it hashed.
fn hashed_at_start(node: &NodeProc) -> u64 {
    let mut hashed = None;
    wait_for("the first scan", &[node], || {
        hashed = first_scan_hashed(&node.log_text());
        hashed.is_some()
    });
    hashed.unwrap_or(u64::MAX)
}

#[test]
fn files_a_node_received_are_not_hashed_again_after_a_stop_or_a_kill() {
    let (dir, net) = scratch("folders-cache");
    let dir = dir.path();
    let (da, db) = (dir.join("A"), dir.join("B"));
    for i in 0..20u64 {
        put(&da.join(format!("f{i}.bin")), &bytes(10_000, 100 + i));
    }
    let a = create(dir, &net, "a", &da, "mio");
    let mut b = join(dir, &net, "b", &db, &a.addr, "tokio");
    converge(&[&da, &db], "the first sync", &[&a, &b]);
    // A stop persists what the storage steps recorded of the files they wrote.
    b.signal("TERM");
    b.wait_exit();
    let mut b = start(dir, &net, "b");
    assert_eq!(hashed_at_start(&b), 0, "{}", b.log_text());
    // So does the wait after the steps, before a kill.
    put(&da.join("late.bin"), &bytes(10_000, 200));
    converge(&[&da, &db], "a later file", &[&a, &b]);
    std::thread::sleep(Duration::from_secs(7));
    b.kill();
    let log = dir.join("b-again.log");
    fs::remove_file(&log).expect("the first restart's log");
    let b = start(dir, &net, "b");
    assert_eq!(hashed_at_start(&b), 0, "{}", b.log_text());
}

#[test]
fn trash_older_than_its_keep_time_is_pruned() {
    let (dir, net) = scratch("folders-trash");
    let dir = dir.path();
    let da = dir.join("A");
    put(&da.join("f.txt"), b"f");
    // A trash entry from 1970, and one from now (named as the drivers name them).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    put(&da.join(".weft/trash/1000-0-old.txt"), b"old");
    put(&da.join(format!(".weft/trash/{now_ms}-0-new.txt")), b"new");
    let a = create(dir, &net, "a", &da, "mio");
    wait_for("the old entry pruned", &[&a], || {
        !da.join(".weft/trash/1000-0-old.txt").exists()
    });
    assert!(da.join(format!(".weft/trash/{now_ms}-0-new.txt")).exists());
}

#[test]
fn a_peer_sending_garbage_is_dropped_and_the_folder_carries_on() {
    use std::io::{Read, Write};
    let (dir, net) = scratch("folders-garbage");
    let dir = dir.path();
    let (da, db) = (dir.join("A"), dir.join("B"));
    put(&da.join("before.txt"), b"before");
    let a = create(dir, &net, "a", &da, "mio");
    let b = join(dir, &net, "b", &db, &a.addr, "mio");
    converge(&[&da, &db], "the first sync", &[&a, &b]);
    let mut stream = std::net::TcpStream::connect(&a.addr).expect("connect");
    stream
        .set_read_timeout(Some(common::WAIT))
        .expect("timeout");
    stream.write_all(&[0xff; 300]).expect("garbage");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the node closes without answering");
    put(&da.join("after.txt"), b"after");
    converge(&[&da, &db], "after the garbage", &[&a, &b]);
    assert_eq!(fs::read(db.join("after.txt")).expect("arrived"), b"after");
}

#[test]
fn a_vanished_folder_stops_with_an_error_and_deletes_nothing_elsewhere() {
    let (dir, net) = scratch("folders-vanish");
    let dir = dir.path();
    let (da, db) = (dir.join("A"), dir.join("B"));
    put(&da.join("keep/one.txt"), b"one");
    put(&da.join("two.txt"), b"two");
    let a = create(dir, &net, "a", &da, "mio");
    let b = join(dir, &net, "b", &db, &a.addr, "tokio");
    converge(&[&da, &db], "the first sync", &[&a, &b]);
    let before = tree(&da);
    // B's folder goes away whole (an unmounted disk looks like this).
    fs::remove_dir_all(&db).expect("remove B's folder");
    common::wait_until("B reports its folder stopped", || {
        let out = b.command("status", &["--json"]);
        String::from_utf8_lossy(&out.stdout).contains("\"stopped\":\"")
    });
    // Give a wrongly sent delete time to arrive: none may.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(tree(&da), before, "A lost files");
    // Said, and in the exit code (3) for a script, with --json too; A's folder runs: 0.
    let out = b.command("status", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stopped: "), "{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert_eq!(b.command("status", &["--json"]).status.code(), Some(3));
    assert_eq!(a.command("status", &[]).status.code(), Some(0));
}

/// B's folder swapped for another network's (its marker names another folder), as a config
/// pointed at another network's folder or another disk mounted there would: the folder stops
/// with an error, and what it lacks is not sent as deletes.
#[test]
fn a_folder_whose_marker_names_another_folder_stops_and_deletes_nothing_elsewhere() {
    let (dir, net) = scratch("folders-foreign");
    let dir = dir.path();
    let (da, db) = (dir.join("A"), dir.join("B"));
    put(&da.join("keep/one.txt"), b"one");
    put(&da.join("two.txt"), b"two");
    let a = create(dir, &net, "a", &da, "mio");
    let b = join(dir, &net, "b", &db, &a.addr, "tokio");
    converge(&[&da, &db], "the first sync", &[&a, &b]);
    let before = tree(&da);
    let other = dir.join("other");
    put(&other.join("theirs.txt"), b"theirs");
    put(
        &other.join(".weft/folder"),
        format!("{:032x}\n", 7).as_bytes(),
    );
    fs::rename(&db, dir.join("B.away")).expect("move B's folder away");
    fs::rename(&other, &db).expect("another folder in its place");
    common::wait_until("B reports its folder stopped", || {
        let out = b.command("status", &["--json"]);
        String::from_utf8_lossy(&out.stdout).contains("names another folder")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(tree(&da), before, "A lost files");
    assert!(
        !da.join("theirs.txt").exists(),
        "the other folder's file went out"
    );
    assert_eq!(b.command("status", &[]).status.code(), Some(3));
}

/// `chattr` on `dir` (`+i`: nothing in it may be created, renamed or removed, not even by
/// root).
fn chattr(flag: &str, dir: &Path) {
    let status = std::process::Command::new("chattr")
        .arg(flag)
        .arg(dir)
        .status()
        .expect("run chattr (e2fsprogs)");
    assert!(status.success(), "chattr {flag} {}", dir.display());
}

#[test]
fn a_file_that_cannot_be_written_is_an_error_in_status_and_the_others_carry_on() {
    let (dir, net) = scratch("folders-eperm");
    let dir = dir.path();
    let (da, db) = (dir.join("A"), dir.join("B"));
    put(&da.join("locked/one.txt"), b"one");
    put(&da.join("free/two.txt"), b"two");
    let a = create(dir, &net, "a", &da, "mio");
    let b = join(dir, &net, "b", &db, &a.addr, "tokio");
    converge(&[&da, &db], "the first sync", &[&a, &b]);
    // Nothing may be written into B's `locked` any more: the next version of one.txt cannot
    // land there.
    chattr("+i", &db.join("locked"));
    put(&da.join("locked/one.txt"), b"one, edited");
    put(&da.join("free/three.txt"), b"three");
    let status = || String::from_utf8_lossy(&b.command("status", &["--json"]).stdout).into_owned();
    let waited = std::panic::catch_unwind(|| {
        common::wait_until("three.txt arrives at B", || {
            db.join("free/three.txt").exists()
        });
        common::wait_until("B reports the error", || {
            let s = status();
            s.contains("\"path\":\"locked/one.txt\"") && s.contains("\"state\":\"error\"")
        });
    });
    let text = String::from_utf8_lossy(&b.command("status", &[]).stdout).into_owned();
    chattr("-i", &db.join("locked"));
    if let Err(e) = waited {
        panic!("{e:?}: {}\n{}", status(), b.log_text());
    }
    assert!(
        text.contains("error") && text.contains("locked/one.txt"),
        "{text}"
    );
    assert_eq!(
        fs::read(db.join("free/three.txt")).expect("arrived"),
        b"three"
    );
    // Once it can be written, it lands.
    converge(&[&da, &db], "after the unlock", &[&a, &b]);
}

/// `weft leave` touches only a folder whose marker names its network: the config is a file
/// people edit, and a folder moved away may leave something else at its path. `--delete` of
/// such a path removes nothing; without it the network is forgotten and the path left alone.
#[test]
fn leave_never_removes_a_folder_that_is_not_the_networks() {
    let (dir, net) = scratch("leave-other");
    let dir = dir.path();
    let shared = dir.join("A");
    put(&shared.join("doc.txt"), b"mine\n");
    let a = create(dir, &net, "a", &shared, "mio");
    wait_for_status_path(&a, "the first scan", "doc.txt");
    ok(&a.command("shutdown", &[]));
    // The config now names another folder, with someone else's files and no marker.
    let other = dir.join("home");
    put(&other.join("precious.txt"), b"not weft's\n");
    let config = a.state.join("config.toml");
    let text = fs::read_to_string(&config).expect("the config");
    let edited = text.replace(&shared.display().to_string(), &other.display().to_string());
    assert_ne!(edited, text, "{text}");
    fs::write(&config, edited).expect("edit the config");
    let state = a.state.display().to_string();
    let out = run(&["leave", "--name", &net, "--state", &state, "--delete"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("nothing was removed"), "{said}");
    assert_eq!(
        fs::read(other.join("precious.txt")).expect("kept"),
        b"not weft's\n"
    );
    assert!(a.state.exists(), "the network is not forgotten either");
    let out = run(&["leave", "--name", &net, "--state", &state]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("left alone"), "{said}");
    assert!(!a.state.exists(), "forgotten");
    assert_eq!(
        fs::read(other.join("precious.txt")).expect("kept"),
        b"not weft's\n"
    );
    // The real folder, which the config no longer names, is untouched too.
    assert!(shared.join(".weft/folder").exists());
}

/// `weft leave` stops the node and forgets the network: the files stay, the folder is a
/// weft folder no more (a new `weft create` takes it), and the trash stays while it holds
/// anything; `--delete` removes the folder too.
#[test]
fn leave_keeps_the_files_and_the_trash_and_delete_removes_the_folder() {
    let (dir, net) = scratch("leave");
    let dir = dir.path();
    let shared = dir.join("A");
    put(&shared.join("doc.txt"), b"mine\n");
    let a = create(dir, &net, "a", &shared, "mio");
    wait_for_status_path(&a, "the first scan", "doc.txt");
    // A replaced version in the trash, as a peer's update leaves it.
    fs::write(
        shared.join(".weft/trash/1796000000000-0-doc.txt"),
        b"older\n",
    )
    .expect("write");
    let said = leave_ok(&net, &a, false);
    assert!(
        said.contains("is kept") && said.contains("1 replaced or deleted file stays"),
        "{said}"
    );
    assert!(!a.state.exists(), "the state folder is gone");
    assert_eq!(fs::read(shared.join("doc.txt")).expect("kept"), b"mine\n");
    assert!(!shared.join(".weft/folder").exists(), "no marker left");
    assert!(shared.join(".weft/trash/1796000000000-0-doc.txt").exists());
    // A weft folder no more: it can be shared again, and then left with --delete.
    let b = create(dir, &net, "b", &shared, "mio");
    wait_for_status_path(&b, "the second first scan", "doc.txt");
    // Left by a one-part relative state path, typed in the state folder's parent.
    let out = common::weft()
        .current_dir(dir)
        .args(["leave", "--name", &net, "--state", "b", "--delete"])
        .output()
        .expect("run weft leave");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!shared.exists(), "--delete removes the folder");
    assert!(!b.state.exists() && !dir.join(".b.left").exists());
}

/// A shared folder and weft's own folders are kept apart (SPEC.md §22.10): `weft create` and
/// `weft join` refuse a folder that holds weft's home or the state folder, or lies inside
/// one, and write nothing (a folder `~` would have made `~/.weft`, weft's home, its reserved
/// folder: network `tmp`'s state folder its temporary files' folder, and `weft leave` would
/// have removed every network's state). `weft leave` removes only what weft keeps in
/// `.weft`.
#[test]
fn a_folder_holding_wefts_own_is_refused_and_leave_removes_only_wefts_files() {
    let (dir, net) = scratch("folders-apart");
    let dir = dir.path();
    let home = dir.join("home");
    // Another network's state folder in weft's home.
    put(&home.join(".weft/tmp/config.toml"), b"# network tmp\n");
    put(&home.join("notes.txt"), b"mine");
    let in_home = |args: &[&str]| {
        let mut cmd = common::weft();
        cmd.env("HOME", &home).env_remove("WEFT_HOME").args(args);
        common::run_command_within(cmd, None, common::WAIT).expect("weft runs")
    };
    let at = |p: &Path| p.display().to_string();
    for (command, shared) in [
        ("create", home.clone()),
        ("create", home.join(".weft/other")),
        ("join", home.join(".weft").join(&net).join("files")),
    ] {
        let d = at(&shared);
        let mut args = vec![command, "--name", &net, "--dir", &d];
        if command == "join" {
            args.extend(["--peer", "127.0.0.1:9"]);
        }
        let out = in_home(&args);
        fails_with(&out, 2, "inside one another");
    }
    // A state folder given elsewhere does not make weft's home fair game.
    let elsewhere = at(&dir.join("elsewhere"));
    let h = at(&home);
    let out = in_home(&["create", "--name", &net, "--state", &elsewhere, "--dir", &h]);
    fails_with(&out, 2, "inside one another");
    assert!(!dir.join("elsewhere").exists());
    assert!(!home.join(".weft").join(&net).exists(), "no state folder");
    assert!(
        !home.join(".weft/folder").exists(),
        "no marker in weft's home"
    );
    assert!(!home.join(".weft/trash").exists());
    assert_eq!(
        fs::read(home.join(".weft/tmp/config.toml")).expect("kept"),
        b"# network tmp\n"
    );
    // A state folder given inside the shared folder.
    let shared = dir.join("shared");
    let (s, d) = (at(&shared.join("state")), at(&shared));
    let out = run(&["create", "--name", &net, "--state", &s, "--dir", &d]);
    fails_with(&out, 2, "inside one another");
    assert!(!shared.join("state").exists() && !shared.join(".weft").exists());

    // Leaving removes weft's own files from `.weft` and nothing else there.
    put(&shared.join("doc.txt"), b"mine\n");
    let a = create(dir, &net, "a", &shared, "mio");
    wait_for_status_path(&a, "the first scan", "doc.txt");
    put(
        &shared.join(".weft/tmp/00000000000000ff"),
        b"a temporary file",
    );
    put(&shared.join(".weft/tmp/not-weft.txt"), b"not weft's");
    let said = leave_ok(&net, &a, false);
    assert!(
        said.contains("stays: it holds what weft did not put there"),
        "{said}"
    );
    assert!(!shared.join(".weft/folder").exists(), "no marker left");
    assert!(!shared.join(".weft/trash").exists(), "the empty trash goes");
    assert!(!shared.join(".weft/tmp/00000000000000ff").exists());
    assert_eq!(
        fs::read(shared.join(".weft/tmp/not-weft.txt")).expect("kept"),
        b"not weft's"
    );
    assert_eq!(fs::read(shared.join("doc.txt")).expect("kept"), b"mine\n");
}

/// A create whose node's config is refused (exit 2: here a network secret file that is not
/// there) takes back what it set up, as one whose node cannot start does: the config as it
/// was, no `.weft`; so the same command runs once the secret is there.
#[test]
fn a_create_whose_config_is_refused_leaves_nothing_behind() {
    let (dir, net) = scratch("folders-create-refused");
    let dir = dir.path();
    let state = dir.join("s");
    let config = "secret_file = \"net.secret\"\n";
    put(&state.join("config.toml"), config.as_bytes());
    let shared = dir.join("mine");
    put(&shared.join("keep.txt"), b"keep me");
    let (s, d) = (state.display().to_string(), shared.display().to_string());
    let mut args = vec![
        "create",
        "--name",
        &net,
        "--state",
        &s,
        "--dir",
        &d,
        "--listen",
        "127.0.0.1:0",
    ];
    for detach in [false, true] {
        let mut args = args.clone();
        if detach {
            args.push("--detach");
        }
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "detach {detach}: {err}");
        assert_eq!(
            fs::read_to_string(state.join("config.toml")).expect("config"),
            config,
            "detach {detach}: the config is as it was"
        );
        assert!(
            !shared.join(".weft").exists(),
            "detach {detach}: .weft is taken back"
        );
        assert_eq!(fs::read(shared.join("keep.txt")).expect("kept"), b"keep me");
    }
    put(&state.join("net.secret"), b"correct horse battery staple\n");
    fs::set_permissions(
        state.join("net.secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    args.push("--detach");
    let out = run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shared.join(".weft/folder").exists());
    let out = run(&["shutdown", "--name", &net, "--state", &s]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `weft leave --delete` of a folder shared through a symlink deletes the folder it leads
/// to, and the link (removing the link alone left every file and the marker in place).
#[test]
fn leave_delete_through_a_symlink_deletes_the_folder_it_leads_to() {
    let (dir, net) = scratch("leave-symlink");
    let dir = dir.path();
    let real = dir.join("real");
    put(&real.join("doc.txt"), b"mine\n");
    let link = dir.join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let a = create(dir, &net, "a", &link, "mio");
    wait_for_status_path(&a, "the first scan", "doc.txt");
    leave_ok(&net, &a, true);
    assert!(!real.exists(), "the folder the link leads to is deleted");
    assert!(fs::symlink_metadata(&link).is_err(), "the link is gone");
}

/// Whatever runs, sets up or removes a network's state folder holds its lock: a create, a
/// start or a node of a state folder another process holds is refused at once, changing
/// nothing (two creates of one name at once could remove each other's state), and a leave
/// waits for the lock before it removes anything.
#[test]
fn commands_on_a_state_folder_another_process_holds_change_nothing() {
    use weft_drivers::state::StateLock;
    let (dir, net) = scratch("state-lock");
    let dir = dir.path();
    let shared = dir.join("A");
    put(&shared.join("doc.txt"), b"mine\n");
    // A fresh state folder held by another process (a create of the same name under way).
    let fresh = dir.join("fresh");
    let held = StateLock::take(&fresh).expect("the lock");
    let (s, d) = (
        fresh.display().to_string(),
        dir.join("B").display().to_string(),
    );
    let out = run(&[
        "create",
        "--name",
        &net,
        "--state",
        &s,
        "--dir",
        &d,
        "--listen",
        "127.0.0.1:0",
    ]);
    fails_with(&out, 1, "already running");
    assert!(!dir.join("B").exists(), "no folder made");
    let out = run(&[
        "node",
        "--name",
        &net,
        "--state",
        &s,
        "--listen",
        "127.0.0.1:0",
    ]);
    fails_with(&out, 1, "already running");
    let names: Vec<_> = fs::read_dir(&fresh)
        .expect("still there")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["lock"], "nothing written under the holder");
    drop(held);

    // A network set up and stopped; its state held by another process (a start under way).
    let a = create(dir, &net, "a", &shared, "mio");
    wait_for_status_path(&a, "the first scan", "doc.txt");
    ok(&a.command("shutdown", &[]));
    let state = a.state.clone();
    wait_until_free(&state);
    let held = StateLock::take(&state).expect("the lock");
    let s = state.display().to_string();
    let out = run(&["start", "--name", &net, "--state", &s]);
    fails_with(&out, 1, "already running");
    let mut leave = common::weft()
        .args(["leave", "--name", &net, "--state", &s])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("weft leave");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        state.join("config.toml").exists() && shared.join(".weft/folder").exists(),
        "leave removed the network under the lock's holder"
    );
    assert!(leave.try_wait().expect("leave").is_none(), "leave waits");
    drop(held);
    assert!(leave.wait().expect("leave").success());
    assert!(!state.exists(), "left once the lock was free");
    assert_eq!(fs::read(shared.join("doc.txt")).expect("kept"), b"mine\n");
}

/// Waits until no process holds the lock of `state` (a stopped node's process has ended).
fn wait_until_free(state: &Path) {
    let deadline = Instant::now() + CONVERGE;
    while weft_drivers::state::StateLock::take(state).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} stays locked",
            state.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `status` with `files_max` bounds every state, not the synced paths alone: conflict copies
/// (and, on a join, the paths being fetched: all of them at once) were all listed, on the
/// event loop, each time the web page asked.
#[test]
fn status_with_files_max_bounds_each_state() {
    use weft_drivers::control::{request, ControlReply, ControlRequest};
    let (dir, net) = scratch("folders-files-max");
    let dir = dir.path();
    let da = dir.join("A");
    for i in 0..20 {
        put(&da.join(format!("plain-{i:02}.txt")), b"plain");
        put(
            &da.join(format!("f{i:02}.conflict-0000abcd-1.txt")),
            b"copy",
        );
    }
    let a = create(dir, &net, "a", &da, "mio");
    let socket = weft_drivers::state::socket_path(&a.state);
    let ask = || match request(&socket, &ControlRequest::Status { files_max: Some(5) }) {
        Ok(ControlReply::Folders(f)) => f,
        other => panic!("status: {other:?}"),
    };
    wait_for("the scan", &[&a], || {
        ask().first().and_then(|f| f.files_total) == Some(40)
    });
    let folder = &ask()[0];
    let copies = folder
        .files
        .iter()
        .filter(|f| f.path.contains(".conflict-"))
        .count();
    let plain = folder.files.len() - copies;
    assert_eq!((plain, copies), (5, 5), "{:?}", folder.files);
}

/// A file whose modification time alone changed (touched; saved again unchanged) keeps its
/// record, and what is on disk is what steps at its path expect. After a restart the scanner
/// reported nothing of it (its cache agreed with the record on everything but the time), so
/// a peer's next edit expected the record's time and was refused by the disk for good.
#[test]
fn a_touched_file_takes_a_peers_edit_after_a_restart() {
    let (dir, net) = scratch("folders-touched");
    let dir = dir.path();
    let (da, db) = (dir.join("A"), dir.join("B"));
    put(&da.join("f.txt"), b"first");
    let a = create(dir, &net, "a", &da, "mio");
    let mut b = join(dir, &net, "b", &db, &a.addr, "tokio");
    converge(&[&da, &db], "the first sync", &[&a, &b]);
    let scans_with_changes = |b: &NodeProc| {
        b.log_text()
            .lines()
            .filter(|l| l.contains(": scanned ") && !l.contains("; 0 changes;"))
            .count()
    };
    let before = scans_with_changes(&b);
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(db.join("f.txt"))
        .and_then(|f| f.set_modified(an_hour_ago))
        .expect("touch f.txt");
    // Scanned (the scan after the watcher's event), its state stored, then stopped.
    wait_for("B scans the touch", &[&b], || {
        scans_with_changes(&b) > before
    });
    std::thread::sleep(Duration::from_secs(1));
    b.signal("TERM");
    b.wait_exit();
    drop(b);
    let b = start(dir, &net, "b");
    put(&da.join("f.txt"), b"second, from a peer");
    converge(&[&da, &db], "a peer's edit after the restart", &[&a, &b]);
}

/// B takes A's edit and is killed at once, well within the engine's persist delay (500 ms);
/// A deletes the file while B is down. B's restart must tell the file it committed from a
/// local edit: taken for one, it was announced as B's own version, concurrent with the
/// deletion, and the file came back on both.
#[test]
fn a_file_received_just_before_a_kill_and_deleted_meanwhile_stays_deleted() {
    let (dir, net) = scratch("folders-kill-commit");
    let dir = dir.path();
    let (da, db) = (dir.join("A"), dir.join("B"));
    put(&da.join("keep.txt"), b"keep");
    put(&da.join("f.txt"), b"first");
    let a = create(dir, &net, "a", &da, "mio");
    let mut b = join(dir, &net, "b", &db, &a.addr, "tokio");
    converge(&[&da, &db], "the first sync", &[&a, &b]);
    // B's state holds the first version.
    std::thread::sleep(Duration::from_secs(2));
    put(&da.join("f.txt"), b"second");
    let deadline = Instant::now() + CONVERGE;
    while fs::read(db.join("f.txt")).ok().as_deref() != Some(b"second".as_slice()) {
        assert!(Instant::now() < deadline, "the edit never reached B");
        std::thread::sleep(Duration::from_millis(1));
    }
    b.kill();
    fs::remove_file(da.join("f.txt")).expect("delete at A");
    wait_for("A takes the deletion", &[&a], || {
        !String::from_utf8_lossy(&a.command("status", &[]).stdout).contains("f.txt")
    });
    let b = start(dir, &net, "b");
    converge(&[&da, &db], "after B's restart", &[&a, &b]);
    // B's next scan has run (a file written now reaches A), and the file is still gone.
    put(&db.join("late.txt"), b"late");
    converge(&[&da, &db], "a later file", &[&a, &b]);
    let paths: Vec<String> = tree(&da).into_keys().collect();
    assert_eq!(paths, ["keep.txt", "late.txt"], "{}", b.log_text());
}
