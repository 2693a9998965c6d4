//! Request header rules: TTL and expiry, `Stream-Closed`, content types, `Stream-Seq`.

/// Why a header was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("Stream-TTL must be a non-negative integer without sign, leading zeros or exponent")]
    Ttl,
    #[error("Stream-Expires-At must be an RFC 3339 timestamp")]
    ExpiresAt,
    #[error("Stream-TTL and Stream-Expires-At cannot both be set")]
    TtlAndExpiresAt,
}

/// How long a stream lives.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    None,
    /// Sliding: this many seconds after the last read or write.
    Ttl {
        seconds: u64,
    },
    /// Absolute, in milliseconds since the Unix epoch.
    At {
        unix_ms: i64,
    },
}

/// Parses `Stream-TTL` and `Stream-Expires-At` (at most one of them).
pub fn parse_expiry(ttl: Option<&str>, expires_at: Option<&str>) -> Result<Expiry, HeaderError> {
    match (ttl, expires_at) {
        (Some(_), Some(_)) => Err(HeaderError::TtlAndExpiresAt),
        (Some(ttl), None) => parse_ttl(ttl).map(|seconds| Expiry::Ttl { seconds }),
        (None, Some(at)) => parse_rfc3339_ms(at)
            .map(|unix_ms| Expiry::At { unix_ms })
            .ok_or(HeaderError::ExpiresAt),
        (None, None) => Ok(Expiry::None),
    }
}

/// `0` or a decimal integer without leading zeros, at most 2^53-1.
fn parse_ttl(text: &str) -> Result<u64, HeaderError> {
    let canonical = text == "0"
        || (!text.is_empty()
            && text.len() <= 16
            && !text.starts_with('0')
            && text.bytes().all(|b| b.is_ascii_digit()));
    if !canonical {
        return Err(HeaderError::Ttl);
    }
    text.parse::<u64>()
        .ok()
        .filter(|&n| n <= crate::stream::seq::MAX_SAFE_INTEGER)
        .ok_or(HeaderError::Ttl)
}

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp
/// (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`), or `None` if it is not one.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        // Milliseconds from the first three fraction digits.
        let digits: String = text
            .get(start..i)?
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = digits.parse::<i64>().ok()?;
    }
    let offset_minutes = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && sep(i + 3, b":") => {
            let minutes = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return None,
    };
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1_000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats milliseconds since the Unix epoch as RFC 3339 in UTC with milliseconds
/// (`2024-10-09T00:00:00.000Z`), the form `Stream-Expires-At` is echoed in.
pub fn format_rfc3339_ms(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000
    )
}

/// `Stream-Closed` counts only when it is `true`, in any case; anything else is absent.
pub fn is_closed_flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// A content type for comparison: lowercase, without parameters.
pub fn normalize_content_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether a (normalized) content type puts the stream in JSON mode.
pub fn is_json(content_type: &str) -> bool {
    content_type == "application/json"
}

/// Whether SSE must carry this content type's data as base64 (anything but text and JSON).
pub fn needs_base64(content_type: &str) -> bool {
    !(content_type.starts_with("text/") || is_json(content_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_strict() {
        assert_eq!(
            parse_expiry(Some("3600"), None),
            Ok(Expiry::Ttl { seconds: 3600 })
        );
        assert_eq!(
            parse_expiry(Some("0"), None),
            Ok(Expiry::Ttl { seconds: 0 })
        );
        for bad in ["03600", "+3600", "3.6e3", "1.5", "-1", "", "abc", " 1"] {
            assert_eq!(
                parse_expiry(Some(bad), None),
                Err(HeaderError::Ttl),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_expiry(Some("1"), Some("2030-01-01T00:00:00Z")),
            Err(HeaderError::TtlAndExpiresAt)
        );
        assert_eq!(parse_expiry(None, None), Ok(Expiry::None));
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2024-10-09T00:00:00.000Z"),
            Some(1_728_432_000_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-10-09T02:00:00.5+02:00"),
            Some(1_728_432_000_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-10-08T19:30:00-04:30"),
            Some(1_728_432_000_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T12:00:00Z"),
            Some(951_825_600_000)
        );
        for bad in [
            "not-a-timestamp",
            "2024-10-09",
            "2024-10-09T00:00:00",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-10-09T24:00:00Z",
            "2024-10-09T00:00:00.Z",
            "2024-10-09T00:00:00Zjunk",
            "2024-10-09T00:00:00+0200",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
        assert!(matches!(
            parse_expiry(None, Some("2030-01-01T00:00:00Z")),
            Ok(Expiry::At { .. })
        ));
        assert_eq!(
            parse_expiry(None, Some("soon")),
            Err(HeaderError::ExpiresAt)
        );
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_728_432_000_500),
            "2024-10-09T00:00:00.500Z"
        );
        assert_eq!(
            format_rfc3339_ms(951_825_600_000),
            "2000-02-29T12:00:00.000Z"
        );
        for ms in [0, 951_825_600_000, 1_728_432_000_123, 4_102_444_800_999] {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
        }
    }

    #[test]
    fn closed_flag_and_content_types() {
        assert!(is_closed_flag(Some("true")) && is_closed_flag(Some("TRUE")));
        for other in [None, Some("false"), Some("yes"), Some("1"), Some("")] {
            assert!(!is_closed_flag(other));
        }
        assert_eq!(
            normalize_content_type("Application/JSON; charset=utf-8"),
            "application/json"
        );
        assert!(is_json(&normalize_content_type("application/json")));
        assert!(needs_base64("application/octet-stream"));
        assert!(!needs_base64("text/plain") && !needs_base64("application/json"));
    }
}
