//! The drain thread: one OS thread that owns every loaded object and ring.
//!
//! Per tick it waits on the rings' epoll fd (BPF submits with
//! `BPF_RB_NO_WAKEUP` until enough is queued, so a storm costs one wake-up
//! per tick, not per record), consumes at most `DRAIN_CAP` records, decodes
//! and classifies them, and hands findings to the emitter without blocking.
//! It does no I/O besides the rings, except rare carrier writes when config
//! changes and one counter read per second.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use libbpf_rs::{MapCore, RingBufferBuilder};

use super::loader::{load_object, object_sources, LoadedObject};
use crate::agent::abi::{self, TapioConfig, STAT_MAX};
use crate::agent::classify::Finding;
use crate::agent::decode::{decode, Fact};
use crate::agent::metrics::{Metrics, ObserverReason};
use crate::agent::pipeline::{monotonic_ns, offer_findings, Classifiers, Shared};
use crate::wire::{CompiledConfig, Observer};

/// Most records consumed per tick before classification runs.
pub const DRAIN_CAP: usize = 8192;
/// Longest wait for records; also the classification tick.
pub const TICK_MS: i32 = 100;
const STATS_EVERY_NS: u64 = 1_000_000_000;

/// What one tick pulled out of the rings.
#[derive(Default)]
struct Batch {
    facts: Vec<(Observer, Fact)>,
    events: [u64; 4],
    malformed: [u64; 4],
}

/// Starts the drain thread. Returns once every object has been loaded and
/// attached (or has failed with a reason); errors if none could be.
pub fn start(
    ebpf_dir: Option<std::path::PathBuf>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    findings: SyncSender<Vec<Finding>>,
    initial: CompiledConfig,
) -> anyhow::Result<JoinHandle<()>> {
    let (ready_tx, ready_rx) = sync_channel::<anyhow::Result<()>>(1);
    let handle = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            let objects = load_all(ebpf_dir.as_deref(), &shared);
            if objects.is_empty() {
                let _ = ready_tx.send(Err(anyhow::anyhow!(
                    "no observer could be loaded (see the log lines above for each reason)"
                )));
                return;
            }
            let _ = ready_tx.send(Ok(()));
            if let Err(e) = drain_loop(&objects, &shared, &metrics, &findings, initial) {
                tracing::error!("drain stopped: {e:#}");
            }
        })
        .context("failed to start the drain thread")?;
    ready_rx
        .recv()
        .context("the drain thread ended during start-up")??;
    Ok(handle)
}

fn load_all(ebpf_dir: Option<&std::path::Path>, shared: &Shared) -> Vec<LoadedObject> {
    let mut objects = Vec::new();
    for (observer, src) in object_sources(ebpf_dir) {
        let name = observer.as_str();
        let bytes = match src {
            Ok(b) => b,
            Err(reason) => {
                tracing::warn!(observer = name, "observer unavailable: {reason}");
                shared.set_status(name, "unavailable", reason);
                continue;
            }
        };
        match load_object(observer, &bytes) {
            Ok(lo) if lo.links.is_empty() => {
                let reason = format!(
                    "no program attached: {}",
                    lo.failed
                        .iter()
                        .map(|(p, e)| format!("{p}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                tracing::warn!(observer = name, "observer unavailable: {reason}");
                shared.set_status(name, "unavailable", reason);
            }
            Ok(lo) => {
                if lo.failed.is_empty() {
                    tracing::info!(
                        observer = name,
                        programs = lo.links.len(),
                        "observer active (tp_btf attach, tracefs not needed)"
                    );
                    shared.set_status(name, "active", "");
                } else {
                    let reason = lo
                        .failed
                        .iter()
                        .map(|(p, e)| format!("{p}: {e}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    tracing::warn!(observer = name, "observer degraded: {reason}");
                    shared.set_status(name, "degraded", reason);
                }
                objects.push(lo);
            }
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(observer = name, "observer unavailable: {reason}");
                shared.set_status(name, "unavailable", reason);
            }
        }
    }
    objects
}

fn apply_config(objects: &[LoadedObject], cfg: &TapioConfig) -> anyhow::Result<()> {
    for lo in objects {
        lo.write_config(cfg)?;
    }
    Ok(())
}

fn drain_loop(
    objects: &[LoadedObject],
    shared: &Shared,
    metrics: &Metrics,
    findings_tx: &SyncSender<Vec<Finding>>,
    initial: CompiledConfig,
) -> anyhow::Result<()> {
    let batch = Rc::new(RefCell::new(Batch {
        facts: Vec::with_capacity(DRAIN_CAP),
        ..Batch::default()
    }));
    let rings: Vec<_> = objects
        .iter()
        .map(|lo| {
            lo.obj
                .maps()
                .find(|m| m.name() == "events")
                .map(|m| (lo.observer, m))
                .with_context(|| format!("object {} has no ring `events`", lo.observer.as_str()))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut builder = RingBufferBuilder::new();
    for (observer, map) in &rings {
        let b = batch.clone();
        let obs = *observer;
        builder.add(map, move |data: &[u8]| {
            let mut b = b.borrow_mut();
            b.events[obs as usize] += 1;
            match decode(obs, data) {
                Ok(f) => b.facts.push((obs, f)),
                Err(_) => b.malformed[obs as usize] += 1,
            }
            0
        })?;
    }
    let rb = builder.build().context("failed to set up ring buffers")?;
    let epfd = rb.epoll_fd();

    let mut classifiers = Classifiers::new(&initial);
    let mut stats_prev: Vec<[u64; STAT_MAX]> = vec![[0; STAT_MAX]; objects.len()];
    let mut prog_prev: std::collections::HashMap<(Observer, String), (u64, u64)> =
        std::collections::HashMap::new();
    if std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() != "1")
    {
        tracing::info!("per-program BPF run time is not collected: sysctl kernel.bpf_stats_enabled=1 turns it on (the kernel then times every program run)");
    }
    let mut drops_prev: Vec<(Observer, &'static str, u64)> = Vec::new();
    let mut next_stats = 0u64;
    let mut next_tick = 0u64;
    let mut out: Vec<Finding> = Vec::new();
    let mut skip_wait = false;
    let mut draining_after_stop = 0;

    loop {
        if let Some(a) = shared.take_pending() {
            let abi_cfg = TapioConfig::from_compiled(&a.config, a.generation);
            match apply_config(objects, &abi_cfg) {
                Ok(()) => {
                    classifiers.set_config(&a.config);
                    tracing::info!(generation = a.generation, hash = %a.hash, "config applied");
                    shared.mark_applied(a);
                }
                Err(e) => {
                    tracing::error!("failed to apply config generation {}: {e:#}", a.generation)
                }
            }
        }
        if shared.stopping() {
            // Take what the kernel already queued, bounded, then stop.
            draining_after_stop += 1;
            if draining_after_stop > 4 {
                break;
            }
            skip_wait = true;
        }
        if !skip_wait {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: epfd is libbpf's epoll fd, valid while `rb` lives; one
            // event slot is passed with its length.
            unsafe { libc::epoll_wait(epfd, &mut ev, 1, TICK_MS) };
        }
        let consumed = rb.consume_raw_n(DRAIN_CAP);
        skip_wait = consumed >= DRAIN_CAP as i32;
        if skip_wait {
            metrics.drain_cap.inc();
        }
        {
            let mut b = batch.borrow_mut();
            for (i, obs) in Observer::ALL.iter().enumerate() {
                Metrics::observer_counter(&metrics.events, obs.as_str(), b.events[i]);
                Metrics::observer_counter(&metrics.malformed_events, obs.as_str(), b.malformed[i]);
            }
            b.events = [0; 4];
            b.malformed = [0; 4];
            for (obs, fact) in b.facts.drain(..) {
                classifiers.on_fact(obs, &fact, &mut out);
            }
        }
        let now = monotonic_ns();
        shared.note_drain_tick(now);
        // Window bookkeeping once per tick, not once per wake-up: under a
        // storm the rings wake the thread far more often than that.
        if now >= next_tick {
            next_tick = now + TICK_MS as u64 * 1_000_000;
            classifiers.on_tick(now, &mut out);
        }
        // Never waits while running; after stop, waits (bounded by the
        // shutdown budget) so the last findings are not dropped.
        offer_findings(
            findings_tx,
            std::mem::take(&mut out),
            metrics,
            &shared.shutdown,
        );

        if now >= next_stats {
            next_stats = now + STATS_EVERY_NS;
            export_stats(objects, &mut stats_prev, metrics);
            export_drops(&classifiers, &mut drops_prev, metrics);
            export_program_stats(objects, &mut prog_prev, metrics);
        }
    }
    classifiers.flush(&mut out);
    offer_findings(findings_tx, out, metrics, &shared.shutdown);
    export_stats(objects, &mut stats_prev, metrics);
    export_drops(&classifiers, &mut drops_prev, metrics);
    Ok(())
}

fn export_stats(objects: &[LoadedObject], prev: &mut [[u64; STAT_MAX]], metrics: &Metrics) {
    for (lo, prev) in objects.iter().zip(prev.iter_mut()) {
        let now = match lo.read_stats() {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(
                    observer = lo.observer.as_str(),
                    "failed to read BPF counters (retried next second): {e:#}"
                );
                continue;
            }
        };
        let obs = lo.observer.as_str();
        for i in 0..STAT_MAX {
            let delta = now[i].saturating_sub(prev[i]);
            if delta == 0 {
                continue;
            }
            match i {
                abi::STAT_CFG_ZERO | abi::STAT_CFG_ABI => {
                    let reason = if i == abi::STAT_CFG_ZERO {
                        "unconfigured"
                    } else {
                        "abi_mismatch"
                    };
                    metrics
                        .config_errors
                        .get_or_create(&ObserverReason {
                            observer: obs.into(),
                            reason: reason.into(),
                        })
                        .inc_by(delta);
                }
                abi::STAT_RB_FULL => Metrics::observer_counter(&metrics.lost_events, obs, delta),
                abi::STAT_RESET_INBOUND if lo.observer == Observer::Network => {
                    metrics.inbound_resets.inc_by(delta);
                }
                _ => {
                    if let Some(reason) = abi::stat_reason(lo.observer, i) {
                        metrics.correlation_drop(obs, reason, delta);
                    }
                }
            }
        }
        *prev = now;
    }
}

fn export_program_stats(
    objects: &[LoadedObject],
    prev: &mut std::collections::HashMap<(Observer, String), (u64, u64)>,
    metrics: &Metrics,
) {
    use crate::agent::metrics::ProgramLabel;
    for lo in objects {
        for (program, runs, ns) in lo.program_stats() {
            let key = (lo.observer, program);
            let (pr, pn) = prev.get(&key).copied().unwrap_or((0, 0));
            if runs > pr || ns > pn {
                let label = ProgramLabel {
                    observer: lo.observer.as_str().into(),
                    program: key.1.clone(),
                };
                metrics
                    .bpf_runs
                    .get_or_create(&label)
                    .inc_by(runs.saturating_sub(pr));
                metrics
                    .bpf_run_time_seconds
                    .get_or_create(&label)
                    .inc_by(ns.saturating_sub(pn) as f64 / 1e9);
            }
            prev.insert(key, (runs, ns));
        }
    }
}

fn export_drops(
    classifiers: &Classifiers,
    prev: &mut Vec<(Observer, &'static str, u64)>,
    metrics: &Metrics,
) {
    let now = classifiers.drops();
    for (obs, reason, n) in &now {
        let before = prev
            .iter()
            .find(|(o, r, _)| o == obs && r == reason)
            .map(|(_, _, n)| *n)
            .unwrap_or(0);
        if *n > before {
            metrics.correlation_drop(obs.as_str(), reason, n - before);
        }
    }
    *prev = now;
}
