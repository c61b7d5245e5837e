//! The platform-neutral middle of the agent, in two parts:
//!
//! * [`shared`]: state shared between the drain thread and the rest
//!   (stop and shutdown budget, configs, statuses, controller link);
//! * [`emitter`]: the findings queue and the emitter thread that turns
//!   findings into occurrences for the sinks.
//!
//! Both are re-exported here, so callers name `pipeline::X`.

pub mod emitter;
pub mod shared;

pub use emitter::{
    monotonic_ns, occurrence, offer_findings, send_findings, spawn_emitter, Clock, FINDINGS_QUEUE,
};
pub use shared::{lock, Applied, ControllerLink, Shared, Shutdown};
