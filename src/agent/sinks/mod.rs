//! Sink fan-out. Each sink runs on its own thread behind a bounded queue;
//! the producer only ever `try_send`s, so a slow or dead sink can never
//! block the pipeline. Overflow drops the newest occurrence and counts it in
//! `tapio_sink_drops_total{sink,reason="queue_full"}`. Serialisation and I/O
//! happen on the sink threads.
//!
//! Each sink counts its own writes in `tapio_sink_writes_total{sink,result}`
//! (one per I/O operation: a line batch, a file, a request) and its own
//! failures in `tapio_sink_drops_total{sink,reason}`. The handle keeps
//! `tapio_sink_queue_depth{sink}` (what waits in the queue) current.

pub mod controller;
pub mod file;
pub mod http;
pub mod otlp;
pub mod stdout;

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use crate::agent::metrics::{Metrics, SinkLabel};
use crate::wire::Occurrence;

/// Most occurrences waiting for one sink.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most occurrences a sink takes from its queue per write.
pub const MAX_BATCH: usize = 256;

/// A destination for occurrences. Implementations own their I/O and count
/// their writes and failures.
pub trait Sink: Send {
    fn name(&self) -> &'static str;
    /// Takes occurrences from the queue: writes them, or buffers them for a
    /// batched write.
    fn accept(&mut self, batch: &[Arc<Occurrence>]);
    /// How long the runner may wait for input before calling `tick`
    /// (time-based batching); `None` waits for input only.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }
    fn tick(&mut self) {}
    /// Called once when the queue closes (shutdown): write what is buffered.
    fn close(&mut self) {}
}

/// The producer side of one running sink.
pub struct SinkHandle {
    name: &'static str,
    tx: Option<SyncSender<Arc<Occurrence>>>,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
    /// Raised before each send (lowered again if it fails) and lowered by
    /// the sink thread per occurrence taken, so it never goes negative.
    depth: Gauge,
}

impl SinkHandle {
    /// Starts `sink` on its own thread.
    pub fn spawn(sink: Box<dyn Sink>, metrics: Arc<Metrics>) -> std::io::Result<SinkHandle> {
        Self::spawn_with_capacity(sink, metrics, QUEUE_CAPACITY)
    }

    pub fn spawn_with_capacity(
        mut sink: Box<dyn Sink>,
        metrics: Arc<Metrics>,
        capacity: usize,
    ) -> std::io::Result<SinkHandle> {
        let name = sink.name();
        metrics.init_sink(name, capacity);
        let depth = metrics
            .sink_queue_depth
            .get_or_create(&SinkLabel { sink: name.into() })
            .clone();
        let (tx, rx) = sync_channel(capacity);
        let taken = depth.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || run_sink(sink.as_mut(), rx, &taken))?;
        Ok(SinkHandle {
            name,
            tx: Some(tx),
            thread: Some(thread),
            metrics,
            depth,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Never blocks. A full queue drops `occ` and counts it.
    pub fn offer(&self, occ: Arc<Occurrence>) {
        let Some(tx) = &self.tx else { return };
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

    /// Closes the queue and waits for the sink to write what it holds.
    pub fn close(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_sink(sink: &mut dyn Sink, rx: Receiver<Arc<Occurrence>>, depth: &Gauge) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = match sink.tick_interval() {
            Some(every) => match rx.recv_timeout(every) {
                Ok(o) => o,
                Err(RecvTimeoutError::Timeout) => {
                    sink.tick();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(o) => o,
                Err(_) => break,
            },
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
        fn accept(&mut self, batch: &[Arc<Occurrence>]) {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            *self.written.lock().unwrap() += batch.len();
        }
    }

    pub(crate) fn occ(n: u32) -> Arc<Occurrence> {
        Arc::new(Occurrence::new(
            ulid::Ulid::from_parts(1_700_000_000_000 + u64::from(n), u128::from(n)),
            crate::wire::AnomalyType::ConnectionRefused,
            crate::wire::Severity::Warning,
            crate::wire::Outcome::Failure,
            format!("m{n}"),
            &serde_json::json!({"dport": n}),
            1,
            1_700_000_000_000_000_000 + u64::from(n),
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
        // The sink thread may hold at most one batch (of up to 4) while
        // blocked, and the queue 4 more: of 100 offers, at least 92 drop.
        for i in 0..100 {
            h.offer(occ(i));
        }
        let text = metrics.encode();
        let dropped: u64 = text
            .lines()
            .find(|l| l.starts_with("tapio_sink_drops_total{sink=\"gate\",reason=\"queue_full\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(dropped >= 92, "{text}");
        *open.0.lock().unwrap() = true;
        open.1.notify_all();
        h.close();
        assert_eq!(*written.lock().unwrap() as u64 + dropped, 100);
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
        fn accept(&mut self, _batch: &[Arc<Occurrence>]) {
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
