//! The `@livestore/sync-cf` 0.4.0 protocol: routing by query parameters, the Effect RPC wire
//! format, and the push/pull rules on top of the stream core.

pub mod chunk;
pub mod cors;
pub mod event;
pub mod options;
pub mod outbox;
pub mod query;
pub mod route;
pub mod service;
pub mod store_id;
pub mod stream_view;
pub mod sync;
pub mod wire;

/// Version of LiveStore's persistence format: part of every event-log table name.
pub const PERSISTENCE_FORMAT_VERSION: u32 = 7;
