//! `tapio mcp`: a read-only Model Context Protocol server over stdio.
//!
//! It owns the JSON-RPC 2.0 framing and the MCP methods, and answers from
//! [`crate::store`] (the same reports as the CLI's `--json`). It must not
//! write anything, talk to a running agent, exit on bad input, or put
//! anything on stdout but protocol messages: logs go to stderr.
//!
//! # Transport
//!
//! One JSON-RPC message per line on stdin, one response per line on stdout
//! (MCP stdio transport). Lines longer than 1 MiB are answered with
//! -32600 and discarded. End of stdin ends the server (exit 0).
//!
//! # Methods
//!
//! | method | answer |
//! |---|---|
//! | `initialize` | `protocolVersion`: the client's if it is one of [`SUPPORTED_VERSIONS`], else the latest; `capabilities.tools`; `serverInfo` |
//! | `notifications/initialized`, other notifications | nothing |
//! | `ping` | `{}` |
//! | `tools/list` | `recent_anomalies`, `node_health`, `status` with input (and, from 2025-06-18, output) JSON Schemas |
//! | `tools/call` | the tool's report as `structuredContent` (from 2025-06-18) and as JSON text in `content` |
//!
//! Calls are accepted before `initialize` (a read-only server has nothing to
//! protect), and a repeated `initialize` is answered again.
//!
//! # Errors
//!
//! | case | answer |
//! |---|---|
//! | not JSON, not UTF-8 | -32700 Parse error, `id` null |
//! | not an object, a batch array, `jsonrpc` ≠ "2.0", no `method`, `params` not structured, line too long | -32600 Invalid Request |
//! | an `id` that is not a string or an integer within i64/u64 (a fraction, an exponent, a larger integer: it could not be echoed exactly) | -32600 Invalid Request, `id` null |
//! | unknown method | -32601 Method not found |
//! | bad `params`: no tool name, unknown tool, `arguments` not an object | -32602 Invalid params |
//! | arguments the tool cannot use: unknown field, wrong JSON type, a value that does not parse or names nothing known (`since` `2026-02-30T00:00:00Z`, `type` `kernel.network.conection_refused`, `observer` `gpu`) | a result with `isError: true` and a message saying what to change (listing the known values), so the model can correct its call |
//! | the tool ran and failed (data dir unreadable) | a result with `isError: true` and the message as text |
//!
//! Integer ids are echoed exactly as received (e.g. `18446744073709551615`).
//!
//! Responses from the client (messages with `result` or `error` and no
//! `method`) are ignored: this server sends no requests.
//!
//! # Sized for a context window
//!
//! `recent_anomalies` answers with `matched` (all matches), a `summary` of
//! all of them (counts by type, by place, by destination; lists capped at
//! ten) and only the newest [`tools::DEFAULT_LIMIT`] occurrences; `limit`
//! (at most [`tools::MAX_LIMIT`]) and `cursor` page through the rest. The
//! report also goes into `content` as JSON text, because the protocol asks
//! servers that return structured content to do so and many clients show
//! the model only `content`. Measured on 1,200 pod-attributed network
//! occurrences: the default answer went from 75.5 KB (50 occurrences, no
//! summary) to 17.6 KB; the largest page from 1.5 MB (limit 1000) to 77.7 KB
//! (limit 50).
//!
//! # Why hand-written, not the `rmcp` SDK
//!
//! The official Rust SDK would add about 1.1 MB to a binary whose budget is
//! 3.0 MB, and needs Rust 1.88 (this crate builds with 1.85). What it would
//! bring — transports, sampling, resources, prompts, tasks — this server
//! does not use: it is three read-only tools over stdio. The protocol part
//! here is small and tested against the official Python SDK as a client
//! (tests/mcp_client.py), which is the check that matters: a real client
//! agrees with it.
//!
//! # Registering with a client
//!
//! ```json
//! {"mcpServers": {"tapio": {"command": "tapio",
//!   "args": ["mcp", "--data-dir", "/var/lib/tapio/occurrences"]}}}
//! ```

pub mod tools;

use std::io::{BufRead, Write};

use serde_json::{json, Map, Value};

use crate::cli::{now_ns, DataDirArg};
use crate::exit::CliError;
use crate::store::Store;
use tools::CallError;

/// Protocol revisions this server speaks, newest first. What differs
/// between them for this server: `structuredContent`, `outputSchema` and
/// tool `title`s exist from 2025-06-18; argument errors are tool results
/// with `isError: true` (which 2025-11-25 requires, and which older
/// revisions allow), so every revision gets them.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The first revision with `structuredContent` and `outputSchema`.
const STRUCTURED_SINCE: &str = "2025-06-18";
/// The longest accepted message line.
pub const MAX_LINE: usize = 1 << 20;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;

/// Arguments of `tapio mcp`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Register with an MCP client, e.g.:\n  \
{\"mcpServers\": {\"tapio\": {\"command\": \"tapio\", \"args\": [\"mcp\", \"--data-dir\", \"/var/lib/tapio/occurrences\"]}}}\n\
Tools: recent_anomalies, node_health, status. Logs go to stderr; stdout carries only protocol.")]
pub struct McpArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
}

/// Serves stdin/stdout until stdin ends.
pub fn run(args: McpArgs) -> Result<(), CliError> {
    let store = args.data_dir.store();
    tracing::info!(data_dir = %store.dir().display(), "mcp server ready on stdio");
    let mut server = Server::new(store);
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut line = Vec::new();
    loop {
        let reply = match read_line(&mut input, &mut line, MAX_LINE) {
            Ok(Line::Eof) => return Ok(()),
            Ok(Line::TooLong) => Some(error_response(
                Value::Null,
                INVALID_REQUEST,
                "Invalid Request: message too long",
            )),
            Ok(Line::Complete) => server.handle_bytes(&line, now_ns()),
            Err(e) => {
                return Err(CliError::runtime(
                    anyhow::Error::new(e).context("failed to read stdin"),
                ))
            }
        };
        if let Some(reply) = reply {
            let mut text = reply.to_string();
            text.push('\n');
            let mut out = stdout.lock();
            out.write_all(text.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| {
                    CliError::runtime(anyhow::Error::new(e).context("failed to write to stdout"))
                })?;
        }
    }
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one `\n`-terminated line into `buf` (without the newline), holding
/// at most `max` bytes; a longer line is consumed and reported `TooLong`.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::Eof,
                (true, true) => Line::TooLong,
                (true, false) => Line::Complete,
            });
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        input.consume(if done { take + 1 } else { take });
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

fn error_response(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn result_response(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// The protocol state machine, free of stdio so tests can drive it.
pub struct Server {
    store: Store,
    /// The negotiated protocol revision; the latest until `initialize`.
    version: &'static str,
}

impl Server {
    pub fn new(store: Store) -> Server {
        Server {
            store,
            version: SUPPORTED_VERSIONS[0],
        }
    }

    /// Handles one raw line; `None` when nothing is to be sent back.
    pub fn handle_bytes(&mut self, line: &[u8], now_ns: u64) -> Option<Value> {
        let Ok(text) = std::str::from_utf8(line) else {
            return Some(error_response(
                Value::Null,
                PARSE_ERROR,
                "Parse error: not UTF-8",
            ));
        };
        self.handle_line(text, now_ns)
    }

    /// Handles one message; `None` when nothing is to be sent back.
    pub fn handle_line(&mut self, text: &str, now_ns: u64) -> Option<Value> {
        if text.trim().is_empty() {
            return None;
        }
        let msg: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return Some(error_response(
                    Value::Null,
                    PARSE_ERROR,
                    &format!("Parse error: {e}"),
                ))
            }
        };
        let Value::Object(obj) = msg else {
            let what = if msg.is_array() {
                "Invalid Request: batches are not supported"
            } else {
                "Invalid Request: expected a JSON object"
            };
            return Some(error_response(Value::Null, INVALID_REQUEST, what));
        };
        self.handle_object(obj, now_ns)
    }

    fn handle_object(&mut self, obj: Map<String, Value>, now_ns: u64) -> Option<Value> {
        // MCP ids are strings or integers. serde_json holds any integer that
        // fits i64 or u64 exactly and echoes it digit for digit; anything
        // else (a fraction, an exponent, a larger integer) it could only hold
        // as a float, and echoing that changes the id (2^64 comes back as
        // 1.8446744073709552e19), so the client could never match the
        // reply. Refused instead.
        let id = match obj.get("id") {
            None => None,
            Some(v @ Value::String(_)) => Some(v.clone()),
            Some(v @ Value::Number(n)) if n.is_i64() || n.is_u64() => Some(v.clone()),
            Some(_) => {
                return Some(error_response(
                    Value::Null,
                    INVALID_REQUEST,
                    "Invalid Request: id must be a string or an integer within 64 bits",
                ))
            }
        };
        let reply_id = id.clone().unwrap_or(Value::Null);
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Some(error_response(
                reply_id,
                INVALID_REQUEST,
                "Invalid Request: jsonrpc must be \"2.0\"",
            ));
        }
        let method = match obj.get("method") {
            Some(Value::String(m)) => m.as_str(),
            None if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) => {
                // A response to a request we never sent.
                return None;
            }
            _ => {
                return Some(error_response(
                    reply_id,
                    INVALID_REQUEST,
                    "Invalid Request: method must be a string",
                ))
            }
        };
        let params = match obj.get("params") {
            None | Some(Value::Null) => None,
            Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p.clone()),
            Some(_) => {
                return Some(error_response(
                    reply_id,
                    INVALID_REQUEST,
                    "Invalid Request: params must be an object or an array",
                ))
            }
        };
        let Some(id) = id else {
            // Notifications (initialized, cancelled, ...) need no answer, and
            // unknown ones are ignored as JSON-RPC requires.
            tracing::debug!(method, "notification");
            return None;
        };
        let outcome = match method {
            "initialize" => self.initialize(params),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({"tools": tools::list(self.structured())})),
            "tools/call" => self.call(params, now_ns),
            _ => Err((METHOD_NOT_FOUND, format!("Method not found: {method}"))),
        };
        Some(match outcome {
            Ok(result) => result_response(id, result),
            Err((code, message)) => error_response(id, code, &message),
        })
    }

    /// Whether the negotiated revision has `structuredContent` and
    /// `outputSchema` (2025-06-18 and later).
    fn structured(&self) -> bool {
        // Revisions are dates, so their text order is their time order.
        self.version >= STRUCTURED_SINCE
    }

    fn initialize(&mut self, params: Option<Value>) -> Result<Value, (i64, String)> {
        let asked = params
            .as_ref()
            .and_then(|p| p.get("protocolVersion"))
            .and_then(Value::as_str)
            .ok_or((
                INVALID_PARAMS,
                "Invalid params: initialize needs a string protocolVersion".to_string(),
            ))?;
        self.version = SUPPORTED_VERSIONS
            .iter()
            .find(|v| **v == asked)
            .copied()
            .unwrap_or(SUPPORTED_VERSIONS[0]);
        tracing::info!(
            client_asked = asked,
            negotiated = self.version,
            "mcp initialize"
        );
        let mut info = json!({"name": "tapio", "version": env!("CARGO_PKG_VERSION")});
        if self.structured() {
            info["title"] = json!("Tapio kernel failure facts");
        }
        Ok(json!({
            "protocolVersion": self.version,
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": info,
            "instructions": "Read-only access to the kernel failure facts (occurrences) the Tapio agent recorded on this node. Use recent_anomalies for the facts themselves (a summary of all matches plus the newest few; page with cursor, narrow with pod, namespace, container, pid), node_health for a verdict per observer with the counts behind it, status for what the store holds. Times are RFC 3339 UTC."
        }))
    }

    fn call(&mut self, params: Option<Value>, now_ns: u64) -> Result<Value, (i64, String)> {
        let bad = |m: &str| (INVALID_PARAMS, format!("Invalid params: {m}"));
        let Some(Value::Object(p)) = params else {
            return Err(bad("tools/call needs an object with a tool name"));
        };
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("tools/call needs a string name"))?;
        let args = match p.get("arguments") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(a @ Value::Object(_)) => a.clone(),
            Some(_) => return Err(bad("arguments must be an object")),
        };
        match tools::call(&self.store, name, args, now_ns) {
            Ok(report) => {
                let text = report.to_string();
                let mut result = json!({
                    "content": [{"type": "text", "text": text}],
                    "isError": false
                });
                if self.structured() {
                    result["structuredContent"] = report;
                }
                Ok(result)
            }
            Err(CallError::InvalidParams(m)) => Err(bad(&m)),
            Err(CallError::InvalidArguments(m)) => {
                tracing::debug!(tool = name, error = %m, "tool arguments refused");
                Ok(json!({
                    "content": [{"type": "text", "text": m}],
                    "isError": true
                }))
            }
            Err(CallError::Execution(m)) => {
                tracing::warn!(tool = name, error = %m, "tool failed");
                Ok(json!({
                    "content": [{"type": "text", "text": m}],
                    "isError": true
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_743_691_381_042_000_000;

    fn server() -> (tempfile::TempDir, Server) {
        let tmp = tempfile::tempdir().unwrap();
        let s = Server::new(Store::new(tmp.path()));
        (tmp, s)
    }

    fn code(reply: &Option<Value>) -> Option<i64> {
        reply.as_ref()?.get("error")?.get("code")?.as_i64()
    }

    #[test]
    fn error_codes_table() {
        let (_tmp, mut s) = server();
        let cases: &[(&str, Option<i64>)] = &[
            ("{", Some(PARSE_ERROR)),
            ("not json", Some(PARSE_ERROR)),
            ("[]", Some(INVALID_REQUEST)),
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                Some(INVALID_REQUEST),
            ),
            ("42", Some(INVALID_REQUEST)),
            (r#"{"id":1,"method":"ping"}"#, Some(INVALID_REQUEST)),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                Some(INVALID_REQUEST),
            ),
            (
                r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
                Some(INVALID_REQUEST),
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, Some(INVALID_REQUEST)),
            // Ids that are numbers but not 64-bit integers came back as
            // floats (issue 14); `fuzz/fuzz_targets/mcp.rs` checks ids too.
            (
                r#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}"#,
                Some(INVALID_REQUEST),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                Some(INVALID_REQUEST),
            ),
            (
                r#"{"jsonrpc":"2.0","id":-9223372036854775808,"method":"ping"}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
                Some(INVALID_REQUEST),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":3}"#,
                Some(INVALID_REQUEST),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#,
                Some(METHOD_NOT_FOUND),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
                Some(INVALID_PARAMS),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
                Some(INVALID_PARAMS),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"nope"}}"#,
                Some(INVALID_PARAMS),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"status","arguments":[]}}"#,
                Some(INVALID_PARAMS),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                Some(INVALID_REQUEST),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1e3,"method":"ping"}"#,
                Some(INVALID_REQUEST),
            ),
            (
                r#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}"#,
                Some(INVALID_REQUEST),
            ),
            (r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, None),
            (r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#, None),
        ];
        for (input, want) in cases {
            let reply = s.handle_line(input, NOW);
            assert!(reply.is_some(), "{input}: no reply");
            assert_eq!(code(&reply), *want, "{input}: {reply:?}");
        }
    }

    #[test]
    fn integer_ids_are_echoed_exactly() {
        let (_tmp, mut s) = server();
        for id in [
            "0",
            "-1",
            "9007199254740993",
            "18446744073709551615",
            "-9223372036854775808",
            "\"18446744073709551616\"",
        ] {
            let reply = s
                .handle_line(
                    &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#),
                    NOW,
                )
                .unwrap();
            assert_eq!(
                reply.to_string(),
                format!(r#"{{"id":{id},"jsonrpc":"2.0","result":{{}}}}"#)
            );
        }
        let reply = s
            .handle_line(
                r#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}"#,
                NOW,
            )
            .unwrap();
        assert_eq!(reply["id"], Value::Null);
        assert_eq!(
            reply["error"]["message"],
            "Invalid Request: id must be a string or an integer within 64 bits"
        );
    }

    #[test]
    fn unusable_arguments_are_tool_errors_the_model_can_read() {
        let (_tmp, mut s) = server();
        let call = |s: &mut Server, tool: &str, args: &str| {
            let line = format!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{args}}}}}"#
            );
            let r = s.handle_line(&line, NOW).unwrap();
            assert_eq!(r["id"], 7);
            assert_eq!(r["result"]["isError"], true, "{line}: {r}");
            assert!(r["result"].get("structuredContent").is_none());
            r["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let text = call(
            &mut s,
            "recent_anomalies",
            r#"{"type":"kernel.network.conection_refused"}"#,
        );
        assert!(
            text.starts_with("invalid arguments for recent_anomalies: unknown type \"kernel.network.conection_refused\": did you mean kernel.network.connection_refused? known types are kernel.network.connection_refused, "),
            "{text}"
        );
        assert_eq!(
            call(&mut s, "recent_anomalies", r#"{"since":"2026-02-30T00:00:00Z"}"#),
            "invalid arguments for recent_anomalies: invalid --since \"2026-02-30T00:00:00Z\": 2026-02 has no day 30"
        );
        assert_eq!(
            call(&mut s, "recent_anomalies", r#"{"limit":0}"#),
            "invalid arguments for recent_anomalies: limit must be between 1 and 50; use cursor (next_cursor of a page) for more"
        );
        for (tool, args) in [
            ("recent_anomalies", r#"{"since":"yesterday"}"#),
            ("recent_anomalies", r#"{"limit":"5"}"#),
            ("node_health", r#"{"observer":"gpu"}"#),
            ("node_health", r#"{"until":"2600-01-01T00:00:00Z"}"#),
            ("status", r#"{"x":1}"#),
        ] {
            let text = call(&mut s, tool, args);
            assert!(
                text.starts_with(&format!("invalid arguments for {tool}: ")),
                "{text}"
            );
        }
    }

    #[test]
    fn notifications_and_responses_get_no_reply() {
        let (_tmp, mut s) = server();
        for input in [
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/whatever","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":5,"result":{}}"#,
            "",
            "   ",
        ] {
            assert_eq!(s.handle_line(input, NOW), None, "{input}");
        }
        assert_eq!(code(&s.handle_bytes(b"\xff\xfe", NOW)), Some(PARSE_ERROR));
    }

    #[test]
    fn negotiates_versions() {
        let (_tmp, mut s) = server();
        let init = |v: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{v}","capabilities":{{}},"clientInfo":{{"name":"t","version":"0"}}}}}}"#
            )
        };
        for (asked, got) in [
            ("2025-11-25", "2025-11-25"),
            ("2025-06-18", "2025-06-18"),
            ("2025-03-26", "2025-03-26"),
            ("2024-11-05", "2024-11-05"),
            ("2026-07-28", "2025-11-25"),
            ("1999-01-01", "2025-11-25"),
        ] {
            let r = s.handle_line(&init(asked), NOW).unwrap();
            assert_eq!(r["result"]["protocolVersion"], json!(got), "{asked}");
            assert_eq!(r["id"], 1);
        }
        // Before 2025-06-18, no structured content or output schemas;
        // from it on, both.
        for (version, structured) in [
            ("2024-11-05", false),
            ("2025-03-26", false),
            ("2025-06-18", true),
            ("2025-11-25", true),
        ] {
            s.handle_line(&init(version), NOW);
            let list = s
                .handle_line(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, NOW)
                .unwrap();
            let tool = &list["result"]["tools"][0];
            assert_eq!(tool.get("outputSchema").is_some(), structured, "{version}");
            assert_eq!(tool.get("title").is_some(), structured, "{version}");
            let call = s
                .handle_line(
                    r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"status"}}"#,
                    NOW,
                )
                .unwrap();
            assert_eq!(
                call["result"].get("structuredContent").is_some(),
                structured,
                "{version}"
            );
            assert_eq!(call["result"]["isError"], false);
            // Unusable arguments are a tool result in every revision.
            let bad = s
                .handle_line(
                    r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"recent_anomalies","arguments":{"pid":"x"}}}"#,
                    NOW,
                )
                .unwrap();
            assert_eq!(bad["result"]["isError"], true, "{version}");
        }
    }

    #[test]
    fn tool_list_has_schemas() {
        let (_tmp, mut s) = server();
        let list = s
            .handle_line(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, NOW)
            .unwrap();
        let tools = list["result"]["tools"].as_array().unwrap();
        let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["recent_anomalies", "node_health", "status"]);
        for t in tools {
            assert_eq!(t["inputSchema"]["type"], "object");
            assert_eq!(t["outputSchema"]["type"], "object");
        }
    }

    #[test]
    fn execution_failure_is_a_tool_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let mut s = Server::new(Store::new(&file));
        let r = s
            .handle_line(
                r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"status"}}"#,
                NOW,
            )
            .unwrap();
        assert_eq!(r["result"]["isError"], true);
        assert!(r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("not a directory"));
    }

    #[test]
    fn long_lines_are_discarded() {
        let mut input = std::io::Cursor::new(b"0123456789\nabc\nlast".to_vec());
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut input, &mut buf, 5).unwrap(),
            Line::TooLong
        ));
        assert!(matches!(
            read_line(&mut input, &mut buf, 5).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"abc");
        assert!(matches!(
            read_line(&mut input, &mut buf, 5).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"last");
        assert!(matches!(
            read_line(&mut input, &mut buf, 5).unwrap(),
            Line::Eof
        ));
    }
}
