//! The scanner on a real disk: first scans, edits, deletes, renames, a missing marker, special
//! files, files being written, a restart with the persisted cache, several threads.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weft_engine::protocol::{Block, FileEntry, FileKind, Version};
use weft_engine::replicate::blocks::tier_for;
use weft_sim::folder::SYMLINK_MODE;

use super::*;
use crate::folder::cache::{Cache, SharedCache};
use crate::folder::mount_ns::{in_mount_namespace, mount, umount};

/// A folder with its marker, inside a temporary directory.
struct Folder {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Folder {
    fn new() -> Folder {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let root = tmp.path().join("shared");
        fs::create_dir_all(root.join(RESERVED_DIR)).expect("mkdir .weft");
        fs::write(root.join(RESERVED_DIR).join(MARKER_FILE), "00ff\n").expect("marker");
        Folder { _tmp: tmp, root }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn write(&self, rel: &str, data: &[u8]) {
        fs::write(self.p(rel), data).expect("write");
    }

    fn mkdir(&self, rel: &str) {
        fs::create_dir_all(self.p(rel)).expect("mkdir");
    }

    fn scanner(&self) -> Scanner {
        Scanner::new(self.root.clone(), SharedCache::default())
    }
}

fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(d.as_millis()).expect("ms fit")
}

/// A scan at a time well after every write of the test.
fn later(s: &Scanner) -> ScanOutcome {
    s.scan(now_ms() + 60_000).expect("scan")
}

fn data(seed: u64, len: usize) -> Vec<u8> {
    // xorshift: incompressible enough for content-defined cuts.
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn blocks_of(data: &[u8]) -> Vec<Block> {
    weft_engine::replicate::blocks::chunk(data, tier_for(data.len() as u64, None))
        .into_iter()
        .map(|b| Block {
            offset: b.offset,
            len: b.len,
            hash: b.hash,
        })
        .collect()
}

fn changed(changes: &[LocalChange]) -> BTreeMap<String, FileEntry> {
    changes
        .iter()
        .filter_map(|c| match c {
            LocalChange::Changed(e) => Some((e.path.clone(), e.clone())),
            _ => None,
        })
        .collect()
}

fn position(changes: &[LocalChange], path: &str) -> usize {
    changes
        .iter()
        .position(|c| match c {
            LocalChange::Changed(e) => e.path == path,
            LocalChange::Removed { path: p } => p == path,
            LocalChange::Moved { to, .. } => to.path == path,
            LocalChange::ScanDone => false,
        })
        .unwrap_or_else(|| panic!("{path} not in {changes:?}"))
}

fn only_done(o: &ScanOutcome) {
    assert_eq!(o.changes, vec![LocalChange::ScanDone], "{o:?}");
}

/// `a/`, `a/b/`, `a/b/big` (several blocks), `top.txt`, `empty`, `run.sh` (0o755),
/// `link` -> `top.txt`.
fn populate(f: &Folder) -> (Vec<u8>, Vec<u8>) {
    f.mkdir("a/b");
    let big = data(1, 300_000);
    let top = b"hello, folder\n".to_vec();
    f.write("a/b/big", &big);
    f.write("top.txt", &top);
    f.write("empty", b"");
    f.write("run.sh", b"#!/bin/sh\n");
    fs::set_permissions(f.p("run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("top.txt", f.p("link")).expect("symlink");
    (big, top)
}

#[test]
fn first_scan_reports_files_dirs_and_symlinks() {
    let f = Folder::new();
    let (big, top) = populate(&f);
    let s = f.scanner();
    let o = later(&s);
    assert_eq!(o.changes.last(), Some(&LocalChange::ScanDone));
    let c = changed(&o.changes);
    let paths: Vec<&str> = c.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        ["a", "a/b", "a/b/big", "empty", "link", "run.sh", "top.txt"]
    );
    assert_eq!(o.changes.len(), 8);
    assert!(position(&o.changes, "a") < position(&o.changes, "a/b"));
    assert!(position(&o.changes, "a/b") < position(&o.changes, "a/b/big"));

    let dir = &c["a"];
    assert_eq!(dir.kind, FileKind::Directory);
    assert_eq!((dir.size, dir.mode, dir.blocks.len()), (0, 7, 0));
    let e = &c["a/b/big"];
    assert_eq!((e.kind, e.size, e.mode), (FileKind::File, 300_000, 6));
    assert!(e.blocks.len() > 1);
    assert_eq!(e.blocks, blocks_of(&big));
    assert_eq!(c["top.txt"].blocks, blocks_of(&top));
    assert!(c["empty"].blocks.is_empty());
    assert_eq!(c["run.sh"].mode, 7);
    let l = &c["link"];
    assert_eq!((l.kind, l.target.as_str()), (FileKind::Symlink, "top.txt"));
    assert_eq!((l.size, l.mode, l.blocks.len()), (0, SYMLINK_MODE, 0));
    let mtime = fs::symlink_metadata(f.p("top.txt"))
        .expect("stat")
        .modified()
        .expect("mtime");
    let ms = mtime
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    assert_eq!(c["top.txt"].mtime_ms, i64::try_from(ms).expect("fits"));
    for e in c.values() {
        assert_eq!(
            (e.version.clone(), e.modified_by, e.sequence),
            (Version::default(), 0, 0)
        );
    }
    assert_eq!((o.files, o.hashed_files), (4, 4));
    assert_eq!(o.hashed_bytes, 300_000 + top.len() as u64 + 10);
    assert!(o.skipped.is_empty());
    assert_eq!(o.unstable, 0);
    // The cache holds every path, and nothing of `.weft`.
    let cache = s.cache().lock();
    assert_eq!(cache.entries.len(), 7);
    assert_eq!(cache.entries["a/b/big"].blocks, e.blocks);
}

#[test]
fn an_unchanged_folder_hashes_nothing() {
    let f = Folder::new();
    populate(&f);
    let s = f.scanner();
    later(&s);
    let o = later(&s);
    only_done(&o);
    assert_eq!((o.hashed_files, o.hashed_bytes, o.files), (0, 0, 4));
}

/// A shared folder nested inside this one keeps its `.weft` (its temporary files, trash and
/// marker) to itself: the scan shares the nested folder's files and nothing under its
/// `.weft`, nor reports anything there (another network's files still being fetched went to
/// this one's peers).
#[test]
fn a_nested_folders_weft_is_never_shared() {
    let f = Folder::new();
    f.mkdir("inner/.weft/tmp");
    f.write("inner/.weft/folder", b"00aa\n");
    f.write("inner/.weft/tmp/0000000000000001", b"half fetched");
    f.write("inner/doc.txt", b"shared");
    let s = f.scanner();
    let o = later(&s);
    let c = changed(&o.changes);
    let paths: Vec<&str> = c.keys().map(String::as_str).collect();
    assert_eq!(paths, ["inner", "inner/doc.txt"]);
    assert!(o.skipped.is_empty(), "{:?}", o.skipped);
    assert!(s
        .cache()
        .lock()
        .entries
        .keys()
        .all(|p| !p.contains(".weft")));
}

/// A scan told to stop ends with `Stopped`, recording nothing: the next scan, not stopped,
/// still finds everything (a shutdown no longer waits for a whole scan).
#[test]
fn a_stopped_scan_records_nothing() {
    let f = Folder::new();
    populate(&f);
    let mut s = f.scanner();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    s.stop_with(std::sync::Arc::clone(&stop));
    assert!(matches!(s.scan(now_ms() + 60_000), Err(ScanError::Stopped)));
    assert!(s.cache.lock().entries.is_empty(), "nothing recorded");
    stop.store(false, std::sync::atomic::Ordering::Relaxed);
    let o = later(&s);
    assert_eq!(o.files, 4);
}

#[test]
fn an_edit_is_reported_and_only_it_is_hashed() {
    let f = Folder::new();
    populate(&f);
    let s = f.scanner();
    later(&s);
    f.write("top.txt", b"changed content");
    f.write("a/b/new", b"new file");
    let o = later(&s);
    assert_eq!(o.hashed_files, 2);
    let c = changed(&o.changes);
    assert_eq!(c.keys().collect::<Vec<_>>(), ["a/b/new", "top.txt"]);
    assert_eq!(c["top.txt"].blocks, blocks_of(b"changed content"));
    assert_eq!(c["top.txt"].size, 15);
    assert_eq!(o.changes.len(), 3);
    // A mode change alone is reported too (the file is re-read: its ctime changed).
    fs::set_permissions(f.p("top.txt"), fs::Permissions::from_mode(0o444)).expect("chmod");
    let o = later(&s);
    let c = changed(&o.changes);
    assert_eq!(c.keys().collect::<Vec<_>>(), ["top.txt"]);
    assert_eq!(c["top.txt"].mode, 4);
    // So is a directory's.
    fs::set_permissions(f.p("a"), fs::Permissions::from_mode(0o500)).expect("chmod");
    let o = later(&s);
    let c = changed(&o.changes);
    assert_eq!(c.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!((c["a"].mode, c["a"].kind), (5, FileKind::Directory));
    fs::set_permissions(f.p("a"), fs::Permissions::from_mode(0o755)).expect("chmod");
    // A retargeted symlink.
    fs::remove_file(f.p("link")).expect("rm");
    std::os::unix::fs::symlink("a/b/new", f.p("link")).expect("symlink");
    let o = later(&s);
    let c = changed(&o.changes);
    assert_eq!(c["link"].target, "a/b/new");
    assert_eq!(o.changes.len(), 3, "a's mode and the link: {:?}", o.changes);
}

#[test]
fn deletes_are_removed_children_first() {
    let f = Folder::new();
    populate(&f);
    f.write("a/b/other", b"x");
    let s = f.scanner();
    later(&s);
    fs::remove_file(f.p("top.txt")).expect("rm");
    let o = later(&s);
    assert_eq!(
        o.changes,
        vec![
            LocalChange::Removed {
                path: "top.txt".into()
            },
            LocalChange::ScanDone
        ]
    );
    fs::remove_dir_all(f.p("a")).expect("rm -r");
    let o = later(&s);
    let removed: Vec<&str> = o
        .changes
        .iter()
        .filter_map(|c| match c {
            LocalChange::Removed { path } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(removed, ["a/b/other", "a/b/big", "a/b", "a"]);
    assert_eq!(o.changes.len(), 5);
    assert!(!s.cache().lock().entries.contains_key("a/b/big"));
    only_done(&later(&s));
}

#[test]
fn a_directory_replaced_by_a_file_removes_its_children_first() {
    let f = Folder::new();
    f.mkdir("d/e");
    f.write("d/e/f", b"one");
    let s = f.scanner();
    later(&s);
    fs::remove_dir_all(f.p("d")).expect("rm -r");
    f.write("d", b"now a file");
    let o = later(&s);
    let kinds: Vec<(&str, &str)> = o
        .changes
        .iter()
        .map(|c| match c {
            LocalChange::Changed(e) => ("changed", e.path.as_str()),
            LocalChange::Removed { path } => ("removed", path.as_str()),
            LocalChange::Moved { to, .. } => ("moved", to.path.as_str()),
            LocalChange::ScanDone => ("done", ""),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("removed", "d/e/f"),
            ("removed", "d/e"),
            ("changed", "d"),
            ("done", "")
        ]
    );
}

#[test]
fn a_rename_is_a_move_and_is_not_rehashed() {
    let f = Folder::new();
    let (big, _) = populate(&f);
    let s = f.scanner();
    later(&s);
    fs::rename(f.p("a/b/big"), f.p("moved")).expect("mv");
    let o = later(&s);
    assert_eq!(o.hashed_files, 0);
    assert_eq!(o.changes.len(), 2, "{:?}", o.changes);
    let LocalChange::Moved { from, to } = &o.changes[0] else {
        panic!("not a move: {:?}", o.changes)
    };
    assert_eq!((from.as_str(), to.path.as_str()), ("a/b/big", "moved"));
    assert_eq!(to.blocks, blocks_of(&big));
    assert_eq!((to.size, to.kind, to.mode), (300_000, FileKind::File, 6));
    let cache = s.cache().lock();
    assert!(!cache.entries.contains_key("a/b/big"));
    assert_eq!(cache.entries["moved"].blocks, to.blocks);
    drop(cache);
    only_done(&later(&s));
    // Renamed over an existing file: a move too.
    fs::rename(f.p("moved"), f.p("top.txt")).expect("mv");
    let o = later(&s);
    assert_eq!(o.hashed_files, 0);
    assert!(
        matches!(&o.changes[..], [LocalChange::Moved { from, to }, LocalChange::ScanDone]
            if from == "moved" && to.path == "top.txt"),
        "{:?}",
        o.changes
    );
}

#[test]
fn a_missing_marker_or_root_fails_and_removes_nothing() {
    let f = Folder::new();
    populate(&f);
    let s = f.scanner();
    later(&s);
    let before = s.cache().lock().clone();
    let marker = f.p(".weft/folder");
    fs::remove_file(&marker).expect("rm marker");
    fs::remove_file(f.p("top.txt")).expect("rm");
    assert!(matches!(later_err(&s), ScanError::MarkerMissing(p) if p == marker));
    assert_eq!(*s.cache().lock(), before, "nothing recorded");
    // The whole folder gone (an unmounted disk).
    fs::write(&marker, "00ff\n").expect("marker");
    let moved = f.root.with_file_name("elsewhere");
    fs::rename(&f.root, &moved).expect("mv root");
    assert!(matches!(later_err(&s), ScanError::RootMissing(p) if p == f.root));
    // A file where the root was.
    fs::write(&f.root, "not a dir").expect("write");
    assert!(matches!(later_err(&s), ScanError::RootMissing(_)));
    fs::remove_file(&f.root).expect("rm");
    fs::rename(&moved, &f.root).expect("mv back");
    assert_eq!(*s.cache().lock(), before);
    // Back, with its marker: the delete is reported now.
    let o = later(&s);
    assert_eq!(
        o.changes,
        vec![
            LocalChange::Removed {
                path: "top.txt".into()
            },
            LocalChange::ScanDone
        ]
    );
}

/// The marker vanishing after the post-walk check (while changes are recorded): no
/// removal is recorded or reported.
#[test]
fn a_removal_is_not_recorded_once_the_marker_is_gone() {
    let f = Folder::new();
    populate(&f);
    let s = f.scanner();
    later(&s);
    fs::remove_file(f.p("top.txt")).expect("rm");
    fs::remove_file(f.p(".weft/folder")).expect("rm marker");
    let mut out = ScanOutcome::default();
    assert!(s
        .remove(&mut Under::new(&f.root), "top.txt", &mut out)
        .is_err());
    assert!(out.changes.is_empty());
    assert!(s.cache().lock().entries.contains_key("top.txt"));
}

fn later_err(s: &Scanner) -> ScanError {
    match s.scan(now_ms() + 60_000) {
        Ok(o) => panic!("scanned: {o:?}"),
        Err(e) => e,
    }
}

#[test]
fn special_files_and_bad_names_are_skipped_and_listed() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let f = Folder::new();
    f.write("plain", b"x");
    f.write("was-a-file", b"y");
    let s = f.scanner();
    later(&s);
    let fifo = |rel: &str| {
        let ok = std::process::Command::new("mkfifo")
            .arg(f.p(rel))
            .status()
            .expect("mkfifo runs");
        assert!(ok.success());
    };
    fifo("pipe");
    fs::remove_file(f.p("was-a-file")).expect("rm");
    fifo("was-a-file");
    let _sock = std::os::unix::net::UnixListener::bind(f.p("sock")).expect("bind");
    fs::write(f.root.join(OsStr::from_bytes(b"bad\xffname")), b"z").expect("write");
    fs::write(f.p("back\\slash"), b"z").expect("write");
    let o = later(&s);
    let mut skipped = o.skipped.clone();
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        skipped,
        vec![
            (
                "back\\slash".to_string(),
                SkipReason::BadName(PathRefusal::BadCharacter)
            ),
            ("bad\u{fffd}name".to_string(), SkipReason::NotUtf8),
            ("pipe".to_string(), SkipReason::Fifo),
            ("sock".to_string(), SkipReason::Socket),
            ("was-a-file".to_string(), SkipReason::Fifo),
        ]
    );
    // The file a FIFO replaced is gone; nothing else is reported.
    assert_eq!(
        o.changes,
        vec![
            LocalChange::Removed {
                path: "was-a-file".into()
            },
            LocalChange::ScanDone
        ]
    );
}

#[test]
fn a_file_being_written_waits_for_a_later_scan() {
    let f = Folder::new();
    let s = f.scanner();
    f.write("fresh", b"still writing");
    let o = s.scan(now_ms()).expect("scan");
    only_done(&o);
    assert_eq!((o.unstable, o.hashed_files, o.files), (1, 0, 1));
    assert!(s.cache().lock().entries.is_empty());
    // It settles STABLE_MS after its mtime.
    let mtime = fs::metadata(f.p("fresh"))
        .and_then(|m| m.modified())
        .expect("mtime")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    assert_eq!(o.settles_at_ms, Some(mtime + STABLE_MS));
    let o = s.scan(now_ms() + STABLE_MS + 10).expect("scan");
    assert_eq!((o.unstable, o.settles_at_ms), (0, None));
    assert_eq!(changed(&o.changes).keys().collect::<Vec<_>>(), ["fresh"]);
    // A file whose mtime was set in the past is stable at once.
    f.write("old", b"copied with its mtime");
    fs::File::options()
        .write(true)
        .open(f.p("old"))
        .expect("open")
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .expect("set mtime");
    let o = s.scan(now_ms()).expect("scan");
    assert_eq!(changed(&o.changes).keys().collect::<Vec<_>>(), ["old"]);
}

#[test]
fn a_restart_with_the_persisted_cache_hashes_nothing() {
    let f = Folder::new();
    populate(&f);
    let s = f.scanner();
    assert_eq!(later(&s).hashed_files, 4);
    let blob = s.cache().lock().encode();
    let cache = Cache::decode(&blob).expect("decodes");
    let s2 = Scanner::new(f.root.clone(), SharedCache::new(cache));
    let o = later(&s2);
    only_done(&o);
    assert_eq!((o.hashed_files, o.files), (0, 4));
}

#[test]
fn what_the_disk_worker_records_is_not_reported() {
    let f = Folder::new();
    populate(&f);
    let s = f.scanner();
    later(&s);
    // The worker writes a file and a directory and records them under the lock.
    let content = data(7, 50_000);
    {
        let mut cache = s.cache().lock();
        f.write("from-peer", &content);
        f.mkdir("peer-dir");
        let tier = tier_for(content.len() as u64, None);
        for (path, blocks) in [("from-peer", blocks_of(&content)), ("peer-dir", vec![])] {
            let e = observe(&f.p(path), tier, blocks)
                .expect("lstat")
                .expect("present");
            cache.entries.insert(path.to_string(), e);
        }
    }
    let o = later(&s);
    only_done(&o);
    assert_eq!(o.hashed_files, 0);
}

#[test]
fn several_threads_find_what_one_finds() {
    let build = |f: &Folder| {
        populate(f);
        for d in 0..4 {
            f.mkdir(&format!("d{d}"));
            for i in 0..12u64 {
                let len = (i as usize * 37_000 + d * 5_000) % 200_000;
                f.write(&format!("d{d}/f{i}"), &data(i * 10 + d as u64, len));
            }
        }
    };
    let (one, many) = (Folder::new(), Folder::new());
    build(&one);
    build(&many);
    let o1 = later(&one.scanner().with_threads(1));
    let o4 = later(&many.scanner().with_threads(4));
    assert_eq!((o1.hashed_files, o4.hashed_files), (52, 52));
    assert_eq!(o1.hashed_bytes, o4.hashed_bytes);
    // The same entries but for mtimes (each tree was written at its own time).
    let strip = |o: &ScanOutcome| {
        o.changes
            .iter()
            .map(|c| match c {
                LocalChange::Changed(e) => {
                    let mut e = e.clone();
                    e.mtime_ms = 0;
                    LocalChange::Changed(e)
                }
                c => c.clone(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&o1), strip(&o4));
}

fn removed(changes: &[LocalChange]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| match c {
            LocalChange::Removed { path } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn ignored_paths_are_not_walked_and_what_the_cache_holds_there_stays() {
    let f = Folder::new();
    f.write("keep.txt", b"keep");
    f.write("debug.log", b"log");
    f.mkdir("build/deep");
    f.write("build/deep/out.bin", &data(1, 5000));
    f.write(".weftignore", b"*.log\nbuild/\n");
    let mut s = f.scanner();
    let (rules, errors) = IgnoreRules::parse("*.log\nbuild/\n");
    assert!(errors.is_empty());
    s.set_ignore_rules(rules);
    let first = later(&s);
    let paths: Vec<String> = changed(&first.changes).into_keys().collect();
    assert_eq!(paths, [".weftignore", "keep.txt"], "{first:?}");
    assert_eq!(first.hashed_files, 2, "ignored files are not read");

    // Without rules the ignored paths are reported, and cached.
    s.set_ignore_rules(IgnoreRules::default());
    let all = later(&s);
    let paths: Vec<String> = changed(&all.changes).into_keys().collect();
    assert_eq!(
        paths,
        ["build", "build/deep", "build/deep/out.bin", "debug.log"],
        "{all:?}"
    );

    // Ignored again: what the cache holds there is neither reported nor removed, changed
    // or not.
    let (rules, _) = IgnoreRules::parse("*.log\nbuild/\n");
    s.set_ignore_rules(rules);
    f.write("debug.log", b"a longer log line");
    f.write("build/deep/out.bin", &data(2, 6000));
    only_done(&later(&s));
    let cache = s.cache().lock();
    assert!(cache.entries.contains_key("build/deep/out.bin"));
    assert!(cache.entries.contains_key("debug.log"));
    drop(cache);

    // A cached ignored file deleted for real is reported removed (SPEC.md §22.3: the record
    // stays until the scanner reports it removed).
    fs::remove_file(f.p("debug.log")).expect("remove");
    let gone = later(&s);
    assert_eq!(removed(&gone.changes), ["debug.log"], "{gone:?}");
}

#[test]
fn an_unmounted_disk_inside_the_folder_is_not_taken_for_deletes() {
    if !in_mount_namespace(
        module_path!(),
        "an_unmounted_disk_inside_the_folder_is_not_taken_for_deletes",
    ) {
        return;
    }
    let f = Folder::new();
    let backing = f._tmp.path().join("backing");
    fs::create_dir(&backing).expect("mkdir backing");
    mount(&["-t", "tmpfs", "none"], &backing);
    fs::create_dir(backing.join("album")).expect("mkdir album");
    fs::write(backing.join("photo.jpg"), data(1, 20_000)).expect("write");
    fs::write(backing.join("album/b.jpg"), data(2, 30_000)).expect("write");
    f.write("top.txt", b"top");
    f.mkdir("disk");
    mount(&["--bind", &backing.to_string_lossy()], &f.p("disk"));
    let s = f.scanner();
    let o = later(&s);
    let under_disk = ["disk", "disk/album", "disk/album/b.jpg", "disk/photo.jpg"];
    assert_eq!(
        changed(&o.changes).keys().collect::<Vec<_>>(),
        [
            "disk",
            "disk/album",
            "disk/album/b.jpg",
            "disk/photo.jpg",
            "top.txt"
        ]
    );
    // The node restarts (the mount point persisted with the cache) with the disk unmounted:
    // nothing under it is removed, and it is listed as skipped.
    let cache = Cache::decode(&s.cache().lock().encode()).expect("decodes");
    let s = Scanner::new(f.root.clone(), SharedCache::new(cache));
    umount(&f.p("disk"));
    let o = later(&s);
    only_done(&o);
    assert_eq!(o.skipped, vec![("disk".to_string(), SkipReason::Unmounted)]);
    // Mounted again: nothing changed, nothing read.
    mount(&["--bind", &backing.to_string_lossy()], &f.p("disk"));
    let o = later(&s);
    only_done(&o);
    assert_eq!((o.hashed_files, o.skipped.len()), (0, 0));
    // Unmounted and its directory removed: that is a delete.
    umount(&f.p("disk"));
    fs::remove_dir(f.p("disk")).expect("rmdir");
    let mut gone = removed(&later(&s).changes);
    gone.sort();
    assert_eq!(gone, under_disk);
}

/// A file larger than any that can be shared (`FILE_BLOCKS_MAX` blocks of its tier's longest)
/// is skipped without being read, and a record it had when smaller is not removed.
#[test]
fn a_file_too_large_ever_to_share_is_skipped_unread_and_not_removed() {
    let f = Folder::new();
    f.write("big", b"small for now");
    let s = f.scanner();
    let o = later(&s);
    assert!(changed(&o.changes).contains_key("big"));
    // Sparse: 5 TiB of holes, which reading would take hours.
    fs::OpenOptions::new()
        .write(true)
        .open(f.p("big"))
        .expect("open")
        .set_len(5 << 40)
        .expect("a sparse 5 TiB file");
    let o = later(&s);
    assert_eq!(o.skipped, vec![("big".to_string(), SkipReason::TooLarge)]);
    assert!(changed(&o.changes).is_empty(), "{:?}", o.changes);
    assert!(removed(&o.changes).is_empty(), "{:?}", o.changes);
    assert_eq!(o.hashed_files, 0);
    // A directory replaced by such a file: what was under it is removed as usual.
    f.mkdir("dir");
    f.write("dir/inside", b"x");
    assert!(changed(&later(&s).changes).contains_key("dir/inside"));
    fs::remove_dir_all(f.p("dir")).expect("rmdir");
    fs::File::create(f.p("dir"))
        .and_then(|file| file.set_len(5 << 40))
        .expect("a sparse 5 TiB file where the directory was");
    let o = later(&s);
    assert_eq!(removed(&o.changes), ["dir/inside"]);
}

/// The rename to NFC walks to the directory from the root without following a symlink: one
/// swapped in for a parent after the listing (here: before the rename) is not followed out of
/// the folder, and what it points at is not renamed.
#[test]
fn the_rename_to_nfc_never_follows_a_symlinked_parent() {
    let f = Folder::new();
    let outside = f._tmp.path().join("outside");
    fs::create_dir_all(&outside).expect("mkdir outside");
    fs::write(outside.join("e\u{301}"), b"not ours").expect("write outside");
    std::os::unix::fs::symlink(&outside, f.p("d")).expect("symlink d");
    let s = f.scanner();
    let refused = s.rename_to_nfc("d", "e\u{301}");
    assert!(
        matches!(&refused, Err(SkipReason::Unreadable(why)) if why.contains("symlink")),
        "{refused:?}"
    );
    assert_eq!(
        fs::read(outside.join("e\u{301}")).expect("still there"),
        b"not ours"
    );
    assert!(!outside.join("\u{e9}").exists());
    // A real directory: renamed.
    f.mkdir("r");
    f.write("r/e\u{301}", b"ours");
    assert_eq!(s.rename_to_nfc("r", "e\u{301}"), Ok("r/\u{e9}".to_string()));
    assert_eq!(fs::read(f.p("r/\u{e9}")).expect("renamed"), b"ours");
}

#[test]
fn names_not_in_nfc_are_renamed_to_it_unless_taken() {
    let f = Folder::new();
    // A directory and a file in NFD (as macOS writes them), a file in it.
    f.mkdir("re\u{301}sume\u{301}");
    f.write("re\u{301}sume\u{301}/cafe\u{301}.txt", b"coffee");
    // Both forms of one name: the NFD one cannot be renamed.
    f.write("\u{e9}t\u{e9}", b"nfc");
    f.write("e\u{301}te\u{301}", b"nfd");
    let s = f.scanner();
    let o = later(&s);
    assert_eq!(
        changed(&o.changes).keys().collect::<Vec<_>>(),
        [
            "r\u{e9}sum\u{e9}",
            "r\u{e9}sum\u{e9}/caf\u{e9}.txt",
            "\u{e9}t\u{e9}"
        ]
    );
    assert_eq!(
        o.skipped,
        vec![("e\u{301}te\u{301}".to_string(), SkipReason::NfcNameTaken)]
    );
    assert_eq!(
        fs::read(f.p("r\u{e9}sum\u{e9}/caf\u{e9}.txt")).expect("renamed"),
        b"coffee"
    );
    assert!(!f.p("re\u{301}sume\u{301}").exists());
    assert_eq!(fs::read(f.p("e\u{301}te\u{301}")).expect("kept"), b"nfd");
    // Renamed once: the next scan finds nothing to do.
    let o = later(&s);
    only_done(&o);
    assert_eq!(o.hashed_files, 0);
}

#[test]
fn a_cached_name_renamed_to_nfc_is_no_change() {
    // A cache from before names were renamed holds the NFD path (the engine indexed it
    // under its NFC form): the rename moves the entry, and nothing is reported.
    let f = Folder::new();
    f.write("cafe\u{301}", b"coffee");
    let s = f.scanner();
    let entry = observe(&f.p("cafe\u{301}"), tier_for(6, None), blocks_of(b"coffee"))
        .expect("lstat")
        .expect("present");
    s.cache()
        .lock()
        .entries
        .insert("cafe\u{301}".to_string(), entry);
    let o = later(&s);
    only_done(&o);
    assert_eq!(
        s.cache().lock().entries.keys().collect::<Vec<_>>(),
        ["caf\u{e9}"]
    );
}

#[test]
fn an_ignored_name_not_in_nfc_is_neither_renamed_nor_reported() {
    let f = Folder::new();
    f.write("cafe\u{301}.log", b"secret");
    f.mkdir("bui\u{308}ld");
    f.write("bui\u{308}ld/out", b"x");
    f.write("keep.txt", b"keep");
    let mut s = f.scanner();
    let (rules, errors) = IgnoreRules::parse("*.log\nbu\u{ef}ld/\n");
    assert!(errors.is_empty(), "{errors:?}");
    s.set_ignore_rules(rules);
    let o = later(&s);
    assert_eq!(changed(&o.changes).keys().collect::<Vec<_>>(), ["keep.txt"]);
    assert!(o.skipped.is_empty(), "{:?}", o.skipped);
    assert!(f.p("cafe\u{301}.log").exists() && f.p("bui\u{308}ld/out").exists());
    assert!(!f.p("caf\u{e9}.log").exists() && !f.p("bu\u{ef}ld").exists());
}

/// Where the NFC name already reaches the file under a name not in NFC (a file system that
/// does not tell the forms apart, or here a hard link), it is walked once, under its NFC
/// name, and not skipped as taken.
#[test]
fn a_name_whose_nfc_form_is_the_same_file_is_walked_under_it() {
    let f = Folder::new();
    f.write("caf\u{e9}", b"one file");
    fs::hard_link(f.p("caf\u{e9}"), f.p("cafe\u{301}")).expect("hard link");
    let s = f.scanner();
    let o = later(&s);
    assert_eq!(
        changed(&o.changes).keys().collect::<Vec<_>>(),
        ["caf\u{e9}"]
    );
    assert!(o.skipped.is_empty(), "{:?}", o.skipped);
    assert_eq!(o.hashed_files, 1);
    let o = later(&s);
    only_done(&o);
}

/// What the swap tests put in place of `d`: a symlink to `outside` beside the folder, with
/// `d` itself moved to `moved` inside it.
fn swap_d_for_a_symlink(root: &Path) {
    fs::rename(root.join("d"), root.join("moved")).expect("move d");
    let outside = root
        .parent()
        .expect("the folder has a parent")
        .join("outside");
    std::os::unix::fs::symlink(outside, root.join("d")).expect("symlink d");
}

/// A folder whose `d` holds `d/a` and `d/b`, and an `outside` directory beside it holding
/// `a`, `b` and `secret` (what no walk of the folder may read).
fn folder_and_outside() -> Folder {
    let f = Folder::new();
    f.mkdir("d");
    f.write("d/a", b"inside a");
    f.write("d/b", b"inside b");
    let outside = f._tmp.path().join("outside");
    fs::create_dir_all(&outside).expect("mkdir outside");
    for name in ["a", "b", "secret"] {
        fs::write(outside.join(name), format!("outside {name}")).expect("write outside");
    }
    f
}

/// The scan after a swap: `d` is a symlink now, and what it held is at `moved/`; nothing read
/// from outside. What it reported.
fn the_next_scan_finds_d_a_symlink_and_its_files_moved(s: &Scanner) -> BTreeMap<String, FileEntry> {
    let again = later(s);
    nothing_from_outside(&again);
    let now = changed(&again.changes);
    assert_eq!(now["d"].kind, FileKind::Symlink);
    assert_eq!(now["moved/a"].blocks, blocks_of(b"inside a"));
    assert_eq!(now["moved/b"].blocks, blocks_of(b"inside b"));
    now
}

/// No change the scan reports holds a block of a file outside the folder.
fn nothing_from_outside(o: &ScanOutcome) {
    let outside: Vec<Vec<Block>> = ["a", "b", "secret"]
        .iter()
        .map(|n| blocks_of(format!("outside {n}").as_bytes()))
        .collect();
    for change in &o.changes {
        if let LocalChange::Changed(e) = change {
            assert!(!e.path.ends_with("secret"), "{change:?}");
            assert!(
                !outside.contains(&e.blocks),
                "read from outside: {change:?}"
            );
        }
    }
}

/// A directory swapped for a symlink after the walk's `lstat` of it, before it is listed, is
/// not listed: nothing outside the folder is walked, read or reported; the directory itself
/// is left for the next scan, which finds the symlink and where the directory went.
#[test]
fn a_directory_swapped_for_a_symlink_before_its_listing_is_not_followed() {
    let f = folder_and_outside();
    let mut s = f.scanner();
    s.after_lstat = Some(|root, path| {
        if path == "d" {
            swap_d_for_a_symlink(root);
        }
    });
    let o = later(&s);
    nothing_from_outside(&o);
    only_done(&o);
    assert_eq!((o.unstable, o.hashed_files), (1, 0), "{o:?}");
    s.after_lstat = None;
    let now = the_next_scan_finds_d_a_symlink_and_its_files_moved(&s);
    assert_eq!(now.len(), 4, "{now:?}");
}

/// A parent swapped for a symlink while its children are visited: the children left are
/// `lstat`ed through the directory opened before (now `moved`, inside the folder), and what
/// the path reaches through the symlink is never read.
#[test]
fn a_parent_swapped_for_a_symlink_among_its_children_is_not_followed() {
    let f = folder_and_outside();
    let mut s = f.scanner();
    s.after_lstat = Some(|root, path| {
        if path == "d/a" {
            swap_d_for_a_symlink(root);
        }
    });
    let o = later(&s);
    nothing_from_outside(&o);
    // `d/a` and `d/b` were inside files, but their paths now lead outside: left for the next
    // scan, which finds `d` a symlink and `moved` holding them.
    assert!(!changed(&o.changes).contains_key("d/a"), "{o:?}");
    assert!(!changed(&o.changes).contains_key("d/b"), "{o:?}");
    s.after_lstat = None;
    the_next_scan_finds_d_a_symlink_and_its_files_moved(&s);
}

/// A directory the cache holds, replaced by a symlink to a directory holding files of the
/// same names: its old paths are gone (a path is looked at from the root without following
/// a symlink), so what it held is reported moved where it went, or removed; the files the
/// symlink leads to do not keep the old paths alive.
#[test]
fn a_cached_directory_replaced_by_a_symlink_is_gone_whatever_the_symlink_leads_to() {
    let gone_paths = |o: &ScanOutcome| -> Vec<String> {
        let mut gone: Vec<String> = o
            .changes
            .iter()
            .filter_map(|c| match c {
                LocalChange::Moved { from, .. } => Some(from.clone()),
                LocalChange::Removed { path } => Some(path.clone()),
                _ => None,
            })
            .collect();
        gone.sort();
        gone
    };
    // Moved inside the folder: reported moved.
    let f = folder_and_outside();
    let s = f.scanner();
    assert!(changed(&later(&s).changes).contains_key("d/a"));
    swap_d_for_a_symlink(&f.root);
    let o = later(&s);
    nothing_from_outside(&o);
    assert_eq!(o.unstable, 0, "{o:?}");
    assert_eq!(gone_paths(&o), ["d/a", "d/b"], "{o:?}");
    only_done(&later(&s));

    // Deleted: reported removed.
    let f = folder_and_outside();
    let s = f.scanner();
    assert!(changed(&later(&s).changes).contains_key("d/a"));
    fs::remove_dir_all(f.p("d")).expect("rm d");
    let outside = f._tmp.path().join("outside");
    std::os::unix::fs::symlink(outside, f.p("d")).expect("symlink d");
    let o = later(&s);
    nothing_from_outside(&o);
    assert_eq!(removed(&o.changes), ["d/b", "d/a"], "{o:?}");
    only_done(&later(&s));
}

/// A hard link's other name removed is a removal, not a rename onto the name left (which
/// holds that inode in the cache already and did not change).
#[test]
fn removing_one_name_of_a_hard_link_is_no_rename() {
    let f = Folder::new();
    f.write("a", b"linked content");
    fs::hard_link(f.p("a"), f.p("b")).expect("ln");
    let s = f.scanner();
    later(&s);
    fs::remove_file(f.p("a")).expect("rm a");
    let o = later(&s);
    assert_eq!(
        o.changes,
        vec![
            LocalChange::Removed { path: "a".into() },
            LocalChange::ScanDone
        ]
    );
}

/// A file whose mtime is a whole second (as `tar` and `cp -p` from a coarse disk leave it)
/// taking the inode a removed file of the same size and mtime had is read: a new file with
/// its own blocks, and the old path removed; a true rename of such a file is still a move.
#[test]
fn a_freed_inode_taken_again_at_a_whole_second_mtime_is_no_rename() {
    let f = Folder::new();
    let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let put = |rel: &str, data: &[u8]| {
        f.write(rel, data);
        let file = fs::File::options()
            .write(true)
            .open(f.p(rel))
            .expect("open");
        file.set_modified(whole).expect("set mtime");
    };
    put("old", b"content X");
    let s = f.scanner();
    later(&s);
    fs::remove_file(f.p("old")).expect("rm old");
    put("new", b"content Y");
    // The freed inode taken again, made certain: the cache's `old` named new's inode.
    let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(f.p("new")).expect("stat"));
    s.cache()
        .lock()
        .entries
        .get_mut("old")
        .expect("cached")
        .inode = inode;
    let o = later(&s);
    assert!(
        !o.changes
            .iter()
            .any(|c| matches!(c, LocalChange::Moved { .. })),
        "{o:?}"
    );
    assert_eq!(changed(&o.changes)["new"].blocks, blocks_of(b"content Y"));
    assert_eq!(removed(&o.changes), ["old"]);
    only_done(&later(&s));

    // A true rename of such a file: read, and a move.
    fs::rename(f.p("new"), f.p("renamed")).expect("mv");
    let o = later(&s);
    assert_eq!(o.hashed_files, 1);
    assert!(
        matches!(&o.changes[..], [LocalChange::Moved { from, to }, LocalChange::ScanDone]
            if from == "new" && to.path == "renamed" && to.blocks == blocks_of(b"content Y")),
        "{o:?}"
    );
}

/// A file whose mtime is a whole second, as a coarse disk (FAT: 2 s) stamps it, is hashed
/// only once it is `COARSE_MTIME_MS` old: a write within the disk's granularity after the
/// scan would leave size and mtime as they were, and never be seen.
#[test]
fn a_whole_second_mtime_waits_out_the_coarsest_granularity() {
    let f = Folder::new();
    let mtime_ms: i64 = 1_700_000_000_000;
    f.write("coarse", b"written on FAT");
    let file = fs::File::options()
        .write(true)
        .open(f.p("coarse"))
        .expect("open");
    file.set_modified(UNIX_EPOCH + Duration::from_millis(mtime_ms as u64))
        .expect("set mtime");
    let s = f.scanner();
    let o = s.scan(mtime_ms + STABLE_MS + 500).expect("scan");
    assert_eq!((o.unstable, o.hashed_files), (1, 0), "{o:?}");
    assert_eq!(o.settles_at_ms, Some(mtime_ms + COARSE_MTIME_MS));
    let o = s.scan(mtime_ms + COARSE_MTIME_MS).expect("scan");
    assert_eq!((o.unstable, o.hashed_files), (0, 1), "{o:?}");
}

/// A bind mount of a directory of the folder's own disk (the same device number as its
/// parent) is a mount point too: unmounted, nothing under it is taken for deleted.
#[test]
fn an_unmounted_bind_mount_of_the_same_disk_is_not_taken_for_deletes() {
    if !in_mount_namespace(
        module_path!(),
        "an_unmounted_bind_mount_of_the_same_disk_is_not_taken_for_deletes",
    ) {
        return;
    }
    let f = Folder::new();
    let backing = f._tmp.path().join("backing");
    fs::create_dir(&backing).expect("mkdir backing");
    fs::write(backing.join("photo.jpg"), data(1, 20_000)).expect("write");
    f.mkdir("disk");
    mount(&["--bind", &backing.to_string_lossy()], &f.p("disk"));
    let s = f.scanner();
    let o = later(&s);
    assert!(changed(&o.changes).contains_key("disk/photo.jpg"), "{o:?}");
    umount(&f.p("disk"));
    let o = later(&s);
    only_done(&o);
    assert_eq!(o.skipped, vec![("disk".to_string(), SkipReason::Unmounted)]);
}

/// The record step's lookups keep the last parent opened; a path they find gone through it
/// is looked up again from the root, so a parent renamed and made again since (as the disk
/// worker applies a peer's rename) does not make a file written there look removed.
#[test]
fn a_path_gone_through_a_kept_parent_is_looked_up_again() {
    let f = Folder::new();
    f.mkdir("a");
    f.write("a/keep", b"k");
    let mut under = Under::new(&f.root);
    assert!(!gone(&under.lstat("a/keep")));
    fs::rename(f.p("a"), f.p("b")).expect("mv a b");
    f.mkdir("a");
    f.write("a/old", b"written again");
    assert!(!gone(&under.lstat("a/old")), "found through the new a");
    assert!(gone(&under.lstat("a/keep")), "the new a has no keep");
}

/// A file being hashed is given up between reads once the scanner is told to stop: a stop
/// waited for the whole of a file of many gigabytes (and the signals that would end the wait
/// went unheard meanwhile).
#[test]
fn hashing_a_file_stops_between_reads_once_told() {
    use std::sync::atomic::AtomicBool;
    let f = Folder::new();
    f.write("big", &data(7, 4 << 20));
    let Ok(stat::Found::Entry(st)) = stat::lstat(&f.p("big")) else {
        panic!("a file");
    };
    let tier = tier_for(st.size, None);
    let going = AtomicBool::new(false);
    let (hashed, read) = hash::hash_file(&f.p("big"), &st, tier, &going);
    assert!(matches!(hashed, hash::Hashed::Blocks(_)));
    assert_eq!(read, 4 << 20);
    let stopped = AtomicBool::new(true);
    let (hashed, read) = hash::hash_file(&f.p("big"), &st, tier, &stopped);
    assert!(matches!(hashed, hash::Hashed::Changed));
    assert_eq!(read, 0, "nothing read once told to stop");
}

/// A marker that names another folder (a config pointing at another network's folder): the
/// scan fails as for a missing one, and nothing is recorded or reported.
#[test]
fn a_marker_naming_another_folder_fails_the_scan() {
    let f = Folder::new();
    populate(&f);
    let s = f.scanner().for_folder("00ff".into());
    later(&s);
    let before = s.cache().lock().clone();
    let marker = f.p(".weft/folder");
    fs::write(&marker, "ff00\n").expect("another folder's marker");
    fs::remove_file(f.p("top.txt")).expect("rm");
    assert!(matches!(later_err(&s), ScanError::MarkerForeign(p) if p == marker));
    assert_eq!(*s.cache().lock(), before, "nothing recorded");
    fs::write(&marker, [0xff, 0]).expect("an unreadable marker");
    assert!(matches!(later_err(&s), ScanError::MarkerForeign(_)));
    fs::write(&marker, "00ff\n").expect("its own marker again");
    assert!(later(&s)
        .changes
        .iter()
        .any(|c| matches!(c, LocalChange::Removed { path } if path == "top.txt")));
}

/// A path the index holds present that the cache lacks (the cache, persisted first, forgot a
/// deletion the index lost in a crash) is looked at by the next scan once the cache is told
/// of it: gone, it is reported removed; there, hashed and reported as it is.
#[test]
fn a_path_the_index_holds_and_the_cache_lacks_is_looked_at() {
    let f = Folder::new();
    let (_, top) = populate(&f);
    f.write("gone.txt", b"abc");
    let s = f.scanner();
    later(&s);
    assert!(s.cache().lock().entries.contains_key("gone.txt"));
    let record = |path: &str, size: u64| weft_engine::replicate::Record {
        entry: FileEntry {
            path: path.into(),
            kind: FileKind::File,
            target: String::new(),
            mode: 6,
            size,
            mtime_ms: 0,
            modified_by: 1,
            version: Version::default(),
            sequence: 1,
            blocks: Vec::new(),
        },
        deleted: false,
    };
    // Deleted, and the cache stored without it (its record lost); and one still there that
    // the cache lost too.
    fs::remove_file(f.p("gone.txt")).expect("rm");
    s.cache().lock().entries.remove("gone.txt");
    s.cache().lock().entries.remove("top.txt");
    let records = [record("gone.txt", 3), record("top.txt", top.len() as u64)];
    assert_eq!(s.cache().lock().expect_present(records.iter()), 2);
    // Held already: nothing given again.
    assert_eq!(s.cache().lock().expect_present(records.iter()), 0);
    let o = later(&s);
    assert!(
        o.changes
            .iter()
            .any(|c| matches!(c, LocalChange::Removed { path } if path == "gone.txt")),
        "{:?}",
        o.changes
    );
    assert!(
        o.changes
            .iter()
            .any(|c| matches!(c, LocalChange::Changed(e) if e.path == "top.txt" && e.size == top.len() as u64)),
        "{:?}",
        o.changes
    );
}
