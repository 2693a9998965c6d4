//! The Durable Streams edge (wasm only): the Worker's routing of `/v1/stream/*` and the
//! stream Durable Object, one per stream path (`STREAMS`, `idFromName(path)`).
//!
//! The protocol lives in [`crate::durable_streams::engine`]; this module reads requests,
//! runs engine operations inside SQLite transactions, and does what needs the platform:
//! long-poll waiters held in memory and woken on appends, SSE pumped from the object as a
//! streaming response, fork acquire/release calls between stream objects (internal paths
//! the Worker never forwards), and the expiry alarm.

use crate::durable_streams::engine::{
    self, AcquireRequest, Effect, Handled, LongPoll, Outcome, Snapshot, SseStart,
};
use crate::durable_streams::store::StorageError;
use crate::faults::CrashPoint;
use crate::storage::stream_sqlite::{transaction, SqliteStreamStore};
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;
use worker::{
    Date, Delay, Env, Headers, Method, Request, RequestInit, Response, Result, ScheduledTime, State,
};

/// The binding of the stream Durable Object.
pub const STREAMS_BINDING: &str = "STREAMS";
/// Paths served as streams.
pub const STREAM_PREFIX: &str = "/v1/stream/";
/// Object-to-object calls; the Worker forwards only [`STREAM_PREFIX`] paths, so these are
/// unreachable from outside.
const INTERNAL_PREFIX: &str = "/__ds_internal/";
/// Long-poll timeout unless the var `DS_LONG_POLL_TIMEOUT_MS` says otherwise.
const DEFAULT_LONG_POLL_MS: u64 = 20_000;
/// SSE connections end after this long; clients reconnect from their last offset.
const SSE_RECYCLE_MS: u64 = 60_000;

const ALLOW_HEADERS: &str = "content-type, stream-seq, stream-ttl, stream-expires-at, \
stream-closed, stream-forked-from, stream-fork-offset, stream-fork-sub-offset, producer-id, \
producer-epoch, producer-seq, if-none-match, authorization, cache-control";
const EXPOSE_HEADERS: &str = "stream-next-offset, stream-cursor, stream-up-to-date, \
stream-closed, stream-ttl, stream-expires-at, stream-sse-data-encoding, producer-epoch, \
producer-seq, producer-expected-seq, producer-received-seq, etag, location, content-type";

/// Whether the Worker routes `path` to a stream object.
pub fn is_stream_path(path: &str) -> bool {
    path.starts_with(STREAM_PREFIX)
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// The headers every stream response carries (security and CORS).
fn common_headers(headers: &Headers) -> Result<()> {
    headers.set("x-content-type-options", "nosniff")?;
    headers.set("cross-origin-resource-policy", "cross-origin")?;
    headers.set("access-control-allow-origin", "*")?;
    headers.set("access-control-expose-headers", EXPOSE_HEADERS)?;
    Ok(())
}

fn plain(status: u16, message: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "text/plain; charset=utf-8")?;
    common_headers(&headers)?;
    Ok(Response::from_bytes(message.as_bytes().to_vec())?
        .with_status(status)
        .with_headers(headers))
}

fn to_response(response: engine::Response) -> Result<Response> {
    let headers = Headers::new();
    for (name, value) in &response.headers {
        headers.append(name, value)?;
    }
    common_headers(&headers)?;
    let out = if response.body.is_empty() {
        Response::empty()?
    } else {
        Response::from_bytes(response.body)?
    };
    Ok(out.with_status(response.status).with_headers(headers))
}

/// The Worker side: answers preflights and forwards stream requests to their object.
pub async fn worker_fetch(req: Request, env: &Env) -> Result<Response> {
    if req.method() == Method::Options {
        let headers = Headers::new();
        common_headers(&headers)?;
        headers.set(
            "access-control-allow-methods",
            "GET, HEAD, POST, PUT, DELETE, OPTIONS",
        )?;
        headers.set("access-control-allow-headers", ALLOW_HEADERS)?;
        headers.set("access-control-max-age", "86400")?;
        return Ok(Response::empty()?.with_status(204).with_headers(headers));
    }
    let path = req.path();
    if path.split('/').any(|segment| segment == "__ds") {
        return plain(404, "not found");
    }
    let forwarded = async {
        let stub = env
            .durable_object(STREAMS_BINDING)?
            .id_from_name(&path)?
            .get_stub()?;
        stub.fetch_with_request(req).await
    };
    match forwarded.await {
        Ok(response) => Ok(response),
        Err(e) => plain(500, &format!("stream object failed: {e}")),
    }
}

/// A request as the object keeps it while it works on it.
struct OwnedRequest {
    method: String,
    url: String,
    path: String,
    query: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl OwnedRequest {
    fn view(&self) -> engine::Request<'_> {
        engine::Request {
            method: &self.method,
            url: &self.url,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

struct Inner {
    state: State,
    env: Env,
    store: Result<SqliteStreamStore, StorageError>,
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    long_poll_ms: u64,
}

/// The stream Durable Object's logic; the shipped Worker wraps it as `StreamObject`.
pub struct StreamsObject {
    inner: Rc<Inner>,
}

impl StreamsObject {
    pub fn new(state: State, env: Env) -> StreamsObject {
        let long_poll_ms = env
            .var("DS_LONG_POLL_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.to_string().trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_LONG_POLL_MS);
        let store = SqliteStreamStore::open(state.storage());
        StreamsObject {
            inner: Rc::new(Inner {
                state,
                env,
                store,
                waiters: RefCell::new(Vec::new()),
                long_poll_ms,
            }),
        }
    }

    pub async fn fetch(&self, req: Request) -> Result<Response> {
        match self.serve(req).await {
            Ok(response) => Ok(response),
            Err(e) => plain(500, &e.to_string()),
        }
    }

    /// The expiry alarm: removes an expired stream, or re-arms for its new expiry.
    pub async fn alarm(&self) -> Result<Response> {
        let store = self.inner.store()?;
        let (next, effects) = transaction(&store, |s| engine::expire(s, now_ms()))
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
        self.inner.apply(effects).await;
        if let Some(at_ms) = next {
            self.inner.arm(at_ms).await;
        }
        Response::ok("")
    }

    async fn serve(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        let url = req.url()?;
        let headers = super::header_map(req.headers());
        let Some(body) = super::read_body(&mut req, engine::MAX_APPEND_BYTES).await? else {
            return to_response(engine::Response::new(413));
        };
        if let Some(op) = path.strip_prefix(INTERNAL_PREFIX) {
            return self.internal(op, &body).await;
        }
        let mut base = url.clone();
        base.set_query(None);
        let owned = Rc::new(OwnedRequest {
            method: req.method().to_string(),
            url: base.to_string(),
            path,
            query: url.query().unwrap_or_default().to_owned(),
            headers,
            body,
        });
        let inner = &self.inner;
        let store = inner.store()?;
        let request = owned.clone();
        let handled = run(&store, move |s| {
            engine::handle(s, &request.view(), now_ms())
        })?;
        crate::faults::crash_point(CrashPoint::StreamAfterCommit).await;
        let outcome = inner.settle(handled).await;
        match outcome {
            Outcome::Reply(response) => to_response(response),
            Outcome::Fork { source, request } => {
                let answer = inner.acquire(&source, &request).await;
                let request = owned.clone();
                let handled = run(&store, move |s| {
                    engine::finish_fork(s, &request.view(), answer, now_ms())
                })?;
                match inner.settle(handled).await {
                    Outcome::Reply(response) => to_response(response),
                    _ => plain(500, "unexpected fork outcome"),
                }
            }
            Outcome::Wait(poll) => inner.clone().long_poll(owned, poll).await,
            Outcome::Sse(start) => sse_response(inner.clone(), start),
        }
    }

    async fn internal(&self, op: &str, body: &[u8]) -> Result<Response> {
        let inner = &self.inner;
        let store = inner.store()?;
        match op {
            "acquire" => {
                let request: AcquireRequest = match serde_json::from_slice(body) {
                    Ok(request) => request,
                    Err(e) => return plain(400, &format!("bad acquire request: {e}")),
                };
                let (answer, effects) =
                    run(&store, move |s| engine::acquire(s, &request, now_ms()))?;
                inner.apply(effects).await;
                match answer {
                    Ok(snapshot) => {
                        let json = serde_json::to_vec(&snapshot)
                            .map_err(|e| worker::Error::RustError(e.to_string()))?;
                        Ok(Response::from_bytes(json)?.with_status(200))
                    }
                    Err(response) => to_response(response),
                }
            }
            "release" => {
                let effects = run(&store, engine::release)?;
                inner.apply(effects).await;
                Ok(Response::empty()?.with_status(204))
            }
            _ => plain(404, "unknown internal operation"),
        }
    }
}

/// Runs an engine operation in one transaction.
fn run<T: 'static>(
    store: &SqliteStreamStore,
    body: impl FnOnce(&SqliteStreamStore) -> std::result::Result<T, StorageError> + 'static,
) -> Result<T> {
    transaction(store, body).map_err(|e| worker::Error::RustError(e.to_string()))
}

impl Inner {
    fn store(&self) -> Result<SqliteStreamStore> {
        self.store
            .clone()
            .map_err(|e| worker::Error::RustError(e.to_string()))
    }

    /// Carries out a request's effects and returns its outcome.
    async fn settle(&self, handled: Handled) -> Outcome {
        self.apply(handled.effects).await;
        handled.outcome
    }

    async fn apply(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Notify => self.notify(),
                Effect::Release { source } => {
                    if let Err(e) = self.call(&source, "release", Vec::new()).await {
                        worker::console_error!("releasing fork source {source}: {e}");
                    }
                }
                Effect::Alarm { at_ms } => self.arm(at_ms).await,
            }
        }
    }

    fn notify(&self) {
        for waiter in self.waiters.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }

    fn subscribe(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.borrow_mut();
        // Readers that timed out or went away.
        waiters.retain(|waiter| !waiter.is_canceled());
        waiters.push(tx);
        rx
    }

    async fn arm(&self, at_ms: i64) {
        // Milliseconds since the epoch, well within f64's exact range.
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(at_ms as f64));
        if let Err(e) = self
            .state
            .storage()
            .set_alarm(ScheduledTime::new(date))
            .await
        {
            worker::console_error!("setting the expiry alarm: {e}");
        }
    }

    /// An internal call to the stream object at `path`.
    async fn call(&self, path: &str, op: &str, body: Vec<u8>) -> Result<Response> {
        let stub = self
            .env
            .durable_object(STREAMS_BINDING)?
            .id_from_name(path)?
            .get_stub()?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post);
        let array = js_sys::Uint8Array::from(body.as_slice());
        init.with_body(Some(array.into()));
        let request =
            Request::new_with_init(&format!("https://streams{INTERNAL_PREFIX}{op}"), &init)?;
        stub.fetch_with_request(request).await
    }

    async fn acquire(
        &self,
        source: &str,
        request: &AcquireRequest,
    ) -> std::result::Result<Snapshot, engine::Response> {
        let failed = |message: String| {
            engine::Response::new(500)
                .header("content-type", "text/plain; charset=utf-8")
                .with_body(message.into_bytes())
        };
        if !is_stream_path(source) {
            return Err(engine::Response::new(400)
                .header("content-type", "text/plain; charset=utf-8")
                .with_body(b"Stream-Forked-From must be a stream path".to_vec()));
        }
        let body = serde_json::to_vec(request).map_err(|e| failed(e.to_string()))?;
        let mut response = self
            .call(source, "acquire", body)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status_code();
        let bytes = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if status == 200 {
            serde_json::from_slice(&bytes).map_err(|e| failed(e.to_string()))
        } else {
            Err(engine::Response::new(status)
                .header("content-type", "text/plain; charset=utf-8")
                .with_body(bytes))
        }
    }

    async fn long_poll(
        self: Rc<Self>,
        req: Rc<OwnedRequest>,
        mut poll: LongPoll,
    ) -> Result<Response> {
        let deadline = now_ms().saturating_add(self.long_poll_ms);
        let store = self.store()?;
        loop {
            let remaining = deadline.saturating_sub(now_ms());
            if remaining > 0 {
                let woken = self.subscribe();
                let timer = Delay::from(Duration::from_millis(remaining));
                futures_util::pin_mut!(timer);
                let _ = select(woken, timer).await;
            }
            let timed_out = now_ms() >= deadline;
            let request = req.clone();
            let current = poll.clone();
            let handled = run(&store, move |s| {
                engine::resume_long_poll(s, &request.view(), &current, timed_out, now_ms())
            })?;
            match self.settle(handled).await {
                Outcome::Reply(response) => return to_response(response),
                Outcome::Wait(next) => poll = next,
                _ => return plain(500, "unexpected long-poll outcome"),
            }
        }
    }
}

/// The state of an event stream between chunks.
struct Pump {
    inner: Rc<Inner>,
    from: u64,
    cursor: Option<String>,
    idle_control: bool,
    started_ms: u64,
    finished: bool,
}

impl Pump {
    /// The next chunk to send, or `None` when the event stream ends.
    async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.finished {
            return None;
        }
        let store = self.inner.store().ok()?;
        loop {
            let from = self.from;
            let cursor = self.cursor.clone();
            let idle = self.idle_control;
            let (step, effects) = match run(&store, move |s| {
                engine::sse_step(s, from, cursor.as_deref(), idle, now_ms())
            }) {
                Ok(result) => result,
                Err(e) => {
                    worker::console_error!("SSE read: {e}");
                    return None;
                }
            };
            self.inner.apply(effects).await;
            self.idle_control = false;
            self.from = step.next;
            let elapsed = now_ms().saturating_sub(self.started_ms);
            if step.done || elapsed >= SSE_RECYCLE_MS {
                self.finished = true;
            }
            if !step.text.is_empty() {
                return Some(step.text.into_bytes());
            }
            if self.finished {
                return None;
            }
            if step.at_tail {
                let woken = self.inner.subscribe();
                let wait = self
                    .inner
                    .long_poll_ms
                    .min(SSE_RECYCLE_MS.saturating_sub(elapsed))
                    .max(1);
                let timer = Delay::from(Duration::from_millis(wait));
                futures_util::pin_mut!(timer);
                if let Either::Right(_) = select(woken, timer).await {
                    // Quiet for a while: a keep-alive control event.
                    self.idle_control = true;
                }
            }
        }
    }
}

fn sse_response(inner: Rc<Inner>, start: SseStart) -> Result<Response> {
    let headers = Headers::new();
    for (name, value) in &start.headers {
        headers.set(name, value)?;
    }
    common_headers(&headers)?;
    let pump = Pump {
        inner,
        from: start.from,
        cursor: start.cursor,
        idle_control: true,
        started_ms: now_ms(),
        finished: false,
    };
    let stream = futures_util::stream::unfold(pump, |mut pump| async move {
        let chunk = pump.next_chunk().await?;
        Some((Ok::<Vec<u8>, worker::Error>(chunk), pump))
    });
    Ok(Response::from_stream(stream)?.with_headers(headers))
}
