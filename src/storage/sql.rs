//! SQL statements for LiveStore event logs, byte-compatible with `@livestore/sync-cf` 0.4.0
//! (same table names, DDL and column meanings), so either server reads the other's data.

use crate::livestore::event::{EventEncoded, StoredEvent};
use crate::stream::{SeqNum, StorageError};
use serde::Deserialize;
use serde_json::value::RawValue;

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

/// A trigger that moves the store's `context_7` head along with every row inserted into
/// its event log, for logs kept in the same SQLite as `context_7`: the head then commits in
/// the same statement as the events (no crash window, one statement per push), and a
/// TypeScript server taking over the data keeps it right too.
pub fn create_head_trigger(table: &str, store_id: &str) -> String {
    // `table` is [A-Za-z0-9_] (see StoreId::table_name); the store id is a SQL string
    // literal, quotes doubled (store ids have no control characters).
    let store_id = store_id.replace('\'', "''");
    format!(
        r#"CREATE TRIGGER IF NOT EXISTS "{table}_head" AFTER INSERT ON "{table}" BEGIN UPDATE "context_7" SET "currentHead" = NEW."seqNum" WHERE "storeId" = '{store_id}' AND "currentHead" < NEW."seqNum"; END"#
    )
}

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

/// Bytes of row JSON per insert statement: well under the 2 MB limit on a bound string in
/// D1 and Durable Object SQLite.
pub const MAX_INSERT_JSON_BYTES: usize = 1_000_000;

/// The inserts of `events`, in the TypeScript server's column order: the rows travel as a
/// JSON array of arrays in one bound parameter that SQLite unpacks with `json_each`. Every
/// bound value crosses from wasm into JS, so one value instead of seven per row is most of
/// the cost of a push, and a push fits one statement (atomic without a transaction) unless
/// its rows exceed [`MAX_INSERT_JSON_BYTES`]; run several in one transaction. `args`
/// travels as a JSON string, so the stored text is exactly the client's.
pub fn insert_events(table: &str, events: &[StoredEvent]) -> Result<Vec<Statement>, StorageError> {
    let sql = format!(
        "INSERT INTO {table} (seqNum, parentSeqNum, args, name, createdAt, clientId, sessionId) SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 FROM json_each(?1)"
    );
    let mut statements = Vec::new();
    let mut json = String::new();
    for e in events {
        let row: InsertRow<'_> = (
            e.event.seq_num.get(),
            e.event.parent_seq_num.get(),
            e.args_text(),
            e.event.name.as_str(),
            e.created_at.as_str(),
            e.event.client_id.as_str(),
            e.event.session_id.as_str(),
        );
        let row = serde_json::to_string(&row)
            .map_err(|e| StorageError(format!("encoding a row to insert: {e}")))?;
        if !json.is_empty() && json.len() + row.len() + 2 > MAX_INSERT_JSON_BYTES {
            json.push(']');
            statements.push(Statement {
                sql: sql.clone(),
                params: vec![SqlValue::Text(std::mem::take(&mut json))],
            });
        }
        json.push(if json.is_empty() { '[' } else { ',' });
        json.push_str(&row);
    }
    if !json.is_empty() {
        json.push(']');
        statements.push(Statement {
            sql,
            params: vec![SqlValue::Text(json)],
        });
    }
    Ok(statements)
}

/// `(seqNum, parentSeqNum, args, name, createdAt, clientId, sessionId)`.
type InsertRow<'a> = (
    u64,
    u64,
    Option<&'a str>,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
);

/// Highest sequence number, one column `m` (NULL when empty).
pub fn select_max_seq(table: &str) -> String {
    format!("SELECT MAX(seqNum) AS m FROM {table}")
}

/// Count of rows in `(?1, ?2]`, one column `c`.
pub fn count_range(table: &str) -> String {
    format!("SELECT COUNT(*) AS c FROM {table} WHERE seqNum > ?1 AND seqNum <= ?2")
}

/// The number of events in `table` and the length of their text (as reads budget it): one
/// row `(c, b)`.
pub fn stats(table: &str) -> String {
    format!("SELECT COUNT(*) AS c, COALESCE(SUM({STORED_SIZE}), 0) AS b FROM {table}")
}

/// Positions and sizes (as reads budget them) of the oldest `?1` events: columns `s`, `b`.
pub fn oldest(table: &str) -> String {
    format!("SELECT seqNum AS s, {STORED_SIZE} AS b FROM {table} ORDER BY seqNum LIMIT ?1")
}

/// Removes the events `[?1, ?2]` (moved to the cold tier).
pub fn delete_range(table: &str) -> String {
    format!("DELETE FROM {table} WHERE seqNum >= ?1 AND seqNum <= ?2")
}

/// Removes every event of `table` (a store reset that clears its log).
pub fn clear(table: &str) -> String {
    format!("DELETE FROM {table}")
}

/// Drops `table` (a deleted store).
pub fn drop_table(table: &str) -> String {
    format!("DROP TABLE IF EXISTS {table}")
}

/// Releases a D1 table's claim (a deleted store): param `(table)`.
pub const RELEASE_TABLE: &str = "DELETE FROM livestore_table_owners WHERE tableName = ?1";

/// The event-log tables of a D1 database after `?1`, in name order, at most `?2`, with the
/// store that claimed each (none for a table made before claims, e.g. by the TypeScript
/// server): columns `t`, `s`. Run after [`CREATE_TABLE_OWNERS`].
pub const LIST_TABLES: &str = "SELECT m.name AS t, (SELECT o.storeId FROM livestore_table_owners o WHERE o.tableName = m.name COLLATE NOCASE ORDER BY o.rowid LIMIT 1) AS s FROM sqlite_master m WHERE m.type = 'table' AND substr(m.name, 1, 11) = 'eventlog_7_' AND m.name > ?1 ORDER BY m.name LIMIT ?2";

/// A row of [`stats`].
#[derive(Debug, Deserialize)]
pub struct StatsRow {
    c: f64,
    b: f64,
}

impl StatsRow {
    /// `(events, bytes)`.
    pub fn into_pair(self) -> (u64, u64) {
        // Counts and sums of lengths: non-negative integers well inside f64's exact range.
        (self.c.max(0.0) as u64, self.b.max(0.0) as u64)
    }
}

/// The columns of a row as reads take it: `j`, the JSON array `[seqNum, parentSeqNum, name,
/// createdAt, clientId, sessionId]`, and `a`, the args text as stored. Two strings cross into
/// wasm per row instead of seven values; the args stay out of the array, which would escape them
/// once more (twice the bytes for args full of quotes, and again in D1's answer). Rows are not
/// aggregated into one string per page, as a page of large events would exceed SQLite's 2 MB
/// string limit on Cloudflare.
const ROW_COLUMNS: &str =
    "json_array(e.seqNum, e.parentSeqNum, e.name, e.createdAt, e.clientId, e.sessionId) AS j, e.args AS a";

/// Rows in `(?1, ?2]`, ascending, at most `?3`, for a store that reads rows one at a time and
/// stops at its byte budget itself ([`crate::stream::Budget::take`] over a lazy cursor).
pub fn read_rows(table: &str) -> String {
    format!(
        "SELECT {ROW_COLUMNS} FROM {table} AS e WHERE e.seqNum > ?1 AND e.seqNum <= ?2 ORDER BY e.seqNum LIMIT ?3"
    )
}

/// Rows in `(?1, ?2]`, ascending, within a read budget of at most `?3` rows and `?4` bytes of
/// stored text (always at least the first row, however large), for a store that gets all the
/// rows of a query at once (D1). The row limit applies before the running total, so a read never
/// walks more than `?3` rows, and only the rows within the budget are read whole.
pub fn read_range(table: &str) -> String {
    format!(
        "SELECT {ROW_COLUMNS} \
         FROM (SELECT seqNum, size, SUM(size) OVER (ORDER BY seqNum) AS total \
               FROM (SELECT seqNum, {STORED_SIZE} AS size FROM {table} WHERE seqNum > ?1 AND seqNum <= ?2 ORDER BY seqNum LIMIT ?3)) AS w \
         JOIN {table} AS e ON e.seqNum = w.seqNum \
         WHERE w.total <= ?4 OR w.total = w.size ORDER BY e.seqNum"
    )
}

/// What a row costs a read's byte budget: the length of its text columns (as
/// `StoredEvent::size` counts it; never 0, so only the first row's total equals its size).
const STORED_SIZE: &str =
    "COALESCE(length(args), 0) + length(name) + length(clientId) + length(sessionId) + length(createdAt)";

/// `j` of a [`read_range`] or [`read_rows`] row: `[seqNum, parentSeqNum, name, createdAt, clientId, sessionId]`.
type RowHead = (f64, f64, String, String, String, String);

/// Decodes one row of [`read_range`] or [`read_rows`]: its columns `j` (`head`) and `a` (`args`).
pub fn decode_row(head: &str, args: Option<String>) -> Result<StoredEvent, StorageError> {
    let (seq_num, parent_seq_num, name, created_at, client_id, session_id) =
        serde_json::from_str::<RowHead>(head)
            .map_err(|e| StorageError(format!("invalid event log row: {e}")))?;
    EventRow {
        seq_num,
        parent_seq_num,
        name,
        args,
        created_at,
        client_id,
        session_id,
    }
    .into_event()
}

/// An event-log row, as an array in [`read_range`]'s order or as an object.
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
    use crate::stream::seq::MAX_SAFE_INTEGER;
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
    fn head_trigger_quotes_the_store_id() {
        let ddl = create_head_trigger("eventlog_7_it_s", "it's");
        assert!(ddl.contains(r#"AFTER INSERT ON "eventlog_7_it_s""#));
        assert!(ddl.contains(r#""storeId" = 'it''s'"#));
        assert_eq!(ddl.matches('\'').count(), 4);
    }

    /// A SQLite database with a store's log, `context_7` row and head trigger, as the
    /// DO SQLite engine sets them up.
    fn sqlite_log(table: &str, store_id: &str) -> rusqlite::Connection {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(&create_event_log(table)).unwrap();
        db.execute_batch(CREATE_CONTEXT).unwrap();
        db.execute(
            r#"INSERT INTO "context_7" ("storeId", "currentHead", "backendId") VALUES (?1, 0, 'b')"#,
            [store_id],
        )
        .unwrap();
        db.execute_batch(&create_head_trigger(table, store_id))
            .unwrap();
        db
    }

    fn run(db: &rusqlite::Connection, statement: &Statement) -> rusqlite::Result<usize> {
        let params: Vec<rusqlite::types::Value> = statement
            .params
            .iter()
            .map(|p| match p {
                SqlValue::Null => rusqlite::types::Value::Null,
                SqlValue::Integer(i) => rusqlite::types::Value::Integer(*i as i64),
                SqlValue::Text(t) => rusqlite::types::Value::Text(t.clone()),
            })
            .collect();
        db.execute(&statement.sql, rusqlite::params_from_iter(params))
    }

    fn run_all(db: &rusqlite::Connection, statements: &[Statement]) -> rusqlite::Result<usize> {
        db.execute_batch("SAVEPOINT batch")?;
        let mut n = 0;
        for statement in statements {
            match run(db, statement) {
                Ok(rows) => n += rows,
                Err(e) => {
                    db.execute_batch("ROLLBACK TO batch; RELEASE batch")?;
                    return Err(e);
                }
            }
        }
        db.execute_batch("RELEASE batch")?;
        Ok(n)
    }

    fn page(
        db: &rusqlite::Connection,
        table: &str,
        after: u64,
        upto: u64,
        limit: u64,
    ) -> Vec<StoredEvent> {
        page_within(db, table, after, upto, limit, u64::MAX >> 12)
    }

    fn page_within(
        db: &rusqlite::Connection,
        table: &str,
        after: u64,
        upto: u64,
        limit: u64,
        bytes: u64,
    ) -> Vec<StoredEvent> {
        let row = |r: &rusqlite::Row| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?));
        // All rows at once, bounded by the SQL (D1)...
        let rows: Vec<(String, Option<String>)> = db
            .prepare(&read_range(table))
            .unwrap()
            .query_map([after, upto, limit, bytes], row)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let windowed = rows
            .into_iter()
            .map(|(head, args)| decode_row(&head, args).unwrap())
            .collect::<Vec<_>>();
        // ...and one at a time, bounded while reading (DO SQLite): the same page.
        let budget = crate::stream::Budget {
            rows: limit as usize,
            bytes: bytes as usize,
        };
        let mut statement = db.prepare(&read_rows(table)).unwrap();
        let lazy = budget
            .take(
                statement
                    .query_map([after, upto, limit], row)
                    .unwrap()
                    .map(|r| {
                        let (head, args) = r.unwrap();
                        decode_row(&head, args)
                    }),
            )
            .unwrap();
        assert_eq!(format!("{windowed:?}"), format!("{lazy:?}"));
        windowed
    }

    #[test]
    fn a_batch_is_one_statement_with_one_parameter_unless_it_is_large() {
        let events: Vec<StoredEvent> = (1..=500).map(|s| ev(s, Some(json!({"i": s})))).collect();
        let statements = insert_events("t", &events).unwrap();
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0].params.len(), 1);
        assert_eq!(statements[0].sql.matches('?').count(), 1);
        assert!(insert_events("t", &[]).unwrap().is_empty());

        let big = json!("\"".repeat(150_000)); // 300 KB of args, 600 KB once escaped
        let large: Vec<StoredEvent> = (1..=6).map(|s| ev(s, Some(big.clone()))).collect();
        let statements = insert_events("t", &large).unwrap();
        assert!(statements.len() > 1);
        for statement in &statements {
            let SqlValue::Text(json) = &statement.params[0] else {
                panic!("rows are text")
            };
            assert!(json.len() <= MAX_INSERT_JSON_BYTES);
        }
    }

    #[test]
    fn inserted_rows_read_back_exactly_and_move_the_head() {
        let table = "eventlog_7_it_s";
        let db = sqlite_log(table, "it's");
        // args text kept byte for byte: key order, escapes, big and precise numbers, unicode
        let args = [
            r#"{"z":1,"a":[1.5,-0.0,1e300],"s":"quote \" backslash \\ newline \n"}"#,
            r#"{"n":12345678901234567890123,"f":0.30000000000000004}"#,
            r#""plain string 🎉 ünïcödé""#,
            "null",
        ];
        let mut events: Vec<StoredEvent> = args
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut e = ev(i as u64 + 1, None);
                e.event.args = Some(RawValue::from_string((*a).to_owned()).unwrap());
                e
            })
            .collect();
        events.push(ev(5, None)); // no args: SQL NULL
        let mut last = ev(MAX_SAFE_INTEGER, None);
        last.event.parent_seq_num = SeqNum::new(5).unwrap();
        events.push(last);
        assert_eq!(
            run_all(&db, &insert_events(table, &events).unwrap()).unwrap(),
            6
        );

        let stored: Vec<(i64, i64, Option<String>, String)> = db
            .prepare(&format!(
                "SELECT seqNum, parentSeqNum, args, name FROM {table} ORDER BY seqNum"
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored.len(), 6);
        for (row, event) in stored.iter().zip(&events) {
            assert_eq!(row.0 as u64, event.event.seq_num.get());
            assert_eq!(row.1 as u64, event.event.parent_seq_num.get());
            assert_eq!(row.2.as_deref(), event.args_text());
            assert_eq!(row.3, "n");
        }
        let head: i64 = db
            .query_row(r#"SELECT "currentHead" FROM "context_7""#, [], |r| r.get(0))
            .unwrap();
        assert_eq!(head as u64, MAX_SAFE_INTEGER);

        let read = page(&db, table, 0, MAX_SAFE_INTEGER, 100);
        let texts = |v: &[StoredEvent]| {
            v.iter()
                .map(|e| {
                    (
                        e.event.seq_num,
                        e.args_text().map(str::to_owned),
                        e.created_at.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(&read), texts(&events));
        // ranges and limits
        let middle = page(&db, table, 1, 4, 2);
        assert_eq!(
            middle
                .iter()
                .map(|e| e.event.seq_num.get())
                .collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(page(&db, table, 5, 5, 10).is_empty());
        // a page of events near the size limit each (SQLite's string limit is per row)
        let big = format!("\"{}\"", "x".repeat(900_000));
        let large: Vec<StoredEvent> = (1..=4)
            .map(|s| {
                let mut e = ev(s, None);
                e.event.args = Some(RawValue::from_string(big.clone()).unwrap());
                e
            })
            .collect();
        // Cloudflare's SQLite refuses strings over 2 MB: neither the inserts nor a page of
        // 3.6 MB of events may need one
        let db = sqlite_log("eventlog_7_l", "l");
        db.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_LENGTH, 2_000_000)
            .unwrap();
        let mut chain = large;
        chain[0].event.parent_seq_num = SeqNum::ROOT;
        let inserts = insert_events("eventlog_7_l", &chain).unwrap();
        assert_eq!(inserts.len(), 4);
        assert_eq!(run_all(&db, &inserts).unwrap(), 4);
        let read = page(&db, "eventlog_7_l", 0, 100, 256);
        assert_eq!(read.len(), 4);
        assert!(read.iter().all(|e| e.args_text() == Some(big.as_str())));
    }

    #[test]
    fn stats_count_what_reads_budget_and_clear_and_drop_remove_it() {
        use crate::stream::Entry;
        let table = "eventlog_7_st";
        let db = sqlite_log(table, "st");
        let query = stats(table);
        let stats = |db: &rusqlite::Connection| {
            db.query_row(&query, [], |r| {
                Ok((r.get::<_, f64>(0)?, r.get::<_, f64>(1)?))
            })
            .unwrap()
        };
        assert_eq!(stats(&db), (0.0, 0.0));
        let events: Vec<StoredEvent> = (1..=5).map(|s| ev(s, Some(json!({"n": s})))).collect();
        run_all(&db, &insert_events(table, &events).unwrap()).unwrap();
        let bytes: usize = events.iter().map(Entry::size).sum();
        assert_eq!(stats(&db), (5.0, bytes as f64));
        db.execute_batch(&clear(table)).unwrap();
        assert_eq!(stats(&db), (0.0, 0.0));
        db.execute_batch(&drop_table(table)).unwrap();
        assert!(db.query_row(&query, [], |_| Ok(())).is_err());
    }

    #[test]
    fn tables_are_listed_in_name_order_with_their_owners() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        db.execute_batch(CREATE_TABLE_OWNERS).unwrap();
        for table in ["eventlog_7_b", "eventlog_7_a", "eventlog_7_c", "other"] {
            db.execute_batch(&create_event_log(table)).unwrap();
        }
        for (table, owner) in [("eventlog_7_a", "a"), ("eventlog_7_C", "C")] {
            db.execute(CLAIM_TABLE, [table, owner, "now"]).unwrap();
        }
        let list = |after: &str, limit: i64| {
            let mut statement = db.prepare(LIST_TABLES).unwrap();
            statement
                .query_map(rusqlite::params![after, limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                })
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        };
        let name = |t: &str, o: Option<&str>| (t.to_owned(), o.map(str::to_owned));
        assert_eq!(
            list("", 2),
            [name("eventlog_7_a", Some("a")), name("eventlog_7_b", None)]
        );
        // a claim made with another case of the name still names the owner
        assert_eq!(list("eventlog_7_b", 5), [name("eventlog_7_c", Some("C"))]);
        db.execute(RELEASE_TABLE, ["eventlog_7_a"]).unwrap();
        assert_eq!(list("", 1), [name("eventlog_7_a", None)]);
    }

    #[test]
    fn a_page_holds_what_its_budget_allows_and_its_sizes_are_what_events_count() {
        use crate::stream::Entry;
        let table = "eventlog_7_b";
        let db = sqlite_log(table, "b");
        // 20 events of about 100 kB each, one of 800 kB
        let events: Vec<StoredEvent> = (1..=20)
            .map(|s| {
                ev(
                    s,
                    Some(json!("y".repeat(if s == 5 { 800_000 } else { 100_000 }))),
                )
            })
            .collect();
        run_all(&db, &insert_events(table, &events).unwrap()).unwrap();
        let size =
            |from: usize, to: usize| events[from..to].iter().map(Entry::size).sum::<usize>() as u64;
        let seqs = |page: &[StoredEvent]| {
            page.iter()
                .map(|e| e.event.seq_num.get())
                .collect::<Vec<_>>()
        };
        // by bytes: exactly the events whose running total fits
        assert_eq!(
            seqs(&page_within(&db, table, 0, 20, 100, size(0, 3))),
            [1, 2, 3]
        );
        assert_eq!(
            seqs(&page_within(&db, table, 0, 20, 100, size(0, 3) - 1)),
            [1, 2]
        );
        // the first event is read however large; the next one only if it fits
        assert_eq!(seqs(&page_within(&db, table, 4, 20, 100, 10)), [5]);
        assert_eq!(seqs(&page_within(&db, table, 5, 20, 100, 10)), [6]);
        // by rows
        assert_eq!(
            seqs(&page_within(&db, table, 0, 20, 2, u64::MAX >> 12)),
            [1, 2]
        );
        // within the range only
        assert_eq!(
            seqs(&page_within(&db, table, 10, 12, 100, u64::MAX >> 12)),
            [11, 12]
        );
    }

    #[test]
    fn a_failing_batch_stores_nothing_and_keeps_the_head() {
        let table = "eventlog_7_s";
        let db = sqlite_log(table, "s");
        run_all(&db, &insert_events(table, &[ev(1, None)]).unwrap()).unwrap();
        // seqNum 2 is new but 1 collides: the whole statement fails
        let batch = [ev(2, None), ev(1, None)];
        assert!(run_all(&db, &insert_events(table, &batch).unwrap()).is_err());
        let count: i64 = db
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1);
        let head: i64 = db
            .query_row(r#"SELECT "currentHead" FROM "context_7""#, [], |r| r.get(0))
            .unwrap();
        assert_eq!(head, 1);
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
        let table = "eventlog_7_s";
        let db = sqlite_log(table, "s");
        let batch = [ev(1, None), ev(2, Some(json!(null)))];
        run_all(&db, &insert_events(table, &batch).unwrap()).unwrap();
        let args: Vec<Option<String>> = db
            .prepare(&format!("SELECT args FROM {table} ORDER BY seqNum"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(args, [None, Some("null".to_owned())]);
    }
}
