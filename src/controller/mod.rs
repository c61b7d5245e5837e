//! `tapio controller`: serves one Evidence Profile to a fleet of agents over
//! `tapio-wire/v1` (SPEC §6, bodies and rules in [`crate::wire::v1`]).
//!
//! Owns: the HTTP router ([`router`], a plain function that tests drive
//! without a socket), the active config and its generation, the bounded
//! in-memory agent registry, the bounded buffer of recent occurrences,
//! per-agent batch sequence state, `/v1/status`, bearer-token auth, and the
//! process lifecycle (SIGHUP reload, SIGTERM/SIGINT graceful shutdown).
//! Must not: reach into agents (they poll), persist anything, interpret
//! occurrences, or put a token in a log line.
//!
//! # Running
//!
//! ```text
//! tapio controller --listen 0.0.0.0:8080 --profile /etc/tapio/profile.yaml \
//!     --token-file /etc/tapio/token
//! ```
//! * An invalid or unreadable profile at start → exit 1, before listening.
//! * `SIGHUP` re-reads the profile: a valid profile with new compiled
//!   content becomes generation N+1 with its new hash; identical content
//!   (even re-formatted) keeps generation N; an invalid profile is logged
//!   with every error and generation N stays active.
//! * `SIGTERM`/`SIGINT`: stop accepting, finish in-flight requests (at most
//!   [`SHUTDOWN_GRACE`]), exit 0.
//! * Connections are served by [`crate::httpd`]: head, body and idle
//!   deadlines, at most `--max-connections` at once (more are closed at
//!   once, counted in [`HTTP_STATS`] and logged rate-limited), and a
//!   declared body above `--max-body-bytes` gets 413 before it is read.
//! * The profile and the token file are read with
//!   [`crate::fsutil::read_capped`]: a FIFO, a device or an oversized file
//!   is refused at once. A reload reads on its own thread and gives up
//!   after [`RELOAD_TIMEOUT`] (a hung mount), so the runtime never blocks on
//!   file I/O; a SIGHUP that arrives while a reload is still running is
//!   logged and ignored.
//! * Without `--token-file` a warning says the controller is
//!   unauthenticated; with it, `/v1/agents/*`, `/v1/events` and
//!   `/v1/status` need `Authorization: Bearer <token>`. `/healthz` (for
//!   probes) and `/metrics` (Prometheus text, [`metrics`]: counts only)
//!   are open.
//! * The bound address is logged as `controller listening on <addr>`
//!   (useful with port 0).

pub mod auth;
pub mod error;
pub mod metrics;
mod routes;
pub mod state;
pub mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

pub use auth::Token;
pub use error::ApiError;
pub use routes::router;
pub use state::{AppState, Applied, Settings};

use crate::exit::CliError;
use crate::profile;

/// Longest wait for in-flight requests after SIGTERM/SIGINT. Handlers work
/// in memory and answer in milliseconds; what is still open after this is
/// a slow or stalled client, which must not hold the exit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Default `--max-connections`: under the common soft `ulimit -n` of 1024,
/// leaving ~120 descriptors for the listener, the runtime (epoll, eventfd,
/// signal pipes), stdio, profile reloads and the connections accepted only
/// to be closed when the limit is reached.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 900;

/// File descriptors kept free beyond `--max-connections` (see above).
const FD_HEADROOM: u64 = 64;

/// The controller's HTTP connection counters (`server="controller"` in
/// `tapio_http_connections_rejected_total` / `tapio_http_timeouts_total`).
/// One controller runs per process, so one set.
pub static HTTP_STATS: crate::httpd::HttpStats = crate::httpd::HttpStats::new();

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Address to listen on (port 0 picks a free port; the log says which).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The Evidence Profile to serve; re-read on SIGHUP.
    #[arg(long)]
    pub profile: PathBuf,
    /// File holding the bearer token agents must present.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Largest request body in bytes; larger → 413.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,
    /// Most agents kept in the registry (least recently seen evicted).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_agents: u64,
    /// Most connections served at once; more are accepted and closed at
    /// once. Keep it below `ulimit -n` minus ~64.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Most recent occurrences kept for /v1/status.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub event_buffer: u64,
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Runs the controller until SIGTERM/SIGINT.
pub fn run(args: ControllerArgs) -> Result<(), CliError> {
    let config = load_profile(&args.profile).map_err(CliError::usage)?;
    let token = match &args.token_file {
        Some(path) => Some(Token::from_file(path).map_err(CliError::usage)?),
        None => None,
    };
    if token.is_none() {
        tracing::warn!(
            "no --token-file: the controller is unauthenticated; anyone who can reach {} can register agents, read configs and post events",
            args.listen.ip()
        );
    }
    let settings = Settings {
        max_body_bytes: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        max_agents: usize::try_from(args.max_agents).unwrap_or(usize::MAX),
        event_buffer: usize::try_from(args.event_buffer).unwrap_or(usize::MAX),
        ..Settings::default()
    };
    let state = AppState::new(settings, token, config, wall_ns());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")
        .map_err(CliError::runtime)?;
    let max_connections = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    warn_if_fds_short(args.max_connections);
    runtime.block_on(serve(args.listen, args.profile, state, max_connections))
}

/// Says so at start when `ulimit -n` cannot hold `--max-connections`: the
/// excess would otherwise show up as EMFILE on accepts and profile reads.
fn warn_if_fds_short(max_connections: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let soft: u64 = lim.rlim_cur;
    if soft != libc::RLIM_INFINITY && max_connections.saturating_add(FD_HEADROOM) > soft {
        tracing::warn!(
            "--max-connections {max_connections} does not fit the file-descriptor limit {soft} (ulimit -n) with {FD_HEADROOM} to spare: raise the limit or lower --max-connections"
        );
    }
}

/// The bounds the controller's server runs with: the body limit of the
/// router, answered in the wire error format, and the counters in
/// [`HTTP_STATS`].
pub fn http_limits(state: &AppState, max_connections: usize) -> crate::httpd::Limits {
    use axum::response::IntoResponse;
    let mut limits = crate::httpd::Limits::new(
        "controller",
        max_connections,
        std::sync::Arc::new(&HTTP_STATS),
    );
    limits.max_body_bytes = u64::try_from(state.settings().max_body_bytes).unwrap_or(u64::MAX);
    limits.shutdown_grace = SHUTDOWN_GRACE;
    let counting = state.clone();
    limits.too_large = Some(std::sync::Arc::new(move |max| {
        let e = ApiError::new(
            crate::wire::v1::ErrorCode::PayloadTooLarge,
            format!("request body exceeds {max} bytes"),
        );
        counting.count_rejection(e.code);
        e.into_response()
    }));
    limits
}

async fn serve(
    listen: SocketAddr,
    profile_path: PathBuf,
    state: AppState,
    max_connections: usize,
) -> Result<(), CliError> {
    // Install the handlers before anything can send the signals: SIGHUP's
    // default action would kill the process.
    let mut hup = signal(SignalKind::hangup())
        .context("failed to install the SIGHUP handler")
        .map_err(CliError::runtime)?;
    let mut term = signal(SignalKind::terminate())
        .context("failed to install the SIGTERM handler")
        .map_err(CliError::runtime)?;
    let mut int = signal(SignalKind::interrupt())
        .context("failed to install the SIGINT handler")
        .map_err(CliError::runtime)?;

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("failed to listen on {listen}"))
        .map_err(CliError::runtime)?;
    let addr = listener
        .local_addr()
        .context("failed to read the bound address")
        .map_err(CliError::runtime)?;
    let active = state
        .active()
        .map_err(|e| CliError::runtime(anyhow!(e.message)))?;
    tracing::info!(
        profile = %active.config.profile,
        config_version = active.generation,
        config_hash = %active.hash,
        "serving profile {}",
        profile_path.display()
    );
    tracing::info!("controller listening on {addr}");

    let reload_state = state.clone();
    let reloader = tokio::spawn(async move {
        while hup.recv().await.is_some() {
            reload(&reload_state, &profile_path);
        }
    });

    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    };
    let limits = http_limits(&state, max_connections);
    // Returns at most SHUTDOWN_GRACE after the signal, whatever clients do.
    crate::httpd::serve(listener, router(state), limits, shutdown).await;
    reloader.abort();
    tracing::info!("controller stopped");
    Ok(())
}

/// Longest wait for a reload's read of the profile.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads (bounded, regular files only) and compiles a profile.
pub fn load_profile(path: &Path) -> anyhow::Result<crate::wire::config::CompiledConfig> {
    // One byte over the cap still reaches validation, which names the limit.
    let cap = profile::MAX_PROFILE_BYTES as u64 + 1;
    // Flattened into one message: ReadError::Io also names its io::Error
    // as the source, so a chain printer would say it twice.
    let bytes = crate::fsutil::read_capped(path, cap)
        .map_err(|e| anyhow!("failed to read profile {}: {e}", path.display()))?;
    profile::compile_bytes(&bytes).map_err(|issues| {
        anyhow::Error::from(profile::LoadError::Invalid {
            path: path.to_owned(),
            issues,
        })
    })
}

/// Re-reads the profile (SIGHUP) without blocking the caller; keeps the
/// old config on any error. Must be called on the runtime.
pub fn reload(state: &AppState, path: &Path) {
    let path = path.to_owned();
    reload_with(state, RELOAD_TIMEOUT, move || load_profile(&path));
}

/// [`reload`] with the read and the timeout given: `read` runs on its own
/// thread (not the runtime's blocking pool, whose shutdown would wait for a
/// read that never returns); the outcome is applied on the runtime.
pub fn reload_with<F>(state: &AppState, timeout: Duration, read: F)
where
    F: FnOnce() -> anyhow::Result<crate::wire::config::CompiledConfig> + Send + 'static,
{
    let Some(busy) = state.begin_reload() else {
        tracing::warn!("SIGHUP ignored: the previous profile reload is still running");
        return;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reader_busy = std::sync::Arc::clone(&busy);
    let spawned = std::thread::Builder::new()
        .name("profile-reload".into())
        .spawn(move || {
            let _busy = reader_busy;
            let _ = tx.send(read());
        });
    if let Err(e) = spawned {
        tracing::error!("profile reload rejected: cannot start its thread: {e}");
        state.reload_rejected();
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        // Held until applied: a SIGHUP meanwhile is ignored, not queued.
        let _busy = busy;
        let current = state.active().map(|a| a.generation).unwrap_or(0);
        let outcome = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(anyhow!("the reading thread ended without an answer")),
            Err(_) => Err(anyhow!(
                "reading the profile did not finish within {timeout:?} (a FIFO or a hung mount?); later SIGHUPs are ignored until that read returns"
            )),
        };
        match outcome {
            Err(e) => {
                // Logged before it is counted: whoever sees the counter
                // (a test, an operator's /v1/status) finds the reason logged.
                tracing::error!(
                    "profile reload rejected, generation {current} stays active: {e:#}"
                );
                state.reload_rejected();
            }
            Ok(config) => match state.apply(config, wall_ns()) {
                Applied::Unchanged { generation } => {
                    tracing::info!(
                        "profile reloaded: content unchanged, generation {generation} stays active"
                    )
                }
                Applied::Updated { generation, hash } => {
                    tracing::info!(config_version = generation, config_hash = %hash, "profile reloaded: generation {generation} active")
                }
                Applied::Exhausted => {
                    tracing::error!("profile reload rejected: generation counter exhausted, generation {current} stays active")
                }
            },
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::config::CompiledConfig;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn counters(state: &AppState) -> (u64, u64) {
        let inner = state.lock().unwrap();
        (
            inner.counters.reloads_applied,
            inner.counters.reloads_rejected,
        )
    }

    /// Polls `done` every 10 ms, at most 5 s.
    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn a_hung_read_times_out_and_later_sighups_are_ignored_until_it_returns() {
        let state = AppState::new(Settings::default(), None, CompiledConfig::default(), 0);
        let (unblock, blocked) = std::sync::mpsc::channel::<()>();
        let mut next = CompiledConfig::default();
        next.network.refused_min_count = 7;
        let hung = next.clone();
        reload_with(&state, Duration::from_millis(100), move || {
            // Like a read from a FIFO nobody writes: returns only when told.
            let _ = blocked.recv();
            Ok(hung)
        });
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = |runs: &Arc<AtomicUsize>| {
            let runs = Arc::clone(runs);
            move || {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(CompiledConfig::default())
            }
        };
        // While the first read hangs, a second SIGHUP does nothing.
        reload_with(&state, Duration::from_millis(100), counted(&runs));
        until("the timeout to reject the hung reload", || {
            counters(&state) == (0, 1)
        })
        .await;
        // Timed out, but its read is still running: still ignored.
        reload_with(&state, Duration::from_millis(100), counted(&runs));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert_eq!(state.active().unwrap().generation, 1);
        // The read returns (too late to count): reloads work again.
        unblock.send(()).unwrap();
        until("the hung read to end", || state.begin_reload().is_some()).await;
        reload_with(&state, Duration::from_secs(5), move || Ok(next));
        until("the next reload to apply", || counters(&state) == (1, 1)).await;
        assert_eq!(state.active().unwrap().generation, 2);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn profiles_that_are_not_regular_files_are_refused_at_once() {
        let e = load_profile(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "failed to read profile /dev/zero: is not a regular file (a character device)"
        );
    }
}
