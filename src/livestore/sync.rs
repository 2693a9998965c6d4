//! The push and pull rules of a store, as a layer over the stream core's [`Log`]. Transport-free:
//! the edges feed decoded requests in and carry the pages that come out.
//!
//! - A push is an append whose precondition is the expected tail (the batch's first
//!   `parentSeqNum`), with the entries LiveStore's client numbered itself.
//! - A pull reads from its cursor to the head one storage page at a time (a [`Budget`] of rows and
//!   bytes), splits what it read into `PullResponse` pages and hands them to a [`PageSink`], which
//!   may make it wait (a socket's window of unacknowledged chunks): memory stays about one page
//!   whatever the size of the log.

use super::chunk::{PullPage, ResponseBuilder};
use super::event::StoredEvent;
use super::store_id::StoreId;
use super::wire::{PullRequest, PushRequest, SyncError};
use crate::stream::condition::{Precondition, Refusal};
use crate::stream::{Budget, Commit, Log, LogStore, SeqNum, StorageError};

/// A store's log: LiveStore events with no header of their own (the backend id lives beside).
pub trait EventLogStore: LogStore<Entry = StoredEvent, Header = ()> {}
impl<S: LogStore<Entry = StoredEvent, Header = ()>> EventLogStore for S {}

/// Why a pull stopped early.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
    /// It failed, with this error for the client.
    Failed(SyncError),
    /// The client is gone: nothing more to send.
    Gone,
}

impl From<SyncError> for Stop {
    fn from(error: SyncError) -> Self {
        Stop::Failed(error)
    }
}

impl From<StorageError> for Stop {
    fn from(error: StorageError) -> Self {
        Stop::Failed(storage_error(error))
    }
}

/// The client went away (its socket closed, its stream was cancelled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gone;

/// Where the pages of a pull go, in order. May wait (flow control).
#[allow(async_fn_in_trait)]
pub trait PageSink {
    async fn page(&mut self, page: PullPage) -> Result<(), Gone>;
}

/// How often a live pull catches up again before it sends the rest with appends held off: each
/// round is only what was pushed during the previous one.
const CATCH_UP_ROUNDS: usize = 3;

/// One store's sync backend.
pub struct SyncBackend<S: EventLogStore> {
    store_id: StoreId,
    backend_id: String,
    log: Log<S>,
    /// The backend id of the backend that replaced this one (an admin reset): requests that
    /// still reach this one are refused as of another backend.
    successor: std::cell::RefCell<Option<String>>,
}

impl<S: EventLogStore> SyncBackend<S> {
    /// A backend for `store_id` whose log is in `store`.
    pub fn new(store_id: StoreId, backend_id: String, store: S) -> Self {
        SyncBackend {
            store_id,
            backend_id,
            log: Log::new(store),
            successor: std::cell::RefCell::new(None),
        }
    }

    /// The id clients use to detect that the backend was reset.
    pub fn backend_id(&self) -> &str {
        &self.backend_id
    }

    /// Retires this backend in favour of one with backend id `successor` (a reset). Call it
    /// while holding the log's writer, so that no push is between its check and its commit;
    /// pushes and pulls that reach this backend afterwards fail with `BackendIdMismatchError`.
    pub fn retire(&self, successor: String) {
        *self.successor.borrow_mut() = Some(successor);
    }

    fn check_current(&self) -> Result<(), SyncError> {
        match self.successor.borrow().as_ref() {
            Some(successor) => Err(SyncError::BackendIdMismatch {
                expected: successor.clone(),
                received: self.backend_id.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The store this backend serves.
    pub fn store_id(&self) -> &StoreId {
        &self.store_id
    }

    /// The store's log.
    pub fn log(&self) -> &Log<S> {
        &self.log
    }

    fn check_store(&self, requested: &str) -> Result<(), SyncError> {
        if requested == self.store_id.as_str() {
            Ok(())
        } else {
            Err(SyncError::unknown(
                "InvalidStoreError",
                format!(
                    "request is for store `{requested}` but this connection serves store `{}`",
                    self.store_id
                ),
            ))
        }
    }

    /// Where a pull starts: after its cursor, which must be of this backend.
    pub fn start(&self, request: &PullRequest) -> Result<SeqNum, SyncError> {
        self.check_store(&request.store_id)?;
        self.check_current()?;
        match request.cursor.clone().into_option() {
            None => Ok(SeqNum::ROOT),
            Some(cursor) if cursor.backend_id != self.backend_id => {
                Err(SyncError::BackendIdMismatch {
                    expected: self.backend_id.clone(),
                    received: cursor.backend_id,
                })
            }
            Some(cursor) => Ok(cursor.event_sequence_number),
        }
    }

    /// The catch-up of a pull from `after` to the head: `PullResponse` pages counting the
    /// remaining events down, the last one `NoMore` (an empty store gives one empty page).
    /// Returns the position reached, from which a live pull continues.
    pub async fn catch_up(&self, after: SeqNum, sink: &mut impl PageSink) -> Result<SeqNum, Stop> {
        let head = self.log.tail().await?;
        let total = self.log.count(after, head).await?;
        let builder = ResponseBuilder::catch_up(&self.backend_id, total);
        self.send_range(after, head, builder, sink).await?;
        Ok(head)
    }

    /// Sends the events in `(after, upto]` through `builder` and `sink`, one storage page at a
    /// time, then the builder's last page.
    async fn send_range(
        &self,
        after: SeqNum,
        upto: SeqNum,
        mut builder: ResponseBuilder,
        sink: &mut impl PageSink,
    ) -> Result<(), Stop> {
        let mut position = after;
        let mut pages = Vec::new();
        while position < upto {
            let events = self.log.read(position, upto, Budget::PAGE).await?;
            let Some(last) = events.last() else { break };
            position = last.event.seq_num;
            for event in &events {
                builder.push(event.to_batch_item_json(), &mut |page| pages.push(page));
            }
            drop(events);
            for page in pages.drain(..) {
                sink.page(page).await.map_err(|Gone| Stop::Gone)?;
            }
        }
        builder.finish(&mut |page| pages.push(page));
        for page in pages {
            sink.page(page).await.map_err(|Gone| Stop::Gone)?;
        }
        Ok(())
    }

    /// The position of the last event stored.
    pub async fn head(&self) -> Result<SeqNum, SyncError> {
        self.log.tail().await.map_err(storage_error)
    }

    /// The live pages (`NoMore`, as broadcasts have them) of the events after `after`, up to the
    /// head, from one storage read at most: what a subscriber that got everything up to `after`
    /// is owed next. Empty when it is at the head.
    pub async fn live_pages_after(&self, after: SeqNum) -> Result<Vec<PullPage>, SyncError> {
        let head = self.head().await?;
        if head <= after {
            return Ok(Vec::new());
        }
        let events = self
            .log
            .read(after, head, Budget::PAGE)
            .await
            .map_err(storage_error)?;
        let mut builder = ResponseBuilder::live(&self.backend_id);
        let mut pages = Vec::new();
        for event in &events {
            builder.push(event.to_batch_item_json(), &mut |page| pages.push(page));
        }
        builder.finish(&mut |page| pages.push(page));
        Ok(pages)
    }

    /// Turns a catch-up that reached `reached` into a live pull: sends what was appended since
    /// (`NoMore` pages) and calls `subscribe` with appends held off and the position it is at
    /// (the head), so the subscriber misses nothing and sees nothing twice or out of order. The sink is waited on without holding
    /// appends off, except for what a few rounds of catching up could not absorb.
    pub async fn go_live<K: PageSink>(
        &self,
        mut reached: SeqNum,
        sink: &mut K,
        subscribe: impl FnOnce(&mut K, SeqNum) -> Result<(), SyncError>,
    ) -> Result<(), Stop> {
        let mut round = 0;
        loop {
            let writer = self.log.writer().await?;
            let head = writer.tail();
            if head == reached || round == CATCH_UP_ROUNDS {
                let live = ResponseBuilder::live(&self.backend_id);
                self.send_range(reached, head, live, sink).await?;
                subscribe(sink, head)?;
                return Ok(());
            }
            drop(writer);
            let live = ResponseBuilder::live(&self.backend_id);
            self.send_range(reached, head, live, sink).await?;
            reached = head;
            round += 1;
        }
    }

    /// Applies a push. On success the batch is durable and `publish` has been called with the
    /// live `PullResponse` pages for it (in order, before any later push is applied), and the
    /// caller acknowledges. On error nothing was stored.
    pub async fn push(
        &self,
        request: PushRequest,
        created_at: String,
        publish: impl FnOnce(Vec<PullPage>),
    ) -> Result<(), SyncError> {
        self.check_store(&request.store_id)?;
        if request.batch.is_empty() {
            return Ok(());
        }
        if let Some(received) = request.backend_id.into_option() {
            if received != self.backend_id {
                return Err(SyncError::BackendIdMismatch {
                    expected: self.backend_id.clone(),
                    received,
                });
            }
        }
        let events: Vec<StoredEvent> = request
            .batch
            .into_iter()
            .map(|event| StoredEvent {
                event,
                created_at: created_at.clone(),
            })
            .collect();
        // Encoded once: the sizes are checked on the same bytes that are published.
        let items: Vec<String> = events.iter().map(StoredEvent::to_batch_item_json).collect();
        let mut builder = ResponseBuilder::live(&self.backend_id);
        let max = builder.max_item_bytes();
        if let Some((index, item)) = items.iter().enumerate().find(|(_, i)| i.len() > max) {
            return Err(SyncError::unknown(
                "InvalidPushError",
                format!(
                    "event {index} of the batch is {} bytes encoded; the limit is {max}",
                    item.len()
                ),
            ));
        }
        let first_parent = events[0].event.parent_seq_num;
        let mut writer = self.log.writer().await.map_err(storage_error)?;
        self.check_current()?;
        match writer
            .check(&[Precondition::ExpectTail(first_parent)])
            .await
            .map_err(storage_error)?
        {
            Ok(_) => {}
            Err(Refusal::TailMoved { tail, expected }) => {
                return Err(SyncError::ServerAhead {
                    minimum_expected_num: tail,
                    provided_num: expected,
                })
            }
            Err(other) => {
                return Err(SyncError::unknown(
                    "InvalidPushError",
                    format!("refused: {other:?}"),
                ))
            }
        }
        check_chain(first_parent, &events)?;
        writer
            .commit(Commit::entries(&events))
            .await
            .map_err(storage_error)?;
        let mut pages = Vec::new();
        for item in items {
            builder.push(item, &mut |page| pages.push(page));
        }
        builder.finish(&mut |page| pages.push(page));
        // Still the only writer: every live reader sees this push before the next one.
        publish(pages);
        drop(writer);
        Ok(())
    }
}

/// Checks that `events` form a contiguous chain after `head` (`seqNum = parentSeqNum + 1`, each
/// following the last): LiveStore's client numbers its events itself.
fn check_chain(head: SeqNum, events: &[StoredEvent]) -> Result<(), SyncError> {
    let mut expected_parent = head;
    for (index, stored) in events.iter().enumerate() {
        let event = &stored.event;
        if event.parent_seq_num != expected_parent || expected_parent.next() != Some(event.seq_num)
        {
            return Err(SyncError::unknown(
                "InvalidPushError",
                format!(
                    "entry {index} of the batch (seqNum {}, parentSeqNum {}) does not follow {expected_parent}",
                    event.seq_num, event.parent_seq_num
                ),
            ));
        }
        expected_parent = event.seq_num;
    }
    Ok(())
}

/// Length of a backend id, as nanoid's default.
pub const BACKEND_ID_LEN: usize = 21;

/// A backend id from random bytes, in nanoid's alphabet (`A-Za-z0-9_-`).
pub fn backend_id_from_random(random: &[u8; BACKEND_ID_LEN]) -> String {
    const ALPHABET: &[u8; 64] = b"useandom-26T198340PX75pxJACKVERYMINDBUSHWOLF_GQZbfghjklqvwyzrict";
    random
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 63)]))
        .collect()
}

/// A storage failure as clients see it.
pub fn storage_error(e: StorageError) -> SyncError {
    SyncError::unknown("StorageError", e.0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::livestore::event::EventEncoded;
    use crate::livestore::wire::{Cursor, EffectOption};
    use crate::stream::memory::MemoryStore;
    use futures::executor::block_on;
    use serde_json::{json, Value};

    pub type Store = MemoryStore<StoredEvent, ()>;

    /// Collects pages; `gone_after` makes it report the client gone after that many.
    #[derive(Default)]
    pub struct Pages {
        pub pages: Vec<PullPage>,
        pub gone_after: Option<usize>,
    }

    impl PageSink for Pages {
        async fn page(&mut self, page: PullPage) -> Result<(), Gone> {
            if self.gone_after == Some(self.pages.len()) {
                return Err(Gone);
            }
            self.pages.push(page);
            Ok(())
        }
    }

    pub fn backend_over(store: Store) -> SyncBackend<Store> {
        SyncBackend::new(StoreId::parse("s1").unwrap(), "BACKEND".into(), store)
    }

    fn backend() -> SyncBackend<Store> {
        backend_over(Store::default())
    }

    pub fn event(seq: u64, pad: usize) -> EventEncoded {
        serde_json::from_value(json!({
            "name": "todoCreated-v1", "args": {"text": "x".repeat(pad)},
            "seqNum": seq, "parentSeqNum": seq - 1, "clientId": "c", "sessionId": "s"
        }))
        .unwrap()
    }

    pub fn push_req(batch: Vec<EventEncoded>, backend_id: Option<&str>) -> PushRequest {
        PushRequest {
            store_id: "s1".into(),
            payload: None,
            batch,
            backend_id: match backend_id {
                Some(b) => EffectOption::Some { value: b.into() },
                None => EffectOption::None,
            },
        }
    }

    pub fn pull_req(cursor: Option<(&str, u64)>) -> PullRequest {
        PullRequest {
            store_id: "s1".into(),
            payload: None,
            live: false,
            cursor: match cursor {
                Some((b, n)) => EffectOption::Some {
                    value: Cursor {
                        backend_id: b.into(),
                        event_sequence_number: SeqNum::new(n).unwrap(),
                    },
                },
                None => EffectOption::None,
            },
            rpc_context: None,
        }
    }

    fn push(b: &SyncBackend<Store>, from: u64, to: u64, pad: usize) -> Vec<String> {
        let mut out = Vec::new();
        let batch = (from..=to).map(|s| event(s, pad)).collect();
        block_on(b.push(
            push_req(batch, Some("BACKEND")),
            "2026-11-22T00:00:00.000Z".into(),
            |r| out = r.into_iter().map(|p| p.json).collect(),
        ))
        .unwrap();
        out
    }

    fn pull(b: &SyncBackend<Store>, cursor: Option<(&str, u64)>) -> Vec<Value> {
        let mut sink = Pages::default();
        block_on(async {
            let after = b.start(&pull_req(cursor)).unwrap();
            b.catch_up(after, &mut sink).await.unwrap()
        });
        sink.pages
            .iter()
            .map(|p| serde_json::from_str::<Value>(&p.json).unwrap())
            .collect()
    }

    fn seqs(responses: &[Value]) -> Vec<u64> {
        responses
            .iter()
            .flat_map(|r| r["batch"].as_array().unwrap().clone())
            .map(|i| i["eventEncoded"]["seqNum"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn backend_ids_look_like_nanoids() {
        let id = backend_id_from_random(&[0xff; BACKEND_ID_LEN]);
        assert_eq!(id.len(), BACKEND_ID_LEN);
        let id = backend_id_from_random(&std::array::from_fn(|i| (i as u8).wrapping_mul(13)));
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        assert_ne!(id, backend_id_from_random(&[0; BACKEND_ID_LEN]));
    }

    #[test]
    fn a_retired_backend_refuses_as_another_backend() {
        let b = backend();
        push(&b, 1, 2, 1);
        b.retire("NEXT".into());
        let refused = block_on(b.push(
            push_req(vec![event(3, 1)], Some("BACKEND")),
            "2026-11-22T00:00:00.000Z".into(),
            |_| panic!("nothing is published"),
        ));
        assert_eq!(
            refused,
            Err(SyncError::BackendIdMismatch {
                expected: "NEXT".into(),
                received: "BACKEND".into()
            })
        );
        assert!(matches!(
            b.start(&pull_req(None)),
            Err(SyncError::BackendIdMismatch { .. })
        ));
        assert_eq!(
            block_on(b.head()),
            Ok(SeqNum::new(2).unwrap()),
            "nothing stored"
        );
    }

    #[test]
    fn push_then_pull_round_trips() {
        let b = backend();
        assert_eq!(
            pull(&b, None),
            vec![json!({"batch":[],"pageInfo":{"_tag":"NoMore"},"backendId":"BACKEND"})]
        );
        let live = push(&b, 1, 3, 1);
        assert_eq!(live.len(), 1);
        let live: Value = serde_json::from_str(&live[0]).unwrap();
        assert_eq!(live["pageInfo"], json!({"_tag":"NoMore"}));
        assert_eq!(
            live["batch"][0]["metadata"]["value"]["createdAt"],
            "2026-11-22T00:00:00.000Z"
        );
        assert_eq!(seqs(&pull(&b, None)), vec![1, 2, 3]);
        assert_eq!(seqs(&pull(&b, Some(("BACKEND", 2)))), vec![3]);
        assert_eq!(seqs(&pull(&b, Some(("BACKEND", 3)))), Vec::<u64>::new());
    }

    #[test]
    fn large_catch_up_is_split_and_counts_down() {
        let b = backend();
        for start in (1..=620).step_by(100) {
            push(&b, start, (start + 99).min(620), 1);
        }
        let r = pull(&b, None);
        assert_eq!(seqs(&r), (1..=620).collect::<Vec<_>>());
        assert!(r
            .iter()
            .all(|r| r["batch"].as_array().unwrap().len() <= 100));
        let remaining: Vec<Value> = r.iter().map(|r| r["pageInfo"].clone()).collect();
        assert_eq!(remaining[0], json!({"_tag":"MoreKnown","remaining":520}));
        assert_eq!(remaining.last().unwrap(), &json!({"_tag":"NoMore"}));
    }

    #[test]
    fn a_catch_up_reads_storage_a_page_at_a_time_by_bytes() {
        // 40 events of 300 kB: a storage page of 2 MB holds 6 of them, a PullResponse 2.
        let b = backend();
        for start in (1..=40).step_by(10) {
            push(&b, start, start + 9, 300_000);
        }
        let store = b.log().store();
        let reads_before = store.commits();
        let r = pull(&b, None);
        assert_eq!(seqs(&r), (1..=40).collect::<Vec<_>>());
        assert_eq!(store.commits(), reads_before, "a pull writes nothing");
        let page = block_on(
            b.log()
                .read(SeqNum::ROOT, SeqNum::new(40).unwrap(), Budget::PAGE),
        )
        .unwrap();
        assert!(
            page.len() < 10,
            "one storage page holds {} of them",
            page.len()
        );
    }

    #[test]
    fn a_pull_stops_when_its_client_is_gone() {
        let b = backend();
        for start in (1..=500).step_by(100) {
            push(&b, start, start + 99, 1);
        }
        let mut sink = Pages {
            gone_after: Some(2),
            ..Pages::default()
        };
        let stopped = block_on(b.catch_up(SeqNum::ROOT, &mut sink));
        assert_eq!(stopped, Err(Stop::Gone));
        assert_eq!(sink.pages.len(), 2);
    }

    #[test]
    fn push_errors() {
        let b = backend();
        push(&b, 1, 2, 1);
        let stale = block_on(b.push(push_req(vec![event(2, 1)], None), "t".into(), |_| {
            panic!("published")
        }));
        assert_eq!(
            stale,
            Err(SyncError::ServerAhead {
                minimum_expected_num: SeqNum::new(2).unwrap(),
                provided_num: SeqNum::new(1).unwrap()
            })
        );
        let mismatch = block_on(b.push(
            push_req(vec![event(3, 1)], Some("OTHER")),
            "t".into(),
            |_| {},
        ));
        assert!(matches!(mismatch, Err(SyncError::BackendIdMismatch { .. })));
        let mut gap = vec![event(3, 1), event(5, 1)];
        gap[1].parent_seq_num = SeqNum::new(3).unwrap();
        let gap = block_on(b.push(push_req(gap, None), "t".into(), |_| {}));
        assert!(matches!(gap, Err(SyncError::Unknown { .. })));
        let repeat = block_on(b.push(
            push_req(vec![event(3, 1), event(3, 1)], None),
            "t".into(),
            |_| {},
        ));
        assert!(matches!(repeat, Err(SyncError::Unknown { .. })));
        let mut other_store = push_req(vec![event(3, 1)], None);
        other_store.store_id = "s2".into();
        assert!(matches!(
            block_on(b.push(other_store, "t".into(), |_| {})),
            Err(SyncError::Unknown { .. })
        ));
        // Args within their own cap, but too big for a pull page once encoded.
        let too_big = block_on(b.push(push_req(vec![event(3, 899_980)], None), "t".into(), |_| {}));
        assert!(matches!(too_big, Err(SyncError::Unknown { .. })));
        assert_eq!(
            seqs(&pull(&b, None)),
            vec![1, 2],
            "nothing stored by failed pushes"
        );
        assert_eq!(
            block_on(b.push(push_req(vec![], Some("OTHER")), "t".into(), |_| panic!())),
            Ok(()),
            "an empty batch is acknowledged without checks"
        );
    }

    #[test]
    fn a_storage_failure_stores_nothing_and_the_next_push_sees_the_stored_head() {
        let store = Store::default();
        let b = backend_over(store.clone());
        push(&b, 1, 2, 1);
        store.fail_next_commit("disk full");
        let failed = block_on(b.push(push_req(vec![event(3, 1)], None), "t".into(), |_| {
            panic!("published")
        }));
        assert!(matches!(failed, Err(SyncError::Unknown { .. })));
        push(&b, 3, 3, 1);
        assert_eq!(seqs(&pull(&b, None)), vec![1, 2, 3]);
    }

    #[test]
    fn pull_with_foreign_cursor_is_a_mismatch() {
        let b = backend();
        let err = b.start(&pull_req(Some(("OLD", 1)))).unwrap_err();
        assert_eq!(
            err,
            SyncError::BackendIdMismatch {
                expected: "BACKEND".into(),
                received: "OLD".into()
            }
        );
    }

    #[test]
    fn a_subscriber_is_owed_the_live_pages_after_its_position() {
        let b = backend();
        push(&b, 1, 3, 1);
        push(&b, 4, 5, 1);
        let owed = |after: u64| {
            let pages = block_on(b.live_pages_after(SeqNum::new(after).unwrap())).unwrap();
            let values: Vec<Value> = pages
                .iter()
                .map(|p| serde_json::from_str::<Value>(&p.json).unwrap())
                .collect();
            assert!(values
                .iter()
                .all(|v| v["pageInfo"] == json!({"_tag":"NoMore"})));
            let events: usize = pages.iter().map(|p| p.events).sum();
            assert_eq!(events, seqs(&values).len());
            seqs(&values)
        };
        assert_eq!(owed(0), vec![1, 2, 3, 4, 5]);
        assert_eq!(owed(3), vec![4, 5]);
        assert_eq!(owed(5), Vec::<u64>::new());
        assert_eq!(block_on(b.head()).unwrap(), SeqNum::new(5).unwrap());
    }

    #[test]
    fn going_live_sends_what_was_appended_since_the_catch_up() {
        let b = backend();
        push(&b, 1, 2, 1);
        let reached = block_on(b.catch_up(SeqNum::ROOT, &mut Pages::default())).unwrap();
        push(&b, 3, 4, 1);
        let mut sink = Pages::default();
        let mut subscribed = false;
        block_on(b.go_live(reached, &mut sink, |_, at| {
            assert_eq!(at, SeqNum::new(4).unwrap());
            subscribed = true;
            Ok(())
        }))
        .unwrap();
        assert!(subscribed);
        let values: Vec<Value> = sink
            .pages
            .iter()
            .map(|p| serde_json::from_str::<Value>(&p.json).unwrap())
            .collect();
        assert_eq!(seqs(&values), vec![3, 4]);
        assert!(values
            .iter()
            .all(|v| v["pageInfo"] == json!({"_tag":"NoMore"})));
    }
}
