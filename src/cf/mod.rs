//! The Cloudflare edge (wasm only): the Rust API for writing a sync Worker, the
//! counterpart of `makeWorker`, `makeDurableObject` and `handleSyncRequest`, and the thin
//! adapters between the runtime and the platform-free layers: the sync object
//! (`sync_object`) and its transports (`ws`, `http`, `do_rpc`) and store stream view
//! (`store_stream`), the Durable Streams object (`stream_object`).
//!
//! ```ignore
//! use livestore_sync_rs::cf::{SyncBackendObject, SyncWorker};
//! use livestore_sync_rs::livestore::options::{SyncObjectOptions, WorkerOptions};
//! use worker::*;
//!
//! #[event(fetch)]
//! async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
//!     SyncWorker::new(WorkerOptions::new().enable_cors(true)).fetch(req, &env).await
//! }
//!
//! #[durable_object]
//! pub struct SyncBackendDO(SyncBackendObject);
//!
//! impl DurableObject for SyncBackendDO {
//!     fn new(state: State, env: Env) -> Self {
//!         Self(SyncBackendObject::new(state, env, SyncObjectOptions::new()))
//!     }
//!     async fn fetch(&self, req: Request) -> Result<Response> {
//!         self.0.fetch(req).await
//!     }
//!     async fn websocket_message(&self, ws: WebSocket, msg: WebSocketIncomingMessage) -> Result<()> {
//!         self.0.websocket_message(ws, msg).await
//!     }
//!     async fn websocket_close(&self, ws: WebSocket, code: usize, reason: String, clean: bool) -> Result<()> {
//!         self.0.websocket_close(ws, code, reason, clean).await
//!     }
//!     async fn websocket_error(&self, ws: WebSocket, error: Error) -> Result<()> {
//!         self.0.websocket_error(ws, error).await
//!     }
//! }
//! ```

pub mod admin;
mod coalesce;
mod do_rpc;
mod edge_cache;
pub mod estuary;
pub mod fanout;
mod http;
mod object_call;
pub mod projects;
mod registry;
mod reply;
mod socket_state;
mod sse_bridge;
mod sse_fanout;
mod store_admin;
mod store_stream;
pub mod stream_object;
mod stream_platform;
pub mod stream_route;
mod subscription_delivery;
mod subscription_links;
mod subscription_object;
mod subscriptions;
mod sync_object;
pub(crate) mod usage;
mod webhook_key;
mod worker;
mod ws;

pub use admin::AdminApi;
pub use sync_object::SyncBackendObject;
pub use worker::{match_sync_request, SyncWorker, SCHEMA_PATH};

/// The current time as an ISO 8601 string, the `createdAt` of stored events.
fn now_iso() -> String {
    js_sys::Date::new_0()
        .to_iso_string()
        .as_string()
        .unwrap_or_default()
}

/// A failure of the runtime's kind.
fn js_error(e: impl std::fmt::Display) -> ::worker::Error {
    ::worker::Error::RustError(e.to_string())
}

/// The current time in whole seconds since the epoch (token expiries are in seconds).
fn now_s() -> u64 {
    // Milliseconds since the epoch as a JS number: non-negative and far below 2^53.
    (js_sys::Date::now() / 1_000.0) as u64
}

/// Reads a request body of at most `limit` bytes; `None` when it is larger. The body is
/// always consumed to its end (past the limit it is discarded as it streams in): a Durable
/// Object that answers before the body forwarded to it is read makes the runtime fail the
/// request and can reset the connection.
async fn read_body(req: &mut ::worker::Request, limit: usize) -> ::worker::Result<Option<Vec<u8>>> {
    use futures_util::StreamExt;
    // A declared length within the limit (the runtime holds the body to it) is read in one
    // piece: one promise instead of a reader and a promise per chunk.
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|length| length.parse::<usize>().ok());
    if declared.is_some_and(|length| length <= limit) {
        let body = req.bytes().await?;
        return Ok((body.len() <= limit).then_some(body));
    }
    let Ok(mut stream) = req.stream() else {
        return Ok(Some(Vec::new())); // no body
    };
    let mut body = Vec::new();
    let mut too_large = false;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if !too_large && body.len() + chunk.len() <= limit {
            body.extend_from_slice(&chunk);
        } else if !too_large {
            too_large = true;
            body = Vec::new();
        }
    }
    Ok((!too_large).then_some(body))
}

/// A mutable copy of `headers` (those of a response from an object or the cache are immutable),
/// made by the runtime in one call rather than one crossing per header.
fn copy_headers(headers: &::worker::Headers) -> ::worker::Result<::worker::Headers> {
    Ok(::worker::Headers(
        ::worker::web_sys::Headers::new_with_headers(&headers.0)?,
    ))
}

/// All request headers with lowercased names.
fn header_map(headers: &::worker::Headers) -> std::collections::BTreeMap<String, String> {
    headers
        .entries()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}
