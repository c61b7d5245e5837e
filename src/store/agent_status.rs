//! Reads the agent's status file, `<data-dir>/.agent-status.json`, for
//! `tapio health` and the MCP `node_health` tool.
//!
//! The agent writes the file (atomically, at start, on every observer or
//! config change, at least every 5 s, and once at stop with
//! `"state":"stopped"`); this module only reads it, bounded like every other
//! file read (regular files only, at most [`MAX_STATUS_BYTES`]). It must not
//! judge what it reads (that is [`super::summary`]'s health rule) or read the
//! clock. A missing, unreadable, oversized or malformed file is an answer
//! ([`StatusRead::Missing`], [`StatusRead::Invalid`] with the reason), never
//! an error: health must still say something when the agent never ran.
//!
//! Schema 1 (every field always present; unknown extra fields are ignored so
//! a newer agent stays readable):
//! ```json
//! {"schema":1,"agent_id":"01J…","node_name":"n1","version":"0.1.0","pid":1234,
//!  "state":"running","updated_unix_ms":1795723045170,
//!  "config":{"applied":true,"hash":"sha256:…","generation":1},
//!  "controller":{"endpoint":"http://…","state":"ok","reason":""},
//!  "observers":{"network":{"state":"active","reason":""},
//!               "node":{"state":"degraded","reason":"pmc unavailable: …"}}}
//! ```
//! `controller` is `null` for a standalone agent.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::fsutil::{read_capped, ReadError};

/// The status file's name in the data dir (a dot-file, so the occurrence
/// scan ignores it).
pub const STATUS_FILE: &str = ".agent-status.json";
/// The largest status file read: a few hundred bytes in practice.
pub const MAX_STATUS_BYTES: u64 = 64 * 1024;
/// The schema this build reads.
pub const SCHEMA: u64 = 1;

/// The agent's applied config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ConfigStatus {
    pub applied: bool,
    pub hash: String,
    pub generation: u64,
}

/// The agent's link to its controller.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ControllerStatus {
    pub endpoint: String,
    /// `ok`, `unreachable`, `unauthorized` or `error`.
    pub state: String,
    pub reason: String,
}

/// One observer as the agent reports it: the agent's own type, so the
/// writer and this reader share the states and their spellings. A state
/// this build does not know makes the file [`StatusRead::Invalid`] (the
/// states are part of schema 1; a new one is a new schema).
pub use crate::wire::status::ObserverStatus;

/// The status file's content (schema in the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentStatus {
    pub schema: u64,
    pub agent_id: String,
    pub node_name: String,
    pub version: String,
    pub pid: u64,
    /// `running` or `stopped`.
    pub state: String,
    pub updated_unix_ms: u64,
    pub config: ConfigStatus,
    pub controller: Option<ControllerStatus>,
    pub observers: BTreeMap<String, ObserverStatus>,
}

/// What reading the status file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusRead {
    /// No status file (the agent never ran with this data dir, or is older
    /// than the status file).
    Missing,
    /// A status file that cannot be used, and why (one line).
    Invalid(String),
    Valid(Box<AgentStatus>),
}

/// Parses a status file's bytes.
pub fn parse(bytes: &[u8]) -> Result<AgentStatus, String> {
    // The schema first, so a newer agent's file is reported as such rather
    // than as a missing field.
    #[derive(Deserialize)]
    struct Schema {
        schema: u64,
    }
    let schema: Schema =
        serde_json::from_slice(bytes).map_err(|e| format!("not a status file: {e}"))?;
    if schema.schema != SCHEMA {
        return Err(format!(
            "schema {} is not the schema {SCHEMA} this tapio reads",
            schema.schema
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("not a status file: {e}"))
}

/// Reads `<dir>/.agent-status.json`.
pub fn read(dir: &Path) -> StatusRead {
    let bytes = match read_capped(&dir.join(STATUS_FILE), MAX_STATUS_BYTES) {
        Ok(b) => b,
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return StatusRead::Missing
        }
        Err(e) => return StatusRead::Invalid(e.to_string()),
    };
    match parse(&bytes) {
        Ok(s) => StatusRead::Valid(Box::new(s)),
        Err(e) => StatusRead::Invalid(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::status::ObserverState;

    pub const GOOD: &str = r#"{"schema":1,"agent_id":"01JQY0HADQ0000000000000003","node_name":"n1","version":"0.1.0","pid":1234,"state":"running","updated_unix_ms":1795723045170,"config":{"applied":true,"hash":"sha256:ab","generation":3},"controller":null,"observers":{"network":{"state":"active","reason":""},"node":{"state":"degraded","reason":"pmc unavailable: no PMU"}},"future_field":[1]}"#;

    #[test]
    fn parses_the_schema_and_ignores_new_fields() {
        let s = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(s.state, "running");
        assert_eq!(s.updated_unix_ms, 1_795_723_045_170);
        assert_eq!(s.config.generation, 3);
        assert_eq!(s.controller, None);
        assert_eq!(s.observers["node"].reason, "pmc unavailable: no PMU");
        assert_eq!(s.observers["node"].state, ObserverState::Degraded);
        assert_eq!(s.observers["network"].state, ObserverState::Active);
    }

    #[test]
    fn an_unknown_observer_state_is_not_schema_1() {
        let bytes = GOOD.replace(r#""state":"degraded""#, r#""state":"sleepy""#);
        let err = parse(bytes.as_bytes()).unwrap_err();
        assert!(
            err.starts_with("not a status file: unknown variant `sleepy`"),
            "{err}"
        );
    }

    #[test]
    fn rejects_what_is_not_schema_1() {
        for (bytes, want) in [
            ("", "not a status file: EOF while parsing a value at line 1 column 0"),
            ("[1]", "not a status file: invalid length 1, expected struct AgentStatus with 10 elements at line 1 column 3"),
            (r#"{"schema":2}"#, "schema 2 is not the schema 1 this tapio reads"),
            (r#"{"schema":1,"state":"running"}"#, "not a status file: missing field `agent_id` at line 1 column 30"),
        ] {
            assert_eq!(parse(bytes.as_bytes()).unwrap_err(), want, "{bytes}");
        }
    }

    #[test]
    fn reads_missing_valid_fifo_and_oversized_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        assert_eq!(read(d), StatusRead::Missing);
        std::fs::write(d.join(STATUS_FILE), GOOD).unwrap();
        assert!(matches!(read(d), StatusRead::Valid(_)));
        std::fs::write(
            d.join(STATUS_FILE),
            vec![b' '; MAX_STATUS_BYTES as usize + 1],
        )
        .unwrap();
        assert_eq!(
            read(d),
            StatusRead::Invalid("is larger than 65536 bytes".into())
        );
        std::fs::remove_file(d.join(STATUS_FILE)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.join(STATUS_FILE)).unwrap();
        assert_eq!(
            read(d),
            StatusRead::Invalid("is not a regular file (a character device)".into())
        );
    }
}
