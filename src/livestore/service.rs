//! Serving one sync RPC for any transport: the hooks of `makeDurableObject` (`on_pull`,
//! `on_pull_res`, `on_push`, `on_push_res`) around the push and pull rules of [`SyncBackend`].
//! The transports (WebSocket, HTTP, DO-RPC, in the wasm edge) only carry messages: each gives a
//! [`Reply`] that sends them, encodes a pull chunk its way and says what a live pull becomes.

use super::chunk::PullPage;
use super::options::{HookContext, PullMessage, PushMessage, PushOutcome, SyncObjectOptions};
use super::sync::{EventLogStore, Gone, PageSink, Stop, SyncBackend};
use super::wire::{
    encode_chunk, encode_failure, encode_stream_end, encode_success, Defect, PullRequest,
    PushRequest, RequestId, Rpc, SyncError, HTTP_PONG_VALUE, PUSH_ACK_VALUE,
};
use crate::stream::SeqNum;

/// What a pull becomes once it has caught up.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LiveMode {
    /// It ends with an `Exit`.
    End,
    /// It stays open and gets every accepted push (a WebSocket live pull); no `Exit`.
    Stream,
    /// It ends with an `Exit`, and the caller is called back with every accepted push (a DO-RPC
    /// pull with an `rpcContext`).
    Callback,
}

/// How one transport carries the replies of one RPC.
#[allow(async_fn_in_trait)]
pub trait Reply {
    /// Sends one RPC message (a `Chunk`, an `Exit`); `Err` when the caller is gone. May wait:
    /// transports apply back-pressure here.
    async fn send(&mut self, message: String) -> Result<(), Gone>;

    /// The `Chunk` that carries one pull page.
    fn chunk(&self, id: &RequestId, page: &PullPage) -> String {
        encode_chunk(id, &[&page.json])
    }

    /// What `request` becomes after its catch-up.
    fn live_mode(&self, request: &PullRequest) -> LiveMode;

    /// Registers live pull `id` (for [`LiveMode::Stream`] and [`LiveMode::Callback`]). Called
    /// with appends held off, so the subscriber misses nothing and sees nothing twice.
    fn subscribe(
        &mut self,
        id: &RequestId,
        request: &PullRequest,
        at: SeqNum,
    ) -> Result<(), SyncError>;
}

/// What an accepted push needs from its object: the time it is stored with, and the live readers
/// it is published to.
pub trait Publisher {
    /// The server time, ISO 8601: the `createdAt` of the events of a push.
    fn now_iso(&self) -> String;
    /// Publishes the live pages of an accepted push (see [`SyncBackend::push`]).
    fn publish(&self, pages: Vec<PullPage>);
}

/// Serves `rpc` (request `id`) against `backend`, with `options`' hooks, through `reply`;
/// accepted pushes go to `publisher`.
pub async fn serve<S: EventLogStore>(
    backend: &SyncBackend<S>,
    options: &SyncObjectOptions,
    id: &RequestId,
    rpc: Rpc,
    context: &HookContext,
    reply: &mut impl Reply,
    publisher: &impl Publisher,
) {
    match rpc {
        Rpc::Pull(request) => pull(backend, options, id, &request, context, reply).await,
        Rpc::Push(request) => push(backend, options, id, request, context, reply, publisher).await,
        Rpc::Ping(_) => {
            let _ = reply.send(encode_success(id, HTTP_PONG_VALUE)).await;
        }
    }
}

/// The pages of one pull, sent as chunks and shown to `on_pull_res` as they go.
struct Chunks<'a, R> {
    reply: &'a mut R,
    id: &'a RequestId,
    options: &'a SyncObjectOptions,
    context: &'a HookContext,
}

impl<R: Reply> PageSink for Chunks<'_, R> {
    async fn page(&mut self, page: PullPage) -> Result<(), Gone> {
        let chunk = self.reply.chunk(self.id, &page);
        self.reply.send(chunk).await?;
        if let Some(on_pull_res) = &self.options.on_pull_res {
            on_pull_res(Ok(page), self.context.clone()).await;
        }
        Ok(())
    }
}

async fn pull<S: EventLogStore>(
    backend: &SyncBackend<S>,
    options: &SyncObjectOptions,
    id: &RequestId,
    request: &PullRequest,
    context: &HookContext,
    reply: &mut impl Reply,
) {
    if let Some(on_pull) = &options.on_pull {
        let message = PullMessage {
            cursor: request.cursor.clone().into_option(),
            live: request.live || request.rpc_context.is_some(),
        };
        if let Err(message) = on_pull(message, context.clone()).await {
            let _ = reply
                .send(encode_failure(id, &rejected_by_hook("onPull", message)))
                .await;
            return;
        }
    }
    let mode = reply.live_mode(request);
    let mut chunks = Chunks {
        reply,
        id,
        options,
        context,
    };
    let outcome = async {
        let after = backend.start(request)?;
        let reached = backend.catch_up(after, &mut chunks).await?;
        if mode != LiveMode::End {
            backend
                .go_live(reached, &mut chunks, |chunks, at| {
                    chunks.reply.subscribe(id, request, at)
                })
                .await?;
        }
        Ok::<(), Stop>(())
    }
    .await;
    match outcome {
        Ok(()) if mode == LiveMode::Stream => {}
        Ok(()) => {
            let _ = chunks.reply.send(encode_stream_end(id)).await;
        }
        Err(Stop::Gone) => {}
        Err(Stop::Failed(error)) => {
            let _ = chunks.reply.send(encode_failure(id, &error)).await;
            if let Some(on_pull_res) = &options.on_pull_res {
                on_pull_res(Err(error), context.clone()).await;
            }
        }
    }
}

async fn push<S: EventLogStore>(
    backend: &SyncBackend<S>,
    options: &SyncObjectOptions,
    id: &RequestId,
    request: PushRequest,
    context: &HookContext,
    reply: &mut impl Reply,
    publisher: &impl Publisher,
) {
    let batch_size = request.batch.len();
    let mut result = Ok(());
    if let Some(on_push) = options.on_push.as_ref().filter(|_| batch_size > 0) {
        let message = PushMessage {
            batch: request.batch.clone(),
            backend_id: request.backend_id.clone().into_option(),
        };
        if let Err(message) = on_push(message, context.clone()).await {
            result = Err(rejected_by_hook("onPush", message));
        }
    }
    if result.is_ok() {
        result = backend
            .push(request, publisher.now_iso(), |pages| {
                publisher.publish(pages)
            })
            .await;
    }
    let message = match &result {
        Ok(()) => encode_success(id, PUSH_ACK_VALUE),
        Err(error) => encode_failure(id, error),
    };
    let _ = reply.send(message).await;
    if let Some(on_push_res) = &options.on_push_res {
        on_push_res(PushOutcome { batch_size, result }, context.clone()).await;
    }
}

/// The `UnknownError` of a request a hook rejected with `message`.
fn rejected_by_hook(hook: &str, message: String) -> SyncError {
    SyncError::Unknown {
        cause: Defect {
            name: "Error".into(),
            message,
        },
        note: Some(format!("rejected by {hook}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::livestore::sync::tests::{backend_over, event, pull_req, push_req, Store};
    use crate::livestore::wire::{CallerContext, RpcContext};
    use futures::executor::block_on;
    use serde_json::Value;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A transport that records what it sends and its subscriptions.
    struct Recorder {
        mode: LiveMode,
        sent: Vec<Value>,
        subscribed: Vec<RequestId>,
        gone_after: Option<usize>,
    }

    impl Recorder {
        fn new(mode: LiveMode) -> Self {
            Recorder {
                mode,
                sent: Vec::new(),
                subscribed: Vec::new(),
                gone_after: None,
            }
        }

        fn tags(&self) -> Vec<String> {
            self.sent
                .iter()
                .map(|m| m["_tag"].as_str().unwrap_or("?").to_owned())
                .collect()
        }
    }

    impl Reply for Recorder {
        async fn send(&mut self, message: String) -> Result<(), Gone> {
            if self.gone_after == Some(self.sent.len()) {
                return Err(Gone);
            }
            self.sent.push(serde_json::from_str(&message).unwrap());
            Ok(())
        }
        fn live_mode(&self, _request: &PullRequest) -> LiveMode {
            self.mode
        }
        fn subscribe(
            &mut self,
            id: &RequestId,
            _: &PullRequest,
            _: SeqNum,
        ) -> Result<(), SyncError> {
            self.subscribed.push(id.clone());
            Ok(())
        }
    }

    type Log = Rc<RefCell<Vec<String>>>;

    /// Options whose hooks record what they see in `log`; `refuse` makes on_push and on_pull
    /// reject.
    fn recording_options(log: &Log, refuse: bool) -> SyncObjectOptions {
        let (a, b, c, d) = (log.clone(), log.clone(), log.clone(), log.clone());
        SyncObjectOptions::new()
            .on_pull(move |message, _| {
                a.borrow_mut().push(format!("onPull live={}", message.live));
                async move {
                    if refuse {
                        Err("no pulls".into())
                    } else {
                        Ok(())
                    }
                }
            })
            .on_pull_res(move |outcome, _| {
                b.borrow_mut().push(match outcome {
                    Ok(page) => format!("onPullRes {} events", page.events),
                    Err(_) => "onPullRes error".into(),
                });
                async {}
            })
            .on_push(move |message, _| {
                c.borrow_mut()
                    .push(format!("onPush {} events", message.batch.len()));
                async move {
                    if refuse {
                        Err("no pushes".into())
                    } else {
                        Ok(())
                    }
                }
            })
            .on_push_res(move |outcome, _| {
                d.borrow_mut().push(format!(
                    "onPushRes {} ok={}",
                    outcome.batch_size,
                    outcome.result.is_ok()
                ));
                async {}
            })
    }

    fn id(n: &str) -> RequestId {
        RequestId::Text(n.into())
    }

    impl Publisher for RefCell<Vec<PullPage>> {
        fn now_iso(&self) -> String {
            "2026-12-04T00:00:00.000Z".into()
        }
        fn publish(&self, pages: Vec<PullPage>) {
            self.borrow_mut().extend(pages);
        }
    }

    fn run(
        backend: &crate::livestore::sync::SyncBackend<Store>,
        options: &SyncObjectOptions,
        rpc: Rpc,
        reply: &mut Recorder,
        published: &RefCell<Vec<PullPage>>,
    ) {
        block_on(serve(
            backend,
            options,
            &id("1"),
            rpc,
            &HookContext::default(),
            reply,
            published,
        ));
    }

    #[test]
    fn a_push_runs_its_hooks_around_the_append_and_publishes_before_the_ack() {
        let log = Log::default();
        let options = recording_options(&log, false);
        let backend = backend_over(Store::default());
        let published = RefCell::new(Vec::new());
        let mut reply = Recorder::new(LiveMode::End);
        let batch = vec![event(1, 1), event(2, 1)];
        run(
            &backend,
            &options,
            Rpc::Push(push_req(batch, None)),
            &mut reply,
            &published,
        );
        assert_eq!(reply.tags(), ["Exit"]);
        assert_eq!(reply.sent[0]["exit"]["_tag"], "Success");
        assert_eq!(published.borrow().len(), 1);
        assert_eq!(*log.borrow(), ["onPush 2 events", "onPushRes 2 ok=true"]);
    }

    #[test]
    fn hooks_that_reject_store_nothing_and_send_the_failure() {
        let log = Log::default();
        let options = recording_options(&log, true);
        let store = Store::default();
        let backend = backend_over(store.clone());
        let published = RefCell::new(Vec::new());
        let mut reply = Recorder::new(LiveMode::End);
        run(
            &backend,
            &options,
            Rpc::Push(push_req(vec![event(1, 1)], None)),
            &mut reply,
            &published,
        );
        assert_eq!(
            reply.sent[0]["exit"]["cause"]["error"]["note"],
            "rejected by onPush"
        );
        assert!(store.all().is_empty());
        assert!(published.borrow().is_empty());
        let mut reply = Recorder::new(LiveMode::End);
        run(
            &backend,
            &options,
            Rpc::Pull(pull_req(None)),
            &mut reply,
            &published,
        );
        assert_eq!(reply.tags(), ["Exit"]);
        assert_eq!(
            reply.sent[0]["exit"]["cause"]["error"]["note"],
            "rejected by onPull"
        );
        assert_eq!(
            *log.borrow(),
            [
                "onPush 1 events",
                "onPushRes 1 ok=false",
                "onPull live=false"
            ]
        );
    }

    #[test]
    fn a_pull_sends_its_pages_as_chunks_then_ends_and_on_pull_res_sees_each_page() {
        let log = Log::default();
        let options = recording_options(&log, false);
        let backend = backend_over(Store::default());
        let published = RefCell::new(Vec::new());
        let batch = (1..=150).map(|n| event(n, 1)).collect();
        run(
            &backend,
            &options,
            Rpc::Push(push_req(batch, None)),
            &mut Recorder::new(LiveMode::End),
            &published,
        );
        log.borrow_mut().clear();
        let mut reply = Recorder::new(LiveMode::End);
        run(
            &backend,
            &options,
            Rpc::Pull(pull_req(None)),
            &mut reply,
            &published,
        );
        assert_eq!(reply.tags(), ["Chunk", "Chunk", "Exit"]);
        assert!(reply.subscribed.is_empty());
        assert_eq!(
            *log.borrow(),
            [
                "onPull live=false",
                "onPullRes 100 events",
                "onPullRes 50 events"
            ]
        );
    }

    #[test]
    fn live_pulls_subscribe_a_stream_stays_open_and_a_callback_pull_ends() {
        let options = SyncObjectOptions::new();
        let backend = backend_over(Store::default());
        let published = RefCell::new(Vec::new());
        let mut stream = Recorder::new(LiveMode::Stream);
        let mut live = pull_req(None);
        live.live = true;
        run(&backend, &options, Rpc::Pull(live), &mut stream, &published);
        assert_eq!(stream.tags(), ["Chunk"], "no Exit: the pull stays open");
        assert_eq!(stream.subscribed, [id("1")]);

        let mut callback = Recorder::new(LiveMode::Callback);
        let mut subscribing = pull_req(None);
        subscribing.rpc_context = Some(RpcContext {
            caller_context: CallerContext {
                binding_name: "CLIENT_DO".into(),
                durable_object_id: "abc".into(),
            },
        });
        run(
            &backend,
            &options,
            Rpc::Pull(subscribing),
            &mut callback,
            &published,
        );
        assert_eq!(callback.tags(), ["Chunk", "Exit"]);
        assert_eq!(callback.subscribed, [id("1")]);
    }

    #[test]
    fn a_pull_whose_caller_is_gone_stops_sending() {
        let backend = backend_over(Store::default());
        let published = RefCell::new(Vec::new());
        let batch = (1..=300).map(|n| event(n, 1)).collect();
        run(
            &backend,
            &SyncObjectOptions::new(),
            Rpc::Push(push_req(batch, None)),
            &mut Recorder::new(LiveMode::End),
            &published,
        );
        let mut reply = Recorder::new(LiveMode::Stream);
        reply.gone_after = Some(1);
        let mut live = pull_req(None);
        live.live = true;
        run(
            &backend,
            &SyncObjectOptions::new(),
            Rpc::Pull(live),
            &mut reply,
            &published,
        );
        assert_eq!(reply.tags(), ["Chunk"]);
        assert!(
            reply.subscribed.is_empty(),
            "a gone caller is not subscribed"
        );
    }

    #[test]
    fn ping_answers_pong() {
        let backend = backend_over(Store::default());
        let mut reply = Recorder::new(LiveMode::End);
        let ping = serde_json::from_value(serde_json::json!({"storeId": "s1"})).unwrap();
        run(
            &backend,
            &SyncObjectOptions::new(),
            Rpc::Ping(ping),
            &mut reply,
            &RefCell::new(Vec::new()),
        );
        assert_eq!(reply.sent[0]["exit"]["value"]["_tag"], "SyncMessage.Pong");
    }
}
