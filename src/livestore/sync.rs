//! The push and pull rules of a store, on top of the event log. Transport-independent: the
//! WebSocket and HTTP edges feed decoded requests in and send the frames that come out.

use super::chunk::{PullPage, ResponseBuilder};
use super::event::StoredEvent;
use super::store_id::StoreId;
use super::wire::{PullRequest, PushRequest, SyncError};
use crate::stream::{AppendError, EventLog, HeadCheckpoint, LogStorage, SeqNum, StorageError};

/// Rows read from storage per query during a catch-up.
pub const CATCH_UP_PAGE_ROWS: usize = 256;

/// One store's sync backend.
pub struct SyncBackend<S, H> {
    store_id: StoreId,
    backend_id: String,
    log: EventLog<S, H>,
}

impl<S, H> SyncBackend<S, H>
where
    S: LogStorage<Entry = StoredEvent>,
    H: HeadCheckpoint,
{
    /// A backend for `store_id` whose log lives in `storage`.
    pub fn new(store_id: StoreId, backend_id: String, storage: S, checkpoint: H) -> Self {
        SyncBackend {
            store_id,
            backend_id,
            log: EventLog::new(storage, checkpoint),
        }
    }

    /// The id clients use to detect that the backend was reset.
    pub fn backend_id(&self) -> &str {
        &self.backend_id
    }

    /// The store this backend serves.
    pub fn store_id(&self) -> &StoreId {
        &self.store_id
    }

    /// The event log.
    pub fn log(&self) -> &EventLog<S, H> {
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

    /// Emits the catch-up of a pull as `PullResponse` pages. Returns the position the
    /// catch-up reached, from which a live pull continues.
    pub async fn pull(
        &self,
        request: &PullRequest,
        emit: &mut impl FnMut(PullPage),
    ) -> Result<SeqNum, SyncError> {
        self.check_store(&request.store_id)?;
        let after = match request.cursor.clone().into_option() {
            None => SeqNum::ROOT,
            Some(cursor) if cursor.backend_id != self.backend_id => {
                return Err(SyncError::BackendIdMismatch {
                    expected: self.backend_id.clone(),
                    received: cursor.backend_id,
                })
            }
            Some(cursor) => cursor.event_sequence_number,
        };
        let head = self.log.head().await.map_err(storage_error)?;
        let total = self.log.count(after, head).await.map_err(storage_error)?;
        let mut builder = ResponseBuilder::catch_up(&self.backend_id, total);
        self.send_range(after, head, &mut builder, emit).await?;
        builder.finish(emit);
        Ok(head)
    }

    /// Streams the events in `(after, upto]` into `builder`, one storage page at a time.
    async fn send_range(
        &self,
        after: SeqNum,
        upto: SeqNum,
        builder: &mut ResponseBuilder,
        emit: &mut impl FnMut(PullPage),
    ) -> Result<(), SyncError> {
        let mut position = after;
        while position < upto {
            let page = self
                .log
                .read(position, upto, CATCH_UP_PAGE_ROWS)
                .await
                .map_err(storage_error)?;
            let Some(last) = page.last() else { break };
            position = last.event.seq_num;
            for event in &page {
                builder.push(event.to_batch_item_json(), emit);
            }
        }
        Ok(())
    }

    /// Turns a finished catch-up at `reached` into a live pull: with appends held off, sends
    /// whatever was appended since (as `NoMore` pages) and then calls `subscribe`, so the
    /// subscriber misses nothing and sees nothing twice or out of order.
    pub async fn go_live(
        &self,
        reached: SeqNum,
        emit: &mut impl FnMut(PullPage),
        subscribe: impl FnOnce(),
    ) -> Result<(), SyncError> {
        self.log
            .with_appends_paused(async |head| {
                let mut builder = ResponseBuilder::live(&self.backend_id);
                self.send_range(reached, head, &mut builder, emit).await?;
                builder.finish(emit);
                subscribe();
                Ok(())
            })
            .await
            .map_err(storage_error)?
    }

    /// Applies a push. On success the batch is durable and `broadcast` has been called with
    /// the live `PullResponse` values for it (in order, before any later push), and the
    /// caller acknowledges. On error nothing was stored.
    pub async fn push(
        &self,
        request: PushRequest,
        created_at: String,
        broadcast: impl FnOnce(Vec<PullPage>),
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
        // Encode once: the sizes are checked on the same bytes that are broadcast.
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
        self.log
            .append(&events, move |_| {
                let mut responses = Vec::new();
                for item in items {
                    builder.push(item, &mut |r| responses.push(r));
                }
                builder.finish(&mut |r| responses.push(r));
                broadcast(responses);
            })
            .await
            .map(|_| ())
            .map_err(|e| match e {
                AppendError::Conflict { head, provided } => SyncError::ServerAhead {
                    minimum_expected_num: head,
                    provided_num: provided,
                },
                AppendError::NotAChain { .. } => {
                    SyncError::unknown("InvalidPushError", e.to_string())
                }
                AppendError::Storage(e) => storage_error(e),
            })
    }
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

fn storage_error(e: StorageError) -> SyncError {
    SyncError::unknown("StorageError", e.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::livestore::event::EventEncoded;
    use crate::livestore::wire::{Cursor, EffectOption};
    use crate::stream::log::tests::Checkpoint;
    use futures::executor::block_on;
    use serde_json::{json, Value};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// In-memory storage of stored events (the stream core's own tests cover the log rules).
    #[derive(Clone, Default)]
    struct Memory(Rc<RefCell<Vec<StoredEvent>>>);

    impl LogStorage for Memory {
        type Entry = StoredEvent;
        async fn max_seq(&self) -> Result<Option<SeqNum>, StorageError> {
            Ok(self.0.borrow().last().map(|e| e.event.seq_num))
        }
        async fn append(&self, entries: &[StoredEvent]) -> Result<(), StorageError> {
            self.0.borrow_mut().extend(entries.iter().cloned());
            Ok(())
        }
        async fn count_range(&self, after: SeqNum, upto: SeqNum) -> Result<u64, StorageError> {
            Ok(self.read_range(after, upto, usize::MAX).await?.len() as u64)
        }
        async fn read_range(
            &self,
            after: SeqNum,
            upto: SeqNum,
            limit: usize,
        ) -> Result<Vec<StoredEvent>, StorageError> {
            let rows = self.0.borrow();
            Ok(rows
                .iter()
                .filter(|e| e.event.seq_num > after && e.event.seq_num <= upto)
                .take(limit)
                .cloned()
                .collect())
        }
    }

    fn backend() -> SyncBackend<Memory, Checkpoint> {
        SyncBackend::new(
            StoreId::parse("s1").unwrap(),
            "BACKEND".into(),
            Memory::default(),
            Checkpoint::default(),
        )
    }

    fn event(seq: u64, pad: usize) -> EventEncoded {
        serde_json::from_value(json!({
            "name": "todoCreated-v1", "args": {"text": "x".repeat(pad)},
            "seqNum": seq, "parentSeqNum": seq - 1, "clientId": "c", "sessionId": "s"
        }))
        .unwrap()
    }

    fn push_req(batch: Vec<EventEncoded>, backend_id: Option<&str>) -> PushRequest {
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

    fn pull_req(cursor: Option<(&str, u64)>) -> PullRequest {
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

    fn push(b: &SyncBackend<Memory, Checkpoint>, from: u64, to: u64, pad: usize) -> Vec<String> {
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

    fn pull(b: &SyncBackend<Memory, Checkpoint>, cursor: Option<(&str, u64)>) -> Vec<Value> {
        let mut pages = Vec::new();
        block_on(b.pull(&pull_req(cursor), &mut |p| pages.push(p))).unwrap();
        pages
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
        let pulled = pull(&b, None);
        assert_eq!(seqs(&pulled), vec![1, 2, 3]);
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
    fn push_errors() {
        let b = backend();
        push(&b, 1, 2, 1);
        let stale = block_on(b.push(push_req(vec![event(2, 1)], None), "t".into(), |_| {
            panic!("broadcast")
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
    fn pull_with_foreign_cursor_is_a_mismatch() {
        let b = backend();
        let err = block_on(b.pull(&pull_req(Some(("OLD", 1))), &mut |_| {})).unwrap_err();
        assert_eq!(
            err,
            SyncError::BackendIdMismatch {
                expected: "BACKEND".into(),
                received: "OLD".into()
            }
        );
    }

    #[test]
    fn going_live_sends_what_was_appended_since_the_catch_up() {
        let b = backend();
        push(&b, 1, 2, 1);
        let reached = block_on(b.pull(&pull_req(None), &mut |_| {})).unwrap();
        push(&b, 3, 4, 1);
        let mut pages = Vec::new();
        let mut subscribed = false;
        block_on(b.go_live(reached, &mut |p| pages.push(p), || subscribed = true)).unwrap();
        assert!(subscribed);
        let values: Vec<Value> = pages
            .iter()
            .map(|p| serde_json::from_str::<Value>(&p.json).unwrap())
            .collect();
        assert_eq!(seqs(&values), vec![3, 4]);
        assert!(values
            .iter()
            .all(|v| v["pageInfo"] == json!({"_tag":"NoMore"})));
    }
}
