//! The one place that maps command outcomes to exit codes and sets up
//! logging. Exit codes: 0 ok, 1 bad usage or input, 2 runtime failure.
//! A closed stdout (`tapio recent | head`) is not a failure.

use std::process::ExitCode;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// A command's failure and the exit code it deserves.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl CliError {
    /// Bad usage or invalid input: exit 1.
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        CliError {
            code: 1,
            error: error.into(),
        }
    }

    /// The environment or the system failed us: exit 2.
    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        CliError {
            code: 2,
            error: error.into(),
        }
    }
}

/// Logs go to stderr, so stdout carries only data (JSON lines, MCP).
/// `RUST_LOG` overrides the default `info` level (release builds compile
/// `debug!`/`trace!` out: Cargo.toml, tracing `release_max_level_info`).
pub fn init_logging() {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .finish()
        .with(filter)
        .try_init();
}

/// The log filter for a `RUST_LOG` value: a level (`debug`), per-target
/// levels (`tapio=debug,hyper=warn`), or both. Unset, empty or unparsable
/// means `info`, so a typo never silences the agent.
///
/// `Targets` rather than `EnvFilter`: `EnvFilter` pulls in `regex` (about
/// 0.3 MB of the release binary, see BENCHMARKS.md) for span and field
/// filters that nobody uses on an agent.
pub fn log_filter(rust_log: Option<&str>) -> Targets {
    let info = || Targets::new().with_default(LevelFilter::INFO);
    match rust_log.map(str::trim) {
        None | Some("") => info(),
        Some(spec) => spec.parse::<Targets>().unwrap_or_else(|_| info()),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints the error (one line, with its causes) and returns the exit code.
pub fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e.error) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapio: {:#}", e.error);
            ExitCode::from(e.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn unset_empty_and_garbage_rust_log_mean_info() {
        for value in [
            None,
            Some(""),
            Some("   "),
            Some("tapio=loud"),
            Some("warn,hyper=noisy"),
        ] {
            let f = log_filter(value);
            assert!(f.would_enable("tapio::agent", &Level::INFO), "{value:?}");
            assert!(f.would_enable("hyper", &Level::WARN), "{value:?}");
            assert!(!f.would_enable("tapio::agent", &Level::DEBUG), "{value:?}");
        }
    }

    #[test]
    fn a_bare_level_applies_to_every_target() {
        let f = log_filter(Some("debug"));
        assert!(f.would_enable("tapio::agent::pipeline", &Level::DEBUG));
        assert!(f.would_enable("hyper_util", &Level::DEBUG));
        assert!(!f.would_enable("tapio", &Level::TRACE));
        let f = log_filter(Some("error"));
        assert!(!f.would_enable("tapio", &Level::WARN));
        assert!(f.would_enable("tapio", &Level::ERROR));
    }

    #[test]
    fn per_target_levels_match_module_prefixes() {
        let f = log_filter(Some("warn,tapio::controller=trace"));
        assert!(f.would_enable("tapio::controller::routes", &Level::TRACE));
        assert!(!f.would_enable("tapio::cli", &Level::INFO));
        assert!(f.would_enable("tapio::cli", &Level::WARN));
        assert!(!f.would_enable("reqwest", &Level::INFO));
        // A target list without a default level logs nothing else.
        let f = log_filter(Some("tapio=debug"));
        assert!(f.would_enable("tapio::mcp", &Level::DEBUG));
        assert!(!f.would_enable("hyper", &Level::ERROR));
    }
}
