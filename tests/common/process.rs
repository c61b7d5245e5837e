//! Children and waits: polling with a bound, running a command to
//! completion within a limit, waiting for a child to exit, collecting a
//! child's output. Every wait in the tests goes through a limit here or in
//! a helper built on these; nothing here waits without one.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    poll(limit, Duration::from_millis(20), || {
        child.try_wait().unwrap()
    })
}

/// What a command run by [`output_within`] did.
#[derive(Debug)]
pub struct Ran {
    /// The child's pid (gone by now; for matching what it did).
    pub pid: u32,
    pub status: ExitStatus,
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

#[test]
fn output_within_reads_both_streams_and_the_status() {
    let ran = output_within(
        Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
        Duration::from_secs(30),
        false,
    );
    assert_eq!(ran.status.code(), Some(3));
    assert!(!ran.ok());
    assert_eq!(
        (ran.stdout.as_str(), ran.stderr.as_str()),
        ("out\n", "err\n")
    );
}

/// The background `sleep` shares the group: were it left alive it would
/// hold stderr open and the panic would wait for it (30 s) instead of
/// coming at once.
#[test]
#[should_panic(expected = "exceeded")]
fn output_within_kills_a_process_group_that_outlives_its_limit() {
    use std::os::unix::process::CommandExt;
    output_within(
        Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0),
        Duration::from_millis(200),
        true,
    );
}

#[test]
fn poll_stops_at_the_first_answer_or_the_limit_and_settle_keeps_the_last() {
    let mut n = 0;
    let third = poll(Duration::from_secs(30), Duration::ZERO, || {
        n += 1;
        (n == 3).then_some(n)
    });
    assert_eq!(third, Some(3));
    let never: Option<()> = poll(Duration::from_millis(50), Duration::from_millis(10), || {
        None
    });
    assert_eq!(never, None);
    let mut m = 0;
    let last = settle(
        Duration::from_millis(50),
        Duration::from_millis(10),
        || {
            m += 1;
            m
        },
        |_| false,
    );
    assert_eq!(last, m, "the last value probed, once the limit passed");
    assert!(last > 1);
}
