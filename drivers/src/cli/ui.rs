//! `weft ui`: serves the web page of a running node (talking to it over its control socket)
//! until SIGINT or SIGTERM; and `--ui ADDR`, the same page inside the node's own process, on
//! `weft node`, `create`, `join` and `start`. See `crate::ui` and SPEC.md §17.1.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use super::{fail, init_logging, socket_addr, usage, NetArgs};

/// The web page flags of `weft node`, `create`, `join` and `start`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UiFlags {
    /// Serve the node's web page at ADDR (`IP:PORT`; port 0 picks a free one; a loopback
    /// address unless --ui-allow-remote); the URL to open, with its token, is printed as
    /// `weft ui: URL`.
    #[arg(long = "ui", value_name = "ADDR", value_parser = socket_addr)]
    pub ui: Option<SocketAddr>,
    /// Let --ui listen on an address other machines can reach (plain HTTP: anyone who sees
    /// the token controls the node); a warning is printed.
    #[arg(long = "ui-allow-remote", requires = "ui")]
    pub ui_allow_remote: bool,
}

impl UiFlags {
    /// The flags as arguments again (for the node `--detach` starts).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(addr) = self.ui {
            args.push("--ui".into());
            args.push(addr.to_string());
        }
        if self.ui_allow_remote {
            args.push("--ui-allow-remote".into());
        }
        args
    }

    /// Refuses a non-loopback `--ui` without `--ui-allow-remote` (a usage error), before the
    /// node starts.
    pub fn check(&self) -> Result<(), String> {
        match self.ui {
            Some(addr) => check_listen(addr, self.ui_allow_remote).map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Refuses a non-loopback `listen` without `allow_remote`; with it, the warning to print.
pub fn check_listen(listen: SocketAddr, allow_remote: bool) -> Result<Option<String>, String> {
    if listen.ip().is_loopback() {
        return Ok(None);
    }
    if !allow_remote {
        return Err(format!(
            "the web page would listen on {listen}, which other machines may reach: pass --ui-allow-remote to mean it, or give a loopback address"
        ));
    }
    Ok(Some(format!(
        "the web page listens on {listen}, reachable from other machines over plain HTTP: anyone who sees its token controls this node, and can read and write this user's files through drop folders"
    )))
}

/// Arguments of `weft ui`.
#[derive(Debug, Clone, clap::Args)]
pub struct UiArgs {
    #[command(flatten)]
    net: NetArgs,
    /// Where to serve the page (`IP:PORT`; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", value_parser = socket_addr, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Let --listen be an address other machines can reach (plain HTTP: anyone who sees the
    /// token controls the node); a warning is printed.
    #[arg(long = "ui-allow-remote")]
    ui_allow_remote: bool,
}

/// The page's listener and the token already in the state folder, if any: what can fail is
/// checked before the node writes anything (`None`: no `--ui`).
#[cfg(feature = "ui")]
pub(super) type PageBinding = Option<crate::ui::server::Bound>;

/// Without the `ui` feature there is never a page.
#[cfg(not(feature = "ui"))]
pub(super) type PageBinding = Option<std::convert::Infallible>;

/// Binds the page's address if `flags` ask for a page (and warns of a remote one); writes
/// nothing.
#[cfg(feature = "ui")]
pub(super) fn bind_for_node(flags: &UiFlags, _state: &Path) -> Result<PageBinding, String> {
    let Some(listen) = flags.ui else {
        return Ok(None);
    };
    if let Some(warning) = check_listen(listen, flags.ui_allow_remote)? {
        tracing::warn!("{warning}");
    }
    crate::ui::server::Bound::bind(listen).map(Some)
}

/// Without the `ui` feature, `--ui` is refused.
#[cfg(not(feature = "ui"))]
pub(super) fn bind_for_node(flags: &UiFlags, _state: &Path) -> Result<PageBinding, String> {
    match flags.ui {
        Some(_) => Err("this weft was built without the web page (feature `ui`)".into()),
        None => Ok(None),
    }
}

/// Serves the page bound for the node whose state folder is `state` (with a new token,
/// written there) and prints its line; the server runs until it is dropped.
#[cfg(feature = "ui")]
pub(super) fn serve_for_node(
    page: PageBinding,
    state: &Path,
) -> Result<Option<crate::ui::UiServer>, String> {
    page.map(|bound| serve(bound, state)).transpose()
}

/// Without the `ui` feature there is never a page.
#[cfg(not(feature = "ui"))]
pub(super) fn serve_for_node(page: PageBinding, _state: &Path) -> Result<Option<()>, String> {
    Ok(page.map(|never| match never {}))
}

/// Serves the page on `bound` with a new token (written to the state folder `state`) and
/// prints its line, `weft ui: URL`.
#[cfg(feature = "ui")]
fn serve(bound: crate::ui::server::Bound, state: &Path) -> Result<crate::ui::UiServer, String> {
    let token = crate::ui::auth::Token::renew(state)?;
    let server = bound.serve(token, crate::state::socket_path(state))?;
    let line = format!("weft ui: {}\n", server.url());
    let _ = std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes());
    Ok(server)
}

/// Runs `weft ui`: exit 130 after SIGINT, 143 after SIGTERM, 1 if the page cannot be served,
/// 2 on bad arguments.
pub fn ui(args: UiArgs) -> ExitCode {
    init_logging("warn");
    if let Err(e) = check_listen(args.listen, args.ui_allow_remote) {
        return usage(e);
    }
    let state = match args.net.state_path() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match crate::state::folder_exists(&state) {
        Ok(true) => {}
        Ok(false) => {
            return fail(format!(
                "no node has run with state folder {}: start one with weft node, create or join",
                state.display()
            ))
        }
        Err(e) => return fail(e),
    }
    serve_until_signal(&state, args.listen, args.ui_allow_remote)
}

#[cfg(feature = "ui")]
fn serve_until_signal(state: &Path, listen: SocketAddr, allow_remote: bool) -> ExitCode {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot watch for signals: {e}")),
    };
    let flags = UiFlags {
        ui: Some(listen),
        ui_allow_remote: allow_remote,
    };
    let server = match bind_for_node(&flags, state).and_then(|page| serve_for_node(page, state)) {
        Ok(Some(s)) => s,
        Ok(None) => return fail("no page to serve"),
        Err(e) => return fail(e),
    };
    let signal = signals.forever().next().unwrap_or(SIGINT);
    drop(server);
    // The shell's convention: 128 + the signal's number.
    ExitCode::from(128 + u8::try_from(signal).unwrap_or(0))
}

#[cfg(not(feature = "ui"))]
fn serve_until_signal(_state: &Path, _listen: SocketAddr, _allow_remote: bool) -> ExitCode {
    fail("this weft was built without the web page (feature `ui`)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_without_the_flag() {
        let lo: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let lo6: SocketAddr = "[::1]:0".parse().expect("an address");
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("an address");
        assert_eq!(check_listen(lo, false), Ok(None));
        assert_eq!(check_listen(lo6, false), Ok(None));
        let e = check_listen(any, false).unwrap_err();
        assert!(e.contains("--ui-allow-remote"), "{e}");
        let warning = check_listen(any, true)
            .expect("allowed")
            .expect("a warning");
        assert!(warning.contains("other machines"), "{warning}");
    }

    #[test]
    fn flags_round_trip_as_arguments() {
        let flags = UiFlags {
            ui: Some("127.0.0.1:7000".parse().expect("an address")),
            ui_allow_remote: true,
        };
        assert_eq!(
            flags.to_args(),
            ["--ui", "127.0.0.1:7000", "--ui-allow-remote"]
        );
        assert!(UiFlags::default().to_args().is_empty());
        assert!(flags.check().is_ok());
        let remote = UiFlags {
            ui: Some("0.0.0.0:7000".parse().expect("an address")),
            ui_allow_remote: false,
        };
        assert!(remote.check().is_err());
    }
}
