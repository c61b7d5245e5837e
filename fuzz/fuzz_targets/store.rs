//! Occurrence files as the store reads them: `store::parse_record`, the
//! function every `status`/`recent`/`health`/`watch`/MCP scan calls on
//! each `*.json` file's bytes, then the CLI's renderings of the record.
//!
//! Invariants: a parsed occurrence written back out re-parses equal, with
//! the same fact time; that time is `data.timestamp_ns` when present;
//! counting it for `status` and `health` works; the `recent` table row and
//! the `watch` line are a single line without control characters (the
//! file is foreign input and must not drive the terminal).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapio::cli::{recent, watch};
use tapio::store::parse_record;
use tapio::store::summary::{HealthCounts, StatusCounts};

fn plain(what: &str, s: &str) {
    assert!(
        !s.chars().any(char::is_control),
        "{what} has control characters: {s:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(rec) = parse_record(data) else {
        return;
    };
    let bytes = serde_json::to_vec(&rec.occurrence).expect("an occurrence serialises");
    let again = parse_record(&bytes).unwrap_or_else(|| {
        panic!(
            "re-serialised occurrence refused: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(again, rec, "{}", String::from_utf8_lossy(&bytes));
    if let Some(ns) = rec.occurrence.timestamp_ns() {
        assert_eq!(rec.ts_ns, ns);
    }

    let mut status = StatusCounts::new();
    status.add(rec.clone());
    let mut health = HealthCounts::new(&[]);
    health.add(&rec);
    let _ = health.verdict();

    let line = watch::line(&rec.occurrence, false);
    plain("watch line", &line);
    let table = recent::table(std::slice::from_ref(&rec.occurrence), false);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 2, "{table:?}");
    for row in rows {
        plain("recent row", row);
    }
});
