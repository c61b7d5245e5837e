//! The compiled runtime configuration (SPEC §4–§5) and its hash.
//!
//! A `CompiledConfig` is what an Evidence Profile compiles to and what the
//! controller serves. Every field maps one-to-one onto a field of the kernel
//! ABI struct `tapio_config` (see `bpf/include/tapio_abi.h`); units are the
//! ABI's (ns, µs, ms, permille) so nothing is rounded on the way to the
//! kernel. The generation is *not* part of it: the controller numbers
//! configs, the content is identified by its hash.
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

/// Most exit codes `ignore_exit_codes` can hold (the ABI array length).
pub const MAX_IGNORE_EXIT_CODES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledConfig {
    /// `metadata.name` of the profile this came from.
    pub profile: String,
    pub network: NetworkConfig,
    pub container: ContainerConfig,
    pub storage: StorageConfig,
    pub node: NodeConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitScope {
    /// Only the init process of a PID namespace (a container's main process).
    Init,
    /// Every thread-group leader.
    All,
}

impl ExitScope {
    /// Value of `tapio_config.ctr_exit_scope`.
    pub fn abi_value(self) -> u32 {
        match self {
            ExitScope::Init => 0,
            ExitScope::All => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub enabled: bool,
    pub exit_scope: ExitScope,
    /// At most [`MAX_IGNORE_EXIT_CODES`] codes in 1..=255, sorted, unique.
    pub ignore_exit_codes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageConfig {
    pub enabled: bool,
    pub slow_io_threshold_ns: u64,
    pub io_latency_critical_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The built-in defaults (SPEC §1), used by a standalone agent.
    fn default() -> Self {
        CompiledConfig {
            profile: "default".into(),
            network: NetworkConfig {
                enabled: true,
                refused_min_count: 1,
                refused_window_ms: 1000,
                retransmit_min_count: 5,
                retransmit_window_ms: 1000,
                rtt_spike_multiplier_permille: 3000,
                rtt_min_baseline_samples: 8,
                rtt_spike_abs_us: 10_000,
            },
            container: ContainerConfig {
                enabled: true,
                exit_scope: ExitScope::Init,
                ignore_exit_codes: Vec::new(),
            },
            storage: StorageConfig {
                enabled: true,
                slow_io_threshold_ns: 100_000_000,
                io_latency_critical_ns: 1_000_000_000,
            },
            node: NodeConfig {
                enabled: true,
                sample_period_ms: 1000,
                cpu_stall_permille: 500,
                ipc_drop_permille: 500,
                memory_pressure_mpki_milli: 20_000,
                psi_memory_permille: 100,
                psi_cpu_permille: 950,
                min_baseline_samples: 8,
            },
        }
    }
}

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
}
