//! Estuaries at the edge: the Worker's routes under `/v1/estuary/` and the stream object's
//! internal operations that serve them. A subscribe records the session stream as a watcher
//! of the source (in the source's object, at its tail) and links the source in the session
//! stream (creating it, with the source's content type); the source's fan-out
//! ([`super::fanout`]) then tells the session of each append, and the session copies what
//! follows its mark (reading the source only when the notice did not carry it).

use super::fanout::{internal_call, FanOutRun};
use super::js_error as failed;
use super::stream_object::{plain, StreamOf};
use crate::auth::policy::{authorize, Denied};
use crate::auth::token::Scope;
use crate::durable_streams::estuary::{
    stream_path, Copied, EstuaryId, EstuaryInfo, LinkRequest, Linked, Route, SubscribeBody,
    Subscribed, SubscriptionInfo,
};
use crate::durable_streams::fanout::Notice;
use crate::storage::watchers::Watchers;
use crate::stream::{Budget, SeqNum};
use serde::{Deserialize, Serialize};
use std::rc::Rc;
use worker::{Env, Request, Response, Result};

/// Internal operations of the stream object for estuaries, under `/__ds_internal/`.
pub(super) const WATCH: &str = "/__ds_internal/watch";
const UNWATCH: &str = "/__ds_internal/unwatch";
const RENOTIFY: &str = "/__ds_internal/renotify";
const LINK: &str = "/__ds_internal/estuary-link";
const UNLINK: &str = "/__ds_internal/estuary-unlink";
const INFO: &str = "/__ds_internal/estuary-info";

/// Sessions live this long after their last subscribe (var `ESTUARY_TTL_SECONDS`).
const DEFAULT_TTL_SECONDS: u64 = 86_400;
/// Sources one estuary may have (var `ESTUARY_MAX_SOURCES`).
const DEFAULT_MAX_SOURCES: usize = 1_000;

/// A watcher by name.
#[derive(Serialize, Deserialize)]
pub(super) struct Named {
    pub name: String,
    /// Watch: a stream that does not exist (yet) is watched from its start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing_ok: bool,
}

impl Named {
    pub fn new(name: &str) -> Named {
        Named {
            name: name.to_owned(),
            missing_ok: false,
        }
    }
}

/// The source's answer to a watch.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Watched {
    /// Where the watcher watches from (the tail when it began).
    pub since: u64,
    /// The stream's tail now.
    pub tail: u64,
    pub content_type: String,
}

fn var_u64(env: &Env, name: &str) -> Option<u64> {
    env.var(name)
        .ok()
        .and_then(|v| v.to_string().trim().parse().ok())
}

fn json_error(status: u16, code: &'static str, message: impl Into<String>) -> Result<Response> {
    super::projects::denied_response(&Denied {
        status,
        code,
        message: message.into(),
    })
}

use super::stream_object::json_reply as json;

/// Whether the Worker routes `path` here.
pub fn is_estuary_path(path: &str) -> bool {
    path.starts_with(crate::durable_streams::estuary::ESTUARY_PREFIX)
}

/// The Worker's side of `/v1/estuary/…`.
pub async fn worker_fetch(mut req: Request, env: &Env) -> Result<Response> {
    if req.method() == worker::Method::Options {
        return super::stream_object::preflight();
    }
    let route = match Route::parse(req.method().as_ref(), &req.path()) {
        Ok(route) => route,
        Err(refusal) => {
            let message = String::from_utf8_lossy(&refusal.body).into_owned();
            return json_error(refusal.status, "BAD_REQUEST", message);
        }
    };
    let authorization = req.headers().get("Authorization")?;
    match route {
        Route::Subscribe { project, stream } | Route::Unsubscribe { project, stream } => {
            let subscribing = req.method() == worker::Method::Post;
            let id = match estuary_id(&mut req).await? {
                Some(Ok(id)) => id,
                Some(Err(e)) => return json_error(400, "BAD_REQUEST", e),
                None => {
                    return json_error(
                        400,
                        "BAD_REQUEST",
                        "the body must be {\"estuaryId\": \"…\"}",
                    )
                }
            };
            // The source is read; the session stream is written.
            let reach = [
                (Some(stream.as_str()), Scope::Read),
                (Some(id.as_str()), Scope::Write),
            ];
            if let Some(refused) = guard(env, &project, &reach, authorization.as_deref()).await? {
                return Ok(refused);
            }
            if subscribing {
                subscribe(env, &project, &stream, &id).await
            } else {
                unsubscribe(env, &project, &stream, &id).await
            }
        }
        Route::Info { project, id } => {
            let reach = [(Some(id.as_str()), Scope::Read)];
            if let Some(refused) = guard(env, &project, &reach, authorization.as_deref()).await? {
                return Ok(refused);
            }
            info(env, &project, &id).await
        }
        Route::Delete { project, id } => {
            let reach = [(Some(id.as_str()), Scope::Write)];
            if let Some(refused) = guard(env, &project, &reach, authorization.as_deref()).await? {
                return Ok(refused);
            }
            delete(env, &project, &id).await
        }
    }
}

/// In a project with tokens: whether the request's token reaches each stream as it needs
/// (`None`: it does; else the refusal).
async fn guard(
    env: &Env,
    project: &str,
    reach: &[(Option<&str>, Scope)],
    authorization: Option<&str>,
) -> Result<Option<Response>> {
    let Some(config) = super::projects::project_config(env, project).await? else {
        return Ok(None);
    };
    for (stream, need) in reach {
        if let Err(denied) = authorize(
            &config,
            project,
            *stream,
            *need,
            authorization,
            super::now_s(),
        ) {
            return super::projects::denied_response(&denied).map(Some);
        }
    }
    Ok(None)
}

/// The estuary id of a subscribe or unsubscribe body; `None` when the body is not one.
async fn estuary_id(req: &mut Request) -> Result<Option<Result<EstuaryId, String>>> {
    let Some(body) = super::read_body(req, 4_096).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<SubscribeBody>(&body)
        .ok()
        .map(|b| EstuaryId::parse(&b.estuary_id)))
}

async fn subscribe(env: &Env, project: &str, stream: &str, id: &EstuaryId) -> Result<Response> {
    let source = stream_path(project, stream);
    let session = stream_path(project, id.as_str());
    if source == session {
        return json_error(400, "BAD_REQUEST", "an estuary cannot subscribe to itself");
    }
    let named = serde_json::to_string(&Named::new(&session))?;
    let mut watched = internal_call(env, &source, WATCH, named.clone()).await?;
    let watched: Watched = match watched.status_code() {
        200 => watched.json().await?,
        404 => {
            return json_error(
                404,
                "STREAM_NOT_FOUND",
                format!("no stream {stream} in project {project}"),
            )
        }
        410 => return json_error(410, "STREAM_GONE", format!("stream {stream} was deleted")),
        status => {
            return json_error(
                502,
                "SOURCE_FAILED",
                format!("the stream's object answered {status}"),
            )
        }
    };
    let ttl_s = var_u64(env, "ESTUARY_TTL_SECONDS").unwrap_or(DEFAULT_TTL_SECONDS);
    let link = LinkRequest {
        source: source.clone(),
        since: watched.since,
        content_type: watched.content_type,
        ttl_ms: ttl_s.saturating_mul(1_000),
        max_sources: var_u64(env, "ESTUARY_MAX_SOURCES")
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_SOURCES),
    };
    let mut linked = internal_call(env, &session, LINK, serde_json::to_string(&link)?).await?;
    if linked.status_code() != 200 {
        let status = linked.status_code();
        let message = linked.text().await.unwrap_or_default();
        // The source does not keep a watcher the session refused.
        internal_call(env, &source, UNWATCH, named).await?;
        return json_error(status, "ESTUARY_CONFLICT", message);
    }
    let linked: Linked = linked.json().await?;
    // What the source published between the watch and the link: told again now.
    internal_call(env, &source, RENOTIFY, named).await?;
    json(
        200,
        &Subscribed {
            estuary_id: id.as_str().to_owned(),
            stream_id: stream.to_owned(),
            estuary_stream_path: session,
            expires_at: linked.expires_at,
            is_new_estuary: linked.is_new,
        },
    )
}

async fn unsubscribe(env: &Env, project: &str, stream: &str, id: &EstuaryId) -> Result<Response> {
    let source = stream_path(project, stream);
    let session = stream_path(project, id.as_str());
    let named = serde_json::to_string(&Named::new(&session))?;
    let unwatched = internal_call(env, &source, UNWATCH, named).await?;
    let unlinked = internal_call(
        env,
        &session,
        UNLINK,
        serde_json::to_string(&Named::new(&source))?,
    )
    .await?;
    if unwatched.status_code() == 404 && unlinked.status_code() == 404 {
        return json_error(
            404,
            "NOT_SUBSCRIBED",
            format!("estuary {} is not subscribed to {stream}", id.as_str()),
        );
    }
    json(
        200,
        &serde_json::json!({ "success": true, "estuaryId": id.as_str(), "streamId": stream }),
    )
}

async fn estuary_info(env: &Env, session: &str) -> Result<Option<EstuaryInfo>> {
    let mut answer = internal_call(env, session, INFO, String::new()).await?;
    match answer.status_code() {
        200 => Ok(Some(answer.json().await?)),
        404 => Ok(None),
        status => Err(worker::Error::RustError(format!(
            "the estuary's object answered {status}"
        ))),
    }
}

async fn info(env: &Env, project: &str, id: &EstuaryId) -> Result<Response> {
    let session = stream_path(project, id.as_str());
    match estuary_info(env, &session).await? {
        Some(info) => json(200, &info),
        None => json_error(
            404,
            "ESTUARY_NOT_FOUND",
            format!("no estuary {}", id.as_str()),
        ),
    }
}

async fn delete(env: &Env, project: &str, id: &EstuaryId) -> Result<Response> {
    let session = stream_path(project, id.as_str());
    let Some(info) = estuary_info(env, &session).await? else {
        return json_error(
            404,
            "ESTUARY_NOT_FOUND",
            format!("no estuary {}", id.as_str()),
        );
    };
    leave_sources(
        env,
        &session,
        info.subscriptions
            .iter()
            .map(|s| stream_path(project, &s.stream_id)),
    )
    .await;
    let mut init = worker::RequestInit::new();
    init.with_method(worker::Method::Delete);
    let request = Request::new_with_init(&format!("https://streams{session}"), &init)?;
    let deleted = env
        .durable_object(super::stream_object::STREAMS_BINDING)?
        .id_from_name(&session)?
        .get_stub()?
        .fetch_with_request(request)
        .await?;
    if deleted.status_code() != 204 {
        return json_error(
            502,
            "DELETE_FAILED",
            format!("the estuary's stream answered {}", deleted.status_code()),
        );
    }
    json(
        200,
        &serde_json::json!({ "estuaryId": id.as_str(), "deleted": true }),
    )
}

/// Removes the session from its sources' watchers (best effort: a source that still tells a
/// session that is gone gets `404` and drops it then).
pub(super) async fn leave_sources(env: &Env, session: &str, sources: impl Iterator<Item = String>) {
    let Ok(named) = serde_json::to_string(&Named::new(session)) else {
        return;
    };
    let calls = sources.map(|source| {
        let named = named.clone();
        async move {
            if let Err(e) = internal_call(env, &source, UNWATCH, named).await {
                worker::console_warn!("{session} leaving {source}: {e}");
            }
        }
    });
    futures_util::future::join_all(calls).await;
}

/// Serves the estuary operations of a stream object (`None`: not one of them).
pub(super) async fn internal(
    stream: &Rc<StreamOf>,
    run: &FanOutRun,
    env: &Env,
    path: &str,
    body: &[u8],
) -> Option<Result<Response>> {
    let served = match path {
        WATCH | UNWATCH | RENOTIFY => watch_op(stream, run, env, path, body).await,
        LINK => link(stream, body).await,
        UNLINK => unlink(stream, body).await,
        INFO => session_info(stream).await,
        super::fanout::NOTIFY_PATH => copy(stream, body).await,
        _ => return None,
    };
    Some(served)
}

async fn watch_op(
    stream: &Rc<StreamOf>,
    run: &FanOutRun,
    env: &Env,
    path: &str,
    body: &[u8],
) -> Result<Response> {
    let named: Named = serde_json::from_slice(body)?;
    let watchers = Watchers::open(stream.platform().state().storage().sql()).map_err(failed)?;
    let now = worker::Date::now().as_millis();
    // Known at once (an append waiting for the lock must count this watcher).
    let result = watch_op_on(stream, &watchers, env, path, &named, now).await;
    run.changed();
    result
}

async fn watch_op_on(
    stream: &Rc<StreamOf>,
    watchers: &Watchers,
    env: &Env,
    path: &str,
    named: &Named,
    now: u64,
) -> Result<Response> {
    match path {
        WATCH => {
            // At the tail under the writer lock: an append is before it or told to it.
            let recorded = stream
                .at_tail(|meta, tail| {
                    watchers
                        .add(&named.name, tail.get(), now)
                        .map(|since| Watched {
                            since,
                            tail: tail.get(),
                            content_type: meta.content_type.clone(),
                        })
                })
                .await
                .map_err(failed)?;
            match recorded {
                Ok(watched) => Response::from_json(&watched.map_err(failed)?),
                Err(404) if named.missing_ok => {
                    let since = watchers.add(&named.name, 0, now).map_err(failed)?;
                    Response::from_json(&Watched {
                        since,
                        tail: 0,
                        content_type: String::new(),
                    })
                }
                Err(status) => plain(status, "no live stream here"),
            }
        }
        UNWATCH => {
            if watchers.remove(&named.name).map_err(failed)? {
                Ok(Response::empty()?.with_status(204))
            } else {
                plain(404, "not a watcher")
            }
        }
        _ => {
            let tail = stream.log().tail().await.map_err(failed)?;
            let notice = Notice::new(&stream.platform().name().unwrap_or_default(), tail, &[]);
            let status = super::fanout::notify(env, &named.name, &notice).await?;
            Ok(Response::empty()?.with_status(if status < 300 { 204 } else { status }))
        }
    }
}

async fn link(stream: &StreamOf, body: &[u8]) -> Result<Response> {
    let request: LinkRequest = serde_json::from_slice(body)?;
    match stream.estuary_link(&request).await.map_err(failed)? {
        Ok(linked) => Response::from_json(&linked),
        Err(refusal) => plain(refusal.status, &String::from_utf8_lossy(&refusal.body)),
    }
}

async fn unlink(stream: &StreamOf, body: &[u8]) -> Result<Response> {
    let named: Named = serde_json::from_slice(body)?;
    if stream.estuary_unlink(&named.name).await.map_err(failed)? {
        Ok(Response::empty()?.with_status(204))
    } else {
        plain(404, "not linked")
    }
}

async fn session_info(stream: &StreamOf) -> Result<Response> {
    let Some(meta) = stream.estuary().await.map_err(failed)? else {
        return plain(404, "no estuary here");
    };
    let name = stream.platform().name().unwrap_or_default();
    let Some((project, id)) = name
        .strip_prefix("/v1/stream/")
        .and_then(|rest| rest.split_once('/'))
    else {
        return plain(404, "no estuary here");
    };
    let prefix = format!("/v1/stream/{project}/");
    let subscriptions = meta
        .estuary
        .iter()
        .flat_map(|e| e.sources.keys())
        .map(|source| SubscriptionInfo {
            stream_id: source.strip_prefix(&prefix).unwrap_or(source).to_owned(),
        })
        .collect();
    Response::from_json(&EstuaryInfo {
        estuary_id: id.to_owned(),
        estuary_stream_path: name.clone(),
        subscriptions,
        content_type: meta.content_type,
        expires_at: meta.expires_at_ms,
    })
}

/// A notice from a source: copies what follows the session's mark (from the notice, or read
/// from the source a budget at a time). `404` when no estuary lives here (the source drops it),
/// `409` when it does not take this source.
async fn copy(stream: &StreamOf, body: &[u8]) -> Result<Response> {
    let notice: Notice = serde_json::from_slice(body)?;
    let Some(meta) = stream.estuary().await.map_err(failed)? else {
        return plain(404, "no estuary here");
    };
    let Some(mut copied) = meta
        .estuary
        .as_ref()
        .and_then(|e| e.sources.get(&notice.source))
        .map(|link| link.copied)
    else {
        return plain(409, "the estuary does not take this stream");
    };
    if let Some(messages) = notice.messages_after(copied) {
        return answer(
            stream
                .estuary_copy(&notice.source, &messages)
                .await
                .map_err(failed)?,
        );
    }
    let budget = Budget {
        rows: 1_000,
        bytes: 1 << 20,
    };
    while copied < notice.tail {
        let after = SeqNum::new(copied).unwrap_or(SeqNum::ROOT);
        let upto = SeqNum::new(notice.tail).unwrap_or(after);
        let messages = crate::durable_streams::platform::Platform::read_source(
            stream.platform(),
            &notice.source,
            after,
            upto,
            budget,
        )
        .await
        .map_err(failed)?;
        if messages.is_empty() {
            break;
        }
        match stream
            .estuary_copy(&notice.source, &messages)
            .await
            .map_err(failed)?
        {
            Copied::Through { copied: now, .. } => copied = now,
            other => return answer(other),
        }
    }
    Ok(Response::empty()?.with_status(204))
}

fn answer(copied: Copied) -> Result<Response> {
    match copied {
        Copied::Through { .. } => Ok(Response::empty()?.with_status(204)),
        Copied::Unlinked => plain(409, "the estuary does not take this stream"),
        Copied::NoEstuary => plain(404, "no estuary here"),
    }
}

/// At an estuary's expiry (the alarm): leaves its sources before the protocol deletes it.
pub(super) async fn leave_if_expired(stream: &StreamOf, env: &Env) {
    let Ok(Some(header)) = stream.log().state().await.map(|s| s.header) else {
        return;
    };
    let Some(meta) = header.stream else { return };
    let Some(estuary) = &meta.estuary else { return };
    if !meta.is_expired(worker::Date::now().as_millis()) {
        return;
    }
    let name = stream.platform().name().unwrap_or_default();
    leave_sources(env, &name, estuary.sources.keys().cloned()).await;
}
