//! Controller mode: the agent's side of `tapio-wire/v1` (SPEC §6).
//!
//! One thread, agent-initiated HTTP only: hello → config poll (with
//! `If-None-Match`) → hand the config to the drain thread, which writes the
//! carriers → heartbeat with the *applied* hash, observer statuses and loss
//! counters. Until a config is applied the carriers stay all-zero, so the
//! kernel side is inert and heartbeats say `unconfigured`.
//!
//! An outage never stops observation: the last applied config stays, every
//! failed request is counted in `tapio_controller_send_failures_total{kind}`
//! and `tapio_config_fetch_total{result="error"}`, and the client keeps
//! trying each interval; when the controller answers again (or says it does
//! not know this agent, e.g. after a restart) it sends a new hello and
//! converges by itself. Redirects are never followed; the token is sent
//! only as a bearer header and never logged.
//!
//! Every response body is read bounded ([`MAX_CONFIG_BODY`] for the config,
//! [`MAX_OTHER_BODY`] otherwise): a larger one (declared or streamed) is
//! refused with the cap in the log, counted
//! (`tapio_config_fetch_total{result="too_large"}` for the config), and the
//! last good config stays.
//!
//! The link's state (connecting, ok, unreachable, unauthorized, error) is
//! kept in [`Shared::set_controller`] for the status file and `/readyz`.
//! While no config is applied the agent observes nothing, and the client
//! says so, and why, in one log line repeated at most once a minute.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::metrics::{Metrics, ResultLabel};
use super::pipeline::{ControllerLink, Shared};
use crate::wire::v1::{
    ConfigResponse, Heartbeat, HeartbeatAck, Hello, ObserverStatus, PATH_CONFIG, PATH_HEARTBEAT,
    PATH_HELLO,
};

/// What the client needs to know.
pub struct ClientConfig {
    pub base: reqwest::Url,
    pub token: Option<String>,
    pub agent_id: String,
    pub node_name: String,
    /// Heartbeat and config-poll interval.
    pub interval: Duration,
    pub observers: Vec<String>,
}

/// Largest config response read (a compiled config is a few KiB).
pub const MAX_CONFIG_BODY: u64 = 4 << 20;
/// Largest hello/heartbeat answer or error body read.
pub const MAX_OTHER_BODY: u64 = 64 << 10;
/// Longest an unchanged bad link state goes without a log line.
pub const REPEAT_LOG_EVERY: Duration = Duration::from_secs(60);
/// Most characters of a controller's error body quoted in a log line.
const QUOTE_CHARS: usize = 200;

/// Why a request failed, sorted the way [`ControllerLink::state`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// `unreachable`, `unauthorized` or `error`.
    pub state: &'static str,
    pub reason: String,
    /// The body exceeded its cap.
    pub too_large: bool,
}

impl RequestError {
    fn new(state: &'static str, reason: impl Into<String>) -> RequestError {
        RequestError {
            state,
            reason: reason.into(),
            too_large: false,
        }
    }

    /// A transport failure: DNS, connect, timeout are `unreachable`.
    fn transport(what: &str, e: &reqwest::Error) -> RequestError {
        let mut chain = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            let text = cause.to_string();
            // Some layers repeat their source's text: print each cause once.
            if !chain.contains(&text) {
                chain.push_str(": ");
                chain.push_str(&text);
            }
            source = cause.source();
        }
        let state = if e.is_connect() || e.is_timeout() {
            "unreachable"
        } else {
            "error"
        };
        RequestError::new(state, format!("{what}: {chain}"))
    }

    /// A non-success HTTP status; 401 and 403 are `unauthorized`.
    fn status(what: &str, status: reqwest::StatusCode, body: &[u8]) -> RequestError {
        let state = match status.as_u16() {
            401 | 403 => "unauthorized",
            _ => "error",
        };
        let quoted = quote(body);
        let reason = if quoted.is_empty() {
            format!("{what}: {status}")
        } else {
            format!("{what}: {status}: {quoted}")
        };
        RequestError::new(state, reason)
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Up to [`QUOTE_CHARS`] of an untrusted body, control characters escaped
/// so it cannot forge log lines.
fn quote(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(QUOTE_CHARS)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Whether a link state deserves a log line now: on any change, and while
/// a bad state lasts, once per [`REPEAT_LOG_EVERY`].
fn log_due(last: Option<(&'static str, Instant)>, state: &str, now: Instant) -> bool {
    match last {
        None => true,
        Some((prev, at)) => {
            prev != state
                || (state != "ok" && now.saturating_duration_since(at) >= REPEAT_LOG_EVERY)
        }
    }
}

/// Reads a response body of at most `cap` bytes. A declared length over
/// the cap is refused before reading; a streamed one stops one byte past it.
pub fn read_body_capped(
    what: &str,
    mut resp: reqwest::blocking::Response,
    cap: u64,
) -> Result<Vec<u8>, RequestError> {
    let too_large = || RequestError {
        state: "error",
        reason: format!("{what}: response body larger than {cap} bytes, refused"),
        too_large: true,
    };
    if resp.content_length().is_some_and(|n| n > cap) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    (&mut resp)
        .take(cap + 1)
        .read_to_end(&mut body)
        .map_err(|e| RequestError::new("unreachable", format!("{what}: reading the body: {e}")))?;
    if body.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(body)
}

pub struct ControllerClient {
    cfg: ClientConfig,
    http: reqwest::blocking::Client,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    hello_done: bool,
    etag: Option<String>,
    /// The last link state logged, and when.
    logged: Option<(&'static str, Instant)>,
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl ControllerClient {
    pub fn new(
        cfg: ClientConfig,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(ControllerClient {
            cfg,
            http,
            shared,
            metrics,
            hello_done: false,
            etag: None,
            logged: None,
        })
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, RequestError> {
        self.cfg
            .base
            .join(path)
            .map_err(|e| RequestError::new("error", format!("{path}: {e}")))
    }

    fn auth(&self, rb: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.cfg.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    fn failed(&mut self, kind: &str, e: &RequestError) {
        self.metrics.controller_send_failure(kind, 1);
        // A failure means the controller may have lost us: hello again.
        self.hello_done = false;
        self.set_link(e.state, e.reason.clone());
    }

    /// Records the link state and logs it: on every change, and while a
    /// bad state lasts at most once per [`REPEAT_LOG_EVERY`].
    fn set_link(&mut self, state: &'static str, reason: String) {
        let endpoint = self.cfg.base.as_str().trim_end_matches('/').to_string();
        self.shared.set_controller(ControllerLink {
            endpoint: endpoint.clone(),
            state,
            reason: reason.clone(),
        });
        if !log_due(self.logged, state, Instant::now()) {
            return;
        }
        self.logged = Some((state, Instant::now()));
        if state == "ok" {
            tracing::info!("controller {endpoint}: connected");
            return;
        }
        match self.shared.applied() {
            None => {
                let until = match state {
                    "unauthorized" => "the controller accepts its token",
                    "unreachable" => "the controller can be reached",
                    _ => "the controller answers correctly",
                };
                tracing::error!(
                    "controller {endpoint}: {state} ({reason}) — no config applied, the agent observes nothing until {until}"
                );
            }
            Some(a) => tracing::warn!(
                "controller {endpoint}: {state} ({reason}) — observation continues with config generation {}",
                a.generation
            ),
        }
    }

    fn post_json<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R, RequestError> {
        let what = format!("POST {path}");
        // Serialised here rather than by reqwest's `json` feature, which
        // would only wrap these two lines.
        let body = serde_json::to_vec(body)
            .map_err(|e| RequestError::new("error", format!("{what}: cannot encode: {e}")))?;
        let resp = self
            .auth(self.http.post(self.url(path)?))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .map_err(|e| RequestError::transport(&what, &e))?;
        let status = resp.status();
        let bytes = read_body_capped(&what, resp, MAX_OTHER_BODY)?;
        if !status.is_success() {
            return Err(RequestError::status(&what, status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| RequestError::new("error", format!("{what}: bad response body: {e}")))
    }

    fn hello(&mut self) -> Result<(), RequestError> {
        let hello = Hello::new(
            self.cfg.agent_id.clone(),
            self.cfg.node_name.clone(),
            env!("CARGO_PKG_VERSION"),
            kernel_release(),
            self.cfg.observers.clone(),
        );
        let _: serde_json::Value = self.post_json(PATH_HELLO, &hello)?;
        self.hello_done = true;
        tracing::info!(agent_id = %self.cfg.agent_id, "hello sent to the controller");
        Ok(())
    }

    /// Polls the config; returns true when a new one was handed over.
    fn poll_config(&mut self) -> Result<bool, RequestError> {
        let what = "GET config";
        let mut url = self.url(PATH_CONFIG)?;
        url.query_pairs_mut()
            .append_pair("agent_id", &self.cfg.agent_id)
            .append_pair("node_name", &self.cfg.node_name)
            .append_pair("version", env!("CARGO_PKG_VERSION"));
        let mut rb = self.auth(self.http.get(url));
        if let Some(tag) = &self.etag {
            rb = rb.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        let resp = rb.send().map_err(|e| RequestError::transport(what, &e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            self.fetch("not_modified");
            return Ok(false);
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let cap = if status.is_success() {
            MAX_CONFIG_BODY
        } else {
            MAX_OTHER_BODY
        };
        let bytes = read_body_capped(what, resp, cap)?;
        if !status.is_success() {
            return Err(RequestError::status(what, status, &bytes));
        }
        let cr: ConfigResponse = serde_json::from_slice(&bytes)
            .map_err(|e| RequestError::new("error", format!("{what}: bad body: {e}")))?;
        let Some(generation) = cr.generation() else {
            return Err(RequestError::new(
                "error",
                format!("{what}: invalid config_version {:?}", cr.config_version),
            ));
        };
        if cr.config.hash() != cr.config_hash {
            return Err(RequestError::new(
                "error",
                format!("{what}: config_hash does not match the config's content"),
            ));
        }
        let current = self.shared.applied();
        let same = current
            .as_ref()
            .is_some_and(|a| a.hash == cr.config_hash && a.generation == generation);
        self.etag = etag;
        self.fetch("updated");
        if same {
            return Ok(false);
        }
        tracing::info!(generation, hash = %cr.config_hash, "new config from the controller");
        self.shared.request_config(cr.config, generation);
        Ok(true)
    }

    /// A failed config poll: counted by why, the last good config kept.
    fn config_failed(&mut self, e: &RequestError) {
        self.fetch(if e.too_large { "too_large" } else { "error" });
        self.failed("config", e);
    }

    fn fetch(&self, result: &str) {
        self.metrics
            .config_fetch
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    fn heartbeat(&mut self) -> Result<HeartbeatAck, RequestError> {
        let observers: BTreeMap<String, ObserverStatus> = self
            .shared
            .statuses()
            .into_iter()
            .map(|(o, s)| {
                (
                    o.as_str().to_string(),
                    ObserverStatus {
                        state: s.state.into(),
                        reason: s.reason,
                    },
                )
            })
            .collect();
        let loss = self.metrics.loss_counters();
        let hb = match self.shared.applied() {
            Some(a) => Heartbeat::configured(
                self.cfg.agent_id.clone(),
                &a.hash,
                a.generation,
                observers,
                loss,
            ),
            None => Heartbeat::unconfigured(self.cfg.agent_id.clone(), observers, loss),
        };
        self.post_json(PATH_HEARTBEAT, &hb)
    }

    /// One round: hello if needed, config poll, heartbeat.
    pub fn round(&mut self) {
        if !self.hello_done {
            if let Err(e) = self.hello() {
                self.failed("hello", &e);
                self.fetch_error_if_unconfigured();
                return;
            }
        }
        if let Err(e) = self.poll_config() {
            self.config_failed(&e);
            return;
        }
        match self.heartbeat() {
            Ok(ack) => {
                self.set_link("ok", String::new());
                if ack.hello_required {
                    self.hello_done = false;
                }
                let applied = self.shared.applied().map(|a| a.hash);
                if applied.as_ref() != Some(&ack.config_hash) {
                    // The controller moved on: fetch now rather than next round.
                    if let Err(e) = self.poll_config() {
                        self.config_failed(&e);
                    }
                }
            }
            Err(e) => self.failed("heartbeat", &e),
        }
    }

    fn fetch_error_if_unconfigured(&self) {
        if self.shared.applied().is_none() {
            self.fetch("error");
        }
    }

    /// Runs rounds every interval until the agent stops.
    pub fn run(mut self) {
        let endpoint = self.cfg.base.as_str().trim_end_matches('/').to_string();
        self.shared.set_controller(ControllerLink {
            endpoint,
            state: "connecting",
            reason: String::new(),
        });
        // Every result the config poll can count exists from the start.
        for r in ["updated", "not_modified", "error", "too_large"] {
            self.metrics
                .config_fetch
                .get_or_create(&ResultLabel { result: r.into() })
                .inc_by(0);
        }
        let mut next = Instant::now();
        while !self.shared.stopping() {
            if Instant::now() >= next {
                self.round();
                next = Instant::now() + self.cfg.interval;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CompiledConfig;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// What the test server sends for one request.
    #[derive(Clone)]
    enum Reply {
        /// Status and body, with a Content-Length.
        Plain(u16, String),
        /// 200 with a chunked body that never ends.
        Endless,
        /// 200 declaring a huge Content-Length, then nothing.
        Declared(u64),
    }

    /// A loopback HTTP/1.1 server answering each request (by path prefix)
    /// from `route`; one connection per request. Bounded: it stops after
    /// 64 connections.
    fn server(route: impl Fn(&str, usize) -> Reply + Send + 'static) -> reqwest::Url {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for (n, conn) in l.incoming().take(64).enumerate() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                match route(&path, n) {
                    Reply::Plain(code, body) => {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Reply::Declared(n) => {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                        );
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Reply::Endless => {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                        );
                        let chunk = vec![b'{'; 64 << 10];
                        // Until the client hangs up, at most 1 GiB.
                        for _ in 0..(1 << 14) {
                            if write!(conn, "{:x}\r\n", chunk.len()).is_err()
                                || conn.write_all(&chunk).is_err()
                                || conn.write_all(b"\r\n").is_err()
                            {
                                break;
                            }
                        }
                    }
                }
            }
        });
        reqwest::Url::parse(&format!("http://{addr}/")).unwrap()
    }

    fn client(base: reqwest::Url) -> (ControllerClient, Arc<Shared>, Arc<Metrics>) {
        let shared = Shared::new();
        let metrics = Metrics::new();
        let c = ControllerClient::new(
            ClientConfig {
                base,
                token: Some("wrong".into()),
                agent_id: "01J0000000000000000000TEST".into(),
                node_name: "n1".into(),
                interval: Duration::from_secs(5),
                observers: vec!["network".into()],
            },
            shared.clone(),
            metrics.clone(),
        )
        .unwrap();
        (c, shared, metrics)
    }

    fn count(metrics: &Metrics, series: &str) -> u64 {
        metrics
            .encode()
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0, |v| v as u64)
    }

    #[test]
    fn a_401_marks_the_link_unauthorized_with_the_reason() {
        let base = server(|_, _| Reply::Plain(401, r#"{"error":"bad token"}"#.into()));
        let (mut c, shared, metrics) = client(base.clone());
        c.round();
        let link = shared.controller().expect("link recorded");
        assert_eq!(link.state, "unauthorized");
        assert_eq!(link.endpoint, base.as_str().trim_end_matches('/'));
        assert!(link.reason.contains("401"), "{}", link.reason);
        assert!(link.reason.contains("bad token"), "{}", link.reason);
        assert_eq!(
            count(
                &metrics,
                "tapio_controller_send_failures_total{kind=\"hello\"}"
            ),
            1
        );
        assert_eq!(
            count(&metrics, "tapio_config_fetch_total{result=\"error\"}"),
            1
        );
        assert!(shared.applied().is_none() && shared.take_pending().is_none());
    }

    #[test]
    fn an_endpoint_that_does_not_resolve_is_unreachable() {
        // `.invalid` never resolves (RFC 2606).
        let base = reqwest::Url::parse("http://tapio-controller.invalid:8080/").unwrap();
        let (mut c, shared, _) = client(base);
        c.round();
        let link = shared.controller().unwrap();
        assert_eq!(link.state, "unreachable", "{}", link.reason);
        assert!(
            link.reason.starts_with(&format!("POST {PATH_HELLO}: ")),
            "{}",
            link.reason
        );
        // Resolution fails, or (a resolver that never answers) times out.
        let why = link.reason.to_lowercase();
        assert!(
            why.contains("dns") || why.contains("timed out"),
            "{}",
            link.reason
        );
    }

    #[test]
    fn bad_states_are_logged_on_change_and_then_once_a_minute() {
        let t0 = Instant::now();
        assert!(log_due(None, "unauthorized", t0));
        let last = Some(("unauthorized", t0));
        assert!(!log_due(last, "unauthorized", t0 + Duration::from_secs(59)));
        assert!(log_due(last, "unauthorized", t0 + REPEAT_LOG_EVERY));
        assert!(log_due(last, "unreachable", t0 + Duration::from_secs(1)));
        assert!(log_due(last, "ok", t0 + Duration::from_secs(1)));
        assert!(!log_due(Some(("ok", t0)), "ok", t0 + REPEAT_LOG_EVERY * 2));
    }

    #[test]
    fn an_endless_or_oversized_config_body_is_refused_and_the_last_good_config_stays() {
        let good =
            serde_json::to_string(&ConfigResponse::new(3, CompiledConfig::default())).unwrap();
        let base = server(move |path, _| {
            if path.starts_with(PATH_HELLO) {
                Reply::Plain(200, "{}".into())
            } else if path.starts_with(PATH_CONFIG) {
                // First poll good, then endless, then a huge declared length.
                static POLLS: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                match POLLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                    0 => Reply::Plain(200, good.clone()),
                    1 => Reply::Endless,
                    _ => Reply::Declared(1 << 40),
                }
            } else {
                Reply::Plain(404, String::new())
            }
        });
        let (mut c, shared, metrics) = client(base);
        c.hello().unwrap();
        assert_eq!(c.poll_config(), Ok(true));
        // What the drain thread does with a pending config.
        let applied = shared.take_pending().unwrap();
        shared.mark_applied(applied);
        for _ in 0..2 {
            let e = c.poll_config().unwrap_err();
            assert!(e.too_large, "{e}");
            assert!(e.reason.contains(&MAX_CONFIG_BODY.to_string()), "{e}");
            c.config_failed(&e);
        }
        assert_eq!(
            count(&metrics, "tapio_config_fetch_total{result=\"too_large\"}"),
            2
        );
        assert_eq!(
            count(&metrics, "tapio_config_fetch_total{result=\"updated\"}"),
            1
        );
        assert_eq!(
            shared.applied().unwrap().generation,
            3,
            "last good config kept"
        );
        assert!(shared.take_pending().is_none(), "nothing new handed over");
        assert_eq!(shared.controller().unwrap().state, "error");
    }
}
