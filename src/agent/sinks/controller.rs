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
use crate::wire::Emitted;

pub fn controller_sink(
    base: &reqwest::Url,
    agent_id: String,
    token: Option<String>,
    policy: PostPolicy,
    metrics: Arc<Metrics>,
) -> anyhow::Result<BatchPoster> {
    let url = base.join(PATH_EVENTS)?;
    let sequence = AtomicU64::new(0);
    let encode = Box::new(move |batch: &[Arc<Emitted>]| {
        let seq = sequence.fetch_add(1, Ordering::Relaxed) + 1;
        encode_batch(&agent_id, seq, batch)
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

/// The `POST /v1/events` body numbered `seq`: each occurrence's shared
/// text goes into it as it is.
fn encode_batch(agent_id: &str, seq: u64, batch: &[Arc<Emitted>]) -> Vec<u8> {
    let body = EventBatch::new(agent_id, seq, batch.iter().map(|o| o.json()).collect());
    // Strings, numbers and JSON texts that are already valid: cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Occurrence;

    /// The body is what serialising the batch of parsed occurrences wrote
    /// before the texts were shared, byte for byte, and the controller
    /// reads it back as that batch.
    #[test]
    fn batch_body_holds_the_shared_texts_unchanged() {
        let batch: Vec<_> = (1..=3).map(crate::agent::sinks::tests::occ).collect();
        let body = encode_batch("01AGENT", 9, &batch);
        let parsed: Vec<Occurrence> = batch
            .iter()
            .map(|o| serde_json::from_str(o.json().get()).unwrap())
            .collect();
        let want = EventBatch::new("01AGENT", 9, parsed);
        assert_eq!(
            String::from_utf8(body.clone()).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
        let back: EventBatch = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, want);
    }
}
