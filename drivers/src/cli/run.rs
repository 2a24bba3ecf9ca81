//! `weft run`: a program run on a peer through the local node, its output streamed back live
//! (SPEC.md §23.6).
//!
//! Exit status: the remote process's code; 128 + the signal's number if a signal ended it;
//! 255 with one line for weft's own errors. The first Ctrl-C asks the runner to interrupt the
//! process (SIGINT, then SIGKILL after `RUN_GRACE`): the remote status if it ends within the
//! grace period, else 130. A second Ctrl-C exits 130 at once (the node asks for the kill).

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{init_logging, NetArgs};
use crate::control::{self, ControlReply, ControlRequest, RunExitReport};
use crate::report::unhex;
use weft_engine::run::RUN_GRACE;

/// The exit status of weft's own errors.
const WEFT_ERROR: u8 = 255;

/// The exit status after Ctrl-C when the remote process did not end within the grace period.
const INTERRUPTED: u8 = 130;

/// How long after the grace period `weft run` waits for the remote exit before it gives up
/// (the kill's answer has to cross the link).
const GRACE_SLACK: Duration = Duration::from_secs(2);

/// Arguments of `weft run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    net: NetArgs,
    /// The peer that runs it: its node id, or a unique start of it (as `weft network` shows).
    #[arg(long, value_name = "NODE")]
    peer: String,
    /// Run it through `/bin/sh -c` on the peer, the program and its arguments joined with
    /// spaces (without it no shell is involved).
    #[arg(long)]
    shell: bool,
    /// Replicate this directory to the peer first (only what changed since the last run goes
    /// over) and run the program inside the peer's copy of it.
    #[arg(long, value_name = "DIR")]
    sync: Option<std::path::PathBuf>,
    /// The program and its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM"
    )]
    command: Vec<String>,
}

/// Prints `weft: <error>` and returns 255.
fn weft_error(error: impl std::fmt::Display) -> ExitCode {
    let line = super::error_line(&error.to_string());
    let _ = writeln!(std::io::stderr(), "weft: {line}");
    ExitCode::from(WEFT_ERROR)
}

/// When the first Ctrl-C came, if it did.
type Interrupted = Arc<Mutex<Option<Instant>>>;

/// Runs `weft run`.
pub fn run(args: RunArgs) -> ExitCode {
    init_logging("warn");
    let Some((program, rest)) = args.command.split_first() else {
        return super::usage("no program to run");
    };
    let path = match args.net.socket_path() {
        Ok(path) => path,
        Err(e) => return weft_error(e),
    };
    let sync = match &args.sync {
        None => None,
        Some(dir) => match std::fs::canonicalize(dir) {
            Ok(path) if path.is_dir() => Some(path.to_string_lossy().into_owned()),
            Ok(_) => return weft_error(format!("--sync {}: not a directory", dir.display())),
            Err(e) => return weft_error(format!("--sync {}: {e}", dir.display())),
        },
    };
    let request = ControlRequest::Run {
        peer: args.peer.clone(),
        program: program.clone(),
        args: rest.to_vec(),
        shell: args.shell,
        sync,
    };
    let mut client = match control::run(&path, &request) {
        Ok(client) => client,
        Err(control::ControlError::NotRunning(_)) => {
            return weft_error(format!(
                "no node of {} is running here (start it with `weft node --name {}`)",
                args.net.name, args.net.name
            ))
        }
        Err(e) => return weft_error(e),
    };
    let interrupted: Interrupted = Arc::new(Mutex::new(None));
    match client.signaller() {
        Ok(signaller) => {
            if let Err(e) = watch_ctrl_c(signaller, Arc::clone(&interrupted)) {
                return weft_error(format!("cannot watch for Ctrl-C: {e}"));
            }
        }
        Err(e) => return weft_error(e),
    }
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    loop {
        let reply = match client.next_reply() {
            Ok(Some(reply)) => reply,
            Ok(None) => return weft_error("the node closed the connection"),
            Err(e) => return weft_error(e),
        };
        match reply {
            ControlReply::RunStarted => {}
            ControlReply::RunOutput(piece) => {
                let Some(bytes) = unhex(&piece.hex) else {
                    return weft_error("the node sent output that is not hex");
                };
                let out: &mut dyn Write = if piece.stream == "stderr" {
                    &mut stderr
                } else {
                    &mut stdout
                };
                // A closed local stream (`| head`): the rest of the output has nowhere to go.
                if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                    return ExitCode::from(WEFT_ERROR);
                }
            }
            ControlReply::RunExit(status) => return exit_code(&status, &interrupted),
            ControlReply::RunRefused(text) => {
                return weft_error(format!("refused by the peer: {text}"))
            }
            ControlReply::RunLost => {
                return weft_error(
                    "the run is lost: the link to the peer went, or the peer did not answer within 60 s (660 s in a folder); its process is killed",
                )
            }
            // After a Ctrl-C (the run given up before it was asked for, say): said, and 130.
            ControlReply::Error(e) if is_interrupted(&interrupted) => {
                let _ = weft_error(e);
                return ExitCode::from(INTERRUPTED);
            }
            ControlReply::Error(e) => return weft_error(e),
            other => return weft_error(format!("unexpected answer from the node: {other:?}")),
        }
    }
}

/// The local exit status for the remote one: after a Ctrl-C, the remote status only if the
/// process ended within the grace period.
fn exit_code(status: &RunExitReport, interrupted: &Interrupted) -> ExitCode {
    let late = interrupted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some_and(|at| at.elapsed() > grace());
    if late {
        return ExitCode::from(INTERRUPTED);
    }
    if status.not_back {
        let how = match (status.code, status.signal) {
            (Some(code), _) => format!("exited with {code}"),
            (None, Some(signal)) => format!("was ended by signal {signal}"),
            (None, None) => "ended".to_string(),
        };
        return weft_error(format!(
            "the program {how}, but what it wrote in the peer's copy did not all come back \
             (the node's log says why)"
        ));
    }
    match (status.code, status.signal) {
        (Some(code), _) => ExitCode::from(code),
        (None, Some(signal)) => ExitCode::from(128u8.saturating_add(signal)),
        (None, None) => weft_error("the node sent an exit without a status"),
    }
}

/// Whether a Ctrl-C came.
fn is_interrupted(interrupted: &Interrupted) -> bool {
    interrupted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some()
}

fn grace() -> Duration {
    Duration::from_millis(RUN_GRACE.as_millis())
}

/// On the first SIGINT, asks for an interrupt and, if the remote exit has not come by the
/// grace period and some slack, exits 130; on a second, asks for the kill and exits 130.
fn watch_ctrl_c(
    mut signaller: control::RunSignaller,
    interrupted: Interrupted,
) -> std::io::Result<()> {
    use signal_hook::consts::SIGINT;
    let mut signals = signal_hook::iterator::Signals::new([SIGINT])?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("weft-run-signals".into())
        .spawn(move || {
            let mut first = true;
            for _ in signals.forever() {
                if first {
                    first = false;
                    *interrupted.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    let _ = signaller.send("interrupt");
                    std::thread::Builder::new()
                        .name("weft-run-grace".into())
                        .spawn(|| {
                            std::thread::sleep(grace() + GRACE_SLACK);
                            let _ = std::io::stdout().flush();
                            std::process::exit(i32::from(INTERRUPTED));
                        })
                        .ok();
                } else {
                    let _ = signaller.send("kill");
                    let _ = std::io::stdout().flush();
                    std::process::exit(i32::from(INTERRUPTED));
                }
            }
            drop(handle);
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_status_becomes_the_local_one() {
        let none: Interrupted = Arc::new(Mutex::new(None));
        let code = |code, signal| {
            let status = RunExitReport {
                code,
                signal,
                not_back: false,
            };
            format!("{:?}", exit_code(&status, &none))
        };
        assert_eq!(code(Some(3), None), format!("{:?}", ExitCode::from(3)));
        assert_eq!(code(None, Some(9)), format!("{:?}", ExitCode::from(137)));
        let long_ago: Interrupted = Arc::new(Mutex::new(Instant::now().checked_sub(grace() * 2)));
        let status = RunExitReport {
            code: Some(0),
            signal: None,
            not_back: false,
        };
        assert_eq!(
            format!("{:?}", exit_code(&status, &long_ago)),
            format!("{:?}", ExitCode::from(130))
        );
        // Its writes not all back: weft's own error, whatever the program's status.
        let status = RunExitReport {
            code: Some(0),
            signal: None,
            not_back: true,
        };
        assert_eq!(
            format!("{:?}", exit_code(&status, &none)),
            format!("{:?}", ExitCode::from(WEFT_ERROR))
        );
    }
}
