//! The per-stream engine: the protocol's HTTP semantics over a synchronous [`StreamStore`].
//!
//! A request's parts go in; a response comes out, or one of the outcomes that need the
//! platform: asking a fork's source for its data ([`Outcome::Fork`]), waiting for an append
//! ([`Outcome::Wait`], long-poll) or pumping an event stream ([`Outcome::Sse`]). Side effects
//! that reach beyond the store (waking readers, releasing a fork's source, arming an alarm)
//! are returned as [`Effect`]s, to be carried out after the store's transaction commits.

use super::cursor::next_cursor;
use super::headers::{
    format_rfc3339_ms, is_closed_flag, is_json, needs_base64, normalize_content_type, parse_expiry,
    stream_seq_advances, Expiry,
};
use super::json::{join_messages, split_messages};
use super::sse::{base64_decode, base64_encode, control_event, data_event};
use super::store::{ClosedBy, ForkInfo, Meta, StorageError, StreamStore};
use crate::stream::offset::{parse_offset, Offset, ReadFrom};
use crate::stream::producer::{decide, parse_claim, ProducerClaim, ProducerState, Verdict};
use crate::stream::SeqNum;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The largest append body (a message is one SQLite value, capped at 2 MB).
pub const MAX_APPEND_BYTES: usize = 1_900_000;
/// Reads stop adding messages once this many bytes are collected (at least one message).
pub const MAX_READ_BYTES: usize = 1 << 20;
/// The content type of a stream created without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

const CACHE_HISTORICAL: &str = "public, max-age=60, stale-while-revalidate=300";

/// The parts of a request the engine looks at.
pub struct Request<'a> {
    pub method: &'a str,
    /// The stream's URL without query (for `Location`).
    pub url: &'a str,
    /// The stream's path, e.g. `/v1/stream/name`.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Headers with lowercase names.
    pub headers: &'a BTreeMap<String, String>,
    pub body: &'a [u8],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A response, before the edge adds the headers every stream response carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Response {
        Response::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .with_body(message.into().into_bytes())
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn with_body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }

    /// The first value of header `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Something to do once the store's transaction has committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The stream changed (append, close, delete): wake live readers.
    Notify,
    /// This stream is gone for good: drop its reference on the stream it was forked from.
    Release { source: String },
    /// Arm the expiry alarm at this time.
    Alarm { at_ms: i64 },
}

/// What to do with a request.
#[derive(Debug)]
pub enum Outcome {
    Reply(Response),
    /// Creating a fork: acquire `request` from the stream at `source`, then call
    /// [`finish_fork`] with its answer.
    Fork {
        source: String,
        request: AcquireRequest,
    },
    /// A long-poll at the tail: wait for a change or the timeout, then [`resume_long_poll`].
    Wait(LongPoll),
    /// An event stream: answer with these headers and pump [`sse_step`] from `from`.
    Sse(SseStart),
}

/// A request's outcome and its effects.
#[derive(Debug)]
pub struct Handled {
    pub outcome: Outcome,
    pub effects: Vec<Effect>,
}

impl Handled {
    fn reply(response: Response) -> Handled {
        Handled {
            outcome: Outcome::Reply(response),
            effects: Vec::new(),
        }
    }

    fn with(mut self, effects: Vec<Effect>) -> Handled {
        self.effects.extend(effects);
        self
    }
}

/// A waiting long-poll: resume reading after `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongPoll {
    pub from: u64,
    pub cursor: Option<String>,
}

/// An event stream to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseStart {
    pub from: u64,
    pub cursor: Option<String>,
    pub headers: Vec<(String, String)>,
}

/// What a fork asks of its source.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AcquireRequest {
    /// The anchor; `None` for the source's current tail.
    pub offset: Option<u64>,
    pub sub_offset: u64,
    /// The fork's normalized content type, when it names one.
    pub content_type: Option<String>,
}

/// What a source hands a new fork: its configuration and a copy of the inherited messages.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub content_type: String,
    pub ttl_seconds: Option<u64>,
    pub expires_at_ms: Option<i64>,
    /// The anchor offset the fork was taken at.
    pub offset: u64,
    /// The fork's tail: the anchor plus any sub-offset messages (or the partial message).
    pub tail: u64,
    /// `(seq, base64 bytes)` of every inherited message.
    pub messages: Vec<(u64, String)>,
}

/// The state of the stream, after lazy expiry.
enum State {
    Missing,
    Gone,
    Live(Meta),
}

fn offset_text(n: u64) -> String {
    // Offsets come from counts of stored messages, always safe integers.
    SeqNum::new(n).map_or_else(
        || format!("{:016}_{:016}", 0, n),
        |seq| Offset(seq).to_string(),
    )
}

fn is_expired(meta: &Meta, now_ms: u64) -> bool {
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    if meta.expires_at_ms.is_some_and(|at| at <= now) {
        return true;
    }
    meta.ttl_seconds.is_some_and(|ttl| {
        meta.last_access_ms
            .saturating_add(ttl.saturating_mul(1_000))
            <= now_ms
    })
}

/// When `meta` expires, if it does.
pub fn expiry_time(meta: &Meta) -> Option<i64> {
    let ttl = meta.ttl_seconds.map(|ttl| {
        i64::try_from(
            meta.last_access_ms
                .saturating_add(ttl.saturating_mul(1_000)),
        )
        .unwrap_or(i64::MAX)
    });
    match (ttl, meta.expires_at_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Removes a stream that is gone for good, or soft-deletes it while forks refer to it.
fn remove<S: StreamStore>(
    store: &S,
    mut meta: Meta,
    effects: &mut Vec<Effect>,
) -> Result<(), StorageError> {
    if meta.ref_count > 0 {
        meta.soft_deleted = true;
        store.clear_data()?;
        store.save_meta(&meta)?;
    } else {
        store.clear_all()?;
        if let Some(fork) = meta.fork {
            effects.push(Effect::Release {
                source: fork.source,
            });
        }
    }
    effects.push(Effect::Notify);
    Ok(())
}

fn load<S: StreamStore>(
    store: &S,
    now_ms: u64,
    effects: &mut Vec<Effect>,
) -> Result<State, StorageError> {
    match store.load_meta()? {
        None => Ok(State::Missing),
        Some(meta) if meta.soft_deleted => Ok(State::Gone),
        Some(meta) if is_expired(&meta, now_ms) => {
            let gone = meta.ref_count > 0;
            remove(store, meta, effects)?;
            Ok(if gone { State::Gone } else { State::Missing })
        }
        Some(meta) => Ok(State::Live(meta)),
    }
}

fn touch<S: StreamStore>(store: &S, meta: &mut Meta, now_ms: u64) -> Result<(), StorageError> {
    if meta.ttl_seconds.is_some() {
        meta.last_access_ms = now_ms;
        store.save_meta(meta)?;
    }
    Ok(())
}

fn not_found() -> Response {
    Response::error(404, "stream not found")
}

fn gone() -> Response {
    Response::error(410, "stream was deleted")
}

/// Handles one request to the stream.
pub fn handle<S: StreamStore>(
    store: &S,
    req: &Request,
    now_ms: u64,
) -> Result<Handled, StorageError> {
    match req.method {
        "PUT" => create(store, req, now_ms),
        "POST" => append(store, req, now_ms),
        "GET" => read(store, req, now_ms),
        "HEAD" => head(store, now_ms),
        "DELETE" => delete(store, now_ms),
        _ => Ok(Handled::reply(
            Response::error(405, "method not allowed")
                .header("allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS"),
        )),
    }
}

/// Runs the lazy expiry check (the alarm): `Some(time)` to re-arm at.
pub fn expire<S: StreamStore>(
    store: &S,
    now_ms: u64,
) -> Result<(Option<i64>, Vec<Effect>), StorageError> {
    let mut effects = Vec::new();
    let state = load(store, now_ms, &mut effects)?;
    let next = match state {
        State::Live(meta) => expiry_time(&meta),
        _ => None,
    };
    Ok((next, effects))
}

// ---------------------------------------------------------------------------------------
// Create

/// A canonical non-negative integer (no sign, no leading zeros), as sub-offsets are sent.
fn parse_count(text: &str) -> Option<u64> {
    let canonical = text == "0"
        || (!text.is_empty()
            && text.len() <= 16
            && !text.starts_with('0')
            && text.bytes().all(|b| b.is_ascii_digit()));
    canonical
        .then(|| text.parse::<u64>().ok())
        .flatten()
        .filter(|&n| n <= crate::stream::seq::MAX_SAFE_INTEGER)
}

struct CreateParams {
    content_type: Option<String>,
    expiry: Expiry,
    closed: bool,
    fork: Option<(String, Option<u64>, u64)>,
}

fn create_params(req: &Request) -> Result<CreateParams, Response> {
    let expiry = parse_expiry(req.header("stream-ttl"), req.header("stream-expires-at"))
        .map_err(|e| Response::error(400, e.to_string()))?;
    let forked_from = req.header("stream-forked-from");
    let sub_offset = match req.header("stream-fork-sub-offset") {
        None => 0,
        Some(_) if forked_from.is_none() => {
            return Err(Response::error(
                400,
                "Stream-Fork-Sub-Offset needs Stream-Forked-From",
            ))
        }
        Some(text) => parse_count(text).ok_or_else(|| {
            Response::error(400, "Stream-Fork-Sub-Offset must be a non-negative integer")
        })?,
    };
    let fork_offset = match req.header("stream-fork-offset") {
        None => None,
        Some(_) if forked_from.is_none() => {
            return Err(Response::error(
                400,
                "Stream-Fork-Offset needs Stream-Forked-From",
            ))
        }
        Some(text) => match parse_offset(text) {
            Ok(ReadFrom::At(offset)) => Some(offset.0.get()),
            Ok(ReadFrom::Start) => Some(0),
            _ => return Err(Response::error(400, "malformed Stream-Fork-Offset")),
        },
    };
    if sub_offset > 0 && fork_offset.is_none() {
        return Err(Response::error(
            400,
            "Stream-Fork-Sub-Offset needs Stream-Fork-Offset",
        ));
    }
    let fork = match forked_from {
        Some("") => return Err(Response::error(400, "empty Stream-Forked-From")),
        Some(source) => Some((source.to_owned(), fork_offset, sub_offset)),
        None => None,
    };
    Ok(CreateParams {
        content_type: req
            .header("content-type")
            .map(str::trim)
            .filter(|ct| !ct.is_empty())
            .map(str::to_owned),
        expiry,
        closed: is_closed_flag(req.header("stream-closed")),
        fork,
    })
}

fn expiry_fields(expiry: Expiry) -> (Option<u64>, Option<i64>) {
    match expiry {
        Expiry::None => (None, None),
        Expiry::Ttl { seconds } => (Some(seconds), None),
        Expiry::At { unix_ms } => (None, Some(unix_ms)),
    }
}

/// Whether an existing stream has the configuration a create asks for.
fn same_config(meta: &Meta, params: &CreateParams) -> bool {
    let content_type_matches = match (&params.content_type, &params.fork) {
        (Some(ct), _) => normalize_content_type(ct) == normalize_content_type(&meta.content_type),
        (None, Some(_)) => true,
        (None, None) => normalize_content_type(&meta.content_type) == DEFAULT_CONTENT_TYPE,
    };
    let expiry_matches = match (params.expiry, &params.fork) {
        (Expiry::None, Some(_)) => true,
        (expiry, _) => expiry_fields(expiry) == (meta.ttl_seconds, meta.expires_at_ms),
    };
    let fork_matches = match (&params.fork, &meta.fork) {
        (None, None) => true,
        (Some((source, offset, sub)), Some(fork)) => {
            *source == fork.source
                && offset.is_none_or(|o| o == fork.offset)
                && *sub == fork.sub_offset
        }
        _ => false,
    };
    content_type_matches && expiry_matches && fork_matches && params.closed == meta.closed
}

/// The end of every stream creation (plain or fork): saves the metadata, schedules its
/// expiry, wakes waiters and answers `201` with the stream's location.
fn finish_create<S: StreamStore>(
    store: &S,
    meta: &Meta,
    url: &str,
    mut effects: Vec<Effect>,
) -> Result<Handled, StorageError> {
    store.save_meta(meta)?;
    if let Some(at_ms) = expiry_time(meta) {
        effects.push(Effect::Alarm { at_ms });
    }
    effects.push(Effect::Notify);
    let response = created_headers(Response::new(201), meta).header("location", url);
    Ok(Handled::reply(response).with(effects))
}

fn created_headers(response: Response, meta: &Meta) -> Response {
    let response = response
        .header("content-type", meta.content_type.clone())
        .header("stream-next-offset", offset_text(meta.tail));
    if meta.closed {
        response.header("stream-closed", "true")
    } else {
        response
    }
}

/// The messages of a body for a stream of `content_type`.
fn body_messages(
    content_type: &str,
    body: &[u8],
    allow_empty_array: bool,
) -> Result<Vec<Vec<u8>>, Response> {
    if is_json(&normalize_content_type(content_type)) {
        if body.is_empty() {
            return Ok(Vec::new());
        }
        split_messages(body, allow_empty_array)
            .map(|messages| messages.into_iter().map(String::into_bytes).collect())
            .map_err(|e| Response::error(400, e.to_string()))
    } else if body.is_empty() {
        Ok(Vec::new())
    } else {
        Ok(vec![body.to_vec()])
    }
}

fn create<S: StreamStore>(store: &S, req: &Request, now_ms: u64) -> Result<Handled, StorageError> {
    let params = match create_params(req) {
        Ok(params) => params,
        Err(response) => return Ok(Handled::reply(response)),
    };
    if req.body.len() > MAX_APPEND_BYTES {
        return Ok(Handled::reply(Response::error(413, "body too large")));
    }
    let mut effects = Vec::new();
    match load(store, now_ms, &mut effects)? {
        State::Gone => Ok(Handled::reply(Response::error(
            409,
            "a deleted stream at this path is still referenced by forks",
        ))
        .with(effects)),
        State::Live(meta) => {
            let response = if same_config(&meta, &params) {
                created_headers(Response::new(200), &meta)
            } else {
                Response::error(409, "stream exists with a different configuration")
            };
            Ok(Handled::reply(response).with(effects))
        }
        State::Missing => {
            if let Some((source, offset, sub_offset)) = params.fork {
                let request = AcquireRequest {
                    offset,
                    sub_offset,
                    content_type: params.content_type.as_deref().map(normalize_content_type),
                };
                return Ok(Handled {
                    outcome: Outcome::Fork { source, request },
                    effects,
                });
            }
            let content_type = params
                .content_type
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
            let messages = match body_messages(&content_type, req.body, true) {
                Ok(messages) => messages,
                Err(response) => return Ok(Handled::reply(response).with(effects)),
            };
            let (ttl_seconds, expires_at_ms) = expiry_fields(params.expiry);
            let meta = Meta {
                content_type,
                ttl_seconds,
                expires_at_ms,
                created_ms: now_ms,
                last_access_ms: now_ms,
                tail: messages.len() as u64,
                closed: params.closed,
                closed_by: None,
                last_stream_seq: None,
                fork: None,
                ref_count: 0,
                soft_deleted: false,
            };
            store.clear_all()?;
            store.insert_messages(1, &messages)?;
            finish_create(store, &meta, req.url, effects)
        }
    }
}

/// Serves a fork's acquire on its source: validates the request, counts the new reference
/// and hands over the inherited messages. `Err` is the response the fork should give.
pub fn acquire<S: StreamStore>(
    store: &S,
    request: &AcquireRequest,
    now_ms: u64,
) -> Result<(Result<Snapshot, Response>, Vec<Effect>), StorageError> {
    let mut effects = Vec::new();
    let mut meta = match load(store, now_ms, &mut effects)? {
        State::Missing => return Ok((Err(Response::error(404, "fork source not found")), effects)),
        State::Gone => {
            return Ok((
                Err(Response::error(409, "fork source was deleted")),
                effects,
            ))
        }
        State::Live(meta) => meta,
    };
    if request
        .content_type
        .as_ref()
        .is_some_and(|ct| *ct != normalize_content_type(&meta.content_type))
    {
        return Ok((
            Err(Response::error(409, "content type differs from the source")),
            effects,
        ));
    }
    let anchor = request.offset.unwrap_or(meta.tail);
    if anchor > meta.tail {
        return Ok((
            Err(Response::error(400, "fork offset beyond the source's tail")),
            effects,
        ));
    }
    let json = is_json(&normalize_content_type(&meta.content_type));
    let sub = request.sub_offset;
    let (mut messages, tail) = if sub == 0 {
        (store.read_messages(0, anchor, usize::MAX)?, anchor)
    } else if json {
        let tail = anchor.saturating_add(sub);
        if tail > meta.tail {
            return Ok((
                Err(Response::error(
                    400,
                    "fork sub-offset beyond the source's tail",
                )),
                effects,
            ));
        }
        (store.read_messages(0, tail, usize::MAX)?, tail)
    } else {
        let next = anchor + 1;
        let partial = if next <= meta.tail {
            store
                .read_messages(anchor, next, usize::MAX)?
                .into_iter()
                .next()
        } else {
            None
        };
        let Some((seq, mut bytes)) = partial else {
            return Ok((
                Err(Response::error(400, "no message after the fork offset")),
                effects,
            ));
        };
        let Ok(cut) = usize::try_from(sub) else {
            return Ok((
                Err(Response::error(400, "fork sub-offset too large")),
                effects,
            ));
        };
        if cut > bytes.len() {
            return Ok((
                Err(Response::error(400, "fork sub-offset beyond the message")),
                effects,
            ));
        }
        bytes.truncate(cut);
        let mut messages = store.read_messages(0, anchor, usize::MAX)?;
        messages.push((seq, bytes));
        (messages, next)
    };
    meta.ref_count += 1;
    store.save_meta(&meta)?;
    let snapshot = Snapshot {
        content_type: meta.content_type.clone(),
        ttl_seconds: meta.ttl_seconds,
        expires_at_ms: meta.expires_at_ms,
        offset: anchor,
        tail,
        messages: messages
            .drain(..)
            .map(|(seq, bytes)| (seq, base64_encode(&bytes)))
            .collect(),
    };
    Ok((Ok(snapshot), effects))
}

/// Drops one fork's reference; a soft-deleted stream whose last fork is gone is removed.
pub fn release<S: StreamStore>(store: &S) -> Result<Vec<Effect>, StorageError> {
    let mut effects = Vec::new();
    let Some(mut meta) = store.load_meta()? else {
        return Ok(effects);
    };
    meta.ref_count = meta.ref_count.saturating_sub(1);
    if meta.soft_deleted && meta.ref_count == 0 {
        store.clear_all()?;
        if let Some(fork) = meta.fork {
            effects.push(Effect::Release {
                source: fork.source,
            });
        }
    } else {
        store.save_meta(&meta)?;
    }
    Ok(effects)
}

/// Completes a fork's create with its source's answer. On any failure after a successful
/// acquire, the reference is given back (an [`Effect::Release`]).
pub fn finish_fork<S: StreamStore>(
    store: &S,
    req: &Request,
    answer: Result<Snapshot, Response>,
    now_ms: u64,
) -> Result<Handled, StorageError> {
    let snapshot = match answer {
        Ok(snapshot) => snapshot,
        Err(response) => return Ok(Handled::reply(response)),
    };
    let params = match create_params(req) {
        Ok(params) => params,
        Err(response) => return Ok(Handled::reply(response)),
    };
    let Some((source, requested_offset, sub_offset)) = params.fork.clone() else {
        return Ok(Handled::reply(Response::error(400, "not a fork")));
    };
    let undo = vec![Effect::Release {
        source: source.clone(),
    }];
    let mut effects = Vec::new();
    match load(store, now_ms, &mut effects)? {
        // Someone created the stream meanwhile: answer as for any existing stream.
        State::Missing => {}
        _ => return Ok(create(store, req, now_ms)?.with(undo)),
    }
    let messages = match body_messages(&snapshot.content_type, req.body, true) {
        Ok(messages) => messages,
        Err(response) => return Ok(Handled::reply(response).with(undo)),
    };
    let mut inherited = Vec::with_capacity(snapshot.messages.len());
    for (seq, text) in &snapshot.messages {
        let Some(bytes) = base64_decode(text) else {
            return Err(StorageError(format!("fork source sent bad message {seq}")));
        };
        inherited.push((*seq, bytes));
    }
    let (ttl_seconds, expires_at_ms) = match params.expiry {
        Expiry::None => (snapshot.ttl_seconds, snapshot.expires_at_ms),
        expiry => expiry_fields(expiry),
    };
    store.clear_all()?;
    for (seq, bytes) in inherited {
        store.insert_messages(seq, &[bytes])?;
    }
    store.insert_messages(snapshot.tail + 1, &messages)?;
    let meta = Meta {
        content_type: snapshot.content_type,
        ttl_seconds,
        expires_at_ms,
        created_ms: now_ms,
        last_access_ms: now_ms,
        tail: snapshot.tail + messages.len() as u64,
        closed: params.closed,
        closed_by: None,
        last_stream_seq: None,
        fork: Some(ForkInfo {
            source,
            offset: requested_offset.unwrap_or(snapshot.offset),
            sub_offset,
        }),
        ref_count: 0,
        soft_deleted: false,
    };
    finish_create(store, &meta, req.url, effects)
}

// ---------------------------------------------------------------------------------------
// Append and close

fn closed_conflict(meta: &Meta) -> Response {
    Response::error(409, "stream is closed")
        .header("stream-closed", "true")
        .header("stream-next-offset", offset_text(meta.tail))
}

fn producer_headers(response: Response, epoch: u64, seq: u64) -> Response {
    response
        .header("producer-epoch", epoch.to_string())
        .header("producer-seq", seq.to_string())
}

fn append<S: StreamStore>(store: &S, req: &Request, now_ms: u64) -> Result<Handled, StorageError> {
    let closing = is_closed_flag(req.header("stream-closed"));
    let claim = match parse_claim(
        req.header("producer-id"),
        req.header("producer-epoch"),
        req.header("producer-seq"),
    ) {
        Ok(claim) => claim,
        Err(e) => return Ok(Handled::reply(Response::error(400, e.to_string()))),
    };
    let mut effects = Vec::new();
    let mut meta = match load(store, now_ms, &mut effects)? {
        State::Missing => return Ok(Handled::reply(not_found()).with(effects)),
        State::Gone => return Ok(Handled::reply(gone()).with(effects)),
        State::Live(meta) => meta,
    };
    let reply =
        |response: Response, effects: Vec<Effect>| Ok(Handled::reply(response).with(effects));
    if req.body.len() > MAX_APPEND_BYTES {
        return reply(Response::error(413, "body too large"), effects);
    }
    if req.body.is_empty() && !closing {
        return reply(Response::error(400, "empty body"), effects);
    }
    let content_type = req
        .header("content-type")
        .map(str::trim)
        .filter(|ct| !ct.is_empty());
    if !req.body.is_empty() && content_type.is_none() {
        return reply(Response::error(400, "Content-Type is required"), effects);
    }
    let producer_state = match &claim {
        Some(claim) => store.producer(&claim.id)?,
        None => None,
    };
    if meta.closed {
        return reply(
            closed_append(
                store,
                &mut meta,
                req,
                claim.as_ref(),
                producer_state,
                now_ms,
            )?,
            effects,
        );
    }
    if let Some(ct) = content_type.filter(|_| !req.body.is_empty()) {
        if normalize_content_type(ct) != normalize_content_type(&meta.content_type) {
            return reply(
                Response::error(409, "content type differs from the stream's"),
                effects,
            );
        }
    }
    let messages = match body_messages(&meta.content_type, req.body, false) {
        Ok(messages) => messages,
        Err(response) => return reply(response, effects),
    };
    let mut accepted: Option<(&ProducerClaim, ProducerState)> = None;
    if let Some(claim) = &claim {
        match decide(producer_state, claim) {
            Verdict::Accept { state } => accepted = Some((claim, state)),
            Verdict::Duplicate { epoch, last_seq } => {
                let response =
                    Response::new(204).header("stream-next-offset", offset_text(meta.tail));
                return reply(producer_headers(response, epoch, last_seq), effects);
            }
            Verdict::StaleEpoch { current } => {
                return reply(
                    Response::error(403, "stale producer epoch")
                        .header("producer-epoch", current.to_string()),
                    effects,
                )
            }
            Verdict::MustStartAtZero => {
                return reply(
                    Response::error(400, "a new producer epoch must start at sequence 0"),
                    effects,
                )
            }
            Verdict::Gap { expected, received } => {
                return reply(
                    Response::error(409, "producer sequence gap")
                        .header("producer-expected-seq", expected.to_string())
                        .header("producer-received-seq", received.to_string()),
                    effects,
                )
            }
        }
    }
    if let Some(seq) = req.header("stream-seq") {
        if !stream_seq_advances(meta.last_stream_seq.as_deref(), seq) {
            return reply(Response::error(409, "Stream-Seq does not advance"), effects);
        }
        meta.last_stream_seq = Some(seq.to_owned());
    }
    store.insert_messages(meta.tail + 1, &messages)?;
    meta.tail += messages.len() as u64;
    if closing {
        meta.closed = true;
        meta.closed_by = accepted.map(|(claim, _)| ClosedBy {
            id: claim.id.clone(),
            epoch: claim.epoch,
            seq: claim.seq,
        });
    }
    if let Some((claim, state)) = accepted {
        store.save_producer(&claim.id, state, now_ms)?;
    }
    if meta.ttl_seconds.is_some() {
        meta.last_access_ms = now_ms;
    }
    store.save_meta(&meta)?;
    effects.push(Effect::Notify);
    let status = if accepted.is_some() && !req.body.is_empty() {
        200
    } else {
        204
    };
    let mut response = Response::new(status).header("stream-next-offset", offset_text(meta.tail));
    if meta.closed {
        response = response.header("stream-closed", "true");
    }
    if let Some((_, state)) = accepted {
        response = producer_headers(response, state.epoch, state.last_seq);
    }
    reply(response, effects)
}

/// An append or close that reaches a closed stream: only retries of the close succeed.
fn closed_append<S: StreamStore>(
    store: &S,
    meta: &mut Meta,
    req: &Request,
    claim: Option<&ProducerClaim>,
    producer_state: Option<ProducerState>,
    now_ms: u64,
) -> Result<Response, StorageError> {
    let closing = is_closed_flag(req.header("stream-closed"));
    let ok = |meta: &Meta| {
        Response::new(204)
            .header("stream-closed", "true")
            .header("stream-next-offset", offset_text(meta.tail))
    };
    if let Some(claim) = claim {
        let same_close = meta
            .closed_by
            .as_ref()
            .is_some_and(|c| c.id == claim.id && c.epoch == claim.epoch && c.seq == claim.seq);
        let duplicate = matches!(decide(producer_state, claim), Verdict::Duplicate { .. });
        if closing && (same_close || (req.body.is_empty() && duplicate)) {
            touch(store, meta, now_ms)?;
            return Ok(producer_headers(ok(meta), claim.epoch, claim.seq));
        }
        return Ok(closed_conflict(meta));
    }
    if closing && req.body.is_empty() {
        touch(store, meta, now_ms)?;
        return Ok(ok(meta));
    }
    Ok(closed_conflict(meta))
}

// ---------------------------------------------------------------------------------------
// HEAD and DELETE

fn head<S: StreamStore>(store: &S, now_ms: u64) -> Result<Handled, StorageError> {
    let mut effects = Vec::new();
    let meta = match load(store, now_ms, &mut effects)? {
        State::Missing => return Ok(Handled::reply(not_found()).with(effects)),
        State::Gone => return Ok(Handled::reply(gone()).with(effects)),
        State::Live(meta) => meta,
    };
    let mut response = Response::new(200)
        .header("content-type", meta.content_type.clone())
        .header("stream-next-offset", offset_text(meta.tail))
        .header("cache-control", "no-store");
    if let Some(ttl) = meta.ttl_seconds {
        response = response.header("stream-ttl", ttl.to_string());
    }
    if let Some(at) = meta.expires_at_ms {
        response = response.header("stream-expires-at", format_rfc3339_ms(at));
    }
    if meta.closed {
        response = response.header("stream-closed", "true");
    }
    Ok(Handled::reply(response).with(effects))
}

fn delete<S: StreamStore>(store: &S, now_ms: u64) -> Result<Handled, StorageError> {
    let mut effects = Vec::new();
    match load(store, now_ms, &mut effects)? {
        State::Missing => Ok(Handled::reply(not_found()).with(effects)),
        State::Gone => Ok(Handled::reply(gone()).with(effects)),
        State::Live(meta) => {
            remove(store, meta, &mut effects)?;
            Ok(Handled::reply(Response::new(204)).with(effects))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reads

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Live {
    No,
    LongPoll,
    Sse,
}

struct ReadParams {
    from: ReadFrom,
    live: Live,
    cursor: Option<String>,
}

fn read_params(query: &str) -> Result<ReadParams, Response> {
    let mut offsets = Vec::new();
    let mut live = None;
    let mut cursor = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "offset" => offsets.push(value.into_owned()),
            "live" => live = Some(value.into_owned()),
            "cursor" => cursor = Some(value.into_owned()),
            _ => {}
        }
    }
    let from = match offsets.as_slice() {
        [] => None,
        [one] => Some(parse_offset(one).map_err(|e| Response::error(400, format!("offset: {e}")))?),
        _ => return Err(Response::error(400, "offset given more than once")),
    };
    let live = match live.as_deref() {
        None | Some("") | Some("false") => Live::No,
        Some("long-poll") => Live::LongPoll,
        Some("sse") => Live::Sse,
        Some(other) => return Err(Response::error(400, format!("unknown live mode {other:?}"))),
    };
    if live != Live::No && from.is_none() {
        return Err(Response::error(400, "live reads need an offset"));
    }
    Ok(ReadParams {
        from: from.unwrap_or(ReadFrom::Start),
        live,
        cursor,
    })
}

fn encode_body(meta: &Meta, messages: &[(u64, Vec<u8>)]) -> Vec<u8> {
    if is_json(&normalize_content_type(&meta.content_type)) {
        join_messages(
            messages
                .iter()
                .map(|(_, m)| std::str::from_utf8(m).unwrap_or("null")),
        )
        .into_bytes()
    } else {
        messages
            .iter()
            .flat_map(|(_, m)| m.iter().copied())
            .collect()
    }
}

fn read<S: StreamStore>(store: &S, req: &Request, now_ms: u64) -> Result<Handled, StorageError> {
    let params = match read_params(req.query) {
        Ok(params) => params,
        Err(response) => return Ok(Handled::reply(response)),
    };
    let mut effects = Vec::new();
    let mut meta = match load(store, now_ms, &mut effects)? {
        State::Missing => return Ok(Handled::reply(not_found()).with(effects)),
        State::Gone => return Ok(Handled::reply(gone()).with(effects)),
        State::Live(meta) => meta,
    };
    touch(store, &mut meta, now_ms)?;
    let from = match params.from {
        ReadFrom::Start => 0,
        ReadFrom::Now => meta.tail,
        ReadFrom::At(offset) => offset.0.get(),
    };
    if from > meta.tail {
        return Ok(Handled::reply(Response::error(400, "offset beyond the tail")).with(effects));
    }
    match params.live {
        Live::Sse => {
            let mut headers = vec![
                ("content-type".to_owned(), "text/event-stream".to_owned()),
                ("cache-control".to_owned(), "no-cache".to_owned()),
            ];
            if needs_base64(&normalize_content_type(&meta.content_type)) {
                headers.push(("stream-sse-data-encoding".to_owned(), "base64".to_owned()));
            }
            Ok(Handled {
                outcome: Outcome::Sse(SseStart {
                    from,
                    cursor: params.cursor,
                    headers,
                }),
                effects,
            })
        }
        Live::No if params.from == ReadFrom::Now => {
            let body = if is_json(&normalize_content_type(&meta.content_type)) {
                b"[]".to_vec()
            } else {
                Vec::new()
            };
            let mut response = Response::new(200)
                .header("content-type", meta.content_type.clone())
                .header("stream-next-offset", offset_text(meta.tail))
                .header("stream-up-to-date", "true")
                .header("cache-control", "no-store")
                .with_body(body);
            if meta.closed {
                response = response.header("stream-closed", "true");
            }
            Ok(Handled::reply(response).with(effects))
        }
        Live::No => {
            let messages = store.read_messages(from, meta.tail, MAX_READ_BYTES)?;
            let response = data_response(&meta, &messages, from, None, req, now_ms);
            Ok(Handled::reply(response).with(effects))
        }
        Live::LongPoll => {
            let poll = LongPoll {
                from,
                cursor: params.cursor,
            };
            Ok(long_poll(store, &meta, req, &poll, false, now_ms)?.with(effects))
        }
    }
}

/// A 200 with the messages read from `from`.
fn data_response(
    meta: &Meta,
    messages: &[(u64, Vec<u8>)],
    from: u64,
    cursor: Option<u64>,
    req: &Request,
    now_ms: u64,
) -> Response {
    let _ = now_ms;
    let next = messages.last().map_or(from, |(seq, _)| *seq);
    let up_to_date = next >= meta.tail;
    let closed_eof = up_to_date && meta.closed;
    let etag = format!(
        "\"{}:{}:{}{}\"",
        meta.created_ms,
        offset_text(from),
        offset_text(next),
        if closed_eof { ":c" } else { "" }
    );
    let cache = if cursor.is_some() || (up_to_date && !meta.closed) {
        "no-cache"
    } else {
        CACHE_HISTORICAL
    };
    let mut response = Response::new(200)
        .header("content-type", meta.content_type.clone())
        .header("stream-next-offset", offset_text(next))
        .header("etag", etag.clone())
        .header("cache-control", cache);
    if up_to_date {
        response = response.header("stream-up-to-date", "true");
    }
    if closed_eof {
        response = response.header("stream-closed", "true");
    }
    if let Some(cursor) = cursor.filter(|_| !closed_eof) {
        response = response.header("stream-cursor", cursor.to_string());
    }
    if req.header("if-none-match") == Some(etag.as_str()) {
        response.status = 304;
        return response;
    }
    response.with_body(encode_body(meta, messages))
}

fn long_poll<S: StreamStore>(
    store: &S,
    meta: &Meta,
    req: &Request,
    poll: &LongPoll,
    timed_out: bool,
    now_ms: u64,
) -> Result<Handled, StorageError> {
    let cursor = next_cursor(now_ms, poll.cursor.as_deref());
    let messages = store.read_messages(poll.from, meta.tail, MAX_READ_BYTES)?;
    if !messages.is_empty() {
        let response = data_response(meta, &messages, poll.from, Some(cursor), req, now_ms);
        return Ok(Handled::reply(response));
    }
    if meta.closed || timed_out {
        let mut response = Response::new(204)
            .header("stream-next-offset", offset_text(poll.from))
            .header("stream-up-to-date", "true")
            .header("cache-control", "no-store");
        if meta.closed {
            response = response.header("stream-closed", "true");
        } else {
            response = response.header("stream-cursor", cursor.to_string());
        }
        return Ok(Handled::reply(response));
    }
    Ok(Handled {
        outcome: Outcome::Wait(poll.clone()),
        effects: Vec::new(),
    })
}

/// Continues a waiting long-poll after a change (or, with `timed_out`, its timeout).
pub fn resume_long_poll<S: StreamStore>(
    store: &S,
    req: &Request,
    poll: &LongPoll,
    timed_out: bool,
    now_ms: u64,
) -> Result<Handled, StorageError> {
    let mut effects = Vec::new();
    let meta = match load(store, now_ms, &mut effects)? {
        State::Missing => return Ok(Handled::reply(not_found()).with(effects)),
        State::Gone => return Ok(Handled::reply(gone()).with(effects)),
        State::Live(meta) => meta,
    };
    Ok(long_poll(store, &meta, req, poll, timed_out, now_ms)?.with(effects))
}

/// One round of an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseStep {
    /// Events to write (possibly empty), data and its control event together.
    pub text: String,
    /// Where the next round reads from.
    pub next: u64,
    /// Whether the event stream is finished (closed and caught up, or the stream is gone).
    pub done: bool,
    /// Whether the reader is at the tail (wait for a change before the next round).
    pub at_tail: bool,
}

/// Reads what follows `from` as SSE events. `idle_control` asks for a control event even
/// when there is no data (the first round, and keep-alives).
pub fn sse_step<S: StreamStore>(
    store: &S,
    from: u64,
    client_cursor: Option<&str>,
    idle_control: bool,
    now_ms: u64,
) -> Result<(SseStep, Vec<Effect>), StorageError> {
    let mut effects = Vec::new();
    let meta = match load(store, now_ms, &mut effects)? {
        State::Live(meta) => meta,
        _ => {
            let step = SseStep {
                text: String::new(),
                next: from,
                done: true,
                at_tail: true,
            };
            return Ok((step, effects));
        }
    };
    let messages = store.read_messages(from, meta.tail, MAX_READ_BYTES)?;
    let next = messages.last().map_or(from, |(seq, _)| *seq);
    let at_tail = next >= meta.tail;
    let done = at_tail && meta.closed;
    let mut text = String::new();
    if !messages.is_empty() {
        let content_type = normalize_content_type(&meta.content_type);
        let payload = if is_json(&content_type) {
            String::from_utf8_lossy(&encode_body(&meta, &messages)).into_owned()
        } else if needs_base64(&content_type) {
            base64_encode(&encode_body(&meta, &messages))
        } else {
            String::from_utf8_lossy(&encode_body(&meta, &messages)).into_owned()
        };
        text.push_str(&data_event(&payload));
    }
    if !messages.is_empty() || idle_control || done {
        let mut control = serde_json::Map::new();
        control.insert("streamNextOffset".into(), offset_text(next).into());
        if done {
            control.insert("streamClosed".into(), true.into());
        } else {
            control.insert(
                "streamCursor".into(),
                next_cursor(now_ms, client_cursor).to_string().into(),
            );
        }
        if at_tail {
            control.insert("upToDate".into(), true.into());
        }
        text.push_str(&control_event(
            &serde_json::Value::Object(control).to_string(),
        ));
    }
    Ok((
        SseStep {
            text,
            next,
            done,
            at_tail,
        },
        effects,
    ))
}

#[cfg(test)]
mod tests;
