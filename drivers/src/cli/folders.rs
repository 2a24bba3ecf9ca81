//! ploppy's command set: `weft create` starts a network sharing a folder, `weft join` joins
//! one through a peer, `weft start` runs again a network this machine belongs to. Each sets
//! the node up (its config file names the shared folder) and then runs it as `weft node`
//! does: in the foreground until SIGINT/SIGTERM, or in the background with `--detach`.
//!
//! The folder's id is derived from the network's name (`FolderId::from_name`), so every
//! node of a network shares the same one.
//!
//! A join must link to the network through its peer within `JOIN_WAIT` (the node's first
//! contact, `host/first_contact.rs`). If it does not, or if the node of a create or a join
//! never starts, the command takes back what it set up (`BeforeSetUp`) and fails with the
//! reason, so the same command can be run again.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use weft_engine::protocol::FolderId;

use super::config::{self, CONFIG_FILE};
use super::node::{run_node, NodeFailure};
use super::node_args::NodeArgs;
use super::{fail, socket_addr, usage, Driver, NetArgs, UiFlags};
use crate::control::{self, ControlReply, ControlRequest};
use crate::folder::disk::Disk;
use crate::folder::RESERVED_DIR;
use crate::report::FolderReport;
use crate::state::{StateDir, StateError, StateLock};

/// Arguments of `weft create`.
#[derive(Debug, Clone, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The driver, saved for `weft start` [default: mio].
    #[arg(long, value_enum)]
    driver: Option<Driver>,
    /// The folder to share: everything in it if it exists, a new empty one if not.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Where to accept connections (`IP:PORT`) [default: 0.0.0.0 on a free port, which is
    /// saved for `weft start`].
    #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    ui: UiFlags,
    /// Run in the background (see `weft node --detach`).
    #[arg(long)]
    detach: bool,
}

/// Arguments of `weft join`.
#[derive(Debug, Clone, clap::Args)]
pub struct JoinArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The driver, saved for `weft start` [default: mio].
    #[arg(long, value_enum)]
    driver: Option<Driver>,
    /// A node of the network to join through: the join fails, leaving nothing behind, unless
    /// it links to the network through it within 20 s.
    #[arg(long, value_name = "HOST:PORT", value_parser = super::peer_addr)]
    peer: SocketAddr,
    /// Where the shared folder goes: it must be empty or absent.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Where to accept connections (`IP:PORT`) [default: a free port on the interface that
    /// reaches the peer, saved for `weft start`].
    #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    ui: UiFlags,
    /// Run in the background (see `weft node --detach`).
    #[arg(long)]
    detach: bool,
}

/// Arguments of `weft start`.
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    ui: UiFlags,
    /// Run in the background (see `weft node --detach`).
    #[arg(long)]
    detach: bool,
}

/// Runs `weft create`.
pub fn create(args: CreateArgs) -> ExitCode {
    if let Err(e) = args.ui.check() {
        return usage(e);
    }
    let listen = args.listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let set_up = || -> Result<(BeforeSetUp, StateLock), (bool, String)> {
        let lock = lock_new_member(&args.net)?;
        let dir = absolute(&args.dir).map_err(|e| (true, e))?;
        if dir.exists() && !dir.is_dir() {
            return Err((true, format!("{}: not a directory", dir.display())));
        }
        keep_apart(&dir, &args.net).map_err(|e| (true, e))?;
        let listen = fix_port(listen).map_err(|e| (false, e))?;
        BeforeSetUp::set_up(&lock, dir, &args.net.name, listen, None, args.driver)
            .map(|before| (before, lock))
            .map_err(|e| (false, e))
    };
    match set_up() {
        Ok((before, lock)) => {
            let state = before.state.clone();
            let (before, lock) = (Some(before), Some(lock));
            run(args.net, &state, args.detach, args.ui, None, before, lock)
        }
        Err((true, e)) => usage(e),
        Err((false, e)) => fail(e),
    }
}

/// Runs `weft join`.
pub fn join(args: JoinArgs) -> ExitCode {
    if let Err(e) = args.ui.check() {
        return usage(e);
    }
    let set_up = || -> Result<(BeforeSetUp, StateLock), (bool, String)> {
        let lock = lock_new_member(&args.net)?;
        let not_usage = |e| (false, e);
        let dir = absolute(&args.dir).map_err(|e| (true, e))?;
        check_empty(&dir)?;
        keep_apart(&dir, &args.net).map_err(|e| (true, e))?;
        let listen = match args.listen {
            Some(addr) => addr,
            None => SocketAddr::new(interface_towards(args.peer).map_err(not_usage)?, 0),
        };
        let listen = fix_port(listen).map_err(not_usage)?;
        let peer = Some(args.peer);
        BeforeSetUp::set_up(&lock, dir, &args.net.name, listen, peer, args.driver)
            .map(|before| (before, lock))
            .map_err(not_usage)
    };
    match set_up() {
        Ok((before, lock)) => {
            let (state, peer) = (before.state.clone(), Some(args.peer));
            let (before, lock) = (Some(before), Some(lock));
            run(args.net, &state, args.detach, args.ui, peer, before, lock)
        }
        Err((true, e)) => usage(e),
        Err((false, e)) => fail(e),
    }
}

/// Runs the node of `net` with the state folder `state` as `weft node` would (with its web
/// page if `ui` asks); a join's with its `first_contact`. With `before` (what
/// `weft create` or `weft join` set up), a node that never starts, or never links for a
/// join, first has its set-up taken back.
fn run(
    net: NetArgs,
    state: &Path,
    detach: bool,
    ui: UiFlags,
    first_contact: Option<SocketAddr>,
    before: Option<BeforeSetUp>,
    lock: Option<StateLock>,
) -> ExitCode {
    let take_back = || {
        if let Some(before) = &before {
            before.take_back();
        }
    };
    let name = net.name.clone();
    let mut net = net;
    net.state = Some(state.to_owned());
    let mut args = NodeArgs::of(net, detach);
    args.ui = ui;
    args.first_contact = first_contact;
    if detach {
        // The node started in the background takes the lock itself.
        drop(lock);
        return super::detach::detach_node(&args, &name, state, take_back);
    }
    args.state_lock = lock.map(std::sync::Arc::new);
    match run_node(args) {
        Ok(code) => code,
        Err(NodeFailure::NeverLinked(e)) => {
            take_back();
            fail(e)
        }
        Err(NodeFailure::Refused(code)) => {
            take_back();
            code
        }
        Err(NodeFailure::StoppedBeforeJoin(e, code)) => {
            take_back();
            let _ = writeln!(
                io::stderr(),
                "weft: {e}: what the join set up is taken back"
            );
            code
        }
        Err(NodeFailure::Stopped(e)) => fail(e),
    }
}

/// What `weft create` or `weft join` found before it set the node up, so that a node that
/// never starts (or never links, for a join) leaves the machine as it was and the same
/// command can be run again.
struct BeforeSetUp {
    /// The state folder.
    state: PathBuf,
    /// `None`: the state folder did not exist; else its config file's text, if it had one.
    config: Option<Option<String>>,
    /// The shared folder.
    dir: PathBuf,
    dir_existed: bool,
    /// Whether the shared folder's reserved folder existed.
    reserved_existed: bool,
}

impl BeforeSetUp {
    /// Looks at the state folder of `lock` and at `dir` before anything is written.
    fn look(lock: &StateLock, dir: PathBuf) -> Result<BeforeSetUp, String> {
        let state = lock.path().to_owned();
        let config = if !lock.created() {
            let path = config::config_path(&state);
            match crate::small_file::read_text(&path, crate::small_file::CONFIG_BYTES_MAX) {
                Ok(text) => Some(Some(text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Some(None),
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        } else {
            None
        };
        let dir_existed = dir.exists();
        let reserved_existed = dir.join(RESERVED_DIR).exists();
        Ok(BeforeSetUp {
            state,
            config,
            dir,
            dir_existed,
            reserved_existed,
        })
    }

    /// Sets the node up: `dir` made a shared folder of `network` (created if absent), and
    /// the config file written (listen address, `peer` to dial, the folder, the driver). On
    /// an error, what was written is taken back.
    fn set_up(
        lock: &StateLock,
        dir: PathBuf,
        network: &str,
        listen: SocketAddr,
        peer: Option<SocketAddr>,
        driver: Option<Driver>,
    ) -> Result<BeforeSetUp, String> {
        let before = BeforeSetUp::look(lock, dir)?;
        let written = init_folder(&before.dir, network)
            .and_then(|()| write_config(&before.state, listen, peer, &before.dir, driver));
        match written {
            Ok(()) => Ok(before),
            Err(e) => {
                before.undo();
                Err(e)
            }
        }
    }

    /// Takes back what the set-up wrote: the state folder it made (or the config file as it
    /// was), the shared folder's reserved folder if it made it, and the shared folder if it
    /// made it and it is still empty; never a file of the user's. Best effort: the command's
    /// own error is what the user is told. Nothing is taken back while another process holds
    /// the state folder's lock: a node of it runs (or another command sets it up) after all.
    fn take_back(&self) {
        if let Ok(_lock) = StateLock::take(&self.state) {
            self.undo();
        }
    }

    /// Takes back what the set-up wrote, the state folder's lock held.
    fn undo(&self) {
        let config = config::config_path(&self.state);
        let _ = match &self.config {
            // In one step (a kill partway could leave the store without the key).
            None => crate::state::remove_state_folder(&self.state),
            Some(None) => fs::remove_file(&config),
            Some(Some(text)) => StateDir::open(&self.state)
                .and_then(|s| s.replace(CONFIG_FILE, text.as_bytes()))
                .map_err(io::Error::other),
        };
        if !self.reserved_existed {
            let _ = fs::remove_dir_all(self.dir.join(RESERVED_DIR));
        }
        if !self.dir_existed {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// Runs `weft start`.
pub fn start(args: StartArgs) -> ExitCode {
    if let Err(e) = args.ui.check() {
        return usage(e);
    }
    let state = match args.net.state_path() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // Held from before the config is read until the node stops: a leave cannot take the
    // folder away in between.
    let lock = match StateLock::take(&state) {
        Ok(lock) => lock,
        Err(e) => return fail(e),
    };
    match config::load(&state) {
        Ok(d) if d.folder.is_some() => {
            // A config written before create and join refused such a folder, or edited since.
            if let Some(Err(e)) = d.folder.as_deref().map(|dir| keep_apart(dir, &args.net)) {
                return fail(e);
            }
            run(args.net, &state, args.detach, args.ui, None, None, Some(lock))
        }
        Ok(_) => fail(format!(
            "this machine does not belong to network {} (no shared folder in {}): use weft create or weft join",
            args.net.name,
            config::config_path(&state).display()
        )),
        Err(e) => usage(e),
    }
}

/// Takes the lock of `net`'s state folder for a `create` or `join` and refuses a folder
/// that already belongs to a network (see [`refuse_member`]): held through the set-up, so
/// no other set-up, node or leave of it runs meanwhile.
fn lock_new_member(net: &NetArgs) -> Result<StateLock, (bool, String)> {
    let state = net.state_path().map_err(|e| (false, e))?;
    let lock = StateLock::take(&state).map_err(|e| (false, e.to_string()))?;
    refuse_member(&state)?;
    Ok(lock)
}

/// Refuses a state folder that already belongs to a network with a shared folder, and one
/// whose config file is malformed (then `true`: a bad argument, as for `weft node`).
fn refuse_member(state: &Path) -> Result<(), (bool, String)> {
    match config::load(state) {
        Ok(d) if d.folder.is_some() => Err((
            false,
            format!(
                "this machine already belongs to this network (state {}): use weft start",
                state.display()
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err((true, e.to_string())),
    }
}

/// `dir` made absolute against the working directory.
fn absolute(dir: &Path) -> Result<PathBuf, String> {
    std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// A folder to join into must be empty or absent (a file there is a bad argument:
/// `(true, why)`).
fn check_empty(dir: &Path) -> Result<(), (bool, String)> {
    match fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err((false, format!(
                "{}: not empty; weft join needs an empty or absent folder (weft create shares one that has files)",
                dir.display()
            ))),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err((true, format!("{}: not a directory", dir.display())))
        }
        Err(e) => Err((false, format!("{}: {e}", dir.display()))),
    }
}

/// Refuses a shared folder `dir` inside one of `net`'s own folders, or holding one
/// ([`crate::folder::apart`]).
fn keep_apart(dir: &Path, net: &NetArgs) -> Result<(), String> {
    let own = crate::state::own_folders(&net.state_path()?);
    crate::folder::apart::keep_apart(dir, &own)
}

/// Creates the folder (if absent), its reserved folder and its marker.
fn init_folder(dir: &Path, network: &str) -> Result<(), String> {
    let id = FolderId::from_name(network).to_string();
    Disk::init(dir, &id).map_err(|e| format!("cannot share {}: {e}", dir.display()))
}

/// The local address of the interface that routes to `peer` (no packet is sent).
fn interface_towards(peer: SocketAddr) -> Result<std::net::IpAddr, String> {
    let any: SocketAddr = if peer.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let probe = UdpSocket::bind(any).map_err(|e| format!("cannot probe the route: {e}"))?;
    probe
        .connect(peer)
        .map_err(|e| format!("no route to {peer}: {e}"))?;
    probe
        .local_addr()
        .map(|a| a.ip())
        .map_err(|e| format!("no route to {peer}: {e}"))
}

/// Port 0 replaced by a free port (so the one saved for `weft start` is the one used).
fn fix_port(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    probe
        .local_addr()
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Writes the node's config file: where it listens, whom it dials, its shared folder.
fn write_config(
    state: &Path,
    listen: SocketAddr,
    peer: Option<SocketAddr>,
    dir: &Path,
    driver: Option<Driver>,
) -> Result<(), String> {
    let path = state.join(CONFIG_FILE);
    let existing = match crate::small_file::read_text(&path, crate::small_file::CONFIG_BYTES_MAX) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut table: toml::Table = existing
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    table.insert("listen".into(), listen.to_string().into());
    if let Some(peer) = peer {
        table.insert(
            "peers".into(),
            vec![toml::Value::from(peer.to_string())].into(),
        );
    }
    let dir = dir
        .to_str()
        .ok_or_else(|| format!("{}: the path is not UTF-8", dir.display()))?;
    table.insert("folder".into(), dir.into());
    if let Some(driver) = driver.and_then(|d| clap::ValueEnum::to_possible_value(&d)) {
        table.insert("driver".into(), driver.get_name().into());
    }
    // Owner-only (it may hold the network's `secret`), and replaced whole, never truncated.
    StateDir::open(state)
        .and_then(|s| s.replace(CONFIG_FILE, table.to_string().as_bytes()))
        .map_err(|e| e.to_string())
}

/// Arguments of `weft status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Print the folders as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `weft resolve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The conflicted path: relative to the shared folder, or `./PATH` / `../PATH` (or an
    /// absolute path) naming it on disk.
    path: String,
    /// The version to keep: the path itself or one of its conflict copies
    /// (`NAME.conflict-<id>-<n>`), as `weft status` lists them.
    #[arg(long, value_name = "VERSION")]
    keep: String,
}

fn ask(net: &NetArgs, request: &ControlRequest) -> Result<ControlReply, String> {
    let path = net.socket_path()?;
    control::request(&path, request).map_err(|e| e.to_string())
}

fn folders(net: &NetArgs) -> Result<Vec<FolderReport>, String> {
    match ask(net, &ControlRequest::Status { files_max: None })? {
        ControlReply::Folders(f) => Ok(f),
        ControlReply::Error(e) => Err(e),
        other => Err(format!("unexpected answer from the node: {other:?}")),
    }
}

/// How long `weft status` watches transfers in flight to tell their rate.
const RATE_SAMPLE: std::time::Duration = std::time::Duration::from_millis(500);

/// The paths being fetched and the bytes each has so far.
fn fetching(folders: &[FolderReport]) -> BTreeMap<String, (u64, u64)> {
    folders
        .iter()
        .flat_map(|f| f.files.iter())
        .filter(|x| x.state == "fetching")
        .map(|x| (x.path.clone(), (x.bytes_done, x.size)))
        .collect()
}

/// Runs `weft status`: every file and its state. On a terminal, transfers in flight are
/// live progress bars (indicatif) with their rate and time left, until they end; otherwise
/// (a pipe, a script) one line each, with the rate sampled over `RATE_SAMPLE`. Exits
/// [`STATUS_FOLDER_STOPPED`] if a folder is stopped, once all of it is printed.
pub fn status(args: StatusArgs) -> ExitCode {
    use std::io::IsTerminal as _;
    super::init_logging("warn");
    let first = match folders(&args.net) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    if args.json {
        let line = serde_json::to_string(&first).unwrap_or_default();
        return stopped_or(&first, print(&(line + "\n")));
    }
    let before = fetching(&first);
    if !before.is_empty() && io::stdout().is_terminal() {
        let code = stopped_or(&first, print(&status_text(&first, None)));
        live_bars(before, RATE_SAMPLE, || {
            folders(&args.net).map(|f| fetching(&f))
        });
        return code;
    }
    let (now, rates) = if before.is_empty() {
        (first, BTreeMap::new())
    } else {
        std::thread::sleep(RATE_SAMPLE);
        let now = folders(&args.net).unwrap_or(first);
        let secs = RATE_SAMPLE.as_secs_f64();
        let rates: BTreeMap<String, f64> = fetching(&now)
            .iter()
            .map(|(p, (done, _))| {
                let was = before.get(p).map_or(*done, |b| b.0);
                (p.clone(), done.saturating_sub(was) as f64 / secs)
            })
            .collect();
        (now, rates)
    };
    stopped_or(&now, print(&status_text(&now, Some(&rates))))
}

/// `weft status`'s exit code when a folder is stopped (its line says why): a script that
/// checks the code sees it, as `systemctl status` says 3 for a unit that is not running.
pub const STATUS_FOLDER_STOPPED: u8 = 3;

/// [`STATUS_FOLDER_STOPPED`] if one of `folders` is stopped and printing went well, else
/// `printed`.
fn stopped_or(folders: &[FolderReport], printed: ExitCode) -> ExitCode {
    if printed == ExitCode::SUCCESS && folders.iter().any(|f| f.stopped.is_some()) {
        ExitCode::from(STATUS_FOLDER_STOPPED)
    } else {
        printed
    }
}

/// Live indicatif bars for the transfers in flight (by name: bytes so far, size), polled
/// with `poll` every `period` until none is left (a finished one says so) or the node stops
/// answering.
pub(super) fn live_bars(
    first: BTreeMap<String, (u64, u64)>,
    period: std::time::Duration,
    mut poll: impl FnMut() -> Result<BTreeMap<String, (u64, u64)>, String>,
) {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    let style = ProgressStyle::with_template(
        "  fetching  [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec} {eta} left  {msg}",
    )
    .map(|s| s.progress_chars("#>-"))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let multi = MultiProgress::new();
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut now = first;
    loop {
        for (path, (done, size)) in &now {
            let bar = bars.entry(path.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(*size));
                bar.set_style(style.clone());
                bar.set_message(super::terminal_text(path));
                bar
            });
            bar.set_length(*size);
            bar.set_position(*done);
        }
        bars.retain(|path, bar| {
            let going = now.contains_key(path);
            if !going {
                bar.finish_with_message(format!("{}: done", super::terminal_text(path)));
            }
            going
        });
        if bars.is_empty() {
            return;
        }
        std::thread::sleep(period);
        match poll() {
            Ok(f) => now = f,
            Err(e) => {
                let _ = multi.println(format!("status: {e}"));
                return;
            }
        }
    }
}

/// `weft status`'s text: a line per folder, then one per path (state, size, path). A path
/// being fetched gets its bytes so far, and with `rates`, its rate and time left; without,
/// it is left to the live bars.
fn status_text(folders: &[FolderReport], rates: Option<&BTreeMap<String, f64>>) -> String {
    use indicatif::{HumanBytes, HumanDuration};
    use std::fmt::Write as _;
    let mut out = String::new();
    for f in folders {
        let state = match (&f.stopped, f.ready) {
            (Some(why), _) => format!("stopped: {}", super::terminal_text(why)),
            (None, false) => "loading".into(),
            (None, true) => "running".into(),
        };
        let root = super::terminal_text(&f.root);
        let _ = writeln!(out, "folder {} at {root} ({state})", f.folder);
        for x in &f.files {
            let path = super::terminal_text(&x.path);
            let size = HumanBytes(x.size).to_string();
            match x.state.as_str() {
                "fetching" => {
                    let Some(rates) = rates else { continue };
                    let rate = rates.get(&x.path).copied().unwrap_or(0.0);
                    let left = if rate > 0.0 {
                        let secs = x.size.saturating_sub(x.bytes_done) as f64 / rate;
                        format!(
                            "{} left",
                            HumanDuration(std::time::Duration::from_secs_f64(secs))
                        )
                    } else {
                        "waiting".into()
                    };
                    let _ = writeln!(
                        out,
                        "  fetching  {}/{} {}/s {left}  {}",
                        HumanBytes(x.bytes_done),
                        size,
                        HumanBytes(rate as u64),
                        path
                    );
                }
                "error" => {
                    let why = super::terminal_text(x.error.as_deref().unwrap_or("failed"));
                    let _ = writeln!(out, "  error     {size:>10}  {path}: {why}");
                }
                state => {
                    let _ = writeln!(out, "  {state:<9} {size:>10}  {path}");
                }
            }
        }
    }
    if folders.is_empty() {
        out.push_str("no shared folder on this node\n");
    }
    out
}

/// A resolve's `./PATH` or `../PATH` as its path on disk, from the current directory (the
/// node takes a path on disk under its folder's root as that path of the folder); any other
/// path as it is, a path of the folder.
fn resolve_arg(path: &str) -> String {
    let from_here = path == "." || path.starts_with("./") || path.starts_with("../");
    if !from_here {
        return path.to_owned();
    }
    let real = crate::folder::apart::real_path(Path::new(path));
    real.to_str().map_or_else(|| path.to_owned(), str::to_owned)
}

/// Runs `weft resolve`.
pub fn resolve(args: ResolveArgs) -> ExitCode {
    super::init_logging("warn");
    let request = ControlRequest::Resolve {
        path: resolve_arg(&args.path),
        keep: resolve_arg(&args.keep),
    };
    match ask(&args.net, &request) {
        Ok(ControlReply::Resolved) => print(&format!(
            "{}: keeping {}; the other versions are being removed everywhere\n",
            args.path, args.keep
        )),
        Ok(ControlReply::Error(e)) => fail(e),
        Ok(other) => fail(format!("unexpected answer from the node: {other:?}")),
        Err(e) => fail(e),
    }
}

fn print(text: &str) -> ExitCode {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Arguments of `weft leave`.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaveArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Also delete the shared folder and everything in it (without it, the files stay, and
    /// of `.weft` only weft's own files go: its trash stays while it holds anything).
    #[arg(long)]
    delete: bool,
}

/// Whether the folder at `folder` is network `net`'s shared folder: its marker
/// (`.weft/folder`, a regular file) names the network's folder id; `None` if nothing is at
/// `folder`.
fn ours(folder: &Path, net: &str) -> io::Result<Option<bool>> {
    match fs::symlink_metadata(folder) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let reserved = folder.join(crate::folder::RESERVED_DIR);
    if !fs::symlink_metadata(&reserved).is_ok_and(|m| m.is_dir()) {
        return Ok(Some(false));
    }
    // The marker, else (none there) the one a `weft leave --delete` killed partway set
    // aside: a marker of another network written since (a `weft create` of the same
    // directory) wins over it.
    let id = FolderId::from_name(net).to_string();
    let marker = reserved.join(crate::folder::MARKER_FILE);
    let file = if fs::symlink_metadata(&marker).is_ok() {
        marker
    } else {
        reserved.join(crate::folder::LEAVING_MARKER_FILE)
    };
    Ok(Some(
        crate::folder::disk::marker_names(&file, &id).unwrap_or(false),
    ))
}

/// Removes what weft keeps in a shared folder's reserved folder `reserved`, and nothing else
/// (whatever else is there is not weft's: never `remove_dir_all`): the temporary files
/// (named by 16 hex digits) and their folder, the marker, the trash folder if it is empty
/// (the trash keeps replaced and deleted files a week: leaving must not lose what the user
/// could still take back), then the reserved folder if nothing is left in it. Returns how
/// many entries the trash keeps.
pub(crate) fn remove_reserved(reserved: &Path) -> io::Result<usize> {
    let gone_is_fine = |done: io::Result<()>| match done {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    let tmp = reserved.join(crate::folder::TEMP_DIR);
    // A `tmp` that is a symlink is not read through: its target is not weft's.
    let tmp_is_dir = fs::symlink_metadata(&tmp).is_ok_and(|m| m.is_dir());
    if let Some(entries) = fs::read_dir(&tmp).ok().filter(|_| tmp_is_dir) {
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let is_temp = name.to_str().is_some_and(|n| {
                n.len() == 16 && n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            });
            if is_temp && entry.file_type()?.is_file() {
                gone_is_fine(fs::remove_file(entry.path()))?;
            }
        }
    }
    // Each folder goes only if nothing is left in it.
    let _ = fs::remove_dir(&tmp);
    let trash = reserved.join(crate::folder::TRASH_DIR);
    let trash_kept = fs::read_dir(&trash).map_or(0, |d| d.count());
    if trash_kept == 0 {
        let _ = fs::remove_dir(&trash);
    }
    gone_is_fine(fs::remove_file(reserved.join(crate::folder::MARKER_FILE)))?;
    gone_is_fine(fs::remove_file(
        reserved.join(crate::folder::LEAVING_MARKER_FILE),
    ))?;
    let part = format!("{}.part", crate::folder::MARKER_FILE);
    gone_is_fine(fs::remove_file(reserved.join(part)))?;
    let _ = fs::remove_dir(reserved);
    Ok(trash_kept)
}

/// `weft leave --delete`'s removal of the shared folder `folder` (its marker checked): the
/// folder and everything in it; a `folder` that is a symlink (to the folder, as the marker
/// read through it showed) goes with the folder it leads to, which `remove_dir_all` of the
/// link alone would leave in place.
fn delete_folder(folder: &Path) -> io::Result<()> {
    let link = fs::symlink_metadata(folder)?.file_type().is_symlink();
    let root = if link {
        folder.canonicalize()?
    } else {
        folder.to_path_buf()
    };
    set_marker_aside(&root)?;
    // The files first, weft's reserved folder (with the set-aside marker) last.
    for entry in fs::read_dir(&root)? {
        let entry = entry?;
        if entry.file_name() == crate::folder::RESERVED_DIR {
            continue;
        }
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(entry.path())?;
        } else {
            fs::remove_file(entry.path())?;
        }
    }
    fs::remove_dir_all(&root)?;
    if link {
        fs::remove_file(folder)?;
    }
    Ok(())
}

/// Renames the marker of the folder at `root` to [`crate::folder::LEAVING_MARKER_FILE`] and
/// syncs the rename, before anything in the folder is removed: a `weft leave --delete`
/// killed (or failing) partway never leaves the folder's marker over a folder half deleted,
/// which the next `weft start` would have taken for the user's deletes and sent to every
/// peer. Without its marker the folder stops instead (SPEC.md §22.10); a leave run again
/// still knows it by the set-aside marker. One already set aside stays.
fn set_marker_aside(root: &Path) -> io::Result<()> {
    let reserved = root.join(crate::folder::RESERVED_DIR);
    let leaving = reserved.join(crate::folder::LEAVING_MARKER_FILE);
    match fs::rename(reserved.join(crate::folder::MARKER_FILE), &leaving) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound && leaving.exists() => {}
        Err(e) => return Err(e),
    }
    fs::File::open(&reserved)?.sync_all()
}

/// How long `weft leave` waits for a running node to stop.
const LEAVE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Runs `weft leave`: stops the node if it runs, then forgets the network (its state
/// folder) and the shared folder's `.weft` (or, with `--delete`, the whole folder).
pub fn leave(args: LeaveArgs) -> ExitCode {
    super::init_logging("warn");
    let state = match args.net.state_path() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let folder = match config::load(&state) {
        Ok(d) => match d.folder {
            Some(f) => f,
            None => {
                return fail(format!(
                    "this machine does not belong to network {} (no shared folder in {})",
                    args.net.name,
                    config::config_path(&state).display()
                ))
            }
        },
        Err(e) => return usage(e),
    };
    // Nothing is removed under a node that still runs, nor while another command sets the
    // network up or starts it: the state folder's lock is waited for (the node asked to
    // stop), and held through the removal.
    let socket = crate::state::socket_path(&state);
    let deadline = std::time::Instant::now() + LEAVE_WAIT;
    let mut asked = false;
    let _lock = loop {
        if !asked {
            asked = matches!(
                control::request(&socket, &ControlRequest::Shutdown),
                Ok(ControlReply::Stopping(_))
            );
        }
        match StateLock::take(&state) {
            Ok(lock) => break lock,
            Err(StateError::Busy(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(StateError::Busy(_)) => {
                return fail(format!(
                    "a node of {} still runs here (or a weft create, join or start of it is under way) and did not stop within {} s; nothing was removed",
                    args.net.name,
                    LEAVE_WAIT.as_secs()
                ))
            }
            Err(e) => return fail(e.to_string()),
        }
    };
    // A node of a weft from before the lock holds none: it still answers while it exits.
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return fail(format!(
            "a node of {} still runs here and did not stop; nothing was removed",
            args.net.name
        ));
    }
    let reserved = folder.join(crate::folder::RESERVED_DIR);
    // Only a folder whose marker names this network is touched: the config is a file people
    // edit, and the folder may have been moved and something else put at its path.
    let ours = match ours(&folder, &args.net.name) {
        Ok(ours) => ours,
        Err(e) => return fail(format!("{}: {e}; nothing was removed", folder.display())),
    };
    if args.delete && ours == Some(false) {
        return fail(format!(
            "{} is not network {}'s shared folder (its {}/{} does not name it); nothing was \
             removed (without --delete the network is forgotten and the folder left alone)",
            folder.display(),
            args.net.name,
            crate::folder::RESERVED_DIR,
            crate::folder::MARKER_FILE,
        ));
    }
    let mut trash_kept = 0;
    let removed = if ours != Some(true) {
        // Gone, or not ours: nothing in it is touched.
        Ok(())
    } else if args.delete {
        delete_folder(&folder)
    } else {
        remove_reserved(&reserved).map(|kept| trash_kept = kept)
    };
    match removed {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return fail(format!("{}: {e}", folder.display())),
    }
    if let Err(e) = crate::state::remove_state_folder(&state) {
        return fail(format!("{}: {e}", state.display()));
    }
    let kept = match ours {
        Some(true) if args.delete => "deleted",
        Some(true) => "kept",
        Some(false) => "left alone: it is not this network's",
        None => "gone already",
    };
    let trash = match trash_kept {
        0 if ours == Some(true) && !args.delete && reserved.exists() => format!(
            "; {} stays: it holds what weft did not put there",
            reserved.display()
        ),
        0 => String::new(),
        1 => format!(
            "; 1 replaced or deleted file stays in {}",
            reserved.join(crate::folder::TRASH_DIR).display()
        ),
        n => format!(
            "; {n} replaced or deleted files stay in {}",
            reserved.join(crate::folder::TRASH_DIR).display()
        ),
    };
    print(&format!(
        "left {}; the shared folder {} is {kept}{trash}\n",
        args.net.name,
        folder.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::FileReport;

    #[test]
    fn a_resolve_path_from_here_is_sent_as_its_path_on_disk() {
        let here = std::env::current_dir().expect("a current directory");
        let here = here.canonicalize().expect("its real path");
        assert_eq!(resolve_arg("doc.txt"), "doc.txt");
        assert_eq!(resolve_arg("a/doc.txt"), "a/doc.txt");
        assert_eq!(
            resolve_arg("./sub/doc.txt"),
            here.join("sub/doc.txt").display().to_string()
        );
        let parent = here.parent().expect("a parent");
        assert_eq!(
            resolve_arg("../doc.txt"),
            parent.join("doc.txt").display().to_string()
        );
    }

    #[test]
    fn leaving_removes_weft_temporary_files_only_and_never_through_a_symlink() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let reserved = tmp.path().join(".weft");
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir_all(reserved.join("trash")).expect("mkdir");
        fs::create_dir_all(&elsewhere).expect("mkdir");
        fs::write(reserved.join("folder"), "00ff\n").expect("marker");
        fs::write(elsewhere.join("00000000000000ff"), "not weft's").expect("write");
        std::os::unix::fs::symlink(&elsewhere, reserved.join("tmp")).expect("symlink");
        assert_eq!(remove_reserved(&reserved).expect("removed"), 0);
        assert!(
            elsewhere.join("00000000000000ff").exists(),
            "not read through the link"
        );
        assert!(!reserved.join("folder").exists() && !reserved.join("trash").exists());
        assert!(reserved.exists(), "kept: it holds the link");

        fs::remove_file(reserved.join("tmp")).expect("unlink");
        fs::create_dir(reserved.join("tmp")).expect("mkdir");
        fs::write(reserved.join("tmp/00000000000000ff"), "weft's").expect("write");
        fs::write(reserved.join("tmp/00000000000000FF"), "not weft's").expect("write");
        remove_reserved(&reserved).expect("removed");
        assert!(!reserved.join("tmp/00000000000000ff").exists());
        assert!(reserved.join("tmp/00000000000000FF").exists());
    }

    /// A `weft leave --delete` first sets the folder's marker aside: stopped there (killed,
    /// or a file it could not remove), the folder is no node's any more (a node started on
    /// it stops instead of sending the missing files as deletes), and the leave run again
    /// still knows it and finishes.
    #[test]
    fn a_folder_being_deleted_by_leave_is_no_nodes_and_still_the_networks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let folder = tmp.path().join("shared");
        let id = FolderId::from_name("net").to_string();
        let reserved = folder.join(crate::folder::RESERVED_DIR);
        fs::create_dir_all(reserved.join("tmp")).expect("mkdir");
        fs::write(reserved.join(crate::folder::MARKER_FILE), format!("{id}\n")).expect("marker");
        fs::write(folder.join("a.txt"), "a").expect("write");
        assert_eq!(ours(&folder, "net").expect("read"), Some(true));

        set_marker_aside(&folder).expect("set aside");
        let marker = reserved.join(crate::folder::MARKER_FILE);
        assert!(!crate::folder::disk::marker_names(&marker, &id).unwrap_or(false));
        assert_eq!(ours(&folder, "net").expect("read"), Some(true));
        assert_eq!(ours(&folder, "other").expect("read"), Some(false));
        set_marker_aside(&folder).expect("again: already aside");
        // The directory shared again by another network since: the set-aside marker is
        // not this network's claim on it any more.
        let other = FolderId::from_name("other").to_string();
        fs::write(&marker, format!("{other}\n")).expect("another network's marker");
        assert_eq!(ours(&folder, "net").expect("read"), Some(false));
        assert_eq!(ours(&folder, "other").expect("read"), Some(true));
        fs::remove_file(&marker).expect("back to the leave's state");

        delete_folder(&folder).expect("deleted");
        assert!(!folder.exists());

        // Shared again (a new marker) where a killed leave set one aside: that one goes.
        let again = tmp.path().join("again");
        let leaving = again.join(".weft").join(crate::folder::LEAVING_MARKER_FILE);
        fs::create_dir_all(leaving.parent().expect("its folder")).expect("mkdir");
        fs::write(&leaving, format!("{id}\n")).expect("a set-aside marker");
        let other = FolderId::from_name("other").to_string();
        Disk::init(&again, &other).expect("shared again");
        assert!(!leaving.exists());
        assert_eq!(ours(&again, "net").expect("read"), Some(false));
    }

    #[test]
    fn status_shows_a_peers_path_without_its_terminal_escapes() {
        let file = |path: &str, state: &str| FileReport {
            path: path.into(),
            kind: "file".into(),
            size: 1,
            state: state.into(),
            bytes_done: 1,
            error: Some("disk \u{1b}[31mfull".into()),
        };
        let folder = FolderReport {
            folder: "00ff".into(),
            root: "/home/me/shared".into(),
            stopped: None,
            ready: true,
            files_total: None,
            files: vec![
                file("a\u{1b}]0;owned\u{7}.txt", "synced"),
                file("b\u{202e}gpj.exe", "error"),
            ],
        };
        let text = status_text(&[folder], None);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        assert!(text.contains("a\\u{1b}]0;owned\\u{7}.txt"), "{text}");
        assert!(
            text.contains("b\\u{202e}gpj.exe: disk \\u{1b}[31mfull"),
            "{text}"
        );
    }
}
