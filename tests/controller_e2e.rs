//! The real `tapio controller` binary on a loopback port (port 0; the log
//! line says which), driven with a raw HTTP/1.1 client: auth, ETag/304,
//! events, 413, SIGHUP reloads (changed, unchanged, invalid), SIGTERM.
//! Every wait is a bounded poll; nothing asserts wall time.

use crate::common::{self, poll, Controller};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

const TOKEN: &str = "e2e-secret-token";
const POLL: Duration = Duration::from_millis(50);
const MAX_POLLS: usize = 400;

fn manifest(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

fn read_manifest(rel: &str) -> String {
    std::fs::read_to_string(manifest(rel)).unwrap()
}

/// Starts the controller and waits (bounded) for its "listening on" line.
fn start(args: &[&str]) -> Controller {
    Controller::spawn(
        Command::new(env!("CARGO_BIN_EXE_tapio"))
            .arg("controller")
            .args(["--listen", "127.0.0.1:0"])
            .args(args),
        Duration::from_secs(60),
    )
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One request on a fresh connection (`Connection: close`), read to EOF.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

const AUTH: (&str, &str) = ("Authorization", "Bearer e2e-secret-token");

/// `GET /v1/agents/config` for `agent-1` with `headers`.
fn get_config(addr: SocketAddr, headers: &[(&str, &str)]) -> Reply {
    http(
        addr,
        "GET",
        "/v1/agents/config?agent_id=agent-1",
        headers,
        b"",
    )
}

/// `GET /v1/status` with the token (a controller without one ignores it).
fn status(addr: SocketAddr) -> Value {
    let r = http(addr, "GET", "/v1/status", &[AUTH], b"");
    assert_eq!(r.status, 200);
    r.json()
}

/// Polls `/v1/status` until `done` holds (bounded).
fn wait_for(c: &Controller, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    poll(POLL * MAX_POLLS as u32, POLL, || {
        Some(status(c.addr)).filter(|s| done(s))
    })
    .unwrap_or_else(|| {
        panic!(
            "timed out waiting for {what}; log:\n{}",
            c.log.lock().unwrap()
        )
    })
}

fn signal(c: &Controller, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we spawned and still own.
    let rc = unsafe { libc::kill(c.child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0);
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn controller_serves_reloads_on_sighup_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.yaml");
    let token = dir.path().join("token");
    write(&profile, &read_manifest("examples/profiles/default.yaml"));
    write(&token, &format!("{TOKEN}\n"));
    let c = start(&[
        "--profile",
        profile.to_str().unwrap(),
        "--token-file",
        token.to_str().unwrap(),
        "--max-body-bytes",
        "65536",
    ]);
    let addr = c.addr;

    // Status needs the token, too; /healthz (for probes) does not.
    let r = http(addr, "GET", "/v1/status", &[], b"");
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (401, json!("UNAUTHORIZED"))
    );
    let r = http(addr, "GET", "/healthz", &[], b"");
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
    let s = status(addr);
    assert_eq!(s["config"]["config_version"], "1");
    let hash1 = s["config"]["config_hash"].as_str().unwrap().to_string();
    assert_eq!(s["controller"]["authenticated"], true);

    // Hello: refused without the token, accepted with it.
    let hello = serde_json::to_vec(&tapio::wire::v1::Hello::new(
        "agent-1",
        "node-a",
        "0.1.0",
        "6.8",
        vec![],
    ))
    .unwrap();
    let r = http(addr, "POST", "/v1/agents/hello", &[], &hello);
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (401, json!("UNAUTHORIZED"))
    );
    let r = http(addr, "POST", "/v1/agents/hello", &[AUTH], &hello);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Config with ETag, then 304.
    let r = get_config(addr, &[AUTH]);
    assert_eq!(r.status, 200);
    let etag = r.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{hash1}\""));
    assert_eq!(r.json()["config_version"], "1");
    let r = get_config(addr, &[AUTH, ("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());

    // An event batch, visible in status.
    let occ: Value =
        serde_json::from_str(&read_manifest("tests/fixtures/occurrence_oom_kill.json")).unwrap();
    let batch = json!({"wire_version": "tapio-wire/v1", "agent_id": "agent-1", "sequence": 1, "occurrences": [occ]});
    let r = http(
        addr,
        "POST",
        "/v1/events",
        &[AUTH],
        &serde_json::to_vec(&batch).unwrap(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let s = status(addr);
    assert_eq!(
        s["events"]["recent"][0]["occurrence"]["type"],
        "kernel.container.oom_kill"
    );
    assert_eq!(s["agents"][0]["batches"]["last_sequence"], 1);

    // One byte over the limit → 413.
    let mut big = br#"{"wire_version":"tapio-wire/v1","pad":""#.to_vec();
    big.resize(65536 - 2, b'x');
    big.extend_from_slice(b"\"}");
    big.push(b' ');
    assert_eq!(big.len(), 65537);
    let r = http(addr, "POST", "/v1/events", &[AUTH], &big);
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (413, json!("PAYLOAD_TOO_LARGE"))
    );

    // Changed profile + SIGHUP → generation 2 with the new hash.
    write(&profile, &read_manifest("examples/profiles/strict.yaml"));
    signal(&c, libc::SIGHUP);
    let s = wait_for(&c, "generation 2", |s| s["config"]["config_version"] == "2");
    let hash2 = s["config"]["config_hash"].as_str().unwrap().to_string();
    assert_ne!(hash2, hash1);
    assert_eq!(s["config"]["profile"], "strict");
    let r = get_config(addr, &[AUTH, ("If-None-Match", &etag)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag").unwrap(), format!("\"{hash2}\""));
    assert_eq!(r.json()["config_version"], "2");

    // Same content, reformatted → same generation.
    let strict = read_manifest("examples/profiles/strict.yaml");
    write(&profile, &format!("# reformatted\n{strict}\n\n"));
    signal(&c, libc::SIGHUP);
    let s = wait_for(&c, "unchanged reload", |s| {
        s["counters"]["reloads_unchanged"] == 1
    });
    assert_eq!(s["config"]["config_version"], "2");
    assert_eq!(s["config"]["config_hash"], hash2.as_str());

    // Invalid profile → logged, old config stays.
    write(&profile, "apiVersion: tapio.io/v1\nkind: EvidenceProfile\nmetadata: {name: x}\nspec: {observers: {gpu: {}}}\n");
    signal(&c, libc::SIGHUP);
    let s = wait_for(&c, "rejected reload", |s| {
        s["counters"]["reloads_rejected"] == 1
    });
    assert_eq!(s["config"]["config_version"], "2");
    assert_eq!(s["config"]["config_hash"], hash2.as_str());
    c.wait_log(
        "spec.observers.gpu: unknown observer",
        POLL * MAX_POLLS as u32,
    );

    // SIGTERM → clean exit 0 (bounded wait).
    let mut c = c;
    signal(&c, libc::SIGTERM);
    let code = c.wait_exit(POLL * MAX_POLLS as u32);
    assert_eq!(code, Some(0), "log:\n{}", c.log.lock().unwrap());
    let log = c.log.lock().unwrap().clone();
    assert!(!log.contains(TOKEN), "token leaked into the log:\n{log}");
    assert!(!log.contains("unauthenticated"), "{log}");
}

#[test]
fn unauthenticated_controller_warns_and_invalid_profile_refuses_to_start() {
    let c = start(&["--profile", &manifest("examples/profiles/default.yaml")]);
    assert!(c.log.lock().unwrap().contains("unauthenticated"));
    let hello =
        serde_json::to_vec(&tapio::wire::v1::Hello::new("a", "n", "v", "k", vec![])).unwrap();
    assert_eq!(
        http(c.addr, "POST", "/v1/agents/hello", &[], &hello).status,
        200
    );
    // A forged log line in an agent string is refused, never logged.
    let forged = json!({"wire_version": "tapio-wire/v1", "agent_id": "a\n2026-01-01 INFO forged\u{1b}[2J",
                        "node_name": "n\u{1b}[31mred"});
    let r = http(
        c.addr,
        "POST",
        "/v1/agents/hello",
        &[],
        &serde_json::to_vec(&forged).unwrap(),
    );
    assert_eq!(
        (r.status, r.json()["error"]["message"].clone()),
        (400, json!("agent_id must not contain control characters"))
    );
    let s = status(c.addr);
    assert_eq!(s["agent_counts"]["registered"], 1);
    let log = c.log.lock().unwrap().clone();
    assert!(!log.contains("forged") && !log.contains('\u{1b}'), "{log}");
    drop(c);

    let out = Command::new(env!("CARGO_BIN_EXE_tapio"))
        .args(["controller", "--listen", "127.0.0.1:0", "--profile"])
        .arg(manifest(
            "tests/fixtures/profiles/invalid/out_of_range.yaml",
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.observers.storage.slow_io_threshold: must be between 1ms and 60s"),
        "{err}"
    );
    assert!(!err.contains("listening"), "{err}");
}

#[test]
fn sighup_with_the_profile_swapped_for_a_fifo_does_not_wedge_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.yaml");
    write(&profile, &read_manifest("examples/profiles/default.yaml"));
    let mut c = start(&["--profile", profile.to_str().unwrap()]);
    // The profile becomes a FIFO nobody writes: a blocking open would
    // never return.
    std::fs::remove_file(&profile).unwrap();
    common::mkfifo(&profile);
    for n in 1..=3 {
        signal(&c, libc::SIGHUP);
        let s = wait_for(&c, "the FIFO reload to be rejected", |s| {
            s["counters"]["reloads_rejected"] == n
        });
        assert_eq!(s["config"]["config_version"], "1");
    }
    c.wait_log("is not a regular file (a FIFO)", POLL * MAX_POLLS as u32);
    // Still answering agents.
    let hello =
        serde_json::to_vec(&tapio::wire::v1::Hello::new("a", "n", "v", "k", vec![])).unwrap();
    assert_eq!(
        http(c.addr, "POST", "/v1/agents/hello", &[], &hello).status,
        200
    );
    // A valid profile again: the next SIGHUP applies it.
    std::fs::remove_file(&profile).unwrap();
    write(&profile, &read_manifest("examples/profiles/strict.yaml"));
    signal(&c, libc::SIGHUP);
    wait_for(&c, "generation 2", |s| s["config"]["config_version"] == "2");
    signal(&c, libc::SIGTERM);
    assert_eq!(
        c.wait_exit(POLL * MAX_POLLS as u32),
        Some(0),
        "{}",
        c.log.lock().unwrap()
    );
}

/// Runs `tapio controller` expecting it to refuse to start; returns stderr.
fn refused_start(args: &[&str]) -> String {
    let ran = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_tapio"))
            .args(["controller", "--listen", "127.0.0.1:0"])
            .args(args),
        POLL * MAX_POLLS as u32,
        false,
    );
    let (status, err) = (ran.status, ran.stderr);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(!err.contains("listening"), "{err}");
    err
}

#[test]
fn token_files_and_profiles_that_are_not_regular_files_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let profile = manifest("examples/profiles/default.yaml");
    let err = refused_start(&["--profile", &profile, "--token-file", "/dev/zero"]);
    assert!(
        err.contains(
            "failed to read token file /dev/zero: is not a regular file (a character device)"
        ),
        "{err}"
    );
    let fifo = dir.path().join("token");
    common::mkfifo(&fifo);
    let err = refused_start(&[
        "--profile",
        &profile,
        "--token-file",
        fifo.to_str().unwrap(),
    ]);
    assert!(err.contains("is not a regular file (a FIFO)"), "{err}");
    let big = dir.path().join("big-token");
    write(&big, &"x".repeat(5000));
    let err = refused_start(&["--profile", &profile, "--token-file", big.to_str().unwrap()]);
    assert!(err.contains("is larger than 4096 bytes"), "{err}");
    let err = refused_start(&["--profile", fifo.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "failed to read profile {}: is not a regular file (a FIFO)",
            fifo.display()
        )),
        "{err}"
    );
}
