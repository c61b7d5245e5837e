//! Rust mirror of `bpf/include/tapio_abi.h`: the runtime config carrier and
//! the ring-buffer record layouts.
//!
//! Layouts are asserted at compile time here and by `_Static_assert` in C;
//! `tests/abi_layout.rs` checks the offsets against the C header text too.
//! Raw records never leave `decode`; this module only knows bytes.

use crate::wire::config::{CompiledConfig, KnobValue, KNOBS, MAX_IGNORE_EXIT_CODES};
use crate::wire::Observer;

pub const ABI_VERSION: u32 = 2;

pub const STAT_CFG_ZERO: usize = 0;
pub const STAT_CFG_ABI: usize = 1;
pub const STAT_RB_FULL: usize = 2;
pub const STAT_OWNER_MISSING: usize = 3;
pub const STAT_CORR_DUP: usize = 4;
pub const STAT_CORR_MISSING: usize = 5;
pub const STAT_MAX: usize = 8;

pub const EV_NET_CONNECT_FAIL: u16 = 1;
pub const EV_NET_RETRANSMIT: u16 = 2;
pub const EV_NET_RTT: u16 = 3;
pub const EV_CTR_OOM: u16 = 16;
pub const EV_CTR_EXIT: u16 = 17;
pub const EV_STO_IO: u16 = 32;

pub const CTR_F_PIDNS_INIT: u32 = 1 << 0;
pub const CTR_F_MEMCG: u32 = 1 << 1;
pub const CTR_F_MM: u32 = 1 << 2;

pub const STO_F_LATENCY: u16 = 1 << 0;
pub const STO_F_PARTIAL: u16 = 1 << 1;

pub const NET_F_RST: u16 = 1 << 0;
pub const NET_F_OWNER: u16 = 1 << 1;
pub const NET_F_RTT_SPIKE: u16 = 1 << 2;

/// The `tapio_correlation_drops_total` reason for an object counter beyond
/// the shared ones (config, ring full), or `None` for counters that are not
/// drops.
pub fn stat_reason(observer: Observer, idx: usize) -> Option<&'static str> {
    match (observer, idx) {
        (Observer::Storage, STAT_CORR_DUP) => Some("ambiguous_inflight_io"),
        (Observer::Storage, STAT_CORR_MISSING) => Some("completion_without_issue"),
        _ => None,
    }
}

/// `struct tapio_config`. Written whole, as bytes, to every observer's
/// single-entry carrier map.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TapioConfig {
    pub abi_version: u32,
    pub generation: u32,
    pub flags: u32,
    pub _pad0: u32,
    pub net_refused_min_count: u32,
    pub net_refused_window_ms: u32,
    pub net_retransmit_min_count: u32,
    pub net_retransmit_window_ms: u32,
    pub net_rtt_multiplier_permille: u32,
    pub net_rtt_min_baseline_samples: u32,
    pub net_rtt_abs_us: u32,
    pub _pad1: u32,
    pub ctr_exit_scope: u32,
    pub ctr_ignore_exit_codes_count: u32,
    pub ctr_ignore_exit_codes: [u32; MAX_IGNORE_EXIT_CODES],
    pub sto_slow_io_ns: u64,
    pub sto_critical_io_ns: u64,
    pub node_sample_period_ms: u32,
    pub node_cpu_stall_permille: u32,
    pub node_ipc_drop_permille: u32,
    pub node_mem_mpki_milli: u32,
    pub node_psi_mem_permille: u32,
    pub node_psi_cpu_permille: u32,
    pub node_min_baseline_samples: u32,
    pub _pad2: u32,
    pub _reserved: [u64; 4],
}

const _: () = assert!(size_of::<TapioConfig>() == 200);
const _: () = assert!(std::mem::offset_of!(TapioConfig, generation) == 4);
const _: () = assert!(std::mem::offset_of!(TapioConfig, flags) == 8);
const _: () = assert!(std::mem::offset_of!(TapioConfig, net_refused_min_count) == 16);
const _: () = assert!(std::mem::offset_of!(TapioConfig, net_rtt_abs_us) == 40);
const _: () = assert!(std::mem::offset_of!(TapioConfig, ctr_exit_scope) == 48);
const _: () = assert!(std::mem::offset_of!(TapioConfig, ctr_ignore_exit_codes_count) == 52);
const _: () = assert!(std::mem::offset_of!(TapioConfig, ctr_ignore_exit_codes) == 56);
const _: () = assert!(std::mem::offset_of!(TapioConfig, sto_slow_io_ns) == 120);
const _: () = assert!(std::mem::offset_of!(TapioConfig, sto_critical_io_ns) == 128);
const _: () = assert!(std::mem::offset_of!(TapioConfig, node_sample_period_ms) == 136);
const _: () = assert!(std::mem::offset_of!(TapioConfig, node_min_baseline_samples) == 160);
const _: () = assert!(std::mem::offset_of!(TapioConfig, _reserved) == 168);

impl TapioConfig {
    /// The carrier bytes for `cfg` judged as `generation`: every knob
    /// table row's value lands in the member its `abi` column names.
    /// Observers whose section is disabled get no flag bit, which makes them
    /// inert.
    pub fn from_compiled(cfg: &CompiledConfig, generation: u32) -> TapioConfig {
        let mut t = TapioConfig {
            abi_version: ABI_VERSION,
            generation,
            ..TapioConfig::default()
        };
        for k in &KNOBS {
            match (k.abi, k.get(cfg)) {
                ("flags", KnobValue::Bool(true)) => t.flags |= k.observer.flag(),
                ("ctr_exit_scope", KnobValue::Scope(scope)) => t.ctr_exit_scope = scope.abi_value(),
                ("ctr_ignore_exit_codes", KnobValue::Codes(codes)) => {
                    let n = codes.len().min(MAX_IGNORE_EXIT_CODES);
                    for (slot, code) in t.ctr_ignore_exit_codes.iter_mut().zip(&codes) {
                        *slot = u32::from(*code);
                    }
                    t.ctr_ignore_exit_codes_count = n as u32;
                }
                (member, KnobValue::Int(v)) => t.put(member, v),
                // A disabled observer sets no bit. A row whose value does
                // not fit its member reaches nothing;
                // tests/profile.rs (every knob changes the carrier bytes)
                // makes that a test failure, not a silent gap.
                _ => {}
            }
        }
        t
    }

    /// Stores `v` in the integer member named `member`. The knob ranges keep
    /// u32 members far below u32::MAX; saturate, never wrap.
    fn put(&mut self, member: &str, v: u64) {
        let narrow = u32::try_from(v).unwrap_or(u32::MAX);
        let slot = match member {
            "net_refused_min_count" => &mut self.net_refused_min_count,
            "net_refused_window_ms" => &mut self.net_refused_window_ms,
            "net_retransmit_min_count" => &mut self.net_retransmit_min_count,
            "net_retransmit_window_ms" => &mut self.net_retransmit_window_ms,
            "net_rtt_multiplier_permille" => &mut self.net_rtt_multiplier_permille,
            "net_rtt_min_baseline_samples" => &mut self.net_rtt_min_baseline_samples,
            "net_rtt_abs_us" => &mut self.net_rtt_abs_us,
            "node_sample_period_ms" => &mut self.node_sample_period_ms,
            "node_cpu_stall_permille" => &mut self.node_cpu_stall_permille,
            "node_ipc_drop_permille" => &mut self.node_ipc_drop_permille,
            "node_mem_mpki_milli" => &mut self.node_mem_mpki_milli,
            "node_psi_mem_permille" => &mut self.node_psi_mem_permille,
            "node_psi_cpu_permille" => &mut self.node_psi_cpu_permille,
            "node_min_baseline_samples" => &mut self.node_min_baseline_samples,
            "sto_slow_io_ns" => {
                self.sto_slow_io_ns = v;
                return;
            }
            "sto_critical_io_ns" => {
                self.sto_critical_io_ns = v;
                return;
            }
            _ => return,
        };
        *slot = narrow;
    }

    /// The exact bytes written to a carrier map.
    pub fn to_bytes(&self) -> [u8; 200] {
        // SAFETY: TapioConfig is repr(C), 200 bytes (asserted above), made only
        // of integers with explicit padding fields, so every byte is
        // initialised and any bit pattern is a valid [u8; 200].
        unsafe { std::mem::transmute::<TapioConfig, [u8; 200]>(*self) }
    }
}

/// Size of `struct tapio_event_hdr`.
pub const EVENT_HDR_SIZE: usize = 16;
/// Size of `struct tapio_net_event`.
pub const NET_EVENT_SIZE: usize = 112;

/// Field offsets of `struct tapio_net_event` (see the C header).
pub mod net {
    pub const PID: usize = 16;
    pub const TID: usize = 20;
    pub const COMM: usize = 24;
    pub const SADDR: usize = 40;
    pub const DADDR: usize = 56;
    pub const FAMILY: usize = 72;
    pub const SPORT: usize = 74;
    pub const DPORT: usize = 76;
    pub const FLAGS: usize = 78;
    pub const SK_ERR: usize = 80;
    pub const SRTT_US: usize = 84;
    pub const STATE: usize = 88;
    pub const NETNS: usize = 92;
    pub const CGROUP_ID: usize = 96;
    pub const RTT_BASELINE_US: usize = 104;
    pub const RTT_SAMPLES: usize = 108;
}

/// Size of `struct tapio_ctr_event`.
pub const CTR_EVENT_SIZE: usize = 112;
/// Size of `struct tapio_sto_event`.
pub const STO_EVENT_SIZE: usize = 56;

/// Field offsets of `struct tapio_ctr_event` (see the C header).
pub mod ctr {
    pub const PID: usize = 16;
    pub const TID: usize = 20;
    pub const COMM: usize = 24;
    pub const CGROUP_ID: usize = 40;
    pub const MEMCG_ID: usize = 48;
    pub const EXIT_STATUS: usize = 56;
    pub const FLAGS: usize = 60;
    pub const NS_PID: usize = 64;
    pub const MEMCG_LIMIT_DEPTH: usize = 68;
    pub const ANON_RSS_PAGES: usize = 72;
    pub const FILE_RSS_PAGES: usize = 80;
    pub const SHMEM_RSS_PAGES: usize = 88;
    pub const MEMCG_USAGE_PAGES: usize = 96;
    pub const MEMCG_MAX_PAGES: usize = 104;
}

/// Field offsets of `struct tapio_sto_event` (see the C header).
pub mod sto {
    pub const LATENCY_NS: usize = 16;
    pub const SECTOR: usize = 24;
    pub const DEV: usize = 32;
    pub const NR_SECTORS: usize = 36;
    pub const BYTES: usize = 40;
    pub const CMD_FLAGS: usize = 44;
    pub const STATUS: usize = 48;
    pub const REQUEUES: usize = 52;
    pub const FLAGS: usize = 54;
}

// The last field of each record ends exactly at its size.
const _: () = assert!(ctr::MEMCG_MAX_PAGES + 8 == CTR_EVENT_SIZE);
const _: () = assert!(sto::FLAGS + 2 == STO_EVENT_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_sets_all_flags_and_version() {
        let c = TapioConfig::from_compiled(&CompiledConfig::default(), 7);
        assert_eq!(c.abi_version, ABI_VERSION);
        assert_eq!(c.generation, 7);
        assert_eq!(c.flags, 0b1111);
        let b = c.to_bytes();
        assert_eq!(&b[0..4], &ABI_VERSION.to_ne_bytes());
        assert_eq!(&b[4..8], &7u32.to_ne_bytes());
        assert_eq!(&b[120..128], &100_000_000u64.to_ne_bytes());
    }

    #[test]
    fn disabled_observer_has_no_flag_and_codes_are_bounded() {
        let mut cfg = CompiledConfig::default();
        cfg.storage.enabled = false;
        cfg.container.ignore_exit_codes = vec![3, 7];
        let c = TapioConfig::from_compiled(&cfg, 1);
        assert_eq!(c.flags & Observer::Storage.flag(), 0);
        assert_eq!(c.ctr_ignore_exit_codes_count, 2);
        assert_eq!(&c.ctr_ignore_exit_codes[..3], &[3, 7, 0]);
    }

    /// `(field, offset)` from the `/* N` comments of `struct <name>` in the
    /// C header.
    fn c_offsets(name: &str) -> Vec<(String, usize)> {
        let h = include_str!("../../bpf/include/tapio_abi.h");
        let start = h
            .find(&format!("struct {name} {{"))
            .expect("struct in header");
        let body = &h[start..start + h[start..].find("};").expect("struct end")];
        body.lines()
            .filter_map(|l| {
                let (decl, comment) = l.split_once("/*")?;
                let field = decl
                    .trim()
                    .trim_end_matches(';')
                    .split_whitespace()
                    .last()?;
                let field = field.split('[').next()?.to_string();
                let off = comment
                    .trim()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()?;
                Some((field, off))
            })
            .collect()
    }

    #[test]
    fn container_and_storage_offsets_match_the_c_header() {
        let ctr_fields = [
            ("pid", ctr::PID),
            ("tid", ctr::TID),
            ("comm", ctr::COMM),
            ("cgroup_id", ctr::CGROUP_ID),
            ("memcg_id", ctr::MEMCG_ID),
            ("exit_status", ctr::EXIT_STATUS),
            ("flags", ctr::FLAGS),
            ("ns_pid", ctr::NS_PID),
            ("memcg_limit_depth", ctr::MEMCG_LIMIT_DEPTH),
            ("anon_rss_pages", ctr::ANON_RSS_PAGES),
            ("file_rss_pages", ctr::FILE_RSS_PAGES),
            ("shmem_rss_pages", ctr::SHMEM_RSS_PAGES),
            ("memcg_usage_pages", ctr::MEMCG_USAGE_PAGES),
            ("memcg_max_pages", ctr::MEMCG_MAX_PAGES),
        ];
        let sto_fields = [
            ("latency_ns", sto::LATENCY_NS),
            ("sector", sto::SECTOR),
            ("dev", sto::DEV),
            ("nr_sectors", sto::NR_SECTORS),
            ("bytes", sto::BYTES),
            ("cmd_flags", sto::CMD_FLAGS),
            ("status", sto::STATUS),
            ("requeues", sto::REQUEUES),
            ("flags", sto::FLAGS),
        ];
        for (name, fields) in [
            ("tapio_ctr_event", &ctr_fields[..]),
            ("tapio_sto_event", &sto_fields[..]),
        ] {
            let c = c_offsets(name);
            assert_eq!(c.first(), Some(&("hdr".to_string(), 0)), "{name}");
            assert_eq!(c.len(), fields.len() + 1, "{name}: {c:?}");
            for ((cf, co), (rf, ro)) in c[1..].iter().zip(fields) {
                assert_eq!((cf.as_str(), *co), (*rf, *ro), "{name}");
            }
        }
        let h = include_str!("../../bpf/include/tapio_abi.h");
        assert!(h.contains(&format!(
            "sizeof(struct tapio_ctr_event) == {CTR_EVENT_SIZE}"
        )));
        assert!(h.contains(&format!(
            "sizeof(struct tapio_sto_event) == {STO_EVENT_SIZE}"
        )));
        for (c, v) in [
            ("TAPIO_EV_CTR_OOM", EV_CTR_OOM),
            ("TAPIO_EV_CTR_EXIT", EV_CTR_EXIT),
            ("TAPIO_EV_STO_IO", EV_STO_IO),
        ] {
            assert!(
                h.lines().any(|l| {
                    let mut t = l.split_whitespace();
                    t.next() == Some("#define")
                        && t.next() == Some(c)
                        && t.next() == Some(&v.to_string())
                }),
                "{c}"
            );
        }
    }

    #[test]
    fn stat_reasons_name_storage_drops_only() {
        assert_eq!(
            stat_reason(Observer::Storage, STAT_CORR_DUP),
            Some("ambiguous_inflight_io")
        );
        assert_eq!(
            stat_reason(Observer::Storage, STAT_CORR_MISSING),
            Some("completion_without_issue")
        );
        assert_eq!(stat_reason(Observer::Storage, STAT_RB_FULL), None);
        assert_eq!(stat_reason(Observer::Container, STAT_CORR_DUP), None);
        assert_eq!(stat_reason(Observer::Storage, STAT_MAX), None);
    }

    /// Every member gets its own knob's value, in the knob's unit: a config
    /// with no default left maps to exactly this struct.
    #[test]
    fn each_knob_lands_in_its_member() {
        let mut cfg = CompiledConfig {
            network: crate::wire::config::NetworkConfig {
                enabled: true,
                refused_min_count: 2,
                refused_window_ms: 3,
                retransmit_min_count: 4,
                retransmit_window_ms: 5,
                rtt_spike_multiplier_permille: 6,
                rtt_min_baseline_samples: 7,
                rtt_spike_abs_us: 8,
            },
            node: crate::wire::config::NodeConfig {
                enabled: true,
                sample_period_ms: 13,
                cpu_stall_permille: 14,
                ipc_drop_permille: 15,
                memory_pressure_mpki_milli: 16,
                psi_memory_permille: 17,
                psi_cpu_permille: 18,
                min_baseline_samples: 19,
            },
            ..CompiledConfig::default()
        };
        cfg.container.enabled = false;
        cfg.container.exit_scope = crate::wire::config::ExitScope::All;
        cfg.container.ignore_exit_codes = vec![9, 10];
        cfg.storage.slow_io_threshold_ns = 5_000_000_011;
        cfg.storage.io_latency_critical_ns = 5_000_000_012;
        let mut codes = [0; MAX_IGNORE_EXIT_CODES];
        codes[..2].copy_from_slice(&[9, 10]);
        let want = TapioConfig {
            abi_version: ABI_VERSION,
            generation: 20,
            flags: Observer::Network.flag() | Observer::Storage.flag() | Observer::Node.flag(),
            net_refused_min_count: 2,
            net_refused_window_ms: 3,
            net_retransmit_min_count: 4,
            net_retransmit_window_ms: 5,
            net_rtt_multiplier_permille: 6,
            net_rtt_min_baseline_samples: 7,
            net_rtt_abs_us: 8,
            ctr_exit_scope: 1,
            ctr_ignore_exit_codes_count: 2,
            ctr_ignore_exit_codes: codes,
            sto_slow_io_ns: 5_000_000_011,
            sto_critical_io_ns: 5_000_000_012,
            node_sample_period_ms: 13,
            node_cpu_stall_permille: 14,
            node_ipc_drop_permille: 15,
            node_mem_mpki_milli: 16,
            node_psi_mem_permille: 17,
            node_psi_cpu_permille: 18,
            node_min_baseline_samples: 19,
            ..TapioConfig::default()
        };
        assert_eq!(TapioConfig::from_compiled(&cfg, 20), want);
    }

    #[test]
    fn default_is_all_zero_and_inert() {
        assert!(TapioConfig::default().to_bytes().iter().all(|b| *b == 0));
    }
}
