//! Storage rules (SPEC §1): `kernel.storage.io_error` and
//! `kernel.storage.latency_spike`.
//!
//! The BPF program correlates issue and completion by the request pointer
//! and sends only errors and completions at or above `slow_io_threshold`
//! (the drops of that correlation are counted there, exported under the
//! reasons `STATS` below gives its counters). Here:
//!
//! * a completion with a non-zero `blk_status_t` → `io_error` (error,
//!   failure), with `errno` named by the kernel's own mapping and
//!   `latency_ns` when the completion was correlated with its issue;
//! * a successful completion → `latency_spike`, warning at or above
//!   `slow_io_threshold_ns`, critical at or above `io_latency_critical_ns`
//!   (the BPF side judged it slow under the fact's generation; a record
//!   without a correlated latency is never a latency spike: it is counted
//!   as `uncorrelated_latency`).
//!
//! `op` is the request's real kind, named from `REQ_OP_*` (the low 8 bits
//! of `cmd_flags`): a cache flush (REQ_OP_FLUSH, rwbs "FF") is `flush`, and
//! so is the completion of an empty write (REQ_OP_WRITE of 0 bytes): the
//! block layer completes the PREFLUSH write that asked for a flush without
//! ever issuing it (KERNEL-FACTS, Block I/O), so it is the flush's tail,
//! never a 0-byte `write`. Such a tail has no issue of its own: a latency
//! attached to it can only come from a stale correlation, so it is never a
//! `latency_spike` (counted as `ambiguous_inflight_io`) and an error on it
//! carries no `latency_ns`. `flags` lists the modifiers the kernel set, by
//! their `enum req_flag_bits` bit numbers: `sync`, `meta`, `fua`,
//! `preflush` (a unit test checks both tables against the vendored
//! `vmlinux.h`).
//!
//! Status → errno follows `blk_errors[]` in `block/blk-core.c` (Linux
//! ≥ 6.10, where `BLK_STS_ZONE_RESOURCE` was removed and the zone,
//! offline and duration-limit codes moved down by one). `BLK_STS_INVAL`
//! is 19 from 6.11 and 18 after the late-2025 fix that made the codes
//! consecutive again ("block: Make the blk_status_t codes consecutive");
//! both map to EINVAL. Anything else maps to EIO, as
//! `blk_status_to_errno` does. The raw status is kept in `blk_status`.

pub mod fact;

pub use self::fact::StoFact;
use super::{Fact, Lifecycle, RingObserver, Stat};
use crate::agent::abi::{self, TapioEventHdr};
use crate::agent::decode::DecodeError;
use crate::agent::classify::{DropCounts, Finding};
use crate::wire::config::StorageConfig;
use crate::wire::evidence::{Evidence, Flags, Io, IoError, LatencySpike};
use crate::wire::{CompiledConfig, Observer, Outcome, Severity};

pub struct StorageClassifier {
    cfg: StorageConfig,
    drops: DropCounts,
}

/// `(negative errno, errno name, kernel status name)` of a `blk_status_t`.
pub fn blk_status_errno(status: u32) -> (i32, &'static str, &'static str) {
    match status {
        0 => (0, "", "BLK_STS_OK"),
        1 => (-95, "EOPNOTSUPP", "BLK_STS_NOTSUPP"),
        2 => (-110, "ETIMEDOUT", "BLK_STS_TIMEOUT"),
        3 => (-28, "ENOSPC", "BLK_STS_NOSPC"),
        4 => (-67, "ENOLINK", "BLK_STS_TRANSPORT"),
        5 => (-121, "EREMOTEIO", "BLK_STS_TARGET"),
        6 => (-52, "EBADE", "BLK_STS_RESV_CONFLICT"),
        7 => (-61, "ENODATA", "BLK_STS_MEDIUM"),
        8 => (-84, "EILSEQ", "BLK_STS_PROTECTION"),
        9 => (-12, "ENOMEM", "BLK_STS_RESOURCE"),
        10 => (-5, "EIO", "BLK_STS_IOERR"),
        11 => (-78, "EREMCHG", "BLK_STS_DM_REQUEUE"),
        12 => (-11, "EAGAIN", "BLK_STS_AGAIN"),
        13 => (-16, "EBUSY", "BLK_STS_DEV_RESOURCE"),
        14 => (-109, "ETOOMANYREFS", "BLK_STS_ZONE_OPEN_RESOURCE"),
        15 => (-75, "EOVERFLOW", "BLK_STS_ZONE_ACTIVE_RESOURCE"),
        16 => (-19, "ENODEV", "BLK_STS_OFFLINE"),
        17 => (-62, "ETIME", "BLK_STS_DURATION_LIMIT"),
        18 | 19 => (-22, "EINVAL", "BLK_STS_INVAL"),
        _ => (-5, "EIO", "BLK_STS_UNKNOWN"),
    }
}

/// `REQ_OP_WRITE`.
const REQ_OP_WRITE: u32 = 1;

/// `(REQ_OP_* value, name)` as `enum req_op` in the kernel's
/// `blk_types.h` (the zone operations are odd numbers since Linux 6.10).
pub const REQ_OPS: [(u32, &str); 14] = [
    (0, "read"),
    (1, "write"),
    (2, "flush"),
    (3, "discard"),
    (5, "secure_erase"),
    (7, "zone_append"),
    (9, "write_zeroes"),
    (11, "zone_open"),
    (13, "zone_close"),
    (15, "zone_finish"),
    (17, "zone_reset"),
    (19, "zone_reset_all"),
    (34, "drv_in"),
    (35, "drv_out"),
];

/// `(bit number in enum req_flag_bits, name)` of the modifiers reported
/// in `flags`, in that order.
pub const REQ_FLAGS: [(u32, &str); 4] = [(11, "sync"), (12, "meta"), (17, "fua"), (18, "preflush")];

/// Name of a `REQ_OP_*` value.
pub fn op_name(op: u32) -> &'static str {
    REQ_OPS
        .iter()
        .find(|(v, _)| *v == op)
        .map_or("unknown", |(_, n)| n)
}

/// The completion of an empty write: the tail of a cache flush, which the
/// block layer completes without issuing it.
fn is_flush_tail(f: &StoFact) -> bool {
    f.op() == REQ_OP_WRITE && f.bytes == 0 && f.nr_sectors == 0
}

/// The request's real kind (see the module docs).
pub fn op_of(f: &StoFact) -> &'static str {
    if is_flush_tail(f) {
        "flush"
    } else {
        op_name(f.op())
    }
}

/// The modifiers set in `cmd_flags`, named (no allocation).
pub fn flag_names(cmd_flags: u32) -> Flags {
    let mut flags = Flags::default();
    for (bit, name) in REQ_FLAGS {
        if cmd_flags & (1 << bit) != 0 {
            flags.push(name);
        }
    }
    flags
}

impl StorageClassifier {
    pub fn new(cfg: &CompiledConfig) -> Self {
        StorageClassifier {
            cfg: cfg.storage.clone(),
            drops: DropCounts::default(),
        }
    }

    fn io(f: &StoFact) -> Io {
        Io {
            major: f.major(),
            minor: f.minor(),
            sector: f.sector,
            nr_sectors: f.nr_sectors,
            bytes: f.bytes,
            op: op_of(f),
            flags: flag_names(f.cmd_flags),
            latency_ns: Self::latency(f),
            requeues: f.requeues,
            partial: f.partial,
        }
    }

    /// The latency the fact may carry: none for a flush's tail.
    fn latency(f: &StoFact) -> Option<u64> {
        f.latency_ns.filter(|_| !is_flush_tail(f))
    }

    fn classify(&mut self, f: &StoFact) -> Option<Finding> {
        if f.status != 0 {
            let (errno_value, errno, blk_status_name) = blk_status_errno(f.status);
            return Some(Finding {
                severity: Severity::Error,
                outcome: Outcome::Failure,
                evidence: Evidence::IoError(IoError {
                    io: Self::io(f),
                    errno,
                    errno_value,
                    blk_status: f.status,
                    blk_status_name,
                }),
                generation: f.generation,
                mono_ns: f.mono_ns,
            });
        }
        if is_flush_tail(f) {
            // It was never issued: whatever latency came with it belongs
            // to another request.
            if f.latency_ns.is_some() {
                self.drops.add("ambiguous_inflight_io", 1);
            }
            return None;
        }
        let Some(latency) = f.latency_ns else {
            self.drops.add("uncorrelated_latency", 1);
            return None;
        };
        let critical = self.cfg.io_latency_critical_ns;
        let severity = if critical > 0 && latency >= critical {
            Severity::Critical
        } else {
            Severity::Warning
        };
        Some(Finding {
            severity,
            outcome: Outcome::Degraded,
            evidence: Evidence::LatencySpike(LatencySpike {
                io: Self::io(f),
                latency_ns: latency,
                slow_io_threshold_ns: self.cfg.slow_io_threshold_ns,
                io_latency_critical_ns: critical,
            }),
            generation: f.generation,
            mono_ns: f.mono_ns,
        })
    }
}

impl Lifecycle for StorageClassifier {
    fn observer(&self) -> Observer {
        Observer::Storage
    }

    fn apply_config(&mut self, cfg: &CompiledConfig, _generation: u32) {
        self.cfg = cfg.storage.clone();
    }

    fn drops(&self) -> &DropCounts {
        &self.drops
    }
}

/// This folder's ring observer, as `agent::observers` names it.
pub type Classifier = StorageClassifier;

impl RingObserver for StorageClassifier {
    type Fact = StoFact;
    const STATS: &'static [(usize, Stat)] = &[
        (abi::STAT_CORR_DUP, Stat::Drop("ambiguous_inflight_io")),
        (abi::STAT_CORR_MISSING, Stat::Drop("completion_without_issue")),
    ];

    fn decode(hdr: &TapioEventHdr, b: &[u8]) -> Result<StoFact, DecodeError> {
        fact::decode(hdr, b)
    }

    fn on_fact(&mut self, fact: &Fact, out: &mut Vec<Finding>) {
        let Fact::Storage(f) = fact else {
            return;
        };
        out.extend(self.classify(f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::AnomalyType;

    const MS: u64 = 1_000_000;

    fn fact(status: u32, latency_ns: Option<u64>) -> StoFact {
        StoFact {
            mono_ns: 9,
            generation: 2,
            latency_ns,
            sector: 2048,
            dev: (7 << 20) | 3,
            nr_sectors: 8,
            bytes: 4096,
            cmd_flags: 1 | (1 << 11),
            status,
            requeues: 0,
            partial: false,
        }
    }

    fn classify(f: StoFact) -> (Vec<Finding>, DropCounts) {
        let mut c = StorageClassifier::new(&CompiledConfig::default());
        let mut out = Vec::new();
        c.on_fact(&Fact::Storage(f), &mut out);
        (out, c.drops().clone())
    }

    #[test]
    fn io_error_names_errno_and_device() {
        let (out, _) = classify(fact(3, Some(2 * MS)));
        assert_eq!(out.len(), 1);
        let o = &out[0];
        assert_eq!(o.anomaly(), AnomalyType::IoError);
        assert_eq!(o.severity, Severity::Error);
        assert_eq!(o.outcome, Outcome::Failure);
        assert_eq!((o.generation, o.mono_ns), (2, 9));
        let d = &o.data();
        assert_eq!(d["dev"], "7:3");
        assert_eq!(d["sector"], 2048);
        assert_eq!(d["nr_sectors"], 8);
        assert_eq!(d["bytes"], 4096);
        assert_eq!(d["op"], "write");
        assert_eq!(d["errno"], "ENOSPC");
        assert_eq!(d["errno_value"], -28);
        assert_eq!(d["blk_status"], 3);
        assert_eq!(d["latency_ns"], 2 * MS);
        assert_eq!(
            o.message(),
            "write of 4096 bytes at sector 2048 on 7:3 failed: ENOSPC (BLK_STS_NOSPC)"
        );
    }

    #[test]
    fn io_error_without_correlation_has_no_latency() {
        let (out, drops) = classify(fact(10, None));
        assert_eq!(out[0].data()["errno"], "EIO");
        assert!(!out[0].data().contains_key("latency_ns"));
        assert_eq!(drops, DropCounts::default());
    }

    #[test]
    fn blk_status_table_matches_the_kernel() {
        let cases = [
            (1, -95, "EOPNOTSUPP"),
            (2, -110, "ETIMEDOUT"),
            (3, -28, "ENOSPC"),
            (4, -67, "ENOLINK"),
            (5, -121, "EREMOTEIO"),
            (6, -52, "EBADE"),
            (7, -61, "ENODATA"),
            (8, -84, "EILSEQ"),
            (9, -12, "ENOMEM"),
            (10, -5, "EIO"),
            (11, -78, "EREMCHG"),
            (12, -11, "EAGAIN"),
            (13, -16, "EBUSY"),
            (14, -109, "ETOOMANYREFS"),
            (15, -75, "EOVERFLOW"),
            (16, -19, "ENODEV"),
            (17, -62, "ETIME"),
            (18, -22, "EINVAL"),
            (19, -22, "EINVAL"),
            (20, -5, "EIO"),
            (255, -5, "EIO"),
        ];
        for (sts, errno, name) in cases {
            let (e, n, _) = blk_status_errno(sts);
            assert_eq!((e, n), (errno, name), "status {sts}");
        }
    }

    #[test]
    fn latency_severity_boundaries() {
        // Defaults: slow 100ms, critical 1s.
        let cases = [
            (100 * MS, Severity::Warning),
            (999 * MS, Severity::Warning),
            (1000 * MS, Severity::Critical),
            (5000 * MS, Severity::Critical),
        ];
        for (lat, sev) in cases {
            let (out, _) = classify(fact(0, Some(lat)));
            assert_eq!(out.len(), 1);
            let o = &out[0];
            assert_eq!(o.anomaly(), AnomalyType::LatencySpike);
            assert_eq!(o.severity, sev, "{lat}");
            assert_eq!(o.outcome, Outcome::Degraded);
            assert_eq!(o.data()["latency_ns"], lat);
            assert!(!o.data().contains_key("errno"));
        }
        let (out, _) = classify(fact(0, Some(150 * MS)));
        assert_eq!(
            out[0].message(),
            "write of 4096 bytes at sector 2048 on 7:3 took 150.0ms"
        );
    }

    #[test]
    fn critical_threshold_follows_apply_config() {
        let mut cfg = CompiledConfig::default();
        cfg.storage.io_latency_critical_ns = 200 * MS;
        let mut c = StorageClassifier::new(&CompiledConfig::default());
        c.apply_config(&cfg, 1);
        let mut out = Vec::new();
        c.on_fact(&Fact::Storage(fact(0, Some(250 * MS))), &mut out);
        assert_eq!(out[0].severity, Severity::Critical);
        assert_eq!(out[0].data()["io_latency_critical_ns"], 200 * MS);
    }

    #[test]
    fn success_without_latency_is_never_a_spike() {
        let (out, drops) = classify(fact(0, None));
        assert!(out.is_empty());
        assert_eq!(drops.get("uncorrelated_latency"), 1);
    }

    /// `NAME = value` pairs of one enum in the vendored vmlinux.h.
    fn header_enum(name: &str) -> Vec<(String, u32)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/include/x86/vmlinux.h");
        let text = std::fs::read_to_string(path).expect("read vmlinux.h");
        let start = text
            .find(&format!("\nenum {name} {{\n"))
            .unwrap_or_else(|| panic!("enum {name} in {path}"));
        let body = &text[start..];
        let body = &body[..body.find("\n};").unwrap()];
        body.lines()
            .filter_map(|l| {
                let (k, v) = l.trim().trim_end_matches(',').split_once(" = ")?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn op_and_flag_tables_match_the_kernel_header() {
        let ops = header_enum("req_op");
        for (v, name) in REQ_OPS {
            let kernel = format!("REQ_OP_{}", name.to_uppercase());
            assert!(
                ops.contains(&(kernel.clone(), v)),
                "{kernel} = {v} not in vmlinux.h: {ops:?}"
            );
        }
        // Every op the kernel has (but the sentinel) is named.
        for (k, v) in &ops {
            if k != "REQ_OP_LAST" {
                assert_ne!(op_name(*v), "unknown", "{k}");
            }
        }
        let bits = header_enum("req_flag_bits");
        for (bit, name) in REQ_FLAGS {
            let kernel = format!("__REQ_{}", name.to_uppercase());
            assert!(
                bits.contains(&(kernel.clone(), bit)),
                "{kernel} = {bit} not in vmlinux.h: {bits:?}"
            );
        }
    }

    #[test]
    fn op_names_and_extras() {
        for (op, name) in [
            (0, "read"),
            (2, "flush"),
            (3, "discard"),
            (9, "write_zeroes"),
            (11, "zone_open"),
            (19, "zone_reset_all"),
            (34, "drv_in"),
            (10, "unknown"),
            (99, "unknown"),
        ] {
            assert_eq!(op_name(op), name);
        }
        let mut f = fact(0, Some(200 * MS));
        f.requeues = 2;
        f.partial = true;
        f.dev = (259 << 20) | 1_048_575;
        let (out, _) = classify(f);
        assert_eq!(out[0].data()["requeues"], 2);
        assert_eq!(out[0].data()["partial"], true);
        assert_eq!(out[0].data()["dev"], "259:1048575");
    }

    const SYNC: u32 = 1 << 11;
    const META: u32 = 1 << 12;
    const FUA: u32 = 1 << 17;
    const PREFLUSH: u32 = 1 << 18;

    #[test]
    fn flags_name_the_modifiers_the_kernel_set() {
        assert!(flag_names(1).as_slice().is_empty());
        assert_eq!(flag_names(1 | SYNC).as_slice(), ["sync"]);
        assert_eq!(
            flag_names(1 | SYNC | META | FUA | PREFLUSH | (1 << 14)).as_slice(),
            ["sync", "meta", "fua", "preflush"],
            "others (NOMERGE) are not listed"
        );
        let (out, _) = classify(fact(0, Some(200 * MS)));
        assert_eq!(out[0].data()["flags"], serde_json::json!(["sync"]));
    }

    /// A flush as the block layer makes it: REQ_OP_FLUSH|REQ_PREFLUSH,
    /// no sectors, nothing transferred.
    fn flush(latency_ns: Option<u64>, status: u32) -> StoFact {
        StoFact {
            sector: 0,
            nr_sectors: 0,
            bytes: 0,
            cmd_flags: 2 | PREFLUSH,
            ..fact(status, latency_ns)
        }
    }

    /// The empty PREFLUSH write that asked for it, completed unissued
    /// (PREFLUSH already cleared): REQ_OP_WRITE|REQ_SYNC, 0 bytes.
    fn flush_tail(latency_ns: Option<u64>, status: u32) -> StoFact {
        StoFact {
            cmd_flags: 1 | SYNC,
            ..flush(latency_ns, status)
        }
    }

    #[test]
    fn a_slow_flush_is_a_flush_with_its_flags() {
        let (out, _) = classify(flush(Some(150 * MS), 0));
        let o = &out[0];
        assert_eq!(o.anomaly(), AnomalyType::LatencySpike);
        assert_eq!(o.data()["op"], "flush");
        assert_eq!(o.data()["flags"], serde_json::json!(["preflush"]));
        assert_eq!(o.data()["bytes"], 0);
        assert_eq!(
            o.message(),
            "flush of 0 bytes at sector 0 on 7:3 took 150.0ms"
        );
    }

    #[test]
    fn a_flush_tail_is_a_flush_and_never_a_latency_spike() {
        // The 124 ms "0-byte write at sector 0": a stale entry's age.
        let (out, drops) = classify(flush_tail(Some(124 * MS), 0));
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(drops.get("ambiguous_inflight_io"), 1);
        assert_eq!(drops.get("uncorrelated_latency"), 0);
        // Uncorrelated, as it should be: nothing, nothing counted.
        let (out, drops) = classify(flush_tail(None, 0));
        assert!(out.is_empty());
        assert_eq!(drops, DropCounts::default());
        // A failed flush is still an error, named a flush, without latency.
        let (out, _) = classify(flush_tail(Some(124 * MS), 10));
        let o = &out[0];
        assert_eq!(o.anomaly(), AnomalyType::IoError);
        assert_eq!(o.data()["op"], "flush");
        assert_eq!(o.data()["flags"], serde_json::json!(["sync"]));
        assert!(!o.data().contains_key("latency_ns"));
        assert_eq!(
            o.message(),
            "flush of 0 bytes at sector 0 on 7:3 failed: EIO (BLK_STS_IOERR)"
        );
    }

    #[test]
    fn a_write_with_data_stays_a_write() {
        let mut f = fact(0, Some(120 * MS));
        f.cmd_flags = 1 | SYNC | FUA;
        let (out, _) = classify(f);
        assert_eq!(out[0].data()["op"], "write");
        assert_eq!(out[0].data()["flags"], serde_json::json!(["sync", "fua"]));
        // A discard of 0 bytes is not a flush.
        let mut d = flush_tail(Some(120 * MS), 0);
        d.cmd_flags = 3;
        let (out, _) = classify(d);
        assert_eq!(out[0].data()["op"], "discard");
    }

    #[test]
    fn dropped_completions_and_evidence_allocate_nothing() {
        use crate::agent::classify::alloc_count::allocations;
        let mut c = StorageClassifier::new(&CompiledConfig::default());
        let mut out = Vec::with_capacity(4);
        let (uncorrelated, tail) = (fact(0, None), flush_tail(Some(5 * MS), 0));
        // Warm-up: each drop reason counted once.
        c.on_fact(&Fact::Storage(uncorrelated), &mut out);
        c.on_fact(&Fact::Storage(tail), &mut out);
        let n = allocations(|| {
            for _ in 0..100 {
                c.on_fact(&Fact::Storage(uncorrelated), &mut out);
                c.on_fact(&Fact::Storage(tail), &mut out);
            }
        });
        assert_eq!(n, 0);
        assert!(out.is_empty());
        assert_eq!(c.drops().get("uncorrelated_latency"), 101);
        assert_eq!(c.drops().get("ambiguous_inflight_io"), 101);
        let error = Fact::Storage(fact(10, Some(MS)));
        assert_eq!(allocations(|| c.on_fact(&error, &mut out)), 0);
        assert_eq!(out[0].anomaly(), AnomalyType::IoError);
    }
}
