//! The config carrier on a real kernel: an all-zero carrier and a wrong ABI
//! version keep the network program silent (and counted), a clear observer
//! flag keeps it silent, and a valid config makes it emit with its
//! generation. Uses the embedded object directly, without an agent.

#![cfg(target_os = "linux")]

use crate::common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, RingBufferBuilder};
use tapio::agent::abi::{TapioConfig, STAT_CFG_ABI, STAT_CFG_ZERO};
use tapio::agent::linux::loader::{embedded_objects, load_object};
use tapio::agent::observers::network::NetKind;
use tapio::agent::observers::{decode, Fact};
use tapio::wire::{CompiledConfig, Observer};

fn network_bytes() -> &'static [u8] {
    embedded_objects()
        .iter()
        .find(|(n, _)| *n == "network")
        .map(|(_, b)| *b)
        .expect("embedded network object")
}

/// Connects to a closed loopback port; returns the port.
fn refuse_once() -> u16 {
    let p = common::closed_port("127.0.0.1");
    assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err());
    p
}

#[test]
fn inert_and_mismatched_configs_emit_nothing_valid_config_emits() {
    require_ebpf!();
    let lo = load_object(Observer::Network, network_bytes()).expect("load network object");
    assert!(lo.failed.is_empty(), "{:?}", lo.failed);
    let seen: Rc<RefCell<Vec<Fact>>> = Rc::default();
    let events = lo.obj.maps().find(|m| m.name() == "events").unwrap();
    let mut b = RingBufferBuilder::new();
    let s = seen.clone();
    b.add(&events, move |data: &[u8]| {
        s.borrow_mut()
            .push(decode(Observer::Network, data).expect("well-formed record"));
        0
    })
    .unwrap();
    let rb = b.build().unwrap();
    let drain = |port: u16| -> Vec<Fact> {
        // Records are submitted without wake-up; poll a bounded while.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            rb.consume_raw();
            std::thread::sleep(Duration::from_millis(20));
        }
        seen.borrow()
            .iter()
            .filter(|f| matches!(f, Fact::Network(n) if n.dport == port))
            .copied()
            .collect()
    };

    // 1. Fresh map: all zero.
    let p = refuse_once();
    assert!(drain(p).is_empty(), "all-zero config must be inert");
    let stats = lo.read_stats().unwrap();
    assert!(
        stats[STAT_CFG_ZERO] > 0,
        "inert invocations are counted: {stats:?}"
    );

    // 2. Wrong ABI version.
    let good = TapioConfig::from_compiled(&CompiledConfig::default(), 5);
    lo.write_config(&TapioConfig {
        abi_version: 99,
        ..good
    })
    .unwrap();
    let p = refuse_once();
    assert!(drain(p).is_empty(), "wrong abi_version must be inert");
    let stats = lo.read_stats().unwrap();
    assert!(
        stats[STAT_CFG_ABI] > 0,
        "ABI mismatches are counted: {stats:?}"
    );

    // 3. Right version, network flag clear.
    lo.write_config(&TapioConfig {
        flags: good.flags & !Observer::Network.flag(),
        ..good
    })
    .unwrap();
    let p = refuse_once();
    assert!(drain(p).is_empty(), "a clear flag must be inert");

    // 4. Valid: one record, stamped with the generation.
    lo.write_config(&good).unwrap();
    let p = refuse_once();
    let got = drain(p);
    assert_eq!(got.len(), 1, "{got:?}");
    let Fact::Network(f) = got[0] else {
        panic!("not a network fact: {got:?}")
    };
    assert_eq!(f.kind, NetKind::ConnectFail);
    assert_eq!(f.generation, 5);
    assert_eq!(f.sk_err, 111);
    assert!(f.rst && f.owner_known);
    assert_eq!(f.pid, std::process::id());
}

#[test]
fn per_program_run_counts_are_read_from_the_kernel() {
    require_ebpf!();
    // BPF_ENABLE_STATS turns run-time accounting on only while this fd is
    // open (no sysctl is changed); closing it restores the previous state.
    // SAFETY: BPF_ENABLE_STATS takes a plain enum and returns a new fd or -errno.
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
    };
    assert!(fd >= 0, "BPF_ENABLE_STATS failed: {fd}");
    // SAFETY: checked >= 0 above: a new fd that only this guard owns.
    let _guard = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let lo = load_object(Observer::Network, network_bytes()).expect("load");
    lo.write_config(&TapioConfig::from_compiled(&CompiledConfig::default(), 1))
        .unwrap();
    refuse_once();
    let stats = lo.program_stats();
    let st = stats
        .iter()
        .find(|st| st.program == "handle_net__inet_sock_set_state")
        .expect("program listed");
    assert!(
        st.runs >= 2,
        "CLOSE->SYN_SENT and SYN_SENT->CLOSE at least: {stats:?}"
    );
    assert!(st.run_ns > 0, "{stats:?}");
    // Skipped runs are read too (they need no stats switch), and are at most
    // a small share: only a nested hit on the same CPU is skipped.
    assert!(st.missed <= st.runs, "{stats:?}");
}
