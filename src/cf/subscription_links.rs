//! How subscriptions meet streams: a subscription watches the streams it follows (their
//! fan-out tells it of appends), asks their tails when a claim finds nothing known to wait, and
//! leaves them; its pattern is kept by the stream registry's object, which answers the streams
//! that match it now and links each stream created later. A project with tokens is reached only
//! by a pattern that names it.

use super::estuary::{Named, Watched, WATCH};
use super::fanout::internal_call;
use super::js_error as failed;
use super::subscription_object::{Kept, Random};
use crate::durable_streams::subscription_match::{matches, reaches_guarded};
use crate::storage::cold_index::int;
use crate::storage::do_sqlite::{exec, sql_error};
use serde::{Deserialize, Serialize};
use serde_json::json;
use worker::{Env, Response, Result, SqlStorage, SqlStorageValue};

/// The subscription objects' operations the registry and deleted streams call.
pub(super) const LINK: &str = "/__ds_internal/subscription-link";
pub(super) const UNLINK: &str = "/__ds_internal/subscription-unlink";
/// The stream objects' answer of their tail.
const TAIL: &str = "/__ds_internal/tail";

const PATTERNS: &str = "CREATE TABLE IF NOT EXISTS ds_subscription_patterns (name TEXT PRIMARY KEY NOT NULL, pattern TEXT NOT NULL) STRICT";

/// A link from the registry: follow `stream` (relative) because it matched the pattern.
#[derive(Serialize, Deserialize)]
pub(super) struct LinkBody {
    pub(super) stream: String,
}

/// Watches `streams` (relative) for the subscription `name`, a few at a time, and records
/// their tails in one save: a stream followed from its tail (`from_start` false) starts there,
/// one created under a pattern (`from_start`) is pending from its start.
pub(super) async fn watch_all(
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

pub(super) async fn unwatch_all(env: &Env, name: &str, streams: impl Iterator<Item = String>) {
    let paths = streams.map(|stream| format!("/v1/stream/{stream}"));
    super::estuary::leave_sources(env, name, paths).await;
}

pub(super) async fn refresh_tails(env: &Env, kept: &Kept, streams: Vec<String>) -> Result<()> {
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
pub(super) async fn register_pattern(
    env: &Env,
    name: &str,
    pattern: Option<&str>,
) -> Result<Vec<String>> {
    let body = json!({ "name": name, "pattern": pattern }).to_string();
    let op = format!("{}pattern", super::registry::REGISTRY_PATH);
    let mut answer = internal_call(env, super::registry::STREAM_REGISTRY, &op, body).await?;
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
pub(super) async fn guarded_project(env: &Env, stream: &str) -> Result<bool> {
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
