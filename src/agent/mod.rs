//! The node agent: eBPF → ring buffers → decode → classify → sinks.
//!
//! This module owns the platform-neutral orchestration. Everything that
//! touches libbpf or Linux-only interfaces lives in `linux/` (swapped for
//! `unsupported.rs` elsewhere). The agent never grows Kubernetes watches, an
//! inbound API, a policy engine or reasoning fields.
//!
//! Threads: `drain` (rings → facts → findings), `emitter` (findings →
//! occurrences → sink queues), one per sink, and the main thread, which
//! waits for SIGINT/SIGTERM and then stops them in that order so every
//! queued occurrence is written before exit.

pub mod abi;
pub mod attribution;
pub mod classify;
pub mod config;
pub mod decode;
pub mod metrics;
pub mod pipeline;
pub mod signals;
pub mod sinks;

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(not(target_os = "linux"))]
mod unsupported;

use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use anyhow::Context;

use crate::exit::CliError;
use config::{AgentConfig, SinkKind};
use metrics::Metrics;
use pipeline::{Clock, Shared, FINDINGS_QUEUE};
use sinks::SinkHandle;

/// `tapio agent`.
pub fn run(args: config::AgentArgs) -> Result<(), CliError> {
    let cfg = AgentConfig::resolve(&args).map_err(CliError::usage)?;
    platform_preflight().map_err(CliError::runtime)?;
    // Block the stop signals before any thread starts, so only the main
    // thread's sigwait sees them.
    let signals = signals::block_stop_signals().map_err(CliError::runtime)?;
    let initial = initial_config(&cfg).map_err(CliError::usage)?;

    let metrics = Metrics::new();
    let sinks = build_sinks(&cfg, &metrics).map_err(CliError::runtime)?;
    let (findings_tx, findings_rx) = sync_channel(FINDINGS_QUEUE);
    let emitter = pipeline::spawn_emitter(findings_rx, sinks, metrics.clone(), Clock::measure())
        .context("failed to start the emitter thread")
        .map_err(CliError::runtime)?;
    let shared = Shared::new();
    shared.request_config(initial.clone(), 1);
    let drain = platform_start(&cfg, shared.clone(), metrics.clone(), findings_tx, initial)
        .map_err(CliError::runtime)?;
    tracing::info!(node = %cfg.node_name, sinks = ?cfg.sinks.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "agent running");

    let sig = signals::wait(&signals);
    tracing::info!("received {sig}, stopping");
    shared.stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    let _ = emitter.join();
    tracing::info!(occurrences = metrics.emitted(), "agent stopped");
    Ok(())
}

/// The config a standalone agent starts with: `--profile`, or the defaults
/// with the TOML overrides.
fn initial_config(cfg: &AgentConfig) -> anyhow::Result<crate::wire::CompiledConfig> {
    match &cfg.profile {
        Some(path) => anyhow::bail!(
            "--profile {} needs Evidence Profile support, which this build does not have yet",
            path.display()
        ),
        None => Ok(cfg.standalone.clone()),
    }
}

fn build_sinks(cfg: &AgentConfig, metrics: &Arc<Metrics>) -> anyhow::Result<Vec<SinkHandle>> {
    let mut out = Vec::new();
    for kind in &cfg.sinks {
        let sink: Box<dyn sinks::Sink> = match kind {
            SinkKind::Stdout => Box::new(sinks::stdout::StdoutSink::new()),
            SinkKind::File => Box::new(sinks::file::FileSink::new(&cfg.data_dir)?),
            other => anyhow::bail!("sink {} is not available in this build", other.as_str()),
        };
        out.push(
            SinkHandle::spawn(sink, metrics.clone()).context("failed to start a sink thread")?,
        );
    }
    Ok(out)
}

#[cfg(target_os = "linux")]
fn platform_preflight() -> anyhow::Result<()> {
    linux::preflight()?;
    linux::route_libbpf_log();
    Ok(())
}

#[cfg(target_os = "linux")]
fn platform_start(
    cfg: &AgentConfig,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    findings: std::sync::mpsc::SyncSender<Vec<classify::Finding>>,
    initial: crate::wire::CompiledConfig,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    linux::drain::start(cfg.ebpf_dir.clone(), shared, metrics, findings, initial)
}

#[cfg(not(target_os = "linux"))]
fn platform_preflight() -> anyhow::Result<()> {
    unsupported::preflight()
}

#[cfg(not(target_os = "linux"))]
fn platform_start(
    _cfg: &AgentConfig,
    _shared: Arc<Shared>,
    _metrics: Arc<Metrics>,
    _findings: std::sync::mpsc::SyncSender<Vec<classify::Finding>>,
    _initial: crate::wire::CompiledConfig,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    unsupported::preflight().map(|_| unreachable!())
}
