//! Helpers shared by the integration tests. Here: a running agent whose
//! stdout occurrences can be searched, network namespaces, shell commands,
//! Python programs and venvs, a loopback HTTP receiver, a child's output as
//! a channel of lines, the OOM lock. In the submodules: the skip policy
//! (`gate`), bounded waits and command runs (`process`), HTTP and metrics
//! reading (`metrics`), the controller child (`controller`), the oneshot
//! router client (`oneshot`), host resources (`host`) and in-process
//! fixtures (`fixtures`).
//!
//! Every resource is released by `Drop`, so a failing assertion still
//! cleans up. A helper lives here once two areas need it; nothing here
//! changes process-wide state (one process runs every test).
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[macro_use]
mod gate;
mod controller;
mod fixtures;
mod host;
mod metrics;
pub mod oneshot;
mod process;

pub use controller::*;
pub use fixtures::*;
pub use gate::*;
pub use host::*;
pub use metrics::*;
pub use process::*;

pub fn tapio_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tapio"))
}

/// A unique short suffix for names (netns, interfaces, cgroups).
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running `tapio agent --sink stdout`, its stdout parsed as occurrences.
pub struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
    pub data_dir: PathBuf,
}

impl Agent {
    /// Starts the agent with `toml` as its config file and `args` extra,
    /// and waits (bounded) until its config is applied.
    pub fn start(toml: &str, args: &[&str]) -> Agent {
        Self::start_until(toml, args, "config applied")
    }

    /// Like [`Agent::start`], but waits for `ready` in the log instead.
    pub fn start_until(toml: &str, args: &[&str], ready: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut cmd, data_dir) = agent_command(dir.path(), toml);
        let mut child = cmd.args(args).spawn().expect("spawn tapio agent");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = collect_text(child.stderr.take().unwrap());
        let out = child.stdout.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => l.lock().unwrap().push(v),
                    Err(e) => panic!("agent printed a non-JSON line {line:?}: {e}"),
                }
            }
        });
        let agent = Agent {
            child,
            lines,
            stderr,
            _dir: dir,
            data_dir,
        };
        agent.wait_stderr(ready, Duration::from_secs(60));
        agent
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle`; panics with the log otherwise.
    pub fn wait_stderr(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent never logged {needle:?}; stderr:\n{}", self.stderr());
    }

    /// All occurrences so far that satisfy `pred`.
    pub fn matching(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|v| pred(v))
            .cloned()
            .collect()
    }

    /// Waits (bounded) for the first occurrence satisfying `pred`.
    pub fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(v) = self.matching(&pred).into_iter().next() {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no occurrence {what} within {limit:?}; got {:#?}\nstderr:\n{}",
            self.lines.lock().unwrap(),
            self.stderr()
        );
    }

    /// Sends SIGTERM and waits (bounded) for exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.stop_within(Duration::from_secs(20))
    }

    /// Sends SIGTERM and waits at most `limit` for exit (then kills it);
    /// returns the exit code, `None` if it had to be killed.
    pub fn stop_within(&mut self, limit: Duration) -> Option<i32> {
        // SAFETY: kill takes plain integers; at worst the pid is gone (ESRCH).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        match wait_child(&mut self.child, limit) {
            Some(status) => {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                status.code()
            }
            None => {
                let _ = self.child.kill();
                None
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.stop();
        }
    }
}

/// `tapio agent` with `toml` written to `dir/tapio.toml` as its config
/// and `dir/occurrences` (returned) as its data dir; stdin closed, stdout
/// and stderr piped, `RUST_LOG=info`. The caller adds arguments and
/// spawns it; `dir` must outlive the agent.
pub fn agent_command(dir: &Path, toml: &str) -> (Command, PathBuf) {
    let cfg = dir.join("tapio.toml");
    std::fs::write(&cfg, toml).expect("write config");
    let data_dir = dir.join("occurrences");
    let mut cmd = Command::new(tapio_bin());
    cmd.arg("agent")
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    (cmd, data_dir)
}

pub fn is_type(v: &Value, t: &str) -> bool {
    v["type"] == t
}

pub fn dport(v: &Value) -> u64 {
    v["data"]["dport"].as_u64().unwrap_or(0)
}

/// A port nobody listens on: bound then released by the OS.
pub fn closed_port(addr: &str) -> u16 {
    let l = std::net::TcpListener::bind((addr, 0)).expect("bind port 0");
    l.local_addr().unwrap().port()
}

/// Runs a command to completion (bounded), panicking with its output on failure.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    if !out.status.success() {
        panic!(
            "command failed: {cmd}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace of this test's own, with `lo` up; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        sh(&format!("ip netns add {name}"));
        let ns = Netns { name };
        ns.exec("ip link set lo up");
        ns
    }

    /// Runs a shell command inside the namespace (bounded by the command).
    pub fn exec(&self, cmd: &str) -> String {
        sh(&format!(
            "ip netns exec {} bash -c {}",
            self.name,
            shell_quote(cmd)
        ))
    }

    /// Starts a long-running command inside the namespace.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in netns")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Kills a child on drop.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a python3 program with a deadline; returns (status ok, stdout, stderr).
pub fn python_in(
    ns: Option<&Netns>,
    program: &str,
    limit: Duration,
) -> (bool, String, String, u32) {
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name, "python3", "-c", program]);
            c
        }
        None => {
            let mut c = Command::new("python3");
            c.args(["-c", program]);
            c
        }
    };
    let ran = output_within(&mut cmd, limit, false);
    (ran.ok(), ran.stdout, ran.stderr, ran.pid)
}

pub fn write_stdin(child: &mut Child, s: &str) {
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(s.as_bytes())
        .unwrap();
}

/// A Python virtualenv under `target/` with `packages` installed (once; a
/// marker file records what was installed). Returns its python, or `None`
/// after printing why — callers skip, or fail under TAPIO_REQUIRE_EBPF=1.
pub fn python_venv(name: &str, packages: &[&str]) -> Option<PathBuf> {
    let dir =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).join(format!("py-{name}"));
    let py = dir.join("bin/python3");
    let marker = dir.join(".tapio-installed");
    let want = packages.join(" ");
    // Serialise venv creation across parallel tests of one binary.
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) && py.exists() {
        return Some(py);
    }
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages)
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        let why = format!("could not create a venv with {want}");
        if strict() {
            panic!("{why} (TAPIO_REQUIRE_EBPF=1)");
        }
        eprintln!("skipping: {why}");
        return None;
    }
    let _ = std::fs::write(&marker, &want);
    Some(py)
}

/// Requests a [`Receiver`] got: (path, head, body).
pub type Requests = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A loopback HTTP/1.1 receiver: records each request (path, headers,
/// body) and answers with the next status from `statuses` (then 200), or
/// never answers when `hang` is set.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    pub requests: Requests,
    pub connections: Arc<AtomicU32>,
}

impl Receiver {
    pub fn start(statuses: Vec<u16>, hang: bool) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Requests = Arc::default();
        let connections = Arc::new(AtomicU32::new(0));
        let (r, c) = (requests.clone(), connections.clone());
        let statuses = Arc::new(Mutex::new(std::collections::VecDeque::from(statuses)));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, statuses) = (r.clone(), statuses.clone());
                std::thread::spawn(move || {
                    use std::io::Read;
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    loop {
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            match stream.read(&mut byte) {
                                Ok(1) => head.push(byte[0]),
                                _ => return,
                            }
                            if head.len() > 64 * 1024 {
                                return;
                            }
                        }
                        let head = String::from_utf8_lossy(&head).into_owned();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        let mut body = vec![0u8; len];
                        if stream.read_exact(&mut body).is_err() {
                            return;
                        }
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        r.lock().unwrap().push((path, head, body));
                        if hang {
                            std::thread::sleep(Duration::from_secs(30));
                            return;
                        }
                        let status = statuses.lock().unwrap().pop_front().unwrap_or(200);
                        let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
                        if stream.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            requests,
            connections,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    /// Waits (bounded) until at least `n` requests arrived.
    pub fn wait_requests(&self, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.requests.lock().unwrap().len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// Reads one counter value from a Prometheus exposition.
pub fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// Forwards `out` (a child's stdout, say) line by line to a channel, from a
/// thread that stops at EOF or once the receiver is gone; the caller waits
/// on it with `recv_timeout`.
pub fn line_channel(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Serialises the tests that cause or count OOM kills, across the threads
/// of this test binary, the other test targets and concurrent runs on one
/// machine: the agent sees every OOM kill on the node and its counters
/// cannot be matched to one test's cgroup, so a test that expects "no OOM
/// kill yet" must not overlap another's kill. Each call opens the file
/// anew, and flock(2) locks belong to the open file description, so two
/// threads of one process exclude each other too. The lock is released
/// when the guard drops (or the process dies).
pub struct OomSerial(#[allow(dead_code, reason = "held for its lock")] std::fs::File);

pub fn oom_serial() -> OomSerial {
    exclusive_lock(Path::new("/tmp/tapio-oom-tests.lock"))
}

/// Opens `path` (created if missing) and blocks until this open file holds
/// an exclusive flock(2) on it.
fn exclusive_lock(path: &Path) -> OomSerial {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open the lock file {}: {e}", path.display()));
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a valid, open descriptor; blocks until it is ours.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {}", path.display());
    OomSerial(f)
}

/// The premise of [`oom_serial`] in one process: while one thread holds the
/// lock, another thread's own open of the file cannot take it; once the
/// guard drops, it can.
#[test]
fn the_oom_lock_excludes_another_thread_of_this_process() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let held = exclusive_lock(&path);
    let try_lock = |path: PathBuf| {
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            // SAFETY: flock on a valid, open descriptor; never blocks.
            unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
        })
        .join()
        .unwrap()
    };
    assert!(!try_lock(path.clone()), "taken while held");
    drop(held);
    assert!(try_lock(path), "not free after the guard dropped");
}
