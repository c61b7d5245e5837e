//! `http` sink, and the batching poster it shares with `otlp`.
//!
//! Occurrences are buffered and sent as one POST when `max_batch` are
//! waiting or the oldest has waited `max_wait`. A transient failure
//! (connection error, timeout, or status 429, 502, 503, 504 — the statuses
//! OTLP/HTTP names retryable) is retried with exponential backoff and full
//! jitter, up to `attempts` tries; then the batch is dropped and counted
//! (`reason="send_failed"`). A `Retry-After` on a retryable response
//! (seconds or an HTTP date) replaces the backoff before the next try,
//! capped at `retry_after_cap` so a receiver cannot park the sink. Every
//! other status (400, 401, 408, 413, 500, ...) is final: resending the same
//! bytes would fail the same way (`reason="rejected"`).
//! `tapio_sink_writes_total{sink,result}` counts occurrences: a delivered
//! batch of n adds n to `ok`, each failed attempt n to `error`.
//! While a batch is retried the sink's queue absorbs new occurrences and
//! overflows into `queue_full` drops; the drain never waits.
//!
//! Shutdown: every request's timeout and every backoff sleep end at the
//! shutdown deadline at the latest; a batch still unsent then is left
//! pending, and the runner counts it as `shutdown_timeout`.
//!
//! Plain `http://` only: this build has no TLS stack. Terminate TLS in a
//! local proxy or collector; an `https://` endpoint is refused at start-up,
//! before any connection is made.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{Shutdown, Sink};
use crate::agent::metrics::Metrics;
use crate::wire::Emitted;

/// Validates a sink endpoint before anything connects to it.
pub fn check_plain_http(url: &str, flag: &str) -> anyhow::Result<reqwest::Url> {
    // Refused before the URL parser sees it: url's IDNA back end is the
    // ASCII-only one (Cargo.toml, idna_adapter), which asserts (in debug
    // builds) that it is never handed what it cannot map.
    if !url.is_ascii() {
        bail!(
            "{flag} {url:?} is not a URL: it has non-ASCII characters (write an international host name in its punycode xn-- form)"
        );
    }
    // A percent-escape in the host decodes to bytes the same back end cannot
    // map either ("http://A%99"), so the authority may not carry one.
    // The parser drops tabs and newlines anywhere and trims control
    // characters and spaces at both ends before it looks for the host.
    let bare: String = url
        .trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    if authority(&bare).contains('%') {
        bail!(
            "{flag} {url:?} is not a URL: its host has a percent-escape (write the host name as it is, punycode for an international one)"
        );
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| anyhow::anyhow!("{flag} {url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "http" => {}
        "https" => bail!(
            "{flag} {url:?}: https is not supported by this build (no TLS stack); send to a local collector or proxy over http"
        ),
        other => bail!("{flag} {url:?}: unsupported scheme {other:?}, expected http"),
    }
    if parsed.host_str().is_none() {
        bail!("{flag} {url:?} has no host");
    }
    Ok(parsed)
}

/// The `user@host:port` part of `scheme:[//]authority/path`, as a special
/// scheme's parser finds it: any run of slashes or backslashes after the
/// scheme may precede it ("http:host" and "http:\\\\host" name a host too).
fn authority(url: &str) -> &str {
    let Some((_, rest)) = url.split_once(':') else {
        return "";
    };
    let rest = rest.trim_start_matches(['/', '\\']);
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    &rest[..end]
}

/// Retry and batching knobs.
#[derive(Debug, Clone)]
pub struct PostPolicy {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub request_timeout: Duration,
    /// Longest wait a `Retry-After` may ask for.
    pub retry_after_cap: Duration,
}

impl Default for PostPolicy {
    fn default() -> Self {
        PostPolicy {
            max_batch: 100,
            max_wait: Duration::from_secs(1),
            attempts: 5,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            retry_after_cap: Duration::from_secs(30),
        }
    }
}

/// Turns a batch into a request body and its content type.
pub type Encoder = Box<dyn Fn(&[Arc<Emitted>]) -> Vec<u8> + Send>;

/// Buffers occurrences and POSTs them in batches.
pub struct BatchPoster {
    name: &'static str,
    url: reqwest::Url,
    content_type: &'static str,
    encode: Encoder,
    client: reqwest::blocking::Client,
    policy: PostPolicy,
    pending: Vec<Arc<Emitted>>,
    oldest: Option<Instant>,
    metrics: Arc<Metrics>,
    rng: u64,
    warned: bool,
    bearer: Option<String>,
    /// Also count failed requests in `tapio_controller_send_failures_total{kind}`.
    failure_kind: Option<&'static str>,
    /// Extra headers on every request (the otlp sink's `--otlp-header`s
    /// and `Content-Encoding`); values are never logged.
    headers: reqwest::header::HeaderMap,
    shutdown: Shutdown,
}

enum Outcome {
    Sent,
    /// Transient; the receiver's `Retry-After`, when it gave one.
    Retry(String, Option<Duration>),
    Rejected(String),
}

/// Whether a status is worth resending the same batch for.
fn retryable(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// The wait a `Retry-After` value asks for at `now`: delay-seconds or an
/// HTTP date (a date in the past means now). `None` when unparseable.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl BatchPoster {
    pub fn new(
        name: &'static str,
        url: reqwest::Url,
        content_type: &'static str,
        encode: Encoder,
        policy: PostPolicy,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<BatchPoster> {
        let client = reqwest::blocking::Client::builder()
            .timeout(policy.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9)
            | 1;
        Ok(BatchPoster {
            name,
            url,
            content_type,
            encode,
            client,
            pending: Vec::with_capacity(policy.max_batch),
            policy,
            oldest: None,
            metrics,
            rng: seed,
            warned: false,
            bearer: None,
            failure_kind: None,
            headers: reqwest::header::HeaderMap::new(),
            shutdown: Shutdown::new(),
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_bearer(mut self, token: Option<String>) -> Self {
        self.bearer = token;
        self
    }

    /// Sends `headers` with every request.
    pub fn with_headers(mut self, headers: reqwest::header::HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    pub fn with_failure_kind(mut self, kind: &'static str) -> Self {
        self.failure_kind = Some(kind);
        self
    }

    fn count_failure(&self, n: u64) {
        self.metrics.sink_write(self.name, false, n);
        if let Some(kind) = self.failure_kind {
            self.metrics.controller_send_failure(kind, 1);
        }
    }

    fn jitter(&mut self, max: Duration) -> Duration {
        // xorshift64: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let nanos = max.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { self.rng % nanos })
    }

    fn post(&self, body: &[u8], timeout: Duration) -> Outcome {
        let mut rb = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, self.content_type)
            .body(body.to_vec());
        if let Some(t) = &self.bearer {
            rb = rb.bearer_auth(t);
        }
        let res = rb.send();
        match res {
            Ok(r) if r.status().is_success() => Outcome::Sent,
            Ok(r) if retryable(r.status()) => {
                let after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, std::time::SystemTime::now()));
                Outcome::Retry(format!("status {}", r.status()), after)
            }
            Ok(r) => Outcome::Rejected(format!("status {}", r.status())),
            Err(e) => Outcome::Retry(e.to_string(), None),
        }
    }

    /// Sends everything pending, retrying up to `attempts` times, and never
    /// past the shutdown deadline: a batch still unsent then stays pending.
    pub fn flush(&mut self, attempts: u32) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        self.oldest = None;
        let body = (self.encode)(&batch);
        let n = batch.len() as u64;
        let mut last = String::new();
        let mut asked: Option<Duration> = None;
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                let exp = self
                    .policy
                    .backoff_base
                    .saturating_mul(1u32 << (attempt - 1).min(16))
                    .min(self.policy.backoff_cap);
                let wait = match asked.take() {
                    Some(d) => d.min(self.policy.retry_after_cap),
                    None => self.jitter(exp),
                };
                self.shutdown.sleep(wait);
            }
            let timeout = match self.shutdown.remaining() {
                None => self.policy.request_timeout,
                Some(left) if left.is_zero() => {
                    // Out of budget: the runner counts it as undelivered.
                    self.pending = batch;
                    return;
                }
                Some(left) => left.min(self.policy.request_timeout),
            };
            match self.post(&body, timeout) {
                Outcome::Sent => {
                    self.metrics.sink_write(self.name, true, n);
                    self.warned = false;
                    return;
                }
                Outcome::Rejected(why) => {
                    self.count_failure(n);
                    self.metrics.sink_drop(self.name, "rejected", n);
                    tracing::warn!(sink = self.name, url = %self.url, "batch of {n} rejected: {why}");
                    return;
                }
                Outcome::Retry(why, after) => {
                    self.count_failure(n);
                    last = why;
                    asked = after;
                }
            }
        }
        if self.shutdown.expired() {
            self.pending = batch;
            return;
        }
        self.metrics.sink_drop(self.name, "send_failed", n);
        if !self.warned {
            tracing::warn!(sink = self.name, url = %self.url, "dropped a batch of {n} after {attempts} attempts: {last}");
            self.warned = true;
        }
    }

    fn due(&self) -> bool {
        self.pending.len() >= self.policy.max_batch
            || self
                .oldest
                .is_some_and(|t| t.elapsed() >= self.policy.max_wait)
    }
}

impl Sink for BatchPoster {
    fn name(&self) -> &'static str {
        self.name
    }

    fn accept(&mut self, batch: &[Arc<Emitted>]) {
        for o in batch {
            if self.pending.is_empty() {
                self.oldest = Some(Instant::now());
            }
            self.pending.push(o.clone());
            if self.pending.len() >= self.policy.max_batch {
                self.flush(self.policy.attempts);
            }
        }
        if self.due() {
            self.flush(self.policy.attempts);
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.policy.max_wait / 4)
    }

    fn tick(&mut self) {
        if self.due() {
            self.flush(self.policy.attempts);
        }
    }

    fn close(&mut self) {
        // Full retries: the shutdown deadline, not a lower attempt count,
        // keeps a dead endpoint from holding the exit.
        self.flush(self.policy.attempts);
    }

    fn attach_shutdown(&mut self, shutdown: Shutdown) {
        self.shutdown = shutdown;
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        &["send_failed", "rejected"]
    }
}

/// A JSON array of the occurrences' shared texts (no whitespace, as
/// `serde_json` writes one): assembled, not serialised again.
pub fn json_array(batch: &[Arc<Emitted>]) -> Vec<u8> {
    let texts = || batch.iter().map(|o| o.json().get().as_bytes());
    let mut body = Vec::with_capacity(2 + texts().map(|t| t.len() + 1).sum::<usize>());
    body.push(b'[');
    for (i, t) in texts().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(t);
    }
    body.push(b']');
    body
}

/// The `http` sink: a JSON array of occurrences per POST.
pub fn http_sink(
    endpoint: &str,
    policy: PostPolicy,
    metrics: Arc<Metrics>,
) -> anyhow::Result<BatchPoster> {
    let url = check_plain_http(endpoint, "--http-endpoint")?;
    BatchPoster::new(
        "http",
        url,
        "application/json",
        Box::new(json_array),
        policy,
        metrics,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_array_joins_the_shared_texts() {
        assert_eq!(json_array(&[]), b"[]");
        let batch: Vec<_> = (1..=2).map(crate::agent::sinks::tests::occ).collect();
        let body = String::from_utf8(json_array(&batch)).unwrap();
        assert_eq!(
            body,
            format!("[{},{}]", batch[0].json().get(), batch[1].json().get())
        );
        // What serialising the parsed occurrences as an array writes.
        let parsed: Vec<crate::wire::Occurrence> = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), body);
    }

    #[test]
    fn only_plain_http_endpoints_pass() {
        assert!(check_plain_http("http://127.0.0.1:8080/x", "--http-endpoint").is_ok());
        let e = check_plain_http("https://collector:4318", "--otlp-endpoint").unwrap_err();
        assert!(e.to_string().contains("https is not supported"), "{e}");
        assert!(check_plain_http("ftp://x", "--http-endpoint").is_err());
        assert!(check_plain_http("not a url", "--http-endpoint").is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        use std::time::UNIX_EPOCH;
        // 1994-11-06T08:49:37Z, the RFC 9110 example date.
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        for later in [
            "Sun, 06 Nov 1994 08:50:07 GMT",
            "Sunday, 06-Nov-94 08:50:07 GMT",
            "Sun Nov  6 08:50:07 1994",
        ] {
            assert_eq!(
                retry_after(later, now),
                Some(Duration::from_secs(30)),
                "{later}"
            );
        }
        // A date already past means "now", not an error.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in ["", "-1", "1.5", "soon", "Sun, 06 Nov 1994"] {
            assert_eq!(retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn only_the_otlp_transient_statuses_are_retried() {
        let retried: Vec<u16> = (400..600)
            .filter(|c| retryable(reqwest::StatusCode::from_u16(*c).unwrap()))
            .collect();
        assert_eq!(retried, vec![429, 502, 503, 504]);
    }

    #[test]
    fn host_names_are_ascii_or_punycode() {
        // url's IDNA back end is pinned to its ASCII-only release (Cargo.toml,
        // idna_adapter): a Unicode host is refused at startup with the flag
        // named, its punycode spelling works, and ASCII is lower-cased.
        let e = check_plain_http("http://bücher.example:4318/", "--otlp-endpoint").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("--otlp-endpoint \"http://bücher.example:4318/\" is not a URL"),
            "{text}"
        );
        // A percent-escape in the host decodes to bytes the ASCII-only back
        // end cannot map either (found by fuzz/config: "http://A%999998").
        for host in [
            "http://A%999998",
            "http://b%C3%BCcher.example/",
            "http://a%2e/",
            "http:L%cen",
            "http:\\\\a%ce/",
            " \thttp:\n/\t/a%ce/",
        ] {
            let text = check_plain_http(host, "--http-endpoint")
                .unwrap_err()
                .to_string();
            assert!(text.contains("percent-escape"), "{host}: {text}");
        }
        // In the path it is fine.
        check_plain_http("http://collector:8080/a%20b", "--http-endpoint").unwrap();
        let ok = check_plain_http("http://xn--bcher-kva.example:4318/", "--otlp-endpoint").unwrap();
        assert_eq!(ok.host_str(), Some("xn--bcher-kva.example"));
        let ok = check_plain_http("http://Collector.Monitoring:4318/", "--otlp-endpoint").unwrap();
        assert_eq!(ok.host_str(), Some("collector.monitoring"));
    }
}
