//! The Worker's routing of a request by method, path and query string (`storeId`,
//! `payload`, `transport`): never panics, every sync route names a valid store, and every
//! refusal is a 400 with a bounded message.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use livestore_sync_rs::livestore::query::Transport;
use livestore_sync_rs::livestore::route::{route, upgrade_rejection, Route};
use livestore_sync_rs::livestore::store_id::StoreId;

const METHODS: [&str; 4] = ["GET", "POST", "HEAD", "OPTIONS"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some(query) = common::text(rest) else {
        return;
    };
    let method = METHODS[usize::from(selector & 3)];
    let path = if selector & 4 == 0 { "/" } else { "/sync" };
    match route(method, path, query) {
        Route::Sync(params) => {
            let store_id = params.store_id.as_str();
            assert_eq!(StoreId::parse(store_id).as_ref(), Ok(&params.store_id));
            let refused = upgrade_rejection(&params, None).is_some();
            assert_eq!(refused, params.transport == Transport::Ws);
            assert!(upgrade_rejection(&params, Some("websocket")).is_none());
        }
        Route::Info => assert!(method == "GET" && path == "/"),
        Route::Reject { status, message } => {
            assert_eq!(status, 400);
            assert!(message.len() < 1024, "refusal echoes too much: {message}");
        }
    }
});
