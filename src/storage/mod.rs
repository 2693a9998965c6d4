//! Storage: the [`crate::stream::LogStore`]s that keep logs, and the SQL they share.
//!
//! `sql` is plain Rust, tested natively. The engines need the wasm runtime: `d1` (LiveStore
//! event logs in D1, the head checkpoint in the object's SQLite), `do_sqlite` (event logs in
//! the object's SQLite), `engine` (the choice of the two), `stream_sqlite` (a Durable
//! Streams stream in its object's SQLite), and the cold tier both can move their oldest entries
//! to (`cold_index`, `r2`).

pub mod event_frame;
pub mod segments;
pub mod sql;

#[cfg(target_arch = "wasm32")]
pub mod cold_index;
#[cfg(target_arch = "wasm32")]
pub mod context;
#[cfg(target_arch = "wasm32")]
pub mod d1;
#[cfg(target_arch = "wasm32")]
pub mod do_sqlite;
#[cfg(target_arch = "wasm32")]
pub mod engine;
#[cfg(target_arch = "wasm32")]
pub mod r2;
#[cfg(target_arch = "wasm32")]
pub mod stream_sqlite;
#[cfg(target_arch = "wasm32")]
pub mod transaction;
#[cfg(target_arch = "wasm32")]
pub mod watchers;
