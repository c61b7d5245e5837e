//! The agent's liveness and readiness decisions, and the observer states it
//! reports (SPEC §8 "Health"), as pure functions of what [`Shared`] holds.
//!
//! Owns: what `/healthz` and `/readyz` answer and why, and how an observer
//! is shown (`disabled` when the applied config switches it off). Must not:
//! read clocks, sockets or files — callers pass `now` and the snapshots, so
//! every rule is table-tested.
//!
//! [`Shared`]: super::pipeline::Shared

use std::collections::BTreeMap;

use super::pipeline::{Applied, ControllerLink};
use crate::wire::status::{ObserverState, ObserverStatus};
use crate::wire::Observer;

/// `/healthz` fails when the drain thread has not ticked for this long. It
/// ticks at least every 100 ms while alive, so 5 s means wedged, not slow.
pub const LIVENESS_WINDOW_NS: u64 = 5_000_000_000;

/// `Ok` while the drain thread ticked within [`LIVENESS_WINDOW_NS`] of
/// `now_ns` (both CLOCK_MONOTONIC); otherwise why not.
pub fn liveness(now_ns: u64, last_tick_ns: u64) -> Result<(), String> {
    if last_tick_ns == 0 {
        return Err("drain thread has not ticked yet".into());
    }
    let age = now_ns.saturating_sub(last_tick_ns);
    if age > LIVENESS_WINDOW_NS {
        return Err(format!(
            "drain thread last ticked {:.1} s ago (limit {} s)",
            age as f64 / 1e9,
            LIVENESS_WINDOW_NS / 1_000_000_000
        ));
    }
    Ok(())
}

/// Every observer's state as the agent reports it (status file, CLI): the
/// observer's own status, `disabled` when the applied config switches it
/// off, and `unavailable` while it has reported nothing yet.
pub fn observer_states(
    applied: Option<&Applied>,
    statuses: &BTreeMap<Observer, ObserverStatus>,
) -> BTreeMap<Observer, ObserverStatus> {
    Observer::ALL
        .into_iter()
        .map(|o| {
            let shown = if applied.is_some_and(|a| !a.config.enabled(o)) {
                ObserverStatus::new(
                    ObserverState::Disabled,
                    "switched off by the applied config",
                )
            } else {
                statuses.get(&o).cloned().unwrap_or_else(|| {
                    ObserverStatus::new(
                        ObserverState::Unavailable,
                        "no status reported yet (starting)",
                    )
                })
            };
            (o, shown)
        })
        .collect()
}

/// The controller link in words for a reason line: `http://c:8080: 401
/// unauthorized`.
fn link_words(endpoint: &str, link: Option<&ControllerLink>) -> String {
    match link {
        None => format!("{endpoint}: no answer yet"),
        Some(l) if l.state == "connecting" => format!("{}: no answer yet", l.endpoint),
        Some(l) if l.state == "ok" => format!("{}: connected, no config received yet", l.endpoint),
        Some(l) if l.reason.is_empty() => format!("{}: {}", l.endpoint, l.state),
        Some(l) => format!("{}: {}", l.endpoint, l.reason),
    }
}

/// `/readyz`: `Ok(notes)` when the config is applied and every enabled
/// observer is active, degraded, or unavailable with a reason (a node
/// without PMCs is ready, just blind to what PMCs would show); otherwise
/// `Err(one reason per line)`. `controller_endpoint` is set in controller
/// mode. Notes name the observers that are not fully active.
pub fn readiness(
    applied: Option<&Applied>,
    statuses: &BTreeMap<Observer, ObserverStatus>,
    controller_endpoint: Option<&str>,
    link: Option<&ControllerLink>,
) -> Result<Vec<String>, Vec<String>> {
    let mut failing = Vec::new();
    let mut notes = Vec::new();
    if applied.is_none() {
        failing.push(match controller_endpoint {
            Some(ep) => format!(
                "unconfigured: waiting for the controller ({}); nothing is observed until it sends a config",
                link_words(ep, link)
            ),
            None => "unconfigured: the start-up config is not applied yet".into(),
        });
    }
    for o in Observer::ALL {
        let name = o.as_str();
        if applied.is_some_and(|a| !a.config.enabled(o)) {
            continue;
        }
        match statuses.get(&o) {
            None => failing.push(format!("observer {name}: no status reported yet")),
            Some(s) => match (s.state, s.reason.is_empty()) {
                (ObserverState::Active, _) => {}
                (ObserverState::Degraded, _) | (ObserverState::Unavailable, false) => notes.push(
                    format!("observer {name}: {}: {}", s.state.as_str(), s.reason),
                ),
                (ObserverState::Unavailable, true) => {
                    failing.push(format!("observer {name}: unavailable, no reason reported"))
                }
                // `disabled` is derived from the applied config (skipped
                // above); an observer reporting it itself is a bug that
                // must not pass as ready.
                (ObserverState::Disabled, _) => failing.push(format!(
                    "observer {name}: disabled without an applied config"
                )),
            },
        }
    }
    if failing.is_empty() {
        Ok(notes)
    } else {
        Err(failing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CompiledConfig;

    const S: u64 = 1_000_000_000;

    #[test]
    fn liveness_table() {
        let cases: [(u64, u64, Option<&str>); 5] = [
            (100 * S, 0, Some("drain thread has not ticked yet")),
            (100 * S, 99 * S, None),
            (100 * S, 95 * S, None),
            (
                100 * S,
                95 * S - 1,
                Some("drain thread last ticked 5.0 s ago (limit 5 s)"),
            ),
            // A tick read after `now` was taken: alive, not an underflow.
            (100 * S, 101 * S, None),
        ];
        for (now, last, want) in cases {
            assert_eq!(
                liveness(now, last).err().as_deref(),
                want,
                "now={now} last={last}"
            );
        }
        assert_eq!(
            liveness(100 * S, 40 * S).unwrap_err(),
            "drain thread last ticked 60.0 s ago (limit 5 s)"
        );
    }

    use ObserverState::{Active, Degraded, Disabled, Unavailable};

    fn st(state: ObserverState, reason: &str) -> ObserverStatus {
        ObserverStatus::new(state, reason)
    }

    fn all_active() -> BTreeMap<Observer, ObserverStatus> {
        Observer::ALL
            .into_iter()
            .map(|o| (o, st(Active, "")))
            .collect()
    }

    fn applied(cfg: CompiledConfig) -> Applied {
        let hash = cfg.hash();
        Applied {
            config: cfg,
            generation: 3,
            hash,
        }
    }

    fn link(state: &'static str, reason: &str) -> ControllerLink {
        ControllerLink {
            endpoint: "http://c:8080".into(),
            state,
            reason: reason.into(),
        }
    }

    #[test]
    fn readiness_table() {
        let on = applied(CompiledConfig::default());
        let mut storage_off = CompiledConfig::default();
        storage_off.storage.enabled = false;
        let storage_off = applied(storage_off);
        let with = |o: Observer, s: ObserverStatus| {
            let mut m = all_active();
            m.insert(o, s);
            m
        };
        let without = |o: Observer| {
            let mut m = all_active();
            m.remove(&o);
            m
        };
        let ep = Some("http://c:8080");
        type Case<'a> = (
            &'a str,
            Option<&'a Applied>,
            BTreeMap<Observer, ObserverStatus>,
            Option<&'a str>,
            Option<ControllerLink>,
            Result<Vec<&'a str>, Vec<&'a str>>,
        );
        let cases: Vec<Case<'_>> = vec![
            ("standalone, all active", Some(&on), all_active(), None, None, Ok(vec![])),
            (
                "standalone, not applied yet",
                None,
                all_active(),
                None,
                None,
                Err(vec!["unconfigured: the start-up config is not applied yet"]),
            ),
            (
                "controller answered 401",
                None,
                all_active(),
                ep,
                Some(link("unauthorized", "401 unauthorized")),
                Err(vec!["unconfigured: waiting for the controller (http://c:8080: 401 unauthorized); nothing is observed until it sends a config"]),
            ),
            (
                "controller not answered yet",
                None,
                all_active(),
                ep,
                None,
                Err(vec!["unconfigured: waiting for the controller (http://c:8080: no answer yet); nothing is observed until it sends a config"]),
            ),
            (
                "controller unreachable, no reason text",
                None,
                all_active(),
                ep,
                Some(link("unreachable", "")),
                Err(vec!["unconfigured: waiting for the controller (http://c:8080: unreachable); nothing is observed until it sends a config"]),
            ),
            (
                "controller ok, config not yet applied",
                None,
                all_active(),
                ep,
                Some(link("ok", "")),
                Err(vec!["unconfigured: waiting for the controller (http://c:8080: connected, no config received yet); nothing is observed until it sends a config"]),
            ),
            (
                "controller mode, applied, link down later: still observing",
                Some(&on),
                all_active(),
                ep,
                Some(link("unreachable", "connection refused")),
                Ok(vec![]),
            ),
            (
                "node unavailable with a reason is ready, noted",
                Some(&on),
                with(Observer::Node, st(Unavailable, "pmc unavailable: ENOENT")),
                None,
                None,
                Ok(vec!["observer node: unavailable: pmc unavailable: ENOENT"]),
            ),
            (
                "degraded is ready, noted",
                Some(&on),
                with(Observer::Network, st(Degraded, "p: EINVAL")),
                None,
                None,
                Ok(vec!["observer network: degraded: p: EINVAL"]),
            ),
            (
                "unavailable without a reason",
                Some(&on),
                with(Observer::Storage, st(Unavailable, "")),
                None,
                None,
                Err(vec!["observer storage: unavailable, no reason reported"]),
            ),
            (
                "an observer that never reported",
                Some(&on),
                without(Observer::Container),
                None,
                None,
                Err(vec!["observer container: no status reported yet"]),
            ),
            (
                "a disabled observer is not waited for",
                Some(&storage_off),
                without(Observer::Storage),
                None,
                None,
                Ok(vec![]),
            ),
            (
                "disabled reported before any config",
                None,
                with(Observer::Node, st(Disabled, "")),
                None,
                None,
                Err(vec![
                    "unconfigured: the start-up config is not applied yet",
                    "observer node: disabled without an applied config",
                ]),
            ),
            (
                "every reason at once",
                None,
                without(Observer::Node),
                ep,
                Some(link("error", "500 internal server error")),
                Err(vec![
                    "unconfigured: waiting for the controller (http://c:8080: 500 internal server error); nothing is observed until it sends a config",
                    "observer node: no status reported yet",
                ]),
            ),
        ];
        for (name, applied, statuses, endpoint, link, want) in cases {
            let got = readiness(applied, &statuses, endpoint, link.as_ref());
            let want = want
                .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn observer_states_show_disabled_and_missing() {
        let mut cfg = CompiledConfig::default();
        cfg.container.enabled = false;
        let a = applied(cfg);
        let mut statuses = all_active();
        statuses.remove(&Observer::Node);
        statuses.insert(Observer::Storage, st(Degraded, "x: EPERM"));
        let got = observer_states(Some(&a), &statuses);
        assert_eq!(got.len(), 4);
        assert_eq!(got[&Observer::Network], st(Active, ""));
        assert_eq!(
            got[&Observer::Container],
            st(Disabled, "switched off by the applied config")
        );
        assert_eq!(got[&Observer::Storage], st(Degraded, "x: EPERM"));
        assert_eq!(
            got[&Observer::Node],
            st(Unavailable, "no status reported yet (starting)")
        );
        // Without an applied config nothing is called disabled.
        let got = observer_states(None, &all_active());
        assert!(got.values().all(|s| s.state == Active), "{got:?}");
    }
}
