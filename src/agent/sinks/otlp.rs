//! `otlp` sink: OTLP/HTTP logs export to `<endpoint>/v1/logs`.
//!
//! One log record per occurrence, in one `ResourceLogs` per batch:
//! * resource attributes `service.name = "tapio"`, `service.version`,
//!   `host.name` and `k8s.node.name` (both the agent's node name);
//! * scope `tapio` with the build version;
//! * `time_unix_nano` = the kernel fact's time, `observed_time_unix_nano` =
//!   when the agent encoded it; `severity_number`/`severity_text` from the
//!   occurrence severity (info 9 INFO, warning 13 WARN, error 17 ERROR,
//!   critical 21 FATAL; the text is the occurrence's own word);
//! * `event_name` and the attribute `event.name` = the anomaly type; body =
//!   `error.message`;
//! * attributes: `tapio.occurrence.id`, `error.type` (the error code), and
//!   every `data` field. Fields with an OpenTelemetry semantic convention use
//!   it (`process.pid`, `thread.id`, `process.executable.name` for comm,
//!   `network.type`, `network.local.address/port` for saddr/sport,
//!   `network.peer.address/port` for daddr/dport, `container.id`,
//!   `k8s.pod.uid`, `k8s.pod.name`, `k8s.namespace.name`); the rest are
//!   `tapio.<field>`.
//!
//! Encodings: `protobuf` (the OTLP/HTTP default, `application/x-protobuf`)
//! and `json` (the OTLP JSON mapping, `application/json`), chosen with
//! `--otlp-encoding`. The protobuf writer below encodes exactly the
//! messages above; the tests decode both with the official
//! opentelemetry-proto definitions. `https://` endpoints are refused at
//! start-up (see `http::check_plain_http`).

use std::sync::Arc;

use serde_json::{json, Value};

use super::http::{check_plain_http, BatchPoster, PostPolicy};
use crate::agent::metrics::Metrics;
use crate::wire::{Occurrence, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpEncoding {
    Protobuf,
    Json,
}

/// An attribute value, as OTLP's AnyValue.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
}

/// One log record, encoding-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: String,
    pub event_name: String,
    pub body: String,
    pub attributes: Vec<(String, Attr)>,
}

/// Resource identity shared by every record the agent sends.
#[derive(Debug, Clone)]
pub struct Resource {
    pub node_name: String,
}

impl Resource {
    fn attributes(&self) -> Vec<(String, Attr)> {
        vec![
            ("service.name".into(), Attr::Str("tapio".into())),
            (
                "service.version".into(),
                Attr::Str(env!("CARGO_PKG_VERSION").into()),
            ),
            ("host.name".into(), Attr::Str(self.node_name.clone())),
            ("k8s.node.name".into(), Attr::Str(self.node_name.clone())),
        ]
    }
}

pub fn severity_number(s: Severity) -> i32 {
    match s {
        Severity::Info => 9,
        Severity::Warning => 13,
        Severity::Error => 17,
        Severity::Critical => 21,
        Severity::Unknown => 0,
    }
}

fn semconv_name(field: &str) -> String {
    match field {
        "pid" => "process.pid",
        "tid" => "thread.id",
        "comm" => "process.executable.name",
        "family" => "network.type",
        "saddr" => "network.local.address",
        "sport" => "network.local.port",
        "daddr" => "network.peer.address",
        "dport" => "network.peer.port",
        "container_id" => "container.id",
        "pod_uid" => "k8s.pod.uid",
        "pod_name" => "k8s.pod.name",
        "namespace" => "k8s.namespace.name",
        other => return format!("tapio.{other}"),
    }
    .to_string()
}

fn attr_of(v: &Value) -> Attr {
    match v {
        Value::String(s) => Attr::Str(s.clone()),
        Value::Bool(b) => Attr::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Attr::Int(i),
            (None, Some(u)) => Attr::Int(u.min(i64::MAX as u64) as i64),
            _ => Attr::Double(n.as_f64().unwrap_or(0.0)),
        },
        other => Attr::Str(other.to_string()),
    }
}

/// The log record for one occurrence.
pub fn record(o: &Occurrence, observed_ns: u64) -> Record {
    let mut attributes = vec![
        ("event.name".to_string(), Attr::Str(o.kind.clone())),
        ("tapio.occurrence.id".to_string(), Attr::Str(o.id.clone())),
        ("error.type".to_string(), Attr::Str(o.error.code.clone())),
        (
            "tapio.outcome".to_string(),
            Attr::Str(
                serde_json::to_value(o.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
            ),
        ),
    ];
    for (k, v) in &o.data {
        attributes.push((semconv_name(k), attr_of(v)));
    }
    Record {
        time_unix_nano: o.timestamp_ns().unwrap_or(0),
        observed_time_unix_nano: observed_ns,
        severity_number: severity_number(o.severity),
        severity_text: o.severity.as_str().to_string(),
        event_name: o.kind.clone(),
        body: o.error.message.clone(),
        attributes,
    }
}

// ---- JSON (OTLP JSON mapping: camelCase, 64-bit integers as strings) ----

fn json_value(a: &Attr) -> Value {
    match a {
        Attr::Str(s) => json!({"stringValue": s}),
        Attr::Int(i) => json!({"intValue": i.to_string()}),
        Attr::Double(d) => json!({"doubleValue": d}),
        Attr::Bool(b) => json!({"boolValue": b}),
    }
}

fn json_attrs(attrs: &[(String, Attr)]) -> Value {
    Value::Array(
        attrs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": json_value(v)}))
            .collect(),
    )
}

pub fn encode_json(resource: &Resource, records: &[Record]) -> Vec<u8> {
    let logs: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "timeUnixNano": r.time_unix_nano.to_string(),
                "observedTimeUnixNano": r.observed_time_unix_nano.to_string(),
                "severityNumber": r.severity_number,
                "severityText": r.severity_text,
                "eventName": r.event_name,
                "body": {"stringValue": r.body},
                "attributes": json_attrs(&r.attributes),
            })
        })
        .collect();
    let doc = json!({"resourceLogs": [{
        "resource": {"attributes": json_attrs(&resource.attributes())},
        "scopeLogs": [{
            "scope": {"name": "tapio", "version": env!("CARGO_PKG_VERSION")},
            "logRecords": logs,
        }],
    }]});
    serde_json::to_vec(&doc).unwrap_or_default()
}

// ---- protobuf (proto3 wire format, only the messages used here) ----

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    key(buf, field, 2);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

fn fixed64_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    key(buf, field, 1);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn any_value(a: &Attr) -> Vec<u8> {
    let mut b = Vec::new();
    match a {
        Attr::Str(s) => bytes_field(&mut b, 1, s.as_bytes()),
        Attr::Bool(v) => {
            key(&mut b, 2, 0);
            varint(&mut b, u64::from(*v));
        }
        Attr::Int(i) => {
            key(&mut b, 3, 0);
            varint(&mut b, *i as u64);
        }
        Attr::Double(d) => {
            key(&mut b, 4, 1);
            b.extend_from_slice(&d.to_le_bytes());
        }
    }
    b
}

fn key_value(k: &str, v: &Attr) -> Vec<u8> {
    let mut b = Vec::new();
    bytes_field(&mut b, 1, k.as_bytes());
    bytes_field(&mut b, 2, &any_value(v));
    b
}

fn log_record(r: &Record) -> Vec<u8> {
    let mut b = Vec::new();
    fixed64_field(&mut b, 1, r.time_unix_nano);
    key(&mut b, 2, 0);
    varint(&mut b, r.severity_number as u64);
    bytes_field(&mut b, 3, r.severity_text.as_bytes());
    bytes_field(&mut b, 5, &any_value(&Attr::Str(r.body.clone())));
    for (k, v) in &r.attributes {
        bytes_field(&mut b, 6, &key_value(k, v));
    }
    fixed64_field(&mut b, 11, r.observed_time_unix_nano);
    bytes_field(&mut b, 12, r.event_name.as_bytes());
    b
}

pub fn encode_protobuf(resource: &Resource, records: &[Record]) -> Vec<u8> {
    let mut res = Vec::new();
    for (k, v) in resource.attributes() {
        bytes_field(&mut res, 1, &key_value(&k, &v));
    }
    let mut scope = Vec::new();
    bytes_field(&mut scope, 1, b"tapio");
    bytes_field(&mut scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
    let mut scope_logs = Vec::new();
    bytes_field(&mut scope_logs, 1, &scope);
    for r in records {
        bytes_field(&mut scope_logs, 2, &log_record(r));
    }
    let mut resource_logs = Vec::new();
    bytes_field(&mut resource_logs, 1, &res);
    bytes_field(&mut resource_logs, 2, &scope_logs);
    let mut req = Vec::new();
    bytes_field(&mut req, 1, &resource_logs);
    req
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The `otlp` sink. Fails (before any connection) on a non-http endpoint.
pub fn otlp_sink(
    endpoint: &str,
    encoding: OtlpEncoding,
    node_name: &str,
    policy: PostPolicy,
    metrics: Arc<Metrics>,
) -> anyhow::Result<BatchPoster> {
    let base = check_plain_http(endpoint, "--otlp-endpoint")?;
    let url = logs_url(&base)?;
    let resource = Resource {
        node_name: node_name.to_string(),
    };
    let (content_type, encode): (&'static str, super::http::Encoder) = match encoding {
        OtlpEncoding::Protobuf => (
            "application/x-protobuf",
            Box::new(move |batch| {
                let now = now_ns();
                let recs: Vec<Record> = batch.iter().map(|o| record(o, now)).collect();
                encode_protobuf(&resource, &recs)
            }),
        ),
        OtlpEncoding::Json => (
            "application/json",
            Box::new(move |batch| {
                let now = now_ns();
                let recs: Vec<Record> = batch.iter().map(|o| record(o, now)).collect();
                encode_json(&resource, &recs)
            }),
        ),
    };
    BatchPoster::new("otlp", url, content_type, encode, policy, metrics)
}

/// `<endpoint>/v1/logs`, unless the endpoint already names that path.
pub fn logs_url(base: &reqwest::Url) -> anyhow::Result<reqwest::Url> {
    if base.path().ends_with("/v1/logs") {
        return Ok(base.clone());
    }
    let mut s = base.as_str().trim_end_matches('/').to_string();
    s.push_str("/v1/logs");
    Ok(reqwest::Url::parse(&s)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occ() -> Occurrence {
        Occurrence::new(
            ulid::Ulid::from_parts(1, 2),
            crate::wire::AnomalyType::ConnectionRefused,
            Severity::Warning,
            crate::wire::Outcome::Failure,
            "connect to 127.0.0.1:9 refused (rst), count=1".into(),
            &json!({"pid": 42, "comm": "curl", "daddr": "127.0.0.1", "dport": 9, "count": 1, "cause": "rst"}),
            3,
            1_700_000_000_123_000_000,
        )
    }

    #[test]
    fn record_maps_fields_to_semantic_conventions() {
        let r = record(&occ(), 5);
        assert_eq!(r.time_unix_nano, 1_700_000_000_123_000_000);
        assert_eq!(r.severity_number, 13);
        assert_eq!(r.severity_text, "warning");
        assert_eq!(r.event_name, "kernel.network.connection_refused");
        let get = |k: &str| {
            r.attributes
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("process.pid"), Some(Attr::Int(42)));
        assert_eq!(get("network.peer.port"), Some(Attr::Int(9)));
        assert_eq!(
            get("network.peer.address"),
            Some(Attr::Str("127.0.0.1".into()))
        );
        assert_eq!(get("tapio.count"), Some(Attr::Int(1)));
        assert_eq!(get("tapio.config_generation"), Some(Attr::Int(3)));
        assert_eq!(
            get("event.name"),
            Some(Attr::Str("kernel.network.connection_refused".into()))
        );
        assert_eq!(
            get("error.type"),
            Some(Attr::Str("CONNECTION_REFUSED".into()))
        );
    }

    #[test]
    fn kubernetes_names_use_their_semantic_conventions() {
        for (field, name) in [
            ("pod_uid", "k8s.pod.uid"),
            ("pod_name", "k8s.pod.name"),
            ("namespace", "k8s.namespace.name"),
            ("container_id", "container.id"),
            ("sender_container_id", "tapio.sender_container_id"),
            ("netns", "tapio.netns"),
        ] {
            assert_eq!(semconv_name(field), name);
        }
    }

    #[test]
    fn varints_and_urls() {
        let mut b = Vec::new();
        varint(&mut b, 300);
        assert_eq!(b, vec![0xac, 0x02]);
        let u = |s: &str| {
            logs_url(&reqwest::Url::parse(s).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(u("http://c:4318"), "http://c:4318/v1/logs");
        assert_eq!(u("http://c:4318/"), "http://c:4318/v1/logs");
        assert_eq!(u("http://c:4318/v1/logs"), "http://c:4318/v1/logs");
    }

    #[test]
    fn https_is_refused_before_anything_connects() {
        let e = otlp_sink(
            "https://127.0.0.1:1",
            OtlpEncoding::Protobuf,
            "n",
            PostPolicy::default(),
            Metrics::new(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("https is not supported"));
    }
}
