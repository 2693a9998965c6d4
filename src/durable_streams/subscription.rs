//! Subscriptions (Durable Streams §6–7): a subscription follows streams (named, or matching a
//! pattern) and, when one has data past what it acknowledged, wakes its consumer: a webhook
//! (signed POST; the callback or a `{"done": true}` answer acknowledges) or a pull-wake worker
//! (a wake event appended to a wake stream; the worker claims a lease, acks and releases).
//!
//! Each wake has an id and a generation; only the current wake's callback, ack or release is
//! taken, so a replayed or stale one is fenced (`409 FENCED`). This module is the state and its
//! rules; the edge keeps the state in the subscription's object, delivers, and keeps the alarm.

use super::meta::offset_text;
use super::subscription_spec::bad;
pub use super::subscription_spec::{parse_spec, Kind, Spec, SubError, WebhookSpec, MAX_STREAMS};
use crate::stream::offset::ReadFrom;
use crate::stream::SeqNum;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::BTreeMap;

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
    pub(super) fn token_for(&self, generation: u64) -> String {
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
