//! The admin API inside a store's sync object: the store's info, its events as NDJSON, reset
//! and delete; and the store's entry in the admin registry when its log is kept in DO SQLite
//! (with D1 the Worker lists the database's tables instead). The Worker checks the admin secret
//! before forwarding here, and the object checks it again: sync requests reach this object
//! whatever their path.

use super::admin::{admin_secret, error_response, json_response};
use super::registry::{announce, STORE_REGISTRY};
use super::sse_fanout::FanOut;
use super::sync_object::{new_backend_id, Backend, Inner};
use crate::admin::auth::authorize;
use crate::admin::model::{AdminError, ResetOutcome, StoreInfo};
use crate::admin::route::{parse, AdminRoute};
use crate::livestore::options::Storage;
use crate::livestore::store_id::StoreId;
use crate::livestore::stream_view::event_message;
use crate::livestore::wire::SyncError;
use crate::storage::do_sqlite::ContextRow;
use crate::storage::engine::EventStore;
use crate::stream::{Budget, SeqNum, StorageError};
use std::rc::Rc;
use worker::{Headers, Request, Response, Result, SqlStorageValue};

/// Close code of sockets whose store was reset or deleted: "service restart", so clients
/// reconnect (and meet the new backend id).
const CLOSE_RESTART: u16 = 1012;

/// Remembers, in the store's object, that the store is in the registry.
const REGISTERED: &str =
    "CREATE TABLE IF NOT EXISTS admin_registered (storeId TEXT PRIMARY KEY NOT NULL) STRICT";

fn storage_failed(e: StorageError) -> AdminError {
    AdminError::internal(e.0)
}

fn sync_failed(e: SyncError) -> AdminError {
    AdminError::internal(format!("{e:?}"))
}

/// Serves an admin request (a path under `/admin/`) in the store's object.
pub(super) async fn serve(inner: &Rc<Inner>, req: &Request) -> Result<Response> {
    let authorization = req.headers().get("Authorization")?;
    if let Err(e) = authorize(
        admin_secret(&inner.env).as_deref(),
        authorization.as_deref(),
    ) {
        return error_response(&e);
    }
    let url = req.url()?;
    let route = match parse(req.method().as_ref(), url.path(), url.query().unwrap_or("")) {
        Ok(route) => route,
        Err(e) => return error_response(&e),
    };
    let outcome = match route {
        AdminRoute::StoreInfo(store_id) => info(inner, &store_id).await,
        AdminRoute::StoreEvents {
            store_id,
            after,
            limit,
        } => return events(inner, &store_id, after, limit).await,
        AdminRoute::ResetStore { store_id, clear } => reset(inner, &store_id, clear).await,
        AdminRoute::DeleteStore(store_id) => delete(inner, &store_id).await,
        _ => Err(AdminError::not_found("not a store operation")),
    };
    match outcome {
        Ok(json) => json_response(200, json),
        Err(e) => error_response(&e),
    }
}

/// The store's backend if this object ever served it; opening it would create it.
fn existing(inner: &Inner, store_id: &StoreId) -> std::result::Result<Rc<Backend>, AdminError> {
    let known = inner.has_backend(store_id)
        || ContextRow::exists(&inner.state.storage().sql(), store_id.as_str())
            .map_err(storage_failed)?;
    if !known {
        return Err(AdminError::not_found(format!("no store `{store_id}`")));
    }
    inner.backend(store_id).map_err(sync_failed)
}

async fn info(inner: &Inner, store_id: &StoreId) -> std::result::Result<String, AdminError> {
    let backend = existing(inner, store_id)?;
    let head = backend.head().await.map_err(sync_failed)?;
    let store: &EventStore = backend.log().store();
    let (events, bytes) = store.stats().await.map_err(storage_failed)?;
    let last_event_at = match head.get().checked_sub(1).and_then(SeqNum::new) {
        Some(before) => backend
            .log()
            .read(before, head, Budget { rows: 1, bytes: 1 })
            .await
            .map_err(storage_failed)?
            .pop()
            .map(|e| e.created_at),
        None => None,
    };
    let (sockets, live_pulls) = inner.sockets.counts(&inner.state);
    let (cold, cold_objects) = match store {
        EventStore::DoSqlite(log) => (
            log.cold_stats().map_err(storage_failed)?,
            log.cold_objects().await.map_err(storage_failed)?,
        ),
        EventStore::D1(_) => Default::default(),
    };
    let do_rpc_subscribers = inner
        .subscriptions
        .count()
        .map_err(|e| AdminError::internal(e.to_string()))?;
    let info = StoreInfo {
        store_id: store_id.as_str().to_owned(),
        storage: store.kind().to_owned(),
        table: store_id.table_name(),
        backend_id: backend.backend_id().to_owned(),
        head: head.get(),
        events,
        bytes,
        last_event_at,
        sockets,
        live_pulls,
        do_rpc_subscribers,
        object_bytes: inner.state.storage().sql().database_size() as u64,
        live_readers: FanOut::readers(&inner.state) as u64,
        cold_segments: cold.segments,
        cold_events: cold.messages,
        cold_bytes: cold.bytes,
        cold_objects,
        awake_since_ms: inner.woke_ms,
    };
    serde_json::to_string(&info).map_err(|e| AdminError::internal(e.to_string()))
}

/// The events after `after` (at most `limit`), one JSON object per line, streamed a page at a
/// time: an export holds about one page in memory whatever the size of the log. A read that
/// fails midway ends the body with an `{"error": …}` line.
async fn events(
    inner: &Inner,
    store_id: &StoreId,
    after: SeqNum,
    limit: Option<u64>,
) -> Result<Response> {
    let backend = match existing(inner, store_id) {
        Ok(backend) => backend,
        Err(e) => return error_response(&e),
    };
    let head = match backend.head().await {
        Ok(head) => head,
        Err(e) => return error_response(&sync_failed(e)),
    };
    let upto = limit
        .and_then(|l| after.get().checked_add(l))
        .and_then(SeqNum::new)
        .map_or(head, |end| end.min(head));
    let headers = Headers::new();
    headers.set("content-type", "application/x-ndjson; charset=utf-8")?;
    headers.set("cache-control", "no-store")?;
    headers.set("x-store-head", &head.to_string())?;
    headers.set("x-backend-id", backend.backend_id())?;
    let pages = futures_util::stream::unfold(Some(after), move |position| {
        let backend = backend.clone();
        async move {
            let after = position?;
            if after >= upto {
                return None;
            }
            match backend.log().read(after, upto, Budget::PAGE).await {
                Ok(events) => {
                    let last = events.last()?.event.seq_num;
                    let mut lines = Vec::new();
                    for event in &events {
                        lines.extend_from_slice(&event_message(event).data);
                        lines.push(b'\n');
                    }
                    Some((Ok::<_, worker::Error>(lines), Some(last)))
                }
                Err(e) => {
                    let line = serde_json::json!({ "error": e.0 }).to_string() + "\n";
                    Some((Ok(line.into_bytes()), None))
                }
            }
        }
    });
    Ok(Response::from_stream(pages)?.with_headers(headers))
}

async fn reset(
    inner: &Inner,
    store_id: &StoreId,
    clear: bool,
) -> std::result::Result<String, AdminError> {
    let backend = existing(inner, store_id)?;
    // Holding the writer: no push is between its check and its commit meanwhile.
    let writer = backend.log().writer().await.map_err(storage_failed)?;
    let store: &EventStore = backend.log().store();
    if clear {
        store.clear().await.map_err(storage_failed)?;
    }
    let head = if clear { SeqNum::ROOT } else { writer.tail() };
    let backend_id = new_backend_id();
    let context = ContextRow::open(inner.state.storage().sql(), store_id.as_str(), || {
        backend_id.clone()
    })
    .map_err(storage_failed)?;
    context
        .renew(backend_id.clone(), head)
        .map_err(storage_failed)?;
    backend.retire(backend_id.clone());
    inner.forget_backend();
    drop(writer);
    let sockets_closed = inner.sockets.close_all(
        &inner.state,
        CLOSE_RESTART,
        "the store was reset: reconnect",
    ) + FanOut::end_all(&inner.state, "the store was reset");
    inner
        .subscriptions
        .clear()
        .map_err(|e| AdminError::internal(e.to_string()))?;
    let (events, _) = store.stats().await.map_err(storage_failed)?;
    // What the reset discarded of the cold tier is deleted after the answer.
    super::sync_object::compact_later(&inner.state, &backend);
    let outcome = ResetOutcome {
        store_id: store_id.as_str().to_owned(),
        backend_id,
        previous_backend_id: backend.backend_id().to_owned(),
        events,
        sockets_closed,
    };
    serde_json::to_string(&outcome).map_err(|e| AdminError::internal(e.to_string()))
}

async fn delete(inner: &Inner, store_id: &StoreId) -> std::result::Result<String, AdminError> {
    let backend = existing(inner, store_id)?;
    let writer = backend.log().writer().await.map_err(storage_failed)?;
    let sql = inner.state.storage().sql();
    match backend.log().store() {
        EventStore::D1(log) => log.delete().await.map_err(storage_failed)?,
        EventStore::DoSqlite(log) => log.delete().map_err(storage_failed)?,
    }
    ContextRow::delete(&sql, store_id.as_str()).map_err(storage_failed)?;
    backend.retire(new_backend_id());
    inner.forget_backend();
    drop(writer);
    let sockets_closed =
        inner
            .sockets
            .close_all(&inner.state, CLOSE_RESTART, "the store was deleted")
            + FanOut::end_all(&inner.state, "the store was deleted");
    // The deleted store's cold objects go after the answer.
    super::sync_object::compact_later(&inner.state, &backend);
    inner
        .subscriptions
        .clear()
        .map_err(|e| AdminError::internal(e.to_string()))?;
    registered_flag(
        &sql,
        "DELETE FROM admin_registered WHERE storeId = ?",
        store_id.as_str(),
    )
    .map_err(|e| AdminError::internal(e.to_string()))?;
    if matches!(inner.options.storage_kind(), Storage::DoSqlite) {
        announce(
            &inner.env,
            inner.options.binding_name(),
            STORE_REGISTRY,
            store_id.as_str(),
            false,
        )
        .await
        .map_err(|e| AdminError::internal(format!("the registry: {e}")))?;
    }
    Ok(serde_json::json!({
        "storeId": store_id.as_str(),
        "deleted": true,
        "socketsClosed": sockets_closed,
    })
    .to_string())
}

/// Puts a store kept in DO SQLite into the admin registry once (checked with one local query
/// per start of the object; the registry call runs after the response, retried at the next
/// start if it failed).
pub(super) fn register(inner: &Inner, store_id: &StoreId) {
    if !matches!(inner.options.storage_kind(), Storage::DoSqlite) {
        return;
    }
    let sql = inner.state.storage().sql();
    let known = registered_flag(
        &sql,
        "SELECT 1 FROM admin_registered WHERE storeId = ?",
        store_id.as_str(),
    );
    match known {
        Ok(cursor) if cursor.raw().next().is_some() => return,
        Ok(_) => {}
        Err(e) => {
            worker::console_warn!("admin registry flag: {e}");
            return;
        }
    }
    let env = inner.env.clone();
    let binding = inner.options.binding_name().to_owned();
    let name = store_id.as_str().to_owned();
    inner.state.wait_until(async move {
        match announce(&env, &binding, STORE_REGISTRY, &name, true).await {
            Ok(()) => {
                let saved = registered_flag(
                    &sql,
                    "INSERT OR IGNORE INTO admin_registered (storeId) VALUES (?)",
                    &name,
                );
                if let Err(e) = saved {
                    worker::console_warn!("admin registry flag: {e}");
                }
            }
            Err(e) => worker::console_warn!("admin registry: {e}"),
        }
    });
}

/// Runs `statement` (one parameter: the store id) on the object's record that the store is in
/// the registry, creating its table first.
fn registered_flag(
    sql: &worker::SqlStorage,
    statement: &str,
    store_id: &str,
) -> Result<worker::SqlCursor> {
    sql.exec(REGISTERED, None)?;
    sql.exec(statement, vec![SqlStorageValue::from(store_id.to_owned())])
}
