//! Projects at the edge: configurations in Workers KV (binding `PROJECTS`; none: every project
//! is open), the guard in front of stream requests, and the config API
//! (`PUT`/`GET`/`DELETE /v1/config/<project>`, with the admin secret or a manage token).

use super::admin::admin_secret;
use super::now_s;
use crate::auth::policy::{
    authorize, authorize_store, fork_across_projects, needed_scope, split_stream_path, Denied,
};
use crate::auth::project::{config_key, valid_project, ProjectConfig};
use crate::auth::token::Scope;
use crate::durable_streams::read::SSE_UNTIL_HEADER;
use std::cell::RefCell;
use std::collections::HashMap;
use worker::{Env, Headers, Method, Request, Response, Result};

/// The KV namespace of project configurations.
pub const PROJECTS_BINDING: &str = "PROJECTS";
/// Where the config API lives.
pub const CONFIG_PREFIX: &str = "/v1/config/";
/// How long an isolate trusts a configuration it read (changes made through this isolate apply
/// at once; others within this time, plus KV's own propagation).
const CACHE_MS: f64 = 5_000.0;

thread_local! {
    static CACHE: RefCell<HashMap<String, (f64, Option<ProjectConfig>)>> = RefCell::new(HashMap::new());
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// The configuration of `project`, if it has one.
pub async fn project_config(env: &Env, project: &str) -> Result<Option<ProjectConfig>> {
    if let Some(cached) = CACHE.with(|c| {
        c.borrow()
            .get(project)
            .filter(|(at, _)| now_ms() - at < CACHE_MS)
            .map(|(_, config)| config.clone())
    }) {
        return Ok(cached);
    }
    let Ok(kv) = env.kv(PROJECTS_BINDING) else {
        return Ok(None);
    };
    let text = kv
        .get(&config_key(project))
        .text()
        .await
        .map_err(|e| worker::Error::RustError(format!("project config: {e}")))?;
    let config = match text {
        Some(text) => Some(
            serde_json::from_str::<ProjectConfig>(&text)
                .map_err(|e| worker::Error::RustError(format!("stored project config: {e}")))?,
        ),
        None => None,
    };
    remember(project, config.clone());
    Ok(config)
}

fn remember(project: &str, config: Option<ProjectConfig>) {
    CACHE.with(|c| {
        c.borrow_mut()
            .insert(project.to_owned(), (now_ms(), config));
    });
}

/// A refusal as a response: JSON, never cached, readable cross-origin (stream clients are
/// browsers too).
pub fn denied_response(denied: &Denied) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json; charset=utf-8")?;
    headers.set("cache-control", "no-store")?;
    super::stream_object::common_headers(&headers, super::stream_object::Cors::Open)?;
    Ok(Response::ok(denied.body())?
        .with_status(denied.status)
        .with_headers(headers))
}

/// What the guard decided about a stream request.
pub enum Guard {
    /// It goes on; `expires` is its token's expiry (seconds since the epoch), which ends an
    /// event stream it opens; `reach` is what its token may read (project and stream), which
    /// keys what the edge cache keeps for it.
    Allowed {
        expires: Option<u64>,
        reach: Option<String>,
    },
    /// It is answered with this refusal.
    Refused(Response),
}

/// Checks a stream request against its project's configuration. A project without
/// configuration is open, as is a path without a project.
pub async fn guard_stream(req: &Request, env: &Env) -> Result<Guard> {
    let path = req.path();
    let method = req.method().to_string();
    let open = Guard::Allowed {
        expires: None,
        reach: None,
    };
    let Some(need) = needed_scope(&method) else {
        return Ok(open);
    };
    let authorization = req.headers().get("Authorization")?;
    let fork_source = req.headers().get("Stream-Forked-From")?;
    let target = split_stream_path(&path);
    let config = match &target {
        Some(target) => project_config(env, target.project).await?,
        None => None,
    };
    let mut expires = None;
    let mut reach = None;
    if let (Some(target), Some(config)) = (&target, &config) {
        match authorize(
            config,
            target.project,
            Some(target.stream),
            need,
            authorization.as_deref(),
            now_s(),
        ) {
            Ok(claims) => {
                reach = claims
                    .as_ref()
                    .map(|c| format!("{}:{}", c.sub, c.stream_id.as_deref().unwrap_or("*")));
                expires = claims.map(|c| c.exp);
            }
            Err(denied) => return denied_response(&denied).map(Guard::Refused),
        }
    }
    // A fork reads its source: it needs read there, and stays within its project.
    if let (true, Some(source)) = (method == "PUT", fork_source.as_deref()) {
        let source_path = source_path(source);
        let source_target = split_stream_path(&source_path);
        let source_config = match &source_target {
            Some(source) => project_config(env, source.project).await?,
            None => None,
        };
        let same_project =
            matches!((&target, &source_target), (Some(t), Some(s)) if t.project == s.project);
        if (config.is_some() || source_config.is_some()) && !same_project {
            let project = target.as_ref().map_or("", |t| t.project);
            return denied_response(&fork_across_projects(source, project)).map(Guard::Refused);
        }
        if let (Some(source), Some(config)) = (&source_target, &source_config) {
            if let Err(denied) = authorize(
                config,
                source.project,
                Some(source.stream),
                Scope::Read,
                authorization.as_deref(),
                now_s(),
            ) {
                return denied_response(&denied).map(Guard::Refused);
            }
        }
    }
    Ok(Guard::Allowed { expires, reach })
}

/// Forwards `req` so that an event stream it opens ends when its token expires (the client
/// reconnects with a fresh token and its offset). A client's own value of the header is never
/// passed on.
pub fn with_expiry(req: Request, expires: Option<u64>) -> Result<Request> {
    // Event streams are GETs, which have no body to carry over.
    if req.method() != Method::Get || (expires.is_none() && !req.headers().has(SSE_UNTIL_HEADER)?) {
        return Ok(req);
    }
    let headers = req.headers().clone();
    headers.delete(SSE_UNTIL_HEADER)?;
    if let Some(expires) = expires {
        headers.set(SSE_UNTIL_HEADER, &expires.saturating_mul(1_000).to_string())?;
    }
    let mut init = worker::RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    Request::new_with_init(req.url()?.as_str(), &init)
}

/// The path of a fork source as the header names it (a path, or a URL).
fn source_path(source: &str) -> String {
    match worker::Url::parse(source) {
        Ok(url) => url.path().to_owned(),
        Err(_) => source.split('?').next().unwrap_or(source).to_owned(),
    }
}

/// Serves `/v1/config/<project>`.
pub async fn config_fetch(mut req: Request, env: &Env) -> Result<Response> {
    let path = req.path();
    let rest = path.strip_prefix(CONFIG_PREFIX).unwrap_or_default();
    // `<project>`, `<project>/keys` (POST: rotate) or `<project>/keys/old` (DELETE: retire).
    let (project, keys) = match rest.split_once('/') {
        Some((project, keys)) => (project.to_owned(), Some(keys.to_owned())),
        None => (rest.to_owned(), None),
    };
    let refuse = |status: u16, code: &'static str, message: String| {
        denied_response(&Denied {
            status,
            code,
            message,
        })
    };
    if !valid_project(&project) {
        return refuse(
            400,
            "BAD_REQUEST",
            "a project name is 1 to 64 of A-Z a-z 0-9 _ -".into(),
        );
    }
    let Ok(kv) = env.kv(PROJECTS_BINDING) else {
        return refuse(
            404,
            "PROJECTS_DISABLED",
            format!("this Worker has no {PROJECTS_BINDING} KV namespace"),
        );
    };
    let authorization = req.headers().get("Authorization")?;
    let current = project_config(env, &project).await?;
    let admin = admin_secret(env).is_some_and(|secret| {
        crate::admin::auth::authorize(Some(&secret), authorization.as_deref()).is_ok()
    });
    if !admin {
        let manage = current.as_ref().map(|config| {
            authorize(
                config,
                &project,
                None,
                Scope::Manage,
                authorization.as_deref(),
                now_s(),
            )
        });
        match manage {
            Some(Ok(_)) => {}
            Some(Err(denied)) => return denied_response(&denied),
            None => return refuse(
                401,
                "UNAUTHORIZED",
                "creating a project needs the admin secret (Authorization: Bearer <ADMIN_SECRET>)"
                    .into(),
            ),
        }
    }
    let failed = |e: worker::kv::KvError| worker::Error::RustError(format!("project config: {e}"));
    if let Some(keys) = keys {
        let Some(mut config) = current else {
            return refuse(
                404,
                "NOT_FOUND",
                format!("project {project} has no configuration"),
            );
        };
        match (req.method(), keys.as_str()) {
            (Method::Post, "keys") => {
                #[derive(serde::Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct NewKey {
                    signing_secret: String,
                }
                let body = req.bytes().await?;
                let rotated = serde_json::from_slice::<NewKey>(&body)
                    .map_err(|e| format!("invalid key: {e}"))
                    .and_then(|key| config.rotate(key.signing_secret));
                if let Err(message) = rotated {
                    return refuse(400, "BAD_REQUEST", message);
                }
            }
            (Method::Delete, "keys/old") => config.retire_old_keys(),
            _ => {
                return refuse(
                    404,
                    "NOT_FOUND",
                    "key operations: POST …/keys, DELETE …/keys/old".into(),
                )
            }
        }
        kv.put(&config_key(&project), serde_json::to_string(&config)?)
            .map_err(failed)?
            .execute()
            .await
            .map_err(failed)?;
        remember(&project, Some(config.clone()));
        return Response::from_json(&config.public_view(&project));
    }
    match req.method() {
        Method::Get => match current {
            Some(config) => Response::from_json(&config.public_view(&project)),
            None => refuse(
                404,
                "NOT_FOUND",
                format!("project {project} has no configuration"),
            ),
        },
        Method::Put => {
            let body = req.bytes().await?;
            let config = match ProjectConfig::parse(&body) {
                Ok(config) => config,
                Err(message) => return refuse(400, "BAD_REQUEST", message),
            };
            let text = serde_json::to_string(&config)?;
            kv.put(&config_key(&project), text)
                .map_err(failed)?
                .execute()
                .await
                .map_err(failed)?;
            remember(&project, Some(config.clone()));
            Response::from_json(&config.public_view(&project))
        }
        Method::Delete => {
            if current.is_none() {
                return refuse(
                    404,
                    "NOT_FOUND",
                    format!("project {project} has no configuration"),
                );
            }
            kv.delete(&config_key(&project)).await.map_err(failed)?;
            remember(&project, None);
            Ok(Response::empty()?.with_status(204))
        }
        _ => refuse(405, "METHOD_NOT_ALLOWED", "GET, PUT or DELETE".into()),
    }
}

/// Tokens of a project guarding LiveStore stores: plug [`JwtAuth::check`] into
/// `WorkerOptions::validate_payload`. The client sends its token as the sync payload's
/// `authToken` (`syncPayload: { authToken }`); the token must name the store (`store` claim: the
/// id, or a prefix ending in `*`); sync needs a write token, reading the store's stream
/// (`/v1/livestore/…`, the same gate) any token (none when the project is public).
#[derive(Clone, Debug)]
pub struct JwtAuth {
    project: String,
}

impl JwtAuth {
    /// Guards stores with the keys of `project`.
    pub fn new(project: impl Into<String>) -> Self {
        JwtAuth {
            project: project.into(),
        }
    }

    /// The check, for `validate_payload`: `Err` with the code and reason.
    pub async fn check(
        &self,
        env: &Env,
        payload: Option<&serde_json::Value>,
        context: &crate::livestore::options::PayloadContext,
    ) -> std::result::Result<(), String> {
        let config = project_config(env, &self.project)
            .await
            .map_err(|e| format!("project configuration: {e}"))?
            .ok_or_else(|| format!("project {} has no configuration", self.project))?;
        let token = payload
            .and_then(|p| p.get("authToken"))
            .and_then(serde_json::Value::as_str);
        let need = if context.read_only {
            Scope::Read
        } else {
            Scope::Write
        };
        authorize_store(
            &config,
            &self.project,
            &context.store_id,
            need,
            token,
            now_s(),
        )
        .map(|_| ())
        .map_err(|denied| format!("{}: {}", denied.code, denied.message))
    }
}

/// The `Access-Control-Allow-Origin` a stream response gets: `None` keeps the protocol's `*`
/// (no project configuration, or one without `corsOrigins`); `Some(None)` allows no origin (the
/// request's is not listed); `Some(Some(origin))` allows just the request's origin.
pub async fn allowed_origin(req: &Request, env: &Env) -> Result<Option<Option<String>>> {
    let path = req.path();
    let Some(target) = split_stream_path(&path) else {
        return Ok(None);
    };
    let Some(config) = project_config(env, target.project).await? else {
        return Ok(None);
    };
    if config.cors_origins.is_empty() {
        return Ok(None);
    }
    let origin = req.headers().get("Origin")?;
    Ok(Some(origin.filter(|o| {
        config.cors_origins.iter().any(|allowed| allowed == o)
    })))
}

/// `response` with the allowed origin of [`allowed_origin`] instead of `*`.
pub fn restrict_origin(response: Response, allowed: Option<Option<String>>) -> Result<Response> {
    let Some(allowed) = allowed else {
        return Ok(response);
    };
    let headers = super::copy_headers(response.headers())?;
    headers.append("vary", "Origin")?;
    match allowed {
        Some(origin) => headers.set("access-control-allow-origin", &origin)?,
        None => {
            for name in [
                "access-control-allow-origin",
                "access-control-expose-headers",
                "access-control-allow-methods",
                "access-control-allow-headers",
                "access-control-max-age",
            ] {
                headers.delete(name)?;
            }
        }
    }
    Ok(response.with_headers(headers))
}
