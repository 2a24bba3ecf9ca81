//! `weft node`: runs a node with the chosen driver until SIGINT/SIGTERM/SIGHUP or `weft shutdown`
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

use rand_core::{OsRng, RngCore};
use weft_engine::{Config, Identity, NetworkKey};

use super::node_args::{settings_of, Driver, NodeArgs, NodeSettings, JOIN_WAIT};
use super::{announce_addr, fail, init_logging, socket_addr, usage, NetArgs};
use crate::control::{ControlLimits, ControlServer};
use crate::folder::run::FolderSpec;
use crate::host::{Exit, FirstContact, RunError};
use crate::report::{links_name, links_text};
use crate::setup::Setup;
use crate::state::{self, StateDir, StateLock};
use crate::storage::Store;
use weft_engine::protocol::FolderId;

/// The longest path a Unix socket can be bound at, bytes (`sun_path` less its NUL).
const SOCKET_PATH_BYTES_MAX: usize = 107;

/// Runs `weft node`: exit 130 after SIGINT, 143 after SIGTERM, 0 after `weft shutdown`, 1 on
/// an error, 2 on bad arguments or config.
pub fn node(args: NodeArgs) -> ExitCode {
    match run_node(args) {
        Ok(code) | Err(NodeFailure::Refused(code)) => code,
        Err(failure) => fail(failure.message()),
    }
}

/// Why a node's run failed.
#[derive(Debug)]
pub(super) enum NodeFailure {
    /// It never linked to anyone: its start failed, or (`weft join`) its first contact did.
    NeverLinked(String),
    /// Its driver failed while it ran.
    Stopped(String),
    /// Its arguments or config were refused before it started (said already; the exit
    /// code, 2).
    Refused(ExitCode),
    /// (`weft join`) A signal stopped it before it linked: the message, and the signal's
    /// exit code.
    StoppedBeforeJoin(String, ExitCode),
}

impl NodeFailure {
    /// The error, in words.
    pub(super) fn message(&self) -> &str {
        match self {
            NodeFailure::NeverLinked(m)
            | NodeFailure::Stopped(m)
            | NodeFailure::StoppedBeforeJoin(m, _) => m,
            NodeFailure::Refused(_) => "bad arguments or config",
        }
    }

    /// The failure of a driver's run (`driver`: its name).
    fn of_run(driver: &str, error: RunError) -> NodeFailure {
        match error {
            RunError::NotJoined(m) => NodeFailure::NeverLinked(m),
            RunError::StoppedBeforeJoin(signal) => NodeFailure::StoppedBeforeJoin(
                error.to_string(),
                ExitCode::from(Exit::Signalled(signal).code()),
            ),
            other => NodeFailure::Stopped(format!("{driver} driver: {other}")),
        }
    }
}

impl From<String> for NodeFailure {
    /// An error before the driver runs.
    fn from(message: String) -> NodeFailure {
        NodeFailure::NeverLinked(message)
    }
}

/// Runs `weft node` as [`node`] does, but hands back a failure instead of printing it (a
/// bad argument or config is printed, and is [`NodeFailure::Refused`]).
pub(super) fn run_node(args: NodeArgs) -> Result<ExitCode, NodeFailure> {
    if let Err(e) = args.ui.check() {
        return Err(NodeFailure::Refused(usage(e)));
    }
    if args.detach {
        return Ok(super::detach::detach(&args));
    }
    if args.background_child {
        // A new session: no terminal's hang-up or Ctrl-C reaches the node.
        let _ = rustix::process::setsid();
    }
    init_logging("info");
    let (path, settings, network_key) = match settings_of(&args) {
        Ok(s) => s,
        Err(code) => return Err(NodeFailure::Refused(code)),
    };
    let first_contact = args.first_contact.map(|peer| FirstContact {
        addr: peer.to_string(),
        wait: JOIN_WAIT,
    });
    let net = &args.net.name;
    let lock = args.state_lock.clone();
    let exit = run(
        net,
        &path,
        settings,
        network_key,
        &args.ui,
        first_contact,
        lock,
    )?;
    Ok(ExitCode::from(exit.code()))
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
    #[arg(long = "peer", value_name = "HOST:PORT", value_parser = super::peer_addr)]
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
        None,
        None,
    ) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(failure) => fail(failure.message()),
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
    /// `lock` is the folder's, held by this start (and taken before anything is read).
    fn read(path: &Path, lock: &StateLock) -> Result<Start, String> {
        let folder_existed = !lock.created();
        let read = state::read_key(path).map_err(|e| e.to_string())?;
        let key = match read {
            Some(key) => key,
            // The key is gone but the node's state is not (a key deleted by hand): a new
            // identity over it would take another node's records, counters and peers.
            // (An empty store file is a store whose creation never began: no state.)
            None if std::fs::metadata(path.join(crate::storage::STORE_FILE))
                .is_ok_and(|m| m.len() > 0) =>
            {
                return Err(format!(
                    "{}: the state folder holds a store but no key file; restore the key, or remove the folder to start afresh",
                    path.display()
                ))
            }
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
            let _ = state::remove_state_folder(&self.path);
        }
        written
    }

    fn write_folder(&self, existing: Option<Store>) -> Result<(StateDir, Store), String> {
        let state = StateDir::open(&self.path).map_err(|e| e.to_string())?;
        // The key before a new store: a store with no key beside it is refused at the next
        // start, so a kill between the two must never leave one.
        if self.key_is_new {
            state.write_key(&self.key).map_err(|e| e.to_string())?;
        }
        let store = match existing {
            Some(store) => store,
            None => Store::open_or_create(&self.path).map_err(|e| e.to_string())?,
        };
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
    first_contact: Option<FirstContact>,
    held: Option<std::sync::Arc<StateLock>>,
) -> Result<Exit, NodeFailure> {
    let socket = state::socket_path(path);
    if socket.as_os_str().len() > SOCKET_PATH_BYTES_MAX {
        return Err(format!(
            "{}: too long for a Unix socket (over {SOCKET_PATH_BYTES_MAX} bytes); choose a shorter --state",
            socket.display()
        )
        .into());
    }
    // Held until the node has stopped: no other node, set-up or leave meanwhile (taken
    // already by a command that set the node up in the foreground).
    let lock = match held {
        Some(lock) => lock,
        None => std::sync::Arc::new(StateLock::take(path).map_err(|e| e.to_string())?),
    };
    let start = Start::read(path, &lock)?;
    if let Some(root) = &settings.folder {
        crate::folder::apart::keep_apart(root, &state::own_folders(path))?;
    }
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
    setup.first_contact = first_contact;
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
) -> Result<Exit, NodeFailure> {
    use crate::mio_driver::MioDriver;
    let announcement = announcement(&setup, state.path(), "mio");
    let (driver, handle) = MioDriver::new(setup).map_err(|e| format!("mio driver: {e}"))?;
    let _server = serve(state, handle, limits)?;
    let _ = writeln!(std::io::stdout(), "{announcement}");
    let _page = super::ui::serve_for_node(page, state.path())?;
    driver.run().map_err(|e| NodeFailure::of_run("mio", e))
}

#[cfg(feature = "tokio")]
fn run_tokio(
    setup: Setup,
    state: &StateDir,
    limits: ControlLimits,
    page: super::ui::PageBinding,
) -> Result<Exit, NodeFailure> {
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
        .map_err(|e| NodeFailure::of_run("tokio", e))
}
