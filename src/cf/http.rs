//! The HTTP transport of the sync object: one POST carries one Effect RPC `Request`; the answer
//! is the JSON array of its reply messages, streamed as the RPC produces them (a pull a page at a
//! time), so a catch-up of any size holds about one page in memory.

use super::reply::{channel, Channel};
use super::sync_object::Inner;
use crate::livestore::options::HookContext;
use crate::livestore::query::{SyncParams, Transport};
use crate::livestore::service::{LiveMode, Reply};
use crate::livestore::sync::Gone;
use crate::livestore::wire::{
    decode_client_message, encode_defect, ClientMessage, DecodeError, PullRequest, RequestId,
    SyncError,
};
use crate::stream::SeqNum;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::rc::Rc;
use worker::{Headers, Method, Request, Response, Result};

/// An HTTP-transport answer with `messages` (a JSON array), for refusals.
pub(super) fn rpc_response(
    status: u16,
    messages: &[String],
    extra: &[(String, String)],
) -> Result<Response> {
    let headers = rpc_headers(extra)?;
    let body = format!("[{}]", messages.join(","));
    Ok(Response::ok(body)?
        .with_status(status)
        .with_headers(headers))
}

fn rpc_headers(extra: &[(String, String)]) -> Result<Headers> {
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    for (name, value) in extra {
        headers.set(name, value)?;
    }
    Ok(headers)
}

/// Serves one HTTP RPC call.
pub(super) async fn serve(
    inner: &Rc<Inner>,
    req: &Request,
    body: Option<Vec<u8>>,
    params: SyncParams,
    headers: BTreeMap<String, String>,
) -> Result<Response> {
    let extra = inner.options.response_headers.clone();
    let defect =
        |status: u16, message: &str| rpc_response(status, &[encode_defect(message)], &extra);
    if req.method() != Method::Post {
        return defect(405, "the http transport expects POST requests");
    }
    let content_type = req.headers().get("Content-Type")?.unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return defect(400, "expected Content-Type: application/json");
    }
    let Some(body) = body else {
        return defect(413, "request body is larger than 1 MiB");
    };
    let Ok(body) = String::from_utf8(body) else {
        return defect(400, "request body is not UTF-8");
    };
    let (id, rpc) = match decode_client_message(&body, Transport::Http) {
        Ok(ClientMessage::Request { id, rpc }) => (id, rpc),
        Ok(_) => return defect(400, "expected a single Request message"),
        Err(DecodeError::InvalidPayload { id, rpc, message }) => {
            let failure = super::sync_object::invalid_request(&id, &rpc, &message);
            return rpc_response(200, &[failure], &extra);
        }
        Err(e) => return defect(400, &e.to_string()),
    };
    let context = HookContext {
        store_id: params.store_id.as_str().to_owned(),
        payload: params.payload,
        headers,
    };
    let (channel, messages) = channel();
    let task = inner.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let mut reply = HttpReply {
            channel,
            pending: String::from("["),
            first: true,
        };
        task.serve(&id, rpc, &context, &mut reply).await;
        reply.pending.push(']');
        let _ = reply.flush().await;
    });
    let body = messages.map(|text| Ok::<Vec<u8>, worker::Error>(text.into_bytes()));
    Ok(Response::from_stream(body)?.with_headers(rpc_headers(&extra)?))
}

/// Messages are gathered up to about this size before they go to the runtime as one body chunk:
/// each chunk has a fixed cost, and pull pages are often far smaller.
const CHUNK_BYTES: usize = 256 << 10;

/// The replies of one HTTP call: its response body. Live pulls over HTTP are the client's
/// polling.
struct HttpReply {
    channel: Channel,
    /// The body not yet handed on: the array's opening, then messages with their separators.
    pending: String,
    first: bool,
}

impl HttpReply {
    async fn flush(&mut self) -> std::result::Result<(), Gone> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.channel.send(std::mem::take(&mut self.pending)).await
    }
}

impl Reply for HttpReply {
    async fn send(&mut self, message: String) -> std::result::Result<(), Gone> {
        if !std::mem::take(&mut self.first) {
            self.pending.push(',');
        }
        self.pending.push_str(&message);
        if self.pending.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    fn live_mode(&self, _request: &PullRequest) -> LiveMode {
        LiveMode::End
    }

    fn subscribe(
        &mut self,
        _: &RequestId,
        _: &PullRequest,
        _: SeqNum,
    ) -> std::result::Result<(), SyncError> {
        Ok(())
    }
}
