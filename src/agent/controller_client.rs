//! Controller mode: the agent's side of `tapio-wire/v1` (SPEC §6).
//!
//! One thread, agent-initiated HTTP only: hello → config poll (with
//! `If-None-Match`) → hand the config to the drain thread, which writes the
//! carriers → heartbeat with the *applied* hash, observer statuses and loss
//! counters. Until a config is applied the carriers stay all-zero, so the
//! kernel side is inert and heartbeats say `unconfigured`.
//!
//! An outage never stops observation: the last applied config stays, every
//! failed request is counted in `tapio_controller_send_failures_total{kind}`
//! and `tapio_config_fetch_total{result="error"}`, and the client keeps
//! trying each interval; when the controller answers again (or says it does
//! not know this agent, e.g. after a restart) it sends a new hello and
//! converges by itself. Redirects are never followed; the token is sent
//! only as a bearer header and never logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::metrics::{KindLabel, Metrics, ResultLabel};
use super::pipeline::Shared;
use crate::wire::v1::{
    ConfigResponse, Heartbeat, HeartbeatAck, Hello, ObserverState, ObserverStatus, PATH_CONFIG,
    PATH_HEARTBEAT, PATH_HELLO,
};

/// What the client needs to know.
pub struct ClientConfig {
    pub base: reqwest::Url,
    pub token: Option<String>,
    pub agent_id: String,
    pub node_name: String,
    /// Heartbeat and config-poll interval.
    pub interval: Duration,
    pub observers: Vec<String>,
}

pub struct ControllerClient {
    cfg: ClientConfig,
    http: reqwest::blocking::Client,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    hello_done: bool,
    etag: Option<String>,
    warned: bool,
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl ControllerClient {
    pub fn new(
        cfg: ClientConfig,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(ControllerClient {
            cfg,
            http,
            shared,
            metrics,
            hello_done: false,
            etag: None,
            warned: false,
        })
    }

    fn url(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        Ok(self.cfg.base.join(path)?)
    }

    fn auth(&self, rb: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.cfg.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    fn failed(&mut self, kind: &str, e: &anyhow::Error) {
        self.metrics
            .controller_send_failures
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
        // A failure means the controller may have lost us: hello again.
        self.hello_done = false;
        if !self.warned {
            tracing::warn!(kind, "controller request failed (observation continues; further failures are counted): {e:#}");
            self.warned = true;
        }
    }

    fn post_json<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> anyhow::Result<R> {
        let resp = self
            .auth(self.http.post(self.url(path)?))
            .json(body)
            .send()
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "POST {path}: status {status}: {}",
                resp.text().unwrap_or_default()
            );
        }
        resp.json::<R>()
            .with_context(|| format!("POST {path}: bad response body"))
    }

    fn hello(&mut self) -> anyhow::Result<()> {
        let hello = Hello::new(
            self.cfg.agent_id.clone(),
            self.cfg.node_name.clone(),
            env!("CARGO_PKG_VERSION"),
            kernel_release(),
            self.cfg.observers.clone(),
        );
        let _: serde_json::Value = self.post_json(PATH_HELLO, &hello)?;
        self.hello_done = true;
        tracing::info!(agent_id = %self.cfg.agent_id, "hello sent to the controller");
        Ok(())
    }

    /// Polls the config; returns true when a new one was handed over.
    fn poll_config(&mut self) -> anyhow::Result<bool> {
        let mut url = self.url(PATH_CONFIG)?;
        url.query_pairs_mut()
            .append_pair("agent_id", &self.cfg.agent_id)
            .append_pair("node_name", &self.cfg.node_name)
            .append_pair("version", env!("CARGO_PKG_VERSION"));
        let mut rb = self.auth(self.http.get(url));
        if let Some(tag) = &self.etag {
            rb = rb.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        let resp = rb.send().context("GET config")?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            self.fetch("not_modified");
            return Ok(false);
        }
        if !status.is_success() {
            bail!("GET config: status {status}");
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let cr: ConfigResponse = resp.json().context("GET config: bad body")?;
        let Some(generation) = cr.generation() else {
            bail!("GET config: invalid config_version {:?}", cr.config_version);
        };
        if cr.config.hash() != cr.config_hash {
            bail!("GET config: config_hash does not match the config's content");
        }
        let current = self.shared.applied();
        let same = current
            .as_ref()
            .is_some_and(|a| a.hash == cr.config_hash && a.generation == generation);
        self.etag = etag;
        self.fetch("updated");
        if same {
            return Ok(false);
        }
        tracing::info!(generation, hash = %cr.config_hash, "new config from the controller");
        self.shared.request_config(cr.config, generation);
        Ok(true)
    }

    fn fetch(&self, result: &str) {
        self.metrics
            .config_fetch
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    fn heartbeat(&mut self) -> anyhow::Result<HeartbeatAck> {
        let observers: BTreeMap<String, ObserverStatus> = self
            .shared
            .statuses()
            .into_iter()
            .map(|(name, s)| {
                let state = match s.state {
                    "active" => ObserverState::Running,
                    "degraded" => ObserverState::Degraded,
                    "disabled" => ObserverState::Disabled,
                    _ => ObserverState::Unavailable,
                };
                (
                    name,
                    ObserverStatus {
                        state,
                        reason: s.reason,
                    },
                )
            })
            .collect();
        let loss = self.metrics.loss_counters();
        let hb = match self.shared.applied() {
            Some(a) => Heartbeat::configured(
                self.cfg.agent_id.clone(),
                &a.hash,
                a.generation,
                observers,
                loss,
            ),
            None => Heartbeat::unconfigured(self.cfg.agent_id.clone(), observers, loss),
        };
        self.post_json(PATH_HEARTBEAT, &hb)
    }

    /// One round: hello if needed, config poll, heartbeat.
    pub fn round(&mut self) {
        if !self.hello_done {
            if let Err(e) = self.hello() {
                self.failed("hello", &e);
                self.fetch_error_if_unconfigured();
                return;
            }
        }
        if let Err(e) = self.poll_config() {
            self.fetch("error");
            self.failed("config", &e);
            return;
        }
        match self.heartbeat() {
            Ok(ack) => {
                self.warned = false;
                if ack.hello_required {
                    self.hello_done = false;
                }
                let applied = self.shared.applied().map(|a| a.hash);
                if applied.as_ref() != Some(&ack.config_hash) {
                    // The controller moved on: fetch now rather than next round.
                    if let Err(e) = self.poll_config() {
                        self.fetch("error");
                        self.failed("config", &e);
                    }
                }
            }
            Err(e) => self.failed("heartbeat", &e),
        }
    }

    fn fetch_error_if_unconfigured(&self) {
        if self.shared.applied().is_none() {
            self.fetch("error");
        }
    }

    /// Runs rounds every interval until the agent stops.
    pub fn run(mut self) {
        let mut next = Instant::now();
        while !self.shared.stopping() {
            if Instant::now() >= next {
                self.round();
                next = Instant::now() + self.cfg.interval;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
