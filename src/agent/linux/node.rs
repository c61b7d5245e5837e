//! The node sampler: per-CPU hardware counters and PSI, read once per
//! `sample_period_ms` on a thread of its own, judged by
//! [`crate::agent::classify::node`].
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
//! # Counters
//!
//! One group per online CPU (`pid = -1`, user + kernel), opened in this
//! order, the first event leading:
//! 1. `cycles` (`PERF_COUNT_HW_CPU_CYCLES`) — required: without it there
//!    are no PMCs.
//! 2. `instructions` (`PERF_COUNT_HW_INSTRUCTIONS`).
//! 3. `stalled-cycles-backend`, else `stalled-cycles-frontend`
//!    (`PERF_COUNT_HW_STALLED_CYCLES_*`). Which generic events the kernel
//!    maps depends on the CPU: AMD Zen 1 has both, Zen 2 and later only
//!    frontend; Intel maps them only for Nehalem to Ivy Bridge, so most
//!    Intel servers have neither and `cpu_stall` falls back to CPU PSI.
//! 4. `LLC-load-misses` (`PERF_TYPE_HW_CACHE`, LL / read / miss), else the
//!    generic `cache-misses` (`PERF_COUNT_HW_CACHE_MISSES`). Intel maps the
//!    former (offcore response); AMD Zen does not (its LL entries are 0, so
//!    the open fails) and gets `cache-misses` (L2 misses there).
//!
//! Optional members that fail to open (not mapped: ENOENT; group too large
//! for the PMU: EINVAL) are left out and named in the status reason. The
//! set is decided on the first online CPU and used for all. Values are
//! read with `PERF_FORMAT_GROUP | TOTAL_TIME_ENABLED | TOTAL_TIME_RUNNING`;
//! scaling and drops are the classifier's.
//!
//! CPU hotplug: `/sys/devices/system/cpu/online` is read each period; a CPU
//! that went away has its group closed, one that came (back) gets a new
//! group with a new epoch, so deltas never span the gap. A group whose read
//! fails is closed, counted as `read_failed`, and reopened next period.
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

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use crate::agent::classify::node::{
    parse_psi, Counter, NodeClassifier, NodeSample, PmcReading, PsiTotals,
};
use crate::agent::classify::{DropCounts, Finding};
use crate::agent::metrics::Metrics;
use crate::agent::pipeline::{monotonic_ns, send_findings, Shared};
use crate::wire::CompiledConfig;

const OBSERVER: &str = "node";
const PSI_MEMORY: &str = "/proc/pressure/memory";
const PSI_CPU: &str = "/proc/pressure/cpu";
const CPU_ONLINE: &str = "/sys/devices/system/cpu/online";
/// Longest sleep between checks of the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Shortest period the sampler runs at, whatever the config says.
const MIN_PERIOD_MS: u32 = 10;
/// Periods averaged for the one `node sampler cost` log line.
const COST_REPORT_PERIODS: u32 = 10;

// perf_event_open(2) ABI (include/uapi/linux/perf_event.h).
const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_TYPE_HW_CACHE: u32 = 3;
const PERF_COUNT_HW_CPU_CYCLES: u64 = 0;
const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
const PERF_COUNT_HW_CACHE_MISSES: u64 = 3;
const PERF_COUNT_HW_STALLED_CYCLES_FRONTEND: u64 = 7;
const PERF_COUNT_HW_STALLED_CYCLES_BACKEND: u64 = 8;
const PERF_COUNT_HW_CACHE_LL: u64 = 2;
const PERF_COUNT_HW_CACHE_OP_READ: u64 = 0;
const PERF_COUNT_HW_CACHE_RESULT_MISS: u64 = 1;
const PERF_FORMAT_TOTAL_TIME_ENABLED: u64 = 1 << 0;
const PERF_FORMAT_TOTAL_TIME_RUNNING: u64 = 1 << 1;
const PERF_FORMAT_GROUP: u64 = 1 << 3;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER5` (112 bytes); the
/// kernel accepts any published size and zero-extends.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// The bitfield word (disabled, inherit, pinned, exclude_*, …): all 0
    /// = enabled now, counting user and kernel.
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
}

const _: () = assert!(size_of::<PerfEventAttr>() == 112);

/// One generic perf event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    /// perf's name, carried into `data` (`stall_event`, `miss_event`).
    pub name: &'static str,
    pub kind: u32,
    pub config: u64,
}

/// The events a group is built from: a required leader, then each slot's
/// candidates in order of preference.
#[derive(Debug, Clone, Copy)]
pub struct EventSet {
    pub cycles: EventSpec,
    pub instructions: &'static [EventSpec],
    pub stall: &'static [EventSpec],
    pub miss: &'static [EventSpec],
}

const fn hw(name: &'static str, config: u64) -> EventSpec {
    EventSpec {
        name,
        kind: PERF_TYPE_HARDWARE,
        config,
    }
}

/// The hardware events this observer uses.
pub const PMC_EVENTS: EventSet = EventSet {
    cycles: hw("cycles", PERF_COUNT_HW_CPU_CYCLES),
    instructions: &[hw("instructions", PERF_COUNT_HW_INSTRUCTIONS)],
    stall: &[
        hw(
            "stalled-cycles-backend",
            PERF_COUNT_HW_STALLED_CYCLES_BACKEND,
        ),
        hw(
            "stalled-cycles-frontend",
            PERF_COUNT_HW_STALLED_CYCLES_FRONTEND,
        ),
    ],
    miss: &[
        EventSpec {
            name: "LLC-load-misses",
            kind: PERF_TYPE_HW_CACHE,
            config: PERF_COUNT_HW_CACHE_LL
                | (PERF_COUNT_HW_CACHE_OP_READ << 8)
                | (PERF_COUNT_HW_CACHE_RESULT_MISS << 16),
        },
        hw("cache-misses", PERF_COUNT_HW_CACHE_MISSES),
    ],
};

/// Software events in the same shape, standing in for PMCs where a test
/// or a cost measurement needs a group that opens on any machine.
pub const SOFTWARE_STAND_IN: EventSet = {
    const fn sw(name: &'static str, config: u64) -> EventSpec {
        EventSpec {
            name,
            kind: PERF_TYPE_SOFTWARE,
            config,
        }
    }
    EventSet {
        cycles: sw("cpu-clock", 0),
        instructions: &[sw("task-clock", 1)],
        stall: &[sw("page-faults", 2)],
        miss: &[sw("context-switches", 3)],
    }
};

/// A failed `perf_event_open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError {
    pub event: &'static str,
    pub cpu: u32,
    pub errno: i32,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "perf_event_open({}, cpu {}) failed: {}",
            self.event,
            self.cpu,
            errno_text(self.errno)
        )
    }
}

/// `ENOENT (No such file or directory)`.
pub fn errno_text(errno: i32) -> String {
    let name = match errno {
        libc::ENOENT => "ENOENT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EINVAL => "EINVAL",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ENODEV => "ENODEV",
        libc::EBUSY => "EBUSY",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::E2BIG => "E2BIG",
        libc::ENOSYS => "ENOSYS",
        _ => return format!("errno {errno}"),
    };
    // io::Error's text is "No such file or directory (os error 2)".
    let text = io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or("");
    format!("{name} ({text})")
}

fn perf_event_open(spec: &EventSpec, cpu: u32, group: Option<&OwnedFd>) -> Result<OwnedFd, i32> {
    let attr = PerfEventAttr {
        kind: spec.kind,
        size: size_of::<PerfEventAttr>() as u32,
        config: spec.config,
        read_format: PERF_FORMAT_GROUP
            | PERF_FORMAT_TOTAL_TIME_ENABLED
            | PERF_FORMAT_TOTAL_TIME_RUNNING,
        ..PerfEventAttr::default()
    };
    let group_fd = group.map_or(-1, |g| g.as_raw_fd());
    // SAFETY: the attr is a valid, fully initialised perf_event_attr of the
    // size it declares; pid -1 with a cpu counts everything on that CPU.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            group_fd as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Which members a group has, decided on the first CPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub cycles: EventSpec,
    pub instructions: Option<EventSpec>,
    pub stall: Option<EventSpec>,
    pub miss: Option<EventSpec>,
    /// Candidates that failed, with the errno, for the status reason.
    pub missing: Vec<OpenError>,
}

impl Layout {
    fn members(&self) -> impl Iterator<Item = &EventSpec> {
        std::iter::once(&self.cycles)
            .chain(self.instructions.as_ref())
            .chain(self.stall.as_ref())
            .chain(self.miss.as_ref())
    }

    fn len(&self) -> usize {
        self.members().count()
    }
}

/// One CPU's open group.
struct Group {
    cpu: u32,
    epoch: u64,
    /// Leader first; members keep the group alive.
    fds: Vec<OwnedFd>,
}

impl Group {
    /// Opens `layout` on `cpu`; every member must open.
    fn open(layout: &Layout, cpu: u32, epoch: u64) -> Result<Group, OpenError> {
        let mut fds: Vec<OwnedFd> = Vec::with_capacity(layout.len());
        for spec in layout.members() {
            let fd = perf_event_open(spec, cpu, fds.first()).map_err(|errno| OpenError {
                event: spec.name,
                cpu,
                errno,
            })?;
            fds.push(fd);
        }
        Ok(Group { cpu, epoch, fds })
    }

    /// One `read(2)` of the whole group.
    fn read(&self, layout: &Layout) -> io::Result<PmcReading> {
        let n = self.fds.len();
        let mut buf = [0u64; 3 + 4];
        let want = (3 + n) * 8;
        // SAFETY: reads at most `want` ≤ size_of_val(buf) bytes into buf.
        let got = unsafe {
            libc::read(
                self.fds[0].as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                want,
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        if got as usize != want || buf[0] != n as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("group read returned {got} bytes, nr {}", buf[0]),
            ));
        }
        let mut values = buf[3..3 + n].iter().copied();
        let cycles = values.next().unwrap_or(0);
        let instructions = layout.instructions.and_then(|_| values.next());
        let stalled = layout.stall.and_then(|s| {
            values.next().map(|value| Counter {
                event: s.name,
                value,
            })
        });
        let misses = layout.miss.and_then(|s| {
            values.next().map(|value| Counter {
                event: s.name,
                value,
            })
        });
        Ok(PmcReading {
            cpu: self.cpu,
            epoch: self.epoch,
            time_enabled_ns: buf[1],
            time_running_ns: buf[2],
            cycles,
            instructions,
            stalled,
            misses,
        })
    }
}

/// Opens the leader on `cpu`, then each slot's first candidate that opens.
pub fn probe_layout(events: &EventSet, cpu: u32) -> Result<Layout, OpenError> {
    let leader = perf_event_open(&events.cycles, cpu, None).map_err(|errno| OpenError {
        event: events.cycles.name,
        cpu,
        errno,
    })?;
    let mut fds = vec![leader];
    let mut missing = Vec::new();
    // Each slot takes its first candidate that opens; a slot left empty
    // records why each candidate failed.
    let mut pick = |candidates: &'static [EventSpec]| -> Option<EventSpec> {
        let mut errors = Vec::new();
        for spec in candidates {
            match perf_event_open(spec, cpu, fds.first()) {
                Ok(fd) => {
                    // Kept open so later members are validated against the
                    // whole group, as the PMU will schedule it.
                    fds.push(fd);
                    return Some(*spec);
                }
                Err(errno) => errors.push(OpenError {
                    event: spec.name,
                    cpu,
                    errno,
                }),
            }
        }
        missing.extend(errors);
        None
    };
    let instructions = pick(events.instructions);
    let stall = pick(events.stall);
    let miss = pick(events.miss);
    let layout = Layout {
        cycles: events.cycles,
        instructions,
        stall,
        miss,
        missing,
    };
    Ok(layout)
}

/// Parses a kernel CPU list (`0-3,5,7-8`).
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// A small file re-read from offset 0 each period without reopening.
struct Reread {
    path: &'static str,
    file: File,
    buf: Vec<u8>,
}

impl Reread {
    fn open(path: &'static str) -> io::Result<Reread> {
        Ok(Reread {
            path,
            file: File::open(path)?,
            buf: vec![0; 4096],
        })
    }

    fn read(&mut self) -> io::Result<&str> {
        let n = self.file.read_at(&mut self.buf, 0)?;
        std::str::from_utf8(&self.buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// PMC groups over the online CPUs.
struct Pmc {
    layout: Layout,
    groups: BTreeMap<u32, Group>,
    /// CPUs whose group failed to open, with the error; retried when they
    /// come back online.
    failed: BTreeMap<u32, OpenError>,
    online: Option<Reread>,
    next_epoch: u64,
}

impl Pmc {
    /// Follows CPU hotplug; false when the online list could not be read
    /// (the groups are then kept as they are).
    fn refresh(&mut self) -> bool {
        let Some(online) = self.online.as_mut() else {
            return true;
        };
        let Some(cpus) = online.read().ok().and_then(parse_cpu_list) else {
            return false;
        };
        self.groups.retain(|cpu, _| cpus.contains(cpu));
        self.failed.retain(|cpu, _| cpus.contains(cpu));
        for cpu in cpus {
            if self.groups.contains_key(&cpu) || self.failed.contains_key(&cpu) {
                continue;
            }
            self.next_epoch += 1;
            match Group::open(&self.layout, cpu, self.next_epoch) {
                Ok(g) => {
                    self.groups.insert(cpu, g);
                }
                Err(e) => {
                    tracing::warn!(observer = OBSERVER, "cpu {cpu} not counted: {e}");
                    self.failed.insert(cpu, e);
                }
            }
        }
        true
    }

    fn read(&mut self, out: &mut Vec<PmcReading>, metrics: &Metrics) {
        let mut broken = Vec::new();
        for (cpu, g) in &self.groups {
            match g.read(&self.layout) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::debug!(observer = OBSERVER, "cpu {cpu}: group read failed: {e}");
                    metrics.correlation_drop(OBSERVER, "read_failed", 1);
                    broken.push(*cpu);
                }
            }
        }
        for cpu in broken {
            self.groups.remove(&cpu);
        }
    }
}

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

fn open_pmc(events: &EventSet) -> Result<Pmc, String> {
    let mut online = Reread::open(CPU_ONLINE).map_err(|e| format!("{CPU_ONLINE}: {e}"))?;
    let cpus = online
        .read()
        .ok()
        .and_then(parse_cpu_list)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| format!("{CPU_ONLINE}: unreadable CPU list"))?;
    let layout = probe_layout(events, cpus[0]).map_err(|e| e.to_string())?;
    let mut pmc = Pmc {
        layout,
        groups: BTreeMap::new(),
        failed: BTreeMap::new(),
        online: Some(online),
        next_epoch: 0,
    };
    pmc.refresh();
    if pmc.groups.is_empty() {
        let first = pmc.failed.values().next().map(|e| e.to_string());
        return Err(first.unwrap_or_else(|| "no online CPU could be counted".into()));
    }
    Ok(pmc)
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
fn status(s: &Sources) -> (&'static str, String) {
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
        return ("active", String::new());
    }
    let judged_any = stall_pmc || psi_cpu || ipc_pmc || miss_pmc || psi_mem;
    let state = if judged_any {
        "degraded"
    } else {
        "unavailable"
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
    drops_prev: DropCounts,
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
        let now = self.classifier.drops();
        for (reason, n) in &now.0 {
            let before = self.drops_prev.get(reason);
            if *n > before {
                metrics.correlation_drop(OBSERVER, reason, n - before);
            }
        }
        self.drops_prev = now.clone();
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
    match state {
        "active" => tracing::info!(observer = OBSERVER, "observer active (pmc and psi)"),
        "degraded" => tracing::warn!(observer = OBSERVER, "observer degraded: {reason}"),
        _ => tracing::warn!(observer = OBSERVER, "observer unavailable: {reason}"),
    }
    shared.set_status(OBSERVER, state, reason);
    let generation = shared.applied().map_or(1, |a| a.generation);
    let sampler = Sampler {
        sources,
        classifier: NodeClassifier::new(&initial.node, generation),
        generation,
        drops_prev: DropCounts::default(),
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
            s.classifier.set_config(&cfg, a.generation);
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
                let groups = s.sources.pmc.as_ref().map_or(0, |p| p.groups.len());
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

    #[test]
    fn cpu_list_table() {
        let cases: &[(&str, Option<Vec<u32>>)] = &[
            ("0-1\n", Some(vec![0, 1])),
            ("0", Some(vec![0])),
            ("0,2-3,7\n", Some(vec![0, 2, 3, 7])),
            ("", Some(vec![])),
            ("3-1", None),
            ("a-b", None),
            ("0-", None),
            ("-1", None),
            ("0-4294967295", None),
            ("1,,2", Some(vec![1, 2])),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_cpu_list(text), want, "{text:?}");
        }
    }

    #[test]
    fn errno_text_names_the_errno() {
        assert_eq!(
            errno_text(libc::ENOENT),
            "ENOENT (No such file or directory)"
        );
        assert_eq!(errno_text(9999), "errno 9999");
        let e = OpenError {
            event: "cycles",
            cpu: 0,
            errno: libc::ENOENT,
        };
        assert_eq!(
            e.to_string(),
            "perf_event_open(cycles, cpu 0) failed: ENOENT (No such file or directory)"
        );
    }

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
        Ok(Pmc {
            layout,
            groups: BTreeMap::new(),
            failed: BTreeMap::new(),
            online: None,
            next_epoch: 0,
        })
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
                "degraded",
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
        assert_eq!(state, "unavailable");
        assert!(reason.ends_with("rules: cpu_stall not judged, ipc_degradation not judged, memory_pressure not judged"), "{reason}");
        // Everything.
        let s = Sources {
            pmc: pmc(layout_with(true, true, true)),
            psi_memory: psi(),
            psi_cpu: no("not needed"),
        };
        assert_eq!(status(&s), ("active", String::new()));
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
                "degraded",
                "pmc perf_event_open(stalled-cycles-frontend, cpu 0) failed: ENOENT (No such file or directory); rules: cpu_stall from psi, ipc_degradation from pmc, memory_pressure from pmc and psi".into()
            )
        );
    }

    /// Needs root (per-CPU events); runs where the kernel allows it.
    fn can_open_per_cpu() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn software_stand_in_group_reads_and_advances() {
        if !can_open_per_cpu() {
            eprintln!("skipping: per-CPU perf events need root");
            return;
        }
        let layout = probe_layout(&SOFTWARE_STAND_IN, 0).expect("software events open");
        assert_eq!(layout.len(), 4, "{layout:?}");
        assert!(layout.missing.is_empty());
        let g = Group::open(&layout, 0, 7).unwrap();
        let a = g.read(&layout).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let b = g.read(&layout).unwrap();
        assert_eq!((a.cpu, a.epoch), (0, 7));
        assert!(b.time_enabled_ns > a.time_enabled_ns);
        assert!(b.time_running_ns >= a.time_running_ns);
        assert!(b.cycles >= a.cycles, "cpu-clock in the leader slot");
        assert_eq!(b.stalled.unwrap().event, "page-faults");
        assert_eq!(b.misses.unwrap().event, "context-switches");
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
            drops_prev: DropCounts::default(),
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
        let groups = sampler.sources.pmc.as_ref().map_or(0, |p| p.groups.len());
        eprintln!(
            "per period: {:.2} us CPU, {:.2} us wall ({groups} CPU groups of 4, cpu list + 2 PSI files)",
            cpu as f64 / n as f64 / 1000.0,
            wall as f64 / n as f64 / 1000.0
        );
    }
}
