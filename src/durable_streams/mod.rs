//! The Durable Streams HTTP protocol (version 1.0) as a layer over the stream core: a
//! [`stream::Stream`] is the protocol over one log of messages, with its operations in their own
//! modules (create, fork, append, read) and the header rules, JSON mode, cursors and SSE framing
//! beside them. Platform-free: what it needs of the platform is a [`platform::Platform`].

pub mod append;
pub mod bridge;
pub mod create;
pub mod cursor;
pub mod edge_cache;
pub mod estuary;
pub mod fanout;
pub mod fork;
pub mod headers;
pub mod http;
pub mod json;
pub mod meta;
pub mod platform;
pub mod read;
pub mod recent;
pub mod sse;
pub mod stream;
pub mod subscription;
pub mod subscription_match;
pub mod subscription_spec;
pub mod webhook;

#[cfg(test)]
mod estuary_tests;
#[cfg(test)]
mod subscription_tests;
#[cfg(test)]
mod tests;
