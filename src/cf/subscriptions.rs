//! DO-RPC live subscriptions: kept in the sync object's SQLite so they survive hibernation
//! and restarts, and delivered in push order by one pump per object.

use crate::livestore::wire::{CallerContext, RequestId};
use serde::Deserialize;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use worker::{console_warn, Env, SqlStorage, SqlStorageValue};

const CREATE: &str = "CREATE TABLE IF NOT EXISTS do_rpc_subscriptions (clientDoId TEXT PRIMARY KEY NOT NULL, bindingName TEXT NOT NULL, storeId TEXT NOT NULL, requestId TEXT NOT NULL, payload TEXT, subscribedAt INTEGER NOT NULL) STRICT";

#[wasm_bindgen]
extern "C" {
    /// A client Durable Object that takes live updates (`ClientDoWithRpcCallback`).
    #[wasm_bindgen(extends = js_sys::Object)]
    type ClientDo;

    #[wasm_bindgen(method, catch, js_name = syncUpdateRpc)]
    fn sync_update_rpc(this: &ClientDo, payload: &JsValue) -> Result<js_sys::Promise, JsValue>;
}

/// One stored subscription.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscription {
    client_do_id: String,
    binding_name: String,
    request_id: String,
}

/// A live update waiting to be delivered.
struct Delivery {
    subscription: Subscription,
    /// The `PullResponse` JSON.
    page: String,
}

/// The subscriptions of one sync object and the queue of their deliveries.
pub struct Subscriptions {
    sql: SqlStorage,
    env: Env,
    /// The table exists (created once per object lifetime).
    ready: Cell<bool>,
    /// The stored subscriptions, read once and kept in step with every write below, so a
    /// push does not query SQLite for them. Only this object writes the table.
    cached: RefCell<Option<Vec<Subscription>>>,
    queue: RefCell<VecDeque<Delivery>>,
    pumping: Cell<bool>,
}

fn request_id_text(id: &RequestId) -> String {
    match id {
        RequestId::Text(s) => s.clone(),
        RequestId::Number(n) => n.to_string(),
    }
}

impl Subscriptions {
    /// The subscriptions kept in `sql`; callbacks reach clients through `env`'s bindings.
    pub fn new(sql: SqlStorage, env: Env) -> Rc<Self> {
        Rc::new(Subscriptions {
            sql,
            env,
            ready: Cell::new(false),
            cached: RefCell::new(None),
            queue: RefCell::default(),
            pumping: Cell::new(false),
        })
    }

    fn exec(&self, query: &str, params: Vec<SqlStorageValue>) -> worker::Result<worker::SqlCursor> {
        if !self.ready.get() {
            self.sql.exec(CREATE, None)?;
            self.ready.set(true);
        }
        self.sql.exec(query, params)
    }

    fn stored(&self) -> worker::Result<Vec<Subscription>> {
        if let Some(cached) = self.cached.borrow().as_ref() {
            return Ok(cached.clone());
        }
        let rows: Vec<Subscription> = self
            .exec(
                "SELECT clientDoId, bindingName, requestId FROM do_rpc_subscriptions",
                vec![],
            )?
            .to_array()?;
        *self.cached.borrow_mut() = Some(rows.clone());
        Ok(rows)
    }

    /// Subscribes a caller, replacing an earlier subscription of the same client object.
    pub fn subscribe(
        &self,
        caller: &CallerContext,
        store_id: &str,
        id: &RequestId,
        payload: Option<&serde_json::Value>,
    ) -> worker::Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO do_rpc_subscriptions (clientDoId, bindingName, storeId, requestId, payload, subscribedAt) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                caller.durable_object_id.as_str().into(),
                caller.binding_name.as_str().into(),
                store_id.into(),
                request_id_text(id).into(),
                payload
                    .map(|p| SqlStorageValue::from(p.to_string()))
                    .unwrap_or(SqlStorageValue::Null),
                SqlStorageValue::from(js_sys::Date::now()),
            ],
        )?;
        // Re-read on next use rather than mirror INSERT OR REPLACE here.
        self.cached.borrow_mut().take();
        Ok(())
    }

    /// Queues `pages` (live `PullResponse` JSON, in order) for every subscriber and makes sure
    /// a pump delivers them; `keep_alive` receives the pump so the object lives until it ends.
    pub fn publish(self: &Rc<Self>, pages: &[String], keep_alive: impl FnOnce(LocalPump)) {
        let subscriptions = match self.stored() {
            Ok(rows) => rows,
            Err(e) => {
                console_warn!("reading DO-RPC subscriptions failed: {e}");
                return;
            }
        };
        if subscriptions.is_empty() {
            return;
        }
        {
            let mut queue = self.queue.borrow_mut();
            for page in pages {
                for subscription in &subscriptions {
                    queue.push_back(Delivery {
                        subscription: subscription.clone(),
                        page: page.clone(),
                    });
                }
            }
        }
        if !self.pumping.replace(true) {
            let me = self.clone();
            keep_alive(Box::pin(async move { me.pump().await }));
        }
    }

    /// Delivers queued updates one at a time, so each client sees them in push order.
    async fn pump(&self) {
        loop {
            let next = self.queue.borrow_mut().pop_front();
            let Some(delivery) = next else {
                self.pumping.set(false);
                return;
            };
            if let Err(gone) = self.deliver(&delivery).await {
                // A client that is gone is unsubscribed rather than woken and billed forever.
                console_warn!(
                    "unsubscribing DO-RPC client {}: {gone}",
                    delivery.subscription.client_do_id
                );
                let id = delivery.subscription.client_do_id.clone();
                let _ = self.exec(
                    "DELETE FROM do_rpc_subscriptions WHERE clientDoId = ? AND requestId = ?",
                    vec![
                        id.as_str().into(),
                        delivery.subscription.request_id.as_str().into(),
                    ],
                );
                self.cached.borrow_mut().take();
                self.queue
                    .borrow_mut()
                    .retain(|d| d.subscription.client_do_id != id);
            }
        }
    }

    /// Calls the client's `syncUpdateRpc`. `Err` means the client is gone for good; transient
    /// (retryable) failures are logged and the subscription kept.
    async fn deliver(&self, delivery: &Delivery) -> Result<(), String> {
        let sub = &delivery.subscription;
        let namespace = self
            .env
            .durable_object(&sub.binding_name)
            .map_err(|e| format!("binding {}: {e}", sub.binding_name))?;
        let stub = namespace
            .id_from_string(&sub.client_do_id)
            .and_then(|id| id.get_stub())
            .map_err(|e| format!("client object {}: {e}", sub.client_do_id))?;
        let client: ClientDo = stub.into_rpc();
        let page = js_sys::JSON::parse(&delivery.page).map_err(|_| "invalid page".to_owned())?;
        let message = js_sys::Object::new();
        let values = js_sys::Array::of1(&page);
        let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&message, &k.into(), v);
        set("_tag", &"Chunk".into())
            .and_then(|_| set("requestId", &sub.request_id.as_str().into()))
            .and_then(|_| set("values", &values))
            .map_err(|_| "building the update failed".to_owned())?;
        let call = client
            .sync_update_rpc(&message)
            .map(JsFuture::from)
            .map_err(describe)?;
        match call.await {
            Ok(_) => Ok(()),
            Err(error) if is_retryable(&error) => {
                console_warn!(
                    "DO-RPC update to {} failed, will keep it: {}",
                    sub.client_do_id,
                    describe(error)
                );
                Ok(())
            }
            Err(error) => Err(describe(error)),
        }
    }
}

/// The pump future, handed to `wait_until`.
pub type LocalPump = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// Cloudflare marks transient Durable Object call failures with `retryable: true`.
fn is_retryable(error: &JsValue) -> bool {
    js_sys::Reflect::get(error, &"retryable".into())
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

fn describe(error: JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| "unknown error".into())
}
