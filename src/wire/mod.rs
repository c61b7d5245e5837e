//! The Tapio protocol: everything that crosses a process boundary as bytes.
//!
//! This module owns the occurrence JSON (SPEC §2), the typed evidence that
//! becomes its `data` and message ([`evidence`]), the stable anomaly names,
//! the compiled runtime configuration with its hash (SPEC §4–§5), and the
//! `tapio-wire/v1` agent ↔ controller bodies ([`v1`], SPEC §6). It is
//! pure data: serde types and the functions that format or hash them. It must
//! not do I/O, read clocks or depend on any other Tapio module.
//!
//! # Occurrence
//!
//! One anomaly is one JSON object:
//!
//! ```json
//! {"id":"01JA1B2C3D4E5F6G7H8J9K0L1M","timestamp":"2026-04-03T14:23:01.042Z",
//!  "source":"tapio","type":"kernel.network.connection_refused","protocol_version":"1.0",
//!  "severity":"warning","outcome":"failure",
//!  "error":{"code":"CONNECTION_REFUSED","message":"connect to 127.0.0.1:9 refused (rst), count=1"},
//!  "data":{"pid":4242,"comm":"bash","family":"ipv4","saddr":"127.0.0.1","sport":50312,
//!          "daddr":"127.0.0.1","dport":9,"cause":"rst","count":1,
//!          "config_generation":1,"timestamp_ns":1743691381042000000}}
//! ```
//!
//! * `id` is a ULID; its time part orders files by creation.
//! * `timestamp` is RFC 3339 UTC with milliseconds, the wall-clock time of the
//!   kernel fact; `data.timestamp_ns` is the same instant in nanoseconds.
//! * `severity` is `info|warning|error|critical`, `outcome` is
//!   `failure|degraded`. Readers accept unknown values (they parse as
//!   `unknown`), so a newer agent never breaks an older reader.
//! * `data` is per type (see [`anomaly`]) and always carries
//!   `config_generation` and `timestamp_ns`. Facts only: the names in
//!   [`REASONING_FIELDS`] never appear anywhere in an occurrence.
//! * The agent writes it from typed evidence ([`Emitted`], its text
//!   rendered once and shared by every sink); readers parse it as
//!   [`Occurrence`], whose `data` is generic JSON, so types a newer writer
//!   adds still parse.

pub mod anomaly;
pub mod config;
pub mod evidence;
pub mod occurrence;
pub mod status;
pub mod time;
pub mod v1;

pub use anomaly::{AnomalyType, Observer};
pub use config::{CompiledConfig, ConfigHash};
pub use occurrence::{Emitted, ErrorInfo, Occurrence, Outcome, Severity, PROTOCOL_VERSION, SOURCE};

/// Field names that would turn evidence into opinion. An occurrence or event
/// batch that carries any of them, at any depth, is refused.
pub const REASONING_FIELDS: &[&str] = &[
    "reason",
    "reasoning",
    "explanation",
    "root_cause",
    "remediation",
    "suggested_fix",
];

/// Returns the first reasoning field name found anywhere in `value`.
pub fn find_reasoning_field(value: &serde_json::Value) -> Option<&'static str> {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if let Some(name) = REASONING_FIELDS.iter().find(|n| **n == k.as_str()) {
                    return Some(name);
                }
                if let Some(found) = find_reasoning_field(v) {
                    return Some(found);
                }
            }
            None
        }
        serde_json::Value::Array(items) => items.iter().find_map(find_reasoning_field),
        _ => None,
    }
}
