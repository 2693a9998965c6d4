//! The index of a log's cold segments in its Durable Object's SQLite, and the move of its oldest
//! entries there (see [`super::segments`] for the rules): a stream's messages
//! ([`super::stream_sqlite`]) and a LiveStore store's events kept in DO SQLite
//! ([`super::do_sqlite`]) move the same way, each with its own tables.
//!
//! A move notes the segment's key as garbage, writes the object, then in one transaction checks
//! the log is still the one it read (same incarnation, the rows still there), enters the segment
//! in the index, deletes its hot rows and takes the key out of the garbage. Garbage is deleted
//! from the cold tier before each move: nothing is left behind by a move cut short anywhere, or
//! by a log reset or deleted.

use super::do_sqlite::{exec, sql_error};
use super::segments::{segment_key, ColdTier, Segment, SegmentPolicy};
use crate::faults::CrashPoint;
use crate::stream::{SeqNum, StorageError};
use std::cell::Cell;
use std::rc::Rc;
use worker::{SqlStorage, SqlStorageValue, Storage};

/// Safe integers (positions, sizes) as SQLite integers: exact.
pub(crate) fn int(value: u64) -> SqlStorageValue {
    SqlStorageValue::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

/// A SQLite integer (read back through JS numbers) as a `u64`.
pub(crate) fn as_u64(value: &SqlStorageValue) -> Option<u64> {
    match value {
        SqlStorageValue::Integer(i) => u64::try_from(*i).ok(),
        SqlStorageValue::Float(f) if f.is_finite() && *f >= 0.0 && f.fract() == 0.0 => {
            // Integral and non-negative.
            Some(*f as u64)
        }
        _ => None,
    }
}

/// Rows of `(position, size)`, as [`HotLog::oldest`] gives them.
pub(crate) fn positions_and_sizes(cursor: worker::SqlCursor) -> Vec<(SeqNum, u64)> {
    cursor
        .raw()
        .filter_map(|row| {
            let row = row.ok()?;
            Some((
                row.first().and_then(as_u64).and_then(SeqNum::new)?,
                row.get(1).and_then(as_u64)?,
            ))
        })
        .collect()
}

/// The position before `first` (where a read of `first..` starts).
pub(crate) fn before(first: SeqNum) -> SeqNum {
    SeqNum::new(first.get().saturating_sub(1)).unwrap_or(SeqNum::ROOT)
}

/// The first column of the first row of `query`, as an integer.
pub(crate) fn first_u64(
    sql: &SqlStorage,
    query: &str,
    params: Vec<SqlStorageValue>,
    context: &'static str,
) -> Result<Option<u64>, StorageError> {
    match exec(sql, query, params, context)?.raw().next() {
        Some(row) => Ok(row.map_err(sql_error(context))?.first().and_then(as_u64)),
        None => Ok(None),
    }
}

/// Entries and bytes in a log's hot rows, once counted; commits and moves keep it (shared by the
/// clones a move or a transaction holds).
#[derive(Clone, Default)]
pub struct HotTally(Rc<Cell<Option<(u64, u64)>>>);

impl HotTally {
    /// The tally, counted by `count` the first time.
    pub fn get_or(
        &self,
        count: impl FnOnce() -> Result<(u64, u64), StorageError>,
    ) -> Result<(u64, u64), StorageError> {
        if let Some(tally) = self.0.get() {
            return Ok(tally);
        }
        let tally = count()?;
        self.0.set(Some(tally));
        Ok(tally)
    }

    /// A commit added `entries` of `bytes` (nothing to keep before the first count).
    pub fn added(&self, entries: u64, bytes: u64) {
        if let Some((n, b)) = self.0.get() {
            self.0
                .set(Some((n.saturating_add(entries), b.saturating_add(bytes))));
        }
    }

    /// A move took `entries` of `bytes` away.
    pub fn removed(&self, entries: u64, bytes: u64) {
        if let Some((n, b)) = self.0.get() {
            self.0
                .set(Some((n.saturating_sub(entries), b.saturating_sub(bytes))));
        }
    }

    /// The hot rows are all gone.
    pub fn emptied(&self) {
        self.0.set(Some((0, 0)));
    }
}

/// Whether a log's move is under way and whether objects may wait for deletion; shared by
/// everything that moves one object's log (clones, and the instances a reset opens).
#[derive(Debug)]
pub struct MoveState {
    moving: Cell<bool>,
    /// At first (after a wake-up), after a reset or delete, after a move cut short.
    garbage: Cell<bool>,
}

impl Default for MoveState {
    fn default() -> Self {
        MoveState {
            moving: Cell::new(false),
            garbage: Cell::new(true),
        }
    }
}

impl MoveState {
    /// Objects may wait for deletion now (the log was reset or deleted).
    pub fn garbage_noted(&self) {
        self.garbage.set(true);
    }
}

/// A compaction run: deletes what no segment names any more (if anything may wait), then moves
/// the full segments there are. Returns the segments moved; does nothing while another run is
/// under way, and costs no query while nothing waits and the hot rows are below the policy.
pub async fn run_compaction<H: HotLog>(
    state: &MoveState,
    index: &ColdIndex,
    hot: &H,
    cold: &impl ColdTier,
    policy: SegmentPolicy,
    storage: &Storage,
    crash: CrashPoint,
) -> Result<usize, StorageError> {
    let (entries, bytes) = hot.hot_tally()?;
    if !state.garbage.get() && !policy.due(entries, bytes) {
        return Ok(0);
    }
    if state.moving.replace(true) {
        return Ok(0);
    }
    let moved = async {
        if state.garbage.get() {
            index.collect(cold).await?;
            state.garbage.set(false);
        }
        compact(index, hot, cold, policy, storage, crash).await
    }
    .await;
    state.moving.set(false);
    if moved.is_err() {
        // A move cut short left its key in the garbage.
        state.garbage.set(true);
    }
    moved
}

/// Cold-tier figures of a log (admin).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ColdStats {
    pub segments: u64,
    /// Entries in segments.
    pub messages: u64,
    pub bytes: u64,
    /// Objects written and not yet deleted that no segment names (cut-short moves, deleted or
    /// reset logs).
    pub garbage: u64,
}

/// The queries of one index, its table names written in.
struct Queries {
    schema: String,
    segments: String,
    tail: String,
    count: String,
    stats: String,
    garbage: String,
    collected: String,
    note: String,
    record: String,
    discard: String,
    clear: String,
}

impl Queries {
    fn new(segments: &str, garbage: &str) -> Queries {
        Queries {
            schema: format!(
                "CREATE TABLE IF NOT EXISTS {segments} (first INTEGER PRIMARY KEY, last INTEGER NOT NULL, key TEXT NOT NULL, messages INTEGER NOT NULL, bytes INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS {segments}_last ON {segments} (last);
CREATE TABLE IF NOT EXISTS {garbage} (key TEXT PRIMARY KEY);"
            ),
            // A read takes at most a budget: the first few segments are enough.
            segments: format!("SELECT first, last, key, bytes FROM {segments} WHERE last > ?1 AND first <= ?2 ORDER BY first LIMIT 16"),
            tail: format!("SELECT MAX(last) FROM {segments}"),
            // Segments hold contiguous positions: their overlap is arithmetic.
            count: format!("SELECT COALESCE(SUM(MIN(last, ?2) - MAX(first - 1, ?1)), 0) FROM {segments} WHERE last > ?1 AND first <= ?2"),
            stats: format!("SELECT COUNT(*), COALESCE(SUM(messages), 0), COALESCE(SUM(bytes), 0), (SELECT COUNT(*) FROM {garbage}) FROM {segments}"),
            garbage: format!("SELECT key FROM {garbage} LIMIT 100"),
            collected: format!("DELETE FROM {garbage} WHERE key = ?"),
            note: format!("INSERT OR IGNORE INTO {garbage} (key) VALUES (?)"),
            record: format!("INSERT INTO {segments} (first, last, key, messages, bytes) VALUES (?, ?, ?, ?, ?)"),
            discard: format!("INSERT OR IGNORE INTO {garbage} (key) SELECT key FROM {segments}"),
            clear: format!("DELETE FROM {segments}"),
        }
    }
}

/// One log's index of cold segments, and its garbage.
#[derive(Clone)]
pub struct ColdIndex {
    sql: SqlStorage,
    queries: Rc<Queries>,
}

impl ColdIndex {
    /// The index kept in tables `segments` and `garbage` of `sql`, created if needed.
    pub fn open(sql: SqlStorage, segments: &str, garbage: &str) -> Result<ColdIndex, StorageError> {
        let queries = Queries::new(segments, garbage);
        sql.exec(&queries.schema, None)
            .map_err(sql_error("create cold index"))?;
        Ok(ColdIndex {
            sql,
            queries: Rc::new(queries),
        })
    }

    /// The segments that hold entries of `(after, upto]`, in order.
    pub fn segments(&self, after: SeqNum, upto: SeqNum) -> Result<Vec<Segment>, StorageError> {
        let cursor = exec(
            &self.sql,
            &self.queries.segments,
            vec![int(after.get()), int(upto.get())],
            "read segments",
        )?;
        let mut segments = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(sql_error("segment row"))?;
            let position = |i: usize| row.get(i).and_then(as_u64).and_then(SeqNum::new);
            let (Some(first), Some(last), Some(SqlStorageValue::String(key))) =
                (position(0), position(1), row.get(2))
            else {
                return Err(StorageError("a malformed segment row".into()));
            };
            segments.push(Segment {
                first,
                last,
                key: key.clone(),
                bytes: row.get(3).and_then(as_u64).unwrap_or(0),
            });
        }
        Ok(segments)
    }

    /// The last position in a segment.
    pub fn tail(&self) -> Result<Option<SeqNum>, StorageError> {
        Ok(
            first_u64(&self.sql, &self.queries.tail, vec![], "read cold tail")?
                .and_then(SeqNum::new),
        )
    }

    /// How many entries of `(after, upto]` segments hold.
    pub fn count(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
        Ok(first_u64(
            &self.sql,
            &self.queries.count,
            vec![int(after.get()), int(upto.get())],
            "count cold entries",
        )?
        .unwrap_or(0))
    }

    /// The index's figures (admin).
    pub fn stats(&self) -> Result<ColdStats, StorageError> {
        let cursor = exec(&self.sql, &self.queries.stats, vec![], "cold stats")?;
        let row = match cursor.raw().next() {
            Some(row) => row.map_err(sql_error("cold stats row"))?,
            None => return Ok(ColdStats::default()),
        };
        let mut values = row.iter().map(|v| as_u64(v).unwrap_or(0));
        let mut next = || values.next().unwrap_or(0);
        Ok(ColdStats {
            segments: next(),
            messages: next(),
            bytes: next(),
            garbage: next(),
        })
    }

    /// Every segment becomes garbage (the log was reset or deleted): run inside the
    /// transaction that empties the log; the objects go at the next collection.
    pub fn discard_all(&self) -> Result<(), StorageError> {
        exec(&self.sql, &self.queries.discard, vec![], "discard segments")?;
        exec(&self.sql, &self.queries.clear, vec![], "clear segments")?;
        Ok(())
    }

    /// Deletes the objects no segment names from `cold`, until there are none.
    pub async fn collect(&self, cold: &impl ColdTier) -> Result<(), StorageError> {
        loop {
            let garbage: Vec<String> =
                exec(&self.sql, &self.queries.garbage, vec![], "read garbage")?
                    .raw()
                    .filter_map(|row| match row.ok()?.into_iter().next() {
                        Some(SqlStorageValue::String(key)) => Some(key),
                        _ => None,
                    })
                    .collect();
            if garbage.is_empty() {
                return Ok(());
            }
            for key in garbage {
                cold.delete(&key).await?;
                exec(
                    &self.sql,
                    &self.queries.collected,
                    vec![SqlStorageValue::String(key)],
                    "collect garbage",
                )?;
            }
        }
    }

    fn note_pending(&self, key: &str) -> Result<(), StorageError> {
        exec(
            &self.sql,
            &self.queries.note,
            vec![SqlStorageValue::String(key.to_owned())],
            "note pending segment",
        )?;
        Ok(())
    }

    fn record(&self, segment: &Segment, count: u64) -> Result<(), StorageError> {
        exec(
            &self.sql,
            &self.queries.record,
            vec![
                int(segment.first.get()),
                int(segment.last.get()),
                SqlStorageValue::String(segment.key.clone()),
                int(count),
                int(segment.bytes),
            ],
            "record segment",
        )?;
        exec(
            &self.sql,
            &self.queries.collected,
            vec![SqlStorageValue::String(segment.key.clone())],
            "segment recorded",
        )?;
        Ok(())
    }
}

/// A log's hot rows, as a move sees them.
pub trait HotLog: Clone + 'static {
    /// Names the log's current incarnation (a log reset or created again is another, and a
    /// move that read the one before is dropped); `None` when there is no log.
    fn incarnation(&self) -> Result<Option<String>, StorageError>;
    /// Entries and bytes in the hot rows.
    fn hot_tally(&self) -> Result<(u64, u64), StorageError>;
    /// Positions and sizes of the oldest `limit` hot entries, in order.
    fn oldest(&self, limit: u64) -> Result<Vec<(SeqNum, u64)>, StorageError>;
    /// The hot entries `first..=last` as segment frames, and how many there are.
    fn frames(&self, first: SeqNum, last: SeqNum) -> Result<(Vec<u8>, u64), StorageError>;
    /// How many hot entries `first..=last` has now.
    fn present(&self, first: SeqNum, last: SeqNum) -> Result<u64, StorageError>;
    /// Deletes the hot entries `first..=last` (inside the move's transaction).
    fn delete_hot(&self, first: SeqNum, last: SeqNum) -> Result<(), StorageError>;
    /// A move took `count` entries and `bytes` out of the hot rows.
    fn moved(&self, count: u64, bytes: u64);
}

/// Moves `hot`'s oldest full segments to `cold` while `policy` says there are any (collect the
/// garbage first: see [`ColdIndex::collect`]). Returns the segments moved. `crash` is the fault
/// point between the object's write and the index's commit.
async fn compact<H: HotLog>(
    index: &ColdIndex,
    hot: &H,
    cold: &impl ColdTier,
    policy: SegmentPolicy,
    storage: &Storage,
    crash: CrashPoint,
) -> Result<usize, StorageError> {
    let mut moved = 0;
    loop {
        // The kept tally first: most calls end there without a query.
        let (messages, bytes) = hot.hot_tally()?;
        if !policy.due(messages, bytes) {
            return Ok(moved);
        }
        let Some(incarnation) = hot.incarnation()? else {
            return Ok(moved);
        };
        let oldest = hot.oldest(policy.messages.max(1))?;
        let (Some(&(first, _)), Some(last)) = (oldest.first(), policy.full_segment(&oldest)) else {
            return Ok(moved);
        };
        let size: u64 = oldest
            .iter()
            .take_while(|(seq, _)| *seq <= last)
            .map(|(_, size)| size)
            .sum();
        let (frames, count) = hot.frames(first, last)?;
        let segment = Segment {
            first,
            last,
            key: segment_key(&incarnation, first, last),
            bytes: size,
        };
        // Named as garbage before it exists: a move cut short anywhere leaves nothing behind
        // that the next collection does not delete.
        index.note_pending(&segment.key)?;
        cold.put(&segment.key, frames).await?;
        crate::faults::crash_point(crash).await;
        let (index_now, hot_now) = (index.clone(), hot.clone());
        super::transaction::transaction(storage, move || {
            let changed = hot_now.incarnation()?.as_deref() != Some(incarnation.as_str())
                || hot_now.present(segment.first, segment.last)? != count;
            if changed {
                return Err(StorageError(
                    "the log changed while its segment moved: the move is dropped".into(),
                ));
            }
            index_now.record(&segment, count)?;
            hot_now.delete_hot(segment.first, segment.last)
        })?;
        hot.moved(count, size);
        moved += 1;
    }
}
