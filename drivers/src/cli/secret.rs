//! The network secret of a private network (SPEC.md §21): `weft node --secret SECRET`,
//! `--secret-file PATH`, or the config file's `secret` or `secret_file` key, turned once, at
//! start, into the network key every handshake mixes in. The secret is never printed or
//! logged: errors name where it came from, and its `Debug` shows no byte of it.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use weft_engine::link_key::SECRET_BYTES_MAX;
use weft_engine::NetworkKey;

/// A network secret as given: its bytes (any bytes, not only UTF-8).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never its bytes, nor its length.
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret of `bytes`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    /// The secret of a command-line argument (`--secret`), as its bytes. Never fails: an
    /// empty or overlong one is refused at start, where the message names the flag and not
    /// the value (clap would echo a refused value).
    pub fn from_arg(arg: OsString) -> Secret {
        Secret(arg.into_vec())
    }
}

/// Where a node's network secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `--secret`.
    Flag(Secret),
    /// The config file's `secret` key; `file` is the config file.
    Config {
        /// The secret.
        secret: Secret,
        /// The config file that holds it.
        file: PathBuf,
    },
    /// A file's contents, less one trailing newline: `--secret-file`, or the config file's
    /// `secret_file` (a relative path there is resolved against the state folder).
    File(PathBuf),
}

/// What a start derived from its secret: the network key, and a warning to print if the
/// secret sits in a file others can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    /// The network key: [`NetworkKey::OPEN`] without a secret.
    pub network_key: NetworkKey,
    /// A secret file readable by its group or by others: one line to warn with.
    pub warning: Option<String>,
}

/// The network key of a node whose secret comes from `source` (none: an open network). The
/// error is one line naming the source, never the secret (a usage error: exit 2).
pub fn network_key(source: Option<&SecretSource>) -> Result<Keyed, String> {
    let Some(source) = source else {
        return Ok(Keyed {
            network_key: NetworkKey::OPEN,
            warning: None,
        });
    };
    let (bytes, exposed) = match source {
        SecretSource::Flag(secret) | SecretSource::Config { secret, .. } => {
            (secret.0.clone(), false)
        }
        SecretSource::File(path) => read_secret_file(path)?,
    };
    let network_key = NetworkKey::derive(&bytes).map_err(|e| match source {
        SecretSource::Flag(_) => format!("--secret: {e}"),
        SecretSource::Config { file, .. } => format!("{}: key `secret`: {e}", file.display()),
        SecretSource::File(path) => format!("{}: {e}", path.display()),
    })?;
    let warning = match source {
        SecretSource::File(path) if exposed => Some(format!(
            "{} holds the network secret and can be read by its group or others (chmod 600 it)",
            path.display()
        )),
        _ => None,
    };
    Ok(Keyed {
        network_key,
        warning,
    })
}

/// The secret in the file at `path` (one trailing `\n` or `\r\n` stripped), and whether the
/// file is a regular file its group or others may read. Reads at most a few bytes past the
/// longest secret, so a huge file (or `/dev/zero`) is refused, not read.
fn read_secret_file(path: &Path) -> Result<(Vec<u8>, bool), String> {
    let cannot = |e: io::Error| format!("{}: cannot read the network secret: {e}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if meta.is_dir() {
        return Err(format!(
            "{}: a folder, not a file holding the network secret",
            path.display()
        ));
    }
    let exposed = meta.is_file() && meta.permissions().mode() & 0o044 != 0;
    let mut bytes = Vec::new();
    // The longest secret, its "\r\n", and one byte more to tell it is longer.
    let read_max = SECRET_BYTES_MAX as u64 + 3;
    file.take(read_max)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    Ok((bytes, exposed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn no_secret_is_the_open_network() {
        let keyed = network_key(None).unwrap();
        assert_eq!(keyed.network_key, NetworkKey::OPEN);
        assert_eq!(keyed.warning, None);
    }

    #[test]
    fn a_flag_a_config_key_and_a_file_with_the_same_secret_give_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let expected = NetworkKey::derive(b"hunter2").unwrap();
        let flag = SecretSource::Flag(Secret::new("hunter2"));
        let config = SecretSource::Config {
            secret: Secret::new("hunter2"),
            file: dir.path().join("config.toml"),
        };
        let lf = SecretSource::File(file_with(dir.path(), "lf", b"hunter2\n", 0o600));
        let crlf = SecretSource::File(file_with(dir.path(), "crlf", b"hunter2\r\n", 0o600));
        let bare = SecretSource::File(file_with(dir.path(), "bare", b"hunter2", 0o600));
        for source in [flag, config, lf, crlf, bare] {
            let keyed = network_key(Some(&source)).unwrap();
            assert_eq!(keyed.network_key, expected, "{source:?}");
            assert_eq!(keyed.warning, None, "{source:?}");
        }
        // Only one newline is stripped: a second is part of the secret.
        let two = SecretSource::File(file_with(dir.path(), "two", b"hunter2\n\n", 0o600));
        assert_ne!(network_key(Some(&two)).unwrap().network_key, expected);
    }

    #[test]
    fn a_secret_file_others_can_read_is_used_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o644] {
            let path = file_with(dir.path(), &format!("s{mode:o}"), b"s\n", mode);
            let keyed = network_key(Some(&SecretSource::File(path.clone()))).unwrap();
            assert_eq!(keyed.network_key, NetworkKey::derive(b"s").unwrap());
            let warning = keyed.warning.expect("a warning");
            assert!(warning.contains(&path.display().to_string()), "{warning}");
            assert!(warning.contains("chmod 600"), "{warning}");
        }
    }

    #[test]
    fn bad_secrets_fail_in_one_line_without_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let long = vec![b'k'; SECRET_BYTES_MAX + 1];
        let config = dir.path().join("config.toml");
        let cases = [
            (
                SecretSource::Flag(Secret::new("")),
                "--secret: the network secret is empty",
            ),
            (
                SecretSource::Flag(Secret::new(long.clone())),
                "--secret: the network secret is longer than 4096 bytes",
            ),
            (
                SecretSource::Config {
                    secret: Secret::new(""),
                    file: config.clone(),
                },
                "config.toml: key `secret`: the network secret is empty",
            ),
            (
                SecretSource::File(file_with(dir.path(), "empty", b"\n", 0o600)),
                "empty: the network secret is empty",
            ),
            (
                SecretSource::File(file_with(dir.path(), "long", &long, 0o600)),
                "long: the network secret is longer than 4096 bytes",
            ),
            (
                SecretSource::File(dir.path().join("missing")),
                "missing: cannot read the network secret",
            ),
            (
                SecretSource::File(dir.path().to_owned()),
                "a folder, not a file",
            ),
        ];
        for (source, expected) in cases {
            let line = network_key(Some(&source)).unwrap_err();
            assert!(line.contains(expected), "{line:?} should say {expected:?}");
            assert!(!line.contains('\n'), "{line:?}");
            assert!(!line.contains("kkkk"), "the secret itself: {line:?}");
        }
        // The longest secret is taken, from a file too, with its newline.
        let mut longest = vec![b'k'; SECRET_BYTES_MAX];
        longest.extend_from_slice(b"\r\n");
        let path = file_with(dir.path(), "longest", &longest, 0o600);
        assert!(network_key(Some(&SecretSource::File(path))).is_ok());
    }

    #[test]
    fn debug_shows_no_secret() {
        let source = SecretSource::Flag(Secret::new("hunter2"));
        let text = format!("{source:?}");
        assert!(!text.contains("hunter2") && !text.contains("104"), "{text}");
    }
}
