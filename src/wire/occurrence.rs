//! The occurrence object (SPEC §2), in its two forms.
//!
//! [`Emitted`] is what this agent writes: typed evidence, rendered on the
//! sink side. Its JSON text is produced once, by the first sink that needs
//! it, and shared by every sink that writes JSON; OTLP reads its typed
//! fields. [`Occurrence`] is what readers parse (the store, the CLI, MCP,
//! the controller): `data` stays a generic JSON object, because files and
//! batches may come from newer writers with types this build does not know.
//! Both render the same bytes for the same facts. This module must not do
//! I/O or read clocks.

use std::fmt::Display;
use std::sync::OnceLock;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::anomaly::AnomalyType;
use super::evidence::{Container, Evidence, Field};
use super::time::format_rfc3339_millis;

/// `protocol_version` of every occurrence this build writes.
pub const PROTOCOL_VERSION: &str = "1.0";
/// `source` of every occurrence this build writes.
pub const SOURCE: &str = "tapio";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
    /// Anything a newer writer may add; readers keep the record.
    #[serde(other)]
    Unknown,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
            Severity::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Failure,
    Degraded,
    #[serde(other)]
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Failure => "failure",
            Outcome::Degraded => "degraded",
            Outcome::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

/// One anomaly occurrence. `kind` is serialised as `type`; it stays a string
/// so files written by newer agents (with types this build does not know)
/// still parse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Occurrence {
    pub id: String,
    pub timestamp: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub protocol_version: String,
    pub severity: Severity,
    pub outcome: Outcome,
    pub error: ErrorInfo,
    pub data: Map<String, Value>,
}

impl Occurrence {
    /// Builds an occurrence of `kind` from `data` as it is;
    /// `config_generation` and `timestamp_ns` are added to it. For tests
    /// that check the wire form against a JSON tree: the agent writes
    /// [`Emitted`], readers parse.
    #[cfg(test)]
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per required occurrence fact; a builder would only hide them"
    )]
    pub fn new(
        id: ulid::Ulid,
        kind: AnomalyType,
        severity: Severity,
        outcome: Outcome,
        message: String,
        mut data: Map<String, Value>,
        config_generation: u32,
        timestamp_ns: u64,
    ) -> Occurrence {
        data.insert("config_generation".into(), Value::from(config_generation));
        data.insert("timestamp_ns".into(), Value::from(timestamp_ns));
        Occurrence {
            id: id.to_string(),
            timestamp: format_rfc3339_millis(timestamp_ns),
            source: SOURCE.to_string(),
            kind: kind.as_str().to_string(),
            protocol_version: PROTOCOL_VERSION.to_string(),
            severity,
            outcome,
            error: ErrorInfo {
                code: kind.error_code().to_string(),
                message,
            },
            data,
        }
    }

    /// The known anomaly type, if this build knows it.
    pub fn anomaly(&self) -> Option<AnomalyType> {
        AnomalyType::parse(&self.kind)
    }

    /// The observer family, from the `kernel.<observer>.<name>` type.
    pub fn observer(&self) -> Option<&str> {
        let rest = self.kind.strip_prefix("kernel.")?;
        rest.split('.').next()
    }

    pub fn timestamp_ns(&self) -> Option<u64> {
        self.data.get("timestamp_ns").and_then(Value::as_u64)
    }

    pub fn config_generation(&self) -> Option<u64> {
        self.data.get("config_generation").and_then(Value::as_u64)
    }
}

/// An occurrence as this agent emits it: the finding's typed evidence,
/// where it ran, and when. Nothing is rendered when it is built (the
/// emitter thread only moves the evidence in); `data`, the message and the
/// JSON text are rendered from the typed value where a sink needs them.
#[derive(Debug)]
pub struct Emitted {
    pub id: ulid::Ulid,
    pub severity: Severity,
    pub outcome: Outcome,
    pub evidence: Evidence,
    /// The container attribution found, if any.
    pub container: Option<Container>,
    pub config_generation: u32,
    /// Wall clock of the fact, ns since the epoch.
    pub timestamp_ns: u64,
    /// The JSON text, filled by the first sink that asks.
    json: OnceLock<Box<RawValue>>,
}

impl Emitted {
    pub fn new(
        id: ulid::Ulid,
        severity: Severity,
        outcome: Outcome,
        evidence: Evidence,
        container: Option<Container>,
        config_generation: u32,
        timestamp_ns: u64,
    ) -> Emitted {
        Emitted {
            id,
            severity,
            outcome,
            evidence,
            container,
            config_generation,
            timestamp_ns,
            json: OnceLock::new(),
        }
    }

    pub fn anomaly(&self) -> AnomalyType {
        self.evidence.anomaly()
    }

    /// The `error.message`.
    pub fn message(&self) -> String {
        self.evidence.message()
    }

    /// Every `data` field (the type's, attribution's, `config_generation`
    /// and `timestamp_ns`) in the order `data` shows them: by name, as a
    /// JSON object of this build has always been written.
    pub fn fields(&self) -> Vec<(&'static str, Field<'_>)> {
        // Sized for the largest type with attribution, so it never grows.
        let mut all: Vec<(&'static str, Field<'_>)> = Vec::with_capacity(40);
        let mut put = |k, v| all.push((k, v));
        self.evidence.visit(&mut put);
        if let Some(c) = &self.container {
            c.visit(&mut put);
        }
        put("config_generation", self.config_generation.into());
        put("timestamp_ns", self.timestamp_ns.into());
        // Insertion sort: a few dozen fields, mostly in order already, and
        // much less code in the size-bound binary than the library sorts.
        for i in 1..all.len() {
            let mut j = i;
            while j > 0 && all[j - 1].0 > all[j].0 {
                all.swap(j - 1, j);
                j -= 1;
            }
        }
        all
    }

    /// The occurrence's JSON text: serialised the first time it is asked
    /// for, then shared by every sink (one line of a file, of stdout, one
    /// element of a batch body).
    pub fn json(&self) -> &RawValue {
        self.json.get_or_init(|| {
            // Every field is a number, bool, string or list of strings and
            // every key a string: serialising cannot fail. Should it ever,
            // `null` is written rather than a torn object.
            serde_json::value::to_raw_value(self).unwrap_or_else(|_| RawValue::NULL.to_owned())
        })
    }
}

/// Writes `T` through its `Display`, without a `String` in between.
struct Shown<T>(T);

impl<T: Display> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// `data` of an [`Emitted`].
struct TypedData<'a>(&'a Emitted);

impl Serialize for TypedData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let fields = self.0.fields();
        let mut map = s.serialize_map(Some(fields.len()))?;
        for (k, v) in &fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The wire form of an [`Emitted`]: the fields of [`Occurrence`] in the
/// same order (SPEC §2), borrowed or rendered.
#[derive(Serialize)]
struct EmittedWire<'a> {
    id: Shown<ulid::Ulid>,
    timestamp: String,
    source: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    protocol_version: &'static str,
    severity: Severity,
    outcome: Outcome,
    error: ErrorWire,
    data: TypedData<'a>,
}

#[derive(Serialize)]
struct ErrorWire {
    code: &'static str,
    message: String,
}

impl Serialize for Emitted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let kind = self.anomaly();
        EmittedWire {
            id: Shown(self.id),
            timestamp: format_rfc3339_millis(self.timestamp_ns),
            source: SOURCE,
            kind: kind.as_str(),
            protocol_version: PROTOCOL_VERSION,
            severity: self.severity,
            outcome: self.outcome,
            error: ErrorWire {
                code: kind.error_code(),
                message: self.message(),
            },
            data: TypedData(self),
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Data {
        pid: u32,
        tid: u32,
        exit_code: u32,
        signal: u32,
        memory_usage_bytes: u64,
        memory_limit_bytes: u64,
        cgroup_id: u64,
    }

    fn as_map(d: Data) -> Map<String, Value> {
        match serde_json::to_value(d).unwrap() {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn spec_example() -> Occurrence {
        let id: ulid::Ulid = "01JA1B2C3D4E5F6G7H8J9K0M1N".parse().unwrap();
        Occurrence::new(
            id,
            AnomalyType::OomKill,
            Severity::Critical,
            Outcome::Failure,
            "OOM kill pid=1234 (usage=512MB, limit=0MB)".into(),
            as_map(Data {
                pid: 1234,
                tid: 1234,
                exit_code: 137,
                signal: 9,
                memory_usage_bytes: 536870912,
                memory_limit_bytes: 0,
                cgroup_id: 8429,
            }),
            1,
            1743691381042000000,
        )
    }

    #[test]
    fn golden_fixture_matches_spec_example() {
        let golden = include_str!("../../tests/fixtures/occurrence_oom_kill.json");
        let expected: Value = serde_json::from_str(golden).unwrap();
        let built = serde_json::to_value(spec_example()).unwrap();
        assert_eq!(built, expected);
        // And the fixture parses back into the same occurrence.
        let parsed: Occurrence = serde_json::from_str(golden).unwrap();
        assert_eq!(parsed, spec_example());
        assert_eq!(parsed.anomaly(), Some(AnomalyType::OomKill));
        assert_eq!(parsed.observer(), Some("container"));
        assert_eq!(parsed.timestamp_ns(), Some(1743691381042000000));
        assert_eq!(parsed.config_generation(), Some(1));
    }

    #[test]
    fn serialises_fields_in_spec_order() {
        let s = serde_json::to_string(&spec_example()).unwrap();
        let keys = [
            "\"id\"",
            "\"timestamp\"",
            "\"source\"",
            "\"type\"",
            "\"protocol_version\"",
            "\"severity\"",
            "\"outcome\"",
            "\"error\"",
            "\"data\"",
        ];
        let positions: Vec<usize> = keys.iter().map(|k| s.find(k).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{s}");
    }

    #[test]
    fn unknown_enum_values_and_fields_still_parse() {
        let text = r#"{"id":"x","timestamp":"t","source":"tapio","type":"kernel.future.thing",
            "protocol_version":"1.1","severity":"apocalyptic","outcome":"sideways",
            "error":{"code":"C","message":"m"},"data":{},"extra":true}"#;
        let o: Occurrence = serde_json::from_str(text).unwrap();
        assert_eq!(o.severity, Severity::Unknown);
        assert_eq!(o.outcome, Outcome::Unknown);
        assert_eq!(o.anomaly(), None);
        assert_eq!(o.observer(), Some("future"));
    }

    #[test]
    fn no_reasoning_fields_in_built_occurrences() {
        let v = serde_json::to_value(spec_example()).unwrap();
        assert_eq!(crate::wire::find_reasoning_field(&v), None);
        let bad: Value = serde_json::json!({"data": {"nested": [{"root_cause": "x"}]}});
        assert_eq!(crate::wire::find_reasoning_field(&bad), Some("root_cause"));
    }

    fn refused() -> Evidence {
        use crate::wire::evidence::{Comm, Conn, Refused};
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"bash");
        Evidence::ConnectionRefused(Refused {
            conn: Conn {
                tid: 4243,
                comm: Comm(comm),
                sport: 50312,
                netns: 4026531840,
                ..Conn::loopback(4242, 9)
            },
            count: 3,
            cause: "rst",
        })
    }

    #[test]
    fn typed_evidence_renders_the_wire_bytes() {
        let id: ulid::Ulid = "01JA1B2C3D4E5F6G7H8J9K0M1N".parse().unwrap();
        let o = Emitted::new(
            id,
            Severity::Warning,
            Outcome::Failure,
            refused(),
            None,
            2,
            1743691381042000000,
        );
        let text = o.json().get();
        // Byte for byte what the agent wrote before evidence was typed:
        // `data` keys sorted, numbers as integers, no cgroup_id when 0.
        assert_eq!(
            text,
            concat!(
                r#"{"id":"01JA1B2C3D4E5F6G7H8J9K0M1N","timestamp":"2025-04-03T14:43:01.042Z","#,
                r#""source":"tapio","type":"kernel.network.connection_refused","#,
                r#""protocol_version":"1.0","severity":"warning","outcome":"failure","#,
                r#""error":{"code":"CONNECTION_REFUSED","message":"connect to 127.0.0.1:9 refused (rst), count=3"},"#,
                r#""data":{"cause":"rst","comm":"bash","config_generation":2,"count":3,"#,
                r#""daddr":"127.0.0.1","dport":9,"errno":"ECONNREFUSED","family":"ipv4","#,
                r#""netns":4026531840,"pid":4242,"saddr":"127.0.0.1","sport":50312,"tid":4243,"#,
                r#""timestamp_ns":1743691381042000000}}"#
            )
        );
        // Readers parse it and write the same bytes back (the controller
        // stores what agents sent).
        let read: Occurrence = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&read).unwrap(), text);
        // Serialised once: a second ask returns the same text, not a copy.
        assert!(std::ptr::eq(o.json(), o.json()));
    }

    #[test]
    fn container_identity_joins_the_data() {
        use crate::wire::evidence::Container;
        let c = Container {
            container_id: "c".repeat(64),
            runtime: Some("containerd"),
            cgroup_path: "/kubepods.slice/x".into(),
            pod_uid: Some("u".into()),
            pod: Some(("shop".into(), "cart".into())),
        };
        let o: Occurrence = serde_json::from_str(
            Emitted::new(
                ulid::Ulid::nil(),
                Severity::Warning,
                Outcome::Failure,
                refused(),
                Some(c),
                1,
                5,
            )
            .json()
            .get(),
        )
        .unwrap();
        assert_eq!(o.data["container_id"], "c".repeat(64));
        assert_eq!(o.data["container_runtime"], "containerd");
        assert_eq!(o.data["cgroup_path"], "/kubepods.slice/x");
        assert_eq!(o.data["pod_uid"], "u");
        assert_eq!(o.data["pod_name"], "cart");
        assert_eq!(o.data["namespace"], "shop");
        assert_eq!(o.timestamp_ns(), Some(5));
    }
}
