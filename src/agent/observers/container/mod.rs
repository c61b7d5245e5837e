//! Container rules (SPEC §1): `kernel.container.oom_kill` and
//! `kernel.container.abnormal_exit`.
//!
//! The BPF program already applied the scope rule (crash signals for any
//! process, non-zero codes only for a PID-namespace init unless
//! `exit_scope = all`, `ignore_exit_codes`, one report per OOM victim), so
//! classification here is a mapping from facts to findings:
//!
//! * OOM (`oom/mark_victim`) → `oom_kill`, critical. `signal` is 9 (the
//!   OOM killer sends SIGKILL) and `exit_code` 137 (128 + 9, as shells and
//!   container runtimes report it). `memory_usage_bytes` is the victim's
//!   rss (anon + file + shmem) as the tracepoint reports it.
//!   `memory_limit_bytes` is the smallest `memory.max` over the victim's
//!   memory cgroup and its ancestors (v1 `memory.limit_in_bytes` and v2
//!   `memory.max` are the same kernel field) and `memory_limit_source`
//!   says where it came from: `memcg` (its own cgroup), `memcg_ancestor`
//!   (`memory_limit_depth` levels up), `unlimited` (no limit anywhere on
//!   the path: 0) or `unknown` (no memory cgroup could be read: 0).
//! * Exit → `abnormal_exit`: error when a signal ended the process (with
//!   `exit_code` = 128 + signal), warning for a non-zero exit code. When
//!   another process sent that signal (kill, tgkill, pidfd_send_signal:
//!   `signal_generate` with a user code, from a process other than the
//!   target), `sender_pid`, `sender_comm` and `sender_cgroup_id` name it
//!   (attribution adds `sender_container_id`). A signal the kernel raised
//!   (a fault, an OOM kill) or the process sent itself (`abort()`) has no
//!   sender fields.
//!
//! No I/O and no clock: the page size is an input of the constructor.

pub mod fact;

pub use self::fact::{CtrFact, CtrKind, SignalSender};
use super::{Fact, Lifecycle, RingObserver};
use crate::agent::abi::TapioEventHdr;
use crate::agent::decode::DecodeError;
use crate::agent::classify::{DropCounts, Finding};
use crate::wire::evidence::{AbnormalExit, Comm, Evidence, OomKill, Rss, Sender, Task};
use crate::wire::{CompiledConfig, Observer, Outcome, Severity};

pub struct ContainerClassifier {
    page_size: u64,
    drops: DropCounts,
}

impl ContainerClassifier {
    /// A classifier using this machine's page size.
    pub fn new(cfg: &CompiledConfig) -> Self {
        // SAFETY: sysconf has no preconditions; it only reads a constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self::with_page_size(cfg, u64::try_from(page).unwrap_or(4096).max(1))
    }

    /// A classifier for a kernel whose pages are `page_size` bytes.
    pub fn with_page_size(_cfg: &CompiledConfig, page_size: u64) -> Self {
        ContainerClassifier {
            page_size: page_size.max(1),
            drops: DropCounts::default(),
        }
    }

    /// `PAGE_COUNTER_MAX` (`LONG_MAX / PAGE_SIZE`): the "no limit" value.
    fn page_counter_max(&self) -> u64 {
        i64::MAX as u64 / self.page_size
    }

    fn bytes(&self, pages: u64) -> u64 {
        pages.saturating_mul(self.page_size)
    }

    fn oom(&self, f: &CtrFact) -> Finding {
        let rss = f.mm_known.then(|| Rss {
            anon: self.bytes(f.anon_rss_pages),
            file: self.bytes(f.file_rss_pages),
            shmem: self.bytes(f.shmem_rss_pages),
        });
        let (limit, source) = self.limit(f);
        let memcg = f
            .memcg_known
            .then(|| (f.memcg_limit_depth, self.bytes(f.memcg_usage_pages)));
        Finding {
            severity: Severity::Critical,
            outcome: Outcome::Failure,
            evidence: Evidence::OomKill(OomKill {
                task: task(f),
                rss,
                memory_limit_bytes: limit,
                memory_limit_source: source,
                memcg,
            }),
            generation: f.generation,
            mono_ns: f.mono_ns,
        }
    }

    /// `(memory_limit_bytes, memory_limit_source)`.
    fn limit(&self, f: &CtrFact) -> (u64, &'static str) {
        if !f.memcg_known {
            return (0, "unknown");
        }
        if f.memcg_max_pages >= self.page_counter_max() {
            return (0, "unlimited");
        }
        let source = if f.memcg_limit_depth == 0 {
            "memcg"
        } else {
            "memcg_ancestor"
        };
        (self.bytes(f.memcg_max_pages), source)
    }

    fn exit(&mut self, f: &CtrFact) -> Option<Finding> {
        let sig = f.signal();
        let code = f.exit_code();
        if sig == 0 && code == 0 {
            // BPF never sends these; a record that says so is not evidence.
            self.drops.add("not_abnormal", 1);
            return None;
        }
        // A signal death shows 128 + the signal, as a shell does.
        let (severity, exit_code, sender) = if sig != 0 {
            let sender = f.sender.map(|s| Sender {
                pid: s.pid,
                comm: Comm(s.comm),
                cgroup_id: s.cgroup_id,
                container_id: None,
            });
            (Severity::Error, 128 + sig, sender)
        } else {
            (Severity::Warning, code, None)
        };
        Some(Finding {
            severity,
            outcome: Outcome::Failure,
            evidence: Evidence::AbnormalExit(AbnormalExit {
                task: task(f),
                pidns_init: f.pidns_init,
                core_dumped: f.core_dumped(),
                signal: sig,
                signal_name: signal_name(sig),
                exit_code,
                sender,
            }),
            generation: f.generation,
            mono_ns: f.mono_ns,
        })
    }
}

fn task(f: &CtrFact) -> Task {
    Task {
        pid: f.pid,
        tid: f.tid,
        comm: Comm(f.comm),
        ns_pid: f.ns_pid,
        cgroup_id: f.cgroup_id,
        memcg_id: f.memcg_id,
    }
}

/// The conventional name of a Linux signal number (x86/arm64 numbering).
pub fn signal_name(sig: u32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        31 => "SIGSYS",
        _ => "SIG?",
    }
}

impl Lifecycle for ContainerClassifier {
    fn observer(&self) -> Observer {
        Observer::Container
    }

    fn apply_config(&mut self, _cfg: &CompiledConfig, _generation: u32) {
        // Every container knob is applied in BPF; nothing to keep here.
    }

    fn drops(&self) -> &DropCounts {
        &self.drops
    }
}

/// This folder's ring observer, as `agent::observers` names it.
pub type Classifier = ContainerClassifier;

impl RingObserver for ContainerClassifier {
    type Fact = CtrFact;

    fn decode(hdr: &TapioEventHdr, b: &[u8]) -> Result<CtrFact, DecodeError> {
        fact::decode(hdr, b)
    }

    fn on_fact(&mut self, fact: &Fact, out: &mut Vec<Finding>) {
        let Fact::Container(f) = fact else {
            return;
        };
        match f.kind {
            CtrKind::Oom => out.push(self.oom(f)),
            CtrKind::Exit => out.extend(self.exit(f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::AnomalyType;

    const PAGE: u64 = 4096;

    fn fact(kind: CtrKind) -> CtrFact {
        CtrFact {
            kind,
            mono_ns: 1_000,
            generation: 3,
            pid: 4242,
            tid: 4243,
            comm: *b"stress\0\0\0\0\0\0\0\0\0\0",
            cgroup_id: 8429,
            memcg_id: 77,
            exit_status: 0,
            pidns_init: false,
            ns_pid: 12,
            memcg_known: true,
            mm_known: true,
            memcg_limit_depth: 0,
            anon_rss_pages: 16000,
            file_rss_pages: 300,
            shmem_rss_pages: 84,
            memcg_usage_pages: 16384,
            memcg_max_pages: 16384,
            sender: None,
        }
    }

    fn classify(f: CtrFact) -> Vec<Finding> {
        let mut c = ContainerClassifier::with_page_size(&CompiledConfig::default(), PAGE);
        let mut out = Vec::new();
        c.on_fact(&Fact::Container(f), &mut out);
        out
    }

    #[test]
    fn oom_kill_carries_usage_and_the_real_limit() {
        let out = classify(fact(CtrKind::Oom));
        assert_eq!(out.len(), 1);
        let o = &out[0];
        assert_eq!(o.anomaly(), AnomalyType::OomKill);
        assert_eq!(o.severity, Severity::Critical);
        assert_eq!(o.outcome, Outcome::Failure);
        assert_eq!((o.generation, o.mono_ns), (3, 1_000));
        let d = &o.data();
        assert_eq!(d["pid"], 4242);
        assert_eq!(d["tid"], 4243);
        assert_eq!(d["comm"], "stress");
        assert_eq!(d["signal"], 9);
        assert_eq!(d["exit_code"], 137);
        assert_eq!(d["memory_usage_bytes"], (16000 + 300 + 84) * PAGE);
        assert_eq!(d["anon_rss_bytes"], 16000 * PAGE);
        assert_eq!(d["memory_limit_bytes"], 64 * 1024 * 1024);
        assert_eq!(d["memory_limit_source"], "memcg");
        assert_eq!(d["memcg_usage_bytes"], 64 * 1024 * 1024);
        assert_eq!(d["cgroup_id"], 8429);
        assert_eq!(d["memcg_id"], 77);
        assert_eq!(
            o.message(),
            "OOM kill pid=4242 (stress) usage=64MB limit=64MB"
        );
    }

    #[test]
    fn oom_limit_sources_table() {
        let counter_max = i64::MAX as u64 / PAGE;
        // (memcg_known, max_pages, depth) -> (limit, source)
        let cases = [
            (true, 16384, 0, 64 << 20, "memcg"),
            (true, 2560, 2, 10 << 20, "memcg_ancestor"),
            (true, counter_max, 0, 0, "unlimited"),
            (true, u64::MAX, 0, 0, "unlimited"),
            (false, 16384, 0, 0, "unknown"),
        ];
        for (known, max, depth, limit, source) in cases {
            let mut f = fact(CtrKind::Oom);
            f.memcg_known = known;
            f.memcg_max_pages = max;
            f.memcg_limit_depth = depth;
            let out = classify(f);
            let d = &out[0].data();
            assert_eq!(d["memory_limit_bytes"], limit, "{known} {max} {depth}");
            assert_eq!(d["memory_limit_source"], source);
            assert_eq!(d.contains_key("memory_limit_depth"), known);
        }
    }

    #[test]
    fn oom_without_mm_omits_usage() {
        let mut f = fact(CtrKind::Oom);
        f.mm_known = false;
        f.memcg_known = false;
        let out = classify(f);
        assert!(!out[0].data().contains_key("memory_usage_bytes"));
        assert_eq!(
            out[0].message(),
            "OOM kill pid=4242 (stress) usage=unknown limit=unknown"
        );
    }

    #[test]
    fn oom_limit_uses_the_page_size_given() {
        let mut c = ContainerClassifier::with_page_size(&CompiledConfig::default(), 65536);
        let mut out = Vec::new();
        let mut f = fact(CtrKind::Oom);
        f.memcg_max_pages = 1024;
        c.on_fact(&Fact::Container(f), &mut out);
        assert_eq!(out[0].data()["memory_limit_bytes"], 64 << 20);
        // PAGE_COUNTER_MAX depends on the page size too.
        f.memcg_max_pages = i64::MAX as u64 / 65536;
        c.on_fact(&Fact::Container(f), &mut out);
        assert_eq!(out[1].data()["memory_limit_source"], "unlimited");
    }

    #[test]
    fn abnormal_exit_table() {
        // (wait status, pidns_init) -> (severity, exit_code, signal, core, message)
        let cases: [(u32, bool, Severity, u32, u32, bool, &str); 5] = [
            (
                11,
                false,
                Severity::Error,
                139,
                11,
                false,
                "pid=4242 (stress) killed by SIGSEGV",
            ),
            (
                0x80 | 6,
                false,
                Severity::Error,
                134,
                6,
                true,
                "pid=4242 (stress) killed by SIGABRT (core dumped)",
            ),
            (
                9,
                false,
                Severity::Error,
                137,
                9,
                false,
                "pid=4242 (stress) killed by SIGKILL",
            ),
            (
                3 << 8,
                true,
                Severity::Warning,
                3,
                0,
                false,
                "pid=4242 (stress) exited with code 3 (init of its PID namespace)",
            ),
            (
                1 << 8,
                false,
                Severity::Warning,
                1,
                0,
                false,
                "pid=4242 (stress) exited with code 1",
            ),
        ];
        for (status, init, sev, code, sig, core, msg) in cases {
            let mut f = fact(CtrKind::Exit);
            f.exit_status = status;
            f.pidns_init = init;
            f.memcg_known = false;
            let out = classify(f);
            assert_eq!(out.len(), 1, "{status:#x}");
            let o = &out[0];
            assert_eq!(o.anomaly(), AnomalyType::AbnormalExit);
            assert_eq!(o.severity, sev, "{status:#x}");
            assert_eq!(o.outcome, Outcome::Failure);
            assert_eq!(o.data()["exit_code"], code, "{status:#x}");
            assert_eq!(o.data()["signal"], sig);
            assert_eq!(o.data()["core_dumped"], core);
            assert_eq!(o.data()["pidns_init"], init);
            assert_eq!(o.data()["pid"], 4242);
            assert_eq!(o.data()["cgroup_id"], 8429);
            assert_eq!(o.message(), msg);
            assert!(!o.data().contains_key("memory_limit_bytes"));
        }
    }

    #[test]
    fn a_signal_another_process_sent_names_the_sender() {
        let mut f = fact(CtrKind::Exit);
        f.exit_status = 9;
        f.sender = Some(SignalSender {
            pid: 777,
            comm: *b"kubelet\0\0\0\0\0\0\0\0\0",
            cgroup_id: 55,
        });
        let out = classify(f);
        let d = &out[0].data();
        assert_eq!(d["sender_pid"], 777);
        assert_eq!(d["sender_comm"], "kubelet");
        assert_eq!(d["sender_cgroup_id"], 55);
        assert_eq!(
            out[0].message(),
            "pid=4242 (stress) killed by SIGKILL sent by pid=777 (kubelet)"
        );
        // A kernel-raised signal: no sender fields at all.
        let mut f = fact(CtrKind::Exit);
        f.exit_status = 11 | 0x80;
        let out = classify(f);
        let d = &out[0].data();
        for k in ["sender_pid", "sender_comm", "sender_cgroup_id"] {
            assert!(!d.contains_key(k), "{k}");
        }
        assert_eq!(
            out[0].message(),
            "pid=4242 (stress) killed by SIGSEGV (core dumped)"
        );
    }

    #[test]
    fn clean_status_is_dropped_and_counted() {
        let mut c = ContainerClassifier::with_page_size(&CompiledConfig::default(), PAGE);
        let mut out = Vec::new();
        c.on_fact(&Fact::Container(fact(CtrKind::Exit)), &mut out);
        assert!(out.is_empty());
        assert_eq!(c.drops().get("not_abnormal"), 1);
    }

    #[test]
    fn unknown_ids_are_left_out() {
        let mut f = fact(CtrKind::Exit);
        f.exit_status = 11;
        f.cgroup_id = 0;
        f.memcg_id = 0;
        f.ns_pid = 0;
        let d = &classify(f)[0].data();
        for k in ["cgroup_id", "memcg_id", "ns_pid"] {
            assert!(!d.contains_key(k), "{k}");
        }
    }

    #[test]
    fn no_reasoning_fields() {
        let mut f = fact(CtrKind::Exit);
        f.exit_status = 11;
        for o in classify(f)
            .iter()
            .chain(classify(fact(CtrKind::Oom)).iter())
        {
            for k in ["reason", "reasoning", "explanation", "root_cause"] {
                assert!(!o.data().contains_key(k));
            }
        }
    }

    #[test]
    fn a_clean_exit_and_evidence_allocate_nothing() {
        use crate::agent::classify::alloc_count::allocations;
        let mut c = ContainerClassifier::with_page_size(&CompiledConfig::default(), PAGE);
        let mut out = Vec::with_capacity(4);
        let clean = Fact::Container(fact(CtrKind::Exit));
        c.on_fact(&clean, &mut out); // warm-up: the drop reason's counter
        let n = allocations(|| {
            for _ in 0..100 {
                c.on_fact(&clean, &mut out);
            }
        });
        assert_eq!(n, 0);
        assert!(out.is_empty());
        assert_eq!(c.drops().get("not_abnormal"), 101);
        let oom = Fact::Container(fact(CtrKind::Oom));
        assert_eq!(allocations(|| c.on_fact(&oom, &mut out)), 0);
        assert_eq!(out[0].anomaly(), AnomalyType::OomKill);
    }
}
