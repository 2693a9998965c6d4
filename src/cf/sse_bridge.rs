//! The SSE hibernation bridge on Cloudflare (the rules are [`crate::durable_streams::bridge`]).
//!
//! The Worker half ([`open`]) holds the client's event stream: it catches up with `GET`s to the
//! log's object (a stream's, or a store's for its stream view: an [`ObjectLink`]), then at the
//! tail keeps one WebSocket to the object per reader, and sends keep-alives, recycles the
//! response and ends it at the token's expiry by itself. The object half is
//! [`super::sse_fanout`].

use super::stream_object::{event_stream_headers, plain, Cors};
use crate::durable_streams::bridge::{frame_head, keep_alive, Page, Position, CLOSE_RESUME};
use crate::durable_streams::cursor::parse_cursor;
use crate::durable_streams::platform::Config;
use crate::durable_streams::read::{sse_headers, ReadQuery};
use crate::stream::offset::{parse_offset, ReadFrom};
use crate::stream::SeqNum;
use futures_channel::mpsc;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use js_sys::JsString;
use std::cell::Cell;
use std::time::Duration;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::{
    Date, Delay, Headers, Method, Request, RequestInit, Response, ResponseBody, Result, WebSocket,
};

/// The internal path the Worker opens bridge sockets on (never forwarded from outside).
pub(super) const BRIDGE_PATH: &str = "/__ds_internal/bridge";

fn now_ms() -> u64 {
    Date::now().as_millis()
}

// ---- The Worker half ----

#[wasm_bindgen]
extern "C" {
    /// The runtime's native byte pipe (`IdentityTransformStream`): the Worker writes events to
    /// its writable side, the response reads its readable side. Native, unlike a standard
    /// `TransformStream`, whose every write costs a round of JS promises.
    #[wasm_bindgen(js_name = IdentityTransformStream)]
    type Pipe;
    #[wasm_bindgen(constructor, js_class = "IdentityTransformStream", catch)]
    fn new(strategy: &JsValue) -> std::result::Result<Pipe, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn readable(this: &Pipe) -> worker::web_sys::ReadableStream;
    #[wasm_bindgen(method, getter)]
    fn writable(this: &Pipe) -> JsValue;

    /// The writer of a pipe's writable side.
    type Writer;
    #[wasm_bindgen(method, catch)]
    fn write(this: &Writer, chunk: &JsValue) -> std::result::Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn close(this: &Writer) -> std::result::Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method, getter)]
    fn ready(this: &Writer) -> js_sys::Promise;
    #[wasm_bindgen(method, getter)]
    fn closed(this: &Writer) -> js_sys::Promise;

    type TextEncoder;
    #[wasm_bindgen(constructor, js_class = "TextEncoder")]
    fn new() -> TextEncoder;
    #[wasm_bindgen(method)]
    fn encode(this: &TextEncoder, text: &JsString) -> js_sys::Uint8Array;
}

/// What a pipe holds before the bridge stops writing to it and waits for the client.
const PIPE_BYTES: f64 = 262_144.0;
/// How far past [`PIPE_BYTES`] a live reader may fall before it is sent back to catching up
/// (where it reads at the client's pace): a slow client holds about 1 MB here at most.
const BEHIND_BYTES: f64 = 786_432.0;

/// A JS event listener.
type Listener = Closure<dyn FnMut(JsValue)>;

/// The event stream's body: writes events as bytes, with backpressure for catch-up.
struct Body {
    writer: Writer,
    encoder: TextEncoder,
    /// Swallows rejections of writes not awaited (the client went away; `closed` says so).
    ignore: Listener,
}

impl Body {
    /// The pipe and its readable side, the response's body.
    fn new() -> Result<(Body, worker::web_sys::ReadableStream)> {
        let strategy = js_sys::Object::new();
        js_sys::Reflect::set(&strategy, &"highWaterMark".into(), &PIPE_BYTES.into())?;
        let pipe = Pipe::new(&strategy)?;
        let writable = pipe.writable();
        let writer: Writer = js_sys::Reflect::get(&writable, &"getWriter".into())?
            .dyn_into::<js_sys::Function>()?
            .call0(&writable)?
            .unchecked_into();
        Ok((
            Body {
                writer,
                encoder: TextEncoder::new(),
                ignore: Listener::new(|_| {}),
            },
            pipe.readable(),
        ))
    }

    /// Writes `text` without waiting.
    fn send(&self, text: &JsString) {
        if let Ok(promise) = self.writer.write(&self.encoder.encode(text)) {
            let _ = promise.catch(&self.ignore);
        }
    }

    /// Writes `text` once the pipe has room: the client's pace.
    async fn send_paced(&self, text: &str) -> Result<()> {
        self.room().await?;
        self.send(&JsString::from(text));
        Ok(())
    }

    /// Waits until the pipe has room (the client took what it was sent); `Err` once it failed.
    async fn room(&self) -> Result<()> {
        loop {
            // A timer beside it: the runtime cancels a request that waits on nothing else, as
            // hung, though the client is only slow.
            let timer = Delay::from(Duration::from_secs(5));
            if let Either::Left((ready, _)) =
                select(JsFuture::from(self.writer.ready()), timer).await
            {
                ready?;
                return Ok(());
            }
        }
    }

    fn close(&self) {
        if let Ok(promise) = self.writer.close() {
            let _ = promise.catch(&self.ignore);
        }
    }
}

/// Serves `req` through the bridge when it asks for an event stream (`live=sse` with one
/// offset), reading through the object `link` gives; `None` when it does not (the object
/// answers it, errors included). `until_ms`: when the token that opened it expires.
pub(super) async fn open(
    req: &Request,
    url: &worker::Url,
    link: impl FnOnce() -> Result<ObjectLink>,
    config: Config,
    cors: Cors,
    until_ms: Option<u64>,
) -> Result<Option<Response>> {
    if req.method() != Method::Get {
        return Ok(None);
    }
    let query = ReadQuery::parse(url.query().unwrap_or_default());
    let (offsets, live) = (query.offsets, query.live);
    let cursor = query.cursor.as_deref().and_then(parse_cursor);
    let ([offset], Some("sse")) = (offsets.as_slice(), live.as_deref()) else {
        return Ok(None);
    };
    let from = match parse_offset(offset) {
        Ok(ReadFrom::At(offset)) => Some(offset.0),
        Ok(ReadFrom::Start) => Some(SeqNum::ROOT),
        // The reader starts where the page ends.
        Ok(ReadFrom::Now) => None,
        Err(_) => return Ok(None),
    };
    let link = link()?;
    // The first page: the object's answer to a plain read says whether there is a stream to
    // read and from where (an error is the reader's answer as it is).
    let mut first = link.page(offset).await?;
    if first.status_code() != 200 {
        return Ok(Some(first));
    }
    let content_type = first
        .headers()
        .get("content-type")?
        .unwrap_or_else(|| "application/octet-stream".into());
    let page = match PageOf::read(&mut first, from).await? {
        Some(page) => page,
        None => {
            return Ok(Some(plain(
                502,
                "the stream's object sent a malformed page",
            )?))
        }
    };
    let started = now_ms();
    let (body, readable) = Body::new()?;
    let (to_arrivals, arrivals) = mpsc::unbounded();
    let reader = BridgeReader {
        link,
        content_type: content_type.clone(),
        live: Live {
            at: Cell::new(Position {
                from: page.from,
                cursor,
            }),
            last_sent_ms: Cell::new(started),
            body,
            to_arrivals,
        },
        arrivals,
        first: true,
        config,
        deadline_ms: started
            .saturating_add(config.sse_recycle_ms)
            .min(until_ms.unwrap_or(u64::MAX)),
        socket: None,
        pending: Some(page),
    };
    wasm_bindgen_futures::spawn_local(reader.run());
    let headers = event_stream_headers(&sse_headers(&content_type), cors)?;
    Ok(Some(
        Response::from_body(ResponseBody::Stream(readable))?.with_headers(headers),
    ))
}

/// The way to the object whose log a reader follows.
pub(super) struct ObjectLink {
    namespace: worker::ObjectNamespace,
    /// Its binding's name.
    binding: String,
    /// The object's name in it.
    name: String,
    /// The log's path at the object (its reads are `GET`s of it).
    path: String,
    /// What the object needs in a bridge request besides the position.
    bridge_query: Vec<(&'static str, String)>,
}

impl ObjectLink {
    /// The log at `path` of the object `name` of `namespace` (bound as `binding`);
    /// `bridge_query` goes with each bridge request.
    pub(super) fn new(
        namespace: worker::ObjectNamespace,
        binding: &str,
        name: String,
        path: String,
        bridge_query: Vec<(&'static str, String)>,
    ) -> ObjectLink {
        ObjectLink {
            namespace,
            binding: binding.to_owned(),
            name,
            path,
            bridge_query,
        }
    }

    /// A catch-up read from `offset` (as the protocol writes it).
    async fn page(&self, offset: &str) -> Result<Response> {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("offset", offset)
            .finish();
        let request = Request::new(
            &format!("https://streams{}?{query}", self.path),
            Method::Get,
        )?;
        super::object_call::send_in(&self.namespace, &self.binding, &self.name, request).await
    }

    /// A bridge socket at `at`: `Ok(None)` when the object says the reader is not at the tail
    /// (it reads on), `Err` when there is no stream to read any more.
    async fn connect(&self, live: &Live) -> Result<std::result::Result<Option<Socket>, u16>> {
        let at = live.at.get();
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &self.bridge_query {
            query.append_pair(key, value);
        }
        query.append_pair("offset", &at.from.get().to_string());
        if let Some(cursor) = at.cursor {
            query.append_pair("cursor", &cursor.to_string());
        }
        let headers = Headers::new();
        headers.set("upgrade", "websocket")?;
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        let request = Request::new_with_init(
            &format!("https://streams{BRIDGE_PATH}?{}", query.finish()),
            &init,
        )?;
        let response =
            super::object_call::send_in(&self.namespace, &self.binding, &self.name, request)
                .await?;
        match response.status_code() {
            101 => match response.websocket() {
                Some(ws) => Socket::open(ws, live).map(|socket| Ok(Some(socket))),
                None => Ok(Err(502)),
            },
            409 => Ok(Ok(None)),
            status => Ok(Err(status)),
        }
    }
}

/// A catch-up page, read.
struct PageOf {
    from: SeqNum,
    next: SeqNum,
    up_to_date: bool,
    closed: bool,
    body: Vec<u8>,
}

impl PageOf {
    /// The page `response` answers for a read from `from` (`None`: from the tail); `None` if it
    /// is not one.
    async fn read(response: &mut Response, from: Option<SeqNum>) -> Result<Option<PageOf>> {
        let headers = response.headers();
        let flag =
            |name: &str| -> Result<bool> { Ok(headers.get(name)?.as_deref() == Some("true")) };
        let up_to_date = flag("stream-up-to-date")?;
        let closed = flag("stream-closed")?;
        let next = headers
            .get("stream-next-offset")?
            .and_then(|text| match parse_offset(&text) {
                Ok(ReadFrom::At(offset)) => Some(offset.0),
                _ => None,
            });
        let body = response.bytes().await?;
        Ok(next.map(|next| PageOf {
            from: from.unwrap_or(next),
            next,
            up_to_date,
            closed,
            body,
        }))
    }

    fn page(&self) -> Page<'_> {
        Page {
            from: self.from,
            next: self.next,
            up_to_date: self.up_to_date,
            closed: self.closed,
            body: &self.body,
        }
    }
}

/// What the reader's driver waits for besides its timer (frames go straight to the body).
enum Arrival {
    /// The socket closed, with this code.
    Closed(u16),
    /// The client reads too slowly for live events: back to catching up.
    Behind,
}

/// A reader's event stream and where it stands in the log.
struct Live {
    at: Cell<Position>,
    last_sent_ms: Cell<u64>,
    body: Body,
    to_arrivals: mpsc::UnboundedSender<Arrival>,
}

// A bridge socket's frames are written to the body by this handler, in JS: each frame's events
// go to the client without a call into Rust. It notes the frame's offset and when it wrote, which
// the driver reads when it needs them ([`Socket::sync`]); `onEnd` gets the close code, or -1 when
// the client reads too slowly for live events.
#[wasm_bindgen(inline_js = r#"
const decoder = new TextDecoder();
const ignore = () => {};
export function follow_frames(ws, writer, behindBytes, onEnd) {
  const noted = { next: undefined, sentMs: 0 };
  ws.binaryType = 'arraybuffer';
  ws.onmessage = (event) => {
    // The frame: its offset in digits, a line feed, the events, in bytes.
    const frame = new Uint8Array(event.data);
    const split = frame.indexOf(10);
    if (split < 1) {
      onEnd(1002);
      return;
    }
    noted.next = decoder.decode(frame.subarray(0, split));
    noted.sentMs = Date.now();
    writer.write(frame.subarray(split + 1)).catch(ignore);
    const room = writer.desiredSize;
    if (room !== null && room < -behindBytes) onEnd(-1);
  };
  ws.onclose = (event) => onEnd(event.code ?? 1006);
  return noted;
}
"#)]
extern "C" {
    #[wasm_bindgen(catch)]
    fn follow_frames(
        ws: &JsValue,
        writer: &Writer,
        behind_bytes: f64,
        on_end: &js_sys::Function,
    ) -> std::result::Result<JsValue, JsValue>;
}

/// The Worker's end of a bridge socket. Dropping it closes it, which tells the object: when the
/// response is recycled, or the client went away (which the runtime notices at the next write,
/// a keep-alive at the latest).
struct Socket {
    ws: WebSocket,
    /// What the frame handler noted: the last frame's offset and when it was written.
    noted: JsValue,
    _on_end: Closure<dyn FnMut(i32)>,
}

impl Socket {
    fn open(ws: WebSocket, live: &Live) -> Result<Socket> {
        ws.accept()?;
        let tx = live.to_arrivals.clone();
        let on_end = Closure::<dyn FnMut(i32)>::new(move |code: i32| {
            let arrival = match u16::try_from(code) {
                Ok(code) => Arrival::Closed(code),
                Err(_) => Arrival::Behind,
            };
            let _ = tx.unbounded_send(arrival);
        });
        let target: &JsValue = ws.as_ref().as_ref();
        let noted = follow_frames(
            target,
            &live.body.writer,
            BEHIND_BYTES,
            on_end.as_ref().unchecked_ref(),
        )?;
        Ok(Socket {
            ws,
            noted,
            _on_end: on_end,
        })
    }

    /// Brings `live` up to what the frame handler wrote; `false` if a frame's offset was not
    /// one (the socket is then of no use).
    fn sync(&self, live: &Live) -> bool {
        let get = |name: &str| js_sys::Reflect::get(&self.noted, &name.into()).ok();
        if let Some(sent) = get("sentMs").and_then(|ms| ms.as_f64()) {
            let sent = sent as u64;
            if sent > live.last_sent_ms.get() {
                live.last_sent_ms.set(sent);
            }
        }
        let Some(head) = get("next").and_then(|next| next.as_string()) else {
            return true;
        };
        match frame_head(&head) {
            Some(next) => {
                let at = live.at.get();
                live.at.set(Position { from: next, ..at });
                true
            }
            None => {
                worker::console_error!("event stream bridge: a malformed frame");
                false
            }
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let target: &JsValue = self.ws.as_ref().as_ref();
        let _ = js_sys::Reflect::set(target, &"onmessage".into(), &JsValue::NULL);
        let _ = js_sys::Reflect::set(target, &"onclose".into(), &JsValue::NULL);
        let _ = self.ws.close(Some(1000), Some("reader gone"));
    }
}

/// One client's event stream: catches up, then follows its socket, until it ends.
struct BridgeReader {
    link: ObjectLink,
    content_type: String,
    live: Live,
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    /// The next round owes a control event even without data (a new event stream).
    first: bool,
    config: Config,
    /// Recycling or the token's expiry, whichever comes first.
    deadline_ms: u64,
    socket: Option<Socket>,
    /// A page read but not yet turned into events.
    pending: Option<PageOf>,
}

impl BridgeReader {
    /// Drives the event stream to its end (clients reconnect from their offset), then closes it.
    async fn run(mut self) {
        let mut closed = JsFuture::from(self.live.body.writer.closed());
        loop {
            if now_ms() >= self.deadline_ms {
                break;
            }
            let step = match self.socket {
                None => self.catch_up().await,
                Some(_) => self.follow(&mut closed).await,
            };
            match step {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    worker::console_error!("event stream bridge: {e}");
                    break;
                }
            }
        }
        self.socket = None;
        self.live.body.close();
    }

    /// One catch-up page, at the client's pace; at the tail, the socket that follows it.
    /// `false` when the event stream is over.
    async fn catch_up(&mut self) -> Result<bool> {
        let at = self.live.at.get();
        let page = match self.pending.take() {
            Some(page) => page,
            None => {
                // Nothing is read before the client took what it was sent: a reader taken off
                // its socket for being behind would otherwise find itself at the tail at once
                // (the pipe holds what it missed) and go back to live events it cannot take.
                self.live.body.room().await?;
                let offset = crate::durable_streams::meta::offset_text(at.from);
                let mut response = self.link.page(&offset).await?;
                if response.status_code() != 200 {
                    // Deleted meanwhile: the event stream ends.
                    return Ok(false);
                }
                match PageOf::read(&mut response, Some(at.from)).await? {
                    Some(page) => page,
                    None => return Ok(false),
                }
            }
        };
        let first = std::mem::replace(&mut self.first, false);
        if let Some(events) = page
            .page()
            .events(&self.content_type, now_ms(), at.cursor, first)
        {
            self.live.body.send_paced(&events).await?;
            self.live.last_sent_ms.set(now_ms());
        }
        self.live.at.set(Position {
            from: page.next,
            ..at
        });
        if page.page().done() {
            return Ok(false);
        }
        if page.up_to_date {
            match self.link.connect(&self.live).await? {
                Ok(socket) => self.socket = socket,
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Brings the reader's position up to the frames its socket wrote; `false` if it cannot.
    fn sync(&self) -> bool {
        self.socket
            .as_ref()
            .is_none_or(|socket| socket.sync(&self.live))
    }

    /// Follows the socket until something needs the driver: the socket closed, the client fell
    /// behind or went away, a keep-alive is due. `false` when the event stream is over.
    async fn follow(&mut self, closed: &mut JsFuture) -> Result<bool> {
        // `last_sent_ms` may be behind the frames written since the last sync: the timer then
        // comes early and finds no keep-alive due.
        let quiet_until = self
            .live
            .last_sent_ms
            .get()
            .saturating_add(self.config.long_poll_ms);
        let wait = quiet_until
            .min(self.deadline_ms)
            .saturating_sub(now_ms())
            .max(1);
        let timer = Delay::from(Duration::from_millis(wait));
        let waited = match select(select(self.arrivals.next(), timer), closed).await {
            Either::Left((Either::Left((arrival, _)), _)) => Some(arrival),
            Either::Left((Either::Right(_), _)) => None,
            // The client went away.
            Either::Right(_) => return Ok(false),
        };
        if !self.sync() {
            self.socket = None;
            return Ok(false);
        }
        match waited {
            Some(Some(Arrival::Closed(code))) => {
                self.socket = None;
                Ok(code == CLOSE_RESUME)
            }
            Some(Some(Arrival::Behind)) => {
                self.socket = None;
                Ok(true)
            }
            Some(None) => Ok(false),
            // The timer: a keep-alive if nothing was sent meanwhile.
            None => {
                let at = self.live.at.get();
                if now_ms()
                    >= self
                        .live
                        .last_sent_ms
                        .get()
                        .saturating_add(self.config.long_poll_ms)
                {
                    let events = keep_alive(&self.content_type, now_ms(), at);
                    self.live.body.send(&JsString::from(events.as_str()));
                    self.live.last_sent_ms.set(now_ms());
                }
                Ok(true)
            }
        }
    }
}
