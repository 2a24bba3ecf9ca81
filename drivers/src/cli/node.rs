//! `weft node`: runs a node with the chosen driver until SIGINT/SIGTERM or `weft shutdown`
//! (in the foreground, or in the background with `--detach`: see `cli::detach`). `weft
//! tracker` runs one the same way as a bootstrap and Chord ring member only.
//!
//! A start reads and checks everything that can fail (the state folder, the config file, the
//! key, the incarnation, the store, the listen address, the control socket's path) before it
//! writes anything, so a failed start leaves the state folder as it was.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::TypedValueParser as _;
use rand_core::{OsRng, RngCore};
use weft_engine::{Config, Identity, NetworkKey};

use super::config::{self, NodeDefaults};
use super::secret::{self, Secret, SecretSource};
use super::{announce_addr, fail, init_logging, socket_addr, usage, NetArgs};
use crate::control::{ControlLimits, ControlServer};
use crate::folder::run::FolderSpec;
use crate::host::Exit;
use crate::report::{links_name, links_text};
use crate::setup::Setup;
use crate::state::{self, StateDir};
use crate::storage::Store;
use weft_engine::protocol::FolderId;

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

/// The longest path a Unix socket can be bound at, bytes (`sun_path` less its NUL).
const SOCKET_PATH_BYTES_MAX: usize = 107;

/// Arguments of `weft node`. Every flag but `--detach` has a default in the config file
/// (`<state folder>/config.toml`, see `cli::config`); a flag given here overrides it.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    #[command(flatten)]
    pub(super) net: NetArgs,
    /// Where to accept connections (`IP:PORT`; port 0 picks a free one) [config: listen].
    #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
    listen: Option<SocketAddr>,
    /// The address other nodes are told to dial this one at [config: announce; default: the
    /// listen address; a node listening on 0.0.0.0 or [::] without it is dialed at the IP its
    /// peers see].
    #[arg(long, value_name = "HOST:PORT", value_parser = announce_addr)]
    announce: Option<String>,
    /// A peer to dial at start (repeatable; replaces the config's list); it is redialed, with
    /// backoff, whenever it is not linked, for as long as the node runs [config: peers].
    #[arg(long = "peer", value_name = "HOST:PORT", value_parser = socket_addr)]
    peers: Vec<SocketAddr>,
    /// The driver [config: driver; default: mio].
    #[arg(long, value_enum)]
    driver: Option<Driver>,
    /// Join the Chord ring (through the first linked peer) and serve `weft put/get/delete`
    /// (`--chord=false` turns off the config's `chord = true`) [config: chord].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    chord: Option<bool>,
    /// Learn peers' addresses from discovery cascades and dial them on its own (SPEC.md §10);
    /// `--discovery=false` makes a node dial only its `--peer`s, the addresses `weft connect`
    /// gives and the holders the drops tracker names [config: discovery; default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    discovery: Option<bool>,
    /// How long a write to a control client (a `weft listen` above all) may make no progress
    /// before the node drops that client [config: control_write_timeout_ms; default: 10000].
    #[arg(long, value_name = "MS")]
    control_write_timeout_ms: Option<u64>,
    /// How many bytes of broadcasts a `weft listen` client may fall behind by before the node
    /// drops the excess for it (counted as listener drops) [config: listen_queue_bytes_max;
    /// default: 8388608].
    #[arg(long, value_name = "BYTES")]
    listen_queue_bytes_max: Option<usize>,
    /// Send and accept broadcasts without their origin's signature: faster, but any peer can
    /// then forge a broadcast in any node's name (SPEC.md §11.8). Every node of the network
    /// must be started the same way; a node of the other mode is refused at the handshake
    /// [config: unsigned_broadcasts].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    unsigned_broadcasts: Option<bool>,
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
    secret: Option<Secret>,
    /// Read the network secret (see --secret) from the file at PATH, less one trailing
    /// newline; keep it readable by its owner only (chmod 600) [config: secret_file].
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// Run programs for the peers of --allow-run-from that ask (`weft run`, SPEC.md §23), as
    /// this node's user; without it the node runs nothing for anyone [config: allow_run].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    allow_run: Option<bool>,
    /// A node (its 64-hex-digit id, as `weft id` prints it) whose runs this node carries out
    /// with --allow-run (repeatable; replaces the config's list) [config: allow_run_from].
    #[arg(long = "allow-run-from", value_name = "NODE", value_parser = super::node_id)]
    allow_run_from: Vec<weft_engine::NodeId>,
    /// The network's protocol: weft's own, or `p2p.today` to join a network of py2p nodes
    /// (SPEC.md §25; no encryption, no --secret, no Chord, no folder) [config: dialect;
    /// default: weft].
    #[arg(long, value_enum)]
    dialect: Option<Dialect>,
    /// With `--dialect p2p.today`: the py2p subnet, `mesh` (MeshSocket), `sync1` (SyncSocket
    /// with leases) or `sync0` (without) [config: subnet; default: mesh].
    #[arg(long, value_name = "SUBNET", value_parser = subnet)]
    subnet: Option<weft_engine::p2pt::Subnet>,
    /// With `--dialect p2p.today`: offer py2p's compressions (zlib, gzip, bz2, xz);
    /// `--p2pt-compression=false` sends and asks for raw frames [config: p2pt_compression;
    /// default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    p2pt_compression: Option<bool>,
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
}

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

/// Runs `weft node`: exit 130 after SIGINT, 143 after SIGTERM, 0 after `weft shutdown`, 1 on
/// an error, 2 on bad arguments or config.
pub fn node(args: NodeArgs) -> ExitCode {
    if let Err(e) = args.ui.check() {
        return usage(e);
    }
    if args.detach {
        return super::detach::detach(&args);
    }
    if args.background_child {
        // A new session: no terminal's hang-up or Ctrl-C reaches the node.
        let _ = rustix::process::setsid();
    }
    init_logging("info");
    let (path, settings, network_key) = match settings_of(&args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match run(&args.net.name, &path, settings, network_key, &args.ui) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => fail(e),
    }
}

/// Arguments of `weft tracker`: a node that serves only as a bootstrap and a member of the
/// Chord ring, where the drops tracker's records live (SPEC.md §20.9): Chord on, no shared
/// folder and no runs for peers, whatever its config file says; its other settings come
/// from the config file as `weft node`'s do.
#[derive(Debug, Clone, clap::Args)]
pub struct TrackerArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Where to accept connections (`IP:PORT`; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
    listen: SocketAddr,
    /// The address other nodes are told to dial this one at [default: the listen address].
    #[arg(long, value_name = "HOST:PORT", value_parser = announce_addr)]
    announce: Option<String>,
    /// A peer to dial at start (repeatable; replaces the config's list), redialed whenever
    /// it is not linked: another tracker or a member of the network [config: peers].
    #[arg(long = "peer", value_name = "HOST:PORT", value_parser = socket_addr)]
    peers: Vec<SocketAddr>,
    /// The driver [config: driver; default: mio].
    #[arg(long, value_enum)]
    driver: Option<Driver>,
}

/// Runs `weft tracker` in the foreground, as `weft node` runs (same exit codes).
pub fn tracker(args: TrackerArgs) -> ExitCode {
    init_logging("info");
    let node_args = NodeArgs {
        listen: Some(args.listen),
        announce: args.announce,
        peers: args.peers,
        driver: args.driver,
        chord: Some(true),
        allow_run: Some(false),
        ..NodeArgs::of(args.net, false)
    };
    let (path, mut settings, network_key) = match settings_of(&node_args) {
        Ok(s) => s,
        Err(code) => return code,
    };
    settings.folder = None;
    settings.run = weft_engine::RunConfig::default();
    tracing::info!("a tracker: bootstrap and Chord ring member, no shared folder, no runs");
    match run(
        &node_args.net.name,
        &path,
        settings,
        network_key,
        &node_args.ui,
    ) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => fail(e),
    }
}

/// What a start read, ready to be written once nothing else can fail.
struct Start {
    path: PathBuf,
    folder_existed: bool,
    /// The key read, or a new one to write.
    key: [u8; 32],
    key_is_new: bool,
    incarnation: u64,
}

impl Start {
    /// Reads the state folder at `path` without writing anything.
    fn read(path: &Path) -> Result<Start, String> {
        let folder_existed = state::folder_exists(path).map_err(|e| e.to_string())?;
        let socket = state::socket_path(path);
        if socket.as_os_str().len() > SOCKET_PATH_BYTES_MAX {
            return Err(format!(
                "{}: too long for a Unix socket (over {SOCKET_PATH_BYTES_MAX} bytes); choose a shorter --state",
                socket.display()
            ));
        }
        if folder_existed && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Err(format!(
                "a node is already running with state folder {}",
                path.display()
            ));
        }
        let read = state::read_key(path).map_err(|e| e.to_string())?;
        let key = match read {
            Some(key) => key,
            None => state::generate_key().map_err(|e| e.to_string())?,
        };
        let last = state::read_incarnation(path).map_err(|e| e.to_string())?;
        let incarnation = state::next_incarnation(path, last).map_err(|e| e.to_string())?;
        Ok(Start {
            path: path.to_owned(),
            folder_existed,
            key,
            key_is_new: read.is_none(),
            incarnation,
        })
    }

    /// Opens the store (checked before anything is written: a damaged or newer one stops
    /// the start), then writes the folder, key and incarnation. A folder this start created
    /// is removed again if a write fails.
    fn write(&self) -> Result<(StateDir, Store), String> {
        let existing = if self.folder_existed {
            Store::open_existing(&self.path).map_err(|e| e.to_string())?
        } else {
            None
        };
        let written = self.write_folder(existing);
        if written.is_err() && !self.folder_existed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
        written
    }

    fn write_folder(&self, existing: Option<Store>) -> Result<(StateDir, Store), String> {
        let state = StateDir::open(&self.path).map_err(|e| e.to_string())?;
        let store = match existing {
            Some(store) => store,
            None => Store::open_or_create(&self.path).map_err(|e| e.to_string())?,
        };
        if self.key_is_new {
            state.write_key(&self.key).map_err(|e| e.to_string())?;
        }
        state
            .write_incarnation(self.incarnation)
            .map_err(|e| e.to_string())?;
        Ok((state, store))
    }
}

fn run(
    network: &str,
    path: &Path,
    settings: NodeSettings,
    network_key: NetworkKey,
    ui: &super::UiFlags,
) -> Result<Exit, String> {
    let start = Start::read(path)?;
    let mut config = Config::new(network.to_owned(), start.key);
    config.incarnation = start.incarnation;
    config.network_key = network_key;
    let mut seed = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| format!("no OS randomness: {e}"))?;
    config.rng_seed = u64::from_le_bytes(seed);
    config.broadcast_signatures = !settings.unsigned_broadcasts;
    config.discovery = settings.discovery;
    config.run = settings.run.clone();
    if settings.chord {
        config.chord = Some(weft_engine::chord::ChordConfig::default());
    }
    config.p2pt = settings.p2pt.clone();
    let mut setup = Setup::bind(config, settings.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    if let Some(announce) = &settings.announce {
        setup.config.listen_addr = Some(announce.clone());
    }
    // The page's port is taken before anything is written, so a busy one changes nothing.
    let page = super::ui::bind_for_node(ui, path)?;
    // Everything that can fail has been checked: from here on the start writes.
    let (state, store) = start.write()?;
    if let Some(p2pt) = &settings.p2pt {
        tracing::warn!(
            "a p2p.today network ({} subnet): py2p has no encryption, so links are plaintext and anyone on the path can read and change every message (SPEC.md §25.12)",
            p2pt.subnet.name()
        );
    }
    if settings.unsigned_broadcasts {
        tracing::warn!(
            "broadcasts are unsigned: any peer can forge one in any node's name (SPEC.md §11.8)"
        );
    }
    setup.peers = settings.peers.iter().map(SocketAddr::to_string).collect();
    setup.signals = true;
    setup.store = Some(store);
    if let Some(root) = &settings.folder {
        setup.folders.push(FolderSpec {
            id: FolderId::from_name(network),
            root: root.clone(),
        });
    }
    match settings.driver {
        #[cfg(feature = "mio")]
        Driver::Mio => run_mio(setup, &state, settings.limits, page),
        #[cfg(feature = "tokio")]
        Driver::Tokio => run_tokio(setup, &state, settings.limits, page),
    }
}

/// The line a node prints once its control socket answers (scripts and tests read the
/// address from it).
fn announcement(setup: &Setup, state: &Path, driver: &str) -> String {
    let config = &setup.config;
    if let Some(node) = weft_engine::p2pt::P2ptNode::from_config(config) {
        let addr = setup
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        return format!(
            "weft node {} of p2p.today network {} (subnet {}, protocol id {}): listening on {addr} (incarnation {}, {driver} driver, plaintext links: p2p.today has no encryption, state {})",
            node.id(),
            config.network,
            node.config().subnet.name(),
            node.protocol_id(),
            config.incarnation,
            state.display()
        );
    }
    let id = Identity::from_secret(&config.secret_key).node_id();
    let addr = setup
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let told = config.listen_addr.as_deref().unwrap_or("?");
    let announced = if told == addr {
        String::new()
    } else {
        format!("announced as {told}, ")
    };
    format!(
        "weft node {id} of {}: listening on {addr} ({announced}incarnation {}, {driver} driver, {}, state {})",
        config.network,
        config.incarnation,
        links_text(
            links_name(config.link_encryption),
            config.network_key != NetworkKey::OPEN
        ),
        state.display()
    )
}

fn serve(
    state: &StateDir,
    handle: crate::Handle,
    limits: ControlLimits,
) -> Result<ControlServer, String> {
    let path = state.socket_path();
    ControlServer::serve(&path, handle, limits)
        .map_err(|e| format!("control socket {}: {e}", path.display()))
}

#[cfg(feature = "mio")]
fn run_mio(
    setup: Setup,
    state: &StateDir,
    limits: ControlLimits,
    page: super::ui::PageBinding,
) -> Result<Exit, String> {
    use crate::mio_driver::MioDriver;
    let announcement = announcement(&setup, state.path(), "mio");
    let (driver, handle) = MioDriver::new(setup).map_err(|e| format!("mio driver: {e}"))?;
    let _server = serve(state, handle, limits)?;
    let _ = writeln!(std::io::stdout(), "{announcement}");
    let _page = super::ui::serve_for_node(page, state.path())?;
    driver.run().map_err(|e| format!("mio driver: {e}"))
}

#[cfg(feature = "tokio")]
fn run_tokio(
    setup: Setup,
    state: &StateDir,
    limits: ControlLimits,
    page: super::ui::PageBinding,
) -> Result<Exit, String> {
    use crate::tokio_driver::TokioDriver;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let _entered = runtime.enter();
    let announcement = announcement(&setup, state.path(), "tokio");
    let (driver, handle) = TokioDriver::new(setup).map_err(|e| format!("tokio driver: {e}"))?;
    let _server = serve(state, handle, limits)?;
    let _ = writeln!(std::io::stdout(), "{announcement}");
    let _page = super::ui::serve_for_node(page, state.path())?;
    // The node is the runtime's only task: run it on this thread.
    runtime
        .block_on(driver.run())
        .map_err(|e| format!("tokio driver: {e}"))
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
