//! Evidence Profiles (SPEC §5): versioned YAML → validated profile →
//! [`CompiledConfig`] (+ its `sha256:` hash).
//!
//! This module owns the profile schema, its validation and its compilation.
//! Validation is closed and exhaustive: it walks the whole document and
//! reports **every** problem with its path and the allowed range; compile
//! cannot fail on a validated profile. Apart from [`cli`] (the `tapio
//! profile` commands) it does no I/O beyond reading the profile file, and it
//! depends only on serde and [`crate::wire`].
//!
//! # Schema
//!
//! ```yaml
//! apiVersion: tapio.io/v1          # required, exactly this
//! kind: EvidenceProfile            # required, exactly this
//! metadata:
//!   name: strict                   # required, a DNS label: 1-63 of a-z 0-9 '-'
//! spec:                            # required
//!   observers:                     # optional; any observer may be left out
//!     network:                     # network | container | storage | node
//!       enabled: true
//!       refused_window: 2s         # a knob: name, type, range from its table row
//! ```
//!
//! The knobs of each observer, with their type, unit, range and default,
//! are the rows of the knob table ([`crate::wire::config::KNOBS`]);
//! `examples/profiles/default.yaml` spells out every default, and every
//! error names the allowed range.
//!
//! * Durations are a decimal number and a unit, no space: `ns`, `us` (or
//!   `µs`), `ms`, `s`, `m`, `h`, `d` — `100ms`, `1s`, `2.5s` (the grammar
//!   of `--since`, [`crate::wire::time::parse_duration`]). A bare number is refused
//!   (is `100` ms or s?). A duration must be a whole number of the unit its
//!   field uses (the row's `unit`), so nothing is rounded.
//! * Multipliers and ratios are plain numbers (`3`, `2.5`, `0.25`) with at
//!   most three decimal places: they compile to permille exactly.
//! * A knob left out takes its row's default ([`CompiledConfig::default`]);
//!   `examples/profiles/default.yaml` compiles to exactly the built-in
//!   config.
//! * Refused: unknown fields and observers, wrong types, values out of range,
//!   bad durations, duplicate keys, YAML tags, non-string keys, an empty
//!   document, non-UTF-8 bytes, documents over [`MAX_PROFILE_BYTES`], and more
//!   than one YAML document per file.
//!
//! Every knob maps to one [`CompiledConfig`] field and from there to one
//! field of the kernel's `struct tapio_config`; no knob parses without
//! reaching the kernel.
//!
//! Errors read `path: message`, e.g.
//! `spec.observers.storage.slow_io_threshold: must be between 1us and 60s (got 90s)`;
//! problems with the file as a whole use the path `document`.

mod compile;
mod schema;
mod tree;
mod validate;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use compile::compile;
pub use schema::{EvidenceProfile, API_VERSION, KIND, MAX_PROFILE_BYTES};
pub use validate::{validate, Issue, DOCUMENT};

use crate::wire::config::CompiledConfig;

/// Validates and compiles a profile document.
pub fn compile_bytes(bytes: &[u8]) -> Result<CompiledConfig, Vec<Issue>> {
    validate(bytes).map(|p| compile(&p))
}

/// Why a profile file could not be turned into a config.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was read but is not a valid profile.
    Invalid { path: PathBuf, issues: Vec<Issue> },
}

// Written out rather than derived: this module depends on serde alone
// (DESIGN.md, Boundaries; checked by scripts/verify-lean.sh).
impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read { path, .. } => {
                write!(f, "failed to read profile {}", path.display())
            }
            LoadError::Invalid { path, issues } => {
                write!(
                    f,
                    "invalid profile {}: {}",
                    path.display(),
                    IssueList(issues)
                )
            }
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Read { source, .. } => Some(source),
            LoadError::Invalid { .. } => None,
        }
    }
}

/// Issues joined into one line, for logs.
struct IssueList<'a>(&'a [Issue]);

impl fmt::Display for IssueList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Reads at most [`MAX_PROFILE_BYTES`] + 1 bytes, so an oversized (or
/// endless) file is refused by validation without being loaded whole.
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, LoadError> {
    let read = || -> std::io::Result<Vec<u8>> {
        // A FIFO or device would block `open` or never end: refused before
        // opening (following symlinks), as every file read from outside is.
        if !std::fs::metadata(path)?.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let file = std::fs::File::open(path)?;
        let mut bytes = Vec::new();
        file.take(MAX_PROFILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    read().map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads, validates and compiles a profile file.
pub fn load(path: &Path) -> Result<CompiledConfig, LoadError> {
    let bytes = read_bounded(path)?;
    compile_bytes(&bytes).map_err(|issues| LoadError::Invalid {
        path: path.to_owned(),
        issues,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_errors_name_the_file_and_keep_their_cause() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.yaml");
        let e = load(&missing).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("failed to read profile {}", missing.display())
        );
        let cause = std::error::Error::source(&e).expect("the io error is the source");
        let io = cause.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "apiVersion: nope\n").unwrap();
        let e = load(&bad).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("invalid profile {}: ", bad.display())),
            "{text}"
        );
        assert!(text.contains("apiVersion"), "{text}");
        assert!(std::error::Error::source(&e).is_none());
    }

    #[cfg(test)]
    mod read_tests {
        use super::*;

        #[test]
        fn a_profile_path_that_is_not_a_regular_file_is_refused_without_blocking() {
            let dir = std::env::temp_dir().join(format!("tapio-profile-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let fifo = dir.join("profile.yaml");
            let _ = std::fs::remove_file(&fifo);
            assert!(std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success());
            let e = read_bounded(&fifo).unwrap_err();
            assert!(matches!(e, LoadError::Read { .. }), "{e}");
            assert!(read_bounded(Path::new("/dev/zero")).is_err());
            assert!(read_bounded(&dir).is_err());
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
