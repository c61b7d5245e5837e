//! The compiled runtime configuration (SPEC §4–§5) and its hash.
//!
//! A `CompiledConfig` is what an Evidence Profile compiles to and what the
//! controller serves. The fields BPF reads land in the kernel ABI struct
//! `tapio_config` (see `bpf/include/tapio_abi.h`); units are the ABI's (ns,
//! µs, ms, permille) so nothing is rounded on the way to the kernel. The generation is *not* part of it: the controller numbers
//! configs, the content is identified by its hash.
//!
//! # The knob table
//!
//! [`KNOBS`] is the one declaration of every threshold: its observer, its
//! name in a profile and in this struct (which is also its name in the
//! agent's TOML `[observers.*]`), its type, unit and range, its default, the
//! `tapio_config` member BPF reads it from (none when only user space
//! judges it). Profile
//! validation, the agent's TOML overrides, profile compilation,
//! [`CompiledConfig::default`] and the agent's `tapio_config` writer all
//! read it, so a standalone agent cannot accept a value a profile refuses.
//! A new knob is one struct field and one row (plus the member in the
//! header, and its name in `agent::abi`'s compiler-checked member list,
//! when the kernel needs it).
//!
//! Per observer, the struct's section, its `enabled` row and the lookup
//! by [`Observer`] ([`CompiledConfig::enabled`]) expand from the one
//! observer list (`wire::anomaly`); a new observer adds its section type
//! (with `enabled: bool`) and its threshold rows here, nothing else.
//!
//! Canonical bytes are `serde_json::to_vec` of the struct: field order is
//! the declaration order below and there are no maps, so the bytes (and the
//! `sha256:<hex>` hash over them) are deterministic.
//!
//! ```json
//! {"profile":"default",
//!  "network":{"enabled":true,"refused_min_count":1,"refused_window_ms":1000,
//!             "retransmit_min_count":5,"retransmit_window_ms":1000,
//!             "rtt_spike_multiplier_permille":3000,"rtt_min_baseline_samples":8,
//!             "rtt_spike_abs_us":10000},
//!  "container":{"enabled":true,"exit_scope":"init","ignore_exit_codes":[]},
//!  "storage":{"enabled":true,"slow_io_threshold_ns":100000000,"io_latency_critical_ns":1000000000},
//!  "node":{"enabled":true,"sample_period_ms":1000,"cpu_stall_permille":500,
//!          "ipc_drop_permille":500,"memory_pressure_mpki_milli":20000,
//!          "psi_memory_permille":100,"psi_cpu_permille":950,"min_baseline_samples":8}}
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::anomaly::observer_list;
use super::Observer;

/// Most exit codes `ignore_exit_codes` can hold (the ABI array length).
pub const MAX_IGNORE_EXIT_CODES: usize = 16;

/// The struct, one section per observer in the list's order (which is
/// the JSON's), and the generic lookups by [`Observer`], expanded from
/// the one observer list (`wire::anomaly`): a new observer gets its
/// section and its `enabled` without a line here.
macro_rules! compiled_config {
    ($($variant:ident $name:ident $section:ident $feed:ident,)*) => {
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct CompiledConfig {
            /// `metadata.name` of the profile this came from.
            pub profile: String,
            $(pub $name: $section,)*
        }

        impl CompiledConfig {
            /// Whether this config runs `observer`: its section's
            /// `enabled` (every section has one; the compiler checks).
            pub fn enabled(&self, observer: Observer) -> bool {
                match observer {
                    $(Observer::$variant => self.$name.enabled,)*
                }
            }

            /// Every section with no knob set (all zero).
            fn unset(profile: String) -> CompiledConfig {
                CompiledConfig {
                    profile,
                    $($name: $section::default(),)*
                }
            }
        }
    };
}
observer_list!(compiled_config);

/// `Default` is all zero (no knob set); the built-in values are the
/// [`KNOBS`] defaults, applied by [`CompiledConfig::default`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub enabled: bool,
    /// Refusals to one destination that make an occurrence.
    pub refused_min_count: u32,
    /// Per-destination fold window for refusals.
    pub refused_window_ms: u32,
    pub retransmit_min_count: u32,
    pub retransmit_window_ms: u32,
    /// srtt must reach this × baseline (3000 = 3.0×).
    pub rtt_spike_multiplier_permille: u32,
    pub rtt_min_baseline_samples: u32,
    /// srtt must also reach this absolute floor.
    pub rtt_spike_abs_us: u32,
}

/// Which non-zero exit codes count as abnormal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitScope {
    /// Only the init process of a PID namespace (a container's main process).
    #[default]
    Init,
    /// Every thread-group leader.
    All,
}

impl ExitScope {
    /// The scope a profile or TOML names (`init`, `all`).
    pub fn parse(s: &str) -> Option<ExitScope> {
        match s {
            "init" => Some(ExitScope::Init),
            "all" => Some(ExitScope::All),
            _ => None,
        }
    }
}

/// `Default` is all zero (no knob set); the built-in values are the
/// [`KNOBS`] defaults, applied by [`CompiledConfig::default`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub enabled: bool,
    pub exit_scope: ExitScope,
    /// At most [`MAX_IGNORE_EXIT_CODES`] codes in 1..=255, sorted, unique.
    pub ignore_exit_codes: Vec<u8>,
}

/// `Default` is all zero (no knob set); the built-in values are the
/// [`KNOBS`] defaults, applied by [`CompiledConfig::default`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageConfig {
    pub enabled: bool,
    pub slow_io_threshold_ns: u64,
    pub io_latency_critical_ns: u64,
}

/// `Default` is all zero (no knob set); the built-in values are the
/// [`KNOBS`] defaults, applied by [`CompiledConfig::default`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub enabled: bool,
    pub sample_period_ms: u32,
    /// Stalled-cycle share (of cycles) that makes a stall, in permille.
    pub cpu_stall_permille: u32,
    /// IPC below this share of the CPU's baseline is a degradation.
    pub ipc_drop_permille: u32,
    /// LLC misses per kilo-instruction, ×1000.
    pub memory_pressure_mpki_milli: u32,
    /// PSI memory `some` stall share of the period, in permille.
    pub psi_memory_permille: u32,
    /// PSI cpu `some` stall share of the period, in permille.
    pub psi_cpu_permille: u32,
    pub min_baseline_samples: u32,
}

impl Default for CompiledConfig {
    /// The built-in defaults (SPEC §1, the [`KNOBS`] defaults), used by a
    /// standalone agent.
    fn default() -> Self {
        let mut c = CompiledConfig::unset("default".into());
        for k in &KNOBS {
            k.set(&mut c, k.default.clone());
        }
        c
    }
}

/// The granularity of the field a duration knob lands in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Nanos,
    Micros,
    Millis,
}

impl Unit {
    pub fn nanos(self) -> u64 {
        match self {
            Unit::Nanos => 1,
            Unit::Micros => 1_000,
            Unit::Millis => 1_000_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Unit::Nanos => "nanoseconds",
            Unit::Micros => "microseconds",
            Unit::Millis => "milliseconds",
        }
    }
}

/// What a knob holds and the values it may take. Integer bounds are
/// inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnobKind {
    Bool,
    /// A whole number.
    Count {
        min: u32,
        max: u32,
    },
    /// A duration between the bounds (ns), stored as a whole number of
    /// `unit` (the kernel ABI's unit, so nothing is rounded on the way).
    Duration {
        min_ns: u64,
        max_ns: u64,
        unit: Unit,
    },
    /// A decimal with at most three places, stored in thousandths
    /// (permille for ratios); bounds in thousandths.
    Milli {
        min: u32,
        max: u32,
    },
    /// `init` or `all`.
    ExitScope,
    /// Unique exit codes in `min..=max`, at most [`MAX_IGNORE_EXIT_CODES`],
    /// stored sorted.
    ExitCodes {
        min: u8,
        max: u8,
    },
}

/// A knob's value in its [`CompiledConfig`] unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnobValue {
    Bool(bool),
    /// Counts, durations in the field's unit, thousandths.
    Int(u64),
    Scope(ExitScope),
    Codes(Vec<u8>),
}

impl std::fmt::Display for KnobValue {
    /// As the agent's TOML writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KnobValue::Bool(b) => write!(f, "{b}"),
            KnobValue::Int(i) => write!(f, "{i}"),
            KnobValue::Scope(ExitScope::Init) => f.write_str("\"init\""),
            KnobValue::Scope(ExitScope::All) => f.write_str("\"all\""),
            KnobValue::Codes(codes) => write!(f, "{codes:?}"),
        }
    }
}

/// A [`CompiledConfig`] field a knob lands in.
trait Field {
    fn value(&self) -> KnobValue;
    /// Stores `v`; a value of another variant is ignored (the table pairs
    /// each field with its own kind, see the `knobs_are_consistent` test).
    fn store(&mut self, v: KnobValue);
}

impl Field for bool {
    fn value(&self) -> KnobValue {
        KnobValue::Bool(*self)
    }
    fn store(&mut self, v: KnobValue) {
        if let KnobValue::Bool(b) = v {
            *self = b;
        }
    }
}

impl Field for u32 {
    fn value(&self) -> KnobValue {
        KnobValue::Int(u64::from(*self))
    }
    fn store(&mut self, v: KnobValue) {
        // Ranges keep every u32 knob far below u32::MAX; saturate, never wrap.
        if let KnobValue::Int(i) = v {
            *self = u32::try_from(i).unwrap_or(u32::MAX);
        }
    }
}

impl Field for u64 {
    fn value(&self) -> KnobValue {
        KnobValue::Int(*self)
    }
    fn store(&mut self, v: KnobValue) {
        if let KnobValue::Int(i) = v {
            *self = i;
        }
    }
}

impl Field for ExitScope {
    fn value(&self) -> KnobValue {
        KnobValue::Scope(*self)
    }
    fn store(&mut self, v: KnobValue) {
        if let KnobValue::Scope(x) = v {
            *self = x;
        }
    }
}

impl Field for Vec<u8> {
    fn value(&self) -> KnobValue {
        KnobValue::Codes(self.clone())
    }
    fn store(&mut self, v: KnobValue) {
        if let KnobValue::Codes(mut codes) = v {
            codes.sort_unstable();
            codes.dedup();
            codes.truncate(MAX_IGNORE_EXIT_CODES);
            *self = codes;
        }
    }
}

/// One row of the knob table.
#[derive(Debug)]
pub struct Knob {
    pub observer: Observer,
    /// Key in a profile's `spec.observers.<observer>` (`refused_window`).
    pub name: &'static str,
    /// Field of [`CompiledConfig`] and key in the agent's TOML
    /// `[observers.<observer>]` (`refused_window_ms`).
    pub field: &'static str,
    pub kind: KnobKind,
    pub default: KnobValue,
    /// The `struct tapio_config` member a BPF program reads it from
    /// (`bpf/include/tapio_abi.h`; `flags` for `enabled`: the observer's
    /// bit), or `None` when only user space judges it: the kernel struct
    /// holds nothing BPF does not read. `agent::abi` resolves the member
    /// through a list the compiler checks against the generated struct,
    /// and tests that every named member is in that list.
    pub abi: Option<&'static str>,
    get: fn(&CompiledConfig) -> KnobValue,
    put: fn(&mut CompiledConfig, KnobValue),
}

impl Knob {
    /// The knob's value in `cfg`.
    pub fn get(&self, cfg: &CompiledConfig) -> KnobValue {
        (self.get)(cfg)
    }

    /// Stores a value already judged by [`Knob::check`] into `cfg`.
    pub fn set(&self, cfg: &mut CompiledConfig, v: KnobValue) {
        (self.put)(cfg, v);
    }

    /// Judges a value given in the knob's [`CompiledConfig`] unit (the
    /// agent's TOML): `Err` says what is allowed, in that unit.
    pub fn check(&self, v: &KnobValue) -> Result<(), String> {
        let in_range = |i: u64, min: u64, max: u64, unit: &str| {
            if (min..=max).contains(&i) {
                Ok(())
            } else {
                Err(format!("must be between {min} and {max}{unit} (got {i})"))
            }
        };
        match (self.kind, v) {
            (KnobKind::Bool, KnobValue::Bool(_)) | (KnobKind::ExitScope, KnobValue::Scope(_)) => {
                Ok(())
            }
            (KnobKind::Count { min, max } | KnobKind::Milli { min, max }, KnobValue::Int(i)) => {
                in_range(*i, min.into(), max.into(), "")
            }
            (
                KnobKind::Duration {
                    min_ns,
                    max_ns,
                    unit,
                },
                KnobValue::Int(i),
            ) => {
                let suffix = match unit {
                    Unit::Nanos => " ns",
                    Unit::Micros => " us",
                    Unit::Millis => " ms",
                };
                in_range(*i, min_ns / unit.nanos(), max_ns / unit.nanos(), suffix)
            }
            (KnobKind::ExitCodes { min, max }, KnobValue::Codes(codes)) => {
                let rule = format!(
                    "must be at most {MAX_IGNORE_EXIT_CODES} unique exit codes between {min} and {max}"
                );
                let mut seen = Vec::with_capacity(codes.len());
                for c in codes {
                    if !(min..=max).contains(c) || seen.contains(c) {
                        return Err(format!("{rule} (got {c})"));
                    }
                    seen.push(*c);
                }
                if codes.len() > MAX_IGNORE_EXIT_CODES {
                    return Err(format!("{rule} (got {} codes)", codes.len()));
                }
                Ok(())
            }
            _ => Err(format!("must be {}", self.kind_text())),
        }
    }

    /// `v` in a unit common to every knob of its kind: ns for durations,
    /// the stored integer otherwise (0 for non-numbers).
    pub fn nanos(&self, v: &KnobValue) -> u64 {
        match (self.kind, v) {
            (KnobKind::Duration { unit, .. }, KnobValue::Int(i)) => i.saturating_mul(unit.nanos()),
            (_, KnobValue::Int(i)) => *i,
            _ => 0,
        }
    }

    /// Smallest allowed value, in the unit of [`Knob::nanos`].
    pub fn min_nanos(&self) -> u64 {
        match self.kind {
            KnobKind::Duration { min_ns, .. } => min_ns,
            KnobKind::Count { min, .. } | KnobKind::Milli { min, .. } => min.into(),
            _ => 0,
        }
    }

    /// Largest allowed value, in the unit of [`Knob::nanos`].
    pub fn max_nanos(&self) -> u64 {
        match self.kind {
            KnobKind::Duration { max_ns, .. } => max_ns,
            KnobKind::Count { max, .. } | KnobKind::Milli { max, .. } => max.into(),
            _ => 0,
        }
    }

    /// What the knob's TOML value must be, for "must be …" messages.
    pub fn kind_text(&self) -> &'static str {
        match self.kind {
            KnobKind::Bool => "true or false",
            KnobKind::Count { .. } | KnobKind::Milli { .. } | KnobKind::Duration { .. } => {
                "a non-negative integer"
            }
            KnobKind::ExitScope => "\"init\" or \"all\"",
            KnobKind::ExitCodes { .. } => "a list of exit codes",
        }
    }
}

/// The row of `observer`'s knob named `name` in a profile.
pub fn knob(observer: Observer, name: &str) -> Option<&'static Knob> {
    KNOBS
        .iter()
        .find(|k| k.observer == observer && k.name == name)
        .copied()
}

/// The row of `observer`'s knob whose [`CompiledConfig`] field is `field`.
pub fn knob_by_field(observer: Observer, field: &str) -> Option<&'static Knob> {
    KNOBS
        .iter()
        .find(|k| k.observer == observer && k.field == field)
        .copied()
}

/// Ordered knob pairs `(observer, low, high)` by profile name: `high` must
/// not be below `low`. A critical latency below the slow threshold would
/// make every slow request critical.
pub static AT_LEAST: [(Observer, &str, &str); 1] = [(
    Observer::Storage,
    "slow_io_threshold",
    "io_latency_critical",
)];

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
/// Every ratio: 0.001..=1.
const RATIO: KnobKind = KnobKind::Milli { min: 1, max: 1000 };
const ON: KnobValue = KnobValue::Bool(true);

/// One row: observer, the [`CompiledConfig`] field (`section.field`), the
/// profile name, kind and range, default, the `tapio_config` field, and
/// whether BPF reads it.
macro_rules! row {
    ($obs:ident, $sec:ident . $field:ident, $name:literal, $kind:expr, $default:expr, kernel: $abi:literal) => {
        row!(@ $obs, $sec.$field, $name, $kind, $default, Some($abi))
    };
    ($obs:ident, $sec:ident . $field:ident, $name:literal, $kind:expr, $default:expr, user) => {
        row!(@ $obs, $sec.$field, $name, $kind, $default, None)
    };
    (@ $obs:ident, $sec:ident . $field:ident, $name:literal, $kind:expr, $default:expr, $abi:expr) => {
        Knob {
            observer: Observer::$obs,
            name: $name,
            field: stringify!($field),
            kind: $kind,
            default: $default,
            abi: $abi,
            get: |c| Field::value(&c.$sec.$field),
            put: |c, v| Field::store(&mut c.$sec.$field, v),
        }
    };
}

/// Every observer's `enabled` knob, one row per line of the observer
/// list, so a new observer can be switched off without a row of its own.
/// It reaches BPF as the observer's bit in `tapio_config.flags`.
macro_rules! enabled_rows {
    ($($variant:ident $name:ident $section:ident $feed:ident,)*) => {
        static ENABLED: [Knob; Observer::ALL.len()] = [
            $(row!($variant, $name.enabled, "enabled", KnobKind::Bool, ON, kernel: "flags"),)*
        ];
    };
}
observer_list!(enabled_rows);

/// Every knob: each observer's `enabled` (from the observer list), then
/// [`THRESHOLDS`]. Per observer, that is documentation order (`enabled`
/// first), which is the order profile messages list a section's knobs in.
pub static KNOBS: [&Knob; ENABLED.len() + THRESHOLDS.len()] = {
    let mut all = [&ENABLED[0]; ENABLED.len() + THRESHOLDS.len()];
    let mut i = 0;
    while i < ENABLED.len() {
        all[i] = &ENABLED[i];
        i += 1;
    }
    while i < all.len() {
        all[i] = &THRESHOLDS[i - ENABLED.len()];
        i += 1;
    }
    all
};

/// Every threshold, per observer in documentation order: the one place a
/// knob is declared (issue 17). `enabled` rows come from the observer list.
#[rustfmt::skip]
pub static THRESHOLDS: [Knob; 18] = [
    row!(Network, network.refused_min_count, "refused_min_count",
        KnobKind::Count { min: 1, max: 1000 }, KnobValue::Int(1),
        user),
    row!(Network, network.refused_window_ms, "refused_window",
        KnobKind::Duration { min_ns: 10 * MS, max_ns: 60 * S, unit: Unit::Millis },
        KnobValue::Int(1000), user),
    row!(Network, network.retransmit_min_count, "retransmit_min_count",
        KnobKind::Count { min: 1, max: 10_000 }, KnobValue::Int(5),
        user),
    row!(Network, network.retransmit_window_ms, "retransmit_window",
        KnobKind::Duration { min_ns: 10 * MS, max_ns: 60 * S, unit: Unit::Millis },
        KnobValue::Int(1000), user),
    row!(Network, network.rtt_spike_multiplier_permille, "rtt_spike_multiplier",
        KnobKind::Milli { min: 1_100, max: 100_000 }, KnobValue::Int(3000),
        kernel: "net_rtt_multiplier_permille"),
    row!(Network, network.rtt_min_baseline_samples, "rtt_min_baseline_samples",
        KnobKind::Count { min: 1, max: 1000 }, KnobValue::Int(8),
        kernel: "net_rtt_min_baseline_samples"),
    row!(Network, network.rtt_spike_abs_us, "rtt_spike_abs",
        KnobKind::Duration { min_ns: 100_000, max_ns: 60 * S, unit: Unit::Micros },
        KnobValue::Int(10_000), kernel: "net_rtt_abs_us"),
    row!(Container, container.exit_scope, "exit_scope", KnobKind::ExitScope,
        KnobValue::Scope(ExitScope::Init), kernel: "ctr_exit_scope"),
    row!(Container, container.ignore_exit_codes, "ignore_exit_codes",
        KnobKind::ExitCodes { min: 1, max: 255 }, KnobValue::Codes(Vec::new()),
        kernel: "ctr_ignore_exit_codes"),
    row!(Storage, storage.slow_io_threshold_ns, "slow_io_threshold",
        KnobKind::Duration { min_ns: MS, max_ns: 60 * S, unit: Unit::Nanos },
        KnobValue::Int(100 * MS), kernel: "sto_slow_io_ns"),
    row!(Storage, storage.io_latency_critical_ns, "io_latency_critical",
        KnobKind::Duration { min_ns: MS, max_ns: 600 * S, unit: Unit::Nanos },
        KnobValue::Int(S), user),
    row!(Node, node.sample_period_ms, "sample_period",
        KnobKind::Duration { min_ns: 100 * MS, max_ns: 60 * S, unit: Unit::Millis },
        KnobValue::Int(1000), user),
    row!(Node, node.cpu_stall_permille, "cpu_stall_ratio", RATIO, KnobValue::Int(500),
        user),
    row!(Node, node.ipc_drop_permille, "ipc_drop_ratio", RATIO, KnobValue::Int(500),
        user),
    row!(Node, node.memory_pressure_mpki_milli, "memory_pressure_mpki",
        KnobKind::Milli { min: 1, max: 1_000_000 }, KnobValue::Int(20_000),
        user),
    row!(Node, node.psi_memory_permille, "psi_memory_ratio", RATIO, KnobValue::Int(100),
        user),
    row!(Node, node.psi_cpu_permille, "psi_cpu_ratio", RATIO, KnobValue::Int(950),
        user),
    row!(Node, node.min_baseline_samples, "min_baseline_samples",
        KnobKind::Count { min: 1, max: 1000 }, KnobValue::Int(8),
        user),
];

/// `sha256:<hex>` over the canonical JSON bytes of a [`CompiledConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConfigHash(pub String);

impl std::fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl CompiledConfig {
    /// The canonical bytes the hash is computed over.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serialising plain structs of numbers, bools, strings and a Vec<u8>
        // cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn hash(&self) -> ConfigHash {
        let digest = Sha256::digest(self.canonical_bytes());
        let mut hex = String::with_capacity(7 + 64);
        hex.push_str("sha256:");
        for b in digest {
            hex.push_str(&format!("{b:02x}"));
        }
        ConfigHash(hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_content_addressed() {
        let a = CompiledConfig::default();
        let h = a.hash();
        assert!(h.0.starts_with("sha256:") && h.0.len() == 71, "{h}");
        assert_eq!(h, CompiledConfig::default().hash());
        let mut b = a.clone();
        b.network.refused_min_count = 2;
        assert_ne!(b.hash(), h);
        // Canonical bytes round-trip.
        let back: CompiledConfig = serde_json::from_slice(&a.canonical_bytes()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        // The hash pins every default (examples/profiles/default.yaml spells
        // them out and tests/profile.rs compiles it to this same hash).
        assert_eq!(
            CompiledConfig::default().hash().0,
            "sha256:0194b755544257dae4c936b49cbaeaab77ffc74e093720ee66ded249a639dc91"
        );
    }

    #[test]
    fn knobs_are_consistent() {
        let d = CompiledConfig::default();
        let json = serde_json::to_value(&d).unwrap();
        let mut fields = 0;
        for obs in Observer::ALL {
            let section = json[obs.as_str()].as_object().unwrap();
            for key in section.keys() {
                fields += 1;
                let k = knob_by_field(obs, key).unwrap_or_else(|| panic!("{obs:?}.{key}: no row"));
                assert_eq!(knob(obs, k.name).map(|r| r.field), Some(k.field));
            }
        }
        // One row per field, no row without a field.
        assert_eq!(fields, KNOBS.len());
        for k in &KNOBS {
            assert_eq!(k.get(&d), k.default, "{}", k.field);
            assert_eq!(k.check(&k.default), Ok(()), "{}", k.field);
            // Storing a value of the row's own kind reaches its own field.
            let mut c = d.clone();
            let other = match (&k.kind, &k.default) {
                (KnobKind::Bool, KnobValue::Bool(b)) => KnobValue::Bool(!b),
                (KnobKind::Count { max, .. } | KnobKind::Milli { max, .. }, _) => {
                    KnobValue::Int((*max).into())
                }
                (KnobKind::Duration { max_ns, unit, .. }, _) => {
                    KnobValue::Int(max_ns / unit.nanos())
                }
                (KnobKind::ExitScope, _) => KnobValue::Scope(ExitScope::All),
                (KnobKind::ExitCodes { max, .. }, _) => KnobValue::Codes(vec![*max]),
                (kind, v) => panic!("{}: default {v:?} does not fit {kind:?}", k.field),
            };
            assert_ne!(other, k.default, "{}", k.field);
            assert_eq!(k.check(&other), Ok(()), "{}", k.field);
            k.set(&mut c, other.clone());
            assert_eq!(k.get(&c), other, "{}", k.field);
            let changed = serde_json::to_value(&c).unwrap();
            assert_ne!(
                changed[k.observer.as_str()][k.field],
                json[k.observer.as_str()][k.field]
            );
        }
    }

    /// `enabled` by observer reads that observer's own section, and every
    /// observer's `enabled` is a knob row (a profile can switch it).
    #[test]
    fn enabled_is_looked_up_by_observer() {
        for o in Observer::ALL {
            let mut c = CompiledConfig::default();
            assert!(c.enabled(o), "{o:?}");
            let row = knob_by_field(o, "enabled").unwrap_or_else(|| panic!("{o:?}: no row"));
            row.set(&mut c, KnobValue::Bool(false));
            for other in Observer::ALL {
                assert_eq!(c.enabled(other), other != o, "{o:?} off, {other:?}");
            }
        }
    }

    #[test]
    fn check_judges_values_in_the_config_unit() {
        let obs = Observer::Network;
        let window = knob_by_field(obs, "refused_window_ms").unwrap();
        assert_eq!(window.check(&KnobValue::Int(10)), Ok(()));
        assert_eq!(window.check(&KnobValue::Int(60_000)), Ok(()));
        assert_eq!(
            window.check(&KnobValue::Int(1)),
            Err("must be between 10 and 60000 ms (got 1)".into())
        );
        assert_eq!(
            window.check(&KnobValue::Int(60_001)),
            Err("must be between 10 and 60000 ms (got 60001)".into())
        );
        assert_eq!(
            window.check(&KnobValue::Bool(true)),
            Err("must be a non-negative integer".into())
        );
        let codes = knob_by_field(Observer::Container, "ignore_exit_codes").unwrap();
        assert_eq!(codes.check(&KnobValue::Codes(vec![1, 255])), Ok(()));
        for bad in [vec![0], vec![3, 3]] {
            assert!(
                codes.check(&KnobValue::Codes(bad.clone())).is_err(),
                "{bad:?}"
            );
        }
        assert!(codes.check(&KnobValue::Codes((1..=17).collect())).is_err());
        let scope = knob_by_field(Observer::Container, "exit_scope").unwrap();
        assert_eq!(
            scope.check(&KnobValue::Int(1)),
            Err("must be \"init\" or \"all\"".into())
        );
    }
}
