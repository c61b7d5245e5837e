//! The three questions the CLI and the MCP server both answer — recent
//! occurrences, status, health — as one set of parameters and one JSON shape
//! each. `tapio recent --json` and the MCP `recent_anomalies` tool return the
//! same object, and so on. Field names are stable; new fields may be added.
//!
//! `recent` (`count` is this page, `matched` every match; `summary` counts
//! every match; `next_cursor` is the `cursor` for the next, older page, null
//! on the last):
//! ```json
//! {"data_dir":".tapio/occurrences","data_dir_exists":true,
//!  "query":{"since":"2026-04-03T14:00:00.000Z","type":null,"observer":null,"severity":null,"limit":50,
//!           "pod":null,"namespace":"shop","container":null,"pid":null,"cursor":null},
//!  "count":1,"matched":1,"next_cursor":null,
//!  "summary":{"by_type":{"kernel.container.oom_kill":1},"by_place":[{"key":"shop/cart-7d9f","count":1}],
//!             "other_places":0,"by_destination":[],"other_destinations":0},
//!  "skipped":{"corrupt":0,"unreadable":0,"not_regular":0,"too_large":0,"foreign":0},
//!  "occurrences":[{...occurrence...}]}
//! ```
//! A place is `namespace/pod` when the occurrence names both, else the
//! container id's first 12 hex digits, else `host` (see
//! [`super::filter::place`]).
//! `status`:
//! ```json
//! {"data_dir":"…","data_dir_exists":true,"total":3,"skipped":{"corrupt":1,…},
//!  "by_observer":{"container":1,"network":2,"node":0,"storage":0},
//!  "by_type":{"kernel.container.oom_kill":1,"kernel.network.connection_refused":2},
//!  "newest":{...occurrence...}}
//! ```
//! `health` (rule in [`super::summary`]; `verdict` is ok, degraded, failing
//! or unknown; `reasons` says why it is unknown or what besides the counts
//! raised it):
//! ```json
//! {"data_dir":"…","data_dir_exists":true,
//!  "window":{"since":"…","until":"…","seconds":900},"rule":"failing: …","verdict":"degraded",
//!  "reasons":["node observer degraded: pmc unavailable: …"],
//!  "agent":{"status_file":"reported","problem":"","state":"running","node_name":"n1",
//!           "version":"0.1.0","pid":1234,"updated":"2026-04-03T14:29:58.000Z","age_seconds":2,
//!           "config":{"applied":true,"hash":"sha256:…","generation":1},"controller":null},
//!  "observers":[{"observer":"network","state":"active","state_reason":"","verdict":"degraded",
//!                "total":2,"critical":0,"error":1,"warning":1,"info":0,"other":0,
//!                "newest":"2026-04-03T14:23:01.042Z"}, …],
//!  "skipped":{"corrupt":0,"unreadable":0,"not_regular":0,"too_large":0,"foreign":0}}
//! ```
//! `agent.status_file` is `reported`, `missing`, `invalid` (then `problem`
//! says why, and the other `agent` fields are null) or `none` (no data dir).

use serde::{Deserialize, Serialize};

use super::agent_status::{self, StatusRead};
use super::filter::{
    parse_container, parse_observer, parse_pod, parse_severity, parse_since, parse_type, place,
    Cursor, Filter, TopN,
};
use super::summary::{
    judge, AgentReport, HealthCounts, ObserverHealth, StatusCounts, StoreFacts, Verdict,
    DEFAULT_HEALTH_WINDOW_S, HEALTH_RULE,
};
use super::{Skipped, Store, StoreError};
use crate::wire::time::format_rfc3339_millis;
use crate::wire::time::{parse_rfc3339, InstantError};
use crate::wire::{Observer, Occurrence};

/// `recent` returns at most this many occurrences unless told otherwise.
pub const DEFAULT_LIMIT: u64 = 50;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A parameter is invalid (the caller's fault: exit 1, JSON-RPC -32602).
    #[error("{0}")]
    Invalid(String),
    /// The data dir could not be read (exit 2, MCP `isError`).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parameters of `recent` / `recent_anomalies`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecentParams {
    /// `30s`, `5m`, `2h`, `1d` or RFC 3339; none: no lower bound.
    pub since: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub observer: Option<String>,
    /// Minimum severity.
    pub severity: Option<String>,
    /// 0 means no limit; none means [`DEFAULT_LIMIT`].
    pub limit: Option<u64>,
    /// `pod` or `namespace/pod`.
    pub pod: Option<String>,
    pub namespace: Option<String>,
    /// A container id or its prefix.
    pub container: Option<String>,
    pub pid: Option<u64>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

/// Parameters of `health` / `node_health`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthParams {
    pub observer: Option<String>,
    /// Window start: a duration back from `until`, or RFC 3339. Default 15m.
    pub since: Option<String>,
    /// Window end, RFC 3339. Default now.
    pub until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentQuery {
    pub since: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub observer: Option<Observer>,
    pub severity: Option<String>,
    /// 0: no limit.
    pub limit: u64,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub container: Option<String>,
    pub pid: Option<u64>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentReport {
    pub data_dir: String,
    pub data_dir_exists: bool,
    pub query: RecentQuery,
    /// Occurrences returned (this page).
    pub count: usize,
    /// Occurrences matching the filters, across all pages.
    pub matched: u64,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
    /// Counts over everything `matched`, so one small answer says what
    /// happened without every occurrence.
    pub summary: RecentSummary,
    pub skipped: Skipped,
    pub occurrences: Vec<Occurrence>,
}

/// The largest entries a [`RecentSummary`] list shows.
pub const SUMMARY_TOP: usize = 10;
/// Distinct keys a summary tallies; later new keys count as not shown, so a
/// scan's memory stays bounded whatever the data dir holds.
const TALLY_KEYS: usize = 4096;

/// Counts by type, by place (`namespace/pod`, short container id, `host`)
/// and by network destination (`addr:port`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RecentSummary {
    pub by_type: std::collections::BTreeMap<String, u64>,
    /// The [`SUMMARY_TOP`] places with the most occurrences, most first.
    pub by_place: Vec<Count>,
    /// Occurrences at places not listed in `by_place`.
    pub other_places: u64,
    /// The [`SUMMARY_TOP`] destinations of network occurrences, most first.
    pub by_destination: Vec<Count>,
    /// Network occurrences to destinations not listed in `by_destination`.
    pub other_destinations: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    pub key: String,
    pub count: u64,
}

/// A bounded tally of string keys.
#[derive(Default)]
struct Tally {
    counts: std::collections::HashMap<String, u64>,
    overflow: u64,
}

impl Tally {
    fn add(&mut self, key: String) {
        if let Some(n) = self.counts.get_mut(&key) {
            *n += 1;
        } else if self.counts.len() < TALLY_KEYS {
            self.counts.insert(key, 1);
        } else {
            self.overflow += 1;
        }
    }

    /// The top entries (most first, then by key) and the count of the rest.
    fn top(self) -> (Vec<Count>, u64) {
        let mut all: Vec<Count> = self
            .counts
            .into_iter()
            .map(|(key, count)| Count { key, count })
            .collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        let rest: u64 = all.iter().skip(SUMMARY_TOP).map(|c| c.count).sum();
        all.truncate(SUMMARY_TOP);
        (all, rest + self.overflow)
    }
}

/// `addr:port` (`[addr]:port` for IPv6) of a network occurrence.
fn destination(o: &Occurrence) -> Option<String> {
    let addr = o.data.get("daddr")?.as_str()?;
    let port = o.data.get("dport")?.as_u64()?;
    Some(if addr.contains(':') {
        format!("[{addr}]:{port}")
    } else {
        format!("{addr}:{port}")
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub data_dir: String,
    pub data_dir_exists: bool,
    pub total: u64,
    pub skipped: Skipped,
    pub by_observer: std::collections::BTreeMap<String, u64>,
    pub by_type: std::collections::BTreeMap<String, u64>,
    pub newest: Option<Occurrence>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub since: String,
    pub until: String,
    pub seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    pub data_dir: String,
    pub data_dir_exists: bool,
    pub window: Window,
    pub rule: &'static str,
    pub verdict: Verdict,
    /// Why the verdict is `unknown`, or what besides the counts raised it.
    pub reasons: Vec<String>,
    /// What the agent's status file said.
    pub agent: AgentReport,
    pub observers: Vec<ObserverHealth>,
    pub skipped: Skipped,
}

fn dir_string(store: &Store) -> String {
    store.dir().to_string_lossy().into_owned()
}

/// Validates `params` into a filter and the limit (`None`: unlimited).
pub fn recent_filter(
    params: &RecentParams,
    now_ns: u64,
) -> Result<(Filter, RecentQuery), ReportError> {
    let since_ns = params
        .since
        .as_deref()
        .map(|s| parse_since(s, now_ns))
        .transpose()
        .map_err(ReportError::Invalid)?;
    if let (Some(since), Some(text)) = (since_ns, params.since.as_deref()) {
        // Facts carry the time they happened: nothing written can be newer
        // than now, so a future start can only ever answer "none" (and is
        // usually a typo in the year).
        if since > now_ns {
            return Err(ReportError::Invalid(format!(
                "invalid --since {text:?}: it is in the future (now is {})",
                format_rfc3339_millis(now_ns)
            )));
        }
    }
    let kind = params
        .kind
        .as_deref()
        .map(parse_type)
        .transpose()
        .map_err(ReportError::Invalid)?;
    let observer = params
        .observer
        .as_deref()
        .map(parse_observer)
        .transpose()
        .map_err(ReportError::Invalid)?;
    let severity = params
        .severity
        .as_deref()
        .map(parse_severity)
        .transpose()
        .map_err(ReportError::Invalid)?;
    let invalid = ReportError::Invalid;
    let pod = params
        .pod
        .as_deref()
        .map(parse_pod)
        .transpose()
        .map_err(invalid)?;
    let container = params
        .container
        .as_deref()
        .map(parse_container)
        .transpose()
        .map_err(invalid)?;
    let namespace = match params.namespace.as_deref() {
        Some("") => {
            return Err(invalid(
                "invalid --namespace \"\": expected a namespace name".into(),
            ))
        }
        n => n.map(str::to_string),
    };
    let before = params
        .cursor
        .as_deref()
        .map(Cursor::parse)
        .transpose()
        .map_err(invalid)?;
    let filter = Filter {
        since_ns,
        until_ns: None,
        observers: observer.into_iter().collect(),
        kind: kind.clone(),
        min_severity: severity,
        pod: pod.clone(),
        namespace: namespace.clone(),
        container: container.clone(),
        pid: params.pid,
        before,
    };
    let query = RecentQuery {
        since: since_ns.map(format_rfc3339_millis),
        kind,
        observer,
        severity: severity.map(|s| s.as_str().to_string()),
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
        pod,
        namespace,
        container,
        pid: params.pid,
        cursor: params.cursor.clone(),
    };
    Ok((filter, query))
}

/// `recent`: the newest occurrences matching `params`.
pub fn recent(
    store: &Store,
    params: &RecentParams,
    now_ns: u64,
) -> Result<RecentReport, ReportError> {
    let (filter, query) = recent_filter(params, now_ns)?;
    let limit = match query.limit {
        0 => None,
        n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
    };
    // Every match is read (not only the newest N) so the answer can say how
    // many there were and summarise them; the page itself is the newest
    // `limit` after the cursor.
    let page_filter = filter.clone();
    let all = Filter {
        before: None,
        ..filter
    };
    let mut top = TopN::new(limit);
    let mut matched = 0u64;
    let mut after_cursor = 0u64;
    let mut by_type = std::collections::BTreeMap::new();
    let (mut places, mut destinations) = (Tally::default(), Tally::default());
    let info = store.scan(&all, |rec| {
        matched += 1;
        *by_type.entry(rec.occurrence.kind.clone()).or_insert(0u64) += 1;
        places.add(place(&rec.occurrence));
        if let Some(d) = destination(&rec.occurrence) {
            destinations.add(d);
        }
        if page_filter.matches(&rec.occurrence, rec.ts_ns) {
            after_cursor += 1;
            let id = rec.occurrence.id.clone();
            top.push(rec.ts_ns, id, rec);
        }
    })?;
    let records = top.into_sorted();
    let next_cursor = match records.last() {
        Some(last) if after_cursor > records.len() as u64 => Some(
            Cursor {
                ts_ns: last.ts_ns,
                id: last.occurrence.id.clone(),
            }
            .encode(),
        ),
        _ => None,
    };
    let (by_place, other_places) = places.top();
    let (by_destination, other_destinations) = destinations.top();
    let occurrences: Vec<Occurrence> = records.into_iter().map(|r| r.occurrence).collect();
    Ok(RecentReport {
        data_dir: dir_string(store),
        data_dir_exists: info.exists,
        query,
        count: occurrences.len(),
        matched,
        next_cursor,
        summary: RecentSummary {
            by_type,
            by_place,
            other_places,
            by_destination,
            other_destinations,
        },
        skipped: info.skipped,
        occurrences,
    })
}

/// `status`: counts over every occurrence in the store.
pub fn status(store: &Store) -> Result<StatusReport, ReportError> {
    let mut counts = StatusCounts::new();
    let info = store.scan(&Filter::default(), |r| counts.add(r))?;
    Ok(StatusReport {
        data_dir: dir_string(store),
        data_dir_exists: info.exists,
        total: counts.total,
        skipped: info.skipped,
        by_observer: counts.by_observer,
        by_type: counts.by_type,
        newest: counts.newest,
    })
}

/// `health`: verdicts per observer over a window ending at `until` (default
/// `now_ns`).
pub fn health(
    store: &Store,
    params: &HealthParams,
    now_ns: u64,
) -> Result<HealthReport, ReportError> {
    let observers: Vec<Observer> = params
        .observer
        .as_deref()
        .map(parse_observer)
        .transpose()
        .map_err(ReportError::Invalid)?
        .into_iter()
        .collect();
    let until_ns = match params.until.as_deref() {
        Some(u) => parse_rfc3339(u).map_err(|e| {
            ReportError::Invalid(match e {
                InstantError::Format => format!(
                    "invalid --until {u:?}: expected an RFC 3339 time like 2026-04-03T14:00:00Z"
                ),
                InstantError::Invalid(why) => format!("invalid --until {u:?}: {why}"),
            })
        })?,
        None => now_ns,
    };
    let since_ns = match params.since.as_deref() {
        Some(s) => parse_since(s, until_ns).map_err(ReportError::Invalid)?,
        None => until_ns.saturating_sub(DEFAULT_HEALTH_WINDOW_S * 1_000_000_000),
    };
    if since_ns > until_ns {
        return Err(ReportError::Invalid(format!(
            "invalid window: since {} is after until {}",
            format_rfc3339_millis(since_ns),
            format_rfc3339_millis(until_ns)
        )));
    }
    let filter = Filter {
        since_ns: Some(since_ns),
        until_ns: Some(until_ns),
        observers: observers.clone(),
        ..Filter::default()
    };
    let mut counts = HealthCounts::new(&observers);
    let info = store.scan(&filter, |r| counts.add(&r))?;
    let status = if info.exists {
        agent_status::read(store.dir())
    } else {
        StatusRead::Missing
    };
    let data_dir = dir_string(store);
    let facts = StoreFacts {
        dir: &data_dir,
        exists: info.exists,
        files: info.listed,
    };
    let judgement = judge(counts, &status, facts, now_ns);
    Ok(HealthReport {
        data_dir_exists: info.exists,
        window: Window {
            since: format_rfc3339_millis(since_ns),
            until: format_rfc3339_millis(until_ns),
            seconds: (until_ns - since_ns) / 1_000_000_000,
        },
        rule: HEALTH_RULE,
        verdict: judgement.verdict,
        reasons: judgement.reasons,
        agent: judgement.agent,
        observers: judgement.observers,
        skipped: info.skipped,
        data_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_743_691_381_042_000_000;

    #[test]
    fn recent_params_validate() {
        let ok = RecentParams {
            since: Some("5m".into()),
            kind: Some("oom_kill".into()),
            observer: Some("container".into()),
            severity: Some("error".into()),
            ..RecentParams::default()
        };
        let (f, q) = recent_filter(&ok, NOW).unwrap();
        assert_eq!(f.since_ns, Some(NOW - 300_000_000_000));
        assert_eq!(q.kind.as_deref(), Some("kernel.container.oom_kill"));
        assert_eq!(q.limit, DEFAULT_LIMIT);
        for bad in [
            RecentParams {
                since: Some("5x".into()),
                ..RecentParams::default()
            },
            RecentParams {
                observer: Some("gpu".into()),
                ..RecentParams::default()
            },
            RecentParams {
                severity: Some("fatal".into()),
                ..RecentParams::default()
            },
            RecentParams {
                kind: Some("nope".into()),
                ..RecentParams::default()
            },
            RecentParams {
                kind: Some("kernel.network.conection_refused".into()),
                ..RecentParams::default()
            },
            RecentParams {
                since: Some("2026-02-30T00:00:00Z".into()),
                ..RecentParams::default()
            },
            RecentParams {
                pod: Some("a/b/c".into()),
                ..RecentParams::default()
            },
            RecentParams {
                container: Some("not-hex".into()),
                ..RecentParams::default()
            },
            RecentParams {
                namespace: Some(String::new()),
                ..RecentParams::default()
            },
            RecentParams {
                cursor: Some("12".into()),
                ..RecentParams::default()
            },
        ] {
            assert!(
                matches!(recent_filter(&bad, NOW), Err(ReportError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn since_in_the_future_is_refused() {
        let at_now = RecentParams {
            since: Some("2025-04-03T14:43:01.042Z".into()),
            ..RecentParams::default()
        };
        assert_eq!(recent_filter(&at_now, NOW).unwrap().0.since_ns, Some(NOW));
        let later = RecentParams {
            since: Some("2025-04-03T14:43:01.043Z".into()),
            ..RecentParams::default()
        };
        match recent_filter(&later, NOW) {
            Err(ReportError::Invalid(m)) => assert_eq!(
                m,
                "invalid --since \"2025-04-03T14:43:01.043Z\": it is in the future (now is 2025-04-03T14:43:01.042Z)"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// Writes `n` occurrences, three per fact time (ties broken by id),
    /// each to its own destination.
    fn populate(dir: &std::path::Path, n: u64) {
        for i in 0..n {
            let ts = NOW - 1_000_000_000 * (i / 3);
            let id = ulid::Ulid::from_parts(ts / 1_000_000, u128::from(i)).to_string();
            let text = format!(
                r#"{{"id":"{id}","timestamp":"{}","source":"tapio","type":"kernel.network.connection_refused","protocol_version":"1.0","severity":"warning","outcome":"failure","error":{{"code":"CONNECTION_REFUSED","message":"m"}},"data":{{"pid":{i},"daddr":"10.0.0.{}","dport":443,"config_generation":1,"timestamp_ns":{ts}}}}}"#,
                format_rfc3339_millis(ts),
                i % 12
            );
            std::fs::write(dir.join(format!("{id}.json")), text).unwrap();
        }
    }

    #[test]
    fn pages_walk_every_match_once_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        populate(tmp.path(), 25);
        let store = Store::new(tmp.path());
        let all = recent(
            &store,
            &RecentParams {
                limit: Some(0),
                ..RecentParams::default()
            },
            NOW,
        )
        .unwrap();
        assert_eq!(
            (all.count, all.matched, all.next_cursor.clone()),
            (25, 25, None)
        );
        let mut seen = Vec::new();
        let mut cursor = None;
        for page in 0.. {
            assert!(page < 10, "paging did not end");
            let r = recent(
                &store,
                &RecentParams {
                    limit: Some(10),
                    cursor: cursor.clone(),
                    ..RecentParams::default()
                },
                NOW,
            )
            .unwrap();
            assert_eq!(r.matched, 25);
            seen.extend(r.occurrences);
            cursor = r.next_cursor;
            if cursor.is_none() {
                assert_eq!(page, 2);
                break;
            }
        }
        assert_eq!(seen, all.occurrences);
        // Twelve destinations: ten listed, most first, the rest counted.
        let s = &all.summary;
        assert_eq!(s.by_destination.len(), SUMMARY_TOP);
        assert_eq!(
            s.by_destination[0],
            Count {
                key: "10.0.0.0:443".into(),
                count: 3
            }
        );
        let listed: u64 = s.by_destination.iter().map(|c| c.count).sum();
        assert_eq!(listed + s.other_destinations, 25);
        assert_eq!(
            s.by_place,
            vec![Count {
                key: "host".into(),
                count: 25
            }]
        );
    }

    #[test]
    fn tally_keeps_a_bounded_number_of_keys() {
        let mut t = Tally::default();
        for i in 0..TALLY_KEYS + 5 {
            t.add(format!("k{i:05}"));
        }
        t.add("k00000".into());
        let (top, rest) = t.top();
        assert_eq!(
            top[0],
            Count {
                key: "k00000".into(),
                count: 2
            }
        );
        assert_eq!(top.len(), SUMMARY_TOP);
        // Every add is counted: listed + the rest (incl. the 5 over the cap).
        let listed: u64 = top.iter().map(|c| c.count).sum();
        assert_eq!(listed + rest, TALLY_KEYS as u64 + 6);
    }

    #[test]
    fn params_reject_unknown_fields() {
        let r: Result<RecentParams, _> = serde_json::from_str(r#"{"sinse":"5m"}"#);
        assert!(r.is_err());
        let r: Result<HealthParams, _> = serde_json::from_str(r#"{"observer":3}"#);
        assert!(r.is_err());
    }

    #[test]
    fn health_window_checks() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let r = health(&store, &HealthParams::default(), NOW).unwrap();
        assert_eq!(r.window.seconds, 900);
        // An empty dir: nothing ever ran here.
        assert_eq!(r.verdict, Verdict::Unknown);
        assert_eq!(r.observers.len(), 4);
        let bad = HealthParams {
            since: Some("2030-01-01T00:00:00Z".into()),
            until: Some("2026-01-01T00:00:00Z".into()),
            ..HealthParams::default()
        };
        assert!(matches!(
            health(&store, &bad, NOW),
            Err(ReportError::Invalid(_))
        ));
        let bad = HealthParams {
            until: Some("later".into()),
            ..HealthParams::default()
        };
        assert!(matches!(
            health(&store, &bad, NOW),
            Err(ReportError::Invalid(_))
        ));
    }
}
