//! What the protocol needs from the platform a stream lives on: time, timers, the other streams'
//! objects (a fork's source) and the object's alarm. The Cloudflare edge implements it with
//! Durable Object calls; native tests with streams in memory.

use super::http::Response;
use crate::stream::{Budget, Message, SeqNum, StorageError};
use serde::{Deserialize, Serialize};

/// Settings of a stream's behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// How long a long-poll waits at the tail.
    pub long_poll_ms: u64,
    /// How long an SSE response lasts before the client reconnects from its offset.
    pub sse_recycle_ms: u64,
    /// How long an idle producer's fencing state is kept.
    pub producer_ttl_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            long_poll_ms: 20_000,
            sse_recycle_ms: 60_000,
            producer_ttl_ms: 7 * 24 * 3_600 * 1_000,
        }
    }
}

/// What a fork asks of its source.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AcquireRequest {
    /// The anchor; `None` for the source's current tail.
    pub offset: Option<u64>,
    pub sub_offset: u64,
    /// The fork's normalized content type, when it names one.
    pub content_type: Option<String>,
}

/// What a source tells a new fork: its configuration and where the fork branches off. Nothing is
/// copied: the fork reads what it inherits through the source.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ForkPoint {
    pub content_type: String,
    pub ttl_seconds: Option<u64>,
    pub expires_at_ms: Option<i64>,
    /// The anchor offset the fork was taken at.
    pub offset: u64,
    /// The last inherited position (the anchor plus any sub-offset messages, or the message
    /// cut by a byte sub-offset).
    pub inherited: u64,
    /// Bytes of the last inherited message that belong to the fork.
    pub cut: Option<u64>,
}

/// Time, for live reads.
#[allow(async_fn_in_trait)]
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Resolves after `ms`.
    async fn sleep(&self, ms: u64);
}

/// The platform under a stream.
#[allow(async_fn_in_trait)]
pub trait Platform: Clock {
    /// Asks the stream at `source` for a fork point (counting a reference to it); `Ok(Err)` is
    /// the response the fork answers with.
    async fn acquire(
        &self,
        source: &str,
        request: &AcquireRequest,
    ) -> Result<Result<ForkPoint, Response>, StorageError>;
    /// Gives a reference back to the stream at `source`.
    async fn release(&self, source: &str) -> Result<(), StorageError>;
    /// Reads messages `(after, upto]` of the stream at `source`, within `budget`.
    async fn read_source(
        &self,
        source: &str,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> Result<Vec<Message>, StorageError>;
    /// Arms the object's alarm for `at_ms` (expiry, retries of owed releases).
    async fn set_alarm(&self, at_ms: i64);
    /// Reports something that went wrong but is retried.
    fn warn(&self, message: &str);
}
