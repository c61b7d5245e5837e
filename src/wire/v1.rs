//! `tapio-wire/v1`: the agent ↔ controller protocol (SPEC §6).
//!
//! Agent-initiated HTTP/1.1 with JSON bodies; the agent has no inbound API.
//! These are the bodies, as plain serde types with constructors, so a
//! blocking client can `serde_json::to_vec(&Hello::new(..))` and
//! `serde_json::from_slice::<ConfigResponse>(..)` without knowing more.
//!
//! # Rules for every message
//!
//! * Every body, both ways, carries `"wire_version":"tapio-wire/v1"`. A
//!   request with another value is refused with `400 UNSUPPORTED_VERSION`;
//!   without one, `400 MISSING_FIELD`.
//! * Unknown fields are ignored (a newer peer may add some). Enums have a
//!   catch-all: unknown values parse as `unknown`.
//! * Required fields are listed per message ([`Message::REQUIRED`]); a
//!   missing one is `400 MISSING_FIELD`, a wrong type or a value outside the
//!   limits below is `400 INVALID_FIELD`.
//! * Strings sent by an agent have a length limit each (the `MAX_*`
//!   constants below) and never contain control characters (newline, ESC,
//!   …): `400 INVALID_FIELD`, the message naming the field. Identifiers
//!   (`agent_id`, `node_name`, observer and loss counter names) must also
//!   be non-empty, and `agent_id` visible ASCII. Maps and lists have an
//!   entry limit, too.
//! * With a controller token, every `/v1/agents/*`, `/v1/events` and
//!   `/v1/status` request carries `Authorization: Bearer <token>`, else
//!   `401 UNAUTHORIZED`.
//! * Bodies over the controller's limit (default 1 MiB) are refused with
//!   `413 PAYLOAD_TOO_LARGE`.
//!
//! # `POST /v1/agents/hello` — [`Hello`] → [`HelloAck`]
//!
//! Sent at start-up and whenever the controller asks for it
//! (`hello_required`) or comes back after an outage. `agent_id` names one
//! agent *instance* (a ULID chosen at start); a restarted agent sends a new
//! one. `observers` lists the observers this agent runs.
//!
//! ```json
//! {"wire_version":"tapio-wire/v1","agent_id":"01JA1B2C3D4E5F6G7H8J9K0L1M",
//!  "node_name":"node-a","version":"0.1.0","kernel":"6.8.0-45-generic",
//!  "observers":["network","container","storage","node"]}
//! ```
//! → `200`
//! ```json
//! {"wire_version":"tapio-wire/v1","agent_id":"01JA1B2C3D4E5F6G7H8J9K0L1M",
//!  "config_version":"3","config_hash":"sha256:9f86d0…"}
//! ```
//!
//! # `GET /v1/agents/config?agent_id=&node_name=&version=` — [`ConfigResponse`]
//!
//! `agent_id` is required, the others are informative; an `agent_id` the
//! controller has not seen a hello from still gets the config. The response has
//! `ETag: "<config_hash>"` (quotes included). A request with
//! `If-None-Match` equal to that exact value gets `304 Not Modified` and no
//! body. `config_version` is the controller's generation of the active
//! profile, a u32 as a string, starting at `"1"`; it moves only when the
//! compiled content (the hash) changes. `config` is the
//! [`CompiledConfig`](super::config::CompiledConfig) the agent writes to
//! its kernel carriers, judged as generation `config_version`.
//!
//! ```json
//! {"wire_version":"tapio-wire/v1","config_version":"1",
//!  "config_hash":"sha256:9f86d0…",
//!  "config":{"profile":"default","network":{"enabled":true,…},…}}
//! ```
//!
//! # `POST /v1/agents/heartbeat` — [`Heartbeat`] → [`HeartbeatAck`]
//!
//! The *applied* config: `config_hash` and `config_version` of what is in
//! the kernel carriers now. Until a config is applied, `config_hash` is `""`,
//! `config_version` is `"0"`, `state` is `degraded` and `reason` is
//! `unconfigured` ([`Heartbeat::unconfigured`]). `observers` maps observer
//! name → state (`running|degraded|unavailable|disabled`) and a reason for
//! anything but `running`. `loss` maps counter name → total since agent
//! start (suggested names: `lost_events.<observer>`,
//! `sink_drops.<sink>`, `controller_send_failures`, `drain_cap`).
//!
//! ```json
//! {"wire_version":"tapio-wire/v1","agent_id":"01JA1B2C3D4E5F6G7H8J9K0L1M",
//!  "config_hash":"sha256:9f86d0…","config_version":"1","state":"ok",
//!  "observers":{"network":{"state":"running"},
//!               "node":{"state":"unavailable","reason":"no PMU"}},
//!  "loss":{"lost_events.network":0,"sink_drops.controller":2}}
//! ```
//! → `200`
//! ```json
//! {"wire_version":"tapio-wire/v1","config_version":"1",
//!  "config_hash":"sha256:9f86d0…","hello_required":false}
//! ```
//! The ack names the controller's active config, so an agent whose applied
//! hash differs can poll at once. `hello_required` is `true` when the
//! controller does not know this `agent_id` (it restarted, or evicted the
//! agent); the agent should send a hello.
//!
//! # `POST /v1/events` — [`EventBatch`] → [`EventAck`]
//!
//! Occurrences (SPEC §2) in batches of at most [`MAX_BATCH_OCCURRENCES`],
//! numbered per agent instance by `sequence` (start at 1, +1 per batch, a
//! retried batch keeps its number). The controller keeps, per `agent_id`,
//! the last sequence number it accepted, `last`, and judges a batch `seq`:
//!
//! * no `last` yet (first batch, or first after a hello): accepted;
//! * `last < seq ≤ last + SEQUENCE_WINDOW`: accepted, `seq - last - 1`
//!   batches counted as gaps;
//! * `last - SEQUENCE_WINDOW ≤ seq ≤ last`: a duplicate (a retry),
//!   acknowledged with `duplicate: true` and not stored twice;
//! * anything further away, either way: a **reset** (the agent's numbering
//!   started over, or a bogus number such as `u64::MAX` came before):
//!   accepted, counted in `resets`, and `last` becomes `seq`.
//!
//! A hello also clears `last`, so a restarted instance that reuses its
//! `agent_id` is never judged against its predecessor's numbers. Counters
//! saturate at `u64::MAX`; they never wrap. Batches from an `agent_id` without a hello (e.g. after a
//! controller restart) are accepted; the heartbeat ack asks for the hello. A batch containing any of the reasoning field names
//! ([`super::REASONING_FIELDS`]) at any depth is refused whole with `422
//! REASONING_FIELD`.
//!
//! ```json
//! {"wire_version":"tapio-wire/v1","agent_id":"01JA1B2C3D4E5F6G7H8J9K0L1M",
//!  "sequence":42,"occurrences":[{"id":"01JA1B2C3D4E5F6G7H8J9K0L1N", …}]}
//! ```
//! → `200`
//! ```json
//! {"wire_version":"tapio-wire/v1","agent_id":"01JA1B2C3D4E5F6G7H8J9K0L1M",
//!  "sequence":42,"accepted":1,"duplicate":false}
//! ```
//!
//! # `GET /v1/status`
//!
//! Facts about the controller for humans and scripts, bounded in size (see
//! `crate::controller::status`): by default a summary (counts, the active
//! config, counters, the agents most in need of attention, recent events);
//! `?agents=page&cursor=<agent_id>&limit=<1..=500>` pages through every
//! agent in `agent_id` order. Needs the token when one is configured.
//!
//! # `GET /healthz`
//!
//! `200 ok` while the controller serves requests; never needs a token (for
//! probes).
//!
//! # Errors — [`ErrorBody`]
//!
//! ```json
//! {"wire_version":"tapio-wire/v1","error":{"code":"MISSING_FIELD","message":"missing field: agent_id"}}
//! ```
//! | status | code |
//! |---|---|
//! | 400 | `MISSING_FIELD`, `INVALID_FIELD`, `MALFORMED_JSON`, `UNSUPPORTED_VERSION` |
//! | 401 | `UNAUTHORIZED` |
//! | 404 | `UNKNOWN_ENDPOINT` (also a known path with the wrong method) |
//! | 413 | `PAYLOAD_TOO_LARGE` |
//! | 422 | `REASONING_FIELD` |
//! | 500 | `INTERNAL_ERROR` (the message never carries internals) |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::{CompiledConfig, ConfigHash};
use super::occurrence::Occurrence;

/// The `wire_version` of every payload of this protocol.
pub const WIRE_VERSION: &str = "tapio-wire/v1";

pub const PATH_HELLO: &str = "/v1/agents/hello";
pub const PATH_CONFIG: &str = "/v1/agents/config";
pub const PATH_HEARTBEAT: &str = "/v1/agents/heartbeat";
pub const PATH_EVENTS: &str = "/v1/events";
pub const PATH_STATUS: &str = "/v1/status";
pub const PATH_HEALTHZ: &str = "/healthz";

/// Limits the controller enforces (`400 INVALID_FIELD` naming the field
/// beyond them). They exist to keep the controller's memory bounded: with
/// every field at its maximum one agent costs a few KiB, so the default
/// registry of 10,000 agents fits well inside the shipped 256 Mi limit.
///
/// Longest `agent_id` (a ULID is 26).
pub const MAX_ID_LEN: usize = 64;
/// Longest `node_name` (a Kubernetes node name is a DNS subdomain, ≤ 253).
pub const MAX_NODE_NAME_LEN: usize = 253;
/// Longest `version` and `kernel` (`uname -r` is at most 64 bytes).
pub const MAX_TEXT_LEN: usize = 64;
/// Longest observer name (hello `observers[]`, heartbeat `observers` keys).
pub const MAX_OBSERVER_NAME_LEN: usize = 32;
/// Longest loss counter name (heartbeat `loss` keys).
pub const MAX_LOSS_NAME_LEN: usize = 48;
/// Longest `reason` (heartbeat and per observer). The constructors here
/// shorten longer reasons, so an agent built on them never exceeds it.
pub const MAX_REASON_LEN: usize = 256;
/// Most entries in `observers` (hello and heartbeat).
pub const MAX_OBSERVERS: usize = 8;
/// Most entries in a heartbeat's `loss` (an agent sends about 18: lost and
/// malformed events per observer, drops per sink, failures per request
/// kind, drain cap).
pub const MAX_LOSS_COUNTERS: usize = 24;
/// Most occurrences in one event batch.
pub const MAX_BATCH_OCCURRENCES: usize = 1000;
/// How far below the last sequence number a batch may be and still be a
/// duplicate (a retry); further below, or further above, is a reset.
pub const SEQUENCE_WINDOW: u64 = 65_536;

/// Why a string is refused as an identifier: the message names no value.
pub fn check_identifier(value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    check_text(value, max)
}

/// Why an `agent_id` is refused: an identifier ([`check_identifier`]) of
/// visible ASCII only (a ULID in practice), so no look-alike or
/// direction-changing character can disguise one agent as another.
pub fn check_agent_id(value: &str) -> Result<(), String> {
    check_identifier(value, MAX_ID_LEN)?;
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII (no spaces)".into());
    }
    Ok(())
}

/// Why a free-text string is refused: too long, or carrying a control
/// character (newlines and ANSI escapes would forge log lines and terminal
/// output wherever the value is shown).
pub fn check_text(value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!("must be at most {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// `reason` made acceptable: control characters become spaces and it is
/// cut to [`MAX_REASON_LEN`] bytes on a character boundary.
pub fn clamp_reason(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(MAX_REASON_LEN));
    for c in reason.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_REASON_LEN {
            break;
        }
        out.push(c);
    }
    out
}

/// A request body type and the fields it cannot do without.
pub trait Message: serde::de::DeserializeOwned {
    /// Top-level fields that must be present (`wire_version` included).
    const REQUIRED: &'static [&'static str];
}

fn wire_version() -> String {
    WIRE_VERSION.to_string()
}

/// `POST /v1/agents/hello` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    #[serde(default)]
    pub wire_version: String,
    pub agent_id: String,
    pub node_name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub observers: Vec<String>,
}

impl Message for Hello {
    const REQUIRED: &'static [&'static str] = &["wire_version", "agent_id", "node_name"];
}

impl Hello {
    pub fn new(
        agent_id: impl Into<String>,
        node_name: impl Into<String>,
        version: impl Into<String>,
        kernel: impl Into<String>,
        observers: Vec<String>,
    ) -> Hello {
        Hello {
            wire_version: wire_version(),
            agent_id: agent_id.into(),
            node_name: node_name.into(),
            version: version.into(),
            kernel: kernel.into(),
            observers,
        }
    }
}

/// `POST /v1/agents/hello` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloAck {
    pub wire_version: String,
    pub agent_id: String,
    pub config_version: String,
    pub config_hash: ConfigHash,
}

/// Query of `GET /v1/agents/config`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConfigQuery {
    #[serde(default)]
    pub agent_id: Option<String>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

/// `GET /v1/agents/config` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigResponse {
    pub wire_version: String,
    /// Generation, a u32 as a string, from `"1"`.
    pub config_version: String,
    pub config_hash: ConfigHash,
    pub config: CompiledConfig,
}

impl ConfigResponse {
    pub fn new(generation: u32, config: CompiledConfig) -> ConfigResponse {
        ConfigResponse {
            wire_version: wire_version(),
            config_version: generation.to_string(),
            config_hash: config.hash(),
            config,
        }
    }

    /// The generation, if `config_version` is a valid u32 ≥ 1.
    pub fn generation(&self) -> Option<u32> {
        parse_generation(&self.config_version).filter(|g| *g >= 1)
    }
}

/// Parses a `config_version` string: a u32 in decimal, no sign or spaces.
pub fn parse_generation(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// The `ETag` header value for a config hash: the hash in double quotes.
pub fn etag(hash: &ConfigHash) -> String {
    format!("\"{hash}\"")
}

/// The agent's overall state in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Configured and every enabled observer running.
    Ok,
    /// Something is missing; `reason` says what (`unconfigured`, …).
    Degraded,
    /// A value this build does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

/// State of one observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObserverState {
    Running,
    /// Running with something missing (e.g. PSI fallback without PMCs).
    Degraded,
    /// Kernel support missing; the reason says which.
    Unavailable,
    /// Turned off by the active profile.
    Disabled,
    /// A value this build does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

/// The heartbeat's spelling of the state the agent reports on the node.
impl From<super::status::ObserverState> for ObserverState {
    fn from(s: super::status::ObserverState) -> ObserverState {
        use super::status::ObserverState as Local;
        match s {
            Local::Active => ObserverState::Running,
            Local::Degraded => ObserverState::Degraded,
            Local::Unavailable => ObserverState::Unavailable,
            Local::Disabled => ObserverState::Disabled,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObserverStatus {
    #[serde(default)]
    pub state: ObserverState,
    /// Why the state is not `running`; empty otherwise.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// `POST /v1/agents/heartbeat` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(default)]
    pub wire_version: String,
    pub agent_id: String,
    /// Hash of the applied config; empty while unconfigured.
    pub config_hash: String,
    /// Generation of the applied config; `"0"` while unconfigured.
    pub config_version: String,
    #[serde(default)]
    pub state: AgentState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default)]
    pub observers: BTreeMap<String, ObserverStatus>,
    #[serde(default)]
    pub loss: BTreeMap<String, u64>,
}

impl Message for Heartbeat {
    const REQUIRED: &'static [&'static str] =
        &["wire_version", "agent_id", "config_hash", "config_version"];
}

/// `reason` of a heartbeat sent before any config is applied.
pub const REASON_UNCONFIGURED: &str = "unconfigured";

impl Heartbeat {
    /// A heartbeat for an applied config.
    pub fn configured(
        agent_id: impl Into<String>,
        hash: &ConfigHash,
        generation: u32,
        observers: BTreeMap<String, ObserverStatus>,
        loss: BTreeMap<String, u64>,
    ) -> Heartbeat {
        let observers = clamp_reasons(observers);
        let loss = clamp_loss(loss);
        let degraded = observers
            .values()
            .any(|o| !matches!(o.state, ObserverState::Running | ObserverState::Disabled));
        Heartbeat {
            wire_version: wire_version(),
            agent_id: agent_id.into(),
            config_hash: hash.0.clone(),
            config_version: generation.to_string(),
            state: if degraded {
                AgentState::Degraded
            } else {
                AgentState::Ok
            },
            reason: if degraded {
                "observer degraded or unavailable".into()
            } else {
                String::new()
            },
            observers,
            loss,
        }
    }

    /// A heartbeat before any config is applied (the agent is inert).
    pub fn unconfigured(
        agent_id: impl Into<String>,
        observers: BTreeMap<String, ObserverStatus>,
        loss: BTreeMap<String, u64>,
    ) -> Heartbeat {
        Heartbeat {
            wire_version: wire_version(),
            agent_id: agent_id.into(),
            config_hash: String::new(),
            config_version: "0".into(),
            state: AgentState::Degraded,
            reason: REASON_UNCONFIGURED.into(),
            observers: clamp_reasons(observers),
            loss: clamp_loss(loss),
        }
    }

    pub fn is_unconfigured(&self) -> bool {
        self.config_hash.is_empty()
    }
}

/// Observer statuses made acceptable to the controller: reasons clamped
/// ([`clamp_reason`]), at most [`MAX_OBSERVERS`] entries with valid names.
/// A kernel error text or a new observer must not cost the agent its
/// heartbeat (the controller refuses a heartbeat over any limit whole).
fn clamp_reasons(observers: BTreeMap<String, ObserverStatus>) -> BTreeMap<String, ObserverStatus> {
    observers
        .into_iter()
        .filter(|(name, _)| check_identifier(name, MAX_OBSERVER_NAME_LEN).is_ok())
        .take(MAX_OBSERVERS)
        .map(|(name, mut s)| {
            if s.reason.len() > MAX_REASON_LEN || s.reason.chars().any(char::is_control) {
                s.reason = clamp_reason(&s.reason);
            }
            (name, s)
        })
        .collect()
}

/// Loss counters made acceptable to the controller: names within
/// [`MAX_LOSS_NAME_LEN`], at most [`MAX_LOSS_COUNTERS`] (the first by
/// name), for the same reason.
fn clamp_loss(loss: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    loss.into_iter()
        .filter(|(name, _)| check_identifier(name, MAX_LOSS_NAME_LEN).is_ok())
        .take(MAX_LOSS_COUNTERS)
        .collect()
}

/// `POST /v1/agents/heartbeat` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    pub wire_version: String,
    /// The controller's active generation.
    pub config_version: String,
    /// The controller's active hash.
    pub config_hash: ConfigHash,
    /// The controller does not know this agent: send a hello.
    #[serde(default)]
    pub hello_required: bool,
}

/// `POST /v1/events` request. The controller reads its occurrences as
/// [`Occurrence`]s; an agent sends the JSON text each occurrence already
/// has (`EventBatch<&RawValue>`), so the body is one struct around those
/// texts, not a second serialisation of them.
///
/// [`Occurrence`]: super::Occurrence
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch<O = Occurrence> {
    #[serde(default)]
    pub wire_version: String,
    pub agent_id: String,
    pub sequence: u64,
    pub occurrences: Vec<O>,
}

impl Message for EventBatch {
    const REQUIRED: &'static [&'static str] =
        &["wire_version", "agent_id", "sequence", "occurrences"];
}

impl<O> EventBatch<O> {
    pub fn new(agent_id: impl Into<String>, sequence: u64, occurrences: Vec<O>) -> EventBatch<O> {
        EventBatch {
            wire_version: wire_version(),
            agent_id: agent_id.into(),
            sequence,
            occurrences,
        }
    }
}

/// `POST /v1/events` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventAck {
    pub wire_version: String,
    pub agent_id: String,
    pub sequence: u64,
    /// Occurrences stored from this batch (0 for a duplicate).
    pub accepted: u32,
    /// The sequence number was already seen; nothing was stored.
    #[serde(default)]
    pub duplicate: bool,
}

/// Machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    MissingField,
    InvalidField,
    MalformedJson,
    UnsupportedVersion,
    Unauthorized,
    PayloadTooLarge,
    ReasoningField,
    UnknownEndpoint,
    InternalError,
    /// A code this build does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::MissingField
            | ErrorCode::InvalidField
            | ErrorCode::MalformedJson
            | ErrorCode::UnsupportedVersion => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::UnknownEndpoint => 404,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::ReasoningField => 422,
            ErrorCode::InternalError | ErrorCode::Unknown => 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// The error envelope: `{"wire_version":…,"error":{"code":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default = "wire_version")]
    pub wire_version: String,
    pub error: ErrorDetail,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            wire_version: wire_version(),
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_enum_values_are_tolerated() {
        let hb: Heartbeat = serde_json::from_str(
            r#"{"wire_version":"tapio-wire/v1","agent_id":"a","config_hash":"","config_version":"0",
                "state":"sleepy","future":{"x":1},
                "observers":{"gpu":{"state":"melting","reason":"hot","extra":1}},
                "loss":{"lost_events.network":3}}"#,
        )
        .unwrap();
        assert_eq!(hb.state, AgentState::Unknown);
        assert_eq!(hb.observers["gpu"].state, ObserverState::Unknown);
        assert_eq!(hb.loss["lost_events.network"], 3);
        let e: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"TEAPOT","message":"m"}}"#).unwrap();
        assert_eq!(e.error.code, ErrorCode::Unknown);
    }

    /// The heartbeat keeps its own spelling of the agent's local states.
    #[test]
    fn local_states_map_to_the_heartbeat_spelling() {
        use crate::wire::status::ObserverState as Local;
        let got: Vec<String> = Local::ALL
            .into_iter()
            .map(|s| serde_json::to_string(&ObserverState::from(s)).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                r#""running""#,
                r#""degraded""#,
                r#""unavailable""#,
                r#""disabled""#
            ]
        );
    }

    #[test]
    fn constructors_carry_the_wire_version() {
        let cfg = CompiledConfig::default();
        let r = ConfigResponse::new(1, cfg.clone());
        assert_eq!(r.wire_version, WIRE_VERSION);
        assert_eq!(r.generation(), Some(1));
        assert_eq!(r.config_hash, cfg.hash());
        let back: ConfigResponse =
            serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let hb = Heartbeat::unconfigured("a", BTreeMap::new(), BTreeMap::new());
        assert_eq!(
            (hb.config_hash.as_str(), hb.config_version.as_str()),
            ("", "0")
        );
        assert_eq!(hb.reason, REASON_UNCONFIGURED);
        let v = serde_json::to_value(ErrorBody::new(ErrorCode::PayloadTooLarge, "x")).unwrap();
        assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE");
        assert_eq!(v["wire_version"], WIRE_VERSION);
        assert_eq!(etag(&cfg.hash()), format!("\"{}\"", cfg.hash()));
    }

    #[test]
    fn strings_with_control_characters_or_over_the_limit_are_refused() {
        assert_eq!(check_identifier("node-a", 8), Ok(()));
        assert_eq!(check_identifier("", 8), Err("must not be empty".into()));
        assert_eq!(
            check_identifier("123456789", 8),
            Err("must be at most 8 bytes".into())
        );
        for bad in [
            "a\nb",
            "\u{1b}[31mred",
            "tab\t",
            "nul\0",
            "del\u{7f}",
            "c1\u{85}",
        ] {
            assert_eq!(
                check_text(bad, 64),
                Err("must not contain control characters".into()),
                "{bad:?}"
            );
        }
        assert_eq!(check_text("", 8), Ok(()));
        assert_eq!(check_agent_id("01JA1B2C3D4E5F6G7H8J9K0L1M"), Ok(()));
        for bad in ["a b", "a\u{202e}b", "ägent"] {
            assert_eq!(
                check_agent_id(bad),
                Err("must be visible ASCII (no spaces)".into()),
                "{bad:?}"
            );
        }
        assert_eq!(check_text("ünïcödé ok", 64), Ok(()));
    }

    #[test]
    fn constructors_clamp_reasons_to_what_the_controller_accepts() {
        let long = format!("{}é and more", "x".repeat(MAX_REASON_LEN - 1));
        let observers = BTreeMap::from([
            (
                "node".to_string(),
                ObserverStatus {
                    state: ObserverState::Unavailable,
                    reason: "line1\nline2\u{1b}[0m".into(),
                },
            ),
            (
                "storage".to_string(),
                ObserverStatus {
                    state: ObserverState::Degraded,
                    reason: long,
                },
            ),
        ]);
        let mut many = observers.clone();
        for i in 0..MAX_OBSERVERS {
            many.insert(format!("x{i}"), ObserverStatus::default());
        }
        many.insert("bad\nname".into(), ObserverStatus::default());
        let loss: BTreeMap<String, u64> = (0..MAX_LOSS_COUNTERS + 5)
            .map(|i| (format!("loss.{i:03}"), i as u64))
            .chain([("l".repeat(MAX_LOSS_NAME_LEN + 1), 1)])
            .collect();
        let hb = Heartbeat::unconfigured("a", many, loss);
        assert_eq!(hb.observers.len(), MAX_OBSERVERS);
        assert!(hb
            .observers
            .keys()
            .all(|k| check_identifier(k, MAX_OBSERVER_NAME_LEN).is_ok()));
        assert_eq!(hb.loss.len(), MAX_LOSS_COUNTERS);
        assert_eq!(hb.loss.keys().next().unwrap(), "loss.000");
        assert!(hb.loss.keys().all(|k| k.len() <= MAX_LOSS_NAME_LEN));
        let hb = Heartbeat::unconfigured("a", observers.clone(), BTreeMap::new());
        assert_eq!(hb.observers["node"].reason, "line1 line2 [0m");
        let cut = &hb.observers["storage"].reason;
        assert_eq!(
            cut.len(),
            MAX_REASON_LEN - 1,
            "é is 2 bytes: cut on a char boundary"
        );
        assert!(cut.bytes().all(|b| b == b'x'));
        let hb = Heartbeat::configured(
            "a",
            &CompiledConfig::default().hash(),
            1,
            observers,
            BTreeMap::new(),
        );
        for s in hb.observers.values() {
            assert_eq!(check_text(&s.reason, MAX_REASON_LEN), Ok(()));
        }
    }

    #[test]
    fn generations() {
        assert_eq!(parse_generation("1"), Some(1));
        assert_eq!(parse_generation("0"), Some(0));
        assert_eq!(parse_generation("4294967295"), Some(u32::MAX));
        for bad in ["", "01", "-1", "+1", " 1", "4294967296", "1.0"] {
            assert_eq!(parse_generation(bad), None, "{bad}");
        }
    }
}
