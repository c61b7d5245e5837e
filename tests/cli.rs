//! The operator CLI (`status`, `recent`, `watch`, `health`), run as the
//! built binary on fixture data dirs; exit codes and output compared exactly.
//!
//! `tests/fixtures/occurrences/basic` holds five occurrences (one per
//! observer, two network), a partial write and a JSON file that is not an
//! occurrence (2 corrupt), a README (1 foreign) and a temp file of a write in
//! progress (ignored). Times are fixed; windows are given as RFC 3339.

use crate::common;

use std::io::Write;
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
TIME                      SEVERITY  TYPE                               WHERE   PID  COMM  MESSAGE
2025-04-03T14:23:01.042Z  critical  kernel.container.oom_kill          host   1234  -     OOM kill pid=1234 (usage=512MB, limit=0MB)
2025-04-03T14:21:00.000Z  error     kernel.network.connection_timeout  host   4243  java  connect to 10.0.0.7:443 timed out
2025-04-03T14:20:00.000Z  warning   kernel.network.connection_refused  host   4242  curl  connect to 127.0.0.1:9 refused (rst), count=3
2025-04-03T14:10:00.000Z  warning   kernel.storage.latency_spike       host      -  -     read of 8 sectors on 8:0 took 250ms
2025-04-03T13:00:00.000Z  warning   kernel.node.memory_pressure        host      -  -     memory pressure some avg10=42.00 over 10.00
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
TIME                      SEVERITY  TYPE                               WHERE   PID  COMM  MESSAGE
2025-04-03T14:21:00.000Z  error     kernel.network.connection_timeout  host   4243  java  connect to 10.0.0.7:443 timed out
1 of 2 shown (newest first; --limit 0 shows all)
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
        "query": {"since": null, "type": "kernel.container.oom_kill", "observer": null, "severity": null, "limit": 50,
                  "pod": null, "namespace": null, "container": null, "pid": null, "cursor": null},
        "count": 1,
        "matched": 1,
        "next_cursor": null,
        "summary": {"by_type": {"kernel.container.oom_kill": 1}, "by_place": [{"key": "host", "count": 1}],
                    "other_places": 0, "by_destination": [], "other_destinations": 0},
        "skipped": {"corrupt": 2, "unreadable": 0, "not_regular": 0, "too_large": 0, "foreign": 1},
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
        out.stderr.starts_with(
            "tapio: unknown type \"nope\": known types are kernel.network.connection_refused, "
        ),
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
        serde_json::json!({"corrupt": 2, "unreadable": 0, "not_regular": 0, "too_large": 0, "foreign": 1})
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
    // No status file, but occurrence files: the evidence alone decides, and
    // the verdict is the exit code (failing: 2).
    let out = run(&[
        "health",
        "--data-dir",
        BASIC,
        "--since",
        "2025-04-03T14:00:00Z",
        "--until",
        "2025-04-03T14:30:00Z",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "\
window   2025-04-03T14:00:00.000Z .. 2025-04-03T14:30:00.000Z (30m)
agent    no status file (tests/fixtures/occurrences/basic/.agent-status.json): observer states unknown, verdicts from occurrence files only
verdict  failing

OBSERVER   STATE    VERDICT   TOTAL  CRITICAL  ERROR  WARNING  INFO  NEWEST
network    unknown  degraded      2         0      1        1     0  2025-04-03T14:21:00.000Z
container  unknown  failing       1         1      0        0     0  2025-04-03T14:23:01.042Z
storage    unknown  ok            1         0      0        1     0  2025-04-03T14:10:00.000Z
node       unknown  ok            0         0      0        0     0  -

rule: failing: >=1 critical or >=10 error; degraded: >=1 error or >=5 warning; otherwise ok
"
    );
    assert_eq!(
        out.stderr,
        format!("{SKIPPED_NOTE}tapio: health is failing\n")
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
            "reasons": [],
            "agent": {"status_file": "missing", "problem": "", "state": null, "node_name": null, "version": null,
                      "pid": null, "updated": null, "age_seconds": null, "config": null, "controller": null},
            "observers": [{"observer": "storage", "state": "unknown", "state_reason": "", "verdict": "ok",
                           "total": 0, "critical": 0, "error": 0, "warning": 0, "info": 0, "other": 0, "newest": null}],
            "skipped": serde_json::json!({"corrupt": 2, "unreadable": 0, "not_regular": 0, "too_large": 0, "foreign": 1})
        })
    );
}

#[test]
fn empty_dir_is_quiet_and_health_is_unknown() {
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
skipped      0
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

    // Nothing ever ran here: unknown (3), not ok.
    let out = run(&["health", "--data-dir", dir, "--json"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stderr, "tapio: health is unknown\n");
    let v = json(&out.stdout);
    assert_eq!(v["verdict"], "unknown");
    assert_eq!(
        v["reasons"],
        serde_json::json!([format!("no agent status file and no occurrence files in {dir}: is the agent running with this data dir?")])
    );
    assert_eq!(v["window"]["seconds"], 900);
    assert_eq!(v["observers"].as_array().unwrap().len(), 4);
    assert!(v["observers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["verdict"] == "unknown"));
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
fn unreadable_data_dir_exits_2_or_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let dir = file.to_str().unwrap();
    // health: 3, "unknown" (2 would read as "failing").
    for (cmd, code) in [("recent", 2), ("status", 2), ("health", 3)] {
        let out = run(&[cmd, "--data-dir", dir]);
        assert_eq!(out.code, code, "{cmd}");
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
    child: common::KillOnDrop,
    lines: mpsc::Receiver<String>,
    err_lines: mpsc::Receiver<String>,
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
        let err_lines = line_channel(child.stderr.take().unwrap());
        loop {
            let line = err_lines
                .recv_timeout(Duration::from_secs(30))
                .expect("watch did not start");
            if line.starts_with("tapio: watching") {
                break;
            }
        }
        let lines = line_channel(child.stdout.take().unwrap());
        Watch {
            child: common::KillOnDrop(child),
            lines,
            err_lines,
        }
    }

    fn next_err_line(&self) -> String {
        self.err_lines
            .recv_timeout(Duration::from_secs(30))
            .expect("no stderr line from watch within the bound")
    }

    fn next_line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("no line from watch within the bound")
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
        "2025-04-03T14:23:01.042Z  critical  kernel.container.oom_kill              host                         1234  -                OOM kill pid=1234 (usage=512MB, limit=0MB)"
    );
    // It followed with inotify (a watch on the data dir, listed in the
    // process's fdinfo), not by listing the dir.
    assert_eq!(inotify_watches(watch.child.0.id()), 1);
}

/// How many inotify watches process `pid` holds (from /proc fdinfo).
fn inotify_watches(pid: u32) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    let mut n = 0;
    for fd in fds.flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        if target.to_string_lossy() == "anon_inode:inotify" {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap();
            n += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    n
}

#[test]
fn watch_prints_every_file_of_a_burst_once() {
    let tmp = tempfile::tempdir().unwrap();
    let watch = Watch::start(tmp.path(), &["--json"]);
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(BASIC)
            .join("01JQY0HADQ0000000000000003.json"),
    )
    .unwrap();
    // Written as the sink does (temp file, rename), as fast as possible.
    const N: u128 = 2000;
    let mut want = std::collections::BTreeSet::new();
    for i in 0..N {
        let id = ulid::Ulid::from_parts(1_743_690_181_042, i).to_string();
        let tmp_name = tmp.path().join(format!(".{id}.json.tmp"));
        std::fs::write(&tmp_name, text.replace("01JQY0HADQ0000000000000003", &id)).unwrap();
        std::fs::rename(&tmp_name, tmp.path().join(format!("{id}.json"))).unwrap();
        want.insert(id);
    }
    let mut got = std::collections::BTreeSet::new();
    for _ in 0..N {
        let id = json(&watch.next_line())["id"].as_str().unwrap().to_string();
        assert!(got.insert(id.clone()), "{id} printed twice");
    }
    assert_eq!(got, want);
    // Nothing more comes.
    assert!(watch
        .lines
        .recv_timeout(Duration::from_millis(500))
        .is_err());
}

const WHO: &str = "tests/fixtures/occurrences/who";

/// `tests/fixtures/occurrences/who`: two facts of a pod (namespace, name,
/// container id, pid, comm), one of a container outside any pod, one of a
/// host process, one node-wide fact with no process.
#[test]
fn recent_shows_who_and_where() {
    let out = run(&["recent", "--data-dir", WHO]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr, "");
    assert_eq!(
        out.stdout,
        "\
TIME                      SEVERITY  TYPE                               WHERE            PID  COMM         MESSAGE
2025-04-03T14:24:00.000Z  warning   kernel.node.memory_pressure        host               -  -            memory pressure some avg10=42.00 over 10.00
2025-04-03T14:23:00.000Z  warning   kernel.network.connection_refused  host             777  curl         connect to ::1:9 refused (rst), count=1
2025-04-03T14:22:00.000Z  error     kernel.network.connection_timeout  9b8c7d6e5f4a    5151  nginx        connect to 10.0.0.7:443 timed out
2025-04-03T14:21:00.000Z  critical  kernel.container.oom_kill          shop/cart-7d9f  4300  cart-server  OOM kill pid=4300 (usage=256MB, limit=256MB)
2025-04-03T14:20:00.000Z  warning   kernel.network.connection_refused  shop/cart-7d9f  4242  cart-server  connect to 10.96.0.12:8080 refused (rst), count=2
"
    );
    // A limit that cuts the list says so; one that does not, does not.
    let out = run(&["recent", "--data-dir", WHO, "--limit", "2"]);
    assert_eq!(
        out.stdout.lines().last(),
        Some("2 of 5 shown (newest first; --limit 0 shows all)")
    );
    assert_eq!(out.stdout.lines().count(), 4);
    let out = run(&["recent", "--data-dir", WHO, "--limit", "5"]);
    assert_eq!(out.stdout.lines().count(), 6);
    assert!(!out.stdout.contains("shown"));
}

#[test]
fn recent_filters_by_pod_namespace_container_and_pid() {
    let places = |extra: &[&str]| {
        let mut args = vec!["recent", "--data-dir", WHO, "--json", "--limit", "0"];
        args.extend_from_slice(extra);
        let out = run(&args);
        assert_eq!(out.code, 0, "{extra:?}: {}", out.stderr);
        json(&out.stdout)["occurrences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let pod = ["01JQY0DM700000000000000002", "01JQY0BSM00000000000000001"];
    assert_eq!(places(&["--pod", "cart-7d9f"]), pod);
    assert_eq!(places(&["--pod", "shop/cart-7d9f"]), pod);
    assert_eq!(places(&["--pod", "dev/cart-7d9f"]), Vec::<String>::new());
    assert_eq!(places(&["--namespace", "shop"]), pod);
    assert_eq!(places(&["--namespace", "shop", "--pid", "4300"]), [pod[0]]);
    assert_eq!(places(&["--container", "3F2A9C"]), pod);
    assert_eq!(
        places(&["--container", "9b8c7d6e5f4a"]),
        ["01JQY0FET00000000000000003"]
    );
    assert_eq!(places(&["--pid", "777"]), ["01JQY0H9D00000000000000004"]);
    // The human form of a filtered list.
    let out = run(&["recent", "--data-dir", WHO, "--container", "9b8c"]);
    assert_eq!(
        out.stdout,
        "\
TIME                      SEVERITY  TYPE                               WHERE          PID  COMM   MESSAGE
2025-04-03T14:22:00.000Z  error     kernel.network.connection_timeout  9b8c7d6e5f4a  5151  nginx  connect to 10.0.0.7:443 timed out
"
    );
    for (args, err) in [
        (
            &["--container", "nginx"][..],
            "tapio: invalid --container \"nginx\": expected a container id or its prefix (hex, e.g. 3f2a9c1b7d4e)\n",
        ),
        (
            &["--pod", "a/b/c"],
            "tapio: invalid --pod \"a/b/c\": expected a pod name or namespace/pod\n",
        ),
    ] {
        let mut a = vec!["recent", "--data-dir", WHO];
        a.extend_from_slice(args);
        let out = run(&a);
        assert_eq!((out.code, out.stdout.as_str()), (1, ""), "{args:?}");
        assert_eq!(out.stderr, err);
    }
    let out = run(&["recent", "--data-dir", WHO, "--pid", "x"]);
    assert_eq!(out.code, 1);
}

#[test]
fn no_colour_when_stdout_is_not_a_terminal() {
    // NO_COLOR unset: a pipe still gets no escapes.
    let mut cmd = tapio(&["recent", "--data-dir", WHO]);
    cmd.env_remove("NO_COLOR");
    let out = run_cmd(cmd);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("critical") && !out.stdout.contains('\x1b'));
}

/// Copies a `who` fixture into `dir` the way the file sink writes.
fn write_who(dir: &Path, name: &str) {
    let text = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(WHO).join(name)).unwrap();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn watch_shows_who_and_where_and_filters_by_them() {
    let tmp = tempfile::tempdir().unwrap();
    let watch = Watch::start(tmp.path(), &["--namespace", "shop", "--pid", "4300"]);
    // Filtered out (other pid, no pod), then the one that passes.
    write_who(tmp.path(), "01JQY0BSM00000000000000001.json");
    write_who(tmp.path(), "01JQY0FET00000000000000003.json");
    write_who(tmp.path(), "01JQY0DM700000000000000002.json");
    assert_eq!(
        watch.next_line(),
        "2025-04-03T14:21:00.000Z  critical  kernel.container.oom_kill              shop/cart-7d9f               4300  cart-server      OOM kill pid=4300 (usage=256MB, limit=256MB)"
    );
    drop(watch);

    let tmp = tempfile::tempdir().unwrap();
    let watch = Watch::start(tmp.path(), &["--container-id", "9b8c"]);
    write_who(tmp.path(), "01JQY0BSM00000000000000001.json");
    write_who(tmp.path(), "01JQY0FET00000000000000003.json");
    assert_eq!(
        watch.next_line(),
        "2025-04-03T14:22:00.000Z  error     kernel.network.connection_timeout      9b8c7d6e5f4a                 5151  nginx            connect to 10.0.0.7:443 timed out"
    );
    drop(watch);

    let out = run(&["watch", "--data-dir", WHO, "--container-id", "zz"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr,
        "tapio: invalid --container-id \"zz\": expected a container id or its prefix (hex, e.g. 3f2a9c1b7d4e)\n"
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
    let pid = i32::try_from(watch.child.0.id()).unwrap();
    // SAFETY: sending a signal to our own child process by pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = common::wait_child(&mut watch.child.0, Duration::from_secs(30))
        .expect("watch did not stop on SIGINT within the bound");
    assert_eq!(status.code(), Some(0));
}

/// Runs the binary like [`run`], but gives up (kills it, fails the test)
/// after a bound: these tests are about commands that used to hang.
fn run_bounded(args: &[&str]) -> Out {
    let ran = common::output_within(&mut tapio(args), Duration::from_secs(30), false);
    Out {
        code: ran.status.code().expect("exit code"),
        stdout: ran.stdout,
        stderr: ran.stderr,
    }
}

fn copy_fixture(dir: &Path, name: &str) {
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(BASIC).join(name),
        dir.join(name),
    )
    .unwrap();
}

/// A data dir holding two occurrences and every kind of file that must not
/// be read: a FIFO and a symlink to /dev/zero with occurrence names, a
/// 200 MB (sparse) file, a symlink loop.
fn hostile_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    copy_fixture(d, "01JQY0HADQ0000000000000003.json");
    copy_fixture(d, "01JQY0DM750000000000000002.json");
    common::mkfifo(&d.join("01JQY0HADQ0000000000000009.json"));
    std::os::unix::fs::symlink("/dev/zero", d.join("01JQY0HADQ000000000000000A.json")).unwrap();
    let big = std::fs::File::create(d.join("01JQY0HADQ000000000000000B.json")).unwrap();
    big.set_len(200 << 20).unwrap();
    std::os::unix::fs::symlink("loop.json", d.join("loop.json")).unwrap();
    tmp
}

#[test]
fn fifos_devices_huge_and_looping_files_are_skipped_and_counted() {
    let tmp = hostile_dir();
    let dir = tmp.path().to_str().unwrap();
    let note = format!(
        "tapio: skipped 4 unusable entries in {dir} (1 unreadable, 2 not regular, 1 too large)\n"
    );
    let skipped = serde_json::json!({"corrupt": 0, "unreadable": 1, "not_regular": 2, "too_large": 1, "foreign": 0});

    let out = run_bounded(&["status", "--data-dir", dir]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(
            "\noccurrences  2\nskipped      4 (1 unreadable, 2 not regular, 1 too large)\n"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(out.stderr, note);
    let out = run_bounded(&["status", "--data-dir", dir, "--json"]);
    assert_eq!(json(&out.stdout)["skipped"], skipped);

    let out = run_bounded(&["recent", "--data-dir", dir, "--json", "--limit", "0"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = json(&out.stdout);
    assert_eq!(v["count"], 2);
    assert_eq!(v["skipped"], skipped);
    assert_eq!(out.stderr, note);
    // The limited query reads names newest first: it meets every special
    // file (their ULIDs are the newest) and still skips them.
    let out = run_bounded(&["recent", "--data-dir", dir, "--limit", "1", "--json"]);
    assert_eq!(json(&out.stdout)["count"], 1);

    let out = run_bounded(&[
        "health",
        "--data-dir",
        dir,
        "--since",
        "2025-04-03T14:00:00Z",
        "--until",
        "2025-04-03T14:30:00Z",
        "--json",
    ]);
    // The oom_kill is critical: failing, with the skips counted.
    assert_eq!(out.code, 2, "{}", out.stderr);
    let v = json(&out.stdout);
    assert_eq!(v["verdict"], "failing");
    assert_eq!(v["skipped"], skipped);
}

#[test]
fn watch_skips_a_fifo_that_appears_and_keeps_following() {
    let tmp = tempfile::tempdir().unwrap();
    let watch = Watch::start(tmp.path(), &[]);
    common::mkfifo(&tmp.path().join("01JQY0HADQ0000000000000009.json"));
    std::os::unix::fs::symlink(
        "/dev/zero",
        tmp.path().join("01JQY0HADQ000000000000000A.json"),
    )
    .unwrap();
    // Both are counted, in one note or (when the change notifications
    // arrive apart) two.
    let mut counted = 0;
    while counted < 2 {
        let line = watch.next_err_line();
        counted += match line.as_str() {
            "tapio: skipped 2 new unusable entries (2 not regular)" => 2,
            "tapio: skipped 1 new unusable entries (1 not regular)" => 1,
            other => panic!("unexpected note: {other}"),
        };
    }
    assert_eq!(counted, 2);
    write_like_the_sink(tmp.path(), "01JQY0HADQ0000000000000003.json");
    assert!(watch.next_line().contains("kernel.container.oom_kill"));
}

#[test]
fn since_and_until_refuse_impossible_and_far_future_times() {
    for (args, err) in [
        (
            &["recent", "--since", "2600-01-01T00:00:00Z"][..],
            "tapio: invalid --since \"2600-01-01T00:00:00Z\": year 2600 is out of range (latest supported: 2500)\n",
        ),
        (
            &["recent", "--since", "2026-02-30T00:00:00Z"],
            "tapio: invalid --since \"2026-02-30T00:00:00Z\": 2026-02 has no day 30\n",
        ),
        (
            &["recent", "--since", "2400-01-01T00:00:00Z"],
            "",
        ),
        (
            &["health", "--until", "2600-01-01T00:00:00Z"],
            "tapio: invalid --until \"2600-01-01T00:00:00Z\": year 2600 is out of range (latest supported: 2500)\n",
        ),
        (
            &["health", "--since", "2025-02-29T00:00:00Z"],
            "tapio: invalid --since \"2025-02-29T00:00:00Z\": 2025-02 has no day 29\n",
        ),
    ] {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--data-dir", BASIC]);
        let out = run(&full);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
        if err.is_empty() {
            // In range but after now: refused as such.
            assert!(
                out.stderr.starts_with("tapio: invalid --since \"2400-01-01T00:00:00Z\": it is in the future (now is "),
                "{}",
                out.stderr
            );
        } else {
            assert_eq!(out.stderr, err, "{args:?}");
        }
    }
    // A leap day that exists is fine.
    let out = run(&[
        "recent",
        "--data-dir",
        BASIC,
        "--since",
        "2024-02-29T00:00:00Z",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(json(&out.stdout)["count"], 5);
}

/// Writes `<dir>/.agent-status.json` as the agent does (temp + rename): a
/// running, configured agent, updated now, every observer active, changed
/// by `edit`.
fn write_status(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v = serde_json::json!({
        "schema": 1, "agent_id": "01JQY0HADQ0000000000000003", "node_name": "n1",
        "version": "0.1.0", "pid": 4242, "state": "running", "updated_unix_ms": common::now_ms(),
        "config": {"applied": true, "hash": "sha256:ab", "generation": 3},
        "controller": null,
        "observers": {
            "network": {"state": "active", "reason": ""},
            "container": {"state": "active", "reason": ""},
            "storage": {"state": "active", "reason": ""},
            "node": {"state": "active", "reason": ""}
        }
    });
    edit(&mut v);
    let tmp = dir.join(".agent-status.json.tmp");
    std::fs::write(&tmp, v.to_string()).unwrap();
    std::fs::rename(&tmp, dir.join(".agent-status.json")).unwrap();
}

/// `tapio health --json` on `dir`: exit code, verdict, reasons.
fn health_json(dir: &Path) -> (i32, serde_json::Value) {
    let out = run_bounded(&["health", "--data-dir", dir.to_str().unwrap(), "--json"]);
    let v = json(&out.stdout);
    let want_err = match out.code {
        0 => String::new(),
        _ => format!("tapio: health is {}\n", v["verdict"].as_str().unwrap()),
    };
    assert!(out.stderr.ends_with(&want_err), "{}", out.stderr);
    (out.code, v)
}

#[test]
fn health_exit_codes_follow_the_agent_status() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    // No data dir: unknown.
    let (code, v) = health_json(&d.join("absent"));
    assert_eq!((code, v["verdict"].as_str()), (3, Some("unknown")));
    assert_eq!(v["agent"]["status_file"], "none");

    // A running agent, everything active, nothing written yet: ok.
    write_status(d, |_| {});
    let (code, v) = health_json(d);
    assert_eq!((code, v["verdict"].as_str()), (0, Some("ok")), "{v}");
    assert_eq!(v["reasons"], serde_json::json!([]));
    assert_eq!(v["agent"]["state"], "running");
    assert_eq!(v["agent"]["pid"], 4242);
    assert_eq!(v["observers"][0]["state"], "active");
    // The status file is not an occurrence and is not counted as skipped.
    assert_eq!(v["skipped"]["foreign"], 0);

    // The node observer without PMCs: degraded (1), never ok; an observer
    // that could not start: unknown, and the node degraded.
    write_status(d, |v| {
        v["observers"]["node"] = serde_json::json!({"state": "degraded", "reason": "pmc unavailable: no PMU in this VM"});
        v["observers"]["storage"] = serde_json::json!({"state": "unavailable", "reason": "tracepoint block/block_rq_complete missing"});
    });
    let out = run_bounded(&["health", "--data-dir", d.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[1].starts_with("agent    running, node n1, pid 4242, version 0.1.0, updated "),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].ends_with(", config generation 3"),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines[2..].join("\n"),
        "\
verdict  degraded
why      node observer degraded: pmc unavailable: no PMU in this VM
         observer unavailable: storage: tracepoint block/block_rq_complete missing

OBSERVER   STATE        VERDICT   TOTAL  CRITICAL  ERROR  WARNING  INFO  NEWEST
network    active       ok            0         0      0        0     0  -
container  active       ok            0         0      0        0     0  -
storage    unavailable  unknown       0         0      0        0     0  -
node       degraded     degraded      0         0      0        0     0  -

rule: failing: >=1 critical or >=10 error; degraded: >=1 error or >=5 warning; otherwise ok"
    );
    assert_eq!(out.stderr, "tapio: health is degraded\n");
    // Asked about the unavailable observer alone: blind, unknown.
    let out = run_bounded(&[
        "health",
        "storage",
        "--data-dir",
        d.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(
        json(&out.stdout)["reasons"],
        serde_json::json!(["blind: every observer is unavailable (storage: tracepoint block/block_rq_complete missing)"])
    );

    // Not configured (a controller-mode agent refused by its controller).
    write_status(d, |v| {
        v["config"] = serde_json::json!({"applied": false, "hash": "", "generation": 0});
        v["controller"] = serde_json::json!({"endpoint": "http://127.0.0.1:1", "state": "unauthorized", "reason": "401 unauthorized"});
    });
    let (code, v) = health_json(d);
    assert_eq!(code, 3, "{v}");
    assert_eq!(
        v["reasons"],
        serde_json::json!(["config not applied: the agent observes nothing until it has one (controller http://127.0.0.1:1: unauthorized: 401 unauthorized)"])
    );

    // Every observer unavailable: blind.
    write_status(d, |v| {
        for o in ["network", "container", "storage", "node"] {
            v["observers"][o] = serde_json::json!({"state": "unavailable", "reason": "no BTF"});
        }
    });
    let (code, v) = health_json(d);
    assert_eq!(code, 3, "{v}");
    assert!(v["observers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["verdict"] == "unknown"));

    // Stale: the agent stopped rewriting the file a minute ago.
    write_status(d, |v| {
        v["updated_unix_ms"] = (common::now_ms() - 60_000).into()
    });
    let (code, v) = health_json(d);
    assert_eq!(code, 3, "{v}");
    let reason = v["reasons"][0].as_str().unwrap();
    assert!(reason.starts_with("the agent status is "), "{reason}");
    assert!(
        reason.ends_with("the agent is not running or is stuck"),
        "{reason}"
    );

    // Stopped cleanly.
    write_status(d, |v| v["state"] = "stopped".into());
    let (code, v) = health_json(d);
    assert_eq!(code, 3, "{v}");
    assert!(v["reasons"][0]
        .as_str()
        .unwrap()
        .starts_with("the agent stopped (at "));

    // A status file that is a FIFO (or corrupt) is tolerated: with no
    // occurrence files, unknown; with some, the evidence decides.
    std::fs::remove_file(d.join(".agent-status.json")).unwrap();
    common::mkfifo(&d.join(".agent-status.json"));
    let (code, v) = health_json(d);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["agent"]["status_file"], "invalid");
    assert_eq!(v["agent"]["problem"], "is not a regular file (a FIFO)");
    std::fs::remove_file(d.join(".agent-status.json")).unwrap();
    std::fs::write(d.join(".agent-status.json"), "{\"schema\":1,").unwrap();
    copy_fixture(d, "01JQXZSFP50000000000000004.json");
    let out = run_bounded(&[
        "health",
        "--data-dir",
        d.to_str().unwrap(),
        "--since",
        "2025-04-03T14:00:00Z",
        "--until",
        "2025-04-03T14:30:00Z",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = json(&out.stdout);
    assert_eq!(v["agent"]["status_file"], "invalid");
    assert!(v["agent"]["problem"]
        .as_str()
        .unwrap()
        .starts_with("not a status file: "));
    assert_eq!(v["observers"][2]["total"], 1);
}
