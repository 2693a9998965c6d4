//! A Durable Stream: the protocol over one [`Log`] of messages whose header is the path's
//! [`Meta`]. Requests go in; responses come out, or an event stream to pump. Every write is one
//! commit of the engine (messages, metadata and producer state together); effects that reach
//! other objects (a fork's source) go through the [`Platform`] after the commit.
//!
//! The operations live in their own modules: `create`, `fork`, `append`, `read`, and the
//! lifecycle (state, expiry, deletion, owed releases) here.

use super::http::{gone, not_found, Request, Response};
use super::meta::{expiry_time, offset_text, Meta, StreamMeta};
use super::platform::{Config, Platform};
use super::read::Sse;
use crate::durable_streams::headers::format_rfc3339_ms;
use crate::stream::{Commit, HeaderWrite, Log, LogStore, Message, StorageError, Writer};

/// A store of a stream's messages and metadata.
pub trait StreamStore: LogStore<Entry = Message, Header = Meta> {}
impl<S: LogStore<Entry = Message, Header = Meta>> StreamStore for S {}

/// The path's metadata with `stream` in it, keeping the releases it owes.
pub(super) fn keeping_releases<S: StreamStore>(writer: &Writer<'_, S>, stream: StreamMeta) -> Meta {
    Meta {
        stream: Some(stream),
        owed_releases: writer
            .header()
            .map(|meta| meta.owed_releases.clone())
            .unwrap_or_default(),
    }
}

/// How long the alarm waits before it retries a release the source did not take.
pub const RELEASE_RETRY_MS: u64 = 30_000;

/// What a request leads to.
#[derive(Debug)]
pub enum Outcome {
    Reply(Response),
    /// An event stream: answer with its headers and pump it with [`Stream::sse_next`].
    Sse(Box<Sse>),
}

/// A stream's state, as the protocol sees it.
pub(super) enum State {
    Missing,
    Gone,
    Live(Box<StreamMeta>),
}

/// One stream.
pub struct Stream<S: StreamStore, P: Platform> {
    pub(super) log: Log<S>,
    pub(super) platform: P,
    pub(super) config: Config,
}

impl<S: StreamStore, P: Platform> Stream<S, P> {
    /// The stream kept in `store`.
    pub fn new(store: S, platform: P, config: Config) -> Self {
        Stream {
            log: Log::new(store),
            platform,
            config,
        }
    }

    /// The log.
    pub fn log(&self) -> &Log<S> {
        &self.log
    }

    /// The platform.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Handles one request to the stream.
    pub async fn handle(&self, req: &Request<'_>) -> Result<Outcome, StorageError> {
        let reply = |r: Response| Ok(Outcome::Reply(r));
        match req.method {
            "PUT" => reply(self.create(req).await?),
            "POST" => reply(self.append(req).await?),
            "GET" => self.read_request(req).await,
            "HEAD" => reply(self.head().await?),
            "DELETE" => reply(self.delete().await?),
            _ => reply(
                Response::error(405, "method not allowed")
                    .header("allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS"),
            ),
        }
    }

    /// The stream's state now; a stream found expired is deleted on the spot.
    pub(super) async fn current(&self) -> Result<State, StorageError> {
        let loaded = self.log.state().await?;
        match loaded.header.and_then(|meta| meta.stream) {
            Some(stream) if stream.is_expired(self.platform.now_ms()) => {
                let mut writer = self.log.writer().await?;
                let state = self.state_under(&mut writer).await?;
                drop(writer);
                self.pay_owed_releases().await?;
                Ok(state)
            }
            Some(stream) if stream.soft_deleted => Ok(State::Gone),
            Some(stream) => Ok(State::Live(Box::new(stream))),
            None => Ok(State::Missing),
        }
    }

    /// The stream's metadata and tail while it lives (admin); `Err(404)` when there is none,
    /// `Err(410)` when it was deleted while forks still read it.
    pub async fn live(
        &self,
    ) -> Result<Result<(StreamMeta, crate::stream::SeqNum), u16>, StorageError> {
        match self.current().await? {
            State::Missing => Ok(Err(404)),
            State::Gone => Ok(Err(410)),
            State::Live(stream) => Ok(Ok((*stream, self.log.tail().await?))),
        }
    }

    /// The state under the writer lock (expiring the stream if due; the caller pays what that
    /// leaves owed with [`Stream::pay_owed_releases`] once it lets the lock go).
    pub(super) async fn state_under(
        &self,
        writer: &mut Writer<'_, S>,
    ) -> Result<State, StorageError> {
        let Some(stream) = writer.header().and_then(|meta| meta.stream.clone()) else {
            return Ok(State::Missing);
        };
        if stream.soft_deleted {
            return Ok(State::Gone);
        }
        if stream.is_expired(self.platform.now_ms()) {
            let gone = stream.ref_count > 0;
            self.remove(writer, stream).await?;
            return Ok(if gone { State::Gone } else { State::Missing });
        }
        Ok(State::Live(Box::new(stream)))
    }

    /// Removes the stream: soft-deletes it while forks refer to it (they still read its
    /// messages), drops everything otherwise, owing a release to the source it was forked from.
    pub(super) async fn remove(
        &self,
        writer: &mut Writer<'_, S>,
        mut stream: StreamMeta,
    ) -> Result<(), StorageError> {
        let mut owed = writer
            .header()
            .map(|meta| meta.owed_releases.clone())
            .unwrap_or_default();
        if stream.ref_count > 0 {
            stream.soft_deleted = true;
            let meta = Meta {
                stream: Some(stream),
                owed_releases: owed,
            };
            writer
                .commit(Commit::header(HeaderWrite::Save(&meta)))
                .await?;
            return Ok(());
        }
        if let Some(fork) = stream.fork {
            owed.push(fork.source);
        }
        let meta = Meta {
            stream: None,
            owed_releases: owed,
        };
        writer
            .commit(Commit {
                reset: true,
                entries: &[],
                header: if meta.owed_releases.is_empty() {
                    HeaderWrite::Remove
                } else {
                    HeaderWrite::Save(&meta)
                },
                producer: None,
            })
            .await?;
        Ok(())
    }

    /// Gives back the references this path owes (its deleted forks' sources); one a source does
    /// not take yet is retried by the alarm.
    pub async fn pay_owed_releases(&self) -> Result<(), StorageError> {
        let owed = match self.log.state().await?.header {
            Some(meta) => meta.owed_releases,
            None => return Ok(()),
        };
        let mut failed = false;
        for source in owed {
            if let Err(e) = self.platform.release(&source).await {
                failed = true;
                self.platform.warn(&format!(
                    "releasing fork source {source} failed, will retry: {e}"
                ));
                continue;
            }
            let mut writer = self.log.writer().await?;
            let Some(mut meta) = writer.header().cloned() else {
                continue;
            };
            if let Some(i) = meta.owed_releases.iter().position(|s| *s == source) {
                meta.owed_releases.remove(i);
            }
            let header = if meta.stream.is_none() && meta.owed_releases.is_empty() {
                HeaderWrite::Remove
            } else {
                HeaderWrite::Save(&meta)
            };
            writer.commit(Commit::header(header)).await?;
        }
        if failed {
            self.arm().await?;
        }
        Ok(())
    }

    /// Sets the alarm for the next thing due: the stream's expiry, or a retry of owed releases.
    pub(super) async fn arm(&self) -> Result<(), StorageError> {
        let Some(meta) = self.log.state().await?.header else {
            return Ok(());
        };
        let expiry = meta.stream.as_ref().and_then(expiry_time);
        let retry = (!meta.owed_releases.is_empty()).then(|| {
            i64::try_from(self.platform.now_ms().saturating_add(RELEASE_RETRY_MS))
                .unwrap_or(i64::MAX)
        });
        let due = match (expiry, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at_ms) = due {
            self.platform.set_alarm(at_ms).await;
        }
        Ok(())
    }

    /// The alarm: deletes the stream if it expired, retries owed releases, and arms for what
    /// comes next.
    pub async fn alarm(&self) -> Result<(), StorageError> {
        self.current().await?;
        self.pay_owed_releases().await?;
        self.arm().await
    }

    async fn head(&self) -> Result<Response, StorageError> {
        let stream = match self.current().await? {
            State::Missing => return Ok(not_found()),
            State::Gone => return Ok(gone()),
            State::Live(stream) => stream,
        };
        let tail = self.log.tail().await?;
        let mut response = Response::new(200)
            .header("content-type", stream.content_type.clone())
            .header("stream-next-offset", offset_text(tail))
            .header("cache-control", "no-store");
        if let Some(ttl) = stream.ttl_seconds {
            response = response.header("stream-ttl", ttl.to_string());
        }
        if let Some(at) = stream.expires_at_ms {
            response = response.header("stream-expires-at", format_rfc3339_ms(at));
        }
        if stream.closed {
            response = response.header("stream-closed", "true");
        }
        Ok(response)
    }

    async fn delete(&self) -> Result<Response, StorageError> {
        let mut writer = self.log.writer().await?;
        let response = match self.state_under(&mut writer).await? {
            State::Missing => not_found(),
            State::Gone => gone(),
            State::Live(stream) => {
                self.remove(&mut writer, *stream).await?;
                Response::new(204)
            }
        };
        drop(writer);
        self.pay_owed_releases().await?;
        Ok(response)
    }

    /// Records an access (the sliding TTL) under `writer`.
    pub(super) async fn touch(
        &self,
        writer: &mut Writer<'_, S>,
        stream: &StreamMeta,
    ) -> Result<(), StorageError> {
        if stream.ttl_seconds.is_none() {
            return Ok(());
        }
        let mut meta = writer.header().cloned().unwrap_or_default();
        if let Some(kept) = meta.stream.as_mut() {
            kept.last_access_ms = self.platform.now_ms();
        }
        writer
            .commit(Commit::header(HeaderWrite::Save(&meta)))
            .await?;
        Ok(())
    }
}
