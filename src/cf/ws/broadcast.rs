//! Broadcast: the live pages of an accepted push go to every live pull of every socket, each page
//! encoded once and handed to JS once, whatever the number of sockets and pull ids.

use super::{chunk_prefix, frame_sink, Frame, Overflow, Pending, Sockets, CLOSE_TOO_SLOW};
use crate::livestore::chunk::PullPage;
use crate::livestore::wire::RequestId;
use js_sys::JsString;
use std::collections::HashMap;
use std::rc::Rc;
use worker::State;

impl Sockets {
    /// Sends the live pages of an accepted push to every live pull of every socket. Each page is
    /// encoded once and handed to JS once, whatever the number of sockets and pull ids.
    pub fn broadcast(&self, state: &State, pages: &[PullPage]) {
        let mut registry = self.registry.borrow_mut();
        self.load(state, &mut registry);
        if registry
            .by_conn
            .values()
            .all(|socket| socket.live.is_empty())
        {
            return;
        }
        let shared: Vec<(u64, usize, Rc<JsString>)> = pages
            .iter()
            .map(|page| {
                registry.next_page += 1;
                let tail = format!("{}]}}", page.json);
                (
                    registry.next_page,
                    tail.len(),
                    Rc::new(JsString::from(tail.as_str())),
                )
            })
            .collect();
        // Frames of one request id share their prefix across sockets too, and small frames are
        // joined once per id (clients number their requests alike, so most sockets share one).
        let mut prefixes: HashMap<RequestId, SharedPrefix> = HashMap::new();
        let mut gone = Vec::new();
        for (conn, socket) in registry.by_conn.iter_mut() {
            let mut overflow = false;
            let mut failed = false;
            for id in &socket.live {
                let shared_prefix = prefixes
                    .entry(id.clone())
                    .or_insert_with(|| SharedPrefix::new(id, shared.len()));
                for (index, (page_no, size, page)) in shared.iter().enumerate() {
                    let frame_size = *size + shared_prefix.len;
                    if socket.outbox.send_now(&shared_prefix.id_json, frame_size) {
                        // The client keeps up: no queue, no page bookkeeping.
                        let sent = match shared_prefix.joined(index, page) {
                            Some(frame) => frame_sink(&socket.ws).send_js(frame).is_ok(),
                            None => socket.send_chunk(&shared_prefix.prefix, page),
                        };
                        failed |= !sent;
                        continue;
                    }
                    let pending = Pending {
                        frame: Frame::Chunk {
                            prefix: shared_prefix.prefix.clone(),
                            page: page.clone(),
                        },
                        sent: None,
                    };
                    if let Err(Overflow) = socket.outbox.enqueue(
                        &shared_prefix.id_json,
                        frame_size,
                        Some(*page_no),
                        pending,
                    ) {
                        overflow = true;
                    }
                }
            }
            if overflow {
                let _ = socket.ws.close(
                    Some(CLOSE_TOO_SLOW),
                    Some("the client fell too far behind; reconnect and pull from your cursor"),
                );
                gone.push(conn.clone());
            } else if failed || socket.flush().is_err() {
                gone.push(conn.clone());
            }
        }
        for conn in gone {
            registry.by_conn.remove(&conn);
        }
    }
}

/// Pages up to this size are joined with a request's prefix once per broadcast and the joined
/// frame sent to every socket with that request id; larger ones are joined per send, so that
/// many request ids never hold a flat copy of a large page each.
const JOIN_ONCE_BYTES: usize = 16 << 10;

/// What a broadcast shares among the sockets with one live pull id.
struct SharedPrefix {
    prefix: JsString,
    len: usize,
    id_json: String,
    /// Per page of the broadcast: the joined frame, once a socket needed it (small pages only).
    joined: Vec<Option<JsString>>,
}

impl SharedPrefix {
    fn new(id: &RequestId, pages: usize) -> Self {
        let prefix = chunk_prefix(id);
        Self {
            prefix: JsString::from(prefix.as_str()),
            len: prefix.len(),
            id_json: id.to_json(),
            joined: vec![None; pages],
        }
    }

    /// The frame for page `index`, joined once, when the page is small enough to share so.
    fn joined(&mut self, index: usize, page: &JsString) -> Option<&JsString> {
        if page.length() as usize > JOIN_ONCE_BYTES {
            return None;
        }
        let slot = self.joined.get_mut(index)?;
        Some(slot.get_or_insert_with(|| self.prefix.concat(page)))
    }
}
