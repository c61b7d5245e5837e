//! The validated Evidence Profile: what the user wrote, typed and range
//! checked, with `None` for every knob the document left out. The ranges
//! below are the single source of truth for validation and error messages.

use std::fmt;

use crate::wire::config::ExitScope;

/// `apiVersion` every profile must carry.
pub const API_VERSION: &str = "tapio.io/v1";
/// `kind` every profile must carry.
pub const KIND: &str = "EvidenceProfile";
/// Largest profile document accepted, in bytes. Real profiles are < 4 KiB.
pub const MAX_PROFILE_BYTES: usize = 1024 * 1024;
/// Longest `metadata.name` (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// The observer sections `spec.observers` may contain.
pub const OBSERVERS: &[&str] = &["network", "container", "storage", "node"];

/// Knob names per observer, in documentation order (`enabled` first).
pub const NETWORK_KNOBS: &[&str] = &[
    "enabled",
    "refused_min_count",
    "refused_window",
    "retransmit_min_count",
    "retransmit_window",
    "rtt_spike_multiplier",
    "rtt_min_baseline_samples",
    "rtt_spike_abs",
];
pub const CONTAINER_KNOBS: &[&str] = &["enabled", "exit_scope", "ignore_exit_codes"];
pub const STORAGE_KNOBS: &[&str] = &["enabled", "slow_io_threshold", "io_latency_critical"];
pub const NODE_KNOBS: &[&str] = &[
    "enabled",
    "sample_period",
    "cpu_stall_ratio",
    "ipc_drop_ratio",
    "memory_pressure_mpki",
    "psi_memory_ratio",
    "psi_cpu_ratio",
    "min_baseline_samples",
];

/// The granularity of the ABI field a duration lands in.
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

/// An inclusive integer range.
#[derive(Debug, Clone, Copy)]
pub struct CountRange {
    pub min: u32,
    pub max: u32,
}

/// An inclusive duration range, in nanoseconds, and the ABI unit it must be
/// a whole multiple of.
#[derive(Debug, Clone, Copy)]
pub struct DurationRange {
    pub min_ns: u64,
    pub max_ns: u64,
    pub unit: Unit,
}

/// An inclusive range of a decimal with at most three places, in
/// thousandths (the ABI's permille / milli units).
#[derive(Debug, Clone, Copy)]
pub struct DecimalRange {
    pub min_milli: u32,
    pub max_milli: u32,
}

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

pub const REFUSED_MIN_COUNT: CountRange = CountRange { min: 1, max: 1000 };
pub const REFUSED_WINDOW: DurationRange = DurationRange {
    min_ns: 10 * MS,
    max_ns: 60 * S,
    unit: Unit::Millis,
};
pub const RETRANSMIT_MIN_COUNT: CountRange = CountRange {
    min: 1,
    max: 10_000,
};
pub const RETRANSMIT_WINDOW: DurationRange = DurationRange {
    min_ns: 10 * MS,
    max_ns: 60 * S,
    unit: Unit::Millis,
};
pub const RTT_SPIKE_MULTIPLIER: DecimalRange = DecimalRange {
    min_milli: 1_100,
    max_milli: 100_000,
};
pub const RTT_MIN_BASELINE_SAMPLES: CountRange = CountRange { min: 1, max: 1000 };
pub const RTT_SPIKE_ABS: DurationRange = DurationRange {
    min_ns: 100_000,
    max_ns: 60 * S,
    unit: Unit::Micros,
};
pub const IGNORE_EXIT_CODE: CountRange = CountRange { min: 1, max: 255 };
pub const SLOW_IO_THRESHOLD: DurationRange = DurationRange {
    min_ns: MS,
    max_ns: 60 * S,
    unit: Unit::Nanos,
};
pub const IO_LATENCY_CRITICAL: DurationRange = DurationRange {
    min_ns: MS,
    max_ns: 600 * S,
    unit: Unit::Nanos,
};
pub const SAMPLE_PERIOD: DurationRange = DurationRange {
    min_ns: 100 * MS,
    max_ns: 60 * S,
    unit: Unit::Millis,
};
pub const RATIO: DecimalRange = DecimalRange {
    min_milli: 1,
    max_milli: 1000,
};
pub const MEMORY_PRESSURE_MPKI: DecimalRange = DecimalRange {
    min_milli: 1,
    max_milli: 1_000_000,
};
pub const MIN_BASELINE_SAMPLES: CountRange = CountRange { min: 1, max: 1000 };

/// A validated profile. Every `Some` value is inside its range.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EvidenceProfile {
    pub name: String,
    pub network: NetworkSpec,
    pub container: ContainerSpec,
    pub storage: StorageSpec,
    pub node: NodeSpec,
}

/// Durations are nanoseconds; decimals are thousandths.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkSpec {
    pub enabled: Option<bool>,
    pub refused_min_count: Option<u32>,
    pub refused_window_ns: Option<u64>,
    pub retransmit_min_count: Option<u32>,
    pub retransmit_window_ns: Option<u64>,
    pub rtt_spike_multiplier_milli: Option<u32>,
    pub rtt_min_baseline_samples: Option<u32>,
    pub rtt_spike_abs_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerSpec {
    pub enabled: Option<bool>,
    pub exit_scope: Option<ExitScope>,
    /// As written: unique, each in 1..=255, at most 16.
    pub ignore_exit_codes: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StorageSpec {
    pub enabled: Option<bool>,
    pub slow_io_threshold_ns: Option<u64>,
    pub io_latency_critical_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeSpec {
    pub enabled: Option<bool>,
    pub sample_period_ns: Option<u64>,
    pub cpu_stall_ratio_milli: Option<u32>,
    pub ipc_drop_ratio_milli: Option<u32>,
    pub memory_pressure_mpki_milli: Option<u32>,
    pub psi_memory_ratio_milli: Option<u32>,
    pub psi_cpu_ratio_milli: Option<u32>,
    pub min_baseline_samples: Option<u32>,
}

/// Formats nanoseconds with the largest unit that divides them exactly
/// (`60s`, `100ms`, `1500us`).
pub struct DisplayDuration(pub u64);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0;
        for (unit, name) in [(S, "s"), (MS, "ms"), (1_000, "us")] {
            if ns >= unit && ns % unit == 0 {
                return write!(f, "{}{name}", ns / unit);
            }
        }
        write!(f, "{ns}ns")
    }
}

/// Formats thousandths as a short decimal (`2500` → `2.5`, `1` → `0.001`).
pub struct DisplayMilli(pub u64);

impl fmt::Display for DisplayMilli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / 1000, self.0 % 1000);
        if frac == 0 {
            return write!(f, "{int}");
        }
        let digits = format!("{frac:03}");
        write!(f, "{int}.{}", digits.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        assert_eq!(DisplayDuration(60 * S).to_string(), "60s");
        assert_eq!(DisplayDuration(MS).to_string(), "1ms");
        assert_eq!(DisplayDuration(1_500_000).to_string(), "1500us");
        assert_eq!(DisplayDuration(7).to_string(), "7ns");
        assert_eq!(DisplayMilli(2500).to_string(), "2.5");
        assert_eq!(DisplayMilli(1).to_string(), "0.001");
        assert_eq!(DisplayMilli(3000).to_string(), "3");
    }
}
