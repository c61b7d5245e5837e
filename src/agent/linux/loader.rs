//! Opens, loads and attaches the BPF objects, one per observer.
//!
//! Objects from `--ebpf-dir` are read bounded (regular files of at most
//! [`MAX_OBJECT_BYTES`]), so a path to a device or FIFO fails at once with
//! the path in the reason. libbpf's own error codes (4000 and up, which the
//! OS would print as "Unknown error 4001") are translated into libbpf's
//! words before they reach a log line or a status reason.

use std::path::Path;

use anyhow::Context;
use libbpf_rs::{Link, MapCore, MapFlags, Object, ObjectBuilder};

use crate::agent::abi::{TapioConfig, STAT_MAX};
use crate::wire::Observer;

/// Largest BPF object read from `--ebpf-dir` (ours are well under 1 MiB).
pub const MAX_OBJECT_BYTES: u64 = 8 << 20;

/// libbpf's private error codes: LIBBPF_ERRNO__START .. a margin past the
/// last one it defines.
const LIBBPF_ERRNO_RANGE: std::ops::Range<i32> = 4000..4100;

/// A libbpf error as one line, with libbpf's own description of its private
/// codes instead of the OS's "Unknown error N".
pub fn describe_libbpf_error(e: &libbpf_rs::Error) -> String {
    let text = format!("{e:#}");
    let Some(code) = text
        .split("os error ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<i32>().ok())
        .filter(|c| LIBBPF_ERRNO_RANGE.contains(c))
    else {
        return text;
    };
    let mut buf = [0 as std::ffi::c_char; 128];
    // SAFETY: libbpf_strerror writes at most `size` bytes, NUL-terminated,
    // into the buffer it is given.
    let rc =
        unsafe { libbpf_rs::libbpf_sys::libbpf_strerror(code, buf.as_mut_ptr(), buf.len() as _) };
    if rc != 0 {
        return text;
    }
    // SAFETY: on success the buffer holds a NUL-terminated string.
    let words = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    let unknown = format!("Unknown error {code} (os error {code})");
    if text.contains(&unknown) {
        text.replace(&unknown, &format!("{words} (libbpf error {code})"))
    } else {
        format!("{text} ({words})")
    }
}

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/bpf_objects.rs"));
}

/// The compiled objects built into this binary, by observer name.
pub fn embedded_objects() -> &'static [(&'static str, &'static [u8])] {
    embedded::OBJECTS
}

/// One observer's loaded object and its live attachments.
pub struct LoadedObject {
    pub observer: Observer,
    pub obj: Object,
    pub links: Vec<Link>,
    /// Programs that failed to attach, with libbpf's error.
    pub failed: Vec<(String, String)>,
}

impl LoadedObject {
    fn map(&self, name: &str) -> anyhow::Result<libbpf_rs::Map<'_>> {
        self.obj
            .maps()
            .find(|m| m.name() == name)
            .with_context(|| format!("object {} has no map {name}", self.observer.as_str()))
    }

    /// Writes the config carrier. The ignore-list entries go in before their
    /// count (SPEC §4), so a program never reads a count ahead of its entries.
    pub fn write_config(&self, cfg: &TapioConfig) -> anyhow::Result<()> {
        let map = self.map("tapio_config")?;
        let key = 0u32.to_ne_bytes();
        if cfg.ctr_ignore_exit_codes_count > 0 {
            let staged = TapioConfig {
                ctr_ignore_exit_codes_count: 0,
                ..*cfg
            };
            map.update(&key, &staged.to_bytes(), MapFlags::ANY)?;
        }
        map.update(&key, &cfg.to_bytes(), MapFlags::ANY)
            .with_context(|| {
                format!(
                    "failed to write config to the {} object",
                    self.observer.as_str()
                )
            })
    }

    /// Each program's counters as the kernel keeps them: run count and
    /// total run time (ns) while `kernel.bpf_stats_enabled` is 1 (zeros
    /// otherwise), and always the runs it skipped.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        use std::os::fd::{AsFd, AsRawFd};
        let mut out = Vec::new();
        for prog in self.obj.progs() {
            let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
            let mut len = size_of_val(&info) as u32;
            // SAFETY: the fd belongs to a loaded program that outlives this
            // call; info/len describe a correctly sized, writable struct.
            let rc = unsafe {
                libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(
                    prog.as_fd().as_raw_fd(),
                    &mut info,
                    &mut len,
                )
            };
            if rc == 0 {
                out.push(ProgramStats {
                    program: prog.name().to_string_lossy().into_owned(),
                    runs: info.run_cnt,
                    run_ns: info.run_time_ns,
                    missed: info.recursion_misses,
                });
            }
        }
        out
    }

    /// Sums the per-CPU counters of `tapio_stats`.
    pub fn read_stats(&self) -> anyhow::Result<[u64; STAT_MAX]> {
        let map = self.map("tapio_stats")?;
        let mut out = [0u64; STAT_MAX];
        for (i, slot) in out.iter_mut().enumerate() {
            let key = (i as u32).to_ne_bytes();
            if let Some(per_cpu) = map.lookup_percpu(&key, MapFlags::ANY)? {
                *slot = per_cpu
                    .iter()
                    .filter(|v| v.len() >= 8)
                    .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap_or([0; 8])))
                    .sum();
            }
        }
        Ok(out)
    }
}

/// A program's name and its kernel-kept counters (`bpf_prog_info`).
#[derive(Clone, Debug)]
pub struct ProgramStats {
    pub program: String,
    pub runs: u64,
    pub run_ns: u64,
    /// Runs the kernel skipped because this program was already running on
    /// that CPU (`recursion_misses`): a tracepoint hit in an interrupt
    /// while the same program ran in the interrupted context. The fact
    /// is gone before Tapio sees it; this count is all that is left.
    pub missed: u64,
}

/// Opens and loads one object from bytes, then attaches each program on its
/// own. Errors only when the object cannot be loaded at all.
pub fn load_object(observer: Observer, bytes: &[u8]) -> anyhow::Result<LoadedObject> {
    let open = ObjectBuilder::default().open_memory(bytes).map_err(|e| {
        anyhow::anyhow!(
            "failed to open the {} BPF object: {}",
            observer.as_str(),
            describe_libbpf_error(&e)
        )
    })?;
    let obj = open.load().map_err(|e| {
        anyhow::anyhow!(
            "failed to load the {} BPF object: {}",
            observer.as_str(),
            describe_libbpf_error(&e)
        )
    })?;
    let mut links = Vec::new();
    let mut failed = Vec::new();
    for prog in obj.progs_mut() {
        let name = prog.name().to_string_lossy().into_owned();
        match prog.attach() {
            Ok(link) => links.push(link),
            Err(e) => {
                let why = describe_libbpf_error(&e);
                tracing::warn!(observer = observer.as_str(), program = %name, "failed to attach: {why}");
                failed.push((name, why));
            }
        }
    }
    Ok(LoadedObject {
        observer,
        obj,
        links,
        failed,
    })
}

/// The bytes of every object to load: embedded, or `<dir>/<name>.bpf.o`.
pub fn object_sources(ebpf_dir: Option<&Path>) -> Vec<(Observer, Result<Vec<u8>, String>)> {
    let mut v = Vec::new();
    for (name, bytes) in embedded_objects() {
        let Some(observer) = Observer::parse(name) else {
            tracing::warn!("ignoring BPF object {name}: no observer of that name");
            continue;
        };
        let src = match ebpf_dir {
            None => Ok(bytes.to_vec()),
            Some(dir) => {
                let path = dir.join(format!("{name}.bpf.o"));
                crate::fsutil::read_capped(&path, MAX_OBJECT_BYTES)
                    .map_err(|e| format!("failed to read BPF object {}: {e}", path.display()))
            }
        };
        v.push((observer, src));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use libbpf_rs::ErrorExt;

    /// Every ring observer of the list has its object built in (from its
    /// folder's `<name>.bpf.c`, named for it: the `--ebpf-dir` file name
    /// too), and every object is a ring observer's. An observer added to
    /// the list without its BPF source, or a source without its line,
    /// fails here.
    #[test]
    fn every_ring_observer_has_its_object() {
        let mut objects: Vec<&str> = embedded_objects().iter().map(|(n, _)| *n).collect();
        objects.sort_unstable();
        let mut ring: Vec<&str> = crate::agent::observers::RING
            .iter()
            .map(|o| o.as_str())
            .collect();
        ring.sort_unstable();
        assert_eq!(objects, ring);
        let dir = Path::new("/nonexistent-ebpf-dir");
        for (observer, src) in object_sources(Some(dir)) {
            let Err(why) = src else {
                panic!("{observer:?} read from a missing dir")
            };
            let want = format!("/nonexistent-ebpf-dir/{}.bpf.o", observer.as_str());
            assert!(why.contains(&want), "{why}");
        }
    }

    #[test]
    fn libbpf_codes_are_described_in_words_and_causes_printed_once() {
        let e = libbpf_rs::Error::from_raw_os_error(4001);
        assert_eq!(
            describe_libbpf_error(&e),
            "BPF object format invalid (libbpf error 4001)"
        );
        let e = libbpf_rs::Error::from_raw_os_error(4007).context("failed to load object");
        let text = describe_libbpf_error(&e);
        assert!(text.starts_with("failed to load object: "), "{text}");
        assert!(text.ends_with("(libbpf error 4007)"), "{text}");
        assert!(!text.contains("Unknown error"), "{text}");
        // An ordinary errno stays as the OS says it, once.
        let e = libbpf_rs::Error::from_raw_os_error(libc::EPERM).context("load failed");
        let text = describe_libbpf_error(&e);
        assert_eq!(text, "load failed: Operation not permitted (os error 1)");
        let wrapped = format!(
            "{:#}",
            anyhow::anyhow!("failed to load the network BPF object: {text}")
        );
        assert_eq!(wrapped.matches("Operation not permitted").count(), 1);
    }
}
