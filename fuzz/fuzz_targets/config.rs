//! The agent's TOML config file: `agent::config::parse_file` on the file's
//! text, then `AgentConfig::merge` with no flags, as `tapio agent` does at
//! start, then what start-up does with the result (kernel carrier bytes,
//! classifiers).
//!
//! Invariants: a config that merges has at least one sink and no sink
//! twice, a heartbeat of at least 5 s, every sink's endpoint, and a
//! standalone config whose windows, counts and sample period are not zero;
//! its carrier encodes it as written; classifiers build from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapio::agent::abi::TapioConfig;
use tapio::agent::config::{parse_file, AgentArgs, AgentConfig, SinkKind};
use tapio::agent::observers::RingObservers;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = parse_file(text) else { return };
    let Ok(cfg) = AgentConfig::merge(&AgentArgs::default(), file) else {
        return;
    };

    assert!(!cfg.sinks.is_empty());
    let mut seen = cfg.sinks.clone();
    seen.sort_by_key(|s| s.as_str());
    seen.dedup();
    assert_eq!(
        seen.len(),
        cfg.sinks.len(),
        "duplicate sinks {:?}",
        cfg.sinks
    );
    assert!(cfg.heartbeat_interval_secs >= 5);
    for s in &cfg.sinks {
        match s {
            SinkKind::Http => assert!(cfg.http_endpoint.is_some()),
            SinkKind::Otlp => assert!(cfg.otlp_endpoint.is_some()),
            SinkKind::Controller => assert!(cfg.controller_endpoint.is_some()),
            _ => {}
        }
    }

    let c = &cfg.standalone;
    for v in [
        c.network.refused_window_ms,
        c.network.retransmit_window_ms,
        c.network.refused_min_count,
        c.network.retransmit_min_count,
        c.network.rtt_min_baseline_samples,
        c.network.rtt_spike_multiplier_permille,
        c.node.sample_period_ms,
    ] {
        assert_ne!(v, 0, "{c:?}");
    }
    let carrier = TapioConfig::from_compiled(c, 1);
    assert_eq!(carrier.net_rtt_abs_us, c.network.rtt_spike_abs_us);
    assert_eq!(carrier.sto_slow_io_ns, c.storage.slow_io_threshold_ns);
    assert_eq!(
        carrier.ctr_ignore_exit_codes_count as usize,
        c.container.ignore_exit_codes.len()
    );
    let _ = carrier.to_bytes();
    let _ = RingObservers::new(c);
});
