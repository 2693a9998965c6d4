//! A LiveStore event as a frame of a cold segment (see [`super::segments`]): the JSON array of
//! its columns as reads take them (`[seqNum, parentSeqNum, name, createdAt, clientId,
//! sessionId]`, see [`super::sql::decode_row`]), its length first, then its args text as stored.

use super::sql::decode_row;
use crate::livestore::event::StoredEvent;
use crate::stream::{SeqNum, StorageError};

/// The frame bytes of `stored`.
pub fn encode(stored: &StoredEvent) -> Vec<u8> {
    let event = &stored.event;
    let head = (
        event.seq_num,
        event.parent_seq_num,
        &event.name,
        &stored.created_at,
        &event.client_id,
        &event.session_id,
    );
    // Integers and strings: serializing them cannot fail.
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let args = stored.args_text().unwrap_or_default();
    let mut out = Vec::with_capacity(4 + head.len() + args.len());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(args.as_bytes());
    out
}

/// The event of the frame at `seq`; an error unless it is one, of that position.
pub fn decode(seq: SeqNum, data: &[u8]) -> Result<StoredEvent, StorageError> {
    let bad = |what: &str| StorageError(format!("a malformed event frame at {seq}: {what}"));
    let (len, rest) = data
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("no length"))?;
    let len = u32::from_be_bytes(*len) as usize;
    let head = rest.get(..len).ok_or_else(|| bad("short"))?;
    let args = rest.get(len..).unwrap_or_default();
    let text = |bytes| std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"));
    // No args text is an absent `args`: present args are JSON, never empty.
    let args = (!args.is_empty())
        .then(|| text(args).map(str::to_owned))
        .transpose()?;
    let stored = decode_row(text(head)?, args)?;
    if stored.event.seq_num != seq {
        return Err(bad("another position"));
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Entry;

    fn event(n: u64, args: Option<&str>) -> StoredEvent {
        let args = args.map(|a| format!(r#","args":{a}"#)).unwrap_or_default();
        let json = format!(
            r#"{{"name":"todo\"Created","seqNum":{n},"parentSeqNum":{},"clientId":"c ✓","sessionId":"s"{args}}}"#,
            n - 1
        );
        StoredEvent {
            event: serde_json::from_str(&json).unwrap(),
            created_at: "2026-12-04T17:00:00.000Z".into(),
        }
    }

    #[test]
    fn an_event_comes_back_from_its_frame_whole_with_absent_null_and_nested_args() {
        for args in [
            None,
            Some("null"),
            Some(r#"{"text":"a \"b\"\n","n":[1,2]}"#),
        ] {
            let stored = event(7, args);
            let seq = SeqNum::new(7).unwrap();
            let back = decode(seq, &encode(&stored)).unwrap();
            assert_eq!(back.args_text(), stored.args_text());
            assert_eq!(back.event.name, stored.event.name);
            assert_eq!(back.event.parent_seq_num, stored.event.parent_seq_num);
            assert_eq!(back.event.client_id, stored.event.client_id);
            assert_eq!(back.created_at, stored.created_at);
            assert_eq!(back.size(), stored.size());
        }
    }

    #[test]
    fn a_frame_of_another_position_or_cut_short_is_refused() {
        let frame = encode(&event(3, Some("1")));
        assert!(decode(SeqNum::new(4).unwrap(), &frame).is_err());
        assert!(decode(SeqNum::new(3).unwrap(), &frame[..6]).is_err());
        assert!(decode(SeqNum::new(3).unwrap(), &frame[..2]).is_err());
    }
}
