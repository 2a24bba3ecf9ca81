//! The `weft` command line as a new user meets it, run as real processes: command groups
//! list their subcommands, mistakes are one line with a suggestion, shells get completions,
//! human output gives times as spans ("in 9 min"), `weft send -` takes a message too large for
//! the command line, and `weft sim` refuses what it cannot replay, prints replay lines that
//! replay, and reports a long sweep's progress on stderr.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{fails_with, ok, run, run_with_input, scratch, wait_until, NodeProc};

#[test]
fn bare_command_groups_print_their_subcommands_and_exit_2() {
    let groups: [(&[&str], &[&str]); 3] = [
        (&[], &["node", "send", "table", "sim", "completions"]),
        (&["table"], &["set", "get", "delete", "release", "list"]),
        (
            &["sim", "sweep"],
            &["mesh", "table", "chord", "replicate", "drops", "p2pt"],
        ),
    ];
    for (args, commands) in groups {
        let out = run(args);
        let help = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {help}");
        assert!(out.stdout.is_empty(), "{args:?}: help goes to stderr");
        assert!(help.contains("Commands:"), "{args:?}: {help}");
        for command in commands {
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{command} "))),
                "{args:?}: {command} missing from {help}"
            );
        }
    }
}

#[test]
fn mistakes_are_one_line_with_exit_2_and_a_suggestion() {
    fails_with(
        &run(&["shutdwn"]),
        2,
        "a similar subcommand exists: 'shutdown'",
    );
    fails_with(&run(&["table", "lst"]), 2, "'list'");
    // Arguments the node would refuse are bad arguments (2), said before any node is asked
    // (none runs here).
    for (args, text) in [
        (
            &["put", "--name", "x", "--hex", "zz", "00"][..],
            "not hex digits",
        ),
        (
            &["put", "--name", "x", "--hex", "00", "abc"][..],
            "not hex digits",
        ),
        (&["get", "--name", "x", "--hex", "k"][..], "not hex digits"),
        (
            &["delete", "--name", "x", "--hex", "0"][..],
            "not hex digits",
        ),
        (&["get", "--name", "x", ""][..], "must not be empty"),
        (
            &["table", "set", "--name", "x", "", "v"][..],
            "must not be empty",
        ),
        (
            &["table", "get", "--name", "x", ""][..],
            "must not be empty",
        ),
        (
            &["disconnect", "--name", "x", "xyz"][..],
            "not the start of a node id",
        ),
        (&["connect", "--name", "x", "127.0.0.1:0"][..], "port 0"),
        (
            &[
                "node",
                "--name",
                "x",
                "--listen",
                "127.0.0.1:0",
                "--peer",
                "127.0.0.1:0",
            ][..],
            "port 0",
        ),
        (
            &[
                "join",
                "--name",
                "x",
                "--dir",
                "/nonexistent-weft-dir",
                "--peer",
                "127.0.0.1:0",
            ][..],
            "port 0",
        ),
        (
            &["put", "--name", "x", "k", "v", "--lifetime-ms", "0"][..],
            "0 is not in 1..",
        ),
        (
            &["conform", "--peer", "127.0.0.1:9", "--wait-ms", "0"][..],
            "0 is not in 100..=600000",
        ),
    ] {
        fails_with(&run(args), 2, text);
    }
    fails_with(&run(&["completions", "tcsh"]), 2, "possible values");
    fails_with(&run(&["sim", "--json", "mesh"]), 2, "--json");
    // The lease bound comes from the engine, and --help names it.
    let max = weft_engine::Timers::default().table_lease_max.as_millis();
    let over = (max + 1).to_string();
    fails_with(
        &run(&["table", "set", "--name", "x", "k", "v", "--lease-ms", &over]),
        2,
        &format!("1..={max}"),
    );
    let help = ok(&run(&["table", "set", "--help"]));
    assert!(help.contains(&format!("at most {max}")), "{help}");
    // A write timeout of 0 would be refused by the OS for every control client.
    fails_with(
        &run(&[
            "node",
            "--name",
            "x",
            "--listen",
            "127.0.0.1:0",
            "--control-write-timeout-ms",
            "0",
        ]),
        2,
        "1..",
    );
    // Simulator arguments that would panic (a thread past the process limit, an overflow of
    // simulated time) or take tens of gigabytes are refused with one line.
    fails_with(
        &run(&["sim", "sweep", "mesh", "--threads", "1000"]),
        2,
        "1..=256",
    );
    for (args, text) in [
        (
            &["sim", "chord", "--churn", "1e-11"][..],
            "between 0.01 and 10",
        ),
        (
            &["sim", "chord", "--churn", "10", "--lookups", "10000000"][..],
            "at most 100000",
        ),
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err:?}");
        assert!(
            err.starts_with("weft sim: ") && err.contains(text),
            "{err:?}"
        );
    }
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _weft"),
        ("zsh", "#compdef weft"),
        ("fish", "complete -c weft"),
    ] {
        let script = ok(&run(&["completions", shell]));
        assert!(script.contains(marker), "{shell}: {marker} missing");
        for word in ["stats", "--lease-ms", "completions"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
    }
    // bash loads the script and completes with it.
    let (dir, _) = scratch("completions");
    let file = dir.path().join("weft.bash");
    std::fs::write(&file, ok(&run(&["completions", "bash"]))).unwrap();
    // As bash calls it: the command, the word being completed and the one before it.
    let complete = |words: &str, cword: usize| {
        let list: Vec<&str> = words.split(' ').collect();
        let (cur, prev) = (list[cword], list[cword - 1]);
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; _weft weft {cur} {prev}; \
             echo \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("run bash");
        ok(&out).trim().to_owned()
    };
    assert_eq!(complete("weft st", 1), "start status stats");
    assert_eq!(complete("weft stats", 1), "stats");
    assert_eq!(complete("weft table set --le", 3), "--lease-ms");
}

#[test]
fn human_output_gives_times_as_spans() {
    let (dir, net) = scratch("spans");
    let a = NodeProc::start(dir.path(), &net, "a", "mio", "127.0.0.1:0", &[]);
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[&a.addr]);
    let b_id = b.id();
    wait_until("a links to b", || a.links_to(&b_id));

    // LAST SEEN: "850 ms ago", "3 s ago": a whole number and a unit.
    let network = ok(&a.command("network", &[]));
    let row = network
        .lines()
        .find(|l| l.starts_with(&b_id[..16]))
        .unwrap_or_else(|| panic!("{network}"));
    let seen: Vec<&str> = row.split_whitespace().rev().take(3).collect();
    assert_eq!(seen[0], "ago", "{row}");
    assert!(["ms", "s"].contains(&seen[1]), "{row}");
    assert!(seen[2].parse::<u64>().is_ok(), "{row}");
    let stats = ok(&a.command("stats", &[]));
    let up = stats
        .lines()
        .next()
        .unwrap()
        .rsplit(", up ")
        .next()
        .unwrap();
    let (number, unit) = up.split_once(' ').unwrap_or_else(|| panic!("{stats}"));
    assert!(
        number.parse::<u64>().is_ok() && ["ms", "s"].contains(&unit),
        "{up}"
    );

    // A lease's end: "in 9 min 59 s" as text, Unix ms in JSON.
    let state = a.state.display().to_string();
    let table = |extra: &[&str]| {
        let mut args = vec!["table"];
        args.extend_from_slice(&extra[..1]);
        args.extend(["--name", &net, "--state", &state]);
        args.extend_from_slice(&extra[1..]);
        run(&args)
    };
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    ok(&table(&["set", "leader", "a", "--lease-ms", "600000"]));
    let list = ok(&table(&["list"]));
    assert!(
        list.starts_with(&format!(
            "leader=a  (leased by {}, ends in 9 min",
            &a.id()[..16]
        )),
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&table(&["list", "--json"]))).expect("list JSON");
    let until = json[0]["lease_until_unix_ms"].as_u64().expect("Unix ms");
    assert!(until >= before.as_millis() as u64 + 600_000, "{json}");
}

#[test]
fn send_says_what_it_sent_and_reads_a_large_message_from_stdin() {
    let (dir, net) = scratch("send");
    let a = NodeProc::start(dir.path(), &net, "a", "mio", "127.0.0.1:0", &[]);
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[&a.addr]);
    let b_id = b.id();
    wait_until("a links to b", || a.links_to(&b_id));
    let listener = b.listen();

    assert_eq!(ok(&a.command("send", &["hello"])), "sent 5 bytes\n");
    // Past what one command-line argument may hold (128 KiB) and the control socket's old
    // 1 MiB request bound, with lines and quotes that JSON escapes.
    let line = "a \"quoted\" line\tof text\n";
    let big = line.repeat(3 * 1024 * 1024 / line.len());
    let state = a.state.display().to_string();
    let args = ["send", "--name", &net, "--state", &state, "-"];
    let out = run_with_input(&args, Some(big.clone().into_bytes()));
    assert_eq!(ok(&out), format!("sent {} bytes\n", big.len()));
    let got = listener.wait_for(2);
    assert_eq!(got[0].payload.as_deref(), Some("hello"));
    assert_eq!(got[1].payload.as_deref(), Some(big.as_str()));

    // Over the largest broadcast, or not text: one line, exit 1, nothing sent.
    let max = weft_engine::Limits::default().broadcast_payload_max;
    fails_with(
        &run_with_input(&args, Some(vec![b'x'; max + 1])),
        1,
        &format!("over the largest broadcast, {max} bytes"),
    );
    fails_with(
        &run_with_input(&args, Some(b"ok\xff".to_vec())),
        1,
        "not UTF-8",
    );
    assert_eq!(a.stats().counters.broadcasts_originated, 2);
}

#[test]
fn sim_refuses_what_it_cannot_replay() {
    fails_with(&run(&["sim", "mesh", "--faults", ""]), 2, "no faults named");
    fails_with(
        &run(&["sim", "table", "--faults", "swarm,latency"]),
        2,
        "swarm draws every fault from the seed and cannot be combined",
    );
    let star = run(&["sim", "mesh", "--topology", "star", "--nodes", "5"]);
    assert!(ok(&star).contains("result                ok"));
    // Plaintext links have no key; a secret is one word the replay line carries as it is.
    for (args, text) in [
        (
            &["sim", "mesh", "--plaintext-sim-only", "--secret", "s"][..],
            "cannot be combined with --secret",
        ),
        (
            &["sim", "table", "--secret", "two words"][..],
            "--secret takes 1 to 256 letters",
        ),
        (
            &["sim", "sweep", "chord", "--plaintext-sim-only"][..],
            "message-level Chord machines, which have no links",
        ),
        (
            &["sim", "sweep", "p2pt", "--plaintext-sim-only"][..],
            "p2p.today has no encryption",
        ),
        (
            // Seed 21's random network of 11 reaches some honest nodes only through node 10.
            &[
                "sim",
                "replicate",
                "--nodes",
                "11",
                "--seed",
                "21",
                "--topology",
                "random",
                "--corrupt-peer",
            ][..],
            "--corrupt-peer: node 10 is a cut vertex of this network",
        ),
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
        assert!(
            err.starts_with("weft sim: ") && err.contains(text),
            "{err:?}"
        );
    }
}

/// Links are Noise unless `--plaintext-sim-only` says otherwise, and the report says which,
/// with the network's secret and its wrong-secret nodes; each replays from its replay line.
#[test]
fn the_report_names_how_links_are_protected_and_replays_it() {
    let base = ["sim", "mesh", "--topology", "star", "--nodes", "5"];
    for (extra, links) in [
        (&[][..], "noise, open network"),
        (
            &["--secret", "s3cret", "--wrong-secret-nodes", "2"][..],
            "noise, private network, 2 wrong-secret nodes",
        ),
        (&["--plaintext-sim-only"][..], "PLAINTEXT (simulation only)"),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let report = ok(&run(&args));
        assert_eq!(row(&report, "links"), links);
        let tail: String = extra.iter().map(|w| format!(" {w}")).collect();
        let replay = row(&report, "replay");
        assert!(
            replay.ends_with(&format!("--topology star{tail}")),
            "{replay}"
        );
        let words: Vec<&str> = row(&report, "replay").split_whitespace().collect();
        let again = ok(&run(&words[1..]));
        assert_eq!(row(&again, "trace digest"), row(&report, "trace digest"));
    }
}

/// A text report's row `name`.
fn row<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {report}"))
        .trim()
}

#[test]
fn a_failed_run_prints_a_replay_line_that_replays_it() {
    let failed = run(&[
        "sim",
        "mesh",
        "--nodes",
        "6",
        "--topology",
        "star",
        "--faults",
        " latency, crashes",
        "--seed",
        "3",
        "--broadcasts",
        "4",
        "--sabotage",
    ]);
    assert_eq!(failed.status.code(), Some(1));
    let report = String::from_utf8_lossy(&failed.stdout).into_owned();
    let replay = row(&report, "replay");
    // Pasted into a shell: split into words as they are.
    let words: Vec<&str> = replay.split_whitespace().collect();
    assert_eq!(words[..3], ["weft", "sim", "mesh"], "{replay}");
    let again = run(&words[1..]);
    assert_eq!(again.status.code(), Some(1), "{replay}");
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    assert_eq!(row(&again, "trace digest"), row(&report, "trace digest"));
    assert_eq!(row(&again, "replay"), replay);
}

#[test]
fn a_sweep_from_a_first_seed_names_its_seeds_and_reports_progress_on_stderr_only() {
    // Progress at every seed (a real sweep reports every second: one shorter says nothing),
    // so that what is printed does not depend on this machine's speed.
    let out = run(&[
        "sim",
        "sweep",
        "mesh",
        "--seeds",
        "6",
        "--first-seed",
        "11",
        "--threads",
        "2",
        "--progress-ms",
        "0",
    ]);
    let summary = ok(&out);
    assert_eq!(summary.lines().count(), 1, "{summary}");
    assert!(
        summary.starts_with("sweep mesh: 6 seeds (11..=16), 0 failed"),
        "{summary}"
    );
    let progress = String::from_utf8_lossy(&out.stderr);
    let mut done = Vec::new();
    for line in progress.lines() {
        let rest = line
            .strip_prefix("weft sim sweep mesh: ")
            .unwrap_or_else(|| panic!("{line}"));
        let (seeds, rest) = rest
            .split_once("/6 seeds, ")
            .unwrap_or_else(|| panic!("{line}"));
        assert!(rest.starts_with("0 failed, "), "{line}");
        done.push(seeds.parse::<u64>().unwrap());
    }
    assert!((1..=6).all(|k| done.contains(&k)), "{progress}");
}

/// Help, version and a detached start's line to a reader that already left (`| head`, a
/// closed pipe) are no panic: exit 0 (the help was asked for; the node started), nothing on
/// stderr about it.
#[test]
fn output_to_a_closed_pipe_is_no_panic() {
    for args in [
        &["--version"][..],
        &["table", "--help"][..],
        &["sim", "--help"][..],
    ] {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = common::weft()
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("weft runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
