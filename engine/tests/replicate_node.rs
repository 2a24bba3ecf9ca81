//! Folder replication hosted by a node: a folder added by command loads its state, asks a
//! new link for its index, answers LIST with its records, serves a block through the host's
//! storage as a bulk HEREIS, ignores messages about folders it does not hold, and closes the
//! connection of a peer that sends a block nobody asked for.

mod common;

use bytes::Bytes;
use common::{closed, drain, drain_raw, frames_to, node_with, Fake, T0};
use weft_engine::protocol::{
    Block, Code, FileEntry, FileKind, FolderId, HereIs, Hlc, IWant, List, Message, ReplicaMessage,
    TableWant, TableWrite, Version,
};
use weft_engine::replicate::{LocalChange, ReplicaConfig, StorageRequest, StorageResult};
use weft_engine::{
    CloseReason, Command, ConnId, HostRequest, HostResult, Input, NodeId, Output, ReplicateCommand,
};

fn folder() -> FolderId {
    FolderId::from_name("photos")
}

fn frame(m: ReplicaMessage<'_>) -> Bytes {
    Message::Replica(m).to_frame(false).into_bytes()
}

fn replica_messages(out: &[Output], conn: ConnId) -> Vec<(Code, Bytes)> {
    frames_to(out, conn)
        .iter()
        .filter(|f| f.code().family() == Some(weft_engine::protocol::Family::Replication))
        .map(|f| (f.code(), f.payload().unwrap()))
        .collect()
}

#[test]
fn a_node_hosts_a_folder_end_to_end_with_a_raw_peer() {
    let mut node = node_with(|_| {});
    node.handle_timeout(T0);
    drain(&mut node);
    let config = ReplicaConfig::new(folder(), NodeId::default());
    node.handle_input(
        T0,
        Input::Command(Command::Replicate(ReplicateCommand::AddFolder(config))),
    )
    .unwrap();
    // `drain` answers the folder's LoadState with "nothing stored": a fresh folder, which
    // writes its state at once and announces nothing until that write is durable.
    let out = drain(&mut node);
    assert!(node.replica(&folder()).is_some_and(|r| r.is_ready()));
    let store = out
        .iter()
        .find_map(|o| match o {
            Output::Request {
                id,
                request: HostRequest::StoreState { .. },
            } => Some(*id),
            _ => None,
        })
        .expect("the folder's state written once loaded");
    let result = HostResult::Stored;
    node.handle_input(T0, Input::Completed { id: store, result })
        .unwrap();
    drain(&mut node);

    // A local file, as the host's scanner reports it.
    let data = Bytes::from(vec![7u8; 3000]);
    let hash = *blake3::hash(&data).as_bytes();
    let entry = FileEntry {
        path: "a.txt".into(),
        kind: FileKind::File,
        target: String::new(),
        mode: 6,
        size: 3000,
        mtime_ms: 1_700_000_000_000,
        modified_by: 0,
        version: Version::default(),
        sequence: 0,
        blocks: vec![Block {
            offset: 0,
            len: 3000,
            hash,
        }],
    };
    let change = ReplicateCommand::Local {
        folder: folder(),
        change: LocalChange::Changed(entry),
    };
    node.handle_input(T0, Input::Command(Command::Replicate(change)))
        .unwrap();
    drain(&mut node);

    // A peer links: the node asks it for its index.
    let fake = Fake::new(9, ConnId::inbound(1));
    let out = fake.join(&mut node, T0);
    let sent = replica_messages(&out, fake.conn);
    assert!(
        sent.iter().any(|(c, p)| *c == Code::LIST
            && matches!(Message::decode(*c, p), Ok(Message::Replica(ReplicaMessage::List(l))) if l.folder == folder())),
        "{sent:?}"
    );

    // It asks for the node's index: the file is announced.
    let list = List {
        folder: folder(),
        index_id: 0,
        since: 0,
    };
    fake.send(&mut node, T0, frame(ReplicaMessage::List(list)));
    let out = drain(&mut node);
    let ihave = replica_messages(&out, fake.conn)
        .into_iter()
        .find(|(c, _)| *c == Code::IHAVE)
        .expect("an IHAVE");
    match Message::decode(ihave.0, &ihave.1) {
        Ok(Message::Replica(ReplicaMessage::IHave(h))) => {
            assert_eq!(h.entries.len(), 1);
            assert_eq!(h.entries[0].path, "a.txt");
            assert_eq!(h.entries[0].blocks[0].hash, hash);
        }
        other => panic!("{other:?}"),
    }
    // The driver wrote it (an index batch is a bulk frame: the next waits for that).
    written(&mut node, fake.conn);

    // It asks for the block: the node reads it through its host and sends it as HEREIS.
    let want = IWant {
        folder: folder(),
        hashes: vec![hash],
    };
    fake.send(&mut node, T0, frame(ReplicaMessage::IWant(want)));
    let out = drain(&mut node);
    let (id, request) = out
        .iter()
        .find_map(|o| match o {
            Output::Request { id, request } => Some((*id, request.clone())),
            _ => None,
        })
        .expect("a storage request");
    assert!(matches!(
        request,
        HostRequest::Storage { folder: f, request: StorageRequest::ReadBlock { ref path, offset: 0, len: 3000 } }
            if f == folder() && path == "a.txt"
    ));
    let result = HostResult::Storage(StorageResult::Block(data.clone()));
    node.handle_input(T0, Input::Completed { id, result })
        .unwrap();
    let out = drain(&mut node);
    let hereis = replica_messages(&out, fake.conn)
        .into_iter()
        .find(|(c, _)| *c == Code::HEREIS)
        .expect("a HEREIS");
    match Message::decode(hereis.0, &hereis.1) {
        Ok(Message::Replica(ReplicaMessage::HereIs(h))) => {
            assert_eq!((h.hash, h.offset, h.data), (hash, 0, &data[..]));
        }
        other => panic!("{other:?}"),
    }

    // A message about a folder the node does not hold changes nothing.
    let other = List {
        folder: FolderId::from_name("other"),
        index_id: 0,
        since: 0,
    };
    fake.send(&mut node, T0, frame(ReplicaMessage::List(other)));
    let out = drain(&mut node);
    assert_eq!(closed(&out, fake.conn), None);
    assert!(replica_messages(&out, fake.conn).is_empty());

    // A block nobody asked for closes the connection.
    let unasked = HereIs {
        folder: folder(),
        hash: [1; 32],
        offset: 0,
        data: b"junk",
    };
    fake.send(&mut node, T0, frame(ReplicaMessage::HereIs(unasked)));
    let out = drain(&mut node);
    assert!(
        matches!(
            closed(&out, fake.conn),
            Some(CloseReason::UnexpectedMessage(_))
        ),
        "{:?}",
        closed(&out, fake.conn)
    );
    node.check_invariants().unwrap();
}

/// A node serving many blocks at once hands the session one bulk frame at a time, the next
/// when the connection is written: none is refused (and lost until the requester's timeout).
/// A node sharing one file of `blocks` (cut where each ends), linked to a fake peer: the
/// node, the peer and the blocks' hashes.
fn holding_one_file(path: &str, blocks: &[Bytes]) -> (weft_engine::Node, Fake, Vec<[u8; 32]>) {
    let mut node = node_with(|_| {});
    node.handle_timeout(T0);
    drain(&mut node);
    let config = ReplicaConfig::new(folder(), NodeId::default());
    node.handle_input(
        T0,
        Input::Command(Command::Replicate(ReplicateCommand::AddFolder(config))),
    )
    .unwrap();
    drain(&mut node);
    let mut offset = 0u64;
    let cut: Vec<Block> = blocks
        .iter()
        .map(|b| {
            let len = u32::try_from(b.len()).expect("a test block");
            let block = Block {
                offset,
                len,
                hash: *blake3::hash(b).as_bytes(),
            };
            offset += u64::from(len);
            block
        })
        .collect();
    let entry = FileEntry {
        path: path.into(),
        kind: FileKind::File,
        target: String::new(),
        mode: 6,
        size: offset,
        mtime_ms: 1_700_000_000_000,
        modified_by: 0,
        version: Version::default(),
        sequence: 0,
        blocks: cut,
    };
    let hashes: Vec<[u8; 32]> = entry.blocks.iter().map(|b| b.hash).collect();
    let change = ReplicateCommand::Local {
        folder: folder(),
        change: LocalChange::Changed(entry),
    };
    node.handle_input(T0, Input::Command(Command::Replicate(change)))
        .unwrap();
    drain(&mut node);
    let fake = Fake::new(9, ConnId::inbound(1));
    fake.join(&mut node, T0);
    drain(&mut node);
    (node, fake, hashes)
}

/// The block reads among `out`: each request's id and offset.
fn block_reads(out: &[Output]) -> Vec<(weft_engine::RequestId, u64)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Request {
                id,
                request:
                    HostRequest::Storage {
                        request: StorageRequest::ReadBlock { offset, .. },
                        ..
                    },
            } => Some((*id, *offset)),
            _ => None,
        })
        .collect()
}

#[test]
fn many_blocks_asked_at_once_all_go_out_one_bulk_frame_at_a_time() {
    let blocks: Vec<Bytes> = (0..6u8).map(|i| Bytes::from(vec![i; 5000])).collect();
    let (mut node, fake, hashes) = holding_one_file("many.bin", &blocks);
    let want = IWant {
        folder: folder(),
        hashes: hashes.clone(),
    };
    fake.send(&mut node, T0, frame(ReplicaMessage::IWant(want)));
    // Every read is answered before the node runs again: six HEREIS wait at once.
    let reads = block_reads(&drain(&mut node));
    assert_eq!(reads.len(), 6);
    let mut out = Vec::new();
    for (id, offset) in reads {
        let block = blocks[(offset / 5000) as usize].clone();
        let result = HostResult::Storage(StorageResult::Block(block));
        node.handle_input(T0, Input::Completed { id, result })
            .unwrap();
    }
    out.extend(drain(&mut node));
    // The driver writes each handed-out frame and says so.
    for _ in 0..20 {
        node.handle_input(T0, Input::Writable { conn: fake.conn })
            .unwrap();
        out.extend(drain(&mut node));
    }
    let mut got: Vec<[u8; 32]> = replica_messages(&out, fake.conn)
        .into_iter()
        .filter(|(c, _)| *c == Code::HEREIS)
        .filter_map(|(c, p)| match Message::decode(c, &p) {
            Ok(Message::Replica(ReplicaMessage::HereIs(h))) => Some(h.hash),
            _ => None,
        })
        .collect();
    got.sort_unstable();
    let mut want = hashes;
    want.sort_unstable();
    assert_eq!(got, want, "every block goes out");
    assert_eq!(node.metrics().session.bulk_refused, 0);
}

/// A folder kept with one peer alone (a remote run's, `ReplicaConfig::only_with`) asks no
/// other peer for its index and answers none: the other's messages about it are ignored, as
/// for a folder not held, and it cannot put a file into it.
#[test]
fn a_folder_kept_with_one_peer_ignores_every_other() {
    let mut node = node_with(|_| {});
    node.handle_timeout(T0);
    drain(&mut node);
    let allowed = Fake::new(8, ConnId::inbound(1));
    let stranger = Fake::new(9, ConnId::inbound(2));
    let mut config = ReplicaConfig::new(folder(), NodeId::default());
    config.only_with = Some(vec![allowed.identity.node_id()]);
    node.handle_input(
        T0,
        Input::Command(Command::Replicate(ReplicateCommand::AddFolder(config))),
    )
    .unwrap();
    let out = drain(&mut node);
    let store = out
        .iter()
        .find_map(|o| match o {
            Output::Request {
                id,
                request: HostRequest::StoreState { .. },
            } => Some(*id),
            _ => None,
        })
        .expect("the folder's state written once loaded");
    let result = HostResult::Stored;
    node.handle_input(T0, Input::Completed { id: store, result })
        .unwrap();
    drain(&mut node);

    let is_list = |(c, _): &(Code, Bytes)| *c == Code::LIST;
    let out = stranger.join(&mut node, T0);
    assert!(!replica_messages(&out, stranger.conn).iter().any(is_list));
    let out = allowed.join(&mut node, T0);
    assert!(replica_messages(&out, allowed.conn).iter().any(is_list));

    // The stranger announces a file: nothing is fetched, nothing answered, the link stays.
    let entry = FileEntry {
        path: "evil.sh".into(),
        kind: FileKind::File,
        target: String::new(),
        mode: 7,
        size: 4,
        mtime_ms: 1_700_000_000_000,
        modified_by: 1,
        version: Version::default(),
        sequence: 1,
        blocks: vec![Block {
            offset: 0,
            len: 4,
            hash: *blake3::hash(b"evil").as_bytes(),
        }],
    };
    let list = List {
        folder: folder(),
        index_id: 0,
        since: 0,
    };
    stranger.send(&mut node, T0, frame(ReplicaMessage::List(list)));
    let ihave = weft_engine::protocol::IHave {
        folder: folder(),
        index_id: 5,
        entries: vec![entry],
    };
    stranger.send(&mut node, T0, frame(ReplicaMessage::IHave(ihave)));
    let out = drain(&mut node);
    assert_eq!(closed(&out, stranger.conn), None);
    assert!(replica_messages(&out, stranger.conn).is_empty());
    let replica = node.replica(&folder()).expect("the folder");
    assert!(replica.record("evil.sh").is_none());
    node.check_invariants().unwrap();
}

/// A peer on a dedicated connection of the replication family (which weft never opens for
/// it) is not a link: its messages are ignored. Each fresh key left state behind that only
/// a link's going down lets go (a LIST kept for a folder not held, the peer's entry in the
/// folder) and had blocks read for it; none came down.
#[test]
fn replication_messages_on_a_dedicated_connection_are_ignored() {
    let blocks: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 5000])).collect();
    let (mut node, linked, hashes) = holding_one_file("a.bin", &blocks);
    let dedicated = Fake::new(10, ConnId::inbound(2));
    let family = Some(weft_engine::protocol::Family::Replication.high_byte());
    dedicated.join_as(&mut node, T0, family);
    drain(&mut node);
    let want = |hashes: &[[u8; 32]]| {
        frame(ReplicaMessage::IWant(IWant {
            folder: folder(),
            hashes: hashes.to_vec(),
        }))
    };
    let list = frame(ReplicaMessage::List(List {
        folder: folder(),
        index_id: 0,
        since: 0,
    }));
    dedicated.send(&mut node, T0, want(&hashes));
    dedicated.send(&mut node, T0, list);
    let out = drain(&mut node);
    assert_eq!(closed(&out, dedicated.conn), None);
    assert!(block_reads(&out).is_empty(), "no block read for it");
    assert!(replica_messages(&out, dedicated.conn).is_empty());
    // The same from the linked peer is answered.
    linked.send(&mut node, T0, want(&hashes));
    assert_eq!(block_reads(&drain(&mut node)).len(), 3);
    node.check_invariants().unwrap();
}

/// Block reads serving a peer that still wait in the folder's queue when its link goes down
/// are dropped: nothing would send their blocks.
#[test]
fn reads_queued_for_a_peer_that_left_are_not_made() {
    let blocks: Vec<Bytes> = (0..200u8).map(|i| Bytes::from(vec![i; 100])).collect();
    let (mut node, fake, hashes) = holding_one_file("many.bin", &blocks);
    let want = IWant {
        folder: folder(),
        hashes,
    };
    fake.send(&mut node, T0, frame(ReplicaMessage::IWant(want)));
    let reads = block_reads(&drain(&mut node));
    // At most `requests_outstanding_max` (64) steps are out at once (the state's store may
    // be one): the rest wait in the queue.
    let outstanding_max = ReplicaConfig::new(folder(), NodeId::default()).requests_outstanding_max;
    assert!(reads.len() <= outstanding_max && reads.len() > outstanding_max / 2);
    node.handle_input(T0, Input::Closed { conn: fake.conn })
        .unwrap();
    drain(&mut node);
    let mut later = Vec::new();
    for (id, offset) in reads {
        let block = blocks[(offset / 100) as usize].clone();
        let result = HostResult::Storage(StorageResult::Block(block));
        node.handle_input(T0, Input::Completed { id, result })
            .unwrap();
        later.extend(block_reads(&drain(&mut node)));
    }
    assert!(later.is_empty(), "{} reads made for nobody", later.len());
    node.check_invariants().unwrap();
}

/// The folder's state stores among `out`.
fn stores(out: &[Output]) -> Vec<(weft_engine::RequestId, Bytes)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Request {
                id,
                request: HostRequest::StoreState { name, bytes },
            } if name.starts_with("replica-") => Some((*id, bytes.clone())),
            _ => None,
        })
        .collect()
}

/// A node holding `folder()`, its state loaded; the id of the first persist of its state,
/// not yet answered.
fn node_with_folder() -> (weft_engine::Node, weft_engine::RequestId) {
    let mut node = node_with(|_| {});
    node.handle_timeout(T0);
    drain(&mut node);
    let config = ReplicaConfig::new(folder(), NodeId::default());
    node.handle_input(
        T0,
        Input::Command(Command::Replicate(ReplicateCommand::AddFolder(config))),
    )
    .unwrap();
    let out = drain(&mut node);
    let (store, _) = stores(&out)
        .into_iter()
        .next()
        .expect("the folder's state written once loaded");
    (node, store)
}

/// A local change of a file at `path` fed to `node`.
fn change_locally(node: &mut weft_engine::Node, path: &str) {
    let entry = FileEntry {
        path: path.into(),
        kind: FileKind::File,
        target: String::new(),
        mode: 6,
        size: 0,
        mtime_ms: 1_700_000_000_000,
        modified_by: 0,
        version: Version::default(),
        sequence: 0,
        blocks: vec![],
    };
    let change = ReplicateCommand::Local {
        folder: folder(),
        change: LocalChange::Changed(entry),
    };
    node.handle_input(T0, Input::Command(Command::Replicate(change)))
        .unwrap();
}

/// A change not yet persisted when the node shuts down is persisted at once, not after
/// `persist_delay` (which a stopping node may not live to see).
#[test]
fn a_shutdown_persists_a_folder_change_at_once() {
    let (mut node, store) = node_with_folder();
    let result = HostResult::Stored;
    node.handle_input(T0, Input::Completed { id: store, result })
        .unwrap();
    drain(&mut node);
    change_locally(&mut node, "late.txt");
    let out = drain(&mut node);
    assert_eq!(stores(&out).len(), 0, "persisted only after persist_delay");
    node.handle_input(T0, Input::Command(Command::Shutdown))
        .unwrap();
    let out = drain(&mut node);
    let persisted = stores(&out);
    assert_eq!(persisted.len(), 1, "the change persisted at the shutdown");
    // What it persisted holds the change: a node started from it has the record.
    let mut restarted = node_with(|_| {});
    restarted.handle_timeout(T0);
    drain(&mut restarted);
    add_again_from(&mut restarted, persisted[0].1.clone());
    drain(&mut restarted);
    let replica = restarted.replica(&folder()).expect("added from the state");
    assert!(replica.record("late.txt").is_some());
}

/// A folder removed (a remote run's, its runs over) persists its last change at once, even
/// while an earlier persist is still out; answers to its steps that come later are ignored;
/// and the folder added again resumes from the state it persisted.
#[test]
fn a_removed_folder_persists_its_change_and_resumes_when_added_again() {
    let (mut node, first_store) = node_with_folder();
    change_locally(&mut node, "kept.txt");
    assert!(stores(&drain(&mut node)).is_empty());
    let remove = ReplicateCommand::RemoveFolder(folder());
    node.handle_input(T0, Input::Command(Command::Replicate(remove)))
        .unwrap();
    let persisted = stores(&drain(&mut node));
    assert_eq!(
        persisted.len(),
        1,
        "persisted at the removal, the first still out"
    );
    let (last_store, state) = persisted[0].clone();
    assert!(node.replica(&folder()).is_none());
    let again = ReplicateCommand::RemoveFolder(folder());
    assert!(node
        .handle_input(T0, Input::Command(Command::Replicate(again)))
        .is_err());
    // The host answers both persists now: no folder takes them.
    for id in [first_store, last_store] {
        let result = HostResult::Stored;
        node.handle_input(T0, Input::Completed { id, result })
            .unwrap();
    }
    assert!(stores(&drain(&mut node)).is_empty());
    node.check_invariants().unwrap();

    add_again_from(&mut node, state);
    drain(&mut node);
    let replica = node.replica(&folder()).expect("added again");
    assert!(
        replica.record("kept.txt").is_some(),
        "resumed from its state"
    );
    node.check_invariants().unwrap();
}

/// The driver reports everything handed out on `conn` written; `node`'s outputs then.
fn written(node: &mut weft_engine::Node, conn: ConnId) -> Vec<Output> {
    node.handle_input(T0, Input::Writable { conn }).unwrap();
    drain(node)
}

/// The paths of every IHAVE `out` carries to `conn`.
fn announced(out: &[Output], conn: ConnId) -> Vec<String> {
    replica_messages(out, conn)
        .into_iter()
        .filter_map(|(c, p)| match Message::decode(c, &p) {
            Ok(Message::Replica(ReplicaMessage::IHave(h))) => {
                Some(h.entries.into_iter().map(|e| e.path).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect()
}

/// Answers the first persist of a folder's state among `out` (announcing waits for it).
fn answer_first_store(node: &mut weft_engine::Node, out: &[Output]) -> Bytes {
    let (id, state) = stores(out).into_iter().next().expect("a persist");
    let result = HostResult::Stored;
    node.handle_input(T0, Input::Completed { id, result })
        .unwrap();
    state
}

/// Adds `folder()` to `node` again, its state loaded from `state`.
fn add_again_from(node: &mut weft_engine::Node, state: Bytes) {
    let config = ReplicaConfig::new(folder(), NodeId::default());
    let add = ReplicateCommand::AddFolder(config);
    node.handle_input(T0, Input::Command(Command::Replicate(add)))
        .unwrap();
    let load = drain_raw(node)
        .into_iter()
        .find_map(|o| match o {
            Output::Request {
                id,
                request: HostRequest::LoadState { .. },
            } => Some(id),
            _ => None,
        })
        .expect("the folder added again loads its state");
    let result = HostResult::Loaded(Some(state));
    node.handle_input(T0, Input::Completed { id: load, result })
        .unwrap();
}

/// A peer's LIST for a folder this node does not hold yet is kept, and answered once the
/// folder is added while the link lasts (a remote run's folder, added at the request). Its
/// listeners outlive the folder's removal: added again, it tells them only what changed.
#[test]
fn a_list_that_came_before_the_folder_is_answered_once_it_is_added() {
    let mut node = node_with(|_| {});
    node.handle_timeout(T0);
    drain(&mut node);
    let fake = Fake::new(9, ConnId::inbound(1));
    fake.join(&mut node, T0);
    let list = List {
        folder: folder(),
        index_id: 0,
        since: 0,
    };
    fake.send(&mut node, T0, frame(ReplicaMessage::List(list)));
    assert!(replica_messages(&drain(&mut node), fake.conn).is_empty());

    let config = ReplicaConfig::new(folder(), NodeId::default());
    let add = ReplicateCommand::AddFolder(config);
    node.handle_input(T0, Input::Command(Command::Replicate(add)))
        .unwrap();
    let out = drain(&mut node);
    answer_first_store(&mut node, &out);
    change_locally(&mut node, "first.txt");
    let out = drain(&mut node);
    assert_eq!(announced(&out, fake.conn), ["first.txt"]);
    written(&mut node, fake.conn);

    let remove = ReplicateCommand::RemoveFolder(folder());
    node.handle_input(T0, Input::Command(Command::Replicate(remove)))
        .unwrap();
    let out = drain(&mut node);
    let state = answer_first_store(&mut node, &out);
    add_again_from(&mut node, state);
    let out = drain(&mut node);
    // A folder loaded from its state persists again (its numbering jumped) before it
    // announces anything.
    answer_first_store(&mut node, &out);
    change_locally(&mut node, "second.txt");
    let out = drain(&mut node);
    assert_eq!(announced(&out, fake.conn), ["second.txt"]);
    node.check_invariants().unwrap();
}

/// A peer that stops reading is not served more once its blocks waiting for room reach half
/// of `BULK_QUEUE_BYTES_MAX`: its IWANTs, asked again and again, had the node read and hash
/// each block for a queue that dropped it.
#[test]
fn a_peer_that_stops_reading_has_its_wants_passed_over() {
    let block = Bytes::from(vec![7u8; 4 << 20]);
    let (mut node, fake, hashes) = holding_one_file("big.bin", std::slice::from_ref(&block));
    let hash = hashes[0];
    // The peer never reads (no `Writable`): the same block asked 40 times.
    let mut reads = 0;
    for _ in 0..40 {
        let want = IWant {
            folder: folder(),
            hashes: vec![hash],
        };
        fake.send(&mut node, T0, frame(ReplicaMessage::IWant(want)));
        let asked: Vec<weft_engine::RequestId> = drain(&mut node)
            .iter()
            .filter_map(|o| match o {
                Output::Request {
                    id,
                    request:
                        HostRequest::Storage {
                            request: StorageRequest::ReadBlock { .. },
                            ..
                        },
                } => Some(*id),
                _ => None,
            })
            .collect();
        for id in asked {
            reads += 1;
            let result = HostResult::Storage(StorageResult::Block(block.clone()));
            node.handle_input(T0, Input::Completed { id, result })
                .unwrap();
            drain(&mut node);
        }
    }
    // One handed to the session, four waiting (16 MiB, half the bound): then no more.
    assert!(
        reads <= 6,
        "{reads} blocks read for a peer that reads nothing"
    );
    let behind = node
        .replica(&folder())
        .map_or(0, |r| r.metrics().wants_behind);
    assert!(behind >= 30, "{behind}");
}

/// An index larger than the connection's send-queue bound reaches a new peer whole: it goes
/// out a batch at a time as the peer reads (bulk frames, one waiting at a time), instead of
/// all at once into the queue, which closed the peer's connection as too slow before it
/// could read the first batch, at every reconnection.
#[test]
fn an_index_larger_than_the_send_queue_reaches_a_new_peer_as_it_reads() {
    let queue_max = 256 * 1024;
    let mut node = node_with(|c| c.limits.send_queue_bytes_max = queue_max);
    node.handle_timeout(T0);
    drain(&mut node);
    let config = ReplicaConfig::new(folder(), NodeId::default());
    node.handle_input(
        T0,
        Input::Command(Command::Replicate(ReplicateCommand::AddFolder(config))),
    )
    .unwrap();
    let out = drain(&mut node);
    answer_first_store(&mut node, &out);
    let files = 4000;
    for i in 0u32..files {
        // Paths lz4 cannot shrink much: the index's frames are as long as its entries.
        let name = blake3::hash(&i.to_le_bytes()).to_hex();
        change_locally(&mut node, &format!("{name}/{name}.txt"));
    }
    drain(&mut node);
    let fake = Fake::new(9, ConnId::inbound(1));
    fake.join(&mut node, T0);
    drain(&mut node);
    let list = List {
        folder: folder(),
        index_id: 0,
        since: 0,
    };
    fake.send(&mut node, T0, frame(ReplicaMessage::List(list)));
    let mut out = drain(&mut node);
    for _ in 0..10_000 {
        if closed(&out, fake.conn).is_some() {
            break;
        }
        let more = written(&mut node, fake.conn);
        if more.is_empty() {
            break;
        }
        out.extend(more);
    }
    assert_eq!(closed(&out, fake.conn), None);
    let paths = announced(&out, fake.conn);
    let index_bytes: usize = replica_messages(&out, fake.conn)
        .iter()
        .filter(|(c, _)| *c == Code::IHAVE)
        .map(|(_, p)| p.len())
        .sum();
    assert!(index_bytes > queue_max, "{index_bytes} index bytes");
    assert_eq!(paths.len(), files as usize);
    node.check_invariants().unwrap();
}

/// Families share a connection's bulk lane: a table reply that found it taken by a block
/// goes out once that block has left (every protocol hears `Room`, not only the family whose
/// frame left; the table's reply waited for a notice only its own frames raised).
#[test]
fn a_table_reply_waiting_behind_blocks_goes_out_once_they_have_left() {
    let blocks: Vec<Bytes> = (0..2u8).map(|i| Bytes::from(vec![i; 5000])).collect();
    let (mut node, fake, hashes) = holding_one_file("two.bin", &blocks);
    let wall_ms = 1_800_000_000_000;
    node.handle_input(T0, Input::WallClock { unix_ms: wall_ms })
        .unwrap();
    for i in 0..3u64 {
        let w = fake.sign_write(TableWrite {
            hlc: Hlc {
                ms: wall_ms + i,
                logical: 0,
            },
            node: fake.id(),
            incarnation: 1,
            key: format!("key{i}").into_bytes(),
            value: Some(b"v".to_vec()),
            lease_until_ms: None,
            public_key: Default::default(),
            signature: Default::default(),
        });
        fake.send(
            &mut node,
            T0,
            Message::TableWrite(w).to_frame(false).into_bytes(),
        );
    }
    drain(&mut node);
    // Both blocks asked and read: one handed to the driver, the other in the bulk lane.
    let want = IWant {
        folder: folder(),
        hashes,
    };
    fake.send(&mut node, T0, frame(ReplicaMessage::IWant(want)));
    let reads = block_reads(&drain(&mut node));
    assert_eq!(reads.len(), 2);
    for (id, offset) in reads {
        let block = blocks[(offset / 5000) as usize].clone();
        let result = HostResult::Storage(StorageResult::Block(block));
        node.handle_input(T0, Input::Completed { id, result })
            .unwrap();
        drain(&mut node);
    }
    // The peer asks for the table: its reply finds the bulk lane full.
    let want = TableWant {
        bits: 0,
        buckets: vec![0],
        salt: 5,
        held: vec![],
    };
    fake.send(
        &mut node,
        T0,
        Message::TableWant(want).to_frame(false).into_bytes(),
    );
    let mut out = drain(&mut node);
    for _ in 0..4 {
        out.extend(written(&mut node, fake.conn));
    }
    let codes: Vec<Code> = frames_to(&out, fake.conn)
        .iter()
        .map(|f| f.code())
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == Code::HEREIS).count(),
        1,
        "the block in the lane: {codes:?}"
    );
    assert!(codes.contains(&Code::TABLE_ENTRIES), "{codes:?}");
    node.check_invariants().unwrap();
}
