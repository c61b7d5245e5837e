//! `tapio watch`: follows new occurrence files until Ctrl-C (or SIGTERM).
//!
//! Files present at start are not shown; each new file is printed once.
//! It follows the data dir with inotify ([`super::inotify`]): the kernel
//! names each file renamed or written into the dir, and only those are
//! read, so an idle watch costs nothing however many files the dir holds
//! (polling listed all of them every 250 ms: a sixth of a core at 50,000).
//! Where inotify is unavailable (not in the kernel, the per-user instance or
//! watch limit reached) it says so once on stderr and lists the dir every
//! [`POLL_INTERVAL`] instead; after a queue overflow it lists the dir once.
//! A data dir that does not exist yet (or is removed) is waited for by
//! polling, and watched again once it exists.

use std::time::Duration;

use super::output::{clean, colour_enabled, severity_style};
use super::{io_error, note_missing, DataDirArg};
use crate::exit::CliError;
use crate::store::filter::{comm, parse_container, parse_pod, pid, place, Filter};
use crate::store::{Follower, Poll, Store};
use crate::wire::{Observer, Occurrence};

/// How often the data dir is listed when it cannot be watched.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Arguments of `tapio watch`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Observer flags combine: --network --storage shows both. None shows all.\n\
--container selects the container observer; --container-id selects one container."
)]
pub struct WatchArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub observers: ObserverFlags,
    /// Only this pod: its name, or namespace/pod.
    #[arg(long, value_name = "POD")]
    pub pod: Option<String>,
    /// Only pods in this namespace.
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Only this container: its id or a prefix of it (`--container` is the
    /// container observer).
    #[arg(long, value_name = "ID")]
    pub container_id: Option<String>,
    /// Only this process id.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u64>,
    /// Print each occurrence as one JSON line instead of a text line.
    #[arg(long)]
    pub json: bool,
}

/// `--network`, `--container`, …: one flag per observer of the list, in
/// its order, each selecting that observer's occurrences.
#[derive(Debug, Clone, Default)]
pub struct ObserverFlags(pub Vec<Observer>);

impl clap::FromArgMatches for ObserverFlags {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(ObserverFlags(
            Observer::ALL
                .into_iter()
                .filter(|o| m.get_flag(o.as_str()))
                .collect(),
        ))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for ObserverFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Observer::ALL.into_iter().fold(cmd, |cmd, o| {
            cmd.arg(
                clap::Arg::new(o.as_str())
                    .long(o.as_str())
                    .action(clap::ArgAction::SetTrue)
                    .help(format!("Only {} occurrences", o.as_str())),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl WatchArgs {
    fn filter(&self) -> Result<Filter, CliError> {
        let usage = |m: String| CliError::usage(anyhow::anyhow!(m));
        let observers = self.observers.0.clone();
        let container = self
            .container_id
            .as_deref()
            .map(|c| parse_container(c).map_err(|m| m.replace("--container", "--container-id")))
            .transpose()
            .map_err(usage)?;
        if self.namespace.as_deref() == Some("") {
            return Err(usage(
                "invalid --namespace \"\": expected a namespace name".into(),
            ));
        }
        Ok(Filter {
            observers,
            pod: self
                .pod
                .as_deref()
                .map(parse_pod)
                .transpose()
                .map_err(usage)?,
            namespace: self.namespace.clone(),
            container,
            pid: self.pid,
            ..Filter::default()
        })
    }
}

/// One occurrence as a watch line: time, severity, type, where, pid, comm,
/// message, in fixed widths so lines align without knowing what comes next
/// (a longer place or type pushes its line, never cuts the name).
pub fn line(o: &Occurrence, colour: bool) -> String {
    let sev = format!("{:<8}", o.severity.as_str());
    let sev = match severity_style(o.severity) {
        Some(s) if colour => s.paint(&sev),
        _ => sev,
    };
    format!(
        "{:<24}  {}  {:<37}  {:<24}  {:>7}  {:<15}  {}",
        clean(&o.timestamp),
        sev,
        clean(&o.kind),
        clean(&place(o)),
        pid(o).map_or_else(|| "-".to_string(), |p| p.to_string()),
        clean(comm(o).unwrap_or("-")),
        clean(&o.error.message)
    )
    .trim_end()
    .to_string()
}

/// Runs `tapio watch`.
pub fn run(args: WatchArgs) -> Result<(), CliError> {
    let filter = args.filter()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(anyhow::Error::new(e).context("failed to start runtime")))?;
    rt.block_on(follow(args, filter))
}

/// Prints one batch of new records and notes.
fn show(poll: &Poll, json: bool, colour: bool) -> Result<(), CliError> {
    use std::io::Write;
    if poll.skipped.total() > 0 {
        eprintln!(
            "tapio: skipped {} new unusable entries ({})",
            poll.skipped.total(),
            poll.skipped.describe()
        );
    }
    if poll.records.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for rec in &poll.records {
        if json {
            let j = serde_json::to_string(&rec.occurrence).map_err(|e| {
                CliError::runtime(anyhow::Error::new(e).context("failed to encode JSON"))
            })?;
            text.push_str(&j);
        } else {
            text.push_str(&line(&rec.occurrence, colour));
        }
        text.push('\n');
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).map_err(io_error)?;
    out.flush().map_err(io_error)
}

/// What one read of a directory watch said (see [`super::inotify`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Names written or moved into the directory.
    pub added: Vec<String>,
    /// Names created (any type). A regular file created here is usually
    /// still empty: it is reported again in `added` when closed.
    pub created: Vec<String>,
    /// Names deleted or moved out.
    pub removed: Vec<String>,
    /// The kernel's queue overflowed: events were lost, list the directory.
    pub overflow: bool,
    /// The directory was deleted or moved away: the watch is dead.
    pub gone: bool,
}

/// How the dir is being followed.
enum Mode {
    /// Not watched (yet): list it now and then every [`POLL_INTERVAL`].
    Poll,
    Notify(tokio::io::unix::AsyncFd<super::inotify::DirWatch>),
}

struct Follow {
    store: Store,
    filter: Filter,
    follower: Follower,
    json: bool,
    colour: bool,
    missing_noted: bool,
    /// False once inotify failed for a reason other than a missing dir:
    /// polling from then on (said once).
    notify_ok: bool,
}

impl Follow {
    /// Lists the whole dir and prints what is new.
    fn full_poll(&mut self) -> Result<bool, CliError> {
        let poll = self
            .follower
            .poll(&self.filter)
            .map_err(CliError::runtime)?;
        if !poll.exists && !self.missing_noted {
            note_missing(&self.store);
            self.missing_noted = true;
        } else if poll.exists {
            self.missing_noted = false;
        }
        show(&poll, self.json, self.colour)?;
        Ok(poll.exists)
    }

    /// Starts watching the dir when possible. The watch is added before the
    /// dir is listed, so a file written in between is seen by one or the
    /// other (the follower never reports a name twice).
    fn try_watch(&mut self) -> Mode {
        if self.notify_ok {
            match super::inotify::DirWatch::new(self.store.dir()) {
                Ok(w) => {
                    use tokio::io::{unix::AsyncFd, Interest};
                    // SAFETY: `DirWatch` owns its descriptor, never replaces
                    // it and closes it only when dropped, which the AsyncFd
                    // does; `as_raw_fd` always returns that one descriptor.
                    match unsafe { AsyncFd::register_with_interest(w, Interest::READABLE) } {
                        Ok(fd) => return Mode::Notify(fd),
                        Err(e) => self.fall_back(&e.into_parts().1),
                    }
                }
                // Missing or not a directory: listing says so.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {}
                Err(e) => self.fall_back(&e),
            }
        }
        Mode::Poll
    }

    fn fall_back(&mut self, e: &std::io::Error) {
        self.notify_ok = false;
        eprintln!(
            "tapio: note: cannot watch {} with inotify ({e}); listing it every {} ms instead",
            self.store.dir().display(),
            POLL_INTERVAL.as_millis()
        );
    }
}

/// Of the names created, those that will never be written and closed (a
/// FIFO, a symlink, a directory): the store reads (and refuses) them now.
/// A regular file is left for its close or rename, when it is complete.
fn not_written(dir: &std::path::Path, created: Vec<String>) -> Vec<String> {
    created
        .into_iter()
        .filter(|n| std::fs::symlink_metadata(dir.join(n)).is_ok_and(|m| !m.file_type().is_file()))
        .collect()
}

async fn follow(args: WatchArgs, filter: Filter) -> Result<(), CliError> {
    let store = args.data_dir.store();
    let follower = store.follow().map_err(CliError::runtime)?;
    eprintln!(
        "tapio: watching {} for new occurrences (Ctrl-C to stop)",
        store.dir().display()
    );
    let mut f = Follow {
        store,
        filter,
        follower,
        json: args.json,
        colour: colour_enabled(),
        missing_noted: false,
        notify_ok: true,
    };
    // Installed once, before the first listing, so a signal that lands
    // while one runs is not lost.
    let signal = |kind| {
        tokio::signal::unix::signal(kind).map_err(|e| {
            CliError::runtime(anyhow::Error::new(e).context("failed to install signal handler"))
        })
    };
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut mode = Mode::Poll;
    loop {
        if matches!(mode, Mode::Poll) {
            mode = f.try_watch();
            f.full_poll()?;
        }
        match &mut mode {
            Mode::Poll => {
                tokio::select! {
                    _ = interrupt.recv() => return Ok(()),
                    _ = terminate.recv() => return Ok(()),
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                }
            }
            Mode::Notify(fd) => {
                let read = tokio::select! {
                    _ = interrupt.recv() => return Ok(()),
                    _ = terminate.recv() => return Ok(()),
                    ready = fd.readable() => match ready {
                        Ok(mut guard) => guard.try_io(|inner| inner.get_ref().read()),
                        Err(e) => Ok(Err(e)),
                    },
                };
                match read {
                    // Spurious readiness: wait again.
                    Err(_would_block) => {}
                    Ok(Ok(changes)) => {
                        if changes.gone {
                            // The dir went away: wait for it by polling.
                            mode = Mode::Poll;
                        } else if changes.overflow {
                            f.full_poll()?;
                        } else {
                            let mut names = changes.added;
                            names.extend(not_written(f.store.dir(), changes.created));
                            let poll = f.follower.poll_names(&f.filter, &names, &changes.removed);
                            show(&poll, f.json, f.colour)?;
                        }
                    }
                    Ok(Err(e)) => {
                        f.fall_back(&e);
                        mode = Mode::Poll;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        watch: WatchArgs,
    }

    /// Every observer of the list has its flag, named as the observer;
    /// flags combine, in the list's order.
    #[test]
    fn every_observer_has_its_flag() {
        for o in Observer::ALL {
            let flag = format!("--{}", o.as_str());
            let cli = Cli::try_parse_from(["watch", flag.as_str()]).unwrap();
            assert_eq!(cli.watch.observers.0, vec![o]);
        }
        let cli = Cli::try_parse_from(["watch", "--storage", "--network"]).unwrap();
        assert_eq!(
            cli.watch.observers.0,
            vec![Observer::Network, Observer::Storage]
        );
        let cli = Cli::try_parse_from(["watch"]).unwrap();
        assert!(cli.watch.observers.0.is_empty());
        assert!(Cli::try_parse_from(["watch", "--gpu"]).is_err());
    }

    #[test]
    fn lines_have_fixed_columns() {
        let o: Occurrence = serde_json::from_str(include_str!(
            "../../tests/fixtures/occurrence_oom_kill.json"
        ))
        .unwrap();
        assert_eq!(
            line(&o, false),
            "2025-04-03T14:43:01.042Z  critical  kernel.container.oom_kill              host                         1234  -                OOM kill pid=1234 (usage=512MB, limit=0MB)"
        );
        assert!(line(&o, true).contains("\x1b[1;31mcritical\x1b[0m  kernel"));
    }
}
