//! The sync Worker's fetch handling: info page, CORS, payload validation, and forwarding to
//! the store's Durable Object, for sync requests and for reads of a store's log as a Durable
//! Stream (`/v1/livestore/<storeId>`, gated the same way).

use super::header_map;
use super::sse_bridge::ObjectLink;
use super::stream_object::{to_response, Cors};
use crate::livestore::cors::{preflight_headers, ALLOW_ORIGIN};
use crate::livestore::options::{PayloadContext, WorkerOptions};
use crate::livestore::query::{parse_sync_query, SyncParams};
use crate::livestore::route::{route, upgrade_rejection, Route, INFO_TEXT};
use crate::livestore::store_id::StoreId;
use crate::livestore::stream_view::{parse_view_request, write_refused, VIEW_PREFIX};
use worker::{Env, Headers, Method, Request, Response, Result};

/// Where the JSON Schema of a typed payload is served (`GET`), when one is configured.
pub const SCHEMA_PATH: &str = "/sync/schema";

/// A sync Worker configured with [`WorkerOptions`].
#[derive(Clone, Default)]
pub struct SyncWorker {
    options: WorkerOptions,
}

/// The sync parameters of `req`, if it is a valid sync request (`matchSyncRequest`).
pub fn match_sync_request(req: &Request) -> Option<SyncParams> {
    let url = req.url().ok()?;
    parse_sync_query(url.query().unwrap_or("")).ok().flatten()
}

fn refuse(status: u16, message: String) -> Result<Response> {
    Response::error(message, status)
}

impl SyncWorker {
    /// A Worker with these options.
    pub fn new(options: WorkerOptions) -> Self {
        SyncWorker { options }
    }

    /// The options.
    pub fn options(&self) -> &WorkerOptions {
        &self.options
    }

    /// A complete fetch handler (`makeWorker`): `GET /` info, CORS preflights, the payload
    /// schema, sync requests; `400` for anything else. Never fails: internal errors are 500s.
    pub async fn fetch(&self, req: Request, env: &Env) -> Result<Response> {
        let response = match self.route(req, env).await {
            Ok(response) => response,
            Err(e) => Response::error(format!("Internal error: {e}"), 500)?,
        };
        self.finish(response)
    }

    async fn route(&self, req: Request, env: &Env) -> Result<Response> {
        let url = req.url()?;
        if url.path().starts_with(VIEW_PREFIX) {
            return self.forward_view(req, env).await;
        }
        if self.options.enable_cors && req.method() == Method::Options {
            let requested = req.headers().get("Access-Control-Request-Headers")?;
            let headers = Headers::new();
            for (name, value) in preflight_headers(requested.as_deref()) {
                headers.set(name, &value)?;
            }
            return Ok(Response::empty()?.with_status(204).with_headers(headers));
        }
        if req.method() == Method::Get && url.path() == SCHEMA_PATH && url.query().is_none() {
            if let Some(schema) = self.options.payload_json_schema() {
                return Response::from_json(schema);
            }
        }
        match route(req.method().as_ref(), url.path(), url.query().unwrap_or("")) {
            Route::Info => Response::ok(INFO_TEXT),
            Route::Reject { status, message } => refuse(status, message),
            Route::Sync(params) => self.forward(req, env, params).await,
        }
    }

    /// Handles a request already known to be a sync request (`handleSyncRequest`), for
    /// Workers that route only some paths to sync: checks the upgrade, validates the payload
    /// and forwards to the store's Durable Object. CORS headers are added when enabled.
    pub async fn handle_sync_request(
        &self,
        req: Request,
        env: &Env,
        params: SyncParams,
    ) -> Result<Response> {
        let response = self.forward(req, env, params).await?;
        self.finish(response)
    }

    /// A read of a store's log as a Durable Stream: the same gate as sync (`validate_payload`
    /// with the `payload` query parameter), then the store's Durable Object.
    async fn forward_view(&self, mut req: Request, env: &Env) -> Result<Response> {
        let url = req.url()?;
        if !matches!(req.method(), Method::Get | Method::Head | Method::Options) {
            // Refused here, without waking the store's object; the body is read to its end
            // first (and dropped) so that the answer never races the upload.
            super::read_body(&mut req, 0).await?;
            let cors = if self.options.enable_cors {
                Cors::Open
            } else {
                Cors::ByWorker
            };
            return to_response(write_refused(), cors);
        }
        if self.options.enable_cors && req.method() == Method::Options {
            let requested = req.headers().get("Access-Control-Request-Headers")?;
            let headers = Headers::new();
            for (name, value) in preflight_headers(requested.as_deref()) {
                headers.set(name, &value)?;
            }
            headers.set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")?;
            return Ok(Response::empty()?.with_status(204).with_headers(headers));
        }
        let view = match parse_view_request(url.path(), url.query().unwrap_or("")) {
            Some(Ok(view)) => view,
            Some(Err(message)) => return refuse(400, format!("Invalid store stream: {message}")),
            None => return refuse(404, "not found".into()),
        };
        let namespace = match self
            .gate(&req, env, &view.store_id, view.payload.as_ref(), true)
            .await?
        {
            Ok(namespace) => namespace,
            Err(refusal) => return Ok(refusal),
        };
        let name = view.store_id.as_str();
        // Live readers follow the store through the bridge, which lets its object sleep.
        let path = req.path();
        let link = || {
            let query = vec![("store", view.store_id.as_str().to_owned())];
            Ok(ObjectLink::new(
                namespace.clone(),
                &self.options.binding,
                name.to_owned(),
                path,
                query,
            ))
        };
        let bridged = super::sse_bridge::open(
            &req,
            &req.url()?,
            link,
            super::stream_object::stream_config(env),
            Cors::ByWorker,
            None,
        )
        .await?;
        let response = match bridged {
            Some(response) => response,
            None => {
                super::object_call::send_in(&namespace, &self.options.binding, name, req).await?
            }
        };
        if !self.options.enable_cors {
            return Ok(response);
        }
        let headers = super::copy_headers(response.headers())?;
        super::stream_object::cors_headers(&headers)?;
        Ok(response.with_headers(headers))
    }

    async fn forward(&self, req: Request, env: &Env, params: SyncParams) -> Result<Response> {
        let upgrade = req.headers().get("Upgrade")?;
        if let Some(Route::Reject { status, message }) =
            upgrade_rejection(&params, upgrade.as_deref())
        {
            return refuse(status, message);
        }
        match self
            .gate(&req, env, &params.store_id, params.payload.as_ref(), false)
            .await?
        {
            Ok(namespace) => {
                let (binding, name) = (&self.options.binding, params.store_id.as_str());
                super::object_call::send_in(&namespace, binding, name, req).await
            }
            Err(refusal) => Ok(refusal),
        }
    }

    /// The sync gate (`validate_payload` with the client's payload) for sync requests and store
    /// streams alike: the namespace of the store's Durable Object, or the refusal.
    async fn gate(
        &self,
        req: &Request,
        env: &Env,
        store_id: &StoreId,
        payload: Option<&serde_json::Value>,
        read_only: bool,
    ) -> Result<std::result::Result<worker::ObjectNamespace, Response>> {
        let context = PayloadContext {
            store_id: store_id.as_str().to_owned(),
            headers: header_map(req.headers()),
            read_only,
        };
        if let Err(message) = self.options.check_payload(payload, context).await {
            return refuse(400, format!("Invalid payload: {message}")).map(Err);
        }
        let Ok(namespace) = env.durable_object(&self.options.binding) else {
            return refuse(
                424,
                format!(
                    "Durable Object binding {} is not configured",
                    self.options.binding
                ),
            )
            .map(Err);
        };
        Ok(Ok(namespace))
    }

    /// Adds the CORS header to a response (not to WebSocket upgrades, whose headers are
    /// fixed and which browsers do not check).
    fn finish(&self, response: Response) -> Result<Response> {
        if !self.options.enable_cors || response.status_code() == 101 {
            return Ok(response);
        }
        let headers = super::copy_headers(response.headers())?;
        headers.set(ALLOW_ORIGIN.0, ALLOW_ORIGIN.1)?;
        Ok(response.with_headers(headers))
    }
}
