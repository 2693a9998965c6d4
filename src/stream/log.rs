//! The log engine both protocols use: a [`LogStore`] with the log's header and tail cached, one
//! writer at a time, reads within a budget, and the live-reader notification.
//!
//! Writes go through a [`Writer`]: it holds the writer lock, so what it checks ([`Precondition`]s
//! against the cached state) still holds when it commits, and whatever its holder does after a
//! commit and before letting go (publishing to live sockets) happens in log order. The stored
//! entries are the truth: the tail is taken from them when the log is opened, and a failed commit
//! (which may have been written after all, say by D1 in transit) makes the next use read them
//! again instead of trusting the cache.

use super::condition::{check, Admission, Precondition, Refusal};
use super::lock::{AsyncMutex, Guard};
use super::readers::{Readers, Wake};
use super::seq::SeqNum;
use super::store::{Budget, Commit, Entry, Header, HeaderWrite, Loaded, LogStore, StorageError};
use std::cell::RefCell;

/// A log over a store.
pub struct Log<S: LogStore> {
    store: S,
    state: RefCell<Option<Loaded<S::Header>>>,
    writer: AsyncMutex,
    readers: Readers,
    /// The last read that reached its upper bound: the live readers one commit wakes all ask for
    /// what it appended, and all but the first get it from here, without a storage read.
    last_read: RefCell<Option<LastRead<S::Entry>>>,
    /// Counts resets, removals and failed commits: a read that spans one (a store read can wait,
    /// on R2 for instance) may hold entries of what was there before, and is refused.
    resets: std::cell::Cell<u64>,
}

/// A read of `(after, upto]` within `budget`, kept for the next reader asking the same.
struct LastRead<E> {
    after: SeqNum,
    upto: SeqNum,
    budget: Budget,
    entries: Vec<E>,
}

impl<S: LogStore> Log<S> {
    /// A log whose state is read from `store` on first use.
    pub fn new(store: S) -> Self {
        Log {
            store,
            state: RefCell::new(None),
            writer: AsyncMutex::new(),
            readers: Readers::default(),
            last_read: RefCell::new(None),
            resets: std::cell::Cell::new(0),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The header (`None`: nothing stored) and the tail.
    pub async fn state(&self) -> Result<Loaded<S::Header>, StorageError> {
        if let Some(state) = self.state.borrow().clone() {
            return Ok(state);
        }
        let _writer = self.writer.lock().await;
        self.load_locked().await
    }

    /// The tail: the position of the last entry (or the base of an empty log).
    pub async fn tail(&self) -> Result<SeqNum, StorageError> {
        Ok(self.state().await?.tail)
    }

    async fn load_locked(&self) -> Result<Loaded<S::Header>, StorageError> {
        if let Some(state) = self.state.borrow().clone() {
            return Ok(state);
        }
        let loaded = self.store.load().await?;
        *self.state.borrow_mut() = Some(loaded.clone());
        Ok(loaded)
    }

    /// Entries with `after < seq <= upto`, ascending, within `budget`.
    pub async fn read(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<S::Entry>, StorageError> {
        if upto <= after {
            return Ok(Vec::new());
        }
        if let Some(last) = self.last_read.borrow().as_ref() {
            if (last.after, last.upto, last.budget) == (after, upto, budget) {
                return Ok(last.entries.clone());
            }
        }
        let resets = self.resets.get();
        let entries = self.store.read(after, upto, budget).await?;
        if self.resets.get() != resets {
            return Err(StorageError(
                "the log was reset during the read: read again".into(),
            ));
        }
        // Entries never change once written (a reset or removal forgets this), so a read that
        // reached `upto` is the answer to the same question until then.
        if entries.last().map(Entry::seq) == Some(upto) {
            *self.last_read.borrow_mut() = Some(LastRead {
                after,
                upto,
                budget,
                entries: entries.clone(),
            });
        }
        Ok(entries)
    }

    /// How many entries have `after < seq <= upto`.
    pub async fn count(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
        if upto <= after {
            return Ok(0);
        }
        self.store.count(after, upto).await
    }

    /// Waits for the writer lock: the returned writer sees the current state and is the only one
    /// that may commit until it is dropped.
    pub async fn writer(&self) -> Result<Writer<'_, S>, StorageError> {
        let guard = self.writer.lock().await;
        let state = self.load_locked().await?;
        Ok(Writer {
            log: self,
            _guard: guard,
            state,
        })
    }

    /// Resolves at the next commit: what live readers hang on.
    pub fn wait(&self) -> Wake {
        self.readers.wait()
    }

    /// How many live readers wait.
    pub fn waiting_readers(&self) -> usize {
        self.readers.waiting()
    }
}

/// The only writer of a log, while it lives.
pub struct Writer<'a, S: LogStore> {
    log: &'a Log<S>,
    _guard: Guard<'a>,
    state: Loaded<S::Header>,
}

impl<S: LogStore> Writer<'_, S> {
    /// The header, `None` when nothing is stored.
    pub fn header(&self) -> Option<&S::Header> {
        self.state.header.as_ref()
    }

    /// The tail.
    pub fn tail(&self) -> SeqNum {
        self.state.tail
    }

    /// Checks `conditions`; reads the producer state a [`Precondition::Producer`] names.
    pub async fn check(
        &self,
        conditions: &[Precondition<'_>],
    ) -> Result<Result<Admission, Refusal>, StorageError> {
        let producer = match conditions.iter().find_map(|c| match c {
            Precondition::Producer(claim) => Some(claim),
            _ => None,
        }) {
            Some(claim) => self.log.store.producer(&claim.id).await?,
            None => None,
        };
        Ok(check(
            conditions,
            self.state.header.as_ref(),
            self.state.tail,
            producer,
        ))
    }

    /// Writes `commit` atomically and wakes live readers; returns the new tail. Entries must follow
    /// the tail (or, with `reset`, the new header's base) without a gap. On failure nothing may be
    /// assumed about storage: the log reads its state again on next use.
    pub async fn commit(
        &mut self,
        commit: Commit<'_, S::Entry, S::Header>,
    ) -> Result<SeqNum, StorageError> {
        let base = match (commit.reset, &commit.header) {
            (false, _) => self.state.tail,
            (true, HeaderWrite::Save(header)) => header.base(),
            (true, HeaderWrite::Keep) => self
                .state
                .header
                .as_ref()
                .map_or(SeqNum::ROOT, |header| header.base()),
            (true, HeaderWrite::Remove) => SeqNum::ROOT,
        };
        let mut tail = base;
        for entry in commit.entries {
            if tail.next() != Some(entry.seq()) {
                return Err(StorageError(format!(
                    "entry {} does not follow {tail}: a log has no gaps",
                    entry.seq()
                )));
            }
            tail = entry.seq();
        }
        let header = match &commit.header {
            HeaderWrite::Keep => self.state.header.clone(),
            HeaderWrite::Save(header) => Some((*header).clone()),
            HeaderWrite::Remove => None,
        };
        if commit.reset || matches!(commit.header, HeaderWrite::Remove) {
            *self.log.last_read.borrow_mut() = None;
            self.log.resets.set(self.log.resets.get() + 1);
        }
        if let Err(e) = self.log.store.commit(commit).await {
            *self.log.state.borrow_mut() = None;
            *self.log.last_read.borrow_mut() = None;
            self.log.resets.set(self.log.resets.get() + 1);
            return Err(e);
        }
        self.state = Loaded { header, tail };
        *self.log.state.borrow_mut() = Some(self.state.clone());
        self.log.readers.wake();
        Ok(tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::memory::MemoryStore;
    use crate::stream::message::Message as Bytes;
    use crate::stream::producer::{ProducerClaim, ProducerState, Verdict};
    use crate::stream::store::ProducerWrite;
    use futures::executor::block_on;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Waker};

    #[derive(Clone, Debug, Default, PartialEq)]
    struct Meta {
        base: u64,
        closed: bool,
    }

    impl Header for Meta {
        fn base(&self) -> SeqNum {
            seq(self.base)
        }
        fn closed(&self) -> bool {
            self.closed
        }
    }

    fn seq(n: u64) -> SeqNum {
        SeqNum::new(n).unwrap()
    }

    fn entries(from: u64, to: u64) -> Vec<Bytes> {
        (from..=to)
            .map(|n| Bytes::new(seq(n), vec![b'x'; 10]))
            .collect()
    }

    fn positions(entries: &[Bytes]) -> Vec<u64> {
        entries.iter().map(|e| e.seq().get()).collect()
    }

    fn created() -> Log<MemoryStore<Bytes, Meta>> {
        let log = Log::new(MemoryStore::default());
        block_on(async {
            let meta = Meta::default();
            let mut writer = log.writer().await.unwrap();
            writer
                .commit(Commit {
                    reset: true,
                    entries: &[],
                    header: HeaderWrite::Save(&meta),
                    producer: None,
                })
                .await
                .unwrap();
        });
        log
    }

    #[test]
    fn readers_asking_for_what_a_commit_appended_share_one_storage_read() {
        let log = created();
        let all = Budget {
            rows: 100,
            bytes: 1 << 20,
        };
        let append = |from: u64, to: u64| {
            block_on(async {
                let mut writer = log.writer().await.unwrap();
                writer
                    .commit(Commit::entries(&entries(from, to)))
                    .await
                    .unwrap();
            })
        };
        let read = |after: u64, upto: u64, budget: Budget| {
            positions(&block_on(log.read(seq(after), seq(upto), budget)).unwrap())
        };
        let reads = || log.store().reads();
        append(1, 3);
        let before = reads();
        for _ in 0..5 {
            assert_eq!(read(0, 3, all), [1, 2, 3]);
        }
        assert_eq!(reads() - before, 1, "five readers, one storage read");
        append(4, 5);
        assert_eq!(read(3, 5, all), [4, 5]);
        assert_eq!(read(3, 5, all), [4, 5]);
        assert_eq!(reads() - before, 2);
        // A read cut short by its budget is not kept: the next one asks storage again.
        let two = Budget {
            rows: 2,
            bytes: 1 << 20,
        };
        assert_eq!(read(0, 5, two), [1, 2]);
        assert_eq!(read(0, 5, two), [1, 2]);
        assert_eq!(reads() - before, 4);
        // A reset forgets what was read: the same range now holds other entries.
        assert_eq!(read(3, 5, all), [4, 5]);
        let before_reset = reads();
        block_on(async {
            let meta = Meta::default();
            let mut writer = log.writer().await.unwrap();
            writer
                .commit(Commit {
                    reset: true,
                    entries: &entries(1, 5)[..2],
                    header: HeaderWrite::Save(&meta),
                    producer: None,
                })
                .await
                .unwrap();
        });
        assert_eq!(read(3, 5, all), Vec::<u64>::new());
        assert_eq!(reads() - before_reset, 1);
    }

    #[test]
    fn appends_follow_the_tail_and_read_back_in_pages() {
        let log = created();
        block_on(async {
            let mut writer = log.writer().await.unwrap();
            assert_eq!(
                writer.commit(Commit::entries(&entries(1, 10))).await,
                Ok(seq(10))
            );
            let gap = writer.commit(Commit::entries(&entries(12, 12))).await;
            assert!(gap.is_err(), "{gap:?}");
            drop(writer);
            assert_eq!(log.tail().await, Ok(seq(10)));
            let page = log
                .read(
                    seq(2),
                    seq(8),
                    Budget {
                        rows: 3,
                        bytes: 1000,
                    },
                )
                .await
                .unwrap();
            assert_eq!(positions(&page), [3, 4, 5]);
            let by_bytes = log
                .read(
                    seq(0),
                    seq(10),
                    Budget {
                        rows: 100,
                        bytes: 25,
                    },
                )
                .await
                .unwrap();
            assert_eq!(positions(&by_bytes), [1, 2], "10 bytes each, 25 allowed");
            assert_eq!(log.count(seq(2), seq(8)).await, Ok(6));
            assert!(log
                .read(seq(10), seq(10), Budget::PAGE)
                .await
                .unwrap()
                .is_empty());
        });
    }

    #[test]
    fn an_entry_larger_than_the_budget_is_read_alone() {
        let log = created();
        block_on(async {
            let big = vec![
                Bytes::new(seq(1), vec![0; 5_000]),
                Bytes::new(seq(2), vec![0; 1]),
            ];
            log.writer()
                .await
                .unwrap()
                .commit(Commit::entries(&big))
                .await
                .unwrap();
            let page = log
                .read(
                    seq(0),
                    seq(2),
                    Budget {
                        rows: 10,
                        bytes: 100,
                    },
                )
                .await
                .unwrap();
            assert_eq!(positions(&page), [1]);
        });
    }

    #[test]
    fn preconditions_are_checked_under_the_lock_and_producers_commit_with_the_entries() {
        let log = created();
        block_on(async {
            let claim = ProducerClaim {
                id: "p".into(),
                epoch: 0,
                seq: 0,
            };
            let mut writer = log.writer().await.unwrap();
            let admission = writer
                .check(&[Precondition::Producer(&claim)])
                .await
                .unwrap()
                .unwrap();
            let state = admission.producer.unwrap();
            writer
                .commit(Commit {
                    producer: Some(ProducerWrite {
                        id: "p",
                        state,
                        now_ms: 5,
                        expire_before_ms: 0,
                    }),
                    ..Commit::entries(&entries(1, 1))
                })
                .await
                .unwrap();
            assert_eq!(
                writer
                    .check(&[Precondition::Producer(&claim)])
                    .await
                    .unwrap(),
                Err(Refusal::Producer(Verdict::Duplicate {
                    epoch: 0,
                    last_seq: 0
                }))
            );
            assert_eq!(
                writer
                    .check(&[Precondition::ExpectTail(seq(0))])
                    .await
                    .unwrap(),
                Err(Refusal::TailMoved {
                    tail: seq(1),
                    expected: seq(0)
                })
            );
            assert_eq!(
                log.store().producer("p").await,
                Ok(Some(ProducerState {
                    epoch: 0,
                    last_seq: 0
                }))
            );
        });
    }

    #[test]
    fn a_reset_restarts_the_log_at_the_new_base() {
        let log = created();
        block_on(async {
            let mut writer = log.writer().await.unwrap();
            writer
                .commit(Commit::entries(&entries(1, 5)))
                .await
                .unwrap();
            // a fork of something else's first 7 entries, then two of its own
            let fork = Meta {
                base: 7,
                closed: false,
            };
            let tail = writer
                .commit(Commit {
                    reset: true,
                    entries: &entries(8, 9),
                    header: HeaderWrite::Save(&fork),
                    producer: None,
                })
                .await
                .unwrap();
            assert_eq!(tail, seq(9));
            drop(writer);
            let all = log.read(seq(0), seq(9), Budget::PAGE).await.unwrap();
            assert_eq!(positions(&all), [8, 9], "the old entries are gone");
            let state = log.state().await.unwrap();
            assert_eq!(state.header, Some(fork));
            assert_eq!(state.tail, seq(9));
        });
    }

    #[test]
    fn a_failed_commit_makes_the_log_read_its_state_again() {
        let log = created();
        block_on(async {
            log.writer()
                .await
                .unwrap()
                .commit(Commit::entries(&entries(1, 2)))
                .await
                .unwrap();
            // 3..4 reach storage behind the cached tail (a write of a previous instance of the
            // object that D1 committed late); the next commit collides with them...
            log.store().insert_behind_the_log(entries(3, 4));
            log.store().fail_next_commit("UNIQUE constraint failed");
            let mut writer = log.writer().await.unwrap();
            assert!(writer
                .commit(Commit::entries(&entries(3, 3)))
                .await
                .is_err());
            drop(writer);
            // ...and the log is not wedged: it takes its tail from storage again.
            assert_eq!(log.tail().await, Ok(seq(4)));
            let mut writer = log.writer().await.unwrap();
            assert_eq!(
                writer.commit(Commit::entries(&entries(5, 5))).await,
                Ok(seq(5))
            );
        });
    }

    #[test]
    fn a_commit_wakes_the_waiting_readers() {
        let log = created();
        let mut cx = Context::from_waker(Waker::noop());
        let mut wake = log.wait();
        assert!(Pin::new(&mut wake).poll(&mut cx).is_pending());
        assert_eq!(log.waiting_readers(), 1);
        block_on(async {
            log.writer()
                .await
                .unwrap()
                .commit(Commit::entries(&entries(1, 1)))
                .await
                .unwrap();
        });
        assert!(Pin::new(&mut wake).poll(&mut cx).is_ready());
    }

    #[test]
    fn closed_is_read_from_the_header() {
        let log = Log::new(MemoryStore::<Bytes, Meta>::default());
        block_on(async {
            let closed = Meta {
                base: 0,
                closed: true,
            };
            let mut writer = log.writer().await.unwrap();
            assert!(writer.header().is_none());
            writer
                .commit(Commit {
                    reset: true,
                    entries: &[],
                    header: HeaderWrite::Save(&closed),
                    producer: None,
                })
                .await
                .unwrap();
            assert_eq!(
                writer.check(&[Precondition::Open]).await.unwrap(),
                Err(Refusal::Closed)
            );
        });
    }
}
