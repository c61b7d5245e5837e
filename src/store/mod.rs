//! The occurrence store: reads what the agent's file sink wrote, for the CLI
//! (`status`, `recent`, `watch`, `health`) and the MCP server.
//!
//! It owns the on-disk reading rules and the query semantics. It must not
//! write, rename or delete anything in the data dir, talk to a running agent,
//! read the clock (callers pass "now"), or print: it returns data and counts,
//! and the callers decide how to show them.
//!
//! # Layout it reads
//!
//! The file sink writes one occurrence per file, `<data-dir>/<ULID>.json`,
//! via a temp file `.<ULID>.json.tmp` renamed into place. So:
//!
//! * `*.json` files are read and parsed as occurrences, each through
//!   [`crate::fsutil::read_capped`]: opened non-blocking, type-checked on the
//!   open descriptor, never read past [`MAX_OCCURRENCE_BYTES`]. A file that
//!   cannot be used is **skipped and counted** by reason (see [`Skipped`]):
//!   `corrupt` (read, but partial, not JSON, not an occurrence, no usable
//!   time), `unreadable` (open or read failed: permissions, I/O),
//!   `not_regular` (a FIFO, socket, device or directory, or a symlink to one:
//!   never read, so a FIFO with no writer cannot hang a reader and a symlink
//!   to `/dev/zero` cannot fill memory), `too_large` (over the cap; an
//!   occurrence is well under 1 KiB).
//! * Dot-files are ignored, not counted: `.<ULID>.json.tmp` is a write in
//!   progress, `.agent-status.json` is the agent's status file (read by
//!   [`agent_status`], not as an occurrence).
//! * Anything else (other names, non-UTF-8 names) is **counted as `foreign`**.
//! * A missing data dir is an empty store (`exists: false`); callers say so.
//!   A data dir that exists but cannot be listed is an error.
//!
//! # Query semantics
//!
//! * An occurrence's time is `data.timestamp_ns` (the kernel fact), falling
//!   back to its RFC 3339 `timestamp`.
//! * Results are newest first (time, then id, descending); `limit` keeps the
//!   newest N. A page continues after a [`filter::Cursor`] (the last
//!   `(time, id)` returned), so facts written meanwhile never shift a page.
//! * `recent` reads every match (to say "N of M" and to summarise them);
//!   [`Store::query`] with a limit can stop early instead (below).
//! * Speed for large dirs comes from the names: the agent mints each ULID
//!   from the fact's wall-clock time (monotonic, so never earlier than the
//!   fact's millisecond), so files whose ULID time is more than
//!   [`filter::ULID_SLACK_NS`] (1 h, room for other writers) older than
//!   `since` are not opened, and a limited query reading names newest-first stops as soon
//!   as no older name can beat the N it holds. Files that are not opened are
//!   not checked either: the skip counts (except `foreign`) cover files that
//!   were opened.
//!
//! The pure parts (name rules, filters, ordering, `--since`, the health rule)
//! live in [`filter`] and [`summary`] and are tested with tables.

pub mod agent_status;
pub mod filter;
pub mod report;
pub mod summary;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::wire::Occurrence;
use filter::{classify_name, fact_time_ns, ulid_before, Filter, NameKind, TopN};

/// Default data dir, relative to the working directory (as the file sink's).
pub const DEFAULT_DATA_DIR: &str = ".tapio/occurrences";
/// Full scans read files on at most this many threads.
pub const MAX_READERS: usize = 4;
/// Below this many files a scan stays on one thread.
const PARALLEL_MIN_FILES: usize = 512;
/// The largest occurrence file read. The file sink writes well under 1 KiB
/// per occurrence; the cap only has to stop a reader from swallowing a
/// huge or endless file (a symlink to `/dev/zero`, a stray dump).
pub const MAX_OCCURRENCE_BYTES: u64 = 64 * 1024;

/// A store failure: the data dir itself could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data dir exists but could not be listed.
    #[error("failed to list data dir {path}: {source}")]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The data dir path names something that is not a directory.
    #[error("failed to open data dir {path}: not a directory")]
    NotADirectory { path: PathBuf },
}

/// One occurrence read from disk, with its fact time resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub occurrence: Occurrence,
    pub ts_ns: u64,
}

/// Entries skipped instead of returned, by reason (module docs). The JSON
/// field names are stable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// `*.json` files that were read and could not be used.
    pub corrupt: u64,
    /// `*.json` files that could not be opened or read.
    pub unreadable: u64,
    /// `*.json` entries that are not regular files (after following
    /// symlinks): never read.
    pub not_regular: u64,
    /// `*.json` files larger than [`MAX_OCCURRENCE_BYTES`]: never read.
    pub too_large: u64,
    /// Entries that are not occurrence files at all.
    pub foreign: u64,
}

/// Why one occurrence file was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Corrupt,
    Unreadable,
    NotRegular,
    TooLarge,
}

impl Skipped {
    pub fn total(&self) -> u64 {
        self.corrupt + self.unreadable + self.not_regular + self.too_large + self.foreign
    }

    /// Counts one skipped file.
    pub fn count(&mut self, reason: SkipReason) {
        match reason {
            SkipReason::Corrupt => self.corrupt += 1,
            SkipReason::Unreadable => self.unreadable += 1,
            SkipReason::NotRegular => self.not_regular += 1,
            SkipReason::TooLarge => self.too_large += 1,
        }
    }

    /// The non-zero counts as `2 corrupt, 1 not regular`; empty when
    /// nothing was skipped.
    pub fn describe(&self) -> String {
        [
            (self.corrupt, "corrupt"),
            (self.unreadable, "unreadable"),
            (self.not_regular, "not regular"),
            (self.too_large, "too large"),
            (self.foreign, "foreign"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
    }

    fn add(&mut self, other: Skipped) {
        self.corrupt += other.corrupt;
        self.unreadable += other.unreadable;
        self.not_regular += other.not_regular;
        self.too_large += other.too_large;
        self.foreign += other.foreign;
    }
}

/// What reading one listed file gave.
#[allow(
    clippy::large_enum_variant,
    reason = "the record is the common case and is moved out at once; boxing it would allocate per file"
)]
enum ReadOutcome {
    Record(Record),
    /// Deleted since the listing (a retention job): not an error.
    Vanished,
    Skip(SkipReason),
}

/// What a scan saw besides the records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanInfo {
    /// Whether the data dir exists.
    pub exists: bool,
    pub skipped: Skipped,
    /// Occurrence files opened (the rest were ruled out by name).
    pub opened: u64,
    /// Occurrence-named entries in the dir, opened or not.
    pub listed: u64,
}

/// The result of [`Store::query`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// Newest first.
    pub records: Vec<Record>,
    pub info: ScanInfo,
}

/// A data dir of occurrence files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Parses one file's bytes. `None` when they are not a usable occurrence.
pub fn parse_record(bytes: &[u8]) -> Option<Record> {
    let occurrence: Occurrence = serde_json::from_slice(bytes).ok()?;
    let ts_ns = fact_time_ns(&occurrence)?;
    Some(Record { occurrence, ts_ns })
}

/// An occurrence file name and its ULID time (ns), when it is a ULID.
type FileName = (String, Option<u64>);

struct Listing {
    /// Occurrence file names with their ULID time.
    files: Vec<FileName>,
    foreign: u64,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Lists the dir; `None` when it does not exist.
    fn list(&self) -> Result<Option<Listing>, StoreError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(StoreError::NotADirectory {
                    path: self.dir.clone(),
                })
            }
            Err(source) => {
                return Err(StoreError::List {
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut listing = Listing {
            files: Vec::new(),
            foreign: 0,
        };
        for entry in rd {
            let entry = entry.map_err(|source| StoreError::List {
                path: self.dir.clone(),
                source,
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                listing.foreign += 1;
                continue;
            };
            match classify_name(&name) {
                NameKind::Ignored => {}
                NameKind::Foreign => listing.foreign += 1,
                // Whatever its type: a FIFO, a directory or a symlink is
                // refused (and counted) when read, on the open descriptor.
                NameKind::Occurrence { ulid_ns } => listing.files.push((name, ulid_ns)),
            }
        }
        Ok(Some(listing))
    }

    /// Reads and parses one listed file, bounded (module docs).
    fn read(&self, name: &str) -> ReadOutcome {
        use crate::fsutil::ReadError;
        let bytes = match crate::fsutil::read_capped(&self.dir.join(name), MAX_OCCURRENCE_BYTES) {
            Ok(b) => b,
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return ReadOutcome::Vanished
            }
            // A unix socket refuses open() with ENXIO: it is a special file,
            // not a permissions problem.
            Err(ReadError::Io(e)) if e.raw_os_error() == Some(libc::ENXIO) => {
                return ReadOutcome::Skip(SkipReason::NotRegular)
            }
            Err(ReadError::Io(_)) => return ReadOutcome::Skip(SkipReason::Unreadable),
            Err(ReadError::NotRegular(_)) => return ReadOutcome::Skip(SkipReason::NotRegular),
            Err(ReadError::TooLarge { .. }) => return ReadOutcome::Skip(SkipReason::TooLarge),
        };
        match parse_record(&bytes) {
            Some(rec) => ReadOutcome::Record(rec),
            None => ReadOutcome::Skip(SkipReason::Corrupt),
        }
    }

    /// Visits every record that passes `filter`, in no particular order.
    /// Memory stays flat however many files there are; files are read on up
    /// to [`MAX_READERS`] threads.
    pub fn scan(
        &self,
        filter: &Filter,
        mut visit: impl FnMut(Record),
    ) -> Result<ScanInfo, StoreError> {
        let Some((files, mut info)) = self.candidates(filter)? else {
            return Ok(ScanInfo::default());
        };
        self.read_parallel(&files, filter, &mut visit, &mut info);
        Ok(info)
    }

    /// Lists the dir and orders the files worth opening for `filter`: names
    /// that are not ULIDs first (they have no time), then ULIDs newest first.
    fn candidates(&self, filter: &Filter) -> Result<Option<(Vec<FileName>, ScanInfo)>, StoreError> {
        let Some(mut listing) = self.list()? else {
            return Ok(None);
        };
        let mut info = ScanInfo {
            exists: true,
            ..ScanInfo::default()
        };
        info.skipped.foreign = listing.foreign;
        info.listed = listing.files.len() as u64;
        if let Some(since) = filter.since_ns {
            listing.files.retain(|(_, u)| !ulid_before(*u, since));
        }
        listing.files.sort_unstable_by(|a, b| match (a.1, b.1) {
            (None, None) => a.0.cmp(&b.0),
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(_), Some(_)) => b.0.cmp(&a.0),
        });
        Ok(Some((listing.files, info)))
    }

    /// Reads `files` in order on this thread; `visit` returns a floor (ns)
    /// below which nothing more is wanted, which ends the read early.
    fn read_ordered(
        &self,
        files: &[FileName],
        filter: &Filter,
        visit: &mut dyn FnMut(Record) -> Option<u64>,
        info: &mut ScanInfo,
    ) {
        let mut floor: Option<u64> = None;
        for (name, ulid_ns) in files {
            if let Some(f) = floor {
                if ulid_before(*ulid_ns, f) {
                    break;
                }
            }
            info.opened += 1;
            match self.read(name) {
                ReadOutcome::Record(rec) => {
                    if filter.matches(&rec.occurrence, rec.ts_ns) {
                        if let Some(f) = visit(rec) {
                            floor = Some(f);
                        }
                    }
                }
                ReadOutcome::Vanished => {}
                ReadOutcome::Skip(why) => info.skipped.count(why),
            }
        }
    }

    /// Reads all of `files` on several threads (open, read and parse are
    /// the cost); `visit` runs on this thread, in no particular order.
    fn read_parallel(
        &self,
        files: &[FileName],
        filter: &Filter,
        visit: &mut dyn FnMut(Record),
        info: &mut ScanInfo,
    ) {
        let readers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_READERS);
        if readers < 2 || files.len() < PARALLEL_MIN_FILES {
            self.read_ordered(
                files,
                filter,
                &mut |r| {
                    visit(r);
                    None
                },
                info,
            );
            return;
        }
        let chunk = files.len().div_ceil(readers);
        let skipped: Skipped = std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(1024);
            let workers: Vec<_> = files
                .chunks(chunk)
                .map(|part| {
                    let tx = tx.clone();
                    s.spawn(move || {
                        let mut skipped = Skipped::default();
                        for (name, _) in part {
                            match self.read(name) {
                                ReadOutcome::Record(rec) => {
                                    if filter.matches(&rec.occurrence, rec.ts_ns)
                                        && tx.send(rec).is_err()
                                    {
                                        break;
                                    }
                                }
                                ReadOutcome::Vanished => {}
                                ReadOutcome::Skip(why) => skipped.count(why),
                            }
                        }
                        skipped
                    })
                })
                .collect();
            drop(tx);
            for rec in rx {
                visit(rec);
            }
            let mut skipped = Skipped::default();
            for w in workers {
                skipped.add(w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            skipped
        });
        info.opened += files.len() as u64;
        info.skipped.add(skipped);
    }

    /// The newest `limit` records (all with `None`) passing `filter`, newest
    /// first.
    pub fn query(&self, filter: &Filter, limit: Option<usize>) -> Result<QueryResult, StoreError> {
        let Some((files, mut info)) = self.candidates(filter)? else {
            return Ok(QueryResult {
                records: Vec::new(),
                info: ScanInfo::default(),
            });
        };
        let mut top = TopN::new(limit);
        if limit.is_some() {
            // In name order, so the scan can stop once nothing older can
            // enter the top N.
            self.read_ordered(
                &files,
                filter,
                &mut |rec| {
                    let id = rec.occurrence.id.clone();
                    top.push(rec.ts_ns, id, rec);
                    top.floor_ns()
                },
                &mut info,
            );
        } else {
            self.read_parallel(
                &files,
                filter,
                &mut |rec| {
                    let id = rec.occurrence.id.clone();
                    top.push(rec.ts_ns, id, rec);
                },
                &mut info,
            );
        }
        Ok(QueryResult {
            records: top.into_sorted(),
            info,
        })
    }

    /// Starts following the dir: files present now are not reported.
    pub fn follow(&self) -> Result<Follower, StoreError> {
        // Foreign entries present now are not "new" either.
        let (seen, foreign_seen) = match self.list()? {
            Some(l) => (l.files.into_iter().map(|(n, _)| n).collect(), l.foreign),
            None => (HashSet::new(), 0),
        };
        Ok(Follower {
            store: self.clone(),
            seen,
            foreign_seen,
        })
    }
}

/// Reports files that appear after it started (see [`Store::follow`]).
#[derive(Debug)]
pub struct Follower {
    store: Store,
    seen: HashSet<String>,
    foreign_seen: u64,
}

/// One poll's outcome.
#[derive(Debug, Default)]
pub struct Poll {
    /// Whether the data dir exists.
    pub exists: bool,
    /// New records passing the filter, oldest name first.
    pub records: Vec<Record>,
    /// New skipped entries since the previous poll.
    pub skipped: Skipped,
}

impl Follower {
    /// Lists the dir and reads the files not seen before. Files deleted
    /// meanwhile are forgotten, so memory follows the dir's size.
    pub fn poll(&mut self, filter: &Filter) -> Result<Poll, StoreError> {
        let Some(listing) = self.store.list()? else {
            self.seen.clear();
            return Ok(Poll::default());
        };
        let mut poll = Poll {
            exists: true,
            ..Poll::default()
        };
        let mut skipped = Skipped::default();
        if listing.foreign > self.foreign_seen {
            skipped.foreign = listing.foreign - self.foreign_seen;
        }
        self.foreign_seen = listing.foreign;
        let mut current: HashSet<String> = HashSet::with_capacity(listing.files.len());
        let mut fresh: Vec<String> = Vec::new();
        for (name, _) in listing.files {
            if !self.seen.contains(&name) {
                fresh.push(name.clone());
            }
            current.insert(name);
        }
        self.seen = current;
        fresh.sort_unstable();
        for name in fresh {
            match self.store.read(&name) {
                ReadOutcome::Record(rec) => {
                    if filter.matches(&rec.occurrence, rec.ts_ns) {
                        poll.records.push(rec);
                    }
                }
                ReadOutcome::Vanished => {}
                ReadOutcome::Skip(why) => skipped.count(why),
            }
        }
        poll.skipped.add(skipped);
        Ok(poll)
    }

    /// Reads the named entries (from change notifications) that were not
    /// reported before, without listing the dir: with 50,000 files a
    /// listing per change is what made polling cost a sixth of a core.
    /// `gone` are names deleted meanwhile, forgotten so memory follows the
    /// dir. Names the store ignores (temp files, the status file) are
    /// skipped silently, foreign ones counted.
    pub fn poll_names(&mut self, filter: &Filter, names: &[String], gone: &[String]) -> Poll {
        for name in gone {
            self.seen.remove(name);
        }
        let mut poll = Poll {
            exists: true,
            ..Poll::default()
        };
        let mut fresh: Vec<&String> = Vec::new();
        for name in names {
            match classify_name(name) {
                NameKind::Ignored => {}
                NameKind::Foreign => {
                    if self.seen.insert(name.clone()) {
                        self.foreign_seen += 1;
                        poll.skipped.foreign += 1;
                    }
                }
                NameKind::Occurrence { .. } => {
                    if self.seen.insert(name.clone()) {
                        fresh.push(name);
                    }
                }
            }
        }
        fresh.sort_unstable();
        for name in fresh {
            match self.store.read(name) {
                ReadOutcome::Record(rec) => {
                    if filter.matches(&rec.occurrence, rec.ts_ns) {
                        poll.records.push(rec);
                    }
                }
                ReadOutcome::Vanished => {
                    self.seen.remove(name);
                }
                ReadOutcome::Skip(why) => poll.skipped.count(why),
            }
        }
        poll
    }
}

/// A test occurrence for the pure modules' tables: the fields their rules
/// read are arguments, the rest fixed.
#[cfg(test)]
fn test_occurrence(
    id: &str,
    kind: &str,
    severity: crate::wire::Severity,
    ts_ns: u64,
    data: serde_json::Map<String, serde_json::Value>,
) -> Occurrence {
    Occurrence {
        id: id.into(),
        timestamp: crate::wire::time::format_rfc3339_millis(ts_ns),
        source: "tapio".into(),
        kind: kind.into(),
        protocol_version: "1.0".into(),
        severity,
        outcome: crate::wire::Outcome::Failure,
        error: crate::wire::ErrorInfo {
            code: "X".into(),
            message: "m".into(),
        },
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Observer;

    const T0: u64 = 1_743_691_381_042_000_000;
    const S: u64 = 1_000_000_000;

    /// Writes an occurrence file named by a ULID whose time is the fact's.
    fn write(dir: &Path, kind: &str, severity: &str, ts_ns: u64, n: u128) -> String {
        let id = ulid::Ulid::from_parts(ts_ns / 1_000_000, n).to_string();
        let text = format!(
            r#"{{"id":"{id}","timestamp":"{}","source":"tapio","type":"{kind}","protocol_version":"1.0","severity":"{severity}","outcome":"failure","error":{{"code":"X","message":"m{n}"}},"data":{{"config_generation":1,"timestamp_ns":{ts_ns}}}}}"#,
            crate::wire::time::format_rfc3339_millis(ts_ns)
        );
        std::fs::write(dir.join(format!("{id}.json")), text).unwrap();
        id
    }

    #[test]
    fn missing_dir_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("nope"));
        let r = store.query(&Filter::default(), None).unwrap();
        assert!(!r.info.exists);
        assert!(r.records.is_empty());
    }

    #[test]
    fn file_as_dir_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("file");
        std::fs::write(&f, "x").unwrap();
        let err = Store::new(&f).query(&Filter::default(), None).unwrap_err();
        assert!(
            err.to_string().starts_with("failed to open data dir"),
            "{err}"
        );
    }

    /// Makes a FIFO at `path` (no writer: a blocking open would hang).
    pub(crate) fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads one NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// Runs `f` on a thread and fails the test if it does not finish within
    /// 30 s: what these tests guard against is a reader that hangs (on a
    /// FIFO) or reads forever (from /dev/zero), and a hang must fail, not
    /// stall the suite.
    fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("store read did not finish within 30 s")
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/store.rs`): without correctly
    /// rounded float parsing, a number in a file came out of
    /// `recent --json`/MCP as a different number (4.2777769999999995e72
    /// here), and that output parsed back as yet another one.
    #[test]
    fn numbers_survive_a_rewrite() {
        let file = r#"{"id":"01JQY0DM750000000000000002","timestamp":"2025-04-03T14:21:00.000Z",
            "source":"tapio","type":"kernel.network.connection_timeout","protocol_version":"1.0",
            "severity":"warning","outcome":"failure",
            "error":{"code":"CONNECTION_TIMEOUT","message":"connect to 10.0.0.7:443 timed out"},
            "data":{"pid":4277777000000000000000000000000000000000000000000000004099276460824344734,
                    "ratio":0.30000000000000004,"timestamp_ns":1743690060000000000}}"#;
        let rec = parse_record(file.as_bytes()).unwrap();
        assert_eq!(rec.occurrence.data["pid"].as_f64(), Some(4.277777e72));
        assert_eq!(rec.occurrence.data["ratio"].as_f64(), Some(0.1 + 0.2));
        let rewritten = serde_json::to_vec(&rec.occurrence).unwrap();
        assert_eq!(parse_record(&rewritten), Some(rec));
    }

    #[test]
    fn skips_and_counts_bad_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let a = write(d, "kernel.container.oom_kill", "critical", T0, 1);
        let b = write(d, "kernel.network.connection_refused", "warning", T0 + S, 2);
        std::fs::write(d.join("partial.json"), r#"{"id":"01J"#).unwrap();
        std::fs::write(d.join("foreign-value.json"), r#"[1,2,3]"#).unwrap();
        std::fs::write(d.join("notes.txt"), "hello").unwrap();
        std::fs::write(d.join(".01JA1B2C3D4E5F6G7H8J9K0M1N.json.tmp"), "{").unwrap();
        std::fs::write(d.join(".agent-status.json"), "{}").unwrap();
        std::fs::create_dir(d.join("sub.json")).unwrap();
        mkfifo(&d.join("01JQY0HADQ0000000000000009.json"));
        std::os::unix::fs::symlink("/dev/zero", d.join("zero.json")).unwrap();
        // A symlink loop cannot be opened (ELOOP), even by root.
        std::os::unix::fs::symlink("loop.json", d.join("loop.json")).unwrap();
        // Sparse: a 200 MB file that costs nothing to make and must not be
        // read.
        let big = std::fs::File::create(d.join("big.json")).unwrap();
        big.set_len(200 << 20).unwrap();
        // Just at the cap is still read (and here corrupt: all spaces).
        std::fs::write(
            d.join("at-cap.json"),
            vec![b' '; MAX_OCCURRENCE_BYTES as usize],
        )
        .unwrap();
        let store = Store::new(d);
        let r = bounded(move || store.query(&Filter::default(), None).unwrap());
        let ids: Vec<&str> = r.records.iter().map(|r| r.occurrence.id.as_str()).collect();
        assert_eq!(ids, vec![b.as_str(), a.as_str()]);
        let want = Skipped {
            corrupt: 3,
            unreadable: 1,
            not_regular: 3,
            too_large: 1,
            foreign: 1,
        };
        assert_eq!(r.info.skipped, want);
        assert_eq!(r.info.listed, 10);
        assert_eq!(
            want.describe(),
            "3 corrupt, 1 unreadable, 3 not regular, 1 too large, 1 foreign"
        );
        assert_eq!(Skipped::default().describe(), "");

        // The same through a limited query, the scan and a follower.
        let store = Store::new(d);
        let r = bounded(move || store.query(&Filter::default(), Some(1)).unwrap());
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.info.skipped.not_regular, 3);
        let store = Store::new(d);
        let info = bounded(move || store.scan(&Filter::default(), |_| {}).unwrap());
        assert_eq!(info.skipped, want);
        let mut f = Store::new(d).follow().unwrap();
        mkfifo(&d.join("01JQY0HADQ000000000000000A.json"));
        let p = bounded(move || f.poll(&Filter::default()).unwrap());
        assert_eq!(p.skipped.not_regular, 1);
        assert_eq!(p.skipped.total(), 1);
    }

    #[test]
    fn limit_and_filters() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let mut ids = Vec::new();
        for i in 0..20u64 {
            let kind = if i % 2 == 0 {
                "kernel.network.connection_refused"
            } else {
                "kernel.storage.io_error"
            };
            ids.push(write(d, kind, "warning", T0 + i * S, i as u128));
        }
        let store = Store::new(d);
        let r = store.query(&Filter::default(), Some(3)).unwrap();
        let got: Vec<&str> = r.records.iter().map(|r| r.occurrence.id.as_str()).collect();
        assert_eq!(got, vec![&ids[19], &ids[18], &ids[17]]);

        let f = Filter {
            observers: vec![Observer::Network],
            since_ns: Some(T0 + 10 * S),
            ..Filter::default()
        };
        let r = store.query(&f, None).unwrap();
        let got: Vec<&str> = r.records.iter().map(|r| r.occurrence.id.as_str()).collect();
        assert_eq!(got, vec![&ids[18], &ids[16], &ids[14], &ids[12], &ids[10]]);
    }

    #[test]
    fn limited_query_stops_early_on_old_names() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        // Ten files spread over ten hours; asking for the newest two must not
        // open the ones more than the slack older than those two.
        for i in 0..10u64 {
            write(d, "kernel.storage.io_error", "error", T0 + i * 3_600 * S, 0);
        }
        let r = Store::new(d).query(&Filter::default(), Some(2)).unwrap();
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.records[0].ts_ns, T0 + 9 * 3_600 * S);
        assert!(r.info.opened <= 4, "opened {}", r.info.opened);

        // And a window prunes by name before opening.
        let f = Filter {
            since_ns: Some(T0 + 8 * 3_600 * S),
            ..Filter::default()
        };
        let r = Store::new(d).query(&f, None).unwrap();
        assert_eq!(r.records.len(), 2);
        assert!(r.info.opened <= 3, "opened {}", r.info.opened);
    }

    #[test]
    fn late_named_file_is_still_found() {
        // A ULID minted after the fact (the normal case) never hides it.
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "kernel.storage.io_error", "error", T0, 0);
        let late = ulid::Ulid::from_parts((T0 + 600 * S) / 1_000_000, 7).to_string();
        let text = std::fs::read_to_string(
            std::fs::read_dir(d)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap();
        std::fs::write(
            d.join(format!("{late}.json")),
            text.replace("\"m0\"", "\"late\""),
        )
        .unwrap();
        let r = Store::new(d).query(&Filter::default(), Some(1)).unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.info.opened, 2);
    }

    #[test]
    fn large_scans_read_in_parallel_with_the_same_answer() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let n = PARALLEL_MIN_FILES as u64 + 100;
        for i in 0..n {
            write(d, "kernel.storage.io_error", "error", T0 + i * S, i as u128);
        }
        for i in 0..7 {
            std::fs::write(d.join(format!("bad{i}.json")), "{").unwrap();
        }
        let store = Store::new(d);
        let mut seen = 0u64;
        let info = store.scan(&Filter::default(), |_| seen += 1).unwrap();
        assert_eq!(seen, n);
        assert_eq!(info.skipped.corrupt, 7);
        assert_eq!(info.opened, n + 7);
        let all = store.query(&Filter::default(), None).unwrap();
        assert_eq!(all.records.len() as u64, n);
        assert_eq!(all.records[0].ts_ns, T0 + (n - 1) * S);
        assert!(all.records.windows(2).all(|w| w[0].ts_ns > w[1].ts_ns));
        let top = store.query(&Filter::default(), Some(5)).unwrap();
        assert_eq!(top.records[..], all.records[..5]);
    }

    #[test]
    fn follower_reads_only_the_names_it_is_given_once() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let old = write(d, "kernel.storage.io_error", "error", T0, 0);
        let mut f = Store::new(d).follow().unwrap();
        let a = write(d, "kernel.container.oom_kill", "critical", T0 + S, 1);
        let b = write(
            d,
            "kernel.network.connection_refused",
            "warning",
            T0 + 2 * S,
            2,
        );
        std::fs::write(d.join("notes.txt"), "x").unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let file = |id: &str| format!("{id}.json");
        // Present at start: not new even when named. A temp name is ignored.
        let p = f.poll_names(
            &Filter::default(),
            &names(&[
                &file(&b),
                &file(&old),
                ".x.json.tmp",
                "notes.txt",
                &file(&a),
            ]),
            &[],
        );
        let got: Vec<&str> = p.records.iter().map(|r| r.occurrence.id.as_str()).collect();
        assert_eq!(got, vec![a.as_str(), b.as_str()]);
        assert_eq!(p.skipped.foreign, 1);
        // Named again (a second close): not reported twice.
        let p = f.poll_names(&Filter::default(), &names(&[&file(&a)]), &[]);
        assert!(p.records.is_empty() && p.skipped.total() == 0);
        // Deleted and written again under the same name: new again.
        let p = f.poll_names(
            &Filter::default(),
            &names(&[&file(&a)]),
            &names(&[&file(&a)]),
        );
        assert_eq!(p.records.len(), 1);
        // A name that vanished before it was read is not an error.
        let p = f.poll_names(
            &Filter::default(),
            &names(&["01JQY0HADQ00000000000000ZZ.json"]),
            &[],
        );
        assert!(p.records.is_empty() && p.skipped.total() == 0);
    }

    #[test]
    fn follower_reports_only_new_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "kernel.storage.io_error", "error", T0, 0);
        let store = Store::new(d);
        let mut f = store.follow().unwrap();
        let p = f.poll(&Filter::default()).unwrap();
        assert!(p.exists && p.records.is_empty());
        let id = write(d, "kernel.container.oom_kill", "critical", T0 + S, 1);
        write(d, "kernel.network.connection_refused", "warning", T0 + S, 2);
        std::fs::write(d.join("bad.json"), "{").unwrap();
        let only_container = Filter {
            observers: vec![Observer::Container],
            ..Filter::default()
        };
        let p = f.poll(&only_container).unwrap();
        let got: Vec<&str> = p.records.iter().map(|r| r.occurrence.id.as_str()).collect();
        assert_eq!(got, vec![id.as_str()]);
        assert_eq!(p.skipped.corrupt, 1);
        let p = f.poll(&Filter::default()).unwrap();
        assert!(p.records.is_empty());
        assert_eq!(p.skipped, Skipped::default());
    }
}
