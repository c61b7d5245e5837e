//! Ring-buffer record bytes → typed facts.
//!
//! The only place that reads raw BPF records, and it reads each as its
//! type generated from `bpf/include/tapio_abi.h` (`agent::abi`): the header
//! first, then, once its kind is known and the record's length and declared
//! size both equal that type's size, the whole record as a copy (zerocopy's
//! `FromBytes`: no unsafe here, no alignment assumed of the ring). No
//! offsets are written here. A record whose length, kind or fields do not
//! match the ABI is an error the drain counts as malformed; nothing here
//! panics on any input. Facts are small `Copy` values so the drain thread
//! can batch them without allocating.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use zerocopy::FromBytes;

use super::abi::{self, TapioCtrEvent, TapioEventHdr, TapioNetEvent, TapioStoEvent};
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
    /// Exit: the process that sent the fatal signal, when another process
    /// did (none for a signal the kernel raised, or one sent to itself).
    pub sender: Option<SignalSender>,
}

/// Who sent a fatal signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalSender {
    /// tgid (init PID namespace).
    pub pid: u32,
    pub comm: [u8; 16],
    /// cgroup2 id of the sender (0 when unknown).
    pub cgroup_id: u64,
}

impl SignalSender {
    pub fn comm_str(&self) -> String {
        comm_to_string(&self.comm)
    }
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

/// Decodes one record from `observer`'s ring.
pub fn decode(observer: Observer, b: &[u8]) -> Result<Fact, DecodeError> {
    let Ok((hdr, _)) = TapioEventHdr::read_from_prefix(b) else {
        return Err(DecodeError::Truncated {
            len: b.len(),
            need: size_of::<TapioEventHdr>(),
        });
    };
    match observer {
        Observer::Network => {
            let kind = match hdr.kind {
                abi::EV_NET_CONNECT_FAIL => NetKind::ConnectFail,
                abi::EV_NET_RETRANSMIT => NetKind::Retransmit,
                abi::EV_NET_RTT => NetKind::Rtt,
                abi::EV_NET_RESET => NetKind::Reset,
                other => return Err(DecodeError::UnknownKind(other)),
            };
            decode_net(&record(b, &hdr)?, kind).map(Fact::Net)
        }
        Observer::Container => {
            let kind = match hdr.kind {
                abi::EV_CTR_OOM => CtrKind::Oom,
                abi::EV_CTR_EXIT => CtrKind::Exit,
                other => return Err(DecodeError::UnknownKind(other)),
            };
            Ok(Fact::Ctr(decode_ctr(&record(b, &hdr)?, kind)))
        }
        Observer::Storage => {
            if hdr.kind != abi::EV_STO_IO {
                return Err(DecodeError::UnknownKind(hdr.kind));
            }
            Ok(Fact::Sto(decode_sto(&record(b, &hdr)?)))
        }
        _ => Err(DecodeError::UnknownKind(hdr.kind)),
    }
}

/// `b` as a `T`, when its length and the size its header declares are both
/// exactly `T`'s.
fn record<T: FromBytes>(b: &[u8], hdr: &TapioEventHdr) -> Result<T, DecodeError> {
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
fn comm_bytes(comm: [std::ffi::c_char; 16]) -> [u8; 16] {
    zerocopy::transmute!(comm)
}

fn decode_ctr(ev: &TapioCtrEvent, kind: CtrKind) -> CtrFact {
    let flags = ev.flags;
    let sender = (flags & abi::CTR_F_SENDER != 0).then(|| SignalSender {
        pid: ev.sender_pid,
        comm: comm_bytes(ev.sender_comm),
        cgroup_id: ev.sender_cgroup_id,
    });
    CtrFact {
        kind,
        mono_ns: ev.hdr.ts_ns,
        generation: ev.hdr.generation,
        pid: ev.pid,
        tid: ev.tid,
        comm: comm_bytes(ev.comm),
        cgroup_id: ev.cgroup_id,
        memcg_id: ev.memcg_id,
        exit_status: ev.exit_status,
        pidns_init: flags & abi::CTR_F_PIDNS_INIT != 0,
        ns_pid: ev.ns_pid,
        memcg_known: flags & abi::CTR_F_MEMCG != 0,
        mm_known: flags & abi::CTR_F_MM != 0,
        memcg_limit_depth: ev.memcg_limit_depth,
        anon_rss_pages: ev.anon_rss_pages,
        file_rss_pages: ev.file_rss_pages,
        shmem_rss_pages: ev.shmem_rss_pages,
        memcg_usage_pages: ev.memcg_usage_pages,
        memcg_max_pages: ev.memcg_max_pages,
        sender,
    }
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
    use zerocopy::IntoBytes;

    /// A record header the way the BPF side fills it: `size` is the whole
    /// record's.
    fn hdr<T>(kind: u16, ts_ns: u64, generation: u32) -> TapioEventHdr {
        TapioEventHdr {
            ts_ns,
            generation,
            kind,
            size: size_of::<T>() as u16,
        }
    }

    /// A kernel `char[16]` holding `s`.
    fn comm(s: &[u8]) -> [std::ffi::c_char; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s);
        zerocopy::transmute!(c)
    }

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
    fn decodes_reset_and_the_evidence_fields() {
        let ev = TapioNetEvent {
            unacked: 1000,
            segs: 3,
            drops: 4,
            drop_reason: 12,
            state: 8,
            ..net_event(abi::EV_NET_RESET, AF_INET, &[10, 0, 0, 2], 8080, 0)
        };
        let Ok(Fact::Net(f)) = decode(Observer::Network, ev.as_bytes()) else {
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

    /// A well-formed container record.
    fn ctr_event(kind: u16, pid: u32, exit_status: u32, flags: u32) -> TapioCtrEvent {
        TapioCtrEvent {
            hdr: hdr::<TapioCtrEvent>(kind, 77, 2),
            pid,
            tid: pid + 1,
            comm: comm(b"java"),
            cgroup_id: 8429,
            memcg_id: 51,
            exit_status,
            flags,
            ns_pid: 1,
            memcg_limit_depth: 1,
            anon_rss_pages: 100,
            file_rss_pages: 20,
            shmem_rss_pages: 3,
            memcg_usage_pages: 16384,
            memcg_max_pages: 16384,
            ..TapioCtrEvent::default()
        }
    }

    /// Builds a well-formed container record, for tests here and in classify.
    pub(crate) fn ctr_record(kind: u16, pid: u32, exit_status: u32, flags: u32) -> Vec<u8> {
        ctr_event(kind, pid, exit_status, flags).as_bytes().to_vec()
    }

    #[test]
    fn decodes_the_signal_sender_only_with_its_flag() {
        let mut ev = TapioCtrEvent {
            sender_pid: 77,
            sender_comm: comm(b"kubelet"),
            sender_cgroup_id: 99,
            ..ctr_event(abi::EV_CTR_EXIT, 10, 9, abi::CTR_F_SENDER)
        };
        let Ok(Fact::Ctr(f)) = decode(Observer::Container, ev.as_bytes()) else {
            panic!("not a container fact");
        };
        let s = f.sender.expect("sender");
        assert_eq!(
            (s.pid, s.comm_str(), s.cgroup_id),
            (77, "kubelet".into(), 99)
        );
        // The same bytes without the flag: nothing trusted.
        ev.flags = 0;
        let Ok(Fact::Ctr(f)) = decode(Observer::Container, ev.as_bytes()) else {
            panic!("not a container fact");
        };
        assert_eq!(f.sender, None);
    }

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
        assert_eq!(f.sender, None, "no sender without its flag");
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
            let (hdr, body) = TapioEventHdr::read_from_prefix(&rec).expect("a header");
            let with_hdr = |hdr: TapioEventHdr| [hdr.as_bytes(), body].concat();
            let bad = with_hdr(TapioEventHdr { size: 8, ..hdr });
            assert_eq!(
                decode(obs, &bad),
                Err(DecodeError::SizeMismatch {
                    len: rec.len(),
                    declared: 8
                })
            );
            // Another observer's kind is refused, not misread.
            let other = with_hdr(TapioEventHdr {
                kind: abi::EV_NET_RTT,
                ..hdr
            });
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
