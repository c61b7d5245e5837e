//! The node agent: eBPF → ring buffers → decode → classify → sinks.
//!
//! This module owns the platform-neutral pipeline. Everything that touches
//! libbpf or Linux-only syscalls lives in `linux/` (swapped for
//! `unsupported.rs` elsewhere). The agent never grows Kubernetes watches, an
//! inbound API, a policy engine or reasoning fields.

pub mod abi;
pub mod classify;
pub mod config;
pub mod decode;

use crate::exit::CliError;

/// `tapio agent`.
pub fn run(args: config::AgentArgs) -> Result<(), CliError> {
    let _cfg = config::AgentConfig::resolve(&args).map_err(CliError::usage)?;
    Err(CliError::runtime(anyhow::anyhow!(
        "the agent pipeline is not built yet"
    )))
}
