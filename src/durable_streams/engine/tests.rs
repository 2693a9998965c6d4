use super::*;
use crate::durable_streams::store::MemoryStore;

const T0: u64 = 1_800_000_000_000;

struct Call {
    method: &'static str,
    query: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn call(method: &'static str) -> Call {
    Call {
        method,
        query: String::new(),
        headers: BTreeMap::new(),
        body: Vec::new(),
    }
}

impl Call {
    fn h(mut self, name: &str, value: &str) -> Call {
        self.headers
            .insert(name.to_ascii_lowercase(), value.to_owned());
        self
    }
    fn q(mut self, query: &str) -> Call {
        self.query = query.to_owned();
        self
    }
    fn b(mut self, body: &[u8]) -> Call {
        self.body = body.to_vec();
        self
    }
    fn run_at(&self, store: &MemoryStore, now: u64) -> Handled {
        let req = Request {
            method: self.method,
            url: "http://h/v1/stream/s",
            path: "/v1/stream/s",
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
        };
        handle(store, &req, now).unwrap()
    }
    fn send(&self, store: &MemoryStore) -> Response {
        self.send_at(store, T0)
    }
    fn send_at(&self, store: &MemoryStore, now: u64) -> Response {
        match self.run_at(store, now).outcome {
            Outcome::Reply(r) => r,
            other => panic!("not a reply: {other:?}"),
        }
    }
}

fn text(r: &Response) -> String {
    String::from_utf8(r.body.clone()).unwrap()
}

fn off(n: u64) -> String {
    offset_text(n)
}

fn put_text(store: &MemoryStore, body: &str) -> Response {
    call("PUT")
        .h("content-type", "text/plain")
        .b(body.as_bytes())
        .send(store)
}

fn post_text(store: &MemoryStore, body: &str) -> Response {
    call("POST")
        .h("content-type", "text/plain")
        .b(body.as_bytes())
        .send(store)
}

#[test]
fn create_is_idempotent_and_checks_config() {
    let s = MemoryStore::default();
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
    assert_eq!(bad.send(&MemoryStore::default()).status, 400);
    let none = MemoryStore::default();
    let r = call("PUT").send(&none);
    assert_eq!(
        (r.status, r.get("content-type")),
        (201, Some(DEFAULT_CONTENT_TYPE))
    );
}

#[test]
fn appends_and_reads_by_offset() {
    let s = MemoryStore::default();
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
fn etags_and_offset_now() {
    let s = MemoryStore::default();
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
    let j = MemoryStore::default();
    call("PUT")
        .h("content-type", "application/json")
        .b(b"[1]")
        .send(&j);
    assert_eq!(text(&call("GET").q("offset=now").send(&j)), "[]");
}

#[test]
fn json_mode_flattens_one_level() {
    let s = MemoryStore::default();
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
    let s = MemoryStore::default();
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

fn produce(s: &MemoryStore, epoch: &str, seq: &str, body: &str) -> Response {
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
    let s = MemoryStore::default();
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
fn closing_streams() {
    let s = MemoryStore::default();
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
    let p = MemoryStore::default();
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

fn produce_close(s: &MemoryStore, epoch: &str, seq: &str, body: &str) -> Response {
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
    let s = MemoryStore::default();
    call("PUT")
        .h("content-type", "text/plain")
        .h("stream-ttl", "2")
        .send(&s);
    assert_eq!(call("HEAD").send_at(&s, T0 + 1_500).status, 200);
    assert_eq!(
        call("GET").q("offset=now").send_at(&s, T0 + 1_500).status,
        200
    );
    assert_eq!(
        call("HEAD").send_at(&s, T0 + 3_000).status,
        200,
        "read renewed it"
    );
    assert_eq!(
        call("HEAD").send_at(&s, T0 + 3_600).status,
        404,
        "HEAD did not"
    );
    let at = MemoryStore::default();
    call("PUT")
        .h(
            "stream-expires-at",
            &format_rfc3339_ms(i64::try_from(T0).unwrap() + 1_000),
        )
        .send(&at);
    assert_eq!(call("GET").send_at(&at, T0 + 999).status, 200);
    assert_eq!(call("GET").send_at(&at, T0 + 1_000).status, 404);
}

#[test]
fn long_poll_waits_at_the_tail() {
    let s = MemoryStore::default();
    put_text(&s, "x");
    let lp = call("GET").q("offset=now&live=long-poll");
    let Outcome::Wait(poll) = lp.run_at(&s, T0).outcome else {
        panic!("should wait")
    };
    assert_eq!(poll.from, 1);
    post_text(&s, "y");
    let headers = BTreeMap::new();
    let req = Request {
        method: "GET",
        url: "",
        path: "",
        query: "",
        headers: &headers,
        body: &[],
    };
    let Outcome::Reply(r) = resume_long_poll(&s, &req, &poll, false, T0)
        .unwrap()
        .outcome
    else {
        panic!()
    };
    assert_eq!((r.status, text(&r)), (200, "y".to_owned()));
    assert!(r.get("stream-cursor").is_some());
    let Outcome::Reply(r) = resume_long_poll(
        &s,
        &req,
        &LongPoll {
            from: 2,
            cursor: None,
        },
        true,
        T0,
    )
    .unwrap()
    .outcome
    else {
        panic!()
    };
    assert_eq!(r.status, 204);
    assert_eq!(r.get("stream-up-to-date"), Some("true"));
}

#[test]
fn sse_pairs_data_with_control() {
    let s = MemoryStore::default();
    call("PUT")
        .h("content-type", "application/octet-stream")
        .b(&[0, 1, 2, 3])
        .send(&s);
    let Outcome::Sse(start) = call("GET").q("offset=-1&live=sse").run_at(&s, T0).outcome else {
        panic!()
    };
    assert!(start
        .headers
        .contains(&("stream-sse-data-encoding".into(), "base64".into())));
    let (step, _) = sse_step(&s, start.from, None, true, T0).unwrap();
    assert!(step
        .text
        .starts_with("event: data\ndata:AAECAw==\n\nevent: control\ndata:{"));
    assert!(step.at_tail && !step.done);
    call("POST").h("stream-closed", "true").send(&s);
    let (step, _) = sse_step(&s, step.next, None, false, T0).unwrap();
    assert!(step.done);
    assert!(step.text.contains("\"streamClosed\":true"));
    assert!(!step.text.contains("streamCursor"));
}

#[test]
fn forks_copy_and_count_references() {
    let src = MemoryStore::default();
    put_text(&src, "hello");
    post_text(&src, "world");
    let (snapshot, _) = acquire(
        &src,
        &AcquireRequest {
            offset: Some(1),
            sub_offset: 3,
            content_type: None,
        },
        T0,
    )
    .unwrap();
    let snapshot = snapshot.unwrap();
    assert_eq!(snapshot.tail, 2);
    assert_eq!(src.load_meta().unwrap().unwrap().ref_count, 1);
    let fork = MemoryStore::default();
    let req_call = call("PUT")
        .h("stream-forked-from", "/v1/stream/src")
        .h("stream-fork-offset", &off(1))
        .h("stream-fork-sub-offset", "3")
        .b(b"XY");
    let Outcome::Fork { source, request } = req_call.run_at(&fork, T0).outcome else {
        panic!()
    };
    assert_eq!((source.as_str(), request.sub_offset), ("/v1/stream/src", 3));
    let req = Request {
        method: "PUT",
        url: "u",
        path: "/v1/stream/f",
        query: "",
        headers: &req_call.headers,
        body: &req_call.body,
    };
    let done = finish_fork(&fork, &req, Ok(snapshot), T0).unwrap();
    let Outcome::Reply(r) = done.outcome else {
        panic!()
    };
    assert_eq!(r.status, 201);
    assert_eq!(text(&call("GET").send(&fork)), "helloworXY");
    assert_eq!(req_call.send(&fork).status, 200, "idempotent");
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
        assert!(acquire(&src, &bad, T0).unwrap().0.is_err(), "{bad:?}");
    }
    assert_eq!(src.load_meta().unwrap().unwrap().ref_count, 1);
    // Deleting the referenced source soft-deletes it; the last release removes it.
    assert_eq!(call("DELETE").send(&src).status, 204);
    assert_eq!(call("HEAD").send(&src).status, 410);
    assert_eq!(put_text(&src, "again").status, 409);
    let deleted = call("DELETE").run_at(&fork, T0);
    assert!(deleted.effects.contains(&Effect::Release {
        source: "/v1/stream/src".into()
    }));
    release(&src).unwrap();
    assert_eq!(call("HEAD").send(&src).status, 404);
}

#[test]
fn fork_header_rules() {
    let s = MemoryStore::default();
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
}
