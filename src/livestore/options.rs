//! Configuration of a sync Worker and of its sync Durable Object: the Rust counterparts of
//! `makeWorker` and `makeDurableObject` options. Platform-free; the Cloudflare edge reads them.

use super::chunk::PullPage;
use super::event::EventEncoded;
use super::query::Transport;
use super::wire::{Cursor, SyncError};
use crate::storage::segments::SegmentPolicy;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

/// What a hook or validator returns: `Err(message)` rejects.
pub type HookResult = Result<(), String>;

type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;
type Hook<A> = Rc<dyn Fn(A, HookContext) -> LocalFuture<HookResult>>;
type Notify<A> = Rc<dyn Fn(A, HookContext) -> LocalFuture<()>>;
type Validator = Rc<dyn Fn(Option<Value>, PayloadContext) -> LocalFuture<HookResult>>;

fn boxed<A: 'static, C: 'static, R: 'static, Fut>(
    f: impl Fn(A, C) -> Fut + 'static,
) -> Rc<dyn Fn(A, C) -> LocalFuture<R>>
where
    Fut: Future<Output = R> + 'static,
{
    Rc::new(move |a, c| Box::pin(f(a, c)))
}

/// The transports a sync object serves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Transports {
    pub ws: bool,
    pub http: bool,
    pub do_rpc: bool,
}

impl Default for Transports {
    fn default() -> Self {
        Transports {
            ws: true,
            http: true,
            do_rpc: true,
        }
    }
}

impl Transports {
    /// Only the given transports.
    pub fn only(transports: &[Transport]) -> Self {
        Transports {
            ws: transports.contains(&Transport::Ws),
            http: transports.contains(&Transport::Http),
            do_rpc: transports.contains(&Transport::DoRpc),
        }
    }

    /// Whether `transport` is enabled.
    pub fn allows(self, transport: Transport) -> bool {
        match transport {
            Transport::Ws => self.ws,
            Transport::Http => self.http,
            Transport::DoRpc => self.do_rpc,
        }
    }

    /// Parses a comma-separated list such as `ws,http,do-rpc`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut enabled = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "ws" => enabled.push(Transport::Ws),
                "http" => enabled.push(Transport::Http),
                "do-rpc" => enabled.push(Transport::DoRpc),
                other => {
                    return Err(format!(
                        "unknown transport `{other}` (expected ws, http, do-rpc)"
                    ))
                }
            }
        }
        Ok(Transports::only(&enabled))
    }
}

/// Where a store's event log lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// A D1 database, shared by all stores (one table each), by binding name.
    D1 { binding: String },
    /// The store's own Durable Object SQLite (same table layout).
    DoSqlite,
}

impl Default for Storage {
    fn default() -> Self {
        Storage::D1 {
            binding: "DB".into(),
        }
    }
}

impl Storage {
    /// Parses `d1`, `d1:<binding>` or `do-sqlite`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "d1" => Ok(Storage::default()),
            "do-sqlite" => Ok(Storage::DoSqlite),
            other => match other.strip_prefix("d1:") {
                Some(binding) if !binding.is_empty() => Ok(Storage::D1 {
                    binding: binding.into(),
                }),
                _ => Err(format!(
                    "unknown storage `{other}` (expected d1, d1:<binding> or do-sqlite)"
                )),
            },
        }
    }
}

/// What hooks learn about the connection or request they run for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HookContext {
    pub store_id: String,
    /// The client's sync payload.
    pub payload: Option<Value>,
    /// The request headers selected by [`SyncObjectOptions::forward_headers`], lowercased.
    pub headers: BTreeMap<String, String>,
}

/// What `validate_payload` learns about the request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PayloadContext {
    pub store_id: String,
    /// All request headers, lowercased names.
    pub headers: BTreeMap<String, String>,
    /// A read of the store's stream (`/v1/livestore/…`) rather than sync, which also writes.
    pub read_only: bool,
}

/// A push as hooks see it.
#[derive(Clone, Debug)]
pub struct PushMessage {
    pub batch: Vec<EventEncoded>,
    pub backend_id: Option<String>,
}

/// The outcome of a push, for `on_push_res`.
#[derive(Clone, Debug, PartialEq)]
pub struct PushOutcome {
    /// Events in the pushed batch.
    pub batch_size: usize,
    pub result: Result<(), SyncError>,
}

/// A pull as hooks see it.
#[derive(Clone, Debug, PartialEq)]
pub struct PullMessage {
    pub cursor: Option<Cursor>,
    pub live: bool,
}

/// One response of a pull, for `on_pull_res`: a `PullResponse` page or the error.
pub type PullOutcome = Result<PullPage, SyncError>;

/// The sync object's binding unless configured otherwise.
pub const DEFAULT_BINDING: &str = "SYNC_BACKEND_DO";

/// Options of the sync Durable Object (`makeDurableObject`).
#[derive(Clone, Default)]
pub struct SyncObjectOptions {
    pub(crate) on_push: Option<Hook<PushMessage>>,
    pub(crate) on_push_res: Option<Notify<PushOutcome>>,
    pub(crate) on_pull: Option<Hook<PullMessage>>,
    pub(crate) on_pull_res: Option<Notify<PullOutcome>>,
    pub(crate) forward_headers: Vec<String>,
    pub(crate) transports: Transports,
    pub(crate) response_headers: Vec<(String, String)>,
    pub(crate) storage: Storage,
    pub(crate) binding: Option<String>,
    pub(crate) close_on_token_expiry: bool,
    pub(crate) cold_segments: Option<SegmentPolicy>,
}

impl SyncObjectOptions {
    /// Defaults: D1 (binding `DB`), WebSocket and HTTP enabled, no hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs before a non-empty push is applied; an error rejects the push with
    /// `UnknownError` and nothing is stored.
    pub fn on_push<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(PushMessage, HookContext) -> Fut + 'static,
        Fut: Future<Output = HookResult> + 'static,
    {
        self.on_push = Some(boxed(hook));
        self
    }

    /// Runs after every push with its outcome.
    pub fn on_push_res<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(PushOutcome, HookContext) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.on_push_res = Some(boxed(hook));
        self
    }

    /// Runs before a pull; an error fails the pull with `UnknownError`.
    pub fn on_pull<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(PullMessage, HookContext) -> Fut + 'static,
        Fut: Future<Output = HookResult> + 'static,
    {
        self.on_pull = Some(boxed(hook));
        self
    }

    /// Runs for every catch-up response of a pull (or its error), after it was sent.
    pub fn on_pull_res<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(PullOutcome, HookContext) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.on_pull_res = Some(boxed(hook));
        self
    }

    /// Request headers to pass to hooks in [`HookContext::headers`] (kept with each
    /// WebSocket connection, read per HTTP request). Case-insensitive.
    pub fn forward_headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.forward_headers = names
            .into_iter()
            .map(|n| n.as_ref().to_ascii_lowercase())
            .collect();
        self
    }

    /// Which transports to serve; a request for another gets a 400.
    pub fn enabled_transports(mut self, transports: Transports) -> Self {
        self.transports = transports;
        self
    }

    /// Headers added to every HTTP-transport response.
    pub fn http_response_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.response_headers.push((name.into(), value.into()));
        self
    }

    /// Where event logs live.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// The storage choice.
    pub fn storage_kind(&self) -> &Storage {
        &self.storage
    }

    /// Moves the oldest events of a store kept in DO SQLite ([`Storage::DoSqlite`]) to the cold
    /// tier (the R2 bucket bound as `SEGMENTS`) a full segment at a time under `policy`; reads
    /// stitch the tiers, so clients see the same log. Off by default: a store's table then holds
    /// only its recent events, which the TypeScript server could not read. D1 tables stay whole.
    pub fn cold_segments(mut self, policy: SegmentPolicy) -> Self {
        self.cold_segments = Some(policy);
        self
    }

    /// The cold-segment policy, when stores move their oldest events to the cold tier.
    pub fn cold_segment_policy(&self) -> Option<SegmentPolicy> {
        match self.storage {
            Storage::DoSqlite => self.cold_segments,
            Storage::D1 { .. } => None,
        }
    }

    /// The binding of this object class in the Worker (default [`DEFAULT_BINDING`]): stores
    /// kept in DO SQLite enter the admin API's registry through it.
    pub fn binding(mut self, binding: impl Into<String>) -> Self {
        self.binding = Some(binding.into());
        self
    }

    /// Closes a WebSocket when the token its client synced with (the sync payload's
    /// `authToken`, verified by the Worker, e.g. with `JwtAuth`) expires: the client reconnects
    /// and must bring a valid token. Off by default.
    pub fn close_sockets_on_token_expiry(mut self, on: bool) -> Self {
        self.close_on_token_expiry = on;
        self
    }

    /// When a socket whose hook context is `context` must close (seconds since the epoch):
    /// the expiry of its sync payload's `authToken`, with `close_sockets_on_token_expiry`.
    pub fn socket_expiry(&self, context: &HookContext) -> Option<u64> {
        if !self.close_on_token_expiry {
            return None;
        }
        let token = context.payload.as_ref()?.get("authToken")?.as_str()?;
        crate::auth::token::unverified_expiry(token)
    }

    /// The binding of this object class.
    pub fn binding_name(&self) -> &str {
        self.binding.as_deref().unwrap_or(DEFAULT_BINDING)
    }

    /// The enabled transports.
    pub fn transports(&self) -> Transports {
        self.transports
    }

    /// Picks the forwarded headers out of all request headers (names lowercased).
    pub fn select_headers<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> BTreeMap<String, String> {
        if self.forward_headers.is_empty() {
            return BTreeMap::new();
        }
        headers
            .into_iter()
            .filter_map(|(name, value)| {
                let name = name.to_ascii_lowercase();
                self.forward_headers
                    .contains(&name)
                    .then(|| (name, value.to_owned()))
            })
            .collect()
    }
}

/// A typed payload: checks that payloads deserialize into it and exports its JSON Schema.
#[derive(Clone)]
pub(crate) struct PayloadSchema {
    pub(crate) schema: Value,
    pub(crate) check: fn(Option<&Value>) -> HookResult,
}

fn check_payload<P: serde::de::DeserializeOwned>(payload: Option<&Value>) -> HookResult {
    let value = payload.cloned().unwrap_or(Value::Null);
    serde_json::from_value::<P>(value)
        .map(|_| ())
        .map_err(|e| format!("invalid payload: {e}"))
}

/// Options of the sync Worker (`makeWorker`).
#[derive(Clone)]
pub struct WorkerOptions {
    pub(crate) validate_payload: Option<Validator>,
    pub(crate) payload_schema: Option<PayloadSchema>,
    pub(crate) enable_cors: bool,
    pub(crate) binding: String,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            validate_payload: None,
            payload_schema: None,
            enable_cors: false,
            binding: DEFAULT_BINDING.into(),
        }
    }
}

impl WorkerOptions {
    /// Defaults: no validation, CORS off, Durable Object binding `SYNC_BACKEND_DO`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the sync payload of every sync request (WebSocket upgrade or HTTP call)
    /// before it reaches the Durable Object; `Err(message)` answers 400 with the message.
    pub fn validate_payload<F, Fut>(mut self, validate: F) -> Self
    where
        F: Fn(Option<Value>, PayloadContext) -> Fut + 'static,
        Fut: Future<Output = HookResult> + 'static,
    {
        self.validate_payload = Some(boxed(validate));
        self
    }

    /// Requires payloads to deserialize into `P` (checked before `validate_payload`) and
    /// serves `P`'s JSON Schema at `GET /sync/schema`.
    pub fn payload_schema<P>(mut self) -> Self
    where
        P: serde::de::DeserializeOwned + schemars::JsonSchema,
    {
        let schema = serde_json::to_value(schemars::schema_for!(P)).unwrap_or(Value::Null);
        self.payload_schema = Some(PayloadSchema {
            schema,
            check: check_payload::<P>,
        });
        self
    }

    /// Answers CORS preflights and adds CORS headers to every response.
    pub fn enable_cors(mut self, enable: bool) -> Self {
        self.enable_cors = enable;
        self
    }

    /// The binding name of the sync Durable Object namespace.
    pub fn durable_object_binding(mut self, binding: impl Into<String>) -> Self {
        self.binding = binding.into();
        self
    }

    /// The JSON Schema of the typed payload, if one is set.
    pub fn payload_json_schema(&self) -> Option<&Value> {
        self.payload_schema.as_ref().map(|s| &s.schema)
    }

    /// Runs the typed check and the validator on a payload.
    pub async fn check_payload(&self, payload: Option<&Value>, ctx: PayloadContext) -> HookResult {
        if let Some(schema) = &self.payload_schema {
            (schema.check)(payload)?;
        }
        match &self.validate_payload {
            Some(validate) => validate(payload.cloned(), ctx).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use serde_json::json;

    #[test]
    fn sockets_expire_with_their_token_only_when_asked_to() {
        use crate::auth::token::{sign, Claims, Scope};
        let claims = Claims {
            sub: "p".into(),
            scope: Scope::Write,
            exp: 1_234,
            nbf: None,
            iat: None,
            stream_id: None,
            store: Some("s".into()),
        };
        let token = sign(&claims, "k").unwrap();
        let context = HookContext {
            store_id: "s".into(),
            payload: Some(serde_json::json!({ "authToken": token })),
            headers: Default::default(),
        };
        assert_eq!(SyncObjectOptions::new().socket_expiry(&context), None);
        let options = SyncObjectOptions::new().close_sockets_on_token_expiry(true);
        assert_eq!(options.socket_expiry(&context), Some(1_234));
        let without = HookContext {
            payload: None,
            ..context
        };
        assert_eq!(options.socket_expiry(&without), None);
    }

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Auth {
        auth_token: String,
    }

    #[test]
    fn transports_parse() {
        assert_eq!(
            Transports::parse("ws"),
            Ok(Transports {
                ws: true,
                http: false,
                do_rpc: false
            })
        );
        assert_eq!(
            Transports::parse(" ws , http,do-rpc "),
            Ok(Transports::default())
        );
        assert!(Transports::parse("ws,sse").is_err());
        assert!(!Transports::parse("http").unwrap().allows(Transport::Ws));
    }

    #[test]
    fn storage_parses() {
        assert_eq!(Storage::parse("d1"), Ok(Storage::default()));
        assert_eq!(Storage::parse("do-sqlite"), Ok(Storage::DoSqlite));
        assert_eq!(
            Storage::parse("d1:EVENTS"),
            Ok(Storage::D1 {
                binding: "EVENTS".into()
            })
        );
        assert!(Storage::parse("kv").is_err());
    }

    #[test]
    fn forwards_only_selected_headers() {
        let options = SyncObjectOptions::new().forward_headers(["X-User-Id"]);
        let selected = options.select_headers([("x-user-id", "u1"), ("authorization", "secret")]);
        assert_eq!(
            selected,
            BTreeMap::from([("x-user-id".to_owned(), "u1".to_owned())])
        );
        assert!(SyncObjectOptions::new()
            .select_headers([("x-user-id", "u1")])
            .is_empty());
    }

    #[test]
    fn typed_payload_is_checked_and_exported() {
        let options = WorkerOptions::new()
            .payload_schema::<Auth>()
            .validate_payload(|payload, ctx| async move {
                match payload.as_ref().and_then(|p| p.get("authToken")) {
                    Some(token) if token == "t" && ctx.store_id == "s" => Ok(()),
                    _ => Err("invalid auth token".to_owned()),
                }
            });
        let ctx = || PayloadContext {
            read_only: false,
            store_id: "s".into(),
            headers: BTreeMap::new(),
        };
        assert_eq!(
            block_on(options.check_payload(Some(&json!({"authToken":"t"})), ctx())),
            Ok(())
        );
        assert_eq!(
            block_on(options.check_payload(Some(&json!({"authToken":"x"})), ctx())),
            Err("invalid auth token".into())
        );
        let missing = block_on(options.check_payload(None, ctx())).unwrap_err();
        assert!(missing.starts_with("invalid payload"), "{missing}");
        let wrong_type = block_on(options.check_payload(Some(&json!({"authToken": 1})), ctx()));
        assert!(wrong_type.is_err());
        let schema = options.payload_json_schema().unwrap();
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["authToken"]));
        assert_eq!(schema["properties"]["authToken"]["type"], "string");
    }

    #[test]
    fn no_validation_accepts_anything() {
        let options = WorkerOptions::new();
        assert_eq!(
            block_on(options.check_payload(None, PayloadContext::default())),
            Ok(())
        );
        assert!(options.payload_json_schema().is_none());
    }
}
