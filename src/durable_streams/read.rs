//! Reading a log as a Durable Stream (`GET`): catch-up, `offset=now`, long-poll and SSE, with
//! ETags, cursors and cache headers. Generic over [`Readable`], so the same rules serve a stream
//! and a LiveStore store's event log (its read-only view). Each response reads at most
//! [`READ_BUDGET`]; live readers wait on the log's commit notification.

use super::cursor::{next_cursor, parse_cursor};
use super::headers::{is_json, needs_base64, normalize_content_type};
use super::http::{Request, Response};
use super::json::join_messages;
use super::meta::offset_text;
use super::platform::{Clock, Config, Platform};
use super::sse::Round;
use super::stream::{Outcome, State, Stream, StreamStore};
use crate::stream::offset::{parse_offset, ReadFrom};
use crate::stream::readers::Wake;
use crate::stream::{Budget, Message, SeqNum, StorageError};
use futures_util::future::{select, Either};

/// What one response (or SSE event) reads at most.
pub const READ_BUDGET: Budget = Budget {
    rows: 8_192,
    bytes: 1 << 20,
};

const CACHE_HISTORICAL: &str = "public, max-age=60, stale-while-revalidate=300";
/// A long-poll `200`: what it holds is fixed for its offset, and its cursor keys it, so caches
/// may collapse the readers waiting at one offset onto one answer for an interval.
const CACHE_LONG_POLL: &str = "public, max-age=20";

/// What a reader sees of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub content_type: String,
    pub tail: SeqNum,
    pub closed: bool,
    /// Tells incarnations of the log apart in ETags.
    pub incarnation: String,
}

/// A log read as a Durable Stream.
#[allow(async_fn_in_trait)]
pub trait Readable {
    /// The log as a reader sees it now, or the response for a missing or deleted one. `access`
    /// counts it as read (a sliding TTL).
    async fn view(&self, access: bool) -> Result<Result<View, Response>, StorageError>;
    /// Messages `(after, upto]`, within `budget`.
    async fn messages(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Message>, StorageError>;
    /// Resolves at the log's next change.
    fn changed(&self) -> Wake;
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Live {
    No,
    LongPoll,
    Sse,
}

struct ReadParams {
    from: ReadFrom,
    live: Live,
    cursor: Option<u64>,
}

/// The parameters of a read's query as written (every `offset`, the last `live` and `cursor`),
/// before they are judged: the read itself, the Worker's bridge and its cache all start here.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadQuery {
    pub offsets: Vec<String>,
    pub live: Option<String>,
    pub cursor: Option<String>,
}

impl ReadQuery {
    pub fn parse(query: &str) -> ReadQuery {
        let mut out = ReadQuery::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "offset" => out.offsets.push(value.into_owned()),
                "live" => out.live = Some(value.into_owned()),
                "cursor" => out.cursor = Some(value.into_owned()),
                _ => {}
            }
        }
        out
    }
}

fn read_params(query: &str) -> Result<ReadParams, Response> {
    let ReadQuery {
        offsets,
        live,
        cursor,
    } = ReadQuery::parse(query);
    let cursor = cursor.as_deref().and_then(parse_cursor);
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

/// The body of `messages` for a log of `content_type`: a JSON array, or the bytes one after
/// another.
pub(super) fn encode_body(content_type: &str, messages: &[Message]) -> Vec<u8> {
    if is_json(&normalize_content_type(content_type)) {
        join_messages(
            messages
                .iter()
                .map(|m| std::str::from_utf8(&m.data).unwrap_or("null")),
        )
        .into_bytes()
    } else {
        messages
            .iter()
            .flat_map(|m| m.data.iter().copied())
            .collect()
    }
}

/// A 200 with the messages read from `from`.
fn data_response(
    view: &View,
    messages: &[Message],
    from: SeqNum,
    cursor: Option<u64>,
    req: &Request,
) -> Response {
    let next = messages.last().map_or(from, |m| m.seq);
    let up_to_date = next >= view.tail;
    let closed_eof = up_to_date && view.closed;
    let etag = format!(
        "\"{}:{}:{}{}\"",
        view.incarnation,
        offset_text(from),
        offset_text(next),
        if closed_eof { ":c" } else { "" }
    );
    let cache = if cursor.is_some() {
        CACHE_LONG_POLL
    } else if up_to_date && !view.closed {
        "no-cache"
    } else {
        CACHE_HISTORICAL
    };
    let mut response = Response::new(200)
        .header("content-type", view.content_type.clone())
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
    response.with_body(encode_body(&view.content_type, messages))
}

/// The headers of an event stream of a log of `content_type`.
pub fn sse_headers(content_type: &str) -> Vec<(String, String)> {
    let mut headers = vec![
        ("content-type".to_owned(), "text/event-stream".to_owned()),
        ("cache-control".to_owned(), "no-cache".to_owned()),
    ];
    if needs_base64(&normalize_content_type(content_type)) {
        headers.push(("stream-sse-data-encoding".to_owned(), "base64".to_owned()));
    }
    headers
}

/// What a read leads to.
#[derive(Debug)]
pub enum ReadOutcome {
    Reply(Response),
    /// An event stream: answer with its headers and pump it with [`sse_next`].
    Sse(Box<Sse>),
}

/// Serves a `GET` of `log`: a response (a long-poll waits for it), or an event stream to pump.
pub async fn read(
    log: &impl Readable,
    platform: &impl Clock,
    config: &Config,
    req: &Request<'_>,
) -> Result<ReadOutcome, StorageError> {
    let reply = |r: Response| Ok(ReadOutcome::Reply(r));
    let params = match read_params(req.query) {
        Ok(params) => params,
        Err(response) => return reply(response),
    };
    let view = match log.view(true).await? {
        Ok(view) => view,
        Err(response) => return reply(response),
    };
    let from = match params.from {
        ReadFrom::Start => SeqNum::ROOT,
        ReadFrom::Now => view.tail,
        ReadFrom::At(offset) => offset.0,
    };
    if from > view.tail {
        return reply(Response::error(400, "offset beyond the tail"));
    }
    match params.live {
        Live::Sse => {
            let headers = sse_headers(&view.content_type);
            let until_ms = req
                .headers
                .get(SSE_UNTIL_HEADER)
                .and_then(|v| v.trim().parse::<u64>().ok());
            Ok(ReadOutcome::Sse(Box::new(Sse {
                from,
                cursor: params.cursor,
                idle_control: true,
                started_ms: platform.now_ms(),
                until_ms,
                finished: false,
                headers,
            })))
        }
        Live::No if params.from == ReadFrom::Now => {
            let body = if is_json(&normalize_content_type(&view.content_type)) {
                b"[]".to_vec()
            } else {
                Vec::new()
            };
            let mut response = Response::new(200)
                .header("content-type", view.content_type.clone())
                .header("stream-next-offset", offset_text(view.tail))
                .header("stream-up-to-date", "true")
                .header("cache-control", "no-store")
                .with_body(body);
            if view.closed {
                response = response.header("stream-closed", "true");
            }
            reply(response)
        }
        Live::No => {
            let messages = log.messages(from, view.tail, READ_BUDGET).await?;
            reply(data_response(&view, &messages, from, None, req))
        }
        Live::LongPoll => long_poll(log, platform, config, req, from, params.cursor)
            .await
            .map(ReadOutcome::Reply),
    }
}

/// A long-poll from `from`: the data that is there or comes within the timeout, else `204`.
async fn long_poll(
    log: &impl Readable,
    platform: &impl Clock,
    config: &Config,
    req: &Request<'_>,
    from: SeqNum,
    client_cursor: Option<u64>,
) -> Result<Response, StorageError> {
    let deadline = platform.now_ms().saturating_add(config.long_poll_ms);
    loop {
        // Waiting starts before the read, so a commit between the two is not missed.
        let changed = log.changed();
        let view = match log.view(false).await? {
            Ok(view) => view,
            Err(response) => return Ok(response),
        };
        let now = platform.now_ms();
        let cursor = next_cursor(now, client_cursor);
        let messages = log.messages(from, view.tail, READ_BUDGET).await?;
        if !messages.is_empty() {
            return Ok(data_response(&view, &messages, from, Some(cursor), req));
        }
        let remaining = deadline.saturating_sub(now);
        if view.closed || remaining == 0 {
            let mut response = Response::new(204)
                .header("stream-next-offset", offset_text(from))
                .header("stream-up-to-date", "true")
                .header("cache-control", "no-store");
            response = if view.closed {
                response.header("stream-closed", "true")
            } else {
                response.header("stream-cursor", cursor.to_string())
            };
            return Ok(response);
        }
        let timer = platform.sleep(remaining);
        futures_util::pin_mut!(timer);
        let _ = select(changed, timer).await;
    }
}

/// One round of an event stream: what one read from `from` brings, and where it leaves the
/// reader.
pub(super) struct ReadRound {
    /// The events: `None` when nothing was read, no control event is owed and the stream
    /// does not end here.
    pub events: Option<String>,
    pub next: SeqNum,
    pub at_tail: bool,
    /// Closed, and the reader has all of it.
    pub done: bool,
}

/// The round of a reader at `from` of `log` (as `view` shows it); `control` owes a control event
/// even when nothing is read. A stream object's own event stream and the bridge's fan-out both
/// read this way.
pub(super) async fn read_round(
    log: &impl Readable,
    view: &View,
    from: SeqNum,
    cursor: u64,
    control: bool,
) -> Result<ReadRound, StorageError> {
    let messages = log.messages(from, view.tail, READ_BUDGET).await?;
    let next = messages.last().map_or(from, |m| m.seq);
    let at_tail = next >= view.tail;
    let done = at_tail && view.closed;
    let events = (!messages.is_empty() || control || done).then(|| {
        let body = (!messages.is_empty()).then(|| encode_body(&view.content_type, &messages));
        super::sse::round(
            &view.content_type,
            &Round {
                body: body.as_deref(),
                next,
                at_tail,
                done,
                cursor,
            },
        )
    });
    Ok(ReadRound {
        events,
        next,
        at_tail,
        done,
    })
}

/// The request header by which the edge ends an event stream at a time (ms since the epoch):
/// the expiry of the token that opened it. The edge sets it, overwriting any a client sent.
pub const SSE_UNTIL_HEADER: &str = "x-stream-sse-until-ms";

/// An event stream between two events.
#[derive(Debug)]
pub struct Sse {
    from: SeqNum,
    cursor: Option<u64>,
    /// A control event is due even without data (the first round, keep-alives).
    idle_control: bool,
    started_ms: u64,
    /// When it must end (the token that opened it expires), if ever.
    until_ms: Option<u64>,
    finished: bool,
    /// The response headers.
    pub headers: Vec<(String, String)>,
}

/// The next events of an event stream (data and its control event together, or a keep-alive
/// control event), waiting for the log to change when the reader is at the tail; `None` when the
/// event stream ends (closed and caught up, gone, or recycled: clients reconnect from their
/// offset).
pub async fn sse_next(
    log: &impl Readable,
    platform: &impl Clock,
    config: &Config,
    sse: &mut Sse,
) -> Result<Option<String>, StorageError> {
    if sse.finished {
        return Ok(None);
    }
    loop {
        let changed = log.changed();
        let view = match log.view(false).await? {
            Ok(view) => view,
            Err(_) => return Ok(None),
        };
        let now = platform.now_ms();
        let ReadRound {
            events,
            next,
            at_tail,
            done,
        } = read_round(
            log,
            &view,
            sse.from,
            next_cursor(now, sse.cursor),
            sse.idle_control,
        )
        .await?;
        let text = events.unwrap_or_default();
        sse.idle_control = false;
        sse.from = next;
        let elapsed = now.saturating_sub(sse.started_ms);
        let expired = sse.until_ms.is_some_and(|until| now >= until);
        if done || expired || elapsed >= config.sse_recycle_ms {
            sse.finished = true;
        }
        if !text.is_empty() {
            return Ok(Some(text));
        }
        if sse.finished {
            return Ok(None);
        }
        if at_tail {
            let wait = config
                .long_poll_ms
                .min(config.sse_recycle_ms.saturating_sub(elapsed))
                .min(
                    sse.until_ms
                        .map_or(u64::MAX, |until| until.saturating_sub(now)),
                )
                .max(1);
            let timer = platform.sleep(wait);
            futures_util::pin_mut!(timer);
            if let Either::Right(_) = select(changed, timer).await {
                // Quiet for a while: a keep-alive control event.
                sse.idle_control = true;
            }
        }
    }
}

impl<S: StreamStore, P: Platform> Readable for Stream<S, P> {
    async fn view(&self, access: bool) -> Result<Result<View, Response>, StorageError> {
        let stream = match self.current().await? {
            State::Missing => return Ok(Err(super::http::not_found())),
            State::Gone => return Ok(Err(super::http::gone())),
            State::Live(stream) => *stream,
        };
        let tail = if access && stream.ttl_seconds.is_some() {
            let mut writer = self.log.writer().await?;
            self.touch(&mut writer, &stream).await?;
            writer.tail()
        } else {
            self.log.tail().await?
        };
        Ok(Ok(View {
            content_type: stream.content_type.clone(),
            tail,
            closed: stream.closed,
            incarnation: stream.created_ms.to_string(),
        }))
    }

    async fn messages(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Message>, StorageError> {
        let Some(stream) = self.log.state().await?.header.and_then(|meta| meta.stream) else {
            return Ok(Vec::new());
        };
        self.read_messages(&stream, after, upto, budget).await
    }

    fn changed(&self) -> Wake {
        self.log.wait()
    }
}

impl<S: StreamStore, P: Platform> Stream<S, P> {
    pub(super) async fn read_request(&self, req: &Request<'_>) -> Result<Outcome, StorageError> {
        Ok(match read(self, &self.platform, &self.config, req).await? {
            ReadOutcome::Reply(response) => Outcome::Reply(response),
            ReadOutcome::Sse(sse) => Outcome::Sse(sse),
        })
    }

    /// The next events of an event stream of this stream (see [`sse_next`]).
    pub async fn sse_next(&self, sse: &mut Sse) -> Result<Option<String>, StorageError> {
        sse_next(self, &self.platform, &self.config, sse).await
    }
}
