//! A real `tapio controller` child process for the tests that drive it
//! over a socket: started on port 0, its address and log captured, killed
//! on drop.

use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::{collect_text_and, poll, wait_child};

/// A running `tapio controller` started on `127.0.0.1:0`: its address
/// (from the "controller listening on" log line) and its whole log, read
/// by a thread that keeps draining stderr so the child never blocks on a
/// full pipe. Killed on drop.
pub struct Controller {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Controller {
    /// Spawns `cmd` (stdout discarded, stderr read) and waits at most
    /// `limit` for the address; panics with the log otherwise.
    pub fn spawn(cmd: &mut Command, limit: Duration) -> Controller {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let (tx, rx) = mpsc::channel();
        let log = collect_text_and(child.stderr.take().unwrap(), move |line| {
            if let Some((_, addr)) = line.split_once("controller listening on ") {
                let _ = tx.send(addr.trim().to_string());
            }
        });
        let addr = rx.recv_timeout(limit).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "controller did not report its address; log:\n{}",
                log.lock().unwrap()
            )
        });
        Controller {
            child,
            addr: addr.parse().unwrap(),
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits at most `limit` until the log holds `needle`; panics with the
    /// log otherwise. A line the controller wrote before the counter a test
    /// just read can still be on its way through the pipe and the reader.
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let seen = poll(limit, Duration::from_millis(20), || {
            self.log().contains(needle).then_some(())
        });
        assert!(seen.is_some(), "no log line {needle:?}:\n{}", self.log());
    }

    /// Waits at most `limit` for the process to exit by itself; returns its
    /// exit code, panics with the log if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        match wait_child(&mut self.child, limit) {
            Some(status) => status.code(),
            None => panic!("controller did not exit; log:\n{}", self.log()),
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
