//! Real-kernel tests of the node observer: what the agent reports about
//! the hardware counters of the machine it runs on, that the other
//! observers keep working whatever that is, and real memory pressure (a
//! process thrashing its page cache inside a tight cgroup v1 memory limit)
//! reported from PSI.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// True when the kernel exposes a core PMU (`cpu`, or `cpu_core` on
/// hybrid Intel parts).
fn has_core_pmu() -> bool {
    ["cpu", "cpu_core", "armv8_pmuv3_0"]
        .iter()
        .any(|d| Path::new("/sys/bus/event_source/devices").join(d).exists())
}

#[test]
fn pmc_status_is_reported_and_other_observers_keep_emitting() {
    require_ebpf!();
    let agent = Agent::start("[observers.node]\nsample_period_ms = 100\n", &[]);
    if has_core_pmu() {
        // A machine with counters: the node observer says so, and never
        // claims they are missing.
        agent.wait_stderr("observer=\"node\"", Duration::from_secs(10));
        assert!(
            !agent.stderr().contains("pmc unavailable"),
            "{}",
            agent.stderr()
        );
    } else {
        // This VM: no PMU. The errno-based reason is in the log, and the
        // observer runs on PSI.
        agent.wait_stderr(
            "observer degraded: pmc unavailable: perf_event_open(cycles, cpu ",
            Duration::from_secs(10),
        );
        let log = agent.stderr();
        let line = log.lines().find(|l| l.contains("pmc unavailable")).unwrap();
        assert!(
            line.contains("ENOENT (No such file or directory)"),
            "{line}"
        );
        assert!(line.contains("observer=\"node\""), "{line}");
        if Path::new("/proc/pressure/memory").exists() {
            assert!(
                line.contains("rules: cpu_stall from psi, ipc_degradation not judged, memory_pressure from psi"),
                "{line}"
            );
        }
    }
    // The sampler runs: its cost line appears after its first periods.
    agent.wait_stderr("node sampler cost:", Duration::from_secs(20));

    let p = closed_port("127.0.0.1");
    let e = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    let v = agent.wait_for(
        "refusal next to the node observer",
        Duration::from_secs(10),
        |v| is_type(v, "kernel.network.connection_refused") && dport(v) == u64::from(p),
    );
    assert_eq!(v["data"]["count"], 1);
    if !has_core_pmu() {
        let pmc = agent.matching(|v| v["data"]["source"] == "pmc");
        assert!(pmc.is_empty(), "pmc findings without a PMU: {pmc:#?}");
    }
}

/// A cgroup v1 memory cgroup of this test's own and the file its workload
/// thrashes; on drop every process in it is killed, then the cgroup and
/// the file are removed (bounded).
struct Memcg {
    dir: PathBuf,
    file: PathBuf,
}

impl Memcg {
    fn new(limit: &str) -> Memcg {
        let name = unique("tapio-psi");
        let dir = Path::new("/sys/fs/cgroup/memory").join(&name);
        std::fs::create_dir(&dir).expect("create memory cgroup");
        let cg = Memcg {
            dir,
            file: PathBuf::from(format!("/var/tmp/{name}.bin")),
        };
        std::fs::write(cg.dir.join("memory.limit_in_bytes"), limit).expect("set limit");
        cg
    }
}

impl Drop for Memcg {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            for pid in &pids {
                // SAFETY: kill takes plain integers; a pid gone meanwhile is ESRCH.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            if (pids.is_empty() && std::fs::remove_dir(&self.dir).is_ok())
                || Instant::now() > deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_file(&self.file);
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn page_cache_thrash_in_a_tight_memcg_is_memory_pressure_from_psi() {
    require_ebpf!();
    for need in [
        "/proc/pressure/memory",
        "/sys/fs/cgroup/memory/cgroup.procs",
    ] {
        if !Path::new(need).exists() {
            let why = format!("{need} is missing (needs PSI and a cgroup v1 memory controller)");
            return skip(&test_name!(), &why);
        }
    }
    // 96 MiB of page cache through a 32 MiB v1 memcg can end in an OOM
    // kill there; in the one test process that must not overlap a test
    // that counts OOM kills.
    let _serial = oom_serial();
    let agent = Agent::start(
        "[observers.node]\nsample_period_ms = 200\npsi_memory_permille = 1\n",
        &[],
    );
    let cg = Memcg::new("32M");
    let started = wall_ns();
    // The file is written from inside the cgroup, so its page cache is
    // charged there; 96 MiB through a 32 MiB limit, then read again and
    // again: every pass refaults pages reclaim just evicted, and those
    // waits are PSI memory stalls. Bounded by the pass count and timeout.
    let script = format!(
        "echo $$ > {procs} && dd if=/dev/zero of={file} bs=1M count=96 status=none && for i in $(seq 1 200); do cat {file} > /dev/null; done",
        procs = cg.dir.join("cgroup.procs").display(),
        file = cg.file.display(),
    );
    let _workload = KillOnDrop(
        Command::new("timeout")
            .args(["60", "bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn workload"),
    );

    let v = agent.wait_for("memory_pressure from psi", Duration::from_secs(45), |v| {
        is_type(v, "kernel.node.memory_pressure")
            && v["data"]["source"] == "psi"
            && v["data"]["timestamp_ns"].as_u64().unwrap_or(0) > started
    });
    let d = &v["data"];
    assert_eq!(v["severity"], "warning");
    assert_eq!(v["outcome"], "degraded");
    assert_eq!(v["error"]["code"], "MEMORY_PRESSURE");
    assert_eq!(d["cpu"], -1);
    assert_eq!(d["resource"], "memory");
    assert_eq!(d["threshold_permille"], 1);
    assert!(d["some_permille"].as_u64().unwrap() >= 1, "{v}");
    let stall = d["some_stall_us"].as_u64().unwrap();
    let period = d["period_us"].as_u64().unwrap();
    assert!(stall > 0 && period > 0, "{v}");
    // The ratio is over the period in ns; period_us is truncated.
    assert!(
        d["some_permille"]
            .as_u64()
            .unwrap()
            .abs_diff(stall * 1000 / period)
            <= 1
    );
    assert!(d["full_stall_us"].as_u64().is_some(), "{v}");
    assert!(d["config_generation"].as_u64().unwrap() >= 1);
    // The pressure was real and ours: the cgroup hit its limit, so its
    // allocations went through reclaim (dirty page cache while `dd`
    // writes, then refaults while `cat` re-reads).
    let failcnt: u64 = std::fs::read_to_string(cg.dir.join("memory.failcnt"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(failcnt > 0, "the test cgroup never reached its limit");
}
