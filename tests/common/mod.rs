//! Helpers shared by the integration tests: privilege gating (`gate`), a
//! running agent whose stdout occurrences can be searched, network
//! namespaces, commands and polls with bounded waits, a child's output as a
//! channel of lines, loopback ports, HTTP getters and receivers, metrics
//! scraping, the OOM lock. Every resource is released by `Drop`, so a
//! failing assertion still cleans up. A helper lives here once two areas
//! need it; nothing here changes process-wide state (one process runs
//! every test).
// Every helper is used by tests/tests.rs (it builds clean without this
// allow); tests/config_abi.rs still includes this module on its own and
// uses only the gate, until it joins the one test crate.
#![allow(
    dead_code,
    unused_macros,
    reason = "tests/config_abi.rs includes this module and uses only the gate"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[macro_use]
mod gate;
pub use gate::*;
pub mod oneshot;

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

/// Collects everything `out` (a child's stderr, say) writes, line by line,
/// from a thread that stops at EOF, so the child never blocks on a full
/// pipe and the test can read the whole log at any time.
pub fn collect_text(out: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    collect_text_and(out, |_| {})
}

/// [`collect_text`], also handing each line (once stored) to `each`.
pub fn collect_text_and(
    out: impl Read + Send + 'static,
    mut each: impl FnMut(&str) + Send + 'static,
) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
            each(&line);
        }
    });
    text
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

/// Calls `probe` every `every` until it returns `Some`, for at most
/// `limit`; `None` when time ran out. Every wait in these tests is bounded.
pub fn poll<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Calls `probe` every `every` until `done` holds for what it returned, or
/// `limit` has passed; returns that last value either way, for the
/// caller's assertion to judge (and print).
pub fn settle<T>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let v = probe();
        if done(&v) || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(every);
    }
}

/// Waits at most `limit` for `child` to exit: its status, or `None` if it
/// is still running (the caller decides whether to kill it or fail).
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    poll(limit, Duration::from_millis(20), || {
        child.try_wait().unwrap()
    })
}

/// What a command run by [`output_within`] did.
#[derive(Debug)]
pub struct Ran {
    /// The child's pid (gone by now; for matching what it did).
    pub pid: u32,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
}

/// Runs `cmd` to completion within `limit`, reading its stdout and stderr
/// as it goes (so a chatty child never blocks on a full pipe). On expiry it
/// kills the child — with SIGTERM to its whole process group when `group`
/// (the caller spawned it with `process_group(0)` so a script's trap can
/// clean up) — and panics with its stderr.
pub fn output_within(cmd: &mut Command, limit: Duration, group: bool) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let o = read_all(Box::new(child.stdout.take().unwrap()));
    let e = read_all(Box::new(child.stderr.take().unwrap()));
    let Some(status) = wait_child(&mut child, limit) else {
        if group {
            // SAFETY: signals the process group this child leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
        } else {
            let _ = child.kill();
        }
        let _ = child.wait();
        panic!("{cmd:?} exceeded {limit:?}; stderr:\n{}", e.join().unwrap());
    };
    Ran {
        pid: child.id(),
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

/// (status, body) of a GET with a 5 s timeout, or `None` when nothing
/// answered.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().unwrap_or_default()))
}

/// The body of a GET that answered 2xx, else `None`.
pub fn get_ok(url: &str) -> Option<String> {
    http_get(url)
        .filter(|(code, _)| (200..300).contains(code))
        .map(|(_, body)| body)
}

/// The value of one exact series (name and labels as written) in a
/// Prometheus text exposition, if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// [`metric`], or a panic that shows the exposition.
pub fn must_metric(text: &str, series: &str) -> f64 {
    metric(text, series).unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

/// Asserts that `promtool check metrics` (Prometheus' own checker) accepts
/// `text` as a classic text exposition; the caller has checked that
/// promtool is installed (`require_tools!`).
pub fn assert_promtool_accepts(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Prometheus server (the distribution's package) on a free
/// loopback port, reading `dir/prometheus.yml` and keeping its TSDB under
/// `dir/data`; killed when the guard drops. Returns the guard and the port.
pub fn start_prometheus(dir: &Path) -> (KillOnDrop, u16) {
    let port = free_port();
    let server = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    (KillOnDrop(server), port)
}

/// A running `tapio controller` started on `127.0.0.1:0`: its address
/// (from the "controller listening on" log line) and its whole log, read
/// by a thread that keeps draining stderr so the child never blocks on a
/// full pipe. Killed on drop.
pub struct Controller {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Controller {
    /// Spawns `cmd` (stdout discarded, stderr read) and waits at most
    /// `limit` for the address; panics with the log otherwise.
    pub fn spawn(cmd: &mut Command, limit: Duration) -> Controller {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let (tx, rx) = mpsc::channel();
        let log = collect_text_and(child.stderr.take().unwrap(), move |line| {
            if let Some((_, addr)) = line.split_once("controller listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        });
        let addr = rx.recv_timeout(limit).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "controller did not report its address; log:\n{}",
                log.lock().unwrap()
            )
        });
        Controller {
            child,
            addr: addr.parse().unwrap(),
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits at most `limit` until the log holds `needle`; panics with the
    /// log otherwise. A line the controller wrote before the counter a test
    /// just read can still be on its way through the pipe and the reader.
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let seen = poll(limit, Duration::from_millis(20), || {
            self.log().contains(needle).then_some(())
        });
        assert!(seen.is_some(), "no log line {needle:?}:\n{}", self.log());
    }

    /// Waits at most `limit` for the process to exit by itself; returns its
    /// exit code, panics with the log if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = &mut self.child;
        match poll(limit, Duration::from_millis(50), || {
            child.try_wait().unwrap()
        }) {
            Some(status) => status.code(),
            None => panic!("controller did not exit; log:\n{}", self.log()),
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tapio_sink_<family>_total{sink="<sink>",<label>="<value>"}` from an
/// exposition (0 when the series is absent).
fn sink_series(text: &str, family: &str, sink: &str, label: &str, value: &str) -> u64 {
    counter(
        text,
        &format!("tapio_sink_{family}_total{{sink=\"{sink}\",{label}=\"{value}\"}}"),
    )
}

/// `tapio_sink_writes_total` of sink `sink` with this `result`.
pub fn sink_writes(text: &str, sink: &str, result: &str) -> u64 {
    sink_series(text, "writes", sink, "result", result)
}

/// `tapio_sink_drops_total` of sink `sink` for this `reason`.
pub fn sink_drops(text: &str, sink: &str, reason: &str) -> u64 {
    sink_series(text, "drops", sink, "reason", reason)
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

/// A connection-refused occurrence numbered `n` (its ULID, its time and the
/// port in its message) with `data` as its evidence: the fixture the sink
/// tests send through a real sink.
pub fn refused_occurrence(n: u32, data: &Value) -> Arc<tapio::wire::Occurrence> {
    use tapio::wire::{AnomalyType, Occurrence, Outcome, Severity};
    Arc::new(Occurrence::new(
        ulid::Ulid::from_parts(1_800_000_000_000 + u64::from(n), u128::from(n)),
        AnomalyType::ConnectionRefused,
        Severity::Warning,
        Outcome::Failure,
        format!("connect to 127.0.0.1:{n} refused (rst), count=1"),
        data,
        7,
        1_800_000_000_000_000_000 + u64::from(n),
    ))
}
