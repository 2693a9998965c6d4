//! The Durable Streams HTTP protocol (version 1.0) on top of the stream core: header rules,
//! JSON mode and live-read cursors, and the per-stream engine that serves the protocol
//! over a synchronous store. Platform-free.

pub mod cursor;
pub mod engine;
pub mod headers;
pub mod json;
pub mod sse;
pub mod store;
