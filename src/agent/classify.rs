//! What classification produces and counts: [`Finding`] (an anomaly
//! decided from typed facts, before it gets an id and wall time) and
//! [`DropCounts`] (facts deliberately not turned into findings).
//!
//! The classifiers themselves live with their observers
//! (`agent/observers/<name>/`): pure state machines, one per observer
//! (thresholds, windows, baselines, correlation). No I/O, no clock reads,
//! no randomness: time arrives as the fact's kernel timestamp or as the
//! `now` of a tick, so every rule is testable with synthetic facts. What
//! every classifier answers to (config, ticks, flush, drop counts) is the
//! observers' lifecycle, [`crate::agent::observers`].

use crate::wire::evidence::Evidence;
use crate::wire::{AnomalyType, Outcome, Severity};

/// An anomaly decided by a classifier, before it gets an id and wall time.
/// Its facts are typed ([`Evidence`]): building one copies numbers and
/// static names, never allocates; `data` and the message are rendered
/// on the sink side (`wire::Emitted`).
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

    /// The message the occurrence will carry (rendered by the sinks;
    /// here for the classifiers' tests).
    #[cfg(test)]
    pub fn message(&self) -> String {
        self.evidence.message()
    }

    /// The type's `data` fields as the occurrence will carry them
    /// (without attribution and the fields every occurrence has).
    #[cfg(test)]
    pub fn data(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        self.evidence.visit(&mut |k, v| {
            m.insert(k.to_string(), serde_json::to_value(v).unwrap());
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

/// Counts heap allocations per thread, for the tests that hold the drain
/// thread's promise: a fact that is dropped, counted or folded into an
/// open window allocates nothing, and neither does stating evidence.
#[cfg(test)]
pub(crate) mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        // Const-initialised `Cell`s: reading them never allocates and
        // they have no destructor, so the allocator may touch them.
        static COUNTING: Cell<bool> = const { Cell::new(false) };
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    /// The system allocator, counting on threads that asked for it.
    struct Counting;

    fn note() {
        // `try_with`: a thread being torn down has no locals left.
        let _ = COUNTING.try_with(|on| {
            if on.get() {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            }
        });
    }

    // SAFETY: every call goes unchanged to the system allocator; counting
    // only touches thread-local cells.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note();
            // SAFETY: our caller upholds `GlobalAlloc::alloc`'s contract.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note();
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note();
            // SAFETY: `ptr` came from this allocator (that is, `System`)
            // with `layout`, as our caller guarantees.
            unsafe { System.realloc(ptr, layout, new_size) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as for `realloc`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Allocations (and reallocations) `f` made on this thread.
    pub(crate) fn allocations(f: impl FnOnce()) -> u64 {
        COUNT.with(|c| c.set(0));
        COUNTING.with(|on| on.set(true));
        f();
        COUNTING.with(|on| on.set(false));
        COUNT.with(Cell::get)
    }

    #[test]
    fn the_counter_sees_allocations_on_its_thread_only() {
        assert_eq!(allocations(|| {}), 0);
        let n = allocations(|| {
            let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(4));
            drop(std::hint::black_box(format!("{}", v.capacity())));
        });
        assert!(n >= 2, "{n}");
        let other = allocations(|| {
            std::thread::scope(|s| {
                s.spawn(|| drop(std::hint::black_box(vec![1u8; 64])));
            });
        });
        // Spawning allocates here; the child's vector is not counted, so
        // this stays small whatever the child does.
        assert!(other < 64, "{other}");
    }
}
