//! `tapio mcp` over real stdio: raw JSON-RPC edge cases, and the official
//! MCP Python SDK as a client (tests/mcp_client.py).
//!
//! The SDK is installed once into `target/py-venv` (`python3 -m venv`, then
//! `pip install mcp==2.3.0`). Where that cannot be done the SDK test prints
//! one line saying why and passes, unless `TAPIO_REQUIRE_EBPF=1` (CI), where
//! it fails.

use crate::common;

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::line_channel;
use serde_json::{json, Value};

const BASIC: &str = "tests/fixtures/occurrences/basic";
/// The SDK release the client script is written against.
const SDK: &str = "mcp==2.3.0";
const LINE_WAIT: Duration = Duration::from_secs(30);

struct Server {
    child: common::KillOnDrop,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start() -> Server {
        Self::start_on(&common::repo_root().join(BASIC), "debug")
    }

    /// `tapio mcp --data-dir <dir>` with RUST_LOG=`log`.
    fn start_on(dir: &Path, log: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tapio"))
            .args(["mcp", "--data-dir"])
            .arg(dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tapio mcp");
        let lines = line_channel(child.stdout.take().unwrap());
        Server {
            stdin: child.stdin.take(),
            child: common::KillOnDrop(child),
            lines,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Sends one line and returns the one response line, parsed.
    fn ask(&mut self, line: &str) -> Value {
        self.send_raw(line.as_bytes());
        self.reply()
    }

    fn reply(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(LINE_WAIT)
            .expect("no response within the bound (did the server exit?)");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
        assert_eq!(v["jsonrpc"], "2.0", "{line}");
        v
    }
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {v}"))
}

#[test]
fn malformed_input_gets_json_rpc_errors_and_the_server_keeps_answering() {
    let mut s = Server::start();
    let cases: &[(&str, i64, Value)] = &[
        ("{", -32700, Value::Null),
        ("{\"jsonrpc\":\"2.0\",\"id\":1,", -32700, Value::Null),
        ("[1,2]", -32600, Value::Null),
        ("\"hello\"", -32600, Value::Null),
        (r#"{"jsonrpc":"2.0","id":2}"#, -32600, json!(2)),
        (
            r#"{"jsonrpc":"1.0","id":3,"method":"ping"}"#,
            -32600,
            json!(3),
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"method":"sampling/createMessage"}"#,
            -32601,
            json!(4),
        ),
        (
            r#"{"jsonrpc":"2.0","id":"five","method":"initialize","params":{"protocolVersion":5}}"#,
            -32602,
            json!("five"),
        ),
        (
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"drop_tables"}}"#,
            -32602,
            json!(6),
        ),
        (
            r#"{"jsonrpc":"2.0","id":7.5,"method":"ping"}"#,
            -32600,
            Value::Null,
        ),
        (
            r#"{"jsonrpc":"2.0","id":36893488147419103232,"method":"ping"}"#,
            -32600,
            Value::Null,
        ),
    ];
    for (line, code, id) in cases {
        let v = s.ask(line);
        assert_eq!(error_code(&v), *code, "{line} -> {v}");
        assert_eq!(v["id"], *id, "{line} -> {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }

    // Arguments the tool cannot use are tool errors the model reads, with
    // what to change.
    for (line, id, text) in [
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"recent_anomalies","arguments":{"observer":"gpu"}}}"#,
            7,
            "invalid arguments for recent_anomalies: invalid observer \"gpu\": expected network, container, storage or node",
        ),
        (
            r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"recent_anomalies","arguments":{"limit":-1}}}"#,
            8,
            "invalid arguments for recent_anomalies: invalid value: integer `-1`, expected u64",
        ),
        (
            r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"node_health","arguments":{"until":"noon"}}}"#,
            9,
            "invalid arguments for node_health: invalid --until \"noon\": expected an RFC 3339 time like 2026-04-03T14:00:00Z",
        ),
    ] {
        let v = s.ask(line);
        assert_eq!(
            v,
            json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}], "isError": true}}),
            "{line}"
        );
    }
    let v = s.ask(
        r#"{"jsonrpc":"2.0","id":14,"method":"tools/call","params":{"name":"recent_anomalies","arguments":{"type":"kernel.network.conection_refused"}}}"#,
    );
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(v["result"]["isError"], true, "{v}");
    assert!(
        text.contains("did you mean kernel.network.connection_refused? known types are "),
        "{text}"
    );

    // Integer ids up to 64 bits come back digit for digit.
    for id in [
        "18446744073709551615",
        "-9223372036854775808",
        "9007199254740993",
    ] {
        s.send_raw(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#).as_bytes());
        let line = s.lines.recv_timeout(LINE_WAIT).expect("ping reply");
        assert_eq!(
            line,
            format!(r#"{{"id":{id},"jsonrpc":"2.0","result":{{}}}}"#)
        );
    }

    // Not UTF-8.
    s.send_raw(b"\xff\xfe{}");
    assert_eq!(error_code(&s.reply()), -32700);

    // A line over the 1 MiB bound is refused, not buffered forever.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":10,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    s.send_raw(big.as_bytes());
    assert_eq!(error_code(&s.reply()), -32600);

    // Notifications get no answer: the next line is the ping's.
    s.send_raw(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    s.send_raw(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#);
    s.send_raw(b"");
    let v = s.ask(r#"{"jsonrpc":"2.0","id":11,"method":"ping"}"#);
    assert_eq!(v, json!({"jsonrpc": "2.0", "id": 11, "result": {}}));

    // Still a working server.
    let v = s.ask(
        r#"{"jsonrpc":"2.0","id":12,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#,
    );
    assert_eq!(v["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(v["result"]["serverInfo"]["name"], "tapio");
    let v = s.ask(
        r#"{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"status","arguments":{}}}"#,
    );
    assert_eq!(v["result"]["isError"], false);
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    let status: Value = serde_json::from_str(text).unwrap();
    assert_eq!(status["total"], 5);
    // 2024-11-05 has no structuredContent.
    assert!(v["result"].get("structuredContent").is_none(), "{v}");

    // End of stdin ends the server, with exit 0.
    drop(s.stdin.take());
    let status = common::wait_child(&mut s.child.0, Duration::from_secs(30));
    assert_eq!(status.expect("server did not exit on EOF").code(), Some(0));
    // Nothing else was written to stdout.
    assert!(s.lines.try_recv().is_err());
}

#[test]
fn negotiates_and_returns_structured_content() {
    let mut s = Server::start();
    let v = s.ask(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2099-01-01","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#,
    );
    assert_eq!(v["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(
        v["result"]["capabilities"]["tools"],
        json!({"listChanged": false})
    );
    let v = s.ask(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"recent_anomalies","arguments":{"since":"2025-04-03T14:21:00Z"}}}"#,
    );
    let sc = &v["result"]["structuredContent"];
    assert_eq!(sc["count"], 2, "{v}");
    assert_eq!(
        sc["occurrences"][1]["type"],
        "kernel.network.connection_timeout"
    );
    let text: Value =
        serde_json::from_str(v["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(&text, sc);
}

#[test]
fn fifo_and_dev_zero_in_the_data_dir_do_not_hang_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(BASIC)
            .join("01JQY0HADQ0000000000000003.json"),
        d.join("01JQY0HADQ0000000000000003.json"),
    )
    .unwrap();
    common::mkfifo(&d.join("01JQY0HADQ0000000000000009.json"));
    std::os::unix::fs::symlink("/dev/zero", d.join("01JQY0HADQ000000000000000A.json")).unwrap();
    let mut s = Server::start_on(d, "warn");
    // Each answer within the bound of `reply` (30 s), or the test fails.
    let v = s.ask(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    assert_eq!(v, json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
    let skipped =
        json!({"corrupt": 0, "unreadable": 0, "not_regular": 2, "too_large": 0, "foreign": 0});
    for (tool, count) in [("status", "total"), ("recent_anomalies", "count")] {
        let v = s.ask(&format!(
            r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"{tool}"}}}}"#
        ));
        let sc = &v["result"]["structuredContent"];
        assert_eq!(sc[count], 1, "{tool}: {v}");
        assert_eq!(sc["skipped"], skipped, "{tool}");
    }
    let v = s.ask(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"node_health","arguments":{"since":"2025-04-03T14:00:00Z","until":"2025-04-03T14:30:00Z"}}}"#,
    );
    assert_eq!(v["result"]["structuredContent"]["skipped"], skipped, "{v}");
    let v = s.ask(r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#);
    assert_eq!(v["id"], 4);
}

/// Starts `tapio mcp` on `dir` and asks `node_health` once.
fn node_health(dir: &Path) -> Value {
    let mut s = Server::start_on(dir, "warn");
    let v =
        s.ask(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"node_health"}}"#);
    assert_eq!(v["result"]["isError"], false, "{v}");
    v["result"]["structuredContent"].clone()
}

fn write_status(dir: &Path, config_applied: bool, node_state: &str) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let v = json!({
        "schema": 1, "agent_id": "01JQY0HADQ0000000000000003", "node_name": "n1",
        "version": "0.1.0", "pid": 4242, "state": "running", "updated_unix_ms": now_ms,
        "config": {"applied": config_applied, "hash": "", "generation": 0},
        "controller": {"endpoint": "http://127.0.0.1:1", "state": "unreachable", "reason": "connection refused"},
        "observers": {
            "network": {"state": "active", "reason": ""},
            "container": {"state": "active", "reason": ""},
            "storage": {"state": "active", "reason": ""},
            "node": {"state": node_state, "reason": "pmc unavailable: no PMU"}
        }
    });
    std::fs::write(dir.join(".agent-status.json.tmp"), v.to_string()).unwrap();
    std::fs::rename(
        dir.join(".agent-status.json.tmp"),
        dir.join(".agent-status.json"),
    )
    .unwrap();
}

#[test]
fn node_health_says_unknown_when_blind_never_ok() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Nothing ever ran with this data dir.
    let h = node_health(d);
    assert_eq!(h["verdict"], "unknown", "{h}");
    assert_eq!(
        h["reasons"][0],
        format!("no agent status file and no occurrence files in {}: is the agent running with this data dir?", d.display())
    );
    assert!(h["observers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["verdict"] == "unknown"));
    // No data dir at all.
    let h = node_health(&d.join("absent"));
    assert_eq!(h["verdict"], "unknown");
    // An agent waiting for its config observes nothing.
    write_status(d, false, "active");
    let h = node_health(d);
    assert_eq!(h["verdict"], "unknown", "{h}");
    assert_eq!(
        h["reasons"],
        json!(["config not applied: the agent observes nothing until it has one (controller http://127.0.0.1:1: unreachable: connection refused)"])
    );
    // Configured, but the node observer runs without PMCs and the
    // controller is unreachable: degraded, with both reasons.
    write_status(d, true, "degraded");
    let h = node_health(d);
    assert_eq!(h["verdict"], "degraded", "{h}");
    assert_eq!(
        h["reasons"],
        json!([
            "controller http://127.0.0.1:1 unreachable: connection refused",
            "node observer degraded: pmc unavailable: no PMU"
        ])
    );
    assert_eq!(h["observers"][3]["state"], "degraded");
    assert_eq!(h["observers"][3]["state_reason"], "pmc unavailable: no PMU");
    assert_eq!(h["observers"][3]["verdict"], "degraded");
    assert_eq!(h["agent"]["pid"], 4242);
}

fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py-venv")
}

struct Finished {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` to completion within `limit`, capturing its output (read on
/// threads, so a chatty child cannot block on a full pipe).
fn run_bounded(mut cmd: Command, limit: Duration) -> Result<Finished, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let collect = |r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(r).read_to_string(&mut text);
            text
        })
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if waited >= limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what}: still running after {limit:?}"));
        }
        std::thread::sleep(step);
        waited += step;
    };
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Like [`run_bounded`], and the command must succeed.
fn run_ok(cmd: Command, limit: Duration) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let f = run_bounded(cmd, limit)?;
    if f.status.success() {
        Ok(())
    } else {
        let last = f.stderr.lines().last().unwrap_or("").to_string();
        Err(format!("{what}: {}: {last}", f.status))
    }
}

/// A Python with the MCP SDK, installing it into the venv when needed.
fn sdk_python() -> Result<PathBuf, String> {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let has_sdk = |py: &Path| {
        let mut c = Command::new(py);
        c.args(["-c", "import mcp.client.stdio"]);
        run_ok(c, Duration::from_secs(60)).is_ok()
    };
    if python.exists() && has_sdk(&python) {
        return Ok(python);
    }
    if !python.exists() {
        let mut c = Command::new("python3");
        c.args(["-m", "venv"]).arg(&venv);
        run_ok(c, Duration::from_secs(120))?;
    }
    let mut c = Command::new(&python);
    c.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        SDK,
    ]);
    run_ok(c, Duration::from_secs(600))?;
    if has_sdk(&python) {
        Ok(python)
    } else {
        Err(format!(
            "{SDK} installed but `import mcp.client.stdio` fails"
        ))
    }
}

#[test]
fn official_python_sdk_client() {
    let python = match sdk_python() {
        Ok(p) => p,
        Err(why) => {
            let why = format!("cannot set up the MCP Python SDK ({why})");
            return common::skip(&test_name!(), &why);
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(python);
    cmd.arg(root.join("tests/mcp_client.py"))
        .arg(env!("CARGO_BIN_EXE_tapio"))
        .arg(root.join(BASIC))
        .arg(root.join("tests/fixtures/occurrences/who"))
        .arg(empty.path())
        .arg(empty.path().join("missing"))
        .current_dir(root);
    // Bounded: the client script is a fixed sequence of calls.
    let out = run_bounded(cmd, Duration::from_secs(120)).expect("run mcp_client.py");
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(
        out.status.success(),
        "mcp_client.py failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("checks passed"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    print!("{stdout}");
}
