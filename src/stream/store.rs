//! What a log engine needs from storage: the [`LogStore`] trait and the shapes that cross it.
//!
//! A log is gap-free: its entries are numbered `base + 1 ..= tail`, where `base` is where the log
//! starts (0, or a fork's inherited prefix, which lives elsewhere). Beside the entries a store keeps
//! a header (the protocol's metadata of the log) and the fencing state of idempotent producers. A
//! [`Commit`] writes entries, header and producer state all or nothing. Reads are bounded by a
//! [`Budget`] of rows and bytes, so no read holds more than about one page in memory whatever the
//! size of the log.

use super::producer::ProducerState;
use super::seq::SeqNum;

/// A storage failure, with a message fit for logs and error responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

/// How much one read may return: at most `rows` entries and, beyond the first entry, at most
/// `bytes` of them (an entry larger than the budget is still returned, alone).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub rows: usize,
    pub bytes: usize,
}

impl Budget {
    /// What one read holds at most, whatever the size of the log: about 1 MB of stored text (a
    /// large event or two), of which a read briefly holds a few copies on its way out.
    pub const PAGE: Budget = Budget {
        rows: 256,
        bytes: 1_000_000,
    };

    /// Whether a page of `rows` entries and `bytes` bytes may take one more of `size` bytes.
    pub fn admits(self, rows: usize, bytes: usize, size: usize) -> bool {
        rows == 0 || (rows < self.rows && bytes.saturating_add(size) <= self.bytes)
    }

    /// The entries of `rows`, in order, while the budget admits them: for a store whose rows
    /// arrive one at a time (a lazy cursor), which stops reading at the first one that does not
    /// fit (that one is held briefly, and dropped).
    pub fn take<T: Entry, E>(
        self,
        rows: impl IntoIterator<Item = Result<T, E>>,
    ) -> Result<Vec<T>, E> {
        let mut page = Vec::new();
        let mut bytes = 0usize;
        for row in rows {
            let entry = row?;
            let size = entry.size();
            if !self.admits(page.len(), bytes, size) {
                break;
            }
            bytes = bytes.saturating_add(size);
            page.push(entry);
        }
        Ok(page)
    }
}

/// An entry of a log (cloned when one read serves several readers).
pub trait Entry: Clone {
    /// Its position: the log's `base` plus its rank.
    fn seq(&self) -> SeqNum;
    /// What it costs a read's byte [`Budget`].
    fn size(&self) -> usize;
}

/// The protocol's metadata of a log, with what the engine's rules ask of it. The defaults suit a
/// log that starts at 0, is never closed and has no content type (a LiveStore store).
pub trait Header: Clone {
    /// Entries are numbered from `base() + 1`; what lies below is inherited (a fork's prefix).
    fn base(&self) -> SeqNum {
        SeqNum::ROOT
    }
    /// Closed logs take no more entries.
    fn closed(&self) -> bool {
        false
    }
    /// Whether data of `content_type` may be appended.
    fn accepts_content_type(&self, content_type: &str) -> bool {
        let _ = content_type;
        true
    }
    /// The last `Stream-Seq` accepted, if any.
    fn last_stream_seq(&self) -> Option<&str> {
        None
    }
}

/// A log whose protocol keeps no metadata in it (a LiveStore store).
impl Header for () {}

/// What a store holds, as read when the log is opened: its header (`None` when nothing is stored)
/// and its tail, taken from the entries themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded<H> {
    pub header: Option<H>,
    pub tail: SeqNum,
}

/// What a commit does to the header.
#[derive(Debug)]
pub enum HeaderWrite<'a, H> {
    Keep,
    Save(&'a H),
    /// Removes it (with `reset`, nothing of the log remains).
    Remove,
}

/// A producer's new fencing state, written with the entries it admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerWrite<'a> {
    pub id: &'a str,
    pub state: ProducerState,
    pub now_ms: u64,
    /// States last written before this are dropped in the same commit, which keeps the
    /// producer table bounded.
    pub expire_before_ms: u64,
}

/// One atomic write: all of it or nothing.
#[derive(Debug)]
pub struct Commit<'a, E, H> {
    /// Drops every entry and producer state first: a new incarnation of the log, or its end.
    pub reset: bool,
    /// Entries that follow the tail (or, after a reset, the new header's base) without a gap.
    pub entries: &'a [E],
    pub header: HeaderWrite<'a, H>,
    pub producer: Option<ProducerWrite<'a>>,
}

impl<'a, E, H> Commit<'a, E, H> {
    /// A commit of `entries` alone.
    pub fn entries(entries: &'a [E]) -> Self {
        Commit {
            reset: false,
            entries,
            header: HeaderWrite::Keep,
            producer: None,
        }
    }

    /// A commit that only writes the header.
    pub fn header(header: HeaderWrite<'a, H>) -> Self {
        Commit {
            reset: false,
            entries: &[],
            header,
            producer: None,
        }
    }
}

/// Durable storage of one log. Async: a Durable Object's own SQLite answers at once, D1 is a real
/// round trip; single-threaded (wasm), so no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait LogStore {
    type Entry: Entry;
    type Header: Header;

    /// The header and the tail, from storage.
    async fn load(&self) -> Result<Loaded<Self::Header>, StorageError>;

    /// Entries with `after < seq <= upto`, ascending, within `budget`.
    async fn read(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Self::Entry>, StorageError>;

    /// How many entries have `after < seq <= upto`.
    async fn count(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError>;

    /// The fencing state of producer `id`, if it has one.
    async fn producer(&self, id: &str) -> Result<Option<ProducerState>, StorageError>;

    /// Writes `commit` atomically.
    async fn commit(
        &self,
        commit: Commit<'_, Self::Entry, Self::Header>,
    ) -> Result<(), StorageError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_always_admits_one_entry_then_counts_rows_and_bytes() {
        let budget = Budget { rows: 3, bytes: 10 };
        assert!(budget.admits(0, 0, 1_000), "the first entry, however large");
        assert!(budget.admits(1, 4, 6));
        assert!(!budget.admits(1, 4, 7));
        assert!(!budget.admits(3, 0, 0), "rows");
    }
}
