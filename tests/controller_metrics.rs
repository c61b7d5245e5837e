//! The controller's `/metrics` driven without a socket (`oneshot`): open
//! without the token, every family present at 0 from start, and each figure
//! following the requests that move it (registrations, config polls, event
//! batches, refusals by code, staleness).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};

use crate::common::oneshot::*;
use crate::common::{assert_promtool_accepts, must_metric};
use tapio::controller::metrics::{Snapshot, STALE_AFTER};
use tapio::controller::{router, AppState, Settings};
use tapio::wire::config::CompiledConfig;
use tapio::wire::v1::{self, WIRE_VERSION};

const TOKEN: &str = "metrics-t0ken";

fn state() -> AppState {
    state_with(Settings::default(), Some(TOKEN))
}

fn authed(req: Request<Body>) -> Request<Body> {
    with_token(req, TOKEN)
}

/// Scrapes without any token and returns the exposition.
async fn scrape(app: &Router) -> String {
    let r = send(app, get("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    String::from_utf8(r.body).unwrap()
}

const CODES: [&str; 10] = [
    "MISSING_FIELD",
    "INVALID_FIELD",
    "MALFORMED_JSON",
    "UNSUPPORTED_VERSION",
    "UNAUTHORIZED",
    "PAYLOAD_TOO_LARGE",
    "REASONING_FIELD",
    "UNKNOWN_ENDPOINT",
    "INTERNAL_ERROR",
    "UNKNOWN",
];

#[tokio::test]
async fn every_family_exists_at_zero_and_needs_no_token() {
    let app = router(state());
    let text = scrape(&app).await;
    let build = format!(
        "tapio_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(must_metric(&text, &build), 1.0);
    for g in [
        "tapio_controller_agents",
        "tapio_controller_agents_unconfigured",
        "tapio_controller_agents_stale",
        "tapio_controller_heartbeat_age_max_seconds",
    ] {
        assert_eq!(must_metric(&text, g), 0.0, "{g}");
    }
    for r in ["ok", "not_modified", "error"] {
        let s = format!("tapio_controller_config_fetches_total{{result=\"{r}\"}}");
        assert_eq!(must_metric(&text, &s), 0.0);
    }
    for r in ["accepted", "duplicate", "rejected"] {
        let s = format!("tapio_controller_event_batches_total{{result=\"{r}\"}}");
        assert_eq!(must_metric(&text, &s), 0.0);
    }
    for c in CODES {
        let s = format!("tapio_controller_rejects_total{{code=\"{c}\"}}");
        assert_eq!(must_metric(&text, &s), 0.0);
    }
    assert_eq!(
        must_metric(&text, "tapio_controller_config_generation"),
        1.0
    );
    assert!(text.contains("# TYPE tapio_controller_rejects_total counter"));
    // Scraping is not a refusal: nothing was counted by it.
    let again = scrape(&app).await;
    assert_eq!(
        must_metric(
            &again,
            "tapio_controller_rejects_total{code=\"UNAUTHORIZED\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn figures_follow_the_requests() {
    let state = state();
    let app = router(state.clone());
    for agent in ["a1", "a2"] {
        let hello = serde_json::to_value(v1::Hello::new(
            agent,
            "node-a",
            "0.1.0",
            "6.8.0",
            vec!["network".into()],
        ))
        .unwrap();
        let s = send(&app, authed(post_json("/v1/agents/hello", &hello)))
            .await
            .status;
        assert_eq!(s, StatusCode::OK);
    }
    // a1 reports the active config applied; a2 stays unconfigured.
    let hb = v1::Heartbeat::configured(
        "a1",
        &CompiledConfig::default().hash(),
        1,
        Default::default(),
        Default::default(),
    );
    let s = send(
        &app,
        authed(post_json(
            "/v1/agents/heartbeat",
            &serde_json::to_value(&hb).unwrap(),
        )),
    )
    .await
    .status;
    assert_eq!(s, StatusCode::OK);

    // Config polls: one full answer, one 304, one without the token.
    let s = send(&app, authed(get("/v1/agents/config?agent_id=a1")))
        .await
        .status;
    assert_eq!(s, StatusCode::OK);
    let etag = format!("\"{}\"", CompiledConfig::default().hash());
    let mut req = authed(get("/v1/agents/config?agent_id=a1"));
    req.headers_mut()
        .insert(header::IF_NONE_MATCH, etag.parse().unwrap());
    assert_eq!(send(&app, req).await.status, StatusCode::NOT_MODIFIED);
    let s = send(&app, get("/v1/agents/config?agent_id=a1"))
        .await
        .status;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Event batches: accepted, the same sequence again, and a malformed one.
    let occ: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/occurrence_oom_kill.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let batch = json!({"wire_version": WIRE_VERSION, "agent_id": "a1", "sequence": 1, "occurrences": [occ]});
    assert_eq!(
        send(&app, authed(post_json("/v1/events", &batch)))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, authed(post_json("/v1/events", &batch)))
            .await
            .status,
        StatusCode::OK
    );
    let bad =
        json!({"wire_version": WIRE_VERSION, "agent_id": "a1", "sequence": 2, "occurrences": "no"});
    assert_eq!(
        send(&app, authed(post_json("/v1/events", &bad)))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // A path that does not exist.
    assert_eq!(
        send(&app, authed(get("/v1/nothing"))).await.status,
        StatusCode::NOT_FOUND
    );

    let text = scrape(&app).await;
    let v = |s: &str| must_metric(&text, s);
    assert_eq!(v("tapio_controller_agents"), 2.0);
    assert_eq!(v("tapio_controller_agents_unconfigured"), 1.0);
    assert_eq!(v("tapio_controller_agents_stale"), 0.0);
    assert_eq!(
        v("tapio_controller_config_fetches_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        v("tapio_controller_config_fetches_total{result=\"not_modified\"}"),
        1.0
    );
    assert_eq!(
        v("tapio_controller_config_fetches_total{result=\"error\"}"),
        1.0
    );
    assert_eq!(
        v("tapio_controller_event_batches_total{result=\"accepted\"}"),
        1.0
    );
    assert_eq!(
        v("tapio_controller_event_batches_total{result=\"duplicate\"}"),
        1.0
    );
    assert_eq!(
        v("tapio_controller_event_batches_total{result=\"rejected\"}"),
        1.0
    );
    assert_eq!(
        v("tapio_controller_rejects_total{code=\"UNAUTHORIZED\"}"),
        1.0
    );
    assert_eq!(
        v("tapio_controller_rejects_total{code=\"INVALID_FIELD\"}"),
        1.0
    );
    assert_eq!(
        v("tapio_controller_rejects_total{code=\"UNKNOWN_ENDPOINT\"}"),
        1.0
    );
    assert_eq!(
        v("tapio_controller_rejects_total{code=\"MISSING_FIELD\"}"),
        0.0
    );

    // A new generation shows at once.
    let mut changed = CompiledConfig::default();
    changed.network.refused_min_count = 3;
    state.apply(changed, 0);
    assert_eq!(
        must_metric(&scrape(&app).await, "tapio_controller_config_generation"),
        2.0
    );

    // Later, without heartbeats: both agents stale, the age past the bound.
    let later = Instant::now() + STALE_AFTER + Duration::from_secs(1);
    let snap = Snapshot::take(&state, later);
    assert_eq!(snap.stale, 2);
    assert!(snap.heartbeat_age_max_seconds > STALE_AFTER.as_secs_f64());
    assert!(snap.encode().contains("tapio_controller_agents_stale 2\n"));
}

/// The exposition is valid classic text for Prometheus' own checker.
#[tokio::test]
async fn promtool_accepts_the_exposition() {
    require_tools!("promtool");
    let text = scrape(&router(state())).await;
    assert_promtool_accepts(&text);
}
