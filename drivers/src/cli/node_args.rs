//! The arguments of `weft node` (and of the commands that start a node: `create`, `join`,
//! `start`) and the settings they resolve to: each flag over the config file's default, the
//! state folder checked, the network key derived from the secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::TypedValueParser as _;
use weft_engine::NetworkKey;

use super::config::{self, NodeDefaults};
use super::secret::{self, Secret, SecretSource};
use super::{announce_addr, fail, socket_addr, usage, NetArgs};
use crate::control::ControlLimits;
use crate::state;

/// Which protocol a node's network speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Dialect {
    /// weft's own (SPEC.md §1–§24).
    #[default]
    Weft,
    /// py2p 0.7.878's p2p.today protocol (SPEC.md §25): no encryption.
    #[value(name = "p2p.today")]
    P2pToday,
}

/// A py2p subnet name for `--subnet`.
pub(crate) fn subnet(name: &str) -> Result<weft_engine::p2pt::Subnet, String> {
    weft_engine::p2pt::Subnet::from_name(name)
        .ok_or_else(|| format!("no subnet {name:?} (subnets: mesh, sync1, sync0)"))
}

/// Which driver runs the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Driver {
    /// The hand-run mio poll loop.
    #[cfg(feature = "mio")]
    Mio,
    /// One Tokio task.
    #[cfg(feature = "tokio")]
    Tokio,
}

impl Default for Driver {
    fn default() -> Self {
        #[cfg(feature = "mio")]
        return Driver::Mio;
        #[cfg(not(feature = "mio"))]
        return Driver::Tokio;
    }
}

/// Arguments of `weft node`. Every flag but `--detach` has a default in the config file
/// (`<state folder>/config.toml`, see `cli::config`); a flag given here overrides it.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub(super) net: NetArgs,
    /// Where to accept connections (`IP:PORT`; port 0 picks a free one) [config: listen].
    #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
    pub(super) listen: Option<SocketAddr>,
    /// The address other nodes are told to dial this one at [config: announce; default: the
    /// listen address; a node listening on 0.0.0.0 or [::] without it is dialed at the IP its
    /// peers see].
    #[arg(long, value_name = "HOST:PORT", value_parser = announce_addr)]
    pub(super) announce: Option<String>,
    /// A peer to dial at start (repeatable; replaces the config's list); it is redialed, with
    /// backoff, whenever it is not linked, for as long as the node runs [config: peers].
    #[arg(long = "peer", value_name = "HOST:PORT", value_parser = super::peer_addr)]
    pub(super) peers: Vec<SocketAddr>,
    /// The driver [config: driver; default: mio].
    #[arg(long, value_enum)]
    pub(super) driver: Option<Driver>,
    /// Join the Chord ring (through the first linked peer) and serve `weft put/get/delete`
    /// (`--chord=false` turns off the config's `chord = true`) [config: chord].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) chord: Option<bool>,
    /// Learn peers' addresses from discovery cascades and dial them on its own (SPEC.md §10);
    /// `--discovery=false` makes a node dial only its `--peer`s, the addresses `weft connect`
    /// gives and the holders the drops tracker names [config: discovery; default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) discovery: Option<bool>,
    /// How long a write to a control client (a `weft listen` above all) may make no progress
    /// before the node drops that client; at least 1 [config: control_write_timeout_ms;
    /// default: 10000].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) control_write_timeout_ms: Option<u64>,
    /// How many bytes of broadcasts a `weft listen` client may fall behind by before the node
    /// drops the excess for it (counted as listener drops) [config: listen_queue_bytes_max;
    /// default: 8388608].
    #[arg(long, value_name = "BYTES")]
    pub(super) listen_queue_bytes_max: Option<usize>,
    /// Send and accept broadcasts without their origin's signature: faster, but any peer can
    /// then forge a broadcast in any node's name (SPEC.md §11.8). Every node of the network
    /// must be started the same way; a node of the other mode is refused at the handshake
    /// [config: unsigned_broadcasts].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) unsigned_broadcasts: Option<bool>,
    /// Make the network private (SPEC.md §21): every link's handshake mixes in a key derived
    /// from SECRET, so a node without the same secret can neither link nor learn anything of
    /// the network. Every node of it must be given the same one. It shows in the process
    /// list and the shell's history: prefer --secret-file or the config's `secret_file`
    /// [config: secret; at most 4096 bytes].
    #[arg(
        long,
        value_name = "SECRET",
        conflicts_with = "secret_file",
        allow_hyphen_values = true,
        value_parser = clap::builder::OsStringValueParser::new().map(Secret::from_arg)
    )]
    pub(super) secret: Option<Secret>,
    /// Read the network secret (see --secret) from the file at PATH, less one trailing
    /// newline; keep it readable by its owner only (chmod 600) [config: secret_file].
    #[arg(long, value_name = "PATH")]
    pub(super) secret_file: Option<PathBuf>,
    /// Run programs for the peers of --allow-run-from that ask (`weft run`, SPEC.md §23), as
    /// this node's user; without it the node runs nothing for anyone [config: allow_run].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) allow_run: Option<bool>,
    /// A node (its 64-hex-digit id, as `weft id` prints it) whose runs this node carries out
    /// with --allow-run (repeatable; replaces the config's list) [config: allow_run_from].
    #[arg(long = "allow-run-from", value_name = "NODE", value_parser = super::node_id)]
    pub(super) allow_run_from: Vec<weft_engine::NodeId>,
    /// The network's protocol: weft's own, or `p2p.today` to join a network of py2p nodes
    /// (SPEC.md §25; no encryption, no --secret, no Chord, no folder) [config: dialect;
    /// default: weft].
    #[arg(long, value_enum)]
    pub(super) dialect: Option<Dialect>,
    /// With `--dialect p2p.today`: the py2p subnet, `mesh` (MeshSocket), `sync1` (SyncSocket
    /// with leases) or `sync0` (without) [config: subnet; default: mesh].
    #[arg(long, value_name = "SUBNET", value_parser = subnet)]
    pub(super) subnet: Option<weft_engine::p2pt::Subnet>,
    /// With `--dialect p2p.today`: offer py2p's compressions (zlib, gzip, bz2, xz);
    /// `--p2pt-compression=false` sends and asks for raw frames [config: p2pt_compression;
    /// default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub(super) p2pt_compression: Option<bool>,
    #[command(flatten)]
    pub(super) ui: super::UiFlags,
    /// Run in the background: start the node, wait until it answers, print its id and
    /// address (and with --ui, the page's URL), and return (its log goes to
    /// `<state folder>/node.log`).
    #[arg(long)]
    pub(super) detach: bool,
    /// Set by `--detach` on the node it starts: begin a new session.
    #[arg(long, hide = true)]
    pub(super) background_child: bool,
    /// Set by `weft join` on the node it runs: stop with an error unless the node links to
    /// the network through this peer within `JOIN_WAIT`.
    #[arg(long, hide = true, value_name = "ADDR", value_parser = socket_addr)]
    pub(super) first_contact: Option<SocketAddr>,
    /// The state folder's lock, when the command running the node in the foreground took it
    /// already (`weft create`, `join`, `start`): the node keeps it, so no other command gets
    /// in between the set-up and the node.
    #[arg(skip)]
    pub(super) state_lock: Option<std::sync::Arc<crate::state::StateLock>>,
}

/// How long a node `weft join` runs has to link to the network through its peer before it
/// stops with the reason (`--first-contact`).
pub(super) const JOIN_WAIT: weft_engine::Duration = weft_engine::Duration::from_secs(20);

/// How a node runs: its flags over its config file's defaults over the built-in ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Where to accept connections.
    pub listen: SocketAddr,
    /// The address other nodes are told to dial, if not the listen address.
    pub announce: Option<String>,
    /// Peers to dial at start.
    pub peers: Vec<SocketAddr>,
    /// The driver.
    pub driver: Driver,
    /// Whether the node joins the Chord ring.
    pub chord: bool,
    /// Whether discovery runs (cascades learned from, heard-of peers dialed).
    pub discovery: bool,
    /// Whether broadcasts go unsigned.
    pub unsigned_broadcasts: bool,
    /// Where the network secret comes from; `None`: an open network.
    pub secret: Option<SecretSource>,
    /// The control socket's limits.
    pub limits: ControlLimits,
    /// The network's shared folder, if it has one (config: folder).
    pub folder: Option<PathBuf>,
    /// Whether it runs programs for peers, and for which.
    pub run: weft_engine::RunConfig,
    /// `Some`: the network speaks the p2p.today dialect.
    pub p2pt: Option<weft_engine::p2pt::P2ptConfig>,
}

impl NodeArgs {
    /// The arguments of `weft node --name NET` (every setting from the config file), in
    /// the background if `detach`.
    pub(super) fn of(net: NetArgs, detach: bool) -> NodeArgs {
        NodeArgs {
            net,
            listen: None,
            announce: None,
            peers: Vec::new(),
            driver: None,
            chord: None,
            discovery: None,
            control_write_timeout_ms: None,
            listen_queue_bytes_max: None,
            unsigned_broadcasts: None,
            secret: None,
            secret_file: None,
            allow_run: None,
            allow_run_from: Vec::new(),
            dialect: None,
            subnet: None,
            p2pt_compression: None,
            ui: super::UiFlags::default(),
            detach,
            background_child: false,
            first_contact: None,
            state_lock: None,
        }
    }

    /// The state folder this node uses.
    pub(super) fn state_path(&self) -> Result<PathBuf, String> {
        self.net.state_path()
    }

    /// The settings: these flags over `defaults` (the config file at `config`) over the
    /// built-in defaults. The error is a usage error (exit 2).
    pub fn settle(&self, defaults: NodeDefaults, config: &Path) -> Result<NodeSettings, String> {
        let limits = ControlLimits::default();
        let listen = self.listen.or(defaults.listen).ok_or_else(|| {
            format!(
                "no listen address: pass --listen ADDR or set `listen` in {}",
                config.display()
            )
        })?;
        let write_timeout_ms = self
            .control_write_timeout_ms
            .or(defaults.control_write_timeout_ms);
        // Either flag replaces either config key.
        let secret = match (&self.secret, &self.secret_file) {
            (Some(_), Some(_)) => return Err("give --secret or --secret-file, not both".into()),
            (Some(secret), None) => Some(SecretSource::Flag(secret.clone())),
            (None, Some(path)) => Some(SecretSource::File(path.clone())),
            (None, None) => defaults.secret,
        };
        let p2pt = match self.dialect.or(defaults.dialect).unwrap_or_default() {
            Dialect::Weft => {
                if self.subnet.is_some() || self.p2pt_compression.is_some() {
                    return Err("--subnet and --p2pt-compression need --dialect p2p.today".into());
                }
                if defaults.subnet.is_some() || defaults.p2pt_compression.is_some() {
                    return Err(format!(
                        "{}: `subnet` and `p2pt_compression` need `dialect = \"p2p.today\"`",
                        config.display()
                    ));
                }
                None
            }
            Dialect::P2pToday => {
                let chord = self.chord.or(defaults.chord).unwrap_or(false);
                let no = |what: &str| {
                    format!("a p2p.today network has no {what} (py2p has none): drop it")
                };
                if secret.is_some() {
                    return Err(no("network secret (no encryption at all)"));
                }
                if chord {
                    return Err(no("weft Chord ring"));
                }
                if defaults.folder.is_some() {
                    return Err(no("shared folder"));
                }
                if self.allow_run.or(defaults.allow_run).unwrap_or(false) {
                    return Err(no("remote runs"));
                }
                Some(weft_engine::p2pt::P2ptConfig {
                    subnet: self
                        .subnet
                        .or(defaults.subnet)
                        .unwrap_or(weft_engine::p2pt::Subnet::Mesh),
                    compression: self
                        .p2pt_compression
                        .or(defaults.p2pt_compression)
                        .unwrap_or(true),
                })
            }
        };
        Ok(NodeSettings {
            p2pt,
            listen,
            announce: self.announce.clone().or(defaults.announce),
            peers: if self.peers.is_empty() {
                defaults.peers.unwrap_or_default()
            } else {
                self.peers.clone()
            },
            driver: self.driver.or(defaults.driver).unwrap_or_default(),
            chord: self.chord.or(defaults.chord).unwrap_or(false),
            discovery: self.discovery.or(defaults.discovery).unwrap_or(true),
            unsigned_broadcasts: self
                .unsigned_broadcasts
                .or(defaults.unsigned_broadcasts)
                .unwrap_or(false),
            secret,
            folder: defaults.folder,
            run: weft_engine::RunConfig {
                allow: self.allow_run.or(defaults.allow_run).unwrap_or(false),
                allow_from: if self.allow_run_from.is_empty() {
                    defaults.allow_run_from.unwrap_or_default()
                } else {
                    self.allow_run_from.clone()
                },
            },
            limits: ControlLimits {
                write_timeout: write_timeout_ms
                    .map_or(limits.write_timeout, std::time::Duration::from_millis),
                listen_backlog: crate::Backlog {
                    bytes_max: self
                        .listen_queue_bytes_max
                        .or(defaults.listen_queue_bytes_max)
                        .unwrap_or(limits.listen_backlog.bytes_max),
                    ..limits.listen_backlog
                },
                ..limits
            },
        })
    }
}

/// The settings of the node `args` start: its state folder (checked to be one, if it is
/// there), its flags over its config file, and the network key from its secret (a secret
/// file others can read is warned of). Errors are printed; the exit code is 2 for a bad
/// config file, a missing listen address or a bad secret, 1 otherwise.
pub(super) fn settings_of(
    args: &NodeArgs,
) -> Result<(PathBuf, NodeSettings, NetworkKey), ExitCode> {
    let path = args.state_path().map_err(fail)?;
    state::folder_exists(&path).map_err(fail)?;
    let defaults = config::load(&path).map_err(usage)?;
    let settings = args
        .settle(defaults, &config::config_path(&path))
        .map_err(usage)?;
    let keyed = secret::network_key(settings.secret.as_ref()).map_err(usage)?;
    if let Some(warning) = keyed.warning {
        tracing::warn!("{warning}");
    }
    Ok((path, settings, keyed.network_key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn settle(args: &[&str], defaults: NodeDefaults) -> Result<NodeSettings, String> {
        let mut all = vec!["weft", "--name", "n"];
        all.extend(args);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        cli.node.settle(defaults, Path::new("/s/config.toml"))
    }

    #[test]
    fn flags_override_the_config_which_overrides_the_built_in_defaults() {
        let config = NodeDefaults {
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            peers: Some(vec!["127.0.0.1:7001".parse().unwrap()]),
            chord: Some(true),
            control_write_timeout_ms: Some(99),
            ..NodeDefaults::default()
        };
        let s = settle(&[], config.clone()).unwrap();
        assert_eq!(s.listen.port(), 7000);
        assert_eq!(s.peers.len(), 1);
        assert!(s.chord && !s.unsigned_broadcasts && s.discovery);
        assert_eq!(s.limits.write_timeout.as_millis(), 99);
        assert_eq!(s.driver, Driver::default());
        let s = settle(
            &[
                "--listen",
                "127.0.0.1:8000",
                "--peer",
                "127.0.0.1:8001",
                "--peer",
                "127.0.0.1:8002",
                "--chord=false",
                "--discovery=false",
                "--unsigned-broadcasts",
            ],
            config,
        )
        .unwrap();
        assert_eq!(s.listen.port(), 8000);
        assert_eq!(s.peers.len(), 2, "--peer replaces the config's list");
        assert!(!s.chord && !s.discovery && s.unsigned_broadcasts);
        let e = settle(&[], NodeDefaults::default()).unwrap_err();
        assert!(
            e.contains("no listen address") && e.contains("/s/config.toml"),
            "{e}"
        );
    }

    #[test]
    fn a_secret_flag_replaces_either_config_key() {
        let config = NodeDefaults {
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            secret: Some(SecretSource::File("/s/net.secret".into())),
            ..NodeDefaults::default()
        };
        let s = settle(&[], config.clone()).unwrap();
        assert_eq!(s.secret, config.secret);
        let s = settle(&["--secret", "-starts-with-a-dash"], config.clone()).unwrap();
        let given = SecretSource::Flag(Secret::new("-starts-with-a-dash"));
        assert_eq!(s.secret, Some(given));
        assert!(!format!("{s:?}").contains("dash"), "{s:?}");
        let s = settle(&["--secret-file", "other"], config).unwrap();
        assert_eq!(s.secret, Some(SecretSource::File("other".into())));
        let open = NodeDefaults {
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..NodeDefaults::default()
        };
        assert_eq!(settle(&[], open).unwrap().secret, None);
        let e = settle(
            &["--secret", "x", "--secret-file", "y"],
            NodeDefaults::default(),
        )
        .unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn the_help_names_the_built_in_limits() {
        // `--help` names these numbers as the defaults; they must stay the same.
        let limits = ControlLimits::default();
        assert_eq!(limits.write_timeout.as_millis(), 10_000);
        assert_eq!(limits.listen_backlog.bytes_max, 8_388_608);
    }
}
