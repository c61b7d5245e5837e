//! The http and otlp sinks against real loopback receivers: batch contents
//! and sizes, time-based flushing, retry then recovery with exact counters,
//! a hanging receiver that never blocks the producer, and an https OTLP
//! endpoint refused before any connection (the OTLP payloads themselves
//! are checked in `sinks_otlp.rs`).

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tapio::agent::metrics::Metrics;
use tapio::agent::sinks::http::{http_sink, PostPolicy};
use tapio::agent::sinks::SinkHandle;
use tapio::wire::Emitted;

fn occ(n: u32) -> Arc<Emitted> {
    refused_occurrence(n, 4242, None)
}

fn policy() -> PostPolicy {
    PostPolicy {
        max_batch: 3,
        max_wait: Duration::from_secs(30),
        attempts: 4,
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
        retry_after_cap: Duration::from_secs(1),
    }
}

/// An http sink posting to `path` on `rx`, running; and its metrics.
fn spawn_http(rx: &Receiver, path: &str, policy: PostPolicy) -> (SinkHandle, Arc<Metrics>) {
    let metrics = Metrics::new();
    let sink = http_sink(&rx.url(path), policy, metrics.clone()).unwrap();
    let h = SinkHandle::spawn(Box::new(sink), metrics.clone()).unwrap();
    (h, metrics)
}

fn ports_of(body: &[u8]) -> Vec<u64> {
    let v: Vec<serde_json::Value> = serde_json::from_slice(body).expect("a JSON array");
    v.iter()
        .map(|o| o["data"]["dport"].as_u64().unwrap())
        .collect()
}

#[test]
fn batches_by_size_and_flushes_the_rest_on_close() {
    let rx = Receiver::start(vec![], false);
    let (h, metrics) = spawn_http(&rx, "/ingest", policy());
    for i in 1..=7 {
        h.offer(occ(i));
    }
    h.close();
    let bodies = rx.bodies();
    let batches: Vec<Vec<u64>> = bodies.iter().map(|b| ports_of(b)).collect();
    assert_eq!(batches.concat(), (1..=7).collect::<Vec<u64>>());
    assert!(batches.iter().all(|b| b.len() <= 3), "{batches:?}");
    assert_eq!(batches.len(), 3, "{batches:?}");
    let (path, head, _) = rx.requests.lock().unwrap()[0].clone();
    assert_eq!(path, "/ingest");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let text = metrics.encode();
    // Occurrences, not requests: 3 batches held all 7.
    assert_eq!(sink_writes(&text, "http", "ok"), 7);
    assert_eq!(sink_drops(&text, "http", "send_failed"), 0);
}

#[test]
fn a_partial_batch_is_sent_when_it_has_waited_long_enough() {
    let rx = Receiver::start(vec![], false);
    let p = PostPolicy {
        max_batch: 100,
        max_wait: Duration::from_millis(200),
        ..policy()
    };
    let (h, _metrics) = spawn_http(&rx, "/", p);
    h.offer(occ(1));
    h.offer(occ(2));
    assert!(
        rx.wait_requests(1, Duration::from_secs(10)),
        "no time-based flush"
    );
    assert_eq!(ports_of(&rx.bodies()[0]), vec![1, 2]);
    h.close();
    assert_eq!(rx.bodies().len(), 1);
}

#[test]
fn failures_are_retried_then_counted_exactly_when_the_receiver_recovers() {
    let rx = Receiver::start(vec![503, 502], false);
    let (h, metrics) = spawn_http(&rx, "/", policy());
    for i in 1..=3 {
        h.offer(occ(i));
    }
    h.close();
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 3, "two failures then one success");
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "a retry resends the same batch"
    );
    let text = metrics.encode();
    // Occurrences: two failed attempts at the batch of 3, then it went through.
    assert_eq!(sink_writes(&text, "http", "error"), 6);
    assert_eq!(sink_writes(&text, "http", "ok"), 3);
    assert_eq!(sink_drops(&text, "http", "send_failed"), 0);

    // A receiver that rejects (4xx) is not retried: dropped and counted.
    let rx = Receiver::start(vec![400], false);
    let (h, metrics) = spawn_http(&rx, "/", policy());
    for i in 1..=3 {
        h.offer(occ(i));
    }
    h.close();
    assert_eq!(rx.bodies().len(), 1);
    assert_eq!(sink_drops(&metrics.encode(), "http", "rejected"), 3);
}

#[test]
fn a_hanging_receiver_never_blocks_the_producer_and_drops_are_counted() {
    let rx = Receiver::start(vec![], true);
    let metrics = Metrics::new();
    let p = PostPolicy {
        max_batch: 10,
        attempts: 1,
        request_timeout: Duration::from_millis(300),
        ..policy()
    };
    let h = SinkHandle::spawn_with_capacity(
        Box::new(http_sink(&rx.url("/"), p, metrics.clone()).unwrap()),
        metrics.clone(),
        64,
    )
    .unwrap();
    let start = Instant::now();
    let n = 5000;
    for i in 0..n {
        h.offer(occ(i));
    }
    let offering = start.elapsed();
    h.close();
    let text = metrics.encode();
    let full = sink_drops(&text, "http", "queue_full");
    let failed = sink_drops(&text, "http", "send_failed");
    assert!(full > 0, "{text}");
    // Every occurrence is accounted for: dropped at the queue or by a failed send.
    assert_eq!(full + failed, u64::from(n), "{text}");
    assert!(rx.wait_requests(1, Duration::from_secs(5)));
    // Not a timing assertion on the sink: a producer that blocked would
    // have waited for at least one 300 ms request timeout per batch.
    assert!(offering < Duration::from_secs(30), "{offering:?}");
}

#[test]
fn otlp_https_endpoint_is_refused_before_any_connection() {
    let rx = Receiver::start(vec![], false);
    let out = std::process::Command::new(tapio_bin())
        .args([
            "agent",
            "--config",
            "/dev/null",
            "--sink",
            "otlp",
            "--otlp-endpoint",
        ])
        .arg(format!("https://{}", rx.addr))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("https is not supported"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn retries_end_at_the_shutdown_deadline_and_what_is_left_is_counted() {
    use tapio::agent::sinks::{account_undelivered, Shutdown};
    // Every request fails with 503: the batch is retried, never delivered.
    let rx = Receiver::start(vec![503; 10_000], false);
    let metrics = Metrics::new();
    let p = PostPolicy {
        attempts: 10_000,
        ..policy()
    };
    let shutdown = Shutdown::new();
    let h = SinkHandle::spawn_with(
        Box::new(http_sink(&rx.url("/"), p, metrics.clone()).unwrap()),
        metrics.clone(),
        64,
        shutdown.clone(),
    )
    .unwrap();
    let ledger = h.ledger();
    for i in 1..=7 {
        h.offer(occ(i));
    }
    assert!(rx.wait_requests(2, Duration::from_secs(10)), "retrying");
    shutdown.begin(Duration::from_millis(300));
    // Returns: 10,000 attempts would take minutes; the deadline ends them.
    h.close();
    let report = account_undelivered(&metrics, &[ledger]);
    let text = metrics.encode();
    assert_eq!(report[0].total(), 7, "{report:?}");
    assert_eq!(sink_drops(&text, "http", "shutdown_timeout"), 7, "{text}");
    assert_eq!(sink_drops(&text, "http", "send_failed"), 0, "{text}");
    assert_eq!(sink_writes(&text, "http", "ok"), 0, "{text}");
    // Attempts stopped: far fewer requests than the policy allowed.
    let sent = rx.requests.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        rx.requests.lock().unwrap().len(),
        sent,
        "no retry after the deadline"
    );
}
