//! Ring-buffer records → decode → classify → occurrence, as the drain and
//! emitter threads do it, for every observer's record kinds.
//!
//! Input: a sequence of commands. Each starts with a selector byte:
//! * bit 6 set: a tick; the next 8 bytes are the monotonic "now" handed to
//!   `on_tick` (so windows close at arbitrary, even backwards, times).
//! * otherwise bits 0-1 pick the observer's ring; with bit 7 set the record
//!   is exactly that observer's record size (so whole records are common),
//!   else the next byte is its length.
//!
//! Invariants: `decode` accepts a record only when its length, declared
//! size and kind match the ABI and then reports the header fields it read;
//! refusals describe the record truthfully; a finding from a fact names
//! that fact's observer; every finding becomes an occurrence that has no
//! reasoning field and that the store parses back exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapio::agent::abi;
use tapio::agent::decode::DecodeError;
use tapio::agent::observers::{decode, Fact, RingObservers};
use tapio::agent::pipeline::{occurrence, Clock};
use tapio::wire::{find_reasoning_field, CompiledConfig, Observer};

/// Wall − monotonic as on a host booted in 2026.
const CLOCK_OFFSET_NS: i128 = 1_790_000_000_000_000_000;
/// Keeps one input's work bounded.
const MAX_COMMANDS: usize = 64;

fn size_of(observer: Observer) -> usize {
    match observer {
        Observer::Network => std::mem::size_of::<abi::TapioNetEvent>(),
        Observer::Container => std::mem::size_of::<abi::TapioCtrEvent>(),
        Observer::Storage => std::mem::size_of::<abi::TapioStoEvent>(),
        // The node observer has no ring: any length will do.
        Observer::Node => std::mem::size_of::<abi::TapioEventHdr>(),
    }
}

fn kinds_of(observer: Observer) -> &'static [u16] {
    match observer {
        Observer::Network => &[
            abi::EV_NET_CONNECT_FAIL,
            abi::EV_NET_RETRANSMIT,
            abi::EV_NET_RTT,
            abi::EV_NET_RESET,
        ],
        Observer::Container => &[abi::EV_CTR_OOM, abi::EV_CTR_EXIT],
        Observer::Storage => &[abi::EV_STO_IO],
        Observer::Node => &[],
    }
}

fn ne_u16(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

// Header fields located through the generated type, read here byte by byte
// so the oracle does not share decode's zerocopy path.
const HDR_TS: usize = std::mem::offset_of!(abi::TapioEventHdr, ts_ns);
const HDR_GENERATION: usize = std::mem::offset_of!(abi::TapioEventHdr, generation);
const HDR_KIND: usize = std::mem::offset_of!(abi::TapioEventHdr, kind);
const HDR_SIZE: usize = std::mem::offset_of!(abi::TapioEventHdr, size);

/// Checks what `decode` said about `rec` against the ABI.
fn check_decode(observer: Observer, rec: &[u8], got: &Result<Fact, DecodeError>) {
    let size = size_of(observer);
    match got {
        Ok(fact) => {
            assert_eq!(rec.len(), size, "accepted a record of the wrong length");
            assert_eq!(
                usize::from(ne_u16(rec, HDR_SIZE)),
                size,
                "accepted a wrong declared size"
            );
            assert!(
                kinds_of(observer).contains(&ne_u16(rec, HDR_KIND)),
                "accepted a foreign kind"
            );
            let generation =
                u32::from_ne_bytes(rec[HDR_GENERATION..HDR_GENERATION + 4].try_into().unwrap());
            assert_eq!(fact.generation(), generation);
            let mono = u64::from_ne_bytes(rec[HDR_TS..HDR_TS + 8].try_into().unwrap());
            let fact_mono = match fact {
                Fact::Network(f) => f.mono_ns,
                Fact::Container(f) => f.mono_ns,
                Fact::Storage(f) => f.mono_ns,
            };
            assert_eq!(fact_mono, mono);
            assert_eq!(fact.mono_ns(), mono);
            let matches_observer = matches!(
                (observer, fact),
                (Observer::Network, Fact::Network(_))
                    | (Observer::Container, Fact::Container(_))
                    | (Observer::Storage, Fact::Storage(_))
            );
            assert!(matches_observer, "{observer:?} ring produced {fact:?}");
            assert_eq!(fact.observer(), observer);
        }
        Err(DecodeError::Truncated { len, need }) => {
            assert_eq!(*len, rec.len());
            assert!(len < need);
        }
        Err(DecodeError::Oversized { len, max }) => {
            assert_eq!(*len, rec.len());
            assert!(len > max);
        }
        Err(DecodeError::SizeMismatch { len, declared }) => {
            assert_eq!(*len, rec.len());
            assert_eq!(*declared, ne_u16(rec, HDR_SIZE));
            assert_ne!(usize::from(*declared), rec.len());
        }
        Err(DecodeError::UnknownKind(kind)) => {
            assert_eq!(*kind, ne_u16(rec, HDR_KIND));
            assert!(!kinds_of(observer).contains(kind));
        }
        Err(DecodeError::BadFamily(family)) => {
            assert_eq!(observer, Observer::Network);
            assert!(*family != 2 && *family != 10);
        }
    }
}

fn check_findings(findings: &mut Vec<tapio::agent::classify::Finding>, from: Option<Observer>) {
    let clock = Clock::with_offset(CLOCK_OFFSET_NS);
    for f in findings.drain(..) {
        if let Some(observer) = from {
            assert_eq!(f.anomaly().observer(), observer, "{f:?}");
        }
        let wall = clock.wall_ns(f.mono_ns);
        // The emitter mints the id from the fact's wall time; any id works
        // for the round trip.
        let id = ulid::Ulid::from_parts(wall / 1_000_000, 0);
        let occ = occurrence(f, None, id, wall);
        if std::env::var_os("TAPIO_FUZZ_PRINT").is_some() {
            // For checking by hand which inputs reach an occurrence.
            eprintln!("occurrence: {} {}", occ.anomaly().as_str(), occ.message());
        }
        // The text every sink writes.
        let text = occ.json().get();
        let value: serde_json::Value = serde_json::from_str(text).expect("an occurrence is JSON");
        assert_eq!(find_reasoning_field(&value), None, "{value}");
        let rec = tapio::store::parse_record(text.as_bytes())
            .unwrap_or_else(|| panic!("the store refuses {text}"));
        // Parsed back exactly: what the store holds writes the same bytes.
        assert_eq!(serde_json::to_string(&rec.occurrence).unwrap(), text);
        assert_eq!(rec.ts_ns, wall);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut observers = RingObservers::new(&CompiledConfig::default());
    let mut findings = Vec::new();
    let mut rest = data;
    for _ in 0..MAX_COMMANDS {
        let Some((&sel, tail)) = rest.split_first() else {
            break;
        };
        rest = tail;
        if sel & 0x40 != 0 {
            if rest.len() < 8 {
                break;
            }
            let now = u64::from_ne_bytes(rest[..8].try_into().unwrap());
            rest = &rest[8..];
            observers.on_tick(now, &mut findings);
            check_findings(&mut findings, None);
            continue;
        }
        let observer = Observer::ALL[usize::from(sel & 3)];
        let len = if sel & 0x80 != 0 {
            size_of(observer)
        } else {
            let Some((&n, tail)) = rest.split_first() else {
                break;
            };
            rest = tail;
            usize::from(n)
        };
        let (rec, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        let got = decode(observer, rec);
        check_decode(observer, rec, &got);
        if let Ok(fact) = got {
            observers.on_fact(&fact, &mut findings);
            check_findings(&mut findings, Some(observer));
        }
    }
    observers.flush(&mut findings);
    check_findings(&mut findings, None);
});
