//! Pure query logic: which files to open, which occurrences match, the
//! order they come back in, and how `--since` values read. No I/O, no clock
//! reads: "now" is always an argument.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::wire::time::parse_rfc3339;
use crate::wire::{AnomalyType, Observer, Occurrence, Severity};

/// How far a file's ULID time may lag behind the fact it records before the
/// name-based pruning would wrongly skip it. The agent mints the ULID from
/// the fact's wall-clock time with a monotonic generator, so it never lags;
/// the slack leaves room for files written by other tools (copies, replays)
/// whose names were minted differently.
pub const ULID_SLACK_NS: u64 = 3_600 * 1_000_000_000;

/// What a directory entry's name says about it, before it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `<name>.json`: read it. `ulid_ns` is the ULID time part of the stem
    /// when the stem is a ULID (a file sink file), in ns.
    Occurrence { ulid_ns: Option<u64> },
    /// `.<name>.tmp`: a write in progress (the file sink renames it when
    /// done). Ignored, not counted.
    InProgress,
    /// Anything else (another extension, a non-UTF-8 name). Counted.
    Foreign,
}

/// Classifies a directory entry by name.
pub fn classify_name(name: &str) -> NameKind {
    if name.starts_with('.') && name.ends_with(".tmp") {
        return NameKind::InProgress;
    }
    match name.strip_suffix(".json") {
        Some(stem) if !stem.is_empty() && !stem.starts_with('.') => NameKind::Occurrence {
            ulid_ns: ulid::Ulid::from_string(stem)
                .ok()
                .map(|u| u.timestamp_ms().saturating_mul(1_000_000)),
        },
        _ => NameKind::Foreign,
    }
}

/// True when a file whose name carries `ulid_ns` cannot hold a fact at or
/// after `since_ns` (see [`ULID_SLACK_NS`]).
pub fn ulid_before(ulid_ns: Option<u64>, since_ns: u64) -> bool {
    match ulid_ns {
        Some(u) => u.saturating_add(ULID_SLACK_NS) < since_ns,
        None => false,
    }
}

/// The rank used by `--severity` (a minimum): info < warning < error <
/// critical. Unknown severities (from a newer writer) have no rank and only
/// match when no severity filter is set.
pub fn severity_rank(s: Severity) -> Option<u8> {
    match s {
        Severity::Info => Some(0),
        Severity::Warning => Some(1),
        Severity::Error => Some(2),
        Severity::Critical => Some(3),
        Severity::Unknown => None,
    }
}

/// Parses a `--severity` value.
pub fn parse_severity(s: &str) -> Result<Severity, String> {
    match s {
        "info" => Ok(Severity::Info),
        "warning" => Ok(Severity::Warning),
        "error" => Ok(Severity::Error),
        "critical" => Ok(Severity::Critical),
        _ => Err(format!(
            "invalid severity {s:?}: expected info, warning, error or critical"
        )),
    }
}

/// Parses an `--observer` value.
pub fn parse_observer(s: &str) -> Result<Observer, String> {
    Observer::parse(s).ok_or_else(|| {
        format!("invalid observer {s:?}: expected network, container, storage or node")
    })
}

/// Parses a `--type` value: a full type (`kernel.container.oom_kill`), or the
/// last part of a known one (`oom_kill`). A full `kernel.<observer>.<name>`
/// this build does not know is accepted, so a newer agent's types can be
/// queried.
pub fn parse_type(s: &str) -> Result<String, String> {
    if let Some(t) = AnomalyType::parse(s) {
        return Ok(t.as_str().to_string());
    }
    if let Some(t) = AnomalyType::ALL
        .into_iter()
        .find(|t| t.as_str().rsplit('.').next() == Some(s))
    {
        return Ok(t.as_str().to_string());
    }
    let parts: Vec<&str> = s.split('.').collect();
    let well_formed = parts.len() == 3
        && parts[0] == "kernel"
        && parts[1..].iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        });
    if well_formed {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid type {s:?}: expected kernel.<observer>.<name> (e.g. kernel.container.oom_kill) or a known short name (e.g. oom_kill)"
        ))
    }
}

/// Parses `--since`: a duration back from `now_ns` (`30s`, `5m`, `2h`, `1d`)
/// or an RFC 3339 instant. Returns the window start in ns since the epoch.
pub fn parse_since(s: &str, now_ns: u64) -> Result<u64, String> {
    let err = || {
        format!("invalid --since {s:?}: expected a duration like 30s, 5m, 2h, 1d or an RFC 3339 time like 2026-04-03T14:00:00Z")
    };
    if let Some(ns) = parse_rfc3339(s) {
        return Ok(ns);
    }
    // The unit is the last character, which need not be one byte.
    let (unit_at, _) = s.char_indices().next_back().ok_or_else(err)?;
    let (digits, unit) = s.split_at(unit_at);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(err());
    }
    let n: u64 = digits.parse().map_err(|_| err())?;
    let unit_s: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(err()),
    };
    if n == 0 {
        return Err(err());
    }
    let back = n
        .checked_mul(unit_s)
        .and_then(|v| v.checked_mul(1_000_000_000))
        .ok_or_else(err)?;
    Ok(now_ns.saturating_sub(back))
}

/// Formats a duration in ns the way `--since` reads it back, in the largest
/// whole unit (`15m`, `90s`, `2h`, `1d`).
pub fn format_duration(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    if s > 0 && s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s > 0 && s % 3_600 == 0 {
        format!("{}h", s / 3_600)
    } else if s > 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The occurrence filters of `recent`, `watch`, the MCP tools. Every set
/// field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Keep facts at or after this instant (ns since the epoch).
    pub since_ns: Option<u64>,
    /// Keep facts at or before this instant (ns since the epoch).
    pub until_ns: Option<u64>,
    /// Keep facts of any of these observers (empty: all).
    pub observers: Vec<Observer>,
    /// Keep this exact `type`.
    pub kind: Option<String>,
    /// Keep this severity or a more severe one.
    pub min_severity: Option<Severity>,
}

impl Filter {
    /// Whether `occ`, whose fact time is `ts_ns`, passes every set filter.
    pub fn matches(&self, occ: &Occurrence, ts_ns: u64) -> bool {
        if self.since_ns.is_some_and(|s| ts_ns < s) || self.until_ns.is_some_and(|u| ts_ns > u) {
            return false;
        }
        if !self.observers.is_empty() {
            let obs = occ.observer();
            if !self.observers.iter().any(|o| Some(o.as_str()) == obs) {
                return false;
            }
        }
        if self.kind.as_deref().is_some_and(|k| k != occ.kind) {
            return false;
        }
        if let Some(min) = self.min_severity {
            match (severity_rank(occ.severity), severity_rank(min)) {
                (Some(have), Some(want)) if have >= want => {}
                _ => return false,
            }
        }
        true
    }
}

/// The fact time of an occurrence: `data.timestamp_ns`, else the RFC 3339
/// `timestamp`. `None` when neither is usable (such a file is corrupt).
pub fn fact_time_ns(occ: &Occurrence) -> Option<u64> {
    occ.timestamp_ns().or_else(|| parse_rfc3339(&occ.timestamp))
}

/// The newest-first order: fact time, then id, both descending.
pub fn order_key(ts_ns: u64, id: &str) -> (u64, &str) {
    (ts_ns, id)
}

/// Keeps the `limit` newest of a stream of `(ts_ns, id, item)`; `None` keeps
/// all. [`TopN::into_sorted`] returns them newest first.
pub struct TopN<T> {
    limit: Option<usize>,
    heap: BinaryHeap<Reverse<Entry<T>>>,
}

struct Entry<T> {
    ts_ns: u64,
    id: String,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        order_key(self.ts_ns, &self.id) == order_key(other.ts_ns, &other.id)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        order_key(self.ts_ns, &self.id).cmp(&order_key(other.ts_ns, &other.id))
    }
}

impl<T> TopN<T> {
    pub fn new(limit: Option<usize>) -> Self {
        TopN {
            limit,
            heap: BinaryHeap::new(),
        }
    }

    pub fn push(&mut self, ts_ns: u64, id: String, item: T) {
        let entry = Entry { ts_ns, id, item };
        match self.limit {
            Some(0) => {}
            Some(n) if self.heap.len() >= n => {
                if let Some(mut oldest) = self.heap.peek_mut() {
                    if entry > oldest.0 {
                        *oldest = Reverse(entry);
                    }
                }
            }
            _ => self.heap.push(Reverse(entry)),
        }
    }

    /// When full, the fact time of the oldest kept item: nothing older can
    /// enter any more.
    pub fn floor_ns(&self) -> Option<u64> {
        match self.limit {
            Some(n) if self.heap.len() >= n => self.heap.peek().map(|e| e.0.ts_ns),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The kept items, newest first.
    pub fn into_sorted(self) -> Vec<T> {
        let mut v: Vec<Entry<T>> = self.heap.into_iter().map(|r| r.0).collect();
        v.sort_by(|a, b| b.cmp(a));
        v.into_iter().map(|e| e.item).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_occurrence;
    use serde_json::{json, Map};

    fn occ(kind: &str, severity: Severity, ts_ns: u64) -> Occurrence {
        let mut data = Map::new();
        data.insert("timestamp_ns".into(), json!(ts_ns));
        test_occurrence("01JA1B2C3D4E5F6G7H8J9K0M1N", kind, severity, ts_ns, data)
    }

    const NOW: u64 = 1_743_691_381_042_000_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn since_values() {
        let cases: &[(&str, Result<u64, ()>)] = &[
            ("30s", Ok(NOW - 30 * S)),
            ("5m", Ok(NOW - 300 * S)),
            ("2h", Ok(NOW - 7_200 * S)),
            ("1d", Ok(NOW - 86_400 * S)),
            ("2025-04-03T14:43:01.042Z", Ok(NOW)),
            ("2025-04-03T16:43:01.042+02:00", Ok(NOW)),
            ("0s", Err(())),
            ("5", Err(())),
            ("m", Err(())),
            ("", Err(())),
            ("-5m", Err(())),
            ("5 m", Err(())),
            ("5w", Err(())),
            ("1.5h", Err(())),
            ("99999999999999999999d", Err(())),
            ("2025-04-03", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_since(input, NOW).map_err(|_| ());
            assert_eq!(&got, want, "{input:?}");
        }
        // Found by fuzzing (`fuzz/fuzz_targets/mcp.rs`, `since` of
        // recent_anomalies): a multi-byte last character panicked.
        for input in ["ϝ", "5ϝ", "1€", "€"] {
            assert_eq!(
                parse_since(input, NOW).map_err(|_| ()),
                Err(()),
                "{input:?}"
            );
        }
        // A window reaching before the epoch starts at the epoch.
        assert_eq!(parse_since("1d", 5), Ok(0));
        assert!(parse_since("7x", NOW)
            .unwrap_err()
            .contains("30s, 5m, 2h, 1d"));
    }

    #[test]
    fn durations_format_in_largest_unit() {
        for (ns, want) in [
            (30 * S, "30s"),
            (90 * S, "90s"),
            (900 * S, "15m"),
            (7_200 * S, "2h"),
            (86_400 * S, "1d"),
            (0, "0s"),
        ] {
            assert_eq!(format_duration(ns), want);
        }
    }

    #[test]
    fn names() {
        let ulid = "01JA1B2C3D4E5F6G7H8J9K0M1N";
        let ms = ulid::Ulid::from_string(ulid).unwrap().timestamp_ms();
        let cases: &[(&str, NameKind)] = &[
            (
                "01JA1B2C3D4E5F6G7H8J9K0M1N.json",
                NameKind::Occurrence {
                    ulid_ns: Some(ms * 1_000_000),
                },
            ),
            ("copied.json", NameKind::Occurrence { ulid_ns: None }),
            (".01JA1B2C3D4E5F6G7H8J9K0M1N.json.tmp", NameKind::InProgress),
            (".json", NameKind::Foreign),
            (".hidden.json", NameKind::Foreign),
            ("notes.txt", NameKind::Foreign),
            ("01JA1B2C3D4E5F6G7H8J9K0M1N.json.bak", NameKind::Foreign),
        ];
        for (name, want) in cases {
            assert_eq!(classify_name(name), *want, "{name}");
        }
        let _ = ulid;
    }

    #[test]
    fn ulid_pruning_keeps_the_slack() {
        let since = 10 * ULID_SLACK_NS;
        assert!(!ulid_before(None, since));
        assert!(!ulid_before(Some(since), since));
        assert!(!ulid_before(Some(since - ULID_SLACK_NS), since));
        assert!(ulid_before(Some(since - ULID_SLACK_NS - 1), since));
    }

    #[test]
    fn filter_table() {
        let oom = occ("kernel.container.oom_kill", Severity::Critical, NOW);
        let refused = occ("kernel.network.connection_refused", Severity::Warning, NOW);
        let future = occ("kernel.future.thing", Severity::Unknown, NOW);
        let base = Filter::default();
        let cases: Vec<(&str, Filter, &Occurrence, bool)> = vec![
            ("no filter", base.clone(), &oom, true),
            ("unknown sev, no filter", base.clone(), &future, true),
            (
                "since equal is kept",
                Filter {
                    since_ns: Some(NOW),
                    ..base.clone()
                },
                &oom,
                true,
            ),
            (
                "since after drops",
                Filter {
                    since_ns: Some(NOW + 1),
                    ..base.clone()
                },
                &oom,
                false,
            ),
            (
                "until equal is kept",
                Filter {
                    until_ns: Some(NOW),
                    ..base.clone()
                },
                &oom,
                true,
            ),
            (
                "until before drops",
                Filter {
                    until_ns: Some(NOW - 1),
                    ..base.clone()
                },
                &oom,
                false,
            ),
            (
                "observer match",
                Filter {
                    observers: vec![Observer::Container],
                    ..base.clone()
                },
                &oom,
                true,
            ),
            (
                "observer mismatch",
                Filter {
                    observers: vec![Observer::Network, Observer::Storage],
                    ..base.clone()
                },
                &oom,
                false,
            ),
            (
                "observer one of many",
                Filter {
                    observers: vec![Observer::Storage, Observer::Network],
                    ..base.clone()
                },
                &refused,
                true,
            ),
            (
                "type match",
                Filter {
                    kind: Some("kernel.container.oom_kill".into()),
                    ..base.clone()
                },
                &oom,
                true,
            ),
            (
                "type mismatch",
                Filter {
                    kind: Some("kernel.container.oom_kill".into()),
                    ..base.clone()
                },
                &refused,
                false,
            ),
            (
                "severity at least: above",
                Filter {
                    min_severity: Some(Severity::Error),
                    ..base.clone()
                },
                &oom,
                true,
            ),
            (
                "severity at least: below",
                Filter {
                    min_severity: Some(Severity::Error),
                    ..base.clone()
                },
                &refused,
                false,
            ),
            (
                "severity at least: equal",
                Filter {
                    min_severity: Some(Severity::Warning),
                    ..base.clone()
                },
                &refused,
                true,
            ),
            (
                "unknown severity never passes a severity filter",
                Filter {
                    min_severity: Some(Severity::Info),
                    ..base.clone()
                },
                &future,
                false,
            ),
        ];
        for (name, filter, o, want) in cases {
            let ts = fact_time_ns(o).unwrap();
            assert_eq!(filter.matches(o, ts), want, "{name}");
        }
    }

    #[test]
    fn fact_time_falls_back_to_timestamp() {
        let mut o = occ("kernel.container.oom_kill", Severity::Critical, NOW);
        assert_eq!(fact_time_ns(&o), Some(NOW));
        o.data.clear();
        assert_eq!(fact_time_ns(&o), Some(NOW));
        o.timestamp = "yesterday".into();
        assert_eq!(fact_time_ns(&o), None);
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_type("oom_kill").unwrap(), "kernel.container.oom_kill");
        assert_eq!(
            parse_type("kernel.storage.io_error").unwrap(),
            "kernel.storage.io_error"
        );
        assert_eq!(
            parse_type("kernel.gpu.xid_error").unwrap(),
            "kernel.gpu.xid_error"
        );
        for bad in [
            "",
            "oom",
            "kernel.oom_kill",
            "Kernel.x.y",
            "kernel..x",
            "a.b.c",
        ] {
            assert!(parse_type(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_severity("error"), Ok(Severity::Error));
        assert!(parse_severity("unknown").is_err());
        assert_eq!(parse_observer("node"), Ok(Observer::Node));
        assert!(parse_observer("gpu").is_err());
    }

    #[test]
    fn top_n_keeps_newest_in_order() {
        let mut top = TopN::new(Some(3));
        for (ts, id) in [(5, "e"), (1, "a"), (9, "i"), (5, "f"), (3, "c"), (9, "h")] {
            top.push(ts, id.to_string(), id);
        }
        assert_eq!(top.floor_ns(), Some(5));
        assert_eq!(top.into_sorted(), vec!["i", "h", "f"]);

        let mut all = TopN::new(None);
        for (ts, id) in [(2, "b"), (1, "a"), (3, "c")] {
            all.push(ts, id.to_string(), id);
        }
        assert_eq!(all.floor_ns(), None);
        assert_eq!(all.into_sorted(), vec!["c", "b", "a"]);

        let mut none = TopN::new(Some(0));
        none.push(1, "a".into(), "a");
        assert!(none.is_empty());
    }
}
