//! The wasm edge: the Worker entry and the sync Durable Object. Thin: it decodes requests,
//! hands them to the protocol layer, and moves bytes between sockets and storage.

mod sync_do;
mod worker_entry;

/// The current time as an ISO 8601 string, the `createdAt` of stored events.
fn now_iso() -> String {
    js_sys::Date::new_0()
        .to_iso_string()
        .as_string()
        .unwrap_or_default()
}
