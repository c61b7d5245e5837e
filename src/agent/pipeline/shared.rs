//! State shared between the drain thread and the rest of the agent: the
//! stop flag and shutdown budget, the config waiting to be applied and
//! the one applied, observer statuses, the controller link and the drain
//! thread's liveness tick.
//!
//! Plain data behind locks and atomics. It must not start threads, do
//! I/O or know about findings, occurrences or sinks (that is
//! [`super::emitter`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::wire::status::{ObserverState, ObserverStatus};
use crate::wire::{CompiledConfig, ConfigHash, Observer};

/// How a controller-mode agent's link to its controller stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControllerLink {
    /// The `--controller-endpoint` base URL.
    pub endpoint: String,
    /// `connecting` (nothing answered yet), `ok`, `unreachable` (connect,
    /// DNS or timeout), `unauthorized` (401/403) or `error` (other answers).
    pub state: &'static str,
    /// Why, for anything but `ok`: the cause as the client saw it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A config to apply, with the generation that will judge events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub config: CompiledConfig,
    pub generation: u32,
    pub hash: ConfigHash,
}

/// The shutdown budget. Unset while the agent runs; set once, by the stop
/// signal, to the instant by which every sink must have delivered or given
/// up. Cloned into the emitter and every sink, which check it rather than a
/// flag so that a retry loop or a full queue can wait exactly until then.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<OnceLock<Instant>>);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Starts the budget (the first call wins) and returns its deadline.
    pub fn begin(&self, budget: Duration) -> Instant {
        *self.0.get_or_init(|| Instant::now() + budget)
    }

    /// `None` while the agent runs.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.get().copied()
    }

    pub fn started(&self) -> bool {
        self.0.get().is_some()
    }

    /// True once the budget has run out.
    pub fn expired(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Time left in the budget; `None` while the agent runs.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Sleeps `d`, but not past the deadline. Returns false if the budget
    /// ran out first.
    pub fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            let now = Instant::now();
            let end = match self.deadline() {
                Some(dl) if dl <= until => dl,
                _ => until,
            };
            if now >= end {
                return !self.expired();
            }
            // Short steps: the budget may start while we sleep.
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// State shared between the drain thread and the rest of the agent.
#[derive(Default)]
pub struct Shared {
    pub stop: AtomicBool,
    /// Set together with `stop`; see [`Shutdown`].
    pub shutdown: Shutdown,
    /// Set by whoever owns config (start-up, controller client); taken by
    /// the drain thread, which writes the carriers.
    pending: Mutex<Option<Applied>>,
    /// What the carriers hold now.
    applied: Mutex<Option<Applied>>,
    /// Each observer's own report (set when it probes or attaches).
    statuses: Mutex<BTreeMap<Observer, ObserverStatus>>,
    /// `None` for a standalone agent.
    controller: Mutex<Option<ControllerLink>>,
    /// CLOCK_MONOTONIC ns of the drain thread's latest loop pass (0 before
    /// the first): liveness for `/healthz`.
    last_drain_tick_ns: AtomicU64,
}

impl Shared {
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared::default())
    }

    pub fn request_config(&self, config: CompiledConfig, generation: u32) {
        let hash = config.hash();
        *lock(&self.pending) = Some(Applied {
            config,
            generation,
            hash,
        });
    }

    pub fn take_pending(&self) -> Option<Applied> {
        lock(&self.pending).take()
    }

    pub fn mark_applied(&self, a: Applied) {
        *lock(&self.applied) = Some(a);
    }

    pub fn applied(&self) -> Option<Applied> {
        lock(&self.applied).clone()
    }

    pub fn set_status(&self, observer: Observer, state: ObserverState, reason: impl Into<String>) {
        lock(&self.statuses).insert(observer, ObserverStatus::new(state, reason));
    }

    pub fn statuses(&self) -> BTreeMap<Observer, ObserverStatus> {
        lock(&self.statuses).clone()
    }

    pub fn set_controller(&self, link: ControllerLink) {
        *lock(&self.controller) = Some(link);
    }

    pub fn controller(&self) -> Option<ControllerLink> {
        lock(&self.controller).clone()
    }

    /// Called by the drain thread once per loop pass.
    pub fn note_drain_tick(&self, now_mono_ns: u64) {
        self.last_drain_tick_ns
            .store(now_mono_ns, Ordering::Relaxed);
    }

    /// CLOCK_MONOTONIC ns of the drain thread's latest pass; 0 if none yet.
    pub fn last_drain_tick_ns(&self) -> u64 {
        self.last_drain_tick_ns.load(Ordering::Relaxed)
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Starts the shutdown budget, then tells every thread to stop. The
    /// budget comes first so no thread sees `stop` without a deadline.
    pub fn begin_stop(&self, budget: Duration) -> Instant {
        let deadline = self.shutdown.begin(budget);
        self.stop.store(true, Ordering::Relaxed);
        deadline
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain
/// data; the data is still the best we have.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_config_is_taken_once() {
        let s = Shared::new();
        s.request_config(CompiledConfig::default(), 2);
        let a = s.take_pending().unwrap();
        assert_eq!(a.generation, 2);
        assert_eq!(a.hash, CompiledConfig::default().hash());
        assert!(s.take_pending().is_none());
    }
}
