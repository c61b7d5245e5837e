//! The kernel ABI on the Rust side: the types and constants generated at
//! build time from `bpf/include/tapio_abi.h` (see `build.rs`), and the one
//! writer of `struct tapio_config` from a [`CompiledConfig`].
//!
//! Owns: how knob values land in config members, the compile-time check
//! that the header's observer bits are wire's observer list. Must not:
//! read ring records (that is `decode` and each observer's folder, which
//! also says what its own stat counters mean), or restate any layout, offset or value the header
//! defines. The header is the single source: a new member, record field,
//! flag or stat is one edit there, and its Rust name (`tapio_net_event` →
//! [`TapioNetEvent`], `TAPIO_EV_NET_RTT` → [`EV_NET_RTT`]) exists on the
//! next build. bindgen's generated layout assertions pin every size,
//! alignment and field offset to what clang computed from the header, at
//! compile time; the C `_Static_assert`s pin the sizes on the BPF side.

use zerocopy::IntoBytes as _;

use crate::wire::config::{CompiledConfig, ExitScope, KnobValue, KNOBS};
use crate::wire::Observer;

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    unused_qualifications,
    clippy::all,
    clippy::allow_attributes_without_reason,
    reason = "bindgen output: C typedef names, fully qualified std paths, its own allows"
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/tapio_abi.rs"));
}

pub use generated::*;

// The knob table (wire, which may not see this module) bounds the ignore
// list with its own constant; it must be the header's.
const _: () = assert!(crate::wire::config::MAX_IGNORE_EXIT_CODES == MAX_IGNORE_EXIT_CODES);

// `(observer name, bit)` of every `TAPIO_FLAG_<NAME>` the header defines,
// as build.rs found them (`HEADER_OBSERVER_FLAGS`).
include!(concat!(env!("OUT_DIR"), "/tapio_observer_flags.rs"));

/// `a == b`, usable in a constant.
const fn same_str(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// The flag bit of an observer is its place in wire's observer list
// (`Observer::flag`); the header's `TAPIO_FLAG_<NAME>` must be exactly
// that bit, one per observer and none for an observer that does not
// exist. Checked when this compiles, so an observer added on one side
// only does not build.
const _: () = {
    assert!(
        HEADER_OBSERVER_FLAGS.len() == Observer::ALL.len(),
        "tapio_abi.h needs one TAPIO_FLAG_<NAME> per observer of wire's list, no more"
    );
    let mut i = 0;
    while i < Observer::ALL.len() {
        let o = Observer::ALL[i];
        let mut found = false;
        let mut j = 0;
        while j < HEADER_OBSERVER_FLAGS.len() {
            if same_str(HEADER_OBSERVER_FLAGS[j].0, o.as_str()) {
                assert!(
                    HEADER_OBSERVER_FLAGS[j].1 == o.flag(),
                    "a TAPIO_FLAG_<NAME> is not the bit of its place in wire's observer list"
                );
                found = true;
            }
            j += 1;
        }
        assert!(found, "an observer has no TAPIO_FLAG_<NAME> in tapio_abi.h");
        i += 1;
    }
};

/// `tapio_config.ctr_exit_scope` for `scope`.
const fn exit_scope(scope: ExitScope) -> u32 {
    match scope {
        ExitScope::Init => EXIT_SCOPE_INIT,
        ExitScope::All => EXIT_SCOPE_ALL,
    }
}

/// A `tapio_config` member a knob's value can land in, typed by the
/// member's generated type.
enum Member<'a> {
    U32(&'a mut u32),
    U64(&'a mut u64),
    Codes(&'a mut [u32; MAX_IGNORE_EXIT_CODES]),
}

impl<'a> From<&'a mut u32> for Member<'a> {
    fn from(m: &'a mut u32) -> Self {
        Member::U32(m)
    }
}

impl<'a> From<&'a mut u64> for Member<'a> {
    fn from(m: &'a mut u64) -> Self {
        Member::U64(m)
    }
}

impl<'a> From<&'a mut [u32; MAX_IGNORE_EXIT_CODES]> for Member<'a> {
    fn from(m: &'a mut [u32; MAX_IGNORE_EXIT_CODES]) -> Self {
        Member::Codes(m)
    }
}

/// The members the knob table's `abi` column may name, as build.rs found
/// them in the header. Each name is the member itself (`stringify!` of a
/// field access the compiler checks against the generated struct), so a
/// member of a type [`Member`] does not know fails to build, and a knob
/// naming something else fails `every_knob_names_a_member`.
macro_rules! knob_members {
    ($($member:ident),* $(,)?) => {
        impl TapioConfig {
            fn member(&mut self, name: &str) -> Option<Member<'_>> {
                match name {
                    $(stringify!($member) => Some(Member::from(&mut self.$member)),)*
                    _ => None,
                }
            }
        }
    };
}

// Every member but the struct's header and the ignore list's count, as
// build.rs read them from the header (`knob_members!(flags, …);`).
include!(concat!(env!("OUT_DIR"), "/tapio_config_members.rs"));
impl TapioConfig {
    /// The carrier for `cfg` judged as `generation`: every knob table row's
    /// value lands in the member its `abi` column names. Observers whose
    /// section is disabled get no flag bit, which makes them inert.
    pub fn from_compiled(cfg: &CompiledConfig, generation: u32) -> TapioConfig {
        let mut t = TapioConfig {
            abi_version: ABI_VERSION,
            generation,
            ..TapioConfig::default()
        };
        // Rows without a member are judged in user space only.
        for (k, member) in KNOBS.iter().filter_map(|k| Some((k, k.abi?))) {
            let mut codes_count = None;
            match (t.member(member), k.get(cfg)) {
                // `enabled` rows name `flags`: the observer's bit (a
                // disabled observer sets none, below).
                (Some(Member::U32(m)), KnobValue::Bool(true)) => *m |= k.observer.flag(),
                (Some(Member::U32(m)), KnobValue::Scope(scope)) => *m = exit_scope(scope),
                // The knob ranges keep u32 members far below u32::MAX;
                // saturate, never wrap.
                (Some(Member::U32(m)), KnobValue::Int(v)) => {
                    *m = u32::try_from(v).unwrap_or(u32::MAX);
                }
                (Some(Member::U64(m)), KnobValue::Int(v)) => *m = v,
                (Some(Member::Codes(slots)), KnobValue::Codes(codes)) => {
                    for (slot, code) in slots.iter_mut().zip(&codes) {
                        *slot = u32::from(*code);
                    }
                    codes_count = Some(codes.len().min(MAX_IGNORE_EXIT_CODES) as u32);
                }
                // A row whose value does not fit its member reaches
                // nothing; `each_knob_lands_in_its_member` and
                // tests/profile.rs (every knob changes the carrier bytes)
                // make that a test failure, not a silent gap.
                _ => {}
            }
            if let Some(n) = codes_count {
                t.ctr_ignore_exit_codes_count = n;
            }
        }
        t
    }

    /// The exact bytes written to a carrier map.
    pub fn to_bytes(&self) -> [u8; size_of::<TapioConfig>()] {
        let mut out = [0; size_of::<TapioConfig>()];
        out.copy_from_slice(self.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_sets_all_flags_and_version() {
        let c = TapioConfig::from_compiled(&CompiledConfig::default(), 7);
        assert_eq!(c.abi_version, ABI_VERSION);
        assert_eq!(c.generation, 7);
        assert_eq!(
            c.flags,
            FLAG_NETWORK | FLAG_CONTAINER | FLAG_STORAGE | FLAG_NODE
        );
        assert_eq!(c.sto_slow_io_ns, 100_000_000);
        // The carrier bytes are the struct's, version first (the BPF side
        // checks it before anything else).
        let b = c.to_bytes();
        assert_eq!(b.len(), size_of::<TapioConfig>());
        assert_eq!(&b[..4], &ABI_VERSION.to_ne_bytes());
        assert_eq!(b.as_slice(), c.as_bytes());
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

    /// Every member gets its own knob's value, in the knob's unit: a config
    /// with no default left maps to exactly this struct, and the knobs
    /// judged in user space reach nothing.
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
        cfg.container.exit_scope = ExitScope::All;
        cfg.container.ignore_exit_codes = vec![9, 10];
        cfg.storage.slow_io_threshold_ns = 5_000_000_011;
        cfg.storage.io_latency_critical_ns = 5_000_000_012;
        let mut codes = [0; MAX_IGNORE_EXIT_CODES];
        codes[..2].copy_from_slice(&[9, 10]);
        let want = TapioConfig {
            abi_version: ABI_VERSION,
            generation: 20,
            flags: Observer::Network.flag() | Observer::Storage.flag() | Observer::Node.flag(),
            net_rtt_multiplier_permille: 6,
            net_rtt_min_baseline_samples: 7,
            net_rtt_abs_us: 8,
            ctr_exit_scope: 1,
            ctr_ignore_exit_codes_count: 2,
            ctr_ignore_exit_codes: codes,
            sto_slow_io_ns: 5_000_000_011,
        };
        assert_eq!(TapioConfig::from_compiled(&cfg, 20), want);
        // Changing only user-space knobs leaves the carrier as it was.
        let mut user_only = cfg.clone();
        user_only.network.refused_window_ms = 99;
        user_only.storage.io_latency_critical_ns = 7_000_000_000;
        user_only.node.sample_period_ms = 500;
        assert_eq!(TapioConfig::from_compiled(&user_only, 20), want);
    }

    /// The header's bits, by name, are the list's (the compile-time check
    /// above, seen from a test), and every observer has one.
    #[test]
    fn observer_flags_are_the_headers_bits() {
        for o in Observer::ALL {
            let bit = HEADER_OBSERVER_FLAGS
                .iter()
                .find(|(name, _)| *name == o.as_str())
                .map(|(_, bit)| *bit);
            assert_eq!(bit, Some(o.flag()), "{o:?}");
        }
        assert_eq!(
            (FLAG_NETWORK, FLAG_CONTAINER, FLAG_STORAGE, FLAG_NODE),
            (1, 2, 4, 8)
        );
        assert!(same_str("node", "node") && !same_str("node", "nod") && !same_str("a", "b"));
    }

    /// The knob table's `abi` column names only members `knob_members!`
    /// lists (and so the compiler checked), and reaches each of them.
    #[test]
    fn every_knob_names_a_member() {
        let mut t = TapioConfig::default();
        for k in &KNOBS {
            let Some(member) = k.abi else { continue };
            assert!(
                t.member(member).is_some(),
                "{} knob {} names {member:?}, not a tapio_config member",
                k.observer.as_str(),
                k.name,
            );
        }
        assert!(t.member("_pad0").is_none() && t.member("generation").is_none());
    }

    #[test]
    fn exit_scope_values_are_the_headers() {
        let mut cfg = CompiledConfig::default();
        assert_eq!(
            TapioConfig::from_compiled(&cfg, 1).ctr_exit_scope,
            EXIT_SCOPE_INIT
        );
        cfg.container.exit_scope = ExitScope::All;
        assert_eq!(
            TapioConfig::from_compiled(&cfg, 1).ctr_exit_scope,
            EXIT_SCOPE_ALL
        );
        assert_ne!(EXIT_SCOPE_INIT, EXIT_SCOPE_ALL);
    }

    #[test]
    fn default_is_all_zero_and_inert() {
        assert!(TapioConfig::default().to_bytes().iter().all(|b| *b == 0));
    }
}
