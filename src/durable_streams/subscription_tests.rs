//! Subscriptions' rules: patterns, specs, wakes, fencing, leases.
use super::subscription::*;
use super::subscription_match::*;
use super::subscription_spec::DEFAULT_LEASE_TTL_MS;

struct Counter(u32);
impl Fresh for Counter {
    fn token(&mut self) -> String {
        self.0 += 1;
        format!("t{}", self.0)
    }
}

fn spec(kind: &str) -> Spec {
    let body = match kind {
        "webhook" => {
            r#"{"type":"webhook","pattern":"events/*","webhook":{"url":"https://example.com/h"},"lease_ttl_ms":1000}"#
        }
        _ => {
            r#"{"type":"pull-wake","pattern":"events/*","wake_stream":"wake/pool","lease_ttl_ms":1000}"#
        }
    };
    parse_spec(body.as_bytes(), |_| Ok(())).unwrap()
}

#[test]
fn patterns() {
    assert!(matches("events/*", "events/a"));
    assert!(!matches("events/*", "events/a/b"));
    assert!(!matches("events/*", "events"));
    assert!(matches("events/**", "events/a/b"));
    assert!(matches("events/**", "events"));
    assert!(matches("**/logs", "a/b/logs") && matches("**/logs", "logs"));
    assert!(matches("a/**/z", "a/z") && matches("a/**/z", "a/b/c/z") && !matches("a/**/z", "a/b"));
    assert!(valid_pattern("a/**/b"));
    assert!(matches("a/*/c", "a/b/c"));
    assert!(!matches("a/*/c", "a/b/d"));
    assert!(valid_pattern("events/*") && valid_pattern("**") && valid_pattern("a/b"));
    assert!(!valid_pattern("a/b*") && !valid_pattern("") && !valid_pattern("a//b"));
}

#[test]
fn projects_named_by_a_subscription() {
    let streams = vec!["b/x".to_owned(), "a/y".to_owned(), "b/z".to_owned()];
    assert_eq!(
        named_projects(Some("c/*"), &streams, None),
        vec!["a", "b", "c"]
    );
    assert_eq!(named_projects(Some("**"), &[], Some("w/x")), vec!["w"]);
    assert_eq!(
        named_projects(Some("*/logs"), &streams[..1], None),
        vec!["b"]
    );
    assert!(reaches_guarded("app/*", "app/orders"));
    assert!(!reaches_guarded("*/orders", "app/orders"));
    assert!(!reaches_guarded("other/*", "app/orders"));
}

#[test]
fn specs_are_validated() {
    let refused = |body: &str| {
        parse_spec(body.as_bytes(), |u| {
            if u.contains("10.") {
                Err("private".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err()
    };
    assert_eq!(
        refused(r#"{"type":"webhook","pattern":"a/*","webhook":{"url":"http://10.0.0.1/h"}}"#).code,
        "WEBHOOK_URL_REJECTED"
    );
    assert_eq!(refused(r#"{"type":"webhook","pattern":"a/*"}"#).status, 400);
    assert_eq!(
        refused(r#"{"type":"pull-wake","pattern":"a/*"}"#).status,
        400
    );
    assert_eq!(
        refused(r#"{"type":"webhook","webhook":{"url":"https://x/"}}"#).status,
        400
    );
    assert_eq!(refused(r#"{"type":"other","pattern":"a"}"#).status, 400);
    assert_eq!(
        refused(r#"{"type":"webhook","pattern":"a/b*","webhook":{"url":"https://x/"}}"#).status,
        400
    );
    let ok = parse_spec(
        br#"{"type":"webhook","streams":["m/b","m/a","m/a"],"webhook":{"url":"https://x/"}}"#,
        |_| Ok(()),
    )
    .unwrap();
    assert_eq!(ok.streams, vec!["m/a", "m/b"]);
    assert_eq!(ok.lease_ttl_ms, DEFAULT_LEASE_TTL_MS);
}

#[test]
fn a_webhook_wake_is_acknowledged_once_and_fences_replays() {
    let mut fresh = Counter(0);
    let mut sub = Subscription::new("s", spec("webhook"), 0, &mut Counter(100));
    assert!(sub.follow("events/a", LinkType::Glob, 0).unwrap());
    assert!(!sub.maybe_wake(&mut fresh), "nothing pending");
    assert!(sub.on_tail("events/a", 2));
    assert!(sub.maybe_wake(&mut fresh));
    assert!(!sub.maybe_wake(&mut fresh), "one wake at a time");
    let note = sub.notification("https://h/cb").unwrap();
    assert_eq!(note["generation"], 1);
    assert_eq!(
        note["streams"][0]["tail_offset"],
        "0000000000000000_0000000000000002"
    );
    assert_eq!(note["streams"][0]["link_type"], "glob");
    assert_eq!(note["streams"][0]["has_pending"], true);
    let wake = sub.wake.clone().unwrap();
    sub.delivered(false, 10);
    assert_eq!(sub.due_ms(), Some(1_010));
    let body = AckBody {
        wake_id: wake.wake_id.clone(),
        generation: 1,
        acks: vec![Ack {
            stream: "events/a".into(),
            offset: "0000000000000000_0000000000000002".into(),
        }],
        done: true,
    };
    assert_eq!(sub.ack(Some("wrong"), &body, 20).unwrap_err().status, 401);
    assert_eq!(sub.ack(Some(&wake.token), &body, 20), Ok(false));
    assert_eq!(
        sub.ack(Some(&wake.token), &body, 20).unwrap_err().code,
        "FENCED"
    );
    assert!(!sub.pending());
    // New data: a new generation.
    sub.on_tail("events/a", 3);
    assert!(sub.maybe_wake(&mut fresh));
    assert_eq!(sub.wake.as_ref().unwrap().generation, 2);
    // Answered {"done": true}: the snapshot is acknowledged.
    sub.delivered(true, 30);
    assert!(sub.wake.is_none() && !sub.pending());
}

#[test]
fn failed_deliveries_back_off_and_expired_leases_wake_again() {
    let mut fresh = Counter(0);
    let mut sub = Subscription::new("s", spec("webhook"), 0, &mut Counter(100));
    sub.follow("events/a", LinkType::Glob, 0).unwrap();
    sub.on_tail("events/a", 1);
    sub.maybe_wake(&mut fresh);
    sub.delivery_failed(100);
    assert_eq!(sub.due_ms(), Some(1_100));
    assert_eq!(sub.to_json(None)["status"], "failed");
    sub.delivery_failed(1_100);
    assert_eq!(sub.due_ms(), Some(3_100));
    sub.delivery_failed(2_100);
    assert_eq!(sub.due_ms(), Some(6_100));
    sub.delivered(false, 6_100);
    assert!(!sub.expire(7_000));
    assert!(sub.expire(7_100));
    assert!(sub.maybe_wake(&mut fresh));
    assert_eq!(sub.wake.as_ref().unwrap().generation, 2);
}

#[test]
fn pull_wake_claims_are_leases() {
    let mut fresh = Counter(0);
    let mut sub = Subscription::new("p", spec("pull"), 0, &mut Counter(100));
    sub.follow("events/x", LinkType::Glob, 0).unwrap();
    assert_eq!(
        sub.claim("w1", 0, &mut fresh).unwrap_err().code,
        "NO_PENDING_WORK"
    );
    sub.on_tail("events/x", 1);
    assert!(sub.maybe_wake(&mut fresh));
    assert_eq!(sub.wake_event(5).unwrap()["subscription_id"], "p");
    let claimed = sub.claim("w1", 10, &mut fresh).unwrap();
    let busy = sub.claim("w2", 20, &mut fresh).unwrap_err();
    assert_eq!(busy.code, "ALREADY_CLAIMED");
    assert_eq!(busy.body()["error"]["current_holder"], "w1");
    assert_eq!(busy.body()["error"]["generation"], 1);
    let token = claimed["token"].as_str().unwrap();
    let body = AckBody {
        wake_id: claimed["wake_id"].as_str().unwrap().into(),
        generation: 1,
        acks: vec![Ack {
            stream: "events/x".into(),
            offset: "0000000000000000_0000000000000001".into(),
        }],
        done: true,
    };
    assert_eq!(sub.ack(Some(token), &body, 30), Ok(false));
    sub.on_tail("events/x", 2);
    let again = sub.claim("w1", 40, &mut fresh).unwrap();
    assert_eq!(again["generation"], 2);
    let token = again["token"].as_str().unwrap().to_owned();
    let wake_id = again["wake_id"].as_str().unwrap().to_owned();
    assert_eq!(
        sub.release(Some(&token), &wake_id, 1, 45).unwrap_err().code,
        "FENCED"
    );
    assert_eq!(sub.release(Some(&token), &wake_id, 2, 45), Ok(()));
    // Released unacknowledged: the data still waits, another worker claims a new wake.
    let third = sub.claim("w2", 50, &mut fresh).unwrap();
    assert_eq!(third["generation"], 3);
    // A claim whose lease ran out ends its wake: the next worker claims the next one.
    assert_eq!(sub.claim("w3", 2_000, &mut fresh).unwrap()["generation"], 4);
    assert!(busy.body()["error"].get("message").is_none());
    // The fenced worker's token is still its own: stale, not invalid.
    let stale = sub.ack(Some(&token), &body, 2_100).unwrap_err();
    assert_eq!((stale.status, stale.code), (409, "FENCED"));
    // A token of another subscription (another secret) is invalid.
    let other = Subscription::new("p", spec("pull"), 0, &mut Counter(555));
    let forged = other.token_for(4);
    assert_eq!(
        sub.ack(Some(&forged), &body, 2_100).unwrap_err().status,
        401
    );
    assert_eq!(
        sub.ack(None, &body, 2_100).unwrap_err().code,
        "TOKEN_INVALID"
    );
}
