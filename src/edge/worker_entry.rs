//! The Worker's fetch handler: routes sync requests to the store's Durable Object.

use crate::livestore::route::{route, Route, INFO_TEXT};
use worker::{event, Context, Env, Request, Response, Result};

/// Binding name of the sync Durable Object namespace.
pub const SYNC_BACKEND_BINDING: &str = "SYNC_BACKEND_DO";

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    match handle(req, env).await {
        Ok(response) => Ok(response),
        Err(e) => Response::error(format!("Internal error: {e}"), 500),
    }
}

async fn handle(req: Request, env: Env) -> Result<Response> {
    let url = req.url()?;
    let upgrade = req.headers().get("Upgrade")?;
    let method = req.method().to_string();
    match route(
        &method,
        url.path(),
        url.query().unwrap_or(""),
        upgrade.as_deref(),
    ) {
        Route::Info => Response::ok(INFO_TEXT),
        Route::Reject { status, message } => Response::error(message, status),
        Route::Sync(params) => {
            let Ok(namespace) = env.durable_object(SYNC_BACKEND_BINDING) else {
                return Response::error(
                    format!("Durable Object binding {SYNC_BACKEND_BINDING} is not configured"),
                    424,
                );
            };
            let stub = namespace
                .id_from_name(params.store_id.as_str())?
                .get_stub()?;
            stub.fetch_with_request(req).await
        }
    }
}
