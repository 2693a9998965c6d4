//! A LiveStore-compatible sync backend for Cloudflare Workers.
//!
//! Layers, top to bottom:
//! - [`livestore`]: the `@livestore/sync-cf` wire protocol (Effect RPC frames, push/pull rules,
//!   routing by query parameters).
//! - [`stream`]: the durable stream core, an append-only log with an expected-head append,
//!   ranged reads and recovery of its head from storage.
//! - [`storage`]: SQL shared by the storage engines; the engines themselves (D1, DO SQLite)
//!   live in the wasm-only edge.
//!
//! Everything outside the `edge` module is plain Rust and tested natively with `cargo test`.

pub mod livestore;
pub mod storage;
pub mod stream;

#[cfg(target_arch = "wasm32")]
mod edge;
