//! The registry of names a Durable Object namespace holds (stores kept in DO SQLite, streams),
//! kept by one object of that namespace under a name no store or stream can have, so that the
//! admin API can list them. Objects announce themselves when they come into being and leave
//! when they are deleted; the registry's own object answers under [`REGISTRY_PATH`].

use crate::admin::model::ListPage;
use crate::admin::route::ListQuery;
use crate::storage::do_sqlite::sql_error;
use crate::stream::StorageError;
use serde::{Deserialize, Serialize};
use worker::{Env, Response, Result, SqlStorage, SqlStorageValue};

/// The registry object's name in the sync namespace: store ids cannot hold control characters.
pub const STORE_REGISTRY: &str = "\u{1}admin-registry";
/// The registry object's name in the streams namespace: the Worker refuses `__ds` paths.
pub const STREAM_REGISTRY: &str = "/v1/stream/__ds/registry";
/// Where the registry object answers. Only requests addressed to an object named as a registry
/// are served there (see [`serve`]).
pub const REGISTRY_PATH: &str = "/__admin_registry/";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS admin_registry (name TEXT PRIMARY KEY NOT NULL, addedMs INTEGER NOT NULL) STRICT";

#[derive(Serialize, Deserialize)]
struct Change {
    name: String,
    present: bool,
}

/// The registry's table in its object's SQLite.
struct Registry {
    sql: SqlStorage,
}

impl Registry {
    fn open(sql: SqlStorage) -> std::result::Result<Self, StorageError> {
        sql.exec(SCHEMA, None)
            .map_err(sql_error("create registry"))?;
        Ok(Registry { sql })
    }

    fn apply(&self, change: &Change) -> std::result::Result<(), StorageError> {
        let name = SqlStorageValue::from(change.name.clone());
        if change.present {
            self.sql
                .exec(
                    "INSERT OR IGNORE INTO admin_registry (name, addedMs) VALUES (?, ?)",
                    vec![name, SqlStorageValue::from(js_sys::Date::now())],
                )
                .map_err(sql_error("register"))?;
        } else {
            self.sql
                .exec("DELETE FROM admin_registry WHERE name = ?", vec![name])
                .map_err(sql_error("unregister"))?;
        }
        Ok(())
    }

    fn list(&self, query: &ListQuery) -> std::result::Result<ListPage<String>, StorageError> {
        let after = query.after.clone().unwrap_or_default();
        let cursor = self
            .sql
            .exec(
                "SELECT name FROM admin_registry WHERE name > ? ORDER BY name LIMIT ?",
                vec![
                    SqlStorageValue::from(after),
                    SqlStorageValue::from(query.limit as i64 + 1),
                ],
            )
            .map_err(sql_error("list registry"))?;
        let mut names = Vec::new();
        for row in cursor.raw() {
            let row = row.map_err(sql_error("registry row"))?;
            if let Some(SqlStorageValue::String(name)) = row.into_iter().next() {
                names.push(name);
            }
        }
        Ok(ListPage::of(names, query.limit, String::clone))
    }
}

#[derive(Serialize, Deserialize)]
struct ListRequest {
    after: Option<String>,
    limit: usize,
}

/// Serves a registry request (`path`, JSON `body`) in the object named `object_name`; `None`
/// when the path is not the registry's. Only objects named as a registry answer, so a request
/// that reaches another object under this path changes nothing.
pub fn serve_body(
    sql: SqlStorage,
    object_name: Option<String>,
    path: &str,
    body: &[u8],
) -> Option<Result<Response>> {
    let op = path.strip_prefix(REGISTRY_PATH)?;
    if !matches!(
        object_name.as_deref(),
        Some(STORE_REGISTRY | STREAM_REGISTRY)
    ) {
        return Some(Response::error("not a registry", 404));
    }
    Some(serve_op(sql, op, body))
}

fn serve_op(sql: SqlStorage, op: &str, body: &[u8]) -> Result<Response> {
    let failed = |e: StorageError| worker::Error::RustError(e.0);
    let registry = Registry::open(sql).map_err(failed)?;
    match op {
        "change" => {
            let change: Change = serde_json::from_slice(body)?;
            registry.apply(&change).map_err(failed)?;
            Ok(Response::empty()?.with_status(204))
        }
        "list" => {
            let request: ListRequest = serde_json::from_slice(body)?;
            let query = ListQuery {
                after: request.after,
                limit: request.limit,
            };
            Response::from_json(&registry.list(&query).map_err(failed)?)
        }
        _ => Response::error("unknown registry operation", 404),
    }
}

/// Sends `body` to the registry of `binding` (named `registry`).
async fn call(
    env: &Env,
    binding: &str,
    registry: &str,
    op: &str,
    body: String,
) -> Result<Response> {
    let path = format!("{REGISTRY_PATH}{op}");
    super::object_call::post(env, binding, registry, &path, body.into_bytes()).await
}

/// Records that `name` came into being (`present`) or is gone, in the registry of `binding`
/// (named `registry`).
pub async fn announce(
    env: &Env,
    binding: &str,
    registry: &str,
    name: &str,
    present: bool,
) -> Result<()> {
    let body = serde_json::to_string(&Change {
        name: name.to_owned(),
        present,
    })?;
    let response = call(env, binding, registry, "change", body).await?;
    match response.status_code() {
        204 => Ok(()),
        status => Err(worker::Error::RustError(format!(
            "registry answered {status}"
        ))),
    }
}

/// A page of the names in the registry of `binding` (named `registry`).
pub async fn list(
    env: &Env,
    binding: &str,
    registry: &str,
    query: &ListQuery,
) -> Result<ListPage<String>> {
    let body = serde_json::to_string(&ListRequest {
        after: query.after.clone(),
        limit: query.limit,
    })?;
    let mut response = call(env, binding, registry, "list", body).await?;
    match response.status_code() {
        200 => response.json().await,
        status => Err(worker::Error::RustError(format!(
            "registry answered {status}"
        ))),
    }
}
