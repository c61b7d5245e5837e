//! MCP messages: each input line goes into `mcp::Server::handle_bytes`,
//! the function `tapio mcp` calls for every stdin line, over the repo's
//! occurrence fixtures (read-only). Up to eight lines per input share one
//! server, so `initialize` can change what later calls answer.
//!
//! Invariants: a reply is a JSON-RPC 2.0 response object with exactly one
//! of `result`/`error`, on one line once serialised; its `id` is the
//! request's `id` (a string or a 64-bit integer, as MCP allows) and null
//! only when the request had none usable; error codes are the documented ones; no reply only for a
//! blank line, a notification or a client's response; a tool result has
//! `content` text and a boolean `isError`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tapio::mcp::{Server, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR};
use tapio::store::Store;

const NOW_NS: u64 = 1_743_691_381_042_000_000;
const MAX_LINES: usize = 8;

fn fixtures() -> Store {
    Store::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/occurrences/basic"
    ))
}

fn check(line: &[u8], reply: Option<Value>) {
    let request: Option<Value> = std::str::from_utf8(line)
        .ok()
        .and_then(|t| serde_json::from_str(t).ok());
    let obj = request.as_ref().and_then(Value::as_object);
    let Some(reply) = reply else {
        let blank = std::str::from_utf8(line).is_ok_and(|t| t.trim().is_empty());
        let quiet = obj.is_some_and(|o| {
            let notification = !o.contains_key("id");
            let response =
                !o.contains_key("method") && (o.contains_key("result") || o.contains_key("error"));
            notification || response
        });
        assert!(
            blank || quiet,
            "no reply to {}",
            String::from_utf8_lossy(line)
        );
        return;
    };
    let text = reply.to_string();
    assert!(!text.contains('\n'), "a reply must be one line: {text}");
    let o = reply.as_object().expect("a reply is an object");
    assert_eq!(o.get("jsonrpc"), Some(&Value::from("2.0")), "{text}");
    assert_eq!(
        o.contains_key("result"),
        !o.contains_key("error"),
        "exactly one of result/error: {text}"
    );
    // MCP ids are strings or integers; anything else is refused with a
    // null id rather than echoed changed (a float for 2^64).
    let want_id = match obj.and_then(|o| o.get("id")) {
        Some(id @ Value::String(_)) => id.clone(),
        Some(id @ Value::Number(n)) if n.is_i64() || n.is_u64() => id.clone(),
        _ => Value::Null,
    };
    assert_eq!(o.get("id"), Some(&want_id), "{text}");
    if let Some(err) = o.get("error") {
        let code = err["code"].as_i64().expect("an integer code");
        assert!(
            [
                PARSE_ERROR,
                INVALID_REQUEST,
                METHOD_NOT_FOUND,
                INVALID_PARAMS
            ]
            .contains(&code),
            "{text}"
        );
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}"
        );
        if code != PARSE_ERROR && code != INVALID_REQUEST {
            // Method-level errors only come for a request with an id.
            assert_ne!(want_id, Value::Null, "{text}");
        }
    } else {
        assert_ne!(
            want_id,
            Value::Null,
            "a result for a request without an id: {text}"
        );
        let method = obj.and_then(|o| o.get("method")).and_then(Value::as_str);
        if method == Some("tools/call") {
            let r = &o["result"];
            assert!(r["isError"].is_boolean(), "{text}");
            assert!(r["content"][0]["text"].is_string(), "{text}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut server = Server::new(fixtures());
    for line in data.split(|&b| b == b'\n').take(MAX_LINES) {
        let reply = server.handle_bytes(line, NOW_NS);
        check(line, reply);
    }
});
