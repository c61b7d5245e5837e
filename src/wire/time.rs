//! Time text for the wire and the command line: RFC 3339 (UTC, milliseconds)
//! and the one duration grammar shared by Evidence Profiles and `--since`.
//! Pure arithmetic (Howard Hinnant's civil-from-days), no clock reads.

/// Latest year an instant may carry. ns since the epoch in u64 reach 2554;
/// a round bound well inside that keeps every sum below from wrapping.
pub const MAX_YEAR: i64 = 2500;

/// Units of [`parse_duration`], for error messages.
pub const DURATION_UNITS: &str = "ns, us, ms, s, m, h, d";

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

/// Why a time string was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstantError {
    /// Not RFC 3339 in form.
    Format,
    /// RFC 3339 in form, but not a real or representable time (one-line why).
    Invalid(String),
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into nanoseconds since
/// the epoch. Calendar dates that do not exist (`2026-02-30` is not March 2)
/// and years outside 1970..=[`MAX_YEAR`] are refused with the reason, rather
/// than normalised or wrapped.
pub fn parse_rfc3339(s: &str) -> Result<u64, InstantError> {
    use InstantError::{Format, Invalid};
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(Format);
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(Format);
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, InstantError> {
        let part = s.get(r).ok_or(Format)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(Format);
        }
        part.parse().map_err(|_| Format)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
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
            return Err(Format);
        }
        let mut scale = 100_000_000i64;
        for c in digits.bytes().take(9) {
            frac_ns += (c - b'0') as i64 * scale;
            scale /= 10;
        }
    }
    let offset_secs: i64 = match s.get(i..).ok_or(Format)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            if tz.as_bytes()[3] != b':' {
                return Err(Format);
            }
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return Err(Invalid(format!("offset {tz} does not exist")));
            }
            let v = oh * 3600 + om * 60;
            if tz.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return Err(Format),
    };
    if y > MAX_YEAR {
        return Err(Invalid(format!(
            "year {y} is out of range (latest supported: {MAX_YEAR})"
        )));
    }
    if y < 1970 {
        return Err(Invalid(format!("year {y} is before 1970")));
    }
    if !(1..=12).contains(&mo) {
        return Err(Invalid(format!("month {mo:02} does not exist")));
    }
    if d == 0 || d > days_in_month(y, mo) {
        return Err(Invalid(format!("{y:04}-{mo:02} has no day {d:02}")));
    }
    // 60 is a leap second; it folds into the next minute like the kernel's
    // own clock does.
    if h > 23 || mi > 59 || sec > 60 {
        return Err(Invalid(format!(
            "time {h:02}:{mi:02}:{sec:02} does not exist"
        )));
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    let total = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    if total < 0 {
        return Err(Invalid("is before 1970".into()));
    }
    Ok(total as u64 * 1_000_000_000 + frac_ns as u64)
}

/// Parses a duration: a non-negative decimal and one unit of
/// [`DURATION_UNITS`] (`µs` also reads as `us`), no spaces: `100ms`, `1s`,
/// `2.5s`, `5m`, `1d`. Returns nanoseconds, or `None` when the text is not
/// such a duration, is not a whole number of nanoseconds, or does not fit in
/// u64. Callers judge ranges (zero included).
pub fn parse_duration(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let unit_ns: u128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ => return None,
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    // 20 digits bound the u128 arithmetic below; anything longer overflows
    // u64 anyway.
    if int.is_empty()
        || int.len() > 20
        || frac.len() > 9
        || (number.contains('.') && frac.is_empty())
    {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u128 = int.parse().ok()?;
    let scale = 10u128.pow(frac.len() as u32);
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let scaled = (int * scale + frac) * unit_ns;
    if scaled % scale != 0 {
        return None;
    }
    u64::try_from(scaled / scale).ok()
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
    /// wrapped-around time in release ones). Years past MAX_YEAR are refused
    /// with a reason before any arithmetic.
    #[test]
    fn instants_past_u64_nanoseconds_are_refused() {
        assert_eq!(format_rfc3339_millis(u64::MAX), "2554-07-21T23:34:33.709Z");
        for far in [
            "2554-07-21T23:34:33.709551616Z",
            "2554-07-21T23:34:34Z",
            "2600-01-01T00:00:00Z",
            "9999-12-31T23:59:59+00:00",
        ] {
            assert!(
                matches!(parse_rfc3339(far), Err(InstantError::Invalid(_))),
                "{far}"
            );
        }
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
            assert_eq!(parse_rfc3339(&format_rfc3339_millis(ns)), Ok(ns));
        }
        assert_eq!(
            parse_rfc3339("2025-04-03T16:43:01+02:00"),
            Ok(1_743_691_381_000_000_000)
        );
        // The latest representable instant: 2500-12-31T23:59:59Z.
        assert_eq!(
            parse_rfc3339("2500-12-31T23:59:59Z"),
            Ok(16_756_761_599_000_000_000)
        );
        for bad in [
            "",
            "2025-04-03",
            "2025-04-03T00:00:00",
            "x025-04-03T00:00:00Z",
            "2025-04-03T00:00:00.Z",
            "2025-04-03T00:00:00+0200",
        ] {
            assert_eq!(parse_rfc3339(bad), Err(InstantError::Format), "{bad}");
        }
    }

    #[test]
    fn impossible_or_unrepresentable_instants_say_why() {
        for (input, why) in [
            ("2026-02-30T00:00:00Z", "2026-02 has no day 30"),
            ("2025-02-29T00:00:00Z", "2025-02 has no day 29"),
            ("2100-02-29T00:00:00Z", "2100-02 has no day 29"),
            ("2026-04-31T00:00:00Z", "2026-04 has no day 31"),
            ("2026-01-00T00:00:00Z", "2026-01 has no day 00"),
            ("2025-13-03T00:00:00Z", "month 13 does not exist"),
            ("2025-04-03T24:00:00Z", "time 24:00:00 does not exist"),
            ("2025-04-03T23:60:00Z", "time 23:60:00 does not exist"),
            ("2025-04-03T00:00:00+24:00", "offset +24:00 does not exist"),
            (
                "2600-01-01T00:00:00Z",
                "year 2600 is out of range (latest supported: 2500)",
            ),
            (
                "9999-12-31T23:59:59Z",
                "year 9999 is out of range (latest supported: 2500)",
            ),
            ("1969-12-31T23:59:59Z", "year 1969 is before 1970"),
            ("1970-01-01T00:59:59+01:00", "is before 1970"),
        ] {
            assert_eq!(
                parse_rfc3339(input),
                Err(InstantError::Invalid(why.into())),
                "{input}"
            );
        }
        // A real leap day is accepted.
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Ok(1_709_164_800_000_000_000)
        );
    }

    #[test]
    fn durations() {
        const MS: u64 = 1_000_000;
        const S: u64 = 1_000_000_000;
        for (text, ns) in [
            ("100ms", Some(100 * MS)),
            ("1s", Some(S)),
            ("10ms", Some(10 * MS)),
            ("2.5s", Some(2_500 * MS)),
            ("1m", Some(60 * S)),
            ("2h", Some(7_200 * S)),
            ("1.5h", Some(5_400 * S)),
            ("1d", Some(86_400 * S)),
            ("750us", Some(750_000)),
            ("750µs", Some(750_000)),
            ("7ns", Some(7)),
            ("0ms", Some(0)),
            ("1.5ns", None),
            ("100", None),
            ("ms", None),
            ("", None),
            ("1 s", None),
            ("-1s", None),
            ("1.s", None),
            (".5s", None),
            ("1.2.3s", None),
            ("1w", None),
            ("1S", None),
            ("1s2ms", None),
            ("5é", None),
            ("213503d", Some(213_503 * 86_400 * S)),
            ("213504d", None),
            ("99999999999999999999999s", None),
        ] {
            assert_eq!(parse_duration(text), ns, "{text}");
        }
    }
}
