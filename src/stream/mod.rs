//! The durable stream core: the one log engine under both protocols. A log is a gap-free
//! sequence of entries with a header, in a [`store::LogStore`]; [`log::Log`] caches its state,
//! serializes writers, checks [`condition::Precondition`]s, reads within a [`store::Budget`] and
//! wakes live readers on every commit. LiveStore sync and the Durable Streams protocol are layers
//! over it.

pub mod condition;
pub mod lock;
pub mod log;
pub mod memory;
pub mod message;
pub mod offset;
pub mod producer;
pub mod readers;
pub mod seq;
pub mod store;

pub use log::{Log, Writer};
pub use message::Message;
pub use seq::SeqNum;
pub use store::{Budget, Commit, Entry, Header, HeaderWrite, Loaded, LogStore, StorageError};
