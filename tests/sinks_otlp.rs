//! The otlp sink against real receivers: payloads decoded by the official
//! OpenTelemetry proto definitions (Python `opentelemetry-proto`), a real
//! OTLP collector (`rotel` from PyPI, its OTLP/HTTP receiver and debug log)
//! receiving one resource per pod, request headers and gzip on the wire,
//! and the retry policy (`Retry-After` in seconds and as a date, capped;
//! only 429/502/503/504 retried). Two kernel tests run the built agent:
//! its refusals reach the collector, and its TOML headers and gzip reach
//! the wire without the header value ever appearing in its log.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::{json, Value};
use tapio::agent::metrics::Metrics;
use tapio::agent::sinks::http::PostPolicy;
use tapio::agent::sinks::otlp::{
    otlp_sink, Identity, OtlpCompression, OtlpEncoding, OtlpHeaders, OtlpOptions, Secret,
};
use tapio::agent::sinks::SinkHandle;
use tapio::wire::evidence::Container;
use tapio::wire::Emitted;

/// Where a test occurrence happened.
#[derive(Clone, Copy)]
enum Place {
    PodA,
    PodB,
    Node,
}

const UID_A: &str = "5f0c1f8e-0a4b-4f3e-9d2c-3b1a2c4d5e6f";
const UID_B: &str = "a1b2c3d4-e5f6-4a5b-8c7d-9e0f1a2b3c4d";
const CTR_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const CTR_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// A refusal numbered `n` (its destination port), from a worker thread
/// (tid != pid) when `n` is odd.
fn occ(n: u32, place: Place) -> Arc<Emitted> {
    let container = match place {
        Place::PodA => Some(Container {
            container_id: CTR_A.into(),
            runtime: Some("containerd"),
            cgroup_path: "/kubepods.slice/pod-a".into(),
            pod_uid: Some(UID_A.into()),
            pod: Some(("shop".into(), "web-7d4b9".into())),
        }),
        Place::PodB => Some(Container {
            container_id: CTR_B.into(),
            runtime: None,
            cgroup_path: "/kubepods.slice/pod-b".into(),
            pod_uid: Some(UID_B.into()),
            pod: None,
        }),
        Place::Node => None,
    };
    refused_occurrence(n, if n % 2 == 1 { 4243 } else { 4242 }, container)
}

/// The batch every payload test sends: pod A, the node, pod B, interleaved.
fn batch() -> Vec<Arc<Emitted>> {
    vec![
        occ(1, Place::PodA),
        occ(2, Place::Node),
        occ(3, Place::PodB),
        occ(4, Place::PodA),
        occ(5, Place::Node),
        occ(6, Place::PodA),
    ]
}

fn policy() -> PostPolicy {
    PostPolicy {
        max_batch: 100,
        max_wait: Duration::from_secs(30),
        attempts: 3,
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(5),
        request_timeout: Duration::from_secs(5),
        retry_after_cap: Duration::from_secs(10),
    }
}

fn options(
    encoding: OtlpEncoding,
    compression: OtlpCompression,
    agent_id: &str,
    headers: &[&str],
) -> OtlpOptions {
    let flags: Vec<Secret> = headers.iter().map(|h| h.parse().unwrap()).collect();
    OtlpOptions {
        encoding,
        compression,
        headers: OtlpHeaders::from_flags(&flags).unwrap(),
        identity: Identity {
            node_name: "node-a".into(),
            agent_id: agent_id.into(),
        },
    }
}

/// Sends `occs` through a fresh otlp sink to `url` and closes it (which
/// flushes); returns the sink's metrics.
fn send(url: &str, opts: OtlpOptions, p: PostPolicy, occs: &[Arc<Emitted>]) -> Arc<Metrics> {
    let metrics = Metrics::new();
    let sink = otlp_sink(url, opts, p, metrics.clone()).unwrap();
    let h = SinkHandle::spawn(Box::new(sink), metrics.clone()).unwrap();
    for o in occs {
        h.offer(o.clone());
    }
    h.close();
    metrics
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

/// The resource attributes every resource of agent `id` carries.
fn base_resource(agent_id: &str) -> BTreeMap<String, String> {
    [
        ("service.name", "tapio"),
        ("service.version", env!("CARGO_PKG_VERSION")),
        ("service.instance.id", agent_id),
        ("host.name", "node-a"),
        ("k8s.node.name", "node-a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The resources `batch()` must produce, in order: pod A, node, pod B,
/// with the destination ports of their records.
fn expected_resources(agent_id: &str) -> Vec<(BTreeMap<String, String>, Vec<u64>)> {
    let with = |extra: &[(&str, &str)]| {
        let mut m = base_resource(agent_id);
        for (k, v) in extra {
            m.insert(k.to_string(), v.to_string());
        }
        m
    };
    vec![
        (
            with(&[
                ("container.id", CTR_A),
                ("k8s.pod.uid", UID_A),
                ("k8s.pod.name", "web-7d4b9"),
                ("k8s.namespace.name", "shop"),
            ]),
            vec![1, 4, 6],
        ),
        (with(&[]), vec![2, 5]),
        (
            with(&[("container.id", CTR_B), ("k8s.pod.uid", UID_B)]),
            vec![3],
        ),
    ]
}

/// Every record attribute of `occ(4, Place::PodA)` (main thread), as text.
fn expected_record_attrs(n: u64, main_thread: bool) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        (
            "tapio.occurrence.id",
            occ(n as u32, Place::Node).id.to_string(),
        ),
        ("error.type", "CONNECTION_REFUSED".into()),
        ("tapio.outcome", "failure".into()),
        ("process.pid", "4242".into()),
        (
            "thread.id",
            if main_thread { "4242" } else { "4243" }.into(),
        ),
        ("thread.name", "curl".into()),
        ("network.type", "ipv4".into()),
        ("network.local.address", "127.0.0.1".into()),
        ("network.local.port", "50000".into()),
        ("network.peer.address", "127.0.0.1".into()),
        ("network.peer.port", n.to_string()),
        ("tapio.netns", "4026531840".into()),
        ("tapio.count", "1".into()),
        ("tapio.cause", "rst".into()),
        ("tapio.errno", "ECONNREFUSED".into()),
        ("tapio.config_generation", "7".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if main_thread {
        m.insert("process.executable.name".into(), "curl".into());
    }
    m
}

const OTLP_CHECK: &str = r#"
import json, sys
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
enc, path = sys.argv[1], sys.argv[2]
data = open(path, 'rb').read()
req = ExportLogsServiceRequest()
if enc == 'protobuf':
    req.ParseFromString(data)
else:
    json_format.Parse(data, req)
def attrs(kvs):
    out = {}
    for kv in kvs:
        v = kv.value
        out[kv.key] = str(getattr(v, v.WhichOneof('value')))
    return out
out = []
for rl in req.resource_logs:
    assert len(rl.scope_logs) == 1, rl
    sl = rl.scope_logs[0]
    recs = []
    for r in sl.log_records:
        recs.append({"time": r.time_unix_nano, "observed": r.observed_time_unix_nano,
                     "sev": r.severity_number, "sev_text": r.severity_text,
                     "event_name": r.event_name, "body": r.body.string_value,
                     "attrs": attrs(r.attributes)})
    out.append({"resource": attrs(rl.resource.attributes),
                "scope": [sl.scope.name, sl.scope.version], "records": recs})
print(json.dumps(out))
"#;

#[test]
fn otlp_payloads_decode_with_the_official_proto_definitions() {
    let Some(py) = python_venv("otlp", &["opentelemetry-proto>=1.33", "protobuf"]) else {
        return;
    };
    for encoding in [OtlpEncoding::Protobuf, OtlpEncoding::Json] {
        for compression in [OtlpCompression::None, OtlpCompression::Gzip] {
            let what = format!("{encoding:?}/{compression:?}");
            let rx = Receiver::start(vec![], false);
            let metrics = send(
                &rx.url(""),
                options(
                    encoding,
                    compression,
                    "01AGENTDECODE",
                    &["X-Api-Key=k-123", "x-tenant=t1"],
                ),
                policy(),
                &batch(),
            );
            assert_eq!(
                sink_drops(&metrics.encode(), "otlp", "rejected"),
                0,
                "{what}"
            );
            let reqs = rx.requests.lock().unwrap().clone();
            assert_eq!(reqs.len(), 1, "{what}: one batch, one request");
            let (path, head, body) = &reqs[0];
            assert_eq!(path, "/v1/logs");
            let head = head.to_ascii_lowercase();
            let ctype = match encoding {
                OtlpEncoding::Protobuf => "application/x-protobuf",
                OtlpEncoding::Json => "application/json",
            };
            assert!(
                head.contains(&format!("content-type: {ctype}\r\n")),
                "{head}"
            );
            assert!(head.contains("x-api-key: k-123\r\n"), "{head}");
            assert!(head.contains("x-tenant: t1\r\n"), "{head}");
            let body = match compression {
                OtlpCompression::Gzip => {
                    assert!(head.contains("content-encoding: gzip\r\n"), "{head}");
                    let raw = gunzip(body);
                    assert!(body.len() < raw.len(), "{what}: gzip did not shrink");
                    raw
                }
                OtlpCompression::None => {
                    assert!(!head.contains("content-encoding"), "{head}");
                    body.clone()
                }
            };
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("body");
            std::fs::write(&file, &body).unwrap();
            let enc = match encoding {
                OtlpEncoding::Protobuf => "protobuf",
                OtlpEncoding::Json => "json",
            };
            let out = Command::new(&py)
                .args(["-c", OTLP_CHECK, enc, file.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            let got = v.as_array().unwrap();
            let want = expected_resources("01AGENTDECODE");
            assert_eq!(got.len(), want.len(), "{what}: {v:#}");
            for (g, (res, ports)) in got.iter().zip(&want) {
                let res_got: BTreeMap<String, String> =
                    serde_json::from_value(g["resource"].clone()).unwrap();
                assert_eq!(&res_got, res, "{what}");
                assert_eq!(g["scope"], json!(["tapio", env!("CARGO_PKG_VERSION")]));
                let recs = g["records"].as_array().unwrap();
                let got_ports: Vec<u64> = recs
                    .iter()
                    .map(|r| {
                        r["attrs"]["network.peer.port"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap()
                    })
                    .collect();
                assert_eq!(&got_ports, ports, "{what}");
                for r in recs {
                    let n: u64 = r["attrs"]["network.peer.port"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert_eq!(r["time"], 1_800_000_000_000_000_000u64 + n);
                    assert!(r["observed"].as_u64().unwrap() > 1_700_000_000_000_000_000);
                    assert_eq!(r["sev"], 13);
                    assert_eq!(r["sev_text"], "warning");
                    assert_eq!(r["event_name"], "kernel.network.connection_refused");
                    assert_eq!(
                        r["body"],
                        format!("connect to 127.0.0.1:{n} refused (rst), count=1")
                    );
                    let attrs: BTreeMap<String, String> =
                        serde_json::from_value(r["attrs"].clone()).unwrap();
                    let mut want = expected_record_attrs(n, n % 2 == 0);
                    if n == 1 || n == 4 || n == 6 {
                        // Not resource attributes: they stay on the record.
                        want.insert("tapio.container_runtime".into(), "containerd".into());
                        want.insert("tapio.cgroup_path".into(), "/kubepods.slice/pod-a".into());
                    }
                    if n == 3 {
                        want.insert("tapio.cgroup_path".into(), "/kubepods.slice/pod-b".into());
                    }
                    assert_eq!(attrs, want, "{what} record {n}");
                }
            }
        }
    }
}

// ---- a real collector: rotel (PyPI), OTLP/HTTP receiver + debug log ----

/// A running rotel collector printing every log it receives (its debug
/// exporter, detailed) to a file; killed on drop.
struct Rotel {
    _child: KillOnDrop,
    out: PathBuf,
    http: u16,
    _dir: tempfile::TempDir,
}

impl Rotel {
    /// Installs rotel into a venv under target/ (skips, or fails under
    /// TAPIO_REQUIRE_EBPF=1, when that is impossible) and starts it on a
    /// free loopback port.
    fn start() -> Option<Rotel> {
        let py = python_venv("rotel", &["rotel==0.0.1a15"])?;
        let out = Command::new(&py)
            .args([
                "-c",
                "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let bin = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let dir = tempfile::tempdir().unwrap();
        // rotel cannot bind port 0 (it panics), so a free port is picked
        // and handed over; another process may take it in between, so a
        // start that does not come up is retried on new ports.
        for attempt in 0..5 {
            let (http, grpc) = (closed_port("127.0.0.1"), closed_port("127.0.0.1"));
            let out = dir.path().join(format!("out-{attempt}.txt"));
            let child = Command::new(&bin)
                .args(["start", "--exporter", "blackhole"])
                .args(["--debug-log", "logs", "--debug-log-verbosity", "detailed"])
                .arg("--otlp-http-endpoint")
                .arg(format!("127.0.0.1:{http}"))
                .arg("--otlp-grpc-endpoint")
                .arg(format!("127.0.0.1:{grpc}"))
                .arg("--pid-file")
                .arg(dir.path().join("rotel.pid"))
                .arg("--log-file")
                .arg(dir.path().join("rotel.log"))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(dir.path().join("err.txt")).unwrap())
                .spawn()
                .expect("spawn rotel-agent");
            let mut child = KillOnDrop(child);
            // Up (true) or exited (false), whichever comes first.
            let up = poll(Duration::from_secs(20), Duration::from_millis(50), || {
                if std::net::TcpStream::connect(("127.0.0.1", http)).is_ok() {
                    return Some(true);
                }
                matches!(child.0.try_wait(), Ok(Some(_))).then_some(false)
            });
            if up == Some(true) {
                return Some(Rotel {
                    _child: child,
                    out,
                    http,
                    _dir: dir,
                });
            }
            eprintln!(
                "rotel did not come up on port {http} (attempt {attempt}): {}",
                std::fs::read_to_string(dir.path().join("err.txt")).unwrap_or_default()
            );
        }
        panic!("rotel never came up");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn printed(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits (bounded) until the resources rotel printed for `agent_id`
    /// hold `n` records; returns those resources.
    fn wait_records(&self, agent_id: &str, n: usize) -> Vec<SeenResource> {
        let count = |seen: &Vec<SeenResource>| seen.iter().map(|r| r.records.len()).sum::<usize>();
        let seen = settle(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                parse_debug_log(&self.printed())
                    .into_iter()
                    .filter(|r| {
                        r.attrs.get("service.instance.id").map(String::as_str)
                            == Some(&format!("Str({agent_id})"))
                    })
                    .collect()
            },
            |seen| count(seen) >= n,
        );
        assert_eq!(count(&seen), n, "rotel printed:\n{}", self.printed());
        seen
    }
}

#[derive(Debug, Default)]
struct SeenResource {
    attrs: BTreeMap<String, String>,
    records: Vec<SeenRecord>,
}

#[derive(Debug, Default)]
struct SeenRecord {
    fields: BTreeMap<String, String>,
    attrs: BTreeMap<String, String>,
}

/// Parses rotel's detailed debug log: `ResourceLog #i`, `Resource
/// attributes:` then `-> key: Type(value)` lines, `LogRecord #j`, `Field:
/// value` lines, `Attributes:` then `-> key: Type(value)` lines.
fn parse_debug_log(text: &str) -> Vec<SeenResource> {
    let mut out: Vec<SeenResource> = Vec::new();
    let mut in_resource_attrs = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("ResourceLog #") {
            out.push(SeenResource::default());
            in_resource_attrs = false;
        } else if t == "Resource attributes:" {
            in_resource_attrs = true;
        } else if t.starts_with("ScopeLogs #") {
            in_resource_attrs = false;
        } else if t.starts_with("LogRecord #") {
            in_resource_attrs = false;
            if let Some(r) = out.last_mut() {
                r.records.push(SeenRecord::default());
            }
        } else if let Some(kv) = t.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(": ") else {
                continue;
            };
            let Some(r) = out.last_mut() else { continue };
            if in_resource_attrs {
                r.attrs.insert(k.into(), v.into());
            } else if let Some(rec) = r.records.last_mut() {
                rec.attrs.insert(k.into(), v.into());
            }
        } else if let Some((k, v)) = t.split_once(": ") {
            if let Some(rec) = out.last_mut().and_then(|r| r.records.last_mut()) {
                rec.fields.insert(k.into(), v.into());
            }
        }
    }
    out
}

/// `Str(v)` for each value, as rotel prints string attributes.
fn as_printed(m: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.clone(), format!("Str({v})")))
        .collect()
}

#[test]
fn a_real_collector_receives_one_resource_per_pod() {
    let Some(rotel) = Rotel::start() else { return };
    for (encoding, compression, agent_id) in [
        (OtlpEncoding::Protobuf, OtlpCompression::Gzip, "01AGENTPBGZ"),
        (OtlpEncoding::Protobuf, OtlpCompression::None, "01AGENTPB"),
        (OtlpEncoding::Json, OtlpCompression::Gzip, "01AGENTJSONGZ"),
    ] {
        let what = format!("{encoding:?}/{compression:?}");
        let metrics = send(
            &rotel.url(),
            options(encoding, compression, agent_id, &["x-api-key=k-123"]),
            policy(),
            &batch(),
        );
        let text = metrics.encode();
        assert_eq!(sink_drops(&text, "otlp", "rejected"), 0, "{what}: {text}");
        assert_eq!(
            sink_drops(&text, "otlp", "send_failed"),
            0,
            "{what}: {text}"
        );
        let seen = rotel.wait_records(agent_id, 6);
        // One resource per pod/container and one for the node, as sent.
        let want = expected_resources(agent_id);
        assert_eq!(seen.len(), want.len(), "{what}: {seen:#?}");
        for (s, (res, ports)) in seen.iter().zip(&want) {
            assert_eq!(s.attrs, as_printed(res), "{what}");
            let got_ports: Vec<String> = s
                .records
                .iter()
                .map(|r| r.attrs["network.peer.port"].clone())
                .collect();
            let want_ports: Vec<String> = ports.iter().map(|p| format!("Int({p})")).collect();
            assert_eq!(got_ports, want_ports, "{what}");
            for r in &s.records {
                let n: u64 = r.attrs["network.peer.port"]
                    .trim_start_matches("Int(")
                    .trim_end_matches(')')
                    .parse()
                    .unwrap();
                assert_eq!(r.fields["EventName"], "kernel.network.connection_refused");
                assert_eq!(
                    r.fields["Body"],
                    format!("Str(connect to 127.0.0.1:{n} refused (rst), count=1)")
                );
                assert_eq!(r.fields["SeverityNumber"], "SEVERITY_NUMBER_WARN(13)");
                assert_eq!(r.fields["SeverityText"], "warning");
                assert_eq!(
                    r.fields["Timestamp"],
                    (1_800_000_000_000_000_000u64 + n).to_string()
                );
                assert_eq!(r.attrs["thread.name"], "Str(curl)");
                assert_eq!(r.attrs["process.pid"], "Int(4242)");
                assert_eq!(
                    r.attrs.get("process.executable.name").map(String::as_str),
                    (n % 2 == 0).then_some("Str(curl)"),
                    "{what} record {n}"
                );
                for gone in [
                    "event.name",
                    "tapio.timestamp_ns",
                    "container.id",
                    "k8s.pod.uid",
                ] {
                    assert!(!r.attrs.contains_key(gone), "{what} record {n}: {gone}");
                }
            }
        }
    }
}

// ---- retries ----

/// A loopback receiver answering each request with the next scripted
/// status and extra header lines (then 200), one request per connection;
/// records when each request had fully arrived.
struct Scripted {
    addr: std::net::SocketAddr,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    fn start(script: Vec<(u16, String)>) -> Scripted {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let a = arrivals.clone();
        std::thread::spawn(move || {
            let mut script = std::collections::VecDeque::from(script);
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                while !buf.ends_with(b"\r\n\r\n") && buf.len() < 64 * 1024 {
                    match s.read(&mut byte) {
                        Ok(1) => buf.push(byte[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                if s.read_exact(&mut body).is_err() {
                    continue;
                }
                a.lock().unwrap().push(Instant::now());
                let (status, extra) = script.pop_front().unwrap_or((200, String::new()));
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n"
                );
                let _ = s.write_all(resp.as_bytes());
            }
        });
        Scripted { addr, arrivals }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Sends one occurrence against `script`; returns the request arrival
/// times and the sink's metrics text.
fn one_through(script: Vec<(u16, String)>, p: PostPolicy) -> (Vec<Instant>, String) {
    let rx = Scripted::start(script);
    let arrivals = rx.arrivals.clone();
    // A full batch is sent at once with every retry (a flush at close
    // may be cut short for a prompt exit).
    let p = PostPolicy { max_batch: 1, ..p };
    let sender = std::thread::spawn(move || {
        send(
            &rx.url(),
            options(OtlpEncoding::Protobuf, OtlpCompression::None, "01A", &[]),
            p,
            &[occ(1, Place::Node)],
        )
        .encode()
    });
    // Bounded: a sink that slept as long as a receiver asked (an hour,
    // say) fails here instead of hanging the test.
    let finished = poll(Duration::from_secs(30), Duration::from_millis(20), || {
        sender.is_finished().then_some(())
    });
    assert!(finished.is_some(), "the sink is still waiting after 30 s");
    let text = sender.join().unwrap();
    let arrived = arrivals.lock().unwrap().clone();
    (arrived, text)
}

#[test]
fn retry_after_in_seconds_replaces_the_backoff() {
    let (t, text) = one_through(vec![(429, "Retry-After: 1\r\n".into())], policy());
    assert_eq!(t.len(), 2, "{text}");
    // Backoff alone would have waited at most 5 ms.
    assert!(t[1] - t[0] >= Duration::from_secs(1), "{:?}", t[1] - t[0]);
    assert_eq!(sink_writes(&text, "otlp", "ok"), 1, "{text}");
    assert_eq!(sink_drops(&text, "otlp", "send_failed"), 0, "{text}");
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let (t, text) = one_through(vec![(503, format!("Retry-After: {at}\r\n"))], policy());
    assert_eq!(t.len(), 2, "{text}");
    // The date has whole seconds: between 2 and 3 s after it was written.
    assert!(
        t[1] - t[0] >= Duration::from_millis(1500),
        "{:?}",
        t[1] - t[0]
    );
    assert_eq!(sink_writes(&text, "otlp", "ok"), 1, "{text}");
}

#[test]
fn a_long_retry_after_is_capped() {
    let p = PostPolicy {
        retry_after_cap: Duration::from_millis(300),
        ..policy()
    };
    // An hour, capped to 300 ms: the retry arrives while the test waits.
    let (t, text) = one_through(vec![(503, "Retry-After: 3600\r\n".into())], p);
    assert_eq!(t.len(), 2, "{text}");
    assert!(
        t[1] - t[0] >= Duration::from_millis(300),
        "{:?}",
        t[1] - t[0]
    );
    assert_eq!(sink_writes(&text, "otlp", "ok"), 1, "{text}");
}

#[test]
fn only_429_502_503_504_are_retried_every_other_status_is_final() {
    for status in [429u16, 502, 503, 504] {
        let (t, text) = one_through(vec![(status, String::new())], policy());
        assert_eq!(t.len(), 2, "{status} is retried: {text}");
        assert_eq!(sink_writes(&text, "otlp", "ok"), 1, "{status}: {text}");
        assert_eq!(sink_drops(&text, "otlp", "rejected"), 0, "{status}: {text}");
    }
    // Final even with a Retry-After: resending the same bytes cannot help.
    for status in [400u16, 401, 403, 404, 408, 413, 500, 501] {
        let (t, text) = one_through(vec![(status, "Retry-After: 1\r\n".into())], policy());
        assert_eq!(t.len(), 1, "{status} is final: {text}");
        assert_eq!(sink_drops(&text, "otlp", "rejected"), 1, "{status}: {text}");
        assert_eq!(sink_writes(&text, "otlp", "ok"), 0, "{status}: {text}");
    }
}

// ---- a real agent to a real collector ----

#[test]
fn the_agent_sends_its_refusals_to_a_real_collector() {
    require_ebpf!();
    let Some(rotel) = Rotel::start() else { return };
    let agent = Agent::start(
        "",
        &[
            "--sink",
            "stdout",
            "--sink",
            "otlp",
            "--otlp-endpoint",
            &rotel.url(),
            "--otlp-compression",
            "gzip",
            "--otlp-header",
            "x-api-key=agent-s3cr3t",
            "--node-name",
            "otlp-node",
        ],
    );
    let port = closed_port("127.0.0.1");
    // From a spawned thread: its tid is not the process's pid.
    std::thread::Builder::new()
        .name("otlp-refused".into())
        .spawn(move || std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err())
        .unwrap()
        .join()
        .unwrap();
    let v = agent.wait_for("refusal to the closed port", Duration::from_secs(20), |v| {
        is_type(v, "kernel.network.connection_refused") && dport(v) == u64::from(port)
    });
    assert_eq!(v["data"]["comm"], "otlp-refused");
    assert_eq!(v["data"]["pid"], std::process::id());
    let agent_id = agent
        .stderr()
        .split("agent_id=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .map(String::from)
        .expect("agent_id in the start log line");
    // The sink flushes within its 1 s max wait; rotel prints on receipt.
    let record = poll(Duration::from_secs(30), Duration::from_millis(200), || {
        parse_debug_log(&rotel.printed())
            .into_iter()
            .filter(|r| r.attrs.get("service.instance.id") == Some(&format!("Str({agent_id})")))
            .flat_map(|r| {
                let res = r.attrs.clone();
                r.records.into_iter().map(move |rec| (res.clone(), rec))
            })
            .find(|(_, rec)| rec.attrs.get("network.peer.port") == Some(&format!("Int({port})")))
    })
    .unwrap_or_else(|| {
        panic!(
            "rotel never printed the refusal to {port}:\n{}\nagent:\n{}",
            rotel.printed(),
            agent.stderr()
        )
    });
    let (res, rec) = record;
    assert_eq!(res["host.name"], "Str(otlp-node)");
    assert_eq!(res["k8s.node.name"], "Str(otlp-node)");
    assert_eq!(res["service.name"], "Str(tapio)");
    assert_eq!(rec.fields["EventName"], "kernel.network.connection_refused");
    assert_eq!(rec.attrs["thread.name"], "Str(otlp-refused)");
    assert_eq!(
        rec.attrs["process.pid"],
        format!("Int({})", std::process::id())
    );
    assert!(
        !rec.attrs.contains_key("process.executable.name"),
        "{rec:?}"
    );
    assert_eq!(
        rec.attrs["tapio.occurrence.id"],
        format!("Str({})", v["id"].as_str().unwrap())
    );
    assert!(!agent.stderr().contains("s3cr3t"), "{}", agent.stderr());
}

#[test]
fn the_agent_sends_its_headers_and_gzip_on_the_wire() {
    require_ebpf!();
    let rx = Receiver::start(vec![], false);
    // One header from the file, none on the command line: the file's set
    // is used (a flag would replace it).
    let toml = "otlp_compression = \"gzip\"\notlp_headers = { \"X-Api-Key\" = \"file-s3cr3t\" }\n";
    let agent = Agent::start(
        toml,
        &[
            "--sink",
            "stdout",
            "--sink",
            "otlp",
            "--otlp-endpoint",
            &rx.url(""),
            "--node-name",
            "wire-node",
        ],
    );
    let port = closed_port("127.0.0.1");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    agent.wait_for("refusal to the closed port", Duration::from_secs(20), |v| {
        is_type(v, "kernel.network.connection_refused") && dport(v) == u64::from(port)
    });
    // The sink flushes within its 1 s max wait.
    let needle = format!("connect to 127.0.0.1:{port} refused");
    let (head, raw) = poll(Duration::from_secs(20), Duration::from_millis(100), || {
        rx.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, head, body)| (head.to_ascii_lowercase(), gunzip(body)))
            .find(|(_, raw)| String::from_utf8_lossy(raw).contains(&needle))
    })
    .unwrap_or_else(|| {
        panic!(
            "no request carried the refusal to {port}; agent:\n{}",
            agent.stderr()
        )
    });
    assert!(head.contains("x-api-key: file-s3cr3t\r\n"), "{head}");
    assert!(head.contains("content-encoding: gzip\r\n"), "{head}");
    assert!(
        head.contains("content-type: application/x-protobuf\r\n"),
        "{head}"
    );
    // Protobuf strings are stored as-is: the resource names the node.
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.contains("wire-node") && text.contains("k8s.node.name"),
        "{text}"
    );
    assert!(!agent.stderr().contains("s3cr3t"), "{}", agent.stderr());
}
