//! The agent status file `<data-dir>/.agent-status.json`: what the agent
//! is doing, for `tapio health` and anyone else on the node (schema in
//! SPEC §8, "The agent status file"; every field always present).
//!
//! Owns: the document ([`render`], pure), its atomic replacement
//! ([`write_atomic`]: temp file + rename, so a reader never sees half a
//! document), and the `status-file` thread that writes it at start, on any
//! change, at least every [`REFRESH`], and once more with
//! `"state":"stopped"` when told to stop. The name starts with a dot so the
//! store's `*.json` occurrence scan never counts it.
//!
//! Must not: block the pipeline (it only reads [`Shared`] snapshots), or stop
//! the agent when the file cannot be written (that is logged, once per
//! distinct error, and retried on the next tick).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::health;
use super::pipeline::{Applied, ControllerLink, Shared};
use crate::wire::status::ObserverStatus;
use crate::wire::Observer;

pub const FILE_NAME: &str = ".agent-status.json";
pub const SCHEMA: u32 = 1;
/// How often the thread looks for changes.
pub const TICK: Duration = Duration::from_secs(1);
/// Longest time between two writes while running: a reader judges the
/// agent gone when `updated_unix_ms` is much older than this (30 s).
pub const REFRESH: Duration = Duration::from_secs(5);

/// Who this agent is; fixed for the process.
#[derive(Debug, Clone)]
pub struct Identity {
    pub agent_id: String,
    pub node_name: String,
    pub version: String,
    pub pid: u32,
    /// `--controller-endpoint`, `None` standalone.
    pub controller_endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigDoc {
    pub applied: bool,
    pub hash: String,
    pub generation: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControllerDoc {
    pub endpoint: String,
    /// `ok`, `unreachable`, `unauthorized` or `error`.
    pub state: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusDoc {
    pub schema: u32,
    pub agent_id: String,
    pub node_name: String,
    pub version: String,
    pub pid: u32,
    /// `running` or `stopped`.
    pub state: String,
    pub updated_unix_ms: u64,
    pub config: ConfigDoc,
    pub controller: Option<ControllerDoc>,
    /// By observer name (so in name order on disk).
    pub observers: BTreeMap<String, ObserverStatus>,
}

/// The document for this moment. `running` is false for the final write.
pub fn render(
    id: &Identity,
    running: bool,
    now_unix_ms: u64,
    applied: Option<&Applied>,
    statuses: &BTreeMap<Observer, ObserverStatus>,
    link: Option<&ControllerLink>,
) -> StatusDoc {
    let config = match applied {
        Some(a) => ConfigDoc {
            applied: true,
            hash: a.hash.to_string(),
            generation: a.generation,
        },
        None => ConfigDoc {
            applied: false,
            hash: String::new(),
            generation: 0,
        },
    };
    let controller = id.controller_endpoint.as_ref().map(|ep| match link {
        // The schema has no `connecting`: until the controller answers it
        // is, as far as anyone can tell, not reachable.
        None => ControllerDoc {
            endpoint: ep.clone(),
            state: "unreachable".into(),
            reason: "no answer from the controller yet".into(),
        },
        Some(l) if l.state == "connecting" => ControllerDoc {
            endpoint: l.endpoint.clone(),
            state: "unreachable".into(),
            reason: if l.reason.is_empty() {
                "no answer from the controller yet".into()
            } else {
                l.reason.clone()
            },
        },
        Some(l) => ControllerDoc {
            endpoint: l.endpoint.clone(),
            state: l.state.into(),
            reason: l.reason.clone(),
        },
    });
    let observers = health::observer_states(applied, statuses)
        .into_iter()
        .map(|(o, s)| (o.as_str().to_string(), s))
        .collect();
    StatusDoc {
        schema: SCHEMA,
        agent_id: id.agent_id.clone(),
        node_name: id.node_name.clone(),
        version: id.version.clone(),
        pid: id.pid,
        state: if running { "running" } else { "stopped" }.into(),
        updated_unix_ms: now_unix_ms,
        config,
        controller,
        observers,
    }
}

/// Replaces `<dir>/.agent-status.json` with `doc` atomically, creating
/// `dir` if it is missing (also when it was removed while running).
pub fn write_atomic(dir: &Path, doc: &StatusDoc) -> anyhow::Result<()> {
    use anyhow::Context;
    let bytes = serde_json::to_vec(doc)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create the data dir {}", dir.display()))?;
    // Per-process temp name: two agents on one data dir (a mistake) must at
    // least not corrupt each other's temp file mid-write.
    let tmp = dir.join(format!("{FILE_NAME}.tmp.{}", std::process::id()));
    std::fs::write(&tmp, &bytes).with_context(|| format!("failed to write {}", tmp.display()))?;
    // No fsync: after a power loss a stale or empty status only makes
    // `tapio health` answer "unknown", which is what it is then.
    std::fs::rename(&tmp, dir.join(FILE_NAME)).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("failed to replace {}", dir.join(FILE_NAME).display())
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The running `status-file` thread.
pub struct StatusWriter {
    stop: Sender<()>,
    handle: JoinHandle<()>,
}

impl StatusWriter {
    /// Writes the final `stopped` document and waits for the thread (one
    /// small file write).
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}

/// Starts the thread; its first write happens before this returns, so the
/// file exists as soon as the agent says it runs.
pub fn spawn(dir: PathBuf, id: Identity, shared: Arc<Shared>) -> std::io::Result<StatusWriter> {
    let mut writer = Writer {
        dir,
        id,
        last: None,
        last_error: None,
    };
    writer.tick(&shared, true);
    let (stop, rx) = channel::<()>();
    let handle = std::thread::Builder::new()
        .name("status-file".into())
        .spawn(move || loop {
            match rx.recv_timeout(TICK) {
                Err(RecvTimeoutError::Timeout) => writer.tick(&shared, true),
                // Told to stop, or the agent dropped the handle: final write.
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    writer.tick(&shared, false);
                    return;
                }
            }
        })?;
    Ok(StatusWriter { stop, handle })
}

struct Writer {
    dir: PathBuf,
    id: Identity,
    /// The last document written (with its time zeroed) and when.
    last: Option<(StatusDoc, Instant)>,
    last_error: Option<String>,
}

impl Writer {
    fn tick(&mut self, shared: &Shared, running: bool) {
        let now = unix_ms();
        let doc = render(
            &self.id,
            running,
            now,
            shared.applied().as_ref(),
            &shared.statuses(),
            shared.controller().as_ref(),
        );
        let key = StatusDoc {
            updated_unix_ms: 0,
            ..doc.clone()
        };
        let due = match &self.last {
            None => true,
            Some((prev, at)) => *prev != key || at.elapsed() >= REFRESH,
        };
        if !due {
            return;
        }
        match write_atomic(&self.dir, &doc) {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    tracing::info!(
                        "status file {} written again",
                        self.dir.join(FILE_NAME).display()
                    );
                }
                self.last = Some((key, Instant::now()));
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if self.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(
                        "status file not written (tapio health cannot see this agent): {msg}"
                    );
                    self.last_error = Some(msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CompiledConfig;

    fn id(endpoint: Option<&str>) -> Identity {
        Identity {
            agent_id: "01JAGENT".into(),
            node_name: "n1".into(),
            version: "0.1.0".into(),
            pid: 1234,
            controller_endpoint: endpoint.map(String::from),
        }
    }

    #[test]
    fn render_matches_the_schema_exactly() {
        let mut cfg = CompiledConfig::default();
        cfg.storage.enabled = false;
        let hash = cfg.hash();
        let applied = Applied {
            config: cfg,
            generation: 2,
            hash: hash.clone(),
        };
        use crate::wire::status::ObserverState::{Active, Degraded};
        let mut statuses = BTreeMap::new();
        for (o, state, reason) in [
            (Observer::Network, Active, ""),
            (Observer::Container, Active, ""),
            (Observer::Storage, Active, ""),
            (Observer::Node, Degraded, "pmc unavailable: ENOENT"),
        ] {
            statuses.insert(o, ObserverStatus::new(state, reason));
        }
        let link = ControllerLink {
            endpoint: "http://c:8080".into(),
            state: "ok",
            reason: String::new(),
        };
        let doc = render(
            &id(Some("http://c:8080")),
            true,
            1_795_723_045_170,
            Some(&applied),
            &statuses,
            Some(&link),
        );
        let got = serde_json::to_value(&doc).unwrap();
        let want = serde_json::json!({
            "schema": 1, "agent_id": "01JAGENT", "node_name": "n1", "version": "0.1.0",
            "pid": 1234, "state": "running", "updated_unix_ms": 1_795_723_045_170u64,
            "config": {"applied": true, "hash": hash.0, "generation": 2},
            "controller": {"endpoint": "http://c:8080", "state": "ok", "reason": ""},
            "observers": {
                "network": {"state": "active", "reason": ""},
                "container": {"state": "active", "reason": ""},
                "storage": {"state": "disabled", "reason": "switched off by the applied config"},
                "node": {"state": "degraded", "reason": "pmc unavailable: ENOENT"},
            }
        });
        assert_eq!(got, want);
        // The bytes too: observers in name order, both fields always there.
        assert_eq!(
            serde_json::to_string(&doc.observers).unwrap(),
            concat!(
                r#"{"container":{"state":"active","reason":""},"#,
                r#""network":{"state":"active","reason":""},"#,
                r#""node":{"state":"degraded","reason":"pmc unavailable: ENOENT"},"#,
                r#""storage":{"state":"disabled","reason":"switched off by the applied config"}}"#
            )
        );
        assert!(doc.config.hash.starts_with("sha256:"));
    }

    #[test]
    fn render_unconfigured_standalone_and_controller_without_answer() {
        let doc = render(&id(None), false, 5, None, &BTreeMap::new(), None);
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["state"], "stopped");
        assert_eq!(
            v["config"],
            serde_json::json!({"applied": false, "hash": "", "generation": 0})
        );
        assert!(v["controller"].is_null(), "standalone: null, present");
        assert!(v.as_object().unwrap().contains_key("controller"));
        assert_eq!(v["observers"]["node"]["state"], "unavailable");

        let doc = render(
            &id(Some("http://c:1")),
            true,
            5,
            None,
            &BTreeMap::new(),
            None,
        );
        assert_eq!(
            doc.controller,
            Some(ControllerDoc {
                endpoint: "http://c:1".into(),
                state: "unreachable".into(),
                reason: "no answer from the controller yet".into()
            })
        );
        let link = ControllerLink {
            endpoint: "http://c:1".into(),
            state: "unauthorized",
            reason: "401 unauthorized".into(),
        };
        let doc = render(
            &id(Some("http://c:1")),
            true,
            5,
            None,
            &BTreeMap::new(),
            Some(&link),
        );
        assert_eq!(doc.controller.unwrap().state, "unauthorized");
    }

    #[test]
    fn write_is_atomic_and_creates_the_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("missing").join("occurrences");
        let mut doc = render(&id(None), true, 1, None, &BTreeMap::new(), None);
        write_atomic(&dir, &doc).unwrap();
        let path = dir.join(FILE_NAME);
        let read: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(read["updated_unix_ms"], 1);
        // Replaced, not appended; the temp file is gone.
        doc.updated_unix_ms = 2;
        doc.state = "stopped".into();
        write_atomic(&dir, &doc).unwrap();
        let read: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            (read["updated_unix_ms"].as_u64(), read["state"].as_str()),
            (Some(2), Some("stopped"))
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![FILE_NAME.to_string()]);
        // A reader polling during many rewrites never sees a partial file.
        let d2 = dir.clone();
        let reader = std::thread::spawn(move || {
            for _ in 0..2000 {
                if let Ok(bytes) = std::fs::read(d2.join(FILE_NAME)) {
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .expect("a whole document every time");
                }
            }
        });
        for i in 0..500 {
            doc.updated_unix_ms = i;
            write_atomic(&dir, &doc).unwrap();
        }
        reader.join().unwrap();
    }

    #[test]
    fn a_data_dir_that_cannot_be_created_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let doc = render(&id(None), true, 1, None, &BTreeMap::new(), None);
        let e = write_atomic(&file.join("sub"), &doc).unwrap_err();
        assert!(
            format!("{e:#}").contains("failed to create the data dir"),
            "{e:#}"
        );
    }

    #[test]
    fn the_thread_writes_at_start_on_change_and_stopped_at_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let shared = Shared::new();
        let w = spawn(dir.clone(), id(None), shared.clone()).unwrap();
        let read = || -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(dir.join(FILE_NAME)).unwrap()).unwrap()
        };
        // Written before spawn returned.
        assert_eq!(read()["state"], "running");
        assert_eq!(read()["config"]["applied"], false);
        // A change shows up within a few ticks (bounded wait).
        shared.request_config(CompiledConfig::default(), 1);
        let a = shared.take_pending().unwrap();
        shared.mark_applied(a);
        let deadline = Instant::now() + Duration::from_secs(10);
        while read()["config"]["applied"] != true {
            assert!(
                Instant::now() < deadline,
                "change never written: {}",
                read()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(read()["config"]["generation"], 1);
        w.stop();
        assert_eq!(read()["state"], "stopped");
    }
}
