//! Every rule of `disk/` on a real disk (a temporary directory).

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

use bytes::Bytes;
use weft_engine::protocol::{Block, FileKind};
use weft_engine::replicate::blocks::{chunk, Tier};
use weft_engine::replicate::Expect;

use super::*;

use StorageRequest as R;
use StorageResult as S;

const NOW: i64 = 1_700_000_000_000;

struct Folder {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    disk: Disk,
}

impl Folder {
    fn new() -> Folder {
        let tmp = tempfile::tempdir().expect("a temporary directory for the test");
        let root = tmp.path().join("shared");
        Disk::init(&root, "00ff00ff").expect("init a fresh folder");
        // What the group's and others' bits of new paths are does not hang on the umask the
        // tests run under.
        let disk = Disk::new(root.clone(), SharedCache::default()).with_umask(0o022);
        Folder {
            _tmp: tmp,
            root,
            disk,
        }
    }

    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn run(&self, request: R) -> S {
        self.disk.carry_out(&request, NOW)
    }

    fn expect(&self, path: &str) -> Expect {
        let m = fs::symlink_metadata(self.at(path)).expect("the path is there");
        let kind = if m.file_type().is_symlink() {
            FileKind::Symlink
        } else if m.is_dir() {
            FileKind::Directory
        } else {
            FileKind::File
        };
        Expect::Present {
            kind,
            size: if kind == FileKind::File { m.len() } else { 0 },
            mtime_ms: m.mtime() * 1000 + m.mtime_nsec() / 1_000_000,
            mode: ((m.mode() >> 6) & 7) as u8,
        }
    }

    /// Writes `data` into temp `t` (one WriteTemp per block) and commits it at `path`.
    fn put(&self, t: u64, path: &str, data: &[u8], mode: u8, mtime_ms: i64, expect: Expect) -> S {
        let blocks = blocks_of(data);
        assert_eq!(self.write(t, 0, b""), S::Done);
        for b in &blocks {
            let at = b.offset as usize;
            assert_eq!(
                self.write(t, b.offset, &data[at..at + b.len as usize]),
                S::Done
            );
        }
        self.run(R::Commit {
            temp: TempId(t),
            path: path.into(),
            size: data.len() as u64,
            blocks,
            mode,
            mtime_ms,
            expect,
        })
    }

    fn write(&self, t: u64, offset: u64, data: &[u8]) -> S {
        self.run(R::WriteTemp {
            temp: TempId(t),
            offset,
            data: Bytes::copy_from_slice(data),
        })
    }

    fn temp_path(&self, t: u64) -> PathBuf {
        self.root
            .join(RESERVED_DIR)
            .join(TEMP_DIR)
            .join(temp_file_name(TempId(t)))
    }

    fn trash(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> =
            fs::read_dir(self.root.join(RESERVED_DIR).join(TRASH_DIR))
                .expect("the trash is there")
                .map(|e| {
                    let e = e.expect("a trash entry");
                    let name = e.file_name().to_string_lossy().into_owned();
                    let data = fs::read(e.path()).unwrap_or_default();
                    (name, data)
                })
                .collect();
        v.sort();
        v
    }
}

fn blocks_of(data: &[u8]) -> Vec<Block> {
    chunk(data, Tier::fresh(data.len() as u64))
        .into_iter()
        .map(|b| Block {
            offset: b.offset,
            len: b.len,
            hash: b.hash,
        })
        .collect()
}

fn failed(why: &str) -> S {
    S::Failed(StorageError::Io(why.into()))
}

fn is_failed(s: &S) -> bool {
    matches!(s, S::Failed(_))
}

#[test]
fn disk_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Disk>();
}

// Rule 1: the folder first.

/// A marker naming another folder (another network's, a config that points at it) refuses
/// every step, as a missing one does; one rewritten in place is read again.
#[test]
fn a_marker_naming_another_folder_is_refused() {
    let f = Folder::new();
    let disk = Disk::new(f.root.clone(), SharedCache::default()).for_folder("00ff00ff".into());
    assert_eq!(disk.check(), Ok(()));
    let marker = f.root.join(RESERVED_DIR).join(MARKER_FILE);
    let mkdir = R::MakeDir {
        path: "d".into(),
        mode: 7,
    };
    fs::write(&marker, "ff00ff\n").unwrap();
    assert_eq!(disk.check(), Err(FolderMissing::Foreign));
    assert_eq!(disk.carry_out(&mkdir, NOW), failed(FOLDER_MISSING));
    assert!(!f.at("d").exists());
    // Its own id again, rewritten in place, then another's (of another length: a rewrite
    // is seen by its size, mtime or inode, and two within one clock tick may share an mtime).
    fs::write(&marker, "00ff00ff\n").unwrap();
    assert_eq!(disk.check(), Ok(()));
    fs::write(&marker, "00ff0\n").unwrap();
    assert_eq!(disk.check(), Err(FolderMissing::Foreign));
    fs::write(&marker, "00ff00ff\n").unwrap();
    assert_eq!(disk.carry_out(&mkdir, NOW), S::Done);
}

#[test]
fn missing_marker_or_root_is_refused_and_nothing_is_touched() {
    let f = Folder::new();
    assert_eq!(f.disk.check(), Ok(()));
    fs::remove_file(f.root.join(RESERVED_DIR).join(MARKER_FILE)).unwrap();
    assert_eq!(f.disk.check(), Err(FolderMissing::Marker));
    for request in [
        R::MakeDir {
            path: "d".into(),
            mode: 7,
        },
        R::WriteTemp {
            temp: TempId(1),
            offset: 0,
            data: Bytes::from_static(b"x"),
        },
        R::MakeSymlink {
            path: "l".into(),
            target: "x".into(),
        },
    ] {
        assert_eq!(f.disk.carry_out(&request, NOW), failed(FOLDER_MISSING));
    }
    assert!(!f.at("d").exists());
    assert!(!f.temp_path(1).exists());
    assert!(fs::symlink_metadata(f.at("l")).is_err());
    assert!(f.disk.prune_trash(NOW).is_err());

    // The root gone: refused too.
    let gone = Disk::new(f.root.join("nowhere"), SharedCache::default());
    assert_eq!(gone.check(), Err(FolderMissing::Root));
    assert_eq!(
        gone.carry_out(
            &R::MakeDir {
                path: "d".into(),
                mode: 7
            },
            NOW
        ),
        failed(FOLDER_MISSING)
    );
    assert!(!f.root.join("nowhere").exists());
}

#[test]
fn state_steps_are_not_disk_steps() {
    let f = Folder::new();
    assert_eq!(f.run(R::LoadState), failed("not a disk step"));
    assert_eq!(
        f.run(R::PersistState {
            bytes: Bytes::new()
        }),
        failed("not a disk step")
    );
}

#[test]
fn init_is_idempotent_and_keeps_its_folder_id() {
    let f = Folder::new();
    Disk::init(&f.root, "00ff00ff").unwrap();
    assert!(Disk::init(&f.root, "1234").is_err());
    let marker = fs::read_to_string(f.root.join(RESERVED_DIR).join(MARKER_FILE)).unwrap();
    assert_eq!(marker, "00ff00ff\n");
    assert!(f.root.join(RESERVED_DIR).join(TEMP_DIR).is_dir());
    assert!(f.root.join(RESERVED_DIR).join(TRASH_DIR).is_dir());
}

// Rule 2: no symlink followed; invalid paths refused.

#[test]
fn a_symlinked_parent_is_refused_and_nothing_is_written_through_it() {
    let f = Folder::new();
    let outside = f._tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    symlink(&outside, f.at("link")).unwrap();

    let r = f.put(1, "link/new", b"hello", 6, NOW, Expect::Nothing);
    assert_eq!(r, failed(SYMLINK_IN_PATH));
    assert_eq!(
        f.run(R::MakeDir {
            path: "link/d".into(),
            mode: 7
        }),
        failed(SYMLINK_IN_PATH)
    );
    assert_eq!(
        f.run(R::MakeSymlink {
            path: "link/s".into(),
            target: "x".into()
        }),
        failed(SYMLINK_IN_PATH)
    );
    assert_eq!(
        f.run(R::ReadBlock {
            path: "link/secret".into(),
            offset: 0,
            len: 6
        }),
        failed(SYMLINK_IN_PATH)
    );
    let secret = Expect::Present {
        kind: FileKind::File,
        size: 6,
        mtime_ms: 0,
        mode: 6,
    };
    assert_eq!(
        f.run(R::Remove {
            path: "link/secret".into(),
            expect: secret
        }),
        failed(SYMLINK_IN_PATH)
    );
    assert_eq!(
        f.run(R::SetMode {
            path: "link/secret".into(),
            mode: 0,
            expect: secret
        }),
        failed(SYMLINK_IN_PATH)
    );
    assert_eq!(
        f.run(R::Rename {
            from: "link/secret".into(),
            to: "stolen".into(),
            expect: secret,
            over: Expect::Nothing,
        }),
        failed(SYMLINK_IN_PATH)
    );
    let mut names: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");
    assert!(!f.at("stolen").exists());

    // A symlink deeper down too.
    fs::create_dir(f.at("a")).unwrap();
    symlink(&outside, f.at("a/b")).unwrap();
    assert_eq!(
        f.run(R::MakeDir {
            path: "a/b/c".into(),
            mode: 7
        }),
        failed(SYMLINK_IN_PATH)
    );
    assert!(!outside.join("c").exists());
}

#[test]
fn a_symlinked_reserved_folder_is_not_written_through() {
    let f = Folder::new();
    let outside = f._tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let tmp = f.root.join(RESERVED_DIR).join(TEMP_DIR);
    fs::remove_dir(&tmp).unwrap();
    symlink(&outside, &tmp).unwrap();
    assert!(is_failed(&f.write(1, 0, b"data")));
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn a_missing_parent_and_invalid_paths_are_refused() {
    let f = Folder::new();
    assert_eq!(
        f.put(1, "no/file", b"x", 6, NOW, Expect::Nothing),
        failed(NO_PARENT)
    );
    assert_eq!(
        f.run(R::MakeDir {
            path: "no/d".into(),
            mode: 7
        }),
        failed(NO_PARENT)
    );
    // A file as a parent is no directory either.
    fs::write(f.at("file"), b"x").unwrap();
    assert_eq!(
        f.run(R::MakeDir {
            path: "file/d".into(),
            mode: 7
        }),
        failed(NO_PARENT)
    );
    // Where a missing path has its own answer, a missing parent gives it.
    assert_eq!(
        f.run(R::ReadBlock {
            path: "no/file".into(),
            offset: 0,
            len: 1
        }),
        S::NotFound
    );
    assert_eq!(
        f.run(R::Remove {
            path: "no/file".into(),
            expect: Expect::Nothing
        }),
        S::NotFound
    );
    for bad in [
        "",
        ".",
        "..",
        "a/../b",
        "a//b",
        "/abs",
        "a/",
        ".weft",
        ".weft/folder",
        "a\0b",
    ] {
        let r = f.run(R::MakeDir {
            path: bad.into(),
            mode: 7,
        });
        assert!(is_failed(&r), "{bad:?}: {r:?}");
        let r = f.run(R::Remove {
            path: bad.into(),
            expect: Expect::Nothing,
        });
        assert!(is_failed(&r), "{bad:?}: {r:?}");
    }
    assert!(f.root.join(RESERVED_DIR).join(MARKER_FILE).is_file());
}

// Rule 3: expect.

#[test]
fn expect_nothing_fails_on_a_dangling_symlink_and_present_compares_size_mtime_and_mode() {
    let f = Folder::new();
    symlink("nowhere", f.at("dangling")).unwrap();
    assert_eq!(
        f.put(1, "dangling", b"data", 6, NOW, Expect::Nothing),
        S::Changed
    );
    // The temp is kept for a retry, and the link is untouched.
    assert!(f.temp_path(1).exists());
    assert_eq!(
        fs::read_link(f.at("dangling")).unwrap(),
        Path::new("nowhere")
    );

    fs::write(f.at("f"), b"abc").unwrap();
    let Expect::Present { mtime_ms, mode, .. } = f.expect("f") else {
        unreachable!()
    };
    for wrong in [
        Expect::Nothing,
        Expect::Present {
            kind: FileKind::File,
            size: 4,
            mtime_ms,
            mode,
        },
        Expect::Present {
            kind: FileKind::File,
            size: 3,
            mtime_ms: mtime_ms + 1,
            mode,
        },
        // A mode change alone (a chmod leaves size and mtime) is a change too.
        Expect::Present {
            kind: FileKind::File,
            size: 3,
            mtime_ms,
            mode: mode ^ 1,
        },
        Expect::Present {
            kind: FileKind::Directory,
            size: 0,
            mtime_ms,
            mode,
        },
    ] {
        let r = f.run(R::Remove {
            path: "f".into(),
            expect: wrong,
        });
        assert_eq!(r, S::Changed, "{wrong:?}");
    }
    // A directory's size, mtime and mode are not compared.
    fs::create_dir(f.at("d")).unwrap();
    fs::set_permissions(f.at("d"), fs::Permissions::from_mode(0o750)).unwrap();
    let r = f.run(R::SetMode {
        path: "d".into(),
        mode: 5,
        expect: Expect::Present {
            kind: FileKind::Directory,
            size: 0,
            mtime_ms: 1,
            mode: 0,
        },
    });
    assert_eq!(r, S::Done);
    assert_eq!(fs::metadata(f.at("d")).unwrap().mode() & 0o777, 0o550);
    fs::set_permissions(f.at("d"), fs::Permissions::from_mode(0o700)).unwrap();
}

// Rule 4: ReadBlock.

#[test]
fn read_block_reads_exactly_and_answers_not_found() {
    let f = Folder::new();
    fs::write(f.at("f"), b"0123456789").unwrap();
    let read = |path: &str, offset, len| {
        f.run(R::ReadBlock {
            path: path.into(),
            offset,
            len,
        })
    };
    assert_eq!(read("f", 2, 3), S::Block(Bytes::from_static(b"234")));
    assert_eq!(
        read("f", 0, 10),
        S::Block(Bytes::from_static(b"0123456789"))
    );
    assert_eq!(read("f", 8, 3), S::NotFound);
    assert_eq!(read("f", u64::MAX, 3), S::NotFound);
    assert_eq!(read("f", 0, u32::MAX), S::NotFound);
    assert_eq!(read("missing", 0, 1), S::NotFound);
    fs::create_dir(f.at("d")).unwrap();
    assert_eq!(read("d", 0, 1), S::NotFound);
    symlink("f", f.at("l")).unwrap();
    assert_eq!(read("l", 0, 1), S::NotFound);
}

// Rule 5: WriteTemp.

#[test]
fn write_temp_creates_a_private_temp_and_writes_at_offsets() {
    let f = Folder::new();
    assert_eq!(f.write(7, 0, b""), S::Done);
    let m = fs::metadata(f.temp_path(7)).unwrap();
    assert_eq!(m.len(), 0);
    assert_eq!(m.mode() & 0o777, 0o600);
    assert_eq!(f.write(7, 4, b"tail"), S::Done);
    assert_eq!(f.write(7, 0, b"head"), S::Done);
    assert_eq!(fs::read(f.temp_path(7)).unwrap(), b"headtail");
    // Zeros inside the file are written (they replace what is there).
    assert_eq!(f.write(7, 0, &[0, 0]), S::Done);
    assert_eq!(fs::read(f.temp_path(7)).unwrap(), b"\0\0adtail");

    assert_eq!(f.run(R::DiscardTemp { temp: TempId(7) }), S::Done);
    assert!(!f.temp_path(7).exists());
    assert_eq!(f.run(R::DiscardTemp { temp: TempId(7) }), S::Done);
}

#[test]
fn an_open_temp_takes_its_writes_but_its_commit_checks_the_folder() {
    let f = Folder::new();
    let data = b"written while the folder was there";
    assert_eq!(f.write(3, 0, &data[..10]), S::Done);
    // The temp is kept open: a write into it goes on without the marker (it lands in
    // .weft/tmp alone), and its commit is refused with nothing put in place.
    fs::remove_file(f.root.join(RESERVED_DIR).join(MARKER_FILE)).unwrap();
    assert_eq!(f.write(3, 10, &data[10..]), S::Done);
    assert_eq!(fs::read(f.temp_path(3)).unwrap(), data);
    let commit = R::Commit {
        temp: TempId(3),
        path: "f".into(),
        size: data.len() as u64,
        blocks: blocks_of(data),
        mode: 6,
        mtime_ms: NOW,
        expect: Expect::Nothing,
    };
    assert_eq!(f.disk.carry_out(&commit, NOW), failed(FOLDER_MISSING));
    assert!(!f.at("f").exists());
    // The marker back, the commit goes through (the temp kept its content).
    fs::write(f.root.join(RESERVED_DIR).join(MARKER_FILE), b"marker\n").unwrap();
    assert_eq!(f.disk.carry_out(&commit, NOW), S::Done);
    assert_eq!(fs::read(f.at("f")).unwrap(), data);
}

#[test]
fn a_zero_block_leaves_a_hole() {
    let f = Folder::new();
    const MB: usize = 1 << 20;
    let mut data = vec![0u8; 8 * MB];
    data[8 * MB - 5..].copy_from_slice(b"tail!");
    let r = f.put(1, "sparse", &data, 6, NOW, Expect::Nothing);
    assert_eq!(r, S::Done);
    let m = fs::metadata(f.at("sparse")).unwrap();
    assert_eq!(m.len(), data.len() as u64);
    assert!(
        m.blocks() * 512 < data.len() as u64 / 2,
        "{} bytes allocated for a file of {}",
        m.blocks() * 512,
        data.len()
    );
    assert_eq!(fs::read(f.at("sparse")).unwrap(), data);
}

/// Zero blocks inside the file, written after a later block extended it (blocks arrive in
/// any order), stay holes too; and zeros over bytes already there replace them.
#[test]
fn zero_blocks_inside_the_file_stay_holes_and_read_as_zeros() {
    let f = Folder::new();
    const MB: u64 = 1 << 20;
    // The last block first, then 7 MiB of zeros before it, in 1 MiB blocks.
    assert_eq!(f.write(1, 7 * MB, &[7u8; MB as usize]), S::Done);
    for i in 0..7 {
        assert_eq!(f.write(1, i * MB, &[0u8; MB as usize]), S::Done);
    }
    let tmp = f.at(&format!(".weft/tmp/{}", temp_file_name(TempId(1))));
    let m = fs::metadata(&tmp).unwrap();
    assert_eq!(m.len(), 8 * MB);
    assert!(
        m.blocks() * 512 < 2 * MB,
        "{} bytes allocated",
        m.blocks() * 512
    );
    // Bad bytes where zeros belong (a resumed temp) are replaced by the zero block.
    assert_eq!(f.write(1, 3 * MB, &[9u8; 4096]), S::Done);
    assert_eq!(f.write(1, 3 * MB, &[0u8; 4096]), S::Done);
    let bytes = fs::read(&tmp).unwrap();
    assert!(bytes[..7 * MB as usize].iter().all(|b| *b == 0));
}

// Rule 6: Commit.

#[test]
fn commit_verifies_sets_mode_and_mtime_and_keeps_the_replaced_version_in_the_trash() {
    let f = Folder::new();
    let mtime = 1_600_000_000_123;
    assert_eq!(
        f.put(1, "f", b"old content", 6, mtime, Expect::Nothing),
        S::Done
    );
    assert!(!f.temp_path(1).exists());
    let m = fs::metadata(f.at("f")).unwrap();
    // New here: the group and others get the owner's bits less the umask (022).
    assert_eq!(m.mode() & 0o7777, 0o644);
    assert_eq!(m.mtime() * 1000 + m.mtime_nsec() / 1_000_000, mtime);
    assert!(f.trash().is_empty());

    // Replacing it: the old version goes to the trash, and the group's and others' bits a
    // user here gave it stay.
    fs::set_permissions(f.at("f"), fs::Permissions::from_mode(0o620)).unwrap();
    let expect = f.expect("f");
    assert_eq!(f.put(2, "f", b"new!", 5, mtime + 1000, expect), S::Done);
    assert_eq!(fs::read(f.at("f")).unwrap(), b"new!");
    let m = fs::metadata(f.at("f")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o520);
    assert_eq!(m.mtime() * 1000 + m.mtime_nsec() / 1_000_000, mtime + 1000);
    let trash = f.trash();
    assert_eq!(trash.len(), 1);
    assert_eq!(trash[0].0, format!("{NOW}-0-f"));
    assert_eq!(trash[0].1, b"old content");

    // A stale expect: Changed, nothing replaced, the temp kept.
    let r = f.put(3, "f", b"newer", 6, mtime, expect);
    assert_eq!(r, S::Changed);
    assert_eq!(fs::read(f.at("f")).unwrap(), b"new!");
    assert!(f.temp_path(3).exists());

    // An empty file, and a nested path.
    fs::create_dir(f.at("d")).unwrap();
    assert_eq!(f.put(4, "d/empty", b"", 7, mtime, Expect::Nothing), S::Done);
    assert_eq!(fs::read(f.at("d/empty")).unwrap(), b"");
    assert_eq!(fs::metadata(f.at("d/empty")).unwrap().mode() & 0o777, 0o755);
}

#[test]
fn commit_reports_corrupt_blocks_and_a_missing_temp() {
    let f = Folder::new();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let blocks = blocks_of(&data);
    assert!(blocks.len() >= 2, "{} blocks", blocks.len());
    for b in &blocks {
        let at = b.offset as usize;
        assert_eq!(
            f.write(1, b.offset, &data[at..at + b.len as usize]),
            S::Done
        );
    }
    // Spoil the second block.
    let bad = blocks[1].offset;
    assert_eq!(f.write(1, bad + 1, b"\xff\xfe"), S::Done);
    let commit = R::Commit {
        temp: TempId(1),
        path: "f".into(),
        size: data.len() as u64,
        blocks: blocks.clone(),
        mode: 6,
        mtime_ms: NOW,
        expect: Expect::Nothing,
    };
    assert_eq!(f.run(commit.clone()), S::Corrupt(vec![bad]));
    assert!(f.temp_path(1).exists());
    assert!(!f.at("f").exists());
    // Refetched: done.
    let at = bad as usize;
    assert_eq!(
        f.write(1, bad, &data[at..at + blocks[1].len as usize]),
        S::Done
    );
    assert_eq!(f.run(commit.clone()), S::Done);
    assert_eq!(fs::read(f.at("f")).unwrap(), data);
    // Again (a commit sent twice across a crash): the temp is gone.
    assert_eq!(f.run(commit), S::NotFound);

    // A temp longer than the file is cut; one shorter is extended and fails its hashes.
    assert_eq!(f.write(2, 0, b"abcdefgh"), S::Done);
    let r = f.run(R::Commit {
        temp: TempId(2),
        path: "g".into(),
        size: 4,
        blocks: blocks_of(b"abcd"),
        mode: 6,
        mtime_ms: NOW,
        expect: Expect::Nothing,
    });
    assert_eq!(r, S::Done);
    assert_eq!(fs::read(f.at("g")).unwrap(), b"abcd");
    assert_eq!(f.write(3, 0, b"ab"), S::Done);
    let r = f.run(R::Commit {
        temp: TempId(3),
        path: "h".into(),
        size: 4,
        blocks: blocks_of(b"abcd"),
        mode: 6,
        mtime_ms: NOW,
        expect: Expect::Nothing,
    });
    assert_eq!(r, S::Corrupt(vec![0]));

    // Blocks that do not tile the size: refused.
    assert_eq!(f.write(4, 0, b"abcd"), S::Done);
    let r = f.run(R::Commit {
        temp: TempId(4),
        path: "i".into(),
        size: 4,
        blocks: Vec::new(),
        mode: 6,
        mtime_ms: NOW,
        expect: Expect::Nothing,
    });
    assert!(is_failed(&r), "{r:?}");
    // A block past the end is corrupt.
    let mut past = blocks_of(b"abcd");
    past[0].offset = 10;
    let r = f.run(R::Commit {
        temp: TempId(4),
        path: "i".into(),
        size: 4,
        blocks: past,
        mode: 6,
        mtime_ms: NOW,
        expect: Expect::Nothing,
    });
    assert_eq!(r, S::Corrupt(vec![10]));
    assert!(!f.at("i").exists());
}

// Rule 8: Remove and the trash.

/// A directory kept only by what `(?d)` rules let go is removed with it, never through a
/// symlink; one that also holds anything else (a file ignored without `(?d)`) keeps it all.
#[test]
fn a_directory_kept_only_by_deletable_ignored_files_is_removed() {
    let f = Folder::new();
    let (rules, errors) = IgnoreRules::parse("(?d)*.pyc\n(?d)__pycache__/\n*.log\n");
    assert!(errors.is_empty());
    f.disk.set_ignore_rules(rules);
    let outside = f.root.parent().unwrap().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), b"not weft's").unwrap();
    fs::create_dir_all(f.at("pkg/__pycache__/deeper")).unwrap();
    fs::write(f.at("pkg/m.pyc"), b"compiled").unwrap();
    fs::write(f.at("pkg/__pycache__/deeper/x.pyc"), b"compiled").unwrap();
    symlink(&outside, f.at("pkg/__pycache__/out")).unwrap();
    fs::write(f.at("pkg/run.log"), b"ignored, not deletable").unwrap();
    let dir = f.expect("pkg");
    let remove = || {
        f.run(R::Remove {
            path: "pkg".into(),
            expect: dir,
        })
    };
    assert_eq!(remove(), failed(DIR_NOT_EMPTY));
    assert!(f.at("pkg/m.pyc").exists(), "nothing goes unless all may");
    fs::remove_file(f.at("pkg/run.log")).unwrap();
    assert_eq!(remove(), S::Done);
    assert!(!f.at("pkg").exists());
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"not weft's");
    // A `.weft` (a folder shared inside) under a deletable directory keeps it all.
    fs::create_dir_all(f.at("nest/__pycache__/inner/.weft")).unwrap();
    fs::write(
        f.at("nest/__pycache__/inner/.weft/folder"),
        b"another network",
    )
    .unwrap();
    fs::write(f.at("nest/a.pyc"), b"compiled").unwrap();
    let dir = f.expect("nest");
    let remove_nest = || {
        f.run(R::Remove {
            path: "nest".into(),
            expect: dir,
        })
    };
    assert_eq!(remove_nest(), failed(DIR_NOT_EMPTY));
    assert!(f.at("nest/a.pyc").exists() && f.at("nest/__pycache__/inner/.weft/folder").exists());
    fs::remove_dir_all(f.at("nest/__pycache__/inner")).unwrap();
    // A file the scanner knows under it (shared before a rule made it deletable: the rules
    // replicate) keeps it all too.
    f.disk.cache().lock().entries.insert(
        "nest/a.pyc".into(),
        crate::folder::cache::CachedEntry {
            kind: FileKind::File,
            size: 8,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            mode: 6,
            target: String::new(),
            tier: 0,
            blocks: Vec::new(),
        },
    );
    assert_eq!(remove_nest(), failed(DIR_NOT_EMPTY));
    assert!(f.at("nest/a.pyc").exists());
    f.disk.cache().lock().entries.remove("nest/a.pyc");
    assert_eq!(remove_nest(), S::Done);
    assert!(!f.at("nest").exists());
    // Without rules, the directory stays.
    f.disk.set_ignore_rules(IgnoreRules::default());
    fs::create_dir_all(f.at("again")).unwrap();
    fs::write(f.at("again/m.pyc"), b"compiled").unwrap();
    let dir = f.expect("again");
    assert_eq!(
        f.run(R::Remove {
            path: "again".into(),
            expect: dir,
        }),
        failed(DIR_NOT_EMPTY)
    );
}

#[test]
fn remove_moves_files_to_the_trash_and_removes_empty_directories() {
    let f = Folder::new();
    fs::create_dir_all(f.at("d/sub")).unwrap();
    fs::write(f.at("d/sub/f"), b"content").unwrap();
    symlink("f", f.at("d/sub/l")).unwrap();

    assert_eq!(
        f.run(R::Remove {
            path: "d/sub/missing".into(),
            expect: Expect::Nothing
        }),
        S::NotFound
    );
    let dir = f.expect("d/sub");
    assert_eq!(
        f.run(R::Remove {
            path: "d/sub".into(),
            expect: dir
        }),
        failed(DIR_NOT_EMPTY)
    );
    let e = f.expect("d/sub/f");
    assert_eq!(
        f.run(R::Remove {
            path: "d/sub/f".into(),
            expect: e
        }),
        S::Done
    );
    let e = f.expect("d/sub/l");
    assert_eq!(
        f.run(R::Remove {
            path: "d/sub/l".into(),
            expect: e
        }),
        S::Done
    );
    assert_eq!(
        f.run(R::Remove {
            path: "d/sub".into(),
            expect: dir
        }),
        S::Done
    );
    assert!(!f.at("d/sub").exists());
    let trash = f.trash();
    assert_eq!(trash.len(), 2);
    assert_eq!(trash[0], (format!("{NOW}-0-d%sub%f"), b"content".to_vec()));
    let link = f
        .root
        .join(RESERVED_DIR)
        .join(TRASH_DIR)
        .join(format!("{NOW}-1-d%sub%l"));
    assert_eq!(fs::read_link(link).unwrap(), Path::new("f"));
}

#[test]
fn a_long_path_gets_a_trash_name_that_fits() {
    let f = Folder::new();
    let mut path = String::new();
    for i in 0..3 {
        let c = format!("{}{i}", "x".repeat(200));
        fs::create_dir(f.root.join(&path).join(&c)).unwrap();
        path = if path.is_empty() {
            c
        } else {
            format!("{path}/{c}")
        };
    }
    let file = format!("{path}/é{}", "y".repeat(150));
    fs::write(f.at(&file), b"deep").unwrap();
    let e = f.expect(&file);
    assert_eq!(
        f.run(R::Remove {
            path: file.clone(),
            expect: e
        }),
        S::Done
    );
    let trash = f.trash();
    assert_eq!(trash.len(), 1);
    assert!(trash[0].0.len() <= 255);
    assert!(trash[0].0.ends_with(&"y".repeat(150)));
    assert_eq!(trash[0].1, b"deep");
}

#[test]
fn prune_trash_drops_old_entries_then_the_oldest_beyond_the_size() {
    let f = Folder::new();
    let day = 24 * 3600 * 1000;
    let trash = f.root.join(RESERVED_DIR).join(TRASH_DIR);
    let entries = [
        (NOW - 8 * day, 0, 10),  // too old
        (NOW - 3 * day, 1, 400), // oldest kept by age, dropped for size
        (NOW - 2 * day, 2, 400),
        (NOW - day, 3, 300),
    ];
    for (ms, n, size) in entries {
        fs::write(trash.join(format!("{ms}-{n}-f")), vec![1u8; size]).unwrap();
    }
    fs::write(trash.join("stray"), b"?").unwrap();
    let disk = Disk::new(f.root.clone(), SharedCache::default()).with_trash_policy(TrashPolicy {
        keep_ms: TRASH_KEEP_MS,
        bytes_max: 800,
        entries_max: TRASH_ENTRIES_MAX,
    });
    disk.prune_trash(NOW).unwrap();
    let left: Vec<String> = f.trash().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        left,
        vec![
            format!("{}-2-f", NOW - 2 * day),
            format!("{}-3-f", NOW - day)
        ]
    );
    // Everything is old a month later.
    f.disk.prune_trash(NOW + 30 * day).unwrap();
    assert!(f.trash().is_empty());
}

/// Many small entries, far under the byte bound: the oldest go past the entry bound.
#[test]
fn prune_trash_keeps_at_most_its_entries() {
    let f = Folder::new();
    let trash = f.root.join(RESERVED_DIR).join(TRASH_DIR);
    for n in 0..10 {
        fs::write(trash.join(format!("{}-{n}-f", NOW - 10 + n)), b"x").unwrap();
    }
    let disk = Disk::new(f.root.clone(), SharedCache::default()).with_trash_policy(TrashPolicy {
        keep_ms: TRASH_KEEP_MS,
        bytes_max: TRASH_BYTES_MAX,
        entries_max: 4,
    });
    disk.prune_trash(NOW).unwrap();
    let left: Vec<String> = f.trash().into_iter().map(|(n, _)| n).collect();
    let newest: Vec<String> = (6..10).map(|n| format!("{}-{n}-f", NOW - 10 + n)).collect();
    assert_eq!(left, newest);
}

/// A file linked into the trash under two names counts once toward its bound: its bytes
/// are on the disk once, and counted twice they pushed other versions out.
#[test]
fn prune_trash_counts_a_file_linked_twice_once() {
    let f = Folder::new();
    let day = 24 * 3600 * 1000;
    let trash = f.root.join(RESERVED_DIR).join(TRASH_DIR);
    fs::write(trash.join(format!("{}-0-g", NOW - 3 * day)), vec![1u8; 300]).unwrap();
    let first = trash.join(format!("{}-1-f", NOW - 2 * day));
    fs::write(&first, vec![2u8; 400]).unwrap();
    fs::hard_link(&first, trash.join(format!("{}-2-f", NOW - day))).unwrap();
    let disk = Disk::new(f.root.clone(), SharedCache::default()).with_trash_policy(TrashPolicy {
        keep_ms: TRASH_KEEP_MS,
        bytes_max: 800,
        entries_max: TRASH_ENTRIES_MAX,
    });
    disk.prune_trash(NOW).unwrap();
    assert_eq!(f.trash().len(), 3, "700 bytes on the disk, under 800");
}

// Rule 9: Rename, MakeDir, MakeSymlink, SetMode.

#[test]
fn rename_never_replaces() {
    let f = Folder::new();
    fs::write(f.at("a"), b"a").unwrap();
    fs::write(f.at("b"), b"b").unwrap();
    let a = f.expect("a");
    let rename = |from: &str, to: &str, expect| {
        f.run(R::Rename {
            from: from.into(),
            to: to.into(),
            expect,
            over: Expect::Nothing,
        })
    };
    assert_eq!(rename("a", "b", a), S::Changed);
    assert_eq!(fs::read(f.at("b")).unwrap(), b"b");
    symlink("nowhere", f.at("dangling")).unwrap();
    assert_eq!(rename("a", "dangling", a), S::Changed);
    assert_eq!(rename("missing", "c", a), S::NotFound);
    assert_eq!(rename("a", "c", Expect::Nothing), S::Changed);
    assert_eq!(rename("a", "no/c", a), failed(NO_PARENT));
    assert_eq!(rename("a", "c", a), S::Done);
    assert!(!f.at("a").exists());
    assert_eq!(fs::read(f.at("c")).unwrap(), b"a");
    // A directory with what is inside it.
    fs::create_dir(f.at("d")).unwrap();
    fs::write(f.at("d/x"), b"x").unwrap();
    let d = f.expect("d");
    assert_eq!(rename("d", "e", d), S::Done);
    assert_eq!(fs::read(f.at("e/x")).unwrap(), b"x");
}

#[test]
fn make_dir_creates_or_sets_the_mode_and_make_symlink_never_follows() {
    let f = Folder::new();
    let mk = |path: &str, mode| {
        f.run(R::MakeDir {
            path: path.into(),
            mode,
        })
    };
    let mode_of = |path: &str| fs::metadata(f.at(path)).unwrap().mode() & 0o7777;
    // New here: the group and others get the owner's bits less the umask (022).
    assert_eq!(mk("d", 5), S::Done);
    assert_eq!(mode_of("d"), 0o555);
    assert_eq!(mk("d", 7), S::Done);
    assert_eq!(mode_of("d"), 0o755);
    // Held: the group's and others' bits, and set-group-ID, stay as a user here set them;
    // a directory made under it inherits set-group-ID.
    fs::set_permissions(f.at("d"), fs::Permissions::from_mode(0o2750)).unwrap();
    assert_eq!(mk("d", 5), S::Done);
    assert_eq!(mode_of("d"), 0o2550);
    assert_eq!(mk("d", 7), S::Done);
    assert_eq!(mk("d/e", 7), S::Done);
    assert_eq!(mode_of("d/e"), 0o2755);
    fs::write(f.at("file"), b"x").unwrap();
    assert_eq!(mk("file", 7), S::Changed);
    // A symlink to a directory is not a directory.
    symlink("d", f.at("ld")).unwrap();
    assert_eq!(mk("ld", 7), S::Changed);

    let sl = |path: &str, target: &str| {
        f.run(R::MakeSymlink {
            path: path.into(),
            target: target.into(),
        })
    };
    assert_eq!(sl("l", "../outside/target"), S::Done);
    assert_eq!(
        fs::read_link(f.at("l")).unwrap(),
        Path::new("../outside/target")
    );
    assert_eq!(sl("l", "other"), S::Changed);
    assert_eq!(sl("file", "other"), S::Changed);
    assert_eq!(sl("d/e/l", "x"), S::Done);
    assert_eq!(fs::read(f.at("file")).unwrap(), b"x");
}

#[test]
fn set_mode_sets_owner_bits_and_leaves_symlinks_alone() {
    let f = Folder::new();
    fs::write(f.at("f"), b"x").unwrap();
    fs::set_permissions(f.at("f"), fs::Permissions::from_mode(0o644)).unwrap();
    let e = f.expect("f");
    let set = |path: &str, mode, expect| {
        f.run(R::SetMode {
            path: path.into(),
            mode,
            expect,
        })
    };
    // The owner's bits are set; the group's and others' stay as a user here set them.
    assert_eq!(set("f", 7, e), S::Done);
    assert_eq!(fs::metadata(f.at("f")).unwrap().mode() & 0o7777, 0o744);
    // What was expected before holds no more: the mode changed.
    assert_eq!(set("f", 6, e), S::Changed);
    // Only the three owner bits are taken.
    assert_eq!(set("f", 0xff, f.expect("f")), S::Done);
    assert_eq!(fs::metadata(f.at("f")).unwrap().mode() & 0o7777, 0o744);
    assert_eq!(set("f", 4, Expect::Nothing), S::Changed);
    assert_eq!(set("missing", 4, Expect::Nothing), S::Changed);

    symlink("f", f.at("l")).unwrap();
    let l = f.expect("l");
    assert_eq!(set("l", 4, l), S::Done);
    assert_eq!(fs::metadata(f.at("f")).unwrap().mode() & 0o7777, 0o744);
}

// Rule 10: the cache.

#[test]
fn the_cache_follows_every_step() {
    let f = Folder::new();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(f.put(1, "f", &data, 6, NOW, Expect::Nothing), S::Done);
    let m = fs::symlink_metadata(f.at("f")).unwrap();
    {
        let cache = f.disk.cache().lock();
        let e = cache
            .entries
            .get("f")
            .expect("the committed file is cached");
        assert_eq!(e.kind, FileKind::File);
        assert_eq!(e.size, data.len() as u64);
        assert_eq!(e.inode, m.ino());
        assert_eq!(e.mtime_ns, i128::from(NOW) * 1_000_000);
        assert_eq!(
            e.ctime_ns,
            i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
        );
        assert_eq!(e.mode, 6);
        assert_eq!(e.blocks, blocks_of(&data));
        assert_eq!(e.tier, Tier::fresh(data.len() as u64).index());
    }

    assert_eq!(
        f.run(R::MakeDir {
            path: "d".into(),
            mode: 7
        }),
        S::Done
    );
    assert_eq!(
        f.run(R::MakeSymlink {
            path: "d/l".into(),
            target: "../f".into()
        }),
        S::Done
    );
    let fe = f.expect("f");
    assert_eq!(
        f.run(R::Rename {
            from: "f".into(),
            to: "d/g".into(),
            expect: fe,
            over: Expect::Nothing,
        }),
        S::Done
    );
    let de = f.expect("d");
    assert_eq!(
        f.run(R::Rename {
            from: "d".into(),
            to: "e".into(),
            expect: de,
            over: Expect::Nothing,
        }),
        S::Done
    );
    let ge = f.expect("e/g");
    assert_eq!(
        f.run(R::SetMode {
            path: "e/g".into(),
            mode: 4,
            expect: ge
        }),
        S::Done
    );
    {
        let cache = f.disk.cache().lock();
        let keys: Vec<&str> = cache.entries.keys().map(String::as_str).collect();
        assert_eq!(keys, vec!["e", "e/g", "e/l"]);
        assert_eq!(cache.entries["e"].kind, FileKind::Directory);
        assert_eq!(cache.entries["e/l"].target, "../f");
        let g = &cache.entries["e/g"];
        assert_eq!(g.blocks, blocks_of(&data));
        assert_eq!(g.mode, 4);
        let m = fs::symlink_metadata(f.at("e/g")).unwrap();
        assert_eq!(
            g.ctime_ns,
            i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
        );
    }
    let le = f.expect("e/l");
    assert_eq!(
        f.run(R::Remove {
            path: "e/l".into(),
            expect: le
        }),
        S::Done
    );
    assert!(!f.disk.cache().lock().entries.contains_key("e/l"));
}

// Rule 11: errors.

#[test]
fn errno_maps_a_full_disk_and_names_the_step() {
    assert_eq!(
        errno_fail("write", "p", Errno::NOSPC),
        S::Failed(StorageError::DiskFull)
    );
    assert_eq!(
        errno_fail("write", "p", Errno::DQUOT),
        S::Failed(StorageError::DiskFull)
    );
    let S::Failed(StorageError::Io(line)) = errno_fail("remove", "a/b", Errno::IO) else {
        panic!("an I/O error is Io");
    };
    assert!(line.starts_with("remove \"a/b\""), "{line}");
    assert!(!line.contains('\n'));
}

#[test]
fn steps_run_from_several_threads_at_once() {
    let f = Folder::new();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let f = &f;
            s.spawn(move || {
                for i in 0..20u64 {
                    let n = t * 100 + i;
                    let data = format!("file {n}");
                    let r = f.put(
                        n,
                        &format!("f{n}"),
                        data.as_bytes(),
                        6,
                        NOW,
                        Expect::Nothing,
                    );
                    assert_eq!(r, S::Done);
                    let e = f.expect(&format!("f{n}"));
                    let r = f.run(R::Remove {
                        path: format!("f{n}"),
                        expect: e,
                    });
                    assert_eq!(r, S::Done);
                }
            });
        }
    });
    assert_eq!(f.trash().len(), 80);
    assert!(f.disk.cache().lock().entries.is_empty());
}

/// Stray temporary files are removed from `.weft/tmp` only: one that is a symlink (to a
/// bigger disk, say) is refused, and the files it points at are left alone (every regular
/// file there was deleted before).
#[test]
fn stray_temps_go_but_never_through_a_symlinked_temp_folder() {
    let f = Folder::new();
    assert_eq!(f.write(7, 0, b"kept"), S::Done);
    assert_eq!(f.write(8, 0, b"stray"), S::Done);
    let tmp = f.at(".weft/tmp");
    fs::write(tmp.join("not-a-temp-name"), b"?").unwrap();
    assert_eq!(f.disk.remove_stray_temps(&[TempId(7)]).unwrap(), 2);
    let left: Vec<_> = fs::read_dir(&tmp).unwrap().collect();
    assert_eq!(left.len(), 1);
    // `.weft/tmp` replaced by a symlink to a directory outside the folder.
    let outside = f._tmp.path().join("elsewhere");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("precious"), b"mine").unwrap();
    fs::remove_dir_all(&tmp).unwrap();
    symlink(&outside, &tmp).unwrap();
    assert!(f.disk.remove_stray_temps(&[]).is_err());
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"mine");
}

/// A mode change never goes through a symlink, not even one swapped in after the `lstat`
/// that found a directory or a file (`chmodat` followed it).
#[test]
fn a_mode_change_never_follows_a_symlink() {
    let f = Folder::new();
    let root = std::fs::File::open(&f.root).unwrap();
    fs::create_dir(f.at("d")).unwrap();
    steps::chmod_nofollow(&root, "d", rustix::fs::Mode::from_raw_mode(0o500)).unwrap();
    assert_eq!(fs::metadata(f.at("d")).unwrap().mode() & 0o777, 0o500);
    let outside = f._tmp.path().join("outside.txt");
    fs::write(&outside, b"x").unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
    symlink(&outside, f.at("l")).unwrap();
    assert_eq!(
        steps::chmod_nofollow(&root, "l", rustix::fs::Mode::from_raw_mode(0o777)),
        Err(rustix::io::Errno::LOOP)
    );
    assert_eq!(fs::metadata(&outside).unwrap().mode() & 0o777, 0o644);
}

// A mount point whose disk is not mounted.

/// A disk mounted inside the folder is shared out (its files are read and served) but
/// nothing is written under it: `.weft/tmp` and `.weft/trash` are on the folder's own disk,
/// and a file is neither renamed nor linked across disks, so each such step would fail half
/// way (a conflict's rename done, its commit not). Once it is not mounted, nothing is
/// written there either (it would be hidden once the disk is mounted again).
#[test]
fn nothing_is_written_under_a_mounted_disk_or_one_not_mounted() {
    use crate::folder::mount_ns::{in_mount_namespace, mount, umount};
    if !in_mount_namespace(
        module_path!(),
        "nothing_is_written_under_a_mounted_disk_or_one_not_mounted",
    ) {
        return;
    }
    let f = Folder::new();
    fs::create_dir(f.at("disk")).expect("mkdir disk");
    mount(&["-t", "tmpfs", "none"], &f.at("disk"));
    f.disk.cache().lock().mount_points.insert("disk".into());
    fs::write(f.at("disk/mine"), b"on the other disk").expect("write on the other disk");
    let mine = f.expect("disk/mine");
    let mkdir = |path: &str| {
        f.run(R::MakeDir {
            path: path.into(),
            mode: 7,
        })
    };
    let other = |step: &str, path: &str| failed(&format!("{step} {path:?}: {OTHER_DISK}"));
    assert_eq!(mkdir("disk/a"), other("make directory", "disk/a"));
    assert_eq!(
        f.put(1, "disk/f", b"from a peer", 6, NOW, Expect::Nothing),
        other("commit", "disk/f")
    );
    assert_eq!(
        f.run(R::Remove {
            path: "disk/mine".into(),
            expect: mine
        }),
        other("remove", "disk/mine")
    );
    assert_eq!(
        f.run(R::Rename {
            from: "disk/mine".into(),
            to: "disk/mine (copy)".into(),
            expect: mine,
            over: Expect::Nothing,
        }),
        other("rename", "disk/mine")
    );
    assert_eq!(
        f.run(R::SetMode {
            path: "disk/mine".into(),
            mode: 4,
            expect: mine
        }),
        other("set mode of", "disk/mine")
    );
    assert_eq!(
        f.run(R::MakeSymlink {
            path: "disk/l".into(),
            target: "mine".into()
        }),
        other("make symlink", "disk/l")
    );
    let names = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(f.at(dir))
            .expect("lists")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("disk"), ["mine"]);
    assert_eq!(fs::read(f.at("disk/mine")).unwrap(), b"on the other disk");
    // What is there is read for peers.
    assert_eq!(
        f.run(R::ReadBlock {
            path: "disk/mine".into(),
            offset: 3,
            len: 5
        }),
        S::Block(Bytes::from_static(b"the o"))
    );
    umount(&f.at("disk"));
    for path in ["disk/a", "disk/c"] {
        assert_eq!(
            mkdir(path),
            S::Failed(StorageError::Io(format!(
                "make directory {path:?}: {NOT_MOUNTED}"
            ))),
        );
    }
    assert_eq!(fs::read_dir(f.at("disk")).expect("lists").count(), 0);
    // The mount point itself is a directory of the folder like any other.
    assert_eq!(mkdir("top"), S::Done);
}

/// A bind mount of a directory of the folder's own disk (its device number the same as its
/// parent's) is a mount too: nothing is written under it (a rename across mounts fails), and
/// once it is not mounted nothing is written there either.
#[test]
fn nothing_is_written_under_a_bind_mount_of_the_same_disk() {
    use crate::folder::mount_ns::{in_mount_namespace, mount, umount};
    if !in_mount_namespace(
        module_path!(),
        "nothing_is_written_under_a_bind_mount_of_the_same_disk",
    ) {
        return;
    }
    let f = Folder::new();
    let backing = f.root.parent().expect("a parent").join("backing");
    fs::create_dir(&backing).expect("mkdir backing");
    fs::create_dir(f.at("disk")).expect("mkdir disk");
    mount(&["--bind", &backing.to_string_lossy()], &f.at("disk"));
    f.disk.cache().lock().mount_points.insert("disk".into());
    assert_eq!(
        f.put(1, "disk/f", b"from a peer", 6, NOW, Expect::Nothing),
        failed(&format!("commit \"disk/f\": {OTHER_DISK}"))
    );
    assert!(fs::read_dir(&backing).expect("lists").next().is_none());
    umount(&f.at("disk"));
    assert_eq!(
        f.run(R::MakeDir {
            path: "disk/a".into(),
            mode: 7,
        }),
        failed(&format!("make directory \"disk/a\": {NOT_MOUNTED}"))
    );
}

// A local save racing a step: it is never removed, moved or re-moded as if unchanged.

/// What the race tests' user saves, longer than what was there.
const SAVED: &[u8] = b"saved locally while weft was at it";

/// Saves [`SAVED`] at `path` in place (the same inode) when a step reaches `point`.
fn save_at(point: &'static str) -> fn(&Path, &str, &str) {
    match point {
        "checked" => |root, at, path| {
            if at == "checked" {
                fs::write(root.join(path), SAVED).expect("the local save");
            }
        },
        _ => |root, at, path| {
            if at == "locked" {
                fs::write(root.join(path), SAVED).expect("the local save");
            }
        },
    }
}

/// A folder whose `f` weft wrote (so the cache holds it with its blocks), and its `Expect`.
fn written_f(point: &'static str) -> (Folder, Expect) {
    let mut f = Folder::new();
    assert_eq!(
        f.put(1, "f", b"from a peer", 6, NOW, Expect::Nothing),
        S::Done
    );
    assert!(f.disk.cache().lock().entries.contains_key("f"));
    f.disk.hook = Some(save_at(point));
    let e = f.expect("f");
    (f, e)
}

#[test]
fn a_save_racing_a_remove_is_kept_in_place() {
    for point in ["checked", "locked"] {
        let (f, e) = written_f(point);
        let r = f.run(R::Remove {
            path: "f".into(),
            expect: e,
        });
        assert_eq!(r, S::Changed, "a save at {point}");
        assert_eq!(fs::read(f.at("f")).unwrap(), SAVED, "a save at {point}");
        assert_eq!(f.trash(), vec![], "a save at {point}");
    }
}

#[test]
fn a_save_racing_a_rename_is_not_moved_as_unchanged() {
    // Before the lock: not moved.
    let (f, e) = written_f("checked");
    let rename = |f: &Folder| {
        f.run(R::Rename {
            from: "f".into(),
            to: "g".into(),
            expect: e,
            over: Expect::Nothing,
        })
    };
    assert_eq!(rename(&f), S::Changed);
    assert_eq!(fs::read(f.at("f")).unwrap(), SAVED);
    assert!(!f.at("g").exists());
    // Under the lock, in the calls before the rename: moved, and the cache forgets it, so
    // the scanner reads the save and reports it (its old blocks are not kept for it).
    let (f, e) = written_f("locked");
    let rename = |f: &Folder| {
        f.run(R::Rename {
            from: "f".into(),
            to: "g".into(),
            expect: e,
            over: Expect::Nothing,
        })
    };
    assert_eq!(rename(&f), S::Done);
    assert_eq!(fs::read(f.at("g")).unwrap(), SAVED);
    let cache = f.disk.cache().lock();
    assert!(!cache.entries.contains_key("f") && !cache.entries.contains_key("g"));
}

#[test]
fn a_save_racing_a_mode_change_keeps_its_mode_or_is_read_again() {
    let set = |f: &Folder, e| {
        f.run(R::SetMode {
            path: "f".into(),
            mode: 7,
            expect: e,
        })
    };
    let (f, e) = written_f("checked");
    assert_eq!(set(&f, e), S::Changed);
    assert_eq!(fs::metadata(f.at("f")).unwrap().mode() & 0o700, 0o600);
    assert_eq!(fs::read(f.at("f")).unwrap(), SAVED);
    let (f, e) = written_f("locked");
    assert_eq!(set(&f, e), S::Done);
    assert!(!f.disk.cache().lock().entries.contains_key("f"));
}

/// The workers carry out steps in parallel: a write the engine sent before it discarded (or
/// committed) its temp may come after. It makes no file again (one nothing would remove
/// before the next start); the last `TEMPS_ENDED_MAX` ended temps are remembered.
#[test]
fn a_write_after_its_temp_ended_makes_nothing() {
    let f = Folder::new();
    assert_eq!(f.write(3, 0, b"abc"), S::Done);
    assert_eq!(f.run(R::DiscardTemp { temp: TempId(3) }), S::Done);
    assert!(!f.temp_path(3).exists());
    assert_eq!(f.write(3, 3, b"late"), S::NotFound);
    assert!(!f.temp_path(3).exists());
    // Discarded before its first write reached the disk.
    assert_eq!(f.run(R::DiscardTemp { temp: TempId(5) }), S::Done);
    assert_eq!(f.write(5, 0, b"late"), S::NotFound);
    assert!(!f.temp_path(5).exists());
    // Committed into place.
    assert_eq!(f.put(4, "f", b"data", 6, NOW, Expect::Nothing), S::Done);
    assert_eq!(f.write(4, 0, b"late"), S::NotFound);
    assert!(!f.temp_path(4).exists());
    assert_eq!(fs::read(f.at("f")).unwrap(), b"data");
    // Bounded: the oldest ended temps are forgotten.
    for t in 100..100 + TEMPS_ENDED_MAX as u64 {
        assert_eq!(f.run(R::DiscardTemp { temp: TempId(t) }), S::Done);
    }
    assert_eq!(f.disk.temps().ended.len(), TEMPS_ENDED_MAX);
    assert_eq!(f.write(3, 0, b"much later"), S::Done);
    assert_eq!(f.write(100, 0, b"late"), S::NotFound);
}

/// A directory's set-group-ID and sticky bits are kept by `SetMode`, but a file a local user
/// swaps in for the directory between the step's last look and its `chmod` never gets them.
#[test]
fn a_file_swapped_in_for_a_directory_being_given_its_mode_gets_no_special_bits() {
    let mut f = Folder::new();
    fs::create_dir(f.at("d")).unwrap();
    fs::set_permissions(f.at("d"), fs::Permissions::from_mode(0o3770)).unwrap();
    let e = f.expect("d");
    f.disk.hook = Some(|root, at, path| {
        if at == "locked" {
            fs::remove_dir(root.join(path)).expect("rmdir");
            fs::write(root.join(path), b"a file now").expect("the swap");
        }
    });
    let r = f.run(R::SetMode {
        path: "d".into(),
        mode: 7,
        expect: e,
    });
    assert!(matches!(r, S::Done | S::Changed), "{r:?}");
    let mode = fs::metadata(f.at("d")).unwrap().mode();
    assert_eq!(mode & 0o7000, 0, "{mode:o}");
}

/// A commit whose rename fails (here its temporary file is gone; a directory made read-only,
/// say) leaves no copy in the trash: each retry kept another link to the old version, and
/// those pushed older versions out of the bounded trash.
#[test]
fn a_commit_that_fails_leaves_no_copy_in_the_trash() {
    let mut f = Folder::new();
    assert_eq!(f.put(1, "f", b"first", 6, NOW, Expect::Nothing), S::Done);
    let e = f.expect("f");
    f.disk.hook = Some(|root, at, _| {
        if at == "linked" {
            let tmp = root.join(RESERVED_DIR).join(TEMP_DIR);
            for entry in fs::read_dir(tmp).expect("the temporary folder") {
                fs::remove_file(entry.expect("an entry").path()).expect("removed");
            }
        }
    });
    for t in 2..5 {
        assert!(is_failed(&f.put(t, "f", b"second", 6, NOW, e)));
    }
    assert!(f.trash().is_empty(), "{:?}", f.trash());
    assert_eq!(fs::read(f.at("f")).expect("f"), b"first");
}

/// No step writes under a `.weft` at any depth: a nested shared folder's is its own.
#[test]
fn no_step_writes_under_a_nested_weft() {
    let f = Folder::new();
    fs::create_dir_all(f.at("inner/.weft")).unwrap();
    fs::write(f.at("inner/.weft/folder"), b"00aa\n").unwrap();
    assert!(is_failed(&f.put(
        1,
        "inner/.weft/folder",
        b"x",
        6,
        NOW,
        Expect::Nothing
    )));
    assert_eq!(fs::read(f.at("inner/.weft/folder")).unwrap(), b"00aa\n");
}

/// A rename over what a resolve replaces: done in one call, the replaced file kept in the
/// trash; refused as `Changed`, nothing moved, when the path no longer holds what it should
/// (or holds something where nothing should be); an empty directory in the way goes.
#[test]
fn a_rename_over_a_path_keeps_what_it_replaces_in_the_trash() {
    let f = Folder::new();
    fs::write(f.at("copy"), b"kept").unwrap();
    fs::write(f.at("doc"), b"replaced").unwrap();
    let (copy, doc) = (f.expect("copy"), f.expect("doc"));
    let rename = |expect, over| {
        f.run(R::Rename {
            from: "copy".into(),
            to: "doc".into(),
            expect,
            over,
        })
    };
    // A plain move refuses a taken path; a rename over the wrong content too.
    assert_eq!(rename(copy, Expect::Nothing), S::Changed);
    let Expect::Present { kind, mode, .. } = doc else {
        unreachable!("doc is a file")
    };
    let other = Expect::Present {
        kind,
        size: 3,
        mtime_ms: 0,
        mode,
    };
    assert_eq!(rename(copy, other), S::Changed);
    assert_eq!(fs::read(f.at("doc")).unwrap(), b"replaced");
    assert_eq!(fs::read(f.at("copy")).unwrap(), b"kept");
    assert_eq!(f.trash(), vec![]);

    assert_eq!(rename(copy, doc), S::Done);
    assert_eq!(fs::read(f.at("doc")).unwrap(), b"kept");
    assert!(!f.at("copy").exists());
    let trash = f.trash();
    assert_eq!(trash.len(), 1);
    assert_eq!(trash[0].1, b"replaced");

    // A directory in the way goes if empty, else the step fails and nothing moves.
    fs::write(f.at("copy"), b"again").unwrap();
    fs::create_dir(f.at("d")).unwrap();
    fs::write(f.at("d/inside"), b"x").unwrap();
    let (copy, d) = (f.expect("copy"), f.expect("d"));
    let over_d = || {
        f.run(R::Rename {
            from: "copy".into(),
            to: "d".into(),
            expect: copy,
            over: d,
        })
    };
    assert!(is_failed(&over_d()));
    assert_eq!(fs::read(f.at("copy")).unwrap(), b"again");
    // Kept only by what `(?d)` rules let go, as a removal of it would be: that goes.
    let (rules, errors) = IgnoreRules::parse("(?d)inside\n");
    assert!(errors.is_empty());
    f.disk.set_ignore_rules(rules);
    assert_eq!(over_d(), S::Done);
    assert!(!f.at("d/inside").exists());
    assert_eq!(fs::read(f.at("d")).unwrap(), b"again");
    assert_eq!(f.trash().len(), 1);
}

/// An editor's save (a new file renamed over the path) between the link of the file a
/// commit or a rename replaces into the trash and the step's own rename: nothing is
/// replaced, the save stays, and the link to the file checked goes (the save was lost, and
/// the trash held the old version).
#[test]
fn a_save_between_the_trash_link_and_the_replace_is_kept() {
    fn atomic_save(root: &Path, at: &str, path: &str) {
        if at == "kept" {
            let tmp = root.join(format!("{path}.saving"));
            fs::write(&tmp, SAVED).expect("the editor's temporary file");
            fs::rename(&tmp, root.join(path)).expect("the editor's rename");
        }
    }
    // A commit.
    let (mut f, e) = written_f("none");
    f.disk.hook = Some(atomic_save);
    assert_eq!(f.put(2, "f", b"a newer version", 6, NOW, e), S::Changed);
    assert_eq!(fs::read(f.at("f")).unwrap(), SAVED);
    assert!(f.trash().is_empty(), "{:?}", f.trash());
    // A resolve's rename over the path.
    let (mut f, e) = written_f("none");
    f.disk.hook = None;
    fs::write(f.at("copy"), b"the kept copy").unwrap();
    let copy = f.expect("copy");
    f.disk.hook = Some(atomic_save);
    let r = f.run(R::Rename {
        from: "copy".into(),
        to: "f".into(),
        expect: copy,
        over: e,
    });
    assert_eq!(r, S::Changed);
    assert_eq!(fs::read(f.at("f")).unwrap(), SAVED);
    assert_eq!(fs::read(f.at("copy")).unwrap(), b"the kept copy");
    assert!(f.trash().is_empty(), "{:?}", f.trash());
}

/// A save renamed over a committed file right after the commit's rename is not recorded in
/// the cache as the file committed: the scanner reads and reports it (it was taken for the
/// commit's, never reported, and later steps expected the commit's file).
#[test]
fn a_save_right_after_a_commit_is_left_to_the_scanner() {
    let mut f = Folder::new();
    f.disk.hook = Some(|root, at, path| {
        if at == "renamed" {
            let tmp = root.join(format!("{path}.saving"));
            fs::write(&tmp, SAVED).expect("the editor's temporary file");
            fs::rename(&tmp, root.join(path)).expect("the editor's rename");
        }
    });
    assert_eq!(
        f.put(1, "f", b"from a peer", 6, NOW, Expect::Nothing),
        S::Done
    );
    assert_eq!(fs::read(f.at("f")).unwrap(), SAVED);
    assert!(!f.disk.cache().lock().entries.contains_key("f"));
    // Without the race, the commit's file is recorded.
    f.disk.hook = None;
    assert_eq!(
        f.put(2, "g", b"from a peer", 6, NOW, Expect::Nothing),
        S::Done
    );
    assert!(f.disk.cache().lock().entries.contains_key("g"));
}

/// A step at a path whose cache entry only says the index expects something there (after a
/// crash the stored cache lacked it) does not make that entry the file's: it had no blocks,
/// and a later rename of the file was reported as a move of a file without them, which
/// every peer refused while taking the old path's deletion.
#[test]
fn a_step_never_takes_an_expected_only_entry_for_the_file() {
    let f = Folder::new();
    fs::write(f.at("f"), b"content").unwrap();
    let e = f.expect("f");
    let Expect::Present { size, .. } = e else {
        unreachable!("f is there")
    };
    let placeholder = crate::folder::cache::CachedEntry {
        kind: FileKind::File,
        size,
        mtime_ns: i128::MIN,
        ctime_ns: i128::MIN,
        inode: 0,
        mode: 6,
        target: String::new(),
        tier: 0,
        blocks: Vec::new(),
    };
    assert!(placeholder.is_expected_only());
    f.disk
        .cache()
        .lock()
        .entries
        .insert("f".into(), placeholder.clone());
    let set = f.run(R::SetMode {
        path: "f".into(),
        mode: 7,
        expect: e,
    });
    assert_eq!(set, S::Done);
    assert!(!f.disk.cache().lock().entries.contains_key("f"));
    // Nor does a rename carry it along.
    f.disk
        .cache()
        .lock()
        .entries
        .insert("f".into(), placeholder);
    let e = f.expect("f");
    let moved = f.run(R::Rename {
        from: "f".into(),
        to: "g".into(),
        expect: e,
        over: Expect::Nothing,
    });
    assert_eq!(moved, S::Done);
    let cache = f.disk.cache().lock();
    assert!(!cache.entries.contains_key("f") && !cache.entries.contains_key("g"));
}

/// A committed file whose time on disk is not the one it was given (a disk with coarser
/// times; here set again right after the rename) is not recorded as written: the scanner
/// reports it, so the engine learns the time the disk holds (it expected the one it asked
/// for, and its next step there was refused until a restart).
#[test]
fn a_commit_whose_time_did_not_take_is_left_to_the_scanner() {
    let mut f = Folder::new();
    f.disk.hook = Some(|root, at, path| {
        if at == "renamed" {
            let file = fs::File::options()
                .write(true)
                .open(root.join(path))
                .expect("the committed file");
            file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(2))
                .expect("a coarser time");
        }
    });
    assert_eq!(
        f.put(1, "f", b"from a peer", 6, NOW, Expect::Nothing),
        S::Done
    );
    assert!(!f.disk.cache().lock().entries.contains_key("f"));
}

/// A commit's time round-trips through the disk at any millisecond, before the epoch too: the
/// file is recorded as written (an entry dropped for every commit had the scanner hash every
/// fetched file again).
#[test]
fn a_commit_at_any_millisecond_is_recorded_as_written() {
    let f = Folder::new();
    for (t, mtime_ms) in [(1, NOW + 123), (2, -1_500), (3, 999)] {
        let path = format!("f{t}");
        assert_eq!(
            f.put(t, &path, b"from a peer", 6, mtime_ms, Expect::Nothing),
            S::Done
        );
        let cache = f.disk.cache().lock();
        let entry = cache.entries.get(&path).expect("recorded");
        assert_eq!(entry.mtime_ns.div_euclid(1_000_000), i128::from(mtime_ms));
    }
}
