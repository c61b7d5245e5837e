//! The operator CLI (`status`, `recent`, `watch`, `health`), run as the
//! built binary on fixture data dirs; exit codes and output compared exactly.
//!
//! `tests/fixtures/occurrences/basic` holds five occurrences (one per
//! observer, two network), a partial write and a JSON file that is not an
//! occurrence (2 corrupt), a README (1 foreign) and a temp file of a write in
//! progress (ignored). Times are fixed; windows are given as RFC 3339.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::line_channel;

const BASIC: &str = "tests/fixtures/occurrences/basic";
const SKIPPED_NOTE: &str =
    "tapio: skipped 3 unusable entries in tests/fixtures/occurrences/basic (2 corrupt, 1 foreign)\n";

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn tapio(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tapio"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("TAPIO_DATA_DIR")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

fn run_cmd(mut cmd: Command) -> Out {
    let out = cmd.stdin(Stdio::null()).output().expect("run tapio");
    Out {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

fn run(args: &[&str]) -> Out {
    run_cmd(tapio(args))
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn recent_prints_an_aligned_table_newest_first() {
    let out = run(&["recent", "--data-dir", BASIC]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "\
TIME                      SEVERITY  TYPE                               MESSAGE
2025-04-03T14:23:01.042Z  critical  kernel.container.oom_kill          OOM kill pid=1234 (usage=512MB, limit=0MB)
2025-04-03T14:21:00.000Z  error     kernel.network.connection_timeout  connect to 10.0.0.7:443 timed out
2025-04-03T14:20:00.000Z  warning   kernel.network.connection_refused  connect to 127.0.0.1:9 refused (rst), count=3
2025-04-03T14:10:00.000Z  warning   kernel.storage.latency_spike       read of 8 sectors on 8:0 took 250ms
2025-04-03T13:00:00.000Z  warning   kernel.node.memory_pressure        memory pressure some avg10=42.00 over 10.00
"
    );
    assert_eq!(out.stderr, SKIPPED_NOTE);
}

#[test]
fn recent_filters_combine() {
    let out = run(&[
        "recent",
        "--data-dir",
        BASIC,
        "--since",
        "2025-04-03T14:15:00Z",
        "--observer",
        "network",
        "--limit",
        "1",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "\
TIME                      SEVERITY  TYPE                               MESSAGE
2025-04-03T14:21:00.000Z  error     kernel.network.connection_timeout  connect to 10.0.0.7:443 timed out
"
    );

    let out = run(&["recent", "--data-dir", BASIC, "--severity", "error"]);
    let ids: Vec<&str> = out.stdout.lines().skip(1).map(|l| &l[..24]).collect();
    assert_eq!(
        ids,
        vec!["2025-04-03T14:23:01.042Z", "2025-04-03T14:21:00.000Z"]
    );

    // An RFC 3339 offset is the same instant.
    let a = run(&[
        "recent",
        "--data-dir",
        BASIC,
        "--since",
        "2025-04-03T14:20:00Z",
    ]);
    let b = run(&[
        "recent",
        "--data-dir",
        BASIC,
        "--since",
        "2025-04-03T16:20:00+02:00",
    ]);
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(a.stdout.lines().count(), 4);
}

#[test]
fn recent_json_is_one_stable_object() {
    let out = run(&[
        "recent",
        "--data-dir",
        BASIC,
        "--type",
        "oom_kill",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let golden = include_str!("fixtures/occurrences/basic/01JQY0HADQ0000000000000003.json");
    let expected = serde_json::json!({
        "data_dir": BASIC,
        "data_dir_exists": true,
        "query": {"since": null, "type": "kernel.container.oom_kill", "observer": null, "severity": null, "limit": 50},
        "count": 1,
        "skipped": {"corrupt": 2, "foreign": 1},
        "occurrences": [json(golden)],
    });
    assert_eq!(json(&out.stdout), expected);
    assert_eq!(out.stdout.lines().count(), 1);
    assert!(out.stdout.starts_with(r#"{"data_dir":"tests/fixtures/occurrences/basic","data_dir_exists":true,"query":{"since":null,"type":"kernel.container.oom_kill""#));

    let out = run(&[
        "recent",
        "--data-dir",
        BASIC,
        "--since",
        "2025-04-03T14:20:00.000Z",
        "--json",
    ]);
    let v = json(&out.stdout);
    assert_eq!(v["query"]["since"], "2025-04-03T14:20:00.000Z");
    assert_eq!(v["count"], 3);
    let types: Vec<&str> = v["occurrences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "kernel.container.oom_kill",
            "kernel.network.connection_timeout",
            "kernel.network.connection_refused"
        ]
    );
}

#[test]
fn bad_input_exits_1_with_one_line() {
    let out = run(&["recent", "--data-dir", BASIC, "--since", "5x"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "tapio: invalid --since \"5x\": expected a duration like 30s, 5m, 2h, 1d or an RFC 3339 time like 2026-04-03T14:00:00Z\n"
    );

    let out = run(&["recent", "--data-dir", BASIC, "--type", "nope"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.starts_with("tapio: invalid type \"nope\""),
        "{}",
        out.stderr
    );

    for args in [
        &["recent", "--observer", "gpu"][..],
        &["recent", "--limit", "many"],
        &["recent", "--severity", "fatal"],
        &["health", "gpu"],
        &["watch", "--bogus"],
        &["status", "extra"],
    ] {
        let out = run(args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
    }

    let out = run(&["health", "--data-dir", BASIC, "--until", "noon"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "tapio: invalid --until \"noon\": expected an RFC 3339 time like 2026-04-03T14:00:00Z\n"
    );
}

#[test]
fn help_exits_0() {
    let out = run(&["health", "--help"]);
    assert_eq!(out.code, 0);
    assert!(out
        .stdout
        .contains("failing   at least 1 critical, or at least 10 error"));
    assert!(out.stdout.contains("--data-dir <DIR>"));
    assert!(out.stdout.contains("[env: TAPIO_DATA_DIR=]"));
}

#[test]
fn status_counts_everything() {
    let out = run(&["status", "--data-dir", BASIC]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "\
data dir     tests/fixtures/occurrences/basic
occurrences  5
skipped      3 (2 corrupt, 1 foreign)
newest       2025-04-03T14:23:01.042Z  critical  kernel.container.oom_kill  OOM kill pid=1234 (usage=512MB, limit=0MB)

OBSERVER   COUNT
network        2
container      1
storage        1
node           1

TYPE                               COUNT
kernel.container.oom_kill              1
kernel.network.connection_refused      1
kernel.network.connection_timeout      1
kernel.node.memory_pressure            1
kernel.storage.latency_spike           1
"
    );
    assert_eq!(out.stderr, SKIPPED_NOTE);

    let out = run(&["status", "--data-dir", BASIC, "--json"]);
    assert_eq!(out.code, 0);
    let v = json(&out.stdout);
    assert_eq!(v["total"], 5);
    assert_eq!(
        v["skipped"],
        serde_json::json!({"corrupt": 2, "foreign": 1})
    );
    assert_eq!(
        v["by_observer"],
        serde_json::json!({"network": 2, "container": 1, "storage": 1, "node": 1})
    );
    assert_eq!(v["by_type"]["kernel.storage.latency_spike"], 1);
    assert_eq!(v["newest"]["id"], "01JQY0HADQ0000000000000003");
}

#[test]
fn health_gives_verdicts_with_counts_and_window() {
    let out = run(&[
        "health",
        "--data-dir",
        BASIC,
        "--since",
        "2025-04-03T14:00:00Z",
        "--until",
        "2025-04-03T14:30:00Z",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "\
window   2025-04-03T14:00:00.000Z .. 2025-04-03T14:30:00.000Z (30m)
verdict  failing

OBSERVER   VERDICT   TOTAL  CRITICAL  ERROR  WARNING  INFO  NEWEST
network    degraded      2         0      1        1     0  2025-04-03T14:21:00.000Z
container  failing       1         1      0        0     0  2025-04-03T14:23:01.042Z
storage    ok            1         0      0        1     0  2025-04-03T14:10:00.000Z
node       ok            0         0      0        0     0  -

rule: failing: >=1 critical or >=10 error; degraded: >=1 error or >=5 warning; otherwise ok
"
    );

    // One observer, the default 15-minute window back from --until.
    let out = run(&[
        "health",
        "storage",
        "--data-dir",
        BASIC,
        "--until",
        "2025-04-03T14:30:00Z",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        json(&out.stdout),
        serde_json::json!({
            "data_dir": BASIC,
            "data_dir_exists": true,
            "window": {"since": "2025-04-03T14:15:00.000Z", "until": "2025-04-03T14:30:00.000Z", "seconds": 900},
            "rule": "failing: >=1 critical or >=10 error; degraded: >=1 error or >=5 warning; otherwise ok",
            "verdict": "ok",
            "observers": [{"observer": "storage", "verdict": "ok", "total": 0, "critical": 0, "error": 0,
                           "warning": 0, "info": 0, "other": 0, "newest": null}],
            "skipped": {"corrupt": 2, "foreign": 1}
        })
    );
}

#[test]
fn empty_dir_is_quiet_and_ok() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let out = run(&["recent", "--data-dir", dir]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "no occurrences found\n", "")
    );

    let out = run(&["status", "--data-dir", dir]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout,
        format!(
            "\
data dir     {dir}
occurrences  0
skipped      0 (0 corrupt, 0 foreign)
newest       -

OBSERVER   COUNT
network        0
container      0
storage        0
node           0
"
        )
    );
    assert_eq!(out.stderr, "");

    let out = run(&["health", "--data-dir", dir, "--json"]);
    assert_eq!(out.code, 0);
    let v = json(&out.stdout);
    assert_eq!(v["verdict"], "ok");
    assert_eq!(v["window"]["seconds"], 900);
    assert_eq!(v["observers"].as_array().unwrap().len(), 4);
}

#[test]
fn missing_dir_is_empty_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("not-yet");
    let dir = missing.to_str().unwrap();
    let note = format!(
        "tapio: note: data dir {dir} does not exist; treating it as empty (is the agent running with --sink file and the same --data-dir?)\n"
    );
    let out = run(&["recent", "--data-dir", dir]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "no occurrences found\n")
    );
    assert_eq!(out.stderr, note);

    let out = run(&["status", "--data-dir", dir, "--json"]);
    assert_eq!(out.code, 0);
    assert_eq!(out.stderr, note);
    let v = json(&out.stdout);
    assert_eq!(v["data_dir_exists"], false);
    assert_eq!(v["total"], 0);
    assert!(v["newest"].is_null());
}

#[test]
fn unreadable_data_dir_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let dir = file.to_str().unwrap();
    for cmd in ["recent", "status", "health"] {
        let out = run(&[cmd, "--data-dir", dir]);
        assert_eq!(out.code, 2, "{cmd}");
        assert_eq!(out.stdout, "", "{cmd}");
        assert_eq!(
            out.stderr,
            format!("tapio: failed to open data dir {dir}: not a directory\n"),
            "{cmd}"
        );
    }
}

#[test]
fn data_dir_comes_from_the_environment_or_the_default() {
    let mut cmd = tapio(&["status", "--json"]);
    cmd.env("TAPIO_DATA_DIR", BASIC);
    let out = run_cmd(cmd);
    assert_eq!(out.code, 0);
    assert_eq!(json(&out.stdout)["total"], 5);

    // The default is relative to the working directory.
    let tmp = tempfile::tempdir().unwrap();
    let default = tmp.path().join(".tapio/occurrences");
    std::fs::create_dir_all(&default).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(BASIC)
            .join("01JQY0HADQ0000000000000003.json"),
        default.join("01JQY0HADQ0000000000000003.json"),
    )
    .unwrap();
    let mut cmd = tapio(&["status", "--json"]);
    cmd.current_dir(tmp.path());
    let out = run_cmd(cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = json(&out.stdout);
    assert_eq!(v["data_dir"], ".tapio/occurrences");
    assert_eq!(v["total"], 1);
}

/// A running `tapio watch` with its stdout lines on a channel.
struct Watch {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(dir: &Path, extra: &[&str]) -> Watch {
        let mut args = vec!["watch", "--data-dir", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut child = tapio(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tapio watch");
        // The "watching" note is printed after the initial snapshot: files
        // written after it are new.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line.starts_with("tapio: watching") {
                    let _ = ready_tx.send(());
                }
                line.clear();
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("watch did not start");
        let lines = line_channel(child.stdout.take().unwrap());
        Watch { child, lines }
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("no line from watch within the bound")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a fixture occurrence into `dir` the way the file sink does:
/// temp file, then rename.
fn write_like_the_sink(dir: &Path, fixture: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(BASIC)
        .join(fixture);
    let text = std::fs::read(&src).unwrap();
    let tmp = dir.join(format!(".{fixture}.tmp"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(&text).unwrap();
    f.sync_all().unwrap();
    let dst = dir.join(fixture);
    std::fs::rename(&tmp, &dst).unwrap();
    dst
}

#[test]
fn watch_prints_files_written_after_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    // Present before the start: never printed.
    write_like_the_sink(tmp.path(), "01JQXVSA450000000000000005.json");
    let watch = Watch::start(tmp.path(), &[]);
    write_like_the_sink(tmp.path(), "01JQY0HADQ0000000000000003.json");
    assert_eq!(
        watch.next_line(),
        "2025-04-03T14:23:01.042Z  critical  kernel.container.oom_kill              OOM kill pid=1234 (usage=512MB, limit=0MB)"
    );
}

#[test]
fn watch_filters_by_observer_and_prints_json_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let watch = Watch::start(tmp.path(), &["--container", "--storage", "--json"]);
    // Written first, filtered out: the first line must be the storage one.
    write_like_the_sink(tmp.path(), "01JQY0BSM50000000000000001.json");
    write_like_the_sink(tmp.path(), "01JQXZSFP50000000000000004.json");
    let line = watch.next_line();
    let v = json(&line);
    assert_eq!(v["type"], "kernel.storage.latency_spike");
    assert_eq!(v["id"], "01JQXZSFP50000000000000004");
    write_like_the_sink(tmp.path(), "01JQY0HADQ0000000000000003.json");
    assert_eq!(
        json(&watch.next_line())["type"],
        "kernel.container.oom_kill"
    );
}

#[test]
fn watch_waits_for_a_missing_dir_and_stops_cleanly_on_interrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("later");
    let mut watch = Watch::start(&dir, &[]);
    std::fs::create_dir(&dir).unwrap();
    write_like_the_sink(&dir, "01JQY0DM750000000000000002.json");
    assert!(watch
        .next_line()
        .contains("kernel.network.connection_timeout"));

    // SIGINT (Ctrl-C) ends it with exit 0.
    let pid = i32::try_from(watch.child.id()).unwrap();
    // SAFETY: sending a signal to our own child process by pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let mut status = None;
    for _ in 0..300 {
        if let Some(s) = watch.child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = status.expect("watch did not stop on SIGINT within the bound");
    assert_eq!(status.code(), Some(0));
}
