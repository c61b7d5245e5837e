//! `tapio-wire/v1` requests into the controller's real router
//! (`tapio::controller::router`, driven with `oneshot`, no socket), on a
//! current-thread runtime built once.
//!
//! Input: up to four requests separated by 0xFF bytes (never in a UTF-8
//! body). A request's first byte picks the endpoint (bits 0-2: hello,
//! heartbeat, events, config, status, any path), whether the controller has
//! a token (bit 3 of the first request) and whether the request carries it
//! (bit 4); the rest is the body, the config query string, or the path.
//! Each input gets a fresh controller, so runs are reproducible.
//!
//! Invariants: no 5xx; every refusal is the v1 error envelope whose code
//! goes with its HTTP status; every 200 is JSON carrying `wire_version`
//! (or the config with its ETag); a token-protected endpoint without the
//! token is 401; acks echo the request's agent_id and sequence and accept
//! exactly the batch's occurrences; `/v1/status` still renders afterwards.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tapio::controller::{router, AppState, Settings, Token};
use tapio::wire::v1::{self, ErrorBody, WIRE_VERSION};
use tapio::wire::CompiledConfig;
use tower::ServiceExt;

const TOKEN: &str = "fuzz-token-0123456789";
/// Small enough that the fuzzer reaches 413 with short inputs.
const MAX_BODY: usize = 4096;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

struct Reply {
    status: StatusCode,
    etag: Option<String>,
    body: Vec<u8>,
}

async fn send(app: &axum::Router, req: Request<Body>) -> Reply {
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let status = resp.status();
    let etag = resp
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().expect("ASCII ETag").to_string());
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes()
        .to_vec();
    Reply { status, etag, body }
}

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
        panic!(
            "{}: body is not JSON ({e}): {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )
    })
}

/// Every refusal: the envelope, its code matching the status.
fn check_error(reply: &Reply) {
    let err: ErrorBody = serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
        panic!(
            "{} is not an error envelope ({e}): {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )
    });
    assert_eq!(err.wire_version, WIRE_VERSION);
    assert_eq!(
        err.error.code.http_status(),
        reply.status.as_u16(),
        "{err:?}"
    );
    assert!(!err.error.message.is_empty());
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Endpoint {
    Hello,
    Heartbeat,
    Events,
    Config,
    Status,
    Other,
}

async fn one(app: &axum::Router, sel: u8, payload: &[u8], token: bool) {
    let endpoint = match sel & 7 {
        0 => Endpoint::Hello,
        1 => Endpoint::Heartbeat,
        2 => Endpoint::Events,
        3 | 6 => Endpoint::Config,
        4 => Endpoint::Status,
        _ => Endpoint::Other,
    };
    let with_auth = sel & 0x10 != 0;
    let builder = match endpoint {
        Endpoint::Hello => Request::post(v1::PATH_HELLO),
        Endpoint::Heartbeat => Request::post(v1::PATH_HEARTBEAT),
        Endpoint::Events => Request::post(v1::PATH_EVENTS),
        Endpoint::Config => {
            let Ok(q) = std::str::from_utf8(payload) else {
                return;
            };
            Request::get(format!("{}?{q}", v1::PATH_CONFIG))
        }
        Endpoint::Status => Request::get(v1::PATH_STATUS),
        Endpoint::Other => {
            let Ok(p) = std::str::from_utf8(payload) else {
                return;
            };
            let method = if sel & 0x20 != 0 {
                Method::POST
            } else {
                Method::GET
            };
            Request::builder().method(method).uri(p)
        }
    };
    let mut builder = builder.header(header::CONTENT_TYPE, "application/json");
    if with_auth {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    }
    let body = match endpoint {
        Endpoint::Hello | Endpoint::Heartbeat | Endpoint::Events => Body::from(payload.to_vec()),
        _ => Body::empty(),
    };
    // A path or query the fuzzer made that is not a URI never reaches a
    // server either.
    let Ok(req) = builder.body(body) else { return };
    let reply = send(app, req).await;
    let status = reply.status.as_u16();
    assert!(
        status < 500,
        "{endpoint:?} → {status}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let protected = matches!(
        endpoint,
        Endpoint::Hello | Endpoint::Heartbeat | Endpoint::Events | Endpoint::Config
    );
    if token && !with_auth && protected {
        assert_eq!(status, 401, "{endpoint:?} without the token");
    }
    if status == 304 {
        assert_eq!(endpoint, Endpoint::Config);
        assert!(reply.body.is_empty());
        return;
    }
    if status != 200 {
        check_error(&reply);
        return;
    }
    let v = json(&reply);
    let request: Option<Value> = serde_json::from_slice(payload).ok();
    match endpoint {
        Endpoint::Hello => {
            assert_eq!(v["wire_version"], WIRE_VERSION);
            assert_eq!(v["agent_id"], request.unwrap()["agent_id"]);
        }
        Endpoint::Heartbeat => {
            assert_eq!(v["wire_version"], WIRE_VERSION);
            assert!(v["hello_required"].is_boolean(), "{v}");
        }
        Endpoint::Events => {
            let request = request.unwrap();
            assert_eq!(v["wire_version"], WIRE_VERSION);
            assert_eq!(v["agent_id"], request["agent_id"]);
            assert_eq!(v["sequence"], request["sequence"]);
            let sent = request["occurrences"].as_array().map_or(0, Vec::len) as u64;
            let accepted = v["accepted"].as_u64().expect("accepted is a count");
            if v["duplicate"] == Value::Bool(true) {
                assert_eq!(accepted, 0);
            } else {
                assert_eq!(accepted, sent, "{v}");
            }
        }
        Endpoint::Config => {
            let etag = reply.etag.as_deref().expect("a config has an ETag");
            let cfg: v1::ConfigResponse = serde_json::from_value(v).expect("a ConfigResponse");
            assert_eq!(etag, v1::etag(&cfg.config_hash));
            assert_eq!(cfg.config.hash(), cfg.config_hash);
        }
        Endpoint::Status | Endpoint::Other => {
            assert!(v.is_object(), "{v}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(&first) = data.first() else { return };
    let token = first & 0x08 != 0;
    let state = AppState::new(
        Settings {
            max_body_bytes: MAX_BODY,
            ..Settings::default()
        },
        token.then(|| Token::new(TOKEN).expect("a valid token")),
        CompiledConfig::default(),
        1_790_000_000_000_000_000,
    );
    let app = router(state);
    runtime().block_on(async {
        for part in data.split(|&b| b == 0xFF).take(4) {
            let Some((&sel, payload)) = part.split_first() else {
                continue;
            };
            one(&app, sel, payload, token).await;
        }
        // Whatever was stored must still render.
        let mut status = Request::get(v1::PATH_STATUS);
        if token {
            status = status.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        }
        let reply = send(&app, status.body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(json(&reply)["wire_version"], WIRE_VERSION);
    });
});
