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
use tapio::agent::observers::storage::StoFact;
use tapio::agent::observers::{decode, Fact};
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
                Ok(Fact::Storage(f)) => sink.borrow_mut().push(f),
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
    require_ebpf!();
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
    require_ebpf!();
    let mut h = Harness::new();
    h.set_config(&live(60_000_000_000));
    h.issue(0x1000);
    h.complete(0x1000, 0, 0);
    assert!(h.drain().is_empty());
    assert_eq!(h.inflight(), 0);
}

#[test]
fn completion_without_issue_is_counted_and_error_still_reported() {
    require_ebpf!();
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
    require_ebpf!();
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
    require_ebpf!();
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
    require_ebpf!();
    let mut h = Harness::new();
    h.set_config(&live(1));
    h.issue(0x1000);
    h.merge(0x1000);
    assert_eq!(h.inflight(), 0);
}

#[test]
fn disabled_or_zero_config_creates_nothing_and_still_cleans_up() {
    require_ebpf!();
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

// ------------------------------------------------ a request the test owns

/// Kernel memory the test writes: one page of an mmapable BPF array, whose
/// kernel address a tiny program reveals (privileged BPF may store a map
/// value's address). Passed as the `struct request *` of a run, the
/// storage programs read exactly the fields written here, at the running
/// kernel's offsets (from its BTF), so a request's whole life — issued,
/// completion lost, struct reused — can be played with real field values.
struct CraftedRequest {
    mem: *mut u8,
    fds: [i32; 2],
    addr: u64,
    /// Byte offsets of the `struct request` fields the test sets.
    off: std::collections::HashMap<String, usize>,
}

const PAGE: usize = 4096;

impl CraftedRequest {
    fn new() -> CraftedRequest {
        use libbpf_rs::libbpf_sys as sys;
        // SAFETY: plain libbpf/libc calls with valid arguments; every
        // result is checked before use.
        unsafe {
            let opts = sys::bpf_map_create_opts {
                sz: size_of::<sys::bpf_map_create_opts>() as _,
                map_flags: 1 << 10, // BPF_F_MMAPABLE
                ..Default::default()
            };
            let mem_fd = sys::bpf_map_create(
                sys::BPF_MAP_TYPE_ARRAY,
                c"tapio_rq".as_ptr(),
                4,
                PAGE as u32,
                1,
                &opts,
            );
            assert!(mem_fd >= 0, "create the request map: {mem_fd}");
            let out_fd = sys::bpf_map_create(
                sys::BPF_MAP_TYPE_ARRAY,
                c"tapio_rq_addr".as_ptr(),
                4,
                8,
                1,
                std::ptr::null(),
            );
            assert!(out_fd >= 0, "create the address map: {out_fd}");
            let mem = libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                mem_fd,
                0,
            );
            assert_ne!(mem, libc::MAP_FAILED, "mmap the request map");
            let addr = Self::reveal(mem_fd, out_fd);
            CraftedRequest {
                mem: mem.cast(),
                fds: [mem_fd, out_fd],
                addr,
                off: request_offsets(),
            }
        }
    }

    /// Runs `r0 = lookup(mem, 0); update(out, 0, &r0)` and reads `out`.
    unsafe fn reveal(mem_fd: i32, out_fd: i32) -> u64 {
        // SAFETY: the caller passes two live BPF map fds; every raw call
        // below gets buffers and attribute structs that outlive it.
        unsafe {
            use libbpf_rs::libbpf_sys as sys;
            fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
                let mut b = [0u8; 8];
                b[0] = code;
                b[1] = (src << 4) | dst;
                b[2..4].copy_from_slice(&off.to_le_bytes());
                b[4..8].copy_from_slice(&imm.to_le_bytes());
                u64::from_le_bytes(b)
            }
            let ld_map = |dst: u8, fd: i32| [insn(0x18, dst, 1, 0, fd), insn(0, 0, 0, 0, 0)];
            let mut p = vec![insn(0x62, 10, 0, -4, 0)]; // *(u32 *)(r10 - 4) = 0
            p.extend(ld_map(1, mem_fd));
            p.push(insn(0xbf, 2, 10, 0, 0)); // r2 = r10
            p.push(insn(0x07, 2, 0, 0, -4)); // r2 -= 4
            p.push(insn(0x85, 0, 0, 0, 1)); // call map_lookup_elem
            p.push(insn(0x15, 0, 0, 9, 0)); // if r0 == 0 goto exit
            p.push(insn(0x7b, 10, 0, -16, 0)); // *(u64 *)(r10 - 16) = r0
            p.extend(ld_map(1, out_fd));
            p.push(insn(0xbf, 2, 10, 0, 0));
            p.push(insn(0x07, 2, 0, 0, -4));
            p.push(insn(0xbf, 3, 10, 0, 0));
            p.push(insn(0x07, 3, 0, 0, -16));
            p.push(insn(0xb7, 4, 0, 0, 0)); // r4 = BPF_ANY
            p.push(insn(0x85, 0, 0, 0, 2)); // call map_update_elem
            p.push(insn(0xb7, 0, 0, 0, 0)); // exit: r0 = 0
            p.push(insn(0x95, 0, 0, 0, 0));
            let prog = sys::bpf_prog_load(
                sys::BPF_PROG_TYPE_RAW_TRACEPOINT,
                c"tapio_reveal".as_ptr(),
                c"GPL".as_ptr(),
                p.as_ptr().cast(),
                p.len() as _,
                std::ptr::null_mut(),
            );
            assert!(prog >= 0, "load the address program: {prog}");
            let ctx = [0u64; 1];
            let mut run = sys::bpf_test_run_opts {
                sz: size_of::<sys::bpf_test_run_opts>() as _,
                ctx_in: ctx.as_ptr().cast(),
                ctx_size_in: 8,
                ..Default::default()
            };
            assert_eq!(sys::bpf_prog_test_run_opts(prog, &mut run), 0);
            libc::close(prog);
            let (key, mut addr) = (0u32, 0u64);
            assert_eq!(
                sys::bpf_map_lookup_elem(
                    out_fd,
                    (&key as *const u32).cast(),
                    (&mut addr as *mut u64).cast()
                ),
                0
            );
            assert_ne!(addr, 0, "the map value's address");
            addr
        }
    }

    /// Writes `bytes` at `base` + the offset of `field` (`struct.member`).
    fn put<const N: usize>(&self, base: usize, field: &str, bytes: [u8; N]) {
        let off = base + self.off[field];
        assert!(off + N <= PAGE, "{field} beyond the page");
        // SAFETY: `mem` is a live PAGE-sized shared mapping; the range was
        // checked above.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.mem.add(off), N) };
    }

    /// Makes the memory the request the block layer would hand the
    /// tracepoints: `cmd_flags`, position, size and its own issue time
    /// (0: never issued). With `stats`, its queue collects I/O statistics
    /// (so `blk_mq_start_request` stamps `io_start_time_ns`); without, the
    /// request has no queue at all. No disk either way: dev 0.
    fn set(&self, cmd_flags: u32, sector: u64, data_len: u32, io_start_ns: u64, stats: bool) {
        // The request at 0, its queue at 1 KiB, the queue's stats at 2 KiB.
        const Q: usize = 1024;
        const STATS: usize = 2048;
        // SAFETY: as in `put`.
        unsafe { std::ptr::write_bytes(self.mem, 0, PAGE) };
        self.put(0, "request.cmd_flags", cmd_flags.to_ne_bytes());
        self.put(0, "request.__sector", sector.to_ne_bytes());
        self.put(0, "request.__data_len", data_len.to_ne_bytes());
        self.put(0, "request.io_start_time_ns", io_start_ns.to_ne_bytes());
        self.put(0, "request.start_time_ns", io_start_ns.to_ne_bytes());
        if stats {
            assert!(self.off["request_queue.stats"] + 8 <= STATS - Q);
            self.put(0, "request.q", (self.addr + Q as u64).to_ne_bytes());
            self.put(
                Q,
                "request_queue.stats",
                (self.addr + STATS as u64).to_ne_bytes(),
            );
            // No stats callbacks (an empty list points at itself), but
            // accounting on: QUEUE_FLAG_STATS is set either way.
            let head = self.addr + (STATS + self.off["blk_queue_stats.callbacks"]) as u64;
            self.put(STATS, "blk_queue_stats.callbacks", head.to_ne_bytes());
            self.put(STATS + 8, "blk_queue_stats.callbacks", head.to_ne_bytes());
            self.put(STATS, "blk_queue_stats.accounting", 1i32.to_ne_bytes());
        }
    }
}

impl Drop for CraftedRequest {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `new`, closing its fds.
        unsafe {
            libc::munmap(self.mem.cast(), PAGE);
            for fd in self.fds {
                libc::close(fd);
            }
        }
    }
}

/// Byte offsets of `members` of the kernel's `struct <name>`, from its BTF.
fn offsets(
    btf: &libbpf_rs::btf::Btf<'_>,
    name: &str,
    members: &[&'static str],
) -> Vec<(&'static str, usize)> {
    use libbpf_rs::btf::types::{MemberAttr, Struct};
    let st: Struct<'_> = btf
        .type_by_name(name)
        .unwrap_or_else(|| panic!("struct {name}"));
    members
        .iter()
        .map(|member| {
            let m = st
                .iter()
                .find(|m| m.name.and_then(|n| n.to_str()) == Some(*member))
                .unwrap_or_else(|| panic!("struct {name} has no {member}"));
            let MemberAttr::Normal { offset } = m.attr else {
                panic!("{name}.{member} is a bitfield")
            };
            (*member, offset as usize / 8)
        })
        .collect()
}

/// Offsets of the fields the tests set: `struct request`'s own, and the
/// way to its queue's I/O statistics (`rq->q->stats->accounting`), keyed
/// `struct.member`.
fn request_offsets() -> std::collections::HashMap<String, usize> {
    let btf = libbpf_rs::btf::Btf::from_vmlinux().expect("vmlinux BTF");
    let mut out = std::collections::HashMap::new();
    for (name, members) in [
        (
            "request",
            &[
                "cmd_flags",
                "__sector",
                "__data_len",
                "io_start_time_ns",
                "start_time_ns",
                "q",
            ][..],
        ),
        ("request_queue", &["stats"][..]),
        ("blk_queue_stats", &["callbacks", "accounting"][..]),
    ] {
        for (m, off) in offsets(&btf, name, members) {
            out.insert(format!("{name}.{m}"), off);
        }
    }
    out
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

const REQ_OP_WRITE: u32 = 1;
const REQ_OP_FLUSH: u32 = 2;
const REQ_SYNC: u32 = 1 << 11;
const REQ_PREFLUSH: u32 = 1 << 18;

fn drops(h: &Harness) -> u64 {
    h.stat(abi::STAT_CORR_DUP) + h.stat(abi::STAT_CORR_MISSING)
}

/// Issue 16, item 6: a tracked write whose completion never comes, its
/// struct then reused by the empty PREFLUSH write of an fsync, which the
/// block layer completes without issuing. The completion must not be
/// matched to the stale issue (the 124 ms "0-byte write at sector 0"),
/// whether the queue stamps requests with their own issue time (I/O
/// statistics on) or the issue had to be remembered in the map.
#[test]
fn a_stale_entry_never_lends_its_age_to_a_reused_request() {
    require_ebpf!();
    for stats in [true, false] {
        let mut h = Harness::new();
        let rq = CraftedRequest::new();
        h.set_config(&live(1));
        let issued = mono_ns();
        rq.set(
            REQ_OP_WRITE,
            2048,
            4096,
            if stats { issued } else { 0 },
            stats,
        );
        h.issue(rq.addr);
        assert_eq!(h.inflight(), usize::from(!stats), "stats {stats}");
        // Its completion is lost. Later the struct is another request,
        // allocated afresh (io_start_time_ns zeroed) and never issued.
        std::thread::sleep(Duration::from_millis(30));
        let before = drops(&h);
        rq.set(REQ_OP_WRITE | REQ_SYNC, u64::MAX, 0, 0, stats);
        h.complete(rq.addr, 0, 0);
        let facts = h.drain();
        assert!(
            facts.is_empty(),
            "stats {stats}: a made-up latency: {facts:?}"
        );
        assert_eq!(h.inflight(), 0, "stats {stats}: the stale entry is gone");
        if !stats {
            assert_eq!(drops(&h), before + 1, "the stale entry is a counted drop");
        }
    }
}

/// The same struct, issued and completed as itself: a cache flush keeps
/// its exact latency, from either clock.
#[test]
fn a_flush_issued_and_completed_as_itself_keeps_its_latency() {
    require_ebpf!();
    for stats in [true, false] {
        let mut h = Harness::new();
        let rq = CraftedRequest::new();
        h.set_config(&live(1));
        let issued = mono_ns();
        rq.set(
            REQ_OP_FLUSH | REQ_PREFLUSH,
            0,
            0,
            if stats { issued } else { 0 },
            stats,
        );
        h.issue(rq.addr);
        std::thread::sleep(Duration::from_millis(5));
        h.complete(rq.addr, 0, 0);
        let facts = h.drain();
        assert_eq!(facts.len(), 1, "stats {stats}: {facts:?}");
        let f = &facts[0];
        assert_eq!(f.op(), REQ_OP_FLUSH);
        assert_eq!(f.cmd_flags & REQ_PREFLUSH, REQ_PREFLUSH);
        let lat = f.latency_ns.expect("a matched flush has its latency");
        assert!(
            (5_000_000..5_000_000_000).contains(&lat),
            "stats {stats}: {lat}"
        );
        assert_eq!(h.inflight(), 0);
    }
}
