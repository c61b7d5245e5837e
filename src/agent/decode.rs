//! Ring-buffer record bytes → typed facts.
//!
//! The only place that reads raw BPF records. Every read is length-checked:
//! a record whose length, kind or fields do not match the ABI is an error
//! the drain counts as malformed; nothing here panics on any input. Facts
//! are small `Copy` values so the drain thread can batch them without
//! allocating.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::abi::{
    self, ctr, net, sto, CTR_EVENT_SIZE, EVENT_HDR_SIZE, NET_EVENT_SIZE, STO_EVENT_SIZE,
};
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
    /// An actively opened connection ended with an srtt the kernel judged
    /// an RTT degradation against its destination's baseline (healthy
    /// connections send nothing: the baseline lives in the kernel).
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
pub enum CtrKind {
    /// `oom/mark_victim`: the OOM killer chose this process.
    Oom,
    /// The last thread of a process exited in a way the BPF scope rule
    /// keeps (crash signal, or a non-zero code of a PID-namespace init or
    /// any process under `exit_scope = all`).
    Exit,
}

/// One container fact. Page counts are the kernel's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtrFact {
    pub kind: CtrKind,
    pub mono_ns: u64,
    pub generation: u32,
    /// tgid (init PID namespace).
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    /// cgroup2 id of the process (0 when unknown).
    pub cgroup_id: u64,
    /// kernfs id of its memory cgroup (v1 or v2), 0 when none.
    pub memcg_id: u64,
    /// `task->exit_code` in wait(2) encoding (exit facts).
    pub exit_status: u32,
    /// The process is pid 1 of its PID namespace.
    pub pidns_init: bool,
    /// The leader's pid in its own PID namespace.
    pub ns_pid: u32,
    /// `memcg_*` were read (OOM facts).
    pub memcg_known: bool,
    /// rss fields were read from the victim's mm (OOM facts).
    pub mm_known: bool,
    pub memcg_limit_depth: u32,
    pub anon_rss_pages: u64,
    pub file_rss_pages: u64,
    pub shmem_rss_pages: u64,
    pub memcg_usage_pages: u64,
    pub memcg_max_pages: u64,
}

impl CtrFact {
    pub fn comm_str(&self) -> String {
        comm_to_string(&self.comm)
    }

    /// Exit code of a normal exit (`WEXITSTATUS`), 0 for a signal death.
    pub fn exit_code(&self) -> u32 {
        if self.signal() == 0 {
            (self.exit_status >> 8) & 0xff
        } else {
            0
        }
    }

    /// Signal that ended the process (`WTERMSIG`), 0 for a normal exit.
    pub fn signal(&self) -> u32 {
        self.exit_status & 0x7f
    }

    /// `WCOREDUMP`.
    pub fn core_dumped(&self) -> bool {
        self.signal() != 0 && self.exit_status & 0x80 != 0
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    Net(NetFact),
    Ctr(CtrFact),
    Sto(StoFact),
}

impl Fact {
    pub fn as_net(&self) -> Option<&NetFact> {
        match self {
            Fact::Net(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_ctr(&self) -> Option<&CtrFact> {
        match self {
            Fact::Ctr(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_sto(&self) -> Option<&StoFact> {
        match self {
            Fact::Sto(f) => Some(f),
            _ => None,
        }
    }

    pub fn generation(&self) -> u32 {
        match self {
            Fact::Net(f) => f.generation,
            Fact::Ctr(f) => f.generation,
            Fact::Sto(f) => f.generation,
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
        Observer::Container => {
            let kind = match kind {
                abi::EV_CTR_OOM => CtrKind::Oom,
                abi::EV_CTR_EXIT => CtrKind::Exit,
                other => return Err(DecodeError::UnknownKind(other)),
            };
            check_len(b, CTR_EVENT_SIZE, declared)?;
            Ok(Fact::Ctr(decode_ctr(b, kind, mono_ns, generation)))
        }
        Observer::Storage => {
            if kind != abi::EV_STO_IO {
                return Err(DecodeError::UnknownKind(kind));
            }
            check_len(b, STO_EVENT_SIZE, declared)?;
            Ok(Fact::Sto(decode_sto(b, mono_ns, generation)))
        }
        _ => Err(DecodeError::UnknownKind(kind)),
    }
}

/// `b` is exactly `CTR_EVENT_SIZE` long (checked by the caller).
fn decode_ctr(b: &[u8], kind: CtrKind, mono_ns: u64, generation: u32) -> CtrFact {
    let mut comm = [0u8; 16];
    comm.copy_from_slice(&b[ctr::COMM..ctr::COMM + 16]);
    let flags = u32_at(b, ctr::FLAGS);
    CtrFact {
        kind,
        mono_ns,
        generation,
        pid: u32_at(b, ctr::PID),
        tid: u32_at(b, ctr::TID),
        comm,
        cgroup_id: u64_at(b, ctr::CGROUP_ID),
        memcg_id: u64_at(b, ctr::MEMCG_ID),
        exit_status: u32_at(b, ctr::EXIT_STATUS),
        pidns_init: flags & abi::CTR_F_PIDNS_INIT != 0,
        ns_pid: u32_at(b, ctr::NS_PID),
        memcg_known: flags & abi::CTR_F_MEMCG != 0,
        mm_known: flags & abi::CTR_F_MM != 0,
        memcg_limit_depth: u32_at(b, ctr::MEMCG_LIMIT_DEPTH),
        anon_rss_pages: u64_at(b, ctr::ANON_RSS_PAGES),
        file_rss_pages: u64_at(b, ctr::FILE_RSS_PAGES),
        shmem_rss_pages: u64_at(b, ctr::SHMEM_RSS_PAGES),
        memcg_usage_pages: u64_at(b, ctr::MEMCG_USAGE_PAGES),
        memcg_max_pages: u64_at(b, ctr::MEMCG_MAX_PAGES),
    }
}

/// `b` is exactly `STO_EVENT_SIZE` long (checked by the caller).
fn decode_sto(b: &[u8], mono_ns: u64, generation: u32) -> StoFact {
    let flags = u16_at(b, sto::FLAGS);
    StoFact {
        mono_ns,
        generation,
        latency_ns: (flags & abi::STO_F_LATENCY != 0).then(|| u64_at(b, sto::LATENCY_NS)),
        sector: u64_at(b, sto::SECTOR),
        dev: u32_at(b, sto::DEV),
        nr_sectors: u32_at(b, sto::NR_SECTORS),
        bytes: u32_at(b, sto::BYTES),
        cmd_flags: u32_at(b, sto::CMD_FLAGS),
        status: u32_at(b, sto::STATUS),
        requeues: u16_at(b, sto::REQUEUES),
        partial: flags & abi::STO_F_PARTIAL != 0,
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
        rtt_spike: flags & abi::NET_F_RTT_SPIKE != 0,
        rtt_baseline_us: u32_at(b, net::RTT_BASELINE_US),
        rtt_samples: u32_at(b, net::RTT_SAMPLES),
        state: u32_at(b, net::STATE),
        cgroup_id: u64_at(b, net::CGROUP_ID),
        netns: u32_at(b, net::NETNS),
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
        let Ok(Fact::Net(f)) = decode(Observer::Network, &rec) else {
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
    fn decodes_ipv6() {
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        let rec = net_record(abi::EV_NET_RETRANSMIT, AF_INET6, &v6, 443, 0);
        let Ok(Fact::Net(f)) = decode(Observer::Network, &rec) else {
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
                len: NET_EVENT_SIZE + 8,
                max: NET_EVENT_SIZE
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
        let mut rec = net_record(abi::EV_NET_RTT, AF_INET, &[1, 2, 3, 4], 1, 0);
        rec[14..16].copy_from_slice(&64u16.to_ne_bytes());
        assert!(matches!(
            decode(Observer::Network, &rec),
            Err(DecodeError::SizeMismatch { .. })
        ));
    }

    /// Builds a well-formed container record, for tests here and in classify.
    pub(crate) fn ctr_record(kind: u16, pid: u32, exit_status: u32, flags: u32) -> Vec<u8> {
        let mut b = vec![0u8; CTR_EVENT_SIZE];
        b[0..8].copy_from_slice(&77u64.to_ne_bytes());
        b[8..12].copy_from_slice(&2u32.to_ne_bytes());
        b[12..14].copy_from_slice(&kind.to_ne_bytes());
        b[14..16].copy_from_slice(&(CTR_EVENT_SIZE as u16).to_ne_bytes());
        b[ctr::PID..ctr::PID + 4].copy_from_slice(&pid.to_ne_bytes());
        b[ctr::TID..ctr::TID + 4].copy_from_slice(&(pid + 1).to_ne_bytes());
        b[ctr::COMM..ctr::COMM + 4].copy_from_slice(b"java");
        b[ctr::CGROUP_ID..ctr::CGROUP_ID + 8].copy_from_slice(&8429u64.to_ne_bytes());
        b[ctr::MEMCG_ID..ctr::MEMCG_ID + 8].copy_from_slice(&51u64.to_ne_bytes());
        b[ctr::EXIT_STATUS..ctr::EXIT_STATUS + 4].copy_from_slice(&exit_status.to_ne_bytes());
        b[ctr::FLAGS..ctr::FLAGS + 4].copy_from_slice(&flags.to_ne_bytes());
        b[ctr::NS_PID..ctr::NS_PID + 4].copy_from_slice(&1u32.to_ne_bytes());
        b[ctr::MEMCG_LIMIT_DEPTH..ctr::MEMCG_LIMIT_DEPTH + 4].copy_from_slice(&1u32.to_ne_bytes());
        for (off, v) in [
            (ctr::ANON_RSS_PAGES, 100u64),
            (ctr::FILE_RSS_PAGES, 20),
            (ctr::SHMEM_RSS_PAGES, 3),
            (ctr::MEMCG_USAGE_PAGES, 16384),
            (ctr::MEMCG_MAX_PAGES, 16384),
        ] {
            b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// Builds a well-formed storage record.
    pub(crate) fn sto_record(status: u32, latency_ns: Option<u64>) -> Vec<u8> {
        let mut b = vec![0u8; STO_EVENT_SIZE];
        b[0..8].copy_from_slice(&55u64.to_ne_bytes());
        b[8..12].copy_from_slice(&4u32.to_ne_bytes());
        b[12..14].copy_from_slice(&abi::EV_STO_IO.to_ne_bytes());
        b[14..16].copy_from_slice(&(STO_EVENT_SIZE as u16).to_ne_bytes());
        let mut flags = abi::STO_F_PARTIAL;
        if let Some(l) = latency_ns {
            b[sto::LATENCY_NS..sto::LATENCY_NS + 8].copy_from_slice(&l.to_ne_bytes());
            flags |= abi::STO_F_LATENCY;
        } else {
            // A stale value the flag says not to trust.
            b[sto::LATENCY_NS..sto::LATENCY_NS + 8].copy_from_slice(&9u64.to_ne_bytes());
        }
        b[sto::SECTOR..sto::SECTOR + 8].copy_from_slice(&2048u64.to_ne_bytes());
        b[sto::DEV..sto::DEV + 4].copy_from_slice(&((7u32 << 20) | 3).to_ne_bytes());
        b[sto::NR_SECTORS..sto::NR_SECTORS + 4].copy_from_slice(&8u32.to_ne_bytes());
        b[sto::BYTES..sto::BYTES + 4].copy_from_slice(&4096u32.to_ne_bytes());
        b[sto::CMD_FLAGS..sto::CMD_FLAGS + 4].copy_from_slice(&(1u32 | 1 << 11).to_ne_bytes());
        b[sto::STATUS..sto::STATUS + 4].copy_from_slice(&status.to_ne_bytes());
        b[sto::REQUEUES..sto::REQUEUES + 2].copy_from_slice(&2u16.to_ne_bytes());
        b[sto::FLAGS..sto::FLAGS + 2].copy_from_slice(&flags.to_ne_bytes());
        b
    }

    #[test]
    fn decodes_container_oom_and_exit() {
        let rec = ctr_record(
            abi::EV_CTR_OOM,
            1234,
            0,
            abi::CTR_F_MEMCG | abi::CTR_F_MM | abi::CTR_F_PIDNS_INIT,
        );
        let Ok(Fact::Ctr(f)) = decode(Observer::Container, &rec) else {
            panic!("not a container fact");
        };
        assert_eq!(f.kind, CtrKind::Oom);
        assert_eq!((f.mono_ns, f.generation), (77, 2));
        assert_eq!((f.pid, f.tid, f.comm_str()), (1234, 1235, "java".into()));
        assert_eq!((f.cgroup_id, f.memcg_id), (8429, 51));
        assert!(f.memcg_known && f.mm_known && f.pidns_init);
        assert_eq!(f.ns_pid, 1);
        assert_eq!(f.memcg_limit_depth, 1);
        assert_eq!(
            (f.anon_rss_pages, f.file_rss_pages, f.shmem_rss_pages),
            (100, 20, 3)
        );
        assert_eq!((f.memcg_usage_pages, f.memcg_max_pages), (16384, 16384));

        // wait(2) encodings: exit(3), SIGSEGV with core, SIGKILL.
        for (status, code, sig, core) in [
            (3 << 8, 3, 0, false),
            (0x80 | 11, 0, 11, true),
            (9, 0, 9, false),
        ] {
            let rec = ctr_record(abi::EV_CTR_EXIT, 9, status, 0);
            let Ok(Fact::Ctr(f)) = decode(Observer::Container, &rec) else {
                panic!("not a container fact");
            };
            assert_eq!(f.kind, CtrKind::Exit);
            assert_eq!(
                (f.exit_code(), f.signal(), f.core_dumped()),
                (code, sig, core)
            );
            assert!(!f.memcg_known && !f.pidns_init);
        }
    }

    #[test]
    fn decodes_storage_with_and_without_latency() {
        let Ok(Fact::Sto(f)) = decode(Observer::Storage, &sto_record(3, Some(5_000))) else {
            panic!("not a storage fact");
        };
        assert_eq!((f.mono_ns, f.generation), (55, 4));
        assert_eq!(f.latency_ns, Some(5_000));
        assert_eq!((f.major(), f.minor()), (7, 3));
        assert_eq!((f.sector, f.nr_sectors, f.bytes), (2048, 8, 4096));
        assert_eq!(f.op(), 1);
        assert_eq!((f.status, f.requeues, f.partial), (3, 2, true));
        let Ok(Fact::Sto(f)) = decode(Observer::Storage, &sto_record(10, None)) else {
            panic!("not a storage fact");
        };
        assert_eq!(
            f.latency_ns, None,
            "latency without its flag is not trusted"
        );
    }

    #[test]
    fn container_and_storage_lengths_and_kinds_are_checked() {
        for (obs, rec) in [
            (Observer::Container, ctr_record(abi::EV_CTR_EXIT, 1, 9, 0)),
            (Observer::Storage, sto_record(10, None)),
        ] {
            assert!(decode(obs, &rec).is_ok());
            for len in 0..rec.len() {
                assert!(decode(obs, &rec[..len]).is_err(), "{obs:?} len {len}");
            }
            let mut long = rec.clone();
            long.push(0);
            assert!(matches!(
                decode(obs, &long),
                Err(DecodeError::Oversized { .. })
            ));
            let mut bad = rec.clone();
            bad[14..16].copy_from_slice(&8u16.to_ne_bytes());
            assert!(matches!(
                decode(obs, &bad),
                Err(DecodeError::SizeMismatch { .. })
            ));
            // Another observer's kind is refused, not misread.
            let mut other = rec.clone();
            other[12..14].copy_from_slice(&abi::EV_NET_RTT.to_ne_bytes());
            assert_eq!(
                decode(obs, &other),
                Err(DecodeError::UnknownKind(abi::EV_NET_RTT))
            );
        }
        // A container record on the storage ring is refused by kind.
        let rec = ctr_record(abi::EV_CTR_OOM, 1, 0, 0);
        assert_eq!(
            decode(Observer::Storage, &rec),
            Err(DecodeError::UnknownKind(abi::EV_CTR_OOM))
        );
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
