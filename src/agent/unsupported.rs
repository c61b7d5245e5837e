//! Non-Linux builds: everything but the agent works; `tapio agent` says why
//! it cannot run and exits 2.

pub fn preflight() -> anyhow::Result<()> {
    anyhow::bail!(
        "the agent runs only on Linux (kernel >= 5.8 with BTF); this build is for another OS"
    )
}

/// Same shape as the Linux one; never gets past `preflight`.
pub(super) fn preflight_and_route_logs() -> anyhow::Result<()> {
    preflight()
}

/// Unreachable in practice: `run` stops at [`preflight_and_route_logs`].
pub(super) fn start_producers(
    _cfg: &super::config::AgentConfig,
    _shared: std::sync::Arc<super::pipeline::Shared>,
    _metrics: std::sync::Arc<super::metrics::Metrics>,
    _findings: std::sync::mpsc::SyncSender<Vec<super::classify::Finding>>,
    _initial: crate::wire::CompiledConfig,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    preflight().map(|_| unreachable!())
}
