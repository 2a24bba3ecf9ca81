//! Concurrent versions (SPEC.md §22.6): settled the same way at every node, the loser kept
//! in its conflict copy, copies and edits of copies never lost, `Resolve`.

use super::*;

/// A deletion record from a peer outside the test network (`from`, the id of node 2, never
/// linked), made by `by` with `version`.
fn inject_deletion(net: &mut Net, to: usize, path: &str, by: u64, version: Version, seq: u64) {
    let m = ReplicaMessage::IDeleted(weft_protocol::IDeleted {
        folder: folder(),
        index_id: 7,
        entries: vec![weft_protocol::Deleted {
            path: path.into(),
            kind: FileKind::File,
            modified_by: by,
            version,
            sequence: seq,
        }],
    });
    inject(net, to, m);
}

/// Seed 362 of the sweep (after the restart fix changed its course): a file P, a deletion D1
/// concurrent with it and a deletion D2 made after seeing it. One node settled P against D1
/// (P stays, merged version) and then against D2 (P stays again), another D2 against D1 (two
/// deletions merge): both ended with the same merged version, one present and one deleted,
/// and each ignored the other's record as equal. An equal version of other content is now
/// settled as a conflict, the same way at both.
#[test]
fn equal_versions_of_different_content_are_settled_like_a_conflict() {
    let mut net = Net::new(3);
    net.link(0, 1);
    let data = bytes(2_000, 70);
    net.put(0, "p", data.clone(), 100);
    net.settle();
    net.unlink(0, 1);
    let n0 = short_id(&net.nodes[0].id);
    let (b, c) = (0x0b00_0000_0000_0000_u64, 0x0c00_0000_0000_0000_u64);
    let p = Version::default().bumped(n0);
    let d1 = Version::default().bumped(b);
    let d2 = p.bumped(c);
    // Node 0: P beats D1, then P (merged) beats D2.
    inject_deletion(&mut net, 0, "p", b, d1.clone(), 1);
    inject_deletion(&mut net, 0, "p", c, d2.clone(), 2);
    // Node 1: D2 replaces P, then D1 merges into it.
    inject_deletion(&mut net, 1, "p", c, d2, 2);
    inject_deletion(&mut net, 1, "p", b, d1, 1);
    let (r0, r1) = (
        net.nodes[0].replica.record("p").expect("a record").clone(),
        net.nodes[1].replica.record("p").expect("a record").clone(),
    );
    assert_eq!(r0.entry.version, r1.entry.version);
    assert!(!r0.deleted && r1.deleted);
    net.link(0, 1);
    net.settle();
    assert_eq!(net.records(0), net.records(1));
    assert_eq!(net.nodes[1].host.data("p"), Some(data.as_slice()));
    assert!(net.nodes[..2].iter().all(|n| n.replica.is_idle()));
}

#[test]
fn an_edit_edit_conflict_keeps_both_the_same_way_everywhere() {
    let mut net = pair();
    net.put(0, "doc.txt", bytes(50_000, 5), 100);
    net.settle();
    net.unlink(0, 1);
    let (a, b) = (bytes(50_000, 6), bytes(50_000, 7));
    net.put(0, "doc.txt", a.clone(), 200);
    net.put(1, "doc.txt", b.clone(), 300);
    net.settle();
    net.link(0, 1);
    net.settle();
    // Node 1's edit is later: it wins; node 0's is kept as its conflict copy.
    let by = short_id(&net.nodes[0].id);
    let copy = format!("doc.conflict-{:08x}-2.txt", by >> 32);
    for n in &net.nodes {
        assert_eq!(n.host.data("doc.txt"), Some(b.as_slice()));
        assert_eq!(
            n.host.data(&copy),
            Some(a.as_slice()),
            "{:?}",
            n.host.items.keys()
        );
    }
    assert_eq!(net.records(0), net.records(1));
    assert!(net.nodes.iter().all(|n| n
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::Conflict { .. }))));
}

#[test]
fn a_loser_holder_makes_its_own_copy_when_only_a_corrupt_node_settled_the_conflict() {
    // Nodes 1 and 2 hold node 0's version A; node 3's concurrent B wins. Node 2 settles the
    // conflict with node 3 (A to its copy, B installed), then nodes 0 and 3 leave and node 2
    // turns corrupt, so node 4 (which had B from node 3) never gets the copy; node 1 then
    // hears of B through node 4 alone. Node 1 must move A to the copy itself: a winner
    // installed under a merged version would be newer than A there, and A's only copy left
    // would be node 2's.
    let mut net = Net::new(5);
    let (a, b) = (bytes(50_000, 21), bytes(50_000, 22));
    net.put(0, "doc.txt", a.clone(), 200);
    net.link(0, 1);
    net.link(0, 2);
    net.settle();
    net.unlink(0, 1);
    net.unlink(0, 2);
    net.put(3, "doc.txt", b.clone(), 300);
    net.link(3, 4);
    net.settle();
    net.unlink(3, 4);
    net.link(3, 2);
    net.settle();
    net.unlink(3, 2);
    let copy = format!(
        "doc.conflict-{:08x}-1.txt",
        short_id(&net.nodes[0].id) >> 32
    );
    let holds =
        |net: &Net, i: usize, path: &str, data: &[u8]| net.nodes[i].host.data(path) == Some(data);
    assert!(holds(&net, 2, &copy, &a));
    assert!(holds(&net, 2, "doc.txt", &b));
    net.corrupt = Some(2);
    net.link(4, 2);
    net.settle();
    assert!(!holds(&net, 4, &copy, &a), "node 4 has no honest source");
    net.unlink(4, 2);
    net.link(4, 1);
    net.settle();
    assert!(holds(&net, 1, "doc.txt", &b));
    assert!(holds(&net, 1, &copy, &a), "node 1 lost A");
    assert!(net.nodes[1]
        .requests
        .iter()
        .any(|r| matches!(r, StorageRequest::Rename { to, .. } if *to == copy)));
    // Node 4 then fetches the copy from node 1.
    assert!(holds(&net, 4, &copy, &a));
}

/// Node 0 hears, from a peer outside the test network ([`inject`]), of `path` holding
/// `data`, changed by `by` at `mtime_ms`, under `version`.
fn inject_file(net: &mut Net, path: &str, data: &[u8], by: u64, version: Version, mtime_ms: i64) {
    let LocalChange::Changed(mut entry) = Host::default().put(path, data.to_vec(), mtime_ms) else {
        unreachable!("put reports a change")
    };
    entry.version = version;
    entry.modified_by = by;
    entry.sequence = 1;
    let have = ReplicaMessage::IHave(weft_protocol::IHave {
        folder: folder(),
        index_id: 7,
        entries: vec![entry],
    });
    inject(net, 0, have);
}

/// Short ids of the conflict-copy cases' nodes outside the test network: the loser's
/// author, a deleting node, the copy's editor, the local version's author.
const COPY_CASE_NODES: [u64; 4] = [
    0x0b00_0000_0000_0000,
    0x0d00_0000_0000_0000,
    0x0e00_0000_0000_0000,
    0x0f00_0000_0000_0000,
];

/// Node 0 holds each content in a file of its own (`srv/...`): what it fetches of them is
/// copied locally, with no peer to serve it.
fn serve_locally(net: &mut Net, files: &[(&str, &[u8])]) {
    for (path, data) in files {
        net.put(0, path, data.to_vec(), 10);
    }
    net.settle();
}

/// Node 0 holds the edit `data` of a conflict copy at `copy` under `version`, and is idle.
fn assert_edit_kept(net: &Net, copy: &str, data: &[u8], version: &Version, why: &str) {
    assert!(node0_holds(net, copy, data), "{why}");
    let kept = net.nodes[0]
        .replica
        .record(copy)
        .expect("the copy's record");
    assert_eq!(&kept.entry.version, version);
    assert!(net.nodes[0].replica.is_idle());
}

/// The conflict copy path of `p` for the edit `by` made at `counter`.
fn copy_of_p(by: u64, counter: u64) -> String {
    let loser = Record {
        entry: FileEntry {
            modified_by: by,
            version: version_of(&[(by, counter)]),
            ..synthetic("p", 1, 0)
        },
        deleted: false,
    };
    conflict::conflict_copy_path("p", &loser)
}

/// Seed 126,057 of the sweep: content Z by node B lost a conflict at `p`, and its copy was
/// then edited (E). Later Z came back at `p` under a merged version (an edit-beats-delete
/// merge elsewhere) and lost again, here, to the local version. Its copy path names the same
/// edit of B's, and Z's merged version happens to be newer than the edit's (its counters
/// count another path's changes): made as a copy again, it replaced E everywhere. A copy
/// path holding a record is taken, as when the peer's version wins.
#[test]
fn a_losing_version_never_replaces_an_edit_of_its_conflict_copy() {
    let mut net = Net::new(3);
    let (z, e, l) = (bytes(3_000, 81), bytes(3_000, 82), bytes(3_000, 83));
    serve_locally(&mut net, &[("srv/z", &z), ("srv/e", &e), ("srv/l", &l)]);
    let [b, d, x, q] = COPY_CASE_NODES;
    let copy = copy_of_p(b, 9);
    let edited = version_of(&[(b, 9), (x, 4)]);
    inject_file(&mut net, &copy, &e, x, edited.clone(), 300);
    inject_file(&mut net, "p", &l, q, version_of(&[(q, 3)]), 500);
    assert!(node0_holds(&net, &copy, &e));
    inject_file(
        &mut net,
        "p",
        &z,
        b,
        version_of(&[(b, 9), (d, 7), (x, 5)]),
        100,
    );
    assert!(node0_holds(&net, "p", &l), "the local version stays");
    assert_edit_kept(
        &net,
        &copy,
        &e,
        &edited,
        "the edit of the copy was replaced",
    );
}

/// The case the test above leaves: a node that never heard of the copy path (cut off from
/// the first conflict until after the merge) makes the copy itself when Z loses there. Its
/// copy must not win over the edit of the copy made elsewhere: a copy record carries the
/// version of the loser's edit alone (its author's counter), which every edit of the copy
/// descends from, not Z's merged version (whose counters count changes of `p`).
#[test]
fn a_copy_made_by_a_node_that_never_saw_it_yields_to_an_edit_of_it() {
    let mut net = Net::new(3);
    let (z, e, l) = (bytes(3_000, 84), bytes(3_000, 85), bytes(3_000, 86));
    serve_locally(&mut net, &[("srv/z", &z), ("srv/e", &e), ("srv/l", &l)]);
    let [b, d, x, q] = COPY_CASE_NODES;
    inject_file(&mut net, "p", &l, q, version_of(&[(q, 3)]), 500);
    // Z at `p` under a merged version, losing to the local version: node 0 makes its copy.
    inject_file(
        &mut net,
        "p",
        &z,
        b,
        version_of(&[(b, 9), (d, 7), (x, 5)]),
        100,
    );
    let copy = copy_of_p(b, 9);
    assert!(node0_holds(&net, "p", &l), "the local version stays");
    assert!(node0_holds(&net, &copy, &z), "the loser went to its copy");
    // The edit of the copy, made elsewhere after seeing the first copy of Z.
    let edited = version_of(&[(b, 9), (x, 4)]);
    inject_file(&mut net, &copy, &e, x, edited.clone(), 300);
    assert_edit_kept(&net, &copy, &e, &edited, "the edit of the copy was refused");
}

/// Seed 868 of 12 nodes on a line: two edits of `p` by one author in one millisecond, the
/// earlier (L) held here under a version merged with another node's, the later (R)
/// arriving. Ordered by whole vectors, L won here, took a merged version (L') and made R's
/// copy; but L' ranked below R at the nodes holding R, which kept R and made L's copy, and
/// neither side ever took the other's. The same author's later edit wins everywhere.
#[test]
fn an_authors_later_edit_wins_over_its_earlier_one_in_the_same_millisecond() {
    let mut net = Net::new(3);
    let (early, late) = (bytes(3_000, 87), bytes(3_000, 88));
    serve_locally(&mut net, &[("srv/early", &early), ("srv/late", &late)]);
    let (y, x, f) = (
        0x0a00_0000_0000_0000_u64,
        0x0c00_0000_0000_0000_u64,
        0x0f00_0000_0000_0000_u64,
    );
    inject_file(
        &mut net,
        "p",
        &early,
        f,
        version_of(&[(x, 47), (f, 34)]),
        100,
    );
    inject_file(
        &mut net,
        "p",
        &late,
        f,
        version_of(&[(y, 27), (f, 36)]),
        100,
    );
    assert!(
        node0_holds(&net, "p", &late),
        "the earlier edit kept the path"
    );
    let kept = net.nodes[0].replica.record("p").expect("p's record");
    assert_eq!(kept.entry.version.get(f), 36, "{:?}", kept.entry.version);
    assert!(
        node0_holds(&net, &copy_of_p(f, 34), &early),
        "the earlier edit went to its copy"
    );
    assert!(net.nodes[0].replica.is_idle());
}

#[test]
fn a_losing_file_stays_at_its_path_until_the_winner_is_fetched() {
    // Node 1's later edit wins over node 0's, but node 1 serves only corrupt blocks: node 0
    // cannot fetch the winner, so its own file must stay where its record says it is (no
    // rename to the copy first, which would leave the path empty under a record naming it).
    // Once an honest node holds the winner, node 0 fetches it and keeps its own as the copy.
    let mut net = Net::new(3);
    let (a, b) = (bytes(300_000, 31), bytes(300_000, 32));
    net.put(0, "doc.txt", a.clone(), 200);
    net.put(1, "doc.txt", b.clone(), 300);
    net.settle();
    let mine = net.nodes[0].replica.record("doc.txt").cloned();
    net.corrupt = Some(1);
    net.link(0, 1);
    net.settle();
    assert!(!net.links.contains(&(0, 1)), "the corrupt node is cut off");
    let copy = format!(
        "doc.conflict-{:08x}-1.txt",
        short_id(&net.nodes[0].id) >> 32
    );
    assert!(
        node0_holds(&net, "doc.txt", &a),
        "node 0's own file left its path"
    );
    assert!(net.nodes[0].host.data(&copy).is_none());
    assert_eq!(net.nodes[0].replica.record("doc.txt"), mine.as_ref());
    assert_eq!(
        net.count_requests(0, |r| matches!(r, StorageRequest::Rename { .. })),
        0
    );
    net.nodes[0].replica.check_invariants().unwrap();
    net.corrupt = None;
    net.link(1, 2);
    net.settle();
    net.unlink(1, 2);
    net.link(0, 2);
    net.settle();
    assert!(
        node0_holds(&net, "doc.txt", &b),
        "node 0 did not take the winner"
    );
    assert!(node0_holds(&net, &copy, &a), "node 0 lost its own version");
    assert_eq!(net.records(0), net.records(2));
}

#[test]
fn a_mode_change_while_a_commit_is_outstanding_is_never_overwritten() {
    // Node 1's edit B wins over node 0's file A, which the user makes read-only (a mode
    // change alone: size and mtime stay) just before node 0 commits B over it. The commit
    // must see the change and fail, so that A, with its new mode, becomes the conflict copy;
    // were only size and mtime compared, B would overwrite A and the copy announced as A
    // would hold B: no node could ever fetch it.
    let mut net = Net::new(2);
    let (a, b) = (bytes(300_000, 51), bytes(300_000, 52));
    net.put(0, "doc.txt", a.clone(), 100);
    net.link(0, 1);
    net.settle();
    net.unlink(0, 1);
    net.put(1, "doc.txt", b.clone(), 300);
    net.chmod_before_commit = Some((0, "doc.txt".into(), 4));
    net.link(0, 1);
    net.settle();
    assert!(net.chmod_before_commit.is_none(), "node 0 made no commit");
    let copies: Vec<String> = net.nodes[0]
        .host
        .items
        .keys()
        .filter(|p| p.contains(".conflict-"))
        .cloned()
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = &copies[0];
    for i in 0..2 {
        let host = &net.nodes[i].host;
        assert!(host.data("doc.txt") == Some(&b[..]), "node {i} lacks B");
        assert!(host.data(copy) == Some(&a[..]), "node {i} lost A");
        assert_eq!(host.items[copy].mode, 4, "node {i}");
        let record = net.nodes[i].replica.record(copy).expect("a copy record");
        assert_eq!(record.entry.mode, 4, "node {i}");
    }
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_node_holding_what_the_loser_grew_from_takes_the_winner() {
    // Node 2 writes A and node 0 edits it into B, all at the same mtime; node 1 writes C
    // without seeing either. By the order (same mtime: the larger node id wins) C beats B
    // but A beats C. Nodes 0 and 1 settle B against C: C at the path, B at its copy. Node 2,
    // still holding A, must take C: A is superseded by B. Were C installed under its own
    // version, node 2 would find it concurrent with A, keep A (which beats C), and nothing
    // would settle it with the others, who saw A long ago as older than B.
    let mut net = Net::new(3);
    let (a, b, c) = (bytes(40_000, 41), bytes(40_000, 42), bytes(40_000, 43));
    net.put(2, "doc.txt", a.clone(), 100);
    net.link(0, 2);
    net.settle();
    net.unlink(0, 2);
    net.put(0, "doc.txt", b.clone(), 100);
    net.put(1, "doc.txt", c.clone(), 100);
    net.link(0, 1);
    net.settle();
    let copy = format!(
        "doc.conflict-{:08x}-1.txt",
        short_id(&net.nodes[0].id) >> 32
    );
    let holds =
        |net: &Net, i: usize, path: &str, data: &[u8]| net.nodes[i].host.data(path) == Some(data);
    assert!(holds(&net, 0, "doc.txt", &c) && holds(&net, 0, &copy, &b));
    net.link(0, 2);
    net.settle();
    for i in 0..3 {
        assert!(holds(&net, i, "doc.txt", &c), "node {i} does not hold C");
        assert!(holds(&net, i, &copy, &b), "node {i} lost B");
    }
    assert_eq!(net.records(0), net.records(2));
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_change_after_a_lost_conflict_takes_a_counter_never_used_at_the_path() {
    // Node 0's edit (its counter 2) loses to node 1's and moves to the copy; the path keeps
    // node 1's own version, whose counter for node 0 is 1. Node 0's next edit there must
    // take 3: a second "2" would name other content with a version already used.
    let mut net = pair();
    net.put(0, "doc.txt", bytes(20_000, 30), 100);
    net.settle();
    net.unlink(0, 1);
    net.put(0, "doc.txt", bytes(20_000, 31), 200);
    net.put(1, "doc.txt", bytes(20_000, 32), 300);
    net.link(0, 1);
    net.settle();
    let me = short_id(&net.nodes[0].id);
    let version_at = |net: &Net, i: usize, path: &str| {
        net.records(i)
            .into_iter()
            .find(|(p, ..)| p == path)
            .map(|(_, _, v)| v)
            .expect("a record")
    };
    let copy = format!("doc.conflict-{:08x}-2.txt", me >> 32);
    assert_eq!(version_at(&net, 0, &copy).get(me), 2);
    assert_eq!(version_at(&net, 0, "doc.txt").get(me), 1);
    let edit = bytes(20_000, 33);
    net.put(0, "doc.txt", edit.clone(), 400);
    net.settle();
    assert_eq!(version_at(&net, 0, "doc.txt").get(me), 3);
    for n in &net.nodes {
        assert!(n.host.data("doc.txt") == Some(edit.as_slice()));
        assert!(n.host.data(&copy) == Some(bytes(20_000, 31).as_slice()));
    }
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn an_edit_beats_a_concurrent_delete_everywhere() {
    let mut net = pair();
    net.put(0, "f", bytes(30_000, 8), 100);
    net.settle();
    net.unlink(0, 1);
    let edit = bytes(30_000, 9);
    net.put(0, "f", edit.clone(), 50);
    net.nodes[1].host.items.remove("f");
    net.local(1, LocalChange::Removed { path: "f".into() });
    net.settle();
    net.link(0, 1);
    net.settle();
    for n in &net.nodes {
        assert_eq!(n.host.data("f"), Some(edit.as_slice()));
        assert_eq!(n.host.items.len(), 1, "no conflict copy");
    }
    assert_eq!(net.records(0), net.records(1));
}

/// Two nodes in conflict over `doc.txt` as in the edit/edit case: node 1's later edit won,
/// node 0's content (returned) is kept at the conflict copy (returned).
fn conflicted_pair() -> (Net, Vec<u8>, String) {
    let mut net = pair();
    net.put(0, "doc.txt", bytes(50_000, 5), 100);
    net.settle();
    net.unlink(0, 1);
    let (a, b) = (bytes(50_000, 6), bytes(50_000, 7));
    net.put(0, "doc.txt", a.clone(), 200);
    net.put(1, "doc.txt", b, 300);
    net.settle();
    net.link(0, 1);
    net.settle();
    let by = short_id(&net.nodes[0].id);
    let copy = format!("doc.conflict-{:08x}-2.txt", by >> 32);
    assert!(net
        .nodes
        .iter()
        .all(|n| n.host.data(&copy) == Some(a.as_slice())));
    (net, a, copy)
}

#[test]
fn resolve_keeps_the_chosen_copy_everywhere_and_removes_the_others() {
    let (mut net, a, copy) = conflicted_pair();
    let now = net.now;
    let refused = net.nodes[0].replica.handle_command(
        now,
        ReplicaCommand::Resolve {
            path: "other.txt".into(),
            keep: "other.txt".into(),
        },
    );
    assert_eq!(
        refused,
        Err(ReplicaRefusal::NotConflicted("other.txt".into()))
    );
    let not_a_version = net.nodes[0].replica.handle_command(
        now,
        ReplicaCommand::Resolve {
            path: "doc.txt".into(),
            keep: "notes.txt".into(),
        },
    );
    assert_eq!(
        not_a_version,
        Err(ReplicaRefusal::NotAVersion("notes.txt".into()))
    );
    net.nodes[1]
        .replica
        .handle_command(
            now,
            ReplicaCommand::Resolve {
                path: "doc.txt".into(),
                keep: copy.clone(),
            },
        )
        .expect("doc.txt is conflicted");
    net.settle();
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(n.host.data("doc.txt"), Some(a.as_slice()), "node {i}");
        assert_eq!(n.host.data(&copy), None, "node {i}");
        assert_eq!(
            n.host.items.keys().collect::<Vec<_>>(),
            vec!["doc.txt"],
            "node {i}"
        );
        let kept = n.replica.record("doc.txt").expect("a record");
        assert!(!kept.deleted);
        assert!(n.replica.record(&copy).is_some_and(|r| r.deleted));
    }
    assert_eq!(net.records(0), net.records(1));
    // Resolved: no longer conflicted.
    let again = net.nodes[0].replica.handle_command(
        net.now,
        ReplicaCommand::Resolve {
            path: "doc.txt".into(),
            keep: "doc.txt".into(),
        },
    );
    assert_eq!(again, Err(ReplicaRefusal::NotConflicted("doc.txt".into())));
}

#[test]
fn a_case_only_clash_overwrites_neither_name() {
    let mut net = Net::new(2);
    let (a, b) = (bytes(20_000, 13), bytes(20_000, 14));
    net.put(0, "Readme.md", a.clone(), 100);
    net.put(1, "README.md", b.clone(), 200);
    net.settle();
    net.link(0, 1);
    net.settle();
    assert_eq!(net.nodes[0].host.data("Readme.md"), Some(a.as_slice()));
    assert_eq!(net.nodes[0].host.data("README.md"), None);
    assert_eq!(net.nodes[1].host.data("README.md"), Some(b.as_slice()));
    assert_eq!(net.nodes[1].host.data("Readme.md"), None);
    assert!(net.nodes[0].replica.record("README.md").is_none());
    assert!(net.nodes[1].replica.record("Readme.md").is_none());
    let clash = |i: usize, held: &str, incoming: &str| {
        net.nodes[i].events.contains(&ReplicaEvent::CaseClash {
            held: held.into(),
            incoming: incoming.into(),
        })
    };
    assert!(clash(0, "Readme.md", "README.md"));
    assert!(clash(1, "README.md", "Readme.md"));
    assert!(net.nodes[0].events.iter().any(|e| matches!(
        e,
        ReplicaEvent::RefusedByPeer { path, reason: PathRefusal::CaseClash, .. } if path == "Readme.md"
    )));
    assert_eq!(net.hereis_bytes, 0);
}

/// A case-only rename (`readme.md` to `README.md`) reaches the peer as the rename it is: the
/// held path the new name clashes with is the one the rename retires. It was refused as a
/// clash, then the deletion of the old name removed the file: the peer held neither name.
#[test]
fn a_case_only_rename_reaches_the_peer() {
    let mut net = Net::new(2);
    let a = bytes(20_000, 13);
    net.link(0, 1);
    net.put(0, "readme.md", a.clone(), 100);
    net.settle();
    assert_eq!(net.nodes[1].host.data("readme.md"), Some(a.as_slice()));
    net.mv(0, "readme.md", "README.md");
    net.settle();
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(n.host.data("README.md"), Some(a.as_slice()), "node {i}");
        assert_eq!(n.host.data("readme.md"), None, "node {i}");
    }
    assert!(!net.nodes[1]
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::CaseClash { .. })));
}

/// A clash on the way: `Docs/x` from a peer, where this node holds the directory `docs`, is
/// refused like `Docs` itself (a case-insensitive disk would write it into `docs`, under a
/// path its record does not have).
#[test]
fn a_path_whose_parent_clashes_in_case_is_refused() {
    let mut net = Net::new(2);
    for (node, dir) in [(0, "docs"), (1, "Docs")] {
        let c = net.nodes[node]
            .host
            .put_item(dir, FileKind::Directory, "", 7);
        net.local(node, c);
    }
    let data = bytes(5_000, 41);
    net.put(1, "Docs/x", data.clone(), 100);
    net.settle();
    net.link(0, 1);
    net.settle();
    assert!(net.nodes[0].replica.record("Docs/x").is_none());
    assert_eq!(net.nodes[0].host.data("Docs/x"), None);
    assert_eq!(net.nodes[0].host.data("docs/x"), None);
    assert_eq!(net.nodes[1].host.data("Docs/x"), Some(data.as_slice()));
    for incoming in ["Docs", "Docs/x"] {
        assert!(
            net.nodes[0].events.contains(&ReplicaEvent::CaseClash {
                held: "docs".into(),
                incoming: incoming.into(),
            }),
            "{incoming}"
        );
    }
    assert_eq!(net.hereis_bytes, 0);
}

/// A node on a case-sensitive disk that holds both `docs` and `Docs` takes a peer's
/// `docs/x`: a directory held in exactly that case clashes with nothing on the way.
#[test]
fn a_path_under_a_directory_held_in_its_own_case_is_no_clash() {
    let mut net = Net::new(2);
    for dir in ["docs", "Docs"] {
        let c = net.nodes[0].host.put_item(dir, FileKind::Directory, "", 7);
        net.local(0, c);
    }
    let c = net.nodes[1]
        .host
        .put_item("docs", FileKind::Directory, "", 7);
    net.local(1, c);
    let data = bytes(4_000, 42);
    net.put(1, "docs/x", data.clone(), 100);
    net.settle();
    net.link(0, 1);
    net.settle();
    assert!(
        net.nodes[0].host.data("docs/x") == Some(data.as_slice()),
        "docs/x is taken"
    );
    assert!(net.nodes[0].replica.record("docs/x").is_some());
}

#[test]
fn a_directory_made_at_two_nodes_with_two_modes_gets_one_mode_and_no_copy() {
    let mut net = Net::new(2);
    for (node, mode) in [(0, 5), (1, 7)] {
        let c = net.nodes[node]
            .host
            .put_item("d", FileKind::Directory, "", mode);
        net.local(node, c);
    }
    let data = bytes(5_000, 40);
    net.put(0, "d/f", data.clone(), 100);
    net.settle();
    net.link(0, 1);
    net.settle();
    assert_eq!(net.records(0), net.records(1));
    let paths: Vec<String> = net.records(0).into_iter().map(|r| r.0).collect();
    assert_eq!(
        paths,
        vec!["d".to_string(), "d/f".to_string()],
        "no conflict copy"
    );
    let modes: Vec<u8> = (0..2)
        .map(|i| {
            net.nodes[i]
                .host
                .items
                .get("d")
                .expect("the directory")
                .mode
        })
        .collect();
    assert_eq!(modes[0], modes[1], "one mode everywhere");
    assert_eq!(net.nodes[1].host.data("d/f"), Some(data.as_slice()));
}

/// Two concurrent deletions from a peer, each of `VERSION_COUNTERS_MAX` counters, merge into
/// a version of twice that: the record is kept, but never announced (every peer would close
/// the link over the whole batch, and again at each reconnection); the rest still goes.
#[test]
fn a_record_merged_past_the_counter_limit_is_not_announced() {
    let mut net = Net::new(3);
    let max = weft_protocol::VERSION_COUNTERS_MAX as u64;
    let d1 = version_of(&(1..=max).map(|n| (n, 1)).collect::<Vec<_>>());
    let d2 = version_of(&(max + 1..=2 * max).map(|n| (n, 1)).collect::<Vec<_>>());
    inject_deletion(&mut net, 0, "p", 1, d1, 1);
    inject_deletion(&mut net, 0, "p", max + 1, d2, 2);
    let merged = &net.nodes[0]
        .replica
        .record("p")
        .expect("a record")
        .entry
        .version;
    assert_eq!(merged.counters.len() as u64, 2 * max);
    let data = bytes(2_000, 71);
    net.put(0, "q", data.clone(), 100);
    net.link(0, 1);
    net.settle();
    assert!(net.faults.is_empty(), "{:?}", net.faults);
    assert_eq!(net.nodes[1].host.data("q"), Some(data.as_slice()));
    assert!(net.nodes[1].replica.record("p").is_none());
}

/// Two nodes that hold a directory `d` with a file `d/x`, unlinked, `d` and `d/x` deleted at
/// node 0.
fn directory_deleted_at_node_0_while_apart() -> Net {
    let mut net = Net::new(2);
    net.link(0, 1);
    let c = net.nodes[0].host.put_item("d", FileKind::Directory, "", 7);
    net.local(0, c);
    net.put(0, "d/x", bytes(1_000, 3), 100);
    net.settle();
    assert!(net.nodes[1].host.data("d/x").is_some());
    net.unlink(0, 1);
    for path in ["d/x", "d"] {
        net.nodes[0].host.items.remove(path);
        net.local(0, LocalChange::Removed { path: path.into() });
    }
    net
}

/// A directory deleted at one node while another made a file in it: the deletion cannot go
/// at the other (a directory goes only empty), and the file outranks it, as a present
/// record outranks a deletion. The directory stays there, under a newer version, and the
/// node that deleted it makes it again and takes the file. (The removal was retried for
/// good, and the file never reached the node that deleted its directory.)
#[test]
fn a_file_made_in_a_directory_deleted_elsewhere_keeps_the_directory() {
    let mut net = directory_deleted_at_node_0_while_apart();
    let new = bytes(2_000, 4);
    net.put(1, "d/new", new.clone(), 200);
    net.settle();
    net.link(0, 1);
    net.settle();
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(n.host.data("d/new"), Some(new.as_slice()), "node {i}");
        assert!(n.host.data("d/x").is_none(), "node {i}");
        let d = n.replica.record("d").expect("d");
        assert!(!d.deleted, "node {i}: d kept");
        assert!(n.host.items.contains_key("d"), "node {i}: d on disk");
    }
    assert_eq!(net.nodes[1].replica.metrics().directories_kept, 1);
}

/// The same, but the node that deleted the directory made a file (or symlink) in its place:
/// the directory, holding a file the other node never saw, stays there as it stays against
/// a deletion, and the two are settled as a conflict, the file kept in its conflict copy on
/// both nodes. (Both nodes retried for good, one its removal of a directory that was not
/// empty, the other its commit of a file under a path that was a file; then the file went to
/// its node's trash, in no copy.)
#[test]
fn a_file_made_in_place_of_a_directory_that_grew_elsewhere_keeps_the_directory() {
    let mut net = directory_deleted_at_node_0_while_apart();
    net.put(0, "d", bytes(500, 9), 150);
    let new = bytes(2_000, 4);
    net.put(1, "d/new", new.clone(), 200);
    net.settle();
    net.link(0, 1);
    net.settle();
    let by = short_id(&net.nodes[0].id);
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(n.host.data("d/new"), Some(new.as_slice()), "node {i}");
        let d = n.replica.record("d").expect("d");
        assert!(
            !d.deleted && d.entry.kind == FileKind::Directory,
            "node {i}: d kept"
        );
        assert_eq!(
            n.host.items.get("d").map(|i| i.kind),
            Some(FileKind::Directory),
            "node {i}: d on disk"
        );
        // The file, newer content, is kept in its conflict copy on both.
        let copies: Vec<&String> = n
            .host
            .items
            .keys()
            .filter(|p| p.starts_with(&format!("d.conflict-{:08x}-", by >> 32)))
            .collect();
        assert_eq!(copies.len(), 1, "node {i}: {:?}", n.host.items.keys());
        assert_eq!(
            n.host.data(copies[0]),
            Some(bytes(500, 9).as_slice()),
            "node {i}"
        );
    }
    assert_eq!(net.records(0), net.records(1));
}

/// A directory against a file at the same path: the directory wins, whatever the times, and
/// the file goes to its conflict copy. (A directory that lost was renamed to its copy with
/// what was in it, under paths no record had: its files were on one node only, and the
/// other could never put them under a path that was a file there.)
#[test]
fn a_directory_beats_a_file_at_the_same_path() {
    let mut net = Net::new(2);
    let c = net.nodes[0]
        .host
        .put_item("notes", FileKind::Directory, "", 7);
    net.local(0, c);
    let inside = bytes(1_000, 5);
    net.put(0, "notes/x", inside.clone(), 100);
    let file = bytes(2_000, 6);
    // The file is the later change.
    net.put(1, "notes", file.clone(), 500);
    net.settle();
    net.link(0, 1);
    net.settle();
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(n.host.data("notes/x"), Some(inside.as_slice()), "node {i}");
        let d = n.replica.record("notes").expect("notes");
        assert!(
            !d.deleted && d.entry.kind == FileKind::Directory,
            "node {i}"
        );
        let copies: Vec<&String> = n
            .host
            .items
            .keys()
            .filter(|p| p.starts_with("notes.") || p.starts_with("notes~"))
            .collect();
        assert_eq!(copies.len(), 1, "node {i}: {copies:?}");
        assert_eq!(n.host.data(copies[0]), Some(file.as_slice()), "node {i}");
        let indexed = n.replica.record(copies[0]).is_some_and(|r| !r.deleted);
        assert!(indexed, "node {i}: the copy is indexed");
    }
}

/// The copy a resolve keeps is saved again after the command and before its rename: the
/// path keeps what it held (a removal first left it empty, and the apply then waited for
/// blocks no node held any more), the conflict stands, and the save replicates.
#[test]
fn a_resolve_whose_kept_copy_changed_leaves_the_path_alone() {
    let (mut net, _a, copy) = conflicted_pair();
    let held = net.nodes[1].host.data("doc.txt").map(<[u8]>::to_vec);
    assert!(held.is_some());
    let now = net.now;
    net.nodes[1]
        .replica
        .handle_command(
            now,
            ReplicaCommand::Resolve {
                path: "doc.txt".into(),
                keep: copy.clone(),
            },
        )
        .expect("doc.txt is conflicted");
    // Saved on disk before the steps run; the scanner reports it a moment later.
    let saved = bytes(50_001, 9);
    let change = net.nodes[1].host.put(&copy, saved.clone(), 900);
    net.settle();
    net.local(1, change);
    net.settle();
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(n.host.data("doc.txt").map(<[u8]>::to_vec), held, "node {i}");
        assert_eq!(n.host.data(&copy), Some(saved.as_slice()), "node {i}");
    }
    assert_eq!(net.records(0), net.records(1));
    // Still in conflict: resolving again works.
    let now = net.now;
    net.nodes[1]
        .replica
        .handle_command(
            now,
            ReplicaCommand::Resolve {
                path: "doc.txt".into(),
                keep: copy.clone(),
            },
        )
        .expect("doc.txt is still conflicted");
    net.settle();
    for (i, n) in net.nodes.iter().enumerate() {
        assert_eq!(n.host.data("doc.txt"), Some(saved.as_slice()), "node {i}");
        assert_eq!(n.host.data(&copy), None, "node {i}");
    }
}

/// As above, but the node stops (its state persisted) right after its commit is refused, and
/// starts again: the apply the local change overtook is not resumed against what the disk
/// held before (it expected the old mode for good, and the path never settled), and the
/// outcome is the same.
#[test]
fn an_apply_overtaken_by_a_local_change_just_before_a_stop_is_planned_again() {
    let mut net = Net::new(2);
    let (a, b) = (bytes(300_000, 51), bytes(300_000, 52));
    net.put(0, "doc.txt", a.clone(), 100);
    net.link(0, 1);
    net.settle();
    net.unlink(0, 1);
    net.put(1, "doc.txt", b.clone(), 300);
    net.chmod_before_commit = Some((0, "doc.txt".into(), 4));
    net.link(0, 1);
    for _ in 0..1_000 {
        if net.chmod_before_commit.is_none() {
            break;
        }
        net.round();
    }
    assert!(net.chmod_before_commit.is_none(), "node 0 made no commit");
    // Stopped at once: what it holds now is what it finds at its next start.
    let now = net.now;
    net.nodes[0].replica.persist_now(now);
    net.round();
    net.restart(0, 9);
    net.link(0, 1);
    net.settle();
    let copies: Vec<String> = net.nodes[0]
        .host
        .items
        .keys()
        .filter(|p| p.contains(".conflict-"))
        .cloned()
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = &copies[0];
    for i in 0..2 {
        let host = &net.nodes[i].host;
        assert!(host.data("doc.txt") == Some(&b[..]), "node {i} lacks B");
        assert!(host.data(copy) == Some(&a[..]), "node {i} lost A");
    }
    assert_eq!(net.records(0), net.records(1));
}
