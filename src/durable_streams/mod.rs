//! The Durable Streams HTTP protocol (version 1.0) on top of the stream core: header rules,
//! JSON mode and live-read cursors. Platform-free.

pub mod cursor;
pub mod headers;
pub mod json;
