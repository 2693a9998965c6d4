//! `Stream-Cursor` for live reads: the number of 20-second intervals since 2024-10-09, so
//! CDNs key cached long-poll answers by interval, and never the same value a client just
//! sent (which would let a cache loop it forever).

/// 2024-10-09T00:00:00Z in milliseconds since the Unix epoch.
pub const CURSOR_EPOCH_MS: u64 = 1_728_432_000_000;
/// Length of one cursor interval.
pub const CURSOR_INTERVAL_MS: u64 = 20_000;

/// The cursor a client sent, if it is one (anything else counts as none).
pub fn parse_cursor(text: &str) -> Option<u64> {
    text.parse().ok()
}

/// The cursor to answer with at `now_ms`, given the cursor the client sent.
pub fn next_cursor(now_ms: u64, client: Option<u64>) -> u64 {
    let current = now_ms.saturating_sub(CURSOR_EPOCH_MS) / CURSOR_INTERVAL_MS;
    match client {
        // The client is at (or, by clock skew, past) the current interval: move on by one.
        // A cursor at the very end of the range cannot move on; the current one differs.
        Some(sent) if sent >= current => sent.checked_add(1).unwrap_or(current),
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_intervals_and_never_echoes() {
        let now = CURSOR_EPOCH_MS + 3 * CURSOR_INTERVAL_MS + 5;
        assert_eq!(next_cursor(now, None), 3);
        assert_eq!(next_cursor(now, Some(1)), 3);
        assert_eq!(next_cursor(now, Some(3)), 4);
        assert_eq!(next_cursor(now, Some(9)), 10);
        assert_eq!(next_cursor(now, parse_cursor("junk")), 3);
        assert_eq!(next_cursor(0, None), 0);
    }

    #[test]
    fn never_echoes_the_largest_cursor() {
        // Regression: `saturating_add` answered u64::MAX with itself.
        let now = CURSOR_EPOCH_MS + 3 * CURSOR_INTERVAL_MS;
        assert_eq!(next_cursor(now, Some(u64::MAX)), 3);
        assert_ne!(next_cursor(u64::MAX, Some(u64::MAX)), u64::MAX);
    }
}
