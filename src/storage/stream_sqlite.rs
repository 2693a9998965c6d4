//! A Durable Streams stream in its Durable Object's own SQLite: the path's metadata (one row of
//! JSON), the messages by position, and the producers' fencing state. A commit is one
//! `transactionSync`: messages, metadata and producer state together or not at all.
//!
//! With a cold tier (R2), the oldest messages move out a full segment at a time
//! ([`SqliteStreamStore::compact`]); the index of segments lives here, and reads stitch the
//! tiers (see [`super::segments`]).

use super::cold_index::{
    as_u64, before, int, positions_and_sizes, run_compaction, ColdIndex, HotLog, HotTally,
    MoveState,
};
use super::do_sqlite::sql_error;
use super::r2::R2Cold;
use super::segments::{encode_messages, message_of, read_stitched, SegmentPolicy};
use crate::durable_streams::meta::{ClosedBy, ForkInfo, Meta, StreamMeta};
use crate::faults::CrashPoint;
use crate::stream::producer::ProducerState;
use crate::stream::{
    Budget, Commit, Header, HeaderWrite, Loaded, LogStore, Message, SeqNum, StorageError,
};
use serde::Deserialize;
use std::rc::Rc;
use worker::{SqlStorage, SqlStorageValue, Storage};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS ds_meta (id INTEGER PRIMARY KEY CHECK (id = 1), meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ds_messages (seq INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS ds_producers (id TEXT PRIMARY KEY, epoch INTEGER NOT NULL, last_seq INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ds_producers_updated ON ds_producers (updated_ms);";

/// Messages `(?1, ?2]`, at most `?3`; read through a lazy cursor that stops at the byte budget.
const READ: &str =
    "SELECT seq, data FROM ds_messages WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3";

/// Messages per insert statement (two bound values each, under SQLite's limits).
const INSERT_ROWS: usize = 50;

/// The metadata as versions before forks read through their source kept it: one stream's fields
/// at the top level, its message count as `tail`, and the inherited messages copied into the
/// fork's own table (so such a fork reads them locally: it inherits nothing through its source).
#[derive(Deserialize)]
struct LegacyMeta {
    content_type: String,
    ttl_seconds: Option<u64>,
    expires_at_ms: Option<i64>,
    created_ms: u64,
    last_access_ms: u64,
    closed: bool,
    closed_by: Option<ClosedBy>,
    last_stream_seq: Option<String>,
    fork: Option<LegacyFork>,
    ref_count: u64,
    soft_deleted: bool,
}

#[derive(Deserialize)]
struct LegacyFork {
    source: String,
    offset: u64,
    sub_offset: u64,
}

impl From<LegacyMeta> for Meta {
    fn from(old: LegacyMeta) -> Meta {
        Meta {
            stream: Some(StreamMeta {
                content_type: old.content_type,
                ttl_seconds: old.ttl_seconds,
                expires_at_ms: old.expires_at_ms,
                created_ms: old.created_ms,
                last_access_ms: old.last_access_ms,
                closed: old.closed,
                closed_by: old.closed_by,
                last_stream_seq: old.last_stream_seq,
                fork: old.fork.map(|fork| ForkInfo {
                    source: fork.source,
                    offset: fork.offset,
                    sub_offset: fork.sub_offset,
                    inherited: 0,
                    cut: None,
                }),
                ref_count: old.ref_count,
                soft_deleted: old.soft_deleted,
                estuary: None,
            }),
            owed_releases: Vec::new(),
        }
    }
}

fn decode_meta(text: &str) -> Result<Meta, StorageError> {
    serde_json::from_str::<Meta>(text)
        .or_else(|current| {
            serde_json::from_str::<LegacyMeta>(text)
                .map(Meta::from)
                .map_err(|_| current)
        })
        .map_err(|e| StorageError(format!("stored metadata: {e}")))
}

/// The stream kept in one Durable Object's SQLite.
#[derive(Clone)]
pub struct SqliteStreamStore {
    storage: Rc<Storage>,
    sql: SqlStorage,
    index: ColdIndex,
    cold: Option<Rc<R2Cold>>,
    policy: SegmentPolicy,
    /// Messages and bytes in the hot table, once counted; commits and moves keep it.
    hot: HotTally,
    /// Its moves to the cold tier.
    moves: Rc<MoveState>,
}

pub use super::cold_index::ColdStats;

impl SqliteStreamStore {
    /// Opens the store, creating its tables if needed.
    pub fn open(storage: Storage) -> Result<SqliteStreamStore, StorageError> {
        let sql = storage.sql();
        sql.exec(SCHEMA, None).map_err(sql_error("create tables"))?;
        let index = ColdIndex::open(sql.clone(), "ds_segments", "ds_cold_garbage")?;
        Ok(SqliteStreamStore {
            storage: Rc::new(storage),
            sql,
            index,
            cold: None,
            policy: SegmentPolicy::default(),
            hot: HotTally::default(),
            moves: Rc::default(),
        })
    }

    /// The store with a cold tier: full segments move there under `policy`.
    pub fn with_cold(mut self, cold: Option<R2Cold>, policy: SegmentPolicy) -> SqliteStreamStore {
        self.cold = cold.map(Rc::new);
        self.policy = policy;
        self
    }

    /// The cold tier, if there is one.
    pub fn cold(&self) -> Option<&R2Cold> {
        self.cold.as_deref()
    }

    fn exec(
        &self,
        query: &str,
        params: Vec<SqlStorageValue>,
        context: &'static str,
    ) -> Result<worker::SqlCursor, StorageError> {
        super::do_sqlite::exec(&self.sql, query, params, context)
    }

    fn first_u64(&self, query: &str, context: &'static str) -> Result<Option<u64>, StorageError> {
        self.first_u64_with(query, vec![], context)
    }

    /// The first column of the first row of `query`, as an integer.
    fn first_u64_with(
        &self,
        query: &str,
        params: Vec<SqlStorageValue>,
        context: &'static str,
    ) -> Result<Option<u64>, StorageError> {
        super::cold_index::first_u64(&self.sql, query, params, context)
    }

    /// The cold tier's figures (admin).
    pub fn cold_stats(&self) -> Result<ColdStats, StorageError> {
        self.index.stats()
    }

    /// `(messages, bytes)` in the hot table (admin).
    pub fn stats(&self) -> Result<(u64, u64), StorageError> {
        let cursor = self.exec(
            "SELECT COUNT(*), COALESCE(SUM(length(data)), 0) FROM ds_messages",
            vec![],
            "stats",
        )?;
        let row = match cursor.raw().next() {
            Some(row) => row.map_err(sql_error("stats row"))?,
            None => return Ok((0, 0)),
        };
        let mut values = row.iter().map(|v| as_u64(v).unwrap_or(0));
        Ok((values.next().unwrap_or(0), values.next().unwrap_or(0)))
    }

    /// The producers this stream remembers (admin): `(id, epoch, last seq, last seen ms)`.
    pub fn producers(&self) -> Result<Vec<(String, u64, u64, u64)>, StorageError> {
        let cursor = self.exec(
            "SELECT id, epoch, last_seq, updated_ms FROM ds_producers ORDER BY updated_ms DESC LIMIT 100",
            vec![],
            "producers",
        )?;
        let mut producers = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(sql_error("producer row"))?;
            let mut values = row.into_iter();
            let Some(SqlStorageValue::String(id)) = values.next() else {
                continue;
            };
            let mut number = || values.next().as_ref().and_then(as_u64).unwrap_or(0);
            let (epoch, seq, seen) = (number(), number(), number());
            producers.push((id, epoch, seq, seen));
        }
        Ok(producers)
    }

    /// Messages `(after, upto]` of the hot table, within `budget`.
    fn read_hot(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Message>, StorageError> {
        let cursor = self.exec(
            READ,
            vec![int(after.get()), int(upto.get()), int(budget.rows as u64)],
            "read messages",
        )?;
        // The cursor is lazy: rows past the budget are never read.
        budget.take(cursor.raw().map(|row| {
            let row = row.map_err(sql_error("read message row"))?;
            let seq = row
                .first()
                .and_then(as_u64)
                .and_then(SeqNum::new)
                .ok_or_else(|| StorageError("message without a position".into()))?;
            let data = match row.into_iter().nth(1) {
                Some(SqlStorageValue::Blob(data)) => data,
                Some(SqlStorageValue::String(text)) => text.into_bytes(),
                _ => Vec::new(),
            };
            Ok(Message::new(seq, data))
        }))
    }

    /// Moves the oldest full segments to the cold tier, and first deletes the objects no segment
    /// names any more. Does nothing without a cold tier, or while another call runs. Returns the
    /// segments moved.
    pub async fn compact(&self) -> Result<usize, StorageError> {
        let Some(cold) = self.cold.clone() else {
            return Ok(0);
        };
        run_compaction(
            &self.moves,
            &self.index,
            self,
            cold.as_ref(),
            self.policy,
            &self.storage,
            CrashPoint::StreamColdAfterPut,
        )
        .await
    }

    fn meta(&self) -> Result<Option<Meta>, StorageError> {
        let cursor = self.exec("SELECT meta FROM ds_meta WHERE id = 1", vec![], "read meta")?;
        for row in cursor.raw() {
            let row = row.map_err(sql_error("read meta row"))?;
            if let Some(SqlStorageValue::String(text)) = row.first() {
                return decode_meta(text).map(Some);
            }
        }
        Ok(None)
    }

    /// The writes of `commit`, run inside its transaction.
    fn write(&self, commit: &Commit<'_, Message, Meta>) -> Result<(), StorageError> {
        if commit.reset {
            self.exec("DELETE FROM ds_messages", vec![], "clear messages")?;
            self.exec("DELETE FROM ds_producers", vec![], "clear producers")?;
            // The segments go with their stream: their objects are deleted after the commit.
            self.index.discard_all()?;
        }
        for rows in commit.entries.chunks(INSERT_ROWS) {
            let placeholders = vec!["(?, ?)"; rows.len()].join(", ");
            let params = rows
                .iter()
                .flat_map(|m| [int(m.seq.get()), SqlStorageValue::Blob(m.data.clone())])
                .collect();
            self.exec(
                &format!("INSERT INTO ds_messages (seq, data) VALUES {placeholders}"),
                params,
                "insert messages",
            )?;
        }
        if !commit.entries.is_empty() {
            crate::faults::crash_point_sync(CrashPoint::StreamAfterData, || {
                let stored = self
                    .first_u64("SELECT COUNT(*) FROM ds_messages", "count messages")
                    .ok()
                    .flatten();
                format!("{} messages in the transaction", stored.unwrap_or_default())
            })?;
        }
        match &commit.header {
            HeaderWrite::Keep => {}
            HeaderWrite::Save(meta) => {
                let text = serde_json::to_string(meta)
                    .map_err(|e| StorageError(format!("metadata: {e}")))?;
                self.exec(
                    "INSERT OR REPLACE INTO ds_meta (id, meta) VALUES (1, ?)",
                    vec![SqlStorageValue::String(text)],
                    "save meta",
                )?;
            }
            HeaderWrite::Remove => {
                self.exec("DELETE FROM ds_meta", vec![], "remove meta")?;
            }
        }
        if let Some(producer) = &commit.producer {
            self.exec(
                "DELETE FROM ds_producers WHERE updated_ms < ?",
                vec![int(producer.expire_before_ms)],
                "expire producers",
            )?;
            self.exec(
                "INSERT OR REPLACE INTO ds_producers (id, epoch, last_seq, updated_ms) VALUES (?, ?, ?, ?)",
                vec![
                    SqlStorageValue::String(producer.id.to_owned()),
                    int(producer.state.epoch),
                    int(producer.state.last_seq),
                    int(producer.now_ms),
                ],
                "save producer",
            )?;
        }
        Ok(())
    }
}

impl HotLog for SqliteStreamStore {
    fn incarnation(&self) -> Result<Option<String>, StorageError> {
        Ok(self
            .meta()?
            .and_then(|meta| meta.stream)
            .map(|stream| stream.created_ms.to_string()))
    }

    fn hot_tally(&self) -> Result<(u64, u64), StorageError> {
        self.hot.get_or(|| self.stats())
    }

    fn oldest(&self, limit: u64) -> Result<Vec<(SeqNum, u64)>, StorageError> {
        let cursor = self.exec(
            "SELECT seq, length(data) FROM ds_messages ORDER BY seq LIMIT ?",
            vec![int(limit)],
            "oldest messages",
        )?;
        Ok(positions_and_sizes(cursor))
    }

    fn frames(&self, first: SeqNum, last: SeqNum) -> Result<(Vec<u8>, u64), StorageError> {
        let rows = self.read_hot(
            before(first),
            last,
            Budget {
                rows: usize::MAX,
                bytes: usize::MAX,
            },
        )?;
        Ok((encode_messages(&rows), rows.len() as u64))
    }

    fn present(&self, first: SeqNum, last: SeqNum) -> Result<u64, StorageError> {
        Ok(self
            .first_u64_with(
                "SELECT COUNT(*) FROM ds_messages WHERE seq >= ? AND seq <= ?",
                vec![int(first.get()), int(last.get())],
                "count moving rows",
            )?
            .unwrap_or(0))
    }

    fn delete_hot(&self, first: SeqNum, last: SeqNum) -> Result<(), StorageError> {
        self.exec(
            "DELETE FROM ds_messages WHERE seq >= ? AND seq <= ?",
            vec![int(first.get()), int(last.get())],
            "drop moved rows",
        )?;
        Ok(())
    }

    fn moved(&self, count: u64, bytes: u64) {
        self.hot.removed(count, bytes);
    }
}

impl LogStore for SqliteStreamStore {
    type Entry = Message;
    type Header = Meta;

    async fn load(&self) -> Result<Loaded<Meta>, StorageError> {
        let header = self.meta()?;
        let base = header.as_ref().map_or(SeqNum::ROOT, Meta::base);
        let hot = self
            .first_u64("SELECT MAX(seq) FROM ds_messages", "read tail")?
            .and_then(SeqNum::new);
        let last = hot.max(self.index.tail()?);
        Ok(Loaded {
            header,
            tail: last.map_or(base, |last| last.max(base)),
        })
    }

    async fn read(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Message>, StorageError> {
        let segments = self.index.segments(after, upto)?;
        if segments.is_empty() {
            return self.read_hot(after, upto, budget);
        }
        let cold = self.cold.as_ref().ok_or_else(|| {
            StorageError(format!(
                "this stream has cold segments: it needs the {} bucket",
                super::r2::SEGMENTS_BINDING
            ))
        })?;
        let hot = |after, upto, budget| std::future::ready(self.read_hot(after, upto, budget));
        read_stitched(
            cold.as_ref(),
            &segments,
            message_of,
            hot,
            after,
            upto,
            budget,
        )
        .await
    }

    async fn count(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
        let hot = self
            .first_u64_with(
                "SELECT COUNT(*) FROM ds_messages WHERE seq > ? AND seq <= ?",
                vec![int(after.get()), int(upto.get())],
                "count messages",
            )?
            .unwrap_or(0);
        Ok(hot + self.index.count(after, upto)?)
    }

    async fn producer(&self, id: &str) -> Result<Option<ProducerState>, StorageError> {
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

    async fn commit(&self, commit: Commit<'_, Message, Meta>) -> Result<(), StorageError> {
        // The closure must own what it writes (transactionSync takes a JS callback).
        let store = self.clone();
        let entries = commit.entries.to_vec();
        let added = (
            entries.len() as u64,
            entries.iter().map(|m| m.data.len() as u64).sum::<u64>(),
        );
        let header = match commit.header {
            HeaderWrite::Keep => None,
            HeaderWrite::Save(meta) => Some(Some(meta.clone())),
            HeaderWrite::Remove => Some(None),
        };
        let producer = commit
            .producer
            .map(|p| (p.id.to_owned(), p.state, p.now_ms, p.expire_before_ms));
        let reset = commit.reset;
        super::transaction::transaction(&self.storage, move || {
            let header = match &header {
                None => HeaderWrite::Keep,
                Some(Some(meta)) => HeaderWrite::Save(meta),
                Some(None) => HeaderWrite::Remove,
            };
            let producer = producer
                .as_ref()
                .map(
                    |(id, state, now_ms, expire_before_ms)| crate::stream::store::ProducerWrite {
                        id,
                        state: *state,
                        now_ms: *now_ms,
                        expire_before_ms: *expire_before_ms,
                    },
                );
            store.write(&Commit {
                reset,
                entries: &entries,
                header,
                producer,
            })
        })?;
        if reset {
            self.hot.emptied();
            // The segments went to the garbage with the rows.
            self.moves.garbage_noted();
        }
        self.hot.added(added.0, added.1);
        crate::faults::crash_point(CrashPoint::StreamAfterCommit).await;
        Ok(())
    }
}
