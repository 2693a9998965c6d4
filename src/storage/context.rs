//! A store's `context_7` row in its Durable Object's SQLite (as the TypeScript server keeps it):
//! its backend id and head checkpoint, whichever storage holds its events.

use super::do_sqlite::sql_error;
use super::sql::CREATE_CONTEXT;
use crate::stream::{SeqNum, StorageError};
use serde::Deserialize;
use worker::{SqlStorage, SqlStorageValue};

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

    /// The backend id the row holds now (another after a reset; `None` once deleted).
    pub fn current_backend_id(&self) -> Result<Option<String>, StorageError> {
        Ok(self.read()?.map(|context| context.backend_id))
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
