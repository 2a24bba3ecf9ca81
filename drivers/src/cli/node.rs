//! `weft node`: runs a node with the chosen driver until SIGINT/SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use rand_core::{OsRng, RngCore};
use weft_engine::{Config, Identity};

use super::{fail, init_logging, socket_addr, NetArgs};
use crate::control::{ControlLimits, ControlServer};
use crate::host::Exit;
use crate::setup::Setup;
use crate::state::StateDir;

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

/// Arguments of `weft node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Where to accept connections (`IP:PORT`; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
    listen: SocketAddr,
    /// A peer to dial at start (repeatable); it is redialed, with backoff, whenever it is not
    /// linked, for as long as the node runs.
    #[arg(long = "peer", value_name = "HOST:PORT", value_parser = socket_addr)]
    peers: Vec<SocketAddr>,
    /// The address other nodes are told to dial this one at (default: the listen address;
    /// a node listening on 0.0.0.0 or [::] without it is dialed at the IP its peers see).
    #[arg(long, value_name = "HOST:PORT", value_parser = announce_addr)]
    announce: Option<String>,
    /// The driver.
    #[arg(long, value_enum, default_value_t)]
    driver: Driver,
    /// Join the Chord ring (through the first linked peer) and serve `weft put/get/delete`.
    #[arg(long)]
    chord: bool,
    /// How long a write to a control client (a `weft listen` above all) may make no progress
    /// before the node drops that client.
    #[arg(long, value_name = "MS", default_value_t = ControlLimits::default().write_timeout.as_millis() as u64)]
    control_write_timeout_ms: u64,
    /// How many bytes of broadcasts a `weft listen` client may fall behind by before the node
    /// drops the excess for it (counted as listener drops).
    #[arg(long, value_name = "BYTES", default_value_t = ControlLimits::default().listen_backlog.bytes_max)]
    listen_queue_bytes_max: usize,
    /// Send and accept broadcasts without their origin's signature: faster, but any peer can
    /// then forge a broadcast in any node's name (SPEC.md §11.8). Every node of the network
    /// must be started the same way; a node of the other mode is refused at the handshake.
    #[arg(long)]
    unsigned_broadcasts: bool,
}

impl NodeArgs {
    /// The control socket's limits: the defaults, with what the flags set.
    fn control_limits(&self) -> ControlLimits {
        let defaults = ControlLimits::default();
        ControlLimits {
            write_timeout: std::time::Duration::from_millis(self.control_write_timeout_ms),
            listen_backlog: crate::Backlog {
                bytes_max: self.listen_queue_bytes_max,
                ..defaults.listen_backlog
            },
            ..defaults
        }
    }
}

/// Runs `weft node`: exit 130 after SIGINT/SIGTERM, 1 on an error.
pub fn node(args: NodeArgs) -> ExitCode {
    init_logging("info");
    match run(args) {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => fail(e),
    }
}

fn run(args: NodeArgs) -> Result<Exit, String> {
    let state = StateDir::open(&args.net.state_path()?).map_err(|e| e.to_string())?;
    if std::os::unix::net::UnixStream::connect(state.socket_path()).is_ok() {
        return Err(format!(
            "a node is already running with state folder {}",
            state.path().display()
        ));
    }
    let key = state.load_or_create_key().map_err(|e| e.to_string())?;
    let mut config = Config::new(args.net.name.clone(), key);
    config.incarnation = state.next_incarnation().map_err(|e| e.to_string())?;
    let mut seed = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| format!("no OS randomness: {e}"))?;
    config.rng_seed = u64::from_le_bytes(seed);
    config.broadcast_signatures = !args.unsigned_broadcasts;
    if args.unsigned_broadcasts {
        tracing::warn!(
            "broadcasts are unsigned: any peer can forge one in any node's name (SPEC.md §11.8)"
        );
    }
    if args.chord {
        config.chord = Some(weft_engine::chord::ChordConfig::default());
    }
    let mut setup = Setup::bind(config, args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    if let Some(announce) = &args.announce {
        setup.config.listen_addr = Some(announce.clone());
    }
    setup.peers = args.peers.iter().map(SocketAddr::to_string).collect();
    setup.signals = true;
    setup.state = Some(state.path().to_owned());
    let limits = args.control_limits();
    match args.driver {
        #[cfg(feature = "mio")]
        Driver::Mio => run_mio(setup, &state, limits),
        #[cfg(feature = "tokio")]
        Driver::Tokio => run_tokio(setup, &state, limits),
    }
}

/// Parses `--announce`: a `HOST:PORT` peers can dial (resolved like `--peer`), so not an
/// unspecified IP and not port 0.
fn announce_addr(text: &str) -> Result<String, String> {
    let addr = socket_addr(text)?;
    if addr.ip().is_unspecified() || addr.port() == 0 {
        return Err(format!(
            "{addr} cannot be dialed: give the IP and port peers reach"
        ));
    }
    Ok(addr.to_string())
}

/// The line a node prints once its control socket answers (scripts and tests read the
/// address from it).
fn announcement(setup: &Setup, state: &Path, driver: &str) -> String {
    let config = &setup.config;
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
        "weft node {id} of {}: listening on {addr} ({announced}incarnation {}, {driver} driver, state {})",
        config.network,
        config.incarnation,
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
fn run_mio(setup: Setup, state: &StateDir, limits: ControlLimits) -> Result<Exit, String> {
    use crate::mio_driver::MioDriver;
    let announcement = announcement(&setup, state.path(), "mio");
    let (driver, handle) = MioDriver::new(setup).map_err(|e| format!("mio driver: {e}"))?;
    let _server = serve(state, handle, limits)?;
    let _ = writeln!(std::io::stdout(), "{announcement}");
    driver.run().map_err(|e| format!("mio driver: {e}"))
}

#[cfg(feature = "tokio")]
fn run_tokio(setup: Setup, state: &StateDir, limits: ControlLimits) -> Result<Exit, String> {
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
    // The node is the runtime's only task: run it on this thread.
    runtime
        .block_on(driver.run())
        .map_err(|e| format!("tokio driver: {e}"))
}
