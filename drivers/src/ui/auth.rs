//! Who may use the page: the token file, and the checks every request passes (SPEC.md §17.1).
//!
//! 1. The `Host` header names this server: `localhost` or an IP literal, with its port. A
//!    name that is not ours is how a DNS-rebinding page reaches a loopback server, so any
//!    other host is refused (403), whatever else the request carries.
//! 2. The request carries the token: in the query of the first page load (`/?token=…`, which
//!    is answered with a cookie and a redirect to `/`), in the cookie `weft_ui_<PORT>`, or as
//!    `Authorization: Bearer …`. Else 403.
//! 3. A request that changes anything (POST) also carries `X-Weft-Csrf` with the page's CSRF
//!    value (derived from the token, written into the page; a page of another site can
//!    neither read it nor send a custom header without a CORS preflight this server never
//!    grants), and its `Origin`, if sent, is this server's own; `Sec-Fetch-Site`, if sent, is
//!    `same-origin`. Else 403.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

/// The token's file in the state folder.
pub const TOKEN_FILE: &str = "ui-token";

/// The token's bytes (64 hex digits in the file, in URLs and cookies).
pub const TOKEN_BYTES: usize = 32;

/// The header a mutating request carries the CSRF value in.
pub const CSRF_HEADER: &str = "x-weft-csrf";

/// The context string the CSRF value is derived under (BLAKE3 keyed by the token).
const CSRF_CONTEXT: &[u8] = b"weft ui csrf v1";

/// The page's secret: read from `<state>/ui-token`, or made there (mode 0600) on first use.
#[derive(Clone)]
pub struct Token {
    bytes: [u8; TOKEN_BYTES],
    hex: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl Token {
    /// The token in the state folder `state`, made if the file is absent. A file others can
    /// read, or one that is not 64 hex digits, is refused.
    pub fn load_or_create(state: &Path) -> Result<Token, String> {
        match Token::load(state)? {
            Some(token) => Ok(token),
            None => Token::create(&state.join(TOKEN_FILE)),
        }
    }

    /// The token in the state folder `state`, if it has one (nothing is written). A file
    /// others can read, or one that is not 64 hex digits, is refused.
    pub fn load(state: &Path) -> Result<Option<Token>, String> {
        let path = state.join(TOKEN_FILE);
        match Token::read(&path) {
            Ok(token) => Ok(Some(token)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    fn read(path: &Path) -> io::Result<Token> {
        let meta = fs::metadata(path)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(io::Error::other(format!(
                "readable by other users (mode {mode:o}); run `chmod 600` on it"
            )));
        }
        let text = fs::read_to_string(path)?;
        Token::from_hex(text.trim())
            .ok_or_else(|| io::Error::other("not a token (expected 64 hex digits)"))
    }

    fn create(path: &Path) -> Result<Token, String> {
        let mut bytes = [0u8; TOKEN_BYTES];
        OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| format!("no OS randomness for the page's token: {e}"))?;
        let token = Token::from_bytes(bytes);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| {
                f.write_all(format!("{}\n", token.hex).as_bytes())?;
                f.sync_all()
            });
        match written {
            Ok(()) => Ok(token),
            // Another process made it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Token::read(path).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The token whose bytes are `bytes`.
    pub fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> Token {
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Token { bytes, hex }
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

    /// The page's CSRF value: BLAKE3 keyed by the token over a fixed context, in hex (a page
    /// that cannot read ours cannot know it).
    pub fn csrf(&self) -> String {
        blake3::keyed_hash(&self.bytes, CSRF_CONTEXT)
            .to_hex()
            .to_string()
    }

    /// Whether `given` is the CSRF value, compared in constant time.
    pub fn csrf_matches(&self, given: &str) -> bool {
        let mine = self.csrf();
        given.len() == mine.len()
            && given
                .bytes()
                .zip(mine.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// The token file's path in the state folder `state`.
pub fn token_path(state: &Path) -> PathBuf {
    state.join(TOKEN_FILE)
}

/// The cookie that carries the token for the server on `port` (cookies do not tell ports
/// apart, so two nodes' pages on one machine need two names).
pub fn cookie_name(port: u16) -> String {
    format!("weft_ui_{port}")
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

/// The tokens a request carries, in this order: a bearer `Authorization` header, `?token=`
/// (first load), and every cookie named for `port`. Every cookie of that name counts, not the
/// first: another page on this host (cookies do not tell ports apart) can plant one of the
/// same name under another path, which the browser sends first, and would lock the page out.
pub fn tokens_given<'a>(
    query: Option<&'a str>,
    cookies: impl Iterator<Item = &'a str>,
    authorization: Option<&'a str>,
    port: u16,
) -> Vec<&'a str> {
    let mut given: Vec<&str> = Vec::new();
    if let Some(t) = authorization.and_then(|a| a.strip_prefix("Bearer ")) {
        given.push(t.trim());
    }
    if let Some(t) = query.and_then(query_token) {
        given.push(t);
    }
    let name = cookie_name(port);
    given.extend(
        cookies
            .flat_map(|header| header.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.trim()),
    );
    given
}

/// The `token` parameter of a query string.
pub fn query_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
}

/// Why a mutating request is refused as possibly cross-site, if it is: it must carry the CSRF
/// header with the right value, and its `Origin` and `Sec-Fetch-Site` (when the browser sends
/// them) must be this server's own.
pub fn cross_site(
    token: &Token,
    csrf: Option<&str>,
    origin: Option<&str>,
    fetch_site: Option<&str>,
    host: &str,
) -> Option<&'static str> {
    match csrf {
        None => return Some("no X-Weft-Csrf header"),
        Some(c) if !token.csrf_matches(c) => return Some("wrong X-Weft-Csrf value"),
        Some(_) => {}
    }
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

    fn token() -> Token {
        Token::from_bytes([7; TOKEN_BYTES])
    }

    #[test]
    fn the_token_file_is_made_once_owner_only_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = Token::load_or_create(dir.path()).expect("made");
        let meta = fs::metadata(token_path(dir.path())).expect("the file is there");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let again = Token::load_or_create(dir.path()).expect("read");
        assert_eq!(made.hex(), again.hex());
        assert_eq!(made.hex().len(), 64);
        fs::set_permissions(token_path(dir.path()), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let e = Token::load_or_create(dir.path()).unwrap_err();
        assert!(e.contains("readable by other users"), "{e}");
        fs::write(token_path(dir.path()), "not hex\n").expect("write");
        fs::set_permissions(token_path(dir.path()), fs::Permissions::from_mode(0o600))
            .expect("chmod");
        let e = Token::load_or_create(dir.path()).unwrap_err();
        assert!(e.contains("not a token"), "{e}");
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
        assert!(t.csrf_matches(&t.csrf()));
        assert!(!t.csrf_matches(t.hex()));
        assert_ne!(t.csrf(), Token::from_bytes([8; 32]).csrf());
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
    fn the_token_comes_from_a_bearer_header_the_query_or_our_cookies() {
        let port = 4000;
        let none = std::iter::empty();
        assert_eq!(tokens_given(None, none, Some("Bearer abc"), port), ["abc"]);
        assert_eq!(
            tokens_given(Some("x=1&token=abc"), std::iter::empty(), None, port),
            ["abc"]
        );
        let cookies = ["a=b; weft_ui_4001=nope", "weft_ui_4000=abc"];
        assert_eq!(tokens_given(None, cookies.into_iter(), None, port), ["abc"]);
        // A cookie of our name planted first (another path) does not hide ours.
        let planted = ["weft_ui_4000=x; weft_ui_4000=abc"];
        assert_eq!(
            tokens_given(None, planted.into_iter(), None, port),
            ["x", "abc"]
        );
        let other = ["weft_ui_4001=nope"];
        assert!(tokens_given(None, other.into_iter(), None, port).is_empty());
        assert!(tokens_given(Some("tok=abc"), std::iter::empty(), None, port).is_empty());
    }

    #[test]
    fn a_mutating_request_needs_the_csrf_value_and_our_origin() {
        let t = token();
        let csrf = t.csrf();
        let host = "127.0.0.1:4000";
        assert_eq!(cross_site(&t, Some(&csrf), None, None, host), None);
        assert_eq!(
            cross_site(
                &t,
                Some(&csrf),
                Some("http://127.0.0.1:4000"),
                Some("same-origin"),
                host
            ),
            None
        );
        assert!(cross_site(&t, None, None, None, host).is_some());
        assert!(cross_site(&t, Some(t.hex()), None, None, host).is_some());
        assert!(cross_site(&t, Some(&csrf), Some("http://evil.example"), None, host).is_some());
        assert!(cross_site(&t, Some(&csrf), Some("null"), None, host).is_some());
        assert!(cross_site(&t, Some(&csrf), None, Some("cross-site"), host).is_some());
    }
}
