//! The durable stream core: an append-only, gap-free log of entries addressed by sequence
//! numbers. Protocols (LiveStore sync today) are layers on top of it.

pub mod lock;
pub mod log;
pub mod offset;
pub mod producer;
pub mod seq;

pub use log::{AppendError, EventLog, HeadCheckpoint, LogEntry, LogStorage, StorageError};
pub use seq::SeqNum;
