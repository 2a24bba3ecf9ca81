//! The web page (issue 22, SPEC.md §17.1) in a real browser: headless Chromium from the
//! system's packages, driven over W3C WebDriver (chromedriver), against real `weft`
//! processes on 127.0.0.1.
//!
//! The main test runs three nodes sharing a folder (`a` serves its page with `--ui`) and
//! goes through every panel: this node, the hosts and their traffic, a file made at `c`
//! appearing at `a` as a transfer in progress (with its rate and time left) and then
//! complete, a write error, a conflict resolved with the page's button, drops subscribed to
//! and created and published from the page, the sync table read and written, and the
//! throughput chart. The second runs `weft ui` beside a node and checks the refusals (no
//! token, a token by query or cookie, a foreign Host, a cross-site POST) and that the token
//! never leaves the page's own origin. The third fills the page's connection slots with
//! idle connections.
//!
//! Screenshots of the main states are saved as PNG, into `$WEFT_UI_SCREENSHOTS` if set (the
//! committed ones in docs/ui/ are made so), else under the target folder.
//!
//! Without Chromium these tests fail, naming the packages; a developer may set
//! `WEFT_SKIP_BROWSER_TESTS=1` to skip them (CI never does).

mod common;
#[path = "e2e_ui/webdriver.rs"]
mod webdriver;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{fails_with, ok, run, scratch, wait_until, NodeProc};
use serde_json::json;
use webdriver::{browser_or_skip, read_answer, Answer, Browser};

/// How long the page may take to show something the node knows.
const PAGE_WAIT: Duration = Duration::from_secs(60);

/// A page's address as `weft ui: URL` prints it.
#[derive(Debug, Clone)]
struct Page {
    /// The URL with its token.
    url: String,
    /// `http://127.0.0.1:PORT`.
    base: String,
    port: u16,
    token: String,
}

impl Page {
    fn of(line: &str) -> Page {
        let url = line
            .strip_prefix("weft ui: ")
            .unwrap_or_else(|| panic!("not a page line: {line:?}"))
            .to_owned();
        let (base, token) = url
            .split_once("/#token=")
            .unwrap_or_else(|| panic!("no token in {url:?}"));
        let port = base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {url:?}"));
        assert!(base.starts_with("http://127.0.0.1:"), "{url}");
        assert_eq!(token.len(), 64, "{url}");
        Page {
            base: base.to_owned(),
            token: token.to_owned(),
            url,
            port,
        }
    }
}

/// Deterministic bytes that do not repeat.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut counter = 0u64;
    while out.len() < n {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&counter.to_le_bytes());
        out.extend_from_slice(h.finalize().as_bytes());
        counter += 1;
    }
    out.truncate(n);
    out
}

fn put(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("parent");
    }
    fs::write(path, data).expect("write");
}

/// Puts `data` at `path` with its mtime `secs_ago` seconds in the past.
fn put_aged(path: &Path, data: &[u8], secs_ago: u64) {
    put(path, data);
    let at = SystemTime::now() - Duration::from_secs(secs_ago);
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(at))
        .expect("set the mtime");
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_default()
}

/// Bytes in the temporary files of the shared folder at `root`.
fn temp_bytes(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(root.join(".weft/tmp"))
        .map(|r| {
            r.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// The conflict copies of `name` (`doc.txt` → `doc.conflict-*.txt`) at `root`.
fn conflict_copies(root: &Path, stem: &str) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(root)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{stem}.conflict-")))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Where screenshots go: `$WEFT_UI_SCREENSHOTS`, else the target folder.
fn screenshot_dir() -> PathBuf {
    match std::env::var_os("WEFT_UI_SCREENSHOTS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots"),
    }
}

/// Saves a screenshot, checking it is a PNG.
fn save(name: &str, png: &[u8]) {
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "{name}: not a PNG ({} bytes)",
        png.len()
    );
    let dir = screenshot_dir();
    fs::create_dir_all(&dir).expect("the screenshot folder");
    fs::write(dir.join(format!("{name}.png")), png).expect("write a screenshot");
}

/// A screenshot of the element `css` selects.
fn shoot(browser: &Browser, name: &str, css: &str) {
    let element = browser
        .find(css)
        .unwrap_or_else(|| panic!("no {css} to screenshot"));
    save(name, &browser.element_screenshot(&element));
}

/// `weft create|join|start …` as a node process; with `page`, also its page's line.
fn folder_node(
    args: &[&str],
    net: &str,
    state: PathBuf,
    log: PathBuf,
    page: bool,
) -> (NodeProc, Option<Page>) {
    let (node, lines) = NodeProc::start_args_lines(
        net,
        state,
        log,
        args,
        &[("RUST_LOG", "info")],
        usize::from(page),
    );
    (node, lines.first().map(|l| Page::of(l)))
}

fn create(dir: &Path, net: &str, name: &str, shared: &Path, driver: &str) -> (NodeProc, Page) {
    let state = dir.join(name);
    let (s, d) = (state.display().to_string(), shared.display().to_string());
    let args = [
        "create",
        "--name",
        net,
        "--state",
        &s,
        "--dir",
        &d,
        "--listen",
        "127.0.0.1:0",
        "--driver",
        driver,
        "--ui",
        "127.0.0.1:0",
    ];
    let (node, page) = folder_node(&args, net, state, dir.join(format!("{name}.log")), true);
    (node, page.expect("a page line"))
}

fn join(dir: &Path, net: &str, name: &str, shared: &Path, peer: &str, driver: &str) -> NodeProc {
    let state = dir.join(name);
    let (s, d) = (state.display().to_string(), shared.display().to_string());
    let args = [
        "join",
        "--name",
        net,
        "--state",
        &s,
        "--dir",
        &d,
        "--peer",
        peer,
        "--listen",
        "127.0.0.1:0",
        "--driver",
        driver,
    ];
    folder_node(&args, net, state, dir.join(format!("{name}.log")), false).0
}

fn start_again(dir: &Path, net: &str, name: &str) -> NodeProc {
    let state = dir.join(name);
    let s = state.display().to_string();
    let args = ["start", "--name", net, "--state", &s];
    folder_node(
        &args,
        net,
        state,
        dir.join(format!("{name}-again.log")),
        false,
    )
    .0
}

/// `weft drop SUB --name NET --state DIR <extra...>` against `node`.
fn drop_cmd(node: &NodeProc, sub: &str, extra: &[&str]) -> Output {
    let state = node.state.display().to_string();
    let mut args = vec!["drop", sub, "--name", &node.net, "--state", &state];
    args.extend(extra);
    run(&args)
}

/// Nothing may be created, renamed or removed in a folder while this lives (`chattr +i`,
/// even for root); undone on drop, so the test's folder can be removed whatever happens.
struct Immutable(PathBuf);

fn chattr(flag: &str, dir: &Path) {
    let status = std::process::Command::new("chattr")
        .arg(flag)
        .arg(dir)
        .status()
        .expect("run chattr (e2fsprogs)");
    assert!(status.success(), "chattr {flag} {}", dir.display());
}

impl Immutable {
    fn set(dir: &Path) -> Immutable {
        chattr("+i", dir);
        Immutable(dir.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

/// Processes stopped with SIGSTOP while this lives; SIGCONT on drop.
struct Frozen<'a>(Vec<&'a NodeProc>);

impl<'a> Frozen<'a> {
    fn freeze(nodes: Vec<&'a NodeProc>) -> Frozen<'a> {
        for n in &nodes {
            n.signal("STOP");
        }
        Frozen(nodes)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        for n in &self.0 {
            n.signal("CONT");
        }
    }
}

/// Clicks what `css` selects once it is there (the page may re-render it between the find
/// and the click).
fn click(browser: &Browser, what: &str, css: &str) {
    browser.wait_for(what, PAGE_WAIT, |b| {
        let element = b.find(css)?;
        b.click(&element).ok()
    });
}

fn type_into(browser: &Browser, css: &str, text: &str) {
    let element = browser
        .find(css)
        .unwrap_or_else(|| panic!("no {css} to type into"));
    browser.type_into(&element, text);
}

/// Waits until the page's message line says `text`.
fn wait_message(browser: &Browser, text: &str) -> String {
    browser.wait_for(&format!("the page says {text:?}"), PAGE_WAIT, |b| {
        let m = b.text_of("#message");
        m.contains(text).then_some(m)
    })
}

#[test]
fn the_page_follows_three_nodes_live_and_its_buttons_act() {
    let Some(browser) = browser_or_skip("the_page_follows_three_nodes_live_and_its_buttons_act")
    else {
        return;
    };
    let started = Instant::now();
    let (dir, net) = scratch("ui-live");
    let dir = dir.path();
    let (da, db, dc) = (dir.join("A"), dir.join("B"), dir.join("C"));
    put_aged(&da.join("doc.txt"), b"the first doc\n", 60);
    put_aged(&da.join("locked/one.txt"), b"one\n", 60);
    let (a, page) = create(dir, &net, "a", &da, "mio");
    let b = join(dir, &net, "b", &db, &a.addr, "tokio");
    let c = join(dir, &net, "c", &dc, &b.addr, "mio");
    let (a_id, b_id, c_id) = (a.id(), b.id(), c.id());
    wait_until("the first sync", || {
        read(&dc.join("doc.txt")) == b"the first doc\n"
            && read(&db.join("locked/one.txt")) == b"one\n"
    });

    // This node: the page takes the token from the address's fragment and out of the bar.
    browser.goto(&page.url);
    browser.wait_for("the node panel shows a's id", PAGE_WAIT, |br| {
        (br.text_of("#node dd[data-field=id]") == a_id).then_some(())
    });
    let shown = browser.url();
    assert_eq!(
        shown,
        format!("{}/", page.base),
        "the token left the address bar"
    );
    assert_eq!(browser.text_of("#node dd[data-field=network]"), net);
    assert_eq!(browser.text_of("#node dd[data-field=listen_addr]"), a.addr);
    assert_eq!(browser.text_of("#node dd[data-field=driver]"), "mio");
    let uptime = browser.text_of("#node dd[data-field=uptime]");
    assert!(uptime.ends_with('s') || uptime.contains('m'), "{uptime:?}");
    assert_eq!(browser.text_of("#live"), "live");
    shoot(&browser, "node", "#node");

    // Hosts: b linked, with traffic; c linked or heard of.
    browser.wait_for("b and c listed, b linked with traffic", PAGE_WAIT, |br| {
        let b_row = format!("#hosts-rows tr[data-node='{b_id}']");
        br.find(&format!("#hosts-rows tr[data-node='{c_id}']"))?;
        let link = br.attr(&br.find(&b_row)?, "data-link")?;
        let bytes_in = br.text_of(&format!("{b_row} .bytes-in"));
        (link == "direct" && bytes_in.contains("KiB")).then_some(())
    });
    let rows = browser.find_all("#hosts-rows tr[data-node]").len();
    assert_eq!(rows, 2, "a's hosts are b and c");
    shoot(&browser, "hosts", "#hosts");

    // A file made at c appears at a as a transfer in progress, then completes. b and c are
    // frozen (SIGSTOP) once a has 4 MiB of it, so the page shows it mid-way.
    let big = bytes(128 << 20, 9);
    put(&dc.join("from-c/big.bin"), &big);
    let deadline = Instant::now() + PAGE_WAIT;
    while temp_bytes(&da) < (4 << 20) {
        assert!(
            Instant::now() < deadline,
            "a never started fetching: {}",
            a.log_text()
        );
        assert!(
            !da.join("from-c/big.bin").exists(),
            "it arrived before the freeze"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let frozen = Frozen::freeze(vec![&b, &c]);
    let row = "#folders table.transfers tr[data-path='from-c/big.bin']";
    browser.wait_for("the transfer shows in progress", PAGE_WAIT, |br| {
        let bar = br.find(&format!("{row} progress"))?;
        let value: f64 = br.attr(&bar, "value")?.parse().ok()?;
        let max: f64 = br.attr(&bar, "max")?.parse().ok()?;
        (value > 0.0 && value < max && max == (128u64 << 20) as f64).then_some(())
    });
    assert!(
        browser.text_of(row).contains("/ 128.0 MiB"),
        "{}",
        browser.text_of(row)
    );
    browser.wait_for("the frozen transfer shows as stalled", PAGE_WAIT, |br| {
        let rate = br.text_of(&format!("{row} .rate"));
        let eta = br.text_of(&format!("{row} .eta"));
        (rate == "stalled" && eta == "—").then_some(())
    });
    shoot(&browser, "folder-transfer-paused", "#folder");
    drop(frozen);
    // Moving again, a little at a time (the sources run 100 ms in every 600 ms), so the page,
    // which asks every 500 ms, sees it in progress and gives its rate and the time left: let
    // go at once, the rest could all come between two of its asks, and the rate was never
    // shown (a flake of this test).
    let mut rate_seen = false;
    let deadline = Instant::now() + PAGE_WAIT;
    while !rate_seen && Instant::now() < deadline && browser.find(row).is_some() {
        std::thread::sleep(Duration::from_millis(100));
        let pause = Frozen::freeze(vec![&b, &c]);
        std::thread::sleep(Duration::from_millis(500));
        let rate = browser.text_of(&format!("{row} .rate"));
        if rate.ends_with("/s") {
            let eta = browser.text_of(&format!("{row} .eta"));
            assert!(eta.ends_with('s') || eta.contains('m'), "time left {eta:?}");
            rate_seen = true;
            shoot(&browser, "folder-transfer", "#folder");
        }
        drop(pause);
    }
    assert!(rate_seen, "the transfer's rate was never shown");
    browser.wait_for("the file is complete at a", PAGE_WAIT, |br| {
        let done = "#folders table.files tr[data-path='from-c/big.bin'][data-state=synced]";
        br.find(done)?;
        br.find(row).is_none().then_some(())
    });
    assert!(read(&da.join("from-c/big.bin")) == big, "a's copy differs");

    // A write that fails at a shows in its errors; once it can land, it does.
    let lock = Immutable::set(&da.join("locked"));
    put(&dc.join("locked/one.txt"), b"one, edited at c\n");
    let why = browser.wait_for("the write error shows", PAGE_WAIT, |br| {
        let why = br.text_of("#folders table.errors tr[data-path='locked/one.txt'] .why");
        (!why.is_empty()).then_some(why)
    });
    assert!(
        browser
            .find("#folders table.files tr[data-path='locked/one.txt'][data-state=error]")
            .is_some(),
        "the file's state is error"
    );
    shoot(&browser, "folder-error", "#folder");
    drop(lock);
    wait_until("the edit lands once it can", || {
        read(&da.join("locked/one.txt")) == b"one, edited at c\n"
    });
    browser.wait_for("the error is gone", PAGE_WAIT, |br| {
        br.find("#folders table.errors tr[data-path]")
            .is_none()
            .then_some(())
    });
    eprintln!("the error shown was: {why}");

    // A conflict: c edits doc.txt while it is down, a edits it too; c comes back.
    let mut c = c;
    c.kill();
    put(&da.join("doc.txt"), b"a's edit\n");
    wait_until("b has a's edit", || {
        read(&db.join("doc.txt")) == b"a's edit\n"
    });
    put(&dc.join("doc.txt"), b"c's edit, the later one\n");
    let c = start_again(dir, &net, "c");
    let conflict = "#folders .conflict[data-path='doc.txt']";
    let copy = browser.wait_for(
        "the conflict shows with its two versions",
        PAGE_WAIT,
        |br| {
            let keeps: Vec<String> = br
                .find_all(&format!("{conflict} button.resolve"))
                .iter()
                .filter_map(|e| br.attr(e, "data-keep"))
                .collect();
            match &keeps[..] {
                [path, copy] if path == "doc.txt" && copy.starts_with("doc.conflict-") => {
                    Some(copy.clone())
                }
                _ => None,
            }
        },
    );
    assert!(
        browser
            .find("#folders table.files tr[data-path='doc.txt'][data-state=conflict]")
            .is_some(),
        "doc.txt's state is conflict"
    );
    // The later edit (c's) wins; a's is its copy (the winner may still be landing).
    wait_until("a holds c's edit and a's as the copy", || {
        read(&da.join("doc.txt")) == b"c's edit, the later one\n"
            && read(&da.join(&copy)) == b"a's edit\n"
    });
    shoot(&browser, "folder-conflict", "#folder");
    // Keep a's edit (the copy) from the page.
    click(
        &browser,
        "the copy's resolve button",
        &format!("{conflict} button.resolve[data-keep='{copy}']"),
    );
    wait_message(&browser, "resolved");
    browser.wait_for("the conflict is gone from the page", PAGE_WAIT, |br| {
        let gone = br.find(conflict).is_none()
            && br
                .find(&format!("#folders table.files tr[data-path='{copy}']"))
                .is_none();
        gone.then_some(())
    });
    wait_until("every node keeps a's edit and no copy", || {
        [&da, &db, &dc].iter().all(|d| {
            read(&d.join("doc.txt")) == b"a's edit\n" && conflict_copies(d, "doc").is_empty()
        })
    });

    // Drops: c's drop subscribed to from a's page; a's own drop created and published there.
    let c_drop = dir.join("c-drop");
    put(&c_drop.join("readme.txt"), b"c's drop\n");
    let c_drop_path = c_drop.display().to_string();
    let drop_id = ok(&drop_cmd(&c, "create", &[&c_drop_path]))
        .trim()
        .to_owned();
    assert_eq!(drop_id.len(), 64, "{drop_id}");
    ok(&drop_cmd(&c, "publish", &[&c_drop_path]));
    wait_until("a links to c", || a.links_to(&c_id));
    let a_sub = dir.join("a-sub");
    type_into(&browser, "#sub-drop", &drop_id);
    type_into(&browser, "#sub-dir", &a_sub.display().to_string());
    click(&browser, "the subscribe button", "#sub-go");
    wait_message(&browser, "subscribed");
    let sub_row = format!("#drops-rows tr[data-drop='{drop_id}'][data-role=subscriber]");
    browser.wait_for("a shows c's drop at version 1", PAGE_WAIT, |br| {
        let version = br.text_of(&format!("{sub_row} .version"));
        let owners = br.text_of(&format!("{sub_row} .owners"));
        (version == "1" && owners.contains(&c_id[..16])).then_some(())
    });
    assert_eq!(browser.text_of(&format!("{sub_row} .branches")), "1");
    wait_until("c's drop arrives at a", || {
        read(&a_sub.join("readme.txt")) == b"c's drop\n"
    });
    let a_drop = dir.join("a-drop");
    put(&a_drop.join("notes.txt"), b"a's drop\n");
    type_into(&browser, "#create-dir", &a_drop.display().to_string());
    click(&browser, "the create button", "#create-go");
    let created = wait_message(&browser, "drop created: ");
    let a_drop_id = created.rsplit(' ').next().unwrap_or_default().to_owned();
    assert_eq!(a_drop_id.len(), 64, "{created}");
    let own_row = format!("#drops-rows tr[data-drop='{a_drop_id}'][data-role=owner]");
    click(
        &browser,
        "a's publish button",
        &format!("{own_row} button.publish"),
    );
    wait_message(&browser, "published version 1");
    browser.wait_for("a's drop shows version 1", PAGE_WAIT, |br| {
        (br.text_of(&format!("{own_row} .version")) == "1").then_some(())
    });
    assert!(browser
        .text_of(&format!("{own_row} .owners"))
        .contains(&a_id[..16]));
    shoot(&browser, "drops", "#drops");

    // The sync table: b's write shows at a; the page's write reaches c.
    ok(&b.table("set", &["color", "blue"]));
    browser.wait_for("b's key shows at a", PAGE_WAIT, |br| {
        (br.text_of("#table-rows tr[data-key='color'] .value") == "blue").then_some(())
    });
    type_into(&browser, "#table-key", "size");
    type_into(&browser, "#table-value", "large");
    click(&browser, "the table's set button", "#table-set");
    wait_message(&browser, "written");
    wait_until("the page's write reaches c", || {
        c.table_get("size").as_deref() == Some("large")
    });
    browser.wait_for("both keys show", PAGE_WAIT, |br| {
        (br.find_all("#table-rows tr[data-key]").len() == 2).then_some(())
    });
    shoot(&browser, "table", "#table");

    // The chart: the 128 MiB transfer is in it.
    browser.wait_for("the chart has points and a peak", PAGE_WAIT, |br| {
        let chart = br.find("#chart")?;
        let points: usize = br.attr(&chart, "data-points")?.parse().ok()?;
        let line = br.attr(&br.find("#chart-in")?, "points")?;
        let peak = br.text_of("#rate-peak");
        (points >= 2 && line.split(' ').count() == points && peak.contains("MiB")).then_some(())
    });
    shoot(&browser, "throughput", "#throughput");
    browser.exec("window.scrollTo(0, 0);", json!([]));
    save("overview", &browser.screenshot());
    eprintln!("the page test took {:?}", started.elapsed());
}

/// `weft ui` beside a running node, killed on drop.
struct UiProc {
    child: Child,
    page: Page,
}

impl UiProc {
    fn start(node: &NodeProc) -> UiProc {
        let state = node.state.display().to_string();
        let mut child = common::weft()
            .args(["ui", "--name", &node.net, "--state", &state])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn weft ui");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(common::WAIT).unwrap_or_default();
        let page = Page::of(line.trim_end());
        UiProc { child, page }
    }
}

impl Drop for UiProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request to the page on `port`, with `headers` (a `Host` among them, or ours).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the page");
    stream
        .set_read_timeout(Some(common::WAIT))
        .expect("a timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).expect("send");
    read_answer(&mut stream).expect("an HTTP answer")
}

#[test]
fn weft_ui_refuses_requests_without_the_token_from_a_foreign_host_or_cross_site() {
    let (dir, net) = scratch("ui-auth");
    let dir = dir.path();
    let node = NodeProc::start(dir, &net, "n", "tokio", "127.0.0.1:0", &[]);
    let ui = UiProc::start(&node);
    let page = ui.page.clone();
    let port = page.port;
    let bearer = format!("Bearer {}", page.token);
    let token_file = node.state.join("ui-token");
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&token_file)
        .expect("the token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        fs::read_to_string(&token_file).expect("read it").trim(),
        page.token
    );

    // The page itself holds no secret and is served to anyone on our Host; the API needs
    // the token, by header only: a query or a cookie (which any other server on this host
    // would be sent) does not count, and no answer sets a cookie.
    for path in ["/", "/app.js", "/style.css"] {
        let answer = http(port, "GET", path, &[], "");
        assert_eq!(answer.status, 200, "{path}");
        assert!(!String::from_utf8_lossy(&answer.body).contains(&page.token));
        assert!(answer.header("set-cookie").is_none(), "{path}");
    }
    let as_query = format!("/api/state?token={}", page.token);
    let as_cookie = format!("weft_ui_{port}={}", page.token);
    let wrong = format!("Bearer {}", "0".repeat(64));
    for (path, headers) in [
        ("/api/state", vec![]),
        ("/api/events", vec![]),
        (as_query.as_str(), vec![]),
        ("/api/state", vec![("Cookie", as_cookie.as_str())]),
        ("/api/state", vec![("Authorization", wrong.as_str())]),
        ("/api/state", vec![("Authorization", page.token.as_str())]),
    ] {
        let answer = http(port, "GET", path, &headers, "");
        assert_eq!(answer.status, 403, "{path} {headers:?}");
        assert!(String::from_utf8_lossy(&answer.body).contains("#token="));
    }
    // A foreign Host (DNS rebinding) is refused even with the token, and for the page too.
    let foreign = format!("evil.example:{port}");
    let answer = http(
        port,
        "GET",
        "/api/state",
        &[("Host", &foreign), ("Authorization", &bearer)],
        "",
    );
    assert_eq!(answer.status, 403);
    assert!(String::from_utf8_lossy(&answer.body).contains("foreign Host"));
    assert_eq!(
        http(port, "GET", "/", &[("Host", &foreign)], "").status,
        403
    );
    let answer = http(
        port,
        "GET",
        "/",
        &[("Cookie", &format!("weft_ui_{port}={}", page.token))],
        "",
    );
    assert_eq!(answer.status, 200);
    assert!(answer
        .header("content-security-policy")
        .is_some_and(|c| c.contains("default-src 'none'")));
    let state = http(port, "GET", "/api/state", &[("Authorization", &bearer)], "");
    assert_eq!(state.status, 200);
    assert!(state.header("set-cookie").is_none());
    let state: serde_json::Value = serde_json::from_slice(&state.body).expect("JSON");
    assert_eq!(state["node"]["id"], json!(node.id()));
    // A POST needs the token, and our own Origin and Sec-Fetch-Site if it names them.
    let set = r#"{"action":"table_set","key":"via","value":"page"}"#;
    let json_type = ("Content-Type", "application/json");
    let own = format!("http://127.0.0.1:{port}");
    for (headers, why) in [
        (vec![json_type, ("Origin", own.as_str())], "no token"),
        (
            vec![
                json_type,
                ("Origin", own.as_str()),
                ("Cookie", as_cookie.as_str()),
            ],
            "a cookie",
        ),
        (
            vec![
                json_type,
                ("Authorization", bearer.as_str()),
                ("Origin", "http://evil.example"),
            ],
            "a foreign Origin",
        ),
        (
            vec![
                json_type,
                ("Authorization", bearer.as_str()),
                ("Sec-Fetch-Site", "cross-site"),
            ],
            "a cross-site fetch",
        ),
    ] {
        let answer = http(port, "POST", "/api/action", &headers, set);
        assert_eq!(answer.status, 403, "{why}");
    }
    assert!(node.table_get("via").is_none(), "nothing refused was done");
    let answer = http(
        port,
        "POST",
        "/api/action",
        &[
            ("Authorization", &bearer),
            json_type,
            ("Origin", &own),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        set,
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(node.table_get("via").as_deref(), Some("page"));
    // Bad bodies are answered, not crashed on.
    for body in [
        "",
        "{",
        r#"{"action":"shutdown"}"#,
        &format!(
            r#"{{"action":"table_set","key":"k","value":"{}"}}"#,
            "v".repeat(20_000)
        ),
    ] {
        let answer = http(
            port,
            "POST",
            "/api/action",
            &[("Authorization", &bearer), json_type],
            body,
        );
        assert!(
            (400..500).contains(&answer.status),
            "{} for {:.40}",
            answer.status,
            body
        );
    }
    // Another start of a page makes a new token (and writes it): the last page's token,
    // which a tab left open hands to whatever answers on its port, opens no later page.
    let again = UiProc::start(&node);
    assert_ne!(again.page.token, page.token);
    assert_eq!(
        fs::read_to_string(&token_file).expect("read it").trim(),
        again.page.token
    );
    let old_token = http(
        again.page.port,
        "GET",
        "/api/state",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(old_token.status, 403);
    drop(again);

    // In the browser: the page without the token says so and shows nothing of the node;
    // with it, the page works, also after a reload, and its own request without the token's
    // header is refused: nothing in the browser (no cookie) speaks for it.
    let Some(browser) = browser_or_skip(
        "weft_ui_refuses_requests_without_the_token_from_a_foreign_host_or_cross_site",
    ) else {
        return;
    };
    browser.goto(&format!("{}/", page.base));
    browser.wait_for("the page says it has no token", PAGE_WAIT, |br| {
        br.text_of("#live").contains("no valid token").then_some(())
    });
    assert_eq!(browser.text_of("#node dd[data-field=id]"), "");
    browser.goto(&page.url);
    let id = node.id();
    browser.wait_for("the page shows the node", PAGE_WAIT, |br| {
        (br.text_of("#node dd[data-field=id]") == id).then_some(())
    });
    assert_eq!(
        browser.url(),
        format!("{}/", page.base),
        "the token left the bar"
    );
    browser.goto(&format!("{}/", page.base));
    browser.wait_for("the reloaded page shows the node", PAGE_WAIT, |br| {
        (br.text_of("#node dd[data-field=id]") == id).then_some(())
    });
    let status = browser.exec_async(
        "const done = arguments[arguments.length - 1];
         fetch('/api/action', {method: 'POST', headers: {'content-type': 'application/json'},
           body: JSON.stringify({action: 'table_set', key: 'notoken', value: 'x'})})
           .then(r => done(r.status), e => done(String(e)));",
        json!([]),
    );
    assert_eq!(status, json!(403));
    assert!(node.table_get("notoken").is_none());
    // Another server on this host (another port) is sent nothing of the token: cookies do
    // not tell ports apart, so a cookie would have gone to it.
    let other = TcpListener::bind("127.0.0.1:0").expect("another server");
    let other_port = other.local_addr().expect("its port").port();
    let heard = std::thread::spawn(move || {
        let (mut stream, _) = other.accept().expect("the browser comes");
        stream
            .set_read_timeout(Some(common::WAIT))
            .expect("a timeout");
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match std::io::Read::read(&mut stream, &mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        String::from_utf8_lossy(&request).into_owned()
    });
    browser.goto(&format!("http://127.0.0.1:{other_port}/"));
    let request = heard.join().expect("the other server's thread");
    assert!(request.starts_with("GET / HTTP/1.1"), "{request}");
    assert!(
        !request.contains(&page.token) && !request.contains("weft_ui"),
        "{request}"
    );
    browser.goto(&format!("{}/", page.base));
    browser.wait_for("the page shows the node again", PAGE_WAIT, |br| {
        (br.text_of("#node dd[data-field=id]") == id).then_some(())
    });
    shoot(&browser, "node-standalone", "#node");
    // The node stops: the page says so.
    ok(&node.command("shutdown", &[]));
    browser.wait_for("the page says the node does not answer", PAGE_WAIT, |br| {
        br.text_of("#live").contains("not answering").then_some(())
    });
    // weft ui ends on SIGTERM with 143.
    let mut ui = ui;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &ui.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + common::WAIT;
    let code = loop {
        if let Some(s) = ui.child.try_wait().expect("wait weft ui") {
            break s.code();
        }
        assert!(Instant::now() < deadline, "weft ui did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(143));
}

#[test]
fn a_page_other_machines_can_reach_needs_its_flag_and_warns() {
    let (dir, net) = scratch("ui-remote");
    let dir = dir.path();
    let state = dir.join("s");
    let s = state.display().to_string();
    let out = run(&[
        "node",
        "--name",
        &net,
        "--state",
        &s,
        "--listen",
        "127.0.0.1:0",
        "--ui",
        "0.0.0.0:0",
    ]);
    fails_with(&out, 2, "--ui-allow-remote");
    assert!(!state.exists(), "nothing was written");
    let out = run(&["ui", "--name", &net, "--state", &s, "--listen", "0.0.0.0:0"]);
    fails_with(&out, 2, "--ui-allow-remote");
    let out = run(&["ui", "--name", &net, "--state", &s]);
    fails_with(&out, 1, "no node has run");
    // With the flag it serves, and warns.
    let log = dir.join("s.log");
    let (node, lines) = NodeProc::start_args_lines(
        &net,
        state.clone(),
        log,
        &[
            "node",
            "--name",
            &net,
            "--state",
            &s,
            "--listen",
            "127.0.0.1:0",
            "--ui",
            "0.0.0.0:0",
            "--ui-allow-remote",
        ],
        &[("RUST_LOG", "warn")],
        1,
    );
    let page = Page::of(&lines[0]);
    let answer = http(
        page.port,
        "GET",
        "/api/state",
        &[("Authorization", &format!("Bearer {}", page.token))],
        "",
    );
    assert_eq!(answer.status, 200);
    wait_until("the warning is logged", || {
        node.log_text().contains("reachable from other machines")
    });
}

#[test]
fn a_detached_node_prints_its_page_line_after_its_own() {
    let (dir, net) = scratch("ui-detach");
    let state = dir.path().join("s");
    let s = state.display().to_string();
    let out = run(&[
        "node",
        "--name",
        &net,
        "--state",
        &s,
        "--listen",
        "127.0.0.1:0",
        "--ui",
        "127.0.0.1:0",
        "--detach",
    ]);
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("weft node "), "{text}");
    let page = Page::of(lines[1]);
    let answer = http(
        page.port,
        "GET",
        "/api/state",
        &[("Authorization", &format!("Bearer {}", page.token))],
        "",
    );
    assert_eq!(answer.status, 200);
    let stop = run(&["shutdown", "--name", &net, "--state", &s]);
    ok(&stop);
    // The page went with its node.
    assert!(TcpStream::connect(("127.0.0.1", page.port)).is_err());
}

#[test]
fn connections_that_send_no_whole_header_are_closed_and_free_the_pages_slots() {
    use weft_drivers::ui::server::{CONNECTIONS_MAX, HEADER_READ_TIMEOUT};
    let (dir, net) = scratch("ui-idle");
    let node = NodeProc::start(dir.path(), &net, "n", "mio", "127.0.0.1:0", &[]);
    let ui = UiProc::start(&node);
    let port = ui.page.port;
    // Every slot taken: half of them by connections that send nothing, half by ones that
    // send half a header and then nothing.
    let held: Vec<TcpStream> = (0..CONNECTIONS_MAX)
        .map(|i| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            if i % 2 == 1 {
                stream
                    .write_all(b"GET /api/state HTTP/1.1\r\nHo")
                    .expect("half a header");
            }
            stream
        })
        .collect();
    // The page is still served: the held connections are closed after the header read
    // timeout, and their slots go to the next ones.
    let started = Instant::now();
    let bearer = format!("Bearer {}", ui.page.token);
    let answer = http(port, "GET", "/api/state", &[("Authorization", &bearer)], "");
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() < HEADER_READ_TIMEOUT + common::WAIT,
        "{:?}",
        started.elapsed()
    );
    for mut stream in held {
        stream
            .set_read_timeout(Some(common::WAIT))
            .expect("a timeout");
        let mut rest = Vec::new();
        let end = std::io::Read::read_to_end(&mut stream, &mut rest);
        assert!(
            !end.as_ref().is_err_and(|e| matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )),
            "a held connection is still open: {end:?}"
        );
    }
}

/// An answer to a connection that did not show the token (the page's own files, anyone's to
/// fetch, and refusals) closes it: connections that kept asking for the page's files held
/// every one of its slots, for good, without the token.
#[test]
fn answers_without_the_token_close_their_connection() {
    use std::io::Read;
    let (dir, net) = scratch("ui-close");
    let node = NodeProc::start(dir.path(), &net, "n", "mio", "127.0.0.1:0", &[]);
    let ui = UiProc::start(&node);
    let port = ui.page.port;
    for path in ["/style.css", "/", "/api/state"] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("a timeout");
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut all = Vec::new();
        let end = stream.read_to_end(&mut all);
        assert!(end.is_ok(), "{path}: still open: {end:?}");
        let text = String::from_utf8_lossy(&all).to_ascii_lowercase();
        assert!(text.contains("connection: close"), "{path}");
    }
}

/// A header past `HEADER_BYTES_MAX` is answered 431 (hyper's own bound was some 400 KiB).
#[test]
fn a_header_past_its_bound_is_refused() {
    use weft_drivers::ui::server::HEADER_BYTES_MAX;
    let (dir, net) = scratch("ui-header");
    let node = NodeProc::start(dir.path(), &net, "n", "mio", "127.0.0.1:0", &[]);
    let ui = UiProc::start(&node);
    let port = ui.page.port;
    let long = "x".repeat(HEADER_BYTES_MAX + 1);
    assert_eq!(http(port, "GET", "/", &[("X-Long", &long)], "").status, 431);
    let fits = "x".repeat(HEADER_BYTES_MAX / 2);
    assert_eq!(http(port, "GET", "/", &[("X-Long", &fits)], "").status, 200);
}
