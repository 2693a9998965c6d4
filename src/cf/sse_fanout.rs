//! The SSE bridge's object half (the Worker's is [`super::sse_bridge`]): an object (a stream's,
//! or a store's for its stream view) accepts a bridge socket per live reader with the hibernation
//! API ([`accept`]), keeps the reader's position in the socket's attachment, and after each change
//! of the log sends one frame per position ([`FanOut`]): between appends it has nothing to do and
//! may be evicted.

use super::stream_object::{plain, to_response, Cors};
use crate::durable_streams::bridge::{
    deliver, Delivery, Position, Then, CLOSE_ENDED, CLOSE_RESUME,
};
use crate::durable_streams::cursor::parse_cursor;
use crate::durable_streams::read::Readable;
use crate::stream::SeqNum;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{Date, Response, Result, State, WebSocket, WebSocketPair};

/// The tag of bridge sockets among an object's hibernatable WebSockets.
const TAG: &str = "sse";

#[wasm_bindgen]
extern "C" {
    /// A bridge socket as the object sees it: a shared frame and a shared attachment are
    /// handed over as JS values, converted once per position rather than once per reader.
    type BridgeSocket;

    #[wasm_bindgen(method, catch, js_name = send)]
    fn send_js(this: &BridgeSocket, frame: &js_sys::Uint8Array)
        -> std::result::Result<(), JsValue>;

    #[wasm_bindgen(method, catch, js_name = serializeAttachment)]
    fn set_attachment(this: &BridgeSocket, value: &JsValue) -> std::result::Result<(), JsValue>;

    #[wasm_bindgen(method, catch, js_name = deserializeAttachment)]
    fn attachment(this: &BridgeSocket) -> std::result::Result<JsValue, JsValue>;
}

fn bridge_socket(ws: &WebSocket) -> &BridgeSocket {
    let socket: &JsValue = ws.as_ref().as_ref();
    socket.unchecked_ref::<BridgeSocket>()
}

/// An object whose log live readers follow through bridge sockets.
pub(super) trait Bridged: 'static {
    /// The log they read.
    type Log: Readable;
    /// The object's state, which holds its sockets.
    fn state(&self) -> &State;
    /// The log as it is now; `None` when it is not open (the fan-out then ends: whatever opens
    /// it starts the fan-out again).
    fn log_now(self: &Rc<Self>) -> Option<Rc<Self::Log>>;
}

/// Accepts a bridge socket for a reader at the tail of `host`'s log (`409` when it is not: it
/// reads on), and makes sure the fan-out runs.
pub(super) async fn accept<H: Bridged>(
    host: &Rc<H>,
    fan_out: &Rc<FanOut>,
    url: &worker::Url,
) -> Result<Response> {
    let mut from = None;
    let mut cursor = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "offset" => from = value.parse().ok().and_then(SeqNum::new),
            "cursor" => cursor = parse_cursor(&value),
            _ => {}
        }
    }
    let Some(from) = from else {
        return plain(400, "a bridge needs an offset");
    };
    let failed = |e: crate::stream::StorageError| worker::Error::RustError(e.to_string());
    let Some(log) = host.log_now() else {
        return plain(503, "the log is not open");
    };
    let view = match log.view(false).await.map_err(failed)? {
        Ok(view) => view,
        Err(response) => return to_response(response, Cors::Open),
    };
    if from != view.tail || view.closed {
        return plain(409, "not at the tail");
    }
    let pair = WebSocketPair::new()?;
    host.state()
        .accept_websocket_with_tags(&pair.server, &[TAG]);
    let at = Position { from, cursor };
    bridge_socket(&pair.server)
        .set_attachment(&JsValue::from(at.to_attachment()))
        .map_err(worker::Error::from)?;
    fan_out.start(host);
    Response::from_websocket(pair.client)
}

/// The object's fan-out to its bridge sockets: runs while there are any, one round per change.
#[derive(Default)]
pub(super) struct FanOut {
    running: Cell<bool>,
    /// Which loop is the current one: a log opened afresh (a store reset, a wake-up) starts a
    /// new loop, and the one waiting on the old log ends when it wakes.
    generation: Cell<u64>,
}

impl FanOut {
    /// Starts the fan-out unless it runs (an object woken from hibernation starts it again).
    pub(super) fn start<H: Bridged>(self: &Rc<Self>, host: &Rc<H>) {
        if self.running.replace(true) {
            return;
        }
        let generation = self.generation.get();
        // Weak: an object instance the runtime drops (hibernation, eviction) takes its log with
        // it, whose dropped readers wake this loop to end it; a strong reference would keep the
        // old instance alive for ever, waiting on a log nothing writes to any more.
        let this = Rc::downgrade(self);
        let host: Weak<H> = Rc::downgrade(host);
        wasm_bindgen_futures::spawn_local(async move {
            let current = || {
                this.upgrade()
                    .is_some_and(|this| this.generation.get() == generation)
            };
            while current() {
                let Some(host) = host.upgrade() else { break };
                let Some(log) = host.log_now() else { break };
                // Armed before the round: a change during it makes another.
                let changed = log.changed();
                let sockets = host.state().get_websockets_with_tag(TAG);
                drop(host);
                if sockets.is_empty() {
                    break;
                }
                fan_out_round(&*log, sockets).await;
                drop(log);
                changed.await;
            }
            if let Some(this) = this.upgrade() {
                if this.generation.get() == generation {
                    this.running.set(false);
                }
            }
        });
    }

    /// Starts a new fan-out on the log `host` has now (opened afresh), ending the one before.
    pub(super) fn restart<H: Bridged>(self: &Rc<Self>, host: &Rc<H>) {
        self.generation.set(self.generation.get().wrapping_add(1));
        self.running.set(false);
        self.start(host);
    }

    /// How many readers the object's bridge sockets serve.
    pub(super) fn readers(state: &State) -> usize {
        state.get_websockets_with_tag(TAG).len()
    }

    /// Ends every reader (`CLOSE_ENDED`: their log is gone, or another one now); how many.
    pub(super) fn end_all(state: &State, reason: &str) -> u64 {
        let sockets = state.get_websockets_with_tag(TAG);
        for ws in &sockets {
            let _ = ws.close(Some(CLOSE_ENDED), Some(reason));
        }
        sockets.len() as u64
    }

    /// Whether `ws` is a bridge socket (the object's other sockets are someone else's).
    pub(super) fn is_bridge(state: &State, ws: &WebSocket) -> bool {
        state.get_tags(ws).iter().any(|tag| tag == TAG)
    }
}

/// Sends each group of readers at one position what is new for them, read once.
async fn fan_out_round(log: &impl Readable, sockets: Vec<WebSocket>) {
    let mut groups: HashMap<Position, Vec<WebSocket>> = HashMap::new();
    for ws in sockets {
        let at = bridge_socket(&ws)
            .attachment()
            .ok()
            .and_then(|value| value.as_string())
            .and_then(|text| Position::from_attachment(&text));
        match at {
            Some(at) => groups.entry(at).or_default().push(ws),
            None => {
                let _ = ws.close(Some(1011), Some("no position"));
            }
        }
    }
    let now = Date::now().as_millis();
    for (at, group) in groups {
        let delivery = match deliver(log, now, at).await {
            Ok(delivery) => delivery,
            Err(e) => {
                worker::console_error!("event stream fan-out: {e}");
                continue;
            }
        };
        match delivery {
            Delivery::Nothing => {}
            Delivery::Gone => {
                for ws in group {
                    let _ = ws.close(Some(CLOSE_ENDED), Some("the stream is gone"));
                }
            }
            Delivery::Send { frame, next, then } => {
                // Bytes: converted once here, and the Worker writes them on as they are.
                let frame = js_sys::Uint8Array::from(frame.as_bytes());
                let moved = JsValue::from(
                    Position {
                        from: next,
                        cursor: at.cursor,
                    }
                    .to_attachment(),
                );
                for ws in group {
                    let socket = bridge_socket(&ws);
                    if socket.send_js(&frame).is_err() {
                        // Where it stands is unknown now: it catches up by itself.
                        let _ = ws.close(Some(CLOSE_RESUME), Some("send failed: catch up"));
                        continue;
                    }
                    let _ = match then {
                        Then::Stay => socket.set_attachment(&moved),
                        Then::Resume => ws
                            .close(Some(CLOSE_RESUME), Some("behind: catch up"))
                            .map_err(JsValue::from),
                        Then::End => ws
                            .close(Some(CLOSE_ENDED), Some("closed"))
                            .map_err(JsValue::from),
                    };
                }
            }
        }
    }
}
