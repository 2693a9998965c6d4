//! The Worker this repository ships (feature `default-worker`): open, like `makeWorker`
//! without `validatePayload`, and configured through the same API users have, from vars:
//!
//! - `SYNC_STORAGE`: `d1` (default), `d1:<binding>` or `do-sqlite`
//! - `SYNC_TRANSPORTS`: enabled transports, default `ws,http,do-rpc`
//! - `SYNC_CORS`: `true` to answer preflights and add CORS headers (default `false`)
//! - `ADMIN_SECRET` (a secret): turns on the admin API and dashboard at `/admin/`
//! - `SYNC_AUTH_PROJECT`: the project whose tokens guard every store (`JwtAuth`); unset: open
//! - `SYNC_COLD_SEGMENTS`: `true` to move the oldest events of stores kept in DO SQLite to the
//!   `SEGMENTS` bucket (segments as `DS_SEGMENT_MESSAGES` / `DS_SEGMENT_BYTES` say)

use crate::cf::projects::JwtAuth;
use crate::cf::{AdminApi, SyncBackendObject, SyncWorker};
use crate::livestore::options::{Storage, SyncObjectOptions, Transports, WorkerOptions};
use crate::livestore::wire::{encode_defect, encode_do_rpc_reply};
use wasm_bindgen::prelude::wasm_bindgen;
use worker::{
    durable_object, event, Context, DurableObject, Env, Request, Response, Result, State,
    WebSocket, WebSocketIncomingMessage,
};

fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    crate::cf::usage::count(|u| u.worker_requests += 1);
    if crate::cf::stream_object::is_stream_path(&req.path()) {
        return crate::cf::stream_route::worker_fetch(req, &env).await;
    }
    if crate::cf::estuary::is_estuary_path(&req.path()) {
        return crate::cf::estuary::worker_fetch(req, &env).await;
    }
    if req.path().starts_with(crate::cf::projects::CONFIG_PREFIX) {
        return crate::cf::projects::config_fetch(req, &env).await;
    }
    if crate::cf::admin::is_admin_path(&req.path()) {
        let mut admin = AdminApi::new();
        if let Some(Ok(storage)) = var(&env, "SYNC_STORAGE").map(|s| Storage::parse(&s)) {
            admin = admin.storage(storage);
        }
        return admin.fetch(req, &env).await;
    }
    let cors = var(&env, "SYNC_CORS").is_some_and(|v| v.trim() == "true");
    let mut options = WorkerOptions::new().enable_cors(cors);
    if let Some(project) = var(&env, "SYNC_AUTH_PROJECT").filter(|p| !p.trim().is_empty()) {
        let auth = JwtAuth::new(project.trim());
        let env = env.clone();
        options = options.validate_payload(move |payload, context| {
            let (auth, env) = (auth.clone(), env.clone());
            async move { auth.check(&env, payload.as_ref(), &context).await }
        });
    }
    SyncWorker::new(options).fetch(req, &env).await
}

/// The `FANOUT` queue (large estuary fan-outs) and its dead-letter queue.
#[event(queue)]
async fn queue(
    batch: worker::MessageBatch<crate::durable_streams::fanout::QueuedNotice>,
    env: Env,
    _ctx: Context,
) -> Result<()> {
    crate::cf::fanout::consume(batch, &env).await
}

fn object_options(env: &Env) -> std::result::Result<SyncObjectOptions, String> {
    let mut options = SyncObjectOptions::new();
    if let Some(storage) = var(env, "SYNC_STORAGE") {
        options =
            options.storage(Storage::parse(&storage).map_err(|e| format!("SYNC_STORAGE: {e}"))?);
    }
    if var(env, "SYNC_AUTH_PROJECT").is_some_and(|p| !p.trim().is_empty()) {
        options = options.close_sockets_on_token_expiry(true);
    }
    if var(env, "SYNC_COLD_SEGMENTS").is_some_and(|v| v.trim() == "true") {
        options = options.cold_segments(crate::cf::stream_object::segment_policy(env));
    }
    if let Some(transports) = var(env, "SYNC_TRANSPORTS") {
        options = options.enabled_transports(
            Transports::parse(&transports).map_err(|e| format!("SYNC_TRANSPORTS: {e}"))?,
        );
    }
    Ok(options)
}

/// The sync Durable Object, bound as `SYNC_BACKEND_DO`. A configuration error in the vars
/// is answered on every request rather than guessed around.
#[durable_object]
pub struct SyncBackendDO(std::result::Result<SyncBackendObject, String>);

impl DurableObject for SyncBackendDO {
    fn new(state: State, env: Env) -> Self {
        let inner = object_options(&env).map(|options| SyncBackendObject::new(state, env, options));
        SyncBackendDO(inner)
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        match &self.0 {
            Ok(object) => object.fetch(req).await,
            Err(message) => Response::error(format!("Invalid configuration: {message}"), 500),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        match &self.0 {
            Ok(object) => object.alarm().await,
            Err(_) => Response::ok(""),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        match &self.0 {
            Ok(object) => object.websocket_message(ws, message).await,
            Err(_) => Ok(()),
        }
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        reason: String,
        clean: bool,
    ) -> Result<()> {
        match &self.0 {
            Ok(object) => object.websocket_close(ws, code, reason, clean).await,
            Err(_) => Ok(()),
        }
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        match &self.0 {
            Ok(object) => object.websocket_error(ws, error).await,
            Err(_) => Ok(()),
        }
    }
}

#[wasm_bindgen]
impl SyncBackendDO {
    /// DO-RPC entry, called by the JS wrapper's `rpc(payload)` with the unpacked requests
    /// as JSON; returns the reply JSON, or a stream of message JSON strings, that the wrapper
    /// packs (see `SyncBackendObject::rpc`).
    #[wasm_bindgen(js_name = rpcJson)]
    pub async fn rpc_json(&self, requests: String) -> wasm_bindgen::JsValue {
        match &self.0 {
            Ok(object) => object.rpc(&requests).await,
            Err(message) => wasm_bindgen::JsValue::from_str(&encode_do_rpc_reply(
                false,
                &[encode_defect(&format!("Invalid configuration: {message}"))],
            )),
        }
    }
}

/// The Durable Streams stream object, bound as `STREAMS`: one per stream path.
#[durable_object]
pub struct StreamObject(crate::cf::stream_object::StreamsObject);

impl DurableObject for StreamObject {
    fn new(state: State, env: Env) -> Self {
        StreamObject(crate::cf::stream_object::StreamsObject::new(state, env))
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.0.fetch(req).await
    }

    async fn alarm(&self) -> Result<Response> {
        self.0.alarm().await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        self.0.websocket_close(ws).await
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.0.websocket_close(ws).await
    }
}
