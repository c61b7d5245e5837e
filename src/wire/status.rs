//! An observer's state as the agent reports it on the node: the status
//! file (written by the agent, read by `tapio health` and MCP), `/readyz`
//! and the `state` label of `tapio_observer_state`.
//!
//! One closed set of four states with their spellings, shared by the
//! writer and the reader so neither compares strings. The controller
//! heartbeat has its own spelling (`running` for `active`, and `unknown`
//! for values a reader does not know): that is [`super::v1::ObserverState`],
//! converted from this one. Pure data; no I/O.

use serde::{Deserialize, Serialize};

/// What an observer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObserverState {
    /// Everything it needs is attached.
    Active,
    /// Running with something missing (some programs, or PMCs); the
    /// reason says what.
    Degraded,
    /// Nothing could be attached (or it has reported nothing yet).
    Unavailable,
    /// Switched off by the applied config.
    Disabled,
}

impl ObserverState {
    /// Every state, in the order the metrics list them.
    pub const ALL: [ObserverState; 4] = [
        ObserverState::Active,
        ObserverState::Degraded,
        ObserverState::Unavailable,
        ObserverState::Disabled,
    ];

    /// The spelling in the status file and the metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ObserverState::Active => "active",
            ObserverState::Degraded => "degraded",
            ObserverState::Unavailable => "unavailable",
            ObserverState::Disabled => "disabled",
        }
    }
}

/// One observer's state and why (empty when active). Serialised with both
/// fields always present: the status file's `observers` values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserverStatus {
    pub state: ObserverState,
    pub reason: String,
}

impl ObserverStatus {
    pub fn new(state: ObserverState, reason: impl Into<String>) -> ObserverStatus {
        ObserverStatus {
            state,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings are the status file's contract: serde and `as_str`
    /// agree, and every spelling reads back as its state.
    #[test]
    fn spellings_round_trip() {
        let want = ["active", "degraded", "unavailable", "disabled"];
        for (s, w) in ObserverState::ALL.into_iter().zip(want) {
            assert_eq!(s.as_str(), w);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{w}\""));
            let back: ObserverState = serde_json::from_str(&format!("\"{w}\"")).unwrap();
            assert_eq!(back, s);
        }
        assert!(serde_json::from_str::<ObserverState>("\"running\"").is_err());
        assert_eq!(
            serde_json::to_string(&ObserverStatus::new(ObserverState::Active, "")).unwrap(),
            r#"{"state":"active","reason":""}"#
        );
    }
}
