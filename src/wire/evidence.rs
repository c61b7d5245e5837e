//! Typed evidence: the facts of one anomaly, one struct per type, as a
//! classifier states them and attribution completes them.
//!
//! This is the typed form of the `data` table in [`super::anomaly`]. It owns
//! how each fact is named and shown: [`Evidence::visit`] yields the `data`
//! fields (name and typed [`Field`]) and [`Evidence::message`] the
//! `error.message`. Both run on the sink side (an occurrence's JSON text,
//! its OTLP record), never where facts are classified: building evidence
//! copies numbers, fixed arrays and `&'static str`s only, so a classifier
//! never allocates for it. It must not read clocks, do I/O or know any agent
//! type (it is `wire`: serde alone).

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::anomaly::AnomalyType;

/// A task's `comm`: up to 16 bytes, NUL-padded, as the kernel keeps it.
/// Shown up to the first NUL, invalid UTF-8 replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Comm(pub [u8; 16]);

impl std::fmt::Display for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = self.0.iter().position(|b| *b == 0).unwrap_or(16);
        f.write_str(&String::from_utf8_lossy(&self.0[..end]))
    }
}

/// One `data` value as the evidence holds it: written straight into the
/// occurrence's JSON text ([`Serialize`]) or into an OTLP attribute, never
/// through a JSON tree. Text values (`comm`, addresses, `dev`) are kept as
/// their typed parts and formatted where they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    U64(u64),
    I64(i64),
    Bool(bool),
    Str(&'a str),
    Comm(Comm),
    Ip(IpAddr),
    /// A block device, shown `major:minor`.
    Dev(u32, u32),
    List(&'a [&'static str]),
}

impl Serialize for Field<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Field::U64(n) => s.serialize_u64(n),
            Field::I64(n) => s.serialize_i64(n),
            Field::Bool(b) => s.serialize_bool(b),
            Field::Str(t) => s.serialize_str(t),
            Field::Comm(c) => s.collect_str(&c),
            Field::Ip(a) => s.collect_str(&a),
            Field::Dev(major, minor) => s.collect_str(&format_args!("{major}:{minor}")),
            Field::List(l) => l.serialize(s),
        }
    }
}

impl From<u64> for Field<'_> {
    fn from(n: u64) -> Self {
        Field::U64(n)
    }
}

impl From<u32> for Field<'_> {
    fn from(n: u32) -> Self {
        Field::U64(n.into())
    }
}

impl From<u16> for Field<'_> {
    fn from(n: u16) -> Self {
        Field::U64(n.into())
    }
}

impl From<i64> for Field<'_> {
    fn from(n: i64) -> Self {
        Field::I64(n)
    }
}

impl From<i32> for Field<'_> {
    fn from(n: i32) -> Self {
        Field::I64(n.into())
    }
}

impl From<bool> for Field<'_> {
    fn from(b: bool) -> Self {
        Field::Bool(b)
    }
}

impl<'a> From<&'a str> for Field<'a> {
    fn from(t: &'a str) -> Self {
        Field::Str(t)
    }
}

impl<'a> From<&'a [&'static str]> for Field<'a> {
    fn from(l: &'a [&'static str]) -> Self {
        Field::List(l)
    }
}

/// Where a field goes: its `data` name and value, borrowed from the
/// evidence (`'f`).
pub type Visit<'a, 'f> = dyn FnMut(&'static str, Field<'f>) + 'a;

/// A TCP connection as the connecting process opened it (every network
/// type). `cgroup_id` 0: not known (absent from `data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    /// Network namespace inode.
    pub netns: u32,
    pub cgroup_id: u64,
}

#[cfg(test)]
impl Conn {
    /// A loopback IPv4 connect from `pid` (its only thread, comm empty,
    /// netns 1, no cgroup) from port 40000 to `dport`: the fixture unit
    /// tests start from and change what they check.
    pub fn loopback(pid: u32, dport: u16) -> Conn {
        Conn {
            pid,
            tid: pid,
            comm: Comm::default(),
            saddr: IpAddr::from([127, 0, 0, 1]),
            sport: 40000,
            daddr: IpAddr::from([127, 0, 0, 1]),
            dport,
            netns: 1,
            cgroup_id: 0,
        }
    }
}

impl Conn {
    fn visit<'a>(&'a self, v: &mut Visit<'_, 'a>) {
        v("pid", self.pid.into());
        v("tid", self.tid.into());
        v("comm", Field::Comm(self.comm));
        let family = if self.daddr.is_ipv4() { "ipv4" } else { "ipv6" };
        v("family", family.into());
        v("saddr", Field::Ip(self.saddr));
        v("sport", self.sport.into());
        v("daddr", Field::Ip(self.daddr));
        v("dport", self.dport.into());
        v("netns", self.netns.into());
        if self.cgroup_id != 0 {
            v("cgroup_id", self.cgroup_id.into());
        }
    }

    fn local(&self) -> Endpoint {
        Endpoint(self.saddr, self.sport)
    }

    fn peer(&self) -> Endpoint {
        Endpoint(self.daddr, self.dport)
    }
}

/// `addr:port`, IPv6 in brackets.
struct Endpoint(IpAddr, u16);

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// `connection_refused`: refusals to one destination folded into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The first refusal counted.
    pub conn: Conn,
    pub count: u32,
    /// `rst` or `icmp`.
    pub cause: &'static str,
}

/// `connection_timeout` and `connection_unreachable`: a connect that
/// failed with `errno`, and what this kernel dropped of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailed {
    pub conn: Conn,
    pub errno: &'static str,
    /// Packets of the connect this kernel dropped (0: none seen; then no
    /// drop field is shown).
    pub drops: u32,
    /// `skb_drop_reason` number of the first drop.
    pub drop_reason_code: u32,
    /// Its name on the running kernel, when the agent knows it.
    pub drop_reason: Option<Arc<str>>,
}

/// `connection_reset`: peer resets to one destination folded into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// The first reset counted.
    pub conn: Conn,
    pub count: u32,
    /// TCP state at the reset, the kernel's name.
    pub state: &'static str,
    /// What the application sees.
    pub errno: &'static str,
    pub unacked_bytes: u32,
}

/// `retransmit_spike`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitSpike {
    pub conn: Conn,
    /// Segments in this occurrence (also shown as `count`).
    pub retransmits: u32,
    pub window_ms: u32,
    pub srtt_us: u32,
}

/// `rtt_degradation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttDegradation {
    pub conn: Conn,
    pub srtt_us: u32,
    pub baseline_srtt_us: u32,
    pub baseline_samples: u32,
}

/// The process of a container-observer fact. Zero ids are unknown (not
/// shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
    pub comm: Comm,
    pub ns_pid: u32,
    pub cgroup_id: u64,
    pub memcg_id: u64,
}

impl Task {
    fn visit<'a>(&'a self, v: &mut Visit<'_, 'a>) {
        v("pid", self.pid.into());
        v("tid", self.tid.into());
        v("comm", Field::Comm(self.comm));
        if self.ns_pid != 0 {
            v("ns_pid", self.ns_pid.into());
        }
        if self.cgroup_id != 0 {
            v("cgroup_id", self.cgroup_id.into());
        }
        if self.memcg_id != 0 {
            v("memcg_id", self.memcg_id.into());
        }
    }
}

/// Resident memory of an OOM victim, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rss {
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

impl Rss {
    pub fn total(&self) -> u64 {
        self.anon
            .saturating_add(self.file)
            .saturating_add(self.shmem)
    }
}

/// `oom_kill` (`signal` 9, `exit_code` 137 always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OomKill {
    pub task: Task,
    /// `None` when the kernel did not state the victim's memory.
    pub rss: Option<Rss>,
    pub memory_limit_bytes: u64,
    /// `memcg`, `memcg_ancestor`, `unlimited` or `unknown`.
    pub memory_limit_source: &'static str,
    /// `(memory_limit_depth, memcg_usage_bytes)` when the memory cgroup
    /// is known.
    pub memcg: Option<(u32, u64)>,
}

/// Who sent a fatal signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub pid: u32,
    pub comm: Comm,
    /// 0: unknown (not shown).
    pub cgroup_id: u64,
    /// Added by attribution when the sender runs in a container.
    pub container_id: Option<String>,
}

/// `abnormal_exit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbnormalExit {
    pub task: Task,
    pub pidns_init: bool,
    pub core_dumped: bool,
    /// 0 for an exit with a code.
    pub signal: u32,
    pub signal_name: &'static str,
    /// 128 + signal for a signal death.
    pub exit_code: u32,
    /// Only for a signal another process sent.
    pub sender: Option<Sender>,
}

/// Request modifiers of a block request, in the order they are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    names: [&'static str; 4],
    len: u8,
}

impl Flags {
    /// Adds a name; beyond four the rest are ignored (there are four).
    pub fn push(&mut self, name: &'static str) {
        if let Some(slot) = self.names.get_mut(usize::from(self.len)) {
            *slot = name;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[&'static str] {
        &self.names[..usize::from(self.len)]
    }
}

/// A block request (both storage types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Io {
    pub major: u32,
    pub minor: u32,
    pub sector: u64,
    pub nr_sectors: u32,
    pub bytes: u32,
    pub op: &'static str,
    pub flags: Flags,
    pub latency_ns: Option<u64>,
    /// 0: not shown.
    pub requeues: u16,
    pub partial: bool,
}

impl Io {
    fn visit<'a>(&'a self, v: &mut Visit<'_, 'a>) {
        v("dev", Field::Dev(self.major, self.minor));
        v("sector", self.sector.into());
        v("nr_sectors", self.nr_sectors.into());
        v("bytes", self.bytes.into());
        v("op", self.op.into());
        v("flags", self.flags.as_slice().into());
        if let Some(l) = self.latency_ns {
            v("latency_ns", l.into());
        }
        if self.requeues > 0 {
            v("requeues", self.requeues.into());
        }
        if self.partial {
            v("partial", true.into());
        }
    }
}

/// `io_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoError {
    pub io: Io,
    pub errno: &'static str,
    /// Negative errno.
    pub errno_value: i32,
    pub blk_status: u32,
    /// The kernel's `BLK_STS_*` name (message only).
    pub blk_status_name: &'static str,
}

/// `latency_spike`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySpike {
    pub io: Io,
    pub latency_ns: u64,
    pub slow_io_threshold_ns: u64,
    pub io_latency_critical_ns: u64,
}

/// One counting period of one CPU's performance counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmcPeriod {
    pub cpu: u32,
    pub period_ns: u64,
    pub cycles: u64,
    pub running_permille: u64,
    pub scaled: bool,
}

impl PmcPeriod {
    fn visit<'a>(&'a self, v: &mut Visit<'_, 'a>) {
        v("cpu", i64::from(self.cpu).into());
        v("source", "pmc".into());
        v("period_ns", self.period_ns.into());
        v("cycles", self.cycles.into());
        v("running_permille", self.running_permille.into());
        v("scaled", self.scaled.into());
    }
}

/// An EWMA baseline a ratio was judged against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    pub value: f64,
    pub samples: u32,
}

impl Baseline {
    fn visit(&self, name: &'static str, v: &mut Visit<'_, '_>) {
        v(name, (self.value.round() as u64).into());
        v("baseline_samples", self.samples.into());
    }
}

/// `cpu_stall` from the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PmcStall {
    pub period: PmcPeriod,
    pub stall_event: &'static str,
    pub stalled_cycles: u64,
    pub stall_permille: u64,
    pub threshold_permille: u32,
    pub baseline: Baseline,
    pub episode_periods: u32,
}

/// `ipc_degradation`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IpcDegradation {
    pub period: PmcPeriod,
    pub instructions: u64,
    pub ipc_milli: u64,
    pub baseline: Baseline,
    pub ipc_drop_permille: u32,
    pub episode_periods: u32,
}

/// `memory_pressure` from the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PmcMisses {
    pub period: PmcPeriod,
    pub instructions: u64,
    pub miss_event: &'static str,
    pub cache_misses: u64,
    pub mpki_milli: u64,
    pub threshold_mpki_milli: u32,
    pub baseline: Baseline,
    pub episode_periods: u32,
}

/// Pressure stall information over one period (node-wide, `cpu` -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Psi {
    pub period_us: u64,
    pub some_stall_us: u64,
    pub some_permille: u64,
    /// `(full_stall_us, full_permille)` where the kernel has a `full` line.
    pub full: Option<(u64, u64)>,
    pub threshold_permille: u32,
    pub episode_periods: u32,
}

impl Psi {
    fn visit(&self, resource: &'static str, v: &mut Visit<'_, '_>) {
        v("cpu", (-1i64).into());
        v("source", "psi".into());
        v("resource", resource.into());
        v("period_us", self.period_us.into());
        v("some_stall_us", self.some_stall_us.into());
        v("some_permille", self.some_permille.into());
        if let Some((us, permille)) = self.full {
            v("full_stall_us", us.into());
            v("full_permille", permille.into());
        }
        v("threshold_permille", self.threshold_permille.into());
        v("episode_periods", self.episode_periods.into());
    }

    fn message(&self, what: &str) -> String {
        format!(
            "tasks {what} {}us of the last {}us ({}‰ PSI some, threshold {}‰)",
            self.some_stall_us, self.period_us, self.some_permille, self.threshold_permille
        )
    }
}

/// `cpu_stall`: judged from the counters or from PSI.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CpuStall {
    Pmc(PmcStall),
    Psi(Psi),
}

/// `memory_pressure`: judged from the counters or from PSI.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryPressure {
    Pmc(PmcMisses),
    Psi(Psi),
}

/// The facts of one anomaly: one variant per [`AnomalyType`].
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    ConnectionRefused(Refused),
    ConnectionTimeout(ConnectFailed),
    ConnectionUnreachable(ConnectFailed),
    ConnectionReset(Reset),
    RetransmitSpike(RetransmitSpike),
    RttDegradation(RttDegradation),
    OomKill(OomKill),
    AbnormalExit(AbnormalExit),
    IoError(IoError),
    LatencySpike(LatencySpike),
    CpuStall(CpuStall),
    IpcDegradation(IpcDegradation),
    MemoryPressure(MemoryPressure),
}

impl Evidence {
    pub fn anomaly(&self) -> AnomalyType {
        match self {
            Evidence::ConnectionRefused(_) => AnomalyType::ConnectionRefused,
            Evidence::ConnectionTimeout(_) => AnomalyType::ConnectionTimeout,
            Evidence::ConnectionUnreachable(_) => AnomalyType::ConnectionUnreachable,
            Evidence::ConnectionReset(_) => AnomalyType::ConnectionReset,
            Evidence::RetransmitSpike(_) => AnomalyType::RetransmitSpike,
            Evidence::RttDegradation(_) => AnomalyType::RttDegradation,
            Evidence::OomKill(_) => AnomalyType::OomKill,
            Evidence::AbnormalExit(_) => AnomalyType::AbnormalExit,
            Evidence::IoError(_) => AnomalyType::IoError,
            Evidence::LatencySpike(_) => AnomalyType::LatencySpike,
            Evidence::CpuStall(_) => AnomalyType::CpuStall,
            Evidence::IpcDegradation(_) => AnomalyType::IpcDegradation,
            Evidence::MemoryPressure(_) => AnomalyType::MemoryPressure,
        }
    }

    /// The cgroup2 id and memory cgroup id of the process, where known:
    /// what attribution resolves to a container.
    pub fn cgroup_ids(&self) -> (Option<u64>, Option<u64>) {
        let nz = |id: u64| (id != 0).then_some(id);
        match self {
            Evidence::ConnectionRefused(e) => (nz(e.conn.cgroup_id), None),
            Evidence::ConnectionTimeout(e) | Evidence::ConnectionUnreachable(e) => {
                (nz(e.conn.cgroup_id), None)
            }
            Evidence::ConnectionReset(e) => (nz(e.conn.cgroup_id), None),
            Evidence::RetransmitSpike(e) => (nz(e.conn.cgroup_id), None),
            Evidence::RttDegradation(e) => (nz(e.conn.cgroup_id), None),
            Evidence::OomKill(e) => (nz(e.task.cgroup_id), nz(e.task.memcg_id)),
            Evidence::AbnormalExit(e) => (nz(e.task.cgroup_id), nz(e.task.memcg_id)),
            _ => (None, None),
        }
    }

    /// The sender of a fatal signal, for attribution to fill in.
    pub fn sender_mut(&mut self) -> Option<&mut Sender> {
        match self {
            Evidence::AbnormalExit(e) => e.sender.as_mut(),
            _ => None,
        }
    }

    /// A failed connect, for its drop reason to be named.
    pub fn connect_failed_mut(&mut self) -> Option<&mut ConnectFailed> {
        match self {
            Evidence::ConnectionTimeout(e) | Evidence::ConnectionUnreachable(e) => Some(e),
            _ => None,
        }
    }

    /// Yields every `data` field of this type (not the attribution or
    /// the fields every occurrence carries).
    pub fn visit<'a>(&'a self, v: &mut Visit<'_, 'a>) {
        match self {
            Evidence::ConnectionRefused(e) => {
                e.conn.visit(v);
                v("count", e.count.into());
                v("cause", e.cause.into());
                v("errno", "ECONNREFUSED".into());
            }
            Evidence::ConnectionTimeout(e) | Evidence::ConnectionUnreachable(e) => {
                e.conn.visit(v);
                v("errno", e.errno.into());
                if e.drops > 0 {
                    v("drops", e.drops.into());
                    v("drop_reason_code", e.drop_reason_code.into());
                    if let Some(name) = &e.drop_reason {
                        v("drop_reason", name.as_ref().into());
                    }
                }
            }
            Evidence::ConnectionReset(e) => {
                e.conn.visit(v);
                v("count", e.count.into());
                v("state", e.state.into());
                v("errno", e.errno.into());
                v("unacked_bytes", e.unacked_bytes.into());
            }
            Evidence::RetransmitSpike(e) => {
                e.conn.visit(v);
                v("retransmits", e.retransmits.into());
                v("count", e.retransmits.into());
                v("window_ms", e.window_ms.into());
                v("srtt_us", e.srtt_us.into());
            }
            Evidence::RttDegradation(e) => {
                e.conn.visit(v);
                v("srtt_us", e.srtt_us.into());
                v("baseline_srtt_us", e.baseline_srtt_us.into());
                v("baseline_samples", e.baseline_samples.into());
            }
            Evidence::OomKill(e) => {
                e.task.visit(v);
                v("exit_code", 137u32.into());
                v("signal", 9u32.into());
                if let Some(rss) = e.rss {
                    v("memory_usage_bytes", rss.total().into());
                    v("anon_rss_bytes", rss.anon.into());
                    v("file_rss_bytes", rss.file.into());
                    v("shmem_rss_bytes", rss.shmem.into());
                }
                v("memory_limit_bytes", e.memory_limit_bytes.into());
                v("memory_limit_source", e.memory_limit_source.into());
                if let Some((depth, usage)) = e.memcg {
                    v("memory_limit_depth", depth.into());
                    v("memcg_usage_bytes", usage.into());
                }
            }
            Evidence::AbnormalExit(e) => {
                e.task.visit(v);
                v("pidns_init", e.pidns_init.into());
                v("core_dumped", e.core_dumped.into());
                v("signal", e.signal.into());
                v("exit_code", e.exit_code.into());
                if e.signal != 0 {
                    v("signal_name", e.signal_name.into());
                }
                if let Some(s) = &e.sender {
                    v("sender_pid", s.pid.into());
                    v("sender_comm", Field::Comm(s.comm));
                    if s.cgroup_id != 0 {
                        v("sender_cgroup_id", s.cgroup_id.into());
                    }
                    if let Some(id) = &s.container_id {
                        v("sender_container_id", id.as_str().into());
                    }
                }
            }
            Evidence::IoError(e) => {
                e.io.visit(v);
                v("errno", e.errno.into());
                v("errno_value", e.errno_value.into());
                v("blk_status", e.blk_status.into());
            }
            Evidence::LatencySpike(e) => {
                e.io.visit(v);
                v("slow_io_threshold_ns", e.slow_io_threshold_ns.into());
                v("io_latency_critical_ns", e.io_latency_critical_ns.into());
            }
            Evidence::CpuStall(CpuStall::Pmc(e)) => {
                e.period.visit(v);
                v("stall_event", e.stall_event.into());
                v("stalled_cycles", e.stalled_cycles.into());
                v("stall_permille", e.stall_permille.into());
                v("threshold_permille", e.threshold_permille.into());
                e.baseline.visit("baseline_stall_permille", v);
                v("episode_periods", e.episode_periods.into());
            }
            Evidence::IpcDegradation(e) => {
                e.period.visit(v);
                v("instructions", e.instructions.into());
                v("ipc_milli", e.ipc_milli.into());
                e.baseline.visit("baseline_ipc_milli", v);
                v("ipc_drop_permille", e.ipc_drop_permille.into());
                v("episode_periods", e.episode_periods.into());
            }
            Evidence::MemoryPressure(MemoryPressure::Pmc(e)) => {
                e.period.visit(v);
                v("instructions", e.instructions.into());
                v("miss_event", e.miss_event.into());
                v("cache_misses", e.cache_misses.into());
                v("mpki_milli", e.mpki_milli.into());
                v("threshold_mpki_milli", e.threshold_mpki_milli.into());
                e.baseline.visit("baseline_mpki_milli", v);
                v("episode_periods", e.episode_periods.into());
            }
            Evidence::CpuStall(CpuStall::Psi(e)) => e.visit("cpu", v),
            Evidence::MemoryPressure(MemoryPressure::Psi(e)) => e.visit("memory", v),
        }
    }

    /// The `error.message`: one line a person reads; every number in it is
    /// also in `data`.
    pub fn message(&self) -> String {
        match self {
            Evidence::ConnectionRefused(e) => format!(
                "connect to {} refused ({}), count={}",
                e.conn.peer(),
                e.cause,
                e.count
            ),
            Evidence::ConnectionTimeout(e) => {
                format!("connect to {} timed out ({})", e.conn.peer(), e.errno)
            }
            Evidence::ConnectionUnreachable(e) => {
                format!("connect to {} unreachable ({})", e.conn.peer(), e.errno)
            }
            Evidence::ConnectionReset(e) => format!(
                "connection {} -> {} reset by peer in {} ({}), {} bytes unacknowledged, count={}",
                e.conn.local(),
                e.conn.peer(),
                e.state,
                e.errno,
                e.unacked_bytes,
                e.count
            ),
            Evidence::RetransmitSpike(e) => format!(
                "{} retransmits within {}ms on {} -> {}",
                e.retransmits,
                e.window_ms,
                e.conn.local(),
                e.conn.peer()
            ),
            Evidence::RttDegradation(e) => format!(
                "srtt {}us to {} is {:.1}x its baseline {}us",
                e.srtt_us,
                e.conn.peer(),
                f64::from(e.srtt_us) / f64::from(e.baseline_srtt_us.max(1)),
                e.baseline_srtt_us
            ),
            Evidence::OomKill(e) => {
                let usage = e.rss.map_or("unknown".to_string(), |r| mb(r.total()));
                let limit = match e.memory_limit_source {
                    "unlimited" => "none".to_string(),
                    "unknown" => "unknown".to_string(),
                    _ => mb(e.memory_limit_bytes),
                };
                format!(
                    "OOM kill pid={} ({}) usage={usage} limit={limit}",
                    e.task.pid, e.task.comm
                )
            }
            Evidence::AbnormalExit(e) if e.signal != 0 => {
                let from = match &e.sender {
                    Some(s) => format!(" sent by pid={} ({})", s.pid, s.comm),
                    None => String::new(),
                };
                let core = if e.core_dumped { " (core dumped)" } else { "" };
                format!(
                    "pid={} ({}) killed by {}{from}{core}",
                    e.task.pid, e.task.comm, e.signal_name
                )
            }
            Evidence::AbnormalExit(e) => format!(
                "pid={} ({}) exited with code {}{}",
                e.task.pid,
                e.task.comm,
                e.exit_code,
                if e.pidns_init {
                    " (init of its PID namespace)"
                } else {
                    ""
                }
            ),
            Evidence::IoError(e) => format!(
                "{} of {} bytes at sector {} on {}:{} failed: {} ({})",
                e.io.op,
                e.io.bytes,
                e.io.sector,
                e.io.major,
                e.io.minor,
                e.errno,
                e.blk_status_name
            ),
            Evidence::LatencySpike(e) => format!(
                "{} of {} bytes at sector {} on {}:{} took {:.1}ms",
                e.io.op,
                e.io.bytes,
                e.io.sector,
                e.io.major,
                e.io.minor,
                e.latency_ns as f64 / 1e6
            ),
            Evidence::CpuStall(CpuStall::Pmc(e)) => format!(
                "cpu {}: {} of {} cycles stalled ({}‰, threshold {}‰, {})",
                e.period.cpu,
                e.stalled_cycles,
                e.period.cycles,
                e.stall_permille,
                e.threshold_permille,
                e.stall_event
            ),
            Evidence::IpcDegradation(e) => format!(
                "cpu {}: IPC {:.3} below {}‰ of its baseline {:.3} ({} instructions, {} cycles)",
                e.period.cpu,
                e.ipc_milli as f64 / 1000.0,
                e.ipc_drop_permille,
                e.baseline.value / 1000.0,
                e.instructions,
                e.period.cycles
            ),
            Evidence::MemoryPressure(MemoryPressure::Pmc(e)) => format!(
                "cpu {}: {:.3} {} per kilo-instruction (threshold {:.3})",
                e.period.cpu,
                e.mpki_milli as f64 / 1000.0,
                e.miss_event,
                f64::from(e.threshold_mpki_milli) / 1000.0
            ),
            Evidence::CpuStall(CpuStall::Psi(e)) => e.message("waiting for a CPU"),
            Evidence::MemoryPressure(MemoryPressure::Psi(e)) => e.message("waiting on memory"),
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{}MB", bytes / (1024 * 1024))
}

/// The container a process runs in, as node-local attribution found it
/// (see `agent::attribution`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub container_id: String,
    /// `None` when the cgroup layout does not name the runtime.
    pub runtime: Option<&'static str>,
    pub cgroup_path: Arc<str>,
    pub pod_uid: Option<String>,
    /// `(namespace, pod_name)` from the kubelet's pod log directory.
    pub pod: Option<(Arc<str>, Arc<str>)>,
}

impl Container {
    pub fn visit<'a>(&'a self, v: &mut Visit<'_, 'a>) {
        v("container_id", self.container_id.as_str().into());
        if let Some((ns, pod)) = &self.pod {
            v("pod_name", pod.as_ref().into());
            v("namespace", ns.as_ref().into());
        }
        if let Some(uid) = &self.pod_uid {
            v("pod_uid", uid.as_str().into());
        }
        if let Some(rt) = self.runtime {
            v("container_runtime", rt.into());
        }
        v("cgroup_path", self.cgroup_path.as_ref().into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Conn {
        Conn {
            pid: 1,
            tid: 2,
            comm: Comm(*b"curl\0\0\0\0\0\0\0\0\0\0\0\0"),
            saddr: "::1".parse().unwrap(),
            sport: 3,
            daddr: "::1".parse().unwrap(),
            dport: 4,
            netns: 5,
            cgroup_id: 6,
        }
    }

    fn task() -> Task {
        Task {
            pid: 1,
            tid: 2,
            comm: Comm(*b"stress\0\0\0\0\0\0\0\0\0\0"),
            ns_pid: 3,
            cgroup_id: 4,
            memcg_id: 5,
        }
    }

    fn io() -> Io {
        let mut flags = Flags::default();
        flags.push("sync");
        flags.push("fua");
        Io {
            major: 8,
            minor: 1,
            sector: 2048,
            nr_sectors: 8,
            bytes: 4096,
            op: "write",
            flags,
            latency_ns: Some(7),
            requeues: 1,
            partial: true,
        }
    }

    fn period() -> PmcPeriod {
        PmcPeriod {
            cpu: 3,
            period_ns: 1,
            cycles: 2,
            running_permille: 1000,
            scaled: false,
        }
    }

    fn psi() -> Psi {
        Psi {
            period_us: 1,
            some_stall_us: 2,
            some_permille: 3,
            full: Some((4, 5)),
            threshold_permille: 6,
            episode_periods: 7,
        }
    }

    /// One of every variant, every optional fact present.
    fn every_type() -> Vec<Evidence> {
        let baseline = Baseline {
            value: 1.4,
            samples: 9,
        };
        let failed = ConnectFailed {
            conn: conn(),
            errno: "ETIMEDOUT",
            drops: 2,
            drop_reason_code: 12,
            drop_reason: Some("NETFILTER_DROP".into()),
        };
        vec![
            Evidence::ConnectionRefused(Refused {
                conn: conn(),
                count: 1,
                cause: "rst",
            }),
            Evidence::ConnectionTimeout(failed.clone()),
            Evidence::ConnectionUnreachable(ConnectFailed {
                errno: "EHOSTUNREACH",
                ..failed
            }),
            Evidence::ConnectionReset(Reset {
                conn: conn(),
                count: 1,
                state: "ESTABLISHED",
                errno: "ECONNRESET",
                unacked_bytes: 10,
            }),
            Evidence::RetransmitSpike(RetransmitSpike {
                conn: conn(),
                retransmits: 5,
                window_ms: 1000,
                srtt_us: 9,
            }),
            Evidence::RttDegradation(RttDegradation {
                conn: conn(),
                srtt_us: 9,
                baseline_srtt_us: 1,
                baseline_samples: 8,
            }),
            Evidence::OomKill(OomKill {
                task: task(),
                rss: Some(Rss {
                    anon: 1,
                    file: 2,
                    shmem: 3,
                }),
                memory_limit_bytes: 4,
                memory_limit_source: "memcg",
                memcg: Some((0, 5)),
            }),
            Evidence::AbnormalExit(AbnormalExit {
                task: task(),
                pidns_init: true,
                core_dumped: true,
                signal: 11,
                signal_name: "SIGSEGV",
                exit_code: 139,
                sender: Some(Sender {
                    pid: 7,
                    comm: Comm::default(),
                    cgroup_id: 8,
                    container_id: Some("c".into()),
                }),
            }),
            Evidence::IoError(IoError {
                io: io(),
                errno: "EIO",
                errno_value: -5,
                blk_status: 10,
                blk_status_name: "BLK_STS_IOERR",
            }),
            Evidence::LatencySpike(LatencySpike {
                io: io(),
                latency_ns: 7,
                slow_io_threshold_ns: 1,
                io_latency_critical_ns: 2,
            }),
            Evidence::CpuStall(CpuStall::Pmc(PmcStall {
                period: period(),
                stall_event: "stalled-cycles-backend",
                stalled_cycles: 1,
                stall_permille: 500,
                threshold_permille: 400,
                baseline,
                episode_periods: 1,
            })),
            Evidence::CpuStall(CpuStall::Psi(psi())),
            Evidence::IpcDegradation(IpcDegradation {
                period: period(),
                instructions: 1,
                ipc_milli: 2,
                baseline,
                ipc_drop_permille: 500,
                episode_periods: 1,
            }),
            Evidence::MemoryPressure(MemoryPressure::Pmc(PmcMisses {
                period: period(),
                instructions: 1,
                miss_event: "cache-misses",
                cache_misses: 2,
                mpki_milli: 3,
                threshold_mpki_milli: 4,
                baseline,
                episode_periods: 1,
            })),
            Evidence::MemoryPressure(MemoryPressure::Psi(psi())),
        ]
    }

    fn container() -> Container {
        Container {
            container_id: "c".into(),
            runtime: Some("docker"),
            cgroup_path: "/x".into(),
            pod_uid: Some("u".into()),
            pod: Some(("ns".into(), "pod".into())),
        }
    }

    /// `data` is a JSON object: a name yielded twice would silently keep
    /// only the last value. No type may yield one twice, also not with
    /// attribution and the fields every occurrence adds.
    #[test]
    fn every_type_names_each_field_once() {
        let types = every_type();
        let mut kinds: Vec<AnomalyType> = types.iter().map(Evidence::anomaly).collect();
        kinds.dedup();
        assert_eq!(kinds, AnomalyType::ALL, "one variant per type, in order");
        for e in &types {
            let mut names = vec!["config_generation", "timestamp_ns"];
            let mut put = |k: &'static str, _: Field<'_>| names.push(k);
            e.visit(&mut put);
            container().visit(&mut put);
            let n = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), n, "{:?}: a field named twice", e.anomaly());
            assert!(
                !names
                    .iter()
                    .any(|k| crate::wire::REASONING_FIELDS.contains(k)),
                "{:?}",
                e.anomaly()
            );
            assert!(!e.message().is_empty());
        }
    }

    /// The typed rendering writes what a JSON tree of the same fields
    /// writes, byte for byte (the wire's format before evidence was typed):
    /// keys sorted, integers as integers, text escaped the same way.
    #[test]
    fn typed_json_is_the_json_of_the_same_tree() {
        use crate::wire::{Emitted, Occurrence, Outcome, Severity};
        let mut odd = conn();
        // Invalid UTF-8 and a quote in a comm; an IPv4 peer.
        odd.comm = Comm(*b"a\"b\xff\n\0\0\0\0\0\0\0\0\0\0\0");
        odd.daddr = "10.0.0.1".parse().unwrap();
        let mut types = every_type();
        types.push(Evidence::RttDegradation(RttDegradation {
            conn: odd,
            srtt_us: 1,
            baseline_srtt_us: 0,
            baseline_samples: 0,
        }));
        for e in types {
            for c in [None, Some(container())] {
                let id = ulid::Ulid::from_parts(1_743_691_381_042, 7);
                let typed = Emitted::new(
                    id,
                    Severity::Error,
                    Outcome::Degraded,
                    e.clone(),
                    c.clone(),
                    u32::MAX,
                    u64::MAX,
                );
                let mut data = serde_json::Map::new();
                // The values as a JSON tree holds them, built without
                // `Field`'s own serialisation.
                let mut put = |k: &'static str, v: Field<'_>| {
                    let v: serde_json::Value = match v {
                        Field::U64(n) => n.into(),
                        Field::I64(n) => n.into(),
                        Field::Bool(b) => b.into(),
                        Field::Str(t) => t.into(),
                        Field::Comm(c) => c.to_string().into(),
                        Field::Ip(a) => a.to_string().into(),
                        Field::Dev(major, minor) => format!("{major}:{minor}").into(),
                        Field::List(l) => l.into(),
                    };
                    data.insert(k.into(), v);
                };
                e.visit(&mut put);
                if let Some(c) = &c {
                    c.visit(&mut put);
                }
                let tree = Occurrence::new(
                    id,
                    e.anomaly(),
                    Severity::Error,
                    Outcome::Degraded,
                    e.message(),
                    data,
                    u32::MAX,
                    u64::MAX,
                );
                assert_eq!(
                    typed.json().get(),
                    serde_json::to_string(&tree).unwrap(),
                    "{:?}",
                    e.anomaly()
                );
            }
        }
    }

    #[test]
    fn attribution_ids_and_optional_facts() {
        let types = every_type();
        assert_eq!(types[0].cgroup_ids(), (Some(6), None));
        assert_eq!(types[6].cgroup_ids(), (Some(4), Some(5)));
        assert_eq!(types[8].cgroup_ids(), (None, None));
        // A connect without drops shows no drop field, even with a name.
        let Evidence::ConnectionTimeout(mut quiet) = types[1].clone() else {
            unreachable!("every_type()[1] is a timeout")
        };
        quiet.drops = 0;
        let mut names = Vec::new();
        Evidence::ConnectionTimeout(quiet).visit(&mut |k, _| names.push(k));
        assert!(!names.iter().any(|k| k.starts_with("drop")), "{names:?}");
        // An exit with a code names no signal.
        let Evidence::AbnormalExit(mut coded) = types[7].clone() else {
            unreachable!("every_type()[7] is an exit")
        };
        coded.signal = 0;
        coded.sender = None;
        coded.exit_code = 3;
        let e = Evidence::AbnormalExit(coded);
        let mut names = Vec::new();
        e.visit(&mut |k, _| names.push(k));
        assert!(!names.contains(&"signal_name"), "{names:?}");
        assert_eq!(
            e.message(),
            "pid=1 (stress) exited with code 3 (init of its PID namespace)"
        );
        assert_eq!(
            types[7].message(),
            "pid=1 (stress) killed by SIGSEGV sent by pid=7 () (core dumped)"
        );
    }
}
