//! [`EvidenceProfile`] → [`CompiledConfig`]: defaults for every knob left
//! out, then unit conversion into the ABI's units. Infallible: validation
//! already guaranteed every value fits its field.

use super::schema::EvidenceProfile;
use crate::wire::config::CompiledConfig;

/// Nanoseconds → a u32 field in `unit_ns` units. Validated ranges keep the
/// result well inside u32 and a whole multiple; saturate rather than panic.
fn to_u32(ns: u64, unit_ns: u64) -> u32 {
    u32::try_from(ns / unit_ns).unwrap_or(u32::MAX)
}

const MS: u64 = 1_000_000;
const US: u64 = 1_000;

/// Compiles a validated profile. Every knob lands in exactly one
/// `CompiledConfig` field, which maps one-to-one onto `tapio_config`.
pub fn compile(p: &EvidenceProfile) -> CompiledConfig {
    let mut c = CompiledConfig {
        profile: p.name.clone(),
        ..CompiledConfig::default()
    };

    let (n, s) = (&mut c.network, &p.network);
    n.enabled = s.enabled.unwrap_or(n.enabled);
    n.refused_min_count = s.refused_min_count.unwrap_or(n.refused_min_count);
    n.refused_window_ms = s
        .refused_window_ns
        .map_or(n.refused_window_ms, |v| to_u32(v, MS));
    n.retransmit_min_count = s.retransmit_min_count.unwrap_or(n.retransmit_min_count);
    n.retransmit_window_ms = s
        .retransmit_window_ns
        .map_or(n.retransmit_window_ms, |v| to_u32(v, MS));
    n.rtt_spike_multiplier_permille = s
        .rtt_spike_multiplier_milli
        .unwrap_or(n.rtt_spike_multiplier_permille);
    n.rtt_min_baseline_samples = s
        .rtt_min_baseline_samples
        .unwrap_or(n.rtt_min_baseline_samples);
    n.rtt_spike_abs_us = s
        .rtt_spike_abs_ns
        .map_or(n.rtt_spike_abs_us, |v| to_u32(v, US));

    let (ct, s) = (&mut c.container, &p.container);
    ct.enabled = s.enabled.unwrap_or(ct.enabled);
    ct.exit_scope = s.exit_scope.unwrap_or(ct.exit_scope);
    if let Some(codes) = &s.ignore_exit_codes {
        let mut codes = codes.clone();
        codes.sort_unstable();
        codes.dedup();
        codes.truncate(crate::wire::config::MAX_IGNORE_EXIT_CODES);
        ct.ignore_exit_codes = codes;
    }

    let (st, s) = (&mut c.storage, &p.storage);
    st.enabled = s.enabled.unwrap_or(st.enabled);
    st.slow_io_threshold_ns = s.slow_io_threshold_ns.unwrap_or(st.slow_io_threshold_ns);
    st.io_latency_critical_ns = s
        .io_latency_critical_ns
        .unwrap_or(st.io_latency_critical_ns);

    let (nd, s) = (&mut c.node, &p.node);
    nd.enabled = s.enabled.unwrap_or(nd.enabled);
    nd.sample_period_ms = s
        .sample_period_ns
        .map_or(nd.sample_period_ms, |v| to_u32(v, MS));
    nd.cpu_stall_permille = s.cpu_stall_ratio_milli.unwrap_or(nd.cpu_stall_permille);
    nd.ipc_drop_permille = s.ipc_drop_ratio_milli.unwrap_or(nd.ipc_drop_permille);
    nd.memory_pressure_mpki_milli = s
        .memory_pressure_mpki_milli
        .unwrap_or(nd.memory_pressure_mpki_milli);
    nd.psi_memory_permille = s.psi_memory_ratio_milli.unwrap_or(nd.psi_memory_permille);
    nd.psi_cpu_permille = s.psi_cpu_ratio_milli.unwrap_or(nd.psi_cpu_permille);
    nd.min_baseline_samples = s.min_baseline_samples.unwrap_or(nd.min_baseline_samples);
    c
}
