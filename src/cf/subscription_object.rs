//! Durable Streams subscriptions at the edge (§6–7): each subscription is an object of the
//! streams namespace named `/v1/stream/__ds/subscriptions/<id>` (a path the Worker never
//! forwards as a stream), keeping its state ([`Subscription`]) in its SQLite. It watches the
//! streams it follows (their fan-out tells it of each append, [`super::fanout`]), wakes its
//! consumer (a signed webhook POST, or a wake event appended to the wake stream), and keeps the
//! alarm for redeliveries and leases. Patterns live in the stream registry's object, which links
//! a subscription to every stream created under its pattern.

use super::stream_object::{StreamOf, STREAMS_BINDING};
use super::subscription_delivery::{arm, arm_if_waking, drive_later};
use super::subscription_links::{
    guarded_project, refresh_tails, register_pattern, unwatch_all, watch_all, LinkBody, LINK,
    UNLINK,
};
use super::webhook_key::{serve_key, webhook_key, KEYS_OBJECT, KEY_OP};
use crate::auth::policy::authorize;
use crate::auth::token::Scope;
use crate::durable_streams::fanout::Notice;
use crate::durable_streams::subscription::{
    parse_spec, AckBody, Fresh, LinkType, SubError, Subscription,
};
use crate::durable_streams::subscription_match::{named_projects, reaches_guarded};
use crate::durable_streams::webhook::check_webhook_url;
use crate::storage::do_sqlite::{exec, sql_error};
use crate::stream::StorageError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::cell::Cell;
use std::rc::Rc;
use worker::{Date, Env, Headers, Method, Request, Response, Result, SqlStorage, SqlStorageValue};

/// Where subscriptions live, in the Worker's paths and as object names.
pub const SUBSCRIPTIONS_PREFIX: &str = "/v1/stream/__ds/subscriptions/";
/// The public key set.
pub const JWKS_PATH: &str = "/v1/stream/__ds/jwks.json";
/// Streams whose tails a claim refreshes when nothing is known to wait.
const REFRESH_LIMIT: usize = 100;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS ds_subscription (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL) STRICT";

use super::js_error as failed;

pub(super) fn now_ms() -> u64 {
    Date::now().as_millis()
}

pub(super) struct Random;
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

use super::stream_object::json_reply as json_response;

fn not_found() -> Result<Response> {
    refusal(&SubError::new(
        404,
        "SUBSCRIPTION_NOT_FOUND",
        "Subscription not found",
    ))
}

pub(super) fn refusal(error: &SubError) -> Result<Response> {
    json_response(error.status, &error.body())
}

pub(super) fn empty(status: u16) -> Result<Response> {
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
        return super::webhook_key::jwks_response(env).await;
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

/// What a subscription object keeps in memory.
#[derive(Default)]
pub(super) struct SubRun {
    pub(super) delivering: Cell<bool>,
}

/// A subscription object's state in its SQLite.
pub(super) struct Kept {
    sql: SqlStorage,
}

impl Kept {
    pub(super) fn open(sql: SqlStorage) -> std::result::Result<Kept, StorageError> {
        exec(&sql, SCHEMA, Vec::new(), "create subscription")?;
        Ok(Kept { sql })
    }

    pub(super) fn load(&self) -> std::result::Result<Option<(Subscription, String)>, StorageError> {
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

    pub(super) fn save(
        &self,
        sub: &Subscription,
        base_url: &str,
    ) -> std::result::Result<(), StorageError> {
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
            None => not_found(),
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
                .find(|s| !crate::durable_streams::subscription_match::valid_stream_name(s))
            {
                return refusal(&SubError::new(
                    400,
                    "INVALID_REQUEST",
                    format!("invalid stream {bad:?}"),
                ));
            }
            let Some((mut sub, base)) = kept.load().map_err(failed)? else {
                return not_found();
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
                return not_found();
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
                return not_found();
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
            let Some((sub, _)) = kept.load().map_err(failed)? else {
                return not_found();
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
            let Some((mut sub, base)) = kept.load().map_err(failed)? else {
                return not_found();
            };
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
                return not_found();
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
