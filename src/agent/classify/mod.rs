//! Classification: typed facts in, findings out.
//!
//! Pure state machines, one per observer: thresholds, windows, baselines and
//! correlation. No I/O, no clock reads, no randomness: time arrives as the
//! fact's kernel timestamp or as the `now` of a tick, so every rule is
//! testable with synthetic facts. A finding becomes an occurrence (id, wall
//! time) outside this module.

pub mod container;
pub mod network;
pub mod node;
pub mod storage;

use serde_json::{Map, Value};

use crate::wire::{AnomalyType, CompiledConfig, Outcome, Severity};

use super::decode::Fact;

/// An anomaly decided by a classifier, before it gets an id and wall time.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub anomaly: AnomalyType,
    pub severity: Severity,
    pub outcome: Outcome,
    pub message: String,
    pub data: Map<String, Value>,
    /// `config_generation` of the fact that judged it.
    pub generation: u32,
    /// CLOCK_MONOTONIC ns of the kernel fact.
    pub mono_ns: u64,
}

/// Counts of facts a classifier deliberately did not turn into findings,
/// by reason. The agent exports them as
/// `tapio_correlation_drops_total{observer,reason}`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DropCounts(pub std::collections::BTreeMap<&'static str, u64>);

impl DropCounts {
    pub fn add(&mut self, reason: &'static str, n: u64) {
        *self.0.entry(reason).or_default() += n;
    }

    pub fn get(&self, reason: &str) -> u64 {
        self.0.get(reason).copied().unwrap_or(0)
    }
}

/// What every observer's classifier does.
pub trait Classifier: Send {
    /// Applies new thresholds. State (windows, baselines) carries over.
    fn set_config(&mut self, cfg: &CompiledConfig);
    fn on_fact(&mut self, fact: &Fact, out: &mut Vec<Finding>);
    /// Closes windows that ended by `now_mono_ns`. The default, for a
    /// classifier without windows, does nothing.
    fn on_tick(&mut self, _now_mono_ns: u64, _out: &mut Vec<Finding>) {}
    /// Emits everything still pending (shutdown). The default, for a
    /// classifier that holds nothing back, does nothing.
    fn flush(&mut self, _out: &mut Vec<Finding>) {}
    /// Cumulative drop counts since start.
    fn drops(&self) -> &DropCounts;
}
