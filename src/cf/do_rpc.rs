//! The DO-RPC transport of the sync object (`SyncBackendRpcInterface.rpc`, called by
//! `makeDoRpcSync` from another Durable Object). The JS wrapper unpacks the msgpack request into
//! the JSON of its RPC messages and packs what comes back: a lone pull is answered as a
//! `ReadableStream` of its messages, taken from the RPC as the caller reads them (so a catch-up
//! holds about one page in memory); anything else as `{"stream":false,"messages":[…]}`. Payload
//! validation does not apply, as in `@livestore/sync-cf`.

use super::reply::{channel, Channel};
use super::sync_object::{invalid_request, Inner};
use crate::livestore::chunk::PullPage;
use crate::livestore::options::HookContext;
use crate::livestore::query::Transport;
use crate::livestore::service::{LiveMode, Reply};
use crate::livestore::sync::Gone;
use crate::livestore::wire::{
    decode_client_message, decode_do_rpc_requests, encode_chunk, encode_defect, encode_die,
    encode_do_rpc_reply, with_rpc_request_id, ClientMessage, DecodeError, PullRequest, RequestId,
    Rpc, SyncError,
};
use crate::stream::SeqNum;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::rc::Rc;
use wasm_bindgen::JsValue;

/// Serves one DO-RPC call: a string (`{"stream":false,"messages":[…]}`) or a `ReadableStream`
/// of message JSON strings.
pub(super) async fn serve(inner: &Rc<Inner>, requests_json: &str) -> JsValue {
    let reply = |messages: &[String]| JsValue::from_str(&encode_do_rpc_reply(false, messages));
    if !inner.options.transports().allows(Transport::DoRpc) {
        return reply(&[encode_defect(
            "the do-rpc transport is disabled on this server",
        )]);
    }
    let requests = match decode_do_rpc_requests(requests_json) {
        Ok(requests) => requests,
        Err(e) => return reply(&[encode_defect(&e.to_string())]),
    };
    let single = requests.len() == 1;
    let mut messages = Vec::new();
    for request in requests {
        let (id, rpc) = match decode_client_message(request.get(), Transport::DoRpc) {
            Ok(ClientMessage::Request { id, rpc }) => (id, rpc),
            Ok(_) => continue, // acks and interrupts mean nothing here
            Err(DecodeError::InvalidPayload { id, rpc, message }) => {
                messages.push(invalid_request(&id, &rpc, &message));
                continue;
            }
            Err(DecodeError::UnknownRpc { id, tag }) => {
                messages.push(encode_die(&id, &format!("Unknown request tag: {tag}")));
                continue;
            }
            Err(e) => {
                messages.push(encode_defect(&e.to_string()));
                continue;
            }
        };
        let context = HookContext {
            store_id: rpc.store_id().to_owned(),
            payload: rpc.payload().cloned(),
            headers: BTreeMap::new(),
        };
        if single && matches!(rpc, Rpc::Pull(_)) {
            // A lone streaming call is answered as a stream, as the client expects.
            let (channel, stream) = channel();
            let task = inner.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let mut reply = DoRpcReply {
                    inner: task.clone(),
                    out: Out::Channel(channel),
                };
                task.serve(&id, rpc, &context, &mut reply).await;
            });
            let values = stream.map(|message| Ok(JsValue::from_str(&message)));
            return wasm_streams::ReadableStream::from_stream(values)
                .into_raw()
                .into();
        }
        let mut reply = DoRpcReply {
            inner: inner.clone(),
            out: Out::Collect(&mut messages),
        };
        inner.serve(&id, rpc, &context, &mut reply).await;
    }
    reply(&messages)
}

/// Where a DO-RPC call's messages go.
enum Out<'a> {
    Channel(Channel),
    Collect(&'a mut Vec<String>),
}

/// The replies of one DO-RPC request.
struct DoRpcReply<'a> {
    inner: Rc<Inner>,
    out: Out<'a>,
}

impl Reply for DoRpcReply<'_> {
    async fn send(&mut self, message: String) -> Result<(), Gone> {
        match &mut self.out {
            Out::Channel(channel) => channel.send(message).await,
            Out::Collect(messages) => {
                messages.push(message);
                Ok(())
            }
        }
    }

    /// DO-RPC pull values carry the request id as `rpcRequestId`.
    fn chunk(&self, id: &RequestId, page: &PullPage) -> String {
        encode_chunk(id, &[&with_rpc_request_id(&page.json, id)])
    }

    fn live_mode(&self, request: &PullRequest) -> LiveMode {
        if request.rpc_context.is_some() {
            LiveMode::Callback
        } else {
            LiveMode::End
        }
    }

    fn subscribe(
        &mut self,
        id: &RequestId,
        request: &PullRequest,
        at: SeqNum,
    ) -> Result<(), SyncError> {
        let Some(rpc_context) = &request.rpc_context else {
            return Ok(());
        };
        self.inner
            .subscriptions
            .subscribe(
                &rpc_context.caller_context,
                &request.store_id,
                id,
                request.payload.as_ref(),
                at,
            )
            .map_err(|e| SyncError::unknown("StorageError", format!("subscribe: {e}")))
    }
}
