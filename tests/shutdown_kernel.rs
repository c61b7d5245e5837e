//! Real-kernel tests of the agent's shutdown (issue 14, items 1 and 3): a
//! SIGTERM right after a burst loses nothing already classified, and a
//! SIGTERM with a destination that never answers (a black-holed HTTP or
//! OTLP receiver, a stdout pipe nobody reads) still ends the process by
//! itself, with what was not delivered counted in the final log line.
//!
//! Each test runs its own agent and makes its own refusals: to ports
//! 20000..26600 (below the ephemeral range, so no port-0 listener of a
//! parallel test sits there) for the burst, and to ports the OS handed out
//! for the others. Counts are compared within one agent, so refusals made
//! by parallel tests only add to both sides of each equation.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The agent's last line, `agent stopped occurrences=N undelivered: ...`,
/// parsed into (N, sink -> undelivered).
fn final_line(stderr: &str) -> (u64, BTreeMap<String, u64>) {
    let line = stderr
        .lines()
        .rfind(|l| l.contains("agent stopped"))
        .unwrap_or_else(|| panic!("no final line; stderr:\n{stderr}"));
    let field = |name: &str| -> Option<&str> {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        let rest = &line[at..];
        Some(
            &rest[..rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len())],
        )
    };
    let occurrences = field("occurrences")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no occurrences= in {line:?}"));
    let mut undelivered = BTreeMap::new();
    if let Some((_, tail)) = line.split_once("undelivered:") {
        for part in tail.split_whitespace() {
            if let Some((sink, rest)) = part.split_once('=') {
                let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                if let Ok(n) = n.parse() {
                    undelivered.insert(sink.to_string(), n);
                }
            }
        }
    }
    (occurrences, undelivered)
}

fn occurrence_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    !n.starts_with('.') && n.ends_with(".json")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn sigterm_right_after_a_burst_delivers_every_occurrence_to_every_sink() {
    require_ebpf!();
    // A long refusal window: each port's first refusal is an occurrence at
    // once, its second is folded until the shutdown flush. The test waits
    // until the file sink has written the first ones, so the flush alone
    // (one per port, more than a sink queue holds) lands on empty queues
    // at the same moment: before the fix the file sink dropped the excess.
    // The budget is generous (the file sink writes a few hundred files a
    // second on a busy disk): this test is about losing nothing while the
    // budget lasts.
    let mut agent = Agent::start(
        // The longest window a profile or the TOML allows (60 s).
        "[observers.network]\nrefused_window_ms = 60000\n",
        &[
            "--sink",
            "stdout",
            "--sink",
            "file",
            "--shutdown-timeout",
            "240",
        ],
    );
    const PORTS: std::ops::Range<u16> = 20000..25000;
    let mut refused_ports = 0u64;
    // In steps the file sink keeps up with, so no first occurrence is
    // dropped while the agent runs (a full queue drops by design then).
    for step in PORTS.step_by(1000) {
        for port in step..step + 1000 {
            let refused = (0..2)
                .filter(|_| {
                    std::net::TcpStream::connect(("127.0.0.1", port))
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
                })
                .count();
            if refused == 2 {
                refused_ports += 1;
            }
        }
        let written = poll(Duration::from_secs(120), Duration::from_millis(100), || {
            (occurrence_files(&agent.data_dir) as u64 >= refused_ports).then_some(())
        });
        assert!(
            written.is_some(),
            "the first occurrences were not written: {} files of {refused_ports}",
            occurrence_files(&agent.data_dir)
        );
    }
    let ports = u64::from(PORTS.end - PORTS.start);
    assert!(
        refused_ports >= ports - 100,
        "the burst was mostly refused: {refused_ports}"
    );
    assert!(refused_ports as usize > tapio::agent::sinks::QUEUE_CAPACITY);
    assert_eq!(
        agent.stop_within(Duration::from_secs(300)),
        Some(0),
        "stderr:\n{}",
        agent.stderr()
    );
    let stderr = agent.stderr();
    let (occurrences, undelivered) = final_line(&stderr);
    // Two occurrences per refused port: a loss on the way to the sinks
    // cannot hide behind a small total.
    assert!(occurrences >= 2 * refused_ports, "{occurrences}\n{stderr}");
    let lines = agent.matching(|_| true).len() as u64;
    let files = occurrence_files(&agent.data_dir) as u64;
    let last = stderr.lines().rfind(|l| l.contains("agent stopped"));
    eprintln!("{last:?}: {lines} lines, {files} files");
    assert_eq!(lines, occurrences, "stdout lines vs {last:?}");
    assert_eq!(files, occurrences, "file sink vs {last:?}");
    assert_eq!(undelivered.get("stdout"), Some(&0), "{last:?}");
    assert_eq!(undelivered.get("file"), Some(&0), "{last:?}");
}

/// A loopback listener that accepts connections and never answers: a
/// black-holed collector. Connections stay open until the test ends.
struct BlackHole {
    addr: std::net::SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            // Bounded: ends with the test (Drop) or after five minutes.
            let end = Instant::now() + Duration::from_secs(300);
            while !s.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                match l.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        BlackHole { addr, stop }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A `tapio agent` whose stderr is collected and whose stdout is either
/// parsed (counted) or left unread.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
    lines: Arc<Mutex<u64>>,
    data_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    fn start(args: &[&str], read_stdout: bool) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let (mut cmd, data_dir) = agent_command(dir.path(), "");
        let mut child = cmd.args(args).spawn().expect("spawn tapio agent");
        let stderr = collect_text(child.stderr.take().unwrap());
        let lines = Arc::new(Mutex::new(0));
        if read_stdout {
            let out = child.stdout.take().unwrap();
            let l = lines.clone();
            std::thread::spawn(move || {
                for _ in BufReader::new(out).lines().map_while(Result::ok) {
                    *l.lock().unwrap() += 1;
                }
            });
        }
        let p = Proc {
            child,
            stderr,
            lines,
            data_dir,
            _dir: dir,
        };
        p.wait_until("config applied", Duration::from_secs(60), |p| {
            p.stderr().contains("config applied")
        });
        p
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn lines(&self) -> u64 {
        *self.lines.lock().unwrap()
    }

    fn wait_until(&self, what: &str, limit: Duration, cond: impl Fn(&Proc) -> bool) {
        if poll(limit, Duration::from_millis(50), || {
            cond(self).then_some(())
        })
        .is_none()
        {
            panic!("{what}: not within {limit:?}; stderr:\n{}", self.stderr());
        }
    }

    /// SIGTERM, then waits at most `limit` for the process to end by
    /// itself; fails (after killing it) if it does not.
    fn sigterm_and_expect_exit(&mut self, limit: Duration) -> i32 {
        // SAFETY: kill takes plain integers; the child is ours and not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if let Some(status) = wait_child(&mut self.child, limit) {
            // Let the reader threads take the last lines.
            std::thread::sleep(Duration::from_millis(200));
            return status.code().unwrap_or(-1);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "the agent did not exit within {limit:?} of SIGTERM; stderr:\n{}",
            self.stderr()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One refused connect to each port of `ports`; returns how many were.
fn refuse(ports: std::ops::Range<u16>) -> u64 {
    ports
        .filter(|p| {
            std::net::TcpStream::connect(("127.0.0.1", *p))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        })
        .count() as u64
}

const BUDGET_SECS: u64 = 3;

/// An http-style sink (http or otlp) to a black hole: SIGTERM still ends
/// the agent by itself, and every occurrence is named undelivered.
fn black_holed(sink: &str, flag: &str, path: &str, ports: std::ops::Range<u16>) {
    let hole = BlackHole::start();
    let url = format!("http://{}{path}", hole.addr);
    let budget = BUDGET_SECS.to_string();
    let mut p = Proc::start(
        &[
            "--sink",
            "stdout",
            "--sink",
            sink,
            flag,
            &url,
            "--shutdown-timeout",
            &budget,
        ],
        true,
    );
    let refused = refuse(ports);
    assert!(refused >= 250, "{refused}");
    // Every refusal is one occurrence on stdout: then the sink holds them.
    p.wait_until("occurrences on stdout", Duration::from_secs(60), |p| {
        p.lines() >= refused
    });
    let code = p.sigterm_and_expect_exit(Duration::from_secs(4 * BUDGET_SECS));
    assert_eq!(code, 0, "{}", p.stderr());
    let stderr = p.stderr();
    let (occurrences, undelivered) = final_line(&stderr);
    let last = stderr.lines().rfind(|l| l.contains("agent stopped"));
    eprintln!("{last:?}");
    assert!(occurrences >= refused, "{last:?}");
    // stdout is read: what it did not write is named (parallel tests'
    // refusals reach this agent too).
    assert_eq!(p.lines() + undelivered["stdout"], occurrences, "{last:?}");
    // The black hole acknowledged nothing: all of it is undelivered, and
    // the deadline (not a failed send) is what ended it.
    assert_eq!(undelivered.get(sink), Some(&occurrences), "{last:?}");
    assert!(
        last.is_some_and(|l| l.contains("shutdown_timeout=")),
        "{last:?}"
    );
}

#[test]
fn sigterm_with_a_black_holed_http_endpoint_exits_and_counts_what_is_undelivered() {
    require_ebpf!();
    black_holed("http", "--http-endpoint", "/ingest", 25000..25300);
}

#[test]
fn sigterm_with_a_black_holed_otlp_endpoint_exits_and_counts_what_is_undelivered() {
    require_ebpf!();
    black_holed("otlp", "--otlp-endpoint", "", 25300..25600);
}

#[test]
fn sigterm_with_an_unread_stdout_pipe_exits_and_counts_the_unwritten_lines() {
    require_ebpf!();
    let budget = BUDGET_SECS.to_string();
    // stdout is a pipe this test does not read until the agent has exited:
    // its writes block once the pipe buffer (64 KiB) is full.
    let mut p = Proc::start(
        &[
            "--sink",
            "stdout",
            "--sink",
            "file",
            "--shutdown-timeout",
            &budget,
        ],
        false,
    );
    let refused = refuse(25600..26600);
    assert!(refused >= 900, "{refused}");
    p.wait_until("occurrences in files", Duration::from_secs(120), |p| {
        occurrence_files(&p.data_dir) as u64 >= refused
    });
    let mut out = p.child.stdout.take().unwrap();
    let code = p.sigterm_and_expect_exit(Duration::from_secs(4 * BUDGET_SECS));
    assert_eq!(code, 0, "{}", p.stderr());
    // Now read what did reach the pipe; the writer end is closed.
    let mut text = Vec::new();
    out.read_to_end(&mut text).unwrap();
    let complete = text.iter().filter(|b| **b == b'\n').count() as u64;
    let stderr = p.stderr();
    let (occurrences, undelivered) = final_line(&stderr);
    let last = stderr.lines().rfind(|l| l.contains("agent stopped"));
    eprintln!("{last:?}: {complete} complete lines in the pipe");
    // Parallel tests' refusals reach this agent too, so the file sink may
    // have had more than it could write: it still accounts for all of it.
    let files = occurrence_files(&p.data_dir) as u64;
    assert_eq!(files + undelivered["file"], occurrences, "{last:?}");
    let stuck = undelivered.get("stdout").copied().unwrap_or(0);
    assert!(stuck > 0, "the pipe filled up: {last:?}");
    // Each line is either in the pipe, whole, or counted undelivered.
    assert_eq!(complete + stuck, occurrences, "{last:?}");
}
