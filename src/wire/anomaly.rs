//! The stable anomaly names and what each one means on the wire.
//!
//! # `data` per type
//!
//! Every occurrence's `data` carries `config_generation` and
//! `timestamp_ns`; a process in a container adds `container_id`,
//! `container_runtime`, `cgroup_path` and, under Kubernetes, `pod_uid`,
//! `pod_name` and `namespace` (the last two from the kubelet's
//! `/var/log/pods/<namespace>_<pod>_<uid>/`, absent when not found).
//! Fields are facts the kernel stated; a fact it did not state is absent,
//! never zero-filled.
//!
//! Network types share `pid`, `tid`, `comm` (the connecting process, taken
//! at connect time), `family` (`ipv4`/`ipv6`), `saddr`, `sport`, `daddr`,
//! `dport`, `netns` (network namespace inode) and `cgroup_id`.
//!
//! | type | further fields |
//! |---|---|
//! | `connection_refused` | `count` (refusals folded into this occurrence; their sum over a destination = the refusals seen), `cause` (`rst`/`icmp`), `errno` `ECONNREFUSED` |
//! | `connection_timeout` | `errno` `ETIMEDOUT`; when this kernel dropped packets of that connect (its SYNs or their answers, any netns of the node): `drops` (how many) and `drop_reason` (the kernel's `skb_drop_reason` name of the first, e.g. `NETFILTER_DROP`) with `drop_reason_code` (its number on this kernel) |
//! | `connection_unreachable` | `errno` `EHOSTUNREACH`/`ENETUNREACH`; `drops`, `drop_reason`, `drop_reason_code` as for timeouts |
//! | `connection_reset` | `count` (resets folded per destination, like refusals), `state` at the reset (`ESTABLISHED`, `CLOSE_WAIT`, `FIN_WAIT1`, …), `errno` the application sees (`ECONNRESET`, or `EPIPE` from `CLOSE_WAIT`), `unacked_bytes` (data sent and never acknowledged) |
//! | `retransmit_spike` | `retransmits` (segments in this occurrence; the first occurrence at the threshold, the rest of the spike window in one follow-up), `count` (the same number), `window_ms`, `srtt_us` |
//! | `rtt_degradation` | `srtt_us`, `baseline_srtt_us`, `baseline_samples` |
//! | `oom_kill` | `pid`, `tid`, `comm`, `signal` 9, `exit_code` 137, `memory_usage_bytes` (+ `anon_rss_bytes`, `file_rss_bytes`, `shmem_rss_bytes`), `memory_limit_bytes`, `memory_limit_source`, `memory_limit_depth`, `memcg_usage_bytes`, `ns_pid`, `cgroup_id`, `memcg_id` |
//! | `abnormal_exit` | `pid`, `tid`, `comm`, `signal`, `signal_name`, `exit_code`, `core_dumped`, `pidns_init`, `ns_pid`; when another process sent the fatal signal: `sender_pid`, `sender_comm`, `sender_cgroup_id` and `sender_container_id` (sender in a container); none for a signal the kernel raised or the process sent itself |
//! | `io_error` | `dev` (`major:minor`), `sector`, `nr_sectors`, `bytes`, `op` (`read`, `write`, `flush`, `discard`, …; a cache flush and the empty PREFLUSH write completing it are `flush`), `flags` (of `sync`, `meta`, `fua`, `preflush`), `errno`, `errno_value`, `blk_status`, `latency_ns` when matched to its issue, `requeues`, `partial` |
//! | `latency_spike` | as `io_error` without the error fields, plus `latency_ns`, `slow_io_threshold_ns`, `io_latency_critical_ns` |
//! | `cpu_stall`, `ipc_degradation`, `memory_pressure` | `cpu`, the counter values, the ratio and the baseline that judged it, `source` (`pmc`/`psi`) |

use serde::{Deserialize, Serialize};

/// The one list of observers: adding an observer is one line here, plus
/// its folder `src/agent/observers/<name>/` (classifier, decode, BPF
/// source) and its config section with its knob rows (`wire::config`, the
/// knob table). Everything else that names observers derives from it.
///
/// A line is `Variant name SectionType feed`:
/// * `name` is its string everywhere: the serde name, the metrics label,
///   the status key, the config section, the BPF object (`<name>.bpf.o`
///   under `--ebpf-dir`), the agent's module, the CLI value;
/// * `SectionType` is its [`CompiledConfig`](super::CompiledConfig)
///   section (it must have `enabled: bool`, the compiler checks);
/// * `feed` is `ring` (a BPF object and its ring buffer, run by the drain
///   thread) or `sampled` (a sampler thread of its own, no BPF).
///
/// The order is the flag bit order in `tapio_config.flags` (checked at
/// compile time against the header's `TAPIO_FLAG_<NAME>`) and the section
/// order of the compiled config JSON (whose bytes are hashed: append, do
/// not reorder).
///
/// It is a macro that hands the list to `$callback`, so each consumer
/// (this file, `wire::config`, `agent::observers`) expands it into what it
/// needs without restating a name.
macro_rules! observer_list {
    ($callback:ident) => {
        $callback! {
            Network network NetworkConfig ring,
            Container container ContainerConfig ring,
            Storage storage StorageConfig ring,
            Node node NodeConfig sampled,
        }
    };
}
pub(crate) use observer_list;

macro_rules! observer_enum {
    ($($variant:ident $name:ident $section:ident $feed:ident,)*) => {
        /// The observer families, one per line of `observer_list!` above.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum Observer {
            $($variant,)*
        }

        impl Observer {
            pub const ALL: [Observer; [$(stringify!($name)),*].len()] = [$(Observer::$variant,)*];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Observer::$variant => stringify!($name),)*
                }
            }
        }
    };
}
observer_list!(observer_enum);

impl Observer {
    /// Every observer's name, in [`Observer::ALL`] order (CLI and MCP
    /// value lists).
    pub const NAMES: [&'static str; Observer::ALL.len()] = {
        let mut names = [""; Observer::ALL.len()];
        let mut i = 0;
        while i < names.len() {
            names[i] = Observer::ALL[i].as_str();
            i += 1;
        }
        names
    };

    pub fn parse(s: &str) -> Option<Observer> {
        Observer::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// The names as a sentence's choice, for "expected …" messages:
    /// `network, container, storage or node`.
    pub fn choices() -> String {
        match Observer::NAMES.split_last() {
            Some((last, [])) => (*last).to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }

    /// Bit of this observer in `tapio_config.flags`: its place in the
    /// list (`agent::abi` asserts at compile time that the header's
    /// `TAPIO_FLAG_<NAME>` is this bit).
    pub const fn flag(self) -> u32 {
        1 << (self as u32)
    }
}

/// Every anomaly type Tapio emits. The string forms are product contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyType {
    ConnectionRefused,
    ConnectionTimeout,
    ConnectionUnreachable,
    ConnectionReset,
    RetransmitSpike,
    RttDegradation,
    OomKill,
    AbnormalExit,
    IoError,
    LatencySpike,
    CpuStall,
    IpcDegradation,
    MemoryPressure,
}

impl AnomalyType {
    pub const ALL: [AnomalyType; 13] = [
        AnomalyType::ConnectionRefused,
        AnomalyType::ConnectionTimeout,
        AnomalyType::ConnectionUnreachable,
        AnomalyType::ConnectionReset,
        AnomalyType::RetransmitSpike,
        AnomalyType::RttDegradation,
        AnomalyType::OomKill,
        AnomalyType::AbnormalExit,
        AnomalyType::IoError,
        AnomalyType::LatencySpike,
        AnomalyType::CpuStall,
        AnomalyType::IpcDegradation,
        AnomalyType::MemoryPressure,
    ];

    /// The `type` field of an occurrence.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyType::ConnectionRefused => "kernel.network.connection_refused",
            AnomalyType::ConnectionTimeout => "kernel.network.connection_timeout",
            AnomalyType::ConnectionUnreachable => "kernel.network.connection_unreachable",
            AnomalyType::ConnectionReset => "kernel.network.connection_reset",
            AnomalyType::RetransmitSpike => "kernel.network.retransmit_spike",
            AnomalyType::RttDegradation => "kernel.network.rtt_degradation",
            AnomalyType::OomKill => "kernel.container.oom_kill",
            AnomalyType::AbnormalExit => "kernel.container.abnormal_exit",
            AnomalyType::IoError => "kernel.storage.io_error",
            AnomalyType::LatencySpike => "kernel.storage.latency_spike",
            AnomalyType::CpuStall => "kernel.node.cpu_stall",
            AnomalyType::IpcDegradation => "kernel.node.ipc_degradation",
            AnomalyType::MemoryPressure => "kernel.node.memory_pressure",
        }
    }

    /// The `error.code` field of an occurrence.
    pub fn error_code(self) -> &'static str {
        match self {
            AnomalyType::ConnectionRefused => "CONNECTION_REFUSED",
            AnomalyType::ConnectionTimeout => "CONNECTION_TIMEOUT",
            AnomalyType::ConnectionUnreachable => "CONNECTION_UNREACHABLE",
            AnomalyType::ConnectionReset => "CONNECTION_RESET",
            AnomalyType::RetransmitSpike => "RETRANSMIT_SPIKE",
            AnomalyType::RttDegradation => "RTT_DEGRADATION",
            AnomalyType::OomKill => "OOM_KILL",
            AnomalyType::AbnormalExit => "ABNORMAL_EXIT",
            AnomalyType::IoError => "IO_ERROR",
            AnomalyType::LatencySpike => "IO_LATENCY",
            AnomalyType::CpuStall => "CPU_STALL",
            AnomalyType::IpcDegradation => "IPC_DEGRADATION",
            AnomalyType::MemoryPressure => "MEMORY_PRESSURE",
        }
    }

    pub fn observer(self) -> Observer {
        match self {
            AnomalyType::ConnectionRefused
            | AnomalyType::ConnectionTimeout
            | AnomalyType::ConnectionUnreachable
            | AnomalyType::ConnectionReset
            | AnomalyType::RetransmitSpike
            | AnomalyType::RttDegradation => Observer::Network,
            AnomalyType::OomKill | AnomalyType::AbnormalExit => Observer::Container,
            AnomalyType::IoError | AnomalyType::LatencySpike => Observer::Storage,
            AnomalyType::CpuStall | AnomalyType::IpcDegradation | AnomalyType::MemoryPressure => {
                Observer::Node
            }
        }
    }

    pub fn parse(s: &str) -> Option<AnomalyType> {
        AnomalyType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for AnomalyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for t in AnomalyType::ALL {
            assert!(seen.insert(t.as_str()), "duplicate {}", t);
            assert_eq!(AnomalyType::parse(t.as_str()), Some(t));
            let obs = t.observer().as_str();
            assert!(t.as_str().starts_with(&format!("kernel.{obs}.")), "{t}");
            assert!(t
                .error_code()
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_'));
        }
        assert_eq!(AnomalyType::parse("kernel.network.nope"), None);
    }

    #[test]
    fn observer_flags_are_distinct_bits() {
        let all: u32 = Observer::ALL.iter().map(|o| o.flag()).sum();
        assert_eq!(all, 0b1111);
        assert_eq!(Observer::parse("storage"), Some(Observer::Storage));
    }

    /// The serde name (status file keys, heartbeat lists) is the list's
    /// name for every observer, and names round-trip.
    #[test]
    fn observer_names_are_one_name() {
        assert_eq!(Observer::NAMES, ["network", "container", "storage", "node"]);
        assert_eq!(Observer::choices(), "network, container, storage or node");
        for o in Observer::ALL {
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(json, format!("\"{}\"", o.as_str()));
            assert_eq!(Observer::parse(o.as_str()), Some(o));
        }
    }
}
