//! `GET /metrics` of the controller (SPEC §8): the fleet as counts, in the
//! Prometheus text format 0.0.4.
//!
//! Owns: the controller's metric names and how each is derived. Everything
//! is computed at scrape time from [`AppState`] (the registry and the
//! counters the handlers already keep), so there is no second copy of any
//! figure to drift. Must not: put an agent identity (id, node name) or any
//! other request-supplied string in a label: only fixed names (results,
//! wire error codes, the build version) appear, so the exposition has a
//! bounded size at any fleet size, and it needs no token (see the route).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::state::{code_name, AppState};
use crate::wire::v1::ErrorCode;

/// An agent without a heartbeat for this long counts as stale: three
/// heartbeats at the agent's default interval (10 s). The wire does not
/// carry an agent's interval, so an agent configured slower than that
/// shows as stale between its heartbeats.
pub const STALE_AFTER: Duration = Duration::from_secs(30);

/// Every wire error code, so each `tapio_controller_rejects_total{code}`
/// series exists at 0 from start.
pub const ERROR_CODES: [ErrorCode; 10] = [
    ErrorCode::MissingField,
    ErrorCode::InvalidField,
    ErrorCode::MalformedJson,
    ErrorCode::UnsupportedVersion,
    ErrorCode::Unauthorized,
    ErrorCode::PayloadTooLarge,
    ErrorCode::ReasoningField,
    ErrorCode::UnknownEndpoint,
    ErrorCode::InternalError,
    ErrorCode::Unknown,
];

/// The figures of one scrape.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    pub agents: u64,
    pub unconfigured: u64,
    pub stale: u64,
    pub heartbeat_age_max_seconds: f64,
    pub fetches_ok: u64,
    pub fetches_not_modified: u64,
    pub fetches_error: u64,
    pub batches_accepted: u64,
    pub batches_duplicate: u64,
    pub batches_rejected: u64,
    pub rejects: Vec<(&'static str, u64)>,
    pub generation: u32,
}

impl Snapshot {
    /// Reads `state` once, under its lock (one pass over the registry).
    pub fn take(state: &AppState, now: Instant) -> Snapshot {
        let generation = state.active().map(|a| a.generation).unwrap_or(0);
        // A poisoned lock still holds the last figures; metrics should
        // show them rather than go blank when they matter most.
        let inner = match state.0.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut s = Snapshot {
            generation,
            agents: inner.agents.len() as u64,
            ..Snapshot::default()
        };
        for rec in inner.agents.values() {
            // An agent that never sent a heartbeat is judged by when it was
            // last heard from at all (its hello or config fetch).
            let age = now.saturating_duration_since(rec.last_heartbeat.unwrap_or(rec.last_seen));
            if rec.applied_hash.is_empty() {
                s.unconfigured += 1;
            }
            if age > STALE_AFTER {
                s.stale += 1;
            }
            s.heartbeat_age_max_seconds = s.heartbeat_age_max_seconds.max(age.as_secs_f64());
        }
        let c = &inner.counters;
        s.fetches_not_modified = c.config_not_modified;
        s.fetches_ok = c.config_fetches.saturating_sub(c.config_not_modified);
        s.fetches_error = c.config_fetch_errors;
        s.batches_duplicate = c.duplicate_batches;
        s.batches_accepted = c.event_batches.saturating_sub(c.duplicate_batches);
        s.batches_rejected = c.event_batch_rejects;
        s.rejects = ERROR_CODES
            .iter()
            .map(|&code| {
                let name = code_name(code);
                (name, c.rejected.get(name).copied().unwrap_or(0))
            })
            .collect();
        s
    }

    /// The exposition. Label values are fixed names, so none needs escaping.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |v: String| vec![(String::new(), v)];
        family(
            "tapio_build_info",
            "gauge",
            "Always 1; the version label says which build runs.",
            &[(
                format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
                "1".into(),
            )],
        );
        family(
            "tapio_controller_agents",
            "gauge",
            "Agents in the registry.",
            &one(self.agents.to_string()),
        );
        family(
            "tapio_controller_agents_unconfigured",
            "gauge",
            "Registered agents that report no applied config (inert).",
            &one(self.unconfigured.to_string()),
        );
        family(
            "tapio_controller_agents_stale",
            "gauge",
            "Registered agents without a heartbeat for 30 s (3 default intervals).",
            &one(self.stale.to_string()),
        );
        family(
            "tapio_controller_heartbeat_age_max_seconds",
            "gauge",
            "Longest time since any registered agent's last heartbeat (0 without agents).",
            &one(format!("{:.3}", self.heartbeat_age_max_seconds)),
        );
        family(
            "tapio_controller_config_fetches_total",
            "counter",
            "Config polls by outcome.",
            &[
                ("{result=\"ok\"}".into(), self.fetches_ok.to_string()),
                (
                    "{result=\"not_modified\"}".into(),
                    self.fetches_not_modified.to_string(),
                ),
                ("{result=\"error\"}".into(), self.fetches_error.to_string()),
            ],
        );
        family(
            "tapio_controller_event_batches_total",
            "counter",
            "Event batches by outcome.",
            &[
                (
                    "{result=\"accepted\"}".into(),
                    self.batches_accepted.to_string(),
                ),
                (
                    "{result=\"duplicate\"}".into(),
                    self.batches_duplicate.to_string(),
                ),
                (
                    "{result=\"rejected\"}".into(),
                    self.batches_rejected.to_string(),
                ),
            ],
        );
        // Every code, whatever the snapshot holds: absent() and
        // dashboards see each series from the first scrape.
        let rejects: Vec<(String, String)> = ERROR_CODES
            .iter()
            .map(|&code| {
                let name = code_name(code);
                let n = self
                    .rejects
                    .iter()
                    .find(|(c, _)| *c == name)
                    .map_or(0, |(_, n)| *n);
                (format!("{{code=\"{name}\"}}"), n.to_string())
            })
            .collect();
        family(
            "tapio_controller_rejects_total",
            "counter",
            "Refused requests by wire error code.",
            &rejects,
        );
        family(
            "tapio_controller_config_generation",
            "gauge",
            "Generation of the config being served.",
            &one(self.generation.to_string()),
        );
        out
    }
}

/// `GET /metrics`. It names no agent, only counts, so it needs no token:
/// Prometheus scrapes it without holding the agents' secret.
pub(crate) async fn handler(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Snapshot::take(&state, Instant::now()).encode(),
    )
        .into_response()
}

impl AppState {
    /// Counts a refused `GET /v1/config` (auth, query).
    pub(crate) fn count_config_fetch_error(&self) {
        if let Ok(mut inner) = self.0.inner.lock() {
            inner.counters.config_fetch_errors += 1;
        }
    }

    /// Counts a refused `POST /v1/events` (auth, body, validation).
    pub(crate) fn count_event_batch_reject(&self) {
        if let Ok(mut inner) = self.0.inner.lock() {
            inner.counters.event_batch_rejects += 1;
        }
    }
}
