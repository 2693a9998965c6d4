//! Subscriptions (Durable Streams §6–7): a subscription follows streams (named, or matching a
//! pattern) and, when one has data past what it acknowledged, wakes its consumer: a webhook
//! (signed POST; the callback or a `{"done": true}` answer acknowledges) or a pull-wake worker
//! (a wake event appended to a wake stream; the worker claims a lease, acks and releases).
//!
//! Each wake has an id and a generation; only the current wake's callback, ack or release is
//! taken, so a replayed or stale one is fenced (`409 FENCED`). This module is the state and its
//! rules; the edge keeps the state in the subscription's object, delivers, and keeps the alarm.

use super::meta::offset_text;
use crate::stream::offset::ReadFrom;
use crate::stream::SeqNum;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::BTreeMap;

/// Default lease of a wake (a webhook's callback window, a pull-wake claim).
pub const DEFAULT_LEASE_TTL_MS: u64 = 30_000;
/// Streams one subscription may follow.
pub const MAX_STREAMS: usize = 1_000;

/// The kind of consumer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Webhook,
    PullWake,
}

/// A subscription as created (`PUT`): what an identical `PUT` confirms.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_stream: Option<String>,
    pub lease_ttl_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WebhookSpec {
    pub url: String,
}

/// A refusal, as the protocol's `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub extra: Value,
}

impl SubError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> SubError {
        SubError {
            status,
            code,
            message: message.into(),
            extra: Value::Null,
        }
    }

    pub fn body(&self) -> Value {
        // A claim refused for another holder names it, and says nothing else.
        let mut error = if self.code == "ALREADY_CLAIMED" {
            json!({ "code": self.code })
        } else {
            json!({ "code": self.code, "message": self.message })
        };
        if let (Value::Object(error), Value::Object(extra)) = (&mut error, &self.extra) {
            for (k, v) in extra {
                error.insert(k.clone(), v.clone());
            }
        }
        json!({ "error": error })
    }

    fn fenced() -> SubError {
        SubError::new(409, "FENCED", "Wake generation is stale")
    }

    fn invalid_offset(message: impl Into<String>) -> SubError {
        SubError::new(409, "INVALID_OFFSET", message)
    }
}

fn bad(message: impl Into<String>) -> SubError {
    SubError::new(400, "INVALID_REQUEST", message)
}

/// A stream path as subscriptions name it (relative to `/v1/stream/`): segments without `.`,
/// `..` or empties, none reserved.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 1024
        && name
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && s != "__ds")
}

/// Whether `pattern` is a valid glob: segments, `*` one whole segment, `**` (last) any rest.
pub fn valid_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 1024
        && pattern.split('/').all(|s| {
            !s.is_empty() && s != "." && s != ".." && (!s.contains('*') || s == "*" || s == "**")
        })
}

/// Whether stream `name` matches `pattern`: `*` is one whole segment, `**` zero or more.
pub fn matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let name: Vec<&str> = name.split('/').collect();
    glob(&pattern, &name)
}

fn glob(pattern: &[&str], name: &[&str]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        // Zero segments, or one more and `**` again (patterns are at most 1 KB: shallow).
        Some((&"**", rest)) => {
            glob(rest, name)
                || name
                    .split_first()
                    .is_some_and(|(_, names)| glob(pattern, names))
        }
        Some((part, rest)) => match name.split_first() {
            Some((segment, names)) if *part == "*" || part == segment => glob(rest, names),
            _ => false,
        },
    }
}

/// The projects (first path segments) a subscription names literally: its pattern's, unless
/// that is a wildcard, and its explicit streams'. A project with tokens is reached only by a
/// subscription created with one of its tokens, so a wildcard does not reach it.
pub fn named_projects<'a>(
    pattern: Option<&'a str>,
    streams: &'a [String],
    wake_stream: Option<&'a str>,
) -> Vec<&'a str> {
    let mut projects: Vec<&str> = pattern
        .and_then(|p| p.split('/').next())
        .filter(|first| !first.contains('*'))
        .into_iter()
        .chain(streams.iter().filter_map(|s| s.split('/').next()))
        .chain(wake_stream.and_then(|w| w.split('/').next()))
        .collect();
    projects.sort_unstable();
    projects.dedup();
    projects
}

/// Whether a subscription with `pattern` may follow `stream` of a project with tokens: only
/// when the pattern names that project literally (it was authorized for it).
pub fn reaches_guarded(pattern: &str, stream: &str) -> bool {
    pattern.split('/').next() == stream.split('/').next()
        && !pattern.split('/').next().unwrap_or("*").contains('*')
}

/// The body of a `PUT`, validated into a [`Spec`]. `check_url` vets a webhook URL.
pub fn parse_spec(
    body: &[u8],
    check_url: impl Fn(&str) -> Result<(), String>,
) -> Result<Spec, SubError> {
    #[derive(Deserialize)]
    struct Body {
        #[serde(rename = "type")]
        kind: Option<Kind>,
        pattern: Option<String>,
        #[serde(default)]
        streams: Vec<String>,
        webhook: Option<WebhookSpec>,
        wake_stream: Option<String>,
        lease_ttl_ms: Option<u64>,
        description: Option<String>,
    }
    let body: Body =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid subscription: {e}")))?;
    let kind = body
        .kind
        .ok_or_else(|| bad("type must be webhook or pull-wake"))?;
    if body.pattern.is_none() && body.streams.is_empty() {
        return Err(bad("a subscription needs a pattern or streams"));
    }
    if let Some(pattern) = &body.pattern {
        if !valid_pattern(pattern) {
            return Err(bad(format!("invalid pattern {pattern:?}")));
        }
    }
    if let Some(name) = body.streams.iter().find(|s| !valid_stream_name(s)) {
        return Err(bad(format!("invalid stream {name:?}")));
    }
    if body.streams.len() > MAX_STREAMS {
        return Err(bad(format!("at most {MAX_STREAMS} streams")));
    }
    let lease_ttl_ms = body.lease_ttl_ms.unwrap_or(DEFAULT_LEASE_TTL_MS);
    if !(1_000..=600_000).contains(&lease_ttl_ms) {
        return Err(bad("lease_ttl_ms must be an integer from 1000 to 600000"));
    }
    match kind {
        Kind::Webhook => {
            let webhook = body
                .webhook
                .as_ref()
                .ok_or_else(|| bad("a webhook subscription needs webhook.url"))?;
            if let Err(why) = check_url(&webhook.url) {
                return Err(SubError::new(400, "WEBHOOK_URL_REJECTED", why));
            }
        }
        Kind::PullWake => match &body.wake_stream {
            Some(wake) if valid_stream_name(wake) => {}
            _ => return Err(bad("a pull-wake subscription needs a wake_stream")),
        },
    }
    let mut streams = body.streams;
    streams.sort();
    streams.dedup();
    Ok(Spec {
        kind,
        pattern: body.pattern,
        streams,
        webhook: if kind == Kind::Webhook {
            body.webhook
        } else {
            None
        },
        wake_stream: if kind == Kind::PullWake {
            body.wake_stream
        } else {
            None
        },
        lease_ttl_ms,
        description: body.description,
    })
}

/// How a subscription follows a stream.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Explicit,
    /// Matched the pattern.
    Glob,
}

/// A followed stream: its tail as last told and what the consumer acknowledged.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Followed {
    pub link_type: LinkType,
    pub acked: u64,
    pub tail: u64,
}

/// The wake in progress.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Wake {
    pub wake_id: String,
    pub generation: u64,
    /// The callback (webhook) or claim (pull-wake) token.
    pub token: String,
    /// The pending streams and their tails when it began.
    pub snapshot: BTreeMap<String, u64>,
    /// Pull-wake: the worker holding the claim.
    pub holder: Option<String>,
    /// Until when the consumer holds it (a webhook's callback window, a claim).
    pub lease_until_ms: Option<u64>,
    /// Webhook: delivered (answered 2xx).
    pub delivered: bool,
    /// Webhook: failed deliveries, and when the next is due.
    pub attempts: u32,
    pub retry_at_ms: Option<u64>,
    /// Pull-wake: the wake event is in the wake stream.
    pub announced: bool,
}

/// A subscription and its state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    pub spec: Spec,
    pub created_ms: u64,
    pub streams: BTreeMap<String, Followed>,
    pub generation: u64,
    pub wake: Option<Wake>,
    /// Signs the wakes' tokens (never shown).
    pub secret: String,
}

/// Fresh random ids and tokens (the edge draws them).
pub trait Fresh {
    fn token(&mut self) -> String;
}

/// The body of a callback, an ack or a release.
#[derive(Deserialize, Debug)]
pub struct AckBody {
    pub wake_id: String,
    pub generation: u64,
    #[serde(default)]
    pub acks: Vec<Ack>,
    #[serde(default)]
    pub done: bool,
}

#[derive(Deserialize, Debug)]
pub struct Ack {
    pub stream: String,
    pub offset: String,
}

/// Backoff of failed webhook deliveries (`attempts` ≥ 1 failures): 1 s doubling to 60 s.
pub fn retry_delay_ms(attempts: u32) -> u64 {
    1_000u64
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(6))
        .min(60_000)
}

impl Subscription {
    pub fn new(id: &str, spec: Spec, now_ms: u64, fresh: &mut dyn Fresh) -> Subscription {
        let streams = spec
            .streams
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    Followed {
                        link_type: LinkType::Explicit,
                        acked: 0,
                        tail: 0,
                    },
                )
            })
            .collect();
        Subscription {
            id: id.to_owned(),
            spec,
            created_ms: now_ms,
            streams,
            generation: 0,
            wake: None,
            secret: fresh.token(),
        }
    }

    /// The token of generation `generation`: `<generation>.<MAC>`, so a stale one is known as
    /// this subscription's (and fenced) without keeping it.
    fn token_for(&self, generation: u64) -> String {
        use base64::Engine;
        let mac = self
            .mac(generation)
            .map(|m| m.finalize().into_bytes().to_vec())
            .unwrap_or_default();
        let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(mac.get(..18).unwrap_or_default());
        format!("{generation}.{text}")
    }

    fn mac(&self, generation: u64) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.as_bytes()).ok()?;
        mac.update(format!("{}:{generation}", self.id).as_bytes());
        Some(mac)
    }

    /// The generation a token of this subscription was made for (`None`: not one of its tokens).
    fn token_generation(&self, token: &str) -> Option<u64> {
        use base64::Engine;
        let (generation, text) = token.split_once('.')?;
        let generation: u64 = generation.parse().ok()?;
        let given = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        if given.len() != 18 || self.secret.is_empty() {
            return None;
        }
        self.mac(generation)?.verify_truncated_left(&given).ok()?;
        Some(generation)
    }

    /// Follows `name` (`acked` where the consumer starts); whether it is new.
    pub fn follow(
        &mut self,
        name: &str,
        link_type: LinkType,
        acked: u64,
    ) -> Result<bool, SubError> {
        // A wake stream that its own pattern matches would wake its subscription forever.
        if self.spec.wake_stream.as_deref() == Some(name) {
            return Ok(false);
        }
        if let Some(followed) = self.streams.get_mut(name) {
            if link_type == LinkType::Explicit {
                followed.link_type = LinkType::Explicit;
            }
            return Ok(false);
        }
        if self.streams.len() >= MAX_STREAMS {
            return Err(bad(format!(
                "a subscription follows at most {MAX_STREAMS} streams"
            )));
        }
        self.streams.insert(
            name.to_owned(),
            Followed {
                link_type,
                acked,
                tail: acked,
            },
        );
        Ok(true)
    }

    /// Stops following `name`; whether it did.
    pub fn unfollow(&mut self, name: &str) -> bool {
        self.streams.remove(name).is_some()
    }

    /// A stream's new tail (it only moves forward; a stream created again starts over).
    pub fn on_tail(&mut self, name: &str, tail: u64) -> bool {
        match self.streams.get_mut(name) {
            Some(followed) if tail != followed.tail => {
                if tail < followed.acked {
                    followed.acked = 0;
                }
                followed.tail = tail;
                true
            }
            _ => false,
        }
    }

    /// Whether any stream has data past its ack.
    pub fn pending(&self) -> bool {
        self.streams.values().any(|f| f.tail > f.acked)
    }

    /// Starts a wake when there is data and none is in progress; whether it did.
    pub fn maybe_wake(&mut self, fresh: &mut dyn Fresh) -> bool {
        if self.wake.is_some() || !self.pending() {
            return false;
        }
        self.generation += 1;
        let snapshot = self
            .streams
            .iter()
            .filter(|(_, f)| f.tail > f.acked)
            .map(|(name, f)| (name.clone(), f.tail))
            .collect();
        self.wake = Some(Wake {
            wake_id: format!("w_{}", fresh.token()),
            generation: self.generation,
            token: self.token_for(self.generation),
            snapshot,
            holder: None,
            lease_until_ms: None,
            delivered: false,
            attempts: 0,
            retry_at_ms: None,
            announced: false,
        });
        true
    }

    /// The streams as the API shows them.
    pub fn streams_json(&self) -> Vec<Value> {
        self.streams
            .iter()
            .map(|(name, f)| stream_json(name, f))
            .collect()
    }

    /// Every link with its tail and whether data waits, as a notification or a claim shows it.
    pub fn wake_streams_json(&self) -> Vec<Value> {
        self.streams
            .iter()
            .map(|(name, f)| {
                let mut info = stream_json(name, f);
                if let Value::Object(map) = &mut info {
                    map.insert("tail_offset".into(), json!(offset(f.tail)));
                    map.insert("has_pending".into(), json!(f.tail > f.acked));
                }
                info
            })
            .collect()
    }

    /// The subscription as `PUT` and `GET` answer it (`jwks_url` and `kid` for webhooks).
    pub fn to_json(&self, signing: Option<(&str, &str)>) -> Value {
        let failing = self.wake.as_ref().is_some_and(|w| w.attempts > 0);
        let created = i64::try_from(self.created_ms).unwrap_or(i64::MAX);
        let mut out = json!({
            "id": self.id,
            "subscription_id": self.id,
            "type": self.spec.kind,
            "streams": self.streams_json(),
            "lease_ttl_ms": self.spec.lease_ttl_ms,
            "created_at": super::headers::format_rfc3339_ms(created),
            "status": if failing { "failed" } else { "active" },
            "generation": self.generation,
        });
        let Value::Object(map) = &mut out else {
            return out;
        };
        if let Some(pattern) = &self.spec.pattern {
            map.insert("pattern".into(), json!(pattern));
        }
        if let Some(description) = &self.spec.description {
            map.insert("description".into(), json!(description));
        }
        if let Some(wake) = &self.spec.wake_stream {
            map.insert("wake_stream".into(), json!(wake));
        }
        if let (Some(webhook), Some((kid, jwks_url))) = (&self.spec.webhook, signing) {
            map.insert(
                "webhook".into(),
                json!({
                    "url": webhook.url,
                    "signing": { "alg": "ed25519", "kid": kid, "jwks_url": jwks_url },
                }),
            );
        }
        out
    }

    /// The webhook notification of the current wake.
    pub fn notification(&self, callback_url: &str) -> Option<Value> {
        let wake = self.wake.as_ref()?;
        Some(json!({
            "subscription_id": self.id,
            "wake_id": wake.wake_id,
            "generation": wake.generation,
            "callback_url": callback_url,
            "callback_token": wake.token,
            "streams": self.wake_streams_json(),
        }))
    }

    /// The wake event a pull-wake subscription appends to its wake stream.
    pub fn wake_event(&self, now_ms: u64) -> Option<Value> {
        let wake = self.wake.as_ref()?;
        Some(json!({
            "type": "wake",
            "subscription_id": self.id,
            "stream": wake.snapshot.keys().next(),
            "wake_id": wake.wake_id,
            "generation": wake.generation,
            "ts": now_ms,
        }))
    }

    /// A webhook delivery answered 2xx (`done`: its answer acknowledged the whole wake).
    pub fn delivered(&mut self, done: bool, now_ms: u64) {
        let lease = self.spec.lease_ttl_ms;
        let Some(wake) = self.wake.as_mut() else {
            return;
        };
        wake.delivered = true;
        wake.attempts = 0;
        wake.retry_at_ms = None;
        wake.lease_until_ms = Some(now_ms.saturating_add(lease));
        if done {
            let snapshot = std::mem::take(&mut wake.snapshot);
            for (name, tail) in snapshot {
                if let Some(f) = self.streams.get_mut(&name) {
                    f.acked = f.acked.max(tail.min(f.tail));
                }
            }
            self.wake = None;
        }
    }

    /// A webhook delivery failed: tried again after a back-off.
    pub fn delivery_failed(&mut self, now_ms: u64) {
        if let Some(wake) = self.wake.as_mut() {
            wake.attempts = wake.attempts.saturating_add(1);
            wake.retry_at_ms = Some(now_ms.saturating_add(retry_delay_ms(wake.attempts)));
        }
    }

    /// Checks a callback's, ack's or release's token (`401`), then that it names the current
    /// wake (`409 FENCED`).
    fn current(&self, token: Option<&str>, wake_id: &str, generation: u64) -> Result<(), SubError> {
        let invalid = || SubError::new(401, "TOKEN_INVALID", "Missing or invalid token");
        let minted = token
            .and_then(|t| self.token_generation(t))
            .ok_or_else(invalid)?;
        match &self.wake {
            Some(wake)
                if wake.generation == minted
                    && wake.generation == generation
                    && wake.wake_id == wake_id =>
            {
                Ok(())
            }
            _ => Err(SubError::fenced()),
        }
    }

    /// A webhook's callback or a pull-wake worker's ack: moves the acks; `done` ends the wake.
    /// Answers whether another wake follows (`next_wake`).
    pub fn ack(
        &mut self,
        token: Option<&str>,
        body: &AckBody,
        now_ms: u64,
    ) -> Result<bool, SubError> {
        self.expire(now_ms);
        self.current(token, &body.wake_id, body.generation)?;
        let mut moves = Vec::new();
        for ack in &body.acks {
            let Some(followed) = self.streams.get(&ack.stream) else {
                return Err(SubError::invalid_offset(format!(
                    "the subscription does not follow {}",
                    ack.stream
                )));
            };
            let offset = match crate::stream::offset::parse_offset(&ack.offset) {
                Ok(ReadFrom::At(offset)) => offset.0.get(),
                _ => {
                    return Err(SubError::invalid_offset(format!(
                        "invalid offset {:?}",
                        ack.offset
                    )))
                }
            };
            if offset > followed.tail || offset < followed.acked {
                return Err(SubError::invalid_offset(format!(
                    "offset {} is past the stream's tail or before what was acknowledged",
                    ack.offset
                )));
            }
            moves.push((ack.stream.clone(), offset));
        }
        for (name, offset) in moves {
            if let Some(f) = self.streams.get_mut(&name) {
                f.acked = f.acked.max(offset);
            }
        }
        if body.done {
            self.wake = None;
            Ok(self.pending())
        } else {
            let lease = self.spec.lease_ttl_ms;
            if let Some(wake) = self.wake.as_mut() {
                wake.lease_until_ms = Some(now_ms.saturating_add(lease));
            }
            Ok(false)
        }
    }

    /// A pull-wake worker claims the current wake (starting one if data waits).
    pub fn claim(
        &mut self,
        worker: &str,
        now_ms: u64,
        fresh: &mut dyn Fresh,
    ) -> Result<Value, SubError> {
        if self.spec.kind != Kind::PullWake {
            return Err(bad("Subscription is not pull-wake"));
        }
        self.expire(now_ms);
        self.maybe_wake(fresh);
        let lease = self.spec.lease_ttl_ms;
        let Some(wake) = self.wake.as_mut() else {
            return Err(SubError::new(
                409,
                "NO_PENDING_WORK",
                "Subscription has no pending work",
            ));
        };
        let held = wake.lease_until_ms.is_some_and(|until| until > now_ms);
        match &wake.holder {
            Some(holder) if held && holder != worker => {
                let mut refusal =
                    SubError::new(409, "ALREADY_CLAIMED", "another worker holds this wake");
                refusal.extra = json!({ "current_holder": holder, "generation": wake.generation });
                return Err(refusal);
            }
            Some(holder) if held && holder == worker => {}
            _ => wake.holder = Some(worker.to_owned()),
        }
        wake.lease_until_ms = Some(now_ms.saturating_add(lease));
        let wake = wake.clone();
        Ok(json!({
            "subscription_id": self.id,
            "wake_id": wake.wake_id,
            "generation": wake.generation,
            "token": wake.token,
            "lease_ttl_ms": lease,
            "streams": self.wake_streams_json(),
        }))
    }

    /// A pull-wake worker lets its claim go without acknowledging: the wake ends, and the next
    /// begins while data waits.
    pub fn release(
        &mut self,
        token: Option<&str>,
        wake_id: &str,
        generation: u64,
        now_ms: u64,
    ) -> Result<(), SubError> {
        self.expire(now_ms);
        self.current(token, wake_id, generation)?;
        self.wake = None;
        Ok(())
    }

    /// At `now_ms`: a lease that ran out ends its wake (the next begins, a new generation).
    pub fn expire(&mut self, now_ms: u64) -> bool {
        let expired = self
            .wake
            .as_ref()
            .is_some_and(|w| w.lease_until_ms.is_some_and(|until| until <= now_ms));
        if expired {
            self.wake = None;
        }
        expired
    }

    /// When the alarm should run next: a delivery retry or a lease's end.
    pub fn due_ms(&self) -> Option<u64> {
        let wake = self.wake.as_ref()?;
        match (wake.retry_at_ms, wake.lease_until_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn offset(n: u64) -> String {
    offset_text(SeqNum::new(n).unwrap_or(SeqNum::ROOT))
}

/// A link as `GET` shows it.
fn stream_json(name: &str, f: &Followed) -> Value {
    json!({ "path": name, "link_type": f.link_type, "acked_offset": offset(f.acked) })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            matches("a/**/z", "a/z") && matches("a/**/z", "a/b/c/z") && !matches("a/**/z", "a/b")
        );
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
            refused(r#"{"type":"webhook","pattern":"a/*","webhook":{"url":"http://10.0.0.1/h"}}"#)
                .code,
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
}
