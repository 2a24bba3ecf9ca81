//! The node's state blobs on disk: how both drivers carry out the engine's
//! [`HostRequest::LoadState`] and [`HostRequest::StoreState`].
//!
//! ```text
//! <state folder>/state/           owner-only (0700), created on the first store
//! <state folder>/state/<name>     one blob (0600); <name> is 1 to 64 of [a-z0-9-]
//! <state folder>/state/<name>.tmp a store under way (a crash may leave one; the next store
//!                                 of <name> replaces it)
//! ```
//!
//! A store is atomic and durable: the bytes go to `<name>.tmp`, which is flushed to the disk,
//! renamed over `<name>`, and the folder is flushed too, so that after a crash `<name>` holds
//! the old blob or the new one, whole. Every failure is answered with
//! [`HostResult::Failed`] and one line, never left unanswered; a node run without a state
//! folder (an embedded node, a benchmark) answers every request with `Failed("no state
//! folder")`.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use weft_engine::{HostRequest, HostResult};

/// The folder under the state folder that holds the blobs.
const BLOBS_DIR: &str = "state";

/// Where a node's state blobs go, if anywhere.
#[derive(Debug, Clone)]
pub struct Storage {
    /// `<state folder>/state`, or `None` without a state folder.
    dir: Option<PathBuf>,
}

impl Storage {
    /// The blobs of the node whose state folder is `state_folder` (`None`: it has none, and
    /// every request fails).
    pub fn new(state_folder: Option<&Path>) -> Storage {
        Storage {
            dir: state_folder.map(|f| f.join(BLOBS_DIR)),
        }
    }

    /// The folder the blobs go in, if the node has a state folder.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Carries out `request` (the file I/O is small: synchronously) and says what came of
    /// it. A request kind this driver does not know is answered with `Failed`, as the engine
    /// asks of a host that cannot carry one out.
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
        let path = self.path_of(name)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Stores `bytes` as the blob `name`, atomically and durably. The error is one line.
    pub fn store(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let path = self.path_of(name)?;
        let dir = path.parent().expect("a blob's path has its folder");
        let tmp = dir.join(format!("{name}.tmp"));
        let failed =
            |what: &str, p: &Path, e: io::Error| format!("cannot {what} {}: {e}", p.display());
        create_dir(dir).map_err(|e| failed("create", dir, e))?;
        write_synced(&tmp, bytes).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            failed("write", &tmp, e)
        })?;
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            failed("rename over", &path, e)
        })?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed("sync", dir, e))
    }

    /// The path of blob `name`, once the name and the state folder are known to be good.
    fn path_of(&self, name: &str) -> Result<PathBuf, String> {
        if !name_ok(name) {
            return Err(format!(
                "bad state blob name {name:?}: not 1 to {} of [a-z0-9-]",
                HostRequest::STATE_NAME_BYTES_MAX
            ));
        }
        let dir = self.dir.as_ref().ok_or("no state folder")?;
        Ok(dir.join(name))
    }
}

/// Whether `name` may name a blob (`HostRequest::is_valid_state_name`: never a path, `.`
/// or `..`, and never a `.tmp` file).
fn name_ok(name: &str) -> bool {
    HostRequest::is_valid_state_name(name)
}

/// Creates the blob folder owner-only if it is missing.
fn create_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file is in the way",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            // The mode above is under the umask; the folder is owner-only whatever it is.
            fs::set_permissions(dir, Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to a new owner-only file at `path` (replacing a stale one) and flushes it
/// to the disk.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    fn load(s: &Storage, name: &str) -> HostResult {
        s.carry_out(HostRequest::LoadState { name: name.into() })
    }

    fn store(s: &Storage, name: &str, bytes: &'static [u8]) -> HostResult {
        s.carry_out(HostRequest::StoreState {
            name: name.into(),
            bytes: Bytes::from_static(bytes),
        })
    }

    #[test]
    fn a_blob_never_stored_loads_as_none() {
        let folder = tempfile::tempdir().unwrap();
        let s = Storage::new(Some(folder.path()));
        assert_eq!(load(&s, "table"), HostResult::Loaded(None));
        // Loading creates nothing.
        assert!(!folder.path().join("state").exists());
    }

    #[test]
    fn a_stored_blob_loads_back() {
        let folder = tempfile::tempdir().unwrap();
        let s = Storage::new(Some(folder.path()));
        assert_eq!(store(&s, "table-1", b"hello"), HostResult::Stored);
        let bytes = Bytes::from_static(b"hello");
        assert_eq!(load(&s, "table-1"), HostResult::Loaded(Some(bytes)));
        assert_eq!(store(&s, "empty", b""), HostResult::Stored);
        assert_eq!(load(&s, "empty"), HostResult::Loaded(Some(Bytes::new())));
        let path = folder.path().join("state").join("table-1");
        assert_eq!(mode(&path), 0o600);
        // Another Storage over the same folder (a restarted node) reads it too.
        let again = Storage::new(Some(folder.path()));
        assert_eq!(
            again.load("table-1").unwrap().as_deref(),
            Some(&b"hello"[..])
        );
    }

    #[test]
    fn a_store_replaces_the_blob_whole_and_leaves_no_temporary() {
        let folder = tempfile::tempdir().unwrap();
        let s = Storage::new(Some(folder.path()));
        let dir = folder.path().join("state");
        let long: &'static [u8] = &[7; 100_000];
        assert_eq!(store(&s, "chord", long), HostResult::Stored);
        // A crash mid-store left a stale, half-written temporary behind.
        fs::write(dir.join("chord.tmp"), b"half").unwrap();
        assert_eq!(store(&s, "chord", b"short"), HostResult::Stored);
        assert_eq!(fs::read(dir.join("chord")).unwrap(), b"short");
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["chord"]);
        // The new content never overwrote the old in place: the file is a new inode, so a
        // reader holding the old one still sees it whole.
        let old = File::open(dir.join("chord")).unwrap();
        assert_eq!(store(&s, "chord", long), HostResult::Stored);
        let mut seen = Vec::new();
        io::Read::read_to_end(&mut &old, &mut seen).unwrap();
        assert_eq!(seen, b"short");
        assert_eq!(fs::read(dir.join("chord")).unwrap(), long);
    }

    #[test]
    fn bad_names_are_refused_without_touching_the_disk() {
        let folder = tempfile::tempdir().unwrap();
        let s = Storage::new(Some(folder.path()));
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
        assert!(!folder.path().join("state").exists());
        assert_eq!(store(&s, &"a".repeat(64), b"x"), HostResult::Stored);
    }

    #[test]
    fn the_folder_is_created_owner_only() {
        let folder = tempfile::tempdir().unwrap();
        let s = Storage::new(Some(folder.path()));
        assert_eq!(store(&s, "table", b"x"), HostResult::Stored);
        assert_eq!(mode(&folder.path().join("state")), 0o700);
    }

    #[test]
    fn without_a_state_folder_every_request_fails() {
        let s = Storage::new(None);
        let failed = HostResult::Failed("no state folder".into());
        assert_eq!(load(&s, "table"), failed);
        assert_eq!(store(&s, "table", b"x"), failed);
    }

    #[test]
    fn io_errors_are_one_line_failures() {
        let folder = tempfile::tempdir().unwrap();
        // A file where the blob folder should be.
        fs::write(folder.path().join("state"), b"").unwrap();
        let s = Storage::new(Some(folder.path()));
        match store(&s, "table", b"x") {
            HostResult::Failed(line) => assert!(!line.contains('\n'), "{line}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(load(&s, "table"), HostResult::Failed(_)));
    }
}
