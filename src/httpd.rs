//! The bounded HTTP/1 server both the agent's metrics listener and the
//! controller run their axum routers on (SPEC §3 "Bounded everywhere").
//!
//! Owns: the accept loop, the per-connection deadlines, the connection
//! limit, the early 413 for an over-limit declared `Content-Length`, and
//! shutdown. `axum::serve` has none of these: one half-sent request held
//! SIGTERM for as long as the client liked, and idle sockets could use up
//! every file descriptor of the process.
//!
//! Must not: know any route, hold a registry, or depend on the agent or the
//! controller. Counting goes through [`Counters`], so each process plugs in
//! its own metrics; what a refused over-limit request looks like can be
//! shaped by [`Limits::too_large`] (the controller answers in its wire
//! error format).
//!
//! A connection is always in one phase, and each phase has one deadline:
//! * `header` — from accept (or from the first byte of a keep-alive
//!   request) until the request head is complete: [`Limits::header_timeout`].
//!   A client that connects and sends nothing is cut here too.
//! * `body` — from the complete head until the handler has produced its
//!   response, which covers reading the request body:
//!   [`Limits::body_timeout`] for the whole body, not per byte, so a
//!   trickling chunked body is cut.
//! * responding — no phase deadline (our handlers produce bounded
//!   responses); only the lifetime cap below applies.
//! * `idle` — keep-alive wait for the next request: [`Limits::idle_timeout`].
//!
//! On top, [`Limits::max_lifetime`] caps a connection's age: it is asked to
//! close after its current request, and is dropped (counted as `lifetime`)
//! if that takes longer than [`Limits::shutdown_grace`]. A phase deadline
//! that passes drops the connection at once, counted by phase. No 408 is
//! sent: a client that stalls mid-request is not reading answers either.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Reasons a connection is refused (`tapio_http_connections_rejected_total`).
pub const REJECT_REASONS: &[&str] = &["limit"];
/// Kinds of cut connections (`tapio_http_timeouts_total`).
pub const TIMEOUT_KINDS: &[&str] = &["header", "idle", "body", "lifetime"];

/// Where a server reports refused and cut connections. Called from the
/// accept loop and the connection tasks: must be cheap and never block.
pub trait Counters: Send + Sync + 'static {
    /// A connection was accepted and closed at once (`reason`: `limit`).
    fn connection_rejected(&self, reason: &'static str);
    /// A connection was dropped for missing a deadline (one of
    /// [`TIMEOUT_KINDS`]).
    fn timed_out(&self, kind: &'static str);
}

impl<T: Counters + ?Sized> Counters for &'static T {
    fn connection_rejected(&self, reason: &'static str) {
        (**self).connection_rejected(reason)
    }
    fn timed_out(&self, kind: &'static str) {
        (**self).timed_out(kind)
    }
}

/// Plain atomic counters for a process without a prometheus-client
/// registry of its own (the controller); read them with [`HttpStats::rejected`]
/// and [`HttpStats::timeouts`].
#[derive(Debug, Default)]
pub struct HttpStats {
    rejected_limit: AtomicU64,
    timeouts: [AtomicU64; 4],
}

impl HttpStats {
    pub const fn new() -> HttpStats {
        HttpStats {
            rejected_limit: AtomicU64::new(0),
            timeouts: [
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(0),
            ],
        }
    }

    /// Connections refused for `reason` so far (0 for an unknown reason).
    pub fn rejected(&self, reason: &str) -> u64 {
        match reason {
            "limit" => self.rejected_limit.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Connections cut for `kind` so far (0 for an unknown kind).
    pub fn timeouts(&self, kind: &str) -> u64 {
        TIMEOUT_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.timeouts[i].load(Ordering::Relaxed))
    }
}

impl Counters for HttpStats {
    fn connection_rejected(&self, reason: &'static str) {
        if reason == "limit" {
            self.rejected_limit.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn timed_out(&self, kind: &'static str) {
        if let Some(i) = TIMEOUT_KINDS.iter().position(|k| *k == kind) {
            self.timeouts[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Builds the answer to a request whose declared body exceeds the limit
/// (the argument); the status should be 413.
pub type TooLarge = Arc<dyn Fn(u64) -> Response<Body> + Send + Sync>;

/// Every bound of a server. All are parameters so tests can use small ones.
#[derive(Clone)]
pub struct Limits {
    /// `metrics` or `controller`: names the server in log lines.
    pub server: &'static str,
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub max_lifetime: Duration,
    /// After shutdown (or the lifetime cap) asks a connection to close,
    /// how long its in-flight request may still take.
    pub shutdown_grace: Duration,
    /// A declared `Content-Length` above this gets 413 before any body
    /// byte is read. Chunked bodies are bounded by the router's own limit.
    pub max_body_bytes: u64,
    pub counters: Arc<dyn Counters>,
    /// The 413 answer; `None` gives a plain-text one.
    pub too_large: Option<TooLarge>,
}

impl Limits {
    /// Defaults for a small server: 5 s for a request head, 10 s for a
    /// body, 30 s idle keep-alive (long enough to reuse a connection across
    /// 10–15 s scrapes and heartbeats), 5 min lifetime, 2 s shutdown grace.
    pub fn new(
        server: &'static str,
        max_connections: usize,
        counters: Arc<dyn Counters>,
    ) -> Limits {
        Limits {
            server,
            max_connections,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(2),
            max_body_bytes: 1024 * 1024,
            counters,
            too_large: None,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting, asks open connections to close after their current request,
/// and drops whatever is still open after [`Limits::shutdown_grace`]. It
/// never waits for a client beyond that.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let limit_log = RateLimitedLog::new(Duration::from_secs(10));
    let accept_log = RateLimitedLog::new(Duration::from_secs(10));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (router, limits, stop) = (router.clone(), limits.clone(), stop_rx.clone());
                        tasks.spawn(async move {
                            connection(stream, router, &limits, stop).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        // Accept-and-close keeps the backlog from filling
                        // with clients that would wait for nothing.
                        drop(stream);
                        limits.counters.connection_rejected("limit");
                        if let Some(suppressed) = limit_log.ready() {
                            tracing::warn!(
                                server = limits.server,
                                "connection limit {} reached: closing new connections ({suppressed} more since the last report)",
                                limits.max_connections
                            );
                        }
                    }
                },
                Err(e) => {
                    // EMFILE/ENFILE and friends: the pending connection
                    // stays queued, so retrying at once would spin.
                    if let Some(suppressed) = accept_log.ready() {
                        tracing::warn!(server = limits.server, "accept failed: {e} ({suppressed} more since the last report)");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set stays as small as the
            // number of open ones.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Each connection drops itself after the grace; this outer bound only
    // guards against a task that does not get scheduled in time.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace + Duration::from_millis(500), drain)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
}

/// At most one log line per period; counts what it held back.
struct RateLimitedLog {
    period: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    fn new(period: Duration) -> RateLimitedLog {
        RateLimitedLog {
            period,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events held back since the last line)` when a line may be
    /// logged now.
    fn ready(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(t) if now.duration_since(t) < self.period => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Body,
    Responding,
    Idle,
}

/// One connection's phase and when it began, shared by the IO wrapper, the
/// service and the task that enforces the deadline.
struct PhaseClock {
    state: Mutex<(Phase, Instant)>,
    changed: Notify,
}

impl PhaseClock {
    fn new() -> PhaseClock {
        PhaseClock {
            state: Mutex::new((Phase::Header, Instant::now())),
            changed: Notify::new(),
        }
    }

    fn set(&self, phase: Phase) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (phase, Instant::now());
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection starts a new request head.
    fn on_bytes(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 == Phase::Idle {
            *s = (Phase::Header, Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    /// The current phase's deadline and the kind it is counted as.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        let (phase, since) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
        match phase {
            Phase::Header => Some((since + limits.header_timeout, "header")),
            Phase::Body => Some((since + limits.body_timeout, "body")),
            Phase::Idle => Some((since + limits.idle_timeout, "idle")),
            Phase::Responding => None,
        }
    }
}

/// The socket, telling the phase clock when bytes arrive.
struct WatchedIo {
    inner: TcpStream,
    clock: Arc<PhaseClock>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.on_bytes();
        }
        r
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body that moves the connection to `idle` once hyper is done
/// with it (finished or dropped).
struct TrackedBody {
    inner: Body,
    clock: Arc<PhaseClock>,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.clock.set(Phase::Idle);
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The declared body length when it exceeds `max`.
fn declared_over(req: &Request<Incoming>, max: u64) -> Option<u64> {
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    (len > max).then_some(len)
}

fn plain_too_large(max: u64) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("request body exceeds {max} bytes\n")));
    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Drives one connection under the phase deadlines, the lifetime cap and
/// shutdown; returns when it is closed or dropped.
async fn connection(
    stream: TcpStream,
    router: Router,
    limits: &Arc<Limits>,
    mut stop: watch::Receiver<bool>,
) {
    // Responses are written whole; Nagle would only delay the last segment.
    let _ = stream.set_nodelay(true);
    let clock = Arc::new(PhaseClock::new());
    let io = hyper_util::rt::TokioIo::new(WatchedIo {
        inner: stream,
        clock: clock.clone(),
    });
    let svc_clock = clock.clone();
    let svc_limits = limits.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        svc_clock.set(Phase::Body);
        let clock = svc_clock.clone();
        // Refused on the declared length alone: the router (and so any
        // handler that would read the body) is never called.
        let answer: Pin<Box<dyn Future<Output = Response<Body>> + Send>> =
            match declared_over(&req, svc_limits.max_body_bytes) {
                Some(_) => {
                    let max = svc_limits.max_body_bytes;
                    let r = match &svc_limits.too_large {
                        Some(f) => f(max),
                        None => plain_too_large(max),
                    };
                    Box::pin(std::future::ready(r))
                }
                None => {
                    let call = hyper::service::Service::call(
                        &hyper_util::service::TowerToHyperService::new(router.clone()),
                        req,
                    );
                    Box::pin(async move {
                        match call.await {
                            Ok(r) => r,
                            Err(never) => match never {},
                        }
                    })
                }
            };
        async move {
            let response = answer.await;
            clock.set(Phase::Responding);
            Ok::<_, Infallible>(response.map(|inner| TrackedBody { inner, clock }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .keep_alive(true)
        // The phase clock enforces the head deadline; hyper's own would
        // need a timer and could not be told apart from other errors.
        .header_read_timeout(None)
        // Bounds a connection's read buffer (heads and pipelined bytes).
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);

    let lifetime_end = Instant::now() + limits.max_lifetime;
    // Set once the connection was asked to close: (drop-dead time, what
    // asked — counted only if the drop happens).
    let mut closing: Option<(Instant, Option<&'static str>)> = None;
    loop {
        // The next moment something may have to happen: the phase
        // deadline, the lifetime cap, or the end of a closing grace.
        let cap = closing.map_or(lifetime_end, |(t, _)| t);
        let wake = clock.deadline(limits).map_or(cap, |(t, _)| t.min(cap));
        let changed = clock.changed.notified();
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(server = limits.server, "connection ended: {e}");
                }
                return;
            }
            _ = changed => continue,
            // A change is shutdown; an error means the server is gone:
            // close either way.
            _ = stop.changed(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some((Instant::now() + limits.shutdown_grace, None));
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if let Some((t, kind)) = clock.deadline(limits) {
                    if now >= t {
                        limits.counters.timed_out(kind);
                        tracing::debug!(server = limits.server, kind, "connection cut: deadline passed");
                        return;
                    }
                }
                match closing {
                    Some((t, why)) if now >= t => {
                        if let Some(kind) = why {
                            limits.counters.timed_out(kind);
                        }
                        return;
                    }
                    None if now >= lifetime_end => {
                        conn.as_mut().graceful_shutdown();
                        closing = Some((now + limits.shutdown_grace, Some("lifetime")));
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default)]
    struct Recorded(Mutex<HashMap<&'static str, u64>>);

    impl Recorded {
        fn get(&self, k: &str) -> u64 {
            self.0.lock().unwrap().get(k).copied().unwrap_or(0)
        }
    }

    impl Counters for Recorded {
        fn connection_rejected(&self, reason: &'static str) {
            *self.0.lock().unwrap().entry(reason).or_default() += 1;
        }
        fn timed_out(&self, kind: &'static str) {
            *self.0.lock().unwrap().entry(kind).or_default() += 1;
        }
    }

    /// Long enough that nothing in a test hits it by accident.
    const NEVER: Duration = Duration::from_secs(3600);
    /// Upper bound for any single wait in these tests; a failure, not a
    /// figure.
    const BOUND: Duration = Duration::from_secs(15);

    fn limits(counters: Arc<Recorded>) -> Limits {
        Limits {
            header_timeout: NEVER,
            idle_timeout: NEVER,
            body_timeout: NEVER,
            max_lifetime: NEVER,
            shutdown_grace: Duration::from_millis(200),
            max_body_bytes: 1024,
            ..Limits::new("test", 16, counters)
        }
    }

    fn app() -> Router {
        Router::new()
            .route("/metrics", get(|| async { "up 1\n" }))
            .route(
                "/echo",
                post(|body: Bytes| async move { format!("{}", body.len()) }),
            )
            .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
    }

    struct Running {
        addr: std::net::SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        server: tokio::task::JoinHandle<()>,
    }

    impl Running {
        /// Triggers shutdown and waits (bounded) for `serve` to return.
        async fn shut_down(mut self) {
            let _ = self.stop.take().unwrap().send(());
            tokio::time::timeout(BOUND, &mut self.server)
                .await
                .expect("serve did not return after shutdown")
                .unwrap();
        }
    }

    async fn start(limits: Limits) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app(), limits, async {
            let _ = rx.await;
        }));
        Running {
            addr,
            stop: Some(tx),
            server,
        }
    }

    /// Reads until the peer closes; returns what arrived. Panics if the
    /// connection is still open after `BOUND`.
    async fn read_to_close(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(BOUND, s.read(&mut buf)).await {
                Err(_) => panic!(
                    "connection still open after {BOUND:?}; got {:?}",
                    String::from_utf8_lossy(&out)
                ),
                Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&out).into_owned(),
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// One keep-alive GET; returns the response head and body once the
    /// body is complete (the handler's body is short and fixed).
    async fn get_keep_alive(s: &mut TcpStream, path: &str) -> String {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&out).ends_with("up 1\n") {
            let n = tokio::time::timeout(BOUND, s.read(&mut buf))
                .await
                .expect("response within bound")
                .unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_half_sent_request_is_cut_after_the_header_timeout() {
        let counters = Arc::new(Recorded::default());
        let server = start(Limits {
            header_timeout: Duration::from_millis(300),
            ..limits(counters.clone())
        })
        .await;
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /metr").await.unwrap();
        assert_eq!(read_to_close(&mut s).await, "", "no answer, just closed");
        assert_eq!(counters.get("header"), 1);
        // A client that connects and sends nothing is cut the same way.
        let mut quiet = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(read_to_close(&mut quiet).await, "");
        assert_eq!(counters.get("header"), 2);
        assert_eq!(counters.get("idle") + counters.get("body"), 0);
        server.shut_down().await;
    }

    #[tokio::test]
    async fn a_half_sent_request_does_not_delay_shutdown() {
        let counters = Arc::new(Recorded::default());
        // No deadline would ever cut this client: only shutdown can.
        let server = start(limits(counters.clone())).await;
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /metr").await.unwrap();
        // Make sure the server holds the connection before shutting down.
        let mut probe = TcpStream::connect(server.addr).await.unwrap();
        get_keep_alive(&mut probe, "/metrics").await;
        server.shut_down().await;
        assert_eq!(read_to_close(&mut s).await, "");
        assert_eq!(counters.get("header"), 0, "shutdown is not a timeout");
    }

    #[tokio::test]
    async fn slowloris_headers_are_cut() {
        let counters = Arc::new(Recorded::default());
        let server = start(Limits {
            header_timeout: Duration::from_millis(500),
            ..limits(counters.clone())
        })
        .await;
        let s = TcpStream::connect(server.addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        // One header byte every 50 ms, for longer than BOUND if never cut.
        let writer = tokio::spawn(async move {
            let head = b"GET /metrics HTTP/1.1\r\nHost: t\r\nX-Slow: ";
            for i in 0..1000usize {
                let b = head.get(i).copied().unwrap_or(b'a');
                if w.write_all(&[b]).await.is_err() {
                    return i;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            1000
        });
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(BOUND, r.read(&mut buf))
            .await
            .expect("slowloris connection not cut")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        let sent = tokio::time::timeout(BOUND, writer).await.unwrap().unwrap();
        assert!(sent < 1000, "writes kept succeeding");
        assert_eq!(counters.get("header"), 1);
        server.shut_down().await;
    }

    #[tokio::test]
    async fn a_never_ending_chunked_body_is_cut() {
        let counters = Arc::new(Recorded::default());
        let server = start(Limits {
            body_timeout: Duration::from_millis(500),
            ..limits(counters.clone())
        })
        .await;
        let s = TcpStream::connect(server.addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            if w.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .is_err()
            {
                return 0;
            }
            for i in 0..1000usize {
                if w.write_all(b"1\r\na\r\n").await.is_err() {
                    return i;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            1000
        });
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(BOUND, r.read(&mut buf))
            .await
            .expect("chunked body not cut")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        let sent = tokio::time::timeout(BOUND, writer).await.unwrap().unwrap();
        assert!(sent < 1000, "writes kept succeeding");
        assert_eq!(counters.get("body"), 1);
        assert_eq!(counters.get("header"), 0);
        server.shut_down().await;
    }

    #[tokio::test]
    async fn an_over_limit_content_length_gets_413_without_a_body() {
        let counters = Arc::new(Recorded::default());
        let server = start(limits(counters.clone())).await;
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        assert!(
            answer.ends_with("request body exceeds 1024 bytes\n"),
            "{answer}"
        );
        // At the limit it is read and served.
        let mut ok = TcpStream::connect(server.addr).await.unwrap();
        let mut req =
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n"
                .to_vec();
        req.extend(std::iter::repeat_n(b'x', 1024));
        ok.write_all(&req).await.unwrap();
        let answer = read_to_close(&mut ok).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with("1024"), "{answer}");
        server.shut_down().await;
    }

    #[tokio::test]
    async fn a_body_larger_than_the_read_buffer_is_served_within_the_limit() {
        let counters = Arc::new(Recorded::default());
        let server = start(Limits {
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            ..limits(counters.clone())
        })
        .await;
        // 300 KB: several times hyper's 64 KiB read buffer, sent whole.
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let mut req = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\nConnection: close\r\n\r\n".to_vec();
        req.extend(std::iter::repeat_n(b'x', 300_000));
        s.write_all(&req).await.unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with("300000"), "{answer}");
        assert_eq!(counters.get("body"), 0);
        server.shut_down().await;
    }

    #[tokio::test]
    async fn the_413_answer_can_be_shaped_by_the_caller() {
        let counters = Arc::new(Recorded::default());
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = seen.clone();
        let server = start(Limits {
            too_large: Some(Arc::new(move |max| {
                s2.fetch_add(1, Ordering::Relaxed);
                let mut r = Response::new(Body::from(format!("{{\"limit\":{max}}}")));
                *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                r
            })),
            ..limits(counters)
        })
        .await;
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        assert!(answer.ends_with("{\"limit\":1024}"), "{answer}");
        assert_eq!(seen.load(Ordering::Relaxed), 1);
        server.shut_down().await;
    }

    #[tokio::test]
    async fn keep_alive_connections_are_cut_when_idle() {
        let counters = Arc::new(Recorded::default());
        let server = start(Limits {
            // Long enough that a busy test machine still sends the second
            // request in time.
            idle_timeout: Duration::from_secs(2),
            ..limits(counters.clone())
        })
        .await;
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let first = get_keep_alive(&mut s, "/metrics").await;
        assert!(first.starts_with("HTTP/1.1 200 "), "{first}");
        let second = get_keep_alive(&mut s, "/metrics").await;
        assert!(second.starts_with("HTTP/1.1 200 "), "kept alive: {second}");
        assert_eq!(read_to_close(&mut s).await, "");
        assert_eq!(counters.get("idle"), 1);
        assert_eq!(counters.get("header"), 0);
        server.shut_down().await;
    }

    #[tokio::test]
    async fn the_connection_limit_closes_the_excess_and_recovers() {
        let counters = Arc::new(Recorded::default());
        let server = start(Limits {
            max_connections: 2,
            ..limits(counters.clone())
        })
        .await;
        let mut a = TcpStream::connect(server.addr).await.unwrap();
        let mut b = TcpStream::connect(server.addr).await.unwrap();
        // Served, so both hold a slot.
        get_keep_alive(&mut a, "/metrics").await;
        get_keep_alive(&mut b, "/metrics").await;
        let mut c = TcpStream::connect(server.addr).await.unwrap();
        let _ = c
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            .await;
        assert_eq!(
            read_to_close(&mut c).await,
            "",
            "the third is closed unanswered"
        );
        assert_eq!(counters.get("limit"), 1);
        drop(a);
        drop(b);
        // The slots come back once the server has seen the closes.
        let mut served = false;
        for _ in 0..100 {
            let mut d = TcpStream::connect(server.addr).await.unwrap();
            d.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            if read_to_close(&mut d).await.starts_with("HTTP/1.1 200 ") {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(served, "no connection served after the others closed");
        server.shut_down().await;
    }

    #[tokio::test]
    async fn shutdown_with_idle_clients_returns() {
        let counters = Arc::new(Recorded::default());
        let server = start(limits(counters.clone())).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            get_keep_alive(&mut s, "/metrics").await;
            clients.push(s);
        }
        server.shut_down().await;
        for mut s in clients {
            assert_eq!(read_to_close(&mut s).await, "");
        }
        assert_eq!(counters.get("idle"), 0);
    }

    #[tokio::test]
    async fn a_connection_past_its_lifetime_is_closed_after_its_request() {
        let counters = Arc::new(Recorded::default());
        let server = start(Limits {
            max_lifetime: Duration::from_secs(1),
            ..limits(counters.clone())
        })
        .await;
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        get_keep_alive(&mut s, "/metrics").await;
        // Idle when the cap passes: closed cleanly, not counted as a cut.
        assert_eq!(read_to_close(&mut s).await, "");
        assert_eq!(counters.get("lifetime"), 0);
        // Mid-request when the cap passes (a body that stops arriving, no
        // body deadline): dropped after the grace and counted.
        let mut h = TcpStream::connect(server.addr).await.unwrap();
        h.write_all(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
        )
        .await
        .unwrap();
        assert_eq!(read_to_close(&mut h).await, "");
        assert_eq!(counters.get("lifetime"), 1);
        server.shut_down().await;
    }

    #[test]
    fn http_stats_count_by_reason_and_kind() {
        let s = HttpStats::new();
        s.connection_rejected("limit");
        s.timed_out("body");
        s.timed_out("body");
        s.timed_out("lifetime");
        assert_eq!(s.rejected("limit"), 1);
        assert_eq!(s.timeouts("body"), 2);
        assert_eq!(s.timeouts("lifetime"), 1);
        assert_eq!(s.timeouts("header"), 0);
        assert_eq!(s.timeouts("nope"), 0);
    }
}
