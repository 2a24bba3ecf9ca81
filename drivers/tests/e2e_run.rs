//! `weft run` (issue 20, SPEC.md §23) over real processes on 127.0.0.1: a requester node on
//! mio, a runner on tokio started with `--allow-run --allow-run-from <requester>`. Output in
//! order on its own streams, no shell unless asked, exit codes (0, 3, 128 + 9), refusals
//! (no `--allow-run`, a node not on the allow list, an unknown peer, no node running),
//! Ctrl-C stopping the remote process and its children, and a lost link killing them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{fails_with, run, scratch, wait_until, weft, NodeProc};

/// A requester `a` (mio) and a runner `b` (tokio) linked; `b` runs with `runner_args`, given
/// `{a}` replaced by `a`'s id.
fn pair(dir: &std::path::Path, net: &str, runner_args: &[&str]) -> (NodeProc, NodeProc) {
    let a = NodeProc::start(dir, net, "a", "mio", "127.0.0.1:0", &[]);
    let a_id = a.id();
    let args: Vec<String> = runner_args
        .iter()
        .map(|s| s.replace("{a}", &a_id))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = NodeProc::start_with(dir, net, "b", "tokio", "127.0.0.1:0", &[&a.addr], &args);
    let b_id = b.id();
    wait_until("a and b link", || a.links_to(&b_id));
    (a, b)
}

fn allowed(dir: &std::path::Path, net: &str) -> (NodeProc, NodeProc) {
    pair(dir, net, &["--allow-run", "--allow-run-from", "{a}"])
}

/// `weft run --peer <prefix of peer> <args...>` through `node`, to its end.
fn weft_run(node: &NodeProc, peer: &NodeProc, args: &[&str]) -> Output {
    let state = node.state.display().to_string();
    let peer_id = peer.id();
    let mut all = vec![
        "run",
        "--name",
        &node.net,
        "--state",
        &state,
        "--peer",
        &peer_id[..12],
    ];
    all.extend(args);
    run(&all)
}

/// `weft run` started, not waited for.
fn spawn_run(node: &NodeProc, peer: &NodeProc, args: &[&str]) -> Child {
    let state = node.state.display().to_string();
    let peer_id = peer.id();
    weft()
        .args([
            "run", "--name", &node.net, "--state", &state, "--peer", &peer_id,
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft run")
}

/// The first `n` lines `child` prints (process ids, here).
fn first_lines(child: &mut Child, n: usize) -> Vec<String> {
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    (0..n)
        .map(|_| lines.next().expect("a line").expect("text"))
        .collect()
}

fn alive(pid: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .expect("run kill")
        .success()
}

fn wait_child(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + common::WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "weft run did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn output_streams_in_order_and_the_exit_code_is_the_remote_one() {
    let (dir, net) = scratch("run-output");
    let (a, b) = allowed(dir.path(), &net);
    // 1000 lines to each stream, in order, each to its own local stream.
    let script = "i=1; while [ $i -le 1000 ]; do echo $i; echo err$i >&2; i=$((i+1)); done";
    let out = weft_run(&a, &b, &["--", "sh", "-c", script]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    assert_eq!(text(&out.stdout), expected);
    let expected: String = (1..=1000).map(|i| format!("err{i}\n")).collect();
    assert_eq!(text(&out.stderr), expected);
    // No shell unless asked: the argument reaches the program as it is.
    let out = weft_run(&a, &b, &["--", "echo", "$HOME", "a  b"]);
    assert_eq!(text(&out.stdout), "$HOME a  b\n");
    // With --shell, one command line for /bin/sh -c.
    let out = weft_run(
        &a,
        &b,
        &["--shell", "--", "echo", "$((6*7))", "|", "tr", "4", "x"],
    );
    assert_eq!(text(&out.stdout), "x2\n");
    // Exit codes: the remote's; a signal is 128 + its number.
    assert_eq!(weft_run(&a, &b, &["--", "true"]).status.code(), Some(0));
    assert_eq!(
        weft_run(&a, &b, &["--", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        weft_run(&a, &b, &["--shell", "--", "kill -9 $$"])
            .status
            .code(),
        Some(137)
    );
    // A program that cannot start is a refusal: weft's own error.
    let out = weft_run(&a, &b, &["--", "no-such-program-weft"]);
    fails_with(&out, 255, "refused by the peer: no-such-program-weft");
    // The runs were carried out by b, for a; their output crossed the encrypted link.
    let stats = b.stats();
    assert_eq!(stats.links, "noise");
}

#[test]
fn runs_are_refused_without_allow_run_and_from_nodes_not_allowed() {
    let (dir, net) = scratch("run-refused");
    // b runs nothing: started without --allow-run (its allow list names a).
    let (a, b) = pair(dir.path(), &net, &["--allow-run-from", "{a}"]);
    let out = weft_run(&a, &b, &["--", "true"]);
    fails_with(&out, 255, "started without --allow-run");
    eprintln!("refusal: {}", text(&out.stderr).trim_end());
    drop(b);
    // c allows runs, but from someone else: a is refused, by id.
    let other = "ab".repeat(32);
    let c = NodeProc::start_with(
        dir.path(),
        &net,
        "c",
        "tokio",
        "127.0.0.1:0",
        &[&a.addr],
        &["--allow-run", "--allow-run-from", &other],
    );
    let c_id = c.id();
    wait_until("a and c link", || a.links_to(&c_id));
    let out = weft_run(&a, &c, &["--", "true"]);
    fails_with(&out, 255, "is not on this node's run allow list");
    assert!(text(&out.stderr).contains(&a.id()), "{}", text(&out.stderr));
    eprintln!("refusal: {}", text(&out.stderr).trim_end());
    // Nothing ran on c.
    assert!(!c.state.join("run").exists());
    // A peer that is not linked, and a network with no node running.
    let state = a.state.display().to_string();
    let out = run(&[
        "run", "--name", &net, "--state", &state, "--peer", "0000", "--", "true",
    ]);
    fails_with(&out, 255, "no linked node's id starts with 0000");
    eprintln!("refusal: {}", text(&out.stderr).trim_end());
    let none = dir.path().join("none").display().to_string();
    let out = run(&[
        "run", "--name", &net, "--state", &none, "--peer", "00", "--", "true",
    ]);
    fails_with(&out, 255, "is running here");
    eprintln!("refusal: {}", text(&out.stderr).trim_end());
    // Bad arguments: no program.
    let out = run(&["run", "--name", &net, "--peer", "00"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn ctrl_c_stops_the_remote_process_and_its_children() {
    let (dir, net) = scratch("run-ctrl-c");
    let (a, b) = allowed(dir.path(), &net);
    // Two children in the background (a non-interactive shell starts them ignoring SIGINT),
    // their pids printed, then the shell waits.
    let script = "sleep 100 & echo $!; sleep 100 & echo $!; wait";
    let mut child = spawn_run(&a, &b, &["--shell", "--", script]);
    let pids = first_lines(&mut child, 2);
    assert!(pids.iter().all(|p| alive(p)), "{pids:?}");
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = wait_child(&mut child);
    // The shell ends at once on SIGINT (within the grace period): 128 + 2.
    assert_eq!(status.code(), Some(130));
    // Its children ignored SIGINT; the group was killed when the shell ended.
    wait_until("the remote children are gone", || {
        pids.iter().all(|p| !alive(p))
    });
    assert!(started.elapsed() < Duration::from_secs(10));

    // A process that ignores SIGINT altogether is killed after the grace period: 130 locally.
    let script = "trap '' INT; sleep 100 & echo $!; wait; wait";
    let mut child = spawn_run(&a, &b, &["--shell", "--", script]);
    let pids = first_lines(&mut child, 1);
    let started = Instant::now();
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert_eq!(wait_child(&mut child).code(), Some(130));
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    wait_until("the stubborn process is gone", || !alive(&pids[0]));

    // A second Ctrl-C exits at once, and the remote process goes.
    let mut child = spawn_run(&a, &b, &["--shell", "--", script]);
    let pids = first_lines(&mut child, 1);
    for _ in 0..2 {
        std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    assert_eq!(wait_child(&mut child).code(), Some(130));
    assert!(started.elapsed() < Duration::from_millis(1000));
    wait_until("the killed process is gone", || !alive(&pids[0]));
}

#[test]
fn a_dropped_link_kills_the_remote_process_group() {
    let (dir, net) = scratch("run-dropped");
    let (mut a, b) = allowed(dir.path(), &net);
    let mut child = spawn_run(&a, &b, &["--shell", "--", "sleep 100 & echo $!; sleep 100"]);
    let pids = first_lines(&mut child, 1);
    assert!(alive(&pids[0]));
    // The requester's node dies: its link to the runner goes with it.
    a.kill();
    wait_until("the remote process is gone", || !alive(&pids[0]));
    let status = wait_child(&mut child);
    assert_eq!(status.code(), Some(255));
    drop(b);
}

/// `n` bytes no compressor shrinks (xorshift from `seed`).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `cksum` of `files` in `dir`, as the runner's `cksum` prints it.
fn cksum(dir: &std::path::Path, files: &[&str]) -> String {
    let out = std::process::Command::new("cksum")
        .args(files)
        .current_dir(dir)
        .output()
        .expect("run cksum");
    text(&out.stdout)
}

#[test]
fn sync_runs_inside_the_peers_copy_and_a_second_run_sends_only_what_changed() {
    let (dir, net) = scratch("run-sync");
    let (a, mut b) = allowed(dir.path(), &net);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("hello.txt"), "hello from a\n").expect("write");
    // Two files that do not compress: a large one left alone, a smaller one edited later.
    let big = 4 << 20;
    let small = 1 << 20;
    std::fs::write(work.join("big.bin"), noise(1, big)).expect("write");
    std::fs::write(work.join("small.bin"), noise(2, small)).expect("write");
    let sync = work.display().to_string();
    let files = ["big.bin", "small.bin"];
    let script = "cat hello.txt; cksum big.bin small.bin";

    let started = Instant::now();
    let out = weft_run(&a, &b, &["--sync", &sync, "--shell", "--", script]);
    eprintln!("first run: {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected = format!("hello from a\n{}", cksum(&work, &files));
    assert_eq!(text(&out.stdout), expected);
    // It ran in b's copy, under b's state folder, not in a's directory.
    let runs = b.state.join("runs");
    let copies: Vec<_> = std::fs::read_dir(&runs).expect("b's runs").collect();
    assert_eq!(copies.len(), 1);
    let first = b.stats().counters.bytes_received;
    assert!(first > (big + small) as u64, "b received {first} bytes");

    // One file edited (the same size, other bytes), one added: only they go over.
    std::fs::write(work.join("small.bin"), noise(3, small)).expect("write");
    std::fs::write(work.join("hello.txt"), "hello again\n").expect("write");
    let started = Instant::now();
    let out = weft_run(&a, &b, &["--sync", &sync, "--shell", "--", script]);
    eprintln!("second run: {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected = format!("hello again\n{}", cksum(&work, &files));
    assert_eq!(text(&out.stdout), expected);
    let second = b.stats().counters.bytes_received - first;
    eprintln!("b received {first} bytes for the first run, {second} for the second");
    assert!(
        second >= small as u64,
        "the edited file did not go over: {second}"
    );
    assert!(
        second < big as u64 / 2,
        "the unchanged file went over again: {second} bytes"
    );
    // Still one copy: the same folder.
    assert_eq!(std::fs::read_dir(&runs).expect("b's runs").count(), 1);

    // The runner restarts: its copy's state was kept, so the next run (the folder added again
    // from it) still moves only the edited file.
    b.signal("TERM");
    b.wait_exit();
    let a_id = a.id();
    let b = NodeProc::start_with(
        dir.path(),
        &net,
        "b",
        "tokio",
        "127.0.0.1:0",
        &[&a.addr],
        &["--allow-run", "--allow-run-from", &a_id],
    );
    let b_id = b.id();
    wait_until("a and b link again", || a.links_to(&b_id));
    std::fs::write(work.join("small.bin"), noise(4, small)).expect("write");
    let base = b.stats().counters.bytes_received;
    let out = weft_run(&a, &b, &["--sync", &sync, "--shell", "--", script]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected = format!("hello again\n{}", cksum(&work, &files));
    assert_eq!(text(&out.stdout), expected);
    let third = b.stats().counters.bytes_received - base;
    eprintln!("b received {third} bytes for the run after its restart");
    assert!(
        third >= small as u64,
        "the edited file did not go over: {third}"
    );
    assert!(
        third < big as u64 / 2,
        "the unchanged file went over again after a restart: {third} bytes"
    );
    assert_eq!(std::fs::read_dir(&runs).expect("b's runs").count(), 1);

    // A directory that does not exist is weft's own error, one line.
    let missing = dir.path().join("nope").display().to_string();
    let out = weft_run(&a, &b, &["--sync", &missing, "--", "true"]);
    fails_with(&out, 255, "--sync");

    // Nor one inside (or around) another folder of the node, here a drop's: files others
    // put there would reach the runner's copy and run there.
    let dropped = dir.path().join("dropped");
    std::fs::create_dir_all(dropped.join("sub")).expect("mkdir");
    let state = a.state.display().to_string();
    let dropped_path = dropped.display().to_string();
    common::ok(&run(&[
        "drop",
        "create",
        "--name",
        &a.net,
        "--state",
        &state,
        &dropped_path,
    ]));
    let inside = dropped.join("sub").display().to_string();
    let out = weft_run(&a, &b, &["--sync", &inside, "--", "true"]);
    fails_with(&out, 255, "overlaps");
}

/// SPEC.md §23.3, §23.6: `weft run --sync` returns only once what the program wrote in the
/// peer's copy is back in the directory; then the directory is no longer replicated (a file
/// put into the runner's copy afterwards stays there), while the runner keeps its copy's
/// folder for the requester until the requester goes away.
#[test]
fn a_sync_run_returns_with_its_writes_back_and_then_the_folder_ends() {
    let (dir, net) = scratch("run-sync-back");
    let (mut a, b) = allowed(dir.path(), &net);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("input.txt"), "made by a\n").expect("write");
    let sync = work.display().to_string();
    let build =
        "cat input.txt > output.txt; mkdir -p out; head -c 300000 /dev/urandom > out/blob; \
                 echo built";
    let started = Instant::now();
    let out = weft_run(&a, &b, &["--sync", &sync, "--shell", "--", build]);
    eprintln!("run with its writes back: {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "built\n");
    // Back before `weft run` returned: no waiting here.
    let copy = std::fs::read_dir(b.state.join("runs"))
        .expect("b's runs")
        .map(|e| e.expect("entry").path())
        .next()
        .expect("b's copy");
    assert_eq!(
        std::fs::read_to_string(work.join("output.txt"))
            .ok()
            .as_deref(),
        Some("made by a\n"),
        "output.txt is not back"
    );
    let blob = std::fs::read(copy.join("out/blob")).expect("the blob in b's copy");
    assert!(
        std::fs::read(work.join("out/blob")).is_ok_and(|back| back == blob),
        "out/blob is not back whole"
    );
    wait_until("a ends the run's folder", || {
        a.log_text().contains("ended, no run of it is in progress")
    });
    assert!(
        !b.log_text().contains("ended, no run of it is in progress"),
        "b keeps its copy's folder while a is linked"
    );

    // Something on b writes into b's copy after the run: it does not reach a's directory.
    std::fs::write(copy.join("planted.txt"), "not a's\n").expect("write");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !work.join("planted.txt").exists(),
        "a's directory is still replicated after its run"
    );

    // The runner's copy is removed between runs: b ends its folder, and the next run starts
    // the copy empty: nothing of a's directory is taken for deleted.
    let ended = |node: &NodeProc| {
        node.log_text()
            .matches("ended, no run of it is in progress")
            .count()
    };
    std::fs::remove_dir_all(&copy).expect("remove b's copy");
    wait_until("b ends the folder whose copy went", || ended(&b) == 1);
    let out = weft_run(&a, &b, &["--sync", &sync, "--", "cat", "input.txt"]);
    assert_eq!(text(&out.stdout), "made by a\n", "{}", text(&out.stderr));
    for file in ["input.txt", "output.txt", "out/blob"] {
        assert!(work.join(file).is_file(), "{file} went from a's directory");
        assert!(copy.join(file).is_file(), "{file} is not in b's new copy");
    }

    // The requester goes away: the runner ends its copy's folder without waiting out
    // RUN_FOLDER_LINGER.
    a.kill();
    wait_until("b ends the folder of a's runs", || ended(&b) == 2);
}

/// 64 hex digits as a node id.
fn node_id(hex: &str) -> weft_engine::NodeId {
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    weft_engine::NodeId(id)
}

/// SPEC.md §23.5: a run's folder is replicated with its requester alone, so no other node can
/// put a file where the program runs. A run naming a folder the runner already holds for
/// another requester (here a's `--sync` folder, asked for by c) is refused, and runs nothing.
#[test]
fn a_run_cannot_use_a_folder_the_runner_holds_for_another_requester() {
    use weft_engine::protocol::{FolderId, RunFolder, RunRefusalReason};
    use weft_engine::run::{RunCommand, RunEvent, RunEventKind};
    let (dir, net) = scratch("run-foreign-folder");
    let c_seed = 41;
    let c_id = weft_drivers::report::hex_id(
        &weft_engine::Node::new(weft_engine::Config::from_seed(&net, c_seed)).node_id(),
    );
    let allow = [
        "--allow-run",
        "--allow-run-from",
        "{a}",
        "--allow-run-from",
        &c_id,
    ];
    let (a, b) = pair(dir.path(), &net, &allow);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("x.txt"), "a's\n").expect("write");
    let sync = work.display().to_string();
    let out = weft_run(&a, &b, &["--sync", &sync, "--", "cat", "x.txt"]);
    assert_eq!(text(&out.stdout), "a's\n", "{}", text(&out.stderr));
    // a's run folder at b, by SPEC.md §23.5's formula.
    let canonical = work.canonicalize().expect("canonical");
    let folder = FolderId::from_name(&format!(
        "run:{}:{}:{}",
        a.id(),
        b.id(),
        canonical.display()
    ));
    let mut c = common::peer::Peer::connect(&b.addr, &net, c_seed);
    assert_eq!(c.id(), c_id);
    let start = RunCommand::Start {
        run: 1,
        peer: node_id(&b.id()),
        program: "touch".into(),
        args: vec!["planted-by-c".into()],
        shell: false,
        folder: Some(RunFolder {
            id: folder,
            index_id: 0,
            sequence: 0,
        }),
    };
    let mut events = c
        .command(weft_engine::Command::Run(start))
        .expect("c asks for the run");
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let ended = events.iter().find_map(|e| match e {
            weft_engine::Event::Run(RunEvent { run: 1, kind }) => Some(kind.clone()),
            _ => None,
        });
        if let Some(kind) = ended {
            break kind;
        }
        assert!(Instant::now() < deadline, "no answer to c's run");
        events = c.pump_in();
    };
    assert!(
        matches!(
            refused,
            RunEventKind::Refused {
                reason: RunRefusalReason::UnknownFolder,
                ..
            }
        ),
        "{refused:?}"
    );
    let copies: Vec<_> = std::fs::read_dir(b.state.join("runs"))
        .expect("b's runs")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(copies.len(), 1);
    assert!(!copies[0].join("planted-by-c").exists());
}

/// SPEC.md §23.6: a Ctrl-C while `--sync` still waits for a scan that finds every file
/// settled gives the run up: `weft run` exits 130 at once and the program never starts on
/// the peer (it started, then was killed, before).
#[test]
fn ctrl_c_while_the_folder_is_still_being_written_never_starts_the_program() {
    let (dir, net) = scratch("run-sync-cancel");
    let (a, b) = allowed(dir.path(), &net);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    // A file written every 100 ms is never settled: the run waits.
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (file, writing) = (work.join("growing.log"), std::sync::Arc::clone(&writing));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while writing.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                std::fs::write(&file, n.to_string()).expect("write");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let marker = dir.path().join("the-program-ran");
    let sync = work.display().to_string();
    let touch = marker.display().to_string();
    let mut child = spawn_run(&a, &b, &["--sync", &sync, "--", "touch", &touch]);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "weft run did not wait for the folder"
    );
    let interrupted = Instant::now();
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    let status = wait_child(&mut child);
    assert_eq!(status.code(), Some(130));
    assert!(
        interrupted.elapsed() < Duration::from_millis(1500),
        "weft run took {:?} to end",
        interrupted.elapsed()
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
        .expect("stderr");
    assert!(stderr.contains("cancelled"), "{stderr}");
    // The folder settles now; the run that was given up is still never asked for.
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    std::thread::sleep(Duration::from_secs(3));
    assert!(!marker.exists(), "the program ran on the peer");
    // And the next run goes through.
    let out = weft_run(&a, &b, &["--sync", &sync, "--", "touch", &touch]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(marker.exists());
}

/// A requester that reads a run's output more slowly than it comes, but steadily (so no write
/// to it ever stalls for the control socket's timeout), does not make its node hold the whole
/// output: past `RUN_EVENTS_QUEUED_MAX` pieces waiting, the run is killed and the requester is
/// told, instead of its node buffering at link speed.
#[test]
fn a_requester_reading_too_slowly_has_its_run_killed_not_buffered() {
    use std::io::Read;
    let (dir, net) = scratch("run-slow-reader");
    let (a, b) = allowed(dir.path(), &net);
    let total: u64 = 400_000_000;
    let mut child = spawn_run(
        &a,
        &b,
        &["--", "head", "-c", &total.to_string(), "/dev/zero"],
    );
    let mut stdout = child.stdout.take().expect("piped");
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0u64;
    let started = Instant::now();
    while !a.log_text().contains("not read fast enough") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never killed; {read} bytes read"
        );
        match stdout.read(&mut buf) {
            Ok(0) => panic!("the output ended after {read} bytes, not killed"),
            Ok(n) => read += n as u64,
            Err(e) => panic!("reading: {e}"),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // The rest comes at full speed: what was queued, then the end.
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).expect("the rest");
    read += rest.len() as u64;
    let status = wait_child(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .expect("stderr");
    assert_ne!(status.code(), Some(0), "{err}");
    assert!(err.contains("not read fast enough"), "{err}");
    assert!(read < total, "all {read} bytes came");
}

/// The threads of `node`'s process whose name starts with `prefix`.
fn threads_named(node: &NodeProc, prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", node.pid())) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|comm| comm.starts_with(prefix))
        .count()
}

/// A program that leaves its process group (a daemon started with `setsid`) and holds the
/// run's output pipe without writing leaves no thread behind at the runner once the exit is
/// told (the pipe's reader stayed blocked for as long as the daemon lived).
#[test]
fn a_program_that_left_the_group_leaves_no_thread_behind() {
    let (dir, net) = scratch("run-escaped");
    let (a, b) = allowed(dir.path(), &net);
    for _ in 0..3 {
        let out = weft_run(
            &a,
            &b,
            &["--shell", "--", "setsid sleep 20 & sleep 0.3; exit 3"],
        );
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while threads_named(&b, "weft-run-") > 0 {
        assert!(
            Instant::now() < deadline,
            "{} run threads left at the runner",
            threads_named(&b, "weft-run-")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `weft run` that goes away while its run still writes has the run killed once: the
/// output still on its way is dropped, not answered with a kill each (one crossed the link
/// and cost the runner a signal and a log line per piece).
#[test]
fn a_requester_that_went_away_has_its_run_killed_once() {
    use std::io::Read;
    let (dir, net) = scratch("run-gone");
    let (a, b) = allowed(dir.path(), &net);
    let mut child = spawn_run(&a, &b, &["--", "head", "-c", "400000000", "/dev/zero"]);
    let mut stdout = child.stdout.take().expect("piped");
    let mut first = [0u8; 1024];
    stdout.read_exact(&mut first).expect("the output starts");
    child.kill().expect("kill weft run");
    let _ = child.wait();
    drop(stdout);
    wait_until("the run is killed at the runner", || {
        b.log_text().contains(": Kill")
    });
    std::thread::sleep(Duration::from_secs(2));
    let kills = b.log_text().matches(": Kill").count();
    assert_eq!(kills, 1, "{}", b.log_text());
}
