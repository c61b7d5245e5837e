//! Tapio: an exact eBPF observer of kernel failure facts.
//!
//! One binary, one library. `wire` is the protocol every other module
//! speaks; `agent` observes; `profile` turns Evidence Profiles into
//! configs; `controller` serves them to a fleet; `store` reads what the
//! agent's file sink wrote, for `cli` and `mcp`. Nothing depends on `agent`.
//!
//! Module docs cite two documents in this repository: `SPEC §N` is section
//! N of `docs/SPEC.md` (the product contract: names, fields, flags, metrics),
//! and `KERNEL-FACTS.md` is `docs/KERNEL-FACTS.md` (the kernel behaviour the
//! BPF programs and observers are written against).

pub mod agent;
pub mod cli;
pub mod controller;
pub mod exit;
pub mod fsutil;
pub mod httpd;
pub mod mcp;
pub mod profile;
pub mod store;
#[cfg(test)]
mod testutil;
pub mod wire;
