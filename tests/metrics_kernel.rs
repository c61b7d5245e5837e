//! Prometheus metrics for real: the agent's /metrics is OpenMetrics, and a
//! real Prometheus server (Debian's
//! package, started here on loopback with a temporary config) scrapes the
//! agent and answers a query for the anomaly a closed-port connect caused.

use crate::common;

use std::time::Duration;

use common::*;

#[test]
fn prometheus_scrapes_the_agent_and_parses_its_openmetrics() {
    require_ebpf!("prometheus");
    // Per-program BPF stats while this fd is open (BPF_ENABLE_STATS; no
    // sysctl changes), so those families are in the exposition Prometheus parses.
    // SAFETY: BPF_ENABLE_STATS takes a plain enum and returns a new fd or -errno.
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
    };
    assert!(fd >= 0, "BPF_ENABLE_STATS failed: {fd}");
    // SAFETY: checked >= 0 above: a new fd that only this guard owns.
    let _stats = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mport = free_port();
    let agent = Agent::start(
        &format!("[metrics]\nenabled = true\naddr = \"127.0.0.1:{mport}\"\n"),
        &[],
    );
    let metrics_url = format!("http://127.0.0.1:{mport}/metrics");
    let p = closed_port("127.0.0.1");
    assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err());
    agent.wait_for("refusal", Duration::from_secs(10), |v| {
        is_type(v, "kernel.network.connection_refused") && dport(v) == u64::from(p)
    });

    // The exposition (after the drain's 1 s counter export).
    let text = settle(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || get_ok(&metrics_url).expect("GET /metrics"),
        |text| text.contains("tapio_bpf_program_run_time_seconds_total{"),
    );
    assert!(
        counter(&text, "tapio_bpf_program_runs_total{observer=\"network\",program=\"handle_net__inet_sock_set_state\"}") >= 2,
        "{text}"
    );
    // Every attached program has its skipped-runs series from the first
    // export (with or without the stats switch), so rate() works at once.
    for (observer, program) in [
        ("network", "handle_net__tcp_retransmit_skb"),
        ("network", "handle_net__kfree_skb"),
        ("container", "handle_ctr__sched_process_exit"),
        ("storage", "handle_sto__block_rq_complete"),
    ] {
        let series = format!(
            "tapio_bpf_program_missed_runs_total{{observer=\"{observer}\",program=\"{program}\"}}"
        );
        assert!(text.contains(&series), "{series}: {text}");
    }
    assert!(counter(&text, "tapio_anomalies_total{observer=\"network\",type=\"kernel.network.connection_refused\"}") >= 1, "{text}");
    assert!(
        counter(&text, "tapio_events_total{observer=\"network\"}") >= 1,
        "{text}"
    );
    // The exposition is OpenMetrics, as prometheus-client writes it; the
    // real Prometheus below parses it with its own OpenMetrics parser.
    let ctype = reqwest::blocking::Client::new()
        .get(&metrics_url)
        .timeout(Duration::from_secs(5))
        .send()
        .expect("GET /metrics")
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        ctype.as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(text.ends_with("# EOF\n"), "{text}");

    // A real Prometheus server scraping it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tapio\n    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
        ),
    )
    .unwrap();
    let (_server, pport) = start_prometheus(dir.path());
    let query = format!(
        "http://127.0.0.1:{pport}/api/v1/query?query=tapio_anomalies_total%7Btype%3D%22kernel.network.connection_refused%22%7D"
    );
    let mut last = String::new();
    let reported = poll(Duration::from_secs(60), Duration::from_millis(500), || {
        let body = get_ok(&query)?;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let value = v["data"]["result"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["value"][1].as_str())
            .and_then(|s| s.parse::<f64>().ok());
        if value.is_some_and(|x| x >= 1.0) {
            return Some(());
        }
        last = body;
        None
    });
    assert!(
        reported.is_some(),
        "Prometheus never reported the anomaly; last answer: {last}"
    );
    scrape_was_clean(pport);
}

/// Prometheus's own view of the scrape: the target is up with no error
/// (its OpenMetrics parser accepted every line), it read the exposition as
/// OpenMetrics, and it took the metadata: `tapio_anomalies` is a counter
/// family and the BPF map gauges arrived.
fn scrape_was_clean(pport: u16) {
    let base = format!("http://127.0.0.1:{pport}/api/v1");
    let targets: serde_json::Value =
        serde_json::from_str(&get_ok(&format!("{base}/targets")).expect("targets")).unwrap();
    let t = &targets["data"]["activeTargets"][0];
    assert_eq!(t["health"], "up", "{targets}");
    assert_eq!(t["lastError"], "", "{targets}");
    let meta: serde_json::Value = serde_json::from_str(
        &get_ok(&format!("{base}/metadata?metric=tapio_anomalies")).expect("metadata"),
    )
    .unwrap();
    assert_eq!(
        meta["data"]["tapio_anomalies"][0]["type"], "counter",
        "{meta}"
    );
    let q: serde_json::Value = serde_json::from_str(
        &get_ok(&format!("{base}/query?query=count(tapio_bpf_map_capacity)")).expect("query"),
    )
    .unwrap();
    let n = q["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok());
    assert!(n.is_some_and(|n| n >= 1.0), "{q}");
}
