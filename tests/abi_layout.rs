//! The C header and the Rust mirror describe the same bytes: this test
//! parses `struct tapio_config` and the event structs out of
//! `bpf/include/tapio_abi.h`, lays them out with C's rules (natural
//! alignment, arrays, nested structs), and compares every field offset and
//! the sizes with the Rust side. The compile-time asserts on both sides
//! catch size drift; this catches two fields swapped.

use std::collections::HashMap;

use tapio::agent::abi::{self, TapioConfig};

fn header() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bpf/include/tapio_abi.h"
    ))
    .expect("read tapio_abi.h")
}

/// (field name, offset) in declaration order, and the struct size.
fn c_layout(
    src: &str,
    name: &str,
    known: &HashMap<String, (usize, usize)>,
) -> (Vec<(String, usize)>, usize) {
    let start = src
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not in header"));
    let body = &src[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("\n};").unwrap()];
    let mut off = 0usize;
    let mut max_align = 1usize;
    let mut fields = Vec::new();
    for line in body.lines() {
        let code = line.split("/*").next().unwrap().trim();
        if code.is_empty() {
            continue;
        }
        let code = code.trim_end_matches(';');
        let mut parts = code.split_whitespace().collect::<Vec<_>>();
        let decl = parts.pop().unwrap();
        let ty = parts.join(" ");
        let (fname, count) = match decl.find('[') {
            Some(i) => {
                let n = &decl[i + 1..decl.len() - 1];
                let n = n.parse::<usize>().unwrap_or(16); // TAPIO_MAX_IGNORE_EXIT_CODES
                (decl[..i].to_string(), n)
            }
            None => (decl.to_string(), 1),
        };
        let (size, align) = match ty.as_str() {
            "__u8" | "char" => (1, 1),
            "__u16" => (2, 2),
            "__u32" | "__s32" => (4, 4),
            "__u64" => (8, 8),
            other => {
                let s = other.strip_prefix("struct ").expect("known type");
                known[s]
            }
        };
        off = off.div_ceil(align) * align;
        fields.push((fname, off));
        off += size * count;
        max_align = max_align.max(align);
    }
    (fields, off.div_ceil(max_align) * max_align)
}

#[test]
fn tapio_config_matches_c_field_by_field() {
    let src = header();
    let (fields, size) = c_layout(&src, "tapio_config", &HashMap::new());
    assert_eq!(size, size_of::<TapioConfig>());
    let rust: HashMap<&str, usize> = [
        (
            "abi_version",
            std::mem::offset_of!(TapioConfig, abi_version),
        ),
        ("generation", std::mem::offset_of!(TapioConfig, generation)),
        ("flags", std::mem::offset_of!(TapioConfig, flags)),
        ("_pad0", std::mem::offset_of!(TapioConfig, _pad0)),
        (
            "net_refused_min_count",
            std::mem::offset_of!(TapioConfig, net_refused_min_count),
        ),
        (
            "net_refused_window_ms",
            std::mem::offset_of!(TapioConfig, net_refused_window_ms),
        ),
        (
            "net_retransmit_min_count",
            std::mem::offset_of!(TapioConfig, net_retransmit_min_count),
        ),
        (
            "net_retransmit_window_ms",
            std::mem::offset_of!(TapioConfig, net_retransmit_window_ms),
        ),
        (
            "net_rtt_multiplier_permille",
            std::mem::offset_of!(TapioConfig, net_rtt_multiplier_permille),
        ),
        (
            "net_rtt_min_baseline_samples",
            std::mem::offset_of!(TapioConfig, net_rtt_min_baseline_samples),
        ),
        (
            "net_rtt_abs_us",
            std::mem::offset_of!(TapioConfig, net_rtt_abs_us),
        ),
        ("_pad1", std::mem::offset_of!(TapioConfig, _pad1)),
        (
            "ctr_exit_scope",
            std::mem::offset_of!(TapioConfig, ctr_exit_scope),
        ),
        (
            "ctr_ignore_exit_codes_count",
            std::mem::offset_of!(TapioConfig, ctr_ignore_exit_codes_count),
        ),
        (
            "ctr_ignore_exit_codes",
            std::mem::offset_of!(TapioConfig, ctr_ignore_exit_codes),
        ),
        (
            "sto_slow_io_ns",
            std::mem::offset_of!(TapioConfig, sto_slow_io_ns),
        ),
        (
            "sto_critical_io_ns",
            std::mem::offset_of!(TapioConfig, sto_critical_io_ns),
        ),
        (
            "node_sample_period_ms",
            std::mem::offset_of!(TapioConfig, node_sample_period_ms),
        ),
        (
            "node_cpu_stall_permille",
            std::mem::offset_of!(TapioConfig, node_cpu_stall_permille),
        ),
        (
            "node_ipc_drop_permille",
            std::mem::offset_of!(TapioConfig, node_ipc_drop_permille),
        ),
        (
            "node_mem_mpki_milli",
            std::mem::offset_of!(TapioConfig, node_mem_mpki_milli),
        ),
        (
            "node_psi_mem_permille",
            std::mem::offset_of!(TapioConfig, node_psi_mem_permille),
        ),
        (
            "node_psi_cpu_permille",
            std::mem::offset_of!(TapioConfig, node_psi_cpu_permille),
        ),
        (
            "node_min_baseline_samples",
            std::mem::offset_of!(TapioConfig, node_min_baseline_samples),
        ),
        ("_pad2", std::mem::offset_of!(TapioConfig, _pad2)),
        ("_reserved", std::mem::offset_of!(TapioConfig, _reserved)),
    ]
    .into_iter()
    .collect();
    assert_eq!(fields.len(), rust.len(), "field count differs: {fields:?}");
    for (name, off) in &fields {
        assert_eq!(rust.get(name.as_str()), Some(off), "field {name}");
    }
    assert!(src.contains(&format!("#define TAPIO_ABI_VERSION {}", abi::ABI_VERSION)));
}

#[test]
fn network_event_offsets_match_decode() {
    let src = header();
    let mut known = HashMap::new();
    let (_, hdr) = c_layout(&src, "tapio_event_hdr", &known);
    assert_eq!(hdr, abi::EVENT_HDR_SIZE);
    known.insert("tapio_event_hdr".to_string(), (hdr, 8));
    let (fields, size) = c_layout(&src, "tapio_net_event", &known);
    assert_eq!(size, abi::NET_EVENT_SIZE);
    let at = |n: &str| {
        fields
            .iter()
            .find(|(f, _)| f == n)
            .map(|(_, o)| *o)
            .unwrap()
    };
    use abi::net::*;
    for (name, off) in [
        ("pid", PID),
        ("tid", TID),
        ("comm", COMM),
        ("saddr", SADDR),
        ("daddr", DADDR),
        ("family", FAMILY),
        ("sport", SPORT),
        ("dport", DPORT),
        ("flags", FLAGS),
        ("sk_err", SK_ERR),
        ("srtt_us", SRTT_US),
        ("state", STATE),
        ("netns", NETNS),
        ("cgroup_id", CGROUP_ID),
        ("rtt_baseline_us", RTT_BASELINE_US),
        ("rtt_samples", RTT_SAMPLES),
    ] {
        assert_eq!(at(name), off, "tapio_net_event.{name}");
    }
    for (name, value) in [
        (
            "TAPIO_EV_NET_CONNECT_FAIL",
            abi::EV_NET_CONNECT_FAIL as usize,
        ),
        ("TAPIO_EV_NET_RETRANSMIT", abi::EV_NET_RETRANSMIT as usize),
        ("TAPIO_EV_NET_RTT", abi::EV_NET_RTT as usize),
        ("TAPIO_STAT_RB_FULL", abi::STAT_RB_FULL),
        ("TAPIO_STAT_CFG_ABI", abi::STAT_CFG_ABI),
        ("TAPIO_STAT_MAX", abi::STAT_MAX),
    ] {
        assert!(
            src.lines().any(|l| {
                let mut w = l.split_whitespace();
                w.next() == Some("#define")
                    && w.next() == Some(name)
                    && w.next() == Some(&value.to_string())
            }),
            "{name} != {value} in the header"
        );
    }
}
