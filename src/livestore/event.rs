//! LiveStore events as they travel and as they are stored.

use crate::stream::{Entry, SeqNum};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// `LiveStoreEvent.Global.Encoded`: an event as clients push it and pulls return it.
///
/// `args` is kept as the raw JSON text the client sent: it is stored and sent back without
/// being parsed into a tree. An absent `args` stays absent (stored as SQL `NULL`), while an
/// explicit `null` is kept as `null`, as the TypeScript server does.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEncoded {
    pub name: String,
    #[serde(
        default,
        deserialize_with = "present_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub args: Option<Box<RawValue>>,
    pub seq_num: SeqNum,
    pub parent_seq_num: SeqNum,
    pub client_id: String,
    pub session_id: String,
}

/// Largest `args` accepted in a pushed event, as JSON text: the real client refuses to send
/// anything bigger (its 900 kB per-request limit), and a pull page could not carry it.
pub const MAX_EVENT_ARGS_BYTES: usize = 900_000;

/// `Some` for any present value, `null` included (the default covers an absent key).
fn present_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    let args = Box::<RawValue>::deserialize(d)?;
    if args.get().len() > MAX_EVENT_ARGS_BYTES {
        return Err(serde::de::Error::custom(format!(
            "event args are {} bytes of JSON; the limit is {MAX_EVENT_ARGS_BYTES}",
            args.get().len()
        )));
    }
    Ok(Some(args))
}

/// An event with the server time of the push that stored it.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub event: EventEncoded,
    /// ISO 8601, shared by every event of one push.
    pub created_at: String,
}

impl Entry for StoredEvent {
    fn seq(&self) -> SeqNum {
        self.event.seq_num
    }

    /// Its text as stored: what a read holds of it.
    fn size(&self) -> usize {
        let event = &self.event;
        self.args_text().map_or(0, str::len)
            + event.name.len()
            + event.client_id.len()
            + event.session_id.len()
            + self.created_at.len()
    }
}

#[derive(Serialize)]
struct BatchItem<'a> {
    #[serde(rename = "eventEncoded")]
    event: &'a EventEncoded,
    metadata: SomeMetadata<'a>,
}

#[derive(Serialize)]
struct SomeMetadata<'a> {
    #[serde(rename = "_tag")]
    tag: &'static str,
    value: SyncMetadata<'a>,
}

#[derive(Serialize)]
struct SyncMetadata<'a> {
    #[serde(rename = "_tag")]
    tag: &'static str,
    #[serde(rename = "createdAt")]
    created_at: &'a str,
}

impl StoredEvent {
    /// The JSON of this event as an item of a `PullResponse.batch`:
    /// `{"eventEncoded":…,"metadata":{"_tag":"Some","value":{"_tag":"SyncMessage.SyncMetadata","createdAt":…}}}`.
    pub fn to_batch_item_json(&self) -> String {
        let item = BatchItem {
            event: &self.event,
            metadata: SomeMetadata {
                tag: "Some",
                value: SyncMetadata {
                    tag: "SyncMessage.SyncMetadata",
                    created_at: &self.created_at,
                },
            },
        };
        // Serializing plain strings, integers and already-valid raw JSON cannot fail.
        serde_json::to_string(&item).unwrap_or_default()
    }

    /// The `args` column: the raw JSON text, or `None` for SQL `NULL`.
    pub fn args_text(&self) -> Option<&str> {
        self.event.args.as_deref().map(RawValue::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(v: Value) -> EventEncoded {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn keeps_args_presence_and_text() {
        let base = json!({"name":"e","seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"});
        let absent = parse(base.clone());
        assert!(absent.args.is_none());
        assert!(!serde_json::to_string(&absent).unwrap().contains("args"));

        let mut with_null = base.clone();
        with_null["args"] = Value::Null;
        assert_eq!(parse(with_null).args.unwrap().get(), "null");

        let ev: EventEncoded = serde_json::from_str(
            r#"{"name":"e","args":{"id":"t1","n":[1,2]},"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}"#,
        )
        .unwrap();
        assert_eq!(ev.args.as_ref().unwrap().get(), r#"{"id":"t1","n":[1,2]}"#);
    }

    #[test]
    fn batch_item_has_the_pull_shape() {
        let ev = StoredEvent {
            event: parse(
                json!({"name":"todoCreated-v1","args":{"id":"t1"},"seqNum":2,"parentSeqNum":1,"clientId":"c","sessionId":"s"}),
            ),
            created_at: "2026-11-22T09:37:38.033Z".into(),
        };
        let item: Value = serde_json::from_str(&ev.to_batch_item_json()).unwrap();
        assert_eq!(
            item,
            json!({
                "eventEncoded": {"name":"todoCreated-v1","args":{"id":"t1"},"seqNum":2,"parentSeqNum":1,"clientId":"c","sessionId":"s"},
                "metadata": {"_tag":"Some","value":{"_tag":"SyncMessage.SyncMetadata","createdAt":"2026-11-22T09:37:38.033Z"}}
            })
        );
    }

    #[test]
    fn args_are_capped() {
        let event = |args: &str| {
            format!(
                r#"{{"name":"e","args":{args},"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}}"#
            )
        };
        let string = |len: usize| format!("\"{}\"", "x".repeat(len - 2));
        let at = serde_json::from_str::<EventEncoded>(&event(&string(MAX_EVENT_ARGS_BYTES)));
        assert_eq!(
            at.unwrap().args.map(|a| a.get().len()),
            Some(MAX_EVENT_ARGS_BYTES)
        );
        let over = serde_json::from_str::<EventEncoded>(&event(&string(MAX_EVENT_ARGS_BYTES + 1)))
            .unwrap_err()
            .to_string();
        assert!(
            over.starts_with("event args are 900001 bytes of JSON; the limit is 900000"),
            "{over}"
        );
    }

    #[test]
    fn rejects_malformed_events() {
        for bad in [
            json!({"name":"e","seqNum":1,"parentSeqNum":0,"clientId":"c"}),
            json!({"name":"e","seqNum":-1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}),
            json!({"name":"e","seqNum":"1","parentSeqNum":0,"clientId":"c","sessionId":"s"}),
            json!({"name":1,"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}),
        ] {
            assert!(serde_json::from_value::<EventEncoded>(bad).is_err());
        }
    }
}
