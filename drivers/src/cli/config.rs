//! The node's config file, `<state folder>/config.toml` (by default
//! `$WEFT_HOME/NET/config.toml`): defaults for every long-running flag of `weft node`. A
//! flag given on the command line overrides the file's key (`--peer` replaces the file's
//! `peers` list; `--secret` and `--secret-file` replace either secret key). The file is
//! optional; an unknown key or a bad value stops the node with one line naming the file and
//! the key (exit 2).
//!
//! ```toml
//! listen = "0.0.0.0:7000"
//! announce = "203.0.113.7:7000"
//! peers = ["10.0.0.2:7000", "10.0.0.3:7000"]
//! driver = "mio"                    # or "tokio"
//! chord = true
//! discovery = true                  # false: dial only the peers above (and what a protocol finds)
//! unsigned_broadcasts = false
//! control_write_timeout_ms = 10000
//! listen_queue_bytes_max = 8388608
//! secret_file = "network.secret"   # or secret = "..."; relative to the state folder
//! folder = "/home/me/shared"        # the network's shared folder (`weft create`/`join`)
//! allow_run = true                  # run programs for the nodes of allow_run_from (`weft run`)
//! allow_run_from = ["<64 hex digits of a node id>"]
//! dialect = "weft"                  # or "p2p.today": join a py2p network (SPEC.md §25)
//! subnet = "mesh"                   # p2p.today only: "mesh", "sync1" (leases) or "sync0"
//! p2pt_compression = true           # p2p.today only: offer py2p's zlib, gzip, bz2 and xz
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::secret::{Secret, SecretSource};
use super::{announce_addr, socket_addr, Driver};

/// The config file's name in the state folder.
pub const CONFIG_FILE: &str = "config.toml";

/// Every key the file may hold, in the order the docs list them.
pub const KEYS: [&str; 17] = [
    "listen",
    "announce",
    "peers",
    "driver",
    "chord",
    "discovery",
    "unsigned_broadcasts",
    "control_write_timeout_ms",
    "listen_queue_bytes_max",
    "secret",
    "secret_file",
    "folder",
    "allow_run",
    "allow_run_from",
    "dialect",
    "subnet",
    "p2pt_compression",
];

/// What a config file sets; a key it does not hold is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeDefaults {
    /// `listen`: where to accept connections.
    pub listen: Option<SocketAddr>,
    /// `announce`: the address other nodes are told to dial.
    pub announce: Option<String>,
    /// `peers`: peers to dial at start.
    pub peers: Option<Vec<SocketAddr>>,
    /// `driver`: `mio` or `tokio`.
    pub driver: Option<Driver>,
    /// `chord`: join the Chord ring.
    pub chord: Option<bool>,
    /// `discovery`: see `weft node --discovery`.
    pub discovery: Option<bool>,
    /// `unsigned_broadcasts`: see `weft node --unsigned-broadcasts`.
    pub unsigned_broadcasts: Option<bool>,
    /// `dialect`: see `weft node --dialect`.
    pub dialect: Option<super::Dialect>,
    /// `subnet`: see `weft node --subnet`.
    pub subnet: Option<weft_engine::p2pt::Subnet>,
    /// `p2pt_compression`: see `weft node --p2pt-compression`.
    pub p2pt_compression: Option<bool>,
    /// `control_write_timeout_ms`: see `weft node --control-write-timeout-ms`.
    pub control_write_timeout_ms: Option<u64>,
    /// `listen_queue_bytes_max`: see `weft node --listen-queue-bytes-max`.
    pub listen_queue_bytes_max: Option<usize>,
    /// `secret` (the secret itself) or `secret_file` (a file holding it, relative to the
    /// state folder): see `weft node --secret`. Never both.
    pub secret: Option<SecretSource>,
    /// `folder`: the shared folder's root (an absolute path), written by `weft create` and
    /// `weft join`.
    pub folder: Option<PathBuf>,
    /// `allow_run`: see `weft node --allow-run`.
    pub allow_run: Option<bool>,
    /// `allow_run_from`: see `weft node --allow-run-from`.
    pub allow_run_from: Option<Vec<weft_engine::NodeId>>,
}

/// A config file that cannot be used: one line naming the file (and the key).
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong, naming the key.
    pub why: String,
}

/// Where the config file of the state folder `state` is.
pub fn config_path(state: &Path) -> PathBuf {
    state.join(CONFIG_FILE)
}

/// Reads the config file of the state folder `state`; no file is no defaults.
pub fn load(state: &Path) -> Result<NodeDefaults, ConfigError> {
    let path = config_path(state);
    match crate::small_file::read_text(&path, crate::small_file::CONFIG_BYTES_MAX) {
        Ok(text) => parse(&path, &text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NodeDefaults::default()),
        Err(e) => Err(ConfigError {
            path,
            why: format!("cannot read: {e}"),
        }),
    }
}

/// Parses the text of the config file at `path`.
pub fn parse(path: &Path, text: &str) -> Result<NodeDefaults, ConfigError> {
    let error = |why: String| ConfigError {
        path: path.to_owned(),
        why,
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| {
            text.as_bytes()[..s.start.min(text.len())]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        });
        let message = e.message().lines().next().unwrap_or("bad TOML").to_owned();
        error(match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
        })
    })?;
    let mut defaults = NodeDefaults::default();
    for (key, value) in table {
        let bad = |what: &str| error(format!("key `{key}`: {what}"));
        let string = |value: &toml::Value| {
            value
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad("expected a string"))
        };
        let boolean = || value.as_bool().ok_or_else(|| bad("expected true or false"));
        let count = || {
            value
                .as_integer()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| bad("expected a whole number, 0 or more"))
        };
        match key.as_str() {
            "listen" => defaults.listen = Some(socket_addr(&string(&value)?).map_err(|e| bad(&e))?),
            "announce" => {
                defaults.announce = Some(announce_addr(&string(&value)?).map_err(|e| bad(&e))?)
            }
            "peers" => {
                let list = value
                    .as_array()
                    .ok_or_else(|| bad("expected a list of HOST:PORT strings"))?;
                let peers = list
                    .iter()
                    .map(|v| super::peer_addr(&string(v)?).map_err(|e| bad(&e)))
                    .collect::<Result<_, _>>()?;
                defaults.peers = Some(peers);
            }
            "driver" => {
                let name = string(&value)?;
                let driver = Driver::from_str(&name, false).map_err(|_| {
                    let known: Vec<String> = Driver::value_variants()
                        .iter()
                        .filter_map(|d| d.to_possible_value())
                        .map(|v| v.get_name().to_owned())
                        .collect();
                    bad(&format!(
                        "no driver {name:?} (drivers: {})",
                        known.join(", ")
                    ))
                })?;
                defaults.driver = Some(driver);
            }
            "chord" => defaults.chord = Some(boolean()?),
            "dialect" => {
                let name = string(&value)?;
                let dialect = super::Dialect::from_str(&name, false).map_err(|_| {
                    bad(&format!("no dialect {name:?} (dialects: weft, p2p.today)"))
                })?;
                defaults.dialect = Some(dialect);
            }
            "subnet" => {
                let name = string(&value)?;
                let subnet = weft_engine::p2pt::Subnet::from_name(&name).ok_or_else(|| {
                    bad(&format!("no subnet {name:?} (subnets: mesh, sync1, sync0)"))
                })?;
                defaults.subnet = Some(subnet);
            }
            "p2pt_compression" => defaults.p2pt_compression = Some(boolean()?),
            "discovery" => defaults.discovery = Some(boolean()?),
            "allow_run" => defaults.allow_run = Some(boolean()?),
            "allow_run_from" => {
                let list = value
                    .as_array()
                    .ok_or_else(|| bad("expected a list of node ids (64 hex digits each)"))?;
                let nodes = list
                    .iter()
                    .map(|v| super::node_id(&string(v)?).map_err(|e| bad(&e)))
                    .collect::<Result<_, _>>()?;
                defaults.allow_run_from = Some(nodes);
            }
            "unsigned_broadcasts" => defaults.unsigned_broadcasts = Some(boolean()?),
            "control_write_timeout_ms" => {
                // 0 would be no timeout to the OS, which refuses it: no client could be served.
                let ms = count()?;
                if ms == 0 {
                    return Err(bad("at least 1 (milliseconds)"));
                }
                defaults.control_write_timeout_ms = Some(ms);
            }
            "listen_queue_bytes_max" => {
                let bytes = usize::try_from(count()?).map_err(|_| bad("too large"))?;
                defaults.listen_queue_bytes_max = Some(bytes);
            }
            "folder" => {
                let dir = PathBuf::from(string(&value)?);
                if !dir.is_absolute() {
                    return Err(bad("expected an absolute path"));
                }
                defaults.folder = Some(dir);
            }
            "secret" | "secret_file" => {
                if defaults.secret.is_some() {
                    return Err(error(
                        "keys `secret` and `secret_file`: set one, not both".into(),
                    ));
                }
                let text = string(&value)?;
                defaults.secret = Some(if key == "secret" {
                    SecretSource::Config {
                        secret: Secret::new(text.into_bytes()),
                        file: path.to_owned(),
                    }
                } else {
                    if text.is_empty() {
                        return Err(bad("expected a file's path"));
                    }
                    // Relative to the state folder, the config file's own.
                    let folder = path.parent().unwrap_or(Path::new("."));
                    SecretSource::File(folder.join(text))
                });
            }
            _ => {
                return Err(error(format!(
                    "unknown key `{key}` (keys: {})",
                    KEYS.join(", ")
                )))
            }
        }
    }
    Ok(defaults)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<NodeDefaults, String> {
        parse(Path::new("/s/config.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn every_key_is_read() {
        let d = parsed(
            r#"
            listen = "127.0.0.1:7000"
            announce = "192.0.2.1:7001"
            peers = ["127.0.0.1:7002", "127.0.0.1:7003"]
            driver = "tokio"
            chord = true
            discovery = false
            unsigned_broadcasts = false
            control_write_timeout_ms = 2500
            listen_queue_bytes_max = 4096
            secret_file = "net.secret"
            "#,
        )
        .unwrap();
        assert_eq!(d.listen, Some("127.0.0.1:7000".parse().unwrap()));
        assert_eq!(d.announce.as_deref(), Some("192.0.2.1:7001"));
        assert_eq!(d.peers.as_ref().map(Vec::len), Some(2));
        assert_eq!(d.driver, Some(Driver::Tokio));
        assert_eq!(d.chord, Some(true));
        assert_eq!(d.discovery, Some(false));
        assert_eq!(d.unsigned_broadcasts, Some(false));
        assert_eq!(d.control_write_timeout_ms, Some(2500));
        assert_eq!(d.listen_queue_bytes_max, Some(4096));
        let in_folder = SecretSource::File(PathBuf::from("/s/net.secret"));
        assert_eq!(d.secret, Some(in_folder), "relative to the state folder");
        assert_eq!(parsed("").unwrap(), NodeDefaults::default());
    }

    #[test]
    fn a_secret_is_given_or_read_from_a_file() {
        let d = parsed("secret = \"hunter2\"").unwrap();
        let expected = SecretSource::Config {
            secret: Secret::new("hunter2"),
            file: PathBuf::from("/s/config.toml"),
        };
        assert_eq!(d.secret, Some(expected));
        assert!(!format!("{d:?}").contains("hunter2"), "{d:?}");
        let d = parsed("secret_file = \"/etc/weft/secret\"").unwrap();
        let absolute = SecretSource::File(PathBuf::from("/etc/weft/secret"));
        assert_eq!(d.secret, Some(absolute));
    }

    #[test]
    fn errors_are_one_line_naming_the_file_and_the_key() {
        let cases = [
            ("lisen = \"127.0.0.1:1\"", "unknown key `lisen`"),
            ("listen = 7000", "key `listen`: expected a string"),
            ("listen = \"nowhere\"", "key `listen`: not a HOST:PORT"),
            ("peers = \"127.0.0.1:1\"", "key `peers`: expected a list"),
            ("peers = [\"127.0.0.1\"]", "key `peers`: not a HOST:PORT"),
            ("driver = \"epoll\"", "key `driver`: no driver \"epoll\""),
            ("chord = \"yes\"", "key `chord`: expected true or false"),
            (
                "control_write_timeout_ms = -1",
                "key `control_write_timeout_ms`",
            ),
            (
                "control_write_timeout_ms = 0",
                "key `control_write_timeout_ms`: at least 1",
            ),
            ("announce = \"host\"", "key `announce`"),
            ("listen = ", "line 1:"),
            // The line of the error, not the one before it.
            ("driver = \"mio\"\ndriver = \"tokio\"", "line 2:"),
            (
                "secret = \"a\"\nsecret_file = \"b\"",
                "keys `secret` and `secret_file`: set one, not both",
            ),
            ("secret = 7", "key `secret`: expected a string"),
            (
                "secret_file = \"\"",
                "key `secret_file`: expected a file's path",
            ),
        ];
        for (text, expected) in cases {
            let line = parsed(text).unwrap_err();
            assert!(line.starts_with("/s/config.toml: "), "{line}");
            assert!(line.contains(expected), "{text}: {line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }
}
