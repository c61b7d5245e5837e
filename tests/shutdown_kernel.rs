//! Real-kernel tests of the agent's shutdown (issue 14, items 1 and 3): a
//! SIGTERM right after a burst loses nothing already classified, and a
//! SIGTERM with a destination that never answers (a black-holed HTTP or
//! OTLP receiver, a stdout pipe nobody reads) still ends the process by
//! itself, with what was not delivered counted in the final log line.
//!
//! Each test runs its own agent and makes its own refusals: to ports
//! 20000..24000 (below the ephemeral range, so no port-0 listener of a
//! parallel test sits there) for the burst, and to ports the OS handed out
//! for the others. Counts are compared within one agent, so refusals made
//! by parallel tests only add to both sides of each equation.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
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
    if !require_ebpf("sigterm_right_after_a_burst_delivers_every_occurrence_to_every_sink") {
        return;
    }
    // A long refusal window: the second occurrence of every port comes
    // from the shutdown flush, all at the same moment, onto queues the
    // first ones already fill (the file sink writes a few hundred files a
    // second on a busy disk). The budget is generous: this test is about
    // losing nothing while the budget lasts.
    let mut agent = Agent::start(
        "[observers.network]\nrefused_window_ms = 600000\n",
        &[
            "--sink",
            "stdout",
            "--sink",
            "file",
            "--shutdown-timeout",
            "240",
        ],
    );
    const PORTS: std::ops::Range<u16> = 20000..23000;
    let mut refused = 0u64;
    for port in PORTS {
        for _ in 0..3 {
            if let Err(e) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    refused += 1;
                }
            }
        }
    }
    let ports = u64::from(PORTS.end - PORTS.start);
    assert!(
        refused >= 3 * (ports - 100),
        "the burst was mostly refused: {refused}"
    );
    std::thread::sleep(Duration::from_millis(50));
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
    assert!(occurrences >= 2 * (ports - 100), "{occurrences}\n{stderr}");
    let lines = agent.matching(|_| true).len() as u64;
    let files = occurrence_files(&agent.data_dir) as u64;
    let last = stderr.lines().rfind(|l| l.contains("agent stopped"));
    eprintln!("{last:?}: {lines} lines, {files} files");
    assert_eq!(lines, occurrences, "stdout lines vs {last:?}");
    assert_eq!(files, occurrences, "file sink vs {last:?}");
    assert_eq!(undelivered.get("stdout"), Some(&0), "{last:?}");
    assert_eq!(undelivered.get("file"), Some(&0), "{last:?}");
}
