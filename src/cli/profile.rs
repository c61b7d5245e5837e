//! `tapio profile validate FILE` and `tapio profile compile FILE`.
//!
//! `validate` prints one `FILE: OK …` line on stdout and exits 0, or prints
//! every problem as `FILE: path: message` on stderr and exits 1.
//! `compile` prints `{"config_hash":"sha256:…","config":{…}}` (pretty JSON;
//! the hash is over the canonical compact bytes of `config`) and exits 0, or
//! reports like `validate` and exits 1. An unreadable file exits 2.
//!
//! The command lives here, not in [`crate::profile`], so that module keeps
//! to serde: clap, anyhow and exit codes are the CLI's business.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use clap::{Args, Subcommand};

use crate::exit::CliError;
use crate::profile::{compile, read_bounded, validate, LoadError};
use crate::wire::config::CompiledConfig;

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Check an Evidence Profile; report every problem with its path.
    Validate {
        /// The profile YAML file.
        file: PathBuf,
    },
    /// Print the CompiledConfig JSON and its hash.
    Compile {
        /// The profile YAML file.
        file: PathBuf,
    },
}

pub fn run(args: ProfileArgs) -> Result<(), CliError> {
    match args.command {
        ProfileCommand::Validate { file } => {
            let cfg = checked(&file)?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{}: OK (profile \"{}\", config_hash {})",
                file.display(),
                cfg.profile,
                cfg.hash()
            )
            .map_err(CliError::runtime)
        }
        ProfileCommand::Compile { file } => {
            let cfg = checked(&file)?;
            let doc = Compiled {
                config_hash: cfg.hash(),
                config: &cfg,
            };
            let text = serde_json::to_string_pretty(&doc).map_err(CliError::runtime)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").map_err(CliError::runtime)
        }
    }
}

/// `tapio profile compile` output; fields in this order.
#[derive(serde::Serialize)]
struct Compiled<'a> {
    config_hash: crate::wire::ConfigHash,
    config: &'a CompiledConfig,
}

/// Reads and validates `file`; on failure prints every issue to stderr.
fn checked(file: &Path) -> Result<CompiledConfig, CliError> {
    let bytes = read_bounded(file).map_err(|e: LoadError| CliError::runtime(anyhow!(e)))?;
    match validate(&bytes) {
        Ok(profile) => Ok(compile(&profile)),
        Err(issues) => {
            let mut err = std::io::stderr().lock();
            for issue in &issues {
                let _ = writeln!(err, "{}: {issue}", file.display());
            }
            let n = issues.len();
            Err(CliError::usage(anyhow!(
                "invalid profile {}: {n} error{}",
                file.display(),
                if n == 1 { "" } else { "s" }
            )))
        }
    }
}
