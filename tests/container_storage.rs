//! Real-kernel tests of the container and storage observers and of
//! container attribution, driving the built `tapio agent --sink stdout`.
//!
//! Each test starts its own agent, makes a real fault with its own
//! processes, cgroups, loop devices and mounts (removed by guards, also on
//! failure), and matches occurrences by its own pid or device, never "the
//! first event". "Nothing is reported" is checked against a marker fault
//! made afterwards: once the marker's occurrence is out, the earlier fact
//! has been drained too (one ring, in order). Every wait is bounded; no
//! test asserts wall time.
//!
//! Needs root with eBPF: skips with one line otherwise, fails instead when
//! `TAPIO_REQUIRE_EBPF=1`.
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{is_type, require_ebpf, Agent};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn ci() -> bool {
    std::env::var("TAPIO_REQUIRE_EBPF").as_deref() == Ok("1")
}

/// Root, BTF and the tools a test needs, or one line saying why it skips
/// (a failure under `TAPIO_REQUIRE_EBPF=1`).
fn can_run(what: &str, tools: &[&str]) -> bool {
    if !require_ebpf(what) {
        return false;
    }
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{what}: needs {}", missing.join(", "));
    assert!(!ci(), "{why} and TAPIO_REQUIRE_EBPF=1");
    eprintln!("skipping {why}");
    false
}

fn start(toml: &str) -> Agent {
    Agent::start(toml, &["--sink", "stdout"])
}

fn wait_for(agent: &Agent, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    agent.wait_for(what, WAIT, pred)
}

fn data_pid(v: &Value) -> Option<u64> {
    v["data"]["pid"].as_u64()
}

// ------------------------------------------------------------ processes

/// Runs `script` in sh; returns the sh's pid and its exit status.
fn run_sh(script: &str) -> (u32, std::process::ExitStatus) {
    let mut c = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let pid = c.id();
    (pid, c.wait().expect("wait sh"))
}

/// A process killed by SIGSEGV; returns its pid.
fn segv() -> u32 {
    run_sh("kill -SEGV $$").0
}

/// The init of a new PID namespace exiting with `code`; returns its pid in
/// the host namespace (read from /proc, which is the host's here) and the
/// pid of the `unshare` around it.
fn pidns_init_exit(code: u8) -> (u32, u32) {
    let c = Command::new("unshare")
        .args(["--pid", "--fork", "sh", "-c"])
        .arg(format!(
            "read -r pid rest < /proc/self/stat; echo $pid; exit {code}"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let outer = c.id();
    let out = c.wait_with_output().expect("wait unshare");
    assert_eq!(out.status.code(), Some(i32::from(code)));
    let inner = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("init's host pid");
    (inner, outer)
}

// -------------------------------------------------------------- cgroups

/// A cgroup directory (and any parents it created), removed on drop once
/// empty.
struct CgroupGuard {
    dirs: Vec<PathBuf>,
}

impl CgroupGuard {
    fn create(base: &Path, rel: &str) -> (CgroupGuard, PathBuf) {
        let mut dirs = Vec::new();
        let mut p = base.to_path_buf();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.join(seg);
            if !p.exists() {
                std::fs::create_dir(&p)
                    .unwrap_or_else(|e| panic!("create cgroup {}: {e}", p.display()));
                dirs.push(p.clone());
            }
        }
        (CgroupGuard { dirs }, p)
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for d in self.dirs.iter().rev() {
            // A cgroup can be removed once its last task is reaped; allow
            // the kernel a moment for that.
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Runs `script` in sh moved into `cgroup` first; returns the sh's pid.
fn run_in_cgroup(cgroup: &Path, script: &str) -> u32 {
    let procs = cgroup.join("cgroup.procs");
    run_sh(&format!("echo $$ > '{}' && {script}", procs.display())).0
}

// ------------------------------------------------------ mounts and loops

struct MountGuard(PathBuf);

impl MountGuard {
    fn tmpfs(dir: &Path, size: &str) -> MountGuard {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("tapio-test")
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        MountGuard(dir.to_path_buf())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        for _ in 0..50 {
            if Command::new("umount")
                .arg(&self.0)
                .status()
                .is_ok_and(|s| s.success())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct LoopGuard {
    dev: PathBuf,
}

impl LoopGuard {
    fn attach(file: &Path) -> LoopGuard {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopGuard {
            dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        }
    }

    /// A loop device in direct-I/O mode: its requests reach the backing
    /// file's disk as they are, not through the page cache.
    fn attach_direct(file: &Path) -> LoopGuard {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--direct-io=on"])
            .arg(file)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopGuard {
            dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        }
    }

    /// `"major:minor"` of the loop device.
    fn major_minor(&self) -> String {
        let m = std::fs::metadata(&self.dev).expect("stat loop device");
        assert!(m.file_type().is_block_device());
        let rdev = m.rdev();
        format!("{}:{}", libc::major(rdev), libc::minor(rdev))
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// One O_DIRECT write of `blocks` 4 KiB blocks at block `seek`; true when
/// it succeeded.
fn direct_write(dev: &Path, seek: u64, blocks: u64) -> bool {
    Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", dev.display()))
        .args(["bs=4096", "oflag=direct", "conv=notrunc"])
        .arg(format!("count={blocks}"))
        .arg(format!("seek={seek}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("dd")
        .success()
}

fn unique(tag: &str) -> String {
    common::unique(&format!("tapio-test-{tag}-"))
}

// ---------------------------------------------------------------- tests

#[test]
fn oom_kill_in_a_v1_memory_cgroup_reports_pid_and_limit_once() {
    if !can_run("oom_kill_in_a_v1_memory_cgroup", &["tail"]) {
        return;
    }
    let memory = Path::new("/sys/fs/cgroup/memory");
    let v2_memory = Path::new("/sys/fs/cgroup/memory.max").exists();
    if !memory.join("memory.limit_in_bytes").exists() {
        let why = "oom_kill test: no cgroup v1 memory controller at /sys/fs/cgroup/memory";
        if ci() && !v2_memory {
            panic!("{why}");
        }
        eprintln!("skipping {why}");
        return;
    }
    const LIMIT: u64 = 64 * 1024 * 1024;
    let _serial = common::oom_serial();
    let agent = start("");
    let (_cg, dir) = CgroupGuard::create(memory, &unique("oom"));
    std::fs::write(dir.join("memory.limit_in_bytes"), LIMIT.to_string()).expect("set limit");
    // `tail` keeps a line it never finishes: /dev/zero has no newline.
    let pid = run_in_cgroup(&dir, "exec tail /dev/zero");

    let oom = wait_for(&agent, "the OOM kill", |v| {
        is_type(v, "kernel.container.oom_kill") && data_pid(v) == Some(u64::from(pid))
    });
    let d = &oom["data"];
    assert_eq!(oom["severity"], "critical");
    assert_eq!(d["memory_limit_bytes"], LIMIT, "{oom}");
    assert_eq!(d["memory_limit_source"], "memcg");
    assert_eq!(d["comm"], "tail");
    assert_eq!(d["signal"], 9);
    assert!(
        d["memory_usage_bytes"].as_u64().unwrap() > LIMIT / 2,
        "{oom}"
    );
    assert!(d["config_generation"].as_u64().is_some());

    // The victim's SIGKILL exit is not a second report: a later marker
    // crash gets through, the victim's exit never does.
    let marker = segv();
    wait_for(&agent, "the marker crash", |v| {
        data_pid(v) == Some(u64::from(marker))
    });
    let about_victim = agent.matching(|v| data_pid(v) == Some(u64::from(pid)));
    assert_eq!(about_victim.len(), 1, "{about_victim:?}");
}

#[test]
fn crash_signal_and_pidns_init_exit_are_reported_host_exit_is_not() {
    if !can_run("crash_signal_and_pidns_init_exit", &["unshare"]) {
        return;
    }
    let agent = start("");
    let host_exit_1 = run_sh("exit 1").0;
    let term = run_sh("kill -TERM $$").0;
    let crashed = segv();
    let seg = wait_for(&agent, "the SIGSEGV", |v| {
        is_type(v, "kernel.container.abnormal_exit") && data_pid(v) == Some(u64::from(crashed))
    });
    assert_eq!(seg["severity"], "error");
    assert_eq!(seg["data"]["signal"], 11);
    assert_eq!(seg["data"]["signal_name"], "SIGSEGV");
    assert_eq!(seg["data"]["comm"], "sh");

    let (init, outer) = pidns_init_exit(3);
    let ex = wait_for(&agent, "the namespace init's exit", |v| {
        is_type(v, "kernel.container.abnormal_exit") && data_pid(v) == Some(u64::from(init))
    });
    assert_eq!(ex["severity"], "warning");
    assert_eq!(ex["data"]["exit_code"], 3);
    assert_eq!(ex["data"]["signal"], 0);
    assert_eq!(ex["data"]["pidns_init"], true);

    // Marker after everything else, then: nothing about the host process
    // that exited 1, the SIGTERM death or the unshare that exited 3.
    let marker = segv();
    wait_for(&agent, "the marker crash", |v| {
        data_pid(v) == Some(u64::from(marker))
    });
    for quiet in [host_exit_1, term, outer] {
        assert!(
            agent
                .matching(|v| data_pid(v) == Some(u64::from(quiet)))
                .is_empty(),
            "pid {quiet} must not be reported"
        );
    }
}

#[test]
fn ignored_exit_code_is_never_reported() {
    if !can_run("ignored_exit_code_is_never_reported", &["unshare"]) {
        return;
    }
    let agent = start("[observers.container]\nignore_exit_codes = [42]\n");
    let (ignored, _) = pidns_init_exit(42);
    let (marker, _) = pidns_init_exit(43);
    let m = wait_for(&agent, "the marker exit 43", |v| {
        data_pid(v) == Some(u64::from(marker))
    });
    assert_eq!(m["data"]["exit_code"], 43);
    assert!(agent
        .matching(|v| data_pid(v) == Some(u64::from(ignored)))
        .is_empty());
}

#[test]
fn exit_scope_all_reports_host_exit_codes() {
    if !can_run("exit_scope_all_reports_host_exit_codes", &[]) {
        return;
    }
    let agent = start("[observers.container]\nexit_scope = \"all\"\n");
    let pid = run_sh("exit 5").0;
    let v = wait_for(&agent, "the host exit 5", |v| {
        data_pid(v) == Some(u64::from(pid))
    });
    assert_eq!(v["data"]["exit_code"], 5);
    assert_eq!(v["data"]["pidns_init"], false);
}

/// A loop device over a sparse file on a tmpfs of `size`.
fn loop_on_tmpfs(
    tag: &str,
    size: &str,
    file_mb: u64,
) -> (tempfile::TempDir, MountGuard, LoopGuard) {
    let dir = tempfile::Builder::new()
        .prefix(&unique(tag))
        .tempdir()
        .expect("tempdir");
    let mnt = MountGuard::tmpfs(dir.path(), size);
    let backing = dir.path().join("disk.img");
    let f = std::fs::File::create(&backing).expect("backing file");
    f.set_len(file_mb * 1024 * 1024).expect("sparse size");
    drop(f);
    let lo = LoopGuard::attach(&backing);
    (dir, mnt, lo)
}

#[test]
fn block_io_error_on_a_full_loop_device() {
    if !can_run(
        "block_io_error_on_a_full_loop_device",
        &["losetup", "mount", "umount", "dd"],
    ) {
        return;
    }
    let agent = start("");
    // Field order matters for drop: loop device, then mount, then dir.
    let (dir, _mnt, lo) = loop_on_tmpfs("ioerr", "2m", 64);
    let dev = lo.major_minor();
    // Fill the tmpfs so the loop device cannot allocate backing pages.
    let mut fill = std::fs::File::create(dir.path().join("fill")).expect("fill file");
    let chunk = vec![0xa5u8; 64 * 1024];
    for _ in 0..1024 {
        if fill.write_all(&chunk).is_err() {
            break;
        }
    }
    drop(fill);
    assert!(
        !direct_write(&lo.dev, 4096, 1),
        "a write past the full tmpfs must fail"
    );
    let v = wait_for(&agent, "the io_error on the loop device", |v| {
        is_type(v, "kernel.storage.io_error") && v["data"]["dev"] == dev.as_str()
    });
    let d = &v["data"];
    assert_eq!(v["severity"], "error");
    assert_eq!(d["errno"], "ENOSPC", "{v}");
    assert_eq!(d["op"], "write");
    assert_eq!(d["sector"], 4096 * 8);
    assert!(d["bytes"].as_u64().unwrap() >= 4096);
    drop(lo);
}

#[test]
fn slow_threshold_reports_loop_device_latency() {
    if !can_run(
        "slow_threshold_reports_loop_device_latency",
        &["losetup", "dd", "sh"],
    ) {
        return;
    }
    // Real, chosen device latency: a direct-I/O loop device whose backing
    // file sits on a real disk, written from a cgroup whose writes to that
    // disk are throttled to 256 KiB/s. Each 256 KiB loop request is in
    // flight (issued to the loop driver) until its throttled backing write
    // is done: about a second.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let Some(disk) = whole_disk_of(tmp) else {
        let why = "latency test: the target dir is not on a block device";
        assert!(!ci(), "{why}");
        eprintln!("skipping {why}");
        return;
    };
    let Some((throttle, _cg)) = write_throttle(&disk, 256 * 1024) else {
        let why = "latency test: no blkio (v1) or io (v2) cgroup controller";
        assert!(!ci(), "{why}");
        eprintln!("skipping {why}");
        return;
    };
    let dir = tempfile::Builder::new()
        .prefix(&unique("lat"))
        .tempdir_in(tmp)
        .expect("tempdir");
    let backing = dir.path().join("disk.img");
    std::fs::File::create(&backing)
        .and_then(|f| f.set_len(16 * 1024 * 1024))
        .expect("backing file");
    let lo = LoopGuard::attach_direct(&backing);
    let dev = lo.major_minor();
    // 50 ms: within the profile range, far below what the throttle makes.
    let agent = start("[observers.storage]\nslow_io_threshold_ns = 50000000\n");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec dd if=/dev/zero of='{}' bs=256k count=2 oflag=direct",
            throttle.display(),
            lo.dev.display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("dd");
    assert!(status.success(), "throttled write to the loop device");
    let v = wait_for(&agent, "a latency_spike on the loop device", |v| {
        is_type(v, "kernel.storage.latency_spike") && v["data"]["dev"] == dev.as_str()
    });
    let lat = v["data"]["latency_ns"].as_u64().expect("latency_ns");
    assert!((50_000_000..60_000_000_000).contains(&lat), "{v}");
    assert!(matches!(
        v["severity"].as_str(),
        Some("warning" | "critical")
    ));
    drop(lo);
}

/// The whole disk (`major:minor`) that holds `path`'s filesystem, if it is
/// a block device (throttle rules name whole disks, not partitions).
fn whole_disk_of(path: &Path) -> Option<String> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = Path::new("/sys/dev/block").join(format!("{major}:{minor}"));
    let sys = std::fs::canonicalize(sys).ok()?;
    let disk = if sys.join("partition").exists() {
        sys.parent()?.to_path_buf()
    } else {
        sys
    };
    let mm = std::fs::read_to_string(disk.join("dev")).ok()?;
    Some(mm.trim().to_string())
}

/// A fresh cgroup whose writes to `disk` are limited to `bps`: the path of
/// its `cgroup.procs`, and the guard that removes it.
fn write_throttle(disk: &str, bps: u64) -> Option<(PathBuf, CgroupGuard)> {
    let v1 = Path::new("/sys/fs/cgroup/blkio");
    if v1.join("blkio.throttle.write_bps_device").exists() {
        let (g, dir) = CgroupGuard::create(v1, &unique("lat"));
        std::fs::write(
            dir.join("blkio.throttle.write_bps_device"),
            format!("{disk} {bps}"),
        )
        .ok()?;
        return Some((dir.join("cgroup.procs"), g));
    }
    let v2 = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(v2.join("cgroup.subtree_control")).ok()?;
    if !controllers.split_whitespace().any(|c| c == "io") {
        return None;
    }
    let (g, dir) = CgroupGuard::create(v2, &unique("lat"));
    std::fs::write(dir.join("io.max"), format!("{disk} wbps={bps}")).ok()?;
    Some((dir.join("cgroup.procs"), g))
}

/// (hierarchy, layout, container_id, pod_uid, runtime)
type AttrCase<'a> = (&'a Path, String, String, Option<&'a str>, Option<&'a str>);

#[test]
fn crashes_in_runtime_shaped_cgroups_are_attributed() {
    if !can_run("crashes_in_runtime_shaped_cgroups_are_attributed", &[]) {
        return;
    }
    let v2 = Path::new("/sys/fs/cgroup/unified");
    let v2 = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup")
    } else if v2.join("cgroup.controllers").exists() {
        v2
    } else {
        let why = "attribution test: no cgroup2 hierarchy under /sys/fs/cgroup";
        assert!(!ci(), "{why}");
        eprintln!("skipping {why}");
        return;
    };
    let v1_memory = Path::new("/sys/fs/cgroup/memory");
    let has_v1_memory = v1_memory.join("memory.limit_in_bytes").exists();

    let id = |n: u8| {
        format!(
            "{:016x}{}",
            std::process::id(),
            format!("{n:02x}").repeat(24)
        )
    };
    let uid = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
    let uid_us = uid.replace('-', "_");
    let mut cases: Vec<AttrCase<'_>> = vec![
        (
            v2,
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_us}.slice/cri-containerd-{}.scope",
                id(1)
            ),
            id(1),
            Some(uid),
            Some("containerd"),
        ),
        (
            v2,
            format!("kubepods.slice/kubepods-pod{uid_us}.slice/crio-{}.scope", id(2)),
            id(2),
            Some(uid),
            Some("cri-o"),
        ),
        (v2, format!("system.slice/docker-{}.scope", id(3)), id(3), None, Some("docker")),
        (v2, format!("machine.slice/libpod-{}.scope", id(4)), id(4), None, Some("podman")),
    ];
    if has_v1_memory {
        cases.push((
            v1_memory,
            format!("docker/{}", id(5)),
            id(5),
            None,
            Some("docker"),
        ));
        cases.push((
            v1_memory,
            format!("kubepods/burstable/pod{uid}/{}", id(6)),
            id(6),
            Some(uid),
            None,
        ));
    }

    let agent = start("");
    let mut guards = Vec::new();
    let mut crashed = Vec::new();
    for (i, (hier, layout, cid, pod, rt)) in cases.iter().enumerate() {
        let (g, dir) = CgroupGuard::create(hier, &format!("{}-{i}/{layout}", unique("attr")));
        guards.push(g);
        let pid = run_in_cgroup(&dir, "kill -SEGV $$");
        crashed.push((pid, cid.clone(), *pod, *rt, layout.clone()));
    }
    for (pid, cid, pod, rt, layout) in crashed {
        let v = wait_for(&agent, &format!("the crash in {layout}"), |v| {
            is_type(v, "kernel.container.abnormal_exit") && data_pid(v) == Some(u64::from(pid))
        });
        let d = &v["data"];
        assert_eq!(d["container_id"], cid.as_str(), "{layout}: {v}");
        assert_eq!(d["pod_uid"].as_str(), pod, "{layout}");
        assert_eq!(d["container_runtime"].as_str(), rt, "{layout}");
        assert!(
            d["cgroup_path"]
                .as_str()
                .is_some_and(|p| p.ends_with(&layout)),
            "{layout}: {v}"
        );
    }
    // A host process is not attributed.
    let host = segv();
    let v = wait_for(&agent, "the host crash", |v| {
        data_pid(v) == Some(u64::from(host))
    });
    assert!(v["data"].get("container_id").is_none(), "{v}");
    drop(guards);
}
