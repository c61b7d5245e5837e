//! `file` sink: one file per occurrence, `<data-dir>/<id>.json`, written to
//! a hidden temp file in the same directory and renamed into place, so a
//! reader never sees a partial file under a final name. ULID names sort by
//! time. A write that fails (disk full, permissions) removes its temp file
//! and is counted; the sink keeps going with the next occurrence.
//!
//! The directory must be writable at start (checked by creating and
//! removing a probe file: mode bits alone lie for root and on read-only
//! mounts). If it disappears while the agent runs (someone removed it), the
//! sink re-creates it and retries that write once, counted in
//! `tapio_data_dir_recreated_total`; it never gives up for good.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Shutdown, Sink};
use crate::agent::metrics::Metrics;
use crate::wire::Occurrence;

pub struct FileSink {
    dir: PathBuf,
    buf: Vec<u8>,
    last_error: Option<String>,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
}

impl FileSink {
    /// Creates the directory if needed; fails if it cannot be created or
    /// written to.
    pub fn new(dir: &Path, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        prepare_dir(dir)?;
        Ok(FileSink {
            dir: dir.to_path_buf(),
            buf: Vec::with_capacity(4096),
            last_error: None,
            metrics,
            shutdown: Shutdown::new(),
        })
    }

    /// Writes one file; if the directory is gone, re-creates it and tries
    /// once more.
    fn write_one(&mut self, occ: &Occurrence) -> std::io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, occ)?;
        self.buf.push(b'\n');
        match self.write_file(occ) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.dir.is_dir() => {
                fs::create_dir_all(&self.dir)?;
                self.metrics.data_dir_recreated.inc();
                tracing::warn!(dir = %self.dir.display(), "data dir was removed while the agent ran; re-created it");
                self.write_file(occ)
            }
            other => other,
        }
    }

    fn write_file(&self, occ: &Occurrence) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{}.json.tmp", occ.id));
        let dst = self.dir.join(format!("{}.json", occ.id));
        let result = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&self.buf)?;
            fs::rename(&tmp, &dst)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        &["write_error"]
    }

    fn attach_shutdown(&mut self, shutdown: Shutdown) {
        self.shutdown = shutdown;
    }

    fn accept(&mut self, batch: &[Arc<Occurrence>]) {
        for o in batch {
            if self.shutdown.expired() {
                // Out of budget: the rest of the batch is counted as
                // undelivered by the agent.
                return;
            }
            let result = self.write_one(o);
            self.metrics.sink_write("file", result.is_ok(), 1);
            match result {
                Ok(()) => self.last_error = None,
                Err(e) => {
                    self.metrics.sink_drop("file", "write_error", 1);
                    // Log a repeated failure once, not once per occurrence.
                    let msg = e.to_string();
                    if self.last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(dir = %self.dir.display(), "file sink write failed: {msg}");
                        self.last_error = Some(msg);
                    }
                }
            }
        }
    }
}

/// Creates the data dir if needed and checks that files can be created in
/// it. Errors name the directory and carry the cause once.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if let Err(e) = fs::create_dir_all(dir) {
        anyhow::bail!("failed to create data dir {}: {e}", dir.display());
    }
    check_writable(dir)
}

/// Refuses a directory the agent cannot create files in.
fn check_writable(dir: &Path) -> anyhow::Result<()> {
    let probe = dir.join(format!(".tapio-write-probe-{}", std::process::id()));
    match fs::File::create(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        // The io::Error goes into the message, not the chain, so `{:#}`
        // prints the cause once.
        Err(e) => anyhow::bail!("data dir {} is not writable: {e}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_parseable_file_per_occurrence_and_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let mut s = FileSink::new(&dir.path().join("occ"), metrics.clone()).unwrap();
        let batch: Vec<_> = (0..3).map(crate::agent::sinks::tests::occ).collect();
        s.accept(&batch);
        assert!(metrics
            .encode()
            .contains("tapio_sink_writes_total{sink=\"file\",result=\"ok\"} 3"));
        let mut names: Vec<String> = fs::read_dir(dir.path().join("occ"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut expected: Vec<String> = batch.iter().map(|o| format!("{}.json", o.id)).collect();
        expected.sort();
        assert_eq!(names, expected);
        for o in &batch {
            let text =
                fs::read_to_string(dir.path().join("occ").join(format!("{}.json", o.id))).unwrap();
            assert_eq!(serde_json::from_str::<Occurrence>(&text).unwrap(), **o);
        }
    }

    #[test]
    fn unwritable_dir_counts_failures_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("occ");
        let metrics = Metrics::new();
        let mut s = FileSink::new(&target, metrics.clone()).unwrap();
        // Replace the directory with a regular file: every write fails.
        fs::remove_dir(&target).unwrap();
        fs::write(&target, b"not a dir").unwrap();
        let batch: Vec<_> = (0..2).map(crate::agent::sinks::tests::occ).collect();
        s.accept(&batch);
        let text = metrics.encode();
        assert!(
            text.contains("tapio_sink_writes_total{sink=\"file\",result=\"error\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tapio_sink_drops_total{sink=\"file\",reason=\"write_error\"} 2"),
            "{text}"
        );
        assert_eq!(fs::read(&target).unwrap(), b"not a dir");
    }

    #[test]
    fn a_removed_data_dir_is_recreated_and_the_write_retried() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("occ");
        let metrics = Metrics::new();
        let mut s = FileSink::new(&target, metrics.clone()).unwrap();
        let batch: Vec<_> = (0..3).map(crate::agent::sinks::tests::occ).collect();
        s.accept(&batch[..1]);
        fs::remove_dir_all(&target).unwrap();
        s.accept(&batch[1..]);
        let names: Vec<String> = fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let text = metrics.encode();
        assert!(text.contains("tapio_data_dir_recreated_total 1"), "{text}");
        assert!(
            text.contains("tapio_sink_writes_total{sink=\"file\",result=\"ok\"} 3"),
            "{text}"
        );
        assert!(!text.contains("write_error\"} 1"), "{text}");
    }

    #[test]
    fn a_data_dir_that_cannot_be_written_is_refused_with_one_cause() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the directory should be: creating it fails.
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let e = format!("{:#}", prepare_dir(&blocker.join("occ")).unwrap_err());
        assert!(e.starts_with("failed to create data dir "), "{e}");
        assert_eq!(e.matches("Not a directory").count(), 1, "{e}");
    }
}
