//! The HTTP side: the routes, the guard every request passes ([`super::auth`]), and the
//! thread with its own tokio runtime that serves them, whatever driver runs the node.
//!
//! ```text
//! GET  /             the page (no token: its script reads it from the address's #token=…)
//! GET  /app.js       its script          GET /style.css   its style sheet
//! GET  /api/state    a snapshot of the node (JSON, `api::UiState`); /api/… needs the token
//! GET  /api/events   server-sent events: `state`, a snapshot, whenever a new one is taken
//! POST /api/action   an `api::Action` (JSON) -> `api::ActionOutcome` (JSON)
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::api::{self, Action, ActionOutcome, Gatherer};
use super::auth::{self, Token};
use super::events::{self, Feed};

/// The page, its script and its style, built into the binary.
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The paths served without the token: the page, its script and its style, which hold no
/// secret (the script takes the token from the address and sends it with each API request).
const PUBLIC_PATHS: [&str; 3] = ["/", "/app.js", "/style.css"];

/// The most connections served at once; more wait to be accepted.
pub const CONNECTIONS_MAX: usize = 32;

/// How long a connection may take to send a request's header, counted from the first read
/// after the previous answer (so also how long an idle kept-alive connection stays open).
/// Past it the connection is closed: a connection that sends nothing, or a header byte at a
/// time, does not hold one of the [`CONNECTIONS_MAX`] slots for ever. A streaming answer
/// (the events) is not a header read and is not cut.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes a request's start line and header may take: 64 KiB (hyper's own bound is
/// its read buffer's, some 400 KiB; the page's requests send well under 4 KiB). More is
/// answered 431 and the connection closed.
pub const HEADER_BYTES_MAX: usize = 64 << 10;

/// The largest request body read, bytes (an action is a few paths).
pub const BODY_BYTES_MAX: usize = 16 * 1024;

/// The most actions carried out at once; more are answered 503.
pub const ACTIONS_MAX: usize = 4;

/// Headers on every answer: no framing, no sniffing, nothing cached, no referrer, and only
/// this server's own script and style.
const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// What every handler shares.
struct Shared {
    token: Token,
    port: u16,
    socket: PathBuf,
    gatherer: Arc<Mutex<Gatherer>>,
    feed: Feed,
    actions: Arc<Semaphore>,
}

/// A running page server; dropping it stops it.
#[derive(Debug)]
pub struct UiServer {
    addr: SocketAddr,
    url: String,
    stop: watch::Sender<bool>,
}

impl UiServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to open, with the token.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for UiServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The page's listening socket, bound and not yet served.
#[derive(Debug)]
pub struct Bound {
    listener: std::net::TcpListener,
    addr: SocketAddr,
}

impl Bound {
    /// Binds `listen` (port 0: a free one).
    pub fn bind(listen: SocketAddr) -> Result<Bound, String> {
        let listener = std::net::TcpListener::bind(listen)
            .map_err(|e| format!("web page: cannot listen on {listen}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("web page: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("web page: {e}"))?;
        Ok(Bound { listener, addr })
    }

    /// Serves the page of the node whose control socket is `socket`, with `token`, on a
    /// thread of its own with its own tokio runtime.
    pub fn serve(self, token: Token, socket: PathBuf) -> Result<UiServer, String> {
        start(self.listener, self.addr, token, socket)
    }
}

fn start(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    token: Token,
    socket: PathBuf,
) -> Result<UiServer, String> {
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    // A fragment: the browser never sends it to any server, nor in a Referer.
    let url = format!("http://{host}/#token={}", token.hex());
    let (stop, stopped) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(CONNECTIONS_MAX)
        .thread_name("weft-ui-blocking")
        .build()
        .map_err(|e| format!("web page: tokio runtime: {e}"))?;
    // Not joined: a stopped server lets its connections finish the answers under way (for
    // up to `SHUTDOWN_GRACE`) and then ends on its own; a process that exits takes the thread
    // with it.
    std::thread::Builder::new()
        .name("weft-ui".into())
        .spawn(move || runtime.block_on(serve(listener, token, socket, stopped)))
        .map_err(|e| format!("web page: cannot start its thread: {e}"))?;
    Ok(UiServer { addr, url, stop })
}

async fn serve(
    listener: std::net::TcpListener,
    token: Token,
    socket: PathBuf,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("web page: {e}");
            return;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let gatherer = Arc::new(Mutex::new(Gatherer::new(socket.clone())));
    let feed = Feed::start(Arc::clone(&gatherer), stopped.clone());
    let shared = Arc::new(Shared {
        token,
        port,
        socket,
        gatherer,
        feed,
        actions: Arc::new(Semaphore::new(ACTIONS_MAX)),
    });
    let app = router(shared);
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Connections that ended are reaped as new ones come.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = until_stopped(&mut stopped) => break,
        };
        // The semaphore is never closed, so acquiring only waits.
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = until_stopped(&mut stopped) => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let stream = StallGuard::new(stream, WRITE_STALL_TIMEOUT);
                connections.spawn(serve_connection(stream, app.clone(), stopped.clone(), slot));
            }
            Err(e) => {
                tracing::debug!("web page: accept failed: {e}");
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
    }
    // Told to stop: each connection finishes the answer under way (its task saw the stop
    // too); the runtime, dropped when this returns, would cancel them.
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, drained).await;
}

/// How long a stopped server waits for its connections to finish the answers under way.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a write to a connection may wait for the client to read (the event stream's
/// keep-alive comes every 15 s, so a page that listens always reads well within it): past
/// it the connection is closed, so a client that asks and never reads cannot hold a slot.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection whose writes fail once one has waited [`WRITE_STALL_TIMEOUT`] for room
/// (hyper has no write timeout of its own).
struct StallGuard {
    stream: tokio::net::TcpStream,
    /// How long a write may wait ([`WRITE_STALL_TIMEOUT`]).
    timeout: Duration,
    /// When the write now waiting started to wait.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallGuard {
    fn new(stream: tokio::net::TcpStream, timeout: Duration) -> StallGuard {
        StallGuard {
            stream,
            timeout,
            stalled: None,
        }
    }

    /// A write's outcome: ready ends any wait; pending starts one, or fails it once too long.
    fn judge<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client has not read for WRITE_STALL_TIMEOUT",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.judge(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.judge(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.judge(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// How long accepting pauses after an error (out of descriptors, say).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Returns once the server is told to stop (or its handle is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    while !*stopped.borrow_and_update() {
        if stopped.changed().await.is_err() {
            return;
        }
    }
}

/// One connection, HTTP/1 with the header read timeout (and its writes with
/// [`WRITE_STALL_TIMEOUT`]), holding `_slot` until it closes; when the server stops, it ends
/// gracefully (the answer under way is finished, within `SHUTDOWN_GRACE`).
async fn serve_connection(
    stream: StallGuard,
    app: Router,
    mut stopped: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(HEADER_BYTES_MAX);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        done = connection.as_mut() => {
            if let Err(e) = done {
                tracing::debug!("web page: connection ended: {e}");
            }
            return;
        }
        () = until_stopped(&mut stopped) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/state", get(state))
        .route("/api/events", get(events))
        .route("/api/action", post(action))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), guard))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(shared)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn forbidden(why: &str) -> Response {
    let body = format!(
        "403 Forbidden: {why}.\nOpen the address weft printed (it ends in #token=…); the token is in the node's state folder, file {}.\n",
        auth::TOKEN_FILE
    );
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Every request: our own Host; past the page itself, the token; for a POST our Origin.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = header(headers, "host").unwrap_or_default();
    let reads = request.method() == Method::GET || request.method() == Method::HEAD;
    let authorized = auth::bearer_token(header(headers, "authorization"))
        .is_some_and(|t| shared.token.matches(t));
    let refusal = if !auth::host_allowed(host, shared.port) {
        Some("foreign Host header")
    } else if reads && PUBLIC_PATHS.contains(&request.uri().path()) {
        None
    } else if !authorized {
        Some("no valid token")
    } else if !reads {
        auth::cross_site(
            header(headers, "origin"),
            header(headers, "sec-fetch-site"),
            host,
        )
    } else {
        None
    };
    let mut response = match refusal {
        Some(why) => forbidden(why),
        None => next.run(request).await,
    };
    let out = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        // Fixed lowercase names and visible ASCII values, which `insert` and `from_static`
        // accept (a unit test checks each).
        out.insert(name, HeaderValue::from_static(value));
    }
    // A connection that did not show the token is closed after its answer: anyone on this
    // machine may fetch the page's files, and connections that kept asking for them held
    // every one of the page's slots, for good, without it.
    if !authorized {
        out.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The page (the same for everyone: it holds no secret).
async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

async fn style_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 Not Found\n").into_response()
}

/// A snapshot, taken now.
async fn state(State(shared): State<Arc<Shared>>) -> Response {
    let gatherer = Arc::clone(&shared.gatherer);
    match tokio::task::spawn_blocking(move || events::snapshot_json(&gatherer)).await {
        Ok(json) => (
            [(header::CONTENT_TYPE, "application/json")],
            json.to_string(),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The live feed.
async fn events(State(shared): State<Arc<Shared>>) -> Response {
    match shared.feed.stream(Arc::clone(&shared.gatherer)) {
        Some(sse) => sse.into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("503: {} pages already listen\n", events::STREAMS_MAX),
        )
            .into_response(),
    }
}

/// A button's request, carried out through the control socket.
async fn action(State(shared): State<Arc<Shared>>, Json(action): Json<Action>) -> Response {
    let Ok(permit) = Arc::clone(&shared.actions).try_acquire_owned() else {
        let busy = ActionOutcome {
            ok: false,
            message: format!("busy: {} actions under way", ACTIONS_MAX),
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(busy)).into_response();
    };
    let socket = shared.socket.clone();
    let done = tokio::task::spawn_blocking(move || {
        let outcome = api::act(&socket, action);
        drop(permit);
        outcome
    })
    .await;
    match done {
        Ok(outcome) if outcome.ok => Json(outcome).into_response(),
        Ok(outcome) => (StatusCode::UNPROCESSABLE_ENTITY, Json(outcome)).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_headers_are_valid_and_the_page_holds_no_secret() {
        // `HeaderValue::from_static` panics on a bad value: these are checked here once.
        for (name, value) in SECURITY_HEADERS {
            // `insert` takes a `&'static str` name as `from_static` does: lowercase only.
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{name}"
            );
            assert!(
                header::HeaderName::from_bytes(name.as_bytes()).is_ok(),
                "{name}"
            );
            assert!(HeaderValue::from_str(value).is_ok(), "{name}: {value}");
        }
        // Served without the token: no slot for anything per node.
        assert!(!INDEX_HTML.contains("{{"));
        // Nothing is loaded from elsewhere: no absolute URL in the page or its script.
        for asset in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(!asset.contains("http://") && !asset.contains("https://"));
            assert!(!asset.contains("//cdn") && !asset.contains("@import"));
        }
    }

    /// A client that never reads: the write waiting for room fails once it has waited the
    /// guard's time, where a plain stream would wait for ever.
    #[test]
    fn a_write_the_client_never_reads_fails_after_its_time() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (served, _) = listener.accept().await.expect("accept");
            let mut guard = StallGuard::new(served, Duration::from_millis(200));
            let chunk = vec![0u8; 64 * 1024];
            let started = tokio::time::Instant::now();
            let failed = loop {
                let written =
                    std::future::poll_fn(|cx| Pin::new(&mut guard).poll_write(cx, &chunk)).await;
                if let Err(e) = written {
                    break e;
                }
                assert!(started.elapsed() < Duration::from_secs(20), "never failed");
            };
            assert_eq!(failed.kind(), io::ErrorKind::TimedOut, "{failed}");
        });
    }
}
