//! The controller's router driven without a socket (`oneshot`): every
//! endpoint, every error code, ETag/304, auth, body limit, bounds.

use axum::http::{header, StatusCode};
use axum::Router;
use serde_json::{json, Value};

use crate::common::oneshot::*;

use tapio::controller::{router, AppState, Settings};
use tapio::wire::config::CompiledConfig;
use tapio::wire::v1::{self, WIRE_VERSION};

const TOKEN: &str = "t0ken-for-tests";

fn app() -> (Router, AppState) {
    let s = state_with(Settings::default(), None);
    (router(s.clone()), s)
}

fn hello_body(agent: &str) -> Value {
    serde_json::to_value(v1::Hello::new(
        agent,
        "node-a",
        "0.1.0",
        "6.8.0",
        vec!["network".into(), "storage".into()],
    ))
    .unwrap()
}

fn occurrence() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/occurrence_oom_kill.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn batch(agent: &str, seq: u64, n: usize) -> Value {
    json!({"wire_version": WIRE_VERSION, "agent_id": agent, "sequence": seq,
           "occurrences": vec![occurrence(); n]})
}

/// Posts a heartbeat, asserts 200 and returns the ack.
async fn heartbeat(app: &Router, hb: &v1::Heartbeat) -> v1::HeartbeatAck {
    let r = send(
        app,
        post_json("/v1/agents/heartbeat", &serde_json::to_value(hb).unwrap()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    serde_json::from_slice(&r.body).unwrap()
}

async fn status(app: &Router) -> Value {
    let r = send(app, get("/v1/status")).await;
    assert_eq!(r.status, StatusCode::OK);
    r.json()
}

#[tokio::test]
async fn hello_registers_the_agent_and_names_the_active_config() {
    let (app, _) = app();
    let r = send(&app, post_json("/v1/agents/hello", &hello_body("a1"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let ack: v1::HelloAck = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(ack.wire_version, WIRE_VERSION);
    assert_eq!(ack.agent_id, "a1");
    assert_eq!(ack.config_version, "1");
    assert_eq!(ack.config_hash, CompiledConfig::default().hash());

    let s = status(&app).await;
    assert_eq!(s["agents"][0]["agent_id"], "a1");
    assert_eq!(s["agents"][0]["node_name"], "node-a");
    assert_eq!(s["agents"][0]["observers"], json!(["network", "storage"]));
    assert_eq!(s["agents"][0]["applied_config_version"], "0");
    assert_eq!(s["counters"]["hellos"], 1);
}

#[tokio::test]
async fn config_has_an_etag_and_exact_if_none_match_gives_304() {
    let (app, state) = app();
    let r = send(
        &app,
        get("/v1/agents/config?agent_id=a1&node_name=n&version=0.1.0"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let cfg: v1::ConfigResponse = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(cfg.wire_version, WIRE_VERSION);
    assert_eq!(cfg.config_version, "1");
    assert_eq!(cfg.config, CompiledConfig::default());
    assert_eq!(cfg.config_hash, cfg.config.hash());
    let etag = r.headers[header::ETAG].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", cfg.config_hash));

    let mut req = get("/v1/agents/config?agent_id=a1");
    req.headers_mut()
        .insert(header::IF_NONE_MATCH, etag.parse().unwrap());
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    assert_eq!(r.headers[header::ETAG].to_str().unwrap(), etag);

    // Only an exact match counts: unquoted, weak or another hash → 200.
    for other in [
        cfg.config_hash.0.clone(),
        format!("W/{etag}"),
        "\"sha256:00\"".into(),
    ] {
        let mut req = get("/v1/agents/config?agent_id=a1");
        req.headers_mut()
            .insert(header::IF_NONE_MATCH, other.parse().unwrap());
        assert_eq!(send(&app, req).await.status, StatusCode::OK, "{other}");
    }

    // A new generation: new ETag, the old one no longer matches.
    let mut changed = CompiledConfig::default();
    changed.storage.slow_io_threshold_ns = 50_000_000;
    state.apply(changed.clone(), 0);
    let mut req = get("/v1/agents/config?agent_id=a1");
    req.headers_mut()
        .insert(header::IF_NONE_MATCH, etag.parse().unwrap());
    let r = send(&app, req).await;
    assert_eq!(r.status, StatusCode::OK);
    let cfg: v1::ConfigResponse = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(cfg.config_version, "2");
    assert_eq!(cfg.config, changed);
    assert_eq!(
        r.headers[header::ETAG].to_str().unwrap(),
        format!("\"{}\"", changed.hash())
    );

    let s = status(&app).await;
    assert_eq!(s["counters"]["config_fetches"], 6);
    assert_eq!(s["counters"]["config_not_modified"], 1);
    assert_eq!(s["config"]["config_version"], "2");
}

#[tokio::test]
async fn config_requires_agent_id_and_a_sane_query() {
    let (app, _) = app();
    let long = "x".repeat(v1::MAX_ID_LEN + 1);
    let long = format!("/v1/agents/config?agent_id={long}");
    for (path, code) in [
        ("/v1/agents/config", "MISSING_FIELD"),
        ("/v1/agents/config?node_name=n", "MISSING_FIELD"),
        ("/v1/agents/config?agent_id=", "INVALID_FIELD"),
        (long.as_str(), "INVALID_FIELD"),
    ] {
        send(&app, get(path)).await.assert_error(400, code);
    }
}

#[tokio::test]
async fn heartbeat_records_the_applied_config() {
    let (app, _) = app();
    // Unknown agent: accepted, but asked for a hello.
    let hb = v1::Heartbeat::unconfigured("a1", Default::default(), Default::default());
    let ack = heartbeat(&app, &hb).await;
    assert!(ack.hello_required);
    assert_eq!(ack.config_version, "1");

    send(&app, post_json("/v1/agents/hello", &hello_body("a1"))).await;
    let s = status(&app).await;
    assert_eq!(s["agents"][0]["state"], "degraded");
    assert_eq!(s["agents"][0]["reason"], "unconfigured");
    assert_eq!(s["agents"][0]["applied_hash_matches"], false);

    let hash = CompiledConfig::default().hash();
    let mut observers = std::collections::BTreeMap::new();
    observers.insert(
        "network".to_string(),
        v1::ObserverStatus {
            state: v1::ObserverState::Running,
            reason: String::new(),
        },
    );
    observers.insert(
        "node".to_string(),
        v1::ObserverStatus {
            state: v1::ObserverState::Unavailable,
            reason: "no PMU".into(),
        },
    );
    let mut loss = std::collections::BTreeMap::new();
    loss.insert("sink_drops.controller".to_string(), 2u64);
    let hb = v1::Heartbeat::configured("a1", &hash, 1, observers, loss);
    let ack = heartbeat(&app, &hb).await;
    assert!(!ack.hello_required);
    assert_eq!(ack.config_hash, hash);

    let s = status(&app).await;
    let a = &s["agents"][0];
    assert_eq!(a["applied_config_hash"], hash.0.as_str());
    assert_eq!(a["applied_config_version"], "1");
    assert_eq!(a["applied_hash_matches"], true);
    assert_eq!(a["observer_status"]["node"]["state"], "unavailable");
    assert_eq!(a["observer_status"]["node"]["reason"], "no PMU");
    assert_eq!(a["loss"]["sink_drops.controller"], 2);
    assert_eq!(a["heartbeats"], 2);
    assert!(a["last_heartbeat_age_secs"].is_u64());
}

#[tokio::test]
async fn heartbeat_field_rules() {
    let (app, _) = app();
    let base = json!({"wire_version": WIRE_VERSION, "agent_id": "a1",
                      "config_hash": "", "config_version": "0"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    assert_eq!(
        send(&app, post_json("/v1/agents/heartbeat", &base))
            .await
            .status,
        StatusCode::OK
    );
    for bad in [
        with("config_version", json!("1")),  // empty hash must be "0"
        with("config_version", json!("01")), // not canonical
        with("config_version", json!(1)),    // not a string
        with("config_hash", json!("sha256:xyz")),
        with("observers", json!({"network": {"state": 5}})),
        with("loss", json!({"x": -1})),
    ] {
        send(&app, post_json("/v1/agents/heartbeat", &bad))
            .await
            .assert_error(400, "INVALID_FIELD");
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("config_hash");
    let msg = send(&app, post_json("/v1/agents/heartbeat", &missing))
        .await
        .assert_error(400, "MISSING_FIELD");
    assert!(msg.contains("config_hash"), "{msg}");
}

#[tokio::test]
async fn events_are_stored_with_sequence_state() {
    let (app, _) = app();
    send(&app, post_json("/v1/agents/hello", &hello_body("a1"))).await;
    let r = send(&app, post_json("/v1/events", &batch("a1", 1, 2))).await;
    assert_eq!(r.status, StatusCode::OK);
    let ack: v1::EventAck = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((ack.sequence, ack.accepted, ack.duplicate), (1, 2, false));

    // A retry of batch 1 is a duplicate; batch 4 leaves a gap of 2.
    let ack: v1::EventAck = serde_json::from_slice(
        &send(&app, post_json("/v1/events", &batch("a1", 1, 2)))
            .await
            .body,
    )
    .unwrap();
    assert_eq!((ack.accepted, ack.duplicate), (0, true));
    let ack: v1::EventAck = serde_json::from_slice(
        &send(&app, post_json("/v1/events", &batch("a1", 4, 1)))
            .await
            .body,
    )
    .unwrap();
    assert_eq!((ack.accepted, ack.duplicate), (1, false));
    // An empty batch is fine.
    assert_eq!(
        send(&app, post_json("/v1/events", &batch("a1", 5, 0)))
            .await
            .status,
        StatusCode::OK
    );

    let s = status(&app).await;
    let b = &s["agents"][0]["batches"];
    assert_eq!(b["last_sequence"], 5);
    assert_eq!(b["received"], 3);
    assert_eq!(b["occurrences"], 3);
    assert_eq!(b["gaps"], 2);
    assert_eq!(b["duplicates"], 1);
    assert_eq!(s["counters"]["occurrences_received"], 3);
    assert_eq!(s["counters"]["duplicate_batches"], 1);
    assert_eq!(s["counters"]["sequence_gaps"], 2);
    assert_eq!(s["events"]["buffered"], 3);
    assert_eq!(s["events"]["recent"][0]["agent_id"], "a1");
    assert_eq!(s["events"]["recent"][0]["occurrence"], occurrence());
}

#[tokio::test]
async fn a_reasoning_field_anywhere_is_refused_with_422() {
    let (app, _) = app();
    for (path, field) in [
        ("/data/reason", "reason"),
        ("/root_cause", "root_cause"),
        ("/data/nested/suggested_fix", "suggested_fix"),
    ] {
        let mut occ = occurrence();
        let parent = path.rsplit_once('/').unwrap().0;
        if parent == "/data/nested" {
            occ["data"]["nested"] = json!({});
        }
        occ.pointer_mut(if parent.is_empty() { "" } else { parent })
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(field.into(), json!("the disk is full"));
        let body = json!({"wire_version": WIRE_VERSION, "agent_id": "a1", "sequence": 1,
                          "occurrences": [occ]});
        let msg = send(&app, post_json("/v1/events", &body))
            .await
            .assert_error(422, "REASONING_FIELD");
        assert!(msg.contains(field), "{msg}");
    }
    assert_eq!(status(&app).await["counters"]["occurrences_received"], 0);
}

#[tokio::test]
async fn envelope_errors_on_every_post_endpoint() {
    let (app, _) = app();
    for path in ["/v1/agents/hello", "/v1/agents/heartbeat", "/v1/events"] {
        for body in ["{not json", "", "[1,2]"] {
            send(&app, post(path, body))
                .await
                .assert_error(400, "MALFORMED_JSON");
        }
        send(&app, post_json(path, &json!({"agent_id": "a1"})))
            .await
            .assert_error(400, "MISSING_FIELD");
        for version in [json!("tapio-wire/v2"), json!(1), json!(null)] {
            send(
                &app,
                post_json(path, &json!({"wire_version": version, "agent_id": "a1"})),
            )
            .await
            .assert_error(400, "UNSUPPORTED_VERSION");
        }
        let msg = send(
            &app,
            post_json(path, &json!({"wire_version": WIRE_VERSION})),
        )
        .await
        .assert_error(400, "MISSING_FIELD");
        assert!(msg.contains("agent_id"), "{path}: {msg}");
    }
    send(
        &app,
        post_json(
            "/v1/events",
            &json!({"wire_version": WIRE_VERSION, "agent_id": "a1", "sequence": "one", "occurrences": []}),
        ),
    )
    .await
    .assert_error(400, "INVALID_FIELD");
    let mut occ = occurrence();
    occ.as_object_mut().unwrap().remove("id");
    let msg = send(
        &app,
        post_json(
            "/v1/events",
            &json!({"wire_version": WIRE_VERSION, "agent_id": "a1", "sequence": 1, "occurrences": [occurrence(), occ]}),
        ),
    )
    .await
    .assert_error(400, "INVALID_FIELD");
    assert!(msg.starts_with("occurrences[1]:"), "{msg}");
    send(
        &app,
        post_json(
            "/v1/agents/hello",
            &json!({"wire_version": WIRE_VERSION, "agent_id": "", "node_name": "n"}),
        ),
    )
    .await
    .assert_error(400, "INVALID_FIELD");

    let s = status(&app).await;
    assert_eq!(s["counters"]["rejected"]["MALFORMED_JSON"], 9);
    assert_eq!(s["counters"]["rejected"]["UNSUPPORTED_VERSION"], 9);
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let (app, _) = app();
    let mut hello = hello_body("a1");
    hello["future_field"] = json!({"anything": [1, 2]});
    assert_eq!(
        send(&app, post_json("/v1/agents/hello", &hello))
            .await
            .status,
        StatusCode::OK
    );
    let hb = json!({"wire_version": WIRE_VERSION, "agent_id": "a1", "config_hash": "",
                    "config_version": "0", "state": "hibernating", "extra": 1,
                    "observers": {"gpu": {"state": "new-state", "since": 3}}});
    assert_eq!(
        send(&app, post_json("/v1/agents/heartbeat", &hb))
            .await
            .status,
        StatusCode::OK
    );
    let mut b = batch("a1", 1, 1);
    b["compression"] = json!("none");
    b["occurrences"][0]["extra_fact"] = json!(7);
    assert_eq!(
        send(&app, post_json("/v1/events", &b)).await.status,
        StatusCode::OK
    );
    let s = status(&app).await;
    assert_eq!(s["agents"][0]["state"], "unknown");
    assert_eq!(s["agents"][0]["observer_status"]["gpu"]["state"], "unknown");
}

#[tokio::test]
async fn token_is_required_everywhere_but_healthz() {
    let state = state_with(Settings::default(), Some(TOKEN));
    let app = router(state.clone());
    let hb = serde_json::to_value(v1::Heartbeat::unconfigured(
        "a1",
        Default::default(),
        Default::default(),
    ))
    .unwrap();
    let requests = || {
        vec![
            post_json("/v1/agents/hello", &hello_body("a1")),
            get("/v1/agents/config?agent_id=a1"),
            post_json("/v1/agents/heartbeat", &hb),
            post_json("/v1/events", &batch("a1", 1, 1)),
            get("/v1/status"),
            get("/v1/status?agents=page&limit=10"),
        ]
    };
    for req in requests() {
        send(&app, req).await.assert_error(401, "UNAUTHORIZED");
    }
    for req in requests() {
        send(&app, with_token(req, "wrong"))
            .await
            .assert_error(401, "UNAUTHORIZED");
    }
    for req in requests() {
        let mut req = req;
        req.headers_mut()
            .insert(header::AUTHORIZATION, TOKEN.parse().unwrap()); // no "Bearer "
        send(&app, req).await.assert_error(401, "UNAUTHORIZED");
    }
    for req in requests() {
        let r = send(&app, with_token(req, TOKEN)).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Auth is judged before the body: garbage without a token is a 401.
    send(&app, post("/v1/events", "{garbage"))
        .await
        .assert_error(401, "UNAUTHORIZED");
    // Only /healthz is open (for probes).
    let r = send(&app, get("/healthz")).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (StatusCode::OK, b"ok".as_slice())
    );
    // Status says the controller is authenticated.
    let r = send(&app, with_token(get("/v1/status"), TOKEN)).await;
    assert_eq!(r.status, StatusCode::OK);
    let s = r.json();
    assert_eq!(s["controller"]["authenticated"], true);
    assert_eq!(s["counters"]["rejected"]["UNAUTHORIZED"], 19);
    // The token never shows in Debug output or in responses.
    assert!(!format!("{state:?}").contains(TOKEN));
    assert!(!s.to_string().contains(TOKEN));
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let settings = Settings {
        max_body_bytes: 2048,
        ..Settings::default()
    };
    let app = router(state_with(settings, None));
    let big = batch("a1", 1, 20);
    assert!(serde_json::to_vec(&big).unwrap().len() > 2048);
    send(&app, post_json("/v1/events", &big))
        .await
        .assert_error(413, "PAYLOAD_TOO_LARGE");
    send(
        &app,
        post_json(
            "/v1/agents/hello",
            &json!({"wire_version": WIRE_VERSION, "pad": "x".repeat(4096)}),
        ),
    )
    .await
    .assert_error(413, "PAYLOAD_TOO_LARGE");
    // Just under the limit is fine.
    assert_eq!(
        send(&app, post_json("/v1/events", &batch("a1", 1, 1)))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_endpoints_and_methods_get_404() {
    let (app, _) = app();
    for req in [
        get("/v1/nope"),
        get("/"),
        get("/v1/events"),
        post("/v1/status", "{}"),
        post("/v1/agents/config", "{}"),
    ] {
        send(&app, req).await.assert_error(404, "UNKNOWN_ENDPOINT");
    }
}

#[tokio::test]
async fn internal_errors_say_nothing_more() {
    let (app, state) = app();
    state.poison_for_tests();
    for req in [
        post_json("/v1/agents/hello", &hello_body("a1")),
        get("/v1/status"),
    ] {
        let msg = send(&app, req).await.assert_error(500, "INTERNAL_ERROR");
        assert_eq!(msg, "internal error");
    }
}

#[tokio::test]
async fn registry_and_event_buffer_are_bounded() {
    let settings = Settings {
        max_agents: 3,
        event_buffer: 4,
        ..Settings::default()
    };
    let app = router(state_with(settings, None));
    for i in 0..5 {
        let r = send(
            &app,
            post_json("/v1/agents/hello", &hello_body(&format!("a{i}"))),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = send(&app, post_json("/v1/events", &batch("a4", 1, 6))).await;
    assert_eq!(r.status, StatusCode::OK);
    let s = status(&app).await;
    let ids: Vec<&str> = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a2", "a3", "a4"]);
    assert_eq!(s["counters"]["agents_evicted"], 2);
    assert_eq!(s["events"]["buffered"], 4);
    assert_eq!(s["counters"]["occurrences_evicted"], 2);
    assert_eq!(s["counters"]["occurrences_received"], 6);
}

#[tokio::test]
async fn status_reports_facts_about_the_controller() {
    let (app, _) = app();
    let s = status(&app).await;
    assert_eq!(s["wire_version"], WIRE_VERSION);
    assert_eq!(s["controller"]["started_at"], "2025-04-03T14:43:01.042Z");
    assert_eq!(s["controller"]["authenticated"], false);
    assert_eq!(s["controller"]["max_body_bytes"], 1024 * 1024);
    assert_eq!(s["config"]["profile"], "default");
    assert_eq!(s["config"]["config_version"], "1");
    assert_eq!(
        s["config"]["config_hash"],
        CompiledConfig::default().hash().0.as_str()
    );
    assert_eq!(s["agents"], json!([]));
    assert_eq!(s["events"]["recent"], json!([]));
}

/// `body` with `field` (a JSON pointer) replaced by `value`.
fn with_field(body: &Value, pointer: &str, value: Value) -> Value {
    let mut b = body.clone();
    *b.pointer_mut(pointer).unwrap() = value;
    b
}

fn maximal_heartbeat(agent: &str) -> Value {
    let observers: serde_json::Map<String, Value> = (0..v1::MAX_OBSERVERS)
        .map(|i| {
            (
                format!("{i:0>width$}", width = v1::MAX_OBSERVER_NAME_LEN),
                json!({"state": "unavailable", "reason": "r".repeat(v1::MAX_REASON_LEN)}),
            )
        })
        .collect();
    let loss: serde_json::Map<String, Value> = (0..v1::MAX_LOSS_COUNTERS)
        .map(|i| {
            (
                format!("{i:0>width$}", width = v1::MAX_LOSS_NAME_LEN),
                json!(u64::MAX),
            )
        })
        .collect();
    json!({"wire_version": WIRE_VERSION, "agent_id": agent, "config_hash": "",
           "config_version": "0", "state": "degraded", "reason": "u".repeat(v1::MAX_REASON_LEN),
           "observers": observers, "loss": loss})
}

fn maximal_hello(agent: &str) -> Value {
    json!({"wire_version": WIRE_VERSION, "agent_id": agent,
           "node_name": "n".repeat(v1::MAX_NODE_NAME_LEN),
           "version": "v".repeat(v1::MAX_TEXT_LEN), "kernel": "k".repeat(v1::MAX_TEXT_LEN),
           "observers": (0..v1::MAX_OBSERVERS)
               .map(|i| format!("{i:0>width$}", width = v1::MAX_OBSERVER_NAME_LEN))
               .collect::<Vec<_>>()})
}

#[tokio::test]
async fn fields_at_their_limit_pass_and_one_byte_more_is_refused_by_name() {
    let (app, _) = app();
    let id = "i".repeat(v1::MAX_ID_LEN);
    let hello = maximal_hello(&id);
    let hb = maximal_heartbeat(&id);
    assert_eq!(
        send(&app, post_json("/v1/agents/hello", &hello))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, post_json("/v1/agents/heartbeat", &hb))
            .await
            .status,
        StatusCode::OK
    );

    let long = |n: usize| json!("x".repeat(n + 1));
    let mut too_many_observers = hello.clone();
    too_many_observers["observers"]
        .as_array_mut()
        .unwrap()
        .push(json!("extra"));
    let hello_cases = [
        (
            with_field(&hello, "/agent_id", long(v1::MAX_ID_LEN)),
            "agent_id must be at most 64 bytes",
        ),
        (
            with_field(&hello, "/node_name", long(v1::MAX_NODE_NAME_LEN)),
            "node_name must be at most 253 bytes",
        ),
        (
            with_field(&hello, "/version", long(v1::MAX_TEXT_LEN)),
            "version must be at most 64 bytes",
        ),
        (
            with_field(&hello, "/kernel", long(v1::MAX_TEXT_LEN)),
            "kernel must be at most 64 bytes",
        ),
        (
            with_field(&hello, "/observers/0", long(v1::MAX_OBSERVER_NAME_LEN)),
            "observers[] must be at most 32 bytes",
        ),
        (too_many_observers, "observers must have at most 8 entries"),
        (
            with_field(&hello, "/node_name", json!("")),
            "node_name must not be empty",
        ),
    ];
    for (body, want) in hello_cases {
        let msg = send(&app, post_json("/v1/agents/hello", &body))
            .await
            .assert_error(400, "INVALID_FIELD");
        assert_eq!(msg, want);
    }
    let mut extra_observer = hb.clone();
    extra_observer["observers"]["extra"] = json!({"state": "running"});
    let mut extra_loss = hb.clone();
    extra_loss["loss"]["extra"] = json!(1);
    let mut long_loss_name = hb.clone();
    long_loss_name["loss"] = json!({"l".repeat(v1::MAX_LOSS_NAME_LEN + 1): 1});
    let mut long_observer_name = hb.clone();
    long_observer_name["observers"] =
        json!({"o".repeat(v1::MAX_OBSERVER_NAME_LEN + 1): {"state": "running"}});
    let first_observer = format!("/observers/{:0>32}/reason", 0);
    let hb_cases = [
        (
            with_field(&hb, "/reason", long(v1::MAX_REASON_LEN)),
            "reason must be at most 256 bytes",
        ),
        (
            with_field(&hb, &first_observer, long(v1::MAX_REASON_LEN)),
            "observers.reason must be at most 256 bytes",
        ),
        (extra_observer, "observers must have at most 8 entries"),
        (extra_loss, "loss must have at most 24 entries"),
        (long_loss_name, "loss key must be at most 48 bytes"),
        (long_observer_name, "observers key must be at most 32 bytes"),
    ];
    for (body, want) in hb_cases {
        let msg = send(&app, post_json("/v1/agents/heartbeat", &body))
            .await
            .assert_error(400, "INVALID_FIELD");
        assert_eq!(msg, want);
    }
    let s = status(&app).await;
    assert_eq!(s["agent_counts"]["registered"], 1);
    assert_eq!(
        s["agents"][0]["loss"].as_object().unwrap().len(),
        v1::MAX_LOSS_COUNTERS
    );
}

#[tokio::test]
async fn control_characters_in_agent_strings_are_refused_before_anything_is_stored() {
    let (app, _) = app();
    let forged = "a1\nINFO forged\u{1b}[2J";
    let hello = hello_body("a1");
    for (pointer, field) in [
        ("/agent_id", "agent_id"),
        ("/node_name", "node_name"),
        ("/version", "version"),
        ("/kernel", "kernel"),
        ("/observers/0", "observers[]"),
    ] {
        let msg = send(
            &app,
            post_json(
                "/v1/agents/hello",
                &with_field(&hello, pointer, json!(forged)),
            ),
        )
        .await
        .assert_error(400, "INVALID_FIELD");
        assert_eq!(msg, format!("{field} must not contain control characters"));
    }
    let hb = serde_json::to_value(v1::Heartbeat::unconfigured(
        "a1",
        Default::default(),
        Default::default(),
    ))
    .unwrap();
    let mut bad_observer_key = hb.clone();
    bad_observer_key["observers"] = json!({"net\u{1b}[31m": {"state": "running"}});
    let mut bad_observer_reason = hb.clone();
    bad_observer_reason["observers"] =
        json!({"network": {"state": "degraded", "reason": "x\r\ny"}});
    let mut bad_loss_key = hb.clone();
    bad_loss_key["loss"] = json!({"drops\n": 1});
    for (body, field) in [
        (with_field(&hb, "/agent_id", json!(forged)), "agent_id"),
        (with_field(&hb, "/reason", json!("a\u{7}bell")), "reason"),
        (bad_observer_key, "observers key"),
        (bad_observer_reason, "observers.reason"),
        (bad_loss_key, "loss key"),
    ] {
        let msg = send(&app, post_json("/v1/agents/heartbeat", &body))
            .await
            .assert_error(400, "INVALID_FIELD");
        assert_eq!(msg, format!("{field} must not contain control characters"));
    }
    let msg = send(&app, post_json("/v1/events", &batch(forged, 1, 1)))
        .await
        .assert_error(400, "INVALID_FIELD");
    assert_eq!(msg, "agent_id must not contain control characters");
    let msg = send(&app, get("/v1/agents/config?agent_id=a%0Ab"))
        .await
        .assert_error(400, "INVALID_FIELD");
    assert_eq!(msg, "agent_id must not contain control characters");
    // An agent_id is visible ASCII: no look-alikes or direction overrides.
    for id in ["agent a", "agent\u{202e}a", "agént"] {
        let msg = send(&app, post_json("/v1/agents/hello", &hello_body(id)))
            .await
            .assert_error(400, "INVALID_FIELD");
        assert_eq!(msg, "agent_id must be visible ASCII (no spaces)");
    }
    let s = status(&app).await;
    assert_eq!(s["agent_counts"]["registered"], 0);
    assert_eq!(s["counters"]["rejected"]["INVALID_FIELD"], 15);
    assert_eq!(s["events"]["buffered"], 0);
}

async fn post_batch(app: &Router, agent: &str, seq: u64) -> v1::EventAck {
    let r = send(app, post_json("/v1/events", &batch(agent, seq, 1))).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn a_maximal_sequence_number_does_not_poison_later_batches() {
    let (app, _) = app();
    send(&app, post_json("/v1/agents/hello", &hello_body("a1"))).await;
    assert!(!post_batch(&app, "a1", 1).await.duplicate);
    // u64::MAX: a reset, stored, no gap of 2^64 counted.
    let ack = post_batch(&app, "a1", u64::MAX).await;
    assert_eq!((ack.accepted, ack.duplicate), (1, false));
    // The real numbering goes on: accepted (a reset back), not a duplicate.
    let ack = post_batch(&app, "a1", 2).await;
    assert_eq!((ack.accepted, ack.duplicate), (1, false));
    let ack = post_batch(&app, "a1", 3).await;
    assert_eq!((ack.accepted, ack.duplicate), (1, false));
    // Retries are still duplicates.
    assert!(post_batch(&app, "a1", 3).await.duplicate);
    assert!(post_batch(&app, "a1", 2).await.duplicate);
    // A hello (restarted instance, same id) starts the numbering over.
    send(&app, post_json("/v1/agents/hello", &hello_body("a1"))).await;
    let ack = post_batch(&app, "a1", 1).await;
    assert_eq!((ack.accepted, ack.duplicate), (1, false));
    assert!(post_batch(&app, "a1", 1).await.duplicate);
    // Another agent is judged on its own numbers.
    assert!(!post_batch(&app, "a2", 3).await.duplicate);

    let s = status(&app).await;
    let b = &s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent_id"] == "a1")
        .unwrap()["batches"];
    assert_eq!(b["last_sequence"], 1);
    assert_eq!(b["received"], 5);
    assert_eq!(b["occurrences"], 5);
    assert_eq!(b["gaps"], 0);
    assert_eq!(b["resets"], 2);
    assert_eq!(b["duplicates"], 3);
    assert_eq!(s["counters"]["sequence_gaps"], 0);
    assert_eq!(s["counters"]["sequence_resets"], 2);
    assert_eq!(s["counters"]["duplicate_batches"], 3);
    assert_eq!(s["counters"]["occurrences_received"], 6);
}

#[tokio::test]
async fn status_summary_is_bounded_and_lists_the_agents_most_in_need_first() {
    let (app, state) = app();
    let hash = CompiledConfig::default().hash();
    for i in 0..120 {
        let r = send(
            &app,
            post_json("/v1/agents/hello", &hello_body(&format!("a{i:03}"))),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let observers = || {
        std::collections::BTreeMap::from([(
            "node".to_string(),
            v1::ObserverStatus {
                state: v1::ObserverState::Unavailable,
                reason: "no PMU".into(),
            },
        )])
    };
    heartbeat(
        &app,
        &v1::Heartbeat::configured("a005", &hash, 1, observers(), Default::default()),
    )
    .await;
    heartbeat(
        &app,
        &v1::Heartbeat::configured("a050", &hash, 1, observers(), Default::default()),
    )
    .await;
    heartbeat(
        &app,
        &v1::Heartbeat::configured("a010", &hash, 1, Default::default(), Default::default()),
    )
    .await;
    assert!(state.age_agent_for_tests("a010", std::time::Duration::from_secs(100)));
    assert!(state.age_agent_for_tests("a005", std::time::Duration::from_secs(40)));
    // 30 occurrences buffered; the summary shows the newest 20.
    let r = send(&app, post_json("/v1/events", &batch("a001", 1, 30))).await;
    assert_eq!(r.status, StatusCode::OK);

    let s = status(&app).await;
    let ids: Vec<&str> = s["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    // Stale first: a005 (degraded, silent 40 s) before a010 (fine, silent
    // 100 s); then the rest in trouble (unconfigured, degraded) by id.
    let mut want = vec!["a005".to_string(), "a010".to_string()];
    want.extend(
        (0..120)
            .map(|i| format!("a{i:03}"))
            .filter(|id| id != "a010" && id != "a005")
            .take(48),
    );
    assert_eq!(ids, want);
    assert_eq!(s["agents_omitted"], 70);
    assert_eq!(
        s["agent_counts"],
        json!({"registered": 120, "unconfigured": 117, "degraded": 2, "stale": 2,
               "config_mismatch": 0, "heartbeat_age_max_secs": 100})
    );
    assert_eq!(s["events"]["buffered"], 30);
    assert_eq!(s["events"]["recent"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn status_pages_walk_every_agent_once_in_id_order() {
    let (app, _) = app();
    for i in (0..120).rev() {
        send(
            &app,
            post_json("/v1/agents/hello", &hello_body(&format!("a{i:03}"))),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut sizes = Vec::new();
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!("/v1/status?agents=page&limit=50&cursor={c}"),
            None => "/v1/status?agents=page&limit=50".to_string(),
        };
        let p = status_at(&app, &q).await;
        assert_eq!(p["registered"], 120);
        let agents = p["agents"].as_array().unwrap();
        sizes.push(agents.len());
        seen.extend(
            agents
                .iter()
                .map(|a| a["agent_id"].as_str().unwrap().to_string()),
        );
        match p["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(c, seen.last().unwrap());
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    assert_eq!(sizes, [50, 50, 20]);
    let want: Vec<String> = (0..120).map(|i| format!("a{i:03}")).collect();
    assert_eq!(seen, want);
    // Default page size 100.
    let p = status_at(&app, "/v1/status?agents=page").await;
    assert_eq!(p["agents"].as_array().unwrap().len(), 100);
    assert_eq!(p["next_cursor"], "a099");
    for (q, want) in [
        (
            "/v1/status?agents=page&limit=501",
            "limit must be an integer in 1..=500",
        ),
        (
            "/v1/status?agents=page&limit=0",
            "limit must be an integer in 1..=500",
        ),
        (
            "/v1/status?agents=page&limit=-1",
            "limit must be an integer in 1..=500",
        ),
        (
            "/v1/status?agents=everything",
            "agents must be summary or page",
        ),
        ("/v1/status?limit=10", "cursor and limit need agents=page"),
        (
            "/v1/status?agents=page&cursor=a%1B",
            "cursor must not contain control characters",
        ),
    ] {
        let msg = send(&app, get(q)).await.assert_error(400, "INVALID_FIELD");
        assert_eq!(msg, want, "{q}");
    }
}

async fn status_at(app: &Router, uri: &str) -> Value {
    let r = send(app, get(uri)).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}
