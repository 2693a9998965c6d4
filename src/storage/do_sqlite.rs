//! The head checkpoint in the Durable Object's own SQLite: the `context_7` row of the
//! TypeScript server (`storeId`, `currentHead`, `backendId`).

use super::sql::CREATE_CONTEXT;
use crate::stream::{HeadCheckpoint, SeqNum, StorageError};
use serde::Deserialize;
use worker::{SqlStorage, SqlStorageValue};

/// One store's `context_7` row.
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

fn sql_error(context: &str) -> impl Fn(worker::Error) -> StorageError + '_ {
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

impl HeadCheckpoint for ContextRow {
    fn load(&self) -> Result<Option<SeqNum>, StorageError> {
        Ok(self.read()?.and_then(|c| SeqNum::from_f64(c.current_head)))
    }

    fn save(&self, head: SeqNum) -> Result<(), StorageError> {
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
