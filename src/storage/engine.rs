//! The storage engine chosen for a store's event log.

use super::d1::D1EventLog;
use super::do_sqlite::DoSqliteEventLog;
use crate::livestore::event::StoredEvent;
use crate::stream::producer::ProducerState;
use crate::stream::{Budget, Commit, Loaded, LogStore, SeqNum, StorageError};

/// D1 or the Durable Object's SQLite, behind one [`LogStore`].
pub enum EventStore {
    D1(D1EventLog),
    DoSqlite(DoSqliteEventLog),
}

impl EventStore {
    /// `(events, bytes)` of the log (admin).
    pub async fn stats(&self) -> Result<(u64, u64), StorageError> {
        match self {
            EventStore::D1(s) => s.stats().await,
            EventStore::DoSqlite(s) => s.stats(),
        }
    }

    /// Removes every event (admin reset).
    pub async fn clear(&self) -> Result<(), StorageError> {
        match self {
            EventStore::D1(s) => s.clear().await,
            EventStore::DoSqlite(s) => s.clear(),
        }
    }

    /// `d1` or `do-sqlite`.
    pub fn kind(&self) -> &'static str {
        match self {
            EventStore::D1(_) => "d1",
            EventStore::DoSqlite(_) => "do-sqlite",
        }
    }
}

impl LogStore for EventStore {
    type Entry = StoredEvent;
    type Header = ();

    async fn load(&self) -> Result<Loaded<()>, StorageError> {
        match self {
            EventStore::D1(s) => s.load().await,
            EventStore::DoSqlite(s) => s.load().await,
        }
    }

    async fn read(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        match self {
            EventStore::D1(s) => s.read(after, upto, budget).await,
            EventStore::DoSqlite(s) => s.read(after, upto, budget).await,
        }
    }

    async fn count(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
        match self {
            EventStore::D1(s) => s.count(after, upto).await,
            EventStore::DoSqlite(s) => s.count(after, upto).await,
        }
    }

    async fn producer(&self, id: &str) -> Result<Option<ProducerState>, StorageError> {
        match self {
            EventStore::D1(s) => s.producer(id).await,
            EventStore::DoSqlite(s) => s.producer(id).await,
        }
    }

    async fn commit(&self, commit: Commit<'_, StoredEvent, ()>) -> Result<(), StorageError> {
        match self {
            EventStore::D1(s) => s.commit(commit).await,
            EventStore::DoSqlite(s) => s.commit(commit).await,
        }
    }
}
