//! The host resources tests make or read: loopback ports, the repository
//! root, FIFOs, a temp dir on a real disk, cgroups (removed on drop) and
//! the cgroup v1 memory hierarchy. Names come from `unique`, so parallel
//! tests in the one test process never share one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{closed_port, skip};

/// A loopback TCP port that was free a moment ago (bound to port 0, then
/// released), for a listener the test is about to start.
pub fn free_port() -> u16 {
    closed_port("127.0.0.1")
}

/// The repository root (where Cargo.toml is), for paths to fixtures,
/// scripts and deploy/ that do not depend on the current directory.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A directory (removed on drop) on the disk that holds `target/`, for
/// tests that need real block I/O: `/tmp` may be a tmpfs.
pub fn disk_tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temp dir under target/")
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Creates a FIFO at `path` that nobody writes to: opening it for reading
/// the ordinary way blocks forever (the hostile input readers must skip).
pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads one NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A cgroup directory (and any parents it created), removed on drop once
/// empty.
pub struct CgroupGuard {
    dirs: Vec<PathBuf>,
}

impl CgroupGuard {
    pub fn create(base: &Path, rel: &str) -> (CgroupGuard, PathBuf) {
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

/// The cgroup v1 memory hierarchy, for the tests that need a v1 memory
/// cgroup's `memory.limit_in_bytes`; `None` after skipping `test` where it
/// is missing. A host on cgroup v2 alone is a legitimate skip even under
/// `TAPIO_REQUIRE_EBPF=1`; a host with no memory controller at all is not.
pub fn memcg_v1(test: &str) -> Option<&'static Path> {
    let memory = Path::new("/sys/fs/cgroup/memory");
    if memory.join("memory.limit_in_bytes").exists() {
        return Some(memory);
    }
    let why = "no cgroup v1 memory controller at /sys/fs/cgroup/memory";
    if Path::new("/sys/fs/cgroup/memory.max").exists() {
        eprintln!("skipping {test}: {why} (cgroup v2 only)");
    } else {
        skip(test, why);
    }
    None
}
