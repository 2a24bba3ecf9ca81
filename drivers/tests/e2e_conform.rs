//! The conformance kit (`weft conform`, SPEC.md §18.1) against weft's own nodes on both
//! drivers, as initiator and as acceptor, and against deliberately broken peers
//! (`common::broken`): it must pass the first and fail each broken peer on the SPEC.md
//! section of the rule it breaks.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::broken::{Broken, BrokenPeer};
use common::{scratch, weft, NodeProc, WAIT};
use weft_drivers::conform::report::Verdict;
use weft_drivers::conform::run_initiator;
use weft_engine::protocol::NetworkId;
use weft_engine::NetworkKey;

/// `weft conform --peer ADDR --name NET`: its exit code and its lines.
fn conform(addr: &str, net: &str, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["conform", "--peer", addr, "--name", net];
    args.extend(extra);
    // The timer checks alone wait out a 15 s timeout after the others.
    let out = common::run_within(&args, None, 3 * WAIT);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn weft_nodes_on_both_drivers_pass_as_dialed_peers() {
    let (dir, net) = scratch("conform-pass");
    let mio = NodeProc::start(dir.path(), &net, "mio", "mio", "127.0.0.1:0", &[]);
    let tokio = NodeProc::start_with(
        dir.path(),
        &net,
        "tokio",
        "tokio",
        "127.0.0.1:0",
        &[],
        &["--chord", "--secret", "conform-secret"],
    );
    // A tokio node holding a drop of two files, one version published, for §24 (tested with
    // --json, beside the others).
    let dropper = NodeProc::start(dir.path(), &net, "dropper", "tokio", "127.0.0.1:0", &[]);
    let drop_dir = dir.path().join("drop");
    std::fs::create_dir_all(drop_dir.join("docs")).expect("a drop folder");
    std::fs::write(drop_dir.join("docs/readme.txt"), b"a drop's readme\n").expect("a file");
    std::fs::write(drop_dir.join("data.bin"), vec![3u8; 70_000]).expect("a file");
    let drop_text = drop_dir.display().to_string();
    let dropper_state = dropper.state.display().to_string();
    for sub in ["create", "publish"] {
        let out = common::run(&[
            "drop",
            sub,
            "--name",
            &net,
            "--state",
            &dropper_state,
            &drop_text,
        ]);
        common::ok(&out);
    }
    // A node sharing a folder of two files, for §22.
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).expect("folder");
    std::fs::write(shared.join("a.bin"), vec![7u8; 100_000]).expect("a file");
    std::fs::write(shared.join("b.txt"), b"hello").expect("a file");
    let folder_net = format!("{net}-folder");
    let state = dir.path().join("folder-state");
    let shared_text = shared.display().to_string();
    let folder = NodeProc::start_args(
        &folder_net,
        state.join(&folder_net),
        dir.path().join("folder.log"),
        &[
            "create",
            "--name",
            &folder_net,
            "--dir",
            &shared_text,
            "--listen",
            "127.0.0.1:0",
        ],
        &[
            ("WEFT_HOME", &state.display().to_string()),
            ("RUST_LOG", "info"),
        ],
    );
    // The three text runs, and the node holding a drop as JSON, at once.
    let targets = [
        (&mio, &net, "mio", &[][..]),
        (&tokio, &net, "tokio --chord --secret", &["§20 "][..]),
        (&folder, &folder_net, "mio sharing a folder", &["§22 "]),
        (
            &dropper,
            &net,
            "tokio holding a drop (--json)",
            &["§24.2", "§24.3", "§24.5"],
        ),
    ];
    let runs: Vec<_> = targets
        .iter()
        .map(|(n, net, label, _)| {
            let (addr, net) = (n.addr.clone(), (*net).clone());
            // The timer checks (about 18 s, beside the others) against both drivers.
            let extra: &[&str] = if label.contains("json") {
                &["--json"]
            } else if label.contains("secret") {
                &["--secret", "conform-secret", "--timers"]
            } else if *label == "mio" {
                &["--timers"]
            } else {
                &[]
            };
            std::thread::spawn(move || conform(&addr, &net, extra))
        })
        .collect();
    for (run, (_, _, label, also)) in runs.into_iter().zip(targets) {
        let (code, text) = run.join().expect("kit thread");
        eprintln!("weft conform against a {label} node:\n{text}");
        assert_eq!(code, Some(0), "{label}: {text}");
        if label.contains("json") {
            let v: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
            assert_eq!(v["pass"], true);
            assert_eq!(v["role"], "initiator");
            let sections = v["sections"].as_array().cloned().unwrap_or_default();
            assert_eq!(sections.len(), 17, "{text}");
            for section in also {
                assert!(
                    sections
                        .iter()
                        .any(|s| s["section"] == *section && s["result"] == "pass"),
                    "{label}: {section} passes: {text}"
                );
            }
            continue;
        }
        assert!(!text.contains("FAIL"), "{label}: {text}");
        let mut sections = vec![
            "§2 ", "§3 ", "§4 ", "§6.13 ", "§7 ", "§8 ", "§9 ", "§10 ", "§11 ", "§19 ", "§21 ",
            "§24.5 ",
        ];
        sections.extend(also);
        if label == "mio" || label.contains("secret") {
            // §9: PING answered, idle PING, silence close; §8 counts the handshake timeout.
            assert!(text.contains("PASS §9 "), "{label}: {text}");
            let line = text
                .lines()
                .find(|l| l.starts_with("PASS §9 "))
                .unwrap_or("");
            assert!(
                line.contains("3 checks"),
                "{label}: timer checks ran: {line}"
            );
        }
        for section in sections {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("PASS {section}"))),
                "{label}: {section}passes: {text}"
            );
        }
    }
    // The kit takes back the file it announced and served corrupt: nothing of it is left
    // waiting in the folder.
    common::wait_until("the kit's file taken back", || {
        let out = folder.command("status", &[]);
        !String::from_utf8_lossy(&out.stdout).contains("weft-conform-")
    });
    drop(dir);
}

#[test]
fn weft_nodes_on_both_drivers_pass_when_they_dial_the_kit() {
    let (dir, net) = scratch("conform-listen");
    for driver in ["mio", "tokio"] {
        let node = NodeProc::start(dir.path(), &net, driver, driver, "127.0.0.1:0", &[]);
        let mut kit = weft()
            .args(["conform", "--listen", "127.0.0.1:0", "--name", &net])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weft conform");
        let mut stderr = BufReader::new(kit.stderr.take().expect("stderr"));
        let mut line = String::new();
        stderr.read_line(&mut line).expect("the kit's first line");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("an address")
            .to_owned();
        let out = node.command("connect", &[&addr]);
        assert!(out.status.success(), "weft connect");
        let deadline = std::time::Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = kit.try_wait().expect("wait") {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the kit did not finish"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut kit.stdout.take().expect("stdout"), &mut text)
            .expect("stdout");
        eprintln!("weft conform --listen, dialed by a {driver} node:\n{text}");
        assert_eq!(status.code(), Some(0), "{driver}: {text}");
        for section in ["§7 ", "§8 ", "§9 ", "§21 "] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("PASS {section}"))),
                "{driver}: {section}passes: {text}"
            );
        }
        assert!(
            text.contains("PASS §7 identity and handshake (3 checks)"),
            "both redials were tested: {text}"
        );
    }
    drop(dir);
}

#[test]
fn the_kit_fails_each_broken_peer_on_its_section() {
    let cases: &[(Broken, &str)] = &[
        (Broken::BadHelloAck, "§7"),
        (Broken::CompressedHello, "§7"),
        (Broken::AcceptsWrongNetwork, "§7"),
        (Broken::BadProofWrongReason, "§7"),
        (Broken::IgnoresSecondHello, "§7"),
        (Broken::StaleWrongReason, "§7"),
        (Broken::AcceptsOtherSigningMode, "§7"),
        (Broken::IgnoresEarlyAck, "§7"),
        (Broken::NoIdentityCheck, "§21"),
        (Broken::HelloKeyMismatch, "§21"),
        (Broken::IgnoresEarlyFrames, "§6.13"),
        (Broken::IgnoresUnknownFamily, "§8"),
        (Broken::PongWrongNonce, "§9"),
        (Broken::NoByeOnBadFrame, "§2"),
        (Broken::CompressesToAll, "§3"),
        (Broken::NoRelayToPlain, "§3"),
        (Broken::CascadeHopsKept, "§10"),
        (Broken::DuplicateRelay, "§11"),
        (Broken::NoRelay, "§11"),
        (Broken::NoRepair, "§11"),
        (Broken::NoTableRelay, "§19"),
        (Broken::ChordWrongRequest, "§20"),
        (Broken::NoNotFound, "§22"),
        (Broken::RunsForStrangers, "§23"),
        (Broken::DropNoNotFound, "§24.5"),
        (Broken::DropTakesMalformed, "§24.5"),
        (Broken::DropForgedKept, "§24.2"),
        (Broken::DropBadSignature, "§24.2"),
        (Broken::DropFilesAltered, "§24.3"),
    ];
    let net = format!("conform-broken-{}", std::process::id());
    // The wrapper alone, breaking nothing, passes (with lz4 or without): what fails below is
    // the broken rule.
    let all: Vec<(Broken, &str)> = [(Broken::None, ""), (Broken::NoLz4, "")]
        .into_iter()
        .chain(cases.iter().copied())
        .collect();
    let runs: Vec<_> = all
        .iter()
        .enumerate()
        .map(|(i, &(broken, section))| {
            let net = net.clone();
            std::thread::spawn(move || {
                let peer = BrokenPeer::start(&net, broken, 100 + i as u64);
                let addr: SocketAddr = peer.addr.parse().expect("an address");
                let report = run_initiator(
                    addr,
                    Some(NetworkId::from_name(&net)),
                    NetworkKey::OPEN,
                    Duration::from_millis(700),
                    false,
                )
                .expect("the broken peer is reachable");
                (broken, section, report)
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for run in runs {
        let (broken, section, report) = run.join().expect("kit thread");
        let lines = report.lines();
        let text: Vec<String> = lines.iter().map(|l| l.text()).collect();
        eprintln!(
            "broken peer {broken:?} (expected to fail {section}):\n{}",
            text.join("\n")
        );
        let failed: Vec<&str> = lines
            .iter()
            .filter(|l| l.result == Verdict::Fail)
            .map(|l| l.section)
            .collect();
        let ok = if matches!(broken, Broken::None | Broken::NoLz4) {
            failed.is_empty()
        } else {
            failed.contains(&section)
        };
        if !ok {
            wrong.push(format!("{broken:?}: failed {failed:?}, expected {section}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn an_unreachable_peer_and_bad_arguments_say_so_in_one_line() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = common::run(&["conform", "--peer", &format!("127.0.0.1:{port}")]);
    common::fails_with(&out, 1, "cannot connect");
    let out = common::run(&["conform"]);
    assert_eq!(out.status.code(), Some(2));
    let out = common::run(&[
        "conform",
        "--peer",
        "127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = common::run(&["conform", "--peer", "no-port"]);
    common::fails_with(&out, 2, "not a HOST:PORT");
}
