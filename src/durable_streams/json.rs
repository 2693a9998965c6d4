//! JSON mode: a POST body is one JSON value, and exactly one level of array is flattened
//! into separate messages; reads return the messages in range as one JSON array.

use crate::json_limits::{bounded_vec, nests_deeper_than, MAX_JSON_DEPTH};
use serde_json::value::RawValue;

/// Most messages one JSON body may append: each is a stored row, and a body of tiny
/// values (`[1,1,…]`) would otherwise make about a million rows in one transaction.
pub const MAX_JSON_MESSAGES: usize = 10_000;

/// Why a JSON body was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("body is not valid JSON: {0}")]
    Invalid(String),
    #[error("an empty JSON array appends nothing")]
    EmptyArray,
    #[error("body JSON is nested deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    #[error("a JSON body appends at most {MAX_JSON_MESSAGES} messages")]
    TooManyMessages,
}

/// The messages of a JSON body, each as compact-as-sent JSON text. `allow_empty_array` is
/// for stream creation, where `[]` creates an empty stream.
pub fn split_messages(body: &[u8], allow_empty_array: bool) -> Result<Vec<String>, JsonError> {
    let text = std::str::from_utf8(body).map_err(|e| JsonError::Invalid(e.to_string()))?;
    let value: &RawValue =
        serde_json::from_str(text).map_err(|e| JsonError::Invalid(e.to_string()))?;
    let raw = value.get();
    // The outer array is flattened away, so it does not count towards the depth.
    let limit = MAX_JSON_DEPTH + usize::from(raw.starts_with('['));
    if nests_deeper_than(raw, limit) {
        return Err(JsonError::TooDeep);
    }
    if raw.starts_with('[') {
        let items = array_items(raw)?;
        if items.is_empty() && !allow_empty_array {
            return Err(JsonError::EmptyArray);
        }
        Ok(items.into_iter().map(|m| m.get().to_owned()).collect())
    } else {
        Ok(vec![raw.to_owned()])
    }
}

/// The items of a JSON array, refused past [`MAX_JSON_MESSAGES`] before they pile up.
fn array_items(array: &str) -> Result<Vec<&RawValue>, JsonError> {
    let mut de = serde_json::Deserializer::from_str(array);
    bounded_vec(&mut de, MAX_JSON_MESSAGES, "too many messages").map_err(|e| {
        // Raw items cannot mismatch their type: a data error is the cap.
        if e.is_data() {
            JsonError::TooManyMessages
        } else {
            JsonError::Invalid(e.to_string())
        }
    })
}

/// The body of a JSON read: the messages as one array.
pub fn join_messages<'a>(messages: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, message) in messages.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(message);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_one_level() {
        assert_eq!(
            split_messages(br#"{"a":1}"#, false),
            Ok(vec![r#"{"a":1}"#.to_owned()])
        );
        assert_eq!(
            split_messages(b"[1, \"two\", {\"x\":[3]}]", false),
            Ok(vec![
                "1".to_owned(),
                "\"two\"".to_owned(),
                "{\"x\":[3]}".to_owned()
            ])
        );
        assert_eq!(
            split_messages(b"[[1,2],[3,4]]", false),
            Ok(vec!["[1,2]".to_owned(), "[3,4]".to_owned()])
        );
        assert_eq!(split_messages(b" 42 ", false), Ok(vec!["42".to_owned()]));
    }

    #[test]
    fn empty_arrays_and_invalid_json() {
        assert_eq!(split_messages(b"[]", false), Err(JsonError::EmptyArray));
        assert_eq!(split_messages(b"[]", true), Ok(vec![]));
        assert!(matches!(
            split_messages(b"{nope", false),
            Err(JsonError::Invalid(_))
        ));
        assert!(matches!(
            split_messages(b"", false),
            Err(JsonError::Invalid(_))
        ));
        assert!(matches!(
            split_messages(b"1 2", false),
            Err(JsonError::Invalid(_))
        ));
        assert!(matches!(
            split_messages(&[0xff], false),
            Err(JsonError::Invalid(_))
        ));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowing() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        for body in [
            deep(10_000),
            format!("{{\"a\":{}}}", deep(10_000)),
            deep(130),
        ] {
            assert_eq!(
                split_messages(body.as_bytes(), false),
                Err(JsonError::TooDeep)
            );
        }
        assert_eq!(
            JsonError::TooDeep.to_string(),
            "body JSON is nested deeper than 128 levels"
        );
        // The flattened outer array does not count: each message may nest 128 levels.
        let messages = split_messages(format!("[{}]", deep(128)).as_bytes(), false).unwrap();
        assert_eq!(messages, vec![deep(128)]);
        assert_eq!(
            split_messages(deep(128).as_bytes(), false).map(|m| m.len()),
            Ok(1)
        );
    }

    #[test]
    fn message_count_is_capped() {
        let ones = |n: usize| format!("[{}]", vec!["1"; n].join(","));
        assert_eq!(
            split_messages(ones(MAX_JSON_MESSAGES).as_bytes(), false).map(|m| m.len()),
            Ok(MAX_JSON_MESSAGES)
        );
        assert_eq!(
            split_messages(ones(MAX_JSON_MESSAGES + 1).as_bytes(), false),
            Err(JsonError::TooManyMessages)
        );
    }

    #[test]
    fn joins_for_reads() {
        assert_eq!(join_messages([]), "[]");
        assert_eq!(join_messages(["1", "{\"a\":2}"]), "[1,{\"a\":2}]");
        let round: serde_json::Value = serde_json::from_str(&join_messages(
            split_messages(b"[[1],{\"b\":true}]", false)
                .unwrap()
                .iter()
                .map(String::as_str),
        ))
        .unwrap();
        assert_eq!(round, serde_json::json!([[1], {"b": true}]));
    }
}
