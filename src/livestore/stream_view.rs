//! Every LiveStore store is also a read-only Durable Stream: `/v1/livestore/<storeId>` serves the
//! store's event log with the Durable Streams read protocol in JSON mode. Each message is one
//! event, `{seqNum, parentSeqNum, name, args, clientId, sessionId, createdAt}`, and the offset
//! after the event with seqNum `n` is the stream core's offset for `n`, so a reader resumes exactly
//! where it stopped. Live readers hang on the log's commit notification: they see every accepted
//! push, from any transport, as soon as it is acknowledged.

use super::event::StoredEvent;
use super::query::decode_payload;
use super::store_id::StoreId;
use super::sync::{EventLogStore, SyncBackend};
use crate::durable_streams::http::Response;
use crate::durable_streams::read::{Readable, View};
use crate::stream::readers::Wake;
use crate::stream::{Budget, Message, SeqNum, StorageError};
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::rc::Rc;

/// Where stores are served as streams.
pub const VIEW_PREFIX: &str = "/v1/livestore/";

/// The content type of a store's stream.
pub const CONTENT_TYPE: &str = "application/json";

/// A read of a store's stream: the store and the client's sync payload (the `payload` query
/// parameter, encoded as sync's is), for the same gate as sync.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewRequest {
    pub store_id: StoreId,
    pub payload: Option<Value>,
}

/// The store a path names, if it is a view path: `Some(Err)` for a malformed one (400).
pub fn parse_view_request(path: &str, query: &str) -> Option<Result<ViewRequest, String>> {
    let encoded = path.strip_prefix(VIEW_PREFIX)?;
    Some(parse(encoded, query))
}

fn parse(encoded: &str, query: &str) -> Result<ViewRequest, String> {
    let store_id = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| "the store id is not UTF-8 once percent-decoded".to_owned())?;
    let store_id = StoreId::parse(&store_id).map_err(|e| format!("invalid storeId: {e}"))?;
    let payload = form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "payload")
        .map(|(_, value)| decode_payload(&value))
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(ViewRequest { store_id, payload })
}

/// The answer to a write: LiveStore clients write through `/sync`.
pub fn write_refused() -> Response {
    Response::error(
        405,
        "a LiveStore store's stream is read-only: LiveStore clients write through /sync",
    )
    .header("allow", "GET, HEAD, OPTIONS")
}

/// An event as a message of the store's stream.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventMessage<'a> {
    seq_num: SeqNum,
    parent_seq_num: SeqNum,
    name: &'a str,
    args: &'a RawValue,
    client_id: &'a str,
    session_id: &'a str,
    created_at: &'a str,
}

/// The message of `event`: its JSON (absent `args` are `null`).
pub fn event_message(stored: &StoredEvent) -> Message {
    let event = &stored.event;
    let null = RawValue::NULL;
    let message = EventMessage {
        seq_num: event.seq_num,
        parent_seq_num: event.parent_seq_num,
        name: &event.name,
        args: event.args.as_deref().unwrap_or(null),
        client_id: &event.client_id,
        session_id: &event.session_id,
        created_at: &stored.created_at,
    };
    // Plain strings, integers and already-valid raw JSON cannot fail to serialize.
    Message::new(
        event.seq_num,
        serde_json::to_vec(&message).unwrap_or_default(),
    )
}

/// A store's log, read as a stream.
pub struct StoreView<S: EventLogStore> {
    backend: Rc<SyncBackend<S>>,
}

impl<S: EventLogStore> StoreView<S> {
    /// The view of `backend`'s log.
    pub fn new(backend: Rc<SyncBackend<S>>) -> Self {
        StoreView { backend }
    }

    /// The stream's state for `HEAD`.
    pub async fn head(&self) -> Result<Response, StorageError> {
        let tail = self.backend.log().tail().await?;
        Ok(Response::new(200)
            .header("content-type", CONTENT_TYPE)
            .header(
                "stream-next-offset",
                crate::durable_streams::meta::offset_text(tail),
            )
            .header("cache-control", "no-store"))
    }
}

impl<S: EventLogStore> Readable for StoreView<S> {
    async fn view(&self, _access: bool) -> Result<Result<View, Response>, StorageError> {
        Ok(Ok(View {
            content_type: CONTENT_TYPE.to_owned(),
            tail: self.backend.log().tail().await?,
            closed: false,
            // A reset store is another log: its old offsets mean nothing.
            incarnation: self.backend.backend_id().to_owned(),
        }))
    }

    async fn messages(
        &self,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Message>, StorageError> {
        let events = self.backend.log().read(after, upto, budget).await?;
        Ok(events.iter().map(event_message).collect())
    }

    fn changed(&self) -> Wake {
        self.backend.log().wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable_streams::http::Request;
    use crate::durable_streams::platform::{Clock, Config};
    use crate::durable_streams::read::{read, sse_next, ReadOutcome};
    use crate::livestore::sync::tests::{backend_over, event, push_req, Store};
    use futures::executor::block_on;
    use serde_json::json;
    use std::cell::Cell;
    use std::collections::BTreeMap;

    struct FakeClock(Cell<u64>);

    impl Clock for FakeClock {
        fn now_ms(&self) -> u64 {
            self.0.get()
        }
        async fn sleep(&self, ms: u64) {
            self.0.set(self.0.get() + ms);
        }
    }

    fn get(view: &StoreView<Store>, query: &str) -> ReadOutcome {
        let headers = BTreeMap::new();
        let request = Request {
            method: "GET",
            url: "http://h/v1/livestore/s1",
            query,
            headers: &headers,
            body: &[],
        };
        let clock = FakeClock(Cell::new(1_800_000_000_000));
        block_on(read(view, &clock, &Config::default(), &request)).unwrap()
    }

    fn reply(outcome: ReadOutcome) -> Response {
        match outcome {
            ReadOutcome::Reply(r) => r,
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn view_paths_name_a_store_and_carry_the_sync_payload() {
        let parsed = parse_view_request(
            "/v1/livestore/my%20store",
            "offset=-1&payload=%257B%2522authToken%2522%253A%2522t%2522%257D",
        )
        .unwrap()
        .unwrap();
        assert_eq!(parsed.store_id.as_str(), "my store");
        assert_eq!(parsed.payload, Some(json!({"authToken": "t"})));
        assert!(parse_view_request("/v1/stream/x", "").is_none());
        assert!(parse_view_request("/v1/livestore/", "").unwrap().is_err());
        assert!(parse_view_request("/v1/livestore/%FF", "")
            .unwrap()
            .is_err());
        assert!(parse_view_request("/v1/livestore/a", "payload=%257B")
            .unwrap()
            .is_err());
    }

    #[test]
    fn the_events_read_as_json_messages_at_their_offsets() {
        let backend = Rc::new(backend_over(Store::default()));
        let batch = vec![event(1, 1), event(2, 1), event(3, 1)];
        block_on(backend.push(
            push_req(batch, None),
            "2026-12-04T00:00:00.000Z".into(),
            |_| {},
        ))
        .unwrap();
        let view = StoreView::new(backend);
        let all = reply(get(&view, "offset=-1"));
        assert_eq!(all.status, 200);
        assert_eq!(all.get("content-type"), Some(CONTENT_TYPE));
        assert_eq!(
            all.get("stream-next-offset"),
            Some("0000000000000000_0000000000000003")
        );
        let body: serde_json::Value = serde_json::from_slice(&all.body).unwrap();
        assert_eq!(
            body[0],
            json!({"seqNum":1,"parentSeqNum":0,"name":"todoCreated-v1","args":{"text":"x"},
                   "clientId":"c","sessionId":"s","createdAt":"2026-12-04T00:00:00.000Z"})
        );
        let after_2 = reply(get(&view, "offset=0000000000000000_0000000000000002"));
        let body: serde_json::Value = serde_json::from_slice(&after_2.body).unwrap();
        assert_eq!(body.as_array().unwrap().len(), 1);
        assert_eq!(body[0]["seqNum"], 3);
        let etag = all.get("etag").unwrap().to_owned();
        assert!(etag.contains("BACKEND"), "{etag}");
    }

    #[test]
    fn live_readers_see_the_next_push() {
        let backend = Rc::new(backend_over(Store::default()));
        let view = StoreView::new(backend.clone());
        let ReadOutcome::Sse(mut sse) = get(&view, "offset=-1&live=sse") else {
            panic!("an event stream")
        };
        let clock = FakeClock(Cell::new(1_800_000_000_000));
        let config = Config::default();
        let first = block_on(sse_next(&view, &clock, &config, &mut sse))
            .unwrap()
            .unwrap();
        assert!(first.starts_with("event: control"), "{first}");
        block_on(backend.push(push_req(vec![event(1, 1)], None), "t".into(), |_| {})).unwrap();
        let next = block_on(sse_next(&view, &clock, &config, &mut sse))
            .unwrap()
            .unwrap();
        assert!(
            next.starts_with("event: data\ndata:[{\"seqNum\":1"),
            "{next}"
        );
        // at the tail, a long-poll times out with the clock
        let lp = reply(get(
            &view,
            "offset=0000000000000000_0000000000000001&live=long-poll",
        ));
        assert_eq!(lp.status, 204);
    }

    #[test]
    fn writes_are_refused() {
        let refused = write_refused();
        assert_eq!(refused.status, 405);
        assert!(String::from_utf8(refused.body).unwrap().contains("/sync"));
    }
}
