//! The node agent: eBPF → ring buffers → decode → classify → sinks.
//!
//! This module owns the platform-neutral orchestration. Everything that
//! touches libbpf or Linux-only interfaces lives in `linux/` (swapped for
//! `unsupported.rs` elsewhere). The agent never grows Kubernetes watches, an
//! inbound API, a policy engine or reasoning fields.
//!
//! Threads: `drain` (rings → facts → findings), `node-sampler` (Linux:
//! per-CPU counters and PSI → findings), `emitter` (findings →
//! occurrences → sink queues), one per sink, and the main thread, which
//! waits for SIGINT/SIGTERM and then stops them in that order so every
//! queued occurrence is written before exit — within `--shutdown-timeout`:
//! the main thread never waits for any thread past that budget (a sink
//! stuck on a destination that never answers is abandoned), counts what
//! was not delivered per sink, and names it in its final log line.

pub mod abi;
pub mod attribution;
pub mod classify;
pub mod config;
pub mod controller_client;
pub mod decode;
pub mod health;
pub mod ids;
pub mod kernel_enums;
pub mod metrics;
pub mod observers;
pub mod pipeline;
pub mod signals;
pub mod sinks;
pub mod status_file;

// The one platform switch: `platform` is `linux` or `unsupported`, both
// with `preflight_and_route_logs` and `start_producers`, so nothing else in
// the agent names an OS (checked by scripts/verify-lean.sh).
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
use unsupported as platform;

use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::exit::CliError;
use config::{AgentConfig, SinkKind};
use metrics::Metrics;
use pipeline::{Clock, Shared, FINDINGS_QUEUE};
use sinks::SinkHandle;

/// `tapio agent`.
pub fn run(args: config::AgentArgs) -> Result<(), CliError> {
    let cfg = AgentConfig::resolve(&args).map_err(CliError::usage)?;
    let standalone = standalone_config(&cfg).map_err(CliError::usage)?;
    let token = match &cfg.controller_token_file {
        Some(path) => Some(config::read_token(path).map_err(CliError::usage)?),
        None => None,
    };
    if cfg.sinks.contains(&SinkKind::File) {
        // Bad input, found before anything is loaded: exit 1.
        sinks::file::prepare_dir(&cfg.data_dir).map_err(CliError::usage)?;
    }
    platform::preflight_and_route_logs().map_err(CliError::runtime)?;
    // Block the stop signals before any thread starts, so only the main
    // thread's sigwait sees them.
    let signals = signals::block_stop_signals().map_err(CliError::runtime)?;
    let agent_id = ids::IdGen::new()
        .next(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        )
        .to_string();

    let metrics = Metrics::new();
    let shared = Shared::new();
    let sinks = build_sinks(&cfg, &metrics, &agent_id, &token, &shared.shutdown)
        .map_err(CliError::runtime)?;
    let ledgers: Vec<_> = sinks.iter().map(|s| s.ledger()).collect();
    let (findings_tx, findings_rx) = sync_channel(FINDINGS_QUEUE);
    let emitter = pipeline::spawn_emitter(
        findings_rx,
        sinks,
        metrics.clone(),
        Clock::measure(),
        shared.shutdown.clone(),
    )
    .context("failed to start the emitter thread")
    .map_err(CliError::runtime)?;
    metrics.watch(shared.clone(), cfg.controller_endpoint.is_some());
    // Standalone: apply at once. Controller mode: the carriers stay
    // all-zero (inert) until the controller's config is applied.
    if let Some(c) = &standalone {
        shared.request_config(c.clone(), 1);
    }
    let initial = standalone.clone().unwrap_or_default();
    // The listener is bound before the observers start: a bad address
    // fails start-up before any BPF is loaded, and once "config applied" is
    // logged /metrics and the probes already answer.
    let metrics_server = if cfg.metrics_enabled {
        let s = shared.clone();
        let (addr, h) = metrics::serve(
            &cfg.metrics_addr,
            metrics.clone(),
            s,
            cfg.controller_endpoint.clone(),
        )
        .map_err(CliError::runtime)?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics (health: /healthz, /readyz)");
        Some(h)
    } else {
        None
    };
    let producers =
        platform::start_producers(&cfg, shared.clone(), metrics.clone(), findings_tx, initial)
            .map_err(CliError::runtime)?;
    let client = match &cfg.controller_endpoint {
        Some(url) => Some(
            start_controller_client(&cfg, url, token, &agent_id, &shared, &metrics)
                .map_err(CliError::runtime)?,
        ),
        None => None,
    };
    let status = status_file::spawn(
        cfg.data_dir.clone(),
        status_file::Identity {
            agent_id: agent_id.clone(),
            node_name: cfg.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            controller_endpoint: cfg.controller_endpoint.clone(),
        },
        shared.clone(),
    )
    .context("failed to start the status-file thread")
    .map_err(CliError::runtime)?;
    tracing::info!(node = %cfg.node_name, agent_id = %agent_id, sinks = ?cfg.sinks.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "agent running");

    let sig = signals::wait(&signals);
    let budget = cfg.shutdown_timeout;
    tracing::info!("received {sig}, stopping (shutdown timeout {budget:?})");
    let hard_deadline = Instant::now() + budget;
    // The sinks give up a little before the hard deadline, so counting what
    // they left and the final log line still fit in the budget.
    shared.begin_stop(budget - stop_margin(budget));
    // The emitter ends once every producer (and its findings sender) is
    // gone, after closing the sinks; none of these waits outlives the budget.
    for p in producers {
        join_until(p, hard_deadline);
    }
    join_until(emitter, hard_deadline);
    if let Some(c) = client {
        join_until(c, hard_deadline);
    }
    if let Some(h) = metrics_server {
        join_until(h, hard_deadline);
    }
    let mut report = sinks::account_undelivered(&metrics, &ledgers);
    report.extend(sinks::pipeline_drops(&metrics));
    // Last, so "stopped" is only written once nothing is running.
    status.stop();
    tracing::info!(
        "agent stopped occurrences={} undelivered: {}",
        metrics.emitted(),
        sinks::describe_undelivered(&report)
    );
    Ok(())
}

/// How much earlier than the hard deadline the sinks stop: a tenth of the
/// budget, at most half a second.
fn stop_margin(budget: Duration) -> Duration {
    (budget / 10).min(Duration::from_millis(500))
}

/// Joins `h` if it ends by `deadline`; otherwise leaves it running (the
/// process exits around it). Returns whether it ended.
fn join_until(h: JoinHandle<()>, deadline: Instant) -> bool {
    while !h.is_finished() {
        if Instant::now() >= deadline {
            tracing::warn!(
                thread = h.thread().name().unwrap_or("?"),
                "thread still busy at the shutdown deadline; not waiting for it"
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = h.join();
    true
}

/// The config a standalone agent starts with (`--profile`, or the defaults
/// with the TOML overrides); `None` in controller mode.
fn standalone_config(cfg: &AgentConfig) -> anyhow::Result<Option<crate::wire::CompiledConfig>> {
    match (&cfg.controller_endpoint, &cfg.profile) {
        (Some(_), Some(p)) => anyhow::bail!(
            "--profile {} and --controller-endpoint exclude each other: the controller distributes the profile",
            p.display()
        ),
        (Some(_), None) => Ok(None),
        (None, Some(path)) => Ok(Some(crate::profile::load(path)?)),
        (None, None) => Ok(Some(cfg.standalone.clone())),
    }
}

fn start_controller_client(
    cfg: &AgentConfig,
    url: &str,
    token: Option<String>,
    agent_id: &str,
    shared: &Arc<Shared>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<JoinHandle<()>> {
    let base = sinks::http::check_plain_http(url, "--controller-endpoint")?;
    let client = controller_client::ControllerClient::new(
        controller_client::ClientConfig {
            base,
            token,
            agent_id: agent_id.to_string(),
            node_name: cfg.node_name.clone(),
            interval: Duration::from_secs(cfg.heartbeat_interval_secs),
            observers: shared
                .statuses()
                .into_keys()
                .map(|o| o.as_str().to_string())
                .collect(),
        },
        shared.clone(),
        metrics.clone(),
    )?;
    Ok(std::thread::Builder::new()
        .name("controller".into())
        .spawn(move || client.run())?)
}

fn build_sinks(
    cfg: &AgentConfig,
    metrics: &Arc<Metrics>,
    agent_id: &str,
    token: &Option<String>,
    shutdown: &pipeline::Shutdown,
) -> anyhow::Result<Vec<SinkHandle>> {
    let mut out = Vec::new();
    for kind in &cfg.sinks {
        let sink: Box<dyn sinks::Sink> = match kind {
            SinkKind::Stdout => Box::new(sinks::stdout::StdoutSink::new(metrics.clone())),
            SinkKind::File => Box::new(sinks::file::FileSink::new(
                &cfg.data_dir,
                cfg.retention,
                metrics.clone(),
            )?),
            SinkKind::Http => Box::new(sinks::http::http_sink(
                cfg.http_endpoint.as_deref().unwrap_or_default(),
                sinks::http::PostPolicy::default(),
                metrics.clone(),
            )?),
            SinkKind::Otlp => Box::new(sinks::otlp::otlp_sink(
                cfg.otlp_endpoint.as_deref().unwrap_or_default(),
                sinks::otlp::OtlpOptions {
                    encoding: cfg.otlp_encoding,
                    compression: cfg.otlp_compression,
                    headers: cfg.otlp_headers.clone(),
                    identity: sinks::otlp::Identity {
                        node_name: cfg.node_name.clone(),
                        agent_id: agent_id.to_string(),
                    },
                },
                sinks::http::PostPolicy::default(),
                metrics.clone(),
            )?),
            SinkKind::Controller => {
                let base = sinks::http::check_plain_http(
                    cfg.controller_endpoint.as_deref().unwrap_or_default(),
                    "--controller-endpoint",
                )?;
                Box::new(sinks::controller::controller_sink(
                    &base,
                    agent_id.to_string(),
                    token.clone(),
                    sinks::http::PostPolicy::default(),
                    metrics.clone(),
                )?)
            }
        };
        out.push(
            SinkHandle::spawn_with(
                sink,
                metrics.clone(),
                sinks::QUEUE_CAPACITY,
                shutdown.clone(),
            )
            .context("failed to start a sink thread")?,
        );
    }
    Ok(out)
}
