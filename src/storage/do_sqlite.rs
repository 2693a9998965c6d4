//! The Durable Object's own SQLite: the head checkpoint (`context_7`, as the TypeScript
//! server keeps it) and, when chosen, the store's event log (`eventlog_7_<storeId>`).

use super::sql::{self, CountRow, MaxRow, SqlValue, CREATE_CONTEXT};
use crate::faults::CrashPoint;
use crate::livestore::event::StoredEvent;
use crate::livestore::store_id::StoreId;
use crate::stream::producer::ProducerState;
use crate::stream::{Budget, Commit, HeaderWrite, Loaded, LogStore, SeqNum, StorageError};
use serde::Deserialize;
use std::cell::Cell;
use worker::{SqlStorage, SqlStorageValue, Storage};

/// One store's `context_7` row: its backend id and head checkpoint.
#[derive(Clone)]
pub struct ContextRow {
    sql: SqlStorage,
    store_id: String,
    backend_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Context {
    current_head: f64,
    backend_id: String,
}

/// Maps a failed SQL call on an object's SQLite to a storage error naming what it did.
pub(crate) fn sql_error(context: &str) -> impl Fn(worker::Error) -> StorageError + '_ {
    move |e| StorageError(format!("DO SQLite {context}: {e}"))
}

impl ContextRow {
    /// Opens (creating if needed) the row of `store_id`; a new row gets the backend id from
    /// `new_backend_id` and head 0.
    pub fn open(
        sql: SqlStorage,
        store_id: &str,
        new_backend_id: impl FnOnce() -> String,
    ) -> Result<ContextRow, StorageError> {
        sql.exec(CREATE_CONTEXT, None)
            .map_err(sql_error("create"))?;
        let mut row = ContextRow {
            sql,
            store_id: store_id.to_owned(),
            backend_id: String::new(),
        };
        match row.read()? {
            Some(context) => row.backend_id = context.backend_id,
            None => {
                row.backend_id = new_backend_id();
                row.save(SeqNum::ROOT)?;
            }
        }
        Ok(row)
    }

    /// Whether `store_id` has a row: whether this object ever served the store.
    pub fn exists(sql: &SqlStorage, store_id: &str) -> Result<bool, StorageError> {
        sql.exec(CREATE_CONTEXT, None)
            .map_err(sql_error("create"))?;
        let row = ContextRow {
            sql: sql.clone(),
            store_id: store_id.to_owned(),
            backend_id: String::new(),
        };
        Ok(row.read()?.is_some())
    }

    /// Removes the row of `store_id` (admin delete).
    pub fn delete(sql: &SqlStorage, store_id: &str) -> Result<(), StorageError> {
        sql.exec(CREATE_CONTEXT, None)
            .map_err(sql_error("create"))?;
        sql.exec(
            r#"DELETE FROM "context_7" WHERE "storeId" = ?"#,
            vec![SqlStorageValue::from(store_id.to_owned())],
        )
        .map_err(sql_error("delete"))?;
        Ok(())
    }

    /// Gives the store a new backend id (admin reset), its head now `head`.
    pub fn renew(&self, backend_id: String, head: SeqNum) -> Result<ContextRow, StorageError> {
        let renewed = ContextRow {
            backend_id,
            ..self.clone()
        };
        renewed.save(head)?;
        Ok(renewed)
    }

    /// The backend id of this store.
    pub fn backend_id(&self) -> &str {
        &self.backend_id
    }

    fn read(&self) -> Result<Option<Context>, StorageError> {
        let rows: Vec<Context> = self
            .sql
            .exec(
                r#"SELECT "currentHead", "backendId" FROM "context_7" WHERE "storeId" = ?"#,
                vec![SqlStorageValue::from(self.store_id.clone())],
            )
            .map_err(sql_error("read"))?
            .to_array()
            .map_err(sql_error("decode"))?;
        Ok(rows.into_iter().next())
    }
}

impl ContextRow {
    /// The saved head, if any.
    pub fn load(&self) -> Result<Option<SeqNum>, StorageError> {
        Ok(self.read()?.and_then(|c| SeqNum::from_f64(c.current_head)))
    }

    /// Saves the head if the saved one differs from `head` (taken from the entries).
    pub fn repair(&self, head: SeqNum) -> Result<(), StorageError> {
        if self.load()? != Some(head) {
            self.save(head)?;
        }
        Ok(())
    }

    /// Saves the head.
    pub fn save(&self, head: SeqNum) -> Result<(), StorageError> {
        self.sql
            .exec(
                r#"INSERT OR REPLACE INTO "context_7" ("storeId", "currentHead", "backendId") VALUES (?, ?, ?)"#,
                vec![
                    SqlStorageValue::from(self.store_id.clone()),
                    // Safe integer (SeqNum), so the i64 is exact.
                    SqlStorageValue::from(head.get() as i64),
                    SqlStorageValue::from(self.backend_id.clone()),
                ],
            )
            .map_err(sql_error("save head"))?;
        Ok(())
    }
}

/// One store's event log in the Durable Object's SQLite. Its head checkpoint (`context_7`)
/// is kept by a trigger, in the same statement as the inserts.
pub struct DoSqliteEventLog {
    storage: Storage,
    sql: SqlStorage,
    table: String,
    store_id: String,
    checkpoint: ContextRow,
    ready: Cell<bool>,
}

fn to_sql(value: &SqlValue) -> SqlStorageValue {
    match value {
        SqlValue::Null => SqlStorageValue::Null,
        // Safe integers only (SeqNum), so the i64 is exact.
        SqlValue::Integer(i) => SqlStorageValue::from(*i as i64),
        SqlValue::Text(s) => SqlStorageValue::from(s.as_str()),
    }
}

impl DoSqliteEventLog {
    /// The log of `store_id` in this object's SQLite.
    pub fn new(storage: Storage, store_id: &StoreId, checkpoint: ContextRow) -> Self {
        DoSqliteEventLog {
            sql: storage.sql(),
            storage,
            table: store_id.table_name(),
            store_id: store_id.as_str().to_owned(),
            checkpoint,
            ready: Cell::new(false),
        }
    }

    fn ensure_ready(&self) -> Result<(), StorageError> {
        if !self.ready.get() {
            self.sql
                .exec(&sql::create_event_log(&self.table), None)
                .map_err(sql_error("create table"))?;
            self.sql
                .exec(CREATE_CONTEXT, None)
                .map_err(sql_error("create context"))?;
            self.sql
                .exec(&sql::create_head_trigger(&self.table, &self.store_id), None)
                .map_err(sql_error("create head trigger"))?;
            self.ready.set(true);
        }
        Ok(())
    }

    fn query<T: serde::de::DeserializeOwned>(
        &self,
        query: &str,
        params: &[SqlValue],
    ) -> Result<Vec<T>, StorageError> {
        self.ensure_ready()?;
        self.sql
            .exec(query, params.iter().map(to_sql).collect::<Vec<_>>())
            .map_err(sql_error("query"))?
            .to_array()
            .map_err(sql_error("decode rows"))
    }
}

impl DoSqliteEventLog {
    /// `(events, bytes)` of the store's log (admin).
    pub fn stats(&self) -> Result<(u64, u64), StorageError> {
        let rows: Vec<sql::StatsRow> = self.query(&sql::stats(&self.table), &[])?;
        Ok(rows
            .into_iter()
            .next()
            .map_or((0, 0), sql::StatsRow::into_pair))
    }

    /// Drops the store's table, its head trigger with it (admin delete).
    pub fn delete(&self) -> Result<(), StorageError> {
        self.sql
            .exec(&sql::drop_table(&self.table), None)
            .map_err(sql_error("drop"))?;
        self.ready.set(false);
        Ok(())
    }

    /// Removes every event (admin reset).
    pub fn clear(&self) -> Result<(), StorageError> {
        self.ensure_ready()?;
        self.sql
            .exec(&sql::clear(&self.table), None)
            .map_err(sql_error("clear"))?;
        Ok(())
    }
}

impl LogStore for DoSqliteEventLog {
    type Entry = StoredEvent;
    type Header = ();

    async fn load(&self) -> Result<Loaded<()>, StorageError> {
        let rows: Vec<MaxRow> = self.query(&sql::select_max_seq(&self.table), &[])?;
        let tail = rows
            .into_iter()
            .next()
            .map_or(Ok(None), MaxRow::into_seq)?
            .unwrap_or(SeqNum::ROOT);
        // The trigger keeps the checkpoint with the inserts; repair it for data written before
        // the trigger existed (or by a server without one).
        self.checkpoint.repair(tail)?;
        Ok(Loaded {
            header: Some(()),
            tail,
        })
    }

    async fn read(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        self.ensure_ready()?;
        let params = [
            SqlValue::Integer(after.get()),
            SqlValue::Integer(upto.get()),
            SqlValue::Integer(budget.rows as u64),
        ];
        // The cursor is lazy: rows past the budget are never read.
        let cursor = self
            .sql
            .exec(
                &sql::read_rows(&self.table),
                params.iter().map(to_sql).collect::<Vec<_>>(),
            )
            .map_err(sql_error("read"))?;
        // Rows as arrays: a row object costs a deserializer walk over its keys.
        budget.take(cursor.raw().map(|row| {
            let mut values = row.map_err(sql_error("read row"))?.into_iter();
            let head = match values.next() {
                Some(SqlStorageValue::String(head)) => head,
                _ => return Err(StorageError("event log row without its columns".into())),
            };
            let args = match values.next() {
                Some(SqlStorageValue::String(args)) => Some(args),
                Some(SqlStorageValue::Null) | None => None,
                Some(_) => return Err(StorageError("event log row with args not text".into())),
            };
            sql::decode_row(&head, args)
        }))
    }

    async fn count(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
        let rows: Vec<CountRow> = self.query(
            &sql::count_range(&self.table),
            &[
                SqlValue::Integer(after.get()),
                SqlValue::Integer(upto.get()),
            ],
        )?;
        Ok(rows.into_iter().next().map_or(0, CountRow::into_count))
    }

    async fn producer(&self, _id: &str) -> Result<Option<ProducerState>, StorageError> {
        Ok(None)
    }

    async fn commit(&self, commit: Commit<'_, StoredEvent, ()>) -> Result<(), StorageError> {
        if commit.reset || !matches!(commit.header, HeaderWrite::Keep) || commit.producer.is_some()
        {
            return Err(StorageError(
                "a store's event log only takes appends".into(),
            ));
        }
        self.ensure_ready()?;
        let statements = sql::insert_events(&self.table, commit.entries)?;
        let exec = |sql: &SqlStorage, statement: &sql::Statement| {
            let params: Vec<SqlStorageValue> = statement.params.iter().map(to_sql).collect();
            sql.exec(&statement.sql, params)
                .map(|_| ())
                .map_err(sql_error("insert"))
        };
        // One statement (almost every push) is atomic by itself, head trigger included.
        if let [statement] = statements.as_slice() {
            exec(&self.sql, statement)?;
        } else {
            let sql = self.sql.clone();
            super::transaction::transaction(&self.storage, move || {
                statements.iter().try_for_each(|s| exec(&sql, s))
            })?;
        }
        crate::faults::crash_point(CrashPoint::SqliteAfterInsert).await;
        Ok(())
    }
}
