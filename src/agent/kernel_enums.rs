//! Names of the running kernel's enum values, read from its BTF.
//!
//! BPF records carry the kernel's raw numbers where the numbering changes
//! between kernel versions (`enum skb_drop_reason` grows and is renumbered
//! often). Naming them from a table compiled into the agent would name
//! them wrongly on another kernel, so the names come from the running
//! kernel's own type information, `/sys/kernel/btf/vmlinux`, read once at
//! start by the emitter thread. When it cannot be read or lacks the enum,
//! no name is given (the raw number still is): never a guess.
//!
//! Owns: a small, bounds-checked reader of the BTF type section (only enum
//! names are kept). Must not: read anything else, or run on the drain
//! thread.

use std::collections::HashMap;
use std::path::Path;

use std::sync::Arc;

use crate::wire::evidence::ConnectFailed;

/// Where the running kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Larger than any vmlinux BTF seen (≈ 6 MiB): a bound on what is read.
pub const MAX_BTF_BYTES: u64 = 64 << 20;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_ENUM: u32 = 6;
const KIND_ENUM64: u32 = 19;

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// Exact positioned reads of a BTF blob: the kernel's file itself, or
/// bytes in memory (tests). Positioned, so the reader walks the type
/// section through a small window and looks names up where they lie,
/// instead of holding the whole blob (vmlinux BTF is ≈ 6 MiB: read whole,
/// it was most of the agent's peak RSS at start).
pub trait ReadAt {
    /// Fills `buf` from `off`; `None` when that range cannot be read.
    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> Option<()>;
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> Option<()> {
        let start = usize::try_from(off).ok()?;
        buf.copy_from_slice(self.get(start..start.checked_add(buf.len())?)?);
        Some(())
    }
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> Option<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, off).ok()
    }
}

/// How much of the type section is read at a time.
const WINDOW: usize = 64 << 10;
/// Longest name read from the string section (the kernel's own symbol
/// limit, KSYM_NAME_LEN, is 512).
const MAX_NAME: usize = 1024;

/// A section of the blob read through one reused window.
struct Section<'a, R: ?Sized> {
    src: &'a R,
    /// Where the section starts in the blob, and its length.
    base: u64,
    len: usize,
    buf: Vec<u8>,
    /// Section offset of `buf[0]`.
    at: usize,
}

impl<'a, R: ReadAt + ?Sized> Section<'a, R> {
    fn new(src: &'a R, base: u64, len: usize) -> Self {
        Section {
            src,
            base,
            len,
            buf: Vec::new(),
            at: 0,
        }
    }

    /// `n` bytes at section offset `off`, refilling the window when they
    /// are not in it; `None` past the section's end.
    fn get(&mut self, off: usize, n: usize) -> Option<&[u8]> {
        let end = off.checked_add(n)?;
        if end > self.len {
            return None;
        }
        if off < self.at || end > self.at + self.buf.len() {
            let take = n.max(WINDOW).min(self.len - off);
            self.buf.resize(take, 0);
            self.src
                .read_exact_at(self.base + off as u64, &mut self.buf)?;
            self.at = off;
        }
        self.buf.get(off - self.at..end - self.at)
    }
}

/// The NUL-terminated string at `off` of the string section, if it is
/// UTF-8 and at most [`MAX_NAME`] bytes.
fn str_at<R: ReadAt + ?Sized>(strings: &Section<'_, R>, off: u32) -> Option<String> {
    let off = off as usize;
    let n = MAX_NAME.min(strings.len.checked_sub(off)?);
    let mut b = vec![0u8; n];
    strings
        .src
        .read_exact_at(strings.base + off as u64, &mut b)?;
    let end = b.iter().position(|c| *c == 0)?;
    b.truncate(end);
    String::from_utf8(b).ok()
}

/// Whether the string at `off` of the string section is `name`.
fn str_is<R: ReadAt + ?Sized>(strings: &Section<'_, R>, off: u32, name: &str) -> bool {
    let Some(n) = (off as usize).checked_add(name.len() + 1) else {
        return false;
    };
    if n > strings.len {
        return false;
    }
    let mut b = vec![0u8; name.len() + 1];
    strings
        .src
        .read_exact_at(strings.base + u64::from(off), &mut b)
        .is_some()
        && b[..name.len()] == *name.as_bytes()
        && b[name.len()] == 0
}

/// Bytes that follow a `struct btf_type` of `kind` with `vlen` members
/// (`include/uapi/linux/btf.h`), or `None` for a kind this reader does
/// not know (then the rest of the section cannot be walked).
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 => 4,                    // INT
        2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        3 => 12,                   // ARRAY
        4 | 5 => 12 * vlen,        // STRUCT, UNION
        6 => 8 * vlen,             // ENUM
        13 => 8 * vlen,            // FUNC_PROTO
        14 => 4,                   // VAR
        15 => 12 * vlen,           // DATASEC
        17 => 4,                   // DECL_TAG
        19 => 12 * vlen,           // ENUM64
        _ => return None,
    })
}

/// `(value, name)` of every member of the enum called `name` in a BTF
/// blob of `len` bytes, or `None` when the blob is malformed or has no
/// such enum.
pub fn enum_members<R: ReadAt + ?Sized>(
    btf: &R,
    len: u64,
    name: &str,
) -> Option<Vec<(u64, String)>> {
    let mut hdr = [0u8; 24];
    btf.read_exact_at(0, &mut hdr)?;
    if u16::from_ne_bytes([hdr[0], hdr[1]]) != BTF_MAGIC {
        return None;
    }
    let hdr_len = u64::from(u32_at(&hdr, 4)?);
    let section = |off: usize, size: usize| -> Option<(u64, usize)> {
        let (off, size) = (u64::from(u32_at(&hdr, off)?), u32_at(&hdr, size)?);
        let base = hdr_len.checked_add(off)?;
        (base.checked_add(u64::from(size))? <= len).then_some((base, size as usize))
    };
    let (type_base, type_len) = section(8, 12)?;
    let (str_base, str_len) = section(16, 20)?;
    let mut types = Section::new(btf, type_base, type_len);
    let strings = Section::new(btf, str_base, str_len);
    let mut off = 0usize;
    while off + 12 <= type_len {
        let t = types.get(off, 12)?;
        let (name_off, info) = (u32_at(t, 0)?, u32_at(t, 4)?);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let body = off + 12;
        let extra = extra_len(kind, vlen)?;
        let next = body.checked_add(extra)?;
        if next > type_len {
            return None;
        }
        if (kind == KIND_ENUM || kind == KIND_ENUM64) && str_is(&strings, name_off, name) {
            let step = if kind == KIND_ENUM { 8 } else { 12 };
            let members = types.get(body, extra)?.to_vec();
            let mut out = Vec::with_capacity(vlen);
            for m in members.chunks_exact(step) {
                let member = str_at(&strings, u32_at(m, 0)?)?;
                let lo = u64::from(u32_at(m, 4)?);
                let value = if kind == KIND_ENUM {
                    lo
                } else {
                    lo | u64::from(u32_at(m, 8)?) << 32
                };
                out.push((value, member));
            }
            return Some(out);
        }
        off = next;
    }
    None
}

/// The kernel's `enum skb_drop_reason`, without its `SKB_DROP_REASON_`
/// prefix (`NETFILTER_DROP`, as the kernel's own tracepoint prints it).
#[derive(Debug, Default, Clone)]
pub struct DropReasonNames {
    by_value: HashMap<u32, String>,
}

impl DropReasonNames {
    /// Reads the names from `btf_path` (normally [`VMLINUX_BTF`]), or says
    /// why it could not (the caller reports it; drop reasons then carry
    /// their numbers only).
    pub fn load(btf_path: &Path) -> Result<Self, String> {
        let path = btf_path.display();
        let file = std::fs::File::open(btf_path).map_err(|e| format!("{path}: {e}"))?;
        let len = file.metadata().map_err(|e| format!("{path}: {e}"))?.len();
        if len > MAX_BTF_BYTES {
            return Err(format!(
                "{path}: {len} bytes, over the {MAX_BTF_BYTES} read"
            ));
        }
        let names = Self::from_btf(&file, len);
        if names.is_empty() {
            return Err(format!("{path}: no readable enum skb_drop_reason"));
        }
        Ok(names)
    }

    pub fn from_btf<R: ReadAt + ?Sized>(btf: &R, len: u64) -> Self {
        let by_value = enum_members(btf, len, "skb_drop_reason")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(v, n)| {
                let v = u32::try_from(v).ok()?;
                Some((v, n.strip_prefix("SKB_DROP_REASON_")?.to_string()))
            })
            .collect();
        DropReasonNames { by_value }
    }

    pub fn name(&self, code: u32) -> Option<&str> {
        self.by_value.get(&code).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_value.is_empty()
    }

    /// Names the drop reason of a failed connect that saw drops, when
    /// the kernel names its code.
    pub fn enrich(&self, failed: &mut ConnectFailed) {
        if failed.drops == 0 {
            return;
        }
        failed.drop_reason = self.name(failed.drop_reason_code).map(Arc::from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal BTF blob: an INT, a STRUCT with one member, then `enum
    /// <e> { SKB_DROP_REASON_A = 1, SKB_DROP_REASON_B = 7 }` and an ENUM64
    /// `big { C = 1 << 40 }`.
    fn blob_named(e: &str) -> Vec<u8> {
        blob_padded(e, 0)
    }

    /// [`blob_named`] with `pad` more INTs before the enum, so the type
    /// section can span several reader windows.
    fn blob_padded(e: &str, pad: usize) -> Vec<u8> {
        let strings = format!("\0int\0s\0m\0{e}\0SKB_DROP_REASON_A\0SKB_DROP_REASON_B\0big\0C\0");
        let strings = strings.as_bytes();
        let off = |s: &str| {
            let pat = format!("\0{s}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t = Vec::new();
        let mut put = |words: &[u32]| {
            for w in words {
                t.extend_from_slice(&w.to_ne_bytes());
            }
        };
        put(&[off("int"), 1 << 24, 4, 0x20]); // INT + 4
        put(&[off("s"), 4 << 24 | 1, 4, off("m"), 1, 0]); // STRUCT, 1 member
        for _ in 0..pad {
            put(&[off("int"), 1 << 24, 4, 0x20]);
        }
        put(&[off(e), 6 << 24 | 2, 4]);
        put(&[off("SKB_DROP_REASON_A"), 1, off("SKB_DROP_REASON_B"), 7]);
        put(&[off("big"), 19 << 24 | 1, 8, off("C"), 0, 1 << 8]);
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
        b.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        b.extend_from_slice(&t);
        b.extend_from_slice(strings);
        b
    }

    fn blob() -> Vec<u8> {
        blob_named("e")
    }

    fn members(b: &[u8], name: &str) -> Option<Vec<(u64, String)>> {
        enum_members(b, b.len() as u64, name)
    }

    #[test]
    fn reads_enum_and_enum64_members() {
        let b = blob();
        assert_eq!(
            members(&b, "e"),
            Some(vec![
                (1, "SKB_DROP_REASON_A".to_string()),
                (7, "SKB_DROP_REASON_B".to_string())
            ])
        );
        assert_eq!(members(&b, "big"), Some(vec![(1 << 40, "C".into())]));
        assert_eq!(members(&b, "nope"), None);
        assert_eq!(members(&b, "s"), None, "a struct is not an enum");
    }

    #[test]
    fn malformed_blobs_are_refused_without_panic() {
        let b = blob();
        for len in 0..b.len() {
            // A cut blob either still holds the enum or yields nothing.
            let got = members(&b[..len], "e");
            assert!(got.is_none() || got.unwrap().len() == 2, "len {len}");
        }
        let mut bad = b.clone();
        bad[0] ^= 0xff;
        assert_eq!(members(&bad, "e"), None, "wrong magic");
        let mut unknown_kind = b.clone();
        // The INT's info word becomes kind 31.
        unknown_kind[24 + 4..24 + 8].copy_from_slice(&(31u32 << 24).to_ne_bytes());
        assert_eq!(members(&unknown_kind, "e"), None);
        // Deterministic garbage of every length.
        let mut x = crate::testutil::XorShift(0x2545f4914f6cdd1d);
        for len in 0..512 {
            let mut g = x.bytes(len);
            if g.len() >= 2 {
                g[..2].copy_from_slice(&BTF_MAGIC.to_ne_bytes());
            }
            let _ = members(&g, "skb_drop_reason");
        }
    }

    #[test]
    fn drop_reason_names_strip_the_prefix_and_enrich() {
        let mut b = blob_named("skb_drop_reason");
        let names = DropReasonNames::from_btf(&b[..], b.len() as u64);
        assert_eq!(names.name(1), Some("A"));
        assert_eq!(names.name(7), Some("B"));
        assert_eq!(names.name(2), None);
        let failed = |drops, code| ConnectFailed {
            conn: crate::wire::evidence::Conn::loopback(1, 2),
            errno: "ETIMEDOUT",
            drops,
            drop_reason_code: code,
            drop_reason: None,
        };
        let mut known = failed(1, 7);
        names.enrich(&mut known);
        assert_eq!(known.drop_reason.as_deref(), Some("B"));
        let mut unknown = failed(1, 99);
        names.enrich(&mut unknown);
        assert_eq!(unknown.drop_reason, None);
        // No drop seen: code 0 is not a reason, nothing is named.
        let mut none = failed(0, 1);
        names.enrich(&mut none);
        assert_eq!(none.drop_reason, None);
        b.truncate(10);
        assert!(DropReasonNames::from_btf(&b[..], b.len() as u64).is_empty());
    }

    /// A type section larger than the reader's window is walked across
    /// refills, from memory and from a file alike, and a blob whose stated
    /// sections run past its length is refused.
    #[test]
    fn reads_across_windows_from_a_file() {
        let pad = 3 * WINDOW / 16;
        let b = blob_padded("skb_drop_reason", pad);
        assert!(b.len() > 3 * WINDOW);
        let want = Some(vec![
            (1, "SKB_DROP_REASON_A".to_string()),
            (7, "SKB_DROP_REASON_B".to_string()),
        ]);
        assert_eq!(members(&b, "skb_drop_reason"), want);
        let dir = std::env::temp_dir().join(format!("tapio-btf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vmlinux");
        std::fs::write(&path, &b).unwrap();
        let names = DropReasonNames::load(&path).unwrap();
        // What cannot be read says why.
        let other = dir.join("other");
        std::fs::write(&other, blob_named("other")).unwrap();
        let no_enum = DropReasonNames::load(&other).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = DropReasonNames::load(&path).unwrap_err();
        assert_eq!(names.name(1), Some("A"));
        assert_eq!(names.name(7), Some("B"));
        assert!(
            no_enum.ends_with("no readable enum skb_drop_reason"),
            "{no_enum}"
        );
        assert!(missing.contains("No such file"), "{missing}");
        assert_eq!(enum_members(&b[..], b.len() as u64 + 1, "x"), None);
        assert_eq!(
            enum_members(&b[..b.len() - 1], b.len() as u64, "skb_drop_reason"),
            None,
            "a blob shorter than it says"
        );
    }

    /// The running kernel's own table (KERNEL-FACTS: NETFILTER_DROP is 12,
    /// NO_SOCKET 3 on the 6.18 test machine); skipped without BTF.
    #[test]
    fn the_running_kernels_drop_reasons() {
        let names = match DropReasonNames::load(Path::new(VMLINUX_BTF)) {
            Ok(names) => names,
            Err(why) => {
                assert!(
                    !Path::new(VMLINUX_BTF).exists(),
                    "BTF exists but skb_drop_reason was not read: {why}"
                );
                eprintln!("skipping: no {VMLINUX_BTF}");
                return;
            }
        };
        assert_eq!(names.name(2), Some("NOT_SPECIFIED"));
        let netfilter = names
            .by_value
            .iter()
            .find(|(_, n)| n.as_str() == "NETFILTER_DROP")
            .map(|(v, _)| *v);
        assert!(netfilter.is_some(), "NETFILTER_DROP named");
        assert!(names.by_value.len() > 50, "{}", names.by_value.len());
    }
}
