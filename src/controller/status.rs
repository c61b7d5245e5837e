//! `GET /v1/status`: facts only — when the controller started, which config
//! is active, counters, and per agent what it last said and when.
//!
//! ```json
//! {"wire_version":"tapio-wire/v1",
//!  "controller":{"version":"0.1.0","started_at":"2026-04-03T14:23:01.042Z","uptime_secs":12,
//!                "authenticated":true,"max_body_bytes":1048576,"max_agents":10000},
//!  "config":{"profile":"default","config_version":"1","config_hash":"sha256:…",
//!            "active_since":"2026-04-03T14:23:01.042Z"},
//!  "counters":{"hellos":1,"heartbeats":3,"event_batches":1,"occurrences_received":1,…,
//!              "rejected":{"UNAUTHORIZED":2}},
//!  "agents":[{"agent_id":"01JA…","node_name":"node-a","version":"0.1.0","kernel":"6.8.0",
//!             "observers":["network"],"hellos":1,"heartbeats":3,
//!             "last_seen_age_secs":1,"last_heartbeat_age_secs":1,
//!             "applied_config_hash":"sha256:…","applied_config_version":"1",
//!             "applied_hash_matches":true,"state":"ok",
//!             "observer_status":{"network":{"state":"running"}},"loss":{},
//!             "batches":{"last_sequence":1,"received":1,"occurrences":1,"gaps":0,"duplicates":0}}],
//!  "events":{"buffered":1,"capacity":1024,"recent":[{"agent_id":"01JA…","occurrence":{…}}]}}
//! ```
//! Agents are sorted by `agent_id`; `recent` holds the newest
//! [`RECENT_EVENTS`] occurrences, oldest first.

use std::collections::BTreeMap;

use serde::Serialize;

use super::error::ApiError;
use super::state::{AppState, Counters};
use crate::wire::time::format_rfc3339_millis;
use crate::wire::v1::{AgentState, ObserverStatus, WIRE_VERSION};
use crate::wire::Occurrence;

/// Most occurrences listed in `events.recent`.
pub const RECENT_EVENTS: usize = 100;

#[derive(Debug, Serialize)]
pub struct StatusBody {
    pub wire_version: &'static str,
    pub controller: ControllerFacts,
    pub config: ConfigFacts,
    pub counters: Counters,
    pub agents: Vec<AgentFacts>,
    pub events: EventFacts,
}

#[derive(Debug, Serialize)]
pub struct ControllerFacts {
    pub version: &'static str,
    pub started_at: String,
    pub uptime_secs: u64,
    pub authenticated: bool,
    pub max_body_bytes: usize,
    pub max_agents: usize,
}

#[derive(Debug, Serialize)]
pub struct ConfigFacts {
    pub profile: String,
    pub config_version: String,
    pub config_hash: String,
    pub active_since: String,
}

#[derive(Debug, Serialize)]
pub struct BatchFacts {
    pub last_sequence: Option<u64>,
    pub received: u64,
    pub occurrences: u64,
    pub gaps: u64,
    pub duplicates: u64,
}

#[derive(Debug, Serialize)]
pub struct AgentFacts {
    pub agent_id: String,
    pub node_name: String,
    pub version: String,
    pub kernel: String,
    pub observers: Vec<String>,
    pub hellos: u64,
    pub heartbeats: u64,
    pub last_seen_age_secs: u64,
    pub last_heartbeat_age_secs: Option<u64>,
    pub applied_config_hash: String,
    pub applied_config_version: String,
    pub applied_hash_matches: bool,
    pub state: AgentState,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub observer_status: BTreeMap<String, ObserverStatus>,
    pub loss: BTreeMap<String, u64>,
    pub batches: BatchFacts,
}

#[derive(Debug, Serialize)]
pub struct RecentEvent {
    pub agent_id: String,
    pub occurrence: Occurrence,
}

#[derive(Debug, Serialize)]
pub struct EventFacts {
    pub buffered: usize,
    pub capacity: usize,
    pub recent: Vec<RecentEvent>,
}

/// Snapshots the state into a status body.
pub fn build(state: &AppState) -> Result<StatusBody, ApiError> {
    let active = state.active()?;
    let settings = state.settings();
    let shared = &state.0;
    let now = std::time::Instant::now();
    let inner = state.lock()?;
    let mut agents: Vec<AgentFacts> = inner
        .agents
        .iter()
        .map(|(id, a)| AgentFacts {
            agent_id: id.to_string(),
            node_name: a.node_name.clone(),
            version: a.version.clone(),
            kernel: a.kernel.clone(),
            observers: a.observers.clone(),
            hellos: a.hellos,
            heartbeats: a.heartbeats,
            last_seen_age_secs: now.saturating_duration_since(a.last_seen).as_secs(),
            last_heartbeat_age_secs: a
                .last_heartbeat
                .map(|t| now.saturating_duration_since(t).as_secs()),
            applied_config_hash: a.applied_hash.clone(),
            applied_config_version: a.applied_version.clone(),
            applied_hash_matches: a.applied_hash == active.hash.0,
            state: a.state,
            reason: a.reason.clone(),
            observer_status: a.observer_status.clone(),
            loss: a.loss.clone(),
            batches: BatchFacts {
                last_sequence: a.sequence.last,
                received: a.sequence.batches,
                occurrences: a.sequence.occurrences,
                gaps: a.sequence.gaps,
                duplicates: a.sequence.duplicates,
            },
        })
        .collect();
    agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    let skip = inner.events.len().saturating_sub(RECENT_EVENTS);
    let recent = inner
        .events
        .iter()
        .skip(skip)
        .map(|e| RecentEvent {
            agent_id: e.agent_id.to_string(),
            occurrence: e.occurrence.clone(),
        })
        .collect();
    Ok(StatusBody {
        wire_version: WIRE_VERSION,
        controller: ControllerFacts {
            version: env!("CARGO_PKG_VERSION"),
            started_at: format_rfc3339_millis(shared.started_ns),
            uptime_secs: now.saturating_duration_since(shared.started).as_secs(),
            authenticated: shared.token.is_some(),
            max_body_bytes: settings.max_body_bytes,
            max_agents: settings.max_agents,
        },
        config: ConfigFacts {
            profile: active.config.profile.clone(),
            config_version: active.generation.to_string(),
            config_hash: active.hash.0.clone(),
            active_since: format_rfc3339_millis(active.since_ns),
        },
        counters: inner.counters.clone(),
        agents,
        events: EventFacts {
            buffered: inner.events.len(),
            capacity: settings.event_buffer,
            recent,
        },
    })
}
