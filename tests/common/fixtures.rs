//! Occurrences built in the test process, for the tests that feed a sink
//! directly instead of running an agent.

use std::sync::Arc;

use tapio::wire::evidence::{Comm, Conn, Container, Evidence, Refused};
use tapio::wire::{Emitted, Outcome, Severity};

/// A connection refusal numbered `n` (its ULID, its time and its
/// destination port) by pid 4242 (`curl`) from thread `tid`, in
/// `container` when given: typed, as the agent's emitter hands it to the
/// sinks.
pub fn refused_occurrence(n: u32, tid: u32, container: Option<Container>) -> Arc<Emitted> {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"curl");
    Arc::new(Emitted::new(
        ulid::Ulid::from_parts(1_800_000_000_000 + u64::from(n), u128::from(n)),
        Severity::Warning,
        Outcome::Failure,
        Evidence::ConnectionRefused(Refused {
            conn: Conn {
                pid: 4242,
                tid,
                comm: Comm(comm),
                saddr: "127.0.0.1".parse().unwrap(),
                sport: 50000,
                daddr: "127.0.0.1".parse().unwrap(),
                dport: u16::try_from(n).expect("a port"),
                netns: 4026531840,
                cgroup_id: 0,
            },
            count: 1,
            cause: "rst",
        }),
        container,
        7,
        1_800_000_000_000_000_000 + u64::from(n),
    ))
}
