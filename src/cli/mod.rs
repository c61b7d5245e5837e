//! The operator's commands over local occurrence files: `status`, `recent`,
//! `watch`, `health` (SPEC §7), and `profile validate|compile` (a profile
//! file through [`crate::profile`], see [`profile`]).
//!
//! This module owns argument shapes, human and `--json` rendering, and the
//! mapping of failures to exit codes (0 ok, 1 bad usage or input such as a
//! bad `--since`, 2 runtime failure such as an unreadable data dir; `health`
//! exits with its verdict instead: 0 ok, 1 degraded, 2 failing, 3 unknown,
//! see [`health`]). It reads through [`crate::store`] only (the agent's
//! status file included); it must not talk to a running agent, write
//! into the data dir, or put anything but results on stdout (notes and
//! warnings go to stderr).
//!
//! * Every command takes `--data-dir` (env `TAPIO_DATA_DIR`, default
//!   `.tapio/occurrences`, the file sink's default).
//! * A data dir that does not exist is an empty store, not an error: the
//!   command prints its (empty) result, a one-line note on stderr, and exits
//!   0 — the agent may simply not have written anything yet. `--json` output
//!   says `"data_dir_exists": false`.
//! * Files that cannot be used are skipped and counted by reason (corrupt,
//!   unreadable, not regular, too large, foreign; see [`crate::store`]),
//!   never fatal and never waited on: a FIFO or a symlink to a device is not
//!   read. A note on stderr in human mode, the `skipped` object in `--json`.
//! * `--json` prints exactly one JSON object (see [`crate::store::report`]
//!   for the shapes); `watch --json` prints one occurrence per line.
//! * `recent` and `watch` name who and where per occurrence: the place
//!   (`namespace/pod`, else the container id's 12-digit short form, else
//!   `host`), pid and comm (`-` when the fact has no process), and filter
//!   on them (`--pod`, `--namespace`, `--container` id prefix — `watch`
//!   spells it `--container-id`, as its `--container` picks the observer —
//!   and `--pid`). `recent` ends with `N of M shown` when its limit cut the
//!   list.
//! * Colour only when stdout is a terminal and `NO_COLOR` is unset.

pub mod health;
// `tapio watch` follows with inotify on Linux; elsewhere the stub's watch
// always fails and watch polls (said once on stderr).
#[cfg(target_os = "linux")]
pub mod inotify;
#[cfg(not(target_os = "linux"))]
#[path = "inotify_unsupported.rs"]
pub mod inotify;
pub mod output;
pub mod profile;
pub mod recent;
pub mod status;
pub mod watch;

use std::io::Write;
use std::path::PathBuf;

use crate::exit::CliError;
use crate::store::report::ReportError;
use crate::store::{Skipped, Store, DEFAULT_DATA_DIR};

pub use health::HealthArgs;
pub use recent::RecentArgs;
pub use status::StatusArgs;
pub use watch::WatchArgs;

/// The data dir flag every command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArg {
    /// Directory of occurrence files written by the agent's file sink.
    #[arg(long, env = "TAPIO_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

impl DataDirArg {
    pub fn store(&self) -> Store {
        Store::new(&self.data_dir)
    }
}

/// Wall-clock now, ns since the epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn report_error(e: ReportError) -> CliError {
    match e {
        ReportError::Invalid(msg) => CliError::usage(anyhow::anyhow!(msg)),
        ReportError::Store(e) => CliError::runtime(e),
    }
}

fn io_error(e: std::io::Error) -> CliError {
    CliError::runtime(anyhow::Error::new(e).context("failed to write to stdout"))
}

/// The stderr note for a data dir that does not exist.
fn note_missing(store: &Store) {
    eprintln!(
        "tapio: note: data dir {} does not exist; treating it as empty (is the agent running with --sink file and the same --data-dir?)",
        store.dir().display()
    );
}

/// The stderr note for skipped entries, if any.
fn note_skipped(store: &Store, skipped: Skipped) {
    if skipped.total() > 0 {
        eprintln!(
            "tapio: skipped {} unusable entries in {} ({})",
            skipped.total(),
            store.dir().display(),
            skipped.describe()
        );
    }
}

/// The stderr notes of a report command: a missing data dir, skipped entries.
fn note_store(store: &Store, data_dir_exists: bool, skipped: Skipped) {
    if !data_dir_exists {
        note_missing(store);
    }
    note_skipped(store, skipped);
}

/// Prints a report command's result: one JSON object with `json`, else
/// `render`'s human form (coloured when [`output::colour_enabled`]).
fn print_report<R: serde::Serialize>(
    report: &R,
    json: bool,
    render: impl FnOnce(&R, bool) -> String,
) -> Result<(), CliError> {
    if json {
        return print_json(report);
    }
    print(&render(report, output::colour_enabled()))
}

/// Writes `text` to stdout, flushing; a closed pipe ends quietly (exit 0).
fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(io_error)?;
    out.flush().map_err(io_error)
}

/// Serialises a report as one JSON line.
fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let mut text = serde_json::to_string(value)
        .map_err(|e| CliError::runtime(anyhow::Error::new(e).context("failed to encode JSON")))?;
    text.push('\n');
    print(&text)
}
