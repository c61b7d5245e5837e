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
//! Adding an observer is its folder here plus its line in wire's one
//! list (`wire::anomaly::observer_list!`): the folder holds its classifier,
//! its record decode (`fact.rs`) and its BPF source (`<name>.bpf.c`, which
//! build.rs compiles into the object of that name); the list's expansion
//! below declares the module and gives it its [`Fact`] variant, its
//! dispatch arms and its place in [`RingObservers`].
//!
//! Pure dispatch and bookkeeping: must not do I/O (loading objects and
//! polling rings stay with the drain thread; the record checks every
//! decode shares are `agent::decode`'s).

use super::abi::TapioEventHdr;
use super::classify::{DropCounts, Finding};
use super::decode::{header, DecodeError};
use super::metrics::Metrics;
use super::pipeline::Shared;
use crate::wire::anomaly::observer_list;
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

/// An observer fed by its BPF ring: everything the agent knows about one
/// BPF observer besides its name (which is also its object's name, and
/// the name of the folder that holds its BPF source). The drain thread
/// decodes each record of its ring into its fact, ticks it and flushes it
/// at stop. Its folder exports the implementing type as `Classifier`,
/// with `Classifier::new(&CompiledConfig)`.
pub trait RingObserver: Lifecycle {
    /// What one record of its ring decodes to.
    type Fact: Copy + std::fmt::Debug + PartialEq + Eq;
    /// Its `tapio_stats` counters beyond the shared ones (config, ring
    /// full), and what each one means.
    const STATS: &'static [(usize, Stat)] = &[];
    /// Its set-associative socket tables, `(map, ways)`: arrays whose
    /// every value (a set) begins with that many u64 tags, 0 for a free
    /// slot; `tapio_bpf_map_{capacity,entries}` count their slots.
    const SET_TABLES: &'static [(&'static str, u32)] = &[];
    /// Reads one record of its ring whose header is `hdr` (the checks
    /// are `agent::decode`'s).
    fn decode(hdr: &TapioEventHdr, b: &[u8]) -> Result<Self::Fact, DecodeError>;
    fn on_fact(&mut self, fact: &Fact, out: &mut Vec<Finding>);
    /// Closes windows that ended by `now_mono_ns`. The default, for an
    /// observer without windows, does nothing.
    fn on_tick(&mut self, _now_mono_ns: u64, _out: &mut Vec<Finding>) {}
    /// Emits everything still pending (shutdown). The default, for an
    /// observer that holds nothing back, does nothing.
    fn flush(&mut self, _out: &mut Vec<Finding>) {}
}

/// What an observer's own `tapio_stats` counter means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Evidence deliberately dropped: `tapio_correlation_drops_total`
    /// with this reason.
    Drop(&'static str),
    /// `tapio_inbound_resets_total` (peer resets of sockets the network
    /// observer never saw connect: context, not a drop).
    InboundResets,
}

/// Expands wire's observer list into the agent's side of every observer:
/// its module (`agent/observers/<name>/`), and for the ring-fed ones the
/// [`Fact`] variant, the record dispatch ([`decode`]), their counters
/// ([`stat`], [`set_ways`]) and [`RingObservers`]. It sorts the list by
/// feed first (`@sort`), then expands once with both groups. Dispatch is
/// by `match` on [`Observer`] or [`Fact`], so an observer without its arm
/// does not compile.
macro_rules! agent_observers {
    (@sort [$($ring:tt)*] [$($sampled:tt)*]) => {
        agent_observers!(@expand [$($ring)*] [$($sampled)*]);
    };
    (@sort [$($ring:tt)*] [$($sampled:tt)*] $variant:ident $name:ident $section:ident ring, $($rest:tt)*) => {
        agent_observers!(@sort [$($ring)* $variant $name,] [$($sampled)*] $($rest)*);
    };
    (@sort [$($ring:tt)*] [$($sampled:tt)*] $variant:ident $name:ident $section:ident sampled, $($rest:tt)*) => {
        agent_observers!(@sort [$($ring)*] [$($sampled)* $variant $name,] $($rest)*);
    };
    (@expand [$($rv:ident $rn:ident,)*] [$($sv:ident $sn:ident,)*]) => {
        $(pub mod $rn;)*
        $(pub mod $sn;)*

        /// The observers fed by a BPF ring (each has `<name>.bpf.o`), in
        /// list order.
        pub const RING: [Observer; [$(stringify!($rn)),*].len()] = [$(Observer::$rv,)*];

        /// One decoded ring record, typed by the observer whose ring it
        /// came from: the type names its observer, so no fact can reach
        /// another one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Fact {
            $($rv(<$rn::Classifier as RingObserver>::Fact),)*
        }

        impl Fact {
            /// The observer whose ring it came from.
            pub fn observer(&self) -> Observer {
                match self {
                    $(Fact::$rv(_) => Observer::$rv,)*
                }
            }

            /// The config generation that judged it in BPF.
            pub fn generation(&self) -> u32 {
                match self {
                    $(Fact::$rv(f) => f.generation,)*
                }
            }

            /// When it happened, CLOCK_MONOTONIC ns.
            pub fn mono_ns(&self) -> u64 {
                match self {
                    $(Fact::$rv(f) => f.mono_ns,)*
                }
            }
        }

        /// Decodes one record from `observer`'s ring.
        pub fn decode(observer: Observer, b: &[u8]) -> Result<Fact, DecodeError> {
            let hdr = header(b)?;
            match observer {
                $(Observer::$rv => <$rn::Classifier as RingObserver>::decode(&hdr, b).map(Fact::$rv),)*
                // No ring: no record is ever its.
                $(Observer::$sv => Err(DecodeError::UnknownKind(hdr.kind)),)*
            }
        }

        /// What `observer`'s counter `idx` of `tapio_stats` means beyond
        /// the shared ones, or `None` for a counter that is neither a drop
        /// nor a metric of its own.
        pub fn stat(observer: Observer, idx: usize) -> Option<Stat> {
            let stats: &[(usize, Stat)] = match observer {
                $(Observer::$rv => <$rn::Classifier as RingObserver>::STATS,)*
                $(Observer::$sv => &[],)*
            };
            stats.iter().find(|(i, _)| *i == idx).map(|(_, s)| *s)
        }

        /// The ways of `observer`'s map `map` if it is one of its socket
        /// tables ([`RingObserver::SET_TABLES`]).
        pub fn set_ways(observer: Observer, map: &str) -> Option<u32> {
            let tables: &[(&str, u32)] = match observer {
                $(Observer::$rv => <$rn::Classifier as RingObserver>::SET_TABLES,)*
                $(Observer::$sv => &[],)*
            };
            tables.iter().find(|(n, _)| *n == map).map(|(_, w)| *w)
        }

        /// The ring-fed observers, one of each.
        pub struct RingObservers {
            $($rn: $rn::Classifier,)*
        }

        impl RingObservers {
            pub fn new(cfg: &CompiledConfig) -> RingObservers {
                RingObservers {
                    $($rn: $rn::Classifier::new(cfg),)*
                }
            }

            /// Hands a fact to the observer whose record it decoded from.
            pub fn on_fact(&mut self, fact: &Fact, out: &mut Vec<Finding>) {
                match fact {
                    $(Fact::$rv(_) => self.$rn.on_fact(fact, out),)*
                }
            }

            pub fn apply_config(&mut self, cfg: &CompiledConfig, generation: u32) {
                $(self.$rn.apply_config(cfg, generation);)*
            }

            pub fn on_tick(&mut self, now_mono_ns: u64, out: &mut Vec<Finding>) {
                $(self.$rn.on_tick(now_mono_ns, out);)*
            }

            pub fn flush(&mut self, out: &mut Vec<Finding>) {
                $(self.$rn.flush(out);)*
            }

            /// Adds each observer's drop growth to the metrics.
            pub fn export_drops(&self, exported: &mut DropsExported, metrics: &Metrics) {
                $(exported.export(&self.$rn, metrics);)*
            }

            /// `(the list's observer, what its classifier says it is)`,
            /// for the test that they agree.
            #[cfg(test)]
            fn named(&self) -> Vec<(Observer, Observer)> {
                vec![$((Observer::$rv, self.$rn.observer()),)*]
            }
        }
    };
    ($($list:tt)*) => {
        agent_observers!(@sort [] [] $($list)*);
    };
}
observer_list!(agent_observers);

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
    use crate::agent::abi::{self, TapioEventHdr};
    use crate::agent::observers::container::fact::tests::ctr_record;
    use crate::agent::observers::container::{CtrFact, CtrKind};
    use crate::agent::observers::storage::fact::tests::sto_record;
    use zerocopy::{FromBytes, IntoBytes};

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
        Fact::Container(CtrFact {
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

    /// The list, the classifiers and the facts agree on who is who: a
    /// classifier reports under its own name, and a record of each ring
    /// decodes to that observer's fact.
    #[test]
    fn every_ring_observer_is_wired_under_its_name() {
        let set = RingObservers::new(&CompiledConfig::default());
        for (listed, says) in set.named() {
            assert_eq!(listed, says);
        }
        assert_eq!(
            set.named().iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            RING.to_vec()
        );
        let net = network::fact::tests::net_record(abi::EV_NET_RTT, 2, &[10, 0, 0, 1], 80, 0);
        for (o, rec) in [
            (Observer::Network, net),
            (Observer::Container, ctr_record(abi::EV_CTR_EXIT, 1, 9, 0)),
            (Observer::Storage, sto_record(10, None)),
        ] {
            let fact = decode(o, &rec).unwrap_or_else(|e| panic!("{o:?}: {e:?}"));
            assert_eq!(fact.observer(), o);
        }
        // An observer without a ring takes no record.
        for o in Observer::ALL.into_iter().filter(|o| !RING.contains(o)) {
            assert!(decode(o, &sto_record(10, None)).is_err(), "{o:?}");
        }
    }

    #[test]
    fn stats_name_drops_and_their_own_metrics_only() {
        for (o, i, reason) in [
            (
                Observer::Storage,
                abi::STAT_CORR_DUP,
                "ambiguous_inflight_io",
            ),
            (
                Observer::Storage,
                abi::STAT_CORR_MISSING,
                "completion_without_issue",
            ),
            (
                Observer::Network,
                abi::STAT_RESET_ORPHAN,
                "reset_after_close",
            ),
            (Observer::Network, abi::STAT_OWNER_MISSING, "owner_missing"),
            (Observer::Network, abi::STAT_OWNER_FULL, "owner_table_full"),
            (Observer::Network, abi::STAT_RTT_FULL, "rtt_table_full"),
        ] {
            assert_eq!(stat(o, i), Some(Stat::Drop(reason)), "{o:?} {i}");
        }
        assert_eq!(stat(Observer::Storage, abi::STAT_RB_FULL), None);
        assert_eq!(stat(Observer::Container, abi::STAT_CORR_DUP), None);
        assert_eq!(stat(Observer::Storage, abi::STAT_MAX), None);
        assert_eq!(stat(Observer::Node, abi::STAT_CORR_DUP), None);
        // Inbound resets are their own metric, not a drop.
        assert_eq!(
            stat(Observer::Network, abi::STAT_RESET_INBOUND),
            Some(Stat::InboundResets)
        );
        // The shared counters are no observer's own.
        for o in Observer::ALL {
            for i in [abi::STAT_CFG_ZERO, abi::STAT_CFG_ABI, abi::STAT_RB_FULL] {
                assert_eq!(stat(o, i), None, "{o:?} {i}");
            }
        }
        assert_eq!(set_ways(Observer::Network, "conn_owners"), Some(16));
        assert_eq!(set_ways(Observer::Network, "rtt_baselines"), Some(4));
        assert_eq!(set_ways(Observer::Network, "flow_drops"), None);
        assert_eq!(set_ways(Observer::Storage, "conn_owners"), None);
    }

    #[test]
    fn container_and_storage_lengths_and_kinds_are_checked() {
        for (obs, rec) in [
            (Observer::Container, ctr_record(abi::EV_CTR_EXIT, 1, 9, 0)),
            (Observer::Storage, sto_record(10, None)),
        ] {
            assert!(decode(obs, &rec).is_ok());
            for len in 0..rec.len() {
                assert!(decode(obs, &rec[..len]).is_err(), "{obs:?} len {len}");
            }
            let mut long = rec.clone();
            long.push(0);
            assert!(matches!(
                decode(obs, &long),
                Err(DecodeError::Oversized { .. })
            ));
            let (hdr, body) = TapioEventHdr::read_from_prefix(&rec).expect("a header");
            let with_hdr = |hdr: TapioEventHdr| [hdr.as_bytes(), body].concat();
            let bad = with_hdr(TapioEventHdr { size: 8, ..hdr });
            assert_eq!(
                decode(obs, &bad),
                Err(DecodeError::SizeMismatch {
                    len: rec.len(),
                    declared: 8
                })
            );
            // Another observer's kind is refused, not misread.
            let other = with_hdr(TapioEventHdr {
                kind: abi::EV_NET_RTT,
                ..hdr
            });
            assert_eq!(
                decode(obs, &other),
                Err(DecodeError::UnknownKind(abi::EV_NET_RTT))
            );
        }
        // A container record on the storage ring is refused by kind.
        let rec = ctr_record(abi::EV_CTR_OOM, 1, 0, 0);
        assert_eq!(
            decode(Observer::Storage, &rec),
            Err(DecodeError::UnknownKind(abi::EV_CTR_OOM))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: xorshift bytes of every length.
        let mut x = crate::testutil::XorShift(0x9e3779b97f4a7c15);
        for len in 0..300 {
            let buf = x.bytes(len);
            for obs in Observer::ALL {
                let _ = decode(obs, &buf);
            }
        }
    }
}
