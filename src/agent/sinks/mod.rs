//! Sink fan-out. Each sink runs on its own thread behind a bounded queue.
//!
//! While the agent runs the producer only ever `try_send`s, so a slow or
//! dead sink can never block the pipeline: overflow drops the newest
//! occurrence and counts it in `tapio_sink_drops_total{sink,reason="queue_full"}`.
//! Once the shutdown budget has started ([`Shutdown`]), nothing is dropped
//! while the budget lasts: what a queue cannot take yet waits in that
//! sink's backlog, and [`deliver_backlogs`] feeds every sink as it makes
//! room (all at once, so one stuck sink never starves the others). Each
//! sink stops at the deadline, and whatever it has not delivered by then
//! (backlog, queued, buffered or in flight) is counted as
//! `reason="shutdown_timeout"` by [`account_undelivered`]. A sink thread
//! stuck in a write that never returns (a stdout pipe nobody reads, a
//! black-holed endpoint) is abandoned, never waited for: the process exits
//! around it. Serialisation and I/O happen on the sink threads: an
//! occurrence reaches every sink as one shared [`Emitted`] (typed
//! evidence), and its JSON text is rendered once, by the first sink that
//! needs it, then reused by every other ([`Emitted::json`]).
//!
//! Counting, the same for every sink: `tapio_sink_writes_total{sink,result}`
//! counts OCCURRENCES (`ok`: delivered; `error`: in a failed write attempt,
//! once per attempt), and `tapio_sink_drops_total{sink,reason}` counts each
//! occurrence given up, once. So per sink, offered = writes{ok} + drops.
//! The handle keeps `tapio_sink_queue_depth{sink}` (what waits in the
//! queue) current. This module does not know any destination: no I/O here.

pub mod controller;
pub mod file;
pub mod http;
pub mod otlp;
pub mod retention;
pub mod stdout;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use crate::agent::metrics::{Metrics, SinkLabel};
pub use crate::agent::pipeline::Shutdown;
use crate::wire::Emitted;

/// Most occurrences waiting for one sink.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most occurrences a sink takes from its queue per write.
pub const MAX_BATCH: usize = 256;
/// Longest a sink runner waits for input before it looks at the budget.
const RUNNER_POLL: Duration = Duration::from_millis(100);
/// How long past the deadline `close` waits for a sink thread to notice it.
const CLOSE_GRACE: Duration = Duration::from_millis(50);
/// Drop reasons every sink can emit (initialised to 0 at start).
const COMMON_DROP_REASONS: [&str; 3] = ["queue_full", "sink_stopped", "shutdown_timeout"];

/// A destination for occurrences. Implementations own their I/O and count
/// their writes and failures (see the module docs for how).
pub trait Sink: Send {
    fn name(&self) -> &'static str;
    /// Takes occurrences from the queue: writes them, or buffers them for a
    /// batched write.
    fn accept(&mut self, batch: &[Arc<Emitted>]);
    /// How long the runner may wait for input before calling `tick`
    /// (time-based batching); `None` waits for input only.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }
    fn tick(&mut self) {}
    /// Called once when the queue closes (shutdown): write what is buffered.
    /// A sink that retries must give up at the [`Shutdown`] deadline and
    /// leave what it could not send uncounted (the runner counts it).
    fn close(&mut self) {}
    /// Hands the sink the agent's shutdown budget before its thread starts;
    /// sinks that wait (retries, backoff) bound their waits by it.
    fn attach_shutdown(&mut self, _shutdown: Shutdown) {}
    /// Drop reasons this sink can emit besides the common ones, so their
    /// series exist (at 0) from the start.
    fn drop_reasons(&self) -> &'static [&'static str] {
        &[]
    }
}

/// What the agent needs about one sink after its handle is gone: how much
/// was offered and whether its thread ended.
#[derive(Debug)]
pub struct SinkLedger {
    pub name: &'static str,
    offered: AtomicU64,
    finished: AtomicBool,
}

impl SinkLedger {
    pub fn offered(&self) -> u64 {
        self.offered.load(Ordering::Relaxed)
    }

    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }
}

/// The producer side of one running sink.
pub struct SinkHandle {
    name: &'static str,
    tx: Option<SyncSender<Arc<Emitted>>>,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
    ledger: Arc<SinkLedger>,
    shutdown: Shutdown,
    /// During shutdown: offered, waiting for room in the queue.
    backlog: RefCell<VecDeque<Arc<Emitted>>>,
    /// Raised before each send (lowered again if it fails) and lowered by
    /// the sink thread per occurrence taken, so it never goes negative.
    depth: Gauge,
}

impl SinkHandle {
    /// Starts `sink` on its own thread, with no shutdown budget (tests).
    pub fn spawn(sink: Box<dyn Sink>, metrics: Arc<Metrics>) -> std::io::Result<SinkHandle> {
        Self::spawn_with(sink, metrics, QUEUE_CAPACITY, Shutdown::new())
    }

    pub fn spawn_with_capacity(
        sink: Box<dyn Sink>,
        metrics: Arc<Metrics>,
        capacity: usize,
    ) -> std::io::Result<SinkHandle> {
        Self::spawn_with(sink, metrics, capacity, Shutdown::new())
    }

    /// Starts `sink` on its own thread, bound by the agent's `shutdown`.
    pub fn spawn_with(
        mut sink: Box<dyn Sink>,
        metrics: Arc<Metrics>,
        capacity: usize,
        shutdown: Shutdown,
    ) -> std::io::Result<SinkHandle> {
        let name = sink.name();
        // Known label sets exist from the start, so absent() and rate()
        // work before the first failure.
        for result in [true, false] {
            metrics.sink_write(name, result, 0);
        }
        for reason in COMMON_DROP_REASONS.iter().chain(sink.drop_reasons()) {
            metrics.sink_drop(name, reason, 0);
        }
        metrics.init_sink(name, capacity);
        let depth = metrics
            .sink_queue_depth
            .get_or_create(&SinkLabel { sink: name.into() })
            .clone();
        let taken = depth.clone();
        sink.attach_shutdown(shutdown.clone());
        let ledger = Arc::new(SinkLedger {
            name,
            offered: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        });
        let (tx, rx) = sync_channel(capacity);
        let (l, s) = (ledger.clone(), shutdown.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || {
                run_sink(sink.as_mut(), rx, &s, &taken);
                l.finished.store(true, Ordering::Release);
            })?;
        Ok(SinkHandle {
            name,
            tx: Some(tx),
            thread: Some(thread),
            metrics,
            ledger,
            shutdown,
            backlog: RefCell::new(VecDeque::new()),
            depth,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What the agent reads after shutdown (see [`account_undelivered`]).
    pub fn ledger(&self) -> Arc<SinkLedger> {
        self.ledger.clone()
    }

    /// While the agent runs: never blocks; a full queue drops `occ` and
    /// counts it. During shutdown: never drops while the budget lasts; what
    /// the queue cannot take yet waits in this handle's backlog, which
    /// [`deliver_backlogs`] and [`SinkHandle::close`] move on as the sink
    /// makes room. Offers never wait, so one stuck sink cannot keep the
    /// others from getting everything.
    pub fn offer(&self, occ: Arc<Emitted>) {
        let Some(tx) = &self.tx else { return };
        self.ledger.offered.fetch_add(1, Ordering::Relaxed);
        if self.shutdown.started() {
            self.backlog.borrow_mut().push_back(occ);
            self.pump();
            return;
        }
        self.depth.inc();
        match tx.try_send(occ) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.depth.dec();
                self.metrics.sink_drop(self.name, "queue_full", 1)
            }
            Err(TrySendError::Disconnected(_)) => {
                self.depth.dec();
                self.metrics.sink_drop(self.name, "sink_stopped", 1)
            }
        }
    }

    /// Moves the backlog into the queue as far as it has room, without
    /// waiting. Returns true when nothing is left waiting.
    pub fn pump(&self) -> bool {
        let Some(tx) = &self.tx else { return true };
        let mut backlog = self.backlog.borrow_mut();
        while let Some(o) = backlog.pop_front() {
            self.depth.inc();
            match tx.try_send(o) {
                Ok(()) => {}
                Err(TrySendError::Full(o)) => {
                    self.depth.dec();
                    backlog.push_front(o);
                    return false;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.depth.dec();
                    // The sink thread is gone: it stops by itself at the
                    // deadline, so past it this is the budget's doing.
                    let reason = if self.shutdown.expired() {
                        "shutdown_timeout"
                    } else {
                        "sink_stopped"
                    };
                    let n = backlog.len() as u64 + 1;
                    backlog.clear();
                    self.metrics.sink_drop(self.name, reason, n);
                    return true;
                }
            }
        }
        true
    }

    /// Closes the queue and waits for the sink to write what it holds:
    /// until it is done without a shutdown budget (tests), or at most until
    /// the budget's deadline, after which a stuck sink thread is abandoned
    /// (what it and the backlog still hold is counted by
    /// [`account_undelivered`]).
    pub fn close(mut self) {
        deliver_backlogs(std::slice::from_ref(&self));
        self.backlog.borrow_mut().clear();
        self.tx.take();
        let Some(t) = self.thread.take() else { return };
        match self.shutdown.deadline() {
            None => {
                let _ = t.join();
            }
            Some(deadline) => {
                // A sink notices the deadline between two writes; a short
                // grace lets one that is about to finish do so, so the
                // agent's count of what it left is exact.
                let until = deadline + CLOSE_GRACE;
                while !t.is_finished() && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if t.is_finished() {
                    let _ = t.join();
                }
                // Otherwise dropping the handle detaches the thread: it may
                // be blocked in a write that never returns.
            }
        }
    }
}

/// Moves every sink's backlog into its queue as each makes room, all at
/// once, until all are empty or the shutdown budget runs out. Returns at
/// once while the agent runs (there are no backlogs then).
pub fn deliver_backlogs(sinks: &[SinkHandle]) {
    let mut pause = Duration::from_micros(100);
    loop {
        let mut done = true;
        for s in sinks {
            done &= s.pump();
        }
        if done {
            return;
        }
        let Some(shutdown) = sinks.first().map(|s| &s.shutdown) else {
            return;
        };
        if !shutdown.started() || shutdown.expired() {
            return;
        }
        // std's SyncSender cannot wait on several queues: poll, backing off
        // to 5 ms, bounded by the deadline.
        shutdown.sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

fn run_sink(sink: &mut dyn Sink, rx: Receiver<Arc<Emitted>>, shutdown: &Shutdown, depth: &Gauge) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if shutdown.expired() {
            // Out of budget: what is still queued or buffered is counted as
            // undelivered by the agent, not written late.
            return;
        }
        let wait = sink.tick_interval().unwrap_or(RUNNER_POLL).min(RUNNER_POLL);
        let first = match rx.recv_timeout(wait) {
            Ok(o) => o,
            Err(RecvTimeoutError::Timeout) => {
                if sink.tick_interval().is_some() {
                    sink.tick();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        depth.dec_by(batch.len() as i64);
        sink.accept(&batch);
        batch.clear();
    }
    sink.close();
}

/// One sink's losses over the agent's life, for the final log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub sink: &'static str,
    /// (reason, occurrences), reasons with a non-zero count only.
    pub by_reason: Vec<(String, u64)>,
}

impl Undelivered {
    pub fn total(&self) -> u64 {
        self.by_reason.iter().map(|(_, n)| n).sum()
    }
}

/// Sums `tapio_sink_drops_total` of `sink` by reason, and its delivered
/// occurrences, from the exposition (so new reasons need no list here).
fn sink_counts(metrics: &Metrics, sink: &str) -> (Vec<(String, u64)>, u64) {
    let text = metrics.encode();
    let drops_prefix = format!("tapio_sink_drops_total{{sink=\"{sink}\",reason=\"");
    let ok_series = format!("tapio_sink_writes_total{{sink=\"{sink}\",result=\"ok\"}}");
    let mut drops = Vec::new();
    let mut ok = 0;
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        if let Some(rest) = series.strip_prefix(&drops_prefix) {
            let reason = rest.split('"').next().unwrap_or_default();
            drops.push((reason.to_string(), v as u64));
        } else if series == ok_series {
            ok = v as u64;
        }
    }
    (drops, ok)
}

/// After shutdown: counts what each sink was offered but neither delivered
/// nor dropped (still queued, buffered, or in a write that did not finish
/// by the deadline) as `shutdown_timeout`, then reports every sink's
/// drops by reason. An abandoned write that completes after this call is
/// reported as undelivered: it was not confirmed within the budget.
pub fn account_undelivered(metrics: &Metrics, ledgers: &[Arc<SinkLedger>]) -> Vec<Undelivered> {
    let mut out = Vec::new();
    for l in ledgers {
        let (drops, ok) = sink_counts(metrics, l.name);
        let resolved = ok + drops.iter().map(|(_, n)| n).sum::<u64>();
        let missing = l.offered().saturating_sub(resolved);
        if missing > 0 {
            metrics.sink_drop(l.name, "shutdown_timeout", missing);
        }
        let (drops, _) = sink_counts(metrics, l.name);
        out.push(Undelivered {
            sink: l.name,
            by_reason: drops.into_iter().filter(|(_, n)| *n > 0).collect(),
        });
    }
    out
}

/// Findings dropped before they became occurrences (`sink="pipeline"`: a
/// full findings queue, or the budget ending first), if any, reported like
/// a sink so the final line names them too.
pub fn pipeline_drops(metrics: &Metrics) -> Option<Undelivered> {
    let (drops, _) = sink_counts(metrics, "pipeline");
    let by_reason: Vec<_> = drops.into_iter().filter(|(_, n)| *n > 0).collect();
    (!by_reason.is_empty()).then_some(Undelivered {
        sink: "pipeline",
        by_reason,
    })
}

/// `file=0 http=300(shutdown_timeout=300)`: per sink, occurrences not
/// delivered over the agent's life, with the reasons.
pub fn describe_undelivered(report: &[Undelivered]) -> String {
    report
        .iter()
        .map(|u| {
            if u.by_reason.is_empty() {
                format!("{}=0", u.sink)
            } else {
                let reasons: Vec<String> = u
                    .by_reason
                    .iter()
                    .map(|(r, n)| format!("{r}={n}"))
                    .collect();
                format!("{}={}({})", u.sink, u.total(), reasons.join(","))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// A sink that blocks until released, to prove producers never block.
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<usize>>,
    }

    impl Sink for Gate {
        fn name(&self) -> &'static str {
            "gate"
        }
        fn accept(&mut self, batch: &[Arc<Emitted>]) {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            *self.written.lock().unwrap() += batch.len();
        }
    }

    /// A connection-refused occurrence as the emitter builds it: `n` is
    /// its port and count, and sets its `comm` to `n % 16` bytes (so
    /// sizes differ).
    pub(crate) fn refused(id: ulid::Ulid, timestamp_ns: u64, n: u32) -> Emitted {
        use crate::wire::evidence::{Comm, Conn, Evidence, Refused};
        let mut comm = [0u8; 16];
        comm[..(n % 16) as usize].fill(b'x');
        Emitted::new(
            id,
            crate::wire::Severity::Warning,
            crate::wire::Outcome::Failure,
            Evidence::ConnectionRefused(Refused {
                conn: Conn {
                    comm: Comm(comm),
                    netns: 4026531840,
                    ..Conn::loopback(4242, n as u16)
                },
                count: n,
                cause: "rst",
            }),
            None,
            1,
            timestamp_ns,
        )
    }

    pub(crate) fn occ(n: u32) -> Arc<Emitted> {
        Arc::new(refused(
            ulid::Ulid::from_parts(1_700_000_000_000 + u64::from(n), u128::from(n)),
            1_700_000_000_000_000_000 + u64::from(n),
            n,
        ))
    }

    #[test]
    fn full_queue_drops_newest_and_counts_without_blocking() {
        let metrics = Metrics::new();
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let written = Arc::new(Mutex::new(0));
        let h = SinkHandle::spawn_with_capacity(
            Box::new(Gate {
                open: open.clone(),
                written: written.clone(),
            }),
            metrics.clone(),
            4,
        )
        .unwrap();
        // One offer, taken by the sink thread into a batch of its own (it
        // then blocks in accept); of the 99 that follow, the queue holds 4
        // and 95 drop. Waiting for the queue to drain to 0 first makes the
        // split exact: offering while the thread still forms its batch lets
        // it take any number of them.
        h.offer(occ(0));
        for _ in 0..1000 {
            if metrics
                .encode()
                .contains("tapio_sink_queue_depth{sink=\"gate\"} 0")
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for i in 1..100 {
            h.offer(occ(i));
        }
        let text = metrics.encode();
        let dropped: u64 = text
            .lines()
            .find(|l| l.starts_with("tapio_sink_drops_total{sink=\"gate\",reason=\"queue_full\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert_eq!(dropped, 95, "{text}");
        *open.0.lock().unwrap() = true;
        open.1.notify_all();
        h.close();
        assert_eq!(*written.lock().unwrap() as u64 + dropped, 100);
    }

    type Latch = Arc<(Mutex<bool>, Condvar)>;

    fn gate() -> (Gate, Latch, Arc<Mutex<usize>>) {
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let written = Arc::new(Mutex::new(0));
        (
            Gate {
                open: open.clone(),
                written: written.clone(),
            },
            open,
            written,
        )
    }

    fn release(open: &(Mutex<bool>, Condvar)) {
        *open.0.lock().unwrap() = true;
        open.1.notify_all();
    }

    #[test]
    fn during_shutdown_nothing_is_dropped_while_the_budget_lasts() {
        let metrics = Metrics::new();
        let (g, open, written) = gate();
        let shutdown = Shutdown::new();
        let h = SinkHandle::spawn_with(Box::new(g), metrics.clone(), 4, shutdown.clone()).unwrap();
        // A budget far longer than this test: only the gate decides.
        shutdown.begin(Duration::from_secs(600));
        let opener = {
            let open = open.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                release(&open);
            })
        };
        for i in 0..100 {
            h.offer(occ(i));
        }
        h.close();
        opener.join().unwrap();
        assert_eq!(*written.lock().unwrap(), 100);
        for reason in ["queue_full", "shutdown_timeout"] {
            let n = metrics
                .sink_drops
                .get_or_create(&crate::agent::metrics::SinkReason {
                    sink: "gate".into(),
                    reason: reason.into(),
                })
                .get();
            assert_eq!(n, 0, "{reason}");
        }
    }

    #[test]
    fn at_the_deadline_a_stuck_sink_is_abandoned_and_all_it_held_is_counted() {
        let metrics = Metrics::new();
        let (g, open, written) = gate();
        let shutdown = Shutdown::new();
        let h = SinkHandle::spawn_with(Box::new(g), metrics.clone(), 4, shutdown.clone()).unwrap();
        let ledger = h.ledger();
        for i in 0..10 {
            h.offer(occ(i));
        }
        shutdown.begin(Duration::from_millis(200));
        for i in 10..30 {
            h.offer(occ(i));
        }
        // Returns although the sink never will: bounded by the budget.
        h.close();
        assert!(shutdown.expired());
        assert!(!ledger.finished());
        let report = account_undelivered(&metrics, std::slice::from_ref(&ledger));
        assert_eq!(ledger.offered(), 30);
        assert_eq!(report.len(), 1);
        // Nothing was written: all 30 are named, by reason.
        assert_eq!(report[0].total(), 30, "{report:?}");
        let text = describe_undelivered(&report);
        assert!(text.starts_with("gate=30("), "{text}");
        assert!(text.contains("shutdown_timeout="), "{text}");
        // Let the abandoned thread end.
        release(&open);
        let end = Instant::now() + Duration::from_secs(30);
        while !ledger.finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(*written.lock().unwrap() <= 30);
    }

    /// A sink that writes instantly and counts like a real one.
    struct Count {
        metrics: Arc<Metrics>,
        written: Arc<Mutex<usize>>,
    }

    impl Sink for Count {
        fn name(&self) -> &'static str {
            "count"
        }
        fn accept(&mut self, batch: &[Arc<Emitted>]) {
            *self.written.lock().unwrap() += batch.len();
            self.metrics.sink_write("count", true, batch.len() as u64);
        }
    }

    #[test]
    fn during_shutdown_a_stuck_sink_does_not_starve_the_others() {
        let metrics = Metrics::new();
        let shutdown = Shutdown::new();
        let (g, open, _) = gate();
        let stuck =
            SinkHandle::spawn_with(Box::new(g), metrics.clone(), 4, shutdown.clone()).unwrap();
        let written = Arc::new(Mutex::new(0));
        let count = Count {
            metrics: metrics.clone(),
            written: written.clone(),
        };
        let live =
            SinkHandle::spawn_with(Box::new(count), metrics.clone(), 4, shutdown.clone()).unwrap();
        let ledgers = [stuck.ledger(), live.ledger()];
        shutdown.begin(Duration::from_millis(1500));
        // What the emitter does: every occurrence to every sink, in order.
        let sinks = vec![stuck, live];
        for i in 0..200 {
            for s in &sinks {
                s.offer(occ(i));
            }
        }
        deliver_backlogs(&sinks);
        for s in sinks {
            s.close();
        }
        assert_eq!(
            *written.lock().unwrap(),
            200,
            "the live sink got everything"
        );
        let report = account_undelivered(&metrics, &ledgers);
        assert_eq!(report[0].total(), 200, "{report:?}");
        assert_eq!(report[1].total(), 0, "{report:?}");
        release(&open);
    }

    #[test]
    fn the_final_line_names_every_sink_and_its_reasons() {
        let r = vec![
            Undelivered {
                sink: "file",
                by_reason: vec![],
            },
            Undelivered {
                sink: "http",
                by_reason: vec![("queue_full".into(), 5), ("shutdown_timeout".into(), 300)],
            },
        ];
        assert_eq!(
            describe_undelivered(&r),
            "file=0 http=305(queue_full=5,shutdown_timeout=300)"
        );
        let m = Metrics::new();
        assert_eq!(pipeline_drops(&m), None);
        m.sink_drop("pipeline", "shutdown_timeout", 2);
        let p = pipeline_drops(&m).unwrap();
        assert_eq!(describe_undelivered(&[p]), "pipeline=2(shutdown_timeout=2)");
    }

    /// A sink that reports when it has taken its first batch, then blocks
    /// until released: the queue behind it is then exactly what was offered.
    struct Held {
        entered: Arc<(Mutex<bool>, Condvar)>,
        open: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Sink for Held {
        fn name(&self) -> &'static str {
            "held"
        }
        fn accept(&mut self, _batch: &[Arc<Emitted>]) {
            *self.entered.0.lock().unwrap() = true;
            self.entered.1.notify_all();
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        }
    }

    fn sample(text: &str, series: &str) -> Option<i64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn queue_depth_gauge_follows_the_queue() {
        let metrics = Metrics::new();
        let entered = Arc::new((Mutex::new(false), Condvar::new()));
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let h = SinkHandle::spawn_with_capacity(
            Box::new(Held {
                entered: entered.clone(),
                open: open.clone(),
            }),
            metrics.clone(),
            4,
        )
        .unwrap();
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "tapio_sink_queue_capacity{sink=\"held\"}"),
            Some(4)
        );
        assert_eq!(
            sample(&text, "tapio_sink_queue_depth{sink=\"held\"}"),
            Some(0)
        );
        h.offer(occ(0));
        {
            let (lock, cv) = &*entered;
            let (g, timeout) = cv
                .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(10), |e| !*e)
                .unwrap();
            assert!(
                *g && !timeout.timed_out(),
                "the sink never took its first batch"
            );
        }
        // The sink thread holds occ(0); 4 of these 10 fit, 6 drop.
        for i in 1..=10 {
            h.offer(occ(i));
        }
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "tapio_sink_queue_depth{sink=\"held\"}"),
            Some(4),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "tapio_sink_drops_total{sink=\"held\",reason=\"queue_full\"}"
            ),
            Some(6)
        );
        *open.0.lock().unwrap() = true;
        open.1.notify_all();
        h.close();
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "tapio_sink_queue_depth{sink=\"held\"}"),
            Some(0),
            "{text}"
        );
    }
}
