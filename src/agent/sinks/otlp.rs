//! `otlp` sink: OTLP/HTTP logs export to `<endpoint>/v1/logs`, shaped so a
//! stock OpenTelemetry Collector can enrich it (the `k8sattributes`
//! processor associates a resource by `k8s.pod.uid` or `container.id`).
//!
//! One log record per occurrence, grouped into one `ResourceLogs` per
//! place the occurrence happened:
//! * every resource carries `service.name = "tapio"`, `service.version`,
//!   `service.instance.id` (the agent id), `host.name` and `k8s.node.name`
//!   (both the agent's node name);
//! * an occurrence attributed to a container or pod adds, on the
//!   **resource**, whichever of `container.id`, `k8s.pod.uid`,
//!   `k8s.pod.name` and `k8s.namespace.name` it knows (from the data fields
//!   `container_id`, `pod_uid`, `pod_name`, `namespace`); occurrences
//!   without any of them share the node's resource. Resources appear in the
//!   order their first occurrence had in the batch, records keep their order;
//! * scope `tapio` with the build version;
//! * `time_unix_nano` = the kernel fact's time, `observed_time_unix_nano` =
//!   when the agent encoded it; `severity_number`/`severity_text` from the
//!   occurrence severity (info 9 INFO, warning 13 WARN, error 17 ERROR,
//!   critical 21 FATAL; the text is the occurrence's own word);
//! * `event_name` = the anomaly type (no `event.name` attribute: that
//!   attribute is deprecated in favour of the field); body = `error.message`;
//! * attributes: `tapio.occurrence.id`, `error.type` (the error code),
//!   `tapio.outcome`, and every other `data` field. Fields with an
//!   OpenTelemetry semantic convention use it: `pid` → `process.pid`, `tid`
//!   → `thread.id`, `comm` → `thread.name` (and also
//!   `process.executable.name`, only when `tid == pid`: a thread's comm is
//!   not its process's executable), `exit_code` → `process.exit.code`,
//!   `family` → `network.type`, `saddr/sport` → `network.local.address/port`,
//!   `daddr/dport` → `network.peer.address/port`; the rest are
//!   `tapio.<field>`. `timestamp_ns` is not repeated (it is the record's
//!   time) and the resource fields are not repeated on the record.
//!
//! Encodings: `protobuf` (the OTLP/HTTP default, `application/x-protobuf`)
//! and `json` (the OTLP JSON mapping, `application/json`), chosen with
//! `--otlp-encoding`; `--otlp-compression gzip` compresses the body
//! (`Content-Encoding: gzip`) once per batch, not per retry. `--otlp-header
//! NAME=VALUE` (TOML `otlp_headers`) adds request headers, e.g. a collector's
//! API key: values are marked sensitive and never appear in logs, errors or
//! `Debug` output. Retries and `Retry-After` are the shared poster's
//! (`http.rs`). `https://` endpoints are refused at start-up (see
//! `http::check_plain_http`).
//!
//! This module only shapes and encodes requests; it does no I/O of its own
//! and must not block: sending belongs to `BatchPoster` on the sink thread.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use anyhow::bail;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use super::http::{check_plain_http, BatchPoster, PostPolicy};
use crate::agent::metrics::Metrics;
use crate::wire::evidence::Field;
use crate::wire::{Emitted, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpEncoding {
    Protobuf,
    Json,
}

/// Request body compression (`--otlp-compression`, TOML `otlp_compression`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    #[default]
    None,
    Gzip,
}

/// Text that may hold a secret (an `--otlp-header` argument, an
/// `otlp_headers` value). Its `Debug` never shows it, so a config dump or
/// an error built from a config struct cannot leak it.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    // Never fails: clap would echo a refused argument (and so the secret)
    // in its error; `OtlpHeaders::from_flags` checks it instead.
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// Validated extra request headers. `Debug` lists the names only.
#[derive(Clone, Default)]
pub struct OtlpHeaders(Vec<(HeaderName, HeaderValue)>);

impl std::fmt::Debug for OtlpHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Headers the poster itself sets; a user value would corrupt the request.
const RESERVED_HEADERS: [&str; 6] = [
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
];

impl OtlpHeaders {
    /// From `--otlp-header NAME=VALUE` arguments.
    pub fn from_flags(args: &[Secret]) -> anyhow::Result<OtlpHeaders> {
        let mut pairs = Vec::with_capacity(args.len());
        for a in args {
            let Some((name, value)) = a.expose().split_once('=') else {
                // Not echoed: a lone token may itself be the secret.
                bail!("--otlp-header expects NAME=VALUE; an argument has no '=' (not shown)");
            };
            pairs.push((name.trim().to_string(), Secret(value.to_string())));
        }
        Self::new(pairs, "--otlp-header")
    }

    /// Checks names and values; errors name the header, never the value.
    /// A later duplicate name replaces an earlier one.
    pub fn new(
        pairs: impl IntoIterator<Item = (String, Secret)>,
        what: &str,
    ) -> anyhow::Result<OtlpHeaders> {
        let mut out: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for (name, value) in pairs {
            let Ok(hn) = HeaderName::from_bytes(name.as_bytes()) else {
                bail!("{what}: {name:?} is not a valid HTTP header name");
            };
            if RESERVED_HEADERS.contains(&hn.as_str()) {
                bail!("{what}: {hn} is set by the otlp sink itself and cannot be overridden");
            }
            let Ok(mut hv) = HeaderValue::from_str(value.expose()) else {
                bail!(
                    "{what}: the value of {hn} is not a valid HTTP header value (value not shown)"
                );
            };
            hv.set_sensitive(true);
            out.retain(|(n, _)| n != hn);
            out.push((hn, hv));
        }
        Ok(OtlpHeaders(out))
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn to_map(&self) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in &self.0 {
            m.insert(n.clone(), v.clone());
        }
        m
    }
}

/// An attribute value, as OTLP's AnyValue.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
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

/// Who sends: the same on every resource of this agent.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_name: String,
    pub agent_id: String,
}

/// Data fields that say where an occurrence happened, and the resource
/// attribute each becomes.
const PLACEMENT_FIELDS: [(&str, &str); 4] = [
    ("container_id", "container.id"),
    ("pod_uid", "k8s.pod.uid"),
    ("pod_name", "k8s.pod.name"),
    ("namespace", "k8s.namespace.name"),
];

/// Where an occurrence happened: the values of [`PLACEMENT_FIELDS`] it has
/// (all `None`: the node itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Placement([Option<String>; 4]);

impl Placement {
    pub fn of(o: &Emitted) -> Placement {
        let mut p = Placement::default();
        for (k, v) in o.fields() {
            let slot = PLACEMENT_FIELDS.iter().position(|(f, _)| *f == k);
            if let (Some(i), Field::Str(s)) = (slot, v) {
                if !s.is_empty() {
                    p.0[i] = Some(s.to_string());
                }
            }
        }
        p
    }
}

/// The records of one resource.
#[derive(Debug, Clone)]
pub struct ResourceGroup {
    pub placement: Placement,
    pub records: Vec<Record>,
}

fn resource_attributes(id: &Identity, p: &Placement) -> Vec<(String, Attr)> {
    let mut v = vec![
        ("service.name".into(), Attr::Str("tapio".into())),
        (
            "service.version".into(),
            Attr::Str(env!("CARGO_PKG_VERSION").into()),
        ),
        ("service.instance.id".into(), Attr::Str(id.agent_id.clone())),
        ("host.name".into(), Attr::Str(id.node_name.clone())),
        ("k8s.node.name".into(), Attr::Str(id.node_name.clone())),
    ];
    for ((_, attr), value) in PLACEMENT_FIELDS.iter().zip(&p.0) {
        if let Some(s) = value {
            v.push(((*attr).into(), Attr::Str(s.clone())));
        }
    }
    v
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

/// The record attribute for a data field; `None` for fields that are not
/// repeated on the record (the resource's, and the record's own time).
fn semconv_name(field: &str) -> Option<String> {
    if field == "timestamp_ns" || PLACEMENT_FIELDS.iter().any(|(f, _)| *f == field) {
        return None;
    }
    Some(
        match field {
            "pid" => "process.pid",
            "tid" => "thread.id",
            "comm" => "thread.name",
            "exit_code" => "process.exit.code",
            "family" => "network.type",
            "saddr" => "network.local.address",
            "sport" => "network.local.port",
            "daddr" => "network.peer.address",
            "dport" => "network.peer.port",
            other => return Some(format!("tapio.{other}")),
        }
        .to_string(),
    )
}

/// The attribute of a typed `data` value: text as text (a list as its
/// JSON text), integers as `int` (clamped to `i64`).
fn attr_of(v: Field<'_>) -> Attr {
    match v {
        Field::U64(u) => Attr::Int(u.min(i64::MAX as u64) as i64),
        Field::I64(i) => Attr::Int(i),
        Field::Bool(b) => Attr::Bool(b),
        Field::Str(s) => Attr::Str(s.to_string()),
        Field::Comm(c) => Attr::Str(c.to_string()),
        Field::Ip(a) => Attr::Str(a.to_string()),
        Field::Dev(major, minor) => Attr::Str(format!("{major}:{minor}")),
        Field::List(l) => Attr::Str(serde_json::to_string(l).unwrap_or_default()),
    }
}

/// The log record for one occurrence, from its typed fields.
pub fn record(o: &Emitted, observed_ns: u64) -> Record {
    let kind = o.anomaly();
    let mut attributes = vec![
        (
            "tapio.occurrence.id".to_string(),
            Attr::Str(o.id.to_string()),
        ),
        (
            "error.type".to_string(),
            Attr::Str(kind.error_code().to_string()),
        ),
        (
            "tapio.outcome".to_string(),
            Attr::Str(o.outcome.as_str().to_string()),
        ),
    ];
    let (mut pid, mut tid, mut comm) = (None, None, None);
    for (k, v) in o.fields() {
        match (k, v) {
            ("pid", Field::U64(p)) => pid = Some(p),
            ("tid", Field::U64(t)) => tid = Some(t),
            ("comm", Field::Comm(c)) => comm = Some(c),
            _ => {}
        }
        if let Some(name) = semconv_name(k) {
            attributes.push((name, attr_of(v)));
        }
    }
    // The main thread's comm is the process's executable name (as the
    // kernel truncates it); another thread's comm is only the thread's.
    if let (Some(p), Some(t), Some(comm)) = (pid, tid, comm) {
        if p == t {
            attributes.push((
                "process.executable.name".to_string(),
                Attr::Str(comm.to_string()),
            ));
        }
    }
    Record {
        time_unix_nano: o.timestamp_ns,
        observed_time_unix_nano: observed_ns,
        severity_number: severity_number(o.severity),
        severity_text: o.severity.as_str().to_string(),
        event_name: kind.as_str().to_string(),
        body: o.message(),
        attributes,
    }
}

/// Records grouped by resource: one group per placement, in the order each
/// placement first appears; records keep their order within a group.
pub fn group(batch: &[Arc<Emitted>], observed_ns: u64) -> Vec<ResourceGroup> {
    let mut groups: Vec<ResourceGroup> = Vec::new();
    let mut index: HashMap<Placement, usize> = HashMap::new();
    for o in batch {
        let p = Placement::of(o);
        let i = *index.entry(p.clone()).or_insert_with(|| {
            groups.push(ResourceGroup {
                placement: p,
                records: Vec::new(),
            });
            groups.len() - 1
        });
        groups[i].records.push(record(o, observed_ns));
    }
    groups
}

// ---- JSON (OTLP JSON mapping: camelCase, 64-bit integers as strings) ----

fn json_value(a: &Attr) -> Value {
    match a {
        Attr::Str(s) => json!({"stringValue": s}),
        Attr::Int(i) => json!({"intValue": i.to_string()}),
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

pub fn encode_json(id: &Identity, groups: &[ResourceGroup]) -> Vec<u8> {
    let resource_logs: Vec<Value> = groups
        .iter()
        .map(|g| {
            let logs: Vec<Value> = g
                .records
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
            json!({
                "resource": {"attributes": json_attrs(&resource_attributes(id, &g.placement))},
                "scopeLogs": [{
                    "scope": {"name": "tapio", "version": env!("CARGO_PKG_VERSION")},
                    "logRecords": logs,
                }],
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "resourceLogs": resource_logs })).unwrap_or_default()
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

pub fn encode_protobuf(id: &Identity, groups: &[ResourceGroup]) -> Vec<u8> {
    let mut scope = Vec::new();
    bytes_field(&mut scope, 1, b"tapio");
    bytes_field(&mut scope, 2, env!("CARGO_PKG_VERSION").as_bytes());
    let mut req = Vec::new();
    for g in groups {
        let mut res = Vec::new();
        for (k, v) in resource_attributes(id, &g.placement) {
            bytes_field(&mut res, 1, &key_value(&k, &v));
        }
        let mut scope_logs = Vec::new();
        bytes_field(&mut scope_logs, 1, &scope);
        for r in &g.records {
            bytes_field(&mut scope_logs, 2, &log_record(r));
        }
        let mut resource_logs = Vec::new();
        bytes_field(&mut resource_logs, 1, &res);
        bytes_field(&mut resource_logs, 2, &scope_logs);
        bytes_field(&mut req, 1, &resource_logs);
    }
    req
}

/// gzip of `raw`. Writing into a `Vec` cannot fail; should the encoder
/// ever report an error anyway, the empty body it yields is refused by the
/// collector and counted as a rejected batch rather than sent mislabelled.
pub fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        flate2::Compression::default(),
    );
    enc.write_all(raw)
        .and_then(|()| enc.finish())
        .unwrap_or_default()
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Everything the `otlp` sink is configured with besides its endpoint.
#[derive(Debug, Clone)]
pub struct OtlpOptions {
    pub encoding: OtlpEncoding,
    pub compression: OtlpCompression,
    pub headers: OtlpHeaders,
    pub identity: Identity,
}

/// The `otlp` sink. Fails (before any connection) on a non-http endpoint.
pub fn otlp_sink(
    endpoint: &str,
    opts: OtlpOptions,
    policy: PostPolicy,
    metrics: Arc<Metrics>,
) -> anyhow::Result<BatchPoster> {
    let base = check_plain_http(endpoint, "--otlp-endpoint")?;
    let url = logs_url(&base)?;
    let OtlpOptions {
        encoding,
        compression,
        headers,
        identity,
    } = opts;
    let content_type = match encoding {
        OtlpEncoding::Protobuf => "application/x-protobuf",
        OtlpEncoding::Json => "application/json",
    };
    let mut extra = headers.to_map();
    if compression == OtlpCompression::Gzip {
        extra.insert(
            reqwest::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    let encode: super::http::Encoder = Box::new(move |batch| {
        let groups = group(batch, now_ns());
        let raw = match encoding {
            OtlpEncoding::Protobuf => encode_protobuf(&identity, &groups),
            OtlpEncoding::Json => encode_json(&identity, &groups),
        };
        match compression {
            OtlpCompression::None => raw,
            OtlpCompression::Gzip => gzip(&raw),
        }
    });
    Ok(BatchPoster::new("otlp", url, content_type, encode, policy, metrics)?.with_headers(extra))
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

    use crate::wire::evidence::{Comm, Conn, Container, Evidence, OomKill, Refused, Task};

    fn comm(name: &str) -> Comm {
        let mut c = [0u8; 16];
        c[..name.len()].copy_from_slice(name.as_bytes());
        Comm(c)
    }

    fn emitted(n: u128, evidence: Evidence, container: Option<Container>) -> Arc<Emitted> {
        Arc::new(Emitted::new(
            ulid::Ulid::from_parts(1, n),
            Severity::Warning,
            crate::wire::Outcome::Failure,
            evidence,
            container,
            3,
            1_700_000_000_123_000_000,
        ))
    }

    /// A refusal of port 9 by `pid`/`tid` (`comm`), in `container`.
    fn refused(pid: u32, tid: u32, name: &str, container: Option<Container>) -> Arc<Emitted> {
        let ev = Evidence::ConnectionRefused(Refused {
            conn: Conn {
                tid,
                comm: comm(name),
                ..Conn::loopback(pid, 9)
            },
            count: 1,
            cause: "rst",
        });
        emitted(u128::from(pid), ev, container)
    }

    fn occ() -> Arc<Emitted> {
        refused(42, 42, "curl", None)
    }

    fn get(r: &Record, k: &str) -> Option<Attr> {
        r.attributes
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn record_maps_fields_to_semantic_conventions() {
        let r = record(&occ(), 5);
        assert_eq!(r.time_unix_nano, 1_700_000_000_123_000_000);
        assert_eq!(r.severity_number, 13);
        assert_eq!(r.severity_text, "warning");
        assert_eq!(r.event_name, "kernel.network.connection_refused");
        assert_eq!(get(&r, "process.pid"), Some(Attr::Int(42)));
        assert_eq!(get(&r, "thread.id"), Some(Attr::Int(42)));
        assert_eq!(get(&r, "thread.name"), Some(Attr::Str("curl".into())));
        assert_eq!(
            get(&r, "process.executable.name"),
            Some(Attr::Str("curl".into()))
        );
        assert_eq!(get(&r, "network.peer.port"), Some(Attr::Int(9)));
        assert_eq!(
            get(&r, "network.peer.address"),
            Some(Attr::Str("127.0.0.1".into()))
        );
        assert_eq!(get(&r, "tapio.count"), Some(Attr::Int(1)));
        assert_eq!(get(&r, "network.type"), Some(Attr::Str("ipv4".into())));
        assert_eq!(get(&r, "tapio.outcome"), Some(Attr::Str("failure".into())));
        assert_eq!(r.body, "connect to 127.0.0.1:9 refused (rst), count=1");
        assert_eq!(get(&r, "tapio.config_generation"), Some(Attr::Int(3)));
        assert_eq!(
            get(&r, "error.type"),
            Some(Attr::Str("CONNECTION_REFUSED".into()))
        );
        // Deprecated and duplicate attributes are gone.
        assert_eq!(get(&r, "event.name"), None);
        assert_eq!(get(&r, "tapio.timestamp_ns"), None);
        assert_eq!(get(&r, "tapio.comm"), None);
        let names: Vec<&str> = r.attributes.iter().map(|(k, _)| k.as_str()).collect();
        let mut dedup = names.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len(), "{names:?}");
        // An OOM kill: its exit code, and its typed numbers as ints.
        let oom = Evidence::OomKill(OomKill {
            task: Task {
                pid: 42,
                tid: 42,
                comm: comm("stress"),
                ..Task::default()
            },
            rss: None,
            memory_limit_bytes: u64::MAX,
            memory_limit_source: "memcg",
            memcg: None,
        });
        let r = record(&emitted(1, oom, None), 5);
        assert_eq!(get(&r, "process.exit.code"), Some(Attr::Int(137)));
        assert_eq!(
            get(&r, "tapio.memory_limit_bytes"),
            Some(Attr::Int(i64::MAX)),
            "clamped to OTLP's int"
        );
        assert_eq!(r.event_name, "kernel.container.oom_kill");
    }

    #[test]
    fn comm_is_the_executable_name_only_on_the_main_thread() {
        let worker = refused(42, 43, "worker-1", None);
        let r = record(&worker, 0);
        assert_eq!(get(&r, "thread.name"), Some(Attr::Str("worker-1".into())));
        assert_eq!(get(&r, "process.executable.name"), None);
        // A node-wide type has no thread: neither name.
        let psi = Evidence::CpuStall(crate::wire::evidence::CpuStall::Psi(
            crate::wire::evidence::Psi {
                period_us: 1,
                some_stall_us: 1,
                some_permille: 1,
                full: None,
                threshold_permille: 1,
                episode_periods: 1,
            },
        ));
        let r = record(&emitted(4, psi, None), 0);
        assert_eq!(get(&r, "process.executable.name"), None);
        assert_eq!(get(&r, "thread.name"), None);
        assert_eq!(get(&r, "tapio.cpu"), Some(Attr::Int(-1)));
    }

    #[test]
    fn occurrences_group_by_pod_and_container_in_first_seen_order() {
        // `pid` numbers the occurrences in batch order.
        let ctr = |id: &str, uid: Option<&str>, pod: Option<(&str, &str)>| Container {
            container_id: id.into(),
            runtime: None,
            cgroup_path: "/x".into(),
            pod_uid: uid.map(String::from),
            pod: pod.map(|(ns, name)| (ns.into(), name.into())),
        };
        let pod_a = |pid: u32| {
            let c = ctr("c-a", Some("u-a"), Some(("shop", "web")));
            refused(pid, pid, "curl", Some(c))
        };
        let pod_b = |pid: u32| refused(pid, pid, "curl", Some(ctr("c-b", Some("u-b"), None)));
        let node = |pid: u32| refused(pid, pid, "curl", None);
        let batch = vec![
            pod_a(1),
            node(2),
            pod_b(3),
            pod_a(4),
            node(5),
            // Empty strings are not identities: this one is the node's.
            refused(6, 6, "curl", Some(ctr("", None, None))),
        ];
        let groups = group(&batch, 0);
        let pids: Vec<Vec<Attr>> = groups
            .iter()
            .map(|g| {
                g.records
                    .iter()
                    .map(|r| get(r, "process.pid").unwrap())
                    .collect()
            })
            .collect();
        let i = Attr::Int;
        // Order of first appearance: pod a, the node, pod b.
        assert_eq!(
            pids,
            vec![vec![i(1), i(4)], vec![i(2), i(5), i(6)], vec![i(3)]]
        );
        let id = Identity {
            node_name: "n1".into(),
            agent_id: "01AGENT".into(),
        };
        let res: Vec<Vec<(String, Attr)>> = groups
            .iter()
            .map(|g| resource_attributes(&id, &g.placement))
            .collect();
        let s = |k: &str, v: &str| (k.to_string(), Attr::Str(v.into()));
        let base = vec![
            s("service.name", "tapio"),
            s("service.version", env!("CARGO_PKG_VERSION")),
            s("service.instance.id", "01AGENT"),
            s("host.name", "n1"),
            s("k8s.node.name", "n1"),
        ];
        let with = |extra: Vec<(String, Attr)>| [base.clone(), extra].concat();
        assert_eq!(
            res[0],
            with(vec![
                s("container.id", "c-a"),
                s("k8s.pod.uid", "u-a"),
                s("k8s.pod.name", "web"),
                s("k8s.namespace.name", "shop"),
            ])
        );
        assert_eq!(res[1], base);
        assert_eq!(
            res[2],
            with(vec![s("container.id", "c-b"), s("k8s.pod.uid", "u-b")])
        );
        // Resource fields are on the resource only.
        for g in &groups {
            for r in &g.records {
                for k in [
                    "container.id",
                    "k8s.pod.uid",
                    "tapio.container_id",
                    "tapio.pod_uid",
                    "tapio.namespace",
                ] {
                    assert_eq!(get(r, k), None, "{k}");
                }
            }
        }
    }

    #[test]
    fn headers_are_checked_by_name_and_never_show_their_values() {
        let secret = |s: &str| s.parse::<Secret>().unwrap();
        let h = OtlpHeaders::from_flags(&[
            secret("X-Api-Key=s3cr3t-value"),
            secret("x-scope=a=b"),
            secret("x-api-key=replaced-s3cr3t"),
        ])
        .unwrap();
        assert_eq!(h.names(), vec!["x-scope", "x-api-key"]);
        let m = h.to_map();
        assert_eq!(m["x-scope"], "a=b");
        assert_eq!(m["x-api-key"], "replaced-s3cr3t");
        assert!(m["x-api-key"].is_sensitive());
        let shown = format!("{h:?} {:?} {m:?}", secret("x=s3cr3t"));
        assert!(!shown.contains("s3cr3t"), "{shown}");

        for (arg, want) in [
            ("no-equals-s3cr3t", "has no '='"),
            (
                "bad name=s3cr3t",
                "\"bad name\" is not a valid HTTP header name",
            ),
            (
                "x-key=s3cr3t\u{7}",
                "the value of x-key is not a valid HTTP header value",
            ),
            (
                "Content-Encoding=s3cr3t",
                "content-encoding is set by the otlp sink itself",
            ),
        ] {
            let e = OtlpHeaders::from_flags(&[secret(arg)])
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{arg}: {e}");
            assert!(!e.contains("s3cr3t"), "{arg}: {e}");
        }
    }

    #[test]
    fn gzip_round_trips() {
        let raw = encode_json(
            &Identity {
                node_name: "n".into(),
                agent_id: "a".into(),
            },
            &group(&[occ(), occ()], 1),
        );
        let gz = gzip(&raw);
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
        assert!(gz.len() < raw.len(), "{} >= {}", gz.len(), raw.len());
        let mut back = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, raw);
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
            OtlpOptions {
                encoding: OtlpEncoding::Protobuf,
                compression: OtlpCompression::None,
                headers: OtlpHeaders::default(),
                identity: Identity {
                    node_name: "n".into(),
                    agent_id: "a".into(),
                },
            },
            PostPolicy::default(),
            Metrics::new(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("https is not supported"));
    }
}
