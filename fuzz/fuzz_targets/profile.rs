//! Evidence Profile bytes → `profile::validate` → `compile`, as the
//! controller and `tapio profile` run them on a file.
//!
//! Invariants: a refusal names at least one issue, each with a path and a
//! message, on one line (no control characters from the document); a
//! validated profile always compiles, to values inside the documented
//! ranges (SPEC §5, `src/profile/mod.rs`); and the compiled
//! config, written back out as a profile, validates and compiles to the
//! very same config and hash (so no knob is lost or rescaled on the way).
#![no_main]

use std::fmt::Write;

use libfuzzer_sys::fuzz_target;
use tapio::profile;
use tapio::wire::config::{CompiledConfig, ExitScope, MAX_IGNORE_EXIT_CODES};

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

fn in_range<T: PartialOrd + std::fmt::Debug>(name: &str, v: T, lo: T, hi: T) {
    assert!(lo <= v && v <= hi, "{name} = {v:?} outside {lo:?}..={hi:?}");
}

/// The ranges `src/profile/mod.rs` documents, in compiled units.
fn check_ranges(c: &CompiledConfig) {
    let n = &c.network;
    in_range("refused_min_count", n.refused_min_count, 1, 1000);
    in_range("refused_window_ms", n.refused_window_ms, 10, 60_000);
    in_range("retransmit_min_count", n.retransmit_min_count, 1, 10_000);
    in_range("retransmit_window_ms", n.retransmit_window_ms, 10, 60_000);
    in_range(
        "rtt_spike_multiplier",
        n.rtt_spike_multiplier_permille,
        1_100,
        100_000,
    );
    in_range(
        "rtt_min_baseline_samples",
        n.rtt_min_baseline_samples,
        1,
        1000,
    );
    in_range("rtt_spike_abs_us", n.rtt_spike_abs_us, 100, 60_000_000);
    let codes = &c.container.ignore_exit_codes;
    assert!(codes.len() <= MAX_IGNORE_EXIT_CODES, "{codes:?}");
    assert!(
        codes.windows(2).all(|w| w[0] < w[1]),
        "not sorted and unique: {codes:?}"
    );
    assert!(codes.iter().all(|&c| c >= 1), "{codes:?}");
    let s = &c.storage;
    in_range("slow_io_threshold_ns", s.slow_io_threshold_ns, MS, 60 * S);
    in_range(
        "io_latency_critical_ns",
        s.io_latency_critical_ns,
        MS,
        600 * S,
    );
    assert!(s.io_latency_critical_ns >= s.slow_io_threshold_ns, "{s:?}");
    let d = &c.node;
    in_range("sample_period_ms", d.sample_period_ms, 100, 60_000);
    for (name, v) in [
        ("cpu_stall", d.cpu_stall_permille),
        ("ipc_drop", d.ipc_drop_permille),
        ("psi_memory", d.psi_memory_permille),
        ("psi_cpu", d.psi_cpu_permille),
    ] {
        in_range(name, v, 1, 1000);
    }
    in_range(
        "memory_pressure_mpki",
        d.memory_pressure_mpki_milli,
        1,
        1_000_000,
    );
    in_range("min_baseline_samples", d.min_baseline_samples, 1, 1000);
    let name = &c.profile;
    assert!(
        !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "metadata.name {name:?} is not a DNS label"
    );
}

fn milli(v: u32) -> String {
    format!("{}.{:03}", v / 1000, v % 1000)
}

/// Writes `c` as a profile that sets every knob explicitly.
fn render(c: &CompiledConfig) -> String {
    let (n, ct, s, d) = (&c.network, &c.container, &c.storage, &c.node);
    let mut y = String::new();
    writeln!(y, "apiVersion: tapio.io/v1\nkind: EvidenceProfile").unwrap();
    writeln!(y, "metadata:\n  name: {}\nspec:\n  observers:", c.profile).unwrap();
    writeln!(y, "    network:\n      enabled: {}", n.enabled).unwrap();
    writeln!(y, "      refused_min_count: {}", n.refused_min_count).unwrap();
    writeln!(y, "      refused_window: {}ms", n.refused_window_ms).unwrap();
    writeln!(y, "      retransmit_min_count: {}", n.retransmit_min_count).unwrap();
    writeln!(y, "      retransmit_window: {}ms", n.retransmit_window_ms).unwrap();
    writeln!(
        y,
        "      rtt_spike_multiplier: {}",
        milli(n.rtt_spike_multiplier_permille)
    )
    .unwrap();
    writeln!(
        y,
        "      rtt_min_baseline_samples: {}",
        n.rtt_min_baseline_samples
    )
    .unwrap();
    writeln!(y, "      rtt_spike_abs: {}us", n.rtt_spike_abs_us).unwrap();
    let scope = match ct.exit_scope {
        ExitScope::Init => "init",
        ExitScope::All => "all",
    };
    writeln!(
        y,
        "    container:\n      enabled: {}\n      exit_scope: {scope}",
        ct.enabled
    )
    .unwrap();
    writeln!(y, "      ignore_exit_codes: {:?}", ct.ignore_exit_codes).unwrap();
    writeln!(y, "    storage:\n      enabled: {}", s.enabled).unwrap();
    writeln!(y, "      slow_io_threshold: {}ns", s.slow_io_threshold_ns).unwrap();
    writeln!(
        y,
        "      io_latency_critical: {}ns",
        s.io_latency_critical_ns
    )
    .unwrap();
    writeln!(y, "    node:\n      enabled: {}", d.enabled).unwrap();
    writeln!(y, "      sample_period: {}ms", d.sample_period_ms).unwrap();
    writeln!(y, "      cpu_stall_ratio: {}", milli(d.cpu_stall_permille)).unwrap();
    writeln!(y, "      ipc_drop_ratio: {}", milli(d.ipc_drop_permille)).unwrap();
    writeln!(
        y,
        "      memory_pressure_mpki: {}",
        milli(d.memory_pressure_mpki_milli)
    )
    .unwrap();
    writeln!(
        y,
        "      psi_memory_ratio: {}",
        milli(d.psi_memory_permille)
    )
    .unwrap();
    writeln!(y, "      psi_cpu_ratio: {}", milli(d.psi_cpu_permille)).unwrap();
    writeln!(y, "      min_baseline_samples: {}", d.min_baseline_samples).unwrap();
    y
}

fuzz_target!(|data: &[u8]| {
    match profile::validate(data) {
        Err(issues) => {
            assert!(!issues.is_empty(), "refused without a reason");
            for i in &issues {
                assert!(!i.path.is_empty() && !i.message.is_empty(), "{i:?}");
                // Printed one per line by `tapio profile validate` and in
                // the controller's log: user text must not add lines.
                let shown = i.to_string();
                assert!(!shown.chars().any(char::is_control), "{shown:?}");
            }
        }
        Ok(p) => {
            let compiled = profile::compile(&p);
            check_ranges(&compiled);
            let text = render(&compiled);
            let again = profile::compile_bytes(text.as_bytes())
                .unwrap_or_else(|issues| panic!("re-rendered profile refused: {issues:?}\n{text}"));
            assert_eq!(again, compiled, "{text}");
            assert_eq!(again.hash(), compiled.hash());
        }
    }
});
