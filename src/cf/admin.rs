//! The admin API's Worker side (see [`crate::admin`]): the dashboard page, the bearer check,
//! store and stream lists, and forwarding to the store's or stream's object, which serves the
//! rest.

use super::registry::{self, STORE_REGISTRY, STREAM_REGISTRY};
use super::stream_object::STREAMS_BINDING;
use crate::admin::auth::authorize;
use crate::admin::model::{AdminError, ListPage, StoreEntry, StreamEntry};
use crate::admin::route::{parse, AdminRoute, ListQuery};
use crate::admin::DASHBOARD_HTML;
use crate::livestore::options::{Storage, DEFAULT_BINDING};
use crate::livestore::store_id::StoreId;
use crate::livestore::stream_view::VIEW_PREFIX;
use worker::{Env, Headers, Method, Request, RequestInit, Response, Result};

pub use crate::admin::route::is_admin_path;

/// The admin secret of a deployment: the `ADMIN_SECRET` secret (or var); none turns the API off.
pub fn admin_secret(env: &Env) -> Option<String> {
    env.secret("ADMIN_SECRET")
        .map(|s| s.to_string())
        .or_else(|_| env.var("ADMIN_SECRET").map(|v| v.to_string()))
        .ok()
        .filter(|s| !s.is_empty())
}

/// A JSON answer of the admin API.
pub(super) fn json_response(status: u16, json: String) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json; charset=utf-8")?;
    headers.set("cache-control", "no-store")?;
    Ok(Response::ok(json)?
        .with_status(status)
        .with_headers(headers))
}

/// An admin error as its JSON answer.
pub(super) fn error_response(e: &AdminError) -> Result<Response> {
    json_response(e.status, e.body())
}

/// The admin API of a Worker: where stores live (to list them) and the bindings of the sync
/// and stream objects.
#[derive(Clone, Debug)]
pub struct AdminApi {
    storage: Storage,
    binding: String,
    streams_binding: Option<String>,
}

impl Default for AdminApi {
    fn default() -> Self {
        AdminApi {
            storage: Storage::default(),
            binding: DEFAULT_BINDING.into(),
            streams_binding: Some(STREAMS_BINDING.into()),
        }
    }
}

impl AdminApi {
    /// Stores in D1 (binding `DB`), sync objects bound as `SYNC_BACKEND_DO`, streams as `STREAMS`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the stores' event logs live, as the sync object has it.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// The sync object's binding.
    pub fn binding(mut self, binding: impl Into<String>) -> Self {
        self.binding = binding.into();
        self
    }

    /// The stream object's binding; `None` for a Worker without Durable Streams.
    pub fn streams_binding(mut self, binding: Option<String>) -> Self {
        self.streams_binding = binding;
        self
    }

    /// Serves a request whose path satisfies [`is_admin_path`]. Never fails: internal errors
    /// are JSON 500s.
    pub async fn fetch(&self, req: Request, env: &Env) -> Result<Response> {
        match self.route(req, env).await {
            Ok(response) => Ok(response),
            Err(e) => error_response(&AdminError::internal(e.to_string())),
        }
    }

    async fn route(&self, req: Request, env: &Env) -> Result<Response> {
        let url = req.url()?;
        let route = match parse(req.method().as_ref(), url.path(), url.query().unwrap_or("")) {
            Ok(route) => route,
            Err(e) => return error_response(&e),
        };
        if route.needs_secret() {
            let authorization = req.headers().get("Authorization")?;
            if let Err(e) = authorize(admin_secret(env).as_deref(), authorization.as_deref()) {
                return error_response(&e);
            }
        }
        match route {
            AdminRoute::Redirect => {
                let headers = Headers::new();
                headers.set("location", "/admin/")?;
                Ok(Response::empty()?.with_status(308).with_headers(headers))
            }
            AdminRoute::Dashboard => dashboard(),
            AdminRoute::Usage => Response::from_json(&super::usage::snapshot()),
            AdminRoute::ListStores(query) => self.list_stores(env, &query).await,
            AdminRoute::StoreInfo(id)
            | AdminRoute::DeleteStore(id)
            | AdminRoute::ResetStore { store_id: id, .. }
            | AdminRoute::StoreEvents { store_id: id, .. } => {
                self.store_stub(env, &id)?.fetch_with_request(req).await
            }
            AdminRoute::StoreStream(id) => {
                // The store's stream view, without the sync gate: the admin secret stands in.
                let mut view = url.clone();
                view.set_path(&format!("{VIEW_PREFIX}{}", percent_encode(id.as_str())));
                let mut init = RequestInit::new();
                init.with_method(req.method())
                    .with_headers(req.headers().clone());
                let forwarded = Request::new_with_init(view.as_str(), &init)?;
                self.store_stub(env, &id)?
                    .fetch_with_request(forwarded)
                    .await
            }
            AdminRoute::ListStreams(query) => {
                let Some(binding) = self.streams_in(env) else {
                    return json_response(200, r#"{"items":[]}"#.into());
                };
                let page = registry::list(env, binding, STREAM_REGISTRY, &query).await?;
                let page = ListPage {
                    items: page
                        .items
                        .into_iter()
                        .map(|path| StreamEntry { path })
                        .collect::<Vec<_>>(),
                    next: page.next,
                };
                json_response(200, serde_json::to_string(&page)?)
            }
            AdminRoute::StreamInfo(path) => self.stream_info(env, &path).await,
            AdminRoute::DeleteStream(path) => {
                let mut init = RequestInit::new();
                init.with_method(Method::Delete);
                let mut target = url.clone();
                target.set_path(&path);
                target.set_query(None);
                let request = Request::new_with_init(target.as_str(), &init)?;
                let stub = match self.stream_stub(env, &path) {
                    Ok(stub) => stub,
                    Err(e) => return error_response(&e),
                };
                let response = stub.fetch_with_request(request).await?;
                match response.status_code() {
                    204 => json_response(
                        200,
                        serde_json::json!({"path": path, "deleted": true}).to_string(),
                    ),
                    404 | 410 => {
                        error_response(&AdminError::not_found(format!("no stream at {path}")))
                    }
                    status => error_response(&AdminError::internal(format!(
                        "the stream answered {status}"
                    ))),
                }
            }
        }
    }

    fn store_stub(&self, env: &Env, id: &StoreId) -> Result<worker::Stub> {
        env.durable_object(&self.binding)?
            .id_from_name(id.as_str())?
            .get_stub()
    }

    /// The stream object's binding, if the Worker has it.
    fn streams_in(&self, env: &Env) -> Option<&str> {
        let binding = self.streams_binding.as_deref()?;
        env.durable_object(binding).is_ok().then_some(binding)
    }

    /// The object of the stream at `path`.
    fn stream_stub(&self, env: &Env, path: &str) -> std::result::Result<worker::Stub, AdminError> {
        let Some(binding) = self.streams_in(env) else {
            return Err(AdminError::not_found(
                "this Worker has no Durable Streams binding",
            ));
        };
        let stub = || env.durable_object(binding)?.id_from_name(path)?.get_stub();
        stub().map_err(|e| AdminError::internal(e.to_string()))
    }

    async fn list_stores(&self, env: &Env, query: &ListQuery) -> Result<Response> {
        let page = match &self.storage {
            Storage::D1 { binding } => {
                let db = env.d1(binding)?;
                let after = query.after.as_deref().unwrap_or("");
                let tables = crate::storage::d1::list_tables(&db, after, query.limit + 1)
                    .await
                    .map_err(|e| worker::Error::RustError(e.0))?;
                let entries = tables
                    .into_iter()
                    .map(|(table, store_id)| StoreEntry { store_id, table })
                    .collect();
                ListPage::of(entries, query.limit, |e: &StoreEntry| e.table.clone())
            }
            Storage::DoSqlite => {
                let page = registry::list(env, &self.binding, STORE_REGISTRY, query).await?;
                ListPage {
                    items: page
                        .items
                        .into_iter()
                        .filter_map(|name| StoreId::parse(&name).ok())
                        .map(|id| StoreEntry {
                            table: id.table_name(),
                            store_id: Some(id.as_str().to_owned()),
                        })
                        .collect(),
                    next: page.next,
                }
            }
        };
        json_response(200, serde_json::to_string(&page)?)
    }

    async fn stream_info(&self, env: &Env, path: &str) -> Result<Response> {
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_body(Some(path.to_owned().into()));
        let request = Request::new_with_init("https://streams/__ds_internal/admin-info", &init)?;
        let stub = match self.stream_stub(env, path) {
            Ok(stub) => stub,
            Err(e) => return error_response(&e),
        };
        let mut response = stub.fetch_with_request(request).await?;
        match response.status_code() {
            200 => json_response(200, response.text().await?),
            404 => {
                // Gone without telling the registry (expired): it leaves the list now.
                if let Some(binding) = self.streams_in(env) {
                    let _ = registry::announce(env, binding, STREAM_REGISTRY, path, false).await;
                }
                error_response(&AdminError::not_found(format!("no stream at {path}")))
            }
            410 => error_response(&AdminError {
                status: 410,
                code: "STREAM_GONE",
                message: format!("{path} was deleted; forks still read its messages"),
            }),
            status => error_response(&AdminError::internal(format!(
                "the stream answered {status}"
            ))),
        }
    }
}

fn percent_encode(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn dashboard() -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "text/html; charset=utf-8")?;
    headers.set("cache-control", "no-store")?;
    headers.set(
        "content-security-policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    )?;
    headers.set("referrer-policy", "no-referrer")?;
    headers.set("x-content-type-options", "nosniff")?;
    Ok(Response::ok(DASHBOARD_HTML)?.with_headers(headers))
}
