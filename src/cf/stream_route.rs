//! The Worker's routing of `/v1/stream/*` (wasm only): CORS, the project guard, live SSE readers
//! through the bridge, the edge cache and shared long-polls, then the stream's object
//! ([`super::stream_object`]).

use super::edge_cache::CachedRead;
use super::sse_bridge::ObjectLink;
use super::stream_object::{plain, preflight, stream_config, Cors, STREAMS_BINDING};
use crate::durable_streams::read::ReadQuery;
use worker::{Env, Method, Request, Response, Result};

/// The Worker side: answers preflights and forwards stream requests to their object.
pub async fn worker_fetch(req: Request, env: &Env) -> Result<Response> {
    let origin = match super::projects::allowed_origin(&req, env).await {
        Ok(origin) => origin,
        Err(e) => return plain(500, &format!("project configuration: {e}")),
    };
    let response = route_stream(req, env).await?;
    super::projects::restrict_origin(response, origin)
}

/// A stream request past CORS: preflights, the project guard, then the stream's object.
async fn route_stream(req: Request, env: &Env) -> Result<Response> {
    if req.method() == Method::Options {
        return preflight();
    }
    let path = req.path();
    if super::subscription_object::is_subscription_path(&path) {
        return super::subscription_object::worker_fetch(req, env).await;
    }
    if path.split('/').any(|segment| segment == "__ds") {
        return plain(404, "not found");
    }
    let (expires, reach) = match super::projects::guard_stream(&req, env).await {
        Ok(super::projects::Guard::Allowed { expires, reach }) => (expires, reach),
        Ok(super::projects::Guard::Refused(refusal)) => return Ok(refusal),
        Err(e) => return plain(500, &format!("project configuration: {e}")),
    };
    let until_ms = expires.map(|s| s.saturating_mul(1_000));
    let link = || {
        let namespace = env.durable_object(STREAMS_BINDING)?;
        Ok(ObjectLink::new(
            namespace,
            STREAMS_BINDING,
            path.clone(),
            path.clone(),
            Vec::new(),
        ))
    };
    let url = req.url()?;
    let config = stream_config(env);
    let bridged = super::sse_bridge::open(&req, &url, link, config, Cors::Open, until_ms);
    match bridged.await {
        Ok(Some(response)) => return Ok(response),
        Ok(None) => {}
        Err(e) => return plain(500, &format!("stream object failed: {e}")),
    }
    let method = req.method();
    let req_path_query = (path.clone(), url.query().unwrap_or_default().to_owned());
    let if_none_match = req.headers().has("if-none-match")?;
    let coalesced = coalesced_key(&req_path_query, &method, if_none_match, reach.as_deref());
    // A long-poll's answer comes within its wait, and a little more.
    let patience_ms = config.long_poll_ms.saturating_add(5_000);
    let cached = CachedRead::of(&req, &url, reach.as_deref())?;
    // Reads the edge has kept are answered without the object; a read of the same key under
    // way in this isolate will be answered sooner than the cache could have it.
    let joining = coalesced
        .as_deref()
        .is_some_and(|key| super::coalesce::answered_here(key, patience_ms));
    if !joining {
        match cached.lookup().await {
            Ok(Some(hit)) => return Ok(hit),
            Ok(None) => {}
            Err(e) => worker::console_warn!("edge cache lookup: {e}"),
        }
    }
    let forwarded = async {
        let request = cached.tag(super::projects::with_expiry(req, expires)?, &url)?;
        let response = super::object_call::send(env, STREAMS_BINDING, &path, request).await?;
        // A stream deleted or created again: what the cache keeps of it goes.
        if matches!(
            (&method, response.status_code()),
            (Method::Delete, 204) | (Method::Put, 201)
        ) {
            super::coalesce::forget(&crate::durable_streams::edge_cache::key_prefix(&path));
            if let Err(e) = super::edge_cache::purge(env, &path).await {
                worker::console_warn!("edge cache purge: {e}");
            }
        }
        cached.finish(response).await
    };
    let answered = match coalesced {
        Some(key) => super::coalesce::shared(&key, patience_ms, || forwarded).await,
        None => forwarded.await,
    };
    match answered {
        Ok(response) => Ok(response),
        Err(e) => plain(500, &format!("stream object failed: {e}")),
    }
}

/// The key under which long-poll reads share one request to the object (see
/// [`super::coalesce`]): the edge cache's key of the read, for unconditional long-polls only.
fn coalesced_key(
    (path, query): &(String, String),
    method: &Method,
    if_none_match: bool,
    reach: Option<&str>,
) -> Option<String> {
    let long_poll = ReadQuery::parse(query).live.as_deref() == Some("long-poll");
    if !long_poll || if_none_match {
        return None;
    }
    crate::durable_streams::edge_cache::cache_key(method.as_ref(), path, query, reach)
}
