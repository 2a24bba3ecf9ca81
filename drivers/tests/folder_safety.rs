//! Folder safety on a real disk: two replication engines, each on a folder in a temporary
//! directory, their storage steps carried out by the drivers' `Disk` and their local changes
//! found by the drivers' `Scanner`; the messages between them are passed in memory, so that
//! a local edit can be made exactly between a scan and the step that would replace the file.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use weft_drivers::folder::cache::SharedCache;
use weft_drivers::folder::disk::Disk;
use weft_drivers::folder::scan::Scanner;
use weft_engine::protocol::{FolderId, Message, NodeId};
use weft_engine::replicate::{
    LocalChange, Recipient, Replica, ReplicaConfig, ReplicaEvent, ReplicaOutput, StorageRequest,
    StorageResult,
};
use weft_engine::{Duration, Instant};

/// Wall-clock Unix ms (the disk's mtimes and the scanner's stability clock).
fn unix_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_millis()).expect("a date before year 292 million")
}

/// A hook run on a node's storage request before the disk carries it out.
type Hook = Box<dyn FnMut(&Path, &StorageRequest)>;

struct Side {
    id: NodeId,
    root: PathBuf,
    replica: Replica,
    disk: Disk,
    scanner: Scanner,
    events: Vec<ReplicaEvent>,
    results: Vec<(StorageRequest, StorageResult)>,
    hook: Option<Hook>,
}

struct Pair {
    _tmp: tempfile::TempDir,
    sides: [Side; 2],
    now: Instant,
    wire: VecDeque<(usize, weft_engine::protocol::Code, bytes::Bytes)>,
}

impl Pair {
    fn new() -> Pair {
        let tmp = tempfile::tempdir().expect("a temporary directory for the test");
        let folder = FolderId::from_name("safety");
        let side = |i: u8| {
            let root = tmp.path().join(format!("node{i}"));
            Disk::init(&root, &folder.to_string()).expect("init a fresh folder");
            let cache = SharedCache::default();
            let mut raw = [0u8; 32];
            raw[0] = 0x10 * (i + 1);
            let id = NodeId(raw);
            Side {
                id,
                replica: Replica::new(ReplicaConfig::new(folder, id), [i; 32]),
                disk: Disk::new(root.clone(), cache.clone()),
                scanner: Scanner::new(root.clone(), cache)
                    .with_threads(1)
                    .with_stable_ms(0),
                root,
                events: Vec::new(),
                results: Vec::new(),
                hook: None,
            }
        };
        let mut pair = Pair {
            sides: [side(0), side(1)],
            _tmp: tmp,
            now: Instant(1_000_000_000),
            wire: VecDeque::new(),
        };
        pair.settle();
        let (a, b) = (pair.sides[0].id, pair.sides[1].id);
        let now = pair.now;
        pair.sides[0].replica.handle_link_up(now, b);
        pair.sides[1].replica.handle_link_up(now, a);
        pair.settle();
        pair
    }

    /// Scans node `i`'s folder and hands the engine what changed; whether anything had.
    fn scan(&mut self, i: usize) -> bool {
        let outcome = self.sides[i]
            .scanner
            .scan(unix_ms())
            .expect("the folder scans");
        let now = self.now;
        let changed = outcome
            .changes
            .iter()
            .any(|c| !matches!(c, LocalChange::ScanDone));
        for change in outcome.changes {
            self.sides[i].replica.handle_local(now, change);
        }
        changed
    }

    /// One round: every output of both engines handled and every message delivered, then
    /// 100 ms of engine time. Whether anything happened.
    fn round(&mut self) -> bool {
        let mut active = false;
        let now = self.now;
        for i in 0..2 {
            let other = self.sides[1 - i].id;
            let side = &mut self.sides[i];
            while let Some(output) = side.replica.poll_output() {
                active = true;
                match output {
                    ReplicaOutput::Request { token, request } => {
                        let result = match &request {
                            StorageRequest::LoadState => StorageResult::Loaded(None),
                            StorageRequest::PersistState { .. } => StorageResult::Done,
                            _ => {
                                if let Some(hook) = side.hook.as_mut() {
                                    hook(&side.root, &request);
                                }
                                side.disk.carry_out(&request, unix_ms())
                            }
                        };
                        side.results.push((request, result.clone()));
                        side.replica.handle_completed(now, token, result);
                    }
                    ReplicaOutput::Send {
                        to, code, payload, ..
                    } => {
                        if matches!(to, Recipient::Links)
                            || matches!(to, Recipient::Peer(p) if p == other)
                        {
                            self.wire.push_back((1 - i, code, payload));
                        }
                    }
                    ReplicaOutput::Event(e) => side.events.push(e),
                }
            }
        }
        while let Some((to, code, payload)) = self.wire.pop_front() {
            active = true;
            let Ok(Message::Replica(m)) = Message::decode(code, &payload) else {
                panic!("a replication message that does not decode: {code:?}");
            };
            let from = self.sides[1 - to].id;
            self.sides[to]
                .replica
                .handle_message(now, from, m, &payload)
                .expect("an honest peer's message is no fault");
        }
        self.now = self.now + Duration::from_millis(100);
        for side in &mut self.sides {
            if side.replica.poll_timeout().is_some_and(|t| t <= self.now) {
                side.replica.handle_timeout(self.now);
            }
        }
        active
    }

    /// Runs rounds, scanning both folders between them, until 50 rounds in a row (5 s of
    /// engine time, past any short retry) find nothing to do.
    fn settle(&mut self) {
        let mut quiet = 0;
        for _ in 0..5_000 {
            let active = self.round() | self.scan(0) | self.scan(1);
            quiet = if active { 0 } else { quiet + 1 };
            if quiet == 50 {
                return;
            }
        }
        panic!("the pair did not settle");
    }

    fn read(&self, i: usize, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.sides[i].root.join(path)).ok()
    }

    /// Every regular file outside the reserved folder, by path, with its bytes.
    fn files(&self, i: usize) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.sides[i].root).expect("the folder lists") {
            let entry = entry.expect("a readable entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != ".weft" && entry.file_type().is_ok_and(|t| t.is_file()) {
                out.push((name, std::fs::read(entry.path()).expect("a readable file")));
            }
        }
        out.sort();
        out
    }
}

fn write(root: &Path, path: &str, data: &[u8], mtime_ms: i64) {
    let file = root.join(path);
    std::fs::write(&file, data).expect("write a file in the folder");
    let f = std::fs::File::options()
        .write(true)
        .open(&file)
        .expect("open it again");
    let at = UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(mtime_ms).unwrap_or(0));
    f.set_modified(at).expect("set its mtime");
}

#[test]
fn a_local_edit_made_after_the_scan_becomes_a_conflict_copy_never_overwritten() {
    let mut pair = Pair::new();
    let t = unix_ms() - 60_000;
    write(&pair.sides[0].root, "doc.txt", b"first version", t);
    pair.settle();
    assert_eq!(
        pair.read(1, "doc.txt").as_deref(),
        Some(&b"first version"[..])
    );

    // Node 1's user edits doc.txt after node 1's last scan, just before node 0's edit would
    // replace it there: the commit must find the file changed and leave it.
    let local_edit = b"node 1's unsaved-by-weft edit, later than node 0's".to_vec();
    let mut armed = Some((local_edit.clone(), t + 20_000));
    pair.sides[1].hook = Some(Box::new(move |root, request| {
        if let StorageRequest::Commit { path, .. } = request {
            if path == "doc.txt" {
                if let Some((data, mtime_ms)) = armed.take() {
                    write(root, "doc.txt", &data, mtime_ms);
                }
            }
        }
    }));
    write(&pair.sides[0].root, "doc.txt", b"node 0's edit", t + 10_000);
    pair.scan(0);
    for _ in 0..50 {
        pair.round();
    }
    let refused = pair.sides[1].results.iter().any(|(r, s)| {
        matches!(r, StorageRequest::Commit { path, .. } if path == "doc.txt")
            && *s == StorageResult::Changed
    });
    assert!(refused, "the commit over the unscanned edit was refused");
    assert_eq!(
        pair.read(1, "doc.txt"),
        Some(local_edit.clone()),
        "not overwritten"
    );

    pair.settle();
    // The later edit (node 1's) wins; node 0's is kept as its conflict copy, at both nodes.
    let files = pair.files(1);
    assert_eq!(files, pair.files(0));
    assert_eq!(pair.read(1, "doc.txt"), Some(local_edit));
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files
        .iter()
        .any(|(p, d)| p.starts_with("doc.conflict-") && d == b"node 0's edit"));
    assert!(pair.sides[1]
        .events
        .iter()
        .any(|e| matches!(e, ReplicaEvent::Conflict { path, .. } if path == "doc.txt")));
}

#[test]
fn a_temporary_file_removed_while_weft_keeps_it_open_is_fetched_again() {
    let mut pair = Pair::new();
    // 2 MiB of noise: over a hundred blocks, written in many steps.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    // Node 0's temporary file is removed behind weft's back once a block is written (the
    // disk keeps it open between writes: the rest go to the removed file).
    let removed = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = std::rc::Rc::clone(&removed);
    pair.sides[0].hook = Some(Box::new(move |root, request| {
        if let StorageRequest::WriteTemp { temp, .. } = request {
            let name = weft_drivers::folder::disk::temp_file_name(*temp);
            if !seen.get() && std::fs::remove_file(root.join(".weft/tmp").join(name)).is_ok() {
                seen.set(true);
            }
        }
    }));
    write(&pair.sides[1].root, "big.bin", &data, unix_ms() - 60_000);
    pair.settle();
    assert!(removed.get(), "the temporary file was removed mid-fetch");
    let failed_commit = pair.sides[0]
        .results
        .iter()
        .any(|(r, s)| matches!(r, StorageRequest::Commit { .. }) && *s != StorageResult::Done);
    assert!(failed_commit, "the commit found its temporary file gone");
    assert_eq!(pair.read(0, "big.bin").as_deref(), Some(data.as_slice()));
    let tmp = std::fs::read_dir(pair.sides[0].root.join(".weft/tmp"))
        .expect("the temporary folder lists")
        .count();
    assert_eq!(tmp, 0, "no stray temporary file");
}
