//! Server-sent events framing and the base64 used for binary SSE data: one [`round`] of events,
//! however it was read (a stream object's own event stream, or the Worker's bridge).

use super::headers::{needs_base64, normalize_content_type};
use super::meta::offset_text;
use crate::stream::SeqNum;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// One round of an event stream: what was read (a read's body, as a catch-up `GET` answers it;
/// `None` when nothing was) and where the reader stands after it.
#[derive(Clone, Copy, Debug)]
pub struct Round<'a> {
    pub body: Option<&'a [u8]>,
    /// The offset after the messages read.
    pub next: SeqNum,
    pub at_tail: bool,
    /// The stream is closed and the reader has all of it: the event stream ends.
    pub done: bool,
    /// The `streamCursor` to send (unless done).
    pub cursor: u64,
}

/// The events of `round` for a stream of `content_type`: the data event of what was read, paired
/// with the control event that says where the reader stands.
pub fn round(content_type: &str, round: &Round<'_>) -> String {
    let mut text = String::new();
    if let Some(body) = round.body {
        let payload = if needs_base64(&normalize_content_type(content_type)) {
            base64_encode(body)
        } else {
            String::from_utf8_lossy(body).into_owned()
        };
        text.push_str(&data_event(&payload));
    }
    let mut control = serde_json::Map::new();
    control.insert("streamNextOffset".into(), offset_text(round.next).into());
    if round.done {
        control.insert("streamClosed".into(), true.into());
    } else {
        control.insert("streamCursor".into(), round.cursor.to_string().into());
    }
    if round.at_tail {
        control.insert("upToDate".into(), true.into());
    }
    text.push_str(&control_event(
        &serde_json::Value::Object(control).to_string(),
    ));
    text
}

/// One `data` event: every line of `payload` (split on CR, LF and CRLF) becomes its own
/// `data:` line, so a payload cannot end the event or start a forged one.
pub fn data_event(payload: &str) -> String {
    let mut out = String::with_capacity(payload.len() + 32);
    out.push_str("event: data\n");
    for line in split_lines(payload) {
        out.push_str("data:");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// One `control` event carrying `json` (a single-line JSON object).
pub fn control_event(json: &str) -> String {
    format!("event: control\ndata:{json}\n\n")
}

fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes.get(i) {
            Some(b'\r') => {
                lines.push(text.get(start..i).unwrap_or_default());
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            Some(b'\n') => {
                lines.push(text.get(start..i).unwrap_or_default());
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    lines.push(text.get(start..).unwrap_or_default());
    lines
}

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes standard padded base64; `None` if it is not.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_lines_safely() {
        assert_eq!(data_event("hello"), "event: data\ndata:hello\n\n");
        assert_eq!(
            data_event("a\r\n\r\nevent: control\rb\nc"),
            "event: data\ndata:a\ndata:\ndata:event: control\ndata:b\ndata:c\n\n"
        );
        assert_eq!(data_event(""), "event: data\ndata:\n\n");
        assert_eq!(
            control_event(r#"{"x":1}"#),
            "event: control\ndata:{\"x\":1}\n\n"
        );
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_encode(b"Hello"), "SGVsbG8=");
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(&[0xff, 0xfe, 0xfd]), "//79");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        for len in 0..40u8 {
            let data: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&data)), Some(data));
        }
        assert_eq!(base64_decode("abc"), None);
        assert_eq!(base64_decode("a=bc"), None);
        assert_eq!(base64_decode("YQ==YQ=="), None);
    }
}
