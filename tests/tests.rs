//! Tapio's integration tests, one crate (one link step): each module is
//! one area, run through the built `tapio` binary or the library's public
//! API; `common` holds every helper they share (the eBPF gate, the agent
//! runner, bounded waits, ports, namespaces, HTTP receivers).
//!
//! All tests share this one process, so no test may change process-wide
//! state (environment, current directory, signal dispositions, rlimits):
//! each sets what it needs on the child it spawns. Names a test creates on
//! the host (netns, cgroups, loop devices) come from `common::unique`.
//!
//! Run one area with `cargo test --test tests <module>::`, e.g.
//! `cargo test --test tests network_kernel::`.

#[macro_use]
mod common;

mod agent_cli;
mod agent_inputs;
mod alerts_kernel;
mod bpf_attach;
mod cli;
mod cli_e2e_kernel;
mod config_abi;
mod container_storage;
mod controller_bounded;
mod controller_e2e;
mod controller_metrics;
mod controller_router;
mod deploy;
mod fleet_metrics_kernel;
mod health_kernel;
mod image;
mod mcp;
mod metrics_kernel;
mod monitoring;
mod network_kernel;
mod node_kernel;
mod profile;
mod retention_kernel;
mod shutdown_kernel;
mod sinks_http;
mod sinks_otlp;
mod smoke_scripts;
mod storage_correlation;
