//! The agent's counters (SPEC §3), in one prometheus-client registry, and
//! the metrics listener's routes (`/metrics`, `/healthz`, `/readyz`).
//! Connections, deadlines and limits belong to [`crate::httpd`]; the health
//! decisions to [`super::health`]. Nothing here blocks on a client.
//!
//! Label sets are small and fixed (observer, type, sink, reason, result,
//! kind), so cardinality is bounded by construction. Hot paths never touch
//! these per record: the drain thread adds its per-tick totals once a tick.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObserverLabel {
    pub observer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnomalyLabels {
    pub observer: String,
    #[prometheus(flatten)]
    pub kind: TypeLabel,
}

/// `type` is a Rust keyword, so the label lives in its own set.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct TypeLabel(pub String);

impl EncodeLabelSet for TypeLabel {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("type", self.0.as_str()).encode(encoder.encode_label())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObserverReason {
    pub observer: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkResult {
    pub sink: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkReason {
    pub sink: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabel {
    pub observer: String,
    pub program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerReason {
    pub server: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerKind {
    pub server: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Every counter the agent exports.
pub struct Metrics {
    pub events: Family<ObserverLabel, Counter>,
    pub anomalies: Family<AnomalyLabels, Counter>,
    pub lost_events: Family<ObserverLabel, Counter>,
    pub malformed_events: Family<ObserverLabel, Counter>,
    pub correlation_drops: Family<ObserverReason, Counter>,
    /// Peer resets of accepted (inbound) sockets: counted, never occurrences.
    pub inbound_resets: Counter,
    pub drain_cap: Counter,
    pub sink_writes: Family<SinkResult, Counter>,
    pub sink_drops: Family<SinkReason, Counter>,
    pub controller_send_failures: Family<KindLabel, Counter>,
    pub config_fetch: Family<ResultLabel, Counter>,
    pub config_errors: Family<ObserverReason, Counter>,
    pub bpf_runs: Family<ProgramLabel, Counter>,
    pub bpf_run_time_seconds: Family<ProgramLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub http_connections_rejected: Family<ServerReason, Counter>,
    pub http_timeouts: Family<ServerKind, Counter>,
    /// Times the file sink found its data dir removed and re-created it.
    pub data_dir_recreated: Counter,
    registry: Registry,
    /// Occurrences handed to sinks; lets tests and the CLI see progress.
    pub emitted: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let m = Metrics {
            events: Family::default(),
            anomalies: Family::default(),
            lost_events: Family::default(),
            malformed_events: Family::default(),
            correlation_drops: Family::default(),
            inbound_resets: Counter::default(),
            drain_cap: Counter::default(),
            sink_writes: Family::default(),
            sink_drops: Family::default(),
            controller_send_failures: Family::default(),
            config_fetch: Family::default(),
            config_errors: Family::default(),
            bpf_runs: Family::default(),
            bpf_run_time_seconds: Family::default(),
            http_connections_rejected: Family::default(),
            http_timeouts: Family::default(),
            data_dir_recreated: Counter::default(),
            registry: Registry::default(),
            emitted: AtomicU64::new(0),
        };
        registry.register(
            "tapio_events",
            "Ring-buffer records drained",
            m.events.clone(),
        );
        registry.register(
            "tapio_anomalies",
            "Occurrences emitted",
            m.anomalies.clone(),
        );
        registry.register(
            "tapio_lost_events",
            "Records the kernel could not queue (ring buffer full)",
            m.lost_events.clone(),
        );
        registry.register(
            "tapio_malformed_events",
            "Records refused by decode (truncated, oversized, unknown)",
            m.malformed_events.clone(),
        );
        registry.register(
            "tapio_correlation_drops",
            "Facts deliberately not emitted because the evidence was incomplete or ambiguous",
            m.correlation_drops.clone(),
        );
        registry.register(
            "tapio_inbound_resets",
            "Peer resets of sockets this host accepted (or connected before the agent started); never occurrences",
            m.inbound_resets.clone(),
        );
        registry.register(
            "tapio_drain_cap",
            "Drain ticks that hit the per-tick record cap",
            m.drain_cap.clone(),
        );
        registry.register(
            "tapio_sink_writes",
            "Occurrences a sink wrote (ok) or tried to write and failed (error, once per attempt); per sink, offered = writes ok + drops",
            m.sink_writes.clone(),
        );
        registry.register(
            "tapio_sink_drops",
            "Occurrences a sink gave up on, by reason (queue_full, write_error, send_failed, rejected, shutdown_timeout, ...)",
            m.sink_drops.clone(),
        );
        registry.register(
            "tapio_data_dir_recreated",
            "Times the file sink re-created its data dir after it was removed",
            m.data_dir_recreated.clone(),
        );
        registry.register(
            "tapio_controller_send_failures",
            "Failed requests to the controller",
            m.controller_send_failures.clone(),
        );
        registry.register(
            "tapio_config_fetch",
            "Controller config polls by outcome",
            m.config_fetch.clone(),
        );
        registry.register(
            "tapio_config_errors",
            "BPF invocations that found no usable config",
            m.config_errors.clone(),
        );
        registry.register(
            "tapio_bpf_program_runs",
            "BPF program invocations (kernel.bpf_stats_enabled=1 only)",
            m.bpf_runs.clone(),
        );
        registry.register(
            "tapio_bpf_program_run_time_seconds",
            "Time spent in a BPF program (kernel.bpf_stats_enabled=1 only)",
            m.bpf_run_time_seconds.clone(),
        );
        registry.register(
            "tapio_http_connections_rejected",
            "Connections to the metrics listener closed at once (reason=limit: too many open)",
            m.http_connections_rejected.clone(),
        );
        registry.register(
            "tapio_http_timeouts",
            "Connections to the metrics listener cut for missing a deadline",
            m.http_timeouts.clone(),
        );
        // Every label set this server can emit exists from the start, so
        // absent() and rate() work before the first event.
        for reason in crate::httpd::REJECT_REASONS {
            let _ = m.http_connections_rejected.get_or_create(&ServerReason {
                server: HTTP_SERVER.into(),
                reason: (*reason).into(),
            });
        }
        for kind in crate::httpd::TIMEOUT_KINDS {
            let _ = m.http_timeouts.get_or_create(&ServerKind {
                server: HTTP_SERVER.into(),
                kind: (*kind).into(),
            });
        }
        Arc::new(Metrics { registry, ..m })
    }

    /// Prometheus text exposition, format 0.0.4.
    ///
    /// prometheus-client writes OpenMetrics, where a counter family `x` has
    /// `# HELP x` / `# TYPE x counter` and samples `x_total`, and ends with
    /// `# EOF`. The classic text format (what `promtool check metrics` and
    /// every Prometheus understand) names the family like its samples, so
    /// counter metadata is renamed to `x_total` and the EOF marker dropped.
    pub fn encode(&self) -> String {
        let mut om = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut om, &self.registry);
        let counters: std::collections::HashSet<&str> = om
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(om.len() + 64);
        for line in om.lines() {
            if line == "# EOF" {
                continue;
            }
            let meta = line
                .strip_prefix("# HELP ")
                .map(|r| ("# HELP ", r))
                .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
            match meta {
                Some((kind, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    if counters.contains(name) && !name.ends_with("_total") {
                        out.push_str(&format!("{kind}{name}_total {tail}\n"));
                    } else {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    pub fn sink_write(&self, sink: &str, ok: bool, n: u64) {
        self.sink_writes
            .get_or_create(&SinkResult {
                sink: sink.into(),
                result: if ok { "ok" } else { "error" }.into(),
            })
            .inc_by(n);
    }

    pub fn sink_drop(&self, sink: &str, reason: &str, n: u64) {
        self.sink_drops
            .get_or_create(&SinkReason {
                sink: sink.into(),
                reason: reason.into(),
            })
            .inc_by(n);
    }

    pub fn correlation_drop(&self, observer: &str, reason: &str, n: u64) {
        self.correlation_drops
            .get_or_create(&ObserverReason {
                observer: observer.into(),
                reason: reason.into(),
            })
            .inc_by(n);
    }

    pub fn observer_counter(family: &Family<ObserverLabel, Counter>, observer: &str, n: u64) {
        if n > 0 {
            family
                .get_or_create(&ObserverLabel {
                    observer: observer.into(),
                })
                .inc_by(n);
        }
    }

    /// Loss totals for the heartbeat, parsed back from the exposition so the
    /// names match what Prometheus sees (`<family>.<label value>`).
    pub fn loss_counters(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for line in self.encode().lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            for (family, key) in [
                ("tapio_lost_events_total{observer=\"", "lost_events"),
                (
                    "tapio_malformed_events_total{observer=\"",
                    "malformed_events",
                ),
                ("tapio_sink_drops_total{sink=\"", "sink_drops"),
                (
                    "tapio_controller_send_failures_total{kind=\"",
                    "controller_send_failures",
                ),
            ] {
                if let Some(rest) = series.strip_prefix(family) {
                    let label = rest.split('"').next().unwrap_or_default();
                    *out.entry(format!("{key}.{label}")).or_insert(0) += v as u64;
                }
            }
            if series == "tapio_drain_cap_total" {
                out.insert("drain_cap".into(), v as u64);
            }
        }
        out
    }

    pub fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Relaxed)
    }
}

/// The `server` label of the agent's HTTP counters.
pub const HTTP_SERVER: &str = "metrics";
/// Connections the metrics listener serves at once. A scraper or two and
/// the kubelet's probes need a handful; 64 leaves room for bursts while
/// keeping idle sockets from taking the file descriptors the file sink
/// needs (issue 14: 1,100 idle connections caused EMFILE there).
pub const MAX_CONNECTIONS: usize = 64;

impl crate::httpd::Counters for Metrics {
    fn connection_rejected(&self, reason: &'static str) {
        self.http_connections_rejected
            .get_or_create(&ServerReason {
                server: HTTP_SERVER.into(),
                reason: reason.into(),
            })
            .inc();
    }
    fn timed_out(&self, kind: &'static str) {
        self.http_timeouts
            .get_or_create(&ServerKind {
                server: HTTP_SERVER.into(),
                kind: kind.into(),
            })
            .inc();
    }
}

/// The metrics listener's routes: `/metrics`, `/healthz` (liveness: the
/// drain thread ticks) and `/readyz` (config applied, observers reported).
/// `controller_endpoint` is `--controller-endpoint` in controller mode.
pub fn router(
    metrics: Arc<Metrics>,
    shared: Arc<super::pipeline::Shared>,
    controller_endpoint: Option<String>,
) -> axum::Router {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    const TEXT: &str = "text/plain; charset=utf-8";
    let live = shared.clone();
    let ready = shared;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let verdict = super::health::liveness(
                    super::pipeline::monotonic_ns(),
                    live.last_drain_tick_ns(),
                );
                async move {
                    match verdict {
                        Ok(()) => (
                            StatusCode::OK,
                            [(header::CONTENT_TYPE, TEXT)],
                            "ok\n".to_string(),
                        ),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [(header::CONTENT_TYPE, TEXT)],
                            format!("{why}\n"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let verdict = super::health::readiness(
                    ready.applied().as_ref(),
                    &ready.statuses(),
                    controller_endpoint.as_deref(),
                    ready.controller().as_ref(),
                );
                async move {
                    let (code, lines, head) = match verdict {
                        Ok(notes) => (StatusCode::OK, notes, "ready\n"),
                        Err(reasons) => (StatusCode::SERVICE_UNAVAILABLE, reasons, ""),
                    };
                    let mut body = head.to_string();
                    for l in lines {
                        body.push_str(&l);
                        body.push('\n');
                    }
                    (code, [(header::CONTENT_TYPE, TEXT)], body)
                }
            }),
        )
}

/// Serves [`router`] on `addr` from its own thread and single-threaded
/// runtime, on the bounded server ([`crate::httpd`]), until the agent
/// stops. Binding happens before this returns, so a bad address fails
/// start-up.
pub fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    shared: Arc<super::pipeline::Shared>,
    controller_endpoint: Option<String>,
) -> anyhow::Result<(std::net::SocketAddr, std::thread::JoinHandle<()>)> {
    use anyhow::Context;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("failed to bind the metrics address {addr}"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let handle = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("metrics server could not start: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("metrics server could not start: {e}");
                        return;
                    }
                };
                let app = router(metrics.clone(), shared.clone(), controller_endpoint);
                let mut limits = crate::httpd::Limits::new(HTTP_SERVER, MAX_CONNECTIONS, metrics);
                // Scrapes and probes are GETs: no body is ever read.
                limits.max_body_bytes = 64 * 1024;
                // A scrape takes milliseconds; shutdown should not wait longer.
                limits.shutdown_grace = std::time::Duration::from_secs(1);
                let stopping = async move {
                    while !shared.stopping() {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                };
                crate::httpd::serve(listener, app, limits, stopping).await;
            });
        })?;
    Ok((local, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_loss_counters_mirror_the_exposition() {
        let m = Metrics::new();
        Metrics::observer_counter(&m.lost_events, "network", 3);
        m.sink_drop("http", "queue_full", 2);
        m.sink_drop("http", "send_failed", 5);
        m.controller_send_failures
            .get_or_create(&KindLabel {
                kind: "hello".into(),
            })
            .inc();
        m.drain_cap.inc_by(4);
        let loss = m.loss_counters();
        assert_eq!(loss.get("lost_events.network"), Some(&3));
        assert_eq!(loss.get("sink_drops.http"), Some(&7), "summed over reasons");
        assert_eq!(loss.get("controller_send_failures.hello"), Some(&1));
        assert_eq!(loss.get("drain_cap"), Some(&4));
        assert_eq!(loss.get("malformed_events.network"), None);
    }

    #[test]
    fn exposition_names_and_labels() {
        let m = Metrics::new();
        m.anomalies
            .get_or_create(&AnomalyLabels {
                observer: "network".into(),
                kind: TypeLabel("kernel.network.connection_refused".into()),
            })
            .inc();
        m.sink_drop("file", "queue_full", 2);
        m.correlation_drop("storage", "ambiguous_inflight_io", 1);
        let text = m.encode();
        assert!(text.contains(
            "tapio_anomalies_total{observer=\"network\",type=\"kernel.network.connection_refused\"} 1"
        ), "{text}");
        assert!(text.contains("tapio_sink_drops_total{sink=\"file\",reason=\"queue_full\"} 2"));
        assert!(text.contains(
            "tapio_correlation_drops_total{observer=\"storage\",reason=\"ambiguous_inflight_io\"} 1"
        ));
        assert!(text.contains("tapio_drain_cap_total 0"));
        assert!(
            text.contains("# TYPE tapio_anomalies_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP tapio_anomalies_total Occurrences emitted."),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn http_counters_start_at_zero_and_count_per_kind() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(
            text.contains(
                "tapio_http_connections_rejected_total{server=\"metrics\",reason=\"limit\"} 0"
            ),
            "{text}"
        );
        for kind in crate::httpd::TIMEOUT_KINDS {
            assert!(
                text.contains(&format!(
                    "tapio_http_timeouts_total{{server=\"metrics\",kind=\"{kind}\"}} 0"
                )),
                "{text}"
            );
        }
        use crate::httpd::Counters;
        m.connection_rejected("limit");
        m.timed_out("header");
        m.timed_out("header");
        let text = m.encode();
        assert!(
            text.contains(
                "tapio_http_connections_rejected_total{server=\"metrics\",reason=\"limit\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("tapio_http_timeouts_total{server=\"metrics\",kind=\"header\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tapio_http_timeouts_total{server=\"metrics\",kind=\"idle\"} 0"),
            "{text}"
        );
    }
}
