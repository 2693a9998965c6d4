//! A subscription as it is asked for (`PUT`): its kind, what it follows, its consumer and its
//! lease, validated; and the protocol's refusals (`{"error": {"code", "message"}}`).

use super::subscription_match::{valid_pattern, valid_stream_name};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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

    pub(super) fn fenced() -> SubError {
        SubError::new(409, "FENCED", "Wake generation is stale")
    }

    pub(super) fn invalid_offset(message: impl Into<String>) -> SubError {
        SubError::new(409, "INVALID_OFFSET", message)
    }
}

pub(super) fn bad(message: impl Into<String>) -> SubError {
    SubError::new(400, "INVALID_REQUEST", message)
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
