//! `controller` sink: occurrences as `tapio-wire/v1` event batches to
//! `POST /v1/events`, numbered per agent instance from 1. A retried batch
//! keeps its number (it is encoded once), so the controller can tell a
//! retry (duplicate) from a gap. Batching, backoff, bounds and counters are
//! the shared poster's (`http.rs`); failed requests also count in
//! `tapio_controller_send_failures_total{kind="events"}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::http::{BatchPoster, PostPolicy};
use crate::agent::metrics::Metrics;
use crate::wire::v1::{EventBatch, PATH_EVENTS};

pub fn controller_sink(
    base: &reqwest::Url,
    agent_id: String,
    token: Option<String>,
    policy: PostPolicy,
    metrics: Arc<Metrics>,
) -> anyhow::Result<BatchPoster> {
    let url = base.join(PATH_EVENTS)?;
    let sequence = AtomicU64::new(0);
    let encode = Box::new(move |batch: &[Arc<crate::wire::Emitted>]| {
        let seq = sequence.fetch_add(1, Ordering::Relaxed) + 1;
        // Each occurrence's shared text goes into the body as it is.
        let body = EventBatch::new(
            agent_id.clone(),
            seq,
            batch.iter().map(|o| o.json()).collect(),
        );
        serde_json::to_vec(&body).unwrap_or_default()
    });
    Ok(BatchPoster::new(
        "controller",
        url,
        "application/json",
        encode,
        policy,
        metrics,
    )?
    .with_bearer(token)
    .with_failure_kind("events"))
}
