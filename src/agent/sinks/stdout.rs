//! `stdout` sink: one JSON object per line. A closed stdout is counted as
//! write errors; the agent keeps observing for its other sinks.

use std::io::Write;
use std::sync::Arc;

use super::Sink;
use crate::agent::metrics::Metrics;
use crate::wire::Occurrence;

pub struct StdoutSink {
    buf: Vec<u8>,
    metrics: Arc<Metrics>,
    warned: bool,
}

impl StdoutSink {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        StdoutSink {
            buf: Vec::with_capacity(64 * 1024),
            metrics,
            warned: false,
        }
    }
}

/// Appends `occ` as one JSON line to `buf`.
pub fn encode_line(buf: &mut Vec<u8>, occ: &Occurrence) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *buf, occ)?;
    buf.push(b'\n');
    Ok(())
}

impl Sink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn accept(&mut self, batch: &[Arc<Occurrence>]) {
        self.buf.clear();
        for o in batch {
            // Plain structs of strings and numbers: cannot fail.
            let _ = encode_line(&mut self.buf, o);
        }
        let mut out = std::io::stdout().lock();
        let result = out.write_all(&self.buf).and_then(|_| out.flush());
        self.metrics.sink_write("stdout", result.is_ok(), 1);
        if let Err(e) = result {
            self.metrics
                .sink_drop("stdout", "write_error", batch.len() as u64);
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
    fn lines_are_single_json_objects() {
        let mut buf = Vec::new();
        let o = crate::agent::sinks::tests::occ(7);
        encode_line(&mut buf, &o).unwrap();
        encode_line(&mut buf, &o).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: Occurrence = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(back, *o);
    }
}
