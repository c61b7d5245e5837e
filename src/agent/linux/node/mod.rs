//! The node sampler: per-CPU hardware counters and PSI, read once per
//! `sample_period_ms` on a thread of its own, judged by
//! [`crate::agent::observers::node`].
//!
//! Owns: which sources the sampler found at start, the observer status it
//! reports from them, PSI reads, and the sampling thread. The counters
//! themselves (perf_event_open, groups, CPU hotplug) are [`perf`]'s. Must
//! not: judge anything (the classifier does) or touch the drain thread.
//!
//! # Why userspace and not BPF
//!
//! Counters are read from userspace with `perf_event_open(2)` and `read(2)`,
//! not by a BPF `perf_event` program with `bpf_perf_event_read_value`:
//! - a BPF reader needs a timer event per CPU to run on and a map to carry
//!   the values back, and still ends with a userspace read of that map; the
//!   counters themselves are the same kernel objects either way;
//! - from userspace one `read(2)` per CPU per period returns the whole group
//!   (`PERF_FORMAT_GROUP`) with `time_enabled`/`time_running`, so the cost
//!   is a handful of syscalls per period (measured, logged once at start-up
//!   as `node sampler cost`), with no BPF program, verifier or map;
//! - the sampler never touches the drain thread, which stays a pure ring
//!   consumer.
//!
//! # PSI
//!
//! `/proc/pressure/memory` is read every period. `/proc/pressure/cpu` is
//! read only when no stalled-cycles counter is available (see the
//! classifier for what each source means).
//!
//! # Status of observer `node` (in the log, `Shared` statuses, heartbeat)
//!
//! - `active`, no reason: cycles, instructions, a stall event and a miss
//!   event on every online CPU, and PSI memory.
//! - `degraded`: something is judged but not everything the design uses.
//!   The reason names what is missing with its errno, then how each rule is
//!   judged, e.g. on a VM without a PMU:
//!   `pmc unavailable: perf_event_open(cycles, cpu 0) failed: ENOENT (No
//!   such file or directory); rules: cpu_stall from psi, ipc_degradation
//!   not judged, memory_pressure from psi`.
//! - `unavailable`: no rule can be judged (no PMCs and no PSI), same
//!   reason format.

use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use crate::agent::classify::Finding;
use crate::agent::metrics::Metrics;
use crate::agent::observers::node::{parse_psi, NodeClassifier, NodeSample, PsiTotals};
use crate::agent::observers::{report, DropsExported, Lifecycle};
use crate::agent::pipeline::{monotonic_ns, send_findings, Shared};
use crate::wire::status::{ObserverState, ObserverStatus};
use crate::wire::{CompiledConfig, Observer};

pub mod perf;

pub use perf::{
    errno_text, parse_cpu_list, probe_layout, Layout, OpenError, PMC_EVENTS, SOFTWARE_STAND_IN,
};
use perf::{open_pmc, EventSet, Pmc, Reread};

/// This sampler's observer name (metrics label, log field).
const OBSERVER: &str = Observer::Node.as_str();
const PSI_MEMORY: &str = "/proc/pressure/memory";
const PSI_CPU: &str = "/proc/pressure/cpu";
/// Longest sleep between checks of the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Shortest period the sampler runs at, whatever the config says.
const MIN_PERIOD_MS: u32 = 10;
/// Periods averaged for the one `node sampler cost` log line.
const COST_REPORT_PERIODS: u32 = 10;

/// What the sampler found it can read, decided once at start.
struct Sources {
    pmc: Result<Pmc, String>,
    psi_memory: Result<Reread, String>,
    psi_cpu: Result<Reread, String>,
}

fn open_psi(path: &'static str) -> Result<Reread, String> {
    let mut r = Reread::open(path).map_err(|e| format!("{path}: {e}"))?;
    let text = r.read().map_err(|e| format!("{path}: {e}"))?;
    parse_psi(text).map_err(|e| format!("{path}: {e}"))?;
    Ok(r)
}

fn probe(events: &EventSet) -> Sources {
    let pmc = open_pmc(events);
    let psi_memory = open_psi(PSI_MEMORY);
    // CPU PSI only stands in for a missing stall counter.
    let psi_cpu = match &pmc {
        Ok(p) if p.layout.stall.is_some() => Err("not needed".into()),
        _ => open_psi(PSI_CPU),
    };
    Sources {
        pmc,
        psi_memory,
        psi_cpu,
    }
}

/// The observer status and its reason, from what could be opened.
fn status(s: &Sources) -> (ObserverState, String) {
    let mut missing: Vec<String> = Vec::new();
    let (stall_pmc, ipc_pmc, miss_pmc) = match &s.pmc {
        Ok(p) => {
            for e in &p.layout.missing {
                missing.push(format!("pmc {e}"));
            }
            for e in p.failed.values() {
                missing.push(format!("pmc {e}"));
            }
            let instr = p.layout.instructions.is_some();
            (
                p.layout.stall.is_some(),
                instr,
                instr && p.layout.miss.is_some(),
            )
        }
        Err(e) => {
            missing.push(format!("pmc unavailable: {e}"));
            (false, false, false)
        }
    };
    let psi_mem = s.psi_memory.is_ok();
    if let Err(e) = &s.psi_memory {
        missing.push(format!("psi unavailable: {e}"));
    }
    let psi_cpu = !stall_pmc && s.psi_cpu.is_ok();
    if let (false, Err(e)) = (stall_pmc, &s.psi_cpu) {
        missing.push(format!("psi unavailable: {e}"));
    }
    let stall = match (stall_pmc, psi_cpu) {
        (true, _) => "cpu_stall from pmc",
        (false, true) => "cpu_stall from psi",
        (false, false) => "cpu_stall not judged",
    };
    let ipc = if ipc_pmc {
        "ipc_degradation from pmc"
    } else {
        "ipc_degradation not judged"
    };
    let mem = match (miss_pmc, psi_mem) {
        (true, true) => "memory_pressure from pmc and psi",
        (true, false) => "memory_pressure from pmc",
        (false, true) => "memory_pressure from psi",
        (false, false) => "memory_pressure not judged",
    };
    if missing.is_empty() {
        return (ObserverState::Active, String::new());
    }
    let judged_any = stall_pmc || psi_cpu || ipc_pmc || miss_pmc || psi_mem;
    let state = if judged_any {
        ObserverState::Degraded
    } else {
        ObserverState::Unavailable
    };
    (
        state,
        format!("{}; rules: {stall}, {ipc}, {mem}", missing.join("; ")),
    )
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The sampler's per-period state.
struct Sampler {
    sources: Sources,
    classifier: NodeClassifier,
    generation: u32,
    drops: DropsExported,
}

impl Sampler {
    /// Reads everything once; returns the sample.
    fn read(&mut self, metrics: &Metrics) -> NodeSample {
        let mut sample = NodeSample::default();
        if let Ok(p) = &mut self.sources.pmc {
            if !p.refresh() {
                metrics.correlation_drop(OBSERVER, "cpu_list_unreadable", 1);
            }
            p.read(&mut sample.pmc, metrics);
        }
        sample.psi_memory = read_psi(&mut self.sources.psi_memory, metrics);
        sample.psi_cpu = read_psi(&mut self.sources.psi_cpu, metrics);
        sample.mono_ns = monotonic_ns();
        sample
    }

    fn export_drops(&mut self, metrics: &Metrics) {
        self.drops.export(&self.classifier, metrics);
    }
}

fn read_psi(src: &mut Result<Reread, String>, metrics: &Metrics) -> Option<PsiTotals> {
    let r = src.as_mut().ok()?;
    match r.read().map(parse_psi) {
        Ok(Ok(t)) => Some(t),
        Ok(Err(e)) => {
            tracing::debug!(observer = OBSERVER, "{}: {e}", r.path);
            metrics.correlation_drop(OBSERVER, "psi_malformed", 1);
            None
        }
        Err(e) => {
            tracing::debug!(observer = OBSERVER, "{}: {e}", r.path);
            metrics.correlation_drop(OBSERVER, "psi_unreadable", 1);
            None
        }
    }
}

/// Probes the counters and PSI, reports the `node` status, and starts the
/// sampler thread. It ends when `shared.stop` is set.
pub fn start(
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    findings: SyncSender<Vec<Finding>>,
    initial: CompiledConfig,
) -> anyhow::Result<JoinHandle<()>> {
    let sources = probe(&PMC_EVENTS);
    let (state, reason) = status(&sources);
    report(
        &shared,
        Observer::Node,
        ObserverStatus::new(state, reason),
        "pmc and psi",
    );
    let generation = shared.applied().map_or(1, |a| a.generation);
    let sampler = Sampler {
        sources,
        classifier: NodeClassifier::new(&initial.node, generation),
        generation,
        drops: DropsExported::default(),
    };
    std::thread::Builder::new()
        .name("node-sampler".into())
        .spawn(move || run(sampler, &shared, &metrics, &findings, initial))
        .context("failed to start the node sampler thread")
}

fn run(
    mut s: Sampler,
    shared: &Shared,
    metrics: &Metrics,
    findings: &SyncSender<Vec<Finding>>,
    initial: CompiledConfig,
) {
    let mut cfg = initial.node;
    let period_ns = |ms: u32| u64::from(ms.max(MIN_PERIOD_MS)) * 1_000_000;
    let mut next = monotonic_ns();
    let (mut cost_ns, mut cost_periods) = (0u64, 0u32);
    let mut out = Vec::new();
    loop {
        loop {
            if shared.stopping() {
                return;
            }
            let now = monotonic_ns();
            if now >= next {
                break;
            }
            std::thread::sleep(Duration::from_nanos(next - now).min(STOP_POLL));
        }
        let cpu0 = thread_cpu_ns();
        if let Some(a) = shared.applied().filter(|a| a.generation != s.generation) {
            s.generation = a.generation;
            cfg = a.config.node.clone();
            s.classifier.apply_config(&a.config, a.generation);
        }
        // Inert until a config is applied (controller mode starts unconfigured).
        if cfg.enabled && shared.applied().is_some() {
            let sample = s.read(metrics);
            s.classifier.on_sample(&sample, &mut out);
            send_findings(findings, std::mem::take(&mut out), metrics);
            s.export_drops(metrics);
        }
        let spent = thread_cpu_ns().saturating_sub(cpu0);
        if cost_periods < COST_REPORT_PERIODS {
            cost_ns += spent;
            cost_periods += 1;
            if cost_periods == COST_REPORT_PERIODS {
                let groups = s.sources.pmc.as_ref().map_or(0, Pmc::counted_cpus);
                tracing::info!(
                    observer = OBSERVER,
                    cpu_groups = groups,
                    "node sampler cost: {:.1} us CPU per period (mean of {} periods)",
                    cost_ns as f64 / 1000.0 / f64::from(COST_REPORT_PERIODS),
                    COST_REPORT_PERIODS
                );
            }
        }
        // A late wake-up (suspend, overload) does not make a burst: the
        // classifier measures the real period between samples.
        next = next
            .saturating_add(period_ns(cfg.sample_period_ms))
            .max(monotonic_ns());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout_with(stall: bool, miss: bool, instr: bool) -> Layout {
        Layout {
            cycles: PMC_EVENTS.cycles,
            instructions: instr.then_some(PMC_EVENTS.instructions[0]),
            stall: stall.then_some(PMC_EVENTS.stall[1]),
            miss: miss.then_some(PMC_EVENTS.miss[1]),
            missing: Vec::new(),
        }
    }

    fn pmc(layout: Layout) -> Result<Pmc, String> {
        Ok(Pmc::empty(layout))
    }

    #[test]
    fn status_strings() {
        let psi = || Reread::open("/dev/null").map_err(|e| e.to_string());
        let no = |m: &str| -> Result<Reread, String> { Err(m.into()) };
        let enoent = OpenError {
            event: "cycles",
            cpu: 0,
            errno: libc::ENOENT,
        };
        // This VM: no PMU, PSI present.
        let s = Sources {
            pmc: Err(enoent.to_string()),
            psi_memory: psi(),
            psi_cpu: psi(),
        };
        assert_eq!(
            status(&s),
            (
                ObserverState::Degraded,
                "pmc unavailable: perf_event_open(cycles, cpu 0) failed: ENOENT (No such file or directory); rules: cpu_stall from psi, ipc_degradation not judged, memory_pressure from psi".into()
            )
        );
        // Nothing at all.
        let s = Sources {
            pmc: Err(enoent.to_string()),
            psi_memory: no("/proc/pressure/memory: gone"),
            psi_cpu: no("/proc/pressure/cpu: gone"),
        };
        let (state, reason) = status(&s);
        assert_eq!(state, ObserverState::Unavailable);
        assert!(reason.ends_with("rules: cpu_stall not judged, ipc_degradation not judged, memory_pressure not judged"), "{reason}");
        // Everything.
        let s = Sources {
            pmc: pmc(layout_with(true, true, true)),
            psi_memory: psi(),
            psi_cpu: no("not needed"),
        };
        assert_eq!(status(&s), (ObserverState::Active, String::new()));
        // Modern Intel: no stall events; CPU PSI stands in.
        let mut l = layout_with(false, true, true);
        l.missing.push(OpenError {
            event: "stalled-cycles-frontend",
            cpu: 0,
            errno: libc::ENOENT,
        });
        let s = Sources {
            pmc: pmc(l),
            psi_memory: psi(),
            psi_cpu: psi(),
        };
        assert_eq!(
            status(&s),
            (
                ObserverState::Degraded,
                "pmc perf_event_open(stalled-cycles-frontend, cpu 0) failed: ENOENT (No such file or directory); rules: cpu_stall from psi, ipc_degradation from pmc, memory_pressure from pmc and psi".into()
            )
        );
    }

    /// Cost of one period's reads (all CPUs' groups + PSI files), with
    /// software events standing in for PMCs:
    /// `cargo test --lib node_sampler_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn node_sampler_cost() {
        let mut sampler = Sampler {
            sources: Sources {
                pmc: open_pmc(&SOFTWARE_STAND_IN),
                psi_memory: open_psi(PSI_MEMORY),
                psi_cpu: open_psi(PSI_CPU),
            },
            classifier: NodeClassifier::new(&CompiledConfig::default().node, 1),
            generation: 1,
            drops: DropsExported::default(),
        };
        let metrics = Metrics::new();
        let n = 10_000u64;
        let mut out = Vec::new();
        let cpu0 = thread_cpu_ns();
        let wall0 = monotonic_ns();
        for _ in 0..n {
            let s = sampler.read(&metrics);
            sampler.classifier.on_sample(&s, &mut out);
            out.clear();
        }
        let cpu = thread_cpu_ns() - cpu0;
        let wall = monotonic_ns() - wall0;
        let groups = sampler.sources.pmc.as_ref().map_or(0, Pmc::counted_cpus);
        eprintln!(
            "per period: {:.2} us CPU, {:.2} us wall ({groups} CPU groups of 4, cpu list + 2 PSI files)",
            cpu as f64 / n as f64 / 1000.0,
            wall as f64 / n as f64 / 1000.0
        );
    }
}
