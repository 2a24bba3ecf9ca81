//! Announcing and fetching: index batches cut by bytes and entries, blocks served in
//! pieces, the fetch queue against full passes, full passes held to one per interval, sync
//! points.

use super::*;

/// What each node asked of its host, and every IWANT delivered (from, to, hashes).
type SchedulerTrace = (Vec<Vec<StorageRequest>>, Vec<(usize, usize, Vec<[u8; 32]>)>);

#[test]
fn a_block_is_served_in_pieces_of_128_kib() {
    let mut net = pair();
    let data = bytes(300_000, 12);
    let c = net.nodes[0].host.put_one_block("one", data.clone(), 100);
    net.local(0, c);
    net.settle();
    assert_eq!(net.nodes[1].host.data("one"), Some(data.as_slice()));
    let pieces: Vec<(u32, usize)> = net
        .pieces
        .iter()
        .filter(|p| p.0 == 0 && p.1 == 1)
        .map(|p| (p.2, p.3))
        .collect();
    assert_eq!(
        pieces,
        vec![
            (0, 131_072),
            (131_072, 131_072),
            (262_144, 300_000 - 262_144)
        ]
    );
}

#[test]
fn index_batches_are_cut_by_bytes_and_by_entries_and_filled_to_the_cut() {
    use super::announce::{entry_bytes_max, BATCH_BYTES_MAX};
    use weft_protocol::{FILE_BLOCKS_MAX, HEADER_BYTES, INDEX_ENTRIES_MAX, PAYLOAD_BYTES_MAX};

    let (me, peer) = (NodeId([0x10; 32]), NodeId([0x20; 32]));
    let now = Instant(1_000);
    let mut r = replica(me, 1);
    let answer = |r: &mut Replica| {
        let mut sent = Vec::new();
        while let Some(o) = r.poll_output() {
            match o {
                ReplicaOutput::Request { token, request } => {
                    let result = match request {
                        StorageRequest::LoadState => StorageResult::Loaded(None),
                        _ => StorageResult::Done,
                    };
                    r.handle_completed(now, token, result);
                }
                ReplicaOutput::Send { code, payload, .. } => sent.push((code, payload)),
                ReplicaOutput::Event(_) => {}
            }
        }
        sent
    };
    answer(&mut r);
    assert!(r.is_ready());
    // Large files (one over the cut alone, one of the most blocks a file may have), then
    // small ones (cut by entries).
    let large = [
        5_000,
        9_000,
        12_000,
        30_000,
        3_000,
        FILE_BLOCKS_MAX,
        7_000,
        4_000,
        4_000,
    ];
    let mut paths = Vec::new();
    for (k, n) in large.into_iter().enumerate() {
        let path = format!("large{k}");
        r.handle_local(now, LocalChange::Changed(synthetic(&path, n, k as u64)));
        paths.push(path);
    }
    for k in 0..600u64 {
        let path = format!("small{k:03}");
        r.handle_local(now, LocalChange::Changed(synthetic(&path, 1, 1_000 + k)));
        paths.push(path);
    }
    r.handle_link_up(now, peer);
    let list = weft_protocol::List {
        folder: folder(),
        index_id: 0,
        since: 0,
    };
    r.handle_message(now, peer, ReplicaMessage::List(list), &Bytes::new())
        .expect("a LIST is welcome");
    let batches: Vec<(usize, Vec<FileEntry>)> = answer(&mut r)
        .into_iter()
        .filter(|(code, _)| *code == Code::IHAVE)
        .map(|(code, payload)| {
            let Ok(Message::Replica(ReplicaMessage::IHave(m))) = Message::decode(code, &payload)
            else {
                panic!("an IHAVE that does not decode");
            };
            (payload.len(), m.entries)
        })
        .collect();
    let announced: Vec<&str> = batches
        .iter()
        .flat_map(|b| b.1.iter().map(|e| e.path.as_str()))
        .collect();
    assert_eq!(announced, paths);
    let bound = |e: &FileEntry| {
        entry_bytes_max(
            &Record {
                entry: e.clone(),
                deleted: false,
            },
            None,
        )
    };
    for (k, (payload_bytes, entries)) in batches.iter().enumerate() {
        let total: usize = entries.iter().map(bound).sum();
        assert!(*payload_bytes <= PAYLOAD_BYTES_MAX, "batch {k}");
        assert!(
            *payload_bytes <= total,
            "batch {k}: the bound is an upper bound"
        );
        assert!(entries.len() <= INDEX_ENTRIES_MAX, "batch {k}");
        assert!(entries.len() == 1 || total <= BATCH_BYTES_MAX, "batch {k}");
        assert!(
            entries.len() == 1
                || HEADER_BYTES + payload_bytes <= crate::sending::BULK_FRAME_BYTES_MAX,
            "batch {k}: a bulk frame"
        );
        if let Some((_, next)) = batches.get(k + 1) {
            let full =
                entries.len() == INDEX_ENTRIES_MAX || total + bound(&next[0]) > BATCH_BYTES_MAX;
            assert!(full, "batch {k} could have taken the next entry");
        }
    }
    // Cut by bytes (the large files) and by entries (the small ones).
    assert!(batches.iter().any(|b| b.1.len() == INDEX_ENTRIES_MAX));
    assert!(batches
        .iter()
        .any(|b| b.1.len() > 1 && b.1.iter().map(bound).sum::<usize>() > BATCH_BYTES_MAX / 2));
    let alone: Vec<usize> = batches
        .iter()
        .filter(|b| b.1.len() == 1)
        .map(|b| b.1[0].blocks.len())
        .collect();
    assert!(
        alone.contains(&FILE_BLOCKS_MAX) && alone.contains(&30_000),
        "{alone:?}"
    );
}

/// One scenario of the scheduler property: three nodes, files of many blocks (some sharing
/// content, so local copies happen) put at random nodes while blocks are in flight, a link
/// cut and restored, and optionally a node serving corrupt blocks. Returns everything the
/// nodes asked of their hosts and sent, in order.
fn scheduler_trace(seed: u64, plain: bool) -> SchedulerTrace {
    let mut x = seed | 1;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut net = Net::new(3);
    for n in &mut net.nodes {
        n.replica.fetch_plain = plain;
        // Its few files reach the bound of files considered per source.
        n.replica.fetching_files_max = 2;
    }
    net.link(0, 1);
    net.link(1, 2);
    if next(2) == 0 {
        net.link(0, 2);
    }
    net.settle();
    if next(3) == 0 {
        net.corrupt = Some(next(3) as usize);
    }
    let shared = bytes(200_000, seed);
    for step in 0..6 {
        let node = next(3) as usize;
        let path = format!("f{}", next(4));
        let data = match next(3) {
            0 => shared.clone(),
            1 => {
                let mut d = shared.clone();
                d.extend(bytes(next(100_000) as usize, seed ^ step));
                d
            }
            _ => bytes(1 + next(400_000) as usize, seed.wrapping_add(step)),
        };
        net.put(node, &path, data, 100 + step as i64);
        for _ in 0..next(40) {
            net.round();
        }
        if step == 3 {
            net.unlink(0, 1);
            for _ in 0..next(10) {
                net.round();
            }
            net.link(0, 1);
        }
    }
    net.settle();
    let requests = net.nodes.iter().map(|n| n.requests.clone()).collect();
    (requests, net.wants)
}

quickcheck::quickcheck! {
    /// The queue kept between full scheduling passes asks for exactly the blocks, of the
    /// same peers, in the same order, as a full pass after every freed room would.
    fn the_fetch_queue_schedules_as_a_full_pass_would(seed: u64) -> bool {
        let fast = scheduler_trace(seed, false);
        let plain = scheduler_trace(seed, true);
        fast == plain
    }
}

/// Full scheduling passes node 0 makes while node 1 announces 100 small files one at a time
/// (one round, 1 ms, each) during a long fetch, with `full_round_interval` at `interval_ms`;
/// every file arrives.
fn full_rounds_during_a_burst(interval_ms: u64) -> u64 {
    let mut net = Net::new(2);
    net.nodes[0].replica.config.full_round_interval = Duration::from_millis(interval_ms);
    net.link(0, 1);
    net.settle();
    net.put(1, "big", bytes(12_000_000, 60), 100);
    for _ in 0..50 {
        if !net.nodes[0].replica.inflight.is_empty() {
            break;
        }
        net.round();
    }
    assert!(
        !net.nodes[0].replica.inflight.is_empty(),
        "the big file's blocks are asked"
    );
    let before = net.nodes[0].replica.metrics().full_rounds;
    for k in 0..100u64 {
        net.put(1, &format!("s{k}"), bytes(3_000, 100 + k), 100);
        net.round();
        assert!(
            net.nodes[0].replica.applies.contains_key("big"),
            "the big file is still being fetched at {k}"
        );
    }
    let rounds = net.nodes[0].replica.metrics().full_rounds - before;
    net.settle();
    assert_eq!(net.records(0), net.records(1));
    for k in 0..100u64 {
        let path = format!("s{k}");
        assert_eq!(net.nodes[0].host.data(&path), net.nodes[1].host.data(&path));
    }
    assert_eq!(net.nodes[0].host.data("big"), net.nodes[1].host.data("big"));
    rounds
}

#[test]
fn a_burst_of_records_during_a_fetch_makes_one_full_pass_per_interval() {
    // 100 ms of records: at most one full pass per 20 ms (and the first at once).
    let held = full_rounds_during_a_burst(20);
    assert!(held <= 100 / 20 + 1, "{held} full passes");
    // Without the interval, every round's records make their own (in this harness a
    // round's outputs are drained twice: 50 passes for the 100 rounds).
    let each = full_rounds_during_a_burst(0);
    assert!(each >= 50, "{each} full passes");
}

#[test]
fn a_touch_during_a_fetch_does_not_stall_the_commit() {
    let mut net = pair();
    let old = bytes(300_000, 30);
    net.put(1, "f", old.clone(), 100);
    net.settle();
    let new = bytes(300_000, 31);
    net.put(1, "f", new.clone(), 200);
    for _ in 0..3 {
        net.round();
    }
    assert!(
        net.nodes[0].replica.applies.contains_key("f"),
        "the fetch of the new version is under way"
    );
    // Only the mtime changes under the fetch: the same content as the record.
    net.put(0, "f", old, 150);
    net.settle();
    assert_eq!(net.nodes[0].host.data("f"), Some(new.as_slice()));
    assert_eq!(net.records(0), net.records(1));
}

#[test]
fn a_copy_is_caught_up_once_it_holds_the_peers_records_up_to_the_sync_point() {
    let mut net = pair();
    let a = net.nodes[0].id;
    assert_eq!(net.nodes[0].replica.newest_sequence(), 0);
    // Sequence 0 waits for nothing.
    assert!(net.nodes[1].replica.caught_up(&a, 0, 0));
    let data = bytes(300_000, 3);
    net.put(0, "f", data.clone(), 100);
    net.put(0, "g", bytes(1000, 4), 100);
    let index_id = net.nodes[0].replica.index_id();
    let point = net.nodes[0].replica.newest_sequence();
    assert_eq!(point, 2);
    assert!(!net.nodes[1].replica.caught_up(&a, index_id, point));
    // Never caught up while the file is not in place, even once its record has arrived.
    let mut rounds = 0;
    while net.nodes[1].host.data("f") != Some(data.as_slice()) {
        assert!(rounds < 10_000, "the file arrives");
        assert!(!net.nodes[1].replica.caught_up(&a, index_id, point));
        // A round is 1 ms, so held-back scheduling passes come due.
        net.round();
        rounds += 1;
    }
    net.settle();
    assert!(rounds > 1);
    assert!(net.nodes[1].replica.caught_up(&a, index_id, point));
    // Another index id (the peer's state was reset), or a later point: not caught up.
    assert!(!net.nodes[1].replica.caught_up(&a, index_id ^ 1, point));
    assert!(!net.nodes[1].replica.caught_up(&a, index_id, point + 1));
    // A restart jumps the numbering of the next change, not the newest record's sequence,
    // so a sync point taken after it can still be reached.
    net.restart(0, 9);
    net.settle();
    assert_eq!(net.nodes[0].replica.newest_sequence(), point);
    assert!(net.nodes[1].replica.caught_up(&a, index_id, point));
}

/// A file of 1-byte blocks (a peer may announce one: every block holds state while in
/// flight, whatever its length) is asked for at most `bytes_in_flight_per_peer_max /
/// BLOCK_CHARGE_BYTES_MIN` blocks at a time; it still arrives whole.
#[test]
fn tiny_blocks_count_at_least_the_minimum_charge_in_flight() {
    let mut net = pair();
    let data = bytes(3_000, 13);
    let blocks: Vec<weft_protocol::Block> = data
        .iter()
        .enumerate()
        .map(|(i, b)| weft_protocol::Block {
            offset: i as u64,
            len: 1,
            hash: *blake3::hash(&[*b]).as_bytes(),
        })
        .collect();
    let c = net.nodes[0]
        .host
        .put_blocks("tiny", data.clone(), 100, blocks);
    net.local(0, c);
    net.settle();
    assert_eq!(net.nodes[1].host.data("tiny"), Some(data.as_slice()));
    // 64 KiB a peer in these tests: 4 blocks in flight, asked 4 at a time at most.
    let most = net.wants.iter().map(|w| w.2.len()).max();
    assert_eq!(most, Some(4));
}

/// A peer that leaves nothing a later link needs (no index seen, nothing being served) is
/// forgotten when its link goes down: fresh ids linking and leaving do not grow the folder's
/// state. One whose index was seen is kept (it is persisted, so its index is asked for from
/// where it was left).
#[test]
fn a_peer_that_leaves_nothing_to_keep_is_forgotten_at_link_down() {
    // `peer` links at `at`, says `m` (its storage requests answered), and leaves.
    let visit = |r: &mut Replica, at: Instant, peer: NodeId, m: ReplicaMessage| {
        r.handle_link_up(at, peer);
        r.handle_message(at, peer, m, &Bytes::new())
            .expect("a message the folder takes");
        while let Some(o) = r.poll_output() {
            if let ReplicaOutput::Request { token, request } = o {
                let result = match request {
                    StorageRequest::LoadState => StorageResult::Loaded(None),
                    _ => StorageResult::Done,
                };
                r.handle_completed(at, token, result);
            }
        }
        r.handle_link_down(at, peer);
    };
    let list = || {
        ReplicaMessage::List(weft_protocol::List {
            folder: folder(),
            index_id: 0,
            since: 0,
        })
    };
    let ihave = || {
        ReplicaMessage::IHave(weft_protocol::IHave {
            folder: folder(),
            index_id: 7,
            entries: Vec::new(),
        })
    };
    let now = Instant(1_000);
    let mut r = replica(NodeId([0x10; 32]), 1);
    for n in 0..100u8 {
        visit(&mut r, now, NodeId([n; 32]), list());
    }
    assert!(r.peers.is_empty(), "{} peers kept", r.peers.len());
    let kept = NodeId([0xee; 32]);
    visit(&mut r, now, kept, ihave());
    assert_eq!(r.peers.keys().collect::<Vec<_>>(), [&kept]);

    // Peers whose index was seen are kept up to `peers_kept_max`: past it, those linked
    // longest ago go (here 5 peers, 3 kept: the last three to link).
    let mut config = ReplicaConfig::new(folder(), NodeId([0x10; 32]));
    config.peers_kept_max = 3;
    let mut r = Replica::new(config, [1; 32]);
    for n in 1..=5u8 {
        visit(
            &mut r,
            Instant(1_000 + u64::from(n)),
            NodeId([n; 32]),
            ihave(),
        );
    }
    let kept: Vec<u8> = r.peers.keys().map(|id| id.0[0]).collect();
    assert_eq!(kept, [3, 4, 5]);
}

/// A file of `places` equal blocks of 1 KiB (pseudo-random, from `seed`), and its blocks.
fn equal_blocks(places: usize, seed: u64) -> (Vec<u8>, Vec<weft_protocol::Block>) {
    let chunk = bytes(1024, seed);
    let data: Vec<u8> = chunk.iter().copied().cycle().take(1024 * places).collect();
    let hash = *blake3::hash(&chunk).as_bytes();
    let blocks = (0..places as u64)
        .map(|i| weft_protocol::Block {
            offset: i * 1024,
            len: 1024,
            hash,
        })
        .collect();
    (data, blocks)
}

/// A file of many equal blocks (zeros, or a record naming one hash over and over) is filled
/// at most `BLOCK_WAITERS_MAX` places a fetch: each piece served is one write a place, so a
/// block named 262,144 times would otherwise queue 33 million writes from one 16 MiB block.
#[test]
fn one_fetch_of_a_block_fills_at_most_block_waiters_max_places() {
    use crate::replicate::replica::BLOCK_WAITERS_MAX;
    let places = 2 * BLOCK_WAITERS_MAX + 10;
    let (data, blocks) = equal_blocks(places, 77);
    let mut net = pair();
    let c = net.nodes[0]
        .host
        .put_blocks("equal", data.clone(), 100, blocks);
    net.local(0, c);
    net.settle();
    assert_eq!(net.nodes[1].host.data("equal"), Some(data.as_slice()));
    let served = net.count_requests(0, |r| matches!(r, StorageRequest::ReadBlock { .. }));
    assert_eq!(
        served,
        places.div_ceil(BLOCK_WAITERS_MAX),
        "one fetch per 64 places"
    );
    let written = net.count_requests(1, |r| matches!(r, StorageRequest::WriteTemp { .. }));
    assert_eq!(written, places, "each place written once");
}

/// An IWANT is served once a hash, and at most `SERVING_BYTES_PER_PEER_MAX` of reads are
/// outstanding for one peer: one IWANT of ~8 KB naming a 16 MiB block 256 times (or 256 such
/// blocks) had this node read 4 GiB.
#[test]
fn an_iwant_is_served_once_a_hash_and_within_the_peers_read_bytes() {
    use crate::replicate::replica::SERVING_BYTES_PER_PEER_MAX;
    let block_len: usize = 16 * 1024 * 1024;
    let files = (SERVING_BYTES_PER_PEER_MAX as usize).div_ceil(block_len) + 2;
    let mut net = Net::new(3);
    let mut hashes = Vec::new();
    for f in 0..files {
        let data = bytes(block_len, 500 + f as u64);
        hashes.push(*blake3::hash(&data).as_bytes());
        let c = net.nodes[0]
            .host
            .put_one_block(&format!("big{f}"), data, 100);
        net.local(0, c);
    }
    net.settle();
    let reads =
        |net: &Net| net.count_requests(0, |r| matches!(r, StorageRequest::ReadBlock { .. }));
    let before = reads(&net);
    let want = |hashes: Vec<weft_protocol::BlockHash>| {
        ReplicaMessage::IWant(weft_protocol::IWant {
            folder: folder(),
            hashes,
        })
    };
    inject(&mut net, 0, want(vec![hashes[0]; 256]));
    assert_eq!(
        reads(&net) - before,
        1,
        "one read for one hash asked 256 times"
    );
    let before = reads(&net);
    inject(&mut net, 0, want(hashes.clone()));
    assert_eq!(
        reads(&net) - before,
        SERVING_BYTES_PER_PEER_MAX as usize / block_len,
        "no more outstanding than the peer's read bytes"
    );
}

/// Past `BLOCK_WAITERS_MAX` places a fetch fills, the files whose places wait still lend it
/// their sources: a first file of equal blocks whose only source is unreachable never holds
/// up another file of the same block that a linked peer serves.
#[test]
fn capped_places_still_lend_their_files_sources() {
    use crate::replicate::replica::BLOCK_WAITERS_MAX;
    let places = BLOCK_WAITERS_MAX + 6;
    let mut net = Net::new(3);
    // First, `a` from node 2, which is never linked: no reachable source.
    let (_, blocks) = equal_blocks(places, 78);
    let LocalChange::Changed(mut a) = Host::default().put_blocks("a", Vec::new(), 100, blocks)
    else {
        unreachable!()
    };
    let by = short_id(&net.nodes[2].id);
    a.size = (1024 * places) as u64;
    a.version = Version::default().bumped(by);
    a.modified_by = by;
    a.sequence = 1;
    let have = ReplicaMessage::IHave(weft_protocol::IHave {
        folder: folder(),
        index_id: 7,
        entries: vec![a],
    });
    inject(&mut net, 1, have);
    // Then `b`, the same block as many times, from linked node 0.
    let (data, blocks) = equal_blocks(places, 78);
    let c = net.nodes[0].host.put_blocks("b", data.clone(), 100, blocks);
    net.local(0, c);
    net.link(0, 1);
    net.settle();
    assert!(
        net.nodes[1].host.data("b") == Some(data.as_slice()),
        "b is not held up by a"
    );
    assert!(
        net.nodes[1].host.data("a") == Some(data.as_slice()),
        "nor a, from b's source"
    );
}

/// Three unlinked nodes, node 1 holding `FETCHING_FILES_MAX` + 1 small files `s000`, `s001`,
/// … (their bytes drawn from `seed` on); and how many.
fn more_files_than_fetched_at_once(seed: u64) -> (Net, usize) {
    let mut net = Net::new(3);
    let count = super::super::replica::FETCHING_FILES_MAX + 1;
    for n in 0..count {
        net.put(1, &format!("s{n:03}"), bytes(2_000, seed + n as u64), 100);
    }
    (net, count)
}

/// A peer that answers NOTFOUND for every block of the files it announced (a hostile one, or
/// one whose files changed on its disk) leaves their fetches waiting for its next
/// announcement. More of them than `FETCHING_FILES_MAX`, all older than a file the same peer
/// announces later, do not keep that file from being fetched.
#[test]
fn fetches_stalled_by_notfound_do_not_crowd_out_a_later_one() {
    let (mut net, count) = more_files_than_fetched_at_once(1_000);
    net.settle();
    // Node 1's disk loses them behind its back: every block it is asked for is NOTFOUND.
    net.nodes[1]
        .host
        .items
        .retain(|path, _| !path.starts_with('s'));
    net.link(0, 1);
    net.settle();
    let stalled = net.nodes[0].replica.applies.len();
    assert_eq!(stalled, count, "every file waits for node 1");
    // Its next announcement lets node 0 ask again; the NOTFOUNDs come back, and then the
    // file it announced is asked for.
    let late = bytes(2_000, 7);
    net.put(1, "late", late.clone(), 200);
    net.settle();
    assert!(
        net.nodes[0].host.data("late") == Some(late.as_slice()),
        "node 1's later file was never fetched"
    );
}

/// An apply stalled for want of a source (the peer answered NOTFOUND: its file changed on its
/// disk) leaves the copy caught up, so a run may start, but not holding all of the peer's
/// records: what a remote run wrote is not all back (SPEC.md §23.6).
#[test]
fn a_stalled_apply_is_caught_up_but_does_not_hold_all_of_the_peers_records() {
    let mut net = pair();
    let a = net.nodes[0].id;
    net.put(0, "f", bytes(3_000, 5), 100);
    let index_id = net.nodes[0].replica.index_id();
    let point = net.nodes[0].replica.newest_sequence();
    // Node 0's disk loses it behind its back: node 1's fetch is answered NOTFOUND.
    net.nodes[0].host.items.remove("f");
    net.settle();
    let copy = &net.nodes[1].replica;
    assert!(copy.applies.contains_key("f"), "the fetch waits");
    assert!(copy.caught_up(&a, index_id, point));
    assert!(!copy.holds_all_of(&a, index_id, point));
    // Node 0's scanner finds the file again: it arrives, and then the copy holds it all.
    net.put(0, "f", bytes(3_000, 6), 200);
    net.settle();
    let point = net.nodes[0].replica.newest_sequence();
    assert!(net.nodes[1].replica.holds_all_of(&a, index_id, point));
}

/// A peer that did not send the blocks asked of it (silent for a while, or hostile) has them
/// time out and is excluded for them for `block_request_timeout`: more such fetches than
/// `FETCHING_FILES_MAX`, all older than a file the same peer announces meanwhile, do not keep
/// that file waiting for the exclusions to end.
#[test]
fn fetches_a_peer_is_excluded_for_do_not_crowd_out_its_later_one() {
    let (mut net, count) = more_files_than_fetched_at_once(2_000);
    // Node 0 asks node 1 for as many blocks at once as the default allows (the tests' 64 KiB
    // would keep most files waiting for room, not excluded).
    let mut config = ReplicaConfig::new(folder(), net.nodes[0].id);
    config.bytes_in_flight_per_peer_max = ReplicaConfig::new(folder(), net.nodes[0].id)
        .bytes_in_flight_per_peer_max
        .max(16 << 20);
    net.nodes[0].replica = Replica::new(config, [0; 32]);
    net.settle();
    net.hereis_budget = Some(0);
    net.link(0, 1);
    // Until node 0's requests to node 1 (one per file the bound lets in) have timed out and
    // it is excluded for them.
    let mut steps = 0;
    while net.nodes[0].replica.excluded.len() < count - 1 {
        assert!(steps < 100_000, "the requests never time out");
        if !net.round() {
            let next = net.nodes[0].replica.poll_timeout().expect("a deadline");
            net.now = net.now.max(next);
            net.nodes[0].replica.handle_timeout(net.now);
        }
        steps += 1;
    }
    let excluded_until = net.now + Duration::from_secs(10);
    net.hereis_budget = None;
    let late = bytes(2_000, 8);
    net.put(1, "late", late.clone(), 200);
    while net.nodes[0].host.data("late") != Some(late.as_slice()) {
        assert!(
            net.now < excluded_until,
            "node 1's later file waited for its exclusions to end"
        );
        // A round is 1 ms: held-back scheduling passes come due.
        net.round();
    }
}

/// One peer's backlog, more files than `FETCHING_FILES_MAX` waiting for room in its
/// connection (the tests' 64 KiB in flight), does not hold up a file another peer announces
/// after it: each source has its own files considered each pass.
#[test]
fn one_peers_backlog_does_not_hold_up_another_peers_file() {
    let (mut net, count) = more_files_than_fetched_at_once(3_000);
    net.settle();
    net.link(0, 1);
    while net.nodes[0].replica.applies.len() < count {
        net.round();
    }
    net.link(0, 2);
    let late = bytes(2_000, 9);
    net.put(2, "late", late.clone(), 200);
    while net.nodes[0].host.data("late") != Some(late.as_slice()) {
        let waiting = net.nodes[0].replica.applies.len();
        assert!(
            waiting > count - 8,
            "node 2's file waited until node 1's backlog ran down ({waiting} files left)"
        );
        net.round();
    }
}
