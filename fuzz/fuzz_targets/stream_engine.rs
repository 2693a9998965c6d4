//! The Durable Streams protocol end to end, over the stream core with in-memory stores: a short
//! session of requests with arbitrary methods, queries, headers and bodies against two streams
//! (so forks have a source), with long-polls run to their timeout, event streams pumped and
//! alarms fired. Never panics, never hits a storage error (which here can only mean a bug),
//! answers with valid statuses, and every `Stream-Next-Offset` is an offset it accepts itself.
#![no_main]

#[path = "common.rs"]
mod common;

use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use livestore_sync_rs::durable_streams::http::{Request, Response};
use livestore_sync_rs::durable_streams::meta::Meta;
use livestore_sync_rs::durable_streams::platform::{
    AcquireRequest, Clock, Config, ForkPoint, Platform,
};
use livestore_sync_rs::durable_streams::stream::{Outcome, Stream};
use livestore_sync_rs::stream::memory::MemoryStore;
use livestore_sync_rs::stream::offset::{parse_offset, ReadFrom};
use livestore_sync_rs::stream::{Budget, Message, SeqNum, StorageError};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};

const METHODS: [&str; 6] = ["PUT", "POST", "GET", "HEAD", "DELETE", "PATCH"];
const PATHS: [&str; 2] = ["/v1/stream/a", "/v1/stream/b"];
const HEADERS: [&str; 14] = [
    "content-type",
    "stream-ttl",
    "stream-expires-at",
    "stream-closed",
    "stream-seq",
    "producer-id",
    "producer-epoch",
    "producer-seq",
    "stream-forked-from",
    "stream-fork-offset",
    "stream-fork-sub-offset",
    "if-none-match",
    "stream-cursor",
    "accept",
];

type TestStream = Stream<MemoryStore<Message, Meta>, World>;

/// The two streams and their clock, which moves when someone sleeps.
#[derive(Clone)]
struct World(Rc<Inner>);

struct Inner {
    now: Cell<u64>,
    streams: RefCell<Vec<Weak<TestStream>>>,
}

impl World {
    fn find(&self, path: &str) -> Option<Rc<TestStream>> {
        let index = PATHS.iter().position(|p| *p == path)?;
        self.0.streams.borrow().get(index).and_then(Weak::upgrade)
    }
}

impl Clock for World {
    fn now_ms(&self) -> u64 {
        self.0.now.get()
    }
    async fn sleep(&self, ms: u64) {
        self.0.now.set(self.0.now.get().saturating_add(ms));
    }
}

impl Platform for World {
    async fn acquire(
        &self,
        source: &str,
        request: &AcquireRequest,
    ) -> Result<Result<ForkPoint, Response>, StorageError> {
        match self.find(source) {
            Some(stream) => Box::pin(stream.acquire(request)).await,
            None => Ok(Err(Response::new(404))),
        }
    }
    async fn release(&self, source: &str) -> Result<(), StorageError> {
        match self.find(source) {
            Some(stream) => Box::pin(stream.release()).await,
            None => Ok(()),
        }
    }
    async fn read_source(
        &self,
        source: &str,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Message>, StorageError> {
        match self.find(source) {
            Some(stream) => Box::pin(stream.read_for_fork(after, upto, budget)).await,
            None => Ok(Vec::new()),
        }
    }
    async fn set_alarm(&self, _at_ms: i64) {}
    fn warn(&self, _message: &str) {}
}

fuzz_target!(|data: &[u8]| {
    let world = World(Rc::new(Inner {
        now: Cell::new(1_728_432_000_000),
        streams: RefCell::new(Vec::new()),
    }));
    let config = Config {
        long_poll_ms: 1_000,
        ..Config::default()
    };
    let streams: Vec<Rc<TestStream>> = PATHS
        .iter()
        .map(|_| Rc::new(Stream::new(MemoryStore::default(), world.clone(), config)))
        .collect();
    *world.0.streams.borrow_mut() = streams.iter().map(Rc::downgrade).collect();
    for request in common::parts(data).take(16) {
        let Some((&op, rest)) = request.split_first() else {
            continue;
        };
        world
            .0
            .now
            .set(world.0.now.get() + u64::from(op >> 4) * 997);
        let target = usize::from(op & 8 != 0);
        let method = METHODS[usize::from(op & 7) % METHODS.len()];
        let mut fields = rest.split(|&b| b == 0xFE);
        let query = fields.next().and_then(common::text).unwrap_or_default();
        let mut headers = BTreeMap::new();
        let mut body: &[u8] = &[];
        for field in fields {
            match field.split_first() {
                Some((0, value)) => body = value,
                Some((&which, value)) => {
                    if let Some(value) = common::text(value) {
                        let name = HEADERS[usize::from(which) % HEADERS.len()];
                        headers.insert(name.to_owned(), value.to_owned());
                    }
                }
                None => {}
            }
        }
        let url = format!("http://localhost{}", PATHS[target]);
        let req = Request {
            method,
            url: &url,
            query,
            headers: &headers,
            body,
        };
        let stream = &streams[target];
        match ok(block_on(stream.handle(&req))) {
            Outcome::Reply(response) => check(&response),
            Outcome::Sse(mut sse) => {
                for _ in 0..3 {
                    if ok(block_on(stream.sse_next(&mut sse))).is_none() {
                        break;
                    }
                }
            }
        }
        if op & 0x80 != 0 {
            ok(block_on(stream.alarm()));
        }
    }
});

fn check(response: &Response) {
    assert!((200..600).contains(&response.status), "{response:?}");
    if let Some(offset) = response.get("stream-next-offset") {
        assert!(
            matches!(parse_offset(offset), Ok(ReadFrom::At(_))),
            "unparsable next offset {offset}"
        );
    }
}

fn ok<T, E: std::fmt::Debug>(result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("storage error from the in-memory store: {e:?}"),
    }
}
