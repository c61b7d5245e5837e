//! The stable anomaly names and what each one means on the wire.

use serde::{Deserialize, Serialize};

/// The observer families. Each owns one BPF object and one ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Observer {
    Network,
    Container,
    Storage,
    Node,
}

impl Observer {
    pub const ALL: [Observer; 4] = [
        Observer::Network,
        Observer::Container,
        Observer::Storage,
        Observer::Node,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Observer::Network => "network",
            Observer::Container => "container",
            Observer::Storage => "storage",
            Observer::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Observer> {
        Observer::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Bit of this observer in `tapio_config.flags`.
    pub fn flag(self) -> u32 {
        1 << (self as u32)
    }
}

/// Every anomaly type Tapio emits. The string forms are product contracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyType {
    ConnectionRefused,
    ConnectionTimeout,
    ConnectionUnreachable,
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
    pub const ALL: [AnomalyType; 12] = [
        AnomalyType::ConnectionRefused,
        AnomalyType::ConnectionTimeout,
        AnomalyType::ConnectionUnreachable,
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
}
