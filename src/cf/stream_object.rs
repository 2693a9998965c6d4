//! The Durable Streams edge (wasm only): the stream Durable Object, one per stream path
//! (`STREAMS`, `idFromName(path)`), and what the Worker's routing ([`super::stream_route`]) shares
//! with it.
//!
//! The protocol lives in [`crate::durable_streams`]; this module reads requests, keeps a
//! [`Stream`] over the object's SQLite, pumps SSE responses, and gives the protocol its
//! platform: time and timers, the alarm, and the other streams' objects (a fork's source),
//! reached through internal paths the Worker never forwards.

use super::sse_bridge::BRIDGE_PATH;
use super::sse_fanout::{Bridged, FanOut};
pub use super::stream_platform::CfPlatform;
use super::stream_platform::ReadRequest;
use crate::admin::model::{ProducerInfo, StreamInfo};
use crate::durable_streams::create::MAX_APPEND_BYTES;
use crate::durable_streams::http::Response as DsResponse;
use crate::durable_streams::platform::{AcquireRequest, Config};
use crate::durable_streams::read::Sse;
use crate::durable_streams::stream::{Outcome, Stream};
use crate::storage::r2::{R2Cold, SEGMENTS_BINDING};
use crate::storage::segments::{encode_messages, SegmentPolicy};
use crate::storage::stream_sqlite::SqliteStreamStore;
use crate::stream::{Budget, StorageError};
use std::rc::Rc;
use worker::{Date, Env, Headers, Request, Response, Result, State, WebSocket};

/// The binding of the stream Durable Object.
pub const STREAMS_BINDING: &str = "STREAMS";
/// Paths served as streams.
pub const STREAM_PREFIX: &str = "/v1/stream/";
/// Object-to-object calls; the Worker forwards only [`STREAM_PREFIX`] paths, so these are
/// unreachable from outside.
pub(super) const INTERNAL_PREFIX: &str = "/__ds_internal/";

const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "content-type, stream-seq, stream-ttl, stream-expires-at, \
stream-closed, stream-forked-from, stream-fork-offset, stream-fork-sub-offset, producer-id, \
producer-epoch, producer-seq, if-none-match, authorization, cache-control";
const EXPOSE_HEADERS: &str = "stream-next-offset, stream-cursor, stream-up-to-date, \
stream-closed, stream-ttl, stream-expires-at, stream-sse-data-encoding, producer-epoch, \
producer-seq, producer-expected-seq, producer-received-seq, etag, location, content-type";

/// Whether the Worker routes `path` to a stream object.
pub fn is_stream_path(path: &str) -> bool {
    path.starts_with(STREAM_PREFIX)
}

/// Whether a response carries CORS headers of its own: streams always do (the protocol's
/// clients are browsers too); a store's stream has the sync Worker's CORS setting, which the
/// Worker applies.
#[derive(Copy, Clone, PartialEq, Eq)]
pub(super) enum Cors {
    Open,
    ByWorker,
}

/// The headers every stream response carries (security, and CORS unless the Worker adds it).
pub(super) fn common_headers(headers: &Headers, cors: Cors) -> Result<()> {
    headers.set("x-content-type-options", "nosniff")?;
    headers.set("cross-origin-resource-policy", "cross-origin")?;
    if cors == Cors::Open {
        cors_headers(headers)?;
    }
    Ok(())
}

/// The CORS headers of a stream response.
pub(super) fn cors_headers(headers: &Headers) -> Result<()> {
    headers.set("access-control-allow-origin", "*")?;
    headers.set("access-control-expose-headers", EXPOSE_HEADERS)?;
    Ok(())
}

pub(super) fn plain(status: u16, message: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "text/plain; charset=utf-8")?;
    common_headers(&headers, Cors::Open)?;
    Ok(Response::from_bytes(message.as_bytes().to_vec())?
        .with_status(status)
        .with_headers(headers))
}

/// A JSON answer of the stream edge's APIs (estuaries, subscriptions): never cached, readable
/// cross-origin.
pub(super) fn json_reply<T: serde::Serialize>(status: u16, value: &T) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("cache-control", "no-store")?;
    common_headers(&headers, Cors::Open)?;
    Ok(Response::from_json(value)?
        .with_status(status)
        .with_headers(headers))
}

/// A protocol response as a Worker response.
pub(super) fn to_response(response: DsResponse, cors: Cors) -> Result<Response> {
    let headers = Headers::new();
    for (name, value) in &response.headers {
        headers.append(name, value)?;
    }
    common_headers(&headers, cors)?;
    let out = if response.body.is_empty() {
        Response::empty()?
    } else {
        Response::from_bytes(response.body)?
    };
    Ok(out.with_status(response.status).with_headers(headers))
}

/// A CORS preflight answer for stream paths.
pub(super) fn preflight() -> Result<Response> {
    let headers = Headers::new();
    common_headers(&headers, Cors::Open)?;
    headers.set("access-control-allow-methods", ALLOW_METHODS)?;
    headers.set("access-control-allow-headers", ALLOW_HEADERS)?;
    headers.set("access-control-max-age", "86400")?;
    Ok(Response::empty()?.with_status(204).with_headers(headers))
}

/// An event stream's response: `events` is its body, one chunk of events at a time.
pub(super) fn event_stream(
    headers_of: &[(String, String)],
    events: impl futures_util::Stream<Item = Result<Vec<u8>>> + 'static,
    cors: Cors,
) -> Result<Response> {
    Ok(Response::from_stream(events)?.with_headers(event_stream_headers(headers_of, cors)?))
}

/// The headers of an event stream's response.
pub(super) fn event_stream_headers(headers_of: &[(String, String)], cors: Cors) -> Result<Headers> {
    let headers = Headers::new();
    for (name, value) in headers_of {
        headers.set(name, value)?;
    }
    common_headers(&headers, cors)?;
    Ok(headers)
}

pub(super) type StreamOf = Stream<SqliteStreamStore, CfPlatform>;

impl Bridged for StreamOf {
    type Log = StreamOf;

    fn state(&self) -> &State {
        self.platform().state()
    }

    fn log_now(self: &Rc<Self>) -> Option<Rc<StreamOf>> {
        Some(self.clone())
    }
}

/// The protocol's settings, from the Worker's vars (the Worker's bridge and the object share them).
pub(super) fn stream_config(env: &Env) -> Config {
    let var = |name: &str| {
        env.var(name)
            .ok()
            .and_then(|v| v.to_string().trim().parse::<u64>().ok())
    };
    let defaults = Config::default();
    Config {
        long_poll_ms: var("DS_LONG_POLL_TIMEOUT_MS").unwrap_or(defaults.long_poll_ms),
        sse_recycle_ms: defaults.sse_recycle_ms,
        producer_ttl_ms: var("DS_PRODUCER_TTL_SECONDS")
            .map_or(defaults.producer_ttl_ms, |s| s.saturating_mul(1_000)),
    }
}

/// When a stream's oldest messages make a segment for the cold tier, from the Worker's vars.
pub(crate) fn segment_policy(env: &Env) -> SegmentPolicy {
    let var = |name: &str| {
        env.var(name)
            .ok()
            .and_then(|v| v.to_string().trim().parse::<u64>().ok())
            .filter(|n| *n > 0)
    };
    let defaults = SegmentPolicy::default();
    SegmentPolicy {
        messages: var("DS_SEGMENT_MESSAGES").unwrap_or(defaults.messages),
        bytes: var("DS_SEGMENT_BYTES").unwrap_or(defaults.bytes),
    }
}

/// Moves full segments to the cold tier (and deletes what no segment names) after the request.
fn compact_later(stream: &Rc<StreamOf>) {
    let store = stream.log().store().clone();
    if store.cold().is_none() {
        return;
    }
    stream.platform().state.wait_until(async move {
        if let Err(e) = store.compact().await {
            worker::console_warn!("moving cold segments: {e}");
        }
    });
}

/// The stream Durable Object's logic; the shipped Worker wraps it as `StreamObject`.
pub struct StreamsObject {
    stream: std::result::Result<Rc<StreamOf>, StorageError>,
    fan_out: Rc<FanOut>,
    /// Telling the stream's watchers (estuaries, subscriptions) of its appends.
    watchers: Rc<super::fanout::FanOutRun>,
    /// Delivering wakes, when this object is a subscription.
    subscription: Rc<super::subscription_object::SubRun>,
}

impl StreamsObject {
    pub fn new(state: State, env: Env) -> StreamsObject {
        super::usage::count(|u| u.object_starts += 1);
        let config = stream_config(&env);
        let fan_out = Rc::new(FanOut::default());
        let bridged = FanOut::readers(&state) > 0;
        let cold = env
            .bucket(SEGMENTS_BINDING)
            .ok()
            .map(|bucket| R2Cold::new(bucket, "ds", &state.id().to_string()));
        let policy = segment_policy(&env);
        let stream = SqliteStreamStore::open(state.storage()).map(|store| {
            let store = store.with_cold(cold, policy);
            Rc::new(Stream::new(store, CfPlatform::new(state, env), config))
        });
        if let (Ok(stream), true) = (&stream, bridged) {
            // Woken from hibernation with readers waiting: whatever woke it may concern them.
            fan_out.start(stream);
        }
        StreamsObject {
            stream,
            fan_out,
            watchers: Rc::default(),
            subscription: Rc::default(),
        }
    }

    /// A bridge socket closed by the Worker (its reader went away).
    pub async fn websocket_close(&self, ws: WebSocket) -> Result<()> {
        let _ = ws.close(Some(1000), Some("closed"));
        Ok(())
    }

    fn stream(&self) -> Result<Rc<StreamOf>> {
        self.stream
            .clone()
            .map_err(|e| worker::Error::RustError(e.to_string()))
    }

    pub async fn fetch(&self, req: Request) -> Result<Response> {
        super::usage::count(|u| u.object_requests += 1);
        if let Ok(stream) = &self.stream {
            // Its name kept for an alarm that starts it without one.
            stream.platform().name();
            // A fan-out owed by an earlier life of the object goes on now (the alarm would too).
            super::fanout::resume_once(stream, &self.watchers, &stream.platform().env);
        }
        match self.serve(req).await {
            Ok(response) => Ok(response),
            Err(e) => plain(500, &e.to_string()),
        }
    }

    /// The alarm: expiry and retries of owed releases.
    pub async fn alarm(&self) -> Result<Response> {
        let stream = self.stream()?;
        let env = stream.platform().env.clone();
        let state = stream.platform().state();
        let name = stream.platform().name();
        if super::subscription_object::is_subscription_object(name.as_deref()) {
            super::subscription_delivery::alarm(state, &env, &self.subscription).await?;
            return Response::ok("");
        }
        if let Err(e) = super::fanout::on_alarm(&stream, &self.watchers, &env).await {
            worker::console_warn!("fan-out: {e}");
        }
        super::estuary::leave_if_expired(&stream, &env).await;
        stream
            .alarm()
            .await
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        compact_later(&stream);
        Response::ok("")
    }

    async fn serve(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        let url = req.url()?;
        let headers = super::header_map(req.headers());
        let Some(body) = super::read_body(&mut req, MAX_APPEND_BYTES).await? else {
            return to_response(DsResponse::new(413), Cors::Open);
        };
        let stream = self.stream()?;
        if path == BRIDGE_PATH {
            return super::sse_fanout::accept(&stream, &self.fan_out, &url).await;
        }
        let env = stream.platform().env.clone();
        let subscription =
            super::subscription_object::serve(&stream, &self.subscription, &req, &body);
        if let Some(served) = subscription.await {
            return served;
        }
        if super::subscription_links::is_tail_op(&path) {
            return super::subscription_links::serve_tail(&stream).await;
        }
        if let Some(served) =
            super::estuary::internal(&stream, &self.watchers, &env, &path, &body).await
        {
            return served;
        }
        if let Some(op) = path.strip_prefix(INTERNAL_PREFIX) {
            let response = internal(&stream, op, &body).await;
            if op == "release" {
                compact_later(&stream);
            }
            return response;
        }
        if let Some(op) = path.strip_prefix(super::registry::REGISTRY_PATH) {
            let platform = stream.platform();
            let name = platform.name();
            let sql = platform.state.storage().sql();
            if name.as_deref() == Some(super::registry::STREAM_REGISTRY) {
                if op == "pattern" {
                    return super::subscription_links::serve_pattern(&sql, &body);
                }
                if op == "change" {
                    // Recorded first; then a stream that came into being joins the
                    // subscriptions whose pattern it matches.
                    let created = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .filter(|c| c["present"] == serde_json::Value::Bool(true))
                        .and_then(|c| c["name"].as_str().map(str::to_owned));
                    let recorded =
                        super::registry::serve_body(sql.clone(), name.clone(), &path, &body);
                    if let Some(created) = created {
                        let (owner, env) = (stream.clone(), env.clone());
                        stream.platform().state.wait_until(async move {
                            let sql = owner.platform().state.storage().sql();
                            let linked =
                                super::subscription_links::link_created(&env, &sql, &created);
                            if let Err(e) = linked.await {
                                worker::console_warn!("linking {created}: {e}");
                            }
                        });
                    }
                    if let Some(response) = recorded {
                        return response;
                    }
                }
            }
            if let Some(response) = super::registry::serve_body(sql, name, &path, &body) {
                return response;
            }
        }
        let mut base = url.clone();
        base.set_query(None);
        let method = req.method().to_string();
        let request = crate::durable_streams::http::Request {
            method: &method,
            url: base.as_str(),
            query: url.query().unwrap_or_default(),
            headers: &headers,
            body: &body,
        };
        let outcome = stream
            .handle(&request)
            .await
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        if let (Outcome::Reply(response), "GET") = (&outcome, method.as_str()) {
            let sql = stream.platform().state.storage().sql();
            let now = Date::now().as_millis();
            let key = headers
                .get(super::edge_cache::CACHE_KEY_HEADER)
                .map(String::as_str);
            if let Err(e) =
                super::edge_cache::remember(&sql, key, response.status, &response.headers, now)
            {
                worker::console_warn!("edge cache keys: {e}");
            }
        }
        if let Outcome::Reply(response) = &outcome {
            // Streams enter the admin registry when created and leave it when deleted.
            let present = match (method.as_str(), response.status) {
                ("PUT", 200 | 201) => Some(true),
                ("DELETE", 204) => Some(false),
                _ => None,
            };
            if let Some(present) = present {
                let env = stream.platform().env.clone();
                let path = path.clone();
                stream.platform().state.wait_until(async move {
                    let announced = super::registry::announce(
                        &env,
                        STREAMS_BINDING,
                        super::registry::STREAM_REGISTRY,
                        &path,
                        present,
                    );
                    if let Err(e) = announced.await {
                        worker::console_warn!("stream registry: {e}");
                    }
                });
            }
        }
        if !matches!(method.as_str(), "GET" | "HEAD") {
            compact_later(&stream);
        }
        if let Outcome::Reply(response) = &outcome {
            match (method.as_str(), response.status) {
                ("POST" | "PUT", 200..=299) => {
                    // The write is committed: its answer stands whatever happens here.
                    if let Err(e) = super::fanout::after_write(&stream, &self.watchers, &env).await
                    {
                        worker::console_warn!("fan-out owed after a write: {e}");
                    }
                }
                // The next stream at this path starts with no watchers.
                ("DELETE", 204) => super::fanout::forget(&stream, &self.watchers, &env),
                _ => {}
            }
        }
        match outcome {
            Outcome::Reply(response) => to_response(response, Cors::Open),
            Outcome::Sse(sse) => pump(stream, sse),
        }
    }
}

/// Pumps an event stream of `stream` as the body of its response.
fn pump(stream: Rc<StreamOf>, sse: Box<Sse>) -> Result<Response> {
    let headers = sse.headers.clone();
    let events = futures_util::stream::unfold((stream, sse), |(stream, mut sse)| async move {
        match stream.sse_next(&mut sse).await {
            Ok(Some(events)) => Some((Ok(events.into_bytes()), (stream, sse))),
            Ok(None) => None,
            Err(e) => {
                worker::console_error!("event stream read: {e}");
                None
            }
        }
    });
    event_stream(&headers, events, Cors::Open)
}

async fn internal(stream: &StreamOf, op: &str, body: &[u8]) -> Result<Response> {
    let failed = |e: StorageError| worker::Error::RustError(e.to_string());
    match op {
        "acquire" => {
            let request: AcquireRequest = match serde_json::from_slice(body) {
                Ok(request) => request,
                Err(e) => return plain(400, &format!("bad acquire request: {e}")),
            };
            match stream.acquire(&request).await.map_err(failed)? {
                Ok(point) => {
                    let json = serde_json::to_vec(&point)
                        .map_err(|e| worker::Error::RustError(e.to_string()))?;
                    Ok(Response::from_bytes(json)?.with_status(200))
                }
                Err(response) => to_response(response, Cors::Open),
            }
        }
        "release" => {
            stream.release().await.map_err(failed)?;
            Ok(Response::empty()?.with_status(204))
        }
        "read" => {
            let request: ReadRequest = match serde_json::from_slice(body) {
                Ok(request) => request,
                Err(e) => return plain(400, &format!("bad read request: {e}")),
            };
            let budget = Budget {
                rows: request.rows,
                bytes: request.bytes,
            };
            let messages = stream
                .read_for_fork(request.after, request.upto, budget)
                .await
                .map_err(failed)?;
            Ok(Response::from_bytes(encode_messages(&messages))?.with_status(200))
        }
        "cache-keys" => {
            let sql = stream.platform().state.storage().sql();
            let keys = super::edge_cache::hand_over(&sql, Date::now().as_millis())?;
            Response::ok(keys)
        }
        "admin-info" => match stream.live().await.map_err(failed)? {
            Ok((meta, tail)) => {
                let store = stream.log().store();
                let (messages, bytes) = store.stats().map_err(failed)?;
                let cold = store.cold_stats().map_err(failed)?;
                let cold_objects = match store.cold() {
                    Some(tier) => Some(tier.count(1_000).await.map_err(failed)? as u64),
                    None => None,
                };
                let producers = store
                    .producers()
                    .map_err(failed)?
                    .into_iter()
                    .map(|(id, epoch, seq, last_seen_ms)| ProducerInfo {
                        id,
                        epoch,
                        seq,
                        last_seen_ms,
                    })
                    .collect();
                let info = StreamInfo {
                    path: String::from_utf8_lossy(body).into_owned(),
                    content_type: meta.content_type,
                    next_offset: crate::durable_streams::meta::offset_text(tail),
                    messages: messages + cold.messages,
                    bytes: bytes + cold.bytes,
                    cold_segments: cold.segments,
                    cold_messages: cold.messages,
                    cold_bytes: cold.bytes,
                    cold_garbage: cold.garbage,
                    cold_objects,
                    created_ms: meta.created_ms,
                    last_access_ms: meta.last_access_ms,
                    closed: meta.closed,
                    ttl_seconds: meta.ttl_seconds,
                    expires_at_ms: meta.expires_at_ms,
                    inherited: meta.fork.as_ref().map_or(0, |f| f.inherited),
                    forked_from: meta.fork.map(|f| f.source),
                    forks: meta.ref_count,
                    producers,
                    live_readers: FanOut::readers(stream.platform().state()) as u64,
                    awake_since_ms: stream.platform().woke_ms,
                    watchers: crate::storage::watchers::Watchers::open(
                        stream.platform().state().storage().sql(),
                    )
                    .and_then(|w| w.count())
                    .map_err(failed)?,
                };
                Response::from_json(&info)
            }
            Err(status) => plain(status, "no live stream at this path"),
        },
        _ => plain(404, "unknown internal operation"),
    }
}
