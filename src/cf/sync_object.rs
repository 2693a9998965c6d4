//! `SyncBackendObject`: the sync Durable Object (`makeDurableObject`), one per store. It opens
//! the store's log (D1 or its own SQLite) on first use, serves the sync RPCs through the
//! transports (`ws`, `http`, `do_rpc`) with the hook orchestration of
//! [`crate::livestore::service`], publishes accepted pushes to live sockets and DO-RPC
//! subscribers, and serves the store's log as a read-only Durable Stream (`store_stream`).

use super::sse_bridge::BRIDGE_PATH;
use super::sse_fanout::{Bridged, FanOut};
use super::subscriptions::Subscriptions;
use super::ws::{send_text, Sockets, WsReply};
use super::{header_map, now_iso, read_body};
use crate::livestore::chunk::PullPage;
use crate::livestore::options::{HookContext, Storage, SyncObjectOptions};
use crate::livestore::query::{parse_sync_query, Transport};
use crate::livestore::route::{upgrade_rejection, Route};
use crate::livestore::service::{serve, Publisher, Reply};
use crate::livestore::store_id::StoreId;
use crate::livestore::stream_view::StoreView;
use crate::livestore::sync::{backend_id_from_random, SyncBackend, BACKEND_ID_LEN};
use crate::livestore::wire::{
    decode_client_message, encode_defect, encode_failure, ClientMessage, DecodeError, RequestId,
    Rpc, SyncError, CLOSE_MESSAGE_TOO_BIG, MAX_FRAME_BYTES, PING, PONG,
};
use crate::storage::d1::D1EventLog;
use crate::storage::do_sqlite::{ColdFlags, ContextRow, DoSqliteEventLog};
use crate::storage::engine::EventStore;
use crate::storage::r2::{R2Cold, SEGMENTS_BINDING};
use std::cell::RefCell;
use std::rc::{Rc, Weak};
use wasm_bindgen::JsValue;
use worker::{
    worker_sys::WebSocketRequestResponsePair, Env, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair,
};

/// A store's sync backend over the storage the options choose.
pub(super) type Backend = SyncBackend<EventStore>;

/// The sync Durable Object (`makeDurableObject`). Wrap it in a `#[durable_object]` struct and
/// forward the handlers to it (see the [module docs](super)).
pub struct SyncBackendObject {
    inner: Rc<Inner>,
}

/// What the object's handlers and the tasks they start share.
pub(super) struct Inner {
    pub state: State,
    pub env: Env,
    pub options: SyncObjectOptions,
    backend: RefCell<Option<Rc<Backend>>>,
    pub subscriptions: Rc<Subscriptions>,
    pub sockets: Sockets,
    /// Settings of the store's stream view.
    pub stream_config: crate::durable_streams::platform::Config,
    /// The stream view's live readers (SSE through the bridge).
    pub fan_out: Rc<FanOut>,
    /// When this instance of the object started (again after each eviction).
    pub woke_ms: u64,
    /// The cold tier's state of the store's log, whichever instance of it runs.
    cold_flags: Rc<ColdFlags>,
    /// This, for the tasks it starts (weak: they must not keep an evicted instance alive).
    me: Weak<Inner>,
}

impl Bridged for Inner {
    type Log = StoreView<EventStore>;

    fn state(&self) -> &State {
        &self.state
    }

    fn log_now(self: &Rc<Self>) -> Option<Rc<Self::Log>> {
        let backend = self.backend.borrow().clone()?;
        Some(Rc::new(StoreView::new(backend)))
    }
}

impl SyncBackendObject {
    /// The object for `state`, configured with `options`.
    pub fn new(state: State, env: Env, options: SyncObjectOptions) -> Self {
        super::usage::count(|u| u.object_starts += 1);
        // Clients ping every few seconds; answer without waking the object.
        if let Ok(pair) = WebSocketRequestResponsePair::new(PING, PONG) {
            state.set_websocket_auto_response(&pair);
        }
        let subscriptions = Subscriptions::new(state.storage().sql(), env.clone());
        let sockets = Sockets::new(state.storage().sql());
        let stream_config = super::stream_object::stream_config(&env);
        SyncBackendObject {
            inner: Rc::new_cyclic(|me| Inner {
                state,
                env,
                options,
                backend: RefCell::new(None),
                subscriptions,
                sockets,
                stream_config,
                fan_out: Rc::default(),
                woke_ms: worker::Date::now().as_millis(),
                cold_flags: Rc::default(),
                me: me.clone(),
            }),
        }
    }

    /// Handles a request forwarded by the Worker: a WebSocket upgrade, an HTTP RPC call, or a
    /// read of the store's log as a Durable Stream.
    pub async fn fetch(&self, mut req: Request) -> Result<Response> {
        super::usage::count(|u| u.object_requests += 1);
        if req.path() == BRIDGE_PATH {
            return super::store_stream::bridge(&self.inner, &req).await;
        }
        if let Some(view) = super::store_stream::view_of(&req) {
            return super::store_stream::serve(&self.inner, req, view).await;
        }
        // Consume the body before any answer, refusals included (see `read_body`).
        let body = read_body(&mut req, MAX_FRAME_BYTES).await?;
        let url = req.url()?;
        let inner = &self.inner;
        if url.path().starts_with(super::registry::REGISTRY_PATH) {
            if let Some(response) = super::registry::serve_body(
                inner.state.storage().sql(),
                inner.state.id().name(),
                url.path(),
                body.as_deref().unwrap_or_default(),
            ) {
                return response;
            }
        }
        if crate::admin::route::is_admin_path(url.path()) {
            return super::store_admin::serve(inner, &req).await;
        }
        let params = match parse_sync_query(url.query().unwrap_or("")) {
            Ok(Some(params)) => params,
            Ok(None) => return Response::error("Invalid request: not a sync request", 400),
            Err(e) => return Response::error(format!("Invalid sync request: {e}"), 400),
        };
        if !inner.options.transports().allows(params.transport) {
            return Response::error(
                format!(
                    "The {} transport is disabled on this server",
                    params.transport.as_str()
                ),
                400,
            );
        }
        let all_headers = header_map(req.headers());
        let forwarded = inner
            .options
            .select_headers(all_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match params.transport {
            Transport::Ws => {
                let upgrade = req.headers().get("Upgrade")?;
                if let Some(Route::Reject { status, message }) =
                    upgrade_rejection(&params, upgrade.as_deref())
                {
                    return Response::error(message, status);
                }
                let pair = WebSocketPair::new()?;
                let context = HookContext {
                    store_id: params.store_id.as_str().to_owned(),
                    payload: params.payload,
                    headers: forwarded,
                };
                let expiry = inner.options.socket_expiry(&context);
                if let Err(e) = inner.sockets.accept(&inner.state, pair.server, context) {
                    worker::console_error!("accepting a socket failed: {e}");
                    return Response::error(format!("could not store the connection: {e}"), 500);
                }
                if let Some(at) = expiry {
                    inner.wake_at(at).await;
                }
                Response::from_websocket(pair.client)
            }
            Transport::Http => super::http::serve(inner, &req, body, params, forwarded).await,
            Transport::DoRpc => Response::error("do-rpc is not served over fetch", 400),
        }
    }

    /// Handles a WebSocket frame.
    pub async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        super::usage::count(|u| u.object_ws_messages += 1);
        match message {
            WebSocketIncomingMessage::String(text) if text.len() > MAX_FRAME_BYTES => {
                let reason = format!(
                    "frame of {} bytes is over the {MAX_FRAME_BYTES}-byte limit",
                    text.len()
                );
                let _ = ws.close(Some(CLOSE_MESSAGE_TOO_BIG), Some(reason));
            }
            WebSocketIncomingMessage::String(text) => self.inner.on_frame(&ws, &text).await,
            WebSocketIncomingMessage::Binary(_) => send_text(
                &ws,
                &encode_defect("binary frames are not supported: send JSON text frames"),
            ),
        }
        Ok(())
    }

    /// The alarm: closes the sockets whose token expired, and arms for the next one.
    pub async fn alarm(&self) -> Result<Response> {
        let inner = &self.inner;
        let now = super::now_s();
        let options = &inner.options;
        if let Some(next) = inner
            .sockets
            .close_expired(&inner.state, now, |c| options.socket_expiry(c))
        {
            inner.wake_at(next).await;
        }
        Response::ok("")
    }

    /// Handles a WebSocket close: completes the closing handshake.
    pub async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        self.inner.sockets.forget(&ws);
        let _ = ws.close(Some(1000), Some("closed"));
        Ok(())
    }

    /// Handles a WebSocket error: the socket gets no more frames.
    pub async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.inner.sockets.forget(&ws);
        Ok(())
    }

    /// Serves a DO-RPC call (`SyncBackendRpcInterface.rpc`) from another Durable Object, given
    /// the JSON of its RPC messages: a string (`{"stream":false,"messages":[…]}`) or a
    /// `ReadableStream` of message JSON strings (see `cf::do_rpc`).
    pub async fn rpc(&self, requests_json: &str) -> JsValue {
        super::usage::count(|u| u.object_requests += 1);
        super::do_rpc::serve(&self.inner, requests_json).await
    }
}

impl Inner {
    /// The store's backend, opened on first use (also after hibernation).
    pub(super) fn backend(
        &self,
        store_id: &StoreId,
    ) -> std::result::Result<Rc<Backend>, SyncError> {
        if let Some(backend) = self.backend.borrow().as_ref() {
            return if backend.store_id() == store_id {
                Ok(backend.clone())
            } else {
                Err(SyncError::unknown(
                    "InvalidStoreError",
                    "this Durable Object serves another store",
                ))
            };
        }
        // The object is named after its store (`idFromName(storeId)`), and the first request
        // after a start or a wake-up decides which store's log it opens: a request for another
        // store (a DO-RPC payload, which has no URL) must not make it open that store's log.
        if let Some(name) = self.state.id().name() {
            if name != store_id.as_str() {
                return Err(SyncError::unknown(
                    "InvalidStoreError",
                    format!("this Durable Object serves store `{name}`, not `{store_id}`"),
                ));
            }
        }
        let unavailable = |e: String| SyncError::unknown("StorageError", e);
        let context = ContextRow::open(
            self.state.storage().sql(),
            store_id.as_str(),
            new_backend_id,
        )
        .map_err(|e| unavailable(e.0))?;
        let backend_id = context.backend_id().to_owned();
        let events = match self.options.storage_kind() {
            Storage::D1 { binding } => {
                let db = self
                    .env
                    .d1(binding)
                    .map_err(|e| unavailable(format!("D1 binding {binding}: {e}")))?;
                EventStore::D1(D1EventLog::new(db, store_id.clone(), context))
            }
            Storage::DoSqlite => {
                let cold = self.options.cold_segment_policy().and_then(|policy| {
                    match self.env.bucket(SEGMENTS_BINDING) {
                        Ok(bucket) => {
                            let object = self.state.id().to_string();
                            Some((R2Cold::new(bucket, "ls", &object), policy))
                        }
                        Err(e) => {
                            worker::console_warn!(
                                "cold segments need the {SEGMENTS_BINDING} bucket: {e}"
                            );
                            None
                        }
                    }
                });
                EventStore::DoSqlite(
                    DoSqliteEventLog::new(
                        self.state.storage(),
                        store_id,
                        context,
                        self.cold_flags.clone(),
                    )
                    .with_cold(cold),
                )
            }
        };
        let backend = Rc::new(SyncBackend::new(store_id.clone(), backend_id, events));
        *self.backend.borrow_mut() = Some(backend.clone());
        super::store_admin::register(self, store_id);
        // After a start or a wake-up: DO-RPC subscribers get what they are owed, and so do the
        // stream view's live readers.
        self.subscriptions
            .kick(backend.clone(), |pump| self.state.wait_until(pump));
        if let Some(me) = self.me.upgrade() {
            self.fan_out.restart(&me);
        }
        Ok(backend)
    }

    /// Makes the alarm ring by `at` (seconds since the epoch), unless it rings sooner.
    pub(super) async fn wake_at(&self, at: u64) {
        let at_ms = at.saturating_mul(1_000) as i64;
        let storage = self.state.storage();
        let current = storage.get_alarm().await.ok().flatten();
        if current.is_none_or(|current| current > at_ms) {
            if let Err(e) = storage
                .set_alarm(worker::ScheduledTime::new(js_sys::Date::new(
                    &(at_ms as f64).into(),
                )))
                .await
            {
                worker::console_error!("arming the token-expiry alarm failed: {e}");
            }
        }
    }

    /// Whether the backend of `store_id` is open.
    pub(super) fn has_backend(&self, store_id: &StoreId) -> bool {
        self.backend
            .borrow()
            .as_ref()
            .is_some_and(|b| b.store_id() == store_id)
    }

    /// Lets go of the open backend (after a reset or delete): the next request opens the
    /// store afresh.
    pub(super) fn forget_backend(&self) {
        *self.backend.borrow_mut() = None;
    }

    /// Runs one RPC for the store `context` names, through `reply`.
    pub(super) async fn serve(
        &self,
        id: &RequestId,
        rpc: Rpc,
        context: &HookContext,
        reply: &mut impl Reply,
    ) {
        let backend = match StoreId::parse(&context.store_id)
            .map_err(|e| SyncError::unknown("InvalidStoreError", e.to_string()))
            .and_then(|store_id| self.backend(&store_id))
        {
            Ok(backend) => backend,
            Err(e) => {
                let _ = reply.send(encode_failure(id, &e)).await;
                return;
            }
        };
        serve(&backend, &self.options, id, rpc, context, reply, self).await;
    }

    async fn on_frame(&self, ws: &WebSocket, text: &str) {
        let (id, rpc) = match decode_client_message(text, Transport::Ws) {
            Ok(ClientMessage::Request { id, rpc }) => (id, rpc),
            Ok(ClientMessage::Ping) => return send_text(ws, PONG),
            // Counted by the JS wrapper, which hands it over while frames wait for room.
            Ok(ClientMessage::Ack(id)) => return self.sockets.on_ack(ws, &id, text),
            Ok(ClientMessage::Eof) => return,
            Ok(ClientMessage::Interrupt(id)) => return self.sockets.interrupt(ws, &id),
            Err(DecodeError::InvalidPayload { id, rpc, message }) => {
                return send_text(ws, &invalid_request(&id, &rpc, &message));
            }
            Err(e) => return send_text(ws, &encode_defect(&e.to_string())),
        };
        let Some((conn, context)) = self.sockets.connection(&self.state, ws) else {
            return send_text(ws, &encode_defect("connection state lost; reconnect"));
        };
        if let Some(at) = self.options.socket_expiry(&context) {
            let now = super::now_s();
            if at <= now {
                // Its token expired before the alarm came round: no more requests on it.
                let options = &self.options;
                self.sockets
                    .close_expired(&self.state, now, |c| options.socket_expiry(c));
                return;
            }
        }
        let mut reply = WsReply {
            state: &self.state,
            sockets: &self.sockets,
            conn: &conn,
            id: &id,
        };
        self.serve(&id, rpc, &context, &mut reply).await;
    }
}

impl Publisher for Inner {
    fn now_iso(&self) -> String {
        now_iso()
    }

    /// The live pages of an accepted push go to every live pull of every socket; DO-RPC
    /// subscribers are fed from the log by their pump.
    fn publish(&self, pages: Vec<PullPage>) {
        self.sockets.broadcast(&self.state, &pages);
        if let Some(backend) = self.backend.borrow().clone() {
            compact_later(&self.state, &backend);
            self.subscriptions
                .kick(backend, |pump| self.state.wait_until(pump));
        }
    }
}

/// Moves the store's oldest events to the cold tier, when it has one and they fill a segment
/// (and deletes what no segment names any more), after the request.
pub(super) fn compact_later(state: &State, backend: &Backend) {
    let EventStore::DoSqlite(log) = backend.log().store() else {
        return;
    };
    if let Some(compactor) = log.compactor() {
        state.wait_until(async move {
            if let Err(e) = compactor.run().await {
                worker::console_warn!("moving a store's cold segments: {e}");
            }
        });
    }
}

/// The failed `Exit` of a request whose payload does not decode.
pub(super) fn invalid_request(id: &RequestId, rpc: &str, message: &str) -> String {
    let error = SyncError::unknown(
        "InvalidRequestError",
        format!("invalid {rpc} payload: {message}"),
    );
    encode_failure(id, &error)
}

pub(super) fn new_backend_id() -> String {
    let mut random = [0u8; BACKEND_ID_LEN];
    if getrandom::getrandom(&mut random).is_err() {
        // Without crypto randomness fall back to the clock: still unique per reset.
        let now = js_sys::Date::now().to_bits().to_le_bytes();
        for (i, byte) in random.iter_mut().enumerate() {
            *byte = now[i % now.len()].wrapping_add((i as u8).wrapping_mul(31));
        }
    }
    backend_id_from_random(&random)
}
