//! Appending to a stream and closing it (`POST`): an append of the engine whose preconditions are
//! the protocol's (open, content type, idempotent producer, `Stream-Seq`), committed with the
//! producer's new state and the stream's metadata in one write.

use super::create::{body_messages, MAX_APPEND_BYTES};
use super::headers::is_closed_flag;
use super::http::{gone, not_found, Request, Response};
use super::meta::{offset_text, ClosedBy, StreamMeta};
use super::platform::Platform;
use super::stream::keeping_releases;
use super::stream::{State, Stream, StreamStore};
use crate::stream::condition::{Precondition, Refusal};
use crate::stream::producer::{parse_claim, ProducerClaim, Verdict};
use crate::stream::store::ProducerWrite;
use crate::stream::{Commit, HeaderWrite, SeqNum, StorageError, Writer};

fn closed_conflict(tail: SeqNum) -> Response {
    Response::error(409, "stream is closed")
        .header("stream-closed", "true")
        .header("stream-next-offset", offset_text(tail))
}

fn producer_headers(response: Response, epoch: u64, seq: u64) -> Response {
    response
        .header("producer-epoch", epoch.to_string())
        .header("producer-seq", seq.to_string())
}

/// The response to a producer claim that is not new data.
fn refused_claim(verdict: Verdict, tail: SeqNum) -> Response {
    match verdict {
        Verdict::Duplicate { epoch, last_seq } => producer_headers(
            Response::new(204).header("stream-next-offset", offset_text(tail)),
            epoch,
            last_seq,
        ),
        Verdict::StaleEpoch { current } => Response::error(403, "stale producer epoch")
            .header("producer-epoch", current.to_string()),
        Verdict::MustStartAtZero => {
            Response::error(400, "a new producer epoch must start at sequence 0")
        }
        Verdict::Gap { expected, received } => Response::error(409, "producer sequence gap")
            .header("producer-expected-seq", expected.to_string())
            .header("producer-received-seq", received.to_string()),
        Verdict::Accept { .. } => Response::error(500, "an accepted claim was refused"),
    }
}

impl<S: StreamStore, P: Platform> Stream<S, P> {
    pub(super) async fn append(&self, req: &Request<'_>) -> Result<Response, StorageError> {
        let closing = is_closed_flag(req.header("stream-closed"));
        let claim = match parse_claim(
            req.header("producer-id"),
            req.header("producer-epoch"),
            req.header("producer-seq"),
        ) {
            Ok(claim) => claim,
            Err(e) => return Ok(Response::error(400, e.to_string())),
        };
        let mut writer = self.log.writer().await?;
        let response = match self.state_under(&mut writer).await? {
            State::Missing => not_found(),
            State::Gone => gone(),
            State::Live(stream) => {
                self.append_to(&mut writer, *stream, req, closing, claim.as_ref())
                    .await?
            }
        };
        drop(writer);
        self.pay_owed_releases().await?;
        Ok(response)
    }

    async fn append_to(
        &self,
        writer: &mut Writer<'_, S>,
        mut stream: StreamMeta,
        req: &Request<'_>,
        closing: bool,
        claim: Option<&ProducerClaim>,
    ) -> Result<Response, StorageError> {
        let tail = writer.tail();
        if req.body.len() > MAX_APPEND_BYTES {
            return Ok(Response::error(413, "body too large"));
        }
        if req.body.is_empty() && !closing {
            return Ok(Response::error(400, "empty body"));
        }
        let content_type = req
            .header("content-type")
            .map(str::trim)
            .filter(|ct| !ct.is_empty());
        if !req.body.is_empty() && content_type.is_none() {
            return Ok(Response::error(400, "Content-Type is required"));
        }
        if stream.closed {
            return self
                .closed_append(writer, &stream, req, closing, claim)
                .await;
        }
        let mut first = vec![Precondition::Open];
        if let Some(ct) = content_type.filter(|_| !req.body.is_empty()) {
            first.push(Precondition::ContentType(ct));
        }
        match writer.check(&first).await? {
            Ok(_) => {}
            Err(Refusal::Closed) => return Ok(closed_conflict(tail)),
            Err(_) => {
                return Ok(Response::error(
                    409,
                    "content type differs from the stream's",
                ))
            }
        }
        let messages = match body_messages(&stream.content_type, req.body, false, tail) {
            Ok(messages) => messages,
            Err(response) => return Ok(response),
        };
        let mut then = Vec::new();
        if let Some(claim) = claim {
            then.push(Precondition::Producer(claim));
        }
        let stream_seq = req.header("stream-seq");
        if let Some(seq) = stream_seq {
            then.push(Precondition::StreamSeq(seq));
        }
        let admission = match writer.check(&then).await? {
            Ok(admission) => admission,
            Err(Refusal::Producer(verdict)) => return Ok(refused_claim(verdict, tail)),
            Err(_) => return Ok(Response::error(409, "Stream-Seq does not advance")),
        };
        let now_ms = self.platform.now_ms();
        if let Some(seq) = stream_seq {
            stream.last_stream_seq = Some(seq.to_owned());
        }
        if closing {
            stream.closed = true;
            stream.closed_by = claim.map(|claim| ClosedBy {
                id: claim.id.clone(),
                epoch: claim.epoch,
                seq: claim.seq,
            });
        }
        if stream.ttl_seconds.is_some() {
            stream.last_access_ms = now_ms;
        }
        let accepted = claim.zip(admission.producer);
        let meta = keeping_releases(writer, stream);
        // Most appends change no metadata (no TTL, no Stream-Seq, not closing): one write less.
        let header = if writer.header() == Some(&meta) {
            HeaderWrite::Keep
        } else {
            HeaderWrite::Save(&meta)
        };
        let tail = writer
            .commit(Commit {
                reset: false,
                entries: &messages,
                header,
                producer: accepted.map(|(claim, state)| ProducerWrite {
                    id: &claim.id,
                    state,
                    now_ms,
                    expire_before_ms: now_ms.saturating_sub(self.config.producer_ttl_ms),
                }),
            })
            .await?;
        let status = if accepted.is_some() && !req.body.is_empty() {
            200
        } else {
            204
        };
        let mut response = Response::new(status).header("stream-next-offset", offset_text(tail));
        if closing {
            response = response.header("stream-closed", "true");
        }
        if let Some((_, state)) = accepted {
            response = producer_headers(response, state.epoch, state.last_seq);
        }
        Ok(response)
    }

    /// An append or close that reaches a closed stream: only retries of the close succeed.
    async fn closed_append(
        &self,
        writer: &mut Writer<'_, S>,
        stream: &StreamMeta,
        req: &Request<'_>,
        closing: bool,
        claim: Option<&ProducerClaim>,
    ) -> Result<Response, StorageError> {
        let tail = writer.tail();
        let ok = || {
            Response::new(204)
                .header("stream-closed", "true")
                .header("stream-next-offset", offset_text(tail))
        };
        if let Some(claim) = claim {
            let same_close = stream
                .closed_by
                .as_ref()
                .is_some_and(|c| c.id == claim.id && c.epoch == claim.epoch && c.seq == claim.seq);
            let duplicate = matches!(
                writer.check(&[Precondition::Producer(claim)]).await?,
                Err(Refusal::Producer(Verdict::Duplicate { .. }))
            );
            if closing && (same_close || (req.body.is_empty() && duplicate)) {
                self.touch(writer, stream).await?;
                return Ok(producer_headers(ok(), claim.epoch, claim.seq));
            }
            return Ok(closed_conflict(tail));
        }
        if closing && req.body.is_empty() {
            self.touch(writer, stream).await?;
            return Ok(ok());
        }
        Ok(closed_conflict(tail))
    }
}
