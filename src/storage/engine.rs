//! The storage engine chosen for a store's event log.

use super::d1::D1EventLog;
use super::do_sqlite::DoSqliteEventLog;
use crate::livestore::event::StoredEvent;
use crate::stream::{LogStorage, SeqNum, StorageError};

/// D1 or the Durable Object's SQLite, behind one [`LogStorage`].
pub enum EventStore {
    D1(D1EventLog),
    DoSqlite(DoSqliteEventLog),
}

impl LogStorage for EventStore {
    type Entry = StoredEvent;

    async fn max_seq(&self) -> Result<Option<SeqNum>, StorageError> {
        match self {
            EventStore::D1(s) => s.max_seq().await,
            EventStore::DoSqlite(s) => s.max_seq().await,
        }
    }

    async fn append(&self, entries: &[StoredEvent]) -> Result<(), StorageError> {
        match self {
            EventStore::D1(s) => s.append(entries).await,
            EventStore::DoSqlite(s) => s.append(entries).await,
        }
    }

    async fn count_range(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
        match self {
            EventStore::D1(s) => s.count_range(after, upto).await,
            EventStore::DoSqlite(s) => s.count_range(after, upto).await,
        }
    }

    async fn read_range(
        &self,
        after: SeqNum,
        upto: SeqNum,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        match self {
            EventStore::D1(s) => s.read_range(after, upto, limit).await,
            EventStore::DoSqlite(s) => s.read_range(after, upto, limit).await,
        }
    }

    fn appends_checkpoint_head(&self) -> bool {
        match self {
            EventStore::D1(s) => s.appends_checkpoint_head(),
            EventStore::DoSqlite(s) => s.appends_checkpoint_head(),
        }
    }
}
