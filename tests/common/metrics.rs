//! Reading what the agent and the controller export over HTTP: bounded
//! GETs, series values from a Prometheus text exposition, Prometheus' own
//! checker and server. Loopback only.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{counter, free_port, poll, KillOnDrop};

/// (status, body) of a GET with a 5 s timeout, or `None` when nothing
/// answered.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().unwrap_or_default()))
}

/// GETs `url` (bounded by `limit`) until `pred` holds on (status, body);
/// returns that answer, or panics with the last one.
pub fn wait_get(
    url: &str,
    limit: Duration,
    what: &str,
    pred: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let mut last = None;
    let answer = poll(limit, Duration::from_millis(100), || {
        let (code, body) = http_get(url)?;
        if pred(code, &body) {
            return Some((code, body));
        }
        last = Some((code, body));
        None
    });
    answer.unwrap_or_else(|| panic!("{url}: never {what}; last answer {last:?}"))
}

/// The body of a GET that answered 2xx, else `None`.
pub fn get_ok(url: &str) -> Option<String> {
    http_get(url)
        .filter(|(code, _)| (200..300).contains(code))
        .map(|(_, body)| body)
}

/// The value of one exact series (name and labels as written) in a
/// Prometheus text exposition, if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// [`metric`], or a panic that shows the exposition.
pub fn must_metric(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

/// Asserts that `promtool check metrics` (Prometheus' own checker) accepts
/// `text` as a classic text exposition; the caller has checked that
/// promtool is installed (`require_tools!`).
pub fn assert_promtool_accepts(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Prometheus server (the distribution's package) on a free
/// loopback port, reading `dir/prometheus.yml` and keeping its TSDB under
/// `dir/data`; killed when the guard drops. Returns the guard and the port.
pub fn start_prometheus(dir: &Path) -> (KillOnDrop, u16) {
    let port = free_port();
    let server = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    (KillOnDrop(server), port)
}

/// `tapio_sink_<family>_total{sink="<sink>",<label>="<value>"}` from an
/// exposition (0 when the series is absent).
fn sink_series(text: &str, family: &str, sink: &str, label: &str, value: &str) -> u64 {
    counter(
        text,
        &format!("tapio_sink_{family}_total{{sink=\"{sink}\",{label}=\"{value}\"}}"),
    )
}

/// `tapio_sink_writes_total` of sink `sink` with this `result`.
pub fn sink_writes(text: &str, sink: &str, result: &str) -> u64 {
    sink_series(text, "writes", sink, "result", result)
}

/// `tapio_sink_drops_total` of sink `sink` for this `reason`.
pub fn sink_drops(text: &str, sink: &str, reason: &str) -> u64 {
    sink_series(text, "drops", sink, "reason", reason)
}
