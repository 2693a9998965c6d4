//! DO-RPC live subscriptions: kept in the sync object's SQLite with a durable cursor each (the
//! last event delivered), and fed from the event log by one pump per object. An update is
//! derived from the log after the subscriber's cursor, so an eviction, a crash or a failed call
//! never loses or reorders one: the pump delivers what is owed when the object runs again (a
//! crash between a delivery and the saving of its cursor delivers that page again).

use super::sync_object::Backend;
use crate::livestore::chunk::PullPage;
use crate::livestore::wire::{CallerContext, RequestId};
use crate::stream::SeqNum;
use serde::Deserialize;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use worker::{console_warn, Delay, Env, SqlStorage, SqlStorageValue};

const CREATE: &str = "CREATE TABLE IF NOT EXISTS do_rpc_subscriptions (clientDoId TEXT PRIMARY KEY NOT NULL, bindingName TEXT NOT NULL, storeId TEXT NOT NULL, requestId TEXT NOT NULL, payload TEXT, subscribedAt INTEGER NOT NULL, delivered INTEGER, effect4 INTEGER) STRICT";
/// Tables of earlier versions have no cursor; their subscribers start at the head.
const ADD_CURSOR: &str = "ALTER TABLE do_rpc_subscriptions ADD COLUMN delivered INTEGER";
/// Tables of earlier versions do not tell Effect 4 clients apart; theirs are 0.4.0 clients.
const ADD_FLAVOR: &str = "ALTER TABLE do_rpc_subscriptions ADD COLUMN effect4 INTEGER";

/// What the JS wrapper provides to pack an Effect 4 update (Effect RPC's msgpack, records on).
const PACK_HOOK: &str = "__livestoreSyncPackRpc";

/// Retries of a call that failed with a retryable error wait this long, doubling per failure...
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// ...up to this.
const RETRY_MAX: Duration = Duration::from_secs(5);

#[wasm_bindgen]
extern "C" {
    /// A client Durable Object that takes live updates (`ClientDoWithRpcCallback`).
    #[wasm_bindgen(extends = js_sys::Object)]
    type ClientDo;

    /// 0.4.0 clients: the update as a plain object.
    #[wasm_bindgen(method, catch, js_name = syncUpdateRpc)]
    fn sync_update_rpc(this: &ClientDo, payload: &JsValue) -> Result<js_sys::Promise, JsValue>;

    /// Effect 4 clients (LiveStore `main`, PR #1545): the update packed with msgpack, and the
    /// store, so that a client object rebuilt after eviction can reopen it first.
    #[wasm_bindgen(method, catch, js_name = syncUpdateRpc)]
    fn sync_update_rpc_packed(
        this: &ClientDo,
        payload: &js_sys::Uint8Array,
        store_id: &str,
    ) -> Result<js_sys::Promise, JsValue>;
}

/// One stored subscription.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Subscription {
    client_do_id: String,
    binding_name: String,
    store_id: String,
    request_id: String,
    /// The last event delivered (`None` for a subscription of an earlier version).
    delivered: Option<f64>,
    /// 1 when the client speaks Effect 4 (numeric request ids).
    effect4: Option<f64>,
}

/// Why a call did not deliver.
enum Failure {
    /// Try again later (Cloudflare's `retryable: true`).
    Retryable(String),
    /// The client is gone for good.
    Gone(String),
}

/// A subscriber whose last call failed with a retryable error.
struct Backoff {
    failures: u32,
    until_ms: f64,
}

/// The subscriptions of one sync object and the pump that feeds them.
pub struct Subscriptions {
    sql: SqlStorage,
    env: Env,
    /// The table exists (created once per object lifetime).
    ready: Cell<bool>,
    pumping: Cell<bool>,
    /// Appends happened since the pump last read the subscriptions.
    kicked: Cell<bool>,
    /// Whether any subscription is stored, once known: a push to a store without DO-RPC
    /// subscribers costs no query. Only this object writes the table.
    any: Cell<Option<bool>>,
    backoff: RefCell<HashMap<String, Backoff>>,
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
            pumping: Cell::new(false),
            kicked: Cell::new(false),
            any: Cell::new(None),
            backoff: RefCell::default(),
        })
    }

    fn exec(&self, query: &str, params: Vec<SqlStorageValue>) -> worker::Result<worker::SqlCursor> {
        if !self.ready.get() {
            self.sql.exec(CREATE, None)?;
            // Fail when the column exists, which is all they check.
            let _ = self.sql.exec(ADD_CURSOR, None);
            let _ = self.sql.exec(ADD_FLAVOR, None);
            self.ready.set(true);
        }
        self.sql.exec(query, params)
    }

    fn stored(&self) -> worker::Result<Vec<Subscription>> {
        let rows: Vec<Subscription> = self
            .exec(
                "SELECT clientDoId, bindingName, storeId, requestId, delivered, effect4 FROM do_rpc_subscriptions",
                vec![],
            )?
            .to_array()?;
        self.any.set(Some(!rows.is_empty()));
        Ok(rows)
    }

    fn save_cursor(&self, sub: &Subscription, delivered: SeqNum) -> worker::Result<()> {
        self.exec(
            "UPDATE do_rpc_subscriptions SET delivered = ? WHERE clientDoId = ? AND requestId = ?",
            vec![
                SqlStorageValue::from(delivered.get() as f64),
                sub.client_do_id.as_str().into(),
                sub.request_id.as_str().into(),
            ],
        )?;
        Ok(())
    }

    fn unsubscribe(&self, sub: &Subscription) {
        if let Err(e) = self.exec(
            "DELETE FROM do_rpc_subscriptions WHERE clientDoId = ? AND requestId = ?",
            vec![
                sub.client_do_id.as_str().into(),
                sub.request_id.as_str().into(),
            ],
        ) {
            console_warn!("removing DO-RPC subscription {}: {e}", sub.client_do_id);
        }
        self.backoff.borrow_mut().remove(&sub.client_do_id);
        self.any.set(None);
    }

    /// How many client objects are subscribed (admin).
    pub fn count(&self) -> worker::Result<u64> {
        Ok(self.stored()?.len() as u64)
    }

    /// Drops every subscription (admin reset and delete): their clients pull again, and meet
    /// the new backend.
    pub fn clear(&self) -> worker::Result<()> {
        self.exec("DELETE FROM do_rpc_subscriptions", vec![])?;
        self.backoff.borrow_mut().clear();
        self.any.set(Some(false));
        Ok(())
    }

    /// Subscribes a caller from position `at` (what its catch-up delivered), replacing an
    /// earlier subscription of the same client object.
    pub fn subscribe(
        &self,
        caller: &CallerContext,
        store_id: &str,
        id: &RequestId,
        payload: Option<&serde_json::Value>,
        at: SeqNum,
    ) -> worker::Result<()> {
        self.exec(
            "INSERT OR REPLACE INTO do_rpc_subscriptions (clientDoId, bindingName, storeId, requestId, payload, subscribedAt, delivered, effect4) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                caller.durable_object_id.as_str().into(),
                caller.binding_name.as_str().into(),
                store_id.into(),
                request_id_text(id).into(),
                payload
                    .map(|p| SqlStorageValue::from(p.to_string()))
                    .unwrap_or(SqlStorageValue::Null),
                SqlStorageValue::from(js_sys::Date::now()),
                SqlStorageValue::from(at.get() as f64),
                SqlStorageValue::from(f64::from(u8::from(matches!(id, RequestId::Number(_))))),
            ],
        )?;
        self.backoff
            .borrow_mut()
            .remove(caller.durable_object_id.as_str());
        self.any.set(Some(true));
        Ok(())
    }

    /// The log has grown (or the object has just started): makes sure a pump delivers what
    /// subscribers are owed; `keep_alive` receives the pump so the object lives until it ends.
    pub fn kick(self: &Rc<Self>, backend: Rc<Backend>, keep_alive: impl FnOnce(LocalPump)) {
        if self.any.get() == Some(false) {
            return;
        }
        self.kicked.set(true);
        if !self.pumping.replace(true) {
            let me = self.clone();
            keep_alive(Box::pin(async move { me.pump(&backend).await }));
        }
    }

    /// Delivers what each subscriber is owed, a page at a time and in log order, until every
    /// one is at the head or waits to retry.
    async fn pump(&self, backend: &Backend) {
        let mut read_failures = 0u32;
        loop {
            self.kicked.set(false);
            match self.round(backend).await {
                Ok(Round::Delivered) => read_failures = 0,
                Ok(Round::Idle) if !self.kicked.get() => break,
                Ok(Round::Idle) => {}
                Ok(Round::WaitUntil(ms)) => {
                    let wait = (ms - js_sys::Date::now()).clamp(0.0, RETRY_MAX.as_millis() as f64);
                    Delay::from(Duration::from_millis(wait as u64)).await;
                }
                Err(e) => {
                    // Storage failed: try again a little later, then leave it to the next kick.
                    read_failures += 1;
                    console_warn!("DO-RPC deliveries: {e}");
                    if read_failures > 5 {
                        break;
                    }
                    Delay::from(retry_delay(read_failures)).await;
                }
            }
        }
        self.pumping.set(false);
    }

    /// One page for every subscriber that is owed one and not waiting to retry; subscribers at
    /// the same position share one read of the log.
    async fn round(&self, backend: &Backend) -> Result<Round, String> {
        let subscriptions = self.stored().map_err(|e| e.to_string())?;
        if subscriptions.is_empty() {
            return Ok(Round::Idle);
        }
        let now = js_sys::Date::now();
        let mut waiting: Option<f64> = None;
        let mut by_position: BTreeMap<SeqNum, Vec<Subscription>> = BTreeMap::new();
        for sub in subscriptions {
            if let Some(backoff) = self.backoff.borrow().get(&sub.client_do_id) {
                if backoff.until_ms > now {
                    waiting = Some(waiting.map_or(backoff.until_ms, |w| w.min(backoff.until_ms)));
                    continue;
                }
            }
            let position = match sub.delivered.and_then(SeqNum::from_f64) {
                Some(position) => position,
                None => {
                    let head = backend.head().await.map_err(|e| format!("{e:?}"))?;
                    self.save_cursor(&sub, head).map_err(|e| e.to_string())?;
                    continue;
                }
            };
            by_position.entry(position).or_default().push(sub);
        }
        let mut delivered = false;
        for (position, group) in by_position {
            let pages = backend
                .live_pages_after(position)
                .await
                .map_err(|e| format!("reading the log: {e:?}"))?;
            for sub in &group {
                delivered |= self.deliver_pages(sub, position, &pages).await?;
            }
        }
        Ok(if delivered {
            Round::Delivered
        } else if let Some(until) = waiting {
            Round::WaitUntil(until)
        } else {
            Round::Idle
        })
    }

    /// Delivers `pages` (what follows `position`) to one subscriber, saving its cursor after
    /// each; stops at the first failure. Whether any page went.
    async fn deliver_pages(
        &self,
        sub: &Subscription,
        position: SeqNum,
        pages: &[PullPage],
    ) -> Result<bool, String> {
        let mut at = position.get();
        for (i, page) in pages.iter().enumerate() {
            match self.deliver(sub, &page.json).await {
                Ok(()) => {
                    at += page.events as u64;
                    let Some(delivered) = SeqNum::new(at) else {
                        return Err(format!("position {at} out of range"));
                    };
                    self.save_cursor(sub, delivered)
                        .map_err(|e| e.to_string())?;
                    self.backoff.borrow_mut().remove(&sub.client_do_id);
                }
                Err(Failure::Retryable(error)) => {
                    let mut backoff = self.backoff.borrow_mut();
                    let entry = backoff.entry(sub.client_do_id.clone()).or_insert(Backoff {
                        failures: 0,
                        until_ms: 0.0,
                    });
                    entry.failures += 1;
                    entry.until_ms =
                        js_sys::Date::now() + retry_delay(entry.failures).as_millis() as f64;
                    console_warn!(
                        "DO-RPC update to {} failed, will retry: {error}",
                        sub.client_do_id
                    );
                    return Ok(i > 0);
                }
                Err(Failure::Gone(error)) => {
                    // A client that is gone is unsubscribed rather than woken and billed forever.
                    console_warn!("unsubscribing DO-RPC client {}: {error}", sub.client_do_id);
                    self.unsubscribe(sub);
                    return Ok(i > 0);
                }
            }
        }
        Ok(!pages.is_empty())
    }

    /// Calls the client's `syncUpdateRpc` with one live page.
    async fn deliver(&self, sub: &Subscription, page: &str) -> Result<(), Failure> {
        let namespace = self
            .env
            .durable_object(&sub.binding_name)
            .map_err(|e| Failure::Gone(format!("binding {}: {e}", sub.binding_name)))?;
        let stub = namespace
            .id_from_string(&sub.client_do_id)
            .and_then(|id| id.get_stub())
            .map_err(|e| Failure::Gone(format!("client object {}: {e}", sub.client_do_id)))?;
        let client: ClientDo = stub.into_rpc();
        let page =
            js_sys::JSON::parse(page).map_err(|_| Failure::Gone("invalid page".to_owned()))?;
        let message = js_sys::Object::new();
        let values = js_sys::Array::of1(&page);
        let set = |k: &str, v: &JsValue| js_sys::Reflect::set(&message, &k.into(), v);
        set("_tag", &"Chunk".into())
            .and_then(|_| set("requestId", &sub.request_id.as_str().into()))
            .and_then(|_| set("values", &values))
            .map_err(|_| Failure::Gone("building the update failed".to_owned()))?;
        let call = if sub.effect4 == Some(1.0) {
            let packed = pack(&message).map_err(Failure::Gone)?;
            client.sync_update_rpc_packed(&packed, &sub.store_id)
        } else {
            client.sync_update_rpc(&message)
        };
        let call = call
            .map(JsFuture::from)
            .map_err(|e| Failure::Gone(describe(e)))?;
        match call.await {
            Ok(_) => Ok(()),
            Err(error) if is_retryable(&error) => Err(Failure::Retryable(describe(error))),
            Err(error) => Err(Failure::Gone(describe(error))),
        }
    }
}

/// `message` packed as Effect RPC's msgpack serialization packs it, by the JS wrapper.
fn pack(message: &JsValue) -> Result<js_sys::Uint8Array, String> {
    let hook = js_sys::Reflect::get(&js_sys::global(), &PACK_HOOK.into())
        .ok()
        .and_then(|hook| hook.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| {
            format!("the Worker's JS wrapper does not define {PACK_HOOK} (client-ts/src/sync-backend-do.ts)")
        })?;
    hook.call1(&JsValue::NULL, message)
        .map_err(describe)?
        .dyn_into::<js_sys::Uint8Array>()
        .map_err(|_| format!("{PACK_HOOK} did not return bytes"))
}

/// What a round of the pump did.
enum Round {
    /// Some subscriber got a page: there may be more.
    Delivered,
    /// Nobody is owed anything now.
    Idle,
    /// Some subscriber is owed pages but waits to retry until then (ms since the epoch).
    WaitUntil(f64),
}

/// The wait before retry number `failures` (1, 2, …).
fn retry_delay(failures: u32) -> Duration {
    let doubled = RETRY_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(8));
    doubled.min(RETRY_MAX)
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
