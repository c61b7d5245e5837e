//! Network ring records (`struct tapio_net_event`) → [`NetFact`].
//!
//! Each record is read as its type generated from `tapio_abi.h` through
//! `agent::decode`'s checks (exact length, declared size); an unknown
//! kind or address family is refused, never misread. No offsets here and
//! no panic on any input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::agent::abi::{self, TapioEventHdr, TapioNetEvent};
use crate::agent::decode::{comm_bytes, comm_to_string, record, DecodeError};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetKind {
    /// SYN_SENT→CLOSE with a socket error.
    ConnectFail,
    Retransmit,
    /// An actively opened connection ended with an srtt the kernel judged
    /// an RTT degradation against its destination's baseline (healthy
    /// connections send nothing: the baseline lives in the kernel).
    Rtt,
    /// A peer's RST reached an actively opened connection its application
    /// still holds (`tcp_receive_reset`).
    Reset,
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
    /// The kernel judged `srtt_us` an RTT degradation (an `Rtt` record
    /// always; a retransmit's sample sometimes).
    pub rtt_spike: bool,
    /// The destination's baseline srtt before this sample, and how many
    /// samples it holds (0 when the kernel had none).
    pub rtt_baseline_us: u32,
    pub rtt_samples: u32,
    pub state: u32,
    /// cgroup2 id of the connecting process (0 when unknown).
    pub cgroup_id: u64,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// Reset: data bytes sent and not acknowledged when it came.
    pub unacked: u32,
    /// Retransmit: segments it carried (at least 1).
    pub segs: u32,
    /// Connect failure: its packets this kernel dropped (0: none seen).
    pub drops: u32,
    /// `skb_drop_reason` of the first of them (the kernel's numbering).
    pub drop_reason: u32,
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

/// Reads one record of the network ring, whose header is `hdr`.
pub fn decode(hdr: &TapioEventHdr, b: &[u8]) -> Result<NetFact, DecodeError> {
    let kind = match hdr.kind {
        abi::EV_NET_CONNECT_FAIL => NetKind::ConnectFail,
        abi::EV_NET_RETRANSMIT => NetKind::Retransmit,
        abi::EV_NET_RTT => NetKind::Rtt,
        abi::EV_NET_RESET => NetKind::Reset,
        other => return Err(DecodeError::UnknownKind(other)),
    };
    decode_net(&record(b, hdr)?, kind)
}

fn addr(family: u16, raw: [u8; 16]) -> Result<IpAddr, DecodeError> {
    match family {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(raw))),
        other => Err(DecodeError::BadFamily(other)),
    }
}

fn decode_net(ev: &TapioNetEvent, kind: NetKind) -> Result<NetFact, DecodeError> {
    Ok(NetFact {
        kind,
        mono_ns: ev.hdr.ts_ns,
        generation: ev.hdr.generation,
        pid: ev.pid,
        tid: ev.tid,
        comm: comm_bytes(ev.comm),
        saddr: addr(ev.family, ev.saddr)?,
        daddr: addr(ev.family, ev.daddr)?,
        sport: ev.sport,
        dport: ev.dport,
        rst: ev.flags & abi::NET_F_RST != 0,
        owner_known: ev.flags & abi::NET_F_OWNER != 0,
        sk_err: ev.sk_err,
        srtt_us: ev.srtt_us,
        rtt_spike: ev.flags & abi::NET_F_RTT_SPIKE != 0,
        rtt_baseline_us: ev.rtt_baseline_us,
        rtt_samples: ev.rtt_samples,
        state: ev.state,
        cgroup_id: ev.cgroup_id,
        netns: ev.netns,
        unacked: ev.unacked,
        segs: ev.segs,
        drops: ev.drops,
        drop_reason: ev.drop_reason,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::agent::decode::tests::{comm, hdr};
    use crate::agent::observers::{decode, Fact};
    use crate::wire::Observer;
    use zerocopy::IntoBytes;

    /// A well-formed network record.
    fn net_event(kind: u16, family: u16, daddr: &[u8], dport: u16, sk_err: i32) -> TapioNetEvent {
        let mut ev = TapioNetEvent {
            hdr: hdr::<TapioNetEvent>(kind, 123, 3),
            pid: 42,
            comm: comm(b"curl"),
            family,
            dport,
            flags: abi::NET_F_RST | abi::NET_F_OWNER,
            sk_err,
            ..TapioNetEvent::default()
        };
        ev.daddr[..daddr.len()].copy_from_slice(daddr);
        ev
    }

    /// Builds a well-formed network record, for tests here and in classify.
    pub(crate) fn net_record(
        kind: u16,
        family: u16,
        daddr: &[u8],
        dport: u16,
        sk_err: i32,
    ) -> Vec<u8> {
        net_event(kind, family, daddr, dport, sk_err)
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn decodes_ipv4_connect_failure() {
        let rec = net_record(abi::EV_NET_CONNECT_FAIL, AF_INET, &[127, 0, 0, 1], 9, 111);
        let Ok(Fact::Network(f)) = decode(Observer::Network, &rec) else {
            panic!("not a network fact");
        };
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
    fn decodes_reset_and_the_evidence_fields() {
        let ev = TapioNetEvent {
            unacked: 1000,
            segs: 3,
            drops: 4,
            drop_reason: 12,
            state: 8,
            ..net_event(abi::EV_NET_RESET, AF_INET, &[10, 0, 0, 2], 8080, 0)
        };
        let Ok(Fact::Network(f)) = decode(Observer::Network, ev.as_bytes()) else {
            panic!("not a network fact");
        };
        assert_eq!(f.kind, NetKind::Reset);
        assert_eq!(
            (f.unacked, f.segs, f.drops, f.drop_reason, f.state),
            (1000, 3, 4, 12, 8)
        );
    }

    #[test]
    fn decodes_ipv6() {
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        let rec = net_record(abi::EV_NET_RETRANSMIT, AF_INET6, &v6, 443, 0);
        let Ok(Fact::Network(f)) = decode(Observer::Network, &rec) else {
            panic!("not a network fact");
        };
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
            Err(DecodeError::Oversized {
                len: size_of::<TapioNetEvent>() + 8,
                max: size_of::<TapioNetEvent>()
            })
        );
        // Shorter than the header: refused before its kind is looked at.
        assert_eq!(
            decode(Observer::Network, &rec[..5]),
            Err(DecodeError::Truncated {
                len: 5,
                need: size_of::<TapioEventHdr>()
            })
        );
        // A whole header but not the record.
        assert_eq!(
            decode(Observer::Network, &rec[..40]),
            Err(DecodeError::Truncated {
                len: 40,
                need: size_of::<TapioNetEvent>()
            })
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
        let mut ev = net_event(abi::EV_NET_RTT, AF_INET, &[1, 2, 3, 4], 1, 0);
        ev.hdr.size = 64;
        assert_eq!(
            decode(Observer::Network, ev.as_bytes()),
            Err(DecodeError::SizeMismatch {
                len: size_of::<TapioNetEvent>(),
                declared: 64
            })
        );
    }
}
