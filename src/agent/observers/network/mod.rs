//! Network rules (SPEC §1): refused, timed-out and unreachable connects,
//! peer resets, retransmit spikes and RTT degradation.
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
//!   SYN_SENT close are counted as `unclassified_socket_error`. When this
//!   kernel dropped packets of that connect (its SYNs or their answers, in
//!   any network namespace of the node), the occurrence carries `drops`
//!   and `drop_reason_code` (the kernel's `skb_drop_reason` number of the
//!   first); the emitter names it `drop_reason` from the running kernel's
//!   BTF (`kernel_enums`). No drop seen: neither field.
//! * Resets: a peer's RST on an actively opened connection its application
//!   still holds (BPF filters out orphans, accepted sockets and the local
//!   side's own aborts) folds per destination exactly like refusals, in
//!   the same `refused_window_ms`, but every reset is evidence: the first
//!   emits at once (`count` sums to the resets). Data: the connector's
//!   pid/comm, addresses, `state` at the reset (the kernel's name),
//!   `errno` the application will see (`EPIPE` from CLOSE_WAIT, else
//!   `ECONNRESET`, as `tcp_reset()` sets it) and `unacked_bytes` (data sent
//!   and never acknowledged; a sent FIN is not counted).
//! * Retransmits: a sliding window per connection. When it holds
//!   `retransmit_min_count` retransmits, a spike starts: one occurrence at
//!   once with `retransmits` = the retransmits in the sliding window, and a
//!   spike window of `retransmit_window_ms` from that moment. Every later
//!   retransmit of the connection inside the spike window is counted and
//!   emitted as one follow-up occurrence when the window ends (or a
//!   record of the connection's end arrives, or on shutdown, or when the
//!   bounded table must make room), so the sum of `retransmits` over a connection's spike
//!   occurrences equals the retransmits the kernel made in its spike
//!   windows. Retransmits are counted in segments, as the kernel counts
//!   them (`tcpi_total_retrans`): one `tcp_retransmit_skb` may carry
//!   several. `count` repeats `retransmits` (the folding count, as for
//!   refusals). pid/comm/saddr/sport of a follow-up are those of the first
//!   retransmit it counts; `srtt_us` is that of the last one. After a spike
//!   window the sliding window starts empty.
//! * RTT: per destination, an EWMA (α = 1/8) of srtt samples from actively
//!   opened connections (their end, and each retransmit). A sample judges
//!   against the baseline *before* it is folded in; it qualifies when the
//!   baseline has `rtt_min_baseline_samples` samples and
//!   srtt ≥ multiplier × baseline and srtt ≥ `rtt_spike_abs_us`. The
//!   baseline and that judgement live in the kernel (`rtt_baselines` in
//!   `network.bpf.c`, next to this file), so a healthy connection's end
//!   crosses no ring buffer; a qualifying sample arrives flagged with the
//!   baseline it was judged against. Here: at most one occurrence per
//!   destination per second.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

pub mod fact;

pub use self::fact::{NetFact, NetKind};
use super::{Fact, Lifecycle, RingObserver, Stat};
use crate::agent::abi::{self, TapioEventHdr};
use crate::agent::decode::DecodeError;
use crate::agent::classify::{DropCounts, Finding};
use crate::wire::config::NetworkConfig;
use crate::wire::evidence::{
    Comm, Conn as ConnFacts, ConnectFailed, Evidence, Refused, Reset, RetransmitSpike,
    RttDegradation,
};
use crate::wire::{CompiledConfig, Observer, Outcome, Severity};

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

/// What folds per destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fold {
    Refused,
    Reset,
}

/// A fold window's key: what and where.
type FoldKey = (Fold, Dest);

struct RefusedWindow {
    start_ns: u64,
    seen: u32,
    reached: bool,
    /// Refusals not yet carried by an occurrence, and the first of them.
    pending: u32,
    first: Option<NetFact>,
}

struct RetransHistory {
    /// (time, segments) of the retransmits in the sliding window before a
    /// spike (fewer than min_count segments, so bounded by it).
    times: VecDeque<(u64, u32)>,
    spike: Option<Spike>,
    last_ns: u64,
}

/// An open spike window of one connection.
struct Spike {
    end_ns: u64,
    /// The window it was opened with (a config change does not move it).
    window_ms: u32,
    /// Retransmits since the first occurrence, not yet emitted, and the
    /// first of them.
    pending: u32,
    first: Option<NetFact>,
    /// srtt of the latest retransmit counted.
    last_srtt_us: u32,
}

/// When a destination may next report an RTT degradation.
struct RttCooldown {
    quiet_until: u64,
}

pub struct NetworkClassifier {
    cfg: NetworkConfig,
    /// Refusal and reset windows per destination.
    refused: HashMap<FoldKey, RefusedWindow>,
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
        let min = self.cfg.refused_min_count.max(1);
        self.on_folded(Fold::Refused, min, f, out);
    }

    /// Resets fold like refusals, in the same window, but every reset is
    /// evidence: the first one emits at once.
    fn on_reset(&mut self, f: &NetFact, out: &mut Vec<Finding>) {
        self.on_folded(Fold::Reset, 1, f, out);
    }

    fn on_folded(&mut self, fold: Fold, min: u32, f: &NetFact, out: &mut Vec<Finding>) {
        let window = Self::window_ns(self.cfg.refused_window_ms);
        let key = (fold, (f.netns, f.daddr, f.dport));
        if let Some(w) = self.refused.get(&key) {
            if f.mono_ns.saturating_sub(w.start_ns) >= window {
                let w = self.refused.remove(&key).expect("present");
                self.close_refused(fold, w, out);
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
                self.close_refused(oldest.0, w, out);
            }
        }
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
            out.push(fold_finding(fold, &first, count));
        }
    }

    fn close_refused(&mut self, fold: Fold, w: RefusedWindow, out: &mut Vec<Finding>) {
        if w.pending == 0 {
            return;
        }
        match (w.reached, w.first) {
            (true, Some(first)) => out.push(fold_finding(fold, &first, w.pending)),
            _ => self.drops.add("below_threshold", u64::from(w.pending)),
        }
    }

    fn on_retransmit(&mut self, f: &NetFact, out: &mut Vec<Finding>) {
        let window = Self::window_ns(self.cfg.retransmit_window_ms);
        let min = self.cfg.retransmit_min_count.max(1);
        let key = (f.netns, f.saddr, f.sport, f.daddr, f.dport);
        if !self.retrans.contains_key(&key) && self.retrans.len() >= MAX_RETRANS_CONNS {
            if let Some(oldest) = self
                .retrans
                .iter()
                .min_by_key(|(_, h)| h.last_ns)
                .map(|(k, _)| *k)
            {
                // Its open spike, if any, is emitted now rather than lost.
                let h = self.retrans.remove(&oldest).expect("present");
                out.extend(spike_followup(h.spike));
                self.drops.add("retransmit_table_full", 1);
            }
        }
        let h = self.retrans.entry(key).or_insert(RetransHistory {
            times: VecDeque::new(),
            spike: None,
            last_ns: f.mono_ns,
        });
        h.last_ns = f.mono_ns;
        let window_ms = self.cfg.retransmit_window_ms;
        if h.spike.as_ref().is_some_and(|s| f.mono_ns >= s.end_ns) {
            h.times.clear();
            out.extend(spike_followup(h.spike.take()));
        }
        // A retransmit may carry several segments; the kernel counts
        // segments (tcpi_total_retrans), and so does this.
        let segs = f.segs.max(1);
        if let Some(s) = h.spike.as_mut() {
            s.pending = s.pending.saturating_add(segs);
            s.last_srtt_us = f.srtt_us;
            if s.first.is_none() {
                s.first = Some(*f);
            }
            return;
        }
        while let Some((t, _)) = h.times.front() {
            if f.mono_ns.saturating_sub(*t) >= window {
                h.times.pop_front();
            } else {
                break;
            }
        }
        h.times.push_back((f.mono_ns, segs));
        // Saturating: `segs` is the kernel's per-skb segment count, and a
        // window of them must never wrap (found by fuzz/decode).
        let n = h.times.iter().fold(0u32, |a, (_, n)| a.saturating_add(*n));
        if n >= min {
            h.times.clear();
            h.spike = Some(Spike {
                end_ns: f.mono_ns.saturating_add(window),
                window_ms,
                pending: 0,
                first: None,
                last_srtt_us: f.srtt_us,
            });
            out.push(spike_finding(f, n, f.srtt_us, window_ms));
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
                    quiet_until: f.mono_ns.saturating_add(RTT_COOLDOWN_NS),
                },
            );
        }
        out.push(Finding {
            severity: Severity::Warning,
            outcome: Outcome::Degraded,
            evidence: Evidence::RttDegradation(RttDegradation {
                conn: conn(f),
                srtt_us: f.srtt_us,
                baseline_srtt_us: f.rtt_baseline_us,
                baseline_samples: f.rtt_samples,
            }),
            generation: f.generation,
            mono_ns: f.mono_ns,
        });
    }
}

fn conn(f: &NetFact) -> ConnFacts {
    ConnFacts {
        pid: f.pid,
        tid: f.tid,
        comm: Comm(f.comm),
        saddr: f.saddr,
        sport: f.sport,
        daddr: f.daddr,
        dport: f.dport,
        netns: f.netns,
        cgroup_id: f.cgroup_id,
    }
}

fn spike_finding(f: &NetFact, n: u32, srtt_us: u32, window_ms: u32) -> Finding {
    Finding {
        severity: Severity::Warning,
        outcome: Outcome::Degraded,
        evidence: Evidence::RetransmitSpike(RetransmitSpike {
            conn: conn(f),
            retransmits: n,
            window_ms,
            srtt_us,
        }),
        generation: f.generation,
        mono_ns: f.mono_ns,
    }
}

/// The follow-up of an ended spike window, if it counted anything.
fn spike_followup(spike: Option<Spike>) -> Option<Finding> {
    let s = spike?;
    let first = s.first?;
    (s.pending > 0).then(|| spike_finding(&first, s.pending, s.last_srtt_us, s.window_ms))
}

fn fold_finding(fold: Fold, first: &NetFact, count: u32) -> Finding {
    match fold {
        Fold::Refused => refused_finding(first, count),
        Fold::Reset => reset_finding(first, count),
    }
}

/// The kernel's name of a TCP state (`include/net/tcp_states.h`).
pub fn tcp_state_name(state: u32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// What the application sees after a peer's RST in `state`
/// (`tcp_reset()`: EPIPE from CLOSE_WAIT, ECONNRESET otherwise).
fn reset_errno(state: u32) -> &'static str {
    if state == 8 {
        "EPIPE"
    } else {
        "ECONNRESET"
    }
}

fn reset_finding(first: &NetFact, count: u32) -> Finding {
    Finding {
        severity: Severity::Warning,
        outcome: Outcome::Failure,
        evidence: Evidence::ConnectionReset(Reset {
            conn: conn(first),
            count,
            state: tcp_state_name(first.state),
            errno: reset_errno(first.state),
            unacked_bytes: first.unacked,
        }),
        generation: first.generation,
        mono_ns: first.mono_ns,
    }
}

fn refused_finding(first: &NetFact, count: u32) -> Finding {
    Finding {
        severity: Severity::Warning,
        outcome: Outcome::Failure,
        evidence: Evidence::ConnectionRefused(Refused {
            conn: conn(first),
            count,
            cause: if first.rst { "rst" } else { "icmp" },
        }),
        generation: first.generation,
        mono_ns: first.mono_ns,
    }
}

/// A timed-out or unreachable connect. The drop reason's name is added
/// where the kernel's BTF is read (the emitter).
fn close_finding(f: &NetFact, timed_out: bool, errno: &'static str) -> Finding {
    let failed = ConnectFailed {
        conn: conn(f),
        errno,
        drops: f.drops,
        drop_reason_code: f.drop_reason,
        drop_reason: None,
    };
    Finding {
        severity: Severity::Error,
        outcome: Outcome::Failure,
        evidence: if timed_out {
            Evidence::ConnectionTimeout(failed)
        } else {
            Evidence::ConnectionUnreachable(failed)
        },
        generation: f.generation,
        mono_ns: f.mono_ns,
    }
}

impl Lifecycle for NetworkClassifier {
    fn observer(&self) -> Observer {
        Observer::Network
    }

    fn apply_config(&mut self, cfg: &CompiledConfig, _generation: u32) {
        self.cfg = cfg.network.clone();
    }

    fn drops(&self) -> &DropCounts {
        &self.drops
    }
}

/// This folder's ring observer, as `agent::observers` names it.
pub type Classifier = NetworkClassifier;

/// Ways of the `conn_owners` socket table: `OWNER_WAYS` in
/// `network.bpf.c` (its capacity, sets × ways, is checked against the
/// compiled 16384 by tests/fleet_metrics_kernel.rs).
const OWNER_WAYS: u32 = 16;
/// Ways of the `rtt_baselines` destination table: `RTT_WAYS` in
/// `network.bpf.c` (capacity 4096, checked by the same test).
const RTT_WAYS: u32 = 4;

impl RingObserver for NetworkClassifier {
    type Fact = NetFact;
    const STATS: &'static [(usize, Stat)] = &[
        (abi::STAT_RESET_ORPHAN, Stat::Drop("reset_after_close")),
        // A failed connect reported without its process (begun before the
        // observer was live, or its owner set was full).
        (abi::STAT_OWNER_MISSING, Stat::Drop("owner_missing")),
        // A connect that could not record its owner at all.
        (abi::STAT_OWNER_FULL, Stat::Drop("owner_table_full")),
        // A destination's RTT baseline replaced in a full set.
        (abi::STAT_RTT_FULL, Stat::Drop("rtt_table_full")),
        // Resets of sockets it never saw connect: their own metric, not
        // a drop.
        (abi::STAT_RESET_INBOUND, Stat::InboundResets),
    ];
    const SET_TABLES: &'static [(&'static str, u32)] =
        &[("conn_owners", OWNER_WAYS), ("rtt_baselines", RTT_WAYS)];

    fn decode(hdr: &TapioEventHdr, b: &[u8]) -> Result<NetFact, DecodeError> {
        fact::decode(hdr, b)
    }

    fn on_fact(&mut self, fact: &Fact, out: &mut Vec<Finding>) {
        let Fact::Network(f) = fact else {
            return;
        };
        match f.kind {
            NetKind::ConnectFail => match f.sk_err {
                ECONNREFUSED => self.on_refused(f, out),
                ETIMEDOUT => out.push(close_finding(f, true, "ETIMEDOUT")),
                EHOSTUNREACH => out.push(close_finding(f, false, "EHOSTUNREACH")),
                ENETUNREACH => out.push(close_finding(f, false, "ENETUNREACH")),
                _ => self.drops.add("unclassified_socket_error", 1),
            },
            NetKind::Retransmit => {
                self.on_retransmit(f, out);
                self.on_rtt_spike(f, out);
            }
            NetKind::Reset => self.on_reset(f, out),
            NetKind::Rtt => {
                self.on_rtt_spike(f, out);
                // The connection is gone; so is its retransmit history,
                // and its spike window ends here.
                if let Some(h) = self
                    .retrans
                    .remove(&(f.netns, f.saddr, f.sport, f.daddr, f.dport))
                {
                    out.extend(spike_followup(h.spike));
                }
            }
        }
    }

    fn on_tick(&mut self, now: u64, out: &mut Vec<Finding>) {
        let window = Self::window_ns(self.cfg.refused_window_ms);
        let ended: Vec<FoldKey> = self
            .refused
            .iter()
            .filter(|(_, w)| now.saturating_sub(w.start_ns) >= window)
            .map(|(k, _)| *k)
            .collect();
        for k in ended {
            let w = self.refused.remove(&k).expect("present");
            self.close_refused(k.0, w, out);
        }
        let rwin = Self::window_ns(self.cfg.retransmit_window_ms);
        let mut ended = Vec::new();
        for h in self.retrans.values_mut() {
            if h.spike.as_ref().is_some_and(|s| now >= s.end_ns) {
                ended.push(h.spike.take());
                h.times.clear();
            }
        }
        out.extend(ended.into_iter().filter_map(spike_followup));
        self.retrans
            .retain(|_, h| h.spike.is_some() || now.saturating_sub(h.last_ns) < rwin);
    }

    fn flush(&mut self, out: &mut Vec<Finding>) {
        let all: Vec<(FoldKey, RefusedWindow)> = self.refused.drain().collect();
        for (k, w) in all {
            self.close_refused(k.0, w, out);
        }
        out.extend(
            self.retrans
                .drain()
                .filter_map(|(_, h)| spike_followup(h.spike)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::config::CompiledConfig;
    use crate::wire::AnomalyType;

    const MS: u64 = 1_000_000;

    fn fact(kind: NetKind, t_ms: u64, dport: u16, sk_err: i32) -> Fact {
        Fact::Network(NetFact {
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
            unacked: 0,
            segs: 1,
            drops: 0,
            drop_reason: 0,
        })
    }

    fn refused(t_ms: u64, dport: u16) -> Fact {
        fact(NetKind::ConnectFail, t_ms, dport, ECONNREFUSED)
    }

    fn counts(out: &[Finding]) -> Vec<u64> {
        out.iter()
            .map(|f| f.data()["count"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn first_refusal_emits_at_once_rest_fold_into_window_end() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        c.on_fact(&refused(0, 9), &mut out);
        assert_eq!(counts(&out), vec![1]);
        let f = &out[0];
        assert_eq!(f.anomaly(), AnomalyType::ConnectionRefused);
        assert_eq!(f.data()["dport"], 9);
        assert_eq!(f.data()["daddr"], "127.0.0.1");
        assert_eq!(f.data()["cause"], "rst");
        assert_eq!(f.data()["comm"], "client");
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
        if let Fact::Network(f) = &mut other {
            f.netns = 4026532000;
        }
        c.on_fact(&other, &mut out);
        assert_eq!(counts(&out), vec![1, 1], "both emit at once");
        assert_eq!(out[1].data()["netns"], 4026532000u64);
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
            .map(|f| (f.anomaly(), f.data()["errno"].clone()))
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
        let Fact::Network(mut f) = refused(0, 9) else {
            unreachable!("refused() builds network facts")
        };
        f.rst = false;
        c.on_fact(&Fact::Network(f), &mut out);
        assert_eq!(out[0].data()["cause"], "icmp");
    }

    fn retrans(t_ms: u64) -> Fact {
        fact(NetKind::Retransmit, t_ms, 443, 0)
    }

    fn retransmits(out: &[Finding]) -> Vec<u64> {
        out.iter()
            .map(|f| {
                assert_eq!(f.anomaly(), AnomalyType::RetransmitSpike);
                assert_eq!(f.data()["count"], f.data()["retransmits"]);
                f.data()["retransmits"].as_u64().unwrap()
            })
            .collect()
    }

    #[test]
    fn retransmit_spike_at_min_count_within_window() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        // 4 in the window: nothing; one old one slides out.
        for t in [0, 300, 600, 900] {
            c.on_fact(&retrans(t), &mut out);
        }
        assert!(out.is_empty());
        c.on_fact(&retrans(1000), &mut out); // 0 slid out
        assert!(out.is_empty());
        c.on_fact(&retrans(1050), &mut out);
        assert_eq!(retransmits(&out), vec![5]);
        assert_eq!(out[0].data()["window_ms"], 1000);
        assert_eq!(out[0].mono_ns, 1050 * MS);
        // The rest of the spike window is counted, not emitted yet.
        for t in [1100, 1200, 1300, 1400, 1500, 2049] {
            c.on_fact(&retrans(t), &mut out);
        }
        assert_eq!(out.len(), 1);
        c.on_tick(2049 * MS, &mut out);
        assert_eq!(out.len(), 1, "window [1050, 2050) still open");
        c.on_tick(2050 * MS, &mut out);
        assert_eq!(retransmits(&out), vec![5, 6]);
        assert_eq!(out[1].mono_ns, 1100 * MS, "first retransmit it counts");
        // After the window the sliding window starts empty: 4 more are
        // not a spike, the 5th is.
        for t in [2100, 2200, 2300, 2400] {
            c.on_fact(&retrans(t), &mut out);
        }
        assert_eq!(out.len(), 2);
        c.on_fact(&retrans(2500), &mut out);
        assert_eq!(retransmits(&out), vec![5, 6, 5]);
    }

    #[test]
    fn a_burst_sums_to_the_kernels_count() {
        // The lab's lossy connection: 34 retransmits within 0.42 s.
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        for i in 0..34u64 {
            c.on_fact(&retrans(10_000 + i * 12), &mut out);
        }
        assert_eq!(retransmits(&out), vec![5], "first at the threshold");
        c.on_tick(12_000 * MS, &mut out);
        assert_eq!(retransmits(&out), vec![5, 29]);
        assert_eq!(retransmits(&out).iter().sum::<u64>(), 34);
        // Nothing left behind.
        c.flush(&mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_retransmit_after_the_window_closes_it_without_a_tick() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        for t in 0..7 {
            c.on_fact(&retrans(t), &mut out);
        }
        // 5 at once, 2 pending; the next retransmit comes after the window
        // [4, 1004) and opens a new sliding window instead.
        c.on_fact(&retrans(1004), &mut out);
        assert_eq!(retransmits(&out), vec![5, 2]);
        c.flush(&mut out);
        assert_eq!(retransmits(&out), vec![5, 2], "1004 was below threshold");
    }

    #[test]
    fn connection_end_and_shutdown_emit_the_pending_rest() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        for t in 0..8 {
            c.on_fact(&retrans(t), &mut out);
        }
        // The connection's end (a degraded RTT sample at its close).
        c.on_fact(&fact(NetKind::Rtt, 20, 443, 0), &mut out);
        let spikes: Vec<Finding> = out
            .iter()
            .filter(|f| f.anomaly() == AnomalyType::RetransmitSpike)
            .cloned()
            .collect();
        assert_eq!(retransmits(&spikes), vec![5, 3]);
        assert!(c.retrans.is_empty());

        // Another connection, still in its window at shutdown.
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        for t in 0..9 {
            c.on_fact(&retrans(t), &mut out);
        }
        c.flush(&mut out);
        assert_eq!(retransmits(&out), vec![5, 4]);
    }

    #[test]
    fn retransmit_sums_are_exact_per_connection_under_churn() {
        let mut cfg = CompiledConfig::default();
        cfg.network.retransmit_min_count = 3;
        cfg.network.retransmit_window_ms = 200;
        let mut c = NetworkClassifier::new(&cfg);
        let mut out = Vec::new();
        // Three connections in bursts of 10 every 500 ms: each burst is one
        // spike window, so every retransmit is in one.
        let mut made = 0u64;
        for burst in 0..20u64 {
            for i in 0..10u64 {
                for port in [1u16, 2, 3] {
                    let Fact::Network(mut f) = retrans(burst * 500 + i * 5) else {
                        unreachable!()
                    };
                    f.sport = port;
                    c.on_fact(&Fact::Network(f), &mut out);
                    made += 1;
                }
            }
            c.on_tick((burst * 500 + 300) * MS, &mut out);
            assert_eq!(out.len() as u64, 6 * (burst + 1), "closed by the tick");
        }
        c.flush(&mut out);
        assert_eq!(retransmits(&out).iter().sum::<u64>(), made);
        for port in [1u64, 2, 3] {
            let sum: u64 = out
                .iter()
                .filter(|f| f.data()["sport"] == port)
                .map(|f| f.data()["retransmits"].as_u64().unwrap())
                .sum();
            assert_eq!(sum, 200, "sport {port}");
        }
    }

    #[test]
    fn a_full_retransmit_table_emits_the_evicted_connections_rest() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        // The first connection spikes and has 2 pending...
        for t in 0..7 {
            c.on_fact(&retrans(t), &mut out);
        }
        // ...then MAX_RETRANS_CONNS others push it out.
        for i in 0..MAX_RETRANS_CONNS as u64 {
            let Fact::Network(mut f) = retrans(10 + i) else {
                unreachable!()
            };
            f.sport = (i % 60000) as u16 + 1;
            f.dport = 444 + (i / 60000) as u16;
            c.on_fact(&Fact::Network(f), &mut out);
        }
        assert!(c.retrans.len() <= MAX_RETRANS_CONNS);
        assert_eq!(retransmits(&out), vec![5, 2]);
        assert_eq!(c.drops().get("retransmit_table_full"), 1);
    }

    fn reset(t_ms: u64, dport: u16, state: u32, unacked: u32) -> Fact {
        let Fact::Network(mut f) = fact(NetKind::Reset, t_ms, dport, 0) else {
            unreachable!()
        };
        f.state = state;
        f.unacked = unacked;
        Fact::Network(f)
    }

    #[test]
    fn a_reset_emits_at_once_and_the_rest_fold_per_destination() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        c.on_fact(&reset(0, 8080, 1, 1000), &mut out);
        assert_eq!(out.len(), 1);
        let o = &out[0];
        assert_eq!(o.anomaly(), AnomalyType::ConnectionReset);
        assert_eq!(o.severity, Severity::Warning);
        assert_eq!(o.outcome, Outcome::Failure);
        let d = &o.data();
        assert_eq!(d["count"], 1);
        assert_eq!(d["state"], "ESTABLISHED");
        assert_eq!(d["errno"], "ECONNRESET");
        assert_eq!(d["unacked_bytes"], 1000);
        assert_eq!(d["pid"], 100);
        assert_eq!(d["comm"], "client");
        assert_eq!(d["dport"], 8080);
        assert_eq!(
            o.message(),
            "connection 127.0.0.1:40000 -> 127.0.0.1:8080 reset by peer in ESTABLISHED (ECONNRESET), 1000 bytes unacknowledged, count=1"
        );
        // Three more to it in the window, one elsewhere.
        for t in [10, 20, 30] {
            c.on_fact(&reset(t, 8080, 8, 0), &mut out);
        }
        c.on_fact(&reset(40, 9090, 8, 0), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].data()["dport"], 9090);
        assert_eq!(out[1].data()["errno"], "EPIPE", "from CLOSE_WAIT");
        assert_eq!(out[1].data()["state"], "CLOSE_WAIT");
        c.on_tick(1000 * MS, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].data()["count"], 3);
        assert_eq!(out[2].data()["state"], "CLOSE_WAIT", "the first it counts");
        let total: u64 = out
            .iter()
            .map(|o| o.data()["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 5);
    }

    #[test]
    fn resets_and_refusals_to_one_destination_fold_apart() {
        let mut cfg = CompiledConfig::default();
        cfg.network.refused_min_count = 3;
        let mut c = NetworkClassifier::new(&cfg);
        let mut out = Vec::new();
        c.on_fact(&refused(0, 80), &mut out);
        c.on_fact(&reset(1, 80, 1, 0), &mut out);
        c.on_fact(&refused(2, 80), &mut out);
        // The reset emitted at once (min 1); refusals wait for 3.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].anomaly(), AnomalyType::ConnectionReset);
        c.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(c.drops().get("below_threshold"), 2);
    }

    #[test]
    fn local_drops_ride_on_timeouts_and_unreachables_only_when_seen() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        for (dport, err) in [(80, ETIMEDOUT), (81, EHOSTUNREACH)] {
            let Fact::Network(mut f) = fact(NetKind::ConnectFail, 0, dport, err) else {
                unreachable!()
            };
            f.drops = 3;
            f.drop_reason = 12;
            c.on_fact(&Fact::Network(f), &mut out);
        }
        c.on_fact(&fact(NetKind::ConnectFail, 0, 82, ETIMEDOUT), &mut out);
        assert_eq!(out.len(), 3);
        for o in &out[..2] {
            assert_eq!(o.data()["drops"], 3);
            assert_eq!(o.data()["drop_reason_code"], 12);
        }
        assert!(!out[2].data().contains_key("drops"));
        assert!(!out[2].data().contains_key("drop_reason_code"));
    }

    #[test]
    fn retransmits_count_segments() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        let with_segs = |t: u64, segs: u32| {
            let Fact::Network(mut f) = retrans(t) else {
                unreachable!()
            };
            f.segs = segs;
            Fact::Network(f)
        };
        c.on_fact(&with_segs(0, 2), &mut out);
        c.on_fact(&with_segs(1, 2), &mut out);
        assert!(out.is_empty(), "4 segments < 5");
        c.on_fact(&with_segs(2, 3), &mut out);
        assert_eq!(retransmits(&out), vec![7]);
        c.on_fact(&with_segs(3, 4), &mut out);
        c.on_fact(&with_segs(4, 0), &mut out); // never less than one
        c.flush(&mut out);
        assert_eq!(retransmits(&out), vec![7, 5]);
    }

    /// Segment counts near u32::MAX saturate instead of wrapping (or
    /// panicking in a debug build): found by fuzz/decode.
    #[test]
    fn huge_segment_counts_saturate() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        for (t, segs) in [(0, 3), (1, u32::MAX - 1)] {
            let Fact::Network(mut f) = retrans(t) else {
                unreachable!()
            };
            f.segs = segs;
            c.on_fact(&Fact::Network(f), &mut out);
        }
        assert_eq!(retransmits(&out), vec![u64::from(u32::MAX)]);
    }

    /// An RTT record as the kernel sends it: judged a spike against
    /// `baseline_us` over 8 samples.
    fn spike(t_ms: u64, dport: u16, srtt_us: u32, baseline_us: u32) -> Fact {
        let Fact::Network(mut f) = fact(NetKind::Rtt, t_ms, dport, 0) else {
            unreachable!("fact() builds network facts")
        };
        f.srtt_us = srtt_us;
        f.rtt_spike = true;
        f.rtt_baseline_us = baseline_us;
        f.rtt_samples = 8;
        Fact::Network(f)
    }

    #[test]
    fn a_kernel_judged_spike_is_reported_with_its_baseline_then_cools_down() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        c.on_fact(&spike(2000, 8080, 50_000, 1_000), &mut out);
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!(f.anomaly(), AnomalyType::RttDegradation);
        assert_eq!(f.data()["srtt_us"], 50_000);
        assert_eq!(f.data()["baseline_srtt_us"], 1_000);
        assert_eq!(f.data()["baseline_samples"], 8);
        assert_eq!(f.data()["pid"], 100);
        assert_eq!(
            f.message(),
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
        let Fact::Network(mut f) = fact(NetKind::Retransmit, 10, 8080, 0) else {
            unreachable!()
        };
        f.srtt_us = 90_000;
        f.rtt_baseline_us = 100;
        f.rtt_samples = 20;
        c.on_fact(&Fact::Network(f), &mut out);
        // A spike on a socket whose owner the kernel did not know.
        let Fact::Network(mut f) = spike(20, 8080, 90_000, 100) else {
            unreachable!()
        };
        f.owner_known = false;
        c.on_fact(&Fact::Network(f), &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert!(c.rtt.is_empty());
    }

    #[test]
    fn a_retransmit_carrying_a_spike_reports_it() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        let Fact::Network(mut f) = spike(10, 8080, 90_000, 100) else {
            unreachable!()
        };
        f.kind = NetKind::Retransmit;
        c.on_fact(&Fact::Network(f), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].anomaly(), AnomalyType::RttDegradation);
    }

    #[test]
    fn a_full_cooldown_table_forgets_ended_cooldowns_first() {
        let mut c = NetworkClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        for i in 0..MAX_RTT_DESTS as u64 {
            let Fact::Network(mut f) = spike(0, 1, 50_000, 1_000) else {
                unreachable!()
            };
            f.dport = (i % 60000) as u16 + 1;
            f.netns = (i / 60000) as u32;
            c.on_fact(&Fact::Network(f), &mut out);
        }
        assert_eq!(c.rtt.len(), MAX_RTT_DESTS);
        // Two seconds on, every cooldown has ended: the table makes room.
        let Fact::Network(mut f) = spike(2000, 1, 50_000, 1_000) else {
            unreachable!()
        };
        f.netns = 999;
        c.on_fact(&Fact::Network(f), &mut out);
        assert_eq!(out.len(), MAX_RTT_DESTS + 1);
        assert_eq!(c.rtt.len(), 1);
    }

    #[test]
    fn facts_that_fold_or_drop_allocate_nothing() {
        use crate::agent::classify::alloc_count::allocations;
        let mut cfg = CompiledConfig::default();
        cfg.network.refused_min_count = 150;
        cfg.network.refused_window_ms = 10_000;
        cfg.network.retransmit_min_count = 5;
        cfg.network.retransmit_window_ms = 10_000;
        let mut c = NetworkClassifier::new(&cfg);
        let mut out = Vec::with_capacity(16);
        // Warm-up, as a running agent is: a refusal window that reached
        // its threshold, one that did not, an open retransmit spike, an
        // RTT cooldown, and every drop reason counted once.
        for t in 0..150 {
            c.on_fact(&refused(t / 100, 81), &mut out);
        }
        c.on_fact(&refused(0, 82), &mut out);
        for t in 0..5 {
            c.on_fact(&retrans(t), &mut out);
        }
        c.on_fact(&spike(0, 8080, 50_000, 1_000), &mut out);
        c.on_fact(&spike(1, 8080, 50_000, 1_000), &mut out);
        let reset_err = fact(NetKind::ConnectFail, 1, 80, 104);
        c.on_fact(&reset_err, &mut out);
        assert_eq!(out.len(), 3, "refused 81, the spike, the RTT: {out:?}");
        out.clear();
        let (folded, below, retransmit, cooled) = (
            refused(10, 81),
            refused(10, 82),
            retrans(10),
            spike(20, 8080, 60_000, 1_000),
        );
        let healthy_end = fact(NetKind::Rtt, 30, 9999, 0);
        let n = allocations(|| {
            for _ in 0..100 {
                c.on_fact(&folded, &mut out);
                c.on_fact(&below, &mut out);
                c.on_fact(&retransmit, &mut out);
                c.on_fact(&cooled, &mut out);
                c.on_fact(&reset_err, &mut out);
                c.on_fact(&healthy_end, &mut out);
            }
            c.on_tick(40 * MS, &mut out);
        });
        assert_eq!(n, 0, "allocations for 600 facts that made no occurrence");
        assert!(out.is_empty(), "{out:?}");
        // They were counted, not lost: the folds carry them.
        c.flush(&mut out);
        let by_port = |port: u64| -> u64 {
            out.iter()
                .filter(|f| f.data()["dport"] == port)
                .map(|f| f.data()["count"].as_u64().unwrap())
                .sum()
        };
        assert_eq!(by_port(81), 100);
        assert_eq!(by_port(443), 100);
        assert_eq!(c.drops().get("below_threshold"), 101);
        assert_eq!(c.drops().get("rtt_cooldown"), 101);
        assert_eq!(c.drops().get("unclassified_socket_error"), 101);

        // Stating evidence allocates nothing either: a timeout becomes a
        // finding with no allocation once `out` has room.
        out.clear();
        let timeout = fact(NetKind::ConnectFail, 50, 90, ETIMEDOUT);
        assert_eq!(allocations(|| c.on_fact(&timeout, &mut out)), 0);
        assert_eq!(out[0].anomaly(), AnomalyType::ConnectionTimeout);
    }
}
