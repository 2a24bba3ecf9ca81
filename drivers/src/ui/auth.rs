//! Who may use the page: the token file, and the checks every request passes (SPEC.md §17.1).
//!
//! 1. The `Host` header names this server: `localhost` or an IP literal, with its port. A
//!    name that is not ours is how a DNS-rebinding page reaches a loopback server, so any
//!    other host is refused (403), whatever else the request carries.
//! 2. The page itself (`/`, its script, its style) holds no secret and needs nothing more.
//!    Everything under `/api/` carries the token as `Authorization: Bearer …`. The page's
//!    script has it from the address weft printed (`/#token=…`: a fragment, never sent to a
//!    server) and keeps it in the tab's `sessionStorage`, which is this origin's alone (port
//!    included). No cookie: cookies do not tell ports apart, so any other server on this
//!    host would receive one. Else 403.
//! 3. A request that changes anything (POST) has, besides the token (a header another site's
//!    page cannot send without a CORS preflight this server never grants), its `Origin`, if
//!    sent, this server's own; `Sec-Fetch-Site`, if sent, `same-origin`. Else 403.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

/// The token's file in the state folder.
pub const TOKEN_FILE: &str = "ui-token";

/// The token's bytes (64 hex digits in the file, in the printed URL and in the header).
pub const TOKEN_BYTES: usize = 32;

/// The page's secret: made by each start of a page, and written to `<state>/ui-token` (mode
/// 0600).
#[derive(Clone)]
pub struct Token {
    hex: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// A new token for a page starting on the node whose state folder is `state`, written to
    /// `<state>/ui-token` (owner-only, whole, over any earlier one): every start of a page
    /// has its own, so a token an open tab sends to whatever took the port after its page
    /// stopped opens no later page.
    pub fn renew(state: &Path) -> Result<Token, String> {
        let mut bytes = [0u8; TOKEN_BYTES];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| format!("no OS randomness for the page's token: {e}"))?;
        let token = Token::from_bytes(bytes);
        let path = token_path(state);
        let fresh = state.join(format!(".{TOKEN_FILE}.{}", std::process::id()));
        let _ = fs::remove_file(&fresh);
        crate::state::create_whole(&fresh, format!("{}\n", token.hex).as_bytes())
            .and_then(|()| fs::rename(&fresh, &path))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(token)
    }

    /// The token whose bytes are `bytes`.
    pub fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> Token {
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Token { hex }
    }

    /// The token its 64 hex digits spell.
    pub fn from_hex(text: &str) -> Option<Token> {
        let bytes: [u8; TOKEN_BYTES] = crate::report::unhex(text)?.try_into().ok()?;
        Some(Token::from_bytes(bytes))
    }

    /// Its 64 lowercase hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Whether `given` is the token, compared in constant time.
    pub fn matches(&self, given: &str) -> bool {
        let given = given.as_bytes();
        let mine = self.hex.as_bytes();
        if given.len() != mine.len() {
            return false;
        }
        let diff = given
            .iter()
            .zip(mine)
            .fold(0u8, |acc, (a, b)| acc | (a.to_ascii_lowercase() ^ b));
        diff == 0
    }
}

/// The token file's path in the state folder `state`.
pub fn token_path(state: &Path) -> PathBuf {
    state.join(TOKEN_FILE)
}

/// Whether `host` (a `Host` header) names the server on `port`: `localhost` or an IP literal,
/// with that port (or none, for port 80). A DNS name is refused: it is how a rebinding page
/// reaches a loopback server.
pub fn host_allowed(host: &str, port: u16) -> bool {
    let (name, given_port) = split_host(host);
    let port_ok = match given_port {
        Some(p) => p.parse::<u16>().ok() == Some(port),
        None => port == 80,
    };
    let name_ok = name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok();
    port_ok && name_ok
}

/// A `Host` header's name (brackets off an IPv6 literal) and port, if any.
fn split_host(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, "")) => (ip, None),
            Some((ip, tail)) => (ip, tail.strip_prefix(':').or(Some(tail))),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    }
}

/// The token an `Authorization` header carries (`Bearer TOKEN`), if it does.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Why a mutating request is refused as possibly cross-site, if it is: its `Origin` and
/// `Sec-Fetch-Site` (when the browser sends them) must be this server's own.
pub fn cross_site(
    origin: Option<&str>,
    fetch_site: Option<&str>,
    host: &str,
) -> Option<&'static str> {
    if let Some(origin) = origin {
        let own = origin
            .strip_prefix("http://")
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host));
        if !own {
            return Some("foreign Origin");
        }
    }
    if fetch_site.is_some_and(|s| s != "same-origin") {
        return Some("cross-site request (Sec-Fetch-Site)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn token() -> Token {
        Token::from_bytes([7; TOKEN_BYTES])
    }

    #[test]
    fn every_start_makes_a_new_owner_only_token_over_the_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let read = || fs::read_to_string(token_path(dir.path())).expect("the file is there");
        let first = Token::renew(dir.path()).expect("made");
        assert_eq!(read().trim(), first.hex());
        let meta = fs::metadata(token_path(dir.path())).expect("the file is there");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // An earlier file others could read is replaced by an owner-only one.
        fs::set_permissions(token_path(dir.path()), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let second = Token::renew(dir.path()).expect("made again");
        assert_ne!(first.hex(), second.hex());
        assert_eq!(read().trim(), second.hex());
        let meta = fs::metadata(token_path(dir.path())).expect("the file is there");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(second.hex().len(), 64);
        let names: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn tokens_match_exactly() {
        let t = token();
        assert!(t.matches(t.hex()));
        assert!(t.matches(&t.hex().to_uppercase()));
        assert!(!t.matches(&t.hex()[1..]));
        assert!(!t.matches(""));
        let mut other = t.hex().to_owned();
        other.replace_range(63.., "8");
        assert!(!t.matches(&other));
    }

    #[test]
    fn only_our_own_hosts_are_allowed() {
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "10.1.2.3:8080",
        ] {
            assert!(host_allowed(ok, 8080), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1:8081",
            "127.0.0.1",
            "localhost.evil:8080",
            "[::1]",
            "",
            ":8080",
            "127.0.0.1:8080:1",
            "[::1]x:8080",
        ] {
            assert!(!host_allowed(bad, 8080), "{bad}");
        }
        assert!(host_allowed("127.0.0.1", 80));
    }

    #[test]
    fn the_token_comes_only_from_a_bearer_header() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("Bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("abc")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn a_mutating_request_needs_our_origin() {
        let host = "127.0.0.1:4000";
        assert_eq!(cross_site(None, None, host), None);
        assert_eq!(
            cross_site(Some("http://127.0.0.1:4000"), Some("same-origin"), host),
            None
        );
        assert!(cross_site(Some("http://evil.example"), None, host).is_some());
        assert!(cross_site(Some("http://127.0.0.1:4001"), None, host).is_some());
        assert!(cross_site(Some("null"), None, host).is_some());
        assert!(cross_site(None, Some("cross-site"), host).is_some());
        assert!(cross_site(None, Some("same-site"), host).is_some());
    }
}
