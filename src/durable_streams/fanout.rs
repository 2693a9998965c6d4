//! What a stream tells its watchers (estuaries' session streams, subscriptions) after an
//! append: its path and new tail, and, when they are few bytes, the messages themselves, so a
//! session that is up to date copies them without reading the source again.

use crate::stream::{Message, SeqNum};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Messages ride along in a notice up to this many bytes (a queue message holds 128 KB).
pub const NOTICE_MESSAGE_BYTES: usize = 64 * 1024;

/// Watchers per queue message.
pub const QUEUE_BATCH: usize = 50;
/// A queue message holds at most 128 KB, a batch of them 256 KB and 100 messages; kept well
/// under.
const QUEUE_MESSAGE_BYTES: usize = 120 * 1024;
const QUEUE_SEND_BYTES: usize = 200 * 1024;
const QUEUE_SEND_MESSAGES: usize = 100;

/// One message of a notice, at its source offset.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NoticeMessage {
    pub seq: u64,
    /// Base64.
    pub data: String,
}

/// A stream's news, sent to one watcher.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The stream's path.
    pub source: String,
    /// The stream's tail.
    pub tail: u64,
    /// The messages before `tail`, oldest first, ending at `tail`; empty when they did not fit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<NoticeMessage>,
}

impl Notice {
    /// A notice of `tail` carrying as many of the last `messages` as fit in
    /// [`NOTICE_MESSAGE_BYTES`] (none unless they end at `tail`).
    pub fn new(source: &str, tail: SeqNum, messages: &[Message]) -> Notice {
        let mut kept = Vec::new();
        let ends_at_tail = messages.last().is_some_and(|m| m.seq == tail);
        if ends_at_tail {
            let mut bytes = 0usize;
            for message in messages.iter().rev() {
                bytes = bytes.saturating_add(message.data.len());
                if bytes > NOTICE_MESSAGE_BYTES {
                    break;
                }
                kept.push(NoticeMessage {
                    seq: message.seq.get(),
                    data: STANDARD.encode(&message.data),
                });
            }
            kept.reverse();
        }
        Notice {
            source: source.to_owned(),
            tail: tail.get(),
            messages: kept,
        }
    }

    /// The carried messages, if they hold everything after `copied` (through the tail).
    pub fn messages_after(&self, copied: u64) -> Option<Vec<Message>> {
        let first = self.messages.first()?.seq;
        if first > copied.saturating_add(1) {
            return None;
        }
        self.messages
            .iter()
            .filter(|m| m.seq > copied)
            .map(|m| {
                let seq = SeqNum::new(m.seq)?;
                let data = STANDARD.decode(&m.data).ok()?;
                Some(Message::new(seq, data))
            })
            .collect()
    }
}

/// A queue message: one notice for a batch of watchers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueuedNotice {
    pub notice: Notice,
    /// Watcher object names.
    pub watchers: Vec<String>,
}

/// The queue messages telling `watchers` of `notice`, grouped into sends the queue takes: the
/// notice loses its messages when they would not fit in a queue message (the sessions read
/// the source then).
pub fn queue_sends(notice: &Notice, watchers: &[String]) -> Vec<Vec<QueuedNotice>> {
    let size = |q: &QueuedNotice| serde_json::to_string(q).map_or(usize::MAX, |s| s.len());
    let mut messages: Vec<QueuedNotice> = watchers
        .chunks(QUEUE_BATCH)
        .map(|names| QueuedNotice {
            notice: notice.clone(),
            watchers: names.to_vec(),
        })
        .collect();
    for message in &mut messages {
        if size(message) > QUEUE_MESSAGE_BYTES {
            message.notice.messages.clear();
        }
    }
    let mut sends: Vec<Vec<QueuedNotice>> = Vec::new();
    let mut bytes = 0;
    for message in messages {
        let len = size(&message);
        match sends.last_mut() {
            Some(send) if send.len() < QUEUE_SEND_MESSAGES && bytes + len <= QUEUE_SEND_BYTES => {
                bytes += len;
                send.push(message);
            }
            _ => {
                bytes = len;
                sends.push(vec![message]);
            }
        }
    }
    sends
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u64, data: &str) -> Message {
        Message::new(SeqNum::new(seq).unwrap(), data.as_bytes().to_vec())
    }

    #[test]
    fn queue_sends_stay_within_the_queues_limits() {
        let names: Vec<String> = (0..1_000)
            .map(|i| format!("/v1/stream/p/session-{i}"))
            .collect();
        let big = "x".repeat(60 * 1024);
        let tail = SeqNum::new(1).unwrap();
        for notice in [
            Notice::new("/s", tail, &[m(1, "small")]),
            Notice::new("/s", tail, &[m(1, &big)]),
        ] {
            let sends = queue_sends(&notice, &names);
            let mut told = 0;
            for send in &sends {
                assert!(send.len() <= QUEUE_SEND_MESSAGES);
                let bytes: usize = send
                    .iter()
                    .map(|q| serde_json::to_string(q).unwrap().len())
                    .sum();
                assert!(bytes <= QUEUE_SEND_BYTES, "{bytes}");
                for q in send {
                    assert!(serde_json::to_string(q).unwrap().len() <= QUEUE_MESSAGE_BYTES);
                    told += q.watchers.len();
                }
            }
            assert_eq!(told, 1_000);
        }
        // Small notices go whole, in one send of 20 messages.
        let small = queue_sends(&Notice::new("/s", tail, &[m(1, "small")]), &names);
        assert_eq!(small.len(), 1);
        assert_eq!(small[0][0].notice.messages.len(), 1);
        // A large one goes whole, two to a send.
        let large = queue_sends(&Notice::new("/s", tail, &[m(1, &big)]), &names);
        assert_eq!((large.len(), large[0][0].notice.messages.len()), (10, 1));
        // One that would not fit in a queue message goes without its messages.
        let mut huge = Notice::new("/s", tail, &[]);
        huge.messages.push(NoticeMessage {
            seq: 1,
            data: "y".repeat(130 * 1024),
        });
        let sends = queue_sends(&huge, &names);
        assert!(sends.iter().flatten().all(|q| q.notice.messages.is_empty()));
    }

    #[test]
    fn a_notice_carries_what_fits_and_covers_only_what_it_holds() {
        let tail = SeqNum::new(3).unwrap();
        let notice = Notice::new("/v1/stream/p/s", tail, &[m(2, "b"), m(3, "c")]);
        assert_eq!(notice.messages.len(), 2);
        let json = serde_json::to_string(&notice).unwrap();
        let back: Notice = serde_json::from_str(&json).unwrap();
        assert_eq!(back, notice);
        // A watcher that copied through 1 gets 2 and 3; through 2, only 3; through 0 it
        // misses 1 and must read the source.
        let after1 = back.messages_after(1).unwrap();
        assert_eq!(after1, vec![m(2, "b"), m(3, "c")]);
        assert_eq!(back.messages_after(2).unwrap(), vec![m(3, "c")]);
        assert_eq!(back.messages_after(3).unwrap(), vec![]);
        assert!(back.messages_after(0).is_none());
        // Messages that do not end at the tail are not carried.
        let stale = Notice::new("/s", SeqNum::new(9).unwrap(), &[m(2, "b")]);
        assert!(stale.messages.is_empty() && stale.messages_after(8).is_none());
        // Nor more than the budget: the newest are kept.
        let big = "x".repeat(NOTICE_MESSAGE_BYTES / 2 + 1);
        let two = Notice::new("/s", tail, &[m(1, &big), m(2, &big), m(3, "c")]);
        assert_eq!(
            two.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }
}
