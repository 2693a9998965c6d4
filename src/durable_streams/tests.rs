//! The protocol over in-memory logs: a little world of streams by path, with a clock that moves
//! only when someone sleeps.

use super::create::DEFAULT_CONTENT_TYPE;
use super::headers::format_rfc3339_ms;
use super::http::{Request, Response};
use super::meta::{offset_text, Meta};
use super::platform::{AcquireRequest, Clock, Config, ForkPoint, Platform};
use super::stream::{Outcome, Stream};
use crate::stream::memory::MemoryStore;
use crate::stream::{Budget, Message, SeqNum, StorageError};
use futures::executor::block_on;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::{Rc, Weak};

const T0: u64 = 1_800_000_000_000;

type Store = MemoryStore<Message, Meta>;
pub(super) type TestStream = Stream<Store, World>;

/// The streams of a test, by path, and their shared clock.
#[derive(Clone)]
pub(super) struct World(Rc<WorldInner>);

struct WorldInner {
    now: Cell<u64>,
    streams: RefCell<HashMap<String, Weak<TestStream>>>,
    alarms: RefCell<Vec<i64>>,
    /// Sources whose release fails, as if their object did not answer.
    unreachable: RefCell<Vec<String>>,
}

impl World {
    pub(super) fn new() -> World {
        World(Rc::new(WorldInner {
            now: Cell::new(T0),
            streams: RefCell::new(HashMap::new()),
            alarms: RefCell::new(Vec::new()),
            unreachable: RefCell::new(Vec::new()),
        }))
    }

    pub(super) fn stream(&self, path: &str) -> Rc<TestStream> {
        self.stream_over(path, Store::default())
    }

    fn stream_over(&self, path: &str, store: Store) -> Rc<TestStream> {
        let stream = Rc::new(Stream::new(
            store,
            self.clone(),
            Config {
                long_poll_ms: 1_000,
                ..Config::default()
            },
        ));
        self.0
            .streams
            .borrow_mut()
            .insert(path.to_owned(), Rc::downgrade(&stream));
        stream
    }

    fn get(&self, path: &str) -> Result<Rc<TestStream>, StorageError> {
        self.0
            .streams
            .borrow()
            .get(path)
            .and_then(Weak::upgrade)
            .ok_or_else(|| StorageError(format!("no object for {path}")))
    }

    pub(super) fn advance(&self, ms: u64) {
        self.0.now.set(self.0.now.get() + ms);
    }
}

impl Clock for World {
    fn now_ms(&self) -> u64 {
        self.0.now.get()
    }

    async fn sleep(&self, ms: u64) {
        self.advance(ms);
    }
}

impl Platform for World {
    async fn acquire(
        &self,
        source: &str,
        request: &AcquireRequest,
    ) -> Result<Result<ForkPoint, Response>, StorageError> {
        match self.get(source) {
            Ok(stream) => Box::pin(stream.acquire(request)).await,
            Err(_) => Ok(Err(Response::error(404, "fork source not found"))),
        }
    }

    async fn release(&self, source: &str) -> Result<(), StorageError> {
        if self.0.unreachable.borrow().iter().any(|s| s == source) {
            return Err(StorageError(format!("{source} did not answer")));
        }
        Box::pin(self.get(source)?.release()).await
    }

    async fn read_source(
        &self,
        source: &str,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Message>, StorageError> {
        Box::pin(self.get(source)?.read_for_fork(after, upto, budget)).await
    }

    async fn set_alarm(&self, at_ms: i64) {
        self.0.alarms.borrow_mut().push(at_ms);
    }

    fn warn(&self, _message: &str) {}
}

pub(super) struct Call {
    method: &'static str,
    query: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

pub(super) fn call(method: &'static str) -> Call {
    Call {
        method,
        query: String::new(),
        headers: BTreeMap::new(),
        body: Vec::new(),
    }
}

impl Call {
    pub(super) fn h(mut self, name: &str, value: &str) -> Call {
        self.headers
            .insert(name.to_ascii_lowercase(), value.to_owned());
        self
    }
    pub(super) fn q(mut self, query: &str) -> Call {
        self.query = query.to_owned();
        self
    }
    pub(super) fn b(mut self, body: &[u8]) -> Call {
        self.body = body.to_vec();
        self
    }
    fn run(&self, stream: &TestStream) -> Outcome {
        let req = Request {
            method: self.method,
            url: "http://h/v1/stream/s",
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
        };
        block_on(stream.handle(&req)).unwrap()
    }
    pub(super) fn send(&self, stream: &TestStream) -> Response {
        match self.run(stream) {
            Outcome::Reply(r) => r,
            other => panic!("not a reply: {other:?}"),
        }
    }
}

pub(super) fn text(r: &Response) -> String {
    String::from_utf8(r.body.clone()).unwrap()
}

fn off(n: u64) -> String {
    offset_text(SeqNum::new(n).unwrap())
}

pub(super) fn put_text(stream: &TestStream, body: &str) -> Response {
    call("PUT")
        .h("content-type", "text/plain")
        .b(body.as_bytes())
        .send(stream)
}

pub(super) fn post_text(stream: &TestStream, body: &str) -> Response {
    call("POST")
        .h("content-type", "text/plain")
        .b(body.as_bytes())
        .send(stream)
}

#[test]
fn create_is_idempotent_and_checks_config() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    let r = put_text(&s, "");
    assert_eq!(r.status, 201);
    assert_eq!(r.get("content-type"), Some("text/plain"));
    assert_eq!(r.get("location"), Some("http://h/v1/stream/s"));
    assert_eq!(r.get("stream-next-offset"), Some(off(0).as_str()));
    assert_eq!(
        call("PUT").h("content-type", "TEXT/PLAIN").send(&s).status,
        200
    );
    assert_eq!(
        call("PUT")
            .h("content-type", "application/json")
            .send(&s)
            .status,
        409
    );
    assert_eq!(
        call("PUT")
            .h("content-type", "text/plain")
            .h("stream-ttl", "5")
            .send(&s)
            .status,
        409
    );
    let bad = call("PUT")
        .h("stream-ttl", "1")
        .h("stream-expires-at", "2030-01-01T00:00:00Z");
    assert_eq!(bad.send(&world.stream("/v1/stream/b")).status, 400);
    let r = call("PUT").send(&world.stream("/v1/stream/n"));
    assert_eq!(
        (r.status, r.get("content-type")),
        (201, Some(DEFAULT_CONTENT_TYPE))
    );
}

#[test]
fn appends_and_reads_by_offset() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    put_text(&s, "first");
    let r = post_text(&s, "second");
    assert_eq!(r.status, 204);
    assert_eq!(r.get("stream-next-offset"), Some(off(2).as_str()));
    let r = call("GET").send(&s);
    assert_eq!(text(&r), "firstsecond");
    assert_eq!(r.get("stream-up-to-date"), Some("true"));
    let r = call("GET").q(&format!("offset={}", off(1))).send(&s);
    assert_eq!(text(&r), "second");
    let tail = call("GET").q(&format!("offset={}", off(2))).send(&s);
    assert_eq!((tail.status, text(&tail)), (200, String::new()));
    assert_eq!(tail.get("stream-up-to-date"), Some("true"));
    for bad in [
        "offset=",
        "offset=a&offset=b",
        "offset=0%2C1",
        "offset=0%201",
        "live=sse",
    ] {
        assert_eq!(call("GET").q(bad).send(&s).status, 400, "{bad}");
    }
    assert_eq!(post_text(&s, "").status, 400);
    let no_ct = call("POST").b(b"x").send(&s);
    assert_eq!(no_ct.status, 400);
    let mismatch = call("POST")
        .h("content-type", "application/json")
        .b(b"{}")
        .send(&s);
    assert_eq!(mismatch.status, 409);
}

#[test]
fn a_catch_up_reads_within_the_budget() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    call("PUT")
        .h("content-type", "application/octet-stream")
        .send(&s);
    let chunk = vec![7u8; 400_000];
    for _ in 0..6 {
        call("POST")
            .h("content-type", "application/octet-stream")
            .b(&chunk)
            .send(&s);
    }
    let first = call("GET").send(&s);
    assert_eq!(first.body.len(), 800_000, "two messages fit 1 MiB");
    assert_eq!(first.get("stream-next-offset"), Some(off(2).as_str()));
    assert_eq!(first.get("stream-up-to-date"), None);
}

#[test]
fn etags_and_offset_now() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    put_text(&s, "data");
    let r = call("GET").send(&s);
    let etag = r.get("etag").unwrap().to_owned();
    let again = call("GET").h("if-none-match", &etag).send(&s);
    assert_eq!((again.status, again.body.len()), (304, 0));
    post_text(&s, "more");
    assert_eq!(call("GET").h("if-none-match", &etag).send(&s).status, 200);
    let now = call("GET").q("offset=now").send(&s);
    assert_eq!(now.get("cache-control"), Some("no-store"));
    assert_eq!(now.get("etag"), None);
    assert_eq!(now.get("stream-next-offset"), Some(off(2).as_str()));
    let j = world.stream("/v1/stream/j");
    call("PUT")
        .h("content-type", "application/json")
        .b(b"[1]")
        .send(&j);
    assert_eq!(text(&call("GET").q("offset=now").send(&j)), "[]");
}

#[test]
fn json_mode_flattens_one_level() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    let r = call("PUT")
        .h("content-type", "application/json")
        .b(b"[]")
        .send(&s);
    assert_eq!(r.status, 201);
    let post = |b: &[u8]| {
        call("POST")
            .h("content-type", "application/json")
            .b(b)
            .send(&s)
    };
    assert_eq!(post(b"{\"a\":1}").status, 204);
    assert_eq!(post(b"[[1,2],3]").status, 204);
    assert_eq!(post(b"[]").status, 400);
    assert_eq!(post(b"{nope").status, 400);
    assert_eq!(text(&call("GET").send(&s)), "[{\"a\":1},[1,2],3]");
}

#[test]
fn stream_seq_is_checked() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    put_text(&s, "");
    let post = |seq: &str| {
        call("POST")
            .h("content-type", "text/plain")
            .h("stream-seq", seq)
            .b(b"x")
            .send(&s)
            .status
    };
    assert_eq!(post("2"), 204);
    assert_eq!(post("10"), 409);
    assert_eq!(post("2"), 409);
    assert_eq!(post("3"), 204);
}

fn produce(s: &TestStream, epoch: &str, seq: &str, body: &str) -> Response {
    call("POST")
        .h("content-type", "text/plain")
        .h("producer-id", "p")
        .h("producer-epoch", epoch)
        .h("producer-seq", seq)
        .b(body.as_bytes())
        .send(s)
}

#[test]
fn producers_dedupe_and_fence() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    put_text(&s, "");
    let r = produce(&s, "0", "0", "a");
    assert_eq!((r.status, r.get("producer-epoch")), (200, Some("0")));
    assert_eq!(produce(&s, "0", "1", "b").status, 200);
    let dup = produce(&s, "0", "0", "a");
    assert_eq!((dup.status, dup.get("producer-seq")), (204, Some("1")));
    let gap = produce(&s, "0", "5", "x");
    assert_eq!(gap.status, 409);
    assert_eq!(gap.get("producer-expected-seq"), Some("2"));
    assert_eq!(produce(&s, "1", "3", "x").status, 400);
    assert_eq!(produce(&s, "1", "0", "c").status, 200);
    let stale = produce(&s, "0", "2", "z");
    assert_eq!(
        (stale.status, stale.get("producer-epoch")),
        (403, Some("1"))
    );
    assert_eq!(produce(&s, "0x", "0", "z").status, 400);
    assert_eq!(text(&call("GET").send(&s)), "abc");
}

#[test]
fn producer_state_expires_after_its_age() {
    let world = World::new();
    let store = Store::default();
    let s = world.stream_over("/v1/stream/s", store.clone());
    put_text(&s, "");
    assert_eq!(produce(&s, "0", "0", "a").status, 200);
    world.advance(Config::default().producer_ttl_ms + 1);
    let other = call("POST")
        .h("content-type", "text/plain")
        .h("producer-id", "q")
        .h("producer-epoch", "0")
        .h("producer-seq", "0")
        .b(b"b")
        .send(&s);
    assert_eq!(other.status, 200);
    assert_eq!(store.producer_ids(), ["q"], "p was dropped");
    // p starts afresh: sequence 0 is new data again
    assert_eq!(produce(&s, "0", "0", "c").status, 200);
}

#[test]
fn closing_streams() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    put_text(&s, "content");
    let close = call("POST").h("stream-closed", "true").send(&s);
    assert_eq!(close.status, 204);
    assert_eq!(close.get("stream-closed"), Some("true"));
    assert_eq!(call("POST").h("stream-closed", "TRUE").send(&s).status, 204);
    let rejected = post_text(&s, "late");
    assert_eq!(rejected.status, 409);
    assert_eq!(rejected.get("stream-closed"), Some("true"));
    assert_eq!(rejected.get("stream-next-offset"), Some(off(1).as_str()));
    let r = call("GET").send(&s);
    assert_eq!(r.get("stream-closed"), Some("true"));
    let lp = call("GET")
        .q(&format!("offset={}&live=long-poll", off(1)))
        .send(&s);
    assert_eq!((lp.status, lp.get("stream-closed")), (204, Some("true")));
    assert_eq!(call("HEAD").send(&s).get("stream-closed"), Some("true"));
    // A producer's close is retried as a duplicate; others conflict.
    let p = world.stream("/v1/stream/p");
    put_text(&p, "");
    let first = produce_close(&p, "0", "0", "final");
    assert_eq!(
        (first.status, first.get("stream-closed")),
        (200, Some("true"))
    );
    assert_eq!(produce_close(&p, "0", "0", "other").status, 204);
    assert_eq!(produce_close(&p, "0", "1", "x").status, 409);
    assert_eq!(text(&call("GET").send(&p)), "final");
}

fn produce_close(s: &TestStream, epoch: &str, seq: &str, body: &str) -> Response {
    call("POST")
        .h("content-type", "text/plain")
        .h("stream-closed", "true")
        .h("producer-id", "p")
        .h("producer-epoch", epoch)
        .h("producer-seq", seq)
        .b(body.as_bytes())
        .send(s)
}

#[test]
fn ttl_slides_and_expires() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    call("PUT")
        .h("content-type", "text/plain")
        .h("stream-ttl", "2")
        .send(&s);
    world.advance(1_500);
    assert_eq!(call("HEAD").send(&s).status, 200);
    assert_eq!(call("GET").q("offset=now").send(&s).status, 200);
    world.advance(1_500);
    assert_eq!(call("HEAD").send(&s).status, 200, "read renewed it");
    world.advance(600);
    assert_eq!(call("HEAD").send(&s).status, 404, "HEAD did not");
    let at = world.stream("/v1/stream/at");
    call("PUT")
        .h(
            "stream-expires-at",
            &format_rfc3339_ms(i64::try_from(world.now_ms()).unwrap() + 1_000),
        )
        .send(&at);
    world.advance(999);
    assert_eq!(call("GET").send(&at).status, 200);
    world.advance(1);
    assert_eq!(call("GET").send(&at).status, 404);
    assert!(!world.0.alarms.borrow().is_empty(), "expiry alarms armed");
}

#[test]
fn long_poll_answers_data_or_times_out() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    put_text(&s, "x");
    post_text(&s, "y");
    let r = call("GET")
        .q(&format!("offset={}&live=long-poll", off(1)))
        .send(&s);
    assert_eq!((r.status, text(&r)), (200, "y".to_owned()));
    assert!(r.get("stream-cursor").is_some());
    // at the tail: the clock runs to the timeout while it waits
    let before = world.now_ms();
    let r = call("GET").q("offset=now&live=long-poll").send(&s);
    assert_eq!(r.status, 204);
    assert_eq!(r.get("stream-up-to-date"), Some("true"));
    assert_eq!(world.now_ms() - before, 1_000);
}

#[test]
fn sse_pairs_data_with_control() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    call("PUT")
        .h("content-type", "application/octet-stream")
        .b(&[0, 1, 2, 3])
        .send(&s);
    let Outcome::Sse(mut sse) = call("GET").q("offset=-1&live=sse").run(&s) else {
        panic!()
    };
    assert!(sse
        .headers
        .contains(&("stream-sse-data-encoding".into(), "base64".into())));
    let first = block_on(s.sse_next(&mut sse)).unwrap().unwrap();
    assert!(first.starts_with("event: data\ndata:AAECAw==\n\nevent: control\ndata:{"));
    assert!(first.contains("\"upToDate\":true"));
    call("POST").h("stream-closed", "true").send(&s);
    let last = block_on(s.sse_next(&mut sse)).unwrap().unwrap();
    assert!(last.contains("\"streamClosed\":true"));
    assert!(!last.contains("streamCursor"));
    assert_eq!(block_on(s.sse_next(&mut sse)).unwrap(), None);
}

#[test]
fn forks_read_through_their_source_and_count_references() {
    let world = World::new();
    let src_store = Store::default();
    let src = world.stream_over("/v1/stream/src", src_store.clone());
    put_text(&src, "hello");
    post_text(&src, "world");
    let fork_store = Store::default();
    let fork = world.stream_over("/v1/stream/f", fork_store.clone());
    let create = call("PUT")
        .h("stream-forked-from", "/v1/stream/src")
        .h("stream-fork-offset", &off(1))
        .h("stream-fork-sub-offset", "3")
        .b(b"XY");
    let r = create.send(&fork);
    assert_eq!(r.status, 201);
    assert_eq!(r.get("stream-next-offset"), Some(off(3).as_str()));
    assert_eq!(text(&call("GET").send(&fork)), "helloworXY");
    // nothing was copied: the fork holds its own message only
    assert_eq!(
        fork_store
            .all()
            .iter()
            .map(|m| m.seq.get())
            .collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(create.send(&fork).status, 200, "idempotent");
    let refs = || src_store.header().unwrap().stream.unwrap().ref_count;
    assert_eq!(refs(), 1);
    // Bad requests never count a reference.
    for bad in [
        AcquireRequest {
            offset: Some(9),
            sub_offset: 0,
            content_type: None,
        },
        AcquireRequest {
            offset: Some(2),
            sub_offset: 1,
            content_type: None,
        },
        AcquireRequest {
            offset: Some(0),
            sub_offset: 6,
            content_type: None,
        },
        AcquireRequest {
            offset: None,
            sub_offset: 0,
            content_type: Some("application/json".into()),
        },
    ] {
        assert!(block_on(src.acquire(&bad)).unwrap().is_err(), "{bad:?}");
    }
    assert_eq!(refs(), 1);
    // Deleting the referenced source soft-deletes it and keeps what the fork reads...
    assert_eq!(call("DELETE").send(&src).status, 204);
    assert_eq!(call("HEAD").send(&src).status, 410);
    assert_eq!(put_text(&src, "again").status, 409);
    assert_eq!(text(&call("GET").send(&fork)), "helloworXY");
    // ...and the fork's deletion gives the reference back, which removes the source.
    assert_eq!(call("DELETE").send(&fork).status, 204);
    assert_eq!(call("HEAD").send(&src).status, 404);
    assert!(src_store.all().is_empty() && src_store.header().is_none());
    assert!(fork_store.all().is_empty() && fork_store.header().is_none());
}

#[test]
fn a_fork_deleted_first_then_its_source_frees_everything() {
    let world = World::new();
    let src_store = Store::default();
    let src = world.stream_over("/v1/stream/src", src_store.clone());
    call("PUT")
        .h("content-type", "application/json")
        .b(b"[1,2,3]")
        .send(&src);
    let fork_store = Store::default();
    let fork = world.stream_over("/v1/stream/f", fork_store.clone());
    call("PUT")
        .h("stream-forked-from", "/v1/stream/src")
        .send(&fork);
    assert_eq!(text(&call("GET").send(&fork)), "[1,2,3]");
    assert_eq!(call("DELETE").send(&fork).status, 204);
    assert_eq!(src_store.header().unwrap().stream.unwrap().ref_count, 0);
    assert_eq!(call("DELETE").send(&src).status, 204);
    assert!(src_store.all().is_empty() && src_store.header().is_none());
    assert!(fork_store.header().is_none());
}

#[test]
fn a_release_the_source_does_not_take_is_owed_and_retried_by_the_alarm() {
    let world = World::new();
    let src_store = Store::default();
    let src = world.stream_over("/v1/stream/src", src_store.clone());
    put_text(&src, "x");
    let fork_store = Store::default();
    let fork = world.stream_over("/v1/stream/f", fork_store.clone());
    call("PUT")
        .h("stream-forked-from", "/v1/stream/src")
        .send(&fork);
    world
        .0
        .unreachable
        .borrow_mut()
        .push("/v1/stream/src".into());
    assert_eq!(call("DELETE").send(&fork).status, 204);
    assert_eq!(call("HEAD").send(&fork).status, 404, "the path is free");
    assert_eq!(
        fork_store.header().unwrap().owed_releases,
        ["/v1/stream/src"]
    );
    assert!(!world.0.alarms.borrow().is_empty(), "a retry is armed");
    // a new stream at the path keeps the debt
    put_text(&fork, "new");
    block_on(fork.alarm()).unwrap();
    assert_eq!(src_store.header().unwrap().stream.unwrap().ref_count, 1);
    world.0.unreachable.borrow_mut().clear();
    block_on(fork.alarm()).unwrap();
    assert_eq!(src_store.header().unwrap().stream.unwrap().ref_count, 0);
    assert!(fork_store.header().unwrap().owed_releases.is_empty());
    assert_eq!(text(&call("GET").send(&fork)), "new");
}

#[test]
fn forks_of_forks_read_through_the_chain() {
    let world = World::new();
    let a = world.stream("/v1/stream/a");
    call("PUT")
        .h("content-type", "application/json")
        .b(b"[1,2]")
        .send(&a);
    let b = world.stream("/v1/stream/b");
    call("PUT")
        .h("stream-forked-from", "/v1/stream/a")
        .h("content-type", "application/json")
        .b(b"[3]")
        .send(&b);
    let c = world.stream("/v1/stream/c");
    call("PUT")
        .h("stream-forked-from", "/v1/stream/b")
        .h("content-type", "application/json")
        .b(b"[4]")
        .send(&c);
    call("POST")
        .h("content-type", "application/json")
        .b(b"[99]")
        .send(&a);
    assert_eq!(text(&call("GET").send(&c)), "[1,2,3,4]");
    assert_eq!(text(&call("GET").send(&a)), "[1,2,99]");
    let from_2 = call("GET").q(&format!("offset={}", off(2))).send(&c);
    assert_eq!(text(&from_2), "[3,4]");
}

#[test]
fn fork_header_rules() {
    let world = World::new();
    let s = world.stream("/v1/stream/s");
    let sub_alone = call("PUT").h("stream-fork-sub-offset", "0").send(&s);
    assert_eq!(sub_alone.status, 400);
    let sub_without_offset = call("PUT")
        .h("stream-forked-from", "/v1/stream/x")
        .h("stream-fork-sub-offset", "1")
        .send(&s);
    assert_eq!(sub_without_offset.status, 400);
    for bad in ["-1", "abc", "1.5", "05", "+1"] {
        let r = call("PUT")
            .h("stream-forked-from", "/v1/stream/x")
            .h("stream-fork-offset", &off(0))
            .h("stream-fork-sub-offset", bad)
            .send(&s);
        assert_eq!(r.status, 400, "{bad}");
    }
    let missing = call("PUT")
        .h("stream-forked-from", "/v1/stream/nowhere")
        .send(&s);
    assert_eq!(missing.status, 404);
}
