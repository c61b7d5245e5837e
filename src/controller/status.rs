//! `GET /v1/status`: facts only — when the controller started, which config
//! is active, counters, and per agent what it last said and when.
//!
//! Owns the two bounded views of the registry and their serialisation.
//! Must not change state, or grow with the fleet: whatever the number of
//! agents, one response holds at most [`ATTENTION_AGENTS`] (summary) or
//! [`MAX_PAGE`] (page) agents and [`RECENT_EVENTS`] occurrences of at most
//! [`RECENT_EVENTS_BYTES`] together. The body is serialised straight from
//! the registry under its lock into one buffer (no per-agent copies).
//!
//! The summary (no query, or `?agents=summary`):
//! ```json
//! {"wire_version":"tapio-wire/v1",
//!  "controller":{"version":"0.1.0","started_at":"2026-04-03T14:23:01.042Z","uptime_secs":12,
//!                "authenticated":true,"max_body_bytes":1048576,"max_agents":10000},
//!  "config":{"profile":"default","config_version":"1","config_hash":"sha256:…",
//!            "active_since":"2026-04-03T14:23:01.042Z"},
//!  "counters":{"hellos":1,"heartbeats":3,"event_batches":1,"occurrences_received":1,…,
//!              "rejected":{"UNAUTHORIZED":2}},
//!  "agent_counts":{"registered":1,"unconfigured":0,"degraded":0,"stale":0,
//!                  "config_mismatch":0,"heartbeat_age_max_secs":1},
//!  "agents":[{"agent_id":"01JA…","node_name":"node-a","version":"0.1.0","kernel":"6.8.0",
//!             "observers":["network"],"hellos":1,"heartbeats":3,
//!             "last_seen_age_secs":1,"last_heartbeat_age_secs":1,
//!             "applied_config_hash":"sha256:…","applied_config_version":"1",
//!             "applied_hash_matches":true,"state":"ok",
//!             "observer_status":{"network":{"state":"running"}},"loss":{},
//!             "batches":{"last_sequence":1,"received":1,"occurrences":1,"gaps":0,
//!                        "duplicates":0,"resets":0}}],
//!  "agents_omitted":0,
//!  "events":{"buffered":1,"capacity":1024,"recent":[{"agent_id":"01JA…","occurrence":{…}}]}}
//! ```
//! `agents` lists the agents most in need of attention first: stale ones
//! (no heartbeat for [`STALE_AFTER_SECS`]) before the others; within each,
//! those in trouble (degraded, unconfigured or on another config) first;
//! then the longest silent first, then by `agent_id`. `agents_omitted`
//! says how many more there are. `recent` holds the newest occurrences,
//! oldest first.
//!
//! A page (`?agents=page&cursor=<agent_id>&limit=<1..=500>`, default limit
//! [`DEFAULT_PAGE`]): the agents after `cursor` in `agent_id` order;
//! `next_cursor` is the cursor for the next page, `null` after the last.
//! ```json
//! {"wire_version":"tapio-wire/v1","registered":10000,"agents":[…],"next_cursor":"01JA…"}
//! ```

use std::cmp::Reverse;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::state::{AgentRecord, AppState, Counters, Inner};
use crate::wire::time::format_rfc3339_millis;
use crate::wire::v1::{self, AgentState, WIRE_VERSION};
use serde_json::value::RawValue;

/// Most agents in the summary.
pub const ATTENTION_AGENTS: usize = 50;
/// Most occurrences listed in `events.recent`.
pub const RECENT_EVENTS: usize = 20;
/// Most serialised bytes of occurrences in `events.recent`.
pub const RECENT_EVENTS_BYTES: usize = 256 * 1024;
/// Largest page.
pub const MAX_PAGE: usize = 500;
/// Page size when the query gives none.
pub const DEFAULT_PAGE: usize = 100;
/// An agent is stale after this long without a heartbeat: three of the
/// agent's default 10 s intervals (the controller does not know the
/// interval an agent was given).
pub const STALE_AFTER_SECS: u64 = 30;

/// The query of `GET /v1/status`, checked by [`StatusQuery::view`].
#[derive(Debug, Default, Deserialize)]
pub struct StatusQuery {
    #[serde(default)]
    pub agents: Option<String>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub limit: Option<String>,
}

/// Which view of the registry a status request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Summary,
    Page {
        cursor: Option<String>,
        limit: usize,
    },
}

impl StatusQuery {
    /// The view, or `400 INVALID_FIELD` naming the parameter.
    pub fn view(&self) -> Result<View, ApiError> {
        match self.agents.as_deref() {
            None | Some("summary") => {
                if self.cursor.is_some() || self.limit.is_some() {
                    return Err(ApiError::invalid("cursor and limit need agents=page"));
                }
                Ok(View::Summary)
            }
            Some("page") => {
                let limit = match self.limit.as_deref() {
                    None => DEFAULT_PAGE,
                    Some(l) => l
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid(format!("limit must be an integer in 1..={MAX_PAGE}"))
                        })?,
                };
                if let Some(c) = &self.cursor {
                    v1::check_identifier(c, v1::MAX_ID_LEN)
                        .map_err(|why| ApiError::invalid(format!("cursor {why}")))?;
                }
                Ok(View::Page {
                    cursor: self.cursor.clone(),
                    limit,
                })
            }
            Some(_) => Err(ApiError::invalid("agents must be summary or page")),
        }
    }
}

/// Fleet-wide counts over every registered agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgentCounts {
    pub registered: usize,
    /// No config applied (or no heartbeat yet).
    pub unconfigured: usize,
    /// Last heartbeat said `degraded`.
    pub degraded: usize,
    /// No heartbeat for [`STALE_AFTER_SECS`] (or none at all by then).
    pub stale: usize,
    /// Applied a config other than the active one.
    pub config_mismatch: usize,
    /// Longest time since an agent's last heartbeat (or since it was first
    /// seen, if it never sent one).
    pub heartbeat_age_max_secs: u64,
}

/// What one agent looks like at `now` against the active hash.
struct Health {
    silent_secs: u64,
    stale: bool,
    unconfigured: bool,
    degraded: bool,
    mismatch: bool,
}

fn health(a: &AgentRecord, active_hash: &str, now: Instant) -> Health {
    let silent_secs = now
        .saturating_duration_since(a.last_heartbeat.unwrap_or(a.first_seen))
        .as_secs();
    let unconfigured = a.applied_hash.is_empty();
    Health {
        silent_secs,
        stale: silent_secs >= STALE_AFTER_SECS,
        unconfigured,
        degraded: a.state == AgentState::Degraded,
        mismatch: !unconfigured && a.applied_hash != active_hash,
    }
}

/// Counts over the whole registry (also what `/metrics` reports).
pub fn agent_counts(inner: &Inner, active_hash: &str, now: Instant) -> AgentCounts {
    let mut c = AgentCounts {
        registered: inner.agents.len(),
        ..AgentCounts::default()
    };
    for a in inner.agents.values() {
        let h = health(a, active_hash, now);
        c.unconfigured += usize::from(h.unconfigured);
        c.degraded += usize::from(h.degraded);
        c.stale += usize::from(h.stale);
        c.config_mismatch += usize::from(h.mismatch);
        c.heartbeat_age_max_secs = c.heartbeat_age_max_secs.max(h.silent_secs);
    }
    c
}

#[derive(Serialize)]
struct ControllerFacts {
    version: &'static str,
    started_at: String,
    uptime_secs: u64,
    authenticated: bool,
    max_body_bytes: usize,
    max_agents: usize,
}

#[derive(Serialize)]
struct ConfigFacts<'a> {
    profile: &'a str,
    config_version: String,
    config_hash: &'a str,
    active_since: String,
}

#[derive(Serialize)]
struct BatchFacts {
    last_sequence: Option<u64>,
    received: u64,
    occurrences: u64,
    gaps: u64,
    duplicates: u64,
    resets: u64,
}

/// One agent, borrowed from the registry.
#[derive(Serialize)]
struct AgentFacts<'a> {
    agent_id: &'a str,
    node_name: &'a str,
    version: &'a str,
    kernel: &'a str,
    observers: Option<&'a RawValue>,
    hellos: u64,
    heartbeats: u64,
    last_seen_age_secs: u64,
    last_heartbeat_age_secs: Option<u64>,
    applied_config_hash: &'a str,
    applied_config_version: &'a str,
    applied_hash_matches: bool,
    state: AgentState,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    observer_status: Option<&'a RawValue>,
    loss: Option<&'a RawValue>,
    batches: BatchFacts,
}

/// JSON text the registry keeps, embedded as it is (`null` if it were
/// ever not JSON, which [`super::state::assign_json`] rules out).
fn raw(text: &str) -> Option<&RawValue> {
    serde_json::from_str(text).ok()
}

fn facts<'a>(id: &'a str, a: &'a AgentRecord, active_hash: &str, now: Instant) -> AgentFacts<'a> {
    AgentFacts {
        agent_id: id,
        node_name: &a.node_name,
        version: &a.version,
        kernel: &a.kernel,
        observers: raw(&a.observers),
        hellos: a.hellos,
        heartbeats: a.heartbeats,
        last_seen_age_secs: now.saturating_duration_since(a.last_seen).as_secs(),
        last_heartbeat_age_secs: a
            .last_heartbeat
            .map(|t| now.saturating_duration_since(t).as_secs()),
        applied_config_hash: &a.applied_hash,
        applied_config_version: &a.applied_version,
        applied_hash_matches: a.applied_hash == active_hash,
        state: a.state,
        reason: &a.reason,
        observer_status: raw(&a.observer_status),
        loss: raw(&a.loss),
        batches: BatchFacts {
            last_sequence: a.sequence.last,
            received: a.sequence.batches,
            occurrences: a.sequence.occurrences,
            gaps: a.sequence.gaps,
            duplicates: a.sequence.duplicates,
            resets: a.sequence.resets,
        },
    }
}

#[derive(Serialize)]
struct RecentEvent<'a> {
    agent_id: &'a str,
    occurrence: &'a RawValue,
}

#[derive(Serialize)]
struct EventFacts<'a> {
    buffered: usize,
    capacity: usize,
    recent: Vec<RecentEvent<'a>>,
}

#[derive(Serialize)]
struct Summary<'a> {
    wire_version: &'static str,
    controller: ControllerFacts,
    config: ConfigFacts<'a>,
    counters: &'a Counters,
    agent_counts: AgentCounts,
    agents: Vec<AgentFacts<'a>>,
    agents_omitted: usize,
    events: EventFacts<'a>,
}

#[derive(Serialize)]
struct Page<'a> {
    wire_version: &'static str,
    registered: usize,
    agents: Vec<AgentFacts<'a>>,
    next_cursor: Option<&'a str>,
}

/// Serialises `view` of the state into a JSON body.
pub fn render(state: &AppState, view: &View) -> Result<Vec<u8>, ApiError> {
    let active = state.active()?;
    let active_hash = active.hash.0.as_str();
    let now = Instant::now();
    let inner = state.lock()?;
    let serialised = match view {
        View::Page { cursor, limit } => {
            let lower = match cursor {
                Some(c) => Bound::Excluded(c.as_str()),
                None => Bound::Unbounded,
            };
            let mut walk = inner
                .agents
                .range::<str, _>((lower, Bound::Unbounded))
                .map(|(id, a)| facts(id, a, active_hash, now));
            let agents: Vec<AgentFacts<'_>> = walk.by_ref().take(*limit).collect();
            let more = walk.next().is_some();
            let next_cursor = if more {
                agents.last().map(|a| a.agent_id)
            } else {
                None
            };
            serde_json::to_vec(&Page {
                wire_version: WIRE_VERSION,
                registered: inner.agents.len(),
                agents,
                next_cursor,
            })
        }
        View::Summary => {
            let settings = state.settings();
            let shared = &state.0;
            let agents = most_in_need(&inner, active_hash, now);
            let body = Summary {
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
                    profile: &active.config.profile,
                    config_version: active.generation.to_string(),
                    config_hash: active_hash,
                    active_since: format_rfc3339_millis(active.since_ns),
                },
                counters: &inner.counters,
                agent_counts: agent_counts(&inner, active_hash, now),
                agents_omitted: inner.agents.len().saturating_sub(agents.len()),
                agents,
                events: EventFacts {
                    buffered: inner.events.len(),
                    capacity: settings.event_buffer,
                    recent: recent_events(&inner),
                },
            };
            serde_json::to_vec(&body)
        }
    };
    serialised.map_err(|_| ApiError::internal("failed to serialise /v1/status"))
}

/// Sort key: (stale, in trouble, seconds silent), the largest first.
type Attention = Reverse<(bool, bool, u64)>;

/// The [`ATTENTION_AGENTS`] agents most in need of attention, worst first.
fn most_in_need<'a>(inner: &'a Inner, active_hash: &str, now: Instant) -> Vec<AgentFacts<'a>> {
    // A key per agent (no copies of its strings); only the chosen few are
    // then sorted and turned into facts.
    let mut ranked: Vec<(Attention, &Arc<str>, &AgentRecord)> = inner
        .agents
        .iter()
        .map(|(id, a)| {
            let h = health(a, active_hash, now);
            let trouble = h.degraded || h.unconfigured || h.mismatch;
            (Reverse((h.stale, trouble, h.silent_secs)), id, a)
        })
        .collect();
    let keep = ranked.len().min(ATTENTION_AGENTS);
    if keep < ranked.len() {
        ranked.select_nth_unstable_by(keep, |x, y| (x.0, x.1).cmp(&(y.0, y.1)));
        ranked.truncate(keep);
    }
    ranked.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    ranked
        .into_iter()
        .map(|(_, id, a)| facts(id, a, active_hash, now))
        .collect()
}

/// The newest occurrences within [`RECENT_EVENTS`] and
/// [`RECENT_EVENTS_BYTES`], oldest first.
fn recent_events(inner: &Inner) -> Vec<RecentEvent<'_>> {
    let mut bytes = 0usize;
    let mut recent: Vec<RecentEvent<'_>> = Vec::new();
    for e in inner.events.iter().rev().take(RECENT_EVENTS) {
        bytes = bytes.saturating_add(e.size);
        if bytes > RECENT_EVENTS_BYTES {
            break;
        }
        recent.push(RecentEvent {
            agent_id: &e.agent_id,
            occurrence: &e.occurrence,
        });
    }
    recent.reverse();
    recent
}
