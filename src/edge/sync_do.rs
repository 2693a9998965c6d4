//! `SyncBackendDO`: one per store. Accepts hibernatable WebSockets and serves the Effect RPC
//! frames of `@livestore/sync-cf` over the store's event log.

use crate::livestore::query::{parse_sync_query, SyncParams, Transport};
use crate::livestore::store_id::StoreId;
use crate::livestore::sync::{backend_id_from_random, SyncBackend, BACKEND_ID_LEN};
use crate::livestore::wire::{
    decode_client_message, encode_chunk, encode_defect, encode_failure, encode_stream_end,
    encode_success, ClientMessage, DecodeError, RequestId, Rpc, SyncError, CLOSE_MESSAGE_TOO_BIG,
    HTTP_PONG_VALUE, MAX_FRAME_BYTES, PING, PONG, PUSH_ACK_VALUE,
};
use crate::storage::d1::D1EventLog;
use crate::storage::do_sqlite::ContextRow;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use worker::{
    durable_object, worker_sys::WebSocketRequestResponsePair, DurableObject, Env, Request,
    Response, Result, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

/// Binding name of the D1 database that holds the event logs.
const D1_BINDING: &str = "DB";

type Backend = SyncBackend<D1EventLog, ContextRow>;

/// Per-socket state, kept in the socket attachment so it survives hibernation.
#[derive(Serialize, Deserialize)]
struct Attachment {
    #[serde(rename = "storeId")]
    store_id: String,
    /// The connection's `payload` query parameter, as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
    /// Ids of this socket's live pulls; every accepted push is sent to each.
    #[serde(rename = "pullRequestIds", default)]
    live: Vec<RequestId>,
}

/// Attachments are stored as JSON text, like the TypeScript server does, so their shape
/// does not depend on how values cross into JS.
fn read_attachment(ws: &WebSocket) -> Option<Attachment> {
    let text: String = ws.deserialize_attachment().ok().flatten()?;
    serde_json::from_str(&text).ok()
}

fn write_attachment(ws: &WebSocket, attachment: &Attachment) {
    if let Ok(text) = serde_json::to_string(attachment) {
        let _ = ws.serialize_attachment(text);
    }
}

/// Sends a frame, ignoring sockets that are already closing.
fn send(ws: &WebSocket, frame: &str) {
    let _ = ws.send_with_str(frame);
}

#[durable_object]
pub struct SyncBackendDO {
    state: State,
    env: Env,
    backend: RefCell<Option<Rc<Backend>>>,
}

impl DurableObject for SyncBackendDO {
    fn new(state: State, env: Env) -> Self {
        // Clients ping every few seconds; answer without waking the object.
        if let Ok(pair) = WebSocketRequestResponsePair::new(PING, PONG) {
            state.set_websocket_auto_response(&pair);
        }
        SyncBackendDO {
            state,
            env,
            backend: RefCell::new(None),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let url = req.url()?;
        let params = match parse_sync_query(url.query().unwrap_or("")) {
            Ok(Some(params)) => params,
            Ok(None) => return Response::error("Invalid request: not a sync request", 400),
            Err(e) => return Response::error(format!("Invalid sync request: {e}"), 400),
        };
        match params.transport {
            Transport::Ws => self.accept_socket(&req, params),
            Transport::Http => Response::error(
                "The http transport is not enabled on this server; use transport=ws",
                400,
            ),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        match message {
            WebSocketIncomingMessage::String(text) if text.len() > MAX_FRAME_BYTES => {
                let _ = ws.close(Some(CLOSE_MESSAGE_TOO_BIG), Some("Message is too large"));
            }
            WebSocketIncomingMessage::String(text) => self.on_frame(&ws, &text).await,
            WebSocketIncomingMessage::Binary(_) => send(
                &ws,
                &encode_defect("binary frames are not supported: send JSON text frames"),
            ),
        }
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        let _ = ws.close(Some(1000), Some("closed"));
        Ok(())
    }

    async fn websocket_error(&self, _ws: WebSocket, _error: worker::Error) -> Result<()> {
        Ok(())
    }
}

impl SyncBackendDO {
    fn accept_socket(&self, req: &Request, params: SyncParams) -> Result<Response> {
        if req.headers().get("Upgrade")?.as_deref() != Some("websocket") {
            return Response::error("Durable Object expected Upgrade: websocket", 426);
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        write_attachment(
            &pair.server,
            &Attachment {
                store_id: params.store_id.as_str().to_owned(),
                payload: params.payload,
                live: Vec::new(),
            },
        );
        Response::from_websocket(pair.client)
    }

    /// The store's backend, opened on first use (also after hibernation).
    fn backend(&self, store_id: &StoreId) -> std::result::Result<Rc<Backend>, SyncError> {
        if let Some(backend) = self.backend.borrow().as_ref() {
            return if backend.store_id() == store_id {
                Ok(backend.clone())
            } else {
                Err(SyncError::unknown(
                    "InvalidStoreError",
                    "this Durable Object serves another store",
                ))
            };
        }
        let unavailable = |e: String| SyncError::unknown("StorageError", e);
        let db = self
            .env
            .d1(D1_BINDING)
            .map_err(|e| unavailable(format!("D1 binding {D1_BINDING}: {e}")))?;
        let context = ContextRow::open(
            self.state.storage().sql(),
            store_id.as_str(),
            new_backend_id,
        )
        .map_err(|e| unavailable(e.0))?;
        let backend = Rc::new(SyncBackend::new(
            store_id.clone(),
            context.backend_id().to_owned(),
            D1EventLog::new(db, store_id.clone()),
            context,
        ));
        *self.backend.borrow_mut() = Some(backend.clone());
        Ok(backend)
    }

    async fn on_frame(&self, ws: &WebSocket, text: &str) {
        let message = match decode_client_message(text, Transport::Ws) {
            Ok(message) => message,
            Err(DecodeError::InvalidPayload { id, rpc, message }) => {
                let error = SyncError::unknown(
                    "InvalidRequestError",
                    format!("invalid {rpc} payload: {message}"),
                );
                return send(ws, &encode_failure(&id, &error));
            }
            Err(e) => return send(ws, &encode_defect(&e.to_string())),
        };
        let (id, rpc) = match message {
            ClientMessage::Request { id, rpc } => (id, rpc),
            ClientMessage::Ping => return send(ws, PONG),
            ClientMessage::Ack(_) | ClientMessage::Eof => return,
            ClientMessage::Interrupt(id) => {
                if let Some(mut attachment) = read_attachment(ws) {
                    attachment.live.retain(|live| *live != id);
                    write_attachment(ws, &attachment);
                }
                return;
            }
        };
        let Some(store_id) = read_attachment(ws).and_then(|a| StoreId::parse(&a.store_id).ok())
        else {
            return send(ws, &encode_defect("connection state lost; reconnect"));
        };
        let backend = match self.backend(&store_id) {
            Ok(backend) => backend,
            Err(e) => return send(ws, &encode_failure(&id, &e)),
        };
        let result = match rpc {
            Rpc::Pull(request) => self.pull(ws, &backend, &id, &request).await,
            Rpc::Push(request) => {
                let created_at = super::now_iso();
                backend
                    .push(request, created_at, |responses| self.broadcast(&responses))
                    .await
                    .map(|()| send(ws, &encode_success(&id, PUSH_ACK_VALUE)))
            }
            Rpc::Ping(_) => {
                send(ws, &encode_success(&id, HTTP_PONG_VALUE));
                Ok(())
            }
        };
        if let Err(error) = result {
            send(ws, &encode_failure(&id, &error));
        }
    }

    async fn pull(
        &self,
        ws: &WebSocket,
        backend: &Backend,
        id: &RequestId,
        request: &crate::livestore::wire::PullRequest,
    ) -> std::result::Result<(), SyncError> {
        let mut out = |frame: String| send(ws, &frame);
        let reached = backend.pull(id, request, &mut out).await?;
        if !request.live {
            send(ws, &encode_stream_end(id));
            return Ok(());
        }
        backend
            .go_live(id, reached, &mut out, || {
                if let Some(mut attachment) = read_attachment(ws) {
                    if !attachment.live.contains(id) {
                        attachment.live.push(id.clone());
                    }
                    write_attachment(ws, &attachment);
                }
            })
            .await
    }

    /// Sends the live responses of an accepted push to every live pull of every socket.
    fn broadcast(&self, responses: &[String]) {
        for ws in self.state.get_websockets() {
            let Some(attachment) = read_attachment(&ws) else {
                continue;
            };
            for id in &attachment.live {
                for response in responses {
                    send(&ws, &encode_chunk(id, &[response]));
                }
            }
        }
    }
}

fn new_backend_id() -> String {
    let mut random = [0u8; BACKEND_ID_LEN];
    if getrandom::getrandom(&mut random).is_err() {
        // Without crypto randomness fall back to the clock: still unique per reset.
        let now = js_sys::Date::now().to_bits().to_le_bytes();
        for (i, byte) in random.iter_mut().enumerate() {
            *byte = now[i % now.len()].wrapping_add(i as u8 * 31);
        }
    }
    backend_id_from_random(&random)
}
