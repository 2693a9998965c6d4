//! Event logs in D1, one `eventlog_7_<storeId>` table per store.

use super::sql::{self, CountRow, JsonRow, MaxRow, SqlValue, Statement};
use crate::faults::CrashPoint;
use crate::livestore::event::StoredEvent;
use crate::livestore::store_id::StoreId;
use crate::stream::{LogStorage, SeqNum, StorageError};
use serde::Deserialize;
use std::cell::Cell;
use wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement};

/// One store's event log in D1.
pub struct D1EventLog {
    db: D1Database,
    store_id: StoreId,
    table: String,
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
    /// The log of `store_id` in `db`.
    pub fn new(db: D1Database, store_id: StoreId) -> Self {
        let table = store_id.table_name();
        D1EventLog {
            db,
            store_id,
            table,
            ready: Cell::new(false),
        }
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

impl LogStorage for D1EventLog {
    type Entry = StoredEvent;

    async fn max_seq(&self) -> Result<Option<SeqNum>, StorageError> {
        self.ensure_ready().await?;
        let row: Option<MaxRow> = self
            .query(sql::select_max_seq(&self.table), vec![])?
            .first(None)
            .await
            .map_err(d1_error("max"))?;
        row.map_or(Ok(None), MaxRow::into_seq)
    }

    async fn append(&self, entries: &[StoredEvent]) -> Result<(), StorageError> {
        self.ensure_ready().await?;
        let mut statements = sql::insert_events(&self.table, entries)?
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
        Ok(())
    }

    async fn count_range(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
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

    async fn read_range(
        &self,
        after: SeqNum,
        upto: SeqNum,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StorageError> {
        self.ensure_ready().await?;
        let result = self
            .query(
                sql::read_range(&self.table),
                vec![
                    SqlValue::Integer(after.get()),
                    SqlValue::Integer(upto.get()),
                    SqlValue::Integer(limit as u64),
                ],
            )?
            .all()
            .await
            .map_err(d1_error("read"))?;
        let rows: Vec<JsonRow> = result.results().map_err(d1_error("decode rows"))?;
        sql::decode_rows(rows)
    }
}
