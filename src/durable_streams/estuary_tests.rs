//! Estuaries over in-memory streams: links, copies that land once and in order, late joiners.

use super::estuary::{Copied, LinkRequest, Linked, Route};
use super::tests::{call, post_text, put_text, text, TestStream, World};
use crate::stream::{Budget, Message, SeqNum};
use futures::executor::block_on;

fn link(source: &str, since: u64, content_type: &str) -> LinkRequest {
    LinkRequest {
        source: source.to_owned(),
        since,
        content_type: content_type.to_owned(),
        ttl_ms: 60_000,
        max_sources: 2,
    }
}

fn messages(from: u64, bodies: &[&str]) -> Vec<Message> {
    bodies
        .iter()
        .zip(from..)
        .map(|(b, n)| Message::new(SeqNum::new(n).unwrap(), b.as_bytes().to_vec()))
        .collect()
}

fn read_all(stream: &TestStream) -> String {
    text(&call("GET").q("offset=-1").send(stream))
}

#[test]
fn a_copy_lands_once_in_order_from_the_subscribers_own_start() {
    let world = World::new();
    let session = world.stream("/v1/stream/p/alice");
    let linked = block_on(session.estuary_link(&link("/v1/stream/p/src", 3, "text/plain")))
        .unwrap()
        .unwrap();
    assert!(linked.is_new);
    // Source messages 1..=3 predate the subscription; a repeated and an overlapping copy add
    // nothing twice.
    let first =
        block_on(session.estuary_copy("/v1/stream/p/src", &messages(2, &["b", "c", "d", "e"])));
    assert_eq!(
        first.unwrap(),
        Copied::Through {
            copied: 5,
            appended: 2
        }
    );
    let again = block_on(session.estuary_copy("/v1/stream/p/src", &messages(4, &["d", "e", "f"])));
    assert_eq!(
        again.unwrap(),
        Copied::Through {
            copied: 6,
            appended: 1
        }
    );
    let stale = block_on(session.estuary_copy("/v1/stream/p/src", &messages(4, &["d"])));
    assert_eq!(
        stale.unwrap(),
        Copied::Through {
            copied: 6,
            appended: 0
        }
    );
    assert_eq!(read_all(&session), "def");
    // A second link of the same source keeps its positions; it refreshes the expiry.
    world.advance(1_000);
    let relinked = block_on(session.estuary_link(&link("/v1/stream/p/src", 9, "text/plain")))
        .unwrap()
        .unwrap();
    assert_eq!(
        relinked,
        Linked {
            is_new: false,
            expires_at: linked.expires_at + 1_000
        }
    );
    let later = block_on(session.estuary_copy("/v1/stream/p/src", &messages(7, &["g"])));
    assert_eq!(
        later.unwrap(),
        Copied::Through {
            copied: 7,
            appended: 1
        }
    );
    assert_eq!(read_all(&session), "defg");
}

#[test]
fn unlinked_sources_and_missing_estuaries_are_told_apart() {
    let world = World::new();
    let session = world.stream("/v1/stream/p/bob");
    let none = block_on(session.estuary_copy("/v1/stream/p/a", &messages(1, &["x"])));
    assert_eq!(none.unwrap(), Copied::NoEstuary);
    block_on(session.estuary_link(&link("/v1/stream/p/a", 0, "text/plain")))
        .unwrap()
        .unwrap();
    let other = block_on(session.estuary_copy("/v1/stream/p/b", &messages(1, &["x"])));
    assert_eq!(other.unwrap(), Copied::Unlinked);
    assert!(block_on(session.estuary_unlink("/v1/stream/p/a")).unwrap());
    let gone = block_on(session.estuary_copy("/v1/stream/p/a", &messages(1, &["x"])));
    assert_eq!(gone.unwrap(), Copied::Unlinked);
    assert_eq!(read_all(&session), "");
    // A plain stream at an estuary's path is not taken over.
    let plain = world.stream("/v1/stream/p/plain");
    assert_eq!(put_text(&plain, "mine").status, 201);
    let refused = block_on(plain.estuary_link(&link("/v1/stream/p/a", 0, "text/plain"))).unwrap();
    assert_eq!(refused.unwrap_err().status, 409);
    let copied = block_on(plain.estuary_copy("/v1/stream/p/a", &messages(1, &["x"])));
    assert_eq!(copied.unwrap(), Copied::NoEstuary);
}

#[test]
fn content_types_and_the_source_limit_are_checked() {
    let world = World::new();
    let session = world.stream("/v1/stream/p/carol");
    block_on(session.estuary_link(&link("/v1/stream/p/a", 0, "application/json")))
        .unwrap()
        .unwrap();
    let mismatch =
        block_on(session.estuary_link(&link("/v1/stream/p/b", 0, "text/plain"))).unwrap();
    assert_eq!(mismatch.unwrap_err().status, 409);
    block_on(session.estuary_link(&link(
        "/v1/stream/p/b",
        0,
        "application/json; charset=utf-8",
    )))
    .unwrap()
    .unwrap();
    let third =
        block_on(session.estuary_link(&link("/v1/stream/p/c", 0, "application/json"))).unwrap();
    assert_eq!(third.unwrap_err().status, 409);
    // JSON messages are copied as messages.
    let copied =
        block_on(session.estuary_copy("/v1/stream/p/a", &messages(1, &["{\"a\":1}", "[2]"])));
    assert_eq!(
        copied.unwrap(),
        Copied::Through {
            copied: 2,
            appended: 2
        }
    );
    assert_eq!(read_all(&session), "[{\"a\":1},[2]]");
}

#[test]
fn a_session_expires_and_subscribing_again_starts_a_new_one() {
    let world = World::new();
    let session = world.stream("/v1/stream/p/dave");
    block_on(session.estuary_link(&link("/v1/stream/p/a", 0, "text/plain")))
        .unwrap()
        .unwrap();
    block_on(session.estuary_copy("/v1/stream/p/a", &messages(1, &["x"]))).unwrap();
    world.advance(60_000);
    assert_eq!(call("HEAD").send(&session).status, 404);
    assert!(block_on(session.estuary()).unwrap().is_none());
    let fresh = block_on(session.estuary_link(&link("/v1/stream/p/a", 1, "text/plain")))
        .unwrap()
        .unwrap();
    assert!(fresh.is_new);
    assert_eq!(read_all(&session), "");
    // Appends by anyone else are a session stream's too.
    assert_eq!(post_text(&session, "y").status, 204);
    block_on(session.estuary_copy("/v1/stream/p/a", &messages(2, &["z"]))).unwrap();
    assert_eq!(read_all(&session), "yz");
    let budget = Budget {
        rows: 10,
        bytes: 1_000,
    };
    let read =
        block_on(session.read_for_fork(SeqNum::ROOT, SeqNum::new(2).unwrap(), budget)).unwrap();
    assert_eq!(read.len(), 2);
}

#[test]
fn routes() {
    let sub = Route::parse("POST", "/v1/estuary/subscribe/p/room/1").unwrap();
    assert_eq!(
        sub,
        Route::Subscribe {
            project: "p".into(),
            stream: "room/1".into()
        }
    );
    assert!(matches!(
        Route::parse("DELETE", "/v1/estuary/subscribe/p/s"),
        Ok(Route::Unsubscribe { .. })
    ));
    assert!(matches!(
        Route::parse("GET", "/v1/estuary/p/user-alice"),
        Ok(Route::Info { .. })
    ));
    assert!(matches!(
        Route::parse("DELETE", "/v1/estuary/p/a:b.c"),
        Ok(Route::Delete { .. })
    ));
    assert_eq!(
        Route::parse("GET", "/v1/estuary/p/bad id")
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        Route::parse("GET", "/v1/estuary/p/..").unwrap_err().status,
        400
    );
    assert_eq!(
        Route::parse("PUT", "/v1/estuary/p/x").unwrap_err().status,
        405
    );
    assert_eq!(
        Route::parse("GET", "/v1/estuary/subscribe/p")
            .unwrap_err()
            .status,
        404
    );
    assert_eq!(
        Route::parse("GET", "/v1/estuary/p").unwrap_err().status,
        404
    );
    assert_eq!(
        Route::parse("POST", "/v1/estuary/subscribe/__ds/x")
            .unwrap_err()
            .status,
        404
    );
}
