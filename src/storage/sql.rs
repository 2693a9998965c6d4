//! SQL statements for LiveStore event logs, byte-compatible with `@livestore/sync-cf` 0.4.0
//! (same table names, DDL and column meanings), so either server reads the other's data.

use crate::livestore::event::{EventEncoded, StoredEvent};
use crate::stream::{SeqNum, StorageError};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Columns per inserted row.
const INSERT_COLUMNS: usize = 7;
/// D1 allows at most 100 bound parameters per statement: 14 rows of 7 columns.
pub const MAX_ROWS_PER_INSERT: usize = 100 / INSERT_COLUMNS;

/// A value bound to a statement parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    Null,
    /// Sequence numbers, always safe JS integers.
    Integer(u64),
    Text(String),
}

/// A statement with its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<SqlValue>,
}

/// `CREATE TABLE` for an event log, exactly as the TypeScript server issues it.
pub fn create_event_log(table: &str) -> String {
    format!(
        r#"CREATE TABLE IF NOT EXISTS "{table}" ("seqNum" integer primary key   , "parentSeqNum" integer   not null , "name" text   not null , "args" text    , "createdAt" text   not null , "clientId" text   not null , "sessionId" text   not null ) strict"#
    )
}

/// `CREATE TABLE` for the head checkpoint in DO SQLite, as the TypeScript server has it.
pub const CREATE_CONTEXT: &str = r#"CREATE TABLE IF NOT EXISTS "context_7" ("storeId" text primary key   , "currentHead" integer   not null , "backendId" text   not null ) strict"#;

/// Which store owns which event-log table in a shared D1 database. Two store ids can
/// sanitize to the same table name, and SQLite compares table names without regard to ASCII
/// case; the first store to claim a name (compared that way) keeps it and the others are
/// refused, so two stores never share a log. (Also created by the D1 migrations.)
pub const CREATE_TABLE_OWNERS: &str = "CREATE TABLE IF NOT EXISTS livestore_table_owners (tableName TEXT PRIMARY KEY NOT NULL, storeId TEXT NOT NULL, claimedAt TEXT NOT NULL) STRICT";

/// The index that makes the case-insensitive claim lookups cheap.
pub const CREATE_TABLE_OWNERS_INDEX: &str = "CREATE INDEX IF NOT EXISTS livestore_table_owners_nocase ON livestore_table_owners (tableName COLLATE NOCASE)";

/// Claims `table` for `store_id` unless a name equal to it ignoring case is claimed:
/// params `(table, storeId, now)`.
pub const CLAIM_TABLE: &str = "INSERT INTO livestore_table_owners (tableName, storeId, claimedAt) SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM livestore_table_owners WHERE tableName = ?1 COLLATE NOCASE)";

/// The owner of a table: param `(table)`, one column `storeId`. Rows from before claims
/// ignored case may hold several spellings of one name: the earliest claim owns it.
pub const TABLE_OWNER: &str = "SELECT storeId FROM livestore_table_owners WHERE tableName = ?1 COLLATE NOCASE ORDER BY rowid LIMIT 1";

/// Inserts of `events`, at most [`MAX_ROWS_PER_INSERT`] rows each, in the TypeScript
/// server's column order. Run them in one transaction.
pub fn insert_events(table: &str, events: &[StoredEvent]) -> Vec<Statement> {
    events
        .chunks(MAX_ROWS_PER_INSERT)
        .map(|rows| {
            let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?)"; rows.len()].join(", ");
            let mut params = Vec::with_capacity(rows.len() * INSERT_COLUMNS);
            for e in rows {
                params.push(SqlValue::Integer(e.event.seq_num.get()));
                params.push(SqlValue::Integer(e.event.parent_seq_num.get()));
                params.push(match e.args_text() {
                    Some(text) => SqlValue::Text(text.to_owned()),
                    None => SqlValue::Null,
                });
                params.push(SqlValue::Text(e.event.name.clone()));
                params.push(SqlValue::Text(e.created_at.clone()));
                params.push(SqlValue::Text(e.event.client_id.clone()));
                params.push(SqlValue::Text(e.event.session_id.clone()));
            }
            Statement {
                sql: format!(
                    "INSERT INTO {table} (seqNum, parentSeqNum, args, name, createdAt, clientId, sessionId) VALUES {placeholders}"
                ),
                params,
            }
        })
        .collect()
}

/// Highest sequence number, one column `m` (NULL when empty).
pub fn select_max_seq(table: &str) -> String {
    format!("SELECT MAX(seqNum) AS m FROM {table}")
}

/// Count of rows in `(?1, ?2]`, one column `c`.
pub fn count_range(table: &str) -> String {
    format!("SELECT COUNT(*) AS c FROM {table} WHERE seqNum > ?1 AND seqNum <= ?2")
}

/// Rows in `(?1, ?2]`, ascending, at most `?3`, columns in [`ROW_COLUMNS`] order.
pub fn read_range(table: &str) -> String {
    format!(
        "SELECT seqNum, parentSeqNum, name, args, createdAt, clientId, sessionId FROM {table} WHERE seqNum > ?1 AND seqNum <= ?2 ORDER BY seqNum ASC LIMIT ?3"
    )
}

/// The columns `read_range` returns, in order.
pub const ROW_COLUMNS: [&str; 7] = [
    "seqNum",
    "parentSeqNum",
    "name",
    "args",
    "createdAt",
    "clientId",
    "sessionId",
];

/// A row of [`read_range`], as the engines return it (numbers arrive as JS numbers).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    seq_num: f64,
    parent_seq_num: f64,
    name: String,
    args: Option<String>,
    created_at: String,
    client_id: String,
    session_id: String,
}

/// The row of [`select_max_seq`].
#[derive(Debug, Deserialize)]
pub struct MaxRow {
    m: Option<f64>,
}

/// The row of [`count_range`].
#[derive(Debug, Deserialize)]
pub struct CountRow {
    c: f64,
}

fn seq_column(value: f64, column: &str) -> Result<SeqNum, StorageError> {
    SeqNum::from_f64(value)
        .ok_or_else(|| StorageError(format!("invalid {column} {value} in the event log")))
}

impl EventRow {
    /// The stored event; fails on values no server writes (unsafe integers, invalid JSON).
    pub fn into_event(self) -> Result<StoredEvent, StorageError> {
        let args = self
            .args
            .map(RawValue::from_string)
            .transpose()
            .map_err(|e| StorageError(format!("invalid args JSON in the event log: {e}")))?;
        Ok(StoredEvent {
            event: EventEncoded {
                name: self.name,
                args,
                seq_num: seq_column(self.seq_num, "seqNum")?,
                parent_seq_num: seq_column(self.parent_seq_num, "parentSeqNum")?,
                client_id: self.client_id,
                session_id: self.session_id,
            },
            created_at: self.created_at,
        })
    }
}

impl MaxRow {
    /// The highest sequence number, `None` for an empty log.
    pub fn into_seq(self) -> Result<Option<SeqNum>, StorageError> {
        self.m.map(|m| seq_column(m, "seqNum")).transpose()
    }
}

impl CountRow {
    /// The count.
    pub fn into_count(self) -> u64 {
        // COUNT(*) is a non-negative integer.
        self.c.max(0.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::livestore::event::EventEncoded;
    use serde_json::json;

    fn ev(seq: u64, args: Option<serde_json::Value>) -> StoredEvent {
        let mut v =
            json!({"name":"n","seqNum":seq,"parentSeqNum":seq-1,"clientId":"c","sessionId":"s"});
        if let Some(a) = args {
            v["args"] = a;
        }
        StoredEvent {
            event: serde_json::from_str::<EventEncoded>(&v.to_string()).unwrap(),
            created_at: "T".into(),
        }
    }

    #[test]
    fn ddl_matches_the_typescript_server() {
        assert_eq!(
            create_event_log("eventlog_7_s1"),
            r#"CREATE TABLE IF NOT EXISTS "eventlog_7_s1" ("seqNum" integer primary key   , "parentSeqNum" integer   not null , "name" text   not null , "args" text    , "createdAt" text   not null , "clientId" text   not null , "sessionId" text   not null ) strict"#
        );
    }

    #[test]
    fn inserts_stay_within_d1_parameter_limit() {
        let events: Vec<StoredEvent> = (1..=30).map(|s| ev(s, Some(json!({"i": s})))).collect();
        let stmts = insert_events("t", &events);
        assert_eq!(stmts.len(), 3);
        assert!(stmts.iter().all(|s| s.params.len() <= 100));
        assert_eq!(stmts[0].params.len(), 14 * 7);
        assert_eq!(stmts[2].params.len(), 2 * 7);
        assert_eq!(stmts[2].sql.matches('?').count(), 14);
        assert_eq!(
            stmts[0].params[..7],
            [
                SqlValue::Integer(1),
                SqlValue::Integer(0),
                SqlValue::Text(r#"{"i":1}"#.into()),
                SqlValue::Text("n".into()),
                SqlValue::Text("T".into()),
                SqlValue::Text("c".into()),
                SqlValue::Text("s".into()),
            ]
        );
    }

    #[test]
    fn rows_decode_into_events() {
        let row: EventRow = serde_json::from_value(serde_json::json!({
            "seqNum": 3.0, "parentSeqNum": 2.0, "name": "n", "args": "{\"a\":1}",
            "createdAt": "T", "clientId": "c", "sessionId": "s"
        }))
        .unwrap();
        let event = row.into_event().unwrap();
        assert_eq!(event.event.seq_num.get(), 3);
        assert_eq!(event.args_text(), Some(r#"{"a":1}"#));
        let bad: EventRow = serde_json::from_value(serde_json::json!({
            "seqNum": 1.5, "parentSeqNum": 0.0, "name": "n", "args": null,
            "createdAt": "T", "clientId": "c", "sessionId": "s"
        }))
        .unwrap();
        assert!(bad.into_event().is_err());
        let broken: EventRow = serde_json::from_value(serde_json::json!({
            "seqNum": 1.0, "parentSeqNum": 0.0, "name": "n", "args": "{nope",
            "createdAt": "T", "clientId": "c", "sessionId": "s"
        }))
        .unwrap();
        assert!(broken.into_event().is_err());
        let empty: MaxRow = serde_json::from_value(serde_json::json!({"m": null})).unwrap();
        assert_eq!(empty.into_seq(), Ok(None));
        let count: CountRow = serde_json::from_value(serde_json::json!({"c": 4.0})).unwrap();
        assert_eq!(count.into_count(), 4);
    }

    #[test]
    fn absent_args_are_null_and_explicit_null_is_text() {
        let stmts = insert_events("t", &[ev(1, None), ev(2, Some(json!(null)))]);
        assert_eq!(stmts[0].params[2], SqlValue::Null);
        assert_eq!(stmts[0].params[9], SqlValue::Text("null".into()));
    }
}
