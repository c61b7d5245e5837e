//! The shipped alert rules, end to end: a real Prometheus (Debian's
//! package, loopback, temporary config) loads `deploy/monitoring`'s rules,
//! scrapes a real agent, and fires `TapioOOMKills` for a real OOM kill in a
//! memory cgroup. It also shows why the agent creates its anomaly series at
//! 0: the series is in Prometheus before the first kill, so `increase()`
//! sees that first kill. Every rule evaluates without error.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `data` of a Prometheus API answer, if it answered with success.
fn api(url: &str) -> Option<Value> {
    let body = reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?
        .text()
        .ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    (v["status"] == "success").then(|| v["data"].clone())
}

/// Polls `query` (bounded: 600 × 100 ms) until `done` holds for its
/// result vector; returns the last result.
fn poll(
    base: &str,
    query: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Result<Vec<Value>, Vec<Value>> {
    let url = format!("{base}/api/v1/query?query={}", encode(query));
    let mut last = Vec::new();
    let found = common::poll(Duration::from_secs(60), Duration::from_millis(100), || {
        let d = api(&url)?;
        last = d["result"].as_array().cloned().unwrap_or_default();
        done(&last).then(|| last.clone())
    });
    found.ok_or(last)
}

#[test]
fn prometheus_fires_the_oom_alert_for_a_real_oom_kill() {
    require_ebpf!("prometheus", "tail");
    let Some(memory) = memcg_v1(&test_name!()) else {
        return;
    };
    let _serial = oom_serial();

    let mport = free_port();
    let agent = Agent::start(
        &format!("[metrics]\nenabled = true\naddr = \"127.0.0.1:{mport}\"\n"),
        &["--sink", "stdout"],
    );

    // The shipped rules, as the PrometheusRule carries them.
    let dir = tempfile::tempdir().unwrap();
    let rule: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/monitoring/prometheusrule.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&rule["spec"]).unwrap(),
    )
    .unwrap();
    // The job and node labels the PodMonitor would set.
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.yaml]\n\
             scrape_configs:\n  - job_name: tapio-agent\n    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n        labels: {{node: test-node}}\n"
        ),
    )
    .unwrap();
    let (_server, pport) = start_prometheus(dir.path());
    let base = format!("http://127.0.0.1:{pport}");

    // Before any kill: the OOM series is there at 0, with a few samples.
    let oom_series = r#"tapio_anomalies_total{job="tapio-agent",node="test-node",type="kernel.container.oom_kill"}"#;
    let before = poll(&base, &format!("count_over_time({oom_series}[1m])"), |r| {
        r.first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
            .is_some_and(|n| n >= 3.0)
    });
    assert!(
        before.is_ok(),
        "no OOM series scraped: {before:?}\n{}",
        agent.stderr()
    );
    let zero = poll(&base, oom_series, |r| r.len() == 1).unwrap();
    assert_eq!(zero[0]["value"][1], "0", "{zero:?}");
    let quiet = poll(&base, r#"ALERTS{alertname="TapioOOMKills"}"#, |_| true).unwrap();
    assert!(quiet.is_empty(), "fired before any kill: {quiet:?}");

    // A real OOM kill: `tail` buffers a line from /dev/zero that never ends.
    const LIMIT: u64 = 64 * 1024 * 1024;
    let (_cg, dir) = CgroupGuard::create(memory, &unique("tapio-alert-oom-"));
    std::fs::write(dir.join("memory.limit_in_bytes"), LIMIT.to_string()).expect("set the limit");
    let procs = dir.join("cgroup.procs");
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec tail /dev/zero",
            procs.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let pid = u64::from(sh.id());
    let _ = sh.wait();
    agent.wait_for("the OOM kill", Duration::from_secs(20), |v| {
        is_type(v, "kernel.container.oom_kill") && v["data"]["pid"].as_u64() == Some(pid)
    });

    let firing = poll(
        &base,
        r#"ALERTS{alertname="TapioOOMKills",alertstate="firing"}"#,
        |r| !r.is_empty(),
    );
    let firing = firing.unwrap_or_else(|last| panic!("TapioOOMKills never fired: {last:?}"));
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0]["metric"]["node"], "test-node");
    assert_eq!(firing[0]["metric"]["severity"], "warning");

    // Every shipped rule evaluated cleanly against the real exposition, and
    // the scraped agent is not "down".
    let rules = api(&format!("{base}/api/v1/rules")).expect("rules API");
    let mut n = 0;
    for group in rules["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            n += 1;
            assert_eq!(r["health"], "ok", "{r}");
            if r["name"] == "TapioAgentDown" {
                assert_eq!(r["state"], "inactive", "{r}");
            }
        }
    }
    assert!(n >= 10, "{rules}");
}
