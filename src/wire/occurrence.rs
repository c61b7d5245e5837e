//! The occurrence object (SPEC §2).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::anomaly::AnomalyType;
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
    /// Builds an occurrence of `kind` for a fact seen at `timestamp_ns`
    /// (wall clock, ns since the epoch). `data` must serialise to a JSON
    /// object; `config_generation` and `timestamp_ns` are added to it.
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
        data: &impl Serialize,
        config_generation: u32,
        timestamp_ns: u64,
    ) -> Occurrence {
        let mut data = match serde_json::to_value(data) {
            Ok(Value::Object(map)) => map,
            // Data structs are plain structs of numbers and strings; anything
            // else is a programming error caught by the unit tests.
            _ => Map::new(),
        };
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

    fn spec_example() -> Occurrence {
        let id: ulid::Ulid = "01JA1B2C3D4E5F6G7H8J9K0M1N".parse().unwrap();
        Occurrence::new(
            id,
            AnomalyType::OomKill,
            Severity::Critical,
            Outcome::Failure,
            "OOM kill pid=1234 (usage=512MB, limit=0MB)".into(),
            &Data {
                pid: 1234,
                tid: 1234,
                exit_code: 137,
                signal: 9,
                memory_usage_bytes: 536870912,
                memory_limit_bytes: 0,
                cgroup_id: 8429,
            },
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
}
