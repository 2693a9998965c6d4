//! What the Worker does with an incoming request. A sync request is recognized by its query
//! alone, whatever the path (as in `@livestore/sync-cf`); only `GET /` without sync
//! parameters gets the info text.

use super::query::{parse_sync_query, SyncParams, Transport};

/// Text answered on `GET /` without sync parameters.
pub const INFO_TEXT: &str = "Info: Sync backend endpoint for @livestore/sync-cf (Rust).";

/// The Worker's decision for a request.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// Forward to the store's Durable Object.
    Sync(SyncParams),
    /// Answer with [`INFO_TEXT`].
    Info,
    /// Refuse with this status and message.
    Reject { status: u16, message: String },
}

/// Routes a request.
pub fn route(method: &str, path: &str, query: &str, upgrade: Option<&str>) -> Route {
    match parse_sync_query(query) {
        Ok(Some(params)) => {
            // Case-sensitive, like the TypeScript server.
            if params.transport == Transport::Ws && upgrade != Some("websocket") {
                Route::Reject {
                    status: 426,
                    message: "Durable Object expected Upgrade: websocket".into(),
                }
            } else {
                Route::Sync(params)
            }
        }
        Ok(None) if method == "GET" && path == "/" => Route::Info,
        Ok(None) => Route::Reject {
            status: 400,
            message: "Invalid path: expected a sync request with query parameters storeId and transport=ws|http".into(),
        },
        Err(e) => Route::Reject {
            status: 400,
            message: format!("Invalid sync request: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_query_only() {
        assert!(matches!(
            route("GET", "/sync", "storeId=s&transport=ws", Some("websocket")),
            Route::Sync(_)
        ));
        assert!(matches!(
            route("POST", "/any/path", "storeId=s&transport=http", None),
            Route::Sync(_)
        ));
        assert_eq!(route("GET", "/", "", None), Route::Info);
        assert_eq!(route("GET", "/", "x=1", None), Route::Info);
        assert!(matches!(
            route("GET", "/whatever", "", None),
            Route::Reject { status: 400, .. }
        ));
        assert!(matches!(
            route("HEAD", "/", "", None),
            Route::Reject { status: 400, .. }
        ));
    }

    #[test]
    fn websocket_transport_needs_an_upgrade() {
        for upgrade in [None, Some("WebSocket"), Some("h2c")] {
            assert!(matches!(
                route("GET", "/sync", "storeId=s&transport=ws", upgrade),
                Route::Reject { status: 426, .. }
            ));
        }
    }

    #[test]
    fn everything_else_is_a_clear_400() {
        let Route::Reject { status, message } = route("POST", "/", "", None) else {
            panic!("expected a rejection")
        };
        assert_eq!(status, 400);
        assert!(message.contains("storeId"));
        let Route::Reject { status, message } = route("GET", "/", "storeId=s&transport=sse", None)
        else {
            panic!("expected a rejection")
        };
        assert_eq!(status, 400);
        assert!(message.contains("sse"));
    }
}
