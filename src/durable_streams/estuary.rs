//! Estuaries (pub/sub sessions): a session stream that holds a copy of every message published
//! to the source streams it subscribed to, after it subscribed.
//!
//! Dedup is by position, not by producer: the session keeps, per source, the source offset it
//! subscribed at (`since`) and the last source offset it copied (`copied`), in its metadata,
//! committed with the copies. A copy carries the source offsets of its messages, and only those
//! past `copied` are appended, so a fan-out that is retried, repeated or races another lands
//! once and in order, and a session that joined late starts at its own `since`.

use super::http::Response;
use super::meta::StreamMeta;
use super::platform::Platform;
use super::stream::keeping_releases;
use super::stream::{State, Stream, StreamStore};
use crate::stream::{Commit, HeaderWrite, Message, SeqNum, StorageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The routes under this prefix.
pub const ESTUARY_PREFIX: &str = "/v1/estuary/";

/// What an estuary keeps: its sources, each with its positions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EstuaryMeta {
    /// By source stream path.
    pub sources: BTreeMap<String, SourceLink>,
}

/// One source of an estuary.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourceLink {
    /// The source's tail when the estuary subscribed: nothing at or before it is copied.
    pub since: u64,
    /// The last source offset copied.
    pub copied: u64,
}

/// An estuary id: 1 to 256 of `[a-zA-Z0-9_\-:.]`, not `.` or `..` (it is a path segment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EstuaryId(String);

impl EstuaryId {
    pub fn parse(id: &str) -> Result<EstuaryId, String> {
        let valid = !id.is_empty()
            && id.len() <= 256
            && id != "."
            && id != ".."
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'));
        if valid {
            Ok(EstuaryId(id.to_owned()))
        } else {
            Err(format!(
                "estuaryId must be 1 to 256 of [a-zA-Z0-9_-:.] (not . or ..), got {id:?}"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request under [`ESTUARY_PREFIX`].
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/estuary/subscribe/<project>/<stream…>`
    Subscribe { project: String, stream: String },
    /// `DELETE /v1/estuary/subscribe/<project>/<stream…>`
    Unsubscribe { project: String, stream: String },
    /// `GET /v1/estuary/<project>/<estuaryId>`
    Info { project: String, id: EstuaryId },
    /// `DELETE /v1/estuary/<project>/<estuaryId>`
    Delete { project: String, id: EstuaryId },
}

impl Route {
    /// The route of `method` on `path`; `Err` is the response for a path or method it has not.
    pub fn parse(method: &str, path: &str) -> Result<Route, Response> {
        let rest = path
            .strip_prefix(ESTUARY_PREFIX)
            .ok_or_else(|| Response::error(404, "not an estuary path"))?;
        let not_found = || Response::error(404, "no such estuary route");
        // `__ds` is not a project (the protocol's reserved paths).
        if rest.split('/').any(|segment| segment == "__ds") {
            return Err(not_found());
        }
        if let Some(target) = rest.strip_prefix("subscribe/") {
            let (project, stream) = target.split_once('/').ok_or_else(not_found)?;
            if project.is_empty() || stream.is_empty() {
                return Err(not_found());
            }
            let (project, stream) = (project.to_owned(), stream.to_owned());
            return match method {
                "POST" => Ok(Route::Subscribe { project, stream }),
                "DELETE" => Ok(Route::Unsubscribe { project, stream }),
                _ => {
                    Err(Response::error(405, "method not allowed").header("allow", "POST, DELETE"))
                }
            };
        }
        let (project, id) = rest.split_once('/').ok_or_else(not_found)?;
        if project.is_empty() || id.contains('/') {
            return Err(not_found());
        }
        let id = EstuaryId::parse(id).map_err(|e| Response::error(400, e))?;
        let project = project.to_owned();
        match method {
            "GET" => Ok(Route::Info { project, id }),
            "DELETE" => Ok(Route::Delete { project, id }),
            _ => Err(Response::error(405, "method not allowed").header("allow", "GET, DELETE")),
        }
    }
}

/// The stream path of `stream` in `project`.
pub fn stream_path(project: &str, stream: &str) -> String {
    format!("/v1/stream/{project}/{stream}")
}

/// The body of subscribe and unsubscribe.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeBody {
    pub estuary_id: String,
}

/// The answer to a subscribe.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Subscribed {
    pub estuary_id: String,
    pub stream_id: String,
    pub estuary_stream_path: String,
    pub expires_at: i64,
    pub is_new_estuary: bool,
}

/// The answer to `GET /v1/estuary/<project>/<estuaryId>`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct EstuaryInfo {
    pub estuary_id: String,
    pub estuary_stream_path: String,
    pub subscriptions: Vec<SubscriptionInfo>,
    pub content_type: String,
    pub expires_at: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionInfo {
    pub stream_id: String,
}

/// Asks a session stream to take a source (internal).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LinkRequest {
    pub source: String,
    pub since: u64,
    pub content_type: String,
    /// The session's expiry, from now.
    pub ttl_ms: u64,
    /// How many sources one estuary may have.
    pub max_sources: usize,
}

/// A session stream's answer to a link.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Linked {
    pub is_new: bool,
    pub expires_at: i64,
}

/// What a copy into a session stream did.
#[derive(Debug, PartialEq, Eq)]
pub enum Copied {
    /// The source's messages through `copied` are in the session.
    Through { copied: u64, appended: usize },
    /// The session no longer takes this source (unsubscribed, or not yet linked).
    Unlinked,
    /// No estuary lives at this path (expired, deleted, or a plain stream): prune it.
    NoEstuary,
}

impl<S: StreamStore, P: Platform> Stream<S, P> {
    /// Creates the session stream (the source's content type, no data) or refreshes its expiry,
    /// and links `request.source` at `request.since` unless it is linked already.
    pub async fn estuary_link(
        &self,
        request: &LinkRequest,
    ) -> Result<Result<Linked, Response>, StorageError> {
        let mut writer = self.log.writer().await?;
        let now = self.platform.now_ms();
        let expires_at = i64::try_from(now.saturating_add(request.ttl_ms)).unwrap_or(i64::MAX);
        let (mut stream, is_new) = match self.state_under(&mut writer).await? {
            State::Gone => {
                return Ok(Err(Response::error(
                    409,
                    "the estuary's stream was deleted",
                )))
            }
            State::Missing => (
                StreamMeta {
                    content_type: request.content_type.clone(),
                    ttl_seconds: None,
                    expires_at_ms: None,
                    created_ms: now,
                    last_access_ms: now,
                    closed: false,
                    closed_by: None,
                    last_stream_seq: None,
                    fork: None,
                    ref_count: 0,
                    soft_deleted: false,
                    estuary: Some(EstuaryMeta::default()),
                },
                true,
            ),
            State::Live(stream) => (*stream, false),
        };
        if stream.estuary.is_none() {
            return Ok(Err(Response::error(
                409,
                "a stream that is not an estuary lives at the estuary's path",
            )));
        }
        let wanted = super::headers::normalize_content_type(&request.content_type);
        if stream.normalized_content_type() != wanted {
            return Ok(Err(Response::error(
                409,
                format!(
                    "the estuary holds {} and the stream is {}",
                    stream.content_type, request.content_type
                ),
            )));
        }
        let estuary = stream.estuary.get_or_insert_with(EstuaryMeta::default);
        if !estuary.sources.contains_key(&request.source) {
            if estuary.sources.len() >= request.max_sources {
                return Ok(Err(Response::error(
                    409,
                    format!(
                        "an estuary subscribes to at most {} streams",
                        request.max_sources
                    ),
                )));
            }
            estuary.sources.insert(
                request.source.clone(),
                SourceLink {
                    since: request.since,
                    copied: request.since,
                },
            );
        }
        stream.expires_at_ms = Some(expires_at);
        let meta = keeping_releases(&writer, stream);
        writer
            .commit(Commit {
                reset: is_new,
                entries: &[],
                header: HeaderWrite::Save(&meta),
                producer: None,
            })
            .await?;
        drop(writer);
        self.arm().await?;
        Ok(Ok(Linked { is_new, expires_at }))
    }

    /// Forgets `source`; whether the estuary had it.
    pub async fn estuary_unlink(&self, source: &str) -> Result<bool, StorageError> {
        let mut writer = self.log.writer().await?;
        let State::Live(mut stream) = self.state_under(&mut writer).await? else {
            return Ok(false);
        };
        let removed = stream
            .estuary
            .as_mut()
            .is_some_and(|e| e.sources.remove(source).is_some());
        if removed {
            let meta = keeping_releases(&writer, *stream);
            writer
                .commit(Commit::header(HeaderWrite::Save(&meta)))
                .await?;
        }
        Ok(removed)
    }

    /// The estuary kept here, with its sources; `None` when there is none.
    pub async fn estuary(&self) -> Result<Option<StreamMeta>, StorageError> {
        Ok(match self.current().await? {
            State::Live(stream) if stream.estuary.is_some() => Some(*stream),
            _ => None,
        })
    }

    /// Appends the messages of `source` (at their source offsets) that follow what the estuary
    /// copied, in order, with the new mark in the same commit.
    pub async fn estuary_copy(
        &self,
        source: &str,
        messages: &[Message],
    ) -> Result<Copied, StorageError> {
        let mut writer = self.log.writer().await?;
        let mut stream = match self.state_under(&mut writer).await? {
            State::Live(stream) if stream.estuary.is_some() && !stream.closed => *stream,
            _ => return Ok(Copied::NoEstuary),
        };
        let Some(link) = stream
            .estuary
            .as_mut()
            .and_then(|e| e.sources.get_mut(source))
        else {
            return Ok(Copied::Unlinked);
        };
        let mut tail = writer.tail();
        let mut entries = Vec::new();
        let mut copied = link.copied;
        for message in messages {
            if message.seq.get() <= copied {
                continue;
            }
            let Some(next) = tail.next() else {
                return Err(StorageError("the estuary's stream is full".into()));
            };
            entries.push(Message::new(next, message.data.clone()));
            tail = next;
            copied = message.seq.get();
        }
        if entries.is_empty() {
            return Ok(Copied::Through {
                copied: link.copied,
                appended: 0,
            });
        }
        link.copied = copied;
        let meta = keeping_releases(&writer, stream);
        writer
            .commit(Commit {
                reset: false,
                entries: &entries,
                header: HeaderWrite::Save(&meta),
                producer: None,
            })
            .await?;
        Ok(Copied::Through {
            copied,
            appended: entries.len(),
        })
    }

    /// Under the writer lock, so no append falls between: the live stream's metadata and tail,
    /// given to `then` (which records a subscriber at that tail). `Err` is 404 or 410.
    pub async fn at_tail<T>(
        &self,
        then: impl FnOnce(&StreamMeta, SeqNum) -> T,
    ) -> Result<Result<T, u16>, StorageError> {
        let mut writer = self.log.writer().await?;
        let state = self.state_under(&mut writer).await?;
        let tail = writer.tail();
        let out = match state {
            State::Missing => Err(404),
            State::Gone => Err(410),
            State::Live(stream) => Ok(then(&stream, tail)),
        };
        drop(writer);
        Ok(out)
    }
}
