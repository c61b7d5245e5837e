//! End to end: the real agent writes an occurrence for a real refused
//! connect to its file sink, and both the CLI (`tapio recent`) and the MCP
//! server (`recent_anomalies`) return it from that data dir.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn an_agent_occurrence_is_visible_through_recent_and_mcp() {
    require_ebpf!();
    let agent = Agent::start("", &["--sink", "file"]);
    let p = closed_port("127.0.0.1");
    assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err());
    let dir = agent.data_dir.clone();
    let matches = |o: &Value| {
        o["type"] == "kernel.network.connection_refused" && o["data"]["dport"] == u64::from(p)
    };

    // CLI: bounded retries while the file sink catches up.
    let mut last = Value::Null;
    let found = poll(Duration::from_secs(15), Duration::from_millis(200), || {
        let out = Command::new(tapio_bin())
            .args([
                "recent",
                "--since",
                "1m",
                "--json",
                "--limit",
                "0",
                "--data-dir",
            ])
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        last = serde_json::from_slice(&out.stdout).unwrap();
        last["occurrences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| matches(o))
            .cloned()
    })
    .unwrap_or_else(|| panic!("tapio recent never showed port {p}: {last}"));
    assert_eq!(found["data"]["pid"], std::process::id());

    // MCP over stdio.
    let mut mcp = Command::new(tapio_bin())
        .args(["mcp", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = mcp.stdin.take().unwrap();
    let mut lines = BufReader::new(mcp.stdout.take().unwrap()).lines();
    let mut call = |msg: &str| -> Value {
        stdin.write_all(msg.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap()
    };
    let init = call(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"e2e","version":"0"}}}"#,
    );
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    let res = call(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"recent_anomalies","arguments":{"since":"1m","type":"kernel.network.connection_refused","limit":50}}}"#,
    );
    let occs = res["result"]["structuredContent"]["occurrences"]
        .as_array()
        .unwrap_or_else(|| panic!("{res}"));
    let o = occs
        .iter()
        .find(|o| matches(o))
        .unwrap_or_else(|| panic!("{res}"));
    assert_eq!(o["id"], found["id"]);
    drop(stdin);
    let _ = mcp.wait();
}
