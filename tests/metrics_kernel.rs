//! Prometheus metrics for real: the agent's /metrics is OpenMetrics, and a
//! real Prometheus server (Debian's
//! package, started here on loopback with a temporary config) scrapes the
//! agent and answers a query for the anomaly a closed-port connect caused.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("TAPIO_REQUIRE_EBPF").as_deref() == Ok("1") {
            panic!("{tool} is not installed (scripts/setup.sh --test installs it)");
        }
        eprintln!("skipping: {tool} is not installed (scripts/setup.sh --test installs it)");
    }
    found
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

#[test]
fn prometheus_scrapes_the_agent_and_parses_its_openmetrics() {
    if !require_ebpf("prometheus_scrapes_the_agent_and_parses_its_openmetrics")
        || !have("prometheus")
    {
        return;
    }
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
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = get(&metrics_url).expect("GET /metrics");
        if text.contains("tapio_bpf_program_run_time_seconds_total{") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        counter(&text, "tapio_bpf_program_runs_total{observer=\"network\",program=\"handle_net__inet_sock_set_state\"}") >= 2,
        "{text}"
    );
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
    let pport = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tapio\n    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
        ),
    )
    .unwrap();
    let server = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let _server = KillOnDrop(server);
    let query = format!(
        "http://127.0.0.1:{pport}/api/v1/query?query=tapio_anomalies_total%7Btype%3D%22kernel.network.connection_refused%22%7D"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(body) = get(&query) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let value = v["data"]["result"]
                .as_array()
                .and_then(|r| r.first())
                .and_then(|r| r["value"][1].as_str())
                .and_then(|s| s.parse::<f64>().ok());
            if value.is_some_and(|x| x >= 1.0) {
                scrape_was_clean(pport);
                return;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("Prometheus never reported the anomaly; last answer: {last}");
}

/// Prometheus's own view of the scrape: the target is up with no error
/// (its OpenMetrics parser accepted every line), it read the exposition as
/// OpenMetrics, and it took the metadata: `tapio_anomalies` is a counter
/// family and the BPF map gauges arrived.
fn scrape_was_clean(pport: u16) {
    let base = format!("http://127.0.0.1:{pport}/api/v1");
    let targets: serde_json::Value =
        serde_json::from_str(&get(&format!("{base}/targets")).expect("targets")).unwrap();
    let t = &targets["data"]["activeTargets"][0];
    assert_eq!(t["health"], "up", "{targets}");
    assert_eq!(t["lastError"], "", "{targets}");
    let meta: serde_json::Value = serde_json::from_str(
        &get(&format!("{base}/metadata?metric=tapio_anomalies")).expect("metadata"),
    )
    .unwrap();
    assert_eq!(meta["data"]["tapio_anomalies"][0]["type"], "counter", "{meta}");
    let q: serde_json::Value = serde_json::from_str(
        &get(&format!("{base}/query?query=count(tapio_bpf_map_capacity)")).expect("query"),
    )
    .unwrap();
    let n = q["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok());
    assert!(n.is_some_and(|n| n >= 1.0), "{q}");
}
