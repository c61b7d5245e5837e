//! `stdout` sink: one JSON object per line. A closed stdout is counted as
//! write errors; the agent keeps observing for its other sinks.

use std::io::Write;
use std::sync::Arc;

use super::Sink;
use crate::wire::Occurrence;

pub struct StdoutSink {
    buf: Vec<u8>,
}

impl StdoutSink {
    pub fn new() -> Self {
        StdoutSink {
            buf: Vec::with_capacity(64 * 1024),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
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

    fn write_batch(&mut self, batch: &[Arc<Occurrence>]) -> Result<usize, anyhow::Error> {
        self.buf.clear();
        for o in batch {
            encode_line(&mut self.buf, o)?;
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)?;
        out.flush()?;
        Ok(batch.len())
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
