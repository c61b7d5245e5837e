//! Wall-clock formatting for occurrences: RFC 3339, UTC, milliseconds.
//! Pure arithmetic (Howard Hinnant's civil-from-days), no clock reads.

/// Formats nanoseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339_millis(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let millis = (ns % 1_000_000_000) / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        y,
        m,
        d,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        millis
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into nanoseconds since
/// the epoch. Returns `None` for anything else, including dates before 1970.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut scale = 100_000_000i64;
        for c in digits.bytes().take(9) {
            frac_ns += (c - b'0') as i64 * scale;
            scale /= 10;
        }
    }
    let offset_secs: i64 = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            if tz.as_bytes()[3] != b':' {
                return None;
            }
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let v = oh * 3600 + om * 60;
            if tz.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let total = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    // Before 1970, or after 2554 (past u64 nanoseconds): not representable,
    // and must not wrap around to some other time.
    let secs = u64::try_from(total).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns as u64)
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (occurrence `timestamp`, MCP `since`): a far-future
    /// instant overflowed u64 nanoseconds (a panic in debug builds, a
    /// wrapped-around time in release ones).
    #[test]
    fn instants_past_u64_nanoseconds_are_refused() {
        assert_eq!(format_rfc3339_millis(u64::MAX), "2554-07-21T23:34:33.709Z");
        assert_eq!(
            parse_rfc3339("2554-07-21T23:34:33.709551615Z"),
            Some(u64::MAX)
        );
        assert_eq!(parse_rfc3339("2554-07-21T23:34:33.709551616Z"), None);
        assert_eq!(parse_rfc3339("2554-07-21T23:34:34Z"), None);
        assert_eq!(parse_rfc3339("2600-01-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59+00:00"), None);
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(1_743_691_381_042_000_000),
            "2025-04-03T14:43:01.042Z"
        );
        // Leap day, and truncation (not rounding) of sub-millisecond parts.
        assert_eq!(
            format_rfc3339_millis(1_709_164_800_999_999_999),
            "2024-02-29T00:00:00.999Z"
        );
    }

    #[test]
    fn parse_inverts_format() {
        for ns in [0u64, 1_743_691_381_042_000_000, 1_709_164_800_999_000_000] {
            assert_eq!(parse_rfc3339(&format_rfc3339_millis(ns)), Some(ns));
        }
        assert_eq!(
            parse_rfc3339("2025-04-03T16:43:01+02:00"),
            Some(1_743_691_381_000_000_000)
        );
        for bad in [
            "",
            "2025-04-03",
            "2025-13-03T00:00:00Z",
            "2025-04-03T00:00:00",
            "x025-04-03T00:00:00Z",
            "2025-04-03T00:00:00.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
