//! `weft drop` (issue 21, SPEC.md §24) over three real processes on 127.0.0.1: `a` (mio)
//! creates a drop and publishes it, then names `b` (tokio) a secondary owner; `b` and `c`
//! (mio) subscribe and get its files byte for byte; `b`'s publish reaches `a` and `c`; `c`'s
//! local edit reaches nobody and `c` cannot publish; `c` keeps its drop across a restart.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use common::{fails_with, ok, run, scratch, wait_until, NodeProc};
use weft_drivers::report::DropReport;

/// `weft drop SUB --name NET --state DIR <extra...>` against `node`.
fn drop_cmd(node: &NodeProc, sub: &str, extra: &[&str]) -> Output {
    let state = node.state.display().to_string();
    let mut args = vec!["drop", sub, "--name", &node.net, "--state", &state];
    args.extend(extra);
    run(&args)
}

/// `weft drop status --json` of `node`.
fn status(node: &NodeProc) -> Vec<DropReport> {
    let out = drop_cmd(node, "status", &["--json"]);
    serde_json::from_str(&ok(&out)).expect("drop status JSON")
}

/// The counter `weft drop publish` (or `owners`) printed: `version <hex> counter <n>`.
fn counter(out: &Output) -> u64 {
    let text = ok(out);
    let words: Vec<&str> = text.split_whitespace().collect();
    match words[..] {
        ["version", version, "counter", n] if version.len() == 64 => n.parse().expect("a counter"),
        _ => panic!("not a published version: {text:?}"),
    }
}

/// Every file under `dir` (but weft's own `.weft`) and its bytes, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == ".weft") {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                let rel = path.strip_prefix(root).expect("under the root");
                out.insert(rel.display().to_string(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("make the parent");
    }
    std::fs::write(path, bytes).expect("write a file");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[test]
fn a_drop_reaches_its_subscribers_only_owners_change_it_and_a_restart_keeps_it() {
    let (dir, net) = scratch("drops");
    let dir = dir.path();
    let a = NodeProc::start(dir, &net, "a", "mio", "127.0.0.1:0", &[]);
    let b = NodeProc::start(dir, &net, "b", "tokio", "127.0.0.1:0", &[&a.addr]);
    let mut c = NodeProc::start(dir, &net, "c", "mio", "127.0.0.1:0", &[&a.addr]);
    let (b_id, c_id) = (b.id(), c.id());
    wait_until("a links to b and c", || {
        a.links_to(&b_id) && a.links_to(&c_id)
    });

    // a's drop: a few files, one of 300 KiB (several blocks).
    let a_dir = dir.join("a-drop");
    let big: Vec<u8> = (0..300 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write(&a_dir.join("readme.txt"), b"the first readme\n");
    write(&a_dir.join("data/big.bin"), &big);
    write(&a_dir.join("data/empty"), b"");
    let a_path = a_dir.display().to_string();
    let out = drop_cmd(&a, "create", &[&a_path]);
    let drop_id = ok(&out).trim().to_owned();
    assert_eq!(drop_id.len(), 64, "{drop_id:?}");
    assert!(
        drop_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{drop_id:?}"
    );
    assert_eq!(counter(&drop_cmd(&a, "publish", &[&a_path])), 1);
    // b is named a secondary owner: version 2.
    assert_eq!(
        counter(&drop_cmd(&a, "owners", &["add", &drop_id, &b_id])),
        2
    );
    let report = status(&a);
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].role, "owner");
    assert_eq!(report[0].owners, [a.id().as_str(), b_id.as_str()]);

    // Bad arguments: one line, exit 2; a node that is not linked is refused plainly.
    let b_dir = dir.join("b-drop");
    let c_dir = dir.join("c-drop");
    let (b_path, c_path) = (b_dir.display().to_string(), c_dir.display().to_string());
    fails_with(
        &drop_cmd(&b, "subscribe", &[&drop_id, &a_path]),
        2,
        "not empty",
    );
    fails_with(
        &drop_cmd(&b, "subscribe", &["12ab", &b_path]),
        2,
        "not a drop id",
    );
    fails_with(
        &drop_cmd(&a, "owners", &["add", &drop_id, "xyz"]),
        2,
        "node id",
    );
    let stranger = "ab".repeat(32);
    fails_with(
        &drop_cmd(&a, "owners", &["add", &drop_id, &stranger]),
        1,
        "not a linked peer",
    );

    // b and c subscribe: the files arrive byte for byte.
    ok(&drop_cmd(&b, "subscribe", &[&drop_id, &b_path]));
    ok(&drop_cmd(&c, "subscribe", &[&drop_id, &c_path]));
    let first = tree(&a_dir);
    assert_eq!(first.len(), 3);
    wait_until("b and c hold version 2's files", || {
        tree(&b_dir) == first && tree(&c_dir) == first
    });
    assert_eq!(status(&c)[0].role, "subscriber");
    assert_eq!(status(&b)[0].role, "owner");

    // b, a secondary owner, edits and publishes: a and c get it.
    write(&b_dir.join("readme.txt"), b"b's readme\n");
    write(&b_dir.join("from-b.txt"), b"added by b\n");
    assert_eq!(counter(&drop_cmd(&b, "publish", &[&b_path])), 3);
    let second = tree(&b_dir);
    assert_eq!(second.len(), 4);
    wait_until("a and c hold b's version", || {
        tree(&a_dir) == second && tree(&c_dir) == second
    });

    // c's edit is refused there and never published; c cannot publish.
    write(&c_dir.join("readme.txt"), b"c's readme\n");
    wait_until("c refuses its local edit", || {
        c.log_text()
            .contains("local edit of readme.txt not published")
    });
    fails_with(&drop_cmd(&c, "publish", &[&c_path]), 1, "not an owner");
    // A later version from a reaches b and c; c's edit still reaches nobody.
    write(&a_dir.join("note.txt"), b"a note from a\n");
    assert_eq!(counter(&drop_cmd(&a, "publish", &[&a_path])), 4);
    wait_until("b and c hold a's note", || {
        read(&b_dir.join("note.txt")) == b"a note from a\n"
            && read(&c_dir.join("note.txt")) == b"a note from a\n"
    });
    for d in [&a_dir, &b_dir] {
        assert_eq!(
            read(&d.join("readme.txt")),
            b"b's readme\n",
            "{}",
            d.display()
        );
    }
    assert_eq!(read(&c_dir.join("readme.txt")), b"c's readme\n");
    let report = status(&c);
    assert_eq!(report[0].counter, Some(4));
    assert_eq!(report[0].heads, 1);
    assert_eq!(report[0].version, report[0].shown);

    // c restarts: it keeps its drop, its folder and its version, and takes the next one.
    ok(&c.command("shutdown", &[]));
    assert!(c.wait_exit().success());
    drop(c);
    let c = NodeProc::start(dir, &net, "c", "mio", "127.0.0.1:0", &[&a.addr]);
    let report = status(&c);
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].drop, drop_id);
    assert_eq!(report[0].counter, Some(4));
    assert_eq!(report[0].role, "subscriber");
    let canonical = std::fs::canonicalize(&c_dir).expect("c's folder");
    assert_eq!(report[0].dir.as_deref(), canonical.to_str());
    write(&a_dir.join("after-restart.txt"), b"after c's restart\n");
    assert_eq!(counter(&drop_cmd(&a, "publish", &[&a_path])), 5);
    wait_until("c holds version 5's new file", || {
        read(&c_dir.join("after-restart.txt")) == b"after c's restart\n"
    });
    assert_eq!(status(&c)[0].counter, Some(5));
}

#[test]
fn bare_weft_drop_lists_its_commands_and_a_node_must_run() {
    let out = run(&["drop"]);
    let help = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{help}");
    for command in ["create", "publish", "subscribe", "owners", "status"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from {help}"
        );
    }
    let (dir, net) = scratch("drops-no-node");
    let state = dir.path().join("none").display().to_string();
    let out = run(&["drop", "status", "--name", &net, "--state", &state]);
    fails_with(&out, 1, "no node is running");
}
