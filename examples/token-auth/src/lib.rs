//! A custom LiveStore sync Worker built on `livestore-sync-rs`:
//!
//! - clients must send `{"authToken": "<AUTH_TOKEN>"}` as their sync payload (typed, with
//!   its JSON Schema at `GET /sync/schema`);
//! - events live in each store's Durable Object SQLite;
//! - hooks write an audit trail to the D1 table `sync_audit`, with the `x-user-id` header;
//! - pushes containing a `forbidden-v1` event are rejected.

use livestore_sync_rs::cf::{SyncBackendObject, SyncWorker};
use livestore_sync_rs::livestore::options::{
    HookContext, Storage, SyncObjectOptions, Transports, WorkerOptions,
};
use livestore_sync_rs::livestore::query::Transport;
use schemars::JsonSchema;
use serde::Deserialize;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::*;

/// The sync payload clients send.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read through serde; the validator checks the raw value
struct AuthPayload {
    /// Must equal the Worker's `AUTH_TOKEN` var or secret.
    auth_token: String,
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let expected = env
        .secret("AUTH_TOKEN")
        .map(|s| s.to_string())
        .or_else(|_| env.var("AUTH_TOKEN").map(|v| v.to_string()))
        .ok();
    let options = WorkerOptions::new()
        .enable_cors(true)
        .payload_schema::<AuthPayload>()
        .validate_payload(move |payload, _ctx| {
            let expected = expected.clone();
            async move {
                let token = payload
                    .as_ref()
                    .and_then(|p| p.get("authToken"))
                    .and_then(|t| t.as_str());
                match (token, expected) {
                    (Some(token), Some(expected)) if token == expected => Ok(()),
                    (_, None) => Err("AUTH_TOKEN is not configured".to_owned()),
                    _ => Err("invalid auth token".to_owned()),
                }
            }
        });
    SyncWorker::new(options).fetch(req, &env).await
}

/// Writes one audit row; failures are logged, never fatal to sync.
async fn audit(env: &Env, hook: &str, ctx: &HookContext, batch_size: Option<usize>) {
    let row = async {
        let db = env.d1("DB")?;
        let payload = ctx.payload.as_ref().map(|p| p.to_string());
        let headers = serde_json::to_string(&ctx.headers).unwrap_or_else(|_| "{}".into());
        let at = String::from(js_sys::Date::new_0().to_iso_string());
        db.prepare(
            "INSERT INTO sync_audit (hook, storeId, payload, batchSize, headers, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&[
            hook.into(),
            ctx.store_id.as_str().into(),
            payload.map(JsValue::from).unwrap_or(JsValue::NULL),
            batch_size.map(|n| JsValue::from(n as f64)).unwrap_or(JsValue::NULL),
            headers.into(),
            at.into(),
        ])?
        .run()
        .await?;
        Ok::<(), Error>(())
    };
    if let Err(e) = row.await {
        console_error!("audit {hook} failed: {e}");
    }
}

fn options(env: &Env) -> SyncObjectOptions {
    let (push_env, push_res_env, pull_env, pull_res_env) =
        (env.clone(), env.clone(), env.clone(), env.clone());
    SyncObjectOptions::new()
        .storage(Storage::DoSqlite)
        .enabled_transports(Transports::only(&[Transport::Ws, Transport::Http]))
        .forward_headers(["x-user-id"])
        .on_push(move |message, ctx| {
            let env = push_env.clone();
            async move {
                audit(&env, "onPush", &ctx, Some(message.batch.len())).await;
                if message.batch.iter().any(|e| e.name == "forbidden-v1") {
                    return Err("forbidden event: forbidden-v1 may not be pushed".to_owned());
                }
                Ok(())
            }
        })
        .on_push_res(move |outcome, ctx| {
            let env = push_res_env.clone();
            async move {
                let size = outcome.result.is_ok().then_some(outcome.batch_size);
                audit(&env, "onPushRes", &ctx, size).await;
            }
        })
        .on_pull(move |_message, ctx| {
            let env = pull_env.clone();
            async move {
                audit(&env, "onPull", &ctx, None).await;
                Ok(())
            }
        })
        .on_pull_res(move |page, ctx| {
            let env = pull_res_env.clone();
            async move {
                audit(&env, "onPullRes", &ctx, page.ok().map(|p| p.events)).await;
            }
        })
}

/// The sync Durable Object, bound as `SYNC_BACKEND_DO`.
#[durable_object]
pub struct SyncBackendDO(SyncBackendObject);

impl DurableObject for SyncBackendDO {
    fn new(state: State, env: Env) -> Self {
        let options = options(&env);
        Self(SyncBackendObject::new(state, env, options))
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        self.0.fetch(req).await
    }

    async fn websocket_message(&self, ws: WebSocket, msg: WebSocketIncomingMessage) -> Result<()> {
        self.0.websocket_message(ws, msg).await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        reason: String,
        clean: bool,
    ) -> Result<()> {
        self.0.websocket_close(ws, code, reason, clean).await
    }

    async fn websocket_error(&self, ws: WebSocket, error: Error) -> Result<()> {
        self.0.websocket_error(ws, error).await
    }
}

#[wasm_bindgen]
impl SyncBackendDO {
    /// DO-RPC entry for the JS wrapper's `rpc(payload)` (see `entry.ts`): the reply JSON, or a
    /// stream of message JSON strings for a pull.
    #[wasm_bindgen(js_name = rpcJson)]
    pub async fn rpc_json(&self, requests: String) -> wasm_bindgen::JsValue {
        self.0.rpc(&requests).await
    }
}
