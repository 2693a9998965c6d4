//! A stream's watchers, in its object's SQLite: the objects of the streams namespace (estuaries'
//! session streams, subscriptions) told of each append, and how far they have all been told
//! (`notified`), so a fan-out cut short (an eviction, a crash) is owed and made again by the
//! alarm (`due_ms`).

use super::cold_index::{as_u64, first_u64, int};
use super::do_sqlite::{exec, sql_error};
use crate::stream::StorageError;
use worker::{SqlStorage, SqlStorageValue};

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS ds_watchers (name TEXT PRIMARY KEY NOT NULL, since INTEGER NOT NULL, added_ms INTEGER NOT NULL) STRICT",
    "CREATE TABLE IF NOT EXISTS ds_fanout (id INTEGER PRIMARY KEY CHECK (id = 1), notified INTEGER NOT NULL, due_ms INTEGER) STRICT",
];

/// The watchers of one stream.
pub struct Watchers {
    sql: SqlStorage,
}

impl Watchers {
    pub fn open(sql: SqlStorage) -> Result<Watchers, StorageError> {
        for statement in SCHEMA {
            exec(&sql, statement, Vec::new(), "create watchers")?;
        }
        Ok(Watchers { sql })
    }

    /// Adds `name` watching from `since` unless it watches already; the position it watches from.
    pub fn add(&self, name: &str, since: u64, now_ms: u64) -> Result<u64, StorageError> {
        exec(
            &self.sql,
            "INSERT OR IGNORE INTO ds_watchers (name, since, added_ms) VALUES (?, ?, ?)",
            vec![
                SqlStorageValue::from(name.to_owned()),
                int(since),
                int(now_ms),
            ],
            "add watcher",
        )?;
        Ok(first_u64(
            &self.sql,
            "SELECT since FROM ds_watchers WHERE name = ?",
            vec![SqlStorageValue::from(name.to_owned())],
            "watcher",
        )?
        .unwrap_or(since))
    }

    /// Removes `name`; whether it watched.
    pub fn remove(&self, name: &str) -> Result<bool, StorageError> {
        let cursor = exec(
            &self.sql,
            "DELETE FROM ds_watchers WHERE name = ? RETURNING name",
            vec![SqlStorageValue::from(name.to_owned())],
            "remove watcher",
        )?;
        Ok(cursor.raw().next().is_some())
    }

    /// Removes `name` if it was added before `before_ms` (a watcher that answers it is gone, but
    /// may just not have been set up yet).
    pub fn remove_if_added_before(&self, name: &str, before_ms: u64) -> Result<(), StorageError> {
        exec(
            &self.sql,
            "DELETE FROM ds_watchers WHERE name = ? AND added_ms < ?",
            vec![SqlStorageValue::from(name.to_owned()), int(before_ms)],
            "prune watcher",
        )?;
        Ok(())
    }

    /// Forgets every watcher (the stream is gone).
    pub fn clear(&self) -> Result<(), StorageError> {
        exec(
            &self.sql,
            "DELETE FROM ds_watchers",
            Vec::new(),
            "clear watchers",
        )?;
        exec(
            &self.sql,
            "DELETE FROM ds_fanout",
            Vec::new(),
            "clear fan-out",
        )?;
        Ok(())
    }

    pub fn count(&self) -> Result<u64, StorageError> {
        Ok(first_u64(
            &self.sql,
            "SELECT count(*) FROM ds_watchers",
            Vec::new(),
            "count watchers",
        )?
        .unwrap_or(0))
    }

    /// Up to `limit` watcher names after `after`, in order.
    pub fn page(&self, after: &str, limit: usize) -> Result<Vec<String>, StorageError> {
        let cursor = exec(
            &self.sql,
            "SELECT name FROM ds_watchers WHERE name > ? ORDER BY name LIMIT ?",
            vec![SqlStorageValue::from(after.to_owned()), int(limit as u64)],
            "list watchers",
        )?;
        let mut names = Vec::new();
        for row in cursor.raw() {
            if let Some(SqlStorageValue::String(name)) =
                row.map_err(sql_error("watcher row"))?.into_iter().next()
            {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// How far every watcher has been told, and when the alarm should try again.
    pub fn owed(&self) -> Result<(u64, Option<u64>), StorageError> {
        let cursor = exec(
            &self.sql,
            "SELECT notified, due_ms FROM ds_fanout WHERE id = 1",
            Vec::new(),
            "fan-out state",
        )?;
        match cursor.raw().next() {
            Some(row) => {
                let row = row.map_err(sql_error("fan-out row"))?;
                let notified = row.first().and_then(as_u64).unwrap_or(0);
                Ok((notified, row.get(1).and_then(as_u64)))
            }
            None => Ok((0, None)),
        }
    }

    /// Records that every watcher was told through `notified`, and when the alarm tries again
    /// (`None`: nothing owed).
    pub fn set_owed(&self, notified: u64, due_ms: Option<u64>) -> Result<(), StorageError> {
        let due = due_ms.map_or(SqlStorageValue::Null, int);
        exec(
            &self.sql,
            "INSERT INTO ds_fanout (id, notified, due_ms) VALUES (1, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET notified = excluded.notified, due_ms = excluded.due_ms",
            vec![int(notified), due],
            "save fan-out state",
        )?;
        Ok(())
    }
}
