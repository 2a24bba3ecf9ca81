//! `weft node ... --detach`: starts the node in the background and returns once it answers.
//!
//! The same program is started again with the same arguments less `--detach` (and with the
//! hidden `--background-child`, on which the node begins a new session), its input from
//! nowhere and its output appended to `<state folder>/node.log`. This process waits until
//! the node answers on its control socket (for `weft join`, until it has also linked to a
//! peer), prints its id and address, and exits 0; if the
//! node exits first, it prints the node's error line and exits 1 (and removes the state
//! folder if it created it only for the log).

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use super::node_args::{settings_of, NodeArgs, JOIN_WAIT};
use super::{fail, init_logging};
use crate::control::{self, ControlReply, ControlRequest};
use crate::state::{self, StateDir, StateLock};

/// The log of a node started with `--detach`, in its state folder.
pub const LOG_FILE: &str = "node.log";

/// The log as it was when a start found it past [`LOG_BYTES_MAX`] (one older log is kept).
pub const OLD_LOG_FILE: &str = "node.log.1";

/// A start that finds the log larger than this (64 MiB) renames it to [`OLD_LOG_FILE`],
/// replacing the one there, and starts a new one.
pub const LOG_BYTES_MAX: u64 = 64 << 20;

/// How long `--detach` waits for the node to answer.
const START_WAIT: Duration = Duration::from_secs(30);

/// How often it looks.
const START_POLL: Duration = Duration::from_millis(50);

/// Runs `weft node ... --detach`.
pub(super) fn detach(args: &NodeArgs) -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    detach_with(args, argv, || {})
}

/// Starts `weft node --name NET --state DIR` in the background for a command that set the
/// node up first (`weft create`, `weft join`): every setting comes from the config file. With
/// `args.first_contact` (`weft join`), it returns once the node has linked to the network.
/// If the node fails to start (or to link), `undo` runs before the error is printed.
pub(super) fn detach_node(
    args: &NodeArgs,
    network: &str,
    state: &Path,
    undo: impl FnOnce(),
) -> ExitCode {
    let mut argv = vec![
        OsString::from("node"),
        OsString::from("--name"),
        OsString::from(network),
        OsString::from("--state"),
        state.as_os_str().to_owned(),
    ];
    argv.extend(args.ui.to_args().into_iter().map(OsString::from));
    if let Some(peer) = args.first_contact {
        argv.push(OsString::from("--first-contact"));
        argv.push(OsString::from(peer.to_string()));
    }
    detach_with(args, argv, undo)
}

fn detach_with(args: &NodeArgs, argv: Vec<OsString>, undo: impl FnOnce()) -> ExitCode {
    init_logging("warn");
    // Bad flags or config are found here, before anything starts (exit 2).
    let path = match settings_of(args) {
        Ok((path, _, _)) => path,
        Err(code) => {
            undo();
            return code;
        }
    };
    let waits = Waits {
        page: args.ui.ui.is_some(),
        link: args.first_contact.is_some(),
    };
    match start(&path, argv, waits) {
        Ok(line) => {
            // The node runs whether or not anyone still reads this (a closed pipe is no
            // failure of the start, and no panic).
            let _ = writeln!(std::io::stdout().lock(), "{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            undo();
            fail(e)
        }
    }
}

/// What a start waits for once the node answers.
#[derive(Debug, Clone, Copy)]
struct Waits {
    /// The web page's line in the log.
    page: bool,
    /// A link to a peer (a joining node's first contact; it stops itself after `JOIN_WAIT`).
    link: bool,
}

/// Starts the node of the state folder `path` in the background; the line to print (and
/// with `page`, the page's line after it).
fn start(path: &Path, argv: Vec<OsString>, waits: Waits) -> Result<String, String> {
    let created = !state::folder_exists(path).map_err(|e| e.to_string())?;
    let socket = state::socket_path(path);
    // Only a look: the node takes the lock itself once it starts.
    drop(StateLock::take(path).map_err(|e| e.to_string())?);
    let started = spawn(path, argv);
    let outcome = started.and_then(|(child, log, offset)| {
        let line = wait(child, &socket, &log, offset, waits.link)?;
        if !waits.page {
            return Ok(line);
        }
        Ok(format!("{line}\n{}", page_line(&log, offset)?))
    });
    if outcome.is_err() && created {
        // Not from under a node or set-up another command started meanwhile; renamed away
        // first, as `weft leave` does: removed in place, a kill partway could leave a store
        // without its key, which every later start refuses.
        if let Ok(_lock) = StateLock::take(path) {
            let _ = state::remove_state_folder(path);
        }
    }
    outcome
}

/// Renames the log in state folder `dir` to [`OLD_LOG_FILE`] if it is larger than
/// `bytes_max`.
fn set_log_aside(dir: &Path, bytes_max: u64) -> Result<(), String> {
    let log = dir.join(LOG_FILE);
    if fs::symlink_metadata(&log).is_ok_and(|m| m.len() > bytes_max) {
        fs::rename(&log, dir.join(OLD_LOG_FILE)).map_err(|e| format!("{}: {e}", log.display()))?;
    }
    Ok(())
}

/// Starts the node with its output appended to the log; the child, the log's path and
/// where this start's output begins in it.
fn spawn(path: &Path, args: Vec<OsString>) -> Result<(std::process::Child, PathBuf, u64), String> {
    let state = StateDir::open(path).map_err(|e| e.to_string())?;
    let log_path = state.path().join(LOG_FILE);
    set_log_aside(state.path(), LOG_BYTES_MAX)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let offset = log
        .metadata()
        .map_err(|e| format!("{}: {e}", log_path.display()))?
        .len();
    let program = std::env::current_exe().map_err(|e| format!("cannot find weft itself: {e}"))?;
    let err = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let child = Command::new(program)
        .args(args)
        .arg("--background-child")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start the node: {e}"))?;
    Ok((child, log_path, offset))
}

/// Waits until the node answers (its line), and with `link` until it has linked to a peer,
/// or until it exits (its error line).
fn wait(
    mut child: std::process::Child,
    socket: &Path,
    log: &Path,
    offset: u64,
    link: bool,
) -> Result<String, String> {
    let mut deadline = Instant::now() + START_WAIT;
    if link {
        // The node stops itself once JOIN_WAIT has passed without a link.
        deadline += std::time::Duration::from_millis(JOIN_WAIT.as_millis());
    }
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(error_line(log, offset).unwrap_or_else(|| {
                    format!(
                        "the node stopped ({status}) before it answered; see {}",
                        log.display()
                    )
                }))
            }
            Ok(None) => {}
            Err(e) => return Err(format!("cannot watch the node: {e}")),
        }
        let answered = match control::request(socket, &ControlRequest::Id) {
            Ok(ControlReply::Id(id)) => Some(id),
            _ => None,
        };
        if let Some(id) = answered.filter(|id| !link || id.peers_direct > 0) {
            return Ok(format!(
                "weft node {} of {}: listening on {} (pid {}, log {})",
                id.node,
                id.network,
                id.listen_addr.as_deref().unwrap_or("?"),
                id.pid,
                log.display()
            ));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let what = if link { "link to a peer" } else { "answer" };
            return Err(format!(
                "the node did not {what} in time; stopped it (see {})",
                log.display()
            ));
        }
        std::thread::sleep(START_POLL);
    }
}

/// The page's line (`weft ui: URL`) the node writes to the log after `offset`, right after
/// it answers; waited for up to [`START_WAIT`].
fn page_line(log: &Path, offset: u64) -> Result<String, String> {
    let deadline = Instant::now() + START_WAIT;
    loop {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(log) {
            if file.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = file.read_to_string(&mut text);
            }
        }
        if let Some(line) = text.lines().find(|l| l.starts_with("weft ui: ")) {
            return Ok(line.to_owned());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the node answers but its web page did not start; see {}",
                log.display()
            ));
        }
        std::thread::sleep(START_POLL);
    }
}

/// The last `weft: ...` line the node wrote to the log after `offset`, without its `weft: `.
fn error_line(log: &Path, offset: u64) -> Option<String> {
    let mut file = fs::File::open(log).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("weft: "))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_past_its_bound_is_set_aside_once_replacing_the_older_one() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (log, old) = (dir.path().join(LOG_FILE), dir.path().join(OLD_LOG_FILE));
        // No log yet: nothing to do.
        set_log_aside(dir.path(), 8).expect("no log");
        assert!(!old.exists());
        fs::write(&log, b"12345678").unwrap();
        set_log_aside(dir.path(), 8).expect("at the bound");
        assert!(log.exists() && !old.exists());
        fs::write(&old, b"oldest").unwrap();
        fs::write(&log, b"123456789").unwrap();
        set_log_aside(dir.path(), 8).expect("past the bound");
        assert!(!log.exists());
        assert_eq!(fs::read(&old).unwrap(), b"123456789");
    }
}
