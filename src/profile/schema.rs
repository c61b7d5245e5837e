//! The validated Evidence Profile: what the user wrote, typed and range
//! checked against the knob table, and how durations and decimals are shown
//! back in messages.

use std::fmt;

use crate::wire::config::{Knob, KnobValue};

/// `apiVersion` every profile must carry.
pub const API_VERSION: &str = "tapio.io/v1";
/// `kind` every profile must carry.
pub const KIND: &str = "EvidenceProfile";
/// Largest profile document accepted, in bytes. Real profiles are < 4 KiB.
pub const MAX_PROFILE_BYTES: usize = 1024 * 1024;
/// Longest `metadata.name` (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

/// A validated profile: every knob the document set, judged against its
/// [`KNOBS`](crate::wire::config::KNOBS) row and held in its
/// [`CompiledConfig`](crate::wire::CompiledConfig) unit, in document order.
/// Knobs left out are absent (they compile to their defaults).
#[derive(Debug, Clone, Default)]
pub struct EvidenceProfile {
    pub name: String,
    pub knobs: Vec<(&'static Knob, KnobValue)>,
}

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

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
