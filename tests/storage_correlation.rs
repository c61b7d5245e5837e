//! The storage object's issue→completion correlation, driven with
//! synthetic request sequences through the kernel's BPF_PROG_RUN: the real
//! BPF code runs, loaded as raw tracepoint programs (same context layout as
//! `tp_btf`: an array of u64 arguments), with made-up request pointers.
//! Reads through those pointers fail harmlessly (probe reads), so dev,
//! sector and sizes are zero; the correlation state, stats and records are
//! exactly what the attached programs would produce.
//!
//! Needs root/CAP_BPF: skips with one line otherwise, fails instead when
//! `TAPIO_REQUIRE_EBPF=1`.
#![cfg(target_os = "linux")]

mod common;

mod bpf_objects {
    include!(concat!(env!("OUT_DIR"), "/bpf_objects.rs"));
}

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use libbpf_rs::{
    MapCore, MapFlags, Object, ObjectBuilder, ProgramInput, ProgramType, RingBufferBuilder,
};
use tapio::agent::abi::{self, TapioConfig};
use tapio::agent::decode::{decode, Fact, StoFact};
use tapio::wire::{CompiledConfig, Observer};

struct Harness {
    obj: Object,
}

impl Harness {
    fn new() -> Harness {
        let bytes = bpf_objects::OBJECTS
            .iter()
            .find(|(n, _)| *n == "storage")
            .expect("storage object embedded")
            .1;
        let mut open = ObjectBuilder::default().open_memory(bytes).expect("open");
        for mut p in open.progs_mut() {
            p.set_prog_type(ProgramType::RawTracepoint);
        }
        Harness {
            obj: open.load().expect("load as raw_tp"),
        }
    }

    fn set_config(&self, cfg: &TapioConfig) {
        let m = self
            .obj
            .maps()
            .find(|m| m.name() == "tapio_config")
            .expect("carrier map");
        m.update(&0u32.to_ne_bytes(), &cfg.to_bytes(), MapFlags::ANY)
            .expect("write config");
    }

    fn run(&mut self, prog: &str, args: &[u64]) {
        let p = self
            .obj
            .progs_mut()
            .find(|p| p.name() == prog)
            .unwrap_or_else(|| panic!("no program {prog}"));
        let mut ctx: Vec<u8> = args.iter().flat_map(|a| a.to_ne_bytes()).collect();
        let input = ProgramInput {
            context_in: Some(&mut ctx),
            ..Default::default()
        };
        p.test_run(input)
            .unwrap_or_else(|e| panic!("run {prog}: {e:#}"));
    }

    fn issue(&mut self, rq: u64) {
        self.run("handle_sto__block_rq_issue", &[rq]);
    }
    fn requeue(&mut self, rq: u64) {
        self.run("handle_sto__block_rq_requeue", &[rq]);
    }
    fn merge(&mut self, rq: u64) {
        self.run("handle_sto__block_rq_merge", &[rq]);
    }
    fn complete(&mut self, rq: u64, status: u8, nr_bytes: u32) {
        self.run(
            "handle_sto__block_rq_complete",
            &[rq, u64::from(status), u64::from(nr_bytes)],
        );
    }

    fn inflight(&self) -> usize {
        let m = self
            .obj
            .maps()
            .find(|m| m.name() == "inflight")
            .expect("inflight map");
        m.keys().count()
    }

    fn stat(&self, idx: usize) -> u64 {
        let m = self
            .obj
            .maps()
            .find(|m| m.name() == "tapio_stats")
            .expect("stats map");
        m.lookup_percpu(&(idx as u32).to_ne_bytes(), MapFlags::ANY)
            .expect("lookup")
            .map(|cpus| {
                cpus.iter()
                    .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap()))
                    .sum()
            })
            .unwrap_or(0)
    }

    fn drain(&self) -> Vec<StoFact> {
        let got = Rc::new(RefCell::new(Vec::new()));
        let sink = got.clone();
        let m = self
            .obj
            .maps()
            .find(|m| m.name() == "events")
            .expect("ring");
        let mut b = RingBufferBuilder::new();
        b.add(&m, move |data: &[u8]| {
            match decode(Observer::Storage, data) {
                Ok(Fact::Sto(f)) => sink.borrow_mut().push(f),
                other => panic!("bad record: {other:?}"),
            }
            0
        })
        .expect("add ring");
        let rb = b.build().expect("ring");
        rb.poll(Duration::from_millis(0)).expect("poll");
        drop(rb);
        let v = got.borrow().clone();
        v
    }
}

fn live(slow_ns: u64) -> TapioConfig {
    let mut c = TapioConfig::from_compiled(&CompiledConfig::default(), 5);
    c.sto_slow_io_ns = slow_ns;
    c
}

const BLK_STS_NOSPC: u8 = 3;

#[test]
fn issue_then_complete_correlates_exactly() {
    if !common::require_ebpf("issue_then_complete_correlates_exactly") {
        return;
    }
    let mut h = Harness::new();
    h.set_config(&live(1)); // 1 ns: every correlated completion is "slow"
    h.issue(0x1000);
    h.issue(0x2000);
    assert_eq!(h.inflight(), 2);
    h.complete(0x2000, 0, 0);
    h.complete(0x1000, 0, 0);
    assert_eq!(h.inflight(), 0, "final completions delete their entries");
    let facts = h.drain();
    assert_eq!(facts.len(), 2);
    for f in &facts {
        assert!(f.latency_ns.is_some_and(|l| l > 0), "{f:?}");
        assert_eq!((f.status, f.requeues, f.partial), (0, 0, false));
        assert_eq!(f.generation, 5);
    }
    assert_eq!(h.stat(abi::STAT_CORR_DUP), 0);
    assert_eq!(h.stat(abi::STAT_CORR_MISSING), 0);
}

#[test]
fn fast_success_below_threshold_sends_nothing() {
    if !common::require_ebpf("fast_success_below_threshold_sends_nothing") {
        return;
    }
    let mut h = Harness::new();
    h.set_config(&live(60_000_000_000));
    h.issue(0x1000);
    h.complete(0x1000, 0, 0);
    assert!(h.drain().is_empty());
    assert_eq!(h.inflight(), 0);
}

#[test]
fn completion_without_issue_is_counted_and_error_still_reported() {
    if !common::require_ebpf("completion_without_issue_is_counted_and_error_still_reported") {
        return;
    }
    let mut h = Harness::new();
    h.set_config(&live(1));
    // A success with bytes and no issue: latency unknown, counted, not sent.
    h.complete(0x3000, 0, 4096);
    // An error with no issue: counted, and reported without a latency.
    h.complete(0x4000, BLK_STS_NOSPC, 4096);
    // A zero-byte success with no issue (end of a flush sequence): nothing.
    h.complete(0x5000, 0, 0);
    assert_eq!(h.stat(abi::STAT_CORR_MISSING), 2);
    let facts = h.drain();
    assert_eq!(facts.len(), 1);
    assert_eq!(facts[0].status, u32::from(BLK_STS_NOSPC));
    assert_eq!(facts[0].latency_ns, None);
}

#[test]
fn duplicate_issue_without_requeue_is_ambiguous() {
    if !common::require_ebpf("duplicate_issue_without_requeue_is_ambiguous") {
        return;
    }
    let mut h = Harness::new();
    h.set_config(&live(1));
    h.issue(0x1000);
    h.issue(0x1000);
    assert_eq!(h.inflight(), 1);
    h.complete(0x1000, 0, 0);
    assert_eq!(h.inflight(), 0);
    assert!(h.drain().is_empty(), "no latency from an ambiguous pair");
    assert_eq!(h.stat(abi::STAT_CORR_DUP), 1);
    // The same pointer correlates cleanly again afterwards.
    h.issue(0x1000);
    h.complete(0x1000, BLK_STS_NOSPC, 512);
    let facts = h.drain();
    assert_eq!(facts.len(), 1);
    assert!(facts[0].latency_ns.is_some());
    assert_eq!(h.stat(abi::STAT_CORR_DUP), 1);
}

#[test]
fn requeue_restarts_the_clock_and_is_counted_in_the_record() {
    if !common::require_ebpf("requeue_restarts_the_clock_and_is_counted_in_the_record") {
        return;
    }
    let mut h = Harness::new();
    h.set_config(&live(1));
    h.issue(0x1000);
    h.requeue(0x1000);
    h.issue(0x1000);
    h.requeue(0x1000);
    h.issue(0x1000);
    h.complete(0x1000, 0, 0);
    let facts = h.drain();
    assert_eq!(facts.len(), 1);
    assert_eq!(facts[0].requeues, 2);
    assert!(facts[0].latency_ns.is_some());
    assert_eq!(h.stat(abi::STAT_CORR_DUP), 0);
    assert_eq!(h.inflight(), 0);
}

#[test]
fn merged_request_leaves_no_state() {
    if !common::require_ebpf("merged_request_leaves_no_state") {
        return;
    }
    let mut h = Harness::new();
    h.set_config(&live(1));
    h.issue(0x1000);
    h.merge(0x1000);
    assert_eq!(h.inflight(), 0);
}

#[test]
fn disabled_or_zero_config_creates_nothing_and_still_cleans_up() {
    if !common::require_ebpf("disabled_or_zero_config_creates_nothing_and_still_cleans_up") {
        return;
    }
    let mut h = Harness::new();
    // All-zero carrier: inert.
    h.issue(0x1000);
    assert_eq!(h.inflight(), 0);
    // Live: an entry; then the observer is switched off mid-flight.
    h.set_config(&live(1));
    h.issue(0x1000);
    h.issue(0x2000);
    assert_eq!(h.inflight(), 2);
    let mut off = live(1);
    off.flags &= !Observer::Storage.flag();
    h.set_config(&off);
    h.complete(0x1000, BLK_STS_NOSPC, 512);
    h.set_config(&TapioConfig::default());
    h.complete(0x2000, BLK_STS_NOSPC, 512);
    assert_eq!(h.inflight(), 0, "cleanup does not depend on the config");
    assert!(h.drain().is_empty(), "nothing is sent while off");
    assert_eq!(h.stat(abi::STAT_CORR_MISSING), 0);
}
