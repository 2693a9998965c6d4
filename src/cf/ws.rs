//! The WebSocket transport of the sync object: hibernatable sockets whose state lives in the
//! object's SQLite under the connection id their attachment holds ([`super::socket_state`]),
//! live pulls that get every accepted push, and flow control on every frame a pull sends (see
//! [`crate::livestore::outbox`]).
//!
//! The JS wrapper (`client-ts/src/sync-backend-do.ts`) counts each socket's Acks per request id
//! in a `Map` on the socket (`ws.__acks`) without crossing into wasm; this module reads the counts
//! when it needs room, and sets `ws.__wake` while frames wait so that the next Ack is handed over.
//! The wrapper counts the Acks whose text is canonical ([`canonical_ack`]); any other Ack reaches
//! here and is counted here.

mod broadcast;

use super::socket_state::{conn_of, new_conn_id, write_attachment, Saved, SocketStates};
use super::sse_fanout::FanOut;
use crate::livestore::options::HookContext;
use crate::livestore::outbox::{Outbox, Overflow};
use crate::livestore::service::{LiveMode, Reply};
use crate::livestore::sync::Gone;
use crate::livestore::wire::{encode_interrupted, PullRequest, RequestId, SyncError};
use crate::stream::SeqNum;
use futures_channel::oneshot;
use js_sys::JsString;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{SqlStorage, State, WebSocket};

/// Close code for a reader that fell too far behind (RFC 6455 "try again later").
const CLOSE_TOO_SLOW: u16 = 1013;
/// Close code for a socket whose state is lost (RFC 6455 "internal error"): the client
/// reconnects.
const CLOSE_STATE_LOST: u16 = 1011;
/// Close code of a socket whose client's token expired ("policy violation").
const CLOSE_TOKEN_EXPIRED: u16 = 1008;
const STATE_LOST: &str = "connection state lost; reconnect";
/// How many interrupted request ids a socket remembers (ids only grow, so the latest matter).
const INTERRUPTED_KEPT: usize = 256;

/// How every `Chunk` frame starts (see `encode_chunk`).
const CHUNK_TAG: &str = r#"{"_tag":"Chunk""#;

/// Sends a frame outside flow control (replies that are no chunk: Pong, Exit, Defect), ignoring
/// sockets that are already closing.
pub(super) fn send_text(ws: &WebSocket, frame: &str) {
    let _ = ws.send_with_str(frame);
}

#[wasm_bindgen]
extern "C" {
    /// A WebSocket seen through what flow control needs of it.
    type FrameSink;

    /// `WebSocket.send` with a string already in JS, so a page sent to many sockets is
    /// converted from UTF-8 once.
    #[wasm_bindgen(method, catch, js_name = send)]
    fn send_js(this: &FrameSink, frame: &JsString) -> Result<(), JsValue>;
}

fn frame_sink(ws: &WebSocket) -> &FrameSink {
    let socket: &JsValue = ws.as_ref().as_ref();
    socket.unchecked_ref::<FrameSink>()
}

/// A frame under flow control.
enum Frame {
    /// A frame of one request (a catch-up chunk).
    Text(String),
    /// A broadcast chunk: the request's prefix, and the push's page with the chunk's closing
    /// `]}` (in JS once, shared by every live pull of every socket). They are joined at sending
    /// time, for that send only: a joined string kept for several sockets would hold a flat copy
    /// of the page per request id once the runtime has sent it.
    Chunk {
        prefix: JsString,
        page: Rc<JsString>,
    },
}

/// A frame waiting for room, and who waits for it to go.
struct Pending {
    frame: Frame,
    sent: Option<oneshot::Sender<()>>,
}

struct Socket {
    ws: WebSocket,
    /// What hooks learn about the connection.
    context: Rc<HookContext>,
    live: Vec<RequestId>,
    outbox: Outbox<Pending>,
    /// What `ws.__wake` was last set to.
    wake: bool,
    /// The requests the client interrupted lately: they send nothing more.
    interrupted: VecDeque<RequestId>,
}

impl Socket {
    fn new(ws: WebSocket, saved: Saved) -> Self {
        Socket {
            ws,
            context: Rc::new(saved.context),
            live: saved.live,
            outbox: Outbox::default(),
            wake: false,
            interrupted: VecDeque::new(),
        }
    }

    /// Sends a broadcast chunk: the request's prefix joined with the page, for this send only
    /// (see [`Frame::Chunk`]). Whether the socket took it.
    fn send_chunk(&self, prefix: &JsString, page: &JsString) -> bool {
        frame_sink(&self.ws).send_js(&prefix.concat(page)).is_ok()
    }

    /// Counts the Acks the JS wrapper saw (when the outbox wants them), then sends what the
    /// window has room for. `Err` when the socket is gone.
    fn flush(&mut self) -> Result<(), ()> {
        let acks = if self.outbox.wants_acks() {
            js_sys::Reflect::get(self.ws.as_ref(), &"__acks".into())
                .ok()
                .and_then(|acks| acks.dyn_into::<js_sys::Map>().ok())
        } else {
            None
        };
        if let Some(acks) = acks {
            let counts: Vec<(String, u64)> = self
                .outbox
                .unacknowledged()
                .filter_map(|id| {
                    let count = acks.get(&JsValue::from_str(id)).as_f64()?;
                    // Ack counts are small non-negative integers.
                    Some((id.to_owned(), count as u64))
                })
                .collect();
            for (id, count) in counts {
                self.outbox.acked(&id, count);
            }
        }
        while let Some(pending) = self.outbox.pop_ready() {
            let sent = match &pending.frame {
                Frame::Text(text) => self.ws.send_with_str(text).is_ok(),
                Frame::Chunk { prefix, page } => self.send_chunk(prefix, page),
            };
            if !sent {
                return Err(());
            }
            if let Some(sent) = pending.sent {
                let _ = sent.send(());
            }
        }
        let waiting = self.outbox.is_waiting();
        if waiting != self.wake {
            self.wake = waiting;
            let _ = js_sys::Reflect::set(self.ws.as_ref(), &"__wake".into(), &waiting.into());
        }
        Ok(())
    }
}

#[derive(Default)]
struct Registry {
    /// Filled from the stored state on first use after a start or a wake-up.
    loaded: bool,
    by_conn: HashMap<String, Socket>,
    /// Numbers the pushes' pages, which frames of one page share.
    next_page: u64,
}

/// The object's sockets: their state, live pulls and flow control, in memory, rebuilt from the
/// stored state ([`SocketStates`]) on first use after a wake-up. Every change of a socket's
/// state is stored before it takes effect.
pub(super) struct Sockets {
    states: SocketStates,
    registry: RefCell<Registry>,
}

impl Sockets {
    /// The sockets of an object whose SQLite is `sql`.
    pub fn new(sql: SqlStorage) -> Self {
        Sockets {
            states: SocketStates::new(sql),
            registry: RefCell::default(),
        }
    }

    /// Fills the registry from the object's sockets and their stored state, once. A socket
    /// whose state is missing is closed (its client reconnects); stored state without a socket
    /// is removed.
    fn load(&self, state: &State, registry: &mut Registry) {
        if registry.loaded {
            return;
        }
        let mut saved = match self.states.load() {
            Ok(saved) => saved,
            Err(e) => {
                // Left unloaded: the next use tries again.
                worker::console_error!("reading the sockets' state failed: {e}");
                return;
            }
        };
        for ws in state.get_websockets() {
            if FanOut::is_bridge(state, &ws) {
                // A stream view reader's: not a LiveStore client's.
                continue;
            }
            let conn = conn_of(&ws).unwrap_or_default();
            match saved.remove(&conn) {
                Some(state) if !conn.is_empty() => {
                    registry.by_conn.insert(conn, Socket::new(ws, state));
                }
                _ => {
                    let _ = ws.close(Some(CLOSE_STATE_LOST), Some(STATE_LOST));
                }
            }
        }
        for conn in saved.keys() {
            if let Err(e) = self.states.remove(conn) {
                worker::console_error!("removing the state of a closed socket failed: {e}");
            }
        }
        registry.loaded = true;
    }

    /// Accepts a new socket (hibernatable) with the hook context of its connection. `Err` when
    /// its state cannot be stored: the socket is then closed.
    pub fn accept(&self, state: &State, ws: WebSocket, context: HookContext) -> Result<(), String> {
        let conn = new_conn_id();
        self.states
            .save(&conn, &context)
            .map_err(|e| e.to_string())?;
        state.accept_web_socket(&ws);
        if let Err(e) = write_attachment(&ws, &conn) {
            let _ = ws.close(Some(CLOSE_STATE_LOST), Some(STATE_LOST));
            let _ = self.states.remove(&conn);
            return Err(e);
        }
        let mut registry = self.registry.borrow_mut();
        if registry.loaded {
            let saved = Saved {
                context,
                live: Vec::new(),
            };
            registry.by_conn.insert(conn, Socket::new(ws, saved));
        }
        Ok(())
    }

    /// The connection id and hook context of a socket.
    pub fn connection(&self, state: &State, ws: &WebSocket) -> Option<(String, Rc<HookContext>)> {
        let conn = conn_of(ws)?;
        let mut registry = self.registry.borrow_mut();
        self.load(state, &mut registry);
        registry
            .by_conn
            .get(&conn)
            .map(|socket| (conn.clone(), socket.context.clone()))
    }

    /// Sends a frame of request `id` under flow control; waits until it is sent. `Err` when the
    /// socket is gone.
    pub async fn send(
        &self,
        state: &State,
        conn: &str,
        id: &RequestId,
        text: String,
    ) -> Result<(), Gone> {
        let (tx, rx) = oneshot::channel();
        {
            let mut registry = self.registry.borrow_mut();
            self.load(state, &mut registry);
            let Some(socket) = registry.by_conn.get_mut(conn) else {
                return Err(Gone);
            };
            if socket.interrupted.contains(id) {
                return Err(Gone);
            }
            // The client Acks chunks only: anything else goes in order but takes no room.
            let chunk = text.starts_with(CHUNK_TAG);
            let size = text.len();
            let pending = Pending {
                frame: Frame::Text(text),
                sent: Some(tx),
            };
            let queued = if chunk {
                socket.outbox.enqueue(&id.to_json(), size, None, pending)
            } else {
                socket.outbox.enqueue_uncounted(pending);
                Ok(())
            };
            if queued.is_err() || socket.flush().is_err() {
                registry.by_conn.remove(conn);
                return Err(Gone);
            }
        }
        // Resolves at once when it went out; a dropped sender means the socket went away.
        rx.await.map_err(|_| Gone)
    }

    /// An Ack came in (`text`, for request `id`): counts it unless the JS wrapper did, and sends
    /// what now has room.
    pub fn on_ack(&self, ws: &WebSocket, id: &RequestId, text: &str) {
        if text != canonical_ack(id) {
            count_ack(ws, id);
        }
        let Some(conn) = conn_of(ws) else {
            return;
        };
        let mut registry = self.registry.borrow_mut();
        if let Some(socket) = registry.by_conn.get_mut(&conn) {
            if socket.flush().is_err() {
                registry.by_conn.remove(&conn);
            }
        }
    }

    /// Registers live pull `id` of connection `conn`; stored first, so it survives hibernation.
    pub fn subscribe(&self, conn: &str, id: &RequestId) -> Result<(), SyncError> {
        let mut registry = self.registry.borrow_mut();
        let Some(socket) = registry.by_conn.get_mut(conn) else {
            return Err(SyncError::unknown("ConnectionLost", STATE_LOST));
        };
        if socket.live.contains(id) {
            return Ok(());
        }
        self.states
            .add_live(conn, id)
            .map_err(|e| SyncError::unknown("StorageError", e.to_string()))?;
        socket.live.push(id.clone());
        Ok(())
    }

    /// The client interrupted request `id`: no more frames for it, and, if it was still
    /// running (a live pull, or frames on their way), its `Exit` (an interruption).
    pub fn interrupt(&self, ws: &WebSocket, id: &RequestId) {
        let Some(conn) = conn_of(ws) else {
            return;
        };
        let mut registry = self.registry.borrow_mut();
        let Some(socket) = registry.by_conn.get_mut(&conn) else {
            return;
        };
        let id_json = id.to_json();
        let live = socket.live.contains(id);
        let running = live || socket.outbox.has(&id_json);
        if live {
            if let Err(e) = self.states.remove_live(&conn, id) {
                // Kept in storage, it comes back after a wake-up: a live pull the client has
                // let go of, whose frames it ignores.
                worker::console_error!("removing a live pull from storage failed: {e}");
            }
            socket.live.retain(|other| other != id);
        }
        // Dropped unsent: a waiting catch-up of this id sees its client gone, and so does one
        // that would send later.
        drop(socket.outbox.forget(&id_json));
        if !socket.interrupted.contains(id) {
            if socket.interrupted.len() == INTERRUPTED_KEPT {
                socket.interrupted.pop_front();
            }
            socket.interrupted.push_back(id.clone());
        }
        if running {
            socket.outbox.enqueue_uncounted(Pending {
                frame: Frame::Text(encode_interrupted(id)),
                sent: None,
            });
        }
        if socket.flush().is_err() {
            registry.by_conn.remove(&conn);
        }
    }

    /// `(sockets, live pulls)` open now (admin).
    pub fn counts(&self, state: &State) -> (u64, u64) {
        let mut registry = self.registry.borrow_mut();
        self.load(state, &mut registry);
        let live = registry.by_conn.values().map(|s| s.live.len() as u64).sum();
        (registry.by_conn.len() as u64, live)
    }

    /// Closes every socket with `code` and `reason` and forgets them (admin reset and delete):
    /// their clients reconnect. How many there were.
    pub fn close_all(&self, state: &State, code: u16, reason: &str) -> u64 {
        let mut registry = self.registry.borrow_mut();
        self.load(state, &mut registry);
        let closed = registry.by_conn.len() as u64;
        for (conn, socket) in registry.by_conn.drain() {
            let _ = socket.ws.close(Some(code), Some(reason));
            if let Err(e) = self.states.remove(&conn) {
                worker::console_error!("removing a closed socket's state failed: {e}");
            }
        }
        closed
    }

    /// Closes the sockets whose `expiry` (seconds since the epoch) is at or before `now`;
    /// returns the earliest expiry of the others.
    pub fn close_expired(
        &self,
        state: &State,
        now: u64,
        expiry: impl Fn(&HookContext) -> Option<u64>,
    ) -> Option<u64> {
        let mut registry = self.registry.borrow_mut();
        self.load(state, &mut registry);
        let mut next: Option<u64> = None;
        let mut expired = Vec::new();
        for (conn, socket) in registry.by_conn.iter() {
            match expiry(&socket.context) {
                Some(at) if at <= now => expired.push(conn.clone()),
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        for conn in expired {
            if let Some(socket) = registry.by_conn.remove(&conn) {
                let _ = socket.ws.close(
                    Some(CLOSE_TOKEN_EXPIRED),
                    Some("token expired: reconnect with a new one"),
                );
            }
            if let Err(e) = self.states.remove(&conn) {
                worker::console_error!("removing a closed socket's state failed: {e}");
            }
        }
        next
    }

    /// The socket closed or failed: its state goes.
    pub fn forget(&self, ws: &WebSocket) {
        let Some(conn) = conn_of(ws) else {
            return;
        };
        self.registry.borrow_mut().by_conn.remove(&conn);
        if let Err(e) = self.states.remove(&conn) {
            // Removed at the next wake-up, which finds no socket for it.
            worker::console_error!("removing a closed socket's state failed: {e}");
        }
    }
}

/// An Ack as clients write it, which the JS wrapper counts by itself (its pattern: a request id
/// of digits, quoted or not).
fn canonical_ack(id: &RequestId) -> String {
    let digits = match id {
        RequestId::Text(text) => !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()),
        RequestId::Number(_) => true,
    };
    if digits {
        format!(r#"{{"_tag":"Ack","requestId":{}}}"#, id.to_json())
    } else {
        String::new()
    }
}

/// Counts an Ack in the socket's `__acks` map, as the JS wrapper does.
fn count_ack(ws: &WebSocket, id: &RequestId) {
    let socket: &JsValue = ws.as_ref();
    let key = "__acks".into();
    let acks = match js_sys::Reflect::get(socket, &key)
        .ok()
        .and_then(|acks| acks.dyn_into::<js_sys::Map>().ok())
    {
        Some(acks) => acks,
        None => {
            let acks = js_sys::Map::new();
            let _ = js_sys::Reflect::set(socket, &key, &acks);
            acks
        }
    };
    let id = JsValue::from_str(&id.to_json());
    let count = acks.get(&id).as_f64().unwrap_or(0.0) + 1.0;
    acks.set(&id, &JsValue::from_f64(count));
}

/// `{"_tag":"Chunk","requestId":<id>,"values":[`: a chunk of one page is this, the page, `]}`.
fn chunk_prefix(id: &RequestId) -> String {
    format!(
        r#"{{"_tag":"Chunk","requestId":{},"values":["#,
        id.to_json()
    )
}

/// The replies of one RPC on a socket.
pub(super) struct WsReply<'a> {
    pub state: &'a State,
    pub sockets: &'a Sockets,
    pub conn: &'a str,
    pub id: &'a RequestId,
}

impl Reply for WsReply<'_> {
    async fn send(&mut self, message: String) -> Result<(), Gone> {
        self.sockets
            .send(self.state, self.conn, self.id, message)
            .await
    }

    fn live_mode(&self, request: &PullRequest) -> LiveMode {
        if request.live {
            LiveMode::Stream
        } else {
            LiveMode::End
        }
    }

    fn subscribe(
        &mut self,
        id: &RequestId,
        _request: &PullRequest,
        _at: SeqNum,
    ) -> Result<(), SyncError> {
        self.sockets.subscribe(self.conn, id)
    }
}
