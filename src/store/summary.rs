//! Pure summaries over records: the `status` counts and the `health`
//! verdicts. The JSON shapes here are what `tapio status --json`,
//! `tapio health --json` and the MCP tools return; field names are stable.
//!
//! # The health rule
//!
//! **Evidence.** For each observer, count the occurrences whose fact time
//! falls in the window (default the last 15 minutes) by severity, then:
//!
//! * `failing`  — at least 1 `critical`, or at least 10 `error`;
//! * `degraded` — otherwise at least 1 `error`, or at least 5 `warning`;
//! * `ok`       — otherwise (a few warnings, any `info`, or nothing).
//!
//! Occurrences with a severity this build does not know are counted in
//! `other` and do not move the verdict.
//!
//! **What the agent says** (its status file, [`super::agent_status`]): an
//! observer the agent reports `degraded` is at least `degraded`; one it
//! reports `unavailable` (or `disabled`) observes nothing, so its verdict is
//! `unknown`, never `ok`, and it makes the node at least `degraded`.
//!
//! **The node** is the worst of its enabled observers, unless it is
//! `unknown` (we cannot tell, so we do not say `ok`):
//!
//! * the data dir does not exist;
//! * there is no status file and no occurrence file at all (nothing ever
//!   ran here with this data dir);
//! * the status file says `running` but is older than 30 s ([`STALE_AFTER_MS`]:
//!   the agent rewrites it at least every 5 s, so it is gone or stuck), or
//!   says `stopped`;
//! * the agent's config is not applied (a controller-mode agent waiting for
//!   its config observes nothing);
//! * every enabled observer is unavailable, or none is enabled (blind).
//!
//! A controller link the agent reports not `ok` makes the node at least
//! `degraded` (occurrences for the controller are not getting there). When
//! the node is `unknown`, an observer with no evidence of trouble is shown
//! `unknown` too, not `ok`. With no
//! usable status file but occurrence files present (an agent older than the
//! status file, or copied files), the verdict is the evidence alone and every
//! observer's state reads `unknown`.
//!
//! `tapio health` exits with [`Verdict::exit_code`]: 0 ok, 1 degraded,
//! 2 failing, 3 unknown.

use std::collections::BTreeMap;

use serde::Serialize;

use super::agent_status::{ConfigStatus, ControllerStatus, StatusRead};
use super::Record;
use crate::wire::status::ObserverState;
use crate::wire::time::format_rfc3339_millis;
use crate::wire::{Observer, Occurrence, Severity};

/// At least this many `critical` occurrences make an observer `failing`.
pub const FAILING_CRITICAL: u64 = 1;
/// At least this many `error` occurrences make an observer `failing`.
pub const FAILING_ERROR: u64 = 10;
/// At least this many `error` occurrences make an observer `degraded`.
pub const DEGRADED_ERROR: u64 = 1;
/// At least this many `warning` occurrences make an observer `degraded`.
pub const DEGRADED_WARNING: u64 = 5;
/// The default health window, in seconds.
pub const DEFAULT_HEALTH_WINDOW_S: u64 = 900;
/// A `running` status file older than this means the agent is gone or
/// stuck (it rewrites the file at least every 5 s).
pub const STALE_AFTER_MS: u64 = 30_000;

/// The rule in one line, as `health` prints and returns it.
/// (The agent-state part of the rule is in `reasons` when it applies.)
pub const HEALTH_RULE: &str =
    "failing: >=1 critical or >=10 error; degraded: >=1 error or >=5 warning; otherwise ok";

/// An observer's (or the node's) verdict. Ordered from best to worst;
/// `unknown` is worst because it promises least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Degraded,
    Failing,
    /// Nothing observes it (or the node), so no verdict can be given.
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Degraded => "degraded",
            Verdict::Failing => "failing",
            Verdict::Unknown => "unknown",
        }
    }

    /// `tapio health`'s exit code: 0 ok, 1 degraded, 2 failing, 3 unknown.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::Degraded => 1,
            Verdict::Failing => 2,
            Verdict::Unknown => 3,
        }
    }
}

/// Occurrence counts by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SeverityCounts {
    pub critical: u64,
    pub error: u64,
    pub warning: u64,
    pub info: u64,
    /// Severities this build does not know.
    pub other: u64,
}

impl SeverityCounts {
    pub fn add(&mut self, s: Severity) {
        match s {
            Severity::Critical => self.critical += 1,
            Severity::Error => self.error += 1,
            Severity::Warning => self.warning += 1,
            Severity::Info => self.info += 1,
            Severity::Unknown => self.other += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.critical + self.error + self.warning + self.info + self.other
    }

    /// The health rule (module docs).
    pub fn verdict(&self) -> Verdict {
        if self.critical >= FAILING_CRITICAL || self.error >= FAILING_ERROR {
            Verdict::Failing
        } else if self.error >= DEGRADED_ERROR || self.warning >= DEGRADED_WARNING {
            Verdict::Degraded
        } else {
            Verdict::Ok
        }
    }
}

/// `status`: counts over every readable occurrence.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StatusCounts {
    pub total: u64,
    /// Every observer, zero or not.
    pub by_observer: BTreeMap<String, u64>,
    /// Every type seen, including ones this build does not know.
    pub by_type: BTreeMap<String, u64>,
    /// The newest occurrence by fact time.
    pub newest: Option<Occurrence>,
    #[serde(skip)]
    newest_key: Option<(u64, String)>,
}

impl StatusCounts {
    pub fn new() -> Self {
        StatusCounts {
            by_observer: Observer::ALL
                .iter()
                .map(|o| (o.as_str().to_string(), 0))
                .collect(),
            ..StatusCounts::default()
        }
    }

    pub fn add(&mut self, rec: Record) {
        self.total += 1;
        // Types of observers this build does not know still count by type.
        if let Some(o) = rec.occurrence.observer() {
            if let Some(n) = self.by_observer.get_mut(o) {
                *n += 1;
            }
        }
        *self.by_type.entry(rec.occurrence.kind.clone()).or_insert(0) += 1;
        let key = (rec.ts_ns, rec.occurrence.id.clone());
        if self.newest_key.as_ref().is_none_or(|k| key > *k) {
            self.newest_key = Some(key);
            self.newest = Some(rec.occurrence);
        }
    }
}

/// One observer's health.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObserverHealth {
    pub observer: Observer,
    /// As the agent reports it: `active`, `degraded`, `unavailable`,
    /// `disabled`; `unknown` without a usable status file.
    pub state: String,
    /// The agent's reason for that state (empty when it gave none).
    pub state_reason: String,
    pub verdict: Verdict,
    pub total: u64,
    #[serde(flatten)]
    pub counts: SeverityCounts,
    /// `timestamp` of the newest occurrence in the window.
    pub newest: Option<String>,
    #[serde(skip)]
    newest_ns: u64,
}

/// `health`: per observer counts in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCounts {
    observers: Vec<ObserverHealth>,
}

impl HealthCounts {
    /// Starts counting for `observers` (all when empty), in the order given.
    pub fn new(observers: &[Observer]) -> Self {
        let list: &[Observer] = if observers.is_empty() {
            &Observer::ALL
        } else {
            observers
        };
        HealthCounts {
            observers: list
                .iter()
                .map(|&observer| ObserverHealth {
                    observer,
                    state: STATE_UNKNOWN.to_string(),
                    state_reason: String::new(),
                    verdict: Verdict::Ok,
                    total: 0,
                    counts: SeverityCounts::default(),
                    newest: None,
                    newest_ns: 0,
                })
                .collect(),
        }
    }

    pub fn add(&mut self, rec: &Record) {
        let Some(obs) = rec.occurrence.observer() else {
            return;
        };
        let Some(h) = self
            .observers
            .iter_mut()
            .find(|h| h.observer.as_str() == obs)
        else {
            return;
        };
        h.counts.add(rec.occurrence.severity);
        h.total = h.counts.total();
        h.verdict = h.counts.verdict();
        if h.newest.is_none() || rec.ts_ns > h.newest_ns {
            h.newest_ns = rec.ts_ns;
            h.newest = Some(rec.occurrence.timestamp.clone());
        }
    }

    /// The worst evidence verdict of the observers counted.
    pub fn verdict(&self) -> Verdict {
        self.observers
            .iter()
            .map(|h| h.verdict)
            .max()
            .unwrap_or(Verdict::Ok)
    }

    pub fn into_observers(self) -> Vec<ObserverHealth> {
        self.observers
    }
}

/// An observer's state when no usable status file says it.
pub const STATE_UNKNOWN: &str = "unknown";

/// What the agent's status file said, as `health` reports it (`agent`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentReport {
    /// `reported`, `missing` or `invalid` (or `none` without a data dir).
    pub status_file: &'static str,
    /// Why an `invalid` status file could not be used; empty otherwise.
    pub problem: String,
    /// The rest is `null` unless `status_file` is `reported`.
    pub state: Option<String>,
    pub node_name: Option<String>,
    pub version: Option<String>,
    pub pid: Option<u64>,
    /// When the agent last wrote the file (RFC 3339).
    pub updated: Option<String>,
    pub age_seconds: Option<u64>,
    pub config: Option<ConfigStatus>,
    pub controller: Option<ControllerStatus>,
}

/// What the store looked like, for [`judge`].
#[derive(Debug, Clone, Copy)]
pub struct StoreFacts<'a> {
    pub dir: &'a str,
    pub exists: bool,
    /// Occurrence files in the dir, in the window or not.
    pub files: u64,
}

/// The node verdict, why, and the per-observer rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Why the verdict is `unknown`, or what (besides the counts) raised
    /// it; empty when the counts alone decide.
    pub reasons: Vec<String>,
    pub agent: AgentReport,
    pub observers: Vec<ObserverHealth>,
}

fn with_reason(what: String, reason: &str) -> String {
    if reason.is_empty() {
        what
    } else {
        format!("{what}: {reason}")
    }
}

/// Applies the health rule (module docs) to the evidence counts and the
/// agent's status file. Pure: `now_ns` is the caller's clock.
pub fn judge(
    counts: HealthCounts,
    status: &StatusRead,
    store: StoreFacts<'_>,
    now_ns: u64,
) -> Judgement {
    let mut observers = counts.into_observers();
    let mut unknown: Vec<String> = Vec::new();
    let mut raised: Vec<String> = Vec::new();
    let mut agent = AgentReport {
        status_file: "none",
        ..AgentReport::default()
    };
    if !store.exists {
        unknown.push(format!("data dir {} does not exist", store.dir));
    }
    match status {
        StatusRead::Valid(st) => {
            let now_ms = now_ns / 1_000_000;
            // A clock step back can put the file in the future: age 0.
            let age_ms = now_ms.saturating_sub(st.updated_unix_ms);
            let updated = format_rfc3339_millis(st.updated_unix_ms.saturating_mul(1_000_000));
            agent = AgentReport {
                status_file: "reported",
                problem: String::new(),
                state: Some(st.state.clone()),
                node_name: Some(st.node_name.clone()),
                version: Some(st.version.clone()),
                pid: Some(st.pid),
                updated: Some(updated.clone()),
                age_seconds: Some(age_ms / 1_000),
                config: Some(st.config.clone()),
                controller: st.controller.clone(),
            };
            if st.state == "stopped" {
                unknown.push(format!("the agent stopped (at {updated})"));
            } else if age_ms > STALE_AFTER_MS {
                unknown.push(format!(
                    "the agent status is {}s old (updated {updated}): the agent is not running or is stuck",
                    age_ms / 1_000
                ));
            }
            let controller = st.controller.as_ref();
            if !st.config.applied {
                let why = match controller {
                    Some(c) => {
                        with_reason(
                            format!(" (controller {}: {}", c.endpoint, c.state),
                            &c.reason,
                        ) + ")"
                    }
                    None => String::new(),
                };
                unknown.push(format!(
                    "config not applied: the agent observes nothing until it has one{why}"
                ));
            } else if let Some(c) = controller.filter(|c| c.state != "ok") {
                raised.push(with_reason(
                    format!("controller {} {}", c.endpoint, c.state),
                    &c.reason,
                ));
            }
            for h in &mut observers {
                let Some(o) = st.observers.get(h.observer.as_str()) else {
                    h.state_reason = "not in the agent status file".into();
                    continue;
                };
                h.state = o.state.as_str().to_string();
                h.state_reason = o.reason.clone();
                match o.state {
                    ObserverState::Degraded => {
                        h.verdict = h.verdict.max(Verdict::Degraded);
                        raised.push(with_reason(
                            format!("{} observer degraded", h.observer.as_str()),
                            &o.reason,
                        ));
                    }
                    ObserverState::Unavailable | ObserverState::Disabled => {
                        h.verdict = Verdict::Unknown
                    }
                    ObserverState::Active => {}
                }
            }
            let enabled: Vec<&ObserverHealth> = observers
                .iter()
                .filter(|h| h.state != ObserverState::Disabled.as_str())
                .collect();
            let unavailable: Vec<String> = enabled
                .iter()
                .filter(|h| h.state == ObserverState::Unavailable.as_str())
                .map(|h| with_reason(h.observer.as_str().to_string(), &h.state_reason))
                .collect();
            if enabled.is_empty() {
                unknown.push("blind: every observer is disabled".to_string());
            } else if unavailable.len() == enabled.len() {
                unknown.push(format!(
                    "blind: every observer is unavailable ({})",
                    unavailable.join("; ")
                ));
            } else {
                raised.extend(
                    unavailable
                        .iter()
                        .map(|u| format!("observer unavailable: {u}")),
                );
            }
        }
        StatusRead::Missing | StatusRead::Invalid(_) => {
            if let StatusRead::Invalid(why) = status {
                agent.status_file = "invalid";
                agent.problem = why.clone();
            } else if store.exists {
                agent.status_file = "missing";
            }
            if store.exists && store.files == 0 {
                unknown.push(match status {
                    StatusRead::Invalid(why) => format!(
                        "the agent status file is unusable ({why}) and there are no occurrence files in {}",
                        store.dir
                    ),
                    _ => format!(
                        "no agent status file and no occurrence files in {}: is the agent running with this data dir?",
                        store.dir
                    ),
                });
            }
        }
    }
    let verdict = if !unknown.is_empty() {
        Verdict::Unknown
    } else {
        let worst = observers
            .iter()
            .filter(|h| h.state != ObserverState::Disabled.as_str())
            // An unavailable observer next to working ones: degraded.
            .map(|h| match h.verdict {
                Verdict::Unknown => Verdict::Degraded,
                v => v,
            })
            .max()
            .unwrap_or(Verdict::Ok);
        if raised.is_empty() {
            worst
        } else {
            worst.max(Verdict::Degraded)
        }
    };
    if verdict == Verdict::Unknown {
        // Nothing observed the window: a quiet observer is not shown as
        // ok. (Evidence of trouble that was written stays as it is.)
        for h in &mut observers {
            if h.verdict == Verdict::Ok {
                h.verdict = Verdict::Unknown;
            }
        }
    }
    unknown.extend(raised);
    Judgement {
        verdict,
        reasons: unknown,
        agent,
        observers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_occurrence;
    use serde_json::Map;

    fn rec(kind: &str, severity: Severity, ts_ns: u64, id: &str) -> Record {
        Record {
            occurrence: test_occurrence(id, kind, severity, ts_ns, Map::new()),
            ts_ns,
        }
    }

    #[test]
    fn verdict_table() {
        let c = |critical, error, warning, info, other| SeverityCounts {
            critical,
            error,
            warning,
            info,
            other,
        };
        let cases = [
            (c(0, 0, 0, 0, 0), Verdict::Ok),
            (c(0, 0, 4, 100, 100), Verdict::Ok),
            (c(0, 0, 5, 0, 0), Verdict::Degraded),
            (c(0, 1, 0, 0, 0), Verdict::Degraded),
            (c(0, 9, 100, 0, 0), Verdict::Degraded),
            (c(0, 10, 0, 0, 0), Verdict::Failing),
            (c(1, 0, 0, 0, 0), Verdict::Failing),
        ];
        for (counts, want) in cases {
            assert_eq!(counts.verdict(), want, "{counts:?}");
        }
    }

    use crate::store::agent_status::{parse, ObserverStatus};

    const NOW_MS: u64 = 1_795_723_045_170;
    const NOW: u64 = NOW_MS * 1_000_000;

    /// A status file as the agent writes it, updated 2 s before NOW, with
    /// every observer active; `edit` changes what a case needs.
    fn status(edit: impl FnOnce(&mut serde_json::Value)) -> StatusRead {
        let mut v = serde_json::json!({
            "schema": 1, "agent_id": "01JQY0HADQ0000000000000003", "node_name": "n1",
            "version": "0.1.0", "pid": 42, "state": "running", "updated_unix_ms": NOW_MS - 2_000,
            "config": {"applied": true, "hash": "sha256:ab", "generation": 3},
            "controller": null,
            "observers": {
                "network": {"state": "active", "reason": ""},
                "container": {"state": "active", "reason": ""},
                "storage": {"state": "active", "reason": ""},
                "node": {"state": "active", "reason": ""}
            }
        });
        edit(&mut v);
        StatusRead::Valid(Box::new(parse(v.to_string().as_bytes()).unwrap()))
    }

    fn observer(state: &str, reason: &str) -> serde_json::Value {
        let state = serde_json::from_value(serde_json::json!(state)).unwrap();
        serde_json::to_value(ObserverStatus::new(state, reason)).unwrap()
    }

    const DIR: StoreFacts<'static> = StoreFacts {
        dir: "/d",
        exists: true,
        files: 3,
    };

    fn counts(recs: &[(&str, Severity)]) -> HealthCounts {
        let mut h = HealthCounts::new(&[]);
        for (i, (kind, sev)) in recs.iter().enumerate() {
            h.add(&rec(kind, *sev, NOW, &i.to_string()));
        }
        h
    }

    #[test]
    fn judge_table() {
        let quiet: &[(&str, Severity)] = &[];
        let one_error = &[("kernel.storage.io_error", Severity::Error)][..];
        let critical = &[("kernel.container.oom_kill", Severity::Critical)][..];
        let empty = StoreFacts { files: 0, ..DIR };
        let missing = StoreFacts {
            exists: false,
            files: 0,
            ..DIR
        };
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, Severity)],
            StatusRead,
            StoreFacts<'a>,
            Verdict,
            Vec<&'a str>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("all fine", quiet, status(|_| {}), DIR, Verdict::Ok, vec![]),
            ("evidence still counts", critical, status(|_| {}), DIR, Verdict::Failing, vec![]),
            ("no data dir", quiet, StatusRead::Missing, missing, Verdict::Unknown, vec!["data dir /d does not exist"]),
            (
                "empty dir",
                quiet,
                StatusRead::Missing,
                empty,
                Verdict::Unknown,
                vec!["no agent status file and no occurrence files in /d: is the agent running with this data dir?"],
            ),
            (
                "corrupt status, empty dir",
                quiet,
                StatusRead::Invalid("is larger than 65536 bytes".into()),
                empty,
                Verdict::Unknown,
                vec!["the agent status file is unusable (is larger than 65536 bytes) and there are no occurrence files in /d"],
            ),
            ("no status, old files: evidence only", one_error, StatusRead::Missing, DIR, Verdict::Degraded, vec![]),
            ("corrupt status, files: evidence only", quiet, StatusRead::Invalid("x".into()), DIR, Verdict::Ok, vec![]),
            (
                "status alone is enough (no files yet)",
                quiet,
                status(|_| {}),
                empty,
                Verdict::Ok,
                vec![],
            ),
            (
                "node observer degraded is never ok",
                quiet,
                status(|v| v["observers"]["node"] = observer("degraded", "pmc unavailable: no PMU")),
                DIR,
                Verdict::Degraded,
                vec!["node observer degraded: pmc unavailable: no PMU"],
            ),
            (
                "one observer unavailable: degraded",
                quiet,
                status(|v| v["observers"]["storage"] = observer("unavailable", "tracepoint block_rq_complete missing")),
                DIR,
                Verdict::Degraded,
                vec!["observer unavailable: storage: tracepoint block_rq_complete missing"],
            ),
            (
                "failing evidence beats an unavailable neighbour",
                critical,
                status(|v| v["observers"]["storage"] = observer("unavailable", "")),
                DIR,
                Verdict::Failing,
                vec!["observer unavailable: storage"],
            ),
            (
                "blind",
                quiet,
                status(|v| {
                    for o in ["network", "container", "storage", "node"] {
                        v["observers"][o] = observer("unavailable", "no BTF");
                    }
                    v["observers"]["node"] = observer("disabled", "");
                }),
                DIR,
                Verdict::Unknown,
                vec!["blind: every observer is unavailable (network: no BTF; container: no BTF; storage: no BTF)"],
            ),
            (
                "all disabled",
                quiet,
                status(|v| {
                    for o in ["network", "container", "storage", "node"] {
                        v["observers"][o] = observer("disabled", "");
                    }
                }),
                DIR,
                Verdict::Unknown,
                vec!["blind: every observer is disabled"],
            ),
            (
                "stale",
                quiet,
                status(|v| v["updated_unix_ms"] = (NOW_MS - 31_000).into()),
                DIR,
                Verdict::Unknown,
                vec!["the agent status is 31s old (updated 2026-11-26T19:56:54.170Z): the agent is not running or is stuck"],
            ),
            (
                "30 s is not yet stale",
                quiet,
                status(|v| v["updated_unix_ms"] = (NOW_MS - 30_000).into()),
                DIR,
                Verdict::Ok,
                vec![],
            ),
            (
                "a status from the future (clock step) is fresh",
                quiet,
                status(|v| v["updated_unix_ms"] = (NOW_MS + 60_000).into()),
                DIR,
                Verdict::Ok,
                vec![],
            ),
            (
                "stopped",
                quiet,
                status(|v| v["state"] = "stopped".into()),
                DIR,
                Verdict::Unknown,
                vec!["the agent stopped (at 2026-11-26T19:57:23.170Z)"],
            ),
            (
                "unconfigured",
                quiet,
                status(|v| {
                    v["config"] = serde_json::json!({"applied": false, "hash": "", "generation": 0});
                    v["controller"] = serde_json::json!({"endpoint": "http://c:7000", "state": "unauthorized", "reason": "401"});
                }),
                DIR,
                Verdict::Unknown,
                vec!["config not applied: the agent observes nothing until it has one (controller http://c:7000: unauthorized: 401)"],
            ),
            (
                "controller unreachable with a config applied",
                quiet,
                status(|v| {
                    v["controller"] = serde_json::json!({"endpoint": "http://c:7000", "state": "unreachable", "reason": "connection refused"});
                }),
                DIR,
                Verdict::Degraded,
                vec!["controller http://c:7000 unreachable: connection refused"],
            ),
        ];
        for (name, recs, st, facts, want, reasons) in cases {
            let j = judge(counts(recs), &st, facts, NOW);
            assert_eq!(j.verdict, want, "{name}: {j:?}");
            assert_eq!(j.reasons, reasons, "{name}");
        }
    }

    #[test]
    fn judged_rows_show_agent_states() {
        let st = status(|v| {
            v["observers"]["node"] = observer("degraded", "pmc unavailable");
            v["observers"]["storage"] = observer("unavailable", "no tracepoint");
            v["observers"]["container"] = observer("disabled", "");
            v["observers"].as_object_mut().unwrap().remove("network");
        });
        let j = judge(counts(&[]), &st, DIR, NOW);
        let rows: Vec<(&str, &str, &str, Verdict)> = j
            .observers
            .iter()
            .map(|h| {
                (
                    h.observer.as_str(),
                    h.state.as_str(),
                    h.state_reason.as_str(),
                    h.verdict,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (
                    "network",
                    "unknown",
                    "not in the agent status file",
                    Verdict::Ok
                ),
                ("container", "disabled", "", Verdict::Unknown),
                ("storage", "unavailable", "no tracepoint", Verdict::Unknown),
                ("node", "degraded", "pmc unavailable", Verdict::Degraded),
            ]
        );
        assert_eq!(j.agent.status_file, "reported");
        assert_eq!(j.agent.age_seconds, Some(2));
        assert_eq!(j.agent.pid, Some(42));

        // An unknown node shows no quiet observer as ok.
        let j = judge(
            counts(&[]),
            &StatusRead::Missing,
            StoreFacts { files: 0, ..DIR },
            NOW,
        );
        assert!(j.observers.iter().all(|h| h.verdict == Verdict::Unknown));
        let j = judge(
            counts(&[("kernel.container.oom_kill", Severity::Critical)]),
            &status(|v| v["state"] = "stopped".into()),
            DIR,
            NOW,
        );
        let v: Vec<Verdict> = j.observers.iter().map(|h| h.verdict).collect();
        assert_eq!(
            v,
            vec![
                Verdict::Unknown,
                Verdict::Failing,
                Verdict::Unknown,
                Verdict::Unknown
            ]
        );

        // Asked about one observer: only its state decides blindness.
        let mut only = HealthCounts::new(&[Observer::Storage]);
        only.add(&rec("kernel.storage.io_error", Severity::Info, NOW, "a"));
        let j = judge(only, &st, DIR, NOW);
        assert_eq!(j.verdict, Verdict::Unknown);
        assert_eq!(
            j.reasons,
            vec!["blind: every observer is unavailable (storage: no tracepoint)"]
        );

        let j = judge(counts(&[]), &StatusRead::Missing, DIR, NOW);
        assert!(j.observers.iter().all(|h| h.state == STATE_UNKNOWN));
        assert_eq!(j.agent.status_file, "missing");
        assert_eq!(j.agent.state, None);
    }

    #[test]
    fn exit_codes() {
        let codes: Vec<u8> = [
            Verdict::Ok,
            Verdict::Degraded,
            Verdict::Failing,
            Verdict::Unknown,
        ]
        .iter()
        .map(|v| v.exit_code())
        .collect();
        assert_eq!(codes, vec![0, 1, 2, 3]);
    }

    #[test]
    fn health_counts_per_observer() {
        let mut h = HealthCounts::new(&[]);
        h.add(&rec(
            "kernel.network.connection_refused",
            Severity::Warning,
            5,
            "a",
        ));
        h.add(&rec(
            "kernel.network.connection_timeout",
            Severity::Error,
            7,
            "b",
        ));
        h.add(&rec("kernel.future.thing", Severity::Critical, 9, "c"));
        assert_eq!(h.verdict(), Verdict::Degraded);
        let obs = h.into_observers();
        assert_eq!(obs.len(), 4);
        assert_eq!(obs[0].observer, Observer::Network);
        assert_eq!(
            (obs[0].total, obs[0].counts.warning, obs[0].counts.error),
            (2, 1, 1)
        );
        assert_eq!(obs[0].newest.as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert!(obs[1..]
            .iter()
            .all(|o| o.total == 0 && o.verdict == Verdict::Ok));

        let mut only = HealthCounts::new(&[Observer::Container]);
        only.add(&rec(
            "kernel.network.connection_timeout",
            Severity::Critical,
            1,
            "x",
        ));
        assert_eq!(only.verdict(), Verdict::Ok);
        assert_eq!(only.into_observers().len(), 1);
    }

    #[test]
    fn status_counts() {
        let mut s = StatusCounts::new();
        s.add(rec(
            "kernel.network.connection_refused",
            Severity::Warning,
            5,
            "a",
        ));
        s.add(rec("kernel.container.oom_kill", Severity::Critical, 9, "b"));
        s.add(rec("kernel.future.thing", Severity::Info, 7, "c"));
        assert_eq!(s.total, 3);
        assert_eq!(s.by_observer["network"], 1);
        assert_eq!(s.by_observer["container"], 1);
        assert_eq!(s.by_observer["storage"], 0);
        assert_eq!(s.by_type["kernel.future.thing"], 1);
        assert_eq!(s.newest.as_ref().map(|o| o.id.as_str()), Some("b"));
    }
}
