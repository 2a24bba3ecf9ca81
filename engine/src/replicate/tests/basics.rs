//! Files, directories and symlinks created, edited, deleted and renamed at one node arrive
//! at the others; only changed blocks are sent; bad paths are refused.

use super::*;

#[test]
fn a_file_created_at_one_node_arrives_byte_identical() {
    let mut net = pair();
    let data = bytes(300_000, 1);
    net.put(0, "dir/a.bin", data.clone(), 100);
    net.put(0, "empty", Vec::new(), 100);
    net.settle();
    assert_eq!(net.nodes[1].host.data("dir/a.bin"), Some(data.as_slice()));
    assert_eq!(net.nodes[1].host.data("empty"), Some(&[][..]));
    assert_eq!(net.records(0), net.records(1));
    assert!(net.nodes.iter().all(|n| n.replica.is_idle()));
    assert_eq!(net.hereis_bytes, data.len() as u64);
    assert_eq!(net.nodes[1].replica.metrics().files_committed, 2);
}

#[test]
fn an_edit_resends_only_the_changed_blocks() {
    let mut net = pair();
    let mut data = bytes(400_000, 2);
    net.put(0, "f", data.clone(), 100);
    net.settle();
    let before: BTreeSet<[u8; 32]> = chunk(&data, Tier::MIN).iter().map(|b| b.hash).collect();
    for b in &mut data[200_000..200_100] {
        *b ^= 0x55;
    }
    let changed: u64 = chunk(&data, Tier::MIN)
        .iter()
        .filter(|b| !before.contains(&b.hash))
        .map(|b| u64::from(b.len))
        .sum();
    net.hereis_bytes = 0;
    net.put(0, "f", data.clone(), 200);
    net.settle();
    assert_eq!(net.nodes[1].host.data("f"), Some(data.as_slice()));
    assert!(changed > 0 && changed < 100_000, "{changed}");
    assert_eq!(net.hereis_bytes, changed);
    assert!(net.nodes[1].replica.metrics().blocks_copied_locally > 0);
}

#[test]
fn a_delete_propagates() {
    let mut net = pair();
    net.put(0, "gone", bytes(1000, 3), 100);
    net.settle();
    assert!(net.nodes[1].host.data("gone").is_some());
    net.nodes[0].host.items.remove("gone");
    net.local(
        0,
        LocalChange::Removed {
            path: "gone".into(),
        },
    );
    net.settle();
    assert_eq!(net.nodes[1].host.data("gone"), None);
    let r = net.nodes[1]
        .replica
        .record("gone")
        .expect("a deletion record");
    assert!(r.deleted);
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_rename_is_applied_as_a_rename() {
    let mut net = pair();
    let data = bytes(100_000, 4);
    net.put(0, "old", data.clone(), 100);
    net.settle();
    net.hereis_bytes = 0;
    net.mv(0, "old", "new");
    net.settle();
    assert_eq!(net.hereis_bytes, 0);
    assert_eq!(net.nodes[1].host.data("new"), Some(data.as_slice()));
    assert_eq!(net.nodes[1].host.data("old"), None);
    assert_eq!(
        net.count_requests(1, |r| matches!(r, StorageRequest::Rename { .. })),
        1
    );
    assert_eq!(net.nodes[1].replica.metrics().renames_applied, 1);
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_rename_with_a_mode_change_lands_with_the_new_mode() {
    let mut net = pair();
    let data = bytes(50_000, 5);
    net.put(0, "old", data.clone(), 100);
    net.settle();
    let mut item = net.nodes[0].host.items.remove("old").expect("there");
    item.mode = 4;
    net.nodes[0].host.items.insert("new".into(), item);
    let LocalChange::Changed(mut to) = net.nodes[0].host.put("new", data.clone(), 100) else {
        unreachable!()
    };
    net.nodes[0].host.items.get_mut("new").expect("put").mode = 4;
    to.mode = 4;
    net.local(
        0,
        LocalChange::Moved {
            from: "old".into(),
            to,
        },
    );
    net.settle();
    assert_eq!(net.nodes[1].replica.metrics().renames_applied, 1);
    assert_eq!(net.nodes[1].host.data("new"), Some(data.as_slice()));
    assert_eq!(net.nodes[1].host.items.get("new").map(|i| i.mode), Some(4));
    assert_eq!(net.records(0), net.records(1));
}

/// Seed 365 of the sweep: a rename applied from a peer left "nothing at the old path" in
/// the replica's memory of the disk after its deletion record was in; a local move onto the
/// old path later did not clear it, and the next peer version of that path was committed
/// expecting nothing there, answered `Changed` forever.
#[test]
fn a_peer_version_lands_at_a_path_a_rename_emptied_and_a_local_move_refilled() {
    let mut net = pair();
    let data = bytes(20_000, 40);
    net.put(0, "old", data.clone(), 100);
    net.put(1, "other", bytes(3_000, 41), 100);
    net.settle();
    // Node 0 renames old -> new; node 1 applies it as a rename.
    net.mv(0, "old", "new");
    net.settle();
    assert_eq!(net.nodes[1].replica.metrics().renames_applied, 1);
    // Node 1 moves `other` onto the old path; node 0 takes it the same way.
    let moved = bytes(3_000, 41);
    net.mv(1, "other", "old");
    net.settle();
    assert_eq!(net.nodes[0].host.data("old"), Some(moved.as_slice()));
    // Node 0 edits it: node 1 must replace what it holds there.
    let edited = bytes(4_000, 42);
    net.put(0, "old", edited.clone(), 300);
    net.settle();
    assert_eq!(net.nodes[1].host.data("old"), Some(edited.as_slice()));
    assert!(net.nodes.iter().all(|n| n.replica.is_idle()));
    assert_eq!(net.records(0), net.records(1));
}

/// Seed 362 of the sweep: a conflict copy was being fetched from the one peer that sent it
/// (the corrupt one, cut off), while an honest peer announced the same content at the copy
/// path under another version (the copy made from the merged record and from the loser
/// itself). That record was deferred and its sender never asked: the fetch stalled for good.
#[test]
fn a_peer_announcing_the_content_being_fetched_under_another_version_is_a_source() {
    let mut net = Net::new(3);
    net.link(0, 2);
    net.link(1, 2);
    net.settle();
    let data = bytes(30_000, 50);
    // Node 0 announces `x` to node 2 but holds none of its blocks.
    let LocalChange::Changed(mut entry) = Host::default().put("x", data.clone(), 100) else {
        unreachable!()
    };
    let by = short_id(&net.nodes[0].id);
    entry.version = Version::default().bumped(by);
    entry.modified_by = by;
    entry.sequence = 1;
    let have = ReplicaMessage::IHave(weft_protocol::IHave {
        folder: folder(),
        index_id: 7,
        entries: vec![entry],
    });
    let (from, now) = (net.nodes[0].id, net.now);
    assert_eq!(
        net.nodes[2]
            .replica
            .handle_message(now, from, have, &Bytes::new()),
        Ok(())
    );
    net.settle();
    assert_eq!(net.nodes[2].host.data("x"), None);
    // Node 1 writes the same bytes at `x`: a concurrent version of the same content.
    net.put(1, "x", data.clone(), 200);
    net.settle();
    assert_eq!(net.nodes[2].host.data("x"), Some(data.as_slice()));
    let r = net.nodes[2].replica.record("x").expect("a record");
    let n1 = short_id(&net.nodes[1].id);
    assert!(r.entry.version.get(by) == 1 && r.entry.version.get(n1) == 1);
    assert!(net.nodes.iter().all(|n| n.replica.is_idle()));
}

/// Seed 108,002 of the sweep: node 1 learns, in one batch, of a new path with the content of
/// a file it holds (there, a conflict copy) and of that file's deletion, and the only other
/// holder of the content serves corrupt blocks. The file is removed only once the new path
/// has copied its blocks: removed first, it was the last good copy here, and the content
/// was lost.
#[test]
fn a_file_is_removed_only_after_a_fetch_copied_its_blocks_from_it() {
    let mut net = pair();
    let a = bytes(50_000, 31);
    net.put(0, "p", a.clone(), 100);
    net.settle();
    net.put(0, "q", a.clone(), 200);
    net.nodes[0].host.items.remove("p");
    net.local(0, LocalChange::Removed { path: "p".into() });
    net.corrupt = Some(0);
    net.nodes[1].requests.clear();
    net.settle();
    assert_eq!(net.nodes[1].host.data("q"), Some(a.as_slice()));
    assert_eq!(net.nodes[1].host.data("p"), None);
    let requests = &net.nodes[1].requests;
    let removed = requests
        .iter()
        .position(|r| matches!(r, StorageRequest::Remove { path, .. } if path == "p"))
        .expect("p removed");
    let read = requests
        .iter()
        .position(|r| matches!(r, StorageRequest::ReadBlock { path, .. } if path == "p"))
        .expect("p read");
    assert!(read < removed, "{requests:?}");
    assert!(net.nodes[1].replica.metrics().blocks_copied_locally > 0);
}

#[test]
fn a_bad_path_from_a_peer_is_refused_and_the_rest_applies() {
    let mut net = pair();
    net.nodes[0].host.put("../evil", bytes(10, 1), 1);
    let LocalChange::Changed(bad) = net.nodes[0].host.put("../evil", bytes(10, 1), 1) else {
        unreachable!()
    };
    net.local(0, LocalChange::Changed(bad));
    net.put(0, "good", bytes(10, 2), 1);
    net.settle();
    assert!(net.nodes[1].host.data("good").is_some());
    assert!(net.nodes[1].host.data("../evil").is_none());
    assert!(net.nodes[0]
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::RefusedByPeer { .. })));
    assert!(net.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::Refused { .. })));
}

#[test]
fn directories_and_symlinks_are_made_and_an_escaping_symlink_is_refused() {
    let mut net = pair();
    for (path, kind, target, mode) in [
        ("d", FileKind::Directory, "", 5),
        ("d/link", FileKind::Symlink, "../f", 7),
        ("out", FileKind::Symlink, "../outside", 7),
    ] {
        let c = net.nodes[0].host.put_item(path, kind, target, mode);
        net.local(0, c);
    }
    net.settle();
    let host = &net.nodes[1].host;
    let d = host.items.get("d").expect("the directory");
    assert_eq!((d.kind, d.mode), (FileKind::Directory, 5));
    let l = host.items.get("d/link").expect("the symlink");
    assert_eq!((l.kind, l.target.as_str()), (FileKind::Symlink, "../f"));
    assert!(!host.items.contains_key("out"));
    assert!(net.nodes[1].replica.record("out").is_none());
    assert_eq!(
        net.count_requests(
            1,
            |r| matches!(r, StorageRequest::MakeDir { path, mode: 5 } if path == "d")
        ),
        1
    );
    assert_eq!(
        net.count_requests(1, |r| matches!(r, StorageRequest::MakeSymlink { path, target } if path == "d/link" && target == "../f")),
        1
    );
    assert_eq!(
        net.count_requests(
            1,
            |r| matches!(r, StorageRequest::MakeSymlink { path, .. } if path == "out")
        ),
        0
    );
    let id0 = net.nodes[0].id;
    assert!(net.nodes[1].events.contains(&ReplicaEvent::Refused {
        peer: id0,
        path: "out".into(),
        reason: PathRefusal::SymlinkEscapes,
    }));
    let id1 = net.nodes[1].id;
    assert!(net.nodes[0].events.contains(&ReplicaEvent::RefusedByPeer {
        peer: id1,
        path: "out".into(),
        reason: PathRefusal::SymlinkEscapes,
    }));
    assert_eq!(net.nodes[1].replica.metrics().paths_refused, 1);
}

#[test]
fn a_message_about_another_folder_is_ignored_not_a_fault() {
    let mut net = pair();
    let data = bytes(40_000, 16);
    let c = net.nodes[0].host.put("f", data, 100);
    let LocalChange::Changed(mut entry) = c else {
        unreachable!()
    };
    entry.version = Version::default().bumped(short_id(&net.nodes[0].id));
    entry.modified_by = short_id(&net.nodes[0].id);
    entry.sequence = 1;
    let other = FolderId::from_name("other");
    let from = net.nodes[0].id;
    let now = net.now;
    let have = ReplicaMessage::IHave(weft_protocol::IHave {
        folder: other,
        index_id: 7,
        entries: vec![entry],
    });
    let here_is = ReplicaMessage::HereIs(weft_protocol::HereIs {
        folder: other,
        hash: [9; 32],
        offset: 0,
        data: b"not asked",
    });
    let replica = &mut net.nodes[1].replica;
    assert_eq!(
        replica.handle_message(now, from, have, &Bytes::new()),
        Ok(())
    );
    assert_eq!(
        replica.handle_message(now, from, here_is, &Bytes::new()),
        Ok(())
    );
    assert_eq!(replica.poll_output(), None);
    assert!(replica.record("f").is_none());
    assert!(replica.is_idle());
    // The same HEREIS about this folder is a fault: the block was never asked for.
    let here_is = ReplicaMessage::HereIs(weft_protocol::HereIs {
        folder: folder(),
        hash: [9; 32],
        offset: 0,
        data: b"not asked",
    });
    assert!(replica
        .handle_message(now, from, here_is, &Bytes::new())
        .is_err());
}
