//! Bounded file reads for every file Tapio takes from outside (config,
//! tokens, BPF objects, occurrence files).
//!
//! Owns one rule (SPEC §3, "Bounded everywhere"): a file is read only if it
//! is a regular file (after following symlinks) and never past a cap, so a
//! FIFO, a device or a symlink to `/dev/zero` is refused at once instead of
//! blocking or filling memory. Must not: interpret the bytes.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Why a bounded read refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed (missing, permission denied, I/O).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A FIFO, socket, device or directory: never read.
    #[error("is not a regular file ({0})")]
    NotRegular(&'static str),
    /// Larger than the cap.
    #[error("is larger than {cap} bytes")]
    TooLarge { cap: u64 },
}

impl ReadError {
    /// A short machine label, for drop counters.
    pub fn reason(&self) -> &'static str {
        match self {
            ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => "missing",
            ReadError::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => "unreadable",
            ReadError::Io(_) => "io_error",
            ReadError::NotRegular(_) => "not_regular",
            ReadError::TooLarge { .. } => "too_large",
        }
    }
}

/// Names a file type for a refusal message.
fn kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// Reads a regular file of at most `cap` bytes.
///
/// The file is opened with `O_NONBLOCK` so opening a FIFO with no writer
/// cannot hang, and its type is checked on the opened descriptor (no race
/// between the check and the read).
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    read_open_capped(file, cap)
}

/// [`read_capped`] for an already opened file.
pub fn read_open_capped(file: File, cap: u64) -> Result<Vec<u8>, ReadError> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(kind(meta.file_type())));
    }
    if meta.len() > cap {
        return Err(ReadError::TooLarge { cap });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The size may change under us: read one byte past the cap to notice.
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge { cap });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_capped(&p, 5).unwrap(), b"hello");
        let e = read_capped(&p, 4).unwrap_err();
        assert_eq!(e.reason(), "too_large");
        assert_eq!(e.to_string(), "is larger than 4 bytes");
    }

    #[test]
    fn refuses_devices_fifos_directories_and_symlinks_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_capped(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "is not a regular file (a character device)");
        let link = dir.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert_eq!(
            read_capped(&link, 1 << 20).unwrap_err().reason(),
            "not_regular"
        );
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads one NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would hang here forever.
        assert_eq!(
            read_capped(&fifo, 10).unwrap_err().to_string(),
            "is not a regular file (a FIFO)"
        );
        assert_eq!(
            read_capped(dir.path(), 10).unwrap_err().reason(),
            "not_regular"
        );
        assert_eq!(
            read_capped(&dir.path().join("missing"), 10)
                .unwrap_err()
                .reason(),
            "missing"
        );
    }
}
