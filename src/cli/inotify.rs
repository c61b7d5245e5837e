//! A minimal inotify watch on one directory, for `tapio watch`.
//!
//! It owns the inotify descriptor and the decoding of its event records. It
//! must not read the files it is told about (the store does) or decide what
//! is printed. Written on `libc` directly (already a dependency) rather
//! than the `inotify` crate: one directory watch is about a hundred lines,
//! and the crate would add itself, `inotify-sys` and `bitflags` to the tree
//! for no behaviour we need.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

pub use super::watch::Changes;

/// The events that can make or remove an occurrence file: the file sink
/// renames a finished temp file into place (`IN_MOVED_TO`); another writer
/// may create the file and close it after writing (`IN_CLOSE_WRITE`).
/// `IN_CREATE` is kept for entries that are never written (a FIFO, a
/// symlink, a directory), which the store must see to refuse and count.
/// `IN_DELETE`/`IN_MOVED_FROM` let the follower forget names.
/// `IN_DELETE_SELF`/`IN_MOVE_SELF` say the directory itself went away.
const MASK: u32 = libc::IN_MOVED_TO
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// An inotify instance watching one directory (non-blocking descriptor).
#[derive(Debug)]
pub struct DirWatch {
    fd: OwnedFd,
}

impl AsRawFd for DirWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl DirWatch {
    /// Watches `dir`. Fails where inotify is unavailable (not compiled in,
    /// the per-user instance or watch limit reached) or `dir` is not a
    /// directory.
    pub fn new(dir: &Path) -> std::io::Result<DirWatch> {
        let path = CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: no pointers; returns a new descriptor or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `path` is NUL-terminated and outlives the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), MASK) };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(DirWatch { fd })
    }

    /// Reads every queued event without blocking (`WouldBlock` when none).
    pub fn read(&self) -> std::io::Result<Changes> {
        // Room for many events per read; records are 16 bytes plus a
        // padded name of at most NAME_MAX + 1.
        let mut buf = vec![0u8; 64 * 1024];
        let mut changes = Changes::default();
        let mut any = false;
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.kind() {
                    std::io::ErrorKind::WouldBlock if any => Ok(changes),
                    std::io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            any = true;
            decode(&buf[..n as usize], &mut changes);
            if (n as usize) < buf.len() / 2 {
                // A short read drained the queue; do not spin for the
                // WouldBlock that would follow.
                return Ok(changes);
            }
        }
    }
}

/// Decodes a buffer of `struct inotify_event` records into `changes`.
pub fn decode(mut buf: &[u8], changes: &mut Changes) {
    const HEADER: usize = size_of::<libc::inotify_event>();
    while buf.len() >= HEADER {
        // wd (i32), mask (u32), cookie (u32), len (u32), native endian.
        let field =
            |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let mask = field(4);
        let len = field(12) as usize;
        let Some(name_bytes) = buf.get(HEADER..HEADER + len) else {
            break;
        };
        let name = name_bytes
            .split(|&b| b == 0)
            .next()
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8_lossy(n).into_owned());
        if mask & libc::IN_Q_OVERFLOW != 0 {
            changes.overflow = true;
        }
        if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
            changes.gone = true;
        }
        if let Some(name) = name {
            if mask & (libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE) != 0 {
                changes.added.push(name);
            } else if mask & libc::IN_CREATE != 0 {
                changes.created.push(name);
            } else if mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
                changes.removed.push(name);
            }
        }
        buf = &buf[HEADER + len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_changes(w: &DirWatch) -> Changes {
        // Bounded: the events of a completed rename are queued before
        // rename() returns, so the first read normally has them.
        for _ in 0..200 {
            match w.read() {
                Ok(c) => return c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no inotify events within 2 s");
    }

    #[test]
    fn reports_renames_writes_deletes_and_the_dir_going_away() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("occ");
        std::fs::create_dir(&d).unwrap();
        let w = DirWatch::new(&d).unwrap();
        assert_eq!(w.read().unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
        std::fs::write(d.join(".a.json.tmp"), "{}").unwrap();
        std::fs::rename(d.join(".a.json.tmp"), d.join("a.json")).unwrap();
        std::fs::write(d.join("b.json"), "{}").unwrap();
        std::fs::remove_file(d.join("a.json")).unwrap();
        let c = wait_changes(&w);
        // The temp file's close-write is reported too; the store ignores
        // dot-files by name.
        assert_eq!(c.added, vec![".a.json.tmp", "a.json", "b.json"]);
        assert_eq!(c.created, vec![".a.json.tmp", "b.json"]);
        // The rename moves the temp name out.
        assert_eq!(c.removed, vec![".a.json.tmp", "a.json"]);
        assert!(!c.overflow && !c.gone);
        std::fs::remove_file(d.join("b.json")).unwrap();
        std::fs::remove_dir(&d).unwrap();
        let c = wait_changes(&w);
        assert!(c.gone, "{c:?}");
    }

    /// One raw event record as the kernel lays it out.
    fn record(mask: u32, name: &str) -> Vec<u8> {
        let mut padded = name.as_bytes().to_vec();
        if !padded.is_empty() {
            padded.resize(name.len().div_ceil(16) * 16 + 16, 0);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&1i32.to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&(padded.len() as u32).to_ne_bytes());
        b.extend_from_slice(&padded);
        b
    }

    #[test]
    fn decodes_overflow_and_stops_at_a_truncated_record() {
        let mut buf = record(libc::IN_MOVED_TO, "a.json");
        buf.extend(record(libc::IN_Q_OVERFLOW, ""));
        buf.extend(record(libc::IN_DELETE, "b.json"));
        // A record cut short is not decoded (nor read past).
        let cut = record(libc::IN_MOVED_TO, "c.json");
        buf.extend_from_slice(&cut[..cut.len() - 4]);
        let mut c = Changes::default();
        decode(&buf, &mut c);
        assert_eq!(
            c,
            Changes {
                added: vec!["a.json".into()],
                created: vec![],
                removed: vec!["b.json".into()],
                overflow: true,
                gone: false,
            }
        );
    }

    #[test]
    fn a_file_is_not_a_directory_to_watch() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(
            DirWatch::new(&f).unwrap_err().raw_os_error(),
            Some(libc::ENOTDIR)
        );
    }
}
