//! A Durable Streams stream in its Durable Object's own SQLite: one row of metadata (JSON),
//! the messages by number, and the producers' fencing state. [`transaction`] runs an engine
//! operation inside `ctx.storage.transactionSync`, so its writes commit together or not at
//! all (producer state with the data it admits).

use crate::durable_streams::store::{Meta, StorageError, StreamStore};
use crate::faults::CrashPoint;
use crate::stream::producer::ProducerState;
use std::rc::Rc;
use worker::{SqlStorage, SqlStorageValue, Storage};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS ds_meta (id INTEGER PRIMARY KEY CHECK (id = 1), meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ds_messages (seq INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS ds_producers (id TEXT PRIMARY KEY, epoch INTEGER NOT NULL, last_seq INTEGER NOT NULL, updated_ms INTEGER NOT NULL);";

fn sql_error(context: &'static str) -> impl Fn(worker::Error) -> StorageError {
    move |e| StorageError(format!("DO SQLite {context}: {e}"))
}

/// Safe integers (message numbers, epochs, times) as SQLite integers: exact.
fn int(value: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

fn as_u64(value: &SqlStorageValue) -> Option<u64> {
    match value {
        SqlStorageValue::Integer(i) => u64::try_from(*i).ok(),
        SqlStorageValue::Float(f) if f.is_finite() && *f >= 0.0 && f.fract() == 0.0 => {
            // Integral and non-negative; SQLite integers read back through JS numbers.
            Some(*f as u64)
        }
        _ => None,
    }
}

/// The stream kept in one Durable Object's SQLite.
#[derive(Clone)]
pub struct SqliteStreamStore {
    storage: Rc<Storage>,
    sql: SqlStorage,
}

impl SqliteStreamStore {
    /// Opens the store, creating its tables if needed.
    pub fn open(storage: Storage) -> Result<SqliteStreamStore, StorageError> {
        let sql = storage.sql();
        sql.exec(SCHEMA, None).map_err(sql_error("create tables"))?;
        Ok(SqliteStreamStore {
            storage: Rc::new(storage),
            sql,
        })
    }

    fn exec(
        &self,
        query: &str,
        params: Vec<SqlStorageValue>,
        context: &'static str,
    ) -> Result<worker::SqlCursor, StorageError> {
        self.sql.exec(query, params).map_err(sql_error(context))
    }
}

/// Runs `body` against `store` in one transaction: rolled back when it fails.
pub fn transaction<T: 'static>(
    store: &SqliteStreamStore,
    body: impl FnOnce(&SqliteStreamStore) -> Result<T, StorageError> + 'static,
) -> Result<T, StorageError> {
    let inner = store.clone();
    super::transaction::transaction(&store.storage, move || body(&inner))
}

impl StreamStore for SqliteStreamStore {
    fn load_meta(&self) -> Result<Option<Meta>, StorageError> {
        let cursor = self.exec("SELECT meta FROM ds_meta WHERE id = 1", vec![], "read meta")?;
        for row in cursor.raw() {
            let row = row.map_err(sql_error("read meta row"))?;
            if let Some(SqlStorageValue::String(text)) = row.first() {
                return serde_json::from_str(text)
                    .map(Some)
                    .map_err(|e| StorageError(format!("stored metadata: {e}")));
            }
        }
        Ok(None)
    }

    fn save_meta(&self, meta: &Meta) -> Result<(), StorageError> {
        let text =
            serde_json::to_string(meta).map_err(|e| StorageError(format!("metadata: {e}")))?;
        self.exec(
            "INSERT OR REPLACE INTO ds_meta (id, meta) VALUES (1, ?)",
            vec![SqlStorageValue::String(text)],
            "save meta",
        )?;
        Ok(())
    }

    fn clear_data(&self) -> Result<(), StorageError> {
        self.exec("DELETE FROM ds_messages", vec![], "clear messages")?;
        self.exec("DELETE FROM ds_producers", vec![], "clear producers")?;
        Ok(())
    }

    fn clear_all(&self) -> Result<(), StorageError> {
        self.clear_data()?;
        self.exec("DELETE FROM ds_meta", vec![], "clear meta")?;
        Ok(())
    }

    fn insert_messages(&self, first_seq: u64, messages: &[Vec<u8>]) -> Result<(), StorageError> {
        for (seq, message) in (first_seq..).zip(messages) {
            self.exec(
                "INSERT INTO ds_messages (seq, data) VALUES (?, ?)",
                vec![int(seq), SqlStorageValue::Blob(message.clone())],
                "insert message",
            )?;
        }
        crate::faults::crash_point_sync(CrashPoint::StreamAfterData, || {
            let stored = self
                .exec("SELECT COUNT(*) FROM ds_messages", vec![], "count messages")
                .ok()
                .and_then(|cursor| cursor.raw().next())
                .and_then(|row| row.ok())
                .and_then(|row| row.first().and_then(as_u64));
            format!("{} messages in the transaction", stored.unwrap_or_default())
        })?;
        Ok(())
    }

    fn read_messages(
        &self,
        after: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        if upto <= after {
            return Ok(out);
        }
        let cursor = self.exec(
            "SELECT seq, data FROM ds_messages WHERE seq > ? AND seq <= ? ORDER BY seq",
            vec![int(after), int(upto)],
            "read messages",
        )?;
        let mut bytes = 0usize;
        for row in cursor.raw() {
            let row = row.map_err(sql_error("read message row"))?;
            let seq = row
                .first()
                .and_then(as_u64)
                .ok_or_else(|| StorageError("message without a number".into()))?;
            let data = match row.get(1) {
                Some(SqlStorageValue::Blob(data)) => data.clone(),
                Some(SqlStorageValue::String(text)) => text.clone().into_bytes(),
                _ => Vec::new(),
            };
            if !out.is_empty() && bytes.saturating_add(data.len()) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(data.len());
            out.push((seq, data));
        }
        Ok(out)
    }

    fn producer(&self, id: &str) -> Result<Option<ProducerState>, StorageError> {
        let cursor = self.exec(
            "SELECT epoch, last_seq FROM ds_producers WHERE id = ?",
            vec![SqlStorageValue::String(id.to_owned())],
            "read producer",
        )?;
        for row in cursor.raw() {
            let row = row.map_err(sql_error("read producer row"))?;
            if let (Some(epoch), Some(last_seq)) =
                (row.first().and_then(as_u64), row.get(1).and_then(as_u64))
            {
                return Ok(Some(ProducerState { epoch, last_seq }));
            }
        }
        Ok(None)
    }

    fn save_producer(
        &self,
        id: &str,
        state: ProducerState,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        self.exec(
            "INSERT OR REPLACE INTO ds_producers (id, epoch, last_seq, updated_ms) VALUES (?, ?, ?, ?)",
            vec![
                SqlStorageValue::String(id.to_owned()),
                int(state.epoch),
                int(state.last_seq),
                int(now_ms),
            ],
            "save producer",
        )?;
        Ok(())
    }
}
