//! `tapio watch`: follows new occurrence files until Ctrl-C (or SIGTERM).
//!
//! Polls the data dir every 250 ms (no inotify: it works the same on every
//! filesystem, and a listing of 100,000 names is cheap). Files present at
//! start are not shown; each new file is printed once, oldest name first.
//! A data dir that does not exist yet is waited for.

use std::time::Duration;

use super::output::{clean, colour_enabled, severity_style};
use super::{io_error, note_missing, DataDirArg};
use crate::exit::CliError;
use crate::store::filter::Filter;
use crate::wire::{Observer, Occurrence};

/// How often the data dir is listed.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Arguments of `tapio watch`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Observer flags combine: --network --storage shows both. None shows all.")]
pub struct WatchArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Only network occurrences.
    #[arg(long)]
    pub network: bool,
    /// Only container occurrences.
    #[arg(long)]
    pub container: bool,
    /// Only storage occurrences.
    #[arg(long)]
    pub storage: bool,
    /// Only node occurrences.
    #[arg(long)]
    pub node: bool,
    /// Print each occurrence as one JSON line instead of a text line.
    #[arg(long)]
    pub json: bool,
}

impl WatchArgs {
    fn filter(&self) -> Filter {
        let observers = [
            (self.network, Observer::Network),
            (self.container, Observer::Container),
            (self.storage, Observer::Storage),
            (self.node, Observer::Node),
        ]
        .into_iter()
        .filter_map(|(on, o)| on.then_some(o))
        .collect();
        Filter {
            observers,
            ..Filter::default()
        }
    }
}

/// One occurrence as a watch line (fixed widths, so lines align without
/// knowing what comes next).
pub fn line(o: &Occurrence, colour: bool) -> String {
    let sev = format!("{:<8}", o.severity.as_str());
    let sev = match severity_style(o.severity) {
        Some(s) if colour => s.paint(&sev),
        _ => sev,
    };
    format!(
        "{:<24}  {}  {:<37}  {}",
        clean(&o.timestamp),
        sev,
        clean(&o.kind),
        clean(&o.error.message)
    )
    .trim_end()
    .to_string()
}

/// Runs `tapio watch`.
pub fn run(args: WatchArgs) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(anyhow::Error::new(e).context("failed to start runtime")))?;
    rt.block_on(follow(args))
}

async fn follow(args: WatchArgs) -> Result<(), CliError> {
    use std::io::Write;
    let store = args.data_dir.store();
    let filter = args.filter();
    let colour = colour_enabled();
    let mut follower = store.follow().map_err(CliError::runtime)?;
    let mut missing_noted = false;
    eprintln!(
        "tapio: watching {} for new occurrences (Ctrl-C to stop)",
        store.dir().display()
    );
    // Installed once, before the first poll, so a signal that lands while a
    // poll runs is not lost.
    let signal = |kind| {
        tokio::signal::unix::signal(kind).map_err(|e| {
            CliError::runtime(anyhow::Error::new(e).context("failed to install signal handler"))
        })
    };
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let poll = follower.poll(&filter).map_err(CliError::runtime)?;
        if !poll.exists && !missing_noted {
            note_missing(&store);
            missing_noted = true;
        } else if poll.exists {
            missing_noted = false;
        }
        if poll.skipped.total() > 0 {
            eprintln!(
                "tapio: skipped {} new unusable entries ({})",
                poll.skipped.total(),
                poll.skipped.describe()
            );
        }
        if !poll.records.is_empty() {
            let mut text = String::new();
            for rec in &poll.records {
                if args.json {
                    let json = serde_json::to_string(&rec.occurrence).map_err(|e| {
                        CliError::runtime(anyhow::Error::new(e).context("failed to encode JSON"))
                    })?;
                    text.push_str(&json);
                } else {
                    text.push_str(&line(&rec.occurrence, colour));
                }
                text.push('\n');
            }
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).map_err(io_error)?;
            out.flush().map_err(io_error)?;
        }
        tokio::select! {
            _ = interrupt.recv() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_have_fixed_columns() {
        let o: Occurrence = serde_json::from_str(include_str!(
            "../../tests/fixtures/occurrence_oom_kill.json"
        ))
        .unwrap();
        assert_eq!(
            line(&o, false),
            "2025-04-03T14:43:01.042Z  critical  kernel.container.oom_kill              OOM kill pid=1234 (usage=512MB, limit=0MB)"
        );
        assert!(line(&o, true).contains("\x1b[1;31mcritical\x1b[0m  kernel"));
    }
}
