//! Network rules (SPEC §1): refused, timed-out and unreachable connects,
//! retransmit spikes and RTT degradation.
//!
//! Destinations and connections are keyed within their network namespace
//! (`data.netns`, the namespace inode): 127.0.0.1:8080 in one pod is not
//! 127.0.0.1:8080 in another.
//!
//! * Refusals fold per destination (`daddr`, `dport`): the refusal that
//!   reaches `refused_min_count` within `refused_window_ms` of the first
//!   emits at once; later refusals in that window are emitted as one
//!   occurrence with `count` = N when the window ends (or on shutdown, or
//!   when the bounded table must make room). The sum of `count` over
//!   occurrences equals the refusals seen in windows that reached the
//!   threshold; refusals of windows that never did are counted as
//!   `below_threshold` drops. pid/comm/saddr/sport of an occurrence are
//!   those of the first refusal it counts.
//! * Timeouts (ETIMEDOUT) and unreachable closes (EHOSTUNREACH,
//!   ENETUNREACH) emit one occurrence each. Other socket errors at a
//!   SYN_SENT close are counted as `unclassified_socket_error`.
//! * Retransmits: a sliding window per connection; when it holds
//!   `retransmit_min_count` retransmits, one occurrence, then none for that
//!   connection until a full window has passed.
//! * RTT: per destination, an EWMA (α = 1/8) of srtt samples from actively
//!   opened connections (their end, and each retransmit). A sample judges
//!   against the baseline *before* it is folded in; it qualifies when the
//!   baseline has `rtt_min_baseline_samples` samples and
//!   srtt ≥ multiplier × baseline and srtt ≥ `rtt_spike_abs_us`. The
//!   baseline and that judgement live in the kernel (`rtt_baselines` in
//!   bpf/network.bpf.c), so a healthy connection's end crosses no ring
//!   buffer; a qualifying sample arrives flagged with the baseline it was
//!   judged against. Here: at most one occurrence per destination per
//!   second.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::{Classifier, DropCounts, Finding};
use crate::agent::decode::{Fact, NetFact, NetKind};
use crate::wire::config::NetworkConfig;
use crate::wire::{AnomalyType, CompiledConfig, Outcome, Severity};

const ETIMEDOUT: i32 = 110;
const ECONNREFUSED: i32 = 111;
const EHOSTUNREACH: i32 = 113;
const ENETUNREACH: i32 = 101;

/// Most destinations with an open refusal window.
pub const MAX_REFUSED_DESTS: usize = 8192;
/// Most connections with retransmit history.
pub const MAX_RETRANS_CONNS: usize = 8192;
/// Most destinations with an RTT baseline.
pub const MAX_RTT_DESTS: usize = 4096;
/// Quiet time per destination after an RTT occurrence.
pub const RTT_COOLDOWN_NS: u64 = 1_000_000_000;

/// A destination within one network namespace.
type Dest = (u32, IpAddr, u16);
/// A connection within one network namespace.
type Conn = (u32, IpAddr, u16, IpAddr, u16);

struct RefusedWindow {
    start_ns: u64,
    seen: u32,
    reached: bool,
    /// Refusals not yet carried by an occurrence, and the first of them.
    pending: u32,
    first: Option<NetFact>,
}

struct RetransHistory {
    times: VecDeque<u64>,
    quiet_until: u64,
    last_ns: u64,
}

/// When a destination may next report an RTT degradation.
struct RttCooldown {
    quiet_until: u64,
}

pub struct NetworkClassifier {
    cfg: NetworkConfig,
    refused: HashMap<Dest, RefusedWindow>,
    retrans: HashMap<Conn, RetransHistory>,
    rtt: HashMap<Dest, RttCooldown>,
    drops: DropCounts,
}

impl NetworkClassifier {
    pub fn new(cfg: &CompiledConfig) -> Self {
        NetworkClassifier {
            cfg: cfg.network.clone(),
            refused: HashMap::new(),
            retrans: HashMap::new(),
            rtt: HashMap::new(),
            drops: DropCounts::default(),
        }
    }

    fn window_ns(ms: u32) -> u64 {
        u64::from(ms) * 1_000_000
    }

    fn on_refused(&mut self, f: &NetFact, out: &mut Vec<Finding>) {
        let window = Self::window_ns(self.cfg.refused_window_ms);
        let key = (f.netns, f.daddr, f.dport);
        if let Some(w) = self.refused.get(&key) {
            if f.mono_ns.saturating_sub(w.start_ns) >= window {
                let w = self.refused.remove(&key).expect("present");
                self.close_refused(w, out);
            }
        }
        if !self.refused.contains_key(&key) && self.refused.len() >= MAX_REFUSED_DESTS {
            // Make room by closing the oldest window early: its count is
            // emitted now rather than lost.
            if let Some(oldest) = self
                .refused
                .iter()
                .min_by_key(|(_, w)| w.start_ns)
                .map(|(k, _)| *k)
            {
                let w = self.refused.remove(&oldest).expect("present");
                self.close_refused(w, out);
            }
        }
        let min = self.cfg.refused_min_count.max(1);
        let w = self.refused.entry(key).or_insert(RefusedWindow {
            start_ns: f.mono_ns,
            seen: 0,
            reached: false,
            pending: 0,
            first: None,
        });
        w.seen += 1;
        w.pending += 1;
        if w.first.is_none() {
            w.first = Some(*f);
        }
        if !w.reached && w.seen >= min {
            w.reached = true;
            let count = w.pending;
            let first = w.first.take().expect("set above");
            w.pending = 0;
            out.push(refused_finding(&first, count));
        }
    }

    fn close_refused(&mut self, w: RefusedWindow, out: &mut Vec<Finding>) {
        if w.pending == 0 {
            return;
        }
        match (w.reached, w.first) {
            (true, Some(first)) => out.push(refused_finding(&first, w.pending)),
            _ => self.drops.add("below_threshold", u64::from(w.pending)),
        }
    }

    fn on_retransmit(&mut self, f: &NetFact, out: &mut Vec<Finding>) {
        let window = Self::window_ns(self.cfg.retransmit_window_ms);
        let min = self.cfg.retransmit_min_count.max(1) as usize;
        let key = (f.netns, f.saddr, f.sport, f.daddr, f.dport);
        if !self.retrans.contains_key(&key) && self.retrans.len() >= MAX_RETRANS_CONNS {
            if let Some(oldest) = self
                .retrans
                .iter()
                .min_by_key(|(_, h)| h.last_ns)
                .map(|(k, _)| *k)
            {
                self.retrans.remove(&oldest);
                self.drops.add("retransmit_table_full", 1);
            }
        }
        let h = self.retrans.entry(key).or_insert(RetransHistory {
            times: VecDeque::new(),
            quiet_until: 0,
            last_ns: f.mono_ns,
        });
        h.last_ns = f.mono_ns;
        while let Some(front) = h.times.front() {
            if f.mono_ns.saturating_sub(*front) >= window {
                h.times.pop_front();
            } else {
                break;
            }
        }
        h.times.push_back(f.mono_ns);
        // The window never needs more than `min` timestamps.
        while h.times.len() > min {
            h.times.pop_front();
        }
        if h.times.len() >= min && f.mono_ns >= h.quiet_until {
            h.quiet_until = f.mono_ns + window;
            let n = h.times.len() as u32;
            let mut data = conn_data(f);
            data.insert("retransmits".into(), n.into());
            data.insert("window_ms".into(), self.cfg.retransmit_window_ms.into());
            data.insert("srtt_us".into(), f.srtt_us.into());
            out.push(Finding {
                anomaly: AnomalyType::RetransmitSpike,
                severity: Severity::Warning,
                outcome: Outcome::Degraded,
                message: format!(
                    "{} retransmits within {}ms on {} -> {}",
                    n,
                    self.cfg.retransmit_window_ms,
                    endpoint(f.saddr, f.sport),
                    endpoint(f.daddr, f.dport)
                ),
                data,
                generation: f.generation,
                mono_ns: f.mono_ns,
            });
        }
    }

    /// A sample the kernel judged an RTT degradation (see the module docs).
    fn on_rtt_spike(&mut self, f: &NetFact, out: &mut Vec<Finding>) {
        if !f.rtt_spike || !f.owner_known || f.srtt_us == 0 || f.rtt_baseline_us == 0 {
            return;
        }
        let key = (f.netns, f.daddr, f.dport);
        if let Some(c) = self.rtt.get(&key) {
            if f.mono_ns < c.quiet_until {
                self.drops.add("rtt_cooldown", 1);
                return;
            }
        }
        if !self.rtt.contains_key(&key) && self.rtt.len() >= MAX_RTT_DESTS {
            // Cooldowns that ended hold nothing: forget them first.
            self.rtt.retain(|_, c| c.quiet_until > f.mono_ns);
        }
        if self.rtt.len() < MAX_RTT_DESTS || self.rtt.contains_key(&key) {
            self.rtt.insert(
                key,
                RttCooldown {
                    quiet_until: f.mono_ns + RTT_COOLDOWN_NS,
                },
            );
        }
        let mut data = conn_data(f);
        data.insert("srtt_us".into(), f.srtt_us.into());
        data.insert("baseline_srtt_us".into(), f.rtt_baseline_us.into());
        data.insert("baseline_samples".into(), f.rtt_samples.into());
        out.push(Finding {
            anomaly: AnomalyType::RttDegradation,
            severity: Severity::Warning,
            outcome: Outcome::Degraded,
            message: format!(
                "srtt {}us to {} is {:.1}x its baseline {}us",
                f.srtt_us,
                endpoint(f.daddr, f.dport),
                f64::from(f.srtt_us) / f64::from(f.rtt_baseline_us.max(1)),
                f.rtt_baseline_us
            ),
            data,
            generation: f.generation,
            mono_ns: f.mono_ns,
        });
    }
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn conn_data(f: &NetFact) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("pid".into(), f.pid.into());
    m.insert("tid".into(), f.tid.into());
    m.insert("comm".into(), f.comm_str().into());
    m.insert("family".into(), f.family_str().into());
    m.insert("saddr".into(), f.saddr.to_string().into());
    m.insert("sport".into(), f.sport.into());
    m.insert("daddr".into(), f.daddr.to_string().into());
    m.insert("dport".into(), f.dport.into());
    m.insert("netns".into(), f.netns.into());
    if f.cgroup_id != 0 {
        m.insert("cgroup_id".into(), f.cgroup_id.into());
    }
    m
}

fn refused_finding(first: &NetFact, count: u32) -> Finding {
    let cause = if first.rst { "rst" } else { "icmp" };
    let mut data = conn_data(first);
    data.insert("count".into(), count.into());
    data.insert("cause".into(), cause.into());
    data.insert("errno".into(), "ECONNREFUSED".into());
    Finding {
        anomaly: AnomalyType::ConnectionRefused,
        severity: Severity::Warning,
        outcome: Outcome::Failure,
        message: format!(
            "connect to {} refused ({cause}), count={count}",
            endpoint(first.daddr, first.dport)
        ),
        data,
        generation: first.generation,
        mono_ns: first.mono_ns,
    }
}

fn close_finding(f: &NetFact, anomaly: AnomalyType, errno: &str) -> Finding {
    let mut data = conn_data(f);
    data.insert("errno".into(), errno.into());
    let what = if anomaly == AnomalyType::ConnectionTimeout {
        "timed out"
    } else {
        "unreachable"
    };
    Finding {
        anomaly,
        severity: Severity::Error,
        outcome: Outcome::Failure,
        message: format!("connect to {} {what} ({errno})", endpoint(f.daddr, f.dport)),
        data,
        generation: f.generation,
        mono_ns: f.mono_ns,
    }
}

impl Classifier for NetworkClassifier {
    fn set_config(&mut self, cfg: &CompiledConfig) {
        self.cfg = cfg.network.clone();
    }

    fn on_fact(&mut self, fact: &Fact, out: &mut Vec<Finding>) {
        let Fact::Net(f) = fact else {
            return;
        };
        match f.kind {
            NetKind::ConnectFail => match f.sk_err {
                ECONNREFUSED => self.on_refused(f, out),
                ETIMEDOUT => out.push(close_finding(
                    f,
                    AnomalyType::ConnectionTimeout,
                    "ETIMEDOUT",
                )),
                EHOSTUNREACH => out.push(close_finding(
                    f,
                    AnomalyType::ConnectionUnreachable,
                    "EHOSTUNREACH",
                )),
                ENETUNREACH => out.push(close_finding(
                    f,
                    AnomalyType::ConnectionUnreachable,
                    "ENETUNREACH",
                )),
                _ => self.drops.add("unclassified_socket_error", 1),
            },
            NetKind::Retransmit => {
                self.on_retransmit(f, out);
                self.on_rtt_spike(f, out);
            }
            NetKind::Rtt => {
                self.on_rtt_spike(f, out);
                // The connection is gone; so is its retransmit history.
                self.retrans
                    .remove(&(f.netns, f.saddr, f.sport, f.daddr, f.dport));
            }
        }
    }

    fn on_tick(&mut self, now: u64, out: &mut Vec<Finding>) {
        let window = Self::window_ns(self.cfg.refused_window_ms);
        let ended: Vec<Dest> = self
            .refused
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.start_ns) >= window)
            .map(|(k, _)| *k)
            .collect();
        for k in ended {
            let w = self.refused.remove(&k).expect("present");
            self.close_refused(w, out);
        }
        let rwin = Self::window_ns(self.cfg.retransmit_window_ms);
        self.retrans
            .retain(|_, h| now.saturating_sub(h.last_ns) < rwin || now < h.quiet_until);
    }

    fn flush(&mut self, out: &mut Vec<Finding>) {
        let all: Vec<RefusedWindow> = self.refused.drain().map(|(_, w)| w).collect();
        for w in all {
            self.close_refused(w, out);
        }
    }

    fn drops(&self) -> &DropCounts {
        &self.drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::config::CompiledConfig;

    const MS: u64 = 1_000_000;

    fn fact(kind: NetKind, t_ms: u64, dport: u16, sk_err: i32) -> Fact {
        Fact::Net(NetFact {
            kind,
            mono_ns: t_ms * MS,
            generation: 1,
            pid: 100,
            tid: 100,
            comm: *b"client\0\0\0\0\0\0\0\0\0\0",
            saddr: "127.0.0.1".parse().unwrap(),
            daddr: "127.0.0.1".parse().unwrap(),
            sport: 40000,
            dport,
            rst: true,
            owner_known: true,
            sk_err,
            srtt_us: 0,
            rtt_spike: false,
            rtt_baseline_us: 0,
            rtt_samples: 0,
            state: 2,
            cgroup_id: 0,
            netns: 4026531840,
        })
    }

    fn refused(t_ms: u64, dport: u16) -> Fact {
        fact(NetKind::ConnectFail, t_ms, dport, ECONNREFUSED)
    }

    fn counts(out: &[Finding]) -> Vec<u64> {
        out.iter()
            .map(|f| f.data["count"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn first_refusal_emits_at_once_rest_fold_into_window_end() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        c.on_fact(&refused(0, 9), &mut out);
        assert_eq!(counts(&out), vec![1]);
        let f = &out[0];
        assert_eq!(f.anomaly, AnomalyType::ConnectionRefused);
        assert_eq!(f.data["dport"], 9);
        assert_eq!(f.data["daddr"], "127.0.0.1");
        assert_eq!(f.data["cause"], "rst");
        assert_eq!(f.data["comm"], "client");
        for t in 1..=4 {
            c.on_fact(&refused(t * 100, 9), &mut out);
        }
        assert_eq!(out.len(), 1, "folded until the window ends");
        c.on_tick(999 * MS, &mut out);
        assert_eq!(out.len(), 1, "window still open at 999ms");
        c.on_tick(1000 * MS, &mut out);
        assert_eq!(counts(&out), vec![1, 4]);
        // A new window starts with an immediate occurrence again.
        c.on_fact(&refused(1500, 9), &mut out);
        assert_eq!(counts(&out), vec![1, 4, 1]);
    }

    #[test]
    fn destinations_fold_separately_and_sum_is_exact() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        let mut seen = 0;
        for i in 0..1000u64 {
            c.on_fact(&refused(i * 7, 9 + (i % 3) as u16), &mut out);
            seen += 1;
            if i % 50 == 0 {
                c.on_tick(i * 7 * MS, &mut out);
            }
        }
        c.flush(&mut out);
        assert_eq!(counts(&out).iter().sum::<u64>(), seen);
        assert_eq!(c.drops().get("below_threshold"), 0);
    }

    #[test]
    fn the_same_address_in_two_namespaces_is_two_destinations() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        c.on_fact(&refused(0, 9), &mut out);
        let mut other = refused(10, 9);
        if let Fact::Net(f) = &mut other {
            f.netns = 4026532000;
        }
        c.on_fact(&other, &mut out);
        assert_eq!(counts(&out), vec![1, 1], "both emit at once");
        assert_eq!(out[1].data["netns"], 4026532000u64);
    }

    #[test]
    fn min_count_holds_until_reached_and_counts_misses() {
        let mut cfg = CompiledConfig::default();
        cfg.network.refused_min_count = 3;
        let mut c = NetworkClassifier::new(&cfg);
        let mut out = Vec::new();
        c.on_fact(&refused(0, 9), &mut out);
        c.on_fact(&refused(10, 9), &mut out);
        assert!(out.is_empty());
        c.on_fact(&refused(20, 9), &mut out);
        assert_eq!(counts(&out), vec![3]);
        // Two refusals that never reach 3 in their window: dropped, counted.
        c.on_fact(&refused(2000, 9), &mut out);
        c.on_fact(&refused(2100, 9), &mut out);
        c.on_tick(3000 * MS, &mut out);
        assert_eq!(counts(&out), vec![3]);
        assert_eq!(c.drops().get("below_threshold"), 2);
    }

    #[test]
    fn window_boundary_is_half_open() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        c.on_fact(&refused(0, 9), &mut out);
        c.on_fact(&refused(999, 9), &mut out);
        c.on_fact(&refused(1000, 9), &mut out); // closes [0,1000), opens a new one
        assert_eq!(counts(&out), vec![1, 1, 1]);
    }

    #[test]
    fn full_table_closes_oldest_window_without_losing_counts() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        let n = MAX_REFUSED_DESTS as u64 + 10;
        for i in 0..n {
            c.on_fact(&refused(0, (i % 65535) as u16 + 1), &mut out);
            c.on_fact(&refused(1, (i % 65535) as u16 + 1), &mut out);
        }
        assert!(c.refused.len() <= MAX_REFUSED_DESTS);
        c.flush(&mut out);
        assert_eq!(counts(&out).iter().sum::<u64>(), 2 * n);
    }

    #[test]
    fn socket_errors_map_to_types_and_never_to_timeout_wrongly() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        c.on_fact(&fact(NetKind::ConnectFail, 0, 80, ETIMEDOUT), &mut out);
        c.on_fact(&fact(NetKind::ConnectFail, 0, 81, EHOSTUNREACH), &mut out);
        c.on_fact(&fact(NetKind::ConnectFail, 0, 82, ENETUNREACH), &mut out);
        c.on_fact(&fact(NetKind::ConnectFail, 0, 83, 13), &mut out);
        let types: Vec<_> = out
            .iter()
            .map(|f| (f.anomaly, f.data["errno"].clone()))
            .collect();
        assert_eq!(
            types,
            vec![
                (AnomalyType::ConnectionTimeout, "ETIMEDOUT".into()),
                (AnomalyType::ConnectionUnreachable, "EHOSTUNREACH".into()),
                (AnomalyType::ConnectionUnreachable, "ENETUNREACH".into()),
            ]
        );
        assert_eq!(out[0].severity, Severity::Error);
        assert_eq!(c.drops().get("unclassified_socket_error"), 1);
    }

    #[test]
    fn icmp_refusal_says_icmp() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        let Fact::Net(mut f) = refused(0, 9) else {
            unreachable!("refused() builds network facts")
        };
        f.rst = false;
        c.on_fact(&Fact::Net(f), &mut out);
        assert_eq!(out[0].data["cause"], "icmp");
    }

    #[test]
    fn retransmit_spike_at_min_count_within_window() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        // 4 in the window: nothing; one old one slides out.
        for t in [0, 300, 600, 900] {
            c.on_fact(&fact(NetKind::Retransmit, t, 443, 0), &mut out);
        }
        assert!(out.is_empty());
        c.on_fact(&fact(NetKind::Retransmit, 1000, 443, 0), &mut out); // 0 slid out
        assert!(out.is_empty());
        c.on_fact(&fact(NetKind::Retransmit, 1050, 443, 0), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].anomaly, AnomalyType::RetransmitSpike);
        assert_eq!(out[0].data["retransmits"], 5);
        // Quiet for a window, then it may fire again.
        for t in [1100, 1200, 1300, 1400, 1500] {
            c.on_fact(&fact(NetKind::Retransmit, t, 443, 0), &mut out);
        }
        assert_eq!(out.len(), 1);
        c.on_fact(&fact(NetKind::Retransmit, 2050, 443, 0), &mut out);
        assert_eq!(out.len(), 2);
    }

    /// An RTT record as the kernel sends it: judged a spike against
    /// `baseline_us` over 8 samples.
    fn spike(t_ms: u64, dport: u16, srtt_us: u32, baseline_us: u32) -> Fact {
        let Fact::Net(mut f) = fact(NetKind::Rtt, t_ms, dport, 0) else {
            unreachable!("fact() builds network facts")
        };
        f.srtt_us = srtt_us;
        f.rtt_spike = true;
        f.rtt_baseline_us = baseline_us;
        f.rtt_samples = 8;
        Fact::Net(f)
    }

    #[test]
    fn a_kernel_judged_spike_is_reported_with_its_baseline_then_cools_down() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        c.on_fact(&spike(2000, 8080, 50_000, 1_000), &mut out);
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!(f.anomaly, AnomalyType::RttDegradation);
        assert_eq!(f.data["srtt_us"], 50_000);
        assert_eq!(f.data["baseline_srtt_us"], 1_000);
        assert_eq!(f.data["baseline_samples"], 8);
        assert_eq!(f.data["pid"], 100);
        assert_eq!(
            f.message,
            "srtt 50000us to 127.0.0.1:8080 is 50.0x its baseline 1000us"
        );
        // Within a second of it: not repeated, counted.
        c.on_fact(&spike(2999, 8080, 90_000, 1_000), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(c.drops().get("rtt_cooldown"), 1);
        // Another destination is judged on its own.
        c.on_fact(&spike(2500, 8081, 40_000, 1_000), &mut out);
        assert_eq!(out.len(), 2);
        // A second later the first destination may report again.
        c.on_fact(&spike(3000, 8080, 60_000, 1_000), &mut out);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn unjudged_samples_and_unowned_sockets_report_nothing() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        // A retransmit whose sample did not qualify.
        let Fact::Net(mut f) = fact(NetKind::Retransmit, 10, 8080, 0) else {
            unreachable!()
        };
        f.srtt_us = 90_000;
        f.rtt_baseline_us = 100;
        f.rtt_samples = 20;
        c.on_fact(&Fact::Net(f), &mut out);
        // A spike on a socket whose owner the kernel did not know.
        let Fact::Net(mut f) = spike(20, 8080, 90_000, 100) else {
            unreachable!()
        };
        f.owner_known = false;
        c.on_fact(&Fact::Net(f), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert!(c.rtt.is_empty());
    }

    #[test]
    fn a_retransmit_carrying_a_spike_reports_it() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        let Fact::Net(mut f) = spike(10, 8080, 90_000, 100) else {
            unreachable!()
        };
        f.kind = NetKind::Retransmit;
        c.on_fact(&Fact::Net(f), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].anomaly, AnomalyType::RttDegradation);
    }

    #[test]
    fn a_full_cooldown_table_forgets_ended_cooldowns_first() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        for i in 0..MAX_RTT_DESTS as u64 {
            let Fact::Net(mut f) = spike(0, 1, 50_000, 1_000) else {
                unreachable!()
            };
            f.dport = (i % 60000) as u16 + 1;
            f.netns = (i / 60000) as u32;
            c.on_fact(&Fact::Net(f), &mut out);
        }
        assert_eq!(c.rtt.len(), MAX_RTT_DESTS);
        // Two seconds on, every cooldown has ended: the table makes room.
        let Fact::Net(mut f) = spike(2000, 1, 50_000, 1_000) else {
            unreachable!()
        };
        f.netns = 999;
        c.on_fact(&Fact::Net(f), &mut out);
        assert_eq!(out.len(), MAX_RTT_DESTS + 1);
        assert_eq!(c.rtt.len(), 1);
    }
}
