//! The state folder: where a node keeps its secret key, incarnation, store and config, and
//! where its control socket lives. The folder is owner-only (0700), its files too (0600).
//!
//! ```text
//! <state>/key           the ed25519 secret key: 64 lowercase hex digits and a newline
//! <state>/incarnation   the last incarnation started, in decimal and a newline
//! <state>/store.redb    the node's store: the engine's state (see `storage`)
//! <state>/store.redb.new  the store while it is first made, renamed to store.redb once made
//! <state>/config.toml   defaults for `weft node`'s flags, written by hand (see `cli::config`)
//! <state>/control.sock  the running node's control socket (see `control`)
//! <state>/node.log      the log of a node started with `--detach`
//! <state>/lock          held (flock) by the one process that runs, sets up or removes it
//! <state>/state/        state blobs of a weft before the store (imported into it once)
//! ```
//!
//! Starting a node reads everything first ([`read_key`], [`read_incarnation`]) and writes
//! only once nothing else can fail ([`StateDir::open`], [`StateDir::write_key`],
//! [`StateDir::write_incarnation`]), so a start that fails changes nothing.
//!
//! Whatever runs a node on the folder, writes its set-up or takes it away holds its
//! [`StateLock`] meanwhile, so two such commands at once never remove or overwrite each
//! other's state: the second is told the folder is busy.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

use crate::small_file;

const KEY_FILE: &str = "key";
const INCARNATION_FILE: &str = "incarnation";
const SOCKET_FILE: &str = "control.sock";
const LOCK_FILE: &str = "lock";

/// How many times taking a lock is tried when the lock file it locked was removed meanwhile
/// (by the holder that was taking its folder away).
const LOCK_ATTEMPTS: usize = 3;

/// A state folder problem, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file-system call failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The key file is not 64 hex digits.
    #[error("{0}: not a key (expected 64 hex digits)")]
    BadKey(PathBuf),
    /// The key file can be read by other users.
    #[error("{path}: readable by other users (mode {mode:o}); run `chmod 600` on it")]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The incarnation file is not a decimal number.
    #[error("{0}: not an incarnation number")]
    BadIncarnation(PathBuf),
    /// The last incarnation is the largest there is: no later one can be started.
    #[error("{0}: the last incarnation ({max}) was started; no later one can be (this node needs a new identity: weft leave, then join again)", max = u64::MAX)]
    IncarnationsUsedUp(PathBuf),
    /// Neither `WEFT_HOME` nor `HOME` is set, so there is no default folder.
    #[error("no state folder: set WEFT_HOME or HOME, or pass --state")]
    NoHome,
    /// The path is there but is not a folder.
    #[error("{0}: not a folder")]
    NotAFolder(PathBuf),
    /// The OS random source failed.
    #[error("cannot generate a key: {0}")]
    Random(rand_core::Error),
    /// Another process holds the folder's [`StateLock`].
    #[error(
        "a node is already running with state folder {0} (or a weft create, join or leave of it is under way)"
    )]
    Busy(PathBuf),
}

/// The lock of a state folder (`<state>/lock`, an exclusive `flock`), held while a process
/// runs the folder's node, writes its set-up or takes it away; the OS lets it go when the
/// process ends however it ends. Dropping it gives it up, and removes the folder again if
/// taking the lock created it and nothing else was put in it since.
#[derive(Debug)]
pub struct StateLock {
    file: fs::File,
    path: PathBuf,
    created: bool,
}

impl StateLock {
    /// Takes the lock of the state folder `path`, creating the folder (owner-only, and its
    /// parents) if it is absent. [`StateError::Busy`] if another process holds it.
    pub fn take(path: &Path) -> Result<StateLock, StateError> {
        let lock_path = path.join(LOCK_FILE);
        for _ in 0..LOCK_ATTEMPTS {
            let created = create_folder(path)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&lock_path)
                .map_err(io_err(&lock_path))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(StateError::Busy(path.to_path_buf()))
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
            }
            // A holder taking the folder away removes the file it locked: a lock on that
            // file is no lock on the folder, so the name must still lead to the file locked.
            let held = file.metadata().map_err(io_err(&lock_path))?;
            let still_named = fs::symlink_metadata(&lock_path)
                .is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino());
            if still_named {
                return Ok(StateLock {
                    file,
                    path: path.to_path_buf(),
                    created,
                });
            }
        }
        Err(StateError::Busy(path.to_path_buf()))
    }

    /// The state folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether taking the lock created the folder (it was absent).
    pub fn created(&self) -> bool {
        self.created
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        // Removed only while it holds nothing but the lock file (a start that failed before
        // writing), and before the lock is let go.
        let only_lock = fs::read_dir(&self.path).is_ok_and(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
                .is_ok_and(|names| names == [std::ffi::OsString::from(LOCK_FILE)])
        });
        if only_lock {
            let _ = fs::remove_file(self.path.join(LOCK_FILE));
            let _ = fs::remove_dir(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// An opened (and, if new, created) state folder.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

/// The default state folder of network `name`: `$WEFT_HOME/<name>`, else `$HOME/.weft/<name>`.
pub fn default_path(name: &str) -> Result<PathBuf, StateError> {
    if let Some(home) = std::env::var_os("WEFT_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(home).join(name));
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty());
    home.map(|h| PathBuf::from(h).join(".weft").join(name))
        .ok_or(StateError::NoHome)
}

/// weft's home, the folder of every network's default state folder: `$WEFT_HOME`, else
/// `~/.weft`; `None` without either variable.
pub fn weft_home() -> Option<PathBuf> {
    default_path("x").ok()?.parent().map(Path::to_path_buf)
}

/// weft's own folders a shared folder must keep apart from (`folder::apart`): the node's
/// state folder `state`, and weft's home whatever `state` is (another network's state folder
/// is there).
pub fn own_folders(state: &Path) -> Vec<PathBuf> {
    let mut own = vec![state.to_path_buf()];
    own.extend(weft_home());
    own
}

/// Where the control socket of the node using `state` is, without creating anything.
pub fn socket_path(state: &Path) -> PathBuf {
    state.join(SOCKET_FILE)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether the state folder at `path` exists (a file there is an error).
pub fn folder_exists(path: &Path) -> Result<bool, StateError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(true),
        Ok(_) => Err(StateError::NotAFolder(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StateError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The secret key in the state folder at `path`, if it has one (nothing is created).
pub fn read_key(path: &Path) -> Result<Option<[u8; 32]>, StateError> {
    let path = path.join(KEY_FILE);
    match fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(StateError::KeyExposed { path, mode });
            }
            let text = small_file::read_text(&path, small_file::LINE_FILE_BYTES_MAX)
                .map_err(io_err(&path))?;
            parse_key(text.trim())
                .map(Some)
                .ok_or(StateError::BadKey(path))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Io { path, source: e }),
    }
}

/// Removes the state folder `state` (`weft leave`): renamed first, in one step, to a
/// hidden sibling (`.NAME.left`, one an earlier interrupted leave left removed first) and the
/// rename made durable, then removed. Removed in place, a kill partway could leave the store
/// without the key, over which the next start would make a new identity.
pub fn remove_state_folder(state: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (state.parent(), state.file_name()) else {
        return fs::remove_dir_all(state);
    };
    // A one-part relative path's parent is "": the working directory.
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let mut hidden = std::ffi::OsString::from(".");
    hidden.push(name);
    hidden.push(".left");
    let gone = parent.join(hidden);
    match fs::remove_dir_all(&gone) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::rename(state, &gone)?;
    sync_dir(parent)?;
    fs::remove_dir_all(&gone)
}

/// A new secret key from the OS random source.
pub fn generate_key() -> Result<[u8; 32], StateError> {
    let mut key = [0u8; 32];
    OsRng.try_fill_bytes(&mut key).map_err(StateError::Random)?;
    Ok(key)
}

/// The last incarnation started from the state folder at `path` (0 if none).
pub fn read_incarnation(path: &Path) -> Result<u64, StateError> {
    let path = path.join(INCARNATION_FILE);
    match small_file::read_text(&path, small_file::LINE_FILE_BYTES_MAX) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| StateError::BadIncarnation(path.clone())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StateError::Io { path, source: e }),
    }
}

/// Creates the folder `path` owner-only (and its parents) if it is absent: whether this call
/// created it.
fn create_folder(path: &Path) -> Result<bool, StateError> {
    if folder_exists(path)? {
        return Ok(false);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err(parent))?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The incarnation after `last`.
pub fn next_incarnation(path: &Path, last: u64) -> Result<u64, StateError> {
    last.checked_add(1)
        .ok_or_else(|| StateError::IncarnationsUsedUp(path.join(INCARNATION_FILE)))
}

impl StateDir {
    /// Opens the folder at `path`, creating it (and its parents) if needed, and makes it
    /// owner-only. A file at `path` is [`StateError::NotAFolder`].
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        folder_exists(path)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io_err(path))?;
        fs::set_permissions(path, Permissions::from_mode(0o700)).map_err(io_err(path))?;
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the control socket goes.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.path)
    }

    /// Writes a new node's secret key (there must be none yet), whole or not at all.
    pub fn write_key(&self, key: &[u8; 32]) -> Result<(), StateError> {
        let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.path.join(KEY_FILE);
        create_whole(&path, format!("{text}\n").as_bytes()).map_err(io_err(&path))
    }

    /// Records `incarnation` as the last one started.
    pub fn write_incarnation(&self, incarnation: u64) -> Result<(), StateError> {
        self.replace(INCARNATION_FILE, format!("{incarnation}\n").as_bytes())
    }

    /// Replaces the folder's file `name` with `bytes` atomically and owner-only: a new file
    /// written and synced, then renamed over the old one (a crash leaves one or the other).
    pub fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.path.join(name);
        let tmp = self.path.join(format!("{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        write_new(&tmp, bytes)?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        // The rename itself is made durable: without it a power loss may bring the old file
        // back (an incarnation used twice).
        sync_dir(&self.path).map_err(io_err(&self.path))
    }
}

/// Creates `path` owner-only holding `bytes`, whole or not at all: written and synced under a
/// temporary name, then linked to `path` (an error if `path` exists, as `create_new`), the
/// folder synced. A failed write (a full disk) or a crash leaves no partial file at `path`,
/// which every later start would refuse.
pub(crate) fn create_whole(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path",
        ));
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&tmp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    written?;
    sync_dir(dir)
}

/// Syncs the directory `dir` (a rename or a new name in it made durable).
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Creates `path` owner-only, writes `bytes` and syncs it.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

fn parse_key(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_written_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net");
        assert_eq!(read_key(&path).unwrap(), None);
        let state = StateDir::open(&path).unwrap();
        let key = generate_key().unwrap();
        state.write_key(&key).unwrap();
        assert_eq!(read_key(&path).unwrap(), Some(key));
        assert!(state.write_key(&key).is_err(), "a key is never replaced");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state.path().join(KEY_FILE)), 0o600);
        assert_eq!(mode(state.path()), 0o700);
        // Written under a temporary name and linked: nothing else is left in the folder.
        let names: Vec<String> = fs::read_dir(state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [KEY_FILE]);
    }

    /// A state folder goes in one step: renamed to `.NAME.left`, then removed; what an
    /// earlier leave killed partway left there goes first.
    #[test]
    fn a_state_folder_is_renamed_away_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net");
        let state = StateDir::open(&path).unwrap();
        state.write_key(&generate_key().unwrap()).unwrap();
        let left = dir.path().join(".net.left");
        fs::create_dir_all(left.join("half")).unwrap();
        fs::write(left.join("half/store.redb"), b"half removed").unwrap();
        fs::write(dir.path().join("other"), b"kept").unwrap();
        remove_state_folder(&path).unwrap();
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["other"]);
    }

    /// A state file that is not a small regular file is refused at once: a FIFO would hang
    /// the start, `/dev/zero` would take memory without bound.
    #[test]
    fn a_state_file_that_is_not_a_small_regular_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join(INCARNATION_FILE);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        assert!(read_incarnation(dir.path()).is_err());
        fs::remove_file(&fifo).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &fifo).unwrap();
        assert!(read_incarnation(dir.path()).is_err());
        let key = dir.path().join(KEY_FILE);
        fs::write(&key, "0".repeat(100_000)).unwrap();
        fs::set_permissions(&key, Permissions::from_mode(0o600)).unwrap();
        assert!(read_key(dir.path()).is_err());
    }

    #[test]
    fn incarnation_is_read_and_written_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_incarnation(dir.path()).unwrap(), 0);
        let state = StateDir::open(dir.path()).unwrap();
        state.write_incarnation(1).unwrap();
        state.write_incarnation(2).unwrap();
        assert_eq!(read_incarnation(dir.path()).unwrap(), 2);
        assert_eq!(next_incarnation(dir.path(), 2).unwrap(), 3);
        assert!(next_incarnation(dir.path(), u64::MAX).is_err());
    }

    #[test]
    fn a_file_is_not_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"").unwrap();
        let e = StateDir::open(&file).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: not a folder", file.display()));
        assert!(!folder_exists(&dir.path().join("none")).unwrap());
        assert!(folder_exists(dir.path()).unwrap());
    }

    #[test]
    fn bad_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join(KEY_FILE);
        write_new(&key, b"not hex\n").unwrap();
        assert!(matches!(read_key(dir.path()), Err(StateError::BadKey(_))));
        fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_key(dir.path()),
            Err(StateError::KeyExposed { mode: 0o644, .. })
        ));
        write_new(&dir.path().join(INCARNATION_FILE), b"-3\n").unwrap();
        assert!(matches!(
            read_incarnation(dir.path()),
            Err(StateError::BadIncarnation(_))
        ));
        // The largest there is reads back, and is said to be the last.
        assert_eq!(next_incarnation(dir.path(), 7).unwrap(), 8);
        assert!(matches!(
            next_incarnation(dir.path(), u64::MAX),
            Err(StateError::IncarnationsUsedUp(_))
        ));
    }

    #[test]
    fn open_tightens_a_loose_folder() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
        StateDir::open(dir.path()).unwrap();
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_state_folder_is_held_by_one_lock_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("home/net");
        let first = StateLock::take(&state).unwrap();
        assert!(first.created());
        let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // flock: a second open of the lock file conflicts, even in the same process.
        assert!(matches!(StateLock::take(&state), Err(StateError::Busy(_))));
        drop(first);
        assert!(
            !state.exists(),
            "a folder made for the lock alone is removed"
        );

        let first = StateLock::take(&state).unwrap();
        fs::write(state.join(KEY_FILE), "k").unwrap();
        drop(first);
        assert!(
            state.join(KEY_FILE).exists(),
            "kept: something was put in it"
        );
        let second = StateLock::take(&state).unwrap();
        assert!(!second.created());
        drop(second);
        assert!(state.join(KEY_FILE).exists());
    }

    #[test]
    fn a_lock_on_a_folder_taken_away_meanwhile_is_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("net");
        let holder = StateLock::take(&state).unwrap();
        // What a waiter opened before the holder took the folder away.
        let stale = fs::File::open(state.join(LOCK_FILE)).unwrap();
        fs::remove_dir_all(&state).unwrap();
        drop(holder);
        stale.try_lock().unwrap();
        // The stale file is locked, yet the folder is free: a new lock makes it again.
        let again = StateLock::take(&state).unwrap();
        assert!(again.created());
        assert!(state.join(LOCK_FILE).exists());
    }
}
