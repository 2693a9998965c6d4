//! Creating a stream (`PUT`), plain or as a fork of another.

use super::headers::{is_closed_flag, is_json, normalize_content_type, parse_expiry, Expiry};
use super::http::{Request, Response};
use super::json::split_messages;
use super::meta::{offset_text, ForkInfo, StreamMeta};
use super::platform::{AcquireRequest, ForkPoint, Platform};
use super::stream::{State, Stream, StreamStore};
use crate::stream::offset::{parse_offset, ReadFrom};
use crate::stream::{Commit, HeaderWrite, Message, SeqNum, StorageError};

/// The largest append body (a message is one SQLite value, capped at 2 MB).
pub const MAX_APPEND_BYTES: usize = 1_900_000;
/// The content type of a stream created without one.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

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

/// What a fork asks for: the source, the anchor (`None`: the source's tail) and the sub-offset.
struct ForkParams {
    source: String,
    offset: Option<u64>,
    sub_offset: u64,
}

struct CreateParams {
    content_type: Option<String>,
    expiry: Expiry,
    closed: bool,
    fork: Option<ForkParams>,
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
        Some(source) => Some(ForkParams {
            source: source.to_owned(),
            offset: fork_offset,
            sub_offset,
        }),
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
fn same_config(meta: &StreamMeta, params: &CreateParams) -> bool {
    let content_type_matches = match (&params.content_type, &params.fork) {
        (Some(ct), _) => normalize_content_type(ct) == meta.normalized_content_type(),
        (None, Some(_)) => true,
        (None, None) => meta.normalized_content_type() == DEFAULT_CONTENT_TYPE,
    };
    let expiry_matches = match (params.expiry, &params.fork) {
        (Expiry::None, Some(_)) => true,
        (expiry, _) => expiry_fields(expiry) == (meta.ttl_seconds, meta.expires_at_ms),
    };
    let fork_matches = match (&params.fork, &meta.fork) {
        (None, None) => true,
        (Some(asked), Some(fork)) => {
            asked.source == fork.source
                && asked.offset.is_none_or(|o| o == fork.offset)
                && asked.sub_offset == fork.sub_offset
        }
        _ => false,
    };
    content_type_matches && expiry_matches && fork_matches && params.closed == meta.closed
}

/// `201`/`200` headers of a created stream.
fn created_headers(response: Response, meta: &StreamMeta, tail: SeqNum) -> Response {
    let response = response
        .header("content-type", meta.content_type.clone())
        .header("stream-next-offset", offset_text(tail));
    if meta.closed {
        response.header("stream-closed", "true")
    } else {
        response
    }
}

/// The messages of a body for a stream of `content_type`, numbered after `tail`.
pub(super) fn body_messages(
    content_type: &str,
    body: &[u8],
    allow_empty_array: bool,
    tail: SeqNum,
) -> Result<Vec<Message>, Response> {
    let parts: Vec<Vec<u8>> = if body.is_empty() {
        Vec::new()
    } else if is_json(&normalize_content_type(content_type)) {
        split_messages(body, allow_empty_array)
            .map(|messages| messages.into_iter().map(String::into_bytes).collect())
            .map_err(|e| Response::error(400, e.to_string()))?
    } else {
        vec![body.to_vec()]
    };
    let mut seq = tail;
    parts
        .into_iter()
        .map(|data| {
            seq = seq
                .next()
                .ok_or_else(|| Response::error(413, "the stream is full"))?;
            Ok(Message::new(seq, data))
        })
        .collect()
}

impl<S: StreamStore, P: Platform> Stream<S, P> {
    pub(super) async fn create(&self, req: &Request<'_>) -> Result<Response, StorageError> {
        let params = match create_params(req) {
            Ok(params) => params,
            Err(response) => return Ok(response),
        };
        if req.body.len() > MAX_APPEND_BYTES {
            return Ok(Response::error(413, "body too large"));
        }
        if let Some(fork) = &params.fork {
            if matches!(self.current().await?, State::Missing) {
                return self.create_fork(req, &params, fork).await;
            }
        }
        let mut writer = self.log.writer().await?;
        let response = match self.state_under(&mut writer).await? {
            State::Gone => Response::error(
                409,
                "a deleted stream at this path is still referenced by forks",
            ),
            State::Live(meta) if same_config(&meta, &params) => {
                created_headers(Response::new(200), &meta, writer.tail())
            }
            State::Live(_) => Response::error(409, "stream exists with a different configuration"),
            // Created meanwhile and gone again: try the fork once more, from the start.
            State::Missing if params.fork.is_some() => {
                drop(writer);
                return Box::pin(self.create(req)).await;
            }
            State::Missing => {
                let content_type = params
                    .content_type
                    .clone()
                    .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
                let messages = match body_messages(&content_type, req.body, true, SeqNum::ROOT) {
                    Ok(messages) => messages,
                    Err(response) => return Ok(response),
                };
                let (ttl_seconds, expires_at_ms) = expiry_fields(params.expiry);
                let now_ms = self.platform.now_ms();
                let stream = StreamMeta {
                    content_type,
                    ttl_seconds,
                    expires_at_ms,
                    created_ms: now_ms,
                    last_access_ms: now_ms,
                    closed: params.closed,
                    closed_by: None,
                    last_stream_seq: None,
                    fork: None,
                    ref_count: 0,
                    soft_deleted: false,
                    estuary: None,
                };
                self.commit_created(&mut writer, stream, &messages, req.url)
                    .await?
            }
        };
        drop(writer);
        self.pay_owed_releases().await?;
        Ok(response)
    }

    /// The end of every creation: the new incarnation of the path (keeping what it owes), its
    /// expiry alarm, and `201` with the stream's location.
    async fn commit_created(
        &self,
        writer: &mut crate::stream::Writer<'_, S>,
        stream: StreamMeta,
        messages: &[Message],
        url: &str,
    ) -> Result<Response, StorageError> {
        let meta = super::stream::keeping_releases(writer, stream);
        let tail = writer
            .commit(Commit {
                reset: true,
                entries: messages,
                header: HeaderWrite::Save(&meta),
                producer: None,
            })
            .await?;
        let Some(stream) = meta.stream else {
            return Ok(Response::new(500));
        };
        self.arm().await?;
        Ok(created_headers(Response::new(201), &stream, tail).header("location", url))
    }

    /// Creates a fork: the source counts a reference and names the fork point; nothing is
    /// copied. Any failure after the source counted it gives the reference back.
    async fn create_fork(
        &self,
        req: &Request<'_>,
        params: &CreateParams,
        fork: &ForkParams,
    ) -> Result<Response, StorageError> {
        let request = AcquireRequest {
            offset: fork.offset,
            sub_offset: fork.sub_offset,
            content_type: params.content_type.as_deref().map(normalize_content_type),
        };
        let point: ForkPoint = match self.platform.acquire(&fork.source, &request).await? {
            Ok(point) => point,
            Err(response) => return Ok(response),
        };
        let give_back = |response: Response| async move {
            if let Err(e) = self.platform.release(&fork.source).await {
                self.platform
                    .warn(&format!("giving back a fork reference failed: {e}"));
            }
            Ok::<Response, StorageError>(response)
        };
        let Some(inherited) = SeqNum::new(point.inherited) else {
            return give_back(Response::error(400, "fork offset out of range")).await;
        };
        let messages = match body_messages(&point.content_type, req.body, true, inherited) {
            Ok(messages) => messages,
            Err(response) => return give_back(response).await,
        };
        let mut writer = self.log.writer().await?;
        if !matches!(self.state_under(&mut writer).await?, State::Missing) {
            // Someone created the stream meanwhile: answer as for any existing stream.
            drop(writer);
            let response = Box::pin(self.create_existing(req)).await?;
            return give_back(response).await;
        }
        let (ttl_seconds, expires_at_ms) = match params.expiry {
            Expiry::None => (point.ttl_seconds, point.expires_at_ms),
            expiry => expiry_fields(expiry),
        };
        let now_ms = self.platform.now_ms();
        let stream = StreamMeta {
            content_type: point.content_type,
            ttl_seconds,
            expires_at_ms,
            created_ms: now_ms,
            last_access_ms: now_ms,
            closed: params.closed,
            closed_by: None,
            last_stream_seq: None,
            fork: Some(ForkInfo {
                source: fork.source.clone(),
                offset: fork.offset.unwrap_or(point.offset),
                sub_offset: fork.sub_offset,
                inherited: point.inherited,
                cut: point.cut,
            }),
            ref_count: 0,
            soft_deleted: false,
            estuary: None,
        };
        self.commit_created(&mut writer, stream, &messages, req.url)
            .await
    }

    /// The answer to a create at a path where a stream now exists (or is gone).
    async fn create_existing(&self, req: &Request<'_>) -> Result<Response, StorageError> {
        let params = match create_params(req) {
            Ok(params) => params,
            Err(response) => return Ok(response),
        };
        Ok(match self.current().await? {
            State::Live(meta) if same_config(&meta, &params) => {
                created_headers(Response::new(200), &meta, self.log.tail().await?)
            }
            State::Live(_) => Response::error(409, "stream exists with a different configuration"),
            State::Gone => Response::error(
                409,
                "a deleted stream at this path is still referenced by forks",
            ),
            State::Missing => Response::error(409, "the stream was deleted while it was created"),
        })
    }
}
