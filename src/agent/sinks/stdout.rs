//! `stdout` sink: one JSON object per line. A closed stdout is counted as
//! write errors; the agent keeps observing for its other sinks.
//!
//! Writes go straight to fd 1 (no std buffering) on this sink's own
//! thread, and each line counts as delivered once all its bytes are in, so
//! a write cut short leaves an exact count. A stdout pipe nobody reads
//! blocks this thread, never the pipeline (the queue overflows into
//! `queue_full`) nor the exit: at the shutdown deadline the thread is
//! abandoned and the lines it has not written are counted as
//! `shutdown_timeout`. (Making fd 1 non-blocking instead would change the
//! file description the agent shares with whoever started it.)

use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::Duration;

use super::{Shutdown, Sink};
use crate::agent::metrics::Metrics;
use crate::wire::Emitted;

pub struct StdoutSink {
    buf: Vec<u8>,
    metrics: Arc<Metrics>,
    warned: bool,
    shutdown: Shutdown,
    /// fd 1, never closed by us.
    out: ManuallyDrop<std::fs::File>,
}

impl StdoutSink {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        StdoutSink {
            buf: Vec::with_capacity(64 * 1024),
            metrics,
            warned: false,
            shutdown: Shutdown::new(),
            // SAFETY: fd 1 stays open for the life of the process;
            // ManuallyDrop keeps this File from ever closing it.
            out: ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) }),
        }
    }

    /// Writes `buf` (whole lines) to fd 1, counting each line as it
    /// completes. Returns the error that stopped it, if any.
    ///
    /// Each write() carries whole lines and at most `PIPE_BUF` bytes (or one
    /// longer line): on a pipe such a write is atomic, so a reader that
    /// stops reading leaves every counted line whole in the pipe and every
    /// uncounted one out of it. One big write would block with part of the
    /// batch already in the pipe and no count of it.
    fn write_lines(&mut self) -> std::io::Result<()> {
        let mut off = 0;
        while off < self.buf.len() {
            let end = chunk_end(&self.buf, off, libc::PIPE_BUF);
            match self.out.write(&self.buf[off..end]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let done = self.buf[off..off + n]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count();
                    self.metrics.sink_write("stdout", true, done as u64);
                    off += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Someone handed us a non-blocking stdout: wait, but
                    // not past the shutdown deadline.
                    if self.shutdown.expired() {
                        return Err(e);
                    }
                    self.shutdown.sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    let left = self.buf[off..].iter().filter(|b| **b == b'\n').count() as u64;
                    self.metrics.sink_write("stdout", false, left);
                    self.metrics.sink_drop("stdout", "write_error", left);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// The end of the next chunk of `buf` from `start`: whole lines up to `max`
/// bytes, or the rest of the current line if it alone is longer.
fn chunk_end(buf: &[u8], start: usize, max: usize) -> usize {
    let mut end = start;
    let mut pos = start;
    while let Some(nl) = buf[pos..].iter().position(|b| *b == b'\n') {
        let line_end = pos + nl + 1;
        if line_end - start > max && end > start {
            break;
        }
        end = line_end;
        pos = line_end;
        if end - start >= max {
            break;
        }
    }
    if end == start {
        // No newline left (cannot happen for encoded lines): the rest.
        buf.len()
    } else {
        end
    }
}

/// Appends `occ` as one JSON line to `buf`: its shared text, not a new
/// serialisation.
pub fn encode_line(buf: &mut Vec<u8>, occ: &Emitted) {
    buf.extend_from_slice(occ.json().get().as_bytes());
    buf.push(b'\n');
}

impl Sink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn attach_shutdown(&mut self, shutdown: Shutdown) {
        self.shutdown = shutdown;
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        &["write_error"]
    }

    fn accept(&mut self, batch: &[Arc<Emitted>]) {
        self.buf.clear();
        for o in batch {
            encode_line(&mut self.buf, o);
        }
        if let Err(e) = self.write_lines() {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                // Out of budget on a non-blocking stdout: the runner
                // counts the unwritten lines as undelivered.
                return;
            }
            if !self.warned {
                tracing::warn!("stdout sink write failed (further failures only counted): {e}");
                self.warned = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_whole_lines_up_to_the_limit() {
        let buf = b"aaa\nbb\ncccccccc\nd\n";
        assert_eq!(chunk_end(buf, 0, 7), 7, "aaa + bb, not ccc");
        assert_eq!(chunk_end(buf, 7, 7), 16, "one line longer than the limit");
        assert_eq!(chunk_end(buf, 16, 7), 18);
        assert_eq!(chunk_end(buf, 0, 100), 18);
    }

    #[test]
    fn lines_are_single_json_objects() {
        let mut buf = Vec::new();
        let o = crate::agent::sinks::tests::occ(7);
        encode_line(&mut buf, &o);
        encode_line(&mut buf, &o);
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines, [o.json().get(); 2]);
        let back: crate::wire::Occurrence = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(back.id, o.id.to_string());
        assert_eq!(back.error.message, o.message());
    }
}
