//! The admin API's JSON shapes and its errors (`{"code", "error"}`, as the other JSON errors
//! of the Worker).

use serde::{Deserialize, Serialize};

/// A refusal or failure of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl AdminError {
    /// No admin secret is configured.
    pub fn disabled() -> Self {
        Self {
            status: 404,
            code: "ADMIN_DISABLED",
            message: "the admin API is off: set the ADMIN_SECRET secret to turn it on".into(),
        }
    }

    /// No or the wrong secret.
    pub fn unauthorized(message: &str) -> Self {
        Self {
            status: 401,
            code: "UNAUTHORIZED",
            message: message.into(),
        }
    }

    /// A malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "BAD_REQUEST",
            message: message.into(),
        }
    }

    /// Nothing there.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            code: "NOT_FOUND",
            message: message.into(),
        }
    }

    /// A method the path does not take.
    pub fn method_not_allowed(allow: &str) -> Self {
        Self {
            status: 405,
            code: "METHOD_NOT_ALLOWED",
            message: format!("this admin path takes {allow}"),
        }
    }

    /// Storage or a Durable Object failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            code: "INTERNAL_ERROR",
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({ "code": self.code, "error": self.message }).to_string()
    }
}

/// A page of a list, and where the next one starts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    /// The `after` of the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl<T> ListPage<T> {
    /// A page of at most `limit` items out of `fetched` (fetched with `limit + 1`, to know
    /// whether more follow), the next page starting after the last item's `key`.
    pub fn of(mut fetched: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Self {
        let more = fetched.len() > limit;
        fetched.truncate(limit);
        let next = if more { fetched.last().map(key) } else { None };
        ListPage {
            items: fetched,
            next,
        }
    }
}

/// A store in a list: its id, and the event-log table that holds it with D1 (an old table
/// whose owner was never recorded, e.g. one the TypeScript server made, has no id).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoreEntry {
    pub store_id: Option<String>,
    pub table: String,
}

/// A store's info.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoreInfo {
    pub store_id: String,
    /// `d1` or `do-sqlite`.
    pub storage: String,
    pub table: String,
    pub backend_id: String,
    pub head: u64,
    pub events: u64,
    /// Bytes of the stored events' text (names, args, ids, times).
    pub bytes: u64,
    /// `createdAt` of the last event.
    pub last_event_at: Option<String>,
    /// Open WebSockets.
    pub sockets: u64,
    /// Live pulls over those sockets.
    pub live_pulls: u64,
    /// Durable Objects subscribed over DO-RPC.
    pub do_rpc_subscribers: u64,
    /// Bytes of the store's Durable Object SQLite database.
    pub object_bytes: u64,
    /// Live readers of the store's stream view (SSE through the bridge).
    pub live_readers: u64,
    /// Events moved to the cold tier (DO SQLite with cold segments), in how many segments,
    /// their bytes (all counted in `events` and `bytes` too), and the objects the bucket holds
    /// for the store (segments, and garbage not yet collected).
    pub cold_segments: u64,
    pub cold_events: u64,
    pub cold_bytes: u64,
    pub cold_objects: u64,
    /// When the store's object last started (after an eviction or a hibernation, milliseconds).
    pub awake_since_ms: u64,
}

/// What a store reset did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResetOutcome {
    pub store_id: String,
    pub backend_id: String,
    pub previous_backend_id: String,
    /// Events kept (0 when they were cleared).
    pub events: u64,
    /// Sockets closed, so that their clients reconnect and meet the new backendId.
    pub sockets_closed: u64,
}

/// A stream in a list.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StreamEntry {
    pub path: String,
}

/// A producer of a stream.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProducerInfo {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
    pub last_seen_ms: u64,
}

/// A stream's info.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StreamInfo {
    pub path: String,
    pub content_type: String,
    /// The offset after the last message.
    pub next_offset: String,
    /// Messages stored here (a fork's inherited ones are read through its source).
    pub messages: u64,
    pub bytes: u64,
    pub created_ms: u64,
    pub last_access_ms: u64,
    pub closed: bool,
    pub ttl_seconds: Option<u64>,
    pub expires_at_ms: Option<i64>,
    /// The source of a fork, and the last position it inherits.
    pub forked_from: Option<String>,
    pub inherited: u64,
    /// Forks of this stream still alive.
    pub forks: u64,
    pub producers: Vec<ProducerInfo>,
    /// Messages moved to the cold tier (R2), in how many segments, and their bytes (counted in
    /// `messages` and `bytes` too).
    pub cold_segments: u64,
    pub cold_messages: u64,
    pub cold_bytes: u64,
    /// Segment objects waiting to be deleted (a deleted stream's, or a move cut short).
    pub cold_garbage: u64,
    /// Objects under this stream's prefix in the bucket (up to 1,000 counted), if there is one.
    pub cold_objects: Option<u64>,
    /// Live SSE readers held through the Worker's bridge.
    pub live_readers: u64,
    /// When the stream's object last started: it sleeps while idle, even with live readers.
    pub awake_since_ms: u64,
    /// Objects told of each append: estuaries' session streams and subscriptions.
    pub watchers: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_says_where_the_next_one_starts() {
        let page = ListPage::of(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!((page.items, page.next), (vec![1, 2], Some("2".into())));
        let last = ListPage::of(vec![1, 2], 2, |n| n.to_string());
        assert_eq!((last.items, last.next), (vec![1, 2], None));
    }

    #[test]
    fn errors_are_code_and_message() {
        let body: serde_json::Value =
            serde_json::from_str(&AdminError::bad_request("no").body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"code": "BAD_REQUEST", "error": "no"})
        );
    }
}

/// What an isolate has served since it started, as Cloudflare bills it (see `cf::usage`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Requests the Worker answered.
    pub worker_requests: u64,
    /// Requests to Durable Objects: fetches (the Worker's forwards and bridge sockets opened)
    /// and DO-RPC calls.
    pub object_requests: u64,
    /// WebSocket messages objects received (billed as requests at 20:1).
    pub object_ws_messages: u64,
    /// Object instances started: first use, and every wake-up after hibernation or eviction.
    pub object_starts: u64,
    /// Reads the Worker answered from the edge cache, without an object.
    pub cache_hits: u64,
    /// Fan-out messages sent to the queue (each for up to 50 watchers).
    pub fanout_queued: u64,
    /// Fan-out messages that reached the dead-letter queue.
    pub fanout_dead_letters: u64,
}

impl Usage {
    /// Nothing served yet.
    pub const ZERO: Usage = Usage {
        worker_requests: 0,
        object_requests: 0,
        object_ws_messages: 0,
        object_starts: 0,
        cache_hits: 0,
        fanout_queued: 0,
        fanout_dead_letters: 0,
    };
}
