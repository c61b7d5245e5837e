//! The observers' one lifecycle: what every observer does between the
//! probe that decides its status and the final flush at stop, and the
//! fixed set of ring-fed observers the drain thread runs.
//!
//! Every observer:
//! * is probed once at start; the probe gives an [`ObserverStatus`] (a
//!   state with its reason) that [`report`] logs and publishes. The probes
//!   themselves differ: a BPF observer's is loading and attaching its
//!   object (`agent/linux/drain.rs`), the node observer's is opening its
//!   counters and PSI files (`agent/linux/node/`);
//! * takes every applied config ([`Lifecycle::apply_config`]), keeping
//!   its windows and baselines;
//! * counts what it deliberately drops ([`Lifecycle::drops`], exported
//!   through [`DropsExported`]).
//!
//! They differ in what feeds them, and the traits say so rather than
//! hiding it. The BPF observers ([`RingObserver`]) get decoded ring
//! records as facts, are ticked by the drain thread to close windows and
//! flushed at stop. The node observer has no ring, no tick and nothing
//! held back at stop: its sampler thread reads counters each period and
//! hands the sample to `NodeClassifier::on_sample` directly.
//!
//! Pure dispatch and bookkeeping: must not do I/O (decoding records and
//! loading objects stay with the drain thread and `decode`).

pub mod container;
pub mod network;
pub mod node;
pub mod storage;

use self::container::ContainerClassifier;
use self::network::NetworkClassifier;
use self::storage::StorageClassifier;
use super::classify::{DropCounts, Finding};
use super::decode::Fact;
use super::metrics::Metrics;
use super::pipeline::Shared;
use crate::wire::status::{ObserverState, ObserverStatus};
use crate::wire::{CompiledConfig, Observer};

/// What every observer does after its probe.
pub trait Lifecycle: Send {
    /// Which observer this is (the `observer` label of its metrics).
    fn observer(&self) -> Observer;
    /// Applies new thresholds; windows and baselines carry over.
    /// `generation` is the applied config's: the node observer stamps its
    /// findings with it, ring observers read it from each fact instead
    /// (BPF stamps every record with the generation that judged it).
    fn apply_config(&mut self, cfg: &CompiledConfig, generation: u32);
    /// Cumulative drop counts since start, by reason.
    fn drops(&self) -> &DropCounts;
}

/// An observer fed by its BPF ring: the drain thread decodes each record
/// into a fact for it, ticks it and flushes it at stop.
pub trait RingObserver: Lifecycle {
    fn on_fact(&mut self, fact: &Fact, out: &mut Vec<Finding>);
    /// Closes windows that ended by `now_mono_ns`. The default, for an
    /// observer without windows, does nothing.
    fn on_tick(&mut self, _now_mono_ns: u64, _out: &mut Vec<Finding>) {}
    /// Emits everything still pending (shutdown). The default, for an
    /// observer that holds nothing back, does nothing.
    fn flush(&mut self, _out: &mut Vec<Finding>) {}
}

/// The ring-fed observers, one of each. Adding one is a field here, its
/// line in [`RingObservers::all_mut`] and its arm in
/// [`RingObservers::on_fact`] (the compiler asks for the arm: the match
/// is on its fact type).
pub struct RingObservers {
    network: NetworkClassifier,
    container: ContainerClassifier,
    storage: StorageClassifier,
}

impl RingObservers {
    pub fn new(cfg: &CompiledConfig) -> RingObservers {
        RingObservers {
            network: NetworkClassifier::new(cfg),
            container: ContainerClassifier::new(cfg),
            storage: StorageClassifier::new(cfg),
        }
    }

    /// Every ring observer, in one fixed order.
    fn all_mut(&mut self) -> [&mut dyn RingObserver; 3] {
        [&mut self.network, &mut self.container, &mut self.storage]
    }

    fn all(&self) -> [&dyn RingObserver; 3] {
        [&self.network, &self.container, &self.storage]
    }

    /// Hands a fact to the observer whose record it decoded from: the
    /// fact's type names it, so no fact can reach another observer.
    pub fn on_fact(&mut self, fact: &Fact, out: &mut Vec<Finding>) {
        match fact {
            Fact::Net(_) => self.network.on_fact(fact, out),
            Fact::Ctr(_) => self.container.on_fact(fact, out),
            Fact::Sto(_) => self.storage.on_fact(fact, out),
        }
    }

    pub fn apply_config(&mut self, cfg: &CompiledConfig, generation: u32) {
        for o in self.all_mut() {
            o.apply_config(cfg, generation);
        }
    }

    pub fn on_tick(&mut self, now_mono_ns: u64, out: &mut Vec<Finding>) {
        for o in self.all_mut() {
            o.on_tick(now_mono_ns, out);
        }
    }

    pub fn flush(&mut self, out: &mut Vec<Finding>) {
        for o in self.all_mut() {
            o.flush(out);
        }
    }

    /// Adds each observer's drop growth to the metrics.
    pub fn export_drops(&self, exported: &mut DropsExported, metrics: &Metrics) {
        for o in self.all() {
            exported.export(o, metrics);
        }
    }
}

/// What `tapio_correlation_drops_total` already holds of each observer's
/// cumulative drop counts, so each export adds only the growth.
#[derive(Debug, Default)]
pub struct DropsExported(Vec<(Observer, &'static str, u64)>);

impl DropsExported {
    pub fn export(&mut self, o: &(impl Lifecycle + ?Sized), metrics: &Metrics) {
        let observer = o.observer();
        for (reason, n) in &o.drops().0 {
            let seen = self
                .0
                .iter_mut()
                .find(|(ob, r, _)| *ob == observer && r == reason);
            let before = match seen {
                Some((_, _, before)) => std::mem::replace(before, *n),
                None => {
                    self.0.push((observer, reason, *n));
                    0
                }
            };
            if *n > before {
                metrics.correlation_drop(observer.as_str(), reason, n - before);
            }
        }
    }
}

/// Logs an observer's probe result in one wording for every observer
/// and publishes it. `detail` says, for an active observer, what it runs
/// on (for the others the reason says what is missing).
pub fn report(shared: &Shared, observer: Observer, status: ObserverStatus, detail: &str) {
    let name = observer.as_str();
    let reason = &status.reason;
    match status.state {
        ObserverState::Active => tracing::info!(observer = name, "observer active ({detail})"),
        ObserverState::Degraded => tracing::warn!(observer = name, "observer degraded: {reason}"),
        ObserverState::Unavailable => {
            tracing::warn!(observer = name, "observer unavailable: {reason}")
        }
        ObserverState::Disabled => tracing::info!(observer = name, "observer disabled: {reason}"),
    }
    shared.set_status(observer, status.state, status.reason);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::decode::{CtrFact, CtrKind};

    /// Counts drops as a test tells it.
    struct Dropper(DropCounts);

    impl Lifecycle for Dropper {
        fn observer(&self) -> Observer {
            Observer::Node
        }
        fn apply_config(&mut self, _cfg: &CompiledConfig, _generation: u32) {}
        fn drops(&self) -> &DropCounts {
            &self.0
        }
    }

    fn drop_total(m: &Metrics, observer: &str, reason: &str) -> Option<u64> {
        let series =
            format!("tapio_correlation_drops_total{{observer=\"{observer}\",reason=\"{reason}\"}}");
        m.encode()
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
    }

    #[test]
    fn drops_are_exported_once_each() {
        let m = Metrics::new();
        let mut seen = DropsExported::default();
        let mut d = Dropper(DropCounts::default());
        d.0.add("psi_unreadable", 2);
        seen.export(&d, &m);
        seen.export(&d, &m);
        assert_eq!(drop_total(&m, "node", "psi_unreadable"), Some(2));
        d.0.add("psi_unreadable", 3);
        d.0.add("psi_malformed", 1);
        seen.export(&d, &m);
        assert_eq!(drop_total(&m, "node", "psi_unreadable"), Some(5));
        assert_eq!(drop_total(&m, "node", "psi_malformed"), Some(1));
    }

    fn exit(exit_status: u32) -> Fact {
        Fact::Ctr(CtrFact {
            kind: CtrKind::Exit,
            mono_ns: 1,
            generation: 1,
            pid: 7,
            tid: 7,
            comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
            cgroup_id: 0,
            memcg_id: 0,
            exit_status,
            pidns_init: false,
            ns_pid: 7,
            memcg_known: false,
            mm_known: false,
            memcg_limit_depth: 0,
            anon_rss_pages: 0,
            file_rss_pages: 0,
            shmem_rss_pages: 0,
            memcg_usage_pages: 0,
            memcg_max_pages: 0,
            sender: None,
        })
    }

    /// A fact reaches the observer of its type and only that one, and
    /// what that observer drops is exported under its name.
    #[test]
    fn a_fact_reaches_its_own_observer() {
        let m = Metrics::new();
        let mut set = RingObservers::new(&CompiledConfig::default());
        let mut out = Vec::new();
        // SIGSEGV (wait(2) status 11): an abnormal exit.
        set.on_fact(&exit(11), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].anomaly().observer(), Observer::Container);
        // A clean exit is not evidence: dropped, and counted as the
        // container observer's.
        set.on_fact(&exit(0), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        set.export_drops(&mut DropsExported::default(), &m);
        assert_eq!(drop_total(&m, "container", "not_abnormal"), Some(1));
        assert_eq!(drop_total(&m, "network", "not_abnormal"), None);
        set.flush(&mut out);
        assert_eq!(out.len(), 1, "nothing held back: {out:?}");
    }
}
