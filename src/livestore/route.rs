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

/// Routes a request by method, path and query.
pub fn route(method: &str, path: &str, query: &str) -> Route {
    match parse_sync_query(query) {
        Ok(Some(params)) => Route::Sync(params),
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

/// The refusal of a WebSocket sync request that is not an upgrade (compared
/// case-sensitively, like the TypeScript server), if it is one.
pub fn upgrade_rejection(params: &SyncParams, upgrade: Option<&str>) -> Option<Route> {
    (params.transport == Transport::Ws && upgrade != Some("websocket")).then(|| Route::Reject {
        status: 426,
        message: "Durable Object expected Upgrade: websocket".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(query: &str) -> SyncParams {
        match route("GET", "/sync", query) {
            Route::Sync(params) => params,
            other => panic!("expected a sync route, got {other:?}"),
        }
    }

    #[test]
    fn routes_by_query_only() {
        assert_eq!(sync("storeId=s&transport=ws").transport, Transport::Ws);
        assert!(matches!(
            route("POST", "/any/path", "storeId=s&transport=http"),
            Route::Sync(_)
        ));
        assert_eq!(route("GET", "/", ""), Route::Info);
        assert_eq!(route("GET", "/", "x=1"), Route::Info);
        assert!(matches!(
            route("GET", "/whatever", ""),
            Route::Reject { status: 400, .. }
        ));
        assert!(matches!(
            route("HEAD", "/", ""),
            Route::Reject { status: 400, .. }
        ));
    }

    #[test]
    fn websocket_transport_needs_an_upgrade() {
        let ws = sync("storeId=s&transport=ws");
        for upgrade in [None, Some("WebSocket"), Some("h2c")] {
            assert!(matches!(
                upgrade_rejection(&ws, upgrade),
                Some(Route::Reject { status: 426, .. })
            ));
        }
        assert_eq!(upgrade_rejection(&ws, Some("websocket")), None);
        assert_eq!(
            upgrade_rejection(&sync("storeId=s&transport=http"), None),
            None
        );
    }

    #[test]
    fn everything_else_is_a_clear_400() {
        let Route::Reject { status, message } = route("POST", "/", "") else {
            panic!("expected a rejection")
        };
        assert_eq!(status, 400);
        assert!(message.contains("storeId"));
        let Route::Reject { status, message } = route("GET", "/", "storeId=s&transport=sse") else {
            panic!("expected a rejection")
        };
        assert_eq!(status, 400);
        assert!(message.contains("sse"));
    }
}
