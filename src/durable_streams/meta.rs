//! What a stream's object keeps about its path beside the messages: the log's header.

use super::headers::normalize_content_type;
use crate::stream::offset::Offset;
use crate::stream::{Header, SeqNum};
use serde::{Deserialize, Serialize};

/// The producer tuple that closed a stream: a retry of exactly this close is a duplicate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClosedBy {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// Where a fork came from. It shares its source's offsets: what lies at or below `inherited` it
/// reads through the source, without a copy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ForkInfo {
    /// The source stream's path (`/v1/stream/...`).
    pub source: String,
    /// The anchor offset in the source, as asked for.
    pub offset: u64,
    /// Messages (JSON) or bytes (otherwise) past the anchor; 0 when none.
    pub sub_offset: u64,
    /// The last inherited position: the fork's own messages start after it.
    pub inherited: u64,
    /// Bytes of the last inherited message that belong to the fork (a byte-mode sub-offset
    /// forks in the middle of a message).
    #[serde(default)]
    pub cut: Option<u64>,
}

/// A stream's metadata.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StreamMeta {
    /// The content type as it was given at creation.
    pub content_type: String,
    pub ttl_seconds: Option<u64>,
    pub expires_at_ms: Option<i64>,
    /// Creation time; also tells incarnations of a path apart (ETags).
    pub created_ms: u64,
    /// Last read or write, for the sliding TTL.
    pub last_access_ms: u64,
    pub closed: bool,
    pub closed_by: Option<ClosedBy>,
    pub last_stream_seq: Option<String>,
    pub fork: Option<ForkInfo>,
    /// Forks created from this stream and not yet gone.
    pub ref_count: u64,
    /// Deleted while forks still refer to it: every operation answers 410, and its messages stay
    /// for the forks to read.
    pub soft_deleted: bool,
    /// An estuary's sources, when this stream is an estuary's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estuary: Option<super::estuary::EstuaryMeta>,
}

/// Everything kept about a path: its stream, if one lives there, and the references it still
/// owes to the sources of forks that were deleted here (released as soon as the source answers,
/// retried by the alarm until then).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub stream: Option<StreamMeta>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owed_releases: Vec<String>,
}

impl Header for Meta {
    fn base(&self) -> SeqNum {
        let inherited = self
            .stream
            .as_ref()
            .and_then(|s| s.fork.as_ref())
            .map_or(0, |f| f.inherited);
        SeqNum::new(inherited).unwrap_or(SeqNum::ROOT)
    }

    fn closed(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.closed)
    }

    fn accepts_content_type(&self, content_type: &str) -> bool {
        self.stream
            .as_ref()
            .is_some_and(|s| normalize_content_type(content_type) == s.normalized_content_type())
    }

    fn last_stream_seq(&self) -> Option<&str> {
        self.stream
            .as_ref()
            .and_then(|s| s.last_stream_seq.as_deref())
    }
}

impl StreamMeta {
    /// The content type, lowercased and without parameters.
    pub fn normalized_content_type(&self) -> String {
        normalize_content_type(&self.content_type)
    }

    /// Whether the stream has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        expiry_time(self).is_some_and(|at| at <= i64::try_from(now_ms).unwrap_or(i64::MAX))
    }
}

/// When a stream expires, if it does.
pub fn expiry_time(meta: &StreamMeta) -> Option<i64> {
    let ttl = meta.ttl_seconds.map(|ttl| {
        i64::try_from(
            meta.last_access_ms
                .saturating_add(ttl.saturating_mul(1_000)),
        )
        .unwrap_or(i64::MAX)
    });
    match (ttl, meta.expires_at_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The printed offset of position `n`.
pub fn offset_text(n: SeqNum) -> String {
    Offset(n).to_string()
}
