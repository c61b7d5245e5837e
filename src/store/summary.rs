//! Pure summaries over records: the `status` counts and the `health`
//! verdicts. The JSON shapes here are what `tapio status --json`,
//! `tapio health --json` and the MCP tools return; field names are stable.
//!
//! # The health rule
//!
//! For each observer, count the occurrences whose fact time falls in the
//! window (default the last 15 minutes) by severity, then:
//!
//! * `failing`  — at least 1 `critical`, or at least 10 `error`;
//! * `degraded` — otherwise at least 1 `error`, or at least 5 `warning`;
//! * `ok`       — otherwise (a few warnings, any `info`, or nothing).
//!
//! The node's verdict is the worst observer verdict. Occurrences with a
//! severity this build does not know are counted in `other` and do not move
//! the verdict. `ok` means no evidence of trouble was written: the CLI reads
//! files only, so an observer the agent could not start (reported
//! `unavailable` in the agent's logs and heartbeat) also shows `ok` here.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Record;
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

/// The rule in one line, as `health` prints and returns it.
pub const HEALTH_RULE: &str =
    "failing: >=1 critical or >=10 error; degraded: >=1 error or >=5 warning; otherwise ok";

/// An observer's (or the node's) verdict. Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Degraded,
    Failing,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Degraded => "degraded",
            Verdict::Failing => "failing",
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

    /// The worst verdict of the observers counted.
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
