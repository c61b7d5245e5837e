//! Storage ring records (`struct tapio_sto_event`) → [`StoFact`]: a block
//! request completion worth judging (an error, or one BPF found slow).
//!
//! Read as the generated type through `agent::decode`'s checks; the
//! latency is trusted only with its flag. No offsets here and no panic on
//! any input.

use crate::agent::abi::{self, TapioEventHdr, TapioStoEvent};
use crate::agent::decode::{record, DecodeError};

/// One block request completion: an error or a slow one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoFact {
    pub mono_ns: u64,
    pub generation: u32,
    /// Issue → completion in ns; `None` when it could not be correlated.
    pub latency_ns: Option<u64>,
    pub sector: u64,
    /// Kernel dev_t of the disk: `major << 20 | minor`.
    pub dev: u32,
    pub nr_sectors: u32,
    pub bytes: u32,
    pub cmd_flags: u32,
    /// `blk_status_t`, 0 = success.
    pub status: u32,
    pub requeues: u16,
    /// Part of a request completed; the rest goes on.
    pub partial: bool,
}

impl StoFact {
    pub fn major(&self) -> u32 {
        self.dev >> 20
    }

    pub fn minor(&self) -> u32 {
        self.dev & ((1 << 20) - 1)
    }

    /// `REQ_OP_*` (the low 8 bits of `cmd_flags`).
    pub fn op(&self) -> u32 {
        self.cmd_flags & 0xff
    }
}

/// Reads one record of the storage ring, whose header is `hdr`.
pub fn decode(hdr: &TapioEventHdr, b: &[u8]) -> Result<StoFact, DecodeError> {
    if hdr.kind != abi::EV_STO_IO {
        return Err(DecodeError::UnknownKind(hdr.kind));
    }
    Ok(decode_sto(&record(b, hdr)?))
}

fn decode_sto(ev: &TapioStoEvent) -> StoFact {
    StoFact {
        mono_ns: ev.hdr.ts_ns,
        generation: ev.hdr.generation,
        latency_ns: (ev.flags & abi::STO_F_LATENCY != 0).then_some(ev.latency_ns),
        sector: ev.sector,
        dev: ev.dev,
        nr_sectors: ev.nr_sectors,
        bytes: ev.bytes,
        cmd_flags: ev.cmd_flags,
        status: ev.status,
        requeues: ev.requeues,
        partial: ev.flags & abi::STO_F_PARTIAL != 0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::agent::decode::tests::hdr;
    use crate::agent::observers::{decode, Fact};
    use crate::wire::Observer;
    use zerocopy::IntoBytes;

    /// Builds a well-formed storage record.
    #[expect(
        clippy::needless_update,
        reason = "every member is set today; a member the header adds must not break this builder"
    )]
    pub(crate) fn sto_record(status: u32, latency_ns: Option<u64>) -> Vec<u8> {
        TapioStoEvent {
            hdr: hdr::<TapioStoEvent>(abi::EV_STO_IO, 55, 4),
            // Without its flag, a stale value the flag says not to trust.
            latency_ns: latency_ns.unwrap_or(9),
            sector: 2048,
            dev: (7 << 20) | 3,
            nr_sectors: 8,
            bytes: 4096,
            cmd_flags: 1 | 1 << 11,
            status,
            requeues: 2,
            flags: abi::STO_F_PARTIAL | latency_ns.map_or(0, |_| abi::STO_F_LATENCY),
            ..TapioStoEvent::default()
        }
        .as_bytes()
        .to_vec()
    }

    #[test]
    fn decodes_storage_with_and_without_latency() {
        let Ok(Fact::Storage(f)) = decode(Observer::Storage, &sto_record(3, Some(5_000))) else {
            panic!("not a storage fact");
        };
        assert_eq!((f.mono_ns, f.generation), (55, 4));
        assert_eq!(f.latency_ns, Some(5_000));
        assert_eq!((f.major(), f.minor()), (7, 3));
        assert_eq!((f.sector, f.nr_sectors, f.bytes), (2048, 8, 4096));
        assert_eq!(f.op(), 1);
        assert_eq!((f.status, f.requeues, f.partial), (3, 2, true));
        let Ok(Fact::Storage(f)) = decode(Observer::Storage, &sto_record(10, None)) else {
            panic!("not a storage fact");
        };
        assert_eq!(
            f.latency_ns, None,
            "latency without its flag is not trusted"
        );
    }
}
