//! `.weftignore` rules set by command (`ReplicaCommand::SetIgnoreRules`): an ignored path is
//! neither announced from a node's own changes nor written from a peer's records.

use super::*;
use crate::replicate::paths::IgnoreRules;

fn set_rules(net: &mut Net, i: usize, text: &str) {
    let (rules, errors) = IgnoreRules::parse(text);
    assert!(errors.is_empty(), "{errors:?}");
    let now = net.now;
    let command = ReplicaCommand::SetIgnoreRules(rules);
    net.nodes[i]
        .replica
        .handle_command(now, command)
        .expect("rules are taken");
}

fn paths(net: &Net, i: usize) -> Vec<String> {
    net.records(i).into_iter().map(|(p, ..)| p).collect()
}

#[test]
fn a_nodes_own_ignored_changes_are_not_announced() {
    let mut net = pair();
    set_rules(&mut net, 0, "*.log\nbuild/\n");
    net.put(0, "keep.txt", bytes(1000, 1), 100);
    net.put(0, "debug.log", bytes(1000, 2), 100);
    net.put(0, "build/out.bin", bytes(1000, 3), 100);
    net.put(0, "src/deep.log", bytes(1000, 4), 100);
    net.settle();
    assert_eq!(paths(&net, 0), ["keep.txt"]);
    assert!(net.nodes[1].host.data("keep.txt").is_some());
    for ignored in ["debug.log", "build/out.bin", "src/deep.log"] {
        assert_eq!(net.nodes[1].host.data(ignored), None, "{ignored}");
    }
}

#[test]
fn a_peers_records_at_ignored_paths_are_not_written() {
    let mut net = pair();
    set_rules(&mut net, 1, "*.log\n");
    net.put(0, "keep.txt", bytes(1000, 5), 100);
    net.put(0, "noise.log", bytes(1000, 6), 100);
    net.settle();
    assert!(net.nodes[1].host.data("keep.txt").is_some());
    assert_eq!(net.nodes[1].host.data("noise.log"), None);
    assert_eq!(paths(&net, 1), ["keep.txt"]);
    assert!(net.nodes.iter().all(|n| n.replica.is_idle()));
}

#[test]
fn a_file_moved_to_an_ignored_path_is_removed_from_the_others() {
    let mut net = pair();
    set_rules(&mut net, 0, "attic/\n");
    net.put(0, "old.txt", bytes(1000, 7), 100);
    net.settle();
    assert!(net.nodes[1].host.data("old.txt").is_some());
    net.mv(0, "old.txt", "attic/old.txt");
    net.settle();
    assert_eq!(net.nodes[1].host.data("old.txt"), None);
    assert_eq!(net.nodes[1].host.data("attic/old.txt"), None);
}

#[test]
fn rules_set_again_replace_the_old_ones() {
    let mut net = pair();
    set_rules(&mut net, 0, "*.tmp\n");
    set_rules(&mut net, 0, "");
    net.put(0, "now-sent.tmp", bytes(1000, 8), 100);
    net.settle();
    assert!(net.nodes[1].host.data("now-sent.tmp").is_some());
}

#[test]
fn records_dropped_while_ignored_are_taken_once_the_rule_goes() {
    let mut net = pair();
    set_rules(&mut net, 1, "*.log\n");
    net.put(0, "noise.log", bytes(1000, 9), 100);
    net.settle();
    assert_eq!(net.nodes[1].host.data("noise.log"), None);
    // Its sequence counted as seen: only asking for the whole index again brings it.
    set_rules(&mut net, 1, "*.tmp\n");
    net.settle();
    assert!(net.nodes[1].host.data("noise.log").is_some());
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_peers_move_to_a_path_ignored_here_removes_the_old_path() {
    let mut net = pair();
    set_rules(&mut net, 1, "attic/\n");
    net.put(0, "old.txt", bytes(1000, 10), 100);
    net.settle();
    assert!(net.nodes[1].host.data("old.txt").is_some());
    net.mv(0, "old.txt", "attic/old.txt");
    net.settle();
    assert_eq!(net.nodes[1].host.data("attic/old.txt"), None);
    assert_eq!(net.nodes[1].host.data("old.txt"), None);
    assert_eq!(paths(&net, 1), ["old.txt"]);
    assert!(net.records(1).iter().all(|r| r.1), "{:?}", net.records(1));
}

/// A peer's rename away from a path this node ignores does not touch the file there (an
/// ignored path is never written): the new path comes as a new file.
#[test]
fn a_peers_rename_from_an_ignored_path_leaves_the_file_there() {
    let mut net = pair();
    let data = bytes(1000, 9);
    net.put(0, "notes.txt", data.clone(), 100);
    net.settle();
    assert_eq!(net.nodes[1].host.data("notes.txt"), Some(data.as_slice()));
    set_rules(&mut net, 1, "notes.txt\n");
    net.mv(0, "notes.txt", "renamed.txt");
    net.settle();
    assert_eq!(net.nodes[1].host.data("renamed.txt"), Some(data.as_slice()));
    assert_eq!(
        net.nodes[1].host.data("notes.txt"),
        Some(data.as_slice()),
        "the ignored file was moved"
    );
}

/// Rules changed while the node was down still count as a change: what the old rules
/// dropped is asked for again.
#[test]
fn a_path_unignored_while_the_node_was_down_is_fetched_after_the_restart() {
    let mut net = pair();
    set_rules(&mut net, 1, "*.log\n");
    let data = bytes(1000, 10);
    net.put(0, "kept.log", data.clone(), 100);
    net.settle();
    assert_eq!(net.nodes[1].host.data("kept.log"), None);
    net.unlink(0, 1);
    net.restart(1, 77);
    net.settle();
    // The rules file was emptied meanwhile: the host gives no rules at the start.
    set_rules(&mut net, 1, "");
    net.link(0, 1);
    net.settle();
    assert_eq!(net.nodes[1].host.data("kept.log"), Some(data.as_slice()));
}
