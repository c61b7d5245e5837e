//! Occurrence and agent ids: ULIDs, monotonic within one agent run.
//!
//! Owns the id rule: the 48-bit time is the fact's wall-clock millisecond,
//! or the previous id's when the fact is older (folded windows report their
//! first fact late), and ids from one agent sort in emission order. The 80
//! random bits come from the kernel (`/dev/urandom`, opened once), not from
//! a userspace generator: the agent needs unpredictable ids, not a fast
//! RNG, and this keeps `rand` and ChaCha out of the binary. Must not: read
//! a clock (time is an input) or do any other I/O.

use std::fs::File;
use std::io::Read;

use ulid::Ulid;

/// The low 80 bits of a ULID.
const RANDOM_MASK: u128 = (1 << 80) - 1;

/// Monotonic ULIDs.
pub struct IdGen {
    urandom: Option<File>,
    last_ms: u64,
    last_random: u128,
}

impl IdGen {
    pub fn new() -> IdGen {
        IdGen {
            urandom: File::open("/dev/urandom").ok(),
            last_ms: 0,
            last_random: 0,
        }
    }

    /// 80 bits from the kernel. Without /dev/urandom (a chroot without
    /// devices) the bits are the time's, still unique per generator
    /// because [`IdGen::next`] increments within a millisecond.
    fn random(&mut self, ms: u64) -> u128 {
        let mut b = [0u8; 16];
        if let Some(f) = &mut self.urandom {
            if f.read_exact(&mut b[..10]).is_ok() {
                return u128::from_le_bytes(b) & RANDOM_MASK;
            }
        }
        u128::from(ms) << 16
    }

    /// The next id for a fact at `ms` (ms since the epoch).
    pub fn next(&mut self, ms: u64) -> Ulid {
        if self.last_ms != 0 && ms <= self.last_ms {
            // Same millisecond, or an older fact: continue after the
            // previous id. An exhausted random part moves to the next ms.
            if self.last_random < RANDOM_MASK {
                self.last_random += 1;
            } else {
                self.last_ms += 1;
                self.last_random = self.random(self.last_ms) >> 1;
            }
        } else {
            self.last_ms = ms;
            // The top bit left clear: 2^79 ids fit in one ms before it rolls.
            self.last_random = self.random(ms) >> 1;
        }
        Ulid::from_parts(self.last_ms, self.last_random)
    }
}

impl Default for IdGen {
    fn default() -> Self {
        IdGen::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_fact_time_and_sort_in_emission_order() {
        let mut g = IdGen::new();
        let a = g.next(1_700_000_000_000);
        let b = g.next(1_700_000_000_000);
        let c = g.next(1_699_999_999_000); // an older, folded fact
        let d = g.next(1_700_000_000_005);
        assert_eq!(a.timestamp_ms(), 1_700_000_000_000);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        assert_eq!(c.timestamp_ms(), 1_700_000_000_000);
        assert_eq!(d.timestamp_ms(), 1_700_000_000_005);
        assert_ne!(a.random(), g.next(1_800_000_000_000).random());
    }

    #[test]
    fn an_exhausted_millisecond_moves_to_the_next() {
        let mut g = IdGen::new();
        g.next(5);
        g.last_random = RANDOM_MASK;
        let n = g.next(5);
        assert_eq!(n.timestamp_ms(), 6);
    }
}
