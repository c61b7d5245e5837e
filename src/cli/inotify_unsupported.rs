//! `tapio watch` where there is no inotify (not Linux): [`DirWatch::new`]
//! always fails, so watch lists the directory on a timer instead. Owns
//! nothing else; the Linux module is `inotify.rs`.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

pub use super::watch::Changes;

/// Never constructed: there is no watch to hold.
#[derive(Debug)]
pub struct DirWatch {
    never: std::convert::Infallible,
}

impl AsRawFd for DirWatch {
    fn as_raw_fd(&self) -> RawFd {
        match self.never {}
    }
}

impl DirWatch {
    /// Always unavailable here.
    pub fn new(_dir: &Path) -> std::io::Result<DirWatch> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "inotify is Linux-only",
        ))
    }

    pub fn read(&self) -> std::io::Result<Changes> {
        match self.never {}
    }
}
