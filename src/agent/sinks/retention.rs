//! Retention policy of the `file` sink (SPEC §8 "Bounded on-node state"):
//! at most `--retain-files` occurrence files, `--retain-bytes` of them and
//! none older than `--retain-age`, pruned oldest first.
//!
//! Owns: the limits, the decision which file goes next and why (a pure
//! function of the oldest file, the totals and `now`), and the in-memory
//! [`Index`] of the `<ULID>.json` files the sink knows of, oldest first,
//! so a write never re-lists the directory. Must not: do I/O or read a
//! clock (the file sink lists, deletes and passes `now`), or know any name
//! but the canonical `<ULID>.json`, so nothing else is ever a candidate.
//!
//! Why "oldest first" needs no file times: a ULID starts with its
//! millisecond timestamp, so name order is time order and a file's age is
//! read from its name. Sizes are file lengths, not the disk blocks they
//! occupy.

use std::collections::VecDeque;

use ulid::Ulid;

pub const DEFAULT_MAX_FILES: u64 = 100_000;
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
pub const DEFAULT_MAX_AGE_SECS: u64 = 7 * 86_400;

/// The bounds the file sink keeps. All three apply at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_files: u64,
    pub max_bytes: u64,
    /// Files whose ULID time is more than this before `now` go.
    pub max_age_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_files: DEFAULT_MAX_FILES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_age_ms: DEFAULT_MAX_AGE_SECS * 1000,
        }
    }
}

/// Why a file was pruned: the `reason` of `tapio_sink_pruned_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Files,
    Bytes,
    Age,
}

impl Reason {
    pub const ALL: [Reason; 3] = [Reason::Files, Reason::Bytes, Reason::Age];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Files => "files",
            Reason::Bytes => "bytes",
            Reason::Age => "age",
        }
    }
}

/// Whether the oldest kept file (ULID time `oldest_ms`) must go, given how
/// many files and bytes are kept including it. Age is checked first, then
/// the count, then the bytes, so each pruned file has one reason.
pub fn reason_to_prune(
    oldest_ms: u64,
    files: u64,
    bytes: u64,
    limits: &Retention,
    now_ms: u64,
) -> Option<Reason> {
    if now_ms.saturating_sub(oldest_ms) > limits.max_age_ms {
        Some(Reason::Age)
    } else if files > limits.max_files {
        Some(Reason::Files)
    } else if bytes > limits.max_bytes {
        Some(Reason::Bytes)
    } else {
        None
    }
}

/// The ULID of a canonical occurrence file name, `<26 upper-case
/// Crockford characters>.json`; `None` for anything else (dot files, temp
/// files, lower-case or foreign names), which the sink never deletes.
pub fn occurrence_id(name: &str) -> Option<Ulid> {
    let stem = name.strip_suffix(".json")?;
    if stem.len() != 26
        || !stem
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        return None;
    }
    let id = Ulid::from_string(stem).ok()?;
    // Crockford decoding maps I, L and O to digits: only the name the sink
    // itself would write counts, so deleting `{id}.json` deletes this file.
    (id.to_string() == stem).then_some(id)
}

/// One known file: 20 bytes, so 100,000 files cost 2 MB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// The ULID, big-endian: byte order is time order.
    id: [u8; 16],
    /// File length, saturated (occurrence files are a few hundred bytes).
    len: u32,
}

impl Entry {
    pub fn new(id: Ulid, len: u64) -> Entry {
        Entry {
            id: id.to_bytes(),
            len: u32::try_from(len).unwrap_or(u32::MAX),
        }
    }

    pub fn id(&self) -> Ulid {
        Ulid::from_bytes(self.id)
    }

    pub fn bytes(&self) -> u64 {
        u64::from(self.len)
    }
}

/// The files the sink knows of, oldest first, with their total length.
#[derive(Debug, Default)]
pub struct Index {
    entries: VecDeque<Entry>,
    bytes: u64,
}

impl Index {
    /// From entries in any order (a directory listing).
    pub fn from_entries(mut entries: Vec<Entry>) -> Index {
        entries.sort_unstable();
        entries.dedup_by_key(|e| e.id);
        let bytes = entries.iter().map(Entry::bytes).sum();
        Index {
            entries: entries.into(),
            bytes,
        }
    }

    pub fn files(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Records a file just written. The sink's ULIDs are monotonic, so this
    /// is an append; an out-of-order or repeated id (a rewrite) is placed
    /// or replaced by binary search.
    pub fn insert(&mut self, e: Entry) {
        match self.entries.back() {
            Some(last) if last.id >= e.id => {
                match self.entries.binary_search_by(|x| x.id.cmp(&e.id)) {
                    Ok(i) => {
                        self.bytes -= self.entries[i].bytes();
                        self.entries[i] = e;
                    }
                    Err(i) => self.entries.insert(i, e),
                }
            }
            _ => self.entries.push_back(e),
        }
        self.bytes += e.bytes();
    }

    /// Removes and returns the oldest file if the limits say it must go.
    pub fn pop_prunable(&mut self, limits: &Retention, now_ms: u64) -> Option<(Entry, Reason)> {
        let oldest = *self.entries.front()?;
        let reason = reason_to_prune(
            oldest.id().timestamp_ms(),
            self.files(),
            self.bytes,
            limits,
            now_ms,
        )?;
        self.entries.pop_front();
        self.bytes -= oldest.bytes();
        Some((oldest, reason))
    }

    /// Forgets everything (the directory was removed and re-created).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// The whole policy over a directory listing of `(name, length)`: which
/// files go, oldest first, and why. Names that are not `<ULID>.json` are
/// neither counted nor pruned.
pub fn plan(listing: &[(&str, u64)], limits: &Retention, now_ms: u64) -> Vec<(String, Reason)> {
    let entries = listing
        .iter()
        .filter_map(|(name, len)| Some(Entry::new(occurrence_id(name)?, *len)))
        .collect();
    let mut index = Index::from_entries(entries);
    let mut out = Vec::new();
    while let Some((e, reason)) = index.pop_prunable(limits, now_ms) {
        out.push((format!("{}.json", e.id()), reason));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;
    /// 2026-11-28T00:00:00Z.
    const NOW_MS: u64 = 1_795_824_000_000;

    fn name(ms: u64, n: u128) -> String {
        format!("{}.json", Ulid::from_parts(ms, n))
    }

    fn limits(files: u64, bytes: u64, age_ms: u64) -> Retention {
        Retention {
            max_files: files,
            max_bytes: bytes,
            max_age_ms: age_ms,
        }
    }

    fn run(listing: &[(String, u64)], l: Retention) -> Vec<(String, Reason)> {
        let borrowed: Vec<(&str, u64)> = listing.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        plan(&borrowed, &l, NOW_MS)
    }

    #[test]
    fn within_every_bound_nothing_goes() {
        let listing: Vec<_> = (0..5).map(|i| (name(NOW_MS - i, 1), 100)).collect();
        assert_eq!(run(&listing, limits(5, 500, DAY_MS)), vec![]);
        assert_eq!(run(&[], limits(1, 1, 1)), vec![]);
    }

    #[test]
    fn the_count_bound_prunes_the_oldest_names_whatever_the_listing_order() {
        // Listed newest first, as a directory may return them.
        let listing: Vec<_> = (0..5u64)
            .map(|i| (name(NOW_MS - 1000 + (4 - i), 1), 10))
            .collect();
        let got = run(&listing, limits(3, u64::MAX, DAY_MS));
        assert_eq!(
            got,
            vec![
                (name(NOW_MS - 1000, 1), Reason::Files),
                (name(NOW_MS - 999, 1), Reason::Files),
            ]
        );
    }

    #[test]
    fn the_byte_bound_prunes_until_the_rest_fits() {
        let listing = vec![
            (name(NOW_MS - 3, 0), 400),
            (name(NOW_MS - 2, 0), 300),
            (name(NOW_MS - 1, 0), 200),
            (name(NOW_MS, 0), 100),
        ];
        // 1000 bytes over a 350 limit: drop 400 (600 left), 300 (300 left).
        assert_eq!(
            run(&listing, limits(10, 350, DAY_MS)),
            vec![
                (name(NOW_MS - 3, 0), Reason::Bytes),
                (name(NOW_MS - 2, 0), Reason::Bytes),
            ]
        );
        // Exactly at the limit stays.
        assert_eq!(run(&listing, limits(10, 1000, DAY_MS)), vec![]);
    }

    #[test]
    fn age_goes_first_and_exactly_max_age_stays() {
        let listing = vec![
            (name(NOW_MS - 8 * DAY_MS, 0), 10),
            (name(NOW_MS - 7 * DAY_MS - 1, 0), 10),
            (name(NOW_MS - 7 * DAY_MS, 0), 10),
            (name(NOW_MS - 1, 0), 10),
            (name(NOW_MS, 0), 10),
        ];
        // Both old files are also over the count bound of 2: age is the
        // reason; the next one is at exactly 7 d, so it goes for the count.
        assert_eq!(
            run(&listing, limits(2, u64::MAX, 7 * DAY_MS)),
            vec![
                (name(NOW_MS - 8 * DAY_MS, 0), Reason::Age),
                (name(NOW_MS - 7 * DAY_MS - 1, 0), Reason::Age),
                (name(NOW_MS - 7 * DAY_MS, 0), Reason::Files),
            ]
        );
        // The count (2 of 3 left) is checked before the bytes (30 > 15).
        assert_eq!(
            run(&listing[2..], limits(2, 15, 7 * DAY_MS)),
            vec![
                (name(NOW_MS - 7 * DAY_MS, 0), Reason::Files),
                (name(NOW_MS - 1, 0), Reason::Bytes),
            ]
        );
        // A clock behind the names (future files) is not an age.
        let future = vec![(name(NOW_MS + DAY_MS, 0), 10)];
        assert_eq!(run(&future, limits(1, 10, 1)), vec![]);
    }

    #[test]
    fn only_canonical_ulid_names_count_or_go() {
        let id = Ulid::from_parts(NOW_MS - 10 * DAY_MS, 42).to_string();
        let listing = vec![
            (format!("{id}.json"), 10),
            (format!(".{id}.json.tmp"), 10),
            (".agent-status.json".to_string(), 10),
            (format!("{}.json", id.to_lowercase()), 10),
            (format!("{id}.json.bak"), 10),
            ("notes.json".to_string(), 10),
            (format!("{id}.JSON"), 10),
            // `O` decodes like `0`, but the sink would never write it.
            (format!("{}O.json", &id[..25]), 10),
        ];
        assert_eq!(
            run(&listing, limits(1, 1, DAY_MS)),
            vec![(format!("{id}.json"), Reason::Age)]
        );
        assert!(occurrence_id(&format!("{id}.json")).is_some());
        // The metric's label values are these names.
        assert_eq!(
            Reason::ALL.map(Reason::as_str),
            crate::agent::metrics::PRUNE_REASONS
        );
        assert!(occurrence_id(&format!("{}.json", id.to_lowercase())).is_none());
    }

    #[test]
    fn the_index_keeps_order_and_totals_across_inserts_and_pops() {
        let mut idx = Index::default();
        let l = limits(2, u64::MAX, DAY_MS);
        idx.insert(Entry::new(Ulid::from_parts(NOW_MS - 5, 0), 10));
        idx.insert(Entry::new(Ulid::from_parts(NOW_MS - 1, 0), 20));
        // Out of order: lands first, so it is the one the count prunes.
        idx.insert(Entry::new(Ulid::from_parts(NOW_MS - 9, 0), 40));
        // A rewrite of the same id replaces its length, not its count.
        idx.insert(Entry::new(Ulid::from_parts(NOW_MS - 5, 0), 15));
        assert_eq!((idx.files(), idx.bytes()), (3, 75));
        let (e, r) = idx.pop_prunable(&l, NOW_MS).unwrap();
        assert_eq!(
            (e.id(), e.bytes(), r),
            (Ulid::from_parts(NOW_MS - 9, 0), 40, Reason::Files)
        );
        assert_eq!(idx.pop_prunable(&l, NOW_MS), None);
        assert_eq!((idx.files(), idx.bytes()), (2, 35));
        idx.clear();
        assert_eq!((idx.files(), idx.bytes()), (0, 0));
    }
}
