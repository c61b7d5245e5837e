//! The agent's counters (SPEC §3), in one prometheus-client registry.
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
    pub drain_cap: Counter,
    pub sink_writes: Family<SinkResult, Counter>,
    pub sink_drops: Family<SinkReason, Counter>,
    pub controller_send_failures: Family<KindLabel, Counter>,
    pub config_fetch: Family<ResultLabel, Counter>,
    pub config_errors: Family<ObserverReason, Counter>,
    pub bpf_runs: Family<ProgramLabel, Counter>,
    pub bpf_run_time_seconds: Family<ProgramLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
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
            drain_cap: Counter::default(),
            sink_writes: Family::default(),
            sink_drops: Family::default(),
            controller_send_failures: Family::default(),
            config_fetch: Family::default(),
            config_errors: Family::default(),
            bpf_runs: Family::default(),
            bpf_run_time_seconds: Family::default(),
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

/// Serves `GET /metrics` (Prometheus text format 0.0.4) on `addr` from its
/// own thread and single-threaded runtime, until `stop` returns true.
/// Binding happens before this returns, so a bad address fails start-up.
pub fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    stop: impl Fn() -> bool + Send + 'static,
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
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let m = metrics.clone();
                        async move {
                            (
                                [(
                                    axum::http::header::CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                )],
                                m.encode(),
                            )
                        }
                    }),
                );
                let shutdown = async move {
                    while !stop() {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!("metrics server failed: {e}");
                }
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
}
