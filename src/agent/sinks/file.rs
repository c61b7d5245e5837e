//! `file` sink: one file per occurrence, `<data-dir>/<id>.json`, written to
//! a hidden temp file in the same directory and renamed into place, so a
//! reader never sees a partial file under a final name. ULID names sort by
//! time. A write that fails (disk full, permissions) removes its temp file
//! and is counted; the sink keeps going with the next occurrence.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::Sink;
use crate::agent::metrics::Metrics;
use crate::wire::Occurrence;

pub struct FileSink {
    dir: PathBuf,
    buf: Vec<u8>,
    last_error: Option<String>,
    metrics: Arc<Metrics>,
}

impl FileSink {
    /// Creates the directory if needed; fails if it cannot be created.
    pub fn new(dir: &Path, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("failed to create data dir {}", dir.display()))?;
        Ok(FileSink {
            dir: dir.to_path_buf(),
            buf: Vec::with_capacity(4096),
            last_error: None,
            metrics,
        })
    }

    fn write_one(&mut self, occ: &Occurrence) -> std::io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, occ)?;
        self.buf.push(b'\n');
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

    fn accept(&mut self, batch: &[Arc<Occurrence>]) {
        for o in batch {
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
}
