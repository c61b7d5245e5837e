//! Controller state: the active config (generation + hash), the bounded
//! agent registry, the bounded event buffer and the counters. No I/O; the
//! wall clock enters once, as the start time, and ages use `Instant`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::auth::Token;
use super::error::ApiError;
use crate::wire::config::{CompiledConfig, ConfigHash};
use crate::wire::v1::{self, AgentState, ErrorCode};
use crate::wire::Occurrence;

/// Limits of one controller. All memory the controller holds is bounded
/// by these (and the per-field limits in [`v1`]).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest request body; larger → `413 PAYLOAD_TOO_LARGE`.
    pub max_body_bytes: usize,
    /// Most agents remembered; a new agent beyond it evicts the one seen
    /// least recently.
    pub max_agents: usize,
    /// Most occurrences kept for `/v1/status`; older ones are evicted.
    pub event_buffer: usize,
    /// Most bytes (serialised) of occurrences kept.
    pub event_buffer_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_body_bytes: 1024 * 1024,
            max_agents: 10_000,
            event_buffer: 1024,
            event_buffer_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The config the controller serves, with its response pre-serialised.
#[derive(Debug)]
pub struct ActiveConfig {
    pub generation: u32,
    pub hash: ConfigHash,
    pub config: CompiledConfig,
    /// `"<hash>"`, the ETag.
    pub etag: String,
    /// JSON of the `ConfigResponse`.
    pub body: Bytes,
    /// Wall-clock ns when this generation became active.
    pub since_ns: u64,
}

impl ActiveConfig {
    fn new(generation: u32, config: CompiledConfig, since_ns: u64) -> ActiveConfig {
        let response = v1::ConfigResponse::new(generation, config.clone());
        // A ConfigResponse is plain data; serialising it cannot fail.
        let body = Bytes::from(serde_json::to_vec(&response).unwrap_or_default());
        ActiveConfig {
            generation,
            etag: v1::etag(&response.config_hash),
            hash: response.config_hash,
            config,
            body,
            since_ns,
        }
    }
}

/// What applying a (re)loaded config did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Same compiled content: the generation stays.
    Unchanged { generation: u32 },
    /// New content: a new generation.
    Updated { generation: u32, hash: ConfigHash },
    /// The generation counter is exhausted; the old config stays.
    Exhausted,
}

/// Adds without wrapping: a counter fed by machine payloads (an agent's
/// sequence numbers, batch sizes) stops at `u64::MAX` instead.
pub fn bump(counter: &mut u64, n: u64) {
    *counter = counter.saturating_add(n);
}

/// What [`SequenceState::observe`] made of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequenced {
    /// Next in line (or after a gap): store it.
    Fresh,
    /// Already seen (a retry): acknowledge, do not store.
    Duplicate,
    /// Far outside the window around the last number: the numbering
    /// started over. Store it and judge later batches against it.
    Reset,
}

/// Per-agent event batch sequence state (rule in [`crate::wire::v1`],
/// `POST /v1/events`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SequenceState {
    /// Last sequence number accepted; `None` before the first batch and
    /// after a hello.
    pub last: Option<u64>,
    pub batches: u64,
    pub occurrences: u64,
    /// Batches skipped over (sequence jumped by more than one).
    pub gaps: u64,
    /// Batches whose number was already seen (not stored again).
    pub duplicates: u64,
    /// Times the numbering started over (a far jump either way).
    pub resets: u64,
}

impl SequenceState {
    /// Judges batch `seq` and records it.
    pub fn observe(&mut self, seq: u64) -> Sequenced {
        let verdict = match self.last {
            None => Sequenced::Fresh,
            Some(last) if seq > last && seq - last <= v1::SEQUENCE_WINDOW => {
                bump(&mut self.gaps, seq - last - 1);
                Sequenced::Fresh
            }
            Some(last) if seq <= last && last - seq <= v1::SEQUENCE_WINDOW => {
                bump(&mut self.duplicates, 1);
                return Sequenced::Duplicate;
            }
            Some(_) => {
                bump(&mut self.resets, 1);
                Sequenced::Reset
            }
        };
        self.last = Some(seq);
        bump(&mut self.batches, 1);
        verdict
    }

    /// A hello: the next batch starts a new numbering (totals stay).
    pub fn restart(&mut self) {
        self.last = None;
    }
}

/// What the controller remembers of one agent. Kept compact, because
/// 10,000 of these with every field at its limit must fit the controller's
/// memory limit: the maps and lists that are only ever shown (observer
/// statuses, loss counters, the observer list) are kept as their compact
/// JSON text, one allocation each instead of one per entry and tree node;
/// and every string is overwritten in place ([`assign`], [`assign_json`]),
/// so the heartbeats of a steady fleet reuse the same allocations instead
/// of fragmenting the heap with new ones.
#[derive(Debug)]
pub struct AgentRecord {
    pub node_name: String,
    pub version: String,
    pub kernel: String,
    /// JSON array of observer names, from the last hello.
    pub observers: String,
    pub hellos: u64,
    /// When the record was created (an agent without heartbeats is silent
    /// since then).
    pub first_seen: Instant,
    pub last_seen: Instant,
    pub last_heartbeat: Option<Instant>,
    pub heartbeats: u64,
    pub applied_hash: String,
    pub applied_version: String,
    pub state: AgentState,
    pub reason: String,
    /// JSON object observer → `{"state":…,"reason":…}`, from the last
    /// heartbeat.
    pub observer_status: String,
    /// JSON object counter name → total, from the last heartbeat.
    pub loss: String,
    pub sequence: SequenceState,
}

/// Overwrites `dst` with `src`, in its own allocation when it fits, else
/// in one of exactly the size needed (no amortised doubling: 10,000
/// records would carry the slack for good).
pub fn assign(dst: &mut String, src: &str) {
    if dst != src {
        dst.clear();
        dst.reserve_exact(src.len());
        dst.push_str(src);
    }
}

/// Overwrites `dst` with the compact JSON of `value`, like [`assign`].
pub fn assign_json<T: Serialize + ?Sized>(dst: &mut String, value: &T) -> Result<(), ApiError> {
    // Serialised aside (a short-lived buffer, freed at once) so that the
    // kept string gets its exact size.
    let text = serde_json::to_string(value)
        .map_err(|_| ApiError::internal("failed to serialise agent facts"))?;
    assign(dst, &text);
    Ok(())
}

impl AgentRecord {
    fn new(now: Instant) -> AgentRecord {
        AgentRecord {
            node_name: String::new(),
            version: String::new(),
            kernel: String::new(),
            observers: "[]".into(),
            hellos: 0,
            first_seen: now,
            last_seen: now,
            last_heartbeat: None,
            heartbeats: 0,
            applied_hash: String::new(),
            applied_version: "0".into(),
            state: AgentState::Unknown,
            reason: String::new(),
            observer_status: "{}".into(),
            loss: "{}".into(),
            sequence: SequenceState::default(),
        }
    }
}

/// Counters shown in `/v1/status`, serialised there as they are.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counters {
    pub hellos: u64,
    pub config_fetches: u64,
    pub config_not_modified: u64,
    pub heartbeats: u64,
    pub event_batches: u64,
    pub occurrences_received: u64,
    pub occurrences_evicted: u64,
    pub duplicate_batches: u64,
    pub sequence_gaps: u64,
    pub sequence_resets: u64,
    pub agents_evicted: u64,
    pub reloads_applied: u64,
    pub reloads_unchanged: u64,
    pub reloads_rejected: u64,
    /// Error responses by code.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Refused `GET /v1/config` requests (for `/metrics` only).
    #[serde(skip)]
    pub config_fetch_errors: u64,
    /// Refused `POST /v1/events` requests (for `/metrics` only).
    #[serde(skip)]
    pub event_batch_rejects: u64,
}

/// One buffered occurrence, kept as its compact JSON: a parsed `data` map
/// can cost many times its serialised size (every array element a
/// `Value`), so only the JSON text counts against the byte budget and
/// that is what memory holds.
#[derive(Debug)]
pub struct StoredEvent {
    pub agent_id: Arc<str>,
    pub occurrence: Box<RawValue>,
    pub size: usize,
}

#[derive(Debug, Default)]
pub struct Inner {
    /// Ordered by `agent_id`, so `/v1/status` pages walk it with a cursor.
    pub agents: BTreeMap<Arc<str>, AgentRecord>,
    pub events: VecDeque<StoredEvent>,
    pub event_bytes: usize,
    pub counters: Counters,
}

impl Inner {
    /// The record for `agent_id`, created (evicting the least recently seen
    /// agent when full) if unknown. Returns the record and whether it is new.
    pub fn agent(
        &mut self,
        agent_id: &str,
        max_agents: usize,
        now: Instant,
    ) -> (&mut AgentRecord, bool) {
        let known = self.agents.contains_key(agent_id);
        if !known && self.agents.len() >= max_agents.max(1) {
            let oldest = self
                .agents
                .iter()
                .min_by_key(|(_, a)| a.last_seen)
                .map(|(id, _)| Arc::clone(id));
            if let Some(id) = oldest {
                self.agents.remove(&id);
                bump(&mut self.counters.agents_evicted, 1);
            }
        }
        let record = self
            .agents
            .entry(Arc::from(agent_id))
            .or_insert_with(|| AgentRecord::new(now));
        record.last_seen = now;
        (record, !known)
    }

    /// Stores occurrences, evicting the oldest beyond the bounds.
    pub fn store_events(
        &mut self,
        agent_id: &str,
        occurrences: Vec<Occurrence>,
        settings: &Settings,
    ) {
        let id: Arc<str> = Arc::from(agent_id);
        for occurrence in occurrences {
            // An Occurrence is plain data; serialising it cannot fail.
            let Ok(occurrence) = serde_json::value::to_raw_value(&occurrence) else {
                continue;
            };
            let size = occurrence.get().len();
            self.event_bytes = self.event_bytes.saturating_add(size);
            self.events.push_back(StoredEvent {
                agent_id: Arc::clone(&id),
                occurrence,
                size,
            });
            while self.events.len() > settings.event_buffer
                || self.event_bytes > settings.event_buffer_bytes
            {
                match self.events.pop_front() {
                    Some(old) => {
                        self.event_bytes = self.event_bytes.saturating_sub(old.size);
                        bump(&mut self.counters.occurrences_evicted, 1);
                    }
                    None => break,
                }
            }
        }
    }
}

/// Shared state behind every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

pub(crate) struct Shared {
    pub settings: Settings,
    pub token: Option<Token>,
    pub started_ns: u64,
    pub started: Instant,
    pub config: RwLock<Arc<ActiveConfig>>,
    pub inner: Mutex<Inner>,
    /// A profile reload is running (see [`AppState::begin_reload`]).
    pub reloading: Arc<AtomicBool>,
}

/// Marks a reload as running until every holder of it is dropped (the
/// reading thread and the task applying its outcome).
#[derive(Debug)]
pub struct ReloadGuard(Arc<AtomicBool>);

impl Drop for ReloadGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.0.settings)
            .field("token", &self.0.token)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// A controller serving `config` as generation 1. `now_ns` is the wall
    /// clock at start (ns since the epoch).
    pub fn new(
        settings: Settings,
        token: Option<Token>,
        config: CompiledConfig,
        now_ns: u64,
    ) -> AppState {
        AppState(Arc::new(Shared {
            settings,
            token,
            started_ns: now_ns,
            started: Instant::now(),
            config: RwLock::new(Arc::new(ActiveConfig::new(1, config, now_ns))),
            inner: Mutex::new(Inner::default()),
            reloading: Arc::new(AtomicBool::new(false)),
        }))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    /// The active config.
    pub fn active(&self) -> Result<Arc<ActiveConfig>, ApiError> {
        self.0
            .config
            .read()
            .map(|c| Arc::clone(&c))
            .map_err(|_| ApiError::internal("config lock poisoned"))
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Inner>, ApiError> {
        self.0
            .inner
            .lock()
            .map_err(|_| ApiError::internal("state lock poisoned"))
    }

    /// Makes `config` active: a new generation if its hash differs from the
    /// active one, otherwise nothing changes.
    pub fn apply(&self, config: CompiledConfig, now_ns: u64) -> Applied {
        let mut guard = match self.0.config.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let outcome = if config.hash() == guard.hash {
            Applied::Unchanged {
                generation: guard.generation,
            }
        } else if let Some(generation) = guard.generation.checked_add(1) {
            let next = ActiveConfig::new(generation, config, now_ns);
            let hash = next.hash.clone();
            *guard = Arc::new(next);
            Applied::Updated { generation, hash }
        } else {
            Applied::Exhausted
        };
        drop(guard);
        if let Ok(mut inner) = self.0.inner.lock() {
            match outcome {
                Applied::Updated { .. } => bump(&mut inner.counters.reloads_applied, 1),
                Applied::Unchanged { .. } => bump(&mut inner.counters.reloads_unchanged, 1),
                Applied::Exhausted => bump(&mut inner.counters.reloads_rejected, 1),
            }
        }
        outcome
    }

    /// Claims the right to reload: `None` while another reload still runs.
    pub fn begin_reload(&self) -> Option<Arc<ReloadGuard>> {
        let free = self
            .0
            .reloading
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        free.then(|| Arc::new(ReloadGuard(Arc::clone(&self.0.reloading))))
    }

    /// Counts a reload that failed validation (the old config stays).
    pub fn reload_rejected(&self) {
        if let Ok(mut inner) = self.0.inner.lock() {
            bump(&mut inner.counters.reloads_rejected, 1);
        }
    }

    /// Counts an error response.
    pub(crate) fn count_rejection(&self, code: ErrorCode) {
        if let Ok(mut inner) = self.0.inner.lock() {
            bump(
                inner.counters.rejected.entry(code_name(code)).or_default(),
                1,
            );
        }
    }

    /// Number of agents in the registry.
    pub fn agent_count(&self) -> usize {
        self.0.inner.lock().map(|i| i.agents.len()).unwrap_or(0)
    }

    /// Test hook: makes agent `agent_id` look `by` older (its first and last
    /// sighting and its last heartbeat), to exercise staleness without
    /// waiting. False if the agent is unknown or the clock cannot go back.
    #[doc(hidden)]
    pub fn age_agent_for_tests(&self, agent_id: &str, by: std::time::Duration) -> bool {
        let Ok(mut inner) = self.0.inner.lock() else {
            return false;
        };
        let Some(a) = inner.agents.get_mut(agent_id) else {
            return false;
        };
        let back = |t: Instant| t.checked_sub(by);
        match (back(a.first_seen), back(a.last_seen)) {
            (Some(first), Some(last)) => {
                a.first_seen = first;
                a.last_seen = last;
                a.last_heartbeat = a.last_heartbeat.and_then(back);
                true
            }
            _ => false,
        }
    }

    /// Test hook: poisons the state lock, to exercise `500 INTERNAL_ERROR`.
    #[doc(hidden)]
    pub fn poison_for_tests(&self) {
        let state = self.clone();
        let _ = std::thread::spawn(move || {
            let _guard = state.0.inner.lock();
            panic!("poisoning the controller state on purpose (test)");
        })
        .join();
    }
}

pub(crate) fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::MissingField => "MISSING_FIELD",
        ErrorCode::InvalidField => "INVALID_FIELD",
        ErrorCode::MalformedJson => "MALFORMED_JSON",
        ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
        ErrorCode::Unauthorized => "UNAUTHORIZED",
        ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
        ErrorCode::ReasoningField => "REASONING_FIELD",
        ErrorCode::UnknownEndpoint => "UNKNOWN_ENDPOINT",
        ErrorCode::InternalError => "INTERNAL_ERROR",
        ErrorCode::Unknown => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_counts_gaps_and_duplicates() {
        let mut s = SequenceState::default();
        assert_eq!(s.observe(5), Sequenced::Fresh);
        assert_eq!(s.observe(6), Sequenced::Fresh);
        assert_eq!(s.observe(9), Sequenced::Fresh); // 7 and 8 missing
        assert_eq!(s.observe(9), Sequenced::Duplicate);
        assert_eq!(s.observe(2), Sequenced::Duplicate);
        assert_eq!(
            s,
            SequenceState {
                last: Some(9),
                batches: 3,
                occurrences: 0,
                gaps: 2,
                duplicates: 2,
                resets: 0,
            }
        );
    }

    #[test]
    fn far_jumps_reset_the_numbering_instead_of_poisoning_it() {
        let mut s = SequenceState::default();
        assert_eq!(s.observe(1), Sequenced::Fresh);
        // A bogus maximal number: accepted as a reset, no gap of 2^64.
        assert_eq!(s.observe(u64::MAX), Sequenced::Reset);
        assert_eq!(s.gaps, 0);
        // The real numbering continues: far below, so a reset, not a duplicate.
        assert_eq!(s.observe(2), Sequenced::Reset);
        assert_eq!(s.observe(3), Sequenced::Fresh);
        assert_eq!(s.observe(3), Sequenced::Duplicate);
        // The window edges: last + WINDOW is a gap, last - WINDOW a retry.
        let w = v1::SEQUENCE_WINDOW;
        assert_eq!(s.observe(3 + w), Sequenced::Fresh);
        assert_eq!(s.gaps, w - 1);
        assert_eq!(s.observe(3), Sequenced::Duplicate);
        assert_eq!(s.observe(2), Sequenced::Reset);
        assert_eq!((s.resets, s.duplicates, s.batches), (3, 2, 6));
        // A hello forgets the last number: 1 is fresh again.
        s.restart();
        assert_eq!(s.observe(1), Sequenced::Fresh);
        assert_eq!(s.last, Some(1));
    }

    #[test]
    fn counters_saturate() {
        let mut c = u64::MAX - 1;
        bump(&mut c, 5);
        assert_eq!(c, u64::MAX);
        let mut s = SequenceState {
            last: Some(0),
            gaps: u64::MAX - 3,
            batches: u64::MAX,
            ..SequenceState::default()
        };
        assert_eq!(s.observe(v1::SEQUENCE_WINDOW), Sequenced::Fresh);
        assert_eq!((s.gaps, s.batches), (u64::MAX, u64::MAX));
    }

    #[test]
    fn records_are_overwritten_in_their_own_allocations() {
        let mut loss = String::new();
        let big = BTreeMap::from([("sink_drops.http".to_string(), 123_456_u64)]);
        assign_json(&mut loss, &big).unwrap();
        assert_eq!(loss, r#"{"sink_drops.http":123456}"#);
        assert_eq!(loss.capacity(), loss.len(), "exact size, no slack");
        let at = loss.as_ptr();
        // A later heartbeat with a value of the same size or smaller.
        let small = BTreeMap::from([("sink_drops.http".to_string(), 7_u64)]);
        assign_json(&mut loss, &small).unwrap();
        assert_eq!(loss, r#"{"sink_drops.http":7}"#);
        assert_eq!(loss.as_ptr(), at, "reallocated");
        let mut node = String::from("node-a");
        let at = node.as_ptr();
        assign(&mut node, "node-b");
        assert_eq!((node.as_str(), node.as_ptr()), ("node-b", at));
    }

    #[test]
    fn registry_evicts_least_recently_seen() {
        let mut inner = Inner::default();
        let t0 = Instant::now();
        inner.agent("a", 2, t0);
        inner.agent("b", 2, t0 + std::time::Duration::from_millis(1));
        inner.agent("a", 2, t0 + std::time::Duration::from_millis(2));
        let (_, new) = inner.agent("c", 2, t0 + std::time::Duration::from_millis(3));
        assert!(new);
        let mut ids: Vec<_> = inner.agents.keys().map(|k| k.to_string()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(inner.counters.agents_evicted, 1);
    }

    #[test]
    fn apply_bumps_generation_only_on_new_content() {
        let s = AppState::new(Settings::default(), None, CompiledConfig::default(), 0);
        assert_eq!(
            s.apply(CompiledConfig::default(), 1),
            Applied::Unchanged { generation: 1 }
        );
        let mut c = CompiledConfig::default();
        c.network.refused_min_count = 3;
        let hash = c.hash();
        assert_eq!(
            s.apply(c.clone(), 2),
            Applied::Updated {
                generation: 2,
                hash
            }
        );
        assert_eq!(s.apply(c, 3), Applied::Unchanged { generation: 2 });
        assert_eq!(s.active().unwrap().generation, 2);
    }
}
