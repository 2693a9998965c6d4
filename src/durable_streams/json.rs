//! JSON mode: a POST body is one JSON value, and exactly one level of array is flattened
//! into separate messages; reads return the messages in range as one JSON array.

use serde_json::value::RawValue;

/// Why a JSON body was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("body is not valid JSON: {0}")]
    Invalid(String),
    #[error("an empty JSON array appends nothing")]
    EmptyArray,
}

/// The messages of a JSON body, each as compact-as-sent JSON text. `allow_empty_array` is
/// for stream creation, where `[]` creates an empty stream.
pub fn split_messages(body: &[u8], allow_empty_array: bool) -> Result<Vec<String>, JsonError> {
    let text = std::str::from_utf8(body).map_err(|e| JsonError::Invalid(e.to_string()))?;
    let value: &RawValue =
        serde_json::from_str(text).map_err(|e| JsonError::Invalid(e.to_string()))?;
    let raw = value.get();
    if raw.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(raw).map_err(|e| JsonError::Invalid(e.to_string()))?;
        if items.is_empty() && !allow_empty_array {
            return Err(JsonError::EmptyArray);
        }
        Ok(items.into_iter().map(|m| m.get().to_owned()).collect())
    } else {
        Ok(vec![raw.to_owned()])
    }
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
