//! The event log: appends that name the head they expect, ranged reads, and a head that is
//! recovered from storage when the log is opened.
//!
//! The log's entries are the source of truth. The head is also checkpointed elsewhere (for
//! LiveStore, the `context_7` row in DO SQLite), but storage engines such as D1 cannot share
//! a transaction with that checkpoint: a crash between the two leaves the checkpoint behind.
//! So opening the log always takes the head from the entries themselves and repairs the
//! checkpoint, and no acknowledged entry is lost or written twice.

use super::lock::AsyncMutex;
use super::seq::SeqNum;
use std::cell::Cell;

/// What the log needs from an entry: where it sits and what it follows.
pub trait LogEntry {
    /// This entry's sequence number.
    fn seq(&self) -> SeqNum;
    /// The sequence number this entry follows.
    fn parent(&self) -> SeqNum;
}

/// A storage failure, with a message fit for logs and error responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StorageError(pub String);

/// Durable storage of entries. `append` must be atomic: all entries or none.
#[allow(async_fn_in_trait)] // single-threaded wasm: no Send bound wanted
pub trait LogStorage {
    /// The stored entry type.
    type Entry: LogEntry;
    /// The highest stored sequence number, `None` when empty.
    async fn max_seq(&self) -> Result<Option<SeqNum>, StorageError>;
    /// Stores all entries atomically.
    async fn append(&self, entries: &[Self::Entry]) -> Result<(), StorageError>;
    /// How many entries have `after < seq <= upto`.
    async fn count_range(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError>;
    /// Up to `limit` entries with `after < seq <= upto`, ascending.
    async fn read_range(
        &self,
        after: SeqNum,
        upto: SeqNum,
        limit: usize,
    ) -> Result<Vec<Self::Entry>, StorageError>;
    /// True when `append` itself moves the head checkpoint forward in the same atomic write
    /// (the checkpoint lives beside the entries), so the log need not save it separately.
    fn appends_checkpoint_head(&self) -> bool {
        false
    }
}

/// Where the head is remembered between runs, apart from the entries.
pub trait HeadCheckpoint {
    /// The last saved head, if any.
    fn load(&self) -> Result<Option<SeqNum>, StorageError>;
    /// Saves the head.
    fn save(&self, head: SeqNum) -> Result<(), StorageError>;
}

/// Why an append was refused. Nothing was stored in any case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The batch does not start at the current head.
    #[error("the batch starts after {provided} but the head is {head}")]
    Conflict { head: SeqNum, provided: SeqNum },
    /// The batch is not a contiguous chain (`seq = parent + 1`, each entry following the last).
    #[error("entry {index} of the batch (seqNum {seq}, parentSeqNum {parent}) does not follow {expected_parent} with seqNum {expected_seq}")]
    NotAChain {
        index: usize,
        seq: SeqNum,
        parent: SeqNum,
        expected_parent: SeqNum,
        expected_seq: u64,
    },
    /// Storage failed.
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
}

/// An event log over a storage engine and a head checkpoint.
pub struct EventLog<S, H> {
    storage: S,
    checkpoint: H,
    head: Cell<Option<SeqNum>>,
    /// Serializes appends and head recovery: one writer at a time per log.
    writer: AsyncMutex,
}

impl<S: LogStorage, H: HeadCheckpoint> EventLog<S, H> {
    /// A log whose head is recovered lazily, on first use.
    pub fn new(storage: S, checkpoint: H) -> Self {
        EventLog {
            storage,
            checkpoint,
            head: Cell::new(None),
            writer: AsyncMutex::new(),
        }
    }

    /// The storage engine.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The current head (the last entry's sequence number, or ROOT).
    pub async fn head(&self) -> Result<SeqNum, StorageError> {
        if let Some(head) = self.head.get() {
            return Ok(head);
        }
        let _writer = self.writer.lock().await;
        self.head_locked().await
    }

    /// The head, with the writer lock held by the caller.
    async fn head_locked(&self) -> Result<SeqNum, StorageError> {
        if let Some(head) = self.head.get() {
            return Ok(head);
        }
        let stored = self.storage.max_seq().await?.unwrap_or(SeqNum::ROOT);
        if self.checkpoint.load()? != Some(stored) {
            self.checkpoint.save(stored)?;
        }
        self.head.set(Some(stored));
        Ok(stored)
    }

    /// Appends `entries` if the first one follows the current head and they form a contiguous
    /// chain. `publish` runs after the entries are durable and before the next writer may
    /// append, so subscribers see batches in log order. Returns the new head.
    pub async fn append(
        &self,
        entries: &[S::Entry],
        publish: impl FnOnce(&[S::Entry]),
    ) -> Result<SeqNum, AppendError> {
        let Some(first) = entries.first() else {
            return Ok(self.head().await?);
        };
        let _writer = self.writer.lock().await;
        let head = self.head_locked().await?;
        if first.parent() != head {
            return Err(AppendError::Conflict {
                head,
                provided: first.parent(),
            });
        }
        let new_head = check_chain(head, entries)?;
        if let Err(e) = self.storage.append(entries).await {
            // Storage may hold entries past our head after all: a D1 write reported failed in
            // transit but committed, or one a dead instance of the object sent and D1 committed
            // after this one read its head. Take the head from storage again, or every later
            // append would collide with them and pulls would stop short of them.
            self.head.set(None);
            return Err(e.into());
        }
        self.head.set(Some(new_head));
        // The entries are the truth and the head is recovered from them on the next open,
        // so a failed checkpoint costs nothing but a repair then.
        if !self.storage.appends_checkpoint_head() {
            let _ = self.checkpoint.save(new_head);
        }
        publish(entries);
        Ok(new_head)
    }

    /// Runs `f` with appends held off, passing the current head. Used to close the gap
    /// between a catch-up read and a live subscription.
    pub async fn with_appends_paused<T>(
        &self,
        f: impl AsyncFnOnce(SeqNum) -> T,
    ) -> Result<T, StorageError> {
        let _writer = self.writer.lock().await;
        let head = self.head_locked().await?;
        Ok(f(head).await)
    }

    /// How many entries have `after < seq <= upto`.
    pub async fn count(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
        if upto <= after {
            return Ok(0);
        }
        self.storage.count_range(after, upto).await
    }

    /// Up to `limit` entries with `after < seq <= upto`, ascending.
    pub async fn read(
        &self,
        after: SeqNum,
        upto: SeqNum,
        limit: usize,
    ) -> Result<Vec<S::Entry>, StorageError> {
        if upto <= after || limit == 0 {
            return Ok(Vec::new());
        }
        self.storage.read_range(after, upto, limit).await
    }
}

/// Checks that `entries` form a contiguous chain starting after `head`; returns the last
/// sequence number.
pub fn check_chain<E: LogEntry>(head: SeqNum, entries: &[E]) -> Result<SeqNum, AppendError> {
    let mut expected_parent = head;
    for (index, entry) in entries.iter().enumerate() {
        let expected_seq = expected_parent.get() + 1;
        if entry.parent() != expected_parent || entry.seq().get() != expected_seq {
            return Err(AppendError::NotAChain {
                index,
                seq: entry.seq(),
                parent: entry.parent(),
                expected_parent,
                expected_seq,
            });
        }
        expected_parent = entry.seq();
    }
    Ok(expected_parent)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures::executor::block_on;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[derive(Debug, Clone, PartialEq)]
    pub struct Entry {
        pub seq: SeqNum,
        pub parent: SeqNum,
    }

    impl LogEntry for Entry {
        fn seq(&self) -> SeqNum {
            self.seq
        }
        fn parent(&self) -> SeqNum {
            self.parent
        }
    }

    pub fn chain(from: u64, to: u64) -> Vec<Entry> {
        (from..=to)
            .map(|s| Entry {
                seq: SeqNum::new(s).unwrap(),
                parent: SeqNum::new(s - 1).unwrap(),
            })
            .collect()
    }

    /// In-memory storage shared between "runs" of a log, with a switch that makes appends fail.
    #[derive(Clone, Default)]
    pub struct Memory {
        pub rows: Rc<RefCell<Vec<Entry>>>,
        pub fail_appends: Rc<Cell<bool>>,
    }

    impl LogStorage for Memory {
        type Entry = Entry;
        async fn max_seq(&self) -> Result<Option<SeqNum>, StorageError> {
            Ok(self.rows.borrow().iter().map(|e| e.seq).max())
        }
        async fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
            if self.fail_appends.get() {
                return Err(StorageError("disk full".into()));
            }
            let mut rows = self.rows.borrow_mut();
            if entries.iter().any(|e| rows.iter().any(|r| r.seq == e.seq)) {
                return Err(StorageError("UNIQUE constraint failed".into()));
            }
            rows.extend(entries.iter().cloned());
            Ok(())
        }
        async fn count_range(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
            let rows = self.rows.borrow();
            Ok(rows
                .iter()
                .filter(|e| e.seq > after && e.seq <= upto)
                .count() as u64)
        }
        async fn read_range(
            &self,
            after: SeqNum,
            upto: SeqNum,
            limit: usize,
        ) -> Result<Vec<Entry>, StorageError> {
            let mut rows: Vec<Entry> = self
                .rows
                .borrow()
                .iter()
                .filter(|e| e.seq > after && e.seq <= upto)
                .cloned()
                .collect();
            rows.sort_by_key(|e| e.seq);
            rows.truncate(limit);
            Ok(rows)
        }
    }

    /// A checkpoint that can be told to stop saving, as if the process died before it.
    #[derive(Clone, Default)]
    pub struct Checkpoint {
        pub head: Rc<Cell<Option<SeqNum>>>,
        pub frozen: Rc<Cell<bool>>,
    }

    impl HeadCheckpoint for Checkpoint {
        fn load(&self) -> Result<Option<SeqNum>, StorageError> {
            Ok(self.head.get())
        }
        fn save(&self, head: SeqNum) -> Result<(), StorageError> {
            if !self.frozen.get() {
                self.head.set(Some(head));
            }
            Ok(())
        }
    }

    fn seq(n: u64) -> SeqNum {
        SeqNum::new(n).unwrap()
    }

    #[test]
    fn appends_in_order_and_publishes_after_storing() {
        let storage = Memory::default();
        let log = EventLog::new(storage.clone(), Checkpoint::default());
        let published = RefCell::new(Vec::new());
        let head = block_on(log.append(&chain(1, 3), |e| {
            assert_eq!(storage.rows.borrow().len(), 3, "publish only after storing");
            published.borrow_mut().extend(e.iter().map(|e| e.seq.get()));
        }))
        .unwrap();
        assert_eq!(head, seq(3));
        assert_eq!(*published.borrow(), vec![1, 2, 3]);
        assert_eq!(block_on(log.head()).unwrap(), seq(3));
    }

    #[test]
    fn stale_or_future_parent_is_a_conflict_and_stores_nothing() {
        let storage = Memory::default();
        let log = EventLog::new(storage.clone(), Checkpoint::default());
        block_on(log.append(&chain(1, 2), |_| {})).unwrap();
        for start in [1, 2, 4] {
            let err = block_on(log.append(&chain(start, start + 1), |_| panic!("published")))
                .unwrap_err();
            assert_eq!(
                err,
                AppendError::Conflict {
                    head: seq(2),
                    provided: seq(start - 1)
                }
            );
        }
        assert_eq!(storage.rows.borrow().len(), 2);
    }

    #[test]
    fn gaps_and_repeats_are_refused() {
        let storage = Memory::default();
        let log = EventLog::new(storage.clone(), Checkpoint::default());
        let mut gap = chain(1, 3);
        gap[2] = Entry {
            seq: seq(5),
            parent: seq(2),
        };
        assert!(matches!(
            block_on(log.append(&gap, |_| {})),
            Err(AppendError::NotAChain { index: 2, .. })
        ));
        let repeat = vec![chain(1, 1)[0].clone(), chain(1, 1)[0].clone()];
        assert!(matches!(
            block_on(log.append(&repeat, |_| {})),
            Err(AppendError::NotAChain { index: 1, .. })
        ));
        let skips_a_number = vec![Entry {
            seq: seq(3),
            parent: seq(0),
        }];
        assert!(matches!(
            block_on(log.append(&skips_a_number, |_| {})),
            Err(AppendError::NotAChain { index: 0, .. })
        ));
        assert!(storage.rows.borrow().is_empty());
        assert_eq!(block_on(log.head()).unwrap(), SeqNum::ROOT);
    }

    #[test]
    fn storage_failure_keeps_the_head() {
        let storage = Memory::default();
        let log = EventLog::new(storage.clone(), Checkpoint::default());
        block_on(log.append(&chain(1, 1), |_| {})).unwrap();
        storage.fail_appends.set(true);
        let err = block_on(log.append(&chain(2, 2), |_| panic!("published"))).unwrap_err();
        assert!(matches!(err, AppendError::Storage(_)));
        storage.fail_appends.set(false);
        assert_eq!(block_on(log.append(&chain(2, 2), |_| {})).unwrap(), seq(2));
    }

    #[test]
    fn head_is_recovered_from_entries_after_a_crash_before_the_checkpoint() {
        let storage = Memory::default();
        let checkpoint = Checkpoint::default();
        let log = EventLog::new(storage.clone(), checkpoint.clone());
        block_on(log.append(&chain(1, 2), |_| {})).unwrap();
        // The process dies after storing 3..4 and before saving the head.
        checkpoint.frozen.set(true);
        block_on(log.append(&chain(3, 4), |_| {})).unwrap();
        assert_eq!(checkpoint.head.get(), Some(seq(2)));
        checkpoint.frozen.set(false);
        drop(log);

        let reopened = EventLog::new(storage.clone(), checkpoint.clone());
        assert_eq!(block_on(reopened.head()).unwrap(), seq(4));
        assert_eq!(checkpoint.head.get(), Some(seq(4)), "checkpoint repaired");
        // A client still on the old head must rebase; nothing is written twice.
        assert!(matches!(
            block_on(reopened.append(&chain(3, 3), |_| {})),
            Err(AppendError::Conflict { .. })
        ));
        block_on(reopened.append(&chain(5, 5), |_| {})).unwrap();
        let seqs: Vec<u64> = storage.rows.borrow().iter().map(|e| e.seq.get()).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn entries_stored_behind_the_head_are_found_after_a_failed_append() {
        let storage = Memory::default();
        let log = EventLog::new(storage.clone(), Checkpoint::default());
        block_on(log.append(&chain(1, 2), |_| {})).unwrap();
        // 3..4 land after the log read its head, e.g. a write the previous instance of the
        // object sent before it died, committed by D1 after this instance started.
        storage.rows.borrow_mut().extend(chain(3, 4));
        let err = block_on(log.append(&chain(3, 3), |_| panic!("published"))).unwrap_err();
        assert!(matches!(err, AppendError::Storage(_)), "{err:?}");
        // Not wedged: the head is taken from storage again, the writer is told to rebase.
        assert_eq!(block_on(log.head()).unwrap(), seq(4));
        assert_eq!(
            block_on(log.append(&chain(3, 3), |_| {})).unwrap_err(),
            AppendError::Conflict {
                head: seq(4),
                provided: seq(2)
            }
        );
        assert_eq!(block_on(log.append(&chain(5, 5), |_| {})).unwrap(), seq(5));
    }

    #[test]
    fn reads_ranges_in_pages() {
        let storage = Memory::default();
        let log = EventLog::new(storage, Checkpoint::default());
        block_on(log.append(&chain(1, 10), |_| {})).unwrap();
        let page = block_on(log.read(seq(2), seq(8), 3)).unwrap();
        assert_eq!(
            page.iter().map(|e| e.seq.get()).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(block_on(log.count(seq(2), seq(8))).unwrap(), 6);
        assert_eq!(block_on(log.count(seq(8), seq(2))).unwrap(), 0);
        assert!(block_on(log.read(seq(10), seq(10), 5)).unwrap().is_empty());
    }

    #[test]
    fn paused_section_sees_a_stable_head() {
        let log = EventLog::new(Memory::default(), Checkpoint::default());
        block_on(log.append(&chain(1, 1), |_| {})).unwrap();
        let seen = block_on(log.with_appends_paused(async |head| head)).unwrap();
        assert_eq!(seen, seq(1));
    }
}
