//! `weft tracker` (issue 21): a tracker process and two `weft node --chord` processes that join
//! through it. A holder record put through one node is found through the other; a forged one
//! (its holder is not its writer) is stored on no replica.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{scratch, tracker_holders, wait_until, NodeProc};
use weft_drivers::report::{hex_id, IdReport};
use weft_engine::protocol::{holders_key, HolderRecord, HOLDER_LIFETIME};
use weft_engine::Identity;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The node's own key, from its state folder.
fn identity(node: &NodeProc) -> Identity {
    let key = weft_drivers::state::read_key(&node.state)
        .expect("a readable key")
        .expect("a started node has a key");
    Identity::from_secret(&key)
}

/// `signer`'s holder record of `drop`, expiring `HOLDER_LIFETIME` from now, as hex.
fn record(signer: &Identity, drop: [u8; 32], addr: &str) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let expires = now_ms + HOLDER_LIFETIME.as_millis() as u64;
    let r = HolderRecord::sign(drop, &signer.public_key(), addr.into(), expires, |m| {
        signer.sign(m)
    });
    hex(&r.encode())
}

#[test]
fn nodes_join_through_a_tracker_and_only_valid_holder_records_are_stored() {
    let (dir, net) = scratch("e2e_tracker");
    let state = dir.path().join("tracker");
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
    let log = dir.path().join("tracker.log");
    let tracker = NodeProc::start_args(&net, state, log, &args, &[("RUST_LOG", "info")]);
    let tracker_id = tracker.id();
    let peers = [tracker.addr.as_str()];
    let a = NodeProc::start_with(
        dir.path(),
        &net,
        "a",
        "mio",
        "127.0.0.1:0",
        &peers,
        &["--chord"],
    );
    let b = NodeProc::start_with(
        dir.path(),
        &net,
        "b",
        "tokio",
        "127.0.0.1:0",
        &peers,
        &["--chord"],
    );
    for n in [&a, &b] {
        wait_until("a node links to the tracker", || n.links_to(&tracker_id));
    }
    // The tracker is a ring member: it gets a successor once the nodes have joined.
    wait_until("the tracker has a ring successor", || {
        let out = tracker.command("id", &["--json"]);
        let id: Option<IdReport> = serde_json::from_slice(&out.stdout).ok();
        id.and_then(|id| id.chord)
            .is_some_and(|ring| ring.joined && ring.successor.is_some())
    });
    let (ka, kb) = (identity(&a), identity(&b));
    assert_eq!(hex_id(&ka.node_id()), a.id());
    let drop = [0x42; 32];
    let key = hex(&holders_key(&drop));

    // a's own record, put through a: once the ring has settled it reaches every replica.
    let valid = record(&ka, drop, &a.addr);
    wait_until("a's holder record is stored on every replica node", || {
        let out = a.command("put", &["--hex", &key, &valid, "--lifetime-ms", "300000"]);
        let text = stdout(&out);
        let line = text.trim();
        out.status.success()
            && line.strip_prefix("stored on ").is_some_and(|rest| {
                let (n, m) = rest.split_once(" of ").unwrap_or(("0", "1 replicas"));
                n != "0" && m == format!("{n} replicas")
            })
    });
    wait_until("b finds a as a holder", || {
        tracker_holders(&b, &key) == vec![a.id()]
    });

    // b's record put through a: its holder is not its writer. Every replica refuses it.
    let forged = record(&kb, drop, &b.addr);
    let out = a.command("put", &["--hex", &key, &forged]);
    assert!(!out.status.success(), "{out:?}");
    // A put of text that is not hex is refused (a bad argument, before the node is asked).
    let out = a.command("put", &["--hex", &key, "zz"]);
    assert!(!out.status.success(), "{out:?}");
    for n in [&a, &b, &tracker] {
        assert_eq!(
            tracker_holders(n, &key),
            vec![a.id()],
            "{}",
            n.state.display()
        );
    }
    // The tracker runs Chord and holds the key's records like any ring member.
    let out = tracker.command("get", &["--hex", &key]);
    assert!(out.status.success(), "{out:?}");
}
