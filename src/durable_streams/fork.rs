//! Forks without copies. A fork shares its source's offsets: whatever it inherits (up to its
//! fork point) it reads through the source, a budget at a time, and the source keeps those
//! messages while any fork refers to it (a deleted source is only soft-deleted until its last fork
//! is gone). These are the source's side (acquire, release, reads for a fork) and the fork's
//! reads.

use super::headers::is_json;
use super::http::Response;
use super::meta::StreamMeta;
use super::platform::{AcquireRequest, ForkPoint, Platform};
use super::stream::keeping_releases;
use super::stream::{State, Stream, StreamStore};
use crate::stream::{Budget, Commit, HeaderWrite, Message, SeqNum, StorageError};

impl<S: StreamStore, P: Platform> Stream<S, P> {
    /// Messages `(after, upto]` of this stream within `budget`: the inherited ones through the
    /// source (one read of them), then, with what the budget has left, its own from the log.
    pub(super) async fn read_messages(
        &self,
        stream: &StreamMeta,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Message>, StorageError> {
        let Some(fork) = &stream.fork else {
            return self.log.read(after, upto, budget).await;
        };
        let inherited = SeqNum::new(fork.inherited).unwrap_or(SeqNum::ROOT);
        if after >= inherited {
            return self.log.read(after, upto, budget).await;
        }
        let mut messages = self
            .platform
            .read_source(&fork.source, after, upto.min(inherited), budget)
            .await?;
        if let (Some(cut), Some(last)) = (fork.cut, messages.last_mut()) {
            if last.seq == inherited {
                last.data
                    .truncate(usize::try_from(cut).unwrap_or(usize::MAX));
            }
        }
        let reached = messages.last().map(|m| m.seq);
        if reached == Some(inherited) && upto > inherited {
            let used: usize = messages.iter().map(|m| m.data.len()).sum();
            let rest = Budget {
                rows: budget.rows.saturating_sub(messages.len()),
                bytes: budget.bytes.saturating_sub(used),
            };
            if rest.rows > 0 && rest.bytes > 0 {
                // Only what fits whole: the first entry of a read is taken however large.
                let own = self.log.read(inherited, upto, rest).await?;
                let mut bytes = 0usize;
                for message in own {
                    bytes += message.data.len();
                    if bytes > rest.bytes {
                        break;
                    }
                    messages.push(message);
                }
            }
        }
        Ok(messages)
    }

    /// Serves a read of `(after, upto]` for a fork of this stream: it answers even once the
    /// stream is soft-deleted, since its forks still need what they inherit.
    pub async fn read_for_fork(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Message>, StorageError> {
        let Some(stream) = self.log.state().await?.header.and_then(|meta| meta.stream) else {
            return Err(StorageError("the fork's source is gone".into()));
        };
        self.read_messages(&stream, after, upto, budget).await
    }

    /// Serves a fork's acquire on this (its source) stream: validates the request, counts the
    /// reference and names the fork point. `Ok(Err)` is the response the fork answers with.
    pub async fn acquire(
        &self,
        request: &AcquireRequest,
    ) -> Result<Result<ForkPoint, Response>, StorageError> {
        let mut writer = self.log.writer().await?;
        let refused = |status: u16, message: &str| Ok(Err(Response::error(status, message)));
        let mut stream = match self.state_under(&mut writer).await? {
            State::Missing => return refused(404, "fork source not found"),
            State::Gone => return refused(409, "fork source was deleted"),
            State::Live(stream) => *stream,
        };
        if request
            .content_type
            .as_ref()
            .is_some_and(|ct| *ct != stream.normalized_content_type())
        {
            return refused(409, "content type differs from the source");
        }
        let tail = writer.tail().get();
        let anchor = request.offset.unwrap_or(tail);
        if anchor > tail {
            return refused(400, "fork offset beyond the source's tail");
        }
        let sub = request.sub_offset;
        let (inherited, cut) = if sub == 0 {
            (anchor, None)
        } else if is_json(&stream.normalized_content_type()) {
            let inherited = anchor.saturating_add(sub);
            if inherited > tail {
                return refused(400, "fork sub-offset beyond the source's tail");
            }
            (inherited, None)
        } else {
            // Into the middle of the message after the anchor: its first `sub` bytes.
            let next = anchor + 1;
            let (Some(after), Some(at)) = (SeqNum::new(anchor), SeqNum::new(next)) else {
                return refused(400, "fork offset out of range");
            };
            let message = if next <= tail {
                self.read_messages(&stream, after, at, Budget { rows: 1, bytes: 0 })
                    .await?
                    .into_iter()
                    .next()
            } else {
                None
            };
            let Some(message) = message else {
                return refused(400, "no message after the fork offset");
            };
            if u64::try_from(message.data.len()).unwrap_or(u64::MAX) < sub {
                return refused(400, "fork sub-offset beyond the message");
            }
            (next, Some(sub))
        };
        stream.ref_count += 1;
        let point = ForkPoint {
            content_type: stream.content_type.clone(),
            ttl_seconds: stream.ttl_seconds,
            expires_at_ms: stream.expires_at_ms,
            offset: anchor,
            inherited,
            cut,
        };
        let meta = keeping_releases(&writer, stream);
        writer
            .commit(Commit::header(HeaderWrite::Save(&meta)))
            .await?;
        Ok(Ok(point))
    }

    /// Drops one fork's reference; a soft-deleted stream whose last fork is gone is removed
    /// (and gives back its own source's reference).
    pub async fn release(&self) -> Result<(), StorageError> {
        let mut writer = self.log.writer().await?;
        let Some(mut meta) = writer.header().cloned() else {
            return Ok(());
        };
        let Some(stream) = meta.stream.as_mut() else {
            return Ok(());
        };
        stream.ref_count = stream.ref_count.saturating_sub(1);
        if stream.soft_deleted && stream.ref_count == 0 {
            let stream = stream.clone();
            self.remove(&mut writer, stream).await?;
        } else {
            writer
                .commit(Commit::header(HeaderWrite::Save(&meta)))
                .await?;
        }
        drop(writer);
        self.pay_owed_releases().await
    }
}
