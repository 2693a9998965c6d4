//! `SyncBackendObject`: the sync Durable Object's logic, one object per store. Serves the
//! Effect RPC protocol of `@livestore/sync-cf` over hibernatable WebSockets and over HTTP,
//! runs the hooks, and keeps the store's log in D1 or in its own SQLite.

use super::subscriptions::Subscriptions;
use super::{header_map, now_iso, read_body};
use crate::livestore::chunk::PullPage;
use crate::livestore::options::{
    HookContext, PullMessage, PushMessage, PushOutcome, Storage, SyncObjectOptions,
};
use crate::livestore::query::{parse_sync_query, SyncParams, Transport};
use crate::livestore::route::{upgrade_rejection, Route};
use crate::livestore::store_id::StoreId;
use crate::livestore::sync::{backend_id_from_random, SyncBackend, BACKEND_ID_LEN};
use crate::livestore::wire::{
    decode_client_message, decode_do_rpc_requests, encode_chunk, encode_defect, encode_die,
    encode_do_rpc_reply, encode_failure, encode_stream_end, encode_success, with_rpc_request_id,
    ClientMessage, DecodeError, Defect, PullRequest, PushRequest, RequestId, Rpc, SyncError,
    CLOSE_MESSAGE_TOO_BIG, HTTP_PONG_VALUE, MAX_FRAME_BYTES, PING, PONG, PUSH_ACK_VALUE,
};
use crate::storage::d1::D1EventLog;
use crate::storage::do_sqlite::{ContextRow, DoSqliteEventLog};
use crate::storage::engine::EventStore;
use js_sys::JsString;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{
    worker_sys::WebSocketRequestResponsePair, Env, Headers, Method, Request, Response, Result,
    State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

type Backend = SyncBackend<EventStore, ContextRow>;

/// Per-socket state, kept in the socket attachment so it survives hibernation.
#[derive(Serialize, Deserialize)]
struct Attachment {
    /// A random id of the connection, the key of the in-memory [`LiveSockets`] cache.
    /// Absent in attachments written before it existed; such sockets get one on wake-up.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    conn: String,
    #[serde(rename = "storeId")]
    store_id: String,
    /// The connection's sync payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
    /// Ids of this socket's live pulls; every accepted push is sent to each.
    #[serde(rename = "pullRequestIds", default)]
    live: Vec<RequestId>,
    /// The forwarded headers of the upgrade request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
}

impl Attachment {
    fn context(&self) -> HookContext {
        HookContext {
            store_id: self.store_id.clone(),
            payload: self.payload.clone(),
            headers: self.headers.clone(),
        }
    }
}

/// Attachments are stored as JSON text, like the TypeScript server does, so their shape
/// does not depend on how values cross into JS.
fn read_attachment(ws: &WebSocket) -> Option<Attachment> {
    let text: String = ws.deserialize_attachment().ok().flatten()?;
    serde_json::from_str(&text).ok()
}

fn write_attachment(ws: &WebSocket, attachment: &Attachment) {
    if let Ok(text) = serde_json::to_string(attachment) {
        let _ = ws.serialize_attachment(text);
    }
}

/// Sends a frame, ignoring sockets that are already closing.
fn send(ws: &WebSocket, frame: &str) {
    let _ = ws.send_with_str(frame);
}

#[wasm_bindgen]
extern "C" {
    /// A WebSocket seen through the one method a broadcast needs.
    type FrameSink;

    /// `WebSocket.send` with a string already in JS, so a frame sent to many sockets is
    /// converted from UTF-8 once instead of once per socket.
    #[wasm_bindgen(method, catch, js_name = send)]
    fn send_js(this: &FrameSink, frame: &JsString) -> std::result::Result<(), JsValue>;
}

fn send_shared(ws: &WebSocket, frame: &JsString) -> bool {
    let socket: &JsValue = ws.as_ref().as_ref();
    socket.unchecked_ref::<FrameSink>().send_js(frame).is_ok()
}

/// The live pulls of the object's sockets, kept in memory so that a broadcast does not
/// read every socket's attachment. The attachments stay the source of truth: after a
/// wake-up from hibernation the cache starts empty and is rebuilt from them on first use.
#[derive(Default)]
struct LiveSockets {
    loaded: bool,
    by_conn: HashMap<String, (WebSocket, Vec<RequestId>)>,
}

impl LiveSockets {
    fn load(&mut self, state: &State) {
        if self.loaded {
            return;
        }
        for ws in state.get_websockets() {
            let Some(mut attachment) = read_attachment(&ws) else {
                continue;
            };
            if attachment.conn.is_empty() {
                attachment.conn = new_conn_id();
                write_attachment(&ws, &attachment);
            }
            if !attachment.live.is_empty() {
                self.by_conn.insert(attachment.conn, (ws, attachment.live));
            }
        }
        self.loaded = true;
    }

    /// Mirrors a socket's attachment after its live pulls changed.
    fn update(&mut self, ws: &WebSocket, attachment: &Attachment) {
        if !self.loaded {
            return; // `load` will read the attachment
        }
        if attachment.live.is_empty() {
            self.by_conn.remove(&attachment.conn);
        } else {
            self.by_conn.insert(
                attachment.conn.clone(),
                (ws.clone(), attachment.live.clone()),
            );
        }
    }

    fn remove(&mut self, conn: &str) {
        self.by_conn.remove(conn);
    }
}

/// An HTTP-transport answer: a JSON array of RPC messages.
fn rpc_response(status: u16, messages: &[String], extra: &[(String, String)]) -> Result<Response> {
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    for (name, value) in extra {
        headers.set(name, value)?;
    }
    let body = format!("[{}]", messages.join(","));
    Ok(Response::ok(body)?
        .with_status(status)
        .with_headers(headers))
}

/// The sync Durable Object (`makeDurableObject`). Wrap it in a `#[durable_object]` struct
/// and forward the handlers to it (see the [module docs](super)).
pub struct SyncBackendObject {
    state: State,
    env: Env,
    options: SyncObjectOptions,
    backend: RefCell<Option<Rc<Backend>>>,
    subscriptions: Rc<Subscriptions>,
    live: RefCell<LiveSockets>,
}

/// Where a request came from, which decides how its replies are shaped and how a live pull
/// is kept.
#[derive(Clone, Copy)]
enum Caller<'a> {
    Socket(&'a WebSocket),
    Http,
    DoRpc,
}

impl SyncBackendObject {
    /// The object for `state`, configured with `options`.
    pub fn new(state: State, env: Env, options: SyncObjectOptions) -> Self {
        // Clients ping every few seconds; answer without waking the object.
        if let Ok(pair) = WebSocketRequestResponsePair::new(PING, PONG) {
            state.set_websocket_auto_response(&pair);
        }
        let subscriptions = Subscriptions::new(state.storage().sql(), env.clone());
        SyncBackendObject {
            state,
            env,
            options,
            backend: RefCell::new(None),
            subscriptions,
            live: RefCell::new(LiveSockets::default()),
        }
    }

    /// Handles a request forwarded by the Worker: a WebSocket upgrade or an HTTP RPC call.
    pub async fn fetch(&self, mut req: Request) -> Result<Response> {
        // Consume the body before any answer, refusals included (see `read_body`).
        let body = read_body(&mut req, MAX_FRAME_BYTES).await?;
        let url = req.url()?;
        let params = match parse_sync_query(url.query().unwrap_or("")) {
            Ok(Some(params)) => params,
            Ok(None) => return Response::error("Invalid request: not a sync request", 400),
            Err(e) => return Response::error(format!("Invalid sync request: {e}"), 400),
        };
        if !self.options.transports().allows(params.transport) {
            return Response::error(
                format!(
                    "The {} transport is disabled on this server",
                    params.transport.as_str()
                ),
                400,
            );
        }
        let all_headers = header_map(req.headers());
        let forwarded = self
            .options
            .select_headers(all_headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match params.transport {
            Transport::Ws => self.accept_socket(&req, params, forwarded),
            Transport::Http => self.serve_http(&req, body, params, forwarded).await,
            Transport::DoRpc => Response::error("do-rpc is not served over fetch", 400),
        }
    }

    /// Handles a WebSocket frame.
    pub async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        match message {
            WebSocketIncomingMessage::String(text) if text.len() > MAX_FRAME_BYTES => {
                let reason = format!(
                    "frame of {} bytes is over the {MAX_FRAME_BYTES}-byte limit",
                    text.len()
                );
                let _ = ws.close(Some(CLOSE_MESSAGE_TOO_BIG), Some(reason));
            }
            WebSocketIncomingMessage::String(text) => self.on_frame(&ws, &text).await,
            WebSocketIncomingMessage::Binary(_) => send(
                &ws,
                &encode_defect("binary frames are not supported: send JSON text frames"),
            ),
        }
        Ok(())
    }

    /// Handles a WebSocket close: completes the closing handshake.
    pub async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        self.forget(&ws);
        let _ = ws.close(Some(1000), Some("closed"));
        Ok(())
    }

    /// Handles a WebSocket error: the socket gets no more broadcasts.
    pub async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.forget(&ws);
        Ok(())
    }

    fn forget(&self, ws: &WebSocket) {
        if let Some(attachment) = read_attachment(ws) {
            self.live.borrow_mut().remove(&attachment.conn);
        }
    }

    fn accept_socket(
        &self,
        req: &Request,
        params: SyncParams,
        headers: BTreeMap<String, String>,
    ) -> Result<Response> {
        let upgrade = req.headers().get("Upgrade")?;
        if let Some(Route::Reject { status, message }) =
            upgrade_rejection(&params, upgrade.as_deref())
        {
            return Response::error(message, status);
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        write_attachment(
            &pair.server,
            &Attachment {
                conn: new_conn_id(),
                store_id: params.store_id.as_str().to_owned(),
                payload: params.payload,
                live: Vec::new(),
                headers,
            },
        );
        Response::from_websocket(pair.client)
    }

    async fn serve_http(
        &self,
        req: &Request,
        body: Option<Vec<u8>>,
        params: SyncParams,
        headers: BTreeMap<String, String>,
    ) -> Result<Response> {
        let extra = &self.options.response_headers;
        let defect =
            |status: u16, message: &str| rpc_response(status, &[encode_defect(message)], extra);
        if req.method() != Method::Post {
            return defect(405, "the http transport expects POST requests");
        }
        let content_type = req.headers().get("Content-Type")?.unwrap_or_default();
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return defect(400, "expected Content-Type: application/json");
        }
        let Some(body) = body else {
            return defect(413, "request body is larger than 1 MiB");
        };
        let Ok(body) = String::from_utf8(body) else {
            return defect(400, "request body is not UTF-8 text");
        };
        let (id, rpc) = match decode_client_message(&body, Transport::Http) {
            Ok(ClientMessage::Request { id, rpc }) => (id, rpc),
            Ok(_) => return defect(400, "expected a single Request message"),
            Err(DecodeError::InvalidPayload { id, rpc, message }) => {
                return rpc_response(200, &[invalid_request(&id, &rpc, &message)], extra);
            }
            Err(e) => return defect(400, &e.to_string()),
        };
        let context = HookContext {
            store_id: params.store_id.as_str().to_owned(),
            payload: params.payload,
            headers,
        };
        let mut messages = Vec::new();
        self.run(&id, rpc, &context, Caller::Http, &mut |m| messages.push(m))
            .await;
        rpc_response(200, &messages, extra)
    }

    /// The store's backend, opened on first use (also after hibernation).
    fn backend(&self, store_id: &StoreId) -> std::result::Result<Rc<Backend>, SyncError> {
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
        let storage = self.state.storage();
        let events = match self.options.storage_kind() {
            Storage::D1 { binding } => {
                let db = self
                    .env
                    .d1(binding)
                    .map_err(|e| unavailable(format!("D1 binding {binding}: {e}")))?;
                EventStore::D1(D1EventLog::new(db, store_id.clone()))
            }
            Storage::DoSqlite => EventStore::DoSqlite(DoSqliteEventLog::new(storage, store_id)),
        };
        let context = ContextRow::open(
            self.state.storage().sql(),
            store_id.as_str(),
            new_backend_id,
        )
        .map_err(|e| unavailable(e.0))?;
        let backend = Rc::new(SyncBackend::new(
            store_id.clone(),
            context.backend_id().to_owned(),
            events,
            context,
        ));
        *self.backend.borrow_mut() = Some(backend.clone());
        Ok(backend)
    }

    /// Serves a DO-RPC call (`SyncBackendRpcInterface.rpc`) from another Durable Object. The
    /// JS side unpacks the msgpack request into `requests_json` (the array of RPC messages)
    /// and packs the returned `{"stream":…,"messages":[…]}` back (see `encode_do_rpc_reply`).
    /// Payload validation does not apply, as in `@livestore/sync-cf`.
    pub async fn rpc(&self, requests_json: &str) -> String {
        let reply = |stream: bool, messages: &[String]| encode_do_rpc_reply(stream, messages);
        if !self.options.transports().allows(Transport::DoRpc) {
            return reply(
                false,
                &[encode_defect(
                    "the do-rpc transport is disabled on this server",
                )],
            );
        }
        let requests = match decode_do_rpc_requests(requests_json) {
            Ok(requests) => requests,
            Err(e) => return reply(false, &[encode_defect(&e.to_string())]),
        };
        let single = requests.len() == 1;
        let mut stream = false;
        let mut messages = Vec::new();
        for request in requests {
            let (id, rpc) = match decode_client_message(request.get(), Transport::DoRpc) {
                Ok(ClientMessage::Request { id, rpc }) => (id, rpc),
                Ok(_) => continue, // acks and interrupts mean nothing here
                Err(DecodeError::InvalidPayload { id, rpc, message }) => {
                    messages.push(invalid_request(&id, &rpc, &message));
                    continue;
                }
                Err(DecodeError::UnknownRpc { id, tag }) => {
                    messages.push(encode_die(&id, &format!("Unknown request tag: {tag}")));
                    continue;
                }
                Err(e) => {
                    messages.push(encode_defect(&e.to_string()));
                    continue;
                }
            };
            // A lone streaming call is answered as a stream, as the client expects.
            stream |= single && matches!(rpc, Rpc::Pull(_));
            let context = HookContext {
                store_id: rpc.store_id().to_owned(),
                payload: rpc.payload().cloned(),
                headers: BTreeMap::new(),
            };
            self.run(&id, rpc, &context, Caller::DoRpc, &mut |m| messages.push(m))
                .await;
        }
        reply(stream, &messages)
    }

    async fn on_frame(&self, ws: &WebSocket, text: &str) {
        let (id, rpc) = match decode_client_message(text, Transport::Ws) {
            Ok(ClientMessage::Request { id, rpc }) => (id, rpc),
            Ok(ClientMessage::Ping) => return send(ws, PONG),
            Ok(ClientMessage::Ack(_) | ClientMessage::Eof) => return,
            Ok(ClientMessage::Interrupt(id)) => {
                if let Some(mut attachment) = read_attachment(ws) {
                    attachment.live.retain(|live| *live != id);
                    write_attachment(ws, &attachment);
                    self.live.borrow_mut().update(ws, &attachment);
                }
                return;
            }
            Err(DecodeError::InvalidPayload { id, rpc, message }) => {
                return send(ws, &invalid_request(&id, &rpc, &message));
            }
            Err(e) => return send(ws, &encode_defect(&e.to_string())),
        };
        let Some(attachment) = read_attachment(ws) else {
            return send(ws, &encode_defect("connection state lost; reconnect"));
        };
        let context = attachment.context();
        self.run(&id, rpc, &context, Caller::Socket(ws), &mut |m| {
            send(ws, &m)
        })
        .await;
    }

    /// Runs one RPC, writing its reply messages to `out`.
    async fn run(
        &self,
        id: &RequestId,
        rpc: Rpc,
        context: &HookContext,
        caller: Caller<'_>,
        out: &mut impl FnMut(String),
    ) {
        let backend = match StoreId::parse(&context.store_id)
            .map_err(|e| SyncError::unknown("InvalidStoreError", e.to_string()))
            .and_then(|store_id| self.backend(&store_id))
        {
            Ok(backend) => backend,
            Err(e) => return out(encode_failure(id, &e)),
        };
        match rpc {
            Rpc::Pull(request) => {
                self.pull(&backend, id, &request, context, caller, out)
                    .await
            }
            Rpc::Push(request) => self.push(&backend, id, request, context, out).await,
            Rpc::Ping(_) => out(encode_success(id, HTTP_PONG_VALUE)),
        }
    }

    async fn pull(
        &self,
        backend: &Backend,
        id: &RequestId,
        request: &PullRequest,
        context: &HookContext,
        caller: Caller<'_>,
        out: &mut impl FnMut(String),
    ) {
        if let Some(on_pull) = &self.options.on_pull {
            let message = PullMessage {
                cursor: request.cursor.clone().into_option(),
                live: request.live || request.rpc_context.is_some(),
            };
            if let Err(message) = on_pull(message, context.clone()).await {
                return out(encode_failure(id, &rejected_by_hook("onPull", message)));
            }
        }
        // Pages are kept for `on_pull_res` only when it is set.
        let keep = self.options.on_pull_res.is_some();
        let mut seen: Vec<PullPage> = Vec::new();
        let mut emit = |page: PullPage| {
            let chunk = match caller {
                Caller::DoRpc => encode_chunk(id, &[&with_rpc_request_id(&page.json, id)]),
                _ => encode_chunk(id, &[&page.json]),
            };
            out(chunk);
            if keep {
                seen.push(page);
            }
        };
        let mut result = backend.pull(request, &mut emit).await;
        // WebSocket live pulls stay open; DO-RPC ones end and are called back later.
        let stays_open = matches!(caller, Caller::Socket(_)) && request.live;
        if let Ok(reached) = result {
            result = match (caller, &request.rpc_context) {
                (Caller::Socket(ws), _) if request.live => backend
                    .go_live(reached, &mut emit, || self.subscribe(ws, id))
                    .await
                    .map(|()| reached),
                (Caller::DoRpc, Some(rpc_context)) => {
                    let mut subscribed = Ok(());
                    backend
                        .go_live(reached, &mut emit, || {
                            subscribed = self.subscriptions.subscribe(
                                &rpc_context.caller_context,
                                &request.store_id,
                                id,
                                request.payload.as_ref(),
                            );
                        })
                        .await
                        .and_then(|()| {
                            subscribed.map_err(|e| {
                                SyncError::unknown("StorageError", format!("subscribe: {e}"))
                            })
                        })
                        .map(|()| reached)
                }
                _ => Ok(reached),
            };
        }
        match &result {
            Ok(_) if stays_open => {}
            Ok(_) => out(encode_stream_end(id)),
            Err(error) => out(encode_failure(id, error)),
        }
        if let Some(on_pull_res) = &self.options.on_pull_res {
            for page in seen {
                on_pull_res(Ok(page), context.clone()).await;
            }
            if let Err(error) = result {
                on_pull_res(Err(error), context.clone()).await;
            }
        }
    }

    async fn push(
        &self,
        backend: &Backend,
        id: &RequestId,
        request: PushRequest,
        context: &HookContext,
        out: &mut impl FnMut(String),
    ) {
        let batch_size = request.batch.len();
        let mut result = Ok(());
        if let Some(on_push) = self.options.on_push.as_ref().filter(|_| batch_size > 0) {
            let message = PushMessage {
                batch: request.batch.clone(),
                backend_id: request.backend_id.clone().into_option(),
            };
            if let Err(message) = on_push(message, context.clone()).await {
                result = Err(rejected_by_hook("onPush", message));
            }
        }
        if result.is_ok() {
            result = backend
                .push(request, now_iso(), |pages| self.broadcast(&pages))
                .await;
        }
        match &result {
            Ok(()) => out(encode_success(id, PUSH_ACK_VALUE)),
            Err(error) => out(encode_failure(id, error)),
        }
        if let Some(on_push_res) = &self.options.on_push_res {
            on_push_res(PushOutcome { batch_size, result }, context.clone()).await;
        }
    }

    /// Sends the live responses of an accepted push to every live pull of every socket, and
    /// queues them for the DO-RPC subscribers.
    fn broadcast(&self, pages: &[PullPage]) {
        let json: Vec<String> = pages.iter().map(|p| p.json.clone()).collect();
        self.subscriptions
            .publish(&json, |pump| self.state.wait_until(pump));
        let mut live = self.live.borrow_mut();
        live.load(&self.state);
        // Clients number their requests alike, so most sockets share a live pull id: each
        // distinct id's frames are encoded (and handed to JS) once.
        let mut frames: HashMap<&RequestId, Vec<JsString>> = HashMap::new();
        let mut gone = Vec::new();
        for (conn, (ws, ids)) in &live.by_conn {
            for id in ids {
                let encoded = frames.entry(id).or_insert_with(|| {
                    pages
                        .iter()
                        .map(|page| JsString::from(encode_chunk(id, &[&page.json])))
                        .collect()
                });
                if !encoded.iter().all(|frame| send_shared(ws, frame)) {
                    gone.push(conn.clone());
                }
            }
        }
        drop(frames);
        for conn in gone {
            live.remove(&conn);
        }
    }

    /// Registers a live pull on its socket.
    fn subscribe(&self, ws: &WebSocket, id: &RequestId) {
        if let Some(mut attachment) = read_attachment(ws) {
            if !attachment.live.contains(id) {
                attachment.live.push(id.clone());
            }
            write_attachment(ws, &attachment);
            self.live.borrow_mut().update(ws, &attachment);
        }
    }
}

/// A random connection id (see [`Attachment::conn`]).
fn new_conn_id() -> String {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 12];
    if getrandom::getrandom(&mut random).is_err() {
        // Without crypto randomness: the clock and a counter, unique within the isolate.
        let now = js_sys::Date::now().to_bits().to_le_bytes();
        let count = FALLBACK.fetch_add(1, Ordering::Relaxed).to_le_bytes();
        random[..8].copy_from_slice(&now);
        random[8..].copy_from_slice(&count[..4]);
    }
    random.iter().map(|b| format!("{b:02x}")).collect()
}

fn invalid_request(id: &RequestId, rpc: &str, message: &str) -> String {
    let error = SyncError::unknown(
        "InvalidRequestError",
        format!("invalid {rpc} payload: {message}"),
    );
    encode_failure(id, &error)
}

fn rejected_by_hook(hook: &str, message: String) -> SyncError {
    SyncError::Unknown {
        cause: Defect {
            name: "Error".into(),
            message,
        },
        note: Some(format!("rejected by {hook}")),
    }
}

fn new_backend_id() -> String {
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
