//! Ring-buffer record bytes → typed facts.
//!
//! The only place that reads raw BPF records. Every read is length-checked:
//! a record whose length, kind or fields do not match the ABI is an error
//! the drain counts as malformed; nothing here panics on any input. Facts
//! are small `Copy` values so the drain thread can batch them without
//! allocating.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::abi::{self, net, EVENT_HDR_SIZE, NET_EVENT_SIZE};
use crate::wire::Observer;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetKind {
    /// SYN_SENT→CLOSE with a socket error.
    ConnectFail,
    Retransmit,
    /// An actively opened connection ended; its final srtt.
    Rtt,
}

/// One network fact as the kernel saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetFact {
    pub kind: NetKind,
    /// CLOSE_MONOTONIC ns (bpf_ktime_get_ns).
    pub mono_ns: u64,
    pub generation: u32,
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// `tcp_receive_reset` was seen while the connect was in SYN_SENT.
    pub rst: bool,
    /// pid/comm name the process that opened the connection.
    pub owner_known: bool,
    pub sk_err: i32,
    pub srtt_us: u32,
    pub state: u32,
    /// cgroup2 id of the connecting process (0 when unknown).
    pub cgroup_id: u64,
}

impl NetFact {
    pub fn comm_str(&self) -> String {
        comm_to_string(&self.comm)
    }

    pub fn family_str(&self) -> &'static str {
        if self.daddr.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    Net(NetFact),
}

impl Fact {
    pub fn as_net(&self) -> Option<&NetFact> {
        match self {
            Fact::Net(f) => Some(f),
        }
    }

    pub fn generation(&self) -> u32 {
        match self {
            Fact::Net(f) => f.generation,
        }
    }
}

/// A NUL-terminated kernel `comm` as a string (lossy on invalid UTF-8).
pub fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(x)
}

/// Decodes one record from `observer`'s ring.
pub fn decode(observer: Observer, b: &[u8]) -> Result<Fact, DecodeError> {
    if b.len() < EVENT_HDR_SIZE {
        return Err(DecodeError::Truncated {
            len: b.len(),
            need: EVENT_HDR_SIZE,
        });
    }
    let mono_ns = u64_at(b, 0);
    let generation = u32_at(b, 8);
    let kind = u16_at(b, 12);
    let declared = u16_at(b, 14);
    match observer {
        Observer::Network => {
            let kind = match kind {
                abi::EV_NET_CONNECT_FAIL => NetKind::ConnectFail,
                abi::EV_NET_RETRANSMIT => NetKind::Retransmit,
                abi::EV_NET_RTT => NetKind::Rtt,
                other => return Err(DecodeError::UnknownKind(other)),
            };
            check_len(b, NET_EVENT_SIZE, declared)?;
            decode_net(b, kind, mono_ns, generation).map(Fact::Net)
        }
        _ => Err(DecodeError::UnknownKind(kind)),
    }
}

fn check_len(b: &[u8], size: usize, declared: u16) -> Result<(), DecodeError> {
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
    if usize::from(declared) != size {
        return Err(DecodeError::SizeMismatch {
            len: b.len(),
            declared,
        });
    }
    Ok(())
}

fn addr(family: u16, raw: &[u8]) -> Result<IpAddr, DecodeError> {
    match family {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        AF_INET6 => {
            let mut x = [0u8; 16];
            x.copy_from_slice(&raw[..16]);
            Ok(IpAddr::V6(Ipv6Addr::from(x)))
        }
        other => Err(DecodeError::BadFamily(other)),
    }
}

fn decode_net(
    b: &[u8],
    kind: NetKind,
    mono_ns: u64,
    generation: u32,
) -> Result<NetFact, DecodeError> {
    let family = u16_at(b, net::FAMILY);
    let mut comm = [0u8; 16];
    comm.copy_from_slice(&b[net::COMM..net::COMM + 16]);
    let flags = u16_at(b, net::FLAGS);
    Ok(NetFact {
        kind,
        mono_ns,
        generation,
        pid: u32_at(b, net::PID),
        tid: u32_at(b, net::TID),
        comm,
        saddr: addr(family, &b[net::SADDR..net::SADDR + 16])?,
        daddr: addr(family, &b[net::DADDR..net::DADDR + 16])?,
        sport: u16_at(b, net::SPORT),
        dport: u16_at(b, net::DPORT),
        rst: flags & abi::NET_F_RST != 0,
        owner_known: flags & abi::NET_F_OWNER != 0,
        sk_err: u32_at(b, net::SK_ERR) as i32,
        srtt_us: u32_at(b, net::SRTT_US),
        state: u32_at(b, net::STATE),
        cgroup_id: u64_at(b, net::CGROUP_ID),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a well-formed network record, for tests here and in classify.
    pub(crate) fn net_record(
        kind: u16,
        family: u16,
        daddr: &[u8],
        dport: u16,
        sk_err: i32,
    ) -> Vec<u8> {
        let mut b = vec![0u8; NET_EVENT_SIZE];
        b[0..8].copy_from_slice(&123u64.to_ne_bytes());
        b[8..12].copy_from_slice(&3u32.to_ne_bytes());
        b[12..14].copy_from_slice(&kind.to_ne_bytes());
        b[14..16].copy_from_slice(&(NET_EVENT_SIZE as u16).to_ne_bytes());
        b[net::PID..net::PID + 4].copy_from_slice(&42u32.to_ne_bytes());
        b[net::COMM..net::COMM + 4].copy_from_slice(b"curl");
        b[net::DADDR..net::DADDR + daddr.len()].copy_from_slice(daddr);
        b[net::FAMILY..net::FAMILY + 2].copy_from_slice(&family.to_ne_bytes());
        b[net::DPORT..net::DPORT + 2].copy_from_slice(&dport.to_ne_bytes());
        b[net::FLAGS..net::FLAGS + 2]
            .copy_from_slice(&(abi::NET_F_RST | abi::NET_F_OWNER).to_ne_bytes());
        b[net::SK_ERR..net::SK_ERR + 4].copy_from_slice(&sk_err.to_ne_bytes());
        b
    }

    #[test]
    fn decodes_ipv4_connect_failure() {
        let rec = net_record(abi::EV_NET_CONNECT_FAIL, AF_INET, &[127, 0, 0, 1], 9, 111);
        let Fact::Net(f) = decode(Observer::Network, &rec).unwrap();
        assert_eq!(f.kind, NetKind::ConnectFail);
        assert_eq!(f.mono_ns, 123);
        assert_eq!(f.generation, 3);
        assert_eq!(f.pid, 42);
        assert_eq!(f.comm_str(), "curl");
        assert_eq!(f.daddr, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(f.dport, 9);
        assert!(f.rst && f.owner_known);
        assert_eq!(f.sk_err, 111);
        assert_eq!(f.family_str(), "ipv4");
    }

    #[test]
    fn decodes_ipv6() {
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        let rec = net_record(abi::EV_NET_RETRANSMIT, AF_INET6, &v6, 443, 0);
        let Fact::Net(f) = decode(Observer::Network, &rec).unwrap();
        assert_eq!(f.daddr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(f.kind, NetKind::Retransmit);
    }

    #[test]
    fn every_truncation_and_extension_is_refused_without_panic() {
        let rec = net_record(abi::EV_NET_CONNECT_FAIL, AF_INET, &[127, 0, 0, 1], 9, 111);
        for len in 0..rec.len() {
            assert!(decode(Observer::Network, &rec[..len]).is_err(), "len {len}");
        }
        let mut long = rec.clone();
        long.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode(Observer::Network, &long),
            Err(DecodeError::Oversized { len: 112, max: 104 })
        );
    }

    #[test]
    fn bad_kind_family_and_declared_size_are_refused() {
        let rec = net_record(99, AF_INET, &[1, 2, 3, 4], 1, 0);
        assert_eq!(
            decode(Observer::Network, &rec),
            Err(DecodeError::UnknownKind(99))
        );
        let rec = net_record(abi::EV_NET_RTT, 7, &[1, 2, 3, 4], 1, 0);
        assert_eq!(
            decode(Observer::Network, &rec),
            Err(DecodeError::BadFamily(7))
        );
        let mut rec = net_record(abi::EV_NET_RTT, AF_INET, &[1, 2, 3, 4], 1, 0);
        rec[14..16].copy_from_slice(&64u16.to_ne_bytes());
        assert!(matches!(
            decode(Observer::Network, &rec),
            Err(DecodeError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: xorshift bytes of every length.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            for obs in Observer::ALL {
                let _ = decode(obs, &buf);
            }
        }
    }
}
