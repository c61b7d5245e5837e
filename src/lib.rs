//! Tapio: an exact eBPF observer of kernel failure facts.
//!
//! One binary, one library. `wire` is the protocol every other module
//! speaks; `agent` observes; `profile` turns Evidence Profiles into
//! configs; `controller` serves them to a fleet. Nothing depends on `agent`.

pub mod agent;
pub mod controller;
pub mod exit;
pub mod profile;
pub mod wire;
