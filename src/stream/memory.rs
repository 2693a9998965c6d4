//! The in-memory [`LogStore`], for native tests of the engine and of the protocols on it, with
//! switches that make storage misbehave the way real storage can.

use super::producer::ProducerState;
use super::seq::SeqNum;
use super::store::{Budget, Commit, Entry, Header, HeaderWrite, Loaded, LogStore, StorageError};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// A log in memory. Clones share the same data (a "restart" is a new log over a clone).
pub struct MemoryStore<E, H> {
    inner: Rc<RefCell<Inner<E, H>>>,
}

struct Inner<E, H> {
    header: Option<H>,
    entries: BTreeMap<SeqNum, E>,
    producers: BTreeMap<String, (ProducerState, u64)>,
    fail_next_commit: Option<String>,
    commits: usize,
    reads: usize,
}

impl<E, H> Default for MemoryStore<E, H> {
    fn default() -> Self {
        MemoryStore {
            inner: Rc::new(RefCell::new(Inner {
                header: None,
                entries: BTreeMap::new(),
                producers: BTreeMap::new(),
                fail_next_commit: None,
                commits: 0,
                reads: 0,
            })),
        }
    }
}

impl<E, H> Clone for MemoryStore<E, H> {
    fn clone(&self) -> Self {
        MemoryStore {
            inner: self.inner.clone(),
        }
    }
}

impl<E: Entry + Clone, H: Header> MemoryStore<E, H> {
    /// Makes the next commit fail with `message`, writing nothing.
    pub fn fail_next_commit(&self, message: &str) {
        self.inner.borrow_mut().fail_next_commit = Some(message.to_owned());
    }

    /// Stores entries the way a write the log did not see would (a late commit of a dead
    /// instance): behind the log's cached tail.
    pub fn insert_behind_the_log(&self, entries: impl IntoIterator<Item = E>) {
        let mut inner = self.inner.borrow_mut();
        for entry in entries {
            inner.entries.insert(entry.seq(), entry);
        }
    }

    /// Every stored entry, in order.
    pub fn all(&self) -> Vec<E> {
        self.inner.borrow().entries.values().cloned().collect()
    }

    /// How many commits succeeded.
    pub fn commits(&self) -> usize {
        self.inner.borrow().commits
    }

    /// How many reads reached storage.
    pub fn reads(&self) -> usize {
        self.inner.borrow().reads
    }

    /// The stored header.
    pub fn header(&self) -> Option<H> {
        self.inner.borrow().header.clone()
    }

    /// Producer ids with a stored state.
    pub fn producer_ids(&self) -> Vec<String> {
        self.inner.borrow().producers.keys().cloned().collect()
    }
}

impl<E: Entry + Clone, H: Header> LogStore for MemoryStore<E, H> {
    type Entry = E;
    type Header = H;

    async fn load(&self) -> Result<Loaded<H>, StorageError> {
        let inner = self.inner.borrow();
        let base = inner.header.as_ref().map_or(SeqNum::ROOT, |h| h.base());
        let last = inner.entries.keys().next_back().copied();
        Ok(Loaded {
            header: inner.header.clone(),
            tail: last.map_or(base, |last| last.max(base)),
        })
    }

    async fn read(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<E>, StorageError> {
        self.inner.borrow_mut().reads += 1;
        let inner = self.inner.borrow();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        if upto <= after {
            return Ok(out);
        }
        for entry in inner.entries.range(after..=upto).map(|(_, e)| e) {
            if entry.seq() == after {
                continue;
            }
            if !budget.admits(out.len(), bytes, entry.size()) {
                break;
            }
            bytes = bytes.saturating_add(entry.size());
            out.push(entry.clone());
        }
        Ok(out)
    }

    async fn count(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
        let inner = self.inner.borrow();
        Ok(inner
            .entries
            .keys()
            .filter(|seq| **seq > after && **seq <= upto)
            .count() as u64)
    }

    async fn producer(&self, id: &str) -> Result<Option<ProducerState>, StorageError> {
        Ok(self
            .inner
            .borrow()
            .producers
            .get(id)
            .map(|(state, _)| *state))
    }

    async fn commit(&self, commit: Commit<'_, E, H>) -> Result<(), StorageError> {
        let mut inner = self.inner.borrow_mut();
        if let Some(message) = inner.fail_next_commit.take() {
            return Err(StorageError(message));
        }
        let mut entries = if commit.reset {
            BTreeMap::new()
        } else {
            inner.entries.clone()
        };
        for entry in commit.entries {
            if entries.insert(entry.seq(), entry.clone()).is_some() {
                return Err(StorageError(format!(
                    "UNIQUE constraint failed: entry {} exists",
                    entry.seq()
                )));
            }
        }
        inner.entries = entries;
        if commit.reset {
            inner.producers.clear();
        }
        match commit.header {
            HeaderWrite::Keep => {}
            HeaderWrite::Save(header) => inner.header = Some(header.clone()),
            HeaderWrite::Remove => inner.header = None,
        }
        if let Some(producer) = commit.producer {
            inner
                .producers
                .retain(|_, (_, at)| *at >= producer.expire_before_ms);
            inner
                .producers
                .insert(producer.id.to_owned(), (producer.state, producer.now_ms));
        }
        inner.commits += 1;
        Ok(())
    }
}
