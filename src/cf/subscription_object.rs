//! Durable Streams subscriptions at the edge (§6–7): each subscription is an object of the
//! streams namespace named `/v1/stream/__ds/subscriptions/<id>` (a path the Worker never
//! forwards as a stream), keeping its state ([`Subscription`]) in its SQLite. It watches the
//! streams it follows (their fan-out tells it of each append, [`super::fanout`]), wakes its
//! consumer (a signed webhook POST, or a wake event appended to the wake stream), and keeps the
//! alarm for redeliveries and leases. Patterns live in the stream registry's object, which links
//! a subscription to every stream created under its pattern.

use super::estuary::{Named, Watched, UNWATCH, WATCH};
use super::fanout::internal_call;
use super::stream_object::{StreamOf, STREAMS_BINDING};
use crate::auth::policy::authorize;
use crate::auth::token::Scope;
use crate::durable_streams::fanout::Notice;
use crate::durable_streams::subscription::{
    matches, named_projects, parse_spec, reaches_guarded, AckBody, Fresh, LinkType, SubError,
    Subscription,
};
use crate::durable_streams::webhook::{check_webhook_url, WebhookKey, JWKS_CONTENT_TYPE};
use crate::storage::cold_index::int;
use crate::storage::do_sqlite::{exec, sql_error};
use crate::stream::StorageError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use worker::{
    Date, Env, Headers, Method, Request, RequestInit, Response, Result, SqlStorage,
    SqlStorageValue, State,
};

/// Where subscriptions live, in the Worker's paths and as object names.
pub const SUBSCRIPTIONS_PREFIX: &str = "/v1/stream/__ds/subscriptions/";
/// The public key set.
pub const JWKS_PATH: &str = "/v1/stream/__ds/jwks.json";
/// The object that keeps the generated signing key.
const KEYS_OBJECT: &str = "/v1/stream/__ds/keys";
const KEY_OP: &str = "/__ds_internal/webhook-key";
/// The registry's subscription operations.
const LINK: &str = "/__ds_internal/subscription-link";
const UNLINK: &str = "/__ds_internal/subscription-unlink";
const TAIL: &str = "/__ds_internal/tail";
/// Streams whose tails a claim refreshes when nothing is known to wait.
const REFRESH_LIMIT: usize = 100;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS ds_subscription (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL) STRICT";
const PATTERNS: &str = "CREATE TABLE IF NOT EXISTS ds_subscription_patterns (name TEXT PRIMARY KEY NOT NULL, pattern TEXT NOT NULL) STRICT";

thread_local! {
    static KEY: RefCell<Option<Rc<WebhookKey>>> = const { RefCell::new(None) };
}

fn failed(e: impl std::fmt::Display) -> worker::Error {
    worker::Error::RustError(e.to_string())
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

struct Random;
impl Fresh for Random {
    /// 18 random bytes; empty if the runtime has none (a subscription without a secret takes
    /// no token).
    fn token(&mut self) -> String {
        use base64::Engine;
        let mut bytes = [0u8; 18];
        match getrandom::getrandom(&mut bytes) {
            Ok(()) => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
            Err(e) => {
                worker::console_error!("no randomness: {e}");
                String::new()
            }
        }
    }
}

/// Whether the Worker routes `path` here.
pub fn is_subscription_path(path: &str) -> bool {
    path.starts_with(SUBSCRIPTIONS_PREFIX) || path == JWKS_PATH
}

fn json_response(status: u16, value: &Value) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("cache-control", "no-store")?;
    super::stream_object::common_headers(&headers, super::stream_object::Cors::Open)?;
    Ok(Response::from_bytes(value.to_string().into_bytes())?
        .with_status(status)
        .with_headers(headers))
}

fn refusal(error: &SubError) -> Result<Response> {
    json_response(error.status, &error.body())
}

fn empty(status: u16) -> Result<Response> {
    let headers = Headers::new();
    super::stream_object::common_headers(&headers, super::stream_object::Cors::Open)?;
    Ok(Response::empty()?.with_status(status).with_headers(headers))
}

/// The Worker's side: the key set, and each subscription's requests to its object.
pub async fn worker_fetch(req: Request, env: &Env) -> Result<Response> {
    let path = req.path();
    if path == JWKS_PATH {
        if req.method() != Method::Get && req.method() != Method::Head {
            return refusal(&SubError::new(405, "METHOD_NOT_ALLOWED", "GET only"));
        }
        let key = webhook_key(env).await?;
        let headers = Headers::new();
        headers.set("content-type", JWKS_CONTENT_TYPE)?;
        headers.set("cache-control", "public, max-age=300")?;
        super::stream_object::common_headers(&headers, super::stream_object::Cors::Open)?;
        return Ok(Response::from_bytes(key.jwks().to_string().into_bytes())?.with_headers(headers));
    }
    let rest = path.strip_prefix(SUBSCRIPTIONS_PREFIX).unwrap_or_default();
    let id = rest.split('/').next().unwrap_or_default();
    if !valid_id(id) {
        return refusal(&SubError::new(
            400,
            "INVALID_REQUEST",
            "invalid subscription id",
        ));
    }
    let name = format!("{SUBSCRIPTIONS_PREFIX}{id}");
    env.durable_object(STREAMS_BINDING)?
        .id_from_name(&name)?
        .get_stub()?
        .fetch_with_request(req)
        .await
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// The signing key: the secret `DS_WEBHOOK_SIGNING_KEY` (a base64url 32-byte seed), else one
/// generated once and kept by the keys object.
async fn webhook_key(env: &Env) -> Result<Rc<WebhookKey>> {
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
fn serve_key(sql: &SqlStorage) -> Result<Response> {
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

/// What a subscription object keeps in memory.
#[derive(Default)]
pub(super) struct SubRun {
    delivering: Cell<bool>,
}

/// A subscription object's state in its SQLite.
struct Kept {
    sql: SqlStorage,
}

impl Kept {
    fn open(sql: SqlStorage) -> std::result::Result<Kept, StorageError> {
        exec(&sql, SCHEMA, Vec::new(), "create subscription")?;
        Ok(Kept { sql })
    }

    fn load(&self) -> std::result::Result<Option<(Subscription, String)>, StorageError> {
        let cursor = exec(
            &self.sql,
            "SELECT state FROM ds_subscription WHERE id = 1",
            Vec::new(),
            "load subscription",
        )?;
        for row in cursor.raw() {
            if let Some(SqlStorageValue::String(text)) = row
                .map_err(sql_error("subscription row"))?
                .into_iter()
                .next()
            {
                let kept: KeptState =
                    serde_json::from_str(&text).map_err(|e| StorageError(e.to_string()))?;
                return Ok(Some((kept.sub, kept.base_url)));
            }
        }
        Ok(None)
    }

    fn save(&self, sub: &Subscription, base_url: &str) -> std::result::Result<(), StorageError> {
        let text = serde_json::to_string(&KeptStateRef { sub, base_url })
            .map_err(|e| StorageError(e.to_string()))?;
        exec(
            &self.sql,
            "INSERT INTO ds_subscription (id, state) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            vec![SqlStorageValue::from(text)],
            "save subscription",
        )?;
        Ok(())
    }

    fn remove(&self) -> std::result::Result<(), StorageError> {
        exec(
            &self.sql,
            "DELETE FROM ds_subscription",
            Vec::new(),
            "delete subscription",
        )?;
        Ok(())
    }
}

#[derive(Deserialize)]
struct KeptState {
    sub: Subscription,
    base_url: String,
}

#[derive(Serialize)]
struct KeptStateRef<'a> {
    sub: &'a Subscription,
    base_url: &'a str,
}

/// A link from the registry: follow `stream` (relative) because it matched the pattern.
#[derive(Serialize, Deserialize)]
struct LinkBody {
    stream: String,
}

/// Whether the object named `name` is a subscription.
pub(super) fn is_subscription_object(name: Option<&str>) -> bool {
    name.is_some_and(|n| n.starts_with(SUBSCRIPTIONS_PREFIX))
}

/// Serves a request to a subscription object (or the keys object); `None` when `name` is
/// neither.
pub(super) async fn serve(
    stream: &Rc<StreamOf>,
    run: &Rc<SubRun>,
    req: &Request,
    body: &[u8],
) -> Option<Result<Response>> {
    let state = stream.platform().state();
    let name = stream.platform().name()?;
    let name = name.as_str();
    if name == KEYS_OBJECT {
        return Some(if req.path() == KEY_OP {
            serve_key(&state.storage().sql())
        } else {
            empty(404)
        });
    }
    if !name.starts_with(SUBSCRIPTIONS_PREFIX) {
        return None;
    }
    Some(serve_sub(stream, run, name, req, body).await)
}

async fn serve_sub(
    stream: &Rc<StreamOf>,
    run: &Rc<SubRun>,
    name: &str,
    req: &Request,
    body: &[u8],
) -> Result<Response> {
    let state = stream.platform().state();
    let env = &stream.platform().env().clone();
    let kept = Kept::open(state.storage().sql()).map_err(failed)?;
    let path = req.path();
    let id = name.strip_prefix(SUBSCRIPTIONS_PREFIX).unwrap_or_default();
    // Notices from followed streams, and links from the registry.
    if path == super::fanout::NOTIFY_PATH {
        let notice: Notice = serde_json::from_slice(body)?;
        let Some((mut sub, base)) = kept.load().map_err(failed)? else {
            return empty(404);
        };
        let source = notice
            .source
            .strip_prefix("/v1/stream/")
            .unwrap_or(&notice.source);
        if !sub.streams.contains_key(source) {
            return empty(404);
        }
        sub.on_tail(source, notice.tail);
        sub.maybe_wake(&mut Random);
        kept.save(&sub, &base).map_err(failed)?;
        arm_if_waking(state, &kept).await?;
        drive_later(stream, run, name);
        return empty(204);
    }
    if path == LINK {
        let link: LinkBody = serde_json::from_slice(body)?;
        let Some((mut sub, base)) = kept.load().map_err(failed)? else {
            return empty(404);
        };
        if sub.follow(&link.stream, LinkType::Glob, 0).unwrap_or(false) {
            kept.save(&sub, &base).map_err(failed)?;
            watch_all(env, name, &kept, std::slice::from_ref(&link.stream), true).await?;
            arm_if_waking(state, &kept).await?;
            drive_later(stream, run, name);
        }
        return empty(204);
    }
    if path == UNLINK {
        let link: LinkBody = serde_json::from_slice(body)?;
        if let Some((mut sub, base)) = kept.load().map_err(failed)? {
            if sub.unfollow(&link.stream) {
                kept.save(&sub, &base).map_err(failed)?;
            }
        }
        return empty(204);
    }
    let url = req.url()?;
    let base = format!(
        "{}://{}",
        url.scheme(),
        url.host_str()
            .map(|h| match url.port() {
                Some(port) => format!("{h}:{port}"),
                None => h.to_owned(),
            })
            .unwrap_or_default()
    );
    let rest = path.strip_prefix(name).unwrap_or_default();
    let token = req
        .headers()
        .get("authorization")?
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()));
    let method = req.method();
    let key = match &method {
        Method::Put | Method::Get => Some(webhook_key(env).await?),
        _ => None,
    };
    let signing = |sub: &Subscription| {
        key.as_ref()
            .filter(|_| sub.spec.webhook.is_some())
            .map(|k| (k.kid().to_owned(), format!("{base}{JWKS_PATH}")))
    };
    let show = |sub: &Subscription| {
        let signing = signing(sub);
        sub.to_json(
            signing
                .as_ref()
                .map(|(kid, url)| (kid.as_str(), url.as_str())),
        )
    };
    // A subscription that names a project with tokens is managed, read and claimed with one of
    // them; callbacks, acks and releases carry their wake's token instead.
    if !matches!(rest, "/callback" | "/ack" | "/release") {
        let need = if method == Method::Get || rest == "/claim" {
            Scope::Read
        } else {
            Scope::Write
        };
        let mut pattern = None;
        let mut streams = Vec::new();
        let mut wake_stream = None;
        if let Some((stored, _)) = kept.load().map_err(failed)? {
            pattern = stored.spec.pattern;
            streams = stored.spec.streams;
            wake_stream = stored.spec.wake_stream;
        }
        if method == Method::Put || rest == "/streams" {
            if let Ok(asked) = serde_json::from_slice::<Value>(body) {
                if let Some(p) = asked["pattern"].as_str() {
                    pattern = Some(p.to_owned());
                }
                if let Some(w) = asked["wake_stream"].as_str() {
                    wake_stream = Some(w.to_owned());
                }
                let named = asked["streams"].as_array().into_iter().flatten();
                streams.extend(named.filter_map(|s| s.as_str().map(str::to_owned)));
            }
        }
        let authorization = req.headers().get("authorization")?;
        for project in named_projects(pattern.as_deref(), &streams, wake_stream.as_deref()) {
            if let Some(config) = super::projects::project_config(env, project).await? {
                let allowed = authorize(
                    &config,
                    project,
                    None,
                    need,
                    authorization.as_deref(),
                    super::now_s(),
                );
                if let Err(denied) = allowed {
                    return super::projects::denied_response(&denied);
                }
            }
        }
    }
    match (method, rest) {
        (Method::Put, "") => {
            let allow_loopback = env
                .var("DS_WEBHOOK_ALLOW_LOOPBACK")
                .is_ok_and(|v| v.to_string().trim() == "true");
            let spec = match parse_spec(body, |u| check_webhook_url(u, allow_loopback).map(|_| ()))
            {
                Ok(spec) => spec,
                Err(e) => return refusal(&e),
            };
            if let Some((sub, _)) = kept.load().map_err(failed)? {
                if sub.spec == spec {
                    return json_response(200, &show(&sub));
                }
                return refusal(&SubError::new(
                    409,
                    "SUBSCRIPTION_EXISTS",
                    "a different subscription has this id",
                ));
            }
            let mut sub = Subscription::new(id, spec, now_ms(), &mut Random);
            kept.save(&sub, &base).map_err(failed)?;
            // Explicit streams are watched from their tail now (or their start, once created).
            let explicit: Vec<String> = sub.spec.streams.clone();
            watch_all(env, name, &kept, &explicit, false).await?;
            if let Some(pattern) = sub.spec.pattern.clone() {
                let existing = register_pattern(env, name, Some(&pattern)).await?;
                if let Some((loaded, _)) = kept.load().map_err(failed)? {
                    sub = loaded;
                }
                // All followed first, then each watched (a watch saves the state it reads).
                let mut followed = Vec::new();
                for stream in existing {
                    if guarded_project(env, &stream).await? && !reaches_guarded(&pattern, &stream) {
                        continue;
                    }
                    if sub.follow(&stream, LinkType::Glob, 0).unwrap_or(false) {
                        followed.push(stream);
                    }
                }
                kept.save(&sub, &base).map_err(failed)?;
                watch_all(env, name, &kept, &followed, false).await?;
            }
            let sub = kept.load().map_err(failed)?.map(|(s, _)| s).unwrap_or(sub);
            json_response(201, &show(&sub))
        }
        (Method::Get, "") => match kept.load().map_err(failed)? {
            Some((sub, _)) => json_response(200, &show(&sub)),
            None => refusal(&SubError::new(
                404,
                "SUBSCRIPTION_NOT_FOUND",
                "Subscription not found",
            )),
        },
        (Method::Delete, "") => {
            let Some((sub, _)) = kept.load().map_err(failed)? else {
                return empty(204);
            };
            kept.remove().map_err(failed)?;
            if sub.spec.pattern.is_some() {
                register_pattern(env, name, None).await?;
            }
            unwatch_all(env, name, sub.streams.keys().cloned()).await;
            empty(204)
        }
        (Method::Post, "/streams") => {
            #[derive(Deserialize)]
            struct Add {
                streams: Vec<String>,
            }
            let Ok(add) = serde_json::from_slice::<Add>(body) else {
                return refusal(&SubError::new(
                    400,
                    "INVALID_REQUEST",
                    "the body must be {\"streams\": [...]}",
                ));
            };
            if let Some(bad) = add
                .streams
                .iter()
                .find(|s| !crate::durable_streams::subscription::valid_stream_name(s))
            {
                return refusal(&SubError::new(
                    400,
                    "INVALID_REQUEST",
                    format!("invalid stream {bad:?}"),
                ));
            }
            let Some((mut sub, base)) = kept.load().map_err(failed)? else {
                return refusal(&SubError::new(
                    404,
                    "SUBSCRIPTION_NOT_FOUND",
                    "Subscription not found",
                ));
            };
            for stream in &add.streams {
                if let Err(e) = sub.follow(stream, LinkType::Explicit, 0) {
                    return refusal(&e);
                }
            }
            kept.save(&sub, &base).map_err(failed)?;
            watch_all(env, name, &kept, &add.streams, false).await?;
            empty(204)
        }
        (Method::Delete, rest) if rest.starts_with("/streams/") => {
            let encoded = rest.trim_start_matches("/streams/");
            let stream = percent_encoding::percent_decode_str(encoded)
                .decode_utf8_lossy()
                .into_owned();
            let Some((mut sub, base)) = kept.load().map_err(failed)? else {
                return refusal(&SubError::new(
                    404,
                    "SUBSCRIPTION_NOT_FOUND",
                    "Subscription not found",
                ));
            };
            if !sub.unfollow(&stream) {
                return refusal(&SubError::new(
                    404,
                    "NOT_FOUND",
                    "the subscription does not follow this stream",
                ));
            }
            kept.save(&sub, &base).map_err(failed)?;
            unwatch_all(env, name, std::iter::once(stream)).await;
            empty(204)
        }
        (Method::Post, "/callback" | "/ack" | "/release") if token.is_none() => {
            refusal(&SubError::new(
                401,
                "TOKEN_INVALID",
                "Missing or malformed Authorization header",
            ))
        }
        (Method::Post, "/callback" | "/ack") => {
            let Ok(ack) = serde_json::from_slice::<AckBody>(body) else {
                return refusal(&SubError::new(
                    400,
                    "INVALID_REQUEST",
                    "the body must be {wake_id, generation, acks, done}",
                ));
            };
            let Some((mut sub, base)) = kept.load().map_err(failed)? else {
                return refusal(&SubError::new(
                    404,
                    "SUBSCRIPTION_NOT_FOUND",
                    "Subscription not found",
                ));
            };
            match sub.ack(token.as_deref(), &ack, now_ms()) {
                Ok(next_wake) => {
                    sub.maybe_wake(&mut Random);
                    kept.save(&sub, &base).map_err(failed)?;
                    drive_later(stream, run, name);
                    json_response(200, &json!({ "ok": true, "next_wake": next_wake }))
                }
                Err(e) => refusal(&e),
            }
        }
        (Method::Post, "/claim") => {
            #[derive(Deserialize)]
            struct Claim {
                worker: String,
            }
            let Ok(claim) = serde_json::from_slice::<Claim>(body) else {
                return refusal(&SubError::new(
                    400,
                    "INVALID_REQUEST",
                    "the body must be {\"worker\": \"…\"}",
                ));
            };
            let Some((mut sub, _)) = kept.load().map_err(failed)? else {
                return refusal(&SubError::new(
                    404,
                    "SUBSCRIPTION_NOT_FOUND",
                    "Subscription not found",
                ));
            };
            if sub.wake.is_none() && !sub.pending() {
                // The streams' fan-out may not have reached us yet: ask them.
                refresh_tails(
                    env,
                    &kept,
                    sub.streams.keys().take(REFRESH_LIMIT).cloned().collect(),
                )
                .await?;
            }
            let Some((mut sub2, base)) = kept.load().map_err(failed)? else {
                return refusal(&SubError::new(
                    404,
                    "SUBSCRIPTION_NOT_FOUND",
                    "Subscription not found",
                ));
            };
            std::mem::swap(&mut sub, &mut sub2);
            let claimed = sub.claim(&claim.worker, now_ms(), &mut Random);
            // A wake the claim began is announced in the wake stream too.
            kept.save(&sub, &base).map_err(failed)?;
            drive_later(stream, run, name);
            match claimed {
                Ok(claimed) => {
                    arm(state, sub.due_ms()).await?;
                    json_response(200, &claimed)
                }
                Err(e) => refusal(&e),
            }
        }
        (Method::Post, "/release") => {
            let Ok(ack) = serde_json::from_slice::<AckBody>(body) else {
                return refusal(&SubError::new(
                    400,
                    "INVALID_REQUEST",
                    "the body must be {wake_id, generation}",
                ));
            };
            let Some((mut sub, base)) = kept.load().map_err(failed)? else {
                return refusal(&SubError::new(
                    404,
                    "SUBSCRIPTION_NOT_FOUND",
                    "Subscription not found",
                ));
            };
            match sub.release(token.as_deref(), &ack.wake_id, ack.generation, now_ms()) {
                Ok(()) => {
                    kept.save(&sub, &base).map_err(failed)?;
                    drive_later(stream, run, name);
                    empty(204)
                }
                Err(e) => refusal(&e),
            }
        }
        _ => refusal(&SubError::new(
            404,
            "NOT_FOUND",
            "no such subscription operation",
        )),
    }
}

/// Watches `streams` (relative) for the subscription `name`, a few at a time, and records
/// their tails in one save: a stream followed from its tail (`from_start` false) starts there,
/// one created under a pattern (`from_start`) is pending from its start.
async fn watch_all(
    env: &Env,
    name: &str,
    kept: &Kept,
    streams: &[String],
    from_start: bool,
) -> Result<()> {
    let named = serde_json::to_string(&Named {
        name: name.to_owned(),
        missing_ok: true,
    })?;
    let mut watched = Vec::new();
    for chunk in streams.chunks(25) {
        let asks = chunk.iter().map(|stream| {
            let named = named.clone();
            async move {
                let path = format!("/v1/stream/{stream}");
                let mut answer = internal_call(env, &path, WATCH, named).await.ok()?;
                if answer.status_code() != 200 {
                    worker::console_warn!(
                        "subscription {name} watching {stream}: {}",
                        answer.status_code()
                    );
                    return None;
                }
                let w: Watched = answer.json().await.ok()?;
                Some((stream.clone(), w.tail))
            }
        });
        watched.extend(
            futures_util::future::join_all(asks)
                .await
                .into_iter()
                .flatten(),
        );
    }
    if let Some((mut sub, base)) = kept.load().map_err(failed)? {
        for (stream, tail) in watched {
            if let Some(followed) = sub.streams.get_mut(&stream) {
                // Where it starts: its tail when watched (a notice may have come since).
                if !from_start && followed.acked == 0 {
                    followed.acked = tail;
                }
            }
            sub.on_tail(&stream, tail);
        }
        sub.maybe_wake(&mut Random);
        kept.save(&sub, &base).map_err(failed)?;
    }
    Ok(())
}

async fn unwatch_all(env: &Env, name: &str, streams: impl Iterator<Item = String>) {
    let Ok(named) = serde_json::to_string(&Named::new(name)) else {
        return;
    };
    let calls = streams.map(|stream| {
        let named = named.clone();
        async move {
            let path = format!("/v1/stream/{stream}");
            if let Err(e) = internal_call(env, &path, UNWATCH, named).await {
                worker::console_warn!("subscription {name} leaving {stream}: {e}");
            }
        }
    });
    futures_util::future::join_all(calls).await;
}

async fn refresh_tails(env: &Env, kept: &Kept, streams: Vec<String>) -> Result<()> {
    let asks = streams.iter().map(|stream| async move {
        let path = format!("/v1/stream/{stream}");
        let mut answer = internal_call(env, &path, TAIL, String::new()).await.ok()?;
        let tail: u64 = answer.text().await.ok()?.trim().parse().ok()?;
        Some((stream.clone(), tail))
    });
    let tails = futures_util::future::join_all(asks).await;
    if let Some((mut sub, base)) = kept.load().map_err(failed)? {
        for (stream, tail) in tails.into_iter().flatten() {
            sub.on_tail(&stream, tail);
        }
        kept.save(&sub, &base).map_err(failed)?;
    }
    Ok(())
}

/// The stream objects' side: a stream's tail, for a subscription's claim.
pub(super) async fn serve_tail(stream: &super::stream_object::StreamOf) -> Result<Response> {
    let tail = stream.log().tail().await.map_err(failed)?;
    Response::ok(tail.get().to_string())
}

/// Tells subscription `name` that the stream at `source` (its path) was deleted.
pub(super) async fn unlink(env: &Env, name: &str, source: &str) -> Result<()> {
    let stream = source
        .strip_prefix("/v1/stream/")
        .unwrap_or(source)
        .to_owned();
    let body = serde_json::to_string(&LinkBody { stream })?;
    internal_call(env, name, UNLINK, body).await?;
    Ok(())
}

/// Is `path` the tail operation.
pub(super) fn is_tail_op(path: &str) -> bool {
    path == TAIL
}

/// Records (or, with `None`, drops) the pattern of subscription `name` in the stream registry;
/// the names of existing streams it matches (relative).
async fn register_pattern(env: &Env, name: &str, pattern: Option<&str>) -> Result<Vec<String>> {
    let body = json!({ "name": name, "pattern": pattern }).to_string();
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let request = Request::new_with_init(
        &format!("https://registry{}pattern", super::registry::REGISTRY_PATH),
        &init,
    )?;
    let mut answer = env
        .durable_object(STREAMS_BINDING)?
        .id_from_name(super::registry::STREAM_REGISTRY)?
        .get_stub()?
        .fetch_with_request(request)
        .await?;
    if answer.status_code() != 200 {
        return Err(failed(format!(
            "the registry answered {}",
            answer.status_code()
        )));
    }
    answer.json().await
}

/// The registry's side: keeps a pattern (answering the existing streams it matches), and links
/// the subscriptions whose patterns match a stream that came into being.
pub(super) fn serve_pattern(sql: &SqlStorage, body: &[u8]) -> Result<Response> {
    #[derive(Deserialize)]
    struct PatternBody {
        name: String,
        pattern: Option<String>,
    }
    let request: PatternBody = serde_json::from_slice(body)?;
    exec(sql, PATTERNS, Vec::new(), "create patterns").map_err(failed)?;
    let Some(pattern) = request.pattern else {
        exec(
            sql,
            "DELETE FROM ds_subscription_patterns WHERE name = ?",
            vec![SqlStorageValue::from(request.name)],
            "drop pattern",
        )
        .map_err(failed)?;
        return Response::from_json(&Vec::<String>::new());
    };
    exec(
        sql,
        "INSERT INTO ds_subscription_patterns (name, pattern) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET pattern = excluded.pattern",
        vec![SqlStorageValue::from(request.name), SqlStorageValue::from(pattern.clone())],
        "keep pattern",
    )
    .map_err(failed)?;
    // The registry's table of streams (see super::registry), when it exists yet.
    let mut existing = Vec::new();
    let mut after = String::new();
    loop {
        let Ok(cursor) = exec(
            sql,
            "SELECT name FROM admin_registry WHERE name > ? ORDER BY name LIMIT ?",
            vec![SqlStorageValue::from(after.clone()), int(1_000)],
            "list streams",
        ) else {
            break;
        };
        let mut page = 0;
        for row in cursor.raw() {
            let row = row.map_err(sql_error("registry row")).map_err(failed)?;
            if let Some(SqlStorageValue::String(path)) = row.into_iter().next() {
                page += 1;
                if let Some(stream) = path.strip_prefix("/v1/stream/") {
                    if matches(&pattern, stream) {
                        existing.push(stream.to_owned());
                    }
                }
                after = path;
            }
        }
        if page < 1_000 || existing.len() >= crate::durable_streams::subscription::MAX_STREAMS {
            break;
        }
    }
    Response::from_json(&existing)
}

/// Whether `stream` (relative) is in a project with tokens.
async fn guarded_project(env: &Env, stream: &str) -> Result<bool> {
    let project = stream.split('/').next().unwrap_or_default();
    Ok(crate::auth::project::valid_project(project)
        && stream.contains('/')
        && super::projects::project_config(env, project)
            .await?
            .is_some())
}

/// After the registry learned of a new stream: links the subscriptions whose pattern matches.
pub(super) async fn link_created(env: &Env, sql: &SqlStorage, path: &str) -> Result<()> {
    let Some(stream) = path.strip_prefix("/v1/stream/") else {
        return Ok(());
    };
    exec(sql, PATTERNS, Vec::new(), "create patterns").map_err(failed)?;
    let cursor = exec(
        sql,
        "SELECT name, pattern FROM ds_subscription_patterns",
        Vec::new(),
        "patterns",
    )
    .map_err(failed)?;
    let mut candidates = Vec::new();
    for row in cursor.raw() {
        let row = row.map_err(sql_error("pattern row")).map_err(failed)?;
        if let [SqlStorageValue::String(name), SqlStorageValue::String(pattern)] = row.as_slice() {
            if matches(pattern, stream) {
                candidates.push((name.clone(), pattern.clone()));
            }
        }
    }
    let guarded = guarded_project(env, stream).await?;
    let linked = candidates
        .into_iter()
        .filter(|(_, pattern)| !guarded || reaches_guarded(pattern, stream))
        .map(|(name, _)| name);
    let body = serde_json::to_string(&LinkBody {
        stream: stream.to_owned(),
    })?;
    for name in linked {
        if let Err(e) = internal_call(env, &name, LINK, body.clone()).await {
            worker::console_warn!("linking {stream} to {name}: {e}");
        }
    }
    Ok(())
}

async fn arm(state: &State, due: Option<u64>) -> Result<()> {
    match due {
        Some(due) => super::fanout::arm_state(state, due).await,
        None => Ok(()),
    }
}

/// A wake not yet delivered is owed to the alarm too (an eviction before its delivery).
async fn arm_if_waking(state: &State, kept: &Kept) -> Result<()> {
    let waking = kept
        .load()
        .map_err(failed)?
        .is_some_and(|(sub, _)| sub.wake.is_some_and(|w| !w.delivered && !w.announced));
    if waking {
        arm(state, Some(now_ms().saturating_add(5_000))).await?;
    }
    Ok(())
}

/// Delivers what is owed after the request.
fn drive_later(stream: &Rc<StreamOf>, run: &Rc<SubRun>, name: &str) {
    let (owner, run, name) = (stream.clone(), run.clone(), name.to_owned());
    stream.platform().state().wait_until(async move {
        let env = owner.platform().env().clone();
        if let Err(e) = drive(owner.platform().state(), &env, &run).await {
            worker::console_warn!("subscription {name}: {e}");
        }
    });
}

/// The alarm of a subscription object: leases that ran out, retries of deliveries.
pub(super) async fn alarm(state: &State, env: &Env, run: &Rc<SubRun>) -> Result<()> {
    let kept = Kept::open(state.storage().sql()).map_err(failed)?;
    if let Some((mut sub, base)) = kept.load().map_err(failed)? {
        let now = now_ms();
        if sub.expire(now) | sub.maybe_wake(&mut Random) {
            kept.save(&sub, &base).map_err(failed)?;
        }
    }
    drive(state, env, run).await
}

/// Delivers the current wake (webhook POST, or wake event) until nothing is owed now; arms the
/// alarm for what is owed later.
async fn drive(state: &State, env: &Env, run: &Rc<SubRun>) -> Result<()> {
    if run.delivering.replace(true) {
        return Ok(());
    }
    let result = drive_inner(state, env).await;
    run.delivering.set(false);
    result
}

async fn drive_inner(state: &State, env: &Env) -> Result<()> {
    let kept = Kept::open(state.storage().sql()).map_err(failed)?;
    for _ in 0..8 {
        let Some((sub, base)) = kept.load().map_err(failed)? else {
            return Ok(());
        };
        let now = now_ms();
        let Some(wake) = sub.wake.clone() else {
            return Ok(());
        };
        if let Some(url) = sub.spec.webhook.as_ref().map(|w| w.url.clone()) {
            if wake.delivered || wake.retry_at_ms.is_some_and(|at| at > now) {
                return arm(state, sub.due_ms()).await;
            }
            let callback_url = format!("{base}{SUBSCRIPTIONS_PREFIX}{}/callback", sub.id);
            let Some(note) = sub.notification(&callback_url) else {
                return Ok(());
            };
            let outcome = post_webhook(env, &url, &note).await;
            let Some((mut sub, base)) = kept.load().map_err(failed)? else {
                return Ok(());
            };
            if sub.wake.as_ref().map(|w| &w.wake_id) != Some(&wake.wake_id) {
                continue;
            }
            let now = now_ms();
            match outcome {
                Ok(done) => sub.delivered(done, now),
                Err(e) => {
                    worker::console_warn!("webhook {url}: {e}");
                    sub.delivery_failed(now);
                }
            }
            sub.maybe_wake(&mut Random);
            kept.save(&sub, &base).map_err(failed)?;
            arm(state, sub.due_ms()).await?;
        } else if let Some(wake_stream) = sub.spec.wake_stream.clone() {
            if wake.announced {
                return arm(state, sub.due_ms()).await;
            }
            let Some(event) = sub.wake_event(now) else {
                return Ok(());
            };
            let appended = append_event(env, &wake_stream, &event).await;
            let Some((mut sub, base)) = kept.load().map_err(failed)? else {
                return Ok(());
            };
            if sub.wake.as_ref().map(|w| &w.wake_id) != Some(&wake.wake_id) {
                continue;
            }
            match appended {
                // A wake stream that does not exist is not waited for: claims still work.
                Ok(()) | Err(WakeStream::Missing) => {
                    if let Some(current) = sub.wake.as_mut() {
                        current.announced = true;
                    }
                    kept.save(&sub, &base).map_err(failed)?;
                    continue;
                }
                Err(WakeStream::Failed(e)) => {
                    worker::console_warn!("wake stream {wake_stream}: {e}");
                    return arm(state, Some(now_ms().saturating_add(5_000))).await;
                }
            }
        } else {
            return Ok(());
        }
    }
    // More rounds are owed: the alarm goes on with them.
    arm(state, Some(now_ms().saturating_add(1_000))).await
}

/// Why a wake event was not appended.
enum WakeStream {
    Missing,
    Failed(worker::Error),
}

/// POSTs a signed notification; whether its answer said `{"done": true}`.
async fn post_webhook(env: &Env, url: &str, note: &Value) -> Result<bool> {
    let key = webhook_key(env).await?;
    let body = note.to_string();
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set(
        "webhook-signature",
        &key.signature(now_ms() / 1_000, body.as_bytes()),
    )?;
    // The address as a WHATWG parser reads it (what was checked), no redirects followed.
    let url = url::Url::parse(url).map_err(failed)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(body.into()))
        .with_redirect(worker::RequestRedirect::Manual);
    let request = Request::new_with_init(url.as_str(), &init)?;
    let fetch = worker::Fetch::Request(request);
    let send = fetch.send();
    let timeout = worker::Delay::from(std::time::Duration::from_millis(WEBHOOK_TIMEOUT_MS));
    futures_util::pin_mut!(send, timeout);
    let mut answer = match futures_util::future::select(send, timeout).await {
        futures_util::future::Either::Left((answer, _)) => answer?,
        futures_util::future::Either::Right(_) => return Err(failed("no answer in time")),
    };
    if !(200..300).contains(&answer.status_code()) {
        return Err(failed(format!("answered {}", answer.status_code())));
    }
    // Only a short answer is read: `{"done": true}` or not.
    let mut bytes = Vec::new();
    if let Ok(mut body) = answer.stream() {
        use futures_util::StreamExt;
        while let Some(Ok(chunk)) = body.next().await {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > WEBHOOK_ANSWER_BYTES {
                return Ok(false);
            }
        }
    }
    Ok(serde_json::from_slice::<Value>(&bytes)
        .is_ok_and(|v| v.get("done") == Some(&Value::Bool(true))))
}

/// A receiver that has not answered in this long has failed this delivery.
const WEBHOOK_TIMEOUT_MS: u64 = 10_000;
/// The most of a receiver's answer that is read.
const WEBHOOK_ANSWER_BYTES: usize = 64 * 1024;

/// Appends a wake event to the wake stream (relative path), through its object.
async fn append_event(
    env: &Env,
    wake_stream: &str,
    event: &Value,
) -> std::result::Result<(), WakeStream> {
    append_event_to(env, wake_stream, event)
        .await
        .map_err(WakeStream::Failed)?
}

async fn append_event_to(
    env: &Env,
    wake_stream: &str,
    event: &Value,
) -> Result<std::result::Result<(), WakeStream>> {
    let path = format!("/v1/stream/{wake_stream}");
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(event.to_string().into()));
    let request = Request::new_with_init(&format!("https://streams{path}"), &init)?;
    let answer = env
        .durable_object(STREAMS_BINDING)?
        .id_from_name(&path)?
        .get_stub()?
        .fetch_with_request(request)
        .await?;
    Ok(match answer.status_code() {
        200..=299 => Ok(()),
        404 | 410 => {
            worker::console_warn!("wake stream {wake_stream} does not exist: wake event skipped");
            Err(WakeStream::Missing)
        }
        status => Err(WakeStream::Failed(failed(format!("answered {status}")))),
    })
}
