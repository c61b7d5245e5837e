//! The MCP tools: their descriptions, input and output JSON Schemas, and how
//! a call maps onto [`crate::store::report`].

use serde_json::{json, Value};

use crate::store::report::{self, HealthParams, RecentParams, ReportError};
use crate::store::summary::HEALTH_RULE;
use crate::store::Store;

/// The occurrences one `recent_anomalies` call returns by default: with the
/// summary, enough for a model to see what happened in a few kilobytes.
pub const DEFAULT_LIMIT: u64 = 10;
/// The most occurrences one `recent_anomalies` page returns: about 40 KB of
/// JSON for pod-attributed network facts (sent twice, structured and as
/// text, as the protocol asks); `next_cursor` pages further.
pub const MAX_LIMIT: u64 = 50;

/// A failed call and how it is reported.
#[derive(Debug)]
pub enum CallError {
    /// An unknown tool: JSON-RPC -32602 (the request itself is wrong).
    InvalidParams(String),
    /// Arguments the tool cannot use (wrong shape, unknown field, a value
    /// that does not parse or names nothing known): a result with
    /// `isError: true` and a message saying what to change, so the model
    /// sees it and can correct its call (a protocol error often never
    /// reaches the model).
    InvalidArguments(String),
    /// The tool ran and failed (the data dir could not be read): a result
    /// with `isError: true`.
    Execution(String),
}

fn known_types() -> String {
    crate::wire::AnomalyType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

const OBSERVERS: [&str; crate::wire::Observer::ALL.len()] = crate::wire::Observer::NAMES;
const VERDICTS: [&str; 4] = ["ok", "degraded", "failing", "unknown"];
const SEVERITIES: [&str; 4] = ["info", "warning", "error", "critical"];

fn since_schema(default: Option<&str>) -> Value {
    let mut s = json!({
        "type": "string",
        "description": "Window start: a duration back from now (30s, 5m, 2h, 1d) or an RFC 3339 time (2026-04-03T14:00:00Z).",
        "pattern": "^([0-9]+[smhd]|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ].+)$"
    });
    if let Some(d) = default {
        s["default"] = json!(d);
    }
    s
}

fn occurrence_schema() -> Value {
    json!({
        "type": "object",
        "description": "One kernel failure fact (Tapio occurrence JSON).",
        "required": ["id", "timestamp", "source", "type", "protocol_version", "severity", "outcome", "error", "data"],
        "properties": {
            "id": {"type": "string"},
            "timestamp": {"type": "string"},
            "source": {"type": "string"},
            "type": {"type": "string"},
            "protocol_version": {"type": "string"},
            "severity": {"type": "string"},
            "outcome": {"type": "string"},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
            },
            "data": {"type": "object"}
        }
    })
}

fn skipped_schema() -> Value {
    json!({
        "type": "object",
        "description": "Entries skipped, by reason: read but unparsable (corrupt), could not be opened (unreadable), FIFOs/devices/directories (not_regular), over 64 KiB (too_large), not occurrence files (foreign).",
        "required": ["corrupt", "unreadable", "not_regular", "too_large", "foreign"],
        "properties": {
            "corrupt": {"type": "integer"},
            "unreadable": {"type": "integer"},
            "not_regular": {"type": "integer"},
            "too_large": {"type": "integer"},
            "foreign": {"type": "integer"}
        }
    })
}

fn count_schema() -> Value {
    json!({
        "type": "object",
        "required": ["key", "count"],
        "properties": {"key": {"type": "string"}, "count": {"type": "integer"}}
    })
}

fn nullable_string() -> Value {
    json!({"type": ["string", "null"]})
}

/// The `tools/list` entries. `structured`: include the fields added in
/// 2025-06-18 (`title`, `outputSchema`).
pub fn list(structured: bool) -> Vec<Value> {
    let mut tools = vec![
        json!({
            "name": "recent_anomalies",
            "title": "Recent kernel anomalies",
            "description": format!("Kernel failure facts (occurrences) recorded on this node by the Tapio agent: refused/timed-out/unreachable connections, retransmit spikes, RTT degradation, OOM kills, abnormal exits, I/O errors and latency spikes, CPU stalls, IPC degradation, memory pressure. Returns `matched` (how many match the filters), a `summary` of all of them (counts by type, by place — namespace/pod, short container id, or host — and by network destination) and the newest {DEFAULT_LIMIT} (up to `limit`, at most {MAX_LIMIT}) in full, newest first. When `next_cursor` is not null, call again with `cursor` set to it (and the same filters) for the next, older page. Filters combine; severity is a minimum."),
            "inputSchema": {
                "type": "object",
                "properties": {
                    "since": since_schema(None),
                    "type": {
                        "type": "string",
                        "description": format!("Anomaly type, or its last part (connection_refused). Known types: {}.", known_types())
                    },
                    "observer": {"type": "string", "enum": OBSERVERS},
                    "severity": {"type": "string", "enum": SEVERITIES, "description": "Minimum severity."},
                    "pod": {"type": "string", "description": "Only this pod: its name, or namespace/pod."},
                    "namespace": {"type": "string", "description": "Only pods in this Kubernetes namespace."},
                    "container": {"type": "string", "description": "Only this container: its id or a hex prefix of it (12 digits as shown in summary.by_place)."},
                    "pid": {"type": "integer", "minimum": 0, "description": "Only this process id."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT, "description": "Occurrences on this page."},
                    "cursor": {"type": "string", "description": "The next_cursor of the previous page, unchanged."}
                },
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "required": ["data_dir", "data_dir_exists", "query", "count", "matched", "next_cursor", "summary", "skipped", "occurrences"],
                "properties": {
                    "data_dir": {"type": "string"},
                    "data_dir_exists": {"type": "boolean"},
                    "query": {
                        "type": "object",
                        "required": ["since", "type", "observer", "severity", "limit", "pod", "namespace", "container", "pid", "cursor"],
                        "properties": {
                            "since": nullable_string(),
                            "type": nullable_string(),
                            "observer": nullable_string(),
                            "severity": nullable_string(),
                            "limit": {"type": "integer"},
                            "pod": nullable_string(),
                            "namespace": nullable_string(),
                            "container": nullable_string(),
                            "pid": {"type": ["integer", "null"]},
                            "cursor": nullable_string()
                        }
                    },
                    "count": {"type": "integer", "description": "Occurrences on this page."},
                    "matched": {"type": "integer", "description": "Occurrences matching the filters, all pages."},
                    "next_cursor": {"type": ["string", "null"], "description": "Pass as cursor for the next, older page; null on the last page."},
                    "summary": {
                        "type": "object",
                        "description": "Counts over all matched occurrences; lists show the 10 largest, the rest is counted in other_*.",
                        "required": ["by_type", "by_place", "other_places", "by_destination", "other_destinations"],
                        "properties": {
                            "by_type": {"type": "object", "additionalProperties": {"type": "integer"}},
                            "by_place": {"type": "array", "items": count_schema()},
                            "other_places": {"type": "integer"},
                            "by_destination": {"type": "array", "items": count_schema()},
                            "other_destinations": {"type": "integer"}
                        }
                    },
                    "skipped": skipped_schema(),
                    "occurrences": {"type": "array", "items": occurrence_schema()}
                }
            }
        }),
        json!({
            "name": "node_health",
            "title": "Node health verdicts",
            "description": format!("Verdict for the node and per observer (ok, degraded, failing, unknown) from the occurrences in a window (default the last 15 minutes), with the counts behind it, plus what the agent reports about itself (observer states, config, controller link). unknown means Tapio cannot tell (no data, agent not running or stopped, config not applied, every observer unavailable): `reasons` says which, and it is never reported as ok. Rule: {HEALTH_RULE}."),
            "inputSchema": {
                "type": "object",
                "properties": {
                    "observer": {"type": "string", "enum": OBSERVERS},
                    "since": since_schema(Some("15m")),
                    "until": {"type": "string", "description": "Window end, RFC 3339; default now."}
                },
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "required": ["data_dir", "data_dir_exists", "window", "rule", "verdict", "reasons", "agent", "observers", "skipped"],
                "properties": {
                    "data_dir": {"type": "string"},
                    "data_dir_exists": {"type": "boolean"},
                    "window": {
                        "type": "object",
                        "required": ["since", "until", "seconds"],
                        "properties": {
                            "since": {"type": "string"},
                            "until": {"type": "string"},
                            "seconds": {"type": "integer"}
                        }
                    },
                    "rule": {"type": "string"},
                    "verdict": {"type": "string", "enum": VERDICTS},
                    "reasons": {"type": "array", "items": {"type": "string"}, "description": "Why the verdict is unknown, or what besides the counts raised it."},
                    "agent": {
                        "type": "object",
                        "description": "What the agent's status file says; status_file is reported, missing, invalid or none.",
                        "required": ["status_file", "problem", "state", "node_name", "version", "pid", "updated", "age_seconds", "config", "controller"],
                        "properties": {
                            "status_file": {"type": "string", "enum": ["reported", "missing", "invalid", "none"]},
                            "problem": {"type": "string"},
                            "state": nullable_string(),
                            "node_name": nullable_string(),
                            "version": nullable_string(),
                            "pid": {"type": ["integer", "null"]},
                            "updated": nullable_string(),
                            "age_seconds": {"type": ["integer", "null"]},
                            "config": {"type": ["object", "null"]},
                            "controller": {"type": ["object", "null"]}
                        }
                    },
                    "observers": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["observer", "state", "state_reason", "verdict", "total", "critical", "error", "warning", "info", "other", "newest"],
                            "properties": {
                                "observer": {"type": "string", "enum": OBSERVERS},
                                "state": {"type": "string", "description": "As the agent reports it: active, degraded, unavailable, disabled; unknown without a status file."},
                                "state_reason": {"type": "string"},
                                "verdict": {"type": "string", "enum": VERDICTS},
                                "total": {"type": "integer"},
                                "critical": {"type": "integer"},
                                "error": {"type": "integer"},
                                "warning": {"type": "integer"},
                                "info": {"type": "integer"},
                                "other": {"type": "integer"},
                                "newest": nullable_string()
                            }
                        }
                    },
                    "skipped": skipped_schema()
                }
            }
        }),
        json!({
            "name": "status",
            "title": "Occurrence store status",
            "description": "What the node's occurrence store holds: total, counts by observer and by type, the newest occurrence, skipped files.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
            "outputSchema": {
                "type": "object",
                "required": ["data_dir", "data_dir_exists", "total", "skipped", "by_observer", "by_type", "newest"],
                "properties": {
                    "data_dir": {"type": "string"},
                    "data_dir_exists": {"type": "boolean"},
                    "total": {"type": "integer"},
                    "skipped": skipped_schema(),
                    "by_observer": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "by_type": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "newest": {"anyOf": [occurrence_schema(), {"type": "null"}]}
                }
            }
        }),
    ];
    for t in &mut tools {
        if let Some(obj) = t.as_object_mut() {
            obj.insert(
                "annotations".into(),
                json!({"readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false}),
            );
            if !structured {
                obj.remove("title");
                obj.remove("outputSchema");
            }
        }
    }
    tools
}

fn parse_args<T: serde::de::DeserializeOwned>(name: &str, args: Value) -> Result<T, CallError> {
    serde_json::from_value(args)
        .map_err(|e| CallError::InvalidArguments(format!("invalid arguments for {name}: {e}")))
}

fn report_error(name: &str, e: ReportError) -> CallError {
    match e {
        ReportError::Invalid(m) => {
            CallError::InvalidArguments(format!("invalid arguments for {name}: {m}"))
        }
        ReportError::Store(e) => CallError::Execution(e.to_string()),
    }
}

fn to_value(v: &impl serde::Serialize) -> Result<Value, CallError> {
    serde_json::to_value(v)
        .map_err(|e| CallError::Execution(format!("failed to encode result: {e}")))
}

/// Runs tool `name` with `args` (a JSON object) and returns its structured
/// result.
pub fn call(store: &Store, name: &str, args: Value, now_ns: u64) -> Result<Value, CallError> {
    match name {
        "recent_anomalies" => {
            let mut params: RecentParams = parse_args(name, args)?;
            let limit = *params.limit.get_or_insert(DEFAULT_LIMIT);
            if !(1..=MAX_LIMIT).contains(&limit) {
                return Err(CallError::InvalidArguments(format!(
                    "invalid arguments for {name}: limit must be between 1 and {MAX_LIMIT}; use cursor (next_cursor of a page) for more"
                )));
            }
            to_value(&report::recent(store, &params, now_ns).map_err(|e| report_error(name, e))?)
        }
        "node_health" => {
            let params: HealthParams = parse_args(name, args)?;
            to_value(&report::health(store, &params, now_ns).map_err(|e| report_error(name, e))?)
        }
        "status" => {
            let _: Empty = parse_args(name, args)?;
            to_value(&report::status(store).map_err(|e| report_error(name, e))?)
        }
        _ => Err(CallError::InvalidParams(format!("unknown tool: {name}"))),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}
