//! Hardware counters for the node sampler: the `perf_event_open(2)` ABI,
//! one counter group per online CPU, and CPU hotplug.
//!
//! Owns: which events a group has (probed once), opening, reading and
//! closing the groups. Must not: judge the readings (the classifier does)
//! or decide the observer status ([`super`] does, from what opened).
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

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use crate::agent::metrics::Metrics;
use crate::agent::observers::node::{Counter, PmcReading};

use super::OBSERVER;

const CPU_ONLINE: &str = "/sys/devices/system/cpu/online";

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
pub(super) struct Reread {
    pub(super) path: &'static str,
    file: File,
    buf: Vec<u8>,
}

impl Reread {
    pub(super) fn open(path: &'static str) -> io::Result<Reread> {
        Ok(Reread {
            path,
            file: File::open(path)?,
            buf: vec![0; 4096],
        })
    }

    pub(super) fn read(&mut self) -> io::Result<&str> {
        let n = self.file.read_at(&mut self.buf, 0)?;
        std::str::from_utf8(&self.buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// PMC groups over the online CPUs.
pub(super) struct Pmc {
    pub(super) layout: Layout,
    groups: BTreeMap<u32, Group>,
    /// CPUs whose group failed to open, with the error; retried when they
    /// come back online.
    pub(super) failed: BTreeMap<u32, OpenError>,
    online: Option<Reread>,
    next_epoch: u64,
}

impl Pmc {
    /// CPUs with an open group.
    pub(super) fn counted_cpus(&self) -> usize {
        self.groups.len()
    }

    /// A set with `layout` and no groups yet, as a status test needs it.
    #[cfg(test)]
    pub(super) fn empty(layout: Layout) -> Pmc {
        Pmc {
            layout,
            groups: BTreeMap::new(),
            failed: BTreeMap::new(),
            online: None,
            next_epoch: 0,
        }
    }

    /// Follows CPU hotplug; false when the online list could not be read
    /// (the groups are then kept as they are).
    pub(super) fn refresh(&mut self) -> bool {
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

    pub(super) fn read(&mut self, out: &mut Vec<PmcReading>, metrics: &Metrics) {
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

pub(super) fn open_pmc(events: &EventSet) -> Result<Pmc, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
