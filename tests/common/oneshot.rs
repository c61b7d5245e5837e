//! The controller's router driven without a socket (tower `oneshot`):
//! building the state, requests with and without a token, and a reply
//! read whole. Shared by the router and the controller-metrics tests.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use tapio::controller::{AppState, Settings, Token};
use tapio::wire::config::CompiledConfig;
use tapio::wire::v1::WIRE_VERSION;

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts an error envelope with `code` and the status that goes with it.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        let v = self.json();
        assert_eq!(self.status.as_u16(), status, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert_eq!(v["wire_version"], WIRE_VERSION, "{v}");
        v["error"]["message"].as_str().unwrap().to_string()
    }
}

/// A controller state with `settings`, the token if any, the default
/// config and a fixed start time, so answers are reproducible.
pub fn state_with(settings: Settings, token: Option<&str>) -> AppState {
    AppState::new(
        settings,
        token.map(|t| Token::new(t).unwrap()),
        CompiledConfig::default(),
        1_743_691_381_042_000_000,
    )
}

/// Sends one request through a clone of `app` and reads the whole reply.
pub async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

pub fn post_json(path: &str, v: &Value) -> Request<Body> {
    post(path, serde_json::to_vec(v).unwrap())
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

pub fn with_token(mut req: Request<Body>, token: &str) -> Request<Body> {
    req.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    req
}
