//! The real agent's health surface: `/healthz` and `/readyz` on the
//! metrics listener (turned on by `--metrics-addr` alone) and the status
//! file `<data-dir>/.agent-status.json`, standalone and in controller mode
//! against a loopback "controller" that answers every request with 401.
//! Needs the kernel (the agent loads its BPF objects): gated like the other
//! kernel tests.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;

const BOUND: Duration = Duration::from_secs(30);

fn status_file(agent: &Agent) -> Value {
    let path = agent.data_dir.join(".agent-status.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

/// The schema's fields, all present, with sane types.
fn check_schema(v: &Value) {
    for key in [
        "schema",
        "agent_id",
        "node_name",
        "version",
        "pid",
        "state",
        "updated_unix_ms",
        "config",
        "controller",
        "observers",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    assert_eq!(v["schema"], 1);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["agent_id"].as_str().unwrap().len(), 26, "a ULID: {v}");
    let pid = v["pid"].as_u64().unwrap();
    if v["state"] == "running" {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&cmdline).contains("agent"),
            "pid {pid} is not the agent: {v}"
        );
    }
    let observers = v["observers"].as_object().unwrap();
    let names: Vec<&str> = observers.keys().map(String::as_str).collect();
    assert_eq!(names, ["container", "network", "node", "storage"], "{v}");
    for (name, o) in observers {
        let state = o["state"].as_str().unwrap();
        assert!(
            ["active", "degraded", "unavailable", "disabled"].contains(&state),
            "{name}: {o}"
        );
        assert!(o["reason"].is_string(), "{name}: {o}");
    }
    // Network attaches on every kernel these tests run on.
    assert_eq!(v["observers"]["network"]["state"], "active", "{v}");
}

#[test]
fn standalone_agent_is_live_ready_and_writes_its_status_file() {
    require_ebpf!();
    let port = free_port();
    let mut agent = Agent::start("", &["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let base = format!("http://127.0.0.1:{port}");
    let (_, body) = wait_get(&format!("{base}/healthz"), BOUND, "200", |c, _| c == 200);
    assert_eq!(body, "ok\n");
    let (_, body) = wait_get(&format!("{base}/readyz"), BOUND, "200", |c, _| c == 200);
    assert!(body.starts_with("ready\n"), "{body}");
    let (code, text) = http_get(&format!("{base}/metrics")).unwrap();
    assert_eq!(code, 200);
    assert!(
        text.contains("tapio_http_timeouts_total{server=\"metrics\",kind=\"header\"} 0"),
        "{text}"
    );

    // The file follows a change within its 1 s tick (bounded wait).
    let v = settle(
        BOUND,
        Duration::from_millis(100),
        || status_file(&agent),
        |v| v["config"]["applied"] == true,
    );
    check_schema(&v);
    assert_eq!(v["state"], "running");
    assert_eq!(v["config"]["applied"], true, "{v}");
    assert_eq!(v["config"]["generation"], 1, "{v}");
    assert!(
        v["config"]["hash"].as_str().unwrap().starts_with("sha256:"),
        "{v}"
    );
    assert!(v["controller"].is_null(), "standalone: {v}");
    let first = v["updated_unix_ms"].as_u64().unwrap();
    // Rewritten at least every 5 s while running (bounded wait).
    let refreshed = poll(BOUND, Duration::from_millis(200), || {
        (status_file(&agent)["updated_unix_ms"].as_u64().unwrap() != first).then_some(())
    });
    assert!(refreshed.is_some(), "status file never refreshed");

    assert_eq!(agent.stop(), Some(0), "{}", agent.stderr());
    let v = status_file(&agent);
    assert_eq!(v["state"], "stopped", "{v}");
    check_schema(&v);
}

/// A loopback HTTP server answering 401 to everything; counts requests.
struct Unauthorized {
    port: u16,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Unauthorized {
    fn start() -> Unauthorized {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 8192];
                        let _ = c.read(&mut buf);
                        r.fetch_add(1, Ordering::Relaxed);
                        let body = "{\"error\":{\"code\":\"UNAUTHORIZED\",\"message\":\"missing or wrong bearer token\"}}";
                        let _ = c.write_all(
                            format!(
                                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Unauthorized {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Unauthorized {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn controller_mode_agent_refused_by_the_controller_is_live_but_not_ready() {
    require_ebpf!();
    let controller = Unauthorized::start();
    let endpoint = format!("http://127.0.0.1:{}", controller.port);
    let port = free_port();
    let mut agent = Agent::start_until(
        "",
        &[
            "--controller-endpoint",
            &endpoint,
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
        "agent running",
    );
    let base = format!("http://127.0.0.1:{port}");
    // The agent did ask the controller (and was refused).
    let called = poll(BOUND, Duration::from_millis(50), || {
        (controller.requests.load(Ordering::Relaxed) > 0).then_some(())
    });
    assert!(called.is_some(), "the agent never called the controller");
    let (_, body) = wait_get(&format!("{base}/healthz"), BOUND, "200", |c, _| c == 200);
    assert_eq!(body, "ok\n");
    let want = format!("unconfigured: waiting for the controller ({endpoint}");
    let (code, body) = wait_get(
        &format!("{base}/readyz"),
        BOUND,
        "503 unconfigured",
        |c, b| c == 503 && b.contains(&want),
    );
    assert_eq!(code, 503);
    assert!(body.starts_with(&want), "the first reason: {body}");
    // It stays unready: nothing will ever configure it.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(http_get(&format!("{base}/readyz")).unwrap().0, 503);

    let v = status_file(&agent);
    check_schema(&v);
    assert_eq!(v["state"], "running");
    assert_eq!(
        v["config"],
        serde_json::json!({"applied": false, "hash": "", "generation": 0}),
        "{v}"
    );
    assert_eq!(v["controller"]["endpoint"], endpoint.as_str(), "{v}");
    assert_ne!(v["controller"]["state"], "ok", "{v}");
    assert_eq!(agent.stop(), Some(0), "{}", agent.stderr());
    assert_eq!(status_file(&agent)["state"], "stopped");
}

/// Issue 14 item 2 on the real agent: idle sockets beyond the limit are
/// closed at once, the held ones are cut by the head deadline, both are
/// counted exactly, and a half-sent request does not hold SIGTERM.
#[test]
fn metrics_listener_sheds_idle_floods_and_does_not_hold_sigterm() {
    require_ebpf!();
    let port = free_port();
    let mut agent = Agent::start("", &["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let addr = format!("127.0.0.1:{port}");
    // 64 is the agent's fixed limit: 70 silent connections → 6 refused.
    let mut conns: Vec<std::net::TcpStream> = (0..70)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    // Poll every socket without waiting until the 6 refused ones show as
    // closed (bounded, and well inside the 5 s head deadline of the rest).
    let (mut held, mut closed_at_once) = (0, 0);
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        (held, closed_at_once) = (0, 0);
        for c in &mut conns {
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 16];
            match c.read(&mut b) {
                Ok(0) => closed_at_once += 1,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed_at_once += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held += 1,
                other => panic!("unexpected {other:?}"),
            }
            c.set_nonblocking(false).unwrap();
        }
        if closed_at_once >= 6 {
            break;
        }
    }
    assert_eq!((held, closed_at_once), (64, 6));
    // The held ones send nothing: the 5 s head deadline cuts each.
    for c in &mut conns {
        c.set_read_timeout(Some(BOUND)).unwrap();
        let mut b = [0u8; 16];
        match c.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("still open or answered: {other:?}"),
        }
    }
    let (_, text) = wait_get(&format!("http://{addr}/metrics"), BOUND, "200", |c, _| {
        c == 200
    });
    assert_eq!(
        must_metric(
            &text,
            "tapio_http_connections_rejected_total{server=\"metrics\",reason=\"limit\"}"
        ) as u64,
        6
    );
    assert_eq!(
        must_metric(
            &text,
            "tapio_http_timeouts_total{server=\"metrics\",kind=\"header\"}"
        ) as u64,
        64
    );
    // A half-sent request open at SIGTERM: the agent still exits by itself.
    let mut half = std::net::TcpStream::connect(&addr).unwrap();
    half.write_all(b"GET /metr").unwrap();
    let (code, _) = http_get(&format!("http://{addr}/healthz")).unwrap();
    assert_eq!(code, 200, "the half-sent one is held by the server now");
    assert_eq!(agent.stop(), Some(0), "{}", agent.stderr());
}

/// No kernel needed: the config is refused before the agent touches BPF.
#[test]
fn metrics_switched_off_with_an_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tapio.toml");
    std::fs::write(
        &cfg,
        "[metrics]\nenabled = false\naddr = \"127.0.0.1:9464\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(tapio_bin())
        .arg("agent")
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("[metrics] has enabled = false and addr = \"127.0.0.1:9464\""),
        "{stderr}"
    );
    assert!(
        !dir.path().join("d").exists(),
        "refused before anything ran"
    );
}
