//! Node rules (SPEC §1): `kernel.node.cpu_stall`,
//! `kernel.node.ipc_degradation` and `kernel.node.memory_pressure`.
//!
//! Pure: the sampler thread (`agent::linux::node`) reads the counters and
//! the clock and hands one [`NodeSample`] per sampling period to
//! [`NodeClassifier::on_sample`]. Samples do not go through `decode`: they
//! are not ring-buffer records, and the node observer has no BPF program.
//!
//! # Sources
//!
//! * **`pmc`** — per-CPU hardware counters, read as one perf event group
//!   per CPU (cycles leads; instructions, a stalled-cycles event and a
//!   cache-miss event follow where the CPU exposes them). Every judgement
//!   is over one CPU and one period, from the deltas of that CPU's group.
//!   `data.cpu` is the CPU number.
//!   - `cpu_stall`: stalled cycles / cycles, in permille, ≥
//!     `cpu_stall_permille`. The stall event is `stalled-cycles-backend`
//!     where it exists, else `stalled-cycles-frontend` (`data.stall_event`).
//!   - `ipc_degradation`: instructions / cycles < `ipc_drop_permille` ×
//!     the CPU's baseline IPC.
//!   - `memory_pressure`: cache misses per kilo-instruction (×1000, "MPKI
//!     milli") ≥ `memory_pressure_mpki_milli`. The miss event is the
//!     last-level-cache read miss (`LLC-load-misses`) where it exists, else
//!     the generic `cache-misses` (`data.miss_event`).
//! * **`psi`** — the kernel's pressure stall information, node-wide.
//!   `data.cpu` is **-1** (as in `perf_event_open`, "any CPU"): PSI has no
//!   per-CPU split. The ratio is the growth of the `some` total (µs during
//!   which at least one runnable task was stalled) over the period, in
//!   permille of the period.
//!   - `memory_pressure` from `/proc/pressure/memory` `some` ≥
//!     `psi_memory_permille` (`full`, when all non-idle tasks stalled at
//!     once, is carried in `data` too). Judged wherever PSI exists, next
//!     to the PMC rule: the two answer different questions (cache misses
//!     vs. time lost waiting on reclaim, refaults and swap-in).
//!   - `cpu_stall` from `/proc/pressure/cpu` `some` ≥ `psi_cpu_permille`:
//!     time runnable tasks waited for a CPU. The sampler only passes CPU
//!     PSI when no stalled-cycles counter is available, so the two never
//!     judge the same node at once.
//!
//! # Baselines
//!
//! Each CPU keeps an EWMA (α = 1/8) of its IPC, stall share and MPKI over
//! judged periods. A period is judged against the baseline *before* it is
//! folded in; `ipc_degradation` is only judged once the baseline holds
//! `min_baseline_samples` periods. All judged periods are folded in, so the
//! baseline follows the CPU's workload: a step change is reported when it
//! happens, not forever. The stall and MPKI baselines are reported as
//! context (`data.baseline_*`); their rules are judged by the threshold.
//! PSI rules are judged by their threshold only and carry no baseline.
//!
//! # What is not judged, and what is dropped
//!
//! * The first reading of a CPU's group (and the first after the sampler
//!   reopened it: a new `epoch`) only primes the deltas. A CPU missing from
//!   a sample (offline) forgets its previous reading; its baselines stay.
//! * A period in which a CPU ran fewer than [`MIN_CYCLES_PER_NS`] cycles
//!   per enabled nanosecond is idle: not judged, and it ends an episode.
//! * Multiplexing: the group was counting for `time_running` of the
//!   `time_enabled` ns. Values are scaled by enabled/running (ratios are
//!   unchanged, since the group counts together) when it ran at least
//!   [`MIN_RUNNING_PERMILLE`] of the period (`data.scaled`,
//!   `data.running_permille`); otherwise the period is dropped as
//!   `multiplexed`.
//! * Counter wrap: deltas are taken modulo 2^64, so a wrapped counter gives
//!   its true delta. A delta no CPU could produce (more than
//!   [`MAX_CYCLES_PER_NS`] cycles per running ns, more instructions than
//!   [`MAX_IPC`] × cycles, more stalled cycles or misses than cycles) is a
//!   reset or a misread, never a wrap: dropped as `counter_inconsistent`.
//!   A group whose enabled time did not advance is dropped as
//!   `counter_stopped`; a PSI total that went backwards as
//!   `psi_not_monotonic`.
//! * Drops are cumulative in [`NodeClassifier::drops`] and exported as
//!   `tapio_correlation_drops_total{observer="node",reason}`.
//!
//! # Episodes: a pressured node is reported, not flooded
//!
//! Each rule and CPU (or PSI resource) has an episode: the first judged
//! period over threshold emits at once; while the condition holds, one more
//! occurrence every [`REPEAT_EVERY_PERIODS`] periods (`data.episode_periods`
//! counts the periods so far). A judged period under threshold (or an idle
//! one) ends the episode; the next period over threshold emits again. A
//! healthy node emits nothing. A threshold of 0 turns its rule off.

use std::collections::BTreeMap;

use super::Lifecycle;
use crate::agent::classify::{DropCounts, Finding};
use crate::wire::config::NodeConfig;
use crate::wire::evidence::{
    Baseline, CpuStall, Evidence, IpcDegradation, MemoryPressure, PmcMisses, PmcPeriod, PmcStall,
    Psi,
};
use crate::wire::{CompiledConfig, Observer, Outcome, Severity};

/// While a condition holds, at most one occurrence per this many periods.
pub const REPEAT_EVERY_PERIODS: u32 = 60;
/// Weight of a new period in a baseline (1/8).
pub const EWMA_ALPHA: f64 = 0.125;
/// A group that ran for less than this share of the period is dropped
/// rather than scaled up.
pub const MIN_RUNNING_PERMILLE: u64 = 100;
/// Fewer cycles per enabled ns than this (0.1 ≈ 10 % busy at 1 GHz) is an
/// idle period: ratios over a handful of cycles are noise.
pub const MIN_CYCLES_PER_NS: f64 = 0.1;
/// No core runs more cycles per ns than this; a larger delta is a reset.
pub const MAX_CYCLES_PER_NS: u64 = 16;
/// No core retires more instructions per cycle than this.
pub const MAX_IPC: u64 = 16;
/// `data.cpu` of node-wide (PSI) occurrences.
pub const NODE_WIDE_CPU: i64 = -1;

/// One counter of a group: which generic event it is and its raw,
/// cumulative value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// perf's name of the event (`stalled-cycles-backend`, `cache-misses`, …).
    pub event: &'static str,
    pub value: u64,
}

/// One CPU's counter group as read (cumulative, unscaled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmcReading {
    pub cpu: u32,
    /// Changes whenever the sampler (re)opens this CPU's group; deltas are
    /// only taken between readings of one epoch.
    pub epoch: u64,
    pub time_enabled_ns: u64,
    pub time_running_ns: u64,
    pub cycles: u64,
    pub instructions: Option<u64>,
    pub stalled: Option<Counter>,
    pub misses: Option<Counter>,
}

/// Cumulative stall totals of one `/proc/pressure` file, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PsiTotals {
    pub some_us: u64,
    /// Absent on kernels whose file has no `full` line (cpu before 5.13).
    pub full_us: Option<u64>,
}

/// Everything the sampler read in one period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSample {
    /// CLOCK_MONOTONIC ns when the sample was read.
    pub mono_ns: u64,
    /// Groups of the CPUs that are online and counting.
    pub pmc: Vec<PmcReading>,
    pub psi_cpu: Option<PsiTotals>,
    pub psi_memory: Option<PsiTotals>,
}

/// Why a `/proc/pressure` file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PsiParseError {
    /// The file has no `some` line.
    #[error("no `some` line")]
    MissingSome,
    /// A line does not start with `some` or `full`.
    #[error("unexpected line {0:?}")]
    UnknownLine(String),
    /// A line has no `total=` field.
    #[error("line {0:?} has no total=")]
    MissingTotal(String),
    /// `total=` is not an unsigned integer.
    #[error("total {0:?} is not an unsigned integer")]
    BadTotal(String),
    /// The same kind of line appears twice.
    #[error("duplicate `{0}` line")]
    Duplicate(&'static str),
}

/// Parses a `/proc/pressure/{cpu,memory,io}` file:
///
/// ```text
/// some avg10=0.00 avg60=0.00 avg300=0.00 total=10703
/// full avg10=0.00 avg60=0.00 avg300=0.00 total=1492
/// ```
///
/// Only the `total=` fields are used (the averages are the kernel's own
/// smoothing over fixed windows, not the period's share).
pub fn parse_psi(text: &str) -> Result<PsiTotals, PsiParseError> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        let kind = words.next().unwrap_or("");
        let slot = match kind {
            "some" => &mut some,
            "full" => &mut full,
            _ => return Err(PsiParseError::UnknownLine(line.into())),
        };
        let total = words
            .find_map(|w| w.strip_prefix("total="))
            .ok_or_else(|| PsiParseError::MissingTotal(line.into()))?;
        let total: u64 = total
            .parse()
            .map_err(|_| PsiParseError::BadTotal(total.into()))?;
        if slot.replace(total).is_some() {
            return Err(PsiParseError::Duplicate(if kind == "some" {
                "some"
            } else {
                "full"
            }));
        }
    }
    Ok(PsiTotals {
        some_us: some.ok_or(PsiParseError::MissingSome)?,
        full_us: full,
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    value: f64,
    samples: u32,
}

impl Ewma {
    /// The baseline as an occurrence states it.
    fn judged(self) -> Baseline {
        Baseline {
            value: self.value,
            samples: self.samples,
        }
    }

    fn fold(&mut self, x: f64) {
        self.value = if self.samples == 0 {
            x
        } else {
            self.value + EWMA_ALPHA * (x - self.value)
        };
        self.samples = self.samples.saturating_add(1);
    }
}

/// The episode of one rule on one CPU or PSI resource.
#[derive(Debug, Clone, Copy, Default)]
struct Episode {
    /// Consecutive judged periods over threshold; 0 = no episode.
    periods: u32,
}

impl Episode {
    /// Records a judged period; true when it must emit.
    fn over(&mut self) -> bool {
        self.periods = self.periods.saturating_add(1);
        (self.periods - 1) % REPEAT_EVERY_PERIODS == 0
    }

    fn end(&mut self) {
        self.periods = 0;
    }
}

#[derive(Default)]
struct CpuState {
    prev: Option<PmcReading>,
    ipc: Ewma,
    stall: Ewma,
    mpki: Ewma,
    stall_ep: Episode,
    ipc_ep: Episode,
    mem_ep: Episode,
}

#[derive(Default)]
struct PsiState {
    prev: Option<(u64, PsiTotals)>,
    episode: Episode,
}

/// Deltas of one CPU over one period, scaled.
struct Deltas {
    enabled_ns: u64,
    running_permille: u64,
    scaled: bool,
    cycles: u64,
    instructions: Option<u64>,
    stalled: Option<Counter>,
    misses: Option<Counter>,
}

pub struct NodeClassifier {
    cfg: NodeConfig,
    generation: u32,
    cpus: BTreeMap<u32, CpuState>,
    psi_cpu: PsiState,
    psi_mem: PsiState,
    drops: DropCounts,
}

/// The node observer's lifecycle: no ring, no tick and nothing held back
/// (a sample is judged whole in [`NodeClassifier::on_sample`]).
impl Lifecycle for NodeClassifier {
    fn observer(&self) -> Observer {
        Observer::Node
    }

    fn apply_config(&mut self, cfg: &CompiledConfig, generation: u32) {
        self.set_config(&cfg.node, generation);
    }

    fn drops(&self) -> &DropCounts {
        &self.drops
    }
}

impl NodeClassifier {
    pub fn new(cfg: &NodeConfig, generation: u32) -> Self {
        NodeClassifier {
            cfg: cfg.clone(),
            generation,
            cpus: BTreeMap::new(),
            psi_cpu: PsiState::default(),
            psi_mem: PsiState::default(),
            drops: DropCounts::default(),
        }
    }

    /// Applies new thresholds. Baselines and episodes carry over; turning
    /// the observer off forgets the previous readings, so turning it back
    /// on primes afresh instead of judging the gap.
    pub fn set_config(&mut self, cfg: &NodeConfig, generation: u32) {
        self.cfg = cfg.clone();
        self.generation = generation;
        if !cfg.enabled {
            for c in self.cpus.values_mut() {
                c.prev = None;
            }
            self.psi_cpu.prev = None;
            self.psi_mem.prev = None;
        }
    }

    /// Judges one period.
    pub fn on_sample(&mut self, s: &NodeSample, out: &mut Vec<Finding>) {
        if !self.cfg.enabled {
            return;
        }
        // CPUs absent from this sample are offline (or not counting).
        for (cpu, st) in self.cpus.iter_mut() {
            if !s.pmc.iter().any(|r| r.cpu == *cpu) {
                st.prev = None;
            }
        }
        for r in &s.pmc {
            self.on_pmc(r, s.mono_ns, out);
        }
        if let Some(t) = s.psi_memory {
            self.on_psi(Resource::Memory, t, s.mono_ns, out);
        }
        if let Some(t) = s.psi_cpu {
            self.on_psi(Resource::Cpu, t, s.mono_ns, out);
        }
    }

    fn deltas(&mut self, prev: &PmcReading, r: &PmcReading) -> Option<Deltas> {
        let enabled = r.time_enabled_ns.wrapping_sub(prev.time_enabled_ns);
        let running = r.time_running_ns.wrapping_sub(prev.time_running_ns);
        if enabled == 0 {
            self.drops.add("counter_stopped", 1);
            return None;
        }
        if running > enabled {
            self.drops.add("counter_inconsistent", 1);
            return None;
        }
        let running_permille = (u128::from(running) * 1000 / u128::from(enabled)) as u64;
        if running == 0 || running_permille < MIN_RUNNING_PERMILLE {
            self.drops.add("multiplexed", 1);
            return None;
        }
        let cycles = r.cycles.wrapping_sub(prev.cycles);
        let instructions = match (r.instructions, prev.instructions) {
            (Some(a), Some(b)) => Some(a.wrapping_sub(b)),
            _ => None,
        };
        let counter = |a: Option<Counter>, b: Option<Counter>| match (a, b) {
            (Some(a), Some(b)) if a.event == b.event => Some(Counter {
                event: a.event,
                value: a.value.wrapping_sub(b.value),
            }),
            _ => None,
        };
        let stalled = counter(r.stalled, prev.stalled);
        let misses = counter(r.misses, prev.misses);
        let plausible = u128::from(cycles) <= u128::from(running) * u128::from(MAX_CYCLES_PER_NS)
            && instructions
                .is_none_or(|i| u128::from(i) <= u128::from(cycles) * u128::from(MAX_IPC))
            && stalled.is_none_or(|c| c.value <= cycles)
            && misses.is_none_or(|c| c.value <= cycles);
        if !plausible {
            self.drops.add("counter_inconsistent", 1);
            return None;
        }
        let scale = |v: u64| -> u64 {
            if running == enabled {
                v
            } else {
                (u128::from(v) * u128::from(enabled) / u128::from(running))
                    .min(u128::from(u64::MAX)) as u64
            }
        };
        Some(Deltas {
            enabled_ns: enabled,
            running_permille,
            scaled: running != enabled,
            cycles: scale(cycles),
            instructions: instructions.map(scale),
            stalled: stalled.map(|c| Counter {
                event: c.event,
                value: scale(c.value),
            }),
            misses: misses.map(|c| Counter {
                event: c.event,
                value: scale(c.value),
            }),
        })
    }

    fn on_pmc(&mut self, r: &PmcReading, mono_ns: u64, out: &mut Vec<Finding>) {
        let prev = self.cpus.entry(r.cpu).or_default().prev.replace(*r);
        let Some(prev) = prev.filter(|p| p.epoch == r.epoch) else {
            return;
        };
        let Some(d) = self.deltas(&prev, r) else {
            return;
        };
        let cfg = self.cfg.clone();
        let generation = self.generation;
        let st = self.cpus.get_mut(&r.cpu).expect("inserted above");
        if (d.cycles as f64) < d.enabled_ns as f64 * MIN_CYCLES_PER_NS {
            st.stall_ep.end();
            st.ipc_ep.end();
            st.mem_ep.end();
            return;
        }
        let period = PmcPeriod {
            cpu: r.cpu,
            period_ns: d.enabled_ns,
            cycles: d.cycles,
            running_permille: d.running_permille,
            scaled: d.scaled,
        };
        let finding = |evidence| Finding {
            severity: Severity::Warning,
            outcome: Outcome::Degraded,
            evidence,
            generation,
            mono_ns,
        };

        if let Some(stalled) = d.stalled {
            let permille = ratio(stalled.value, 1000, d.cycles);
            let baseline = st.stall;
            st.stall.fold(permille as f64);
            let threshold = cfg.cpu_stall_permille;
            if threshold > 0 && permille >= u64::from(threshold) {
                if st.stall_ep.over() {
                    out.push(finding(Evidence::CpuStall(CpuStall::Pmc(PmcStall {
                        period,
                        stall_event: stalled.event,
                        stalled_cycles: stalled.value,
                        stall_permille: permille,
                        threshold_permille: threshold,
                        baseline: baseline.judged(),
                        episode_periods: st.stall_ep.periods,
                    }))));
                }
            } else {
                st.stall_ep.end();
            }
        }

        if let Some(instr) = d.instructions {
            let ipc_milli = ratio(instr, 1000, d.cycles);
            let baseline = st.ipc;
            st.ipc.fold(ipc_milli as f64);
            let drop = cfg.ipc_drop_permille;
            let min = cfg.min_baseline_samples.max(1);
            let judged = drop > 0 && baseline.samples >= min;
            // IPC < drop/1000 × baseline (strictly below).
            let limit = baseline.value * f64::from(drop) / 1000.0;
            if judged && (ipc_milli as f64) < limit {
                if st.ipc_ep.over() {
                    out.push(finding(Evidence::IpcDegradation(IpcDegradation {
                        period,
                        instructions: instr,
                        ipc_milli,
                        baseline: baseline.judged(),
                        ipc_drop_permille: drop,
                        episode_periods: st.ipc_ep.periods,
                    })));
                }
            } else if judged {
                st.ipc_ep.end();
            }
        }

        if let (Some(misses), Some(instr)) = (d.misses, d.instructions) {
            if instr > 0 {
                let mpki_milli = ratio(misses.value, 1_000_000, instr);
                let baseline = st.mpki;
                st.mpki.fold(mpki_milli as f64);
                let threshold = cfg.memory_pressure_mpki_milli;
                if threshold > 0 && mpki_milli >= u64::from(threshold) {
                    if st.mem_ep.over() {
                        out.push(finding(Evidence::MemoryPressure(MemoryPressure::Pmc(
                            PmcMisses {
                                period,
                                instructions: instr,
                                miss_event: misses.event,
                                cache_misses: misses.value,
                                mpki_milli,
                                threshold_mpki_milli: threshold,
                                baseline: baseline.judged(),
                                episode_periods: st.mem_ep.periods,
                            },
                        ))));
                    }
                } else {
                    st.mem_ep.end();
                }
            }
        }
    }

    fn on_psi(&mut self, res: Resource, t: PsiTotals, mono_ns: u64, out: &mut Vec<Finding>) {
        let (state, threshold) = match res {
            Resource::Memory => (&mut self.psi_mem, self.cfg.psi_memory_permille),
            Resource::Cpu => (&mut self.psi_cpu, self.cfg.psi_cpu_permille),
        };
        let Some((prev_ns, prev)) = state.prev.replace((mono_ns, t)) else {
            return;
        };
        let period_ns = mono_ns.saturating_sub(prev_ns);
        if period_ns == 0 {
            // Same instant twice: keep the older reading as the base.
            state.prev = Some((prev_ns, prev));
            return;
        }
        let full_back = matches!((t.full_us, prev.full_us), (Some(a), Some(b)) if a < b);
        if t.some_us < prev.some_us || full_back {
            self.drops.add("psi_not_monotonic", 1);
            state.episode.end();
            return;
        }
        let some_us = t.some_us - prev.some_us;
        let full_us = match (t.full_us, prev.full_us) {
            (Some(a), Some(b)) => Some(a - b),
            _ => None,
        };
        let period_us = period_ns / 1000;
        let some_permille = ratio(some_us, 1_000_000, period_ns);
        if threshold == 0 || some_permille < u64::from(threshold) {
            state.episode.end();
            return;
        }
        if !state.episode.over() {
            return;
        }
        let psi = Psi {
            period_us,
            some_stall_us: some_us,
            some_permille,
            full: full_us.map(|f| (f, ratio(f, 1_000_000, period_ns))),
            threshold_permille: threshold,
            episode_periods: state.episode.periods,
        };
        out.push(Finding {
            severity: Severity::Warning,
            outcome: Outcome::Degraded,
            evidence: match res {
                Resource::Memory => Evidence::MemoryPressure(MemoryPressure::Psi(psi)),
                Resource::Cpu => Evidence::CpuStall(CpuStall::Psi(psi)),
            },
            generation: self.generation,
            mono_ns,
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum Resource {
    Memory,
    Cpu,
}

/// `num × scale / den` in integers, 0 when `den` is 0.
fn ratio(num: u64, scale: u64, den: u64) -> u64 {
    if den == 0 {
        return 0;
    }
    (u128::from(num) * u128::from(scale) / u128::from(den)).min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::AnomalyType;
    use crate::wire::CompiledConfig;

    const MS: u64 = 1_000_000;
    const PERIOD: u64 = 1000 * MS;

    fn cfg() -> NodeConfig {
        CompiledConfig::default().node
    }

    fn classifier() -> NodeClassifier {
        NodeClassifier::new(&cfg(), 3)
    }

    /// A CPU's counters after `t` periods of a steady workload: 1 GHz,
    /// the given IPC (×1000), stall share and misses per 1000 instr.
    #[derive(Clone, Copy)]
    struct Load {
        ipc_milli: u64,
        stall_permille: u64,
        mpki_milli: u64,
    }

    const HEALTHY: Load = Load {
        ipc_milli: 2000,
        stall_permille: 100,
        mpki_milli: 1000,
    };

    /// Cumulative readings: `acc` carries the running totals.
    struct Cpu {
        cpu: u32,
        epoch: u64,
        r: PmcReading,
    }

    impl Cpu {
        fn new(cpu: u32) -> Cpu {
            Cpu {
                cpu,
                epoch: 1,
                r: PmcReading {
                    cpu,
                    epoch: 1,
                    time_enabled_ns: 0,
                    time_running_ns: 0,
                    cycles: 0,
                    instructions: Some(0),
                    stalled: Some(Counter {
                        event: "stalled-cycles-backend",
                        value: 0,
                    }),
                    misses: Some(Counter {
                        event: "LLC-load-misses",
                        value: 0,
                    }),
                },
            }
        }

        /// Advances one period of `enabled` ns during which the group ran
        /// `running` ns at 1 cycle/ns with `load`.
        fn step_mux(&mut self, load: Load, enabled: u64, running: u64) -> PmcReading {
            let cycles = running;
            let instr = cycles * load.ipc_milli / 1000;
            let r = &mut self.r;
            r.epoch = self.epoch;
            r.cpu = self.cpu;
            r.time_enabled_ns = r.time_enabled_ns.wrapping_add(enabled);
            r.time_running_ns = r.time_running_ns.wrapping_add(running);
            r.cycles = r.cycles.wrapping_add(cycles);
            r.instructions = r.instructions.map(|v| v.wrapping_add(instr));
            if let Some(s) = &mut r.stalled {
                s.value = s.value.wrapping_add(cycles * load.stall_permille / 1000);
            }
            if let Some(m) = &mut r.misses {
                m.value = m.value.wrapping_add(instr * load.mpki_milli / 1_000_000);
            }
            *r
        }

        fn step(&mut self, load: Load) -> PmcReading {
            self.step_mux(load, PERIOD, PERIOD)
        }
    }

    fn sample(t: u64, pmc: Vec<PmcReading>) -> NodeSample {
        NodeSample {
            mono_ns: t * PERIOD,
            pmc,
            psi_cpu: None,
            psi_memory: None,
        }
    }

    fn run(c: &mut NodeClassifier, s: &NodeSample) -> Vec<Finding> {
        let mut out = Vec::new();
        c.on_sample(s, &mut out);
        out
    }

    /// Primes and builds a full baseline of healthy periods.
    fn warmed(c: &mut NodeClassifier, cpu: &mut Cpu) -> u64 {
        let n = u64::from(cfg().min_baseline_samples) + 1;
        for t in 0..=n {
            assert!(run(c, &sample(t, vec![cpu.step(HEALTHY)])).is_empty());
        }
        n + 1
    }

    fn types(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.anomaly().as_str()).collect()
    }

    #[test]
    fn psi_parse_table() {
        let ok = "some avg10=0.00 avg60=0.00 avg300=0.00 total=10703\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=1492\n";
        assert_eq!(
            parse_psi(ok),
            Ok(PsiTotals {
                some_us: 10703,
                full_us: Some(1492)
            })
        );
        let cases: &[(&str, Result<PsiTotals, PsiParseError>)] = &[
            (
                "some avg10=1.00 avg60=0.00 avg300=0.00 total=5\n",
                Ok(PsiTotals {
                    some_us: 5,
                    full_us: None,
                }),
            ),
            (
                "some total=18446744073709551615",
                Ok(PsiTotals {
                    some_us: u64::MAX,
                    full_us: None,
                }),
            ),
            ("", Err(PsiParseError::MissingSome)),
            ("full avg10=0 total=1\n", Err(PsiParseError::MissingSome)),
            (
                "some avg10=0.00\n",
                Err(PsiParseError::MissingTotal("some avg10=0.00".into())),
            ),
            ("some total=-1\n", Err(PsiParseError::BadTotal("-1".into()))),
            (
                "some total=18446744073709551616\n",
                Err(PsiParseError::BadTotal("18446744073709551616".into())),
            ),
            ("some total=\n", Err(PsiParseError::BadTotal("".into()))),
            (
                "some total=1\nsome total=2\n",
                Err(PsiParseError::Duplicate("some")),
            ),
            (
                "partial total=1\n",
                Err(PsiParseError::UnknownLine("partial total=1".into())),
            ),
            (
                "\u{0}\u{ff}garbage",
                Err(PsiParseError::UnknownLine("\u{0}\u{ff}garbage".into())),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_psi(text), want, "{text:?}");
        }
    }

    #[test]
    fn healthy_cpu_is_quiet_and_first_reading_only_primes() {
        let mut c = classifier();
        let mut cpu = Cpu::new(0);
        for t in 0..200 {
            assert!(run(&mut c, &sample(t, vec![cpu.step(HEALTHY)])).is_empty());
        }
        assert_eq!(c.drops(), &DropCounts::default());
        // A first reading that already shows a stall is only a base.
        let mut c = classifier();
        let mut cpu = Cpu::new(1);
        let stalled = Load {
            stall_permille: 900,
            ..HEALTHY
        };
        assert!(run(&mut c, &sample(0, vec![cpu.step(stalled)])).is_empty());
        assert_eq!(
            types(&run(&mut c, &sample(1, vec![cpu.step(stalled)]))),
            ["kernel.node.cpu_stall"]
        );
    }

    #[test]
    fn cpu_stall_boundary_and_data() {
        // Threshold 500‰: 499 is quiet, 500 fires.
        for (permille, fires) in [(0, false), (499, false), (500, true), (1000, true)] {
            let mut c = classifier();
            let mut cpu = Cpu::new(2);
            let t0 = warmed(&mut c, &mut cpu);
            let load = Load {
                stall_permille: permille,
                ..HEALTHY
            };
            let out = run(&mut c, &sample(t0, vec![cpu.step(load)]));
            let stalls: Vec<_> = out
                .iter()
                .filter(|f| f.anomaly() == AnomalyType::CpuStall)
                .collect();
            assert_eq!(stalls.len(), usize::from(fires), "{permille}‰: {out:?}");
            if let Some(f) = stalls.first() {
                let d = &f.data();
                assert_eq!(d["cpu"], 2);
                assert_eq!(d["source"], "pmc");
                assert_eq!(d["cycles"], PERIOD);
                assert_eq!(d["stalled_cycles"], PERIOD * permille / 1000);
                assert_eq!(d["stall_permille"], permille);
                assert_eq!(d["threshold_permille"], 500);
                assert_eq!(d["baseline_stall_permille"], 100);
                assert_eq!(d["stall_event"], "stalled-cycles-backend");
                assert_eq!(d["scaled"], false);
                assert_eq!(d["episode_periods"], 1);
                assert_eq!(f.generation, 3);
                assert_eq!(f.mono_ns, t0 * PERIOD);
                assert_eq!(f.severity, Severity::Warning);
                assert_eq!(f.outcome, Outcome::Degraded);
            }
        }
    }

    #[test]
    fn ipc_degradation_needs_a_baseline_and_is_strictly_below() {
        // Baseline IPC 2.0, drop 500‰ → limit 1.0: 1.0 is not below it.
        for (ipc, fires) in [(1001, false), (1000, false), (999, true), (0, true)] {
            let mut c = classifier();
            let mut cpu = Cpu::new(0);
            let t0 = warmed(&mut c, &mut cpu);
            let load = Load {
                ipc_milli: ipc,
                mpki_milli: 0,
                ..HEALTHY
            };
            let out = run(&mut c, &sample(t0, vec![cpu.step(load)]));
            assert_eq!(
                types(&out) == ["kernel.node.ipc_degradation"],
                fires,
                "ipc {ipc}: {out:?}"
            );
            if fires {
                let d = &out[0].data();
                assert_eq!(d["ipc_milli"], ipc);
                assert_eq!(d["baseline_ipc_milli"], 2000);
                assert_eq!(d["ipc_drop_permille"], 500);
                assert_eq!(d["instructions"], PERIOD * ipc / 1000);
                assert_eq!(d["cycles"], PERIOD);
                assert_eq!(d["baseline_samples"], cfg().min_baseline_samples + 1);
            }
        }
        // With fewer than min_baseline_samples judged periods: never judged.
        let mut c = classifier();
        let mut cpu = Cpu::new(0);
        let min = u64::from(cfg().min_baseline_samples);
        for t in 0..min {
            assert!(run(&mut c, &sample(t, vec![cpu.step(HEALTHY)])).is_empty());
        }
        // Prime + (min - 1) judged periods so far: still short by one.
        let low = Load {
            ipc_milli: 100,
            mpki_milli: 0,
            ..HEALTHY
        };
        assert!(run(&mut c, &sample(min, vec![cpu.step(low)])).is_empty());
        // Now the baseline has `min` samples (the low one included).
        assert_eq!(
            types(&run(&mut c, &sample(min + 1, vec![cpu.step(low)]))),
            ["kernel.node.ipc_degradation"]
        );
    }

    #[test]
    fn pmc_memory_pressure_boundary() {
        // 20 MPKI threshold (20000 milli).
        for (mpki, fires) in [(19_999, false), (20_000, true), (50_000, true)] {
            let mut c = classifier();
            let mut cpu = Cpu::new(0);
            let t0 = warmed(&mut c, &mut cpu);
            let load = Load {
                mpki_milli: mpki,
                ..HEALTHY
            };
            let out = run(&mut c, &sample(t0, vec![cpu.step(load)]));
            assert_eq!(
                types(&out) == ["kernel.node.memory_pressure"],
                fires,
                "{mpki}: {out:?}"
            );
            if fires {
                let d = &out[0].data();
                assert_eq!(d["source"], "pmc");
                assert_eq!(d["mpki_milli"], mpki);
                assert_eq!(d["miss_event"], "LLC-load-misses");
                assert_eq!(d["threshold_mpki_milli"], 20_000);
                assert_eq!(d["baseline_mpki_milli"], 1000);
            }
        }
    }

    #[test]
    fn sustained_condition_emits_on_entry_then_every_n_periods_and_re_enters() {
        let mut c = classifier();
        let mut cpu = Cpu::new(0);
        let mut t = warmed(&mut c, &mut cpu);
        let stalled = Load {
            stall_permille: 800,
            ..HEALTHY
        };
        let mut emitted_at = Vec::new();
        for i in 0..(2 * REPEAT_EVERY_PERIODS + 1) {
            let out = run(&mut c, &sample(t, vec![cpu.step(stalled)]));
            t += 1;
            for f in out.iter().filter(|f| f.anomaly() == AnomalyType::CpuStall) {
                emitted_at.push((i, f.data()["episode_periods"].as_u64().unwrap()));
            }
        }
        let n = u64::from(REPEAT_EVERY_PERIODS);
        assert_eq!(
            emitted_at,
            [
                (0, 1),
                (REPEAT_EVERY_PERIODS, n + 1),
                (2 * REPEAT_EVERY_PERIODS, 2 * n + 1)
            ]
        );
        // One healthy period ends the episode; the next stall emits again.
        assert!(run(&mut c, &sample(t, vec![cpu.step(HEALTHY)])).is_empty());
        let out = run(&mut c, &sample(t + 1, vec![cpu.step(stalled)]));
        assert_eq!(types(&out), ["kernel.node.cpu_stall"]);
        assert_eq!(out[0].data()["episode_periods"], 1);
    }

    #[test]
    fn counter_wrap_gives_true_deltas() {
        let mut c = classifier();
        let mut cpu = Cpu::new(0);
        // Every counter (and the times) just below 2^64.
        let near = u64::MAX - PERIOD / 3;
        cpu.r.time_enabled_ns = near;
        cpu.r.time_running_ns = near;
        cpu.r.cycles = near;
        cpu.r.instructions = Some(near);
        cpu.r.stalled.as_mut().unwrap().value = near;
        cpu.r.misses.as_mut().unwrap().value = near;
        assert!(run(&mut c, &sample(0, vec![cpu.r])).is_empty());
        let stalled = Load {
            stall_permille: 700,
            ..HEALTHY
        };
        let r = cpu.step(stalled);
        assert!(r.cycles < near, "wrapped");
        let out = run(&mut c, &sample(1, vec![r]));
        assert_eq!(types(&out), ["kernel.node.cpu_stall"]);
        assert_eq!(out[0].data()["cycles"], PERIOD);
        assert_eq!(out[0].data()["stall_permille"], 700);
        assert_eq!(c.drops(), &DropCounts::default());
    }

    #[test]
    fn reset_counter_is_dropped_never_read_as_a_wrap() {
        let mut c = classifier();
        let mut cpu = Cpu::new(0);
        let t0 = warmed(&mut c, &mut cpu);
        // Counters restart from 0 within the same epoch: cycles go
        // "backwards", which modulo 2^64 is an impossible delta. The
        // reading becomes the base of the next period.
        cpu.step(HEALTHY);
        cpu.r.cycles = 5;
        assert!(run(&mut c, &sample(t0, vec![cpu.r])).is_empty());
        assert_eq!(c.drops().get("counter_inconsistent"), 1);
        assert!(run(&mut c, &sample(t0 + 1, vec![cpu.step(HEALTHY)])).is_empty());
        assert_eq!(c.drops().get("counter_inconsistent"), 1, "continues from 5");
        // More stalled cycles than cycles, or an absurd IPC: dropped too.
        cpu.step(HEALTHY);
        let s = cpu.r.stalled.as_mut().unwrap();
        s.value = s.value.wrapping_add(10 * PERIOD);
        assert!(run(&mut c, &sample(t0 + 2, vec![cpu.r])).is_empty());
        cpu.step(HEALTHY);
        cpu.r.instructions = cpu.r.instructions.map(|v| v + 100 * PERIOD);
        assert!(run(&mut c, &sample(t0 + 3, vec![cpu.r])).is_empty());
        assert_eq!(c.drops().get("counter_inconsistent"), 3);
        // Times: running cannot exceed enabled.
        cpu.step(HEALTHY);
        cpu.r.time_running_ns += 1;
        assert!(run(&mut c, &sample(t0 + 4, vec![cpu.r])).is_empty());
        assert_eq!(c.drops().get("counter_inconsistent"), 4);
        // A stopped group: enabled time did not move.
        assert!(run(&mut c, &sample(t0 + 5, vec![cpu.r])).is_empty());
        assert_eq!(c.drops().get("counter_stopped"), 1);
    }

    #[test]
    fn multiplexed_group_is_scaled_or_dropped() {
        let stalled = Load {
            stall_permille: 600,
            ..HEALTHY
        };
        // Ran half of the period: values scaled ×2, ratios unchanged.
        let mut c = classifier();
        let mut cpu = Cpu::new(0);
        let t0 = warmed(&mut c, &mut cpu);
        let out = run(
            &mut c,
            &sample(t0, vec![cpu.step_mux(stalled, PERIOD, PERIOD / 2)]),
        );
        assert_eq!(types(&out), ["kernel.node.cpu_stall"]);
        let d = &out[0].data();
        assert_eq!(d["scaled"], true);
        assert_eq!(d["running_permille"], 500);
        assert_eq!(d["cycles"], PERIOD);
        assert_eq!(d["stalled_cycles"], PERIOD * 600 / 1000);
        assert_eq!(d["stall_permille"], 600);
        // Exactly the minimum share is still scaled; below it is dropped.
        let min = PERIOD * MIN_RUNNING_PERMILLE / 1000;
        let out = run(
            &mut c,
            &sample(t0 + 1, vec![cpu.step_mux(stalled, PERIOD, min)]),
        );
        assert_eq!(c.drops().get("multiplexed"), 0, "{out:?}");
        let out = run(
            &mut c,
            &sample(t0 + 2, vec![cpu.step_mux(stalled, PERIOD, min - 1)]),
        );
        assert!(out.is_empty());
        assert_eq!(c.drops().get("multiplexed"), 1);
        // Never scheduled at all.
        let out = run(
            &mut c,
            &sample(t0 + 3, vec![cpu.step_mux(stalled, PERIOD, 0)]),
        );
        assert!(out.is_empty());
        assert_eq!(c.drops().get("multiplexed"), 2);
    }

    #[test]
    fn idle_cpu_is_not_judged_and_ends_the_episode() {
        let mut c = classifier();
        let mut cpu = Cpu::new(0);
        let t0 = warmed(&mut c, &mut cpu);
        let stalled = Load {
            stall_permille: 900,
            ipc_milli: 100,
            mpki_milli: 90_000,
        };
        assert_eq!(run(&mut c, &sample(t0, vec![cpu.step(stalled)])).len(), 3);
        // Ran 0.1 cycle/ns minus one cycle: idle, whatever the ratios.
        let idle_running = (PERIOD as f64 * MIN_CYCLES_PER_NS) as u64 - 1;
        let mut r = cpu.step_mux(stalled, PERIOD, idle_running);
        // Counted the whole period (no multiplexing), just few cycles.
        r.time_running_ns = r.time_enabled_ns;
        cpu.r = r;
        assert!(run(&mut c, &sample(t0 + 1, vec![r])).is_empty());
        assert_eq!(c.drops(), &DropCounts::default());
        // The episode ended: the next stalled period emits again.
        assert_eq!(
            run(&mut c, &sample(t0 + 2, vec![cpu.step(stalled)])).len(),
            3
        );
    }

    #[test]
    fn cpu_going_offline_and_back_primes_again() {
        let mut c = classifier();
        let mut a = Cpu::new(0);
        let mut b = Cpu::new(1);
        let stalled = Load {
            stall_permille: 900,
            ..HEALTHY
        };
        for t in 0..3 {
            assert!(run(&mut c, &sample(t, vec![a.step(HEALTHY), b.step(HEALTHY)])).is_empty());
        }
        // CPU 1 goes offline: only CPU 0 is in the sample.
        assert!(run(&mut c, &sample(3, vec![a.step(HEALTHY)])).is_empty());
        // While offline its group did not count; when it is back the
        // sampler reopens it (new epoch, counters from zero). Its first
        // reading only primes, even though it shows a stall.
        let mut b2 = Cpu::new(1);
        b2.epoch = 2;
        let out = run(&mut c, &sample(4, vec![a.step(HEALTHY), b2.step(stalled)]));
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(c.drops(), &DropCounts::default());
        let out = run(&mut c, &sample(5, vec![a.step(HEALTHY), b2.step(stalled)]));
        assert_eq!(types(&out), ["kernel.node.cpu_stall"]);
        assert_eq!(out[0].data()["cpu"], 1);
        // Same epoch coming back (a group that survived offline): the gap
        // is never judged, because the absent CPU forgot its reading.
        let out = run(&mut c, &sample(6, vec![a.step(HEALTHY)]));
        assert!(out.is_empty());
        b2.step(HEALTHY);
        let out = run(&mut c, &sample(7, vec![a.step(HEALTHY), b2.step(HEALTHY)]));
        assert!(out.is_empty());
        assert_eq!(c.drops(), &DropCounts::default());
    }

    #[test]
    fn cpus_are_judged_independently() {
        let mut c = classifier();
        let mut a = Cpu::new(0);
        let mut b = Cpu::new(7);
        let stalled = Load {
            stall_permille: 900,
            ..HEALTHY
        };
        run(&mut c, &sample(0, vec![a.step(HEALTHY), b.step(HEALTHY)]));
        let out = run(&mut c, &sample(1, vec![a.step(HEALTHY), b.step(stalled)]));
        assert_eq!(types(&out), ["kernel.node.cpu_stall"]);
        assert_eq!(out[0].data()["cpu"], 7);
    }

    #[test]
    fn missing_events_skip_their_rules_and_frontend_stall_is_used() {
        let mut c = classifier();
        let mut cpu = Cpu::new(0);
        cpu.r.instructions = None;
        cpu.r.misses = None;
        cpu.r.stalled = Some(Counter {
            event: "stalled-cycles-frontend",
            value: 0,
        });
        let load = Load {
            stall_permille: 700,
            ipc_milli: 10,
            mpki_milli: 99_000,
        };
        let mut all = Vec::new();
        for t in 0..20 {
            all.extend(run(&mut c, &sample(t, vec![cpu.step(load)])));
        }
        assert_eq!(types(&all), ["kernel.node.cpu_stall"]);
        assert_eq!(all[0].data()["stall_event"], "stalled-cycles-frontend");
    }

    fn psi(t: u64, some_us: u64, full_us: u64) -> NodeSample {
        NodeSample {
            mono_ns: t * PERIOD,
            pmc: Vec::new(),
            psi_cpu: None,
            psi_memory: Some(PsiTotals {
                some_us,
                full_us: Some(full_us),
            }),
        }
    }

    #[test]
    fn psi_memory_boundary_and_data() {
        // 100‰ of a 1 s period = 100 000 µs.
        for (stall_us, fires) in [
            (0, false),
            (99_999, false),
            (100_000, true),
            (1_000_000, true),
        ] {
            let mut c = classifier();
            assert!(run(&mut c, &psi(10, 5_000, 100)).is_empty());
            let out = run(&mut c, &psi(11, 5_000 + stall_us, 100 + stall_us / 2));
            assert_eq!(!out.is_empty(), fires, "{stall_us}: {out:?}");
            if fires {
                let f = &out[0];
                assert_eq!(f.anomaly(), AnomalyType::MemoryPressure);
                assert_eq!(f.mono_ns, 11 * PERIOD);
                let d = &f.data();
                assert_eq!(d["cpu"], NODE_WIDE_CPU);
                assert_eq!(d["source"], "psi");
                assert_eq!(d["resource"], "memory");
                assert_eq!(d["period_us"], 1_000_000);
                assert_eq!(d["some_stall_us"], stall_us);
                assert_eq!(d["some_permille"], stall_us / 1000);
                assert_eq!(d["full_stall_us"], stall_us / 2);
                assert_eq!(d["full_permille"], stall_us / 2000);
                assert_eq!(d["threshold_permille"], 100);
                assert_eq!(d["episode_periods"], 1);
            }
        }
    }

    #[test]
    fn psi_period_is_the_time_between_samples() {
        let mut c = classifier();
        let mut s = psi(0, 0, 0);
        s.mono_ns = 0;
        run(&mut c, &s);
        // 60 ms of stall in a 500 ms period = 120‰ ≥ 100‰.
        s.mono_ns = 500 * MS;
        s.psi_memory = Some(PsiTotals {
            some_us: 60_000,
            full_us: None,
        });
        let out = run(&mut c, &s);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data()["some_permille"], 120);
        assert_eq!(out[0].data()["period_us"], 500_000);
        assert!(out[0].data().get("full_stall_us").is_none());
        // The same instant again is no period at all.
        let out = run(&mut c, &s);
        assert!(out.is_empty());
        assert_eq!(c.drops(), &DropCounts::default());
    }

    #[test]
    fn psi_going_backwards_is_dropped_and_re_primes() {
        let mut c = classifier();
        run(&mut c, &psi(0, 1_000_000, 10));
        assert!(run(&mut c, &psi(1, 999_999, 10)).is_empty());
        assert_eq!(c.drops().get("psi_not_monotonic"), 1);
        assert!(run(&mut c, &psi(2, 1_000_000, 9)).is_empty());
        assert_eq!(c.drops().get("psi_not_monotonic"), 2);
        // The last reading is the new base.
        let out = run(&mut c, &psi(3, 1_000_000 + 200_000, 9));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data()["some_stall_us"], 200_000);
    }

    #[test]
    fn psi_cpu_feeds_cpu_stall_and_sustained_psi_is_rate_limited() {
        let mut c = classifier();
        let mut total = 0;
        let mut emitted = Vec::new();
        for t in 0..=(u64::from(REPEAT_EVERY_PERIODS) + 1) {
            let s = NodeSample {
                mono_ns: t * PERIOD,
                pmc: Vec::new(),
                psi_cpu: Some(PsiTotals {
                    some_us: total,
                    full_us: Some(0),
                }),
                psi_memory: None,
            };
            total += 960_000;
            for f in run(&mut c, &s) {
                assert_eq!(f.anomaly(), AnomalyType::CpuStall);
                assert_eq!(f.data()["source"], "psi");
                assert_eq!(f.data()["resource"], "cpu");
                assert_eq!(f.data()["cpu"], -1);
                assert_eq!(f.data()["some_permille"], 960);
                assert_eq!(f.data()["threshold_permille"], 950);
                emitted.push(t);
            }
        }
        assert_eq!(emitted, [1, 1 + u64::from(REPEAT_EVERY_PERIODS)]);
    }

    #[test]
    fn zero_threshold_and_disabled_observer_are_quiet() {
        let mut off = cfg();
        off.psi_memory_permille = 0;
        off.cpu_stall_permille = 0;
        let mut c = NodeClassifier::new(&off, 1);
        let mut cpu = Cpu::new(0);
        let stalled = Load {
            stall_permille: 1000,
            ..HEALTHY
        };
        for t in 0..5 {
            let mut s = psi(t, t * 900_000, 0);
            s.pmc = vec![cpu.step(stalled)];
            assert!(run(&mut c, &s).is_empty());
        }
        // Disabled: nothing, and re-enabling primes afresh.
        let mut c = classifier();
        run(&mut c, &psi(0, 0, 0));
        let mut d = cfg();
        d.enabled = false;
        c.set_config(&d, 2);
        assert!(run(&mut c, &psi(1, 900_000, 0)).is_empty());
        c.set_config(&cfg(), 3);
        assert!(run(&mut c, &psi(2, 1_800_000, 0)).is_empty(), "primes");
        let out = run(&mut c, &psi(3, 2_700_000, 0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].generation, 3);
    }

    #[test]
    fn config_change_applies_new_thresholds_and_keeps_state() {
        let mut c = classifier();
        run(&mut c, &psi(0, 0, 0));
        assert!(run(&mut c, &psi(1, 50_000, 0)).is_empty());
        let mut low = cfg();
        low.psi_memory_permille = 1;
        c.set_config(&low, 9);
        let out = run(&mut c, &psi(2, 100_000, 0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data()["threshold_permille"], 1);
        assert_eq!(out[0].generation, 9);
    }
}
