//! Occurrences built in the test process, for the tests that feed a sink
//! directly instead of running an agent.

use std::sync::Arc;

use serde_json::Value;

/// A connection-refused occurrence numbered `n` (its ULID, its time and the
/// port in its message) with `data` as its evidence: the fixture the sink
/// tests send through a real sink.
pub fn refused_occurrence(n: u32, data: &Value) -> Arc<tapio::wire::Occurrence> {
    use tapio::wire::{AnomalyType, Occurrence, Outcome, Severity};
    Arc::new(Occurrence::new(
        ulid::Ulid::from_parts(1_800_000_000_000 + u64::from(n), u128::from(n)),
        AnomalyType::ConnectionRefused,
        Severity::Warning,
        Outcome::Failure,
        format!("connect to 127.0.0.1:{n} refused (rst), count=1"),
        data.as_object().expect("fixture data is an object").clone(),
        7,
        1_800_000_000_000_000_000 + u64::from(n),
    ))
}
