//! The Durable Streams engine end to end, over in-memory stores: a short session of
//! requests with arbitrary methods, queries, headers and bodies against two streams (so
//! forks have a source), with long-polls resumed and event streams pumped. Never panics,
//! never hits a storage error (which here can only mean an engine bug), answers with valid
//! statuses, and every `Stream-Next-Offset` is an offset the engine itself accepts.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use livestore_sync_rs::durable_streams::engine::{
    acquire, expire, finish_fork, handle, release, resume_long_poll, sse_step, Effect, Handled,
    Outcome, Request, Response,
};
use livestore_sync_rs::durable_streams::store::MemoryStore;
use livestore_sync_rs::stream::offset::{parse_offset, ReadFrom};
use std::collections::BTreeMap;

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

fuzz_target!(|data: &[u8]| {
    let stores = [MemoryStore::default(), MemoryStore::default()];
    let mut now_ms: u64 = 1_728_432_000_000;
    for request in common::parts(data).take(16) {
        let Some((&op, rest)) = request.split_first() else {
            continue;
        };
        now_ms += u64::from(op >> 4) * 997;
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
        let path = PATHS[target];
        let url = format!("http://localhost{path}");
        let req = Request {
            method,
            url: &url,
            path,
            query,
            headers: &headers,
            body,
        };
        let store = &stores[target];
        let other = &stores[1 - target];
        let handled = ok(handle(store, &req, now_ms));
        serve(handled, store, other, PATHS[1 - target], &req, now_ms);
        if op & 0x80 != 0 {
            let (_next, effects) = ok(expire(store, now_ms));
            apply(&effects, other, PATHS[1 - target]);
        }
    }
});

/// Carries an outcome through, as the edge would.
fn serve(
    handled: Handled,
    store: &MemoryStore,
    other: &MemoryStore,
    other_path: &str,
    req: &Request,
    now_ms: u64,
) {
    apply(&handled.effects, other, other_path);
    match handled.outcome {
        Outcome::Reply(response) => check(&response),
        Outcome::Fork { source, request } => {
            let answer = if source == other_path {
                let (answer, effects) = ok(acquire(other, &request, now_ms));
                apply(&effects, store, "");
                answer
            } else {
                Err(Response::new(404))
            };
            let finished = ok(finish_fork(store, req, answer, now_ms));
            // A fork's own outcome is always a reply.
            apply(&finished.effects, other, other_path);
            if let Outcome::Reply(response) = finished.outcome {
                check(&response);
            }
        }
        Outcome::Wait(poll) => {
            let resumed = ok(resume_long_poll(store, req, &poll, true, now_ms));
            apply(&resumed.effects, other, other_path);
            if let Outcome::Reply(response) = resumed.outcome {
                check(&response);
            }
        }
        Outcome::Sse(start) => {
            let mut from = start.from;
            for round in 0..3 {
                let (step, effects) = ok(sse_step(
                    store,
                    from,
                    start.cursor.as_deref(),
                    round == 0,
                    now_ms,
                ));
                apply(&effects, other, other_path);
                assert!(step.next >= from, "SSE went backwards");
                from = step.next;
                if step.done {
                    break;
                }
            }
        }
    }
}

fn apply(effects: &[Effect], other: &MemoryStore, other_path: &str) {
    for effect in effects {
        if let Effect::Release { source } = effect {
            if source == other_path {
                ok(release(other));
            }
        }
    }
}

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
