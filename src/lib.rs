//! Tapio: an exact eBPF observer of kernel failure facts.
//!
//! One binary, one library. `wire` is the protocol every other module
//! speaks; `agent` observes. Nothing depends on `agent`.

pub mod agent;
pub mod exit;
pub mod wire;
