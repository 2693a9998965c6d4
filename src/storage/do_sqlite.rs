//! The Durable Object's own SQLite: the head checkpoint (`context_7`, as the TypeScript
//! server keeps it) and, when chosen, the store's event log (`eventlog_7_<storeId>`), whose
//! oldest events may move to the cold tier (`SyncObjectOptions::cold_segments`; the index is
//! `ls_segments`, see [`super::cold_index`]).

use super::cold_index::{
    before, int, positions_and_sizes, run_compaction, ColdIndex, ColdStats, HotLog, HotTally,
    MoveState,
};
pub use super::context::ContextRow;
use super::r2::R2Cold;
use super::segments::{encode_messages, read_stitched, SegmentPolicy};
use super::sql::{self, CountRow, MaxRow, SqlValue, CREATE_CONTEXT};
use crate::faults::CrashPoint;
use crate::livestore::event::StoredEvent;
use crate::livestore::store_id::StoreId;
use crate::stream::producer::ProducerState;
use crate::stream::{
    Budget, Commit, Entry, HeaderWrite, Loaded, LogStore, Message, SeqNum, StorageError,
};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use worker::{SqlStorage, SqlStorageValue, Storage};

/// Maps a failed SQL call on an object's SQLite to a storage error naming what it did.
pub(crate) fn sql_error(context: &str) -> impl Fn(worker::Error) -> StorageError + '_ {
    move |e| StorageError(format!("DO SQLite {context}: {e}"))
}

/// Runs `query` on `sql`; a failure names `context`.
pub(crate) fn exec(
    sql: &SqlStorage,
    query: &str,
    params: Vec<SqlStorageValue>,
    context: &'static str,
) -> Result<worker::SqlCursor, StorageError> {
    sql.exec(query, params).map_err(sql_error(context))
}

/// One store's event log in the Durable Object's SQLite. Its head checkpoint (`context_7`)
/// is kept by a trigger, in the same statement as the inserts.
pub struct DoSqliteEventLog {
    hot: EventsHot,
    store_id: String,
    ready: Cell<bool>,
    /// The cold index, opened with the table (it may hold segments even with the cold tier off
    /// now: reads then fail rather than skip them).
    index: RefCell<Option<ColdIndex>>,
    cold: Option<(Rc<R2Cold>, SegmentPolicy)>,
    flags: Rc<ColdFlags>,
}

/// What every log instance of one object shares about its cold tier (a reset opens another
/// instance while the old one's move may still run).
#[derive(Debug)]
pub struct ColdFlags {
    /// Whether any segment exists: reads of a log that never moved skip the index.
    any_cold: Cell<bool>,
    /// Its moves to the cold tier.
    moves: MoveState,
}

impl Default for ColdFlags {
    fn default() -> Self {
        ColdFlags {
            any_cold: Cell::new(false),
            moves: MoveState::default(),
        }
    }
}

fn to_sql(value: &SqlValue) -> SqlStorageValue {
    match value {
        SqlValue::Null => SqlStorageValue::Null,
        // Safe integers only (SeqNum), so the i64 is exact.
        SqlValue::Integer(i) => SqlStorageValue::from(*i as i64),
        SqlValue::Text(s) => SqlStorageValue::from(s.as_str()),
    }
}

/// The hot rows of a store's log: what reads, commits and moves share.
#[derive(Clone)]
struct EventsHot {
    storage: Rc<Storage>,
    sql: SqlStorage,
    table: Rc<str>,
    checkpoint: ContextRow,
    /// Events and bytes in the table, once counted; commits and moves keep it.
    tally: HotTally,
    flags: Rc<ColdFlags>,
}

impl EventsHot {
    fn query<T: serde::de::DeserializeOwned>(
        &self,
        query: &str,
        params: &[SqlValue],
    ) -> Result<Vec<T>, StorageError> {
        self.sql
            .exec(query, params.iter().map(to_sql).collect::<Vec<_>>())
            .map_err(sql_error("query"))?
            .to_array()
            .map_err(sql_error("decode rows"))
    }

    fn stats(&self) -> Result<(u64, u64), StorageError> {
        let rows: Vec<sql::StatsRow> = self.query(&sql::stats(&self.table), &[])?;
        Ok(rows
            .into_iter()
            .next()
            .map_or((0, 0), sql::StatsRow::into_pair))
    }

    fn count(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
        let rows: Vec<CountRow> = self.query(
            &sql::count_range(&self.table),
            &[
                SqlValue::Integer(after.get()),
                SqlValue::Integer(upto.get()),
            ],
        )?;
        Ok(rows.into_iter().next().map_or(0, CountRow::into_count))
    }

    /// Events `(after, upto]` of the table, within `budget`.
    fn read(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<StoredEvent>, StorageError> {
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
}

impl HotLog for EventsHot {
    fn incarnation(&self) -> Result<Option<String>, StorageError> {
        self.checkpoint.current_backend_id()
    }

    fn hot_tally(&self) -> Result<(u64, u64), StorageError> {
        self.tally.get_or(|| self.stats())
    }

    fn oldest(&self, limit: u64) -> Result<Vec<(SeqNum, u64)>, StorageError> {
        let cursor = self
            .sql
            .exec(&sql::oldest(&self.table), vec![int(limit)])
            .map_err(sql_error("oldest events"))?;
        Ok(positions_and_sizes(cursor))
    }

    fn frames(&self, first: SeqNum, last: SeqNum) -> Result<(Vec<u8>, u64), StorageError> {
        let after = before(first);
        let all = Budget {
            rows: usize::MAX,
            bytes: usize::MAX,
        };
        let frames: Vec<Message> = self
            .read(after, last, all)?
            .iter()
            .map(|e| Message::new(e.seq(), super::event_frame::encode(e)))
            .collect();
        Ok((encode_messages(&frames), frames.len() as u64))
    }

    fn present(&self, first: SeqNum, last: SeqNum) -> Result<u64, StorageError> {
        let after = before(first);
        self.count(after, last)
    }

    fn delete_hot(&self, first: SeqNum, last: SeqNum) -> Result<(), StorageError> {
        self.sql
            .exec(
                &sql::delete_range(&self.table),
                vec![int(first.get()), int(last.get())],
            )
            .map_err(sql_error("drop moved events"))?;
        Ok(())
    }

    fn moved(&self, count: u64, bytes: u64) {
        // At once: the next read must look in the index, whatever the rest of the run does.
        self.flags.any_cold.set(true);
        self.tally.removed(count, bytes);
    }
}

/// The moves of one store's log to the cold tier, started after a push.
pub struct Compactor {
    hot: EventsHot,
    index: ColdIndex,
    cold: Rc<R2Cold>,
    policy: SegmentPolicy,
}

impl Compactor {
    /// Deletes what no segment names any more, then moves the full segments there are.
    /// Returns the segments moved; does nothing while another run is under way.
    pub async fn run(self) -> Result<usize, StorageError> {
        run_compaction(
            &self.hot.flags.moves,
            &self.index,
            &self.hot,
            self.cold.as_ref(),
            self.policy,
            &self.hot.storage,
            CrashPoint::StoreColdAfterPut,
        )
        .await
    }
}

impl DoSqliteEventLog {
    /// The log of `store_id` in this object's SQLite; `flags` are the object's (one per object,
    /// shared by the instances a reset makes).
    pub fn new(
        storage: Storage,
        store_id: &StoreId,
        checkpoint: ContextRow,
        flags: Rc<ColdFlags>,
    ) -> Self {
        DoSqliteEventLog {
            hot: EventsHot {
                sql: storage.sql(),
                storage: Rc::new(storage),
                table: store_id.table_name().into(),
                checkpoint,
                tally: HotTally::default(),
                flags: flags.clone(),
            },
            store_id: store_id.as_str().to_owned(),
            ready: Cell::new(false),
            index: RefCell::default(),
            cold: None,
            flags,
        }
    }

    /// The log with a cold tier: full segments move there under `policy`.
    pub fn with_cold(mut self, cold: Option<(R2Cold, SegmentPolicy)>) -> Self {
        self.cold = cold.map(|(cold, policy)| (Rc::new(cold), policy));
        self
    }

    /// What moves the log's oldest events to the cold tier, when it has one.
    pub fn compactor(&self) -> Option<Compactor> {
        let (cold, policy) = self.cold.clone()?;
        // A deleted log keeps its index open (its garbage is collected), and is not created
        // again for it.
        let open = self.index.borrow().clone();
        let index = match open {
            Some(index) => index,
            None => {
                self.ensure_ready().ok()?;
                self.index.borrow().clone()?
            }
        };
        Some(Compactor {
            hot: self.hot.clone(),
            index,
            cold,
            policy,
        })
    }

    fn ensure_ready(&self) -> Result<(), StorageError> {
        if !self.ready.get() {
            let sql = &self.hot.sql;
            sql.exec(&sql::create_event_log(&self.hot.table), None)
                .map_err(sql_error("create table"))?;
            sql.exec(CREATE_CONTEXT, None)
                .map_err(sql_error("create context"))?;
            sql.exec(
                &sql::create_head_trigger(&self.hot.table, &self.store_id),
                None,
            )
            .map_err(sql_error("create head trigger"))?;
            let index = ColdIndex::open(sql.clone(), "ls_segments", "ls_cold_garbage")?;
            if index.tail()?.is_some() {
                self.flags.any_cold.set(true);
            }
            *self.index.borrow_mut() = Some(index);
            self.ready.set(true);
        }
        Ok(())
    }

    fn index(&self) -> Result<ColdIndex, StorageError> {
        self.ensure_ready()?;
        self.index
            .borrow()
            .clone()
            .ok_or_else(|| StorageError("the cold index is not open".into()))
    }

    fn query<T: serde::de::DeserializeOwned>(
        &self,
        query: &str,
        params: &[SqlValue],
    ) -> Result<Vec<T>, StorageError> {
        self.ensure_ready()?;
        self.hot.query(query, params)
    }
}

impl DoSqliteEventLog {
    /// `(events, bytes)` of the store's log, both tiers (admin).
    pub fn stats(&self) -> Result<(u64, u64), StorageError> {
        self.ensure_ready()?;
        let (events, bytes) = self.hot.stats()?;
        let cold = self.cold_stats()?;
        Ok((events + cold.messages, bytes + cold.bytes))
    }

    /// The cold tier's figures (admin).
    pub fn cold_stats(&self) -> Result<ColdStats, StorageError> {
        self.index()?.stats()
    }

    /// How many objects the bucket holds for this store (admin; 0 without a cold tier, at most
    /// 1,000 counted).
    pub async fn cold_objects(&self) -> Result<u64, StorageError> {
        match &self.cold {
            Some((cold, _)) => Ok(cold.count(1_000).await? as u64),
            None => Ok(0),
        }
    }

    /// Drops the store's table, its head trigger with it, and its segments (admin delete; their
    /// objects go at the next collection, see [`Self::compactor`]).
    pub fn delete(&self) -> Result<(), StorageError> {
        self.empty(sql::drop_table(&self.hot.table), "drop")?;
        self.ready.set(false);
        Ok(())
    }

    /// Removes every event, both tiers (admin reset).
    pub fn clear(&self) -> Result<(), StorageError> {
        self.empty(sql::clear(&self.hot.table), "clear")
    }

    /// Runs `statement` (which empties the table) and discards the segments, in one transaction.
    fn empty(&self, statement: String, what: &'static str) -> Result<(), StorageError> {
        let index = self.index()?;
        let sql = self.hot.sql.clone();
        super::transaction::transaction(&self.hot.storage, move || {
            sql.exec(&statement, None).map_err(sql_error(what))?;
            index.discard_all()
        })?;
        self.emptied();
        Ok(())
    }

    fn emptied(&self) {
        self.hot.tally.emptied();
        self.flags.any_cold.set(false);
        self.flags.moves.garbage_noted();
    }
}

impl LogStore for DoSqliteEventLog {
    type Entry = StoredEvent;
    type Header = ();

    async fn load(&self) -> Result<Loaded<()>, StorageError> {
        let rows: Vec<MaxRow> = self.query(&sql::select_max_seq(&self.hot.table), &[])?;
        let hot = rows.into_iter().next().map_or(Ok(None), MaxRow::into_seq)?;
        let cold = if self.flags.any_cold.get() {
            self.index()?.tail()?
        } else {
            None
        };
        let tail = hot.max(cold).unwrap_or(SeqNum::ROOT);
        // The trigger keeps the checkpoint with the inserts; repair it for data written before
        // the trigger existed (or by a server without one).
        self.hot.checkpoint.repair(tail)?;
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
        if self.flags.any_cold.get() {
            let segments = self.index()?.segments(after, upto)?;
            if !segments.is_empty() {
                let (cold, _) = self.cold.as_ref().ok_or_else(|| {
                    StorageError(format!(
                        "this store has cold segments: it needs the {} bucket and cold_segments",
                        super::r2::SEGMENTS_BINDING
                    ))
                })?;
                let hot =
                    |after, upto, budget| std::future::ready(self.hot.read(after, upto, budget));
                return read_stitched(
                    cold.as_ref(),
                    &segments,
                    super::event_frame::decode,
                    hot,
                    after,
                    upto,
                    budget,
                )
                .await;
            }
        }
        self.hot.read(after, upto, budget)
    }

    async fn count(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
        self.ensure_ready()?;
        let cold = if self.flags.any_cold.get() {
            self.index()?.count(after, upto)?
        } else {
            0
        };
        Ok(self.hot.count(after, upto)? + cold)
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
        let statements = sql::insert_events(&self.hot.table, commit.entries)?;
        let exec = |sql: &SqlStorage, statement: &sql::Statement| {
            let params: Vec<SqlStorageValue> = statement.params.iter().map(to_sql).collect();
            sql.exec(&statement.sql, params)
                .map(|_| ())
                .map_err(sql_error("insert"))
        };
        // One statement (almost every push) is atomic by itself, head trigger included.
        if let [statement] = statements.as_slice() {
            exec(&self.hot.sql, statement)?;
        } else {
            let sql = self.hot.sql.clone();
            super::transaction::transaction(&self.hot.storage, move || {
                statements.iter().try_for_each(|s| exec(&sql, s))
            })?;
        }
        // Only moves read the tally: without a cold tier it is never counted.
        if self.cold.is_some() {
            let added: u64 = commit.entries.iter().map(|e| e.size() as u64).sum();
            self.hot.tally.added(commit.entries.len() as u64, added);
        }
        crate::faults::crash_point(CrashPoint::SqliteAfterInsert).await;
        Ok(())
    }
}
