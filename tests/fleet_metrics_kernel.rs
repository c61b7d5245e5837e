//! The fleet metrics (SPEC §8) from a real agent: its `/metrics` carries
//! build info, process figures of the agent process itself, observer
//! states, the applied config, BPF map fill and the configured sink's
//! queue, every known label set at 0 from the first scrape, and the whole
//! exposition stays one OpenMetrics document.

use crate::common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_real_agent_exports_the_fleet_metrics() {
    require_ebpf!();
    // It checks the OOM-kill series is still 0.
    let _serial = oom_serial();
    let started = unix_now();
    let mport = free_port();
    let agent = Agent::start(
        &format!("[metrics]\nenabled = true\naddr = \"127.0.0.1:{mport}\"\n"),
        &[],
    );
    let url = format!("http://127.0.0.1:{mport}/metrics");
    // The listener may open a moment after "config applied" is logged.
    let text = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        get_ok(&url)
    })
    .unwrap_or_else(|| panic!("no /metrics at {url}; agent log:\n{}", agent.stderr()));

    let build = format!(
        "tapio_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(must_metric(&text, &build), 1.0);

    // The agent's own process: it loaded and verified BPF programs, so it
    // has spent CPU, holds memory and many fds, and started in this test.
    assert!(must_metric(&text, "process_cpu_seconds_total") > 0.0);
    let rss = must_metric(&text, "process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 1e9, "RSS {rss}");
    assert!(must_metric(&text, "process_open_fds") > 10.0);
    let start = must_metric(&text, "process_start_time_seconds");
    // btime has whole-second resolution.
    assert!(
        start >= started - 2.0 && start <= unix_now(),
        "start {start}, test began {started}"
    );

    // Observer state: network attached on this kernel; exactly one state
    // per observer is 1, and all 16 series exist.
    assert_eq!(
        must_metric(
            &text,
            "tapio_observer_state{observer=\"network\",state=\"active\"}"
        ),
        1.0,
        "agent log:\n{}",
        agent.stderr()
    );
    for obs in ["network", "container", "storage", "node"] {
        let ones: f64 = ["active", "degraded", "unavailable", "disabled"]
            .iter()
            .map(|st| {
                must_metric(
                    &text,
                    &format!("tapio_observer_state{{observer=\"{obs}\",state=\"{st}\"}}"),
                )
            })
            .sum();
        assert_eq!(ones, 1.0, "observer {obs}");
    }
    // Standalone: config generation 1 applied at start, no controller gauge.
    assert_eq!(must_metric(&text, "tapio_config_applied"), 1.0);
    assert_eq!(must_metric(&text, "tapio_config_generation"), 1.0);
    assert!(!text.contains("tapio_controller_connected"));

    // The configured sink (stdout): its queue and every drop reason.
    assert_eq!(
        must_metric(&text, "tapio_sink_queue_capacity{sink=\"stdout\"}"),
        4096.0
    );
    let depth = must_metric(&text, "tapio_sink_queue_depth{sink=\"stdout\"}");
    assert!((0.0..=4096.0).contains(&depth));
    for reason in [
        "queue_full",
        "sink_stopped",
        "write_error",
        "rejected",
        "send_failed",
        "shutdown_timeout",
    ] {
        must_metric(
            &text,
            &format!("tapio_sink_drops_total{{sink=\"stdout\",reason=\"{reason}\"}}"),
        );
    }
    assert_eq!(
        must_metric(
            &text,
            "tapio_anomalies_total{observer=\"container\",type=\"kernel.container.oom_kill\"}"
        ),
        0.0
    );

    // BPF map fill: the per-flow table's capacity as compiled, its count
    // within it.
    // conn_owners: 1024 sets of 16 sockets; rtt_baselines: 1024 sets of 4
    // destinations.
    for (map, capacity) in [("conn_owners", 16384.0), ("rtt_baselines", 4096.0)] {
        let series = |name: &str| format!("{name}{{observer=\"network\",map=\"{map}\"}}");
        assert_eq!(
            must_metric(&text, &series("tapio_bpf_map_capacity")),
            capacity
        );
        let entries = must_metric(&text, &series("tapio_bpf_map_entries"));
        assert!((0.0..=capacity).contains(&entries), "{map}: {entries}");
    }

    // The whole exposition stays one OpenMetrics document (a real
    // Prometheus parses the agent's in tests/metrics_kernel.rs).
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
}

/// A real controller (binary, loopback, port 0) and a real agent in
/// controller mode: the controller's `/metrics` answers without the token
/// and counts the agent as registered and configured once it has applied
/// the config; the agent's `/metrics` has the controller-mode families.
#[test]
fn controller_and_agent_in_controller_mode_export_fleet_metrics() {
    require_ebpf!();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "fleet-metrics-token-0123456789\n").unwrap();
    let profile = dir.path().join("profile.yaml");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/profiles/default.yaml"
        ),
        &profile,
    )
    .unwrap();
    let controller = Controller::spawn(
        Command::new(tapio_bin())
            .args(["controller", "--listen", "127.0.0.1:0", "--profile"])
            .arg(&profile)
            .arg("--token-file")
            .arg(&token),
        Duration::from_secs(60),
    );
    let addr = controller.addr;
    let cmetrics = format!("http://{addr}/metrics");
    let text = get_ok(&cmetrics).expect("controller /metrics without a token");
    assert_eq!(must_metric(&text, "tapio_controller_agents"), 0.0, "{text}");
    assert_eq!(
        must_metric(&text, "tapio_controller_config_generation"),
        1.0
    );

    let mport = free_port();
    let endpoint = format!("http://{addr}");
    let agent = Agent::start(
        &format!("[metrics]\nenabled = true\naddr = \"127.0.0.1:{mport}\"\n"),
        &[
            "--controller-endpoint",
            &endpoint,
            "--controller-token-file",
            token.to_str().unwrap(),
            "--sink",
            "controller",
            "--heartbeat-interval",
            "5",
        ],
    );

    // Registered and, after its first heartbeat with the applied hash,
    // configured (bounded: a few heartbeat intervals).
    let mut last = String::new();
    let configured = (0..300).any(|_| {
        last = get_ok(&cmetrics).unwrap_or_default();
        let done = metric(&last, "tapio_controller_agents") == Some(1.0)
            && metric(&last, "tapio_controller_agents_unconfigured") == Some(0.0);
        if !done {
            std::thread::sleep(Duration::from_millis(100));
        }
        done
    });
    assert!(
        configured,
        "controller never counted a configured agent:\n{last}\nagent log:\n{}",
        agent.stderr()
    );
    assert_eq!(must_metric(&last, "tapio_controller_agents_stale"), 0.0);
    assert!(
        must_metric(
            &last,
            "tapio_controller_config_fetches_total{result=\"ok\"}"
        ) >= 1.0
    );
    assert_eq!(
        must_metric(
            &last,
            "tapio_controller_rejects_total{code=\"UNAUTHORIZED\"}"
        ),
        0.0
    );

    let text = get_ok(&format!("http://127.0.0.1:{mport}/metrics")).expect("agent /metrics");
    assert_eq!(must_metric(&text, "tapio_config_applied"), 1.0);
    assert_eq!(must_metric(&text, "tapio_config_generation"), 1.0);
    // Present from start in controller mode; its value follows the link
    // state the controller client records in `Shared` (unit-tested in
    // agent::metrics), so only the range is checked here.
    let connected = must_metric(&text, "tapio_controller_connected");
    assert!(connected == 0.0 || connected == 1.0, "{connected}");
    assert!(must_metric(&text, "tapio_config_fetch_total{result=\"updated\"}") >= 1.0);
    assert_eq!(
        must_metric(
            &text,
            "tapio_controller_send_failures_total{kind=\"heartbeat\"}"
        ),
        0.0
    );
    assert_eq!(
        must_metric(&text, "tapio_sink_queue_capacity{sink=\"controller\"}"),
        4096.0
    );
    drop(agent);
    drop(controller);
}
