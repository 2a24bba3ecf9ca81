//! Private networks (`weft node --secret`, `--secret-file`, the config's `secret` and
//! `secret_file`; SPEC.md §21) between real processes on 127.0.0.1: members link and deliver,
//! nodes with another secret or none never link to them, and bad secrets stop the start in
//! one line.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{fails_with, run, scratch, wait_until, NodeProc};
use weft_drivers::report::IdReport;

/// The secret most of these networks share; never to be seen in any output.
const SECRET: &str = "correct horse battery staple";

fn secret_file(dir: &Path, name: &str, contents: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn id_of(node: &NodeProc) -> IdReport {
    let out = node.command("id", &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("id JSON")
}

/// Every way a node shows the secret: none of them may hold it.
fn assert_never_shown(node: &NodeProc, secret: &str) {
    let mut seen = node.log_text();
    for command in ["id", "stats"] {
        for json in [&[][..], &["--json"][..]] {
            seen += &String::from_utf8_lossy(&node.command(command, json).stdout);
        }
    }
    assert!(!seen.contains(secret), "the secret shows: {seen}");
}

#[test]
fn nodes_with_the_same_secret_link_and_deliver() {
    let (dir, net) = scratch("secret-same");
    let secret = ["--secret", SECRET];
    let (a, b) = NodeProc::linked_pair(dir.path(), &net, &secret);
    let at_a = a.listen();
    b.send("members only");
    assert_eq!(at_a.wait_for(1)[0].payload.as_deref(), Some("members only"));
    for node in [&a, &b] {
        let id = id_of(node);
        assert_eq!((id.links.as_str(), id.network_secret), ("noise", true));
        let stats = node.stats();
        assert_eq!(
            (stats.links.as_str(), stats.network_secret),
            ("noise", true)
        );
        let text = String::from_utf8(node.command("id", &[]).stdout).unwrap();
        assert!(
            text.contains("links        noise, network secret: yes"),
            "{text}"
        );
        assert_never_shown(node, SECRET);
    }
}

#[test]
fn a_secret_file_and_a_config_secret_make_one_network() {
    let (dir, net) = scratch("secret-sources");
    // Readable by others: the node warns (once) and runs.
    let file = secret_file(dir.path(), "net.secret", &format!("{SECRET}\n"), 0o644);
    let file_text = file.display().to_string();
    let a = NodeProc::start_with(
        dir.path(),
        &net,
        "a",
        "mio",
        "127.0.0.1:0",
        &[],
        &["--secret-file", &file_text],
    );
    // b's secret is in its config file; c's in a CRLF-ended file the config names, relative
    // to c's state folder.
    let b_state = dir.path().join("b");
    std::fs::create_dir_all(&b_state).unwrap();
    std::fs::write(
        b_state.join("config.toml"),
        format!("secret = \"{SECRET}\"\n"),
    )
    .unwrap();
    let b = NodeProc::start(dir.path(), &net, "b", "tokio", "127.0.0.1:0", &[&a.addr]);
    let c_state = dir.path().join("c");
    std::fs::create_dir_all(&c_state).unwrap();
    secret_file(&c_state, "own.secret", &format!("{SECRET}\r\n"), 0o600);
    std::fs::write(
        c_state.join("config.toml"),
        "secret_file = \"own.secret\"\n",
    )
    .unwrap();
    let c = NodeProc::start(dir.path(), &net, "c", "mio", "127.0.0.1:0", &[&a.addr]);
    let (b_id, c_id) = (b.id(), c.id());
    wait_until("a links to b and c", || {
        a.links_to(&b_id) && a.links_to(&c_id)
    });
    let at_b = b.listen();
    let at_c = c.listen();
    a.send("from the file");
    assert_eq!(
        at_b.wait_for(1)[0].payload.as_deref(),
        Some("from the file")
    );
    assert_eq!(
        at_c.wait_for(1)[0].payload.as_deref(),
        Some("from the file")
    );
    let warned = |node: &NodeProc| {
        node.log_text()
            .lines()
            .filter(|l| l.contains("can be read by its group or others"))
            .count()
    };
    assert_eq!(warned(&a), 1, "{}", a.log_text());
    assert_eq!(
        (warned(&b), warned(&c)),
        (0, 0),
        "0600 and no file: no warning"
    );
    for node in [&a, &b, &c] {
        assert!(id_of(node).network_secret);
        assert_never_shown(node, SECRET);
    }
}

#[test]
fn nodes_with_another_secret_or_none_never_link_to_members() {
    let (dir, net) = scratch("secret-other");
    let secret = ["--secret", SECRET];
    let (a, b) = NodeProc::linked_pair(dir.path(), &net, &secret);
    let b_id = b.id();
    let other = NodeProc::start_with(
        dir.path(),
        &net,
        "other",
        "tokio",
        "127.0.0.1:0",
        &[&a.addr],
        &["--secret", "correct horse battery stapler"],
    );
    let open = NodeProc::start(dir.path(), &net, "open", "mio", "127.0.0.1:0", &[&a.addr]);
    assert!(!id_of(&open).network_secret);
    // Both dial a (and redial it): each dial fails in the handshake, on both ends.
    wait_until("the outsiders' dials fail", || {
        other.stats().counters.connections_failed >= 1
            && open.stats().counters.connections_failed >= 1
    });
    wait_until("a counts both failed handshakes", || {
        a.stats().counters.connections_failed >= 2
    });
    // And a member dialing an outsider fails the same way.
    let b_failed = b.stats().counters.connections_failed;
    let dial = b.command("connect", &[&other.addr]);
    assert!(
        dial.status.success(),
        "{}",
        String::from_utf8_lossy(&dial.stderr)
    );
    wait_until("b's dial of the outsider fails", || {
        b.stats().counters.connections_failed > b_failed
    });
    // Nothing was learnt either way: no link, and no host heard of.
    let (a_id, other_id, open_id) = (a.id(), other.id(), open.id());
    for outsider in [&other, &open] {
        assert!(outsider.hosts().is_empty(), "{:?}", outsider.hosts());
        assert!(outsider.stats().counters.handshakes_completed == 0);
    }
    for member in [&a, &b] {
        let hosts = member.hosts();
        assert!(
            hosts
                .iter()
                .all(|h| h.node != other_id && h.node != open_id),
            "{hosts:?}"
        );
    }
    assert!(
        a.links_to(&b_id) && b.links_to(&a_id),
        "the members carry on"
    );
}

#[test]
fn bad_secrets_stop_the_start_in_one_line_with_exit_2() {
    let (dir, net) = scratch("secret-bad");
    let state = dir.path().join("s");
    let state_text = state.display().to_string();
    let node = |extra: &[&str]| {
        let mut args = vec![
            "node",
            "--name",
            &net,
            "--state",
            &state_text,
            "--listen",
            "127.0.0.1:0",
        ];
        args.extend(extra);
        run(&args)
    };
    let too_long = "k".repeat(4097);
    let empty_file = secret_file(dir.path(), "empty", "\n", 0o600);
    let long_file = secret_file(dir.path(), "long", &too_long, 0o600);
    let missing = dir.path().join("missing").display().to_string();
    let (empty_file, long_file) = (
        empty_file.display().to_string(),
        long_file.display().to_string(),
    );
    let cases: [(&[&str], &str); 7] = [
        (&["--secret", ""], "--secret: the network secret is empty"),
        (
            &["--secret", &too_long],
            "--secret: the network secret is longer than 4096 bytes",
        ),
        (
            &["--secret-file", &empty_file],
            "the network secret is empty",
        ),
        (
            &["--secret-file", &long_file],
            "the network secret is longer than 4096 bytes",
        ),
        (
            &["--secret-file", &missing],
            "cannot read the network secret",
        ),
        (
            &["--secret", SECRET, "--secret-file", &empty_file],
            "cannot be used with",
        ),
        (
            &["--secret", "", "--detach"],
            "--secret: the network secret is empty",
        ),
    ];
    for (extra, expected) in cases {
        let out = node(extra);
        fails_with(&out, 2, expected);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains(SECRET) && !err.contains("kkkk"), "{err}");
        assert!(!state.exists(), "{extra:?} left a state folder");
    }
    // The config file: both keys, or an empty secret.
    std::fs::create_dir_all(&state).unwrap();
    let config = state.join("config.toml");
    for (text, expected) in [
        (
            format!("secret = \"{SECRET}\"\nsecret_file = \"x\"\n"),
            "keys `secret` and `secret_file`: set one, not both",
        ),
        (
            "secret = \"\"\n".to_owned(),
            "key `secret`: the network secret is empty",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = node(&[]);
        fails_with(&out, 2, &format!("{}: {expected}", config.display()));
        assert!(!String::from_utf8_lossy(&out.stderr).contains(SECRET));
    }
}
