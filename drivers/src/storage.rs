//! The node's store: one embedded ACID database per node (redb), and how both drivers carry
//! out the engine's [`HostRequest::LoadState`] and [`HostRequest::StoreState`] in it.
//!
//! ```text
//! <state folder>/store.redb   owner-only (0600): a redb database with two tables
//!   meta    &str -> u64       "format": the store format (STORE_FORMAT) that wrote it
//!   state   &str -> bytes     the engine's state blobs by name ("table", "chord", "peers", ...;
//!                             1 to 64 of [a-z0-9-])
//! ```
//!
//! Every `StoreState` is one write transaction, committed durably (fsync, two-phase commit)
//! before it is answered [`HostResult::Stored`]; after a crash the store holds the old blob
//! or the new one, whole. Every failure is answered with [`HostResult::Failed`] and one line,
//! never left unanswered.
//!
//! A store is opened with its integrity checked (every page's checksum), so a damaged file is
//! refused with [`StoreError::Damaged`] rather than trusted, and one written by a newer weft
//! (a format above [`STORE_FORMAT`]) with [`StoreError::Newer`]. Neither is ever overwritten
//! or recreated: the node does not start. The blobs a node kept before the store existed (one
//! file each in `<state folder>/state/`) are imported when the store is created, in the
//! transaction that creates it; that folder is left as it was, and read no more.

use std::cell::Cell;
use std::fs::{self, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, TableDefinition, TableError};
use weft_engine::{HostRequest, HostResult};

/// The store's file in the state folder.
pub const STORE_FILE: &str = "store.redb";

/// The store's file while it is created, in the state folder: renamed to [`STORE_FILE`] once
/// its format is recorded.
const STORE_FILE_NEW: &str = "store.redb.new";

/// The store format this weft writes, and the newest it reads. Raised when what the store
/// holds changes in a way an older weft would misread.
pub const STORE_FORMAT: u64 = 1;

/// What a store's memory cache may hold, bytes (redb's default is 1 GiB; a node's state is
/// small).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The table of facts about the store itself.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The key of the store format in [`META`].
const FORMAT_KEY: &str = "format";

/// The engine's state blobs, by name.
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// The folder of one-file-per-blob state that nodes kept before the store (imported once).
const LEGACY_BLOBS_DIR: &str = "state";

/// Why a store cannot be used; the node does not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store was written by a newer weft.
    #[error("{}: written by a newer weft (store format {found}, this one reads up to {STORE_FORMAT})", path.display())]
    Newer {
        /// The store's file.
        path: PathBuf,
        /// The format it says it is in.
        found: u64,
    },
    /// The file is not a store this weft can read (not redb, checksums that fail, no format).
    #[error("{}: damaged store: {why}; left untouched", path.display())]
    Damaged {
        /// The store's file.
        path: PathBuf,
        /// What is wrong with it, one line.
        why: String,
    },
    /// Creating or writing the store failed (the disk, permissions).
    #[error("{}: {why}", path.display())]
    Io {
        /// The store's file.
        path: PathBuf,
        /// What failed, one line.
        why: String,
    },
}

/// One node's open store. Only one process opens a store at a time (redb locks the file).
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Where the store of the node whose state folder is `state_folder` is.
pub fn store_path(state_folder: &Path) -> PathBuf {
    state_folder.join(STORE_FILE)
}

impl Store {
    /// Opens the store in `state_folder` if there is one, checking its integrity and format;
    /// `None` if there is none yet (nothing is created). A damaged store, or one of a newer
    /// format, is an error and is left as it is.
    pub fn open_existing(state_folder: &Path) -> Result<Option<Store>, StoreError> {
        let path = store_path(state_folder);
        match fs::metadata(&path) {
            // An empty file is a store whose creation never got as far as its first byte.
            Ok(meta) if meta.is_file() && meta.len() == 0 => return Ok(None),
            Ok(meta) if !meta.is_file() => {
                return Err(damaged(&path, "not a file"));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, "cannot read", &e)),
        }
        // First a look that cannot write: a store of a newer format, or without one, is
        // refused before the integrity check below (which commits) touches it.
        match peek_format(&path)? {
            Peek::Format(found) => check_format(&path, Some(found))?,
            Peek::NoFormat => check_format(&path, None)?,
            // A crash left it to be recovered: recover it, then look.
            Peek::NeedsRecovery => {}
        }
        let db = guarded(&path, || builder().open(&path))?;
        let store = Store { db, path };
        check_format(&store.path, store.format()?)?;
        Ok(Some(store))
    }

    /// The state folder the store lies in.
    pub fn state_folder(&self) -> Option<&Path> {
        self.path.parent()
    }

    /// Opens the store in `state_folder`, creating it (owner-only, with the blobs of an old
    /// `state/` folder imported) if there is none. The folder must exist.
    pub fn open_or_create(state_folder: &Path) -> Result<Store, StoreError> {
        if let Some(store) = Store::open_existing(state_folder)? {
            return Ok(store);
        }
        // Made under another name and renamed into place, the rename synced, once its format
        // is recorded: a kill while it was made (the file grown, its header, the format's
        // commit) left a store file that is neither absent nor a store, and every later
        // start refused it as damaged. One such a kill left under the other name goes first.
        let path = store_path(state_folder);
        let new = state_folder.join(STORE_FILE_NEW);
        match fs::remove_file(&new) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_error(&new, "cannot remove", &e));
            }
            _ => {}
        }
        let db = guarded(&new, || builder().create(&new))?;
        fs::set_permissions(&new, Permissions::from_mode(0o600))
            .map_err(|e| io_error(&new, "cannot make owner-only", &e))?;
        let store = Store { db, path: new };
        let imported = store.initialize(&state_folder.join(LEGACY_BLOBS_DIR))?;
        let Store { db, path: new } = store;
        fs::rename(&new, &path).map_err(|e| io_error(&path, "cannot put in place", &e))?;
        fs::File::open(state_folder)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(state_folder, "cannot sync", &e))?;
        let store = Store { db, path };
        if imported > 0 {
            tracing::info!(
                "imported {imported} state blob(s) from {} into {}",
                state_folder.join(LEGACY_BLOBS_DIR).display(),
                store.path.display()
            );
        }
        Ok(store)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded store format, if any.
    fn format(&self) -> Result<Option<u64>, StoreError> {
        read_format(&self.path, &self.db)
    }

    /// Records the format in a new store and imports the blob files of `legacy` (if it
    /// exists), all in one transaction; how many blobs were imported.
    fn initialize(&self, legacy: &Path) -> Result<usize, StoreError> {
        let blobs = legacy_blobs(legacy)?;
        let failed = |e: &dyn std::fmt::Display| io_error(&self.path, "cannot initialize", e);
        let mut txn = self.write().map_err(|e| failed(&e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| failed(&e))?;
            meta.insert(FORMAT_KEY, STORE_FORMAT)
                .map_err(|e| failed(&e))?;
            let mut table = txn.open_table(BLOBS).map_err(|e| failed(&e))?;
            for (name, bytes) in &blobs {
                table
                    .insert(name.as_str(), bytes.as_slice())
                    .map_err(|e| failed(&e))?;
            }
        }
        txn.set_durability(Durability::Immediate)
            .map_err(|e| failed(&e))?;
        txn.commit().map_err(|e| failed(&e))?;
        Ok(blobs.len())
    }

    /// A write transaction committed durably in two phases with its allocator state (so an
    /// intact file's primary commit slot is always valid, opening never has to roll one
    /// back, and a cleanly committed store can be read without being written).
    fn write(&self) -> Result<redb::WriteTransaction, String> {
        let mut txn = self.db.begin_write().map_err(|e| e.to_string())?;
        txn.set_quick_repair(true);
        Ok(txn)
    }

    /// Carries out `request` (small writes: synchronously) and says what came of it. A
    /// request kind this driver does not know is answered with `Failed`, as the engine asks of
    /// a host that cannot carry one out.
    pub fn carry_out(&self, request: HostRequest) -> HostResult {
        match request {
            HostRequest::LoadState { name } => match self.load(&name) {
                Ok(bytes) => HostResult::Loaded(bytes),
                Err(e) => HostResult::Failed(e),
            },
            HostRequest::StoreState { name, bytes } => match self.store(&name, &bytes) {
                Ok(()) => HostResult::Stored,
                Err(e) => HostResult::Failed(e),
            },
            other => HostResult::Failed(format!("this driver cannot carry out {other:?}")),
        }
    }

    /// The blob `name`, or `None` if it was never stored. The error is one line.
    pub fn load(&self, name: &str) -> Result<Option<Bytes>, String> {
        check_name(name)?;
        let failed = |e: &dyn std::fmt::Display| {
            format!("cannot read {name} from {}: {e}", self.path.display())
        };
        let read = self.db.begin_read().map_err(|e| failed(&e))?;
        let table = match read.open_table(BLOBS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(failed(&e)),
        };
        let value = table.get(name).map_err(|e| failed(&e))?;
        Ok(value.map(|v| Bytes::copy_from_slice(v.value())))
    }

    /// Forgets the blobs `names` (those never stored are skipped), in one durable transaction
    /// if any was stored (else none is committed); whether any was. The error is one line.
    pub fn remove(&self, names: &[&str]) -> Result<bool, String> {
        for name in names {
            check_name(name)?;
        }
        let failed = |e: &dyn std::fmt::Display| {
            format!("cannot remove {names:?} from {}: {e}", self.path.display())
        };
        let txn = self.write().map_err(|e| failed(&e))?;
        let mut stored = false;
        {
            let mut table = txn.open_table(BLOBS).map_err(|e| failed(&e))?;
            for name in names {
                stored |= table.remove(*name).map_err(|e| failed(&e))?.is_some();
            }
        }
        if stored {
            txn.commit().map_err(|e| failed(&e))?;
        } else {
            txn.abort().map_err(|e| failed(&e))?;
        }
        Ok(stored)
    }

    /// Stores `bytes` as the blob `name` in one durable transaction. The error is one line.
    pub fn store(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        check_name(name)?;
        let failed = |e: &dyn std::fmt::Display| {
            format!("cannot store {name} in {}: {e}", self.path.display())
        };
        let txn = self.write().map_err(|e| failed(&e))?;
        {
            let mut table = txn.open_table(BLOBS).map_err(|e| failed(&e))?;
            table.insert(name, bytes).map_err(|e| failed(&e))?;
        }
        txn.commit().map_err(|e| failed(&e))
    }
}

/// How every store is opened: a small cache, and every page's checksum verified (a damaged
/// file is refused rather than trusted).
fn builder() -> redb::Builder {
    let mut builder = Database::builder();
    builder
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true);
    builder
}

thread_local! {
    /// Set while [`quietly`] runs on this thread.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, a read of a file that may be damaged, catching a panic of the database library
/// (the read-only look trusts the file's pages) without printing it: the caller turns it into
/// one line. Other threads' panics are printed as before.
fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result
}

/// What a look at a store without writing it found.
enum Peek {
    /// The store format it records.
    Format(u64),
    /// It records none.
    NoFormat,
    /// A crash left it to be recovered before it can be read.
    NeedsRecovery,
}

/// Reads the store format of the store at `path` without writing to it.
fn peek_format(path: &Path) -> Result<Peek, StoreError> {
    let opened = quietly(|| {
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        builder.open_read_only(path)
    });
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::RepairAborted)) => return Ok(Peek::NeedsRecovery),
        Ok(Err(e)) => return Err(open_error(path, e)),
        Err(_) => return Err(damaged(path, "the database library could not read it")),
    };
    let read = quietly(|| read_format(path, &db))
        .unwrap_or_else(|_| Err(damaged(path, "the database library could not read it")))?;
    Ok(read.map_or(Peek::NoFormat, Peek::Format))
}

/// The store format recorded in `db`, if any.
fn read_format(path: &Path, db: &impl ReadableDatabase) -> Result<Option<u64>, StoreError> {
    let read = db.begin_read().map_err(|e| damaged(path, e))?;
    match read.open_table(META) {
        Ok(meta) => Ok(meta
            .get(FORMAT_KEY)
            .map_err(|e| damaged(path, e))?
            .map(|v| v.value())),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(damaged(path, e)),
    }
}

/// Refuses a store of a newer format, or of none.
fn check_format(path: &Path, format: Option<u64>) -> Result<(), StoreError> {
    match format {
        Some(found) if found > STORE_FORMAT => Err(StoreError::Newer {
            path: path.to_owned(),
            found,
        }),
        Some(_) => Ok(()),
        None => Err(damaged(path, "no store format recorded")),
    }
}

/// Runs redb's open or create. Its errors, and a panic on a file damaged in a way its
/// integrity check does not catch, become [`StoreError::Damaged`] (or `Io` when the OS
/// refused).
fn guarded(
    path: &Path,
    open: impl FnOnce() -> Result<Database, redb::DatabaseError>,
) -> Result<Database, StoreError> {
    match quietly(open) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(open_error(path, e)),
        Err(_) => Err(damaged(path, "the database library could not read it")),
    }
}

/// What a failed open of the store at `path` means: the OS refused (`Io`), another process
/// holds it, or the file is not a store this weft can read (`Damaged`).
fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() != io::ErrorKind::InvalidData =>
        {
            io_error(path, "cannot open", &e)
        }
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Io {
            path: path.to_owned(),
            why: "in use by another process".into(),
        },
        e => damaged(path, one_line(&e.to_string())),
    }
}

/// The valid-named blob files of the old `state/` folder, by name (none if it is missing).
fn legacy_blobs(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(dir, "cannot import from", &e)),
    };
    let mut blobs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, "cannot import from", &e))?;
        // `<name>.tmp` files (a store under way when the node stopped) are not valid names.
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !HostRequest::is_valid_state_name(&name) || !entry.path().is_file() {
            continue;
        }
        let bytes =
            fs::read(entry.path()).map_err(|e| io_error(&entry.path(), "cannot import", &e))?;
        blobs.push((name, bytes));
    }
    blobs.sort();
    Ok(blobs)
}

/// Refuses a name that may not name a blob (`HostRequest::is_valid_state_name`).
fn check_name(name: &str) -> Result<(), String> {
    if HostRequest::is_valid_state_name(name) {
        Ok(())
    } else {
        Err(format!(
            "bad state blob name {name:?}: not 1 to {} of [a-z0-9-]",
            HostRequest::STATE_NAME_BYTES_MAX
        ))
    }
}

fn damaged(path: &Path, why: impl std::fmt::Display) -> StoreError {
    StoreError::Damaged {
        path: path.to_owned(),
        why: one_line(&why.to_string()),
    }
}

fn io_error(path: &Path, what: &str, e: &dyn std::fmt::Display) -> StoreError {
    StoreError::Io {
        path: path.to_owned(),
        why: one_line(&format!("{what}: {e}")),
    }
}

fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or("unknown error").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(s: &Store, name: &str) -> HostResult {
        s.carry_out(HostRequest::LoadState { name: name.into() })
    }

    fn store(s: &Store, name: &str, bytes: &'static [u8]) -> HostResult {
        s.carry_out(HostRequest::StoreState {
            name: name.into(),
            bytes: Bytes::from_static(bytes),
        })
    }

    #[test]
    fn a_blob_never_stored_loads_as_none_and_nothing_is_created_before_asked() {
        let folder = tempfile::tempdir().unwrap();
        assert!(Store::open_existing(folder.path()).unwrap().is_none());
        assert!(!folder.path().join(STORE_FILE).exists());
        let s = Store::open_or_create(folder.path()).unwrap();
        assert_eq!(load(&s, "table"), HostResult::Loaded(None));
    }

    #[test]
    fn stored_blobs_load_back_after_a_reopen() {
        let folder = tempfile::tempdir().unwrap();
        let s = Store::open_or_create(folder.path()).unwrap();
        assert_eq!(store(&s, "table-1", b"hello"), HostResult::Stored);
        assert_eq!(store(&s, "empty", b""), HostResult::Stored);
        assert_eq!(store(&s, "chord", &[7; 100_000]), HostResult::Stored);
        assert_eq!(store(&s, "chord", b"short"), HostResult::Stored);
        let bytes = Bytes::from_static(b"hello");
        assert_eq!(load(&s, "table-1"), HostResult::Loaded(Some(bytes)));
        assert_eq!(load(&s, "empty"), HostResult::Loaded(Some(Bytes::new())));
        drop(s);
        let mode = fs::metadata(folder.path().join(STORE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A restarted node reads what was committed.
        let again = Store::open_existing(folder.path()).unwrap().unwrap();
        assert_eq!(
            again.load("table-1").unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(again.load("chord").unwrap().as_deref(), Some(&b"short"[..]));
        assert_eq!(again.load("never").unwrap(), None);
    }

    #[test]
    fn removed_blobs_are_gone_after_a_reopen_and_the_others_stay() {
        let folder = tempfile::tempdir().unwrap();
        let s = Store::open_or_create(folder.path()).unwrap();
        for name in ["a", "b", "c"] {
            s.store(name, name.as_bytes()).unwrap();
        }
        assert_eq!(s.remove(&["a", "never"]), Ok(true));
        assert_eq!(
            s.remove(&["a", "never"]),
            Ok(false),
            "nothing left to remove"
        );
        drop(s);
        let s = Store::open_existing(folder.path()).unwrap().unwrap();
        assert_eq!(s.load("a").unwrap(), None);
        assert_eq!(s.load("b").unwrap().as_deref(), Some(&b"b"[..]));
        assert!(
            s.remove(&["c", "no/slash"]).is_err(),
            "a bad name: nothing removed"
        );
        assert_eq!(s.load("c").unwrap().as_deref(), Some(&b"c"[..]));
    }

    #[test]
    fn bad_names_are_refused_in_one_line() {
        let folder = tempfile::tempdir().unwrap();
        let s = Store::open_or_create(folder.path()).unwrap();
        let long = "a".repeat(65);
        for bad in [
            "", "..", ".", "a/b", "../key", "Key", "a.tmp", "a b", "é", "a\0", &long,
        ] {
            assert!(
                matches!(load(&s, bad), HostResult::Failed(_)),
                "load {bad:?}"
            );
            match store(&s, bad, b"x") {
                HostResult::Failed(line) => assert!(!line.contains('\n'), "{line}"),
                other => panic!("store {bad:?}: {other:?}"),
            }
        }
        assert_eq!(store(&s, &"a".repeat(64), b"x"), HostResult::Stored);
    }

    /// Corrupts `path` at `offset` and checks that opening refuses it, in one line naming
    /// the damage, and leaves every byte as it was.
    fn refused_untouched(folder: &Path, offset: usize) {
        let path = folder.join(STORE_FILE);
        let mut bytes = fs::read(&path).unwrap();
        for b in &mut bytes[offset..offset + 64] {
            *b ^= 0x5a;
        }
        fs::write(&path, &bytes).unwrap();
        for _ in 0..2 {
            let e = Store::open_existing(folder).unwrap_err();
            let line = e.to_string();
            assert!(matches!(e, StoreError::Damaged { .. }), "{line}");
            assert!(line.contains("damaged store"), "{line}");
            assert!(line.ends_with("; left untouched"), "{line}");
            assert!(!line.contains('\n'), "{line}");
            let e = Store::open_or_create(folder).unwrap_err();
            assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
            assert!(
                fs::read(&path).unwrap() == bytes,
                "the store was written to"
            );
        }
    }

    fn filled_store(folder: &Path) {
        let s = Store::open_or_create(folder).unwrap();
        for i in 0..20u8 {
            let name = format!("blob-{i}");
            s.store(&name, &vec![i; 3000]).unwrap();
        }
    }

    #[test]
    fn a_store_with_a_damaged_header_is_refused_and_left_untouched() {
        let folder = tempfile::tempdir().unwrap();
        filled_store(folder.path());
        refused_untouched(folder.path(), 0);
    }

    #[test]
    fn a_store_with_damaged_pages_is_refused_and_left_untouched() {
        let folder = tempfile::tempdir().unwrap();
        filled_store(folder.path());
        let bytes = fs::read(folder.path().join(STORE_FILE)).unwrap();
        // The pages that hold blobs 3 and 11 (3000 bytes of 3, of 11).
        let offsets = [3u8, 11].map(|i| {
            bytes
                .windows(3000)
                .position(|w| w.iter().all(|&b| b == i))
                .expect("the blob is in the file")
                + 1000
        });
        for offset in offsets {
            let copy = tempfile::tempdir().unwrap();
            fs::copy(folder.path().join(STORE_FILE), copy.path().join(STORE_FILE)).unwrap();
            refused_untouched(copy.path(), offset);
        }
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_and_left_untouched() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join(STORE_FILE);
        fs::write(&path, b"not a database at all\n").unwrap();
        let e = Store::open_or_create(folder.path()).unwrap_err();
        assert!(matches!(e, StoreError::Damaged { .. }), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"not a database at all\n");
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused_and_left_untouched() {
        let folder = tempfile::tempdir().unwrap();
        {
            let s = Store::open_or_create(folder.path()).unwrap();
            s.store("table", b"x").unwrap();
            let txn = s.write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(FORMAT_KEY, STORE_FORMAT + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let path = folder.path().join(STORE_FILE);
        let bytes = fs::read(&path).unwrap();
        let e = Store::open_or_create(folder.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: written by a newer weft (store format {}, this one reads up to {STORE_FORMAT})",
                path.display(),
                STORE_FORMAT + 1
            )
        );
        assert!(
            fs::read(&path).unwrap() == bytes,
            "the store was written to"
        );
    }

    #[test]
    fn a_redb_file_without_a_format_is_refused() {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join(STORE_FILE);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(BLOBS)
                .unwrap()
                .insert("x", &b"y"[..])
                .unwrap();
            txn.commit().unwrap();
        }
        let e = Store::open_existing(folder.path()).unwrap_err();
        assert!(e.to_string().contains("no store format recorded"), "{e}");
    }

    #[test]
    fn the_blobs_of_an_old_state_folder_are_imported_once() {
        let folder = tempfile::tempdir().unwrap();
        let old = folder.path().join(LEGACY_BLOBS_DIR);
        fs::create_dir(&old).unwrap();
        fs::write(old.join("table"), b"old table").unwrap();
        fs::write(old.join("chord"), b"old chord").unwrap();
        // A store that was under way when the old node stopped, and a stray file.
        fs::write(old.join("table.tmp"), b"half").unwrap();
        fs::write(old.join("README"), b"not a blob name").unwrap();
        let s = Store::open_or_create(folder.path()).unwrap();
        assert_eq!(s.load("table").unwrap().as_deref(), Some(&b"old table"[..]));
        assert_eq!(s.load("chord").unwrap().as_deref(), Some(&b"old chord"[..]));
        s.store("table", b"new table").unwrap();
        drop(s);
        // Once: the store exists now, and the old folder (left as it was) is read no more.
        assert_eq!(fs::read(old.join("table")).unwrap(), b"old table");
        let s = Store::open_or_create(folder.path()).unwrap();
        assert_eq!(s.load("table").unwrap().as_deref(), Some(&b"new table"[..]));
    }

    /// A store is made under another name and renamed into place once its format is
    /// recorded: a creation killed partway leaves that file alone, which the next start
    /// replaces (the store file, half made, was refused as damaged for good).
    #[test]
    fn a_store_creation_killed_partway_leaves_nothing_a_start_refuses() {
        let folder = tempfile::tempdir().unwrap();
        fs::write(folder.path().join(STORE_FILE_NEW), b"half a store header").unwrap();
        assert!(Store::open_existing(folder.path()).unwrap().is_none());
        let s = Store::open_or_create(folder.path()).unwrap();
        s.store("table", b"x").unwrap();
        assert_eq!(s.path(), folder.path().join(STORE_FILE));
        assert!(!folder.path().join(STORE_FILE_NEW).exists());
        drop(s);
        let s = Store::open_existing(folder.path())
            .unwrap()
            .expect("the store");
        assert_eq!(s.load("table").unwrap().as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn an_empty_store_file_is_a_store_not_yet_created() {
        let folder = tempfile::tempdir().unwrap();
        fs::write(folder.path().join(STORE_FILE), b"").unwrap();
        assert!(Store::open_existing(folder.path()).unwrap().is_none());
        let s = Store::open_or_create(folder.path()).unwrap();
        s.store("table", b"x").unwrap();
    }

    #[test]
    fn a_store_in_use_is_refused_in_one_line() {
        let folder = tempfile::tempdir().unwrap();
        let _first = Store::open_or_create(folder.path()).unwrap();
        let e = Store::open_existing(folder.path()).unwrap_err();
        assert!(e.to_string().contains("in use by another process"), "{e}");
    }

    #[test]
    fn damage_anywhere_is_refused_untouched_or_harmless() {
        let folder = tempfile::tempdir().unwrap();
        filled_store(folder.path());
        let bytes = fs::read(folder.path().join(STORE_FILE)).unwrap();
        let (mut refused, mut harmless) = (0, 0);
        for offset in (0..bytes.len() - 64).step_by(1024) {
            let copy = tempfile::tempdir().unwrap();
            let path = copy.path().join(STORE_FILE);
            let mut damaged = bytes.clone();
            for b in &mut damaged[offset..offset + 64] {
                *b ^= 0x5a;
            }
            fs::write(&path, &damaged).unwrap();
            match Store::open_existing(copy.path()) {
                Err(StoreError::Damaged { why, .. }) => {
                    assert!(!why.contains('\n'), "{why}");
                    assert!(fs::read(&path).unwrap() == damaged, "written at {offset}");
                    refused += 1;
                }
                // Damage where nothing lives: every blob reads back whole.
                Ok(Some(store)) => {
                    for i in 0..20u8 {
                        let blob = store.load(&format!("blob-{i}")).unwrap();
                        assert_eq!(blob.as_deref(), Some(&vec![i; 3000][..]), "at {offset}");
                    }
                    harmless += 1;
                }
                other => panic!("damage at {offset}: {other:?}"),
            }
        }
        assert!(
            refused > 0 && harmless > 0,
            "{refused} refused, {harmless} harmless"
        );
    }
}
