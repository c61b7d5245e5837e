//! The file sink's retention through the built binary: bad `--retain-*`
//! values are refused at start (no privileges needed), and a running agent
//! (kernel: gated like the other kernel tests) prunes synthetic old files
//! it finds at start by age and its own burst by count, keeping exactly the
//! newest files, never a file that is not `<ULID>.json`, and counting both
//! in `tapio_sink_pruned_total`.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BOUND: Duration = Duration::from_secs(30);

#[test]
fn bad_retention_values_are_refused_at_start_with_exit_1() {
    for (args, want) in [
        (
            ["--retain-age", "7x"],
            "tapio: invalid --retain-age (retain_age) \"7x\": expected a duration like 30m, 12h or 7d",
        ),
        (
            ["--retain-files", "0"],
            "tapio: --retain-files (retain_files) must be 1 to 1000000 files, got 0",
        ),
        (
            ["--retain-bytes", "1KiB"],
            "tapio: --retain-bytes (retain_bytes) must be 1MiB to 1TiB, got 1KiB",
        ),
    ] {
        let out = Command::new(tapio_bin())
            .args(["agent", "--config", "/dev/null", "--sink", "file"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), want);
    }
}

/// The `<ULID>.json` names in `dir`, and everything else.
fn listing(dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ours = BTreeSet::new();
    let mut other = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let is_ulid = name
            .strip_suffix(".json")
            .is_some_and(|s| s.len() == 26 && ulid::Ulid::from_string(s).is_ok());
        if is_ulid {
            ours.insert(name);
        } else {
            other.insert(name);
        }
    }
    (ours, other)
}

/// Scrapes (bounded) until `pred` holds on the exposition; returns it.
fn wait_metrics(port: u16, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    wait_get(&url, BOUND, what, |_, text| pred(text)).1
}

const PRUNED_AGE: &str = "tapio_sink_pruned_total{reason=\"age\"}";
const PRUNED_FILES: &str = "tapio_sink_pruned_total{reason=\"files\"}";
const PRUNED_BYTES: &str = "tapio_sink_pruned_total{reason=\"bytes\"}";

#[test]
fn a_running_agent_prunes_old_files_by_age_and_its_burst_by_count() {
    require_ebpf!();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("occ");
    std::fs::create_dir(&data).unwrap();
    // Left by an earlier run: three files 30 days old (ULID time), and
    // files that are not occurrences.
    let old_ms = now_ms() - 30 * 86_400_000;
    for n in 0..3u128 {
        let name = format!("{}.json", ulid::Ulid::from_parts(old_ms, n));
        std::fs::write(data.join(name), b"{}\n").unwrap();
    }
    let bystanders = ["notes.json", ".hidden.json", "README"];
    for b in bystanders {
        std::fs::write(data.join(b), b"keep").unwrap();
    }
    let port = free_port();
    let mut child = Command::new(tapio_bin())
        .args([
            "agent",
            "--config",
            "/dev/null",
            "--sink",
            "file",
            "--sink",
            "stdout",
        ])
        .arg("--data-dir")
        .arg(&data)
        .args(["--retain-files", "2", "--retain-age", "7d"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = line_channel(child.stdout.take().unwrap());
    let stderr = line_channel(child.stderr.take().unwrap());
    let mut child = KillOnDrop(child);

    // The listing at start prunes the old files as aged out. Nothing else
    // is 7 days old, so this stays 3 (the count bound may already be at
    // work on occurrences from other processes on the host).
    wait_metrics(port, "the old files aged out", |t| {
        counter(t, PRUNED_AGE) == 3
    });
    // The listener answers before the observers are attached: wait for the
    // config to be applied (programs loaded, carriers written) first.
    wait_metrics(port, "the config applied", |t| {
        counter(t, "tapio_config_applied") == 1
    });
    // The host may produce occurrences of its own; these four are ours.
    let ports: Vec<u16> = (0..4).map(|_| closed_port("127.0.0.1")).collect();
    for p in &ports {
        assert!(std::net::TcpStream::connect(("127.0.0.1", *p)).is_err());
    }
    let mut emitted: BTreeSet<String> = BTreeSet::new();
    let mut seen_ports = BTreeSet::new();
    let deadline = Instant::now() + BOUND;
    while seen_ports.len() < ports.len() && Instant::now() < deadline {
        if let Ok(line) = stdout.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            emitted.insert(format!("{}.json", v["id"].as_str().unwrap()));
            let p = dport(&v) as u16;
            if is_type(&v, "kernel.network.connection_refused") && ports.contains(&p) {
                seen_ports.insert(p);
            }
        }
    }
    assert_eq!(
        seen_ports.len(),
        ports.len(),
        "refusals seen: {seen_ports:?}"
    );
    // At least 4 written, 2 kept: at least 2 pruned by count.
    let text = wait_metrics(port, "the burst pruned by count", |t| {
        counter(t, PRUNED_FILES) >= 2
    });
    assert_eq!(counter(&text, PRUNED_AGE), 3, "{text}");
    // SAFETY: kill(2) on the pid of a child we own and have not reaped.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + BOUND;
    let mut log = String::new();
    while !log.contains("agent stopped") && Instant::now() < deadline {
        if let Ok(line) = stderr.recv_timeout(Duration::from_millis(200)) {
            log.push_str(&line);
            log.push('\n');
        }
    }
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("file=0"),
        "the file sink delivered everything: {log}"
    );
    // Whatever the agent printed after our burst, up to its stop.
    while let Ok(line) = stdout.recv_timeout(Duration::from_millis(200)) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        emitted.insert(format!("{}.json", v["id"].as_str().unwrap()));
    }
    let (ours, other) = listing(&data);
    // Exactly the two newest occurrences the agent emitted are left.
    let newest: BTreeSet<String> = emitted.iter().rev().take(2).cloned().collect();
    assert_eq!(ours, newest, "emitted {emitted:?}");
    let mut want: BTreeSet<String> = bystanders.iter().map(|s| s.to_string()).collect();
    want.insert(".agent-status.json".into());
    assert_eq!(other, want);
    assert_eq!(counter(&text, PRUNED_BYTES), 0, "{text}");
}
