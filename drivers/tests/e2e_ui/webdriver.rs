//! A small W3C WebDriver client for the page's browser tests: JSON over HTTP/1.1 to a
//! `chromedriver` it starts, driving the system's headless Chromium. Hand-rolled because the
//! crates (fantoccini, thirtyfour) bring an async HTTP client stack for the dozen calls the
//! tests make.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The environment variable that lets a developer without Chromium skip the browser tests
/// (CI never sets it: there they fail without a browser).
pub const SKIP_VAR: &str = "WEFT_SKIP_BROWSER_TESTS";

/// How long one WebDriver call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long chromedriver may take to answer its first status request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read from chromedriver (a full-page screenshot is a few MiB).
const ANSWER_BYTES_MAX: usize = 64 << 20;

/// The W3C key of an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session: chromedriver (killed on drop) and a headless Chromium with a fresh
/// profile.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// Where a program is: `$VAR`, else the first of `candidates` that exists.
fn program(var: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// The browser to test with: `None` only when [`SKIP_VAR`] is `1` (a developer's choice);
/// otherwise a missing browser fails the test, naming the packages to install.
pub fn browser_or_skip(test: &str) -> Option<Browser> {
    if std::env::var(SKIP_VAR).as_deref() == Ok("1") {
        eprintln!("{test}: skipped ({SKIP_VAR}=1)");
        return None;
    }
    match Browser::start() {
        Ok(b) => Some(b),
        Err(e) => panic!(
            "{test}: no browser to test the page with: {e}\n\
             install Debian's chromium and chromium-driver (`apt-get install -y chromium \
             chromium-driver`; .ci/run does), or set {SKIP_VAR}=1 to skip locally"
        ),
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session.
    pub fn start() -> Result<Browser, String> {
        let chromium = program(
            "WEFT_CHROMIUM",
            &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        )
        .ok_or("no /usr/bin/chromium")?;
        let chromedriver = program("WEFT_CHROMEDRIVER", &["/usr/bin/chromedriver"])
            .ok_or("no /usr/bin/chromedriver")?;
        // A port taken and freed just before: another process could take it between, then
        // chromedriver fails and the next try takes another.
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let driver = Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", chromedriver.display()))?;
            let profile = tempfile::Builder::new()
                .prefix("weft-chromium")
                .tempdir()
                .map_err(|e| e.to_string())?;
            let profile_path = profile.path().to_owned();
            let mut browser = Browser {
                driver,
                port,
                session: String::new(),
                _profile: profile,
            };
            match browser.open_session(&chromium, &profile_path) {
                Ok(()) => return Ok(browser),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn open_session(&mut self, chromium: &Path, profile: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.call("GET", "/status", None) {
                Ok(v) if v["ready"] == json!(true) => break,
                _ if Instant::now() > deadline => {
                    return Err("chromedriver did not become ready".into())
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            // Tall enough that a panel's screenshot is never cut at the bottom.
            "--window-size=1280,2200",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
        }}});
        let v = self.call("POST", "/session", Some(caps))?;
        self.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {v}"))?
            .to_owned();
        Ok(())
    }

    /// One WebDriver call: its `value`, or the error it answered.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(CALL_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let answer = read_answer(&mut stream)?;
        let v: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("{method} {path}: not JSON ({e})"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if answer.status >= 400 {
            return Err(format!("{method} {path}: {} {}", answer.status, value));
        }
        Ok(value)
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The address the browser shows.
    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The elements `css` selects (their references), in document order.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.session_call(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e[ELEMENT_KEY].as_str().map(str::to_owned))
            .collect()
    }

    /// The first element `css` selects, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        self.find_all(css).into_iter().next()
    }

    /// An element's rendered text ("" if it went stale).
    pub fn text(&self, element: &str) -> String {
        self.session_call("GET", &format!("/element/{element}/text"), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The text of the first element `css` selects ("" if none).
    pub fn text_of(&self, css: &str) -> String {
        self.find(css).map(|e| self.text(&e)).unwrap_or_default()
    }

    /// An element's attribute or property.
    pub fn attr(&self, element: &str, name: &str) -> Option<String> {
        let v = self
            .session_call("GET", &format!("/element/{element}/attribute/{name}"), None)
            .ok()?;
        match v {
            Value::String(s) => Some(s),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Clicks an element.
    pub fn click(&self, element: &str) -> Result<(), String> {
        self.session_call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .map(|_| ())
    }

    /// Types `text` into an element.
    pub fn type_into(&self, element: &str, text: &str) {
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .unwrap_or_else(|e| panic!("type into {element}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its value.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Runs an async `script`: it calls `arguments[arguments.length - 1]` with its value.
    pub fn exec_async(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
        .unwrap_or_else(|e| panic!("async script failed: {e}"))
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        let v = self
            .session_call("GET", "/screenshot", None)
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
        base64_decode(v.as_str().unwrap_or_default()).expect("a base64 PNG")
    }

    /// A PNG of one element (scrolled into view).
    pub fn element_screenshot(&self, element: &str) -> Vec<u8> {
        let v = self
            .session_call("GET", &format!("/element/{element}/screenshot"), None)
            .unwrap_or_else(|e| panic!("element screenshot: {e}"));
        base64_decode(v.as_str().unwrap_or_default()).expect("a base64 PNG")
    }

    /// Polls `check` every 100 ms until it gives a value; panics after `limit` naming `what`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if Instant::now() > deadline {
                let body = self.text_of("body");
                panic!("timed out after {limit:?} waiting until {what}; the page shows:\n{body}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// An HTTP answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// A header's value (the first, name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One `read`, again after a signal interrupts it: a read on a socket with a timeout is never
/// restarted by the kernel (signal(7)), so it can fail with EINTR when a signal arrives or the
/// process is stopped and continued.
fn read_some(stream: &mut TcpStream, chunk: &mut [u8]) -> Result<usize, String> {
    loop {
        match stream.read(chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            got => return got.map_err(|e| e.to_string()),
        }
    }
}

/// Reads an HTTP/1.1 answer to a request sent with `Connection: close`: to its
/// Content-Length, through its chunks, or to the end.
pub fn read_answer(stream: &mut TcpStream) -> Result<Answer, String> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = read_some(stream, &mut chunk)?;
        if n == 0 {
            return Err("the connection closed before the headers ended".into());
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = raw[head_end + 4..].to_vec();
    let length = find("content-length").and_then(|v| v.parse::<usize>().ok());
    loop {
        if length.is_some_and(|l| body.len() >= l) || body.len() > ANSWER_BYTES_MAX {
            break;
        }
        let n = read_some(stream, &mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    if let Some(l) = length {
        body.truncate(l);
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The payload of a chunked body.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..i])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        data = &data[i + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
    out
}

/// Standard base64 (with padding) to bytes.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
        .collect::<Option<_>>()?;
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let mut n = 0u32;
        for (i, d) in group.iter().enumerate() {
            n |= u32::from(*d) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    Some(out)
}

#[test]
fn base64_decodes_as_the_standard_says() {
    assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
    assert_eq!(base64_decode("aGk=").as_deref(), Some(&b"hi"[..]));
    assert_eq!(base64_decode("YWJj").as_deref(), Some(&b"abc"[..]));
    assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
    assert_eq!(base64_decode("a*b="), None);
    assert_eq!(dechunk(b"5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n"), b"hello!");
}
