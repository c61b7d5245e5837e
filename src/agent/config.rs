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
//! otlp_compression = "gzip"              # or "none" (the default)
//! otlp_headers = { "x-api-key" = "…" }   # never logged; flags replace the set
//! shutdown_timeout = 10                 # seconds SIGTERM may take, 1..=300
//! retain_files = 100000                 # file sink keeps at most this many files,
//! retain_bytes = "256MiB"               # this many bytes of them (or an integer),
//! retain_age = "7d"                     # and none older; the oldest go first
//!
//! [metrics]                            # /metrics, /healthz, /readyz
//! enabled = true                       # or --metrics; an addr alone also enables
//! addr = "127.0.0.1:9464"              # or --metrics-addr (implies --metrics)
//!
//! # Standalone threshold overrides, named and scaled as in CompiledConfig
//! # and judged by the same knob table (ranges) as a profile.
//! [observers.network]
//! refused_window_ms = 2000
//! [observers.storage]
//! enabled = false
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::wire::config::{knob, knob_by_field, ExitScope, Knob, KnobKind, KnobValue, AT_LEAST};
use crate::wire::{CompiledConfig, Observer};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/tapio/tapio.toml";
pub const DEFAULT_DATA_DIR: &str = ".tapio/occurrences";
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";
pub const MIN_HEARTBEAT_SECS: u64 = 5;
pub const DEFAULT_HEARTBEAT_SECS: u64 = 10;
pub const DEFAULT_SHUTDOWN_SECS: u64 = 10;
pub const SHUTDOWN_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=300;
/// Largest config or token file read (SPEC §3: every input is bounded).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Longest `--node-name` (a DNS subdomain, as Kubernetes node names are).
pub const MAX_NODE_NAME: usize = 253;
/// `--retain-files`: the index costs 20 bytes a file, 20 MB at the top.
pub const RETAIN_FILES_RANGE: std::ops::RangeInclusive<u64> = 1..=1_000_000;
/// `--retain-bytes`: 1 MiB to 1 TiB.
pub const RETAIN_BYTES_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 40);
/// `--retain-age` in seconds: a minute to a year.
pub const RETAIN_AGE_SECS_RANGE: std::ops::RangeInclusive<u64> = 60..=365 * 86_400;

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
    /// OTLP request body compression (default none).
    #[arg(long, value_enum, value_name = "COMPRESSION")]
    pub otlp_compression: Option<crate::agent::sinks::otlp::OtlpCompression>,
    /// Extra OTLP request header, e.g. a collector's API key; repeatable.
    /// Values are never logged; prefer `otlp_headers` in the TOML file for
    /// secrets, since a command line is visible to every local user.
    #[arg(long = "otlp-header", value_name = "NAME=VALUE")]
    pub otlp_headers: Vec<crate::agent::sinks::otlp::Secret>,
    /// Seconds between controller heartbeats (>= 5).
    #[arg(long, value_name = "SECONDS")]
    pub heartbeat_interval: Option<u64>,
    /// Evidence Profile YAML for standalone runtime config.
    #[arg(long, value_name = "YAML")]
    pub profile: Option<PathBuf>,
    /// Node name reported in events (default: hostname).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Serve /metrics, /healthz and /readyz (on --metrics-addr, default 127.0.0.1:9464).
    #[arg(long)]
    pub metrics: bool,
    /// Address for /metrics, /healthz and /readyz; implies --metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Longest a stop (SIGTERM/SIGINT) may take, 1..=300 (default 10): what
    /// the sinks have not delivered by then is counted and logged.
    #[arg(long, value_name = "SECONDS")]
    pub shutdown_timeout: Option<u64>,
    /// File sink: most occurrence files kept, 1..=1000000 (default 100000);
    /// the oldest are deleted first.
    #[arg(long, value_name = "N")]
    pub retain_files: Option<u64>,
    /// File sink: most bytes of occurrence files kept, in bytes or with
    /// KiB, MiB, GiB, TiB, 1MiB..=1TiB (default 256MiB).
    #[arg(long, value_name = "SIZE")]
    pub retain_bytes: Option<String>,
    /// File sink: oldest occurrence kept, like 30m, 12h, 7d, 1m..=365d
    /// (default 7d).
    #[arg(long, value_name = "DURATION")]
    pub retain_age: Option<String>,
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
    pub otlp_compression: Option<crate::agent::sinks::otlp::OtlpCompression>,
    pub otlp_headers: Option<std::collections::BTreeMap<String, crate::agent::sinks::otlp::Secret>>,
    pub heartbeat_interval: Option<u64>,
    pub profile: Option<PathBuf>,
    pub node_name: Option<String>,
    pub shutdown_timeout: Option<u64>,
    pub retain_files: Option<u64>,
    pub retain_bytes: Option<ByteSize>,
    pub retain_age: Option<String>,
    #[serde(default)]
    pub metrics: MetricsFile,
    /// Partial CompiledConfig sections, merged over the defaults.
    pub observers: Option<toml::Table>,
}

/// `retain_bytes` in the TOML file: an integer of bytes or a string like
/// `"256MiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    Bytes(u64),
    Text(String),
}

/// Parses a size: whole bytes, or a whole number with a binary unit
/// (`KiB`, `MiB`, `GiB`, `TiB`). `None` for anything else or an overflow.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let shift = match unit {
        "" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The file sink's retention bounds from flags over file over defaults,
/// each refused with the accepted form and range when out of it.
fn retention(
    args: &AgentArgs,
    file: &FileConfig,
) -> anyhow::Result<crate::agent::sinks::retention::Retention> {
    use crate::agent::sinks::retention::Retention;
    let default = Retention::default();
    let max_files = args
        .retain_files
        .or(file.retain_files)
        .unwrap_or(default.max_files);
    if !RETAIN_FILES_RANGE.contains(&max_files) {
        bail!(
            "--retain-files (retain_files) must be {} to {} files, got {max_files}",
            RETAIN_FILES_RANGE.start(),
            RETAIN_FILES_RANGE.end()
        );
    }
    let bytes_text = match (&args.retain_bytes, &file.retain_bytes) {
        (Some(t), _) | (None, Some(ByteSize::Text(t))) => Some(t.clone()),
        (None, Some(ByteSize::Bytes(n))) => Some(n.to_string()),
        (None, None) => None,
    };
    let max_bytes = match bytes_text {
        None => default.max_bytes,
        Some(t) => {
            let Some(n) = parse_bytes(&t) else {
                bail!(
                    "invalid --retain-bytes (retain_bytes) {t:?}: expected bytes or a size like 512MiB or 2GiB"
                );
            };
            if !RETAIN_BYTES_RANGE.contains(&n) {
                bail!("--retain-bytes (retain_bytes) must be 1MiB to 1TiB, got {t}");
            }
            n
        }
    };
    let max_age_ms = match args.retain_age.as_ref().or(file.retain_age.as_ref()) {
        None => default.max_age_ms,
        Some(t) => {
            // The one duration grammar (profiles, `--since`).
            let Some(ns) = crate::wire::time::parse_duration(t) else {
                bail!(
                    "invalid --retain-age (retain_age) {t:?}: expected a duration like 30m, 12h or 7d"
                );
            };
            let (start, end) = (
                RETAIN_AGE_SECS_RANGE.start() * 1_000_000_000,
                RETAIN_AGE_SECS_RANGE.end() * 1_000_000_000,
            );
            if !(start..=end).contains(&ns) {
                bail!("--retain-age (retain_age) must be 1m to 365d, got {t}");
            }
            ns / 1_000_000
        }
    };
    Ok(Retention {
        max_files,
        max_bytes,
        max_age_ms,
    })
}

/// `[metrics]`: `addr` alone turns metrics on; `enabled = false` with an
/// `addr` is refused (an address that serves nothing is a mistake).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    pub enabled: Option<bool>,
    pub addr: Option<String>,
}

/// Whether metrics are served: the flags turn them on (`--metrics-addr`
/// implies `--metrics`); otherwise the file decides, where an address
/// implies `enabled = true` and contradicts `enabled = false`.
fn metrics_enabled(args: &AgentArgs, file: &MetricsFile) -> anyhow::Result<bool> {
    if let (Some(false), Some(addr)) = (file.enabled, &file.addr) {
        bail!(
            "[metrics] has enabled = false and addr = \"{addr}\": an address without metrics serves nothing; remove addr or set enabled = true"
        );
    }
    Ok(args.metrics || args.metrics_addr.is_some() || file.enabled.unwrap_or(file.addr.is_some()))
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
    pub otlp_compression: crate::agent::sinks::otlp::OtlpCompression,
    /// Validated; `Debug` shows the names only.
    pub otlp_headers: crate::agent::sinks::otlp::OtlpHeaders,
    pub heartbeat_interval_secs: u64,
    pub profile: Option<PathBuf>,
    pub node_name: String,
    pub metrics_enabled: bool,
    pub metrics_addr: String,
    /// The shutdown budget (`--shutdown-timeout`).
    pub shutdown_timeout: std::time::Duration,
    /// The file sink's bounds (`--retain-files/-bytes/-age`).
    pub retention: crate::agent::sinks::retention::Retention,
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
        let file = match crate::fsutil::read_capped(&path, MAX_CONFIG_BYTES) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| anyhow::anyhow!("config {} is not UTF-8", path.display()))?;
                parse_file(&text)
                    .with_context(|| format!("failed to parse config {}", path.display()))?
            }
            Err(e) if e.reason() == "missing" && !explicit => FileConfig::default(),
            // `--config /dev/null` is the usual way to say "no file": empty,
            // not a device to refuse.
            Err(e) if e.reason() == "not_regular" && is_dev_null(&path) => FileConfig::default(),
            // The cause goes into the message, not the error chain, so
            // `{:#}` prints it once.
            Err(e) => bail!("failed to read config {}: {e}", path.display()),
        };
        Self::merge(args, file)
    }

    pub fn merge(args: &AgentArgs, file: FileConfig) -> anyhow::Result<AgentConfig> {
        let retention = retention(args, &file)?;
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
        let metrics_enabled = metrics_enabled(args, &file.metrics)?;
        let shutdown_secs = args
            .shutdown_timeout
            .or(file.shutdown_timeout)
            .unwrap_or(DEFAULT_SHUTDOWN_SECS);
        if !SHUTDOWN_SECS_RANGE.contains(&shutdown_secs) {
            bail!(
                "shutdown timeout must be {} to {} seconds, got {shutdown_secs}",
                SHUTDOWN_SECS_RANGE.start(),
                SHUTDOWN_SECS_RANGE.end()
            );
        }
        let node_name = match args.node_name.clone().or(file.node_name) {
            Some(n) => n,
            // Hostnames may carry capitals; node names never do.
            None => hostname().to_ascii_lowercase(),
        };
        check_node_name(&node_name)?;
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
            otlp_compression: args
                .otlp_compression
                .or(file.otlp_compression)
                .unwrap_or_default(),
            otlp_headers: otlp_headers(&args.otlp_headers, file.otlp_headers)?,
            heartbeat_interval_secs: heartbeat,
            profile: args.profile.clone().or(file.profile),
            node_name,
            metrics_enabled,
            metrics_addr: args
                .metrics_addr
                .clone()
                .or(file.metrics.addr)
                .unwrap_or_else(|| DEFAULT_METRICS_ADDR.to_string()),
            shutdown_timeout: std::time::Duration::from_secs(shutdown_secs),
            retention,
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

/// The OTLP headers: the flags when any is given (they replace the file's
/// set, as every list flag does), else the file's `otlp_headers`.
fn otlp_headers(
    flags: &[crate::agent::sinks::otlp::Secret],
    file: Option<std::collections::BTreeMap<String, crate::agent::sinks::otlp::Secret>>,
) -> anyhow::Result<crate::agent::sinks::otlp::OtlpHeaders> {
    use crate::agent::sinks::otlp::OtlpHeaders;
    if !flags.is_empty() {
        return OtlpHeaders::from_flags(flags);
    }
    OtlpHeaders::new(file.unwrap_or_default(), "otlp_headers")
}

/// True for `/dev/null` itself or a link to it.
fn is_dev_null(path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|p| p == Path::new("/dev/null"))
}

pub fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    Ok(toml::from_str(text)?)
}

/// Merges `[observers.<name>]` tables over `base`. Keys are
/// [`CompiledConfig`] field names; each value is judged by its knob table
/// row ([`KNOBS`](crate::wire::config::KNOBS)), so the agent accepts exactly
/// what a profile would, in the field's unit. Unknown observers and keys are
/// rejected by name.
pub fn apply_overrides(
    mut cfg: CompiledConfig,
    overrides: &toml::Table,
) -> anyhow::Result<CompiledConfig> {
    for (section, value) in overrides {
        let Some(observer) = Observer::parse(section) else {
            bail!(
                "unknown key `observers.{section}`: expected {}",
                Observer::choices()
            );
        };
        let Some(table) = value.as_table() else {
            bail!("`observers.{section}` must be a table");
        };
        for (key, v) in table {
            let Some(k) = knob_by_field(observer, key) else {
                bail!("unknown key `observers.{section}.{key}`");
            };
            let value = toml_value(k, v)
                .and_then(|value| k.check(&value).map(|()| value))
                .map_err(|why| anyhow::anyhow!("`observers.{section}.{key}` {why}"))?;
            k.set(&mut cfg, value);
        }
    }
    for (observer, low, high) in &AT_LEAST {
        let (Some(lk), Some(hk)) = (knob(*observer, low), knob(*observer, high)) else {
            continue;
        };
        let (lo, hi) = (lk.get(&cfg), hk.get(&cfg));
        if hk.nanos(&hi) < lk.nanos(&lo) {
            let o = observer.as_str();
            bail!(
                "`observers.{o}.{}` ({hi}) must not be below `observers.{o}.{}` ({lo})",
                hk.field,
                lk.field
            );
        }
    }
    Ok(cfg)
}

/// A TOML value as the row's kind, or what it must be.
fn toml_value(k: &Knob, v: &toml::Value) -> Result<KnobValue, String> {
    use toml::Value as T;
    let wrong = || format!("must be {} (got {})", k.kind_text(), v.type_str());
    match (k.kind, v) {
        (KnobKind::Bool, T::Boolean(b)) => Ok(KnobValue::Bool(*b)),
        (
            KnobKind::Count { .. } | KnobKind::Duration { .. } | KnobKind::Milli { .. },
            T::Integer(i),
        ) => u64::try_from(*i)
            .map(KnobValue::Int)
            .map_err(|_| format!("must be {} (got {i})", k.kind_text())),
        (KnobKind::ExitScope, T::String(s)) => ExitScope::parse(s)
            .map(KnobValue::Scope)
            .ok_or_else(|| format!("must be {} (got {s:?})", k.kind_text())),
        (KnobKind::ExitCodes { .. }, T::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_integer()
                    .and_then(|c| u8::try_from(c).ok())
                    .ok_or_else(wrong)
            })
            .collect::<Result<Vec<u8>, String>>()
            .map(KnobValue::Codes),
        _ => Err(wrong()),
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Checks a node name the way Kubernetes checks one (a DNS subdomain:
/// 1..=253 of `a-z 0-9 . -`, starting and ending alphanumeric), so a typo
/// fails here instead of leaving a controller-mode agent unregistered.
pub fn check_node_name(name: &str) -> anyhow::Result<()> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty()
        || name.len() > MAX_NODE_NAME
        || !name.chars().all(ok_char)
        || !alnum(name.chars().next())
        || !alnum(name.chars().last())
    {
        bail!(
            "invalid node name {:?}: use 1 to {MAX_NODE_NAME} characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit (set --node-name)",
            // Quoted and escaped, and cut short: the name is untrusted input.
            name.chars().take(MAX_NODE_NAME + 8).collect::<String>()
        );
    }
    Ok(())
}

/// Reads a secret from a file (bounded, regular files only), trimming the
/// trailing newline.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let bytes = crate::fsutil::read_capped(path, MAX_CONFIG_BYTES)
        .map_err(|e| anyhow::anyhow!("failed to read token file {}: {e}", path.display()))?;
    let t = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("token file {} is not UTF-8", path.display()))?;
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

    /// The overrides are judged by the same knob table as a profile: what a
    /// profile refuses (a 1 ms window: the profile minimum is 10ms), the
    /// agent's TOML refuses too, with the range in the field's unit.
    #[test]
    fn overrides_use_the_profile_ranges() {
        let merge = |toml: &str| {
            AgentConfig::merge(&AgentArgs::default(), parse_file(toml).unwrap())
                .map(|c| c.standalone)
                .map_err(|e| e.to_string())
        };
        let profile = |knob: &str| {
            crate::profile::compile_bytes(
                format!(
                    "apiVersion: tapio.io/v1\nkind: EvidenceProfile\nmetadata:\n  name: t\n\
                     spec:\n  observers:\n    network:\n      {knob}\n"
                )
                .as_bytes(),
            )
        };
        assert!(profile("refused_window: 1ms").is_err());
        assert_eq!(
            merge("[observers.network]\nrefused_window_ms = 1\n"),
            Err(
                "`observers.network.refused_window_ms` must be between 10 and 60000 ms (got 1)"
                    .into()
            )
        );
        // The bounds themselves are accepted by both.
        assert_eq!(
            profile("refused_window: 10ms")
                .unwrap()
                .network
                .refused_window_ms,
            10
        );
        assert_eq!(
            merge("[observers.network]\nrefused_window_ms = 10\n")
                .unwrap()
                .network
                .refused_window_ms,
            10
        );
        assert_eq!(
            merge("[observers.network]\nrefused_window_ms = 60001\n").unwrap_err(),
            "`observers.network.refused_window_ms` must be between 10 and 60000 ms (got 60001)"
        );
        for (toml, want) in [
            (
                "[observers.network]\nrtt_spike_multiplier_permille = 1000\n",
                "`observers.network.rtt_spike_multiplier_permille` must be between 1100 and 100000 (got 1000)",
            ),
            (
                "[observers.node]\npsi_cpu_ratio = 1\n",
                "unknown key `observers.node.psi_cpu_ratio`",
            ),
            (
                "[observers.node]\nsample_period_ms = -5\n",
                "`observers.node.sample_period_ms` must be a non-negative integer (got -5)",
            ),
            (
                "[observers.network]\nenabled = 1\n",
                "`observers.network.enabled` must be true or false (got integer)",
            ),
            (
                "[observers.container]\nexit_scope = \"some\"\n",
                "`observers.container.exit_scope` must be \"init\" or \"all\" (got \"some\")",
            ),
            (
                "[observers.container]\nignore_exit_codes = [0]\n",
                "`observers.container.ignore_exit_codes` must be at most 16 unique exit codes between 1 and 255 (got 0)",
            ),
            (
                "[observers.container]\nignore_exit_codes = [300]\n",
                "`observers.container.ignore_exit_codes` must be a list of exit codes (got array)",
            ),
            (
                "[observers.storage]\nslow_io_threshold_ns = 2000000000\n",
                "`observers.storage.io_latency_critical_ns` (1000000000) must not be below `observers.storage.slow_io_threshold_ns` (2000000000)",
            ),
        ] {
            assert_eq!(merge(toml).unwrap_err(), want, "{toml}");
        }
        // Accepted values land in their fields, exit codes sorted like a
        // compiled profile's.
        let cfg = merge(
            "[observers.container]\nexit_scope = \"all\"\nignore_exit_codes = [143, 130]\n\
             [observers.storage]\nslow_io_threshold_ns = 2000000000\nio_latency_critical_ns = 3000000000\n",
        )
        .unwrap();
        assert_eq!(cfg.container.exit_scope, ExitScope::All);
        assert_eq!(cfg.container.ignore_exit_codes, vec![130, 143]);
        assert_eq!(cfg.storage.slow_io_threshold_ns, 2_000_000_000);
    }

    #[test]
    fn metrics_flags_and_file() {
        let enabled = |args: AgentArgs, toml: &str| {
            AgentConfig::merge(&args, parse_file(toml).unwrap())
                .map(|c| (c.metrics_enabled, c.metrics_addr))
                .map_err(|e| e.to_string())
        };
        let addr = |a: &str| AgentArgs {
            metrics_addr: Some(a.into()),
            ..Default::default()
        };
        let on = AgentArgs {
            metrics: true,
            ..Default::default()
        };
        let default = DEFAULT_METRICS_ADDR.to_string();
        // Off unless asked for.
        assert_eq!(
            enabled(AgentArgs::default(), ""),
            Ok((false, default.clone()))
        );
        // --metrics on the default address; --metrics-addr alone implies it.
        assert_eq!(enabled(on.clone(), ""), Ok((true, default.clone())));
        assert_eq!(
            enabled(addr("0.0.0.0:9999"), ""),
            Ok((true, "0.0.0.0:9999".into()))
        );
        // The file: enabled, or an address alone.
        assert_eq!(
            enabled(AgentArgs::default(), "[metrics]\nenabled = true\n"),
            Ok((true, default.clone()))
        );
        assert_eq!(
            enabled(AgentArgs::default(), "[metrics]\naddr = \"127.0.0.1:1\"\n"),
            Ok((true, "127.0.0.1:1".into()))
        );
        assert_eq!(
            enabled(AgentArgs::default(), "[metrics]\nenabled = false\n"),
            Ok((false, default.clone()))
        );
        // Flags win over the file's enabled = false and its address.
        assert_eq!(
            enabled(on, "[metrics]\nenabled = false\n"),
            Ok((true, default))
        );
        assert_eq!(
            enabled(addr("127.0.0.1:2"), "[metrics]\naddr = \"127.0.0.1:1\"\n"),
            Ok((true, "127.0.0.1:2".into()))
        );
        // An address with metrics switched off is an error, flags or not.
        let e = enabled(
            AgentArgs::default(),
            "[metrics]\nenabled = false\naddr = \"127.0.0.1:1\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("enabled = false") && e.contains("127.0.0.1:1"),
            "{e}"
        );
        assert!(enabled(
            addr("127.0.0.1:2"),
            "[metrics]\nenabled = false\naddr = \"127.0.0.1:1\"\n"
        )
        .is_err());
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

    #[test]
    fn otlp_headers_and_compression_from_flags_or_file_never_show_values() {
        use crate::agent::sinks::otlp::OtlpCompression;
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            agent: AgentArgs,
        }
        let file = || {
            parse_file(
                "otlp_compression = \"gzip\"\notlp_headers = { \"X-Api-Key\" = \"file-s3cr3t\", \"x-tenant\" = \"t1\" }\n",
            )
            .unwrap()
        };
        // The file alone.
        let cfg = AgentConfig::merge(&AgentArgs::default(), file()).unwrap();
        assert_eq!(cfg.otlp_compression, OtlpCompression::Gzip);
        assert_eq!(cfg.otlp_headers.names(), vec!["x-api-key", "x-tenant"]);
        // Flags replace the file's set and its compression.
        let cli = Cli::try_parse_from([
            "t",
            "--otlp-header",
            "authorization=Bearer flag-s3cr3t",
            "--otlp-compression",
            "none",
        ])
        .unwrap();
        let cfg = AgentConfig::merge(&cli.agent, file()).unwrap();
        assert_eq!(cfg.otlp_compression, OtlpCompression::None);
        assert_eq!(cfg.otlp_headers.names(), vec!["authorization"]);
        // Neither a config dump nor the parsed flags show a value.
        let shown = format!("{cfg:?} {:?} {:?}", cli.agent, file());
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
        // Bad input is refused by name, without the value; clap never
        // sees (so never echoes) a malformed argument.
        let cli = Cli::try_parse_from(["t", "--otlp-header", "flag-s3cr3t"]).unwrap();
        let e = AgentConfig::merge(&cli.agent, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("NAME=VALUE") && !e.contains("s3cr3t"), "{e}");
        let bad = parse_file("otlp_headers = { \"x-key\" = \"file-s3cr3t\\n\" }").unwrap();
        let e = AgentConfig::merge(&AgentArgs::default(), bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("otlp_headers: the value of x-key"), "{e}");
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(parse_file("otlp_compression = \"zstd\"").is_err());
    }

    #[test]
    fn shutdown_timeout_defaults_to_ten_and_is_bounded() {
        let cfg = AgentConfig::merge(&AgentArgs::default(), FileConfig::default()).unwrap();
        assert_eq!(cfg.shutdown_timeout, std::time::Duration::from_secs(10));
        let file = parse_file("shutdown_timeout = 30\n").unwrap();
        let cfg = AgentConfig::merge(&AgentArgs::default(), file).unwrap();
        assert_eq!(cfg.shutdown_timeout.as_secs(), 30);
        let args = AgentArgs {
            shutdown_timeout: Some(2),
            ..Default::default()
        };
        let file = parse_file("shutdown_timeout = 30\n").unwrap();
        assert_eq!(
            AgentConfig::merge(&args, file)
                .unwrap()
                .shutdown_timeout
                .as_secs(),
            2
        );
        for bad in [0, 301] {
            let args = AgentArgs {
                shutdown_timeout: Some(bad),
                ..Default::default()
            };
            let e = AgentConfig::merge(&args, FileConfig::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("1 to 300 seconds"), "{e}");
        }
    }

    #[test]
    fn retention_defaults_flags_over_file_and_ranges() {
        use crate::agent::sinks::retention::Retention;
        let merge = |args: AgentArgs, toml: &str| {
            AgentConfig::merge(&args, parse_file(toml).unwrap())
                .map(|c| c.retention)
                .map_err(|e| e.to_string())
        };
        let r = |files, bytes, age_secs: u64| Retention {
            max_files: files,
            max_bytes: bytes,
            max_age_ms: age_secs * 1000,
        };
        assert_eq!(
            merge(AgentArgs::default(), ""),
            Ok(r(100_000, 256 << 20, 7 * 86_400))
        );
        assert_eq!(
            merge(
                AgentArgs::default(),
                "retain_files = 500\nretain_bytes = 1048576\nretain_age = \"12h\"\n"
            ),
            Ok(r(500, 1 << 20, 12 * 3_600))
        );
        let flags = AgentArgs {
            retain_files: Some(7),
            retain_bytes: Some("2GiB".into()),
            retain_age: Some("30m".into()),
            ..Default::default()
        };
        assert_eq!(
            merge(
                flags,
                "retain_files = 500\nretain_bytes = \"64MiB\"\nretain_age = \"2d\"\n"
            ),
            Ok(r(7, 2 << 30, 1_800))
        );
        assert_eq!(
            merge(
                AgentArgs::default(),
                "retain_bytes = \"1TiB\"\nretain_age = \"365d\"\n"
            ),
            Ok(r(100_000, 1 << 40, 365 * 86_400))
        );
        for (toml, want) in [
            (
                "retain_files = 0",
                "--retain-files (retain_files) must be 1 to 1000000 files, got 0",
            ),
            (
                "retain_files = 1000001",
                "--retain-files (retain_files) must be 1 to 1000000 files, got 1000001",
            ),
            (
                "retain_bytes = 1048575",
                "--retain-bytes (retain_bytes) must be 1MiB to 1TiB, got 1048575",
            ),
            (
                "retain_bytes = \"2TiB\"",
                "--retain-bytes (retain_bytes) must be 1MiB to 1TiB, got 2TiB",
            ),
            (
                "retain_bytes = \"256MB\"",
                "invalid --retain-bytes (retain_bytes) \"256MB\": expected bytes or a size like 512MiB or 2GiB",
            ),
            (
                "retain_bytes = \"99999999999999999999KiB\"",
                "invalid --retain-bytes (retain_bytes) \"99999999999999999999KiB\": expected bytes or a size like 512MiB or 2GiB",
            ),
            (
                "retain_age = \"59s\"",
                "--retain-age (retain_age) must be 1m to 365d, got 59s",
            ),
            (
                "retain_age = \"366d\"",
                "--retain-age (retain_age) must be 1m to 365d, got 366d",
            ),
            (
                "retain_age = \"7 d\"",
                "invalid --retain-age (retain_age) \"7 d\": expected a duration like 30m, 12h or 7d",
            ),
            (
                "retain_age = \"1w\"",
                "invalid --retain-age (retain_age) \"1w\": expected a duration like 30m, 12h or 7d",
            ),
        ] {
            assert_eq!(merge(AgentArgs::default(), toml), Err(want.to_string()), "{toml}");
        }
        // The flag's text is what the error quotes, over a valid file.
        let bad = AgentArgs {
            retain_age: Some("0d".into()),
            ..Default::default()
        };
        assert_eq!(
            merge(bad, "retain_age = \"7d\""),
            Err("--retain-age (retain_age) must be 1m to 365d, got 0d".into())
        );
        // The shared grammar's fractions work where they make whole ms.
        let args = AgentArgs {
            retain_age: Some("1.5h".into()),
            ..Default::default()
        };
        assert_eq!(merge(args, ""), Ok(r(100_000, 256 << 20, 5_400)));
        // A negative or fractional TOML value is a type error, named.
        let e = parse_file("retain_files = -1").unwrap_err().to_string();
        assert!(e.contains("retain_files"), "{e}");
    }

    #[test]
    fn node_names_are_dns_subdomains() {
        for ok in ["n1", "node-a.example.com", "a", &"a".repeat(253)] {
            check_node_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "Node-A",
            "-a",
            "a-",
            "a_b",
            "a b",
            "a\nforged",
            &"a".repeat(254),
        ] {
            let e = check_node_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid node name"), "{e}");
            assert!(!e.contains('\n'), "escaped: {e}");
        }
        let args = AgentArgs {
            node_name: Some("Bad_Name".into()),
            ..Default::default()
        };
        let e = AgentConfig::merge(&args, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"Bad_Name\"") && e.contains("--node-name"),
            "{e}"
        );
    }

    #[test]
    fn config_and_token_files_are_read_bounded() {
        let args = AgentArgs {
            config: Some("/dev/zero".into()),
            ..Default::default()
        };
        let e = format!("{:#}", AgentConfig::resolve(&args).unwrap_err());
        assert_eq!(
            e,
            "failed to read config /dev/zero: is not a regular file (a character device)"
        );
        let e = format!("{:#}", read_token(Path::new("/dev/zero")).unwrap_err());
        assert_eq!(
            e,
            "failed to read token file /dev/zero: is not a regular file (a character device)"
        );
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; (MAX_CONFIG_BYTES + 1) as usize]).unwrap();
        let args = AgentArgs {
            config: Some(big.clone()),
            ..Default::default()
        };
        let e = format!("{:#}", AgentConfig::resolve(&args).unwrap_err());
        assert!(e.ends_with("is larger than 1048576 bytes"), "{e}");
        // /dev/null stays the way to say "no config file".
        let args = AgentArgs {
            config: Some("/dev/null".into()),
            ..Default::default()
        };
        assert!(AgentConfig::resolve(&args).is_ok());
    }
}
