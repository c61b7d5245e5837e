//! Everything Linux-specific in the agent: privilege and BTF checks, BPF
//! object loading (embedded or `--ebpf-dir`), per-program attach, the
//! config carrier writer, per-object counters and the drain thread; the
//! node sampler (perf counters and PSI, no BPF) on a thread of its own.
//!
//! All programs attach as `tp_btf` (BTF-typed raw tracepoints), which needs
//! neither tracefs (not mounted at boot on the target kernels) nor kprobes.
//! Each program attaches on its own: a missing attach point disables that
//! program, with libbpf's reason in the log, never the whole agent.

pub mod drain;
pub mod loader;
pub mod node;

use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::bail;

use super::classify::Finding;
use super::config::AgentConfig;
use super::metrics::Metrics;
use super::pipeline::Shared;
use crate::wire::status::{ObserverState, ObserverStatus};
use crate::wire::{CompiledConfig, Observer};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The agent's platform step before anything starts: refuse early when the
/// kernel or the privileges cannot work, and route libbpf's log.
pub(super) fn preflight_and_route_logs() -> anyhow::Result<()> {
    preflight()?;
    route_libbpf_log();
    Ok(())
}

/// Starts the threads that produce facts: the ring-buffer drain and the
/// node sampler.
pub(super) fn start_producers(
    cfg: &AgentConfig,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    findings: SyncSender<Vec<Finding>>,
    initial: CompiledConfig,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let drain = drain::start(
        cfg.ebpf_dir.clone(),
        shared.clone(),
        metrics.clone(),
        findings.clone(),
        initial.clone(),
    )?;
    let mut producers = vec![drain];
    // The node observer never stops the others: if its thread cannot start,
    // it is reported unavailable and the agent runs on.
    match node::start(shared.clone(), metrics, findings, initial) {
        Ok(node) => producers.push(node),
        Err(e) => super::observers::report(
            &shared,
            Observer::Node,
            ObserverStatus::new(ObserverState::Unavailable, format!("{e:#}")),
            "",
        ),
    }
    Ok(producers)
}

/// Fails with one clear sentence when the agent cannot run here.
pub fn preflight() -> anyhow::Result<()> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing); the agent needs kernel >= 5.8 built with CONFIG_DEBUG_INFO_BTF");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| cap_eff & (1u64 << bit) != 0;
    let missing: Vec<&str> = if has(CAP_SYS_ADMIN) {
        Vec::new()
    } else {
        [
            (CAP_BPF, "CAP_BPF"),
            (CAP_PERFMON, "CAP_PERFMON"),
            (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        ]
        .into_iter()
        .filter(|(bit, _)| !has(*bit))
        .map(|(_, name)| name)
        .collect()
    };
    if !missing.is_empty() {
        bail!(
            "the agent needs root or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN; missing {}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Routes libbpf's own messages (the real reasons behind load and attach
/// failures) into the agent's log.
pub fn route_libbpf_log() {
    fn print(level: libbpf_rs::PrintLevel, msg: String) {
        let msg = msg.trim_end();
        match level {
            libbpf_rs::PrintLevel::Warn => tracing::warn!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Info => tracing::debug!(target: "libbpf", "{msg}"),
            libbpf_rs::PrintLevel::Debug => tracing::trace!(target: "libbpf", "{msg}"),
        }
    }
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, print)));
}
