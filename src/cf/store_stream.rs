//! A store's event log served as a read-only Durable Stream (`/v1/livestore/<storeId>`, see
//! [`crate::livestore::stream_view`]), by the store's own sync object. The Worker gates it as it
//! gates sync (`validate_payload` with the `payload` query parameter) and forwards it there.

use super::stream_object::{event_stream, to_response, Cors};
use super::sync_object::Inner;
use crate::durable_streams::http::{Request as DsRequest, Response as DsResponse};
use crate::durable_streams::platform::Clock;
use crate::durable_streams::read::{read, sse_next, ReadOutcome};
use crate::livestore::store_id::StoreId;
use crate::livestore::stream_view::{parse_view_request, write_refused, StoreView, ViewRequest};
use std::rc::Rc;
use std::time::Duration;
use worker::{Date, Delay, Method, Request, Response, Result};

/// The store a request to the sync object names as a stream view, if it is one.
pub(super) fn view_of(req: &Request) -> Option<std::result::Result<ViewRequest, String>> {
    let url = req.url().ok()?;
    parse_view_request(url.path(), url.query().unwrap_or(""))
}

/// A bridge socket for a live reader of the store's stream (the Worker opens it with the store
/// in the `store` query parameter; see [`super::sse_bridge`]).
pub(super) async fn bridge(inner: &Rc<Inner>, req: &Request) -> Result<Response> {
    let url = req.url()?;
    let store_id = url
        .query_pairs()
        .find(|(key, _)| key == "store")
        .map(|(_, value)| StoreId::parse(&value));
    let store_id = match store_id {
        Some(Ok(store_id)) => store_id,
        _ => return super::stream_object::plain(400, "a bridge needs a valid store"),
    };
    if let Err(e) = inner.backend(&store_id) {
        return to_response(DsResponse::error(500, format!("{e:?}")), Cors::ByWorker);
    }
    super::sse_fanout::accept(inner, &inner.fan_out, &url).await
}

/// Real time.
struct RealClock;

impl Clock for RealClock {
    fn now_ms(&self) -> u64 {
        Date::now().as_millis()
    }

    async fn sleep(&self, ms: u64) {
        Delay::from(Duration::from_millis(ms)).await;
    }
}

/// Serves a read of the store's stream in its sync object.
pub(super) async fn serve(
    inner: &Rc<Inner>,
    mut req: Request,
    view: std::result::Result<ViewRequest, String>,
) -> Result<Response> {
    let method = req.method();
    if !matches!(method, Method::Get | Method::Head) {
        // The Worker refuses writes itself; one that reaches the object another way is refused
        // too, after its body is read (an object that answers before reading a forwarded body
        // makes the runtime fail the request).
        super::read_body(&mut req, 0).await?;
        return to_response(write_refused(), Cors::ByWorker);
    }
    let view = match view {
        Ok(view) => view,
        Err(message) => return to_response(DsResponse::error(400, message), Cors::ByWorker),
    };
    let backend = match inner.backend(&view.store_id) {
        Ok(backend) => backend,
        Err(e) => return to_response(DsResponse::error(500, format!("{e:?}")), Cors::ByWorker),
    };
    let store_view = StoreView::new(backend);
    let failed = |e: crate::stream::StorageError| worker::Error::RustError(e.to_string());
    if method == Method::Head {
        return to_response(store_view.head().await.map_err(failed)?, Cors::ByWorker);
    }
    let url = req.url()?;
    let headers = super::header_map(req.headers());
    let mut base = url.clone();
    base.set_query(None);
    let request = DsRequest {
        method: "GET",
        url: base.as_str(),
        query: url.query().unwrap_or_default(),
        headers: &headers,
        body: &[],
    };
    let config = inner.stream_config;
    match read(&store_view, &RealClock, &config, &request)
        .await
        .map_err(failed)?
    {
        ReadOutcome::Reply(response) => to_response(response, Cors::ByWorker),
        ReadOutcome::Sse(sse) => {
            let headers = sse.headers.clone();
            let state = (store_view, sse, config);
            let events =
                futures_util::stream::unfold(state, |(view, mut sse, config)| async move {
                    match sse_next(&view, &RealClock, &config, &mut sse).await {
                        Ok(Some(events)) => Some((Ok(events.into_bytes()), (view, sse, config))),
                        Ok(None) => None,
                        Err(e) => {
                            worker::console_error!("store stream read: {e}");
                            None
                        }
                    }
                });
            event_stream(&headers, events, Cors::ByWorker)
        }
    }
}
