//! Gated copies (a drop's folder, SPEC.md §24): only what the accepted version lists is
//! taken; a read-only copy refuses, reports and can revert local edits.

use super::*;

/// A gate listing `paths` as node `i` holds them (a signed version's file list).
fn gate_of(net: &Net, i: usize, paths: &[&str], read_only: bool) -> Gate {
    let files = paths
        .iter()
        .map(|p| {
            let r = net.nodes[i].replica.record(p).expect("a listed path");
            (p.to_string(), r.entry.clone())
        })
        .collect();
    Gate {
        trusted: BTreeSet::new(),
        files,
        read_only,
    }
}

#[test]
fn a_gated_copy_takes_only_what_its_version_lists_until_the_gate_moves_on() {
    let mut net = Net::new(3);
    let a1 = bytes(40_000, 1);
    net.put(0, "a", a1.clone(), 100);
    net.put(0, "b", bytes(1000, 2), 100);
    net.settle();
    let gate = gate_of(&net, 0, &["a"], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    // A stranger's file the version does not list.
    net.put(2, "evil", bytes(500, 9), 100);
    net.link(0, 1);
    net.link(1, 2);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a1.as_slice()));
    assert_eq!(net.nodes[1].host.data("b"), None);
    assert_eq!(net.nodes[1].host.data("evil"), None);
    // The owner edits `a`: not taken until a version lists the edit.
    let a2 = bytes(40_000, 3);
    net.put(0, "a", a2.clone(), 200);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a1.as_slice()));
    assert!(net.nodes[1].replica.metrics().records_gated >= 3);
    // The next version lists the edit and `b`: the records left out before are asked again.
    let gate = gate_of(&net, 0, &["a", "b"], true);
    let now = net.now;
    net.nodes[1].replica.set_gate(now, gate);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a2.as_slice()));
    assert_eq!(net.nodes[1].host.data("b"), Some(bytes(1000, 2).as_slice()));
    assert_eq!(net.nodes[1].host.data("evil"), None);
    // A version without `b`: the owner's deletion passes.
    let gate = gate_of(&net, 0, &["a"], true);
    net.nodes[1].replica.set_gate(now, gate);
    net.nodes[0].host.items.remove("b");
    net.local(0, LocalChange::Removed { path: "b".into() });
    net.settle();
    assert_eq!(net.nodes[1].host.data("b"), None);
    net.nodes[1].replica.check_invariants().expect("invariants");
}

#[test]
fn a_read_only_copy_reports_a_local_edit_and_never_announces_it() {
    let mut net = Net::new(2);
    let a1 = bytes(20_000, 1);
    net.put(0, "a", a1.clone(), 100);
    net.put(0, "keep", bytes(100, 2), 100);
    net.settle();
    let gate = gate_of(&net, 0, &["a", "keep"], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    net.link(0, 1);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a1.as_slice()));
    // Node 0 takes anything (no gate): whatever node 1 announced would land there.
    net.put(1, "a", bytes(20_000, 7), 300);
    net.put(1, "new", bytes(100, 8), 300);
    net.nodes[1].host.items.remove("keep");
    net.local(
        1,
        LocalChange::Removed {
            path: "keep".into(),
        },
    );
    net.settle();
    for path in ["a", "new", "keep"] {
        let path = path.to_string();
        assert!(
            net.nodes[1]
                .events
                .contains(&ReplicaEvent::LocalEditRefused { path: path.clone() }),
            "{path} reported"
        );
    }
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 3);
    assert_eq!(net.nodes[0].host.data("a"), Some(a1.as_slice()));
    assert_eq!(net.nodes[0].host.data("new"), None);
    assert_eq!(
        net.nodes[0].host.data("keep"),
        Some(bytes(100, 2).as_slice())
    );
    // The refused file is not indexed.
    assert!(net.nodes[1].replica.record("new").is_none());
    net.nodes[1].replica.check_invariants().expect("invariants");
}

#[test]
fn a_read_only_copy_holds_what_its_version_lists_whatever_the_version_vectors_say() {
    let mut net = Net::new(3);
    let a1 = bytes(30_000, 1);
    net.put(0, "a", a1.clone(), 100);
    net.link(0, 1);
    net.settle();
    // Node 1 edits `a` after node 0's version of it (its vector covers node 0's) and adds
    // `extra`, out of node 0's sight.
    net.unlink(0, 1);
    let a2 = bytes(30_000, 2);
    net.put(1, "a", a2.clone(), 200);
    net.put(1, "extra", bytes(700, 3), 200);
    net.settle();
    // The subscriber takes node 1's version first.
    let gate = gate_of(&net, 1, &["a", "extra"], true);
    net.nodes[2].replica.set_gate(net.now, gate);
    net.link(1, 2);
    net.settle();
    assert_eq!(net.nodes[2].host.data("a"), Some(a2.as_slice()));
    assert_eq!(
        net.nodes[2].host.data("extra"),
        Some(bytes(700, 3).as_slice())
    );
    // Then a version listing node 0's `a`, older by the vectors, and no `extra`: nobody
    // deletes `extra`, and node 1 still announces its own `a`.
    let gate = gate_of(&net, 0, &["a"], true);
    let now = net.now;
    net.nodes[2].replica.set_gate(now, gate);
    net.link(0, 2);
    net.settle();
    assert_eq!(net.nodes[2].host.data("a"), Some(a1.as_slice()));
    assert_eq!(net.nodes[2].host.data("extra"), None);
    assert_eq!(net.nodes[2].replica.metrics().conflicts, 0);
    let copies = net.nodes[2]
        .host
        .items
        .keys()
        .filter(|p| p.contains("conflict"))
        .count();
    assert_eq!(copies, 0, "no conflict copy at a read-only copy");
    net.nodes[2].replica.check_invariants().expect("invariants");
}

#[test]
fn a_refused_edit_does_not_stall_the_fetch_of_the_listed_content() {
    let mut net = Net::new(2);
    let a1 = bytes(30_000, 1);
    net.put(0, "a", a1.clone(), 100);
    net.settle();
    let gate = gate_of(&net, 0, &["a"], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    // Before the fetch lands, something else appears at `a` on the subscriber's disk (a
    // file committed before a crash whose record was not persisted, say).
    net.put(1, "a", bytes(9_000, 5), 150);
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 1);
    net.link(0, 1);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a1.as_slice()));
    net.nodes[1].replica.check_invariants().expect("invariants");
}

/// A refused edit at a path the copy never held, then a peer's deletion record there (installed
/// in place: nothing present to remove), then a version listing new content at the path: the
/// fetch expects the refused file the host reported, and lands. Installing the deletion
/// forgot that report, so the fetch expected nothing there and the host answered `Changed`
/// at every retry (a 3,000-seed drops sweep, seed 2622, never converged).
#[test]
fn a_refused_edit_under_a_deletion_record_does_not_stall_a_later_fetch() {
    let mut net = Net::new(2);
    net.put(0, "a", bytes(30_000, 1), 100);
    net.settle();
    net.nodes[0].host.items.remove("a");
    net.local(0, LocalChange::Removed { path: "a".into() });
    net.settle();
    let gate = gate_of(&net, 0, &[], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    net.put(1, "a", bytes(9_000, 5), 150);
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 1);
    net.link(0, 1);
    net.settle();
    assert!(net.nodes[1].replica.record("a").is_some_and(|r| r.deleted));
    let a2 = bytes(30_000, 2);
    net.put(0, "a", a2.clone(), 200);
    net.settle();
    let gate = gate_of(&net, 0, &["a"], true);
    let now = net.now;
    net.nodes[1].replica.set_gate(now, gate);
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a2.as_slice()));
    assert!(net.nodes[1].replica.is_idle());
    net.nodes[1].replica.check_invariants().expect("invariants");
}

#[test]
fn a_rescan_of_what_a_read_only_copy_already_indexes_is_no_refused_edit() {
    let mut net = Net::new(2);
    net.put(0, "a", bytes(20_000, 1), 100);
    net.settle();
    let gate = gate_of(&net, 0, &["a"], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    net.link(0, 1);
    net.settle();
    // The owner's next version lists another `a`, which node 1 has not fetched yet (the link
    // is down) when its scanner reports its own `a` again, unchanged but for the mtime.
    net.unlink(0, 1);
    net.put(0, "a", bytes(20_000, 2), 200);
    net.settle();
    let gate = gate_of(&net, 0, &["a"], true);
    let now = net.now;
    net.nodes[1].replica.set_gate(now, gate);
    net.put(1, "a", bytes(20_000, 1), 300);
    net.settle();
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 0);
    assert!(!net.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::LocalEditRefused { .. })));
    // A real edit is still refused.
    net.put(1, "a", bytes(20_000, 3), 400);
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 1);
    // And the listed `a` lands once the owner is back.
    net.link(0, 1);
    net.settle();
    assert_eq!(
        net.nodes[1].host.data("a"),
        Some(bytes(20_000, 2).as_slice())
    );
    net.nodes[1].replica.check_invariants().expect("invariants");
}

#[test]
fn revert_puts_back_what_a_read_only_copys_version_lists() {
    let mut net = Net::new(2);
    let a1 = bytes(20_000, 1);
    net.put(0, "a", a1.clone(), 100);
    net.put(0, "keep", bytes(100, 2), 100);
    net.settle();
    let gate = gate_of(&net, 0, &["a", "keep"], true);
    net.nodes[1].replica.set_gate(net.now, gate);
    net.link(0, 1);
    net.settle();
    // Three refused edits: a changed file, a new one, a removed one.
    net.put(1, "a", bytes(20_000, 7), 300);
    net.put(1, "new", bytes(100, 8), 300);
    net.nodes[1].host.items.remove("keep");
    net.local(
        1,
        LocalChange::Removed {
            path: "keep".into(),
        },
    );
    net.settle();
    assert_eq!(net.nodes[1].replica.metrics().local_edits_refused, 3);
    let now = net.now;
    net.nodes[1]
        .replica
        .handle_command(now, ReplicaCommand::Revert)
        .expect("a read-only copy reverts");
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(a1.as_slice()));
    assert_eq!(
        net.nodes[1].host.data("keep"),
        Some(bytes(100, 2).as_slice())
    );
    assert_eq!(net.nodes[1].host.data("new"), None);
    assert!(net.nodes[1].replica.record("new").is_none());
    // Nothing left to revert.
    assert_eq!(net.nodes[1].replica.revert(now), 0);
    net.nodes[1].replica.check_invariants().expect("invariants");
}
