//! Agent configuration: command-line flags over the TOML file over defaults.
//!
//! ```toml
//! # /etc/tapio/tapio.toml — every key optional; unknown keys are rejected.
//! sinks = ["stdout", "file"]
//! data_dir = "/var/lib/tapio/occurrences"
//! node_name = "node-a"
//! ebpf_dir = "/opt/tapio/ebpf"          # load .o files instead of the embedded ones
//! profile = "/etc/tapio/profile.yaml"   # Evidence Profile for standalone mode
//! heartbeat_interval = 10               # seconds, >= 5
//! http_endpoint = "http://collector:8080/events"
//! controller_endpoint = "http://tapio-controller:8080"
//! controller_token_file = "/etc/tapio/token"
//! otlp_endpoint = "http://otel-collector:4318"
//! otlp_encoding = "protobuf"             # or "json"
//!
//! [metrics]
//! enabled = true
//! addr = "127.0.0.1:9464"
//!
//! # Standalone threshold overrides, named and scaled as in CompiledConfig.
//! [observers.network]
//! refused_window_ms = 2000
//! [observers.storage]
//! enabled = false
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::wire::CompiledConfig;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/tapio/tapio.toml";
pub const DEFAULT_DATA_DIR: &str = ".tapio/occurrences";
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
pub const MIN_HEARTBEAT_SECS: u64 = 5;
pub const DEFAULT_HEARTBEAT_SECS: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Stdout,
    File,
    Http,
    Controller,
    Otlp,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Stdout => "stdout",
            SinkKind::File => "file",
            SinkKind::Http => "http",
            SinkKind::Controller => "controller",
            SinkKind::Otlp => "otlp",
        }
    }
}

/// `tapio agent` flags. Every flag can also be set in the TOML file; flags win.
#[derive(Debug, Clone, Default, Args)]
pub struct AgentArgs {
    /// TOML config file (a missing file is fine).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Where occurrences go; repeatable. Default: stdout.
    #[arg(long = "sink", value_enum, value_name = "SINK")]
    pub sinks: Vec<SinkKind>,
    /// Load BPF objects (<observer>.bpf.o) from this directory instead of the embedded ones.
    #[arg(long, value_name = "DIR")]
    pub ebpf_dir: Option<PathBuf>,
    /// File sink directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, value_name = "URL")]
    pub http_endpoint: Option<String>,
    #[arg(long, value_name = "URL")]
    pub controller_endpoint: Option<String>,
    /// File holding the bearer token sent to the controller.
    #[arg(long, value_name = "PATH")]
    pub controller_token_file: Option<PathBuf>,
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP/HTTP body encoding (default protobuf).
    #[arg(long, value_enum, value_name = "ENCODING")]
    pub otlp_encoding: Option<crate::agent::sinks::otlp::OtlpEncoding>,
    /// Seconds between controller heartbeats (>= 5).
    #[arg(long, value_name = "SECONDS")]
    pub heartbeat_interval: Option<u64>,
    /// Evidence Profile YAML for standalone runtime config.
    #[arg(long, value_name = "YAML")]
    pub profile: Option<PathBuf>,
    /// Node name reported in events (default: hostname).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Address for /metrics when metrics are enabled.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub sinks: Option<Vec<SinkKind>>,
    pub ebpf_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub http_endpoint: Option<String>,
    pub controller_endpoint: Option<String>,
    pub controller_token_file: Option<PathBuf>,
    pub otlp_endpoint: Option<String>,
    pub otlp_encoding: Option<crate::agent::sinks::otlp::OtlpEncoding>,
    pub heartbeat_interval: Option<u64>,
    pub profile: Option<PathBuf>,
    pub node_name: Option<String>,
    #[serde(default)]
    pub metrics: MetricsFile,
    /// Partial CompiledConfig sections, merged over the defaults.
    pub observers: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    #[serde(default)]
    pub enabled: bool,
    pub addr: Option<String>,
}

/// The resolved agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub sinks: Vec<SinkKind>,
    pub ebpf_dir: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub http_endpoint: Option<String>,
    pub controller_endpoint: Option<String>,
    pub controller_token_file: Option<PathBuf>,
    pub otlp_endpoint: Option<String>,
    pub otlp_encoding: crate::agent::sinks::otlp::OtlpEncoding,
    pub heartbeat_interval_secs: u64,
    pub profile: Option<PathBuf>,
    pub node_name: String,
    pub metrics_enabled: bool,
    pub metrics_addr: String,
    /// Defaults with the TOML `[observers.*]` overrides applied. A
    /// `--profile` replaces it at start-up.
    pub standalone: CompiledConfig,
}

impl AgentConfig {
    /// Reads the TOML file (if any) and applies the flags over it.
    pub fn resolve(args: &AgentArgs) -> anyhow::Result<AgentConfig> {
        let explicit = args.config.is_some();
        let path = args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => parse_file(&text)
                .with_context(|| format!("failed to parse config {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                FileConfig::default()
            }
            Err(e) => {
                return Err(e).with_context(|| format!("failed to read config {}", path.display()))
            }
        };
        Self::merge(args, file)
    }

    pub fn merge(args: &AgentArgs, file: FileConfig) -> anyhow::Result<AgentConfig> {
        let mut sinks = if !args.sinks.is_empty() {
            args.sinks.clone()
        } else {
            file.sinks.unwrap_or_else(|| vec![SinkKind::Stdout])
        };
        let mut seen = std::collections::HashSet::new();
        sinks.retain(|s| seen.insert(*s));
        if sinks.is_empty() {
            // `sinks = []` would run an agent that observes and writes nowhere.
            bail!("`sinks` is empty: name at least one of stdout, file, http, controller, otlp");
        }
        let heartbeat = args
            .heartbeat_interval
            .or(file.heartbeat_interval)
            .unwrap_or(DEFAULT_HEARTBEAT_SECS);
        if heartbeat < MIN_HEARTBEAT_SECS {
            bail!(
                "heartbeat interval must be at least {MIN_HEARTBEAT_SECS} seconds, got {heartbeat}"
            );
        }
        let standalone = match &file.observers {
            Some(t) => apply_overrides(CompiledConfig::default(), t)?,
            None => CompiledConfig::default(),
        };
        let cfg = AgentConfig {
            sinks,
            ebpf_dir: args.ebpf_dir.clone().or(file.ebpf_dir),
            data_dir: args
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            http_endpoint: args.http_endpoint.clone().or(file.http_endpoint),
            controller_endpoint: args
                .controller_endpoint
                .clone()
                .or(file.controller_endpoint),
            controller_token_file: args
                .controller_token_file
                .clone()
                .or(file.controller_token_file),
            otlp_endpoint: args.otlp_endpoint.clone().or(file.otlp_endpoint),
            otlp_encoding: args
                .otlp_encoding
                .or(file.otlp_encoding)
                .unwrap_or(crate::agent::sinks::otlp::OtlpEncoding::Protobuf),
            heartbeat_interval_secs: heartbeat,
            profile: args.profile.clone().or(file.profile),
            node_name: args
                .node_name
                .clone()
                .or(file.node_name)
                .unwrap_or_else(hostname),
            metrics_enabled: file.metrics.enabled,
            metrics_addr: args
                .metrics_addr
                .clone()
                .or(file.metrics.addr)
                .unwrap_or_else(|| DEFAULT_METRICS_ADDR.to_string()),
            standalone,
        };
        for s in &cfg.sinks {
            let missing = match s {
                SinkKind::Http => cfg.http_endpoint.is_none().then_some("--http-endpoint"),
                SinkKind::Controller => cfg
                    .controller_endpoint
                    .is_none()
                    .then_some("--controller-endpoint"),
                SinkKind::Otlp => cfg.otlp_endpoint.is_none().then_some("--otlp-endpoint"),
                _ => None,
            };
            if let Some(flag) = missing {
                bail!("sink {} needs {flag}", s.as_str());
            }
        }
        // Refuse unusable endpoints now, before anything connects anywhere.
        for (url, flag) in [
            (&cfg.http_endpoint, "--http-endpoint"),
            (&cfg.otlp_endpoint, "--otlp-endpoint"),
            (&cfg.controller_endpoint, "--controller-endpoint"),
        ] {
            if let Some(u) = url {
                crate::agent::sinks::http::check_plain_http(u, flag)?;
            }
        }
        Ok(cfg)
    }
}

pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

/// Merges `[observers.<name>]` tables over `base`. Unknown observers and
/// keys are rejected by name.
pub fn apply_overrides(
    base: CompiledConfig,
    overrides: &toml::Table,
) -> anyhow::Result<CompiledConfig> {
    let mut doc = serde_json::to_value(&base)?;
    for (section, value) in overrides {
        let Some(target) = doc.get_mut(section).filter(|_| section != "profile") else {
            bail!(
                "unknown key `observers.{section}`: expected network, container, storage or node"
            );
        };
        let Some(table) = value.as_table() else {
            bail!("`observers.{section}` must be a table");
        };
        for (key, v) in table {
            let Some(slot) = target.get_mut(key) else {
                bail!("unknown key `observers.{section}.{key}`");
            };
            *slot = serde_json::to_value(v)
                .with_context(|| format!("invalid value for `observers.{section}.{key}`"))?;
        }
    }
    let cfg: CompiledConfig =
        serde_json::from_value(doc).context("invalid value in [observers]")?;
    check_standalone(&cfg)?;
    Ok(cfg)
}

/// Guards against overrides that would make a rule meaningless.
fn check_standalone(cfg: &CompiledConfig) -> anyhow::Result<()> {
    let n = &cfg.network;
    for (name, v) in [
        ("network.refused_window_ms", n.refused_window_ms),
        ("network.retransmit_window_ms", n.retransmit_window_ms),
        ("network.refused_min_count", n.refused_min_count),
        ("network.retransmit_min_count", n.retransmit_min_count),
        (
            "network.rtt_min_baseline_samples",
            n.rtt_min_baseline_samples,
        ),
        (
            "network.rtt_spike_multiplier_permille",
            n.rtt_spike_multiplier_permille,
        ),
        ("node.sample_period_ms", cfg.node.sample_period_ms),
    ] {
        if v == 0 {
            bail!("`observers.{name}` must be greater than 0");
        }
    }
    if cfg.container.ignore_exit_codes.len() > crate::wire::config::MAX_IGNORE_EXIT_CODES {
        bail!("`observers.container.ignore_exit_codes` holds at most 16 codes");
    }
    Ok(())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Reads a secret from a file, trimming the trailing newline.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let t = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read token file {}", path.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() {
        bail!("token file {} is empty", path.display());
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file_and_defaults_fill_in() {
        let file =
            parse_file("sinks = [\"file\"]\ndata_dir = \"/tmp/x\"\nnode_name = \"n1\"\n").unwrap();
        let args = AgentArgs {
            sinks: vec![SinkKind::Stdout, SinkKind::Stdout],
            ..Default::default()
        };
        let cfg = AgentConfig::merge(&args, file).unwrap();
        assert_eq!(cfg.sinks, vec![SinkKind::Stdout]);
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.node_name, "n1");
        assert_eq!(cfg.heartbeat_interval_secs, DEFAULT_HEARTBEAT_SECS);
        assert!(!cfg.metrics_enabled);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let e = parse_file("sinkz = []").unwrap_err().to_string();
        assert!(e.contains("sinkz"), "{e}");
        let e = parse_file("[metrics]\nport = 1").unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
        let file = parse_file("[observers.network]\nwindow = 5").unwrap();
        let e = AgentConfig::merge(&AgentArgs::default(), file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("observers.network.window"), "{e}");
        let file = parse_file("[observers.gpu]\nenabled = true").unwrap();
        let e = AgentConfig::merge(&AgentArgs::default(), file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("observers.gpu"), "{e}");
    }

    #[test]
    fn observer_overrides_apply() {
        let file = parse_file(
            "[observers.network]\nretransmit_min_count = 3\n[observers.storage]\nenabled = false\n",
        )
        .unwrap();
        let cfg = AgentConfig::merge(&AgentArgs::default(), file).unwrap();
        assert_eq!(cfg.standalone.network.retransmit_min_count, 3);
        assert!(!cfg.standalone.storage.enabled);
        let file = parse_file("[observers.network]\nrefused_window_ms = 0\n").unwrap();
        assert!(AgentConfig::merge(&AgentArgs::default(), file).is_err());
        let file = parse_file("[observers.network]\nrefused_window_ms = \"x\"\n").unwrap();
        assert!(AgentConfig::merge(&AgentArgs::default(), file).is_err());
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/config.rs`): `sinks = []` was
    /// accepted, and the agent would have written its findings nowhere.
    #[test]
    fn empty_sink_list_is_refused() {
        let file = parse_file("sinks = []\n").unwrap();
        let e = AgentConfig::merge(&AgentArgs::default(), file)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`sinks` is empty"), "{e}");
        // A flag still wins over the file's empty list.
        let args = AgentArgs {
            sinks: vec![SinkKind::File],
            ..Default::default()
        };
        let cfg = AgentConfig::merge(&args, parse_file("sinks = []\n").unwrap()).unwrap();
        assert_eq!(cfg.sinks, vec![SinkKind::File]);
    }

    #[test]
    fn heartbeat_minimum_and_sink_endpoints_enforced() {
        let args = AgentArgs {
            heartbeat_interval: Some(4),
            ..Default::default()
        };
        assert!(AgentConfig::merge(&args, FileConfig::default()).is_err());
        let args = AgentArgs {
            sinks: vec![SinkKind::Http],
            ..Default::default()
        };
        let e = AgentConfig::merge(&args, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--http-endpoint"), "{e}");
    }
}
