//! Cold segments, platform-free: a stream's oldest messages move, a full segment at a time, out of
//! its object's SQLite into immutable objects of a [`ColdTier`] (R2 on Cloudflare), and reads
//! stitch the two back together with the offsets unchanged.
//!
//! A segment is the messages `first..=last`, encoded as frames (position, length, bytes; see
//! [`encode_messages`]). A move writes the segment before its rows go, and records a key as
//! pending before writing it, so a move cut short at any point leaves at most an object no index
//! names, which [`collect`] deletes later; its rows stay until the index names the segment.

use crate::stream::{Budget, Entry, Message, SeqNum, StorageError};

/// When the oldest messages make a full segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentPolicy {
    /// Messages per segment.
    pub messages: u64,
    /// Bytes that fill a segment before it has its messages.
    pub bytes: u64,
}

impl Default for SegmentPolicy {
    fn default() -> Self {
        SegmentPolicy {
            messages: 1_000,
            bytes: 4 << 20,
        }
    }
}

impl SegmentPolicy {
    /// Whether a hot log of `messages` and `bytes` may hold a full segment.
    pub fn due(&self, messages: u64, bytes: u64) -> bool {
        messages >= self.messages || (bytes >= self.bytes && messages > 0)
    }

    /// The full segment at the start of `oldest` (positions and sizes of the oldest hot
    /// messages, in order): its last position, or `None` when they do not fill one.
    pub fn full_segment(&self, oldest: &[(SeqNum, u64)]) -> Option<SeqNum> {
        let mut bytes = 0u64;
        for (count, (seq, size)) in (1u64..).zip(oldest) {
            bytes = bytes.saturating_add(*size);
            if count >= self.messages || bytes >= self.bytes {
                return Some(*seq);
            }
        }
        None
    }
}

/// A segment as the index names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub first: SeqNum,
    pub last: SeqNum,
    pub key: String,
    /// Its size in message bytes.
    pub bytes: u64,
}

impl Segment {
    /// Its messages in `(after, upto]`, and about how many bytes they are.
    fn share(&self, after: SeqNum, upto: SeqNum) -> (u64, u64) {
        let from = self.first.get().max(after.get().saturating_add(1));
        let to = self.last.get().min(upto.get());
        let messages = (to + 1).saturating_sub(from);
        let all = (self.last.get() + 1)
            .saturating_sub(self.first.get())
            .max(1);
        (messages, self.bytes.saturating_mul(messages) / all)
    }
}

/// The segments one read of `(after, upto]` within `budget` needs: from the first that holds
/// messages after `after`, in order, as far as the budget reaches (its index knows their sizes),
/// and never past a gap. They are fetched together.
fn needed(segments: &[Segment], after: SeqNum, upto: SeqNum, budget: Budget) -> &[Segment] {
    let mut next = after.get().saturating_add(1);
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let mut start = None;
    let mut end = 0;
    for (i, segment) in segments.iter().enumerate() {
        if segment.last <= after || segment.first > upto {
            continue;
        }
        if segment.first.get() > next {
            break;
        }
        start.get_or_insert(i);
        end = i + 1;
        let (messages, size) = segment.share(after, upto);
        rows = rows.saturating_add(messages);
        bytes = bytes.saturating_add(size);
        next = segment.last.get().saturating_add(1);
        if rows >= budget.rows as u64 || bytes >= budget.bytes as u64 {
            break;
        }
    }
    match start {
        Some(start) => segments.get(start..end).unwrap_or_default(),
        None => &[],
    }
}

/// The key of the segment `first..=last` of the log incarnation `incarnation` (a stream's creation
/// time, a store's backend id): a log deleted and created again never reuses a key.
pub fn segment_key(incarnation: impl std::fmt::Display, first: SeqNum, last: SeqNum) -> String {
    format!("{incarnation}/{:016x}-{:016x}", first.get(), last.get())
}

/// Where segments are kept.
#[allow(async_fn_in_trait)]
pub trait ColdTier {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError>;
    /// The object at `key`; `None` if there is none.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
}

/// Messages as frames: for each, its position (8 bytes), its length (4 bytes), then its bytes.
/// Segments are kept so, and forks read their source's messages so.
pub fn encode_messages(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::with_capacity(messages.iter().map(|m| m.data.len() + 12).sum());
    for message in messages {
        out.extend_from_slice(&message.seq.get().to_be_bytes());
        out.extend_from_slice(&(message.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&message.data);
    }
    out
}

/// The frames of `bytes`, borrowed: position and message bytes; an error where they stop being
/// frames.
pub fn frames(mut bytes: &[u8]) -> impl Iterator<Item = Result<(SeqNum, &[u8]), StorageError>> {
    let bad = || StorageError("malformed message frames".into());
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let frame = (|| {
            let (seq, rest) = bytes.split_first_chunk::<8>().ok_or_else(bad)?;
            let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
            let len = u32::from_be_bytes(*len) as usize;
            let data = rest.get(..len).ok_or_else(bad)?;
            let seq = SeqNum::new(u64::from_be_bytes(*seq)).ok_or_else(bad)?;
            Ok((seq, data, rest.get(len..).ok_or_else(bad)?))
        })();
        Some(match frame {
            Ok((seq, data, rest)) => {
                bytes = rest;
                Ok((seq, data))
            }
            Err(e) => {
                bytes = &[];
                Err(e)
            }
        })
    })
}

/// The messages of frames; an error if they are not frames.
pub fn decode_messages(bytes: &[u8]) -> Result<Vec<Message>, StorageError> {
    frames(bytes)
        .map(|frame| frame.and_then(|(seq, data)| message_of(seq, data)))
        .collect()
}

/// A frame as a message (a stream's segments hold messages as they are).
pub fn message_of(seq: SeqNum, data: &[u8]) -> Result<Message, StorageError> {
    Ok(Message::new(seq, data.to_vec()))
}

/// Entries `(after, upto]` within `budget`, from `segments` (those of the index that overlap,
/// in order; `decode` turns a frame into an entry) and then the hot rows (`hot` reads
/// `(after, upto]` within a budget). A hot read that does not continue where the segments ended
/// (a move ran meanwhile) is left for the next read.
pub async fn read_stitched<E: Entry, C: ColdTier, D, F, Fut>(
    cold: &C,
    segments: &[Segment],
    decode: D,
    hot: F,
    after: SeqNum,
    upto: SeqNum,
    budget: Budget,
) -> Result<Vec<E>, StorageError>
where
    D: Fn(SeqNum, &[u8]) -> Result<E, StorageError>,
    F: FnOnce(SeqNum, SeqNum, Budget) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<E>, StorageError>>,
{
    let mut out: Vec<E> = Vec::new();
    let mut bytes = 0usize;
    let mut reached = after;
    let segments = needed(segments, after, upto, budget);
    let fetched =
        futures_util::future::join_all(segments.iter().map(|segment| cold.get(&segment.key))).await;
    for (segment, stored) in segments.iter().zip(fetched) {
        let stored =
            stored?.ok_or_else(|| StorageError(format!("segment {} is missing", segment.key)))?;
        let corrupt = || StorageError(format!("segment {} is corrupt", segment.key));
        // Only the messages a read takes are copied out of the segment, which is dropped after.
        let mut expected = segment.first.get();
        for frame in frames(&stored) {
            let (seq, data) = frame?;
            if seq.get() != expected {
                return Err(corrupt());
            }
            expected = expected.saturating_add(1);
            if seq <= reached || seq > upto {
                continue;
            }
            if !budget.admits(out.len(), bytes, data.len()) {
                return Ok(out);
            }
            bytes = bytes.saturating_add(data.len());
            reached = seq;
            out.push(decode(seq, data)?);
        }
        if expected != segment.last.get().saturating_add(1) {
            return Err(corrupt());
        }
    }
    if reached >= upto {
        return Ok(out);
    }
    let rest = Budget {
        rows: budget.rows.saturating_sub(out.len()),
        bytes: budget.bytes.saturating_sub(bytes),
    };
    if !out.is_empty() && (rest.rows == 0 || rest.bytes == 0) {
        return Ok(out);
    }
    let rows = hot(reached, upto, if out.is_empty() { budget } else { rest }).await?;
    let continues = rows
        .first()
        .is_some_and(|e| e.seq().get() == reached.get().saturating_add(1));
    if continues {
        for entry in rows {
            // Only what fits whole once something was read: the first row of a read is taken
            // however large.
            if !out.is_empty() && !budget.admits(out.len(), bytes, entry.size()) {
                break;
            }
            bytes = bytes.saturating_add(entry.size());
            out.push(entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    fn seq(n: u64) -> SeqNum {
        SeqNum::new(n).unwrap_or(SeqNum::ROOT)
    }

    fn messages(from: u64, to: u64) -> Vec<Message> {
        (from..=to)
            .map(|n| Message::new(seq(n), format!("m{n}").into_bytes()))
            .collect()
    }

    #[derive(Default)]
    struct Memory(RefCell<BTreeMap<String, Vec<u8>>>);

    impl ColdTier for Memory {
        async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
            self.0.borrow_mut().insert(key.to_owned(), bytes);
            Ok(())
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
            Ok(self.0.borrow().get(key).cloned())
        }
        async fn delete(&self, key: &str) -> Result<(), StorageError> {
            self.0.borrow_mut().remove(key);
            Ok(())
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("memory never waits"),
        }
    }

    /// Messages 1..=25: segments 1..=10 and 11..=20 in `cold`, 21..=25 hot.
    fn world() -> (Memory, Vec<Segment>, Vec<Message>) {
        let cold = Memory::default();
        let mut segments = Vec::new();
        for (first, last) in [(1, 10), (11, 20)] {
            let key = segment_key(7, seq(first), seq(last));
            block_on(cold.put(&key, encode_messages(&messages(first, last)))).ok();
            let bytes = messages(first, last)
                .iter()
                .map(|m| m.data.len() as u64)
                .sum();
            segments.push(Segment {
                first: seq(first),
                last: seq(last),
                key,
                bytes,
            });
        }
        (cold, segments, messages(21, 25))
    }

    /// The hot table of a test: `rows` read as SQLite would.
    fn hot_rows(
        rows: &[Message],
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Message>, StorageError> {
        budget.take(
            rows.iter()
                .filter(|m| m.seq > after && m.seq <= upto)
                .cloned()
                .map(Ok::<_, StorageError>),
        )
    }

    fn read(
        cold: &Memory,
        segments: &[Segment],
        hot: &[Message],
        after: u64,
        upto: u64,
        budget: Budget,
    ) -> Vec<u64> {
        let hot_read = |after, upto, budget| std::future::ready(hot_rows(hot, after, upto, budget));
        block_on(read_stitched(
            cold,
            segments,
            message_of,
            hot_read,
            seq(after),
            seq(upto),
            budget,
        ))
        .unwrap_or_default()
        .iter()
        .map(|m| m.seq.get())
        .collect()
    }

    const ALL: Budget = Budget {
        rows: 1_000,
        bytes: 1 << 20,
    };

    #[test]
    fn frames_round_trip_and_malformed_ones_are_errors() {
        let all = messages(1, 5);
        assert_eq!(decode_messages(&encode_messages(&all)), Ok(all));
        assert!(decode_messages(&[0, 0, 0]).is_err());
        let mut cut = encode_messages(&messages(1, 1));
        cut.pop();
        assert!(decode_messages(&cut).is_err());
    }

    #[test]
    fn reads_stitch_segments_and_hot_rows_with_offsets_unchanged() {
        let (cold, segments, hot) = world();
        assert_eq!(
            read(&cold, &segments, &hot, 0, 25, ALL),
            (1..=25).collect::<Vec<_>>()
        );
        assert_eq!(
            read(&cold, &segments, &hot, 5, 12, ALL),
            (6..=12).collect::<Vec<_>>()
        );
        assert_eq!(
            read(&cold, &segments, &hot, 18, 23, ALL),
            (19..=23).collect::<Vec<_>>()
        );
        assert_eq!(
            read(&cold, &segments, &hot, 20, 25, ALL),
            (21..=25).collect::<Vec<_>>()
        );
        assert_eq!(read(&cold, &segments, &hot, 25, 25, ALL), Vec::<u64>::new());
    }

    #[test]
    fn reads_keep_to_their_budget_across_the_tiers() {
        let (cold, segments, hot) = world();
        let rows = |rows| Budget {
            rows,
            bytes: 1 << 20,
        };
        assert_eq!(
            read(&cold, &segments, &hot, 0, 25, rows(4)),
            vec![1, 2, 3, 4]
        );
        assert_eq!(
            read(&cold, &segments, &hot, 8, 25, rows(5)),
            vec![9, 10, 11, 12, 13]
        );
        assert_eq!(
            read(&cold, &segments, &hot, 18, 25, rows(5)),
            vec![19, 20, 21, 22, 23]
        );
        // Bytes: "m1".."m9" are 2 bytes, "m10".. 3; at least one message, then only whole ones.
        let bytes = |bytes| Budget { rows: 100, bytes };
        assert_eq!(read(&cold, &segments, &hot, 0, 25, bytes(5)), vec![1, 2]);
        assert_eq!(read(&cold, &segments, &hot, 0, 25, bytes(1)), vec![1]);
    }

    #[test]
    fn a_hot_read_that_skipped_moved_rows_is_left_for_the_next_read() {
        let (cold, segments, _) = world();
        // Rows 21..=30 moved meanwhile: the hot table starts at 31.
        let hot = messages(31, 35);
        assert_eq!(
            read(&cold, &segments, &hot, 15, 35, ALL),
            (16..=20).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_segment_that_is_not_what_the_index_says_is_an_error() {
        let (cold, segments, hot) = world();
        let hot_read =
            |after, upto, budget| std::future::ready(hot_rows(&hot, after, upto, budget));
        // A gap inside, and one cut short.
        let mut gapped = messages(11, 20);
        gapped.remove(3);
        block_on(cold.put(&segments[1].key, encode_messages(&gapped))).ok();
        let got = block_on(read_stitched(
            &cold,
            &segments,
            message_of,
            hot_read,
            seq(0),
            seq(25),
            ALL,
        ));
        assert!(got.is_err());
        block_on(cold.put(&segments[1].key, encode_messages(&messages(11, 19)))).ok();
        let hot_read =
            |after, upto, budget| std::future::ready(hot_rows(&hot, after, upto, budget));
        let got = block_on(read_stitched(
            &cold,
            &segments,
            message_of,
            hot_read,
            seq(0),
            seq(25),
            ALL,
        ));
        assert!(got.is_err());
    }

    #[test]
    fn a_missing_segment_is_an_error_not_a_gap() {
        let (cold, segments, hot) = world();
        block_on(cold.delete(&segments[1].key)).ok();
        let hot_read =
            |after, upto, budget| std::future::ready(hot_rows(&hot, after, upto, budget));
        let got = block_on(read_stitched(
            &cold,
            &segments,
            message_of,
            hot_read,
            seq(0),
            seq(25),
            ALL,
        ));
        assert!(got.is_err());
    }

    #[test]
    fn the_policy_fills_segments_by_messages_or_bytes() {
        let policy = SegmentPolicy {
            messages: 3,
            bytes: 100,
        };
        assert!(!policy.due(2, 99));
        assert!(policy.due(3, 0));
        assert!(policy.due(1, 100));
        assert!(!policy.due(0, 100));
        let rows = |sizes: &[u64]| -> Vec<(SeqNum, u64)> {
            (1u64..).zip(sizes).map(|(n, s)| (seq(n), *s)).collect()
        };
        assert_eq!(policy.full_segment(&rows(&[1, 1])), None);
        assert_eq!(policy.full_segment(&rows(&[1, 1, 1, 1])), Some(seq(3)));
        assert_eq!(policy.full_segment(&rows(&[60, 50, 1])), Some(seq(2)));
        assert_eq!(policy.full_segment(&rows(&[500])), Some(seq(1)));
    }

    #[test]
    fn a_read_fetches_the_segments_its_budget_reaches() {
        let (_, segments, _) = world();
        let rows = |rows| Budget {
            rows,
            bytes: 1 << 20,
        };
        let keys = |after, upto, budget| -> Vec<u64> {
            needed(&segments, seq(after), seq(upto), budget)
                .iter()
                .map(|s| s.first.get())
                .collect()
        };
        assert_eq!(keys(0, 25, ALL), vec![1, 11]);
        assert_eq!(keys(0, 25, rows(10)), vec![1]);
        assert_eq!(keys(0, 25, rows(11)), vec![1, 11]);
        assert_eq!(keys(5, 25, rows(5)), vec![1]);
        assert_eq!(keys(12, 25, ALL), vec![11]);
        assert_eq!(keys(20, 25, ALL), Vec::<u64>::new());
        assert_eq!(keys(0, 5, ALL), vec![1]);
        // A gap before the next segment: only what precedes it.
        let gapped = [
            segments[0].clone(),
            Segment {
                first: seq(15),
                ..segments[1].clone()
            },
        ];
        assert_eq!(needed(&gapped, seq(0), seq(25), ALL).len(), 1);
    }

    #[test]
    fn keys_differ_by_incarnation_and_range() {
        assert_ne!(
            segment_key(1, seq(1), seq(10)),
            segment_key(2, seq(1), seq(10))
        );
        assert_ne!(
            segment_key(1, seq(1), seq(10)),
            segment_key(1, seq(1), seq(11))
        );
    }
}
