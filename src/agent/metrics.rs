//! The agent's metrics (SPEC §3 counters, SPEC §8 fleet metrics), in one
//! prometheus-client registry, and the metrics listener's routes
//! (`/metrics`, `/healthz`, `/readyz`). Connections, deadlines and limits
//! belong to [`crate::httpd`]; the health decisions to [`super::health`].
//! Nothing here blocks on a client.
//!
//! Owns: the families, their names and label sets, the label sets that
//! exist from start (zero-valued, so `absent()` and `increase()` work from
//! the first scrape), and two scrape-time collectors: the process figures
//! from `/proc/self` and the agent's state (observer states, applied config,
//! controller link) read from [`Shared`]. Must not: do I/O on a hot path or
//! hold any lock across a scrape besides `Shared`'s short ones; grow a label
//! from untrusted input (label values are fixed names, sink and BPF map
//! names compiled into the binary), so cardinality is bounded by
//! construction. Hot paths never touch these per record: the drain thread
//! adds its per-tick totals once a tick.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::observers::Stat;
use super::pipeline::Shared;
use crate::wire::status::ObserverState;
use crate::wire::{AnomalyType, Observer};

/// Every `reason` a sink or its queue puts on `tapio_sink_drops_total`
/// (a unit test checks the source against this list), so each configured
/// sink starts with all of them at 0.
pub const SINK_DROP_REASONS: [&str; 6] = [
    "queue_full",
    "sink_stopped",
    "write_error",
    "rejected",
    "send_failed",
    "shutdown_timeout",
];

/// The findings queue in front of the emitter counts its drops as sink
/// `pipeline`, with these reasons.
pub const PIPELINE_DROP_REASONS: [&str; 3] = ["queue_full", "stopped", "shutdown_timeout"];

/// What the controller client counts, in controller mode (a unit test
/// checks `controller_client.rs` against these): `kind` of
/// `tapio_controller_send_failures_total` and `result` of
/// `tapio_config_fetch_total`.
pub const CONTROLLER_FAILURE_KINDS: [&str; 3] = ["hello", "config", "heartbeat"];
pub const CONFIG_FETCH_RESULTS: [&str; 4] = ["updated", "not_modified", "error", "too_large"];

/// Every `reason` of `tapio_sink_pruned_total` (the file sink's retention
/// bounds: `--retain-files`, `--retain-bytes`, `--retain-age`).
pub const PRUNE_REASONS: [&str; 3] = ["files", "bytes", "age"];

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
        mut encoder: prometheus_client::encoding::LabelSetEncoder<'_>,
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
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObserverMap {
    pub observer: String,
    pub map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObserverStateLabel {
    observer: String,
    state: String,
}

/// What the state collector reads at scrape time; set once by [`Metrics::watch`].
struct AgentView {
    shared: Arc<Shared>,
    controller_mode: bool,
}

/// `Collector` needs `Debug`; the shared state is not worth printing.
impl std::fmt::Debug for AgentView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentView")
            .field("controller_mode", &self.controller_mode)
            .finish_non_exhaustive()
    }
}

/// `tapio_observer_state`, `tapio_config_*` and `tapio_controller_connected`,
/// computed from [`Shared`] on each scrape, so they can never disagree with
/// what the status file and the heartbeat report.
#[derive(Debug)]
struct StateCollector {
    view: Arc<OnceLock<AgentView>>,
}

impl Collector for StateCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(view) = self.view.get() else {
            return Ok(());
        };
        let statuses = view.shared.statuses();
        let mut fam = enc.encode_descriptor(
            "tapio_observer_state",
            "Observer state: 1 for the current state, 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for obs in Observer::ALL {
            // An observer not reported yet has no current state: all 0.
            let current = statuses.get(&obs).map(|s| s.state);
            for state in ObserverState::ALL {
                let label = ObserverStateLabel {
                    observer: obs.as_str().into(),
                    state: state.as_str().into(),
                };
                ConstGauge::new(i64::from(current == Some(state)))
                    .encode(fam.encode_family(&label)?)?;
            }
        }
        let applied = view.shared.applied();
        let g = ConstGauge::new(i64::from(applied.is_some()));
        g.encode(enc.encode_descriptor(
            "tapio_config_applied",
            "1 once a config is applied to the BPF carriers (0: the agent is inert)",
            None,
            g.metric_type(),
        )?)?;
        let g = ConstGauge::new(applied.map_or(0, |a| i64::from(a.generation)));
        g.encode(enc.encode_descriptor(
            "tapio_config_generation",
            "Generation of the applied config (0 before the first)",
            None,
            g.metric_type(),
        )?)?;
        if view.controller_mode {
            // Before the client's first answer there is no link yet: not
            // connected.
            let ok = view.shared.controller().is_some_and(|l| l.state == "ok");
            let g = ConstGauge::new(i64::from(ok));
            g.encode(enc.encode_descriptor(
                "tapio_controller_connected",
                "1 while the controller's last answer was a success",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// The standard `process_*` figures, read from `/proc/self` on each scrape
/// (a few small reads; nothing is sampled in the background).
#[derive(Debug)]
struct ProcessCollector;

/// Process figures at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads `/proc/self`; `None` where there is no procfs.
    pub fn read() -> Option<ProcessStats> {
        use crate::fsutil::read_capped;
        use std::path::Path;
        let stat = read_capped(Path::new("/proc/self/stat"), 4096).ok()?;
        let stat = String::from_utf8_lossy(&stat);
        // comm (field 2) may hold spaces and parentheses: fields are
        // counted from the last ')'. After it, index 0 is field 3 (state).
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        let ticks = ticks as f64;
        let statm = read_capped(Path::new("/proc/self/statm"), 4096).ok()?;
        let resident_pages: u64 = String::from_utf8_lossy(&statm)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        // The fd directory is as large as the fd limit at most.
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        Some(ProcessStats {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            resident_bytes: resident_pages * page as u64,
            open_fds,
            start_time_seconds: boot_time()? as f64 + field(22)? as f64 / ticks,
        })
    }
}

/// Boot time (Unix seconds), from `/proc/stat`; it never changes, so it is
/// read once.
fn boot_time() -> Option<u64> {
    static BTIME: OnceLock<Option<u64>> = OnceLock::new();
    *BTIME.get_or_init(|| {
        // Per-CPU and interrupt lines make /proc/stat grow with the machine.
        let text = crate::fsutil::read_capped(std::path::Path::new("/proc/stat"), 4 << 20).ok()?;
        String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        let c = ConstCounter::new(p.cpu_seconds);
        c.encode(enc.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            c.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                p.start_time_seconds,
            ),
        ] {
            let g = ConstGauge::new(value);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// The loss series the heartbeat reports (`lost_events.<observer>`,
/// `malformed_events.<observer>`, `sink_drops.<sink>`,
/// `controller_send_failures.<kind>`, `drain_cap`; SPEC §3), as handles to
/// the very counters the exposition shows. A series is entered when it is
/// created, so the heartbeat reads atomics, never the exposition text.
#[derive(Default)]
struct LossLedger {
    /// (heartbeat key, the series' other labels) → its counter.
    series: Mutex<BTreeMap<(String, String), Counter>>,
}

impl LossLedger {
    fn track(&self, key: String, rest: &str, counter: &Counter) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series
            .entry((key, rest.to_string()))
            .or_insert_with(|| counter.clone());
    }

    /// Per key, the sum over its series; keys with nothing lost are left
    /// out (series initialised at 0 carry no loss).
    fn totals(&self) -> BTreeMap<String, u64> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = BTreeMap::new();
        for ((key, _), c) in series.iter() {
            let v = c.get();
            if v > 0 {
                *out.entry(key.clone()).or_insert(0) += v;
            }
        }
        out
    }
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
    pub bpf_run_time_seconds: Family<ProgramLabel, Counter<f64, AtomicU64>>,
    /// Program runs the kernel skipped (the program was already running on
    /// that CPU): facts lost before the ring buffer.
    pub bpf_missed_runs: Family<ProgramLabel, Counter>,
    pub http_connections_rejected: Family<ServerReason, Counter>,
    pub http_timeouts: Family<ServerKind, Counter>,
    /// Times the file sink found its data dir removed and re-created it.
    pub data_dir_recreated: Counter,
    /// Occurrence files the file sink deleted to stay within a retention
    /// bound, by bound.
    pub sink_pruned: Family<ReasonLabel, Counter>,
    /// Occurrences waiting in a sink's queue; kept by `SinkHandle`.
    pub sink_queue_depth: Family<SinkLabel, Gauge>,
    pub sink_queue_capacity: Family<SinkLabel, Gauge>,
    /// Entries in a BPF hash map or socket table, counted by the drain thread (see
    /// `linux::drain::MAP_COUNT_EVERY_NS`).
    pub bpf_map_entries: Family<ObserverMap, Gauge>,
    pub bpf_map_capacity: Family<ObserverMap, Gauge>,
    view: Arc<OnceLock<AgentView>>,
    loss: LossLedger,
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
            loss: LossLedger::default(),
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
            bpf_missed_runs: Family::default(),
            http_connections_rejected: Family::default(),
            http_timeouts: Family::default(),
            data_dir_recreated: Counter::default(),
            sink_pruned: Family::default(),
            sink_queue_depth: Family::default(),
            sink_queue_capacity: Family::default(),
            bpf_map_entries: Family::default(),
            bpf_map_capacity: Family::default(),
            view: Arc::new(OnceLock::new()),
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
            "tapio_sink_pruned",
            "Occurrence files the file sink deleted, oldest first, to stay within --retain-files (files), --retain-bytes (bytes) or --retain-age (age)",
            m.sink_pruned.clone(),
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
            "tapio_bpf_program_missed_runs",
            "BPF program runs the kernel skipped because the program was already running on that CPU (its tracepoint fired again in an interrupt): those facts are lost before the ring buffer",
            m.bpf_missed_runs.clone(),
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
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        registry.register(
            "tapio_build_info",
            "Always 1; the version label says which build runs",
            build_info,
        );
        registry.register(
            "tapio_sink_queue_depth",
            "Occurrences waiting in a sink's queue",
            m.sink_queue_depth.clone(),
        );
        registry.register(
            "tapio_sink_queue_capacity",
            "Most occurrences a sink's queue holds before it drops",
            m.sink_queue_capacity.clone(),
        );
        registry.register(
            "tapio_bpf_map_entries",
            "Entries in a BPF hash map or claimed slots of a socket table (counted every 30 s)",
            m.bpf_map_entries.clone(),
        );
        registry.register(
            "tapio_bpf_map_capacity",
            "Most entries a BPF hash map or socket table holds (LRU maps evict beyond it; a full table set leaves a connect without an owner)",
            m.bpf_map_capacity.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        registry.register_collector(Box::new(StateCollector {
            view: m.view.clone(),
        }));
        m.loss.track("drain_cap".into(), "", &m.drain_cap);
        m.init_label_sets();
        Arc::new(Metrics { registry, ..m })
    }

    /// The series that exist before anything happens, at 0.
    fn init_label_sets(&self) {
        for obs in Observer::ALL {
            let o = ObserverLabel {
                observer: obs.as_str().into(),
            };
            let _ = self.events.get_or_create(&o);
            // Observers are a closed set, so these are every series of
            // the two families.
            let key = |family: &str| format!("{family}.{}", obs.as_str());
            self.loss
                .track(key("lost_events"), "", &self.lost_events.get_or_create(&o));
            self.loss.track(
                key("malformed_events"),
                "",
                &self.malformed_events.get_or_create(&o),
            );
            for reason in ["unconfigured", "abi_mismatch"] {
                let _ = self.config_errors.get_or_create(&ObserverReason {
                    observer: obs.as_str().into(),
                    reason: reason.into(),
                });
            }
        }
        // Without a 0 sample, `increase()` misses a series' first event:
        // the first OOM kill on a node would never alert.
        for t in AnomalyType::ALL {
            let _ = self.anomalies.get_or_create(&AnomalyLabels {
                observer: t.observer().as_str().into(),
                kind: TypeLabel(t.as_str().into()),
            });
        }
        for reason in PIPELINE_DROP_REASONS {
            self.sink_drop("pipeline", reason, 0);
        }
        // The evidence the BPF side refuses to correlate, per observer.
        for obs in Observer::ALL {
            for i in 0..super::abi::STAT_MAX {
                if let Some(Stat::Drop(reason)) = super::observers::stat(obs, i) {
                    self.correlation_drop(obs.as_str(), reason, 0);
                }
            }
        }
    }

    /// Creates the series of one configured sink at 0: its queue, its
    /// writes, and every drop reason. Called when the sink starts.
    pub fn init_sink(&self, sink: &str, capacity: usize) {
        let label = SinkLabel { sink: sink.into() };
        let _ = self.sink_queue_depth.get_or_create(&label);
        self.sink_queue_capacity
            .get_or_create(&label)
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
        for ok in [true, false] {
            self.sink_write(sink, ok, 0);
        }
        for reason in SINK_DROP_REASONS {
            self.sink_drop(sink, reason, 0);
        }
    }

    /// The file sink's prune counter for `reason` (one of
    /// [`PRUNE_REASONS`]), created at 0 if new: the sink holds these
    /// handles, so its series exist from the moment it starts.
    pub fn sink_pruned(&self, reason: &str) -> Counter {
        self.sink_pruned
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .clone()
    }

    /// From now on, scrapes report the agent's state as `shared` holds it.
    /// `controller_mode` adds `tapio_controller_connected` (from the start,
    /// at 0 until the controller answers) and the controller client's
    /// counters at 0. Only the first call counts.
    pub fn watch(&self, shared: Arc<Shared>, controller_mode: bool) {
        if controller_mode {
            for kind in CONTROLLER_FAILURE_KINDS {
                self.controller_send_failure(kind, 0);
            }
            for result in CONFIG_FETCH_RESULTS {
                let _ = self.config_fetch.get_or_create(&ResultLabel {
                    result: result.into(),
                });
            }
        }
        let _ = self.view.set(AgentView {
            shared,
            controller_mode,
        });
    }

    /// The exposition, as prometheus-client writes it: OpenMetrics 1.0
    /// text ([`OPENMETRICS`]). A counter family `x` has `# TYPE x counter`
    /// and samples `x_total`, and the text ends with `# EOF`. Prometheus
    /// asks for this format first and reads it natively; sample lines are
    /// the same as in the classic format, so queries, rules and dashboards
    /// do not depend on which one a scraper takes.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a
        // bug in a collector and leaves what was written so far.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("metrics exposition incomplete: {e}");
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
        let c = self.sink_drops.get_or_create(&SinkReason {
            sink: sink.into(),
            reason: reason.into(),
        });
        c.inc_by(n);
        self.loss.track(format!("sink_drops.{sink}"), reason, &c);
    }

    /// A failed request to the controller, by what it was
    /// (`tapio_controller_send_failures_total{kind}`).
    pub fn controller_send_failure(&self, kind: &str, n: u64) {
        let c = self
            .controller_send_failures
            .get_or_create(&KindLabel { kind: kind.into() });
        c.inc_by(n);
        self.loss
            .track(format!("controller_send_failures.{kind}"), "", &c);
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

    /// Loss totals for the heartbeat, keyed `<family>.<label value>` like
    /// the series Prometheus sees, read from the counters themselves.
    pub fn loss_counters(&self) -> BTreeMap<String, u64> {
        self.loss.totals()
    }

    pub fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Relaxed)
    }
}

/// Content type of `/metrics`: the OpenMetrics text format that
/// [`Metrics::encode`] writes.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
    shared: Arc<Shared>,
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
                async move { ([(header::CONTENT_TYPE, OPENMETRICS)], m.encode()) }
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
    shared: Arc<Shared>,
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
        m.controller_send_failure("hello", 1);
        // A kind outside the initialised set (the controller sink's).
        m.controller_send_failure("events", 2);
        m.drain_cap.inc_by(4);
        let loss = m.loss_counters();
        assert_eq!(loss.get("controller_send_failures.events"), Some(&2));
        // Each figure is what the exposition says for the same series.
        let text = m.encode();
        for (series, key) in [
            (
                "tapio_lost_events_total{observer=\"network\"}",
                "lost_events.network",
            ),
            ("tapio_drain_cap_total", "drain_cap"),
            (
                "tapio_controller_send_failures_total{kind=\"events\"}",
                "controller_send_failures.events",
            ),
        ] {
            assert_eq!(
                sample(&text, series).map(|v| v as u64),
                loss.get(key).copied(),
                "{series}"
            );
        }
        let http: f64 = ["queue_full", "send_failed"]
            .iter()
            .map(|r| {
                sample(
                    &text,
                    &format!("tapio_sink_drops_total{{sink=\"http\",reason=\"{r}\"}}"),
                )
                .unwrap()
            })
            .sum();
        assert_eq!(http as u64, 7);
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
        // OpenMetrics: the family is named without `_total`, its samples
        // with it, and the text ends with the EOF marker.
        assert!(text.contains("# TYPE tapio_anomalies counter"), "{text}");
        assert!(
            text.contains("# HELP tapio_anomalies Occurrences emitted."),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
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

    /// The value of one exact series in an exposition.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn known_series_exist_at_zero_from_start() {
        let m = Metrics::new();
        let text = m.encode();
        for obs in ["network", "container", "storage", "node"] {
            for fam in [
                "tapio_events_total",
                "tapio_lost_events_total",
                "tapio_malformed_events_total",
            ] {
                let series = format!("{fam}{{observer=\"{obs}\"}}");
                assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
            }
        }
        for t in AnomalyType::ALL {
            let series = format!(
                "tapio_anomalies_total{{observer=\"{}\",type=\"{}\"}}",
                t.observer().as_str(),
                t.as_str()
            );
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        for reason in PIPELINE_DROP_REASONS {
            let series = format!("tapio_sink_drops_total{{sink=\"pipeline\",reason=\"{reason}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        let build = format!(
            "tapio_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(&text, &build), Some(1.0), "{text}");
        assert!(text.contains("# TYPE tapio_build_info gauge"), "{text}");
        // A configured sink: queue, writes and every drop reason at once.
        m.init_sink("file", 4096);
        let text = m.encode();
        assert_eq!(
            sample(&text, "tapio_sink_queue_capacity{sink=\"file\"}"),
            Some(4096.0)
        );
        assert_eq!(
            sample(&text, "tapio_sink_queue_depth{sink=\"file\"}"),
            Some(0.0)
        );
        for reason in SINK_DROP_REASONS {
            let series = format!("tapio_sink_drops_total{{sink=\"file\",reason=\"{reason}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        for result in ["ok", "error"] {
            let series = format!("tapio_sink_writes_total{{sink=\"file\",result=\"{result}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
    }

    /// Every `sink_drop(..)` call in the agent's source names a reason that
    /// the start-up initialisation knows, so no drop series appears late.
    #[test]
    fn every_sink_drop_reason_in_the_source_is_initialised() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/agent");
        let mut stack = vec![root];
        let mut found = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path.ends_with("metrics.rs") {
                    continue;
                }
                let src = std::fs::read_to_string(&path).unwrap();
                for (i, _) in src.match_indices(".sink_drop(") {
                    let call = &src[i..src[i..].find(')').map_or(src.len(), |e| i + e)];
                    // The reason is the second argument: the second literal
                    // when the sink is a literal too, else the first.
                    let literals: Vec<&str> = call.split('"').skip(1).step_by(2).collect();
                    let sink_literal = call
                        .trim_start_matches(".sink_drop(")
                        .trim_start()
                        .starts_with('"');
                    let (sink, reason) = if sink_literal {
                        (literals.first().copied(), literals.get(1))
                    } else {
                        (None, literals.first())
                    };
                    // A call that passes the reason through a variable
                    // (label initialisation itself) names none.
                    let Some(reason) = reason else { continue };
                    found.push((
                        path.display().to_string(),
                        sink == Some("pipeline"),
                        reason.to_string(),
                    ));
                }
            }
        }
        assert!(found.len() >= 7, "the scan found too few calls: {found:?}");
        for (file, pipeline, reason) in &found {
            let known: &[&str] = if *pipeline {
                &PIPELINE_DROP_REASONS
            } else {
                &SINK_DROP_REASONS
            };
            assert!(
                known.contains(&reason.as_str()),
                "{file}: reason {reason} is not initialised"
            );
        }
    }

    /// The controller client's counter labels are the ones initialised in
    /// controller mode.
    #[test]
    fn controller_client_labels_are_initialised() {
        let src = include_str!("controller_client.rs");
        let literals = |prefix: &str| -> Vec<String> {
            src.match_indices(prefix)
                .map(|(i, _)| {
                    let rest = &src[i + prefix.len()..];
                    rest[..rest.find('"').unwrap()].to_string()
                })
                .collect()
        };
        let fetch = literals("self.fetch(\"");
        let failed = literals("self.failed(\"");
        assert!(
            fetch.len() >= 3 && failed.len() >= 3,
            "{fetch:?} {failed:?}"
        );
        for r in &fetch {
            assert!(
                CONFIG_FETCH_RESULTS.contains(&r.as_str()),
                "fetch result {r}"
            );
        }
        for k in &failed {
            assert!(
                CONTROLLER_FAILURE_KINDS.contains(&k.as_str()),
                "failure kind {k}"
            );
        }
        let m = Metrics::new();
        m.watch(Shared::new(), true);
        let text = m.encode();
        for r in CONFIG_FETCH_RESULTS {
            let series = format!("tapio_config_fetch_total{{result=\"{r}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        for k in CONTROLLER_FAILURE_KINDS {
            let series = format!("tapio_controller_send_failures_total{{kind=\"{k}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}");
        }
        assert_eq!(
            sample(
                &text,
                "tapio_correlation_drops_total{observer=\"storage\",reason=\"ambiguous_inflight_io\"}"
            ),
            Some(0.0)
        );
        // Standalone agents have no controller client: no such series.
        let standalone = Metrics::new();
        standalone.watch(Shared::new(), false);
        assert!(!standalone.encode().contains("tapio_config_fetch_total{"));
    }

    #[test]
    fn agent_state_is_read_from_shared_at_scrape_time() {
        use crate::agent::pipeline::ControllerLink;
        let m = Metrics::new();
        let shared = Shared::new();
        m.watch(shared.clone(), true);
        let text = m.encode();
        // Nothing reported yet: every observer × state series exists, at 0.
        for obs in ["network", "container", "storage", "node"] {
            for state in ObserverState::ALL.map(ObserverState::as_str) {
                let series =
                    format!("tapio_observer_state{{observer=\"{obs}\",state=\"{state}\"}}");
                assert_eq!(sample(&text, &series), Some(0.0), "{series} in\n{text}");
            }
        }
        assert_eq!(sample(&text, "tapio_config_applied"), Some(0.0));
        assert_eq!(sample(&text, "tapio_config_generation"), Some(0.0));
        assert_eq!(sample(&text, "tapio_controller_connected"), Some(0.0));

        shared.set_status(Observer::Network, ObserverState::Active, "");
        shared.set_status(Observer::Node, ObserverState::Degraded, "pmc unavailable");
        shared.request_config(crate::wire::CompiledConfig::default(), 7);
        let applied = shared.take_pending().unwrap();
        shared.mark_applied(applied);
        shared.set_controller(ControllerLink {
            endpoint: "http://127.0.0.1:1".into(),
            state: "ok",
            reason: String::new(),
        });
        let text = m.encode();
        let state = |obs: &str, st: &str| {
            sample(
                &text,
                &format!("tapio_observer_state{{observer=\"{obs}\",state=\"{st}\"}}"),
            )
        };
        assert_eq!(state("network", "active"), Some(1.0));
        assert_eq!(state("network", "degraded"), Some(0.0));
        assert_eq!(state("node", "degraded"), Some(1.0));
        assert_eq!(state("node", "active"), Some(0.0));
        assert_eq!(state("storage", "active"), Some(0.0));
        let ones = text
            .lines()
            .filter(|l| l.starts_with("tapio_observer_state{") && l.ends_with(" 1"))
            .count();
        assert_eq!(ones, 2, "{text}");
        assert_eq!(sample(&text, "tapio_config_applied"), Some(1.0));
        assert_eq!(sample(&text, "tapio_config_generation"), Some(7.0));
        assert_eq!(sample(&text, "tapio_controller_connected"), Some(1.0));

        shared.set_controller(ControllerLink {
            endpoint: "http://127.0.0.1:1".into(),
            state: "unauthorized",
            reason: "401".into(),
        });
        assert_eq!(sample(&m.encode(), "tapio_controller_connected"), Some(0.0));

        // Standalone: no controller, so no such series at all.
        let standalone = Metrics::new();
        standalone.watch(Shared::new(), false);
        assert!(!standalone.encode().contains("tapio_controller_connected"));
    }

    fn rusage_cpu_seconds() -> f64 {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage for the call's duration.
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }

    #[test]
    fn process_figures_match_the_kernel() {
        // The figures come from procfs; where there is none (not Linux),
        // there is nothing to compare. A runtime check, not a cfg, so only
        // agent/linux/ names an OS (scripts/verify-lean.sh).
        if !std::path::Path::new("/proc/self/stat").exists() {
            eprintln!("skipped: no /proc/self/stat on this system");
            return;
        }
        // Burn some CPU so the figure is not trivially 0.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let before = rusage_cpu_seconds();
        let p = ProcessStats::read().expect("procfs is readable");
        let after = rusage_cpu_seconds();
        // /proc counts whole clock ticks (1/100 s here); getrusage is finer.
        assert!(p.cpu_seconds > 0.0, "{p:?}");
        assert!(
            p.cpu_seconds <= after + 1e-6 && p.cpu_seconds >= before - 0.05,
            "{p:?} vs getrusage {before}..{after}"
        );

        // RSS grows by what is touched.
        let rss0 = p.resident_bytes;
        assert!(rss0 > 0);
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let rss1 = ProcessStats::read().unwrap().resident_bytes;
        assert!(rss1 >= rss0 + (60 << 20), "{rss0} -> {rss1}");
        drop(block);

        // Open descriptors are counted (other tests may open and close
        // theirs meanwhile, so only a lower bound is exact).
        let files: Vec<_> = (0..50)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let fds = ProcessStats::read().unwrap().open_fds;
        assert!(fds >= 50 + 3, "{fds}");
        drop(files);

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds <= now, "{p:?}");
        assert!(p.start_time_seconds >= boot_time().unwrap() as f64, "{p:?}");

        let text = Metrics::new().encode();
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            let v = sample(&text, name).unwrap_or_else(|| panic!("{name} missing in {text}"));
            assert!(v > 0.0, "{name} = {v}");
        }
    }
}
