//! Offsets: the Durable Streams protocol's printed form of a log position.
//!
//! An offset names the position after some number of entries: `%016d_%016d`, whose second
//! part is that count (a [`SeqNum`]) and whose first part is reserved (always 0 here), the
//! de facto format every implementation shares. Zero-padding makes lexicographic order equal
//! numeric order, as the protocol requires. `-1` (the start) and `now` (the tail) are
//! sentinels clients send and servers never emit.

use super::seq::SeqNum;
use std::fmt;

/// A position in a stream, after `seq` entries.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub SeqNum);

impl Offset {
    /// The position before the first entry.
    pub const START: Offset = Offset(SeqNum::ROOT);
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016}_{:016}", 0, self.0.get())
    }
}

/// Where a read starts, as a client asks for it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    /// `-1` (or no offset at all).
    Start,
    /// `now`: the current tail.
    Now,
    At(Offset),
}

/// Why an offset was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffsetError {
    #[error("offset must be -1, now, or <digits>_<digits>")]
    Malformed,
    #[error("offset does not belong to this stream")]
    Foreign,
}

/// Parses an offset as clients send it (query `offset`, `Stream-Fork-Offset`).
pub fn parse_offset(text: &str) -> Result<ReadFrom, OffsetError> {
    match text {
        "-1" => return Ok(ReadFrom::Start),
        "now" => return Ok(ReadFrom::Now),
        _ => {}
    }
    let (epoch, seq) = text.split_once('_').ok_or(OffsetError::Malformed)?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(epoch) || !digits(seq) {
        return Err(OffsetError::Malformed);
    }
    // Validated digits of at most 20 characters: u128 cannot overflow.
    let number = |s: &str| s.parse::<u128>().map_err(|_| OffsetError::Malformed);
    if number(epoch)? != 0 {
        return Err(OffsetError::Foreign);
    }
    let seq = u64::try_from(number(seq)?).map_err(|_| OffsetError::Foreign)?;
    SeqNum::new(seq)
        .map(|s| ReadFrom::At(Offset(s)))
        .ok_or(OffsetError::Foreign)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u64) -> Offset {
        Offset(SeqNum::new(n).unwrap())
    }

    #[test]
    fn formats_sortably() {
        assert_eq!(
            Offset::START.to_string(),
            "0000000000000000_0000000000000000"
        );
        assert_eq!(at(42).to_string(), "0000000000000000_0000000000000042");
        let mut printed: Vec<String> = [10, 9, 100, 2].iter().map(|&n| at(n).to_string()).collect();
        printed.sort();
        assert_eq!(printed, [2, 9, 10, 100].map(|n| at(n).to_string()));
    }

    #[test]
    fn parses_what_it_prints_and_the_sentinels() {
        assert_eq!(parse_offset(&at(7).to_string()), Ok(ReadFrom::At(at(7))));
        assert_eq!(parse_offset("0_7"), Ok(ReadFrom::At(at(7))));
        assert_eq!(parse_offset("-1"), Ok(ReadFrom::Start));
        assert_eq!(parse_offset("now"), Ok(ReadFrom::Now));
    }

    #[test]
    fn refuses_malformed_offsets() {
        for bad in [
            "", "abc", "1,2", "0_1 ", " 0_1", "0_", "_1", "0_1_2", "-2", "NOW", "0_-1", "0_1e3",
            "0_+1",
        ] {
            assert_eq!(parse_offset(bad), Err(OffsetError::Malformed), "{bad:?}");
        }
        assert_eq!(parse_offset("1_0"), Err(OffsetError::Foreign));
        assert_eq!(
            parse_offset("0_99999999999999999999"),
            Err(OffsetError::Foreign)
        );
    }
}
