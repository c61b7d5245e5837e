//! The fleet metrics (SPEC §8) from a real agent: its `/metrics` carries
//! build info, process figures of the agent process itself, observer
//! states, the applied config, BPF map fill and the configured sink's
//! queue, every known label set at 0 from the first scrape, and the whole
//! exposition still passes `promtool check metrics`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(url: &str) -> Option<String> {
    reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()
        .filter(|r| r.status().is_success())
        .and_then(|r| r.text().ok())
}

/// The value of one exact series, if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn a_real_agent_exports_the_fleet_metrics() {
    if !require_ebpf("a_real_agent_exports_the_fleet_metrics") {
        return;
    }
    let started = unix_now();
    let mport = free_port();
    let agent = Agent::start(
        &format!("[metrics]\nenabled = true\naddr = \"127.0.0.1:{mport}\"\n"),
        &[],
    );
    let url = format!("http://127.0.0.1:{mport}/metrics");
    // The listener may open a moment after "config applied" is logged.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        match get(&url) {
            Some(t) => break t,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            None => panic!("no /metrics at {url}; agent log:\n{}", agent.stderr()),
        }
    };

    let build = format!(
        "tapio_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(must(&text, &build), 1.0);

    // The agent's own process: it loaded and verified BPF programs, so it
    // has spent CPU, holds memory and many fds, and started in this test.
    assert!(must(&text, "process_cpu_seconds_total") > 0.0);
    let rss = must(&text, "process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 1e9, "RSS {rss}");
    assert!(must(&text, "process_open_fds") > 10.0);
    let start = must(&text, "process_start_time_seconds");
    // btime has whole-second resolution.
    assert!(
        start >= started - 2.0 && start <= unix_now(),
        "start {start}, test began {started}"
    );

    // Observer state: network attached on this kernel; exactly one state
    // per observer is 1, and all 16 series exist.
    assert_eq!(
        must(
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
                must(
                    &text,
                    &format!("tapio_observer_state{{observer=\"{obs}\",state=\"{st}\"}}"),
                )
            })
            .sum();
        assert_eq!(ones, 1.0, "observer {obs}");
    }
    // Standalone: config generation 1 applied at start, no controller gauge.
    assert_eq!(must(&text, "tapio_config_applied"), 1.0);
    assert_eq!(must(&text, "tapio_config_generation"), 1.0);
    assert!(!text.contains("tapio_controller_connected"));

    // The configured sink (stdout): its queue and every drop reason.
    assert_eq!(
        must(&text, "tapio_sink_queue_capacity{sink=\"stdout\"}"),
        4096.0
    );
    let depth = must(&text, "tapio_sink_queue_depth{sink=\"stdout\"}");
    assert!((0.0..=4096.0).contains(&depth));
    for reason in [
        "queue_full",
        "sink_stopped",
        "write_error",
        "rejected",
        "send_failed",
        "shutdown_timeout",
    ] {
        must(
            &text,
            &format!("tapio_sink_drops_total{{sink=\"stdout\",reason=\"{reason}\"}}"),
        );
    }
    assert_eq!(
        must(
            &text,
            "tapio_anomalies_total{observer=\"container\",type=\"kernel.container.oom_kill\"}"
        ),
        0.0
    );

    // BPF map fill: the per-flow table's capacity as compiled, its count
    // within it.
    let cap = "tapio_bpf_map_capacity{observer=\"network\",map=\"conn_owners\"}";
    assert_eq!(must(&text, cap), 16384.0);
    let entries = must(
        &text,
        "tapio_bpf_map_entries{observer=\"network\",map=\"conn_owners\"}",
    );
    assert!((0.0..=16384.0).contains(&entries), "{entries}");

    // The whole exposition stays valid classic text.
    let have_promtool = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_promtool {
        if std::env::var("TAPIO_REQUIRE_EBPF").as_deref() == Ok("1") {
            panic!("promtool is not installed (scripts/setup.sh --test installs it)");
        }
        eprintln!("skipping the promtool check: promtool is not installed");
        return;
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
