//! A LiveStore-compatible sync backend for Cloudflare Workers.
//!
//! Layers, top to bottom:
//! - [`livestore`]: the `@livestore/sync-cf` 0.4.0 protocol (routing by query parameters,
//!   Effect RPC frames), its push/pull rules over the stream core ([`livestore::sync`]), the
//!   hook orchestration of the sync object ([`livestore::service`]), WebSocket flow control
//!   ([`livestore::outbox`]) and every store's log read as a Durable Stream
//!   ([`livestore::stream_view`]).
//! - [`durable_streams`]: the Durable Streams HTTP protocol over the same core, one module per
//!   operation (create, fork, append, read).
//! - [`stream`]: the durable stream core, the one log engine under both: a log in an async
//!   [`stream::LogStore`], preconditions per append, reads within a byte budget, the writer
//!   lock and one live-reader notification.
//! - [`storage`]: the stores of logs: SQL shared by the engines; the engines themselves (D1,
//!   DO SQLite, a stream object's SQLite) need the wasm runtime.
//!
//! - [`admin`]: the admin API's routes, bearer check and JSON shapes, and its dashboard page.
//! - [`auth`]: projects and tokens: a project's configuration, HS256 tokens, who may do what.
//!
//! - `cf` (wasm only): the Cloudflare edge and the Rust API for writing a sync Worker
//!   ([`cf::SyncWorker`], [`cf::SyncBackendObject`], configured with
//!   [`livestore::options`]); thin adapters that hand requests to the layers above.
//!
//! Everything outside `cf` and the D1/DO-SQLite engines is plain Rust, tested natively with
//! `cargo test`. The feature `default-worker` (on by default) builds the Worker this
//! repository ships; turn it off to use the crate as a library in your own Worker.

pub mod admin;
pub mod auth;
pub mod durable_streams;
pub mod faults;
pub mod json_limits;
pub mod livestore;
pub mod storage;
pub mod stream;

#[cfg(target_arch = "wasm32")]
pub mod cf;

#[cfg(all(target_arch = "wasm32", feature = "default-worker"))]
mod default_worker;
