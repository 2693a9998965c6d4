//! What a WebSocket of the sync object needs across hibernation besides its id: its hook
//! context (store, sync payload, forwarded headers) and its live pulls, kept in the object's
//! SQLite. The socket's attachment holds only the connection id: the runtime refuses
//! attachments over 16 KiB, which a large payload, many forwarded headers or many live pulls
//! would pass.

use crate::livestore::options::HookContext;
use crate::livestore::wire::RequestId;
use crate::storage::do_sqlite::sql_error;
use crate::stream::StorageError;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use worker::{SqlStorage, SqlStorageValue, WebSocket};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS ws_connections (conn TEXT PRIMARY KEY NOT NULL, context TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS ws_live_pulls (conn TEXT NOT NULL, requestId TEXT NOT NULL, PRIMARY KEY (conn, requestId)) STRICT";

/// A hook context as stored.
#[derive(Serialize, Deserialize)]
struct SavedContext {
    #[serde(rename = "storeId")]
    store_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
}

impl From<&HookContext> for SavedContext {
    fn from(context: &HookContext) -> Self {
        SavedContext {
            store_id: context.store_id.clone(),
            payload: context.payload.clone(),
            headers: context.headers.clone(),
        }
    }
}

impl From<SavedContext> for HookContext {
    fn from(saved: SavedContext) -> Self {
        HookContext {
            store_id: saved.store_id,
            payload: saved.payload,
            headers: saved.headers,
        }
    }
}

/// One connection's stored state.
pub(super) struct Saved {
    pub context: HookContext,
    /// Its live pulls, in the order they were registered.
    pub live: Vec<RequestId>,
}

/// The stored state of an object's sockets.
pub(super) struct SocketStates {
    sql: SqlStorage,
    /// The tables exist (created once per object lifetime).
    ready: Cell<bool>,
}

fn text(value: &str) -> SqlStorageValue {
    SqlStorageValue::String(value.to_owned())
}

impl SocketStates {
    /// The socket state kept in `sql`.
    pub fn new(sql: SqlStorage) -> Self {
        SocketStates {
            sql,
            ready: Cell::new(false),
        }
    }

    fn exec(
        &self,
        query: &str,
        params: Vec<SqlStorageValue>,
        context: &'static str,
    ) -> Result<worker::SqlCursor, StorageError> {
        if !self.ready.get() {
            self.sql
                .exec(SCHEMA, None)
                .map_err(sql_error("create socket tables"))?;
            self.ready.set(true);
        }
        self.sql.exec(query, params).map_err(sql_error(context))
    }

    /// Saves the context of connection `conn` (and forgets live pulls of an earlier use of it).
    pub fn save(&self, conn: &str, context: &HookContext) -> Result<(), StorageError> {
        let json = serde_json::to_string(&SavedContext::from(context))
            .map_err(|e| StorageError(format!("socket state: {e}")))?;
        self.exec(
            "INSERT OR REPLACE INTO ws_connections (conn, context) VALUES (?, ?)",
            vec![text(conn), SqlStorageValue::String(json)],
            "save",
        )?;
        Ok(())
    }

    /// Records live pull `id` of connection `conn`.
    pub fn add_live(&self, conn: &str, id: &RequestId) -> Result<(), StorageError> {
        self.exec(
            "INSERT OR IGNORE INTO ws_live_pulls (conn, requestId) VALUES (?, ?)",
            vec![text(conn), SqlStorageValue::String(id.to_json())],
            "add live pull",
        )?;
        Ok(())
    }

    /// Forgets live pull `id` of connection `conn`.
    pub fn remove_live(&self, conn: &str, id: &RequestId) -> Result<(), StorageError> {
        self.exec(
            "DELETE FROM ws_live_pulls WHERE conn = ? AND requestId = ?",
            vec![text(conn), SqlStorageValue::String(id.to_json())],
            "remove live pull",
        )?;
        Ok(())
    }

    /// Forgets connection `conn` and its live pulls.
    pub fn remove(&self, conn: &str) -> Result<(), StorageError> {
        self.exec(
            "DELETE FROM ws_live_pulls WHERE conn = ?",
            vec![text(conn)],
            "remove live pulls",
        )?;
        self.exec(
            "DELETE FROM ws_connections WHERE conn = ?",
            vec![text(conn)],
            "remove",
        )?;
        Ok(())
    }

    /// Every stored connection.
    pub fn load(&self) -> Result<HashMap<String, Saved>, StorageError> {
        let mut saved = HashMap::new();
        let cursor = self.exec("SELECT conn, context FROM ws_connections", vec![], "load")?;
        for row in cursor.raw() {
            let row = row.map_err(sql_error("load row"))?;
            let (Some(SqlStorageValue::String(conn)), Some(SqlStorageValue::String(context))) =
                (row.first(), row.get(1))
            else {
                return Err(StorageError("socket state: a malformed row".into()));
            };
            let context: SavedContext = serde_json::from_str(context)
                .map_err(|e| StorageError(format!("socket state of {conn}: {e}")))?;
            saved.insert(
                conn.clone(),
                Saved {
                    context: context.into(),
                    live: Vec::new(),
                },
            );
        }
        let cursor = self.exec(
            "SELECT conn, requestId FROM ws_live_pulls ORDER BY rowid",
            vec![],
            "load live pulls",
        )?;
        for row in cursor.raw() {
            let row = row.map_err(sql_error("load live pull"))?;
            let (Some(SqlStorageValue::String(conn)), Some(SqlStorageValue::String(id))) =
                (row.first(), row.get(1))
            else {
                return Err(StorageError("socket state: a malformed live pull".into()));
            };
            let id: RequestId = serde_json::from_str(id)
                .map_err(|e| StorageError(format!("socket state: live pull {id}: {e}")))?;
            if let Some(connection) = saved.get_mut(conn) {
                connection.live.push(id);
            }
        }
        Ok(saved)
    }
}

/// What a socket's attachment holds: its connection id, the key of its state in the object's
/// SQLite ([`SocketStates`]) and of the in-memory registry. A socket whose attachment is of an
/// earlier version (which held the state itself) has no stored state: it is closed when the
/// object wakes up, and its client reconnects and pulls from its cursor.
#[derive(Serialize, Deserialize)]
struct Attachment {
    #[serde(default)]
    conn: String,
}

/// Attachments are stored as JSON text, like the TypeScript server does, so their shape does
/// not depend on how values cross into JS.
fn read_attachment(ws: &WebSocket) -> Option<Attachment> {
    let text: String = ws.deserialize_attachment().ok().flatten()?;
    serde_json::from_str(&text).ok()
}

/// The id of a socket's connection, from its attachment (empty for an attachment of an earlier
/// version that had none).
pub(super) fn conn_of(ws: &WebSocket) -> Option<String> {
    read_attachment(ws).map(|attachment| attachment.conn)
}

/// Sets a socket's attachment to connection id `conn`.
pub(super) fn write_attachment(ws: &WebSocket, conn: &str) -> Result<(), String> {
    let attachment = Attachment {
        conn: conn.to_owned(),
    };
    let text = serde_json::to_string(&attachment).map_err(|e| e.to_string())?;
    ws.serialize_attachment(text).map_err(|e| e.to_string())
}

/// A random connection id (see [`Attachment::conn`]).
pub(super) fn new_conn_id() -> String {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 12];
    if getrandom::getrandom(&mut random).is_err() {
        // Without crypto randomness: the clock and a counter, unique within the isolate.
        let now = js_sys::Date::now().to_bits().to_le_bytes();
        let count = FALLBACK.fetch_add(1, Ordering::Relaxed).to_le_bytes();
        random[..8].copy_from_slice(&now);
        random[8..].copy_from_slice(&count[..4]);
    }
    random.iter().map(|b| format!("{b:02x}")).collect()
}
