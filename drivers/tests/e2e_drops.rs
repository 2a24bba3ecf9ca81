//! `weft drop` (issue 21, SPEC.md §24) over three real processes on 127.0.0.1: `a` (mio)
//! creates a drop and publishes it, then names `b` (tokio) a secondary owner; `b` and `c`
//! (mio) subscribe and get its files byte for byte; `b`'s publish reaches `a` and `c`; `c`'s
//! local edit reaches nobody and `c` cannot publish; `c` keeps its drop across a restart, and
//! `weft drop revert` puts its refused edit back.
//! Then the tracker: a subscriber that knows only a `weft tracker` node finds the owner
//! through the holder records on the Chord ring (SPEC.md §24.6).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use common::{fails_with, ok, run, scratch, wait_until, NodeProc};
use weft_drivers::report::{unhex, DropReport, IdReport};
use weft_engine::protocol::holders_key;

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
    // c's user reverts its refused edit: the version's readme comes back, c matches a.
    let out = drop_cmd(&c, "revert", &[&c_path]);
    assert!(ok(&out).starts_with("reverting 1 path"), "{out:?}");
    wait_until("c holds version 4 exactly", || tree(&c_dir) == tree(&a_dir));
    assert_eq!(read(&c_dir.join("readme.txt")), b"b's readme\n");
    fails_with(&drop_cmd(&a, "revert", &[&a_path]), 1, "owns drop");
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

/// What `weft drop create`, `publish` and `owners add` report done survives a SIGKILL right
/// after: each is answered once the drops' state is in the store (before, a kill lost the
/// created drop, the version or the owners change the user was told was made).
#[test]
fn an_owners_drop_commands_survive_a_sigkill_right_after_their_answer() {
    let (dir, net) = scratch("drops-kill");
    let dir = dir.path();
    let mut a = NodeProc::start(dir, &net, "a", "mio", "127.0.0.1:0", &[]);
    let b = NodeProc::start(dir, &net, "b", "tokio", "127.0.0.1:0", &[&a.addr]);
    let b_id = b.id();
    wait_until("a links to b", || a.links_to(&b_id));
    let a_dir = dir.join("a-drop");
    write(&a_dir.join("readme.txt"), b"the readme\n");
    let a_path = a_dir.display().to_string();
    let restart = |a: &mut NodeProc| {
        a.kill();
        NodeProc::start(dir, &net, "a", "mio", "127.0.0.1:0", &[&b.addr])
    };

    let drop_id = ok(&drop_cmd(&a, "create", &[&a_path])).trim().to_owned();
    a = restart(&mut a);
    let report = status(&a);
    assert_eq!(report.len(), 1, "the created drop is kept");
    assert_eq!(report[0].drop, drop_id);
    assert_eq!(report[0].role, "owner");

    assert_eq!(counter(&drop_cmd(&a, "publish", &[&a_path])), 1);
    a = restart(&mut a);
    assert_eq!(
        status(&a)[0].counter,
        Some(1),
        "the published version is kept"
    );

    wait_until("a links to b again", || a.links_to(&b_id));
    assert_eq!(
        counter(&drop_cmd(&a, "owners", &["add", &drop_id, &b_id])),
        2
    );
    let a_id = a.id();
    a = restart(&mut a);
    let report = status(&a);
    assert_eq!(report[0].counter, Some(2), "the owners change is kept");
    assert_eq!(report[0].owners, [a_id.as_str(), b_id.as_str()]);
    // And a publish after it takes the next counter (a lost version had its counter reused).
    write(&a_dir.join("more.txt"), b"more\n");
    assert_eq!(counter(&drop_cmd(&a, "publish", &[&a_path])), 3);
}

/// A drop folder the store maps to a drop the engine did not store (a kill between the two
/// stores) is subscribed to again if the node subscribed, else forgotten, and its directory
/// may be made a drop again (it was refused as "a weft folder already" for good).
#[test]
fn a_mapped_drop_the_engine_lost_is_subscribed_again_or_forgotten() {
    let (dir, net) = scratch("drops-reconcile");
    let dir = dir.path();
    let a = NodeProc::start(dir, &net, "a", "mio", "127.0.0.1:0", &[]);
    let mut c = NodeProc::start(dir, &net, "c", "mio", "127.0.0.1:0", &[&a.addr]);
    let c_id = c.id();
    wait_until("a links to c", || a.links_to(&c_id));
    let a_dir = dir.join("a-drop");
    write(&a_dir.join("readme.txt"), b"a's readme\n");
    let a_path = a_dir.display().to_string();
    let drop_id = ok(&drop_cmd(&a, "create", &[&a_path])).trim().to_owned();
    assert_eq!(counter(&drop_cmd(&a, "publish", &[&a_path])), 1);
    let c_sub = dir.join("c-sub");
    let c_sub_path = c_sub.display().to_string();
    ok(&drop_cmd(&c, "subscribe", &[&drop_id, &c_sub_path]));
    wait_until("c holds a's files", || tree(&c_sub) == tree(&a_dir));
    let c_own = dir.join("c-own");
    write(&c_own.join("mine.txt"), b"c's own\n");
    let c_own_path = c_own.display().to_string();
    let lost = ok(&drop_cmd(&c, "create", &[&c_own_path]))
        .trim()
        .to_owned();
    ok(&c.command("shutdown", &[]));
    assert!(c.wait_exit().success());
    drop(c);
    // The engine's drops as a kill right after the folder map's store left them: none.
    let store = weft_drivers::storage::Store::open_existing(&dir.join("c"))
        .expect("c's store")
        .expect("c's store exists");
    store.store("drops", &[1, 0]).expect("an empty drops blob");
    drop(store);
    let c = NodeProc::start(dir, &net, "c", "mio", "127.0.0.1:0", &[&a.addr]);
    wait_until("c subscribed again", || {
        status(&c)
            .iter()
            .any(|d| d.drop == drop_id && d.counter == Some(1))
    });
    assert!(
        status(&c).iter().all(|d| d.drop != lost),
        "the lost creation is forgotten"
    );
    wait_until("c holds a's files again", || tree(&c_sub) == tree(&a_dir));
    let again = ok(&drop_cmd(&c, "create", &[&c_own_path]))
        .trim()
        .to_owned();
    assert_ne!(again, lost);
    assert_eq!(read(&c_own.join("mine.txt")), b"c's own\n");
}

/// Stores `record` as the drop-folder-pending blob of the stopped node whose state folder is
/// `state`: what a `weft drop create` or `subscribe` killed partway leaves.
fn leave_pending_record(state: &Path, record: &str) {
    let store = weft_drivers::storage::Store::open_existing(state)
        .expect("the node's store")
        .expect("the node's store exists");
    store
        .store("drop-folder-pending", record.as_bytes())
        .expect("the record a kill left");
}

/// A `weft drop create` or `subscribe` killed while it made the drop's folder (its
/// `.weft`, its marker, the directory itself) is taken back at the next start, as its
/// record in the store says: the same command then works (every retry was refused, "not
/// empty" or "a weft folder already"), and nothing of the user's goes.
#[test]
fn a_drop_folder_whose_making_a_kill_cut_short_is_taken_back_at_the_next_start() {
    let (dir, net) = scratch("drops-pending");
    let dir = dir.path();
    let mut c = NodeProc::start(dir, &net, "c", "mio", "127.0.0.1:0", &[]);
    ok(&c.command("shutdown", &[]));
    assert!(c.wait_exit().success());
    drop(c);
    // `create` of a directory with the user's file: its `.weft` made, the marker written.
    let own = dir.join("c-own");
    write(&own.join("mine.txt"), b"c's own\n");
    let reserved = own.join(".weft");
    for sub in ["tmp", "trash"] {
        std::fs::create_dir_all(reserved.join(sub)).expect("mkdir");
    }
    write(
        &reserved.join("folder"),
        format!("{}\n", "ab".repeat(32)).as_bytes(),
    );
    let marker = "ab".repeat(32);
    let pending = format!(
        "{{\"dir\":{:?},\"dirs\":[],\"reserved\":{:?},\"marker\":{marker:?}}}",
        own.display().to_string(),
        reserved.display().to_string()
    );
    leave_pending_record(&dir.join("c"), &pending);
    let c = NodeProc::start(dir, &net, "c", "mio", "127.0.0.1:0", &[]);
    wait_until("the cut-short making taken back", || !reserved.exists());
    assert_eq!(read(&own.join("mine.txt")), b"c's own\n");
    let own_path = own.display().to_string();
    ok(&drop_cmd(&c, "create", &[&own_path]));
    assert!(reserved.join("folder").is_file());
    // `subscribe` of a directory it made: the directory goes too.
    ok(&c.command("shutdown", &[]));
    let mut c = c;
    assert!(c.wait_exit().success());
    drop(c);
    let sub = dir.join("c-sub");
    let sub_reserved = sub.join(".weft");
    for d in ["tmp", "trash"] {
        std::fs::create_dir_all(sub_reserved.join(d)).expect("mkdir");
    }
    let pending = format!(
        "{{\"dir\":{:?},\"dirs\":[{:?}],\"reserved\":{:?},\"marker\":null}}",
        sub.display().to_string(),
        sub.display().to_string(),
        sub_reserved.display().to_string()
    );
    leave_pending_record(&dir.join("c"), &pending);
    let c = NodeProc::start(dir, &net, "c", "mio", "127.0.0.1:0", &[]);
    wait_until("the directory it made is gone", || !sub.exists());
    // The drop made before is still mapped, its marker untouched.
    assert!(reserved.join("folder").is_file());
    assert_eq!(status(&c).len(), 1);
    // A `.weft` that was there before (what a leave kept: its trash) only loses the marker
    // the command wrote; a marker naming another folder is never touched.
    let mut c = c;
    ok(&c.command("shutdown", &[]));
    assert!(c.wait_exit().success());
    drop(c);
    let kept = dir.join("c-kept");
    let kept_reserved = kept.join(".weft");
    write(&kept_reserved.join("trash").join("old.txt"), b"kept\n");
    let other = dir.join("c-other");
    write(&other.join(".weft").join("folder"), b"cd\n");
    for (at, written) in [(&kept, "ab"), (&other, "ef")] {
        if at == &kept {
            write(&kept_reserved.join("folder"), b"ab\n");
        }
        let pending = format!(
            "{{\"dir\":{:?},\"dirs\":[],\"reserved\":null,\"marker\":{written:?}}}",
            at.display().to_string()
        );
        leave_pending_record(&dir.join("c"), &pending);
        let mut c = NodeProc::start(dir, &net, "c", "mio", "127.0.0.1:0", &[]);
        // Its start has read the record by the time it answers a command.
        assert_eq!(status(&c).len(), 1);
        ok(&c.command("shutdown", &[]));
        assert!(c.wait_exit().success());
    }
    assert!(!kept_reserved.join("folder").exists());
    assert_eq!(
        read(&kept_reserved.join("trash").join("old.txt")),
        b"kept\n"
    );
    assert_eq!(read(&other.join(".weft").join("folder")), b"cd\n");
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

/// Whether `node` has joined the Chord ring and has a successor.
fn on_ring(node: &NodeProc) -> bool {
    let out = node.command("id", &["--json"]);
    let id: Option<IdReport> = serde_json::from_slice(&out.stdout).ok();
    id.and_then(|id| id.chord)
        .is_some_and(|ring| ring.joined && ring.successor.is_some())
}

/// The holders of `drop` (64 hex digits) a get through `node` returns, by node id.
fn tracker_holders(node: &NodeProc, drop: &str) -> Vec<String> {
    let drop: [u8; 32] = unhex(drop)
        .and_then(|b| b.try_into().ok())
        .expect("a drop id");
    let key: String = holders_key(&drop)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    common::tracker_holders(node, &key)
}

#[test]
fn a_subscriber_that_knows_only_a_tracker_reaches_the_owner_through_it() {
    let (dir, net) = scratch("drops-tracker");
    let dir = dir.path();
    let state = dir.join("tracker");
    let state_text = state.display().to_string();
    let args = [
        "tracker",
        "--name",
        &net,
        "--listen",
        "127.0.0.1:0",
        "--state",
        &state_text,
    ];
    let log = dir.join("tracker.log");
    let tracker = NodeProc::start_args(&net, state, log, &args, &[("RUST_LOG", "info")]);
    // Ring members that dial nobody on their own: the tracker is all either knows, so a
    // link between them can come only from the tracker's holder records.
    let quiet = ["--chord", "--discovery=false"];
    let peers = [tracker.addr.as_str()];
    let a = NodeProc::start_with(dir, &net, "a", "mio", "127.0.0.1:0", &peers, &quiet);
    let s = NodeProc::start_with(dir, &net, "s", "tokio", "127.0.0.1:0", &peers, &quiet);
    let (a_id, s_id) = (a.id(), s.id());
    wait_until("a, s and the tracker form a ring", || {
        [&a, &s, &tracker].iter().all(|n| on_ring(n))
    });

    let a_dir = dir.join("a-drop");
    write(&a_dir.join("readme.txt"), b"found through the tracker\n");
    write(&a_dir.join("data/one.bin"), &[7u8; 70_000]);
    let a_path = a_dir.display().to_string();
    let drop_id = ok(&drop_cmd(&a, "create", &[&a_path])).trim().to_owned();
    assert_eq!(counter(&drop_cmd(&a, "publish", &[&a_path])), 1);
    wait_until("the tracker names a as the drop's holder", || {
        tracker_holders(&tracker, &drop_id) == vec![a_id.clone()]
    });
    assert!(status(&a)[0].tracker.announces >= 1);
    assert!(
        !s.links_to(&a_id) && !a.links_to(&s_id),
        "only the tracker links them"
    );

    let s_dir = dir.join("s-drop");
    let s_path = s_dir.display().to_string();
    let started = std::time::Instant::now();
    ok(&drop_cmd(&s, "subscribe", &[&drop_id, &s_path]));
    let first = tree(&a_dir);
    wait_until("s holds a's files", || tree(&s_dir) == first);
    eprintln!(
        "subscribe to files in place through the tracker: {} ms",
        started.elapsed().as_millis()
    );
    assert!(s.links_to(&a_id), "s dialed the holder the tracker named");
    let report = status(&s);
    assert_eq!(report[0].role, "subscriber");
    assert_eq!(report[0].counter, Some(1));
    let t = report[0].tracker;
    assert!(
        t.lookups >= 1 && t.holders_found >= 1 && t.holders_dialed >= 1,
        "{t:?}"
    );
    // Holding a version, s announces itself: the tracker names both holders now.
    wait_until("the tracker names a and s", || {
        let mut both = vec![a_id.clone(), s_id.clone()];
        both.sort();
        let mut holders = tracker_holders(&tracker, &drop_id);
        holders.sort();
        holders == both
    });
}

/// A `drop create` or `subscribe` that fails changes nothing: no drop is made for a
/// directory weft cannot write to (the drop was made first and stayed, with no folder, one
/// per retry), and no directory is made inside a folder the new one would overlap (it was
/// made first, and replicated).
#[test]
fn a_failed_drop_command_makes_no_drop_and_no_directory() {
    let (dir, net) = scratch("drops-failed");
    let dir = dir.path();
    let a = NodeProc::start(dir, &net, "a", "mio", "127.0.0.1:0", &[]);
    fails_with(&drop_cmd(&a, "create", &["/proc"]), 1, "cannot share /proc");
    assert!(status(&a).is_empty(), "no drop was made");
    let a_dir = dir.join("a-drop");
    write(&a_dir.join("readme.txt"), b"readme\n");
    let a_path = a_dir.display().to_string();
    ok(&drop_cmd(&a, "create", &[&a_path]));
    let inside = a_dir.join("x/y");
    let inside_path = inside.display().to_string();
    fails_with(&drop_cmd(&a, "create", &[&inside_path]), 1, "overlaps");
    let someone = "ab".repeat(32);
    fails_with(
        &drop_cmd(&a, "subscribe", &[&someone, &inside_path]),
        1,
        "overlaps",
    );
    assert!(
        !a_dir.join("x").exists(),
        "nothing made inside the drop folder"
    );
    assert_eq!(status(&a).len(), 1);
    // The node refuses once it holds as many drops as it may: what the command made of the
    // directory goes again (a retry found it not empty, its `.weft` left behind).
    for n in 1..weft_engine::drops::DROPS_MAX {
        let d = dir.join(format!("d{n}")).display().to_string();
        ok(&drop_cmd(&a, "create", &[&d]));
    }
    let absent = dir.join("absent/deeper");
    let absent_path = absent.display().to_string();
    fails_with(
        &drop_cmd(&a, "create", &[&absent_path]),
        1,
        "too many drops",
    );
    assert!(
        !dir.join("absent").exists(),
        "the directories it made are gone"
    );
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).expect("an empty directory");
    let empty_path = empty.display().to_string();
    fails_with(
        &drop_cmd(&a, "subscribe", &[&someone, &empty_path]),
        1,
        "too many drops",
    );
    assert_eq!(
        std::fs::read_dir(&empty).expect("still there").count(),
        0,
        "nothing left in it"
    );
}
