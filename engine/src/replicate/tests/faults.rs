//! Faults: corrupt blocks, restarts and crashes (sequence numbers and counters never given
//! twice), reconnects, a reset store, a full disk, failed commits, a source that lost a
//! version.

use super::*;

#[test]
fn corrupt_blocks_are_refetched_and_the_peer_is_cut_off_after_three() {
    let mut net = Net::new(3);
    let data = bytes(600_000, 10);
    net.put(0, "f", data.clone(), 100);
    net.link(0, 2);
    net.settle();
    assert_eq!(net.nodes[2].host.data("f"), Some(data.as_slice()));
    net.corrupt = Some(0);
    net.link(1, 0);
    net.link(1, 2);
    net.settle();
    assert_eq!(net.nodes[1].host.data("f"), Some(data.as_slice()));
    let corrupt = net.nodes[1]
        .events
        .iter()
        .filter(
            |e| matches!(e, ReplicaEvent::CorruptBlock { peer, .. } if *peer == net.nodes[0].id),
        )
        .count();
    assert_eq!(corrupt, 3);
    assert_eq!(net.faults, vec![(0, 1, ReplicaFault::CorruptBlocks)]);
    assert!(!net.links.contains(&(0, 1)));
}

#[test]
fn a_restart_resumes_a_half_fetched_file_asking_only_for_missing_blocks() {
    let mut net = pair();
    let data = bytes(500_000, 11);
    net.put(0, "big", data.clone(), 100);
    net.hereis_budget = Some(10);
    for _ in 0..10_000 {
        net.round();
        if net.hereis_budget == Some(0) {
            break;
        }
    }
    net.round();
    net.unlink(0, 1);
    net.settle();
    assert_eq!(net.nodes[1].host.data("big"), None);
    let blocks = chunk(&data, Tier::MIN);
    let written: BTreeSet<[u8; 32]> = net.wants.iter().flat_map(|w| w.2.iter().copied()).collect();
    assert!(written.len() < blocks.len());
    // The temp holds the first blocks; the state names them written.
    net.restart(1, 42);
    net.hereis_budget = None;
    net.wants.clear();
    net.settle();
    net.link(0, 1);
    net.settle();
    assert_eq!(net.nodes[1].host.data("big"), Some(data.as_slice()));
    let asked: usize = net
        .wants
        .iter()
        .filter(|w| w.1 == 0)
        .map(|w| w.2.len())
        .sum();
    assert!(asked > 0);
    assert_eq!(
        asked + 10,
        blocks.len(),
        "10 blocks arrived before the restart"
    );
}

/// Seed 402 of the sweep: a node crashed twice, the second time before it had persisted
/// anything since the first restart. Both restarts restored the same persisted sequence and
/// jumped to the same numbers, so the changes of the second life were announced under
/// numbers a peer had already seen from the first, and that peer skipped them for good.
#[test]
fn two_restarts_without_a_persist_between_hand_out_no_sequence_number_twice() {
    let mut net = pair();
    net.put(0, "a", bytes(1_000, 60), 100);
    net.settle();
    // First restart: a change is made and announced well within the persist delay.
    net.restart(0, 60);
    net.link(0, 1);
    for _ in 0..20 {
        net.round();
    }
    for i in 0..5 {
        net.put(0, "b", bytes(1_000, 61 + i), 200 + i as i64);
        for _ in 0..10 {
            net.round();
        }
    }
    assert!(net.nodes[1].replica.record("b").is_some());
    // A crash before the state was persisted again, and a second restart (whose scan finds
    // `b`, which the restored index lacks).
    net.restart(0, 61);
    net.link(0, 1);
    for _ in 0..20 {
        net.round();
    }
    net.put(0, "b", bytes(1_000, 65), 204);
    net.put(0, "c", bytes(1_000, 62), 300);
    net.settle();
    let c = bytes(1_000, 62);
    assert!(
        net.nodes[1].host.data("c") == Some(c.as_slice()),
        "node 1 skipped a change it took for one seen"
    );
}

#[test]
fn an_edit_after_a_crash_that_lost_announced_edits_wins_everywhere() {
    let mut net = pair();
    net.put(0, "a", bytes(1_000, 70), 100);
    net.settle();
    // Two edits announced and taken by node 1 well within the persist delay, then a crash
    // before node 0 stored them: its restored index knows only the first version of `a`.
    for i in 0..2 {
        net.put(0, "a", bytes(1_000, 71 + i), 200 + i as i64);
        // 100 ms of rounds and timers: well under the persist delay (500 ms).
        for _ in 0..10 {
            net.now = net.now + Duration::from_millis(10);
            let now = net.now;
            for n in &mut net.nodes {
                if n.replica.poll_timeout().is_some_and(|t| t <= now) {
                    n.replica.handle_timeout(now);
                }
            }
            while net.round() {}
        }
    }
    assert_eq!(
        net.nodes[1].host.data("a"),
        Some(bytes(1_000, 72).as_slice())
    );
    net.restart(0, 70);
    net.link(0, 1);
    for _ in 0..20 {
        net.round();
    }
    // The user's next edit must not take a counter the lost edits gave: the version would
    // look older than node 1's, node 1 would ignore it, and node 0 would adopt node 1's.
    let latest = bytes(1_000, 79);
    net.put(0, "a", latest.clone(), 300);
    net.settle();
    for i in 0..2 {
        assert_eq!(
            net.nodes[i].host.data("a"),
            Some(latest.as_slice()),
            "node {i}"
        );
    }
    let high = net.nodes[0]
        .replica
        .record("a")
        .map(|r| r.entry.version.clone());
    assert!(
        high.is_some_and(|v| v
            .counters
            .iter()
            .any(|c| c.value > super::replica::COUNTER_RESTART_GAP)),
        "the restart jumped the node's counter"
    );
}

#[test]
fn list_since_after_a_reconnect_sends_only_newer_records() {
    let mut net = pair();
    for k in 0..5 {
        net.put(0, &format!("f{k}"), bytes(1000, 20 + k), 100);
    }
    net.settle();
    net.unlink(0, 1);
    net.put(0, "late", bytes(1000, 30), 100);
    net.settle();
    net.index_sent.clear();
    net.link(0, 1);
    net.settle();
    let sent: usize = net
        .index_sent
        .iter()
        .filter(|s| s.0 == 0 && s.1 == 1)
        .map(|s| s.2)
        .sum();
    assert_eq!(sent, 1);
    assert!(net.nodes[1].host.data("late").is_some());
}

#[test]
fn a_store_reset_makes_the_peer_ask_for_everything() {
    let mut net = pair();
    for k in 0..3 {
        net.put(0, &format!("f{k}"), bytes(1000, 40 + k), 100);
    }
    net.settle();
    let old_id = net.nodes[1].replica.index_id();
    net.unlink(0, 1);
    net.nodes[1].host = Host::default();
    net.restart(1, 99);
    net.settle();
    assert_ne!(net.nodes[1].replica.index_id(), old_id);
    net.index_sent.clear();
    net.lists.clear();
    net.link(0, 1);
    net.settle();
    let from_1 = net.lists.iter().find(|l| l.0 == 1).expect("a LIST").2;
    assert_eq!((from_1.index_id, from_1.since), (0, 0));
    let sent: usize = net
        .index_sent
        .iter()
        .filter(|s| s.0 == 0 && s.1 == 1)
        .map(|s| s.2)
        .sum();
    assert_eq!(sent, 3);
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_full_disk_is_reported_and_the_file_lands_after_the_retry() {
    let mut net = pair();
    net.nodes[1].host.disk_full_writes = 1;
    let data = bytes(200_000, 15);
    net.put(0, "f", data.clone(), 100);
    net.settle();
    assert_eq!(net.nodes[1].host.disk_full_writes, 0, "a write failed");
    assert_eq!(
        net.nodes[1]
            .events
            .iter()
            .filter(|e| matches!(
                e,
                ReplicaEvent::StorageFailed { path: Some(p), error: StorageError::DiskFull } if p == "f"
            ))
            .count(),
        1
    );
    assert_eq!(net.nodes[1].replica.metrics().storage_failures, 1);
    assert_eq!(net.nodes[1].host.data("f"), Some(data.as_slice()));
    assert!(net.nodes[1].host.temps.is_empty());
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn failed_commits_are_retried_with_backoff_until_the_file_lands() {
    let mut net = Net::new(3);
    net.link(0, 1);
    net.link(0, 2);
    net.settle();
    // Three commits at node 1 fail, and one at node 2: each retries after its backoff
    // (100, 200, 400 ms), while other files' blocks are in flight.
    net.nodes[1].host.failing_commits = 3;
    net.nodes[2].host.failing_commits = 1;
    let files: Vec<(String, Vec<u8>)> = (0..4u64)
        .map(|k| (format!("f{k}"), bytes(50_000 + 30_000 * k as usize, 70 + k)))
        .collect();
    for (path, data) in &files {
        net.put(0, path, data.clone(), 100);
    }
    net.settle();
    for n in [1, 2] {
        assert_eq!(
            net.nodes[n].host.failing_commits, 0,
            "node {n}'s commits failed"
        );
        for (path, data) in &files {
            assert_eq!(
                net.nodes[n].host.data(path),
                Some(data.as_slice()),
                "{path}"
            );
        }
        assert!(net.nodes[n].host.temps.is_empty());
    }
    assert_eq!(net.nodes[1].replica.metrics().storage_failures, 3);
    assert!(net.nodes[1].replica.retries.is_empty());
}

#[test]
fn a_fetch_whose_only_source_lost_that_version_is_dropped_and_settled() {
    let mut net = pair();
    net.put(1, "f", bytes(50_000, 50), 100);
    net.settle();
    net.put(1, "f", bytes(50_000, 51), 200);
    net.hereis_budget = Some(0);
    for _ in 0..200 {
        net.round();
    }
    assert!(
        net.nodes[0].replica.applies.contains_key("f"),
        "node 0 fetches the second version, whose blocks never come"
    );
    // Node 1 loses its state (a crash before it was stored) and finds other content.
    net.unlink(0, 1);
    net.nodes[1].host.state = None;
    net.restart(1, 77);
    net.settle();
    net.put(1, "f", bytes(50_000, 52), 300);
    net.hereis_budget = None;
    net.link(0, 1);
    net.settle();
    assert!(
        !net.nodes[0].replica.applies.contains_key("f"),
        "the stalled fetch is gone"
    );
    assert_eq!(net.records(0), net.records(1));
    assert_eq!(net.nodes[0].host.data("f"), net.nodes[1].host.data("f"));
}

/// The sender's bulk queue, full, dropped one piece of a block: the pieces after it are no
/// fault of the (honest) sender, and the block is asked again once it times out.
#[test]
fn a_piece_dropped_by_the_sender_is_no_fault_and_the_block_comes_again() {
    let mut net = pair();
    let data = bytes(400_000, 12);
    let c = net.nodes[0].host.put_one_block("one", data.clone(), 100);
    net.local(0, c);
    net.drop_pieces_at = vec![131_072];
    net.settle();
    assert!(net.drop_pieces_at.is_empty(), "a piece was dropped");
    assert_eq!(net.faults, vec![]);
    assert_eq!(net.nodes[1].host.data("one"), Some(data.as_slice()));
    // Asked twice: the first copy broke off.
    let asked = net.wants.iter().filter(|w| w.0 == 1).count();
    assert_eq!(asked, 2);
}

/// A record naming a block by the hash of another's content but a wrong length (a lying or
/// broken peer's), shorter or longer, does not hold up the files that name it rightly, nor
/// get their honest server disconnected for sending the block's real length, and the
/// network settles (the wrong length is not asked again of a peer that showed it has
/// another).
#[test]
fn a_block_claimed_at_a_wrong_length_does_not_hold_up_the_right_one() {
    // (the block's length, the length claimed): shorter, longer, and longer by whole pieces
    // (nothing but its hash shows where the block ends).
    for (len, wrong) in [(40_000, 20_000u32), (40_000, 60_000), (131_072, 262_144)] {
        let mut net = Net::new(3);
        net.link(0, 1);
        net.link(2, 1);
        let data = bytes(len, 14);
        let c = net.nodes[0].host.put_one_block("right", data.clone(), 100);
        net.local(0, c);
        // Node 2's file names the same hash at another length (and cannot serve it).
        let hash = *blake3::hash(&data).as_bytes();
        let block = weft_protocol::Block {
            offset: 0,
            len: wrong,
            hash,
        };
        let other = bytes(wrong as usize, 15);
        let c = net.nodes[2]
            .host
            .put_blocks("wrong", other, 100, vec![block]);
        net.local(2, c);
        net.settle();
        assert_eq!(net.faults, vec![], "{wrong}");
        assert_eq!(
            net.nodes[1].host.data("right"),
            Some(data.as_slice()),
            "{wrong}"
        );
    }
}

/// A file this node holds, whose block another record claims at a wrong length, still
/// takes a peer's later change: that block feeds no fetch at the wrong length, so nothing
/// waits for it.
#[test]
fn a_block_claimed_at_a_wrong_length_holds_back_no_change_of_its_holder() {
    let mut net = Net::new(3);
    net.link(0, 1);
    net.link(2, 1);
    let data = bytes(40_000, 16);
    let c = net.nodes[0].host.put_one_block("right", data.clone(), 100);
    net.local(0, c);
    net.settle();
    assert_eq!(net.nodes[1].host.data("right"), Some(data.as_slice()));
    let block = weft_protocol::Block {
        offset: 0,
        len: 20_000,
        hash: *blake3::hash(&data).as_bytes(),
    };
    let c = net.nodes[2]
        .host
        .put_blocks("wrong", bytes(20_000, 17), 100, vec![block]);
    net.local(2, c);
    net.settle();
    net.nodes[0].host.items.remove("right");
    net.local(
        0,
        LocalChange::Removed {
            path: "right".into(),
        },
    );
    net.settle();
    assert_eq!(net.nodes[1].host.data("right"), None);
    assert_eq!(net.faults, vec![]);
}

/// An IMOVED of a directory (no node's scanner reports one; only a bad peer sends it) is
/// not a rename of the directory: renaming it would move every file under it, whatever
/// their versions here, ignored ones included. The new path is made, and the old one goes
/// only as a deletion would (a directory only once empty).
#[test]
fn an_imoved_of_a_directory_moves_nothing_under_it() {
    let mut net = Net::new(3);
    let c = net.nodes[0]
        .host
        .put_item("dir", FileKind::Directory, "", 7);
    net.local(0, c);
    let data = bytes(3_000, 91);
    net.put(0, "dir/f", data.clone(), 100);
    net.settle();
    let local = net.nodes[0].replica.record("dir").expect("dir").clone();
    let outsider = short_id(&net.nodes[2].id);
    let from_version = local.entry.version.bumped(outsider);
    let mut to = local.entry.clone();
    to.path = "x".into();
    to.version = from_version.bumped(outsider);
    to.modified_by = outsider;
    let m = ReplicaMessage::IMoved(weft_protocol::IMoved {
        folder: folder(),
        index_id: 7,
        entries: vec![weft_protocol::Moved {
            from: "dir".into(),
            from_version,
            to,
        }],
    });
    inject(&mut net, 0, m);
    assert_eq!(net.nodes[0].host.data("dir/f"), Some(data.as_slice()));
    assert!(net.nodes[0].host.data("x/f").is_none());
    let renames = net.count_requests(0, |r| matches!(r, StorageRequest::Rename { .. }));
    assert_eq!(renames, 0, "no rename");
}

/// Forged counters of this node's own (SPEC.md §22.3): a record naming one past
/// `COUNTER_HIGH_MAX` (`u64::MAX`, or just past the bound) is refused; one at the bound is
/// taken. Either way this node's later changes, of that path and of others, still reach its
/// peers as newer versions, each of them, and the peers' edits of them come back.
#[test]
fn forged_counters_of_this_node_leave_its_later_changes_newer() {
    let mut net = Net::new(3);
    net.link(0, 1);
    net.put(0, "mine", bytes(100, 1), 100);
    net.settle();
    let me = short_id(&net.nodes[0].id);
    let outsider = short_id(&net.nodes[2].id);
    let forged = |path: &str, counter: u64| {
        let LocalChange::Changed(mut entry) = Host::default().put(path, Vec::new(), 100) else {
            unreachable!()
        };
        let mut counters = [(me, counter), (outsider, 1)];
        counters.sort_unstable();
        entry.version = version_of(&counters);
        entry.modified_by = outsider;
        entry.sequence = 1;
        entry
    };
    let bound = 1 << 62;
    let have = ReplicaMessage::IHave(weft_protocol::IHave {
        folder: folder(),
        index_id: 7,
        entries: vec![
            forged("saturated", u64::MAX),
            forged("past", bound + 1),
            forged("edge", bound),
        ],
    });
    inject(&mut net, 0, have);
    assert!(
        net.nodes[0].replica.record("saturated").is_none(),
        "refused"
    );
    assert!(net.nodes[0].replica.record("past").is_none(), "refused");
    assert!(net.nodes[0].replica.record("edge").is_some(), "taken");
    for (n, mtime_ms) in [(2, 200), (3, 300)] {
        for path in ["mine", "edge"] {
            net.put(0, path, bytes(100, n), mtime_ms);
        }
        net.settle();
        for path in ["mine", "edge"] {
            assert!(
                net.nodes[1].host.data(path) == Some(bytes(100, n).as_slice()),
                "change {n} of {path} did not reach node 1"
            );
        }
    }
    // Node 1's edits of them, carrying node 0's counters past the bound, come back: node 0
    // gave those counters itself.
    for path in ["mine", "edge"] {
        net.put(1, path, bytes(100, 4), 400);
    }
    net.settle();
    for path in ["mine", "edge"] {
        assert!(
            net.nodes[0].host.data(path) == Some(bytes(100, 4).as_slice()),
            "node 1's edit of {path} did not reach node 0"
        );
    }
    assert_eq!(net.faults, vec![]);
    // Each change newer than the last, not equal to it: no conflict copy anywhere.
    for i in 0..2 {
        let paths: Vec<String> = net.records(i).into_iter().map(|r| r.0).collect();
        assert!(!paths.iter().any(|p| p.contains(".conflict-")), "{paths:?}");
    }
}

/// A shutdown persists what changed at once, even while an earlier persist is still out,
/// and then every change an input makes during the shutdown (a storage step ending): a
/// change made under an outstanding persist was never saved, and came back at the next
/// start as a local change of the node's own.
#[test]
fn a_shutdown_persists_every_change_even_with_a_persist_out() {
    let mut r = replica(NodeId([9; 32]), 9);
    let mut host = Host::default();
    let now = Instant(1_000_000_000);
    // Answers every request but persists, whose tokens it returns.
    let drain = |r: &mut Replica, host: &mut Host| -> Vec<u64> {
        let mut persists = Vec::new();
        while let Some(out) = r.poll_output() {
            if let ReplicaOutput::Request { token, request } = out {
                if matches!(request, StorageRequest::PersistState { .. }) {
                    persists.push(token);
                } else {
                    let result = host.answer(&request);
                    r.handle_completed(now, token, result);
                }
            }
        }
        persists
    };
    let first = drain(&mut r, &mut host);
    assert_eq!(first.len(), 1, "the start's persist, left out");
    let change = host.put("a", bytes(5_000, 1), 100);
    r.handle_local(now, change);
    assert!(
        drain(&mut r, &mut host).is_empty(),
        "one persist out at a time"
    );
    r.persist_now(now);
    let second = drain(&mut r, &mut host);
    assert_eq!(second.len(), 1, "the shutdown persists the change");
    for token in first.into_iter().chain(second) {
        r.handle_completed(now, token, StorageResult::Done);
    }
    assert!(drain(&mut r, &mut host).is_empty(), "nothing more changed");
    // A change during the shutdown is persisted once its input is handled, not after the
    // persist delay (timers may never run again).
    let change = host.put("b", bytes(5_000, 2), 100);
    r.handle_local(now, change);
    let third = drain(&mut r, &mut host);
    assert_eq!(third.len(), 1);
    // One that fails is not tried again at once (a failing disk), only with the next change.
    let failed = StorageResult::Failed(StorageError::Io("a failing disk".into()));
    r.handle_completed(now, third[0], failed);
    assert!(
        drain(&mut r, &mut host).is_empty(),
        "not retried without end"
    );
    let change = host.put("c", bytes(5_000, 3), 100);
    r.handle_local(now, change);
    assert_eq!(
        drain(&mut r, &mut host).len(),
        1,
        "the next change is persisted"
    );
}

/// A node whose store was reset (or whose state could not be read) starts its counters past
/// every run before it (`incarnation × COUNTER_RESTART_GAP`): counting again from 0, its
/// edit of a file, made before its peers' records came back, looked older than the version
/// its peers held from its earlier runs, and was overwritten by it.
#[test]
fn an_edit_after_a_store_reset_wins_over_the_nodes_older_versions() {
    let mut net = pair();
    net.put(0, "doc", bytes(3_000, 1), 100);
    net.settle();
    // Node 0 runs again twice (incarnations 2 and 3), editing each time.
    for (incarnation, seed) in [(2u64, 31u8), (3, 32)] {
        net.unlink(0, 1);
        net.restart(0, seed);
        net.nodes[0].replica.set_incarnation(incarnation);
        net.settle();
        net.link(0, 1);
        net.put(
            0,
            "doc",
            bytes(3_000, seed.into()),
            100 + u64::from(seed) as i64,
        );
        net.settle();
    }
    assert!(net.nodes[1].host.data("doc") == Some(bytes(3_000, 32).as_slice()));
    // Its store is lost; at incarnation 4 it edits the file before it hears its peer.
    net.unlink(0, 1);
    net.nodes[0].host.state = None;
    net.restart(0, 40);
    net.nodes[0].replica.set_incarnation(4);
    net.settle();
    let edit = bytes(3_000, 99);
    net.put(0, "doc", edit.clone(), 999);
    net.settle();
    net.link(0, 1);
    net.settle();
    for i in 0..2 {
        assert!(
            net.nodes[i].host.data("doc") == Some(edit.as_slice()),
            "node {i}: the edit after the reset was overwritten"
        );
    }
}

/// A version applied and committed just before a crash, within the persist delay: the
/// restored index still names the old version, and the restart's scan finds the new
/// content. Taken for a local edit, it was announced as a version of this node's,
/// concurrent with whatever the peer did since: a deletion there lost to it (the present
/// side wins), and the file came back everywhere.
#[test]
fn a_version_committed_just_before_a_crash_is_not_taken_for_a_local_edit() {
    let (mut net, edit) = crashed_just_after_a_commit();
    net.restart(1, 80);
    // Node 0 deletes the file while node 1 is down.
    net.nodes[0].host.items.remove("a");
    net.local(0, LocalChange::Removed { path: "a".into() });
    net.settle();
    // Node 1's scan after the restart finds the committed content.
    let found = net.nodes[1].host.put("a", edit, 200);
    net.local(1, found);
    net.settle();
    net.link(0, 1);
    net.settle();
    for i in 0..2 {
        let paths: Vec<&String> = net.nodes[i].host.items.keys().collect();
        assert!(paths.is_empty(), "node {i} holds {paths:?}");
        assert_eq!(
            net.nodes[i].replica.record("a").map(|r| r.deleted),
            Some(true)
        );
    }
    // Node 1 made no version of its own.
    let n1 = short_id(&net.nodes[1].id);
    let versions = net.records(1);
    assert!(
        versions.iter().all(|(_, _, v)| v.get(n1) == 0),
        "{versions:?}"
    );
}

/// Node 1 commits node 0's edit of `a` and crashes 50 ms later, well within the persist
/// delay (500 ms), unlinked: the net and the edit.
fn crashed_just_after_a_commit() -> (Net, Vec<u8>) {
    let mut net = pair();
    net.put(0, "a", bytes(1_000, 80), 100);
    net.settle();
    let edit = bytes(1_000, 81);
    net.put(0, "a", edit.clone(), 200);
    for _ in 0..50 {
        net.round();
    }
    assert_eq!(net.nodes[1].host.data("a"), Some(edit.as_slice()));
    net.unlink(0, 1);
    (net, edit)
}

/// The same, with the restored apply's step (its commit, sent again) still with the host
/// when the scan reports the file: the apply ends as done at the answer.
#[test]
fn a_restored_apply_found_done_while_its_step_is_out_ends_at_the_answer() {
    let (mut net, edit) = crashed_just_after_a_commit();
    let (token, commit) = restart_holding_the_resumed_commit(&mut net);
    let now = net.now;
    let node = &mut net.nodes[1];
    let found = node.host.put("a", edit.clone(), 200);
    node.replica.handle_local(now, found);
    assert!(
        node.replica.applies.contains_key("a"),
        "it waits for the answer"
    );
    let result = node.host.answer(&commit);
    assert_eq!(
        result,
        StorageResult::NotFound,
        "the temp was renamed before the crash"
    );
    node.replica.handle_completed(now, token, result);
    assert!(!node.replica.applies.contains_key("a"));
    let ours = net.nodes[0].replica.record("a").cloned();
    let theirs = net.nodes[1].replica.record("a").cloned();
    assert_eq!(
        ours.map(|r| r.entry.version),
        theirs.map(|r| r.entry.version)
    );
    net.settle();
    assert_eq!(net.nodes[1].host.data("a"), Some(edit.as_slice()));
    assert!(net.nodes[1].host.temps.is_empty());
    // Its temp, had the resumed fetch made it again, is discarded.
    assert_eq!(
        net.count_requests(1, |r| matches!(r, StorageRequest::DiscardTemp { .. })),
        1
    );
}

/// Restarts node 1 (seed 81), answering its requests but the resumed commit, returned.
fn restart_holding_the_resumed_commit(net: &mut Net) -> (u64, StorageRequest) {
    restart_holding(net, |r| matches!(r, StorageRequest::Commit { .. }))
}

/// Restarts node 1 (seed 81), answering its requests but the one `held` picks, returned.
fn restart_holding(net: &mut Net, held: impl Fn(&StorageRequest) -> bool) -> (u64, StorageRequest) {
    let pick = held;
    net.restart(1, 81);
    let now = net.now;
    let node = &mut net.nodes[1];
    let mut held = None;
    while let Some(o) = node.replica.poll_output() {
        if let ReplicaOutput::Request { token, request } = o {
            if held.is_none() && pick(&request) {
                held = Some((token, request));
            } else {
                let result = node.host.answer(&request);
                node.replica.handle_completed(now, token, result);
            }
        }
    }
    held.expect("the commit is sent again")
}

/// The user edits the file the restart found committed, before the resumed commit is
/// answered: the edit is a version of this node's over the peer's (it came after), and
/// it wins everywhere, no conflict copy made.
#[test]
fn an_edit_after_a_landed_apply_descends_from_its_version() {
    let (mut net, edit) = crashed_just_after_a_commit();
    let (token, commit) = restart_holding_the_resumed_commit(&mut net);
    let now = net.now;
    let node = &mut net.nodes[1];
    let found = node.host.put("a", edit, 200);
    node.replica.handle_local(now, found);
    let mine = bytes(1_000, 82);
    let change = node.host.put("a", mine.clone(), 300);
    node.replica.handle_local(now, change);
    let result = node.host.answer(&commit);
    node.replica.handle_completed(now, token, result);
    net.settle();
    net.link(0, 1);
    net.settle();
    for i in 0..2 {
        let paths: Vec<&String> = net.nodes[i].host.items.keys().collect();
        assert_eq!(paths, ["a"], "node {i}");
        assert_eq!(
            net.nodes[i].host.data("a"),
            Some(mine.as_slice()),
            "node {i}"
        );
    }
}

/// A move applied just before a crash, its rename resumed and still with the host when the
/// restart's scan reports the move (the scan cache still knew the old path): the move's
/// records, not a move of this node's, which a deletion made meanwhile would lose to.
#[test]
fn a_move_applied_just_before_a_crash_is_not_taken_for_a_local_move() {
    let mut net = pair();
    net.put(0, "a", bytes(100_000, 90), 100);
    net.settle();
    net.mv(0, "a", "b");
    for _ in 0..50 {
        net.round();
    }
    assert!(net.nodes[1].host.data("b").is_some() && net.nodes[1].host.data("a").is_none());
    net.unlink(0, 1);
    let (token, rename) = restart_holding(&mut net, |r| matches!(r, StorageRequest::Rename { .. }));
    assert!(net.nodes[1].replica.record("a").is_some_and(|r| !r.deleted));
    let now = net.now;
    let node = &mut net.nodes[1];
    let item = node.host.items.remove("b").expect("moved");
    let LocalChange::Changed(to) = node.host.put("b", item.data, item.mtime_ms) else {
        unreachable!("put reports a change")
    };
    node.replica.handle_local(
        now,
        LocalChange::Moved {
            from: "a".into(),
            to,
        },
    );
    let result = node.host.answer(&rename);
    node.replica.handle_completed(now, token, result);
    net.settle();
    let n1 = short_id(&net.nodes[1].id);
    let versions = net.records(1);
    assert!(
        versions.iter().all(|(_, _, v)| v.get(n1) == 0),
        "{versions:?}"
    );
    // Node 0 deletes the moved file while node 1 is down: it stays deleted.
    net.nodes[0].host.items.remove("b");
    net.local(0, LocalChange::Removed { path: "b".into() });
    net.settle();
    net.link(0, 1);
    net.settle();
    for i in 0..2 {
        let paths: Vec<&String> = net.nodes[i].host.items.keys().collect();
        assert!(paths.is_empty(), "node {i} holds {paths:?}");
    }
}

/// The stores applies wait for (SPEC.md §22.8) follow each other no faster than 1 ms per
/// `WRITE_AHEAD_BYTES_PER_MS` of the last one's blob: each encodes the whole state on the
/// loop, and a large folder receiving a steady stream stored it back to back.
#[test]
fn write_ahead_stores_are_spaced_by_the_state_they_store() {
    let mut net = pair();
    // 1 ms per 256 bytes: the state of 100 files spaces them some 30 ms apart.
    net.nodes[1].replica.config.write_ahead_bytes_per_ms = 256;
    for k in 0..100 {
        net.put(0, &format!("f{k}"), bytes(10, 1000 + k), 100);
    }
    net.settle();
    let stores = |net: &Net| -> Vec<usize> {
        net.nodes[1]
            .requests
            .iter()
            .filter_map(|r| match r {
                StorageRequest::PersistState { bytes } => Some(bytes.len()),
                _ => None,
            })
            .collect()
    };
    let mut times = Vec::new();
    let mut seen = stores(&net).len();
    for k in 0..2 {
        net.put(0, &format!("x{k}"), bytes(10, 5000 + k), 100);
        for _ in 0..200 {
            net.round();
            let now = stores(&net);
            if now.len() > seen {
                seen = now.len();
                times.push((net.now, now[now.len() - 1]));
                break;
            }
        }
    }
    assert_eq!(times.len(), 2, "each file's apply asked for a store");
    let (first, bytes_first) = times[0];
    let gap_ms = (bytes_first / 256) as u64;
    assert!(gap_ms >= 10, "a state of {bytes_first} bytes");
    assert!(
        times[1].0 >= first + Duration::from_millis(gap_ms),
        "{:?} after {:?}, {gap_ms} ms apart at least",
        times[1].0,
        first
    );
    assert!(net.nodes[1].host.data("x1").is_some());
}
