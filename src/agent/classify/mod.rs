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

use crate::wire::evidence::Evidence;
use crate::wire::{AnomalyType, CompiledConfig, Outcome, Severity};

use super::decode::Fact;

/// An anomaly decided by a classifier, before it gets an id and wall time.
/// Its facts are typed ([`Evidence`]): building one copies numbers and
/// static names, never allocates; `data` and the message are rendered
/// once, by the emitter.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    pub outcome: Outcome,
    pub evidence: Evidence,
    /// `config_generation` of the fact that judged it.
    pub generation: u32,
    /// CLOCK_MONOTONIC ns of the kernel fact.
    pub mono_ns: u64,
}

impl Finding {
    pub fn anomaly(&self) -> AnomalyType {
        self.evidence.anomaly()
    }

    pub fn message(&self) -> String {
        self.evidence.message()
    }

    /// The type's `data` fields as the occurrence will carry them
    /// (without attribution and the fields every occurrence has).
    #[cfg(test)]
    pub fn data(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        self.evidence.visit(&mut |k, v| {
            m.insert(k.to_string(), v);
        });
        m
    }
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
