//! The HTTP surface: [`router`] and its handlers. Every refusal goes
//! through [`ApiError`] and is counted by code.
//!
//! Owns the wire boundary: every string an agent sends is checked here
//! (length, no control characters) before it reaches state or a log line,
//! and every request but `/healthz` passes the token check. Must not keep
//! anything itself (state lives in [`super::state`]) or log an agent
//! string without escaping it (`?` formatting).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use super::error::ApiError;
use super::state::{assign, assign_json, bump, AppState, Sequenced};
use super::status;
use crate::wire::find_reasoning_field;
use crate::wire::v1::{self, ErrorCode, Message, WIRE_VERSION};
use crate::wire::Occurrence;

/// The controller's routes, with the body limit and the JSON 404s.
pub fn router(state: AppState) -> Router {
    let limit = state.settings().max_body_bytes;
    Router::new()
        .route(v1::PATH_HELLO, post(hello))
        .route(v1::PATH_CONFIG, get(config))
        .route(v1::PATH_HEARTBEAT, post(heartbeat))
        .route(v1::PATH_EVENTS, post(events))
        .route(v1::PATH_STATUS, get(status_handler))
        .route("/metrics", get(super::metrics::handler))
        .route(v1::PATH_HEALTHZ, get(healthz))
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(unknown_endpoint)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Renders a handler's outcome, counting refusals.
fn respond(state: &AppState, result: Result<Response, ApiError>) -> Response {
    match result {
        Ok(r) => r,
        Err(e) => {
            state.count_rejection(e.code);
            e.into_response()
        }
    }
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match &state.0.token {
        Some(token) if !token.admits(headers) => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing or wrong bearer token",
        )),
        _ => Ok(()),
    }
}

/// Authorises, then reads the body within the limit and checks the
/// envelope: a JSON object with `wire_version` = v1 and `T`'s required
/// fields.
async fn read_message<T: Message>(state: &AppState, req: Request) -> Result<Value, ApiError> {
    authorize(state, req.headers())?;
    let bytes = Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body exceeds {} bytes",
                    state.settings().max_body_bytes
                ),
            )
        } else {
            ApiError::new(ErrorCode::MalformedJson, "failed to read the request body")
        }
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(map) = &value else {
        return Err(ApiError::new(
            ErrorCode::MalformedJson,
            "body must be a JSON object",
        ));
    };
    match map.get("wire_version") {
        None => return Err(ApiError::missing(&["wire_version"])),
        Some(Value::String(v)) if v == WIRE_VERSION => {}
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "wire_version {other} is not supported; this controller speaks {WIRE_VERSION}"
                ),
            ))
        }
    }
    let missing: Vec<&str> = T::REQUIRED
        .iter()
        .copied()
        .filter(|f| !map.contains_key(*f))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::missing(&missing));
    }
    Ok(value)
}

fn decode<T: Message>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("invalid field: {e}")))
}

/// An identifier (`agent_id`, `node_name`, observer and loss names):
/// non-empty, at most `max` bytes, no control characters.
fn check_id(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    v1::check_identifier(value, max).map_err(|why| ApiError::invalid(format!("{field} {why}")))
}

fn check_agent_id(value: &str) -> Result<(), ApiError> {
    v1::check_agent_id(value).map_err(|why| ApiError::invalid(format!("agent_id {why}")))
}

/// Free text (`version`, `kernel`, reasons): may be empty.
fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    v1::check_text(value, max).map_err(|why| ApiError::invalid(format!("{field} {why}")))
}

fn check_entries(field: &str, len: usize, max: usize) -> Result<(), ApiError> {
    if len > max {
        return Err(ApiError::invalid(format!(
            "{field} must have at most {max} entries"
        )));
    }
    Ok(())
}

fn json<T: serde::Serialize>(body: &T) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|_| ApiError::internal("failed to serialise a response"))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

async fn hello(State(state): State<AppState>, req: Request) -> Response {
    let result = async {
        let value = read_message::<v1::Hello>(&state, req).await?;
        let h: v1::Hello = decode(value)?;
        check_agent_id(&h.agent_id)?;
        check_id("node_name", &h.node_name, v1::MAX_NODE_NAME_LEN)?;
        check_text("version", &h.version, v1::MAX_TEXT_LEN)?;
        check_text("kernel", &h.kernel, v1::MAX_TEXT_LEN)?;
        check_entries("observers", h.observers.len(), v1::MAX_OBSERVERS)?;
        for o in &h.observers {
            check_id("observers[]", o, v1::MAX_OBSERVER_NAME_LEN)?;
        }
        let active = state.active()?;
        {
            let max = state.settings().max_agents;
            let mut inner = state.lock()?;
            bump(&mut inner.counters.hellos, 1);
            let (rec, new) = inner.agent(&h.agent_id, max, Instant::now());
            assign(&mut rec.node_name, &h.node_name);
            assign(&mut rec.version, &h.version);
            assign(&mut rec.kernel, &h.kernel);
            assign_json(&mut rec.observers, &h.observers)?;
            bump(&mut rec.hellos, 1);
            // A hello starts a new batch numbering (wire rule): a restarted
            // instance is never judged against its predecessor's numbers.
            rec.sequence.restart();
            if new {
                // Checked above to hold no control characters; `?` escapes
                // anything else a terminal could take for markup.
                tracing::info!(agent_id = ?h.agent_id, node = ?h.node_name, "agent registered");
            }
        }
        json(&v1::HelloAck {
            wire_version: WIRE_VERSION.into(),
            agent_id: h.agent_id,
            config_version: active.generation.to_string(),
            config_hash: active.hash.clone(),
        })
    }
    .await;
    respond(&state, result)
}

async fn config(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<v1::ConfigQuery>, QueryRejection>,
) -> Response {
    let result = (|| {
        authorize(&state, &headers)?;
        let Query(q) =
            query.map_err(|e| ApiError::invalid(format!("invalid query: {}", e.body_text())))?;
        let agent_id = q.agent_id.ok_or_else(|| ApiError::missing(&["agent_id"]))?;
        check_agent_id(&agent_id)?;
        let active = state.active()?;
        let not_modified = headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == active.etag.as_bytes());
        {
            let mut inner = state.lock()?;
            bump(&mut inner.counters.config_fetches, 1);
            if not_modified {
                bump(&mut inner.counters.config_not_modified, 1);
            }
            if let Some(rec) = inner.agents.get_mut(agent_id.as_str()) {
                rec.last_seen = Instant::now();
            }
        }
        let etag = HeaderValue::from_str(&active.etag)
            .map_err(|_| ApiError::internal("unrepresentable ETag"))?;
        if not_modified {
            return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
        }
        Ok((
            [
                (header::ETAG, etag),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
            ],
            active.body.clone(),
        )
            .into_response())
    })();
    if result.is_err() {
        state.count_config_fetch_error();
    }
    respond(&state, result)
}

async fn heartbeat(State(state): State<AppState>, req: Request) -> Response {
    let result = async {
        let value = read_message::<v1::Heartbeat>(&state, req).await?;
        let hb: v1::Heartbeat = decode(value)?;
        check_agent_id(&hb.agent_id)?;
        check_text("reason", &hb.reason, v1::MAX_REASON_LEN)?;
        let Some(version) = v1::parse_generation(&hb.config_version) else {
            return Err(ApiError::invalid("config_version must be a u32 in decimal"));
        };
        if hb.config_hash.is_empty() != (version == 0) {
            return Err(ApiError::invalid(
                "config_version must be \"0\" exactly when config_hash is empty (unconfigured)",
            ));
        }
        if !hb.config_hash.is_empty() && !is_config_hash(&hb.config_hash) {
            return Err(ApiError::invalid(
                "config_hash must be \"sha256:<64 hex digits>\" or empty",
            ));
        }
        check_entries("observers", hb.observers.len(), v1::MAX_OBSERVERS)?;
        for (name, s) in &hb.observers {
            check_id("observers key", name, v1::MAX_OBSERVER_NAME_LEN)?;
            check_text("observers.reason", &s.reason, v1::MAX_REASON_LEN)?;
        }
        check_entries("loss", hb.loss.len(), v1::MAX_LOSS_COUNTERS)?;
        for name in hb.loss.keys() {
            check_id("loss key", name, v1::MAX_LOSS_NAME_LEN)?;
        }
        let active = state.active()?;
        let hello_required = {
            let max = state.settings().max_agents;
            let mut inner = state.lock()?;
            bump(&mut inner.counters.heartbeats, 1);
            let now = Instant::now();
            let (rec, _) = inner.agent(&hb.agent_id, max, now);
            rec.last_heartbeat = Some(now);
            bump(&mut rec.heartbeats, 1);
            assign(&mut rec.applied_hash, &hb.config_hash);
            assign(&mut rec.applied_version, &hb.config_version);
            rec.state = hb.state;
            assign(&mut rec.reason, &hb.reason);
            assign_json(&mut rec.observer_status, &hb.observers)?;
            assign_json(&mut rec.loss, &hb.loss)?;
            rec.hellos == 0
        };
        json(&v1::HeartbeatAck {
            wire_version: WIRE_VERSION.into(),
            config_version: active.generation.to_string(),
            config_hash: active.hash.clone(),
            hello_required,
        })
    }
    .await;
    respond(&state, result)
}

fn is_config_hash(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

async fn events(State(state): State<AppState>, req: Request) -> Response {
    let result = async {
        let value = read_message::<v1::EventBatch>(&state, req).await?;
        if let Some(field) = find_reasoning_field(&value) {
            return Err(ApiError::new(
                ErrorCode::ReasoningField,
                format!("event batch carries the reasoning field \"{field}\"; occurrences carry facts only"),
            ));
        }
        let Value::Object(mut map) = value else {
            return Err(ApiError::new(ErrorCode::MalformedJson, "body must be a JSON object"));
        };
        // Decode occurrences one by one, so an error names its index.
        let raw = map.remove("occurrences").unwrap_or(Value::Null);
        let Value::Array(items) = raw else {
            return Err(ApiError::invalid("occurrences must be an array"));
        };
        if items.len() > v1::MAX_BATCH_OCCURRENCES {
            return Err(ApiError::invalid(format!(
                "occurrences must have at most {} entries",
                v1::MAX_BATCH_OCCURRENCES
            )));
        }
        let mut occurrences = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let occ: Occurrence = serde_json::from_value(item)
                .map_err(|e| ApiError::invalid(format!("occurrences[{i}]: {e}")))?;
            occurrences.push(occ);
        }
        map.insert("occurrences".into(), Value::Array(Vec::new()));
        let mut batch: v1::EventBatch = decode(Value::Object(map))?;
        batch.occurrences = occurrences;
        check_agent_id(&batch.agent_id)?;

        let n = batch.occurrences.len() as u64;
        let duplicate = {
            let settings = state.settings().clone();
            let mut inner = state.lock()?;
            bump(&mut inner.counters.event_batches, 1);
            let (rec, _) = inner.agent(&batch.agent_id, settings.max_agents, Instant::now());
            let gaps_before = rec.sequence.gaps;
            let verdict = rec.sequence.observe(batch.sequence);
            let fresh = verdict != Sequenced::Duplicate;
            if fresh {
                bump(&mut rec.sequence.occurrences, n);
            }
            let new_gaps = rec.sequence.gaps.saturating_sub(gaps_before);
            bump(&mut inner.counters.sequence_gaps, new_gaps);
            if verdict == Sequenced::Reset {
                bump(&mut inner.counters.sequence_resets, 1);
            }
            if fresh {
                bump(&mut inner.counters.occurrences_received, n);
                inner.store_events(&batch.agent_id, std::mem::take(&mut batch.occurrences), &settings);
            } else {
                bump(&mut inner.counters.duplicate_batches, 1);
            }
            !fresh
        };
        json(&v1::EventAck {
            wire_version: WIRE_VERSION.into(),
            agent_id: batch.agent_id,
            sequence: batch.sequence,
            accepted: if duplicate { 0 } else { n as u32 },
            duplicate,
        })
    }
    .await;
    if result.is_err() {
        state.count_event_batch_reject();
    }
    respond(&state, result)
}

async fn status_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<status::StatusQuery>, QueryRejection>,
) -> Response {
    let result = (|| {
        authorize(&state, &headers)?;
        let Query(q) =
            query.map_err(|e| ApiError::invalid(format!("invalid query: {}", e.body_text())))?;
        let view = q.view()?;
        let bytes = status::render(&state, &view)?;
        Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
    })();
    respond(&state, result)
}

/// For probes: answers while the runtime serves requests, without a token
/// and without touching the state lock.
async fn healthz() -> &'static str {
    "ok"
}

async fn unknown_endpoint(State(state): State<AppState>, req: Request) -> Response {
    let path: String = req.uri().path().chars().take(200).collect();
    let message = format!("no endpoint {} {path}", req.method());
    respond(
        &state,
        Err(ApiError::new(ErrorCode::UnknownEndpoint, message)),
    )
}
