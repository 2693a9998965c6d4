//! Storage: the SQL shared by the engines that keep LiveStore event logs.
//!
//! The engines themselves (D1, and the Durable Object's own SQLite for the head checkpoint)
//! are in the wasm-only edge; everything here is plain Rust, tested natively.

pub mod sql;

#[cfg(target_arch = "wasm32")]
pub mod d1;
#[cfg(target_arch = "wasm32")]
pub mod do_sqlite;
#[cfg(target_arch = "wasm32")]
pub mod engine;
#[cfg(target_arch = "wasm32")]
pub mod stream_sqlite;
#[cfg(target_arch = "wasm32")]
pub mod transaction;
