//! The key that signs webhook deliveries: the secret `DS_WEBHOOK_SIGNING_KEY`, else one generated
//! once and kept by an object of its own (so every isolate signs with the same key), read once
//! per isolate; and its public half, the key set at `/v1/stream/__ds/jwks.json`.

use super::fanout::internal_call;
use super::js_error as failed;
use crate::durable_streams::webhook::{WebhookKey, JWKS_CONTENT_TYPE};
use crate::storage::do_sqlite::{exec, sql_error};
use std::cell::RefCell;
use std::rc::Rc;
use worker::{Env, Headers, Response, Result, SqlStorage, SqlStorageValue};

/// The object that keeps the generated signing key.
pub(super) const KEYS_OBJECT: &str = "/v1/stream/__ds/keys";
/// Its one operation.
pub(super) const KEY_OP: &str = "/__ds_internal/webhook-key";

thread_local! {
    static KEY: RefCell<Option<Rc<WebhookKey>>> = const { RefCell::new(None) };
}

/// The key set, as the Worker answers it.
pub(super) async fn jwks_response(env: &Env) -> Result<Response> {
    let key = webhook_key(env).await?;
    let headers = Headers::new();
    headers.set("content-type", JWKS_CONTENT_TYPE)?;
    headers.set("cache-control", "public, max-age=300")?;
    super::stream_object::common_headers(&headers, super::stream_object::Cors::Open)?;
    Ok(Response::from_bytes(key.jwks().to_string().into_bytes())?.with_headers(headers))
}

/// The signing key: the secret `DS_WEBHOOK_SIGNING_KEY` (a base64url 32-byte seed), else one
/// generated once and kept by the keys object.
pub(super) async fn webhook_key(env: &Env) -> Result<Rc<WebhookKey>> {
    if let Some(key) = KEY.with(|k| k.borrow().clone()) {
        return Ok(key);
    }
    let key = match env
        .secret("DS_WEBHOOK_SIGNING_KEY")
        .or_else(|_| env.var("DS_WEBHOOK_SIGNING_KEY"))
    {
        Ok(text) => WebhookKey::from_text(&text.to_string()).map_err(failed)?,
        Err(_) => {
            let mut answer = internal_call(env, KEYS_OBJECT, KEY_OP, String::new()).await?;
            if answer.status_code() != 200 {
                return Err(failed(format!(
                    "the keys object answered {}",
                    answer.status_code()
                )));
            }
            WebhookKey::from_text(&answer.text().await?).map_err(failed)?
        }
    };
    let key = Rc::new(key);
    KEY.with(|k| *k.borrow_mut() = Some(key.clone()));
    Ok(key)
}

/// The keys object's operation: the seed, generated on first use.
pub(super) fn serve_key(sql: &SqlStorage) -> Result<Response> {
    exec(
        sql,
        "CREATE TABLE IF NOT EXISTS ds_webhook_key (id INTEGER PRIMARY KEY CHECK (id = 1), seed TEXT NOT NULL) STRICT",
        Vec::new(),
        "create key table",
    )
    .map_err(failed)?;
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(failed)?;
    let fresh = WebhookKey::from_seed(&seed).seed_text();
    exec(
        sql,
        "INSERT OR IGNORE INTO ds_webhook_key (id, seed) VALUES (1, ?)",
        vec![SqlStorageValue::from(fresh)],
        "keep key",
    )
    .map_err(failed)?;
    let cursor = exec(
        sql,
        "SELECT seed FROM ds_webhook_key WHERE id = 1",
        Vec::new(),
        "read key",
    )
    .map_err(failed)?;
    for row in cursor.raw() {
        if let Some(SqlStorageValue::String(seed)) = row
            .map_err(sql_error("key row"))
            .map_err(failed)?
            .into_iter()
            .next()
        {
            return Response::ok(seed);
        }
    }
    Err(failed("no key kept"))
}
