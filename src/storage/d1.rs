//! Event logs in D1, one `eventlog_7_<storeId>` table per store.
//!
//! D1 and the Durable Object cannot share a transaction, so the entries are the truth: the tail is
//! `MAX(seqNum)` of the table, and the head checkpoint in `context_7` (which the TypeScript server
//! reads) is saved after each insert and repaired when the log is opened. A crash between the two
//! loses nothing and stores nothing twice.

use super::do_sqlite::ContextRow;
use super::sql::{self, CountRow, MaxRow, SqlValue, Statement};
use crate::faults::CrashPoint;
use crate::livestore::event::StoredEvent;
use crate::livestore::store_id::StoreId;
use crate::stream::producer::ProducerState;
use crate::stream::{Budget, Commit, HeaderWrite, Loaded, LogStore, SeqNum, StorageError};
use serde::Deserialize;
use std::cell::Cell;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement};

/// One store's event log in D1, with its head checkpoint.
pub struct D1EventLog {
    db: D1Database,
    store_id: StoreId,
    table: String,
    checkpoint: ContextRow,
    /// The table exists and this store owns it (checked once per object lifetime).
    ready: Cell<bool>,
}

#[derive(Deserialize)]
struct Owner {
    #[serde(rename = "storeId")]
    store_id: String,
}

fn d1_error(context: &str) -> impl Fn(worker::Error) -> StorageError + '_ {
    move |e| StorageError(format!("D1 {context}: {e}"))
}

fn bind(value: &SqlValue) -> JsValue {
    match value {
        SqlValue::Null => JsValue::NULL,
        // Safe integers only (SeqNum), so the f64 is exact.
        SqlValue::Integer(i) => JsValue::from_f64(*i as f64),
        SqlValue::Text(s) => JsValue::from_str(s),
    }
}

impl D1EventLog {
    /// The log of `store_id` in `db`, its head checkpointed in `checkpoint`.
    pub fn new(db: D1Database, store_id: StoreId, checkpoint: ContextRow) -> Self {
        let table = store_id.table_name();
        D1EventLog {
            db,
            store_id,
            table,
            checkpoint,
            ready: Cell::new(false),
        }
    }

    async fn max_seq(&self) -> Result<Option<SeqNum>, StorageError> {
        let row: Option<MaxRow> = self
            .query(sql::select_max_seq(&self.table), vec![])?
            .first(None)
            .await
            .map_err(d1_error("max"))?;
        row.map_or(Ok(None), MaxRow::into_seq)
    }

    fn prepare(&self, statement: &Statement) -> Result<D1PreparedStatement, StorageError> {
        let params: Vec<JsValue> = statement.params.iter().map(bind).collect();
        self.db
            .prepare(statement.sql.as_str())
            .bind(&params)
            .map_err(d1_error("bind"))
    }

    fn query(
        &self,
        sql: String,
        params: Vec<SqlValue>,
    ) -> Result<D1PreparedStatement, StorageError> {
        self.prepare(&Statement { sql, params })
    }

    /// Creates the table and claims it for this store, refusing a table that another store
    /// id (one that sanitizes to the same name) already owns.
    async fn ensure_ready(&self) -> Result<(), StorageError> {
        if self.ready.get() {
            return Ok(());
        }
        let now = js_sys::Date::new_0()
            .to_iso_string()
            .as_string()
            .unwrap_or_default();
        let table = SqlValue::Text(self.table.clone());
        let statements = vec![
            self.query(sql::CREATE_TABLE_OWNERS.into(), vec![])?,
            self.query(sql::CREATE_TABLE_OWNERS_INDEX.into(), vec![])?,
            self.query(
                sql::CLAIM_TABLE.into(),
                vec![
                    table.clone(),
                    SqlValue::Text(self.store_id.as_str().into()),
                    SqlValue::Text(now),
                ],
            )?,
            self.query(sql::create_event_log(&self.table), vec![])?,
            self.query(sql::TABLE_OWNER.into(), vec![table])?,
        ];
        let results = self
            .db
            .batch(statements)
            .await
            .map_err(d1_error("create table"))?;
        let owner = results
            .last()
            .map(|r| r.results::<Owner>())
            .transpose()
            .map_err(d1_error("read table owner"))?
            .and_then(|rows| rows.into_iter().next());
        match owner {
            Some(owner) if owner.store_id == self.store_id.as_str() => {
                self.ready.set(true);
                Ok(())
            }
            Some(owner) => Err(StorageError(format!(
                "storeId `{}` maps to table {} which already holds store `{}`; store ids must differ in their letters and digits, ignoring case",
                self.store_id, self.table, owner.store_id
            ))),
            None => Err(StorageError(format!("could not claim table {}", self.table))),
        }
    }
}

impl D1EventLog {
    /// `(events, bytes)` of the store's log (admin).
    pub async fn stats(&self) -> Result<(u64, u64), StorageError> {
        self.ensure_ready().await?;
        let row: Option<sql::StatsRow> = self
            .query(sql::stats(&self.table), vec![])?
            .first(None)
            .await
            .map_err(d1_error("stats"))?;
        Ok(row.map_or((0, 0), sql::StatsRow::into_pair))
    }

    /// Removes every event (admin reset).
    pub async fn clear(&self) -> Result<(), StorageError> {
        self.ensure_ready().await?;
        self.query(sql::clear(&self.table), vec![])?
            .run()
            .await
            .map_err(d1_error("clear"))?;
        Ok(())
    }

    /// Drops the store's table and its claim (admin delete).
    pub async fn delete(&self) -> Result<(), StorageError> {
        let statements = vec![
            self.query(sql::CREATE_TABLE_OWNERS.into(), vec![])?,
            self.query(sql::drop_table(&self.table), vec![])?,
            self.query(
                sql::RELEASE_TABLE.into(),
                vec![SqlValue::Text(self.table.clone())],
            )?,
        ];
        self.db
            .batch(statements)
            .await
            .map_err(d1_error("delete"))?;
        self.ready.set(false);
        Ok(())
    }
}

/// A page of the event-log tables in `db`, with the stores that own them (admin list).
pub async fn list_tables(
    db: &D1Database,
    after: &str,
    limit: usize,
) -> Result<Vec<(String, Option<String>)>, StorageError> {
    #[derive(serde::Deserialize)]
    struct Row {
        t: String,
        s: Option<String>,
    }
    let prepare =
        |query: &str, params: &[JsValue]| db.prepare(query).bind(params).map_err(d1_error("bind"));
    let results = db
        .batch(vec![
            prepare(sql::CREATE_TABLE_OWNERS, &[])?,
            prepare(
                sql::LIST_TABLES,
                &[JsValue::from_str(after), JsValue::from_f64(limit as f64)],
            )?,
        ])
        .await
        .map_err(d1_error("list tables"))?;
    let rows: Vec<Row> = match results.last() {
        Some(result) => result.results().map_err(d1_error("list tables"))?,
        None => Vec::new(),
    };
    Ok(rows.into_iter().map(|r| (r.t, r.s)).collect())
}

impl LogStore for D1EventLog {
    type Entry = StoredEvent;
    type Header = ();

    async fn load(&self) -> Result<Loaded<()>, StorageError> {
        self.ensure_ready().await?;
        let tail = self.max_seq().await?.unwrap_or(SeqNum::ROOT);
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
        self.ensure_ready().await?;
        let result = self
            .query(
                sql::read_range(&self.table),
                vec![
                    SqlValue::Integer(after.get()),
                    SqlValue::Integer(upto.get()),
                    SqlValue::Integer(budget.rows as u64),
                    SqlValue::Integer(budget.bytes as u64),
                ],
            )?
            .raw_js_value()
            .await
            .map_err(d1_error("read"))?;
        // Rows as arrays: row objects cost D1 their building and us a deserializer walk each.
        result
            .into_iter()
            .map(|row| {
                let row = js_sys::Array::from(&row);
                let head = row
                    .get(0)
                    .as_string()
                    .ok_or_else(|| StorageError("event log row without its columns".into()))?;
                sql::decode_row(&head, row.get(1).as_string())
            })
            .collect()
    }

    async fn count(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
        self.ensure_ready().await?;
        let row: Option<CountRow> = self
            .query(
                sql::count_range(&self.table),
                vec![
                    SqlValue::Integer(after.get()),
                    SqlValue::Integer(upto.get()),
                ],
            )?
            .first(None)
            .await
            .map_err(d1_error("count"))?;
        Ok(row.map_or(0, CountRow::into_count))
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
        self.ensure_ready().await?;
        let mut statements = sql::insert_events(&self.table, commit.entries)?
            .iter()
            .map(|s| self.prepare(s))
            .collect::<Result<Vec<_>, _>>()?;
        // One statement (almost every push) is atomic by itself; a D1 batch is one
        // transaction: all rows or none either way.
        match statements.pop() {
            Some(only) if statements.is_empty() => {
                only.run().await.map_err(d1_error("insert"))?;
            }
            Some(last) => {
                statements.push(last);
                self.db
                    .batch(statements)
                    .await
                    .map_err(d1_error("insert"))?;
            }
            None => {}
        }
        crate::faults::crash_point(CrashPoint::D1AfterInsert).await;
        // The entries are the truth and the checkpoint is repaired from them when the log is
        // opened, so a failed save costs nothing but that repair.
        if let Some(last) = commit.entries.last() {
            let _ = self.checkpoint.save(last.event.seq_num);
        }
        Ok(())
    }
}
