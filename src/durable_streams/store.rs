//! What a stream keeps, and the synchronous storage it keeps it in.
//!
//! One stream per store (a Durable Object's own SQLite at the edge, [`MemoryStore`] in
//! tests). Messages are numbered from 1: the offset after message `n` is `n`, so a read
//! from offset `o` returns the messages numbered above `o`. Every engine operation runs
//! against the store synchronously, so the edge can wrap it in one transaction.

use crate::stream::producer::ProducerState;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A storage failure (500): the stream core's error type.
pub use crate::stream::StorageError;

/// The producer tuple that closed a stream: a retry of exactly this close is a duplicate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClosedBy {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// Where a fork came from, as it was asked for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ForkInfo {
    /// The source stream's path (`/v1/stream/...`).
    pub source: String,
    /// The anchor offset in the source.
    pub offset: u64,
    /// Messages (JSON) or bytes (otherwise) past the anchor; 0 when none.
    pub sub_offset: u64,
}

/// A stream's metadata.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The content type as it was given at creation.
    pub content_type: String,
    pub ttl_seconds: Option<u64>,
    pub expires_at_ms: Option<i64>,
    /// Creation time; also tells incarnations of a path apart (ETags).
    pub created_ms: u64,
    /// Last read or write, for the sliding TTL.
    pub last_access_ms: u64,
    /// The number of messages, which is also the tail offset.
    pub tail: u64,
    pub closed: bool,
    pub closed_by: Option<ClosedBy>,
    pub last_stream_seq: Option<String>,
    pub fork: Option<ForkInfo>,
    /// Forks created from this stream and not yet gone.
    pub ref_count: u64,
    /// Deleted while forks still referred to it: every operation answers 410.
    pub soft_deleted: bool,
}

/// The synchronous storage of one stream.
pub trait StreamStore {
    fn load_meta(&self) -> Result<Option<Meta>, StorageError>;
    fn save_meta(&self, meta: &Meta) -> Result<(), StorageError>;
    /// Removes the messages and the producer states, keeping the metadata.
    fn clear_data(&self) -> Result<(), StorageError>;
    /// Removes everything.
    fn clear_all(&self) -> Result<(), StorageError>;
    /// Stores `messages` numbered from `first_seq`.
    fn insert_messages(&self, first_seq: u64, messages: &[Vec<u8>]) -> Result<(), StorageError>;
    /// Messages numbered in `after+1..=upto`, in order, stopping once `max_bytes` is reached
    /// (but always at least one message when there is one).
    fn read_messages(
        &self,
        after: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError>;
    fn producer(&self, id: &str) -> Result<Option<ProducerState>, StorageError>;
    fn save_producer(
        &self,
        id: &str,
        state: ProducerState,
        now_ms: u64,
    ) -> Result<(), StorageError>;
}

/// An in-memory store, for tests and as a reference for the SQL one.
#[derive(Default)]
pub struct MemoryStore {
    meta: RefCell<Option<Meta>>,
    messages: RefCell<BTreeMap<u64, Vec<u8>>>,
    producers: RefCell<BTreeMap<String, ProducerState>>,
}

impl StreamStore for MemoryStore {
    fn load_meta(&self) -> Result<Option<Meta>, StorageError> {
        Ok(self.meta.borrow().clone())
    }

    fn save_meta(&self, meta: &Meta) -> Result<(), StorageError> {
        *self.meta.borrow_mut() = Some(meta.clone());
        Ok(())
    }

    fn clear_data(&self) -> Result<(), StorageError> {
        self.messages.borrow_mut().clear();
        self.producers.borrow_mut().clear();
        Ok(())
    }

    fn clear_all(&self) -> Result<(), StorageError> {
        self.clear_data()?;
        *self.meta.borrow_mut() = None;
        Ok(())
    }

    fn insert_messages(&self, first_seq: u64, messages: &[Vec<u8>]) -> Result<(), StorageError> {
        let mut stored = self.messages.borrow_mut();
        for (seq, message) in (first_seq..).zip(messages) {
            if stored.insert(seq, message.clone()).is_some() {
                return Err(StorageError(format!("message {seq} already stored")));
            }
        }
        Ok(())
    }

    fn read_messages(
        &self,
        after: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        if upto <= after {
            return Ok(out);
        }
        for (seq, message) in self.messages.borrow().range(after + 1..=upto) {
            if !out.is_empty() && bytes + message.len() > max_bytes {
                break;
            }
            bytes += message.len();
            out.push((*seq, message.clone()));
        }
        Ok(out)
    }

    fn producer(&self, id: &str) -> Result<Option<ProducerState>, StorageError> {
        Ok(self.producers.borrow().get(id).copied())
    }

    fn save_producer(
        &self,
        id: &str,
        state: ProducerState,
        _now_ms: u64,
    ) -> Result<(), StorageError> {
        self.producers.borrow_mut().insert(id.to_owned(), state);
        Ok(())
    }
}
