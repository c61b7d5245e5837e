//! The node agent: eBPF → ring buffers → decode → classify → sinks.
//!
//! This module owns the platform-neutral pipeline. Everything that touches
//! libbpf or Linux-only syscalls lives in `linux/` (swapped for
//! `unsupported.rs` elsewhere). The agent never grows Kubernetes watches, an
//! inbound API, a policy engine or reasoning fields.

pub mod abi;
pub mod classify;
pub mod decode;
