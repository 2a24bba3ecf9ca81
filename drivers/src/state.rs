//! The state folder: where a node keeps its secret key and incarnation, and where its control
//! socket lives. The folder is owner-only (0700), its files too (0600).
//!
//! ```text
//! <state>/key           the ed25519 secret key: 64 lowercase hex digits and a newline
//! <state>/incarnation   the last incarnation started, in decimal and a newline
//! <state>/control.sock  the running node's control socket (see `control`)
//! <state>/state/        the engine's state blobs (see `storage`)
//! ```

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

const KEY_FILE: &str = "key";
const INCARNATION_FILE: &str = "incarnation";
const SOCKET_FILE: &str = "control.sock";

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
    /// Neither `WEFT_HOME` nor `HOME` is set, so there is no default folder.
    #[error("no state folder: set WEFT_HOME or HOME, or pass --state")]
    NoHome,
    /// The OS random source failed.
    #[error("cannot generate a key: {0}")]
    Random(rand_core::Error),
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

impl StateDir {
    /// Opens the folder at `path`, creating it (and its parents) if needed, and makes it
    /// owner-only.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
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

    /// The node's secret key: read from `key`, or generated from the OS random source and
    /// written there on first use.
    pub fn load_or_create_key(&self) -> Result<[u8; 32], StateError> {
        let path = self.path.join(KEY_FILE);
        match fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(StateError::KeyExposed { path, mode });
                }
                let text = fs::read_to_string(&path).map_err(io_err(&path))?;
                parse_key(text.trim()).ok_or(StateError::BadKey(path))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                OsRng.try_fill_bytes(&mut key).map_err(StateError::Random)?;
                let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
                write_new(&path, format!("{text}\n").as_bytes())?;
                Ok(key)
            }
            Err(e) => Err(StateError::Io { path, source: e }),
        }
    }

    /// Raises the stored incarnation by one and returns it (1 on first start).
    pub fn next_incarnation(&self) -> Result<u64, StateError> {
        let path = self.path.join(INCARNATION_FILE);
        let last = match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| StateError::BadIncarnation(path.clone()))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(StateError::Io { path, source: e }),
        };
        let next = last
            .checked_add(1)
            .ok_or_else(|| StateError::BadIncarnation(path.clone()))?;
        let tmp = self.path.join(format!("{INCARNATION_FILE}.tmp"));
        let _ = fs::remove_file(&tmp);
        write_new(&tmp, format!("{next}\n").as_bytes())?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(next)
    }
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
    fn key_is_created_once_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("net")).unwrap();
        let key = state.load_or_create_key().unwrap();
        assert_eq!(state.load_or_create_key().unwrap(), key);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state.path().join(KEY_FILE)), 0o600);
        assert_eq!(mode(state.path()), 0o700);
    }

    #[test]
    fn incarnation_rises_on_every_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.next_incarnation().unwrap(), 1);
        assert_eq!(state.next_incarnation().unwrap(), 2);
        let reopened = StateDir::open(dir.path()).unwrap();
        assert_eq!(reopened.next_incarnation().unwrap(), 3);
    }

    #[test]
    fn bad_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let key = dir.path().join(KEY_FILE);
        write_new(&key, b"not hex\n").unwrap();
        assert!(matches!(
            state.load_or_create_key(),
            Err(StateError::BadKey(_))
        ));
        fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            state.load_or_create_key(),
            Err(StateError::KeyExposed { mode: 0o644, .. })
        ));
        write_new(&dir.path().join(INCARNATION_FILE), b"-3\n").unwrap();
        assert!(matches!(
            state.next_incarnation(),
            Err(StateError::BadIncarnation(_))
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
}
