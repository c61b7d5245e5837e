//! The drain thread: one OS thread that owns every loaded object and ring.
//!
//! Per tick it waits on the rings' epoll fd (BPF submits with
//! `BPF_RB_NO_WAKEUP` and wakes it only as the queue crosses each quarter
//! of the ring, so a storm costs a wake-up per ~1,000 records, not per
//! record), consumes at most `DRAIN_CAP` records, decodes
//! and classifies them, and hands findings to the emitter without blocking.
//! It does no I/O besides the rings, except rare carrier writes when config
//! changes and one counter read per second. The fill of the BPF hash maps
//! and socket tables is counted on a helper thread (`bpf-map-count`) it
//! starts and joins, so that walk never delays a drain.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType, RingBufferBuilder};

use super::loader::{load_object, object_sources, LoadedObject};
use crate::agent::abi::{self, TapioConfig, STAT_MAX};
use crate::agent::classify::Finding;
use crate::agent::metrics::{Metrics, ObserverMap, ObserverReason};
use crate::agent::observers::{self, decode, report, DropsExported, Fact, RingObservers, Stat};
use crate::agent::pipeline::{monotonic_ns, offer_findings, Shared};
use crate::wire::status::{ObserverState, ObserverStatus};
use crate::wire::{CompiledConfig, Observer};

/// Most records consumed per tick before classification runs.
pub const DRAIN_CAP: usize = 8192;
/// Longest wait for records; also the classification tick.
pub const TICK_MS: i32 = 100;
const STATS_EVERY_NS: u64 = 1_000_000_000;
/// How often `tapio_bpf_map_entries` is refreshed. The kernel keeps no
/// entry count a user can read for hash maps, so counting walks every key,
/// one bpf(2) call each: ~75 ms for a full 16k-entry map in a debug build.
/// Per scrape, any scraper could spend that at will; twice a minute, on its
/// own thread, it is noise.
pub const MAP_COUNT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// What one tick pulled out of the rings.
struct Batch {
    facts: Vec<Fact>,
    /// One entry per ring, in the order the rings were added (each ring's
    /// callback holds its entry's position).
    rings: Vec<RingCounts>,
}

/// Records a ring delivered since the last export.
struct RingCounts {
    observer: Observer,
    events: u64,
    malformed: u64,
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
            // Capacity and fill exist before the metrics listener opens
            // (the maps are nearly empty now, so this first walk is short).
            let maps = hash_maps(&objects);
            export_map_fill(&maps, &metrics);
            let (counter_stop, stop_rx) = std::sync::mpsc::channel::<()>();
            let counter = spawn_map_counter(maps, stop_rx, metrics.clone(), MAP_COUNT_EVERY);
            let _ = ready_tx.send(Ok(()));
            if let Err(e) = drain_loop(&objects, &shared, &metrics, &findings, initial) {
                tracing::error!("drain stopped: {e:#}");
            }
            // Closing the channel wakes it at once, also when the drain
            // ended on an error while the agent runs on.
            drop(counter_stop);
            if let Some(c) = counter {
                let _ = c.join();
            }
        })
        .context("failed to start the drain thread")?;
    ready_rx
        .recv()
        .context("the drain thread ended during start-up")??;
    Ok(handle)
}

/// The probe of every BPF observer: load and attach its object. Each
/// one's status is reported; the objects with at least one program
/// attached are returned.
fn load_all(ebpf_dir: Option<&std::path::Path>, shared: &Shared) -> Vec<LoadedObject> {
    let mut objects = Vec::new();
    for (observer, src) in object_sources(ebpf_dir) {
        let loaded =
            src.and_then(|bytes| load_object(observer, &bytes).map_err(|e| format!("{e:#}")));
        let detail = match &loaded {
            Ok(lo) => format!(
                "{} programs, tp_btf attach, tracefs not needed",
                lo.links.len()
            ),
            Err(_) => String::new(),
        };
        let status = match &loaded {
            Ok(lo) => attach_status(lo.links.len(), &lo.failed),
            Err(reason) => ObserverStatus::new(ObserverState::Unavailable, reason.as_str()),
        };
        let attached = status.state != ObserverState::Unavailable;
        report(shared, observer, status, &detail);
        if let (true, Ok(lo)) = (attached, loaded) {
            objects.push(lo);
        }
    }
    objects
}

/// A BPF observer's status from its attach result: active with every
/// program attached, degraded with some, unavailable with none; the
/// reason names each program that failed and why.
fn attach_status(attached: usize, failed: &[(String, String)]) -> ObserverStatus {
    let failures = failed
        .iter()
        .map(|(p, e)| format!("{p}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    match (attached, failed.is_empty()) {
        (0, _) => ObserverStatus::new(
            ObserverState::Unavailable,
            format!("no program attached: {failures}"),
        ),
        (_, true) => ObserverStatus::new(ObserverState::Active, ""),
        (_, false) => ObserverStatus::new(ObserverState::Degraded, failures),
    }
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
        rings: Vec::with_capacity(objects.len()),
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
        let slot = {
            let mut b = batch.borrow_mut();
            b.rings.push(RingCounts {
                observer: obs,
                events: 0,
                malformed: 0,
            });
            b.rings.len() - 1
        };
        builder.add(map, move |data: &[u8]| {
            let mut b = b.borrow_mut();
            b.rings[slot].events += 1;
            match decode(obs, data) {
                Ok(f) => b.facts.push(f),
                Err(_) => b.rings[slot].malformed += 1,
            }
            0
        })?;
    }
    let rb = builder.build().context("failed to set up ring buffers")?;
    let epfd = rb.epoll_fd();

    let mut observers = RingObservers::new(&initial);
    let mut stats_prev: Vec<[u64; STAT_MAX]> = vec![[0; STAT_MAX]; objects.len()];
    let mut prog_prev: std::collections::HashMap<(Observer, String), (u64, u64, u64)> =
        std::collections::HashMap::new();
    if std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() != "1")
    {
        tracing::info!("per-program BPF run time is not collected: sysctl kernel.bpf_stats_enabled=1 turns it on (the kernel then times every program run)");
    }
    let mut drops_exported = DropsExported::default();
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
                    observers.apply_config(&a.config, a.generation);
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
            for r in &mut b.rings {
                let obs = r.observer.as_str();
                Metrics::observer_counter(&metrics.events, obs, std::mem::take(&mut r.events));
                Metrics::observer_counter(
                    &metrics.malformed_events,
                    obs,
                    std::mem::take(&mut r.malformed),
                );
            }
            for fact in b.facts.drain(..) {
                observers.on_fact(&fact, &mut out);
            }
        }
        let now = monotonic_ns();
        shared.note_drain_tick(now);
        // Window bookkeeping once per tick, not once per wake-up: under a
        // storm the rings wake the thread far more often than that.
        if now >= next_tick {
            next_tick = now + TICK_MS as u64 * 1_000_000;
            observers.on_tick(now, &mut out);
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
            observers.export_drops(&mut drops_exported, metrics);
            export_program_stats(objects, &mut prog_prev, metrics);
        }
    }
    observers.flush(&mut out);
    offer_findings(findings_tx, out, metrics, &shared.shutdown);
    export_stats(objects, &mut stats_prev, metrics);
    observers.export_drops(&mut drops_exported, metrics);
    export_program_stats(objects, &mut prog_prev, metrics);
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
                _ => match observers::stat(lo.observer, i) {
                    Some(Stat::Drop(reason)) => metrics.correlation_drop(obs, reason, delta),
                    Some(Stat::InboundResets) => {
                        metrics.inbound_resets.inc_by(delta);
                    }
                    None => {}
                },
            }
        }
        *prev = now;
    }
}

/// The ways of `observer`'s `map` if it is one of its socket tables
/// (`RingObserver::SET_TABLES`, in the observer's folder).
fn set_ways(observer: Observer, map: &impl MapCore) -> Option<u32> {
    if map.map_type() != MapType::Array {
        return None;
    }
    observers::set_ways(observer, map.name().to_str()?)
}

/// Every hash map and socket table of the loaded objects (the per-flow and
/// per-request state; other arrays and rings have no fill), with its own
/// fd so another thread can walk it.
fn hash_maps(objects: &[LoadedObject]) -> Vec<(ObserverMap, MapHandle)> {
    let mut out = Vec::new();
    for lo in objects {
        for map in lo.obj.maps() {
            if !map.map_type().is_hash_map() && set_ways(lo.observer, &map).is_none() {
                continue;
            }
            let label = ObserverMap {
                observer: lo.observer.as_str().into(),
                map: map.name().to_string_lossy().into_owned(),
            };
            match MapHandle::try_from(&map) {
                Ok(h) => out.push((label, h)),
                Err(e) => tracing::warn!(
                    observer = %label.observer,
                    map = %label.map,
                    "map fill not exported: {e}"
                ),
            }
        }
    }
    out
}

/// Sets `tapio_bpf_map_{capacity,entries}` for `maps`.
fn export_map_fill(maps: &[(ObserverMap, MapHandle)], metrics: &Metrics) {
    for (label, map) in maps {
        // The label names the observer (its list name).
        let ways = Observer::parse(&label.observer).and_then(|o| set_ways(o, map));
        let (capacity, entries) = match ways {
            Some(ways) => (
                u64::from(map.max_entries()) * u64::from(ways),
                count_tags(map, ways),
            ),
            None => (u64::from(map.max_entries()), count_entries(map)),
        };
        metrics
            .bpf_map_capacity
            .get_or_create(label)
            .set(capacity as i64);
        metrics
            .bpf_map_entries
            .get_or_create(label)
            .set(entries as i64);
    }
}

/// Recounts `maps` every `every` ([`MAP_COUNT_EVERY`]) until `stop` closes.
/// `None` (logged) if the thread cannot start: the first count then stays.
fn spawn_map_counter(
    maps: Vec<(ObserverMap, MapHandle)>,
    stop: std::sync::mpsc::Receiver<()>,
    metrics: Arc<Metrics>,
    every: std::time::Duration,
) -> Option<JoinHandle<()>> {
    use std::sync::mpsc::RecvTimeoutError;
    let spawned = std::thread::Builder::new()
        .name("bpf-map-count".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
                export_map_fill(&maps, &metrics);
            }
        });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!("BPF map fill is counted once only: no thread: {e}");
            None
        }
    }
}

/// Entries in a hash map, by walking its keys. A key evicted while the walk
/// stands on it makes the kernel restart from the first key, so under
/// churn a walk could revisit keys: capped at the capacity, it stays
/// bounded and never reports more than the map can hold.
pub fn count_entries(map: &impl MapCore) -> usize {
    map.keys().take(map.max_entries() as usize).count()
}

/// Slots in use in a socket table: the nonzero tags among the first `ways`
/// u64 of each set. Read set by set (one bpf(2) call each), so a slot
/// claimed or released during the walk may or may not count; the total
/// never exceeds the capacity.
pub fn count_tags(map: &impl MapCore, ways: u32) -> usize {
    (0..map.max_entries())
        .filter_map(|set| map.lookup(&set.to_ne_bytes(), MapFlags::ANY).ok().flatten())
        .map(|v| {
            v.chunks_exact(8)
                .take(ways as usize)
                .filter(|tag| tag.iter().any(|b| *b != 0))
                .count()
        })
        .sum()
}

fn export_program_stats(
    objects: &[LoadedObject],
    prev: &mut std::collections::HashMap<(Observer, String), (u64, u64, u64)>,
    metrics: &Metrics,
) {
    use crate::agent::metrics::ProgramLabel;
    for lo in objects {
        for st in lo.program_stats() {
            let key = (lo.observer, st.program);
            let (pr, pn, pm) = prev.get(&key).copied().unwrap_or((0, 0, 0));
            let label = ProgramLabel {
                observer: lo.observer.as_str().into(),
                program: key.1.clone(),
            };
            if st.runs > pr || st.run_ns > pn {
                metrics
                    .bpf_runs
                    .get_or_create(&label)
                    .inc_by(st.runs.saturating_sub(pr));
                metrics
                    .bpf_run_time_seconds
                    .get_or_create(&label)
                    .inc_by(st.run_ns.saturating_sub(pn) as f64 / 1e9);
            }
            // Every program has its series from the first export, so a
            // miss shows as an increase (rate()) rather than a new series.
            metrics
                .bpf_missed_runs
                .get_or_create(&label)
                .inc_by(st.missed.saturating_sub(pm));
            prev.insert(key, (st.runs, st.run_ns, st.missed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creating BPF maps needs root: skips with one line elsewhere, fails
    /// under `TAPIO_REQUIRE_EBPF=1` (CI), where a skip would hide a failure.
    fn may_create_maps() -> bool {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return true;
        }
        if std::env::var("TAPIO_REQUIRE_EBPF").as_deref() == Ok("1") {
            panic!("creating BPF maps needs root, but TAPIO_REQUIRE_EBPF=1");
        }
        eprintln!("skipping: creating BPF maps needs root");
        false
    }

    /// A kernel map of its own (root only: see [`may_create_maps`]).
    fn new_map(kind: MapType, name: &str, value_size: u32, entries: u32) -> MapHandle {
        let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
            sz: size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        MapHandle::create(kind, Some(name), 4, value_size, entries, &opts)
            .unwrap_or_else(|e| panic!("create the {kind:?} map {name}: {e}"))
    }

    #[test]
    fn attach_status_table() {
        let failed = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| (n.to_string(), "EINVAL".to_string()))
                .collect()
        };
        let cases = [
            (3, failed(&[]), ObserverState::Active, ""),
            (2, failed(&["p"]), ObserverState::Degraded, "p: EINVAL"),
            (
                0,
                failed(&["p", "q"]),
                ObserverState::Unavailable,
                "no program attached: p: EINVAL; q: EINVAL",
            ),
        ];
        for (attached, failed, state, reason) in cases {
            assert_eq!(
                attach_status(attached, &failed),
                ObserverStatus::new(state, reason),
                "{attached} attached"
            );
        }
    }

    /// A real LRU hash map in the kernel (root only): the walk counts what
    /// was inserted, and a full map counts exactly its capacity.
    #[test]
    fn counts_the_entries_of_a_real_lru_map() {
        if !may_create_maps() {
            return;
        }
        let map = new_map(MapType::LruHash, "tapio_count", 8, 16384);
        assert_eq!(count_entries(&map), 0);
        for k in 0u32..300 {
            map.update(&k.to_ne_bytes(), &[0; 8], MapFlags::ANY)
                .unwrap();
        }
        assert_eq!(count_entries(&map), 300);
        for k in 300u32..16384 {
            map.update(&k.to_ne_bytes(), &[0; 8], MapFlags::ANY)
                .unwrap();
        }
        let t = std::time::Instant::now();
        let n = count_entries(&map);
        // Printed, not asserted: the cost that sets MAP_COUNT_EVERY_NS.
        eprintln!("counted {n} entries in {:?}", t.elapsed());
        // LRU may evict early (per-CPU free lists), never beyond capacity.
        assert!(n <= 16384 && n > 16384 / 2, "{n}");
    }

    /// A socket table: capacity is sets x ways, fill the slots whose tag is
    /// set, wherever they are in their set; the owner data after the tags
    /// does not count.
    #[test]
    fn counts_the_claimed_slots_of_a_socket_table() {
        if !may_create_maps() {
            return;
        }
        // 16 tags, then 16 owners of 8 bytes each.
        let map = new_map(MapType::Array, "conn_owners", 256, 4);
        assert_eq!(set_ways(Observer::Network, &map), Some(16));
        let mut set = [0u8; 256];
        set[128..].fill(0xff);
        map.update(&0u32.to_ne_bytes(), &set, MapFlags::ANY)
            .unwrap();
        assert_eq!(count_tags(&map, 16), 0, "owner bytes are not tags");
        set[8..16].copy_from_slice(&0xffff_8880_1234_5600u64.to_ne_bytes());
        set[120..128].copy_from_slice(&1u64.to_ne_bytes());
        map.update(&0u32.to_ne_bytes(), &set, MapFlags::ANY)
            .unwrap();
        map.update(&3u32.to_ne_bytes(), &set, MapFlags::ANY)
            .unwrap();
        assert_eq!(count_tags(&map, 16), 4);
        let metrics = Metrics::new();
        let label = ObserverMap {
            observer: "network".into(),
            map: "conn_owners".into(),
        };
        export_map_fill(&[(label, MapHandle::try_from(&map).unwrap())], &metrics);
        let text = metrics.encode();
        assert!(
            text.contains("tapio_bpf_map_capacity{observer=\"network\",map=\"conn_owners\"} 64")
        );
        assert!(text.contains("tapio_bpf_map_entries{observer=\"network\",map=\"conn_owners\"} 4"));
        // Another array of that shape but another name is not a table.
        let other = new_map(MapType::Array, "tapio_config", 256, 1);
        assert_eq!(set_ways(Observer::Network, &other), None);
    }

    /// The counter thread refreshes the gauges on its own and ends as soon
    /// as its channel closes.
    #[test]
    fn counter_thread_refreshes_the_gauges_and_stops_on_close() {
        if !may_create_maps() {
            return;
        }
        let map = new_map(MapType::Hash, "tapio_fill", 4, 64);
        let label = ObserverMap {
            observer: "network".into(),
            map: "tapio_fill".into(),
        };
        let metrics = Metrics::new();
        let maps = vec![(label.clone(), MapHandle::try_from(&map).unwrap())];
        export_map_fill(&maps, &metrics);
        let series = "tapio_bpf_map_entries{observer=\"network\",map=\"tapio_fill\"}";
        let read = |m: &Metrics| {
            m.encode()
                .lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse::<i64>().ok())
        };
        assert_eq!(read(&metrics), Some(0));
        assert!(metrics
            .encode()
            .contains("tapio_bpf_map_capacity{observer=\"network\",map=\"tapio_fill\"} 64"));
        let (tx, rx) = std::sync::mpsc::channel();
        let h = spawn_map_counter(
            maps,
            rx,
            metrics.clone(),
            std::time::Duration::from_millis(20),
        )
        .unwrap();
        for k in 0u32..5 {
            map.update(&k.to_ne_bytes(), &k.to_ne_bytes(), MapFlags::ANY)
                .unwrap();
        }
        let mut seen = None;
        for _ in 0..500 {
            seen = read(&metrics);
            if seen == Some(5) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(seen, Some(5));
        drop(tx);
        h.join().unwrap();
    }
}
