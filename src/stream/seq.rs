//! Sequence numbers of log entries.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Largest integer a JavaScript number (and so a LiveStore client, D1 or DO SQLite through
/// JS) represents exactly: sequence numbers beyond it would silently lose precision.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A position in a log. `ROOT` (0) is the position before the first entry.
///
/// Always within `0..=MAX_SAFE_INTEGER`, so it round-trips through JSON and JS numbers.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SeqNum(u64);

impl SeqNum {
    /// The position before the first entry.
    pub const ROOT: SeqNum = SeqNum(0);

    /// A sequence number, if `value` is a safe integer.
    pub fn new(value: u64) -> Option<SeqNum> {
        (value <= MAX_SAFE_INTEGER).then_some(SeqNum(value))
    }

    /// The raw value.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The next position, if it is still a safe integer.
    pub fn next(self) -> Option<SeqNum> {
        SeqNum::new(self.0 + 1)
    }

    /// A sequence number from a JS number as D1 returns it; `None` if it is not a safe
    /// non-negative integer.
    pub fn from_f64(value: f64) -> Option<SeqNum> {
        if value.is_finite() && value >= 0.0 && value.fract() == 0.0 {
            // In range and integral, so the cast is exact.
            SeqNum::new(value as u64)
        } else {
            None
        }
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for SeqNum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        SeqNum::new(value).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "sequence number {value} is beyond 2^53-1, the largest exact integer in JavaScript"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_safe_integers_only() {
        assert_eq!(SeqNum::new(0), Some(SeqNum::ROOT));
        assert_eq!(
            SeqNum::new(MAX_SAFE_INTEGER).map(SeqNum::get),
            Some(MAX_SAFE_INTEGER)
        );
        assert_eq!(SeqNum::new(MAX_SAFE_INTEGER + 1), None);
        assert_eq!(SeqNum::new(MAX_SAFE_INTEGER).and_then(SeqNum::next), None);
    }

    #[test]
    fn deserializes_from_json() {
        let seq: SeqNum = serde_json::from_str("42").unwrap();
        assert_eq!(seq.get(), 42);
        assert!(serde_json::from_str::<SeqNum>("-1").is_err());
        assert!(serde_json::from_str::<SeqNum>("1.5").is_err());
        assert!(serde_json::from_str::<SeqNum>("9007199254740992").is_err());
        assert!(serde_json::from_str::<SeqNum>("\"3\"").is_err());
    }

    #[test]
    fn converts_js_numbers() {
        assert_eq!(SeqNum::from_f64(7.0).map(SeqNum::get), Some(7));
        assert_eq!(SeqNum::from_f64(-1.0), None);
        assert_eq!(SeqNum::from_f64(0.5), None);
        assert_eq!(SeqNum::from_f64(f64::NAN), None);
        assert_eq!(SeqNum::from_f64(9007199254740992.0), None);
    }
}
