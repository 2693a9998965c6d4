//! A LiveStore-compatible sync backend for Cloudflare Workers.
//!
//! Layers, top to bottom:
//! - [`livestore`]: the `@livestore/sync-cf` wire protocol (Effect RPC frames, push/pull rules,
//!   routing by query parameters).
//! - [`stream`]: the durable stream core, an append-only log with an expected-head append,
//!   ranged reads and recovery of its head from storage.
//! - [`durable_streams`]: the Durable Streams HTTP protocol's rules (headers, JSON mode,
//!   cursors) over the same core.
//! - [`storage`]: SQL shared by the storage engines; the engines themselves (D1, DO SQLite)
//!   live in the wasm-only edge.
//!
//! - `cf` (wasm only): the Cloudflare edge and the Rust API for writing a sync Worker
//!   ([`cf::SyncWorker`], [`cf::SyncBackendObject`], configured with
//!   [`livestore::options`]).
//!
//! Everything outside `cf` and the D1/DO-SQLite engines is plain Rust, tested natively with
//! `cargo test`. The feature `default-worker` (on by default) builds the Worker this
//! repository ships; turn it off to use the crate as a library in your own Worker.

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
