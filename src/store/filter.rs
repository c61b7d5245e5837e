//! Pure query logic: which files to open, which occurrences match, the
//! order they come back in, and how `--since` values read. No I/O, no clock
//! reads: "now" is always an argument.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::wire::time::{parse_duration, parse_rfc3339, InstantError};
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
    /// A dot-file: `.<name>.tmp` is a write in progress (the file sink
    /// renames it when done), `.agent-status.json` the agent's status file.
    /// Ignored, not counted.
    Ignored,
    /// Anything else (another extension, a non-UTF-8 name). Counted.
    Foreign,
}

/// Classifies a directory entry by name.
pub fn classify_name(name: &str) -> NameKind {
    if name.starts_with('.') {
        return NameKind::Ignored;
    }
    match name.strip_suffix(".json") {
        Some(stem) if !stem.is_empty() => NameKind::Occurrence {
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
    Observer::parse(s)
        .ok_or_else(|| format!("invalid observer {s:?}: expected {}", Observer::choices()))
}

/// Parses a `--type` value: a type this build knows
/// (`kernel.container.oom_kill`), or its last part (`oom_kill`). Anything
/// else is refused with the list of known types: a misspelt type would
/// otherwise match nothing, and "no occurrences" would read as "all quiet".
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
    let known: Vec<&str> = AnomalyType::ALL.iter().map(|t| t.as_str()).collect();
    let hint = closest_type(s)
        .map(|t| format!("did you mean {t}? "))
        .unwrap_or_default();
    Err(format!(
        "unknown type {s:?}: {hint}known types are {} (or their last part, e.g. oom_kill)",
        known.join(", ")
    ))
}

/// The known type (full or short form) within a small edit distance of `s`.
fn closest_type(s: &str) -> Option<&'static str> {
    AnomalyType::ALL
        .iter()
        .flat_map(|t| {
            let full = t.as_str();
            let short = full.rsplit('.').next().unwrap_or(full);
            [
                (full, edit_distance(s, full)),
                (full, edit_distance(s, short)),
            ]
        })
        .filter(|(_, d)| *d <= 3)
        .min_by_key(|(_, d)| *d)
        .map(|(t, _)| t)
}

/// Levenshtein distance over bytes (type names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses `--since`: a duration back from `now_ns` in the one duration
/// grammar ([`parse_duration`]: `30s`, `5m`, `2h`, `1d`, `500ms`) or an
/// RFC 3339 instant. Returns the window start in ns since the epoch.
pub fn parse_since(s: &str, now_ns: u64) -> Result<u64, String> {
    match parse_rfc3339(s) {
        Ok(ns) => Ok(ns),
        Err(InstantError::Invalid(why)) => Err(format!("invalid --since {s:?}: {why}")),
        // A zero window would select nothing; refusing it says so early.
        Err(InstantError::Format) => match parse_duration(s) {
            Some(back) if back > 0 => Ok(now_ns.saturating_sub(back)),
            _ => Err(format!(
                "invalid --since {s:?}: expected a duration like 30s, 5m, 2h, 1d or an RFC 3339 time like 2026-04-03T14:00:00Z"
            )),
        },
    }
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
    /// Keep occurrences of this pod: `data.pod_name` equal to it, or, given
    /// as `namespace/pod`, both parts equal.
    pub pod: Option<String>,
    /// Keep occurrences whose `data.namespace` is this.
    pub namespace: Option<String>,
    /// Keep occurrences whose `data.container_id` starts with this
    /// (lowercase hex, as `docker ps` and `crictl ps` show a short id).
    pub container: Option<String>,
    /// Keep occurrences of this process id (`data.pid`).
    pub pid: Option<u64>,
    /// Keep only occurrences strictly older, in the newest-first order, than
    /// this `(ts_ns, id)`: the position a page ended at (see [`Cursor`]).
    pub before: Option<Cursor>,
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
        if let Some(want) = self.pod.as_deref() {
            let pod = data_str(occ, "pod_name");
            let ok = match want.split_once('/') {
                Some((ns, name)) => data_str(occ, "namespace") == Some(ns) && pod == Some(name),
                None => pod == Some(want),
            };
            if !ok {
                return false;
            }
        }
        if self
            .namespace
            .as_deref()
            .is_some_and(|ns| data_str(occ, "namespace") != Some(ns))
        {
            return false;
        }
        if let Some(prefix) = self.container.as_deref() {
            if !data_str(occ, "container_id").is_some_and(|id| id.starts_with(prefix)) {
                return false;
            }
        }
        if self.pid.is_some_and(|p| pid(occ) != Some(p)) {
            return false;
        }
        if let Some(c) = &self.before {
            if order_key(ts_ns, &occ.id) >= order_key(c.ts_ns, &c.id) {
                return false;
            }
        }
        true
    }
}

/// A paging position: the `(fact time, id)` of the last occurrence a page
/// returned. The next page holds what sorts after it (older), so facts
/// written meanwhile (all newer) never shift or repeat a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub ts_ns: u64,
    pub id: String,
}

impl Cursor {
    /// The token handed out: `<ts_ns>.<id>`. Callers treat it as opaque.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.ts_ns, self.id)
    }

    /// Reads a token made by [`Cursor::encode`].
    pub fn parse(s: &str) -> Result<Cursor, String> {
        let bad = || {
            format!("invalid cursor {s:?}: pass back the next_cursor of a previous page unchanged")
        };
        let (ts, id) = s.split_once('.').ok_or_else(bad)?;
        let ts_ns = ts.parse::<u64>().map_err(|_| bad())?;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        Ok(Cursor {
            ts_ns,
            id: id.to_string(),
        })
    }
}

/// A string field of `data`, when present and a string.
pub fn data_str<'a>(occ: &'a Occurrence, key: &str) -> Option<&'a str> {
    occ.data.get(key).and_then(|v| v.as_str())
}

/// `data.pid`, when present and a non-negative integer.
pub fn pid(occ: &Occurrence) -> Option<u64> {
    occ.data.get("pid").and_then(|v| v.as_u64())
}

/// `data.comm` (the task's command name), when present.
pub fn comm(occ: &Occurrence) -> Option<&str> {
    data_str(occ, "comm").filter(|c| !c.is_empty())
}

/// How many hex digits a container id is shown with (as `docker ps` does).
pub const SHORT_ID_LEN: usize = 12;

/// Where an occurrence happened, as an operator names it: `namespace/pod`
/// when the agent resolved the pod, else the container id's short form,
/// else `host` (a process outside any container, or a node-wide fact).
pub fn place(occ: &Occurrence) -> String {
    let non_empty = |k| data_str(occ, k).filter(|s| !s.is_empty());
    if let (Some(ns), Some(pod)) = (non_empty("namespace"), non_empty("pod_name")) {
        return format!("{ns}/{pod}");
    }
    if let Some(id) = non_empty("container_id") {
        return id.chars().take(SHORT_ID_LEN).collect();
    }
    "host".to_string()
}

/// Parses a `--container` value: a container id or a prefix of one
/// (lowercase hex; upper case is folded).
pub fn parse_container(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if lower.is_empty() || lower.len() > 64 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid --container {s:?}: expected a container id or its prefix (hex, e.g. 3f2a9c1b7d4e)"
        ));
    }
    Ok(lower)
}

/// Parses a `--pod` value: `pod` or `namespace/pod`.
pub fn parse_pod(s: &str) -> Result<String, String> {
    let ok = match s.split_once('/') {
        Some((ns, pod)) => !ns.is_empty() && !pod.is_empty() && !pod.contains('/'),
        None => !s.is_empty(),
    };
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid --pod {s:?}: expected a pod name or namespace/pod"
        ))
    }
}

/// The fact time of an occurrence: `data.timestamp_ns`, else the RFC 3339
/// `timestamp`. `None` when neither is usable (such a file is corrupt).
pub fn fact_time_ns(occ: &Occurrence) -> Option<u64> {
    occ.timestamp_ns()
        .or_else(|| parse_rfc3339(&occ.timestamp).ok())
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
            ("1.5h", Ok(NOW - 5_400 * S)),
            ("500ms", Ok(NOW - S / 2)),
            ("99999999999999999999d", Err(())),
            ("2025-04-03", Err(())),
            ("2024-02-29T00:00:00Z", Ok(1_709_164_800 * S)),
            ("2500-12-31T23:59:59Z", Ok(16_756_761_599 * S)),
            ("é", Err(())),
            ("5é", Err(())),
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
            (".01JA1B2C3D4E5F6G7H8J9K0M1N.json.tmp", NameKind::Ignored),
            (".json", NameKind::Ignored),
            (".agent-status.json", NameKind::Ignored),
            (".hidden.json", NameKind::Ignored),
            ("json", NameKind::Foreign),
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

    /// An occurrence with the who/where fields given as `(key, value)`.
    fn with_data(pairs: &[(&str, serde_json::Value)]) -> Occurrence {
        let mut o = occ("kernel.network.connection_refused", Severity::Warning, NOW);
        for (k, v) in pairs {
            o.data.insert((*k).to_string(), v.clone());
        }
        o
    }

    #[test]
    fn place_names_the_pod_else_the_container_else_host() {
        let id = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
        let cases = [
            (
                with_data(&[
                    ("namespace", json!("shop")),
                    ("pod_name", json!("cart-7d9f")),
                    ("container_id", json!(id)),
                ]),
                "shop/cart-7d9f",
            ),
            // A pod name without its namespace is not enough to name it.
            (
                with_data(&[("pod_name", json!("cart")), ("container_id", json!(id))]),
                "3f2a9c1b7d4e",
            ),
            (
                with_data(&[
                    ("namespace", json!("")),
                    ("pod_name", json!("")),
                    ("container_id", json!(id)),
                ]),
                "3f2a9c1b7d4e",
            ),
            (with_data(&[("container_id", json!("abc"))]), "abc"),
            (with_data(&[("pid", json!(7))]), "host"),
            (with_data(&[("container_id", json!(5))]), "host"),
        ];
        for (o, want) in cases {
            assert_eq!(place(&o), want, "{:?}", o.data);
        }
    }

    #[test]
    fn who_and_where_filters() {
        let pod = with_data(&[
            ("namespace", json!("shop")),
            ("pod_name", json!("cart")),
            ("container_id", json!("3f2a9c1b7d4e00")),
            ("pid", json!(4242)),
        ]);
        let host = with_data(&[("pid", json!(1))]);
        let f = |edit: &dyn Fn(&mut Filter)| {
            let mut f = Filter::default();
            edit(&mut f);
            f
        };
        let cases: Vec<(&str, Filter, &Occurrence, bool)> = vec![
            (
                "pod by name",
                f(&|f| f.pod = Some("cart".into())),
                &pod,
                true,
            ),
            (
                "pod ns/name",
                f(&|f| f.pod = Some("shop/cart".into())),
                &pod,
                true,
            ),
            (
                "pod other ns",
                f(&|f| f.pod = Some("dev/cart".into())),
                &pod,
                false,
            ),
            (
                "pod other name",
                f(&|f| f.pod = Some("carts".into())),
                &pod,
                false,
            ),
            (
                "pod on host",
                f(&|f| f.pod = Some("cart".into())),
                &host,
                false,
            ),
            (
                "namespace",
                f(&|f| f.namespace = Some("shop".into())),
                &pod,
                true,
            ),
            (
                "namespace other",
                f(&|f| f.namespace = Some("sho".into())),
                &pod,
                false,
            ),
            (
                "namespace on host",
                f(&|f| f.namespace = Some("shop".into())),
                &host,
                false,
            ),
            (
                "container prefix",
                f(&|f| f.container = Some("3f2a".into())),
                &pod,
                true,
            ),
            (
                "container full",
                f(&|f| f.container = Some("3f2a9c1b7d4e00".into())),
                &pod,
                true,
            ),
            (
                "container other",
                f(&|f| f.container = Some("3f2b".into())),
                &pod,
                false,
            ),
            (
                "container on host",
                f(&|f| f.container = Some("3f".into())),
                &host,
                false,
            ),
            ("pid", f(&|f| f.pid = Some(4242)), &pod, true),
            ("pid other", f(&|f| f.pid = Some(4243)), &pod, false),
            ("pid host", f(&|f| f.pid = Some(1)), &host, true),
        ];
        for (name, filter, o, want) in cases {
            assert_eq!(filter.matches(o, NOW), want, "{name}");
        }
        assert_eq!(parse_container("3F2A").unwrap(), "3f2a");
        for bad in ["", "cart", "3f2a-", &"a".repeat(65)] {
            assert!(parse_container(bad).is_err(), "{bad}");
        }
        assert!(parse_pod("shop/cart").is_ok() && parse_pod("cart").is_ok());
        for bad in ["", "/cart", "shop/", "a/b/c"] {
            assert!(parse_pod(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursor_keeps_what_sorts_after_it() {
        let o = occ("kernel.container.oom_kill", Severity::Critical, NOW);
        let at = |ts_ns, id: &str| Filter {
            before: Some(Cursor {
                ts_ns,
                id: id.into(),
            }),
            ..Filter::default()
        };
        // The id is 01JA1B2C3D4E5F6G7H8J9K0M1N.
        assert!(at(NOW + 1, "0").matches(&o, NOW));
        assert!(at(NOW, "01JA1B2C3D4E5F6G7H8J9K0M1Z").matches(&o, NOW));
        assert!(!at(NOW, "01JA1B2C3D4E5F6G7H8J9K0M1N").matches(&o, NOW));
        assert!(!at(NOW - 1, "Z").matches(&o, NOW));
        let c = Cursor {
            ts_ns: NOW,
            id: "01JA1B2C3D4E5F6G7H8J9K0M1N".into(),
        };
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
        for bad in ["", "12", "x.01J", "12.", "12.a/b", "-1.a"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
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
        // A far-future fallback time is refused, not wrapped (nor, in a
        // debug build, an overflow panic).
        o.timestamp = "2600-01-01T00:00:00Z".into();
        assert_eq!(fact_time_ns(&o), None);
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_type("oom_kill").unwrap(), "kernel.container.oom_kill");
        assert_eq!(
            parse_type("kernel.storage.io_error").unwrap(),
            "kernel.storage.io_error"
        );
        for bad in [
            "",
            "oom",
            "kernel.oom_kill",
            "Kernel.x.y",
            "kernel..x",
            "a.b.c",
            "kernel.gpu.xid_error",
        ] {
            let e = parse_type(bad).unwrap_err();
            assert!(
                e.contains("known types are kernel.network.connection_refused, "),
                "{bad}: {e}"
            );
        }
        let e = parse_type("kernel.network.conection_refused").unwrap_err();
        assert!(
            e.starts_with("unknown type \"kernel.network.conection_refused\": did you mean kernel.network.connection_refused? known types are "),
            "{e}"
        );
        for t in AnomalyType::ALL {
            assert!(e.contains(t.as_str()), "{e} lacks {}", t.as_str());
        }
        assert!(parse_type("oom_kil")
            .unwrap_err()
            .contains("did you mean kernel.container.oom_kill?"));
        assert!(!parse_type("zzzzzzzz").unwrap_err().contains("did you mean"));
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
