//! Container ring records (`struct tapio_ctr_event`) → [`CtrFact`]: an
//! OOM victim chosen, or a process's abnormal exit.
//!
//! Read as the generated type through `agent::decode`'s checks; the
//! sender fields are trusted only with their flag. No offsets here and no
//! panic on any input.

use crate::agent::abi::{self, TapioCtrEvent, TapioEventHdr};
use crate::agent::decode::{comm_bytes, comm_to_string, record, DecodeError};

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

/// Reads one record of the container ring, whose header is `hdr`.
pub fn decode(hdr: &TapioEventHdr, b: &[u8]) -> Result<CtrFact, DecodeError> {
    let kind = match hdr.kind {
        abi::EV_CTR_OOM => CtrKind::Oom,
        abi::EV_CTR_EXIT => CtrKind::Exit,
        other => return Err(DecodeError::UnknownKind(other)),
    };
    Ok(decode_ctr(&record(b, hdr)?, kind))
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::agent::decode::tests::{comm, hdr};
    use crate::agent::observers::{decode, Fact};
    use crate::wire::Observer;
    use zerocopy::IntoBytes;

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
        let Ok(Fact::Container(f)) = decode(Observer::Container, ev.as_bytes()) else {
            panic!("not a container fact");
        };
        let s = f.sender.expect("sender");
        assert_eq!(
            (s.pid, s.comm_str(), s.cgroup_id),
            (77, "kubelet".into(), 99)
        );
        // The same bytes without the flag: nothing trusted.
        ev.flags = 0;
        let Ok(Fact::Container(f)) = decode(Observer::Container, ev.as_bytes()) else {
            panic!("not a container fact");
        };
        assert_eq!(f.sender, None);
    }

    #[test]
    fn decodes_container_oom_and_exit() {
        let rec = ctr_record(
            abi::EV_CTR_OOM,
            1234,
            0,
            abi::CTR_F_MEMCG | abi::CTR_F_MM | abi::CTR_F_PIDNS_INIT,
        );
        let Ok(Fact::Container(f)) = decode(Observer::Container, &rec) else {
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
            let Ok(Fact::Container(f)) = decode(Observer::Container, &rec) else {
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
}
