//! The findings queue and the emitter thread: producers (the drain
//! thread, the node sampler) offer batches of findings without waiting;
//! the emitter turns each finding into an occurrence (container
//! attribution, drop reason names, id and wall-clock time) and offers it
//! to the sinks. Also the clock that maps kernel (monotonic) time to wall
//! time.
//!
//! The drain thread only decodes and classifies; everything that allocates
//! per occurrence or may touch the filesystem happens on the emitter.
//! This module must not hold shared agent state (that is
//! [`super::shared`]) nor wait for a sink while the agent runs.
//!
//! Shutdown (SPEC §3): while the agent runs, nothing here ever waits for a
//! sink (a full queue drops and counts). Once the stop signal has set the
//! [`Shutdown`] budget, what is already classified is still delivered:
//! producers wait for room in the findings queue, and each sink's share
//! waits in that sink's backlog until it has room (see `sinks`), but never
//! past the budget's deadline; whatever misses it is counted as
//! `reason="shutdown_timeout"`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use super::shared::Shutdown;
use crate::agent::attribution::Attributor;
use crate::agent::classify::Finding;
use crate::agent::kernel_enums::{DropReasonNames, VMLINUX_BTF};
use crate::agent::metrics::{AnomalyLabels, Metrics, TypeLabel};
use crate::agent::sinks::SinkHandle;
use crate::wire::evidence::Container;
use crate::wire::Emitted;

/// Most finding batches waiting for the emitter.
pub const FINDINGS_QUEUE: usize = 1024;

/// Offers a batch of findings to the emitter without blocking; a full queue
/// drops the batch and counts it.
pub fn send_findings(tx: &SyncSender<Vec<Finding>>, batch: Vec<Finding>, metrics: &Metrics) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    match tx.try_send(batch) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => metrics.sink_drop("pipeline", "queue_full", n),
        Err(TrySendError::Disconnected(_)) => metrics.sink_drop("pipeline", "stopped", n),
    }
}

/// Like [`send_findings`] while the agent runs; once the shutdown budget
/// has started, waits for queue space until its deadline, so the
/// classifiers' final flush reaches the emitter. What misses the deadline
/// is counted as `sink="pipeline",reason="shutdown_timeout"`.
pub fn offer_findings(
    tx: &SyncSender<Vec<Finding>>,
    batch: Vec<Finding>,
    metrics: &Metrics,
    shutdown: &Shutdown,
) {
    if !shutdown.started() {
        return send_findings(tx, batch, metrics);
    }
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    let mut batch = batch;
    let mut pause = Duration::from_micros(100);
    loop {
        match tx.try_send(batch) {
            Ok(()) => return,
            Err(TrySendError::Disconnected(_)) => {
                return metrics.sink_drop("pipeline", "stopped", n);
            }
            Err(TrySendError::Full(b)) => {
                if shutdown.expired() {
                    return metrics.sink_drop("pipeline", "shutdown_timeout", n);
                }
                batch = b;
                // std's SyncSender has no stable send_timeout: poll, backing
                // off to at most 5 ms, bounded by the deadline.
                shutdown.sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
        }
    }
}

/// Wall clock = monotonic + offset, measured once at start (SPEC §2).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn measure() -> Clock {
        let mono = monotonic_ns() as i128;
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        Clock {
            offset_ns: wall - mono,
        }
    }

    pub fn with_offset(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    pub fn wall_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Builds the occurrence for a finding whose fact happened at `wall_ns`
/// (computed once by the caller, which also derives the id from it), in
/// `container` when attribution found one. The evidence moves in typed;
/// sinks render it.
pub fn occurrence(
    f: Finding,
    container: Option<Container>,
    id: ulid::Ulid,
    wall_ns: u64,
) -> Emitted {
    Emitted::new(
        id,
        f.severity,
        f.outcome,
        f.evidence,
        container,
        f.generation,
        wall_ns,
    )
}

/// How long the emitter waits for findings before it looks at the
/// shutdown budget again.
const EMITTER_POLL: Duration = Duration::from_millis(100);

/// Starts the emitter thread. It ends when every sender of `rx` is gone (or
/// the shutdown budget has run out), after closing every sink: each writes
/// what it holds, within the budget.
pub fn spawn_emitter(
    rx: Receiver<Vec<Finding>>,
    sinks: Vec<SinkHandle>,
    metrics: Arc<Metrics>,
    clock: Clock,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("emitter".into())
        .spawn(move || {
            let mut ids = crate::agent::ids::IdGen::new();
            // Container attribution reads /sys/fs/cgroup on a cache miss:
            // here, never on the drain thread.
            let mut attributor = Attributor::new("/sys/fs/cgroup".into());
            // The running kernel's drop reason names (its BTF, read once).
            let drop_reasons =
                DropReasonNames::load(Path::new(VMLINUX_BTF)).unwrap_or_else(|why| {
                    tracing::warn!("kernel drop reasons are reported by number only: {why}");
                    DropReasonNames::default()
                });
            // Batches taken after the deadline: bounded, so a producer that
            // keeps producing past the budget cannot keep the emitter alive.
            let mut late = 0usize;
            loop {
                if shutdown.expired() {
                    late += 1;
                    if late > FINDINGS_QUEUE {
                        break;
                    }
                }
                let batch = match rx.recv_timeout(EMITTER_POLL) {
                    Ok(b) => b,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if shutdown.expired() {
                            // A producer outlived the budget: stop waiting
                            // for it. Its later findings are never offered.
                            break;
                        }
                        continue;
                    }
                };
                // Offers never wait: during shutdown what a sink cannot take
                // yet waits in its backlog (delivered, or counted as
                // `shutdown_timeout`, when the sinks close).
                for mut f in batch {
                    let container = attributor.enrich(&mut f.evidence);
                    if let Some(failed) = f.evidence.connect_failed_mut() {
                        drop_reasons.enrich(failed);
                    }
                    // Once: the id's time part and the occurrence's
                    // timestamp are the same instant.
                    let wall = clock.wall_ns(f.mono_ns);
                    let id = ids.next(wall / 1_000_000);
                    let anomaly = f.anomaly();
                    metrics
                        .anomalies
                        .get_or_create(&AnomalyLabels {
                            observer: anomaly.observer().as_str().into(),
                            kind: TypeLabel(anomaly.as_str().into()),
                        })
                        .inc();
                    let occ = Arc::new(occurrence(f, container, id, wall));
                    for s in &sinks {
                        s.offer(occ.clone());
                    }
                    metrics.emitted.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Findings a producer queued but the budget left no time for:
            // never occurrences, but counted, not lost silently.
            let mut left = 0u64;
            for _ in 0..FINDINGS_QUEUE {
                match rx.try_recv() {
                    Ok(b) => left += b.len() as u64,
                    Err(_) => break,
                }
            }
            if left > 0 {
                metrics.sink_drop("pipeline", "shutdown_timeout", left);
            }
            // All sinks at once, so a stuck one cannot starve the others.
            crate::agent::sinks::deliver_backlogs(&sinks);
            for s in sinks {
                s.close();
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Outcome, Severity};

    #[test]
    fn occurrence_carries_generation_and_wall_time() {
        let mut f = finding();
        f.severity = Severity::Error;
        f.generation = 4;
        f.mono_ns = 1_000;
        let clock = Clock::with_offset(1_743_691_381_042_000_000 - 1_000);
        let wall = clock.wall_ns(f.mono_ns);
        let emitted = occurrence(f.clone(), None, ulid::Ulid::nil(), wall);
        // As a reader sees it.
        let o: crate::wire::Occurrence = serde_json::from_str(emitted.json().get()).unwrap();
        assert_eq!(o.timestamp, "2025-04-03T14:43:01.042Z");
        assert_eq!(o.timestamp_ns(), Some(1_743_691_381_042_000_000));
        assert_eq!(o.config_generation(), Some(4));
        assert_eq!(o.error.code, "CONNECTION_REFUSED");
        assert_eq!(o.severity, Severity::Error);
        assert_eq!(o.error.message, f.message());
        assert_eq!(o.data["dport"], 9);
    }

    fn finding() -> Finding {
        use crate::wire::evidence::{Conn, Evidence, Refused};
        Finding {
            severity: Severity::Warning,
            outcome: Outcome::Failure,
            evidence: Evidence::ConnectionRefused(Refused {
                conn: Conn::loopback(1, 9),
                count: 1,
                cause: "rst",
            }),
            generation: 1,
            mono_ns: 1,
        }
    }

    fn pipeline_drop(m: &Metrics, reason: &str) -> u64 {
        m.sink_drops
            .get_or_create(&crate::agent::metrics::SinkReason {
                sink: "pipeline".into(),
                reason: reason.into(),
            })
            .get()
    }

    #[test]
    fn findings_wait_for_room_only_after_stop_and_only_until_the_deadline() {
        let m = Metrics::new();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let running = Shutdown::new();
        offer_findings(&tx, vec![finding()], &m, &running);
        // Running: a full queue drops at once.
        offer_findings(&tx, vec![finding(), finding()], &m, &running);
        assert_eq!(pipeline_drop(&m, "queue_full"), 2);
        // Stopping: waits until the consumer makes room.
        let stopping = Shutdown::new();
        stopping.begin(Duration::from_secs(600));
        let consumer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let a = rx.recv().unwrap().len();
            (a, rx)
        });
        offer_findings(&tx, vec![finding(); 3], &m, &stopping);
        let (first, rx) = consumer.join().unwrap();
        assert_eq!(first, 1);
        assert_eq!(rx.try_recv().unwrap().len(), 3, "delivered, not dropped");
        // Out of budget: counted as shutdown_timeout.
        tx.try_send(vec![finding()]).unwrap();
        let expired = Shutdown::new();
        expired.begin(Duration::from_millis(50));
        offer_findings(&tx, vec![finding(); 4], &m, &expired);
        assert!(expired.expired());
        assert_eq!(pipeline_drop(&m, "shutdown_timeout"), 4);
        assert_eq!(pipeline_drop(&m, "queue_full"), 2);
    }
}
