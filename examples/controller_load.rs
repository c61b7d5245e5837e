//! Simulates N agents against a running controller, every field at its
//! allowed maximum: per agent one hello, one heartbeat and one event batch
//! (one occurrence padded to [`OCCURRENCE_BYTES`], so the controller's
//! event buffer fills to its byte budget), over loopback HTTP/1.1 (one
//! connection per request). Then it fetches `/v1/status` (the summary,
//! four at once, and every page) and prints the response sizes.
//! Bounded: exactly 3 × N requests plus the status walk (at most
//! N / 500 + 1 pages), each with 10 s timeouts.
//!
//! `cargo run --release --example controller_load -- 127.0.0.1:8080 10000 [TOKEN] [--limits old] [--only load|status]`
//!
//! `--only load` skips the status requests, `--only status` the load (the
//! bench script reads the controller's memory in between).
//! `--limits old` sends the maxima the controller allowed before issue 14
//! (longer strings, more entries), to measure what they cost an old build.
//! (`scripts/bench-controller.sh` starts a controller and runs this.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tapio::wire::v1::{self, WIRE_VERSION};

/// Serialised size of the occurrence each agent sends (about).
const OCCURRENCE_BYTES: usize = 8 * 1024;

/// The per-field maxima to send.
struct Limits {
    id: usize,
    node_name: usize,
    text: usize,
    observer_name: usize,
    loss_name: usize,
    reason: usize,
    observers: usize,
    loss: usize,
}

impl Limits {
    /// What this build's controller accepts.
    fn current() -> Limits {
        Limits {
            id: v1::MAX_ID_LEN,
            node_name: v1::MAX_NODE_NAME_LEN,
            text: v1::MAX_TEXT_LEN,
            observer_name: v1::MAX_OBSERVER_NAME_LEN,
            loss_name: v1::MAX_LOSS_NAME_LEN,
            reason: v1::MAX_REASON_LEN,
            observers: v1::MAX_OBSERVERS,
            loss: v1::MAX_LOSS_COUNTERS,
        }
    }

    /// What the controller accepted before issue 14 (every string 256
    /// bytes, ids 128, 16 observers, 64 loss counters).
    fn before_issue_14() -> Limits {
        Limits {
            id: 128,
            node_name: 256,
            text: 256,
            observer_name: 256,
            loss_name: 256,
            reason: 256,
            observers: 16,
            loss: 64,
        }
    }
}

/// `prefix` padded with `fill` to exactly `len` bytes.
fn pad(prefix: &str, len: usize, fill: char) -> String {
    let mut s: String = prefix.chars().take(len).collect();
    while s.len() < len {
        s.push(fill);
    }
    s
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let line = String::from_utf8_lossy(&raw[..split.min(32)]).into_owned();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {line}")))?;
    Ok(Reply {
        status,
        body: raw[split + 4..].to_vec(),
    })
}

fn hello(l: &Limits, id: &str, i: usize) -> Value {
    let observers: Vec<String> = (0..l.observers)
        .map(|o| pad(&format!("observer{o}-"), l.observer_name, 'o'))
        .collect();
    json!({"wire_version": WIRE_VERSION, "agent_id": id,
           "node_name": pad(&format!("node-{i:05}-"), l.node_name, 'n'),
           "version": pad("0.1.0-", l.text, 'v'), "kernel": pad("6.8.0-", l.text, 'k'),
           "observers": observers})
}

fn heartbeat(l: &Limits, id: &str, i: usize) -> Value {
    let observers: Map<String, Value> = (0..l.observers)
        .map(|o| {
            (
                pad(&format!("observer{o}-"), l.observer_name, 'o'),
                json!({"state": "unavailable",
                       "reason": pad(&format!("agent {i} observer {o}: "), l.reason, 'r')}),
            )
        })
        .collect();
    let loss: Map<String, Value> = (0..l.loss)
        .map(|c| {
            (
                pad(&format!("loss{c}."), l.loss_name, 'l'),
                json!(u64::MAX - c as u64),
            )
        })
        .collect();
    json!({"wire_version": WIRE_VERSION, "agent_id": id, "config_hash": "",
           "config_version": "0", "state": "degraded",
           "reason": pad("unconfigured ", l.reason, 'u'),
           "observers": observers, "loss": loss})
}

fn batch(id: &str, i: usize) -> Value {
    let occurrence = json!({
        "id": format!("01J{i:023}"), "timestamp": "2026-01-01T00:00:00.000Z",
        "source": "tapio", "type": "kernel.network.connection_refused",
        "protocol_version": "1.0", "severity": "warning", "outcome": "failure",
        "error": {"code": "CONNECTION_REFUSED", "message": "refused"},
        "data": {"dport": 9, "padding": pad("", OCCURRENCE_BYTES, 'p')}});
    json!({"wire_version": WIRE_VERSION, "agent_id": id, "sequence": 1,
           "occurrences": [occurrence]})
}

/// Takes `--NAME VALUE` out of `args`.
fn option(args: &mut Vec<String>, name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    let value = args.get(i + 1).cloned();
    args.drain(i..(i + 2).min(args.len()));
    value
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str =
        "usage: controller_load ADDR N [TOKEN] [--limits old|current] [--only load|status]";
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let limits = match option(&mut args, "--limits").as_deref() {
        None | Some("current") => Limits::current(),
        Some("old") => Limits::before_issue_14(),
        Some(_) => return Err(USAGE.into()),
    };
    let (load, status) = match option(&mut args, "--only").as_deref() {
        None => (true, true),
        Some("load") => (true, false),
        Some("status") => (false, true),
        Some(_) => return Err(USAGE.into()),
    };
    let mut args = args.into_iter();
    let addr: SocketAddr = args.next().ok_or(USAGE)?.parse()?;
    let n: usize = args.next().ok_or(USAGE)?.parse()?;
    let token = args.next();
    let token = token.as_deref();
    let mut failures = 0;
    if load {
        failures += register(addr, n, token, &limits)?;
    }
    if status {
        failures += fetch_status(addr, n, token)?;
    }
    if failures > 0 {
        return Err(format!("{failures} requests failed").into());
    }
    Ok(())
}

/// Hello, heartbeat and one event batch per agent; returns the failures.
fn register(
    addr: SocketAddr,
    n: usize,
    token: Option<&str>,
    limits: &Limits,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut failures = 0usize;
    for i in 0..n {
        let id = pad(&format!("01SIMULATEDAGENT{i:010}-"), limits.id, 'a');
        for (path, body) in [
            (v1::PATH_HELLO, hello(limits, &id, i)),
            (v1::PATH_HEARTBEAT, heartbeat(limits, &id, i)),
            (v1::PATH_EVENTS, batch(&id, i)),
        ] {
            match request(addr, "POST", path, token, &serde_json::to_vec(&body)?) {
                Ok(r) if r.status == 200 => {}
                Ok(r) => {
                    failures += 1;
                    if failures <= 5 {
                        eprintln!(
                            "{path} for agent {i}: HTTP {}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        );
                    }
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("{path} for agent {i}: {e}");
                }
            }
        }
    }
    println!(
        "agents simulated: {n}, requests: {}, failures: {failures}",
        3 * n
    );
    Ok(failures)
}

/// The summary once, then four at once, then every page of 500; prints
/// the sizes and returns the failures.
fn fetch_status(
    addr: SocketAddr,
    n: usize,
    token: Option<&str>,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut failures = 0usize;
    let summary = request(addr, "GET", v1::PATH_STATUS, token, b"")?;
    println!(
        "GET /v1/status: HTTP {}, {} bytes",
        summary.status,
        summary.body.len()
    );
    let concurrent: Vec<_> = (0..4)
        .map(|_| {
            let token = token.map(str::to_string);
            std::thread::spawn(move || request(addr, "GET", v1::PATH_STATUS, token.as_deref(), b""))
        })
        .collect();
    for t in concurrent {
        // A failure here is a finding (e.g. a timeout), not a reason to stop.
        match t.join().map_err(|_| "status thread panicked")? {
            Ok(r) => println!(
                "concurrent GET /v1/status: HTTP {}, {} bytes",
                r.status,
                r.body.len()
            ),
            Err(e) => {
                failures += 1;
                println!("concurrent GET /v1/status: failed: {e}");
            }
        }
    }
    let mut cursor: Option<String> = None;
    let (mut pages, mut listed, mut largest) = (0usize, 0usize, 0usize);
    for _ in 0..=(n / 500 + 1) {
        let path = match &cursor {
            Some(c) => format!("{}?agents=page&limit=500&cursor={c}", v1::PATH_STATUS),
            None => format!("{}?agents=page&limit=500", v1::PATH_STATUS),
        };
        let r = request(addr, "GET", &path, token, b"")?;
        if r.status != 200 {
            return Err(format!("{path}: HTTP {}", r.status).into());
        }
        let page: Value = serde_json::from_slice(&r.body)?;
        pages += 1;
        largest = largest.max(r.body.len());
        listed += page["agents"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    println!("pages of 500: {pages}, agents listed: {listed}, largest page: {largest} bytes");
    Ok(failures)
}
