//! Ring-buffer record bytes → typed facts: the checks every observer's
//! decode shares.
//!
//! Each ring observer reads its own records in its folder
//! (`agent/observers/<name>/fact.rs`), and `agent::observers::decode`
//! dispatches a record to its ring's observer; all of them go through
//! here: the header first ([`header`]), then, once the kind is known and
//! the record's length and declared size both equal that type's size, the
//! whole record as a copy of its type generated from
//! `bpf/include/tapio_abi.h` ([`record`]; zerocopy's `FromBytes`: no
//! unsafe, no alignment assumed of the ring). No offsets are written
//! anywhere. A record whose length, kind or fields do not match the ABI is
//! an error the drain counts as malformed; nothing panics on any input.
//! Facts are small `Copy` values so the drain thread can batch them
//! without allocating.

use zerocopy::FromBytes;

use super::abi::TapioEventHdr;

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header or than its kind's layout.
    Truncated { len: usize, need: usize },
    /// Longer than its kind's layout.
    Oversized { len: usize, max: usize },
    /// The header's own size field disagrees with the record length.
    SizeMismatch { len: usize, declared: u16 },
    /// A kind this observer does not send.
    UnknownKind(u16),
    /// An address family other than AF_INET/AF_INET6.
    BadFamily(u16),
}

/// A NUL-terminated kernel `comm` as a string (lossy on invalid UTF-8).
pub fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// The header of a record, refused when `b` is shorter than one.
pub fn header(b: &[u8]) -> Result<TapioEventHdr, DecodeError> {
    match TapioEventHdr::read_from_prefix(b) {
        Ok((hdr, _)) => Ok(hdr),
        Err(_) => Err(DecodeError::Truncated {
            len: b.len(),
            need: size_of::<TapioEventHdr>(),
        }),
    }
}

/// `b` as a `T`, when its length and the size its header declares are both
/// exactly `T`'s.
pub(crate) fn record<T: FromBytes>(b: &[u8], hdr: &TapioEventHdr) -> Result<T, DecodeError> {
    let size = size_of::<T>();
    if b.len() < size {
        return Err(DecodeError::Truncated {
            len: b.len(),
            need: size,
        });
    }
    if b.len() > size {
        return Err(DecodeError::Oversized {
            len: b.len(),
            max: size,
        });
    }
    if usize::from(hdr.size) != size {
        return Err(DecodeError::SizeMismatch {
            len: b.len(),
            declared: hdr.size,
        });
    }
    // Cannot fail: the length was checked above. Mapped, not unwrapped, so
    // this function has no panic path at all.
    T::read_from_bytes(b).map_err(|_| DecodeError::Truncated {
        len: b.len(),
        need: size,
    })
}

/// A kernel `char[16]` as the bytes it holds (`c_char` is signed on some
/// targets, unsigned on others).
pub(crate) fn comm_bytes(comm: [std::ffi::c_char; 16]) -> [u8; 16] {
    zerocopy::transmute!(comm)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record header the way the BPF side fills it: `size` is the whole
    /// record's.
    pub(crate) fn hdr<T>(kind: u16, ts_ns: u64, generation: u32) -> TapioEventHdr {
        TapioEventHdr {
            ts_ns,
            generation,
            kind,
            size: size_of::<T>() as u16,
        }
    }

    /// A kernel `char[16]` holding `s`.
    pub(crate) fn comm(s: &[u8]) -> [std::ffi::c_char; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s);
        zerocopy::transmute!(c)
    }
}
